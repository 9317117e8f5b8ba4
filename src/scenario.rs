//! A seeded generator of realistic ECR EventBridge event streams, together with the verdicts they
//! must produce.
//!
//! The verdicts (the [`Truth`]) are worked out by the generator from its own decisions ("this
//! copy is late", "this push has no copy yet"), following the auditor's contract, never by calling
//! the engine. Tests compare the engine's report with them; benchmarks use the same streams at
//! millions of events.
//!
//! Besides pushes, the stream holds restores of archived images (each owed a copy like a push by
//! digest) and, under the `prod*` rule's delete replication, deletes at the source with the
//! DELETE each destination reports when it applies one (on time, late, or never): their
//! verdicts are in the truth too ([`Truth::deletions`]).
//!
//! The stream is written push by push: memory holds the events still to be written (the copies
//! that arrive later than their push, at most a few hours of stream) plus, when asked for, one
//! [`ExpectedVerdict`] per (push, destination). Nothing grows with the number of events.
//!
//! The topology is fixed (see [`ScenarioSpec::registry_documents`]):
//!
//! | source                          | rules                                                                 |
//! |---------------------------------|-----------------------------------------------------------------------|
//! | `111111111111` `us-west-2`      | every repository to `111111111111/us-east-1` (same account) and `222222222222/eu-west-1` (cross-account); `prod*` also to `111111111111/ap-southeast-2` and, again, `111111111111/us-east-1`, with delete replication |
//! | `222222222222` `eu-west-1`      | `team-a*` to `222222222222/eu-central-1`; `shared*` or `base*` to `111111111111/us-west-2` and `222222222222/eu-central-1`; `misc/scratch` is covered by no rule |
//! | `333333333333` `us-east-2`      | every repository to `333333333333/us-west-1`                          |
//! | `444444444444` `sa-east-1`      | no document is given: its pushes are unconfigured, its copies match no push |

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fmt::Write as _;
use std::io::{self, BufWriter, Write};
use std::path::Path;

use serde_json::{Value, json};

use crate::domain::config::ReplicationConfig;
use crate::domain::ids::Region;
use crate::domain::time::Timestamp;
use crate::replay::RegistryFile;

/// splitmix64: tiny, fast, and good enough to draw scenario decisions. Not for cryptography.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    pub const fn new(seed: u64) -> Self {
        SplitMix64 { state: seed }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix64(self.state)
    }

    /// Uniform in `0..n` (`n > 0`), by multiply-shift; the bias is below `n / 2^64`.
    pub fn below(&mut self, n: u64) -> u64 {
        assert!(n > 0, "below(0)");
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// Uniform in `lo..=hi` (`lo <= hi`).
    pub fn between(&mut self, lo: i64, hi: i64) -> i64 {
        assert!(lo <= hi, "between({lo}, {hi})");
        lo + self.below((hi - lo) as u64 + 1) as i64
    }

    /// True with probability `p / 1000`.
    pub fn per_mille(&mut self, p: u32) -> bool {
        self.below(1000) < u64::from(p)
    }
}

/// The splitmix64 finaliser: a bijection on `u64`, so distinct inputs give distinct outputs
/// (used to make ids and digests unique without remembering them).
pub const fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// What to generate. `..Default::default()` gives a realistic mix; rates are per mille.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScenarioSpec {
    pub seed: u64,
    /// Images pushed. A retag adds a second push event; an image whose push is not in the
    /// stream (its copies are unmatched) has none. See [`ScenarioSpec::for_events`].
    pub pushes: usize,
    /// Unix seconds; the first push comes one interval after it.
    pub start_unix: i64,
    /// The replication window the truth is computed for (the engine's `--window`). At least 120.
    pub window_seconds: u32,
    /// Seconds between consecutive images, drawn uniformly (at least 1).
    pub min_push_interval_seconds: u32,
    pub max_push_interval_seconds: u32,
    /// Images pushed in the same second at each interval (at least 1): more than one packs the
    /// same stream into a shorter span, e.g. a million events into one day
    /// ([`ScenarioSpec::one_day`]).
    pub images_per_interval: u32,
    /// Each tag carries its image's number, so that no tag is pushed twice in a repository.
    /// The truth does not model a tag moving at the source between a push and its copy (the
    /// auditor then judges the copy against where the tag went): a stream dense enough to draw
    /// one tag twice in a repository within a window needs this for its truth to be exact.
    /// The default mix draws a few dozen such pairs in a million events.
    pub unique_tags: bool,
    /// Seconds from the last push to the audit time (the last event, a scheduled invocation).
    pub tail_seconds: u32,

    // Per (push, destination): what happens to the copy. The rest arrive on time.
    pub late_per_mille: u32,
    pub missing_per_mille: u32,
    pub failed_per_mille: u32,
    /// A FAILED result followed by a successful retry.
    pub retried_per_mille: u32,
    /// A successful copy without the pushed tag (only for tagged pushes).
    pub untagged_per_mille: u32,

    // Per image.
    pub by_digest_per_mille: u32,
    pub retag_per_mille: u32,
    pub unconfigured_per_mille: u32,
    /// The push is not in the stream; its copies are.
    pub unmatched_per_mille: u32,
    /// One other event (a DELETE of an image the stream never pushed, `ECR Image Scan`,
    /// `Scheduled Event`) after the push.
    pub ignored_per_mille: u32,
    /// One broken record after the push.
    pub broken_per_mille: u32,
    /// Instead of a push: a restore of an archived image (pushed before the stream began),
    /// owed a copy like a push by digest.
    pub restore_per_mille: u32,
    /// Instead of a push: a delete at the source, under the `prod*` rule's delete replication,
    /// of an image pushed before the stream began; each destination of that rule reports it
    /// applied (a DELETE there) on time, late, or never.
    pub replicated_delete_per_mille: u32,
    /// Per (replicated delete, destination): applied after the window...
    pub delete_late_per_mille: u32,
    /// ...or never reported applied.
    pub delete_missing_per_mille: u32,

    // Per event.
    /// The same event (same `id`) delivered a second time, up to ten minutes later.
    pub duplicate_per_mille: u32,
    /// A copy written before its push (copies of single pushes only).
    pub out_of_order_per_mille: u32,

    /// The last images pushed have no copy yet: `pending` at the audit time.
    pub pending_pushes: usize,
}

impl Default for ScenarioSpec {
    fn default() -> Self {
        ScenarioSpec {
            seed: 0x0EC5_2024,
            pushes: 36_000,
            start_unix: 1_719_792_000, // 2024-07-01T00:00:00Z
            window_seconds: 1800,
            min_push_interval_seconds: 1,
            max_push_interval_seconds: 4,
            images_per_interval: 1,
            unique_tags: false,
            tail_seconds: 60,
            late_per_mille: 20,
            missing_per_mille: 15,
            failed_per_mille: 15,
            retried_per_mille: 10,
            untagged_per_mille: 20,
            by_digest_per_mille: 80,
            retag_per_mille: 20,
            unconfigured_per_mille: 15,
            unmatched_per_mille: 10,
            ignored_per_mille: 30,
            broken_per_mille: 8,
            restore_per_mille: 10,
            replicated_delete_per_mille: 10,
            delete_late_per_mille: 50,
            delete_missing_per_mille: 50,
            duplicate_per_mille: 10,
            out_of_order_per_mille: 20,
            pending_pushes: 12,
        }
    }
}

