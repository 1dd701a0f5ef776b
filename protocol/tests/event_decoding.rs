//! Decoding `toolgate.event.v1`: exact errors for bad input, round trips for good input,
//! and no panic on anything.

use proptest::prelude::*;
use serde_json::{Value, json};
use toolgate_protocol::event::{Event, EventBody, SinkAction, SinkActionKind, ToolResult};
use toolgate_protocol::{DecodeError, FieldProblem, Timestamp};

fn call() -> Value {
    json!({
        "schema": "toolgate.event.v1",
        "kind": "tool_call",
        "event_id": "01JABCDEF",
        "time": "2025-06-01T09:30:00.123Z",
        "agent_id": "agent-1",
        "session_id": "sess-1",
        "server": "mail",
        "call_id": "c-1",
        "tool": "send_email",
        "arguments": {"to": "a@example.com", "body": "hi"}
    })
}

fn decode(v: &Value) -> Result<Event, DecodeError> {
    Event::decode(serde_json::to_string(v).unwrap().as_bytes())
}

fn field_error(v: &Value) -> (String, String, String, FieldProblem) {
    match decode(v).unwrap_err() {
        DecodeError::Field {
            field,
            expected,
            found,
            problem,
        } => (field, expected, found, problem),
        other => panic!("expected a field error, got {other}"),
    }
}

fn with(mut v: Value, key: &str, new: Value) -> Value {
    v[key] = new;
    v
}

fn without(mut v: Value, key: &str) -> Value {
    v.as_object_mut().unwrap().remove(key);
    v
}

#[test]
fn a_valid_call_decodes() {
    let e = decode(&call()).unwrap();
    assert_eq!(e.agent_id, "agent-1");
    assert_eq!(e.tool(), Some("send_email"));
    assert_eq!(e.server(), Some("mail"));
    assert_eq!(
        e.time,
        Timestamp::parse("2025-06-01T09:30:00.123Z").unwrap()
    );
}

#[test]
fn unknown_schema_version_is_rejected() {
    let err = decode(&with(call(), "schema", json!("toolgate.event.v2"))).unwrap_err();
    assert_eq!(err.kind(), "unknown_schema");
    assert_eq!(
        err.to_string(),
        "field `schema`: expected \"toolgate.event.v1\", found string \"toolgate.event.v2\""
    );
    let err = decode(&without(call(), "schema")).unwrap_err();
    assert_eq!(err.kind(), "missing_field");
}

#[test]
fn missing_agent_id_is_named() {
    let (field, expected, found, problem) = field_error(&without(call(), "agent_id"));
    assert_eq!(field, "agent_id");
    assert_eq!(expected, "a non-empty string");
    assert_eq!(found, "nothing (field is missing)");
    assert_eq!(problem, FieldProblem::Missing);
    let (field, _, found, problem) = field_error(&with(call(), "agent_id", json!("")));
    assert_eq!(
        (field.as_str(), found.as_str()),
        ("agent_id", "string \"\"")
    );
    assert_eq!(problem, FieldProblem::InvalidValue);
    let (_, _, found, _) = field_error(&with(call(), "agent_id", Value::Null));
    assert_eq!(found, "nothing (field is missing)");
}

#[test]
fn tool_call_without_call_id_is_named() {
    let err = decode(&without(call(), "call_id")).unwrap_err();
    assert_eq!(
        err.to_string(),
        "field `call_id`: expected a non-empty string, found nothing (field is missing)"
    );
}

#[test]
fn wrong_types_are_named_with_what_was_found() {
    let (field, expected, found, problem) = field_error(&with(call(), "arguments", json!([1, 2])));
    assert_eq!(field, "arguments");
    assert_eq!(expected, "an object");
    assert_eq!(found, "array of 2 items");
    assert_eq!(problem, FieldProblem::WrongType);
    let (field, _, found, _) = field_error(&with(call(), "session_id", json!(42)));
    assert_eq!(
        (field.as_str(), found.as_str()),
        ("session_id", "number 42")
    );
    let (field, ..) = field_error(&with(call(), "labels", json!({"team": 7})));
    assert_eq!(field, "labels.team");
    let (field, ..) = field_error(&with(call(), "await_verdict", json!("yes")));
    assert_eq!(field, "await_verdict");
    let (field, _, _, problem) = field_error(&with(call(), "kind", json!("tool_cal")));
    assert_eq!(
        (field.as_str(), problem),
        ("kind", FieldProblem::InvalidValue)
    );
}

