//! Evaluating a loaded rule set against one request: phase 1 on the head, the body processor,
//! phase 2 on the body. Rules are compiled once at load; per request the engine allocates only
//! for what matched, for transformed values (cached per value and transformation chain) and for
//! TX variables the rules set.

use std::{borrow::Cow, collections::HashMap, net::IpAddr, sync::Arc};

use super::{
    actions::{Action, Ctl, EngineOverride, Macro, SetOp, apply_setop},
    body,
    fold::{Fixed, Folds, MatchedState, Probe},
    operator::{ByteSet, LiteralIndex, Operator, admits},
    rule::{Disruptive, Item, Link, MultiStep, Rule, RuleSet},
    transform::Transform,
    tx::{Tx, TxMap, TxStart},
    variables::{Entry, Exclusion, RequestData, Selector, Target, Var},
};

/// ModSecurity v3's recommended `SecArgumentsLimit` and Coraza's default argument limit.
pub const DEFAULT_MAX_ARGS: usize = 1000;

/// Whether a rule that denies stops the request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Block,
    Detect,
}

/// The request as the engine sees it (raw request target, headers in order).
pub struct HttpInput<'a> {
    pub method: &'a str,
    /// The request target as sent (`/a?b=c`, or an absolute URI).
    pub target: &'a str,
    /// `HTTP/1.1`, `HTTP/2.0`.
    pub version: &'a str,
    pub headers: Vec<(&'a [u8], &'a [u8])>,
    pub body: Option<&'a [u8]>,
    pub remote_addr: IpAddr,
    pub request_id: &'a str,
}

/// One rule that matched (and logs).
#[derive(Clone, Debug)]
pub struct RuleMatch {
    pub id: u32,
    pub msg: String,
    pub data: String,
    /// `ARGS:q`, `REQUEST_HEADERS:user-agent`.
    pub variable: String,
    pub value: Vec<u8>,
    pub severity: Option<u8>,
}

/// What the engine decided.
#[derive(Clone, Debug, Default)]
pub struct Outcome {
    pub matches: Vec<RuleMatch>,
    /// The rule whose `deny` stopped the request (blocking mode only).
    pub blocked_by: Option<u32>,
    pub status: u16,
    /// CRS's inbound anomaly score at the blocking paranoia level.
    pub anomaly_score: i64,
    /// The body had more arguments than the limit: only the first were inspected.
    pub args_truncated: bool,
}

pub struct Engine {
    rules: RuleSet,
    /// TX variables every transaction starts with (the crs-setup.conf equivalent).
    setup: Vec<(String, Vec<u8>)>,
    mode: Mode,
    /// Most arguments a body yields ([`body::process`]).
    max_args: usize,
    /// The outcomes of the rules that read only configuration-fixed TX, found at load.
    folds: Folds,
    /// The TX a request starts with: after the folded rules, and the setup alone (for a
    /// request that turns folding off).
    start_folded: Arc<TxStart>,
    start_setup: Arc<TxStart>,
}

/// A matched variable's name and value (MATCHED_VAR, one of MATCHED_VARS): shared, so that
/// recording a match allocates the value once however many records hold it.
pub(super) type Matched = (Arc<str>, Arc<[u8]>);

/// Per-request mutable state.
struct State {
    /// Whether the outcomes [`Folds`] recorded hold (no exclusion or `ctl` removed a rule
    /// they cover): the rules they cover are not evaluated.
    folded: bool,
    /// TX by lowercase name: read by most rules, so looked up without building a key.
    tx: Tx,
    /// The other collections (`ip.x`, `session.x`), per request.
    vars: HashMap<String, Vec<u8>, foldhash::fast::RandomState>,
    matched_var: Option<Matched>,
    matched_vars: Vec<Matched>,
    removed_ids: Vec<(u32, u32)>,
    removed_tags: Vec<String>,
    removed_targets: Vec<(RuleSel, Exclusion)>,
    engine: Option<EngineOverride>,
    processor: Option<&'static str>,
    force_body_var: bool,
    matches: Vec<RuleMatch>,
    /// Indexes into `values` by (slot, chain).
    cache: ValueCache,
    /// Values after a transformation chain, kept for the request.
    values: Vec<Cached>,
    /// Which literal filters each of `values` passes.
    literal_hits: LiteralHits,
    /// Transformations applied to `values` ([`Cached::steps`]).
    steps: Vec<Step>,
}

impl State {
    fn new(tx: Tx, matched: MatchedState, excl: &Tuning, chains: usize, folded: bool) -> Self {
        let (values, literal_hits, steps) = VALUES.take().unwrap_or_default();
        Self {
            folded,
            tx,
            vars: HashMap::default(),
            matched_var: matched.0,
            matched_vars: matched.1,
            removed_ids: excl.ids.clone(),
            removed_tags: excl.tags.clone(),
            removed_targets: excl.targets.clone(),
            engine: None,
            processor: None,
            force_body_var: false,
            matches: Vec::new(),
            cache: ValueCache::for_request(chains),
            literal_hits,
            values,
            steps,
        }
    }
}

/// A rule's recorded outcome applied to the request: its TX changes and MATCHED_VARS, and
/// whether it matched.
fn apply_fixed(f: &Fixed, st: &mut State) -> bool {
    for (k, v) in &f.sets {
        match v {
            Some(v) => st.tx.set_from(k, v),
            None => st.tx.remove(k),
        }
    }
    if let Some((var, vars)) = &f.matched_vars {
        st.matched_var.clone_from(var);
        st.matched_vars.clone_from(vars);
    }
    f.matched
}

/// Per request, for each cached value (by its index in [`State::values`]) scanned on first
/// use: the literal filters ([`super::operator::LiteralIndex`]) one of whose factors it holds.
#[derive(Default)]
struct LiteralHits {
    /// Offset + 1 of the value's bits in `bits`; 0 = not scanned yet.
    at: Vec<u32>,
    bits: Vec<u64>,
}

impl LiteralHits {
    /// Whether `value` (cached at `index`) holds one of `filter`'s factors.
    fn passes(&mut self, literals: &LiteralIndex, index: usize, value: &[u8], filter: u32) -> bool {
        has_bit(self.bits(literals, index, value), filter)
    }

    /// The filters `value` (cached at `index`) passes, one bit each; scanned on first use.
    fn bits(&mut self, literals: &LiteralIndex, index: usize, value: &[u8]) -> &[u64] {
        if index >= self.at.len() {
            self.at.resize(index + 1, 0);
        }
        let at = match self.at[index] {
            0 => {
                let at = self.bits.len();
                self.bits.resize(at + literals.words(), 0);
                literals.scan(value, &mut self.bits[at..]);
                self.at[index] = u32::try_from(at + 1).unwrap_or(0);
                at
            }
            n => n as usize - 1,
        };
        self.bits.get(at..at + literals.words()).unwrap_or_default()
    }
}

/// Whether filter `bit` is set in a value's (or a group's) literal hits.
fn has_bit(words: &[u64], bit: u32) -> bool {
    words
        .get(bit as usize / 64)
        .is_some_and(|w| w & (1 << (bit % 64)) != 0)
}

/// One value after one transformation chain, kept for the request.
struct Cached {
    /// `None` when the chain leaves the value unchanged (the common case for benign values,
    /// which would otherwise be re-scanned by every rule).
    value: Option<Vec<u8>>,
    /// The bytes it holds (for [`super::operator::Operator::may_match`]).
    bytes: ByteSet,
    /// Index + 1 of the next distinct value derived from the same raw value (0: none): the
    /// list a new result is looked up in before it is kept (see [`push_derived`]).
    next: u32,
    /// Index + 1 into [`State::steps`] of the first transformation applied to this value.
    steps: u32,
}

impl Cached {
    /// A value entering the table: no values derived from it, no steps applied yet.
    fn new(value: Option<Vec<u8>>, bytes: ByteSet) -> Self {
        Self {
            value,
            bytes,
            next: 0,
            steps: 0,
        }
    }
}

/// One transformation applied to a cached value: `out` is the result's index in
/// [`State::values`], `next` index + 1 of the next transformation applied to the same value.
/// CRS's chains share their steps (most end in `lowercase` after steps that leave a benign
/// value as it is); a step is applied once per value, whichever chains run it.
struct Step {
    t: Transform,
    out: u32,
    next: u32,
}

/// Where a value's transformation results sit in [`State::values`], by (slot, chain id).
///
/// A dense table, one row of `chains` entries per slot (equal argument values share one),
/// grown as slots appear: slots are small per-request counters and CRS has a few dozen chains
/// (a hash map here spent ~9 % of a 2 KB request's instructions inserting and growing,
/// callgrind). Each worker thread keeps its table from request to request and stamps the
/// entries with the request's number, so nothing is zeroed or grown per request (a fresh table
/// per request cost ~4 % of a 100 B request's instructions in zeroing and doubling).
struct ValueCache {
    chains: usize,
    /// This request's stamp: entries with another are empty.
    stamp: u32,
    /// `(stamp << 32) | (values index + 1)`.
    table: Vec<u64>,
}

thread_local! {
    /// The worker thread's table between two requests.
    static VALUE_CACHE: std::cell::Cell<Option<ValueCache>> = const { std::cell::Cell::new(None) };
}

/// Tables larger than this (entries; 8 bytes each) are not kept after a request: a rare request
/// with thousands of arguments does not pin its memory to the thread.
const VALUE_CACHE_KEPT: usize = 1 << 17;

impl ValueCache {
    /// The thread's table for a new request (a fresh one for another rule set's chains).
    fn for_request(chains: usize) -> Self {
        let chains = chains.max(1);
        match VALUE_CACHE.take() {
            Some(mut c) if c.chains == chains && c.stamp < u32::MAX => {
                c.stamp += 1;
                c
            }
            _ => Self {
                chains,
                stamp: 1,
                table: Vec::new(),
            },
        }
    }

    /// Hands the table back to the thread for its next request.
    fn release(self) {
        if self.table.len() <= VALUE_CACHE_KEPT {
            VALUE_CACHE.set(Some(self));
        }
    }

    fn at(&self, slot: u32, chain_id: u32) -> usize {
        slot as usize * self.chains + chain_id as usize
    }

    fn get(&self, slot: u32, chain_id: u32) -> Option<usize> {
        match self.table.get(self.at(slot, chain_id)) {
            Some(&e) if e >> 32 == u64::from(self.stamp) => {
                (e as u32).checked_sub(1).map(|i| i as usize)
            }
            _ => None,
        }
    }

    fn insert(&mut self, slot: u32, chain_id: u32, index: usize) {
        let at = self.at(slot, chain_id);
        if at >= self.table.len() {
            // Whole rows, and at least double: amortised like a Vec. Stamp 0 is no request's.
            let rows = at / self.chains + 1;
            let len = (rows * self.chains).max(self.table.len() * 2);
            self.table.resize(len, 0);
        }
        let index = u32::try_from(index + 1).unwrap_or(0);
        self.table[at] = (u64::from(self.stamp) << 32) | u64::from(index);
    }
}

/// Which rules an exclusion applies to.
#[derive(Clone, Debug)]
pub enum RuleSel {
    All,
    Ids(Vec<(u32, u32)>),
    Tag(String),
}

/// How one route's requests are inspected (the global configuration's part merged in): rules
/// and targets removed, on top of what the rules' own `ctl` actions remove, and how its
/// arguments are read.
#[derive(Clone, Debug, Default)]
pub struct Tuning {
    pub ids: Vec<(u32, u32)>,
    pub tags: Vec<String>,
    pub targets: Vec<(RuleSel, Exclusion)>,
    /// The route serves GraphQL over HTTP: its documents are judged by their values
    /// ([`body::graphql`]).
    pub graphql: bool,
}

