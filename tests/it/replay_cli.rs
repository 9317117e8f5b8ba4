//! The `replay` command end to end: the real binary over the sample events in `events/`.
//!
//! Every file in `events/` is checked here: its JSON parses into the typed EventBridge envelope
//! of aws_lambda_events with the fields asserted, and the whole folder is replayed with the
//! verdicts asserted one by one.

use std::collections::BTreeMap;
use std::process::{Command, Stdio};

use aws_lambda_events::event::eventbridge::EventBridgeEvent;
use serde_json::Value;

use crate::support::cli;
use cli::{BIN, CONFIG, event_files, records, root, run, statuses};

fn run_json(args: &[&str]) -> (i32, Value) {
    let out = run(&[&["replay", "--format", "json"], args].concat());
    let stdout = String::from_utf8(out.stdout).expect("utf-8 output");
    let doc = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("not JSON ({e}):\n{stdout}"));
    (out.status.code().expect("exit code"), doc)
}

#[test]
fn every_sample_event_is_a_typed_eventbridge_envelope_with_the_fields_we_rely_on() {
    let mut seen = 0;
    for path in event_files() {
        for record in records(&path) {
            let event: EventBridgeEvent<Value> = serde_json::from_value(record.clone())
                .unwrap_or_else(|e| panic!("{}: not an EventBridge event: {e}", path.display()));
            assert_eq!(event.version.as_deref(), Some("0"), "{}", path.display());
            assert!(
                event.id.is_some() && event.time.is_some() && event.region.is_some(),
                "{}",
                path.display()
            );
            assert_eq!(
                event.account.as_deref().map(str::len),
                Some(12),
                "{}",
                path.display()
            );
            match (event.source.as_str(), event.detail_type.as_str()) {
                ("aws.ecr", "ECR Image Action") => {
                    assert_eq!(
                        event.resources,
                        Some(vec![]),
                        "image actions carry no resources"
                    );
                    assert!(event.detail["repository-name"].is_string());
                }
                ("aws.ecr", "ECR Replication Action") => {
                    let d = &event.detail;
                    assert_eq!(d["action-type"], "REPLICATE");
                    assert!(matches!(d["result"].as_str(), Some("SUCCESS" | "FAILED")));
                    // resources names the destination repository, in the envelope's account and Region.
                    let arn = format!(
                        "arn:aws:ecr:{}:{}:repository/{}",
                        event.region.as_deref().unwrap(),
                        event.account.as_deref().unwrap(),
                        d["repository-name"].as_str().unwrap()
                    );
                    assert_eq!(event.resources, Some(vec![arn]));
                    assert!(d["source-account"].is_string() && d["source-region"].is_string());
                }
                ("aws.ecr", "ECR Image Scan") | ("aws.events", "Scheduled Event") => {}
                other => panic!("{}: unexpected kind {other:?}", path.display()),
            }
            seen += 1;
        }
    }
    assert_eq!(seen, 25);
}

