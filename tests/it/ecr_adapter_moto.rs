//! The ECR adapter against a local moto server: real HTTP, real SigV4-signed requests, real
//! STS AssumeRole into another account. Each test starts its own server, so tests share no state.
//!
//! moto never replicates anything and does not implement DescribeImageReplicationStatus; the
//! mocks in `ecr_adapter_mocks.rs` cover that call.

use std::time::{SystemTime, UNIX_EPOCH};

use aws_config::SdkConfig;
use aws_sdk_ecr::Client;

use ecr_replication_auditor::adapters::ecr::{AuditRole, EcrRegistry};
use ecr_replication_auditor::domain::config::{Destination, Rule};
use ecr_replication_auditor::domain::ids::ImageDigest;
use ecr_replication_auditor::ports::registry::{RegistryAt, RegistryError, RegistryView};

use crate::support::ids::{self, account, region, repository, synthetic_digest, tag};
use crate::support::moto::{self, MotoServer};

/// Another account, reached only through the audit role.
const OTHER_ACCOUNT: &str = "210987654321";
const REPOSITORY: &str = "team/app";

/// The registry of `account` in moto's Region.
fn registry_of(account: &str) -> RegistryAt {
    ids::registry(account, moto::REGION)
}

/// Pushes manifest `n` with `image_tag` and returns the digest moto gave it.
async fn push(ecr: &Client, repository: &str, image_tag: &str, n: u32) -> ImageDigest {
    ids::digest(&moto::put_image(ecr, repository, n, image_tag).await)
}

/// The adapter as the Lambda builds it, running in moto's default account.
fn adapter(base: &SdkConfig, role: Option<AuditRole>) -> EcrRegistry {
    EcrRegistry::new(base.clone(), account(moto::ACCOUNT), role)
}

fn millis_now() -> i64 {
    let since = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    i64::try_from(since.as_millis()).unwrap()
}

#[tokio::test]
async fn moto_starts_answers_and_forgets_everything_on_reset() {
    let server = MotoServer::start();
    eprintln!("moto start time: {:?}", server.started_in());
    let ecr = Client::new(&server.sdk_config().await);
    moto::create_repository(&ecr, REPOSITORY).await;
    let listed = ecr.describe_repositories().send().await.unwrap();
    assert_eq!(listed.repositories().len(), 1);

    server.reset();

    let listed = ecr.describe_repositories().send().await.unwrap();
    assert!(listed.repositories().is_empty());
}

#[tokio::test]
async fn the_replication_configuration_put_in_moto_is_read_as_the_domain_configuration() {
    let server = MotoServer::start();
    let base = server.sdk_config().await;
    // moto keeps one rule only; two destinations in it show both are converted.
    let destinations = [("eu-west-1", moto::ACCOUNT), ("us-east-2", OTHER_ACCOUNT)];
    moto::put_replication_rule(&Client::new(&base), &destinations, &["team"]).await;

    let config = adapter(&base, None)
        .replication_config(&registry_of(moto::ACCOUNT))
        .await
        .unwrap();

    assert_eq!(config.registry, account(moto::ACCOUNT));
    assert_eq!(config.region, region(moto::REGION));
    assert_eq!(
        config.rules,
        vec![Rule {
            destinations: vec![
                Destination {
                    account: account(moto::ACCOUNT),
                    region: region("eu-west-1"),
                },
                Destination {
                    account: account(OTHER_ACCOUNT),
                    region: region("us-east-2"),
                },
            ],
            prefixes: vec!["team".into()],
            delete_replication: false,
        }]
    );
    assert_eq!(
        config
            .expected_destinations(&repository("team/app"))
            .destinations
            .len(),
        2
    );
}

