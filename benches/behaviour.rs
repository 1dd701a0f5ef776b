//! Volume and sequence detectors over a simulated fleet of 1,000 agents replaying
//! AgentDojo runs (one event per agent every 15 s; see `benches/common`), after one
//! hour of the same traffic has filled their state.
//!
//! - `volume/toolgate`: the volume detector as `deploy/toolgate.example.toml`
//!   configures it: windows per agent, session, server and tool with learned limits, a
//!   distinct-paths threshold (HyperLogLog), a server byte threshold, argument sizes and
//!   heavy hitters.
//! - `volume/exact_deque_baseline`, in the same run: the plain way to get the same
//!   window counts exactly, a deque of every event per key (and of every value for
//!   distinct counts), without the learned limits, sizes or heavy hitters.
//! - `sequence/rules`: the built-in rule, the example config's inline rule, the
//!   shipped TOML and Sigma rule files (9 rules), learned models off.
//! - `sequence/rules_and_learned`: the same with the per-role n-gram model and new
//!   terms on (warm after the fill).
//!
//! Memory per tracked key (heap held after the fill, counting allocator) is printed.
//!
//! `cargo bench --bench behaviour`

mod common;

use std::collections::{HashMap, VecDeque};
use std::hint::black_box;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration as StdDuration, Instant};

use common::{EVENTS_PER_HOUR, Fleet, HELD, runs, sample_events};
use criterion::{BenchmarkGroup, Criterion, Throughput, criterion_group, criterion_main};
use serde_json::{Value, json};
use toolgate_detectors::sequence::{SequenceDetector, SequenceSettings};
use toolgate_detectors::volume::{VolumeDetector, VolumeSettings};
use toolgate_detectors::{Detector, FindingDraft};
use toolgate_protocol::config::Config;
use toolgate_protocol::{Event, EventBody};

#[global_allocator]
static ALLOC: common::Counting = common::Counting;

const BATCH: usize = 10_000;

/// The example config's `[detectors.<name>]` table.
fn example_table(name: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/toolgate.example.toml");
    let text = std::fs::read_to_string(&path).expect("example config");
    let config = Config::from_toml(&text, "example").expect("example config parses");
    config
        .detectors
        .get(name)
        .cloned()
        .unwrap_or_else(|| json!({}))
}

/// Heap held by `build()`'s result after it observed one fleet hour.
fn fill<D>(
    name: &str,
    fleet: &mut Fleet,
    build: impl FnOnce() -> D,
    mut feed: impl FnMut(&mut D, &[Event]),
) -> (D, isize) {
    let before = HELD.load(Ordering::Relaxed);
    let mut d = build();
    let start = Instant::now();
    for _ in 0..EVENTS_PER_HOUR / BATCH {
        let events = fleet.next(BATCH);
        feed(&mut d, &events);
    }
    let held = HELD.load(Ordering::Relaxed) - before;
    eprintln!(
        "{name} fill: {EVENTS_PER_HOUR} events in {:.2} s ({:.0} events/s); heap held {:.1} MiB",
        start.elapsed().as_secs_f64(),
        EVENTS_PER_HOUR as f64 / start.elapsed().as_secs_f64(),
        held as f64 / (1 << 20) as f64
    );
    (d, held)
}

fn bench_batches<D>(
    group: &mut BenchmarkGroup<'_, criterion::measurement::WallTime>,
    id: &str,
    fleet: &mut Fleet,
    d: &mut D,
    mut feed: impl FnMut(&mut D, &[Event]),
) {
    group.bench_function(id, |b| {
        b.iter_custom(|iters| {
            let mut total = StdDuration::ZERO;
            for _ in 0..iters {
                let events = fleet.next(BATCH);
                let start = Instant::now();
                feed(d, &events);
                total += start.elapsed();
            }
            total
        })
    });
}

fn feed_detector(d: &mut Box<dyn Detector>, events: &[Event]) {
    let mut out: Vec<FindingDraft> = Vec::new();
    for e in events {
        d.observe(e, &mut out);
    }
    if let Some(e) = events.last() {
        d.advance(e.time, &mut out);
    }
    black_box(out.len());
}

fn gauge(d: &dyn Detector, name: &str) -> u64 {
    let mut g = Vec::new();
    d.gauges(&mut g);
    g.into_iter()
        .find(|(k, _)| k.name() == name)
        .map_or(0, |(_, v)| v)
}

/// Exact sliding windows: every event of the window kept per key.
#[derive(Default)]
struct ExactWindows {
    keys: HashMap<String, ExactKey>,
}

#[derive(Default)]
struct ExactKey {
    events: VecDeque<(i64, u64, bool)>,
    calls: u64,
    bytes: u64,
    values: VecDeque<(i64, String)>,
    distinct: HashMap<String, u32>,
}

const WINDOW_NS: i64 = 60_000_000_000;

