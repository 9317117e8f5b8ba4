//! Inventory reconciliation, pure: given what ECR lists in a source repository and in each
//! destination its rules name, which images the rules promise are absent, stale, archived or not
//! deleted there right now, and which repository settings differ. Events only say what happened
//! while the auditor listened; this compares the registries as they are.
//!
//! - **What is expected.** ECR replicates only what is pushed after a rule exists, once per push,
//!   to the destinations of the push Region's own rules ([`super::config`]). A source image is
//!   expected in a destination when it was pushed at or after `since` (the caller's statement of
//!   when the rules took effect: ECR keeps no date for a rule) and more than one replication
//!   window before `now` (younger ones may still be in flight). Images without a push time are
//!   expected.
//! - **Findings** per (source, destination, repository): `missing` (an expected digest absent
//!   from the destination), `stale_tag` (a source tag whose destination digest differs, or that
//!   the copy does not carry), `archived` (a copy that cannot be pulled while the source's can),
//!   `not_deleted` (with delete replication on: a digest or tag still at the destination that no
//!   audited source has), `settings` (tag mutability, scan on push, encryption, lifecycle and
//!   repository policies, and lifecycle rules that would expire or archive copies nobody pulls).
//! - **Several sources into one destination.** What another audited source replicating the same
//!   repository to the same destination shows is not drift (its tag, its digests).
//! - **The Lambda's pass** ([`InventoryPass`]) keeps where a reconciliation that spans several
//!   invocations stopped, and its running totals, which become the gauges ([`gauges`]).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;

use serde::Serialize;
use serde_json::{Value, json};

use super::config::{Destination, ReplicationConfig, Rule};
use super::ids::{AccountId, ImageDigest, ImageTag, Region, RepositoryName};
use super::metrics::{Dimensions, MetricName, Sample};
use super::time::{Timestamp, Window};

// ---------------------------------------------------------------------------------------------
// What ECR lists
// ---------------------------------------------------------------------------------------------

/// `imageStatus` in DescribeImages: whether an image can be pulled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ImageState {
    Active,
    /// In the archive storage class: it still exists, and cannot be pulled.
    Archived,
    /// Being restored from the archive (ECR says this can take up to 20 minutes).
    Activating,
    /// A value ECR added after this code was written.
    Other(String),
}

impl ImageState {
    /// The state from the API's `imageStatus`. An image listed without one is active: the field
    /// came with archiving, and a registry that has never archived (or moto) does not send it.
    pub fn from_api(value: Option<&str>) -> ImageState {
        match value {
            None | Some("ACTIVE") => ImageState::Active,
            Some("ARCHIVED") => ImageState::Archived,
            Some("ACTIVATING") => ImageState::Activating,
            Some(other) => ImageState::Other(other.to_owned()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            ImageState::Active => "ACTIVE",
            ImageState::Archived => "ARCHIVED",
            ImageState::Activating => "ACTIVATING",
            ImageState::Other(s) => s,
        }
    }

    /// Whether a pull works now. An unknown state is given the benefit of the doubt: flagging
    /// every copy the day ECR adds a state would page for nothing.
    pub fn pullable(&self) -> bool {
        !matches!(self, ImageState::Archived | ImageState::Activating)
    }
}

/// One image as DescribeImages lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageRecord {
    pub digest: ImageDigest,
    /// Every tag on it, sorted; empty for an untagged image.
    pub tags: Vec<ImageTag>,
    /// `imagePushedAt`: when it was pushed (or replicated) to this repository.
    pub pushed_at: Option<Timestamp>,
    pub state: ImageState,
}

/// A repository's settings as DescribeRepositories shows them. ECR does not replicate them: a
/// repository that replication creates has the defaults unless a creation template applies.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RepositorySettings {
    /// `imageTagMutability`: `MUTABLE`, `IMMUTABLE`, and the `_WITH_EXCLUSION` variants.
    pub tag_mutability: Option<String>,
    pub scan_on_push: Option<bool>,
    /// `AES256`, `KMS`, `KMS_DSSE`.
    pub encryption_type: Option<String>,
    /// The KMS key's ARN, when KMS encrypts the repository.
    pub kms_key: Option<String>,
}

/// A repository as DescribeRepositories lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RepositoryListing {
    pub name: RepositoryName,
    pub settings: RepositorySettings,
}

/// Everything read about one repository in one registry.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RepositoryContents {
    pub settings: RepositorySettings,
    pub images: Vec<ImageRecord>,
    /// The lifecycle policy's text (GetLifecyclePolicy), if it has one.
    pub lifecycle_policy: Option<String>,
    /// The repository policy's text (GetRepositoryPolicy), if it has one.
    pub repository_policy: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// What the rules promise
// ---------------------------------------------------------------------------------------------

/// A destination the rules name for a repository, and whether deletes are replicated to it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub destination: Destination,
    /// Some rule that names this destination for the repository replicates deletes.
    pub delete_replication: bool,
}

/// Whether `rule` replicates deletes (`deleteReplication.enabled`, read from DescribeRegistry's
/// raw answer, which aws-sdk-ecr does not model yet): then what the source no longer has must be
/// gone from the destinations too (`not_deleted`).
pub fn replicates_deletes(rule: &Rule) -> bool {
    rule.delete_replication
}

/// The destinations `config`'s rules name for `repository` (the union over the rules whose
/// `PREFIX_MATCH` filters cover it, as ECR applies them), without the registry's own Region,
/// each once, with delete replication on when any of those rules replicates deletes to it.
pub fn targets(config: &ReplicationConfig, repository: &RepositoryName) -> Vec<Target> {
    let mut out: Vec<Target> = Vec::new();
    for rule in config.rules.iter().filter(|r| r.covers(repository)) {
        for d in &rule.destinations {
            if d.account == config.registry && d.region == config.region {
                continue;
            }
            let deletes = replicates_deletes(rule);
            match out.iter_mut().find(|t| t.destination == *d) {
                Some(t) => t.delete_replication |= deletes,
                None => out.push(Target {
                    destination: d.clone(),
                    delete_replication: deletes,
                }),
            }
        }
    }
    out
}

/// When images are judged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Scope {
    pub now: Timestamp,
    /// How long a copy may take: an image pushed less than this before `now` may be in flight.
    pub window: Window,
    /// Images pushed before this are not expected (ECR replicates only what is pushed after a
    /// rule exists, and keeps no date for a rule: the caller says when the rules took effect).
    pub since: Option<Timestamp>,
}

/// Whether a source image is owed to its destinations now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Due {
    Expected,
    /// Pushed before `since`.
    BeforeSince,
    /// Pushed less than a window ago.
    InFlight,
}

