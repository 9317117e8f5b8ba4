//! AWS faults, and what they may and may not cost: nothing lost, nothing counted twice.
//!
//! 1. **The SDK's retries** (aws-smithy-mocks on a real `aws_sdk_dynamodb::Client`, through the
//!    SDK's own retry classifier): throttling and 5xx answers of GetItem, BatchGetItem, PutItem,
//!    TransactWriteItems and Query are retried within the standard policy (three attempts), and
//!    what outlives it reaches the handler as a transient store error that names the operation
//!    and the table. (The same for ECR: `ecr_adapter_mocks.rs`; CloudWatch:
//!    `metrics_adapters.rs`.)
//! 2. **Invocations that fail, and their retries**, on the real handler, store and registry
//!    against moto, through a fault-injecting proxy ([`FaultProxy`]): DynamoDB and ECR throttled
//!    or failing past the SDK's retries fail the invocation (EventBridge retries it); handled
//!    again once the fault has cleared, every (push, destination) is counted exactly once.
//!    Then every store call of a whole scenario in turn fails once, before it reaches DynamoDB
//!    (exactly once) or after its change landed (at most once: the documented limit).
//! 3. **Credentials never reach the logs**, errors included (access denied, a role that cannot
//!    be assumed). The external id sent with AssumeRole is checked in
//!    `ecr_adapter_mocks.rs`.
//!
//! A metrics sink that fails never loses a verdict (the state is saved first, the data goes to
//! the EMF fallback): `handler.rs`, `when_cloudwatch_fails_*` and
//! `metrics_lost_by_both_sinks_fail_the_invocation_but_the_state_is_kept`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use aws_credential_types::Credentials;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::config::retry::RetryConfig;
use aws_sdk_dynamodb::operation::batch_get_item::BatchGetItemOutput;
use aws_sdk_dynamodb::operation::get_item::GetItemOutput;
use aws_sdk_dynamodb::operation::put_item::PutItemOutput;
use aws_sdk_dynamodb::operation::query::QueryOutput;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsOutput;
use aws_sdk_dynamodb::types::{AttributeValue, KeysAndAttributes};
use aws_smithy_mocks::{Rule, RuleMode, mock, mock_client};
use serde_json::Value;

use ecr_replication_auditor::adapters::dynamodb::{
    DynamoStateStore, StoredGroup, group_pk, landed, record_pk,
};
use ecr_replication_auditor::adapters::ecr::EcrRegistry;
use ecr_replication_auditor::app::handler::{HandlerError, Summary};
use ecr_replication_auditor::domain::correlate::{CopySeen, GroupKey};
use ecr_replication_auditor::domain::ids::EventId;
use ecr_replication_auditor::domain::ledger::TrackedGroup;
use ecr_replication_auditor::domain::time::{Timestamp, Window};
use ecr_replication_auditor::ports::state::{DueWork, StateStore, StoreError, Versioned, Want};
use ecr_replication_auditor::settings;

use crate::support::ids::{at, event_id, synthetic_digest, tag};
use crate::support::{alone, logs, world};
use world::{CROSS, SAME, Series, TABLE, TAG, WINDOW_SECS, World, group_key, sweep, to};

// ---------------------------------------------------------------------------------------------
// 1. The DynamoDB adapter under the SDK's retries
// ---------------------------------------------------------------------------------------------

/// A store whose every request is answered by `rules`, with the SDK's standard retries (three
/// attempts) and a backoff of a few milliseconds.
fn mocked_store(rules: &[&Rule]) -> DynamoStateStore {
    let client = mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, rules, |config| config
        .retry_config(
            RetryConfig::standard()
                .with_max_attempts(3)
                .with_initial_backoff(Duration::from_millis(1))
                .with_max_backoff(Duration::from_millis(5))
        ));
    DynamoStateStore::new(client, TABLE, 30)
}

/// An awsJson 1.0 error body, as DynamoDB sends it.
fn dynamodb_error(code: &str, message: &str) -> Option<String> {
    Some(format!(
        r#"{{"__type":"com.amazonaws.dynamodb.v20120810#{code}","message":"{message}"}}"#
    ))
}

fn mock_key(n: u16) -> GroupKey {
    group_key(SAME, &synthetic_digest(n))
}

/// A group with one push and its copy.
fn tracked() -> TrackedGroup {
    let mut t = TrackedGroup::default();
    t.group.add_push(Some(tag(TAG)), at(0));
    t.group.add_copy(CopySeen {
        id: event_id("c-1"),
        at: at(7),
        tag: Some(tag(TAG)),
        succeeded: true,
    });
    t.settle(&mock_key(1), Window::DEFAULT, at(7));
    t
}

