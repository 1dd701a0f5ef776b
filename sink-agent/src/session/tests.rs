//! The session state machine's own tests: lines in, lines and events out.

use super::*;
use serde_json::json;
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
        crate::checks(&config, None, "a1", true).expect("checks"),
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
    let action = &report.json(0)["sink_action"];
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
    let line = r#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":1}}"#;
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
    let event = finish_event(report.events[0].clone(), &Redactor::disabled());
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
            destination: None,
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
    assert_eq!(report.json(0)["sink_action"]["rule"], "decision.dec-1");
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
    let event = finish_event(report.events[0].clone(), &redactor);
    let event = event.to_json();
    assert!(!event.contains("AKIAIOSFODNN7EXAMPLE"), "{event}");
}

const HOLD: &str = r#"
[sink.decision_keys]
engine-1 = "KEY"

[[sink.hold]]
name = "egress"
tools = ["send_*"]
hold_timeout_ms = 500
fail_mode = "fail_closed"

[[sink.hold]]
name = "uploads"
tools = ["upload_*"]
hold_timeout_ms = 500
fail_mode = "fail_open"
"#;

fn at(ms: i64) -> Timestamp {
    Timestamp::from_unix_nanos(ms * 1_000_000)
}

fn held_session() -> (Session, toolgate_protocol::decision::DecisionSigner) {
    let signer = toolgate_protocol::decision::DecisionSigner::from_seed("engine-1", [5; 32]);
    (
        session(&HOLD.replace("KEY", &signer.public_key_base64())),
        signer,
    )
}

/// The engine's verdict on the held call `call_id` whose event is `event_id`.
fn verdict(
    signer: &toolgate_protocol::decision::DecisionSigner,
    (call_id, event_id): (&str, &str),
    action: DecisionAction,
) -> Vec<u8> {
    use toolgate_protocol::decision::{Decision, DecisionSchema, Scope};
    let mut d = Decision {
        schema: DecisionSchema::V1,
        decision_id: format!("verdict-{event_id}"),
        time: at(0),
        expires_at: Some(at(60_000)),
        action,
        scope: Scope {
            agent_id: "a1".into(),
            session_id: Some("s1".into()),
            server: Some("crm".into()),
            tool: Some("send_email".into()),
            call_id: Some(call_id.into()),
            destination: None,
        },
        reason: "the recipient came from an untrusted web page".into(),
        finding_ids: vec![],
        key_id: String::new(),
        signature: String::new(),
    };
    signer.sign(&mut d);
    serde_json::to_vec(&d).unwrap()
}

fn call(id: u32, tool: &str) -> String {
    format!(
        r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"{tool}","arguments":{{"to":"x@y.z"}}}}}}"#
    )
}

