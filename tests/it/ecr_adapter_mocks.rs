//! The ECR adapter against aws-smithy-mocks: the exact requests it sends, how it reads ECR's
//! answers, and which failures it reports as transient (a retry may help) or refused.
//!
//! DescribeImageReplicationStatus is tested only here: moto does not implement it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_config::{BehaviorVersion, Region as SdkRegion, SdkConfig};
use aws_credential_types::Credentials;
use aws_sdk_ecr::Client;
use aws_sdk_ecr::config::retry::RetryConfig;
use aws_sdk_ecr::operation::describe_image_replication_status::{
    DescribeImageReplicationStatusError, DescribeImageReplicationStatusInput,
    DescribeImageReplicationStatusOutput,
};
use aws_sdk_ecr::operation::describe_images::{
    DescribeImagesError, DescribeImagesInput, DescribeImagesOutput,
};
use aws_sdk_ecr::operation::describe_registry::DescribeRegistryOutput;
use aws_sdk_ecr::primitives::DateTime;
use aws_sdk_ecr::types::error::{ImageNotFoundException, RepositoryNotFoundException};
use aws_sdk_ecr::types::{
    ImageDetail, ImageReplicationStatus, ImageStatus as SdkImageStatus, ReplicationConfiguration,
    ReplicationDestination, ReplicationRule, ReplicationStatus as SdkStatus, RepositoryFilter,
    RepositoryFilterType,
};
use aws_smithy_mocks::{Rule, RuleMode, mock, mock_client};
use aws_smithy_types::body::SdkBody;

use ecr_replication_auditor::adapters::ecr::{AuditRole, EcrRegistry};
use ecr_replication_auditor::domain::config::{Destination, Rule as ConfigRule};
use ecr_replication_auditor::domain::confirm::{
    ImageFound, ImageStatus, ReplicationState, ReplicationStatus,
};
use ecr_replication_auditor::domain::ids::{ImageDigest, RepositoryName};
use ecr_replication_auditor::domain::time::Timestamp;
use ecr_replication_auditor::ports::registry::{RegistryAt, RegistryError, RegistryView};

use crate::support::ids::{self, account, region, tag};

const SOURCE_ACCOUNT: &str = "111111111111";
const OTHER_ACCOUNT: &str = "222222222222";
const REPOSITORY: &str = "team/app";
const DIGEST: &str = "sha256:4f53cda18c2baa0c0354bb5f9a3ecbe5ed12ab4d8e11ba873c2f11161202b945";
const NEWER_DIGEST: &str =
    "sha256:9d1d599a6c846949e232adc313372e4e07632e1b3c1729bfe8cb2b8e37e27c43";

fn source() -> RegistryAt {
    ids::registry(SOURCE_ACCOUNT, "us-west-2")
}

fn destination() -> RegistryAt {
    ids::registry(OTHER_ACCOUNT, "eu-west-1")
}

fn repository() -> RepositoryName {
    ids::repository(REPOSITORY)
}

fn digest() -> ImageDigest {
    ids::digest(DIGEST)
}

/// An adapter whose every request is answered by `rules`, with the SDK's standard retries
/// (three attempts) and a backoff of a few milliseconds.
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

/// Records every request a rule sees (once per call, not per retry), so tests can assert on
/// exactly what the adapter asked.
#[derive(Clone)]
struct Requests<I>(Arc<Mutex<Vec<I>>>);

impl<I: Clone + Send + 'static> Requests<I> {
    fn new() -> Self {
        Requests(Arc::default())
    }

    fn matcher(&self) -> impl Fn(&I) -> bool + Send + Sync + 'static {
        let seen = Arc::clone(&self.0);
        move |input| {
            seen.lock().unwrap().push(input.clone());
            true
        }
    }

    fn only(&self) -> I {
        let seen = self.0.lock().unwrap();
        assert_eq!(seen.len(), 1, "expected exactly one request");
        seen[0].clone()
    }
}

