//! Arbitrary bytes as a `replay` input (JSON lines, pretty-printed documents, or one JSON array):
//! the streaming reader into `Classified` (each record classified straight from its text), the
//! engine with its retirement of settled groups, and both report formats, exactly as
//! `replay::run` chains them, minus the files.
//!
//! And, when the whole input is one JSON value, that reading it as text classifies it as
//! `classify` does the `serde_json::Value` the Lambda gets.
//!
//! Checked on every input, under the default window and a 90-second one (which retires groups
//! within the sample events' span), each with the longest horizon, and the 90-second window with
//! a 3-minute horizon (which concludes unsettled groups and forgets ids within the span too):
//! - nothing panics (overflow checks are on);
//! - every record read is counted once: read = push + restore + replication + delete + ignored +
//!   rejected + duplicate;
//! - while the stream's clock has not moved a whole horizon, each (push, destination) gets
//!   exactly one verdict (past it, the same tag pushed again is a new push); under every horizon
//!   the per-destination summary counts each verdict once;
//! - the JSON report is one valid JSON document that agrees with the counts and lists every
//!   verdict, unmatched copy and rejected record.

#![no_main]

use std::collections::HashMap;
use std::sync::LazyLock;

use ecr_replication_auditor::domain::config::ReplicationConfig;
use ecr_replication_auditor::domain::correlate::GroupKey;
use ecr_replication_auditor::domain::event::{Classified, classify};
use ecr_replication_auditor::domain::ids::ImageTag;
use ecr_replication_auditor::domain::ids::Region;
use ecr_replication_auditor::domain::report::{
    DEFAULT_LIST_LIMIT, DeletionRecord, Findings, RejectedRecord, ReplicationRecord, UnmatchedCopy,
};
use ecr_replication_auditor::domain::time::Window;
use ecr_replication_auditor::output::{Lists, json, table};
use ecr_replication_auditor::replay::engine::Engine;
use ecr_replication_auditor::replay::input::{self, Input, Record};
use ecr_replication_auditor::scenario::ScenarioSpec;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

/// The sample events' registry (events/registry/us-west-2.json) and the generator's registries,
/// so that seeds from both produce expectations.
static CONFIGS: LazyLock<Vec<ReplicationConfig>> = LazyLock::new(|| {
    let sample: Value = serde_json::from_str(include_str!("../../events/registry/us-west-2.json"))
        .expect("events/registry/us-west-2.json is JSON");
    let mut docs = vec![("us-west-2".to_owned(), sample)];
    docs.extend(ScenarioSpec::default().registry_documents());
    docs.into_iter()
        .map(|(region, doc)| {
            ReplicationConfig::from_json(&doc, Region::parse(&region).unwrap(), None)
                .expect("a valid registry document")
        })
        .collect()
});

fuzz_target!(|data: &[u8]| {
    if let Ok(value) = serde_json::from_slice::<Value>(data) {
        let direct = serde_json::from_slice::<Classified>(data);
        assert_eq!(
            direct.ok(),
            Some(classify(&value)),
            "read as text and as a value"
        );
    }
    let year = Window::parse("8784h").expect("a year is a valid duration");
    let short = Window::from_secs(90).unwrap();
    for (window, horizon) in [
        (Window::DEFAULT, year),
        (short, year),
        (short, Window::from_secs(180).unwrap()),
    ] {
        audit(data, window, horizon);
    }
});

/// What `output::Printer` spills for `--format json`: one JSON line per finding.
#[derive(Default)]
struct Spilled {
    verdicts: Vec<u8>,
    deletions: Vec<u8>,
    unmatched: Vec<u8>,
    rejected: Vec<u8>,
    /// Verdicts per (push, destination).
    judged: HashMap<(GroupKey, Option<ImageTag>), usize>,
    count: usize,
}

impl Findings for Spilled {
    fn verdict(&mut self, r: &ReplicationRecord) {
        *self
            .judged
            .entry((r.key.clone(), r.tag.clone()))
            .or_default() += 1;
        self.count += 1;
        serde_json::to_writer(&mut self.verdicts, r).expect("a finding serializes");
        self.verdicts.push(b'\n');
    }
    fn deletion(&mut self, d: &DeletionRecord) {
        serde_json::to_writer(&mut self.deletions, d).expect("a finding serializes");
        self.deletions.push(b'\n');
    }
    fn unmatched(&mut self, u: &UnmatchedCopy) {
        serde_json::to_writer(&mut self.unmatched, u).expect("a finding serializes");
        self.unmatched.push(b'\n');
    }
    fn rejected(&mut self, r: &RejectedRecord) {
        serde_json::to_writer(&mut self.rejected, r).expect("a finding serializes");
        self.rejected.push(b'\n');
    }
}

fn audit(data: &[u8], window: Window, horizon: Window) {
    let mut engine = Engine::new(CONFIGS.iter().cloned(), window).with_horizon(horizon);
    let mut spilled = Spilled::default();
    let mut reader = data;
    input::read(&Input::Stdin, &mut reader, &mut |record| match record {
        Record::Value(classified, at) => {
            engine.ingest_classified(classified, || at.to_string(), &mut spilled)
        }
        Record::Unreadable(at, why) => engine.unreadable(at.to_string(), why, &mut spilled),
    })
    .expect("reading from memory cannot fail");
    let spanned_horizon = engine.spanned_horizon();
    let report = engine.finish(None, &mut spilled);
    if !spanned_horizon {
        let twice = spilled.judged.iter().find(|(_, n)| **n > 1);
        assert!(
            twice.is_none(),
            "a second verdict for one (push, destination): {twice:?}"
        );
    }

    let e = report.events;
    assert_eq!(
        e.read,
        e.push + e.restore + e.replication + e.delete + e.ignored + e.rejected + e.duplicate,
        "every record is counted once: {e:?}"
    );
    assert_eq!(
        report.rejected.len(),
        (e.rejected as usize).min(DEFAULT_LIST_LIMIT)
    );
    let summarised: u64 = report.destinations.iter().map(|d| d.expected).sum();
    assert_eq!(
        summarised as usize, spilled.count,
        "each verdict summarised once"
    );

    let mut out = Vec::new();
    let lists = Lists {
        verdicts: &mut &spilled.verdicts[..],
        deletions: &mut &spilled.deletions[..],
        unmatched: &mut &spilled.unmatched[..],
        rejected: &mut &spilled.rejected[..],
    };
    json::write(&report, lists, &mut out).expect("writing to memory");
    let doc: Value = serde_json::from_slice(&out).expect("the JSON report is one JSON document");
    assert_eq!(doc["events"]["read"], e.read);
    assert_eq!(
        doc["replications"].as_array().map(Vec::len),
        Some(spilled.count)
    );
    assert_eq!(
        doc["rejected_records"].as_array().map(Vec::len),
        Some(e.rejected as usize)
    );
    assert_eq!(
        doc["unmatched_replications"]
            .as_array()
            .map(|a| a.len() as u64),
        Some(report.unmatched_total)
    );
    table::write(&report, &mut Vec::new()).expect("writing to memory");
}
