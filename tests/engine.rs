//! The streaming engine end to end on librdkafka's mock cluster (the real Kafka
//! protocol over loopback): events in; findings, signed decisions and dead letters
//! out; checkpoints that a restart resumes from without loss.

mod common;

use std::collections::BTreeMap;

use common::kafka::*;
use serde_json::Value;
use toolgate::engine::embedded::EmbeddedBroker;
use toolgate_protocol::config::TopicsConfig;
use toolgate_protocol::decision::{Decision, DecisionAction};

#[test]
fn events_become_findings_signed_decisions_and_dead_letters() {
    let broker = EmbeddedBroker::start(&TopicsConfig::default(), PARTITIONS).expect("broker");
    events_become_findings_decisions_and_dead_letters(broker.bootstrap());
}

#[test]
fn a_restart_resumes_from_the_checkpoint_without_loss_or_repeats() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = EmbeddedBroker::start(&TopicsConfig::default(), PARTITIONS).expect("broker");
    let brokers = broker.bootstrap().to_string();
    let config = config(dir.path());
    let first = sample("-a");
    let second = sample("-b");
    let first_ids = offline_finding_ids(dir.path(), &first);
    let all: Vec<_> = first.iter().chain(&second).cloned().collect();
    let all_ids = offline_finding_ids(dir.path(), &all);

    produce(&brokers, &first);
    let engine = start(&config, &brokers);
    await_findings(&brokers, &first_ids);
    let one = stop(engine);
    assert_eq!(one.events, 54);
    assert!(one.checkpoints >= 1 && one.checkpoint_failures == 0);

    produce(&brokers, &second);
    let engine = start(&config, &brokers);
    let findings = await_findings(&brokers, &all_ids);
    let two = stop(engine);
    assert_eq!(
        two.events, 54,
        "the restart read only what the first run had not checkpointed"
    );
    assert_eq!(
        finding_ids(&findings),
        all_ids,
        "two runs with a restart between find what one replay of everything finds"
    );
}

#[test]
fn held_calls_get_a_verdict_block_when_a_finding_points_at_them_allow_otherwise() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = EmbeddedBroker::start(&TopicsConfig::default(), PARTITIONS).expect("broker");
    let brokers = broker.bootstrap().to_string();
    let config = config(dir.path());
    // The sample's exfiltration call (a provenance block) and every other call, held.
    let mut events = sample("");
    let mut held = BTreeMap::new();
    for (_, bytes) in &mut events {
        let mut v: Value = serde_json::from_slice(bytes).expect("event");
        if v["kind"] == "tool_call" {
            v["await_verdict"] = Value::Bool(true);
            held.insert(
                v["call_id"].as_str().expect("call_id").to_string(),
                v["agent_id"].as_str().expect("agent_id").to_string(),
            );
            *bytes = serde_json::to_vec(&v).expect("encode");
        }
    }
    let exfiltration = "call_UIxyFTg4BR87BCmnbk2A5cts";
    assert!(held.contains_key(exfiltration));
    produce(&brokers, &events);
    let engine = start(&config, &brokers);
    let records = read_all(&brokers, "toolgate.decisions", held.len() + 1);
    stop(engine);

    let verifier = verifier(&config);
    let mut verdicts = BTreeMap::new();
    for r in &records {
        let d: Decision = serde_json::from_slice(&r.payload).expect("decision");
        verifier.verify(&d).expect("signed");
        if let Some(call) = &d.scope.call_id {
            assert_eq!(held[call], d.scope.agent_id);
            verdicts.insert(call.clone(), d.action);
        }
    }
    assert_eq!(verdicts.len(), held.len(), "every held call is answered");
    for (call, action) in &verdicts {
        let want = if call == exfiltration {
            DecisionAction::Block
        } else {
            DecisionAction::Allow
        };
        assert_eq!(*action, want, "{call}");
    }
}

