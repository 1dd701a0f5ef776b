//! The `sequence` detector: what an agent does over time. User-written rules (ordered
//! steps, "not followed by", unordered sets, counts and distinct counts; written in
//! `toolgate.toml`, in rule files, or imported from Sigma) and learned behaviour per
//! agent role (n-gram surprisal of each call and of a session's path, tools and servers
//! a role has never used).
//!
//! Rules are in [`rules`], conditions on one event in [`condition`], learned models in
//! [`learned`]. Pure and deterministic in event time; groups and models are bounded and
//! restorable.

pub mod condition;
pub mod learned;
pub mod rules;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use toolgate_protocol::config::Config;
use toolgate_protocol::{DetectorKind, Duration, Event, FindingAction, Severity, Timestamp};

use crate::factory::{BuildError, Configured};
use crate::metrics::StateGauge;
use crate::{Detector, FindingDraft, StateError};
pub use learned::{LearnedModel, LearnedSettings};
pub use rules::{AbsenceSpec, Rule, RuleKind, RuleSet, RuleSpec, StepSpec};

/// The detector's name under `[detectors]`.
pub const NAME: &str = "sequence";

/// `[detectors.sequence]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SequenceSettings {
    /// Run the built-in rules ([`builtin_rules`]) besides those configured.
    #[serde(default = "yes")]
    pub builtin_rules: bool,
    /// Rules written inline (`[[detectors.sequence.rules]]`).
    #[serde(default)]
    pub rules: Vec<RuleSpec>,
    /// Rule files: TOML with `[[rules]]` tables, or Sigma YAML (`.yml`/`.yaml`).
    /// Relative paths are from the config file. Their rules join `rules` when the
    /// config is loaded ([`Configured::load_files`]); the detector itself reads no
    /// files.
    #[serde(default)]
    pub rule_files: Vec<String>,
    /// Most (rule, group) states held; past it the longest idle go first.
    #[serde(default = "default_max_groups")]
    pub max_groups: usize,
    /// Per-role learned behaviour.
    #[serde(default)]
    pub learned: LearnedSettings,
}

fn yes() -> bool {
    true
}
fn default_max_groups() -> usize {
    200_000
}

