//! The `policy` detector: which agent roles may call which servers and tools, limits on
//! their arguments, tools that need a person's approval, and the limits each tool
//! declares in its own `inputSchema`. Each rule is `monitor` (alert) or `enforce`
//! (block). The compiled [`Policy`] is what the sink checks before forwarding a call;
//! the engine runs the same check on every call it sees.
//!
//! Settings (`[detectors.policy]`): `default`, `default_mode`, `tool_schemas`,
//! `max_schemas`, `[[detectors.policy.rules]]` (see [`RuleConfig`]).

pub mod rules;
pub mod schema;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use toolgate_protocol::config::Config;
use toolgate_protocol::event::{
    EventBody, ORIGINAL_BYTES_LABEL, ORIGINAL_SHA256_LABEL, TRUNCATED_LABEL,
};
use toolgate_protocol::{DetectorKind, Event, Severity};

use crate::factory::{BuildError, Configured};
use crate::mode::Mode;
use crate::{Detector, FindingDraft, StateError};
pub use rules::{
    ArgumentConstraintConfig, CallView, Effect, Policy, Problem, Rule, RuleConfig, Violation,
};
pub use schema::{Schema, SchemaProblem};

/// The detector's name under `[detectors]`.
pub const NAME: &str = "policy";

/// How calls are checked against the tool's own `inputSchema`.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum SchemaCheck {
    /// Not checked.
    Off,
    /// Violations are alerts.
    #[default]
    Monitor,
    /// Violations ask for a block.
    Enforce,
}

/// `[detectors.policy]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicySettings {
    /// Effect for calls that no `allow`/`deny`/`require_approval` rule matches.
    #[serde(default)]
    pub default: Effect,
    /// Mode of the default effect when it is `deny` or `require_approval`.
    #[serde(default)]
    pub default_mode: Mode,
    /// Check each call's arguments against the `inputSchema` its server announced in
    /// the latest `tool_list`: `off`, `monitor` or `enforce`.
    #[serde(default)]
    pub tool_schemas: SchemaCheck,
    /// Most tool schemas remembered (per server and tool); the oldest are forgotten.
    #[serde(default = "default_max_schemas")]
    pub max_schemas: usize,
    /// Rules, read in order (see [`RuleConfig`]).
    #[serde(default)]
    pub rules: Vec<RuleConfig>,
    /// Calls their sink refused for being too large to inspect whole (the event
    /// carries their start and end): `monitor` reports each (`oversized_arguments`,
    /// high); `enforce` also asks for a block (scoped by `[[engine.blocks]]`).
    #[serde(default = "monitor")]
    pub oversized_arguments: Mode,
}

impl Default for PolicySettings {
    fn default() -> Self {
        PolicySettings {
            default: Effect::default(),
            default_mode: Mode::default(),
            tool_schemas: SchemaCheck::default(),
            max_schemas: default_max_schemas(),
            rules: Vec::new(),
            oversized_arguments: monitor(),
        }
    }
}

fn default_max_schemas() -> usize {
    10_000
}

fn monitor() -> Mode {
    Mode::Monitor
}

/// Compiles `[detectors.policy]` (for the sink, which checks calls without running the
/// detector).
pub fn compile(settings: &PolicySettings) -> Result<Policy, BuildError> {
    Policy::compile(&settings.rules, settings.default, settings.default_mode).map_err(|e| {
        BuildError::Settings {
            name: NAME.into(),
            message: e.0,
        }
    })
}

impl Configured for PolicyDetector {
    const NAME: &'static str = NAME;
    const KIND: DetectorKind = DetectorKind::Policy;
    const SUMMARY: &'static str =
        "allow/deny by role, server and tool; argument limits; approvals; tool schemas";
    type Settings = PolicySettings;

    fn build(_config: &Config, s: PolicySettings) -> Result<Self, BuildError> {
        if s.max_schemas == 0 {
            return Err(BuildError::Settings {
                name: NAME.into(),
                message: "`max_schemas` must be at least 1".into(),
            });
        }
        Ok(PolicyDetector {
            policy: compile(&s)?,
            tool_schemas: s.tool_schemas,
            oversized_arguments: s.oversized_arguments,
            max_schemas: s.max_schemas,
            schemas: BTreeMap::new(),
            order: BTreeMap::new(),
            next_seq: 0,
        })
    }
}

struct KnownSchema {
    seq: u64,
    raw: Map<String, Value>,
    compiled: Schema,
}

/// The detector. State: the latest schema of each tool, bounded by `max_schemas`.
pub struct PolicyDetector {
    policy: Policy,
    tool_schemas: SchemaCheck,
    oversized_arguments: Mode,
    max_schemas: usize,
    schemas: BTreeMap<(String, String), KnownSchema>,
    order: BTreeMap<u64, (String, String)>,
    next_seq: u64,
}

#[derive(Serialize, Deserialize)]
struct SchemaState {
    server: String,
    tool: String,
    schema: Map<String, Value>,
}

