//! Calls held for the engine's verdict: kept with the line the agent sent, settled
//! when the verdict (or a block covering them) arrives or their deadline passes, and
//! reported either way so the history keeps every call's final action.

use std::collections::BTreeSet;

use serde_json::Value;
use toolgate_detectors::provenance::atoms;
use toolgate_protocol::config::FailMode;
use toolgate_protocol::decision::DecisionAction;
use toolgate_protocol::event::{EventBody, SinkAction, SinkActionKind, ToolResult};
use toolgate_protocol::{Duration, Timestamp};

use super::{Outbound, Pending, Report, Session, encode};
use crate::jsonrpc::{self, Id};

/// Calls waiting for a verdict at once, at most; past it a call of a held class gets
/// its fail mode at once.
pub const MAX_HOLDS: usize = 1_024;

/// A `tools/call` waiting for the engine's verdict: the call as
/// [`Session::client_message`] found it and the line the agent sent.
pub(super) struct HeldCall {
    spec: HeldCallSpec,
    line: Vec<u8>,
}

/// A call to hold, as [`Session::client_message`] found it.
pub(crate) struct HeldCallSpec {
    pub(super) key: Id,
    pub(super) id: Value,
    pub(super) call_id: String,
    /// The held call's event: the engine's verdict on it is `verdict-<event_id>`.
    pub(super) event_id: String,
    pub(super) tool: String,
    pub(super) class: String,
    pub(super) deadline: Timestamp,
    pub(super) timeout: Duration,
    pub(super) fail_mode: FailMode,
    /// The destinations its arguments name, for blocks scoped to one.
    pub(super) destinations: BTreeSet<String>,
}

impl Session {
    /// Settles the held calls that can be settled at `now`: the engine's verdict on the
    /// call (or a block covering it) decides; past the deadline, the class's fail mode.
    /// Forwarded calls go to `out` for the server, refusals for the agent; what was
    /// done with each goes in `report` (see [`Session::settle`]).
    pub fn resolve_holds(&mut self, now: Timestamp, out: &mut Vec<Outbound>, report: &mut Report) {
        let mut i = 0;
        while i < self.holds.len() {
            match self.settle(i, now, report) {
                Some(o) => out.push(o),
                None => i += 1,
            }
        }
    }

    /// [`Session::resolve_holds`] for the one held call with JSON-RPC id `key`:
    /// `None` while it still waits (or if no such call is held).
    pub fn resolve_hold(
        &mut self,
        key: &Id,
        now: Timestamp,
        report: &mut Report,
    ) -> Option<Outbound> {
        let i = self.holds.iter().position(|h| &h.spec.key == key)?;
        self.settle(i, now, report)
    }

    /// Whether the call with JSON-RPC id `key` is held.
    pub fn is_held(&self, key: &Id) -> bool {
        self.holds.iter().any(|h| &h.spec.key == key)
    }

