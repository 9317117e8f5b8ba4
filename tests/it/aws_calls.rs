//! What each event costs in AWS calls, in steady state: the Lambda's handler on its real adapters
//! (DynamoDB state store and ECR registry against a local moto server, CloudWatch sink on an
//! aws-smithy-mocks client, since moto does not speak CloudWatch's protocol), with every call
//! counted.
//!
//! How calls are counted:
//! - DynamoDB and CloudWatch: an SDK interceptor (`Intercept`, [`CountingInterceptor`]) added to
//!   each client's configuration, counting executions (what the code asks for) and attempts.
//! - ECR and STS: the ECR adapter builds its own client per (account, Region) from an
//!   `SdkConfig`, and an `SdkConfig` carries no interceptors. Its HTTP client is wrapped instead
//!   ([`wire`]): each request is named by its `X-Amz-Target` (or STS `Action`), and an execution
//!   is a request whose `amz-sdk-request` header says `attempt=1`. The DynamoDB client uses the
//!   same wrapped HTTP client, and every test checks that both counters agree on its calls.
//!
//! The budgets (BENCHMARKS.md prints the figures of
//! `cargo test --test it aws_calls:: -- --nocapture`):
//! at most one DynamoDB write per push (all its destinations in one), one per copy; no
//! DescribeRegistry while the cached configuration is fresh; at most one PutMetricData per
//! invocation; ECR's confirmation APIs only for expectations whose copy has not arrived; with
//! replication events on, one `PutEvents` per ten events and none for an invocation without
//! any.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use aws_config::SdkConfig;
use aws_sdk_cloudwatch::operation::put_metric_data::PutMetricDataOutput;
use aws_sdk_dynamodb::types::AttributeValue;
use aws_smithy_mocks::{RuleMode, mock, mock_client};
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, SharedHttpConnector, http_client_fn,
};
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::{
    BeforeSerializationInterceptorContextRef, BeforeTransmitInterceptorContextRef,
};
use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, Metadata};
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;
use serde_json::{Value, json};

use ecr_replication_auditor::adapters::cloudwatch::{CloudWatchSink, EmfSink};
use ecr_replication_auditor::adapters::dynamodb::DynamoStateStore;
use ecr_replication_auditor::adapters::ecr::{AuditRole, EcrRegistry};
use ecr_replication_auditor::adapters::eventbridge::{ConfiguredEvents, EventBridgeSink};
use ecr_replication_auditor::app::handler::{AuditSettings, Auditor, Summary};
use ecr_replication_auditor::domain::time::Window;

use crate::support::ids::{account, at, synthetic_digest};
use crate::support::{events, moto};
use events::{Image, copy_event, push_event, sweep};
use moto::MotoServer;

/// The destination account, read through the audit role.
const OTHER_ACCOUNT: &str = "210987654321";
const SRC_REGION: &str = "us-west-2";
/// (Region, account) of the same-account destination, and of the cross-account one.
const SAME: (&str, &str) = ("us-east-1", moto::ACCOUNT);
const CROSS: (&str, &str) = ("eu-west-1", OTHER_ACCOUNT);
const REPO: &str = "team/api";
const TABLE: &str = "auditor-state";
const WINDOW_SECS: i64 = 1800;
const CONFIG_CACHE_SECS: i64 = 300;

const DYNAMODB_WRITES: [&str; 5] = [
    "PutItem",
    "TransactWriteItems",
    "UpdateItem",
    "DeleteItem",
    "BatchWriteItem",
];
const DYNAMODB_READS: [&str; 4] = ["GetItem", "BatchGetItem", "Query", "Scan"];
const CONFIRMATIONS: [&str; 2] = ["DescribeImageReplicationStatus", "DescribeImages"];
/// A sweep's queries: the `due` index's three queues of 16 shards each, and the previous
/// version's `open` index.
const SWEEP_QUERIES: u64 = 3 * 16 + 1;

// ---------------------------------------------------------------------------------------------
// Counting
// ---------------------------------------------------------------------------------------------

/// Executions and attempts per operation name.
#[derive(Clone, Debug, Default)]
struct Tally(Arc<Mutex<BTreeMap<String, (u64, u64)>>>);