impl ExactWindows {
    fn observe(&mut self, e: &Event) -> usize {
        let (server, tool, bytes, call, path) = match &e.body {
            EventBody::ToolCall {
                server,
                tool,
                arguments,
                ..
            } => {
                let path = arguments
                    .get("path")
                    .and_then(Value::as_str)
                    .map(str::to_string);
                (
                    server,
                    tool,
                    serde_json::to_string(arguments).map_or(0, |s| s.len()) as u64,
                    true,
                    path,
                )
            }
            EventBody::ToolResult {
                server,
                tool,
                result,
                ..
            } => (
                server,
                tool,
                result.texts().map(str::len).sum::<usize>() as u64,
                false,
                None,
            ),
            _ => return 0,
        };
        let t = e.time.unix_nanos();
        let keys = [
            format!("a/{}", e.agent_id),
            format!("s/{}/{}", e.agent_id, e.session_id),
            format!("v/{server}"),
            format!("t/{server}/{tool}"),
        ];
        let mut over = 0;
        for (i, k) in keys.into_iter().enumerate() {
            let w = self.keys.entry(k).or_default();
            w.events.push_back((t, bytes, call));
            w.calls += u64::from(call);
            w.bytes += bytes;
            while let Some(&(old, b, c)) = w.events.front() {
                if old > t - WINDOW_NS {
                    break;
                }
                w.events.pop_front();
                w.calls -= u64::from(c);
                w.bytes -= b;
            }
            if i == 1 {
                if let Some(p) = &path {
                    w.values.push_back((t, p.clone()));
                    *w.distinct.entry(p.clone()).or_default() += 1;
                }
                while let Some((old, _)) = w.values.front() {
                    if *old > t - WINDOW_NS {
                        break;
                    }
                    if let Some((_, v)) = w.values.pop_front()
                        && let Some(n) = w.distinct.get_mut(&v)
                    {
                        *n -= 1;
                        if *n == 0 {
                            w.distinct.remove(&v);
                        }
                    }
                }
                over += usize::from(w.distinct.len() > 50);
            }
            over += usize::from(w.calls > 300) + usize::from(w.bytes > 50 << 20);
        }
        over
    }
}

fn volume(c: &mut Criterion) {
    let runs = runs(sample_events());
    let config = Config::default();
    let mut fleet = Fleet::new(runs.clone());
    let (mut ours, held) = fill(
        "volume",
        &mut fleet,
        || -> Box<dyn Detector> {
            let s: VolumeSettings =
                serde_json::from_value(example_table("volume")).expect("settings");
            let _ = &config;
            Box::new(VolumeDetector::new(s).expect("detector"))
        },
        feed_detector,
    );
    let keys = gauge(ours.as_ref(), "toolgate_volume_keys");
    eprintln!(
        "volume: {keys} keys; {:.0} bytes held per key",
        held as f64 / keys.max(1) as f64
    );
    let mut fleet_b = Fleet::new(runs);
    let (mut exact, held) = fill(
        "exact deque baseline",
        &mut fleet_b,
        ExactWindows::default,
        |w, events| {
            let mut over = 0;
            for e in events {
                over += w.observe(e);
            }
            black_box(over);
        },
    );
    eprintln!(
        "exact deque baseline: {} keys; {:.0} bytes held per key",
        exact.keys.len(),
        held as f64 / exact.keys.len().max(1) as f64
    );
    let mut group = c.benchmark_group("volume");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.sample_size(20);
    bench_batches(&mut group, "toolgate", &mut fleet, &mut ours, feed_detector);
    bench_batches(
        &mut group,
        "exact_deque_baseline",
        &mut fleet_b,
        &mut exact,
        |w, events| {
            let mut over = 0;
            for e in events {
                over += w.observe(e);
            }
            black_box(over);
        },
    );
    group.finish();
}

fn sequence_settings(learned: bool) -> SequenceSettings {
    let mut table = example_table("sequence");
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy");
    let mut config = Config::default();
    config.detectors.insert("sequence".into(), table.clone());
    toolgate_engine::detector_files::resolve(&mut config, &root).expect("rule files");
    table = config.detectors.remove("sequence").unwrap_or_default();
    if let Value::Object(t) = &mut table {
        t.insert(
            "learned".into(),
            json!({"enabled": learned, "warmup_calls": 500}),
        );
    }
    serde_json::from_value(table).expect("sequence settings")
}

fn sequence(c: &mut Criterion) {
    let runs = runs(sample_events());
    let config = Config::default();
    let mut group_fleets = Vec::new();
    let mut detectors = Vec::new();
    for (name, learned) in [("rules", false), ("rules_and_learned", true)] {
        let mut fleet = Fleet::new(runs.clone());
        let (d, held) = fill(
            &format!("sequence {name}"),
            &mut fleet,
            || -> Box<dyn Detector> {
                Box::new(
                    SequenceDetector::new(&config, sequence_settings(learned)).expect("detector"),
                )
            },
            feed_detector,
        );
        let groups = gauge(d.as_ref(), "toolgate_sequence_groups");
        let sessions = gauge(d.as_ref(), "toolgate_sequence_live_sessions");
        eprintln!(
            "sequence {name}: {groups} rule groups, {sessions} live sessions; {:.0} bytes held per group+session",
            held as f64 / (groups + sessions).max(1) as f64
        );
        group_fleets.push((name, fleet));
        detectors.push(d);
    }
    let mut group = c.benchmark_group("sequence");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.sample_size(20);
    for ((name, fleet), d) in group_fleets.iter_mut().zip(detectors.iter_mut()) {
        bench_batches(&mut group, name, fleet, d, feed_detector);
    }
    group.finish();
}

criterion_group!(benches, volume, sequence);
criterion_main!(benches);
