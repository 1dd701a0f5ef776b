//! The sink's Kafka link against librdkafka's mock cluster (the real Kafka protocol
//! over loopback): the shared scenarios (events keyed and ordered by agent, an outage
//! and a restart that lose nothing, signed decisions from the agent's own partition),
//! plus what only a mock can stage cheaply: a full spool, a `kill -9` while the broker
//! is down, and held calls answered by a stand-in engine.

use crate::common;

use std::time::{Duration, Instant};

use common::*;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;
use serde_json::{Value, json};
use toolgate_protocol::decision::DecisionSigner;
use toolgate_sink::library::{Sink, Verdict};

/// The mock cluster, one broker, with the toolgate topics.
struct Mock(MockCluster<'static, DefaultProducerContext>);

impl Broker for Mock {
    fn bootstrap(&self) -> String {
        self.0.bootstrap_servers()
    }
    fn down(&self) {
        self.0.broker_down(1).expect("down");
    }
    fn up(&self) {
        self.0.broker_up(1).expect("up");
    }
}

#[test]
fn events_reach_kafka_keyed_by_agent_in_order_on_the_agents_partition() {
    events_reach_kafka_keyed_by_agent_in_order(&Mock(cluster()));
}

#[test]
fn a_broker_outage_and_a_sink_restart_lose_nothing() {
    an_outage_and_a_restart_lose_nothing(&Mock(cluster()));
}

#[test]
fn signed_decisions_for_this_agent_are_applied_and_forged_ones_ignored() {
    signed_decisions_are_applied_and_forged_ones_ignored(&Mock(cluster()));
}

#[test]
fn a_proxy_killed_while_the_broker_is_down_loses_nothing_after_a_restart() {
    a_killed_proxy_loses_nothing_after_a_restart(&Mock(cluster()));
}

#[test]
fn a_full_spool_drops_counts_and_reports_once_the_broker_is_back() {
    let cluster = cluster();
    let brokers = cluster.bootstrap_servers();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config(dir.path(), "agent-k3", 15_000, "spool_max_bytes = 1048576");
    cluster.broker_down(1).expect("down");
    let mut sink = Sink::with_brokers(&config, "crm", Some(&brokers)).expect("sink");
    // About 400 bytes an event: 6,000 events are more than 1 MiB.
    traffic(&mut sink, 3000, "flood");
    std::thread::sleep(Duration::from_millis(300));
    cluster.broker_up(1).expect("up");
    let shipped = sink.close().expect("close").shipped.expect("kafka");
    assert!(shipped.dropped > 0, "{shipped:?}");
    assert_eq!(shipped.drop_reports, 1, "{shipped:?}");
    assert_eq!(shipped.pending, 0, "{shipped:?}");
    assert_eq!(shipped.delivered + shipped.dropped, 6001, "{shipped:?}");

    let findings = read_all(&brokers, "toolgate.findings", 1);
    assert_eq!(findings.len(), 1);
    let (_, key, finding) = &findings[0];
    assert_eq!(key, "agent-k3");
    assert_eq!(finding["rule_id"], "sink-events-dropped");
    assert_eq!(finding["count"], shipped.dropped);
    let bytes = serde_json::to_vec(finding).unwrap();
    toolgate_protocol::Finding::decode(&bytes, 1 << 20).expect("a valid toolgate.finding.v1");
}

fn cluster() -> MockCluster<'static, DefaultProducerContext> {
    let cluster = MockCluster::new(1).expect("mock cluster");
    for topic in [EVENTS, "toolgate.findings", "toolgate.decisions"] {
        cluster
            .create_topic(topic, PARTITIONS, 1)
            .expect("create topic");
    }
    cluster
}

const HOLDS: &str = r#"
[[sink.hold]]
name = "egress"
tools = ["send_*"]
hold_timeout_ms = 10000
fail_mode = "fail_closed"

[[sink.hold]]
name = "posts"
tools = ["post_*"]
hold_timeout_ms = 300
fail_mode = "fail_closed"
"#;

