//! The replay engine against a generated scenario of more than 100,000 events whose verdicts are
//! known from the generator's own decisions.

use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::time::Instant;

use serde_json::Value;

use ecr_replication_auditor::domain::report::DEFAULT_LIST_LIMIT;
use ecr_replication_auditor::domain::time::Window;
use ecr_replication_auditor::output::Format;
use ecr_replication_auditor::replay::{self, ReplayOptions};
use ecr_replication_auditor::scenario::{ScenarioSpec, Truth};

/// (source account, source Region, repository, digest, tag, destination account, destination
/// Region): one (push, destination).
type Key = (
    String,
    String,
    String,
    String,
    Option<String>,
    String,
    String,
);

fn text(v: &Value, key: &str) -> String {
    v[key]
        .as_str()
        .unwrap_or_else(|| panic!("{key} is not a string in {v}"))
        .to_string()
}

fn key_of(v: &Value) -> Key {
    (
        text(v, "source_account"),
        text(v, "source_region"),
        text(v, "repository"),
        text(v, "image_digest"),
        v["image_tag"].as_str().map(str::to_string),
        text(v, "destination_account"),
        text(v, "destination_region"),
    )
}

/// Writes the scenario's events and registry documents under `dir` and returns the replay
/// options that read them, with the number of lines written.
fn prepare(spec: &ScenarioSpec, dir: &std::path::Path) -> (ReplayOptions, u64) {
    let events = dir.join("events.jsonl");
    let mut out = BufWriter::new(File::create(&events).unwrap());
    spec.write_events(&mut out).unwrap();
    out.flush().unwrap();
    drop(out);
    let lines = std::fs::read(&events)
        .unwrap()
        .iter()
        .filter(|&&b| b == b'\n')
        .count() as u64;

    let registries = spec.write_registry_files(dir).unwrap();
    let options = ReplayOptions {
        registries,
        registry_id: None,
        window: Window::from_secs(spec.window_seconds).unwrap(),
        now: None,
        format: Format::Json,
        inputs: vec![events],
        horizon: None,
        list_limit: DEFAULT_LIST_LIMIT,
        chart: None,
    };
    (options, lines)
}

fn assert_counts_match(report: &Value, truth: &Truth) {
    let events = &report["events"];
    let expected = [
        ("read", truth.events.read),
        ("push", truth.events.push),
        ("restore", truth.events.restore),
        ("replication", truth.events.replication),
        ("delete", truth.events.delete),
        ("ignored", truth.events.ignored),
        ("rejected", truth.events.rejected),
        ("duplicate", truth.events.duplicate),
    ];
    for (name, n) in expected {
        assert_eq!(
            events[name].as_u64(),
            Some(n),
            "events.{name}: report {events}, truth {:?}",
            truth.events
        );
    }
}

/// What the report says of one (push or restore, destination), or one (delete, destination):
/// its status, lag, and (for copies) what triggered it.
type Said = (String, Option<i64>, String);

fn assert_replications_match(report: &Value, truth: &Truth) {
    let listed = report["replications"].as_array().expect("replications");
    let mut got: BTreeMap<Key, Said> = BTreeMap::new();
    for r in listed {
        let previous = got.insert(
            key_of(r),
            (
                text(r, "status"),
                r["latency_seconds"].as_i64(),
                text(r, "trigger"),
            ),
        );
        assert!(previous.is_none(), "listed twice: {r}");
        if let Some(latency) = r.get("latency_seconds").filter(|l| !l.is_null()) {
            assert!(
                latency.is_i64(),
                "a whole-second latency printed as {latency}"
            );
        }
    }
    let mut expected: BTreeMap<Key, Said> = BTreeMap::new();
    for v in &truth.verdicts {
        let key = (
            v.source_account.clone(),
            v.source_region.clone(),
            v.repository.clone(),
            v.image_digest.clone(),
            v.image_tag.clone(),
            v.destination_account.clone(),
            v.destination_region.clone(),
        );
        let said = (
            v.status.to_string(),
            v.latency_seconds,
            v.trigger.to_string(),
        );
        let previous = expected.insert(key, said);
        assert!(previous.is_none(), "the truth has {v:?} twice");
    }
    assert_same("replications", &got, &expected);
}

