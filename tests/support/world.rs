//! The Lambda's handler on its real adapters against moto, reached through a [`FaultProxy`], for
//! the fault and redelivery tests (`tests/faults.rs`, `tests/redelivery_moto.rs`).
//!
//! Include it after `support/moto.rs` and `support/proxy.rs`:
//! `#[path = "support/world.rs"] mod world;`. The world is the one of `tests/lambda_moto.rs`:
//! a source Region whose one rule names a same-account and a cross-account destination, read
//! through the audit role; metrics go to a recorder that counts every data point.
//!
//! Setup (table, repositories, images) talks to moto directly; the handler talks to it only
//! through the proxy, so a test can cut, slow or falsify exactly the handler's traffic.

// Each test file uses a part of this module.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_config::{BehaviorVersion, SdkConfig};
use aws_credential_types::Credentials;
use aws_sdk_ecr::config::retry::RetryConfig;
use aws_sdk_ecr::types::{ReplicationConfiguration, ReplicationDestination, ReplicationRule};
use serde_json::{Value, json};

use ecr_replication_auditor::adapters::dynamodb::DynamoStateStore;
use ecr_replication_auditor::adapters::ecr::{AuditRole, EcrRegistry};
use ecr_replication_auditor::adapters::metrics::{MetricsError, MetricsSink};
use ecr_replication_auditor::app::handler::{AuditSettings, Auditor};
use ecr_replication_auditor::app::registry::RegistryView;
use ecr_replication_auditor::app::state::{StateStore, Versioned};
use ecr_replication_auditor::domain::config::Destination;
use ecr_replication_auditor::domain::correlate::GroupKey;
use ecr_replication_auditor::domain::ids::{AccountId, ImageDigest, Region, RepositoryName};
use ecr_replication_auditor::domain::ledger::TrackedGroup;
use ecr_replication_auditor::domain::metrics::Datum;
use ecr_replication_auditor::domain::time::{Timestamp, Window};

use super::moto::{self, MotoServer};
use super::proxy::FaultProxy;

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
pub type Series = (&'static str, Vec<(&'static str, String)>);

#[derive(Default)]
struct Recorded {
    data: Vec<Datum>,
    calls: usize,
}

/// A [`MetricsSink`] that keeps every data point it is given.
#[derive(Clone, Default)]
pub struct RecordingSink(Arc<Mutex<Recorded>>);

impl RecordingSink {
    fn recorded(&self) -> MutexGuard<'_, Recorded> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn calls(&self) -> usize {
        self.recorded().calls
    }

    pub fn data(&self) -> Vec<Datum> {
        self.recorded().data.clone()
    }

    /// SampleCount per series (how many times each metric was counted, per dimension set),
    /// leaving out the `PendingReplications` gauge, which every sweep publishes afresh.
    pub fn counts(&self) -> BTreeMap<Series, f64> {
        let mut out = BTreeMap::new();
        for d in &self.recorded().data {
            if d.name.as_str() == "PendingReplications" {
                continue;
            }
            *out.entry((d.name.as_str(), d.dimensions.clone()))
                .or_default() += d.counts.iter().sum::<f64>();
        }
        out
    }

    /// Every (series, timestamp, value) point with its count, gauges left out: what was counted,
    /// when, and how much.
    pub fn points(&self) -> BTreeMap<(Series, i64, String), f64> {
        let mut out = BTreeMap::new();
        for d in &self.recorded().data {
            if d.name.as_str() == "PendingReplications" {
                continue;
            }
            for (v, c) in d.values.iter().zip(&d.counts) {
                *out.entry((
                    (d.name.as_str(), d.dimensions.clone()),
                    d.timestamp.millis(),
                    v.to_string(),
                ))
                .or_default() += c;
            }
        }
        out
    }
}