/// Events per image of the default mix, measured; [`ScenarioSpec::for_events`] divides by it.
pub const EVENTS_PER_PUSH: f64 = 2.90;

/// The verdict the engine must give one (push, destination).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ExpectedVerdict {
    pub source_account: String,
    pub source_region: String,
    pub repository: String,
    pub image_digest: String,
    pub image_tag: Option<String>,
    pub destination_account: String,
    pub destination_region: String,
    /// `replicated`, `late`, `untagged`, `failed`, `missing` or `pending`.
    pub status: &'static str,
    /// Copy time minus push time, for every verdict that rests on a successful copy.
    pub latency_seconds: Option<i64>,
    /// `push`, or `restore` (whose push time is the restore's, and tag none).
    pub trigger: &'static str,
}

/// The verdict the engine must give one (delete, destination) under delete replication.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ExpectedDeletion {
    pub source_account: String,
    pub source_region: String,
    pub repository: String,
    pub image_digest: String,
    pub image_tag: Option<String>,
    pub destination_account: String,
    pub destination_region: String,
    /// `replicated`, `late`, `missing` or `pending`.
    pub status: &'static str,
    /// The destination's DELETE time minus the source's, when one was written.
    pub latency_seconds: Option<i64>,
}

/// Records of each kind, as the engine counts them (`EventCounts`): `read` is every line,
/// a `duplicate` is a record whose `id` was seen before, and is counted as nothing else.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExpectedCounts {
    pub read: u64,
    pub push: u64,
    pub restore: u64,
    pub replication: u64,
    /// Deletes at the source (of images never pushed in the stream: a lifecycle expiry, or
    /// under delete replication), and the DELETEs the destinations report for the latter.
    pub delete: u64,
    pub ignored: u64,
    pub rejected: u64,
    pub duplicate: u64,
}

/// How many of each case the stream holds (the ones written, not merely drawn).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CaseCounts {
    // Per (push, destination), as decided; copies decided for after the audit time are not
    // written, which can turn a decision into `pending` or `missing` (see `copies_after_now`).
    pub on_time: u64,
    pub late: u64,
    pub untagged: u64,
    pub failed: u64,
    pub failed_then_retried: u64,
    pub missing: u64,
    /// Successful copies exactly one window after their push (on time) or one second more.
    pub exactly_one_window: u64,
    pub one_second_past_the_window: u64,
    pub copies_after_now: u64,
    // Per image.
    pub tagged_pushes: u64,
    pub by_digest: u64,
    pub retags: u64,
    pub unconfigured_pushes: u64,
    /// Pushes to a configured Region whose repository no rule covers.
    pub uncovered_pushes: u64,
    pub pending_pushes: u64,
    pub unmatched_copies: u64,
    pub restores: u64,
    /// Deletes under delete replication (written with their destinations' DELETEs)...
    pub replicated_deletes: u64,
    /// ...and per (delete, destination): applied on time, late, or never reported (as written:
    /// one decided for after the audit time is not written, and counted apart).
    pub deletes_applied: u64,
    pub deletes_late: u64,
    pub deletes_never_reported: u64,
    pub deletes_after_now: u64,
    // Per event.
    pub duplicates: u64,
    pub out_of_order: u64,
    // Ignored records.
    pub deletes: u64,
    pub scans: u64,
    pub scheduled: u64,
    // Broken records.
    pub non_json: u64,
    pub not_an_object: u64,
    pub missing_digest: u64,
    pub bad_repository: u64,
    pub bad_time: u64,
}

/// Everything the engine must report for a scenario.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Truth {
    pub window_seconds: u32,
    /// The audit time: the latest event time in the stream (a final `Scheduled Event`).
    pub now_unix: i64,
    /// `now_unix` as the report prints it (RFC 3339, `Z`).
    pub now: String,
    pub events: ExpectedCounts,
    /// One per (push, destination), in generation order.
    pub verdicts: Vec<ExpectedVerdict>,
    /// One per (delete, destination) under delete replication, in generation order.
    pub deletions: Vec<ExpectedDeletion>,
    pub unmatched_replications: u64,
    /// Pushes (first sightings) from registries without a configuration document.
    pub unconfigured_pushes: u64,
    pub cases: CaseCounts,
}

impl Truth {
    /// How many verdicts have `status`.
    pub fn count(&self, status: &str) -> usize {
        self.verdicts.iter().filter(|v| v.status == status).count()
    }

    /// How many delete verdicts have `status`.
    pub fn count_deletions(&self, status: &str) -> usize {
        self.deletions.iter().filter(|d| d.status == status).count()
    }
}

struct RuleDef {
    prefixes: &'static [&'static str],
    destinations: &'static [(&'static str, &'static str)],
    delete_replication: bool,
}

struct Source {
    account: &'static str,
    region: &'static str,
    repositories: &'static [&'static str],
    rules: &'static [RuleDef],
}

const CONFIGURED: [Source; 3] = [
    Source {
        account: "111111111111",
        region: "us-west-2",
        repositories: &[
            "prod/web",
            "prod/api",
            "production/billing",
            "team-a/app",
            "tools/ci-runner",
            "sandbox/experiments",
        ],
        rules: &[
            RuleDef {
                prefixes: &[],
                destinations: &[("111111111111", "us-east-1"), ("222222222222", "eu-west-1")],
                delete_replication: false,
            },
            RuleDef {
                prefixes: &["prod"],
                destinations: &[
                    ("111111111111", "ap-southeast-2"),
                    ("111111111111", "us-east-1"),
                ],
                delete_replication: true,
            },
        ],
    },
    Source {
        account: "222222222222",
        region: "eu-west-1",
        repositories: &[
            "team-a/api",
            "team-a/worker",
            "shared/base-images",
            "base/python",
            "misc/scratch",
        ],
        rules: &[
            RuleDef {
                prefixes: &["team-a"],
                destinations: &[("222222222222", "eu-central-1")],
                delete_replication: false,
            },
            RuleDef {
                prefixes: &["shared", "base"],
                destinations: &[
                    ("111111111111", "us-west-2"),
                    ("222222222222", "eu-central-1"),
                ],
                delete_replication: false,
            },
        ],
    },
    Source {
        account: "333333333333",
        region: "us-east-2",
        repositories: &["data/etl", "data/notebooks", "ml/serving"],
        rules: &[RuleDef {
            prefixes: &[],
            destinations: &[("333333333333", "us-west-1")],
            delete_replication: false,
        }],
    },
];

/// Replicates (to `444444444444/us-east-1`), but the auditor is not given its configuration.
const UNCONFIGURED: Source = Source {
    account: "444444444444",
    region: "sa-east-1",
    repositories: &["legacy/monolith", "legacy/batch-jobs"],
    rules: &[RuleDef {
        prefixes: &[],
        destinations: &[("444444444444", "us-east-1")],
        delete_replication: false,
    }],
};

