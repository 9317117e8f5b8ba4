//! The stored form of a group, shared by the DynamoDB store and the in-memory one: the items a
//! group is split into, their keys, their bodies (plain strings and milliseconds, read back
//! through the domain's parsers, so a damaged item is refused rather than trusted), and what a
//! save must write.
//!
//! One item per group grew with every tag of its digest: a digest tagged on every commit
//! reached DynamoDB's 400 KB item limit after about a thousand tags, and from then on every push
//! of it failed. So a group is now (schema 2):
//! - a **head** (`G#<group>`, the key the previous version's single item had): what looks
//!   across the group's expectations, bounded: the expectations still waiting for a committed
//!   copy (at most [`AWAITING_CAP`]) and those whose copy came last (at most [`RECENT_CAP`]: a
//!   copy without its tag delivered late may be theirs), the copies that belong to no
//!   expectation yet (at most [`HEAD_COPIES_CAP`]: copies without their tag not yet committed,
//!   copies whose push is not known), a delete of the image, the number of pushes, the group's
//!   last event and version; and, because every event of the group may need them, the restores
//!   of the image with their watches and the copies they take (each restore's first successful
//!   and first FAILED copy, whatever its tag, with the record that also holds it, read with the
//!   head so that the copy keeps its claim), and the deletes owed (delete replication) with the
//!   DELETEs seen in the destination and their watches. Those are few per image (a restore needs an archive first;
//!   a delete owed needs a delete at the source), so the head stays bounded in practice; the
//!   head is indexed by the earliest check they wait for, and placed in the history by the
//!   earliest restore or delete owed;
//! - one **record** per expectation (`G#<group>#T=<tag>`, or `#D` for a push by digest): the
//!   push, its watch, its copies (at most [`RECORD_COPIES_CAP`], the earliest successful and
//!   failed ones always among them, so the evidence is unchanged), the delete of its tag. The
//!   record carries the expectation's next check (the sweep's index) and push time (the
//!   history).
//!
//! Every save writes the head, conditional on its version, and the records whose stored form
//! changed, in one transaction: the head's version orders every change to the group, as the
//! single item's did. A push writes two items per destination, whatever the number of tags.
//!
//! Items of the previous version (schema 1, the whole group in one item at the head's key) are
//! read as whole groups; their first save writes the head and every record.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::domain::config::Destination;
use crate::domain::correlate::{Claims, CopySeen, Expectation, Group, GroupKey};
use crate::domain::deletion::{
    DeleteConfirmation, DeleteCounted, DeleteKind, DeleteSeen, DeleteWatch,
};
use crate::domain::ids::{AccountId, EventId, ImageDigest, ImageTag, Region, RepositoryName};
use crate::domain::ledger::{Confirmation, Counted, Queue, StillExpected, TrackedGroup, Watch};
use crate::domain::time::Timestamp;
use crate::ports::state::{Loaded, StoreError, Versioned};

/// The schema of heads and records.
pub const SCHEMA: u8 = 2;
/// The previous version's single item per group.
pub const LEGACY_SCHEMA: u8 = 1;
/// Expectations a head lists as waiting for a committed copy, earliest first. Past this many
/// (one digest pushed under more than 64 tags, none of whose copies has come), the later ones
/// are still watched through their records but a copy without its tag is matched among these.
pub const AWAITING_CAP: usize = 64;
/// Copies a head keeps that belong to no expectation; the oldest go first (a push whose event
/// never came; the sweep confirms a push whose copy was dropped with ECR's APIs).
pub const HEAD_COPIES_CAP: usize = 64;
/// Copies a record keeps: the earliest successful and the earliest failed one (all the verdict
/// uses) and the latest others (a redelivery of those is recognised as such).
pub const RECORD_COPIES_CAP: usize = 8;
/// Expectations with their copy that a head lists too, those whose copy came last: a copy
/// without its tag delivered late (a retried event) may belong to one of them, its own copy
/// having come after it, so every load reads them. Past this many, a late copy without its tag
/// is matched among the expectations read.
pub const RECENT_CAP: usize = 16;

// ---------------------------------------------------------------------------------------------
// Keys
// ---------------------------------------------------------------------------------------------

/// The key of a group's head (and of the previous version's single item). `#` separates parts;
/// the account, Region and repository never hold one, so a key reads back unambiguously from
/// both ends ([`parse_group_pk`]).
pub fn group_pk(key: &GroupKey) -> String {
    format!(
        "G#{}#{}#{}#{}#{}#{}",
        key.source_account,
        key.source_region,
        key.repository,
        key.digest,
        key.destination.account,
        key.destination.region
    )
}

/// The key of one expectation's record: the group's, then `#D` for a push by digest or
/// `#T=<tag>` with `%` and `#` escaped, so the tag is the part after the last `#`.
pub fn record_pk(key: &GroupKey, tag: &Option<ImageTag>) -> String {
    match tag {
        None => format!("{}#D", group_pk(key)),
        Some(t) => format!(
            "{}#T={}",
            group_pk(key),
            t.as_str().replace('%', "%25").replace('#', "%23")
        ),
    }
}

/// The group a head's key names.
pub fn parse_group_pk(pk: &str) -> Result<GroupKey, String> {
    let parts: Vec<&str> = pk.split('#').collect();
    if parts.len() < 7 || parts[0] != "G" {
        return Err(format!("{pk:?} is not a group's key"));
    }
    let n = parts.len();
    let digest = parts[4..n - 2].join("#");
    let bad = |what: &str, value: &str, e: &dyn std::fmt::Display| {
        format!("{pk:?}: {what} {value:?} {e}")
    };
    Ok(GroupKey {
        source_account: AccountId::parse(parts[1]).map_err(|e| bad("account", parts[1], &e))?,
        source_region: Region::parse(parts[2]).map_err(|e| bad("Region", parts[2], &e))?,
        repository: RepositoryName::parse(parts[3]).map_err(|e| bad("repository", parts[3], &e))?,
        digest: ImageDigest::parse(&digest).map_err(|e| bad("digest", &digest, &e))?,
        destination: Destination {
            account: AccountId::parse(parts[n - 2])
                .map_err(|e| bad("account", parts[n - 2], &e))?,
            region: Region::parse(parts[n - 1]).map_err(|e| bad("Region", parts[n - 1], &e))?,
        },
    })
}

/// The group and tag a record's key names.
pub fn parse_record_pk(pk: &str) -> Result<(GroupKey, Option<ImageTag>), String> {
    let (group, last) = pk
        .rsplit_once('#')
        .ok_or_else(|| format!("{pk:?} is not a record's key"))?;
    let tag = match last {
        "D" => None,
        _ => {
            let escaped = last
                .strip_prefix("T=")
                .ok_or_else(|| format!("{pk:?} is not a record's key"))?;
            let tag = unescape(escaped).ok_or_else(|| format!("{pk:?}: a bad escape"))?;
            Some(ImageTag::parse(&tag).map_err(|e| format!("{pk:?}: tag {tag:?} {e}"))?)
        }
    };
    Ok((parse_group_pk(group)?, tag))
}

fn unescape(s: &str) -> Option<String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('%') {
        out.push_str(&rest[..i]);
        match rest.get(i + 1..i + 3) {
            Some("25") => out.push('%'),
            Some("23") => out.push('#'),
            _ => return None,
        }
        rest = &rest[i + 3..];
    }
    out.push_str(rest);
    Some(out)
}

// ---------------------------------------------------------------------------------------------
// Items
// ---------------------------------------------------------------------------------------------

/// An item as both stores keep it: its key, its body, and what the indexes need from it.
#[derive(Clone, Debug, PartialEq)]
pub struct Item {
    pub pk: String,
    /// The JSON of a [`StoredHead`] or a [`StoredRecord`].
    pub body: String,
    /// A record's next check and queue: its place in the sweep's index.
    pub due: Option<(Timestamp, Queue)>,
    /// A record's push time: its place in the history.
    pub pushed_at: Option<Timestamp>,
    /// The latest event the item holds (for a head, the group's): it expires a retention after.
    pub last_event: Timestamp,
}

/// What one group's save writes.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// The head, at the next version, written only if the stored one is still at `version`.
    pub head: Item,
    pub version: u64,
    /// Records whose stored form changed (or were never read): written with the head, all or
    /// none.
    pub write: Vec<Item>,
    /// For a group read from the previous version's single item (at this version): records
    /// unchanged from it, created before the head (each only if absent, or created from an
    /// older version of that item), so the transaction holds only what changed.
    pub create: Vec<(Item, u64)>,
}