impl MetricsSink for RecordingSink {
    async fn publish(&self, data: &[Datum]) -> Result<(), MetricsError> {
        let mut r = self.recorded();
        r.calls += 1;
        r.data.extend_from_slice(data);
        Ok(())
    }
}

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
    pub server: MotoServer,
    pub proxy: FaultProxy,
    pub auditor: Arc<WorldAuditor<S, R>>,
    pub metrics: RecordingSink,
    pub fallback: RecordingSink,
    /// Straight to moto (not through the proxy), for the setup and for looking at the state:
    /// the function's own account, and the other account.
    pub own: SdkConfig,
    pub other: SdkConfig,
    pub dynamodb: aws_sdk_dynamodb::Client,
    /// The table as the handler's store sees it, but straight to moto.
    pub state: DynamoStateStore,
    /// When the events' pushes happened, in whole seconds (EventBridge `time` has no fraction).
    pub t0_ms: i64,
}

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

/// An SDK configuration for `endpoint`, as the Lambda loads it, with the SDK's standard retries
/// (three attempts) and a backoff short enough for tests.
pub async fn sdk_config(endpoint: &str, credentials: Credentials) -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(aws_config::Region::new(moto::REGION))
        .credentials_provider(credentials)
        .retry_config(
            RetryConfig::standard()
                .with_max_attempts(3)
                .with_initial_backoff(Duration::from_millis(10))
                .with_max_backoff(Duration::from_millis(50)),
        )
        .load()
        .await
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
        create_state_table(&server, TABLE);
        let own = server.sdk_config().await;
        let other = server.sdk_config_in_account(OTHER_ACCOUNT).await;
        let destination = |(region, account): (&str, &str)| {
            ReplicationDestination::builder()
                .region(region)
                .registry_id(account)
                .build()
                .unwrap()
        };
        ecr_in(&own, SRC_REGION)
            .put_replication_configuration()
            .replication_configuration(
                ReplicationConfiguration::builder()
                    .rules(
                        ReplicationRule::builder()
                            .destinations(destination(SAME))
                            .destinations(destination(CROSS))
                            .build()
                            .unwrap(),
                    )
                    .build()
                    .unwrap(),
            )
            .send()
            .await
            .expect("moto's PutReplicationConfiguration");
        for client in [
            ecr_in(&own, SRC_REGION),
            ecr_in(&own, SAME.0),
            ecr_in(&other, CROSS.0),
        ] {
            client
                .create_repository()
                .repository_name(REPO)
                .send()
                .await
                .expect("moto's CreateRepository");
        }

        let proxy = FaultProxy::start(&server.endpoint());
        let through_proxy = sdk_config(&proxy.endpoint(), credentials).await;
        let registry = registry(EcrRegistry::new(
            through_proxy.clone(),
            AccountId::parse(moto::ACCOUNT).unwrap(),
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
        let settings = AuditSettings {
            window: Window::DEFAULT,
            repository_dimension: true,
            config_cache_ms: 300_000,
        };
        let auditor = Arc::new(Auditor::new(
            store,
            registry,
            metrics.clone(),
            fallback.clone(),
            settings,
        ));
        let dynamodb = aws_sdk_dynamodb::Client::new(&own);
        let now_secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        World {
            server,
            proxy,
            auditor,
            metrics,
            fallback,
            own,
            other,
            state: DynamoStateStore::new(dynamodb.clone(), TABLE, RETENTION_DAYS),
            dynamodb,
            // A little in the past, so that moto's imagePushedAt (its clock) is later than
            // every push.
            t0_ms: (i64::try_from(now_secs).unwrap() - 100) * 1000,
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
        json!({
            "version": "0", "id": id, "detail-type": "ECR Image Action", "source": "aws.ecr",
            "account": moto::ACCOUNT, "time": self.at(secs).to_string(), "region": SRC_REGION,
            "resources": [],
            "detail": {"result": "SUCCESS", "repository-name": REPO, "image-digest": digest,
                       "action-type": "PUSH", "image-tag": tag}
        })
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
        let (region, account) = d;
        json!({
            "version": "0", "id": id, "detail-type": "ECR Replication Action", "source": "aws.ecr",
            "account": account, "time": self.at(secs).to_string(), "region": region,
            "resources": [format!("arn:aws:ecr:{region}:{account}:repository/{REPO}")],
            "detail": {"result": "SUCCESS", "repository-name": REPO, "image-digest": digest,
                       "source-account": moto::ACCOUNT, "action-type": "REPLICATE",
                       "source-region": SRC_REGION, "image-tag": tag}
        })
    }

    /// A push that lost its `image-digest`: rejected, and counted once per event id.
    pub fn malformed(&self, id: &str, secs: i64) -> Value {
        let mut e = self.push(id, secs, &synthetic_digest(0));
        e["detail"].as_object_mut().unwrap().remove("image-digest");
        e
    }

    /// The stored group of `digest` in `d`, read straight from moto.
    pub async fn group(&self, d: (&str, &str), digest: &str) -> Versioned<TrackedGroup> {
        self.state
            .load(&[group_key(d, digest)])
            .await
            .unwrap()
            .remove(0)
    }

    /// The keys of the groups still awaiting a check, read straight from moto.
    pub async fn open_groups(&self) -> Vec<GroupKey> {
        self.state
            .open()
            .await
            .unwrap()
            .into_iter()
            .map(|(k, _)| k)
            .collect()
    }
}

pub fn sweep() -> Value {
    json!({"action": "sweep"})
}

pub fn group_key(d: (&str, &str), digest: &str) -> GroupKey {
    GroupKey {
        source_account: AccountId::parse(moto::ACCOUNT).unwrap(),
        source_region: Region::parse(SRC_REGION).unwrap(),
        repository: RepositoryName::parse(REPO).unwrap(),
        digest: ImageDigest::parse(digest).unwrap(),
        destination: Destination {
            account: AccountId::parse(d.1).unwrap(),
            region: Region::parse(d.0).unwrap(),
        },
    }
}

/// A digest of the right shape that no image in moto has.
pub fn synthetic_digest(n: u16) -> String {
    format!("sha256:{n:064x}")
}

/// Runs `scripts/create-state-table` against `server` (template.yaml's table, indexes and TTL).
pub fn create_state_table(server: &MotoServer, table: &str) {
    server.create_state_table(table, moto::REGION);
}

pub fn ecr_in(config: &SdkConfig, region: &str) -> aws_sdk_ecr::Client {
    aws_sdk_ecr::Client::from_conf(
        aws_sdk_ecr::config::Builder::from(config)
            .region(aws_sdk_ecr::config::Region::new(region.to_owned()))
            .build(),
    )
}

/// A Docker manifest distinct for each `n`; moto derives the digest from it, so the same `n`
/// pushed to the source and to a destination has the same digest, as a real copy.
pub fn manifest(n: u32) -> String {
    json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {
            "mediaType": "application/vnd.docker.container.image.v1+json",
            "size": 7023,
            "digest": "sha256:b5b2b2c507a0944348e0303114d8d93aaaa081732b86451d9bce1f432a537bc7",
        },
        "layers": [{
            "mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
            "size": 32654,
            "digest": format!("sha256:{n:064x}"),
        }],
    })
    .to_string()
}

/// Pushes manifest `n` to `client`'s `team/api` with `tag`; returns moto's digest. (moto
/// deletes an image whose only tag is pushed again: give each image a tag of its own.)
pub async fn put_image(client: &aws_sdk_ecr::Client, n: u32, tag: &str) -> String {
    client
        .put_image()
        .repository_name(REPO)
        .image_manifest(manifest(n))
        .image_tag(tag)
        .send()
        .await
        .expect("moto's PutImage")
        .image()
        .and_then(|i| i.image_id())
        .and_then(|id| id.image_digest())
        .expect("PutImage returns the digest")
        .to_owned()
}