/// The item DynamoDB holds for `key` at `version`, as the previous version wrote it (one item
/// for the whole group), which is still read.
fn item(key: &GroupKey, version: u64) -> HashMap<String, AttributeValue> {
    let body = serde_json::to_string(&StoredGroup::new(key, &tracked())).unwrap();
    HashMap::from([
        ("pk".to_owned(), AttributeValue::S(group_pk(key))),
        ("version".to_owned(), AttributeValue::N(version.to_string())),
        ("body".to_owned(), AttributeValue::S(body)),
    ])
}

fn unsaved() -> Versioned<TrackedGroup> {
    Versioned::new(0, tracked())
}

/// A group whose save is its head alone: a copy whose push is not known yet.
fn copy_only() -> Versioned<TrackedGroup> {
    let mut t = TrackedGroup::default();
    t.group.add_copy(CopySeen {
        id: event_id("c-9"),
        at: at(7),
        tag: Some(tag(TAG)),
        succeeded: true,
    });
    Versioned::new(0, t)
}

/// `key`'s head and nothing else asked for.
fn head_of(key: &GroupKey) -> Want {
    (key.clone(), Vec::new())
}

fn transient_naming(err: StoreError, operation: &str, code: &str) {
    let StoreError::Transient(message) = &err else {
        panic!("expected a transient error, got {err:?}");
    };
    for part in [operation, TABLE, code] {
        assert!(message.contains(part), "{part:?} not in {message:?}");
    }
}

#[tokio::test]
async fn get_item_throttled_twice_is_retried_by_the_sdk_and_the_group_loads() {
    let key = mock_key(1);
    let answer = item(&key, 4);
    let rule = mock!(Client::get_item)
        .sequence()
        .http_status(
            400,
            dynamodb_error("ProvisionedThroughputExceededException", "slow down"),
        )
        .times(2)
        .output(move || {
            GetItemOutput::builder()
                .set_item(Some(answer.clone()))
                .build()
        })
        .build();

    let loaded = mocked_store(&[&rule]).load(&[head_of(&key)]).await.unwrap();

    assert_eq!(loaded[0].version, 4);
    assert_eq!(loaded[0].value, tracked());
    assert_eq!(rule.num_calls(), 3, "two throttled attempts, then the item");
}

/// A save that changes only a group's head is one conditional PutItem.
#[tokio::test]
async fn put_item_throttled_past_the_retries_is_a_transient_error_naming_the_operation_and_table() {
    let rule = mock!(Client::put_item)
        .sequence()
        .http_status(400, dynamodb_error("ThrottlingException", "Rate exceeded"))
        .repeatedly()
        .build();

    let err = mocked_store(&[&rule])
        .save(&[(mock_key(1), copy_only())])
        .await
        .unwrap_err();

    transient_naming(err, "PutItem", "ThrottlingException");
    assert_eq!(rule.num_calls(), 3, "the standard policy's three attempts");
}

/// The previous version recognised a save whose answer was lost only while the item still named
/// it: a save by another invocation on top, before the SDK's retry, made it take its own landed
/// write for a lost race, and the findings of that write were never published. The head now
/// keeps the writers of its last eight versions.
#[tokio::test]
async fn a_landed_save_whose_answer_was_lost_is_recognised_even_after_another_save_on_top() {
    use std::sync::{Arc, Mutex};
    let token: Arc<Mutex<Option<String>>> = Arc::default();
    let seen = token.clone();
    // First attempt: it lands (we record its token), but its answer is lost (a 500 the SDK
    // retries). Meanwhile another invocation saves version 2 on top. The retry's condition
    // (version = 0, the item must not exist) fails, and DynamoDB returns the head as it is now.
    let rule = mock!(Client::put_item)
        .match_requests(move |req| {
            // A new head's first version names its writer in slot w1.
            if let Some(AttributeValue::S(t)) = req.item().and_then(|i| i.get("w1")) {
                seen.lock().unwrap().get_or_insert_with(|| t.clone());
            }
            true
        })
        .sequence()
        .http_status(500, dynamodb_error("InternalServerError", "Internal error"))
        .http_response(move || {
            let ours = token.lock().unwrap().clone().unwrap_or_default();
            let body = format!(
                r#"{{"__type":"com.amazonaws.dynamodb.v20120810#ConditionalCheckFailedException","message":"The conditional request failed","Item":{{"pk":{{"S":"x"}},"version":{{"N":"2"}},"w1":{{"S":"{ours}"}},"w2":{{"S":"another invocation"}}}}}}"#
            );
            aws_smithy_runtime_api::http::Response::new(
                aws_smithy_runtime_api::http::StatusCode::try_from(400).unwrap(),
                aws_smithy_types::body::SdkBody::from(body),
            )
        })
        .build();

    let saved = mocked_store(&[&rule])
        .save(&[(mock_key(1), copy_only())])
        .await;

    assert_eq!(saved, Ok(true), "its own write, under another one");
    assert_eq!(rule.num_calls(), 2);
}

