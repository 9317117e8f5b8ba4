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

use std::io::{self, BufRead, Write};
use std::path::PathBuf;
use std::sync::mpsc;

use serde_json::Value;

use crate::domain::config::{ConfigError, ReplicationConfig};
use crate::domain::event::Classified;
use crate::domain::ids::{AccountId, Region};
use crate::domain::report::Report;
use crate::domain::time::{Timestamp, Window};
use crate::output::{Format, Printer};
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
    /// Where to write the lag chart (see [`crate::output::chart`]), before the report is
    /// printed, so that a chart that cannot be written leaves no half-done run behind.
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
    out: &mut dyn Write,
    warn: &mut dyn Write,
) -> Result<Report, ReplayError> {
    audit(options, out, warn, |gate, sink| {
        let inputs = input::expand(&options.inputs).map_err(ReplayError::Input)?;
        for input in &inputs {
            match input {
                Input::File(_) => read_ahead(
                    gate,
                    |records| input::read(input, &mut io::empty(), records),
                    sink,
                ),
                Input::Stdin => input::read(input, stdin, &mut |r| sink(&mut admit(gate, r))),
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
    out: &mut dyn Write,
    warn: &mut dyn Write,
    progress: &mut (dyn Write + Send),
) -> Result<Report, ReplayError> {
    query.check()?;
    audit(options, out, warn, |gate, sink| {
        read_ahead(
            gate,
            |records| log_group::read(log, query, records, progress),
            sink,
        )
        .map_err(ReplayError::Input)
    })
}

/// Checks the options, loads the configurations, then audits every record `read` hands on and
/// prints the report.
fn audit(
    options: &ReplayOptions,
    out: &mut dyn Write,
    warn: &mut dyn Write,
    read: impl FnOnce(&mut Gate, &mut dyn FnMut(&mut Gated)) -> Result<(), ReplayError>,
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
    let chart = options.chart.as_deref();
    let mut printer = Printer::new(options.format, chart.is_some()).map_err(ReplayError::Output)?;

    let mut gate = Gate::new(engine.horizon());
    // The record is borrowed: what the engine keeps it copies out, and the record (with its
    // location, which shares the source's name with every record of the source) goes back to
    // the reading thread to be dropped there (see `read_ahead`).
    read(&mut gate, &mut |record: &mut Gated| match record {
        Record::Value(admitted, at) => {
            engine.ingest_admitted(admitted, || at.to_string(), &mut printer)
        }
        Record::Unreadable(at, why) => {
            engine.unreadable(at.to_string(), std::mem::take(why), &mut printer)
        }
    })?;
    let dropped = engine.self_destinations_dropped();
    if dropped > 0 {
        let _ = writeln!(
            warn,
            "warning: {dropped} pushes matched rules naming their own registry and Region; those destinations were ignored"
        );
    }
    let report = engine.finish(options.now, &mut printer);

    if let Some(path) = chart {
        printer
            .chart(&report, None, path)
            .map_err(|source| ReplayError::Chart {
                path: path.display().to_string(),
                source,
            })?;
    }
    printer.print(&report, out).map_err(ReplayError::Output)?;
    Ok(report)
}

/// A record as the reading thread hands it on: read straight from its text into what
/// [`classify`](crate::domain::event::classify) makes of it (see [`Classified`]'s `Deserialize`),
/// so that parsing and classifying run beside the correlation and no JSON tree is built.
type Parsed = Record<Classified>;

/// A record past the [`Gate`], which runs on the reading thread too, a batch at a time (see
/// [`Gate::admit_batch`]): telling duplicates costs a random probe of a large table per record,
/// and the auditing thread is the busier one.
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
fn read_ahead(
    gate: &mut Gate,
    produce: impl FnOnce(&mut dyn FnMut(Parsed)) -> io::Result<()> + Send,
    sink: &mut dyn FnMut(&mut Gated),
) -> io::Result<()> {
    let (to_auditor, parsed) = mpsc::sync_channel::<Vec<Gated>>(READ_AHEAD_BATCHES);
    let (to_reader, spent) = mpsc::channel::<Vec<Gated>>();
    std::thread::scope(|scope| {
        let reader = scope.spawn(move || {
            let mut batch = Vec::with_capacity(READ_AHEAD_BATCH);
            let mut prints = Vec::with_capacity(READ_AHEAD_BATCH);
            // The gate sees a whole batch at once (see `Gate::admit_batch`).
            let mut admit_all = |batch: &mut Vec<Gated>| {
                gate.admit_batch(batch, &mut prints, |record| match record {
                    Record::Value(admitted, _) => Some(admitted),
                    Record::Unreadable(..) => None,
                })
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
                    admit_all(&mut batch);
                    let mut next = spent.try_recv().unwrap_or_default();
                    next.clear();
                    let full = std::mem::replace(&mut batch, next);
                    // Fails only when the auditing thread is gone (it panicked): read on, idle.
                    auditing = to_auditor.send(full).is_ok();
                }
                if !auditing {
                    batch.clear();
                }
            });
            if auditing && !batch.is_empty() {
                admit_all(&mut batch);
                let _ = to_auditor.send(batch);
            }
            result
        });
        for mut batch in parsed {
            batch.iter_mut().for_each(&mut *sink);
            // What is left of the records is dropped by the reading thread as it clears the
            // batch: every record holds a count of its source's name, and taking one on one
            // thread and dropping it on the other moved that count's cache line between the
            // cores twice a record (BENCHMARKS.md, "Fifth round"). Once the reader is done, the
            // last few batches are dropped here instead.
            let _ = to_reader.send(batch);
        }
        reader
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}
