//! `audit` end to end: a history written by the Lambda's own code, read back by the real binary.
//!
//! Each test starts a moto server, creates the table from template.yaml
//! (`scripts/create-state-table`), and drives the real [`Auditor`] on the real
//! [`DynamoStateStore`] with every event in `events/` (in the order `replay` reads them, the
//! schedule's sweep last), plus an image first pushed the day before and retagged during the
//! incident, whose first copies only the sweep confirms (their events were lost). Only ECR is a
//! fake here ([`FakeRegistry`]): it answers from `events/registry/us-west-2.json` and a list of
//! images present.
//! Then `ecr-replication-auditor audit` runs as a child process, pointed at moto by the
//! standard SDK variables, and its report is compared with `replay`'s over the same events.

use std::collections::BTreeMap;
use std::process::{Command, Output};

use ecr_replication_auditor::adapters::dynamodb::DynamoStateStore;
use ecr_replication_auditor::adapters::fake::FakeRegistry;
use ecr_replication_auditor::app::handler::{AuditSettings, Auditor};
use ecr_replication_auditor::domain::time::{Timestamp, Window};
use serde_json::{Value, json};

use crate::support::cli::{BIN, CONFIG, event_files, json_of, records, root, statuses};
use crate::support::events::sample;
use crate::support::ids::{digest, found, registry, repository, time};
use crate::support::metrics::RecordingSink;
use crate::support::moto::{self, MotoServer};

const TABLE: &str = "auditor-state";
const SOURCE: (&str, &str) = ("111122223333", "us-west-2");
/// The two destinations every repository of the us-west-2 rules gets.
const SAME: (&str, &str) = ("111122223333", "us-east-1");
const CROSS: (&str, &str) = ("444455556666", "eu-west-1");

/// `team/cache`: first pushed as `v2` the evening before the incident (its copy events were
/// lost: only the sweep's DescribeImages shows the copies), then retagged `stable` the day after
/// it.
const CACHE_REPO: &str = "team/cache";
const CACHE_DIGEST: &str =
    "sha256:cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc";
const CACHE_FIRST_PUSH: &str = "2024-06-30T23:50:00Z";
const CACHE_RETAG: &str = "2024-07-02T10:30:00Z";

// ---------------------------------------------------------------------------------------------
// The Lambda's side: a scripted ECR; metrics to a recorder nobody reads
// ---------------------------------------------------------------------------------------------

/// ECR as the sweep sees it: us-west-2's replication rules, team/cache's copies in both
/// destinations, and prod/payments:v2 still in ap-southeast-2 (the delete of
/// `events/image-delete-replicated.json` never applied there). Everything else has no rules, no
/// replication status and no image.
fn ecr() -> FakeRegistry {
    let ecr = FakeRegistry::default();
    let (account, region) = SOURCE;
    ecr.config(registry(account, region), sample("registry/us-west-2.json"));
    let payments_v2 = sample("image-delete-replicated.json");
    ecr.image(
        registry(SOURCE.0, "ap-southeast-2"),
        repository("prod/payments"),
        digest(payments_v2["detail"]["image-digest"].as_str().unwrap()),
        found(&["v2"], Some(time("2024-06-01T00:00:00Z"))),
    );
    for ((account, region), seconds_after_push) in [(SAME, 20), (CROSS, 45)] {
        ecr.image(
            registry(account, region),
            repository(CACHE_REPO),
            digest(CACHE_DIGEST),
            found(
                &["v2", "stable"],
                Some(Timestamp::from_millis(
                    time(CACHE_FIRST_PUSH).millis() + seconds_after_push * 1000,
                )),
            ),
        );
    }
    ecr
}

// ---------------------------------------------------------------------------------------------
// The history: moto, the table, and the Lambda's code writing to it
// ---------------------------------------------------------------------------------------------

/// Every record of `events/`, in the order `replay events/` reads them: files by name, lines in
/// order. `scheduled-event.json`, the sweep at 10:55, comes last.
fn sample_events() -> Vec<Value> {
    let records: Vec<Value> = event_files().iter().flat_map(|p| records(p)).collect();
    assert_eq!(
        records.last().unwrap()["detail-type"],
        "Scheduled Event",
        "the sweep comes last"
    );
    records
}