/// The save of one group: its split, against what was loaded.
pub fn plan(key: &GroupKey, v: &Versioned<TrackedGroup>) -> Result<Plan, StoreError> {
    let (head, records) = split(key, &v.value)?;
    let mut plan = Plan {
        head,
        version: v.version,
        write: Vec::new(),
        create: Vec::new(),
    };
    for (tag, item) in records {
        match (v.loaded.records.get(&tag), v.loaded.legacy) {
            (Some(body), None) if *body == item.body => {}
            (Some(body), Some(legacy)) if *body == item.body => plan.create.push((item, legacy)),
            _ => plan.write.push(item),
        }
    }
    Ok(plan)
}

// ---------------------------------------------------------------------------------------------
// The stored types
// ---------------------------------------------------------------------------------------------

/// A group's head (schema 2).
#[derive(Serialize, Deserialize, Debug, PartialEq)]
pub struct StoredHead {
    pub v: u8,
    pub source_account: String,
    pub source_region: String,
    pub repository: String,
    pub digest: String,
    pub destination_account: String,
    pub destination_region: String,
    /// Expectations waiting for a committed copy, earliest first (their records are read with
    /// the head).
    pub awaiting: Vec<StoredExpectation>,
    /// The expectations whose copy came last, latest first, at most [`RECENT_CAP`] (their
    /// records are read with the head too).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recent: Vec<StoredExpectation>,
    /// How many expectations the group has, each in its record.
    pub pushes: u32,
    /// Copies that belong to no expectation yet.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub copies: Vec<StoredCopy>,
    /// The image deleted at the source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleted_at: Option<i64>,
    pub last_event: Option<i64>,
    /// The image's restores, each with its watch once it has one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub restores: Vec<StoredRestore>,
    /// The copies the restores take (each one's earliest successful and FAILED copy at or
    /// after it), whatever their tag, with the record that also holds each (read with the head).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub restore_copies: Vec<StoredRestoreCopy>,
    /// The deletes owed (delete replication), the DELETEs seen in the destination, and the
    /// watch of each delete owed.
    #[serde(default, skip_serializing_if = "StoredDeletes::is_empty")]
    pub deletes: StoredDeletes,
}

/// A copy a restore takes, in a head.
#[derive(Serialize, Deserialize, Debug, PartialEq)]
pub struct StoredRestoreCopy {
    #[serde(flatten)]
    pub copy: StoredCopy,
    /// The record that holds it too, with its claim; absent when only the head does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record: Option<RecordOf>,
}

/// A record of the same group, by its tag (none: the push by digest's).
#[derive(Serialize, Deserialize, Debug, PartialEq)]
pub struct RecordOf {
    pub tag: Option<String>,
}

/// One restore of the image, in a head.
#[derive(Serialize, Deserialize, Debug, PartialEq)]
pub struct StoredRestore {
    pub at: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watch: Option<StoredWatch>,
}

/// One expectation's record (schema 2). A record may hold no push yet: a delete of its tag
/// read before the push.
#[derive(Serialize, Deserialize, Debug, PartialEq)]
pub struct StoredRecord {
    pub v: u8,
    pub source_account: String,
    pub source_region: String,
    pub repository: String,
    pub digest: String,
    pub destination_account: String,
    pub destination_region: String,
    pub tag: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pushed_at: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub copies: Vec<StoredCopy>,
    /// The copies of `copies` committed to this expectation other than by their own tag.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub claimed: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watch: Option<StoredWatch>,
    /// The tag deleted at the source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleted_at: Option<i64>,
}

