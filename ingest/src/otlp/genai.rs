//! Spans to events, by the OpenTelemetry GenAI and MCP semantic conventions.
//!
//! A span is a tool execution when `gen_ai.operation.name` is `execute_tool` or
//! `mcp.method.name` is `tools/call`; it becomes a `tool_call` event at its start and a
//! `tool_result` event at its end. Every other span is ignored (exporters send all of
//! an agent's spans). Each field comes from the first attribute present, on the span
//! and then on its resource:
//!
//! | event field | attributes |
//! | --- | --- |
//! | `tool` | `gen_ai.tool.name`, else the span name after `execute_tool ` / `tools/call ` |
//! | `agent_id` | `gen_ai.agent.id`, `service.instance.id`, `service.name` |
//! | `session_id` | `gen_ai.conversation.id`, `mcp.session.id`, else the trace id |
//! | `server` | `toolgate.server`, `mcp.server.name`, `server.address`, else the configured default |
//! | `call_id` | `gen_ai.tool.call.id`, `jsonrpc.request.id`, else the span id |
//! | `arguments` | `gen_ai.tool.call.arguments` (a JSON object, or a map); `{}` when not recorded |
//! | result `content` | `gen_ai.tool.call.result` as text; `isError` from the span status |
//! | `agent_role`, `host`, `trust_domain` | `gen_ai.agent.name`, `host.name`, `toolgate.trust_domain` |
//!
//! Event ids derive from the trace and span ids, so a span exported twice makes the
//! same events. A tool span without a tool name or an agent identity, or whose events
//! do not validate, is rejected with the reason.

use base64::Engine as _;
use serde_json::{Map, Value, json};
use toolgate_protocol::fingerprint::hex;
use toolgate_protocol::{Event, Timestamp};

use super::{AnyValue, Attributes, ResourceSpans, Span};

/// How spans are mapped.
#[derive(Debug, Clone)]
pub struct MappingOptions {
    /// The server of a tool span that names none.
    pub default_server: String,
}

/// A tool span that could not become events.
#[derive(Debug, Clone, PartialEq)]
pub struct RejectedSpan {
    /// Hex trace id.
    pub trace_id: String,
    /// Hex span id.
    pub span_id: String,
    /// The span's name.
    pub name: String,
    /// Why, naming the attribute or field.
    pub error: String,
}

/// What a request's spans became.
#[derive(Debug, Default)]
pub struct Converted {
    /// Events, call before result for each span.
    pub events: Vec<Event>,
    /// Tool spans that could not be mapped.
    pub rejected: Vec<RejectedSpan>,
    /// Spans that are not tool executions.
    pub ignored: u64,
}

/// Maps every span of a request.
pub fn events_from_spans(resources: &[ResourceSpans], options: &MappingOptions) -> Converted {
    let mut out = Converted::default();
    for rs in resources {
        for span in &rs.spans {
            let lookup = Lookup {
                span: &span.attributes,
                resource: &rs.resource,
            };
            if !is_tool_execution(&lookup) {
                out.ignored += 1;
                continue;
            }
            match tool_events(span, &lookup, options) {
                Ok([call, result]) => {
                    out.events.push(call);
                    out.events.push(result);
                }
                Err(error) => out.rejected.push(RejectedSpan {
                    trace_id: hex(&span.trace_id),
                    span_id: hex(&span.span_id),
                    name: span.name.clone(),
                    error,
                }),
            }
        }
    }
    out
}

struct Lookup<'a> {
    span: &'a Attributes,
    resource: &'a Attributes,
}

impl Lookup<'_> {
    fn get(&self, key: &str) -> Option<&AnyValue> {
        self.span
            .iter()
            .chain(self.resource.iter())
            .find(|(k, v)| k == key && *v != AnyValue::Empty)
            .map(|(_, v)| v)
    }

    /// The first of `keys` present, as text.
    fn text(&self, keys: &[&str]) -> Option<String> {
        keys.iter().find_map(|k| match self.get(k)? {
            AnyValue::String(s) if !s.is_empty() => Some(s.clone()),
            AnyValue::Int(i) => Some(i.to_string()),
            _ => None,
        })
    }
}

