//! What was done about each finding (issue 22): the action a finding asks for is not
//! always what happened. The call's own event says what its sink did (`blocked`:
//! refused there; `held`: waiting for the verdict the engine draws from these very
//! findings; anything else: forwarded). The sink then reports how a held call was
//! settled, on the call's `tool_result` (a refusal it made, or the server's result of
//! a released call, both with `sink_action`); where that differs from what was
//! expected (the verdict came after the hold's deadline, say), the open findings about
//! the call take the real outcome ([`crate::fold::FindingFolder::settle`]).
//!
//! Pure and deterministic in event time, like the detectors.

use toolgate_protocol::event::{EventBody, SinkActionKind};
use toolgate_protocol::{Event, FindingAction, FindingOutcome};

use crate::FindingDraft;

/// A call across the sinks of a session: agent, session, server, call id.
pub(crate) struct CallRef<'a> {
    pub agent_id: &'a str,
    pub session_id: &'a str,
    pub server: &'a str,
    pub call_id: &'a str,
}

/// The outcome of each draft that observing `event` made, in order.
pub(crate) fn of_drafts(event: &Event, drafts: &[FindingDraft]) -> Vec<FindingOutcome> {
    let EventBody::ToolCall { call_id, .. } = &event.body else {
        return vec![FindingOutcome::Observed; drafts.len()];
    };
    let about = |d: &FindingDraft| {
        d.call_id.as_deref() == Some(call_id.as_str())
            || (d.call_id.is_none() && d.event_ids.contains(&event.event_id))
    };
    let sink = event.sink_action.as_ref().map(|a| a.action);
    let held = event.await_verdict || sink == Some(SinkActionKind::Held);
    // The engine blocks a held call when a blocking finding points at it.
    let verdict_blocks = drafts
        .iter()
        .any(|d| d.action == FindingAction::Block && about(d));
    let fate = if sink == Some(SinkActionKind::Blocked) {
        FindingOutcome::RefusedAtSink
    } else if held && verdict_blocks {
        FindingOutcome::HeldRefused
    } else if held {
        FindingOutcome::HeldReleased
    } else {
        FindingOutcome::Forwarded
    };
    drafts
        .iter()
        .map(|d| {
            if about(d) {
                fate
            } else {
                FindingOutcome::Observed
            }
        })
        .collect()
}

/// The call a sink settled and how, if `event` reports a settlement: a `tool_result`
/// whose `sink_action` says `blocked` (a held call refused) or `allowed` (released).
pub(crate) fn settlement(event: &Event) -> Option<(CallRef<'_>, FindingOutcome)> {
    let EventBody::ToolResult {
        server, call_id, ..
    } = &event.body
    else {
        return None;
    };
    let settled = event.sink_action.as_ref()?;
    // Only a held call's settlement names its verdict or its hold class; a result the
    // sink refused for other reasons (`sink.unparseable`) is not one.
    if !is_settlement_rule(settled.rule.as_deref()) {
        return None;
    }
    let really = match settled.action {
        SinkActionKind::Blocked => FindingOutcome::HeldRefused,
        SinkActionKind::Allowed => FindingOutcome::HeldReleased,
        SinkActionKind::Held => return None,
    };
    Some((
        CallRef {
            agent_id: &event.agent_id,
            session_id: &event.session_id,
            server,
            call_id,
        },
        really,
    ))
}

/// Whether a `tool_result`'s `sink_action.rule` says a held call was settled: an
/// engine decision (`decision.<id>`) or the hold class's fail mode (`hold.<class>`).
pub(crate) fn is_settlement_rule(rule: Option<&str>) -> bool {
    rule.is_some_and(|r| r.starts_with("decision.") || r.starts_with("hold."))
}

/// Whether `outcome` was an expectation a settlement can correct.
pub(crate) fn awaits_settlement(outcome: Option<FindingOutcome>) -> bool {
    matches!(
        outcome,
        Some(FindingOutcome::HeldRefused | FindingOutcome::HeldReleased)
    )
}