/// The previous version's single item per group (schema 1): read, and rewritten as a head and
/// records at its first save.
#[derive(Serialize, Deserialize, Debug, PartialEq)]
pub struct StoredGroup {
    pub v: u8,
    pub source_account: String,
    pub source_region: String,
    pub repository: String,
    pub digest: String,
    pub destination_account: String,
    pub destination_region: String,
    pub expectations: Vec<StoredExpectation>,
    pub copies: Vec<StoredCopy>,
    pub watches: Vec<StoredWatch>,
    /// Deletes at the source (absent from items written before deletes were recorded).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deletions: Vec<StoredDeletion>,
    /// Copies committed to the expectation they were counted for (see `ledger::MATCH_GRACE_MS`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub claims: Vec<StoredClaim>,
    /// Replicated deletes (absent from items written before they were audited).
    #[serde(default, skip_serializing_if = "StoredDeletes::is_empty")]
    pub deletes: StoredDeletes,
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
pub struct StoredClaim {
    /// The copy's event id.
    pub copy: String,
    /// The tag of the expectation it was counted for; none for a push by digest.
    pub tag: Option<String>,
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
pub struct StoredDeletion {
    /// The tag deleted; none for the image.
    pub tag: Option<String>,
    pub at: i64,
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
pub struct StoredExpectation {
    pub tag: Option<String>,
    pub pushed_at: i64,
    /// A restore rather than a push (only in the previous version's items: a head keeps its
    /// restores apart).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub restore: bool,
}

#[derive(Serialize, Deserialize, Debug, PartialEq, Clone)]
pub struct StoredCopy {
    pub id: String,
    pub at: i64,
    pub tag: Option<String>,
    pub ok: bool,
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
pub struct StoredWatch {
    pub tag: Option<String>,
    /// Counted findings, as their names.
    pub counted: Vec<String>,
    pub confirmation: Option<StoredConfirmation>,
    /// Whether the pushed tag was looked up in the destination (stale-tag check)...
    pub tag_checked: bool,
    /// ...and the digest it points to there, if any. Two fields: JSON has no `Some(None)`.
    pub tag_points_to: Option<String>,
    pub next_check: Option<i64>,
    pub checks: u32,
    /// For a copy without its tag: whether the tag had moved on to another digest at the
    /// source; absent until looked up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag_moved_on: Option<bool>,
    /// `yes` or `unconfigured`: what the configuration in force said before the copy was called
    /// missing; absent until then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub still_expected: Option<String>,
    /// The push was found by the inventory check (its event lost); absent otherwise.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub found_by_inventory: bool,
    /// The restore this watch is for, in the previous version's items (a restore has no tag);
    /// absent for a push's watch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restored_at: Option<i64>,
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum StoredConfirmation {
    Present {
        pushed_at: Option<i64>,
        carried_tag: bool,
        checked_at: i64,
    },
    Failed {
        failure_code: Option<String>,
        checked_at: i64,
    },
    Absent {
        in_progress: bool,
        checked_at: i64,
    },
    Archived {
        pushed_at: Option<i64>,
        checked_at: i64,
    },
    Activating {
        checked_at: i64,
    },
}

/// Only the schema version, read first to tell the kinds of body apart.
#[derive(Deserialize)]
struct Schema {
    v: u8,
}

const COUNTED: [&str; 10] = [
    "expected",
    "completed",
    "late",
    "untagged",
    "failed",
    "missing",
    "stale_tag",
    "withdrawn",
    "announced",
    "archived",
];

fn counted_flags(c: &Counted) -> [bool; 10] {
    [
        c.expected,
        c.completed,
        c.late,
        c.untagged,
        c.failed,
        c.missing,
        c.stale_tag,
        c.withdrawn,
        c.announced,
        c.archived,
    ]
}

/// Why a stored value cannot be read.
fn bad(what: &str, value: &str, e: impl std::fmt::Display) -> String {
    format!("stored {what} {value:?} {e}")
}

fn tag_of(s: &Option<String>) -> Result<Option<ImageTag>, String> {
    s.as_deref()
        .map(|t| ImageTag::parse(t).map_err(|e| bad("tag", t, e)))
        .transpose()
}

fn tag_string(t: &Option<ImageTag>) -> Option<String> {
    t.as_ref().map(ToString::to_string)
}

fn stored_copy(c: &CopySeen) -> StoredCopy {
    StoredCopy {
        id: c.id.to_string(),
        at: c.at.millis(),
        tag: tag_string(&c.tag),
        ok: c.succeeded,
    }
}

fn copy_of(c: &StoredCopy) -> Result<CopySeen, String> {
    Ok(CopySeen {
        id: EventId::parse(&c.id).map_err(|e| bad("event id", &c.id, e))?,
        at: Timestamp::from_millis(c.at),
        tag: tag_of(&c.tag)?,
        succeeded: c.ok,
    })
}

fn stored_watch(tag: &Option<ImageTag>, w: &Watch) -> StoredWatch {
    StoredWatch {
        tag: tag_string(tag),
        restored_at: None,
        counted: COUNTED
            .iter()
            .zip(counted_flags(&w.counted))
            .filter(|(_, on)| *on)
            .map(|(name, _)| name.to_string())
            .collect(),
        confirmation: w.confirmation.as_ref().map(|c| match c {
            Confirmation::Present {
                pushed_at,
                carried_tag,
                checked_at,
            } => StoredConfirmation::Present {
                pushed_at: pushed_at.map(Timestamp::millis),
                carried_tag: *carried_tag,
                checked_at: checked_at.millis(),
            },
            Confirmation::Failed {
                failure_code,
                checked_at,
            } => StoredConfirmation::Failed {
                failure_code: failure_code.clone(),
                checked_at: checked_at.millis(),
            },
            Confirmation::Absent {
                in_progress,
                checked_at,
            } => StoredConfirmation::Absent {
                in_progress: *in_progress,
                checked_at: checked_at.millis(),
            },
            Confirmation::Archived {
                pushed_at,
                checked_at,
            } => StoredConfirmation::Archived {
                pushed_at: pushed_at.map(Timestamp::millis),
                checked_at: checked_at.millis(),
            },
            Confirmation::Activating { checked_at } => StoredConfirmation::Activating {
                checked_at: checked_at.millis(),
            },
        }),
        tag_checked: w.tag_points_to.is_some(),
        tag_points_to: w
            .tag_points_to
            .as_ref()
            .and_then(|d| d.as_ref().map(ToString::to_string)),
        next_check: w.next_check.map(Timestamp::millis),
        checks: w.checks,
        tag_moved_on: w.tag_moved_on,
        found_by_inventory: w.found_by_inventory,
        still_expected: w.still_expected.map(|s| {
            match s {
                StillExpected::Yes => "yes",
                StillExpected::Unconfigured => "unconfigured",
            }
            .to_string()
        }),
    }
}

/// The watch of the restore at `at` (a restore has no tag).
fn restore_watch(at: Timestamp, w: &Watch) -> StoredWatch {
    StoredWatch {
        restored_at: Some(at.millis()),
        ..stored_watch(&None, w)
    }
}

fn watch_of(w: &StoredWatch) -> Result<Watch, String> {
    let on = |name: &str| w.counted.iter().any(|c| c == name);
    let counted = Counted {
        expected: on("expected"),
        completed: on("completed"),
        late: on("late"),
        untagged: on("untagged"),
        failed: on("failed"),
        missing: on("missing"),
        stale_tag: on("stale_tag"),
        withdrawn: on("withdrawn"),
        announced: on("announced"),
        archived: on("archived"),
    };
    let ms = Timestamp::from_millis;
    let confirmation = w.confirmation.as_ref().map(|c| match c {
        StoredConfirmation::Present {
            pushed_at,
            carried_tag,
            checked_at,
        } => Confirmation::Present {
            pushed_at: pushed_at.map(ms),
            carried_tag: *carried_tag,
            checked_at: ms(*checked_at),
        },
        StoredConfirmation::Failed {
            failure_code,
            checked_at,
        } => Confirmation::Failed {
            failure_code: failure_code.clone(),
            checked_at: ms(*checked_at),
        },
        StoredConfirmation::Absent {
            in_progress,
            checked_at,
        } => Confirmation::Absent {
            in_progress: *in_progress,
            checked_at: ms(*checked_at),
        },
        StoredConfirmation::Archived {
            pushed_at,
            checked_at,
        } => Confirmation::Archived {
            pushed_at: pushed_at.map(ms),
            checked_at: ms(*checked_at),
        },
        StoredConfirmation::Activating { checked_at } => Confirmation::Activating {
            checked_at: ms(*checked_at),
        },
    });
    let tag_points_to = match (w.tag_checked, &w.tag_points_to) {
        (false, _) => None,
        (true, None) => Some(None),
        (true, Some(d)) => Some(Some(
            ImageDigest::parse(d).map_err(|e| bad("digest", d, e))?,
        )),
    };
    Ok(Watch {
        counted,
        confirmation,
        tag_points_to,
        next_check: w.next_check.map(ms),
        checks: w.checks,
        tag_moved_on: w.tag_moved_on,
        found_by_inventory: w.found_by_inventory,
        still_expected: match w.still_expected.as_deref() {
            None => None,
            Some("yes") => Some(StillExpected::Yes),
            Some("unconfigured") => Some(StillExpected::Unconfigured),
            Some(other) => return Err(bad("still_expected", other, "is unknown")),
        },
    })
}

/// The key fields every body repeats, checked against the key it is stored under.
struct KeyFields<'a> {
    source_account: &'a str,
    source_region: &'a str,
    repository: &'a str,
    digest: &'a str,
    destination_account: &'a str,
    destination_region: &'a str,
}

impl KeyFields<'_> {
    fn key(&self) -> Result<GroupKey, String> {
        Ok(GroupKey {
            source_account: AccountId::parse(self.source_account)
                .map_err(|e| bad("account", self.source_account, e))?,
            source_region: Region::parse(self.source_region)
                .map_err(|e| bad("region", self.source_region, e))?,
            repository: RepositoryName::parse(self.repository)
                .map_err(|e| bad("repository", self.repository, e))?,
            digest: ImageDigest::parse(self.digest).map_err(|e| bad("digest", self.digest, e))?,
            destination: Destination {
                account: AccountId::parse(self.destination_account)
                    .map_err(|e| bad("account", self.destination_account, e))?,
                region: Region::parse(self.destination_region)
                    .map_err(|e| bad("region", self.destination_region, e))?,
            },
        })
    }
}

macro_rules! key_fields {
    ($s:expr) => {
        KeyFields {
            source_account: &$s.source_account,
            source_region: &$s.source_region,
            repository: &$s.repository,
            digest: &$s.digest,
            destination_account: &$s.destination_account,
            destination_region: &$s.destination_region,
        }
    };
}

impl StoredGroup {
    /// The previous version's item for a whole group (tests write such items to check that
    /// they are still read).
    pub fn new(key: &GroupKey, t: &TrackedGroup) -> Self {
        StoredGroup {
            v: LEGACY_SCHEMA,
            source_account: key.source_account.to_string(),
            source_region: key.source_region.to_string(),
            repository: key.repository.to_string(),
            digest: key.digest.to_string(),
            destination_account: key.destination.account.to_string(),
            destination_region: key.destination.region.to_string(),
            expectations: t
                .group
                .expectations()
                .iter()
                .map(|e| StoredExpectation {
                    tag: tag_string(&e.tag),
                    pushed_at: e.pushed_at.millis(),
                    restore: e.is_restore(),
                })
                .collect(),
            copies: t.group.copies().iter().map(stored_copy).collect(),
            watches: t
                .watches
                .iter()
                .map(|(tag, w)| stored_watch(tag, w))
                .chain(
                    t.restore_watches
                        .iter()
                        .map(|(at, w)| restore_watch(*at, w)),
                )
                .collect(),
            deletions: t
                .group
                .deletions()
                .iter()
                .map(|(tag, at)| StoredDeletion {
                    tag: tag_string(tag),
                    at: at.millis(),
                })
                .collect(),
            claims: t
                .claims
                .iter()
                .map(|(copy, tag)| StoredClaim {
                    copy: copy.to_string(),
                    tag: tag_string(tag),
                })
                .collect(),
            deletes: StoredDeletes::new(t),
        }
    }

    pub fn key(&self) -> Result<GroupKey, String> {
        key_fields!(self).key()
    }