#[test]
fn each_sample_file_is_classified_as_its_name_says() {
    use ecr_replication_auditor::domain::event::{Classified, classify};
    let kind = |v: &Value| match classify(v) {
        Classified::Push(p) if p.tag.is_some() => "push tagged",
        Classified::Push(_) => "push by digest",
        Classified::Copy(c) if c.succeeded && c.source_account == c.destination_account => {
            "copy ok same-account"
        }
        Classified::Copy(c) if c.succeeded => "copy ok cross-account",
        Classified::Copy(_) => "copy failed",
        Classified::Delete(d) if d.tag.is_some() => "delete of a tag",
        Classified::Delete(_) => "delete of an image",
        Classified::Restore(_) => "restore",
        Classified::Ignored { .. } => "ignored",
        Classified::Rejected(_) => "rejected",
    };
    let expected: BTreeMap<&str, Vec<&str>> = [
        ("push-tagged.json", vec!["push tagged"]),
        ("push-by-digest.json", vec!["push by digest"]),
        (
            "replication-success-same-account.json",
            vec!["copy ok same-account"],
        ),
        (
            "replication-success-cross-account.json",
            vec!["copy ok cross-account"],
        ),
        ("replication-failed-cross-account.json", vec!["copy failed"]),
        ("image-scan.json", vec!["ignored"]),
        ("image-delete.json", vec!["delete of a tag"]),
        ("image-delete-replicated.json", vec!["delete of a tag"]),
        (
            "image-delete-replicated.us-east-1.json",
            vec!["delete of a tag"],
        ),
        ("image-restore.json", vec!["restore"]),
        (
            "replication-success-restored.json",
            vec!["copy ok same-account"],
        ),
        ("scheduled-event.json", vec!["ignored"]),
        (
            "archive-2024-07-01.jsonl",
            vec![
                "copy ok same-account",
                "push tagged",
                "copy ok same-account",
                "copy ok cross-account",
                "push tagged",
                "copy ok same-account",
                "push tagged",
                "copy ok same-account",
                "rejected",
                "copy ok same-account",
                "copy ok same-account",
                "push tagged",
                "push tagged",
            ],
        ),
    ]
    .into_iter()
    .collect();
    let files = event_files();
    let names: Vec<String> = files
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    let mut listed: Vec<&str> = expected.keys().copied().collect();
    listed.sort();
    assert_eq!(
        names, listed,
        "every file in events/ is listed here, and only those"
    );
    for path in files {
        let name = path.file_name().unwrap().to_str().unwrap();
        let got: Vec<&str> = records(&path).iter().map(kind).collect();
        assert_eq!(got, expected[name], "{name}");
    }
}