    /// Settles held call `i` if its verdict is in or its deadline has passed. The call's
    /// event said `held`; what became of it is reported too, so the history keeps every
    /// call's final action and the engine the outcome of its findings: a refusal is a
    /// `tool_result` event (the refusal the agent got, `sink_action: blocked`), a
    /// release marks the server's result when it comes (`sink_action: allowed`), both
    /// naming the rule that settled it.
    fn settle(&mut self, i: usize, now: Timestamp, report: &mut Report) -> Option<Outbound> {
        let h = &self.holds[i];
        let id = &self.identity;
        let decisions = &self.checks.decisions;
        let verdict = decisions
            .verdict_for_call(
                &id.session_id,
                &id.server,
                &h.spec.tool,
                (&h.spec.call_id, &h.spec.event_id),
                now,
            )
            .or_else(|| {
                decisions
                    .lookup(
                        &id.session_id,
                        &id.server,
                        &h.spec.tool,
                        None,
                        &|d| atoms::names_destination(&h.spec.destinations, d),
                        now,
                    )
                    .filter(|d| d.action != DecisionAction::Allow)
            });
        let timeout_ms = h.spec.timeout.as_nanos() / 1_000_000;
        // (forwarded, rule, reason)
        let (forward, rule, reason) = match verdict {
            Some(d) => {
                let rule = format!("decision.{}", d.decision_id);
                match d.action {
                    DecisionAction::Allow => (true, rule, d.reason.clone()),
                    DecisionAction::Block => (false, rule, d.reason.clone()),
                    DecisionAction::RequireApproval => (
                        false,
                        rule,
                        format!("needs a person's approval: {}", d.reason),
                    ),
                }
            }
            None if now >= h.spec.deadline => {
                let rule = format!("hold.{}", h.spec.class);
                match h.spec.fail_mode {
                    FailMode::FailOpen => (
                        true,
                        rule,
                        format!("the engine gave no verdict within {timeout_ms} ms (fail_open)"),
                    ),
                    FailMode::FailClosed => (
                        false,
                        rule,
                        format!("the engine gave no verdict within {timeout_ms} ms (fail_closed)"),
                    ),
                }
            }
            None => return None,
        };
        let h = self.holds.remove(i);
        let settled = SinkAction {
            action: if forward {
                SinkActionKind::Allowed
            } else {
                SinkActionKind::Blocked
            },
            rule: Some(rule),
            reason: Some(reason),
        };
        if forward {
            self.track(
                h.spec.key,
                Pending::Call {
                    call_id: h.spec.call_id,
                    tool: h.spec.tool,
                    released: Some(settled),
                },
            );
            return Some(Outbound::ToServer(h.line));
        }
        let text = format!(
            "toolgate refused this call to {:?} on {:?}: {} (rule {})",
            h.spec.tool,
            self.identity.server,
            settled.reason.as_deref().unwrap_or_default(),
            settled.rule.as_deref().unwrap_or_default(),
        );
        let refusal = jsonrpc::refusal(&h.spec.id, &text);
        self.report_refused(h.spec, &text, settled, now, report);
        Some(Outbound::ToClient(encode(&refusal)))
    }

    /// Reports held call `spec`, which never reached the server, as its result: the
    /// refusal `text` the agent got, with the sink's action on it.
    fn report_refused(
        &mut self,
        spec: HeldCallSpec,
        text: &str,
        action: SinkAction,
        now: Timestamp,
        report: &mut Report,
    ) {
        let body = EventBody::ToolResult {
            server: self.identity.server.clone(),
            call_id: spec.call_id,
            tool: spec.tool,
            result: ToolResult::error(text),
        };
        self.emit(body, Some(action), false, now, report);
    }

    /// Keeps a call (its line as the agent sent it) until [`Session::resolve_holds`]
    /// settles it.
    pub(crate) fn hold(&mut self, spec: HeldCallSpec, line: Vec<u8>) {
        self.holds.push(HeldCall { spec, line });
    }

    /// The earliest deadline of a held call.
    pub fn next_hold_deadline(&self) -> Option<Timestamp> {
        self.holds.iter().map(|h| h.spec.deadline).min()
    }

    /// Calls waiting for a verdict.
    pub fn holding(&self) -> usize {
        self.holds.len()
    }

    /// The agent gave up on a request (`notifications/cancelled`): a held call it names
    /// is dropped, never to reach the server, and reported as the call's result, refused
    /// under its hold class, so the history never keeps it `held`.
    pub(super) fn cancel_hold(&mut self, line: &[u8], now: Timestamp, report: &mut Report) {
        let Ok(value) = serde_json::from_slice::<Value>(line) else {
            return;
        };
        let Some(key) = value
            .get("params")
            .and_then(|p| p.get("requestId"))
            .and_then(Id::of)
        else {
            return;
        };
        let Some(i) = self.holds.iter().position(|h| h.spec.key == key) else {
            return;
        };
        let h = self.holds.remove(i);
        let reason = "the agent cancelled it while it waited for a verdict".to_string();
        let text = format!(
            "toolgate dropped this call to {:?} on {:?}: {reason}",
            h.spec.tool, self.identity.server
        );
        let dropped = SinkAction {
            action: SinkActionKind::Blocked,
            rule: Some(format!("hold.{}", h.spec.class)),
            reason: Some(reason),
        };
        self.report_refused(h.spec, &text, dropped, now, report);
    }
}
