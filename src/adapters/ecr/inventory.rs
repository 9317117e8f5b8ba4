//! [`RegistryInventory`] on aws-sdk-ecr: the listings the inventory reconciliation reads, every
//! page of them, through the same clients (and audit role) as the rest of [`EcrRegistry`].
//!
//! - DescribeRepositories and DescribeImages take `maxResults` from 1 to 1000 (100 when it is
//!   not given): 1000 keeps the number of requests lowest. Pages follow `nextToken`; a token that
//!   comes back unchanged is refused rather than followed for ever.
//! - DescribeImages lists only `ACTIVE` images unless the filter says otherwise (the API
//!   reference's DescribeImagesFilter): the reconciliation asks for `imageStatus` `ANY`, so that
//!   archived copies are seen as archived, not as missing. If a Region refuses the filter as an
//!   invalid parameter, the listing is asked again without it (logged): archived images are then
//!   not listed, and their copies would read as missing.
//! - "Not found" (no such repository, no policy) is an answer, not an error.

use aws_sdk_ecr::error::SdkError;
use aws_sdk_ecr::operation::describe_images::DescribeImagesError;
use aws_sdk_ecr::operation::get_lifecycle_policy::GetLifecyclePolicyError;
use aws_sdk_ecr::operation::get_repository_policy::GetRepositoryPolicyError;
use aws_sdk_ecr::types::{DescribeImagesFilter, ImageDetail, ImageStatusFilter, Repository};

use super::{Call, EcrRegistry, parse_or_warn};
use crate::domain::drift::{ImageRecord, ImageState, RepositoryListing, RepositorySettings};
use crate::domain::ids::{ImageDigest, ImageTag, RepositoryName, quoted};
use crate::domain::time::Timestamp;
use crate::ports::inventory::{Paged, RegistryInventory};
use crate::ports::registry::{RegistryAt, RegistryError};

/// The largest page DescribeRepositories and DescribeImages return.
const PAGE: i32 = 1000;