#[test]
fn an_egress_call_waits_for_the_engine_and_goes_ahead_when_allowed() {
    let (mut s, signer) = held_session();
    let line = call(7, "send_email");
    let (out, report) = client(&mut s, &line);
    let event_id = report.json(0)["event_id"].as_str().unwrap().to_string();
    assert!(out.is_empty(), "held, not forwarded: {out:?}");
    assert_eq!(report.json(0)["await_verdict"], true);
    assert_eq!(report.json(0)["sink_action"]["action"], "held");
    assert_eq!(report.json(0)["sink_action"]["rule"], "hold.egress");
    assert_eq!(s.next_hold_deadline(), Some(at(500)));

    // Other messages are not held behind it.
    let (out, _) = client(&mut s, r#"{"jsonrpc":"2.0","id":8,"method":"ping"}"#);
    assert_eq!(out.len(), 1);

    let mut out = Vec::new();
    s.resolve_holds(at(100), &mut out, &mut Report::default());
    assert!(out.is_empty(), "no verdict yet");
    s.apply_decision(
        &verdict(&signer, ("7", &event_id), DecisionAction::Allow),
        at(120),
    )
    .expect("verdict");
    let mut settled = Report::default();
    s.resolve_holds(at(120), &mut out, &mut settled);
    assert_eq!(out, [Outbound::ToServer(line.into_bytes())]);
    assert_eq!(s.holding(), 0);
    assert!(settled.events.is_empty(), "a release waits for the result");
    // Its result says how the held call was let go (issue 22: the final action).
    let (_, report) = server(
        &mut s,
        r#"{"jsonrpc":"2.0","id":7,"result":{"content":[]}}"#,
    );
    assert_eq!(report.json(0)["kind"], "tool_result");
    assert_eq!(report.json(0)["sink_action"]["action"], "allowed");
    assert_eq!(
        report.json(0)["sink_action"]["rule"],
        format!("decision.verdict-{event_id}")
    );
}

/// Issue 22: sinks of one agent run share its session, and their JSON-RPC ids
/// collide: a verdict on another sink's call 3 must not release this sink's call 3.
#[test]
fn issue_22_a_verdict_on_another_sinks_call_with_the_same_id_does_not_release_this_one() {
    let (mut s, signer) = held_session();
    let (_, report) = client(&mut s, &call(3, "send_email"));
    let mine = report.json(0)["event_id"].as_str().unwrap().to_string();
    s.apply_decision(
        &verdict(
            &signer,
            ("3", "01OTHERSINK-00000001"),
            DecisionAction::Allow,
        ),
        at(10),
    )
    .expect("verdict");
    let mut out = Vec::new();
    s.resolve_holds(at(20), &mut out, &mut Report::default());
    assert!(out.is_empty(), "another sink's verdict: {out:?}");
    s.apply_decision(
        &verdict(&signer, ("3", &mine), DecisionAction::Allow),
        at(30),
    )
    .expect("verdict");
    s.resolve_holds(at(40), &mut out, &mut Report::default());
    assert_eq!(out.len(), 1, "its own verdict releases it");
}

#[test]
fn a_block_verdict_refuses_the_held_call_with_the_engines_reason() {
    let (mut s, signer) = held_session();
    let (_, report) = client(&mut s, &call(9, "send_email"));
    let event_id = report.json(0)["event_id"].as_str().unwrap().to_string();
    s.apply_decision(
        &verdict(&signer, ("9", &event_id), DecisionAction::Block),
        at(50),
    )
    .expect("verdict");
    let (mut out, mut settled) = (Vec::new(), Report::default());
    s.resolve_holds(at(50), &mut out, &mut settled);
    // Issue 22: the refusal is reported as the call's result, so the history keeps
    // the call's final action (its event said `held`).
    assert_eq!(settled.events.len(), 1);
    let refused = settled.json(0);
    assert_eq!(refused["kind"], "tool_result");
    assert_eq!(refused["call_id"], "9");
    assert_eq!(refused["result"]["isError"], true);
    assert_eq!(refused["sink_action"]["action"], "blocked");
    assert_eq!(
        refused["sink_action"]["rule"],
        format!("decision.verdict-{event_id}")
    );
    let answer = to_client(&out);
    assert_eq!(answer["id"], 9);
    assert_eq!(answer["result"]["isError"], true);
    let text = answer["result"]["content"][0]["text"].as_str().unwrap();
    assert!(text.contains("untrusted web page"), "{text}");
    assert!(
        text.contains(&format!("decision.verdict-{event_id}")),
        "{text}"
    );
}

#[test]
fn without_a_verdict_in_time_the_fail_mode_decides() {
    let (mut s, _) = held_session();
    let upload = call(2, "upload_file");
    client(&mut s, &call(1, "send_email"));
    client(&mut s, &upload);
    let mut out = Vec::new();
    s.resolve_holds(at(499), &mut out, &mut Report::default());
    assert!(out.is_empty());
    let mut settled = Report::default();
    s.resolve_holds(at(500), &mut out, &mut settled);
    assert_eq!(out.len(), 2);
    assert_eq!(settled.events.len(), 1, "the refusal is reported");
    assert_eq!(settled.json(0)["sink_action"]["action"], "blocked");
    assert_eq!(settled.json(0)["sink_action"]["rule"], "hold.egress");
    let (_, report) = server(
        &mut s,
        r#"{"jsonrpc":"2.0","id":2,"result":{"content":[]}}"#,
    );
    let released = report.json(0);
    assert_eq!(released["sink_action"]["action"], "allowed");
    assert!(
        released["sink_action"]["reason"]
            .as_str()
            .unwrap()
            .contains("fail_open"),
        "{released}"
    );
    let closed = out
        .iter()
        .find_map(|o| match o {
            Outbound::ToClient(l) => Some(serde_json::from_slice::<Value>(l).unwrap()),
            _ => None,
        })
        .expect("the fail_closed call is refused");
    let text = closed["result"]["content"][0]["text"].as_str().unwrap();
    assert!(text.contains("no verdict within 500 ms"), "{text}");
    assert!(
        out.contains(&Outbound::ToServer(upload.into_bytes())),
        "fail_open forwards"
    );
}

#[test]
fn a_stale_verdict_for_a_reused_id_does_not_release_a_new_call() {
    let (mut s, signer) = held_session();
    // The verdict names the event the call will have: only its time is stale.
    let event_id = "ev-00000001";
    s.apply_decision(
        &verdict(&signer, ("4", event_id), DecisionAction::Allow),
        at(0),
    )
    .expect("verdict");
    client(&mut s, &call(4, "send_email"));
    let mut out = Vec::new();
    s.resolve_holds(at(10), &mut out, &mut Report::default());
    assert!(
        out.is_empty(),
        "an allow from before the call must not count"
    );
}

#[test]
fn a_cancelled_held_call_never_reaches_the_server() {
    let (mut s, _) = held_session();
    client(&mut s, &call(5, "send_email"));
    let cancel = r#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":5}}"#;
    let (out, report) = client(&mut s, cancel);
    assert_eq!(out, [Outbound::ToServer(cancel.as_bytes().to_vec())]);
    assert_eq!(s.holding(), 0);
    // Issue 22: reported as the call's result, so the history does not keep it held.
    let dropped = report.json(0);
    assert_eq!(dropped["kind"], "tool_result");
    assert_eq!(dropped["call_id"], "5");
    assert_eq!(dropped["sink_action"]["action"], "blocked");
    assert_eq!(dropped["sink_action"]["rule"], "hold.egress");
}

#[test]
fn batched_or_engineless_egress_calls_get_the_fail_mode_at_once() {
    let (mut s, _) = held_session();
    let batch = format!("[{},{}]", call(1, "send_email"), call(2, "upload_file"));
    let (out, report) = client(&mut s, &batch);
    assert_eq!(s.holding(), 0);
    // The upload (fail_open) goes on; the send (fail_closed) is refused.
    assert!(
        matches!(&out[0], Outbound::ToServer(l) if !String::from_utf8_lossy(l).contains("send_email"))
    );
    assert_eq!(report.json(0)["sink_action"]["action"], "blocked");
    assert_eq!(report.json(1)["sink_action"]["action"], "allowed");
    assert_eq!(report.json(1)["sink_action"]["rule"], "hold.uploads");

    let key = toolgate_protocol::decision::DecisionSigner::from_seed("engine-1", [5; 32])
        .public_key_base64();
    let config = Config::from_toml(&HOLD.replace("KEY", &key), "t").expect("config");
    let identity = s.identity().clone();
    let mut offline = Session::new(
        identity,
        crate::checks(&config, None, "a1", false).expect("checks"),
        "ev".into(),
    );
    let (out, report) = client(&mut offline, &call(3, "send_email"));
    let text = to_client(&out)["result"]["content"][0]["text"].clone();
    assert!(
        text.as_str().unwrap().contains("no engine to ask"),
        "{text}"
    );
    assert_eq!(report.json(0)["sink_action"]["action"], "blocked");
}

/// Issue 20: the session builds its events typed, from the messages it parsed, instead
/// of JSON it decoded again. What it sends must be exactly what the engine decodes, and
/// an event the protocol would refuse is counted and never sent.
#[test]
fn issue_20_typed_events_decode_to_themselves_and_invalid_ones_are_counted() {
    let mut s = session(POLICY);
    let mut events = Vec::new();
    let (_, r) = client(&mut s, r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#);
    events.extend(r.events);
    let (_, r) = server(
        &mut s,
        r#"{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"lookup","description":"Finds a customer","inputSchema":{"type":"object"},"x-extra":[1,2.5]}]}}"#,
    );
    events.extend(r.events);
    let (_, r) = client(
        &mut s,
        r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"send_email","arguments":{"to":"x@y.z","n":18446744073709551615,"f":0.1}}}"#,
    );
    events.extend(r.events);
    let (_, r) = server(
        &mut s,
        r#"{"jsonrpc":"2.0","id":2,"result":{"content":[{"type":"text","text":"sent"}],"isError":false,"_meta":{"k":"v"}}}"#,
    );
    events.extend(r.events);
    let (_, r) = client(
        &mut s,
        r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"lookup","arguments":{}}}"#,
    );
    events.extend(r.events);
    let (_, r) = server(
        &mut s,
        r#"{"jsonrpc":"2.0","id":3,"error":{"code":-1,"message":"no"}}"#,
    );
    events.extend(r.events);
    let kinds: Vec<&str> = events.iter().map(|e| e.kind().as_str()).collect();
    assert_eq!(
        kinds,
        [
            "tool_list",
            "tool_call",
            "tool_result",
            "tool_call",
            "tool_result"
        ]
    );
    for event in &events {
        let decoded = Event::decode(event.to_json().as_bytes()).expect("the engine reads it");
        assert_eq!(&decoded, event);
    }

    // A listing with a tool that has no name, and a result whose content block has no
    // type: the messages pass, their events are counted and not sent.
    let (_, r) = client(&mut s, r#"{"jsonrpc":"2.0","id":4,"method":"tools/list"}"#);
    assert!(r.events.is_empty());
    let (out, r) = server(
        &mut s,
        r#"{"jsonrpc":"2.0","id":4,"result":{"tools":[{"description":"nameless"}]}}"#,
    );
    assert_eq!(out.len(), 1, "the listing still reaches the agent");
    assert!(r.events.is_empty());
    assert_eq!(r.invalid_events, 1);
    let (_, r) = client(
        &mut s,
        r#"{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"lookup","arguments":{}}}"#,
    );
    assert_eq!(r.events.len(), 1);
    let (out, r) = server(
        &mut s,
        r#"{"jsonrpc":"2.0","id":5,"result":{"content":[{"text":"untyped"}]}}"#,
    );
    assert_eq!(out.len(), 1, "the result still reaches the agent");
    assert!(r.events.is_empty());
    assert_eq!(r.invalid_events, 1);
}

/// Issue 20: a held call whose event the protocol refuses (here a 600-byte tool name)
/// can never get a verdict; its fail mode answers at once instead of at the deadline.
#[test]
fn issue_20_a_held_call_that_cannot_be_reported_takes_its_fail_mode_at_once() {
    let (mut s, _) = held_session();
    let long = "x".repeat(600);
    let (out, report) = client(&mut s, &call(1, &format!("send_{long}")));
    assert!(report.events.is_empty());
    assert_eq!(report.invalid_events, 1);
    let answer = to_client(&out);
    assert!(
        answer["result"]["content"][0]["text"]
            .as_str()
            .is_some_and(|m| m.contains("cannot be reported") && m.contains("fail_closed")),
        "{answer}"
    );
    assert_eq!(s.holding(), 0);

    let line = call(2, &format!("upload_{long}"));
    let (out, report) = client(&mut s, &line);
    assert_eq!(report.invalid_events, 1);
    assert_eq!(
        out,
        [Outbound::ToServer(line.into_bytes())],
        "fail_open forwards"
    );
    assert_eq!(s.holding(), 0);
}
