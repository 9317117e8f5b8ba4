//! `replay`: the offline audit of archived events on the embedded store.
//!
//! - [`engine`]: records in, verdicts out.
//! - [`input`]: streaming readers for files, directories and stdin, in the shapes exporters
//!   leave them (gzip, concatenated objects, CloudWatch Logs exports).
//! - [`log_group`]: the events of a CloudWatch Logs log group, read through
//!   [`crate::ports::event_log::EventLog`] (`replay --log-group`).
//! - [`working_set`]: what the engine holds between records, bounded by a horizon of stream
//!   time.
//!
//! The report, the JSON document and the chart are [`crate::output`]'s, shared with `audit`.

pub mod engine;
pub mod input;
pub mod log_group;
pub mod working_set;

use std::fs::File;
use std::io::{self, BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvError, TryRecvError};
use std::sync::{Mutex, PoisonError};

use serde_json::Value;

use crate::domain::config::{ConfigError, ReplicationConfig};
use crate::domain::event::Classified;
use crate::domain::ids::{AccountId, Region};
use crate::domain::report::Report;
use crate::domain::time::{Timestamp, Window};
use crate::output::{self, Format, Printer};
use crate::ports::event_log::EventLog;
use engine::{Admitted, Engine, Gate};
use input::{Input, Record};
use log_group::LogGroupQuery;

/// One `--registry REGION=FILE` argument.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegistryFile {
    pub region: Region,
    pub path: PathBuf,
}

/// Everything `replay` needs, already parsed.
#[derive(Clone, Debug)]
pub struct ReplayOptions {
    pub registries: Vec<RegistryFile>,
    /// The registry id for bare `{"rules": [...]}` documents.
    pub registry_id: Option<AccountId>,
    pub window: Window,
    /// Audit time; by default the latest event read, so a replay of a closed period is
    /// deterministic.
    pub now: Option<Timestamp>,
    pub format: Format,
    pub inputs: Vec<PathBuf>,
    /// How long, in stream time, replay remembers event ids and audited groups and keeps a
    /// group without its copy open; by default [`engine::default_horizon`] of the window.
    pub horizon: Option<Window>,
    /// How many problem copies, unmatched copies and rejected records the table lists.
    pub list_limit: usize,
    /// Where to write the lag chart (see [`crate::output::chart`]). The file is opened (created
    /// if need be) before the run and written after the report is printed; a file the run
    /// created is removed if the run stops, one already there is left as it was.
    pub chart: Option<PathBuf>,
}

/// Why `replay` could not run at all (exit status 2).
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("{path}: {source}")]
    ConfigUnreadable { path: String, source: io::Error },
    #[error("{path}: is not JSON: {source}")]
    ConfigNotJson {
        path: String,
        source: serde_json::Error,
    },
    #[error("{path}: {source}")]
    ConfigInvalid { path: String, source: ConfigError },
    #[error("{path}: the configuration of registry {registry} in {region} is given twice")]
    ConfigTwice {
        path: String,
        registry: AccountId,
        region: Region,
    },
    #[error("--horizon ({horizon}) must be longer than --window ({window})")]
    HorizonTooShort { horizon: Window, window: Window },
    #[error("--until ({until}) must be later than --since ({since})")]
    EmptyPeriod { since: Timestamp, until: Timestamp },
    #[error("cannot read input: {0}")]
    Input(io::Error),
    #[error("cannot write the report: {0}")]
    Output(io::Error),
    #[error("cannot write the chart {path}: {source}")]
    Chart { path: String, source: io::Error },
}

/// Loads and validates every `--registry` file; the first invalid one stops the run.
pub fn load_configs(
    files: &[RegistryFile],
    registry_id: Option<AccountId>,
    warn: &mut dyn Write,
) -> Result<Vec<ReplicationConfig>, ReplayError> {
    let mut configs: Vec<ReplicationConfig> = Vec::new();
    for file in files {
        let path = file.path.display().to_string();
        let text = std::fs::read(&file.path).map_err(|source| ReplayError::ConfigUnreadable {
            path: path.clone(),
            source,
        })?;
        let doc: Value =
            serde_json::from_slice(&text).map_err(|source| ReplayError::ConfigNotJson {
                path: path.clone(),
                source,
            })?;
        let config = ReplicationConfig::from_json(&doc, file.region.clone(), registry_id).map_err(
            |source| ReplayError::ConfigInvalid {
                path: path.clone(),
                source,
            },
        )?;
        if configs
            .iter()
            .any(|c| c.registry == config.registry && c.region == config.region)
        {
            return Err(ReplayError::ConfigTwice {
                path,
                registry: config.registry,
                region: config.region,
            });
        }
        for w in &config.warnings {
            // Best effort: a warning that cannot be written is no reason to stop.
            let _ = writeln!(warn, "warning: {path}: {w}");
        }
        configs.push(config);
    }
    Ok(configs)
}