#[test]
fn a_head_whose_slot_names_another_writer_is_a_lost_race() {
    let head = HashMap::from([
        ("version".to_owned(), AttributeValue::N("2".into())),
        ("w1".to_owned(), AttributeValue::S("someone else".into())),
    ]);
    assert!(!landed(Some(&head), 1, "ours"));
    assert!(landed(Some(&head), 1, "someone else"));
}

#[tokio::test]
async fn a_transaction_answered_with_http_500_is_retried_and_then_written() {
    let rule = mock!(Client::transact_write_items)
        .sequence()
        .http_status(500, dynamodb_error("InternalServerError", "Internal error"))
        .output(|| TransactWriteItemsOutput::builder().build())
        .build();

    let saved = mocked_store(&[&rule])
        .save(&[(mock_key(1), unsaved()), (mock_key(2), unsaved())])
        .await;

    assert_eq!(saved, Ok(true));
    assert_eq!(rule.num_calls(), 2);
}

#[tokio::test]
async fn a_transaction_cancelled_for_throttling_is_transient_not_a_lost_race() {
    // DynamoDB reports a throttled item of a transaction as a cancellation, which the SDK does
    // not retry: the adapter must not take it for another writer having come first (which would
    // make the handler load again and find "nothing new").
    let body = r#"{"__type":"com.amazonaws.dynamodb.v20120810#TransactionCanceledException","Message":"Transaction cancelled, please refer cancellation reasons for specific reasons [ThrottlingError, None]","CancellationReasons":[{"Code":"ThrottlingError","Message":"Throughput exceeds the current capacity for one or more global secondary indexes."},{"Code":"None"}]}"#;
    let rule = mock!(Client::transact_write_items)
        .sequence()
        .http_status(400, Some(body.to_owned()))
        .repeatedly()
        .build();

    let err = mocked_store(&[&rule])
        .save(&[(mock_key(1), unsaved()), (mock_key(2), unsaved())])
        .await
        .unwrap_err();

    transient_naming(err, "TransactWriteItems", "TransactionCanceledException");
    assert_eq!(rule.num_calls(), 1);
}

#[tokio::test]
async fn the_sweeps_query_failing_with_server_errors_past_the_retries_is_transient() {
    let rule = mock!(Client::query)
        .sequence()
        .http_status(500, None)
        .repeatedly()
        .build();

    let err = mocked_store(&[&rule])
        .due(at(WINDOW_SECS + 1), 100, false)
        .await
        .unwrap_err();

    transient_naming(err, "Query", "HTTP 500");
    // The index's first query goes alone (the others eight at once after it): while the table
    // is failing, one request is tried three times, not eight.
    assert_eq!(rule.num_calls(), 3);
}

#[tokio::test]
async fn the_sweeps_query_recovers_from_one_throttled_page() {
    let key = mock_key(1);
    let due_at = at(WINDOW_SECS + 1);
    // What the `due` index holds (keys only): the record's key, its queue and shard, its time.
    let entry = HashMap::from([
        (
            "pk".to_owned(),
            AttributeValue::S(record_pk(&key, &Some(tag(TAG)))),
        ),
        ("due_shard".to_owned(), AttributeValue::S("F#00".into())),
        (
            "due_at".to_owned(),
            AttributeValue::N(due_at.millis().to_string()),
        ),
    ]);
    let rule = mock!(Client::query)
        .sequence()
        .http_status(400, dynamodb_error("ThrottlingException", "Rate exceeded"))
        .output(move || QueryOutput::builder().items(entry.clone()).build())
        .output(|| QueryOutput::builder().build())
        .repeatedly()
        .build();

    let work: DueWork = mocked_store(&[&rule])
        .due(at(WINDOW_SECS + 60), 100, false)
        .await
        .unwrap();

    assert_eq!(work.due.len(), 1);
    assert_eq!(
        (&work.due[0].key, &work.due[0].tag, work.due[0].due_at),
        (&key, &Some(tag(TAG)), due_at)
    );
    assert_eq!(work.in_flight.values().sum::<u64>(), 1, "counted in flight");
    assert_eq!(
        rule.num_calls(),
        1 + 16 * 3 + 1,
        "one throttled attempt, a query per queue and shard, one of the previous version's index"
    );
}