/// An awsJson 1.1 error body, as ECR sends it: the SDK reads the code from `__type`.
fn aws_error(code: &str, message: &str) -> Option<String> {
    Some(format!(r#"{{"__type":"{code}","message":"{message}"}}"#))
}

fn status_output(statuses: Vec<ImageReplicationStatus>) -> DescribeImageReplicationStatusOutput {
    DescribeImageReplicationStatusOutput::builder()
        .repository_name(REPOSITORY)
        .set_replication_statuses(Some(statuses))
        .build()
}

fn sdk_status(region: &str, status: SdkStatus, failure: Option<&str>) -> ImageReplicationStatus {
    ImageReplicationStatus::builder()
        .region(region)
        .registry_id(OTHER_ACCOUNT)
        .status(status)
        .set_failure_code(failure.map(str::to_owned))
        .build()
}

fn status(region: &str, state: ReplicationState, failure: Option<&str>) -> ReplicationStatus {
    ReplicationStatus {
        region: Some(self::region(region)),
        registry: Some(account(OTHER_ACCOUNT)),
        state,
        failure_code: failure.map(str::to_owned),
    }
}

/// Asks for the replication status of [`DIGEST`] against one canned answer.
async fn statuses_for(
    statuses: Vec<ImageReplicationStatus>,
) -> Result<Vec<ReplicationStatus>, RegistryError> {
    let rule = mock!(Client::describe_image_replication_status)
        .then_output(move || status_output(statuses.clone()));
    registry(&[&rule])
        .replication_status(&source(), &repository(), &digest())
        .await
}

#[tokio::test]
async fn a_complete_copy_is_asked_of_the_source_registry_by_repository_and_digest() {
    let requests = Requests::<DescribeImageReplicationStatusInput>::new();
    let rule = mock!(Client::describe_image_replication_status)
        .match_requests(requests.matcher())
        .then_output(|| status_output(vec![sdk_status("eu-west-1", SdkStatus::Complete, None)]));

    let got = registry(&[&rule])
        .replication_status(&source(), &repository(), &digest())
        .await
        .unwrap();

    assert_eq!(
        got,
        vec![status("eu-west-1", ReplicationState::Complete, None)]
    );
    let request = requests.only();
    assert_eq!(request.repository_name(), Some(REPOSITORY));
    assert_eq!(
        request.image_id().and_then(|id| id.image_digest()),
        Some(DIGEST)
    );
    assert_eq!(request.image_id().and_then(|id| id.image_tag()), None);
    assert_eq!(request.registry_id(), Some(SOURCE_ACCOUNT));
}

#[tokio::test]
async fn an_in_progress_copy_is_in_progress() {
    let got = statuses_for(vec![sdk_status("eu-west-1", SdkStatus::InProgress, None)])
        .await
        .unwrap();
    assert_eq!(
        got,
        vec![status("eu-west-1", ReplicationState::InProgress, None)]
    );
}

#[tokio::test]
async fn a_failed_copy_keeps_its_failure_code_verbatim() {
    let got = statuses_for(vec![
        sdk_status(
            "eu-west-1",
            SdkStatus::Failed,
            Some("IMAGE_TAG_IMMUTABLE  x/Ünïcode"),
        ),
        sdk_status("ap-south-1", SdkStatus::Complete, None),
    ])
    .await
    .unwrap();
    assert_eq!(
        got,
        vec![
            status(
                "eu-west-1",
                ReplicationState::Failed,
                Some("IMAGE_TAG_IMMUTABLE  x/Ünïcode")
            ),
            status("ap-south-1", ReplicationState::Complete, None),
        ]
    );
}

#[tokio::test]
async fn a_status_ecr_adds_later_is_kept_as_other_rather_than_failing() {
    let got = statuses_for(vec![sdk_status(
        "eu-west-1",
        SdkStatus::from("PAUSED_FOR_BACKFILL"),
        None,
    )])
    .await
    .unwrap();
    assert_eq!(
        got,
        vec![status(
            "eu-west-1",
            ReplicationState::Other("PAUSED_FOR_BACKFILL".into()),
            None
        )]
    );
}

#[tokio::test]
async fn a_status_entry_with_no_fields_is_kept_with_nothing_known() {
    let got = statuses_for(vec![ImageReplicationStatus::builder().build()])
        .await
        .unwrap();
    assert_eq!(
        got,
        vec![ReplicationStatus {
            region: None,
            registry: None,
            state: ReplicationState::Other(String::new()),
            failure_code: None,
        }]
    );
}

#[tokio::test]
async fn a_missing_image_or_repository_has_no_replication_statuses() {
    let image = mock!(Client::describe_image_replication_status)
        .match_requests(|r| r.repository_name() == Some(REPOSITORY))
        .then_error(|| {
            DescribeImageReplicationStatusError::ImageNotFoundException(
                ImageNotFoundException::builder()
                    .message("The image does not exist")
                    .build(),
            )
        });
    let repo = mock!(Client::describe_image_replication_status)
        .match_requests(|r| r.repository_name() == Some("team/gone"))
        .then_error(|| {
            DescribeImageReplicationStatusError::RepositoryNotFoundException(
                RepositoryNotFoundException::builder().build(),
            )
        });
    let registry = registry(&[&image, &repo]);

    let got = registry
        .replication_status(&source(), &repository(), &digest())
        .await;
    assert_eq!(got, Ok(vec![]));
    let got = registry
        .replication_status(&source(), &ids::repository("team/gone"), &digest())
        .await;
    assert_eq!(got, Ok(vec![]));
}

#[tokio::test]
async fn throttling_twice_is_retried_by_the_sdk_and_then_succeeds() {
    let rule = mock!(Client::describe_image_replication_status)
        .sequence()
        .http_status(400, aws_error("ThrottlingException", "Rate exceeded"))
        .times(2)
        .output(|| status_output(vec![sdk_status("eu-west-1", SdkStatus::Complete, None)]))
        .build();

    let got = registry(&[&rule])
        .replication_status(&source(), &repository(), &digest())
        .await;

    assert_eq!(
        got,
        Ok(vec![status("eu-west-1", ReplicationState::Complete, None)])
    );
    assert_eq!(
        rule.num_calls(),
        3,
        "two throttled attempts, then the answer"
    );
}

/// The adapter's three calls, as the error cases below make them.
#[derive(Clone, Copy, Debug)]
enum Call {
    /// DescribeImageReplicationStatus of [`DIGEST`] in the source.
    Status,
    /// DescribeImages by digest in the destination.
    Image,
    /// DescribeImages by tag in the destination.
    DigestOfTag,
}

impl Call {
    /// A rule answering every request of this call with `http_status` and `body`.
    fn always(self, http_status: u16, body: Option<String>) -> Rule {
        match self {
            Call::Status => mock!(Client::describe_image_replication_status)
                .sequence()
                .http_status(http_status, body)
                .repeatedly()
                .build(),
            Call::Image | Call::DigestOfTag => mock!(Client::describe_images)
                .sequence()
                .http_status(http_status, body)
                .repeatedly()
                .build(),
        }
    }

    /// Makes the call; only its error matters here.
    async fn error(self, registry: &EcrRegistry) -> Option<RegistryError> {
        match self {
            Call::Status => registry
                .replication_status(&source(), &repository(), &digest())
                .await
                .err(),
            Call::Image => registry
                .image(&destination(), &repository(), &digest())
                .await
                .err(),
            Call::DigestOfTag => registry
                .digest_of_tag(&destination(), &repository(), &tag("v1"))
                .await
                .err(),
        }
    }
}

/// What the adapter's message must say.
enum Says {
    Contains(String),
    StartsWith(String),
    EndsWith(String),
}

/// An error ECR answers every attempt with, and what the adapter must make of it.
struct ErrorCase {
    /// Named in every assertion.
    name: &'static str,
    call: Call,
    http_status: u16,
    /// The error body's code and message; `None`: no body at all.
    error: Option<(&'static str, &'static str)>,
    /// Transient (a retry may help), else refused.
    transient: bool,
    /// How many requests reached ECR (3: the SDK's standard retries; 1: none), where it is
    /// part of the case.
    attempts: Option<usize>,
    /// What the adapter's message says, where it is part of the case.
    says: Option<Says>,
}

/// Throttling, server errors and refusals that outlast the SDK's retries: which are transient
/// (EventBridge's retry of the invocation may help) and which are refused, and how many
/// attempts the SDK made first.
#[tokio::test]
async fn an_error_ecr_keeps_answering_is_transient_or_refused_by_its_code() {
    use Says::{Contains, EndsWith, StartsWith};
    // DescribeImages answering `code` every time: the case is named by its code.
    let throttled = |code: &'static str, transient| ErrorCase {
        name: code,
        call: Call::Image,
        http_status: 400,
        error: Some((code, "try again")),
        transient,
        attempts: None,
        says: Some(Contains(code.to_owned())),
    };
    let cases = [
        ErrorCase {
            name: "throttling that outlasts the retries is transient",
            call: Call::Status,
            http_status: 400,
            error: Some(("ThrottlingException", "Rate exceeded")),
            transient: true,
            attempts: Some(3),
            says: Some(Contains("ThrottlingException".to_owned())),
        },
        // Every throttling code is transient, and a quota (LimitExceededException) is not.
        throttled("ThrottlingException", true),
        throttled("SlowDown", true),
        throttled("PriorRequestNotComplete", true),
        throttled("BandwidthLimitExceeded", true),
        throttled("RequestLimitExceeded", true),
        throttled("LimitExceededException", false),
        ErrorCase {
            name: "persistent server errors are transient after the SDK's retries",
            call: Call::Image,
            http_status: 500,
            error: None,
            transient: true,
            attempts: Some(3),
            says: Some(EndsWith("no error code (HTTP 500)".to_owned())),
        },
        ErrorCase {
            name: "a modeled server exception is transient",
            call: Call::DigestOfTag,
            http_status: 500,
            error: Some(("ServerException", "internal")),
            transient: true,
            attempts: None,
            says: None,
        },
        ErrorCase {
            name: "an operation the service does not know is refused",
            call: Call::Image,
            http_status: 400,
            error: Some(("UnknownOperationException", "")),
            transient: false,
            attempts: Some(1),
            says: None,
        },
        ErrorCase {
            name: "HTTP 501 Not Implemented is refused, unlike other server errors",
            call: Call::Image,
            http_status: 501,
            error: Some(("NotImplemented", "not implemented")),
            transient: false,
            attempts: None,
            says: Some(EndsWith(
                "NotImplemented (HTTP 501): not implemented".to_owned(),
            )),
        },
        ErrorCase {
            name: "access denied is refused without a retry",
            call: Call::Status,
            http_status: 400,
            error: Some((
                "AccessDeniedException",
                "User: arn:aws:sts::111111111111:assumed-role/auditor/x is not authorized to perform: ecr:DescribeImageReplicationStatus",
            )),
            transient: false,
            attempts: Some(1),
            says: Some(StartsWith(format!(
                "DescribeImageReplicationStatus {REPOSITORY}@{DIGEST} in {SOURCE_ACCOUNT}/us-west-2: AccessDeniedException (HTTP 400): User: "
            ))),
        },
    ];

    for case in cases {
        let name = case.name;
        let rule = case.call.always(
            case.http_status,
            case.error
                .and_then(|(code, message)| aws_error(code, message)),
        );
        let err = case
            .call
            .error(&registry(&[&rule]))
            .await
            .unwrap_or_else(|| panic!("{name}: the call succeeded"));

        assert_eq!(err.is_transient(), case.transient, "{name}: {err:?}");
        let (RegistryError::Transient(message) | RegistryError::Refused(message)) = &err;
        match &case.says {
            Some(Contains(part)) => assert!(message.contains(part), "{name}: {message}"),
            Some(StartsWith(start)) => assert!(message.starts_with(start), "{name}: {message}"),
            Some(EndsWith(end)) => assert!(message.ends_with(end), "{name}: {message}"),
            None => {}
        }
        if let Some(attempts) = case.attempts {
            assert_eq!(rule.num_calls(), attempts, "{name}: requests to ECR");
        }
    }
}

#[tokio::test]
async fn an_image_in_the_destination_gives_its_tags_and_push_time() {
    let requests = Requests::<DescribeImagesInput>::new();
    let rule = mock!(Client::describe_images)
        .match_requests(requests.matcher())
        .then_output(|| {
            DescribeImagesOutput::builder()
                .image_details(
                    ImageDetail::builder()
                        .registry_id(OTHER_ACCOUNT)
                        .repository_name(REPOSITORY)
                        .image_digest(DIGEST)
                        .image_tags("v1.2.3")
                        .image_tags("latest")
                        .image_pushed_at(DateTime::from_millis(1_719_835_200_250))
                        .build(),
                )
                .build()
        });

    let got = registry(&[&rule])
        .image(&destination(), &repository(), &digest())
        .await
        .unwrap();

    assert_eq!(
        got,
        Some(ImageFound {
            tags: vec![tag("v1.2.3"), tag("latest")],
            pushed_at: Some(Timestamp::from_millis(1_719_835_200_250)),
            status: ImageStatus::Active,
        })
    );
    let request = requests.only();
    assert_eq!(request.repository_name(), Some(REPOSITORY));
    assert_eq!(request.registry_id(), Some(OTHER_ACCOUNT));
    assert_eq!(request.image_ids().len(), 1);
    assert_eq!(request.image_ids()[0].image_digest(), Some(DIGEST));
    assert_eq!(request.image_ids()[0].image_tag(), None);
}

#[tokio::test]
async fn an_images_status_is_read_and_an_answer_without_one_is_active() {
    for (sdk, status) in [
        (Some(SdkImageStatus::Archived), ImageStatus::Archived),
        (Some(SdkImageStatus::Activating), ImageStatus::Activating),
        (Some(SdkImageStatus::Active), ImageStatus::Active),
        (
            Some(SdkImageStatus::from("DEEP_FROZEN")),
            ImageStatus::Other("DEEP_FROZEN".into()),
        ),
        (None, ImageStatus::Active),
    ] {
        let answer = sdk.clone();
        let rule = mock!(Client::describe_images).then_output(move || {
            DescribeImagesOutput::builder()
                .image_details(
                    ImageDetail::builder()
                        .image_digest(DIGEST)
                        .set_image_status(answer.clone())
                        .build(),
                )
                .build()
        });
        let got = registry(&[&rule])
            .image(&destination(), &repository(), &digest())
            .await
            .unwrap()
            .map(|found| found.status);
        assert_eq!(got, Some(status), "{sdk:?}");
    }
}

#[tokio::test]
async fn an_untagged_copy_is_found_with_no_tags() {
    let rule = mock!(Client::describe_images).then_output(|| {
        DescribeImagesOutput::builder()
            .image_details(ImageDetail::builder().image_digest(DIGEST).build())
            .build()
    });
    let got = registry(&[&rule])
        .image(&destination(), &repository(), &digest())
        .await
        .unwrap();
    assert_eq!(
        got,
        Some(ImageFound {
            tags: vec![],
            pushed_at: None,
            status: ImageStatus::Active,
        })
    );
}

#[tokio::test]
async fn an_image_not_in_the_destination_is_none() {
    let rule = mock!(Client::describe_images).then_error(|| {
        DescribeImagesError::ImageNotFoundException(
            ImageNotFoundException::builder()
                .message("The image with imageId {imageDigest:'sha256:…'} does not exist")
                .build(),
        )
    });
    let got = registry(&[&rule])
        .image(&destination(), &repository(), &digest())
        .await;
    assert_eq!(got, Ok(None));
}

#[tokio::test]
async fn a_repository_not_in_the_destination_is_none() {
    let rule = mock!(Client::describe_images).then_error(|| {
        DescribeImagesError::RepositoryNotFoundException(
            RepositoryNotFoundException::builder().build(),
        )
    });
    let got = registry(&[&rule])
        .image(&destination(), &repository(), &digest())
        .await;
    assert_eq!(got, Ok(None));
}

#[tokio::test]
async fn a_tag_gives_the_digest_it_points_to_in_the_destination() {
    let requests = Requests::<DescribeImagesInput>::new();
    let rule = mock!(Client::describe_images)
        .match_requests(requests.matcher())
        .then_output(|| {
            DescribeImagesOutput::builder()
                .image_details(
                    ImageDetail::builder()
                        .image_digest(NEWER_DIGEST)
                        .image_tags("prod")
                        .build(),
                )
                .build()
        });

    let got = registry(&[&rule])
        .digest_of_tag(&destination(), &repository(), &tag("prod"))
        .await;

    assert_eq!(got, Ok(Some(ids::digest(NEWER_DIGEST))));
    let request = requests.only();
    assert_eq!(request.repository_name(), Some(REPOSITORY));
    assert_eq!(request.registry_id(), Some(OTHER_ACCOUNT));
    assert_eq!(request.image_ids()[0].image_tag(), Some("prod"));
    assert_eq!(request.image_ids()[0].image_digest(), None);
}

#[tokio::test]
async fn a_tag_not_in_the_destination_has_no_digest() {
    let rule = mock!(Client::describe_images).then_error(|| {
        DescribeImagesError::ImageNotFoundException(ImageNotFoundException::builder().build())
    });
    let got = registry(&[&rule])
        .digest_of_tag(&destination(), &repository(), &tag("prod"))
        .await;
    assert_eq!(got, Ok(None));
}

fn rule(region: &str, account: &str, filter: Option<&str>) -> ReplicationRule {
    ReplicationRule::builder()
        .destinations(
            ReplicationDestination::builder()
                .region(region)
                .registry_id(account)
                .build()
                .unwrap(),
        )
        .set_repository_filters(filter.map(|f| {
            vec![
                RepositoryFilter::builder()
                    .filter(f)
                    .filter_type(RepositoryFilterType::PrefixMatch)
                    .build()
                    .unwrap(),
            ]
        }))
        .build()
        .unwrap()
}

fn registry_output(registry_id: &str, rules: Vec<ReplicationRule>) -> DescribeRegistryOutput {
    DescribeRegistryOutput::builder()
        .registry_id(registry_id)
        .replication_configuration(
            ReplicationConfiguration::builder()
                .set_rules(Some(rules))
                .build()
                .unwrap(),
        )
        .build()
}

#[tokio::test]
async fn describe_registry_becomes_the_domain_configuration() {
    let describe = mock!(Client::describe_registry).then_output(|| {
        registry_output(
            SOURCE_ACCOUNT,
            vec![
                rule("eu-west-1", OTHER_ACCOUNT, Some("team")),
                rule("us-east-1", SOURCE_ACCOUNT, None),
            ],
        )
    });

    let config = registry(&[&describe])
        .replication_config(&source())
        .await
        .unwrap();

    assert_eq!(config.registry, account(SOURCE_ACCOUNT));
    assert_eq!(config.region, region("us-west-2"));
    assert_eq!(
        config.rules,
        vec![
            ConfigRule {
                destinations: vec![Destination {
                    account: account(OTHER_ACCOUNT),
                    region: region("eu-west-1"),
                }],
                prefixes: vec!["team".into()],
                delete_replication: false,
            },
            ConfigRule {
                destinations: vec![Destination {
                    account: account(SOURCE_ACCOUNT),
                    region: region("us-east-1"),
                }],
                prefixes: vec![],
                delete_replication: false,
            },
        ]
    );
    assert!(config.warnings.is_empty(), "{:?}", config.warnings);
    assert_eq!(describe.num_calls(), 1);
}

/// DescribeRegistry's answer as ECR sends it with delete replication on one rule: aws-sdk-ecr
/// 1.138.0 does not model `deleteReplication`, so this is the HTTP body itself (awsJson 1.1),
/// as recorded, not a modeled output.
const DESCRIBE_REGISTRY_WITH_DELETE_REPLICATION: &str = r#"{
  "registryId": "111111111111",
  "replicationConfiguration": {
    "rules": [
      {"destinations": [{"region": "eu-west-1", "registryId": "222222222222"}]},
      {"destinations": [{"region": "us-east-1", "registryId": "111111111111"}],
       "repositoryFilters": [{"filter": "prod", "filterType": "PREFIX_MATCH"}],
       "deleteReplication": {"enabled": true}}
    ]
  }
}"#;

