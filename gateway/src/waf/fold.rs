//! Rules whose outcome is the same for every request, evaluated once when the rules load.
//!
//! CRS spends much of a small request on bookkeeping that depends only on the configuration:
//! `REQUEST-901` checks each setting with `SecRule &TX:x "@eq 0"` and fills in defaults, and
//! every rule file opens with `TX:DETECTION_PARANOIA_LEVEL "@lt N"` guards that skip to its end
//! (~80 of the ~270 rules a benign request meets at paranoia level 1). Loading walks each phase
//! knowing the TX a request starts with and, at each rule, which TX variables a rule that reads
//! the request may have changed on some path there; a rule that reads only variables known at
//! that point (and changes nothing but TX) is evaluated then, once, and a request applies the
//! recorded outcome instead. The fixed rules before the first that reads the request are folded
//! into the TX a request starts with.
//!
//! The outcome holds while every rule runs as loaded: an exclusion or `ctl` that removes a
//! folded rule, or a TX variable from a rule, turns folding off for the rest of that request
//! (every rule is then evaluated, from the exact state folding left).

use std::collections::HashSet;

use super::{
    actions::{Action, Ctl, Macro, SetOp},
    engine::{Matched, Tuning},
    rule::{Disruptive, Item, Rule, RuleSet},
    tx::TxMap,
    variables::{Selector, Var},
};

/// MATCHED_VAR and MATCHED_VARS.
pub(super) type MatchedState = (Option<Matched>, Vec<Matched>);

/// What a rule did when loading evaluated it on a TX.
pub(super) struct Probe {
    pub matched: bool,
    /// It recorded a match (a logging rule matched): that is per request, not foldable.
    pub logged: bool,
    /// TX after it.
    pub tx: TxMap,
    /// MATCHED_VAR and MATCHED_VARS after it, when one of its links matched.
    pub matched_vars: Option<MatchedState>,
}

/// The recorded outcome of a rule whose outcome is fixed.
pub(super) struct Fixed {
    /// Whether the whole rule matched (its skip applies).
    pub matched: bool,
    /// Its TX changes: a new value, or `None` for a deletion.
    pub sets: Vec<(String, Option<Vec<u8>>)>,
    /// MATCHED_VAR and MATCHED_VARS after it, when one of its links matched.
    pub matched_vars: Option<MatchedState>,
}

/// Every fixed outcome of a rule set under one setup.
pub(super) struct Folds {
    /// By phase (1 and 2 are analysed), by item: the fixed outcome of the rule there.
    pub phases: [Vec<Option<Fixed>>; 3],
    /// Phase 1 starts at this item while folding holds: the rules before it are in `tx`.
    pub start: usize,
    /// The TX a request starts with while folding holds.
    pub tx: TxMap,
    /// MATCHED_VAR and MATCHED_VARS after the rules before `start`.
    pub matched_vars: MatchedState,
    /// The folded rules' ids, sorted, and tags, lowercase: removing one of them turns folding
    /// off for the request.
    ids: Vec<u32>,
    tags: HashSet<String>,
}

impl Folds {
    /// Nothing folded: phase 1 starts at its first rule with `setup`.
    pub(super) fn none(setup: TxMap) -> Self {
        Self {
            phases: Default::default(),
            start: 0,
            tx: setup,
            matched_vars: (None, Vec::new()),
            ids: Vec::new(),
            tags: HashSet::new(),
        }
    }

