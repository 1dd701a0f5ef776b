//! What the Kafka tests share: the broker seam (librdkafka's mock cluster in
//! `cargo test`, a real Kafka-compatible broker in CI), helpers, and the scenarios
//! both run.
#![allow(dead_code)]

#[path = "../../../../tests/support/topics.rs"]
mod topics;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::{Value, json};
use toolgate_protocol::config::Config;
use toolgate_protocol::decision::{Decision, DecisionAction, DecisionSigner, Scope};
use toolgate_protocol::partition::{PARTITIONER, partition_for};
use toolgate_protocol::{Event, Timestamp};
use toolgate_sink::library::{Sink, Verdict};

/// A broker the scenarios run against, with topics `toolgate.events`,
/// `toolgate.findings` and `toolgate.decisions` of [`PARTITIONS`] partitions each.
pub trait Broker {
    /// Its bootstrap address.
    fn bootstrap(&self) -> String;
    /// Becomes unreachable: connections drop, new ones fail.
    fn down(&self);
    /// Reachable again, with everything it held.
    fn up(&self);
}

pub const EVENTS: &str = "toolgate.events";
pub const PARTITIONS: i32 = 4;

/// A sink config for `agent`. Without `[sink.decision_keys]` in `extra` the sink only
/// reports (`enforce_decisions = false`): it would refuse to start with a broker and no
/// key to verify decisions with (issue 22).
pub fn config(dir: &Path, agent: &str, flush_timeout_ms: u64, extra: &str) -> Config {
    let reporter = match extra.contains("[sink.decision_keys]") {
        true => "",
        false => "enforce_decisions = false",
    };
    let text = format!(
        r#"
[sink]
agent_id = "{agent}"
spool_dir = "{}"
flush_timeout_ms = {flush_timeout_ms}
{reporter}
{extra}
"#,
        dir.join("spool").display()
    );
    let path = dir.join(format!("toolgate-{agent}.toml"));
    std::fs::write(&path, text).expect("config");
    Config::load(&path).expect("valid config")
}

/// Every message of `topic`, per partition in offset order.
pub fn read_all(brokers: &str, topic: &str, expected: usize) -> Vec<(i32, String, Value)> {
    topics::read_all(brokers, topic, PARTITIONS, expected)
        .iter()
        .map(|r| (r.partition, r.key.clone(), r.json()))
        .collect()
}

