//! Hostile input never crashes the auditor and never poisons the events around it.
//!
//! The same records go through `replay` (as lines of a file) and through the Lambda's handler
//! (as one batch): non-JSON, JSON that is not an object, every field of a push and of a copy
//! missing or of the wrong type, a 1 MiB string, deep nesting, control characters and invalid
//! UTF-8 escapes, names that break ECR's pattern, times that do not parse, unknown kinds. Each
//! bad record is rejected with a reason naming its field and counted; the good records between
//! them get their verdicts; the handler's logs stay one valid JSON object per line.

use std::io::Write;

use ecr_replication_auditor::adapters::fake::FakeRegistry;
use ecr_replication_auditor::adapters::memory::MemoryStateStore;
use ecr_replication_auditor::app::handler::{AuditSettings, Auditor};
use ecr_replication_auditor::domain::metrics::MetricName;
use ecr_replication_auditor::domain::report::DEFAULT_LIST_LIMIT;
use ecr_replication_auditor::domain::time::Window;
use ecr_replication_auditor::output::Format;
use ecr_replication_auditor::replay::{self, RegistryFile, ReplayOptions};
use serde_json::{Value, json};

use crate::support::events::sample;
use crate::support::ids::{self, region, time};
use crate::support::logs;
use crate::support::metrics::RecordingSink;

/// Sets `path` (dot-separated, into `detail.` too) to `value`, or removes it when `None`.
fn with(mut event: Value, path: &str, value: Option<Value>) -> Value {
    let (parent, key) = match path.split_once('.') {
        Some((p, k)) => (&mut event[p], k),
        None => (&mut event, path),
    };
    let obj = parent.as_object_mut().unwrap();
    match value {
        Some(v) => obj.insert(key.to_string(), v),
        None => obj.remove(key),
    };
    event
}

/// One bad record: the line as written, and the field its rejection must name.
pub(crate) struct Bad {
    pub(crate) line: String,
    field: &'static str,
}

/// Every bad record, with a fresh event id each so none is a duplicate of another.
pub(crate) fn bad_records() -> Vec<Bad> {
    let push = sample("push-tagged.json");
    let copy = sample("replication-success-cross-account.json");
    let mut n = 0;
    let mut fresh = |e: Value| {
        n += 1;
        with(e, "id", Some(json!(format!("bad-{n}"))))
    };
    let mut bad = Vec::new();
    let mut add = |e: Value, field: &'static str| {
        bad.push(Bad {
            line: e.to_string(),
            field,
        })
    };

    let push_fields = [
        "time",
        "account",
        "region",
        "detail.repository-name",
        "detail.image-digest",
        "detail.action-type",
        "detail.result",
    ];
    let copy_fields = [
        "time",
        "account",
        "region",
        "detail.repository-name",
        "detail.image-digest",
        "detail.source-account",
        "detail.source-region",
        "detail.action-type",
        "detail.result",
    ];
    for (event, fields) in [(&push, &push_fields[..]), (&copy, &copy_fields[..])] {
        for &field in fields {
            add(fresh(with(event.clone(), field, None)), field);
            for wrong in [json!(12), json!(true), json!(["x"]), json!({"x": 1})] {
                add(fresh(with(event.clone(), field, Some(wrong))), field);
            }
        }
        add(
            fresh(with(event.clone(), "detail.image-tag", Some(json!(7)))),
            "detail.image-tag",
        );
        add(
            fresh(with(event.clone(), "detail", Some(json!("{}")))),
            "detail",
        );
    }
    // Values of the right type that break the patterns.
    let huge = "a".repeat(1 << 20);
    for (field, value) in [
        ("detail.repository-name", json!(huge)),
        ("detail.repository-name", json!("Team/App")),
        ("detail.repository-name", json!("team/\u{7}app")),
        (
            "detail.repository-name",
            json!("team/app\n{\"level\":\"ERROR\",\"message\":\"forged\"}"),
        ),
        ("detail.image-tag", json!("v1\u{0}")),
        ("detail.image-tag", json!("t".repeat(301))),
        (
            "detail.image-digest",
            json!(format!("sha256:{}", "f".repeat(1 << 20))),
        ),
        ("time", json!("2024-07-01T25:00:00Z")),
        ("time", json!("1719828000")),
        ("time", json!("")),
        ("account", json!("11112222333")),
        ("region", json!("us_west_2")),
    ] {
        add(fresh(with(push.clone(), field, Some(value))), field);
    }
    add(
        fresh(with(
            copy.clone(),
            "detail.source-account",
            Some(json!("not-an-account")),
        )),
        "detail.source-account",
    );
    add(with(push.clone(), "id", Some(json!(42))), "id");
    add(with(push.clone(), "id", None), "id");
    add(fresh(with(push.clone(), "source", None)), "source");

    // Records that are not even events.
    for line in ["[1, 2, 3]", "\"just a string\"", "42", "null", "true"] {
        bad.push(Bad {
            line: line.to_string(),
            field: "(record)",
        });
    }
    bad
}