#[tokio::test]
async fn batch_get_item_asks_again_for_unprocessed_keys_and_retries_a_server_error() {
    let (a, b) = (mock_key(1), mock_key(2));
    let (item_a, item_b) = (item(&a, 1), item(&b, 3));
    let unprocessed = KeysAndAttributes::builder()
        .keys(HashMap::from([(
            "pk".to_owned(),
            AttributeValue::S(group_pk(&b)),
        )]))
        .build()
        .unwrap();
    let rule = mock!(Client::batch_get_item)
        .sequence()
        .output(move || {
            BatchGetItemOutput::builder()
                .responses(TABLE, vec![item_a.clone()])
                .unprocessed_keys(TABLE, unprocessed.clone())
                .build()
        })
        .http_status(500, dynamodb_error("InternalServerError", "Internal error"))
        .output(move || {
            BatchGetItemOutput::builder()
                .responses(TABLE, vec![item_b.clone()])
                .build()
        })
        .build();

    let loaded = mocked_store(&[&rule])
        .load(&[head_of(&a), head_of(&b)])
        .await
        .unwrap();

    assert_eq!((loaded[0].version, loaded[1].version), (1, 3));
    assert_eq!(
        rule.num_calls(),
        3,
        "the first page, a 500, the unprocessed key"
    );
}

#[tokio::test]
async fn recording_a_rejected_event_retries_a_server_error_and_counts_it_once() {
    let rule = mock!(Client::put_item)
        .sequence()
        .http_status(503, None)
        .output(|| PutItemOutput::builder().build())
        .build();

    let first = mocked_store(&[&rule])
        .first_rejection(&event_id("bad-1"), at(0))
        .await;

    assert_eq!(first, Ok(true));
    assert_eq!(rule.num_calls(), 2);
}

// ---------------------------------------------------------------------------------------------
// 2. Failed invocations and their retries, against moto
// ---------------------------------------------------------------------------------------------

/// A canned AWS error, as the proxy answers it.
struct Fault {
    /// What the proxy matches in the request: the operation's `X-Amz-Target`.
    marker: &'static str,
    status: u16,
    content_type: &'static str,
    body: &'static str,
}

const DYNAMODB_JSON: &str = "application/x-amz-json-1.0";
const ECR_JSON: &str = "application/x-amz-json-1.1";

fn throttled(marker: &'static str) -> Fault {
    Fault {
        marker,
        status: 400,
        content_type: DYNAMODB_JSON,
        body: r#"{"__type":"com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException","message":"The level of configured provisioned throughput for the table was exceeded."}"#,
    }
}

fn server_error(marker: &'static str) -> Fault {
    Fault {
        marker,
        status: 500,
        content_type: DYNAMODB_JSON,
        body: r#"{"__type":"com.amazonaws.dynamodb.v20120810#InternalServerError","message":"Internal server error"}"#,
    }
}

fn ecr_throttled(marker: &'static str) -> Fault {
    Fault {
        marker,
        status: 400,
        content_type: ECR_JSON,
        body: r#"{"__type":"ThrottlingException","message":"Rate exceeded"}"#,
    }
}

impl Fault {
    fn operation(&self) -> &'static str {
        self.marker.rsplit('.').next().unwrap()
    }
}

/// Handles `payload` with `fault` in force: the SDK tries three times, the invocation fails
/// with a transient error; then, the fault cleared, EventBridge's retry a minute later succeeds.
async fn fails_then_succeeds(w: &World, fault: &Fault, payload: &Value, secs: i64) -> Summary {
    let before = w.proxy.seen(fault.operation());
    w.proxy
        .answer(fault.marker, fault.status, fault.content_type, fault.body);
    let err = w
        .auditor
        .handle(payload, w.at(secs))
        .await
        .expect_err("the invocation fails while the fault lasts");
    w.proxy.restore();
    // The SDK's standard retries: three attempts, unless the retry quota, which the SDK keeps
    // per service and Region for the whole process, allows fewer. It does here for ECR in the
    // source Region, which this test's own sweeps drain with moto's HTTP 500 for
    // DescribeImageReplicationStatus (the exact counts: the aws-smithy-mocks tests above); the
    // other tests of the binary would drain it all, hence the process of its own.
    let attempts = w.proxy.seen(fault.operation()) - before;
    assert!(
        (2..=3).contains(&attempts),
        "{}: {attempts} attempts ({err})",
        fault.marker
    );
    let transient = match &err {
        HandlerError::Store(e) => e.is_transient(),
        HandlerError::Registry(e) => e.is_transient(),
        HandlerError::Unconfirmed(_) => true,
        _ => false,
    };
    assert!(transient, "{}: {err}", fault.marker);
    assert!(
        err.to_string().contains(fault.operation()) || matches!(err, HandlerError::Unconfirmed(_)),
        "the error names the operation: {err}"
    );
    w.auditor
        .handle(payload, w.at(secs + 60))
        .await
        .unwrap_or_else(|e| panic!("{}: the retry fails too: {e}", fault.marker))
}