/// Every (delete, destination) of the truth is in the report's `deletions` with its status and
/// lag, and nothing else is.
fn assert_deletions_match(report: &Value, truth: &Truth) {
    let listed = report["deletions"].as_array().expect("deletions");
    let mut got: BTreeMap<Key, Said> = BTreeMap::new();
    for d in listed {
        let said = (
            text(d, "status"),
            d["latency_seconds"].as_i64(),
            String::new(),
        );
        let previous = got.insert(key_of(d), said);
        assert!(previous.is_none(), "listed twice: {d}");
        assert_eq!(
            d["gone_at"].is_null(),
            d["latency_seconds"].is_null(),
            "a lag only with the time it rests on: {d}"
        );
    }
    let mut expected: BTreeMap<Key, Said> = BTreeMap::new();
    for e in &truth.deletions {
        let key = (
            e.source_account.clone(),
            e.source_region.clone(),
            e.repository.clone(),
            e.image_digest.clone(),
            e.image_tag.clone(),
            e.destination_account.clone(),
            e.destination_region.clone(),
        );
        let said = (e.status.to_string(), e.latency_seconds, String::new());
        let previous = expected.insert(key, said);
        assert!(previous.is_none(), "the truth has {e:?} twice");
    }
    assert_same("deletions", &got, &expected);
}