/// Runs the audit of the files, directories and standard input `options.inputs` names, and
/// prints the report. Returns the report, whose [`Report::has_problems`] decides the exit status.
pub fn run(
    options: &ReplayOptions,
    stdin: &mut dyn BufRead,
    out: &mut (dyn Write + Send),
    warn: &mut dyn Write,
) -> Result<Report, ReplayError> {
    audit(options, out, warn, |gate, stop, sink| {
        let inputs = input::expand(&options.inputs).map_err(ReplayError::Input)?;
        for input in &inputs {
            match input {
                Input::File(_) => read_ahead(
                    gate,
                    |records| input::read_unless(input, &mut io::empty(), stop, records),
                    sink,
                ),
                Input::Stdin => {
                    input::read_unless(input, stdin, stop, &mut |r| sink(&mut admit(gate, r)))
                }
            }
            .map_err(ReplayError::Input)?;
        }
        Ok(())
    })
}

/// [`run`] on the events of a log group instead (`replay --log-group`), read through `log` on a
/// second thread while this one audits; a progress line now and then goes to `progress`.
/// `options.inputs` is not read.
pub fn run_log_group<L: EventLog + Sync>(
    options: &ReplayOptions,
    log: &L,
    query: &LogGroupQuery,
    out: &mut (dyn Write + Send),
    warn: &mut dyn Write,
    progress: &mut (dyn Write + Send),
) -> Result<Report, ReplayError> {
    query.check()?;
    audit(options, out, warn, |gate, stop, sink| {
        read_ahead(
            gate,
            |records| log_group::read(log, query, stop, records, progress),
            sink,
        )
        .map_err(ReplayError::Input)
    })
}

/// Checks the options, loads the configurations, then audits every record `read` hands on and
/// prints the report. `read` stops early (with an error) once the flag it is given is raised:
/// the JSON report, written as the verdicts come, could not be written (a closed pipe, a full
/// disk), and that is the error returned.
fn audit(
    options: &ReplayOptions,
    out: &mut (dyn Write + Send),
    warn: &mut dyn Write,
    read: impl FnOnce(&mut Gate, &AtomicBool, &mut dyn FnMut(&mut Gated)) -> Result<(), ReplayError>,
) -> Result<Report, ReplayError> {
    if let Some(horizon) = options.horizon
        && horizon.millis() <= options.window.millis()
    {
        return Err(ReplayError::HorizonTooShort {
            horizon,
            window: options.window,
        });
    }
    let configs = load_configs(&options.registries, options.registry_id, warn)?;
    let mut engine = Engine::new(configs, options.window).with_list_limit(options.list_limit);
    if let Some(horizon) = options.horizon {
        engine = engine.with_horizon(horizon);
    }
    let chart = match &options.chart {
        Some(path) => Some(ChartFile::open(path).map_err(|e| chart_error(path, e))?),
        None => None,
    };
    let unwritable = AtomicBool::new(false);
    std::thread::scope(|scope| {
        // For `--format json`, each verdict goes into the report as it comes (see
        // `Printer::streaming`).
        let mut printer = Printer::streaming(
            options.format,
            chart.is_some(),
            options.window,
            scope,
            out,
            &unwritable,
        )
        .map_err(ReplayError::Output)?;
        let mut gate = Gate::new(engine.horizon());
        // The record is borrowed: what the engine keeps it copies out, and the record (with
        // its location, which shares the source's name with every record of the source) goes
        // back to the reading thread to be dropped there (see `read_ahead`).
        let reading = read(
            &mut gate,
            &unwritable,
            &mut |record: &mut Gated| match record {
                Record::Value(admitted, at) => {
                    engine.ingest_admitted(admitted, || at.to_string(), &mut printer)
                }
                Record::Unreadable(at, why) => {
                    engine.unreadable(at.to_string(), std::mem::take(why), &mut printer)
                }
            },
        );
        if unwritable.load(Ordering::Acquire) {
            // The input was cut short for the report: why the report failed is the error.
            return Err(ReplayError::Output(printer.failure()));
        }
        reading?;
        let dropped = engine.self_destinations_dropped();
        if dropped > 0 {
            let _ = writeln!(
                warn,
                "warning: {dropped} pushes matched rules naming their own registry and Region; those destinations were ignored"
            );
        }
        let report = engine.finish(options.now, &mut printer);
        // The chart after the report, whose verdicts may be out already.
        let lags = printer.take_lags();
        printer.print(&report).map_err(ReplayError::Output)?;
        if let (Some(lags), Some(chart)) = (lags, chart) {
            let path = chart.path;
            chart
                .write(|file| output::write_chart(&lags, &report, None, file))
                .map_err(|e| chart_error(path, e))?;
        }
        Ok(report)
    })
}