#[test]
fn two_engines_share_the_group_and_a_kill_9_loses_nothing() {
    let broker = EmbeddedBroker::start(&TopicsConfig::default(), PARTITIONS).expect("broker");
    two_engines_one_killed_lose_nothing(broker.bootstrap());
}

fn http_get(addr: &str, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).expect("connect");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .expect("send");
    let mut text = String::new();
    stream.read_to_string(&mut text).expect("read");
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status");
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    (status, body.to_string())
}

#[test]
fn metrics_and_health_are_served_and_parse_as_prometheus_text() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = EmbeddedBroker::start(&TopicsConfig::default(), PARTITIONS).expect("broker");
    let brokers = broker.bootstrap().to_string();
    let mut config = config(dir.path());
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let addr = format!("127.0.0.1:{port}");
    config.engine.metrics_listen = Some(addr.clone());
    let mut events = sample("");
    events.push(("bad".into(), b"not json".to_vec()));
    produce(&brokers, &events);
    let expected = offline_finding_ids(dir.path(), &events[..events.len() - 1]);
    let engine = start(&config, &brokers);
    await_findings(&brokers, &expected);
    // The statistics that carry the lag come every 5 s.
    std::thread::sleep(std::time::Duration::from_secs(6));
    let (status, health) = http_get(&addr, "/healthz");
    assert_eq!((status, health.as_str()), (200, "ok\n"));
    let (status, text) = http_get(&addr, "/metrics");
    assert_eq!(status, 200);
    assert_eq!(http_get(&addr, "/nothing").0, 404);
    stop(engine);

    let python = common::python_venv("test-venv-prometheus", "requirements-prometheus.txt");
    let mut child = std::process::Command::new(python)
        .arg(common::repo().join("tests/python/parse_prometheus.py"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python");
    std::io::Write::write_all(&mut child.stdin.take().expect("stdin"), text.as_bytes())
        .expect("write");
    let parsed = child.wait_with_output().expect("parse");
    let samples = String::from_utf8_lossy(&parsed.stdout).into_owned();
    assert!(
        parsed.status.success(),
        "{}\n{text}",
        String::from_utf8_lossy(&parsed.stderr)
    );
    for line in [
        "counter toolgate_engine_events_total {} 54",
        "counter toolgate_engine_dead_letters_total {} 1",
        "counter toolgate_engine_dead_letters_by_kind_total {kind=invalid_json} 1",
        "counter toolgate_engine_findings_by_detector_total {detector=provenance}",
        "gauge toolgate_engine_consumer_lag {partition=",
        "histogram toolgate_engine_processing_latency_seconds_count {} 54",
        "gauge toolgate_provenance_index_agents {partition=",
    ] {
        assert!(samples.contains(line), "no {line:?} in:\n{samples}");
    }
}

#[test]
fn with_log_format_json_every_log_line_is_a_json_object_with_its_fields() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = EmbeddedBroker::start(&TopicsConfig::default(), PARTITIONS).expect("broker");
    config(dir.path());
    let engine = EngineProcess::spawn_with(
        dir.path(),
        broker.bootstrap(),
        "json",
        &["--log-format", "json"],
    );
    engine.await_log("assigned partitions", std::time::Duration::from_secs(30));
    let log = engine.terminate();
    let lines: Vec<Value> = log
        .lines()
        // The run's report follows the logs, pretty-printed on stderr.
        .take_while(|l| *l != "{")
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert!(lines.len() >= 3, "{log}");
    for l in &lines {
        for key in ["timestamp", "level", "target", "message"] {
            assert!(l.get(key).is_some(), "no {key}: {l}");
        }
    }
    let assigned = lines
        .iter()
        .find(|l| l["message"] == "assigned partitions")
        .expect("an assignment is logged");
    assert_eq!(assigned["level"], "INFO");
    assert!(assigned["partitions"].as_str().is_some(), "{assigned}");
    assert!(lines.iter().any(|l| l["message"] == "revoked partitions"));
}