#[test]
fn invalid_time_is_named() {
    let (field, expected, found, problem) =
        field_error(&with(call(), "time", json!("2025-02-30T00:00:00Z")));
    assert_eq!(field, "time");
    assert!(expected.contains("day out of range"), "{expected}");
    assert_eq!(found, "string \"2025-02-30T00:00:00Z\"");
    assert_eq!(problem, FieldProblem::InvalidValue);
    let (field, _, _, problem) = field_error(&with(call(), "time", json!(1717234200)));
    assert_eq!((field.as_str(), problem), ("time", FieldProblem::WrongType));
}

#[test]
fn oversize_payloads_are_rejected_before_parsing() {
    let mut v = call();
    v["arguments"]["body"] = json!("x".repeat(2_000));
    let bytes = serde_json::to_vec(&v).unwrap();
    let err = Event::decode_with_limit(&bytes, 1_000).unwrap_err();
    assert_eq!(
        err,
        DecodeError::TooLarge {
            size: bytes.len(),
            limit: 1_000
        }
    );
    assert!(Event::decode_with_limit(&bytes, bytes.len()).is_ok());
}

#[test]
fn fields_of_other_kinds_and_unknown_fields_are_refused() {
    let (field, expected, _, problem) = field_error(&with(call(), "text", json!("hello")));
    assert_eq!(field, "text");
    assert_eq!(expected, "no such field on a tool_call event");
    assert_eq!(problem, FieldProblem::Unexpected);
    let (field, ..) = field_error(&with(call(), "agentId", json!("typo")));
    assert_eq!(field, "agentId");
}

#[test]
fn nested_errors_carry_their_path() {
    let result = json!({
        "schema": "toolgate.event.v1", "kind": "tool_result", "event_id": "e2",
        "time": "2025-06-01T09:30:01Z", "agent_id": "a", "session_id": "s",
        "server": "mail", "call_id": "c-1", "tool": "read",
        "result": {"content": [{"type": "text", "text": "ok"}, {"text": "no type"}]}
    });
    let (field, ..) = field_error(&result);
    assert_eq!(field, "result.content[1].type");
    let list = json!({
        "schema": "toolgate.event.v1", "kind": "tool_list", "event_id": "e3",
        "time": "2025-06-01T09:30:01Z", "agent_id": "a", "session_id": "s",
        "server": "mail", "tools": [{"name": "ok"}, {"name": "bad", "inputSchema": "string"}]
    });
    let (field, ..) = field_error(&list);
    assert_eq!(field, "tools[1].inputSchema");
    let (field, ..) = field_error(&with(call(), "sink_action", json!({"action": "dropped"})));
    assert_eq!(field, "sink_action.action");
    let (field, ..) = field_error(&with(call(), "trace_id", json!("ABC")));
    assert_eq!(field, "trace_id");
}

#[test]
fn not_json_and_not_objects() {
    assert_eq!(
        Event::decode(b"{\"schema\": ").unwrap_err().kind(),
        "invalid_json"
    );
    assert_eq!(
        Event::decode(b"\xff\xfe").unwrap_err().kind(),
        "invalid_json"
    );
    assert_eq!(
        Event::decode(b"[1,2]").unwrap_err().to_string(),
        "expected a JSON object, found array of 2 items"
    );
}

#[test]
fn unknown_members_of_mcp_objects_are_kept_verbatim() {
    let line = r#"{"schema":"toolgate.event.v1","kind":"tool_result","event_id":"e","time":"2025-01-01T00:00:00Z","agent_id":"a","session_id":"s","server":"m","call_id":"c","tool":"t","result":{"content":[{"type":"text","text":"hi","annotations":{"audience":["user"]}}],"isError":false,"_meta":{"x":1}}}"#;
    let e = Event::decode(line.as_bytes()).unwrap();
    let EventBody::ToolResult { result, .. } = &e.body else {
        panic!("decoded as {:?}", e.kind())
    };
    assert_eq!(result.texts().collect::<Vec<_>>(), ["hi"]);
    assert_eq!(result.other["_meta"], json!({"x": 1}));
    let again: Value = serde_json::from_str(&e.to_json()).unwrap();
    let orig: Value = serde_json::from_str(line).unwrap();
    assert_eq!(again, orig);
}

// ---- properties ----

fn ident() -> impl Strategy<Value = String> {
    "[A-Za-z0-9._:/-]{1,24}"
}

