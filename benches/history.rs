//! The Parquet history at scale, measured against DuckDB in the same run:
//!
//! 1. ingest: a fleet's events (AgentDojo runs replayed by 1,000 agents, one event
//!    every 15 s each) appended to `HistoryWriter` on one thread, redaction on,
//!    committed every 100,000 events; events/s per core, generation not counted;
//! 2. the same files queried by DataFusion (`toolgate_analytics::sql`) and by DuckDB
//!    (Python, `benches/harness/history_duckdb.py`) with the same thread count: a
//!    group-by over every call and one agent's calls in a six-hour window. DataFusion
//!    also runs without toolgate's view counting (`ViewCountExec`), to show what that
//!    adds. The engines take turns, ROUNDS rounds of REPEAT timed runs each (after a
//!    warm-up), so a slow spell of a shared machine falls on both; medians and bests
//!    are over every timed run.
//!
//! `cargo bench --bench history` (10 million events; `TOOLGATE_BENCH_EVENTS=N` for
//! fewer). The history is kept under target/bench-history and reused when it has the
//! same size; the DuckDB venv is target/bench-venv-history.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use common::{EVENTS_PER_HOUR, Fleet, runs, sample_events};
use datafusion::execution::SessionStateBuilder;
use datafusion::prelude::SessionContext;
use toolgate_analytics::history::HistoryWriter;
use toolgate_analytics::sql;
use toolgate_detectors::secrets::Redactor;
use toolgate_protocol::config::{HistoryConfig, RedactionConfig};

const REPEAT: usize = 5;
const ROUNDS: usize = 3;

