//! `replay`'s working set: [`MemoryStore`] holds open groups by key and the keys of groups
//! lately audited and let go; [`Sightings`], the event ids seen lately.
//!
//! A long replay must not hold every group it ever saw, nor every event id. Once every push of
//! a group has its successful copy, no later event can change its verdicts, so the caller may
//! retire it: its verdicts are final and only an entry per tag stays behind (the group's
//! 128-bit fingerprint and 64 bits of the (group, tag)'s), so that a late duplicate copy or a
//! repeated push is recognised as already audited instead of opening the group again.
//!
//! Those fingerprints, and the event ids, are kept for a *horizon* of stream time (the latest
//! event time read): at least the horizon, at most twice it, in two generations of which the
//! older is dropped whole. A group that has not settled is concluded and dropped once nothing
//! touched it for a horizon (see [`MemoryStore::take_expired`]). So memory follows what happens
//! within a horizon, not the length of the input.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::hash::{BuildHasher, BuildHasherDefault, Hash, Hasher};
use std::sync::{Mutex, PoisonError};

use crate::domain::config::Destination;
use crate::domain::correlate::{Group, GroupKey};
use crate::domain::ids::{AccountId, EventId, ImageDigest, ImageTag, Region, RepositoryName};
use crate::domain::time::{Timestamp, Window};

/// 128 bits from two differently seeded runs of foldhash's quality hash: at the sizes a replay
/// sees (millions of ids) an accidental collision is about as likely as a cosmic-ray bit flip,
/// and the sets stay at 16 bytes an entry. The inputs are ids and names from files the user
/// chose to audit, not an attacker's: a keyed hash (SipHash, as before) protects against what
/// cannot happen here, and its two runs per fingerprint cost a tenth of `replay`'s CPU.
fn fingerprint(value: &impl Hash) -> u128 {
    finish(&hashed(value))
}

type Fingerprinter = foldhash::quality::FoldHasher<'static>;

/// The seed of [`KeyPrint::with_tag`].
const TAG_SEED: u64 = 0xa409_3822_299f_31d0;

/// The two seeded hashers after `value`.
fn hashed(value: &impl Hash) -> [Fingerprinter; 2] {
    const SEEDS: [u64; 2] = [0x243f_6a88_85a3_08d3, 0x1319_8a2e_0370_7344];
    SEEDS.map(|seed| {
        let mut h = foldhash::quality::FixedState::with_seed(seed).build_hasher();
        value.hash(&mut h);
        h
    })
}

fn finish([high, low]: &[Fingerprinter; 2]) -> u128 {
    (u128::from(high.finish()) << 64) | u128::from(low.finish())
}

/// The hash of the working set's tables. Their keys are fingerprints (already uniformly
/// distributed: foldhash made them) and group keys read from files the user chose to audit;
/// nobody can flood an offline run's tables, so SipHash's keyed protection buys nothing there,
/// and it cost a quarter of `replay`'s CPU (BENCHMARKS.md, "What was changed"). This is the
/// multiply-rotate mix of rustc's FxHash, one word at a time.
#[derive(Clone, Copy, Default)]
pub struct FastHasher(u64);

impl FastHasher {
    const SEED: u64 = 0x517c_c1b7_2722_0a95;

    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(Self::SEED);
    }
}

impl Hasher for FastHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut words = bytes.chunks_exact(8);
        for w in &mut words {
            let mut word = [0u8; 8];
            word.copy_from_slice(w);
            self.add(u64::from_le_bytes(word));
        }
        let rest = words.remainder();
        if !rest.is_empty() {
            let mut word = [0u8; 8];
            word[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(word));
        }
    }

    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }

    fn write_u32(&mut self, i: u32) {
        self.add(u64::from(i));
    }

    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }

    fn write_u128(&mut self, i: u128) {
        self.add(i as u64);
        self.add((i >> 64) as u64);
    }

    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// The hash of the tables keyed by fingerprints: a fingerprint's bits are already uniform
/// (foldhash made them), so its high half is the hash, with no mixing at all. For a group's
/// [`KeyPrint`] that half is the image's, so an image's groups are placed together.
#[derive(Clone, Copy, Default)]
pub struct PrintHasher(u64);

type Prints = BuildHasherDefault<PrintHasher>;

impl Hasher for PrintHasher {
    fn write(&mut self, bytes: &[u8]) {
        // Only fingerprints are hashed here; anything else still gets a fair mix.
        let mut mix = FastHasher(self.0);
        mix.write(bytes);
        self.0 = mix.0;
    }

