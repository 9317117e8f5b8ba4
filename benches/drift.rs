//! `drift`'s throughput: images compared per second for a registry of 50 repositories and 2,000
//! images (40 each) replicated to two destinations, one of them in another account.
//!
//! - **fake, 50 ms per request**: the scripted registry ([`FakeInventory`]) with every request
//!   taking 50 ms (a cross-Region call), so the figure is what the request pattern and the
//!   concurrency allow, whatever the machine;
//! - **moto**: a local moto server (`MOTO_SERVER`, else `.venv/bin/moto_server`) on 127.0.0.1,
//!   real HTTP and SigV4, the other account read through the audit role (STS AssumeRole).
//!
//! Each at `--concurrency` 1, the default ([`DEFAULT_CONCURRENCY`]) and 16; the best of `--runs`
//! (3) runs is printed, with the requests made.
//!
//! ```text
//! cargo bench --bench drift -- [--runs N] [--skip-moto]
//! ```

use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use aws_config::{BehaviorVersion, Region as SdkRegion, SdkConfig};
use aws_credential_types::Credentials;
use ecr_replication_auditor::adapters::ecr::{AuditRole, EcrRegistry};
use ecr_replication_auditor::adapters::fake_inventory::FakeInventory;
use ecr_replication_auditor::domain::drift::{
    DriftReport, ImageRecord, ImageState, RepositorySettings, Scope,
};
use ecr_replication_auditor::domain::ids::{
    AccountId, ImageDigest, ImageTag, Region, RepositoryName,
};
use ecr_replication_auditor::domain::time::{Timestamp, Window};
use ecr_replication_auditor::drift::{DriftOptions, run};
use ecr_replication_auditor::output::Format;
use ecr_replication_auditor::ports::inventory::RegistryInventory;
use ecr_replication_auditor::ports::registry::{RegistryAt, RegistryView};
use ecr_replication_auditor::reconcile::DEFAULT_CONCURRENCY;

const REPOSITORIES: u32 = 50;
const IMAGES_PER_REPOSITORY: u32 = 40;
const SOURCE: (&str, &str) = ("us-west-2", "123456789012");
const SAME: (&str, &str) = ("us-east-1", "123456789012");
const CROSS: (&str, &str) = ("eu-west-1", "210987654321");

fn at(d: (&str, &str)) -> RegistryAt {
    RegistryAt {
        account: AccountId::parse(d.1).unwrap(),
        region: Region::parse(d.0).unwrap(),
    }
}

fn options(concurrency: usize, now: Timestamp) -> DriftOptions {
    DriftOptions {
        sources: vec![at(SOURCE)],
        repository_prefix: None,
        scope: Scope {
            now,
            window: Window::from_secs(1).unwrap(),
            since: None,
        },
        format: Format::Json,
        concurrency,
        list_limit: 1000,
        progress_in_place: false,
    }
}

/// One timed run: (seconds, report).
async fn timed<R: RegistryView + RegistryInventory + Sync>(
    registry: &R,
    options: &DriftOptions,
) -> (f64, DriftReport) {
    let started = Instant::now();
    let report = run(
        registry,
        options,
        &mut std::io::sink(),
        &mut std::io::sink(),
        &|| started.elapsed(),
    )
    .await
    .expect("drift runs");
    (started.elapsed().as_secs_f64(), report)
}

async fn measure<R: RegistryView + RegistryInventory + Sync>(
    name: &str,
    registry: &R,
    runs: usize,
    now: Timestamp,
) {
    for concurrency in [1, DEFAULT_CONCURRENCY, 16] {
        let mut best: Option<(f64, DriftReport)> = None;
        for _ in 0..runs {
            let (secs, report) = timed(registry, &options(concurrency, now)).await;
            if best.as_ref().is_none_or(|(b, _)| secs < *b) {
                best = Some((secs, report));
            }
        }
        let (secs, report) = best.expect("at least one run");
        let images = report.total().images / 2;
        println!(
            "{name:<22} concurrency {concurrency:>2}: {images} images in {secs:.2} s = {:.0} images/s, {} requests ({:.0}/s), {} findings",
            images as f64 / secs,
            report.calls.total(),
            report.calls.total() as f64 / secs,
            report.findings.len()
        );
    }
}

fn digest(n: u32) -> String {
    format!("sha256:{n:064x}")
}

/// The fake registry: every image in the source and both destinations, 50 ms per request.
fn fake() -> FakeInventory {
    let fake = FakeInventory::default();
    fake.registry().config(
        at(SOURCE),
        serde_json::json!({"registryId": SOURCE.1, "replicationConfiguration": {"rules": [
            {"destinations": [{"region": SAME.0, "registryId": SAME.1},
                              {"region": CROSS.0, "registryId": CROSS.1}]}]}}),
    );
    for r in 0..REPOSITORIES {
        let name = RepositoryName::parse(&format!("team/svc{r:02}")).unwrap();
        for d in [SOURCE, SAME, CROSS] {
            fake.repository(&at(d), &name, RepositorySettings::default());
            for i in 0..IMAGES_PER_REPOSITORY {
                let n = r * 1000 + i;
                fake.image(
                    &at(d),
                    &name,
                    ImageRecord {
                        digest: ImageDigest::parse(&digest(n)).unwrap(),
                        tags: vec![ImageTag::parse(&format!("b{i}")).unwrap()],
                        pushed_at: Some(Timestamp::from_millis(1_719_828_000_000)),
                        state: ImageState::Active,
                    },
                );
            }
        }
    }
    fake.latency(Duration::from_millis(50));
    fake
}

