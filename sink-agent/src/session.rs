//! One MCP session seen by the proxy, as a pure state machine: lines in, lines out,
//! events and findings out. No I/O and no clock: the edge passes the time in, so the
//! same inputs always give the same outputs (and tests need no processes).
//!
//! Messages pass through as the bytes that came in. Only a refused `tools/call` is
//! answered here instead of forwarded; inside a batch, the refused members are removed
//! from what is forwarded and their answers are merged into the server's batch
//! response (or sent at once when nothing else in the batch expects one).

use std::collections::{BTreeMap, HashMap};

use serde_json::{Map, Value, json};
use toolgate_detectors::definitions;
use toolgate_detectors::policy::{CallView, Mode, Policy, Problem};
use toolgate_detectors::secrets::{Redactor, scan};
use toolgate_detectors::{Detector, FindingDraft};
use toolgate_protocol::event::{SinkAction, SinkActionKind};
use toolgate_protocol::{Event, FindingAction, Timestamp};

use crate::decisions::{Decisions, Rejected};
use crate::jsonrpc::{self, Id, Message, Parsed};
use toolgate_protocol::decision::DecisionAction;

/// Who is calling, and through which server: the fields every event carries.
#[derive(Debug, Clone)]
pub struct Identity {
    /// `agent_id`.
    pub agent_id: String,
    /// `agent_role`.
    pub agent_role: Option<String>,
    /// `host`.
    pub host: Option<String>,
    /// `session_id`: one per MCP session.
    pub session_id: String,
    /// The server's name as configured at the agent.
    pub server: String,
    /// The server's trust domain, if configured.
    pub trust_domain: Option<String>,
}

/// The local checks, built from the config by the edge.
pub struct Checks {
    /// `[detectors.policy]`, if configured.
    pub policy: Option<Policy>,
    /// The definitions detector, holding the pins (`[detectors.definitions]`).
    pub definitions: Option<Box<dyn Detector>>,
    /// What to do with secrets in arguments.
    pub secrets: SecretsMode,
    /// The engine's decisions in force.
    pub decisions: Decisions,
    /// Applied to listings before the definitions detector sees them (the engine sees
    /// them redacted too, so fingerprints agree).
    pub redactor: Redactor,
}

/// `[sink] secrets`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretsMode {
    /// Not checked.
    Off,
    /// Reported in the event's `sink_action`; the call goes ahead.
    Monitor,
    /// The call is refused.
    Enforce,
}

/// Where a line goes. The edge appends the newline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outbound {
    /// To the MCP server.
    ToServer(Vec<u8>),
    /// Back to the agent.
    ToClient(Vec<u8>),
}

/// What the session produced besides lines: events to send and findings from the local
/// detectors (definition changes).
#[derive(Debug, Default)]
pub struct Report {
    /// Events as complete JSON objects, not yet validated or redacted: that happens in
    /// [`finish_event`], off the path of the MCP messages.
    pub events: Vec<Value>,
    /// Findings raised locally.
    pub findings: Vec<FindingDraft>,
    /// Lines that were not JSON (forwarded as they were).
    pub not_json: u64,
    /// `tools/call` messages without a usable id, refused.
    pub malformed_calls: u64,
    /// The pins after a listing was checked against them, to save at once: pins
    /// learned in a session must survive the sink being killed, or a definition
    /// changed before the next start would be trusted on first use.
    pub pins: Option<Vec<u8>>,
}

/// Most requests remembered while they wait for a response.
pub const MAX_PENDING: usize = 65_536;

/// Most batches whose refusals wait for the server's batch response.
pub const MAX_PENDING_BATCHES: usize = 1_024;

enum Pending {
    Call { call_id: String, tool: String },
    List,
}

/// Refusals waiting for the server's answer to the rest of their batch.
struct BatchMerge {
    forwarded: Vec<Id>,
    refusals: Vec<Value>,
}