    fn write_u128(&mut self, i: u128) {
        self.0 = (i >> 64) as u64;
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// A group key's fingerprint. Made once per key an event touches: the open groups, the retired
/// groups and the retired (group, tag) pairs are all looked up by it, and the key's names are
/// hashed once. An open group keeps it, so that retiring the group hashes no names again.
#[derive(Clone, Copy, Debug)]
pub struct KeyPrint {
    fp: u128,
}

impl KeyPrint {
    pub fn of(key: &GroupKey) -> KeyPrint {
        ImagePrint::of(&key.repository, &key.digest).key(
            key.source_account,
            &key.source_region,
            &key.destination,
        )
    }

    /// The 64 bits of `(key, tag)`'s fingerprint that a retired expectation keeps (see
    /// [`Expectation`]): of the key's fingerprint and the tag, so that the names are not hashed
    /// again, and in one run of the hash, as only 64 bits are kept.
    fn with_tag(&self, tag: &Option<ImageTag>) -> u64 {
        foldhash::quality::FixedState::with_seed(TAG_SEED).hash_one((self.fp, tag))
    }
}

/// The hashers' state after an image's repository and digest, from which the print of each
/// group of the image follows ([`ImagePrint::key`]) by hashing the registries alone. An event
/// touches up to a handful of groups of one image (a push, each destination's, and those it
/// may be the copy of): the repository and the digest, most of a key's bytes, are hashed once.
#[derive(Clone)]
pub struct ImagePrint {
    state: [Fingerprinter; 2],
}

impl ImagePrint {
    pub fn of(repository: &RepositoryName, digest: &ImageDigest) -> ImagePrint {
        ImagePrint {
            state: hashed(&(repository, digest)),
        }
    }

    /// The image's own print: of its repository and digest.
    fn print(&self) -> u128 {
        finish(&self.state)
    }

    /// The print of the key of this image from `source_account`'s registry in `source_region`
    /// to `destination`: [`KeyPrint::of`] that key, without the key. Its high half is the
    /// image's (of the repository and digest) and its low half the whole key's: the tables of
    /// groups place a key by its high half, so the groups of one image (a push's destinations)
    /// lie in one run of slots, and a push's three lookups of each table cost one miss, not
    /// three (BENCHMARKS.md, "Fourteenth round"). Keys of one image are told apart by the low
    /// half (63 bits of it: a table keeps a generation in the lowest), keys of two images by
    /// the high half as well, but for a 2^-64 chance.
    pub fn key(
        &self,
        source_account: AccountId,
        source_region: &Region,
        destination: &Destination,
    ) -> KeyPrint {
        let [image, mut key] = self.state.clone();
        (source_account, source_region, destination).hash(&mut key);
        KeyPrint {
            fp: (u128::from(image.finish()) << 64) | u128::from(key.finish()),
        }
    }
}

/// The fingerprint of a tag in a source registry, Region and repository.
fn tag_fingerprint(
    account: AccountId,
    region: &Region,
    repository: &RepositoryName,
    tag: &ImageTag,
) -> u128 {
    fingerprint(&(&account, region, repository, tag))
}

/// Fingerprints remembered for at least one horizon of stream time and at most two: new ones go
/// into the current generation; when the stream has moved a horizon past the start of the
/// current generation, the previous one is dropped and the current one becomes the previous.
///
/// Both generations share one open-addressing table of slots, each a fingerprint whose lowest
/// bit says its generation (so 127 bits of it tell fingerprints apart; 63 for the groups of
/// one image, see [`ImagePrint::key`]), and, for the retired
/// expectations, the tag's (see [`Slot`]). A fingerprint is looked for once, in one run of
/// adjacent slots, where two hash sets cost a probe of each and an insert touched the set's
/// control bytes and its slots apart: a replay asks this of every event id, and these random
/// probes were a tenth of its auditing thread (BENCHMARKS.md, "Third round"). A zero
/// fingerprint marks an empty slot.
#[derive(Debug)]
struct Recent<S: Slot> {
    slots: Vec<S>,
    /// Slots held of each generation, by its bit.
    held: [usize; 2],
    /// The current generation's bit.
    current: u128,
}

/// What a [`Recent`] table holds in a slot: a fingerprint (with its generation in the lowest
/// bit, zero when empty), and whatever else tells entries of one fingerprint apart.
trait Slot: Copy + std::fmt::Debug {
    const EMPTY: Self;
    fn print(self) -> u128;
    fn with_print(self, print: u128) -> Self;
    /// The same entry, generations aside.
    fn same(self, other: Self) -> bool;
}

/// An event id's fingerprint.
impl Slot for u128 {
    const EMPTY: Self = 0;
    fn print(self) -> u128 {
        self
    }
    fn with_print(self, print: u128) -> Self {
        print
    }
    fn same(self, other: Self) -> bool {
        self & !1 == other & !1
    }
}

/// A retired expectation: its group's fingerprint, and 64 bits of the fingerprint of (group,
/// tag). A group's expectations all start their run at the group's home (which its image's
/// other groups share), so one probe, most often a cache line or two, answers both "was this
/// group retired?" and "was this push of it?", where a table of groups and one of (group, tag)
/// cost a miss each (BENCHMARKS.md, "Fifth round"). Held as three words: 24 bytes, not the 32 a `u128` field would align it to.
#[derive(Clone, Copy, Debug)]
struct Expectation {
    print: [u64; 2],
    tag: u64,
}

impl Expectation {
    /// `tag` is the expectation's own print, `None` for a group retired with none (deletes
    /// only), which only says the group was retired.
    fn new(group: u128, tag: Option<u64>) -> Self {
        Expectation {
            print: halves(group),
            // Zero: no expectation; a print that is zero counts as one.
            tag: tag.map_or(0, |t| t.max(1)),
        }
    }
}

/// A fingerprint held as two words, so that a slot aligns to 8 bytes, not the 16 of a `u128`.
fn halves(print: u128) -> [u64; 2] {
    [(print >> 64) as u64, print as u64]
}

/// The fingerprint [`halves`] split.
fn whole(halves: [u64; 2]) -> u128 {
    (u128::from(halves[0]) << 64) | u128::from(halves[1])
}

impl Slot for Expectation {
    const EMPTY: Self = Expectation {
        print: [0; 2],
        tag: 0,
    };
    fn print(self) -> u128 {
        whole(self.print)
    }
    fn with_print(self, print: u128) -> Self {
        Expectation {
            print: halves(print),
            tag: self.tag,
        }
    }
    fn same(self, other: Self) -> bool {
        self.print() & !1 == other.print() & !1 && self.tag == other.tag
    }
}

impl<S: Slot> Default for Recent<S> {
    fn default() -> Self {
        Recent {
            slots: empty_slots(FIRST_CAPACITY),
            held: [0; 2],
            current: 0,
        }
    }
}

const FIRST_CAPACITY: usize = 1 << 10;

/// Tag pushes noted before they are placed in their table together (see
/// [`MemoryStore::place_tag_pushes`]).
const TAG_PUSHES_PLACED_AT_ONCE: usize = 256;

/// `capacity` empty slots, each written now. `vec![S::EMPTY; n]` asks the allocator for zeroed
/// memory when the empty slot is all zeros (an id's fingerprint), and a large block of it is
/// fresh pages, mapped to the kernel's shared zero page until first written. Then a slot read
/// before its page is written (the duplicate check reads ahead, and a rebuild looks for the
/// free slot before it writes) faults twice per page, and the second fault, a copy on write,
/// also flushes the page from the other core's TLB, an interrupt there. Written here, each
/// page faults once, on this thread. The value is hidden from the optimizer, which would
/// otherwise turn the writes back into a request for zeroed memory.
fn empty_slots<S: Slot>(capacity: usize) -> Vec<S> {
    let mut slots = Vec::with_capacity(capacity);
    slots.resize(capacity, std::hint::black_box(S::EMPTY));
    slots
}

impl<S: Slot> Recent<S> {
    /// The entry as a slot holds it, without its generation: its fingerprint never zero.
    fn key(entry: S) -> S {
        entry.with_print(match entry.print() & !1 {
            0 => 2,
            key => key,
        })
    }

    /// Where the run of slots for a fingerprint begins: its high 64 bits (the low ones hold the
    /// generation), uniform already (across images, for a group's: [`ImagePrint::key`]),
    /// scaled to the table's size (which need not be a power of two: it grows by half, so that
    /// its memory stays close to what it holds).
    fn home(&self, print: u128) -> usize {
        (((print >> 64) * self.slots.len() as u128) >> 64) as usize
    }

    /// The slot after `i`, the last one followed by the first.
    fn after(&self, i: usize) -> usize {
        if i + 1 == self.slots.len() { 0 } else { i + 1 }
    }

    /// The first slot of the run from `print`'s home that `hit` accepts, or the empty one
    /// ending the run.
    fn probe(&self, print: u128, hit: impl Fn(S) -> bool) -> (usize, bool) {
        let mut i = self.home(print);
        loop {
            let slot = self.slots[i];
            if slot.print() == 0 {
                return (i, false);
            }
            if hit(slot) {
                return (i, true);
            }
            i = self.after(i);
        }
    }

    /// Reads the slot where each of `prints` is first looked for, all in one go, so that the
    /// misses overlap (see [`Sightings::read_ahead`]). Only a hint: nothing is changed.
    fn read_ahead(&self, prints: impl Iterator<Item = u128>) {
        let touched = prints.fold(0u128, |acc, print| {
            acc ^ self.slots[self.home(print)].print()
        });
        std::hint::black_box(touched);
    }

    /// The slot holding `key`, or the empty one ending its run.
    fn find(&self, key: S) -> (usize, bool) {
        self.probe(key.print(), |slot| slot.same(key))
    }

    fn contains(&self, entry: S) -> bool {
        self.find(Recent::key(entry)).1
    }

    /// Whether any entry of the fingerprint `print` is held: all of them are in the run from
    /// its home.
    fn holds_print(&self, print: u128) -> bool {
        self.any_of(print, |_| true)
    }

    /// Whether any entry of the fingerprint `print` passes `test`.
    fn any_of(&self, print: u128, test: impl Fn(S) -> bool) -> bool {
        let key = Recent::key(S::EMPTY.with_print(print)).print();
        self.probe(key, |slot| slot.print() & !1 == key && test(slot))
            .1
    }

    /// Remembers `entry` in the current generation unless either generation holds it already;
    /// whether it was new.
    fn insert(&mut self, entry: S) -> bool {
        self.insert_or(entry, |_, _| {})
    }

    /// [`Recent::insert`], and an entry the previous generation holds is moved into the current
    /// one: remembered for another horizon from now, as if it were new.
    fn insert_or_renew(&mut self, entry: S) -> bool {
        self.insert_or(entry, |recent, i| {
            let slot = recent.slots[i];
            let current = recent.current;
            if slot.print() & 1 != current {
                recent.slots[i] = slot.with_print(slot.print() & !1 | current);
                recent.held[(current ^ 1) as usize] -= 1;
                recent.held[current as usize] += 1;
            }
        })
    }

    /// [`Recent::insert`], calling `held` with the slot of an entry already held.
    fn insert_or(&mut self, entry: S, held: impl FnOnce(&mut Self, usize)) -> bool {
        let key = Recent::key(entry);
        let (i, found) = self.find(key);
        if found {
            held(self, i);
            return false;
        }
        self.slots[i] = key.with_print(key.print() | self.current);
        self.held[self.current as usize] += 1;
        // At most three quarters full, so that a run stays a few slots long.
        if 4 * self.len() > 3 * self.slots.len() {
            self.rebuild(self.slots.len() + self.slots.len() / 2);
        }
        true
    }

    /// Moves every slot of the generations still held into a table of `capacity` slots.
    fn rebuild(&mut self, capacity: usize) {
        let old = std::mem::replace(&mut self.slots, empty_slots(capacity));
        for slot in old.into_iter().filter(|s| s.print() != 0) {
            let (i, _) = self.find(slot);
            self.slots[i] = slot;
        }
    }

    fn rotate(&mut self) {
        let previous = self.current ^ 1;
        // Chosen before any slot is emptied: see `compact`.
        let start = self.slots.iter().position(|s| s.print() == 0);
        // The table keeps its size: the next generation is about as large, and growing a
        // table again from nothing would copy it over and over.
        self.slots
            .iter_mut()
            .filter(|s| s.print() != 0 && s.print() & 1 == previous)
            .for_each(|s| *s = S::EMPTY);
        self.held[previous as usize] = 0;
        self.current = previous;
        if let Some(start) = start {
            self.compact(start);
        }
    }

    /// Places every entry again, in place, after slots were emptied (which breaks the runs
    /// that went through them), walking the table once from `start`, a slot that was empty
    /// before any was emptied: no run crossed it, so each entry's run from its home was placed
    /// again before the entry is reached, and it lands at or before where it was, which no
    /// entry placed before it runs through. (A slot emptied just now will not do as the start:
    /// a run through it from before it would be placed last, after an entry placed through
    /// its slots, and moving up it could leave a gap in that entry's run.) The table is at
    /// most three quarters full, so such a slot exists.
    fn compact(&mut self, start: usize) {
        let mut i = start;
        for _ in 1..self.slots.len() {
            i = self.after(i);
            let slot = std::mem::replace(&mut self.slots[i], S::EMPTY);
            if slot.print() != 0 {
                let (j, _) = self.find(slot);
                self.slots[j] = slot;
            }
        }
    }

    fn len(&self) -> usize {
        self.held[0] + self.held[1]
    }
}

/// An open group, its key, and when the stream last touched it (the stream's time then, which
/// is never before the event's own).
#[derive(Debug)]
pub struct OpenGroup {
    pub key: GroupKey,
    pub group: Group,
    pub touched: Timestamp,
    /// The key's fingerprint, by which the store holds it.
    pub print: KeyPrint,
    /// Whether the group was retired lately when it was opened: opened again (by a delete, a
    /// push or restore read later, or a copy), and so possibly given repeats of what it held.
    pub reopened: bool,
    /// Copies that came to a group open again as further results for a push already audited
    /// (see [`MemoryStore::group_of_copy`]): told when they came, as the push they repeat is
    /// forgotten a horizon or two later.
    pub repeats: Vec<EventId>,
}

/// What the store holds right now, for tests and benchmarks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Holding {
    pub open_groups: usize,
    pub event_ids: usize,
    pub retired_groups: usize,
    pub retired_expectations: usize,
    /// Pushes of tags remembered (of each tag, each push: its time and image).
    pub tags: usize,
}

/// A tag's push, lately seen, for telling whether a tag had moved on to another digest at the
/// source (see [`MemoryStore::tag_moved`]): the fingerprint of (source account, Region,
/// repository, tag), whose run of slots holds every push of the tag; when; and 64 bits of the
/// print of the image pushed ([`ImagePrint`], of the repository and digest). One slot of a
/// [`Recent`] table, half a cache line, where a hash map of tags to their pushes held 64 bytes
/// and a control byte apart (BENCHMARKS.md, "Thirteenth round").
#[derive(Clone, Copy, Debug)]
struct TagPush {
    print: [u64; 2],
    at: i64,
    image: u64,
}

impl TagPush {
    fn new(tag: u128, at: Timestamp, image: u128) -> Self {
        TagPush {
            print: halves(tag),
            at: at.millis(),
            image: TagPush::image(image),
        }
    }