#[tokio::test]
async fn delete_replication_the_sdk_does_not_model_is_read_from_ecrs_answer_rule_by_rule() {
    let describe = mock!(Client::describe_registry)
        .sequence()
        .http_status(200, Some(DESCRIBE_REGISTRY_WITH_DELETE_REPLICATION.into()))
        .build();

    let config = registry(&[&describe])
        .replication_config(&source())
        .await
        .unwrap();

    let on: Vec<bool> = config.rules.iter().map(|r| r.delete_replication).collect();
    assert_eq!(on, [false, true]);
    assert_eq!(
        config
            .delete_destinations(&ids::repository("prod/web"))
            .destinations,
        vec![Destination {
            account: account(SOURCE_ACCOUNT),
            region: region("us-east-1"),
        }]
    );
    assert!(
        config
            .delete_destinations(&ids::repository("team/app"))
            .destinations
            .is_empty()
    );
}

#[tokio::test]
async fn a_throttled_first_answer_does_not_lend_its_body_to_the_configuration() {
    let describe = mock!(Client::describe_registry)
        .sequence()
        .http_status(400, aws_error("ThrottlingException", "Rate exceeded"))
        .http_status(200, Some(DESCRIBE_REGISTRY_WITH_DELETE_REPLICATION.into()))
        .build();
    let config = registry(&[&describe])
        .replication_config(&source())
        .await
        .unwrap();
    assert_eq!(describe.num_calls(), 2);
    assert!(
        config.rules[1].delete_replication,
        "the body of the attempt that answered"
    );
}