fn cache_push(id: &str, at: &str, tag: &str) -> Value {
    json!({
        "version": "0", "id": id, "detail-type": "ECR Image Action", "source": "aws.ecr",
        "account": SOURCE.0, "time": at, "region": SOURCE.1, "resources": [],
        "detail": {"result": "SUCCESS", "repository-name": CACHE_REPO, "image-digest": CACHE_DIGEST,
                   "action-type": "PUSH", "image-tag": tag}
    })
}

fn cache_copy(id: &str, at: &str, (account, region): (&str, &str), tag: &str) -> Value {
    json!({
        "version": "0", "id": id, "detail-type": "ECR Replication Action", "source": "aws.ecr",
        "account": account, "time": at, "region": region,
        "resources": [format!("arn:aws:ecr:{region}:{account}:repository/{CACHE_REPO}")],
        "detail": {"result": "SUCCESS", "repository-name": CACHE_REPO, "image-digest": CACHE_DIGEST,
                   "source-account": SOURCE.0, "source-region": SOURCE.1,
                   "action-type": "REPLICATE", "image-tag": tag}
    })
}

/// A moto server whose table holds what the Lambda wrote for the events; dropped, it stops.
struct History {
    server: MotoServer,
}

impl History {
    async fn written() -> History {
        let server = MotoServer::start();
        server.create_state_table(TABLE, moto::REGION);
        let client = aws_sdk_dynamodb::Client::new(&server.sdk_config().await);
        let auditor = Auditor::new(
            DynamoStateStore::new(client, TABLE, 90),
            ecr(),
            RecordingSink::default(),
            RecordingSink::default(),
            AuditSettings {
                window: Window::DEFAULT,
                repository_dimension: false,
                config_cache_ms: 300_000,
                history_retention: Window::hours(24 * 90),
            },
        );
        let mut events = vec![
            cache_push("cache-push-v2", CACHE_FIRST_PUSH, "v2"),
            cache_push("cache-push-stable", CACHE_RETAG, "stable"),
            cache_copy("cache-copy-1", "2024-07-02T10:30:06Z", SAME, "stable"),
            cache_copy("cache-copy-2", "2024-07-02T10:30:09Z", CROSS, "stable"),
        ];
        events.extend(sample_events());
        for event in &events {
            let now = time(event["time"].as_str().unwrap());
            auditor
                .handle(event, now)
                .await
                .unwrap_or_else(|e| panic!("the Lambda's handler failed on {event}: {e}"));
        }
        History { server }
    }

    /// Without history: an empty moto, for the tests of what cannot be read.
    fn empty() -> History {
        History {
            server: MotoServer::start(),
        }
    }

    /// `ecr-replication-auditor audit --table auditor-state ARGS`, with the standard SDK
    /// variables pointing at moto, set on the child only.
    fn audit(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .args(["audit", "--table", TABLE])
            .args(args)
            .current_dir(root())
            .env("AWS_ENDPOINT_URL", self.server.endpoint())
            .env("AWS_REGION", moto::REGION)
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env_remove("AWS_SESSION_TOKEN")
            .env_remove("AWS_PROFILE")
            .env_remove("AWS_DEFAULT_REGION")
            .output()
            .expect("the binary runs")
    }

    /// `audit --format json ARGS`: exit status and document.
    fn audit_json(&self, args: &[&str]) -> (i32, Value) {
        let out = self.audit(&[&["--format", "json"], args].concat());
        (out.status.code().expect("an exit code"), json_of(&out))
    }
}

fn replay(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(["replay", "--registry", CONFIG])
        .args(args)
        .arg("events/")
        .current_dir(root())
        .output()
        .expect("the binary runs")
}

fn record<'a>(doc: &'a Value, repository: &str, tag: &str, region: &str) -> &'a Value {
    doc["replications"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| {
            r["repository"] == repository
                && r["image_tag"] == tag
                && r["destination_region"] == region
        })
        .unwrap_or_else(|| panic!("{repository}:{tag} {region} in {doc}"))
}

fn sorted_keys(v: &Value) -> Vec<String> {
    let mut keys: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
    keys.sort();
    keys
}