fn assert_same(what: &str, got: &BTreeMap<Key, Said>, expected: &BTreeMap<Key, Said>) {
    let mut mismatches = Vec::new();
    for (key, want) in expected {
        match got.get(key) {
            None => mismatches.push(format!(
                "missing from the report: {key:?}, expected {want:?}"
            )),
            Some(have) if have != want => {
                mismatches.push(format!("{key:?}: report {have:?}, truth {want:?}"));
            }
            Some(_) => {}
        }
    }
    for (key, have) in got {
        if !expected.contains_key(key) {
            mismatches.push(format!("not in the truth: {key:?}, reported {have:?}"));
        }
    }
    assert!(
        mismatches.is_empty(),
        "{} of {} {what} differ; first ones:\n{}",
        mismatches.len(),
        expected.len(),
        mismatches
            .iter()
            .take(10)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}

const STATUSES: [&str; 6] = [
    "replicated",
    "late",
    "untagged",
    "failed",
    "missing",
    "pending",
];

fn assert_destinations_match(report: &Value, truth: &Truth) {
    let mut expected: BTreeMap<(String, String), BTreeMap<&str, u64>> = BTreeMap::new();
    for v in &truth.verdicts {
        *expected
            .entry((v.destination_account.clone(), v.destination_region.clone()))
            .or_default()
            .entry(v.status)
            .or_default() += 1;
    }
    let destinations = report["destinations"].as_array().expect("destinations");
    assert_eq!(
        destinations.len(),
        expected.len(),
        "destinations: {destinations:?}"
    );
    for d in destinations {
        let key = (
            text(d, "destination_account"),
            text(d, "destination_region"),
        );
        let want = expected
            .get(&key)
            .unwrap_or_else(|| panic!("unexpected destination {d}"));
        let mut sum = 0;
        for status in STATUSES {
            let n = d[status]
                .as_u64()
                .unwrap_or_else(|| panic!("{status} in {d}"));
            assert_eq!(
                n,
                want.get(status).copied().unwrap_or(0),
                "{status} for {key:?}"
            );
            sum += n;
        }
        assert_eq!(d["expected"].as_u64(), Some(sum), "expected for {key:?}");
        let deletions = &d["deletions"];
        let mut owed = 0;
        for status in ["replicated", "late", "missing", "pending"] {
            let n = deletions[status].as_u64().unwrap_or(0);
            let want = truth
                .deletions
                .iter()
                .filter(|e| {
                    (&e.destination_account, &e.destination_region) == (&key.0, &key.1)
                        && e.status == status
                })
                .count() as u64;
            assert_eq!(n, want, "deletes {status} for {key:?}");
            owed += n;
        }
        assert_eq!(deletions["expected"].as_u64(), Some(owed));
    }
}

#[test]
fn a_stream_packed_into_one_day_gets_exactly_the_verdicts_its_generator_decided() {
    // Twelve images in the same second at each interval: the shape of the one-day benchmark
    // stream, where many pushes share a time.
    let spec = ScenarioSpec::one_day(0x5EED_0002, 30_000);
    let dir = tempfile::tempdir().unwrap();
    let (options, lines) = prepare(&spec, dir.path());
    let truth = spec.truth();
    assert_eq!(truth.events.read, lines);
    let mut out = Vec::new();
    replay::run(&options, &mut io::empty(), &mut out, &mut io::sink()).expect("the replay runs");
    let json: Value = serde_json::from_slice(&out).expect("the report is JSON");
    assert_counts_match(&json, &truth);
    assert_replications_match(&json, &truth);
    assert_deletions_match(&json, &truth);
    assert_destinations_match(&json, &truth);

    // 30,000 events in about 40 minutes of pushes: the packing works as documented.
    let times: Vec<&str> = json["replications"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["pushed_at"].as_str())
        .collect();
    let (first, last) = (times.iter().min().unwrap(), times.iter().max().unwrap());
    assert!(first.starts_with("2024-07-01T0"), "{first}");
    assert!(
        last.starts_with("2024-07-01T0"),
        "{last}: more than a few hours"
    );
}

#[test]
fn a_generated_stream_of_100000_events_gets_exactly_the_verdicts_its_generator_decided() {
    let started = Instant::now();
    let spec = ScenarioSpec {
        seed: 0x5EED_0001,
        pushes: 36_000,
        ..ScenarioSpec::default()
    };
    let dir = tempfile::tempdir().unwrap();
    let (options, lines) = prepare(&spec, dir.path());
    assert!(lines >= 100_000, "only {lines} events were generated");
    let truth = spec.truth();
    assert_eq!(truth.events.read, lines);
    let generated = started.elapsed();

    let mut out = Vec::new();
    let mut warnings = Vec::new();
    let report =
        replay::run(&options, &mut io::empty(), &mut out, &mut warnings).expect("the replay runs");
    let replayed = started.elapsed();
    let json: Value = serde_json::from_slice(&out).expect("the report is JSON");

    assert_counts_match(&json, &truth);
    assert_eq!(json["now"].as_str(), Some(truth.now.as_str()));
    assert_eq!(
        json["window_seconds"].as_u64(),
        Some(u64::from(truth.window_seconds))
    );
    assert_replications_match(&json, &truth);
    assert_deletions_match(&json, &truth);
    assert_destinations_match(&json, &truth);

    let unmatched = json["unmatched_replications"].as_array().unwrap();
    assert_eq!(unmatched.len() as u64, truth.unmatched_replications);
    let ids: HashSet<&str> = unmatched
        .iter()
        .map(|u| u["event_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids.len(),
        unmatched.len(),
        "an unmatched copy is listed twice"
    );

    let rejected = json["rejected_records"].as_array().unwrap();
    assert_eq!(rejected.len() as u64, truth.events.rejected);
    let mut by_field: BTreeMap<String, u64> = BTreeMap::new();
    for r in rejected {
        let (field, reason) = (text(r, "field"), text(r, "reason"));
        assert!(!field.is_empty() && !reason.is_empty(), "{r}");
        *by_field.entry(field).or_default() += 1;
    }
    let c = truth.cases;
    let want: BTreeMap<String, u64> = [
        ("(record)", c.non_json + c.not_an_object),
        ("detail.image-digest", c.missing_digest),
        ("detail.repository-name", c.bad_repository),
        ("time", c.bad_time),
    ]
    .into_iter()
    .map(|(f, n)| (f.to_string(), n))
    .collect();
    assert_eq!(by_field, want);

    let unconfigured: u64 = json["unconfigured_sources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["pushes"].as_u64().unwrap())
        .sum();
    assert_eq!(unconfigured, truth.unconfigured_pushes);

    assert!(report.has_problems());
    // The comparisons above must not pass for want of restores and deletes.
    let restore_verdicts = truth
        .verdicts
        .iter()
        .filter(|v| v.trigger == "restore")
        .count();
    assert!(
        truth.events.restore > 0 && restore_verdicts > 0,
        "the stream has no restore ({} events, {restore_verdicts} verdicts)",
        truth.events.restore
    );
    assert!(truth.events.delete > 0, "the stream has no delete");
    assert!(
        !truth.deletions.is_empty(),
        "no delete was owed: the deletions compared nothing"
    );
    assert_eq!(
        json["deletions"].as_array().map(Vec::len),
        Some(truth.deletions.len()),
        "the report lists every delete owed"
    );
    eprintln!(
        "{lines} events, {} verdicts ({}), cases {:?}; generated and truth in {generated:?}, replayed by {replayed:?}, checked by {:?}",
        truth.verdicts.len(),
        STATUSES
            .iter()
            .map(|s| format!("{s} {}", truth.count(s)))
            .collect::<Vec<_>>()
            .join(", "),
        truth.cases,
        started.elapsed()
    );
    eprintln!(
        "{restore_verdicts} restore verdicts, {} delete verdicts ({})",
        truth.deletions.len(),
        ["replicated", "late", "missing", "pending"]
            .iter()
            .map(|s| format!("{s} {}", truth.count_deletions(s)))
            .collect::<Vec<_>>()
            .join(", ")
    );
}

#[test]
fn the_same_seed_gives_the_same_stream_and_another_seed_another() {
    let spec = |seed| ScenarioSpec {
        seed,
        pushes: 2_000,
        ..ScenarioSpec::default()
    };
    let write = |spec: ScenarioSpec| {
        let mut bytes = Vec::new();
        spec.write_events(&mut bytes).unwrap();
        bytes
    };
    let first = write(spec(42));
    assert!(!first.is_empty());
    assert_eq!(first, write(spec(42)));
    assert_ne!(first, write(spec(43)));
    assert_eq!(spec(42).truth(), spec(42).truth());
}
