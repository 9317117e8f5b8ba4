//! The EventBridge events the Lambda receives from ECR, built as the samples in `events/` are
//! shaped (`push-tagged.json`, `replication-success-*.json`, ...).

use serde_json::{Value, json};

use ecr_replication_auditor::domain::time::Timestamp;

/// An image as the events name it: pushed to `repository` in the source registry
/// (`source_account`, `source_region`) as `digest`, with `tag` if it had one.
#[derive(Clone, Copy, Debug)]
pub struct Image<'a> {
    pub source_account: &'a str,
    pub source_region: &'a str,
    pub repository: &'a str,
    pub digest: &'a str,
    pub tag: Option<&'a str>,
}

/// `ECR Image Action` PUSH of `image` in its source registry, at `time`.
pub fn push_event(id: &str, time: Timestamp, image: &Image<'_>) -> Value {
    let mut detail = json!({
        "result": "SUCCESS", "repository-name": image.repository, "image-digest": image.digest,
        "action-type": "PUSH"
    });
    if let Some(tag) = image.tag {
        detail["image-tag"] = json!(tag);
    }
    json!({
        "version": "0", "id": id, "detail-type": "ECR Image Action", "source": "aws.ecr",
        "account": image.source_account, "time": time.to_string(), "region": image.source_region,
        "resources": [], "detail": detail
    })
}

/// `ECR Image Action` UPDATE_STORAGE_CLASS restoring `image` (its digest; a restore names no
/// tag) to the STANDARD storage class in its source registry, at `time`, shaped as
/// `events/image-restore.json` (the user guide's sample).
pub fn restore_event(id: &str, time: Timestamp, image: &Image<'_>) -> Value {
    json!({
        "version": "0", "id": id, "detail-type": "ECR Image Action", "source": "aws.ecr",
        "account": image.source_account, "time": time.to_string(), "region": image.source_region,
        "resources": [],
        "detail": {
            "result": "SUCCESS", "repository-name": image.repository,
            "image-digest": image.digest, "action-type": "UPDATE_STORAGE_CLASS",
            "target-storage-class": "STANDARD",
            "manifest-media-type": "application/vnd.oci.image.manifest.v1+json",
            "artifact-media-type": "application/vnd.oci.image.config.v1+json",
            "last-activated-at": "2024-03-14T09:26:53Z"
        }
    })
}

/// `ECR Image Action` DELETE of `image` (of its tag, or by digest when it has none) in the
/// registry `at` (Region, account): the source's own delete, or, in a destination, the delete
/// replicated there.
pub fn delete_event(id: &str, time: Timestamp, image: &Image<'_>, at: (&str, &str)) -> Value {
    let (region, account) = at;
    let mut detail = json!({
        "result": "SUCCESS", "repository-name": image.repository, "image-digest": image.digest,
        "action-type": "DELETE"
    });
    if let Some(tag) = image.tag {
        detail["image-tag"] = json!(tag);
    }
    json!({
        "version": "0", "id": id, "detail-type": "ECR Image Action", "source": "aws.ecr",
        "account": account, "time": time.to_string(), "region": region, "resources": [],
        "detail": detail
    })
}

/// `ECR Replication Action` of `image` with `result` (`SUCCESS`, `FAILED`), at `time`, as the
/// bus of `destination` (Region, account) receives it: the envelope's account and Region are
/// the destination's.
pub fn copy_event(
    id: &str,
    time: Timestamp,
    image: &Image<'_>,
    destination: (&str, &str),
    result: &str,
) -> Value {
    let (region, account) = destination;
    let repository = image.repository;
    let mut detail = json!({
        "result": result, "repository-name": repository, "image-digest": image.digest,
        "source-account": image.source_account, "action-type": "REPLICATE",
        "source-region": image.source_region
    });
    if let Some(tag) = image.tag {
        detail["image-tag"] = json!(tag);
    }
    json!({
        "version": "0", "id": id, "detail-type": "ECR Replication Action", "source": "aws.ecr",
        "account": account, "time": time.to_string(), "region": region,
        "resources": [format!("arn:aws:ecr:{region}:{account}:repository/{repository}")],
        "detail": detail
    })
}

/// The scheduled sweep's payload.
pub fn sweep() -> Value {
    json!({"action": "sweep"})
}

/// The sample `events/{name}`, e.g. `push-tagged.json` or `registry/us-west-2.json`.
pub fn sample(name: &str) -> Value {
    let path = format!("{}/events/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}