/// Lines that are not JSON at all (replay reads them; the Lambda never gets such a payload).
pub(crate) fn unreadable_lines() -> Vec<String> {
    vec![
        "not json at all".into(),
        "{\"id\": \"x\", ".into(),
        format!("{}{}", "[".repeat(100_000), "]".repeat(100_000)),
        r#"{"id": "lone-surrogate", "source": "aws.ecr", "detail-type": "\ud800"}"#.into(),
    ]
}

/// Good events, spread between the bad ones: a push and its two copies, all on time.
fn good_records() -> Vec<Value> {
    vec![
        sample("push-tagged.json"),
        sample("replication-success-same-account.json"),
        sample("replication-success-cross-account.json"),
    ]
}

fn interleave(good: &[Value], bad: &[String]) -> Vec<String> {
    let mut lines = Vec::new();
    let step = bad.len() / good.len() + 1;
    let mut good = good.iter();
    for (i, b) in bad.iter().enumerate() {
        if i % step == 0
            && let Some(g) = good.next()
        {
            lines.push(g.to_string());
        }
        lines.push(b.clone());
    }
    lines.extend(good.map(Value::to_string));
    lines
}

#[test]
fn replay_rejects_every_hostile_record_naming_its_field_and_audits_the_good_ones() {
    let bad = bad_records();
    let unreadable = unreadable_lines();
    let bad_lines: Vec<String> = bad
        .iter()
        .map(|b| b.line.clone())
        .chain(unreadable.iter().cloned())
        .collect();
    let lines = interleave(&good_records(), &bad_lines);
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("hostile.jsonl");
    let mut f = std::fs::File::create(&input).unwrap();
    for l in &lines {
        writeln!(f, "{l}").unwrap();
    }
    // Raw bytes that are not UTF-8 at all, on a line of their own.
    f.write_all(b"{\"id\": \"\xff\xfe\"}\n").unwrap();
    drop(f);

    let options = ReplayOptions {
        registries: vec![RegistryFile {
            region: region("us-west-2"),
            path: format!(
                "{}/events/registry/us-west-2.json",
                env!("CARGO_MANIFEST_DIR")
            )
            .into(),
        }],
        registry_id: None,
        window: Window::DEFAULT,
        now: None,
        format: Format::Json,
        inputs: vec![input],
        horizon: None,
        list_limit: DEFAULT_LIST_LIMIT,
        chart: None,
    };
    let mut out = Vec::new();
    let report = replay::run(
        &options,
        &mut std::io::empty(),
        &mut out,
        &mut std::io::sink(),
    )
    .expect("the run completes");
    let doc: Value = serde_json::from_slice(&out).expect("the report is JSON");

    let expected_rejected = bad.len() + unreadable.len() + 1;
    assert_eq!(doc["events"]["rejected"], expected_rejected);
    assert_eq!(doc["events"]["push"], 1);
    assert_eq!(doc["events"]["replication"], 2);
    assert_eq!(doc["events"]["read"], lines.len() + 1);
    let rejected = doc["rejected_records"].as_array().unwrap();
    let mut named: Vec<&str> = rejected
        .iter()
        .map(|r| r["field"].as_str().unwrap())
        .collect();
    let mut wanted: Vec<&str> = bad.iter().map(|b| b.field).collect();
    wanted.extend(std::iter::repeat_n("(record)", unreadable.len() + 1));
    named.sort();
    wanted.sort();
    assert_eq!(named, wanted, "each rejection names the field at fault");
    for r in rejected {
        let reason = r["reason"].as_str().unwrap();
        assert!(
            !reason.is_empty() && reason.len() < 400,
            "reasons are short, whatever the input: {}",
            reason.len()
        );
        assert!(
            !reason.chars().any(char::is_control),
            "reasons carry no control characters: {reason:?}"
        );
    }
    let statuses: Vec<&str> = doc["replications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        statuses,
        ["replicated", "replicated"],
        "the good push and its two copies are audited"
    );
    assert!(!report.has_problems());
}

