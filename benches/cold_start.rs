//! The Lambda's cold start, measured against a fake Lambda Runtime API on 127.0.0.1.
//!
//! For each run the function's binary is spawned with the environment Lambda gives a custom
//! runtime (`AWS_LAMBDA_RUNTIME_API`, `AWS_LAMBDA_FUNCTION_NAME`, ..., `AWS_REGION`, fake
//! credentials) plus what the function needs (`STATE_TABLE`), and nothing else. The fake API
//! records, relative to the spawn:
//!
//! - `init`: when the first `GET /2018-06-01/runtime/invocation/next` arrives: settings read,
//!   SDK configuration loaded, runtime started (the budget: < 20 ms);
//! - `first invocation`: when the response to the first event arrives (an `ECR Image Scan`
//!   event, which the function ignores: it builds its clients and classifies the event but makes
//!   no AWS call, so no network time is counted);
//! - the process's resident memory at both moments (`VmHWM`, the peak, from /proc; budget
//!   < 30 MiB), while the function waits for the API's answer.
//!
//! Then the process is killed. Medians over all runs are printed, with min, p90 and max.
//!
//! ```text
//! cargo bench --bench cold_start -- [--runs N] [BINARY ...]
//! ```
//!
//! Without BINARY it measures the `ecr-replication-auditor-lambda` that cargo built for the
//! benches. Not a criterion benchmark (`harness = false`): criterion times closures, and a cold
//! start is a process.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

const NEXT: &str = "/2018-06-01/runtime/invocation/next";
/// Nothing should take this long; a run that does is reported as failed.
const TIMEOUT: Duration = Duration::from_secs(10);

/// An event the function classifies and ignores: the first invocation then needs no AWS call.
const EVENT: &str = r#"{"version":"0","id":"85fc3613-e913-7fc4-a80c-a3753e4aa9ae","detail-type":"ECR Image Scan","source":"aws.ecr","account":"123456789012","time":"2024-07-01T10:00:00Z","region":"us-west-2","resources":["arn:aws:ecr:us-west-2:123456789012:repository/team/app"],"detail":{"scan-status":"COMPLETE","repository-name":"team/app","image-digest":"sha256:7f5b2640fe6fb4f46592dfd3410c4a79dac4f89e4782432e0378abcd1234abcd","image-tags":["v1"]}}"#;

/// What the fake API saw, in order.
#[derive(Debug)]
enum Seen {
    Next(Instant),
    /// The function's answer to the event.
    Response(Instant, String),
    /// An error report (`/invocation/{id}/error` or `/init/error`), with what it said.
    Error(String),
}

/// One run's figures.
#[derive(Clone, Copy, Debug)]
struct Run {
    init: Duration,
    init_hwm_kib: u64,
    first_invocation: Duration,
    after_hwm_kib: u64,
}