    /// The 64 bits of an image's print that a push keeps.
    fn image(print: u128) -> u64 {
        print as u64
    }
}

impl Slot for TagPush {
    const EMPTY: Self = TagPush {
        print: [0; 2],
        at: 0,
        image: 0,
    };
    fn print(self) -> u128 {
        whole(self.print)
    }
    fn with_print(self, print: u128) -> Self {
        TagPush {
            print: halves(print),
            ..self
        }
    }
    fn same(self, other: Self) -> bool {
        self.print() & !1 == other.print() & !1 && self.at == other.at && self.image == other.image
    }
}

/// The event ids seen lately (EventBridge delivers at least once), as fingerprints kept for one
/// to two horizons of stream time, in generations that turn over when the stream's clock says
/// so, as [`MemoryStore`]'s do. Apart from the store, so that `replay` can tell duplicates on
/// its reading thread (see [`super::engine::Gate`]).
#[derive(Debug, Default)]
pub struct Sightings {
    seen: Recent<u128>,
    generation_start: Option<Timestamp>,
}

impl Sightings {
    /// Whether this is the first time lately the event id is seen (and remembers it).
    pub fn first_sighting(&mut self, id: &EventId) -> bool {
        self.first_sighting_of(Sightings::print(id))
    }

    /// The fingerprint by which an event id is known.
    pub fn print(id: &EventId) -> u128 {
        fingerprint(id)
    }

    /// [`Sightings::first_sighting`] of the id whose [`Sightings::print`] `print` is.
    pub fn first_sighting_of(&mut self, print: u128) -> bool {
        self.seen.insert(print)
    }

    /// Reads the slot where each of `prints` is first looked for, all in one go, so that the
    /// lookups that follow find them in the cache. Over a day of ids the table is larger than
    /// the caches, and a lookup a record, each waiting for its own miss, was a quarter of
    /// `replay`'s reading thread; read together, the misses overlap (BENCHMARKS.md, "Sixth
    /// round"). Only a hint: nothing is changed, and a table that grows meanwhile is just
    /// looked up as usual.
    pub fn read_ahead(&self, prints: impl Iterator<Item = u128>) {
        self.seen.read_ahead(prints);
    }

