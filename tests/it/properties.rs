//! Properties of the engine, tried on many generated event sets:
//! - the verdicts do not depend on the order in which events arrive;
//! - replaying the same events twice gives the same report;
//! - redelivering any event any number of times changes no verdict.
//!
//! Pushes, restores from the archive, copies, deletes at the source (one rule replicates them)
//! and deletes applied in a destination, so the restores' and the deletes' verdicts are held to
//! the same properties as the pushes'.
//!
//! Events are generated within one replication window of each other. The replay retires a group
//! once the stream has moved a window past it (so memory follows open expectations); an event
//! arriving more than a window after its group settled is treated as a repeat. That limit is
//! documented in README ("Memory", "Guarantees and limits") and is outside these properties.

use ecr_replication_auditor::domain::config::ReplicationConfig;
use ecr_replication_auditor::domain::report::{
    DeletionRecord, Findings, ReplicationRecord, Report,
};
use ecr_replication_auditor::domain::time::Window;
use ecr_replication_auditor::replay::engine::Engine;
use proptest::prelude::*;
use serde_json::{Value, json};

use crate::support::ids::{T0_MS, at, region};

const SOURCE: &str = "111122223333";
const OTHER: &str = "444455556666";
/// 2024-07-01T10:00:00Z, in seconds: the events' times are offsets from it.
const T0: i64 = T0_MS / 1000;

fn config() -> ReplicationConfig {
    let doc = json!({"registryId": SOURCE, "replicationConfiguration": {"rules": [
        {"destinations": [{"region": "us-east-1", "registryId": SOURCE}, {"region": "eu-west-1", "registryId": OTHER}]},
        {"destinations": [{"region": "ap-southeast-2", "registryId": SOURCE}],
         "repositoryFilters": [{"filter": "prod", "filterType": "PREFIX_MATCH"}],
         "deleteReplication": {"enabled": true}}
    ]}});
    ReplicationConfig::from_json(&doc, region("us-west-2"), None).unwrap()
}

