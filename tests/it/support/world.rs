//! The Lambda's handler on its real adapters against moto, reached through a [`FaultProxy`], for
//! the fault and redelivery tests (`faults.rs`, `redelivery_moto.rs`). The world is the one of
//! `lambda_moto.rs`: a source Region whose one rule names a same-account and a cross-account
//! destination, read through the audit role; metrics go to a recorder that counts every data
//! point.
//!
//! Setup (table, repositories, images) talks to moto directly; the handler talks to it only
//! through the proxy, so a test can cut, slow or falsify exactly the handler's traffic.
//!
//! Its events come from [`super::events`] and its metrics go to the recorder of
//! [`super::metrics`].

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use aws_config::SdkConfig;
use aws_credential_types::Credentials;
use serde_json::Value;

use aws_sdk_dynamodb::types::AttributeValue;
use ecr_replication_auditor::adapters::dynamodb::{DynamoStateStore, group_pk};
use ecr_replication_auditor::adapters::ecr::{AuditRole, EcrRegistry};
use ecr_replication_auditor::adapters::stored::parse_record_pk;
use ecr_replication_auditor::app::handler::{AuditSettings, Auditor};
use ecr_replication_auditor::domain::correlate::GroupKey;
use ecr_replication_auditor::domain::ledger::TrackedGroup;
use ecr_replication_auditor::domain::time::{Timestamp, Window};
use ecr_replication_auditor::ports::registry::RegistryView;
use ecr_replication_auditor::ports::state::{StateStore, Versioned};

use super::events::{self, Image, copy_event, push_event};
use super::ids::{self, account, registry, synthetic_digest};
use super::metrics::{self, RecordingSink};
use super::moto::{self, MotoServer};
use super::proxy::FaultProxy;

pub use super::moto::ecr_in;

/// The destination account, read only through the audit role.
pub const OTHER_ACCOUNT: &str = "210987654321";
/// The pushes' Region, in moto's default account (the function's own).
pub const SRC_REGION: &str = "us-west-2";
/// (Region, account) of the same-account destination...
pub const SAME: (&str, &str) = ("us-east-1", moto::ACCOUNT);
/// ...and of the cross-account one.
pub const CROSS: (&str, &str) = ("eu-west-1", OTHER_ACCOUNT);
pub const REPO: &str = "team/api";
pub const TAG: &str = "v1.4.2";
pub const TABLE: &str = "auditor-state";
pub const WINDOW_SECS: i64 = 1800;
pub const RETENTION_DAYS: u32 = 30;
pub const ROLE: &str = "ecr-replication-audit";
pub const EXTERNAL_ID: &str = "audit-7f3a";

// ---------------------------------------------------------------------------------------------
// Metrics
// ---------------------------------------------------------------------------------------------

/// A metric series: its name and dimensions, as published.
pub type Series = metrics::Series;

/// The dimensions of a verdict metric (the Repository dimension is on).
pub fn to(d: (&str, &str)) -> Vec<(&'static str, String)> {
    vec![
        ("SourceRegion", SRC_REGION.to_owned()),
        ("DestinationRegion", d.0.to_owned()),
        ("DestinationAccount", d.1.to_owned()),
        ("Repository", REPO.to_owned()),
    ]
}

// ---------------------------------------------------------------------------------------------
// The world
// ---------------------------------------------------------------------------------------------

pub type WorldAuditor<S, R> = Auditor<S, R, RecordingSink, RecordingSink>;

pub struct World<S = DynamoStateStore, R = EcrRegistry> {
    /// Kept for its lifetime: dropping it stops the server.
    _server: MotoServer,
    pub proxy: FaultProxy,
    pub auditor: Arc<WorldAuditor<S, R>>,
    pub metrics: RecordingSink,
    pub fallback: RecordingSink,
    /// Straight to moto (not through the proxy), for the setup and for looking at the state:
    /// the function's own account, and the other account.
    pub own: SdkConfig,
    pub other: SdkConfig,
    /// The table as the handler's store sees it, but straight to moto.
    pub state: DynamoStateStore,
    /// When the events' pushes happened, in whole seconds (EventBridge `time` has no fraction).
    pub t0_ms: i64,
}

