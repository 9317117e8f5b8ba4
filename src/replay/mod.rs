//! `replay`: the offline audit of archived events on the embedded store.
//!
//! - [`engine`]: records in, verdicts out.
//! - [`input`]: streaming readers for files, directories and stdin.
//! - [`render`]: the report as JSON or as a table for a person (shared with `audit`).

pub mod engine;
pub mod input;
pub mod render;

use std::io::{self, BufRead, Write};
use std::path::{Path, PathBuf};

use crate::domain::config::{ConfigError, ReplicationConfig};
use crate::domain::ids::{AccountId, Region};
use crate::domain::report::{ReplicationRecord, Report};
use crate::domain::time::{Timestamp, Window};
use engine::Engine;
use input::Record;
use render::Printer;

/// How the report is printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Format {
    #[default]
    Table,
    Json,
}

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
        let doc: serde_json::Value =
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

/// Runs the audit and prints the report. Returns the report, whose
/// [`Report::has_problems`] decides the exit status.
pub fn run(
    options: &ReplayOptions,
    stdin: &mut dyn BufRead,
    out: &mut dyn Write,
    warn: &mut dyn Write,
) -> Result<Report, ReplayError> {
    run_with_chart(options, None, stdin, out, warn)
}

/// [`run`], and when `chart` is given the lag chart written there (see [`crate::chart`]) before
/// the report is printed, so a chart that cannot be written leaves no half-done run behind.
pub fn run_with_chart(
    options: &ReplayOptions,
    chart: Option<&Path>,
    stdin: &mut dyn BufRead,
    out: &mut dyn Write,
    warn: &mut dyn Write,
) -> Result<Report, ReplayError> {
    let configs = load_configs(&options.registries, options.registry_id, warn)?;
    let inputs = input::expand(&options.inputs).map_err(ReplayError::Input)?;
    let mut engine = Engine::new(configs, options.window);
    let mut printer = Printer::new(options.format, chart.is_some()).map_err(ReplayError::Output)?;
    let mut on_verdict = |record: &ReplicationRecord| printer.add(record);

    for input in &inputs {
        input::read(input, stdin, &mut |record| match record {
            Record::Value(value, at) => engine.ingest(&value, || at.to_string(), &mut on_verdict),
            Record::Unreadable(at, why) => engine.unreadable(at.to_string(), why),
        })
        .map_err(ReplayError::Input)?;
    }
    let dropped = engine.self_destinations_dropped();
    if dropped > 0 {
        let _ = writeln!(
            warn,
            "warning: {dropped} pushes matched rules naming their own registry and Region; those destinations were ignored"
        );
    }
    let report = engine.finish(options.now, &mut on_verdict);

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