#[tokio::test]
async fn delete_replication_put_in_moto_is_read_back_through_the_adapter() {
    let server = MotoServer::start();
    let base = server.sdk_config().await;
    moto::put_replication_document(
        &Client::new(&base),
        serde_json::json!({"rules": [{
            "destinations": [{"region": "eu-west-1", "registryId": moto::ACCOUNT}],
            "repositoryFilters": [{"filter": "team", "filterType": "PREFIX_MATCH"}],
            "deleteReplication": {"enabled": true}
        }]}),
    )
    .await;

    let config = adapter(&base, None)
        .replication_config(&registry_of(moto::ACCOUNT))
        .await
        .unwrap();

    assert_eq!(config.rules.len(), 1);
    assert!(config.rules[0].delete_replication);
    assert_eq!(
        config
            .delete_destinations(&repository("team/app"))
            .destinations,
        vec![Destination {
            account: account(moto::ACCOUNT),
            region: region("eu-west-1"),
        }]
    );
}

#[tokio::test]
async fn another_region_of_the_same_registry_is_asked_in_that_region_and_has_no_rules() {
    let server = MotoServer::start();
    let base = server.sdk_config().await;
    moto::put_replication_rule(&Client::new(&base), &[("eu-west-1", moto::ACCOUNT)], &[]).await;
    let registry = adapter(&base, None);
    let elsewhere = ids::registry(moto::ACCOUNT, "eu-west-1");

    // The base configuration is in us-east-1; the adapter's client for eu-west-1 must be too.
    let config = registry.replication_config(&elsewhere).await.unwrap();
    assert_eq!(config.region, elsewhere.region);
    assert!(config.rules.is_empty(), "{:?}", config.rules);
    assert_eq!(
        registry
            .replication_config(&registry_of(moto::ACCOUNT))
            .await
            .unwrap()
            .rules
            .len(),
        1
    );
}

#[tokio::test]
async fn an_image_pushed_to_moto_is_found_with_its_tag_and_push_time_and_unknown_ones_are_none() {
    let server = MotoServer::start();
    let base = server.sdk_config().await;
    let ecr = Client::new(&base);
    moto::create_repository(&ecr, REPOSITORY).await;
    let before = millis_now();
    let digest = push(&ecr, REPOSITORY, "v1", 1).await;
    let after = millis_now();
    let registry = adapter(&base, None);

    let found = registry
        .image(
            &registry_of(moto::ACCOUNT),
            &repository(REPOSITORY),
            &digest,
        )
        .await
        .unwrap()
        .expect("the pushed image is found");

    assert_eq!(found.tags, vec![tag("v1")]);
    // moto stamps the push with its own clock, to the second.
    let pushed_at = found.pushed_at.expect("imagePushedAt").millis();
    assert!(
        before - 2_000 <= pushed_at && pushed_at <= after + 2_000,
        "{pushed_at} not within [{before}, {after}]"
    );

    let unknown = ids::digest(&synthetic_digest(7));
    assert_eq!(
        registry
            .image(
                &registry_of(moto::ACCOUNT),
                &repository(REPOSITORY),
                &unknown
            )
            .await,
        Ok(None)
    );
    assert_eq!(
        registry
            .image(
                &registry_of(moto::ACCOUNT),
                &repository("team/never-created"),
                &digest
            )
            .await,
        Ok(None)
    );
    // The same repository name in another Region is another repository.
    assert_eq!(
        registry
            .image(
                &ids::registry(moto::ACCOUNT, "eu-west-1"),
                &repository(REPOSITORY),
                &digest
            )
            .await,
        Ok(None)
    );
}

