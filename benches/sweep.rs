//! The sweep at scale (BENCHMARKS.md, "The sweep at scale"): how many due copies one sweep
//! confirms per second, its peak memory with 100,000 open expectations in the table, and the
//! DynamoDB read units it costs.
//!
//! ```text
//! cargo bench --bench sweep -- throughput [--copies 6000] [--store memory|moto] [--latency-ms 50]
//! cargo bench --bench sweep -- memory [--open 100000] [--watched 90000] [--store memory|moto]
//! ```
//!
//! - `throughput`: `--copies` due copies (half found present, half missing), one sweep with a
//!   60-second deadline on the real clock, against a scripted ECR whose every call takes
//!   `--latency-ms`; the store in memory, or DynamoDB on a local moto server (`MOTO_SERVER`, as
//!   the tests use it), seeded directly. Prints copies confirmed per second of sweep.
//! - `memory`: `--open` expectations waiting for a check, `--watched` of them counted missing
//!   and watched (not due), the others in flight (a fifth due now); one sweep at a minute that
//!   also counts the watched. Prints the sweep's peak resident memory above what the process
//!   held before it (`VmHWM` after resetting it through `/proc/self/clear_refs`), and the read
//!   units the sweep's reads would cost in DynamoDB (estimated from what it read: see
//!   [`Counting`]).
//!
//! Not a criterion benchmark (`harness = false`): a sweep is one long run, not a closure timed
//! many times.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant as StdInstant};

use ecr_replication_auditor::adapters::dynamodb::DynamoStateStore;
use ecr_replication_auditor::adapters::fake::FakeRegistry;
use ecr_replication_auditor::adapters::memory::MemoryStateStore;
use ecr_replication_auditor::adapters::stored::split;
use ecr_replication_auditor::app::handler::{AuditSettings, Auditor, Summary};
use ecr_replication_auditor::domain::config::Destination;
use ecr_replication_auditor::domain::confirm::ImageFound;
use ecr_replication_auditor::domain::correlate::GroupKey;
use ecr_replication_auditor::domain::ids::{
    AccountId, EventId, ImageDigest, ImageTag, Region, RepositoryName,
};
use ecr_replication_auditor::domain::ledger::{Confirmation, StillExpected, TrackedGroup};
use ecr_replication_auditor::domain::metrics::Datum;
use ecr_replication_auditor::domain::time::{Timestamp, Window};
use ecr_replication_auditor::ports::metrics::{MetricsError, MetricsSink};
use ecr_replication_auditor::ports::registry::RegistryAt;
use ecr_replication_auditor::ports::state::{DueWork, StateStore, StoreError, Versioned, Want};
use serde_json::json;

/// 2024-07-01T10:35:00Z: the sweep's clock, a minute divisible by five (both gauges).
const NOW_MS: i64 = 1_719_830_100_000;
const WINDOW: Window = Window::DEFAULT;
const TABLE: &str = "auditor-state";

fn now() -> Timestamp {
    Timestamp::from_millis(NOW_MS)
}

fn ago(secs: i64) -> Timestamp {
    Timestamp::from_millis(NOW_MS - secs * 1000)
}

fn source() -> RegistryAt {
    RegistryAt {
        account: AccountId::parse("111122223333").unwrap(),
        region: Region::parse("us-west-2").unwrap(),
    }
}

/// Four destinations, as a busy registry's rules might name.
fn destinations() -> Vec<Destination> {
    [
        ("111122223333", "us-east-1"),
        ("444455556666", "eu-west-1"),
        ("444455556666", "ap-southeast-2"),
        ("777788889999", "eu-central-1"),
    ]
    .iter()
    .map(|(a, r)| Destination {
        account: AccountId::parse(a).unwrap(),
        region: Region::parse(r).unwrap(),
    })
    .collect()
}

fn key(n: u32) -> GroupKey {
    let d = destinations();
    GroupKey {
        source_account: source().account,
        source_region: source().region,
        repository: RepositoryName::parse("team/api").unwrap(),
        digest: ImageDigest::parse(&format!("sha256:{n:064x}")).unwrap(),
        destination: d[n as usize % d.len()].clone(),
    }
}