#[tokio::test]
async fn a_registry_without_replication_has_no_rules() {
    let describe = mock!(Client::describe_registry).then_output(|| {
        DescribeRegistryOutput::builder()
            .registry_id(SOURCE_ACCOUNT)
            .build()
    });
    let config = registry(&[&describe])
        .replication_config(&source())
        .await
        .unwrap();
    assert!(config.rules.is_empty());
}

#[tokio::test]
async fn an_invalid_configuration_from_ecr_is_refused_naming_the_rule_and_field() {
    let describe = mock!(Client::describe_registry).then_output(|| {
        registry_output(
            SOURCE_ACCOUNT,
            vec![
                rule("eu-west-1", OTHER_ACCOUNT, None),
                rule("EU_WEST_1", OTHER_ACCOUNT, None),
            ],
        )
    });
    let err = registry(&[&describe])
        .replication_config(&source())
        .await
        .unwrap_err();
    let RegistryError::Refused(message) = &err else {
        panic!("expected Refused, got {err:?}");
    };
    assert!(
        message.starts_with(&format!(
            "DescribeRegistry in {SOURCE_ACCOUNT}/us-west-2: returned a replication configuration the auditor cannot use: rule 1: destinations[0].region: \"EU_WEST_1\""
        )),
        "{message}"
    );
}

