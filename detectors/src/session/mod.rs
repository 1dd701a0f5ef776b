//! The `session` detector: whole sessions scored against clusters of normal sessions
//! learned offline (`toolgate train`, k-means with linfa in `toolgate-analytics`). A
//! session is scored every `rescore_every` calls while it runs and once it has been
//! idle for `session_idle`; one farther from its
//! nearest cluster's centre than that cluster's own members ever were (the
//! `percentile` of their distances, times `threshold_factor`) is an outlier, explained
//! by the cluster and the features that made the distance.
//!
//! Without a model the detector keeps no state and raises nothing.

pub mod features;

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use toolgate_protocol::config::Config;
use toolgate_protocol::{DetectorKind, Duration, Event, FindingAction, Severity, Timestamp};

use crate::factory::{BuildError, Configured};
use crate::glob::GlobSet;
use crate::late::LateSessions;
use crate::metrics::StateGauge;
use crate::{Detector, FindingDraft, StateError};
pub use features::{FeatureSpec, SessionAccumulator};

/// The detector's name under `[detectors]`.
pub const NAME: &str = "session";

/// `[detectors.session]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionSettings {
    /// The trained model's file (JSON from `toolgate train`), relative to the config.
    #[serde(default)]
    pub model_file: Option<String>,
    /// The model itself: read from `model_file` when the config is loaded
    /// ([`Configured::load_files`]); not written by hand.
    #[serde(default)]
    pub model: Option<SessionModel>,
    /// A session is scored once idle this long (event time).
    #[serde(default = "default_idle")]
    pub session_idle: Duration,
    /// Fewest calls for a session to be scored.
    #[serde(default = "default_min_calls")]
    pub min_calls: u64,
    /// Multiplies each cluster's distance threshold (above 1 flags fewer sessions).
    #[serde(default = "one")]
    pub threshold_factor: f64,
    /// Domains whose content outsiders write.
    #[serde(default = "default_untrusted")]
    pub untrusted_domains: Vec<String>,
    /// Domains whose tools send data out.
    #[serde(default = "default_egress")]
    pub egress_domains: Vec<String>,
    /// Argument names (case-insensitive globs) that name a call's target.
    #[serde(default = "default_targets")]
    pub target_arguments: Vec<String>,
    /// Most live sessions followed; past it the longest idle is scored early.
    #[serde(default = "default_max_sessions")]
    pub max_sessions: usize,
    /// A live session is also scored at every this-many calls (0: only once idle).
    #[serde(default = "default_rescore_every")]
    pub rescore_every: u64,
}

fn default_idle() -> Duration {
    Duration::from_secs(300)
}
fn default_min_calls() -> u64 {
    2
}
fn one() -> f64 {
    1.0
}
fn default_untrusted() -> Vec<String> {
    vec!["untrusted".into()]
}
fn default_egress() -> Vec<String> {
    vec!["external".into()]
}
/// Argument names that say where a call acts.
pub fn default_targets() -> Vec<String> {
    [
        "to",
        "cc",
        "bcc",
        "recipient*",
        "url",
        "uri",
        "link",
        "path",
        "file*",
        "iban",
        "account*",
        "channel",
        "email",
        "address",
        "phone*",
        "participants",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}
fn default_rescore_every() -> u64 {
    25
}
fn default_max_sessions() -> usize {
    100_000
}

/// One cluster of normal sessions.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Cluster {
    /// Centre, in standardized units.
    pub centroid: Vec<f64>,
    /// Training sessions in it.
    pub size: u64,
    /// Distance (standardized units) beyond which a session is an outlier.
    pub threshold: f64,
    /// Mean distance of its members.
    pub mean_distance: f64,
}

/// What `toolgate train` learned about sessions.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SessionModel {
    /// Feature names, in order; must equal what this build computes.
    pub features: Vec<String>,
    /// Per-feature mean used to standardize.
    pub mean: Vec<f64>,
    /// Per-feature standard deviation used to standardize (never zero).
    pub std: Vec<f64>,
    /// The clusters.
    pub clusters: Vec<Cluster>,
    /// How k was chosen: mean silhouette per k tried.
    pub silhouette: Vec<(usize, f64)>,
    /// Percentile of member distances used for thresholds.
    pub percentile: f64,
    /// Sessions trained on.
    pub sessions: u64,
}

impl SessionModel {
    /// Standardizes `v`.
    pub fn standardize(&self, v: &[f64]) -> Vec<f64> {
        v.iter()
            .zip(self.mean.iter().zip(&self.std))
            .map(|(x, (m, s))| (x - m) / s)
            .collect()
    }

    /// Nearest cluster: (index, distance).
    pub fn nearest(&self, z: &[f64]) -> Option<(usize, f64)> {
        self.clusters
            .iter()
            .enumerate()
            .map(|(i, c)| (i, distance(z, &c.centroid)))
            .min_by(|a, b| a.1.total_cmp(&b.1))
    }
}

