//! What a detector emits, before the pipeline gives it an id and folds repeats.

use serde_json::Value;
use sha2::{Digest, Sha256};
use toolgate_protocol::fingerprint::hex;
use toolgate_protocol::{DetectorKind, Event, FindingAction, Severity, Timestamp};

/// A finding as a detector raises it: everything but the id and the folding counters.
#[derive(Debug, Clone, PartialEq)]
pub struct FindingDraft {
    /// Detector family.
    pub detector: DetectorKind,
    /// Rule within the detector.
    pub rule_id: String,
    /// What makes two occurrences "the same finding" (with detector, rule and window).
    pub group_key: String,
    /// Event time of the occurrence.
    pub time: Timestamp,
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
    /// Agent.
    pub agent_id: String,
    /// Session.
    pub session_id: String,
    /// Server.
    pub server: Option<String>,
    /// Tool.
    pub tool: Option<String>,
    /// Call.
    pub call_id: Option<String>,
    /// Evidence event ids.
    pub event_ids: Vec<String>,
    /// Detector-specific evidence, already redacted.
    pub evidence: Value,
    /// Framework tags.
    pub tags: Vec<String>,
    /// Alert or block.
    pub action: FindingAction,
}

impl FindingDraft {
    /// A draft about `event`: its agent, session, server, tool, call and time, with
    /// the event as evidence. Grouped by agent, session, server and tool unless
    /// [`FindingDraft::group_by`] says otherwise.
    pub fn about(detector: DetectorKind, rule_id: &str, event: &Event) -> Self {
        let server = event.server().map(str::to_string);
        let tool = event.tool().map(str::to_string);
        let group_key = [
            event.agent_id.as_str(),
            event.session_id.as_str(),
            server.as_deref().unwrap_or(""),
            tool.as_deref().unwrap_or(""),
        ]
        .join("\u{1f}");
        FindingDraft {
            detector,
            rule_id: rule_id.to_string(),
            group_key,
            time: event.time,
            title: String::new(),
            description: String::new(),
            severity: Severity::Medium,
            risk_score: 50,
            confidence: 0.5,
            agent_id: event.agent_id.clone(),
            session_id: event.session_id.clone(),
            server,
            tool,
            call_id: event.call_id().map(str::to_string),
            event_ids: vec![event.event_id.clone()],
            evidence: Value::Object(Default::default()),
            tags: Vec::new(),
            action: FindingAction::Alert,
        }
    }

    /// Sets the title and description.
    pub fn describe(mut self, title: impl Into<String>, description: impl Into<String>) -> Self {
        self.title = title.into();
        self.description = description.into();
        self
    }

    /// Sets severity, risk score (clamped to 100) and confidence (clamped to 0..=1).
    pub fn rate(mut self, severity: Severity, risk_score: u8, confidence: f64) -> Self {
        self.severity = severity;
        self.risk_score = risk_score.min(100);
        self.confidence = if confidence.is_nan() {
            0.0
        } else {
            confidence.clamp(0.0, 1.0)
        };
        self
    }

    /// Replaces the grouping key.
    pub fn group_by(mut self, key: impl Into<String>) -> Self {
        self.group_key = key.into();
        self
    }

    /// Sets the evidence object.
    pub fn evidence(mut self, evidence: Value) -> Self {
        self.evidence = evidence;
        self
    }

    /// Adds evidence event ids (e.g. the source of a flow).
    pub fn with_events<I: IntoIterator<Item = String>>(mut self, ids: I) -> Self {
        self.event_ids.extend(ids);
        self
    }

    /// Adds framework tags.
    pub fn tags<I: IntoIterator<Item = S>, S: Into<String>>(mut self, tags: I) -> Self {
        self.tags.extend(tags.into_iter().map(Into::into));
        self
    }

    /// Asks for a block decision.
    pub fn block(mut self) -> Self {
        self.action = FindingAction::Block;
        self
    }
}

/// The deterministic id of a finding: the first 128 bits, in hex, of SHA-256 over
/// detector, rule, group key and the start of the fold window. A replay of the same
/// events yields the same ids, so downstream consumers deduplicate by id.
pub fn finding_id(
    detector: DetectorKind,
    rule_id: &str,
    group_key: &str,
    window_start: Timestamp,
) -> String {
    let mut h = Sha256::new();
    for part in [
        "toolgate.finding.v1",
        detector.as_str(),
        rule_id,
        group_key,
        &window_start.unix_nanos().to_string(),
    ] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part.as_bytes());
    }
    hex(&h.finalize()[..16])
}
