//! Elastic Common Schema alert documents, with the OpenTelemetry `gen_ai.*` fields for
//! the agent, conversation and tool.

use serde_json::{Value, json};
use toolgate_protocol::{Finding, FindingOutcome, Severity};

use super::PRODUCT_VERSION;

/// The ECS version these documents follow.
pub const ECS_VERSION: &str = "8.17.0";

/// `event.severity` on the scale Elastic's detection rules use.
pub fn severity(s: Severity) -> u8 {
    match s {
        Severity::Info => 0,
        Severity::Low => 21,
        Severity::Medium => 47,
        Severity::High => 73,
        Severity::Critical => 99,
    }
}

/// The finding as an ECS document.
pub fn alert(f: &Finding) -> Value {
    // `event.type` and `event.action` say what was done, never what was asked for.
    // `event.outcome` is the call's: refused is a failure, forwarded a success.
    let (kind, outcome) = match f.outcome {
        Some(o) if o.stopped() => ("denied", "failure"),
        Some(FindingOutcome::HeldReleased | FindingOutcome::Forwarded) => ("allowed", "success"),
        _ => ("info", "unknown"),
    };
    json!({
        "@timestamp": f.time.to_string(),
        "ecs": {"version": ECS_VERSION},
        "message": f.title,
        "event": {
            "kind": "alert",
            "category": ["intrusion_detection"],
            "type": [kind],
            "action": f.outcome.map_or("unknown", FindingOutcome::as_str),
            "outcome": outcome,
            "id": f.finding_id,
            "created": f.time.to_string(),
            "start": f.first_seen.to_string(),
            "end": f.last_seen.to_string(),
            "severity": severity(f.severity),
            "risk_score": f.risk_score,
            "reason": f.description,
            "dataset": "toolgate.findings",
            "module": "toolgate",
            "provider": "toolgate",
        },
        "rule": {
            "id": format!("{}/{}", f.detector.as_str(), f.rule_id),
            "name": f.rule_id,
            "description": f.title,
            "category": f.detector.as_str(),
            "ruleset": "toolgate",
        },
        "observer": {"product": "toolgate", "vendor": "toolgate", "version": PRODUCT_VERSION},
        "gen_ai": {
            "agent": {"id": f.agent_id},
            "conversation": {"id": f.session_id},
            "tool": {"name": f.tool, "call": {"id": f.call_id}},
        },
        "tags": f.tags,
        "toolgate": {
            "finding_id": f.finding_id,
            "detector": f.detector.as_str(),
            "severity": f.severity.as_str(),
            "confidence": f.confidence,
            "count": f.count,
            "server": f.server,
            "event_ids": f.event_ids,
            "evidence": f.evidence,
            "requested_action": f.action.as_str(),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outputs::tests::sample;
    use toolgate_protocol::FindingAction;

    #[test]
    fn alert_uses_ecs_and_gen_ai_fields() {
        let mut f = sample(FindingAction::Block);
        f.outcome = Some(FindingOutcome::HeldRefused);
        let d = alert(&f);
        assert_eq!(d["@timestamp"], "2025-03-01T10:00:05.5Z");
        assert_eq!(d["event"]["kind"], "alert");
        assert_eq!(d["event"]["type"][0], "denied");
        assert_eq!(d["event"]["severity"], 73);
        assert_eq!(d["event"]["id"], f.finding_id);
        assert_eq!(d["rule"]["id"], "provenance/internal_to_external");
        assert_eq!(d["gen_ai"]["agent"]["id"], "agent-7");
        assert_eq!(d["gen_ai"]["conversation"]["id"], "sess-1");
        assert_eq!(d["gen_ai"]["tool"]["name"], "post");
        assert_eq!(d["gen_ai"]["tool"]["call"]["id"], "c-9");
        assert_eq!(d["toolgate"]["count"], 3);
        assert_eq!(d["event"]["action"], "held_refused");
    }

    /// Issue 22: a block asked for on a call that went out is no denial.
    #[test]
    fn issue_22_event_type_and_action_follow_the_outcome() {
        let mut f = sample(FindingAction::Block);
        f.outcome = Some(FindingOutcome::Forwarded);
        let d = alert(&f);
        assert_eq!(d["event"]["type"][0], "allowed");
        assert_eq!(d["event"]["action"], "forwarded");
        assert_eq!(d["event"]["outcome"], "success");
        assert_eq!(d["toolgate"]["requested_action"], "block");
    }
}
