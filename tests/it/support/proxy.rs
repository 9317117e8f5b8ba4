//! A fault-injecting HTTP proxy on 127.0.0.1, between the SDK and a local moto server: the
//! network and the service as the Lambda meets them on a bad day, under the test's control.
//!
//! Every request is read whole (the SDK sends `Content-Length` bodies over HTTP/1.1 to an `http://` endpoint), then, by the rules
//! in force:
//! - forwarded, and the answer passed back (the normal case);
//! - **cut**: the connection is closed without forwarding, as when the service or the network
//!   is down (the request never reached the service);
//! - **answer lost**: forwarded, so the service acts on it, but the connection is closed before
//!   the answer is passed back (a timeout or a reset after the fact);
//! - **denied**: answered by the proxy with a canned AWS error.
//!
//! One request per connection (the forwarded request says `Connection: close`), which keeps the
//! proxy a plain loop over blocking sockets with a thread per connection.
//!
//! Requests reach moto one at a time. DynamoDB makes every request atomic; moto (5.2.5) does
//! not: it has no locks, and a transaction that fails restores the whole table from a copy taken
//! when it began, undoing every write made meanwhile. Concurrent invocations still interleave
//! their reads and conditional writes as they would against DynamoDB.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::Duration;

/// What happens to a request the rule matches.
#[derive(Clone, Debug)]
enum Action {
    Cut,
    LoseAnswer,
    Answer(String),
}

#[derive(Clone, Debug)]
struct Rule {
    /// A request matches when its head or body contains this (e.g. `DynamoDB_20120810.PutItem`,
    /// `Action=AssumeRole`); empty matches every request.
    marker: String,
    action: Action,
    /// How many more requests it applies to; `None`: until it is removed.
    times: Option<usize>,
}

