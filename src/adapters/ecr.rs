//! The Amazon ECR adapter: [`EcrRegistry`] answers the [`RegistryView`] questions with
//! aws-sdk-ecr, converting SDK types to domain types at this boundary.
//!
//! - One ECR client per (account, Region), built on first use and kept for the life of the
//!   process (a Lambda execution environment), so credentials and connections are reused.
//! - A registry in the function's own account is read with the base credentials; another account
//!   through the audit role (`AUDIT_ROLE_NAME`, `AUDIT_ROLE_EXTERNAL_ID`) assumed with STS.
//! - SDK failures become [`RegistryError`]s that say whether a retry can help. The SDK's standard
//!   retries have already run by then.

use std::collections::HashMap;
use std::error::Error as StdError;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use aws_config::SdkConfig;
use aws_config::sts::AssumeRoleProvider;
use aws_credential_types::provider::SharedCredentialsProvider;
use aws_credential_types::provider::error::CredentialsError;
use aws_sdk_ecr::Client;
use aws_sdk_ecr::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_ecr::operation::describe_image_replication_status::DescribeImageReplicationStatusError;
use aws_sdk_ecr::operation::describe_images::DescribeImagesError;
use aws_sdk_ecr::operation::describe_registry::DescribeRegistryOutput;
use aws_sdk_ecr::types::{ImageIdentifier, ImageReplicationStatus, ReplicationConfiguration};
use aws_sdk_sts::operation::assume_role::AssumeRoleError;
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::AfterDeserializationInterceptorContextRef;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;
use serde_json::{Value, json};

use crate::adapters::sdk;
use crate::domain::config::ReplicationConfig;
use crate::domain::confirm::{ImageFound, ImageStatus, ReplicationState, ReplicationStatus};
use crate::domain::ids::{AccountId, ImageDigest, ImageTag, Region, RepositoryName, quoted};
use crate::domain::time::Timestamp;
use crate::ports::registry::{RegistryAt, RegistryError, RegistryView};

/// The session name of every assumed audit role: it shows in the other account's CloudTrail as
/// `assumed-role/{AUDIT_ROLE_NAME}/ecr-replication-auditor`, naming who read the registry.
const SESSION_NAME: &str = "ecr-replication-auditor";

/// The role the auditor assumes to read a registry in another account.
#[derive(Clone, Debug)]
pub struct AuditRole {
    /// The role's name (`AUDIT_ROLE_NAME`), the same in every account:
    /// `arn:aws:iam::{account}:role/{name}`.
    pub name: String,
    /// `AUDIT_ROLE_EXTERNAL_ID`, when the roles' trust policies require one.
    pub external_id: Option<String>,
}

/// Reads registries with aws-sdk-ecr.
#[derive(Debug)]
pub struct EcrRegistry {
    clients: Clients,
}

#[derive(Debug)]
enum Clients {
    /// One client for every registry, whatever its account and Region: for tests, which inject
    /// an aws-smithy-mocks client.
    Fixed(Client),
    PerRegistry(Box<PerRegistry>),
}

#[derive(Debug)]
struct PerRegistry {
    /// The function's own configuration (credentials, retries, `AWS_ENDPOINT_URL`): each client
    /// is this with the registry's Region, and for another account the audit role's credentials.
    base: SdkConfig,
    /// The account the base credentials belong to: its registries need no role.
    own_account: AccountId,
    /// `None` when no `AUDIT_ROLE_NAME` is set: other accounts cannot be read.
    role: Option<AuditRole>,
    /// One configuration per other account, so all its Regions share one assumed-role
    /// credentials provider (one AssumeRole call per account, not per Region).
    accounts: Mutex<HashMap<AccountId, SdkConfig>>,
    /// Built once per (account, Region): a client holds a connection pool and cached credentials.
    clients: Mutex<HashMap<RegistryAt, Client>>,
}

