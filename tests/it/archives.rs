//! `replay` on the files exporters leave, end to end through the binary: the sample events of
//! `events/` gzipped, concatenated as Firehose writes them, exported by `aws logs
//! filter-log-events` and by a CloudWatch Logs export task, each recognised without a flag and
//! giving the report of `replay events/`; and a damaged gzip member that costs only its own
//! records.

use std::io::Write;
use std::path::Path;

use flate2::Compression;
use flate2::write::GzEncoder;
use serde_json::{Value, json};

use crate::support::cli::{CONFIG, event_files, records, run, statuses};

/// Every sample record, in the order `replay events/` reads them.
fn samples() -> Vec<Value> {
    event_files().iter().flat_map(|p| records(p)).collect()
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

/// The JSON report of `replay` over `paths`, and the exit status.
fn report(paths: &[&Path]) -> (i32, Value) {
    let mut args = vec!["replay", "--format", "json", "--registry", CONFIG];
    let paths: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    args.extend(paths.iter().map(String::as_str));
    let out = run(&args);
    let doc = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not a JSON report ({e}); stderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().expect("exit code"), doc)
}

/// The report with where each rejected record was found blanked out: the one thing that
/// depends on the file's shape.
fn without_locations(mut doc: Value) -> Value {
    for rejected in doc["rejected_records"].as_array_mut().unwrap() {
        rejected["record"] = Value::Null;
    }
    doc
}

/// The report of `replay events/`, which every shape below must give.
fn expected() -> Value {
    let (code, doc) = report(&[Path::new("events/")]);
    assert_eq!(code, 1);
    without_locations(doc)
}

fn compact(records: &[Value]) -> Vec<String> {
    records.iter().map(Value::to_string).collect()
}

#[test]
fn gzipped_sample_files_in_a_directory_give_the_report_of_the_plain_ones() {
    let dir = tempfile::tempdir().unwrap();
    for path in event_files() {
        let name = format!("{}.gz", path.file_name().unwrap().to_string_lossy());
        std::fs::write(dir.path().join(name), gzip(&std::fs::read(&path).unwrap())).unwrap();
    }
    let (code, doc) = report(&[dir.path()]);
    assert_eq!(code, 1);
    let rejected = doc["rejected_records"][0]["record"].as_str().unwrap();
    assert!(
        rejected.ends_with("archive-2024-07-01.jsonl.gz:9"),
        "{rejected}"
    );
    assert_eq!(without_locations(doc), expected());
}

#[test]
fn objects_concatenated_without_separators_in_a_gzip_file_with_no_extension_give_the_same_report() {
    // What Firehose writes to S3 by default: records one after the other, nothing between
    // them; compressed with GZIP, under a name of its own.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ecr-events-1-2024-07-01-10-00-00-8f0c2d5e");
    std::fs::write(&path, gzip(compact(&samples()).concat().as_bytes())).unwrap();
    let (code, doc) = report(&[&path]);
    assert_eq!(code, 1);
    let rejected = doc["rejected_records"][0]["record"].as_str().unwrap();
    assert!(
        rejected.contains(":1:"),
        "located by line and column: {rejected}"
    );
    assert_eq!(without_locations(doc), expected());
}

#[test]
fn the_json_aws_logs_filter_log_events_prints_gives_the_same_report() {
    // Pretty-printed with four spaces, as the AWS CLI prints it; each message is an event.
    let events: Vec<Value> = samples()
        .iter()
        .enumerate()
        .map(|(i, record)| {
            json!({
                "logStreamName": format!("stream-{}", i % 3),
                "timestamp": 1_719_828_000_000_u64 + i as u64,
                "message": record.to_string(),
                "ingestionTime": 1_719_828_001_000_u64 + i as u64,
                "eventId": format!("{i:056}"),
            })
        })
        .collect();
    let document = json!({"events": events, "searchedLogStreams": []});
    let mut text = Vec::new();
    let formatter = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    let mut serializer = serde_json::Serializer::with_formatter(&mut text, formatter);
    serde::Serialize::serialize(&document, &mut serializer).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("filter-log-events.json");
    std::fs::write(&path, text).unwrap();
    let (code, doc) = report(&[&path]);
    assert_eq!(code, 1);
    let rejected = doc["rejected_records"][0]["record"].as_str().unwrap();
    assert!(
        rejected.ends_with("filter-log-events.json[8]"),
        "the 9th log event: {rejected}"
    );
    assert_eq!(without_locations(doc), expected());
}

#[test]
fn timestamp_message_lines_of_a_logs_export_task_give_the_same_report() {
    // An export task's 000000.gz: each line the log event's timestamp, a space, its message.
    let lines: String = samples()
        .iter()
        .map(|record| format!("{} {record}\n", record["time"].as_str().unwrap()))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("000000.gz");
    std::fs::write(&path, gzip(lines.as_bytes())).unwrap();
    let (code, doc) = report(&[&path]);
    assert_eq!(code, 1);
    assert!(
        doc["rejected_records"][0]["record"]
            .as_str()
            .unwrap()
            .ends_with("000000.gz:9")
    );
    assert_eq!(without_locations(doc), expected());
}

#[test]
fn a_damaged_gzip_member_is_one_rejected_record_and_the_run_goes_on_with_the_next_member() {
    let lines = compact(&samples());
    let (first, rest) = lines.split_at(8);
    // A member whose deflate data is damaged from its first block: the header (10 bytes, as
    // flate2 writes it) is followed by a block of the reserved type 3, which no decoder takes.
    let mut damaged = gzip(
        rest[..4]
            .iter()
            .map(|l| format!("{l}\n"))
            .collect::<String>()
            .as_bytes(),
    );
    damaged[10] = 0b111;
    let member = |lines: &[String]| {
        gzip(
            lines
                .iter()
                .map(|l| format!("{l}\n"))
                .collect::<String>()
                .as_bytes(),
        )
    };
    let bytes = [member(first), damaged, member(&rest[4..])].concat();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.jsonl.gz");
    std::fs::write(&path, bytes).unwrap();
    let other = dir.path().join("after.json");
    std::fs::write(&other, &lines[0]).unwrap();

    let (code, doc) = report(&[&path, &other]);
    assert_eq!(code, 1, "a damaged member is not an unreadable input (2)");
    let damage: Vec<&Value> = doc["rejected_records"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| {
            r["reason"]
                .as_str()
                .unwrap_or_default()
                .contains("gzip member 2")
        })
        .collect();
    assert_eq!(damage.len(), 1, "{:#}", doc["rejected_records"]);
    assert!(
        damage[0]["record"]
            .as_str()
            .unwrap()
            .ends_with("events.jsonl.gz:9"),
        "where the damage starts, after the first member's eight lines: {damage:?}"
    );
    // Every record of the two good members, the damaged member as one record, and the file
    // after it are read. The sample that lacks a field was the damaged member's first: lost
    // with it, so the damage is the only rejected record.
    assert_eq!(
        doc["events"]["read"].as_u64(),
        Some((first.len() + 1 + rest.len() - 4 + 1) as u64),
        "{:#}",
        doc["rejected_records"]
    );
    assert_eq!(doc["events"]["rejected"], 1);
    // The file after the damaged one was read: it repeats the first record, a duplicate.
    assert!(doc["events"]["duplicate"].as_u64().unwrap() >= 1);
    assert!(!statuses(&doc).is_empty());
}
