//! The streaming engine end to end on librdkafka's mock cluster (the real Kafka
//! protocol over loopback): events in; findings, signed decisions and dead letters
//! out; checkpoints that a restart resumes from without loss.

use crate::common;

use std::collections::BTreeMap;

use common::kafka::*;
use serde_json::Value;
use toolgate_engine::embedded::EmbeddedBroker;
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
    // Issue 22: the finding says what was done, not only what it asks for: the held
    // exfiltration was refused by this very verdict.
    let about_exfiltration = |r: &common::topics::Record| r.json()["call_id"] == exfiltration;
    let findings = read_until(&brokers, "toolgate.findings", |rs| {
        rs.iter().any(about_exfiltration)
    });
    stop(engine);
    let blocking: Vec<Value> = findings
        .iter()
        .filter(|r| about_exfiltration(r))
        .map(|r| r.json())
        .filter(|f| f["action"] == "block")
        .collect();
    assert!(!blocking.is_empty(), "{findings:?}");
    for f in &blocking {
        assert_eq!(f["outcome"], "held_refused", "{f}");
    }
    for f in findings.iter().map(|r| r.json()) {
        assert!(
            ["held_refused", "held_released", "observed"]
                .contains(&f["outcome"].as_str().unwrap_or("none")),
            "every call is held here, so nothing is forwarded: {f}"
        );
    }

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