impl Scope {
    pub fn due(&self, pushed_at: Option<Timestamp>) -> Due {
        let Some(at) = pushed_at else {
            return Due::Expected;
        };
        if self.since.is_some_and(|since| at < since) {
            Due::BeforeSince
        } else if self.now.since(at) < self.window.millis() {
            Due::InFlight
        } else {
            Due::Expected
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Findings
// ---------------------------------------------------------------------------------------------

/// A source registry and Region, and one destination of its rules.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PairKey {
    pub source_account: AccountId,
    pub source_region: Region,
    pub destination: Destination,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FindingKind {
    Missing,
    StaleTag,
    Archived,
    NotDeleted,
    Settings,
}

impl FindingKind {
    pub const ALL: [FindingKind; 5] = [
        FindingKind::Missing,
        FindingKind::StaleTag,
        FindingKind::Archived,
        FindingKind::NotDeleted,
        FindingKind::Settings,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FindingKind::Missing => "missing",
            FindingKind::StaleTag => "stale_tag",
            FindingKind::Archived => "archived",
            FindingKind::NotDeleted => "not_deleted",
            FindingKind::Settings => "settings",
        }
    }

    /// The gauge the Lambda publishes for this kind, per destination.
    pub fn gauge(self) -> MetricName {
        match self {
            FindingKind::Missing => MetricName::ImagesMissingAtDestination,
            FindingKind::StaleTag => MetricName::StaleTagsAtDestination,
            FindingKind::Archived => MetricName::ArchivedCopies,
            FindingKind::NotDeleted => MetricName::NotDeletedAtDestination,
            FindingKind::Settings => MetricName::RepositorySettingsDrift,
        }
    }
}

/// A repository setting compared between a source and a destination.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Setting {
    TagMutability,
    ScanOnPush,
    EncryptionType,
    KmsKey,
    LifecyclePolicy,
    RepositoryPolicy,
    /// One rule of the destination's lifecycle policy that would expire or archive copies
    /// nobody pulls there (a warning, counted with the settings).
    LifecycleRule,
}

impl Setting {
    pub fn as_str(self) -> &'static str {
        match self {
            Setting::TagMutability => "tag_mutability",
            Setting::ScanOnPush => "scan_on_push",
            Setting::EncryptionType => "encryption_type",
            Setting::KmsKey => "kms_key",
            Setting::LifecyclePolicy => "lifecycle_policy",
            Setting::RepositoryPolicy => "repository_policy",
            Setting::LifecycleRule => "lifecycle_rule",
        }
    }
}

/// One thing that is not where the rules say. Every field is always present in the JSON
/// (`null` where it does not apply), so a consumer reads one shape.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub kind: FindingKind,
    pub source_account: AccountId,
    pub source_region: Region,
    pub repository: RepositoryName,
    pub destination_account: AccountId,
    pub destination_region: Region,
    /// The image: at the source for `missing`, `stale_tag`, `archived`; at the destination for
    /// `not_deleted`.
    pub image_digest: Option<ImageDigest>,
    /// The tag in question (`stale_tag`, a tag `not_deleted`), or for an image finding the
    /// first of its tags.
    pub image_tag: Option<ImageTag>,
    /// Every tag of the image (at the source; at the destination for `not_deleted`).
    pub image_tags: Vec<ImageTag>,
    /// Where the tag points at the destination (`stale_tag`; `null` when the tag is absent
    /// there).
    pub destination_digest: Option<ImageDigest>,
    /// `imagePushedAt` at the source.
    pub pushed_at: Option<Timestamp>,
    /// `imagePushedAt` at the destination (of `destination_digest`, or of the copy).
    pub destination_pushed_at: Option<Timestamp>,
    pub setting: Option<Setting>,
    pub source_value: Option<String>,
    pub destination_value: Option<String>,
    /// What a person should know to read it.
    pub note: Option<String>,
}

impl Finding {
    fn new(kind: FindingKind, pair: &PairKey, repository: &RepositoryName) -> Finding {
        Finding {
            kind,
            source_account: pair.source_account,
            source_region: pair.source_region.clone(),
            repository: repository.clone(),
            destination_account: pair.destination.account,
            destination_region: pair.destination.region.clone(),
            image_digest: None,
            image_tag: None,
            image_tags: Vec::new(),
            destination_digest: None,
            pushed_at: None,
            destination_pushed_at: None,
            setting: None,
            source_value: None,
            destination_value: None,
            note: None,
        }
    }

    fn of_image(mut self, image: &ImageRecord) -> Finding {
        self.image_digest = Some(image.digest.clone());
        self.image_tag = image.tags.first().cloned();
        self.image_tags = image.tags.clone();
        self.pushed_at = image.pushed_at;
        self
    }

    /// The pair this finding belongs to.
    pub fn pair(&self) -> PairKey {
        PairKey {
            source_account: self.source_account,
            source_region: self.source_region.clone(),
            destination: Destination {
                account: self.destination_account,
                region: self.destination_region.clone(),
            },
        }
    }

    /// The order reports list findings in: by kind (missing first), then where, then what.
    fn order(&self) -> impl Ord + '_ {
        (
            self.kind,
            self.pair(),
            &self.repository,
            self.setting,
            &self.image_tag,
            &self.image_digest,
        )
    }
}

/// Counts per (source, destination).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Tally {
    /// Repositories compared.
    pub repositories: u64,
    /// ...of which the destination does not have.
    pub repositories_absent: u64,
    /// Source images read.
    pub images: u64,
    /// Source images owed to the destination now.
    pub expected: u64,
    /// ...and there.
    pub present: u64,
    pub missing: u64,
    pub stale_tags: u64,
    pub archived: u64,
    pub not_deleted: u64,
    pub settings: u64,
    /// Source images pushed before `since`.
    pub not_expected: u64,
    /// Source images pushed less than a window ago.
    pub in_flight: u64,
}

impl Tally {
    pub fn add(&mut self, o: &Tally) {
        self.repositories += o.repositories;
        self.repositories_absent += o.repositories_absent;
        self.images += o.images;
        self.expected += o.expected;
        self.present += o.present;
        self.missing += o.missing;
        self.stale_tags += o.stale_tags;
        self.archived += o.archived;
        self.not_deleted += o.not_deleted;
        self.settings += o.settings;
        self.not_expected += o.not_expected;
        self.in_flight += o.in_flight;
    }

    /// The count of one kind of finding.
    pub fn count(&self, kind: FindingKind) -> u64 {
        match kind {
            FindingKind::Missing => self.missing,
            FindingKind::StaleTag => self.stale_tags,
            FindingKind::Archived => self.archived,
            FindingKind::NotDeleted => self.not_deleted,
            FindingKind::Settings => self.settings,
        }
    }