/// The chart's file, opened for writing before the run without touching what a file already
/// there holds, so that a path that cannot be written stops the run before it starts; written
/// from its start once the report is printed. A file the run created is removed when the run
/// does not get to write it (an error or a panic): no chart without its report.
struct ChartFile<'a> {
    path: &'a Path,
    created: bool,
    written: bool,
}

impl<'a> ChartFile<'a> {
    fn open(path: &'a Path) -> io::Result<ChartFile<'a>> {
        let created = match File::create_new(path) {
            Ok(_) => true,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                std::fs::OpenOptions::new().write(true).open(path)?;
                false
            }
            Err(e) => return Err(e),
        };
        Ok(ChartFile {
            path,
            created,
            written: false,
        })
    }

    fn write(mut self, draw: impl FnOnce(File) -> io::Result<()>) -> io::Result<()> {
        draw(File::create(self.path)?)?;
        self.written = true;
        Ok(())
    }
}

impl Drop for ChartFile<'_> {
    fn drop(&mut self) {
        if self.created && !self.written {
            // Best effort: the run's own error is the one to report.
            let _ = std::fs::remove_file(self.path);
        }
    }
}

fn chart_error(path: &Path, source: io::Error) -> ReplayError {
    ReplayError::Chart {
        path: path.display().to_string(),
        source,
    }
}

/// A record as the reading thread hands it on: read straight from its text into what
/// [`classify`](crate::domain::event::classify) makes of it (see [`Classified`]'s `Deserialize`),
/// so that parsing and classifying run beside the correlation and no JSON tree is built.
type Parsed = Record<Classified>;

/// A record past the [`Gate`], which `replay` runs a batch at a time on whichever thread has
/// room for it (see [`read_ahead`] and [`Gate::admit_batch`]).
type Gated = Record<Admitted>;

fn admit(gate: &mut Gate, record: Parsed) -> Gated {
    match record {
        Record::Value(classified, at) => Record::Value(gate.admit(classified), at),
        Record::Unreadable(at, why) => Record::Unreadable(at, why),
    }
}

/// Records handed from the reading thread to the auditing one at a time, and hand-overs in
/// flight: enough to keep both threads busy, a few megabytes of parsed events at most.
const READ_AHEAD_BATCH: usize = 512;
const READ_AHEAD_BATCHES: usize = 4;

/// Reads and parses on a second thread (`produce` hands each record it reads to the function it
/// is given) while this one audits, and hands the records to `sink` in the order they were
/// read. Reading and parsing JSON costs nearly as much as auditing, so on two cores the two
/// overlap; a log group's pages are fetched while the last one is audited. An I/O error is
/// returned once every record read before it has been handed over, as when reading on this
/// thread.
///
/// Each batch goes back to the reading thread to be filled again, so batches are allocated once.
/// What a record allocates is only what its classification keeps (its ids), no JSON tree. (When
/// records were read into trees and the auditing thread dropped them, glibc's allocator, which
/// frees another thread's memory far more slowly, doubled the replay's CPU time.)
///
/// The gate runs on whichever thread is the less busy, a batch at a time ([`Placement`]).
fn read_ahead(
    gate: &mut Gate,
    produce: impl FnOnce(&mut dyn FnMut(Parsed)) -> io::Result<()> + Send,
    sink: &mut dyn FnMut(&mut Gated),
) -> io::Result<()> {
    read_ahead_placed(gate, produce, sink, Placement::Balanced)
}