#[test]
fn replaying_the_samples_gives_every_verdict_and_exit_status_1() {
    let (code, doc) = run_json(&["--registry", CONFIG, "events/"]);
    assert_eq!(
        code, 1,
        "late, missing, failed and untagged copies make the audit fail"
    );
    assert_eq!(doc["window_seconds"], 1800);
    assert_eq!(
        doc["now"], "2024-07-01T10:55:00Z",
        "now defaults to the latest event read"
    );
    assert_eq!(
        doc["events"],
        serde_json::json!({"read": 25, "push": 6, "restore": 1, "replication": 11, "delete": 3, "ignored": 2, "rejected": 1, "duplicate": 1})
    );
    let expected: BTreeMap<String, String> = [
        ("team/api:v1.4.2 us-east-1", "replicated"),
        ("team/api:v1.4.2 eu-west-1", "replicated"),
        ("prod/web us-east-1", "replicated"),
        ("prod/web eu-west-1", "failed"),
        ("prod/web ap-southeast-2", "late"),
        ("prod/payments:v3 us-east-1", "untagged"),
        ("prod/payments:v3 eu-west-1", "replicated"),
        ("prod/payments:v3 ap-southeast-2", "missing"),
        ("team/worker:2024.07.01 us-east-1", "replicated"),
        ("team/worker:2024.07.01 eu-west-1", "pending"),
        ("team/scratch:pr-417 us-east-1", "withdrawn"),
        ("team/scratch:pr-417 eu-west-1", "withdrawn"),
        ("team/ml-model us-east-1", "replicated"),
        ("team/ml-model eu-west-1", "pending"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    assert_eq!(statuses(&doc), expected);

    let late = doc["replications"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["status"] == "late")
        .unwrap();
    assert_eq!(late["latency_seconds"], 2190);
    assert_eq!(late["pushed_at"], "2024-07-01T10:05:00Z");
    assert_eq!(late["replicated_at"], "2024-07-01T10:41:30Z");
    let pending = doc["replications"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["status"] == "pending")
        .unwrap();
    assert_eq!(
        (&pending["replicated_at"], &pending["latency_seconds"]),
        (&Value::Null, &Value::Null)
    );

    let unmatched: Vec<&str> = doc["unmatched_replications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["repository"].as_str().unwrap())
        .collect();
    assert_eq!(unmatched, ["team/batch", "team/legacy"]);
    let rejected = &doc["rejected_records"][0];
    assert_eq!(rejected["record"], "events/archive-2024-07-01.jsonl:9");
    assert_eq!(rejected["field"], "detail.image-digest");
    assert_eq!(rejected["event_id"], "4f5ec4d0-8a3b-4f2c-9d1a-0a1b2c3d4e06");
    assert_eq!(
        doc["unconfigured_sources"],
        serde_json::json!([{"account": "111122223333", "region": "eu-central-1", "pushes": 1}])
    );

    let us_east_1 = doc["destinations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["destination_region"] == "us-east-1")
        .unwrap();
    assert_eq!(
        (
            us_east_1["expected"].as_u64(),
            us_east_1["replicated"].as_u64(),
            us_east_1["untagged"].as_u64()
        ),
        (Some(6), Some(4), Some(1))
    );
    assert_eq!(
        us_east_1["latency_seconds"],
        serde_json::json!({"p50": 5, "p90": 32, "p99": 32, "max": 32})
    );
    assert_eq!(
        us_east_1["deletions"],
        serde_json::json!({"expected": 1, "replicated": 1, "late": 0, "missing": 0, "pending": 0})
    );

    // The restore of team/ml-model, judged from the restore, by digest.
    let restored: Vec<(&str, &str, &Value)> = doc["replications"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["trigger"] == "restore")
        .map(|r| {
            (
                r["destination_region"].as_str().unwrap(),
                r["pushed_at"].as_str().unwrap(),
                &r["latency_seconds"],
            )
        })
        .collect();
    assert_eq!(
        restored,
        [
            ("us-east-1", "2024-07-01T10:40:00Z", &serde_json::json!(32)),
            ("eu-west-1", "2024-07-01T10:40:00Z", &Value::Null)
        ]
    );
    assert!(
        doc["replications"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["trigger"] == "restore" || r["trigger"] == "push")
    );

    // prod/payments:v2 deleted under the prod rule's delete replication: us-east-1 reported the
    // same delete 25 s later, ap-southeast-2 never did; eu-west-1's rule does not replicate
    // deletes.
    let deletions = doc["deletions"].as_array().unwrap();
    let mut by_destination: Vec<&Value> = deletions.iter().collect();
    by_destination.sort_by_key(|d| d["destination_region"].as_str().unwrap().to_string());
    assert_eq!(
        by_destination,
        [
            &serde_json::json!({
                "source_account": "111122223333", "source_region": "us-west-2",
                "repository": "prod/payments",
                "image_digest": "sha256:b17f0c2e8d4a6b5c3e9f1a7d2c8b4e6f0a3d5c7e9b1f2a4c6e8d0b3f5a7c9e1d",
                "image_tag": "v2", "destination_account": "111122223333",
                "destination_region": "ap-southeast-2", "deleted_at": "2024-07-01T10:15:00Z",
                "gone_at": null, "latency_seconds": null, "status": "missing"
            }),
            &serde_json::json!({
                "source_account": "111122223333", "source_region": "us-west-2",
                "repository": "prod/payments",
                "image_digest": "sha256:b17f0c2e8d4a6b5c3e9f1a7d2c8b4e6f0a3d5c7e9b1f2a4c6e8d0b3f5a7c9e1d",
                "image_tag": "v2", "destination_account": "111122223333",
                "destination_region": "us-east-1", "deleted_at": "2024-07-01T10:15:00Z",
                "gone_at": "2024-07-01T10:15:25Z", "latency_seconds": 25, "status": "replicated"
            }),
        ]
    );
}

#[test]
fn a_missing_delete_alone_fails_the_audit_and_one_destinations_delete_leaves_the_other_still_missing()
 {
    let run_on = |files: &[&str]| {
        let out = run(&[
            &[
                "replay",
                "--registry",
                CONFIG,
                "--now",
                "2024-07-01T11:00:00Z",
            ],
            files,
        ]
        .concat());
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (code, table) = run_on(&["events/image-delete-replicated.json"]);
    assert_eq!(code, Some(1), "{table}");
    assert!(
        table.contains("Deletes owed under delete replication:"),
        "{table}"
    );
    assert!(table.contains("Problem deletes (2):"), "{table}");
    let (code, table) = run_on(&[
        "events/image-delete-replicated.json",
        "events/image-delete-replicated.us-east-1.json",
    ]);
    assert_eq!(code, Some(1), "ap-southeast-2 is still missing: {table}");
    assert!(table.contains("Problem deletes (1):"), "{table}");
    // The destination's file read first, as an archive kept by Region may be: the same.
    let (code, reversed) = run_on(&[
        "events/image-delete-replicated.us-east-1.json",
        "events/image-delete-replicated.json",
    ]);
    assert_eq!(code, Some(1), "{reversed}");
    assert!(reversed.contains("Problem deletes (1):"), "{reversed}");
}

#[test]
fn the_json_report_has_exactly_the_documented_keys() {
    let (_, doc) = run_json(&["--registry", CONFIG, "events/"]);
    let keys: Vec<&str> = doc
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let mut expected = [
        "window_seconds",
        "now",
        "events",
        "replications",
        "deletions",
        "unmatched_replications",
        "destinations",
        "rejected_records",
        "unconfigured_sources",
    ];
    expected.sort();
    let mut keys = keys;
    keys.sort();
    assert_eq!(keys, expected);
    let record_keys: Vec<&str> = doc["replications"][0]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let mut want = [
        "source_account",
        "source_region",
        "repository",
        "image_digest",
        "image_tag",
        "destination_account",
        "destination_region",
        "pushed_at",
        "replicated_at",
        "latency_seconds",
        "status",
        "trigger",
    ];
    want.sort();
    let mut record_keys = record_keys;
    record_keys.sort();
    assert_eq!(record_keys, want);
}

#[test]
fn a_bare_rules_document_with_registry_id_brings_a_second_source_region_in() {
    let (_, doc) = run_json(&[
        "--registry",
        CONFIG,
        "--registry",
        "eu-central-1=events/registry/eu-central-1.rules.json",
        "--registry-id",
        "111122223333",
        "events/",
    ]);
    assert_eq!(
        statuses(&doc)
            .get("team/batch:v7 us-east-1")
            .map(String::as_str),
        Some("replicated")
    );
    assert_eq!(doc["unconfigured_sources"], serde_json::json!([]));
    assert_eq!(doc["unmatched_replications"].as_array().unwrap().len(), 1);
}

#[test]
fn a_later_audit_time_turns_the_pending_copy_missing() {
    let (_, doc) = run_json(&[
        "--registry",
        CONFIG,
        "--now",
        "2024-07-01T11:20:00.001Z",
        "events/",
    ]);
    assert_eq!(
        statuses(&doc)["team/worker:2024.07.01 eu-west-1"],
        "missing"
    );
    let (_, doc) = run_json(&[
        "--registry",
        CONFIG,
        "--now",
        "2024-07-01T11:20:00Z",
        "events/",
    ]);
    assert_eq!(
        statuses(&doc)["team/worker:2024.07.01 eu-west-1"],
        "pending",
        "exactly one window is still pending"
    );
}

#[test]
fn a_longer_window_forgives_the_late_copy() {
    let (_, doc) = run_json(&["--registry", CONFIG, "--window", "1h", "events/"]);
    assert_eq!(doc["window_seconds"], 3600);
    assert_eq!(statuses(&doc)["prod/web ap-southeast-2"], "replicated");
    assert_eq!(statuses(&doc)["prod/payments:v3 ap-southeast-2"], "pending");
}

#[test]
fn only_replicated_and_pending_copies_exit_0() {
    let out = run(&[
        "replay",
        "--registry",
        CONFIG,
        "events/push-tagged.json",
        "events/replication-success-same-account.json",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.contains("444455556666 eu-west-1"),
        "the cross-account copy is still pending: {stdout}"
    );
}

#[test]
fn standard_input_is_read_when_the_path_is_a_dash() {
    let mut child = Command::new(BIN)
        .args(["replay", "--format", "json", "--registry", CONFIG, "-"])
        .current_dir(root())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let input = std::fs::read(root().join("events/archive-2024-07-01.jsonl")).unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(&input).unwrap();
    let out = child.wait_with_output().unwrap();
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["events"]["read"], 13);
    assert_eq!(doc["rejected_records"][0]["record"], "stdin:9");
}

#[test]
fn an_invalid_configuration_stops_the_run_with_exit_2_naming_file_rule_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("us-west-2.json");
    std::fs::write(
        &bad,
        r#"{"registryId": "111122223333", "replicationConfiguration": {"rules": [
            {"destinations": [{"region": "us-east-1", "registryId": "111122223333"}]},
            {"destinations": [{"region": "us-east-1", "registryId": "111122223333"}],
             "repositoryFilters": [{"filter": "prod", "filterType": "REGEX"}]}]}}"#,
    )
    .unwrap();
    let arg = format!("us-west-2={}", bad.display());
    let out = run(&["replay", "--registry", &arg, "events/"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "{}: rule 1: repositoryFilters[0].filterType",
            bad.display()
        )),
        "{stderr}"
    );
    assert!(out.stdout.is_empty(), "no half report");

    for (args, needle) in [
        (
            vec![
                "replay",
                "--registry",
                "us-west-2=/nonexistent.json",
                "events/",
            ],
            "/nonexistent.json",
        ),
        (
            vec!["replay", "--registry", CONFIG, "no-such-dir/"],
            "no-such-dir",
        ),
        (vec!["replay", "--window", "30x", "events/"], "30x"),
        (
            vec![
                "replay",
                "--registry",
                "events/registry/us-west-2.json",
                "events/",
            ],
            "REGION=FILE",
        ),
        (
            vec![
                "replay",
                "--registry",
                "us-west-2=events/registry/eu-central-1.rules.json",
                "events/",
            ],
            "--registry-id",
        ),
    ] {
        // The JSON report is opened before the first record is read: not before these checks.
        for format in ["table", "json"] {
            let args = [args.as_slice(), &["--format", format]].concat();
            let out = run(&args);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
            assert!(stderr.contains(needle), "{args:?}: {stderr}");
            assert!(out.stdout.is_empty(), "{args:?}: no half report");
        }
    }
}

