//! One MCP session seen by the proxy, as a pure state machine: lines in, lines out,
//! events and findings out. No I/O and no clock: the edge passes the time in, so the
//! same inputs always give the same outputs (and tests need no processes).
//!
//! Messages pass through as the bytes that came in. Only a refused `tools/call` is
//! answered here instead of forwarded; inside a batch, the refused members are removed
//! from what is forwarded and their answers are merged into the server's batch
//! response (or sent at once when nothing else in the batch expects one).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde_json::{Map, Value};
use toolgate_detectors::definitions;
use toolgate_detectors::glob::GlobSet;
use toolgate_detectors::mode::Mode;
use toolgate_detectors::policy::{CallView, Policy, Problem};
use toolgate_detectors::provenance::atoms;
use toolgate_detectors::secrets::{Redactor, scan};
use toolgate_detectors::{Detector, FindingDraft};
pub use toolgate_protocol::config::SecretsMode;
use toolgate_protocol::config::{FailMode, Unparseable};
use toolgate_protocol::event::{EventBody, SinkAction, SinkActionKind, ToolDefinition, ToolResult};
use toolgate_protocol::{Duration, Event, FindingAction, Timestamp};

use crate::decisions::{Decisions, Rejected};
use crate::jsonrpc::{self, Id, Message, Parsed};

mod holds;
mod oversized;
mod unparseable;

use holds::HeldCall;
pub(crate) use holds::HeldCallSpec;
pub use holds::MAX_HOLDS;
use toolgate_protocol::decision::DecisionAction;
use unparseable::{LenientMark, unparseable_text};

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
    /// What to do with a message only a lenient decoder reads (`[sink] unparseable`).
    pub unparseable: Unparseable,
    /// The engine's decisions in force.
    pub decisions: Decisions,
    /// Applied to listings before the definitions detector sees them (the engine sees
    /// them redacted too, so fingerprints agree).
    pub redactor: Redactor,
    /// Tool classes whose calls wait for the engine's verdict (`[[sink.hold]]`).
    pub holds: Vec<HoldRule>,
    /// Whether there is an engine to ask (a Kafka link); without one, a held class's
    /// fail mode applies at once.
    pub engine_link: bool,
}

/// One `[[sink.hold]]` class, compiled.
#[derive(Debug, Clone)]
pub struct HoldRule {
    /// The class's name.
    pub name: String,
    /// Its tools.
    pub tools: GlobSet,
    /// Its servers (empty: all).
    pub servers: GlobSet,
    /// Longest wait for the verdict.
    pub timeout: Duration,
    /// What happens without a verdict.
    pub fail_mode: FailMode,
}

/// What becomes of one message from the agent.
pub(crate) enum Disposition {
    /// Forward it.
    Forward,
    /// Answer the agent with this instead.
    Answer(Value),
    /// Keep it until the engine's verdict (a `tools/call` of a held class).
    Hold(HeldCallSpec),
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
    /// Events checked against the protocol, not yet redacted: that happens in
    /// [`finish_event`], off the path of the MCP messages.
    pub events: Vec<Event>,
    /// Events the protocol rejects (a server sent a malformed tool list, say): not
    /// sent, while the messages themselves passed.
    pub invalid_events: u64,
    /// Findings raised locally.
    pub findings: Vec<FindingDraft>,
    /// Lines that were not JSON even to a lenient peer (forwarded as they were: the
    /// peer cannot act on them either).
    pub not_json: u64,
    /// Messages serde_json refused but a lenient peer reads: refused, or with
    /// `unparseable = "forward"` checked on the lenient reading and passed on.
    pub unparseable: u64,
    /// `tools/call` messages without a usable id, refused.
    pub malformed_calls: u64,
    /// The pins after a listing was checked against them, to save at once: pins
    /// learned in a session must survive the sink being killed, or a definition
    /// changed before the next start would be trusted on first use.
    pub pins: Option<Vec<u8>>,
}

#[cfg(test)]
impl Report {
    /// Event `i` as the JSON the engine reads: how the tests look at it.
    pub(crate) fn json(&self, i: usize) -> Value {
        serde_json::to_value(&self.events[i]).unwrap_or_default()
    }
}