/// Values collected for links, per phase (the request data does not change within one).
struct Cands<'d> {
    /// For links whose values depend on the rule (target removals) or on state.
    scratch: Vec<Cand<'d>>,
    arena: Vec<Cand<'d>>,
    /// Which [`ARENA_SIZE`] hint is this phase's.
    hint: usize,
    /// Everything else, indexes and byte sets that borrow nothing.
    buf: CandsBuffers,
}

/// The vectors of [`Cands`] that borrow nothing, kept by the worker thread from phase to phase
/// and request to request: grown once to what its requests need rather than from small in
/// every phase (the doubling copies were ~5 % of a 20 KB request's instructions, callgrind).
#[derive(Default)]
struct CandsBuffers {
    /// By [`Link::target_ids`] entry: where the target's values sit in `arena`.
    sets: Vec<Option<(usize, usize)>>,
    /// By target, as `sets`: the union of its values' bytes untransformed (`None` when one
    /// has no cache slot), and index + 1 into `group_list` of its values untransformed (0:
    /// not made yet). A chain none of whose trigger bytes the union holds leaves every value
    /// as it is: its group is that one, shared, not walked and copied once per chain (argument
    /// names against most of CRS's chains).
    set_bytes: Vec<Option<ByteSet>>,
    raw_groups: Vec<u32>,
    /// Parallel to `arena`: the index in [`State::values`] of each value untransformed
    /// (`u32::MAX` for values without a cache slot), found once when the target is collected.
    raws: Vec<u32>,
    /// Parallel to `arena`: whether an earlier value of the same target holds the same
    /// content (the same slot). A link that has matched nothing yet skips it: the earlier
    /// one got the same operator on the same bytes in the same state.
    dups: Vec<bool>,
    /// By slot: the `stamp` of the last target collection that saw it.
    seen: Vec<u32>,
    stamp: u32,
    /// By (target, chain) pair id ([`Link::target_ids`]; CRS PL1 has ~150, where a hash map's
    /// inserts and lookups were ~3 % of a small request): index + 1 into `group_list` (0: not
    /// computed yet).
    groups: Vec<u32>,
    /// Where the indexes into [`State::values`] of the target's values after that chain start
    /// in `tvals` (parallel to the target's `arena` range), with the union of those values'
    /// bytes: an operator that this union cannot satisfy matches none of them (the byte
    /// conditions are monotone), one check for the whole target.
    group_list: Vec<(usize, ByteSet)>,
    tvals: Vec<u32>,
    /// The bytes of each of `tvals`' values, side by side: a link's byte condition runs down
    /// this slice without touching the values themselves.
    tbytes: Vec<ByteSet>,
    /// By a group's start in `tvals`: offset + 1 into `group_bits` of the union of its
    /// values' literal hits (0: not made yet). A link whose factors none of a target's values
    /// holds skips the target in one check rather than one per value (CRS's ~100 filtered
    /// links against every argument of a large body).
    group_hits: Vec<u32>,
    group_bits: Vec<u64>,
    /// By [`Link::target_set`]: index + 1 into `set_unions` (0: not computed yet).
    sets_seen: Vec<u32>,
    /// The union of the bytes of every value of a target set (after its chain).
    set_unions: Vec<ByteSet>,
}

/// [`State::values`], [`State::literal_hits`] and [`State::steps`], kept by the thread.
type KeptValues = (Vec<Cached>, LiteralHits, Vec<Step>);

thread_local! {
    static CANDS_BUFFERS: std::cell::Cell<Option<CandsBuffers>> =
        const { std::cell::Cell::new(None) };
    /// How many values the last phase 1 and the last phase 2 collected: the next starts with
    /// room for as many (`arena` borrows the request, so it cannot be kept itself). One per
    /// phase: a large body's phase 2 sized from phase 1's headers grew by doubling (~1 % of a
    /// 20 KB request's instructions, callgrind).
    static ARENA_SIZE: std::cell::Cell<[usize; 2]> = const { std::cell::Cell::new([256; 2]) };
    /// [`State::values`], [`State::literal_hits`] and [`State::steps`] between two requests,
    /// emptied.
    static VALUES: std::cell::Cell<Option<KeptValues>> =
        const { std::cell::Cell::new(None) };
}

/// Per-group entries above which [`CandsBuffers`] are not kept (a request with a huge body
/// does not pin its memory to the thread).
const CANDS_KEPT: usize = 1 << 16;

impl<'d> Cands<'d> {
    fn new(phase: usize, targets: u32, groups: u32, sets: u32) -> Self {
        let mut b = CANDS_BUFFERS.take().unwrap_or_default();
        let reset = |v: &mut Vec<u32>, n: u32| {
            v.clear();
            v.resize(n as usize, 0);
        };
        reset(&mut b.sets_seen, sets);
        reset(&mut b.groups, groups);
        b.sets.clear();
        b.sets.resize(targets as usize, None);
        b.set_bytes.clear();
        b.set_bytes.resize(targets as usize, None);
        reset(&mut b.raw_groups, targets);
        b.set_unions.clear();
        b.raws.clear();
        b.dups.clear();
        b.group_list.clear();
        b.tvals.clear();
        b.tbytes.clear();
        b.group_hits.clear();
        b.group_bits.clear();
        let hint = usize::from(phase > 1);
        Self {
            scratch: Vec::with_capacity(32),
            arena: Vec::with_capacity(ARENA_SIZE.get()[hint]),
            hint,
            buf: b,
        }
    }

    /// The target's values (collected on first use). The lookup is inlined into the links'
    /// loops, the collection not: most of the ~600 calls per request find the target collected,
    /// and a call's entry and exit cost more than the lookup (callgrind).
    #[inline]
    fn set(
        &mut self,
        tid: u32,
        t: &Target,
        exclusions: &[Exclusion],
        data: &'d RequestData,
        st: &mut State,
    ) -> (usize, usize) {
        match self.buf.sets.get(tid as usize) {
            Some(Some(range)) => *range,
            _ => self.collect_set(tid as usize, t, exclusions, data, st),
        }
    }

    #[inline(never)]
    fn collect_set(
        &mut self,
        tid: usize,
        t: &Target,
        exclusions: &[Exclusion],
        data: &'d RequestData,
        st: &mut State,
    ) -> (usize, usize) {
        let a = self.arena.len();
        collect(t, data, st, &mut self.arena, |var, key| {
            exclusions.iter().any(|e| e.covers(var, key))
        });
        let b = &mut self.buf;
        b.stamp = b.stamp.wrapping_add(1);
        if b.stamp == 0 {
            b.seen.clear();
            b.stamp = 1;
        }
        let mut union = Some(ByteSet::default());
        for cand in &self.arena[a..] {
            let s = cand.slot as usize;
            if cand.slot != 0 && s >= b.seen.len() {
                b.seen.resize(s + 1, 0);
            }
            b.dups
                .push(cand.slot != 0 && std::mem::replace(&mut b.seen[s], b.stamp) == b.stamp);
            b.raws.push(if cand.slot != 0 {
                let r = raw_index(st, cand.slot, &cand.value);
                if let Some(u) = &mut union {
                    u.union(&st.values[r].bytes);
                }
                r as u32
            } else {
                union = None;
                u32::MAX
            });
        }
        if let Some(slot) = self.buf.set_bytes.get_mut(tid) {
            *slot = union;
        }
        let range = (a, self.arena.len());
        if let Some(slot) = self.buf.sets.get_mut(tid) {
            *slot = Some(range);
        }
        range
    }

    /// Where the target's values (`a..b` in `arena`) after `link`'s chain (pair `gid`) start in
    /// `tvals`, and the union of their bytes (computed on first use; the lookup inlined as in
    /// [`Cands::set`]).
    #[inline]
    fn group(
        &mut self,
        gid: u32,
        tid: u32,
        link: &Link,
        a: usize,
        b: usize,
        st: &mut State,
    ) -> (usize, ByteSet) {
        match self.buf.groups.get(gid as usize) {
            Some(&i) if i > 0 => self.buf.group_list[i as usize - 1],
            _ => self.make_group(gid, tid, link, (a, b), st),
        }
    }

    #[inline(never)]
    fn make_group(
        &mut self,
        gid: u32,
        tid: u32,
        link: &Link,
        (a, b): (usize, usize),
        st: &mut State,
    ) -> (usize, ByteSet) {
        let key = gid as usize;
        if let (Some(t), Some(&Some(raw_union))) =
            (link.chain_triggers, self.buf.set_bytes.get(tid as usize))
            && !t.intersects(&raw_union)
        {
            return self.raw_group(gid, tid, a, b, raw_union, st);
        }
        let g = self.buf.tvals.len();
        let mut union = ByteSet::default();
        for (cand, &r) in self.arena[a..b].iter().zip(&self.buf.raws[a..b]) {
            let idx = if cand.slot != 0 {
                // Most values hold none of the chain's trigger bytes: their raw entry, known
                // since the target was collected.
                let r = r as usize;
                if link
                    .chain_triggers
                    .is_some_and(|t| !t.intersects(&st.values[r].bytes))
                {
                    r
                } else {
                    value_index(st, cand.slot, link, &cand.value)
                }
            } else {
                st.values.push(transformed(link, &cand.value));
                st.values.len() - 1
            };
            let bytes = st.values[idx].bytes;
            union.union(&bytes);
            self.buf.tvals.push(idx as u32);
            self.buf.tbytes.push(bytes);
        }
        self.buf.group_list.push((g, union));
        if let Some(slot) = self.buf.groups.get_mut(key) {
            *slot = u32::try_from(self.buf.group_list.len()).unwrap_or(0);
        }
        (g, union)
    }

    /// Whether a value of the group starting at `g` in `tvals` (`len` values, the target's at
    /// `a` in `arena`) holds one of the factors of filter `bit`.
    fn group_has(
        &mut self,
        g: usize,
        (a, len): (usize, usize),
        literals: &LiteralIndex,
        bit: u32,
        st: &mut State,
    ) -> bool {
        let buf = &mut self.buf;
        if g >= buf.group_hits.len() {
            buf.group_hits.resize(buf.tvals.len().max(g + 1), 0);
        }
        let at = match buf.group_hits[g] {
            0 => {
                let at = buf.group_bits.len();
                let words = literals.words();
                buf.group_bits.resize(at + words, 0);
                let State {
                    values,
                    literal_hits,
                    ..
                } = st;
                for (&vi, cand) in buf.tvals[g..g + len].iter().zip(&self.arena[a..a + len]) {
                    let value = values[vi as usize].value.as_deref().unwrap_or(&cand.value);
                    let hits = literal_hits.bits(literals, vi as usize, value);
                    for (w, h) in buf.group_bits[at..at + words].iter_mut().zip(hits) {
                        *w |= h;
                    }
                }
                buf.group_hits[g] = u32::try_from(at + 1).unwrap_or(0);
                at
            }
            n => n as usize - 1,
        };
        has_bit(buf.group_bits.get(at..).unwrap_or_default(), bit)
    }

    /// The group of the target's values untransformed (`a..b`, every one with a cache slot,
    /// `union` their bytes), made on first use and recorded as pair `gid`'s too.
    fn raw_group(
        &mut self,
        gid: u32,
        tid: u32,
        a: usize,
        b: usize,
        union: ByteSet,
        st: &State,
    ) -> (usize, ByteSet) {
        let buf = &mut self.buf;
        let made = buf.raw_groups.get(tid as usize).copied().unwrap_or(0);
        let i = if made > 0 {
            made
        } else {
            let g = buf.tvals.len();
            buf.tvals.extend_from_slice(&buf.raws[a..b]);
            buf.tbytes
                .extend(buf.raws[a..b].iter().map(|&r| st.values[r as usize].bytes));
            buf.group_list.push((g, union));
            let i = u32::try_from(buf.group_list.len()).unwrap_or(0);
            if let Some(slot) = buf.raw_groups.get_mut(tid as usize) {
                *slot = i;
            }
            i
        };
        if let Some(slot) = buf.groups.get_mut(gid as usize) {
            *slot = i;
        }
        buf.group_list[i as usize - 1]
    }

