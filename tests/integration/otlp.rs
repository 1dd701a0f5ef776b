//! The engine's OTLP/HTTP receiver end to end on the mock cluster: an agent traced by
//! the official OpenTelemetry Python SDK (its OTLP/HTTP protobuf exporter) replays the
//! AgentDojo sample as GenAI `execute_tool` spans; the spans become events on the events
//! topic and the engine finds the injected payment as it does from a sink's events.
//! Bad requests get the answers OTLP/HTTP specifies. The engine's own metrics, pushed
//! with the OpenTelemetry SDK, are parsed by the OpenTelemetry project's protobuf
//! classes.
//!
//! The `issue_19_` tests hold the receiver to what issue 19 asked: no one client can
//! stall it, and a span that can never be published is rejected in `partial_success`
//! (the rest published once) instead of being answered 503 forever. Most run the
//! receiver alone, with a publisher the test watches and raw sockets for the clients.

use crate::common;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::kafka::*;
use common::{python_venv, repo};
use serde_json::{Value, json};
use toolgate_engine::embedded::EmbeddedBroker;
use toolgate_ingest::otlp::genai::MappingOptions;
use toolgate_ingest::otlp::receiver::{
    DEFAULT_MAX_CONNECTIONS, OtlpReceiver, Publish, PublishError, ReceiverCounters,
    ReceiverOptions, Refusal,
};
use toolgate_protocol::Event;
use toolgate_protocol::config::{Config, ServerConfig, TopicsConfig};
use toolgate_protocol::event::DEFAULT_MAX_EVENT_BYTES;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// The test config, receiving OTLP on `port`, with the sample's servers in the trust
/// domains its events report (spans carry no trust domain; the engine's config does).
fn otlp_config(dir: &std::path::Path, port: u16) -> Config {
    let mut config = config(dir);
    config.otlp.listen = Some(format!("127.0.0.1:{port}"));
    let sample =
        std::fs::read_to_string(repo().join("examples/agentdojo-sample.jsonl")).expect("sample");
    for line in sample.lines() {
        let e: Value = serde_json::from_str(line).expect("event");
        if let (Some(server), Some(domain)) = (e["server"].as_str(), e["trust_domain"].as_str()) {
            config.servers.insert(
                server.to_string(),
                ServerConfig {
                    trust_domain: domain.to_string(),
                    description: None,
                },
            );
        }
    }
    config
}

/// Waits until the receiver answers.
fn await_listening(port: u16) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "the receiver never listened"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

type Engine = (
    std::sync::Arc<std::sync::atomic::AtomicBool>,
    std::thread::JoinHandle<toolgate_engine::EngineReport>,
);

/// An engine on a fresh embedded broker, its receiver listening on the returned port.
fn receiving_engine() -> (tempfile::TempDir, EmbeddedBroker, u16, Engine) {
    receiving_engine_with(None)
}

/// The same, asking exporters for `token`.
fn receiving_engine_with(token: Option<&str>) -> (tempfile::TempDir, EmbeddedBroker, u16, Engine) {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = EmbeddedBroker::start(&TopicsConfig::default(), PARTITIONS).expect("broker");
    let port = free_port();
    let mut config = otlp_config(dir.path(), port);
    config.otlp.token = token.map(str::to_string);
    let engine = start(&config, broker.bootstrap());
    await_listening(port);
    (dir, broker, port, engine)
}