    pub fn tracked(&self) -> Result<TrackedGroup, String> {
        if self.v != LEGACY_SCHEMA {
            return Err(format!("group schema version {} is not known here", self.v));
        }
        let mut group = Group::default();
        for e in &self.expectations {
            let at = Timestamp::from_millis(e.pushed_at);
            if e.restore {
                group.add_restore(at);
            } else {
                group.add_push(tag_of(&e.tag)?, at);
            }
        }
        for c in &self.copies {
            group.add_copy(copy_of(c)?);
        }
        let mut watches = BTreeMap::new();
        let mut restore_watches = BTreeMap::new();
        for w in &self.watches {
            match w.restored_at {
                Some(at) => restore_watches.insert(Timestamp::from_millis(at), watch_of(w)?),
                None => watches.insert(tag_of(&w.tag)?, watch_of(w)?),
            };
        }
        for d in &self.deletions {
            group.add_deletion(tag_of(&d.tag)?, Timestamp::from_millis(d.at));
        }
        let mut claims = Claims::new();
        for c in &self.claims {
            let copy = EventId::parse(&c.copy).map_err(|e| bad("event id", &c.copy, e))?;
            claims.insert(copy, tag_of(&c.tag)?);
        }
        let delete_watches = self.deletes.read_into(&mut group)?;
        Ok(TrackedGroup {
            group,
            watches,
            restore_watches,
            delete_watches,
            claims,
            unloaded: 0,
        })
    }
}

/// The stored form of a group's replicated deletes: the deletes it owes, the DELETEs seen in
/// the destination, and the watch of each delete owed.
#[derive(Serialize, Deserialize, Debug, Default, PartialEq)]
pub struct StoredDeletes {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub owed: Vec<StoredDeleteOwed>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub seen: Vec<StoredDeleteSeen>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub watches: Vec<StoredDeleteWatch>,
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
pub struct StoredDeleteOwed {
    pub tag: Option<String>,
    pub at: i64,
    /// `digest`, `tag` or `last_tag`.
    pub kind: String,
}

/// A DELETE seen in the destination.
#[derive(Serialize, Deserialize, Debug, PartialEq)]
pub struct StoredDeleteSeen {
    pub id: String,
    pub at: i64,
    pub tag: Option<String>,
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
pub struct StoredDeleteWatch {
    pub tag: Option<String>,
    /// The delete's time at the source.
    pub at: i64,
    pub counted: Vec<String>,
    /// `gone` or `still_there`, with when ECR was asked.
    pub confirmation: Option<(String, i64)>,
    pub next_check: Option<i64>,
    pub checks: u32,
}

const DELETE_COUNTED: [&str; 4] = ["expected", "replicated", "late", "missing"];

type DeleteWatches = BTreeMap<(Option<ImageTag>, Timestamp), DeleteWatch>;

impl StoredDeletes {
    fn is_empty(&self) -> bool {
        self.owed.is_empty() && self.seen.is_empty() && self.watches.is_empty()
    }

    fn new(t: &TrackedGroup) -> Self {
        let deletes = t.group.deletes();
        StoredDeletes {
            owed: deletes
                .expectations()
                .iter()
                .map(|e| StoredDeleteOwed {
                    tag: tag_string(&e.tag),
                    at: e.deleted_at.millis(),
                    kind: e.kind.as_str().to_owned(),
                })
                .collect(),
            seen: deletes
                .seen()
                .iter()
                .map(|d| StoredDeleteSeen {
                    id: d.id.to_string(),
                    at: d.at.millis(),
                    tag: tag_string(&d.tag),
                })
                .collect(),
            watches: t
                .delete_watches
                .iter()
                .map(|((tag, at), w)| {
                    let c = w.counted;
                    StoredDeleteWatch {
                        tag: tag_string(tag),
                        at: at.millis(),
                        counted: DELETE_COUNTED
                            .iter()
                            .zip([c.expected, c.replicated, c.late, c.missing])
                            .filter(|(_, on)| *on)
                            .map(|(name, _)| name.to_string())
                            .collect(),
                        confirmation: w.confirmation.map(|c| match c {
                            DeleteConfirmation::Gone { checked_at } => {
                                ("gone".to_owned(), checked_at.millis())
                            }
                            DeleteConfirmation::StillThere { checked_at } => {
                                ("still_there".to_owned(), checked_at.millis())
                            }
                        }),
                        next_check: w.next_check.map(Timestamp::millis),
                        checks: w.checks,
                    }
                })
                .collect(),
        }
    }

    /// Puts the deletes owed and seen into `group`; returns the watches.
    fn read_into(&self, group: &mut Group) -> Result<DeleteWatches, String> {
        let ms = Timestamp::from_millis;
        for d in &self.owed {
            let kind = DeleteKind::parse(&d.kind)
                .ok_or_else(|| bad("delete kind", &d.kind, "is unknown"))?;
            group.expect_delete(tag_of(&d.tag)?, ms(d.at), kind);
        }
        for d in &self.seen {
            group.add_delete_seen(DeleteSeen {
                id: EventId::parse(&d.id).map_err(|e| bad("event id", &d.id, e))?,
                at: ms(d.at),
                tag: tag_of(&d.tag)?,
            });
        }
        let mut watches = DeleteWatches::new();
        for w in &self.watches {
            let on = |name: &str| w.counted.iter().any(|c| c == name);
            let confirmation = match &w.confirmation {
                None => None,
                Some((kind, at)) if kind == "gone" => Some(DeleteConfirmation::Gone {
                    checked_at: ms(*at),
                }),
                Some((kind, at)) if kind == "still_there" => Some(DeleteConfirmation::StillThere {
                    checked_at: ms(*at),
                }),
                Some((kind, _)) => return Err(bad("delete confirmation", kind, "is unknown")),
            };
            watches.insert(
                (tag_of(&w.tag)?, ms(w.at)),
                DeleteWatch {
                    counted: DeleteCounted {
                        expected: on("expected"),
                        replicated: on("replicated"),
                        late: on("late"),
                        missing: on("missing"),
                    },
                    confirmation,
                    next_check: w.next_check.map(ms),
                    checks: w.checks,
                },
            );
        }
        Ok(watches)
    }
}

// ---------------------------------------------------------------------------------------------
// Splitting a group into items
// ---------------------------------------------------------------------------------------------

fn json<T: Serialize>(value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|e| StoreError::Refused(e.to_string()))
}

/// The copies a record keeps: the earliest successful and failed ones, then the latest others,
/// at most [`RECORD_COPIES_CAP`], in time order.
/// The copies a restore takes are always kept too: the head holds them as well, and their claim
/// is the record's to keep.
fn bounded_record_copies<'a>(
    mut copies: Vec<&'a CopySeen>,
    restore_taken: &BTreeSet<&EventId>,
) -> Vec<&'a CopySeen> {
    if copies.len() <= RECORD_COPIES_CAP {
        return copies;
    }
    copies.sort_by(|a, b| (a.at, &a.id).cmp(&(b.at, &b.id)));
    let first_ok = copies.iter().position(|c| c.succeeded);
    let first_failed = copies.iter().position(|c| !c.succeeded);
    let taken = (0..copies.len()).filter(|&i| restore_taken.contains(&copies[i].id));
    let mut keep: BTreeSet<usize> = first_ok
        .into_iter()
        .chain(first_failed)
        .chain(taken)
        .collect();
    for i in (0..copies.len()).rev() {
        if keep.len() >= RECORD_COPIES_CAP {
            break;
        }
        keep.insert(i);
    }
    keep.into_iter().map(|i| copies[i]).collect()
}

/// A group's items: its head, and its records by tag.
pub type Items = (Item, Vec<(Option<ImageTag>, Item)>);

/// A group as its head and its records, by tag.
pub fn split(key: &GroupKey, t: &TrackedGroup) -> Result<Items, StoreError> {
    let (restores, expectations): (Vec<_>, Vec<_>) =
        t.group.expectations().iter().partition(|e| e.is_restore());
    let restore_taken = restore_claims(&restores, t.group.copies());
    let placed = place_copies(t, &expectations, &restore_taken);
    let (deleted, image_deleted) = deletions(t);
    let records = records(
        key,
        t,
        &expectations,
        placed.by_record,
        &deleted,
        &restore_taken,
    )?;
    let head = head(
        key,
        t,
        &restores,
        expectations.len(),
        placed.in_head,
        placed.restore_copies,
        image_deleted,
    )?;
    Ok((head, records))
}

/// The copies the restores take, by id: each restore's earliest successful and earliest
/// FAILED copy made at or after it, whatever its tag. A restore takes the earliest successful
/// copy and is failed by the earliest FAILED one: those are kept in the head too, with the
/// record that holds them, which every load then reads (so the copy keeps its claim).
fn restore_claims<'a>(restores: &[&Expectation], copies: &'a [CopySeen]) -> BTreeSet<&'a EventId> {
    let mut by_time: Vec<&CopySeen> = copies.iter().collect();
    by_time.sort_by(|a, b| (a.at, &a.id).cmp(&(b.at, &b.id)));
    let mut restore_taken: BTreeSet<&EventId> = BTreeSet::new();
    for r in restores {
        for ok in [true, false] {
            if let Some(c) = by_time
                .iter()
                .find(|c| c.succeeded == ok && c.at >= r.pushed_at)
            {
                restore_taken.insert(&c.id);
            }
        }
    }
    restore_taken
}

/// Where a group's copies are stored.
struct Placement<'a> {
    /// The copies of each record, by its tag.
    by_record: BTreeMap<&'a Option<ImageTag>, Vec<&'a CopySeen>>,
    /// The copies that belong to no record and that no restore takes.
    in_head: Vec<&'a CopySeen>,
    /// The copies the restores take, with the record that also holds each.
    restore_copies: Vec<StoredRestoreCopy>,
}

