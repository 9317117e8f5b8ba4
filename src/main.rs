//! The command line: parses arguments and wires them to the library. Nothing to test here that
//! the library's tests do not cover.

use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use ecr_replication_auditor::adapters::cloudwatch_logs::LogGroupEventLog;
use ecr_replication_auditor::adapters::dynamodb::DynamoStateStore;
use ecr_replication_auditor::adapters::ecr::{AuditRole, EcrRegistry};
use ecr_replication_auditor::adapters::sdk;
use ecr_replication_auditor::audit::{self, AuditOptions, DestinationFilter, Scope};
use ecr_replication_auditor::clock;
use ecr_replication_auditor::domain::ids::{
    AccountId, ImageDigest, ImageTag, Region, RepositoryName,
};
use ecr_replication_auditor::domain::report::{DEFAULT_LIST_LIMIT, Report};
use ecr_replication_auditor::domain::time::{Timestamp, Window};
use ecr_replication_auditor::output::Format;
use ecr_replication_auditor::ports::registry::RegistryAt;
use ecr_replication_auditor::replay::log_group::LogGroupQuery;
use ecr_replication_auditor::replay::{self, RegistryFile, ReplayOptions};
use ecr_replication_auditor::wait::{ImageRef, WaitOptions, WaitReport};
use ecr_replication_auditor::{drift as drift_command, reconcile};

/// mimalloc rather than glibc's allocator: see Cargo.toml.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    /// Events are read from files (gzip or not; JSON, JSON lines, concatenated objects, CloudWatch
    /// Logs exports), from standard input, or with --log-group from the stack's event log.
    ///
    /// Exit status: 0 when every expected copy is replicated or pending, 1 when any is late,
    /// missing, failed or untagged, 2 for bad usage or an unreadable configuration or input.
    Replay(ReplayArgs),
    /// Audits the pushes of a period from the Lambda's history in its DynamoDB table: the same
    /// report as replay, with what the Lambda's sweep confirmed with ECR's APIs.
    ///
    /// AWS credentials, Region and endpoint come from the usual SDK configuration (AWS_REGION,
    /// AWS_PROFILE, AWS_ENDPOINT_URL, ...). Needs dynamodb:Query on the table's indexes.
    /// Exit status: 0 when every expected copy is replicated or pending, 1 when any is late,
    /// missing, failed or untagged, 2 for bad usage or a table that cannot be read.
    Audit(AuditArgs),
    /// Waits until an image has reached every destination the live replication rules name for
    /// its repository, with its tag: a gate for deployment pipelines.
    ///
    /// AWS credentials, Region and endpoint come from the usual SDK configuration (STS is
    /// called in the SDK's Region, or in --region's when none is set). Needs
    /// ecr:DescribeRegistry, ecr:DescribeImages and ecr:DescribeImageReplicationStatus in the
    /// source, ecr:DescribeImages in each destination (other accounts through --audit-role).
    /// Exit status: 0 when every destination has the image with its tag (or no rule covers the
    /// repository), 1 when ECR reported FAILED, a copy is untagged or its tag names another
    /// image, or the timeout passed (naming the destinations), 2 for bad usage or a registry
    /// that cannot be read.
    Wait(WaitArgs),
    /// Is every image where the rules say, right now? Reads each source Region's replication
    /// rules, the repositories they cover and their images, and compares them with every
    /// destination of the rules (other accounts through --audit-role): images missing, stale
    /// tags, archived copies, deletes not replicated, repository settings that differ.
    ///
    /// AWS credentials and endpoint come from the usual SDK configuration. Needs
    /// ecr:DescribeRegistry, ecr:DescribeRepositories, ecr:DescribeImages,
    /// ecr:GetLifecyclePolicy and ecr:GetRepositoryPolicy. Exit status: 0 when nothing drifted,
    /// 1 when anything did, 2 for bad usage or a registry that cannot be read.
    Drift(DriftArgs),
}

#[derive(Args)]
struct WaitArgs {
    /// The source Region: where the image was pushed.
    #[arg(long)]
    region: String,
    /// The repository.
    #[arg(long)]
    repository: String,
    /// The tag pushed (its digest is read at the source); or give --image-digest.
    #[arg(
        long,
        conflicts_with = "image_digest",
        required_unless_present = "image_digest"
    )]
    image_tag: Option<String>,
    #[arg(long)]
    image_digest: Option<String>,
    /// The source registry (account); by default the account of the credentials.
    #[arg(long, value_name = "ACCOUNT", value_parser = parse_account)]
    registry_id: Option<AccountId>,
    /// How long to wait: 90s, 30m, 2h.
    #[arg(long, default_value = "30m", value_parser = parse_window)]
    timeout: Window,
    /// The auditor's replication window: a copy slower than this is reported late (not a
    /// failure of the gate).
    #[arg(long, default_value = "30m", value_parser = parse_window)]
    window: Window,
    /// The role to assume in other accounts to read their registries (the audit role).
    #[arg(long, value_name = "NAME")]
    audit_role: Option<String>,
    #[arg(long, value_name = "ID", requires = "audit_role")]
    audit_role_external_id: Option<String>,
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
}

