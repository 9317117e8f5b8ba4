//! The ECR adapter's inventory listings against aws-smithy-mocks: what moto cannot show. Every
//! page of DescribeRepositories and DescribeImages is read (moto answers everything in one
//! page), DescribeImages asks for every `imageStatus` and reads `ARCHIVED` (moto sends no
//! status), and "not found" answers are answers.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_ecr::Client;
use aws_sdk_ecr::config::retry::RetryConfig;
use aws_sdk_ecr::operation::describe_images::{
    DescribeImagesError, DescribeImagesInput, DescribeImagesOutput,
};
use aws_sdk_ecr::operation::describe_repositories::{
    DescribeRepositoriesInput, DescribeRepositoriesOutput,
};
use aws_sdk_ecr::operation::get_lifecycle_policy::{
    GetLifecyclePolicyError, GetLifecyclePolicyOutput,
};
use aws_sdk_ecr::operation::get_repository_policy::GetRepositoryPolicyError;
use aws_sdk_ecr::primitives::DateTime;
use aws_sdk_ecr::types::error::{
    InvalidParameterException, LifecyclePolicyNotFoundException, RepositoryNotFoundException,
    RepositoryPolicyNotFoundException,
};
use aws_sdk_ecr::types::{
    EncryptionConfiguration, EncryptionType, ImageDetail, ImageScanningConfiguration, ImageStatus,
    ImageStatusFilter, ImageTagMutability, Repository,
};
use aws_smithy_mocks::{Rule, RuleMode, mock, mock_client};

use ecr_replication_auditor::adapters::ecr::EcrRegistry;
use ecr_replication_auditor::domain::drift::{ImageState, RepositorySettings};
use ecr_replication_auditor::domain::time::Timestamp;
use ecr_replication_auditor::ports::inventory::RegistryInventory;
use ecr_replication_auditor::ports::registry::{RegistryAt, RegistryError};

use crate::support::ids::{self, synthetic_digest, tag};

const ACCOUNT: &str = "444455556666";

fn at() -> RegistryAt {
    ids::registry(ACCOUNT, "eu-west-1")
}

fn registry(rules: &[&Rule]) -> EcrRegistry {
    EcrRegistry::with_client(mock_client!(
        aws_sdk_ecr,
        RuleMode::MatchAny,
        rules,
        |config| config.retry_config(
            RetryConfig::standard()
                .with_max_attempts(3)
                .with_initial_backoff(Duration::from_millis(1))
                .with_max_backoff(Duration::from_millis(5))
        )
    ))
}

/// Every request a rule saw.
#[derive(Clone)]
struct Seen<I>(Arc<Mutex<Vec<I>>>);

impl<I: Clone + Send + 'static> Seen<I> {
    fn new() -> Self {
        Seen(Arc::default())
    }

    fn matcher(
        &self,
        also: impl Fn(&I) -> bool + Send + Sync + 'static,
    ) -> impl Fn(&I) -> bool + Send + Sync + 'static {
        let seen = Arc::clone(&self.0);
        move |input| {
            let matched = also(input);
            if matched {
                seen.lock().unwrap().push(input.clone());
            }
            matched
        }
    }

    fn all(&self) -> Vec<I> {
        self.0.lock().unwrap().clone()
    }
}

fn detail(n: u16, tags: &[&str], status: Option<ImageStatus>) -> ImageDetail {
    ImageDetail::builder()
        .image_digest(synthetic_digest(n))
        .set_image_tags(Some(tags.iter().map(|t| (*t).to_owned()).collect()))
        .image_pushed_at(DateTime::from_secs(1_719_828_000 + i64::from(n)))
        .set_image_status(status)
        .build()
}