    /// The union of the bytes of all of `link`'s values (its [`Link::target_set`] `sid`),
    /// computed on first use.
    fn set_union(
        &mut self,
        sid: u32,
        link: &Link,
        ids: &[(u32, u32)],
        data: &'d RequestData,
        st: &mut State,
    ) -> ByteSet {
        let key = sid as usize;
        if let Some(&i) = self.buf.sets_seen.get(key)
            && i > 0
        {
            return self.buf.set_unions[i as usize - 1];
        }
        let mut union = ByteSet::default();
        for (t, &(tid, gid)) in link.targets.iter().zip(ids) {
            let (a, b) = self.set(tid, t, &link.exclusions, data, st);
            union.union(&self.group(gid, tid, link, a, b, st).1);
        }
        self.buf.set_unions.push(union);
        if let Some(slot) = self.buf.sets_seen.get_mut(key) {
            *slot = u32::try_from(self.buf.set_unions.len()).unwrap_or(0);
        }
        union
    }
}

impl Drop for Cands<'_> {
    fn drop(&mut self) {
        let mut sizes = ARENA_SIZE.get();
        sizes[self.hint] = self.arena.len().clamp(256, CANDS_KEPT);
        ARENA_SIZE.set(sizes);
        if self.buf.tvals.capacity() > CANDS_KEPT {
            return;
        }
        CANDS_BUFFERS.set(Some(std::mem::take(&mut self.buf)));
    }
}

/// The index in [`State::values`] of `raw` (at `slot`) after `link`'s chain, transformed on
/// first use. A chain that cannot change the value (none of its trigger bytes in it) shares the
/// raw value's entry: its bytes are collected once per value, not once per chain.
fn value_index(st: &mut State, slot: u32, link: &Link, raw: &[u8]) -> usize {
    let r = raw_index(st, slot, raw);
    let raw_bytes = st.values[r].bytes;
    // Most values hold none of the chain's trigger bytes: the raw entry, found with one lookup
    // and nothing stored for the pair.
    if link
        .chain_triggers
        .is_some_and(|t| !t.intersects(&raw_bytes))
    {
        return r;
    }
    if let Some(i) = st.cache.get(slot, link.chain_id) {
        return i;
    }
    // A chain that leaves the value as it is shares the raw entry too: its bytes and literal
    // hits are the raw value's, not collected and scanned again.
    let mut i = r;
    for (&t, triggers) in link.transforms.iter().zip(link.step_triggers.iter()) {
        if triggers.is_some_and(|tr| !tr.intersects(&st.values[i].bytes)) {
            continue;
        }
        i = step_index(st, i, t, r, raw);
    }
    st.cache.insert(slot, link.chain_id, i);
    i
}

/// The index in [`State::values`] of the value at `input` (derived from the raw value at `raw`,
/// `raw_value`) after `t`, applied on first use.
fn step_index(st: &mut State, input: usize, t: Transform, raw: usize, raw_value: &[u8]) -> usize {
    let mut at = st.values[input].steps;
    while let Some(s) = (at as usize).checked_sub(1) {
        let step = &st.steps[s];
        if step.t == t {
            return step.out as usize;
        }
        at = step.next;
    }
    let value = st.values[input].value.as_deref().unwrap_or(raw_value);
    let out = match changed(t.apply(value), value) {
        None => input,
        Some(v) => push_derived(st, raw, v),
    };
    // Recorded when the indexes fit (beyond u32, the step is applied again next time).
    if let (Ok(o), Ok(head)) = (u32::try_from(out), u32::try_from(st.steps.len() + 1)) {
        st.steps.push(Step {
            t,
            out: o,
            next: st.values[input].steps,
        });
        st.values[input].steps = head;
    }
    out
}

/// A transformation's result on `input`, owned; `None` when it is `input` unchanged.
fn changed(out: Cow<'_, [u8]>, input: &[u8]) -> Option<Vec<u8>> {
    match out {
        // Borrowed results are subslices of the input (`trim*`): unchanged iff as long.
        Cow::Borrowed(b) if b.len() == input.len() => None,
        out if *out == *input => None,
        out => Some(out.into_owned()),
    }
}

/// The index of `value`, which a chain made from the raw value at `raw`, in the request's
/// table: an equal value derived before (most chains end in the same few results: on a 20 KB
/// JSON order four in five results of CRS's chains equal one already made for that value) or a
/// new entry. An equal one shares its bytes and its literal scan.
fn push_derived(st: &mut State, raw: usize, value: Vec<u8>) -> usize {
    let mut at = st.values[raw].next;
    while let Some(i) = (at as usize).checked_sub(1) {
        let c = &st.values[i];
        if c.value.as_deref() == Some(value.as_slice()) {
            return i;
        }
        at = c.next;
    }
    let bytes = ByteSet::of(&value);
    let next = st.values[raw].next;
    st.values.push(Cached {
        next,
        ..Cached::new(Some(value), bytes)
    });
    let i = st.values.len() - 1;
    st.values[raw].next = u32::try_from(i + 1).unwrap_or(0);
    i
}

/// The index in [`State::values`] of the value at `slot` after a `multiMatch` step, computed
/// from the previous step's value (at `prev`; the value untransformed is `raw`, at `r`) on
/// first use.
fn multi_step_index(
    st: &mut State,
    slot: u32,
    step: &MultiStep,
    prev: usize,
    (r, raw): (usize, &[u8]),
) -> usize {
    // A step none of whose trigger bytes the previous value holds leaves it as it is: nothing
    // to look up or store.
    if step
        .triggers
        .is_some_and(|t| !t.intersects(&st.values[prev].bytes))
    {
        return prev;
    }
    if let Some(i) = st.cache.get(slot, step.chain_id) {
        return i;
    }
    let i = step_index(st, prev, step.transform, r, raw);
    st.cache.insert(slot, step.chain_id, i);
    i
}

/// Whether the cached values at `a` and `b` (of the value `raw`) hold the same bytes.
fn same_value(st: &State, a: usize, b: usize, raw: &[u8]) -> bool {
    a == b
        || st.values[a].value.as_deref().unwrap_or(raw)
            == st.values[b].value.as_deref().unwrap_or(raw)
}

/// The index in [`State::values`] of `raw` (at `slot`) untransformed (chain 0), with its bytes
/// (the lookup inlined: nearly every call finds the value).
#[inline]
fn raw_index(st: &mut State, slot: u32, raw: &[u8]) -> usize {
    match st.cache.get(slot, 0) {
        Some(i) => i,
        None => add_raw(st, slot, raw),
    }
}

#[inline(never)]
fn add_raw(st: &mut State, slot: u32, raw: &[u8]) -> usize {
    st.values.push(Cached::new(None, ByteSet::of(raw)));
    let i = st.values.len() - 1;
    st.cache.insert(slot, 0, i);
    i
}

/// `raw` after `link`'s chain, with its bytes.
fn transformed(link: &Link, raw: &[u8]) -> Cached {
    let bytes = ByteSet::of(raw);
    let out = if link.chain_triggers.is_some_and(|t| !t.intersects(&bytes)) {
        None
    } else {
        changed(transform(link, &bytes, raw), raw)
    };
    match out {
        None => Cached::new(None, bytes),
        Some(value) => {
            let bytes = ByteSet::of(&value);
            Cached::new(Some(value), bytes)
        }
    }
}

/// One value a target yields.
#[derive(Clone)]
struct Cand<'d> {
    var: Var,
    key: Cow<'d, [u8]>,
    value: Cow<'d, [u8]>,
    /// Cache key part; 0 for values that change during the request (TX, MATCHED_VARS).
    slot: u32,
}

enum Flow {
    Continue,
    Deny(u32, u16),
    Allow,
    Stop,
}

