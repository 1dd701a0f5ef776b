//! The sink's Kafka link against librdkafka's mock cluster (the real Kafka protocol
//! over loopback): events keyed and ordered by agent, an outage and a restart that lose
//! nothing, a full spool that is counted and reported, and signed decisions read from
//! the agent's own partition.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::{Value, json};
use toolgate_protocol::config::Config;
use toolgate_protocol::decision::{Decision, DecisionAction, DecisionSigner, Scope};
use toolgate_protocol::partition::{PARTITIONER, partition_for};
use toolgate_protocol::{Event, Timestamp};
use toolgate_sink::library::{Sink, Verdict};

const EVENTS: &str = "toolgate.events";
const PARTITIONS: i32 = 4;

fn config(dir: &Path, agent: &str, flush_timeout_ms: u64, extra: &str) -> Config {
    let text = format!(
        r#"
[sink]
agent_id = "{agent}"
spool_dir = "{}"
flush_timeout_ms = {flush_timeout_ms}
{extra}
"#,
        dir.join("spool").display()
    );
    let path = dir.join(format!("toolgate-{agent}.toml"));
    std::fs::write(&path, text).expect("config");
    Config::load(&path).expect("valid config")
}

fn cluster() -> MockCluster<'static, rdkafka::producer::DefaultProducerContext> {
    let cluster = MockCluster::new(1).expect("mock cluster");
    for topic in [EVENTS, "toolgate.findings", "toolgate.decisions"] {
        cluster
            .create_topic(topic, PARTITIONS, 1)
            .expect("create topic");
    }
    cluster
}

/// Every message of `topic`, per partition in offset order.
fn read_all(brokers: &str, topic: &str, expected: usize) -> Vec<(i32, String, Value)> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "test-reader")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .expect("partition");
    }
    consumer.assign(&tpl).expect("assign");
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => out.push((
                m.partition(),
                String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned(),
                serde_json::from_slice(m.payload().unwrap_or_default()).expect("JSON"),
            )),
            Some(Err(e)) => panic!("reading {topic}: {e}"),
            None if out.len() >= expected => break,
            None => {}
        }
    }
    out
}

/// Lists one tool, then makes `calls` calls with results.
fn traffic(sink: &mut Sink, calls: usize, tag: &str) {
    let tools = json!({"tools": [{"name": "search", "description": "Search tickets",
        "inputSchema": {"type": "object"}}]});
    sink.tools_listed(tools.as_object().unwrap())
        .expect("listing");
    for i in 0..calls {
        let args = json!({"query": format!("{tag} {i}")});
        match sink
            .before_call("search", args.as_object().unwrap())
            .expect("call")
        {
            Verdict::Forward { call_id } => {
                let result = json!({"content": [{"type": "text", "text": format!("hit {i}")}]});
                sink.after_result(&call_id, result.as_object().unwrap())
                    .expect("result");
            }
            Verdict::Refuse { result, .. } => panic!("refused: {result}"),
        }
    }
}

/// The calls' query arguments, in the order the topic holds them.
fn queries(messages: &[(i32, String, Value)]) -> Vec<String> {
    messages
        .iter()
        .filter(|(_, _, v)| v["kind"] == "tool_call")
        .map(|(_, _, v)| v["arguments"]["query"].as_str().unwrap_or("").to_string())
        .collect()
}