impl PolicyDetector {
    fn remember(&mut self, server: &str, tool: &str, raw: &Map<String, Value>) {
        let key = (server.to_string(), tool.to_string());
        if let Some(known) = self.schemas.get(&key)
            && known.raw == *raw
        {
            return;
        }
        if let Some(old) = self.schemas.remove(&key) {
            self.order.remove(&old.seq);
        }
        while self.schemas.len() >= self.max_schemas {
            let Some((_, oldest)) = self.order.pop_first() else {
                break;
            };
            self.schemas.remove(&oldest);
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.order.insert(seq, key.clone());
        self.schemas.insert(
            key,
            KnownSchema {
                seq,
                raw: raw.clone(),
                compiled: Schema::compile(raw),
            },
        );
    }

    fn schema_draft(&self, event: &Event, call: &CallView<'_>) -> Option<FindingDraft> {
        if self.tool_schemas == SchemaCheck::Off {
            return None;
        }
        let known = self
            .schemas
            .get(&(call.server.to_string(), call.tool.to_string()))?;
        let problems = known.compiled.check_arguments(call.arguments);
        if problems.is_empty() {
            return None;
        }
        let listed: Vec<Value> = problems
            .iter()
            .map(|p| json!({"path": p.path, "problem": p.problem}))
            .collect();
        let mut draft = FindingDraft::about(DetectorKind::Policy, "tool_schema", event)
            .describe(
                format!("Call to {:?} on server {:?} breaks the tool's own schema", call.tool, call.server),
                format!(
                    "{} ({} problem(s)). Arguments outside what a tool declares are how oversized exfiltration payloads and injected parameters look.",
                    problems[0].path.clone() + ": " + &problems[0].problem,
                    problems.len()
                ),
            )
            .rate(Severity::Medium, 45, 0.8)
            .evidence(json!({
                "violation": "schema",
                "mode": if self.tool_schemas == SchemaCheck::Enforce { "enforce" } else { "monitor" },
                "problems": listed,
            }))
            .tags(["owasp-llm:LLM06"]);
        if self.tool_schemas == SchemaCheck::Enforce {
            draft = draft.block();
        }
        Some(draft)
    }
}

/// One finding per rule that found problems with the call.
fn policy_drafts(
    event: &Event,
    call: &CallView<'_>,
    violations: &[Violation<'_>],
    default_mode: Mode,
) -> Vec<FindingDraft> {
    let mut by_rule: Vec<(&str, Vec<&Violation<'_>>)> = Vec::new();
    for v in violations {
        match by_rule.iter_mut().find(|(id, _)| *id == v.rule_id()) {
            Some((_, list)) => list.push(v),
            None => by_rule.push((v.rule_id(), vec![v])),
        }
    }
    by_rule
        .into_iter()
        .map(|(rule_id, list)| {
            let rule = list[0].rule;
            let mode = rule.map_or(default_mode, |r| r.mode);
            let reason = rule.map_or_else(
                || "no policy rule allows this call, and the policy denies by default".to_string(),
                |r| r.reason.clone(),
            );
            let access = list.iter().find_map(|v| match v.problem {
                Problem::Denied => Some("denied"),
                Problem::ApprovalRequired => Some("approval_required"),
                Problem::Argument { .. } => None,
            });
            let arguments: Vec<Value> = list
                .iter()
                .filter_map(|v| match &v.problem {
                    Problem::Argument { path, problem } => {
                        Some(json!({"path": path, "problem": problem}))
                    }
                    _ => None,
                })
                .collect();
            let (title, severity, risk) = match access {
                Some("denied") => (
                    format!("Policy denies {:?} on server {:?}", call.tool, call.server),
                    Severity::High,
                    75,
                ),
                Some(_) => (
                    format!(
                        "Call to {:?} on server {:?} needs approval",
                        call.tool, call.server
                    ),
                    Severity::Medium,
                    50,
                ),
                None => (
                    format!(
                        "Arguments of {:?} on server {:?} break policy",
                        call.tool, call.server
                    ),
                    Severity::Medium,
                    60,
                ),
            };
            let mut draft = FindingDraft::about(DetectorKind::Policy, rule_id, event)
                .describe(
                    title,
                    format!("Rule {rule_id:?} ({}): {reason}.", mode.as_str()),
                )
                .rate(severity, risk, 1.0)
                .evidence(json!({
                    "violation": access.unwrap_or("arguments"),
                    "rule": rule_id,
                    "mode": mode.as_str(),
                    "reason": reason,
                    "role": call.role,
                    "arguments": arguments,
                    "sink_action": event.sink_action,
                }))
                .tags(["owasp-asi:ASI02"]);
            if mode == Mode::Enforce {
                draft = draft.block();
            }
            draft
        })
        .collect()
}

/// The label a sink puts on the events of a message serde_json refused but an MCP peer
/// reads (a parser differential): the liberties its lenient decoder took.
pub const UNPARSEABLE_LABEL: &str = "toolgate.unparseable";

/// `unparseable_message`: a message only a lenient decoder reads (lone surrogates, huge
/// numbers, invalid UTF-8, deep nesting). Real clients and servers do not send these;
/// they are how checks that rely on a strict parser get skipped.
fn unparseable_draft(event: &Event) -> Option<FindingDraft> {
    let quirks = event.labels.get(UNPARSEABLE_LABEL)?;
    let refused = event
        .sink_action
        .as_ref()
        .is_some_and(|a| a.rule.as_deref() == Some("sink.unparseable"));
    let what = match &event.body {
        EventBody::ToolCall { tool, .. } => format!("a call to {tool:?}"),
        EventBody::ToolResult { tool, .. } => format!("the result of {tool:?}"),
        EventBody::ToolList { .. } => "a tool listing".into(),
        EventBody::UserMessage { .. } => "a user message".into(),
    };
    Some(
        FindingDraft::about(DetectorKind::Policy, "unparseable_message", event)
            .describe(
                format!("Malformed JSON-RPC in {what}"),
                format!(
                    "The sink read {what} only as leniently as an MCP peer would ({quirks}); \
                     strict parsers refuse such messages, so they are a way around checks. \
                     The sink {}.",
                    if refused {
                        "refused it ([sink] unparseable = \"refuse\")"
                    } else {
                        "inspected the lenient reading and passed it on ([sink] unparseable = \"forward\")"
                    }
                ),
            )
            .rate(Severity::High, 70, 0.9)
            .evidence(json!({"quirks": quirks, "refused_at_sink": refused}))
            .tags(["owasp-asi:ASI02", "atlas:AML.T0015"]),
    )
}

/// `oversized_arguments`: a call whose message was too large for its sink to inspect
/// (issue 22): padding is a way past every check, and no real tool call needs
/// megabytes of arguments. The event carries the inspected head and tail; the sink
/// refused the call. Blocks in `enforce` mode, like the policy's own rules.
fn oversized_draft(event: &Event, mode: Mode) -> Option<FindingDraft> {
    let EventBody::ToolCall { tool, .. } = &event.body else {
        return None;
    };
    if event.labels.get(TRUNCATED_LABEL).map(String::as_str) != Some("true") {
        return None;
    }
    let size = event
        .labels
        .get(ORIGINAL_BYTES_LABEL)
        .map_or("?", String::as_str);
    let mut draft = FindingDraft::about(DetectorKind::Policy, "oversized_arguments", event)
        .describe(
            format!("Oversized arguments in a call to {tool:?}"),
            format!(
                "The call's message was {size} bytes, more than its sink inspects whole; \
                 only its start and end were read. Padding a payload past the limit is a \
                 way around every check."
            ),
        )
        .rate(Severity::High, 70, 0.8)
        .evidence(json!({
            "original_bytes": size,
            "original_sha256": event.labels.get(ORIGINAL_SHA256_LABEL),
            "sink_action": event.sink_action,
        }))
        .tags(["owasp-asi:ASI02"]);
    if mode == Mode::Enforce {
        draft = draft.block();
    }
    Some(draft)
}

impl Detector for PolicyDetector {
    fn name(&self) -> &'static str {
        NAME
    }

    fn observe(&mut self, event: &Event, out: &mut Vec<FindingDraft>) {
        out.extend(unparseable_draft(event));
        out.extend(oversized_draft(event, self.oversized_arguments));
        match &event.body {
            EventBody::ToolList { server, tools } if self.tool_schemas != SchemaCheck::Off => {
                for tool in tools {
                    if let Some(schema) = &tool.input_schema {
                        self.remember(server, &tool.name, schema);
                    }
                }
            }
            EventBody::ToolCall {
                server,
                tool,
                arguments,
                ..
            } => {
                let call = CallView {
                    agent_id: &event.agent_id,
                    role: event.agent_role.as_deref(),
                    server,
                    tool,
                    arguments,
                };
                let mut violations = Vec::new();
                self.policy.check(&call, &mut violations);
                out.extend(policy_drafts(
                    event,
                    &call,
                    &violations,
                    self.policy.default_mode(),
                ));
                out.extend(self.schema_draft(event, &call));
            }
            _ => {}
        }
    }

    fn snapshot(&self) -> Result<Vec<u8>, StateError> {
        let mut entries: Vec<(&u64, &(String, String))> = self.order.iter().collect();
        entries.sort();
        let state: Vec<SchemaState> = entries
            .into_iter()
            .filter_map(|(_, key)| {
                self.schemas.get(key).map(|k| SchemaState {
                    server: key.0.clone(),
                    tool: key.1.clone(),
                    schema: k.raw.clone(),
                })
            })
            .collect();
        serde_json::to_vec(&state).map_err(|e| StateError::Encode {
            what: NAME.into(),
            message: e.to_string(),
        })
    }

    fn restore(&mut self, snapshot: &[u8]) -> Result<(), StateError> {
        let state: Vec<SchemaState> = if snapshot.is_empty() {
            Vec::new()
        } else {
            serde_json::from_slice(snapshot).map_err(|e| StateError::Decode {
                what: NAME.into(),
                message: e.to_string(),
            })?
        };
        self.schemas.clear();
        self.order.clear();
        self.next_seq = 0;
        for s in state {
            self.remember(&s.server, &s.tool, &s.schema);
        }
        Ok(())
    }
}
