//! The compiled rule model and how directives become it: rules with their chain links, markers,
//! defaults, removals and target updates, all resolved once at load.

use std::{collections::HashMap, path::Path, sync::Arc};

use super::{
    WafError,
    actions::{Action, Macro, parse_action},
    operator::{ByteSet, Factors, LiteralIndex, Operator},
    seclang::{self, Directive, RawAction},
    transform::Transform,
    variables::{Exclusion, Parsed, Target, parse_target},
    variables::{Selector, Var},
};

/// What a matching rule does to the transaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Disruptive {
    #[default]
    Pass,
    /// The phase default (pass unless `SecDefaultAction` says otherwise).
    Block,
    Deny,
    Drop,
    /// Stop inspecting the request: it is let through.
    Allow,
}

/// One `SecRule` (or the condition-less `SecAction`) of a chain.
pub struct Link {
    pub targets: Vec<Target>,
    pub exclusions: Vec<Exclusion>,
    /// `None`: `SecAction`, always matches.
    pub op: Option<Operator>,
    /// Interned transformation chain (0 = none): the per-request cache key.
    pub chain_id: u32,
    pub transforms: Arc<[Transform]>,
    /// [`Transform::chain_triggers`] of `transforms`.
    pub chain_triggers: Option<ByteSet>,
    /// [`Transform::triggers`] of each of `transforms`: while the value is still unchanged, a
    /// step none of whose trigger bytes it holds is not run.
    pub step_triggers: Box<[Option<ByteSet>]>,
    pub capture: bool,
    pub multi_match: bool,
    /// With `multi_match`: one step per transformation, each naming the interned chain of the
    /// transformations up to it, so every intermediate value is cached per request like any
    /// chain's result (and shared with links whose chain is that prefix).
    pub multi_steps: Vec<MultiStep>,
    /// Per target, an id interned from the target and the exclusions that can apply to it,
    /// when every target reads request data that stays the same for a phase: links reading the
    /// same target share the values collected (and transformed) once per phase. With it the id
    /// of the (target, chain) pair: links reading the same target through the same chain share
    /// the transformed values' indexes ([`RuleSet::groups`] such pairs).
    pub target_ids: Option<Vec<(u32, u32)>>,
    /// The interned id of the whole `target_ids` list ([`RuleSet::target_sets`] such lists),
    /// when no target is counted (`&ARGS`) and the link is not `multiMatch`: the union of the
    /// bytes of all its values (after its chain) is computed once per phase for every link
    /// reading the same targets the same way, and a link its operator's byte filter rules out
    /// on that union is skipped in one check instead of one per target (most CRS rules read
    /// the same six or eight targets).
    pub target_set: Option<u32>,
    /// This link's bit in a value's literal-index hits ([`RuleSet::literals`]), when its
    /// operator has literal factors and its values are cached per phase (`target_ids`).
    pub literal_filter: Option<LiteralFilter>,
    /// `TX:NAME` when the link reads that one variable (the many paranoia-level guards):
    /// its MATCHED_VAR_NAME, built once rather than per request.
    pub tx_name: Option<Arc<str>>,
    /// Non-disruptive actions, run when the whole chain matched.
    pub actions: Vec<Action>,
}

/// A link's literal factors in the shared index.
#[derive(Clone, Copy, Debug)]
pub struct LiteralFilter {
    /// The link's bit in a value's hits.
    pub bit: u32,
    /// The factors hold only for values holding none of these bytes (usually none: for every
    /// value); a value holding one is not filtered.
    pub unless: ByteSet,
}

impl LiteralFilter {
    /// Whether the factors hold for a value holding `bytes`.
    pub fn applies(&self, bytes: &ByteSet) -> bool {
        !self.unless.intersects(bytes)
    }
}

/// One transformation of a `multiMatch` link.
pub struct MultiStep {
    /// The interned chain of this transformation and those before it.
    pub chain_id: u32,
    pub transform: Transform,
    /// [`Transform::triggers`]: a value holding none of them passes unchanged.
    pub triggers: Option<ByteSet>,
}