#[test]
fn events_reach_kafka_keyed_by_agent_in_order_on_the_agents_partition() {
    let cluster = cluster();
    let brokers = cluster.bootstrap_servers();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config(dir.path(), "agent-k1", 10_000, "");
    let mut sink = Sink::with_brokers(&config, "crm", Some(&brokers)).expect("sink");
    traffic(&mut sink, 50, "q");
    let written = sink.close().expect("close");
    let shipped = written.shipped.expect("kafka transport");
    assert_eq!(
        (shipped.delivered, shipped.pending, shipped.dropped),
        (101, 0, 0)
    );

    let messages = read_all(&brokers, EVENTS, 101);
    assert_eq!(messages.len(), 101);
    let partition = partition_for(b"agent-k1", PARTITIONS);
    for (p, key, value) in &messages {
        assert_eq!((p, key.as_str()), (&partition, "agent-k1"));
        let bytes = serde_json::to_vec(value).unwrap();
        Event::decode(&bytes).expect("a valid toolgate.event.v1");
    }
    assert_eq!(messages[0].2["kind"], "tool_list");
    let expected: Vec<String> = (0..50).map(|i| format!("q {i}")).collect();
    assert_eq!(queries(&messages), expected);
    let ids: Vec<&str> = messages
        .iter()
        .map(|(_, _, v)| v["event_id"].as_str().unwrap())
        .collect();
    let mut sorted = ids.clone();
    sorted.sort_unstable();
    assert_eq!(ids, sorted, "in the order the sink saw them");
}

#[test]
fn a_broker_outage_and_a_sink_restart_lose_nothing() {
    let cluster = cluster();
    let brokers = cluster.bootstrap_servers();
    let dir = tempfile::tempdir().expect("tempdir");

    // The broker goes down mid-stream for 30 s; the first sink stops while it is down,
    // and the second starts once it is back.
    let first_config = config(dir.path(), "agent-k2", 500, "");
    let mut sink = Sink::with_brokers(&first_config, "crm", Some(&brokers)).expect("sink");
    traffic(&mut sink, 10, "before");
    std::thread::sleep(Duration::from_millis(500));
    cluster.broker_down(1).expect("down");
    traffic(&mut sink, 20, "during");
    let first = sink.close().expect("close").shipped.expect("kafka");
    assert!(
        first.pending >= 40,
        "the outage's events wait in the spool: {first:?}"
    );

    // A new sink on the same spool replays them before its own, once the broker is back.
    let second_config = config(dir.path(), "agent-k2", 15_000, "");
    std::thread::sleep(Duration::from_secs(30));
    cluster.broker_up(1).expect("up");
    let mut sink = Sink::with_brokers(&second_config, "crm", Some(&brokers)).expect("sink");
    traffic(&mut sink, 10, "after");
    let second = sink.close().expect("close").shipped.expect("kafka");
    assert_eq!((second.pending, second.dropped), (0, 0), "{second:?}");

    let messages = read_all(&brokers, EVENTS, 84);
    let mut expected: Vec<String> = (0..10).map(|i| format!("before {i}")).collect();
    expected.extend((0..20).map(|i| format!("during {i}")));
    expected.extend((0..10).map(|i| format!("after {i}")));
    // At least once: a record in flight when the first sink stopped may come twice;
    // none is missing, and the first occurrences keep the order.
    let mut seen = std::collections::BTreeSet::new();
    let first_occurrences: Vec<String> = queries(&messages)
        .into_iter()
        .filter(|q| seen.insert(q.clone()))
        .collect();
    assert_eq!(first_occurrences, expected);
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

#[test]
fn signed_decisions_for_this_agent_are_applied_and_forged_ones_ignored() {
    let cluster = cluster();
    let brokers = cluster.bootstrap_servers();
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = DecisionSigner::from_seed("engine-1", [9; 32]);
    let forger = DecisionSigner::from_seed("engine-1", [10; 32]);
    let config = config(
        dir.path(),
        "agent-k4",
        10_000,
        &format!(
            "\n[sink.decision_keys]\nengine-1 = \"{}\"\n",
            engine.public_key_base64()
        ),
    );
    let mut sink = Sink::with_brokers(&config, "mail", Some(&brokers)).expect("sink");
    traffic(&mut sink, 1, "warm-up");

    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("partitioner", PARTITIONER)
        .create()
        .expect("producer");
    let block = |agent: &str, id: &str, signer: &DecisionSigner| {
        let mut d = Decision {
            schema: Default::default(),
            decision_id: id.into(),
            time: Timestamp::now(),
            expires_at: None,
            action: DecisionAction::Block,
            scope: Scope {
                agent_id: agent.into(),
                session_id: None,
                server: Some("mail".into()),
                tool: Some("search".into()),
                call_id: None,
            },
            reason: "exfiltration to an external address".into(),
            finding_ids: vec!["f1".into()],
            key_id: String::new(),
            signature: String::new(),
        };
        signer.sign(&mut d);
        serde_json::to_vec(&d).unwrap()
    };
    // A forged block for this agent and a genuine one for another agent come first;
    // neither may change anything.
    let mut partitions = BTreeMap::new();
    for (agent, id, signer) in [
        ("agent-k4", "forged", &forger),
        ("agent-other", "someone-else", &engine),
    ] {
        let bytes = block(agent, id, signer);
        producer
            .send(
                BaseRecord::to("toolgate.decisions")
                    .key(agent)
                    .payload(&bytes),
            )
            .expect("send");
        partitions.insert(agent, partition_for(agent.as_bytes(), PARTITIONS));
    }
    producer.flush(Duration::from_secs(10)).expect("flush");
    std::thread::sleep(Duration::from_millis(1500));
    traffic(&mut sink, 1, "still allowed");

    let bytes = block("agent-k4", "genuine", &engine);
    producer
        .send(
            BaseRecord::to("toolgate.decisions")
                .key("agent-k4")
                .payload(&bytes),
        )
        .expect("send");
    producer.flush(Duration::from_secs(10)).expect("flush");
    let args = json!({"query": "payroll"});
    let deadline = Instant::now() + Duration::from_secs(15);
    let refused = loop {
        match sink
            .before_call("search", args.as_object().unwrap())
            .expect("call")
        {
            Verdict::Refuse { result, .. } => break result,
            Verdict::Forward { .. } if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50));
            }
            Verdict::Forward { .. } => panic!("the signed block was never applied"),
        }
    };
    assert_eq!(refused["isError"], true);
    let text = refused["content"][0]["text"].as_str().unwrap();
    assert!(
        text.contains("exfiltration to an external address"),
        "{text}"
    );
    sink.close().expect("close");

    // The engine's producer and the sink agree on where an agent's decisions live.
    let decisions = read_all(&brokers, "toolgate.decisions", 3);
    for (partition, key, _) in &decisions {
        assert_eq!(
            *partition,
            partition_for(key.as_bytes(), PARTITIONS),
            "{key}"
        );
    }
    assert_eq!(partitions.len(), 2);
}

