//! The engine's Kafka tests share these: producing events, reading topics back,
//! the engine's test config, the sample traffic and the scenarios that run against
//! both librdkafka's mock cluster and a real Kafka-compatible broker.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use serde_json::Value;
use toolgate_engine::{EngineOptions, EngineReport, run};
use toolgate_protocol::Timestamp;
use toolgate_protocol::config::Config;
use toolgate_protocol::decision::{Decision, DecisionAction, DecisionVerifier};
use toolgate_protocol::partition::{PARTITIONER, partition_for};

pub use super::repo;

pub const PARTITIONS: i32 = 4;

pub use super::topics::Record;

pub fn produce(brokers: &str, records: &[(String, Vec<u8>)]) {
    let producer: BaseProducer = super::topics::client(brokers)
        .set("partitioner", PARTITIONER)
        .set("message.max.bytes", "10000000")
        .create()
        .expect("producer");
    for (key, payload) in records {
        producer
            .send(BaseRecord::to("toolgate.events").key(key).payload(payload))
            .expect("queue");
    }
    producer.flush(Duration::from_secs(10)).expect("flush");
}

/// Every record of `topic` now (waits until `expected` arrived, or 20 s).
pub fn read_all(brokers: &str, topic: &str, expected: usize) -> Vec<Record> {
    super::topics::read_all(brokers, topic, PARTITIONS, expected)
}

/// Every record of `topic` up to its end, once its writers have stopped.
pub fn read_to_end(brokers: &str, topic: &str) -> Vec<Record> {
    super::topics::read_to_end(brokers, topic, PARTITIONS)
}

/// Every record of `topic` once `done` holds for what arrived (or after 20 s).
pub fn read_until(brokers: &str, topic: &str, done: impl Fn(&[Record]) -> bool) -> Vec<Record> {
    super::topics::read_until(brokers, topic, PARTITIONS, done)
}

/// `[limits] max_event_bytes` of [`config`].
pub const TEST_MAX_EVENT_BYTES: usize = 1 << 20;

pub fn config(dir: &Path) -> Config {
    let text = format!(
        r#"
[engine]
data_dir = "{data}"
checkpoint_interval = "200ms"
# Held events of a quiet partition are processed after this (tests wait on it).
idle_timeout = "1s"

[history]
location = "{data}/history"

# The limit the oversized-record tests are sized for: the embedded broker holds 5 MiB
# per partition, under the default (what a sink may produce, 16 MiB and more).
[limits]
max_event_bytes = {TEST_MAX_EVENT_BYTES}

[kafka.properties]
"session.timeout.ms" = "6000"
"#,
        data = dir.join("data").display()
    );
    let path = dir.join("toolgate.toml");
    std::fs::write(&path, &text).expect("write config");
    Config::from_toml(&text, "test").expect("config")
}

/// The engine on its own thread until the returned flag is raised.
pub fn start(config: &Config, brokers: &str) -> (Arc<AtomicBool>, JoinHandle<EngineReport>) {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    let config = config.clone();
    let brokers = brokers.to_string();
    let handle = std::thread::spawn(move || {
        run(
            &config,
            EngineOptions {
                brokers,
                workers: 2,
                history: true,
                watcher: None,
                counters: Default::default(),
            },
            &flag,
        )
        .expect("engine run")
    });
    (stop, handle)
}

pub fn stop(engine: (Arc<AtomicBool>, JoinHandle<EngineReport>)) -> EngineReport {
    engine.0.store(true, Ordering::Relaxed);
    engine.1.join().expect("engine thread")
}

/// The shipped sample (one AgentDojo run with an injected exfiltration), keyed by
/// agent; `tag` makes the ids of a second copy distinct.
pub fn sample(tag: &str) -> Vec<(String, Vec<u8>)> {
    let text =
        std::fs::read_to_string(repo().join("examples/agentdojo-sample.jsonl")).expect("sample");
    text.lines()
        .map(|line| {
            let mut v: Value = serde_json::from_str(line).expect("sample line");
            for field in ["event_id", "agent_id", "session_id", "call_id"] {
                if let Some(s) = v[field].as_str() {
                    v[field] = Value::String(format!("{s}{tag}"));
                }
            }
            let key = v["agent_id"].as_str().expect("agent_id").to_string();
            (key, serde_json::to_vec(&v).expect("encode"))
        })
        .collect()
}

/// The events `days` days later, with their times.
pub fn shifted(events: &[(String, Vec<u8>)], days: i64) -> Vec<(Timestamp, String, Vec<u8>)> {
    events
        .iter()
        .map(|(key, bytes)| {
            let mut v: Value = serde_json::from_slice(bytes).expect("event");
            let time = Timestamp::parse(v["time"].as_str().expect("time"))
                .expect("RFC 3339")
                .saturating_add(toolgate_protocol::Duration::from_secs(days * 86_400));
            v["time"] = Value::String(time.to_string());
            (time, key.clone(), serde_json::to_vec(&v).expect("encode"))
        })
        .collect()
}