/// Which thread admits a batch of records through the [`Gate`]: a random probe of a large table
/// per record, some tenth of either thread's work. Which thread is the busier depends on the
/// stream and the format: reading is, for a table of a stream over many days; auditing is, for
/// JSON verdicts of a stream within one day, where nothing is forgotten.
#[derive(Clone, Copy, Debug)]
enum Placement {
    /// The reading thread leaves a batch to the auditing thread when that thread is idle,
    /// waiting for it (reading is the busier), or has a batch left to it still to admit, and
    /// admits it itself otherwise.
    Balanced,
    /// Tests: the reading thread admits batch `n` when bit `n % 64` is set (and the auditing
    /// thread has admitted every batch left to it), and leaves it to the auditing thread
    /// otherwise.
    #[cfg(test)]
    Pattern(u64),
}

impl Placement {
    /// Whether the reading thread leaves batch `n` to the auditing thread.
    #[cfg_attr(not(test), allow(unused_variables))]
    fn leaves(self, n: u64, auditor_idle: bool) -> bool {
        match self {
            Placement::Balanced => auditor_idle,
            #[cfg(test)]
            Placement::Pattern(bits) => bits >> (n % 64) & 1 == 0,
        }
    }

    /// Before the reading thread admits a batch: under a test's pattern, waits (a while at
    /// most, in case the auditing thread is gone) until `turn` says every batch left to the
    /// auditing thread is admitted, so that the pattern is followed and the gate changes hands
    /// as often as it says. Otherwise nothing: the batch is left to the auditing thread too.
    #[cfg_attr(not(test), allow(unused_variables))]
    fn await_turn(self, turn: impl Fn() -> bool) {
        #[cfg(test)]
        if let Placement::Pattern(_) = self {
            let start = std::time::Instant::now();
            while !turn() && start.elapsed() < std::time::Duration::from_secs(1) {
                std::thread::yield_now();
            }
        }
    }
}

/// A batch of records on its way to the auditing thread, and whether the gate has seen it.
struct Batch {
    records: Vec<Gated>,
    admitted: bool,
}