fn main() -> ExitCode {
    let mut runs = 30;
    let mut binaries = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--runs" => match args.next().and_then(|n| n.parse().ok()) {
                Some(n) if n > 0 => runs = n,
                _ => {
                    eprintln!("cold_start: --runs takes a positive number");
                    return ExitCode::from(2);
                }
            },
            // What `cargo bench` passes to every bench target.
            a if a.starts_with("--") => {}
            path => binaries.push(PathBuf::from(path)),
        }
    }
    if binaries.is_empty() {
        binaries.push(PathBuf::from(env!(
            "CARGO_BIN_EXE_ecr-replication-auditor-lambda"
        )));
    }
    let mut failed = false;
    for binary in &binaries {
        match measure(binary, runs) {
            Ok(results) => report(binary, &results),
            Err(e) => {
                eprintln!("cold_start: {}: {e}", binary.display());
                failed = true;
            }
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn measure(binary: &Path, runs: usize) -> Result<Vec<Run>, String> {
    let size = std::fs::metadata(binary)
        .map_err(|e| format!("cannot read the binary: {e}"))?
        .len();
    println!(
        "{}: {} bytes ({:.1} MiB), {runs} runs",
        binary.display(),
        size,
        size as f64 / 1_048_576.0
    );
    // One run first, not counted: it loads the binary into the page cache, as a warm Lambda host
    // has it (the file system read of a cold host is not the function's doing).
    one(binary)?;
    (0..runs).map(|_| one(binary)).collect()
}

/// Spawns the function once against a fresh fake Runtime API.
fn one(binary: &Path) -> Result<Run, String> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let api = listener.local_addr().map_err(|e| e.to_string())?;
    let (tx, rx) = channel();
    let nexts = Arc::new(Mutex::new(0u32));
    thread::spawn(move || serve(listener, tx, nexts));

    let began = Instant::now();
    let child = Command::new(binary)
        .env_clear()
        .envs(lambda_environment(&api.to_string()))
        .stdin(Stdio::null())
        // The function logs (JSON lines) on stdout; one invocation's lines fit a pipe's buffer.
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start it: {e}"))?;
    let mut child = Killed(child);
    let pid = child.0.id();

    let init = match wait(&rx)? {
        Seen::Next(at) => at - began,
        other => return Err(format!("expected GET next first, got {other:?}")),
    };
    let init_hwm_kib = hwm_kib(pid)?;
    // The response and the second GET next come on different connections, each served by its
    // own thread, so they may be reported in either order.
    let mut first_invocation = None;
    let mut waited_again = false;
    while first_invocation.is_none() || !waited_again {
        match wait(&rx)? {
            // The handler's summary: it saw one event and ignored it.
            Seen::Response(at, body) if body.contains("\"ignored\":1") => {
                first_invocation = Some(at - began)
            }
            Seen::Response(_, body) => return Err(format!("an unexpected answer: {body}")),
            Seen::Error(body) => return Err(format!("the invocation failed: {body}")),
            Seen::Next(_) if !waited_again => waited_again = true,
            other => return Err(format!("expected the response, got {other:?}")),
        }
    }
    let first_invocation = first_invocation.unwrap_or_default();
    let after_hwm_kib = hwm_kib(pid)?;
    let _ = child.0.kill();
    let _ = child.0.wait();
    let mut log = String::new();
    if let Some(mut out) = child.0.stdout.take() {
        let _ = out.read_to_string(&mut log);
    }
    if log.contains("\"level\":\"ERROR\"") {
        return Err(format!("the function logged an error:\n{log}"));
    }
    Ok(Run {
        init,
        init_hwm_kib,
        first_invocation,
        after_hwm_kib,
    })
}

/// Kills and reaps the child (by its own pid) whatever happens to the run.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait(rx: &Receiver<Seen>) -> Result<Seen, String> {
    rx.recv_timeout(TIMEOUT)
        .map_err(|_| format!("the Runtime API heard nothing for {TIMEOUT:?}"))
}

/// What Lambda sets for a `provided.al2023` function, and the function's own variables.
fn lambda_environment(api: &str) -> Vec<(&'static str, String)> {
    [
        ("AWS_LAMBDA_RUNTIME_API", api),
        ("AWS_LAMBDA_FUNCTION_NAME", "ecr-replication-auditor"),
        ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST"),
        ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128"),
        (
            "AWS_LAMBDA_LOG_GROUP_NAME",
            "/aws/lambda/ecr-replication-auditor",
        ),
        (
            "AWS_LAMBDA_LOG_STREAM_NAME",
            "2024/07/01/[$LATEST]0123456789abcdef",
        ),
        ("AWS_LAMBDA_INITIALIZATION_TYPE", "on-demand"),
        ("AWS_EXECUTION_ENV", "AWS_Lambda_provided.al2023"),
        ("AWS_REGION", "us-west-2"),
        ("AWS_DEFAULT_REGION", "us-west-2"),
        ("AWS_ACCESS_KEY_ID", "AKIAIOSFODNN7EXAMPLE"),
        (
            "AWS_SECRET_ACCESS_KEY",
            "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        ),
        ("AWS_SESSION_TOKEN", "fake-session-token"),
        ("LANG", "en_US.UTF-8"),
        ("TZ", ":UTC"),
        ("PATH", "/usr/local/bin:/usr/bin:/bin"),
        ("STATE_TABLE", "auditor-state"),
        ("REPLICATION_WINDOW", "30m"),
        ("METRICS_SINK", "cloudwatch"),
    ]
    .into_iter()
    .map(|(k, v)| (k, v.to_owned()))
    .collect()
}

/// The fake Runtime API: one thread per connection (the runtime's HTTP client may keep one
/// connection alive or open new ones).
fn serve(listener: TcpListener, tx: Sender<Seen>, nexts: Arc<Mutex<u32>>) {
    for stream in listener.incoming() {
        let Ok(stream) = stream else { return };
        let (tx, nexts) = (tx.clone(), nexts.clone());
        thread::spawn(move || {
            let _ = connection(stream, &tx, &nexts);
        });
    }
}

fn connection(stream: TcpStream, tx: &Sender<Seen>, nexts: &Mutex<u32>) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let arrived = Instant::now();
        let mut parts = line.split_whitespace();
        let (method, path) = (
            parts.next().unwrap_or_default().to_owned(),
            parts.next().unwrap_or_default().to_owned(),
        );
        let body = read_body(&mut reader)?;
        if method == "GET" && path == NEXT {
            let n = {
                let mut n = nexts.lock().unwrap_or_else(|p| p.into_inner());
                *n += 1;
                *n
            };
            let _ = tx.send(Seen::Next(arrived));
            if n > 1 {
                // The second wait for work: the run is over. No answer, and the connection stays
                // open (closing it could end the process before its memory is read); the
                // process is killed, which ends the read above.
                continue;
            }
            let deadline = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() + 60_000)
                .unwrap_or(0);
            write!(
                writer,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
                 Lambda-Runtime-Aws-Request-Id: 8476a536-e9f4-11e8-9739-2dfe598c3fcd\r\n\
                 Lambda-Runtime-Deadline-Ms: {deadline}\r\n\
                 Lambda-Runtime-Invoked-Function-Arn: arn:aws:lambda:us-west-2:123456789012:function:ecr-replication-auditor\r\n\
                 Lambda-Runtime-Trace-Id: Root=1-5bef4de7-ad49b0e87f6ef6c87fc2e700;Parent=9a9197af755a6419;Sampled=1\r\n\
                 Content-Length: {}\r\n\r\n{EVENT}",
                EVENT.len()
            )?;
        } else {
            let seen = if path.ends_with("/response") {
                Seen::Response(arrived, String::from_utf8_lossy(&body).into_owned())
            } else {
                Seen::Error(format!(
                    "{method} {path}: {}",
                    String::from_utf8_lossy(&body)
                ))
            };
            write!(
                writer,
                "HTTP/1.1 202 Accepted\r\nContent-Type: application/json\r\nContent-Length: 16\r\n\r\n{{\"status\":\"OK\"}}"
            )?;
            let _ = tx.send(seen);
        }
        writer.flush()?;
    }
}

