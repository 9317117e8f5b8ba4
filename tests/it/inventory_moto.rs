//! The Lambda's scheduled inventory reconciliation on its real adapters against moto: the pass
//! kept in the DynamoDB table (an item of its own kind), ECR read through the audit role in the
//! other account, a pass resumed across invocations, and pushes whose events never came
//! audited into the history and confirmed by the sweep.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::json;

use ecr_replication_auditor::app::inventory::InventorySettings;
use ecr_replication_auditor::ports::inventory::InventoryPasses;
use ecr_replication_auditor::ports::state::StateStore;

use crate::support::ids::registry;
use crate::support::moto;
use crate::support::world::{self, CROSS, SAME, SRC_REGION, World, ecr_in};

/// Repositories besides the world's `team/api`, each with one image copied to both
/// destinations, except `team/svc2`'s, which never reached eu-west-1.
const REPOS: [&str; 5] = [
    "team/svc0",
    "team/svc1",
    "team/svc2",
    "team/svc3",
    "team/svc4",
];

async fn populate(w: &World) {
    let src = ecr_in(&w.own, SRC_REGION);
    for (n, name) in REPOS.iter().enumerate() {
        let n = u32::try_from(n).unwrap() + 100;
        for d in [SAME, CROSS] {
            moto::create_repository(&w.ecr(d), name).await;
        }
        moto::create_repository(&src, name).await;
        moto::put_image(&src, name, n, "v1").await;
        moto::put_image(&w.ecr(SAME), name, n, "v1").await;
        if *name != "team/svc2" {
            moto::put_image(&w.ecr(CROSS), name, n, "v1").await;
        }
    }
}

fn settings() -> InventorySettings {
    InventorySettings {
        sources: vec![registry(moto::ACCOUNT, SRC_REGION)],
        since: None,
        concurrency: 2,
    }
}

#[tokio::test]
async fn a_pass_resumes_across_invocations_from_the_table_and_its_lost_pushes_are_confirmed_by_the_sweep()
 {
    let w = World::start().await;
    populate(&w).await;
    // moto stamped the pushes about 100 s after t0; their window has passed by then.
    let now = w.at(100 + 1800 + 120);
    let settings = settings();

    let mut invocations = Vec::new();
    let mut payload = json!({"action": "inventory"});
    loop {
        // Time for two repositories (and the lease) per invocation.
        let budget = AtomicUsize::new(3);
        let time_left = || {
            let left = budget
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                .unwrap_or(0);
            if left > 0 {
                Duration::from_secs(60)
            } else {
                Duration::ZERO
            }
        };
        let summary = w
            .auditor
            .invoke(&payload, now, &settings, &time_left)
            .await
            .expect("an inventory invocation");
        let inventory = summary.inventory.expect("an inventory summary");
        invocations.push((
            inventory.repositories,
            inventory.lost_pushes,
            inventory.finished,
        ));
        if inventory.finished {
            break;
        }
        payload = json!({"action": "inventory", "resume_only": true});
        assert!(invocations.len() < 6, "{invocations:?}");
    }
    // team/api (the world's, with no image) and team/svc0..4, two at a time; each image's push
    // was never seen as an event.
    assert_eq!(invocations, [(2, 1, false), (2, 2, false), (2, 2, true)]);

    let pass = w.state.load_pass().await.unwrap();
    let pass = pass.value.expect("the pass is in the table");
    assert_eq!(pass.invocations, 3);
    assert_eq!(pass.lost_pushes, 5);
    assert_eq!(pass.finished_at, Some(now));
    let published = w.metrics.take();
    let gauge = |d| {
        published
            .points("ImagesMissingAtDestination", &world_dims(d))
            .into_iter()
            .map(|(_, v, _)| v)
            .collect::<Vec<_>>()
    };
    assert_eq!(gauge(CROSS), [1.0]);
    assert_eq!(gauge(SAME), [0.0]);

    // The pass item is not a group: the sweep's index does not see it, and the sweep confirms
    // the audited pushes with DescribeImages (moto does not implement the status API).
    let in_flight: u64 = w
        .state
        .due(now, 1000, false)
        .await
        .unwrap()
        .in_flight
        .values()
        .sum();
    assert_eq!(in_flight, 10, "five images, two destinations");
    w.auditor.handle(&world::sweep(), now).await.unwrap();
    let swept = w.metrics.take();
    let count = |name, d: (&str, &str)| -> f64 {
        REPOS
            .iter()
            .map(|r| swept.count(name, &to_repo(d, r)))
            .sum()
    };
    assert_eq!(count("ReplicationsCompleted", SAME), 5.0);
    assert_eq!(count("ReplicationsCompleted", CROSS), 4.0);
    assert_eq!(count("ReplicationsMissing", CROSS), 1.0);

    // A new pass finds every push known.
    let again = w
        .auditor
        .invoke(
            &json!({"action": "inventory"}),
            w.at(30_000),
            &settings,
            &|| Duration::from_secs(60),
        )
        .await
        .unwrap();
    assert_eq!(again.inventory.unwrap().lost_pushes, 0);
}

/// The dimensions of a gauge of `d` (no Repository dimension: gauges have none).
fn world_dims(d: (&str, &str)) -> Vec<(&'static str, String)> {
    vec![
        ("SourceRegion", SRC_REGION.to_owned()),
        ("DestinationRegion", d.0.to_owned()),
        ("DestinationAccount", d.1.to_owned()),
    ]
}

/// The dimensions of a verdict metric of `repository` in `d` (the world's handler publishes
/// the Repository dimension).
fn to_repo(d: (&str, &str), repository: &str) -> Vec<(&'static str, String)> {
    let mut dims = world_dims(d);
    dims.push(("Repository", repository.to_owned()));
    dims
}

#[tokio::test]
async fn the_pass_item_is_saved_only_at_the_version_it_was_read_at() {
    use ecr_replication_auditor::domain::drift::InventoryPass;
    use ecr_replication_auditor::ports::state::Versioned;

    let w = World::start().await;
    assert_eq!(w.state.load_pass().await.unwrap(), Versioned::default());
    let pass = InventoryPass::new(w.at(0));
    let first = Versioned::new(0, pass.clone());
    assert!(w.state.save_pass(&first).await.unwrap());
    // A second invocation that read it at version 0 too comes second.
    assert!(!w.state.save_pass(&first).await.unwrap());
    let stored = w.state.load_pass().await.unwrap();
    assert_eq!(stored.version, 1);
    assert_eq!(stored.value, Some(pass));
    // Nothing about it reaches the sweep's index.
    let work = w.state.due(w.at(86_400), 1000, true).await.unwrap();
    assert!(work.due.is_empty() && work.legacy.is_empty() && work.unreadable.is_empty());
    assert!(work.in_flight.is_empty() && work.watched.is_some_and(|w| w.is_empty()));
}