impl EcrRegistry {
    /// Built once at cold start. `base` is the function's own SDK configuration as
    /// `aws_config` loads it (honouring `AWS_ENDPOINT_URL`; the loader also sets the time source
    /// the STS credentials provider needs); `own_account` the account its credentials belong to.
    pub fn new(base: SdkConfig, own_account: AccountId, role: Option<AuditRole>) -> Self {
        EcrRegistry {
            clients: Clients::PerRegistry(Box::new(PerRegistry {
                base,
                own_account,
                role,
                accounts: Mutex::default(),
                clients: Mutex::default(),
            })),
        }
    }

    /// Reads every registry with `client`, whatever the registry's account and Region (the
    /// `registryId` of each request still names the registry). For tests with aws-smithy-mocks.
    pub fn with_client(client: Client) -> Self {
        EcrRegistry {
            clients: Clients::Fixed(client),
        }
    }

    async fn client(&self, at: &RegistryAt) -> Result<Client, RegistryError> {
        match &self.clients {
            Clients::Fixed(client) => Ok(client.clone()),
            Clients::PerRegistry(per) => per.client(at).await,
        }
    }
}

/// The maps only ever gain entries, so one left by a panicking thread is still consistent.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl PerRegistry {
    async fn client(&self, at: &RegistryAt) -> Result<Client, RegistryError> {
        // No guard is held across an await: the futures must be Send, and a std Mutex guard is not.
        let cached = lock(&self.clients).get(at).cloned();
        if let Some(client) = cached {
            return Ok(client);
        }
        let account = self.account_config(at.account).await?;
        let config = aws_sdk_ecr::config::Builder::from(&account)
            .region(aws_sdk_ecr::config::Region::new(
                at.region.as_str().to_owned(),
            ))
            .build();
        let client = Client::from_conf(config);
        // Two first calls may race to build a client; either one is fine, keep the first.
        Ok(lock(&self.clients)
            .entry(at.clone())
            .or_insert(client)
            .clone())
    }

    async fn account_config(&self, account: AccountId) -> Result<SdkConfig, RegistryError> {
        if account == self.own_account {
            return Ok(self.base.clone());
        }
        let cached = lock(&self.accounts).get(&account).cloned();
        if let Some(config) = cached {
            return Ok(config);
        }
        let Some(role) = &self.role else {
            return Err(RegistryError::Refused(format!(
                "no AUDIT_ROLE_NAME to read account {account} (the function runs in {})",
                self.own_account
            )));
        };
        let mut provider =
            AssumeRoleProvider::builder(format!("arn:aws:iam::{account}:role/{}", role.name))
                .session_name(SESSION_NAME)
                .configure(&self.base);
        if let Some(id) = &role.external_id {
            provider = provider.external_id(id.clone());
        }
        // `build` makes no request: the role is assumed on the first ECR call, and its
        // credentials are cached and refreshed by the SDK's identity cache.
        let provider = provider.build().await;
        let config = self
            .base
            .to_builder()
            .credentials_provider(SharedCredentialsProvider::new(provider))
            .build();
        Ok(lock(&self.accounts)
            .entry(account)
            .or_insert(config)
            .clone())
    }
}

impl RegistryView for EcrRegistry {
    async fn replication_config(
        &self,
        registry: &RegistryAt,
    ) -> Result<ReplicationConfig, RegistryError> {
        let call = Call::new("DescribeRegistry", registry, None);
        let raw = RawBody::default();
        let out = self
            .client(registry)
            .await?
            .describe_registry()
            .customize()
            .interceptor(raw.clone())
            .send()
            .await
            .map_err(|e| call.failed(&e))?;
        // Credentials for the wrong account would audit the wrong registry without a word.
        if let Some(id) = out.registry_id()
            && id != registry.account.to_string()
        {
            return Err(call.refused(format!(
                "answered for registry {}: the credentials belong to another account",
                quoted(id)
            )));
        }
        // One validation path: the API's answer goes through the same parser as a
        // `describe-registry` file given to `replay`.
        let mut document = describe_registry_document(&out, registry.account);
        add_unmodelled_rule_fields(&mut document, raw.json().as_ref());
        ReplicationConfig::from_json(&document, registry.region.clone(), Some(registry.account))
            .map_err(|e| {
                call.refused(format!(
                    "returned a replication configuration the auditor cannot use: {e}"
                ))
            })
    }