    fn count_mut(&mut self, kind: FindingKind) -> &mut u64 {
        match kind {
            FindingKind::Missing => &mut self.missing,
            FindingKind::StaleTag => &mut self.stale_tags,
            FindingKind::Archived => &mut self.archived,
            FindingKind::NotDeleted => &mut self.not_deleted,
            FindingKind::Settings => &mut self.settings,
        }
    }

    /// Every finding counted.
    pub fn drift(&self) -> u64 {
        FindingKind::ALL.iter().map(|&k| self.count(k)).sum()
    }

    const FIELDS: [&'static str; 12] = [
        "repositories",
        "repositories_absent",
        "images",
        "expected",
        "present",
        "missing",
        "stale_tags",
        "archived",
        "not_deleted",
        "settings",
        "not_expected",
        "in_flight",
    ];

    fn fields(&self) -> [u64; 12] {
        [
            self.repositories,
            self.repositories_absent,
            self.images,
            self.expected,
            self.present,
            self.missing,
            self.stale_tags,
            self.archived,
            self.not_deleted,
            self.settings,
            self.not_expected,
            self.in_flight,
        ]
    }

    fn from_fields(v: [u64; 12]) -> Tally {
        Tally {
            repositories: v[0],
            repositories_absent: v[1],
            images: v[2],
            expected: v[3],
            present: v[4],
            missing: v[5],
            stale_tags: v[6],
            archived: v[7],
            not_deleted: v[8],
            settings: v[9],
            not_expected: v[10],
            in_flight: v[11],
        }
    }
}

/// What comparing one repository of one source with one destination found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Comparison {
    pub findings: Vec<Finding>,
    pub tally: Tally,
}

/// One repository of one source, held against one destination.
pub struct Pair<'a> {
    pub key: &'a PairKey,
    pub repository: &'a RepositoryName,
    pub delete_replication: bool,
    pub source: &'a RepositoryContents,
    /// `None`: the destination has no such repository.
    pub destination: Option<&'a RepositoryContents>,
    /// The same repository in the other audited sources whose rules also name this
    /// destination: what they show there is not drift.
    pub others: &'a [&'a RepositoryContents],
}

/// Compares one repository of a source with one destination (see the module's documentation).
pub fn compare(pair: &Pair<'_>, scope: &Scope) -> Comparison {
    let mut out = Comparison::default();
    let source = pair.source;
    out.tally.repositories = 1;
    out.tally.images = source.images.len() as u64;
    let empty = RepositoryContents::default();
    let destination = pair.destination.unwrap_or(&empty);
    if pair.destination.is_none() {
        out.tally.repositories_absent = 1;
    }
    let index = Indexes {
        there: destination.images.iter().map(|i| (&i.digest, i)).collect(),
        tags_there: tag_index(&destination.images),
        tags_here: tag_index(&source.images),
        others_tags: pair.others.iter().map(|o| tag_index(&o.images)).collect(),
    };
    images_pass(pair, scope, &index, &mut out);
    tags_pass(pair, scope, &index, &mut out);
    if pair.delete_replication
        && let Some(destination) = pair.destination
    {
        images_not_deleted(pair, scope, destination, &mut out);
        tags_not_deleted(pair, &index, &mut out);
    }
    if let Some(destination) = pair.destination {
        for d in settings_drift(source, destination) {
            let mut f = pair.finding(FindingKind::Settings);
            f.setting = Some(d.setting);
            f.source_value = d.source;
            f.destination_value = d.destination;
            f.note = d.note;
            out.push(f);
        }
    }
    out
}

impl Comparison {
    /// Keeps a finding and counts it in the tally.
    fn push(&mut self, finding: Finding) {
        *self.tally.count_mut(finding.kind) += 1;
        self.findings.push(finding);
    }
}

impl Pair<'_> {
    /// A finding of `kind` in this pair's repository, to be filled in.
    fn finding(&self, kind: FindingKind) -> Finding {
        Finding::new(kind, self.key, self.repository)
    }
}

/// The images of a comparison by digest and by tag, built once for all its passes.
struct Indexes<'a> {
    /// The destination's images by digest.
    there: HashMap<&'a ImageDigest, &'a ImageRecord>,
    /// The destination's tags.
    tags_there: HashMap<&'a ImageTag, &'a ImageRecord>,
    /// The source's tags.
    tags_here: HashMap<&'a ImageTag, &'a ImageRecord>,
    /// The tags of each other audited source replicating the repository to the destination.
    others_tags: Vec<HashMap<&'a ImageTag, &'a ImageRecord>>,
}

/// The images pass: counts each source image by whether it is owed now, and finds those owed
/// that are missing at the destination or archived there while pullable at the source.
fn images_pass(pair: &Pair<'_>, scope: &Scope, index: &Indexes<'_>, out: &mut Comparison) {
    for image in &pair.source.images {
        match scope.due(image.pushed_at) {
            Due::BeforeSince => {
                out.tally.not_expected += 1;
                continue;
            }
            Due::InFlight => {
                out.tally.in_flight += 1;
                continue;
            }
            Due::Expected => out.tally.expected += 1,
        }
        match index.there.get(&image.digest) {
            None => out.push(pair.finding(FindingKind::Missing).of_image(image)),
            Some(copy) => {
                out.tally.present += 1;
                if image.state.pullable() && !copy.state.pullable() {
                    let mut f = pair.finding(FindingKind::Archived).of_image(image);
                    f.destination_pushed_at = copy.pushed_at;
                    f.source_value = Some(image.state.as_str().to_owned());
                    f.destination_value = Some(copy.state.as_str().to_owned());
                    if copy.state == ImageState::Activating {
                        f.note = Some("being restored from the archive at the destination".into());
                    }
                    out.push(f);
                }
            }
        }
    }
}

/// The tags pass: finds each tag of an image owed now that names another image at the
/// destination, or that the copy does not carry, in tag order.
fn tags_pass(pair: &Pair<'_>, scope: &Scope, index: &Indexes<'_>, out: &mut Comparison) {
    let mut tags: Vec<(&&ImageTag, &&ImageRecord)> = index.tags_here.iter().collect();
    tags.sort_by_key(|(t, _)| **t);
    for (&tag, &image) in tags {
        if scope.due(image.pushed_at) != Due::Expected {
            continue;
        }
        let elsewhere = |digest: &ImageDigest| {
            index
                .others_tags
                .iter()
                .any(|o| o.get(tag).is_some_and(|i| i.digest == *digest))
        };
        let finding = match index.tags_there.get(tag) {
            Some(d) if d.digest == image.digest => None,
            // Another source replicates the same tag here, and the destination shows its image.
            Some(d) if elsewhere(&d.digest) => None,
            Some(d) => {
                let mut f = pair.finding(FindingKind::StaleTag).of_image(image);
                f.image_tag = Some(tag.clone());
                f.destination_digest = Some(d.digest.clone());
                f.destination_pushed_at = d.pushed_at;
                Some(f)
            }
            // The copy is there without this tag (immutable tags, or a tag deleted by hand).
            None if index.there.contains_key(&image.digest) => {
                let mut f = pair.finding(FindingKind::StaleTag).of_image(image);
                f.image_tag = Some(tag.clone());
                f.destination_pushed_at = index.there[&image.digest].pushed_at;
                f.note = Some("the tag is absent at the destination; its image is there".into());
                Some(f)
            }
            // The image is missing: that finding says it.
            None => None,
        };
        if let Some(f) = finding {
            out.push(f);
        }
    }
}