/// A verifier trusting the key the engine made under its data directory.
pub fn verifier(config: &Config) -> DecisionVerifier {
    let seed = std::fs::read_to_string(
        Path::new(&config.engine.data_dir).join(&config.engine.signing_key_file),
    )
    .expect("signing key written by the engine");
    let signer = toolgate_protocol::decision::DecisionSigner::from_seed_base64(
        &config.engine.key_id,
        seed.trim(),
    )
    .expect("a valid key");
    let mut v = DecisionVerifier::default();
    v.add_key(&config.engine.key_id, &signer.public_key_base64())
        .expect("key");
    v
}

pub fn finding_ids(records: &[Record]) -> BTreeSet<String> {
    records
        .iter()
        .map(|r| {
            r.json()["finding_id"]
                .as_str()
                .expect("finding_id")
                .to_string()
        })
        .collect()
}

/// The findings `toolgate analyze` makes of the same events, by id.
pub fn offline_finding_ids(dir: &Path, events: &[(String, Vec<u8>)]) -> BTreeSet<String> {
    offline_finding_ids_under(&Config::default(), dir, events)
}

/// [`offline_finding_ids`] with `config`.
pub fn offline_finding_ids_under(
    config: &Config,
    dir: &Path,
    events: &[(String, Vec<u8>)],
) -> BTreeSet<String> {
    let input = dir.join("offline.jsonl");
    let mut text = Vec::new();
    for (_, e) in events {
        text.extend_from_slice(e);
        text.push(b'\n');
    }
    std::fs::write(&input, text).expect("write");
    let mut ids = BTreeSet::new();
    toolgate_engine::replay::replay(
        config,
        input.to_str().expect("utf-8"),
        &dir.join("offline.dlq"),
        None,
        |_| Ok(()),
        |f| {
            ids.insert(f.finding_id.clone());
            Ok(())
        },
    )
    .expect("offline replay");
    ids
}

/// Waits until the findings topic holds every id in `expected`.
pub fn await_findings(brokers: &str, expected: &BTreeSet<String>) -> Vec<Record> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let findings = read_all(brokers, "toolgate.findings", expected.len());
        if finding_ids(&findings).is_superset(expected) || Instant::now() > deadline {
            return findings;
        }
    }
}

/// `toolgate run` as its own process, against `brokers`, with the config `config`
/// wrote under `dir`; its stderr goes to `dir/<name>.log`.
pub struct EngineProcess {
    child: Child,
    log: std::path::PathBuf,
}

impl EngineProcess {
    pub fn spawn(dir: &Path, brokers: &str, name: &str) -> EngineProcess {
        Self::spawn_with(dir, brokers, name, &[])
    }

