//! The sweep: every expectation past its window is confirmed with ECR's own APIs before it is
//! called missing, and the gauges of what is in flight and what is watched are published. The
//! decision of what the APIs' answers confirm is the domain's ([`crate::domain::confirm`]); this
//! module only asks.
//!
//! It has to keep working on the worst day, when a destination Region is down and thousands of
//! copies fall due at once:
//! - it reads only what is due, oldest first, through the store's index of waiting
//!   expectations (keys, not items), at most [`MAX_DUE_READ`] a sweep;
//! - it confirms groups concurrently ([`MAX_IN_FLIGHT`] at once), fair across destinations
//!   (round robin, each destination with work an equal share of the slots, so one Region that
//!   keeps failing cannot take them all), and asks each question once per sweep (two tags of one
//!   digest in one destination are one DescribeImages; one DescribeImageReplicationStatus
//!   answers for every destination of a digest). AWS documents no request rate for these two
//!   APIs: the bounds above, and the SDK's retries on throttling, are how it stays polite;
//! - it watches its invocation's deadline: no group starts later than [`STOP_STARTING`] before
//!   it, a group still asking ECR [`STOP_ASKING`] before it is left unsaved (due, for the next
//!   sweep), and what was saved is published as the sweep goes and before it returns, so a
//!   timeout can at most leave a group for the next sweep, never a count unpublished;
//! - one item that cannot be read is skipped, logged with its key and counted
//!   (`StateItemsUnreadable`); everything else is confirmed.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures_util::stream::{FuturesUnordered, StreamExt};
use tokio::sync::OnceCell;
use tokio::time::Instant;

use super::handler::{Auditor, HandlerError, Invocation, SAVE_ATTEMPTS, newly_committed};
use crate::domain::config::{Destination, ReplicationConfig};
use crate::domain::confirm::{Answers, ImageFound, ReplicationStatus, confirm};
use crate::domain::correlate::{GroupKey, Status};
use crate::domain::ids::{ImageDigest, ImageTag, Region, RepositoryName};
use crate::domain::ledger::{
    Confirmation, Queue, StillExpected, TrackedGroup, Watch, live_verdict,
};
use crate::domain::metrics::{Dimensions, MetricName, Sample};
use crate::domain::time::Timestamp;
use crate::ports::events::EventsSink;
use crate::ports::metrics::MetricsSink;
use crate::ports::registry::{RegistryAt, RegistryError, RegistryView};
use crate::ports::state::{Census, DueWork, StateStore, StoreError, Versioned, Want};

/// Expectations the sweep reads from the index at most (keys, a few hundred bytes each): more
/// than a sweep of a minute can confirm.
pub const MAX_DUE_READ: usize = 20_000;
/// Groups confirmed at once.
pub const MAX_IN_FLIGHT: usize = 16;
/// Groups of one destination confirmed at once, at least: each destination with work has an
/// equal share of [`MAX_IN_FLIGHT`], never less than this (a lone destination has them all).
pub const MIN_IN_FLIGHT_PER_DESTINATION: usize = 4;
/// Due expectations of one group taken in one save: a transaction holds at most 100 items.
const MAX_RECORDS_PER_GROUP: usize = 48;
/// No group starts later than this before the invocation's deadline...
pub const STOP_STARTING: Duration = Duration::from_secs(10);
/// ...and a group still asking ECR this close to it is left unsaved, due for the next sweep:
/// what remains is for the saves under way and the last publish.
pub const STOP_ASKING: Duration = Duration::from_secs(6);
/// Samples are published while the sweep goes, when this many are waiting...
const PUBLISH_AT_SAMPLES: usize = 400;
/// ...or this long after the previous publish.
const PUBLISH_EVERY: Duration = Duration::from_secs(5);
/// The watched gauge is measured by the sweeps at minutes divisible by this: it reads the key of
/// every copy counted missing or failed, which after a long outage are many.
pub const WATCHED_GAUGE_MINUTES: i64 = 5;

