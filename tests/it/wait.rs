//! `wait`, the pipeline gate: with the scripted registry on tokio's paused clock (copies that
//! land while it waits, tags copied after their digest, FAILED, untagged at the timeout,
//! timeout), then the real binary against moto (same account, another account through the
//! audit role, a registry it cannot read).

use std::process::{Command, Output};
use std::time::Duration;

use ecr_replication_auditor::adapters::fake::{Api, FakeRegistry};
use ecr_replication_auditor::domain::confirm::{ReplicationState, ReplicationStatus};
use ecr_replication_auditor::domain::time::Window;
use ecr_replication_auditor::ports::registry::{RegistryAt, RegistryError};
use ecr_replication_auditor::wait::{self, DestinationState, ImageRef, WaitOptions, WaitReport};
use serde_json::{Value, json};

use crate::support::cli::{BIN, assert_exit, json_of, root};
use crate::support::events::sample;
use crate::support::ids::{account, at, digest, found, region, registry, repository, tag};
use crate::support::moto::{self, MotoServer};

const SOURCE: &str = "111122223333";
const REPO: &str = "team/api";
const DIGEST: &str = "sha256:efd0f9b95ee5a2da876ec1250b0f949bb6c3716d368f77e179212a1d91b62c38";
/// The destinations `events/registry/us-west-2.json` names for `team/api`.
const SAME: (&str, &str) = ("us-east-1", SOURCE);
const CROSS: (&str, &str) = ("eu-west-1", "444455556666");

fn src() -> RegistryAt {
    registry(SOURCE, "us-west-2")
}

fn dest(d: (&str, &str)) -> RegistryAt {
    registry(d.1, d.0)
}

/// The source as the sample incident has it: team/api:v1.4.2 pushed at 0.
fn source_registry() -> FakeRegistry {
    let ecr = FakeRegistry::default();
    ecr.config(src(), sample("registry/us-west-2.json"));
    ecr.tag(src(), repository(REPO), tag("v1.4.2"), digest(DIGEST));
    ecr.image(
        src(),
        repository(REPO),
        digest(DIGEST),
        found(&["v1.4.2"], Some(at(0))),
    );
    ecr
}

fn arrive(ecr: &FakeRegistry, d: (&str, &str), tags: &[&str], secs: i64) {
    ecr.image(
        dest(d),
        repository(REPO),
        digest(DIGEST),
        found(tags, Some(at(secs))),
    );
}

fn options(timeout: Window, json: bool) -> WaitOptions {
    WaitOptions {
        source: src(),
        repository: repository(REPO),
        image: ImageRef::Tag(tag("v1.4.2")),
        timeout,
        first_poll: Duration::from_secs(2),
        json,
    }
}

async fn wait_for(ecr: &FakeRegistry, timeout: Window) -> (WaitReport, String) {
    wait_judged_by(ecr, timeout, Window::DEFAULT, false).await
}

/// `wait` with the auditor's `window`, printing text or (`json`) the JSON document.
async fn wait_judged_by(
    ecr: &FakeRegistry,
    timeout: Window,
    window: Window,
    json: bool,
) -> (WaitReport, String) {
    let mut out = Vec::new();
    let report = wait::run(ecr, &options(timeout, json), window, &mut out)
        .await
        .unwrap();
    (report, String::from_utf8(out).unwrap())
}

fn state_of<'a>(report: &'a WaitReport, d: (&str, &str)) -> &'a DestinationState {
    &report
        .destinations
        .iter()
        .find(|r| r.destination_region == d.0)
        .unwrap()
        .state
}