fn tag(n: u32) -> Option<ImageTag> {
    Some(ImageTag::parse(&format!("v{n}")).unwrap())
}

/// A push at `pushed`, settled then: expected, waiting for its first check.
fn in_flight(n: u32, pushed: Timestamp) -> TrackedGroup {
    let mut g = TrackedGroup::default();
    g.group.add_push(tag(n), pushed);
    g.settle(&key(n), WINDOW, pushed);
    g
}

/// A push three hours ago, counted missing an hour ago at its third check: watched, next
/// checked an hour from now.
fn watched(n: u32) -> TrackedGroup {
    let mut g = in_flight(n, ago(3 * 3600));
    let w = g.watches.get_mut(&tag(n)).unwrap();
    w.confirmation = Some(Confirmation::Absent {
        in_progress: false,
        checked_at: ago(3600),
    });
    w.still_expected = Some(StillExpected::Yes);
    w.checks = 3;
    g.settle(&key(n), WINDOW, ago(3600));
    assert!(g.due_at().is_some_and(|t| t > now()), "watched, not due");
    g
}

// ---------------------------------------------------------------------------------------------
// What a sweep reads, in DynamoDB's read units
// ---------------------------------------------------------------------------------------------

/// A store that tallies what the sweep reads, and what it would cost in DynamoDB:
/// - the `due` index (keys only): each entry is its key attributes plus 100 bytes (DynamoDB's
///   overhead per index item); queries are eventually consistent, half a unit per 4 KB read,
///   and at least half a unit each. The entries read are the queues counted whole (in flight;
///   watched at a fifth minute) plus the due ones of the others: an upper bound, since the due
///   ones of the in-flight queue are counted twice;
/// - the loads (BatchGetItem, strongly consistent): one unit per item of up to 4 KB, which
///   every item is (a head, or a record).
struct Counting<S> {
    inner: S,
    tally: Mutex<Tally>,
}

#[derive(Clone, Copy, Debug, Default)]
struct Tally {
    index_entries: u64,
    index_bytes: u64,
    queries: u64,
    items_loaded: u64,
}

impl Tally {
    fn read_units(&self) -> f64 {
        let index = (self.index_bytes as f64 / 4096.0 * 0.5).max(self.queries as f64 * 0.5);
        index + self.items_loaded as f64
    }
}

impl<S> Counting<S> {
    fn new(inner: S) -> Self {
        Counting {
            inner,
            tally: Mutex::new(Tally::default()),
        }
    }
}

impl<S: StateStore + Sync> StateStore for Counting<S> {
    async fn load(&self, wants: &[Want]) -> Result<Vec<Versioned<TrackedGroup>>, StoreError> {
        let loaded = self.inner.load(wants).await?;
        let mut items = 0;
        for ((key, _), v) in wants.iter().zip(&loaded) {
            if v.version > 0 {
                items += 1 + split(key, &v.value)?.1.len() as u64;
            }
        }
        self.tally.lock().unwrap().items_loaded += items;
        Ok(loaded)
    }

    async fn save(
        &self,
        groups: &[(GroupKey, Versioned<TrackedGroup>)],
    ) -> Result<bool, StoreError> {
        self.inner.save(groups).await
    }

    async fn due(
        &self,
        now: Timestamp,
        budget: usize,
        count_watched: bool,
    ) -> Result<DueWork, StoreError> {
        let work = self.inner.due(now, budget, count_watched).await?;
        let entries = work.in_flight.values().sum::<u64>()
            + work.watched.as_ref().map_or(0, |w| w.values().sum::<u64>())
            + work.due.len() as u64;
        // A record's key, about 160 bytes here, "pk"; due_shard and its value; due_at and a
        // 13-digit number (8 bytes); 100 bytes of overhead.
        let pk = work.due.first().map_or(160, |r| {
            ecr_replication_auditor::adapters::stored::record_pk(&r.key, &r.tag).len()
        }) as u64;
        let entry = 2 + pk + 9 + 4 + 6 + 8 + 100;
        let mut t = self.tally.lock().unwrap();
        t.index_entries += entries;
        t.index_bytes += entries * entry;
        t.queries += 3 * 16 + 1;
        Ok(work)
    }

