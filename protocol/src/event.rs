//! `toolgate.event.v1`: one tool definition list, tool call, tool result or user
//! message, as a sink saw it. See DESIGN.md, "Wire contract: events".

use std::collections::BTreeMap;

use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::decode::{Fields, parse_json};
use crate::error::DecodeError;
use crate::time::Timestamp;

/// The schema tag every event carries.
pub const EVENT_SCHEMA: &str = "toolgate.event.v1";

/// Default for `[sink] max_message_bytes`: the largest JSON-RPC message a sink
/// inspects (16 MiB).
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 16 << 20;

/// Room for the event around a message: identity, labels, times (64 KiB).
pub const EVENT_ENVELOPE_BYTES: usize = 64 << 10;

/// Default size limit for one encoded event: whatever a sink with the default
/// `max_message_bytes` produces, so the engine never dead-letters as too large an
/// event a sink made (issue 22: it took 1 MiB while sinks made up to 16).
pub const DEFAULT_MAX_EVENT_BYTES: usize = DEFAULT_MAX_MESSAGE_BYTES + EVENT_ENVELOPE_BYTES;

/// The label on the event of a message too large for a sink to inspect whole
/// (`"true"`): its body holds the inspected head and tail (issue 22).
pub const TRUNCATED_LABEL: &str = "toolgate.truncated";
/// The truncated message's size in bytes, as a label.
pub const ORIGINAL_BYTES_LABEL: &str = "toolgate.original_bytes";
/// The truncated message's SHA-256 (hex), as a label.
pub const ORIGINAL_SHA256_LABEL: &str = "toolgate.original_sha256";

/// Which of the four event shapes this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A server's answer to `tools/list`.
    ToolList,
    /// A `tools/call` request.
    ToolCall,
    /// The result of a `tools/call`.
    ToolResult,
    /// The user's own instruction to the agent.
    UserMessage,
}

impl EventKind {
    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::ToolList => "tool_list",
            EventKind::ToolCall => "tool_call",
            EventKind::ToolResult => "tool_result",
            EventKind::UserMessage => "user_message",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "tool_list" => EventKind::ToolList,
            "tool_call" => EventKind::ToolCall,
            "tool_result" => EventKind::ToolResult,
            "user_message" => EventKind::UserMessage,
            _ => return None,
        })
    }
}

/// One event. Fields common to every kind sit here; kind-specific ones in [`EventBody`].
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Unique id (ULID recommended).
    pub event_id: String,
    /// When the sink saw it.
    pub time: Timestamp,
    /// Stable identity of one agent instance.
    pub agent_id: String,
    /// One conversation or run of that agent.
    pub session_id: String,
    /// Policy group, e.g. `support-bot`.
    pub agent_role: Option<String>,
    /// Host the agent runs on.
    pub host: Option<String>,
    /// The sink's trust label for the server (engine config may override).
    pub trust_domain: Option<String>,
    /// What the sink did locally.
    pub sink_action: Option<SinkAction>,
    /// The sink holds this call until the engine answers.
    pub await_verdict: bool,
    /// W3C trace id (32 lowercase hex digits).
    pub trace_id: Option<String>,
    /// W3C span id (16 lowercase hex digits).
    pub span_id: Option<String>,
    /// Free-form labels.
    pub labels: BTreeMap<String, String>,
    /// What the component that redacted this event (a sink, the OTLP receiver, the
    /// engine's history) replaced: the kind and field of each value, never the value,
    /// so detection downstream still knows a secret was there.
    pub redacted: Vec<Redacted>,
    /// The kind-specific part.
    pub body: EventBody,
}

/// The kind-specific fields of an event.
#[derive(Debug, Clone, PartialEq)]
pub enum EventBody {
    /// `tool_list`.
    ToolList {
        /// MCP server name as configured at the agent.
        server: String,
        /// The tools the server announced.
        tools: Vec<ToolDefinition>,
    },
    /// `tool_call`.
    ToolCall {
        /// MCP server name as configured at the agent.
        server: String,
        /// Links the call with its result.
        call_id: String,
        /// Tool name.
        tool: String,
        /// The call's arguments as sent.
        arguments: Map<String, Value>,
    },
    /// `tool_result`.
    ToolResult {
        /// MCP server name as configured at the agent.
        server: String,
        /// Links the result with its call.
        call_id: String,
        /// Tool name.
        tool: String,
        /// The MCP `CallToolResult`.
        result: ToolResult,
    },
    /// `user_message`.
    UserMessage {
        /// The user's instruction.
        text: String,
    },
}