/// How long before the world starts its events' pushes happened: a little in the past, so
/// that moto's `imagePushedAt` (the real clock) is later than every push, and a lag measured
/// from it is about this long.
pub const PUSHED_AGO_SECS: i64 = 100;

/// The handler's credentials unless a test gives its own: static, like a Lambda's.
pub fn handler_credentials() -> Credentials {
    Credentials::new(
        "AKIAIOSFODNN7EXAMPLE",
        "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        None,
        None,
        "world",
    )
}

/// The handler's settings, as the Lambda's defaults with the Repository dimension on.
pub fn settings() -> AuditSettings {
    AuditSettings {
        window: Window::DEFAULT,
        repository_dimension: true,
        config_cache_ms: 300_000,
        history_retention: Window::hours(24 * 90),
    }
}

impl World {
    pub async fn start() -> World {
        World::start_with(handler_credentials(), |s| s, |r| r).await
    }
}

impl<S: StateStore + Sync, R: RegistryView + Sync> World<S, R> {
    /// moto with the state table, the source Region's rule (moto keeps one) naming [`SAME`] and
    /// [`CROSS`], `team/api` in the source and both destinations, and the handler as the Lambda
    /// builds it, with `credentials`, its store and registry wrapped by the test.
    pub async fn start_with(
        credentials: Credentials,
        store: impl FnOnce(DynamoStateStore) -> S,
        registry: impl FnOnce(EcrRegistry) -> R,
    ) -> World<S, R> {
        let server = MotoServer::start();
        server.create_state_table(TABLE, moto::REGION);
        let own = server.sdk_config().await;
        let other = server.sdk_config_in_account(OTHER_ACCOUNT).await;
        create_registries(&own, &other).await;

        let proxy = FaultProxy::start(&server.endpoint());
        let through_proxy = moto::sdk_config_at(&proxy.endpoint(), credentials).await;
        let registry = registry(EcrRegistry::new(
            through_proxy.clone(),
            account(moto::ACCOUNT),
            Some(AuditRole {
                name: ROLE.into(),
                external_id: Some(EXTERNAL_ID.into()),
            }),
        ));
        let store = store(DynamoStateStore::new(
            aws_sdk_dynamodb::Client::new(&through_proxy),
            TABLE,
            RETENTION_DAYS,
        ));
        let metrics = RecordingSink::default();
        let fallback = RecordingSink::default();
        let auditor = Arc::new(Auditor::new(
            store,
            registry,
            metrics.clone(),
            fallback.clone(),
            settings(),
        ));
        let state =
            DynamoStateStore::new(aws_sdk_dynamodb::Client::new(&own), TABLE, RETENTION_DAYS);
        let now_secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        World {
            _server: server,
            proxy,
            auditor,
            metrics,
            fallback,
            own,
            other,
            state,
            t0_ms: (i64::try_from(now_secs).unwrap() - PUSHED_AGO_SECS) * 1000,
        }
    }

    /// `secs` after the pushes.
    pub fn at(&self, secs: i64) -> Timestamp {
        Timestamp::from_millis(self.t0_ms + secs * 1000)
    }

    /// The client that sets up `d`'s registry (the other account's through its credentials).
    pub fn ecr(&self, d: (&str, &str)) -> aws_sdk_ecr::Client {
        let config = if d.1 == OTHER_ACCOUNT {
            &self.other
        } else {
            &self.own
        };
        ecr_in(config, d.0)
    }

    /// `ECR Image Action` PUSH of `digest` with [`TAG`] in the source registry, `secs` after t0.
    pub fn push(&self, id: &str, secs: i64, digest: &str) -> Value {
        self.push_tagged(id, secs, digest, TAG)
    }

    /// [`World::push`] with another tag.
    pub fn push_tagged(&self, id: &str, secs: i64, digest: &str, tag: &str) -> Value {
        push_event(id, self.at(secs), &image(digest, Some(tag)))
    }

    /// `ECR Replication Action` SUCCESS with [`TAG`], as the destination's bus receives it.
    pub fn copy(&self, id: &str, secs: i64, d: (&str, &str), digest: &str) -> Value {
        self.copy_tagged(id, secs, d, digest, TAG)
    }

