//! Crash safety: a writer killed with SIGKILL in the middle of a file leaves a history
//! that every reader can open, holding every row it acknowledged (returned from
//! `commit`), each once; the next writer clears what the dead one left half-written.
//!
//! The writer is this test binary itself, started again with `WRITER_DIR` set so that
//! only `crash_child_writer` runs and writes.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use datafusion::arrow::array::{Array, StringViewArray};
use serde_json::json;
use toolgate_analytics::history::HistoryWriter;
use toolgate_analytics::sql;
use toolgate_protocol::Event;
use toolgate_protocol::config::HistoryConfig;

fn call(i: u64) -> Event {
    let t = 1_764_000_000 + i / 50;
    let line = json!({
        "schema": "toolgate.event.v1", "kind": "tool_call", "event_id": format!("ev-{i:08}"),
        "time": toolgate_protocol::Timestamp::from_unix_nanos(t as i64 * 1_000_000_000).to_string(),
        "agent_id": format!("agent-{}", i % 7), "session_id": format!("s-{}", i / 500),
        "server": "files", "call_id": format!("c-{i}"), "tool": "read_file",
        "arguments": { "path": format!("/data/{i}.txt"), "padding": "x".repeat(200) }
    });
    Event::decode(line.to_string().as_bytes()).expect("test event decodes")
}

fn config(dir: &Path) -> HistoryConfig {
    HistoryConfig {
        location: dir.display().to_string(),
        row_group_rows: 500,
        ..HistoryConfig::default()
    }
}

/// The child: appends events forever, committing every 2,000 and printing the count it
/// acknowledged after each commit returns.
#[test]
fn crash_child_writer() {
    let Some(dir) = std::env::var_os("WRITER_DIR") else {
        return;
    };
    let mut w = HistoryWriter::open(&config(Path::new(&dir)), None).expect("open");
    let mut i = 0u64;
    loop {
        w.append_event(&call(i)).expect("append");
        i += 1;
        if i.is_multiple_of(2_000) {
            w.commit().expect("commit");
            println!("acked {i}");
        }
    }
}

fn staged_bytes(dir: &Path) -> u64 {
    walk(&dir.join("_tmp"))
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
        .map(|p| std::fs::metadata(p).map_or(0, |m| m.len()))
        .sum()
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

#[test]
fn a_writer_killed_mid_file_loses_nothing_it_acknowledged() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut child = Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--exact",
            // The test binary runs every module; this one is named by its path.
            "crash::crash_child_writer",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("WRITER_DIR", dir.path())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the writer");
    let stdout = child.stdout.take().expect("stdout");
    let mut acked = 0u64;
    let mut lines = BufReader::new(stdout).lines();
    let deadline = Instant::now() + Duration::from_secs(120);
    // Wait for several acknowledged commits, then for the next file to be part-written.
    while acked < 6_000 {
        let line = lines.next().expect("writer output").expect("utf-8");
        if let Some(n) = line.strip_prefix("acked ") {
            acked = n.parse().expect("count");
        }
        assert!(Instant::now() < deadline, "writer too slow");
    }
    while staged_bytes(dir.path()) == 0 {
        assert!(Instant::now() < deadline, "no file in progress");
        std::thread::sleep(Duration::from_millis(1));
    }
    child.kill().expect("SIGKILL");
    child.wait().expect("reap");
    // The writer may have acknowledged more before the kill landed.
    for line in lines.map_while(Result::ok) {
        if let Some(n) = line.strip_prefix("acked ") {
            acked = n.parse().expect("count");
        }
    }
    assert!(
        staged_bytes(dir.path()) > 0,
        "the kill should leave a half-written file"
    );

    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let ids: Vec<String> = rt.block_on(async {
        let ctx = sql::open(&config(dir.path())).await.expect("history opens");
        let (_, batches) = sql::query(&ctx, "SELECT event_id FROM tool_calls")
            .await
            .expect("every published file reads");
        batches
            .iter()
            .flat_map(|b| {
                let col = b
                    .column(0)
                    .as_any()
                    .downcast_ref::<StringViewArray>()
                    .expect("the history reads strings as views");
                (0..col.len())
                    .map(|i| col.value(i).to_string())
                    .collect::<Vec<_>>()
            })
            .collect()
    });
    let distinct: BTreeSet<&String> = ids.iter().collect();
    assert_eq!(distinct.len(), ids.len(), "no row is published twice");
    for i in 0..acked {
        assert!(
            distinct.contains(&format!("ev-{i:08}")),
            "acknowledged ev-{i:08} is missing"
        );
    }

    // A new writer removes the dead one's in-progress files and carries on.
    let w = HistoryWriter::open(&config(dir.path()), None).expect("reopen");
    assert!(w.stats().stale_files_removed >= 1);
    drop(w);
    assert_eq!(staged_bytes(dir.path()), 0);
}