/// A rule with everything its head declared.
pub struct Rule {
    pub id: u32,
    pub phase: u8,
    pub file: Arc<Path>,
    pub line: usize,
    pub msg: Option<Macro>,
    pub logdata: Option<Macro>,
    pub tags: Vec<String>,
    pub severity: Option<u8>,
    pub disruptive: Disruptive,
    pub status: Option<u16>,
    pub log: bool,
    pub skip: u32,
    pub skip_after: Option<String>,
    /// Where `skip_after`'s marker sits in the rule's phase, resolved when loading ends
    /// (looking the marker name up per match was ~1 % of a small request: CRS's paranoia-level
    /// guards skip on nearly every request).
    pub skip_to: Option<usize>,
    pub links: Vec<Link>,
}

pub enum Item {
    Rule(Box<Rule>),
    Marker(String),
}

/// Rules of one phase in file order, with where each marker sits.
#[derive(Default)]
pub struct Phase {
    pub items: Vec<Item>,
    pub markers: HashMap<String, usize>,
}

impl Phase {
    /// Where evaluation goes on after the rule at item `i` matched: past its `skipAfter`
    /// marker, past its `skip` count of rules, or to the next item.
    pub fn after_match(&self, i: usize, rule: &Rule) -> usize {
        if let Some(at) = rule.skip_to {
            return at + 1;
        }
        let mut next = i + 1;
        let mut left = rule.skip;
        while left > 0 && next < self.items.len() {
            if matches!(self.items[next], Item::Rule(_)) {
                left -= 1;
            }
            next += 1;
        }
        next
    }
}

/// Everything loaded: phases 1..=5 (3..=5 kept, not run).
#[derive(Default)]
pub struct RuleSet {
    pub phases: [Phase; 6],
    /// Interned transformation chains, index = `chain_id`.
    pub chains: Vec<Arc<[Transform]>>,
    /// How many distinct [`Link::target_ids`] there are.
    pub target_ids: u32,
    /// How many distinct (target id, chain id) pairs links read.
    pub groups: u32,
    /// How many distinct [`Link::target_set`] lists there are.
    pub target_sets: u32,
    /// The literal factors of every link with a [`Link::literal_filter`], in one automaton.
    pub literals: Option<LiteralIndex>,
    pub rule_count: usize,
}

#[derive(Clone, Default)]
struct Defaults {
    transforms: Vec<Transform>,
    disruptive: Option<Disruptive>,
    log: Option<bool>,
}

/// Builds a [`RuleSet`] from directives in order.
pub struct Builder {
    set: RuleSet,
    defaults: [Defaults; 6],
    open_chain: Option<Box<Rule>>,
    chain_ids: HashMap<Vec<Transform>, u32>,
    ids: HashMap<u32, (Arc<Path>, usize)>,
}

impl Default for Builder {
    fn default() -> Self {
        let mut set = RuleSet::default();
        set.chains.push(Arc::from(Vec::new()));
        Self {
            set,
            defaults: Default::default(),
            open_chain: None,
            chain_ids: HashMap::new(),
            ids: HashMap::new(),
        }
    }
}

fn parse_phase(v: &str) -> Option<u8> {
    match v.to_ascii_lowercase().as_str() {
        "request" => Some(2),
        "response" => Some(4),
        "logging" => Some(5),
        n => n.parse().ok().filter(|p| (1..=5).contains(p)),
    }
}

/// `1-100` or `12` or a space-separated list of those.
pub fn parse_id_ranges(s: &str) -> Option<Vec<(u32, u32)>> {
    s.split([' ', ','])
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('-') {
            Some((a, b)) => Some((a.trim().parse().ok()?, b.trim().parse().ok()?)),
            None => {
                let n = p.trim().parse().ok()?;
                Some((n, n))
            }
        })
        .collect()
}