/// One value a redactor replaced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Redacted {
    /// The secret's kind (`aws_access_key`, `email`, ...).
    pub kind: String,
    /// Where it was, as a path with keys already redacted (`arguments.to`,
    /// `result.content[0].text`, `labels`, `call_id`, `tools[2].description`).
    pub field: String,
}

/// Most [`Redacted`] entries one event carries; the rest are not listed.
pub const MAX_REDACTED: usize = 64;

/// What a sink did with a call before the engine saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SinkAction {
    /// `allowed`, `blocked` or `held`.
    pub action: SinkActionKind,
    /// The local rule that decided.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// Why, in words.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The sink's local verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SinkActionKind {
    /// Forwarded.
    Allowed,
    /// Refused locally.
    Blocked,
    /// Held for an engine verdict or an approval.
    Held,
}

/// An MCP `Tool` object. Members beyond the ones named here (`_meta`, `icons`, ...)
/// are kept verbatim in `other`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ToolDefinition {
    /// Tool name.
    pub name: String,
    /// Human-readable title.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// The description the model reads.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// JSON Schema of the arguments.
    #[serde(rename = "inputSchema", skip_serializing_if = "Option::is_none")]
    pub input_schema: Option<Map<String, Value>>,
    /// JSON Schema of `structuredContent`.
    #[serde(rename = "outputSchema", skip_serializing_if = "Option::is_none")]
    pub output_schema: Option<Map<String, Value>>,
    /// MCP tool annotations (hints).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub annotations: Option<Map<String, Value>>,
    /// Any other members, unchanged.
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// An MCP `CallToolResult`. Members beyond the ones named here are kept in `other`.
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct ToolResult {
    /// Content blocks; each is an object with a string `type`.
    pub content: Vec<Value>,
    /// Structured result, if the tool declares an output schema.
    #[serde(rename = "structuredContent", skip_serializing_if = "Option::is_none")]
    pub structured_content: Option<Map<String, Value>>,
    /// The tool reported an error.
    #[serde(rename = "isError", skip_serializing_if = "Option::is_none")]
    pub is_error: Option<bool>,
    /// Any other members, unchanged.
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

impl ToolDefinition {
    /// Decodes one MCP `Tool` object as an event's `tools` entry; `path` names it in
    /// errors (`tools[3]`).
    pub fn from_value(value: Value, path: &str) -> Result<ToolDefinition, DecodeError> {
        decode_tool(value, path)
    }
}

impl ToolResult {
    /// Decodes an MCP `CallToolResult` as an event's `result`: every content block an
    /// object with a string `type`.
    pub fn from_value(value: Value) -> Result<ToolResult, DecodeError> {
        decode_result(value)
    }

    /// A failed result whose one text block is `text` (what a sink answers for a call
    /// it refused).
    pub fn error(text: &str) -> ToolResult {
        ToolResult {
            content: vec![serde_json::json!({"type": "text", "text": text})],
            is_error: Some(true),
            ..ToolResult::default()
        }
    }

    /// The text of every `text` content block, in order.
    pub fn texts(&self) -> impl Iterator<Item = &str> {
        self.content.iter().filter_map(|block| {
            (block.get("type")?.as_str()? == "text")
                .then(|| block.get("text")?.as_str())
                .flatten()
        })
    }
}

impl Event {
    /// Decodes one event with the default size limit.
    pub fn decode(bytes: &[u8]) -> Result<Event, DecodeError> {
        Self::decode_with_limit(bytes, DEFAULT_MAX_EVENT_BYTES)
    }

    /// Decodes one event, rejecting anything over `max_bytes`.
    pub fn decode_with_limit(bytes: &[u8], max_bytes: usize) -> Result<Event, DecodeError> {
        Self::from_value(parse_json(bytes, max_bytes)?)
    }

    /// Validates an already-parsed JSON value as an event.
    pub fn from_value(value: Value) -> Result<Event, DecodeError> {
        let mut f = Fields::new(value, "", "an object")?;
        match f.take("schema") {
            Some(Value::String(s)) if s == EVENT_SCHEMA => {}
            Some(v) => {
                return Err(DecodeError::UnknownSchema {
                    expected: EVENT_SCHEMA,
                    found: crate::error::describe(&v),
                });
            }
            None => return Err(f.missing("schema", &format!("{EVENT_SCHEMA:?}"))),
        }
        let kind_expected =
            "one of \"tool_list\", \"tool_call\", \"tool_result\", \"user_message\"";
        let kind = match f.take("kind") {
            None => return Err(f.missing("kind", kind_expected)),
            Some(Value::String(s)) => match EventKind::parse(&s) {
                Some(k) => k,
                None => return Err(f.invalid("kind", kind_expected, &Value::String(s))),
            },
            Some(v) => return Err(f.wrong_type("kind", kind_expected, &v)),
        };
        let event_id = f.identifier("event_id")?;
        let time = match f.take("time") {
            None => return Err(f.missing("time", "an RFC 3339 UTC timestamp")),
            Some(Value::String(s)) => match Timestamp::parse(&s) {
                Ok(t) => t,
                Err(e) => {
                    let expected = format!(
                        "an RFC 3339 timestamp such as 2025-01-31T12:00:00Z ({})",
                        e.reason()
                    );
                    return Err(f.invalid("time", &expected, &Value::String(s)));
                }
            },
            Some(v) => return Err(f.wrong_type("time", "an RFC 3339 UTC timestamp string", &v)),
        };
        let agent_id = f.identifier("agent_id")?;
        let session_id = f.identifier("session_id")?;
        let agent_role = f.opt_identifier("agent_role")?;
        let host = f.opt_identifier("host")?;
        let trust_domain = f.opt_identifier("trust_domain")?;
        let sink_action = match f.take("sink_action") {
            None => None,
            Some(v) => Some(decode_sink_action(v)?),
        };
        let await_verdict = f.opt_bool("await_verdict")?.unwrap_or(false);
        let trace_id = hex_id(&mut f, "trace_id", 32)?;
        let span_id = hex_id(&mut f, "span_id", 16)?;
        let mut labels = BTreeMap::new();
        if let Some(map) = f.opt_object("labels")? {
            for (k, v) in map {
                match v {
                    Value::String(s) => {
                        labels.insert(k, s);
                    }
                    other => {
                        return Err(f.wrong_type(&format!("labels.{k}"), "a string", &other));
                    }
                }
            }
        }
        let mut redacted = Vec::new();
        for (i, item) in f
            .opt_array("redacted")?
            .unwrap_or_default()
            .into_iter()
            .enumerate()
        {
            let mut r = Fields::new(item, &format!("redacted[{i}]"), "an object")?;
            let kind = r.identifier("kind")?;
            let field = r.identifier("field")?;
            r.finish(|| format!("in redacted[{i}]"))?;
            redacted.push(Redacted { kind, field });
        }
        let body = match kind {
            EventKind::ToolList => {
                let server = f.identifier("server")?;
                let Some(items) = f.opt_array("tools")? else {
                    return Err(f.missing("tools", "an array of MCP Tool objects"));
                };
                let tools = items
                    .into_iter()
                    .enumerate()
                    .map(|(i, t)| decode_tool(t, &format!("tools[{i}]")))
                    .collect::<Result<_, _>>()?;
                EventBody::ToolList { server, tools }
            }
            EventKind::ToolCall => EventBody::ToolCall {
                server: f.identifier("server")?,
                call_id: f.identifier("call_id")?,
                tool: f.identifier("tool")?,
                arguments: match f.opt_object("arguments")? {
                    Some(a) => a,
                    None => return Err(f.missing("arguments", "an object")),
                },
            },
            EventKind::ToolResult => EventBody::ToolResult {
                server: f.identifier("server")?,
                call_id: f.identifier("call_id")?,
                tool: f.identifier("tool")?,
                result: match f.take("result") {
                    Some(v) => decode_result(v)?,
                    None => return Err(f.missing("result", "an MCP CallToolResult object")),
                },
            },
            EventKind::UserMessage => EventBody::UserMessage {
                text: match f.opt_text("text")? {
                    Some(t) => t,
                    None => return Err(f.missing("text", "a string")),
                },
            },
        };
        f.finish(|| format!("on a {} event", kind.as_str()))?;
        Ok(Event {
            event_id,
            time,
            agent_id,
            session_id,
            agent_role,
            host,
            trust_domain,
            sink_action,
            await_verdict,
            trace_id,
            span_id,
            labels,
            redacted,
            body,
        })
    }

    /// Checks an event built in code, not decoded (the sink builds its events from the
    /// MCP messages it parsed), against the rules [`Event::from_value`] applies to its
    /// identifiers, so that a producer never sends an event the engine would
    /// dead-letter. Content (tool definitions, results) is checked where it is built,
    /// by [`ToolDefinition::from_value`] and [`ToolResult::from_value`].
    pub fn check(&self) -> Result<(), DecodeError> {
        fn id(field: &str, value: &str) -> Result<(), DecodeError> {
            if value.is_empty() || value.len() > crate::decode::MAX_IDENTIFIER_BYTES {
                return Err(DecodeError::field_error(
                    field,
                    "a non-empty string of at most 512 bytes",
                    Some(&Value::String(value.to_string())),
                    crate::error::FieldProblem::InvalidValue,
                ));
            }
            Ok(())
        }
        id("event_id", &self.event_id)?;
        id("agent_id", &self.agent_id)?;
        id("session_id", &self.session_id)?;
        for (field, value) in [
            ("agent_role", &self.agent_role),
            ("host", &self.host),
            ("trust_domain", &self.trust_domain),
        ] {
            if let Some(v) = value {
                id(field, v)?;
            }
        }
        if let Some(rule) = self.sink_action.as_ref().and_then(|a| a.rule.as_deref()) {
            id("sink_action.rule", rule)?;
        }
        match &self.body {
            EventBody::ToolList { server, tools } => {
                id("server", server)?;
                for (i, t) in tools.iter().enumerate() {
                    id(&format!("tools[{i}].name"), &t.name)?;
                }
            }
            EventBody::ToolCall {
                server,
                call_id,
                tool,
                ..
            }
            | EventBody::ToolResult {
                server,
                call_id,
                tool,
                ..
            } => {
                id("server", server)?;
                id("call_id", call_id)?;
                id("tool", tool)?;
            }
            EventBody::UserMessage { .. } => {}
        }
        Ok(())
    }

    /// The event's kind.
    pub fn kind(&self) -> EventKind {
        match self.body {
            EventBody::ToolList { .. } => EventKind::ToolList,
            EventBody::ToolCall { .. } => EventKind::ToolCall,
            EventBody::ToolResult { .. } => EventKind::ToolResult,
            EventBody::UserMessage { .. } => EventKind::UserMessage,
        }
    }

    /// The MCP server, for `tool_*` kinds.
    pub fn server(&self) -> Option<&str> {
        match &self.body {
            EventBody::ToolList { server, .. }
            | EventBody::ToolCall { server, .. }
            | EventBody::ToolResult { server, .. } => Some(server),
            EventBody::UserMessage { .. } => None,
        }
    }

    /// The tool name, for calls and results.
    pub fn tool(&self) -> Option<&str> {
        match &self.body {
            EventBody::ToolCall { tool, .. } | EventBody::ToolResult { tool, .. } => Some(tool),
            _ => None,
        }
    }

    /// The call id, for calls and results.
    pub fn call_id(&self) -> Option<&str> {
        match &self.body {
            EventBody::ToolCall { call_id, .. } | EventBody::ToolResult { call_id, .. } => {
                Some(call_id)
            }
            _ => None,
        }
    }

    /// The event as one line of JSON (no trailing newline).
    pub fn to_json(&self) -> String {
        // Serializing owned strings and serde_json values into a String cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The length of [`Event::to_json`], counted without building it: about what the
    /// event holds in memory, so buffers of events are bounded by it.
    pub fn encoded_len(&self) -> usize {
        let mut n = Counting(0);
        let _ = serde_json::to_writer(&mut n, self);
        n.0
    }
}

/// Counts what is written to it.
struct Counting(usize);

impl std::io::Write for Counting {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Serialize for Event {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("schema", EVENT_SCHEMA)?;
        m.serialize_entry("kind", self.kind().as_str())?;
        m.serialize_entry("event_id", &self.event_id)?;
        m.serialize_entry("time", &self.time)?;
        m.serialize_entry("agent_id", &self.agent_id)?;
        m.serialize_entry("session_id", &self.session_id)?;
        if let Some(v) = &self.agent_role {
            m.serialize_entry("agent_role", v)?;
        }
        if let Some(v) = &self.host {
            m.serialize_entry("host", v)?;
        }
        if let Some(v) = self.server() {
            m.serialize_entry("server", v)?;
        }
        if let Some(v) = &self.trust_domain {
            m.serialize_entry("trust_domain", v)?;
        }
        match &self.body {
            EventBody::ToolList { tools, .. } => m.serialize_entry("tools", tools)?,
            EventBody::ToolCall {
                call_id,
                tool,
                arguments,
                ..
            } => {
                m.serialize_entry("call_id", call_id)?;
                m.serialize_entry("tool", tool)?;
                m.serialize_entry("arguments", arguments)?;
            }
            EventBody::ToolResult {
                call_id,
                tool,
                result,
                ..
            } => {
                m.serialize_entry("call_id", call_id)?;
                m.serialize_entry("tool", tool)?;
                m.serialize_entry("result", result)?;
            }
            EventBody::UserMessage { text } => m.serialize_entry("text", text)?,
        }
        if let Some(v) = &self.sink_action {
            m.serialize_entry("sink_action", v)?;
        }
        if self.await_verdict {
            m.serialize_entry("await_verdict", &true)?;
        }
        if let Some(v) = &self.trace_id {
            m.serialize_entry("trace_id", v)?;
        }
        if let Some(v) = &self.span_id {
            m.serialize_entry("span_id", v)?;
        }
        if !self.labels.is_empty() {
            m.serialize_entry("labels", &self.labels)?;
        }
        if !self.redacted.is_empty() {
            m.serialize_entry("redacted", &self.redacted)?;
        }
        m.end()
    }
}

fn hex_id(f: &mut Fields, key: &str, len: usize) -> Result<Option<String>, DecodeError> {
    let expected = format!("{len} lowercase hex digits, not all zero");
    match f.take(key) {
        None => Ok(None),
        Some(Value::String(s))
            if s.len() == len
                && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
                && s.bytes().any(|b| b != b'0') =>
        {
            Ok(Some(s))
        }
        Some(v @ Value::String(_)) => Err(f.invalid(key, &expected, &v)),
        Some(v) => Err(f.wrong_type(key, &expected, &v)),
    }
}

fn decode_sink_action(v: Value) -> Result<SinkAction, DecodeError> {
    let mut f = Fields::new(v, "sink_action", "an object")?;
    let expected = "one of \"allowed\", \"blocked\", \"held\"";
    let action = match f.take("action") {
        None => return Err(f.missing("action", expected)),
        Some(Value::String(s)) => match s.as_str() {
            "allowed" => SinkActionKind::Allowed,
            "blocked" => SinkActionKind::Blocked,
            "held" => SinkActionKind::Held,
            _ => return Err(f.invalid("action", expected, &Value::String(s))),
        },
        Some(v) => return Err(f.wrong_type("action", expected, &v)),
    };
    let rule = f.opt_identifier("rule")?;
    let reason = f.opt_text("reason")?;
    f.finish(|| "in sink_action".into())?;
    Ok(SinkAction {
        action,
        rule,
        reason,
    })
}

fn decode_tool(v: Value, path: &str) -> Result<ToolDefinition, DecodeError> {
    let mut f = Fields::new(v, path, "an MCP Tool object")?;
    Ok(ToolDefinition {
        name: f.identifier("name")?,
        title: f.opt_text("title")?,
        description: f.opt_text("description")?,
        input_schema: f.opt_object("inputSchema")?,
        output_schema: f.opt_object("outputSchema")?,
        annotations: f.opt_object("annotations")?,
        other: f.into_rest(),
    })
}

fn decode_result(v: Value) -> Result<ToolResult, DecodeError> {
    let mut f = Fields::new(v, "result", "an MCP CallToolResult object")?;
    let content = f.opt_array("content")?.unwrap_or_default();
    for (i, block) in content.iter().enumerate() {
        let path = format!("content[{i}]");
        match block {
            Value::Object(o) => match o.get("type") {
                Some(Value::String(_)) => {}
                Some(t) => return Err(f.wrong_type(&format!("{path}.type"), "a string", t)),
                None => {
                    return Err(f.missing(&format!("{path}.type"), "a content type string"));
                }
            },
            other => return Err(f.wrong_type(&path, "a content block object", other)),
        }
    }
    Ok(ToolResult {
        content,
        structured_content: f.opt_object("structuredContent")?,
        is_error: f.opt_bool("isError")?,
        other: f.into_rest(),
    })
}