fn read_ahead_placed(
    gate: &mut Gate,
    produce: impl FnOnce(&mut dyn FnMut(Parsed)) -> io::Result<()> + Send,
    sink: &mut dyn FnMut(&mut Gated),
    placement: Placement,
) -> io::Result<()> {
    let (to_auditor, parsed) = mpsc::sync_channel::<Batch>(READ_AHEAD_BATCHES);
    let (to_reader, spent) = mpsc::channel::<Vec<Gated>>();
    // The gate is used by one thread at a time, in the order of the batches: the reading thread
    // admits a batch only once the auditing thread has admitted every batch left to it, and
    // otherwise leaves that one to it as well, so neither thread ever waits for the other's
    // turn at the gate.
    let gate = Mutex::new(gate);
    let admit_all = |batch: &mut Vec<Gated>, prints: &mut Vec<Option<u128>>| {
        let mut gate = gate.lock().unwrap_or_else(PoisonError::into_inner);
        gate.admit_batch(batch, prints, |record| match record {
            Record::Value(admitted, _) => Some(admitted),
            Record::Unreadable(..) => None,
        })
    };
    let (idle, admitted_by_auditor) = (&AtomicBool::new(false), &AtomicU64::new(0));
    std::thread::scope(|scope| {
        let reader = scope.spawn(move || {
            let mut batch = Vec::with_capacity(READ_AHEAD_BATCH);
            let mut prints = Vec::with_capacity(READ_AHEAD_BATCH);
            let mut sent: u64 = 0;
            let mut left_to_auditor: u64 = 0;
            // False when the auditing thread is gone (it panicked): then read on, idle.
            let mut hand_over = |mut records: Vec<Gated>| {
                // A batch the auditing thread has not yet admitted comes first: this one is
                // left to it too, rather than waited for (which spun this thread on
                // `sched_yield`, 3.5% of its samples on the one-day JSON report).
                let mut admitted = !placement.leaves(sent, idle.load(Ordering::Acquire));
                if admitted {
                    placement.await_turn(|| {
                        admitted_by_auditor.load(Ordering::Acquire) == left_to_auditor
                    });
                }
                admitted &= admitted_by_auditor.load(Ordering::Acquire) == left_to_auditor;
                if admitted {
                    admit_all(&mut records, &mut prints);
                } else {
                    left_to_auditor += 1;
                }
                sent += 1;
                to_auditor.send(Batch { records, admitted }).is_ok()
            };
            let mut auditing = true;
            let result = produce(&mut |record| {
                batch.push(match record {
                    Record::Value(classified, at) => {
                        Record::Value(Admitted::Record(classified), at)
                    }
                    Record::Unreadable(at, why) => Record::Unreadable(at, why),
                });
                if batch.len() == READ_AHEAD_BATCH && auditing {
                    let mut next = spent.try_recv().unwrap_or_default();
                    next.clear();
                    auditing = hand_over(std::mem::replace(&mut batch, next));
                }
                if !auditing {
                    batch.clear();
                }
            });
            if auditing && !batch.is_empty() {
                hand_over(batch);
            }
            result
        });
        // Dropped however the loop below ends, a panic included, so that the reading thread
        // never waits for a thread that is gone: its next hand-over fails.
        let parsed = parsed;
        let mut prints = Vec::with_capacity(READ_AHEAD_BATCH);
        loop {
            let mut batch = match parsed.try_recv() {
                Ok(batch) => batch,
                Err(TryRecvError::Disconnected) => break,
                Err(TryRecvError::Empty) => {
                    idle.store(true, Ordering::Release);
                    let next = parsed.recv();
                    idle.store(false, Ordering::Release);
                    match next {
                        Ok(batch) => batch,
                        Err(RecvError) => break,
                    }
                }
            };
            if !batch.admitted {
                admit_all(&mut batch.records, &mut prints);
                admitted_by_auditor.fetch_add(1, Ordering::Release);
            }
            batch.records.iter_mut().for_each(&mut *sink);
            // What is left of the records is dropped by the reading thread as it clears the
            // batch: every record holds a count of its source's name, and taking one on one
            // thread and dropping it on the other moved that count's cache line between the
            // cores twice a record (BENCHMARKS.md, "Fifth round"). Once the reader is done, the
            // last few batches are dropped here instead.
            let _ = to_reader.send(batch.records);
        }
        reader
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;

    /// `n` pushes a second apart, every 97th dated a year ahead (refused for its time once the
    /// stream's clock has started), every 89th not JSON; then every tenth line again 600 lines
    /// on: duplicates a batch or two apart.
    fn stream(n: usize) -> Vec<u8> {
        let lines: Vec<String> = (0..n)
            .map(|i| {
                if i % 89 == 88 {
                    return format!("broken-{i} is not JSON\n");
                }
                let seconds = if i % 97 == 96 { 365 * 86_400 } else { i };
                let time = Timestamp::from_millis(1_719_792_000_000 + seconds as i64 * 1000);
                format!(
                    concat!(
                        r#"{{"version":"0","id":"push-{i}","detail-type":"ECR Image Action","#,
                        r#""source":"aws.ecr","account":"111111111111","time":"{time}","#,
                        r#""region":"us-east-1","resources":[],"detail":{{"result":"SUCCESS","#,
                        r#""repository-name":"app","image-digest":"sha256:{i:064x}","#,
                        r#""action-type":"PUSH","image-tag":"v{i}"}}}}"#,
                        "\n"
                    ),
                    i = i,
                    time = time
                )
            })
            .collect();
        let mut text = Vec::new();
        for (i, line) in lines.iter().enumerate() {
            text.extend_from_slice(line.as_bytes());
            if i >= 600 && i % 10 == 0 {
                text.extend_from_slice(lines[i - 600].as_bytes());
            }
        }
        text
    }

    /// What the gate made of each record, in the order `sink` saw them. At the start of each
    /// batch the auditing side waits (up to 20 ms) until the reading side has read 1,500
    /// records further (or all), so that batches queue for it and the reading thread runs
    /// ahead.
    fn gated(placement: Option<Placement>, text: &[u8]) -> Vec<String> {
        let mut gate = Gate::new(Window::parse("2h").unwrap());
        let mut seen = Vec::new();
        let (read, done) = (AtomicUsize::new(0), AtomicBool::new(false));
        let mut sink = |record: &mut Gated| {
            let start = std::time::Instant::now();
            while placement.is_some()
                && seen.len() % READ_AHEAD_BATCH == 0
                && !done.load(Ordering::Acquire)
                && read.load(Ordering::Acquire) < seen.len() + 1_500
                && start.elapsed() < std::time::Duration::from_millis(20)
            {
                std::thread::yield_now();
            }
            seen.push(match record {
                Record::Value(admitted, at) => format!("{at}: {admitted:?}"),
                Record::Unreadable(at, why) => format!("{at}: unreadable {why}"),
            })
        };
        let produce = |records: &mut dyn FnMut(Parsed)| {
            let result = input::read(&Input::Stdin, &mut &text[..], &mut |r| {
                records(r);
                read.fetch_add(1, Ordering::Release);
            });
            done.store(true, Ordering::Release);
            result
        };
        match placement {
            Some(placement) => read_ahead_placed(&mut gate, produce, &mut sink, placement).unwrap(),
            None => input::read(&Input::Stdin, &mut &text[..], &mut |r| {
                sink(&mut admit(&mut gate, r))
            })
            .unwrap(),
        }
        seen
    }

    /// `f`'s outcome, panic or value, or a failure if it has not ended after a minute.
    fn within_a_minute<T: Send>(f: impl FnOnce() -> T + Send) -> std::thread::Result<T> {
        let (done, outcome) = mpsc::channel();
        std::thread::scope(|scope| {
            scope.spawn(move || {
                done.send(std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)))
            });
            match outcome.recv_timeout(std::time::Duration::from_secs(60)) {
                Ok(outcome) => outcome,
                Err(_) => {
                    eprintln!("still running after a minute: the replay hangs");
                    std::process::abort()
                }
            }
        })
    }

    /// A panic while auditing reaches the caller, wherever the reading thread is: waiting to
    /// hand a batch over, or for the gate.
    #[test]
    fn a_panic_while_auditing_ends_the_replay() {
        let text = stream(8_000);
        for (placement, at) in [
            (Placement::Balanced, 10),
            (Placement::Pattern(0), 600),
            (Placement::Pattern(u64::MAX), 1_100),
            (Placement::Pattern(0xAAAA_AAAA_AAAA_AAAA), 1_600),
        ] {
            let outcome = within_a_minute(|| {
                let mut gate = Gate::new(Window::parse("2h").unwrap());
                let mut seen = 0;
                let mut sink = |_: &mut Gated| {
                    seen += 1;
                    if seen == at {
                        panic!("auditing failed at record {at}");
                    }
                };
                let produce = |records: &mut dyn FnMut(Parsed)| {
                    input::read(&Input::Stdin, &mut &text[..], records)
                };
                read_ahead_placed(&mut gate, produce, &mut sink, placement)
            });
            let panic = outcome.expect_err("the panic reaches the caller");
            let message = panic.downcast_ref::<String>().unwrap();
            assert_eq!(message, &format!("auditing failed at record {at}"));
        }
    }

    /// Whichever thread admits each batch, every record is admitted as the gate on one thread
    /// admits it: the same duplicates, the same times refused, in the same order.
    #[test]
    fn the_gate_admits_the_same_whichever_thread_runs_it() {
        let text = stream(6_000);
        let alone = gated(None, &text);
        assert!(alone.len() > 6_000, "{}", alone.len());
        let count = |what: &str| alone.iter().filter(|r| r.contains(what)).count();
        assert!(count("Duplicate") > 500, "{}", count("Duplicate"));
        assert!(count("Rejected") > 50, "{}", count("Rejected"));
        assert!(count("unreadable") > 50, "{}", count("unreadable"));
        for placement in [
            Placement::Balanced,
            Placement::Pattern(0),
            Placement::Pattern(u64::MAX),
            Placement::Pattern(0xAAAA_AAAA_AAAA_AAAA),
            Placement::Pattern(0xF0F0_0FF0_3C3C_0001),
            Placement::Pattern(0x9E37_79B9_7F4A_7C15),
        ] {
            assert!(gated(Some(placement), &text) == alone, "{placement:?}");
        }
    }
}
