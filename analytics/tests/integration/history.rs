//! The history writer and SQL session together: partitions, rolling, compaction,
//! redaction, views, read-only refusal.

use std::path::Path;

use datafusion::arrow::array::{Array, Int64Array, StringArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::record_batch::RecordBatch;
use serde_json::{Value, json};
use toolgate_analytics::history::HistoryWriter;
use toolgate_analytics::sql::{self, SqlError};
use toolgate_detectors::secrets::Redactor;
use toolgate_protocol::config::{HistoryConfig, RedactionConfig};
use toolgate_protocol::{Event, Finding, Timestamp};

const T0: i64 = 1_764_000_000; // 2025-11-24T16:00:00Z

fn event(v: Value) -> Event {
    Event::decode(v.to_string().as_bytes()).expect("test event decodes")
}

fn at(secs: i64) -> String {
    Timestamp::from_unix_nanos(secs * 1_000_000_000).to_string()
}

fn call(i: i64, secs: i64, agent: &str, tool: &str, args: Value) -> Event {
    event(json!({
        "schema": "toolgate.event.v1", "kind": "tool_call", "event_id": format!("c{i}"),
        "time": at(secs), "agent_id": agent, "session_id": format!("{agent}-s"),
        "agent_role": "support", "server": "crm", "trust_domain": "internal",
        "call_id": format!("k{i}"), "tool": tool, "arguments": args,
        "labels": { "suite": "test" }
    }))
}

fn result(i: i64, secs: i64, agent: &str, text: &str) -> Event {
    event(json!({
        "schema": "toolgate.event.v1", "kind": "tool_result", "event_id": format!("r{i}"),
        "time": at(secs), "agent_id": agent, "session_id": format!("{agent}-s"),
        "server": "crm", "call_id": format!("k{i}"), "tool": "lookup",
        "result": { "content": [{ "type": "text", "text": text }], "isError": false }
    }))
}

fn finding(id: &str, secs: i64, agent: &str) -> Finding {
    serde_json::from_value(json!({
        "schema": "toolgate.finding.v1", "finding_id": id, "time": at(secs),
        "first_seen": at(secs), "last_seen": at(secs), "count": 2,
        "detector": "provenance", "rule_id": "cross_domain_flow",
        "title": "t", "description": "d", "severity": "high", "risk_score": 80,
        "confidence": 0.9, "agent_id": agent, "session_id": format!("{agent}-s"),
        "server": "mail", "tool": "send", "call_id": "k1", "event_ids": ["c1"],
        "evidence": { "flow": { "from": "internal", "to": "external" },
                      "sources": [{ "server": "crm", "tool": "lookup" }],
                      "argument": "body", "user_directed": false },
        "tags": ["owasp-llm:LLM02"], "action": "block"
    }))
    .expect("test finding decodes")
}

fn config(dir: &Path) -> HistoryConfig {
    HistoryConfig {
        location: dir.display().to_string(),
        ..HistoryConfig::default()
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Runtime::new().expect("runtime")
}

fn query(dir: &Path, q: &str) -> Vec<RecordBatch> {
    rt().block_on(async {
        let ctx = sql::open(&config(dir)).await.expect("open");
        sql::query(&ctx, q).await.expect(q).1
    })
}

/// Column `col` of every batch, read as `A` and mapped by `value`.
fn column<A: Array + 'static, V>(
    batches: &[RecordBatch],
    col: usize,
    value: impl Fn(&A, usize) -> V,
) -> Vec<V> {
    batches
        .iter()
        .flat_map(|b| {
            let a = b
                .column(col)
                .as_any()
                .downcast_ref::<A>()
                .expect("column type");
            (0..a.len()).map(|i| value(a, i)).collect::<Vec<_>>()
        })
        .collect()
}

/// A string column of any string type (tables read as views, partitions as `Utf8`).
fn strings(batches: &[RecordBatch], col: usize) -> Vec<String> {
    let batches: Vec<RecordBatch> = batches
        .iter()
        .map(|b| {
            let a = cast(b.column(col), &DataType::Utf8).expect("a string column");
            RecordBatch::try_from_iter([("s", a)]).expect("batch")
        })
        .collect();
    column(&batches, 0, |a: &StringArray, i| a.value(i).to_string())
}

fn ints(batches: &[RecordBatch], col: usize) -> Vec<i64> {
    column(batches, col, |a: &Int64Array, i| a.value(i))
}

fn parquet_files(dir: &Path) -> Vec<String> {
    fn walk(d: &Path, root: &Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, root, out);
            } else if p.extension().is_some_and(|x| x == "parquet") {
                out.push(p.strip_prefix(root).unwrap_or(&p).display().to_string());
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

#[test]
fn events_land_in_hive_partitions_by_event_hour_and_read_back_with_sql() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut w = HistoryWriter::open(&config(dir.path()), None).expect("open");
    for i in 0..10 {
        // Two hours: 16:00 and 17:00 UTC.
        w.append_event(&call(i, T0 + i * 600, "a1", "lookup", json!({ "q": i })))
            .expect("append");
    }
    w.append_event(&result(1, T0 + 5, "a1", "hello"))
        .expect("append");
    w.append_finding(&finding("f1", T0 + 10, "a1"))
        .expect("append");
    // Nothing is visible before commit.
    assert!(
        parquet_files(dir.path())
            .iter()
            .all(|p| p.starts_with("_tmp"))
    );
    let stats = w.close_all().expect("commit");
    assert_eq!(stats.rows_published, 12);
    let files: Vec<String> = parquet_files(dir.path())
        .into_iter()
        .filter(|p| !p.starts_with("_tmp"))
        .collect();
    assert_eq!(files.len(), 4, "{files:?}");
    assert!(
        files
            .iter()
            .any(|f| f.starts_with("tool_calls/date=2025-11-24/hour=16/part-"))
    );
    assert!(
        files
            .iter()
            .any(|f| f.starts_with("tool_calls/date=2025-11-24/hour=17/part-"))
    );
    assert!(
        files
            .iter()
            .any(|f| f.starts_with("findings/date=2025-11-24/hour=16/"))
    );

    let b = query(
        dir.path(),
        "SELECT hour, count(*) AS n FROM tool_calls GROUP BY hour ORDER BY hour",
    );
    assert_eq!(strings(&b, 0), ["16", "17"]);
    assert_eq!(ints(&b, 1), [6, 4]);
    let b = query(
        dir.path(),
        "SELECT json_get_str(labels, 'suite'), arguments, arguments_bytes FROM tool_calls WHERE event_id = 'c3'",
    );
    assert_eq!(strings(&b, 0), ["test"]);
    assert_eq!(strings(&b, 1), [r#"{"q":3}"#]);
    let b = query(
        dir.path(),
        "SELECT json_get_str(result, 'content', 0, 'text') FROM tool_results",
    );
    assert_eq!(strings(&b, 0), ["hello"]);
    let b = query(
        dir.path(),
        "SELECT source_server, sink_server, from_domain, to_domain FROM flows",
    );
    assert_eq!(
        [
            strings(&b, 0),
            strings(&b, 1),
            strings(&b, 2),
            strings(&b, 3)
        ]
        .concat(),
        ["crm", "mail", "internal", "external"]
    );
    let b = query(dir.path(), "SELECT agent_id, calls, findings FROM sessions");
    assert_eq!(strings(&b, 0), ["a1"]);
    assert_eq!(ints(&b, 1), [10]);
    assert_eq!(ints(&b, 2), [1]);
    // Empty tables exist and answer.
    let b = query(dir.path(), "SELECT count(*) FROM decisions");
    assert_eq!(ints(&b, 0), [0]);
}

/// `event` with `sink_action` set to `action` by `rule`.
fn sink_said(event: Event, action: &str, rule: &str) -> Event {
    let mut v: Value = serde_json::from_str(&event.to_json()).expect("json");
    v["sink_action"] = json!({ "action": action, "rule": rule });
    Event::decode(v.to_string().as_bytes()).expect("test event decodes")
}

/// Issue 22: a held call refused by the engine's verdict stayed `held` in the history,
/// and `sessions.blocked_calls` missed it. The sink reports the settlement on the
/// call's result; the views count it, and `call_outcomes` gives every call's final
/// action.
#[test]
fn issue_22_refused_held_calls_count_as_blocked_and_every_call_has_its_final_action() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut w = HistoryWriter::open(&config(dir.path()), None).expect("open");
    let events = [
        call(1, T0, "a1", "lookup", json!({})),
        sink_said(call(2, T0 + 1, "a1", "exec", json!({})), "blocked", "deny"),
        sink_said(
            call(3, T0 + 2, "a1", "send", json!({})),
            "held",
            "hold.egress",
        ),
        sink_said(
            result(3, T0 + 3, "a1", "refused"),
            "blocked",
            "decision.verdict-c3",
        ),
        sink_said(
            call(4, T0 + 4, "a1", "send", json!({})),
            "held",
            "hold.egress",
        ),
        sink_said(
            result(4, T0 + 5, "a1", "sent"),
            "allowed",
            "decision.verdict-c4",
        ),
    ];
    for e in &events {
        w.append_event(e).expect("append");
    }
    w.close_all().expect("commit");
    let b = query(dir.path(), "SELECT calls, blocked_calls FROM sessions");
    assert_eq!((ints(&b, 0), ints(&b, 1)), (vec![4], vec![2]));
    let b = query(dir.path(), "SELECT blocked_calls FROM agents");
    assert_eq!(ints(&b, 0), [2]);
    let b = query(
        dir.path(),
        "SELECT call_id, coalesce(sink_action_at_call, '-'), coalesce(sink_action, '-'),
                coalesce(sink_rule, '-')
         FROM call_outcomes ORDER BY call_id",
    );
    assert_eq!(strings(&b, 0), ["k1", "k2", "k3", "k4"]);
    assert_eq!(strings(&b, 1), ["-", "blocked", "held", "held"]);
    assert_eq!(strings(&b, 2), ["-", "blocked", "blocked", "allowed"]);
    assert_eq!(
        strings(&b, 3),
        ["-", "deny", "decision.verdict-c3", "decision.verdict-c4"]
    );
}

#[test]
fn files_roll_by_size_and_each_row_group_is_sorted_by_agent() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = HistoryConfig {
        row_group_rows: 100,
        max_file_bytes: 10_000,
        ..config(dir.path())
    };
    let mut w = HistoryWriter::open(&cfg, None).expect("open");
    for i in 0..2_000 {
        let agent = format!("agent-{}", i % 13);
        w.append_event(&call(
            i,
            T0 + i,
            &agent,
            "lookup",
            json!({ "pad": "p".repeat(100) }),
        ))
        .expect("append");
    }
    let stats = w.close_all().expect("commit");
    let sizes: Vec<u64> = parquet_files(dir.path())
        .iter()
        .map(|f| std::fs::metadata(dir.path().join(f)).map_or(0, |m| m.len()))
        .collect();
    assert!(stats.files_published > 3, "{stats:?} {sizes:?}");
    let b = query(
        dir.path(),
        "SELECT count(*), count(DISTINCT event_id) FROM tool_calls",
    );
    assert_eq!(ints(&b, 0), [2_000]);
    assert_eq!(ints(&b, 1), [2_000]);
}

/// Issue 22 added `findings.outcome`: a partition holding files written before it is
/// still compacted (the old files' rows get a null outcome), not a panic.
#[test]
fn issue_22_compaction_takes_findings_files_written_before_the_outcome_column() {
    use datafusion::parquet::arrow::ArrowWriter;
    use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = HistoryConfig {
        compact_min_files: 2,
        ..config(dir.path())
    };
    let mut w = HistoryWriter::open(&cfg, None).expect("open");
    for i in 0..3 {
        w.append_finding(&finding(&format!("f{i}"), T0 + i, "a1"))
            .expect("append");
        w.commit().expect("commit");
    }
    // One file as the version before wrote it: no `outcome` column.
    let old = dir
        .path()
        .join("findings")
        .join(&parquet_files(&dir.path().join("findings"))[0]);
    let file = std::fs::File::open(&old).expect("open");
    let mut batch = ParquetRecordBatchReaderBuilder::try_new(file)
        .and_then(|b| b.build())
        .expect("reader")
        .next()
        .expect("a batch")
        .expect("batch");
    let outcome = batch
        .schema()
        .index_of("outcome")
        .expect("new files have it");
    batch.remove_column(outcome);
    let mut out = ArrowWriter::try_new(
        std::fs::File::create(&old).expect("rewrite"),
        batch.schema(),
        None,
    )
    .expect("writer");
    out.write(&batch).expect("write");
    out.close().expect("close");

    let stats = w.compact(std::time::Duration::ZERO).expect("compact");
    assert_eq!((stats.files_in, stats.files_out, stats.rows), (3, 1, 3));
    let b = query(dir.path(), "SELECT count(*), count(outcome) FROM findings");
    assert_eq!((ints(&b, 0), ints(&b, 1)), (vec![3], vec![0]));
}

#[test]
fn compaction_merges_small_files_without_changing_any_row() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = HistoryConfig {
        compact_min_files: 3,
        ..config(dir.path())
    };
    let mut w = HistoryWriter::open(&cfg, None).expect("open");
    for round in 0..5 {
        for i in 0..50 {
            let n = round * 50 + i;
            w.append_event(&call(
                n,
                T0 + n,
                &format!("a{}", n % 3),
                "lookup",
                json!({ "n": n }),
            ))
            .expect("append");
        }
        w.commit().expect("commit");
    }
    let before = query(
        dir.path(),
        "SELECT event_id, agent_id, arguments FROM tool_calls ORDER BY event_id",
    );
    assert_eq!(parquet_files(&dir.path().join("tool_calls")).len(), 5);
    let stats = w.compact(std::time::Duration::ZERO).expect("compact");
    assert_eq!(
        (
            stats.partitions,
            stats.files_in,
            stats.files_out,
            stats.rows
        ),
        (1, 5, 1, 250)
    );
    let files = parquet_files(&dir.path().join("tool_calls"));
    assert_eq!(files.len(), 1, "{files:?}");
    assert!(files[0].ends_with("-compacted.parquet"));
    let after = query(
        dir.path(),
        "SELECT event_id, agent_id, arguments FROM tool_calls ORDER BY event_id",
    );
    for c in 0..3 {
        assert_eq!(strings(&before, c), strings(&after, c));
    }
    // Nothing left behind in staging but the writer's own directory.
    let staging: Vec<String> = std::fs::read_dir(dir.path().join("_tmp"))
        .expect("staging")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("compact-"))
        .collect();
    assert!(staging.is_empty(), "{staging:?}");
    // A second pass has nothing to do.
    let again = w.compact(std::time::Duration::ZERO).expect("compact");
    assert_eq!(again.partitions, 0);
}