/// After a broker outage each server's sink replays its spool on its own schedule:
/// here the payment server's (the agent's message and its `send_money` calls) arrives
/// before the bank's and the files' (the results those calls carry data from). In
/// arrival order the calls come before the data they carry, and nothing is found.
#[test]
fn issue_22_two_spools_replayed_out_of_order_give_the_findings_analyze_gives() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = EmbeddedBroker::start(&TopicsConfig::default(), PARTITIONS).expect("broker");
    let brokers = broker.bootstrap().to_string();
    let config = config(dir.path());
    let run: Vec<(String, Vec<u8>)> = sample("")
        .into_iter()
        .filter(|(_, bytes)| {
            let v: Value = serde_json::from_slice(bytes).expect("event");
            v["time"]
                .as_str()
                .expect("time")
                .starts_with("2025-01-04T23:2")
        })
        .collect();
    assert_eq!(run.len(), 11, "one banking run, 10 s of event time");
    let (payments, others): (Vec<_>, Vec<_>) = run.iter().cloned().partition(|(_, bytes)| {
        let v: Value = serde_json::from_slice(bytes).expect("event");
        v["server"].is_null() || v["server"] == "payments"
    });
    assert!(!payments.is_empty() && !others.is_empty());
    let arrival: Vec<_> = payments.into_iter().chain(others).collect();

    let in_time_order = offline_finding_ids(dir.path(), &run);
    assert_eq!(
        offline_finding_ids(dir.path(), &arrival),
        in_time_order,
        "analyze puts them back in order"
    );
    produce(&brokers, &arrival);
    let engine = start(&config, &brokers);
    let findings = await_findings(&brokers, &in_time_order);
    let report = stop(engine);
    assert_eq!(report.events, 11);
    assert_eq!(
        finding_ids(&findings),
        in_time_order,
        "the engine finds what analyze finds"
    );
    assert!(
        findings
            .iter()
            .any(|f| f.json()["detector"] == "provenance"),
        "the run's exfiltration, found only with its data's result before it"
    );
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
    // The consumer lag comes with librdkafka's statistics: every 5 s by default, often
    // enough here that the test waits for them instead of sleeping.
    config
        .kafka
        .properties
        .insert("statistics.interval.ms".into(), "200".into());
    let mut events = sample("");
    events.push(("bad".into(), b"not json".to_vec()));
    produce(&brokers, &events);
    let expected = offline_finding_ids(dir.path(), &events[..events.len() - 1]);
    let engine = start(&config, &brokers);
    await_findings(&brokers, &expected);
    let (status, health) = http_get(&addr, "/healthz");
    assert_eq!((status, health.as_str()), (200, "ok\n"));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let text = loop {
        let (status, text) = http_get(&addr, "/metrics");
        assert_eq!(status, 200);
        let ready = [
            "toolgate_engine_consumer_lag{",
            "toolgate_provenance_index_agents{",
        ]
        .iter()
        .all(|gauge| text.contains(gauge));
        if ready || std::time::Instant::now() > deadline {
            break text;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
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

/// `/healthz` once the listener answers: its status and body.
fn health_when_up(addr: &str) -> (u16, String) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(std::time::Instant::now() < deadline, "no metrics listener");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    http_get(addr, "/healthz")
}

#[test]
fn issue_19_an_over_limit_record_is_dead_lettered_with_size_and_digest_and_the_rest_read() {
    use sha2::Digest;
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = EmbeddedBroker::start(&TopicsConfig::default(), PARTITIONS).expect("broker");
    let brokers = broker.bootstrap().to_string();
    let config = config(dir.path());
    let before = sample("");
    let key = before[0].0.clone();
    // Three times the event limit, under the embedded broker's 5 MiB per partition.
    let big: Vec<u8> = (0..3 << 20).map(|i| b"{\"x\": 1}   "[i % 11]).collect();
    let after: Vec<(String, Vec<u8>)> = sample("-after").into_iter().take(3).collect();
    let mut events = before.clone();
    events.push((key.clone(), big.clone()));
    events.extend(after.iter().cloned());
    produce(&brokers, &events);

    // The engine with counters this test reads while it runs.
    let counters = std::sync::Arc::new(toolgate_engine::Counters::default());
    let flag = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let handle = {
        let (config, brokers, counters, flag) = (
            config.clone(),
            brokers.clone(),
            std::sync::Arc::clone(&counters),
            std::sync::Arc::clone(&flag),
        );
        std::thread::spawn(move || {
            toolgate_engine::run(
                &config,
                toolgate_engine::EngineOptions {
                    brokers,
                    workers: 2,
                    history: false,
                    watcher: None,
                    counters,
                },
                &flag,
            )
            .expect("engine run")
        })
    };
    let want = (before.len() + after.len()) as u64;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while toolgate_engine::Counters::get(&counters.events) < want
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let dlq = read_all(&brokers, "toolgate.dlq", 1);
    let report = stop((flag, handle));
    assert_eq!(
        report.events as usize,
        before.len() + after.len(),
        "the 3 events after the big record were processed"
    );
    assert_eq!(report.rejected_by_kind.get("too_large"), Some(&1));
    assert_eq!(dlq.len(), 1, "{dlq:?}");
    let letter = &dlq[0];
    assert_eq!(letter.key, key);
    assert_eq!(letter.headers["toolgate.error.kind"], "too_large");
    assert_eq!(
        letter.headers["toolgate.source.bytes"],
        big.len().to_string()
    );
    assert_eq!(letter.headers["toolgate.source.truncated"], "true");
    assert_eq!(
        letter.headers["toolgate.source.sha256"],
        toolgate_protocol::fingerprint::hex(&sha2::Sha256::digest(&big)[..]),
    );
    assert_eq!(
        letter.payload.len(),
        toolgate_ingest::kafka::DEAD_LETTER_MAX_BYTES,
        "kept truncated"
    );
}

#[test]
fn issue_19_records_deleted_past_the_checkpoint_are_logged_counted_and_reported() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = EmbeddedBroker::start(&TopicsConfig::default(), PARTITIONS).expect("broker");
    let brokers = broker.bootstrap().to_string();
    let config = config(dir.path());
    let first = sample("-a");
    let ids = offline_finding_ids(dir.path(), &first);
    produce(&brokers, &first);
    let engine = start(&config, &brokers);
    await_findings(&brokers, &ids);
    let one = stop(engine);
    assert_eq!(one.offset_gaps, 0);

    // The embedded broker keeps about 5 MiB per partition: 8 records of 1.2 MB on the
    // partition the engine checkpointed push the oldest of them out unread.
    let key = first[0].0.clone();
    let junk: Vec<(String, Vec<u8>)> = (0..8)
        .map(|_| (key.clone(), vec![b' '; 1_200_000]))
        .collect();
    produce(&brokers, &junk);
    let engine = start(&config, &brokers);
    let findings = read_until(&brokers, "toolgate.findings", |rs| {
        rs.iter().any(|r| r.json()["rule_id"] == "offset_gap")
    });
    let two = stop(engine);
    let gap = findings
        .iter()
        .map(Record::json)
        .find(|f| f["rule_id"] == "offset_gap")
        .expect("an offset_gap finding");
    assert_eq!(gap["severity"], "high");
    assert_eq!(gap["agent_id"], "toolgate-engine");
    let skipped = gap["evidence"]["skipped_offsets"]
        .as_u64()
        .expect("skipped");
    assert!((1..8).contains(&skipped), "{gap}");
    assert_eq!(two.offset_gaps, 1);
    assert_eq!(two.offset_gap_records, skipped);
    assert_eq!(
        two.rejected_by_kind.get("too_large").copied().unwrap_or(0) + skipped,
        8,
        "every record is either dead-lettered or counted as lost"
    );
}