    /// [`EngineProcess::spawn`] with global options before `run`.
    pub fn spawn_with(dir: &Path, brokers: &str, name: &str, global: &[&str]) -> EngineProcess {
        let log = dir.join(format!("{name}.log"));
        let child = Command::new(env!("CARGO_BIN_EXE_toolgate"))
            .args(global)
            .args([
                "run",
                "--no-history",
                "--workers",
                "1",
                "--brokers",
                brokers,
                "--config",
            ])
            .arg(dir.join("toolgate.toml"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("toolgate run");
        EngineProcess { child, log }
    }

    /// What it wrote to stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until its log contains `text`.
    pub fn await_log(&self, text: &str, within: Duration) {
        let deadline = Instant::now() + within;
        while !self.log().contains(text) {
            assert!(Instant::now() < deadline, "no {text:?} in:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL: no checkpoint, no leaving the group.
    pub fn kill_9(mut self) {
        self.child.kill().expect("kill -9");
        self.child.wait().expect("reap");
    }

    /// SIGTERM, then waits for a clean exit.
    pub fn terminate(mut self) -> String {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill -TERM");
        assert!(status.success());
        let exit = self.child.wait().expect("wait");
        let log = self.log();
        assert!(exit.success(), "toolgate run failed: {log}");
        log
    }
}

impl Drop for EngineProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Two engines share the group; one is killed with SIGKILL mid-stream. The other takes
/// its partitions over from their last checkpoints: every finding one offline replay
/// of all the events makes arrives, and no other.
pub fn two_engines_one_killed_lose_nothing(brokers: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    config(dir.path());
    // Each copy 30 days after the one before (the sample spans 23) and every batch in
    // time order, so that the order the partitions hold is the order an offline replay
    // sorts the events into.
    let batches: Vec<Vec<(String, Vec<u8>)>> = (0..3)
        .map(|b| {
            let mut batch: Vec<(Timestamp, String, Vec<u8>)> = (0..8)
                .flat_map(|i| shifted(&sample(&format!("-{b}-{i}")), (b * 8 + i) * 30))
                .collect();
            batch.sort_by_key(|(t, _, _)| *t);
            batch.into_iter().map(|(_, k, e)| (k, e)).collect()
        })
        .collect();
    let all: Vec<_> = batches.iter().flatten().cloned().collect();
    let expected = offline_finding_ids(dir.path(), &all);

    produce(brokers, &batches[0]);
    let a = EngineProcess::spawn(dir.path(), brokers, "engine-a");
    a.await_log("assigned partitions", Duration::from_secs(30));
    let b = EngineProcess::spawn(dir.path(), brokers, "engine-b");
    // The group rebalances: the first engine gives partitions up, the second gets some.
    a.await_log("revoked partitions", Duration::from_secs(30));
    b.await_log("assigned partitions", Duration::from_secs(30));
    produce(brokers, &batches[1]);
    std::thread::sleep(Duration::from_millis(1500));
    let a_log = a.log();
    a.kill_9();
    produce(brokers, &batches[2]);
    let findings = await_findings(brokers, &expected);
    let log = b.terminate();
    let ids = finding_ids(&findings);
    let extra: Vec<Value> = findings
        .iter()
        .map(Record::json)
        .filter(|f| !expected.contains(f["finding_id"].as_str().unwrap_or_default()))
        .collect();
    assert_eq!(
        extra,
        Vec::<Value>::new(),
        "no finding beyond what one replay of everything makes:\n{a_log}\n{log}"
    );
    assert_eq!(
        expected.difference(&ids).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "every finding arrived:\n{log}"
    );
    assert!(
        log.contains("from_checkpoints=[Some"),
        "the survivor resumed a partition from a checkpoint:\n{log}"
    );
}

/// Events in; findings (the same as an offline replay's), signed decisions keyed and
/// partitioned for the agents' sinks, and dead letters with their causes out.
pub fn events_become_findings_decisions_and_dead_letters(brokers: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = config(dir.path());
    // The engine's clients as the helpers' (TLS, SASL).
    config
        .kafka
        .properties
        .extend(super::topics::security(brokers));
    let mut events = sample("");
    let garbage: Vec<(String, Vec<u8>)> = vec![
        ("bad-1".into(), b"\xff\xfe not json".to_vec()),
        (
            "bad-2".into(),
            br#"{"schema":"toolgate.event.v1","kind":"tool_call","event_id":"x"}"#.to_vec(),
        ),
        ("bad-3".into(), vec![b' '; 2 << 20]),
    ];
    events.extend(garbage.iter().cloned());
    produce(brokers, &events);

    let engine = start(&config, brokers);
    let expected = offline_finding_ids(dir.path(), &events[..events.len() - 3]);
    assert!(!expected.is_empty());
    let findings = read_all(brokers, "toolgate.findings", expected.len());
    let dlq = read_all(brokers, "toolgate.dlq", 3);
    let decisions = read_all(brokers, "toolgate.decisions", 1);
    let report = stop(engine);

    assert_eq!(report.events, 54);
    assert_eq!(
        finding_ids(&findings),
        expected,
        "the same findings as the offline replay of the same events"
    );
    for f in &findings {
        let agent = f.json()["agent_id"].as_str().expect("agent_id").to_string();
        assert_eq!(
            (f.key.as_str(), f.partition),
            (agent.as_str(), partition_for(agent.as_bytes(), PARTITIONS)),
            "keyed and partitioned by agent"
        );
    }

    assert_eq!(dlq.len(), 3, "every malformed record is dead-lettered");
    assert_eq!(report.rejected_by_kind.values().sum::<u64>(), 3);
    let by_key: BTreeMap<&str, &Record> = dlq.iter().map(|r| (r.key.as_str(), r)).collect();
    assert_eq!(by_key["bad-1"].payload, garbage[0].1, "original bytes kept");
    assert_eq!(
        by_key["bad-1"].headers["toolgate.error.kind"],
        "invalid_json"
    );
    assert_eq!(
        by_key["bad-2"].headers["toolgate.error.kind"],
        "missing_field"
    );
    assert!(by_key["bad-2"].headers.contains_key("toolgate.error.field"));
    assert_eq!(by_key["bad-3"].headers["toolgate.error.kind"], "too_large");
    assert_eq!(by_key["bad-3"].headers["toolgate.source.truncated"], "true");
    for r in &dlq {
        assert_eq!(r.headers["toolgate.source.topic"], "toolgate.events");
        assert!(r.headers["toolgate.source.offset"].parse::<i64>().is_ok());
    }

    let verifier = verifier(&config);
    let blocks: Vec<Decision> = decisions
        .iter()
        .map(|r| serde_json::from_slice(&r.payload).expect("a decision"))
        .collect();
    assert!(!blocks.is_empty(), "the blocking finding became a decision");
    for (d, r) in blocks.iter().zip(&decisions) {
        verifier.verify(d).expect("signed with the engine's key");
        assert_eq!(d.action, DecisionAction::Block);
        assert_eq!(r.key, d.scope.agent_id);
        assert_eq!(
            r.partition,
            partition_for(r.key.as_bytes(), PARTITIONS),
            "where the agent's sink reads"
        );
        assert!(d.finding_ids.iter().all(|id| expected.contains(id)));
    }
}
