//! The real Lambda binary, run by `cargo lambda watch` (a local Lambda Runtime API) against a
//! moto server, with `METRICS_SINK=emf`, invoked with files from `events/` by
//! `cargo lambda invoke`: what a developer does by hand, per README, made a test.
//!
//! cargo-lambda comes from PyPI into `.venv` (scripts/python-tools); the test fails, with the
//! command to run, when it is missing.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use crate::support::cli::root;
use crate::support::moto;

/// The account and Region of the sample events' source registry.
const ACCOUNT: &str = "111122223333";
const REGION: &str = "us-west-2";
const TABLE: &str = "auditor-state";

/// PATH with .venv/bin first, where scripts/python-tools puts cargo-lambda.
fn path_with_venv() -> String {
    let venv = root().join(".venv/bin");
    assert!(
        venv.join("cargo-lambda").exists(),
        "cargo-lambda is not installed in {}: run scripts/python-tools (or scripts/test)",
        venv.display()
    );
    format!(
        "{}:{}",
        venv.display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

/// `cargo lambda watch`, in its own process group so that dropping it stops the watcher and
/// the function it started, by the group's id.
struct Watch {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Watch {
    fn start(moto: &moto::MotoServer, log: &Path) -> Watch {
        use std::os::unix::process::CommandExt;
        let port = moto::free_port();
        let env = [
            format!("STATE_TABLE={TABLE}"),
            "METRICS_SINK=emf".into(),
            // The samples are dated 2024-07-01 and the function runs on today's clock: it refuses
            // events older than the history's retention, so keep the longest (ten years).
            "HISTORY_RETENTION_DAYS=3650".into(),
            format!("AWS_ENDPOINT_URL={}", moto.endpoint()),
            format!("AWS_REGION={REGION}"),
            "AWS_ACCESS_KEY_ID=testing".into(),
            "AWS_SECRET_ACCESS_KEY=testing".into(),
            "RUST_LOG=info".into(),
        ]
        .join(",");
        let file = std::fs::File::create(log).unwrap();
        let child = Command::new("cargo")
            .args([
                "lambda",
                "watch",
                "--invoke-address",
                "127.0.0.1",
                "--invoke-port",
                &port.to_string(),
            ])
            .args(["--env-vars", &env])
            .env("PATH", path_with_venv())
            .current_dir(root())
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .process_group(0)
            .spawn()
            .expect("cargo lambda watch starts");
        let watch = Watch {
            child,
            port,
            log: log.to_path_buf(),
        };
        let began = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                began.elapsed() < Duration::from_secs(120),
                "cargo lambda watch did not listen on {port}:\n{}",
                watch.log_text()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        watch
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `cargo lambda invoke --data-file FILE`: the function's response as JSON.
    fn invoke(&self, file: &Path) -> Value {
        let out: Output = Command::new("cargo")
            .args([
                "lambda",
                "invoke",
                "--invoke-address",
                "127.0.0.1",
                "--invoke-port",
                &self.port.to_string(),
            ])
            .arg("--data-file")
            .arg(file)
            .arg("ecr-replication-auditor-lambda")
            .env("PATH", path_with_venv())
            .current_dir(root())
            .output()
            .expect("cargo lambda invoke runs");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "invoke {} failed: {}\n{stdout}\n--- watch log ---\n{}",
            file.display(),
            String::from_utf8_lossy(&out.stderr),
            self.log_text()
        );
        serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"))
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill").args(["-TERM", "--", &group]).status();
        let _ = self.child.wait();
    }
}

fn create_table(moto: &moto::MotoServer) {
    moto.create_state_table(TABLE, REGION);
}

async fn configure_replication(moto: &moto::MotoServer) {
    let sdk = moto.sdk_config().await;
    let ecr = aws_sdk_ecr::Client::from_conf(
        aws_sdk_ecr::config::Builder::from(&sdk)
            .region(aws_sdk_ecr::config::Region::new(REGION))
            .build(),
    );
    // moto keeps one rule: the same-account copy to us-east-1 of events/registry/us-west-2.json.
    let rule = aws_sdk_ecr::types::ReplicationRule::builder()
        .destinations(
            aws_sdk_ecr::types::ReplicationDestination::builder()
                .region("us-east-1")
                .registry_id(ACCOUNT)
                .build()
                .unwrap(),
        )
        .build()
        .unwrap();
    ecr.put_replication_configuration()
        .replication_configuration(
            aws_sdk_ecr::types::ReplicationConfiguration::builder()
                .rules(rule)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .expect("moto takes the replication configuration");
}

fn count(summary: &Value, key: &str) -> u64 {
    summary[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} in {summary}"))
}

#[tokio::test]
async fn the_real_binary_audits_sample_events_through_a_local_runtime_against_moto() {
    let moto = moto::MotoServer::start_in_account(ACCOUNT);
    create_table(&moto);
    configure_replication(&moto).await;
    let dir = tempfile::tempdir().unwrap();
    let watch = Watch::start(&moto, &dir.path().join("watch.log"));
    let events = root().join("events");

    let push = watch.invoke(&events.join("push-tagged.json"));
    assert_eq!(
        (count(&push, "pushes"), count(&push, "expected")),
        (1, 1),
        "{push}"
    );

    let wall_ms = || {
        i64::try_from(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_millis(),
        )
        .unwrap()
    };
    let before_copy = wall_ms();
    let copy = watch.invoke(&events.join("replication-success-same-account.json"));
    let after_copy = wall_ms();
    assert_eq!(
        (count(&copy, "copies"), count(&copy, "completed")),
        (1, 1),
        "{copy}"
    );

    let again = watch.invoke(&events.join("replication-success-same-account.json"));
    assert_eq!(
        (count(&again, "completed"), count(&again, "repeats")),
        (0, 1),
        "a redelivery counts nothing: {again}"
    );

    let scan = watch.invoke(&events.join("image-scan.json"));
    assert_eq!(count(&scan, "ignored"), 1);

    // The malformed line of the archive, as its own invocation: acknowledged, counted once.
    let archive = std::fs::read_to_string(events.join("archive-2024-07-01.jsonl")).unwrap();
    let broken = dir.path().join("broken.json");
    std::fs::write(&broken, archive.lines().nth(8).unwrap()).unwrap();
    let rejected = watch.invoke(&broken);
    assert_eq!(count(&rejected, "rejected"), 1, "{rejected}");

    let sweep = watch.invoke(&events.join("scheduled-event.json"));
    assert_eq!(count(&sweep, "sweeps"), 1);

    let log = watch.log_text();
    let lines: Vec<Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let latency = lines
        .iter()
        .find(|l| l["ReplicationLatency"].is_number() && l["DestinationRegion"] == "us-east-1")
        .unwrap_or_else(|| panic!("an EMF line with the copy's lag:\n{log}"));
    assert_eq!(latency["ReplicationLatency"], 7.0);
    assert_eq!(
        latency["_aws"]["CloudWatchMetrics"][0]["Namespace"],
        "ECRReplication"
    );
    // The copy happened on 2024-07-01, longer ago than CloudWatch takes a timestamp (two weeks):
    // dated as far back as it takes, with an hour to spare, rather than refused.
    let timestamp = latency["_aws"]["Timestamp"].as_i64().unwrap();
    let oldest = |now: i64| now - 14 * 86_400_000 + 3_600_000;
    assert!(
        (oldest(before_copy)..=oldest(after_copy)).contains(&timestamp),
        "{timestamp} is not two weeks less an hour before the invocation"
    );
    let verdict = lines
        .iter()
        .find(|l| l["message"] == "replication verdict")
        .expect("a verdict log line");
    assert_eq!(verdict["verdict"], "replicated");
    assert_eq!(verdict["latency_seconds"], 7.0);
    assert!(
        lines.iter().any(|l| l["EventsRejected"] == 1.0),
        "EventsRejected as EMF:\n{log}"
    );
    assert!(
        lines.iter().any(|l| l["PendingReplications"] == 0.0),
        "the sweep's gauge as EMF:\n{log}"
    );
}