#[tokio::test]
async fn describe_registry_answering_for_another_account_is_refused() {
    let describe =
        mock!(Client::describe_registry).then_output(|| registry_output(OTHER_ACCOUNT, vec![]));
    let err = registry(&[&describe])
        .replication_config(&source())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, RegistryError::Refused(m) if m.contains("the credentials belong to another account")),
        "{err:?}"
    );
}

/// A base configuration whose every HTTP request goes to `http`, with fake static credentials.
async fn base_config(http: aws_smithy_http_client::test_util::CaptureRequestHandler) -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .region(SdkRegion::new("us-west-2"))
        .credentials_provider(Credentials::new(
            "AKIAIOSFODNN7EXAMPLE",
            "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            None,
            None,
            "test",
        ))
        .http_client(http)
        .load()
        .await
}

#[tokio::test]
async fn another_account_without_an_audit_role_is_refused_before_any_request() {
    let (http, requests) = aws_smithy_http_client::test_util::capture_request(None);
    let registry = EcrRegistry::new(base_config(http).await, account(SOURCE_ACCOUNT), None);

    let err = registry
        .image(&destination(), &repository(), &digest())
        .await
        .unwrap_err();

    assert_eq!(
        err,
        RegistryError::Refused(format!(
            "no AUDIT_ROLE_NAME to read account {OTHER_ACCOUNT} (the function runs in {SOURCE_ACCOUNT})"
        ))
    );
    requests.expect_no_request();
}