/// Which item each copy goes to: the record of the expectation it is committed to, else its
/// own tag's; none (the head) when neither is known. The copies a restore takes are listed in
/// the head as well, with their record, so that every load reads them with their claim.
fn place_copies<'a>(
    t: &'a TrackedGroup,
    expectations: &[&Expectation],
    restore_taken: &BTreeSet<&EventId>,
) -> Placement<'a> {
    let with_record: BTreeSet<&Option<ImageTag>> = expectations.iter().map(|e| &e.tag).collect();
    let mut placed = Placement {
        by_record: BTreeMap::new(),
        in_head: Vec::new(),
        restore_copies: Vec::new(),
    };
    for c in t.group.copies() {
        let target = match t.claims.get(&c.id) {
            Some(claimed) if with_record.contains(claimed) => Some(claimed),
            _ if c.tag.is_some() && with_record.contains(&c.tag) => Some(&c.tag),
            _ => None,
        };
        let taken = restore_taken.contains(&c.id);
        if taken {
            placed.restore_copies.push(StoredRestoreCopy {
                copy: stored_copy(c),
                record: target.map(|tag| RecordOf {
                    tag: tag_string(tag),
                }),
            });
        }
        match target {
            Some(tag) => placed.by_record.entry(tag).or_default().push(c),
            None if taken => {}
            None => placed.in_head.push(c),
        }
    }
    placed
}

/// The group's deletes at the source: when each tag was deleted (each needs a record, even
/// one deleted before its push), and when the image was (the head's to say).
fn deletions(t: &TrackedGroup) -> (BTreeMap<Option<ImageTag>, Timestamp>, Option<Timestamp>) {
    let mut deleted: BTreeMap<Option<ImageTag>, Timestamp> = BTreeMap::new();
    let mut image_deleted = None;
    for (tag, at) in t.group.deletions() {
        match tag {
            None => image_deleted = Some(*at),
            Some(_) => {
                deleted.insert(tag.clone(), *at);
            }
        }
    }
    (deleted, image_deleted)
}

/// The records, by tag: one per expectation, and one per tag deleted before its push.
fn records(
    key: &GroupKey,
    t: &TrackedGroup,
    expectations: &[&Expectation],
    mut by_record: BTreeMap<&Option<ImageTag>, Vec<&CopySeen>>,
    deleted: &BTreeMap<Option<ImageTag>, Timestamp>,
    restore_taken: &BTreeSet<&EventId>,
) -> Result<Vec<(Option<ImageTag>, Item)>, StoreError> {
    let mut tags: BTreeSet<Option<ImageTag>> = expectations.iter().map(|e| e.tag.clone()).collect();
    tags.extend(deleted.keys().cloned());
    let mut records = Vec::with_capacity(tags.len());
    for tag in &tags {
        let expectation = expectations.iter().find(|e| e.tag == *tag).copied();
        let copies = by_record.remove(tag).unwrap_or_default();
        let item = record_item(
            key,
            t,
            tag,
            expectation,
            copies,
            deleted.get(tag).copied(),
            restore_taken,
        )?;
        records.push((tag.clone(), item));
    }
    Ok(records)
}

/// One record as an item: its push, its copies (bounded, with the claims among them), its
/// watch and the delete of its tag; due at its watch's next check, placed in the history by
/// its push, and expiring after the latest event it holds.
fn record_item(
    key: &GroupKey,
    t: &TrackedGroup,
    tag: &Option<ImageTag>,
    expectation: Option<&Expectation>,
    copies: Vec<&CopySeen>,
    deleted_at: Option<Timestamp>,
    restore_taken: &BTreeSet<&EventId>,
) -> Result<Item, StoreError> {
    let mut last = expectation.map(|e| e.pushed_at);
    for c in &copies {
        last = Some(last.map_or(c.at, |l| l.max(c.at)));
    }
    if let Some(at) = deleted_at {
        last = Some(last.map_or(at, |l| l.max(at)));
    }
    let kept = bounded_record_copies(copies, restore_taken);
    let watch = t.watches.get(tag);
    let record = StoredRecord {
        v: SCHEMA,
        source_account: key.source_account.to_string(),
        source_region: key.source_region.to_string(),
        repository: key.repository.to_string(),
        digest: key.digest.to_string(),
        destination_account: key.destination.account.to_string(),
        destination_region: key.destination.region.to_string(),
        tag: tag_string(tag),
        pushed_at: expectation.map(|e| e.pushed_at.millis()),
        claimed: kept
            .iter()
            .filter(|c| t.claims.contains_key(&c.id))
            .map(|c| c.id.to_string())
            .collect(),
        copies: kept.into_iter().map(stored_copy).collect(),
        watch: watch.map(|w| stored_watch(tag, w)),
        deleted_at: deleted_at.map(Timestamp::millis),
    };
    Ok(Item {
        pk: record_pk(key, tag),
        body: json(&record)?,
        due: watch.and_then(|w| w.next_check.map(|at| (at, w.queue()))),
        pushed_at: expectation.map(|e| e.pushed_at),
        last_event: last.unwrap_or(Timestamp::from_millis(0)),
    })
}

/// The head as an item: the expectations it lists, the copies it keeps (the latest of those
/// in no record, and those the restores take), the restores and deletes owed with their
/// watches; due at the earliest check those wait for, and placed in the history by the
/// earliest restore or delete owed.
fn head(
    key: &GroupKey,
    t: &TrackedGroup,
    restores: &[&Expectation],
    in_records: usize,
    mut in_head: Vec<&CopySeen>,
    restore_copies: Vec<StoredRestoreCopy>,
    image_deleted: Option<Timestamp>,
) -> Result<Item, StoreError> {
    // The head's copies: the latest ones.
    in_head.sort_by(|a, b| (a.at, &a.id).cmp(&(b.at, &b.id)));
    let skip = in_head.len().saturating_sub(HEAD_COPIES_CAP);
    let (awaiting, recent) = listed_expectations(t);
    let stored_restores = restores
        .iter()
        .map(|e| StoredRestore {
            at: e.pushed_at.millis(),
            watch: t
                .restore_watches
                .get(&e.pushed_at)
                .map(|w| restore_watch(e.pushed_at, w)),
        })
        .collect();
    let first_restore = restores.iter().map(|e| e.pushed_at).min();
    let first_restore_or_delete = first_restore.into_iter().chain(
        t.group
            .deletes()
            .expectations()
            .iter()
            .map(|e| e.deleted_at),
    );
    let head_placed = first_restore_or_delete.min();
    let pushes = t
        .unloaded
        .saturating_add(u32::try_from(in_records).unwrap_or(u32::MAX));
    let head = StoredHead {
        v: SCHEMA,
        source_account: key.source_account.to_string(),
        source_region: key.source_region.to_string(),
        repository: key.repository.to_string(),
        digest: key.digest.to_string(),
        destination_account: key.destination.account.to_string(),
        destination_region: key.destination.region.to_string(),
        awaiting,
        recent,
        pushes,
        copies: in_head.into_iter().skip(skip).map(stored_copy).collect(),
        deleted_at: image_deleted.map(Timestamp::millis),
        last_event: t.group.last_event.map(Timestamp::millis),
        restores: stored_restores,
        restore_copies,
        deletes: StoredDeletes::new(t),
    };
    Ok(Item {
        pk: group_pk(key),
        body: json(&head)?,
        due: head_due(t, restores),
        pushed_at: head_placed,
        last_event: t.group.last_event.unwrap_or(Timestamp::from_millis(0)),
    })
}

/// The expectations a head lists, so that every load reads their records: those still
/// waiting for a committed copy (earliest first, at most [`AWAITING_CAP`]), and those with it,
/// latest copy first (at most [`RECENT_CAP`]).
fn listed_expectations(t: &TrackedGroup) -> (Vec<StoredExpectation>, Vec<StoredExpectation>) {
    // One resolution splits the pushes: those still waiting for a committed copy (earliest
    // first), and those with it, latest copy first.
    let resolution = t.resolve();
    let mut awaiting = Vec::new();
    let mut done: Vec<(Timestamp, &Expectation)> = Vec::new();
    for (e, ev) in t.group.expectations().iter().zip(&resolution.evidence) {
        match ev.success {
            _ if e.is_restore() => {}
            Some((at, _)) if ev.provisional_at.is_none() => done.push((at, e)),
            _ => awaiting.push(e),
        }
    }
    done.sort_by_key(|d| std::cmp::Reverse(d.0));
    let listed = |e: &Expectation| StoredExpectation {
        tag: tag_string(&e.tag),
        pushed_at: e.pushed_at.millis(),
        restore: false,
    };
    let awaiting = awaiting
        .into_iter()
        .take(AWAITING_CAP)
        .map(listed)
        .collect();
    let recent = done
        .into_iter()
        .take(RECENT_CAP)
        .map(|(_, e)| listed(e))
        .collect();
    (awaiting, recent)
}