    async fn replication_status(
        &self,
        source: &RegistryAt,
        repository: &RepositoryName,
        digest: &ImageDigest,
    ) -> Result<Vec<ReplicationStatus>, RegistryError> {
        let call = Call::new(
            "DescribeImageReplicationStatus",
            source,
            Some((repository, digest.as_str())),
        );
        let result = self
            .client(source)
            .await?
            .describe_image_replication_status()
            .repository_name(repository.as_str())
            .image_id(by_digest(digest))
            .registry_id(source.account.to_string())
            .send()
            .await;
        match result {
            Ok(out) => Ok(out
                .replication_statuses()
                .iter()
                .map(|s| replication_status(s, &call))
                .collect()),
            Err(e)
                if matches!(
                    e.as_service_error(),
                    Some(
                        DescribeImageReplicationStatusError::ImageNotFoundException(_)
                            | DescribeImageReplicationStatusError::RepositoryNotFoundException(_)
                    )
                ) =>
            {
                Ok(Vec::new())
            }
            Err(e) => Err(call.failed(&e)),
        }
    }

    async fn image(
        &self,
        destination: &RegistryAt,
        repository: &RepositoryName,
        digest: &ImageDigest,
    ) -> Result<Option<ImageFound>, RegistryError> {
        let call = Call::new(
            "DescribeImages",
            destination,
            Some((repository, digest.as_str())),
        );
        let out = self
            .client(destination)
            .await?
            .describe_images()
            .repository_name(repository.as_str())
            .image_ids(by_digest(digest))
            .registry_id(destination.account.to_string())
            .send()
            .await;
        let out = match out {
            Ok(out) => out,
            Err(e) if not_found(&e) => return Ok(None),
            Err(e) => return Err(call.failed(&e)),
        };
        Ok(out.image_details().first().map(|detail| ImageFound {
            tags: detail
                .image_tags()
                .iter()
                .filter_map(|t| parse_or_warn(&call, "imageTags", t, ImageTag::parse))
                .collect(),
            // Milliseconds fit an i64 for any date ECR can hold; a value that does not is dropped
            // rather than failing the whole answer.
            pushed_at: detail
                .image_pushed_at()
                .and_then(|t| t.to_millis().ok())
                .map(Timestamp::from_millis),
            status: image_status(detail.image_status()),
        }))
    }

    async fn digest_of_tag(
        &self,
        destination: &RegistryAt,
        repository: &RepositoryName,
        tag: &ImageTag,
    ) -> Result<Option<ImageDigest>, RegistryError> {
        let call = Call::new(
            "DescribeImages",
            destination,
            Some((repository, tag.as_str())),
        );
        let out = self
            .client(destination)
            .await?
            .describe_images()
            .repository_name(repository.as_str())
            .image_ids(ImageIdentifier::builder().image_tag(tag.as_str()).build())
            .registry_id(destination.account.to_string())
            .send()
            .await;
        let out = match out {
            Ok(out) => out,
            Err(e) if not_found(&e) => return Ok(None),
            Err(e) => return Err(call.failed(&e)),
        };
        match out.image_details().first().and_then(|d| d.image_digest()) {
            None => Ok(None),
            Some(d) => ImageDigest::parse(d)
                .map(Some)
                .map_err(|e| call.refused(format!("returned the digest {} that {e}", quoted(d)))),
        }
    }
}

fn by_digest(digest: &ImageDigest) -> ImageIdentifier {
    ImageIdentifier::builder()
        .image_digest(digest.as_str())
        .build()
}

/// An image or repository that does not exist in a destination is an answer, not a failure.
fn not_found(e: &SdkError<DescribeImagesError>) -> bool {
    matches!(
        e.as_service_error(),
        Some(
            DescribeImagesError::ImageNotFoundException(_)
                | DescribeImagesError::RepositoryNotFoundException(_)
        )
    )
}

/// The document `aws ecr describe-registry` prints, rebuilt from the SDK's types.
fn describe_registry_document(out: &DescribeRegistryOutput, requested: AccountId) -> Value {
    let registry_id = out
        .registry_id()
        .map_or_else(|| requested.to_string(), str::to_owned);
    match out.replication_configuration() {
        // A registry that never had replication configured: nothing is expected of it.
        None => json!({ "registryId": registry_id }),
        Some(config) => json!({
            "registryId": registry_id,
            "replicationConfiguration": replication_configuration_document(config),
        }),
    }
}