fn rule_document(rule: &RuleDef) -> Value {
    let destinations: Vec<Value> = rule
        .destinations
        .iter()
        .map(|(account, region)| json!({"region": region, "registryId": account}))
        .collect();
    let mut doc = json!({"destinations": destinations});
    if !rule.prefixes.is_empty() {
        let filters: Vec<Value> = rule
            .prefixes
            .iter()
            .map(|p| json!({"filter": p, "filterType": "PREFIX_MATCH"}))
            .collect();
        doc["repositoryFilters"] = json!(filters);
    }
    if rule.delete_replication {
        doc["deleteReplication"] = json!({"enabled": true});
    }
    doc
}

/// The destinations that owe a delete in `repository`: those of the covering rules with delete
/// replication, deduplicated, first appearance first.
fn delete_destinations_of(source: &Source, repository: &str) -> Vec<(&'static str, &'static str)> {
    let mut out: Vec<(&'static str, &'static str)> = Vec::new();
    for rule in source.rules.iter().filter(|r| r.delete_replication) {
        let covers =
            rule.prefixes.is_empty() || rule.prefixes.iter().any(|p| repository.starts_with(p));
        if covers {
            for d in rule.destinations {
                if !out.contains(d) {
                    out.push(*d);
                }
            }
        }
    }
    out
}

/// The expected verdict of one (delete, destination): applied when the destination's DELETE
/// was written (late past the window), else missing once the window has passed, pending before.
fn expected_delete_status(
    deleted_at: i64,
    applied_at: Option<i64>,
    now: i64,
    window: i64,
) -> (&'static str, Option<i64>) {
    match applied_at {
        Some(at) if at - deleted_at > window => ("late", Some(at - deleted_at)),
        Some(at) => ("replicated", Some(at - deleted_at)),
        None if now - deleted_at > window => ("missing", None),
        None => ("pending", None),
    }
}

/// The destinations of every rule that covers `repository`: no filter, or a filter that is a
/// plain string prefix of the name. Deduplicated, first appearance first.
fn destinations_of(source: &Source, repository: &str) -> Vec<(&'static str, &'static str)> {
    let mut out: Vec<(&'static str, &'static str)> = Vec::new();
    for rule in source.rules {
        let covers =
            rule.prefixes.is_empty() || rule.prefixes.iter().any(|p| repository.starts_with(p));
        if covers {
            for d in rule.destinations {
                if !out.contains(d) {
                    out.push(*d);
                }
            }
        }
    }
    out
}

impl ScenarioSpec {
    /// The default mix with about `events` records (within a few per cent).
    pub fn for_events(seed: u64, events: usize) -> Self {
        ScenarioSpec {
            seed,
            pushes: ((events as f64 / EVENTS_PER_PUSH).ceil() as usize).max(1),
            ..ScenarioSpec::default()
        }
    }

    /// [`ScenarioSpec::for_events`] with every event within one day (up to 1.2M events; more
    /// take longer): twelve images a second at each interval, about 20 hours for 1M events.
    /// Nothing settles a horizon before the end, so a replay can forget nothing: the hardest
    /// case for its memory.
    pub fn one_day(seed: u64, events: usize) -> Self {
        ScenarioSpec {
            images_per_interval: 12,
            unique_tags: true,
            ..ScenarioSpec::for_events(seed, events)
        }
    }

    /// The `describe-registry` documents of the configured registries, with the Region each is
    /// for (the engine's `--registry REGION=FILE`).
    pub fn registry_documents(&self) -> Vec<(String, Value)> {
        CONFIGURED
            .iter()
            .map(|s| {
                let rules: Vec<Value> = s.rules.iter().map(rule_document).collect();
                let doc = json!({
                    "registryId": s.account,
                    "replicationConfiguration": {"rules": rules}
                });
                (s.region.to_string(), doc)
            })
            .collect()
    }

    /// The registry documents, parsed as the engine takes them.
    pub fn configs(&self) -> Vec<ReplicationConfig> {
        self.registry_documents()
            .into_iter()
            .map(|(region, doc)| {
                let region = Region::parse(&region).expect("a generator Region is valid");
                ReplicationConfig::from_json(&doc, region, None)
                    .expect("a generator registry document is valid")
            })
            .collect()
    }

    /// Writes each registry document to `DIR/registry-REGION.json` and returns them as
    /// `replay --registry REGION=FILE` arguments.
    pub fn write_registry_files(&self, dir: &Path) -> io::Result<Vec<RegistryFile>> {
        self.registry_documents()
            .into_iter()
            .map(|(region, doc)| {
                let path = dir.join(format!("registry-{region}.json"));
                std::fs::write(&path, serde_json::to_vec_pretty(&doc)?)?;
                Ok(RegistryFile {
                    region: Region::parse(&region).expect("a generator Region is valid"),
                    path,
                })
            })
            .collect()
    }

    /// Writes the events as JSON lines. The writer is buffered here; memory does not grow with
    /// the number of events.
    pub fn write_events(&self, out: &mut impl Write) -> io::Result<()> {
        Generator::new(self, false).run(out).map(|_| ())
    }

    /// Writes the events and returns their truth, in one pass.
    pub fn write_events_with_truth(&self, out: &mut impl Write) -> io::Result<Truth> {
        Generator::new(self, true).run(out)
    }

    /// The verdicts, counts and audit time the stream of [`ScenarioSpec::write_events`] must
    /// produce (generates the stream again, writing nothing).
    pub fn truth(&self) -> Truth {
        Generator::new(self, true)
            .run(&mut io::sink())
            .expect("writing to io::sink cannot fail")
    }

    fn window(&self) -> i64 {
        i64::from(self.window_seconds)
    }

    /// The push times, from a generator of their own so the audit time is known up front.
    fn push_times(&self) -> impl Iterator<Item = i64> + use<> {
        let mut rng = SplitMix64::new(self.seed ^ 0x7133_7133_7133_7133);
        let (lo, hi) = (
            i64::from(self.min_push_interval_seconds.max(1)),
            i64::from(
                self.max_push_interval_seconds
                    .max(self.min_push_interval_seconds.max(1)),
            ),
        );
        let burst = self.images_per_interval.max(1) as usize;
        let mut t = self.start_unix;
        (0..self.pushes).map(move |i| {
            if i % burst == 0 {
                t += rng.between(lo, hi);
            }
            t
        })
    }
}

/// Formats Unix seconds as RFC 3339 with whole seconds and `Z`, as the auditor writes instants.
pub fn rfc3339(unix: i64) -> String {
    Timestamp::from_millis(unix.saturating_mul(1000)).to_string()
}

fn write_rfc3339(out: &mut String, unix: i64) {
    let _ = write!(out, "{}", Timestamp::from_millis(unix.saturating_mul(1000)));
}

/// What a written record counts as.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Category {
    Push,
    Restore,
    Replication,
    Delete,
    Ignored,
    Rejected,
    Duplicate,
}

/// A copy as decided: when, whether it carries the pushed tag, and its result.
#[derive(Clone, Copy, Debug)]
struct PlannedCopy {
    at: i64,
    tagged: bool,
    succeeded: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fate {
    OnTime,
    Late,
    Untagged,
    Failed,
    FailedThenRetried,
    Missing,
}

/// How an image push is generated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PushMode {
    /// Any fate; copies may come before the push in the stream.
    Single,
    /// One of two tags on one digest: tagged copies only, in time order.
    Retag,
    /// No copy at all (the last pushes of the stream).
    Pending,
    /// A restore of an archived image: no tag, any fate, copies may come before it.
    Restore,
}