/// A question asked once per sweep, whoever asks it first; the others wait for its answer.
type Cache<K, V> = Mutex<HashMap<K, Arc<OnceCell<V>>>>;

type ImageKey = (RegistryAt, RepositoryName, ImageDigest);

/// What one sweep's groups share.
pub(super) struct Sweep {
    pub(super) now: Timestamp,
    /// When a group still asking ECR is left for the next sweep.
    stop_asking: Instant,
    /// Each unavailable API and its error, logged once per sweep rather than once per group.
    causes_logged: Mutex<HashSet<String>>,
    /// Configurations read again during this sweep (once per source), before anything is called
    /// missing.
    configs: Cache<RegistryAt, InForce>,
    statuses: Cache<ImageKey, Result<Vec<ReplicationStatus>, RegistryError>>,
    images: Cache<ImageKey, Result<Option<ImageFound>, RegistryError>>,
    tags: Cache<(RegistryAt, RepositoryName, ImageTag), Result<Option<ImageDigest>, RegistryError>>,
}

/// The configuration in force, as one sweep read it.
#[derive(Clone)]
enum InForce {
    Read(Arc<ReplicationConfig>),
    /// Throttled or unreachable: asked again at the next sweep.
    Unavailable,
    /// Refused (no permission): taken as naming every destination.
    Refused,
}

/// Asks `ask` unless this sweep asked it already.
async fn once<K: Eq + Hash, V: Clone>(
    cache: &Cache<K, V>,
    key: K,
    ask: impl Future<Output = V>,
) -> V {
    let cell = cache
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .entry(key)
        .or_default()
        .clone();
    cell.get_or_init(|| ask).await.clone()
}

impl Sweep {
    /// Logs an API's failure, once per sweep for the same cause.
    pub(super) fn note(&self, api: &str, e: &RegistryError) {
        let cause = format!("{api}: {e}");
        let first = self
            .causes_logged
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(cause.clone());
        if first {
            tracing::warn!(cause = %cause, "an ECR confirmation API is unavailable; deciding with the other");
        }
    }
}

/// The due expectations of one group.
#[derive(Clone, Debug)]
struct DueGroup {
    key: GroupKey,
    tags: Vec<Option<ImageTag>>,
    due_at: Timestamp,
}

/// The order groups are taken in: round robin across destinations, oldest due first within
/// each.
struct Schedule {
    queues: HashMap<Destination, VecDeque<DueGroup>>,
    turn: VecDeque<Destination>,
}

impl Schedule {
    fn new(work: &DueWork) -> Schedule {
        let mut groups: BTreeMap<GroupKey, DueGroup> = BTreeMap::new();
        for r in &work.due {
            let g = groups.entry(r.key.clone()).or_insert_with(|| DueGroup {
                key: r.key.clone(),
                tags: Vec::new(),
                due_at: r.due_at,
            });
            g.due_at = g.due_at.min(r.due_at);
            if g.tags.len() < MAX_RECORDS_PER_GROUP && !g.tags.contains(&r.tag) {
                g.tags.push(r.tag.clone());
            }
        }
        // The previous version's groups are read whole; they are the oldest work there is.
        for key in &work.legacy {
            groups.entry(key.clone()).or_insert_with(|| DueGroup {
                key: key.clone(),
                tags: Vec::new(),
                due_at: Timestamp::from_millis(i64::MIN),
            });
        }
        let mut sorted: Vec<DueGroup> = groups.into_values().collect();
        sorted.sort_by(|a, b| (a.due_at, &a.key).cmp(&(b.due_at, &b.key)));
        let mut queues: HashMap<Destination, VecDeque<DueGroup>> = HashMap::new();
        let mut turn = VecDeque::new();
        for g in sorted {
            let d = g.key.destination.clone();
            let queue = queues.entry(d.clone()).or_default();
            if queue.is_empty() {
                turn.push_back(d);
            }
            queue.push_back(g);
        }
        Schedule { queues, turn }
    }