/// What `replay` and `audit` print, and how.
#[derive(Args)]
struct OutputArgs {
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
    /// Also draw the lag per destination over the period as an SVG picture in FILE.
    #[arg(long, value_name = "FILE.svg")]
    chart: Option<PathBuf>,
    /// How many problem copies, unmatched copies and rejected records the table lists (the
    /// worst, the earliest, the first); all are counted, and --format json lists all.
    #[arg(long, default_value_t = DEFAULT_LIST_LIMIT)]
    list_limit: usize,
}

#[derive(Args)]
struct ReplayArgs {
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
    #[command(flatten)]
    output: OutputArgs,
    /// How long, in event time, replay remembers event ids and audited images, and waits
    /// for a missing copy before concluding it: 24h by default (EventBridge's longest
    /// redelivery), or two windows if longer. Memory follows the events of one horizon.
    #[arg(long, value_parser = parse_window)]
    horizon: Option<Window>,
    /// Event files (one event, a JSON array, JSON lines, objects concatenated, CloudWatch Logs
    /// exports; gzip or not), directories of .json/.jsonl/.gz files, or - for standard input
    /// (the default).
    #[arg(value_name = "PATH", conflicts_with = "log_group")]
    inputs: Vec<PathBuf>,
    /// Read the events from this CloudWatch Logs log group (the stack's EventLogGroupName
    /// output) instead of files, with the usual SDK configuration (AWS_REGION, AWS_PROFILE,
    /// ...). Needs logs:FilterLogEvents on the group.
    #[arg(long, value_name = "NAME", requires_all = ["since", "until"])]
    log_group: Option<String>,
    /// With --log-group: the events logged at or after this instant (RFC 3339, or a date for
    /// its midnight UTC). Start a window before the pushes you audit, so that their copies
    /// match.
    #[arg(long, requires = "log_group", value_parser = parse_instant)]
    since: Option<Timestamp>,
    /// With --log-group: ...and before this instant (excluded).
    #[arg(long, requires = "log_group", value_parser = parse_instant)]
    until: Option<Timestamp>,
    /// With --log-group: the log group's Region, if not the SDK configuration's.
    #[arg(long, requires = "log_group")]
    region: Option<String>,
}

/// Where `replay` reads from: `None` for the paths (or stdin), else the log group and its
/// Region.
type LogGroupSource = Option<(LogGroupQuery, Option<String>)>;

impl ReplayArgs {
    fn split(self) -> (ReplayOptions, LogGroupSource) {
        let source = match (self.log_group.clone(), self.since, self.until) {
            (Some(group), Some(since), Some(until)) => Some((
                LogGroupQuery {
                    group,
                    since,
                    until,
                },
                self.region.clone(),
            )),
            _ => None,
        };
        (self.into(), source)
    }
}

impl From<ReplayArgs> for ReplayOptions {
    fn from(a: ReplayArgs) -> ReplayOptions {
        ReplayOptions {
            registries: a.registries,
            registry_id: a.registry_id,
            window: a.window,
            now: a.now,
            format: a.output.format,
            inputs: a.inputs,
            horizon: a.horizon,
            list_limit: a.output.list_limit,
            chart: a.output.chart,
        }
    }
}

#[derive(Args)]
struct AuditArgs {
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
    #[command(flatten)]
    output: OutputArgs,
}

impl AuditArgs {
    fn options(self, clock: impl FnOnce() -> Timestamp) -> (String, AuditOptions) {
        let options = AuditOptions {
            scope: Scope {
                since: self.since,
                until: self.until,
                destination: self.destination,
                repository_prefix: self.repository_prefix,
            },
            lookback: self.lookback,
            window: self.window,
            now: self.now.unwrap_or_else(clock),
            format: self.output.format,
            chart: self.output.chart,
            list_limit: self.output.list_limit,
        };
        (self.table, options)
    }
}