/// The head's place in the sweep's index: the earliest check a restore or a delete owed
/// waits for. Its queue is a restore's (a copy in flight or watched); deletes alone are
/// chores, so the copy gauges count copies only.
fn head_due(t: &TrackedGroup, restores: &[&Expectation]) -> Option<(Timestamp, Queue)> {
    let restore_checks = restores.iter().filter_map(|e| {
        let w = t.restore_watches.get(&e.pushed_at)?;
        Some((w.next_check?, w.queue()))
    });
    let delete_checks = t
        .delete_watches
        .values()
        .filter_map(|w| Some((w.next_check?, Queue::Chore)));
    let checks: Vec<(Timestamp, Queue)> = restore_checks.chain(delete_checks).collect();
    checks.iter().map(|(at, _)| *at).min().map(|at| {
        let queue = checks.iter().map(|(_, q)| *q).min().unwrap_or(Queue::Chore);
        (at, queue)
    })
}

// ---------------------------------------------------------------------------------------------
// Reading items back
// ---------------------------------------------------------------------------------------------

/// A head as read: what it says about the group, and which records to read with it.
pub enum Head {
    /// A head of this version.
    Current(StoredHead),
    /// The previous version's single item, holding the whole group, at this version.
    Legacy(TrackedGroup, u64),
}

impl Head {
    /// The records a load must read with this head: those of the expectations waiting for a
    /// committed copy, and of those whose copy came last.
    pub fn awaiting(&self) -> Result<Vec<Option<ImageTag>>, String> {
        match self {
            Head::Current(h) => h
                .awaiting
                .iter()
                .chain(&h.recent)
                .map(|e| tag_of(&e.tag))
                .chain(
                    h.restore_copies
                        .iter()
                        .filter_map(|c| c.record.as_ref().map(|r| tag_of(&r.tag))),
                )
                .collect(),
            Head::Legacy(..) => Ok(Vec::new()),
        }
    }
}

fn unreadable(pk: &str, reason: impl Into<String>) -> StoreError {
    StoreError::Unreadable {
        key: pk.to_owned(),
        reason: reason.into(),
    }
}

/// Reads a head (or a previous version's item, at `version`) stored under `key`'s head key.
pub fn read_head(key: &GroupKey, body: &str, version: u64) -> Result<Head, StoreError> {
    let pk = group_pk(key);
    let schema: Schema = serde_json::from_str(body)
        .map_err(|e| unreadable(&pk, format!("unreadable group body: {e}")))?;
    let (stored_key, head) = match schema.v {
        LEGACY_SCHEMA => {
            let stored: StoredGroup = serde_json::from_str(body)
                .map_err(|e| unreadable(&pk, format!("unreadable group body: {e}")))?;
            let tracked = stored.tracked().map_err(|e| unreadable(&pk, e))?;
            (stored.key(), Head::Legacy(tracked, version))
        }
        SCHEMA => {
            let stored: StoredHead = serde_json::from_str(body)
                .map_err(|e| unreadable(&pk, format!("unreadable group head: {e}")))?;
            (key_fields!(stored).key(), Head::Current(stored))
        }
        other => {
            return Err(unreadable(
                &pk,
                format!("group schema version {other} is not known here"),
            ));
        }
    };
    let stored_key = stored_key.map_err(|e| unreadable(&pk, e))?;
    if stored_key != *key {
        return Err(unreadable(&pk, "the item holds the group of another key"));
    }
    Ok(head)
}

/// Reads one record, checking that it is the record of `key` and `tag`.
pub fn read_record(
    key: &GroupKey,
    tag: &Option<ImageTag>,
    body: &str,
) -> Result<StoredRecord, StoreError> {
    let pk = record_pk(key, tag);
    let record: StoredRecord = serde_json::from_str(body)
        .map_err(|e| unreadable(&pk, format!("unreadable record body: {e}")))?;
    if record.v != SCHEMA {
        return Err(unreadable(
            &pk,
            format!("record schema version {} is not known here", record.v),
        ));
    }
    let stored_key = key_fields!(record).key().map_err(|e| unreadable(&pk, e))?;
    let stored_tag = tag_of(&record.tag).map_err(|e| unreadable(&pk, e))?;
    if stored_key != *key || stored_tag != *tag {
        return Err(unreadable(&pk, "the item holds the record of another key"));
    }
    Ok(record)
}

/// Adds one record to a group being assembled; its copies go to `copies`, which are added in
/// time order once every item is read (the order copies are kept in is not what they say).
fn add_record(
    t: &mut TrackedGroup,
    record: &StoredRecord,
    copies: &mut Vec<CopySeen>,
) -> Result<(), String> {
    let tag = tag_of(&record.tag)?;
    if let Some(at) = record.pushed_at {
        t.group.add_push(tag.clone(), Timestamp::from_millis(at));
    }
    for c in &record.copies {
        let copy = copy_of(c)?;
        if record.claimed.contains(&c.id) {
            t.claims.insert(copy.id.clone(), tag.clone());
        }
        copies.push(copy);
    }
    if let Some(w) = &record.watch {
        t.watches.insert(tag.clone(), watch_of(w)?);
    }
    if let Some(at) = record.deleted_at {
        t.group.add_deletion(tag, Timestamp::from_millis(at));
    }
    Ok(())
}

/// Adds what a head holds besides its copies: the image's delete, its restores and their
/// watches, the deletes owed.
fn add_head(t: &mut TrackedGroup, h: &StoredHead) -> Result<(), String> {
    let ms = Timestamp::from_millis;
    if let Some(at) = h.deleted_at {
        t.group.add_deletion(None, ms(at));
    }
    for r in &h.restores {
        t.group.add_restore(ms(r.at));
        if let Some(w) = &r.watch {
            t.restore_watches.insert(ms(r.at), watch_of(w)?);
        }
    }
    t.delete_watches = h.deletes.read_into(&mut t.group)?;
    Ok(())
}

/// The group a load returns: its head (if stored) and the records read with it, and what was
/// read, for the save.
pub fn assemble(
    key: &GroupKey,
    head: Option<Head>,
    records: &[(Option<ImageTag>, String)],
) -> Result<(TrackedGroup, Loaded), StoreError> {
    let mut loaded = Loaded::default();
    let head = match head {
        None => None,
        Some(Head::Legacy(tracked, version)) => {
            // The whole group, from the previous version's item: what its records would be is
            // what was read, and none of them is stored yet.
            let (_, records) = split(key, &tracked)?;
            loaded.legacy = Some(version);
            loaded.records = records
                .into_iter()
                .map(|(tag, item)| (tag, item.body))
                .collect();
            return Ok((tracked, loaded));
        }
        Some(Head::Current(h)) => Some(h),
    };
    let mut t = TrackedGroup::default();
    let mut copies = Vec::new();
    let mut pushes_read = 0u32;
    for (tag, body) in records {
        let record = read_record(key, tag, body)?;
        add_record(&mut t, &record, &mut copies)
            .map_err(|e| unreadable(&record_pk(key, tag), e))?;
        if record.pushed_at.is_some() {
            pushes_read += 1;
        }
        loaded.records.insert(tag.clone(), body.clone());
    }
    if let Some(h) = &head {
        let pk = group_pk(key);
        for c in h
            .copies
            .iter()
            .chain(h.restore_copies.iter().map(|r| &r.copy))
        {
            copies.push(copy_of(c).map_err(|e| unreadable(&pk, e))?);
        }
    }
    copies.sort_by(|a, b| (a.at, &a.id).cmp(&(b.at, &b.id)));
    for c in copies {
        t.group.add_copy(c);
    }
    if let Some(h) = head {
        add_head(&mut t, &h).map_err(|e| unreadable(&group_pk(key), e))?;
        t.unloaded = h.pushes.saturating_sub(pushes_read);
        if let Some(last) = h.last_event.map(Timestamp::from_millis) {
            t.group.last_event = Some(t.group.last_event.map_or(last, |l| l.max(last)));
        }
    }
    Ok((t, loaded))
}