/// What the scenario must count, once each: for every push, two expected copies; the
/// same-account copy on time; the cross-account one missing at its deadline, then late.
fn expected_counts(pushes: f64) -> BTreeMap<Series, f64> {
    let mut want = BTreeMap::new();
    for (name, dims, n) in [
        ("ReplicationsExpected", to(SAME), 1.0),
        ("ReplicationsExpected", to(CROSS), 1.0),
        ("ReplicationsCompleted", to(SAME), 1.0),
        ("ReplicationLatency", to(SAME), 1.0),
        ("ReplicationsMissing", to(CROSS), 1.0),
        ("ReplicationsCompleted", to(CROSS), 1.0),
        ("ReplicationLatency", to(CROSS), 1.0),
        ("ReplicationsLate", to(CROSS), 1.0),
    ] {
        *want.entry((name, dims.clone())).or_default() += n * pushes;
        *want.entry((name, vec![])).or_default() += n * pushes;
    }
    want
}

#[tokio::test]
async fn throttling_and_server_errors_past_the_sdks_retries_fail_the_invocation_and_its_retry_counts_once()
 {
    // It counts the SDK's retries of DescribeRegistry in us-west-2, whose retry quota the other
    // moto tests of this binary spend: it runs in a process of its own (support::alone).
    if !alone::in_own_process(
        module_path!(),
        "throttling_and_server_errors_past_the_sdks_retries_fail_the_invocation_and_its_retry_counts_once",
    ) {
        return;
    }
    let w = World::start().await;
    // Each push meets its fault at a different step: the push's own reads and writes, its
    // copy's, the sweep's query, ECR's answers.
    let faults = [
        (
            "push",
            ecr_throttled("AmazonEC2ContainerRegistry_V20150921.DescribeRegistry"),
        ),
        ("push", throttled("DynamoDB_20120810.BatchGetItem")),
        ("push", server_error("DynamoDB_20120810.TransactWriteItems")),
        // A copy reads its group's head and records at once, and writes the head and its
        // record in one transaction.
        ("copy", throttled("DynamoDB_20120810.BatchGetItem")),
        ("copy", server_error("DynamoDB_20120810.TransactWriteItems")),
        ("sweep", throttled("DynamoDB_20120810.Query")),
        (
            "sweep",
            ecr_throttled("AmazonEC2ContainerRegistry_V20150921.DescribeImages"),
        ),
        (
            "late copy",
            throttled("DynamoDB_20120810.TransactWriteItems"),
        ),
    ];
    for (n, (step, fault)) in faults.iter().enumerate() {
        let digest = synthetic_digest(n as u16 + 1);
        // The configuration is cached for five minutes: a new cache period for each round, so
        // that DescribeRegistry is asked.
        let base = n as i64 * 10_000;
        let steps = [
            ("push", w.push(&format!("p-{n}"), base, &digest), base + 1),
            (
                "copy",
                w.copy(&format!("c-same-{n}"), base + 7, SAME, &digest),
                base + 7,
            ),
            ("sweep", sweep(), base + WINDOW_SECS + 1),
            (
                "late copy",
                w.copy(
                    &format!("c-cross-{n}"),
                    base + WINDOW_SECS + 100,
                    CROSS,
                    &digest,
                ),
                base + WINDOW_SECS + 100,
            ),
            // Late once no earlier copy can still come: five minutes after the copy.
            ("late counted", sweep(), base + WINDOW_SECS + 400),
        ];
        for (name, payload, secs) in &steps {
            if name == step {
                fails_then_succeeds(&w, fault, payload, *secs).await;
            } else {
                w.auditor
                    .handle(payload, w.at(*secs))
                    .await
                    .unwrap_or_else(|e| panic!("round {n}, {name}: {e}"));
            }
        }
        assert!(w.open_groups().await.is_empty(), "round {n}: all settled");
    }
    // The pushes are at different times, so each round's data points are its own; the counts
    // per series add up.
    assert_eq!(w.metrics.counts(), expected_counts(faults.len() as f64));
    assert_eq!(w.fallback.calls(), 0);
}

