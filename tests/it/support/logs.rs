//! Captures the JSON log lines a test's own thread writes.
//!
//! A scoped subscriber (`tracing::subscriber::set_default`) is not reliable in a test binary
//! whose other tests run on other threads without one: tracing caches, per call site and
//! globally, whether anyone is interested, and another thread can settle that to "no". So one
//! global subscriber is installed for the whole test binary, formatting JSON exactly as the
//! Lambda does. Both its filter and its writer are the capturing thread's: each line is
//! filtered by the filter that thread's test asked for (debug level, or e.g. the Lambda's own)
//! and handed to that thread's buffer; threads that capture nothing are not logged at all. So
//! tests with different filters run side by side in the one binary.

use std::cell::RefCell;
use std::io::{self, Write};
use std::sync::{Arc, Mutex, MutexGuard, Once, PoisonError};

use tracing::Metadata;
use tracing::subscriber::{Interest, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::{Context, Filter, Layer, SubscriberExt};

/// What the current thread captures: its buffer and its filter.
struct Capture {
    buffer: Arc<Mutex<Vec<u8>>>,
    filter: EnvFilter,
}

thread_local! {
    static CAPTURE: RefCell<Option<Capture>> = const { RefCell::new(None) };
}

/// A buffer's lock, whether or not a panicking test poisoned it.
fn lock(buffer: &Mutex<Vec<u8>>) -> MutexGuard<'_, Vec<u8>> {
    buffer.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Writes into the current thread's capture buffer, if it has one; elsewhere, nowhere.
struct ThreadWriter;

impl Write for ThreadWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let _ = CAPTURE.try_with(|c| {
            if let Some(capture) = c.borrow().as_ref() {
                lock(&capture.buffer).extend_from_slice(buf);
            }
        });
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Enables what the current thread's filter enables; nothing on a thread that captures nothing.
/// Every call site stays "sometimes" interesting, so that the answer is asked at every event
/// and never cached for all threads.
struct ThreadFilter;

impl<S: Subscriber> Filter<S> for ThreadFilter {
    fn enabled(&self, metadata: &Metadata<'_>, cx: &Context<'_, S>) -> bool {
        CAPTURE
            .try_with(|c| {
                c.borrow()
                    .as_ref()
                    .is_some_and(|capture| capture.filter.enabled(metadata, cx.clone()))
            })
            .unwrap_or(false)
    }

    fn callsite_enabled(&self, _: &'static Metadata<'static>) -> Interest {
        Interest::sometimes()
    }
}

/// What this thread logged since [`capture`].
pub struct Captured(Arc<Mutex<Vec<u8>>>);

impl Captured {
    pub fn text(&self) -> String {
        String::from_utf8(lock(&self.0).clone()).expect("log lines are UTF-8")
    }
}

/// Starts capturing this thread's log lines at debug level (run the async test on a
/// current-thread runtime, as `#[tokio::test]` does, so every line of the handler is written
/// from this thread).
pub fn capture() -> Captured {
    capture_filtered(|| EnvFilter::new("debug"))
}

/// [`capture`], with this thread's lines filtered by `filter` (e.g. the Lambda's own) rather
/// than at debug level.
pub fn capture_filtered(filter: impl FnOnce() -> EnvFilter) -> Captured {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        let subscriber = tracing_subscriber::registry().with(
            tracing_subscriber::fmt::layer()
                .json()
                .flatten_event(true)
                .with_current_span(false)
                .with_span_list(false)
                .with_writer(|| ThreadWriter)
                .with_filter(ThreadFilter),
        );
        tracing::subscriber::set_global_default(subscriber)
            .expect("no other global subscriber in tests");
    });
    let buffer = Arc::new(Mutex::new(Vec::new()));
    CAPTURE.with(|c| {
        *c.borrow_mut() = Some(Capture {
            buffer: buffer.clone(),
            filter: filter(),
        })
    });
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