#[tokio::test(start_paused = true)]
async fn wait_returns_once_the_last_destination_has_the_image_with_its_tag() {
    let ecr = source_registry();
    arrive(&ecr, SAME, &["v1.4.2"], 7);
    let later = ecr.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(40)).await;
        arrive(&later, CROSS, &["v1.4.2", "stable"], 40);
    });
    let (report, text) = wait_for(&ecr, Window::minutes(30)).await;
    assert_eq!((report.outcome, report.exit_code()), ("replicated", 0));
    assert_eq!(
        state_of(&report, CROSS),
        &DestinationState::Arrived {
            lag_seconds: Some(40)
        }
    );
    assert!(
        report.waited_seconds >= 40.0 && report.waited_seconds < 60.0,
        "polls back off, but not past the moment it arrived: {}",
        report.waited_seconds
    );
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines,
        [
            "arrived   111122223333/us-east-1  lag 7s",
            "arrived   444455556666/eu-west-1  lag 40s",
            &format!(
                "team/api:v1.4.2 @ {DIGEST}: in all 2 destinations, after {:.0}s",
                report.waited_seconds
            ),
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_destination_that_never_gets_the_image_times_out_naming_it_with_exit_1() {
    let ecr = source_registry();
    arrive(&ecr, SAME, &["v1.4.2"], 7);
    let (report, text) = wait_for(&ecr, Window::minutes(2)).await;
    assert_eq!((report.outcome, report.exit_code()), ("timeout", 1));
    assert_eq!(state_of(&report, CROSS), &DestinationState::Pending);
    assert!(
        (120.0..121.0).contains(&report.waited_seconds),
        "{}",
        report.waited_seconds
    );
    assert!(
        text.ends_with("not there with its tag: 444455556666 eu-west-1\n"),
        "{text}"
    );
}

#[tokio::test(start_paused = true)]
async fn ecr_reporting_failed_ends_the_wait_at_once_a_copy_without_its_tag_at_the_timeout() {
    let ecr = source_registry();
    ecr.statuses(
        src(),
        repository(REPO),
        digest(DIGEST),
        vec![ReplicationStatus {
            region: Some(region("eu-west-1")),
            registry: Some(account("444455556666")),
            state: ReplicationState::Failed,
            failure_code: Some("ACCESS_DENIED".into()),
        }],
    );
    arrive(&ecr, SAME, &["v1.4.2"], 7);
    let (report, _) = wait_for(&ecr, Window::minutes(30)).await;
    assert_eq!((report.outcome, report.exit_code()), ("failed", 1));
    assert!(
        report.waited_seconds < 1.0,
        "no need to wait for the timeout"
    );
    // Nor when another destination has its copy without the tag: FAILED decides it.
    let old = "sha256:0ld0000000000000000000000000000000000000000000000000000000000000";
    ecr.tag(dest(SAME), repository(REPO), tag("v1.4.2"), digest(old));
    arrive(&ecr, SAME, &[], 7);
    let (report, _) = wait_for(&ecr, Window::minutes(30)).await;
    assert_eq!((report.outcome, report.exit_code()), ("failed", 1));
    assert!(report.waited_seconds < 1.0, "{}", report.waited_seconds);

    // The copy is there, but the destination's tag names another image and never moves (a
    // stale tag: immutable tags): asked again every round, a failure when the timeout comes.
    let ecr = source_registry();
    arrive(&ecr, SAME, &["v1.4.2"], 7);
    arrive(&ecr, CROSS, &[], 9);
    ecr.tag(dest(CROSS), repository(REPO), tag("v1.4.2"), digest(old));
    let (report, text) = wait_for(&ecr, Window::minutes(2)).await;
    assert_eq!((report.outcome, report.exit_code()), ("untagged", 1));
    assert_eq!(
        state_of(&report, CROSS),
        &DestinationState::Untagged {
            tag_points_to: Some(old.into())
        }
    );
    assert!(
        (120.0..121.0).contains(&report.waited_seconds),
        "a copy without its tag is waited for until the timeout: {}",
        report.waited_seconds
    );
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines,
        [
            "arrived   111122223333/us-east-1  lag 7s",
            &format!(
                "untagged  444455556666/eu-west-1  the copy is there without its tag; \
                 the destination's tag names {old} (a stale tag)"
            ),
            &format!(
                "team/api:v1.4.2 @ {DIGEST}: untagged after {:.0}s; not there with its tag: \
                 444455556666 eu-west-1",
                report.waited_seconds
            ),
        ]
    );

    // Without the tag and with no tag there at all: untagged too, at the timeout.
    let ecr = source_registry();
    arrive(&ecr, SAME, &["v1.4.2"], 7);
    arrive(&ecr, CROSS, &["v1.4.1"], 9);
    let (report, text) = wait_for(&ecr, Window::minutes(1)).await;
    assert_eq!((report.outcome, report.exit_code()), ("untagged", 1));
    assert_eq!(
        state_of(&report, CROSS),
        &DestinationState::Untagged {
            tag_points_to: None
        }
    );
    assert!(report.waited_seconds >= 60.0, "{}", report.waited_seconds);
    assert!(
        text.contains("untagged  444455556666/eu-west-1  the copy is there without its tag\n"),
        "{text}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_digest_already_there_under_another_tag_is_waited_for_until_ecr_copies_the_new_tag() {
    // v1.4.2 is a new tag on a digest replicated earlier as v1.4.1: at the first poll every
    // destination has the digest, one without any tag of it, one with the tag still naming the
    // image it named before. ECR copies the tag a little later.
    let ecr = source_registry();
    arrive(&ecr, SAME, &["v1.4.1"], 7);
    arrive(&ecr, CROSS, &[], 9);
    let old = "sha256:0ld0000000000000000000000000000000000000000000000000000000000000";
    ecr.tag(dest(CROSS), repository(REPO), tag("v1.4.2"), digest(old));
    let later = ecr.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(5)).await;
        arrive(&later, SAME, &["v1.4.1", "v1.4.2"], 7);
        tokio::time::sleep(Duration::from_secs(10)).await;
        arrive(&later, CROSS, &["v1.4.2"], 9);
        later.tag(dest(CROSS), repository(REPO), tag("v1.4.2"), digest(DIGEST));
    });
    let (report, text) = wait_for(&ecr, Window::minutes(30)).await;
    assert_eq!(
        (report.outcome, report.exit_code()),
        ("replicated", 0),
        "{text}"
    );
    assert!(
        report.waited_seconds >= 15.0 && report.waited_seconds < 30.0,
        "not failed at the first poll, not kept past the tag's arrival: {}",
        report.waited_seconds
    );
    assert_eq!(
        state_of(&report, CROSS),
        &DestinationState::Arrived {
            lag_seconds: Some(9)
        }
    );
    assert!(!text.contains("untagged"), "{text}");
    assert!(
        ecr.calls(Api::ImagesByDigest) >= 4,
        "each destination asked again: {}",
        ecr.calls(Api::ImagesByDigest)
    );
}

