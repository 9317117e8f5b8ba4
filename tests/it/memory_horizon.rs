//! What the replay engine holds follows a horizon of the stream, not the length of the input.
//!
//! Two streams from the shared generator at the same rate, one twice as long as the other,
//! go through the engine with a three-hour horizon; the most it ever holds (open groups, event-id
//! fingerprints, fingerprints of retired groups and expectations) is measured after every
//! record. Both are several horizons long, so the longer stream must not hold more than the
//! shorter one (give or take the generator's randomness and where the two generations of
//! fingerprints happen to turn over); and with this generator (every copy within 90 minutes of its push)
//! the horizon must change no verdict: the same report as with a horizon longer than the stream.
//!
//! Why three hours: a horizon must cover a copy's lag plus how far the stream's clock can run
//! ahead of it. The generator's copies lag up to 90 minutes, and a copy it delivers before its
//! push moves the clock that far ahead at once; with two hours a few late copies of this stream
//! come after their push was concluded missing (and are listed as matching no push).

use std::collections::BTreeMap;

use ecr_replication_auditor::domain::report::{
    Findings, RejectedRecord, ReplicationRecord, Report, UnmatchedCopy,
};
use ecr_replication_auditor::domain::time::Window;
use ecr_replication_auditor::replay::engine::Engine;
use ecr_replication_auditor::replay::input::{self, Input, Record};
use ecr_replication_auditor::replay::working_set::Holding;
use ecr_replication_auditor::scenario::ScenarioSpec;

const SEED: u64 = 0x0EC5_2024;

/// Every finding as a sorted multiset of JSON lines: the order in which groups are concluded
/// depends on the horizon, what is concluded must not.
#[derive(Default)]
struct Collected {
    verdicts: BTreeMap<String, u32>,
    unmatched: BTreeMap<String, u32>,
    rejected: u64,
}

impl Findings for Collected {
    fn verdict(&mut self, r: &ReplicationRecord) {
        *self
            .verdicts
            .entry(serde_json::to_string(r).unwrap())
            .or_default() += 1;
    }
    fn unmatched(&mut self, u: &UnmatchedCopy) {
        *self
            .unmatched
            .entry(serde_json::to_string(u).unwrap())
            .or_default() += 1;
    }
    fn rejected(&mut self, _: &RejectedRecord) {
        self.rejected += 1;
    }
}

struct Run {
    peak: Holding,
    spanned_horizon: bool,
    report: Report,
    found: Collected,
}

fn run(events: usize, horizon: Window) -> Run {
    let spec = ScenarioSpec::for_events(SEED, events);
    let configs = spec.configs();
    let mut bytes = Vec::new();
    spec.write_events(&mut bytes).unwrap();

    let window = Window::from_secs(spec.window_seconds).unwrap();
    let mut engine = Engine::new(configs, window).with_horizon(horizon);
    let mut found = Collected::default();
    let mut peak = Holding::default();
    input::read(&Input::Stdin, &mut &bytes[..], &mut |record| {
        match record {
            Record::Value(value, at) => engine.ingest(&value, || at.to_string(), &mut found),
            Record::Unreadable(at, why) => engine.unreadable(at.to_string(), why, &mut found),
        }
        let now = engine.holding();
        peak = Holding {
            open_groups: peak.open_groups.max(now.open_groups),
            event_ids: peak.event_ids.max(now.event_ids),
            retired_groups: peak.retired_groups.max(now.retired_groups),
            retired_expectations: peak.retired_expectations.max(now.retired_expectations),
            tags: peak.tags.max(now.tags),
        };
    })
    .unwrap();
    let spanned_horizon = engine.spanned_horizon();
    let report = engine.finish(None, &mut found);
    Run {
        peak,
        spanned_horizon,
        report,
        found,
    }
}

#[test]
fn twice_the_stream_holds_no_more_and_the_horizon_changes_no_verdict() {
    let horizon = Window::parse("3h").unwrap();
    // About 100,000 events a day: some twelve hours (four horizons), then a day.
    let short = run(50_000, horizon);
    let long = run(100_000, horizon);
    let total_ids = long.report.events.read - long.report.events.duplicate;
    println!("peak held, 50k events: {:?}", short.peak);
    println!("peak held, 100k events: {:?}", long.peak);
    println!("distinct event ids in the long stream: {total_ids}");

    let within = |long: usize, short: usize, what: &str| {
        assert!(
            long as f64 <= short as f64 * 1.2 + 50.0,
            "{what}: {long} held for 100k events against {short} for 50k"
        );
    };
    within(long.peak.event_ids, short.peak.event_ids, "event ids");
    within(long.peak.open_groups, short.peak.open_groups, "open groups");
    within(
        long.peak.retired_groups,
        short.peak.retired_groups,
        "retired groups",
    );
    within(
        long.peak.retired_expectations,
        short.peak.retired_expectations,
        "retired expectations",
    );
    assert!(
        (long.peak.event_ids as u64) < total_ids * 4 / 10,
        "{} ids held of {total_ids}",
        long.peak.event_ids
    );

    // The same stream with a horizon longer than it is: nothing forgotten, nothing concluded
    // early. Every verdict, unmatched copy and count must be the same.
    let unbounded = run(100_000, Window::parse("8784h").unwrap());
    assert!(long.spanned_horizon && short.spanned_horizon);
    assert!(
        !unbounded.spanned_horizon,
        "a day of events is less than a year"
    );
    assert!(
        unbounded.peak.event_ids > 3 * long.peak.event_ids,
        "without a horizon every id stays: {}",
        unbounded.peak.event_ids
    );
    let differ = |a: &BTreeMap<String, u32>, b: &BTreeMap<String, u32>| -> Vec<String> {
        a.iter()
            .filter(|(k, n)| b.get(*k) != Some(n))
            .map(|(k, n)| format!("{n}x {k}"))
            .take(5)
            .collect()
    };
    assert!(
        long.found.verdicts == unbounded.found.verdicts,
        "only with the horizon: {:#?}\nonly without: {:#?}",
        differ(&long.found.verdicts, &unbounded.found.verdicts),
        differ(&unbounded.found.verdicts, &long.found.verdicts)
    );
    assert_eq!(long.found.unmatched, unbounded.found.unmatched);
    assert_eq!(long.found.rejected, unbounded.found.rejected);
    assert_eq!(long.report.events, unbounded.report.events);
    assert_eq!(long.report.destinations, unbounded.report.destinations);
    assert_eq!(long.report.problems, unbounded.report.problems);
    assert_eq!(long.report.unmatched, unbounded.report.unmatched);
    assert!(long.report.problems_total > 1000, "the listing was cut");
}