#[test]
fn a_compaction_killed_after_the_swap_is_finished_by_the_next_one() {
    // Simulates the state a killed compaction leaves: the partition already swapped,
    // the old directory (with a file a writer published mid-swap) still in staging.
    let dir = tempfile::tempdir().expect("tempdir");
    let mut w = HistoryWriter::open(&config(dir.path()), None).expect("open");
    w.append_event(&call(1, T0, "a", "lookup", json!({})))
        .expect("append");
    w.commit().expect("commit");
    let part = "tool_calls/date=2025-11-24/hour=16";
    let published = parquet_files(&dir.path().join(part));
    let work = dir.path().join("_tmp/compact-dead/new");
    std::fs::create_dir_all(&work).expect("mkdir");
    let stray = work.join("part-late-000001.parquet");
    std::fs::copy(dir.path().join(part).join(&published[0]), &stray).expect("copy");
    std::fs::write(work.join("old-input.parquet"), b"merged already").expect("write");
    std::fs::write(
        dir.path().join("_tmp/compact-dead/journal.json"),
        json!({ "partition": part, "inputs": ["old-input.parquet"], "output": published[0] })
            .to_string(),
    )
    .expect("journal");
    let stats = w
        .compact(std::time::Duration::from_secs(3600))
        .expect("compact");
    assert_eq!(stats.recovered, 1);
    assert!(
        dir.path()
            .join(part)
            .join("part-late-000001.parquet")
            .exists(),
        "the stray is restored"
    );
    assert!(!dir.path().join(part).join("old-input.parquet").exists());
    assert!(!dir.path().join("_tmp/compact-dead").exists());
}

