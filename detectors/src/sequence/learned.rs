//! Behaviour learned per agent role: an n-gram model of the calls a role makes, the
//! surprisal of each new call and of a whole session's path, and the tools and servers
//! a role has used ("new terms").
//!
//! The model is learned online (after `warmup_calls` a role is judged) and can start
//! from a model trained offline over history (`toolgate train`), which runs this same
//! learner over recorded events. Probabilities use Witten-Bell interpolation: the
//! weight of a context's own counts grows with how often it was seen relative to how
//! many different calls followed it, and the rest falls back to the role's call
//! frequencies (add-one, so an unseen call has a finite surprisal).
//!
//! Thresholds are percentiles of the role's own scores (a fixed-bin histogram of
//! surprisal in tenths of a bit, deterministic and mergeable), never constants: a role
//! whose work is varied tolerates more surprise than one that always does the same.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use toolgate_protocol::config::Config;
use toolgate_protocol::event::EventBody;
use toolgate_protocol::{DetectorKind, Duration, Event, FindingAction, Severity, Timestamp};

use crate::FindingDraft;
use crate::late::LateSessions;
use crate::metrics::StateGauge;

/// `[detectors.sequence.learned]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LearnedSettings {
    /// Learn and judge at all.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Calls of context plus one: 2 judges each call by the one before it.
    #[serde(default = "default_order")]
    pub order: usize,
    /// What a call is to the model: `tool` (server and tool), `server`, or `domain`
    /// (the server's trust domain: coarse, but it carries over to roles and servers
    /// the model has not seen).
    #[serde(default)]
    pub token: TokenKind,
    /// Roles pool into one fleet model (`*`) that judges roles not yet warm.
    #[serde(default = "yes")]
    pub fleet_fallback: bool,
    /// Calls a role's model must have learned before it judges.
    #[serde(default = "default_warmup_calls")]
    pub warmup_calls: u64,
    /// Scored sessions a role must have before session paths are judged.
    #[serde(default = "default_warmup_sessions")]
    pub warmup_sessions: u64,
    /// Percentile (0–100) of the role's own call surprisal above which a call is
    /// flagged.
    #[serde(default = "default_call_percentile")]
    pub call_percentile: f64,
    /// Percentile (0–100) of the role's own session scores (mean surprisal per call)
    /// above which a session is flagged.
    #[serde(default = "default_session_percentile")]
    pub session_percentile: f64,
    /// A session is scored once idle this long (event time).
    #[serde(default = "default_session_idle")]
    pub session_idle: Duration,
    /// Fewest calls for a session's path to be scored.
    #[serde(default = "default_min_session_calls")]
    pub min_session_calls: u64,
    /// Keep learning from live traffic after warm-up.
    #[serde(default = "yes")]
    pub learn_online: bool,
    /// Flag tools and servers a warm role has not used within `new_terms_window`.
    #[serde(default = "yes")]
    pub new_terms: bool,
    /// How far back "used before" looks.
    #[serde(default = "default_new_terms_window")]
    pub new_terms_window: Duration,
    /// Most roles modelled.
    #[serde(default = "default_max_roles")]
    pub max_roles: usize,
    /// Most distinct tokens and contexts per role.
    #[serde(default = "default_max_tokens")]
    pub max_tokens_per_role: usize,
    /// Most live sessions followed; past it the longest idle is scored early.
    #[serde(default = "default_max_sessions")]
    pub max_sessions: usize,
    /// A model trained offline (`toolgate train`), read from `model_file` when the
    /// config is loaded; not written by hand.
    #[serde(default)]
    pub model: Option<LearnedModel>,
    /// The trained model's file (JSON from `toolgate train`); relative to the config.
    #[serde(default)]
    pub model_file: Option<String>,
}

impl Default for LearnedSettings {
    fn default() -> Self {
        match serde_json::from_value(json!({})) {
            Ok(s) => s,
            Err(_) => unreachable!("every field has a default"),
        }
    }
}

/// What a call is to the model.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum TokenKind {
    /// `server/tool`.
    #[default]
    Tool,
    /// `server`.
    Server,
    /// The server's trust domain.
    Domain,
}