/// The rules that ship with toolgate: a read from a `secret` domain followed within
/// 60 s, in the same session, by a call to a tool in an `external` domain.
pub fn builtin_rules() -> Vec<RuleSpec> {
    let table = |v: Value| match v {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    vec![RuleSpec {
        id: "secret_read_then_external_egress".into(),
        title: Some("Secret read followed by an external call".into()),
        description: Some(
            "A tool of a `secret` trust domain returned data, and within a minute the same session called a tool of an `external` domain: the shape of a credential or key being sent out."
                .into(),
        ),
        severity: Severity::Medium,
        action: FindingAction::Alert,
        tags: vec!["owasp-asi:ASI02".into(), "atlas:AML.T0057".into()],
        kind: RuleKind::Sequence,
        by: vec!["agent_id".into(), "session_id".into()],
        within: Some(Duration::from_secs(60)),
        steps: vec![
            StepSpec {
                name: Some("secret read".into()),
                condition: table(json!({"kind": "tool_result", "trust_domain": "secret"})),
                by: None,
            },
            StepSpec {
                name: Some("external call".into()),
                condition: table(json!({"kind": "tool_call", "trust_domain": "external"})),
                by: None,
            },
        ],
        not_followed_by: None,
        threshold: None,
        field: None,
        source: Some("builtin".into()),
    }]
}

impl Configured for SequenceDetector {
    const NAME: &'static str = NAME;
    const KIND: DetectorKind = DetectorKind::Sequence;
    const SUMMARY: &'static str =
        "ordered rules and Sigma correlations; learned per-role call sequences";
    type Settings = SequenceSettings;

    fn build(config: &Config, s: SequenceSettings) -> Result<Self, BuildError> {
        SequenceDetector::new(config, s)
    }

    /// The rules of `rule_files` join `rules`; `learned.model_file` fills
    /// `learned.model`.
    fn load_files(
        table: &mut Map<String, Value>,
        files: &dyn crate::Files,
    ) -> Result<(), BuildError> {
        let names = match table.get("rule_files") {
            None => Vec::new(),
            Some(Value::Array(items)) => items
                .iter()
                .map(|i| {
                    i.as_str().map(str::to_string).ok_or_else(|| {
                        invalid(format!("`rule_files` must list file names, found {i}"))
                    })
                })
                .collect::<Result<_, _>>()?,
            Some(other) => {
                return Err(invalid(format!(
                    "`rule_files` must be a list of file names, found {other}"
                )));
            }
        };
        let mut loaded = Vec::new();
        for name in names {
            loaded.extend(files.rules(&name).map_err(invalid)?);
        }
        if !loaded.is_empty() {
            match table
                .entry("rules")
                .or_insert_with(|| Value::Array(Vec::new()))
            {
                Value::Array(list) => list.extend(loaded),
                _ => return Err(invalid("`rules` must be a list of rule tables")),
            }
        }
        if let Some(Value::Object(learned)) = table.get_mut("learned") {
            crate::factory::load_model(
                NAME,
                learned,
                files,
                "detectors.sequence.learned",
                "sequence",
            )?;
        }
        Ok(())
    }
}

fn invalid(message: impl Into<String>) -> BuildError {
    BuildError::Settings {
        name: NAME.into(),
        message: message.into(),
    }
}

/// The sequence detector.
pub struct SequenceDetector {
    config: Config,
    rules: RuleSet,
    learned: learned::Learner,
    next_sweep: i64,
    watermark: i64,
    late: u64,
}

impl SequenceDetector {
    /// Builds the detector; rule errors name the rule and the key.
    pub fn new(config: &Config, s: SequenceSettings) -> Result<Self, BuildError> {
        if s.max_groups == 0 {
            return Err(invalid("`max_groups` must be at least 1"));
        }
        let mut specs = if s.builtin_rules {
            builtin_rules()
        } else {
            Vec::new()
        };
        specs.extend(s.rules);
        let rules = RuleSet::new(specs, s.max_groups).map_err(invalid)?;
        let learned = learned::Learner::new(s.learned).map_err(invalid)?;
        Ok(SequenceDetector {
            config: config.clone(),
            rules,
            learned,
            next_sweep: i64::MIN,
            watermark: i64::MIN,
            late: 0,
        })
    }

    /// The compiled rules.
    pub fn rules(&self) -> &[Rule] {
        self.rules.rules()
    }
}

#[derive(Serialize, Deserialize)]
struct State {
    version: u32,
    watermark: i64,
    late: u64,
    evicted: u64,
    groups: BTreeMap<String, BTreeMap<String, Value>>,
    learned: Value,
}

const STATE_VERSION: u32 = 1;

impl Detector for SequenceDetector {
    fn name(&self) -> &'static str {
        NAME
    }

    fn observe(&mut self, event: &Event, out: &mut Vec<FindingDraft>) {
        if event.time.unix_nanos() < self.watermark {
            self.late += 1;
        }
        self.rules.observe(event, &self.config, self.watermark, out);
        self.learned
            .observe(event, &self.config, self.watermark, out);
    }

    fn advance(&mut self, watermark: Timestamp, out: &mut Vec<FindingDraft>) {
        let w = watermark.unix_nanos();
        self.watermark = self.watermark.max(w);
        let sweep = w >= self.next_sweep;
        if sweep {
            self.next_sweep = w.saturating_add(10_000_000_000);
        }
        self.rules.advance(w, sweep, out);
        self.learned.advance(w, out);
    }

    fn finish(&mut self, out: &mut Vec<FindingDraft>) {
        self.rules.advance(i64::MAX, false, out);
        self.learned.finish(out);
    }

    fn snapshot(&self) -> Result<Vec<u8>, StateError> {
        let state = State {
            version: STATE_VERSION,
            watermark: self.watermark,
            late: self.late,
            evicted: self.rules.evicted,
            groups: self.rules.export(),
            learned: self.learned.export(),
        };
        serde_json::to_vec(&state).map_err(|e| StateError::Encode {
            what: NAME.into(),
            message: e.to_string(),
        })
    }

    fn restore(&mut self, snapshot: &[u8]) -> Result<(), StateError> {
        let decode = |message: String| StateError::Decode {
            what: NAME.into(),
            message,
        };
        let state: State = serde_json::from_slice(snapshot).map_err(|e| decode(e.to_string()))?;
        if state.version != STATE_VERSION {
            return Err(decode(format!(
                "snapshot version {} is not {STATE_VERSION}",
                state.version
            )));
        }
        self.rules.import(state.groups).map_err(decode)?;
        self.rules.evicted = state.evicted;
        self.learned.import(state.learned).map_err(decode)?;
        self.watermark = state.watermark;
        self.late = state.late;
        self.next_sweep = i64::MIN;
        Ok(())
    }

    fn gauges(&self, out: &mut Vec<(StateGauge, u64)>) {
        out.push((StateGauge::SequenceGroups, self.rules.groups() as u64));
        out.push((StateGauge::SequencePending, self.rules.pending() as u64));
        out.push((StateGauge::SequenceEvictedGroups, self.rules.evicted));
        out.push((StateGauge::SequenceLateEvents, self.late));
        self.learned.gauges(out);
    }
}