    /// [`World::copy`] with another tag.
    pub fn copy_tagged(
        &self,
        id: &str,
        secs: i64,
        d: (&str, &str),
        digest: &str,
        tag: &str,
    ) -> Value {
        copy_event(id, self.at(secs), &image(digest, Some(tag)), d, "SUCCESS")
    }

    /// A push that lost its `image-digest`: rejected, and counted once per event id.
    pub fn malformed(&self, id: &str, secs: i64) -> Value {
        let mut e = self.push(id, secs, &synthetic_digest(0));
        e["detail"].as_object_mut().unwrap().remove("image-digest");
        e
    }

    /// The stored group of `digest` in `d`, whole, read straight from moto.
    pub async fn group(&self, d: (&str, &str), digest: &str) -> Versioned<TrackedGroup> {
        whole_group(
            &self.state,
            &aws_sdk_dynamodb::Client::new(&self.own),
            d,
            digest,
        )
        .await
    }

    /// The keys of the groups still awaiting a check, read straight from moto.
    pub async fn open_groups(&self) -> Vec<GroupKey> {
        open_group_keys(&self.state).await
    }
}

/// The group of `digest` in `d`, whole: every record of it the table holds (found by a scan,
/// which only a test affords), read through `store`.
pub async fn whole_group(
    store: &impl StateStore,
    client: &aws_sdk_dynamodb::Client,
    d: (&str, &str),
    digest: &str,
) -> Versioned<TrackedGroup> {
    let key = group_key(d, digest);
    let prefix = format!("{}#", group_pk(&key));
    let scan = client
        .scan()
        .table_name(TABLE)
        .filter_expression("begins_with(pk, :group)")
        .expression_attribute_values(":group", AttributeValue::S(prefix))
        .projection_expression("pk")
        .send()
        .await
        .expect("Scan");
    let tags = scan
        .items()
        .iter()
        .filter_map(|i| match i.get("pk") {
            Some(AttributeValue::S(pk)) => parse_record_pk(pk).ok().map(|(_, t)| t),
            _ => None,
        })
        .collect();
    store.load(&[(key, tags)]).await.unwrap().remove(0)
}

/// The keys of the groups in `store` with an expectation awaiting a check, whenever it is due.
pub async fn open_group_keys(store: &impl StateStore) -> Vec<GroupKey> {
    let mut keys: Vec<GroupKey> = store
        .due(Timestamp::from_millis(i64::MAX), usize::MAX, false)
        .await
        .unwrap()
        .due
        .into_iter()
        .map(|r| r.key)
        .collect();
    keys.dedup();
    keys
}

pub fn sweep() -> Value {
    events::sweep()
}

/// `REPO`'s image `digest`, pushed in the source Region of the function's own account, as the
/// events name it.
pub fn image<'a>(digest: &'a str, tag: Option<&'a str>) -> Image<'a> {
    Image {
        source_account: moto::ACCOUNT,
        source_region: SRC_REGION,
        repository: REPO,
        digest,
        tag,
    }
}

/// The world's registries: in the source Region the rule (moto keeps one) naming [`SAME`] and
/// [`CROSS`], and `team/api` in the source and in both destinations; `own` and `other` are the
/// function's own account and [`OTHER_ACCOUNT`].
pub async fn create_registries(own: &SdkConfig, other: &SdkConfig) {
    moto::put_replication_rule(&ecr_in(own, SRC_REGION), &[SAME, CROSS], &[]).await;
    for client in [
        ecr_in(own, SRC_REGION),
        ecr_in(own, SAME.0),
        ecr_in(other, CROSS.0),
    ] {
        moto::create_repository(&client, REPO).await;
    }
}

/// The group of `REPO`'s image `digest`, pushed in the source Region of the function's own
/// account, for destination `d` (Region, account).
pub fn group_key(d: (&str, &str), digest: &str) -> GroupKey {
    ids::group_key(
        &registry(moto::ACCOUNT, SRC_REGION),
        REPO,
        digest,
        &registry(d.1, d.0),
    )
}

/// Pushes manifest `n` to `client`'s `team/api` with `tag`; returns moto's digest. (moto
/// deletes an image whose only tag is pushed again: give each image a tag of its own.)
pub async fn put_image(client: &aws_sdk_ecr::Client, n: u32, tag: &str) -> String {
    moto::put_image(client, REPO, n, tag).await
}
