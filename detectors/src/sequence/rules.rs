//! Rules over the event stream: the format users write (in `toolgate.toml`, in rule
//! files, or imported from Sigma) and the matcher that runs them.
//!
//! Four kinds, each over the events of one group (by default one agent's session):
//!
//! - `sequence`: the steps happen in order, the last no later than `within` after the
//!   first (a step exactly at the limit still counts); with `not_followed_by`, the
//!   finding waits until `not_followed_by.within` has passed without such an event.
//!   One step and no `within` is a single-event rule.
//! - `unordered`: every step happens, in any order, inside one `within` span (Sigma's
//!   `temporal` correlation).
//! - `count`: at least `threshold` events matching the step inside `within` (Sigma's
//!   `event_count`).
//! - `distinct`: at least `threshold` distinct values of `field` among events matching
//!   the step inside `within` (Sigma's `value_count`).
//!
//! State per rule and group is small and fixed: for a sequence, the best partial match
//! per step (the one that started latest, so it has the most time left); for a count,
//! the last `threshold` times; for distinct, at most `threshold` values. Groups idle
//! longer than the rule's span are dropped on the next sweep.

use std::collections::{BTreeMap, HashMap, VecDeque};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use toolgate_protocol::config::Config;
use toolgate_protocol::{DetectorKind, Duration, Event, FindingAction, Severity};

use super::condition::{Condition, Field, FieldValue};
use crate::FindingDraft;

/// One rule as written.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    /// Rule id, unique: the finding's `rule_id`.
    pub id: String,
    /// Finding title (the id when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// What the rule catches and why it matters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Severity of its findings.
    #[serde(default = "default_severity")]
    pub severity: Severity,
    /// `alert`, or `block` to ask the sink to refuse the call that completed the match.
    #[serde(default = "default_action")]
    pub action: FindingAction,
    /// Framework tags copied to findings (`owasp-asi:ASI02`, `attack.exfiltration`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// `sequence`, `unordered`, `count` or `distinct`.
    #[serde(default)]
    pub kind: RuleKind,
    /// Fields whose values must be equal across the matched events (the join key).
    /// A step may name its own fields for the same key (`steps[].by`).
    #[serde(default = "default_by")]
    pub by: Vec<String>,
    /// Longest span from the first matched event to the last (inclusive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub within: Option<Duration>,
    /// The steps, each a condition on one event.
    pub steps: Vec<StepSpec>,
    /// For `sequence`: the finding is raised only if no such event follows in time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_followed_by: Option<AbsenceSpec>,
    /// For `count` and `distinct`: how many make a finding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<u64>,
    /// For `distinct`: the field whose distinct values are counted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// Where the rule came from (a file, a Sigma rule id); shown in findings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

/// One step.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct StepSpec {
    /// Name shown in findings (`step N` when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The condition (see the `condition` module).
    #[serde(rename = "where")]
    pub condition: Map<String, Value>,
    /// This step's fields for the rule's join key, when they differ from `by`
    /// (e.g. `["session_id", "arguments.file_id"]` to join on a file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<Vec<String>>,
}

/// `not_followed_by`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AbsenceSpec {
    /// The event that, if it comes, cancels the finding.
    #[serde(rename = "where")]
    pub condition: Map<String, Value>,
    /// How long after the match's last event to wait (an event exactly at the limit
    /// still cancels).
    pub within: Duration,
    /// Its fields for the join key, when they differ from `by`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<Vec<String>>,
}

/// What a rule counts.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum RuleKind {
    /// Steps in order.
    #[default]
    Sequence,
    /// Every step, any order.
    Unordered,
    /// Events matching the step.
    Count,
    /// Distinct values of `field`.
    Distinct,
}

fn default_severity() -> Severity {
    Severity::Medium
}
fn default_action() -> FindingAction {
    FindingAction::Alert
}
fn default_by() -> Vec<String> {
    vec!["agent_id".into(), "session_id".into()]
}