    /// The next group whose destination has room: an equal share of the slots among the
    /// destinations with work (queued or in flight).
    fn next(&mut self, busy: &HashMap<Destination, usize>) -> Option<DueGroup> {
        let working = self
            .queues
            .iter()
            .filter(|(d, q)| !q.is_empty() || busy.get(*d).is_some_and(|n| *n > 0))
            .count()
            .max(1);
        let share = (MAX_IN_FLIGHT / working).max(MIN_IN_FLIGHT_PER_DESTINATION);
        for _ in 0..self.turn.len() {
            let d = self.turn.pop_front()?;
            if busy.get(&d).copied().unwrap_or(0) >= share {
                self.turn.push_back(d);
                continue;
            }
            let queue = self.queues.get_mut(&d)?;
            let g = queue.pop_front();
            if !queue.is_empty() {
                self.turn.push_back(d);
            }
            if g.is_some() {
                return g;
            }
        }
        None
    }

    fn left(&self) -> usize {
        self.queues.values().map(VecDeque::len).sum()
    }
}

/// What confirming one group came to.
struct Checked {
    /// Where its copies go: the gauges' place.
    place: (Region, Destination),
    inv: Invocation,
    /// Due expectations neither confirmation API answered for: they stay due, and the
    /// invocation fails so that it is retried.
    unanswered: usize,
    /// Left unsaved: the deadline came first.
    left: bool,
    /// How its expectations moved between queues: (in flight, watched) after minus before.
    moved: (i64, i64),
}

/// How confirming one group ended.
enum Outcome {
    Saved {
        unanswered: usize,
        moved: (i64, i64),
    },
    Left,
}

/// What asking ECR about one expectation came to.
enum Answer {
    Answered,
    /// Nothing learned, for a reason that may pass: it stays due.
    Unanswered,
    /// Both registries refused (no read role, access denied): a setup gap, counted in
    /// `SourcesUnreadable`, and asked again one window later rather than every minute.
    Unreadable,
}

/// (in flight, watched): the group's items in the index in each queue, as the store counts
/// them: a record per push with a next check, and the head once, in the first queue of its
/// restores' (deletes owed are chores).
fn queues_of(t: &TrackedGroup) -> (i64, i64) {
    let mut counts = (0, 0);
    let mut add = |q: Queue| match q {
        Queue::InFlight => counts.0 += 1,
        Queue::Watched => counts.1 += 1,
        Queue::Chore => {}
    };
    for w in t.watches.values().filter(|w| w.next_check.is_some()) {
        add(w.queue());
    }
    if let Some(q) = t
        .restore_watches
        .values()
        .filter(|w| w.next_check.is_some())
        .map(Watch::queue)
        .min()
    {
        add(q);
    }
    counts
}

/// A gauge: one sample per (source Region, destination) with any, and a zero when there are
/// none so the dashboard shows "none" rather than "no data".
fn gauge(name: MetricName, census: &Census, now: Timestamp) -> Vec<Sample> {
    let census: Census = census
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(k, n)| (k.clone(), *n))
        .collect();
    if census.is_empty() {
        return vec![Sample {
            name,
            dimensions: None,
            value: 0.0,
            at: now,
        }];
    }
    census
        .iter()
        .map(|((source_region, destination), count)| Sample {
            name,
            dimensions: Some(Dimensions {
                source_region: source_region.clone(),
                destination_region: destination.region.clone(),
                destination_account: destination.account,
                repository: None,
            }),
            value: *count as f64,
            at: now,
        })
        .collect()
}

/// Moves `delta` expectations of `place` in or out of a gauge's count.
fn shift(census: &mut Census, place: &(Region, Destination), delta: i64) {
    if delta != 0 {
        let count = census.entry(place.clone()).or_default();
        *count = count.saturating_add_signed(delta);
    }
}