/// One record read on its own (the history): the group it belongs to, holding that expectation
/// with its copies and watch. `None` for a record without a push.
pub fn record_alone(pk: &str, body: &str) -> Result<Option<(GroupKey, TrackedGroup)>, StoreError> {
    let (key, tag) = parse_record_pk(pk).map_err(|e| unreadable(pk, e))?;
    let record = read_record(&key, &tag, body)?;
    if record.pushed_at.is_none() {
        return Ok(None);
    }
    let mut t = TrackedGroup::default();
    let mut copies = Vec::new();
    add_record(&mut t, &record, &mut copies).map_err(|e| unreadable(pk, e))?;
    copies.sort_by(|a, b| (a.at, &a.id).cmp(&(b.at, &b.id)));
    for c in copies {
        t.group.add_copy(c);
    }
    Ok(Some((key, t)))
}

/// A head read on its own (the history): the image's restores and the deletes owed, with the
/// copies the head keeps. `None` for a head that holds neither (it is not in the history).
pub fn head_alone(pk: &str, body: &str) -> Result<Option<(GroupKey, TrackedGroup)>, StoreError> {
    let key = parse_group_pk(pk).map_err(|e| unreadable(pk, e))?;
    let h = match read_head(&key, body, 0)? {
        Head::Current(h) => h,
        Head::Legacy(tracked, _) => return Ok(Some((key, tracked))),
    };
    if h.restores.is_empty() && h.deletes.owed.is_empty() {
        return Ok(None);
    }
    // The copies its restores take; the head's others belong to pushes, which are the
    // records' to tell.
    let mut t = TrackedGroup::default();
    let mut copies = Vec::new();
    for c in &h.restore_copies {
        copies.push(copy_of(&c.copy).map_err(|e| unreadable(pk, e))?);
    }
    copies.sort_by(|a, b| (a.at, &a.id).cmp(&(b.at, &b.id)));
    for c in copies {
        t.group.add_copy(c);
    }
    add_head(&mut t, &h).map_err(|e| unreadable(pk, e))?;
    Ok(Some((key, t)))
}

