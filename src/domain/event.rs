//! Turns one EventBridge record into what the auditor acts on: a push, a copy, something to
//! ignore, or a rejection that names the field at fault.
//!
//! Only `aws.ecr` image actions (push, delete, restore) and replication results are parsed
//! strictly. Everything else that
//! looks like an EventBridge event is ignored and counted: AWS has added detail-types, action
//! types and results over the years, and an auditor that fails on a new one would page people
//! for nothing.

use serde::{Deserialize, Deserializer};
use serde_json::Value;

use raw::Json;

use super::ids::{
    AccountId, EventId, ImageDigest, ImageTag, InvalidValue, Region, RepositoryName, quoted,
};
use super::time::{Timestamp, Window};

mod plain;
mod raw;

/// One image in the registry it happened in, as `ECR Image Action` reports it in that account
/// and Region: a push, a delete, or a restore.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageAction {
    pub id: EventId,
    pub at: Timestamp,
    pub account: AccountId,
    pub region: Region,
    pub repository: RepositoryName,
    pub digest: ImageDigest,
    /// Absent for a push by digest (e.g. the per-platform manifests of a multi-arch push), or
    /// for a delete by digest.
    pub tag: Option<ImageTag>,
}

/// A successful push.
pub type Push = ImageAction;

/// A successful delete in the source: of one tag (`tag`), or of the image and all its tags
/// (no `tag`: a delete by digest, or a lifecycle expiry).
pub type Delete = ImageAction;

/// An archived image restored to the standard storage class (`UPDATE_STORAGE_CLASS` with
/// `target-storage-class` `STANDARD`): ECR replicates it like a push when a rule covers the
/// repository ("the restored image will be replicated if replication was enabled at the time of
/// restore"). The event names no tag: `tag` is always `None`.
pub type Restore = ImageAction;

/// A replication result, as `ECR Replication Action` reports it in the *destination* account and
/// Region.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Copy {
    pub id: EventId,
    pub at: Timestamp,
    pub source_account: AccountId,
    pub source_region: Region,
    pub destination_account: AccountId,
    pub destination_region: Region,
    pub repository: RepositoryName,
    pub digest: ImageDigest,
    pub tag: Option<ImageTag>,
    pub succeeded: bool,
}

/// What the auditor makes of one record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Classified {
    Push(Push),
    Copy(Copy),
    Delete(Delete),
    Restore(Restore),
    /// A well-formed event the auditor has no use for; the string says what it was.
    Ignored {
        id: EventId,
        at: Option<Timestamp>,
        kind: String,
    },
    Rejected(Rejection),
}

impl Classified {
    /// The time of a push or copy: what moves a replay's clock and opens or closes a window.
    pub fn time(&self) -> Option<Timestamp> {
        match self {
            Classified::Push(p) | Classified::Delete(p) | Classified::Restore(p) => Some(p.at),
            Classified::Copy(c) => Some(c.at),
            Classified::Ignored { .. } | Classified::Rejected(_) => None,
        }
    }

    /// The same record, or, when it is a push or copy whose `time` cannot be believed against
    /// `clock`, a rejection of its `time` field. One such event would otherwise never fall due
    /// (far ahead) or page for a lag of years and override a real push of its tag (far back).
    ///
    /// Believable: at most `ahead` after `clock`, and, when `max_age` is given, at most that
    /// long before it. `clock` says what it is in the reason ("the invocation's clock").
    pub fn with_plausible_time(
        self,
        clock: Timestamp,
        clock_name: &str,
        ahead: Window,
        max_age: Option<Window>,
    ) -> Classified {
        match self.implausible_time(clock, clock_name, ahead, max_age) {
            Some(rejection) => Classified::Rejected(rejection),
            None => self,
        }
    }

    /// What [`Classified::with_plausible_time`] would reject this record for, if anything,
    /// without moving the record (a replay checks every one).
    pub fn implausible_time(
        &self,
        clock: Timestamp,
        clock_name: &str,
        ahead: Window,
        max_age: Option<Window>,
    ) -> Option<Rejection> {
        let at = self.time()?;
        let problem = if at.since(clock) > ahead.millis() {
            format!("{at} is more than {ahead} ahead of {clock_name} ({clock})")
        } else if let Some(age) = max_age
            && clock.since(at) > age.millis()
        {
            format!("{at} is more than {age} before {clock_name} ({clock})")
        } else {
            return None;
        };
        Some(Rejection {
            event_id: self.id().cloned(),
            field: "time".into(),
            problem,
        })
    }

