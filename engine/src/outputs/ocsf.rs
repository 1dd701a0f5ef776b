//! OCSF 1.4 records: Detection Finding (category 2 Findings, class 2004) for findings,
//! with the `security_control` profile (`is_alert`, and for a block the action and
//! disposition), and API Activity (class 6003) for raw tool calls.

use serde_json::{Value, json};
use toolgate_protocol::event::{EventBody, SinkActionKind};
use toolgate_protocol::{Event, Finding, FindingOutcome, Severity};

use super::PRODUCT_VERSION;

/// The OCSF schema version these records follow.
pub const OCSF_VERSION: &str = "1.4.0";

const CLASS_UID: u32 = 2004;
const ACTIVITY_CREATE: u32 = 1;

/// OCSF `severity_id` and its caption.
pub fn severity(s: Severity) -> (u8, &'static str) {
    match s {
        Severity::Info => (1, "Informational"),
        Severity::Low => (2, "Low"),
        Severity::Medium => (3, "Medium"),
        Severity::High => (4, "High"),
        Severity::Critical => (5, "Critical"),
    }
}

fn risk_level(score: u8) -> (u8, &'static str) {
    match score {
        0..=19 => (0, "Info"),
        20..=39 => (1, "Low"),
        40..=59 => (2, "Medium"),
        60..=79 => (3, "High"),
        _ => (4, "Critical"),
    }
}

fn confidence_id(c: f64) -> (u8, &'static str) {
    if c >= 0.8 {
        (3, "High")
    } else if c >= 0.5 {
        (2, "Medium")
    } else {
        (1, "Low")
    }
}

/// The finding as an OCSF Detection Finding.
pub fn detection_finding(f: &Finding) -> Value {
    let (severity_id, severity_caption) = severity(f.severity);
    let (risk_level_id, risk_level_caption) = risk_level(f.risk_score);
    let (conf_id, conf_caption) = confidence_id(f.confidence);
    let mut resources = Vec::new();
    if let Some(server) = &f.server {
        resources.push(json!({"type": "MCP Server", "name": server, "uid": server}));
    }
    if let Some(tool) = &f.tool {
        let uid = format!("{}/{tool}", f.server.as_deref().unwrap_or(""));
        resources.push(json!({"type": "MCP Tool", "name": tool, "uid": uid}));
    }
    let mut observables = vec![
        json!({"name": "agent_id", "type_id": 99, "type": "Other", "value": f.agent_id}),
        json!({"name": "session_id", "type_id": 99, "type": "Other", "value": f.session_id}),
    ];
    if let Some(call_id) = &f.call_id {
        observables
            .push(json!({"name": "call_id", "type_id": 99, "type": "Other", "value": call_id}));
    }
    let mut record = json!({
        "activity_id": ACTIVITY_CREATE,
        "activity_name": "Create",
        "category_uid": 2,
        "category_name": "Findings",
        "class_uid": CLASS_UID,
        "class_name": "Detection Finding",
        "type_uid": CLASS_UID * 100 + ACTIVITY_CREATE,
        "type_name": "Detection Finding: Create",
        "severity_id": severity_id,
        "severity": severity_caption,
        "status_id": 1,
        "status": "New",
        "time": f.time.unix_millis(),
        "start_time": f.first_seen.unix_millis(),
        "end_time": f.last_seen.unix_millis(),
        "count": f.count,
        "message": f.title,
        "is_alert": true,
        "confidence_id": conf_id,
        "confidence": conf_caption,
        "confidence_score": (f.confidence * 100.0).round() as u8,
        "risk_score": f.risk_score,
        "risk_level_id": risk_level_id,
        "risk_level": risk_level_caption,
        "metadata": {
            "version": OCSF_VERSION,
            "uid": f.finding_id,
            "log_name": "toolgate.findings",
            "profiles": ["security_control"],
            "product": {"name": "toolgate", "vendor_name": "toolgate", "version": PRODUCT_VERSION},
        },
        "finding_info": {
            "uid": f.finding_id,
            "title": f.title,
            "desc": f.description,
            "types": [f.detector.as_str()],
            "created_time": f.time.unix_millis(),
            "first_seen_time": f.first_seen.unix_millis(),
            "last_seen_time": f.last_seen.unix_millis(),
            "analytic": {
                "uid": format!("{}/{}", f.detector.as_str(), f.rule_id),
                "name": f.rule_id,
                "category": f.detector.as_str(),
                "type_id": 1,
                "type": "Rule",
            },
            "related_events": f.event_ids.iter().map(|id| json!({"uid": id})).collect::<Vec<_>>(),
            "data_sources": ["toolgate.events"],
        },
        "resources": resources,
        "observables": observables,
        "evidences": [{"data": f.evidence}],
        "unmapped": {
            "toolgate": {
                "agent_id": f.agent_id,
                "session_id": f.session_id,
                "server": f.server,
                "tool": f.tool,
                "call_id": f.call_id,
                "tags": f.tags,
                "action": f.action,
                "outcome": f.outcome,
            }
        },
    });
    // The security-control profile's action and disposition say what was done, never
    // what the finding asked for (a block that came after the call went out is no
    // `Blocked`); a finding without an outcome (an older version's) has none.
    let done = match f.outcome {
        Some(o) if o.stopped() => Some(((2, "Denied"), (2, "Blocked"))),
        Some(FindingOutcome::HeldReleased | FindingOutcome::Forwarded) => {
            Some(((1, "Allowed"), (1, "Allowed")))
        }
        Some(_) => Some(((3, "Observed"), (15, "Detected"))),
        None => None,
    };
    if let Some(((action_id, action), (disposition_id, disposition))) = done {
        record["action_id"] = json!(action_id);
        record["action"] = json!(action);
        record["disposition_id"] = json!(disposition_id);
        record["disposition"] = json!(disposition);
    }
    record
}