#[test]
fn issue_19_healthz_is_not_ready_until_partitions_are_assigned() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = EmbeddedBroker::start(&TopicsConfig::default(), PARTITIONS).expect("broker");
    let brokers = broker.bootstrap().to_string();
    let mut config = config(dir.path());
    // An events topic that does not exist yet: the group has nothing to assign.
    let topic = "toolgate.events.later";
    config.kafka.topics.events = topic.into();
    config
        .kafka
        .properties
        .insert("topic.metadata.refresh.interval.ms".into(), "200".into());
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let addr = format!("127.0.0.1:{port}");
    config.engine.metrics_listen = Some(addr.clone());
    let engine = start(&config, &brokers);
    let (status, body) = health_when_up(&addr);
    assert_eq!(
        (status, body.as_str()),
        (503, "not ready: no partitions assigned\n")
    );

    // A producer's metadata request creates the topic on the embedded broker.
    {
        use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
        let producer: BaseProducer = rdkafka::config::ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .create()
            .expect("producer");
        let (key, event) = sample("").remove(0);
        producer
            .send(BaseRecord::to(topic).key(&key).payload(&event))
            .expect("queue");
        producer
            .flush(std::time::Duration::from_secs(10))
            .expect("flush");
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let (status, body) = http_get(&addr, "/healthz");
        if status == 200 {
            assert_eq!(body, "ok\n");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still {status} {body:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    stop(engine);
}

/// Issue 19: every record of the sample keyed by another agent, its exfiltration call
/// held. The findings (a blocking one among them) still go out, but nothing is
/// signed for the agents the events claim: no block, no verdict.
#[test]
fn issue_19_an_event_keyed_by_another_agent_gets_its_findings_out_but_no_decision() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = EmbeddedBroker::start(&TopicsConfig::default(), PARTITIONS).expect("broker");
    let brokers = broker.bootstrap().to_string();
    let config = config(dir.path());
    let mut events = sample("");
    for (key, bytes) in &mut events {
        *key = "agent-b".to_string();
        let mut v: Value = serde_json::from_slice(bytes).expect("event");
        if v["kind"] == "tool_call" && v["call_id"] == "call_UIxyFTg4BR87BCmnbk2A5cts" {
            v["await_verdict"] = Value::Bool(true);
        }
        *bytes = serde_json::to_vec(&v).expect("encode");
    }
    let expected = offline_finding_ids(dir.path(), &events);
    produce(&brokers, &events);
    let engine = start(&config, &brokers);
    let findings = await_findings(&brokers, &expected);
    let report = stop(engine);
    // Stopped: everything it sent is on the broker.
    let decisions = read_to_end(&brokers, "toolgate.decisions");

    assert_eq!(
        finding_ids(&findings),
        expected,
        "the findings still go out"
    );
    assert!(
        findings.iter().any(|f| f.json()["action"] == "block"),
        "one of them calls for a block"
    );
    assert_eq!(
        decisions.len(),
        0,
        "no decision for an agent that did not key the events"
    );
    assert_eq!(report.decisions, 0);
    assert_eq!(report.verdicts, 0);
    assert_eq!(report.key_mismatch, 54, "every event is counted");
    assert!(
        report
            .decisions_refused
            .get("key_mismatch")
            .copied()
            .unwrap_or(0)
            >= 2,
        "the block and the verdict are counted: {:?}",
        report.decisions_refused
    );
}

/// Issue 19: the sample twice for the same agents, the second copy a day later (so
/// its findings are new ones, not folded into the first's), and one block per agent
/// per week: the second copy's blocks are not signed, and are counted.
#[test]
fn issue_19_past_max_blocks_per_agent_an_agents_blocks_are_not_signed_but_counted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = EmbeddedBroker::start(&TopicsConfig::default(), PARTITIONS).expect("broker");
    let brokers = broker.bootstrap().to_string();
    let mut config = config(dir.path());
    config.engine.max_blocks_per_agent = 1;
    config.engine.block_rate_window = toolgate_protocol::Duration::from_secs(7 * 86_400);
    let mut events = sample("");
    let again: Vec<(String, Vec<u8>)> = sample("-b")
        .into_iter()
        .map(|(key, bytes)| {
            let agent = key.strip_suffix("-b").expect("tagged").to_string();
            let mut v: Value = serde_json::from_slice(&bytes).expect("event");
            v["agent_id"] = Value::String(agent.clone());
            (agent, serde_json::to_vec(&v).expect("encode"))
        })
        .collect();
    events.extend(
        shifted(&again, 1)
            .into_iter()
            .map(|(_, key, bytes)| (key, bytes)),
    );
    let expected = offline_finding_ids(dir.path(), &events);
    produce(&brokers, &events);
    let engine = start(&config, &brokers);
    let findings = await_findings(&brokers, &expected);
    let report = stop(engine);
    let decisions = read_to_end(&brokers, "toolgate.decisions");

    let mut blocking: BTreeMap<String, std::collections::BTreeSet<String>> = BTreeMap::new();
    for f in &findings {
        let v = f.json();
        if v["action"] == "block" {
            blocking
                .entry(v["agent_id"].as_str().expect("agent_id").to_string())
                .or_default()
                .insert(v["finding_id"].as_str().expect("finding_id").to_string());
        }
    }
    assert!(
        blocking.values().any(|ids| ids.len() >= 2),
        "an agent has two blocking findings: {blocking:?}"
    );
    let verifier = verifier(&config);
    let mut signed: BTreeMap<String, std::collections::BTreeSet<String>> = BTreeMap::new();
    for r in &decisions {
        let d: Decision = serde_json::from_slice(&r.payload).expect("decision");
        verifier.verify(&d).expect("signed");
        if d.scope.call_id.is_none() && d.action == DecisionAction::Block {
            signed
                .entry(d.scope.agent_id.clone())
                .or_default()
                .insert(d.decision_id.clone());
        }
    }
    assert!(
        !signed.is_empty(),
        "the first block of each agent is signed"
    );
    for (agent, ids) in &signed {
        assert_eq!(
            ids.len(),
            1,
            "{agent}: at most max_blocks_per_agent: {ids:?}"
        );
    }
    assert!(
        report
            .decisions_refused
            .get("rate_limit")
            .copied()
            .unwrap_or(0)
            >= 1,
        "the suppressed blocks are counted: {:?}",
        report.decisions_refused
    );
}