const DAY: [&str; 4] = ["--since", "2024-07-01", "--until", "2024-07-02"];
const AT_THE_SWEEP: [&str; 2] = ["--now", "2024-07-01T10:55:00Z"];

// ---------------------------------------------------------------------------------------------
// The tests
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_days_audit_of_the_lambdas_history_is_the_report_replay_gives_for_its_events() {
    let history = History::written().await;
    let (code, doc) = history.audit_json(&[&DAY[..], &AT_THE_SWEEP[..]].concat());
    let replayed = json_of(&replay(&["--format", "json"]));
    assert_eq!(code, 1, "late, missing, failed and untagged copies: exit 1");

    assert_eq!(
        statuses(&doc),
        statuses(&replayed),
        "the same verdict for every (push, destination): the sweep confirmed the missing copy"
    );
    assert_eq!(statuses(&doc).len(), 14);
    assert_eq!(
        doc["destinations"], replayed["destinations"],
        "the same counts and lag percentiles per destination, deletes owed included"
    );
    let mut deletions: Vec<&Value> = doc["deletions"].as_array().unwrap().iter().collect();
    let mut replayed_deletions: Vec<&Value> =
        replayed["deletions"].as_array().unwrap().iter().collect();
    let by_destination = |d: &&Value| d["destination_region"].to_string();
    deletions.sort_by_key(by_destination);
    replayed_deletions.sort_by_key(by_destination);
    assert_eq!(
        deletions, replayed_deletions,
        "the same delete verdicts: us-east-1's DELETE, and ap-southeast-2's image still there"
    );
    assert_eq!(doc["window_seconds"], 1800);
    assert_eq!(doc["now"], "2024-07-01T10:55:00Z");
    assert_eq!(sorted_keys(&doc), sorted_keys(&replayed), "the same keys");
    assert_eq!(
        sorted_keys(&doc["replications"][0]),
        sorted_keys(&replayed["replications"][0])
    );
    let mut by_key: Vec<&Value> = doc["replications"].as_array().unwrap().iter().collect();
    let mut replayed_by_key: Vec<&Value> = replayed["replications"]
        .as_array()
        .unwrap()
        .iter()
        .collect();
    let order = |r: &&Value| {
        (
            r["repository"].to_string(),
            r["image_tag"].to_string(),
            r["destination_region"].to_string(),
        )
    };
    by_key.sort_by_key(order);
    replayed_by_key.sort_by_key(order);
    assert_eq!(
        by_key, replayed_by_key,
        "record for record, lags and times included"
    );

    // What the table holds for these pushes: 5 images, 1 restore, 9 copy results, and the 2
    // deletes owed (one per destination of the rule with delete replication). It keeps no
    // other delete (it is in its image's verdicts), no ignored, rejected or duplicate event, no
    // copy whose push it never saw, no unconfigured source.
    assert_eq!(
        doc["events"],
        json!({"read": 17, "push": 5, "restore": 1, "replication": 9, "delete": 2, "ignored": 0, "rejected": 0, "duplicate": 0})
    );
    assert_eq!(doc["unmatched_replications"], json!([]));
    assert_eq!(doc["rejected_records"], json!([]));
    assert_eq!(doc["unconfigured_sources"], json!([]));

    // The table for a person: the same summary and problem copies, line for line.
    let table = history.audit(&[&DAY[..], &AT_THE_SWEEP[..]].concat());
    assert_eq!(table.status.code(), Some(1));
    let audit_text = String::from_utf8(table.stdout).unwrap();
    let replay_text = String::from_utf8(replay(&[]).stdout).unwrap();
    let audit_lines: Vec<&str> = audit_text.lines().collect();
    let replay_lines: Vec<&str> = replay_text.lines().collect();
    let end = replay_lines
        .iter()
        .position(|l| l.starts_with("Copies that match no push"))
        .unwrap()
        - 1;
    assert_eq!(audit_lines[0], replay_lines[0], "window and audit time");
    assert_eq!(
        audit_lines[1],
        "events: 17 read, 5 push, 1 restore, 9 replication, 2 delete, 0 ignored, 0 rejected, 0 duplicate"
    );
    assert_eq!(audit_lines[2..], replay_lines[2..end]);
}