fn yes() -> bool {
    true
}
fn default_order() -> usize {
    2
}
fn default_warmup_calls() -> u64 {
    500
}
fn default_warmup_sessions() -> u64 {
    50
}
fn default_call_percentile() -> f64 {
    99.5
}
fn default_session_percentile() -> f64 {
    99.0
}
fn default_session_idle() -> Duration {
    Duration::from_secs(300)
}
fn default_min_session_calls() -> u64 {
    3
}
fn default_new_terms_window() -> Duration {
    Duration::from_secs(7 * 86_400)
}
fn default_max_roles() -> usize {
    1000
}
fn default_max_tokens() -> usize {
    5000
}
fn default_max_sessions() -> usize {
    100_000
}

/// Tenths of a bit per histogram bin, up to 64 bits.
const BINS: usize = 640;

/// A distribution of scores (bits) in fixed bins.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Histogram {
    n: u64,
    /// Sparse bins: bin index → count.
    bins: BTreeMap<u16, u64>,
}

impl Histogram {
    fn add(&mut self, bits: f64) {
        let bin = ((bits.max(0.0) * 10.0) as usize).min(BINS - 1) as u16;
        *self.bins.entry(bin).or_default() += 1;
        self.n += 1;
    }

    /// The upper edge (bits) of the bin holding percentile `p`.
    pub fn percentile(&self, p: f64) -> f64 {
        let rank = ((p / 100.0) * self.n as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (&bin, &count) in &self.bins {
            seen += count;
            if seen >= rank {
                return (f64::from(bin) + 1.0) / 10.0;
            }
        }
        BINS as f64 / 10.0
    }

    /// Scores recorded.
    pub fn len(&self) -> u64 {
        self.n
    }

    /// No scores yet.
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }
}

/// One role's model.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct RoleModel {
    /// Calls learned.
    pub calls: u64,
    /// Sessions scored.
    pub sessions: u64,
    /// Calls per token.
    pub tokens: BTreeMap<String, u64>,
    /// Context (previous tokens, `^` at a session's start) → next token → count.
    pub transitions: BTreeMap<String, BTreeMap<String, u64>>,
    /// Surprisal of this role's calls once it was half warm.
    pub call_scores: Histogram,
    /// Mean surprisal per call of this role's sessions.
    pub session_scores: Histogram,
    /// Tools and servers used, with when they were last seen (ns since the epoch).
    pub terms: BTreeMap<String, i64>,
}

impl RoleModel {
    /// Surprisal (bits) of `token` after `context`.
    pub fn surprisal(&self, context: &str, token: &str) -> f64 {
        let vocab = self.tokens.len() as f64;
        let unigram = (self.tokens.get(token).copied().unwrap_or(0) as f64 + 1.0)
            / (self.calls as f64 + vocab + 1.0);
        let p = match self.transitions.get(context) {
            Some(next) => {
                let total: u64 = next.values().sum();
                let distinct = next.len() as f64;
                let lambda = total as f64 / (total as f64 + distinct);
                let own = next.get(token).copied().unwrap_or(0) as f64 / total as f64;
                lambda * own + (1.0 - lambda) * unigram
            }
            None => unigram,
        };
        -p.log2()
    }

    fn learn(&mut self, context: &str, token: &str, max_tokens: usize) {
        self.calls += 1;
        if self.tokens.len() < max_tokens || self.tokens.contains_key(token) {
            *self.tokens.entry(token.to_string()).or_default() += 1;
        }
        if self.transitions.len() < max_tokens || self.transitions.contains_key(context) {
            let next = self.transitions.entry(context.to_string()).or_default();
            if next.len() < max_tokens || next.contains_key(token) {
                *next.entry(token.to_string()).or_default() += 1;
            }
        }
    }
}

/// The learned state that `toolgate train` writes and the detector starts from.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LearnedModel {
    /// Model order it was trained with.
    pub order: usize,
    /// Token kind it was trained with.
    pub token: TokenKind,
    /// Per role (`*` is the fleet).
    pub roles: BTreeMap<String, RoleModel>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct LiveSession {
    role: String,
    agent: String,
    session: String,
    last: i64,
    context: Vec<String>,
    calls: u64,
    bits: f64,
    /// The most surprising call: (bits, token, event id).
    worst: Option<(f64, String, String)>,
    event_ids: Vec<String>,
}