/// Euclidean distance.
pub fn distance(a: &[f64], b: &[f64]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y) * (x - y))
        .sum::<f64>()
        .sqrt()
}

/// The feature spec for a config and settings.
pub fn feature_spec(config: &Config, s: &SessionSettings) -> FeatureSpec {
    FeatureSpec {
        domains: config.trust.domains.clone(),
        untrusted: s.untrusted_domains.clone(),
        egress: s.egress_domains.clone(),
        targets: GlobSet::new_case_insensitive(&s.target_arguments),
    }
}

impl Configured for SessionDetector {
    const NAME: &'static str = NAME;
    const KIND: DetectorKind = DetectorKind::Sequence;
    const SUMMARY: &'static str =
        "whole sessions against clusters of normal sessions (toolgate train)";
    type Settings = SessionSettings;

    fn build(config: &Config, s: SessionSettings) -> Result<Self, BuildError> {
        SessionDetector::new(config, s)
    }

    fn load_files(
        table: &mut serde_json::Map<String, serde_json::Value>,
        files: &dyn crate::Files,
    ) -> Result<(), BuildError> {
        crate::factory::load_model(NAME, table, files, "detectors.session", "sessions")
    }
}

/// The session detector.
pub struct SessionDetector {
    config: Config,
    spec: FeatureSpec,
    model: Option<SessionModel>,
    s: SessionSettings,
    live: HashMap<String, (String, String, SessionAccumulator)>,
    watermark: i64,
    /// Sessions whose events arrived already idle by the watermark.
    late: LateSessions,
}

/// [`SessionDetector`]'s snapshot.
#[derive(Serialize, Deserialize)]
struct State {
    watermark: i64,
    live: Vec<(String, (String, String, SessionAccumulator))>,
}

impl SessionDetector {
    /// Builds the detector; a model that does not fit this build's features is an error.
    pub fn new(config: &Config, mut s: SessionSettings) -> Result<Self, BuildError> {
        let invalid = |m: String| BuildError::Settings {
            name: NAME.into(),
            message: m,
        };
        let spec = feature_spec(config, &s);
        let model = s.model.take();
        if let Some(m) = &model {
            let names = spec.names();
            if m.features != names {
                return Err(invalid(format!(
                    "`model` was trained on features {:?}, but this config computes {:?} (trust domains differ?); train again",
                    m.features, names
                )));
            }
            let n = names.len();
            let bad = m.mean.len() != n
                || m.std.len() != n
                || m.std.iter().any(|x| x.is_nan() || *x <= 0.0)
                || m.clusters.is_empty()
                || m.clusters.iter().any(|c| c.centroid.len() != n);
            if bad {
                return Err(invalid(
                    "`model` is inconsistent (sizes or scales); train again".into(),
                ));
            }
        }
        if s.threshold_factor.is_nan() || s.threshold_factor <= 0.0 {
            return Err(invalid("`threshold_factor` must be above 0".into()));
        }
        Ok(SessionDetector {
            config: config.clone(),
            spec,
            model,
            s,
            live: HashMap::new(),
            watermark: i64::MIN,
            late: LateSessions::default(),
        })
    }

    fn score(
        &self,
        agent: &str,
        session: &str,
        acc: &SessionAccumulator,
        out: &mut Vec<FindingDraft>,
    ) {
        let Some(model) = &self.model else {
            return;
        };
        if acc.calls() < self.s.min_calls {
            return;
        }
        let raw = acc.vector(&self.spec);
        let z = model.standardize(&raw);
        let Some((k, dist)) = model.nearest(&z) else {
            return;
        };
        let cluster = &model.clusters[k];
        let limit = cluster.threshold * self.s.threshold_factor;
        if dist <= limit {
            return;
        }
        let mut contributions: Vec<(usize, f64)> = z
            .iter()
            .zip(&cluster.centroid)
            .map(|(a, b)| (a - b).abs())
            .enumerate()
            .collect();
        contributions.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        let top: Vec<Value> = contributions
            .iter()
            .take(3)
            .map(|&(i, d)| {
                let usual = cluster.centroid[i] * model.std[i] + model.mean[i];
                json!({
                    "feature": model.features[i], "value": round3(raw[i]),
                    "cluster_value": round3(usual), "standardized_gap": round3(d),
                })
            })
            .collect();
        let names: Vec<String> = top
            .iter()
            .filter_map(|t| t["feature"].as_str().map(str::to_string))
            .collect();
        let severity = if dist > 2.0 * limit {
            Severity::High
        } else {
            Severity::Medium
        };
        out.push(FindingDraft {
            detector: DetectorKind::Sequence,
            rule_id: "session_outlier".into(),
            group_key: format!("{agent}\u{1f}{session}"),
            time: Timestamp::from_unix_nanos(acc.last),
            title: format!("Session unlike any learned cluster (nearest: cluster {k})"),
            description: format!(
                "The session lies {dist:.2} (standardized units) from the centre of cluster {k} ({} training sessions), beyond the {:.2} its own members reach; it differs most in {}.",
                cluster.size,
                limit,
                names.join(", ")
            ),
            severity,
            risk_score: if severity == Severity::High { 65 } else { 45 },
            confidence: (1.0 - limit / dist).clamp(0.3, 0.9),
            agent_id: agent.to_string(),
            session_id: session.to_string(),
            server: None,
            tool: None,
            call_id: None,
            event_ids: acc.event_ids.clone(),
            evidence: json!({
                "nearest_cluster": k, "cluster_size": cluster.size,
                "distance": round3(dist), "threshold": round3(limit),
                "features": top, "calls": acc.calls(),
            }),
            tags: vec!["owasp-asi:ASI10".into()],
            action: FindingAction::Alert,
        });
    }

