//! The engine's OTLP/HTTP receiver end to end on the mock cluster: an agent traced by
//! the official OpenTelemetry Python SDK (its OTLP/HTTP protobuf exporter) replays the
//! AgentDojo sample as GenAI `execute_tool` spans; the spans become events on the events
//! topic and the engine finds the injected payment as it does from a sink's events.
//! Bad requests get the answers OTLP/HTTP specifies. The engine's own metrics, pushed
//! with the OpenTelemetry SDK, are parsed by the OpenTelemetry project's protobuf
//! classes.

mod common;

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

use common::kafka::*;
use common::{python_venv, repo};
use serde_json::{Value, json};
use toolgate::engine::embedded::EmbeddedBroker;
use toolgate_protocol::config::{Config, ServerConfig, TopicsConfig};

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
    std::thread::JoinHandle<toolgate::engine::EngineReport>,
);

/// An engine on a fresh embedded broker, its receiver listening on the returned port.
fn receiving_engine() -> (tempfile::TempDir, EmbeddedBroker, u16, Engine) {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = EmbeddedBroker::start(&TopicsConfig::default(), PARTITIONS).expect("broker");
    let port = free_port();
    let engine = start(&otlp_config(dir.path(), port), broker.bootstrap());
    await_listening(port);
    (dir, broker, port, engine)
}

#[test]
fn genai_tool_spans_from_the_opentelemetry_sdk_become_events_and_findings() {
    let (_dir, broker, port, engine) = receiving_engine();
    let brokers = broker.bootstrap().to_string();

    let python = python_venv("test-venv-otel", "requirements-otel.txt");
    let out = Command::new(python)
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
    let big = vec![b' '; 9 << 20];
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
