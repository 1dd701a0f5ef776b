//! `toolgate.finding.v1`: what a detector concluded, with its evidence. See DESIGN.md,
//! "Wire contract: findings".

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::decode::parse_json;
use crate::error::{DecodeError, FieldProblem};
use crate::time::Timestamp;

/// The schema tag every finding carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum FindingSchema {
    /// `toolgate.finding.v1`
    #[default]
    #[serde(rename = "toolgate.finding.v1")]
    V1,
}

/// The detector family that raised a finding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DetectorKind {
    /// Data flow across servers and trust domains.
    Provenance,
    /// Ordered patterns and learned call sequences.
    Sequence,
    /// Counts, bytes and distinct values over windows.
    Volume,
    /// Tool-definition integrity and poisoning.
    Definition,
    /// Allow/deny lists, argument constraints, secrets.
    Policy,
    /// User-written rules over event fields.
    Rule,
}

impl DetectorKind {
    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            DetectorKind::Provenance => "provenance",
            DetectorKind::Sequence => "sequence",
            DetectorKind::Volume => "volume",
            DetectorKind::Definition => "definition",
            DetectorKind::Policy => "policy",
            DetectorKind::Rule => "rule",
        }
    }
}

/// How bad it is. Ordered from `Info` to `Critical`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Worth recording.
    Info,
    /// Worth a look.
    Low,
    /// Worth an analyst's time.
    Medium,
    /// Likely an attack.
    High,
    /// An attack in progress.
    Critical,
}

impl Severity {
    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }

    /// Parses the wire spelling.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "info" => Severity::Info,
            "low" => Severity::Low,
            "medium" => Severity::Medium,
            "high" => Severity::High,
            "critical" => Severity::Critical,
            _ => return None,
        })
    }

    /// Every severity, lowest first.
    pub const ALL: [Severity; 5] = [
        Severity::Info,
        Severity::Low,
        Severity::Medium,
        Severity::High,
        Severity::Critical,
    ];
}

/// What the finding asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FindingAction {
    /// Report only.
    Alert,
    /// Report and send a block decision to the sink.
    Block,
}

impl FindingAction {
    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            FindingAction::Alert => "alert",
            FindingAction::Block => "block",
        }
    }
}

/// What happened to the call a finding is about, as far as toolgate knows when it
/// emits the finding: the action a finding asks for (`action`) is not always what was
/// done, and SIEM dispositions follow this, never the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FindingOutcome {
    /// The sink refused the call by its own rules; the server never saw it.
    RefusedAtSink,
    /// The call was held for a verdict and refused.
    HeldRefused,
    /// The call was held for a verdict and then forwarded.
    HeldReleased,
    /// The call was forwarded without waiting (its class is not held): a block can
    /// only stop later calls.
    Forwarded,
    /// Nothing was there to stop: the finding is about a result, a tool list, a
    /// message, or a window of events.
    Observed,
}

impl FindingOutcome {
    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            FindingOutcome::RefusedAtSink => "refused_at_sink",
            FindingOutcome::HeldRefused => "held_refused",
            FindingOutcome::HeldReleased => "held_released",
            FindingOutcome::Forwarded => "forwarded",
            FindingOutcome::Observed => "observed",
        }
    }

    /// Whether the call was stopped.
    pub fn stopped(self) -> bool {
        matches!(
            self,
            FindingOutcome::RefusedAtSink | FindingOutcome::HeldRefused
        )
    }
}

/// One finding. Repeats of the same detector, rule, group and window are folded into
/// one finding (`count`, `first_seen`, `last_seen`) under a deterministic id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Finding {
    /// Always `toolgate.finding.v1`.
    pub schema: FindingSchema,
    /// Hash of detector, rule, group key and window: a replay yields the same id.
    pub finding_id: String,
    /// Event time at which this version of the finding was emitted.
    pub time: Timestamp,
    /// Event time of the first occurrence.
    pub first_seen: Timestamp,
    /// Event time of the latest occurrence.
    pub last_seen: Timestamp,
    /// Occurrences folded into this finding.
    pub count: u64,
    /// Detector family.
    pub detector: DetectorKind,
    /// The rule within the detector.
    pub rule_id: String,
    /// One-line summary.
    pub title: String,
    /// What happened and why it matters.
    pub description: String,
    /// Severity.
    pub severity: Severity,
    /// 0 to 100.
    pub risk_score: u8,
    /// 0 to 1.
    pub confidence: f64,
    /// The agent concerned.
    pub agent_id: String,
    /// The session concerned.
    pub session_id: String,
    /// The server concerned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    /// The tool concerned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool: Option<String>,
    /// The call concerned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call_id: Option<String>,
    /// Evidence: ids of the events involved (bounded; `count` says how many occurred).
    pub event_ids: Vec<String>,
    /// Detector-specific evidence object (redacted).
    pub evidence: Value,
    /// Framework tags such as `owasp-asi:ASI01`, `atlas:AML.T0051`.
    pub tags: Vec<String>,
    /// Alert or block: what the finding asks for.
    pub action: FindingAction,
    /// What was done (`toolgate run` and `analyze` stamp it; absent in findings of
    /// older versions and of detectors run on their own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<FindingOutcome>,
}

impl Finding {
    /// Decodes a finding with the same size limit and error style as events.
    pub fn decode(bytes: &[u8], max_bytes: usize) -> Result<Finding, DecodeError> {
        let value = parse_json(bytes, max_bytes)?;
        if !value.is_object() {
            return Err(DecodeError::NotAnObject {
                found: crate::error::describe(&value),
            });
        }
        let finding: Finding =
            serde_json::from_value(value).map_err(|e| DecodeError::InvalidJson {
                message: e.to_string(),
            })?;
        finding.validate()?;
        Ok(finding)
    }

    /// Checks the ranges serde cannot express.
    pub fn validate(&self) -> Result<(), DecodeError> {
        let invalid = |field: &str, expected: &str, found: Value| {
            Err(DecodeError::field_error(
                field,
                expected,
                Some(&found),
                FieldProblem::InvalidValue,
            ))
        };
        if self.risk_score > 100 {
            return invalid("risk_score", "0 to 100", self.risk_score.into());
        }
        if !(0.0..=1.0).contains(&self.confidence) {
            return invalid("confidence", "0 to 1", self.confidence.into());
        }
        if self.count == 0 {
            return invalid("count", "at least 1", self.count.into());
        }
        if self.first_seen > self.last_seen {
            return invalid(
                "first_seen",
                "a time no later than last_seen",
                self.first_seen.to_string().into(),
            );
        }
        Ok(())
    }

    /// The finding as one line of JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}
