//! What the stdio proxy costs an agent, measured against the same server without it in
//! one run: added latency per `tools/call` round trip, the proxy's start-up time, and
//! its memory at idle and under 5,000 calls/s.
//!
//! The MCP server is this binary re-executed as an echo server (`ECHO_SERVER=1`), so
//! the server's own time is as small and steady as it gets. The sink runs twice: events
//! to a JSONL file, and events to Kafka (librdkafka's mock cluster on loopback, started
//! here) through the spool; the policy check runs on every call. Start-up and memory
//! are measured with the Kafka producer active.
//!
//! `cargo bench -p toolgate-sink --bench stdio_proxy` (`CALLS=N` for another count;
//! `SINK_BASELINE=path/to/an/older/toolgate-sink` adds a before/after table, the two
//! binaries' calls interleaved in one run).

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

fn main() {
    if std::env::var_os("RELAY").is_some() {
        relay();
        return;
    }
    if std::env::var_os("ECHO_SERVER").is_some() {
        echo_server();
        return;
    }
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let calls: usize = std::env::var("CALLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("toolgate.toml");
    std::fs::write(
        &config,
        format!(
            "[sink]\nagent_id = \"bench\"\nevents_file = \"{}\"\nspool_dir = \"{}\"\n\n\
             [detectors.policy]\n[[detectors.policy.rules]]\nid = \"no-deletes\"\n\
             tools = [\"delete_*\"]\neffect = \"deny\"\n",
            dir.path().join("events.jsonl").display(),
            dir.path().join("spool").display()
        ),
    )
    .expect("config");
    let cluster = rdkafka::mocking::MockCluster::new(1).expect("mock cluster");
    cluster
        .create_topic("toolgate.events", 1, 1)
        .expect("topic");
    let kafka_config = dir.path().join("toolgate-kafka.toml");
    std::fs::write(
        &kafka_config,
        format!(
            "[sink]\nagent_id = \"bench\"\nspool_dir = \"{}\"\n\
             # Shipping events is measured, not enforcement.\n\
             enforce_decisions = false\n\n\
             [kafka]\nbrokers = [\"{}\"]\n\n\
             [detectors.policy]\n[[detectors.policy.rules]]\nid = \"no-deletes\"\n\
             tools = [\"delete_*\"]\neffect = \"deny\"\n",
            dir.path().join("spool").display(),
            cluster.bootstrap_servers()
        ),
    )
    .expect("config");
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("stdio proxy benchmark: {calls} sequential tools/call round trips, {cores} cores");

    // Interleaved, one call to each in turn, so that whatever else the machine does
    // falls on all three alike.
    let mut peers = [
        Peer::start(None),
        Peer::start_relay(),
        Peer::start(Some(&config)),
        Peer::start(Some(&kafka_config)),
    ];
    let [direct, relayed, to_file, proxied] = latencies(&mut peers, calls);
    println!("\n| round trip | p50 | p90 | p99 | p99.9 |");
    println!("| --- | ---: | ---: | ---: | ---: |");
    for (name, l) in [
        ("direct", &direct),
        ("through a bare byte relay (no parsing)", &relayed),
        ("through toolgate-sink, events to a JSONL file", &to_file),
        ("through toolgate-sink, events to Kafka", &proxied),
    ] {
        println!(
            "| {name} | {:.1} µs | {:.1} µs | {:.1} µs | {:.1} µs |",
            pct(l, 50.0),
            pct(l, 90.0),
            pct(l, 99.0),
            pct(l, 99.9)
        );
    }
    println!(
        "| added, JSONL file (difference of percentiles) | {:.1} µs | {:.1} µs | {:.1} µs | {:.1} µs |",
        pct(&to_file, 50.0) - pct(&direct, 50.0),
        pct(&to_file, 90.0) - pct(&direct, 90.0),
        pct(&to_file, 99.0) - pct(&direct, 99.0),
        pct(&to_file, 99.9) - pct(&direct, 99.9)
    );
    println!(
        "| added, Kafka (difference of percentiles) | {:.1} µs | {:.1} µs | {:.1} µs | {:.1} µs |",
        pct(&proxied, 50.0) - pct(&direct, 50.0),
        pct(&proxied, 90.0) - pct(&direct, 90.0),
        pct(&proxied, 99.0) - pct(&direct, 99.0),
        pct(&proxied, 99.9) - pct(&direct, 99.9)
    );
    println!(
        "| added by the sink's own work, Kafka (sink minus relay) | {:.1} µs | {:.1} µs | {:.1} µs | {:.1} µs |",
        pct(&proxied, 50.0) - pct(&relayed, 50.0),
        pct(&proxied, 90.0) - pct(&relayed, 90.0),
        pct(&proxied, 99.0) - pct(&relayed, 99.0),
        pct(&proxied, 99.9) - pct(&relayed, 99.9)
    );

    let startup = |sink: Option<&Path>| {
        let mut times: Vec<f64> = (0..20)
            .map(|_| {
                let started = Instant::now();
                let mut peer = Peer::start(sink);
                peer.call(0, "echo");
                started.elapsed().as_secs_f64() * 1e3
            })
            .collect();
        times.sort_by(f64::total_cmp);
        times[times.len() / 2]
    };
    println!(
        "\nstart-up to the first answered call (median of 20): direct {:.1} ms, through the sink {:.1} ms",
        startup(None),
        startup(Some(&kafka_config))
    );

    let mut peer = Peer::start(Some(&kafka_config));
    peer.call(0, "echo");
    std::thread::sleep(Duration::from_millis(200));
    let idle = rss_kib(peer.child.id());
    // 5,000 calls/s for 5 s, paced.
    let started = Instant::now();
    let mut peak = idle;
    for i in 0..25_000u64 {
        let due = started + Duration::from_micros(i * 200);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        peer.call(i, "echo");
        if i % 1_000 == 0 {
            peak = peak.max(rss_kib(peer.child.id()));
        }
    }
    let rate = 25_000.0 / started.elapsed().as_secs_f64();
    peak = peak.max(rss_kib(peer.child.id()));
    println!(
        "sink RSS: {:.1} MiB idle, {:.1} MiB peak at {:.0} calls/s",
        idle as f64 / 1024.0,
        peak as f64 / 1024.0,
        rate
    );
    in_process(&kafka_config, calls);
    if let Some(baseline) = std::env::var_os("SINK_BASELINE") {
        against_baseline(Path::new(&baseline), &config, &kafka_config, calls);
    }
}

/// This tree's sink beside another build of it (`SINK_BASELINE`), with both transports,
/// their calls interleaved so that the machine's noise falls on both alike.
fn against_baseline(baseline: &Path, config: &Path, kafka_config: &Path, calls: usize) {
    let this = Path::new(env!("CARGO_BIN_EXE_toolgate-sink"));
    let mut peers = [
        Peer::start(None),
        Peer::start_sink(baseline, config),
        Peer::start_sink(this, config),
        Peer::start_sink(baseline, kafka_config),
        Peer::start_sink(this, kafka_config),
    ];
    let [direct, base_file, this_file, base_kafka, this_kafka] = latencies(&mut peers, calls);
    println!(
        "\nbefore/after, {calls} interleaved round trips each; added = sink minus direct, by percentile (baseline {})",
        baseline.display()
    );
    println!("\n| added round trip | p50 | p90 | p99 | p99.9 |");
    println!("| --- | ---: | ---: | ---: | ---: |");
    for (name, l) in [
        ("baseline sink, events to a JSONL file", &base_file),
        ("this sink, events to a JSONL file", &this_file),
        ("baseline sink, events to Kafka", &base_kafka),
        ("this sink, events to Kafka", &this_kafka),
    ] {
        println!(
            "| {name} | {:.1} µs | {:.1} µs | {:.1} µs | {:.1} µs |",
            pct(l, 50.0) - pct(&direct, 50.0),
            pct(l, 90.0) - pct(&direct, 90.0),
            pct(l, 99.0) - pct(&direct, 99.0),
            pct(l, 99.9) - pct(&direct, 99.9)
        );
    }
}

/// The same checks and events in-process (`library::Sink`, Kafka producer active): what
/// an agent written in Rust pays per call, with no process or pipe in between.
fn in_process(config: &Path, calls: usize) {
    use toolgate_sink::library::{Sink, Verdict};
    let config = toolgate_protocol::config::Config::load(config).expect("config");
    let mut sink = Sink::new(&config, "bench").expect("sink");
    let tools = serde_json::json!({"tools": [{"name": "echo", "description": "Echo",
        "inputSchema": {"type": "object"}}]});
    sink.tools_listed(tools.as_object().expect("object"))
        .expect("listing");
    let arguments = serde_json::json!({"text": "hello"});
    let result = serde_json::json!({"content": [{"type": "text", "text": "hello"}]});
    let mut times = Vec::with_capacity(calls);
    for i in 0..calls + 2_000 {
        let started = Instant::now();
        let verdict = sink
            .before_call("echo", arguments.as_object().expect("object"))
            .expect("call");
        let Verdict::Forward { call_id } = verdict else {
            panic!("refused: {verdict:?}")
        };
        sink.after_result(&call_id, result.as_object().expect("object"))
            .expect("result");
        if i >= 2_000 {
            times.push(started.elapsed().as_secs_f64() * 1e6);
        }
    }
    times.sort_by(f64::total_cmp);
    println!(
        "in-process (library::Sink, before_call + after_result, Kafka producer active): p50 {:.1} µs, p99 {:.1} µs",
        pct(&times, 50.0),
        pct(&times, 99.0)
    );
    let shipped = sink.close().expect("close").shipped.expect("kafka");
    assert_eq!(shipped.dropped, 0, "{shipped:?}");
}

struct Peer {
    child: Child,
    input: ChildStdin,
    output: BufReader<ChildStdout>,
    line: String,
}

impl Peer {
    fn start(sink: Option<&Path>) -> Peer {
        let me = std::env::current_exe().expect("bench binary");
        let mut cmd = match sink {
            Some(config) => {
                let mut c = Command::new(env!("CARGO_BIN_EXE_toolgate-sink"));
                c.arg("stdio")
                    .arg("--config")
                    .arg(config)
                    .args(["--server", "echo", "--"])
                    .arg(&me);
                c
            }
            None => Command::new(&me),
        };
        Peer::spawn(cmd.env("ECHO_SERVER", "1"))
    }

    /// The echo server behind the sink binary at `binary`.
    fn start_sink(binary: &Path, config: &Path) -> Peer {
        let me = std::env::current_exe().expect("bench binary");
        let mut cmd = Command::new(binary);
        cmd.arg("stdio")
            .arg("--config")
            .arg(config)
            .args(["--server", "echo", "--"])
            .arg(&me);
        Peer::spawn(cmd.env("ECHO_SERVER", "1"))
    }

    /// The echo server behind a process that only copies bytes: the cost of the extra
    /// process and pipe hops alone, which any stdio proxy pays.
    fn start_relay() -> Peer {
        let me = std::env::current_exe().expect("bench binary");
        Peer::spawn(Command::new(&me).env("RELAY", "1"))
    }

    fn spawn(cmd: &mut Command) -> Peer {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn");
        let input = child.stdin.take().expect("stdin");
        let output = BufReader::new(child.stdout.take().expect("stdout"));
        Peer {
            child,
            input,
            output,
            line: String::new(),
        }
    }

    fn call(&mut self, id: u64, tool: &str) {
        writeln!(
            self.input,
            r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"{tool}","arguments":{{"text":"the quick brown fox jumps over the lazy dog","n":{id}}}}}}}"#
        )
        .expect("write");
        self.input.flush().expect("flush");
        self.line.clear();
        self.output.read_line(&mut self.line).expect("read");
        assert!(self.line.contains("\"result\""), "{}", self.line);
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn latencies<const N: usize>(peers: &mut [Peer; N], calls: usize) -> [Vec<f64>; N] {
    for i in 0..2_000 {
        for p in peers.iter_mut() {
            p.call(i, "echo");
        }
    }
    let mut out: [Vec<f64>; N] = std::array::from_fn(|_| Vec::with_capacity(calls));
    for i in 0..calls as u64 {
        for (p, times) in peers.iter_mut().zip(out.iter_mut()) {
            let started = Instant::now();
            p.call(i, "echo");
            times.push(started.elapsed().as_secs_f64() * 1e6);
        }
    }
    for times in &mut out {
        times.sort_by(f64::total_cmp);
    }
    out
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    let i = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// Starts the echo server and copies bytes both ways, one thread per direction.
fn relay() {
    let me = std::env::current_exe().expect("bench binary");
    let mut server = Command::new(me)
        .env_remove("RELAY")
        .env("ECHO_SERVER", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("echo server");
    let mut to_server = server.stdin.take().expect("stdin");
    let mut from_server = server.stdout.take().expect("stdout");
    std::thread::spawn(move || copy(&mut std::io::stdin(), &mut to_server));
    copy(&mut from_server, &mut std::io::stdout());
    let _ = server.wait();
}

fn copy(from: &mut impl std::io::Read, to: &mut impl Write) {
    let mut buf = vec![0u8; 64 * 1024];
    while let Ok(n) = from.read(&mut buf) {
        if n == 0 || to.write_all(&buf[..n]).and_then(|_| to.flush()).is_err() {
            return;
        }
    }
}

/// Answers every request at once with a one-line result.
fn echo_server() {
    let stdin = std::io::stdin();
    let mut out = std::io::stdout().lock();
    for line in stdin.lock().lines() {
        let Ok(line) = line else { return };
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        let Some(id) = msg.get("id") else { continue };
        let reply = serde_json::json!({
            "jsonrpc": "2.0",
            "id": id,
            "result": {"content": [{"type": "text", "text": "ok"}]}
        });
        if writeln!(out, "{reply}").and_then(|_| out.flush()).is_err() {
            return;
        }
    }
}