impl Engine {
    pub fn new(rules: RuleSet, setup: Vec<(String, String)>, mode: Mode) -> Self {
        let setup: Vec<(String, Vec<u8>)> = setup
            .into_iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.into_bytes()))
            .collect();
        let mut engine = Self {
            rules,
            folds: Folds::none(TxMap::default()),
            setup,
            mode,
            max_args: DEFAULT_MAX_ARGS,
            start_folded: Arc::default(),
            start_setup: Arc::default(),
        };
        engine.folds = Folds::analyse(&engine.rules, engine.setup_tx(), |rule, tx| {
            engine.probe(rule, tx)
        });
        engine.start_folded = Arc::new(TxStart::from(engine.folds.tx.clone()));
        engine.start_setup = Arc::new(TxStart::from(engine.setup_tx()));
        engine
    }

    /// The TX a request starts with before any rule ran.
    fn setup_tx(&self) -> TxMap {
        self.setup.iter().cloned().collect()
    }

    /// Runs `rule` on a request with nothing in it and TX `tx` (for [`Folds::analyse`]).
    fn probe(&self, rule: &Rule, tx: &TxMap) -> Probe {
        let data = RequestData::default();
        let mut st = State::new(
            Tx::new(Arc::new(TxStart::from(tx.clone()))),
            (None, Vec::new()),
            &Tuning::default(),
            self.rules.chains.len(),
            false,
        );
        let mut cands = Cands::new(
            rule.phase.into(),
            self.rules.target_ids,
            self.rules.groups,
            self.rules.target_sets,
        );
        let matched = self.eval_rule(rule, &data, &mut st, &mut cands);
        drop(cands);
        Probe {
            matched,
            logged: !st.matches.is_empty(),
            matched_vars: st
                .matched_var
                .is_some()
                .then(|| (st.matched_var.clone(), st.matched_vars.clone())),
            tx: st.tx.into_map(),
        }
    }

    /// At most `n` arguments from a request body (the rest dropped, the outcome says so).
    pub fn with_max_args(mut self, n: usize) -> Self {
        self.max_args = n;
        self
    }

    pub fn rule_count(&self) -> usize {
        self.rules.rule_count
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    pub fn max_args(&self) -> usize {
        self.max_args
    }

    /// Runs phases 1 and 2 over `req`.
    pub fn inspect(&self, req: &HttpInput<'_>, excl: &Tuning) -> Outcome {
        let mut data = RequestData::default();
        fill_head(&mut data, req);
        if excl.graphql {
            // The query string has no argument limit: none of its values is dropped.
            body::graphql::expand_documents(&mut data, false, usize::MAX);
        }
        let chains = self.rules.chains.len();
        let mut st = if self.folds.hold_with(excl) {
            let f = &self.folds;
            let tx = Tx::new(Arc::clone(&self.start_folded));
            State::new(tx, f.matched_vars.clone(), excl, chains, true)
        } else {
            let tx = Tx::new(Arc::clone(&self.start_setup));
            State::new(tx, (None, Vec::new()), excl, chains, false)
        };
        let mut flow = self.run_phase(1, &data, &mut st);
        if matches!(flow, Flow::Continue) {
            let ct = req
                .headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(b"content-type"))
                .map_or(&b""[..], |(_, v)| *v);
            fill_body(&mut data, req.body.unwrap_or(b""), ct, &st, self.max_args);
            if excl.graphql && body::graphql::expand_documents(&mut data, true, self.max_args) {
                body::too_many_args(&mut data, self.max_args);
            }
            flow = self.run_phase(2, &data, &mut st);
        }
        let num = |k: &str| {
            st.tx
                .get(k)
                .and_then(|v| std::str::from_utf8(v).ok()?.trim().parse::<i64>().ok())
                .unwrap_or(0)
        };
        let anomaly_score = num("blocking_inbound_anomaly_score")
            .max(num("inbound_anomaly_score"))
            .max(num("anomaly_score"));
        let mut out = Outcome {
            matches: std::mem::take(&mut st.matches),
            blocked_by: None,
            status: 200,
            anomaly_score,
            args_truncated: data.args_truncated,
        };
        if let Flow::Deny(id, status) = flow {
            out.blocked_by = Some(id);
            out.status = status;
        }
        st.cache.release();
        if st.values.capacity() <= CANDS_KEPT {
            st.values.clear();
            st.literal_hits.at.clear();
            st.literal_hits.bits.clear();
            st.steps.clear();
            VALUES.set(Some((st.values, st.literal_hits, st.steps)));
        }
        out
    }

    fn blocking(&self, st: &State) -> bool {
        match st.engine {
            Some(EngineOverride::On) => true,
            Some(_) => false,
            None => self.mode == Mode::Block,
        }
    }

    fn run_phase(&self, phase: usize, data: &RequestData, st: &mut State) -> Flow {
        let p = &self.rules.phases[phase];
        let mut i = 0;
        let mut scratch = Cands::new(
            phase,
            self.rules.target_ids,
            self.rules.groups,
            self.rules.target_sets,
        );
        let fixed = &self.folds.phases[phase];
        if phase == 1 && st.folded {
            i = self.folds.start;
        }
        while i < p.items.len() {
            let at = i;
            let Item::Rule(rule) = &p.items[at] else {
                i += 1;
                continue;
            };
            i += 1;
            if st.engine == Some(EngineOverride::Off) {
                return Flow::Stop;
            }
            if self.removed(rule, st) {
                continue;
            }
            let matched = match fixed.get(at) {
                Some(Some(f)) if st.folded => apply_fixed(f, st),
                _ => self.eval_rule(rule, data, st, &mut scratch),
            };
            if !matched {
                continue;
            }
            match rule.disruptive {
                Disruptive::Deny | Disruptive::Drop if self.blocking(st) => {
                    return Flow::Deny(rule.id, rule.status.unwrap_or(403));
                }
                Disruptive::Allow => return Flow::Allow,
                _ => {}
            }
            i = p.after_match(at, rule);
        }
        Flow::Continue
    }

    fn removed(&self, rule: &Rule, st: &State) -> bool {
        st.removed_ids
            .iter()
            .any(|&(a, b)| (a..=b).contains(&rule.id))
            || (!st.removed_tags.is_empty()
                && rule
                    .tags
                    .iter()
                    .any(|t| st.removed_tags.iter().any(|r| r.eq_ignore_ascii_case(t))))
    }

    /// Whether every link of the rule matched; runs the actions and records the match if so.
    fn eval_rule<'d>(
        &self,
        rule: &Rule,
        data: &'d RequestData,
        st: &mut State,
        scratch: &mut Cands<'d>,
    ) -> bool {
        // As in ModSecurity, a link's actions run for every value it matches, as soon as it
        // matches: the next link may read what they set (CRS 920420 sets `tx.content_type` for
        // its chained check; 920450 one TX variable per restricted header).
        for link in &rule.links {
            if !self.eval_link(rule, link, data, st, scratch) {
                return false;
            }
        }
        if rule.log && (rule.msg.is_some() || rule.logdata.is_some()) {
            let lookup = |r: &str| lookup(r, rule, data, st);
            let msg = rule
                .msg
                .as_ref()
                .map(|m| m.expand(&lookup).into_owned())
                .unwrap_or_default();
            let logdata = rule
                .logdata
                .as_ref()
                .map(|m| m.expand(&lookup).into_owned())
                .unwrap_or_default();
            let (variable, value) = st.matched_var.clone().unwrap_or_default();
            st.matches.push(RuleMatch {
                id: rule.id,
                msg,
                data: logdata,
                variable: variable.to_string(),
                value: value.to_vec(),
                severity: rule.severity,
            });
        }
        true
    }

    fn eval_link<'d>(
        &self,
        rule: &Rule,
        link: &Link,
        data: &'d RequestData,
        st: &mut State,
        cands: &mut Cands<'d>,
    ) -> bool {
        let Some(op) = &link.op else {
            // SecAction: matches once, unconditionally.
            for action in &link.actions {
                self.exec(rule, action, data, st);
            }
            return true;
        };
        // Fast path for the many `SecRule TX:NAME "@lt 2"` guards: no copy unless it matches.
        if let (
            Some(name),
            [
                Target {
                    selector: Selector::Key(k),
                    ..
                },
            ],
        ) = (&link.tx_name, link.targets.as_slice())
            && link.chain_id == 0
            && !link.capture
            && !link.multi_match
            && link.exclusions.is_empty()
            && !st.removed_targets.iter().any(|(_, e)| e.var == Var::Tx)
        {
            let expand = expander(rule, data, st);
            let value = match st.tx.get(k.as_str()) {
                Some(v) if op.matches(v, &expand, None) => Arc::<[u8]>::from(v),
                _ => return false,
            };
            let name = Arc::clone(name);
            st.matched_vars.clear();
            st.matched_vars.push((name.clone(), value.clone()));
            st.matched_var = Some((name, value));
            for action in &link.actions {
                self.exec(rule, action, data, st);
            }
            return true;
        }
        let filters = op.filters();
        let needs = op.needs();
        // Nothing any of the link's values holds can satisfy the operator: removals only take
        // values away, so none can match whatever they remove.
        if filters
            && let (Some(sid), Some(ids)) = (link.target_set, &link.target_ids)
            && !admits(needs, &cands.set_union(sid, link, ids, data, st))
        {
            return false;
        }
        let mut caps: Vec<Vec<u8>> = Vec::new();
        let mut new_matches: Vec<Matched> = Vec::new();
        // Exclusions from `ctl` and the configuration that apply to this rule.
        let applies = |sel: &RuleSel| match sel {
            RuleSel::All => true,
            RuleSel::Ids(r) => r.iter().any(|&(a, b)| (a..=b).contains(&rule.id)),
            RuleSel::Tag(t) => rule.tags.iter().any(|rt| rt.eq_ignore_ascii_case(t)),
        };
        // Those that can reach one of the link's targets (CRS 941010 removes REQUEST_FILENAME
        // from the rules tagged `xss-perf-disable` on almost every request: every other rule
        // must not pay for it), and whether one reaches a counted target (`&ARGS`), whose
        // single value cannot be filtered afterwards.
        let removals = st.removed_targets.len();
        let (mut removal, mut counted) = (false, false);
        // The variable check first: it rules out almost every removal for almost every link,
        // while `applies` may compare tags.
        for (sel, e) in &st.removed_targets {
            let mut covered = link
                .targets
                .iter()
                .filter(|t| e.can_cover(t.var))
                .peekable();
            if covered.peek().is_some() && applies(sel) {
                for t in covered {
                    removal = true;
                    counted |= t.count;
                }
            }
        }
        // Whether a removal hides the value from this rule: only those made before this link
        // ran, as when collecting.
        let hidden = |cand: &Cand<'_>, st: &State| {
            removal
                && st.removed_targets[..removals]
                    .iter()
                    .any(|(sel, e)| e.covers(cand.var, &cand.key) && applies(sel))
        };
        // A repeat of a value this link has already judged (and nothing matched since, so the
        // state is the same); not when a removal may have hidden the first one.
        let judged = |dup: bool, new_matches: &[Matched]| dup && !removal && new_matches.is_empty();
        if let Some(ids) = &link.target_ids
            && !counted
            && !link.multi_match
        {
            // A target's values depend only on the target and its own exclusions: collected,
            // transformed and their bytes noted once per phase, shared by every link that reads
            // them through the same chain; removals that apply to this rule filter them here.
            for (t, &(tid, gid)) in link.targets.iter().zip(ids.iter()) {
                let (a, b) = cands.set(tid, t, &link.exclusions, data, st);
                let (g, union) = cands.group(gid, tid, link, a, b, st);
                if !admits(needs, &union) {
                    continue;
                }
                // The factors hold for every value (none holds a byte that voids them) and
                // no value holds one.
                if let (Some(filter), Some(literals)) = (link.literal_filter, &self.rules.literals)
                    && b > a
                    && filter.applies(&union)
                    && !cands.group_has(g, (a, b - a), literals, filter.bit, st)
                {
                    continue;
                }
                for i in 0..b - a {
                    if judged(cands.buf.dups[a + i], &new_matches) {
                        continue;
                    }
                    if !admits(needs, &cands.buf.tbytes[g + i]) {
                        continue;
                    }
                    let vi = cands.buf.tvals[g + i] as usize;
                    let v = &st.values[vi];
                    let cand = &cands.arena[a + i];
                    if let (Some(filter), Some(literals)) =
                        (link.literal_filter, &self.rules.literals)
                        && filter.applies(&v.bytes)
                    {
                        let value = v.value.as_deref().unwrap_or(&cand.value);
                        if !st.literal_hits.passes(literals, vi, value, filter.bit) {
                            continue;
                        }
                    }
                    if hidden(cand, st) {
                        continue;
                    }
                    let value = v.value.as_deref().unwrap_or(&cand.value);
                    let expand = expander(rule, data, st);
                    caps.clear();
                    if !op.matches(value, &expand, link.capture.then_some(&mut caps)) {
                        continue;
                    }
                    let value = Arc::from(value);
                    self.hit(rule, link, cand, value, &caps, data, st, &mut new_matches);
                }
            }
        } else if let Some(ids) = &link.target_ids
            && !counted
        {
            // multiMatch over the phase's shared values: each value and every intermediate
            // result of its chain comes from the request's cache, and the byte and literal
            // filters apply to each of them as to any cached value.
            for (t, &(tid, _)) in link.targets.iter().zip(ids.iter()) {
                let (a, b) = cands.set(tid, t, &link.exclusions, data, st);
                for (cand, &dup) in cands.arena[a..b].iter().zip(&cands.buf.dups[a..b]) {
                    if judged(dup, &new_matches) || hidden(cand, st) {
                        continue;
                    }
                    let found = if cand.slot != 0 {
                        self.multi_match_cached(rule, link, op, cand, data, st, &mut caps)
                    } else {
                        multi_match_uncached(rule, link, op, cand, data, st, &mut caps)
                    };
                    if let Some(value) = found {
                        self.hit(rule, link, cand, value, &caps, data, st, &mut new_matches);
                    }
                }
            }
        } else {
            let scratch = &mut cands.scratch;
            scratch.clear();
            // Removals are checked per value rather than collected: nothing allocated for them.
            for t in &link.targets {
                collect(t, data, st, scratch, |var, key| {
                    link.exclusions.iter().any(|e| e.covers(var, key))
                        || st
                            .removed_targets
                            .iter()
                            .any(|(sel, e)| e.covers(var, key) && applies(sel))
                });
            }
            for cand in scratch.iter() {
                let found: Option<Arc<[u8]>> = if link.multi_match && cand.slot != 0 {
                    self.multi_match_cached(rule, link, op, cand, data, st, &mut caps)
                } else if link.multi_match {
                    multi_match_uncached(rule, link, op, cand, data, st, &mut caps)
                } else {
                    let owned;
                    let idx =
                        (cand.slot != 0).then(|| value_index(st, cand.slot, link, &cand.value));
                    let (value, bytes): (&[u8], ByteSet) = if let Some(idx) = idx {
                        let v = &st.values[idx];
                        (v.value.as_deref().unwrap_or(&cand.value), v.bytes)
                    } else {
                        owned = transformed(link, &cand.value);
                        (owned.value.as_deref().unwrap_or(&cand.value), owned.bytes)
                    };
                    if filters && !op.may_match(&bytes) {
                        continue;
                    }
                    let expand = expander(rule, data, st);
                    caps.clear();
                    op.matches(value, &expand, link.capture.then_some(&mut caps))
                        .then(|| Arc::from(value))
                };
                if let Some(value) = found {
                    self.hit(rule, link, cand, value, &caps, data, st, &mut new_matches);
                }
            }
        }
        if new_matches.is_empty() {
            return false;
        }
        st.matched_vars = new_matches;
        true
    }

    /// multiMatch on a value with a cache slot: the value before any transformation, then
    /// after each step that changed it, each taken from (or put in) the request's cache; the
    /// first that matches.
    #[allow(clippy::too_many_arguments)]
    fn multi_match_cached(
        &self,
        rule: &Rule,
        link: &Link,
        op: &Operator,
        cand: &Cand<'_>,
        data: &RequestData,
        st: &mut State,
        caps: &mut Vec<Vec<u8>>,
    ) -> Option<Arc<[u8]>> {
        let needs = op.needs();
        let raw = raw_index(st, cand.slot, &cand.value);
        let (mut prev, mut idx) = (raw, raw);
        let mut steps = link.multi_steps.iter();
        loop {
            let v = &st.values[idx];
            if admits(needs, &v.bytes) {
                let bytes = v.bytes;
                let passes = match (link.literal_filter, &self.rules.literals) {
                    (Some(filter), Some(literals)) if filter.applies(&bytes) => {
                        let value = st.values[idx].value.as_deref().unwrap_or(&cand.value);
                        st.literal_hits.passes(literals, idx, value, filter.bit)
                    }
                    _ => true,
                };
                if passes {
                    let value = st.values[idx].value.as_deref().unwrap_or(&cand.value);
                    let expand = expander(rule, data, st);
                    caps.clear();
                    if op.matches(value, &expand, link.capture.then_some(&mut *caps)) {
                        return Some(Arc::from(value));
                    }
                }
            }
            // A value holding none of the chain's trigger bytes is what every step leaves it.
            if idx == prev
                && idx == raw
                && link
                    .chain_triggers
                    .is_some_and(|t| !t.intersects(&st.values[raw].bytes))
            {
                return None;
            }
            // The next step that changes the value.
            let next = loop {
                let step = steps.next()?;
                let i = multi_step_index(st, cand.slot, step, prev, (raw, &cand.value));
                prev = i;
                if !same_value(st, i, idx, &cand.value) {
                    break i;
                }
            };
            idx = next;
        }
    }

    /// A value matched the link's operator: captures, MATCHED_VAR and the link's actions.
    #[allow(clippy::too_many_arguments)]
    fn hit(
        &self,
        rule: &Rule,
        link: &Link,
        cand: &Cand<'_>,
        value: Arc<[u8]>,
        caps: &[Vec<u8>],
        data: &RequestData,
        st: &mut State,
        new_matches: &mut Vec<Matched>,
    ) {
        if link.capture {
            st.tx.set_captures(caps);
        }
        let name: Arc<str> = var_name(cand.var, &cand.key).into();
        st.matched_var = Some((name.clone(), value.clone()));
        new_matches.push((name, value));
        for action in &link.actions {
            self.exec(rule, action, data, st);
        }
    }

    fn exec(&self, rule: &Rule, action: &Action, data: &RequestData, st: &mut State) {
        if let Action::Ctl(ctl) = action
            && !self.folds.survive(ctl)
        {
            st.folded = false;
        }
        match action {
            Action::SetVar {
                collection,
                name,
                op,
            } => {
                // Most CRS setvars are literal (`tx.anomaly_score_pl1=0`): no expansion, and
                // no new key when the variable exists (CRS 901200 alone has 21 per request).
                let lk = |r: &str| lookup(r, rule, data, st);
                let expanded_name;
                let name: &str = match name.literal() {
                    Some(l) if !l.bytes().any(|b| b.is_ascii_uppercase()) => l,
                    _ => {
                        expanded_name = {
                            let mut n = name.expand(&lk).into_owned();
                            n.make_ascii_lowercase();
                            n
                        };
                        &expanded_name
                    }
                };
                let expanded_arg;
                let arg: &str = match op {
                    SetOp::Set(m) | SetOp::Add(m) | SetOp::Sub(m) => match m.literal() {
                        Some(l) => l,
                        None => {
                            // Owned: the value may be the variable this setvar changes.
                            expanded_arg = m.expand(&lk).into_owned();
                            &expanded_arg
                        }
                    },
                    SetOp::Delete => "",
                };
                if collection == "tx" {
                    // Only `=+` and `=-` read the current value.
                    let current = match op {
                        SetOp::Add(_) | SetOp::Sub(_) => st.tx.get(name),
                        SetOp::Set(_) | SetOp::Delete => None,
                    };
                    match apply_setop(current, op, arg) {
                        Some(v) => st.tx.set(name, v),
                        None => st.tx.remove(name),
                    }
                    return;
                }
                let key = format!("{collection}.{name}");
                let key = key.as_str();
                let map = &mut st.vars;
                // One lookup when the variable exists.
                if let Some(slot) = map.get_mut(key) {
                    match apply_setop(Some(slot), op, arg) {
                        Some(v) => *slot = v,
                        None => {
                            map.remove(key);
                        }
                    }
                } else if let Some(v) = apply_setop(None, op, arg) {
                    map.insert(key.to_owned(), v);
                }
            }
            Action::Ctl(ctl) => match ctl {
                Ctl::RuleRemoveById(r) => st.removed_ids.extend_from_slice(r),
                Ctl::RuleRemoveByTag(t) => st.removed_tags.push(t.clone()),
                Ctl::RuleRemoveTargetById(r, ex) => {
                    for e in ex {
                        st.removed_targets
                            .push((RuleSel::Ids(r.clone()), e.clone()));
                    }
                }
                Ctl::RuleRemoveTargetByTag(t, ex) => {
                    for e in ex {
                        st.removed_targets
                            .push((RuleSel::Tag(t.clone()), e.clone()));
                    }
                }
                Ctl::RuleEngine(m) => st.engine = Some(*m),
                Ctl::RequestBodyProcessor(p) => st.processor = Some(p),
                Ctl::ForceRequestBodyVariable(on) => st.force_body_var = *on,
                Ctl::Ignored => {}
            },
        }
    }
}