#[derive(Args)]
struct DriftArgs {
    /// A source Region to reconcile; repeat for each.
    #[arg(long = "region", value_name = "REGION", required = true, value_parser = parse_region)]
    regions: Vec<Region>,
    /// The source registry (account); by default the account of the credentials.
    #[arg(long, value_name = "ACCOUNT", value_parser = parse_account)]
    registry_id: Option<AccountId>,
    /// Only repositories whose name starts with PREFIX (as ECR's PREFIX_MATCH filters).
    #[arg(long = "repository", value_name = "PREFIX", value_parser = parse_prefix)]
    repository_prefix: Option<String>,
    /// Images pushed before this are not expected (RFC 3339, or a date for its midnight UTC):
    /// the time the replication rules took effect. ECR replicates only what is pushed after a
    /// rule exists, and keeps no date for a rule.
    #[arg(long, value_parser = parse_instant)]
    since: Option<Timestamp>,
    /// How long a copy may take: images pushed less than this ago may still be in flight.
    #[arg(long, default_value = "30m", value_parser = parse_window)]
    window: Window,
    /// The audit time (RFC 3339); by default now.
    #[arg(long, value_parser = parse_time)]
    now: Option<Timestamp>,
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
    /// Repositories read at once (each with one request in flight).
    #[arg(long, default_value_t = reconcile::DEFAULT_CONCURRENCY, value_parser = parse_concurrency)]
    concurrency: usize,
    /// How many findings the table lists; --format json lists all.
    #[arg(long, default_value_t = DEFAULT_LIST_LIMIT)]
    list_limit: usize,
    /// The role to assume in other accounts (destinations, or --registry-id), as the Lambda's
    /// AUDIT_ROLE_NAME: arn:aws:iam::ACCOUNT:role/NAME.
    #[arg(long, value_name = "NAME")]
    audit_role: Option<String>,
    /// The external id that role requires.
    #[arg(long, value_name = "ID", requires = "audit_role")]
    external_id: Option<String>,
}

fn parse_concurrency(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if (1..=64).contains(&n) => Ok(n),
        _ => Err("a whole number from 1 to 64".into()),
    }
}

fn parse_region(s: &str) -> Result<Region, String> {
    Region::parse(s).map_err(|e| format!("{s:?} {e}"))
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

/// The exit status of a finished run: 1 when the report has problems.
fn exit_status(has_problems: bool) -> ExitCode {
    if has_problems {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

fn fail(out: &mut dyn Write, error: &str) -> ExitCode {
    let _ = out.flush();
    eprintln!("error: {error}");
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Not locked: `replay` hands it to the thread that writes a JSON report's verdicts.
    let mut out = io::BufWriter::new(io::stdout());
    let result = match cli.command {
        Command::Replay(args) => match args.split() {
            (options, None) => {
                let mut stdin = io::stdin().lock();
                replay::run(&options, &mut stdin, &mut out, &mut io::stderr())
                    .map_err(|e| e.to_string())
            }
            (options, Some((query, region))) => {
                replay_log_group(&options, &query, region, &mut out)
            }
        },
        Command::Audit(args) => audit(args, &mut out),
        Command::Drift(args) => return drift(args, &mut out),
        Command::Wait(args) => {
            return match wait(args, &mut out) {
                Ok(report) => ExitCode::from(report.exit_code()),
                Err(e) => fail(&mut out, &e),
            };
        }
    };
    match result {
        Ok(report) => exit_status(report.has_problems()),
        Err(e) => fail(&mut out, &e),
    }
}

/// `replay --log-group`: the log group read with the SDK's usual configuration (and retries).
fn replay_log_group(
    options: &ReplayOptions,
    query: &LogGroupQuery,
    region: Option<String>,
    out: &mut (dyn Write + Send),
) -> Result<Report, String> {
    query.check().map_err(|e| e.to_string())?;
    let sdk = load_sdk_config(region)?;
    let log = LogGroupEventLog::new(aws_sdk_cloudwatchlogs::Client::new(&sdk), &query.group);
    replay::run_log_group(
        options,
        &log,
        query,
        out,
        &mut io::stderr(),
        &mut io::stderr(),
    )
    .map_err(|e| e.to_string())
}

/// The SDK's usual configuration, with `region` when given; an error when no Region is known.
fn load_sdk_config(region: Option<String>) -> Result<aws_config::SdkConfig, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
    if let Some(region) = region {
        loader = loader.region(aws_config::Region::new(region));
    }
    let sdk = runtime.block_on(loader.load());
    if sdk.region().is_none() {
        return Err(
            "no AWS Region is configured: set AWS_REGION (or a profile's region, or --region)"
                .to_string(),
        );
    }
    Ok(sdk)
}

/// The SDK's configuration and the account its credentials are for. STS (and the audit role's
/// AssumeRole) is called in the SDK's Region, or in `fallback` (the source's) when none is
/// configured; each registry is read in its own Region.
async fn sdk_and_account(fallback: &str) -> Result<(aws_config::SdkConfig, AccountId), String> {
    let loaded = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let sdk = if loaded.region().is_some() {
        loaded
    } else {
        loaded
            .into_builder()
            .region(aws_config::Region::new(fallback.to_owned()))
            .build()
    };
    let own = sdk::caller_account(&sdk).await?;
    Ok((sdk, own))
}

/// `audit` on the table named in `args`, with the SDK's usual configuration.
fn audit(args: AuditArgs, out: &mut (dyn Write + Send)) -> Result<Report, String> {
    let (table, options) = args.options(clock::now);
    // One command, one table: a runtime on this thread is all the SDK needs.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(async {
        let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
        if sdk.region().is_none() {
            return Err(
                "no AWS Region is configured: set AWS_REGION (or a profile's region)".to_string(),
            );
        }
        // The retention only sets the expiry of what the store writes; audit only reads.
        let store = DynamoStateStore::new(aws_sdk_dynamodb::Client::new(&sdk), table, 0);
        audit::run(&store, &options, out, &mut io::stderr())
            .await
            .map_err(|e| e.to_string())
    })
}