/// The proxy as a user runs it, sending to the mock cluster.
fn proxy(dir: &Path, brokers: &str) -> std::process::Child {
    let config = dir.join("proxy.toml");
    let text = format!(
        "[sink]\nagent_id = \"agent-k5\"\nspool_dir = \"{}\"\n",
        dir.join("spool").display()
    );
    std::fs::write(&config, text).expect("config");
    let fixture = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/rug_pull_server.py"
    );
    std::process::Command::new(env!("CARGO_BIN_EXE_toolgate-sink"))
        .args(["stdio", "--config"])
        .arg(&config)
        .args([
            "--brokers",
            brokers,
            "--server",
            "files",
            "--",
            "python3",
            fixture,
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("toolgate-sink")
}

/// Sends each line and reads one answer per line.
fn converse(child: &mut std::process::Child, lines: &[String]) {
    use std::io::{BufRead, Write};
    let stdin = child.stdin.as_mut().expect("stdin");
    let mut stdout = std::io::BufReader::new(child.stdout.as_mut().expect("stdout"));
    for line in lines {
        writeln!(stdin, "{line}").expect("write");
        stdin.flush().expect("flush");
        let mut answer = String::new();
        stdout.read_line(&mut answer).expect("read");
        assert!(answer.contains("\"result\""), "{answer}");
    }
}

fn echo_calls(tag: &str, n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            json!({"jsonrpc": "2.0", "id": format!("{tag}-{i}"), "method": "tools/call",
                "params": {"name": "echo", "arguments": {"text": format!("{tag} {i}")}}})
            .to_string()
        })
        .collect()
}

