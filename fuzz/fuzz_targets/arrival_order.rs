//! Structured pushes and copies of one digest between one source and one destination, delivered
//! in two arrival orders, with redeliveries, checked at three depths:
//! - `Group::resolve` and `verdict`: the same expectations, matches, unmatched copies and verdicts
//!   whatever the order (a copy may arrive before its push);
//! - the Lambda's ledger (`TrackedGroup::settle` after every event): settling twice counts nothing,
//!   no finding is counted twice for one (push, destination), a redelivered copy changes nothing,
//!   and every final verdict has been counted (nothing lost);
//! - the replay `Engine` on the same events as EventBridge JSON: the same verdicts and counts in
//!   both orders (with a window longer than the events' span: retirement is the documented limit
//!   of order independence, see README "Guarantees and limits").

#![no_main]

use std::collections::BTreeSet;

use arbitrary::Arbitrary;
use ecr_replication_auditor::domain::config::{Destination, ReplicationConfig};
use ecr_replication_auditor::domain::correlate::{CopySeen, Group, GroupKey, Status, verdict};
use ecr_replication_auditor::domain::ids::{
    AccountId, EventId, ImageDigest, ImageTag, Region, RepositoryName,
};
use ecr_replication_auditor::domain::ledger::{Finding, TrackedGroup};
use ecr_replication_auditor::domain::report::ReplicationRecord;
use ecr_replication_auditor::domain::time::{Timestamp, Window};
use ecr_replication_auditor::replay::engine::Engine;
use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};

/// 2024-07-01T10:00:00Z, in seconds.
const T0: i64 = 1_719_828_000;
const SOURCE: &str = "111122223333";
const DESTINATION: &str = "444455556666";
const REPOSITORY: &str = "team/api";
const DIGEST: &str = "sha256:efd0f9b95ee5a2da876ec1250b0f949bb6c3716d368f77e179212a1d91b62c38";
/// Enough events to meet every matching rule; more only slows the fuzzer down.
const MAX_EVENTS: usize = 24;

#[derive(Arbitrary, Debug, Clone, Copy, PartialEq)]
enum Tag {
    None,
    V1,
    V2,
    V3,
}

impl Tag {
    fn name(self) -> Option<&'static str> {
        match self {
            Tag::None => None,
            Tag::V1 => Some("v1"),
            Tag::V2 => Some("v2"),
            Tag::V3 => Some("v3"),
        }
    }

    fn parsed(self) -> Option<ImageTag> {
        self.name().map(|t| ImageTag::parse(t).unwrap())
    }
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Event {
    /// `at`: seconds after T0 (up to some 18 hours: several windows).
    Push {
        tag: Tag,
        at: u16,
    },
    Copy {
        tag: Tag,
        at: u16,
        ok: bool,
    },
}

impl Event {
    fn at(self) -> Timestamp {
        let secs = match self {
            Event::Push { at, .. } | Event::Copy { at, .. } => at,
        };
        Timestamp::from_millis((T0 + i64::from(secs)) * 1000)
    }
}

#[derive(Arbitrary, Debug)]
struct Scenario {
    events: Vec<Event>,
    /// Indices (modulo the number of events) delivered once more.
    redeliver: Vec<u8>,
    /// Sort keys of the second arrival order.
    shuffle: Vec<u16>,
    /// The audit time, seconds after T0.
    now: u16,
}

fn key() -> GroupKey {
    GroupKey {
        source_account: AccountId::parse(SOURCE).unwrap(),
        source_region: Region::parse("us-west-2").unwrap(),
        repository: RepositoryName::parse(REPOSITORY).unwrap(),
        digest: ImageDigest::parse(DIGEST).unwrap(),
        destination: Destination {
            account: AccountId::parse(DESTINATION).unwrap(),
            region: Region::parse("eu-west-1").unwrap(),
        },
    }
}

fn seen(i: usize, event: Event) -> Option<CopySeen> {
    match event {
        Event::Copy { tag, ok, .. } => Some(CopySeen {
            id: EventId::parse(&format!("c{i}")).unwrap(),
            at: event.at(),
            tag: tag.parsed(),
            succeeded: ok,
        }),
        Event::Push { .. } => None,
    }
}