    /// Walks phases 1 and 2 from `setup`, evaluating each rule whose outcome is fixed with
    /// `probe` (which runs the rule on a request with nothing in it and the given TX).
    pub(super) fn analyse(
        rules: &RuleSet,
        setup: TxMap,
        mut probe: impl FnMut(&Rule, &TxMap) -> Probe,
    ) -> Self {
        let mut folds = Self::none(setup.clone());
        let mut known = Some(Known::from(setup));
        for phase in [1, 2] {
            let p = &rules.phases[phase];
            let n = p.items.len();
            let mut fixed: Vec<Option<Fixed>> = (0..n).map(|_| None).collect();
            let start = known.take();
            // A skip backwards would reach rules already walked: leave such a phase as it is.
            let backwards = p
                .items
                .iter()
                .enumerate()
                .any(|(i, it)| matches!(it, Item::Rule(r) if r.skip_to.is_some_and(|t| t < i)));
            if backwards || start.is_none() {
                folds.phases[phase] = fixed;
                continue;
            }
            // `at[i]`: what is known when item `i` is reached (`None`: it is not reached).
            let mut at: Vec<Option<Known>> = vec![None; n + 1];
            at[0] = start;
            // In phase 1, the one path every request takes while all rules on it are fixed.
            let mut straight = (phase == 1).then_some(0);
            let mut straight_matched: MatchedState = (None, Vec::new());
            for i in 0..n {
                let Some(s) = at[i].take() else { continue };
                let on_straight = straight == Some(i);
                let Item::Rule(rule) = &p.items[i] else {
                    merge_into(&mut at, i + 1, s);
                    if on_straight {
                        straight = Some(i + 1);
                    }
                    continue;
                };
                // It runs on the known variables only, so that a value it sets over an unknown
                // one is recorded as a change; one it adds to or deletes (or a capture) must be
                // known when its actions run.
                let outcome = tx_access(rule)
                    .filter(|(reads, _)| reads.iter().all(|k| s.knows(k)))
                    .map(|(_, writes)| {
                        let before = s.known_tx();
                        (probe(rule, &before), writes, before)
                    })
                    .filter(|(pr, writes, _)| !acted(rule, pr) || writes.iter().all(|k| s.knows(k)))
                    .map(|(pr, _, before)| (pr, before))
                    .filter(|(pr, _)| !pr.logged)
                    .filter(|(pr, _)| !pr.matched || !stops(rule));
                if let Some((pr, before)) = outcome {
                    let next = if pr.matched {
                        p.after_match(i, rule)
                    } else {
                        i + 1
                    };
                    if on_straight {
                        straight = Some(next);
                        if let Some(m) = &pr.matched_vars {
                            straight_matched = m.clone();
                        }
                    }
                    let sets = changes(&before, &pr.tx);
                    let mut after = s;
                    after.tx = pr.tx;
                    merge_into(&mut at, next, after);
                    folds.ids.push(rule.id);
                    folds
                        .tags
                        .extend(rule.tags.iter().map(|t| t.to_ascii_lowercase()));
                    fixed[i] = Some(Fixed {
                        matched: pr.matched,
                        sets,
                        matched_vars: pr.matched_vars,
                    });
                    continue;
                }
                if on_straight {
                    folds.start = i;
                    folds.tx = s.tx.clone();
                    folds.matched_vars = std::mem::take(&mut straight_matched);
                    straight = None;
                }
                let mut after = s;
                after.forget_writes(rule);
                if rule.skip_to.is_some() || rule.skip > 0 {
                    merge_into(&mut at, p.after_match(i, rule), after.clone());
                }
                merge_into(&mut at, i + 1, after);
            }
            if let Some(end) = straight {
                // Every rule of phase 1 on the path is fixed.
                folds.start = end;
                if let Some(s) = at.get(end).and_then(Option::as_ref) {
                    folds.tx = s.tx.clone();
                }
                folds.matched_vars = straight_matched;
            }
            known = at[n].take();
            folds.phases[phase] = fixed;
        }
        folds.ids.sort_unstable();
        folds.ids.dedup();
        folds
    }

    /// Whether folding holds for a request with these exclusions: none removes a folded rule
    /// or a TX variable from a rule.
    pub(super) fn hold_with(&self, excl: &Tuning) -> bool {
        excl.ids.iter().all(|&(a, b)| !self.covers(a, b))
            && excl.tags.iter().all(|t| !self.has_tag(t))
            && excl.targets.iter().all(|(_, e)| !e.can_cover(Var::Tx))
    }

    /// Whether folding still holds after `ctl` ran.
    pub(super) fn survive(&self, ctl: &Ctl) -> bool {
        match ctl {
            Ctl::RuleRemoveById(r) => r.iter().all(|&(a, b)| !self.covers(a, b)),
            Ctl::RuleRemoveByTag(t) => !self.has_tag(t),
            Ctl::RuleRemoveTargetById(_, ex) | Ctl::RuleRemoveTargetByTag(_, ex) => {
                ex.iter().all(|e| !e.can_cover(Var::Tx))
            }
            _ => true,
        }
    }

    /// Whether a folded rule has tag `t` (compared as rules' tags are, without a lowercase copy
    /// per request: a handful of distinct tags).
    fn has_tag(&self, t: &str) -> bool {
        self.tags.iter().any(|f| f.eq_ignore_ascii_case(t))
    }

    /// Whether a folded rule's id is in `a..=b`.
    fn covers(&self, a: u32, b: u32) -> bool {
        let i = self.ids.partition_point(|&id| id < a);
        self.ids.get(i).is_some_and(|&id| id <= b)
    }
}

/// What loading knows of TX at one point of a phase, on every path there.
#[derive(Clone)]
struct Known {
    /// Variables whose value is known, with it (a name in none of the fields is known to be
    /// unset).
    tx: TxMap,
    /// Variables a rule that reads the request may have changed.
    unknown: HashSet<String>,
    /// Name prefixes of such variables (a `setvar` whose name has a macro:
    /// `tx.header_name_920450_%{tx.0}`); "" makes every variable unknown.
    prefixes: Vec<String>,
}

impl From<TxMap> for Known {
    fn from(tx: TxMap) -> Self {
        Self {
            tx,
            unknown: HashSet::new(),
            prefixes: Vec::new(),
        }
    }
}