/// The state of one session.
pub struct Session {
    identity: Identity,
    checks: Checks,
    /// Requests waiting for their response, with the order they came in.
    pending: HashMap<Id, (u64, Pending)>,
    next_pending: u64,
    batches: Vec<BatchMerge>,
    /// Tools whose served definition is not the pinned one, with the reason.
    held: BTreeMap<String, String>,
    next_event: u64,
    event_prefix: String,
}

struct Verdict {
    action: SinkActionKind,
    rule: Option<String>,
    reason: Option<String>,
}

impl Session {
    /// A new session. `event_prefix` makes event ids unique across sessions (the edge
    /// passes something random).
    pub fn new(identity: Identity, checks: Checks, event_prefix: String) -> Self {
        Session {
            identity,
            checks,
            pending: HashMap::new(),
            next_pending: 0,
            batches: Vec::new(),
            held: BTreeMap::new(),
            next_event: 0,
            event_prefix,
        }
    }

    /// Who this session reports as.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// Applies one signed decision from the engine (its JSON bytes); returns its id.
    pub fn apply_decision(&mut self, bytes: &[u8], now: Timestamp) -> Result<String, Rejected> {
        self.checks
            .decisions
            .admit(bytes, now)
            .map(|d| d.decision_id.clone())
    }

    /// A line from the agent.
    pub fn from_client(
        &mut self,
        line: &[u8],
        now: Timestamp,
        out: &mut Vec<Outbound>,
        report: &mut Report,
    ) {
        let Some(parsed) = parse_or_pass(line, report, out, Outbound::ToServer) else {
            return;
        };
        match parsed {
            Parsed::Single(message) => match self.client_message(&message, now, report) {
                None => out.push(Outbound::ToServer(line.to_vec())),
                Some(refusal) => out.push(Outbound::ToClient(encode(&refusal))),
            },
            Parsed::Batch(items) => {
                let mut kept = Vec::with_capacity(items.len());
                let mut refusals = Vec::new();
                for (value, message) in items {
                    match self.client_message(&message, now, report) {
                        None => kept.push((value, message)),
                        Some(refusal) => refusals.push(refusal),
                    }
                }
                if refusals.is_empty() {
                    out.push(Outbound::ToServer(line.to_vec()));
                    return;
                }
                let forwarded: Vec<Id> = kept
                    .iter()
                    .filter_map(|(_, m)| match m {
                        Message::Request { id, .. } => Id::of(id),
                        _ => None,
                    })
                    .collect();
                if !kept.is_empty() {
                    let values: Vec<Value> = kept.into_iter().map(|(v, _)| v).collect();
                    out.push(Outbound::ToServer(encode(&Value::Array(values))));
                }
                if forwarded.is_empty() {
                    out.push(Outbound::ToClient(encode(&Value::Array(refusals))));
                } else {
                    if self.batches.len() >= MAX_PENDING_BATCHES {
                        // Never answered: answer the oldest refusals now, on their own.
                        let stale = self.batches.remove(0);
                        out.push(Outbound::ToClient(encode(&Value::Array(stale.refusals))));
                    }
                    self.batches.push(BatchMerge {
                        forwarded,
                        refusals,
                    });
                }
            }
        }
    }

    /// A line from the server.
    pub fn from_server(
        &mut self,
        line: &[u8],
        now: Timestamp,
        out: &mut Vec<Outbound>,
        report: &mut Report,
    ) {
        let Some(parsed) = parse_or_pass(line, report, out, Outbound::ToClient) else {
            return;
        };
        match parsed {
            Parsed::Single(message) => {
                self.server_message(&message, now, report);
                out.push(Outbound::ToClient(line.to_vec()));
            }
            Parsed::Batch(items) => {
                let mut ids = Vec::new();
                for (_, message) in &items {
                    self.server_message(message, now, report);
                    if let Message::Response { id, .. } = message
                        && let Some(id) = Id::of(id)
                    {
                        ids.push(id);
                    }
                }
                let merge = self
                    .batches
                    .iter()
                    .position(|b| b.forwarded.iter().any(|f| ids.contains(f)));
                match merge {
                    None => out.push(Outbound::ToClient(line.to_vec())),
                    Some(i) => {
                        let merge = self.batches.remove(i);
                        let mut values: Vec<Value> = items.into_iter().map(|(v, _)| v).collect();
                        values.extend(merge.refusals);
                        out.push(Outbound::ToClient(encode(&Value::Array(values))));
                    }
                }
            }
        }
    }

