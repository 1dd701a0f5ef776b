//! The streaming engine's throughput and latency, side by side in one run, on the
//! embedded broker (librdkafka's mock cluster, 16 partitions) on this machine:
//!
//! - a bare rdkafka consumer loop reading the events (no decoding);
//! - the engine with no detectors (decode, route to per-partition workers, checkpoint);
//! - the engine with every default detector, findings, decisions and the history;
//!
//! each over two kinds of traffic: copies of the shipped AgentDojo sample (real agent
//! sessions whose results carry whole documents) and a synthetic fleet of light calls.
//! Then the round trip a held call waits for: the sink library publishes the call, the
//! engine finds the exfiltration and signs a verdict, and the sink applies it.
//!
//! `cargo bench --bench engine` prints the table (`TOOLGATE_BENCH_TRAFFIC=agentdojo` or
//! `fleet` for one kind of traffic only); `cargo bench --bench engine -- --soak
//! 600 --brokers HOST:PORT [--state-ttl 2m]` instead runs the engine for 600 s at a
//! steady rate against a broker in another process (tansu) and prints its RSS every
//! 30 s.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::{Value, json};
use toolgate_engine::embedded::EmbeddedBroker;
use toolgate_engine::{Counters, EngineOptions, run};
use toolgate_protocol::config::{Config, TopicsConfig};
use toolgate_protocol::partition::PARTITIONER;
use toolgate_sink::library::{Sink, Verdict};

/// Partitions of the benchmark's topics: the mock cluster keeps 5 MiB of each, so more
/// partitions hold a longer run.
const PARTITIONS: i32 = 16;

type Records = Vec<(String, Vec<u8>)>;

/// `copies` copies of the AgentDojo sample with their own ids, in time order as sinks
/// would send them. The sample spans 23 days; each copy is squeezed into one minute
/// (order kept), a minute after the one before, so the history writes a few hourly
/// files rather than one per hour of 200 × 23 days.
fn agentdojo(copies: usize) -> Records {
    let text = include_str!("../examples/agentdojo-sample.jsonl");
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("sample"))
        .collect();
    let times: Vec<i64> = lines
        .iter()
        .map(|l| {
            toolgate_protocol::Timestamp::parse(l["time"].as_str().expect("time"))
                .expect("time")
                .unix_nanos()
        })
        .collect();
    let first = toolgate_protocol::Timestamp::from_unix_nanos(*times.iter().min().expect("events"));
    let span = times.iter().max().expect("events") - first.unix_nanos();
    let span_to_minute = (span / 59_000_000_000).max(1);
    let base = toolgate_protocol::Timestamp::parse("2026-11-01T00:00:00Z").expect("time");
    let mut out = Vec::with_capacity(copies * lines.len());
    for copy in 0..copies {
        for line in &lines {
            let mut v = line.clone();
            for field in ["event_id", "agent_id", "session_id", "call_id"] {
                if let Some(s) = v[field].as_str() {
                    v[field] = Value::String(format!("{s}-{copy}"));
                }
            }
            let original = toolgate_protocol::Timestamp::parse(v["time"].as_str().expect("time"))
                .expect("time");
            let offset = (original.unix_nanos() - first.unix_nanos()) / span_to_minute;
            let time = base.saturating_add(toolgate_protocol::Duration::from_nanos(
                copy as i64 * 60_000_000_000 + offset,
            ));
            v["time"] = Value::String(time.to_string());
            let key = v["agent_id"].as_str().expect("agent").to_string();
            out.push((time, key, serde_json::to_vec(&v).expect("encode")));
        }
    }
    out.sort_by_key(|(time, _, _)| *time);
    out.into_iter().map(|(_, k, v)| (k, v)).collect()
}