/// With delete replication: finds the images at the destination that no audited source has,
/// in the destination's order.
fn images_not_deleted(
    pair: &Pair<'_>,
    scope: &Scope,
    destination: &RepositoryContents,
    out: &mut Comparison,
) {
    let at_sources: HashSet<&ImageDigest> = pair
        .source
        .images
        .iter()
        .chain(pair.others.iter().flat_map(|o| &o.images))
        .map(|i| &i.digest)
        .collect();
    for copy in &destination.images {
        // A copy that landed before `since` came before the rules the caller vouches for.
        if scope
            .since
            .is_some_and(|since| copy.pushed_at.is_some_and(|at| at < since))
        {
            continue;
        }
        if !at_sources.contains(&copy.digest) {
            let mut f = pair.finding(FindingKind::NotDeleted);
            f.image_digest = Some(copy.digest.clone());
            f.image_tag = copy.tags.first().cloned();
            f.image_tags = copy.tags.clone();
            f.destination_pushed_at = copy.pushed_at;
            f.note = Some("the image is at the destination and at no audited source".into());
            out.push(f);
        }
    }
}

/// With delete replication: finds the tags at the destination, on an image the source has,
/// that no audited source has, in tag order.
fn tags_not_deleted(pair: &Pair<'_>, index: &Indexes<'_>, out: &mut Comparison) {
    let mut tags: Vec<(&&ImageTag, &&ImageRecord)> = index.tags_there.iter().collect();
    tags.sort_by_key(|(t, _)| **t);
    for (&tag, &copy) in tags {
        let image_here = pair.source.images.iter().any(|i| i.digest == copy.digest);
        let tag_known = index.tags_here.contains_key(tag)
            || index.others_tags.iter().any(|o| o.contains_key(tag));
        if image_here && !tag_known {
            let mut f = pair.finding(FindingKind::NotDeleted);
            f.image_digest = Some(copy.digest.clone());
            f.image_tag = Some(tag.clone());
            f.image_tags = copy.tags.clone();
            f.destination_pushed_at = copy.pushed_at;
            f.note = Some("the tag is at the destination and at no audited source".into());
            out.push(f);
        }
    }
}

/// Each tag and the image it names.
fn tag_index(images: &[ImageRecord]) -> HashMap<&ImageTag, &ImageRecord> {
    images
        .iter()
        .flat_map(|i| i.tags.iter().map(move |t| (t, i)))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Repository settings
// ---------------------------------------------------------------------------------------------

/// One setting that differs, with both values as a person reads them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SettingDrift {
    pub setting: Setting,
    pub source: Option<String>,
    pub destination: Option<String>,
    pub note: Option<String>,
}

/// Every setting of `destination` that differs from `source`'s, then every rule of the
/// destination's lifecycle policy that would expire or archive copies nobody pulls there.
pub fn settings_drift(
    source: &RepositoryContents,
    destination: &RepositoryContents,
) -> Vec<SettingDrift> {
    let (s, d) = (&source.settings, &destination.settings);
    let mut out = Vec::new();
    let mut differ = |setting, a: Option<String>, b: Option<String>, note: Option<&str>| {
        if a != b {
            out.push(SettingDrift {
                setting,
                source: a,
                destination: b,
                note: note.map(str::to_owned),
            });
        }
    };
    differ(
        Setting::TagMutability,
        s.tag_mutability.clone(),
        d.tag_mutability.clone(),
        None,
    );
    differ(
        Setting::ScanOnPush,
        s.scan_on_push.map(|b| b.to_string()),
        d.scan_on_push.map(|b| b.to_string()),
        None,
    );
    differ(
        Setting::EncryptionType,
        s.encryption_type.clone(),
        d.encryption_type.clone(),
        None,
    );
    if s.kms_key.as_deref().map(key_id) != d.kms_key.as_deref().map(key_id) {
        out.push(SettingDrift {
            setting: Setting::KmsKey,
            source: s.kms_key.clone(),
            destination: d.kms_key.clone(),
            note: Some(
                "compared by key id: a single-Region key is another key in every Region; a \
                 multi-Region key (mrk-...) keeps its id"
                    .into(),
            ),
        });
    }
    let policy = |text: &Option<String>| text.as_deref().map(canonical_json);
    let (sl, dl) = (
        policy(&source.lifecycle_policy),
        policy(&destination.lifecycle_policy),
    );
    if sl != dl {
        out.push(SettingDrift {
            setting: Setting::LifecyclePolicy,
            source: sl,
            destination: dl,
            note: None,
        });
    }
    let (sr, dr) = (
        policy(&source.repository_policy),
        policy(&destination.repository_policy),
    );
    if sr != dr {
        out.push(SettingDrift {
            setting: Setting::RepositoryPolicy,
            source: sr,
            destination: dr,
            note: None,
        });
    }
    out.extend(lifecycle_warnings(
        source.lifecycle_policy.as_deref(),
        destination.lifecycle_policy.as_deref(),
    ));
    out
}

/// The key id of a KMS key ARN (`arn:aws:kms:REGION:ACCOUNT:key/ID` -> `ID`), or the value.
fn key_id(key: &str) -> &str {
    key.rsplit_once("key/").map_or(key, |(_, id)| id)
}

/// A policy's text with its JSON normalised (keys sorted, no spacing), so that formatting and
/// key order are not drift; text that is not JSON is kept as it is.
pub fn canonical_json(text: &str) -> String {
    serde_json::from_str::<Value>(text)
        .ok()
        .and_then(|v| serde_json::to_string(&sorted(v)).ok())
        .unwrap_or_else(|| text.trim().to_owned())
}

/// `value` with every object's keys in order. (serde_json keeps insertion order when a crate in
/// the build turns on its `preserve_order` feature, so sorting cannot be left to its map.)
fn sorted(value: Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(String, Value)> = map.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            Value::Object(entries.into_iter().map(|(k, v)| (k, sorted(v))).collect())
        }
        Value::Array(items) => Value::Array(items.into_iter().map(sorted).collect()),
        other => other,
    }
}