impl Builder {
    pub fn finish(mut self) -> Result<RuleSet, WafError> {
        if let Some(open) = self.open_chain.take() {
            return Err(WafError::Rule {
                file: open.file.to_path_buf(),
                line: open.line,
                reason: format!("rule {} ends with `chain` but no rule follows", open.id),
            });
        }
        // skipAfter targets must exist in the rule's phase.
        for phase in &mut self.set.phases {
            for item in &mut phase.items {
                if let Item::Rule(r) = item
                    && let Some(m) = &r.skip_after
                {
                    let Some(&at) = phase.markers.get(m) else {
                        return Err(WafError::Rule {
                            file: r.file.to_path_buf(),
                            line: r.line,
                            reason: format!("skipAfter:{m}: no such SecMarker"),
                        });
                    };
                    r.skip_to = Some(at);
                }
            }
        }
        // After every SecRuleUpdateTarget*: the lists are final.
        let mut ids: HashMap<String, u32> = HashMap::new();
        let mut groups: HashMap<(u32, u32), u32> = HashMap::new();
        let mut sets: HashMap<Vec<(u32, u32)>, u32> = HashMap::new();
        let mut factors: Vec<Factors> = Vec::new();
        for phase in &mut self.set.phases {
            for item in &mut phase.items {
                let Item::Rule(r) = item else { continue };
                for link in &mut r.links {
                    if link.op.is_none() || !link.targets.iter().all(Target::is_request_data) {
                        continue;
                    }
                    let mut list = Vec::with_capacity(link.targets.len());
                    for t in &link.targets {
                        let relevant: Vec<_> = link
                            .exclusions
                            .iter()
                            .filter(|e| e.can_cover(t.var))
                            .collect();
                        // Selectors hold compiled regexes: their Debug text (the pattern) names
                        // them.
                        let key = format!("{t:?}{relevant:?}");
                        let next = ids.len() as u32;
                        let tid = *ids.entry(key).or_insert(next);
                        let next = groups.len() as u32;
                        let gid = *groups.entry((tid, link.chain_id)).or_insert(next);
                        list.push((tid, gid));
                    }
                    if !link.multi_match && !link.targets.iter().any(|t| t.count) {
                        let next = sets.len() as u32;
                        link.target_set = Some(*sets.entry(list.clone()).or_insert(next));
                    }
                    link.target_ids = Some(list);
                    if let Some((f, unless)) = link.op.as_ref().and_then(Operator::literal_factors)
                    {
                        link.literal_filter = Some(LiteralFilter {
                            bit: factors.len() as u32,
                            unless,
                        });
                        factors.push(f.clone());
                    }
                }
            }
        }
        self.set.target_ids = ids.len() as u32;
        self.set.groups = groups.len() as u32;
        self.set.target_sets = sets.len() as u32;
        self.set.literals = LiteralIndex::new(&factors.iter().collect::<Vec<_>>());
        Ok(self.set)
    }

    fn intern(&mut self, chain: Vec<Transform>) -> (u32, Arc<[Transform]>) {
        if chain.is_empty() {
            return (0, Arc::clone(&self.set.chains[0]));
        }
        if let Some(&id) = self.chain_ids.get(&chain) {
            return (id, Arc::clone(&self.set.chains[id as usize]));
        }
        let id = self.set.chains.len() as u32;
        let arc: Arc<[Transform]> = Arc::from(chain.clone());
        self.set.chains.push(Arc::clone(&arc));
        self.chain_ids.insert(chain, id);
        (id, arc)
    }