/// Fleet model name.
pub const FLEET: &str = "*";

/// The learner and judge.
#[derive(Debug)]
pub struct Learner {
    s: LearnedSettings,
    roles: BTreeMap<String, RoleModel>,
    sessions: HashMap<String, LiveSession>,
    /// Sessions whose events arrived already idle by the watermark (a late replay).
    late_sessions: LateSessions,
    /// Only learn (training): raise nothing.
    pub train_only: bool,
}

impl Learner {
    /// Checks settings and starts from the trained model, if any.
    pub fn new(mut s: LearnedSettings) -> Result<Learner, String> {
        if !(1..=4).contains(&s.order) {
            return Err("`learned.order` must be between 1 and 4".into());
        }
        for (k, p) in [
            ("call_percentile", s.call_percentile),
            ("session_percentile", s.session_percentile),
        ] {
            if !(p > 0.0 && p <= 100.0) {
                return Err(format!("`learned.{k}` must be in (0, 100]"));
            }
        }
        if s.max_roles == 0 || s.max_tokens_per_role == 0 || s.max_sessions == 0 {
            return Err(
                "`learned.max_roles`, `max_tokens_per_role` and `max_sessions` must be at least 1"
                    .into(),
            );
        }
        let mut roles = BTreeMap::new();
        if let Some(model) = s.model.take() {
            if model.order != s.order || model.token != s.token {
                return Err(format!(
                    "`learned.model` was trained with order {} and token {:?}, but the settings say order {} and token {:?}",
                    model.order, model.token, s.order, s.token
                ));
            }
            roles = model.roles;
        }
        Ok(Learner {
            s,
            roles,
            sessions: HashMap::new(),
            late_sessions: LateSessions::default(),
            train_only: false,
        })
    }

    /// The model as `toolgate train` writes it.
    pub fn model(&self) -> LearnedModel {
        LearnedModel {
            order: self.s.order,
            token: self.s.token,
            roles: self.roles.clone(),
        }
    }

    fn token(&self, event: &Event, config: &Config) -> Option<String> {
        let EventBody::ToolCall { server, tool, .. } = &event.body else {
            return None;
        };
        Some(match self.s.token {
            TokenKind::Tool => format!("{server}/{tool}"),
            TokenKind::Server => server.clone(),
            TokenKind::Domain => config
                .trust_domain_of(server, event.trust_domain.as_deref())
                .to_string(),
        })
    }