/// The lifecycle rules of the destination that would expire or archive (transition) copies
/// nobody pulls there:
/// - a `sinceImagePulled` rule: a standby Region pulls nothing, so its copies age out there
///   while the source's, pulled every day, stay, even when the source has the same rule;
/// - an `imageCountMoreThan`, `sinceImagePushed` or `sinceImageTransitioned` rule the source
///   does not have (the same selection and action): the destination keeps less than the source.
///
/// A policy that is not JSON, or rules of a shape not understood, give no warning.
pub fn lifecycle_warnings(source: Option<&str>, destination: Option<&str>) -> Vec<SettingDrift> {
    let rules = |text: Option<&str>| -> Vec<Value> {
        text.and_then(|t| serde_json::from_str::<Value>(t).ok())
            .and_then(|v| v.get("rules").and_then(Value::as_array).cloned())
            .unwrap_or_default()
    };
    // A rule's effect, without its priority and description.
    let shape = |rule: &Value| {
        sorted(json!({"selection": rule.get("selection"), "action": rule.get("action")}))
            .to_string()
    };
    let at_source: BTreeSet<String> = rules(source).iter().map(shape).collect();
    let mut out = Vec::new();
    for rule in rules(destination) {
        let action = rule
            .pointer("/action/type")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let verb = match action {
            "expire" => "expires",
            "transition" => "archives",
            _ => continue,
        };
        let count_type = rule
            .pointer("/selection/countType")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let why = match count_type {
            "sinceImagePulled" => format!(
                "{verb} images not pulled for a while: nothing pulls copies in a standby \
                 destination, so they go there while the source keeps its own"
            ),
            "imageCountMoreThan" | "sinceImagePushed" | "sinceImageTransitioned"
                if !at_source.contains(&shape(&rule)) =>
            {
                format!(
                    "{verb} images by {count_type} where the source has no such rule: the \
                     destination keeps fewer copies than the source"
                )
            }
            _ => continue,
        };
        out.push(SettingDrift {
            setting: Setting::LifecycleRule,
            source: None,
            destination: Some(sorted(rule).to_string()),
            note: Some(why),
        });
    }
    out
}

// ---------------------------------------------------------------------------------------------
// A whole reconciliation
// ---------------------------------------------------------------------------------------------

/// Requests made to ECR, per API (each page counts; the SDK's own retries do not).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Calls {
    #[serde(rename = "DescribeRegistry")]
    pub describe_registry: u64,
    #[serde(rename = "DescribeRepositories")]
    pub describe_repositories: u64,
    #[serde(rename = "DescribeImages")]
    pub describe_images: u64,
    #[serde(rename = "GetLifecyclePolicy")]
    pub get_lifecycle_policy: u64,
    #[serde(rename = "GetRepositoryPolicy")]
    pub get_repository_policy: u64,
}

impl Calls {
    pub fn add(&mut self, o: &Calls) {
        self.describe_registry += o.describe_registry;
        self.describe_repositories += o.describe_repositories;
        self.describe_images += o.describe_images;
        self.get_lifecycle_policy += o.get_lifecycle_policy;
        self.get_repository_policy += o.get_repository_policy;
    }

    pub fn total(&self) -> u64 {
        self.describe_registry
            + self.describe_repositories
            + self.describe_images
            + self.get_lifecycle_policy
            + self.get_repository_policy
    }

    /// `(API name, count)`, in a fixed order.
    pub fn each(&self) -> [(&'static str, u64); 5] {
        [
            ("DescribeRegistry", self.describe_registry),
            ("DescribeRepositories", self.describe_repositories),
            ("DescribeImages", self.describe_images),
            ("GetLifecyclePolicy", self.get_lifecycle_policy),
            ("GetRepositoryPolicy", self.get_repository_policy),
        ]
    }
}

/// The `drift` command's report: counts per (source, destination), every finding, the calls.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DriftReport {
    pub scope: Scope,
    /// The source registries and Regions read.
    pub sources: Vec<(AccountId, Region)>,
    pub pairs: BTreeMap<PairKey, Tally>,
    /// In [`DriftReport::finish`]'s order once finished.
    pub findings: Vec<Finding>,
    pub calls: Calls,
}

impl DriftReport {
    pub fn new(scope: Scope, sources: Vec<(AccountId, Region)>) -> DriftReport {
        DriftReport {
            scope,
            sources,
            pairs: BTreeMap::new(),
            findings: Vec::new(),
            calls: Calls::default(),
        }
    }

    /// Makes `pair` appear in the report even when it has no repository to compare.
    pub fn expect_pair(&mut self, pair: PairKey) {
        self.pairs.entry(pair).or_default();
    }

    pub fn add(&mut self, pair: &PairKey, comparison: Comparison) {
        self.pairs
            .entry(pair.clone())
            .or_default()
            .add(&comparison.tally);
        self.findings.extend(comparison.findings);
    }

    /// Sorts the findings: by kind (missing first), source and destination, repository, then
    /// the setting, tag and digest.
    pub fn finish(&mut self) {
        self.findings.sort_by(|a, b| a.order().cmp(&b.order()));
    }

    pub fn has_drift(&self) -> bool {
        !self.findings.is_empty()
    }

    /// Counts of every pair added up.
    pub fn total(&self) -> Tally {
        let mut t = Tally::default();
        for tally in self.pairs.values() {
            t.add(tally);
        }
        t
    }
}

/// Where a `drift` run is, for its progress line.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    /// Listing the sources' images (the total of images is not known before that ends), or
    /// comparing.
    pub reading_sources: bool,
    pub repositories_done: u64,
    pub repositories_total: u64,
    pub images_done: u64,
    /// Known once every source repository is listed.
    pub images_total: Option<u64>,
    /// Requests made so far.
    pub calls: u64,
}

// ---------------------------------------------------------------------------------------------
// The Lambda's pass over the inventory, across invocations
// ---------------------------------------------------------------------------------------------

/// A reconciliation run by the Lambda's schedule, which may take several invocations: where it
/// stopped, and its running totals. Repositories are compared in name order; `after` is the last
/// one done.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InventoryPass {
    pub started_at: Timestamp,
    /// Set when every repository was compared (the gauges were published then).
    pub finished_at: Option<Timestamp>,
    /// The last repository compared (in name order); `None` before the first.
    pub after: Option<RepositoryName>,
    /// An invocation working on the pass holds it until then; another one leaves it alone.
    pub lease_until: Option<Timestamp>,
    pub totals: BTreeMap<PairKey, Tally>,
    /// Invocations that worked on it.
    pub invocations: u32,
    /// Pushes found in the inventory that the history had never seen, audited from it.
    pub lost_pushes: u64,
}

/// What an inventory request does with the pass it finds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PassStep {
    /// Start a new pass.
    Start,
    /// Carry on with the unfinished one.
    Resume,
    /// Another invocation holds it until then.
    Busy(Timestamp),
    /// Nothing to do: no pass is unfinished, and this request may not start one.
    Idle,
}