#[test]
fn the_readme_shows_the_real_output_of_its_first_command() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let command = "cargo run --release --bin ecr-replication-auditor -- replay --registry us-west-2=events/registry/us-west-2.json events/";
    assert!(
        readme.contains(command),
        "README's first command changed; update this test"
    );
    let start = readme
        .find("<!-- replay-output:start -->")
        .expect("README marks the output block");
    let end = readme
        .find("<!-- replay-output:end -->")
        .expect("README marks the output block");
    let block = &readme[start..end];
    let shown = block
        .split("```text\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .expect("a text fence");
    let out = run(&["replay", "--registry", CONFIG, "events/"]);
    assert_eq!(
        shown,
        String::from_utf8_lossy(&out.stdout),
        "README output is stale: paste the new output"
    );
}

/// Runs `replay --format json` over `lines` given on standard input.
fn run_stdin_json(args: &[&str], lines: &[Value]) -> (i32, Value) {
    let mut child = Command::new(BIN)
        .args(
            [
                &["replay", "--format", "json", "--registry", CONFIG],
                args,
                &["-"],
            ]
            .concat(),
        )
        .current_dir(root())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let input: String = lines.iter().map(|l| format!("{l}\n")).collect();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let doc = serde_json::from_slice(&out.stdout).expect("a JSON report");
    (out.status.code().expect("exit code"), doc)
}