/// A fleet of `agents` support agents making light calls (a search, a record read, a
/// web search, each with its result), `events` in all, 50 ms apart per agent.
fn fleet(agents: usize, events: usize) -> Records {
    let start = toolgate_protocol::Timestamp::parse("2026-11-01T00:00:00Z").expect("time");
    let mut out = Vec::with_capacity(events);
    let mut turn = 0usize;
    while out.len() < events {
        for a in 0..agents {
            let agent = format!("fleet-{a}");
            let time = start
                .saturating_add(toolgate_protocol::Duration::from_millis((turn * 50) as i64))
                .to_string();
            let calls = [
                (
                    "crm",
                    "search_customers",
                    json!({"query": "ACME"}),
                    "3 customers match: C-1001, C-1017".to_string(),
                ),
                (
                    "crm",
                    "get_record",
                    json!({"record_id": format!("C-{}", 1000 + (turn + a) % 40)}),
                    format!(
                        "Customer C-{}: Maria Keller, maria.keller{a}@example.org, renewal 2026-03-01.",
                        1000 + (turn + a) % 40
                    ),
                ),
                (
                    "web",
                    "search",
                    json!({"query": "shipping rates to Berlin"}),
                    "Top results: a pricing page, a news article.".to_string(),
                ),
            ];
            for (i, (server, tool, arguments, text)) in calls.into_iter().enumerate() {
                let call_id = format!("{turn}-{i}");
                let base = json!({"schema": "toolgate.event.v1", "time": time, "agent_id": agent,
                    "session_id": format!("{agent}-s"), "agent_role": "support-bot",
                    "server": server, "call_id": call_id, "tool": tool});
                let mut call = base.clone();
                call["kind"] = json!("tool_call");
                call["event_id"] = json!(format!("{agent}-{turn}-{i}-c"));
                call["arguments"] = arguments;
                let mut result = base;
                result["kind"] = json!("tool_result");
                result["event_id"] = json!(format!("{agent}-{turn}-{i}-r"));
                result["result"] = json!({"content": [{"type": "text", "text": text}]});
                for v in [call, result] {
                    out.push((agent.clone(), serde_json::to_vec(&v).expect("encode")));
                }
            }
        }
        turn += 1;
    }
    out.truncate(events);
    out
}

fn produce(brokers: &str, records: &Records) {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("partitioner", PARTITIONER)
        .set("linger.ms", "20")
        .set("queue.buffering.max.messages", "1000000")
        .set("queue.buffering.max.kbytes", "2000000")
        .create()
        .expect("producer");
    for (key, payload) in records {
        let mut record = BaseRecord::to("toolgate.events").key(key).payload(payload);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((
                    rdkafka::error::KafkaError::MessageProduction(
                        rdkafka::types::RDKafkaErrorCode::QueueFull,
                    ),
                    r,
                )) => {
                    record = r;
                    producer.poll(Duration::from_millis(10));
                }
                Err((e, _)) => panic!("producing: {e}"),
            }
        }
    }
    producer.flush(Duration::from_secs(60)).expect("flush");
}

/// A timed window: wall time and the whole process's CPU time (every thread: the
/// consumer, librdkafka's, the mock broker's, the workers'), so a rate comes with the
/// share of the two cores it took.
struct Window {
    wall: Instant,
    cpu: f64,
}

/// Events per second, and cores busy on average.
#[derive(Clone, Copy)]
struct Measured {
    rate: f64,
    cores: f64,
}

impl Measured {
    /// `events/s (cores)` for the table.
    fn cell(&self) -> String {
        format!("{:.0} ({:.2} cores)", self.rate, self.cores)
    }
}

impl Window {
    fn start() -> Self {
        Window {
            wall: Instant::now(),
            cpu: process_cpu_seconds(),
        }
    }

    fn finish(&self, events: usize) -> Measured {
        let wall = self.wall.elapsed().as_secs_f64().max(1e-9);
        Measured {
            rate: events as f64 / wall,
            cores: (process_cpu_seconds() - self.cpu) / wall,
        }
    }
}

/// CPU time of every thread of this process, exited ones included.
fn process_cpu_seconds() -> f64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec we own.
    let ok = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut t) } == 0;
    assert!(ok, "clock_gettime(CLOCK_PROCESS_CPUTIME_ID)");
    t.tv_sec as f64 + t.tv_nsec as f64 * 1e-9
}