#[test]
fn a_proxy_killed_while_the_broker_is_down_loses_nothing_after_a_restart() {
    let cluster = cluster();
    let brokers = cluster.bootstrap_servers();
    let dir = tempfile::tempdir().expect("tempdir");
    cluster.broker_down(1).expect("down");

    let mut first = proxy(dir.path(), &brokers);
    converse(&mut first, &echo_calls("killed", 20));
    // The events are spooled right after each answer; give the shipper a moment to
    // write them, then kill the proxy without a chance to flush anything.
    let segment = dir.path().join("spool/files/00000000000000000000.seg");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::fs::metadata(&segment).map_or(0, |m| m.len()) == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(200));
    first.kill().expect("kill -9");
    first.wait().expect("reaped");

    cluster.broker_up(1).expect("up");
    let mut second = proxy(dir.path(), &brokers);
    converse(&mut second, &echo_calls("restarted", 5));
    drop(second.stdin.take());
    let status = second.wait().expect("exit");
    assert_eq!(status.code(), Some(3), "the fixture's own exit code");

    let messages = read_all(&brokers, EVENTS, 50);
    let texts: Vec<String> = messages
        .iter()
        .filter(|(_, _, v)| v["kind"] == "tool_call")
        .map(|(_, _, v)| v["arguments"]["text"].as_str().unwrap_or("").to_string())
        .collect();
    let mut seen = std::collections::BTreeSet::new();
    let first_occurrences: Vec<String> = texts
        .into_iter()
        .filter(|t| seen.insert(t.clone()))
        .collect();
    let mut expected: Vec<String> = (0..20).map(|i| format!("killed {i}")).collect();
    expected.extend((0..5).map(|i| format!("restarted {i}")));
    assert_eq!(first_occurrences, expected);
    let results = messages
        .iter()
        .filter(|(_, _, v)| v["kind"] == "tool_result")
        .count();
    assert!(results >= 25, "{results} results");
}

/// A stand-in for the engine's verdict path: reads `toolgate.events` and answers every
/// call with `await_verdict` and `to` in its arguments: allowed for addresses at
/// example.com, blocked otherwise. Calls to `post_*` are never answered.
fn verdict_engine(
    brokers: String,
    signer: DecisionSigner,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<usize> {
    std::thread::spawn(move || {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .set("group.id", "engine-stand-in")
            .set("enable.auto.commit", "false")
            .set("fetch.wait.max.ms", "10")
            .set("fetch.error.backoff.ms", "1")
            .create()
            .expect("consumer");
        let mut tpl = TopicPartitionList::new();
        for p in 0..PARTITIONS {
            tpl.add_partition_offset(EVENTS, p, Offset::Beginning)
                .expect("partition");
        }
        consumer.assign(&tpl).expect("assign");
        let producer: BaseProducer = ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .set("partitioner", PARTITIONER)
            .set("linger.ms", "0")
            .create()
            .expect("producer");
        let mut answered = 0;
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            producer.poll(Duration::ZERO);
            let Some(Ok(m)) = consumer.poll(Duration::from_millis(20)) else {
                continue;
            };
            let event: Value = serde_json::from_slice(m.payload().unwrap_or_default()).unwrap();
            if event["await_verdict"] != true
                || event["tool"].as_str().unwrap().starts_with("post_")
            {
                continue;
            }
            let to = event["arguments"]["to"].as_str().unwrap_or("");
            let agent = event["agent_id"].as_str().unwrap().to_string();
            let mut d = Decision {
                schema: Default::default(),
                decision_id: format!("verdict-{}", event["event_id"].as_str().unwrap()),
                time: Timestamp::now(),
                expires_at: None,
                action: if to.ends_with("@example.com") {
                    DecisionAction::Allow
                } else {
                    DecisionAction::Block
                },
                scope: Scope {
                    agent_id: agent.clone(),
                    session_id: event["session_id"].as_str().map(str::to_string),
                    server: event["server"].as_str().map(str::to_string),
                    tool: event["tool"].as_str().map(str::to_string),
                    call_id: event["call_id"].as_str().map(str::to_string),
                },
                reason: format!("{to} is outside the organisation"),
                finding_ids: vec![],
                key_id: String::new(),
                signature: String::new(),
            };
            signer.sign(&mut d);
            let bytes = serde_json::to_vec(&d).unwrap();
            producer
                .send(
                    BaseRecord::to("toolgate.decisions")
                        .key(&agent)
                        .payload(&bytes),
                )
                .expect("send");
            // Not flush(): rust-rdkafka's flush waits in steps of 100 ms.
            while producer.in_flight_count() > 0 {
                producer.poll(Duration::from_millis(1));
            }
            answered += 1;
        }
        answered
    })
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
}