#[test]
fn genai_tool_spans_from_the_opentelemetry_sdk_become_events_and_findings() {
    // Issue 22: the receiver takes events only from exporters with its token; the
    // SDK's exporter sends it from its standard headers variable.
    let token = "issue-22-otlp-token";
    let (_dir, broker, port, engine) = receiving_engine_with(Some(token));
    let brokers = broker.bootstrap().to_string();
    let span = export(vec![tool_span("01", "search", "nothing")]);
    for authorization in [None, Some("Bearer wrong-token"), Some("Basic aXNzdWU=")] {
        let (status, head, _) =
            raw_post_with(port, authorization, &span, Duration::from_secs(10)).expect("an answer");
        assert_eq!(status, 401, "{authorization:?}");
        assert!(
            head.to_ascii_lowercase()
                .contains("www-authenticate: bearer"),
            "{head}"
        );
    }

    let python = python_venv("test-venv-otel", "requirements-otel.txt");
    let out = Command::new(python)
        .env(
            "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
            format!("Authorization=Bearer%20{token}"),
        )
        .arg(repo().join("tests/python/otel_agent.py"))
        .args(["--endpoint", &format!("http://127.0.0.1:{port}/v1/traces")])
        .args([
            "--events",
            &repo()
                .join("examples/agentdojo-sample.jsonl")
                .display()
                .to_string(),
        ])
        .output()
        .expect("python");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let spans: usize = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("the agent prints how many tool spans it exported");
    assert!(spans >= 20, "{spans}");

    let events = read_all(&brokers, "toolgate.events", 2 * spans);
    // The injected payment, found from spans alone and blocked. Other detectors' findings
    // (the injected result) may arrive first: wait for the block itself.
    let exfiltration = "call_UIxyFTg4BR87BCmnbk2A5cts";
    let is_block = |f: &Value| {
        f["detector"] == "provenance" && f["call_id"] == exfiltration && f["action"] == "block"
    };
    let findings = read_until(&brokers, "toolgate.findings", |found| {
        found.iter().any(|f| is_block(&f.json()))
    });
    let decisions = read_all(&brokers, "toolgate.decisions", 1);
    let report = stop(engine);
    assert_eq!(
        events.len(),
        2 * spans,
        "one call and one result per tool span"
    );
    let mut ids = BTreeSet::new();
    for e in &events {
        let v = e.json();
        assert_eq!(v["labels"]["source"], "otlp", "{v}");
        assert_eq!(v["labels"]["service.name"], "agentdojo-replay");
        assert_eq!(
            e.key,
            v["agent_id"].as_str().expect("agent"),
            "keyed by agent"
        );
        assert!(v["trace_id"].as_str().is_some_and(|t| t.len() == 32));
        ids.insert(v["event_id"].as_str().expect("id").to_string());
    }
    assert_eq!(ids.len(), events.len(), "event ids are distinct");
    assert_eq!(report.events, events.len() as u64);
    assert!(
        findings.iter().any(|f| is_block(&f.json())),
        "{:#?}",
        findings.iter().map(Record::json).collect::<Vec<_>>()
    );
    assert!(
        decisions.iter().any(|d| d.json()["action"] == "block"),
        "the block became a decision"
    );
}