/// `wait`, with the SDK's usual configuration.
fn wait(args: WaitArgs, out: &mut dyn Write) -> Result<WaitReport, String> {
    let region = Region::parse(&args.region).map_err(|e| format!("--region: {e}"))?;
    let repository =
        RepositoryName::parse(&args.repository).map_err(|e| format!("--repository: {e}"))?;
    let image = match (&args.image_tag, &args.image_digest) {
        (Some(t), _) => ImageRef::Tag(ImageTag::parse(t).map_err(|e| format!("--image-tag: {e}"))?),
        (None, Some(d)) => {
            ImageRef::Digest(ImageDigest::parse(d).map_err(|e| format!("--image-digest: {e}"))?)
        }
        (None, None) => return Err("give --image-tag or --image-digest".into()),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(async {
        let (sdk, own) = sdk_and_account(&args.region).await?;
        let role = args.audit_role.map(|name| AuditRole {
            name,
            external_id: args.audit_role_external_id,
        });
        let registry = EcrRegistry::new(sdk, own, role);
        let options = WaitOptions {
            source: RegistryAt {
                account: args.registry_id.unwrap_or(own),
                region,
            },
            repository,
            image,
            timeout: args.timeout,
            first_poll: std::time::Duration::from_secs(2),
            json: args.format == Format::Json,
        };
        ecr_replication_auditor::wait::run(&registry, &options, args.window, out)
            .await
            .map_err(|e| e.to_string())
    })
}

/// `drift` with the SDK's usual configuration; the exit status is its own (0, 1, or 2).
fn drift(args: DriftArgs, out: &mut dyn Write) -> ExitCode {
    use std::io::IsTerminal;

    use ecr_replication_auditor::adapters::ecr::{AuditRole, EcrRegistry};
    use ecr_replication_auditor::domain::drift::Scope;
    use ecr_replication_auditor::ports::registry::RegistryAt;

    let started = clock::stopwatch();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => return fail(out, &e.to_string()),
    };
    let result = runtime.block_on(async {
        let (sdk, own) = sdk_and_account(&args.regions[0].to_string()).await?;
        let account = args.registry_id.unwrap_or(own);
        let role = args.audit_role.map(|name| AuditRole {
            name,
            external_id: args.external_id,
        });
        let registry = EcrRegistry::new(sdk, own, role);
        let options = drift_command::DriftOptions {
            sources: args
                .regions
                .iter()
                .map(|region| RegistryAt {
                    account,
                    region: region.clone(),
                })
                .collect(),
            repository_prefix: args.repository_prefix,
            scope: Scope {
                now: args.now.unwrap_or_else(clock::now),
                window: args.window,
                since: args.since,
            },
            format: args.format,
            concurrency: args.concurrency,
            list_limit: args.list_limit,
            progress_in_place: io::stderr().is_terminal(),
        };
        drift_command::run(&registry, &options, out, &mut io::stderr(), &|| {
            started.elapsed()
        })
        .await
        .map_err(|e| e.to_string())
    });
    match result {
        Ok(report) => exit_status(report.has_drift()),
        Err(e) => fail(out, &e),
    }
}