    /// Handles one message from the agent; `Some(answer)` when the call is refused.
    pub(crate) fn client_message(
        &mut self,
        message: &Message,
        now: Timestamp,
        report: &mut Report,
    ) -> Option<Value> {
        let (id, method, params) = match message {
            Message::Request { id, method, params } => (id, method, params),
            // A tools/call the proxy cannot track (no usable id) would reach the server
            // unchecked, and servers differ on what they do with one. MCP requires an
            // id; refuse it.
            Message::Notification { method } | Message::InvalidId { method }
                if method == "tools/call" =>
            {
                report.malformed_calls += 1;
                return Some(jsonrpc::error(
                    &Value::Null,
                    -32600,
                    "toolgate refused a tools/call without a string or number id",
                ));
            }
            _ => return None,
        };
        let key = Id::of(id)?;
        match method.as_str() {
            "tools/list" => {
                self.track(key, Pending::List);
                None
            }
            "tools/call" => {
                let params = params.clone().unwrap_or_default();
                let tool = params
                    .get("name")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string();
                let arguments = params
                    .get("arguments")
                    .and_then(Value::as_object)
                    .cloned()
                    .unwrap_or_default();
                let call_id = key.as_str().trim_matches('"').to_string();
                let verdict = self.judge(&tool, &call_id, &arguments, now);
                let refused = verdict.action != SinkActionKind::Allowed;
                let text = refused.then(|| {
                    format!(
                        "toolgate refused this call to {tool:?} on {:?}: {} (rule {})",
                        self.identity.server,
                        verdict.reason.as_deref().unwrap_or("blocked"),
                        verdict.rule.as_deref().unwrap_or("-")
                    )
                });
                let body = json!({
                    "kind": "tool_call",
                    "server": self.identity.server,
                    "call_id": call_id,
                    "tool": tool,
                    "arguments": arguments,
                    "sink_action": SinkAction {
                        action: verdict.action,
                        rule: verdict.rule,
                        reason: verdict.reason,
                    },
                });
                self.emit(body, now, report);
                match text {
                    Some(text) => Some(jsonrpc::refusal(id, &text)),
                    None => {
                        self.track(key, Pending::Call { call_id, tool });
                        None
                    }
                }
            }
            _ => None,
        }
    }

    /// Remembers a request until its response. A server that never answers must not
    /// grow the proxy without bound: past [`MAX_PENDING`] the oldest is forgotten (its
    /// response, if it ever comes, still passes; only its event is lost).
    fn track(&mut self, key: Id, pending: Pending) {
        if self.pending.len() >= MAX_PENDING
            && let Some(oldest) = self
                .pending
                .iter()
                .min_by_key(|(_, (seq, _))| *seq)
                .map(|(k, _)| k.clone())
        {
            self.pending.remove(&oldest);
        }
        self.next_pending += 1;
        self.pending.insert(key, (self.next_pending, pending));
    }

    pub(crate) fn server_message(
        &mut self,
        message: &Message,
        now: Timestamp,
        report: &mut Report,
    ) {
        let Message::Response {
            id,
            result,
            is_error,
        } = message
        else {
            return;
        };
        let Some((_, pending)) = Id::of(id).and_then(|k| self.pending.remove(&k)) else {
            return;
        };
        match pending {
            Pending::Call { call_id, tool } => {
                let result = match (result, is_error) {
                    (Some(r), _) => Value::Object(r.clone()),
                    // A JSON-RPC error is reported as a failed result.
                    (None, _) => json!({"content": [], "isError": true}),
                };
                let body = json!({
                    "kind": "tool_result",
                    "server": self.identity.server,
                    "call_id": call_id,
                    "tool": tool,
                    "result": result,
                });
                self.emit(body, now, report);
            }
            Pending::List => {
                let Some(tools) = result.as_ref().and_then(|r| r.get("tools")) else {
                    return;
                };
                let body = json!({
                    "kind": "tool_list",
                    "server": self.identity.server,
                    "tools": tools,
                });
                self.emit(body, now, report);
                let listed = report.events.last().cloned().unwrap_or_default();
                if let Some(event) = finish_event(listed, &self.checks.redactor) {
                    self.observe_definitions(&event, report);
                }
            }
        }
    }