/// Most `count` threshold (its state keeps that many times per group).
pub const MAX_THRESHOLD: u64 = 100_000;

/// A rule ready to run.
#[derive(Debug)]
pub struct Rule {
    spec: RuleSpec,
    within: Option<i64>,
    steps: Vec<(Condition, Vec<Field>)>,
    absence: Option<(Condition, Vec<Field>, i64)>,
    field: Option<Field>,
    /// How long a group's state can matter after its last event.
    pub span: i64,
}

/// The join key's fields; none makes one fleet-wide group (a Sigma correlation
/// without `group-by`).
fn fields(paths: &[String], at: &str) -> Result<Vec<Field>, String> {
    paths
        .iter()
        .map(|p| Field::parse(p).map_err(|e| format!("`{at}`: {e}")))
        .collect()
}

impl Rule {
    /// Checks and compiles a rule; errors name the key.
    pub fn compile(spec: RuleSpec) -> Result<Rule, String> {
        let id = spec.id.clone();
        let err = |m: String| format!("rule {id:?}: {m}");
        if spec.id.trim().is_empty() {
            return Err("a rule has an empty `id`".into());
        }
        if spec.steps.is_empty() {
            return Err(err("`steps` is empty".into()));
        }
        let by = fields(&spec.by, "by").map_err(&err)?;
        let mut steps = Vec::new();
        for (i, step) in spec.steps.iter().enumerate() {
            let cond = Condition::compile(&step.condition)
                .map_err(|e| err(format!("`steps[{i}].where`: {e}")))?;
            let step_by = match &step.by {
                Some(b) => fields(b, &format!("steps[{i}].by")).map_err(&err)?,
                None => by.clone(),
            };
            if step_by.len() != by.len() {
                return Err(err(format!(
                    "`steps[{i}].by` has {} fields but `by` has {}: they form one key",
                    step_by.len(),
                    by.len()
                )));
            }
            steps.push((cond, step_by));
        }
        let within = spec.within.map(Duration::as_nanos);
        let needs_within = spec.kind != RuleKind::Sequence || spec.steps.len() > 1;
        if needs_within && within.is_none() {
            return Err(err(format!(
                "`within` is required for a {} rule",
                if spec.kind == RuleKind::Sequence {
                    "multi-step"
                } else {
                    kind_name(spec.kind)
                }
            )));
        }
        let absence = match &spec.not_followed_by {
            Some(a) if spec.kind == RuleKind::Sequence => {
                let cond = Condition::compile(&a.condition)
                    .map_err(|e| err(format!("`not_followed_by.where`: {e}")))?;
                let a_by = match &a.by {
                    Some(b) => fields(b, "not_followed_by.by").map_err(&err)?,
                    None => by.clone(),
                };
                if a_by.len() != by.len() {
                    return Err(err(
                        "`not_followed_by.by` must have as many fields as `by`".into()
                    ));
                }
                Some((cond, a_by, a.within.as_nanos()))
            }
            Some(_) => {
                return Err(err(
                    "`not_followed_by` only applies to `kind = \"sequence\"`".into(),
                ));
            }
            None => None,
        };
        let field = match (spec.kind, &spec.field) {
            (RuleKind::Distinct, Some(f)) => {
                Some(Field::parse(f).map_err(|e| err(format!("`field`: {e}")))?)
            }
            (RuleKind::Distinct, None) => {
                return Err(err("`field` is required for a distinct rule".into()));
            }
            (_, Some(_)) => {
                return Err(err("`field` only applies to `kind = \"distinct\"`".into()));
            }
            (_, None) => None,
        };
        match (spec.kind, spec.threshold) {
            (RuleKind::Count | RuleKind::Distinct, Some(t)) if (1..=MAX_THRESHOLD).contains(&t) => {
            }
            (RuleKind::Count | RuleKind::Distinct, Some(_)) => {
                return Err(err(format!(
                    "`threshold` must be between 1 and {MAX_THRESHOLD}"
                )));
            }
            (RuleKind::Count | RuleKind::Distinct, None) => {
                return Err(err(format!(
                    "`threshold` is required for a {} rule",
                    kind_name(spec.kind)
                )));
            }
            (_, Some(_)) => {
                return Err(err(
                    "`threshold` only applies to count and distinct rules".into()
                ));
            }
            (_, None) => {}
        }
        if matches!(spec.kind, RuleKind::Count | RuleKind::Distinct) && spec.steps.len() != 1 {
            return Err(err(format!(
                "a {} rule has exactly one step",
                kind_name(spec.kind)
            )));
        }
        let span = within.unwrap_or(0) + absence.as_ref().map_or(0, |a| a.2);
        Ok(Rule {
            within,
            steps,
            absence,
            field,
            span,
            spec,
        })
    }