#[tokio::test]
async fn the_handler_acknowledges_a_hostile_batch_records_the_good_events_and_logs_valid_json_lines()
 {
    let logs = logs::capture();

    // The source Region's configuration from events/registry, and nothing else.
    let ecr = FakeRegistry::default();
    ecr.config(
        ids::registry("111122223333", "us-west-2"),
        sample("registry/us-west-2.json"),
    );
    let metrics = RecordingSink::default();
    let auditor = Auditor::new(
        MemoryStateStore::default(),
        ecr,
        metrics.clone(),
        RecordingSink::default(),
        AuditSettings {
            window: Window::DEFAULT,
            repository_dimension: false,
            config_cache_ms: 300_000,
            history_retention: Window::hours(24 * 90),
        },
    );
    let bad = bad_records();
    let bad_values: Vec<String> = bad.iter().map(|b| b.line.clone()).collect();
    let batch: Vec<Value> = interleave(&good_records(), &bad_values)
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let now = time("2024-07-01T10:01:00Z");

    let summary = auditor
        .handle(&Value::Array(batch.clone()), now)
        .await
        .expect("a hostile batch is acknowledged");
    assert_eq!(summary.rejected, bad.len() as u64);
    assert_eq!(
        (
            summary.pushes,
            summary.copies,
            summary.expected,
            summary.completed
        ),
        (1, 2, 2, 2)
    );

    let rejected_published: f64 = metrics
        .data()
        .iter()
        .filter(|d| d.name == MetricName::EventsRejected)
        .map(|d| {
            d.values
                .iter()
                .zip(&d.counts)
                .map(|(v, c)| v * c)
                .sum::<f64>()
        })
        .sum();
    // Two records have no usable id (missing, or a number): each redelivery of those would
    // count again, which no store can prevent.
    assert_eq!(rejected_published, bad.len() as f64);

    // The same batch again: nothing new is counted.
    let again = auditor.handle(&Value::Array(batch), now).await.unwrap();
    assert_eq!((again.expected, again.completed), (0, 0));

    let text = logs.text();
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines.len() >= bad.len(),
        "one warning per rejected event at least"
    );
    for line in &lines {
        let v: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not one JSON object per line ({e}): {line}"));
        assert!(v.is_object());
        assert!(
            line.len() < 2000,
            "a log line stays short whatever the input: {} bytes",
            line.len()
        );
    }
    assert!(
        !text.contains("\"message\":\"forged\""),
        "a newline in a field cannot forge a log line"
    );
    let rejected_lines = lines
        .iter()
        .filter(|l| l.contains("\"rejected event\""))
        .count();
    assert_eq!(
        rejected_lines,
        2 * bad.len(),
        "each rejection logged with its reason, both deliveries"
    );
}