fn replication_configuration_document(config: &ReplicationConfiguration) -> Value {
    let rules: Vec<Value> = config
        .rules()
        .iter()
        .map(|rule| {
            let destinations: Vec<Value> = rule
                .destinations()
                .iter()
                .map(|d| json!({ "region": d.region(), "registryId": d.registry_id() }))
                .collect();
            let mut doc = json!({ "destinations": destinations });
            // Absent and empty mean the same (every repository); keep what ECR said.
            if let Some(filters) = &rule.repository_filters {
                doc["repositoryFilters"] = filters
                    .iter()
                    .map(
                        |f| json!({ "filter": f.filter(), "filterType": f.filter_type().as_str() }),
                    )
                    .collect();
            }
            doc
        })
        .collect();
    json!({ "rules": rules })
}

/// The body of the last HTTP response an operation deserialized, kept for the fields ECR sends
/// that the SDK's model does not have yet. aws-sdk-ecr 1.138.0 (the newest the registry serves)
/// drops a rule's `deleteReplication`; reading the body here keeps it without a fork of the SDK.
///
/// Each attempt overwrites the last: the body kept is the one the returned output came from.
/// An operation answered without a body (a test's modeled output) keeps nothing.
#[derive(Clone, Debug, Default)]
struct RawBody(Arc<Mutex<Option<Vec<u8>>>>);

impl RawBody {
    /// The body as JSON, if it was one.
    fn json(&self) -> Option<Value> {
        let body = lock(&self.0).clone()?;
        serde_json::from_slice(&body).ok()
    }
}

impl Intercept for RawBody {
    fn name(&self) -> &'static str {
        "RawBody"
    }

    fn read_after_deserialization(
        &self,
        context: &AfterDeserializationInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        // Non-streaming operations have their whole body in memory by this phase.
        let body = context
            .response()
            .status()
            .is_success()
            .then(|| context.response().body().bytes().map(<[u8]>::to_vec))
            .flatten();
        *lock(&self.0) = body;
        Ok(())
    }
}

/// Copies each rule's `deleteReplication` from ECR's own answer (`raw`, the DescribeRegistry
/// body) into `document` (rebuilt from the SDK's types, which drop it), rule by rule. Only when
/// both list the same number of rules: anything else means the body is not the answer the
/// document was built from, and the rules keep ECR's default (no delete replication).
fn add_unmodelled_rule_fields(document: &mut Value, raw: Option<&Value>) {
    let raw_rules = raw
        .and_then(|r| r.pointer("/replicationConfiguration/rules"))
        .and_then(Value::as_array);
    let Some(rules) = document
        .pointer_mut("/replicationConfiguration/rules")
        .and_then(Value::as_array_mut)
    else {
        return;
    };
    let Some(raw_rules) = raw_rules.filter(|r| r.len() == rules.len()) else {
        return;
    };
    for (rule, raw_rule) in rules.iter_mut().zip(raw_rules) {
        if let Some(delete) = raw_rule.get("deleteReplication") {
            rule["deleteReplication"] = delete.clone();
        }
    }
}

/// `imageStatus`, which answers from before the archive storage class do not have: absent is
/// active.
fn image_status(status: Option<&aws_sdk_ecr::types::ImageStatus>) -> ImageStatus {
    use aws_sdk_ecr::types::ImageStatus as Sdk;
    match status {
        None | Some(Sdk::Active) => ImageStatus::Active,
        Some(Sdk::Archived) => ImageStatus::Archived,
        Some(Sdk::Activating) => ImageStatus::Activating,
        // New values have appeared in ECR's enums over the years: keep them, never fail on them.
        Some(other) => ImageStatus::Other(other.as_str().to_owned()),
    }
}