#[tokio::test]
async fn another_account_is_read_by_assuming_the_audit_role_with_its_external_id_and_a_denial_is_refused()
 {
    // STS answers AccessDenied, as it does when the role's trust policy does not name the
    // auditor's account or the external id does not match.
    let sts_denial = http::Response::builder()
        .status(403)
        .header("content-type", "text/xml")
        .body(SdkBody::from(
            "<ErrorResponse><Error><Type>Sender</Type><Code>AccessDenied</Code>\
             <Message>User: arn:aws:sts::111111111111:assumed-role/auditor-fn/x is not authorized \
             to perform: sts:AssumeRole</Message></Error><RequestId>r</RequestId></ErrorResponse>",
        ))
        .unwrap();
    let (http, requests) = aws_smithy_http_client::test_util::capture_request(Some(sts_denial));
    let registry = EcrRegistry::new(
        base_config(http).await,
        account(SOURCE_ACCOUNT),
        Some(AuditRole {
            name: "ecr-replication-audit".into(),
            external_id: Some("audit-7f3a".into()),
        }),
    );

    let err = registry
        .image(&destination(), &repository(), &digest())
        .await
        .unwrap_err();

    let RegistryError::Refused(message) = &err else {
        panic!("expected Refused, got {err:?}");
    };
    assert!(
        message.starts_with(&format!(
            "DescribeImages {REPOSITORY}@{DIGEST} in {OTHER_ACCOUNT}/eu-west-1: assuming the audit role: AccessDenied (HTTP 403): User: "
        )),
        "{message}"
    );
    assert!(!message.contains("wJalrXUtnFEMI"), "{message}");
    // The one request sent was STS AssumeRole, in the function's own Region, for the role of
    // that name in the destination's account, with the external id.
    let request = requests.expect_request();
    assert!(
        request
            .uri()
            .starts_with("https://sts.us-west-2.amazonaws.com"),
        "{}",
        request.uri()
    );
    let body = std::str::from_utf8(request.body().bytes().unwrap()).unwrap();
    for field in [
        "Action=AssumeRole",
        "RoleArn=arn%3Aaws%3Aiam%3A%3A222222222222%3Arole%2Fecr-replication-audit",
        "RoleSessionName=ecr-replication-auditor",
        "ExternalId=audit-7f3a",
    ] {
        assert!(body.split('&').any(|f| f == field), "{field} not in {body}");
    }
}