#[test]
fn the_receiver_answers_bad_requests_as_otlp_http_specifies() {
    let (_dir, broker, port, engine) = receiving_engine();
    let brokers = broker.bootstrap().to_string();
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let url = format!("http://127.0.0.1:{port}/v1/traces");
    let post = |content_type: &str, body: &[u8]| -> (u16, String, String) {
        let mut r = agent
            .post(&url)
            .header("Content-Type", content_type)
            .send(body)
            .expect("request");
        let ct = r
            .headers()
            .get("Content-Type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let body = r.body_mut().read_to_string().unwrap_or_default();
        (r.status().as_u16(), ct, body)
    };

    // JSON: one good tool span, one without any agent identity, one chat span.
    let span = |name: &str, attributes: Value| {
        json!({"traceId": "5b8efff798038103d269b633813fc60c", "spanId": format!("eee19b7ec3c1b1{name}"),
               "name": "execute_tool lookup", "startTimeUnixNano": "1740823200000000000",
               "endTimeUnixNano": "1740823200100000000", "attributes": attributes})
    };
    let attr = |k: &str, v: &str| json!({"key": k, "value": {"stringValue": v}});
    let request = json!({"resourceSpans": [
        {"resource": {"attributes": [attr("service.name", "json-agent")]},
         "scopeSpans": [{"spans": [
            span("01", json!([attr("gen_ai.operation.name", "execute_tool"), attr("gen_ai.tool.name", "lookup")])),
            span("02", json!([attr("gen_ai.operation.name", "chat")])),
         ]}]},
        {"scopeSpans": [{"spans": [span("03", json!([attr("gen_ai.operation.name", "execute_tool")]))]}]}
    ]});
    let (status, ct, body) = post("application/json", request.to_string().as_bytes());
    assert_eq!((status, ct.as_str()), (200, "application/json"), "{body}");
    let answer: Value = serde_json::from_str(&body).expect("JSON answer");
    assert_eq!(answer["partialSuccess"]["rejectedSpans"], "1", "{answer}");
    assert!(
        answer["partialSuccess"]["errorMessage"]
            .as_str()
            .is_some_and(|m| m.contains("gen_ai.agent.id: missing")),
        "{answer}"
    );
    let events = read_all(&brokers, "toolgate.events", 2);
    let agents: BTreeSet<String> = events
        .iter()
        .map(|e| {
            e.json()["agent_id"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    assert_eq!(events.len(), 2);
    assert_eq!(agents, BTreeSet::from(["json-agent".to_string()]));

    let (status, ct, _) = post("application/x-protobuf", &[0x0a, 0x05, 0x01]);
    assert_eq!((status, ct.as_str()), (400, "application/x-protobuf"));
    let (status, _, body) = post("application/json", b"{\"resourceSpans\": 5}");
    assert_eq!(status, 400);
    assert!(body.contains("resourceSpans: expected an array"), "{body}");
    let (status, _, body) = post("text/plain", b"hello");
    assert_eq!(status, 415);
    assert!(body.contains("application/x-protobuf"), "{body}");
    // The default limit takes a span as large as an event (issue 22: 8 MiB took less).
    let big = vec![b' '; toolgate_protocol::event::DEFAULT_MAX_EVENT_BYTES + 1];
    let (status, _, _) = post("application/json", &big);
    assert_eq!(status, 413);
    stop(engine);
}

#[test]
fn the_engines_metrics_reach_an_otlp_collector() {
    let dir = tempfile::tempdir().expect("tempdir");
    let python = python_venv("test-venv-otel", "requirements-otel.txt");
    let log = dir.path().join("metrics.jsonl");
    let mut sink = Command::new(python)
        .arg(repo().join("tests/python/otlp_metrics_sink.py"))
        .args(["--log", &log.display().to_string()])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("metrics sink");
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(sink.stdout.take().expect("stdout")),
        &mut line,
    )
    .expect("port");
    let port: u16 = line.trim().parse().expect("the sink prints its port");

    let broker = EmbeddedBroker::start(&TopicsConfig::default(), PARTITIONS).expect("broker");
    let brokers = broker.bootstrap().to_string();
    let mut config = config(dir.path());
    config.engine.metrics_otlp_endpoint = Some(format!("http://127.0.0.1:{port}/v1/metrics"));
    config.engine.metrics_otlp_interval = toolgate_protocol::Duration::from_millis(300);
    let events = sample("");
    let expected = offline_finding_ids(dir.path(), &events);
    produce(&brokers, &events);
    let engine = start(&config, &brokers);
    await_findings(&brokers, &expected);
    stop(engine);
    let _ = sink.kill();
    let _ = sink.wait();

    let metrics: Vec<Value> = std::fs::read_to_string(&log)
        .expect("the sink received metrics")
        .lines()
        .map(|l| serde_json::from_str(l).expect("line"))
        .collect();
    let last = |name: &str| -> &Value {
        metrics
            .iter()
            .rev()
            .find(|m| m["name"] == name)
            .unwrap_or_else(|| panic!("no {name} in {} metrics", metrics.len()))
    };
    let events_total = last("toolgate_engine_events");
    assert_eq!(events_total["kind"], "sum");
    assert_eq!(events_total["points"][0]["value"], 54);
    assert_eq!(events_total["resource"]["service.name"], "toolgate");
    let by_detector = last("toolgate_engine_findings_by_detector");
    assert!(
        by_detector["points"]
            .as_array()
            .expect("points")
            .iter()
            .any(|p| p["attributes"]["detector"] == "provenance"),
        "{by_detector}"
    );
    let latency = last("toolgate_engine_processing_latency");
    assert_eq!(latency["kind"], "histogram");
    assert_eq!(latency["unit"], "s");
    assert_eq!(latency["points"][0]["count"], 54);
    let state = last("toolgate_detector_state");
    assert!(
        state["points"].as_array().is_some_and(|p| !p.is_empty()),
        "{state}"
    );
}

/// The receiver-level tests' publisher: events of `refuse_tool` are refused for good,
/// everything is unavailable for now with `unavailable`, the rest is kept in `published`.
#[derive(Clone, Default)]
struct MockPublisher {
    published: Arc<Mutex<Vec<Event>>>,
    calls: Arc<AtomicUsize>,
    refuse_tool: Option<&'static str>,
    unavailable: bool,
}

impl Publish for MockPublisher {
    fn publish(&mut self, events: &[Event]) -> Result<(), PublishError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if self.unavailable {
            return Err(PublishError::Unavailable("the broker is down".into()));
        }
        let mut refused = Vec::new();
        let mut published = self.published.lock().expect("published");
        for (index, event) in events.iter().enumerate() {
            if self.refuse_tool.is_some() && event.tool() == self.refuse_tool {
                refused.push(Refusal {
                    index,
                    reason: "too large for the broker".into(),
                });
            } else {
                published.push(event.clone());
            }
        }
        if refused.is_empty() {
            Ok(())
        } else {
            Err(PublishError::Refused(refused))
        }
    }
}

impl MockPublisher {
    fn published(&self) -> Vec<Event> {
        self.published.lock().expect("published").clone()
    }
}

/// A receiver alone on a free port, publishing to `publisher`.
fn mock_receiver(
    publisher: &MockPublisher,
    read_timeout: Duration,
    max_connections: usize,
    max_event_bytes: usize,
) -> (OtlpReceiver, Arc<ReceiverCounters>) {
    let counters = Arc::new(ReceiverCounters::default());
    let receiver = OtlpReceiver::start(
        ReceiverOptions {
            listen: "127.0.0.1:0".into(),
            max_body_bytes: 8 << 20,
            max_event_bytes,
            read_timeout,
            max_connections,
            mapping: MappingOptions {
                default_server: "otel".into(),
            },
            token: None,
        },
        Box::new(publisher.clone()),
        Arc::clone(&counters),
    )
    .expect("receiver");
    (receiver, counters)
}

/// An OTLP/JSON `execute_tool` span of one trace; `id` ends its span id (two hex digits).
fn tool_span(id: &str, tool: &str, result: &str) -> Value {
    let attr = |k: &str, v: &str| json!({"key": k, "value": {"stringValue": v}});
    json!({"traceId": "5b8efff798038103d269b633813fc60c", "spanId": format!("eee19b7ec3c1b1{id}"),
           "name": format!("execute_tool {tool}"), "startTimeUnixNano": "1740823200000000000",
           "endTimeUnixNano": "1740823200100000000",
           "attributes": [attr("gen_ai.operation.name", "execute_tool"),
                          attr("gen_ai.tool.name", tool),
                          attr("gen_ai.tool.call.result", result)]})
}

/// An OTLP/JSON export request of `spans`, all from one agent.
fn export(spans: Vec<Value>) -> Vec<u8> {
    json!({"resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "issue-19-agent"}}]},
        "scopeSpans": [{"spans": spans}]
    }]})
    .to_string()
    .into_bytes()
}