/// multiMatch on a value without a cache slot (TX, MATCHED_VARS: they change during the
/// request): transformed step by step here, outside the cache; the first result that matches.
fn multi_match_uncached(
    rule: &Rule,
    link: &Link,
    op: &Operator,
    cand: &Cand<'_>,
    data: &RequestData,
    st: &State,
    caps: &mut Vec<Vec<u8>>,
) -> Option<Arc<[u8]>> {
    let expand = expander(rule, data, st);
    let mut cur: Cow<'_, [u8]> = Cow::Borrowed(&cand.value);
    caps.clear();
    if op.matches(&cur, &expand, link.capture.then_some(&mut *caps)) {
        return Some(Arc::from(&*cur));
    }
    for t in link.transforms.iter() {
        // A borrowed result is a subslice of the input (`trim*`), so the same length means
        // unchanged: no copy, no compare, no re-match.
        let next = match t.apply(&cur) {
            Cow::Borrowed(b) if b.len() == cur.len() => continue,
            other => other.into_owned(),
        };
        if next.as_slice() == &*cur {
            continue;
        }
        cur = Cow::Owned(next);
        caps.clear();
        if op.matches(&cur, &expand, link.capture.then_some(&mut *caps)) {
            return Some(Arc::from(&*cur));
        }
    }
    None
}

fn transform<'v>(link: &Link, raw_bytes: &ByteSet, v: &'v [u8]) -> Cow<'v, [u8]> {
    let mut cur: Cow<'v, [u8]> = Cow::Borrowed(v);
    for (t, triggers) in link.transforms.iter().zip(link.step_triggers.iter()) {
        cur = match cur {
            // Still the raw value (or a `trim` of it, whose bytes it holds): a step none of
            // whose trigger bytes it holds leaves it as it is.
            Cow::Borrowed(b) if triggers.is_some_and(|t| !t.intersects(raw_bytes)) => {
                Cow::Borrowed(b)
            }
            Cow::Borrowed(b) => t.apply(b),
            // An unchanged result keeps the buffer rather than copying it.
            Cow::Owned(o) => {
                let out = changed(t.apply(&o), &o);
                Cow::Owned(out.unwrap_or(o))
            }
        };
    }
    cur
}

fn var_name(var: Var, key: &[u8]) -> String {
    let name = var.name();
    if key.is_empty() {
        return name.to_owned();
    }
    // Pushed rather than `format!`ted: this runs for every matching value.
    let key = String::from_utf8_lossy(key);
    let mut out = String::with_capacity(name.len() + 1 + key.len());
    out.push_str(name);
    out.push(':');
    out.push_str(&key);
    out
}

/// A macro reference (`tx.x`, `matched_var`, `request_headers.host`, `rule.id`), lowercase:
/// borrowed from the transaction where it can be.
fn lookup<'s>(r: &str, rule: &'s Rule, data: &RequestData, st: &'s State) -> Option<Cow<'s, str>> {
    let (coll, key) = match r.split_once('.') {
        Some((c, k)) => (c, Some(k)),
        None => (r, None),
    };
    match (coll, key) {
        ("tx", Some(k)) => st.tx.get(k).map(|v| text(v)),
        ("ip" | "session" | "global" | "user" | "resource", Some(k)) => {
            st.vars.get(&format!("{coll}.{k}")).map(|v| text(v))
        }
        ("matched_var", None) => st.matched_var.as_ref().map(|(_, v)| text(v)),
        ("matched_var_name", None) => st.matched_var.as_ref().map(|(n, _)| Cow::Borrowed(&**n)),
        ("rule", Some("id")) => Some(Cow::Owned(rule.id.to_string())),
        ("rule", Some("msg")) => rule
            .msg
            .as_ref()
            .map(|m| Cow::Borrowed(m.literal().unwrap_or_default())),
        ("rule", Some("severity")) => rule.severity.map(|s| Cow::Owned(s.to_string())),
        ("rule", Some(_)) => None,
        ("reqbody_error_msg", None) => Some(Cow::Owned(data.reqbody_error_msg.clone())),
        _ => {
            let var = Var::from_name(coll)?;
            let target = Target {
                var,
                selector: key.map_or(Selector::All, |k| Selector::Key(k.to_owned())),
                count: false,
            };
            let mut out = Vec::new();
            collect(&target, data, st, &mut out, |_, _| false);
            out.first()
                .map(|c| Cow::Owned(String::from_utf8_lossy(&c.value).into_owned()))
        }
    }
}

/// Resolves the `%{...}` references of an operator's argument against the transaction.
fn expander<'s>(
    rule: &'s Rule,
    data: &'s RequestData,
    st: &'s State,
) -> impl Fn(&'s Macro) -> Cow<'s, str> + Copy {
    move |m| m.expand(&|r| lookup(r, rule, data, st))
}

/// A value as text: borrowed when it is UTF-8 (`from_utf8` checks ASCII a word at a time; the
/// lossy decoder walks it in chunks), replacement characters otherwise.
fn text(v: &[u8]) -> Cow<'_, str> {
    match std::str::from_utf8(v) {
        Ok(s) => Cow::Borrowed(s),
        Err(_) => String::from_utf8_lossy(v),
    }
}

fn push_entries<'d>(
    var: Var,
    entries: &'d [Entry],
    sel: &Selector,
    names: bool,
    out: &mut Vec<Cand<'d>>,
    excluded: &dyn Fn(Var, &[u8]) -> bool,
) {
    for e in entries {
        if !sel.matches(&e.key) || excluded(var, &e.key) {
            continue;
        }
        out.push(Cand {
            var,
            key: Cow::Borrowed(&e.key),
            value: Cow::Borrowed(if names { &e.key } else { &e.value }),
            slot: if names { e.key_slot } else { e.slot },
        });
    }
}

fn scalar<'d>(var: Var, e: &'d Entry, out: &mut Vec<Cand<'d>>) {
    out.push(Cand {
        var,
        key: Cow::Borrowed(b""),
        value: Cow::Borrowed(&e.value),
        slot: e.slot,
    });
}

fn owned(var: Var, v: impl Into<Vec<u8>>, out: &mut Vec<Cand<'_>>) {
    out.push(Cand {
        var,
        key: Cow::Borrowed(b""),
        value: Cow::Owned(v.into()),
        slot: 0,
    });
}

fn flag(var: Var, on: bool, out: &mut Vec<Cand<'_>>) {
    owned(var, if on { &b"1"[..] } else { &b"0"[..] }, out);
}