/// The expected verdict of one (push, destination) from the copies written for it, following
/// the contract: the earliest successful copy decides (untagged, else late past the window,
/// else replicated); else a FAILED result; else missing once the window has passed.
fn expected_status(
    pushed_at: i64,
    push_tagged: bool,
    copies: &[PlannedCopy],
    now: i64,
    window: i64,
) -> (&'static str, Option<i64>) {
    if let Some(first) = copies.iter().filter(|c| c.succeeded).min_by_key(|c| c.at) {
        let latency = first.at - pushed_at;
        let status = if push_tagged && !first.tagged {
            "untagged"
        } else if latency > window {
            "late"
        } else {
            "replicated"
        };
        return (status, Some(latency));
    }
    if copies.iter().any(|c| !c.succeeded) {
        ("failed", None)
    } else if now - pushed_at > window {
        ("missing", None)
    } else {
        ("pending", None)
    }
}

/// A record waiting to be written: (stream position, sequence, category, line).
type Pending = Reverse<(i64, u64, Category, String)>;

struct Generator<'s> {
    spec: &'s ScenarioSpec,
    rng: SplitMix64,
    /// Records not yet written, by stream position then creation order.
    queue: BinaryHeap<Pending>,
    seq: u64,
    ids: u64,
    images: u64,
    id_key: u64,
    digest_key: u64,
    now: i64,
    collect: bool,
    truth: Truth,
    line: String,
}

impl<'s> Generator<'s> {
    fn new(spec: &'s ScenarioSpec, collect: bool) -> Self {
        assert!(
            spec.window_seconds >= 120,
            "window_seconds must be at least 120"
        );
        let last_push = spec.push_times().last().unwrap_or(spec.start_unix);
        let now = last_push + i64::from(spec.tail_seconds);
        Generator {
            spec,
            rng: SplitMix64::new(spec.seed),
            queue: BinaryHeap::new(),
            seq: 0,
            ids: 0,
            images: 0,
            id_key: mix64(spec.seed ^ 0x1D1D_1D1D_1D1D_1D1D),
            digest_key: mix64(spec.seed ^ 0xD16E_57D1_6E57_D16E),
            now,
            collect,
            truth: Truth {
                window_seconds: spec.window_seconds,
                now_unix: now,
                now: rfc3339(now),
                ..Truth::default()
            },
            line: String::with_capacity(512),
        }
    }

    fn run(mut self, out: &mut impl Write) -> io::Result<Truth> {
        let mut out = BufWriter::with_capacity(256 * 1024, out);
        for (i, t) in self.spec.push_times().enumerate() {
            self.image(i, t);
            self.extras(t);
            self.write_until(t, &mut out)?;
        }
        // The audit runs on a schedule: its own invocation is the last event, and "now".
        let now = self.now;
        self.scheduled_event(now);
        self.write_until(i64::MAX, &mut out)?;
        out.flush()?;
        Ok(self.truth)
    }

    fn write_until(&mut self, t: i64, out: &mut impl Write) -> io::Result<()> {
        while self.queue.peek().is_some_and(|Reverse((at, ..))| *at <= t) {
            let Some(Reverse((_, _, category, line))) = self.queue.pop() else {
                break;
            };
            let counts = &mut self.truth.events;
            counts.read += 1;
            match category {
                Category::Push => counts.push += 1,
                Category::Restore => counts.restore += 1,
                Category::Replication => counts.replication += 1,
                Category::Delete => counts.delete += 1,
                Category::Ignored => counts.ignored += 1,
                Category::Rejected => counts.rejected += 1,
                Category::Duplicate => counts.duplicate += 1,
            }
            out.write_all(line.as_bytes())?;
            out.write_all(b"\n")?;
        }
        Ok(())
    }

    /// Queues the line being built, at stream position `at`, and maybe a second delivery.
    fn enqueue(&mut self, at: i64, category: Category) {
        debug_assert!(at <= self.now, "a record after the audit time");
        let line = std::mem::take(&mut self.line);
        let can_repeat = matches!(
            category,
            Category::Push
                | Category::Restore
                | Category::Replication
                | Category::Delete
                | Category::Ignored
        );
        if can_repeat && self.rng.per_mille(self.spec.duplicate_per_mille) {
            let again = at + self.rng.between(1, 600);
            if again <= self.now {
                self.truth.cases.duplicates += 1;
                self.seq += 1;
                self.queue.push(Reverse((
                    again,
                    self.seq,
                    Category::Duplicate,
                    line.clone(),
                )));
            }
        }
        self.seq += 1;
        self.queue.push(Reverse((at, self.seq, category, line)));
        self.line = String::with_capacity(512);
    }

    fn new_id(&mut self) -> String {
        self.ids += 1;
        // The first half is a bijection of the counter: unique without remembering ids.
        let a = mix64(self.ids.wrapping_add(self.id_key));
        let b = self.rng.next_u64();
        format!(
            "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xffff,
            a & 0xffff,
            b >> 48,
            b & 0xffff_ffff_ffff
        )
    }

    fn new_digest(&mut self) -> String {
        self.images += 1;
        let a = mix64(self.images.wrapping_add(self.digest_key));
        let (b, c, d) = (
            self.rng.next_u64(),
            self.rng.next_u64(),
            self.rng.next_u64(),
        );
        format!("sha256:{a:016x}{b:016x}{c:016x}{d:016x}")
    }

    fn new_tag(&mut self) -> String {
        let tag = if self.rng.below(3) == 0 {
            format!("git-{:07x}", self.rng.next_u64() >> 36)
        } else {
            format!("v1.{}.{}", self.rng.below(40), self.rng.below(200))
        };
        // The image's number makes each tag its own (the draws stay the same).
        if self.spec.unique_tags {
            format!("{tag}-{}", self.images)
        } else {
            tag
        }
    }

