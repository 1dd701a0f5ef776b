//! The streamable-HTTP proxy against a stub upstream that answers in the shapes the
//! spec allows (JSON, SSE, 202), for what the real peers do not exercise: batches with a
//! refused member, an SSE answer passed byte for byte, oversized bodies, session ids,
//! and an upstream that is gone.

mod common;

use common::{Reaped, start_http_sink};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::{Value, json};

/// What the stub sends for a `tools/call` of `stream`: a progress notification, then
/// the result, with Python-style spacing the proxy must keep.
const SSE_BODY: &str = "event: message\nid: 1\ndata: {\"jsonrpc\": \"2.0\", \"method\": \"notifications/progress\", \"params\": {\"progressToken\": 1, \"progress\": 1}}\n\nevent: message\nid: 2\ndata: {\"jsonrpc\": \"2.0\", \"id\": 7, \"result\": {\"content\": [{\"type\": \"text\", \"text\": \"streamed\"}]}}\n\n";

fn stub(stop: Arc<AtomicBool>) -> (u16, std::thread::JoinHandle<()>) {
    let server = tiny_http::Server::http("127.0.0.1:0").expect("stub");
    let port = server.server_addr().to_ip().expect("ip").port();
    let handle = std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            let Ok(Some(mut request)) = server.recv_timeout(std::time::Duration::from_millis(50))
            else {
                continue;
            };
            let mut body = String::new();
            let _ = request.as_reader().read_to_string(&mut body);
            let header = |name: &str, value: &str| {
                tiny_http::Header::from_bytes(name.as_bytes(), value.as_bytes()).unwrap()
            };
            if request.method() == &tiny_http::Method::Delete {
                let _ = request.respond(tiny_http::Response::empty(200));
                continue;
            }
            let message: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
            let answer = |m: &Value| json!({"jsonrpc": "2.0", "id": m["id"], "result": {"content": [{"type": "text", "text": format!("ran {}", m["params"]["name"])}]}});
            let response = match &message {
                Value::Array(items) => {
                    let answers: Vec<Value> = items.iter().map(answer).collect();
                    tiny_http::Response::from_string(Value::Array(answers).to_string())
                        .with_header(header("Content-Type", "application/json"))
                }
                m if m["params"]["name"] == "stream" => tiny_http::Response::from_string(SSE_BODY)
                    .with_header(header("Content-Type", "text/event-stream")),
                m if m["method"] == "initialize" => tiny_http::Response::from_string(
                    json!({"jsonrpc": "2.0", "id": m["id"], "result": {}}).to_string(),
                )
                .with_header(header("Content-Type", "application/json"))
                .with_header(header("Mcp-Session-Id", "stub-session-1")),
                m if m.get("id").is_none() => {
                    tiny_http::Response::from_string("").with_status_code(202)
                }
                m => tiny_http::Response::from_string(answer(m).to_string())
                    .with_header(header("Content-Type", "application/json")),
            };
            let _ = request.respond(response);
        }
    });
    (port, handle)
}

/// Starts `toolgate-sink http` in front of `upstream`; returns the URL it serves.
fn start_sink(upstream: &str, config: Option<&std::path::Path>) -> (String, Reaped) {
    let config = config.map(|c| c.display().to_string());
    let mut args = vec!["--server", "stub", "--upstream", upstream];
    if let Some(c) = &config {
        args.extend(["--config", c.as_str()]);
    }
    start_http_sink(&args)
}

fn post(url: &str, body: &str) -> (u16, String, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let response = agent
        .post(url)
        .header("Content-Type", "application/json")
        .header("Accept", "application/json, text/event-stream")
        .header("Mcp-Session-Id", "stub-session-1")
        .send(body)
        .expect("request");
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let text = response.into_body().read_to_string().unwrap_or_default();
    (status, content_type, text)
}