fn apply(group: &mut Group, i: usize, event: Event) {
    match event {
        Event::Push { tag, .. } => {
            group.add_push(tag.parsed(), event.at());
        }
        Event::Copy { .. } => {
            group.add_copy(seen(i, event).unwrap());
        }
    }
}

fuzz_target!(|s: Scenario| {
    let events: Vec<Event> = s.events.into_iter().take(MAX_EVENTS).collect();
    if events.is_empty() {
        return;
    }
    // Deliveries: (event index, event); a redelivery repeats an index.
    let mut first: Vec<(usize, Event)> = events.iter().copied().enumerate().collect();
    first.extend(s.redeliver.iter().map(|&r| {
        let i = usize::from(r) % events.len();
        (i, events[i])
    }));
    let mut order: Vec<usize> = (0..first.len()).collect();
    order.sort_by_key(|&d| (s.shuffle.get(d).copied().unwrap_or(0), d));
    let second: Vec<(usize, Event)> = order.iter().map(|&d| first[d]).collect();
    let now = Timestamp::from_millis((T0 + i64::from(s.now)) * 1000);

    groups_agree(&first, &second, now);
    ledger_counts_once(&first);
    engines_agree(&first, &second);
});

/// The group's view does not depend on arrival order.
fn groups_agree(first: &[(usize, Event)], second: &[(usize, Event)], now: Timestamp) {
    let build = |deliveries: &[(usize, Event)]| {
        let mut g = Group::default();
        for &(i, e) in deliveries {
            apply(&mut g, i, e);
        }
        g
    };
    let (a, b) = (build(first), build(second));
    assert_eq!(a.expectations(), b.expectations());
    assert_eq!(a.last_event, b.last_event);
    let ids =
        |g: &Group| -> BTreeSet<String> { g.copies().iter().map(|c| c.id.to_string()).collect() };
    assert_eq!(ids(&a), ids(&b), "a redelivered copy is kept once");
    assert_eq!(a.copies().len(), ids(&a).len());
    let (ra, rb) = (a.resolve(), b.resolve());
    assert_eq!(ra.evidence, rb.evidence);
    let unmatched = |g: &Group, u: &[usize]| -> BTreeSet<String> {
        u.iter().map(|&i| g.copies()[i].id.to_string()).collect()
    };
    assert_eq!(unmatched(&a, &ra.unmatched), unmatched(&b, &rb.unmatched));
    assert_eq!(a.is_settled(), b.is_settled());
    for (e, (ea, eb)) in a
        .expectations()
        .iter()
        .zip(ra.evidence.iter().zip(&rb.evidence))
    {
        assert_eq!(
            verdict(e, *ea, Window::DEFAULT, now),
            verdict(e, *eb, Window::DEFAULT, now)
        );
    }
}