/// Issue 19: TLS and every SASL mechanism but Kerberos are built in (librdkafka with
/// OpenSSL), so a client for them is made; GSSAPI, which needs Cyrus SASL, is refused
/// when the client is made, naming the mechanism. The TLS and SCRAM exchanges
/// themselves are tested against a broker in `engine_tansu.rs`.
#[test]
fn issue_19_kafka_tls_and_sasl_are_built_in_and_kerberos_is_refused_at_start_up() {
    use toolgate_engine::outbox::Outbox;
    let dir = tempfile::tempdir().expect("tempdir");
    let outbox = |pairs: &[(&str, &str)]| {
        let properties: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Outbox::new(
            "127.0.0.1:9",
            &properties,
            dir.path().join("undeliverable.jsonl"),
        )
    };
    for (protocol, mechanism) in [
        ("ssl", None),
        ("sasl_ssl", Some("SCRAM-SHA-512")),
        ("sasl_ssl", Some("PLAIN")),
        ("sasl_plaintext", Some("SCRAM-SHA-256")),
        ("sasl_ssl", Some("OAUTHBEARER")),
    ] {
        let mut pairs = vec![("security.protocol", protocol)];
        if let Some(m) = mechanism {
            pairs.extend([
                ("sasl.mechanisms", m),
                ("sasl.username", "engine"),
                ("sasl.password", "secret"),
            ]);
        }
        if let Err(e) = outbox(&pairs) {
            panic!("{protocol} {mechanism:?}: {e:#}");
        }
    }
    let e = format!(
        "{:#}",
        outbox(&[
            ("security.protocol", "sasl_ssl"),
            ("sasl.mechanisms", "GSSAPI"),
        ])
        .err()
        .expect("refused")
    );
    assert!(e.contains("GSSAPI"), "{e}");
}