    fn score_oldest_late(&mut self, out: &mut Vec<FindingDraft>) {
        let live = &self.live;
        let oldest = self
            .late
            .take_oldest_half(|k| live.get(k).map(|l| l.2.last));
        for k in oldest {
            if let Some((agent, session, acc)) = self.live.remove(&k) {
                self.score(&agent, &session, &acc, out);
            }
        }
    }

    fn flush(&mut self, before: i64, out: &mut Vec<FindingDraft>) {
        self.late.clear();
        let mut due: Vec<(i64, String)> = self
            .live
            .iter()
            .filter(|(_, (_, _, a))| a.last < before)
            .map(|(k, (_, _, a))| (a.last, k.clone()))
            .collect();
        due.sort();
        for (_, k) in due {
            if let Some((agent, session, acc)) = self.live.remove(&k) {
                self.score(&agent, &session, &acc, out);
            }
        }
    }
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

impl Detector for SessionDetector {
    fn name(&self) -> &'static str {
        NAME
    }

    fn observe(&mut self, event: &Event, out: &mut Vec<FindingDraft>) {
        if self.model.is_none() {
            return;
        }
        let key = format!("{}\u{1f}{}", event.agent_id, event.session_id);
        if !self.live.contains_key(&key) && self.live.len() >= self.s.max_sessions {
            let oldest = self
                .live
                .iter()
                .min_by(|a, b| a.1.2.last.cmp(&b.1.2.last).then(a.0.cmp(b.0)))
                .map(|(k, _)| k.clone());
            if let Some(k) = oldest
                && let Some((agent, session, acc)) = self.live.remove(&k)
            {
                self.score(&agent, &session, &acc, out);
            }
        }
        let idle = self
            .watermark
            .saturating_sub(self.s.session_idle.as_nanos());
        let entry = self.live.entry(key.clone()).or_insert_with(|| {
            (
                event.agent_id.clone(),
                event.session_id.clone(),
                SessionAccumulator::default(),
            )
        });
        entry.2.add(event, &self.config, &self.spec);
        let calls = entry.2.calls();
        // Already idle by the watermark (a late replay): no `advance` will reach it, so
        // late sessions are scored, oldest first, once there are too many.
        if entry.2.last < idle {
            if self.late.note(key) {
                self.score_oldest_late(out);
            }
        } else if self.s.rescore_every > 0
            && calls >= self.s.min_calls
            && calls.is_multiple_of(self.s.rescore_every)
            && event.kind() == toolgate_protocol::EventKind::ToolCall
            && let Some((agent, session, acc)) = self.live.get(&key)
        {
            // A long session is judged while it runs, not only once it ends; repeats
            // fold into one finding per session.
            self.score(agent, session, acc, out);
        }
    }

    fn advance(&mut self, watermark: Timestamp, out: &mut Vec<FindingDraft>) {
        self.watermark = self.watermark.max(watermark.unix_nanos());
        let idle = self
            .watermark
            .saturating_sub(self.s.session_idle.as_nanos());
        self.flush(idle, out);
    }

    fn finish(&mut self, out: &mut Vec<FindingDraft>) {
        self.flush(i64::MAX, out);
    }

    fn snapshot(&self) -> Result<Vec<u8>, StateError> {
        let mut live: Vec<(String, (String, String, SessionAccumulator))> = self
            .live
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        live.sort_by(|a, b| a.0.cmp(&b.0));
        let state = State {
            watermark: self.watermark,
            live,
        };
        serde_json::to_vec(&state).map_err(|e| StateError::Encode {
            what: NAME.into(),
            message: e.to_string(),
        })
    }

    fn restore(&mut self, snapshot: &[u8]) -> Result<(), StateError> {
        let state: State = serde_json::from_slice(snapshot).map_err(|e| StateError::Decode {
            what: NAME.into(),
            message: e.to_string(),
        })?;
        self.watermark = state.watermark;
        self.live = state.live.into_iter().collect();
        Ok(())
    }

    fn gauges(&self, out: &mut Vec<(StateGauge, u64)>) {
        out.push((StateGauge::SessionLive, self.live.len() as u64));
    }
}