fn replication_status(s: &ImageReplicationStatus, call: &Call) -> ReplicationStatus {
    use aws_sdk_ecr::types::ReplicationStatus as Sdk;
    let state = match s.status() {
        Some(Sdk::InProgress) => ReplicationState::InProgress,
        Some(Sdk::Complete) => ReplicationState::Complete,
        Some(Sdk::Failed) => ReplicationState::Failed,
        // New values have appeared in ECR's enums over the years: keep them, never fail on them.
        Some(other) => ReplicationState::Other(other.as_str().to_owned()),
        None => ReplicationState::Other(String::new()),
    };
    ReplicationStatus {
        region: s
            .region()
            .and_then(|r| parse_or_warn(call, "region", r, Region::parse)),
        registry: s
            .registry_id()
            .and_then(|r| parse_or_warn(call, "registryId", r, AccountId::parse)),
        state,
        failure_code: s.failure_code().map(str::to_owned),
    }
}

/// A value ECR returned that the domain would refuse: dropped with a warning, so one odd field
/// does not hide the rest of the answer.
fn parse_or_warn<T, E: std::fmt::Display>(
    call: &Call,
    field: &str,
    value: &str,
    parse: impl FnOnce(&str) -> Result<T, E>,
) -> Option<T> {
    parse(value)
        .map_err(|e| {
            tracing::warn!(call = %call.context, field, "ECR returned {} that {e}; ignored", quoted(value));
        })
        .ok()
}

/// What was asked of whom, for error messages: `DescribeImages team/app@sha256:… in
/// 111111111111/us-east-1`.
struct Call {
    context: String,
}

impl Call {
    fn new(operation: &str, at: &RegistryAt, subject: Option<(&RepositoryName, &str)>) -> Self {
        let subject = subject
            .map(|(repo, id)| format!(" {repo}@{id}"))
            .unwrap_or_default();
        Call {
            context: format!("{operation}{subject} in {}/{}", at.account, at.region),
        }
    }

    fn refused(&self, why: String) -> RegistryError {
        RegistryError::Refused(format!("{}: {why}", self.context))
    }

    fn failed<E>(&self, e: &SdkError<E>) -> RegistryError
    where
        E: ProvideErrorMetadata + StdError + 'static,
    {
        let (transient, why) = classify(e);
        let message = format!("{}: {why}", self.context);
        if transient {
            RegistryError::Transient(message)
        } else {
            RegistryError::Refused(message)
        }
    }
}

/// Whether a failed call can succeed later, and why it failed. The retry decision is the one
/// every adapter shares ([`sdk::is_transient`]); this adds what only this adapter meets: the
/// audit role. Messages come from the SDK's errors and ECR's answers, which carry no
/// credentials (the SDK redacts them in `Debug` too).
fn classify<E>(e: &SdkError<E>) -> (bool, String)
where
    E: ProvideErrorMetadata + StdError + 'static,
{
    // Credentials are resolved just before sending, so a role that cannot be assumed arrives as
    // a dispatch (or construction) failure: find the cause before calling it a network problem.
    if matches!(
        e,
        SdkError::DispatchFailure(_) | SdkError::ConstructionFailure(_)
    ) {
        if let Some(sts) = find_cause::<SdkError<AssumeRoleError>>(e) {
            let (transient, why) = classify(sts);
            return (transient, format!("assuming the audit role: {why}"));
        }
        if let Some(creds) = find_cause::<CredentialsError>(e) {
            let transient = matches!(creds, CredentialsError::ProviderTimedOut(_));
            return (
                transient,
                format!("no credentials: {}", DisplayErrorContext(creds)),
            );
        }
    }
    match e {
        SdkError::ServiceError(ctx) => {
            let status = ctx.raw().status().as_u16();
            let why = format!(
                "{} (HTTP {status}){}",
                ctx.err().code().unwrap_or("no error code"),
                ctx.err()
                    .message()
                    .map(|m| format!(": {m}"))
                    .unwrap_or_default()
            );
            // 501 is "not implemented": unlike the other 5xx, the same call will never work.
            (status != 501 && sdk::is_transient(e), why)
        }
        _ => (sdk::is_transient(e), DisplayErrorContext(e).to_string()),
    }
}