/// Issue 22: a block could not be lifted before its TTL. `toolgate decisions list`
/// shows the blocks the engine's key signed and nothing forged; `lift` publishes a
/// signed `allow` of the block's scope with who and why, and a sink subscribed to the
/// topic lets the tool's calls through again.
#[test]
fn issue_22_a_block_is_listed_lifted_and_the_sink_lets_calls_through_again() {
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    use toolgate_protocol::decision::{DecisionSigner, Scope};
    use toolgate_protocol::{Duration, Timestamp};
    use toolgate_sink::library::{Sink, Verdict};

    let dir = tempfile::tempdir().expect("tempdir");
    let broker = EmbeddedBroker::start(&TopicsConfig::default(), PARTITIONS).expect("broker");
    let brokers = broker.bootstrap().to_string();
    let config = config(dir.path());
    let key = toolgate_engine::data_path(&config, &config.engine.signing_key_file);
    let engine = toolgate_engine::decisions::load_or_create_signer(&key, &config.engine.key_id)
        .expect("signing key");
    let now = Timestamp::now();
    let block = |signer: &DecisionSigner, id: &str| {
        let mut d = Decision {
            schema: Default::default(),
            decision_id: id.into(),
            time: now,
            expires_at: Some(now.saturating_add(Duration::from_secs(3600))),
            action: DecisionAction::Block,
            scope: Scope {
                agent_id: "agent-lift".into(),
                session_id: None,
                server: Some("chat".into()),
                tool: Some("post_message".into()),
                call_id: None,
                destination: None,
            },
            reason: "exfiltration (provenance)".into(),
            finding_ids: vec!["f-1".into()],
            key_id: String::new(),
            signature: String::new(),
        };
        signer.sign(&mut d);
        d
    };
    let forger =
        DecisionSigner::from_seed_base64(&config.engine.key_id, &format!("{}A=", "B".repeat(42)))
            .expect("another key");
    let producer: BaseProducer = common::topics::client(&brokers)
        .set("partitioner", toolgate_protocol::partition::PARTITIONER)
        .create()
        .expect("producer");
    for d in [block(&engine, "block-1"), block(&forger, "block-forged")] {
        let payload = serde_json::to_vec(&d).expect("json");
        producer
            .send(
                BaseRecord::to("toolgate.decisions")
                    .key("agent-lift")
                    .payload(&payload),
            )
            .expect("queue");
    }
    producer
        .flush(std::time::Duration::from_secs(10))
        .expect("flush");

    // A sink of that agent, trusting the engine's key, applies the block.
    let sink_config = toolgate_protocol::config::Config::from_toml(
        &format!(
            "[sink]\nagent_id = \"agent-lift\"\nspool_dir = \"{}\"\n[sink.decision_keys]\n{} = \"{}\"\n",
            dir.path().join("spool").display(),
            config.engine.key_id,
            engine.public_key_base64()
        ),
        "sink",
    )
    .expect("sink config");
    let mut sink = Sink::with_brokers(&sink_config, "chat", Some(&brokers)).expect("sink");
    let args = serde_json::Map::from_iter([("text".to_string(), Value::from("lunch at noon?"))]);
    let mut refused_until = |want_refused: bool| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            let refused = matches!(
                sink.before_call("post_message", &args).expect("check"),
                Verdict::Refuse { .. }
            );
            if refused == want_refused {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "still refused: {refused}"
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    };
    refused_until(true);

    let toolgate_cmd = |args: &[&str]| {
        let config_path = dir.path().join("toolgate.toml");
        let mut all = vec!["decisions"];
        all.extend_from_slice(args);
        all.extend([
            "--config",
            config_path.to_str().unwrap(),
            "--brokers",
            &brokers,
        ]);
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_toolgate"))
            .args(&all)
            .env("USER", "alice")
            .output()
            .expect("toolgate");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    };
    let listed = toolgate_cmd(&["list"]);
    assert!(listed.contains("block-1\tagent=agent-lift"), "{listed}");
    assert!(!listed.contains("block-forged"), "{listed}");
    assert!(listed.contains("1 block(s) in force"), "{listed}");
    assert!(listed.contains("1 record(s) ignored"), "{listed}");

    let lifted = toolgate_cmd(&["lift", "block-1", "--reason", "false positive"]);
    assert!(
        lifted.contains("lifted block-1 with lift-block-1"),
        "{lifted}"
    );
    assert!(
        lifted.contains("lifted by alice: false positive"),
        "{lifted}"
    );
    assert!(toolgate_cmd(&["list"]).contains("0 block(s) in force"));
    assert!(toolgate_cmd(&["lift", "block-1", "--reason", "again"]).contains("already lifted"));

    refused_until(false);
    sink.close().expect("close");
}