#[test]
fn only_one_compaction_runs_at_a_time() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("_tmp")).expect("mkdir");
    let lock = std::fs::File::create(dir.path().join("_tmp/compact.lock")).expect("lock file");
    lock.lock().expect("lock");
    let mut w = HistoryWriter::open(&config(dir.path()), None).expect("open");
    let err = w.compact(std::time::Duration::ZERO).expect_err("locked");
    assert!(
        err.to_string()
            .contains("locked by another toolgate process (compaction)"),
        "{err}"
    );
}

#[test]
fn secrets_are_redacted_before_they_are_written() {
    let dir = tempfile::tempdir().expect("tempdir");
    let redactor = Redactor::new(&RedactionConfig::default()).expect("redactor");
    let mut w = HistoryWriter::open(&config(dir.path()), Some(redactor)).expect("open");
    let key = "AKIAIOSFODNN7EXAMPLE";
    w.append_event(&call(1, T0, "a", "lookup", json!({ "aws": key })))
        .expect("append");
    w.append_event(&result(1, T0, "a", &format!("key is {key}")))
        .expect("append");
    let stats = w.close_all().expect("commit");
    assert_eq!(stats.values_redacted, 2);
    for f in parquet_files(dir.path()) {
        let bytes = std::fs::read(dir.path().join(&f)).expect("read");
        assert!(
            !bytes.windows(key.len()).any(|w| w == key.as_bytes()),
            "{f} holds the key"
        );
    }
    let b = query(dir.path(), "SELECT arguments FROM tool_calls");
    assert!(!strings(&b, 0)[0].contains(key));
}

#[test]
fn writes_are_refused_and_the_message_says_why() {
    let dir = tempfile::tempdir().expect("tempdir");
    HistoryWriter::open(&config(dir.path()), None)
        .and_then(HistoryWriter::close_all)
        .expect("empty history");
    let err = rt().block_on(async {
        let ctx = sql::open(&config(dir.path())).await.expect("open");
        sql::query(&ctx, "INSERT INTO findings SELECT * FROM findings")
            .await
            .expect_err("refused")
    });
    assert!(matches!(err, SqlError::ReadOnly(_)), "{err:?}");
    assert!(err.to_string().contains("read-only"));
}

#[test]
fn a_missing_history_is_a_clear_error() {
    let opened = rt().block_on(sql::open(&config(Path::new(
        "/nonexistent/toolgate-history",
    ))));
    let Err(err) = opened else {
        panic!("a missing history opened");
    };
    let msg = err.to_string();
    assert!(
        msg.contains("no history at /nonexistent/toolgate-history"),
        "{msg}"
    );
}