    pub fn add(&mut self, d: &Directive) -> Result<(), WafError> {
        let name = d.name.to_ascii_lowercase();
        let arg = |i: usize| -> Result<&str, WafError> {
            d.args
                .get(i)
                .map(String::as_str)
                .ok_or_else(|| d.error(format!("{} needs more arguments", d.name)))
        };
        if self.open_chain.is_some() && name != "secrule" {
            return Err(d.error("a chained rule must be followed by a SecRule"));
        }
        match name.as_str() {
            "secrule" => {
                let actions = d.args.get(2).map(String::as_str).unwrap_or("");
                self.rule(d, Some((arg(0)?, arg(1)?)), actions)
            }
            "secaction" => self.rule(d, None, arg(0)?),
            "secmarker" => {
                let m = arg(0)?.to_owned();
                for phase in &mut self.set.phases {
                    phase.markers.insert(m.clone(), phase.items.len());
                    phase.items.push(Item::Marker(m.clone()));
                }
                Ok(())
            }
            "secdefaultaction" => {
                let raw = seclang::split_actions(arg(0)?).map_err(|e| d.error(e))?;
                let mut def = Defaults::default();
                let mut phase = 2;
                for a in &raw {
                    let v = a.value.as_deref().unwrap_or("");
                    match a.name.to_ascii_lowercase().as_str() {
                        "phase" => {
                            phase =
                                parse_phase(v).ok_or_else(|| d.error(format!("bad phase `{v}`")))?
                        }
                        "t" => match Transform::from_name(v) {
                            Some(Transform::None) => def.transforms.clear(),
                            Some(t) => def.transforms.push(t),
                            None => {
                                return Err(d.error(format!("unsupported transformation t:{v}")));
                            }
                        },
                        "pass" => def.disruptive = Some(Disruptive::Pass),
                        "deny" => def.disruptive = Some(Disruptive::Deny),
                        "drop" => def.disruptive = Some(Disruptive::Drop),
                        "log" => def.log = Some(true),
                        "nolog" => def.log = Some(false),
                        _ => {}
                    }
                }
                self.defaults[phase as usize] = def;
                Ok(())
            }
            "secruleremovebyid" => {
                let mut ranges = Vec::new();
                for a in &d.args {
                    ranges.extend(
                        parse_id_ranges(a).ok_or_else(|| d.error(format!("bad id range `{a}`")))?,
                    );
                }
                self.retain(|r| !ranges.iter().any(|&(a, b)| (a..=b).contains(&r.id)));
                Ok(())
            }
            "secruleremovebytag" => {
                let re = regex::Regex::new(arg(0)?).map_err(|e| d.error(e.to_string()))?;
                self.retain(|r| !r.tags.iter().any(|t| re.is_match(t)));
                Ok(())
            }
            "secruleupdatetargetbyid" | "secruleupdatetargetbytag" => {
                let by_id = name.ends_with("byid");
                let sel = arg(0)?.to_owned();
                let ranges = if by_id {
                    Some(parse_id_ranges(&sel).ok_or_else(|| d.error(format!("bad id `{sel}`")))?)
                } else {
                    None
                };
                let raw = seclang::split_targets(arg(1)?).map_err(|e| d.error(e))?;
                let mut parsed = Vec::new();
                for r in &raw {
                    parsed.push(parse_target(r).map_err(|e| d.error(e))?);
                }
                for phase in &mut self.set.phases {
                    for item in &mut phase.items {
                        let Item::Rule(rule) = item else { continue };
                        let hit = match &ranges {
                            Some(rs) => rs.iter().any(|&(a, b)| (a..=b).contains(&rule.id)),
                            None => rule.tags.iter().any(|t| t.eq_ignore_ascii_case(&sel)),
                        };
                        if !hit {
                            continue;
                        }
                        let head = &mut rule.links[0];
                        for p in &parsed {
                            match p {
                                Parsed::Target(t) => head.targets.push(t.clone()),
                                Parsed::Exclusion(e) => head.exclusions.push(e.clone()),
                            }
                        }
                    }
                }
                Ok(())
            }
            "seccomponentsignature" | "secruleengine" => Ok(()),
            n if seclang::ignored(n) => Ok(()),
            _ => Err(d.error(format!("unsupported directive `{}`", d.name))),
        }
    }

    fn retain(&mut self, keep: impl Fn(&Rule) -> bool) {
        for phase in &mut self.set.phases {
            let before = phase.items.len();
            phase.items.retain(|i| match i {
                Item::Rule(r) => keep(r),
                Item::Marker(_) => true,
            });
            if phase.items.len() != before {
                phase.markers = phase
                    .items
                    .iter()
                    .enumerate()
                    .filter_map(|(i, it)| match it {
                        Item::Marker(m) => Some((m.clone(), i)),
                        Item::Rule(_) => None,
                    })
                    .collect();
            }
        }
        self.set.rule_count = self
            .set
            .phases
            .iter()
            .flat_map(|p| &p.items)
            .filter(|i| matches!(i, Item::Rule(_)))
            .count();
    }

