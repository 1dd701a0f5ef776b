//! Decoding `toolgate.event.v1` lines against the floor it is built on: the decoder
//! parses each line into a `serde_json::Value` first and then validates every field,
//! so plain parsing is the baseline in the same run.
//!
//! `cargo bench --bench decode`

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use toolgate_protocol::Event;

fn sample_lines() -> Vec<Vec<u8>> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/agentdojo-sample.jsonl"
    );
    let text = std::fs::read_to_string(path).expect("examples/agentdojo-sample.jsonl");
    text.lines().map(|l| l.as_bytes().to_vec()).collect()
}

fn decode(c: &mut Criterion) {
    let lines = sample_lines();
    let bytes: usize = lines.iter().map(Vec::len).sum();
    let mut group = c.benchmark_group("decode_agentdojo_sample");
    group.throughput(Throughput::Bytes(bytes as u64));
    group.bench_function("serde_json_value_parse_baseline", |b| {
        b.iter(|| {
            for l in &lines {
                black_box(serde_json::from_slice::<serde_json::Value>(black_box(l)).is_ok());
            }
        })
    });
    group.bench_function("toolgate_event_decode", |b| {
        b.iter(|| {
            for l in &lines {
                black_box(Event::decode(black_box(l)).is_ok());
            }
        })
    });
    group.finish();
}

criterion_group!(benches, decode);
criterion_main!(benches);