fn main() {
    let n: usize = std::env::var("TOOLGATE_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000_000);
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let dir = root.join("target/bench-history");
    let marker = dir.join("events");
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    println!("history benchmark: {n} events, {threads} cores");

    if std::fs::read_to_string(&marker).ok().as_deref() != Some(n.to_string().as_str()) {
        let _ = std::fs::remove_dir_all(&dir);
        ingest(&dir, n);
        std::fs::write(&marker, n.to_string()).expect("marker");
    } else {
        println!("reusing {} (same size)", dir.display());
    }

    // One agent's calls over six hours in the middle of the history.
    let hours = (n / EVENTS_PER_HOUR).max(1) as i64;
    let start = 1_700_000_000 + (hours / 2) * 3600;
    let t = |s: i64| toolgate_protocol::Timestamp::from_unix_nanos(s * 1_000_000_000).to_string();
    let queries = [
        (
            "group_by_tool",
            "SELECT tool, count(*) AS calls FROM {tool_calls} GROUP BY tool ORDER BY calls DESC"
                .to_string(),
        ),
        (
            "agent_time_range",
            format!(
                "SELECT session_id, tool, count(*) AS calls, min(time) AS first, max(time) AS last \
                 FROM {{tool_calls}} WHERE agent_id = 'agent-0420' \
                 AND time >= '{}' AND time < '{}' \
                 GROUP BY session_id, tool ORDER BY first",
                t(start),
                t(start + 6 * 3600)
            ),
        ),
    ];
    let mut ours: BTreeMap<&str, (Vec<f64>, usize)> = BTreeMap::new();
    let mut plain: BTreeMap<&str, (Vec<f64>, usize)> = BTreeMap::new();
    let mut theirs: BTreeMap<&str, (Vec<f64>, usize)> = BTreeMap::new();
    for _ in 0..ROUNDS {
        for (view_count, into) in [(true, &mut ours), (false, &mut plain)] {
            for (name, (times, rows)) in datafusion_times(&dir, &queries, view_count) {
                let entry = into.entry(name).or_default();
                entry.0.extend(times);
                entry.1 = rows;
            }
        }
        let duck = duckdb_times(&root, &dir, threads, &queries);
        for (name, _) in &queries {
            let d = &duck[*name];
            let entry = theirs.entry(name).or_default();
            entry.0.extend(
                d["times_s"]
                    .as_array()
                    .expect("times")
                    .iter()
                    .filter_map(serde_json::Value::as_f64),
            );
            entry.1 = d["rows"].as_u64().map_or(usize::MAX, |r| r as usize);
        }
    }
    println!(
        "\n| query | DataFusion median | DataFusion best | without view counting, median | DuckDB median | DuckDB best | ratio (median) | rows |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    for (name, _) in &queries {
        let (dm, db, rows) = median_best(&ours[*name]);
        let (pm, _, plain_rows) = median_best(&plain[*name]);
        let (km, kb, their_rows) = median_best(&theirs[*name]);
        assert_eq!(rows, their_rows, "{name}: engines disagree on rows");
        assert_eq!(rows, plain_rows, "{name}: view counting changed the rows");
        println!(
            "| {name} | {dm:.3} s | {db:.3} s | {pm:.3} s | {km:.3} s | {kb:.3} s | {:.2}x | {rows} |",
            dm / km
        );
    }
}

/// Median and best of `times`, and the row count.
fn median_best((times, rows): &(Vec<f64>, usize)) -> (f64, f64, usize) {
    let mut sorted = times.clone();
    sorted.sort_by(f64::total_cmp);
    (sorted[sorted.len() / 2], sorted[0], *rows)
}

fn ingest(dir: &Path, n: usize) {
    let mut fleet = Fleet::new(runs(sample_events()));
    let config = HistoryConfig {
        location: dir.display().to_string(),
        ..HistoryConfig::default()
    };
    let redactor = Redactor::new(&RedactionConfig::default()).expect("redactor");
    let mut writer = HistoryWriter::open(&config, Some(redactor)).expect("open history");
    let mut written = 0usize;
    let mut busy = std::time::Duration::ZERO;
    let mut seq = 0u64;
    while written < n {
        let mut chunk = fleet.next(100_000.min(n - written));
        for e in &mut chunk {
            seq += 1;
            e.event_id = format!("ev-{seq:010}");
        }
        let started = Instant::now();
        for e in &chunk {
            writer.append_event(e).expect("append");
        }
        writer.commit().expect("commit");
        busy += started.elapsed();
        written += chunk.len();
    }
    let stats = writer.close_all().expect("close");
    println!(
        "ingest: {written} events in {:.1} s of writer time: {:.0} events/s on one core; {} files, {:.1} MiB",
        busy.as_secs_f64(),
        written as f64 / busy.as_secs_f64(),
        stats.files_published,
        stats.bytes_published as f64 / (1 << 20) as f64
    );
}

/// Each query's timed runs on DataFusion (with toolgate's view counting or without),
/// and its row count.
fn datafusion_times(
    dir: &Path,
    queries: &[(&'static str, String)],
    view_count: bool,
) -> BTreeMap<&'static str, (Vec<f64>, usize)> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let config = HistoryConfig {
            location: dir.display().to_string(),
            ..HistoryConfig::default()
        };
        let mut ctx = sql::open(&config).await.expect("open");
        if !view_count {
            let state = ctx.state();
            let rules = state
                .physical_optimizers()
                .iter()
                .filter(|r| r.name() != "view_count")
                .cloned()
                .collect();
            ctx = SessionContext::new_with_state(
                SessionStateBuilder::new_from_existing(state)
                    .with_physical_optimizer_rules(rules)
                    .build(),
            );
        }
        let mut out = BTreeMap::new();
        for (name, q) in queries {
            let q = q.replace("{tool_calls}", "tool_calls");
            let rows = |b: &[datafusion::arrow::record_batch::RecordBatch]| {
                b.iter().map(|b| b.num_rows()).sum::<usize>()
            };
            let (_, warm) = sql::query(&ctx, &q).await.expect("query");
            let mut times = Vec::new();
            for _ in 0..REPEAT {
                let started = Instant::now();
                let (_, b) = sql::query(&ctx, &q).await.expect("query");
                times.push(started.elapsed().as_secs_f64());
                assert_eq!(rows(&b), rows(&warm));
            }
            out.insert(*name, (times, rows(&warm)));
        }
        out
    })
}

fn duckdb_times(
    root: &Path,
    dir: &Path,
    threads: usize,
    queries: &[(&'static str, String)],
) -> serde_json::Map<String, serde_json::Value> {
    let venv = root.join("target/bench-venv-history");
    let python = venv.join("bin/python");
    if Command::new(&python)
        .args(["-c", "import duckdb"])
        .status()
        .map_or(true, |s| !s.success())
    {
        let ok = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status()
            .expect("python3");
        assert!(ok.success());
        let ok = Command::new(&python)
            .args(["-m", "pip", "install", "--quiet", "-r"])
            .arg(root.join("tests/requirements-history.txt"))
            .status()
            .expect("pip");
        assert!(ok.success(), "pip install failed");
    }
    let out = Command::new(&python)
        .arg(root.join("benches/harness/history_duckdb.py"))
        .arg(dir)
        .arg(threads.to_string())
        .arg(REPEAT.to_string())
        .args(queries.iter().map(|(n, q)| format!("{n}={q}")))
        .output()
        .expect("duckdb harness");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("duckdb json")
}