    fn warm<'a>(&'a self, role: &str) -> Option<(&'a str, &'a RoleModel)> {
        let own = self
            .roles
            .get_key_value(role)
            .filter(|(_, m)| m.calls >= self.s.warmup_calls);
        let fleet = || {
            self.s
                .fleet_fallback
                .then(|| self.roles.get_key_value(FLEET))
                .flatten()
                .filter(|(_, m)| m.calls >= self.s.warmup_calls)
        };
        own.or_else(fleet).map(|(k, m)| (k.as_str(), m))
    }

    /// Scores, then learns, one event. `watermark` is the detector's: a session whose
    /// newest event is already idle by it (a late replay) is scored at once, so late
    /// input cannot pile up sessions that no `advance` would reach.
    pub fn observe(
        &mut self,
        event: &Event,
        config: &Config,
        watermark: i64,
        out: &mut Vec<FindingDraft>,
    ) {
        if !self.s.enabled {
            return;
        }
        let Some(token) = self.token(event, config) else {
            return;
        };
        let t = event.time.unix_nanos();
        let role = event.agent_role.clone().unwrap_or_else(|| "(none)".into());
        let session_key = format!("{}\u{1f}{}", event.agent_id, event.session_id);
        if !self.sessions.contains_key(&session_key) && self.sessions.len() >= self.s.max_sessions {
            self.score_oldest_session(out);
        }
        let context = match self.sessions.get(&session_key) {
            Some(l) if !l.context.is_empty() => l.context.join("\u{1f}"),
            _ => "^".to_string(),
        };
        let judge = self.warm(&role).map(|(name, m)| {
            (
                name.to_string(),
                m.surprisal(&context, &token),
                m.call_scores.percentile(self.s.call_percentile),
                m.call_scores.len(),
            )
        });
        let live = self
            .sessions
            .entry(session_key.clone())
            .or_insert_with(|| LiveSession {
                role: role.clone(),
                agent: event.agent_id.clone(),
                session: event.session_id.clone(),
                last: t,
                context: Vec::new(),
                calls: 0,
                bits: 0.0,
                worst: None,
                event_ids: Vec::new(),
            });
        live.last = live.last.max(t);
        if let Some((model_name, bits, threshold, scored)) = &judge {
            live.calls += 1;
            live.bits += bits;
            if live.worst.as_ref().is_none_or(|w| *bits > w.0) {
                live.worst = Some((*bits, token.clone(), event.event_id.clone()));
            }
            if live.event_ids.len() < 16 {
                live.event_ids.push(event.event_id.clone());
            }
            if !self.train_only && *scored >= 100 && bits > threshold {
                out.push(
                    FindingDraft::about(DetectorKind::Sequence, "unusual_call", event)
                        .describe(
                            format!("Unusual call for role {role}: {token}"),
                            format!(
                                "{token} after {} has a surprisal of {bits:.1} bits under the {model_name} model, above its {} percentile of {threshold:.1} bits.",
                                context.replace('\u{1f}', " → ").replace('^', "the session's start"),
                                self.s.call_percentile
                            ),
                        )
                        .rate(Severity::Info, 20, 0.4)
                        .evidence(json!({
                            "role": role, "model": model_name, "token": token,
                            "context": context.split('\u{1f}').collect::<Vec<_>>(),
                            "surprisal_bits": round2(*bits), "threshold_bits": threshold,
                            "percentile": self.s.call_percentile,
                        }))
                        .tags(["owasp-asi:ASI10"]),
                );
            }
        }
        live.context.push(token.clone());
        if live.context.len() >= self.s.order {
            let drop = live.context.len() + 1 - self.s.order;
            live.context.drain(..drop);
        }
        if self.s.new_terms {
            self.new_terms(event, config, &role, t, out);
        }
        let learning = self.s.learn_online || self.train_only;
        if learning {
            let half_warm = |m: &RoleModel, s: &LearnedSettings| m.calls >= s.warmup_calls / 2;
            let names: Vec<String> = if self.s.fleet_fallback && role != FLEET {
                vec![role.clone(), FLEET.to_string()]
            } else {
                vec![role.clone()]
            };
            for name in names {
                if !self.roles.contains_key(&name) && self.roles.len() >= self.s.max_roles {
                    continue;
                }
                let s = &self.s;
                let m = self.roles.entry(name).or_default();
                if half_warm(m, s) {
                    let bits = m.surprisal(&context, &token);
                    m.call_scores.add(bits);
                }
                m.learn(&context, &token, s.max_tokens_per_role);
            }
        }
        let idle = watermark.saturating_sub(self.s.session_idle.as_nanos());
        let late = self
            .sessions
            .get(&session_key)
            .is_some_and(|l| l.last < idle);
        if late && self.late_sessions.note(session_key) {
            self.score_oldest_late(out);
        }
    }

    fn score_oldest_late(&mut self, out: &mut Vec<FindingDraft>) {
        let sessions = &self.sessions;
        let oldest = self
            .late_sessions
            .take_oldest_half(|k| sessions.get(k).map(|l| l.last));
        for k in oldest {
            if let Some(live) = self.sessions.remove(&k) {
                self.score_session(live, out);
            }
        }
    }

    fn new_terms(
        &mut self,
        event: &Event,
        config: &Config,
        role: &str,
        t: i64,
        out: &mut Vec<FindingDraft>,
    ) {
        let (Some(server), Some(tool)) = (event.server(), event.tool()) else {
            return;
        };
        let window = self.s.new_terms_window.as_nanos();
        let warm = self
            .roles
            .get(role)
            .is_some_and(|m| m.calls >= self.s.warmup_calls);
        let terms = [
            ("server", format!("server:{server}")),
            ("tool", format!("tool:{server}/{tool}")),
        ];
        let mut raised_server = false;
        for (what, term) in terms {
            let seen = self
                .roles
                .get(role)
                .and_then(|m| m.terms.get(&term))
                .is_some_and(|&last| t.saturating_sub(last) <= window);
            // A new server makes its tools new too: one finding says it.
            let shadowed = what == "tool" && raised_server;
            let raise = warm && !seen && !self.train_only && !shadowed;
            if raise {
                raised_server |= what == "server";
                let domain = config.trust_domain_of(server, event.trust_domain.as_deref());
                let rule = if what == "server" {
                    "new_server_for_role"
                } else {
                    "new_tool_for_role"
                };
                out.push(
                    FindingDraft::about(DetectorKind::Sequence, rule, event)
                        .group_by(format!("{role}\u{1f}{term}"))
                        .describe(
                            format!("Role {role} used {what} {} for the first time", &term[what.len() + 1..]),
                            format!(
                                "No agent of role {role} called {what} {} in the last {} (trust domain {domain}).",
                                &term[what.len() + 1..],
                                self.s.new_terms_window
                            ),
                        )
                        .rate(if what == "server" { Severity::Low } else { Severity::Info }, if what == "server" { 35 } else { 15 }, 0.6)
                        .evidence(json!({"role": role, "term": term, "window": self.s.new_terms_window.to_string(), "trust_domain": domain}))
                        .tags(["owasp-asi:ASI10"]),
                );
            }
            if let Some(m) = self.roles.get_mut(role)
                && (m.terms.len() < self.s.max_tokens_per_role || m.terms.contains_key(&term))
            {
                m.terms.insert(term, t);
            }
        }
    }

    fn score_oldest_session(&mut self, out: &mut Vec<FindingDraft>) {
        let oldest = self
            .sessions
            .iter()
            .min_by(|a, b| a.1.last.cmp(&b.1.last).then(a.0.cmp(b.0)))
            .map(|(k, _)| k.clone());
        if let Some(k) = oldest
            && let Some(live) = self.sessions.remove(&k)
        {
            self.score_session(live, out);
        }
    }

    fn score_session(&mut self, live: LiveSession, out: &mut Vec<FindingDraft>) {
        if live.calls < self.s.min_session_calls.max(1) {
            return;
        }
        let score = live.bits / live.calls as f64;
        let judged = self.warm(&live.role).map(|(name, m)| {
            (
                name.to_string(),
                m.session_scores.percentile(self.s.session_percentile),
                m.session_scores.len(),
            )
        });
        if let Some((model_name, threshold, scored)) = judged
            && !self.train_only
            && scored >= self.s.warmup_sessions
            && score > threshold
        {
            let (worst_bits, worst_token, worst_id) = live.worst.clone().unwrap_or_default();
            out.push(FindingDraft {
                detector: DetectorKind::Sequence,
                rule_id: "unusual_session_path".into(),
                group_key: format!("{}\u{1f}{}", live.agent, live.session),
                time: Timestamp::from_unix_nanos(live.last),
                title: format!("Unusual sequence of calls for role {}", live.role),
                description: format!(
                    "The session's {} calls average {score:.1} bits of surprisal under the {model_name} model, above the role's {} percentile of {threshold:.1} bits; the most surprising call was {worst_token} ({worst_bits:.1} bits).",
                    live.calls, self.s.session_percentile
                ),
                severity: Severity::Medium,
                risk_score: 45,
                confidence: 0.5,
                agent_id: live.agent.clone(),
                session_id: live.session.clone(),
                server: None,
                tool: None,
                call_id: None,
                event_ids: if worst_id.is_empty() { live.event_ids.clone() } else { vec![worst_id] },
                evidence: json!({
                    "role": live.role, "model": model_name, "calls": live.calls,
                    "mean_surprisal_bits": round2(score), "threshold_bits": threshold,
                    "percentile": self.s.session_percentile,
                    "most_surprising": {"token": worst_token, "bits": round2(worst_bits)},
                }),
                tags: vec!["owasp-asi:ASI10".into()],
                action: FindingAction::Alert,
            });
        }
        if self.s.learn_online || self.train_only {
            let names: Vec<String> = if self.s.fleet_fallback && live.role != FLEET {
                vec![live.role.clone(), FLEET.to_string()]
            } else {
                vec![live.role.clone()]
            };
            for name in names {
                if let Some(m) = self.roles.get_mut(&name) {
                    m.sessions += 1;
                    m.session_scores.add(score);
                }
            }
        }
    }

    /// Scores sessions idle past `watermark - session_idle`; forgets old terms.
    pub fn advance(&mut self, watermark: i64, out: &mut Vec<FindingDraft>) {
        let idle = watermark.saturating_sub(self.s.session_idle.as_nanos());
        self.late_sessions.clear();
        let mut done: Vec<(i64, String)> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.last < idle)
            .map(|(k, s)| (s.last, k.clone()))
            .collect();
        done.sort();
        for (_, k) in done {
            if let Some(live) = self.sessions.remove(&k) {
                self.score_session(live, out);
            }
        }
        let horizon = watermark.saturating_sub(self.s.new_terms_window.as_nanos());
        for m in self.roles.values_mut() {
            m.terms.retain(|_, &mut last| last >= horizon);
        }
    }

    /// Scores every live session now (end of a replay or of training). Terms are kept:
    /// the input ending is not time passing.
    pub fn finish(&mut self, out: &mut Vec<FindingDraft>) {
        let mut all: Vec<(i64, String)> = self
            .sessions
            .iter()
            .map(|(k, s)| (s.last, k.clone()))
            .collect();
        all.sort();
        for (_, k) in all {
            if let Some(live) = self.sessions.remove(&k) {
                self.score_session(live, out);
            }
        }
    }

    /// State for snapshots.
    pub fn export(&self) -> Value {
        let mut sessions: Vec<(&String, &LiveSession)> = self.sessions.iter().collect();
        sessions.sort_by(|a, b| a.0.cmp(b.0));
        json!({
            "roles": self.roles,
            "sessions": sessions.into_iter().map(|(k, v)| (k.clone(), v)).collect::<BTreeMap<_, _>>(),
        })
    }

    /// Reads [`Learner::export`] back.
    pub fn import(&mut self, v: Value) -> Result<(), String> {
        #[derive(Deserialize)]
        struct S {
            roles: BTreeMap<String, RoleModel>,
            sessions: BTreeMap<String, LiveSession>,
        }
        let s: S = serde_json::from_value(v).map_err(|e| format!("learned: {e}"))?;
        self.roles = s.roles;
        self.sessions = s.sessions.into_iter().collect();
        Ok(())
    }

    /// Gauges.
    pub fn gauges(&self, out: &mut Vec<(StateGauge, u64)>) {
        out.push((StateGauge::SequenceRoles, self.roles.len() as u64));
        out.push((StateGauge::SequenceLiveSessions, self.sessions.len() as u64));
        let entries: usize = self
            .roles
            .values()
            .map(|m| {
                m.tokens.len()
                    + m.terms.len()
                    + m.transitions.values().map(BTreeMap::len).sum::<usize>()
            })
            .sum();
        out.push((StateGauge::SequenceModelEntries, entries as u64));
    }
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_come_from_the_bins() {
        let mut h = Histogram::default();
        for i in 0..100 {
            h.add(f64::from(i) / 10.0);
        }
        assert!(
            (h.percentile(50.0) - 5.0).abs() < 0.11,
            "{}",
            h.percentile(50.0)
        );
        assert!((h.percentile(99.0) - 9.9).abs() < 0.11);
        assert_eq!(h.percentile(100.0), 10.0);
    }

    #[test]
    fn a_familiar_transition_is_less_surprising_than_a_new_one() {
        let mut m = RoleModel::default();
        for _ in 0..100 {
            m.learn("^", "mail/read", 100);
            m.learn("mail/read", "mail/reply", 100);
        }
        let familiar = m.surprisal("mail/read", "mail/reply");
        let odd = m.surprisal("mail/read", "bank/transfer");
        assert!(familiar < 0.1, "{familiar}");
        assert!(odd > 7.0, "{odd}");
        assert!(odd.is_finite());
    }
}