impl RegistryInventory for EcrRegistry {
    async fn repositories(
        &self,
        registry: &RegistryAt,
    ) -> Result<Paged<Vec<RepositoryListing>>, RegistryError> {
        let call = Call::new("DescribeRepositories", registry, None);
        let client = self.client(registry).await?;
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        let mut requests = 0;
        loop {
            let page = client
                .describe_repositories()
                .registry_id(registry.account.to_string())
                .max_results(PAGE)
                .set_next_token(token.clone())
                .send()
                .await
                .map_err(|e| call.failed(&e))?;
            requests += 1;
            out.extend(page.repositories().iter().filter_map(|r| listing(r, &call)));
            match next(token.as_deref(), page.next_token(), &call)? {
                Some(t) => token = Some(t),
                None => break,
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(Paged {
            value: out,
            requests,
        })
    }

    async fn images(
        &self,
        registry: &RegistryAt,
        repository: &RepositoryName,
    ) -> Result<Paged<Option<Vec<ImageRecord>>>, RegistryError> {
        let call = Call::new("DescribeImages", registry, Some((repository, "*")));
        let client = self.client(registry).await?;
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        let mut requests = 0;
        let mut every_status = true;
        loop {
            let mut request = client
                .describe_images()
                .registry_id(registry.account.to_string())
                .repository_name(repository.as_str())
                .max_results(PAGE)
                .set_next_token(token.clone());
            if every_status {
                request = request.filter(
                    DescribeImagesFilter::builder()
                        .image_status(ImageStatusFilter::Any)
                        .build(),
                );
            }
            let result = request.send().await;
            requests += 1;
            let page = match result {
                Ok(page) => page,
                Err(e) if repository_not_found(&e) => {
                    return Ok(Paged {
                        value: None,
                        requests,
                    });
                }
                Err(e) if every_status && token.is_none() && invalid_parameter(&e) => {
                    tracing::warn!(call = %call.context, "DescribeImages refused the imageStatus filter; listing without it (archived images are not listed)");
                    every_status = false;
                    continue;
                }
                Err(e) => return Err(call.failed(&e)),
            };
            out.extend(page.image_details().iter().filter_map(|d| record(d, &call)));
            match next(token.as_deref(), page.next_token(), &call)? {
                Some(t) => token = Some(t),
                None => break,
            }
        }
        out.sort_by(|a, b| a.digest.cmp(&b.digest));
        Ok(Paged {
            value: Some(out),
            requests,
        })
    }

    async fn lifecycle_policy(
        &self,
        registry: &RegistryAt,
        repository: &RepositoryName,
    ) -> Result<Option<String>, RegistryError> {
        let call = Call::new("GetLifecyclePolicy", registry, Some((repository, "-")));
        let result = self
            .client(registry)
            .await?
            .get_lifecycle_policy()
            .registry_id(registry.account.to_string())
            .repository_name(repository.as_str())
            .send()
            .await;
        match result {
            Ok(out) => Ok(out.lifecycle_policy_text().map(str::to_owned)),
            Err(e)
                if matches!(
                    e.as_service_error(),
                    Some(
                        GetLifecyclePolicyError::LifecyclePolicyNotFoundException(_)
                            | GetLifecyclePolicyError::RepositoryNotFoundException(_)
                    )
                ) =>
            {
                Ok(None)
            }
            Err(e) => Err(call.failed(&e)),
        }
    }

    async fn repository_policy(
        &self,
        registry: &RegistryAt,
        repository: &RepositoryName,
    ) -> Result<Option<String>, RegistryError> {
        let call = Call::new("GetRepositoryPolicy", registry, Some((repository, "-")));
        let result = self
            .client(registry)
            .await?
            .get_repository_policy()
            .registry_id(registry.account.to_string())
            .repository_name(repository.as_str())
            .send()
            .await;
        match result {
            Ok(out) => Ok(out.policy_text().map(str::to_owned)),
            Err(e)
                if matches!(
                    e.as_service_error(),
                    Some(
                        GetRepositoryPolicyError::RepositoryPolicyNotFoundException(_)
                            | GetRepositoryPolicyError::RepositoryNotFoundException(_)
                    )
                ) =>
            {
                Ok(None)
            }
            Err(e) => Err(call.failed(&e)),
        }
    }
}

/// The next page's token, if there is one. ECR documents the token as opaque; one that comes
/// back as it was sent would repeat the same page for ever.
fn next(
    sent: Option<&str>,
    received: Option<&str>,
    call: &Call,
) -> Result<Option<String>, RegistryError> {
    match received.filter(|t| !t.is_empty()) {
        None => Ok(None),
        Some(t) if Some(t) == sent => {
            Err(call
                .refused("returned the same nextToken again; the listing would never end".into()))
        }
        Some(t) => Ok(Some(t.to_owned())),
    }
}

fn repository_not_found(e: &SdkError<DescribeImagesError>) -> bool {
    matches!(
        e.as_service_error(),
        Some(DescribeImagesError::RepositoryNotFoundException(_))
    )
}

fn invalid_parameter(e: &SdkError<DescribeImagesError>) -> bool {
    matches!(
        e.as_service_error(),
        Some(DescribeImagesError::InvalidParameterException(_))
    ) || e
        .as_service_error()
        .and_then(aws_sdk_ecr::error::ProvideErrorMetadata::code)
        == Some("ValidationException")
}

/// A repository as the domain reads it; one whose name the domain would refuse is skipped with
/// a warning rather than failing the listing.
fn listing(r: &Repository, call: &Call) -> Option<RepositoryListing> {
    let name = parse_or_warn(
        call,
        "repositoryName",
        r.repository_name()?,
        RepositoryName::parse,
    )?;
    let encryption = r.encryption_configuration();
    Some(RepositoryListing {
        name,
        settings: RepositorySettings {
            tag_mutability: r.image_tag_mutability().map(|m| m.as_str().to_owned()),
            scan_on_push: r.image_scanning_configuration().map(|c| c.scan_on_push()),
            encryption_type: encryption.map(|e| e.encryption_type().as_str().to_owned()),
            kms_key: encryption.and_then(|e| e.kms_key()).map(str::to_owned),
        },
    })
}

/// An image as the domain reads it; one without a usable digest is skipped with a warning.
fn record(d: &ImageDetail, call: &Call) -> Option<ImageRecord> {
    let Some(digest) = d.image_digest() else {
        tracing::warn!(call = %call.context, "ECR listed an image without a digest; ignored");
        return None;
    };
    let digest = match ImageDigest::parse(digest) {
        Ok(d) => d,
        Err(e) => {
            tracing::warn!(call = %call.context, "ECR listed the digest {} that {e}; ignored", quoted(digest));
            return None;
        }
    };
    let mut tags: Vec<ImageTag> = d
        .image_tags()
        .iter()
        .filter_map(|t| parse_or_warn(call, "imageTags", t, ImageTag::parse))
        .collect();
    tags.sort();
    Some(ImageRecord {
        digest,
        tags,
        pushed_at: d
            .image_pushed_at()
            .and_then(|t| t.to_millis().ok())
            .map(Timestamp::from_millis),
        state: ImageState::from_api(d.image_status().map(|s| s.as_str())),
    })
}
