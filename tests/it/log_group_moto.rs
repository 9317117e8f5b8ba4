//! `replay --log-group` against moto's CloudWatch Logs: the sample events of `events/` written
//! to a log group with PutLogEvents (on two streams, as an EventBridge rule's target would
//! hold them), read back with FilterLogEvents over several pages, give the report `replay`
//! gives for the same events in a file.
//!
//! CloudWatch Logs (and moto) refuse log events older than 14 days, so the samples are moved
//! to two days ago, whole days, every `time` by the same amount: the report is the samples'
//! report moved by that much.

use std::io;
use std::path::PathBuf;
use std::process::{Command, Output};

use aws_sdk_cloudwatchlogs::types::InputLogEvent;
use ecr_replication_auditor::adapters::cloudwatch_logs::LogGroupEventLog;
use ecr_replication_auditor::domain::ids::Region;
use ecr_replication_auditor::domain::report::DEFAULT_LIST_LIMIT;
use ecr_replication_auditor::domain::time::{Timestamp, Window};
use ecr_replication_auditor::output::Format;
use ecr_replication_auditor::replay::log_group::LogGroupQuery;
use ecr_replication_auditor::replay::{self, RegistryFile, ReplayOptions};
use serde_json::Value;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::support::cli::{BIN, CONFIG, assert_exit, event_files, records, root};
use crate::support::moto::{self, MotoServer};

const GROUP: &str = "/aws/events/ecr-replication-auditor-ecr-events";

/// The samples, in the order `replay events/` reads them, each `time` moved to two days ago
/// (the samples' day, 2024-07-01, becomes that day).
fn recent_samples() -> Vec<Value> {
    let sample_day = OffsetDateTime::parse("2024-07-01T00:00:00Z", &Rfc3339).unwrap();
    let today = OffsetDateTime::now_utc().replace_time(time::Time::MIDNIGHT);
    let shift = (today - time::Duration::days(2)) - sample_day;
    event_files()
        .iter()
        .flat_map(|p| records(p))
        .map(|mut record| {
            let at = OffsetDateTime::parse(record["time"].as_str().unwrap(), &Rfc3339).unwrap();
            record["time"] = Value::from((at + shift).format(&Rfc3339).unwrap());
            record
        })
        .collect()
}

fn time_of(record: &Value) -> Timestamp {
    Timestamp::parse_rfc3339(record["time"].as_str().unwrap()).unwrap()
}

/// The period that holds every sample: from the day's start to the next day's.
fn period(records: &[Value]) -> (Timestamp, Timestamp) {
    let first = records.iter().map(time_of).min().unwrap();
    let since = Timestamp::from_millis(first.millis() - first.millis() % 86_400_000);
    (since, Timestamp::from_millis(since.millis() + 86_400_000))
}

/// The log group, with the image actions on one stream and everything else on another, each
/// stream's events put in time order (PutLogEvents requires it), the timestamp the event's.
async fn write_log_group(server: &MotoServer, records: &[Value]) {
    let logs = aws_sdk_cloudwatchlogs::Client::new(&server.sdk_config().await);
    logs.create_log_group()
        .log_group_name(GROUP)
        .send()
        .await
        .unwrap();
    for stream in ["image-actions", "other"] {
        logs.create_log_stream()
            .log_group_name(GROUP)
            .log_stream_name(stream)
            .send()
            .await
            .unwrap();
        let mut mine: Vec<&Value> = records
            .iter()
            .filter(|r| (r["detail-type"] == "ECR Image Action") == (stream == "image-actions"))
            .collect();
        mine.sort_by_key(|r| time_of(r));
        let events = mine
            .iter()
            .map(|r| {
                InputLogEvent::builder()
                    .timestamp(time_of(r).millis())
                    .message(r.to_string())
                    .build()
                    .unwrap()
            })
            .collect();
        let put = logs
            .put_log_events()
            .log_group_name(GROUP)
            .log_stream_name(stream)
            .set_log_events(Some(events))
            .send()
            .await
            .unwrap();
        assert!(
            put.rejected_log_events_info().is_none(),
            "every event accepted: {put:?}"
        );
    }
}

fn options(inputs: Vec<PathBuf>) -> ReplayOptions {
    ReplayOptions {
        registries: vec![RegistryFile {
            region: Region::parse("us-west-2").unwrap(),
            path: root().join("events/registry/us-west-2.json"),
        }],
        registry_id: None,
        window: Window::parse("30m").unwrap(),
        now: None,
        format: Format::Json,
        inputs,
        horizon: None,
        list_limit: DEFAULT_LIST_LIMIT,
        chart: None,
    }
}

