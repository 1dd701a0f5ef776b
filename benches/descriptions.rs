//! Poisoning analysis per tool definition, over real definitions: InjecAgent's 330
//! clean tool specifications and MCP-SafetyBench's 96 poisoned descriptions (from
//! `../shared/datasets`). Criterion reports time per whole set; divide by its size for
//! time per definition (printed once at start).
//!
//! The `result_scan` group compares, in bytes per second, the learned classifier's
//! scan of every window of a text with the signal table's scan, over AgentDojo's real
//! tool results (issue 21's target: the classifier at 20 MB/s or more per core).
//!
//! `cargo bench --bench descriptions`

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use std::path::Path;
use toolgate_detectors::injection::analysis::{Context, analyze_text, analyze_tool};
use toolgate_detectors::injection::classifier::Model;
use toolgate_ingest::corpora::{Importer, import_injecagent, import_safetybench};
use toolgate_protocol::{EventBody, ToolDefinition};

fn definitions(importer: Importer, dir: &str) -> Vec<ToolDefinition> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/datasets")
        .join(dir);
    let mut out = Vec::new();
    importer(&root, &mut |e| {
        if let EventBody::ToolList { tools, .. } = &e.body {
            out.extend(tools.iter().cloned());
        }
        Ok(())
    })
    .unwrap_or_else(|e| panic!("{}: {e}", root.display()));
    out
}

fn descriptions(c: &mut Criterion) {
    let mut group = c.benchmark_group("description_analysis");
    for (name, set) in [
        (
            "injecagent_clean_330",
            definitions(import_injecagent, "injecagent"),
        ),
        (
            "safetybench_poisoned_96",
            definitions(import_safetybench, "mcp-safetybench"),
        ),
    ] {
        group.throughput(Throughput::Elements(set.len() as u64));
        group.bench_function(name, |b| {
            b.iter(|| {
                for t in &set {
                    black_box(analyze_tool(
                        &t.name,
                        t.title.as_deref(),
                        t.description.as_deref(),
                        t.input_schema.as_ref(),
                    ));
                }
            })
        });
    }
    group.finish();
}

fn result_scan(c: &mut Criterion) {
    let archive = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/datasets/agentdojo/runs-workspace-travel-banking.tar.gz");
    let texts: Vec<String> = toolgate_ingest::texts::agentdojo_texts(&archive)
        .unwrap_or_else(|e| panic!("{}: {e}", archive.display()))
        .into_iter()
        .map(|t| t.text)
        .collect();
    let bytes: usize = texts.iter().map(String::len).sum();
    eprintln!(
        "result_scan: {} AgentDojo results, {bytes} bytes",
        texts.len()
    );
    let model = Model::shipped().unwrap_or_else(|e| panic!("{e}"));
    let mut group = c.benchmark_group("result_scan");
    group.throughput(Throughput::Bytes(bytes as u64));
    group.sample_size(10);
    group.bench_function("classifier_windows", |b| {
        b.iter(|| {
            for t in &texts {
                black_box(model.score(t, Context::Result));
            }
        })
    });
    group.bench_function("signal_table", |b| {
        b.iter(|| {
            for t in &texts {
                black_box(analyze_text(t, Context::Result));
            }
        })
    });
    group.finish();
}

criterion_group!(benches, descriptions, result_scan);
criterion_main!(benches);
