//! Captures the JSON log lines a test's own thread writes.
//!
//! A scoped subscriber (`tracing::subscriber::set_default`) is not reliable in a test binary
//! whose other tests run on other threads without one: tracing caches, per call site and
//! globally, whether anyone is interested, and another thread can settle that to "no". So one
//! global subscriber is installed per test binary, at debug level (or with the filter a test
//! gives), formatting JSON exactly as the Lambda does, and its writer hands each line to the
//! buffer of the thread that wrote it.

use std::cell::RefCell;
use std::io::{self, Write};
use std::sync::{Arc, Mutex, MutexGuard, Once, PoisonError};

thread_local! {
    static BUFFER: RefCell<Option<Arc<Mutex<Vec<u8>>>>> = const { RefCell::new(None) };
}

/// A buffer's lock, whether or not a panicking test poisoned it.
fn lock(buffer: &Mutex<Vec<u8>>) -> MutexGuard<'_, Vec<u8>> {
    buffer.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Writes into the current thread's capture buffer, if it has one; elsewhere, nowhere.
struct ThreadWriter;

impl Write for ThreadWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        BUFFER.with(|b| {
            if let Some(buffer) = b.borrow().as_ref() {
                lock(buffer).extend_from_slice(buf);
            }
        });
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// What this thread logged since [`capture`].
pub struct Captured(Arc<Mutex<Vec<u8>>>);

impl Captured {
    pub fn text(&self) -> String {
        String::from_utf8(lock(&self.0).clone()).expect("log lines are UTF-8")
    }
}

/// Starts capturing this thread's log lines (run the async test on a current-thread runtime,
/// as `#[tokio::test]` does, so every line of the handler is written from this thread).
pub fn capture() -> Captured {
    capture_filtered(|| tracing_subscriber::EnvFilter::new("debug"))
}

/// [`capture`], with the global subscriber filtered by `filter` (e.g. the Lambda's own) rather
/// than at debug level. The first capture of a test binary installs the subscriber: use one
/// filter per binary.
pub fn capture_filtered(filter: impl FnOnce() -> tracing_subscriber::EnvFilter) -> Captured {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        let subscriber = tracing_subscriber::fmt()
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .with_env_filter(filter())
            .with_writer(|| ThreadWriter)
            .finish();
        tracing::subscriber::set_global_default(subscriber)
            .expect("no other global subscriber in tests");
    });
    let buffer = Arc::new(Mutex::new(Vec::new()));
    BUFFER.with(|b| *b.borrow_mut() = Some(buffer.clone()));
    Captured(buffer)
}

/// A writer shared with the test: EMF lines or log lines land here.
#[derive(Clone, Default)]
pub struct SharedBuf(Arc<Mutex<Vec<u8>>>);

impl SharedBuf {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&lock(&self.0)).into_owned()
    }
}

impl Write for SharedBuf {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        lock(&self.0).extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