#[derive(Default)]
struct State {
    /// Held while a request is at moto (see the module's documentation).
    upstream: Arc<Mutex<()>>,
    rules: Vec<Rule>,
    /// The operation of every request seen (`X-Amz-Target`, or the query protocol's `Action`),
    /// with what was done to it.
    seen: Vec<(String, &'static str)>,
}

/// The proxy; its listener thread stops when it is dropped.
pub struct FaultProxy {
    port: u16,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
}

impl FaultProxy {
    /// Listens on a free port of 127.0.0.1 and forwards to `upstream` (`http://127.0.0.1:PORT`).
    pub fn start(upstream: &str) -> FaultProxy {
        let upstream: SocketAddr = upstream
            .trim_start_matches("http://")
            .parse()
            .expect("an upstream of the form http://127.0.0.1:PORT");
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("a port for the proxy");
        listener
            .set_nonblocking(true)
            .expect("a non-blocking listener");
        let port = listener.local_addr().expect("the proxy's address").port();
        let state = Arc::new(Mutex::new(State::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (s, st) = (state.clone(), stop.clone());
        thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((client, _)) => {
                        let s = s.clone();
                        thread::spawn(move || {
                            let _ = serve(client, upstream, &s);
                        });
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        thread::sleep(Duration::from_millis(2));
                    }
                    Err(_) => thread::sleep(Duration::from_millis(2)),
                }
            }
        });
        FaultProxy { port, state, stop }
    }

    /// `http://127.0.0.1:PORT`, for the SDK's `endpoint_url`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn add(&self, marker: &str, action: Action, times: Option<usize>) {
        self.state().rules.push(Rule {
            marker: marker.to_owned(),
            action,
            times,
        });
    }

    /// Every request from now on is dropped unanswered, before it reaches the service.
    pub fn cut(&self) {
        self.add("", Action::Cut, None);
    }

    /// The next `times` requests containing `marker` reach the service, but their answers are
    /// lost.
    pub fn lose_answers(&self, marker: &str, times: usize) {
        self.add(marker, Action::LoseAnswer, Some(times));
    }

    /// Requests containing `marker` are answered with `status` and `body` (a canned AWS error)
    /// instead of reaching the service.
    pub fn answer(&self, marker: &str, status: u16, content_type: &str, body: &str) {
        let response = format!(
            "HTTP/1.1 {status} Refused\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        self.add(marker, Action::Answer(response), None);
    }

    /// Removes every rule: requests flow again.
    pub fn restore(&self) {
        self.state().rules.clear();
    }

    /// How many requests of `operation` (e.g. `PutItem`, `AssumeRole`) were seen, whatever was
    /// done to them.
    pub fn seen(&self, operation: &str) -> usize {
        self.state()
            .seen
            .iter()
            .filter(|(op, _)| op == operation)
            .count()
    }

    /// How many requests were treated as `what` (`forwarded`, `cut`, `answer lost`, `answered`).
    pub fn treated(&self, what: &str) -> usize {
        self.state().seen.iter().filter(|(_, w)| *w == what).count()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// One request from `client`, handled by the first rule that matches it.
fn serve(client: TcpStream, upstream: SocketAddr, state: &Mutex<State>) -> io::Result<()> {
    client.set_nonblocking(false)?;
    client.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut reader = BufReader::new(client.try_clone()?);
    let Some((head, body)) = read_request(&mut reader)? else {
        return Ok(());
    };
    let text = format!("{head}{}", String::from_utf8_lossy(&body));
    let (action, upstream_lock) = {
        let mut s = state.lock().unwrap_or_else(PoisonError::into_inner);
        let found = s
            .rules
            .iter_mut()
            .find(|r| r.times != Some(0) && text.contains(&r.marker))
            .map(|r| {
                if let Some(n) = r.times.as_mut() {
                    *n -= 1;
                }
                r.action.clone()
            });
        let what = match &found {
            None => "forwarded",
            Some(Action::Cut) => "cut",
            Some(Action::LoseAnswer) => "answer lost",
            Some(Action::Answer(_)) => "answered",
        };
        s.seen.push((operation(&text), what));
        (found, s.upstream.clone())
    };
    let one_at_a_time = || upstream_lock.lock().unwrap_or_else(PoisonError::into_inner);
    let mut client = client;
    match action {
        Some(Action::Cut) => client.shutdown(Shutdown::Both),
        Some(Action::Answer(response)) => {
            client.write_all(response.as_bytes())?;
            client.shutdown(Shutdown::Both)
        }
        Some(Action::LoseAnswer) => {
            // The service acts on the request; its answer goes nowhere.
            let _turn = one_at_a_time();
            forward(&head, &body, upstream)?;
            client.shutdown(Shutdown::Both)
        }
        None => {
            let response = {
                let _turn = one_at_a_time();
                forward(&head, &body, upstream)?
            };
            client.write_all(&response)?;
            client.shutdown(Shutdown::Both)
        }
    }
}

/// Sends the request upstream with `Connection: close` and returns the whole answer.
fn forward(head: &str, body: &[u8], upstream: SocketAddr) -> io::Result<Vec<u8>> {
    let mut up = TcpStream::connect(upstream)?;
    up.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut lines: Vec<&str> = head
        .split("\r\n")
        .filter(|l| !l.is_empty() && !l.to_ascii_lowercase().starts_with("connection:"))
        .collect();
    lines.push("Connection: close");
    up.write_all(format!("{}\r\n\r\n", lines.join("\r\n")).as_bytes())?;
    up.write_all(body)?;
    let mut response = Vec::new();
    up.read_to_end(&mut response)?;
    Ok(closing(response))
}

/// The answer with `Connection: close`, so the client does not keep a connection the proxy is
/// about to close for another request.
fn closing(response: Vec<u8>) -> Vec<u8> {
    let Some(end) = response.windows(4).position(|w| w == b"\r\n\r\n") else {
        return response;
    };
    let head = String::from_utf8_lossy(&response[..end]).into_owned();
    if head
        .lines()
        .any(|l| l.to_ascii_lowercase().starts_with("connection:"))
    {
        return response;
    }
    let first = head.find("\r\n").unwrap_or(head.len());
    let mut out = Vec::with_capacity(response.len() + 19);
    out.extend_from_slice(&response[..first]);
    out.extend_from_slice(b"\r\nConnection: close");
    out.extend_from_slice(&response[first..]);
    out
}

/// The request's head (up to and including the blank line's first CRLF) and its body, or `None`
/// when the client closed the connection first.
fn read_request(reader: &mut impl BufRead) -> io::Result<Option<(String, Vec<u8>)>> {
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(None);
        }
        if line == "\r\n" {
            break;
        }
        head.push_str(&line);
    }
    let length = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse::<usize>().ok())
                .flatten()
        })
        .unwrap_or(0);
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    Ok(Some((head, body)))
}

/// `PutItem` from `X-Amz-Target: DynamoDB_20120810.PutItem`, `AssumeRole` from a query body's
/// `Action=AssumeRole`.
fn operation(text: &str) -> String {
    let target = text.lines().find_map(|l| {
        let (name, value) = l.split_once(':')?;
        name.eq_ignore_ascii_case("x-amz-target")
            .then(|| value.trim().rsplit('.').next().unwrap_or("").to_owned())
    });
    target
        .or_else(|| {
            text.split(['&', '\n'])
                .find_map(|p| p.strip_prefix("Action=").map(str::to_owned))
        })
        .unwrap_or_else(|| "?".to_owned())
}