fn json_leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        (-1e9f64..1e9).prop_map(|f| json!(f)),
        "\\PC{0,20}".prop_map(Value::String),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    json_leaf().prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-z]{1,6}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn arguments() -> impl Strategy<Value = serde_json::Map<String, Value>> {
    prop::collection::btree_map("[a-z_]{1,8}", json_value(), 0..5)
        .prop_map(|m| m.into_iter().collect())
}

fn tool_list(server: String, tools: Vec<(String, Option<String>)>) -> EventBody {
    EventBody::ToolList {
        server,
        tools: tools
            .into_iter()
            .map(|(name, description)| toolgate_protocol::ToolDefinition {
                name,
                title: None,
                description,
                input_schema: Some(serde_json::Map::from_iter([(
                    "type".to_string(),
                    json!("object"),
                )])),
                output_schema: None,
                annotations: None,
                other: serde_json::Map::new(),
            })
            .collect(),
    }
}

fn body() -> impl Strategy<Value = EventBody> {
    prop_oneof![
        (ident(), ident(), ident(), arguments()).prop_map(|(server, call_id, tool, arguments)| {
            EventBody::ToolCall {
                server,
                call_id,
                tool,
                arguments,
            }
        }),
        (
            ident(),
            ident(),
            ident(),
            "\\PC{0,40}",
            any::<Option<bool>>()
        )
            .prop_map(
                |(server, call_id, tool, text, is_error)| EventBody::ToolResult {
                    server,
                    call_id,
                    tool,
                    result: ToolResult {
                        content: vec![json!({"type": "text", "text": text})],
                        is_error,
                        ..ToolResult::default()
                    },
                }
            ),
        "\\PC{0,60}".prop_map(|text| EventBody::UserMessage { text }),
        (
            ident(),
            prop::collection::vec((ident(), proptest::option::of("\\PC{0,30}")), 0..3)
        )
            .prop_map(|(server, tools)| tool_list(server, tools)),
    ]
}

prop_compose! {
    fn event()(
        event_id in ident(), nanos in 0i64..4_000_000_000_000_000_000, agent_id in ident(),
        session_id in ident(), agent_role in proptest::option::of(ident()),
        trust_domain in proptest::option::of(ident()), await_verdict in any::<bool>(),
        held in any::<bool>(),
        labels in prop::collection::btree_map("[a-z]{1,6}", "\\PC{0,12}", 0..3), body in body(),
        redacted in prop::collection::vec(("[a-z_]{1,12}", "[a-z.\\[\\]0-9]{1,20}"), 0..3),
    ) -> Event {
        Event {
            event_id, time: Timestamp::from_unix_nanos(nanos), agent_id, session_id, agent_role,
            host: None, trust_domain,
            sink_action: held.then(|| SinkAction {
                action: SinkActionKind::Held, rule: Some("egress".into()), reason: None,
            }),
            await_verdict, trace_id: None, span_id: None, labels,
            redacted: redacted
                .into_iter()
                .map(|(kind, field)| toolgate_protocol::event::Redacted { kind, field })
                .collect(),
            body,
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn encode_then_decode_is_identity(e in event()) {
        let back = Event::decode(e.to_json().as_bytes()).unwrap();
        prop_assert_eq!(back, e);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = Event::decode(&bytes);
    }

    #[test]
    fn arbitrary_json_never_panics(v in json_value()) {
        let _ = Event::from_value(v);
    }

    #[test]
    fn mutated_valid_events_never_panic(
        e in event(), pos in any::<prop::sample::Index>(), byte in any::<u8>(), cut in any::<bool>()
    ) {
        let mut bytes = e.to_json().into_bytes();
        let i = pos.index(bytes.len());
        if cut { bytes.truncate(i) } else { bytes[i] = byte }
        let _ = Event::decode(&bytes);
    }

    #[test]
    fn replacing_any_field_with_another_value_yields_an_event_or_a_named_error(
        e in event(), which in any::<prop::sample::Index>(), v in json_value()
    ) {
        let mut obj: serde_json::Map<String, Value> = serde_json::from_str(&e.to_json()).unwrap();
        let keys: Vec<String> = obj.keys().cloned().collect();
        let key = keys[which.index(keys.len())].clone();
        obj.insert(key.clone(), v);
        if let Err(err) = Event::from_value(Value::Object(obj)) {
            // Errors about a top-level field must name it.
            if let Some(field) = err.field() {
                prop_assert!(field.starts_with(&key) || key == "kind", "{} vs {}", field, key);
            }
        }
    }
}