#[test]
fn a_copy_later_than_the_horizon_matches_no_push_and_its_push_is_missing() {
    let digest = "sha256:e7d9d87ccf2576cf169a255ed9583f2b429a7dfaeab52a3ae965ddd5756a0a20";
    let push = |id: &str, time: &str, repository: &str| {
        serde_json::json!({"version": "0", "id": id, "detail-type": "ECR Image Action",
            "source": "aws.ecr", "account": "111122223333", "time": time, "region": "us-west-2",
            "resources": [], "detail": {"result": "SUCCESS", "repository-name": repository,
            "image-digest": digest, "action-type": "PUSH", "image-tag": "v3"}})
    };
    let copy = serde_json::json!({"version": "0", "id": "copy-1",
        "detail-type": "ECR Replication Action", "source": "aws.ecr", "account": "111122223333",
        "time": "2024-07-01T12:10:05Z", "region": "us-east-1", "resources": [],
        "detail": {"result": "SUCCESS", "repository-name": "team/api", "image-digest": digest,
        "source-account": "111122223333", "action-type": "REPLICATE", "source-region": "us-west-2",
        "image-tag": "v3"}});
    // team/api's push at 10:00 replicates to us-east-1 and eu-west-1; other images pushed until
    // 12:00 move the stream two hours on (in steps shorter than the horizon: a record more than
    // a horizon ahead of the stream is refused); then the 10:00 push's us-east-1 copy arrives.
    let lines = [
        push("push-1", "2024-07-01T10:00:00Z", "team/api"),
        push("push-2", "2024-07-01T10:50:00Z", "team/other-1"),
        push("push-3", "2024-07-01T11:40:00Z", "team/other-2"),
        push("push-4", "2024-07-01T12:00:00Z", "team/other-3"),
        copy,
    ];
    let api_us_east_1 = |doc: &Value| -> Vec<String> {
        doc["replications"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["repository"] == "team/api" && r["destination_region"] == "us-east-1")
            .map(|r| r["status"].as_str().unwrap().to_string())
            .collect()
    };

    // Within the default horizon (24 hours) the copy is two hours late.
    let (code, doc) = run_stdin_json(&[], &lines);
    assert_eq!(code, 1);
    assert_eq!(api_us_east_1(&doc), ["late"]);
    assert_eq!(doc["unmatched_replications"], serde_json::json!([]));

    // With a one-hour horizon the push was concluded (missing) before its copy came.
    let (code, doc) = run_stdin_json(&["--horizon", "1h"], &lines);
    assert_eq!(code, 1);
    assert_eq!(api_us_east_1(&doc), ["missing"]);
    let unmatched = doc["unmatched_replications"].as_array().unwrap();
    assert_eq!(unmatched.len(), 1);
    assert_eq!(unmatched[0]["event_id"], "copy-1");
    assert_eq!(doc["events"]["replication"], 1);
}