/// When an injected fault strikes a store call.
#[derive(Clone, Copy, Debug, PartialEq)]
enum When {
    /// The call never reaches DynamoDB: nothing changed there.
    Before,
    /// The call's change landed in DynamoDB, but its answer never came back (through every
    /// SDK retry): the handler sees the same error as before.
    After,
}

/// A [`StateStore`] that fails its `n`-th call once, with a transient error.
struct Flaky<S> {
    inner: S,
    /// The operation of every call so far.
    calls: Mutex<Vec<&'static str>>,
    fault: Mutex<Option<(usize, When)>>,
}

impl<S: StateStore + Sync> Flaky<S> {
    fn new(inner: S) -> Self {
        Flaky {
            inner,
            calls: Mutex::default(),
            fault: Mutex::default(),
        }
    }

    /// Counts calls afresh, and fails the `n`-th (1-based) `when`.
    fn arm(&self, fault: Option<(usize, When)>) {
        self.calls.lock().unwrap().clear();
        *self.fault.lock().unwrap() = fault;
    }

    fn calls(&self) -> Vec<&'static str> {
        self.calls.lock().unwrap().clone()
    }

    async fn around<T>(
        &self,
        operation: &'static str,
        call: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let n = {
            let mut calls = self.calls.lock().unwrap();
            calls.push(operation);
            calls.len()
        };
        let when = {
            let mut fault = self.fault.lock().unwrap();
            match *fault {
                Some((at, when)) if at == n => {
                    *fault = None;
                    Some(when)
                }
                _ => None,
            }
        };
        if when == Some(When::Before) {
            return Err(StoreError::Transient(format!(
                "injected: {operation} did not reach DynamoDB"
            )));
        }
        let result = call.await;
        if when == Some(When::After) {
            return Err(StoreError::Transient(format!(
                "injected: {operation} landed but its answer was lost"
            )));
        }
        result
    }
}

impl<S: StateStore + Sync> StateStore for Flaky<S> {
    async fn load(&self, wants: &[Want]) -> Result<Vec<Versioned<TrackedGroup>>, StoreError> {
        self.around("load", self.inner.load(wants)).await
    }

    async fn save(
        &self,
        groups: &[(GroupKey, Versioned<TrackedGroup>)],
    ) -> Result<bool, StoreError> {
        self.around("save", self.inner.save(groups)).await
    }

    async fn due(
        &self,
        now: Timestamp,
        budget: usize,
        count_watched: bool,
    ) -> Result<DueWork, StoreError> {
        self.around("due", self.inner.due(now, budget, count_watched))
            .await
    }

    async fn first_rejection(&self, id: &EventId, at: Timestamp) -> Result<bool, StoreError> {
        self.around("first_rejection", self.inner.first_rejection(id, at))
            .await
    }
}

type FlakyWorld = World<Flaky<DynamoStateStore>, EcrRegistry>;