#[tokio::test]
async fn every_page_of_images_is_read_following_the_next_token_with_every_image_status() {
    let seen = Seen::<DescribeImagesInput>::new();
    let first = mock!(Client::describe_images)
        .match_requests(seen.matcher(|r| r.next_token().is_none()))
        .then_output(|| {
            DescribeImagesOutput::builder()
                .image_details(detail(1, &["v1"], Some(ImageStatus::Active)))
                .image_details(detail(2, &["v2", "latest"], Some(ImageStatus::Archived)))
                .next_token("page-2")
                .build()
        });
    let second = mock!(Client::describe_images)
        .match_requests(seen.matcher(|r| r.next_token() == Some("page-2")))
        .then_output(|| {
            DescribeImagesOutput::builder()
                .image_details(detail(3, &[], Some(ImageStatus::Activating)))
                .image_details(detail(4, &[], None))
                .build()
        });

    let listed = registry(&[&first, &second])
        .images(&at(), &ids::repository("team/app"))
        .await
        .unwrap();

    assert_eq!(listed.requests, 2);
    let images = listed.value.expect("the repository exists");
    let states: Vec<(String, Vec<String>, ImageState)> = images
        .iter()
        .map(|i| {
            (
                i.digest.to_string(),
                i.tags.iter().map(ToString::to_string).collect(),
                i.state.clone(),
            )
        })
        .collect();
    assert_eq!(
        states,
        [
            (
                synthetic_digest(1),
                vec!["v1".to_owned()],
                ImageState::Active
            ),
            (
                synthetic_digest(2),
                vec!["latest".to_owned(), "v2".to_owned()],
                ImageState::Archived
            ),
            (synthetic_digest(3), vec![], ImageState::Activating),
            // No imageStatus: an active image.
            (synthetic_digest(4), vec![], ImageState::Active),
        ]
    );
    assert_eq!(
        images[0].pushed_at,
        Some(Timestamp::from_millis(1_719_828_001_000))
    );
    assert_eq!(images[1].tags, vec![tag("latest"), tag("v2")]);
    for request in seen.all() {
        assert_eq!(request.registry_id(), Some(ACCOUNT));
        assert_eq!(request.repository_name(), Some("team/app"));
        assert_eq!(request.max_results(), Some(1000));
        assert_eq!(
            request.filter().and_then(|f| f.image_status()),
            Some(&ImageStatusFilter::Any),
            "archived copies must be listed, not taken for missing"
        );
    }
}

#[tokio::test]
async fn every_page_of_repositories_is_read_with_each_ones_settings() {
    let seen = Seen::<DescribeRepositoriesInput>::new();
    let repo = |name: &str| {
        Repository::builder()
            .repository_name(name)
            .image_tag_mutability(ImageTagMutability::Immutable)
            .image_scanning_configuration(
                ImageScanningConfiguration::builder()
                    .scan_on_push(true)
                    .build(),
            )
            .encryption_configuration(
                EncryptionConfiguration::builder()
                    .encryption_type(EncryptionType::Kms)
                    .kms_key("arn:aws:kms:eu-west-1:444455556666:key/mrk-1")
                    .build()
                    .unwrap(),
            )
            .build()
    };
    let first = mock!(Client::describe_repositories)
        .match_requests(seen.matcher(|r| r.next_token().is_none()))
        .then_output(move || {
            DescribeRepositoriesOutput::builder()
                .repositories(repo("team/b"))
                .next_token("more")
                .build()
        });
    let second = mock!(Client::describe_repositories)
        .match_requests(seen.matcher(|r| r.next_token() == Some("more")))
        .then_output(|| {
            DescribeRepositoriesOutput::builder()
                .repositories(Repository::builder().repository_name("team/a").build())
                // A name the domain refuses is skipped, not fatal.
                .repositories(Repository::builder().repository_name("Not A Name").build())
                .build()
        });

    let listed = registry(&[&first, &second])
        .repositories(&at())
        .await
        .unwrap();

    assert_eq!(listed.requests, 2);
    let names: Vec<String> = listed.value.iter().map(|r| r.name.to_string()).collect();
    assert_eq!(names, ["team/a", "team/b"], "in name order");
    assert_eq!(listed.value[0].settings, RepositorySettings::default());
    assert_eq!(
        listed.value[1].settings,
        RepositorySettings {
            tag_mutability: Some("IMMUTABLE".into()),
            scan_on_push: Some(true),
            encryption_type: Some("KMS".into()),
            kms_key: Some("arn:aws:kms:eu-west-1:444455556666:key/mrk-1".into()),
        }
    );
    for request in seen.all() {
        assert_eq!(request.registry_id(), Some(ACCOUNT));
        assert_eq!(request.max_results(), Some(1000));
    }
}