/// The key and tag of an item in the sweep's index: a record's, or a head's (its restores and
/// deletes owed are due), which names no tag: `None`, the push by digest, whose record a load
/// reads if there is one.
pub fn parse_due_pk(pk: &str) -> Result<(GroupKey, Option<ImageTag>), String> {
    parse_record_pk(pk).or_else(|e| parse_group_pk(pk).map(|key| (key, None)).map_err(|_| e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::correlate::Status;
    use crate::domain::ids::ImageDigest;
    use crate::domain::time::Window;

    fn key() -> GroupKey {
        GroupKey::example()
    }
    fn t(s: i64) -> Timestamp {
        Timestamp::from_millis(1_719_835_200_000 + s * 1000)
    }
    fn tag(s: &str) -> Option<ImageTag> {
        Some(ImageTag::parse(s).unwrap())
    }
    fn copy(id: &str, at: i64, tag_: Option<&str>, ok: bool) -> CopySeen {
        CopySeen {
            id: EventId::parse(id).unwrap(),
            at: t(at),
            tag: tag_.and_then(tag),
            succeeded: ok,
        }
    }

    /// Splits, then reads everything back as a store would (head and every record).
    fn round_trip(g: &TrackedGroup) -> TrackedGroup {
        let (head, records) = split(&key(), g).unwrap();
        let head = read_head(&key(), &head.body, 1).unwrap();
        let bodies: Vec<_> = records.into_iter().map(|(t, i)| (t, i.body)).collect();
        assemble(&key(), Some(head), &bodies).unwrap().0
    }

    #[test]
    fn keys_read_back_whatever_the_tag_holds() {
        for t in [None, tag("v1"), tag("a#b%23c"), tag("%"), tag("x#")] {
            let pk = record_pk(&key(), &t);
            assert_eq!(parse_record_pk(&pk), Ok((key(), t.clone())), "{pk}");
            assert!(pk.starts_with(&group_pk(&key())));
        }
        assert_eq!(parse_group_pk(&group_pk(&key())), Ok(key()));
        assert!(parse_record_pk("G#garbage").is_err());
        assert!(parse_record_pk(&format!("{}#T=a%2", group_pk(&key()))).is_err());
    }

    #[test]
    fn a_whole_group_survives_its_split_into_a_head_and_records() {
        let mut g = TrackedGroup::default();
        g.group.add_push(tag("v1"), t(0));
        g.group.add_push(None, t(3));
        g.group.add_push(tag("rc"), t(5));
        g.group.add_copy(copy("f1", 8, Some("v1"), false));
        g.group.add_copy(copy("u1", 9, None, true));
        g.group.add_copy(copy("orphan", 10, Some("nobody"), true));
        g.group.add_deletion(None, t(60));
        g.group.add_deletion(tag("gone"), t(61));
        g.settle(&key(), Window::DEFAULT, t(400));
        assert!(!g.claims.is_empty(), "the tagless copy is committed");
        assert_eq!(round_trip(&g), g);
    }

    #[test]
    fn a_record_keeps_its_earliest_success_and_failure_and_the_latest_others() {
        let mut g = TrackedGroup::default();
        g.group.add_push(tag("v1"), t(0));
        for i in 0..20 {
            g.group
                .add_copy(copy(&format!("c{i}"), 100 + i, Some("v1"), i % 3 != 1));
        }
        g.settle(&key(), Window::DEFAULT, t(200));
        let back = round_trip(&g);
        assert_eq!(back.group.copies().len(), RECORD_COPIES_CAP);
        assert_eq!(back.resolve().evidence, g.resolve().evidence);
        assert_eq!(back.watches, g.watches);
    }

    #[test]
    fn a_record_full_of_copies_keeps_the_one_a_restore_took_with_its_claim() {
        // v1 pushed at 0, a FAILED copy at 50; restored at 100; a FAILED copy without a tag at
        // 110, committed to v1, is the restore's first FAILED copy; then ten more copies of v1.
        let mut g = TrackedGroup::default();
        g.group.add_push(tag("v1"), t(0));
        g.group.add_copy(copy("f-50", 50, Some("v1"), false));
        g.group.add_restore(t(100));
        g.group.add_copy(copy("f-110", 110, None, false));
        g.settle(&key(), Window::DEFAULT, t(110 + 400));
        assert_eq!(
            g.claims.get(&EventId::parse("f-110").unwrap()),
            Some(&tag("v1"))
        );
        for i in 0..10 {
            g.group
                .add_copy(copy(&format!("ok-{i}"), 600 + i, Some("v1"), true));
        }
        g.settle(&key(), Window::DEFAULT, t(700));
        let back = round_trip(&g);
        assert_eq!(
            back.claims.get(&EventId::parse("f-110").unwrap()),
            Some(&tag("v1")),
            "kept in v1's record, claim and all"
        );
        assert_eq!(back.resolve().evidence, g.resolve().evidence);
    }

    /// A group with every kind of state: pushes, a restore, deletes owed and seen, claims, and
    /// watches of each kind.
    fn every_kind_of_state() -> TrackedGroup {
        let mut tracked = TrackedGroup::default();
        tracked
            .group
            .add_push(Some(ImageTag::parse("v1").unwrap()), t(0));
        tracked.group.add_push(None, t(3));
        tracked.group.add_copy(CopySeen {
            id: EventId::parse("c1").unwrap(),
            at: t(9),
            tag: None,
            succeeded: false,
        });
        tracked.group.add_deletion(None, t(60));
        tracked.group.add_restore(t(90));
        tracked.group.expect_delete(
            Some(ImageTag::parse("v1").unwrap()),
            t(100),
            DeleteKind::LastTag,
        );
        tracked.group.add_delete_seen(DeleteSeen {
            id: EventId::parse("d1").unwrap(),
            at: t(110),
            tag: None,
        });
        tracked.delete_watches.insert(
            (Some(ImageTag::parse("v1").unwrap()), t(100)),
            DeleteWatch {
                counted: DeleteCounted {
                    expected: true,
                    missing: true,
                    ..DeleteCounted::default()
                },
                confirmation: Some(DeleteConfirmation::StillThere {
                    checked_at: t(1901),
                }),
                next_check: Some(t(3701)),
                checks: 1,
            },
        );
        tracked.claims.insert(
            EventId::parse("c1").unwrap(),
            Some(ImageTag::parse("v1").unwrap()),
        );
        let watch = |confirmation, tag_points_to| Watch {
            counted: Counted {
                expected: true,
                missing: true,
                stale_tag: true,
                withdrawn: true,
                ..Counted::default()
            },
            confirmation: Some(confirmation),
            tag_points_to,
            next_check: Some(t(4000)),
            checks: 2,
            tag_moved_on: Some(false),
            still_expected: Some(StillExpected::Yes),
            found_by_inventory: true,
        };
        tracked.watches.insert(
            Some(ImageTag::parse("v1").unwrap()),
            watch(
                Confirmation::Failed {
                    failure_code: Some("ACCESS_DENIED (verbatim)".into()),
                    checked_at: t(1900),
                },
                Some(None),
            ),
        );
        tracked.watches.insert(
            None,
            watch(
                Confirmation::Present {
                    pushed_at: None,
                    carried_tag: true,
                    checked_at: t(1900),
                },
                Some(Some(ImageDigest::parse("sha256:old").unwrap())),
            ),
        );
        tracked.restore_watches.insert(
            t(90),
            watch(
                Confirmation::Archived {
                    pushed_at: Some(t(95)),
                    checked_at: t(1900),
                },
                None,
            ),
        );
        tracked
    }

    #[test]
    fn every_kind_of_state_survives_the_split_and_the_previous_versions_single_item() {
        let g = every_kind_of_state();
        assert_eq!(round_trip(&g), g, "head and records");
        let json = serde_json::to_string(&StoredGroup::new(&key(), &g)).unwrap();
        let back: StoredGroup = serde_json::from_str(&json).unwrap();
        assert_eq!(back.key().unwrap(), key());
        assert_eq!(back.tracked().unwrap(), g, "the previous version's item");
    }

    #[test]
    fn a_head_holds_the_restores_and_the_deletes_owed_and_is_due_at_their_earliest_check() {
        let g = every_kind_of_state();
        let (head, records) = split(&key(), &g).unwrap();
        let body: StoredHead = serde_json::from_str(&head.body).unwrap();
        assert_eq!(body.restores.len(), 1);
        assert!(body.restores[0].watch.is_some());
        assert_eq!(body.deletes.owed.len(), 1);
        assert_eq!(body.deletes.seen.len(), 1);
        // The restore's watch (counted missing: watched) is due at t(4000), the delete's at
        // t(3701): the head is due at the earlier, in the restore's queue (a delete is a chore).
        assert_eq!(head.due, Some((t(3701), Queue::Watched)));
        assert_eq!(
            head.pushed_at,
            Some(t(90)),
            "placed in the history by the restore"
        );
        assert_eq!(records.len(), 2, "v1's record and the push by digest's");
        assert_eq!(
            parse_due_pk(&head.pk),
            Ok((key(), None)),
            "a due head is read as the group with no tag of its own"
        );
        let (alone_key, alone) = head_alone(&head.pk, &head.body).unwrap().unwrap();
        assert_eq!(alone_key, key());
        assert_eq!(alone.restore_watches, g.restore_watches);
        assert_eq!(alone.delete_watches, g.delete_watches);
        assert!(
            alone.watches.is_empty(),
            "the pushes are the records' to tell"
        );
    }

    #[test]
    fn a_load_reads_the_expectations_whose_copy_came_last_as_a_late_copy_without_tag_may_be_theirs()
    {
        // v1 pushed at 134 and copied at 487; a push by digest at 158 still waits. A FAILED
        // result without a tag made at 388 and delivered after 487 may be v1's: the earliest
        // push with no copy by 388.
        let mut g = TrackedGroup::default();
        g.group.add_push(tag("v1"), t(134));
        g.group.add_push(None, t(158));
        g.group.add_copy(copy("v1-copy", 487, Some("v1"), true));
        g.settle(&key(), Window::DEFAULT, t(490));
        let (head, _) = split(&key(), &g).unwrap();
        let head = read_head(&key(), &head.body, 1).unwrap();
        assert_eq!(head.awaiting().unwrap(), vec![None, tag("v1")]);

        // Only the RECENT_CAP latest copies are listed.
        let mut many = TrackedGroup::default();
        for i in 0..40 {
            many.group.add_push(tag(&format!("t{i}")), t(i));
            many.group.add_copy(copy(
                &format!("c{i}"),
                100 + i,
                Some(&format!("t{i}")),
                true,
            ));
        }
        many.settle(&key(), Window::DEFAULT, t(200));
        let (head, _) = split(&key(), &many).unwrap();
        let listed = read_head(&key(), &head.body, 1)
            .unwrap()
            .awaiting()
            .unwrap();
        let latest: Vec<_> = (24..40).rev().map(|i| tag(&format!("t{i}"))).collect();
        assert_eq!(listed, latest);
    }

    /// Loads `g` as a store does when an event names no tag: the head, and the records it
    /// lists (waiting, copied last, holding a copy a restore took).
    fn load_as_a_store_would(g: &TrackedGroup) -> TrackedGroup {
        let (head, records) = split(&key(), g).unwrap();
        let head = read_head(&key(), &head.body, 1).unwrap();
        let listed: BTreeSet<Option<ImageTag>> = head.awaiting().unwrap().into_iter().collect();
        let read: Vec<_> = records
            .into_iter()
            .filter(|(t, _)| listed.contains(t))
            .map(|(t, i)| (t, i.body))
            .collect();
        assemble(&key(), Some(head), &read).unwrap().0
    }

    fn restore_verdict(g: &TrackedGroup, now: Timestamp) -> Option<(Status, Option<Timestamp>)> {
        g.verdicts(Window::DEFAULT, now)
            .iter()
            .find(|(e, _)| e.is_restore())
            .map(|(_, v)| (v.status, v.replicated_at))
    }

    /// `n` tags pushed at `from` seconds and copied one second apart after it.
    fn copied_tags(g: &mut TrackedGroup, n: i64, from: i64) {
        for i in 0..n {
            let name = format!("later-{i}");
            g.group.add_push(tag(&name), t(from));
            g.group
                .add_copy(copy(&format!("c-{name}"), from + 1 + i, Some(&name), true));
        }
    }

    #[test]
    fn a_restores_copy_keeps_its_claim_and_its_push_on_a_partial_load() {
        // Restored at 1000; a push by digest at 1005 whose copy never comes; v1 pushed at 1010
        // and copied at 1020 (the restore's copy too); then more tags than RECENT_CAP copied.
        // The copy is v1's: on a load that names no tag, the push by digest must not take it.
        let mut g = TrackedGroup::default();
        g.group.add_restore(t(1000));
        g.group.add_push(None, t(1005));
        g.group.add_push(tag("v1"), t(1010));
        g.group.add_copy(copy("c-v1", 1020, Some("v1"), true));
        copied_tags(&mut g, RECENT_CAP as i64 + 3, 1100);
        g.settle(&key(), Window::DEFAULT, t(1400));
        let now = t(1000 + 1900);
        let partial = load_as_a_store_would(&g);
        assert_eq!(
            partial.unloaded, 3,
            "the three tags copied first after v1 were not read"
        );
        let by_digest = |g: &TrackedGroup| {
            g.verdicts(Window::DEFAULT, now)
                .iter()
                .find(|(e, _)| e.tag.is_none() && !e.is_restore())
                .map(|(_, v)| v.status)
        };
        // Past its window, unconfirmed: pending until ECR says it is absent; never replicated.
        assert_eq!(by_digest(&g), Some(Status::Pending));
        assert_eq!(
            by_digest(&partial),
            by_digest(&g),
            "the push by digest has no copy"
        );
        assert_eq!(restore_verdict(&partial, now), restore_verdict(&g, now));
        assert_eq!(
            restore_verdict(&g, now),
            Some((Status::Replicated, Some(t(1020))))
        );
    }

    #[test]
    fn a_restore_keeps_its_first_copy_however_many_copies_come_after() {
        // v1 pushed and copied long ago; archived, restored at 5000; the copy the restore brings
        // (5030) carries v1; then 70 more tags are copied. The restore is replicated at 5030 on
        // any load, not late by the copy of a later tag.
        let mut g = TrackedGroup::default();
        g.group.add_push(tag("v1"), t(0));
        g.group.add_copy(copy("first", 20, Some("v1"), true));
        g.group.add_restore(t(5000));
        g.group.add_copy(copy("restored", 5030, Some("v1"), true));
        copied_tags(&mut g, 70, 9000);
        g.settle(&key(), Window::DEFAULT, t(9500));
        let now = t(9500);
        let expected = Some((Status::Replicated, Some(t(5030))));
        assert_eq!(restore_verdict(&g, now), expected);
        assert_eq!(restore_verdict(&load_as_a_store_would(&g), now), expected);
        let (head, _) = split(&key(), &g).unwrap();
        let (_, alone) = head_alone(&head.pk, &head.body).unwrap().unwrap();
        assert_eq!(restore_verdict(&alone, now), expected, "what audit reads");
        assert_eq!(alone.group.copies().len(), 1, "the restore's copy alone");
    }
}