#[test]
fn a_horizon_no_longer_than_the_window_is_refused_with_exit_2() {
    let out = run(&[
        "replay",
        "--registry",
        CONFIG,
        "--horizon",
        "30m",
        "events/",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        format!("{stdout}{stderr}").contains("--horizon (30m) must be longer than --window (30m)"),
        "{stdout}{stderr}"
    );
}

#[test]
fn the_table_lists_at_most_list_limit_of_each_and_the_json_report_lists_all() {
    let out = run(&[
        "replay",
        "--registry",
        CONFIG,
        "--list-limit",
        "1",
        "events/",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(
        table
            .contains("Problem copies (4; the 1 worst listed, --format json has all):\n  missing "),
        "{table}"
    );
    assert!(
        table.contains("Copies that match no push (2; the 1 earliest listed, --format json has all):\n  SUCCESS   team/batch:v7 "),
        "{table}"
    );
    // One rejected record: all of it is listed, with the plain heading.
    assert!(table.contains("Rejected records (1):\n"), "{table}");
    let problem_lines = table
        .lines()
        .filter(|l| {
            ["  missing ", "  failed ", "  untagged ", "  late "]
                .iter()
                .any(|s| l.starts_with(s))
        })
        .count();
    assert_eq!(
        problem_lines, 2,
        "the worst problem copy, and the one problem delete"
    );
    assert!(
        table.contains("Problem deletes (1):\n  missing "),
        "{table}"
    );

    let (code, doc) = run_json(&["--registry", CONFIG, "--list-limit", "0", "events/"]);
    assert_eq!(code, 1);
    assert_eq!(doc["replications"].as_array().unwrap().len(), 14);
    assert_eq!(doc["deletions"].as_array().unwrap().len(), 2);
    assert_eq!(doc["unmatched_replications"].as_array().unwrap().len(), 2);
    assert_eq!(doc["rejected_records"].as_array().unwrap().len(), 1);
}

#[test]
fn a_late_delete_alone_makes_the_audit_fail_and_the_same_delete_within_the_window_passes() {
    let digest = "sha256:b17f0c2e8d4a6b5c3e9f1a7d2c8b4e6f0a3d5c7e9b1f2a4c6e8d0b3f5a7c9e1d";
    // prod/payments:v2 deleted in us-west-2 under the prod rule's delete replication: owed in
    // us-east-1 and ap-southeast-2 (eu-west-1's rule does not replicate deletes).
    let delete = |id: &str, time: &str, region: &str| {
        serde_json::json!({"version": "0", "id": id, "detail-type": "ECR Image Action",
            "source": "aws.ecr", "account": "111122223333", "time": time, "region": region,
            "resources": [], "detail": {"result": "SUCCESS", "repository-name": "prod/payments",
            "image-digest": digest, "action-type": "DELETE", "image-tag": "v2"}})
    };
    let run_with = |ap_southeast_2_at: &str| {
        run_stdin_json(
            &["--now", "2024-07-01T11:00:00Z"],
            &[
                delete("del-source", "2024-07-01T10:15:00Z", "us-west-2"),
                delete("del-us-east-1", "2024-07-01T10:15:25Z", "us-east-1"),
                delete("del-ap-southeast-2", ap_southeast_2_at, "ap-southeast-2"),
            ],
        )
    };
    let deletes = |doc: &Value| -> Vec<(String, String, Value)> {
        let mut d: Vec<_> = doc["deletions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| {
                (
                    text_of(d, "destination_region"),
                    text_of(d, "status"),
                    d["latency_seconds"].clone(),
                )
            })
            .collect();
        d.sort_by(|a, b| a.0.cmp(&b.0));
        d
    };

    // ap-southeast-2 deletes 35 minutes after the source, with a 30-minute window.
    let (code, doc) = run_with("2024-07-01T10:50:00Z");
    assert_eq!(code, 1, "{doc}");
    assert_eq!(
        deletes(&doc),
        [
            (
                "ap-southeast-2".into(),
                "late".into(),
                serde_json::json!(2100)
            ),
            (
                "us-east-1".into(),
                "replicated".into(),
                serde_json::json!(25)
            ),
        ]
    );
    // Nothing else to fail on: no copy was owed, none is unmatched or rejected.
    assert_eq!(doc["replications"], serde_json::json!([]));
    assert_eq!(doc["unmatched_replications"], serde_json::json!([]));
    assert_eq!(doc["rejected_records"], serde_json::json!([]));
    assert_eq!(doc["events"]["delete"], 3);

    // The same delete 25 minutes after the source: in time, and the audit passes.
    let (code, doc) = run_with("2024-07-01T10:40:00Z");
    assert_eq!(code, 0, "{doc}");
    assert_eq!(
        deletes(&doc),
        [
            (
                "ap-southeast-2".into(),
                "replicated".into(),
                serde_json::json!(1500)
            ),
            (
                "us-east-1".into(),
                "replicated".into(),
                serde_json::json!(25)
            ),
        ]
    );
}

fn text_of(v: &Value, key: &str) -> String {
    v[key]
        .as_str()
        .unwrap_or_else(|| panic!("{key} is not a string in {v}"))
        .to_owned()
}

/// A child process killed (and waited for) when dropped: a failed assertion leaves none behind.
/// Also killed after two minutes (its id, until it has been waited for): a replay that hangs
/// fails the test wherever the test waits for it.
struct Reaped(
    std::process::Child,
    std::sync::Arc<std::sync::atomic::AtomicBool>,
);

impl Reaped {
    fn spawn(command: &mut Command) -> Reaped {
        use std::sync::atomic::{AtomicBool, Ordering};
        let child = command.spawn().unwrap();
        let (pid, reaped) = (child.id(), std::sync::Arc::new(AtomicBool::new(false)));
        let watched = reaped.clone();
        std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_secs(120));
            if !watched.load(Ordering::Acquire) {
                let _ = Command::new("kill").arg(pid.to_string()).status();
            }
        });
        Reaped(child, reaped)
    }

    fn wait(&mut self) -> std::process::ExitStatus {
        let status = self.0.wait().unwrap();
        self.1.store(true, std::sync::atomic::Ordering::Release);
        status
    }
}

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        self.1.store(true, std::sync::atomic::Ordering::Release);
    }
}