impl<
    S: StateStore + Sync,
    R: RegistryView + Sync,
    M: MetricsSink + Sync,
    F: MetricsSink + Sync,
    E: EventsSink + Sync,
> Auditor<S, R, M, F, E>
{
    pub(super) async fn sweep(
        &self,
        now: Timestamp,
        deadline: Instant,
        inv: &mut Invocation,
    ) -> Result<(), HandlerError> {
        self.republish_parked(inv).await;
        let minute = now.millis().div_euclid(60_000);
        let count_watched = minute % WATCHED_GAUGE_MINUTES == 0;
        let mut work = self.store.due(now, MAX_DUE_READ, count_watched).await?;
        for key in &work.unreadable {
            self.skip_unreadable(key, "the index names no readable group", inv);
        }
        let mut schedule = Schedule::new(&work);
        let sweep = Sweep {
            now,
            stop_asking: deadline.checked_sub(STOP_ASKING).unwrap_or(deadline),
            causes_logged: Mutex::new(HashSet::new()),
            configs: Mutex::new(HashMap::new()),
            statuses: Mutex::new(HashMap::new()),
            images: Mutex::new(HashMap::new()),
            tags: Mutex::new(HashMap::new()),
        };
        let stop_starting = deadline.checked_sub(STOP_STARTING).unwrap_or(deadline);
        let mut running = FuturesUnordered::new();
        let mut busy: HashMap<Destination, usize> = HashMap::new();
        let mut unanswered = 0;
        let mut last_publish = Instant::now();
        loop {
            while running.len() < MAX_IN_FLIGHT && Instant::now() < stop_starting {
                let Some(g) = schedule.next(&busy) else { break };
                *busy.entry(g.key.destination.clone()).or_default() += 1;
                // Boxed: a group's future (SDK calls inside) is large, and a few of them inline
                // would make the sweep's own future, and the stack that polls it, as large.
                running.push(Box::pin(self.check_due(g, &sweep)));
            }
            let Some(done) = running.next().await else {
                break;
            };
            if let Some(n) = busy.get_mut(&done.place.1) {
                *n = n.saturating_sub(1);
            }
            inv.absorb(done.inv);
            unanswered += done.unanswered;
            inv.summary.groups_left += u64::from(done.left);
            // The gauges say what is left after this sweep, not what it started from.
            shift(&mut work.in_flight, &done.place, done.moved.0);
            if let Some(watched) = work.watched.as_mut() {
                shift(watched, &done.place, done.moved.1);
            }
            if inv.samples.len() >= PUBLISH_AT_SAMPLES || last_publish.elapsed() >= PUBLISH_EVERY {
                self.publish(inv).await;
                last_publish = Instant::now();
            }
        }
        inv.summary.groups_left += schedule.left() as u64;
        if inv.summary.groups_left > 0 {
            tracing::warn!(
                left = inv.summary.groups_left,
                checked = inv.summary.groups_checked,
                "the sweep's deadline came first: the groups left are due for the next sweep"
            );
        }
        inv.samples
            .extend(gauge(MetricName::PendingReplications, &work.in_flight, now));
        if let Some(watched) = &work.watched {
            inv.samples
                .extend(gauge(MetricName::ReplicationsWatched, watched, now));
        }
        if unanswered > 0 {
            return Err(HandlerError::Unconfirmed(unanswered));
        }
        Ok(())
    }

    /// An item that cannot be read: skipped, logged with its key, counted.
    fn skip_unreadable(&self, key: &str, reason: &str, inv: &mut Invocation) {
        tracing::error!(
            key = %key,
            reason = %reason,
            "a stored item cannot be read: skipped (edited by hand, or written by a newer version?)"
        );
        inv.summary.items_unreadable += 1;
        inv.count(MetricName::StateItemsUnreadable);
    }

    /// Loads one due group and confirms it: what it found, ready to merge into the invocation.
    async fn check_due(&self, g: DueGroup, sweep: &Sweep) -> Checked {
        let mut inv = Invocation::new(sweep.now);
        let place = (g.key.source_region.clone(), g.key.destination.clone());
        let want: Want = (g.key, g.tags);
        let (mut unanswered, mut left, mut moved) = (0, false, (0, 0));
        match self.check_group(&want, sweep, &mut inv).await {
            Ok(Outcome::Saved {
                unanswered: u,
                moved: m,
            }) => (unanswered, moved) = (u, m),
            Ok(Outcome::Left) => left = true,
            Err(HandlerError::Store(StoreError::Unreadable { key, reason })) => {
                self.skip_unreadable(&key, &reason, &mut inv);
            }
            Err(e) => {
                tracing::error!(error = %e, "a due group could not be confirmed; it stays due");
                inv.errors.push(e);
            }
        }
        Checked {
            place,
            inv,
            unanswered,
            left,
            moved,
        }
    }

    /// Confirms every due expectation of one group with ECR, settles and saves it; again from a
    /// fresh read when another invocation saved the group first.
    async fn check_group(
        &self,
        want: &Want,
        sweep: &Sweep,
        inv: &mut Invocation,
    ) -> Result<Outcome, HandlerError> {
        let key = &want.0;
        let (window, now) = (self.settings.window, sweep.now);
        for _ in 0..SAVE_ATTEMPTS {
            let mut versioned: Versioned<TrackedGroup> =
                self.store.load(std::slice::from_ref(want)).await?.remove(0);
            let before = versioned.value.clone();
            let mut asking = Invocation::new(now);
            let asked = tokio::time::timeout_at(
                sweep.stop_asking,
                Box::pin(self.ask(key, &mut versioned.value, sweep, &mut asking)),
            )
            .await;
            let Ok((mut found, unanswered)) = asked else {
                // The deadline is near: nothing of this group is saved, so nothing is counted;
                // it stays due for the next sweep.
                return Ok(Outcome::Left);
            };
            found.extend(versioned.value.settle(key, window, now));
            if versioned.value == before {
                inv.summary.groups_checked += 1;
                inv.absorb(asking);
                return Ok(Outcome::Saved {
                    unanswered,
                    moved: (0, 0),
                });
            }
            let (in_before, watched_before) = queues_of(&before);
            let (in_after, watched_after) = queues_of(&versioned.value);
            let to_save = [(key.clone(), versioned.clone())];
            if self.store.save(&to_save).await? {
                inv.summary.groups_checked += 1;
                inv.absorb(asking);
                self.learned(key, &versioned.value, &found, now, inv);
                self.look_again(key, newly_committed(&before, &versioned.value), inv);
                return Ok(Outcome::Saved {
                    unanswered,
                    moved: (in_after - in_before, watched_after - watched_before),
                });
            }
        }
        Err(HandlerError::Contention(format!("{key:?}")))
    }

    /// Asks ECR about every due expectation of a group and records the answers in their
    /// watches. Returns what settling found before asking (a provisional match committed, a
    /// withdrawn copy counted), and how many due expectations nothing answered for.
    async fn ask(
        &self,
        key: &GroupKey,
        t: &mut TrackedGroup,
        sweep: &Sweep,
        inv: &mut Invocation,
    ) -> (Vec<crate::domain::ledger::Found>, usize) {
        let (window, now) = (self.settings.window, sweep.now);
        let mut unanswered = 0;
        // What is due without asking anyone first (a provisional match to commit, a withdrawn
        // copy to count), so that what it changes is looked into at this sweep.
        let found = t.settle(key, window, now);
        let resolution = t.resolve();
        let expectations = t.group.expectations().to_vec();
        for (e, ev) in expectations.iter().zip(resolution.evidence) {
            let watch = t.watch_mut(e);
            if watch.next_check.is_none_or(|t| t > now) {
                continue;
            }
            let v = live_verdict(e, ev, watch, window, now);
            if ev.provisional_at.is_some()
                || matches!(
                    v.status,
                    Status::Withdrawn | Status::Replicated | Status::Late
                )
            {
                // Settling does what is due (a provisional match to commit, a withdrawn copy to
                // count), with nothing to ask ECR.
                continue;
            }
            let overdue = now.since(e.pushed_at) > window.millis();
            let absent = |w: &Watch| matches!(w.confirmation, Some(Confirmation::Absent { .. }));
            // Confirmed absent by an earlier sweep that could not read the configuration in
            // force: only that is left to do.
            let only_config = overdue && absent(watch) && watch.still_expected.is_none();
            if !only_config {
                match self
                    .confirm(key, e.tag.as_ref(), v.status, watch, sweep, inv)
                    .await
                {
                    Answer::Answered => {}
                    Answer::Unanswered => {
                        unanswered += 1;
                        continue;
                    }
                    Answer::Unreadable => continue,
                }
            }
            if overdue
                && absent(watch)
                && watch.still_expected.is_none()
                && !self.still_expected(key, watch, sweep).await
            {
                unanswered += 1;
            }
        }
        // Deletes owed (delete replication): their own check (app/deletes.rs).
        unanswered += self.confirm_deletes(key, t, sweep).await;
        (found, unanswered)
    }

    /// Before a copy confirmed absent past its window is called missing: do the rules in force
    /// (read again, bypassing the cache, once per source per sweep) still name its destination
    /// for the repository? Records the answer in the watch; returns whether there was one.
    ///
    /// A configuration that cannot be read transiently leaves the question for the next sweep;
    /// one that is refused (no permission) counts as "still expected": better a page for a copy
    /// that may no longer be owed than silence for one that is.
    async fn still_expected(&self, key: &GroupKey, watch: &mut Watch, sweep: &Sweep) -> bool {
        let source = RegistryAt::source_of(key);
        let in_force = once(
            &sweep.configs,
            source.clone(),
            Box::pin(async {
                match self.read_config(source.clone(), sweep.now).await {
                    Ok(config) => InForce::Read(config),
                    Err(e) => {
                        sweep.note("DescribeRegistry", &e);
                        if e.is_transient() {
                            InForce::Unavailable
                        } else {
                            InForce::Refused
                        }
                    }
                }
            }),
        )
        .await;
        let named = match in_force {
            InForce::Unavailable => return false,
            InForce::Refused => true,
            InForce::Read(config) => config
                .expected_destinations(&key.repository)
                .destinations
                .contains(&key.destination),
        };
        watch.still_expected = Some(if named {
            StillExpected::Yes
        } else {
            tracing::info!(
                source_account = %key.source_account,
                source_region = %key.source_region,
                repository = %key.repository,
                destination_account = %key.destination.account,
                destination_region = %key.destination.region,
                "the rules in force no longer name this destination: its copy is withdrawn"
            );
            StillExpected::Unconfigured
        });
        true
    }

    /// Asks ECR about one expectation (both APIs at once, each question once per sweep) and
    /// records the answer in its watch.
    async fn confirm(
        &self,
        key: &GroupKey,
        tag: Option<&ImageTag>,
        status: Status,
        watch: &mut Watch,
        sweep: &Sweep,
        inv: &mut Invocation,
    ) -> Answer {
        let destination = RegistryAt::from(&key.destination);
        if status == Status::Untagged {
            // The copy arrived without its tag.
            let Some(tag) = tag else {
                return Answer::Answered;
            };
            return if self.check_tag(key, tag, watch, sweep).await {
                Answer::Answered
            } else {
                Answer::Unanswered
            };
        }
        let source = RegistryAt::source_of(key);
        let image_key = (key.repository.clone(), key.digest.clone());
        let (statuses, image) = tokio::join!(
            once(
                &sweep.statuses,
                (source.clone(), image_key.0.clone(), image_key.1.clone()),
                Box::pin(
                    self.registry
                        .replication_status(&source, &key.repository, &key.digest)
                ),
            ),
            once(
                &sweep.images,
                (
                    destination.clone(),
                    image_key.0.clone(),
                    image_key.1.clone()
                ),
                Box::pin(
                    self.registry
                        .image(&destination, &key.repository, &key.digest)
                ),
            ),
        );
        if let Err(e) = &statuses {
            sweep.note("DescribeImageReplicationStatus", e);
        }
        if let Err(e) = &image {
            sweep.note("DescribeImages", e);
        }
        let answers = Answers {
            image: image.as_ref().ok().map(Option::as_ref),
            statuses: statuses.as_deref().ok(),
        };
        // Nothing learned: the watch stays as it was, still due, so the retried invocation (or
        // the next sweep) asks again instead of backing off.
        let Some(confirmation) = confirm(answers, &key.destination, tag, sweep.now) else {
            if let (Err(s), Err(i)) = (&statuses, &image)
                && !s.is_transient()
                && !i.is_transient()
            {
                // Neither registry can be read: no retry will help until someone deploys the
                // read role. Counted as such, and asked again after a window, then backing off.
                self.unreadable(&destination, i, inv);
                self.unreadable_logged_only(&source, s);
                watch.checks += 1;
                return Answer::Unreadable;
            }
            return Answer::Unanswered;
        };
        let untagged = matches!(
            confirmation,
            Confirmation::Present {
                carried_tag: false,
                ..
            }
        );
        watch.confirmation = Some(confirmation);
        watch.checks += 1;
        if untagged && let Some(tag) = tag {
            // Best effort here: what is not answered now is asked at the next sweep.
            self.check_tag(key, tag, watch, sweep).await;
        }
        Answer::Answered
    }

    /// For a copy found without its tag: has the tag moved on at the source (a later push named
    /// another digest), so that the destination is right? If not, where does the destination's
    /// tag point (a stale tag)? Each lookup is made once; returns whether both are answered.
    ///
    /// A refused lookup (no permission in that account) is not asked again every minute: at the
    /// source it counts as "not moved on" (better a page than silence), in the destination the
    /// stale-tag check is given up. The log says why.
    async fn check_tag(
        &self,
        key: &GroupKey,
        tag: &ImageTag,
        watch: &mut Watch,
        sweep: &Sweep,
    ) -> bool {
        if watch.tag_moved_on.is_none() {
            let source = RegistryAt::source_of(key);
            let names = once(
                &sweep.tags,
                (source.clone(), key.repository.clone(), tag.clone()),
                Box::pin(self.registry.digest_of_tag(&source, &key.repository, tag)),
            )
            .await;
            match names {
                Ok(names) => {
                    watch.tag_moved_on =
                        Some(names.as_ref().is_some_and(|digest| *digest != key.digest));
                }
                Err(e) => {
                    sweep.note("DescribeImages", &e);
                    if e.is_transient() {
                        return false;
                    }
                    watch.tag_moved_on = Some(false);
                }
            }
        }
        if watch.tag_moved_on == Some(true) || watch.tag_points_to.is_some() {
            return true;
        }
        let destination = RegistryAt::from(&key.destination);
        let points_to = once(
            &sweep.tags,
            (destination.clone(), key.repository.clone(), tag.clone()),
            Box::pin(
                self.registry
                    .digest_of_tag(&destination, &key.repository, tag),
            ),
        )
        .await;
        match points_to {
            Ok(points_to) => {
                watch.tag_points_to = Some(points_to);
                true
            }
            Err(e) => {
                sweep.note("DescribeImages", &e);
                if !e.is_transient() {
                    watch.tag_points_to = Some(None);
                }
                !e.is_transient()
            }
        }
    }
}