/// POSTs `body` to `/v1/traces` on a new connection: the answer's status, head and
/// body, or `None` when no whole answer came within `within`.
fn raw_post(
    port: u16,
    content_type: &str,
    body: &[u8],
    within: Duration,
) -> Option<(u16, String, Vec<u8>)> {
    raw_post_as(port, content_type, None, body, within)
}

/// [`raw_post`] of OTLP/JSON with `authorization`, if any.
fn raw_post_with(
    port: u16,
    authorization: Option<&str>,
    body: &[u8],
    within: Duration,
) -> Option<(u16, String, Vec<u8>)> {
    raw_post_as(port, "application/json", authorization, body, within)
}

fn raw_post_as(
    port: u16,
    content_type: &str,
    authorization: Option<&str>,
    body: &[u8],
    within: Duration,
) -> Option<(u16, String, Vec<u8>)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    let authorization = authorization
        .map(|a| format!("Authorization: {a}\r\n"))
        .unwrap_or_default();
    let head = format!(
        "POST /v1/traces HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: {content_type}\r\n{authorization}Content-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).ok()?;
    stream.write_all(body).ok()?;
    read_answer(&mut stream, within)
}

/// Reads one HTTP answer (its body by `Content-Length`) within `within`.
fn read_answer(stream: &mut TcpStream, within: Duration) -> Option<(u16, String, Vec<u8>)> {
    let deadline = Instant::now() + within;
    let mut got = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&got[..end]).into_owned();
            let status = head.split(' ').nth(1)?.parse::<u16>().ok()?;
            let length = head
                .lines()
                .find_map(|line| {
                    let (name, value) = line.split_once(':')?;
                    name.trim()
                        .eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse::<usize>().ok())
                        .flatten()
                })
                .unwrap_or(0);
            let start = end + 4;
            if got.len() >= start + length {
                return Some((status, head, got[start..start + length].to_vec()));
            }
        }
        let left = deadline.checked_duration_since(Instant::now())?;
        stream
            .set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .ok()?;
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return None,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
}

