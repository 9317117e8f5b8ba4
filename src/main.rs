//! The command line: parses arguments and wires them to the library. Nothing to test here that
//! the library's tests do not cover.

use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use ecr_replication_auditor::domain::ids::{AccountId, Region};
use ecr_replication_auditor::domain::time::{Timestamp, Window};
use ecr_replication_auditor::replay::{self, Format, RegistryFile, ReplayOptions};

#[derive(Parser)]
#[command(version, about = "Audits Amazon ECR private image replication")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Audits archived EventBridge events against the registries' replication configuration.
    ///
    /// Exit status: 0 when every expected copy is replicated or pending, 1 when any is late,
    /// missing, failed or untagged, 2 for bad usage or an unreadable configuration.
    Replay {
        /// A Region's replication configuration: REGION=FILE, FILE being the output of
        /// `aws ecr describe-registry --region REGION` (or a bare {"rules": [...]} document
        /// with --registry-id). Repeat for every source Region.
        #[arg(long = "registry", value_name = "REGION=FILE", value_parser = parse_registry)]
        registries: Vec<RegistryFile>,
        /// The registry (account) id that bare {"rules": [...]} documents belong to.
        #[arg(long, value_name = "ACCOUNT", value_parser = parse_account)]
        registry_id: Option<AccountId>,
        /// How long a copy may take before it is late or missing: 90s, 30m, 2h.
        #[arg(long, default_value = "30m", value_parser = parse_window)]
        window: Window,
        /// The audit time (RFC 3339); by default the time of the latest event read.
        #[arg(long, value_parser = parse_time)]
        now: Option<Timestamp>,
        #[arg(long, value_enum, default_value_t = FormatArg::Table)]
        format: FormatArg,
        /// Event files (one event, a JSON array, or JSON lines), directories of .json/.jsonl
        /// files, or - for standard input (the default).
        #[arg(value_name = "PATH")]
        inputs: Vec<PathBuf>,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum FormatArg {
    Table,
    Json,
}

fn parse_registry(s: &str) -> Result<RegistryFile, String> {
    let (region, path) = s.split_once('=').ok_or("expected REGION=FILE")?;
    let region = Region::parse(region).map_err(|e| format!("Region {region:?} {e}"))?;
    Ok(RegistryFile {
        region,
        path: PathBuf::from(path),
    })
}

fn parse_account(s: &str) -> Result<AccountId, String> {
    AccountId::parse(s).map_err(|e| format!("{s:?} {e}"))
}

fn parse_window(s: &str) -> Result<Window, String> {
    Window::parse(s).map_err(|e| e.to_string())
}

fn parse_time(s: &str) -> Result<Timestamp, String> {
    Timestamp::parse_rfc3339(s).map_err(|e| format!("{s:?} {e}"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Replay {
            registries,
            registry_id,
            window,
            now,
            format,
            inputs,
        } => {
            let options = ReplayOptions {
                registries,
                registry_id,
                window,
                now,
                format: match format {
                    FormatArg::Table => Format::Table,
                    FormatArg::Json => Format::Json,
                },
                inputs,
            };
            let stdout = io::stdout();
            let mut out = io::BufWriter::new(stdout.lock());
            let mut stdin = io::stdin().lock();
            match replay::run(&options, &mut stdin, &mut out, &mut io::stderr()) {
                Ok(report) if report.has_problems() => ExitCode::from(1),
                Ok(_) => ExitCode::SUCCESS,
                Err(e) => {
                    let _ = out.flush();
                    eprintln!("error: {e}");
                    ExitCode::from(2)
                }
            }
        }
    }
}