impl InventoryPass {
    pub fn new(now: Timestamp) -> InventoryPass {
        InventoryPass {
            started_at: now,
            finished_at: None,
            after: None,
            lease_until: None,
            totals: BTreeMap::new(),
            invocations: 0,
            lost_pushes: 0,
        }
    }

    /// What to do with `pass` (the stored one, if any) at `now`; `may_start`: the request is the
    /// schedule's, not a resume-only one.
    pub fn step(pass: Option<&InventoryPass>, now: Timestamp, may_start: bool) -> PassStep {
        match pass {
            Some(p) if p.finished_at.is_none() => match p.lease_until {
                Some(until) if until > now => PassStep::Busy(until),
                _ => PassStep::Resume,
            },
            _ if may_start => PassStep::Start,
            _ => PassStep::Idle,
        }
    }

    /// The stored form: a JSON document (the store keeps it as text).
    pub fn to_json(&self) -> Value {
        let totals: Vec<Value> = self
            .totals
            .iter()
            .map(|(k, t)| {
                let counts: serde_json::Map<String, Value> = Tally::FIELDS
                    .iter()
                    .zip(t.fields())
                    .map(|(name, n)| ((*name).to_owned(), Value::from(n)))
                    .collect();
                json!({
                    "source_account": k.source_account.to_string(),
                    "source_region": k.source_region.as_str(),
                    "destination_account": k.destination.account.to_string(),
                    "destination_region": k.destination.region.as_str(),
                    "counts": counts,
                })
            })
            .collect();
        json!({
            "started_at": self.started_at.millis(),
            "finished_at": self.finished_at.map(Timestamp::millis),
            "after": self.after.as_ref().map(RepositoryName::as_str),
            "lease_until": self.lease_until.map(Timestamp::millis),
            "totals": totals,
            "invocations": self.invocations,
            "lost_pushes": self.lost_pushes,
        })
    }

    /// Reads [`InventoryPass::to_json`]'s document; the error names the field.
    pub fn from_json(doc: &Value) -> Result<InventoryPass, String> {
        let millis = |field: &str| -> Result<Option<Timestamp>, String> {
            match doc.get(field) {
                None | Some(Value::Null) => Ok(None),
                Some(v) => v
                    .as_i64()
                    .map(|ms| Some(Timestamp::from_millis(ms)))
                    .ok_or_else(|| format!("{field} is not a whole number")),
            }
        };
        let text = |v: &Value, field: &str| -> Result<String, String> {
            v.get(field)
                .and_then(Value::as_str)
                .map(str::to_owned)
                .ok_or_else(|| format!("{field} is not a string"))
        };
        let started_at = millis("started_at")?.ok_or("started_at is missing")?;
        let after = match doc.get("after") {
            None | Some(Value::Null) => None,
            Some(_) => Some(
                RepositoryName::parse(&text(doc, "after")?).map_err(|e| format!("after {e}"))?,
            ),
        };
        let mut totals = BTreeMap::new();
        for entry in doc
            .get("totals")
            .and_then(Value::as_array)
            .ok_or("totals is not a list")?
        {
            let key = PairKey {
                source_account: AccountId::parse(&text(entry, "source_account")?)
                    .map_err(|e| format!("source_account {e}"))?,
                source_region: Region::parse(&text(entry, "source_region")?)
                    .map_err(|e| format!("source_region {e}"))?,
                destination: Destination {
                    account: AccountId::parse(&text(entry, "destination_account")?)
                        .map_err(|e| format!("destination_account {e}"))?,
                    region: Region::parse(&text(entry, "destination_region")?)
                        .map_err(|e| format!("destination_region {e}"))?,
                },
            };
            let mut counts = [0u64; 12];
            for (slot, name) in counts.iter_mut().zip(Tally::FIELDS) {
                *slot = entry
                    .pointer(&format!("/counts/{name}"))
                    .and_then(Value::as_u64)
                    .unwrap_or(0);
            }
            totals.insert(key, Tally::from_fields(counts));
        }
        let number = |field: &str| doc.get(field).and_then(Value::as_u64).unwrap_or(0);
        Ok(InventoryPass {
            started_at,
            finished_at: millis("finished_at")?,
            after,
            lease_until: millis("lease_until")?,
            totals,
            invocations: u32::try_from(number("invocations")).unwrap_or(u32::MAX),
            lost_pushes: number("lost_pushes"),
        })
    }
}

/// The gauges of a finished pass, at `at`: per (source Region, destination) the count of each
/// kind of finding, zeros included (so an alarm returns to OK), or one zero per gauge without
/// dimensions when the rules name no destination at all.
pub fn gauges(totals: &BTreeMap<PairKey, Tally>, at: Timestamp) -> Vec<Sample> {
    let mut out = Vec::new();
    for kind in FindingKind::ALL {
        if totals.is_empty() {
            out.push(Sample {
                name: kind.gauge(),
                dimensions: None,
                value: 0.0,
                at,
            });
        }
        for (pair, tally) in totals {
            out.push(Sample {
                name: kind.gauge(),
                dimensions: Some(Dimensions {
                    source_region: pair.source_region.clone(),
                    destination_region: pair.destination.region.clone(),
                    destination_account: pair.destination.account,
                    repository: None,
                }),
                value: tally.count(kind) as f64,
                at,
            });
        }
    }
    out
}