    async fn first_rejection(&self, id: &EventId, at: Timestamp) -> Result<bool, StoreError> {
        self.inner.first_rejection(id, at).await
    }
}

/// Metrics go nowhere: the benchmark measures the sweep.
#[derive(Clone, Default)]
struct Discard;

impl MetricsSink for Discard {
    async fn publish(&self, _: &[Datum]) -> Result<(), MetricsError> {
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Stores: in memory, or DynamoDB on moto
// ---------------------------------------------------------------------------------------------

/// A moto server for the benchmark's table; killed when dropped.
struct Moto {
    child: Child,
    endpoint: String,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn moto() -> Moto {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let binary = std::env::var_os("MOTO_SERVER")
        .map_or_else(|| root.join(".venv/bin/moto_server"), PathBuf::from);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(&binary)
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{}: {e} (set MOTO_SERVER)", binary.display()));
    let endpoint = format!("http://127.0.0.1:{port}");
    let began = StdInstant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            began.elapsed() < Duration::from_secs(30),
            "moto did not start"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let status = Command::new(root.join(".venv/bin/python"))
        .arg(root.join("scripts/create-state-table"))
        .args(["--endpoint-url", &endpoint, "--table-name", TABLE])
        .args(["--region", "us-east-1"])
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .stdout(Stdio::null())
        .status()
        .expect("scripts/create-state-table runs");
    assert!(status.success(), "the table was not created");
    Moto { child, endpoint }
}

async fn dynamo(moto: &Moto) -> DynamoStateStore {
    let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(&moto.endpoint)
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_credential_types::Credentials::new(
            "testing", "testing", None, None, "bench",
        ))
        .load()
        .await;
    DynamoStateStore::new(aws_sdk_dynamodb::Client::new(&config), TABLE, 90)
}

enum Store {
    // Boxed: it holds a whole state store in place, the other variant a client.
    Memory(Box<MemoryStateStore>),
    Dynamo(DynamoStateStore, Moto),
}

impl Store {
    async fn new(kind: &str) -> Store {
        match kind {
            "memory" => Store::Memory(Box::default()),
            "moto" => {
                let m = moto();
                Store::Dynamo(dynamo(&m).await, m)
            }
            other => panic!("--store memory|moto, not {other}"),
        }
    }

    async fn fill(&self, groups: Vec<(GroupKey, TrackedGroup)>) {
        match self {
            Store::Memory(m) => {
                for chunk in groups.chunks(1000) {
                    let batch: Vec<_> = chunk
                        .iter()
                        .map(|(k, g)| (k.clone(), Versioned::new(0, g.clone())))
                        .collect();
                    assert!(m.save(&batch).await.unwrap());
                }
            }
            Store::Dynamo(d, _) => {
                for chunk in groups.chunks(2000) {
                    d.seed(chunk).await.unwrap();
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Running one sweep
// ---------------------------------------------------------------------------------------------

fn settings() -> AuditSettings {
    AuditSettings {
        window: WINDOW,
        repository_dimension: false,
        config_cache_ms: 300_000,
        history_retention: Window::hours(24 * 90),
    }
}

fn registry(latency: Duration) -> FakeRegistry {
    let ecr = FakeRegistry::default();
    let destinations: Vec<_> = destinations()
        .iter()
        .map(|d| json!({"region": d.region.to_string(), "registryId": d.account.to_string()}))
        .collect();
    ecr.config(
        source(),
        json!({"registryId": "111122223333", "replicationConfiguration": {"rules": [
            {"destinations": destinations}
        ]}}),
    );
    if !latency.is_zero() {
        ecr.latency(latency);
    }
    ecr
}

type BenchAuditor<S> = Auditor<S, FakeRegistry, Discard, Discard>;

async fn sweep<S: StateStore + Sync>(
    store: S,
    ecr: FakeRegistry,
    deadline: Duration,
) -> (Summary, Duration, BenchAuditor<S>) {
    let auditor = Auditor::new(store, ecr, Discard, Discard, settings());
    let began = StdInstant::now();
    let result = auditor
        .handle_by(
            &json!({"action": "sweep"}),
            now(),
            tokio::time::Instant::now() + deadline,
        )
        .await;
    let took = began.elapsed();
    let summary = result.unwrap_or_else(|e| panic!("the sweep failed: {e}"));
    (summary, took, auditor)
}

/// `VmRSS` or `VmHWM` of this process, in KiB.
fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Resets the peak resident memory to the current one (Linux: `5` into clear_refs).
fn reset_peak() {
    std::fs::write("/proc/self/clear_refs", "5").expect("/proc/self/clear_refs");
}

fn arg(args: &[String], name: &str, default: &str) -> String {
    args.windows(2)
        .find(|w| w[0] == name)
        .map_or_else(|| default.to_owned(), |w| w[1].clone())
}

async fn throughput(args: &[String]) {
    let copies: u32 = arg(args, "--copies", "6000").parse().unwrap();
    let kind = arg(args, "--store", "memory");
    let latency = Duration::from_millis(arg(args, "--latency-ms", "50").parse().unwrap());
    let ecr = registry(latency);
    let store = Store::new(&kind).await;
    let groups: Vec<_> = (1..=copies)
        .map(|n| (key(n), in_flight(n, ago(WINDOW.millis() / 1000 + 60))))
        .collect();
    // Half of them landed with their tag (their events lost): found present.
    for n in (1..=copies).step_by(2) {
        let k = key(n);
        ecr.image(
            RegistryAt::from(&k.destination),
            k.repository.clone(),
            k.digest.clone(),
            ImageFound {
                tags: tag(n).into_iter().collect(),
                pushed_at: Some(ago(1900)),
                status: Default::default(),
            },
        );
    }
    store.fill(groups).await;
    let (summary, took) = match store {
        Store::Memory(m) => {
            let (s, t, _) = sweep(*m, ecr.clone(), Duration::from_secs(60)).await;
            (s, t)
        }
        Store::Dynamo(d, _moto) => {
            let (s, t, _) = sweep(d, ecr.clone(), Duration::from_secs(60)).await;
            (s, t)
        }
    };
    let confirmed = summary.completed + summary.missing;
    println!(
        "sweep | throughput | store {kind} | {copies} due | ECR {} ms/call | {} groups checked, {} left, {confirmed} confirmed ({} present, {} missing) in {:.2} s: {:.0} copies/s | ECR calls {:?}",
        latency.as_millis(),
        summary.groups_checked,
        summary.groups_left,
        summary.completed,
        summary.missing,
        took.as_secs_f64(),
        confirmed as f64 / took.as_secs_f64(),
        ecr.all_calls(),
    );
}

async fn memory(args: &[String]) {
    let open: u32 = arg(args, "--open", "100000").parse().unwrap();
    let watched_n: u32 = arg(args, "--watched", "0").parse().unwrap();
    let kind = arg(args, "--store", "memory");
    let store = Store::new(&kind).await;
    let began = StdInstant::now();
    let mut groups = Vec::with_capacity(open as usize);
    for n in 1..=open {
        let g = if n <= watched_n {
            watched(n)
        } else if n % 5 == 0 {
            // Due now: pushed a window and a minute ago.
            in_flight(n, ago(WINDOW.millis() / 1000 + 60))
        } else {
            // Inside its window.
            in_flight(n, ago(60))
        };
        groups.push((key(n), g));
    }
    store.fill(groups).await;
    let filled = began.elapsed();
    if let Store::Dynamo(_, moto) = &store {
        // The sweep in a process of its own, which holds nothing else: its peak is the sweep's
        // (and the SDK's), not what filling the table left in this one's allocator.
        let out = Command::new(std::env::current_exe().unwrap())
            .args(["sweep-moto", "--endpoint", &moto.endpoint])
            .output()
            .expect("the sweep's own process");
        println!(
            "sweep | memory | store moto | {open} open, {watched_n} watched | filled in {:.1} s | {}",
            filled.as_secs_f64(),
            String::from_utf8_lossy(&out.stdout).trim()
        );
        eprint!("{}", String::from_utf8_lossy(&out.stderr));
        return;
    }
    let ecr = registry(Duration::ZERO);
    // On moto each group's save copies its 100,000-item table: the memory figure is then the
    // index's read alone (a deadline just past the point where groups stop being started).
    let deadline = match kind.as_str() {
        "moto" => Duration::from_secs(11),
        _ => Duration::from_secs(60),
    };
    let rss_before = status_kib("VmRSS:");
    reset_peak();
    let (summary, took, tally) = match store {
        Store::Memory(m) => {
            let (s, t, a) = sweep(Counting::new(*m), ecr, deadline).await;
            (s, t, *a.store().tally.lock().unwrap())
        }
        Store::Dynamo(d, _moto) => {
            let (s, t, a) = sweep(Counting::new(d), ecr, deadline).await;
            (s, t, *a.store().tally.lock().unwrap())
        }
    };
    let peak = status_kib("VmHWM:");
    println!(
        "sweep | memory | store {kind} | {open} open, {watched_n} watched | filled in {:.1} s | sweep {:.2} s: {} groups checked, {} left | peak RSS {:.1} MiB above {:.1} MiB before | index entries read {} ({} queries), items loaded {} | about {:.0} read units",
        filled.as_secs_f64(),
        took.as_secs_f64(),
        summary.groups_checked,
        summary.groups_left,
        peak.saturating_sub(rss_before) as f64 / 1024.0,
        rss_before as f64 / 1024.0,
        tally.index_entries,
        tally.queries,
        tally.items_loaded,
        tally.read_units(),
    );
}

/// The sweep of `memory --store moto`, in its own process against the table it filled: one
/// sweep at a fifth minute whose deadline leaves no time to start a group (on moto each group's
/// save copies the whole 100,000-item table), so what it measures is the index's read.
async fn sweep_moto(args: &[String]) {
    let endpoint = arg(args, "--endpoint", "");
    let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(&endpoint)
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_credential_types::Credentials::new(
            "testing", "testing", None, None, "bench",
        ))
        .load()
        .await;
    let store = Counting::new(DynamoStateStore::new(
        aws_sdk_dynamodb::Client::new(&config),
        TABLE,
        90,
    ));
    let before = status_kib("VmHWM:");
    let (summary, took, auditor) =
        sweep(store, registry(Duration::ZERO), Duration::from_secs(11)).await;
    let tally = *auditor.store().tally.lock().unwrap();
    println!(
        "sweep {:.1} s: {} groups checked, {} left | peak RSS of the process {:.1} MiB ({:.1} MiB before the sweep) | index entries read {} ({} queries), items loaded {} | about {:.0} read units",
        took.as_secs_f64(),
        summary.groups_checked,
        summary.groups_left,
        status_kib("VmHWM:") as f64 / 1024.0,
        before as f64 / 1024.0,
        tally.index_entries,
        tally.queries,
        tally.items_loaded,
        tally.read_units(),
    );
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    match args
        .iter()
        .find(|a| !a.starts_with("--"))
        .map(String::as_str)
    {
        Some("throughput") => runtime.block_on(throughput(&args)),
        Some("memory") => runtime.block_on(memory(&args)),
        Some("sweep-moto") => runtime.block_on(sweep_moto(&args)),
        // `cargo bench` runs every bench with `--bench`: a quick run of both.
        _ => {
            runtime.block_on(throughput(&["--copies".into(), "600".into()]));
            runtime.block_on(memory(&["--open".into(), "10000".into()]));
        }
    }
}