    /// The envelope's event id, when the record got far enough to have one.
    pub fn id(&self) -> Option<&EventId> {
        match self {
            Classified::Push(p) | Classified::Delete(p) | Classified::Restore(p) => Some(&p.id),
            Classified::Copy(c) => Some(&c.id),
            Classified::Ignored { id, .. } => Some(id),
            Classified::Rejected(r) => r.event_id.as_ref(),
        }
    }
}

/// Why a record was refused. The caller adds where the record was (file and line, or invocation).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}field {field}: {problem}", event_id.as_ref().map(|id| format!("event {}: ", quoted(id.as_str()))).unwrap_or_default())]
pub struct Rejection {
    pub event_id: Option<EventId>,
    /// The JSON path of the field at fault, e.g. `detail.repository-name`; `(record)` when the
    /// record as a whole is wrong.
    pub field: String,
    pub problem: String,
}

/// The `ECR Image Action`s the auditor acts on.
enum ImageActionKind {
    Push,
    Delete,
    Restore,
}

/// Reads one record. Never panics, whatever the input.
pub fn classify(record: &Value) -> Classified {
    let mut raw = raw::Record::Null;
    match raw::read_record(record, &mut raw) {
        Ok(()) => classify_raw(&raw),
        // Unreachable: every JSON value reads as a raw record. Refused rather than trusted.
        Err(e) => Classified::Rejected(Rejection {
            event_id: None,
            field: "(record)".into(),
            problem: format!("cannot be read: {e}"),
        }),
    }
}

/// Reading a `Classified` from JSON text reads one EventBridge record and [`classify`]s it, as
/// `replay` does, without building a `serde_json::Value` of it: the fields classification reads
/// are borrowed from the text, the rest are skipped. The verdict is the same as [`classify`]'s
/// on the record's value; only malformed JSON is an error.
///
/// Skipping is laxer than building a value, only inside what the auditor never reads as text: a
/// number too large for an `f64`, bytes that are not UTF-8 or an unpaired surrogate escape
/// (`\ud800`) inside a string, or nesting deeper than the 128 levels a value may have, do not make
/// the record unreadable when they sit in a field not read, or inside a list or object where a
/// string is read (that field is then rejected as "a list" or "an object"; a record that is a
/// deeply nested list is rejected as not an object). No verdict depends on what is skipped.
impl<'de> Deserialize<'de> for Classified {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mut raw = raw::Record::Null;
        raw::read_record(d, &mut raw)?;
        Ok(classify_raw(&raw))
    }
}

impl Classified {
    /// The record `text` holds, read as [`Deserialize`] reads it, when it is in the plain form
    /// of every real event (see [`plain`]); `None` when it is not, and only a general parser can
    /// tell what it holds.
    pub fn from_plain_text(text: &[u8]) -> Option<Classified> {
        let mut raw = raw::Record::Null;
        plain::read_plain(text, &mut raw).then(|| classify_raw(&raw))
    }
}

fn classify_raw(record: &raw::Record<'_>) -> Classified {
    match classify_inner(record) {
        Ok(c) => c,
        Err(r) => Classified::Rejected(r),
    }
}

/// The fields of one JSON object, with what an error needs to say where it was.
struct Fields<'a, 'i> {
    fields: &'a [Option<raw::Field<'a>>],
    keys: &'static [&'static str],
    prefix: &'static str,
    id: Option<&'i EventId>,
}