/// What the issue's attacker did: headers announcing a body of 100000 bytes, one byte
/// of it, then silence.
fn stall(port: u16) -> TcpStream {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream
        .write_all(
            b"POST /v1/traces HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{",
        )
        .expect("write");
    stream
}

/// Whether `done` came to hold within `within`.
fn wait_for(within: Duration, done: impl Fn() -> bool) -> bool {
    let deadline = Instant::now() + within;
    while !done() {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

#[test]
fn issue_19_a_stalled_body_does_not_stop_other_exporters() {
    let publisher = MockPublisher::default();
    let read_timeout = Duration::from_secs(3);
    let (receiver, counters) = mock_receiver(
        &publisher,
        read_timeout,
        DEFAULT_MAX_CONNECTIONS,
        DEFAULT_MAX_EVENT_BYTES,
    );
    let port = receiver.local_addr().port();
    let mut stalled = stall(port);
    assert!(
        wait_for(Duration::from_secs(5), || receiver.open_connections() == 1),
        "the stalled request was never taken"
    );

    let asked = Instant::now();
    let answer = raw_post(
        port,
        "application/json",
        &export(vec![tool_span("01", "lookup", "ok")]),
        Duration::from_secs(10),
    );
    let waited = asked.elapsed();
    let (status, _, body) = answer.expect("another exporter is answered while one stalls");
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert!(
        waited < read_timeout,
        "answered after {waited:?}: it waited for the stalled body's deadline"
    );
    assert_eq!(publisher.published().len(), 2, "one call, one result");

    // At its deadline the stalled request is answered 408 and its connection closed.
    let (status, _, body) = read_answer(&mut stalled, read_timeout * 3)
        .expect("the stalled client is answered at its deadline");
    assert_eq!(status, 408, "{}", String::from_utf8_lossy(&body));
    assert!(
        wait_for(Duration::from_secs(5), || receiver.open_connections() == 0),
        "the stalled request kept its place past its deadline"
    );
    assert_eq!(counters.http.timed_out.load(Ordering::Relaxed), 1);
    assert_eq!(counters.requests.load(Ordering::Relaxed), 1);
}

/// Issue 19: under tiny_http, a request announcing a huge body and then closing made
/// the server allocate the declared length when it dropped the request: one request
/// aborted the process. Now it is answered 413 unread and the receiver goes on.
#[test]
fn issue_19_a_huge_declared_body_is_refused_unread_and_the_receiver_goes_on() {
    let publisher = MockPublisher::default();
    let (receiver, counters) = mock_receiver(
        &publisher,
        Duration::from_secs(10),
        DEFAULT_MAX_CONNECTIONS,
        DEFAULT_MAX_EVENT_BYTES,
    );
    let port = receiver.local_addr().port();
    for _ in 0..3 {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        stream
            .write_all(
                b"POST /v1/traces HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 1099511627776\r\n\r\n{",
            )
            .expect("write");
        let (status, _, body) =
            read_answer(&mut stream, Duration::from_secs(10)).expect("answered");
        assert_eq!(status, 413, "{}", String::from_utf8_lossy(&body));
    }
    let (status, _, body) = raw_post(
        port,
        "application/json",
        &export(vec![tool_span("01", "lookup", "ok")]),
        Duration::from_secs(10),
    )
    .expect("the receiver is still there");
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(counters.bad_requests.load(Ordering::Relaxed), 3);
    assert_eq!(publisher.published().len(), 2);
}

#[test]
fn issue_19_past_max_connections_an_exporter_gets_503_at_once() {
    let publisher = MockPublisher::default();
    let (receiver, counters) = mock_receiver(
        &publisher,
        Duration::from_secs(60),
        1,
        DEFAULT_MAX_EVENT_BYTES,
    );
    let port = receiver.local_addr().port();
    let stalled = stall(port);
    assert!(
        wait_for(Duration::from_secs(5), || receiver.open_connections() == 1),
        "the stalled request was never taken"
    );

    let request = export(vec![tool_span("01", "lookup", "ok")]);
    let asked = Instant::now();
    let (status, head, _) = raw_post(port, "application/json", &request, Duration::from_secs(10))
        .expect("a full receiver answers at once");
    assert_eq!(status, 503, "{head}");
    assert!(
        head.to_ascii_lowercase().contains("retry-after: 1"),
        "{head}"
    );
    assert!(asked.elapsed() < Duration::from_secs(5));
    assert_eq!(counters.http.refused_connections.load(Ordering::Relaxed), 1);
    assert!(publisher.published().is_empty());

    // The stalled client going away gives the slot back.
    drop(stalled);
    assert!(
        wait_for(Duration::from_secs(10), || receiver.open_connections() == 0),
        "the slot outlived its client"
    );
    let (status, _, body) =
        raw_post(port, "application/json", &request, Duration::from_secs(10)).expect("answered");
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(publisher.published().len(), 2);
}

#[test]
fn issue_19_spans_that_cannot_be_published_are_partial_success_not_503() {
    let publisher = MockPublisher {
        refuse_tool: Some("refused_tool"),
        ..MockPublisher::default()
    };
    let (receiver, counters) = mock_receiver(
        &publisher,
        Duration::from_secs(10),
        DEFAULT_MAX_CONNECTIONS,
        4096,
    );
    let port = receiver.local_addr().port();
    // A valid span, one whose result is over the event limit, one the publisher refuses.
    let request = export(vec![
        tool_span("01", "lookup", "ok"),
        tool_span("02", "big_tool", &"x".repeat(8192)),
        tool_span("03", "refused_tool", "ok"),
    ]);
    let (status, _, body) =
        raw_post(port, "application/json", &request, Duration::from_secs(10)).expect("answered");
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let answer: Value = serde_json::from_slice(&body).expect("a JSON answer");
    assert_eq!(answer["partialSuccess"]["rejectedSpans"], "2", "{answer}");
    let message = answer["partialSuccess"]["errorMessage"]
        .as_str()
        .unwrap_or_default();
    assert!(
        message.contains("over the 4096-byte event limit"),
        "{message}"
    );
    assert!(message.contains("too large for the broker"), "{message}");

    let published = publisher.published();
    let tools: Vec<&str> = published.iter().filter_map(Event::tool).collect();
    assert_eq!(
        tools,
        ["lookup", "lookup"],
        "the valid span's call and result, once"
    );
    assert_eq!(publisher.calls.load(Ordering::SeqCst), 1);
    assert_eq!(counters.requests.load(Ordering::Relaxed), 1);
    assert_eq!(counters.publish_failures.load(Ordering::Relaxed), 0);
    assert_eq!(counters.rejected_spans.load(Ordering::Relaxed), 2);
    assert_eq!(counters.tool_spans.load(Ordering::Relaxed), 1);
}

#[test]
fn issue_19_publishing_that_fails_for_now_is_still_503_with_retry_after() {
    let publisher = MockPublisher {
        unavailable: true,
        ..MockPublisher::default()
    };
    let (receiver, counters) = mock_receiver(
        &publisher,
        Duration::from_secs(10),
        DEFAULT_MAX_CONNECTIONS,
        DEFAULT_MAX_EVENT_BYTES,
    );
    let port = receiver.local_addr().port();
    let request = export(vec![tool_span("01", "lookup", "ok")]);
    let (status, head, body) =
        raw_post(port, "application/json", &request, Duration::from_secs(10)).expect("answered");
    assert_eq!(status, 503, "{}", String::from_utf8_lossy(&body));
    assert!(
        head.to_ascii_lowercase().contains("retry-after: 1"),
        "{head}"
    );
    assert_eq!(counters.publish_failures.load(Ordering::Relaxed), 1);
    assert_eq!(counters.http.refused_connections.load(Ordering::Relaxed), 0);
}

/// End to end, as the issue's attacker found it (with a 1 MiB event limit): a
/// span with a result over `[limits] max_event_bytes` was answered 503 forever (the
/// producer refused the event), and the valid span of its batch was published again
/// at every retry.
#[test]
fn issue_19_a_span_over_the_event_limit_is_rejected_once_not_retried_forever() {
    let (_dir, broker, port, engine) = receiving_engine();
    let brokers = broker.bootstrap().to_string();
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let url = format!("http://127.0.0.1:{port}/v1/traces");
    let post = |body: &[u8]| -> (u16, Value) {
        let mut r = agent
            .post(&url)
            .header("Content-Type", "application/json")
            .send(body)
            .expect("request");
        let text = r.body_mut().read_to_string().unwrap_or_default();
        (
            r.status().as_u16(),
            serde_json::from_str(&text).unwrap_or(Value::Null),
        )
    };

    let huge = "x".repeat(TEST_MAX_EVENT_BYTES + 100_000);
    let (status, answer) = post(&export(vec![
        tool_span("01", "lookup", "ok"),
        tool_span("02", "lookup", &huge),
    ]));
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["partialSuccess"]["rejectedSpans"], "1", "{answer}");
    assert!(
        answer["partialSuccess"]["errorMessage"]
            .as_str()
            .is_some_and(|m| m.contains("event limit")),
        "{answer}"
    );
    // A later span of the same agent (so the same partition) marks where the first
    // request's events end.
    let (status, answer) = post(&export(vec![tool_span("03", "lookup", "ok")]));
    assert_eq!(status, 200, "{answer}");
    let span = |id: &str| format!("eee19b7ec3c1b1{id}");
    let events = read_until(&brokers, "toolgate.events", |found| {
        found.iter().any(|e| e.json()["span_id"] == span("03"))
    });
    stop(engine);
    let of = |id: &str| {
        events
            .iter()
            .filter(|e| e.json()["span_id"] == span(id))
            .count()
    };
    assert_eq!(
        (of("01"), of("02"), of("03")),
        (2, 0, 2),
        "the valid spans once each, the oversized one never"
    );
}