/// The Lambda's ledger, settled after every delivery as the handler does: nothing counted
/// twice, nothing final left uncounted.
fn ledger_counts_once(deliveries: &[(usize, Event)]) {
    let key = key();
    let window = Window::DEFAULT;
    let mut tracked = TrackedGroup::default();
    let mut counted: Vec<(Option<ImageTag>, &'static str)> = Vec::new();
    let mut clock = Timestamp::from_millis(i64::MIN);
    for &(i, e) in deliveries {
        clock = clock.max(e.at());
        let before = tracked.clone();
        apply(&mut tracked.group, i, e);
        let unchanged = tracked.group == before.group;
        let found = tracked.settle(&key, window, clock);
        if unchanged {
            assert!(found.is_empty(), "a redelivery counted {found:?}");
        }
        assert!(
            tracked.settle(&key, window, clock).is_empty(),
            "settling twice counts nothing"
        );
        for f in found {
            let kind = match f.finding {
                Finding::Expected => "expected",
                Finding::Completed { .. } => "completed",
                Finding::Late => "late",
                Finding::Untagged => "untagged",
                Finding::Failed { .. } => "failed",
                Finding::Missing => "missing",
                Finding::StaleTag { .. } => "stale_tag",
                Finding::Withdrawn => "withdrawn",
                Finding::Archived => "archived",
                // No delete is owed here: no rule with delete replication is in play.
                Finding::DeleteExpected
                | Finding::DeleteReplicated { .. }
                | Finding::DeleteLate
                | Finding::DeleteMissing => panic!("a delete finding without a delete owed"),
            };
            let entry = (f.tag.clone(), kind);
            assert!(!counted.contains(&entry), "{entry:?} counted twice");
            counted.push(entry);
        }
    }
    for (e, v) in tracked.verdicts(window, clock) {
        let has = |kind| counted.contains(&(e.tag.clone(), kind));
        assert!(has("expected"), "{e:?} never counted expected");
        let needed: &[&str] = match v.status {
            Status::Replicated => &["completed"],
            Status::Late => &["completed", "late"],
            Status::Untagged => &["completed", "untagged"],
            Status::Failed => &["failed"],
            Status::Missing => &["missing"],
            Status::Pending => &[],
            // Counted only once its window has passed; no delete or rule change happens here.
            Status::Withdrawn => &[],
            Status::Archived => &["archived"],
        };
        for kind in needed {
            assert!(
                has(kind),
                "{e:?} is {:?} but {kind} was never counted",
                v.status
            );
        }
    }
}

fn event_json(i: usize, e: Event) -> Value {
    let time = e.at().to_string();
    match e {
        Event::Push { tag, .. } => {
            let mut detail = json!({"result": "SUCCESS", "repository-name": REPOSITORY,
                                    "image-digest": DIGEST, "action-type": "PUSH"});
            if let Some(t) = tag.name() {
                detail["image-tag"] = json!(t);
            }
            json!({"version": "0", "id": format!("p{i}"), "detail-type": "ECR Image Action",
                   "source": "aws.ecr", "account": SOURCE, "time": time, "region": "us-west-2",
                   "resources": [], "detail": detail})
        }
        Event::Copy { tag, ok, .. } => {
            let mut detail = json!({"result": if ok { "SUCCESS" } else { "FAILED" },
                                    "repository-name": REPOSITORY, "image-digest": DIGEST,
                                    "source-account": SOURCE, "action-type": "REPLICATE",
                                    "source-region": "us-west-2"});
            if let Some(t) = tag.name() {
                detail["image-tag"] = json!(t);
            }
            json!({"version": "0", "id": format!("c{i}"), "detail-type": "ECR Replication Action",
                   "source": "aws.ecr", "account": DESTINATION, "time": time,
                   "region": "eu-west-1", "resources": [], "detail": detail})
        }
    }
}

/// The replay engine gives the same report in both orders.
fn engines_agree(first: &[(usize, Event)], second: &[(usize, Event)]) {
    let config = ReplicationConfig::from_json(
        &json!({"registryId": SOURCE, "replicationConfiguration": {"rules": [
            {"destinations": [{"region": "eu-west-1", "registryId": DESTINATION}]}]}}),
        Region::parse("us-west-2").unwrap(),
        None,
    )
    .unwrap();
    // Longer than the 18 hours `at` spans: no group is retired before the end.
    let window = Window::parse("24h").unwrap();
    let now = Timestamp::from_millis((T0 + 20 * 3600) * 1000);
    let run = |deliveries: &[(usize, Event)]| {
        let mut engine = Engine::new([config.clone()], window);
        let mut verdicts = Vec::new();
        let mut keep = |r: &ReplicationRecord| verdicts.push(serde_json::to_string(r).unwrap());
        for &(i, e) in deliveries {
            engine.ingest(&event_json(i, e), String::new, &mut keep);
        }
        let report = engine.finish(Some(now), &mut keep);
        verdicts.sort();
        let mut unmatched: Vec<String> = report
            .unmatched
            .iter()
            .map(|u| serde_json::to_string(u).unwrap())
            .collect();
        unmatched.sort();
        let destinations = serde_json::to_string(&report.destinations).unwrap();
        (verdicts, unmatched, report.events, destinations)
    };
    assert_eq!(run(first), run(second));
}