const API_ACTIVITY_UID: u32 = 6003;
const ACTIVITY_OTHER: u32 = 99;

/// A tool call as an OCSF API Activity (category 6 Application Activity, class 6003):
/// the agent is the actor, the MCP server the destination, `tools/call` the operation.
/// `None` for events of other kinds.
pub fn api_activity(e: &Event) -> Option<Value> {
    let EventBody::ToolCall {
        server,
        call_id,
        tool,
        arguments,
    } = &e.body
    else {
        return None;
    };
    let mut src_endpoint = json!({"uid": e.agent_id});
    if let Some(host) = &e.host {
        src_endpoint["hostname"] = json!(host);
    }
    let mut actor = json!({
        "app_uid": e.agent_id,
        "session": {"uid": e.session_id},
    });
    if let Some(role) = &e.agent_role {
        actor["app_name"] = json!(role);
    }
    let mut record = json!({
        "activity_id": ACTIVITY_OTHER,
        "activity_name": "Other",
        "category_uid": 6,
        "category_name": "Application Activity",
        "class_uid": API_ACTIVITY_UID,
        "class_name": "API Activity",
        "type_uid": API_ACTIVITY_UID * 100 + ACTIVITY_OTHER,
        "type_name": "API Activity: Other",
        "severity_id": 1,
        "severity": "Informational",
        "time": e.time.unix_millis(),
        "message": format!("{} called {server}/{tool}", e.agent_id),
        "metadata": {
            "version": OCSF_VERSION,
            "uid": e.event_id,
            "log_name": "toolgate.events",
            "product": {"name": "toolgate", "vendor_name": "toolgate", "version": PRODUCT_VERSION},
        },
        "api": {
            "operation": "tools/call",
            "service": {"name": server},
            "request": {"uid": call_id, "data": {"name": tool, "arguments": arguments}},
        },
        "actor": actor,
        "src_endpoint": src_endpoint,
        "dst_endpoint": {"name": server},
        "resources": [{"type": "MCP Tool", "name": tool, "uid": format!("{server}/{tool}")}],
        "unmapped": {
            "toolgate": {
                "trust_domain": e.trust_domain,
                "await_verdict": e.await_verdict,
                "sink_action": e.sink_action,
                "labels": e.labels,
            }
        },
    });
    if let Some(trace_id) = &e.trace_id {
        record["metadata"]["correlation_uid"] = json!(trace_id);
    }
    // What the sink did is the activity's outcome as far as it is known at call time.
    if let Some(action) = &e.sink_action
        && action.action == SinkActionKind::Blocked
    {
        record["status_id"] = json!(2);
        record["status"] = json!("Failure");
        if let Some(reason) = &action.reason {
            record["status_detail"] = json!(reason);
        }
    }
    Some(record)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outputs::tests::sample;
    use toolgate_protocol::FindingAction;

    #[test]
    fn detection_finding_carries_the_class_and_the_finding() {
        let f = sample(FindingAction::Alert);
        let o = detection_finding(&f);
        assert_eq!(o["class_uid"], 2004);
        assert_eq!(o["category_uid"], 2);
        assert_eq!(o["type_uid"], 200401);
        assert_eq!(o["severity_id"], 4);
        assert_eq!(o["time"], f.time.unix_millis());
        assert_eq!(o["start_time"], 1_740_823_200_000i64);
        assert_eq!(o["end_time"], 1_740_823_205_500i64);
        assert_eq!(o["count"], 3);
        assert_eq!(o["confidence_score"], 90);
        assert_eq!(o["risk_level_id"], 4);
        assert_eq!(o["metadata"]["version"], OCSF_VERSION);
        assert_eq!(o["metadata"]["product"]["name"], "toolgate");
        assert_eq!(o["finding_info"]["uid"], f.finding_id);
        assert_eq!(
            o["finding_info"]["analytic"]["uid"],
            "provenance/internal_to_external"
        );
        assert_eq!(o["finding_info"]["related_events"][1]["uid"], "e2");
        assert_eq!(o["resources"][1]["uid"], "web/post");
        assert_eq!(o["evidences"][0]["data"]["containment"], 0.97);
        assert!(o.get("disposition_id").is_none());
        assert_eq!(
            o["metadata"]["profiles"][0], "security_control",
            "is_alert is its"
        );
    }

    #[test]
    fn a_refused_call_is_a_denied_disposition() {
        let mut f = sample(FindingAction::Alert);
        f.outcome = Some(FindingOutcome::HeldRefused);
        let o = detection_finding(&f);
        assert_eq!(o["action_id"], 2);
        assert_eq!(o["disposition_id"], 2);
        assert_eq!(o["metadata"]["profiles"][0], "security_control");
    }

    /// Issue 22: a finding asking for a block on a call that was not held (it went
    /// out) is no `Blocked`.
    #[test]
    fn issue_22_the_disposition_follows_the_outcome_not_the_request() {
        let mut f = sample(FindingAction::Block);
        f.outcome = Some(FindingOutcome::Forwarded);
        let o = detection_finding(&f);
        assert_eq!(o["action_id"], 1);
        assert_eq!(o["disposition"], "Allowed");
        assert_eq!(o["unmapped"]["toolgate"]["action"], "block");
        assert_eq!(o["unmapped"]["toolgate"]["outcome"], "forwarded");
        f.outcome = Some(FindingOutcome::Observed);
        let o = detection_finding(&f);
        assert_eq!(o["action_id"], 3);
        assert_eq!(o["disposition_id"], 15);
    }
}