/// Every value `t` yields (or their count for `&VAR`), minus exclusions.
fn collect<'d>(
    t: &Target,
    data: &'d RequestData,
    st: &State,
    out: &mut Vec<Cand<'d>>,
    excluded: impl Fn(Var, &[u8]) -> bool,
) {
    let start = out.len();
    let sel = &t.selector;
    let ex: &dyn Fn(Var, &[u8]) -> bool = &excluded;
    match t.var {
        Var::Args => {
            push_entries(Var::Args, &data.args_get, sel, false, out, ex);
            push_entries(Var::Args, &data.args_post, sel, false, out, ex);
        }
        Var::ArgsGet => push_entries(Var::ArgsGet, &data.args_get, sel, false, out, ex),
        Var::ArgsPost => push_entries(Var::ArgsPost, &data.args_post, sel, false, out, ex),
        Var::ArgsNames => {
            push_entries(Var::ArgsNames, &data.args_get, sel, true, out, ex);
            push_entries(Var::ArgsNames, &data.args_post, sel, true, out, ex);
        }
        Var::ArgsGetNames => push_entries(Var::ArgsGetNames, &data.args_get, sel, true, out, ex),
        Var::ArgsPostNames => push_entries(Var::ArgsPostNames, &data.args_post, sel, true, out, ex),
        Var::RequestHeaders => {
            push_entries(Var::RequestHeaders, &data.headers, sel, false, out, ex)
        }
        Var::RequestHeadersNames => {
            push_entries(Var::RequestHeadersNames, &data.headers, sel, true, out, ex)
        }
        Var::RequestCookies => {
            push_entries(Var::RequestCookies, &data.cookies, sel, false, out, ex)
        }
        Var::RequestCookiesNames => {
            push_entries(Var::RequestCookiesNames, &data.cookies, sel, true, out, ex)
        }
        Var::Files => push_entries(Var::Files, &data.files, sel, false, out, ex),
        Var::FilesNames => push_entries(Var::FilesNames, &data.files, sel, true, out, ex),
        Var::FilesSizes => push_entries(Var::FilesSizes, &data.files_sizes, sel, false, out, ex),
        Var::MultipartPartHeaders => push_entries(
            Var::MultipartPartHeaders,
            &data.multipart_part_headers,
            sel,
            false,
            out,
            ex,
        ),
        Var::Xml => match sel {
            Selector::Key(k) if k.contains('@') => {
                for e in &data.xml_attrs {
                    scalar(Var::Xml, e, out);
                }
            }
            _ => {
                if let Some(e) = &data.xml_text {
                    scalar(Var::Xml, e, out);
                }
            }
        },
        Var::RequestUri => scalar(t.var, &data.uri, out),
        Var::RequestUriRaw => scalar(t.var, &data.uri_raw, out),
        Var::RequestFilename => scalar(t.var, &data.filename, out),
        Var::RequestBasename => scalar(t.var, &data.basename, out),
        Var::RequestLine => scalar(t.var, &data.line, out),
        Var::RequestMethod => scalar(t.var, &data.method, out),
        Var::RequestProtocol => scalar(t.var, &data.protocol, out),
        Var::QueryString => scalar(t.var, &data.query, out),
        Var::RemoteAddr => scalar(t.var, &data.remote_addr, out),
        Var::UniqueId => scalar(t.var, &data.unique_id, out),
        Var::RequestBody => {
            if let Some(e) = &data.body {
                scalar(t.var, e, out);
            }
        }
        Var::RequestBodyLength => owned(t.var, data.body_length.to_string(), out),
        Var::ArgsCombinedSize => owned(t.var, data.args_combined_size().to_string(), out),
        Var::FilesCombinedSize => owned(t.var, data.files_combined_size.to_string(), out),
        Var::ReqbodyError => flag(t.var, data.reqbody_error, out),
        Var::ReqbodyErrorMsg => owned(t.var, data.reqbody_error_msg.clone(), out),
        Var::ReqbodyProcessor => {
            if let Some(p) = st.processor.or(data.processor) {
                owned(t.var, p, out);
            }
        }
        Var::UrlencodedError => flag(t.var, data.urlencoded_error, out),
        Var::InboundDataError => flag(t.var, false, out),
        Var::MultipartStrictError => flag(t.var, data.multipart.strict_error, out),
        Var::MultipartUnmatchedBoundary => flag(t.var, data.multipart.unmatched_boundary, out),
        Var::MultipartBoundaryQuoted => flag(t.var, data.multipart.boundary_quoted, out),
        Var::MultipartBoundaryWhitespace => flag(t.var, data.multipart.boundary_whitespace, out),
        Var::MultipartDataBefore => flag(t.var, data.multipart.data_before, out),
        Var::MultipartDataAfter => flag(t.var, data.multipart.data_after, out),
        Var::MultipartHeaderFolding => flag(t.var, data.multipart.header_folding, out),
        Var::MultipartLfLine => flag(t.var, data.multipart.lf_line, out),
        Var::MultipartCrlfLfLines => flag(t.var, data.multipart.crlf_lf_lines, out),
        Var::MultipartMissingSemicolon => flag(t.var, data.multipart.missing_semicolon, out),
        Var::MultipartInvalidQuoting => flag(t.var, data.multipart.invalid_quoting, out),
        Var::MultipartInvalidPart => flag(t.var, data.multipart.invalid_part, out),
        Var::MultipartInvalidHeaderFolding => {
            flag(t.var, data.multipart.invalid_header_folding, out)
        }
        Var::MultipartFileLimitExceeded => flag(t.var, data.multipart.file_limit_exceeded, out),
        Var::MultipartFilename => {
            for e in &data.files {
                scalar(t.var, e, out);
            }
        }
        Var::MultipartName => {
            for e in &data.files {
                out.push(Cand {
                    var: t.var,
                    key: Cow::Borrowed(b""),
                    value: Cow::Borrowed(&e.key),
                    slot: 0,
                });
            }
        }
        Var::Tx => match sel {
            Selector::Key(k) => {
                if let Some(v) = st.tx.get(k.as_str())
                    && !ex(t.var, k.as_bytes())
                {
                    out.push(Cand {
                        var: t.var,
                        key: Cow::Owned(k.as_bytes().to_vec()),
                        value: Cow::Owned(v.to_vec()),
                        slot: 0,
                    });
                }
            }
            _ => {
                for (k, v) in st.tx.iter() {
                    if sel.matches(k.as_bytes()) && !ex(t.var, k.as_bytes()) {
                        out.push(Cand {
                            var: t.var,
                            key: Cow::Owned(k.as_bytes().to_vec()),
                            value: Cow::Owned(v.to_vec()),
                            slot: 0,
                        });
                    }
                }
            }
        },
        Var::Ip | Var::Session | Var::Global => {
            let prefix = t.var.collection_prefix().unwrap_or("ip");
            match sel {
                Selector::Key(k) => {
                    if let Some(v) = st.vars.get(&format!("{prefix}.{k}"))
                        && !ex(t.var, k.as_bytes())
                    {
                        out.push(Cand {
                            var: t.var,
                            key: Cow::Owned(k.as_bytes().to_vec()),
                            value: Cow::Owned(v.clone()),
                            slot: 0,
                        });
                    }
                }
                _ => {
                    for (k, v) in &st.vars {
                        let Some(name) = k.strip_prefix(prefix).and_then(|r| r.strip_prefix('.'))
                        else {
                            continue;
                        };
                        if sel.matches(name.as_bytes()) && !ex(t.var, name.as_bytes()) {
                            out.push(Cand {
                                var: t.var,
                                key: Cow::Owned(name.as_bytes().to_vec()),
                                value: Cow::Owned(v.clone()),
                                slot: 0,
                            });
                        }
                    }
                }
            }
        }
        Var::MatchedVar => {
            if let Some((_, v)) = &st.matched_var {
                owned(t.var, v.to_vec(), out);
            }
        }
        Var::MatchedVarName => {
            if let Some((n, _)) = &st.matched_var {
                owned(t.var, n.as_bytes(), out);
            }
        }
        Var::MatchedVars | Var::MatchedVarsNames => {
            for (n, v) in &st.matched_vars {
                if !sel.matches(n.as_bytes()) {
                    continue;
                }
                out.push(Cand {
                    var: t.var,
                    key: Cow::Owned(n.as_bytes().to_vec()),
                    value: Cow::Owned(if t.var == Var::MatchedVars {
                        v.to_vec()
                    } else {
                        n.as_bytes().to_vec()
                    }),
                    slot: 0,
                });
            }
        }
        Var::Duration => owned(t.var, "0", out),
        Var::FullRequestLength => owned(
            t.var,
            (data.line.value.len() + data.body_length).to_string(),
            out,
        ),
        Var::Time | Var::TimeEpoch => owned(
            t.var,
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs())
                .to_string(),
            out,
        ),
        Var::Env
        | Var::RemotePort
        | Var::ServerAddr
        | Var::ServerName
        | Var::ServerPort
        | Var::AuthType
        | Var::FullRequest
        | Var::HighestSeverity
        | Var::Geo
        | Var::Response => {}
    }
    // Scalars and collections read from state were not filtered as they were collected.
    let mut i = start;
    while i < out.len() {
        if ex(out[i].var, &out[i].key) {
            out.remove(i);
        } else {
            i += 1;
        }
    }
    if t.count {
        let n = out.len() - start;
        out.truncate(start);
        owned(t.var, n.to_string(), out);
    }
}

/// Line, URI, query arguments, headers and cookies: what phase 1 reads.
fn fill_head(data: &mut RequestData, req: &HttpInput<'_>) {
    let target = req.target;
    let uri = match target.find("://") {
        Some(p) if !target.starts_with('/') => {
            let rest = &target[p + 3..];
            rest.find('/').map_or("/", |s| &rest[s..])
        }
        _ => target,
    };
    let (path, query) = match uri.split_once('?') {
        Some((p, q)) => (p, q),
        None => (uri, ""),
    };
    let basename = path.rsplit('/').next().unwrap_or(path);
    data.uri = data.entry(b"".to_vec(), uri.as_bytes().to_vec());
    data.uri_raw = data.entry(b"".to_vec(), target.as_bytes().to_vec());
    // ModSecurity hands these over percent-decoded (rules match `array_diff (` in a path).
    data.filename = data.entry(b"".to_vec(), percent_decode(path.as_bytes()));
    data.basename = data.entry(b"".to_vec(), percent_decode(basename.as_bytes()));
    data.query = data.entry(b"".to_vec(), query.as_bytes().to_vec());
    data.method = data.entry(b"".to_vec(), req.method.as_bytes().to_vec());
    data.protocol = data.entry(b"".to_vec(), req.version.as_bytes().to_vec());
    let line = format!("{} {} {}", req.method, target, req.version);
    data.line = data.entry(b"".to_vec(), line.into_bytes());
    data.remote_addr = data.entry(b"".to_vec(), req.remote_addr.to_string().into_bytes());
    data.unique_id = data.entry(b"".to_vec(), req.request_id.as_bytes().to_vec());
    let (args, bad) = body::parse_urlencoded(query.as_bytes());
    data.urlencoded_error |= bad;
    for (k, v) in args {
        let e = data.arg_entry(k, v);
        data.args_get.push(e);
    }
    for (k, v) in &req.headers {
        let e = data.entry(k.to_vec(), v.to_vec());
        data.headers.push(e);
        if k.eq_ignore_ascii_case(b"cookie") {
            for (ck, cv) in body::parse_cookies(v) {
                let e = data.entry(ck, cv);
                data.cookies.push(e);
            }
        }
    }
    data.processor = req
        .headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(b"content-type"))
        .and_then(|(_, v)| body::processor_for(v));
}

/// `%xx` decoded (not `+`); broken escapes kept.
fn percent_decode(s: &[u8]) -> Vec<u8> {
    if !s.contains(&b'%') {
        return s.to_vec();
    }
    let plus_kept: Vec<u8> = s
        .split(|&b| b == b'+')
        .map(|part| body::url_decode(part).0)
        .collect::<Vec<_>>()
        .join(&b'+');
    plus_kept
}