    fn configured_source(&mut self) -> &'static Source {
        match self.rng.below(10) {
            0..5 => &CONFIGURED[0],
            5..8 => &CONFIGURED[1],
            _ => &CONFIGURED[2],
        }
    }

    fn repository(&mut self, source: &'static Source) -> &'static str {
        source.repositories[self.rng.below(source.repositories.len() as u64) as usize]
    }

    /// One image: what is pushed, and what happens to its copies.
    fn image(&mut self, index: usize, t: i64) {
        let spec = self.spec;
        if index + spec.pending_pushes >= spec.pushes {
            let source = &CONFIGURED[0];
            let repository = self.repository(source);
            let (digest, tag) = (self.new_digest(), self.new_tag());
            self.truth.cases.pending_pushes += 1;
            self.truth.cases.tagged_pushes += 1;
            self.push(
                source,
                repository,
                &digest,
                Some(&tag),
                t,
                PushMode::Pending,
            );
            return;
        }
        let mut draw = self.rng.below(1000) as u32;
        let mut kind = |p: u32| {
            let hit = draw < p;
            draw = draw.saturating_sub(p);
            hit
        };
        if kind(spec.unconfigured_per_mille) {
            self.unconfigured(t);
        } else if kind(spec.unmatched_per_mille) {
            self.unmatched(t);
        } else if kind(spec.restore_per_mille) {
            let source = self.configured_source();
            let repository = self.repository(source);
            let digest = self.new_digest();
            self.truth.cases.restores += 1;
            self.push(source, repository, &digest, None, t, PushMode::Restore);
        } else if kind(spec.replicated_delete_per_mille) {
            self.replicated_delete(t);
        } else if kind(spec.by_digest_per_mille) {
            let source = self.configured_source();
            let repository = self.repository(source);
            let digest = self.new_digest();
            self.truth.cases.by_digest += 1;
            self.push(source, repository, &digest, None, t, PushMode::Single);
        } else if kind(spec.retag_per_mille) && t + 900 <= self.now {
            // One build tagged twice: `v1.2.3` then `latest`, a few minutes apart.
            let source = self.configured_source();
            let repository = self.repository(source);
            let (digest, tag) = (self.new_digest(), self.new_tag());
            let second = t + self.rng.between(5, 300);
            self.truth.cases.retags += 1;
            self.truth.cases.tagged_pushes += 2;
            self.push(source, repository, &digest, Some(&tag), t, PushMode::Retag);
            self.push(
                source,
                repository,
                &digest,
                Some("latest"),
                second,
                PushMode::Retag,
            );
        } else {
            let source = self.configured_source();
            let repository = self.repository(source);
            let (digest, tag) = (self.new_digest(), self.new_tag());
            self.truth.cases.tagged_pushes += 1;
            self.push(source, repository, &digest, Some(&tag), t, PushMode::Single);
        }
    }

    fn fate(&mut self, tagged: bool, mode: PushMode) -> Fate {
        let spec = self.spec;
        let mut draw = self.rng.below(1000) as u32;
        let mut kind = |p: u32| {
            let hit = draw < p;
            draw = draw.saturating_sub(p);
            hit
        };
        if kind(spec.late_per_mille) {
            Fate::Late
        } else if kind(spec.missing_per_mille) {
            Fate::Missing
        } else if kind(spec.failed_per_mille) {
            Fate::Failed
        } else if kind(spec.retried_per_mille) {
            Fate::FailedThenRetried
        } else if kind(spec.untagged_per_mille) && tagged && mode == PushMode::Single {
            Fate::Untagged
        } else {
            Fate::OnTime
        }
    }

    fn on_time_lag(&mut self) -> i64 {
        let w = self.spec.window();
        match self.rng.below(1000) {
            0..850 => self.rng.between(1, 60),
            850..990 => self.rng.between(61, w - 1),
            _ => {
                self.truth.cases.exactly_one_window += 1;
                w
            }
        }
    }

    fn late_lag(&mut self) -> i64 {
        let w = self.spec.window();
        if self.rng.below(10) == 0 {
            self.truth.cases.one_second_past_the_window += 1;
            w + 1
        } else {
            self.rng.between(w + 2, 3 * w)
        }
    }

    /// The copies of one (push, destination), as decided, before the audit-time cut.
    fn plan(&mut self, fate: Fate, t: i64, tagged: bool) -> Vec<PlannedCopy> {
        let copy = |at, tagged, succeeded| PlannedCopy {
            at,
            tagged,
            succeeded,
        };
        match fate {
            Fate::OnTime => {
                self.truth.cases.on_time += 1;
                vec![copy(t + self.on_time_lag(), tagged, true)]
            }
            Fate::Late => {
                self.truth.cases.late += 1;
                vec![copy(t + self.late_lag(), tagged, true)]
            }
            Fate::Untagged => {
                self.truth.cases.untagged += 1;
                // ECR keeps the image but drops a tag that is immutable in the destination.
                let lag = if self.rng.below(5) == 0 {
                    self.late_lag()
                } else {
                    self.on_time_lag()
                };
                vec![copy(t + lag, false, true)]
            }
            Fate::Failed => {
                self.truth.cases.failed += 1;
                vec![copy(t + self.rng.between(2, 120), tagged, false)]
            }
            Fate::FailedThenRetried => {
                self.truth.cases.failed_then_retried += 1;
                let failed_at = t + self.rng.between(2, 60);
                let retried_at = failed_at + self.rng.between(60, 900);
                vec![
                    copy(failed_at, tagged, false),
                    copy(retried_at, tagged, true),
                ]
            }
            Fate::Missing => {
                self.truth.cases.missing += 1;
                Vec::new()
            }
        }
    }

    /// Pushes one (digest, tag) in a configured source, its copies, and their verdicts.
    fn push(
        &mut self,
        source: &'static Source,
        repository: &'static str,
        digest: &str,
        tag: Option<&str>,
        t: i64,
        mode: PushMode,
    ) {
        let destinations = destinations_of(source, repository);
        if destinations.is_empty() && mode != PushMode::Restore {
            self.truth.cases.uncovered_pushes += 1;
        }
        let mut early: Vec<(String, i64)> = Vec::new();
        let mut later: Vec<(String, i64)> = Vec::new();
        for (account, region) in destinations {
            let planned = if mode == PushMode::Pending {
                Vec::new()
            } else {
                let fate = self.fate(tag.is_some(), mode);
                self.plan(fate, t, tag.is_some())
            };
            // A copy decided for after the audit time has not happened yet.
            let before = planned.len();
            let written: Vec<PlannedCopy> =
                planned.into_iter().filter(|c| c.at <= self.now).collect();
            self.truth.cases.copies_after_now += (before - written.len()) as u64;
            for c in &written {
                let tag = if c.tagged { tag } else { None };
                let id = self.new_id();
                copy_line(
                    &mut self.line,
                    &id,
                    c.at,
                    (source.account, source.region),
                    (account, region),
                    repository,
                    digest,
                    tag,
                    c.succeeded,
                );
                let line = std::mem::take(&mut self.line);
                if matches!(mode, PushMode::Single | PushMode::Restore)
                    && self.rng.per_mille(self.spec.out_of_order_per_mille)
                {
                    self.truth.cases.out_of_order += 1;
                    early.push((line, c.at));
                } else {
                    later.push((line, c.at));
                }
            }
            if self.collect {
                let (status, latency_seconds) =
                    expected_status(t, tag.is_some(), &written, self.now, self.spec.window());
                self.truth.verdicts.push(ExpectedVerdict {
                    source_account: source.account.to_string(),
                    source_region: source.region.to_string(),
                    repository: repository.to_string(),
                    image_digest: digest.to_string(),
                    image_tag: tag.map(str::to_string),
                    destination_account: account.to_string(),
                    destination_region: region.to_string(),
                    status,
                    latency_seconds,
                    trigger: if mode == PushMode::Restore {
                        "restore"
                    } else {
                        "push"
                    },
                });
            }
        }
        // Copies out of order are written just before their push; the others when they happen.
        for (line, _) in early {
            self.line = line;
            self.enqueue(t, Category::Replication);
        }
        let id = self.new_id();
        if mode == PushMode::Restore {
            restore_line(
                &mut self.line,
                &id,
                (source.account, source.region),
                t,
                repository,
                digest,
            );
            self.enqueue(t, Category::Restore);
        } else {
            push_line(
                &mut self.line,
                &id,
                (source.account, source.region),
                &rfc3339(t),
                repository,
                Some(digest),
                tag,
            );
            self.enqueue(t, Category::Push);
        }
        for (line, at) in later {
            self.line = line;
            self.enqueue(at, Category::Replication);
        }
    }

    /// A push from a registry whose configuration the auditor does not have; half of them
    /// replicate anyway, and those copies match no push.
    fn unconfigured(&mut self, t: i64) {
        let source = &UNCONFIGURED;
        let repository = self.repository(source);
        let (digest, tag) = (self.new_digest(), self.new_tag());
        self.truth.cases.unconfigured_pushes += 1;
        self.truth.unconfigured_pushes += 1;
        let id = self.new_id();
        push_line(
            &mut self.line,
            &id,
            (source.account, source.region),
            &rfc3339(t),
            repository,
            Some(&digest),
            Some(&tag),
        );
        self.enqueue(t, Category::Push);
        if self.rng.below(2) == 0 {
            self.orphan_copies(source, repository, &digest, &tag, t);
        }
    }

    /// Copies of an image whose push is not in the stream (pushed before the archive began).
    fn unmatched(&mut self, t: i64) {
        let source = &CONFIGURED[0];
        let repository = self.repository(source);
        let (digest, tag) = (self.new_digest(), self.new_tag());
        self.orphan_copies(source, repository, &digest, &tag, t);
    }

    fn orphan_copies(
        &mut self,
        source: &'static Source,
        repository: &'static str,
        digest: &str,
        tag: &str,
        t: i64,
    ) {
        for destination in destinations_of(source, repository) {
            let at = t + self.rng.between(1, 60);
            if at > self.now {
                self.truth.cases.copies_after_now += 1;
                continue;
            }
            let id = self.new_id();
            copy_line(
                &mut self.line,
                &id,
                at,
                (source.account, source.region),
                destination,
                repository,
                digest,
                Some(tag),
                true,
            );
            self.truth.cases.unmatched_copies += 1;
            self.truth.unmatched_replications += 1;
            self.enqueue(at, Category::Replication);
        }
    }

    /// Now and then an event the auditor ignores, or a record it must refuse.
    fn extras(&mut self, t: i64) {
        if self.rng.per_mille(self.spec.ignored_per_mille) {
            match self.rng.below(3) {
                0 => self.delete_event(t),
                1 => self.scan_event(t),
                _ => self.scheduled_event(t),
            }
        }
        if self.rng.per_mille(self.spec.broken_per_mille) {
            self.broken_record(t);
        }
    }

    fn delete_event(&mut self, t: i64) {
        // A lifecycle policy expiring an old image. Under delete replication (`prod*` in
        // us-west-2) its destinations owe the delete, and none reports it: missing once the
        // window has passed.
        let source = self.configured_source();
        let repository = self.repository(source);
        let (id, digest, tag) = (self.new_id(), self.new_digest(), self.new_tag());
        delete_line(
            &mut self.line,
            &id,
            (source.account, source.region),
            t,
            repository,
            &digest,
            Some(&tag),
        );
        self.truth.cases.deletes += 1;
        self.enqueue(t, Category::Delete);
        for destination in delete_destinations_of(source, repository) {
            self.expect_deletion(
                source,
                repository,
                &digest,
                Some(&tag),
                destination,
                t,
                None,
            );
        }
    }

    /// A delete at the source under delete replication, of an image pushed before the stream
    /// began (by digest, or of a tag), and the DELETE each destination reports when it applies
    /// it: on time, late, or never.
    fn replicated_delete(&mut self, t: i64) {
        let source = &CONFIGURED[0];
        let covered: Vec<&'static str> = source
            .repositories
            .iter()
            .copied()
            .filter(|r| !delete_destinations_of(source, r).is_empty())
            .collect();
        let repository = covered[self.rng.below(covered.len() as u64) as usize];
        let digest = self.new_digest();
        let tag = (self.rng.below(2) == 0).then(|| self.new_tag());
        let id = self.new_id();
        delete_line(
            &mut self.line,
            &id,
            (source.account, source.region),
            t,
            repository,
            &digest,
            tag.as_deref(),
        );
        self.truth.cases.replicated_deletes += 1;
        self.enqueue(t, Category::Delete);
        let spec = self.spec;
        for destination in delete_destinations_of(source, repository) {
            let mut draw = self.rng.below(1000) as u32;
            let w = spec.window();
            let applied_at = if draw < spec.delete_missing_per_mille {
                self.truth.cases.deletes_never_reported += 1;
                None
            } else {
                draw -= spec.delete_missing_per_mille;
                let lag = if draw < spec.delete_late_per_mille {
                    self.rng.between(w + 1, 3 * w)
                } else {
                    self.rng.between(1, w)
                };
                // A DELETE decided for after the audit time has not happened yet.
                match t + lag {
                    at if at > self.now => {
                        self.truth.cases.deletes_after_now += 1;
                        None
                    }
                    at if lag > w => {
                        self.truth.cases.deletes_late += 1;
                        Some(at)
                    }
                    at => {
                        self.truth.cases.deletes_applied += 1;
                        Some(at)
                    }
                }
            };
            if let Some(at) = applied_at {
                let id = self.new_id();
                delete_line(
                    &mut self.line,
                    &id,
                    destination,
                    at,
                    repository,
                    &digest,
                    tag.as_deref(),
                );
                self.enqueue(at, Category::Delete);
            }
            self.expect_deletion(
                source,
                repository,
                &digest,
                tag.as_deref(),
                destination,
                t,
                applied_at,
            );
        }
    }

    /// The truth of one (delete, destination).
    #[allow(clippy::too_many_arguments)]
    fn expect_deletion(
        &mut self,
        source: &Source,
        repository: &str,
        digest: &str,
        tag: Option<&str>,
        (account, region): (&str, &str),
        deleted_at: i64,
        applied_at: Option<i64>,
    ) {
        if !self.collect {
            return;
        }
        let (status, latency_seconds) =
            expected_delete_status(deleted_at, applied_at, self.now, self.spec.window());
        self.truth.deletions.push(ExpectedDeletion {
            source_account: source.account.to_string(),
            source_region: source.region.to_string(),
            repository: repository.to_string(),
            image_digest: digest.to_string(),
            image_tag: tag.map(str::to_string),
            destination_account: account.to_string(),
            destination_region: region.to_string(),
            status,
            latency_seconds,
        });
    }

    fn scan_event(&mut self, t: i64) {
        let source = self.configured_source();
        let repository = self.repository(source);
        let (id, digest, tag) = (self.new_id(), self.new_digest(), self.new_tag());
        let (high, medium) = (self.rng.below(4), self.rng.below(20));
        let _ = write!(
            self.line,
            r#"{{"version":"0","id":"{id}","detail-type":"ECR Image Scan","source":"aws.ecr","account":"{account}","time":"{time}","region":"{region}","resources":["arn:aws:ecr:{region}:{account}:repository/{repository}"],"detail":{{"scan-status":"COMPLETE","repository-name":"{repository}","finding-severity-counts":{{"HIGH":{high},"MEDIUM":{medium}}},"image-digest":"{digest}","image-tags":["{tag}"]}}}}"#,
            account = source.account,
            region = source.region,
            time = rfc3339(t),
        );
        self.truth.cases.scans += 1;
        self.enqueue(t, Category::Ignored);
    }

    fn scheduled_event(&mut self, t: i64) {
        let id = self.new_id();
        let _ = write!(
            self.line,
            r#"{{"version":"0","id":"{id}","detail-type":"Scheduled Event","source":"aws.events","account":"111111111111","time":"{time}","region":"us-west-2","resources":["arn:aws:events:us-west-2:111111111111:rule/ecr-replication-audit"],"detail":{{}}}}"#,
            time = rfc3339(t),
        );
        self.truth.cases.scheduled += 1;
        self.enqueue(t, Category::Ignored);
    }

    fn broken_record(&mut self, t: i64) {
        let source = self.configured_source();
        let repository = self.repository(source);
        let at = (source.account, source.region);
        match self.rng.below(5) {
            0 => {
                // A proxy's error page captured instead of an event.
                self.line
                    .push_str("<html><body><h1>502 Bad Gateway</h1></body></html>");
                self.truth.cases.non_json += 1;
            }
            1 => {
                let not_objects = [r#"["not","an","event"]"#, r#""heartbeat""#, "42", "null"];
                self.line.push_str(not_objects[self.rng.below(4) as usize]);
                self.truth.cases.not_an_object += 1;
            }
            2 => {
                let (id, tag) = (self.new_id(), self.new_tag());
                push_line(
                    &mut self.line,
                    &id,
                    at,
                    &rfc3339(t),
                    repository,
                    None,
                    Some(&tag),
                );
                self.truth.cases.missing_digest += 1;
            }
            3 => {
                let (id, digest, tag) = (self.new_id(), self.new_digest(), self.new_tag());
                push_line(
                    &mut self.line,
                    &id,
                    at,
                    &rfc3339(t),
                    "Bad/Name",
                    Some(&digest),
                    Some(&tag),
                );
                self.truth.cases.bad_repository += 1;
            }
            _ => {
                // A hand-written event with a local time: no `Z`, no offset. (A space instead
                // of `T` would not do: RFC 3339 allows it, and so does the parser.)
                let (id, digest, tag) = (self.new_id(), self.new_digest(), self.new_tag());
                let mut time = rfc3339(t);
                time.pop();
                push_line(
                    &mut self.line,
                    &id,
                    at,
                    &time,
                    repository,
                    Some(&digest),
                    Some(&tag),
                );
                self.truth.cases.bad_time += 1;
            }
        }
        self.enqueue(t, Category::Rejected);
    }
}

/// An `ECR Image Action` PUSH, as EventBridge delivers it in the source account and Region.
fn push_line(
    out: &mut String,
    id: &str,
    (account, region): (&str, &str),
    time: &str,
    repository: &str,
    digest: Option<&str>,
    tag: Option<&str>,
) {
    let _ = write!(
        out,
        r#"{{"version":"0","id":"{id}","detail-type":"ECR Image Action","source":"aws.ecr","account":"{account}","time":"{time}","region":"{region}","resources":[],"detail":{{"result":"SUCCESS","repository-name":"{repository}","#
    );
    if let Some(digest) = digest {
        let _ = write!(out, r#""image-digest":"{digest}","#);
    }
    out.push_str(r#""action-type":"PUSH""#);
    if let Some(tag) = tag {
        let _ = write!(out, r#","image-tag":"{tag}""#);
    }
    out.push_str("}}");
}

/// An `ECR Image Action` UPDATE_STORAGE_CLASS to STANDARD (a restore), as the user guide's
/// sample has it.
fn restore_line(
    out: &mut String,
    id: &str,
    (account, region): (&str, &str),
    at: i64,
    repository: &str,
    digest: &str,
) {
    let _ = write!(
        out,
        r#"{{"version":"0","id":"{id}","detail-type":"ECR Image Action","source":"aws.ecr","account":"{account}","time":""#
    );
    write_rfc3339(out, at);
    let _ = write!(
        out,
        r#"","region":"{region}","resources":[],"detail":{{"action-type":"UPDATE_STORAGE_CLASS","target-storage-class":"STANDARD","image-digest":"{digest}","repository-name":"{repository}","result":"SUCCESS","manifest-media-type":"application/vnd.oci.image.manifest.v1+json","artifact-media-type":"application/vnd.oci.image.config.v1+json","last-activated-at":"2024-03-14T09:26:53Z"}}}}"#
    );
}

/// An `ECR Image Action` DELETE (of `tag`, or by digest), in the account and Region it happened.
fn delete_line(
    out: &mut String,
    id: &str,
    (account, region): (&str, &str),
    at: i64,
    repository: &str,
    digest: &str,
    tag: Option<&str>,
) {
    let _ = write!(
        out,
        r#"{{"version":"0","id":"{id}","detail-type":"ECR Image Action","source":"aws.ecr","account":"{account}","time":""#
    );
    write_rfc3339(out, at);
    let _ = write!(
        out,
        r#"","region":"{region}","resources":[],"detail":{{"result":"SUCCESS","repository-name":"{repository}","image-digest":"{digest}","action-type":"DELETE""#
    );
    if let Some(tag) = tag {
        let _ = write!(out, r#","image-tag":"{tag}""#);
    }
    out.push_str("}}");
}

/// An `ECR Replication Action`, as delivered in the destination account and Region.
#[allow(clippy::too_many_arguments)]
fn copy_line(
    out: &mut String,
    id: &str,
    at: i64,
    (source_account, source_region): (&str, &str),
    (account, region): (&str, &str),
    repository: &str,
    digest: &str,
    tag: Option<&str>,
    succeeded: bool,
) {
    let result = if succeeded { "SUCCESS" } else { "FAILED" };
    let _ = write!(
        out,
        r#"{{"version":"0","id":"{id}","detail-type":"ECR Replication Action","source":"aws.ecr","account":"{account}","time":""#
    );
    write_rfc3339(out, at);
    let _ = write!(
        out,
        r#"","region":"{region}","resources":["arn:aws:ecr:{region}:{account}:repository/{repository}"],"detail":{{"result":"{result}","repository-name":"{repository}","image-digest":"{digest}","source-account":"{source_account}","action-type":"REPLICATE","source-region":"{source_region}""#
    );
    if let Some(tag) = tag {
        let _ = write!(out, r#","image-tag":"{tag}""#);
    }
    out.push_str("}}");
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;
    use crate::domain::time::Timestamp;

    fn small(seed: u64) -> ScenarioSpec {
        ScenarioSpec {
            seed,
            pushes: 12_000,
            ..ScenarioSpec::default()
        }
    }

    #[test]
    fn the_prng_repeats_itself_for_a_seed_and_differs_between_seeds() {
        let draw = |seed| {
            let mut r = SplitMix64::new(seed);
            (0..64).map(|_| r.next_u64()).collect::<Vec<_>>()
        };
        assert_eq!(draw(7), draw(7));
        assert_ne!(draw(7), draw(8));
        // The reference splitmix64 output for seed 0.
        assert_eq!(SplitMix64::new(0).next_u64(), 0xE220_A839_7B1D_CDAF);
        let mut r = SplitMix64::new(42);
        for n in [1, 2, 3, 10, 1000] {
            for _ in 0..1000 {
                assert!(r.below(n) < n);
            }
        }
        for _ in 0..1000 {
            assert!((-3..=3).contains(&r.between(-3, 3)));
        }
        let hits = (0..100_000).filter(|_| r.per_mille(100)).count();
        assert!((9_000..11_000).contains(&hits), "{hits}");
    }

    #[test]
    fn times_print_as_rfc3339_like_the_domain_does() {
        for unix in [
            0,
            951_782_400,   // 2000-02-29
            1_719_792_000, // 2024-07-01
            1_719_835_199,
            4_107_542_399, // 2100-02-28T23:59:59
            -86_401,
        ] {
            assert_eq!(
                rfc3339(unix),
                Timestamp::from_millis(unix * 1000).to_string(),
                "{unix}"
            );
        }
    }

    #[test]
    fn the_default_mix_contains_every_kind_of_case() {
        let truth = small(3).truth();
        let c = truth.cases;
        let kinds = [
            ("on time", c.on_time),
            ("late", c.late),
            ("untagged", c.untagged),
            ("failed", c.failed),
            ("failed then retried", c.failed_then_retried),
            ("missing", c.missing),
            ("exactly one window", c.exactly_one_window),
            ("one second past the window", c.one_second_past_the_window),
            ("tagged pushes", c.tagged_pushes),
            ("pushes by digest", c.by_digest),
            ("retags", c.retags),
            ("unconfigured pushes", c.unconfigured_pushes),
            ("pushes no rule covers", c.uncovered_pushes),
            ("pending pushes", c.pending_pushes),
            ("unmatched copies", c.unmatched_copies),
            ("duplicates", c.duplicates),
            ("out of order", c.out_of_order),
            ("deletes", c.deletes),
            ("scans", c.scans),
            ("scheduled events", c.scheduled),
            ("non-JSON lines", c.non_json),
            ("JSON that is not an object", c.not_an_object),
            ("pushes without a digest", c.missing_digest),
            ("bad repository names", c.bad_repository),
            ("bad times", c.bad_time),
            ("restores", c.restores),
            ("replicated deletes", c.replicated_deletes),
            ("deletes applied", c.deletes_applied),
            ("deletes applied late", c.deletes_late),
            ("deletes never reported", c.deletes_never_reported),
        ];
        for (what, n) in kinds {
            assert!(n > 0, "the default mix has no {what}: {c:?}");
        }
        for status in [
            "replicated",
            "late",
            "untagged",
            "failed",
            "missing",
            "pending",
        ] {
            assert!(truth.count(status) > 0, "no {status} verdict");
        }
        for status in ["replicated", "late", "missing", "pending"] {
            assert!(truth.count_deletions(status) > 0, "no {status} delete");
        }
        assert!(
            truth.verdicts.iter().any(|v| v.trigger == "restore"),
            "no restore verdict"
        );
        // Most copies are on time; each problem is a few per cent at most.
        let all = truth.verdicts.len();
        assert!(truth.count("replicated") * 10 > all * 8, "{c:?}");
        assert_eq!(
            c.pending_pushes as usize,
            ScenarioSpec::default().pending_pushes
        );
        assert_eq!(
            truth.events.rejected,
            c.non_json + c.not_an_object + c.missing_digest + c.bad_repository + c.bad_time
        );
        assert_eq!(
            truth.events.delete,
            c.deletes + c.replicated_deletes + c.deletes_applied + c.deletes_late,
            "every delete at a source, and every DELETE a destination reported"
        );
        assert_eq!(truth.events.ignored, c.scans + c.scheduled);
        assert_eq!(truth.events.duplicate, c.duplicates);
        assert_eq!(truth.events.restore, c.restores);
        assert_eq!(
            truth.events.read,
            truth.events.push
                + truth.events.restore
                + truth.events.replication
                + truth.events.delete
                + truth.events.ignored
                + truth.events.rejected
                + truth.events.duplicate
        );
    }

    #[test]
    fn the_stream_is_json_lines_with_unique_ids_and_digests_and_ends_at_now() {
        let spec = small(11);
        let mut bytes = Vec::new();
        let truth = spec.write_events_with_truth(&mut bytes).unwrap();
        let text = String::from_utf8(bytes).unwrap();
        let mut ids = HashSet::new();
        let mut repeated = 0;
        let mut latest = i64::MIN;
        let mut lines = 0;
        for line in text.lines() {
            lines += 1;
            let Ok(Value::Object(event)) = serde_json::from_str::<Value>(line) else {
                continue;
            };
            let Some(id) = event.get("id").and_then(Value::as_str) else {
                continue;
            };
            let id = id.to_string();
            assert_eq!(id.len(), 36, "{id}");
            assert_eq!(
                id.split('-').map(str::len).collect::<Vec<_>>(),
                [8, 4, 4, 4, 12]
            );
            if !ids.insert(id) {
                repeated += 1;
            }
            for key in [
                "version",
                "detail-type",
                "source",
                "account",
                "time",
                "region",
                "resources",
                "detail",
            ] {
                assert!(event.contains_key(key), "{key} missing in {line}");
            }
            if let Some(digest) = event["detail"].get("image-digest").and_then(Value::as_str) {
                let hex = digest.strip_prefix("sha256:").unwrap();
                assert!(hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()));
            }
            let time = event["time"].as_str().unwrap();
            if let Ok(t) = Timestamp::parse_rfc3339(time) {
                latest = latest.max(t.millis() / 1000);
            }
        }
        assert_eq!(lines, truth.events.read);
        assert_eq!(repeated, truth.events.duplicate);
        assert_eq!(latest, truth.now_unix);
        assert!(text.lines().last().unwrap().contains("Scheduled Event"));
        // One digest per image: no two truths share (digest, tag, destination).
        let keys: HashSet<_> = truth
            .verdicts
            .iter()
            .map(|v| {
                (
                    &v.image_digest,
                    &v.image_tag,
                    &v.destination_account,
                    &v.destination_region,
                )
            })
            .collect();
        assert_eq!(keys.len(), truth.verdicts.len());
    }

    #[test]
    fn the_registry_documents_have_a_prefix_filter_and_cross_account_destinations() {
        let docs = ScenarioSpec::default().registry_documents();
        assert_eq!(docs.len(), 3);
        let text = serde_json::to_string(&docs).unwrap();
        assert!(text.contains("PREFIX_MATCH"));
        let (_, first) = &docs[0];
        assert_eq!(first["registryId"], "111111111111");
        let prod = destinations_of(&CONFIGURED[0], "production/billing");
        assert_eq!(
            prod,
            [
                ("111111111111", "us-east-1"),
                ("222222222222", "eu-west-1"),
                ("111111111111", "ap-southeast-2")
            ]
        );
        assert!(destinations_of(&CONFIGURED[1], "misc/scratch").is_empty());
    }

    #[test]
    fn writing_without_the_truth_gives_the_same_stream() {
        let spec = ScenarioSpec {
            pushes: 3_000,
            ..small(5)
        };
        let (mut a, mut b) = (Vec::new(), Vec::new());
        spec.write_events(&mut a).unwrap();
        let truth = spec.write_events_with_truth(&mut b).unwrap();
        assert_eq!(a, b);
        assert_eq!(truth, spec.truth());
    }
}
