//! Provenance: MinHash sketching against the `gaoya` crate in the same run, and the
//! detector's throughput with its index holding one hour of a 1,000-agent fleet.
//!
//! - `sketch/*`: 64-value sketches of the same normal-form text (every tool result of
//!   `examples/agentdojo-sample.jsonl`, ~37 KB), throughput in shingles (8-byte
//!   windows). gaoya is measured in its default build and configuration
//!   (`MinHasher32::new(64)`: FNV per shingle, then 64 multiply-add-mod permutations);
//!   ours is one hash per shingle with one-permutation hashing and densification.
//!   Python `datasketch` is measured by `benches/harness/sketch_compare.py`, which runs
//!   this group beside it on the same bytes (written to
//!   `target/provenance-sketch-input.txt`).
//! - `detector/*`: `observe` over AgentDojo events re-stamped as a fleet of 1,000 agents
//!   that each make one call every 15 s (240 events per agent-hour; one hour is 240,000
//!   events), after one hour of the same traffic has been indexed. The events come from
//!   the shared AgentDojo archive when it is beside the repository (the first 40,000
//!   runs' worth of events are cycled), else from the sample file.
//!   Memory per indexed KB is printed: heap bytes held by the detector after the fill,
//!   by a counting allocator, over the kilobytes of normal form it indexed.
//!
//! `cargo bench --bench provenance`

use std::hint::black_box;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration as StdDuration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use gaoya::minhash::{MinHasher, MinHasher32};
use toolgate_detectors::provenance::{ProvenanceDetector, ProvenanceSettings, sketch, text};
use toolgate_detectors::{Detector, FindingDraft};
use toolgate_protocol::config::Config;
use toolgate_protocol::{EventBody, Timestamp};

mod common;

use common::{EVENTS_PER_HOUR, Fleet, HELD, runs, sample_events};

#[global_allocator]
static ALLOC: common::Counting = common::Counting;

fn sketching(c: &mut Criterion) {
    let mut normal = Vec::new();
    for e in sample_events().iter().take(2000) {
        if let EventBody::ToolResult { result, .. } = &e.body {
            for t in result.texts() {
                text::normalize_into(t, &mut normal);
            }
        }
        if normal.len() > 37_000 {
            break;
        }
    }
    // The Python reference (benches/harness/sketch_compare.py) sketches the same bytes.
    let dump = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/provenance-sketch-input.txt");
    let _ = std::fs::write(&dump, &normal);
    let shingles = (normal.len() - sketch::SHINGLE + 1) as u64;
    let gaoya = MinHasher32::new(sketch::K);
    let mut group = c.benchmark_group("sketch");
    group.throughput(Throughput::Elements(shingles));
    group.bench_function("gaoya_minhasher32_default", |b| {
        b.iter(|| black_box(gaoya.create_signature(black_box(&normal).windows(sketch::SHINGLE))))
    });
    group.bench_function("toolgate_one_permutation", |b| {
        b.iter(|| black_box(sketch::sketch(black_box(&normal))))
    });
    group.finish();
}

fn detector(c: &mut Criterion) {
    let config = Config::default();
    let settings: ProvenanceSettings =
        serde_json::from_str(r#"{"horizon": "1h"}"#).expect("settings");
    let mut detector = ProvenanceDetector::new(&config, settings).expect("detector");
    let mut fleet = Fleet::new(runs(sample_events()));
    let mut out: Vec<FindingDraft> = Vec::new();

    let before = HELD.load(Ordering::Relaxed);
    let fill_start = Instant::now();
    let mut last = Timestamp::EPOCH;
    for _ in 0..(EVENTS_PER_HOUR / 10_000) {
        for e in fleet.next(10_000) {
            detector.observe(&e, &mut out);
            last = e.time;
        }
        detector.advance(last, &mut out);
        out.clear();
    }
    let fill = fill_start.elapsed();
    let held = HELD.load(Ordering::Relaxed) - before;
    let stats = detector.stats();
    eprintln!(
        "provenance fill: {EVENTS_PER_HOUR} events in {:.2} s ({:.0} events/s); index: {} agents, {} entries, {} chunks, {} atoms, {:.1} MiB normal form; heap held {:.1} MiB = {:.2} KiB per indexed KiB",
        fill.as_secs_f64(),
        EVENTS_PER_HOUR as f64 / fill.as_secs_f64(),
        stats.agents,
        stats.entries,
        stats.chunks,
        stats.atoms,
        stats.bytes as f64 / (1 << 20) as f64,
        held as f64 / (1 << 20) as f64,
        held as f64 / stats.bytes.max(1) as f64,
    );

    const BATCH: usize = 10_000;
    let mut group = c.benchmark_group("detector");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.sample_size(20);
    group.bench_function("observe_fleet_hour_indexed", |b| {
        b.iter_custom(|iters| {
            let mut total = StdDuration::ZERO;
            for _ in 0..iters {
                let events = fleet.next(BATCH);
                let start = Instant::now();
                for e in &events {
                    detector.observe(e, &mut out);
                }
                if let Some(e) = events.last() {
                    detector.advance(e.time, &mut out);
                }
                total += start.elapsed();
                black_box(out.len());
                out.clear();
            }
            total
        })
    });
    group.finish();
}

criterion_group!(benches, sketching, detector);
criterion_main!(benches);