    /// Runs the definitions detector over a listing and updates which tools are held.
    fn observe_definitions(&mut self, event: &Event, report: &mut Report) {
        let Some(detector) = self.checks.definitions.as_mut() else {
            return;
        };
        let mut drafts = Vec::new();
        detector.observe(event, &mut drafts);
        report.pins = detector.snapshot().ok();
        if let toolgate_protocol::event::EventBody::ToolList { tools, .. } = &event.body {
            for tool in tools {
                self.held.remove(&tool.name);
            }
        }
        for draft in &drafts {
            if draft.action == FindingAction::Block
                && let Some(tool) = &draft.tool
            {
                self.held.insert(
                    tool.clone(),
                    format!(
                        "{} ({}); approve with `toolgate definitions approve`",
                        draft.title, draft.rule_id
                    ),
                );
            }
        }
        report.findings.extend(drafts);
    }

    fn judge(
        &self,
        tool: &str,
        call_id: &str,
        arguments: &Map<String, Value>,
        now: Timestamp,
    ) -> Verdict {
        if let Some(reason) = self.held.get(tool) {
            return Verdict {
                action: SinkActionKind::Held,
                rule: Some(format!("{}.rug_pull", definitions::NAME)),
                reason: Some(reason.clone()),
            };
        }
        let id = &self.identity;
        if let Some(d) =
            self.checks
                .decisions
                .lookup(&id.session_id, &id.server, tool, Some(call_id), now)
        {
            let action = match d.action {
                DecisionAction::Block => Some(SinkActionKind::Blocked),
                DecisionAction::RequireApproval => Some(SinkActionKind::Held),
                // Lifts the engine's own blocks; local checks still apply below.
                DecisionAction::Allow => None,
            };
            if let Some(action) = action {
                return Verdict {
                    action,
                    rule: Some(format!("decision.{}", d.decision_id)),
                    reason: Some(d.reason.clone()),
                };
            }
        }
        let mut monitored: Option<Verdict> = None;
        if let Some(policy) = &self.checks.policy {
            let call = CallView {
                agent_id: &self.identity.agent_id,
                role: self.identity.agent_role.as_deref(),
                server: &self.identity.server,
                tool,
                arguments,
            };
            let mut violations = Vec::new();
            policy.check(&call, &mut violations);
            for v in &violations {
                let mode = v.rule.map_or(policy.default_mode(), |r| r.mode);
                let why = match &v.problem {
                    Problem::Denied => v
                        .rule
                        .map(|r| r.reason.clone())
                        .filter(|r| !r.is_empty())
                        .unwrap_or_else(|| "denied by policy".into()),
                    Problem::ApprovalRequired => "needs a person's approval".into(),
                    Problem::Argument { path, problem } => format!("argument {path}: {problem}"),
                };
                let verdict = Verdict {
                    action: match (mode, &v.problem) {
                        (Mode::Monitor, _) => SinkActionKind::Allowed,
                        (Mode::Enforce, Problem::ApprovalRequired) => SinkActionKind::Held,
                        (Mode::Enforce, _) => SinkActionKind::Blocked,
                    },
                    rule: Some(format!("policy.{}", v.rule_id())),
                    reason: Some(why),
                };
                if verdict.action != SinkActionKind::Allowed {
                    return verdict;
                }
                monitored.get_or_insert(verdict);
            }
        }
        if self.checks.secrets != SecretsMode::Off
            && let Some(kind) = first_secret(arguments)
        {
            let verdict = Verdict {
                action: if self.checks.secrets == SecretsMode::Enforce {
                    SinkActionKind::Blocked
                } else {
                    SinkActionKind::Allowed
                },
                rule: Some("secrets".into()),
                reason: Some(format!("the arguments contain a secret ({kind})")),
            };
            if verdict.action != SinkActionKind::Allowed {
                return verdict;
            }
            monitored.get_or_insert(verdict);
        }
        monitored.unwrap_or(Verdict {
            action: SinkActionKind::Allowed,
            rule: None,
            reason: None,
        })
    }