impl Tally {
    fn add(&self, operation: &str, execution: bool) {
        let mut map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let (executions, attempts) = map.entry(operation.to_owned()).or_default();
        if execution {
            *executions += 1;
        } else {
            *attempts += 1;
        }
    }

    fn snapshot(&self) -> BTreeMap<String, (u64, u64)> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// Counts every execution and attempt of the client it is added to, by operation name.
#[derive(Clone, Debug, Default)]
struct CountingInterceptor(Tally);

fn operation(cfg: &ConfigBag) -> String {
    cfg.load::<Metadata>()
        .map_or_else(|| "(unknown)".to_owned(), |m| m.name().to_owned())
}

impl Intercept for CountingInterceptor {
    fn name(&self) -> &'static str {
        "CountingInterceptor"
    }

    // Once per execution. (`read_before_execution` would do, but a client's interceptors run
    // it before the operation's configuration, which names the operation, is in `cfg`.)
    fn read_before_serialization(
        &self,
        _context: &BeforeSerializationInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        self.0.add(&operation(cfg), true);
        Ok(())
    }

    fn read_before_attempt(
        &self,
        _context: &BeforeTransmitInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        self.0.add(&operation(cfg), false);
        Ok(())
    }
}

/// An HTTP connector that names and counts each request before passing it on.
#[derive(Debug)]
struct CountingConnector {
    inner: SharedHttpConnector,
    tally: Tally,
}

impl HttpConnector for CountingConnector {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let name = request_name(&request);
        let first = request
            .headers()
            .get("amz-sdk-request")
            .is_none_or(|v| v.contains("attempt=1;") || v.ends_with("attempt=1"));
        if first {
            self.tally.add(&name, true);
        }
        self.tally.add(&name, false);
        self.inner.call(request)
    }
}

/// `DynamoDB_20120810.PutItem` -> `PutItem`; an STS query request by its `Action`.
fn request_name(request: &HttpRequest) -> String {
    if let Some(target) = request.headers().get("x-amz-target") {
        return target.rsplit('.').next().unwrap_or(target).to_owned();
    }
    let body = request
        .body()
        .bytes()
        .map(String::from_utf8_lossy)
        .unwrap_or_default();
    body.split('&')
        .find_map(|kv| kv.strip_prefix("Action="))
        .map_or_else(|| format!("(unnamed {})", request.uri()), str::to_owned)
}

/// `base` with its HTTP client wrapped in a [`CountingConnector`] feeding `tally`.
fn wire(base: &SdkConfig, tally: &Tally) -> SdkConfig {
    // moto speaks plain HTTP; the SDK's default client would do the same through this one.
    let inner = aws_smithy_http_client::Builder::new().build_http();
    let tally = tally.clone();
    let counted = http_client_fn(move |settings, components| {
        SharedHttpConnector::new(CountingConnector {
            inner: inner.http_connector(settings, components),
            tally: tally.clone(),
        })
    });
    base.to_builder().http_client(counted).build()
}

// ---------------------------------------------------------------------------------------------
// The world: moto, the table, the source Region's rule, and the handler on its real adapters
// ---------------------------------------------------------------------------------------------

type LiveAuditor =
    Auditor<DynamoStateStore, EcrRegistry, CloudWatchSink, EmfSink<Vec<u8>>, ConfiguredEvents>;

struct World {
    /// Kept for its lifetime: dropping it stops the server.
    server: MotoServer,
    auditor: LiveAuditor,
    /// DynamoDB and CloudWatch calls, counted by the interceptor.
    sdk: Tally,
    /// Every HTTP request to moto (DynamoDB, ECR, STS), counted on the wire.
    wire: Tally,
}

/// The calls one step made: executions per operation, and the attempts (HTTP requests) of
/// those that were retried.
#[derive(Debug, Default, PartialEq, Eq)]
struct Calls {
    executions: BTreeMap<String, u64>,
    /// Only for operations with more attempts than executions.
    attempts: BTreeMap<String, u64>,
}

impl Calls {
    fn of(&self, operation: &str) -> u64 {
        self.executions.get(operation).copied().unwrap_or(0)
    }

    fn sum(&self, operations: &[&str]) -> u64 {
        operations.iter().map(|o| self.of(o)).sum()
    }

    fn writes(&self) -> u64 {
        self.sum(&DYNAMODB_WRITES)
    }