#[tokio::test(start_paused = true)]
async fn a_status_api_that_fails_or_lists_nothing_leaves_describe_images_to_decide() {
    let ecr = source_registry();
    ecr.fail(
        Api::ImageReplicationStatus,
        Some(RegistryError::Transient("HTTP 500".into())),
    );
    arrive(&ecr, SAME, &["v1.4.2"], 7);
    arrive(&ecr, CROSS, &["v1.4.2"], 12);
    let (report, _) = wait_for(&ecr, Window::minutes(1)).await;
    assert_eq!(report.outcome, "replicated");
}

#[tokio::test(start_paused = true)]
async fn a_destination_the_status_api_does_not_list_times_out_naming_it() {
    // The status API answers, but lists only the same-account destination (COMPLETE, and the
    // copy there); the other one, never listed and never arriving, is waited for all the same.
    let ecr = source_registry();
    ecr.statuses(
        src(),
        repository(REPO),
        digest(DIGEST),
        vec![ReplicationStatus {
            region: Some(region("us-east-1")),
            registry: Some(account(SOURCE)),
            state: ReplicationState::Complete,
            failure_code: None,
        }],
    );
    arrive(&ecr, SAME, &["v1.4.2"], 7);
    let (report, text) = wait_for(&ecr, Window::minutes(3)).await;
    assert_eq!((report.outcome, report.exit_code()), ("timeout", 1));
    assert_eq!(state_of(&report, CROSS), &DestinationState::Pending);
    assert!(
        (180.0..181.0).contains(&report.waited_seconds),
        "{}",
        report.waited_seconds
    );
    assert!(
        ecr.calls(Api::ImageReplicationStatus) > 2,
        "the status API was asked every round: {}",
        ecr.calls(Api::ImageReplicationStatus)
    );
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines,
        [
            "arrived   111122223333/us-east-1  lag 7s",
            &format!(
                "team/api:v1.4.2 @ {DIGEST}: timeout after {:.0}s; not there with its tag: \
                 444455556666 eu-west-1",
                report.waited_seconds
            ),
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_copy_slower_than_the_window_is_said_late_in_its_line_and_not_on_time_in_json() {
    // The auditor's window is 30 s: the same-account copy took 7 s, the other one 40 s.
    let window = Window::from_secs(30).unwrap();
    let script = || {
        let ecr = source_registry();
        arrive(&ecr, SAME, &["v1.4.2"], 7);
        arrive(&ecr, CROSS, &["v1.4.2"], 40);
        ecr
    };
    let (report, text) = wait_judged_by(&script(), Window::minutes(5), window, false).await;
    assert_eq!((report.outcome, report.exit_code()), ("replicated", 0));
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[..2],
        [
            "arrived   111122223333/us-east-1  lag 7s",
            "arrived   444455556666/eu-west-1  lag 40s, late (window 30s)",
        ],
        "{text}"
    );

    let (report, text) = wait_judged_by(&script(), Window::minutes(5), window, true).await;
    assert_eq!(report.exit_code(), 0, "late is not a failure of the gate");
    let doc: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(doc["outcome"], "replicated");
    let by_region = |r: &str| {
        doc["destinations"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["destination_region"] == r)
            .cloned()
            .unwrap()
    };
    let (same, cross) = (by_region(SAME.0), by_region(CROSS.0));
    assert_eq!(
        (&same["state"], &same["lag_seconds"], &same["on_time"]),
        (&json!("arrived"), &json!(7), &json!(true))
    );
    assert_eq!(
        (&cross["state"], &cross["lag_seconds"], &cross["on_time"]),
        (&json!("arrived"), &json!(40), &json!(false))
    );
    // Exactly the window is on time, as the auditor judges.
    let ecr = source_registry();
    arrive(&ecr, SAME, &["v1.4.2"], 30);
    arrive(&ecr, CROSS, &["v1.4.2"], 31);
    let (report, _) = wait_judged_by(&ecr, Window::minutes(5), window, false).await;
    let on_time: Vec<_> = report
        .destinations
        .iter()
        .map(|d| (d.destination_region.as_str(), d.on_time))
        .collect();
    assert!(on_time.contains(&("us-east-1", Some(true))), "{on_time:?}");
    assert!(on_time.contains(&("eu-west-1", Some(false))), "{on_time:?}");
}

#[tokio::test(start_paused = true)]
async fn a_repository_no_rule_covers_has_nothing_to_wait_for() {
    let ecr = FakeRegistry::default();
    ecr.config(
        src(),
        json!({"registryId": SOURCE, "replicationConfiguration": {"rules": []}}),
    );
    ecr.tag(src(), repository(REPO), tag("v1.4.2"), digest(DIGEST));
    let (report, text) = wait_for(&ecr, Window::minutes(1)).await;
    assert_eq!((report.outcome, report.exit_code()), ("no_destinations", 0));
    assert!(text.contains("nothing to wait for"), "{text}");
}

// ---------------------------------------------------------------------------------------------
// The binary against moto
// ---------------------------------------------------------------------------------------------

/// us-west-2 replicating `team/` to us-east-1 in moto's one account; the image pushed there.
async fn moto_world(server: &MotoServer) -> String {
    let config = server.sdk_config().await;
    let west = moto::ecr_in(&config, "us-west-2");
    moto::create_repository(&west, REPO).await;
    moto::put_replication_rule(&west, &[("us-east-1", moto::ACCOUNT)], &["team"]).await;
    moto::put_image(&west, REPO, 1, "v1").await
}

fn run_wait(server: &MotoServer, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(["wait", "--region", "us-west-2", "--repository", REPO])
        .args(args)
        .current_dir(root())
        .env("AWS_ENDPOINT_URL", server.endpoint())
        .env("AWS_REGION", "us-west-2")
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env_remove("AWS_SESSION_TOKEN")
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_DEFAULT_REGION")
        .output()
        .expect("the binary runs")
}

#[tokio::test]
async fn the_binary_waits_against_moto_for_a_copy_with_its_tag_and_times_out_without_one() {
    let server = MotoServer::start();
    let digest = moto_world(&server).await;

    // Not copied yet (moto copies nothing itself; its status API answers HTTP 500): timeout.
    let out = run_wait(
        &server,
        &["--image-tag", "v1", "--timeout", "3s", "--format", "json"],
    );
    assert_exit(&out, 1);
    let doc = json_of(&out);
    assert_eq!(doc["outcome"], "timeout");
    assert_eq!(doc["image_digest"], digest.as_str());
    assert_eq!(doc["destinations"][0]["destination_region"], "us-east-1");
    assert_eq!(doc["destinations"][0]["state"], "pending");

    // The copy lands with its tag: replicated, exit 0.
    let east = moto::ecr_in(&server.sdk_config().await, "us-east-1");
    moto::create_repository(&east, REPO).await;
    assert_eq!(moto::put_image(&east, REPO, 1, "v1").await, digest);
    let out = run_wait(&server, &["--image-digest", &digest, "--timeout", "1m"]);
    assert_exit(&out, 0);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with("arrived   123456789012/us-east-1"),
        "{text}"
    );

    // A tag that names another image there, and stays so: untagged at the timeout, exit 1.
    let west = moto::ecr_in(&server.sdk_config().await, "us-west-2");
    moto::put_image(&west, REPO, 2, "v2").await;
    moto::put_image(&east, REPO, 2, "v2-other").await;
    moto::put_image(&east, REPO, 3, "v2").await;
    let out = run_wait(
        &server,
        &["--image-tag", "v2", "--timeout", "3s", "--format", "json"],
    );
    assert_eq!(out.status.code(), Some(1));
    let doc = json_of(&out);
    assert_eq!(doc["outcome"], "untagged");
    assert!(doc["destinations"][0]["tag_points_to"].is_string(), "{doc}");
    assert!(doc["waited_seconds"].as_f64().unwrap() >= 3.0, "{doc}");
}