/// Lists one tool, then makes `calls` calls with results.
pub fn traffic(sink: &mut Sink, calls: usize, tag: &str) {
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
pub fn queries(messages: &[(i32, String, Value)]) -> Vec<String> {
    messages
        .iter()
        .filter(|(_, _, v)| v["kind"] == "tool_call")
        .map(|(_, _, v)| v["arguments"]["query"].as_str().unwrap_or("").to_string())
        .collect()
}

pub fn events_reach_kafka_keyed_by_agent_in_order(broker: &dyn Broker) {
    let brokers = broker.bootstrap();
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

pub fn an_outage_and_a_restart_lose_nothing(broker: &dyn Broker) {
    let brokers = broker.bootstrap();
    let dir = tempfile::tempdir().expect("tempdir");

    // The broker goes down mid-stream; the first sink stops while it is down, and the
    // second starts once it is back. How long the outage lasts does not matter to a
    // sink that is not running: what crosses it is the spool on disk.
    let first_config = config(dir.path(), "agent-k2", 500, "");
    let mut sink = Sink::with_brokers(&first_config, "crm", Some(&brokers)).expect("sink");
    traffic(&mut sink, 10, "before");
    std::thread::sleep(Duration::from_millis(500));
    broker.down();
    traffic(&mut sink, 20, "during");
    let first = sink.close().expect("close").shipped.expect("kafka");
    assert!(
        first.pending >= 40,
        "the outage's events wait in the spool: {first:?}"
    );

    // A new sink on the same spool replays them before its own, once the broker is back.
    let second_config = config(dir.path(), "agent-k2", 15_000, "");
    std::thread::sleep(Duration::from_secs(2));
    broker.up();
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

pub fn signed_decisions_are_applied_and_forged_ones_ignored(broker: &dyn Broker) {
    let brokers = broker.bootstrap();
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
                destination: None,
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

/// A stand-in for the engine's verdict path: reads `toolgate.events` and answers every
/// call with `await_verdict` and `to` in its arguments: allowed for addresses at
/// example.com, blocked otherwise. Calls to `post_*` are never answered.
pub fn verdict_engine(
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
                    destination: None,
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

/// A child process killed when dropped, so a failing test leaves none behind.
pub struct Reaped(pub std::process::Child, pub Option<tempfile::TempDir>);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Reaped {
    /// SIGTERM, then the exit status.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        // SAFETY: kill(2) on a child this test spawned and has not reaped.
        unsafe {
            libc::kill(self.0.id() as i32, libc::SIGTERM);
        }
        self.0.wait().expect("exit status")
    }
}

/// Starts `toolgate-sink http ARGS --listen 127.0.0.1:0`; returns the URL it serves
/// (from the line it prints) and the process. What it says later goes to the test's
/// output.
pub fn start_http_sink(args: &[&str]) -> (String, Reaped) {
    use std::io::BufRead;
    // Its own working directory: what the defaults put under the current directory
    // (the spool, the pins) stays out of the source tree and out of other tests.
    let cwd = tempfile::tempdir().expect("tempdir");
    let mut sink = std::process::Command::new(env!("CARGO_BIN_EXE_toolgate-sink"))
        .current_dir(cwd.path())
        .arg("http")
        .args(args)
        .args(["--listen", "127.0.0.1:0"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("toolgate-sink http");
    let mut stderr = std::io::BufReader::new(sink.stderr.take().expect("stderr"));
    // Warnings about the config (issue 22) come first; the address line after them.
    let mut line = String::new();
    while !line.contains("http://") {
        eprint!("{line}");
        line.clear();
        if stderr.read_line(&mut line).expect("the listening line") == 0 {
            panic!("the sink exited before listening");
        }
    }
    let address = line
        .split("http://")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .to_string();
    std::thread::spawn(move || {
        for line in stderr.lines().map_while(Result::ok) {
            eprintln!("{line}");
        }
    });
    (format!("http://{address}/mcp"), Reaped(sink, Some(cwd)))
}

/// A proxy config for `agent` whose `tools` wait for verdicts signed by `engine`.
pub fn hold_config(
    dir: &Path,
    agent: &str,
    tools: &str,
    engine: &DecisionSigner,
) -> std::path::PathBuf {
    let path = dir.join("proxy.toml");
    std::fs::write(
        &path,
        format!(
            "[sink]\nagent_id = \"{agent}\"\nspool_dir = \"{}\"\n\n[sink.decision_keys]\nengine-1 = \"{}\"\n\n[[sink.hold]]\nname = \"egress\"\ntools = [\"{tools}\"]\nhold_timeout_ms = 10000\n",
            dir.join("spool").display(),
            engine.public_key_base64()
        ),
    )
    .expect("config");
    path
}

/// The stdio proxy as a user runs it, in front of our rug-pull fixture, sending to
/// `brokers`.
pub fn stdio_proxy(dir: &Path, brokers: &str) -> std::process::Child {
    let config = dir.join("proxy.toml");
    let text = format!(
        "[sink]\nagent_id = \"agent-k5\"\nspool_dir = \"{}\"\nenforce_decisions = false\n",
        dir.join("spool").display()
    );
    std::fs::write(&config, text).expect("config");
    stdio_proxy_with(&config, brokers)
}

/// The stdio proxy in front of our rug-pull fixture with `config`, sending to `brokers`.
pub fn stdio_proxy_with(config: &Path, brokers: &str) -> std::process::Child {
    let fixture = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/rug_pull_server.py"
    );
    std::process::Command::new(env!("CARGO_BIN_EXE_toolgate-sink"))
        .current_dir(config.parent().unwrap_or(Path::new(".")))
        .args(["stdio", "--config"])
        .arg(config)
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
pub fn converse(child: &mut std::process::Child, lines: &[String]) {
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

pub fn echo_calls(tag: &str, n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            json!({"jsonrpc": "2.0", "id": format!("{tag}-{i}"), "method": "tools/call",
                "params": {"name": "echo", "arguments": {"text": format!("{tag} {i}")}}})
            .to_string()
        })
        .collect()
}

pub fn a_killed_proxy_loses_nothing_after_a_restart(broker: &dyn Broker) {
    let brokers = broker.bootstrap();
    let dir = tempfile::tempdir().expect("tempdir");
    broker.down();

    let mut first = stdio_proxy(dir.path(), &brokers);
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

    broker.up();
    let mut second = stdio_proxy(dir.path(), &brokers);
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