fn time(offset: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp(T0 + offset).unwrap();
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

const REPOS: [&str; 3] = ["team/api", "prod/web", "production/db"];
const DESTS: [(&str, &str); 3] = [
    (SOURCE, "us-east-1"),
    (OTHER, "eu-west-1"),
    (SOURCE, "ap-southeast-2"),
];
const TAGS: [Option<&str>; 3] = [None, Some("v1"), Some("v2")];

/// A push, a copy or a delete over a small world, so that events often meet in the same group.
#[derive(Clone, Debug)]
enum Ev {
    Push {
        repo: usize,
        digest: usize,
        tag: usize,
        at: i64,
    },
    Copy {
        repo: usize,
        digest: usize,
        tag: usize,
        dest: usize,
        at: i64,
        ok: bool,
    },
    /// The image restored from the archive at the source.
    Restore {
        repo: usize,
        digest: usize,
        at: i64,
    },
    /// A delete at the source: of a tag, or of the image (by digest) when `tag` names none.
    Delete {
        repo: usize,
        digest: usize,
        tag: usize,
        at: i64,
    },
    /// A delete applied in a destination.
    Deleted {
        repo: usize,
        digest: usize,
        tag: usize,
        dest: usize,
        at: i64,
    },
    Broken {
        at: i64,
    },
}

/// An `ECR Image Action` `DELETE` in the registry of `account` in `region`.
fn delete(
    id: usize,
    (account, region): (&str, &str),
    repo: usize,
    d: usize,
    tag: usize,
    at: i64,
) -> Value {
    let mut detail = json!({"result": "SUCCESS", "repository-name": REPOS[repo],
                            "image-digest": format!("sha256:{d:064x}"), "action-type": "DELETE"});
    if let Some(t) = TAGS[tag] {
        detail["image-tag"] = json!(t);
    }
    json!({"version": "0", "id": format!("e{id}"), "detail-type": "ECR Image Action", "source": "aws.ecr",
           "account": account, "time": time(at), "region": region, "resources": [], "detail": detail})
}

fn event(id: usize, ev: &Ev) -> Value {
    let digest = |d: usize| format!("sha256:{d:064x}");
    match ev {
        Ev::Push {
            repo,
            digest: d,
            tag,
            at,
        } => {
            let mut detail = json!({"result": "SUCCESS", "repository-name": REPOS[*repo],
                                    "image-digest": digest(*d), "action-type": "PUSH"});
            if let Some(t) = TAGS[*tag] {
                detail["image-tag"] = json!(t);
            }
            json!({"version": "0", "id": format!("e{id}"), "detail-type": "ECR Image Action", "source": "aws.ecr",
                   "account": SOURCE, "time": time(*at), "region": "us-west-2", "resources": [], "detail": detail})
        }
        Ev::Copy {
            repo,
            digest: d,
            tag,
            dest,
            at,
            ok,
        } => {
            let (account, region) = DESTS[*dest];
            let mut detail = json!({"result": if *ok { "SUCCESS" } else { "FAILED" }, "repository-name": REPOS[*repo],
                                    "image-digest": digest(*d), "source-account": SOURCE,
                                    "action-type": "REPLICATE", "source-region": "us-west-2"});
            if let Some(t) = TAGS[*tag] {
                detail["image-tag"] = json!(t);
            }
            json!({"version": "0", "id": format!("e{id}"), "detail-type": "ECR Replication Action", "source": "aws.ecr",
                   "account": account, "time": time(*at), "region": region, "resources": [], "detail": detail})
        }
        Ev::Restore {
            repo,
            digest: d,
            at,
        } => {
            let detail = json!({"result": "SUCCESS", "repository-name": REPOS[*repo],
                                "image-digest": digest(*d), "action-type": "UPDATE_STORAGE_CLASS",
                                "target-storage-class": "STANDARD"});
            json!({"version": "0", "id": format!("e{id}"), "detail-type": "ECR Image Action", "source": "aws.ecr",
                   "account": SOURCE, "time": time(*at), "region": "us-west-2", "resources": [], "detail": detail})
        }
        Ev::Delete {
            repo,
            digest,
            tag,
            at,
        } => delete(id, (SOURCE, "us-west-2"), *repo, *digest, *tag, *at),
        Ev::Deleted {
            repo,
            digest,
            tag,
            dest,
            at,
        } => delete(id, DESTS[*dest], *repo, *digest, *tag, *at),
        Ev::Broken { at } => {
            json!({"id": format!("e{id}"), "source": "aws.ecr", "detail-type": "ECR Image Action",
                                    "time": time(*at), "detail": {"action-type": "PUSH", "result": "SUCCESS"}})
        }
    }
}

fn ev_strategy() -> impl Strategy<Value = Ev> {
    // Everything within 20 minutes: less than the 30-minute window.
    let at = 0..1200i64;
    prop_oneof![
        4 => (0..3usize, 0..3usize, 0..3usize, at.clone()).prop_map(|(repo, digest, tag, at)| Ev::Push { repo, digest, tag, at }),
        6 => (0..3usize, 0..3usize, 0..3usize, 0..3usize, at.clone(), prop::bool::weighted(0.85))
            .prop_map(|(repo, digest, tag, dest, at, ok)| Ev::Copy { repo, digest, tag, dest, at, ok }),
        1 => (0..3usize, 0..3usize, at.clone()).prop_map(|(repo, digest, at)| Ev::Restore { repo, digest, at }),
        1 => (0..3usize, 0..3usize, 0..3usize, at.clone()).prop_map(|(repo, digest, tag, at)| Ev::Delete { repo, digest, tag, at }),
        1 => (0..3usize, 0..3usize, 0..3usize, 0..3usize, at.clone())
            .prop_map(|(repo, digest, tag, dest, at)| Ev::Deleted { repo, digest, tag, dest, at }),
        1 => at.prop_map(|at| Ev::Broken { at }),
    ]
}

/// The copies' and the deletes' verdicts, each as one comparable line.
#[derive(Default)]
struct Lines(Vec<String>);

impl Findings for Lines {
    fn verdict(&mut self, record: &ReplicationRecord) {
        self.0.push(serde_json::to_string(record).unwrap());
    }

    fn deletion(&mut self, record: &DeletionRecord) {
        self.0
            .push(format!("delete {}", serde_json::to_string(record).unwrap()));
    }
}

/// Every verdict, of a copy or a delete, as one comparable line, sorted, and the counts that do
/// not depend on order.
fn run(records: &[Value], window: Window) -> (Vec<String>, Report) {
    let mut engine = Engine::new([config()], window);
    let mut verdicts = Lines::default();
    for (i, r) in records.iter().enumerate() {
        engine.ingest(r, || format!("#{i}"), &mut verdicts);
    }
    // A fixed "now", so that the audit time does not depend on which event came last.
    let now = at(1500);
    let report = engine.finish(Some(now), &mut verdicts);
    verdicts.0.sort();
    (verdicts.0, report)
}

fn order_free(report: &Report) -> String {
    let mut unmatched: Vec<String> = report
        .unmatched
        .iter()
        .map(|u| serde_json::to_string(u).unwrap())
        .collect();
    unmatched.sort();
    format!(
        "{:?} {} {:?} {}",
        report.events,
        serde_json::to_string(&report.destinations).unwrap(),
        unmatched,
        report.problems.len()
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn verdicts_do_not_depend_on_the_order_events_arrive_in(
        (events, order) in prop::collection::vec(ev_strategy(), 1..40)
            .prop_flat_map(|events| {
                let n = events.len();
                (Just(events), Just((0..n).collect::<Vec<_>>()).prop_shuffle())
            })
    ) {
        let records: Vec<Value> = events.iter().enumerate().map(|(i, e)| event(i, e)).collect();
        let shuffled: Vec<Value> = order.iter().map(|&i| records[i].clone()).collect();
        let (a, ra) = run(&records, Window::DEFAULT);
        let (b, rb) = run(&shuffled, Window::DEFAULT);
        prop_assert_eq!(a, b);
        prop_assert_eq!(order_free(&ra), order_free(&rb));
    }

    #[test]
    fn replaying_the_same_events_twice_gives_the_same_report(events in prop::collection::vec(ev_strategy(), 1..40)) {
        let records: Vec<Value> = events.iter().enumerate().map(|(i, e)| event(i, e)).collect();
        let (a, ra) = run(&records, Window::DEFAULT);
        let (b, rb) = run(&records, Window::DEFAULT);
        prop_assert_eq!(a, b);
        prop_assert_eq!(format!("{ra:?}"), format!("{rb:?}"));
    }

    #[test]
    fn redelivering_events_changes_no_verdict_and_counts_each_repeat_as_duplicate(
        events in prop::collection::vec(ev_strategy(), 1..30),
        repeats in prop::collection::vec((0..30usize, 1..5usize), 0..10),
    ) {
        let records: Vec<Value> = events.iter().enumerate().map(|(i, e)| event(i, e)).collect();
        let mut redelivered = records.clone();
        let mut extra = 0;
        for (which, times) in repeats {
            let r = &records[which % records.len()];
            for _ in 0..times {
                redelivered.push(r.clone());
                extra += 1;
            }
        }
        let (a, ra) = run(&records, Window::DEFAULT);
        let (b, rb) = run(&redelivered, Window::DEFAULT);
        prop_assert_eq!(a, b);
        prop_assert_eq!(rb.events.duplicate, ra.events.duplicate + extra);
        prop_assert_eq!(rb.events.read, ra.events.read + extra);
        prop_assert_eq!(
            (ra.events.push, ra.events.replication, ra.events.rejected),
            (rb.events.push, rb.events.replication, rb.events.rejected)
        );
    }
}

/// The small world above does make the verdicts the properties compare: a restore's copy, and
/// a delete owed (in ap-southeast-2, for a `prod` repository) and applied there.
#[test]
fn the_drawn_world_yields_restore_and_delete_verdicts() {
    let events = [
        Ev::Restore {
            repo: 1,
            digest: 0,
            at: 0,
        },
        Ev::Copy {
            repo: 1,
            digest: 0,
            tag: 0,
            dest: 2,
            at: 30,
            ok: true,
        },
        Ev::Delete {
            repo: 1,
            digest: 0,
            tag: 0,
            at: 100,
        },
        Ev::Deleted {
            repo: 1,
            digest: 0,
            tag: 0,
            dest: 2,
            at: 140,
        },
    ];
    let records: Vec<Value> = events
        .iter()
        .enumerate()
        .map(|(i, e)| event(i, e))
        .collect();
    let (lines, _) = run(&records, Window::DEFAULT);
    let restored = r#""destination_region":"ap-southeast-2""#;
    assert!(
        lines.iter().any(|l| l.contains(r#""trigger":"restore""#)
            && l.contains(restored)
            && l.contains(r#""status":"replicated""#)),
        "{lines:#?}"
    );
    assert!(
        lines.iter().any(|l| l.starts_with("delete ")
            && l.contains(restored)
            && l.contains(r#""latency_seconds":40"#)),
        "{lines:#?}"
    );
}