/// The `i`th of an endless stream: a push of `team/api` a second after the last, and its copies
/// to both destinations five seconds later.
fn endless(i: u64) -> String {
    let at = |s: u64| {
        let t = time::OffsetDateTime::from_unix_timestamp(1_719_792_000 + s as i64).unwrap();
        t.format(&time::format_description::well_known::Rfc3339)
            .unwrap()
    };
    let detail = |action: &str| {
        format!(
            r#""detail":{{"result":"SUCCESS","repository-name":"team/api","image-digest":"sha256:{i:064x}","action-type":"{action}","image-tag":"v{i}"{}}}"#,
            if action == "REPLICATE" {
                r#","source-account":"111122223333","source-region":"us-west-2""#
            } else {
                ""
            }
        )
    };
    let mut lines = format!(
        r#"{{"version":"0","id":"p{i}","detail-type":"ECR Image Action","source":"aws.ecr","account":"111122223333","time":"{}","region":"us-west-2","resources":[],{}}}"#,
        at(i),
        detail("PUSH")
    ) + "\n";
    for (region, account) in [("us-east-1", "111122223333"), ("eu-west-1", "444455556666")] {
        lines += &format!(
            r#"{{"version":"0","id":"c{i}-{region}","detail-type":"ECR Replication Action","source":"aws.ecr","account":"{account}","time":"{}","region":"{region}","resources":[],{}}}"#,
            at(i + 5),
            detail("REPLICATE")
        );
        lines += "\n";
    }
    lines
}

