//! `replay --log-group`: the events an EventBridge rule wrote to a CloudWatch Logs log group
//! (the stack's event log), read back through [`EventLog`] a page at a time, in the log's order
//! (by event time), each log event's message a record as if read from a file.

use std::io::{self, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use super::ReplayError;

use super::input::{self, Record};
use crate::domain::time::Timestamp;
use crate::ports::event_log::EventLog;

/// A progress line on stderr every this many pages (a page is up to 10,000 events), and at the
/// end.
const PROGRESS_EVERY_PAGES: u64 = 10;

/// What to read: the events logged in `[since, until)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogGroupQuery {
    /// The log group's name, for messages (the [`EventLog`] knows which group it reads).
    pub group: String,
    pub since: Timestamp,
    pub until: Timestamp,
}

impl LogGroupQuery {
    /// Refuses a period that holds no instant.
    pub fn check(&self) -> Result<(), ReplayError> {
        if self.until <= self.since {
            return Err(ReplayError::EmptyPeriod {
                since: self.since,
                until: self.until,
            });
        }
        Ok(())
    }
}

/// Reads every page and hands each log event to `sink` as a record; writes a progress line to
/// `progress` now and then. A page that cannot be read (after the SDK's retries) ends the read
/// with an error naming the group: the records before it have been handed on.
pub fn read<L: EventLog, T: input::ReadRecord>(
    log: &L,
    query: &LogGroupQuery,
    stop: &AtomicBool,
    sink: &mut dyn FnMut(Record<T>),
    progress: &mut dyn Write,
) -> io::Result<()> {
    // The SDK's futures need a runtime: this thread's own, for as long as the read lasts.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(read_pages(log, query, stop, sink, progress))
}

async fn read_pages<L: EventLog, T: input::ReadRecord>(
    log: &L,
    query: &LogGroupQuery,
    stop: &AtomicBool,
    sink: &mut dyn FnMut(Record<T>),
    progress: &mut dyn Write,
) -> io::Result<()> {
    let mut token = None;
    let (mut pages, mut events) = (0_u64, 0_u64);
    let mut latest: Option<Timestamp> = None;
    // The source named in each record's location, shared while the stream stays the same.
    let mut source: Option<(String, Arc<str>)> = None;
    loop {
        // As [`input::read_unless`] does: no more pages for a report that cannot be written.
        if stop.load(Ordering::Acquire) {
            return Err(io::Error::other(input::Stopped));
        }
        let sent = token.take();
        let page = log
            .page(query.since, query.until, sent.clone())
            .await
            .map_err(|e| io::Error::other(format!("log group {}: {e}", query.group)))?;
        pages += 1;
        for event in page.events {
            let named = match &source {
                Some((stream, named)) if *stream == event.stream => named.clone(),
                _ => {
                    let named: Arc<str> =
                        format!("log group {} stream {}", query.group, event.stream).into();
                    source = Some((event.stream, named.clone()));
                    named
                }
            };
            latest = latest.max(Some(event.timestamp));
            sink(input::log_event(
                &named,
                event.timestamp.millis(),
                &event.message,
            ));
            events += 1;
        }
        // The SDK's own paginators stop when a token comes back unchanged; so does this read.
        let next = page.next.filter(|next| Some(next) != sent.as_ref());
        let last = next.is_none();
        if last || pages % PROGRESS_EVERY_PAGES == 0 {
            let up_to = latest.map_or_else(String::new, |t| format!(", up to {t}"));
            let state = if last { "done" } else { "reading" };
            // Best effort: progress that cannot be written is no reason to stop.
            let _ = writeln!(
                progress,
                "log group {}: {events} events in {pages} pages{up_to} ({state})",
                query.group
            );
        }
        match next {
            Some(next) => token = Some(next),
            None => return Ok(()),
        }
    }
}