/// The body processor (the content type's, or the one a rule chose with `ctl`).
fn fill_body(
    data: &mut RequestData,
    body: &[u8],
    content_type: &[u8],
    st: &State,
    max_args: usize,
) {
    data.body_length = body.len();
    let processor = st.processor.or(data.processor);
    data.processor = processor;
    if body.is_empty() {
        return;
    }
    if let Some(p) = processor {
        body::process(data, p, body, content_type, max_args);
    }
    // Also for JSON (as Coraza does): rules written for the raw body (`"key":` patterns) see it.
    if matches!(processor, Some("URLENCODED" | "JSON")) || processor.is_none() || st.force_body_var
    {
        data.body = Some(data.entry(b"".to_vec(), body.to_vec()));
    }
}

#[cfg(test)]
mod tests {
    use std::{path::Path, sync::Arc};

    use super::*;
    use crate::waf::{rule::Builder, seclang};

    fn engine(rules: &str) -> Engine {
        let file: Arc<Path> = Arc::from(Path::new("test.conf"));
        let mut b = Builder::default();
        for d in &seclang::parse_text(&file, rules).expect("parses") {
            b.add(d).expect("adds");
        }
        Engine::new(b.finish().expect("builds"), Vec::new(), Mode::Detect)
    }

    /// The ids of the rules of `phase` whose outcome was decided at load, and whether each
    /// matched.
    fn decided(e: &Engine, phase: usize) -> Vec<(u32, bool)> {
        e.rules.phases[phase]
            .items
            .iter()
            .zip(&e.folds.phases[phase])
            .filter_map(|(item, f)| match (item, f) {
                (Item::Rule(r), Some(f)) => Some((r.id, f.matched)),
                _ => None,
            })
            .collect()
    }

    fn ids(e: &Engine, target: &str) -> Vec<u32> {
        ids_with(e, target, &Tuning::default())
    }

    /// The ids of the rules that matched a GET of `target` with `excl` removed.
    fn ids_with(e: &Engine, target: &str, excl: &Tuning) -> Vec<u32> {
        let input = HttpInput {
            method: "GET",
            target,
            version: "HTTP/1.1",
            headers: vec![(b"host", b"x")],
            body: None,
            remote_addr: "127.0.0.1".parse().expect("ip"),
            request_id: "t",
        };
        e.inspect(&input, excl)
            .matches
            .iter()
            .map(|m| m.id)
            .collect()
    }

    /// `skipAfter` resumes after its marker (resolved to a position when loading ends), also
    /// when a `SecRuleRemoveById` took rules out before the marker; a rule that does not match
    /// skips nothing. Also: a macro argument reads the transaction's current value.
    #[test]
    fn skip_after_resumes_after_its_marker() {
        let e = engine(
            r#"SecAction "id:1,phase:1,pass,nolog,setvar:tx.limit=3"
SecRule ARGS:skip "@streq yes" "id:2,phase:1,pass,log,msg:r2,skipAfter:END"
SecRule ARGS "@rx ." "id:3,phase:1,pass,log,msg:r3"
SecRule ARGS "@rx ." "id:4,phase:1,pass,log,msg:r4"
SecRule ARGS "@rx ." "id:5,phase:1,pass,log,msg:r5"
SecMarker END
SecRule ARGS:n "@lt %{tx.limit}" "id:6,phase:1,pass,log,msg:r6"
SecRuleRemoveById 4
"#,
        );
        assert_eq!(ids(&e, "/?skip=yes&n=2"), vec![2, 6]);
        assert_eq!(ids(&e, "/?skip=no&n=3"), vec![3, 5]);
    }

    /// Rules that read only TX the configuration fixes are decided at load: the setup checks
    /// and defaults before the first rule that reads the request become the TX a request
    /// starts with, a guard's skip is taken without evaluating it, and a guard that reads a
    /// variable a request may have changed is still evaluated per request.
    #[test]
    fn rules_that_read_only_fixed_tx_are_decided_at_load() {
        let e = engine(
            r#"SecRule &TX:level "@eq 0" "id:1,phase:1,pass,nolog,setvar:tx.level=1"
SecRule &TX:level "@eq 0" "id:10,phase:1,deny,status:500,log,msg:'not set up'"
SecAction "id:2,phase:1,pass,nolog,setvar:tx.score=0"
SecRule ARGS:raise "@streq yes" "id:3,phase:1,pass,log,msg:r3,setvar:tx.score=+5"
SecRule TX:level "@lt 2" "id:4,phase:1,pass,nolog,skipAfter:END-PL2"
SecRule ARGS "@rx pl2" "id:5,phase:1,pass,log,msg:r5"
SecMarker END-PL2
SecRule TX:score "@ge 5" "id:6,phase:1,pass,log,msg:r6"
SecRule TX:level "@lt 2" "id:8,phase:2,pass,nolog,skipAfter:END-PL2-B"
SecRule ARGS "@rx pl2" "id:9,phase:2,pass,log,msg:r9"
SecMarker END-PL2-B
SecRule TX:level "@eq 1" "id:7,phase:2,pass,log,msg:r7"
"#,
        );
        let f = &e.folds;
        // Rules 1, 10 (a deny that does not match) and 2 are in the starting TX; guards 4
        // and 8 are decided (matched); 3 and 6 read the request or what it changed; 7 logs
        // when it matches (a record per request).
        assert_eq!(f.start, 3);
        assert_eq!(f.tx.get("level").map(Vec::as_slice), Some(&b"1"[..]));
        assert_eq!(
            decided(&e, 1),
            [(1, true), (10, false), (2, true), (4, true)]
        );
        assert_eq!(decided(&e, 2), [(8, true)]);
        assert_eq!(ids(&e, "/?q=pl2"), vec![7]);
        assert_eq!(ids(&e, "/?raise=yes&q=pl2"), vec![3, 6, 7]);
    }

    /// What a rule that reads the request may change is unknown after it, on every path: a
    /// value set on one path only (a skip over it that depends on the request) and variables
    /// named by a macro (`tx.h_%{tx.0}`) are read per request.
    #[test]
    fn a_variable_a_request_may_change_is_read_per_request() {
        let e = engine(
            r#"SecRule ARGS:a "@streq 1" "id:1,phase:1,pass,nolog,skipAfter:M"
SecAction "id:2,phase:1,pass,nolog,setvar:tx.v=1"
SecMarker M
SecRule TX:v "@eq 1" "id:3,phase:1,pass,log,msg:r3"
SecRule TX:v "@eq 1" "id:4,phase:1,pass,nolog,skipAfter:N"
SecRule ARGS "@rx ." "id:5,phase:1,pass,log,msg:r5"
SecMarker N
SecRule ARGS:h "@rx ^(.*)$" "id:6,phase:1,pass,nolog,capture,setvar:'tx.h_%{tx.1}=1'"
SecRule &TX:h_x "@eq 1" "id:7,phase:1,pass,log,msg:r7"
"#,
        );
        assert_eq!(ids(&e, "/?a=1"), vec![5]);
        assert_eq!(ids(&e, "/?a=0"), vec![3]);
        assert_eq!(ids(&e, "/?a=0&h=x"), vec![3, 7]);
        assert_eq!(ids(&e, "/?a=1&h=y"), vec![5]);
        assert_eq!(decided(&e, 1), [(2, true)]);
        // A rule that adds to a variable a request may have changed reads it (3); one whose
        // actions cannot run writes nothing (5).
        let e = engine(
            r#"SecAction "id:1,phase:1,pass,nolog,setvar:tx.score=0"
SecRule ARGS:bump "@streq 1" "id:2,phase:1,pass,nolog,setvar:tx.score=+5"
SecAction "id:3,phase:1,pass,nolog,setvar:tx.score=+1"
SecRule &TX:unset "@eq 1" "id:5,phase:1,pass,nolog,setvar:tx.score=+100"
SecRule TX:score "@eq 6" "id:4,phase:1,pass,log,msg:six"
"#,
        );
        assert_eq!(decided(&e, 1), [(1, true), (5, false)]);
        assert_eq!(ids(&e, "/?bump=1"), vec![4]);
        assert_eq!(ids(&e, "/?bump=0"), Vec::<u32>::new());
        // A value set over a variable a macro-named setvar may have changed is set per request,
        // also when it equals what loading last saw there.
        let e = engine(
            r#"SecAction "id:1,phase:1,pass,nolog,setvar:tx.h_x=0"
SecRule ARGS:h "@rx ^(.*)$" "id:2,phase:1,pass,nolog,capture,setvar:'tx.h_%{tx.1}=1'"
SecAction "id:3,phase:1,pass,nolog,setvar:tx.h_x=0"
SecRule TX:h_x "@eq 0" "id:4,phase:1,pass,log,msg:zero"
"#,
        );
        assert_eq!(decided(&e, 1), [(1, true), (3, true)]);
        assert_eq!(ids(&e, "/?h=x"), vec![4]);
    }

    /// A decided outcome holds only while the rules run as loaded: a route exclusion or a
    /// `ctl` that removes a decided rule (here the one that sets the level the guards read),
    /// or a TX variable from a rule, turns folding off for the request, and the rules the
    /// guards would have skipped run. Also when the removed rule is in the starting TX.
    #[test]
    fn removing_a_decided_rule_turns_folding_off_for_the_request() {
        let e = engine(
            r#"SecRule ARGS:off "@streq 1" "id:1,phase:1,pass,nolog,ctl:ruleRemoveById=8"
SecRule ARGS:notx "@streq 1" "id:9,phase:1,pass,nolog,ctl:ruleRemoveTargetById=2;TX:lvl"
SecAction "id:8,phase:1,pass,nolog,tag:setup,setvar:tx.lvl=1"
SecRule TX:lvl "@eq 1" "id:2,phase:1,pass,nolog,skipAfter:END"
SecRule ARGS "@rx evil" "id:3,phase:1,pass,log,msg:r3"
SecMarker END
SecRule TX:lvl "@eq 1" "id:4,phase:1,pass,nolog,skipAfter:END2"
SecRule ARGS "@rx evil" "id:5,phase:1,pass,log,msg:r5"
SecMarker END2
"#,
        );
        assert_eq!(decided(&e, 1), [(8, true), (2, true), (4, true)]);
        let none = Tuning::default();
        let by_id = Tuning {
            ids: vec![(8, 8)],
            ..Tuning::default()
        };
        let by_tag = Tuning {
            tags: vec!["SETUP".into()],
            ..Tuning::default()
        };
        assert_eq!(ids_with(&e, "/?q=evil", &none), Vec::<u32>::new());
        assert_eq!(ids_with(&e, "/?off=1&q=evil", &none), vec![3, 5]);
        assert_eq!(ids_with(&e, "/?q=evil", &by_id), vec![3, 5]);
        assert_eq!(ids_with(&e, "/?q=evil", &by_tag), vec![3, 5]);
        // TX:lvl taken from rule 2 only: it has nothing to match; guard 4 still skips.
        assert_eq!(ids_with(&e, "/?notx=1&q=evil", &none), vec![3]);
        // The same rules with nothing before them: 8 and 2 are in the starting TX.
        let e = engine(
            r#"SecAction "id:8,phase:1,pass,nolog,setvar:tx.lvl=1"
SecRule TX:lvl "@eq 1" "id:2,phase:1,pass,nolog,skipAfter:END"
SecRule ARGS "@rx evil" "id:3,phase:1,pass,log,msg:r3"
SecMarker END
"#,
        );
        assert!(e.folds.start > 2, "the guard's skip is in the start");
        assert_eq!(ids_with(&e, "/?q=evil", &none), Vec::<u32>::new());
        assert_eq!(ids_with(&e, "/?q=evil", &by_id), vec![3]);
    }