/// One round of the scenario on a digest of its own: a push to both destinations, its
/// same-account copy (delivered twice), a malformed event, the sweep that finds the
/// cross-account copy missing, the late copy, the whole lot once more, and the sweep that
/// counts the copy late. A failed invocation is delivered again a minute later, as EventBridge
/// would. Returns what the round counted, as (series, time, value) -> count, and the store call
/// that failed, if one did.
async fn round(
    w: &FlakyWorld,
    n: u16,
    fault: Option<(usize, When)>,
) -> (BTreeMap<String, f64>, Option<&'static str>) {
    let store = w.auditor.store();
    let digest = synthetic_digest(n);
    let push = w.push(&format!("p-{n}"), 0, &digest);
    let same = w.copy(&format!("c-same-{n}"), 7, SAME, &digest);
    let bad = w.malformed(&format!("bad-{n}"), 9);
    let late = w.copy(&format!("c-cross-{n}"), WINDOW_SECS + 100, CROSS, &digest);
    let steps = [
        (push.clone(), 1),
        (same.clone(), 7),
        (same.clone(), 8),
        (bad.clone(), 9),
        (sweep(), WINDOW_SECS + 1),
        (late.clone(), WINDOW_SECS + 100),
        (Value::Array(vec![push, same, bad, late]), WINDOW_SECS + 200),
        // Late once no earlier copy can still come: five minutes after the copy.
        (sweep(), WINDOW_SECS + 500),
    ];
    let published_before = w.metrics.data().len();
    store.arm(fault);
    let mut failed = None;
    for (payload, secs) in steps {
        match w.auditor.handle(&payload, w.at(secs)).await {
            Ok(_) => {}
            Err(e) => {
                let HandlerError::Store(StoreError::Transient(m)) = &e else {
                    panic!("round {n}: not a transient store error: {e}");
                };
                assert!(m.starts_with("injected"), "round {n}: {e}");
                assert!(failed.is_none(), "round {n}: one fault, one failure: {e}");
                let calls = store.calls();
                failed = fault.map(|(at, _)| calls[at - 1]);
                w.auditor
                    .handle(&payload, w.at(secs + 60))
                    .await
                    .unwrap_or_else(|e| panic!("round {n}: the redelivery failed: {e}"));
            }
        }
    }
    assert!(w.open_groups().await.is_empty(), "round {n}: all settled");
    let mut counted = BTreeMap::new();
    for d in &w.metrics.data()[published_before..] {
        // A rejection, and a problem that pages (dated when found, so that the alarms see it),
        // are counted when they are handled: a retry a minute later moves them.
        let at = match d.name.as_str() {
            "PendingReplications" | "ReplicationsWatched" => continue,
            "EventsRejected"
            | "ReplicationsMissing"
            | "ReplicationsLate"
            | "ReplicationsFailed"
            | "UntaggedCopies"
            | "StaleTags" => 0,
            _ => d.timestamp.millis(),
        };
        for (v, c) in d.values.iter().zip(&d.counts) {
            let series = format!("{} {:?} {at} {v}", d.name.as_str(), d.dimensions);
            *counted.entry(series).or_default() += c;
        }
    }
    (counted, failed)
}

async fn flaky_world() -> FlakyWorld {
    World::start_with(world::handler_credentials(), Flaky::new, |r| r).await
}

#[tokio::test]
async fn every_store_call_failing_once_before_it_reaches_dynamodb_costs_one_retry_and_nothing_else()
{
    let w = flaky_world().await;
    let (want, _) = round(&w, 1, None).await;
    let calls = w.auditor.store().calls();
    assert!(
        calls.len() >= 12,
        "the scenario exercises the store: {calls:?}"
    );
    assert_eq!(
        want.values().sum::<f64>(),
        expected_counts(1.0).values().sum::<f64>() + 1.0,
        "the baseline counts each finding once, and the malformed event once: {want:#?}"
    );

    for at in 1..=calls.len() {
        let (got, failed) = round(&w, 1 + at as u16, Some((at, When::Before))).await;
        assert!(
            failed.is_some(),
            "call {at} ({}) failed an invocation",
            calls[at - 1]
        );
        assert_eq!(got, want, "call {at} ({}) failing first", calls[at - 1]);
    }
}

#[tokio::test]
async fn a_store_call_whose_change_landed_but_whose_answer_never_came_back_is_counted_at_most_once()
{
    let w = flaky_world().await;
    let (want, _) = round(&w, 1, None).await;
    let calls = w.auditor.store().calls();

    let mut lost = Vec::new();
    for at in 1..=calls.len() {
        let (got, failed) = round(&w, 1 + at as u16, Some((at, When::After))).await;
        let failed = failed.expect("the injected error failed an invocation");
        for (series, count) in &got {
            assert!(
                want.get(series).is_some_and(|w| count <= w),
                "call {at} ({failed}): {series} counted {count} times"
            );
        }
        match failed {
            // A read changed nothing: its retry counts everything, once.
            "load" | "due" => assert_eq!(got, want, "call {at} ({failed})"),
            // A write that landed: its retry finds the change made and counts nothing more. The
            // findings that write carried are not published; never twice (README, "Guarantees
            // and limits").
            _ => {
                if got != want {
                    lost.push(format!("call {at} ({failed})"));
                }
            }
        }
    }
    eprintln!(
        "{} store calls; a landed write whose answer never came lost its findings at: {lost:?}",
        calls.len()
    );
    assert!(!lost.is_empty(), "the limit the README documents is real");
}

// ---------------------------------------------------------------------------------------------
// 3. Credentials in logs
// ---------------------------------------------------------------------------------------------