    /// Completes an event with the session's fields and queues it.
    fn emit(&mut self, body: Value, now: Timestamp, report: &mut Report) {
        let Value::Object(mut fields) = body else {
            return;
        };
        self.next_event += 1;
        let id = &self.identity;
        fields.insert("schema".into(), json!("toolgate.event.v1"));
        fields.insert(
            "event_id".into(),
            json!(format!("{}-{:08}", self.event_prefix, self.next_event)),
        );
        fields.insert("time".into(), json!(now.to_string()));
        fields.insert("agent_id".into(), json!(id.agent_id));
        fields.insert("session_id".into(), json!(id.session_id));
        for (key, value) in [
            ("agent_role", &id.agent_role),
            ("host", &id.host),
            ("trust_domain", &id.trust_domain),
        ] {
            if let Some(v) = value {
                fields.insert(key.into(), json!(v));
            }
        }
        report.events.push(Value::Object(fields));
    }
}

/// Parses a line; a line that is not JSON is counted and passed on as it came
/// (`forward` says which way), for the peer to answer.
fn parse_or_pass(
    line: &[u8],
    report: &mut Report,
    out: &mut Vec<Outbound>,
    forward: fn(Vec<u8>) -> Outbound,
) -> Option<Parsed> {
    match jsonrpc::parse(line) {
        Ok(p) => Some(p),
        Err(_) => {
            report.not_json += 1;
            out.push(forward(line.to_vec()));
            None
        }
    }
}

/// Validates and redacts an event the session queued. An event the protocol rejects (a
/// server sent a malformed tool list, say) is `None`: not sent, while the message
/// itself still passed.
pub fn finish_event(value: Value, redactor: &Redactor) -> Option<Event> {
    let mut event = Event::from_value(value).ok()?;
    redactor.redact_event(&mut event);
    Some(event)
}

fn first_secret(arguments: &Map<String, Value>) -> Option<&'static str> {
    fn walk(v: &Value) -> Option<&'static str> {
        match v {
            Value::String(s) => scan(s).first().map(|m| m.kind.as_str()),
            Value::Array(items) => items.iter().find_map(walk),
            Value::Object(map) => map.values().find_map(walk),
            _ => None,
        }
    }
    arguments.values().find_map(walk)
}