#[tokio::test]
async fn a_next_token_that_comes_back_unchanged_is_refused_rather_than_followed_for_ever() {
    let rule = mock!(Client::describe_images).then_output(|| {
        DescribeImagesOutput::builder()
            .image_details(detail(1, &["v1"], None))
            .next_token("again")
            .build()
    });
    let err = registry(&[&rule])
        .images(&at(), &ids::repository("team/app"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, RegistryError::Refused(m) if m.contains("same nextToken")),
        "{err:?}"
    );
    assert_eq!(rule.num_calls(), 2);
}

#[tokio::test]
async fn a_repository_or_policy_that_does_not_exist_is_an_answer() {
    let images = mock!(Client::describe_images).then_error(|| {
        DescribeImagesError::RepositoryNotFoundException(
            RepositoryNotFoundException::builder().build(),
        )
    });
    let lifecycle = mock!(Client::get_lifecycle_policy).then_error(|| {
        GetLifecyclePolicyError::LifecyclePolicyNotFoundException(
            LifecyclePolicyNotFoundException::builder().build(),
        )
    });
    let policy = mock!(Client::get_repository_policy).then_error(|| {
        GetRepositoryPolicyError::RepositoryPolicyNotFoundException(
            RepositoryPolicyNotFoundException::builder().build(),
        )
    });
    let registry = registry(&[&images, &lifecycle, &policy]);
    let repo = ids::repository("team/app");
    let listed = registry.images(&at(), &repo).await.unwrap();
    assert_eq!((listed.value, listed.requests), (None, 1));
    assert_eq!(registry.lifecycle_policy(&at(), &repo).await, Ok(None));
    assert_eq!(registry.repository_policy(&at(), &repo).await, Ok(None));
}

#[tokio::test]
async fn a_lifecycle_policy_is_read_verbatim() {
    let text = r#"{"rules":[{"rulePriority":1,"selection":{"tagStatus":"any","countType":"sinceImagePulled","countUnit":"days","countNumber":30},"action":{"type":"transition","targetStorageClass":"archive"}}]}"#;
    let rule = mock!(Client::get_lifecycle_policy).then_output(move || {
        GetLifecyclePolicyOutput::builder()
            .lifecycle_policy_text(text)
            .build()
    });
    assert_eq!(
        registry(&[&rule])
            .lifecycle_policy(&at(), &ids::repository("team/app"))
            .await,
        Ok(Some(text.to_owned()))
    );
}

#[tokio::test]
async fn a_region_that_refuses_the_image_status_filter_is_asked_again_without_it() {
    let seen = Seen::<DescribeImagesInput>::new();
    let refused = mock!(Client::describe_images)
        .match_requests(seen.matcher(|r| r.filter().is_some()))
        .then_error(|| {
            DescribeImagesError::InvalidParameterException(
                InvalidParameterException::builder()
                    .message("Invalid parameter at 'filter'")
                    .build(),
            )
        });
    let plain = mock!(Client::describe_images)
        .match_requests(seen.matcher(|r| r.filter().is_none()))
        .then_output(|| {
            DescribeImagesOutput::builder()
                .image_details(detail(1, &["v1"], None))
                .build()
        });
    let listed = registry(&[&refused, &plain])
        .images(&at(), &ids::repository("team/app"))
        .await
        .unwrap();
    assert_eq!(listed.value.map(|v| v.len()), Some(1));
    assert_eq!(listed.requests, 2);
    assert_eq!(seen.all().len(), 2);
}

#[tokio::test]
async fn a_throttled_listing_that_outlives_the_sdks_retries_is_transient_and_says_where() {
    let rule = mock!(Client::describe_repositories)
        .sequence()
        .http_status(
            400,
            Some(r#"{"__type":"ThrottlingException","message":"Rate exceeded"}"#.into()),
        )
        .repeatedly()
        .build();
    let err = registry(&[&rule]).repositories(&at()).await.unwrap_err();
    assert!(err.is_transient(), "{err:?}");
    assert!(
        err.to_string()
            .contains("DescribeRepositories in 444455556666/eu-west-1"),
        "{err}"
    );
    assert_eq!(rule.num_calls(), 3, "the SDK's three attempts");
}