    /// The rule as written.
    pub fn spec(&self) -> &RuleSpec {
        &self.spec
    }

    fn detector_kind(&self) -> DetectorKind {
        let single =
            self.spec.kind == RuleKind::Sequence && self.steps.len() == 1 && self.absence.is_none();
        if single || matches!(self.spec.kind, RuleKind::Count | RuleKind::Distinct) {
            DetectorKind::Rule
        } else {
            DetectorKind::Sequence
        }
    }
}

fn kind_name(k: RuleKind) -> &'static str {
    match k {
        RuleKind::Sequence => "sequence",
        RuleKind::Unordered => "unordered",
        RuleKind::Count => "count",
        RuleKind::Distinct => "distinct",
    }
}

/// One matched event: its id and time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hit {
    id: String,
    t: i64,
}

/// A partial match of a sequence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Partial {
    start: i64,
    hits: Vec<Hit>,
}

/// A completed match waiting for `not_followed_by` to time out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Pending {
    deadline: i64,
    hits: Vec<Hit>,
    /// Agent, session, server, tool and call of the last event.
    about: [Option<String>; 5],
}

/// State of one rule for one group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "k", rename_all = "snake_case")]
enum GroupState {
    Sequence {
        partial: Vec<Option<Partial>>,
        pending: Vec<Pending>,
    },
    Unordered {
        last: Vec<Option<Hit>>,
    },
    Count {
        hits: VecDeque<Hit>,
    },
    Distinct {
        values: BTreeMap<String, Hit>,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Group {
    touched: i64,
    state: GroupState,
}

/// Every rule and its groups.
#[derive(Debug)]
pub struct RuleSet {
    rules: Vec<Rule>,
    groups: Vec<HashMap<Box<str>, Group>>,
    max_groups: usize,
    /// Groups dropped by `max_groups`, since start.
    pub evicted: u64,
    /// Pending matches most per group.
    max_pending: usize,
}

impl RuleSet {
    /// Compiles `specs`; ids must be unique.
    pub fn new(specs: Vec<RuleSpec>, max_groups: usize) -> Result<RuleSet, String> {
        let mut rules = Vec::new();
        for (i, spec) in specs.into_iter().enumerate() {
            if rules.iter().any(|r: &Rule| r.spec.id == spec.id) {
                return Err(format!("rules[{i}]: id {:?} is used twice", spec.id));
            }
            rules.push(Rule::compile(spec).map_err(|e| format!("rules[{i}]: {e}"))?);
        }
        let groups = rules.iter().map(|_| HashMap::new()).collect();
        Ok(RuleSet {
            rules,
            groups,
            max_groups,
            evicted: 0,
            max_pending: 64,
        })
    }

    /// The compiled rules.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// Groups held over all rules.
    pub fn groups(&self) -> usize {
        self.groups.iter().map(HashMap::len).sum()
    }

    /// Matches pending on `not_followed_by`.
    pub fn pending(&self) -> usize {
        self.groups
            .iter()
            .flat_map(|g| g.values())
            .map(|g| match &g.state {
                GroupState::Sequence { pending, .. } => pending.len(),
                _ => 0,
            })
            .sum()
    }

    /// Runs every rule on `event`. A group whose newest event is already older than its
    /// rule's span at `watermark` (a late replay) is dropped at once, so late input
    /// cannot pile up groups that no sweep would reach.
    pub fn observe(
        &mut self,
        event: &Event,
        config: &Config,
        watermark: i64,
        out: &mut Vec<FindingDraft>,
    ) {
        let t = event.time.unix_nanos();
        for r in 0..self.rules.len() {
            let rule = &self.rules[r];
            let mut matched: Vec<(usize, String)> = Vec::new();
            for (i, (cond, by)) in rule.steps.iter().enumerate() {
                if cond.matches(event, config)
                    && let Some(key) = group_key(by, event, config)
                {
                    matched.push((i, key));
                }
            }
            let absent = rule.absence.as_ref().and_then(|(cond, by, _)| {
                cond.matches(event, config)
                    .then(|| group_key(by, event, config))
                    .flatten()
            });
            if matched.is_empty() && absent.is_none() {
                continue;
            }
            if let Some(key) = absent
                && let Some(g) = self.groups[r].get_mut(key.as_str())
                && let GroupState::Sequence { pending, .. } = &mut g.state
            {
                // The event that completed a match is matched below, after this check, so it
                // cannot cancel its own match; a later event at the same instant can.
                pending
                    .retain(|p| !(t >= p.hits.last().map_or(i64::MIN, |h| h.t) && t <= p.deadline));
            }
            let hit = Hit {
                id: event.event_id.clone(),
                t,
            };
            // Highest step first, so one event advances a match by one step only.
            matched.sort_by_key(|m| std::cmp::Reverse(m.0));
            for (step, key) in matched {
                if !self.groups[r].contains_key(key.as_str()) {
                    self.make_room();
                }
                let rule = &self.rules[r];
                let group = self.groups[r]
                    .entry(key.as_str().into())
                    .or_insert_with(|| Group {
                        touched: t,
                        state: new_state(rule),
                    });
                group.touched = group.touched.max(t);
                if let Some(done) = advance(
                    rule,
                    &mut group.state,
                    step,
                    &hit,
                    event,
                    config,
                    self.max_pending,
                ) {
                    out.push(draft(rule, &key, &done, event));
                }
                let stale = group.touched.saturating_add(rule.span) < watermark
                    && !matches!(&group.state, GroupState::Sequence { pending, .. } if !pending.is_empty());
                if stale {
                    self.groups[r].remove(key.as_str());
                }
            }
        }
    }

    /// Raises the `not_followed_by` matches whose wait has passed `watermark`, and
    /// drops groups idle for longer than their rule's span.
    pub fn advance(&mut self, watermark: i64, sweep: bool, out: &mut Vec<FindingDraft>) {
        for (r, groups) in self.groups.iter_mut().enumerate() {
            let rule = &self.rules[r];
            if rule.absence.is_some() {
                let mut keys: Vec<&Box<str>> = groups
                    .iter()
                    .filter(|(_, g)| matches!(&g.state, GroupState::Sequence { pending, .. } if pending.iter().any(|p| p.deadline < watermark)))
                    .map(|(k, _)| k)
                    .collect();
                keys.sort();
                let keys: Vec<Box<str>> = keys.into_iter().cloned().collect();
                for key in keys {
                    if let Some(g) = groups.get_mut(&key)
                        && let GroupState::Sequence { pending, .. } = &mut g.state
                    {
                        let (due, keep): (Vec<Pending>, Vec<Pending>) =
                            pending.drain(..).partition(|p| p.deadline < watermark);
                        *pending = keep;
                        for p in due {
                            out.push(absence_draft(rule, &key, &p));
                        }
                    }
                }
            }
            if sweep {
                let horizon = watermark.saturating_sub(rule.span);
                groups.retain(|_, g| {
                    g.touched >= horizon
                        || matches!(&g.state, GroupState::Sequence { pending, .. } if !pending.is_empty())
                });
            }
        }
    }

    fn make_room(&mut self) {
        let total = self.groups();
        if total < self.max_groups {
            return;
        }
        let mut idle: Vec<(i64, usize, Box<str>)> = self
            .groups
            .iter()
            .enumerate()
            .flat_map(|(r, g)| g.iter().map(move |(k, v)| (v.touched, r, k.clone())))
            .collect();
        idle.sort();
        let drop = (total + 1 - self.max_groups)
            .max(self.max_groups / 10)
            .min(total);
        for (_, r, k) in idle.into_iter().take(drop) {
            self.groups[r].remove(&k);
            self.evicted += 1;
        }
    }

    /// The groups, for snapshots: rule id → group key → state.
    pub fn export(&self) -> BTreeMap<String, BTreeMap<String, Value>> {
        self.rules
            .iter()
            .zip(&self.groups)
            .map(|(rule, groups)| {
                let g = groups
                    .iter()
                    .map(|(k, v)| {
                        (
                            k.to_string(),
                            serde_json::to_value(v).unwrap_or(Value::Null),
                        )
                    })
                    .collect();
                (rule.spec.id.clone(), g)
            })
            .collect()
    }

    /// Reads groups back; groups of rules that no longer exist are dropped.
    pub fn import(
        &mut self,
        state: BTreeMap<String, BTreeMap<String, Value>>,
    ) -> Result<(), String> {
        for g in &mut self.groups {
            g.clear();
        }
        for (id, groups) in state {
            let Some(r) = self.rules.iter().position(|r| r.spec.id == id) else {
                continue;
            };
            for (key, v) in groups {
                let group: Group =
                    serde_json::from_value(v).map_err(|e| format!("rule {id:?}: {e}"))?;
                if !compatible(&self.rules[r], &group.state) {
                    // The rule changed shape since the snapshot: its partial matches
                    // cannot be carried over.
                    continue;
                }
                self.groups[r].insert(key.into_boxed_str(), group);
            }
        }
        Ok(())
    }
}

fn compatible(rule: &Rule, state: &GroupState) -> bool {
    match (rule.spec.kind, state) {
        (RuleKind::Sequence, GroupState::Sequence { partial, .. }) => {
            partial.len() == rule.steps.len()
        }
        (RuleKind::Unordered, GroupState::Unordered { last }) => last.len() == rule.steps.len(),
        (RuleKind::Count, GroupState::Count { .. })
        | (RuleKind::Distinct, GroupState::Distinct { .. }) => true,
        _ => false,
    }
}

fn new_state(rule: &Rule) -> GroupState {
    let n = rule.steps.len();
    match rule.spec.kind {
        RuleKind::Sequence => GroupState::Sequence {
            partial: vec![None; n],
            pending: Vec::new(),
        },
        RuleKind::Unordered => GroupState::Unordered {
            last: vec![None; n],
        },
        RuleKind::Count => GroupState::Count {
            hits: VecDeque::new(),
        },
        RuleKind::Distinct => GroupState::Distinct {
            values: BTreeMap::new(),
        },
    }
}

fn group_key(by: &[Field], event: &Event, config: &Config) -> Option<String> {
    let mut key = String::new();
    let mut values = Vec::new();
    for (i, f) in by.iter().enumerate() {
        values.clear();
        f.values(event, config, &mut values);
        let v = values.first()?;
        if i > 0 {
            key.push('\u{1f}');
        }
        key.push_str(&v.text());
    }
    Some(key)
}

fn within(rule: &Rule, start: i64, t: i64) -> bool {
    rule.within.is_none_or(|w| t.saturating_sub(start) <= w)
}

/// Applies one matched step; returns the hits of a completed match to report now.
fn advance(
    rule: &Rule,
    state: &mut GroupState,
    step: usize,
    hit: &Hit,
    event: &Event,
    config: &Config,
    max_pending: usize,
) -> Option<Vec<Hit>> {
    let t = hit.t;
    match state {
        GroupState::Sequence { partial, pending } => {
            let last = partial.len() - 1;
            let candidate = if step == 0 {
                Some(Partial {
                    start: t,
                    hits: vec![hit.clone()],
                })
            } else {
                partial[step - 1]
                    .as_ref()
                    .filter(|p| p.hits.last().is_some_and(|h| h.t <= t) && within(rule, p.start, t))
                    .map(|p| {
                        let mut hits = p.hits.clone();
                        hits.push(hit.clone());
                        Partial {
                            start: p.start,
                            hits,
                        }
                    })
            }?;
            if step < last {
                if partial[step]
                    .as_ref()
                    .is_none_or(|p| p.start <= candidate.start)
                {
                    partial[step] = Some(candidate);
                }
                return None;
            }
            match &rule.absence {
                None => Some(candidate.hits),
                Some((_, _, wait)) => {
                    if pending.len() >= max_pending {
                        pending.remove(0);
                    }
                    pending.push(Pending {
                        deadline: t.saturating_add(*wait),
                        hits: candidate.hits,
                        about: [
                            Some(event.agent_id.clone()),
                            Some(event.session_id.clone()),
                            event.server().map(str::to_string),
                            event.tool().map(str::to_string),
                            event.call_id().map(str::to_string),
                        ],
                    });
                    None
                }
            }
        }
        GroupState::Unordered { last } => {
            if last[step].as_ref().is_none_or(|h| h.t <= t) {
                last[step] = Some(hit.clone());
            }
            let start = last
                .iter()
                .map(|h| h.as_ref().map(|h| h.t))
                .collect::<Option<Vec<i64>>>()?;
            let lo = start.iter().copied().min()?;
            let hi = start.iter().copied().max()?;
            (hi == t && within(rule, lo, hi)).then(|| last.iter().flatten().cloned().collect())
        }
        GroupState::Count { hits } => {
            let need = rule.spec.threshold.unwrap_or(1) as usize;
            let at = hits.iter().rposition(|h| h.t <= t).map_or(0, |p| p + 1);
            hits.insert(at, hit.clone());
            while hits.len() > need {
                hits.pop_front();
            }
            let first = hits.front()?;
            (hits.len() == need && within(rule, first.t, hits.back()?.t)).then(|| {
                // Evidence: the first and the latest event; the count says the rest.
                vec![first.clone(), hit.clone()]
            })
        }
        GroupState::Distinct { values } => {
            let field = rule.field.as_ref()?;
            let mut vals = Vec::new();
            field.values(event, config, &mut vals);
            let horizon = t.saturating_sub(rule.within.unwrap_or(0));
            values.retain(|_, h| h.t >= horizon);
            let need = rule.spec.threshold.unwrap_or(1) as usize;
            for v in vals.iter().map(FieldValue::text) {
                values.insert(v.into_owned(), hit.clone());
            }
            while values.len() > need {
                let oldest = values
                    .iter()
                    .min_by_key(|(_, h)| h.t)
                    .map(|(k, _)| k.clone())?;
                values.remove(&oldest);
            }
            (values.len() >= need && !vals.is_empty()).then(|| {
                // Evidence: one event per distinct value, oldest first.
                let mut hits: Vec<Hit> = values.values().cloned().collect();
                hits.sort_by(|a, b| (a.t, &a.id).cmp(&(b.t, &b.id)));
                hits.dedup();
                hits
            })
        }
    }
}

fn severity_score(s: Severity) -> u8 {
    match s {
        Severity::Info => 10,
        Severity::Low => 30,
        Severity::Medium => 55,
        Severity::High => 75,
        Severity::Critical => 95,
    }
}

fn step_names(rule: &Rule) -> Vec<String> {
    rule.spec
        .steps
        .iter()
        .enumerate()
        .map(|(i, s)| s.name.clone().unwrap_or_else(|| format!("step {}", i + 1)))
        .collect()
}

fn base(rule: &Rule, key: &str, hits: &[Hit], mut d: FindingDraft) -> FindingDraft {
    let spec = &rule.spec;
    let names = step_names(rule);
    let span = match (hits.first(), hits.last()) {
        (Some(a), Some(b)) => b.t - a.t,
        _ => 0,
    };
    let steps: Vec<Value> = hits
        .iter()
        .enumerate()
        .map(|(i, h)| {
            json!({
                "step": names.get(i).or(names.last()).cloned().unwrap_or_default(),
                "event_id": h.id,
                "time": toolgate_protocol::Timestamp::from_unix_nanos(h.t).to_string(),
            })
        })
        .collect();
    let mut evidence = json!({
        "rule": spec.id, "kind": kind_name(spec.kind), "group": key.replace('\u{1f}', " / "),
        "matched": steps, "span": Duration::from_nanos(span).to_string(),
    });
    if let Some(w) = spec.within {
        evidence["within"] = json!(w.to_string());
    }
    if let Some(t) = spec.threshold {
        evidence["threshold"] = json!(t);
    }
    if let Some(s) = &spec.source {
        evidence["source"] = json!(s);
    }
    d.detector = rule.detector_kind();
    d.rule_id = spec.id.clone();
    d.group_key = format!("{}\u{1f}{key}", spec.id);
    d.event_ids = hits.iter().map(|h| h.id.clone()).collect();
    d.event_ids.dedup();
    d.title = spec.title.clone().unwrap_or_else(|| spec.id.clone());
    d.description = spec.description.clone().unwrap_or_default();
    d = d
        .rate(spec.severity, severity_score(spec.severity), 0.8)
        .evidence(evidence)
        .tags(spec.tags.iter().cloned());
    if spec.action == FindingAction::Block {
        d = d.block();
    }
    d
}

fn draft(rule: &Rule, key: &str, hits: &[Hit], event: &Event) -> FindingDraft {
    let mut d = base(
        rule,
        key,
        hits,
        FindingDraft::about(DetectorKind::Rule, "", event),
    );
    let names = step_names(rule);
    let what = match rule.spec.kind {
        RuleKind::Sequence if hits.len() > 1 => format!("{} in order", names.join(" → ")),
        RuleKind::Sequence => "a matching event".into(),
        RuleKind::Unordered => format!("all of {}", names.join(", ")),
        RuleKind::Count => format!("{} matching events", rule.spec.threshold.unwrap_or(0)),
        RuleKind::Distinct => format!(
            "{} distinct values of {}",
            rule.spec.threshold.unwrap_or(0),
            rule.spec.field.as_deref().unwrap_or("?")
        ),
    };
    let span = match rule.spec.within {
        Some(w) => format!(" within {w}"),
        None => String::new(),
    };
    let detail = format!("Matched {what}{span}.");
    d.description = if d.description.is_empty() {
        detail
    } else {
        format!("{} {detail}", d.description)
    };
    d
}

fn absence_draft(rule: &Rule, key: &str, p: &Pending) -> FindingDraft {
    let [agent, session, server, tool, call] = p.about.clone();
    let d = FindingDraft {
        detector: DetectorKind::Sequence,
        rule_id: String::new(),
        group_key: String::new(),
        time: toolgate_protocol::Timestamp::from_unix_nanos(p.deadline),
        title: String::new(),
        description: String::new(),
        severity: Severity::Medium,
        risk_score: 50,
        confidence: 0.5,
        agent_id: agent.unwrap_or_default(),
        session_id: session.unwrap_or_default(),
        server,
        tool,
        call_id: call,
        event_ids: Vec::new(),
        evidence: Value::Null,
        tags: Vec::new(),
        action: FindingAction::Alert,
    };
    let mut d = base(rule, key, &p.hits, d);
    let wait = rule
        .spec
        .not_followed_by
        .as_ref()
        .map(|a| a.within.to_string())
        .unwrap_or_default();
    let detail = format!(
        "Matched {} and nothing expected followed within {wait}.",
        step_names(rule).join(" → ")
    );
    d.description = if d.description.is_empty() {
        detail
    } else {
        format!("{} {detail}", d.description)
    };
    d.evidence["not_followed_within"] = json!(wait);
    d
}