const ACCESS_KEY: &str = "AKIAFAULTTESTKEY0001";
const SECRET: &str = "faultsSecretKey/DoNotLog+9f8e7d6c5b4a39281706";
const SESSION_TOKEN: &str = "IQoJb3JpZ2luX2VjEFaultsSessionTokenDoNotLogAAAABBBBCCCC";

/// Every access key id (`AKIA` or `ASIA` and 16 upper-case letters or digits) in `text`.
fn access_keys(text: &str) -> Vec<&str> {
    let bytes = text.as_bytes();
    (0..bytes.len().saturating_sub(19))
        .filter(|&i| {
            (bytes[i..].starts_with(b"AKIA") || bytes[i..].starts_with(b"ASIA"))
                && bytes[i + 4..i + 20]
                    .iter()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
        })
        .map(|i| &text[i..i + 20])
        .collect()
}

#[tokio::test]
async fn credentials_and_session_tokens_never_reach_the_logs_even_when_aws_refuses() {
    // The Lambda's filter with RUST_LOG=trace: everything, the SDK's own events included, as
    // the Lambda formats it.
    let logs = logs::capture_filtered(|| settings::log_filter(Some("trace")));

    let credentials = Credentials::new(
        ACCESS_KEY,
        SECRET,
        Some(SESSION_TOKEN.to_owned()),
        None,
        "faults",
    );
    let w = World::start_with(credentials, |s| s, |r| r).await;
    let digest = synthetic_digest(1);
    let mut errors = Vec::new();
    let mut run =
        async |payload: Value, secs: i64| match w.auditor.handle(&payload, w.at(secs)).await {
            Ok(_) => {}
            // What the Lambda runtime reports and logs of a failed invocation.
            Err(e) => errors.push(format!("{e} / {e:?}")),
        };

    run(w.push("p-1", 0, &digest), 1).await;
    // The audit role cannot be assumed, and the status API is unavailable (moto): the sweep
    // fails; the role's refusal is logged.
    w.proxy.answer(
        "Action=AssumeRole",
        403,
        "text/xml",
        "<ErrorResponse><Error><Type>Sender</Type><Code>AccessDenied</Code><Message>User: \
         arn:aws:sts::123456789012:assumed-role/auditor-fn/x is not authorized to perform: \
         sts:AssumeRole</Message></Error><RequestId>r</RequestId></ErrorResponse>",
    );
    run(sweep(), WINDOW_SECS + 1).await;
    w.proxy.restore();
    // DynamoDB denies the copy's write (its group's head and record, in one transaction).
    w.proxy.answer(
        "DynamoDB_20120810.TransactWriteItems",
        400,
        DYNAMODB_JSON,
        r#"{"__type":"com.amazon.coral.service#AccessDeniedException","Message":"User: arn:aws:sts::123456789012:assumed-role/auditor-fn/x is not authorized to perform: dynamodb:PutItem"}"#,
    );
    run(w.copy("c-same", 7, SAME, &digest), 7).await;
    w.proxy.restore();
    // Then everything works, the role included (moto issues it credentials of its own).
    run(w.copy("c-same", 7, SAME, &digest), 8).await;
    run(sweep(), WINDOW_SECS + 2).await;
    run(w.malformed("bad-1", 9), 9).await;

    let text = format!("{}\n{}", logs.text(), errors.join("\n"));
    assert!(
        errors.len() >= 2,
        "both refusals failed their invocation: {errors:?}"
    );
    assert!(text.contains("AccessDenied"), "the refusals are logged");
    assert!(text.contains("assuming the audit role"), "{errors:?}");
    assert!(
        w.proxy.seen("AssumeRole") >= 2,
        "the role was asked for, refused then given"
    );
    for secret in [ACCESS_KEY, SECRET, SESSION_TOKEN, "FQoGZXIvYXdzE"] {
        let lines: Vec<&str> = text.lines().filter(|l| l.contains(secret)).collect();
        assert!(
            lines.is_empty(),
            "{secret} is in the logs:\n{}",
            lines.join("\n")
        );
    }
    let keyed: Vec<&str> = text
        .lines()
        .filter(|l| !access_keys(l).is_empty())
        .collect();
    assert!(
        keyed.is_empty(),
        "access key ids in the logs:\n{}",
        keyed.join("\n")
    );
    assert!(
        text.lines().any(|l| l.contains(r#""level":"TRACE""#)),
        "the SDK's trace logs are on"
    );
    let cross = w.group(CROSS, &digest).await;
    assert!(
        cross.value.watches.values().all(|w| w.counted.missing),
        "the sweep went through once the role could be assumed"
    );
}