impl<'a> Fields<'a, '_> {
    fn reject(&self, key: usize, problem: impl ToString) -> Rejection {
        Rejection {
            event_id: self.id.cloned(),
            field: format!("{}{}", self.prefix, self.keys[key]),
            problem: problem.to_string(),
        }
    }

    fn opt_str(&self, key: usize) -> Result<Option<&'a str>, Rejection> {
        match &self.fields[key] {
            None | Some(Json::Null) => Ok(None),
            Some(Json::Str(s)) => Ok(Some(s)),
            Some(other) => Err(self.reject(key, format!("is {}, expected a string", other.kind()))),
        }
    }

    fn str(&self, key: usize) -> Result<&'a str, Rejection> {
        self.opt_str(key)?
            .ok_or_else(|| self.reject(key, "is missing"))
    }

    fn parse<T>(
        &self,
        key: usize,
        parse: impl Fn(&str) -> Result<T, InvalidValue>,
    ) -> Result<T, Rejection> {
        let s = self.str(key)?;
        parse(s).map_err(|e| self.reject(key, format!("{} {e}", quoted(s))))
    }

    fn time(&self, key: usize) -> Result<Timestamp, Rejection> {
        let s = self.str(key)?;
        Timestamp::parse_rfc3339(s).map_err(|e| self.reject(key, format!("{} {e}", quoted(s))))
    }
}

fn classify_inner(record: &raw::Record<'_>) -> Result<Classified, Rejection> {
    let Json::Object(raw) = record else {
        return Err(Rejection {
            event_id: None,
            field: "(record)".into(),
            problem: format!(
                "is {}, expected a JSON object (an EventBridge event)",
                record.kind()
            ),
        });
    };
    let envelope = Fields {
        fields: &raw.fields,
        keys: &raw::ENVELOPE_KEYS,
        prefix: "",
        id: None,
    };
    let id = envelope.parse(raw::ID, EventId::parse)?;
    let envelope = Fields {
        id: Some(&id),
        ..envelope
    };
    let source = envelope.str(raw::SOURCE)?;
    let detail_type = envelope.str(raw::DETAIL_TYPE)?;

    let is_push_or_copy =
        source == "aws.ecr" && matches!(detail_type, "ECR Image Action" | "ECR Replication Action");
    if !is_push_or_copy {
        // Ignored events still carry a time when they are well formed; it moves `now` forward.
        let at = envelope
            .opt_str(raw::TIME)
            .ok()
            .flatten()
            .and_then(|t| Timestamp::parse_rfc3339(t).ok());
        return Ok(Classified::Ignored {
            id,
            at,
            kind: format!("{source} {detail_type}"),
        });
    }

    let detail = match &raw.detail {
        Some(Json::Object(d)) => d,
        Some(other) => {
            return Err(envelope.reject(
                raw::DETAIL,
                format!("is {}, expected an object", other.kind()),
            ));
        }
        None => return Err(envelope.reject(raw::DETAIL, "is missing")),
    };
    let detail = Fields {
        fields: &detail.fields,
        keys: &raw::DETAIL_KEYS,
        prefix: "detail.",
        id: Some(&id),
    };
    let action = detail.str(raw::ACTION_TYPE)?;
    let result = detail.str(raw::RESULT)?;
    let ignored = |what: &str| Classified::Ignored {
        id: id.clone(),
        at: envelope
            .opt_str(raw::TIME)
            .ok()
            .flatten()
            .and_then(|t| Timestamp::parse_rfc3339(t).ok()),
        kind: format!("{detail_type} {what}"),
    };

    if detail_type == "ECR Image Action" {
        let kind = match action {
            "PUSH" => ImageActionKind::Push,
            "DELETE" => ImageActionKind::Delete,
            // Only a restore (to STANDARD) is replicated; archiving is not, and a storage class
            // ECR adds later is ignored rather than refused.
            "UPDATE_STORAGE_CLASS" => {
                match detail.opt_str(raw::TARGET_STORAGE_CLASS).ok().flatten() {
                    Some("STANDARD") => ImageActionKind::Restore,
                    other => {
                        return Ok(ignored(&format!(
                            "{action} {}",
                            other.unwrap_or("(no target-storage-class)")
                        )));
                    }
                }
            }
            _ => return Ok(ignored(action)),
        };
        if result != "SUCCESS" {
            return Ok(ignored(&format!("{action} {result}")));
        }
        let image = ImageAction {
            at: envelope.time(raw::TIME)?,
            account: envelope.parse(raw::ACCOUNT, AccountId::parse)?,
            region: envelope.parse(raw::REGION, Region::parse)?,
            repository: detail.parse(raw::REPOSITORY_NAME, RepositoryName::parse)?,
            digest: detail.parse(raw::IMAGE_DIGEST, ImageDigest::parse)?,
            // A restore is of the image, by digest: it is judged as a push by digest.
            tag: match kind {
                ImageActionKind::Restore => None,
                _ => optional_tag(&detail)?,
            },
            id,
        };
        return Ok(match kind {
            ImageActionKind::Push => Classified::Push(image),
            ImageActionKind::Delete => Classified::Delete(image),
            ImageActionKind::Restore => Classified::Restore(image),
        });
    }

    if action != "REPLICATE" {
        return Ok(ignored(action));
    }
    let succeeded = match result {
        "SUCCESS" => true,
        "FAILED" => false,
        other => return Ok(ignored(&format!("REPLICATE {other}"))),
    };
    Ok(Classified::Copy(Copy {
        at: envelope.time(raw::TIME)?,
        destination_account: envelope.parse(raw::ACCOUNT, AccountId::parse)?,
        destination_region: envelope.parse(raw::REGION, Region::parse)?,
        source_account: detail.parse(raw::SOURCE_ACCOUNT, AccountId::parse)?,
        source_region: detail.parse(raw::SOURCE_REGION, Region::parse)?,
        repository: detail.parse(raw::REPOSITORY_NAME, RepositoryName::parse)?,
        digest: detail.parse(raw::IMAGE_DIGEST, ImageDigest::parse)?,
        tag: optional_tag(&detail)?,
        succeeded,
        id,
    }))
}