/// The JSON report in a form that does not depend on the order the events were read in (a log
/// group returns them by time, the files by name and line) nor on where a rejected record was.
fn comparable(report: &[u8]) -> Value {
    let mut doc: Value = serde_json::from_slice(report).unwrap();
    let key = |v: &Value| v.to_string();
    for list in ["replications", "unmatched_replications", "rejected_records"] {
        let items = doc[list].as_array_mut().unwrap();
        for item in items.iter_mut() {
            if let Some(record) = item.get_mut("record") {
                *record = Value::Null;
            }
        }
        items.sort_by_key(key);
    }
    doc
}

#[test]
fn a_log_group_read_over_several_pages_gives_the_report_of_the_same_events_in_a_file() {
    let server = MotoServer::start();
    let records = recent_samples();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(write_log_group(&server, &records));
    // A configuration of its own for the read, which runs on replay's reading thread.
    let sdk = runtime.block_on(server.sdk_config());
    drop(runtime);
    let log =
        LogGroupEventLog::new(aws_sdk_cloudwatchlogs::Client::new(&sdk), GROUP).with_page_limit(4);
    let (since, until) = period(&records);
    let query = LogGroupQuery {
        group: GROUP.into(),
        since,
        until,
    };
    let (mut from_log, mut progress) = (Vec::new(), Vec::new());
    let report = replay::run_log_group(
        &options(vec![]),
        &log,
        &query,
        &mut from_log,
        &mut io::sink(),
        &mut progress,
    )
    .expect("the log group is read");
    assert!(report.has_problems());
    let progress = String::from_utf8(progress).unwrap();
    assert!(
        progress.contains(&format!("log group {GROUP}: 25 events in 7 pages")),
        "25 events, 4 a page: {progress}"
    );

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("events.jsonl");
    let lines: String = records.iter().map(|r| format!("{r}\n")).collect();
    std::fs::write(&file, lines).unwrap();
    let mut from_file = Vec::new();
    replay::run(
        &options(vec![file]),
        &mut io::empty(),
        &mut from_file,
        &mut io::sink(),
    )
    .unwrap();

    let (log_doc, file_doc) = (comparable(&from_log), comparable(&from_file));
    assert_eq!(log_doc["events"]["read"], 25);
    assert_eq!(log_doc, file_doc);
}

/// `ecr-replication-auditor replay --log-group ...` against `server`, configured by the standard
/// SDK variables on the child only.
fn replay_log_group(server: &MotoServer, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(["replay", "--registry", CONFIG, "--log-group", GROUP])
        .args(args)
        .current_dir(root())
        .env("AWS_ENDPOINT_URL", server.endpoint())
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

#[test]
fn the_command_reads_the_log_group_prints_the_table_and_exits_1_for_the_samples_problems() {
    let server = MotoServer::start();
    let records = recent_samples();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(write_log_group(&server, &records));
    drop(runtime);
    let (since, until) = period(&records);
    let (since, until) = (since.to_string(), until.to_string());

    let out = replay_log_group(&server, &["--since", &since, "--until", &until]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(
        stdout.contains(
            "events: 25 read, 6 push, 1 restore, 11 replication, 3 delete, 2 ignored, 1 rejected, 1 duplicate"
        ),
        "{stdout}"
    );
    assert!(
        stderr.contains(&format!("log group {GROUP}: 25 events in 1 pages")),
        "{stderr}"
    );
    // The rejected record is located by log group, stream and time.
    assert!(
        stdout.contains(&format!("log group {GROUP} stream image-actions at ")),
        "{stdout}"
    );

    // A period the events are not in reads nothing: no problems.
    let out = replay_log_group(&server, &["--since", "2020-01-01", "--until", "2020-01-02"]);
    assert_exit(&out, 0);
}

#[test]
fn a_log_group_that_cannot_be_read_stops_the_run_with_exit_2_naming_it() {
    let server = MotoServer::start();
    let out = replay_log_group(&server, &["--since", "2024-07-01", "--until", "2024-07-02"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "log group {GROUP}: the event log refused the request"
        )) && stderr.contains("ResourceNotFoundException"),
        "{stderr}"
    );
}

#[test]
fn log_group_options_are_checked_before_anything_is_read() {
    let out = crate::support::cli::run(&["replay", "--log-group", GROUP, "--since", "2024-07-01"]);
    assert_eq!(out.status.code(), Some(2), "--until is required");
    let out = crate::support::cli::run(&[
        "replay",
        "--log-group",
        GROUP,
        "--since",
        "2024-07-02",
        "--until",
        "2024-07-01",
        "--registry",
        CONFIG,
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("--until (2024-07-01T00:00:00Z) must be later than --since")
    );
    let out = crate::support::cli::run(&[
        "replay",
        "--log-group",
        GROUP,
        "--since",
        "2024-07-01",
        "--until",
        "2024-07-02",
        "events/",
    ]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "files and a log group together are refused"
    );
}