/// Another account, reached only through the audit role (moto puts requests made with
/// AssumeRole credentials in the role's account).
const OTHER_ACCOUNT: &str = "210987654321";
const ROLE: &str = "ecr-replication-audit";

#[tokio::test]
async fn the_binary_takes_registry_id_and_format_text_and_reads_another_account_through_the_role() {
    let server = MotoServer::start();
    let own = server.sdk_config().await;
    let other = server.sdk_config_in_account(OTHER_ACCOUNT).await;
    let west = moto::ecr_in(&own, "us-west-2");
    moto::create_repository(&west, REPO).await;
    moto::put_replication_rule(&west, &[("eu-west-1", OTHER_ACCOUNT)], &["team"]).await;
    let digest = moto::put_image(&west, REPO, 1, "v1").await;
    let eu = moto::ecr_in(&other, "eu-west-1");
    moto::create_repository(&eu, REPO).await;
    assert_eq!(moto::put_image(&eu, REPO, 1, "v1").await, digest);

    let out = run_wait(
        &server,
        &[
            "--image-tag",
            "v1",
            "--registry-id",
            moto::ACCOUNT,
            "--audit-role",
            ROLE,
            "--audit-role-external-id",
            "audit-7f3a",
            "--timeout",
            "1m",
            "--format",
            "text",
        ],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(
        lines[0].starts_with(&format!("arrived   {OTHER_ACCOUNT}/eu-west-1  lag ")),
        "{text}"
    );
    assert!(
        lines[1].starts_with(&format!(
            "team/api:v1 @ {digest}: in all 1 destinations, after "
        )),
        "{text}"
    );
}

#[tokio::test]
async fn the_binary_exits_2_naming_a_source_or_a_destination_it_cannot_read() {
    let server = MotoServer::start();
    let own = server.sdk_config().await;
    let west = moto::ecr_in(&own, "us-west-2");
    moto::create_repository(&west, REPO).await;
    moto::put_replication_rule(&west, &[("eu-west-1", OTHER_ACCOUNT)], &["team"]).await;
    let digest = moto::put_image(&west, REPO, 1, "v1").await;

    // A source in another account, and no audit role to read it with.
    let out = run_wait(
        &server,
        &[
            "--image-tag",
            "v1",
            "--registry-id",
            OTHER_ACCOUNT,
            "--timeout",
            "1m",
        ],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains(&format!(
            "cannot read the source registry {OTHER_ACCOUNT} us-west-2"
        )),
        "{err}"
    );
    assert!(
        out.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    // The source is read, but the destination is in another account and there is no role.
    let out = run_wait(&server, &["--image-digest", &digest, "--timeout", "1m"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains(&format!(
            "cannot read the destination registry {OTHER_ACCOUNT} eu-west-1"
        )),
        "{err}"
    );
}

/// No SDK Region configured (a CI runner with credentials only): STS is asked in the source's
/// Region, as `drift` does, and the wait goes on.
#[tokio::test]
async fn wait_without_an_sdk_region_calls_sts_in_the_source_region() {
    let server = MotoServer::start();
    let digest = moto_world(&server).await;
    let out = Command::new(BIN)
        .args(["wait", "--region", "us-west-2", "--repository", REPO])
        .args([
            "--image-digest",
            &digest,
            "--timeout",
            "3s",
            "--format",
            "json",
        ])
        .env("AWS_ENDPOINT_URL", server.endpoint())
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_CONFIG_FILE", "/nonexistent/aws-config")
        .env(
            "AWS_SHARED_CREDENTIALS_FILE",
            "/nonexistent/aws-credentials",
        )
        .env_remove("AWS_SESSION_TOKEN")
        .env_remove("AWS_REGION")
        .env_remove("AWS_DEFAULT_REGION")
        .env_remove("AWS_PROFILE")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(2), "{err}");
    let report = json_of(&out);
    assert!(
        report["destinations"]
            .as_array()
            .is_some_and(|d| !d.is_empty()),
        "it read the rules and the destinations: {report}"
    );
}

#[test]
fn wait_without_an_image_is_refused_with_exit_2() {
    let out = Command::new(BIN)
        .args(["wait", "--region", "us-west-2", "--repository", REPO])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--image-tag"));
}