/// Most requests remembered while they wait for a response.
pub const MAX_PENDING: usize = 65_536;

/// Most batches whose refusals wait for the server's batch response.
pub const MAX_PENDING_BATCHES: usize = 1_024;

enum Pending {
    /// A call forwarded to the server; `released` says how a held call was let go.
    Call {
        call_id: String,
        tool: String,
        released: Option<SinkAction>,
    },
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
    /// Calls waiting for the engine's verdict, oldest first.
    holds: Vec<HeldCall>,
    /// Refusals inside a batch are answered at once instead of merged into the
    /// server's batch response (over HTTP, where that response may be a stream).
    answer_batch_refusals_at_once: bool,
    next_event: u64,
    event_prefix: String,
    /// Set while the message being handled was read leniently: its events are marked.
    lenient: Option<LenientMark>,
    /// Labels for the next event only (a truncated message's size and digest).
    next_labels: Vec<(String, String)>,
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
            holds: Vec::new(),
            answer_batch_refusals_at_once: false,
            next_event: 0,
            event_prefix,
            lenient: None,
            next_labels: Vec::new(),
        }
    }

    /// Answers refusals inside a batch at once, as their own array, instead of merging
    /// them into the server's batch response.
    pub fn answer_batch_refusals_at_once(&mut self) {
        self.answer_batch_refusals_at_once = true;
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
        let Some(decoded) = parse_or_pass(line, report, out, Outbound::ToServer) else {
            return;
        };
        let parsed = decoded.parsed;
        if let Some(quirks) = decoded.lenient {
            report.unparseable += 1;
            if self.refuses_lenient(&parsed, &quirks) {
                self.refuse_from_client(parsed, quirks, now, out, report);
                return;
            }
        }
        self.client_parsed(parsed, line, now, out, report);
        self.lenient = None;
    }

    fn client_parsed(
        &mut self,
        parsed: Parsed,
        line: &[u8],
        now: Timestamp,
        out: &mut Vec<Outbound>,
        report: &mut Report,
    ) {
        match parsed {
            Parsed::Single(message) => {
                if let Message::Notification { method } = &message
                    && method == "notifications/cancelled"
                    && !self.holds.is_empty()
                {
                    self.cancel_hold(line, now, report);
                }
                match self.client_message(&message, now, false, report) {
                    Disposition::Forward => out.push(Outbound::ToServer(line.to_vec())),
                    Disposition::Answer(refusal) => out.push(Outbound::ToClient(encode(&refusal))),
                    Disposition::Hold(spec) => self.hold(spec, line.to_vec()),
                }
            }
            Parsed::Batch(items) => {
                let mut kept = Vec::with_capacity(items.len());
                let mut refusals = Vec::new();
                for (value, message) in items {
                    match self.client_message(&message, now, true, report) {
                        Disposition::Answer(refusal) => refusals.push(refusal),
                        // A batched call never waits (see `client_message`).
                        Disposition::Forward | Disposition::Hold(_) => kept.push((value, message)),
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
                if forwarded.is_empty() || self.answer_batch_refusals_at_once {
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
        let Some(decoded) = parse_or_pass(line, report, out, Outbound::ToClient) else {
            return;
        };
        let parsed = decoded.parsed;
        if let Some(quirks) = decoded.lenient {
            report.unparseable += 1;
            tracing::warn!(
                server = %self.identity.server,
                quirks = %quirks,
                "the server sent a message only a lenient decoder reads"
            );
            if !self.awaits_any(&parsed) {
                // Not a result or a listing the sink watches: passed on, counted.
                out.push(Outbound::ToClient(line.to_vec()));
                return;
            }
            if self.refuses_lenient(&parsed, &quirks) {
                self.refuse_from_server(parsed, quirks, now, out, report);
                return;
            }
        }
        self.server_parsed(parsed, line, now, out, report);
        self.lenient = None;
    }

    fn server_parsed(
        &mut self,
        parsed: Parsed,
        line: &[u8],
        now: Timestamp,
        out: &mut Vec<Outbound>,
        report: &mut Report,
    ) {
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

    /// Handles one message from the agent. A call inside a batch (`in_batch`) never
    /// waits for a verdict: its class's fail mode applies at once.
    pub(crate) fn client_message(
        &mut self,
        message: &Message,
        now: Timestamp,
        in_batch: bool,
        report: &mut Report,
    ) -> Disposition {
        let (id, method, params) = match message {
            Message::Request { id, method, params } => (id, method, params),
            // A tools/call the proxy cannot track (no usable id) would reach the server
            // unchecked, and servers differ on what they do with one. MCP requires an
            // id; refuse it.
            Message::Notification { method } | Message::InvalidId { method }
                if method == "tools/call" =>
            {
                report.malformed_calls += 1;
                return Disposition::Answer(jsonrpc::error(
                    &Value::Null,
                    -32600,
                    "toolgate refused a tools/call without a string or number id",
                ));
            }
            _ => return Disposition::Forward,
        };
        let Some(key) = Id::of(id) else {
            return Disposition::Forward;
        };
        match method.as_str() {
            "tools/list" => {
                self.track(key, Pending::List);
                Disposition::Forward
            }
            "tools/call" => {
                let (tool, arguments) = call_parts(params.as_ref());
                let call_id = self.call_id(&key);
                let mut verdict = self.judge(&tool, &call_id, &arguments, now);
                let mut hold = None;
                if verdict.action == SinkActionKind::Allowed
                    && let Some(rule) = self.hold_rule(&tool)
                {
                    let rule_id = Some(format!("hold.{}", rule.name));
                    let why = if in_batch {
                        "a batched call cannot wait for the engine's verdict"
                    } else if !self.checks.engine_link {
                        "there is no engine to ask for a verdict"
                    } else if self.holds.len() >= MAX_HOLDS {
                        "too many calls are waiting for verdicts"
                    } else {
                        ""
                    };
                    verdict = match (why.is_empty(), rule.fail_mode) {
                        (true, _) => {
                            hold = Some((rule.name.clone(), rule.timeout, rule.fail_mode));
                            Verdict {
                                action: SinkActionKind::Held,
                                rule: rule_id,
                                reason: Some("waiting for the engine's verdict".into()),
                            }
                        }
                        (false, FailMode::FailClosed) => Verdict {
                            action: SinkActionKind::Blocked,
                            rule: rule_id,
                            reason: Some(format!("{why} (fail_closed)")),
                        },
                        (false, FailMode::FailOpen) => Verdict {
                            action: SinkActionKind::Allowed,
                            rule: rule_id,
                            reason: Some(format!("{why} (fail_open)")),
                        },
                    };
                }
                let refused = verdict.action != SinkActionKind::Allowed && hold.is_none();
                let text = refused.then(|| {
                    format!(
                        "toolgate refused this call to {tool:?} on {:?}: {} (rule {})",
                        self.identity.server,
                        verdict.reason.as_deref().unwrap_or("blocked"),
                        verdict.rule.as_deref().unwrap_or("-")
                    )
                });
                // What a block scoped to a destination needs of a held call, read
                // before its arguments go into its event.
                let destinations = if hold.is_some() {
                    self.destinations_of(&arguments)
                } else {
                    BTreeSet::new()
                };
                let body = EventBody::ToolCall {
                    server: self.identity.server.clone(),
                    call_id: call_id.clone(),
                    tool: tool.clone(),
                    arguments,
                };
                let action = SinkAction {
                    action: verdict.action,
                    rule: verdict.rule,
                    reason: verdict.reason,
                };
                let sent = self.emit(body, Some(action), hold.is_some(), now, report);
                if let Some(text) = text {
                    return Disposition::Answer(jsonrpc::refusal(id, &text));
                }
                // A held call whose event the protocol refuses (a tool name over 512
                // bytes matched by a `*` hold rule, say) never reaches the engine: its
                // fail mode answers now instead of at the deadline.
                if !sent && let Some((class, _, fail_mode)) = &hold {
                    match fail_mode {
                        FailMode::FailClosed => {
                            let text = format!(
                                "toolgate refused this call to {tool:?} on {:?}: its event cannot be reported for a verdict (rule hold.{class}, fail_closed)",
                                self.identity.server
                            );
                            return Disposition::Answer(jsonrpc::refusal(id, &text));
                        }
                        FailMode::FailOpen => hold = None,
                    }
                }
                match hold {
                    Some((class, timeout, fail_mode)) => {
                        self.checks.decisions.forget_call(&call_id);
                        Disposition::Hold(HeldCallSpec {
                            key,
                            id: id.clone(),
                            call_id,
                            event_id: self.last_event_id(),
                            tool,
                            class,
                            deadline: now.saturating_add(timeout),
                            timeout,
                            fail_mode,
                            destinations,
                        })
                    }
                    None => {
                        self.track(
                            key,
                            Pending::Call {
                                call_id,
                                tool,
                                released: None,
                            },
                        );
                        Disposition::Forward
                    }
                }
            }
            _ => Disposition::Forward,
        }
    }

    /// The `call_id` of a request id: redacted here, where it is minted, so the event,
    /// the held call and the engine's verdict all name the call alike.
    pub(crate) fn call_id(&self, key: &Id) -> String {
        let mut id = key.as_str().trim_matches('"').to_string();
        self.checks.redactor.redact_text_in_place(&mut id);
        id
    }

    /// The first hold class that covers `tool` on this session's server.
    fn hold_rule(&self, tool: &str) -> Option<&HoldRule> {
        self.checks
            .holds
            .iter()
            .find(|h| h.tools.matches(Some(tool)) && h.servers.matches(Some(&self.identity.server)))
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
            Pending::Call {
                call_id,
                tool,
                released,
            } => {
                let result = match (result, is_error) {
                    (Some(r), _) => ToolResult::from_value(Value::Object(r.clone())),
                    // A JSON-RPC error is reported as a failed result.
                    (None, _) => Ok(ToolResult {
                        is_error: Some(true),
                        ..ToolResult::default()
                    }),
                };
                let Ok(result) = result else {
                    report.invalid_events += 1;
                    return;
                };
                let body = EventBody::ToolResult {
                    server: self.identity.server.clone(),
                    call_id,
                    tool,
                    result,
                };
                self.emit(body, released, false, now, report);
            }
            Pending::List => {
                let Some(tools) = result.as_ref().and_then(|r| r.get("tools")) else {
                    return;
                };
                // A listing the protocol rejects (a malformed tool, say) is counted, not
                // sent; the message itself still passes.
                let tools = match tools {
                    Value::Array(items) => items
                        .iter()
                        .enumerate()
                        .map(|(i, t)| ToolDefinition::from_value(t.clone(), &format!("tools[{i}]")))
                        .collect::<Result<Vec<_>, _>>()
                        .ok(),
                    _ => None,
                };
                let Some(tools) = tools else {
                    report.invalid_events += 1;
                    return;
                };
                let body = EventBody::ToolList {
                    server: self.identity.server.clone(),
                    tools,
                };
                if !self.emit(body, None, false, now, report)
                    || self.lenient.as_ref().is_some_and(|m| m.refused)
                {
                    // The agent never gets this listing: nothing to pin or hold.
                    return;
                }
                // The detector sees the listing as the engine will: redacted.
                if let Some(listed) = report.events.last().cloned() {
                    let event = finish_event(listed, &self.checks.redactor);
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

    /// The destinations a call's arguments name (see [`atoms::destinations`]), as they
    /// are and as redacted for the event the engine read: a block names a destination
    /// as the engine saw it.
    fn destinations_of(&self, arguments: &Map<String, Value>) -> BTreeSet<String> {
        let mut named = atoms::destinations(arguments);
        let redactor = &self.checks.redactor;
        if redactor.is_active() {
            let mut redacted = Value::Object(arguments.clone());
            redactor.redact_value(&mut redacted);
            if let Value::Object(redacted) = redacted {
                named.extend(atoms::destinations(&redacted));
            }
        }
        named
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
        let named = std::cell::OnceCell::new();
        if let Some(d) = self.checks.decisions.lookup(
            &id.session_id,
            &id.server,
            tool,
            Some(call_id),
            &|d| atoms::names_destination(named.get_or_init(|| self.destinations_of(arguments)), d),
            now,
        ) {
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

    /// The id of the event [`Session::emit`] made last.
    fn last_event_id(&self) -> String {
        format!("{}-{:08}", self.event_prefix, self.next_event)
    }

    /// Completes an event with the session's fields and queues it, if the protocol
    /// accepts it (an empty request id makes an empty `call_id`, say); otherwise counts
    /// it, and the message itself still passes. Says whether it was queued.
    fn emit(
        &mut self,
        body: EventBody,
        sink_action: Option<SinkAction>,
        await_verdict: bool,
        now: Timestamp,
        report: &mut Report,
    ) -> bool {
        self.next_event += 1;
        let id = &self.identity;
        let mut event = Event {
            event_id: self.last_event_id(),
            time: now,
            agent_id: id.agent_id.clone(),
            session_id: id.session_id.clone(),
            agent_role: id.agent_role.clone(),
            host: id.host.clone(),
            trust_domain: id.trust_domain.clone(),
            sink_action,
            await_verdict,
            trace_id: None,
            span_id: None,
            labels: self.next_labels.drain(..).collect(),
            redacted: Vec::new(),
            body,
        };
        if let Some(mark) = &self.lenient {
            event.labels.insert(
                toolgate_detectors::policy::UNPARSEABLE_LABEL.into(),
                mark.quirks.clone(),
            );
            if mark.refused {
                event.sink_action = Some(SinkAction {
                    action: SinkActionKind::Blocked,
                    rule: Some("sink.unparseable".into()),
                    reason: Some(unparseable_text(&mark.quirks)),
                });
            }
        }
        if event.check().is_err() {
            report.invalid_events += 1;
            return false;
        }
        report.events.push(event);
        true
    }
}

/// The name and arguments of a `tools/call`'s params.
pub(crate) fn call_parts(params: Option<&Map<String, Value>>) -> (String, Map<String, Value>) {
    let tool = params
        .and_then(|p| p.get("name"))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let arguments = params
        .and_then(|p| p.get("arguments"))
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    (tool, arguments)
}

/// Parses a line; a line that is not JSON even to a lenient peer is counted and passed
/// on as it came (`forward` says which way), for the peer to answer.
fn parse_or_pass(
    line: &[u8],
    report: &mut Report,
    out: &mut Vec<Outbound>,
    forward: fn(Vec<u8>) -> Outbound,
) -> Option<jsonrpc::Decoded> {
    match jsonrpc::parse(line) {
        Ok(p) => Some(p),
        Err(_) => {
            report.not_json += 1;
            out.push(forward(line.to_vec()));
            None
        }
    }
}

/// Redacts an event the session queued: off the path of the MCP messages, once.
pub fn finish_event(mut event: Event, redactor: &Redactor) -> Event {
    redactor.redact_event(&mut event);
    event
}

/// The first secret in a call's arguments: in values, in object keys, and in long
/// numbers (a card number sent as a JSON number), as the redactor sees them.
fn first_secret(arguments: &Map<String, Value>) -> Option<&'static str> {
    fn text(s: &str) -> Option<&'static str> {
        scan(s).first().map(|m| m.kind.as_str())
    }
    fn map(m: &Map<String, Value>) -> Option<&'static str> {
        m.iter().find_map(|(k, v)| text(k).or_else(|| walk(v)))
    }
    fn walk(v: &Value) -> Option<&'static str> {
        match v {
            Value::String(s) => text(s),
            Value::Number(n) if n.is_u64() => text(&n.to_string()),
            Value::Array(items) => items.iter().find_map(walk),
            Value::Object(m) => map(m),
            _ => None,
        }
    }
    map(arguments)
}

pub(crate) fn encode(value: &Value) -> Vec<u8> {
    value.to_string().into_bytes()
}

#[cfg(test)]
mod tests;