fn is_tool_execution(l: &Lookup) -> bool {
    matches!(l.span.iter().find(|(k, _)| k == "gen_ai.operation.name"), Some((_, AnyValue::String(s))) if s == "execute_tool")
        || matches!(l.span.iter().find(|(k, _)| k == "mcp.method.name"), Some((_, AnyValue::String(s))) if s == "tools/call")
}

/// An attribute value as JSON (bytes as base64, non-finite doubles as null).
pub fn to_json(v: &AnyValue) -> Value {
    match v {
        AnyValue::String(s) => json!(s),
        AnyValue::Bool(b) => json!(b),
        AnyValue::Int(i) => json!(i),
        AnyValue::Double(d) => serde_json::Number::from_f64(*d).map_or(Value::Null, Value::Number),
        AnyValue::Array(items) => Value::Array(items.iter().map(to_json).collect()),
        AnyValue::KvList(pairs) => {
            Value::Object(pairs.iter().map(|(k, v)| (k.clone(), to_json(v))).collect())
        }
        AnyValue::Bytes(b) => json!(base64::engine::general_purpose::STANDARD.encode(b)),
        AnyValue::Empty => Value::Null,
    }
}

fn arguments(l: &Lookup) -> Map<String, Value> {
    match l.get("gen_ai.tool.call.arguments") {
        None => Map::new(),
        Some(AnyValue::String(s)) => match serde_json::from_str::<Value>(s) {
            Ok(Value::Object(o)) => o,
            // Arguments recorded as something else are kept whole, under one name.
            Ok(other) => Map::from_iter([("arguments".to_string(), other)]),
            Err(_) => Map::from_iter([("arguments".to_string(), json!(s))]),
        },
        Some(other) => match to_json(other) {
            Value::Object(o) => o,
            v => Map::from_iter([("arguments".to_string(), v)]),
        },
    }
}

fn time(nanos: u64, field: &str) -> Result<Timestamp, String> {
    i64::try_from(nanos)
        .map(Timestamp::from_unix_nanos)
        .map_err(|_| format!("{field}: {nanos} is past the year 2262"))
}