/// `replay --format json` writes verdicts into the report as it reaches them. Once the report
/// cannot be written (the reader of a pipe went away, the disk is full), it stops reading and
/// says why, rather than auditing the rest of a month of events for nothing. Its input here,
/// standard input or a named pipe as a file, never ends: the run must end by itself.
#[test]
fn a_json_report_that_cannot_be_written_stops_the_run_before_the_end_of_its_input() {
    use std::io::{Read, Write};
    for via_file in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("events.jsonl");
        let mut replay = Command::new(BIN);
        replay
            .args(["replay", "--registry", CONFIG, "--format", "json"])
            .current_dir(root())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if via_file {
            let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
            assert!(made.success(), "mkfifo {}", fifo.display());
            replay.arg(&fifo).stdin(Stdio::null());
        } else {
            replay.arg("-").stdin(Stdio::piped());
        }
        let mut child = Reaped::spawn(&mut replay);
        let stdin = child.0.stdin.take();
        let feeder = std::thread::spawn(move || {
            // Opening a named pipe for writing waits for its reader.
            let mut input: Box<dyn Write> = match stdin {
                Some(stdin) => Box::new(stdin),
                None => Box::new(std::fs::File::create(&fifo).unwrap()),
            };
            let mut i = 0;
            // Until the replay is gone.
            while input.write_all(endless(i).as_bytes()).is_ok() {
                i += 1;
            }
            i
        });
        let mut report = child.0.stdout.take().unwrap();
        let mut head = vec![0; 64 * 1024];
        let read = report.read_exact(&mut head);
        drop(report);
        // Until it exits by itself, or is killed after two minutes.
        let status = child.wait();
        let mut stderr = String::new();
        child
            .0
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut stderr)
            .unwrap();
        assert!(read.is_ok(), "via a file: {via_file}: {read:?}: {stderr}");
        assert!(
            head.starts_with(b"{\n  \"window_seconds\": 1800,\n  \"replications\": ["),
            "via a file: {via_file}"
        );
        assert!(
            status.code().is_some(),
            "via a file: {via_file}: the replay read on after its report was closed, and was killed"
        );
        assert_eq!(status.code(), Some(2), "via a file: {via_file}: {stderr}");
        assert!(
            stderr.contains("cannot write the report: Broken pipe"),
            "via a file: {via_file}: {stderr}"
        );
        let fed = feeder.join().unwrap();
        assert!(fed > 2_000, "a window's pushes at least were read: {fed}");
    }
}