    fn rule(
        &mut self,
        d: &Directive,
        cond: Option<(&str, &str)>,
        actions: &str,
    ) -> Result<(), WafError> {
        let raw = seclang::split_actions(actions).map_err(|e| d.error(e))?;
        let chained = self.open_chain.take();
        let is_link = chained.is_some();
        let rule_dir = d.file.parent().unwrap_or(Path::new("")).to_owned();

        let (mut targets, mut exclusions) = (Vec::new(), Vec::new());
        let mut op = None;
        if let Some((vars, operator)) = cond {
            for t in seclang::split_targets(vars).map_err(|e| d.error(e))? {
                match parse_target(&t).map_err(|e| d.error(e))? {
                    Parsed::Target(t) => targets.push(t),
                    Parsed::Exclusion(e) => exclusions.push(e),
                }
            }
            let (name, negated, arg) = split_operator(operator);
            op = Some(
                Operator::parse(name, negated, arg, &rule_dir)
                    .map_err(|e| d.error(format!("operator @{name}: {e}")))?,
            );
        }

        let mut head = chained.unwrap_or_else(|| {
            Box::new(Rule {
                id: 0,
                phase: 2,
                file: Arc::clone(&d.file),
                line: d.line,
                msg: None,
                logdata: None,
                tags: Vec::new(),
                severity: None,
                disruptive: Disruptive::Pass,
                status: None,
                log: true,
                skip: 0,
                skip_after: None,
                skip_to: None,
                links: Vec::new(),
            })
        });
        let mut phase = if is_link { head.phase } else { 0 };
        let mut transforms: Option<Vec<Transform>> = None;
        let mut link_actions = Vec::new();
        let (mut chain, mut capture, mut multi_match) = (false, false, false);
        let mut disruptive = None;
        let mut log = None;
        for RawAction { name, value } in &raw {
            let v = value.as_deref().unwrap_or("");
            let lname = name.to_ascii_lowercase();
            let head_only = |what: &str| -> Result<(), WafError> {
                if is_link {
                    Err(d.error(format!(
                        "`{what}` is only allowed in the first rule of a chain"
                    )))
                } else {
                    Ok(())
                }
            };
            match lname.as_str() {
                "id" => {
                    head_only("id")?;
                    head.id = v.parse().map_err(|_| d.error(format!("bad id `{v}`")))?;
                }
                "phase" => {
                    head_only("phase")?;
                    phase = parse_phase(v).ok_or_else(|| d.error(format!("bad phase `{v}`")))?;
                }
                "msg" => head.msg = Some(Macro::parse(v)),
                "logdata" => head.logdata = Some(Macro::parse(v)),
                "tag" => head.tags.push(v.to_owned()),
                "severity" => {
                    head.severity = Some(match v.to_ascii_uppercase().as_str() {
                        "EMERGENCY" => 0,
                        "ALERT" => 1,
                        "CRITICAL" => 2,
                        "ERROR" => 3,
                        "WARNING" => 4,
                        "NOTICE" => 5,
                        "INFO" => 6,
                        "DEBUG" => 7,
                        n => n
                            .parse()
                            .map_err(|_| d.error(format!("bad severity `{v}`")))?,
                    })
                }
                "t" => {
                    let t = Transform::from_name(v)
                        .ok_or_else(|| d.error(format!("unsupported transformation t:{v}")))?;
                    let list = transforms.get_or_insert_with(Vec::new);
                    if t == Transform::None {
                        list.clear();
                        list.push(Transform::None);
                    } else {
                        list.push(t);
                    }
                }
                "chain" => chain = true,
                "capture" => capture = true,
                "multimatch" => multi_match = true,
                "pass" => disruptive = Some(Disruptive::Pass),
                "block" => disruptive = Some(Disruptive::Block),
                "deny" => disruptive = Some(Disruptive::Deny),
                "drop" => disruptive = Some(Disruptive::Drop),
                "allow" => disruptive = Some(Disruptive::Allow),
                "status" => {
                    head.status = Some(
                        v.parse()
                            .map_err(|_| d.error(format!("bad status `{v}`")))?,
                    )
                }
                "log" => log = Some(true),
                "nolog" => log = Some(false),
                "skip" => {
                    head_only("skip")?;
                    head.skip = v.parse().map_err(|_| d.error(format!("bad skip `{v}`")))?;
                }
                "skipafter" => {
                    head_only("skipAfter")?;
                    head.skip_after = Some(v.to_owned());
                }
                // Metadata and audit-log switches: no effect on what is detected.
                "ver"
                | "rev"
                | "accuracy"
                | "maturity"
                | "auditlog"
                | "noauditlog"
                | "sanitisematched"
                | "sanitisearg"
                | "sanitiserequestheader"
                | "sanitiseresponseheader"
                | "sanitisematchedbytes"
                | "expirevar"
                | "initcol"
                | "setuid"
                | "setsid"
                | "setenv"
                | "deprecatevar"
                | "redirect"
                | "proxy"
                | "append"
                | "prepend"
                | "xmlns" => {}
                _ => link_actions
                    .push(parse_action(&lname, v).map_err(|e| d.error(format!("{name}: {e}")))?),
            }
        }
        if !is_link {
            if head.id == 0 {
                return Err(d.error("rule has no id"));
            }
            if let Some((f, l)) = self.ids.get(&head.id) {
                return Err(d.error(format!(
                    "duplicate rule id {} (first at {}:{l})",
                    head.id,
                    f.display()
                )));
            }
            self.ids.insert(head.id, (Arc::clone(&d.file), d.line));
            head.phase = if phase == 0 { 2 } else { phase };
        }
        let defaults = self.defaults[head.phase as usize].clone();
        if !is_link {
            let dis = disruptive.unwrap_or(defaults.disruptive.unwrap_or(Disruptive::Pass));
            head.disruptive = if dis == Disruptive::Block {
                match defaults.disruptive {
                    Some(Disruptive::Deny) => Disruptive::Deny,
                    Some(Disruptive::Drop) => Disruptive::Drop,
                    _ => Disruptive::Block,
                }
            } else {
                dis
            };
            head.log = log.or(defaults.log).unwrap_or(true);
        } else if let Some(l) = log {
            head.log = l;
        }
        let chain_list: Vec<Transform> = match transforms {
            Some(list) if list.first() == Some(&Transform::None) => {
                list.into_iter().filter(|t| *t != Transform::None).collect()
            }
            Some(list) => defaults.transforms.iter().copied().chain(list).collect(),
            None => defaults.transforms.clone(),
        };
        let multi_steps = if multi_match {
            (1..=chain_list.len())
                .map(|k| MultiStep {
                    chain_id: self.intern(chain_list[..k].to_vec()).0,
                    transform: chain_list[k - 1],
                    triggers: chain_list[k - 1].triggers(),
                })
                .collect()
        } else {
            Vec::new()
        };
        let (chain_id, transforms) = self.intern(chain_list);
        let tx_name = match targets.as_slice() {
            [
                Target {
                    var: Var::Tx,
                    selector: Selector::Key(k),
                    count: false,
                },
            ] => Some(Arc::from(format!("TX:{k}"))),
            _ => None,
        };
        head.links.push(Link {
            targets,
            exclusions,
            op,
            chain_id,
            chain_triggers: Transform::chain_triggers(&transforms),
            step_triggers: transforms.iter().map(|t| t.triggers()).collect(),
            transforms,
            capture,
            multi_match,
            multi_steps,
            target_ids: None,
            target_set: None,
            literal_filter: None,
            tx_name,
            actions: link_actions,
        });
        if chain {
            self.open_chain = Some(head);
            return Ok(());
        }
        let p = head.phase as usize;
        self.set.phases[p].items.push(Item::Rule(head));
        self.set.rule_count += 1;
        Ok(())
    }
}

/// `@rx a b` -> ("rx", false, "a b"); `!@eq 0`; a bare pattern is `@rx`.
fn split_operator(s: &str) -> (&str, bool, &str) {
    let s = s.trim_start();
    let (negated, s) = match s.strip_prefix('!') {
        Some(rest) => (true, rest.trim_start()),
        None => (false, s),
    };
    match s.strip_prefix('@') {
        Some(rest) => {
            let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
            let arg = rest[end..]
                .strip_prefix([' ', '\t'])
                .unwrap_or(&rest[end..]);
            (&rest[..end], negated, arg)
        }
        None => ("rx", negated, s),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operators_split() {
        assert_eq!(split_operator("@rx a b"), ("rx", false, "a b"));
        assert_eq!(split_operator("!@eq 0"), ("eq", true, "0"));
        assert_eq!(split_operator("^foo"), ("rx", false, "^foo"));
        assert_eq!(
            split_operator("@unconditionalMatch"),
            ("unconditionalMatch", false, "")
        );
    }

    #[test]
    fn id_ranges() {
        assert_eq!(parse_id_ranges("1-3 7"), Some(vec![(1, 3), (7, 7)]));
        assert_eq!(parse_id_ranges("x"), None);
    }
}