/// `image-tag` is absent for a push by digest; an empty string is treated the same way.
fn optional_tag(detail: &Fields<'_, '_>) -> Result<Option<ImageTag>, Rejection> {
    match detail.opt_str(raw::IMAGE_TAG)? {
        None | Some("") => Ok(None),
        Some(s) => ImageTag::parse(s)
            .map(Some)
            .map_err(|e| detail.reject(raw::IMAGE_TAG, format!("{} {e}", quoted(s)))),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn push_event() -> Value {
        json!({
            "version": "0", "id": "13cde686-328b-6117-af20-0e5566167482",
            "detail-type": "ECR Image Action", "source": "aws.ecr", "account": "123456789012",
            "time": "2024-07-01T12:00:00Z", "region": "us-west-2", "resources": [],
            "detail": {"result": "SUCCESS", "repository-name": "team/app",
                       "image-digest": "sha256:aaaa", "action-type": "PUSH", "image-tag": "v1"}
        })
    }

    fn copy_event() -> Value {
        json!({
            "version": "0", "id": "c0c0c0c0-0000-0000-0000-000000000001",
            "detail-type": "ECR Replication Action", "source": "aws.ecr", "account": "210987654321",
            "time": "2024-07-01T12:00:09Z", "region": "eu-west-1",
            "resources": ["arn:aws:ecr:eu-west-1:210987654321:repository/team/app"],
            "detail": {"result": "FAILED", "repository-name": "team/app", "image-digest": "sha256:aaaa",
                       "source-account": "123456789012", "action-type": "REPLICATE",
                       "source-region": "us-west-2", "image-tag": "v1"}
        })
    }

    fn rejected(v: &Value) -> Rejection {
        match classify(v) {
            Classified::Rejected(r) => r,
            other => panic!("expected a rejection, got {other:?}"),
        }
    }

    #[test]
    fn a_successful_image_push_is_a_push() {
        let Classified::Push(p) = classify(&push_event()) else {
            panic!()
        };
        assert_eq!(p.repository.as_str(), "team/app");
        assert_eq!(p.tag.as_ref().map(ImageTag::as_str), Some("v1"));
        assert_eq!(p.account.to_string(), "123456789012");
        assert_eq!(
            p.at,
            Timestamp::parse_rfc3339("2024-07-01T12:00:00Z").unwrap()
        );
    }

    #[test]
    fn a_push_by_digest_has_no_tag() {
        let mut e = push_event();
        e["detail"].as_object_mut().unwrap().remove("image-tag");
        let Classified::Push(p) = classify(&e) else {
            panic!()
        };
        assert_eq!(p.tag, None);
    }

    #[test]
    fn a_replication_result_is_a_copy_from_the_source_to_the_envelope_region() {
        let Classified::Copy(c) = classify(&copy_event()) else {
            panic!()
        };
        assert!(!c.succeeded);
        assert_eq!(
            (c.source_account.to_string(), c.source_region.as_str()),
            ("123456789012".into(), "us-west-2")
        );
        assert_eq!(
            (
                c.destination_account.to_string(),
                c.destination_region.as_str()
            ),
            ("210987654321".into(), "eu-west-1")
        );
    }

    #[test]
    fn a_successful_delete_is_classified_with_its_tag_and_a_failed_one_ignored() {
        let mut delete = push_event();
        delete["detail"]["action-type"] = json!("DELETE");
        let Classified::Delete(d) = classify(&delete) else {
            panic!("{delete}")
        };
        assert_eq!(d.tag.as_ref().map(|t| t.as_str()), Some("v1"));
        assert_eq!(d.digest.as_str(), "sha256:aaaa");
        delete["detail"]
            .as_object_mut()
            .unwrap()
            .remove("image-tag");
        assert!(matches!(
            classify(&delete),
            Classified::Delete(ImageAction { tag: None, .. })
        ));
        delete["detail"]["result"] = json!("FAILED");
        assert!(matches!(classify(&delete), Classified::Ignored { .. }));
    }

    /// The user guide's restore sample, in this account and Region.
    fn restore_event() -> Value {
        json!({
            "version": "0", "id": "r0r0r0r0-0000-0000-0000-000000000001",
            "detail-type": "ECR Image Action", "source": "aws.ecr", "account": "123456789012",
            "time": "2024-07-01T12:00:00Z", "region": "us-west-2", "resources": [],
            "detail": {"action-type": "UPDATE_STORAGE_CLASS", "target-storage-class": "STANDARD",
                       "image-digest": "sha256:aaaa", "repository-name": "team/app",
                       "result": "SUCCESS",
                       "manifest-media-type": "application/vnd.oci.image.manifest.v1+json",
                       "artifact-media-type": "application/vnd.oci.image.config.v1+json",
                       "last-activated-at": "2024-03-01T12:00:00Z"}
        })
    }

    #[test]
    fn a_restore_to_standard_is_a_restore_of_the_digest_and_an_archive_is_ignored() {
        let Classified::Restore(r) = classify(&restore_event()) else {
            panic!("not a restore")
        };
        assert_eq!(
            (r.repository.as_str(), r.digest.as_str(), r.tag),
            ("team/app", "sha256:aaaa", None)
        );
        let mut tagged = restore_event();
        tagged["detail"]["image-tag"] = json!("v1");
        assert!(
            matches!(
                classify(&tagged),
                Classified::Restore(ImageAction { tag: None, .. })
            ),
            "a restore is judged by digest, whatever it names"
        );
        let mut archive = restore_event();
        archive["detail"]["target-storage-class"] = json!("ARCHIVE");
        let Classified::Ignored { kind, .. } = classify(&archive) else {
            panic!("an archive is not replicated")
        };
        assert_eq!(kind, "ECR Image Action UPDATE_STORAGE_CLASS ARCHIVE");
        for (field, value) in [
            ("target-storage-class", json!("GLACIER")),
            ("result", json!("FAILED")),
        ] {
            let mut odd = restore_event();
            odd["detail"][field] = value;
            assert!(
                matches!(classify(&odd), Classified::Ignored { .. }),
                "{odd}"
            );
        }
        let mut broken = restore_event();
        broken["detail"]
            .as_object_mut()
            .unwrap()
            .remove("image-digest");
        assert_eq!(rejected(&broken).field, "detail.image-digest");
        let mut referrer = restore_event();
        referrer["detail-type"] = json!("ECR Referrer Action");
        assert!(matches!(classify(&referrer), Classified::Ignored { .. }));
    }

    #[test]
    fn archives_unknown_results_and_other_detail_types_are_ignored() {
        let mut archive = push_event();
        archive["detail"]["action-type"] = json!("UPDATE_STORAGE_CLASS");
        let mut odd_result = copy_event();
        odd_result["detail"]["result"] = json!("PARTIAL");
        let mut odd_action = copy_event();
        odd_action["detail"]["action-type"] = json!("BACKFILL");
        let mut scan = push_event();
        scan["detail-type"] = json!("ECR Image Scan");
        let scheduled = json!({"id": "s1", "source": "aws.events", "detail-type": "Scheduled Event",
                               "time": "2024-07-01T12:01:00Z", "detail": {}});
        for e in [archive, odd_result, odd_action, scan, scheduled] {
            assert!(matches!(classify(&e), Classified::Ignored { .. }), "{e}");
        }
    }

    #[test]
    fn times_too_far_from_the_clock_are_rejected_as_the_time_field_and_the_rest_kept() {
        let clock = Timestamp::parse_rfc3339("2024-07-01T12:00:00Z").unwrap();
        let check = |e: &Value| {
            classify(e).with_plausible_time(
                clock,
                "the clock",
                Window::minutes(5),
                Some(Window::hours(24)),
            )
        };
        let at = |e: &mut Value, t: &str| e["time"] = json!(t);
        let mut e = push_event();
        at(&mut e, "2024-07-01T12:05:00Z");
        assert!(
            matches!(check(&e), Classified::Push(_)),
            "exactly 5 minutes ahead"
        );
        at(&mut e, "2024-07-01T12:05:00.001Z");
        let Classified::Rejected(r) = check(&e) else {
            panic!("accepted")
        };
        assert_eq!((r.field.as_str(), r.event_id.is_some()), ("time", true));
        assert!(
            r.problem.contains("more than 5m ahead of the clock"),
            "{}",
            r.problem
        );
        at(&mut e, "2024-06-30T11:59:59Z");
        let Classified::Rejected(r) = check(&e) else {
            panic!("accepted")
        };
        assert!(
            r.problem.contains("more than 24h before the clock"),
            "{}",
            r.problem
        );
        let mut copy = copy_event();
        copy["time"] = json!("2030-01-01T00:00:00Z");
        assert!(matches!(check(&copy), Classified::Rejected(_)));
        let mut scan = push_event();
        scan["detail-type"] = json!("ECR Image Scan");
        scan["time"] = json!("2030-01-01T00:00:00Z");
        assert!(
            matches!(check(&scan), Classified::Ignored { .. }),
            "only pushes, copies and deletes are checked"
        );
    }

    #[test]
    fn records_that_are_not_objects_are_rejected_as_a_whole() {
        for v in [json!([]), json!("x"), json!(1), Value::Null] {
            assert_eq!(rejected(&v).field, "(record)");
        }
    }

    #[test]
    fn each_missing_or_mistyped_field_is_named() {
        let cases: &[(&str, Value)] = &[
            ("id", Value::Null),
            ("time", json!("yesterday")),
            ("time", Value::Null),
            ("account", json!(123456789012_u64)),
            ("account", json!("12345")),
            ("region", json!("US WEST")),
            ("detail", json!("{}")),
        ];
        for (field, value) in cases {
            let mut e = push_event();
            if value.is_null() {
                e.as_object_mut().unwrap().remove(*field);
            } else {
                e[*field] = value.clone();
            }
            assert_eq!(rejected(&e).field, *field, "{e}");
        }
        let detail_cases: &[(&str, Value)] = &[
            ("repository-name", json!("Team/App")),
            ("repository-name", Value::Null),
            ("image-digest", json!(7)),
            ("image-digest", json!("sha256:a b")),
            ("image-tag", json!(["v1"])),
            ("image-tag", json!("v1\u{7}")),
            ("action-type", Value::Null),
            ("result", json!(true)),
        ];
        for (field, value) in detail_cases {
            let mut e = push_event();
            if value.is_null() {
                e["detail"].as_object_mut().unwrap().remove(*field);
            } else {
                e["detail"][*field] = value.clone();
            }
            let r = rejected(&e);
            assert_eq!(r.field, format!("detail.{field}"), "{e}");
            assert_eq!(
                r.event_id.unwrap().as_str(),
                "13cde686-328b-6117-af20-0e5566167482"
            );
        }
        for field in ["source-account", "source-region"] {
            let mut e = copy_event();
            e["detail"].as_object_mut().unwrap().remove(field);
            assert_eq!(rejected(&e).field, format!("detail.{field}"));
        }
    }

    #[test]
    fn a_rejection_reads_as_a_sentence_with_the_event_and_the_field() {
        let mut e = push_event();
        e["detail"]["repository-name"] = json!("Bad Name");
        assert_eq!(
            rejected(&e).to_string(),
            "event \"13cde686-328b-6117-af20-0e5566167482\": field detail.repository-name: \"Bad Name\" does not match (?:[a-z0-9]+(?:[._-][a-z0-9]+)*/)*[a-z0-9]+(?:[._-][a-z0-9]+)*"
        );
    }
}