#[test]
fn the_stdio_proxy_holds_an_egress_call_without_holding_up_the_session() {
    use std::io::{BufRead, Write};
    let cluster = cluster();
    let brokers = cluster.bootstrap_servers();
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = DecisionSigner::from_seed("engine-1", [12; 32]);
    let config = dir.path().join("proxy.toml");
    std::fs::write(
        &config,
        format!(
            "[sink]\nagent_id = \"agent-k7\"\nspool_dir = \"{}\"\n\n[sink.decision_keys]\nengine-1 = \"{}\"\n\n[[sink.hold]]\nname = \"egress\"\ntools = [\"echo\"]\nhold_timeout_ms = 10000\n",
            dir.path().join("spool").display(),
            engine.public_key_base64()
        ),
    )
    .expect("config");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let answering = verdict_engine(brokers.clone(), engine, stop.clone());
    let fixture = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/rug_pull_server.py"
    );
    let mut proxy = std::process::Command::new(env!("CARGO_BIN_EXE_toolgate-sink"))
        .args(["stdio", "--config"])
        .arg(&config)
        .args([
            "--brokers",
            &brokers,
            "--server",
            "files",
            "--",
            "python3",
            fixture,
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("toolgate-sink");
    let mut stdin = proxy.stdin.take().expect("stdin");
    let mut stdout = std::io::BufReader::new(proxy.stdout.take().expect("stdout"));
    let call = |id: u32, to: &str| {
        json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
            "params": {"name": "echo", "arguments": {"text": "numbers", "to": to}}})
        .to_string()
    };
    // Both held calls and a ping go out at once; the ping is answered first, while
    // the calls wait for their verdicts.
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
    assert_eq!(
        answers[0]["id"], 3,
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
    use std::io::BufRead;
    let cluster = cluster();
    let brokers = cluster.bootstrap_servers();
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = DecisionSigner::from_seed("engine-1", [13; 32]);
    let config = dir.path().join("proxy.toml");
    std::fs::write(
        &config,
        format!(
            "[sink]\nagent_id = \"agent-k8\"\nspool_dir = \"{}\"\n\n[sink.decision_keys]\nengine-1 = \"{}\"\n\n[[sink.hold]]\nname = \"egress\"\ntools = [\"send_*\"]\nhold_timeout_ms = 10000\n",
            dir.path().join("spool").display(),
            engine.public_key_base64()
        ),
    )
    .expect("config");
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

    let mut sink = std::process::Command::new(env!("CARGO_BIN_EXE_toolgate-sink"))
        .args(["http", "--config"])
        .arg(&config)
        .args([
            "--brokers",
            &brokers,
            "--server",
            "mail",
            "--listen",
            "127.0.0.1:0",
        ])
        .args(["--upstream", &format!("http://127.0.0.1:{port}/mcp")])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("toolgate-sink http");
    let mut stderr = std::io::BufReader::new(sink.stderr.take().expect("stderr"));
    let mut line = String::new();
    stderr.read_line(&mut line).expect("listening line");
    let address = line
        .split("http://")
        .nth(1)
        .and_then(|r| r.split_whitespace().next());
    let url = format!("http://{}/mcp", address.expect("address"));

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

    // SAFETY: kill(2) on the child we spawned.
    unsafe {
        libc::kill(sink.id() as i32, libc::SIGTERM);
    }
    assert!(sink.wait().expect("exit").success());
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert_eq!(answering.join().expect("engine"), 2);
}