/// Events per second of a consumer that only counts what it reads.
fn bare_consumer(brokers: &str, n: usize) -> Measured {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "bench-bare")
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "10")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition_offset("toolgate.events", p, Offset::Beginning)
            .expect("partition");
    }
    consumer.assign(&tpl).expect("assign");
    let mut read = 0usize;
    let mut bytes = 0usize;
    let mut started = None;
    while read < n {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                started.get_or_insert_with(Window::start);
                read += 1;
                bytes += m.payload_len();
            }
            Some(Err(e)) => panic!("bare consumer: {e}"),
            None => {}
        }
    }
    std::hint::black_box(bytes);
    started.expect("the loop reads n > 0 records").finish(n)
}

/// The engine on its own thread with 2 workers, until `stop` is raised.
fn spawn_engine(
    config: Config,
    brokers: &str,
    history: bool,
    counters: Arc<Counters>,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<toolgate_engine::EngineReport> {
    let brokers = brokers.to_string();
    std::thread::spawn(move || {
        run(
            &config,
            EngineOptions {
                brokers,
                workers: 2,
                history,
                watcher: None,
                counters,
            },
            &stop,
        )
        .expect("engine")
    })
}

/// Events per second of the engine from its first event to its `n`th.
fn engine(brokers: &str, config: &Config, group: &str, n: usize, history: bool) -> Measured {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = config.clone();
    config.kafka.group_id = group.to_string();
    config.engine.data_dir = dir.path().join("data").display().to_string();
    config.history.location = dir.path().join("history").display().to_string();
    let counters = Arc::new(Counters::default());
    let stop = Arc::new(AtomicBool::new(false));
    let handle = spawn_engine(config, brokers, history, counters.clone(), stop.clone());
    let mut started = None;
    loop {
        let seen = Counters::get(&counters.events) as usize;
        if seen > 0 {
            started.get_or_insert_with(Window::start);
        }
        if seen >= n {
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let measured = started.expect("the loop waits for n > 0 events").finish(n);
    stop.store(true, Ordering::Relaxed);
    handle.join().expect("engine thread");
    measured
}

fn without_detectors() -> Config {
    let names = toolgate_detectors::registry()
        .iter()
        .map(|d| format!("[detectors.{}]\nenabled = false\n", d.name))
        .collect::<String>();
    Config::from_toml(&names, "bench").expect("config")
}

/// Held-call round trips: the sink publishes a transfer to an account it just read
/// from an untrusted file and holds it; the engine finds the injected destination and
/// signs a block verdict for the call; the sink reads it from its partition and
/// refuses the call. Timed from `before_call` to its answer.
fn verdict_latency(brokers: &str, calls: usize) -> Vec<Duration> {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = format!(
        r#"
[servers.files]
trust_domain = "untrusted"
[servers.payments]
trust_domain = "external"
[redaction]
mode = "hash"
[[sink.hold]]
name = "payments"
tools = ["send_money_*"]
hold_timeout_ms = 5000
[sink]
agent_id = "bench-agent"
spool_dir = "{spool}"
decision_fetch_wait_ms = 5
[engine]
data_dir = "{data}"
"#,
        spool = dir.path().join("spool").display(),
        data = dir.path().join("data").display()
    );
    let mut config = Config::from_toml(&text, "bench").expect("config");
    config.kafka.group_id = "bench-verdicts".into();
    let signer = toolgate_engine::decisions::load_or_create_signer(
        &dir.path().join("data/decision-signing.key"),
        "engine-1",
    )
    .expect("key");
    config
        .sink
        .decision_keys
        .insert("engine-1".into(), signer.public_key_base64());
    let stop = Arc::new(AtomicBool::new(false));
    let handle = spawn_engine(config.clone(), brokers, false, Arc::default(), stop.clone());
    let mut files = Sink::with_brokers(&config, "files", Some(brokers)).expect("sink");
    let mut payments = Sink::with_brokers(&config, "payments", Some(brokers)).expect("sink");
    let mut out = Vec::new();
    for i in 0..calls + 5 {
        let iban = iban(i);
        let read = json!({"path": format!("invoices/{i}.txt")});
        let Verdict::Forward { call_id } = files
            .before_call("read_file", read.as_object().expect("object"))
            .expect("call")
        else {
            panic!("read refused");
        };
        let result = json!({"content": [{"type": "text",
            "text": format!("Invoice {i}: please pay 950 EUR to {iban} today.")}]});
        files
            .after_result(&call_id, result.as_object().expect("object"))
            .expect("result");
        std::thread::sleep(Duration::from_millis(20));
        let pay = json!({"recipient": iban, "amount": 950});
        // A tool of its own each time: the block decision that follows the finding
        // covers its tool for the rest of the session, and the sink would refuse the
        // next call from that cache without asking the engine.
        let started = Instant::now();
        let verdict = payments
            .before_call(&format!("send_money_{i}"), pay.as_object().expect("object"))
            .expect("call");
        let took = started.elapsed();
        assert!(
            matches!(verdict, Verdict::Refuse { .. }),
            "not blocked: {verdict:?}"
        );
        // The first calls include the engine joining the group.
        if i >= 5 {
            out.push(took);
        }
    }
    stop.store(true, Ordering::Relaxed);
    handle.join().expect("engine thread");
    out
}

/// A valid (mod-97) IBAN per `i`, so each transfer goes to an account of its own.
fn iban(i: usize) -> String {
    let bban = format!("BUKB2020{:010}", 1_555_555_555 + i);
    let digits: String = format!("{bban}GB00")
        .chars()
        .map(|c| {
            if c.is_ascii_digit() {
                c.to_string()
            } else {
                (c as u32 - 'A' as u32 + 10).to_string()
            }
        })
        .collect();
    let rem = digits
        .bytes()
        .fold(0u32, |r, d| (r * 10 + u32::from(d - b'0')) % 97);
    format!("GB{:02}{bban}", 98 - rem)
}

fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// The engine for `seconds` at a steady 5,000 events/s of fleet traffic (new agents
/// keep arriving, so state must expire to stay flat); RSS every 30 s. The broker is
/// another process (`brokers`), so what it stores is not counted here. `state_ttl`
/// shortens how long the detectors keep an idle agent's state (the provenance horizon
/// and the volume key TTL, one hour by default), so a short run reaches the plateau.
fn soak(seconds: u64, brokers: &str, state_ttl: Option<&str>) {
    let brokers = brokers.to_string();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = Config::default();
    if let Some(ttl) = state_ttl {
        config
            .detectors
            .insert("provenance".into(), json!({ "horizon": ttl }));
        config
            .detectors
            .insert("volume".into(), json!({ "key_ttl": ttl }));
    }
    config.engine.data_dir = dir.path().join("data").display().to_string();
    config.history.location = dir.path().join("history").display().to_string();
    let counters = Arc::new(Counters::default());
    let stop = Arc::new(AtomicBool::new(false));
    let handle = spawn_engine(config, &brokers, true, counters.clone(), stop.clone());
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("partitioner", PARTITIONER)
        .set("linger.ms", "5")
        .create()
        .expect("producer");
    let started = Instant::now();
    let mut next_report = Duration::ZERO;
    let mut batch = 0usize;
    println!("seconds,events,rss_mib");
    while started.elapsed() < Duration::from_secs(seconds) {
        // 500 events every 100 ms, from agents that change every minute.
        let generation = started.elapsed().as_secs() / 60;
        let records = fleet(50, 500);
        for (key, payload) in &records {
            let key = format!("{key}-g{generation}");
            let mut v: Value = serde_json::from_slice(payload).expect("event");
            v["agent_id"] = json!(key);
            v["event_id"] = json!(format!("{}-{batch}", v["event_id"].as_str().unwrap_or("")));
            v["time"] = json!(toolgate_protocol::Timestamp::now().to_string());
            let bytes = serde_json::to_vec(&v).expect("encode");
            while producer
                .send(BaseRecord::to("toolgate.events").key(&key).payload(&bytes))
                .is_err()
            {
                producer.poll(Duration::from_millis(5));
            }
        }
        producer.poll(Duration::ZERO);
        batch += 1;
        let due = Duration::from_millis(100 * batch as u64);
        if let Some(wait) = due.checked_sub(started.elapsed()) {
            std::thread::sleep(wait);
        }
        if started.elapsed() >= next_report {
            println!(
                "{},{},{:.1}",
                started.elapsed().as_secs(),
                Counters::get(&counters.events),
                rss_mib()
            );
            next_report += Duration::from_secs(30);
        }
    }
    stop.store(true, Ordering::Relaxed);
    handle.join().expect("engine thread");
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1e3
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--soak") {
        let seconds = args.get(i + 1).and_then(|s| s.parse().ok()).unwrap_or(600);
        let brokers = args
            .iter()
            .position(|a| a == "--brokers")
            .and_then(|b| args.get(b + 1))
            .expect("--soak needs --brokers HOST:PORT (a broker in another process)");
        let state_ttl = args
            .iter()
            .position(|a| a == "--state-ttl")
            .and_then(|t| args.get(t + 1));
        soak(seconds, brokers, state_ttl.map(String::as_str));
        return;
    }
    println!(
        "| traffic | events | bare consumer (events/s, cores busy) | engine, no detectors | engine, all default detectors | the same + history |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: |");
    // TOOLGATE_BENCH_SCALE=10 runs a tenth of the events, for a quick look. The mock
    // cluster keeps only the newest 5 MiB (or 100,000 batches) of each partition and
    // finds a fetch's offset by scanning its log, so every run here stays under 5 MiB
    // a partition: larger backlogs lose their head before a consumer reaches it.
    let scale: usize = std::env::var("TOOLGATE_BENCH_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1)
        .max(1);
    // TOOLGATE_BENCH_TRAFFIC=agentdojo (or fleet) runs one kind of traffic only, and
    // skips the verdict round trip: a narrower run to profile.
    let only = std::env::var("TOOLGATE_BENCH_TRAFFIC").ok();
    type Traffic = (&'static str, &'static str, fn(usize) -> Records);
    let traffic: [Traffic; 2] = [
        ("agentdojo", "AgentDojo sample copies", |scale| {
            agentdojo(800 / scale)
        }),
        ("fleet", "synthetic fleet", |scale| {
            fleet(1_000, 160_000 / scale)
        }),
    ];
    for (_, name, records) in traffic
        .into_iter()
        .filter(|(key, _, _)| only.as_deref().is_none_or(|o| o == *key))
    {
        let records = records(scale);
        let broker = EmbeddedBroker::start(&TopicsConfig::default(), PARTITIONS).expect("broker");
        let brokers = broker.bootstrap().to_string();
        produce(&brokers, &records);
        let n = records.len();
        eprintln!("{name}: {n} events produced");
        let bare = bare_consumer(&brokers, n);
        eprintln!("{name}: bare consumer {}", bare.cell());
        let none = engine(&brokers, &without_detectors(), "bench-none", n, false);
        eprintln!("{name}: engine without detectors {}", none.cell());
        let all = engine(&brokers, &Config::default(), "bench-all", n, true);
        eprintln!("{name}: engine with all detectors {}", all.cell());
        let all_no_history = engine(&brokers, &Config::default(), "bench-all-nh", n, false);
        println!(
            "| {name} | {n} | {} | {} ({:.0} % of bare) | {} | {} |",
            bare.cell(),
            none.cell(),
            100.0 * none.rate / bare.rate,
            all_no_history.cell(),
            all.cell()
        );
    }
    if only.is_some() {
        return;
    }
    let broker = EmbeddedBroker::start(&TopicsConfig::default(), PARTITIONS).expect("broker");
    let mut latencies = verdict_latency(broker.bootstrap(), 200);
    latencies.sort();
    println!(
        "\nheld call → engine verdict applied at the sink ({} calls): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        latencies.len(),
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        percentile(&latencies, 1.0)
    );
}