impl fmt::Display for PairKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{} -> {}",
            self.source_account, self.source_region, self.destination
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo(s: &str) -> RepositoryName {
        RepositoryName::parse(s).unwrap()
    }
    fn digest(n: u8) -> ImageDigest {
        ImageDigest::parse(&format!("sha256:{n:064x}")).unwrap()
    }
    fn tag(s: &str) -> ImageTag {
        ImageTag::parse(s).unwrap()
    }
    fn at(secs: i64) -> Timestamp {
        Timestamp::from_millis(1_719_828_000_000 + secs * 1000)
    }
    fn image(n: u8, tags: &[&str], pushed: i64) -> ImageRecord {
        ImageRecord {
            digest: digest(n),
            tags: tags.iter().map(|t| tag(t)).collect(),
            pushed_at: Some(at(pushed)),
            state: ImageState::Active,
        }
    }
    fn contents(images: Vec<ImageRecord>) -> RepositoryContents {
        RepositoryContents {
            images,
            ..RepositoryContents::default()
        }
    }
    fn key() -> PairKey {
        PairKey {
            source_account: AccountId::parse("111122223333").unwrap(),
            source_region: Region::parse("us-west-2").unwrap(),
            destination: Destination {
                account: AccountId::parse("444455556666").unwrap(),
                region: Region::parse("eu-west-1").unwrap(),
            },
        }
    }
    /// An hour after the images of these tests, with the default window and no `since`.
    fn scope() -> Scope {
        Scope {
            now: at(3600),
            window: Window::DEFAULT,
            since: None,
        }
    }
    fn run(
        source: &RepositoryContents,
        destination: Option<&RepositoryContents>,
        deletes: bool,
        scope: &Scope,
    ) -> Comparison {
        let (key, repository) = (key(), repo("team/app"));
        compare(
            &Pair {
                key: &key,
                repository: &repository,
                delete_replication: deletes,
                source,
                destination,
                others: &[],
            },
            scope,
        )
    }
    fn kinds(c: &Comparison) -> Vec<(FindingKind, Option<String>)> {
        c.findings
            .iter()
            .map(|f| {
                let what = f
                    .setting
                    .map(|s| s.as_str().to_owned())
                    .or_else(|| f.image_tag.as_ref().map(|t| t.to_string()))
                    .or_else(|| f.image_digest.as_ref().map(|d| d.to_string()));
                (f.kind, what)
            })
            .collect()
    }

    #[test]
    fn a_destination_with_every_image_and_tag_and_the_same_settings_shows_no_drift() {
        let source = contents(vec![image(1, &["v1"], 0), image(2, &[], 10)]);
        let c = run(&source, Some(&source.clone()), true, &scope());
        assert_eq!(c.findings, vec![]);
        assert_eq!((c.tally.expected, c.tally.present), (2, 2));
    }

    #[test]
    fn an_image_absent_from_the_destination_is_missing_and_an_absent_repository_misses_all() {
        let source = contents(vec![image(1, &["latest", "v1"], 0), image(2, &[], 10)]);
        let destination = contents(vec![image(2, &[], 20)]);
        let c = run(&source, Some(&destination), false, &scope());
        assert_eq!(
            kinds(&c),
            vec![(FindingKind::Missing, Some("latest".into()))]
        );
        assert_eq!(c.findings[0].image_tags, vec![tag("latest"), tag("v1")]);
        assert_eq!(c.findings[0].pushed_at, Some(at(0)));
        let none = run(&source, None, false, &scope());
        assert_eq!(none.tally.missing, 2);
        assert_eq!(none.tally.repositories_absent, 1);
    }

    #[test]
    fn images_before_since_or_within_the_window_are_not_expected() {
        let source = contents(vec![image(1, &["old"], 0), image(2, &["new"], 3000)]);
        let scope = Scope {
            since: Some(at(100)),
            ..scope()
        };
        let c = run(&source, None, false, &scope);
        assert_eq!(c.findings, vec![]);
        assert_eq!(
            (c.tally.not_expected, c.tally.in_flight, c.tally.expected),
            (1, 1, 0)
        );
    }

    #[test]
    fn a_destination_tag_on_another_digest_is_stale_with_both_digests_and_push_times() {
        let source = contents(vec![image(1, &["v1"], 0)]);
        let destination = contents(vec![image(1, &[], 5), image(9, &["v1"], -500)]);
        let c = run(&source, Some(&destination), false, &scope());
        assert_eq!(kinds(&c), vec![(FindingKind::StaleTag, Some("v1".into()))]);
        let f = &c.findings[0];
        assert_eq!(f.image_digest, Some(digest(1)));
        assert_eq!(f.destination_digest, Some(digest(9)));
        assert_eq!(
            (f.pushed_at, f.destination_pushed_at),
            (Some(at(0)), Some(at(-500)))
        );
    }

    #[test]
    fn a_copy_without_its_tag_is_a_stale_tag_that_points_nowhere() {
        let source = contents(vec![image(1, &["v1"], 0)]);
        let destination = contents(vec![image(1, &[], 5)]);
        let c = run(&source, Some(&destination), false, &scope());
        assert_eq!(kinds(&c), vec![(FindingKind::StaleTag, Some("v1".into()))]);
        assert_eq!(c.findings[0].destination_digest, None);
    }

    #[test]
    fn a_tag_another_source_replicates_to_the_same_destination_is_not_stale() {
        let source = contents(vec![image(1, &["v1"], 0)]);
        let other = contents(vec![image(2, &["v1"], 30)]);
        let destination = contents(vec![image(1, &[], 5), image(2, &["v1"], 35)]);
        let (key, repository) = (key(), repo("team/app"));
        let c = compare(
            &Pair {
                key: &key,
                repository: &repository,
                delete_replication: true,
                source: &source,
                destination: Some(&destination),
                others: &[&other],
            },
            &scope(),
        );
        assert_eq!(c.findings, vec![]);
    }

    #[test]
    fn an_archived_copy_of_an_active_image_is_archived_and_one_archived_at_both_ends_is_not() {
        let source = contents(vec![image(1, &["v1"], 0), {
            let mut i = image(2, &["v2"], 0);
            i.state = ImageState::Archived;
            i
        }]);
        let mut destination = source.clone();
        destination.images[0].state = ImageState::Archived;
        let c = run(&source, Some(&destination), false, &scope());
        assert_eq!(kinds(&c), vec![(FindingKind::Archived, Some("v1".into()))]);
        assert_eq!(c.findings[0].destination_value.as_deref(), Some("ARCHIVED"));
        destination.images[0].state = ImageState::Activating;
        let restoring = run(&source, Some(&destination), false, &scope());
        assert_eq!(restoring.tally.archived, 1);
    }

    #[test]
    fn with_delete_replication_a_digest_or_tag_the_source_no_longer_has_is_not_deleted() {
        let source = contents(vec![image(1, &["v1"], 0)]);
        let destination = contents(vec![image(1, &["v1", "gone"], 5), image(7, &["old"], 3)]);
        let c = run(&source, Some(&destination), true, &scope());
        assert_eq!(
            kinds(&c),
            vec![
                (FindingKind::NotDeleted, Some("old".into())),
                (FindingKind::NotDeleted, Some("gone".into())),
            ]
        );
        assert_eq!(c.findings[0].image_digest, Some(digest(7)));
        assert_eq!(c.findings[1].image_digest, Some(digest(1)));
        // Without delete replication ECR keeps what the source deleted: not drift.
        assert_eq!(
            run(&source, Some(&destination), false, &scope()).findings,
            vec![]
        );
    }

    #[test]
    fn settings_that_differ_are_reported_with_both_values_and_json_formatting_is_not_drift() {
        let mut source = contents(vec![]);
        source.settings = RepositorySettings {
            tag_mutability: Some("MUTABLE".into()),
            scan_on_push: Some(true),
            encryption_type: Some("KMS".into()),
            kms_key: Some("arn:aws:kms:us-west-2:111122223333:key/mrk-1234".into()),
        };
        source.lifecycle_policy = Some(r#"{"rules": [], "x": 1}"#.into());
        source.repository_policy = Some(r#"{"Version":"2012-10-17"}"#.into());
        let mut destination = source.clone();
        destination.settings.kms_key =
            Some("arn:aws:kms:eu-west-1:444455556666:key/mrk-1234".into());
        destination.lifecycle_policy = Some("{ \"x\": 1,\n \"rules\": [] }".into());
        assert_eq!(
            run(&source, Some(&destination), false, &scope()).findings,
            vec![]
        );

        destination.settings.tag_mutability = Some("IMMUTABLE".into());
        destination.settings.scan_on_push = Some(false);
        destination.settings.encryption_type = Some("AES256".into());
        destination.settings.kms_key = None;
        destination.repository_policy = None;
        let c = run(&source, Some(&destination), false, &scope());
        let settings: Vec<_> = c.findings.iter().map(|f| f.setting.unwrap()).collect();
        assert_eq!(
            settings,
            vec![
                Setting::TagMutability,
                Setting::ScanOnPush,
                Setting::EncryptionType,
                Setting::KmsKey,
                Setting::RepositoryPolicy
            ]
        );
        assert_eq!(c.findings[0].source_value.as_deref(), Some("MUTABLE"));
        assert_eq!(
            c.findings[0].destination_value.as_deref(),
            Some("IMMUTABLE")
        );
        assert_eq!(c.findings[4].destination_value, None);
        assert_eq!(c.tally.settings, 5);
    }

    #[test]
    fn a_since_image_pulled_rule_at_the_destination_warns_even_when_the_source_has_it_too() {
        let pulled = r#"{"rules":[{"rulePriority":1,"selection":{"tagStatus":"any","countType":"sinceImagePulled","countUnit":"days","countNumber":30},"action":{"type":"transition","targetStorageClass":"archive"}}]}"#;
        let warnings = lifecycle_warnings(Some(pulled), Some(pulled));
        assert_eq!(warnings.len(), 1);
        assert_eq!(warnings[0].setting, Setting::LifecycleRule);
        assert!(
            warnings[0]
                .note
                .as_deref()
                .unwrap()
                .starts_with("archives images not pulled")
        );
    }

    #[test]
    fn a_count_or_age_rule_warns_only_when_the_source_lacks_it() {
        let count = r#"{"rules":[{"rulePriority":1,"description":"keep 10","selection":{"tagStatus":"any","countType":"imageCountMoreThan","countNumber":10},"action":{"type":"expire"}}]}"#;
        let same_other_priority = r#"{"rules":[{"rulePriority":5,"selection":{"tagStatus":"any","countType":"imageCountMoreThan","countNumber":10},"action":{"type":"expire"}}]}"#;
        assert_eq!(
            lifecycle_warnings(Some(same_other_priority), Some(count)),
            vec![]
        );
        let w = lifecycle_warnings(None, Some(count));
        assert_eq!(w.len(), 1);
        assert!(w[0].note.as_deref().unwrap().contains("imageCountMoreThan"));
        assert_eq!(lifecycle_warnings(None, Some("not json")), vec![]);
    }

    #[test]
    fn the_targets_of_a_repository_are_the_union_of_the_covering_rules_without_its_own_region() {
        let config = ReplicationConfig::from_json(
            &json!({"registryId": "111122223333", "replicationConfiguration": {"rules": [
                {"destinations": [{"region": "eu-west-1", "registryId": "444455556666"},
                                  {"region": "us-west-2", "registryId": "111122223333"}],
                 "repositoryFilters": [{"filter": "team", "filterType": "PREFIX_MATCH"}]},
                {"destinations": [{"region": "eu-west-1", "registryId": "444455556666"},
                                  {"region": "us-east-1", "registryId": "111122223333"}]}
            ]}}),
            Region::parse("us-west-2").unwrap(),
            None,
        )
        .unwrap();
        let names = |r: &str| -> Vec<String> {
            targets(&config, &repo(r))
                .iter()
                .map(|t| t.destination.to_string())
                .collect()
        };
        assert_eq!(
            names("team/app"),
            ["444455556666/eu-west-1", "111122223333/us-east-1"]
        );
        assert_eq!(
            names("other"),
            ["444455556666/eu-west-1", "111122223333/us-east-1"]
        );
        assert!(
            targets(&config, &repo("team/app"))
                .iter()
                .all(|t| !t.delete_replication)
        );
    }

    #[test]
    fn a_pass_round_trips_through_its_stored_form() {
        let mut pass = InventoryPass::new(at(0));
        pass.after = Some(repo("team/app"));
        pass.lease_until = Some(at(60));
        pass.invocations = 3;
        pass.lost_pushes = 2;
        pass.totals.insert(
            key(),
            Tally {
                repositories: 4,
                missing: 2,
                in_flight: 1,
                ..Tally::default()
            },
        );
        assert_eq!(InventoryPass::from_json(&pass.to_json()), Ok(pass));
        assert!(InventoryPass::from_json(&json!({"totals": []})).is_err());
    }

    #[test]
    fn a_pass_is_started_resumed_or_left_to_the_invocation_that_holds_it() {
        let mut pass = InventoryPass::new(at(0));
        assert_eq!(InventoryPass::step(None, at(0), true), PassStep::Start);
        assert_eq!(InventoryPass::step(None, at(0), false), PassStep::Idle);
        assert_eq!(
            InventoryPass::step(Some(&pass), at(0), false),
            PassStep::Resume
        );
        pass.lease_until = Some(at(60));
        assert_eq!(
            InventoryPass::step(Some(&pass), at(30), true),
            PassStep::Busy(at(60))
        );
        assert_eq!(
            InventoryPass::step(Some(&pass), at(61), true),
            PassStep::Resume
        );
        pass.finished_at = Some(at(70));
        assert_eq!(
            InventoryPass::step(Some(&pass), at(80), true),
            PassStep::Start
        );
        assert_eq!(
            InventoryPass::step(Some(&pass), at(80), false),
            PassStep::Idle
        );
    }

    #[test]
    fn the_gauges_have_every_kind_per_pair_with_zeros_and_zeros_without_dimensions_for_none() {
        let mut totals = BTreeMap::new();
        totals.insert(
            key(),
            Tally {
                missing: 3,
                ..Tally::default()
            },
        );
        let g = gauges(&totals, at(0));
        assert_eq!(g.len(), 5);
        assert_eq!(g[0].name, MetricName::ImagesMissingAtDestination);
        assert_eq!(g[0].value, 3.0);
        assert!(
            g[1..]
                .iter()
                .all(|s| s.value == 0.0 && s.dimensions.is_some())
        );
        let none = gauges(&BTreeMap::new(), at(0));
        assert_eq!(none.len(), 5);
        assert!(none.iter().all(|s| s.dimensions.is_none()));
    }
}