fn tool_events(span: &Span, l: &Lookup, options: &MappingOptions) -> Result<[Event; 2], String> {
    if span.trace_id.len() != 16 {
        return Err(format!(
            "trace_id: {} bytes, expected 16",
            span.trace_id.len()
        ));
    }
    if span.span_id.len() != 8 {
        return Err(format!("span_id: {} bytes, expected 8", span.span_id.len()));
    }
    let trace_id = hex(&span.trace_id);
    let span_id = hex(&span.span_id);
    let tool = l
        .text(&["gen_ai.tool.name"])
        .or_else(|| {
            ["execute_tool ", "tools/call "]
                .iter()
                .find_map(|p| span.name.strip_prefix(p))
                .map(|t| t.trim().to_string())
                .filter(|t| !t.is_empty())
        })
        .ok_or("gen_ai.tool.name: missing, and the span name names no tool")?;
    let agent_id = l
        .text(&["gen_ai.agent.id", "service.instance.id", "service.name"])
        .ok_or(
            "gen_ai.agent.id: missing, and the resource has no service.instance.id or service.name",
        )?;
    let session_id = l
        .text(&["gen_ai.conversation.id", "mcp.session.id"])
        .unwrap_or_else(|| trace_id.clone());
    let server = l
        .text(&["toolgate.server", "mcp.server.name", "server.address"])
        .unwrap_or_else(|| options.default_server.clone());
    let call_id = l
        .text(&["gen_ai.tool.call.id", "jsonrpc.request.id"])
        .unwrap_or_else(|| span_id.clone());
    let start = time(span.start_time_unix_nano, "start_time_unix_nano")?;
    let end = time(span.end_time_unix_nano, "end_time_unix_nano")?.max(start);

    let mut labels = Map::new();
    labels.insert("source".into(), json!("otlp"));
    if let Some(service) = l.text(&["service.name"]) {
        labels.insert("service.name".into(), json!(service));
    }
    if let Some(provider) = l.text(&["gen_ai.provider.name", "gen_ai.system"]) {
        labels.insert("gen_ai.provider.name".into(), json!(provider));
    }
    let mut common = json!({
        "schema": "toolgate.event.v1",
        "agent_id": agent_id,
        "session_id": session_id,
        "server": server,
        "call_id": call_id,
        "tool": tool,
        "trace_id": trace_id,
        "span_id": span_id,
        "labels": labels,
    });
    for (field, keys) in [
        ("agent_role", &["gen_ai.agent.name"][..]),
        ("host", &["host.name"][..]),
        ("trust_domain", &["toolgate.trust_domain"][..]),
    ] {
        if let Some(v) = l.text(keys) {
            common[field] = json!(v);
        }
    }

    let mut call = common.clone();
    call["kind"] = json!("tool_call");
    call["event_id"] = json!(format!("otlp-{trace_id}-{span_id}-call"));
    call["time"] = json!(start.to_string());
    call["arguments"] = Value::Object(arguments(l));

    let failed = span.status_code == 2;
    let text = match l.get("gen_ai.tool.call.result") {
        Some(AnyValue::String(s)) => Some(s.clone()),
        Some(other) => Some(to_json(other).to_string()),
        None if failed && !span.status_message.is_empty() => Some(span.status_message.clone()),
        None => None,
    };
    let content: Vec<Value> = text
        .into_iter()
        .map(|t| json!({"type": "text", "text": t}))
        .collect();
    let mut result = common;
    result["kind"] = json!("tool_result");
    result["event_id"] = json!(format!("otlp-{trace_id}-{span_id}-result"));
    result["time"] = json!(end.to_string());
    result["result"] = json!({"content": content, "isError": failed});

    let call = Event::from_value(call).map_err(|e| format!("the tool_call event: {e}"))?;
    let result = Event::from_value(result).map_err(|e| format!("the tool_result event: {e}"))?;
    Ok([call, result])
}

#[cfg(test)]
mod tests {
    use super::*;
    use toolgate_protocol::EventBody;

    fn s(v: &str) -> AnyValue {
        AnyValue::String(v.into())
    }

    fn tool_span(attributes: Vec<(&str, AnyValue)>) -> Span {
        Span {
            trace_id: (1..=16).collect(),
            span_id: (1..=8).collect(),
            name: "execute_tool send_email".into(),
            start_time_unix_nano: 1_740_823_200_000_000_000,
            end_time_unix_nano: 1_740_823_200_250_000_000,
            attributes: attributes
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
            status_code: 0,
            status_message: String::new(),
        }
    }

    fn options() -> MappingOptions {
        MappingOptions {
            default_server: "otel".into(),
        }
    }