    /// The transformation cache remembers "unchanged" results; a chain that only trims returns
    /// a shorter borrowed slice, which must be cached as the trimmed value, not as unchanged.
    #[test]
    fn cached_transformations_keep_trimmed_and_unchanged_values_apart() {
        let e = engine(
            "SecRule ARGS \"@streq abc\" \"id:1,phase:1,pass,log,msg:'a',t:none,t:trim\"\n\
             SecRule ARGS \"@streq abc\" \"id:2,phase:1,pass,log,msg:'b',t:none,t:trim\"\n\
             SecRule ARGS_NAMES \"@streq k\" \"id:4,phase:1,pass,log,msg:'d',t:none,t:lowercase\"\n\
             SecRule ARGS_NAMES \"@streq K\" \"id:5,phase:1,pass,log,msg:'e',t:none,t:lowercase\"\n\
             SecRule ARGS \"@streq abc\" \"id:6,phase:1,pass,log,msg:'f',t:none,t:trim,multiMatch\"\n",
        );
        assert_eq!(ids(&e, "/?K=%20abc%20"), vec![1, 2, 4, 6]);
        assert_eq!(ids(&e, "/?k=abc"), vec![1, 2, 4, 6]);
    }

    /// The (value, chain) table a worker thread keeps between requests answers only for the
    /// request that filled it: a value cached by one request is never another's, also when
    /// requests of two rule sets (a reload) alternate on the thread.
    #[test]
    fn the_value_cache_kept_by_the_thread_holds_nothing_of_earlier_requests() {
        let one = engine(
            "SecRule ARGS \"@contains evil\" \"id:1,phase:1,pass,log,msg:'a',t:none,t:lowercase\"\n",
        );
        let two = engine(
            "SecRule ARGS \"@contains evil\" \"id:2,phase:1,pass,log,msg:'a',t:none,t:urlDecode,t:lowercase\"\n\
             SecRule ARGS \"@contains evil\" \"id:3,phase:1,pass,log,msg:'b',t:none,t:trim,t:lowercase\"\n",
        );
        for _ in 0..3 {
            assert_eq!(ids(&one, "/?a=EVIL&b=fine"), vec![1]);
            assert_eq!(ids(&one, "/?a=fine&b=fine"), Vec::<u32>::new());
            assert_eq!(ids(&two, "/?a=fine&b=EViL"), vec![2, 3]);
            assert_eq!(ids(&two, "/?a=fine"), Vec::<u32>::new());
            assert_eq!(ids(&one, "/?b=x&a=y&c=eViL"), vec![1]);
        }
    }

    /// `multiMatch` runs the operator on the value before the chain and after every step that
    /// changed it, from the per-request cache it shares with links whose chain is that prefix
    /// (rule 41 computes `lowercase` first, 42 reads it as its first step).
    #[test]
    fn multi_match_sees_every_intermediate_value_through_the_cache() {
        let e = engine(
            "SecRule ARGS \"@streq a b\" \"id:41,phase:1,pass,log,msg:'a',t:none,t:lowercase\"\n\
             SecRule ARGS \"@streq a b\" \"id:42,phase:1,pass,log,msg:'b',t:none,t:lowercase,t:removeWhitespace,multiMatch\"\n\
             SecRule ARGS \"@streq ab\" \"id:43,phase:1,pass,log,msg:'c',t:none,t:lowercase,t:removeWhitespace,multiMatch\"\n\
             SecRule ARGS \"@streq A B\" \"id:44,phase:1,pass,log,msg:'d',t:none,t:lowercase,t:removeWhitespace,multiMatch\"\n\
             SecRule ARGS \"@streq a b\" \"id:45,phase:1,pass,log,msg:'e',t:none,t:lowercase,t:removeWhitespace\"\n",
        );
        // Raw, after `lowercase`, after `removeWhitespace`; the plain chain sees only the last.
        assert_eq!(ids(&e, "/?k=A%20B"), vec![41, 42, 43, 44]);
        // `lowercase` changes nothing here: the raw value is not judged twice, still matches.
        assert_eq!(ids(&e, "/?k=a%20b"), vec![41, 42, 43]);
        assert_eq!(ids(&e, "/?k=xy"), Vec::<u32>::new());
    }

    /// The literal and byte filters judge each multiMatch step by that step's own value: a
    /// pattern whose words appear only after `base64Decode` still matches (`ZXZhbCgxKQ` is
    /// `eval(1)`), the raw value is still judged, and a value none of whose steps holds the
    /// words is passed. Also: a chain whose trigger bytes a value holds but which leaves it as
    /// it is (`compressWhitespace` on single spaces; `lowercase` after a change kept as is)
    /// gives the rule the value itself.
    #[test]
    fn multi_match_filters_judge_each_step_by_its_own_value() {
        let e = engine(
            "SecRule ARGS \"@rx eval\\(\" \"id:51,phase:1,pass,log,msg:'a',t:none,t:base64Decode,multiMatch\"\n\
             SecRule ARGS \"@rx ^a b$\" \"id:52,phase:1,pass,log,msg:'b',t:none,t:compressWhitespace\"\n\
             SecRule ARGS \"@rx ^x y$\" \"id:53,phase:1,pass,log,msg:'c',t:none,t:urlDecodeUni,t:lowercase,t:compressWhitespace\"\n",
        );
        assert_eq!(ids(&e, "/?k=ZXZhbCgxKQ"), vec![51]);
        assert_eq!(ids(&e, "/?k=eval(1)"), vec![51]);
        assert_eq!(ids(&e, "/?k=ZXZhbA"), Vec::<u32>::new());
        assert_eq!(ids(&e, "/?k=a%20b"), vec![52]);
        assert_eq!(ids(&e, "/?k=X%2520Y"), vec![53]);
    }

    /// Target removals made by `ctl` (as CRS 941010 does) reach exactly the rules they name, on
    /// the shared per-phase value sets: rules they do not name still see every value, counted
    /// targets count what is left, and a removal made later does not reach back.
    #[test]
    fn ctl_target_removals_reach_only_the_rules_they_name() {
        let e = engine(
            "SecRule ARGS \"@streq evil\" \"id:10,phase:1,pass,log,msg:'before',t:none\"\n\
             SecAction \"id:1,phase:1,pass,nolog,ctl:ruleRemoveTargetById=20-21;ARGS:a,\
             ctl:ruleRemoveTargetByTag=no-b;ARGS:b\"\n\
             SecRule ARGS \"@streq evil\" \"id:20,phase:1,pass,log,msg:'by id',t:none\"\n\
             SecRule &ARGS \"@eq 1\" \"id:21,phase:1,pass,log,msg:'count',t:none\"\n\
             SecRule ARGS \"@streq evil\" \"id:22,phase:1,pass,log,msg:'by tag',tag:'no-b',t:none\"\n\
             SecRule ARGS \"@streq evil\" \"id:23,phase:1,pass,log,msg:'untouched',t:none\"\n",
        );
        // `a` is hidden from 20 and 21 only, `b` from 22 only.
        assert_eq!(ids(&e, "/?a=evil"), vec![10, 22, 23]);
        assert_eq!(ids(&e, "/?b=evil"), vec![10, 20, 21, 23]);
        assert_eq!(ids(&e, "/?a=evil&b=ok"), vec![10, 21, 22, 23]);
        assert_eq!(ids(&e, "/?a=ok&b=evil"), vec![10, 20, 21, 23]);
    }

    /// Equal argument values share one cache slot and a link judges a repeat once; every
    /// occurrence still counts when they match (each runs the link's actions), a repeat whose
    /// first occurrence a `ctl` removal hid is still judged, and names never share a slot
    /// with values.
    #[test]
    fn repeated_values_are_judged_once_but_each_occurrence_counts() {
        let e = engine(
            "SecAction \"id:1,phase:1,pass,nolog,ctl:ruleRemoveTargetById=20;ARGS:a\"\n\
             SecRule ARGS \"@streq evil\" \"id:10,phase:1,pass,nolog,setvar:tx.n=+1\"\n\
             SecRule TX:n \"@eq 3\" \"id:11,phase:1,pass,log,msg:'each occurrence'\"\n\
             SecRule ARGS \"@streq evil\" \"id:12,phase:1,pass,nolog,multiMatch,t:none,t:lowercase,setvar:tx.m=+1\"\n\
             SecRule TX:m \"@eq 3\" \"id:13,phase:1,pass,log,msg:'each, multiMatch'\"\n\
             SecRule ARGS \"@streq evil\" \"id:20,phase:1,pass,log,msg:'not hidden',t:none\"\n\
             SecRule ARGS_NAMES \"@streq evil\" \"id:30,phase:1,pass,log,msg:'name',t:none\"\n\
             SecRule ARGS \"@streq x\" \"id:40,phase:1,pass,log,msg:'value',t:none\"\n",
        );
        assert_eq!(ids(&e, "/?a=evil&b=evil&c=evil"), vec![11, 13, 20]);
        assert_eq!(ids(&e, "/?a=evil&b=ok"), Vec::<u32>::new());
        assert_eq!(ids(&e, "/?evil=x&x=evil"), vec![20, 30, 40]);
    }

    /// A link's literal factors are looked for across a target's values at once: one value
    /// holding them (first, last, after the chain changed it) is found; a target holding them
    /// only spread over several values passes the check and is judged per value.
    #[test]
    fn a_factor_in_any_value_of_a_target_is_found() {
        let e = engine(
            "SecRule ARGS \"@rx union\\s+select\" \"id:1,phase:1,pass,log,msg:'sqli',t:none,t:lowercase\"\n",
        );
        assert_eq!(ids(&e, "/?a=x&b=y&c=UNION%20SELECT"), vec![1]);
        assert_eq!(ids(&e, "/?a=union%20select&b=y&c=z"), vec![1]);
        assert_eq!(ids(&e, "/?a=x&b=y&c=z"), Vec::<u32>::new());
        assert_eq!(ids(&e, "/?a=union&b=select"), Vec::<u32>::new());
    }

    /// Chains share the steps they have in common on a value, each in its own order: the same
    /// transformations in another order or a prefix of another chain give their own results.
    #[test]
    fn chains_sharing_steps_each_get_their_own_result() {
        let e = engine(
            "SecRule ARGS \"@streq aa\" \"id:1,phase:1,pass,log,msg:'a',t:none,t:urlDecodeUni,t:lowercase\"\n\
             SecRule ARGS \"@streq a%41\" \"id:2,phase:1,pass,log,msg:'b',t:none,t:lowercase\"\n\
             SecRule ARGS \"@streq aA\" \"id:3,phase:1,pass,log,msg:'c',t:none,t:lowercase,t:urlDecodeUni\"\n\
             SecRule ARGS \"@streq AA\" \"id:4,phase:1,pass,log,msg:'d',t:none,t:urlDecodeUni\"\n",
        );
        assert_eq!(ids(&e, "/?x=A%2541"), vec![1, 2, 3, 4]);
        assert_eq!(ids(&e, "/?x=aa&y=A%2541"), vec![1, 2, 3, 4]);
        assert_eq!(ids(&e, "/?x=aa"), vec![1]);
    }

    /// A target's values share their untransformed group with every chain none of whose
    /// trigger bytes any of them holds; one value that holds one (`ABC` for `lowercase`,
    /// after any number that do not) is transformed.
    #[test]
    fn a_chain_is_skipped_only_when_no_value_of_the_target_needs_it() {
        let e = engine(
            "SecRule ARGS \"@streq abc\" \"id:1,phase:1,pass,log,msg:'raw',t:none\"\n\
             SecRule ARGS \"@streq abc\" \"id:2,phase:1,pass,log,msg:'lower',t:none,t:lowercase\"\n",
        );
        assert_eq!(ids(&e, "/?a=x&b=y&c=ABC"), vec![2]);
        assert_eq!(ids(&e, "/?a=x&b=abc"), vec![1, 2]);
        assert_eq!(ids(&e, "/?a=x&b=y"), Vec::<u32>::new());
    }
}