fn encode(value: &Value) -> Vec<u8> {
    value.to_string().into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use toolgate_protocol::config::Config;

    fn session(toml: &str) -> Session {
        let config = Config::from_toml(toml, "test").expect("config");
        let identity = Identity {
            agent_id: "a1".into(),
            agent_role: Some("support-bot".into()),
            host: None,
            session_id: "s1".into(),
            server: "crm".into(),
            trust_domain: None,
        };
        Session::new(
            identity,
            crate::checks(&config, None, "a1").expect("checks"),
            "ev".into(),
        )
    }

    const POLICY: &str = r#"
[detectors.policy]
[[detectors.policy.rules]]
id = "no-export"
tools = ["export_*"]
effect = "deny"
[[detectors.policy.rules]]
id = "watch-email"
tools = ["send_email"]
effect = "deny"
mode = "monitor"
"#;

    fn client(s: &mut Session, line: &str) -> (Vec<Outbound>, Report) {
        let (mut out, mut report) = (Vec::new(), Report::default());
        s.from_client(line.as_bytes(), Timestamp::EPOCH, &mut out, &mut report);
        (out, report)
    }

    fn server(s: &mut Session, line: &str) -> (Vec<Outbound>, Report) {
        let (mut out, mut report) = (Vec::new(), Report::default());
        s.from_server(line.as_bytes(), Timestamp::EPOCH, &mut out, &mut report);
        (out, report)
    }

    fn to_client(out: &[Outbound]) -> Value {
        match out {
            [Outbound::ToClient(line)] => serde_json::from_slice(line).expect("json"),
            other => panic!("expected one line to the client, got {other:?}"),
        }
    }

    #[test]
    fn a_monitored_rule_lets_the_call_through_and_says_so_in_the_event() {
        let mut s = session(POLICY);
        let line = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"send_email","arguments":{"to":"x@y.z"}}}"#;
        let (out, report) = client(&mut s, line);
        assert_eq!(out, [Outbound::ToServer(line.as_bytes().to_vec())]);
        let action = &report.events[0]["sink_action"];
        assert_eq!(action["action"], "allowed");
        assert_eq!(action["rule"], "policy.watch-email");
    }

    #[test]
    fn a_batch_whose_only_request_is_refused_is_answered_at_once() {
        let mut s = session(POLICY);
        let (out, _) = client(
            &mut s,
            r#"[{"jsonrpc":"2.0","method":"notifications/progress","params":{}},{"jsonrpc":"2.0","id":9,"method":"tools/call","params":{"name":"export_all"}}]"#,
        );
        assert_eq!(out.len(), 2);
        let Outbound::ToServer(forwarded) = &out[0] else {
            panic!("{out:?}")
        };
        let forwarded: Value = serde_json::from_slice(forwarded).unwrap();
        assert_eq!(forwarded.as_array().unwrap().len(), 1, "the notification");
        let answer = to_client(&out[1..]);
        assert_eq!(answer[0]["id"], 9);
        assert_eq!(answer[0]["result"]["isError"], true);
    }

    #[test]
    fn refusals_are_merged_into_the_servers_batch_response() {
        let mut s = session(POLICY);
        client(
            &mut s,
            r#"[{"jsonrpc":"2.0","id":"p","method":"ping"},{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"export_all"}}]"#,
        );
        let (out, _) = server(&mut s, r#"[{"jsonrpc":"2.0","id":"p","result":{}}]"#);
        let merged = to_client(&out);
        let ids: Vec<&Value> = merged
            .as_array()
            .unwrap()
            .iter()
            .map(|m| &m["id"])
            .collect();
        assert_eq!(ids, [&json!("p"), &json!(2)]);
        // A later, unrelated batch passes unchanged.
        let line = r#"[{"jsonrpc":"2.0","id":"q","result":{}}]"#;
        let (out, _) = server(&mut s, line);
        assert_eq!(out, [Outbound::ToClient(line.as_bytes().to_vec())]);
    }

    #[test]
    fn a_server_that_never_answers_does_not_grow_the_session_without_bound() {
        let mut s = session("");
        for i in 0..MAX_PENDING + 10 {
            client(
                &mut s,
                &format!(r#"{{"jsonrpc":"2.0","id":{i},"method":"tools/list"}}"#),
            );
        }
        assert_eq!(s.pending.len(), MAX_PENDING);
        assert!(
            !s.pending.contains_key(&Id::of(&json!(0)).unwrap()),
            "the oldest went"
        );
        assert!(
            s.pending
                .contains_key(&Id::of(&json!(MAX_PENDING + 9)).unwrap())
        );
    }

    #[test]
    fn a_tools_call_without_a_usable_id_is_refused_not_forwarded() {
        let mut s = session("");
        for line in [
            r#"{"jsonrpc":"2.0","id":null,"method":"tools/call","params":{"name":"x"}}"#,
            r#"{"jsonrpc":"2.0","method":"tools/call","params":{"name":"x"}}"#,
        ] {
            let (out, report) = client(&mut s, line);
            assert_eq!(to_client(&out)["error"]["code"], -32600, "{line}");
            assert_eq!(report.malformed_calls, 1);
        }
        // Other notifications pass.
        let line =
            r#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":1}}"#;
        let (out, _) = client(&mut s, line);
        assert_eq!(out, [Outbound::ToServer(line.as_bytes().to_vec())]);
    }

    #[test]
    fn a_json_rpc_error_to_a_call_is_reported_as_a_failed_result() {
        let mut s = session("");
        client(
            &mut s,
            r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"lookup","arguments":{}}}"#,
        );
        let (_, report) = server(
            &mut s,
            r#"{"jsonrpc":"2.0","id":3,"error":{"code":-32602,"message":"bad"}}"#,
        );
        let event = finish_event(report.events[0].clone(), &Redactor::disabled()).expect("valid");
        assert_eq!(event.call_id(), Some("3"));
        let toolgate_protocol::EventBody::ToolResult { result, .. } = &event.body else {
            panic!("{event:?}")
        };
        assert_eq!(result.is_error, Some(true));
    }

    #[test]
    fn responses_to_the_servers_own_requests_are_not_taken_for_results() {
        let mut s = session("");
        // The server asks the client (sampling) with id 1; the client answers.
        let (out, _) = server(
            &mut s,
            r#"{"jsonrpc":"2.0","id":1,"method":"sampling/createMessage","params":{}}"#,
        );
        assert_eq!(out.len(), 1);
        let (out, report) = client(&mut s, r#"{"jsonrpc":"2.0","id":1,"result":{}}"#);
        assert!(matches!(out[..], [Outbound::ToServer(_)]));
        assert!(report.events.is_empty());
    }

    #[test]
    fn a_signed_block_decision_refuses_matching_calls_and_a_forged_one_is_ignored() {
        use toolgate_protocol::decision::{Decision, DecisionSchema, DecisionSigner, Scope};
        let signer = DecisionSigner::from_seed("engine-1", [3; 32]);
        let mut s = session(&format!(
            "[sink.decision_keys]\nengine-1 = \"{}\"\n",
            signer.public_key_base64()
        ));
        let mut block = Decision {
            schema: DecisionSchema::V1,
            decision_id: "dec-1".into(),
            time: Timestamp::EPOCH,
            expires_at: None,
            action: DecisionAction::Block,
            scope: Scope {
                agent_id: "a1".into(),
                session_id: None,
                server: Some("crm".into()),
                tool: Some("export_contacts".into()),
                call_id: None,
            },
            reason: "exfiltration from crm in progress".into(),
            finding_ids: vec!["f1".into()],
            key_id: String::new(),
            signature: String::new(),
        };
        let mut forged = block.clone();
        forged.decision_id = "dec-0".into();
        forged.scope.tool = Some("lookup".into());
        signer.sign(&mut forged);
        forged.reason = "edited".into();
        assert!(
            s.apply_decision(&serde_json::to_vec(&forged).unwrap(), Timestamp::EPOCH)
                .is_err()
        );
        signer.sign(&mut block);
        s.apply_decision(&serde_json::to_vec(&block).unwrap(), Timestamp::EPOCH)
            .expect("verified");

        let (out, report) = client(
            &mut s,
            r#"{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"export_contacts","arguments":{}}}"#,
        );
        let answer = to_client(&out);
        assert!(
            answer.to_string().contains("exfiltration from crm"),
            "{answer}"
        );
        assert_eq!(report.events[0]["sink_action"]["rule"], "decision.dec-1");
        let (out, _) = client(
            &mut s,
            r#"{"jsonrpc":"2.0","id":6,"method":"tools/call","params":{"name":"lookup","arguments":{}}}"#,
        );
        assert!(
            matches!(out[..], [Outbound::ToServer(_)]),
            "the forged one is ignored"
        );
    }

    #[test]
    fn secrets_in_arguments_are_refused_in_enforce_mode_and_redacted_in_events() {
        let mut s = session("[sink]\nsecrets = \"enforce\"\n");
        let (out, report) = client(
            &mut s,
            r#"{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"post","arguments":{"body":"key AKIAIOSFODNN7EXAMPLE"}}}"#,
        );
        assert_eq!(to_client(&out)["result"]["isError"], true);
        let redactor = Redactor::new(&Default::default()).expect("redactor");
        let event = finish_event(report.events[0].clone(), &redactor).expect("valid");
        let event = event.to_json();
        assert!(!event.contains("AKIAIOSFODNN7EXAMPLE"), "{event}");
    }
}