#[test]
fn the_http_proxy_keeps_every_answer_shape_and_refuses_inside_batches() {
    let dir = tempfile::tempdir().expect("tempdir");
    let events = dir.path().join("events.jsonl");
    let config = dir.path().join("toolgate.toml");
    std::fs::write(
        &config,
        format!(
            r#"[sink]
agent_id = "http-test"
events_file = "{}"
max_message_bytes = 4096

[detectors.policy]
[[detectors.policy.rules]]
id = "no-deletes"
tools = ["delete_*"]
effect = "deny"
reason = "deleting is not allowed for agents"
"#,
            events.display()
        ),
    )
    .expect("config");
    let stop = Arc::new(AtomicBool::new(false));
    let (port, upstream) = stub(stop.clone());
    let (url, sink) = start_sink(&format!("http://127.0.0.1:{port}/mcp"), Some(&config));

    let (status, _, _) = post(
        &url,
        r#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{}}"#,
    );
    assert_eq!(status, 200);

    // An SSE answer arrives byte for byte.
    let (status, content_type, body) = post(
        &url,
        r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"stream","arguments":{}}}"#,
    );
    assert_eq!((status, content_type.as_str()), (200, "text/event-stream"));
    assert_eq!(body, SSE_BODY);

    // A batch with a refused member: the rest goes upstream, the refusal joins the answer.
    let (status, _, body) = post(
        &url,
        r#"[{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{}}},{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"delete_all","arguments":{}}}]"#,
    );
    assert_eq!(status, 200);
    let answers: Value = serde_json::from_str(&body).expect("JSON");
    let by_id = |id: i64| {
        answers
            .as_array()
            .and_then(|a| a.iter().find(|x| x["id"] == id))
            .cloned()
            .unwrap_or_else(|| panic!("no answer {id} in {answers}"))
    };
    assert_eq!(by_id(1)["result"]["content"][0]["text"], "ran \"echo\"");
    assert_eq!(by_id(2)["result"]["isError"], true);

    // A notification gets the upstream's 202.
    let (status, _, _) = post(
        &url,
        r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
    );
    assert_eq!(status, 202);

    // Too large: refused with a JSON-RPC error, never sent upstream.
    let big = format!(
        r#"{{"jsonrpc":"2.0","id":9,"method":"tools/call","params":{{"name":"echo","arguments":{{"text":"{}"}}}}}}"#,
        "x".repeat(5000)
    );
    let (status, _, body) = post(&url, &big);
    assert_eq!(status, 413);
    assert!(body.contains("-32600"), "{body}");

    stop.store(true, Ordering::Relaxed);
    upstream.join().expect("stub");
    assert!(sink.terminate().success());
    let written: Vec<Value> = std::fs::read_to_string(&events)
        .expect("events")
        .lines()
        .map(|l| serde_json::from_str(l).expect("event"))
        .collect();
    let kinds: Vec<(&str, &str)> = written
        .iter()
        .map(|e| {
            (
                e["kind"].as_str().unwrap_or(""),
                e["tool"].as_str().unwrap_or(""),
            )
        })
        .collect();
    for expected in [
        ("tool_call", "stream"),
        ("tool_result", "stream"),
        ("tool_call", "echo"),
        ("tool_result", "echo"),
        ("tool_call", "delete_all"),
    ] {
        assert!(kinds.contains(&expected), "{expected:?} in {kinds:?}");
    }
    let refused = written
        .iter()
        .find(|e| e["tool"] == "delete_all")
        .expect("the refused call");
    assert_eq!(refused["sink_action"]["action"], "blocked");
    let sessions: std::collections::BTreeSet<&str> = written
        .iter()
        .filter_map(|e| e["session_id"].as_str())
        .collect();
    assert_eq!(
        sessions.len(),
        1,
        "one MCP session, one session id: {sessions:?}"
    );
}

#[test]
fn a_web_page_cannot_reach_the_loopback_proxy_through_dns_rebinding() {
    let (url, _sink) = start_sink("http://127.0.0.1:9/mcp", None);
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let ping = r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#;
    for (name, value) in [
        ("Origin", "http://evil.example"),
        ("Host", "evil.example:80"),
    ] {
        let response = agent
            .post(&url)
            .header("Content-Type", "application/json")
            .header(name, value)
            .send(ping)
            .expect("request");
        assert_eq!(response.status().as_u16(), 403, "{name}: {value}");
    }
    // A local origin is served (and, the upstream being down, answered with 502).
    let response = agent
        .post(&url)
        .header("Content-Type", "application/json")
        .header("Origin", "http://localhost:3000")
        .send(ping)
        .expect("request");
    assert_eq!(response.status().as_u16(), 502);
}

#[test]
fn an_unreachable_upstream_is_a_502_and_the_proxy_stays_up() {
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let (url, _sink) = start_sink(&format!("http://127.0.0.1:{dead}/mcp"), None);
    for id in 0..2 {
        let (status, _, body) = post(
            &url,
            &format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"ping"}}"#),
        );
        assert_eq!(status, 502, "{body}");
        assert!(body.contains("upstream MCP server failed"), "{body}");
    }
}
