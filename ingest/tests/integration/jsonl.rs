//! The JSONL source and dead-letter path on corrupt input: exact errors, every bad
//! line dead-lettered with its line number and bytes, correct counts.

use std::io::Write;

use serde_json::Value;
use toolgate_ingest::{DeadLetterWriter, JsonlSource, RejectCounts, SourceItem};

const GOOD: &str = r#"{"schema":"toolgate.event.v1","kind":"user_message","event_id":"e1","time":"2025-01-01T00:00:00Z","agent_id":"a","session_id":"s","text":"hello"}"#;

fn good(id: &str) -> String {
    GOOD.replace("\"e1\"", &format!("\"{id}\""))
}

/// Reads everything, dead-lettering rejects; returns (event ids, dead letters, counts).
fn drain(
    input: &str,
    max: usize,
    dlq: &std::path::Path,
) -> (Vec<String>, Vec<Value>, RejectCounts, u64) {
    let mut source = JsonlSource::open(input, max).unwrap();
    let mut writer = DeadLetterWriter::create(dlq).unwrap();
    let mut counts = RejectCounts::default();
    let mut ids = Vec::new();
    for item in source.by_ref() {
        match item.unwrap() {
            SourceItem::Event(e) => ids.push(e.event_id),
            SourceItem::Rejected(r) => {
                counts.add(&r.error);
                writer.write(&r).unwrap();
            }
        }
    }
    let written = writer.finish().unwrap();
    assert_eq!(written, counts.total);
    let letters = std::fs::read_to_string(dlq)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    (ids, letters, counts, source.blank_lines())
}

#[test]
fn corrupt_file_yields_exact_errors_dead_letters_and_counts() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("events.jsonl");
    let truncated = &GOOD[..GOOD.len() / 2];
    let wrong_type = good("e3").replace("\"session_id\":\"s\"", "\"session_id\":7");
    let unknown_schema = good("e4").replace("toolgate.event.v1", "toolgate.event.v9");
    let lines = [
        good("e1"),
        truncated.to_string(),
        String::new(),
        wrong_type,
        format!("{}\r", good("e2")),
        unknown_schema,
        "   ".to_string(),
        good("e5"),
    ];
    let mut text = lines.join("\n");
    text.push('\n');
    // A final line without a newline, cut mid-object, as a crashed writer leaves it.
    text.push_str(&GOOD[..40]);
    std::fs::write(&input, text).unwrap();

    let dlq = dir.path().join("dead.jsonl");
    let (ids, letters, counts, blanks) = drain(input.to_str().unwrap(), 1 << 20, &dlq);
    assert_eq!(ids, ["e1", "e2", "e5"]);
    assert_eq!(blanks, 2);
    assert_eq!(counts.total, 4);
    assert_eq!(counts.by_kind["invalid_json"], 2);
    assert_eq!(counts.by_kind["wrong_type"], 1);
    assert_eq!(counts.by_kind["unknown_schema"], 1);

    let lines_of: Vec<u64> = letters
        .iter()
        .map(|l| l["line"].as_u64().unwrap())
        .collect();
    assert_eq!(lines_of, [2, 4, 6, 9]);
    assert_eq!(letters[0]["error_kind"], "invalid_json");
    assert!(
        letters[0]["error"]
            .as_str()
            .unwrap()
            .starts_with("not valid JSON: EOF while parsing")
    );
    assert_eq!(letters[0]["raw"], truncated);
    assert_eq!(letters[1]["field"], "session_id");
    assert_eq!(
        letters[1]["error"],
        "field `session_id`: expected a non-empty string of at most 512 bytes, found number 7"
    );
    assert_eq!(
        letters[2]["error"],
        "field `schema`: expected \"toolgate.event.v1\", found string \"toolgate.event.v9\""
    );
    assert_eq!(letters[3]["raw"], &GOOD[..40]);
    assert!(
        letters
            .iter()
            .all(|l| l["source"] == input.to_str().unwrap())
    );
    assert!(letters.iter().all(|l| l["raw_truncated"] == false));
}

#[test]
fn oversize_lines_are_rejected_without_being_loaded() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("big.jsonl");
    let huge = good("big").replace("hello", &"x".repeat(100_000));
    std::fs::write(&input, format!("{}\n{huge}\n{}\n", good("a"), good("b"))).unwrap();
    let dlq = dir.path().join("dead.jsonl");
    let (ids, letters, counts, _) = drain(input.to_str().unwrap(), 1_000, &dlq);
    assert_eq!(ids, ["a", "b"]);
    assert_eq!(counts.by_kind["too_large"], 1);
    assert_eq!(letters[0]["line"], 2);
    assert_eq!(letters[0]["raw_bytes"], huge.len());
    assert_eq!(letters[0]["raw_truncated"], true);
    assert_eq!(letters[0]["raw"].as_str().unwrap().len(), 1_000);
    assert_eq!(
        letters[0]["error"],
        format!(
            "record is {} bytes, over the limit of 1000 bytes",
            huge.len()
        )
    );
}

#[test]
fn invalid_utf8_is_kept_as_base64() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("bin.jsonl");
    let mut bytes = b"{\"schema\":\"\xff\xfe\"}\n".to_vec();
    bytes.extend_from_slice(good("ok").as_bytes());
    std::fs::write(&input, bytes).unwrap();
    let dlq = dir.path().join("dead.jsonl");
    let (ids, letters, _, _) = drain(input.to_str().unwrap(), 1 << 20, &dlq);
    assert_eq!(ids, ["ok"]);
    assert!(letters[0].get("raw").is_none());
    assert_eq!(letters[0]["raw_base64"], "eyJzY2hlbWEiOiL//iJ9");
}

#[test]
fn directories_and_gzip_are_read_in_name_order() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    std::fs::write(dir.path().join("b.jsonl"), format!("{}\n", good("b"))).unwrap();
    std::fs::write(dir.path().join("notes.txt"), "not events").unwrap();
    let gz = std::fs::File::create(dir.path().join("a.jsonl.gz")).unwrap();
    let mut enc = flate2::write::GzEncoder::new(gz, flate2::Compression::fast());
    writeln!(enc, "{}\n{}", good("a1"), good("a2")).unwrap();
    enc.finish().unwrap();
    std::fs::write(dir.path().join("sub/c.ndjson"), format!("{}\n", good("c"))).unwrap();
    let dlq = dir.path().join("dead.out");
    let (ids, letters, ..) = drain(dir.path().to_str().unwrap(), 1 << 20, &dlq);
    assert_eq!(ids, ["a1", "a2", "b", "c"]);
    assert!(letters.is_empty());
}

#[test]
fn missing_and_empty_inputs_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    assert!(JsonlSource::open(dir.path().join("nope.jsonl").to_str().unwrap(), 10).is_err());
    let err = JsonlSource::open(dir.path().to_str().unwrap(), 10)
        .err()
        .unwrap();
    assert!(
        err.to_string().contains("no files ending in .jsonl"),
        "{err}"
    );
}
