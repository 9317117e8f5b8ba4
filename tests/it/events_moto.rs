//! Replication events on a real EventBridge bus (moto's): a rule on the bus sends the
//! auditor's events to an SQS queue, which the test reads back, as another team's consumer
//! would. One `PutEvents` per invocation.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use ecr_replication_auditor::adapters::eventbridge::EventBridgeSink;
use ecr_replication_auditor::adapters::fake::FakeRegistry;
use ecr_replication_auditor::adapters::memory::MemoryStateStore;
use ecr_replication_auditor::app::handler::{AuditSettings, Auditor};
use ecr_replication_auditor::domain::signals::{ALL_DESTINATIONS, ReplicationEvent, SOURCE};
use ecr_replication_auditor::domain::time::Window;
use ecr_replication_auditor::ports::events::{EventsError, EventsSink};
use serde_json::{Value, json};

use crate::support::events::{Image, copy_event, push_event, sample};
use crate::support::ids::{at, registry};
use crate::support::metrics::RecordingSink;
use crate::support::moto::MotoServer;

const ACCOUNT: &str = "111122223333";
const BUS: &str = "ecr-replication-audit-events";

/// The adapter, counting how often the handler hands it events (one `PutEvents` each, for up
/// to ten events).
struct Counting {
    inner: EventBridgeSink,
    calls: Arc<AtomicUsize>,
}

impl EventsSink for Counting {
    async fn publish(&self, events: &[ReplicationEvent]) -> Result<(), EventsError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.inner.publish(events).await
    }
}

fn image(tag: Option<&str>) -> Image<'_> {
    Image {
        source_account: ACCOUNT,
        source_region: "us-west-2",
        repository: "team/api",
        digest: "sha256:efd0f9b95ee5a2da876ec1250b0f949bb6c3716d368f77e179212a1d91b62c38",
        tag,
    }
}

#[tokio::test]
async fn the_completion_event_reaches_a_queue_through_a_rule_on_the_bus_after_the_last_copy() {
    let server = MotoServer::start_in_account(ACCOUNT);
    let config = server.sdk_config().await;
    let events = aws_sdk_eventbridge::Client::new(&config);
    let sqs = aws_sdk_sqs::Client::new(&config);
    events
        .create_event_bus()
        .name(BUS)
        .send()
        .await
        .expect("moto's CreateEventBus");
    let queue = sqs
        .create_queue()
        .queue_name("dr-deployments")
        .send()
        .await
        .expect("moto's CreateQueue")
        .queue_url
        .unwrap();
    let queue_arn = sqs
        .get_queue_attributes()
        .queue_url(&queue)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
        .send()
        .await
        .unwrap()
        .attributes
        .unwrap()[&aws_sdk_sqs::types::QueueAttributeName::QueueArn]
        .clone();
    // The README's example rule: the image is everywhere, deploy the DR Region's service.
    let pattern = json!({"source": [SOURCE], "account": [ACCOUNT],
                         "detail-type": [ALL_DESTINATIONS],
                         "detail": {"repository-name": ["team/api"]}});
    events
        .put_rule()
        .event_bus_name(BUS)
        .name("deploy-dr")
        .event_pattern(pattern.to_string())
        .send()
        .await
        .expect("moto's PutRule");
    events
        .put_targets()
        .event_bus_name(BUS)
        .rule("deploy-dr")
        .targets(
            aws_sdk_eventbridge::types::Target::builder()
                .id("queue")
                .arn(queue_arn)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .expect("moto's PutTargets");

    let ecr = FakeRegistry::default();
    ecr.config(
        registry(ACCOUNT, "us-west-2"),
        sample("registry/us-west-2.json"),
    );
    let calls = Arc::new(AtomicUsize::new(0));
    let auditor = Auditor::new(
        MemoryStateStore::default(),
        ecr,
        RecordingSink::default(),
        RecordingSink::default(),
        AuditSettings {
            window: Window::DEFAULT,
            repository_dimension: false,
            config_cache_ms: 300_000,
            history_retention: Window::hours(24 * 90),
        },
    )
    .with_events(Counting {
        inner: EventBridgeSink::new(events.clone(), BUS),
        calls: calls.clone(),
    });

    let receive = || async {
        sqs.receive_message()
            .queue_url(&queue)
            .max_number_of_messages(10)
            .send()
            .await
            .unwrap()
            .messages
            .unwrap_or_default()
    };
    auditor
        .handle(&push_event("p", at(0), &image(Some("v1"))), at(0))
        .await
        .unwrap();
    let same = copy_event(
        "c1",
        at(7),
        &image(Some("v1")),
        ("us-east-1", ACCOUNT),
        "SUCCESS",
    );
    auditor.handle(&same, at(7)).await.unwrap();
    assert!(receive().await.is_empty(), "one destination still waits");
    assert_eq!(calls.load(Ordering::SeqCst), 0, "nothing to publish yet");

    let cross = copy_event(
        "c2",
        at(12),
        &image(Some("v1")),
        ("eu-west-1", "444455556666"),
        "SUCCESS",
    );
    auditor.handle(&cross, at(12)).await.unwrap();
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "one PutEvents for the invocation"
    );
    let messages = receive().await;
    assert_eq!(messages.len(), 1);
    let event: Value = serde_json::from_str(messages[0].body().unwrap()).unwrap();
    assert_eq!(event["source"], SOURCE);
    assert_eq!(event["detail-type"], ALL_DESTINATIONS);
    assert_eq!(
        event["detail"]["verdict-id"],
        format!(
            "{ACCOUNT}:us-west-2:team/api@{}:v1#all-destinations",
            image(None).digest
        )
    );
    assert_eq!(event["detail"]["destinations"].as_array().unwrap().len(), 2);

    // Delivered again: nothing more on the bus.
    auditor.handle(&cross, at(20)).await.unwrap();
    assert!(receive().await.is_empty());
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}