/// Reads the headers and the body (`Content-Length` or chunked).
fn read_body(reader: &mut BufReader<TcpStream>) -> std::io::Result<Vec<u8>> {
    let mut length = 0usize;
    let mut chunked = false;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 || header == "\r\n" {
            break;
        }
        let lower = header.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("content-length:") {
            length = v.trim().parse().unwrap_or(0);
        } else if lower.starts_with("transfer-encoding:") && lower.contains("chunked") {
            chunked = true;
        }
    }
    let mut body = Vec::new();
    if chunked {
        loop {
            let mut size = String::new();
            reader.read_line(&mut size)?;
            let n = usize::from_str_radix(size.trim().split(';').next().unwrap_or("0"), 16)
                .unwrap_or(0);
            let mut chunk = vec![0; n + 2];
            reader.read_exact(&mut chunk)?;
            if n == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..n]);
        }
    } else {
        body.resize(length, 0);
        reader.read_exact(&mut body)?;
    }
    Ok(body)
}

/// The process's peak resident memory so far, in KiB.
fn hwm_kib(pid: u32) -> Result<u64, String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| format!("/proc/{pid}/status: {e}"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| "no VmHWM in /proc/PID/status".to_owned())
}

fn report(binary: &Path, runs: &[Run]) {
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let mib = |kib: u64| kib as f64 / 1024.0;
    let stats = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        let at = |p: usize| v[((p * v.len()).div_ceil(100)).clamp(1, v.len()) - 1];
        (v[0], at(50), at(90), v[v.len() - 1])
    };
    println!("{}", binary.display());
    println!(
        "  {:<40} {:>9} {:>9} {:>9} {:>9}",
        "", "min", "median", "p90", "max"
    );
    let rows: [(&str, Vec<f64>); 4] = [
        (
            "spawn -> first GET next (ms)",
            runs.iter().map(|r| ms(r.init)).collect(),
        ),
        (
            "peak RSS at first GET next (MiB)",
            runs.iter().map(|r| mib(r.init_hwm_kib)).collect(),
        ),
        (
            "spawn -> first response (ms)",
            runs.iter().map(|r| ms(r.first_invocation)).collect(),
        ),
        (
            "peak RSS after first invocation (MiB)",
            runs.iter().map(|r| mib(r.after_hwm_kib)).collect(),
        ),
    ];
    for (name, values) in rows {
        let (min, median, p90, max) = stats(values);
        println!("  {name:<40} {min:>9.2} {median:>9.2} {p90:>9.2} {max:>9.2}");
    }
}