    /// Moves the stream's time to `clock`: ids older than two horizons are dropped.
    pub fn advance(&mut self, clock: Timestamp, horizon: Window) {
        if turn_over(&mut self.generation_start, clock, horizon) {
            self.seen.rotate();
        }
    }

    pub fn len(&self) -> usize {
        self.seen.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Whether a new generation begins at `clock` (a horizon after the current one began), and
/// from when the current one counts.
fn turn_over(start: &mut Option<Timestamp>, clock: Timestamp, horizon: Window) -> bool {
    match *start {
        Some(began) if clock.since(began) < horizon.millis() => false,
        Some(_) => {
            *start = Some(clock);
            true
        }
        None => {
            *start = Some(clock);
            false
        }
    }
}

/// Groups from which on [`sorted_by_key`] sorts on two threads.
const SORTED_ON_TWO_THREADS: usize = 1 << 12;

/// `groups` in key order. A large set is sorted in two halves, one on a thread of its own, and
/// the halves merged: the groups left open at the end of a stream are sorted after the reading
/// thread is done, and on one thread the sort was a third of the tenth of a second the one-day
/// replay spends there with a core idle (BENCHMARKS.md, "Ninth round"). Keys are unique, so
/// the order is the one a single sort gives, however the work is split.
#[allow(clippy::vec_box)] // Boxed on purpose: see `drain_sorted`.
fn sorted_by_key(mut groups: Vec<Box<OpenGroup>>) -> Vec<Box<OpenGroup>> {
    let sort = |some: &mut Vec<Box<OpenGroup>>| some.sort_unstable_by(|a, b| a.key.cmp(&b.key));
    if groups.len() < SORTED_ON_TWO_THREADS {
        sort(&mut groups);
        return groups;
    }
    let right = Mutex::new(groups.split_off(groups.len() / 2));
    let sort_right = || sort(&mut right.lock().unwrap_or_else(PoisonError::into_inner));
    std::thread::scope(|scope| {
        let spawned = std::thread::Builder::new().spawn_scoped(scope, sort_right);
        sort(&mut groups);
        // No thread to be had (a limit on processes): both halves here, rather than no report.
        if spawned.is_err() {
            sort_right();
        }
    });
    let right = right.into_inner().unwrap_or_else(PoisonError::into_inner);
    let mut merged = Vec::with_capacity(groups.len() + right.len());
    let mut right = right.into_iter().peekable();
    for left in groups {
        while let Some(first) = right.next_if(|r| r.key < left.key) {
            merged.push(first);
        }
        merged.push(left);
    }
    merged.extend(right);
    merged
}

#[derive(Debug, Default)]
pub struct MemoryStore {
    /// Open groups by their key's fingerprint (see [`KeyPrint`]): a lookup hashes no names and
    /// compares no strings. Boxed: an open group is over 400 bytes, and the table's empty
    /// slots (an eighth to a half of it), and the copy it makes as it grows, cost that much
    /// each when held in place (BENCHMARKS.md, "Fifth round").
    groups: HashMap<u128, Box<OpenGroup>, Prints>,
    /// Expectations of groups lately retired: a copy for one of these groups is a repeat, not
    /// an orphan, and a push again of one of these (group, tag) is not a new one.
    retired: Recent<Expectation>,
    /// Groups lately retired, by the generation of `retired` they were first held in.
    retired_groups: [usize; 2],
    /// Pushes of each tag lately seen.
    tag_pushes: Recent<TagPush>,
    /// Pushes of tags not yet placed in `tag_pushes`, in the order they came (see
    /// [`MemoryStore::place_tag_pushes`]).
    tags_to_place: Vec<TagPush>,
    /// When the current generation of fingerprints began.
    generation_start: Option<Timestamp>,
    /// When open groups are next looked at for expiry.
    next_expiry_check: Option<Timestamp>,
    /// Settled groups (by fingerprint) by the time after which they may be retired. Entries go
    /// stale when the group changes; the caller of [`MemoryStore::retirable`] checks them again.
    retire_queue: BinaryHeap<Reverse<(Timestamp, u128)>>,
}

impl MemoryStore {
    /// Moves the stream's time to `clock`: fingerprints older than two horizons are dropped.
    pub fn advance(&mut self, clock: Timestamp, horizon: Window) {
        if turn_over(&mut self.generation_start, clock, horizon) {
            self.retired.rotate();
            self.retired_groups[self.retired.current as usize] = 0;
            // Each into the generation it came in.
            self.place_tag_pushes();
            self.tag_pushes.rotate();
        }
    }

    /// Takes out every open group nothing touched for more than `horizon` before `clock`, in key
    /// order. Open groups are looked at every quarter horizon of stream time, so a group goes
    /// between one and one and a quarter horizons after it was last touched; between looks this
    /// costs one comparison.
    pub fn take_expired(&mut self, clock: Timestamp, horizon: Window) -> Vec<Box<OpenGroup>> {
        let next = Timestamp::from_millis(clock.millis().saturating_add(horizon.millis() / 4));
        match self.next_expiry_check {
            Some(due) if clock < due => return Vec::new(),
            Some(_) => self.next_expiry_check = Some(next),
            None => {
                self.next_expiry_check = Some(next);
                return Vec::new();
            }
        }
        let mut expired: Vec<Box<OpenGroup>> = self
            .groups
            .extract_if(|_, open| clock.since(open.touched) > horizon.millis())
            .map(|(_, open)| open)
            .collect();
        expired.sort_by(|a, b| a.key.cmp(&b.key));
        expired
    }

    /// The group a copy (carrying `tag`) belongs to, opened (empty) if need be and marked
    /// touched at `clock`; `None` when the copy is a further result for a push already audited:
    /// its group was retired, and the copy has no tag, or its tag (or a push by digest, which
    /// takes any tag) was among the group's pushes. A tagged copy whose tag was never pushed
    /// there opens the group again, to wait for its push (a retag read later).
    ///
    /// A group open again (by a delete, a push or restore, or a copy) takes the copy whatever it
    /// is, as what the group holds or a trigger read later may owe it; if it is such a repeat,
    /// `copy` (the copy's event id) is remembered as one, so that it is not listed as matching
    /// no push should nothing take it. `copy` is `None` for what is not a copy.
    pub fn group_of_copy(
        &mut self,
        key: impl FnOnce() -> GroupKey,
        print: &KeyPrint,
        tag: &Option<ImageTag>,
        copy: Option<&EventId>,
        clock: Timestamp,
    ) -> Option<&mut Group> {
        let repeat = match self.groups.get(&print.fp) {
            None if self.is_repeat_copy(print, tag) => return None,
            None => false,
            Some(open) => copy.is_some() && open.reopened && self.is_repeat_copy(print, tag),
        };
        let open = self.open_mut(key, print, clock);
        if let (true, Some(id)) = (repeat, copy) {
            open.repeats.push(id.clone());
        }
        Some(&mut open.group)
    }

    /// Whether a copy carrying `tag`, of the group whose key's print is `print`, is a further
    /// result for a push already audited: the group was retired lately with a push or restore
    /// (not deletes alone, which no copy repeats), and the copy has no tag, or its tag (or a
    /// push by digest, which takes any tag) was among the group's pushes.
    pub fn is_repeat_copy(&self, print: &KeyPrint, tag: &Option<ImageTag>) -> bool {
        self.retired.any_of(print.fp, |e| e.tag != 0)
            && (tag.is_none()
                || self.is_retired_expectation(print, tag)
                || self.is_retired_expectation(print, &None))
    }

    /// Remembers that `tag` was pushed at `at` as the image `image` is the print of, to
    /// `repository` in the registry of `account` in `region`. The image stands for its digest:
    /// the tag's print holds the repository already, and the image's print was made anyway (the
    /// digest hashed again was nearly 2% of the auditing thread: BENCHMARKS.md, "Seventh round").
    pub fn note_tag_push(
        &mut self,
        account: AccountId,
        region: &Region,
        repository: &RepositoryName,
        image: &ImagePrint,
        tag: &ImageTag,
        at: Timestamp,
    ) {
        self.tags_to_place.push(TagPush::new(
            tag_fingerprint(account, region, repository, tag),
            at,
            image.print(),
        ));
        if self.tags_to_place.len() == TAG_PUSHES_PLACED_AT_ONCE {
            self.place_tag_pushes();
        }
    }

    /// Places the tag pushes noted since the last time in the table, in the order they came.
    /// Each lands in a slot of its own across a table larger than the caches, and placed as it
    /// came, each waited for its own miss (`note_tag_push` was 8% of the one-day replay's
    /// auditing thread); their slots read together first, the misses overlap. The table is
    /// the same as if each had been placed when it came: pushes are placed before the table
    /// is read ([`MemoryStore::tag_moved`]) and before it turns over.
    fn place_tag_pushes(&mut self) {
        self.tag_pushes
            .read_ahead(self.tags_to_place.iter().map(|push| push.print()));
        for push in self.tags_to_place.drain(..) {
            // A push seen again (the same tag, time and image) is remembered for another
            // horizon, as the map of tags this replaced added it to its current generation
            // again.
            self.tag_pushes.insert_or_renew(push);
        }
    }

    /// Whether `tag` was pushed, lately, as another digest than `key`'s, after `after` and no
    /// later than `by`: the tag had moved on at the source by then.
    pub fn tag_moved(
        &mut self,
        key: &GroupKey,
        tag: &ImageTag,
        after: Timestamp,
        by: Timestamp,
    ) -> bool {
        self.place_tag_pushes();
        let fp = tag_fingerprint(key.source_account, &key.source_region, &key.repository, tag);
        let image = TagPush::image(ImagePrint::of(&key.repository, &key.digest).print());
        self.tag_pushes.any_of(fp, |push| {
            push.image != image && push.at > after.millis() && push.at <= by.millis()
        })
    }

    /// The group of `print`'s key if it is open (never opens one), marked touched at `clock`.
    pub fn open_group(&mut self, print: &KeyPrint, clock: Timestamp) -> Option<&mut Group> {
        let open = self.groups.get_mut(&print.fp)?;
        open.touched = clock;
        Some(&mut open.group)
    }

    pub fn is_retired_expectation(&self, print: &KeyPrint, tag: &Option<ImageTag>) -> bool {
        self.retired
            .contains(Expectation::new(print.fp, Some(print.with_tag(tag))))
    }

    /// The group of `key` (whose print `print` is), opened (empty) if need be, marked touched
    /// at `clock`. The key is only made when the group is opened.
    pub fn group_mut(
        &mut self,
        key: impl FnOnce() -> GroupKey,
        print: &KeyPrint,
        clock: Timestamp,
    ) -> &mut Group {
        &mut self.open_mut(key, print, clock).group
    }

    /// [`MemoryStore::group_mut`], the open group whole.
    fn open_mut(
        &mut self,
        key: impl FnOnce() -> GroupKey,
        print: &KeyPrint,
        clock: Timestamp,
    ) -> &mut OpenGroup {
        let retired = &self.retired;
        let open = self.groups.entry(print.fp).or_insert_with(|| {
            Box::new(OpenGroup {
                key: key(),
                group: Group::default(),
                touched: clock,
                print: *print,
                // Where a push or a copy opens it, the probe just made found this line.
                reopened: retired.holds_print(print.fp),
                repeats: Vec::new(),
            })
        });
        open.touched = clock;
        open
    }

    /// Queues a settled group for retirement once the stream has moved past `after`.
    pub fn schedule_retirement(&mut self, print: &KeyPrint, after: Timestamp) {
        self.retire_queue.push(Reverse((after, print.fp)));
    }

    /// The queued retirements due before `watermark`, taken off the queue, for groups still
    /// open: each with the time it was queued for and its key's fingerprint, in the order of
    /// (time, key). The caller takes each group out ([`MemoryStore::take`]) and must still
    /// check that it is settled and that its time did not move (see [`MemoryStore::keep`]).
    pub fn retirable(&mut self, watermark: Timestamp) -> Vec<(Timestamp, u128)> {
        let mut due = Vec::new();
        while let Some(&Reverse((after, fp))) = self.retire_queue.peek()
            && after < watermark
        {
            self.retire_queue.pop();
            if self.groups.contains_key(&fp) {
                due.push((after, fp));
            }
        }
        if due.len() > 1 {
            // The order of the verdicts handed on: by time, then by key, as a queue of keys
            // would have given them.
            let groups = &self.groups;
            due.sort_by(|(a, fa), (b, fb)| {
                a.cmp(b).then_with(|| groups[fa].key.cmp(&groups[fb].key))
            });
        }
        due
    }

    /// Takes the open group of the fingerprint out of the store.
    pub fn take(&mut self, fp: u128) -> Option<Box<OpenGroup>> {
        self.groups.remove(&fp)
    }

    /// Puts back a group that [`MemoryStore::take`] took out but that is not done.
    pub fn keep(&mut self, group: Box<OpenGroup>) {
        self.groups.insert(group.print.fp, group);
    }

    /// Remembers a retired group (whose key's print is `print`), so later events about it are
    /// recognised.
    pub fn mark_retired(&mut self, print: &KeyPrint, group: &Group) {
        if !self.retired.holds_print(print.fp) {
            self.retired_groups[self.retired.current as usize] += 1;
        }
        if group.expectations().is_empty() {
            self.retired.insert(Expectation::new(print.fp, None));
        }
        for e in group.expectations() {
            self.retired
                .insert(Expectation::new(print.fp, Some(print.with_tag(&e.tag))));
        }
    }

    /// Every group still open, in key order (a stable report).
    pub fn drain_sorted(&mut self) -> Vec<Box<OpenGroup>> {
        self.retire_queue.clear();
        // Sorted as they are held, boxed: an open group is some 300 bytes, and sorting them
        // moved out of their boxes was 3% of the one-day replay's auditing thread, all of it
        // after the last record was read (BENCHMARKS.md, "Seventh round").
        let all: Vec<Box<OpenGroup>> = self.groups.drain().map(|(_, open)| open).collect();
        sorted_by_key(all)
    }

    pub fn open_groups(&self) -> usize {
        self.groups.len()
    }

    pub fn holding(&self) -> Holding {
        Holding {
            open_groups: self.groups.len(),
            event_ids: 0,
            retired_groups: self.retired_groups[0] + self.retired_groups[1],
            retired_expectations: self.retired.len(),
            // Pushes still to place count as held (a repeat among them, once more).
            tags: self.tag_pushes.len() + self.tags_to_place.len(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::hash::BuildHasher;

    use super::*;
    use crate::domain::ids::ImageDigest;
    use std::collections::HashSet;

    type Fast = BuildHasherDefault<FastHasher>;

    fn key() -> GroupKey {
        GroupKey::example()
    }

    #[test]
    fn the_fast_hash_tells_apart_keys_that_differ_in_one_byte_and_spreads_its_top_bits() {
        let build = Fast::default();
        let mut hashes = HashSet::new();
        let mut top_bits = HashSet::new();
        for i in 0..10_000u32 {
            let digest = format!("sha256:{i:064x}");
            let key = GroupKey {
                digest: ImageDigest::parse(&digest).unwrap(),
                ..key()
            };
            let h = build.hash_one(&key);
            hashes.insert(h);
            // hashbrown places a key by its top 7 bits (and the low ones for the bucket).
            top_bits.insert(h >> 57);
        }
        assert_eq!(hashes.len(), 10_000);
        assert_eq!(top_bits.len(), 128);
        // Fingerprints, as the tables hold them.
        let fps: HashSet<u64> = (0..10_000u128)
            .map(|i| build.hash_one(fingerprint(&i)))
            .collect();
        assert_eq!(fps.len(), 10_000);
    }

    #[test]
    fn an_images_groups_are_placed_together_and_still_told_apart() {
        let image = ImagePrint::of(&key().repository, &key().digest);
        let region = |r: &str| Region::parse(r).unwrap();
        let account = |a: &str| AccountId::parse(a).unwrap();
        let keys: Vec<GroupKey> = ["eu-west-1", "eu-central-1", "ap-south-1"]
            .into_iter()
            .flat_map(|r| ["444455556666", "777788889999"].map(|a| (r, a)))
            .map(|(r, a)| GroupKey {
                destination: Destination {
                    account: account(a),
                    region: region(r),
                },
                ..key()
            })
            .collect();
        let prints: Vec<u128> = keys.iter().map(|k| KeyPrint::of(k).fp).collect();
        for (k, &print) in keys.iter().zip(&prints) {
            let made = image.key(k.source_account, &k.source_region, &k.destination);
            assert_eq!(
                made.fp, print,
                "the same print, made from the image or the key"
            );
        }
        // One home, in the retired table and in the open groups' map.
        assert!(prints.iter().all(|p| p >> 64 == prints[0] >> 64));
        let lows: HashSet<u64> = prints.iter().map(|p| (p & !1) as u64).collect();
        assert_eq!(lows.len(), keys.len(), "each group still told apart");
        let hash = |p: &u128| Prints::default().hash_one(p);
        assert!(prints.iter().all(|p| hash(p) == hash(&prints[0])));

        let mut other = key();
        other.digest = ImageDigest::parse("sha256:bbbb").unwrap();
        assert_ne!(KeyPrint::of(&other).fp >> 64, prints[0] >> 64);

        let mut store = MemoryStore::default();
        let mut group = Group::default();
        group.add_push(None, Timestamp::from_millis(1_000));
        for k in &keys[..3] {
            store.mark_retired(&KeyPrint::of(k), &group);
        }
        for (i, k) in keys.iter().enumerate() {
            assert_eq!(store.is_retired_expectation(&KeyPrint::of(k), &None), i < 3);
        }
        let held = &store.retired;
        let home = held.home(prints[0]);
        let run: Vec<usize> = (0..3).map(|i| (home + i) % held.slots.len()).collect();
        assert!(
            run.iter()
                .all(|&i| held.slots[i].print() >> 64 == prints[0] >> 64),
            "the three expectations lie in the slots from the image's home"
        );
    }

    #[test]
    fn a_retired_group_and_each_of_its_tags_are_recognised_and_nothing_else() {
        let tag = |s: &str| Some(ImageTag::parse(s).unwrap());
        let mut group = Group::default();
        group.add_push(tag("v1"), Timestamp::from_millis(1_000));
        group.add_push(None, Timestamp::from_millis(2_000));
        let mut store = MemoryStore::default();
        store.mark_retired(&KeyPrint::of(&key()), &group);
        let now = Timestamp::from_millis(3_000);

        assert!(store.is_retired_expectation(&KeyPrint::of(&key()), &tag("v1")));
        assert!(store.is_retired_expectation(&KeyPrint::of(&key()), &None));
        assert!(!store.is_retired_expectation(&KeyPrint::of(&key()), &tag("v2")));
        assert!(
            store
                .group_of_copy(key, &KeyPrint::of(&key()), &tag("v1"), Some(&id("c1")), now)
                .is_none(),
            "a copy for one of its pushes is a repeat"
        );
        assert!(
            store
                .group_of_copy(key, &KeyPrint::of(&key()), &None, Some(&id("c2")), now)
                .is_none(),
            "a copy without a tag is a repeat"
        );

        let mut other = key();
        other.digest = ImageDigest::parse("sha256:bbbb").unwrap();
        assert!(!store.is_retired_expectation(&KeyPrint::of(&other), &tag("v1")));
        assert!(
            store
                .group_of_copy(
                    || other.clone(),
                    &KeyPrint::of(&other),
                    &tag("v1"),
                    Some(&id("c3")),
                    now
                )
                .is_some(),
            "a new group is opened"
        );
        assert_eq!(store.open_groups(), 1);
    }

    #[test]
    fn retirements_due_come_by_time_then_key_once_each_and_only_for_open_groups() {
        let mut store = MemoryStore::default();
        let keys: Vec<GroupKey> = ["sha256:cccc", "sha256:aaaa", "sha256:bbbb", "sha256:dddd"]
            .iter()
            .map(|d| GroupKey {
                digest: ImageDigest::parse(d).unwrap(),
                ..key()
            })
            .collect();
        let t = Timestamp::from_millis;
        for (i, k) in keys.iter().enumerate() {
            let print = KeyPrint::of(k);
            store.group_mut(|| k.clone(), &print, t(0));
            // Two at 10, one at 5, the last (dddd) at 20: past the watermark.
            let after = [t(10), t(10), t(5), t(20)][i];
            store.schedule_retirement(&print, after);
        }
        // Queued twice: both entries come, the caller finds the group gone the second time.
        store.schedule_retirement(&KeyPrint::of(&keys[1]), t(10));
        // Queued but closed already: not handed on.
        let gone = GroupKey {
            digest: ImageDigest::parse("sha256:eeee").unwrap(),
            ..key()
        };
        store.schedule_retirement(&KeyPrint::of(&gone), t(1));

        let due: Vec<(Timestamp, String)> = store
            .retirable(t(15))
            .into_iter()
            .map(|(after, fp)| (after, store.groups[&fp].key.digest.to_string()))
            .collect();
        let expected = [(5, "bbbb"), (10, "aaaa"), (10, "aaaa"), (10, "cccc")]
            .map(|(ms, d)| (t(ms), format!("sha256:{d}")));
        assert_eq!(due, expected);
        assert_eq!(store.retirable(t(15)), vec![], "taken off the queue");
        assert_eq!(store.retirable(t(21)).len(), 1);
    }

    /// A fixed stream of well-spread numbers (xorshift64).
    fn xorshift(mut state: u64) -> impl FnMut() -> u64 {
        move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        }
    }

    #[test]
    fn the_two_generations_in_one_table_keep_what_two_sets_kept_through_growth_and_rotation() {
        // Against two plain sets, over a stream of fingerprints with repeats, rotations and
        // fingerprints that differ in their lowest bit only (which the table drops).
        let mut recent = Recent::default();
        let (mut current, mut previous) = (HashSet::new(), HashSet::new());
        let mut next = xorshift(0x2545_f491_4f6c_dd1d);
        for step in 0..200_000u32 {
            if step % 30_000 == 29_999 {
                recent.rotate();
                previous = std::mem::take(&mut current);
            }
            let r = next();
            // A tenth of the draws repeat one of a few thousand fingerprints.
            let fp = if r.is_multiple_of(10) {
                u128::from(r % 4_096) << 64 | 6
            } else {
                u128::from(r) << 64 | u128::from(next())
            } & !1;
            if step % 3 == 0 {
                assert_eq!(
                    recent.contains(fp),
                    current.contains(&fp) || previous.contains(&fp),
                    "step {step}"
                );
            } else {
                let new = !previous.contains(&fp) && current.insert(fp);
                assert_eq!(recent.insert(fp), new, "step {step}");
                assert!(!recent.insert(fp | 1), "the lowest bit is not told apart");
            }
            assert_eq!(recent.len(), current.len() + previous.len());
        }
        assert!(4 * recent.len() <= 3 * recent.slots.len());
        // Zero is a fingerprint like any other.
        assert!(recent.insert(0));
        assert!(recent.contains(0) && recent.contains(1));
    }

    #[test]
    fn retired_expectations_and_their_groups_are_kept_as_two_sets_kept_them_through_growth_and_rotation()
     {
        // Against a set of (group, tag) and one of groups, each in two generations, over a
        // stream of groups with one to four tags, a few thousand of them retired again, and
        // groups retired with no expectation (deletes only).
        let mut recent: Recent<Expectation> = Recent::default();
        type Sets = (HashSet<(u128, u64)>, HashSet<u128>);
        let (mut current, mut previous): (Sets, Sets) = Default::default();
        let mut next = xorshift(0x9e37_79b9_7f4a_7c15);
        let held = |(e, _): &Sets, (pe, _): &Sets, g: u128, t: u64| {
            e.contains(&(g, t)) || pe.contains(&(g, t))
        };
        for step in 0..100_000u32 {
            if step % 20_000 == 19_999 {
                recent.rotate();
                previous = std::mem::take(&mut current);
            }
            let r = next();
            let group = if r.is_multiple_of(10) {
                u128::from(r % 2_048) << 64 | 4
            } else {
                u128::from(r) << 64 | u128::from(next())
            } & !1;
            let tags: Vec<u64> = match r % 7 {
                0 => vec![0],
                n => (0..n % 4 + 1)
                    .map(|i| (r >> 8).wrapping_add(i).max(1))
                    .collect(),
            };
            if step % 3 == 0 {
                assert_eq!(
                    recent.holds_print(group),
                    current.1.contains(&group) || previous.1.contains(&group),
                    "step {step}"
                );
                for &t in &tags {
                    let tag = (t != 0).then_some(t);
                    assert_eq!(
                        recent.contains(Expectation::new(group, tag)),
                        held(&current, &previous, group, t),
                        "step {step}"
                    );
                }
            } else {
                for &t in &tags {
                    let new = !held(&current, &previous, group, t);
                    if new {
                        current.0.insert((group, t));
                        current.1.insert(group);
                    }
                    let tag = (t != 0).then_some(t);
                    assert_eq!(
                        recent.insert(Expectation::new(group, tag)),
                        new,
                        "step {step}"
                    );
                }
            }
            assert_eq!(recent.len(), current.0.len() + previous.0.len());
        }
        assert!(4 * recent.len() <= 3 * recent.slots.len());
        // Another group's tags are not this one's.
        assert!(!recent.contains(Expectation::new(!1, Some(1))));
    }

    #[test]
    fn a_tags_pushes_are_all_found_by_their_tag_through_growth_and_rotation() {
        // Against a map of tag -> pushes in two generations, over a stream of a thousand tags
        // pushed some five times each a generation (the same push again now and then, which
        // renews it), asked at every other step whether a tag was pushed as another image
        // within a span of time.
        type Pushes = HashMap<u128, Vec<(i64, u64)>>;
        let mut recent: Recent<TagPush> = Recent::default();
        let (mut current, mut previous): (Pushes, Pushes) = Default::default();
        let mut next = xorshift(0x2545_f491_4f6c_dd1d);
        let mut asked_true = 0;
        for step in 0..40_000u32 {
            if step % 10_000 == 9_999 {
                recent.rotate();
                previous = std::mem::take(&mut current);
            }
            let r = next();
            // Spread over the table: a slot's place comes from the high 64 bits.
            let tag = u128::from((r % 1_000).wrapping_mul(0x9e37_79b9_7f4a_7c15)) << 64 | 0xfeed;
            let (at, image) = ((r >> 16) as i64 % 5_000, (r >> 40) % 4);
            if step % 2 == 0 {
                let holds = |g: &Pushes| g.get(&tag).is_some_and(|p| p.contains(&(at, image)));
                let held = holds(&current) || holds(&previous);
                // Seen again, a push is remembered for another generation.
                if !holds(&current) {
                    current.entry(tag).or_default().push((at, image));
                }
                let push = TagPush::new(tag, Timestamp::from_millis(at), u128::from(image));
                assert_eq!(recent.insert_or_renew(push), !held, "step {step}");
            } else {
                let (after, by) = (at, at + 1_000);
                let expected = [&current, &previous].iter().any(|g| {
                    g.get(&tag)
                        .is_some_and(|p| p.iter().any(|&(t, i)| i != image && t > after && t <= by))
                });
                let found = recent.any_of(tag, |p| p.image != image && p.at > after && p.at <= by);
                assert_eq!(found, expected, "step {step}");
                asked_true += usize::from(found);
            }
        }
        assert!(
            asked_true > 1_000,
            "the question is answered yes often: {asked_true}"
        );
        assert!(4 * recent.len() <= 3 * recent.slots.len());
    }

    #[test]
    fn a_tag_push_is_found_at_once_and_kept_in_the_generation_it_came_in_while_pushes_wait() {
        let horizon = Window::hours(24);
        let k = key();
        let mut pushed = key();
        pushed.digest = ImageDigest::parse("sha256:bbbb").unwrap();
        let image = ImagePrint::of(&pushed.repository, &pushed.digest);
        let tag = |s: &str| ImageTag::parse(s).unwrap();
        let mut store = MemoryStore::default();
        let note = |store: &mut MemoryStore, t: &str, at: Timestamp| {
            store.note_tag_push(
                k.source_account,
                &k.source_region,
                &k.repository,
                &image,
                &tag(t),
                at,
            );
        };
        // Moved on between `after` and `by`, as another image than `k`'s.
        let moved = |store: &mut MemoryStore, t: &str, after: i64, by: i64| {
            store.tag_moved(&k, &tag(t), at_hours(after), at_hours(by))
        };
        store.advance(at_hours(0), horizon);
        note(&mut store, "v1", at_hours(0));
        assert!(
            moved(&mut store, "v1", -1, 1),
            "found with no other push noted"
        );
        assert!(!moved(&mut store, "v1", 0, 1), "and only within its span");

        // Pushes enough to be placed three times over, and some left waiting.
        for i in 0..3 * TAG_PUSHES_PLACED_AT_ONCE + 7 {
            note(&mut store, &format!("other-{i}"), at_hours(1));
        }
        note(&mut store, "v2", at_hours(23));
        assert!(!store.tags_to_place.is_empty(), "pushes wait to be placed");
        // The generation that holds v1 and v2 turns over with v2 still waiting.
        store.advance(at_hours(24), horizon);
        for h in [24, 47] {
            store.advance(at_hours(h), horizon);
            assert!(moved(&mut store, "v1", -1, 1), "v1 kept at {h}h");
            assert!(moved(&mut store, "v2", 22, 23), "v2 kept at {h}h");
            assert!(moved(&mut store, "other-0", 0, 1));
        }
        store.advance(at_hours(48), horizon);
        assert!(
            !moved(&mut store, "v1", -1, 1),
            "v1 forgotten after two horizons"
        );
        assert!(
            !moved(&mut store, "v2", 22, 23),
            "v2 too: it was placed in the generation it came in, not the next"
        );
        assert_eq!(store.holding().tags, 0);
    }

    fn id(s: &str) -> EventId {
        EventId::parse(s).unwrap()
    }

    fn at_hours(h: i64) -> Timestamp {
        Timestamp::from_millis(h * 3_600_000)
    }

    #[test]
    fn dropping_a_generation_keeps_an_entry_whose_run_crossed_a_slot_emptied_by_it() {
        // Eight slots, each entry's home in brackets, its generation after the colon (1 the
        // current one); X's run goes from its home, slot 0, through D's slot to slot 4.
        let entry = |home: u64, id: u128, generation: u128| {
            (u128::from(home << 61) << 64) | id << 1 | generation
        };
        let (z, y, c, d) = (
            entry(7, 1, 1),
            entry(0, 2, 1),
            entry(1, 3, 1),
            entry(3, 4, 0),
        );
        let (x, a, b) = (entry(0, 5, 1), entry(6, 6, 0), entry(6, 7, 1));
        let mut recent = Recent::<u128> {
            //     [7]:1 [0]:1 [1]:1 [3]:0 [0]:1 empty [6]:0 [6]:1
            slots: vec![z, y, c, d, x, 0, a, b],
            held: [2, 5],
            current: 1,
        };
        assert_eq!(
            [z, y, c, d, x, a, b].map(|e| recent.home(e)),
            [7, 0, 1, 3, 0, 6, 6]
        );
        for e in [z, y, c, d, x, a, b] {
            assert!(recent.contains(e), "{e:#x} held before");
        }
        recent.rotate();
        for e in [z, y, c, x, b] {
            assert!(recent.contains(e), "{e:#x} still held");
        }
        assert!(!recent.contains(d) && !recent.contains(a));
        assert_eq!(recent.len(), 5);
    }

    #[test]
    fn every_entry_of_the_generations_kept_is_found_after_each_turnover() {
        // Entries five to an image (a home shared, as an image's groups share one), the table
        // up to three quarters full, against a model of the two generations, over 300
        // turnovers.
        let mut recent: Recent<u128> = Recent::default();
        let (mut current, mut previous) = (HashSet::new(), HashSet::new());
        let mut next = xorshift(0x9e37_79b9_7f4a_7c15);
        for turn in 0..300 {
            for _ in 0..70 {
                let image = u128::from(next()) << 64;
                for _ in 0..5 {
                    let entry = image | u128::from(next()) << 1;
                    let held = current.contains(&entry) || previous.contains(&entry);
                    assert_eq!(recent.insert(entry), !held);
                    if !held {
                        current.insert(entry);
                    }
                }
            }
            recent.rotate();
            previous = std::mem::take(&mut current);
            for &entry in &previous {
                assert!(recent.contains(entry), "turnover {turn}: {entry:#x} lost");
            }
            assert_eq!(recent.len(), previous.len());
        }
    }

    #[test]
    fn an_event_id_is_remembered_for_at_least_one_horizon_and_at_most_two() {
        let horizon = Window::hours(24);
        let mut store = Sightings::default();
        store.advance(at_hours(0), horizon);
        assert!(store.first_sighting(&id("a")));
        for h in [1, 23, 24, 30, 47] {
            store.advance(at_hours(h), horizon);
            assert!(!store.first_sighting(&id("a")), "still known after {h}h");
        }
        // The generation that held it began at 0h and was retired at 24h; at 48h it goes.
        store.advance(at_hours(48), horizon);
        assert!(
            store.first_sighting(&id("a")),
            "forgotten after two horizons"
        );
        assert_eq!(store.len(), 1);
    }

    #[test]
    fn fingerprints_stay_as_many_as_one_or_two_horizons_hold_however_long_the_stream() {
        let horizon = Window::hours(2);
        let mut store = Sightings::default();
        let mut most = 0;
        // 100 ids an hour for 100 hours.
        for i in 0..10_000i64 {
            store.advance(Timestamp::from_millis(i * 36_000), horizon);
            assert!(store.first_sighting(&id(&format!("event-{i}"))));
            most = most.max(store.len());
        }
        assert!((200..=400).contains(&most), "{most}");
    }

    /// Sorted on two threads or one, the groups left open come out in key order, each once.
    #[test]
    fn the_groups_left_open_come_out_in_key_order_however_many() {
        let mut next = xorshift(7);
        for n in [
            0,
            1,
            5,
            SORTED_ON_TWO_THREADS - 1,
            SORTED_ON_TWO_THREADS,
            3 * SORTED_ON_TWO_THREADS + 1,
        ] {
            let mut store = MemoryStore::default();
            let mut keys = Vec::new();
            for _ in 0..n {
                // Few repositories, many digests: keys that tie on their first fields.
                let mut key = key();
                key.repository =
                    RepositoryName::parse(&format!("team/app-{}", next() % 3)).unwrap();
                key.digest = ImageDigest::parse(&format!("sha256:{:016x}", next())).unwrap();
                store.group_mut(|| key.clone(), &KeyPrint::of(&key), at_hours(0));
                keys.push(key);
            }
            keys.sort();
            let drained: Vec<GroupKey> = store.drain_sorted().into_iter().map(|o| o.key).collect();
            assert_eq!(drained, keys, "{n} groups");
            assert_eq!(store.open_groups(), 0);
        }
    }

    #[test]
    fn an_open_group_is_taken_out_a_horizon_after_it_was_last_touched_and_not_before() {
        let horizon = Window::hours(4);
        let mut store = MemoryStore::default();
        assert!(store.take_expired(at_hours(0), horizon).is_empty());
        store
            .group_mut(key, &KeyPrint::of(&key()), at_hours(0))
            .add_push(None, at_hours(0));
        // Touched again at 3h by a copy: the clock, not the event's own (older) time counts.
        store
            .group_of_copy(
                key,
                &KeyPrint::of(&key()),
                &None,
                Some(&id("c1")),
                at_hours(3),
            )
            .expect("open")
            .add_copy(crate::domain::correlate::CopySeen {
                id: id("c1"),
                at: at_hours(0),
                tag: None,
                succeeded: false,
            });
        assert!(store.take_expired(at_hours(5), horizon).is_empty());
        assert!(
            store.take_expired(at_hours(7), horizon).is_empty(),
            "exactly one horizon"
        );
        let expired = store.take_expired(at_hours(8), horizon);
        assert_eq!(expired.len(), 1);
        assert_eq!(expired[0].key, key());
        assert_eq!(expired[0].group.copies().len(), 1);
        assert_eq!(store.open_groups(), 0);
    }
}
