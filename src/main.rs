//! The command line: parses arguments and wires them to the library. Nothing to test here that
//! the library's tests do not cover.

use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use clap::{Parser, Subcommand, ValueEnum};
use ecr_replication_auditor::adapters::dynamodb::DynamoStateStore;
use ecr_replication_auditor::audit::{self, AuditOptions, DestinationFilter, Scope};
use ecr_replication_auditor::domain::ids::{AccountId, Region};
use ecr_replication_auditor::domain::report::DEFAULT_LIST_LIMIT;
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
        /// Also draw the lag per destination over the period as an SVG picture in FILE.
        #[arg(long, value_name = "FILE.svg")]
        chart: Option<PathBuf>,
        /// How long, in event time, replay remembers event ids and audited images, and waits
        /// for a missing copy before concluding it: 24h by default (EventBridge's longest
        /// redelivery), or two windows if longer. Memory follows the events of one horizon.
        #[arg(long, value_parser = parse_window)]
        horizon: Option<Window>,
        /// How many problem copies, unmatched copies and rejected records the table lists (the
        /// worst, the earliest, the first); all are counted, and --format json lists all.
        #[arg(long, default_value_t = DEFAULT_LIST_LIMIT)]
        list_limit: usize,
        /// Event files (one event, a JSON array, or JSON lines), directories of .json/.jsonl
        /// files, or - for standard input (the default).
        #[arg(value_name = "PATH")]
        inputs: Vec<PathBuf>,
    },
    /// Audits the pushes of a period from the Lambda's history in its DynamoDB table: the same
    /// report as replay, with what the Lambda's sweep confirmed with ECR's APIs.
    ///
    /// AWS credentials, Region and endpoint come from the usual SDK configuration (AWS_REGION,
    /// AWS_PROFILE, AWS_ENDPOINT_URL, ...). Needs dynamodb:Query on the table's indexes.
    /// Exit status: 0 when every expected copy is replicated or pending, 1 when any is late,
    /// missing, failed or untagged, 2 for bad usage or a table that cannot be read.
    Audit {
        /// The Lambda's table (its STATE_TABLE; template.yaml's StateTable).
        #[arg(long)]
        table: String,
        /// Audit pushes at or after this instant: RFC 3339, or a date for its midnight UTC.
        #[arg(long, value_parser = parse_instant)]
        since: Timestamp,
        /// ...and before this instant (excluded): RFC 3339, or a date.
        #[arg(long, value_parser = parse_instant)]
        until: Timestamp,
        /// The replication window: must be the Lambda's REPLICATION_WINDOW.
        #[arg(long, default_value = "30m", value_parser = parse_window)]
        window: Window,
        /// The audit time (RFC 3339); by default now.
        #[arg(long, value_parser = parse_time)]
        now: Option<Timestamp>,
        /// Only this destination: REGION, or REGION:ACCOUNT.
        #[arg(long, value_name = "REGION[:ACCOUNT]", value_parser = DestinationFilter::parse)]
        destination: Option<DestinationFilter>,
        /// Only repositories whose name starts with PREFIX (as ECR's PREFIX_MATCH filters).
        #[arg(long = "repository", value_name = "PREFIX", value_parser = parse_prefix)]
        repository_prefix: Option<String>,
        /// Also look this far before --since for images first pushed then and pushed again
        /// (retagged) in the period: 24h, 168h. Each day costs one more query.
        #[arg(long, value_parser = parse_window)]
        lookback: Option<Window>,
        #[arg(long, value_enum, default_value_t = FormatArg::Table)]
        format: FormatArg,
        /// Also draw the lag per destination over the period as an SVG picture in FILE.
        #[arg(long, value_name = "FILE.svg")]
        chart: Option<PathBuf>,
        /// How many problem copies and unmatched copies the table lists (the worst, the
        /// earliest); all are counted, and --format json lists all.
        #[arg(long, default_value_t = DEFAULT_LIST_LIMIT)]
        list_limit: usize,
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

fn parse_instant(s: &str) -> Result<Timestamp, String> {
    audit::parse_instant(s).map_err(|_| {
        format!(
            "{s:?} is neither an RFC 3339 date-time nor a date (2024-07-01T12:00:00Z, 2024-07-01)"
        )
    })
}

fn parse_prefix(s: &str) -> Result<String, String> {
    if s.is_empty() {
        Err("is empty".into())
    } else {
        Ok(s.to_string())
    }
}

impl From<FormatArg> for Format {
    fn from(f: FormatArg) -> Format {
        match f {
            FormatArg::Table => Format::Table,
            FormatArg::Json => Format::Json,
        }
    }
}

fn clock() -> Timestamp {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    Timestamp::from_millis(i64::try_from(ms).unwrap_or(i64::MAX))
}

/// The exit status of a finished run: 1 when the report has problems.
fn exit_status(has_problems: bool) -> ExitCode {
    if has_problems {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

fn fail(out: &mut dyn Write, error: &dyn std::fmt::Display) -> ExitCode {
    let _ = out.flush();
    eprintln!("error: {error}");
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let stdout = io::stdout();
    let mut out = io::BufWriter::new(stdout.lock());
    match cli.command {
        Command::Replay {
            registries,
            registry_id,
            window,
            now,
            format,
            chart,
            horizon,
            list_limit,
            inputs,
        } => {
            let options = ReplayOptions {
                registries,
                registry_id,
                window,
                now,
                format: format.into(),
                inputs,
                horizon,
                list_limit,
            };
            let mut stdin = io::stdin().lock();
            match replay::run_with_chart(
                &options,
                chart.as_deref(),
                &mut stdin,
                &mut out,
                &mut io::stderr(),
            ) {
                Ok(report) => exit_status(report.has_problems()),
                Err(e) => fail(&mut out, &e),
            }
        }
        Command::Audit {
            table,
            since,
            until,
            window,
            now,
            destination,
            repository_prefix,
            lookback,
            format,
            chart,
            list_limit,
        } => {
            let options = AuditOptions {
                scope: Scope {
                    since,
                    until,
                    destination,
                    repository_prefix,
                },
                lookback,
                window,
                now: now.unwrap_or_else(clock),
                format: format.into(),
                chart,
                list_limit,
            };
            // One command, one table: a runtime on this thread is all the SDK needs.
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(r) => r,
                Err(e) => return fail(&mut out, &e),
            };
            let result = runtime.block_on(async {
                let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
                if sdk.region().is_none() {
                    return Err(
                        "no AWS Region is configured: set AWS_REGION (or a profile's region)"
                            .to_string(),
                    );
                }
                // The retention only sets the expiry of what the store writes; audit only reads.
                let store = DynamoStateStore::new(aws_sdk_dynamodb::Client::new(&sdk), table, 0);
                audit::run(&store, &options, &mut out, &mut io::stderr())
                    .await
                    .map_err(|e| e.to_string())
            });
            match result {
                Ok(report) => exit_status(report.has_problems()),
                Err(e) => fail(&mut out, &e),
            }
        }
    }
}