// ---------------------------------------------------------------------------------------------
// moto
// ---------------------------------------------------------------------------------------------

/// A moto server, killed by its pid when dropped.
struct Moto {
    child: Child,
    port: u16,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_moto() -> Option<Moto> {
    let binary = std::env::var_os("MOTO_SERVER").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/moto_server"),
        PathBuf::from,
    );
    if !binary.is_file() {
        eprintln!("no moto_server at {}: skipping moto", binary.display());
        return None;
    }
    let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .ok()?
        .local_addr()
        .ok()?
        .port();
    let child = Command::new(binary)
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let moto = Moto { child, port };
    let began = Instant::now();
    while began.elapsed() < Duration::from_secs(30) {
        if TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_ok() {
            std::thread::sleep(Duration::from_millis(300));
            return Some(moto);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    None
}

async fn sdk(endpoint: &str, credentials: Credentials) -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(SdkRegion::new("us-east-1"))
        .credentials_provider(credentials)
        .load()
        .await
}

fn ecr(config: &SdkConfig, region: &str) -> aws_sdk_ecr::Client {
    aws_sdk_ecr::Client::from_conf(
        aws_sdk_ecr::config::Builder::from(config)
            .region(SdkRegion::new(region.to_owned()))
            .build(),
    )
}

fn manifest(n: u32) -> String {
    serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "size": 1,
                   "digest": format!("sha256:{:064x}", 0xc0ffee)},
        "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "size": 1,
                    "digest": digest(n)}],
    })
    .to_string()
}

/// moto's registries as the fake's: the rule, 50 repositories of 40 images in the source and
/// both destinations (the other account's through credentials moto places there).
async fn populate(endpoint: &str) -> SdkConfig {
    let own = sdk(
        endpoint,
        Credentials::new("AKIAIOSFODNN7EXAMPLE", "secret", None, None, "bench"),
    )
    .await;
    let assumed = aws_sdk_sts::Client::new(&own)
        .assume_role()
        .role_arn(format!("arn:aws:iam::{}:role/setup", CROSS.1))
        .role_session_name("setup")
        .send()
        .await
        .expect("moto's AssumeRole");
    let c = assumed.credentials().unwrap();
    let other = sdk(
        endpoint,
        Credentials::new(
            c.access_key_id(),
            c.secret_access_key(),
            Some(c.session_token().to_owned()),
            None,
            "bench",
        ),
    )
    .await;
    use aws_sdk_ecr::types::{ReplicationConfiguration, ReplicationDestination, ReplicationRule};
    let mut rule = ReplicationRule::builder();
    for d in [SAME, CROSS] {
        rule = rule.destinations(
            ReplicationDestination::builder()
                .region(d.0)
                .registry_id(d.1)
                .build()
                .unwrap(),
        );
    }
    ecr(&own, SOURCE.0)
        .put_replication_configuration()
        .replication_configuration(
            ReplicationConfiguration::builder()
                .rules(rule.build().unwrap())
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    let clients = [ecr(&own, SOURCE.0), ecr(&own, SAME.0), ecr(&other, CROSS.0)];
    for r in 0..REPOSITORIES {
        let name = format!("team/svc{r:02}");
        for client in &clients {
            client
                .create_repository()
                .repository_name(&name)
                .send()
                .await
                .unwrap();
            let puts = (0..IMAGES_PER_REPOSITORY).map(|i| {
                client
                    .put_image()
                    .repository_name(&name)
                    .image_manifest(manifest(r * 1000 + i))
                    .image_tag(format!("b{i}"))
                    .send()
            });
            for result in futures_util::future::join_all(puts).await {
                result.unwrap();
            }
        }
    }
    own
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let runs = args
        .iter()
        .position(|a| a == "--runs")
        .and_then(|i| args.get(i + 1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(3);
    let skip_moto = args.iter().any(|a| a == "--skip-moto");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        println!(
            "{REPOSITORIES} repositories x {IMAGES_PER_REPOSITORY} images, 2 destinations (one in another account); best of {runs}"
        );
        let now = Timestamp::from_millis(1_719_900_000_000);
        measure("fake, 50 ms/request", &fake(), runs, now).await;
        if skip_moto {
            return;
        }
        let Some(moto) = start_moto() else { return };
        let endpoint = format!("http://127.0.0.1:{}", moto.port);
        let started = Instant::now();
        let own = populate(&endpoint).await;
        eprintln!("moto populated in {:.1} s", started.elapsed().as_secs_f64());
        let registry = EcrRegistry::new(
            own,
            AccountId::parse(SOURCE.1).unwrap(),
            Some(AuditRole {
                name: "ecr-replication-audit".into(),
                external_id: None,
            }),
        );
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis();
        let now = Timestamp::from_millis(i64::try_from(now_ms).unwrap() + 60_000);
        measure("moto (127.0.0.1)", &registry, runs, now).await;
        drop(moto);
    });
    ExitCode::SUCCESS
}