impl Known {
    fn knows(&self, name: &str) -> bool {
        !self.unknown.contains(name) && !self.prefixes.iter().any(|p| name.starts_with(p.as_str()))
    }

    /// Joins what another path knows at the same point: a variable the two disagree on is
    /// unknown.
    fn merge(&mut self, other: Known) {
        let keys: Vec<String> = self.tx.keys().chain(other.tx.keys()).cloned().collect();
        for k in keys {
            if self.tx.get(&k) != other.tx.get(&k) {
                self.tx.remove(&k);
                self.unknown.insert(k);
            }
        }
        self.unknown.extend(other.unknown);
        for p in other.prefixes {
            if !self.prefixes.contains(&p) {
                self.prefixes.push(p);
            }
        }
    }

    /// After a rule whose outcome depends on the request: whatever it may set is unknown.
    fn forget_writes(&mut self, rule: &Rule) {
        for link in &rule.links {
            if link.capture {
                for d in 0..10 {
                    self.forget(d.to_string());
                }
            }
            for a in &link.actions {
                let Action::SetVar {
                    collection, name, ..
                } = a
                else {
                    continue;
                };
                if collection != "tx" {
                    continue;
                }
                match name.literal() {
                    Some(l) => self.forget(l.to_ascii_lowercase()),
                    None => self
                        .prefixes
                        .push(name.literal_prefix().to_ascii_lowercase()),
                }
            }
        }
    }

    /// TX without the variables that are not known.
    fn known_tx(&self) -> TxMap {
        let mut tx = self.tx.clone();
        tx.retain(|k, _| self.knows(k));
        tx
    }

    fn forget(&mut self, name: String) {
        self.tx.remove(&name);
        self.unknown.insert(name);
    }
}

fn merge_into(at: &mut [Option<Known>], i: usize, s: Known) {
    let Some(slot) = at.get_mut(i) else { return };
    match slot {
        Some(k) => k.merge(s),
        None => *slot = Some(s),
    }
}

/// Whether some of the rule's actions ran in `pr`: a link matched, or it is a `SecAction`.
fn acted(rule: &Rule, pr: &Probe) -> bool {
    pr.matched || pr.matched_vars.is_some() || rule.links.iter().any(|l| l.op.is_none())
}

/// Whether the rule ends the phase when it matches (blocking depends on the mode and `ctl`).
fn stops(rule: &Rule) -> bool {
    matches!(
        rule.disruptive,
        Disruptive::Deny | Disruptive::Drop | Disruptive::Allow
    )
}

/// The TX variables `rule` reads, and those its actions change from what they were (`=+`,
/// `=-`, deletions, captures), when it reads nothing else and changes nothing but TX (`None`
/// otherwise).
fn tx_access(rule: &Rule) -> Option<(Vec<String>, Vec<String>)> {
    let (mut reads, mut writes) = (Vec::new(), Vec::new());
    // Macro references: TX, and the rule's own constants.
    let refs = |m: &Macro, reads: &mut Vec<String>| {
        for r in m.refs() {
            match r.strip_prefix("tx.") {
                Some(k) => reads.push(k.to_owned()),
                None if r.starts_with("rule.") => {}
                None => return None,
            }
        }
        Some(())
    };
    for link in &rule.links {
        if link.capture {
            writes.extend((0..10).map(|d| d.to_string()));
        }
        for t in &link.targets {
            match (t.var, &t.selector) {
                (Var::Tx, Selector::Key(k)) => reads.push(k.clone()),
                _ => return None,
            }
        }
        if let Some(op) = &link.op {
            refs(&Macro::parse(op.arg()), &mut reads)?;
        }
        for a in &link.actions {
            match a {
                Action::SetVar {
                    collection,
                    name,
                    op,
                } if collection == "tx" => {
                    let name = name.literal()?.to_ascii_lowercase();
                    match op {
                        SetOp::Set(m) => refs(m, &mut reads)?,
                        SetOp::Add(m) | SetOp::Sub(m) => {
                            refs(m, &mut reads)?;
                            writes.push(name);
                        }
                        SetOp::Delete => writes.push(name),
                    }
                }
                _ => return None,
            }
        }
    }
    Some((reads, writes))
}

/// What turned `before` into `after`.
fn changes(before: &TxMap, after: &TxMap) -> Vec<(String, Option<Vec<u8>>)> {
    let mut out: Vec<(String, Option<Vec<u8>>)> = after
        .iter()
        .filter(|(k, v)| before.get(*k) != Some(*v))
        .map(|(k, v)| (k.clone(), Some(v.clone())))
        .collect();
    out.extend(
        before
            .keys()
            .filter(|k| !after.contains_key(*k))
            .map(|k| (k.clone(), None)),
    );
    out
}