#[tokio::test]
async fn a_tag_in_moto_gives_the_digest_it_points_to_and_follows_a_new_push() {
    let server = MotoServer::start();
    let base = server.sdk_config().await;
    let ecr = Client::new(&base);
    moto::create_repository(&ecr, REPOSITORY).await;
    let first = push(&ecr, REPOSITORY, "v1", 1).await;
    // The same manifest pushed again with another tag: one image, two tags.
    assert_eq!(push(&ecr, REPOSITORY, "prod", 1).await, first);
    let registry = adapter(&base, None);
    let here = registry_of(moto::ACCOUNT);

    assert_eq!(
        registry
            .digest_of_tag(&here, &repository(REPOSITORY), &tag("prod"))
            .await,
        Ok(Some(first.clone()))
    );

    let second = push(&ecr, REPOSITORY, "prod", 2).await;
    assert_ne!(first, second);
    assert_eq!(
        registry
            .digest_of_tag(&here, &repository(REPOSITORY), &tag("prod"))
            .await,
        Ok(Some(second))
    );
    // The first image lost "prod" and kept "v1". (moto deletes an image whose last tag moves
    // away; ECR keeps it untagged. A second tag keeps this test true of both.)
    let retagged = registry
        .image(&here, &repository(REPOSITORY), &first)
        .await
        .unwrap()
        .expect("the first image is still there");
    assert_eq!(retagged.tags, vec![tag("v1")]);

    assert_eq!(
        registry
            .digest_of_tag(&here, &repository(REPOSITORY), &tag("staging"))
            .await,
        Ok(None)
    );
    assert_eq!(
        registry
            .digest_of_tag(&here, &repository("team/never-created"), &tag("prod"))
            .await,
        Ok(None)
    );
}

#[tokio::test]
async fn a_registry_in_another_account_is_read_through_the_audit_role() {
    let server = MotoServer::start();
    let base = server.sdk_config().await;
    // Set up the other account with credentials moto places there.
    let other = Client::new(&server.sdk_config_in_account(OTHER_ACCOUNT).await);
    moto::create_repository(&other, REPOSITORY).await;
    let digest = push(&other, REPOSITORY, "v7", 3).await;

    let registry = adapter(
        &base,
        Some(AuditRole {
            name: "ecr-replication-audit".into(),
            external_id: Some("audit-7f3a".into()),
        }),
    );

    let found = registry
        .image(
            &registry_of(OTHER_ACCOUNT),
            &repository(REPOSITORY),
            &digest,
        )
        .await
        .unwrap()
        .expect("the image in the other account is found");
    assert_eq!(found.tags, vec![tag("v7")]);
    assert_eq!(
        registry
            .digest_of_tag(
                &registry_of(OTHER_ACCOUNT),
                &repository(REPOSITORY),
                &tag("v7")
            )
            .await,
        Ok(Some(digest.clone()))
    );
    // DescribeRegistry through the role answers for the other account (the adapter checks).
    let config = registry
        .replication_config(&registry_of(OTHER_ACCOUNT))
        .await
        .unwrap();
    assert_eq!(config.registry, account(OTHER_ACCOUNT));
    // The function's own account, read with the base credentials, does not have that repository.
    assert_eq!(
        registry
            .image(
                &registry_of(moto::ACCOUNT),
                &repository(REPOSITORY),
                &digest
            )
            .await,
        Ok(None)
    );

    // Without a role name the other account cannot be read.
    let err = adapter(&base, None)
        .image(
            &registry_of(OTHER_ACCOUNT),
            &repository(REPOSITORY),
            &digest,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&err, RegistryError::Refused(m) if m.starts_with("no AUDIT_ROLE_NAME")),
        "{err:?}"
    );
}

#[tokio::test]
async fn moto_does_not_implement_describe_image_replication_status_and_its_500_reads_as_transient()
{
    let server = MotoServer::start();
    let base = server.sdk_config().await;
    let ecr = Client::new(&base);
    moto::create_repository(&ecr, REPOSITORY).await;
    let digest = push(&ecr, REPOSITORY, "v1", 1).await;

    let err = adapter(&base, None)
        .replication_status(
            &registry_of(moto::ACCOUNT),
            &repository(REPOSITORY),
            &digest,
        )
        .await
        .unwrap_err();

    // moto answers a bare "500 Internal Server Error" HTML page, the same as a real server
    // fault: nothing in it says "not implemented", so it cannot be told apart and is transient.
    let RegistryError::Transient(message) = &err else {
        panic!("expected Transient, got {err:?}");
    };
    assert!(message.ends_with("(HTTP 500)"), "{message}");
}