/// The history finds every push by its own time: a retag inside the period is audited
/// whenever its image was first pushed (the previous version found a group by its first push
/// only, and needed `--lookback` for that), and a push before the period is not.
#[tokio::test]
async fn the_period_selects_pushes_by_their_own_time_whatever_the_first_push_of_their_image() {
    let history = History::written().await;

    // team/cache was pushed on 06-30 and retagged on 07-02: 07-01 holds neither.
    let (_, day) = history.audit_json(&[&DAY[..], &AT_THE_SWEEP[..]].concat());
    assert!(!statuses(&day).keys().any(|k| k.starts_with(CACHE_REPO)));

    // The day of the retag audits the retag, without a lookback; its first push stays out.
    let retag_day = [
        "--since",
        "2024-07-02",
        "--until",
        "2024-07-03",
        "--now",
        "2024-07-02T11:00:00Z",
    ];
    for lookback in [&[][..], &["--lookback", "48h"][..]] {
        let (_, doc) = history.audit_json(&[&retag_day[..], lookback].concat());
        let expected: BTreeMap<String, String> = [
            ("team/cache:stable eu-west-1", "replicated"),
            ("team/cache:stable us-east-1", "replicated"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(statuses(&doc), expected, "lookback {lookback:?}");
        assert_eq!(
            record(&doc, CACHE_REPO, "stable", "us-east-1")["latency_seconds"],
            6
        );
    }

    // Three days: every push.
    let (_, three_days) = history.audit_json(&[
        "--since",
        "2024-06-30T00:00:00Z",
        "--until",
        "2024-07-03T00:00:00Z",
        "--now",
        "2024-07-02T11:00:00Z",
    ]);
    assert_eq!(statuses(&three_days).len(), 18);

    // Within one day, the time range still decides: only prod/payments (10:10) lies in
    // [10:06, 10:30).
    let (code, narrow) = history.audit_json(&[
        "--since",
        "2024-07-01T10:06:00Z",
        "--until",
        "2024-07-01T10:30:00Z",
        AT_THE_SWEEP[0],
        AT_THE_SWEEP[1],
    ]);
    let expected: BTreeMap<String, String> = [
        ("prod/payments:v3 ap-southeast-2", "missing"),
        ("prod/payments:v3 eu-west-1", "replicated"),
        ("prod/payments:v3 us-east-1", "untagged"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    assert_eq!(statuses(&narrow), expected);
    assert_eq!(code, 1);
}

#[tokio::test]
async fn verdicts_follow_what_the_sweep_confirmed_with_ecr_not_only_the_events() {
    let history = History::written().await;
    let dir = tempfile::tempdir().unwrap();
    let chart = dir.path().join("audit.svg");
    let (_, doc) = history.audit_json(&[
        "--since",
        "2024-06-30",
        "--until",
        "2024-07-01",
        "--now",
        "2024-07-01T11:00:00Z",
        "--chart",
        chart.to_str().unwrap(),
    ]);
    // No copy event ever came for team/cache:v2: the sweep found both copies with DescribeImages,
    // and their lag is the destinations' push time minus the source's.
    let same = record(&doc, CACHE_REPO, "v2", "us-east-1");
    assert_eq!(
        (
            &same["status"],
            &same["latency_seconds"],
            &same["replicated_at"]
        ),
        (
            &json!("replicated"),
            &json!(20),
            &json!("2024-06-30T23:50:20Z")
        )
    );
    assert_eq!(
        record(&doc, CACHE_REPO, "v2", "eu-west-1")["latency_seconds"],
        45
    );
    // replay, with no event to go on, would call them missing.
    assert_eq!(statuses(&doc).len(), 2);

    let svg = std::fs::read_to_string(&chart).expect("the chart is written");
    let parsed = roxmltree::Document::parse(&svg).expect("well-formed XML");
    let panels = parsed
        .root_element()
        .children()
        .filter(|n| n.attribute("class") == Some("panel"))
        .count();
    assert_eq!(panels, 2, "one panel per destination");
    assert!(
        svg.contains("pushes from 2024-06-30T00:00:00Z until 2024-07-01T00:00:00Z"),
        "the time axis is the period asked for"
    );

    // An hour later than the sweep, team/worker's eu-west-1 copy is past its window but the
    // sweep has not checked it: the Lambda calls nothing missing without ECR's word, and neither
    // does the audit. It says so on stderr.
    let later = history.audit(
        &[
            &DAY[..],
            &["--now", "2024-07-01T12:00:00Z", "--format", "json"],
        ]
        .concat(),
    );
    assert_eq!(
        statuses(&json_of(&later))["team/worker:2024.07.01 eu-west-1"],
        "pending"
    );
    let stderr = String::from_utf8_lossy(&later.stderr);
    assert!(
        stderr
            .contains("warning: 2 copies are past the window with no check by the Lambda's sweep"),
        "{stderr}"
    );
}

#[tokio::test]
async fn destination_and_repository_filters_narrow_the_report_and_its_exit_status() {
    let history = History::written().await;
    let day: Vec<&str> = [&DAY[..], &AT_THE_SWEEP[..]].concat();

    let (code, doc) = history.audit_json(&[&day[..], &["--destination", "us-east-1"]].concat());
    assert!(
        statuses(&doc).keys().all(|k| k.ends_with(" us-east-1")),
        "{:?}",
        statuses(&doc)
    );
    assert_eq!(
        statuses(&doc).len(),
        6,
        "team/ml-model's restore is owed there too"
    );
    assert_eq!(code, 1, "prod/payments:v3 arrived untagged there");

    let (code, doc) =
        history.audit_json(&[&day[..], &["--destination", "eu-west-1:444455556666"]].concat());
    assert_eq!(
        (statuses(&doc).len(), code),
        (6, 1),
        "prod/web failed there (and team/ml-model's restore is owed there too)"
    );

    let other_account =
        history.audit(&[&day[..], &["--destination", "eu-west-1:111122223333"]].concat());
    assert_eq!(other_account.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&other_account.stdout).contains("No copies were expected."));

    // `team` covers team/api, team/ml-model (restored), team/scratch and team/worker: every copy
    // replicated, pending or withdrawn.
    let (code, doc) = history.audit_json(&[&day[..], &["--repository", "team"]].concat());
    let expected: BTreeMap<String, String> = [
        ("team/api:v1.4.2 eu-west-1", "replicated"),
        ("team/api:v1.4.2 us-east-1", "replicated"),
        ("team/ml-model eu-west-1", "pending"),
        ("team/ml-model us-east-1", "replicated"),
        ("team/scratch:pr-417 eu-west-1", "withdrawn"),
        ("team/scratch:pr-417 us-east-1", "withdrawn"),
        ("team/worker:2024.07.01 eu-west-1", "pending"),
        ("team/worker:2024.07.01 us-east-1", "replicated"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    assert_eq!(statuses(&doc), expected);
    assert_eq!(
        code, 0,
        "nothing late, missing, failed or untagged; withdrawn is no problem"
    );

    let (_, doc) = history.audit_json(&[&day[..], &["--repository", "prod/"]].concat());
    assert!(statuses(&doc).keys().all(|k| k.starts_with("prod/")));
    assert_eq!(statuses(&doc).len(), 6);
}

#[test]
fn an_absent_table_or_an_empty_period_stops_the_audit_with_exit_2_and_says_why() {
    let history = History::empty();
    let out = history.audit(&DAY);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cannot read the audit history")
            && stderr.contains(&format!("table {TABLE:?}"))
            && stderr.contains("ResourceNotFoundException"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty(), "no half report");

    for (args, needle) in [
        (
            vec!["--since", "2024-07-02", "--until", "2024-07-01"],
            "must be later than --since",
        ),
        (
            vec!["--since", "yesterday", "--until", "2024-07-01"],
            "yesterday",
        ),
        (
            [&DAY[..], &["--destination", "EU-WEST-1"]].concat(),
            "EU-WEST-1",
        ),
        ([&DAY[..], &["--window", "30"]].concat(), "30"),
        (vec!["--until", "2024-07-01"], "--since"),
    ] {
        let out = history.audit(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
    }
}