    fn reads(&self) -> u64 {
        self.sum(&DYNAMODB_READS)
    }

    fn line(&self) -> String {
        if self.executions.is_empty() {
            return "no call".to_owned();
        }
        self.executions
            .iter()
            .map(|(op, n)| match self.attempts.get(op) {
                Some(attempts) => format!("{op} {n} ({attempts} attempts)"),
                None => format!("{op} {n}"),
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl World {
    /// moto with the state table and, in the source Region, one rule naming a same-account and
    /// a cross-account destination; the handler built as the Lambda builds it, events off.
    async fn start() -> World {
        World::start_with_events(false).await
    }

    /// As [`World::start`], with replication events on moto's default bus when `events`.
    async fn start_with_events(events: bool) -> World {
        let server = MotoServer::start();
        server.create_state_table(TABLE, moto::REGION);
        let own = server.sdk_config().await;
        moto::put_replication_rule(&moto::ecr_in(&own, SRC_REGION), &[SAME, CROSS], &[]).await;

        let (sdk, wire_tally) = (Tally::default(), Tally::default());
        let counted = wire(&own, &wire_tally);
        let counted_events = counted.clone();
        let dynamodb = aws_sdk_dynamodb::Client::from_conf(
            aws_sdk_dynamodb::config::Builder::from(&counted)
                .interceptor(CountingInterceptor(sdk.clone()))
                .build(),
        );
        let put_metric_data = mock!(aws_sdk_cloudwatch::Client::put_metric_data)
            .then_output(|| PutMetricDataOutput::builder().build());
        let interceptor = CountingInterceptor(sdk.clone());
        let cloudwatch = mock_client!(
            aws_sdk_cloudwatch,
            RuleMode::MatchAny,
            [&put_metric_data],
            move |c| c.interceptor(interceptor.clone())
        );
        let auditor = Auditor::new(
            DynamoStateStore::new(dynamodb, TABLE, 30),
            EcrRegistry::new(
                counted,
                account(moto::ACCOUNT),
                Some(AuditRole {
                    name: "ecr-replication-audit".into(),
                    external_id: None,
                }),
            ),
            CloudWatchSink::new(cloudwatch, "ECRReplication"),
            EmfSink::new(Vec::new(), "ECRReplication"),
            AuditSettings {
                window: Window::from_secs(WINDOW_SECS as u32).unwrap(),
                repository_dimension: false,
                config_cache_ms: CONFIG_CACHE_SECS * 1000,
                history_retention: Window::hours(24 * 90),
            },
        )
        .with_events(if events {
            ConfiguredEvents::EventBridge(EventBridgeSink::new(
                aws_sdk_eventbridge::Client::new(&counted_events),
                "default",
            ))
        } else {
            ConfiguredEvents::Off
        });
        World {
            server,
            auditor,
            sdk,
            wire: wire_tally,
        }
    }

    /// One invocation at `secs` after T0, which must succeed; returns its summary and calls.
    async fn invoke(&self, payload: &Value, secs: i64) -> (Summary, Calls) {
        let (sdk_before, wire_before) = (self.sdk.snapshot(), self.wire.snapshot());
        let summary = self
            .auditor
            .handle(payload, at(secs))
            .await
            .unwrap_or_else(|e| panic!("invocation at +{secs}s failed: {e}"));
        let (sdk_after, wire_after) = (self.sdk.snapshot(), self.wire.snapshot());
        type Counts = BTreeMap<String, (u64, u64)>;
        let since = |before: &Counts, after: &Counts, pick: fn(&(u64, u64)) -> u64| {
            after
                .iter()
                .map(|(op, n)| (op.clone(), pick(n) - before.get(op).map_or(0, pick)))
                .filter(|(_, n)| *n > 0)
                .collect::<BTreeMap<_, _>>()
        };
        let executions = |c: &(u64, u64)| c.0;
        let attempts = |c: &(u64, u64)| c.1;
        let sdk = since(&sdk_before, &sdk_after, executions);
        let wire = since(&wire_before, &wire_after, executions);
        let mut tries = since(&wire_before, &wire_after, attempts);
        tries.extend(since(&sdk_before, &sdk_after, attempts));
        // The two counters see the same DynamoDB calls: the wire count is as good as the
        // interceptor's for ECR and STS.
        for op in DYNAMODB_READS.iter().chain(&DYNAMODB_WRITES) {
            assert_eq!(
                sdk.get(*op),
                wire.get(*op),
                "{op}: interceptor and wire disagree: {sdk:?} {wire:?}"
            );
        }
        let mut calls = wire;
        calls.extend(sdk);
        tries.retain(|op, n| calls.get(op) != Some(n));
        (
            summary,
            Calls {
                executions: calls,
                attempts: tries,
            },
        )
    }
}

// Event times are `at(secs)`, seconds after 2024-07-01T10:00:00Z: made up, nothing here reads
// moto's clock.

/// `REPO`'s image `digest` with `tag`, pushed in the source Region, as the events name it.
fn image<'a>(digest: &'a str, tag: &'a str) -> Image<'a> {
    Image {
        source_account: moto::ACCOUNT,
        source_region: SRC_REGION,
        repository: REPO,
        digest,
        tag: Some(tag),
    }
}

fn push(n: u16, secs: i64) -> Value {
    let (digest, tag) = (synthetic_digest(n), format!("v{n}"));
    push_event(&format!("push-{n}"), at(secs), &image(&digest, &tag))
}

/// `ECR Replication Action` SUCCESS as the destination's bus receives it.
fn copy(n: u16, secs: i64, (region, account): (&str, &str)) -> Value {
    let (digest, tag) = (synthetic_digest(n), format!("v{n}"));
    let id = format!("copy-{n}-{region}");
    copy_event(
        &id,
        at(secs),
        &image(&digest, &tag),
        (region, account),
        "SUCCESS",
    )
}

/// One line of the per-event table that BENCHMARKS.md quotes.
fn show(what: &str, calls: &Calls) {
    println!("aws_calls | {what:<58} | {}", calls.line());
}

// ---------------------------------------------------------------------------------------------
// Pushes
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_push_costs_one_read_and_one_write_for_all_its_destinations_and_no_describe_registry_while_the_cache_is_fresh()
 {
    let w = World::start().await;

    let (s, first) = w.invoke(&push(1, 0), 1).await;
    assert_eq!((s.pushes, s.expected), (1, 2));
    show("first push (cold cache), 2 destinations", &first);
    assert_eq!(first.of("DescribeRegistry"), 1, "{first:?}");
    assert_eq!(first.of("TransactWriteItems"), 1, "{first:?}");
    assert_eq!((first.reads(), first.writes()), (1, 1), "{first:?}");
    assert_eq!(first.of("PutMetricData"), 1, "{first:?}");

    // Steady state: the configuration is cached for CONFIG_CACHE_SECONDS.
    let mut total = Calls::default();
    let pushes = 20;
    for n in 2..2 + pushes {
        let secs = i64::from(n) * 10;
        let (s, calls) = w.invoke(&push(n, secs), secs + 1).await;
        assert_eq!((s.pushes, s.expected), (1, 2));
        assert_eq!(calls.of("DescribeRegistry"), 0, "push {n}: {calls:?}");
        assert_eq!(
            calls.writes(),
            1,
            "push {n}: one write for both destinations"
        );
        assert_eq!(calls.of("TransactWriteItems"), 1, "push {n}: {calls:?}");
        assert_eq!(calls.reads(), 1, "push {n}: {calls:?}");
        assert_eq!(calls.of("PutMetricData"), 1, "push {n}: {calls:?}");
        assert_eq!(
            calls.executions.len(),
            3,
            "push {n}: nothing else: {calls:?}"
        );
        for (op, n) in calls.executions {
            *total.executions.entry(op).or_default() += n;
        }
    }
    show(
        &format!("{pushes} pushes, warm cache (total), 2 destinations each"),
        &total,
    );

    // A redelivered push changes nothing: one read, no write, no metric.
    let (s, again) = w.invoke(&push(5, 50), 400 - CONFIG_CACHE_SECS).await;
    assert_eq!(s.repeats, 1);
    show("redelivered push", &again);
    assert_eq!((again.reads(), again.writes()), (1, 0), "{again:?}");
    assert_eq!(again.of("PutMetricData"), 0, "{again:?}");

    // Once the cache has aged past CONFIG_CACHE_SECONDS, one DescribeRegistry refreshes it.
    let (_, stale) = w.invoke(&push(100, 400), 400).await;
    show("push after CONFIG_CACHE_SECONDS", &stale);
    assert_eq!(stale.of("DescribeRegistry"), 1, "{stale:?}");
    let (_, fresh) = w.invoke(&push(101, 401), 401).await;
    assert_eq!(fresh.of("DescribeRegistry"), 0, "{fresh:?}");
}

// ---------------------------------------------------------------------------------------------
// Copies and metrics
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_copy_costs_one_read_and_one_write_and_an_invocation_at_most_one_put_metric_data() {
    let w = World::start().await;
    let pushes = 10;
    for n in 1..=pushes {
        w.invoke(&push(n, i64::from(n)), i64::from(n)).await;
    }

    let mut total = Calls::default();
    for n in 1..=pushes {
        let secs = i64::from(n) + 7;
        let (s, calls) = w.invoke(&copy(n, secs, SAME), secs).await;
        assert_eq!((s.copies, s.completed), (1, 1));
        assert_eq!(
            (calls.reads(), calls.writes()),
            (1, 1),
            "copy {n}: {calls:?}"
        );
        // The group's head and its tag's record (and the push by digest's, which takes a tag
        // without a push) in one read; the head and the record in one transaction.
        assert_eq!(
            (calls.of("BatchGetItem"), calls.of("TransactWriteItems")),
            (1, 1),
            "{calls:?}"
        );
        assert_eq!(calls.of("PutMetricData"), 1, "copy {n}: {calls:?}");
        assert_eq!(
            calls.executions.len(),
            3,
            "copy {n}: nothing else: {calls:?}"
        );
        for (op, n) in calls.executions {
            *total.executions.entry(op).or_default() += n;
        }
    }
    show(
        &format!("{pushes} copies, one per invocation (total)"),
        &total,
    );

    // A copy delivered again: read, nothing to write, nothing to publish.
    let (s, again) = w.invoke(&copy(1, 8, SAME), 60).await;
    assert_eq!(s.repeats, 1);
    show("redelivered copy", &again);
    assert_eq!((again.reads(), again.writes()), (1, 0), "{again:?}");
    assert_eq!(again.of("PutMetricData"), 0, "{again:?}");

    // Ten events in one invocation: a write each, one PutMetricData for them all.
    let batch: Vec<Value> = (1..=pushes)
        .map(|n| copy(n, i64::from(n) + 12, CROSS))
        .collect();
    let (s, batched) = w.invoke(&Value::Array(batch), 60).await;
    assert_eq!((s.copies, s.completed), (10, 10));
    show("10 copies in one invocation (an array payload)", &batched);
    assert_eq!((batched.reads(), batched.writes()), (10, 10), "{batched:?}");
    assert_eq!(batched.of("PutMetricData"), 1, "{batched:?}");

    // A malformed event: one conditional write records it (counted once per event id).
    let mut broken = copy(99, 70, SAME);
    broken["detail"]["image-digest"] = json!(7);
    let (s, rejected) = w.invoke(&broken, 70).await;
    assert_eq!(s.rejected, 1);
    show("malformed event", &rejected);
    assert_eq!(
        (rejected.reads(), rejected.of("PutItem")),
        (0, 1),
        "{rejected:?}"
    );
    assert_eq!(rejected.of("PutMetricData"), 1, "{rejected:?}");

    // An event the auditor ignores costs nothing.
    let mut scan = copy(98, 71, SAME);
    scan["detail-type"] = json!("ECR Image Scan");
    let (s, ignored) = w.invoke(&scan, 71).await;
    assert_eq!(s.ignored, 1);
    show("ignored event (ECR Image Scan)", &ignored);
    assert_eq!(ignored, Calls::default());
}

/// With events on: every completed copy costs one more read (the push's other destinations'
/// groups: is it everywhere now?); the copy that completes the last destination also costs
/// the announced mark in the first destination's group (a read and a conditional write) and
/// one `PutEvents`; a copy that leaves a destination waiting costs no `PutEvents`; nine completions in one invocation, one
/// `PutEvents` for their nine events (ten entries a call, EventBridge's limit).
#[tokio::test]
async fn with_events_on_an_invocation_makes_one_put_events_per_ten_events_and_none_without_any() {
    let w = World::start_with_events(true).await;
    let pushes = 10;
    for n in 1..=pushes {
        let (_, calls) = w.invoke(&push(n, i64::from(n)), i64::from(n)).await;
        assert_eq!(calls.of("PutEvents"), 0, "push {n}: {calls:?}");
    }
    let (_, first) = w.invoke(&copy(1, 8, SAME), 8).await;
    show("events on: a copy, one destination still waiting", &first);
    assert_eq!(first.of("PutEvents"), 0, "{first:?}");
    assert_eq!(
        (first.reads(), first.writes()),
        (2, 1),
        "the copy's read and write, and the read of the push's other destinations: {first:?}"
    );

    let (s, last) = w.invoke(&copy(1, 9, CROSS), 9).await;
    show(
        "events on: the copy that completes the last destination",
        &last,
    );
    assert_eq!((s.completed, last.of("PutEvents")), (1, 1), "{last:?}");
    assert_eq!(
        (last.reads(), last.writes()),
        (3, 2),
        "as above, and the announced mark's read and write in the first destination: {last:?}"
    );

    let same: Vec<Value> = (2..=pushes)
        .map(|n| copy(n, i64::from(n) + 12, SAME))
        .collect();
    let (_, waiting) = w.invoke(&Value::Array(same), 30).await;
    assert_eq!(waiting.of("PutEvents"), 0, "{waiting:?}");
    let cross: Vec<Value> = (2..=pushes)
        .map(|n| copy(n, i64::from(n) + 14, CROSS))
        .collect();
    let (s, batched) = w.invoke(&Value::Array(cross), 40).await;
    show(
        "events on: 9 copies completing 9 pushes in one invocation",
        &batched,
    );
    assert_eq!(s.completed, 9);
    assert_eq!(batched.of("PutEvents"), 1, "{batched:?}");

    let (_, again) = w.invoke(&copy(1, 9, CROSS), 50).await;
    assert_eq!(again.of("PutEvents"), 0, "redelivered: {again:?}");
}

/// An item's size as DynamoDB bills it (the "Item sizes and formats" rules of the developer
/// guide): each attribute's name in UTF-8 bytes plus its value's size; a number counted at one
/// byte per digit (an upper bound: DynamoDB counts about one per two digits), a list or map
/// 3 bytes plus its elements' (a map's with their names) and one byte per element.
fn billed_size(item: &std::collections::HashMap<String, AttributeValue>) -> usize {
    fn value(v: &AttributeValue) -> usize {
        match v {
            AttributeValue::S(s) | AttributeValue::N(s) => s.len(),
            AttributeValue::B(b) => b.as_ref().len(),
            AttributeValue::Bool(_) | AttributeValue::Null(_) => 1,
            AttributeValue::Ss(v) | AttributeValue::Ns(v) => v.iter().map(String::len).sum(),
            AttributeValue::L(l) => 3 + l.iter().map(|e| 1 + value(e)).sum::<usize>(),
            AttributeValue::M(m) => {
                3 + m.iter().map(|(k, e)| 1 + k.len() + value(e)).sum::<usize>()
            }
            _ => panic!("an attribute type the store never writes: {v:?}"),
        }
    }
    item.iter().map(|(k, v)| k.len() + value(v)).sum()
}

/// Every item of the state table, by key, with its billed size.
async fn item_sizes(w: &World) -> BTreeMap<String, usize> {
    let client = aws_sdk_dynamodb::Client::new(&w.server.sdk_config().await);
    let scan = client.scan().table_name(TABLE).send().await.expect("Scan");
    scan.items()
        .iter()
        .map(|item| {
            let pk = match item.get("pk") {
                Some(AttributeValue::S(pk)) => pk.clone(),
                other => panic!("an item without a string key: {other:?}"),
            };
            (pk, billed_size(item))
        })
        .collect()
}

#[tokio::test]
async fn a_push_and_its_copies_write_items_of_less_than_one_kilobyte_one_write_unit_each() {
    // What BENCHMARKS.md's cost per million pushes rests on: every item a push and its copies
    // write is billed one write unit (two in a transaction), and read for one read unit.
    let w = World::start().await;
    let mut durations = Vec::new();
    let pushes: u16 = 20;
    for n in 1..=pushes {
        let secs = i64::from(n);
        let started = std::time::Instant::now();
        w.invoke(&push(n, secs), secs).await;
        durations.push(("push", started.elapsed()));
    }
    let after_pushes = item_sizes(&w).await;
    // A group per (image, destination): its head and its tag's record.
    assert_eq!(
        after_pushes.len(),
        usize::from(pushes) * 2 * 2,
        "{after_pushes:?}"
    );
    for n in 1..=pushes {
        for d in [SAME, CROSS] {
            let secs = i64::from(n) + 9;
            let started = std::time::Instant::now();
            w.invoke(&copy(n, secs, d), secs).await;
            durations.push(("copy", started.elapsed()));
        }
    }
    let after_copies = item_sizes(&w).await;
    assert_eq!(after_copies.len(), after_pushes.len());
    for (stage, sizes) in [("pushed", &after_pushes), ("copied", &after_copies)] {
        let largest = sizes.values().max().unwrap();
        let total: usize = sizes.values().sum();
        println!(
            "aws_calls | item sizes, {stage}: {} items, largest {largest} B, mean {} B",
            sizes.len(),
            total / sizes.len()
        );
        assert!(
            *largest <= 1024,
            "{stage}: an item over 1 KB costs more than one write unit: {sizes:?}"
        );
    }
    for kind in ["push", "copy"] {
        let mut ms: Vec<f64> = durations
            .iter()
            .filter(|(k, _)| *k == kind)
            .map(|(_, d)| d.as_secs_f64() * 1000.0)
            .collect();
        ms.sort_by(f64::total_cmp);
        println!(
            "aws_calls | invocation on moto, one {kind}: median {:.1} ms, max {:.1} ms ({} runs)",
            ms[ms.len() / 2],
            ms[ms.len() - 1],
            ms.len()
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Sweeps
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn the_sweep_asks_ecr_only_about_expectations_whose_copy_has_not_arrived() {
    let w = World::start().await;
    // Four pushes to two destinations: eight expectations. Six copies arrive; the copies of
    // pushes 3 and 4 to the other account do not.
    for n in 1..=4 {
        w.invoke(&push(n, i64::from(n)), i64::from(n)).await;
        w.invoke(&copy(n, i64::from(n) + 5, SAME), i64::from(n) + 5)
            .await;
    }
    for n in 1..=2 {
        w.invoke(&copy(n, i64::from(n) + 9, CROSS), i64::from(n) + 9)
            .await;
    }

    // Before the window has passed nothing is due: one query per queue and shard of the `due`
    // index (keys only), and one of the previous version's index.
    let (s, early) = w.invoke(&sweep(), 60).await;
    assert_eq!(s.groups_checked, 0);
    show("sweep, nothing due (2 open groups)", &early);
    assert_eq!(early.of("Query"), SWEEP_QUERIES, "{early:?}");
    assert_eq!(early.sum(&CONFIRMATIONS), 0, "{early:?}");
    assert_eq!(early.writes(), 0, "{early:?}");

    // One window later: the two copies that never came are confirmed missing with ECR, and
    // nothing is asked about the six that arrived.
    let (s, due) = w.invoke(&sweep(), WINDOW_SECS + 60).await;
    assert_eq!((s.groups_checked, s.missing), (2, 2));
    show("sweep, 2 of 8 expectations due (copy never came)", &due);
    assert_eq!(due.of("DescribeImageReplicationStatus"), 2, "{due:?}");
    assert_eq!(due.of("DescribeImages"), 2, "{due:?}");
    assert_eq!(due.of("Query"), SWEEP_QUERIES, "{due:?}");
    assert_eq!(due.writes(), 2, "one write per group checked: {due:?}");
    assert!(
        due.of("AssumeRole") <= 1,
        "the role's credentials are cached"
    );
    assert_eq!(due.of("PutMetricData"), 1, "{due:?}");

    // The next minute: the missing copies are watched again only one window later.
    let (s, next) = w.invoke(&sweep(), WINDOW_SECS + 120).await;
    assert_eq!(s.groups_checked, 0);
    show("sweep one minute later", &next);
    assert_eq!(next.sum(&CONFIRMATIONS), 0, "{next:?}");
    assert_eq!(
        (next.of("Query"), next.writes(), next.of("AssumeRole")),
        (SWEEP_QUERIES, 0, 0),
        "{next:?}"
    );
}