    #[test]
    fn an_execute_tool_span_becomes_a_call_and_its_result() {
        let rs = ResourceSpans {
            resource: vec![
                ("service.name".into(), s("support-agent")),
                ("host.name".into(), s("gw-1")),
            ],
            spans: vec![
                tool_span(vec![
                    ("gen_ai.operation.name", s("execute_tool")),
                    ("gen_ai.tool.name", s("send_email")),
                    ("gen_ai.tool.call.id", s("call_7")),
                    ("gen_ai.conversation.id", s("conv-1")),
                    ("server.address", s("mail.internal")),
                    (
                        "gen_ai.tool.call.arguments",
                        s(r#"{"to":"a@b.c","body":"hi"}"#),
                    ),
                    ("gen_ai.tool.call.result", s("sent")),
                ]),
                Span {
                    name: "chat gpt-4o".into(),
                    attributes: vec![("gen_ai.operation.name".into(), s("chat"))],
                    ..tool_span(vec![])
                },
            ],
        };
        let out = events_from_spans(&[rs], &options());
        assert_eq!(out.ignored, 1);
        assert!(out.rejected.is_empty(), "{:?}", out.rejected);
        let [call, result] = &out.events[..] else {
            panic!("{:?}", out.events)
        };
        assert_eq!(call.agent_id, "support-agent");
        assert_eq!(call.session_id, "conv-1");
        assert_eq!(call.host.as_deref(), Some("gw-1"));
        assert_eq!(
            call.event_id,
            "otlp-0102030405060708090a0b0c0d0e0f10-0102030405060708-call"
        );
        assert_eq!(call.time.to_string(), "2025-03-01T10:00:00Z");
        match &call.body {
            EventBody::ToolCall {
                server,
                call_id,
                tool,
                arguments,
            } => {
                assert_eq!(
                    (server.as_str(), call_id.as_str(), tool.as_str()),
                    ("mail.internal", "call_7", "send_email")
                );
                assert_eq!(arguments["to"], "a@b.c");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(result.time.to_string(), "2025-03-01T10:00:00.25Z");
        let json: Value = serde_json::from_str(&result.to_json()).unwrap();
        assert_eq!(json["result"]["content"][0]["text"], "sent");
        assert_eq!(json["result"]["isError"], false);
        assert_eq!(json["labels"]["source"], "otlp");
    }

    #[test]
    fn mcp_client_spans_and_fallbacks() {
        let rs = ResourceSpans {
            resource: vec![("service.instance.id".into(), s("agent-9"))],
            spans: vec![Span {
                name: "tools/call read_file".into(),
                status_code: 2,
                status_message: "ENOENT".into(),
                ..tool_span(vec![
                    ("mcp.method.name", s("tools/call")),
                    ("mcp.session.id", s("mcp-s")),
                    ("jsonrpc.request.id", AnyValue::Int(4)),
                    (
                        "gen_ai.tool.call.arguments",
                        AnyValue::KvList(vec![("path".into(), s("/etc/passwd"))]),
                    ),
                ])
            }],
        };
        let out = events_from_spans(&[rs], &options());
        let call: Value = serde_json::from_str(&out.events[0].to_json()).unwrap();
        assert_eq!(call["tool"], "read_file");
        assert_eq!(call["server"], "otel");
        assert_eq!(call["call_id"], "4");
        assert_eq!(call["session_id"], "mcp-s");
        assert_eq!(call["arguments"]["path"], "/etc/passwd");
        let result: Value = serde_json::from_str(&out.events[1].to_json()).unwrap();
        assert_eq!(result["result"]["isError"], true);
        assert_eq!(result["result"]["content"][0]["text"], "ENOENT");
    }

    #[test]
    fn tool_spans_that_cannot_be_events_are_rejected_with_the_reason() {
        let no_agent = ResourceSpans {
            resource: vec![],
            spans: vec![tool_span(vec![(
                "gen_ai.operation.name",
                s("execute_tool"),
            )])],
        };
        let out = events_from_spans(&[no_agent], &options());
        assert_eq!(out.rejected.len(), 1);
        assert!(
            out.rejected[0]
                .error
                .starts_with("gen_ai.agent.id: missing"),
            "{:?}",
            out.rejected
        );
        let short_trace = ResourceSpans {
            resource: vec![("service.name".into(), s("a"))],
            spans: vec![Span {
                trace_id: vec![1, 2],
                ..tool_span(vec![("gen_ai.operation.name", s("execute_tool"))])
            }],
        };
        let out = events_from_spans(&[short_trace], &options());
        assert_eq!(out.rejected[0].error, "trace_id: 2 bytes, expected 16");
        let huge_name = ResourceSpans {
            resource: vec![("service.name".into(), s("a"))],
            spans: vec![tool_span(vec![
                ("gen_ai.operation.name", s("execute_tool")),
                ("gen_ai.tool.name", s(&"t".repeat(600))),
            ])],
        };
        let out = events_from_spans(&[huge_name], &options());
        assert!(out.rejected[0].error.contains("tool"), "{:?}", out.rejected);
    }
}