/// The first error of type `T` in `e`'s chain of causes.
fn find_cause<'a, T: StdError + 'static>(e: &'a (dyn StdError + 'static)) -> Option<&'a T> {
    let mut next = Some(e);
    while let Some(current) = next {
        if let Some(found) = current.downcast_ref::<T>() {
            return Some(found);
        }
        next = current.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use aws_sdk_ecr::types::{
        ReplicationDestination, ReplicationRule, RepositoryFilter, RepositoryFilterType,
    };

    use super::*;

    fn account(s: &str) -> AccountId {
        AccountId::parse(s).unwrap()
    }

    #[test]
    fn the_sdk_configuration_becomes_the_describe_registry_document() {
        let out = DescribeRegistryOutput::builder()
            .registry_id("111111111111")
            .replication_configuration(
                ReplicationConfiguration::builder()
                    .rules(
                        ReplicationRule::builder()
                            .destinations(
                                ReplicationDestination::builder()
                                    .region("eu-west-1")
                                    .registry_id("222222222222")
                                    .build()
                                    .unwrap(),
                            )
                            .repository_filters(
                                RepositoryFilter::builder()
                                    .filter("team")
                                    .filter_type(RepositoryFilterType::PrefixMatch)
                                    .build()
                                    .unwrap(),
                            )
                            .build()
                            .unwrap(),
                    )
                    .rules(
                        ReplicationRule::builder()
                            .destinations(
                                ReplicationDestination::builder()
                                    .region("us-east-2")
                                    .registry_id("111111111111")
                                    .build()
                                    .unwrap(),
                            )
                            .build()
                            .unwrap(),
                    )
                    .build()
                    .unwrap(),
            )
            .build();
        assert_eq!(
            describe_registry_document(&out, account("111111111111")),
            json!({
                "registryId": "111111111111",
                "replicationConfiguration": {"rules": [
                    {"destinations": [{"region": "eu-west-1", "registryId": "222222222222"}],
                     "repositoryFilters": [{"filter": "team", "filterType": "PREFIX_MATCH"}]},
                    {"destinations": [{"region": "us-east-2", "registryId": "111111111111"}]}
                ]}
            })
        );
    }

    #[test]
    fn delete_replication_is_copied_rule_by_rule_from_ecrs_own_answer() {
        let rules = |extra: [Value; 2]| {
            let mut doc = json!({"registryId": "111111111111", "replicationConfiguration": {"rules": [
                {"destinations": [{"region": "eu-west-1", "registryId": "222222222222"}]},
                {"destinations": [{"region": "us-east-2", "registryId": "111111111111"}]}
            ]}});
            for (i, e) in extra.into_iter().enumerate() {
                if !e.is_null() {
                    doc["replicationConfiguration"]["rules"][i]["deleteReplication"] = e;
                }
            }
            doc
        };
        let mut document = rules([Value::Null, Value::Null]);
        let raw = rules([Value::Null, json!({"enabled": true})]);
        add_unmodelled_rule_fields(&mut document, Some(&raw));
        assert_eq!(document, raw);

        for raw in [
            None,
            Some(json!("not the answer")),
            Some(
                json!({"replicationConfiguration": {"rules": [{"deleteReplication": {"enabled": true}}]}}),
            ),
        ] {
            let mut document = rules([Value::Null, Value::Null]);
            add_unmodelled_rule_fields(&mut document, raw.as_ref());
            assert_eq!(
                document,
                rules([Value::Null, Value::Null]),
                "no body, or one that is not this answer, adds nothing: {raw:?}"
            );
        }
    }

    #[test]
    fn a_registry_without_replication_gives_a_document_with_no_rules() {
        let out = DescribeRegistryOutput::builder().build();
        let doc = describe_registry_document(&out, account("111111111111"));
        assert_eq!(doc, json!({"registryId": "111111111111"}));
        let config = ReplicationConfig::from_json(
            &doc,
            Region::parse("us-east-1").unwrap(),
            Some(account("111111111111")),
        )
        .unwrap();
        assert!(config.rules.is_empty());
    }
}

// The inventory reconciliation's listings (DescribeRepositories, DescribeImages of a whole
// repository, the lifecycle and repository policies): a module of its own, with this one's
// clients and error handling.
mod inventory;