#[test]
fn held_egress_calls_go_ahead_or_are_refused_on_the_engines_verdict() {
    let cluster = cluster();
    let brokers = cluster.bootstrap_servers();
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = DecisionSigner::from_seed("engine-1", [11; 32]);
    let config = config(
        dir.path(),
        "agent-k6",
        10_000,
        &format!(
            "\n[sink.decision_keys]\nengine-1 = \"{}\"\n{HOLDS}",
            engine.public_key_base64()
        ),
    );
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let answering = verdict_engine(brokers.clone(), engine, stop.clone());
    let mut sink = Sink::with_brokers(&config, "mail", Some(&brokers)).expect("sink");

    let send = |sink: &mut Sink, tool: &str, to: &str| {
        let args = json!({"to": to, "body": "quarterly numbers"});
        let started = Instant::now();
        let verdict = sink
            .before_call(tool, args.as_object().unwrap())
            .expect("call");
        (verdict, started.elapsed())
    };
    let (allowed, _) = send(&mut sink, "send_email", "cfo@example.com");
    assert!(matches!(allowed, Verdict::Forward { .. }), "{allowed:?}");
    let (blocked, _) = send(&mut sink, "send_email", "drop@attacker.test");
    let Verdict::Refuse { result, .. } = blocked else {
        panic!("{blocked:?}")
    };
    let text = result["content"][0]["text"].as_str().unwrap();
    // The engine saw the address redacted, as every event leaves the sink.
    assert!(
        text.contains("@attacker.test is outside the organisation"),
        "{text}"
    );

    // Nobody answers for post_*: after 300 ms, fail_closed refuses.
    let (unanswered, waited) = send(&mut sink, "post_message", "drop@attacker.test");
    let Verdict::Refuse { result, .. } = unanswered else {
        panic!("{unanswered:?}")
    };
    assert!(waited >= Duration::from_millis(300), "{waited:?}");
    let text = result["content"][0]["text"].as_str().unwrap();
    assert!(text.contains("no verdict within 300 ms"), "{text}");

    sink.close().expect("close");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert_eq!(answering.join().expect("engine"), 2);

    // Issue 22: each call's event said `held`; the two refusals are reported as the
    // calls' results, naming what refused them.
    let events = read_all(&brokers, EVENTS, 5);
    let settled: Vec<(&str, &str)> = events
        .iter()
        .filter(|(_, _, e)| e["kind"] == "tool_result")
        .map(|(_, _, e)| {
            assert_eq!(e["result"]["isError"], true, "{e}");
            (
                e["sink_action"]["action"].as_str().unwrap_or_default(),
                e["sink_action"]["rule"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(settled.len(), 2, "{events:?}");
    assert_eq!(settled[0].0, "blocked");
    assert!(settled[0].1.starts_with("decision.verdict-"), "{settled:?}");
    assert_eq!(settled[1], ("blocked", "hold.posts"));
}

#[test]
fn the_stdio_proxy_holds_an_egress_call_without_holding_up_the_session() {
    use std::io::{BufRead, Write};
    let cluster = cluster();
    let brokers = cluster.bootstrap_servers();
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = DecisionSigner::from_seed("engine-1", [12; 32]);
    let config = hold_config(dir.path(), "agent-k7", "echo", &engine);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let answering = verdict_engine(brokers.clone(), engine, stop.clone());
    let mut proxy = stdio_proxy_with(&config, &brokers);
    let mut stdin = proxy.stdin.take().expect("stdin");
    let mut stdout = std::io::BufReader::new(proxy.stdout.take().expect("stdout"));
    let call = |id: u32, to: &str| {
        json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
            "params": {"name": "echo", "arguments": {"text": "numbers", "to": to}}})
        .to_string()
    };
    // Both held calls and a ping go out at once; the ping is answered while the calls
    // wait for their verdicts: before the allowed call, which reaches the server only
    // once its verdict is in. (The refused call's answer needs no server and may come
    // before the ping's under load.)
    for line in [
        call(1, "cfo@example.com"),
        call(2, "drop@attacker.test"),
        r#"{"jsonrpc":"2.0","id":3,"method":"ping"}"#.to_string(),
    ] {
        writeln!(stdin, "{line}").expect("write");
    }
    stdin.flush().expect("flush");
    let mut answers = Vec::new();
    for _ in 0..3 {
        let mut line = String::new();
        stdout.read_line(&mut line).expect("read");
        answers.push(serde_json::from_str::<Value>(&line).expect("JSON"));
    }
    let position = |id: u32| {
        answers
            .iter()
            .position(|a| a["id"] == id)
            .expect("answered")
    };
    assert!(
        position(3) < position(1),
        "the ping is not held behind the calls: {answers:?}"
    );
    let by_id = |id: u32| answers.iter().find(|a| a["id"] == id).expect("answered");
    assert_eq!(by_id(1)["result"]["content"][0]["text"], "numbers");
    assert_eq!(by_id(2)["result"]["isError"], true);
    let text = by_id(2)["result"]["content"][0]["text"].as_str().unwrap();
    assert!(text.contains("outside the organisation"), "{text}");

    drop(stdin);
    let status = proxy.wait().expect("exit");
    assert_eq!(status.code(), Some(3));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert_eq!(answering.join().expect("engine"), 2);
}

#[test]
fn the_http_proxy_holds_an_egress_call_until_the_verdict() {
    let cluster = cluster();
    let brokers = cluster.bootstrap_servers();
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = DecisionSigner::from_seed("engine-1", [13; 32]);
    let config = hold_config(dir.path(), "agent-k8", "send_*", &engine);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let answering = verdict_engine(brokers.clone(), engine, stop.clone());

    // The upstream: answers every call with the tool's name; counts what reached it.
    let upstream = tiny_http::Server::http("127.0.0.1:0").expect("upstream");
    let port = upstream.server_addr().to_ip().expect("ip").port();
    let reached = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    {
        let (reached, stop) = (reached.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let Ok(Some(mut request)) = upstream.recv_timeout(Duration::from_millis(50)) else {
                    continue;
                };
                let mut body = String::new();
                let _ = request.as_reader().read_to_string(&mut body);
                let call: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
                let to = call["params"]["arguments"]["to"]
                    .as_str()
                    .unwrap_or("")
                    .to_string();
                reached.lock().unwrap().push(to);
                let answer = json!({"jsonrpc": "2.0", "id": call["id"], "result": {"content": [{"type": "text", "text": "sent"}]}});
                let _ = request.respond(tiny_http::Response::from_string(answer.to_string()));
            }
        });
    }

    let upstream = format!("http://127.0.0.1:{port}/mcp");
    let config = config.display().to_string();
    let (url, sink) = start_http_sink(&[
        "--config",
        &config,
        "--brokers",
        &brokers,
        "--server",
        "mail",
        "--upstream",
        &upstream,
    ]);

    let post = |id: u32, to: &str| -> Value {
        let body = json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
            "params": {"name": "send_email", "arguments": {"to": to}}});
        let mut response = ureq::post(&url)
            .header("Content-Type", "application/json")
            .send(body.to_string())
            .expect("request");
        serde_json::from_str(&response.body_mut().read_to_string().expect("body")).expect("JSON")
    };
    let allowed = post(1, "cfo@example.com");
    assert_eq!(allowed["result"]["content"][0]["text"], "sent", "{allowed}");
    let refused = post(2, "drop@attacker.test");
    assert_eq!(refused["result"]["isError"], true, "{refused}");
    let text = refused["result"]["content"][0]["text"].as_str().unwrap();
    assert!(text.contains("outside the organisation"), "{text}");
    assert_eq!(
        *reached.lock().unwrap(),
        ["cfo@example.com"],
        "the refused call never reached the server"
    );

    assert!(sink.terminate().success());
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert_eq!(answering.join().expect("engine"), 2);
}
