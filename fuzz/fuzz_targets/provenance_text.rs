//! Any text (results and arguments come from outside): the provenance text layer never
//! panics, its chunks lie on character boundaries and tile the normal form, atoms are
//! canonical (lowercase, no whitespace), and the whole detector accepts the text as a
//! result and as an argument.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::json;
use toolgate_detectors::Detector;
use toolgate_detectors::provenance::{ProvenanceDetector, atoms, sketch, text};
use toolgate_protocol::Event;
use toolgate_protocol::config::Config;

fuzz_target!(|data: &[u8]| {
    let Ok(input) = std::str::from_utf8(data) else {
        return;
    };
    let mut leaves = Vec::new();
    text::leaves_of_text("t", "t", input, 1 << 16, &mut leaves);
    for leaf in &leaves {
        let normal = text::normalize(&leaf.text);
        let bytes = normal.as_bytes();
        let chunks = sketch::index_chunks(bytes);
        let mut at = 0;
        for &(s, e) in &chunks {
            assert_eq!(s, at);
            assert!(normal.is_char_boundary(s) && normal.is_char_boundary(e));
            let _ = sketch::sketch(&bytes[s..e]);
            at = e;
        }
        assert_eq!(at, bytes.len());
        for (s, e) in sketch::query_chunks(bytes) {
            assert!(normal.is_char_boundary(s) && normal.is_char_boundary(e));
        }
        let mut found = Vec::new();
        atoms::extract_placed(&leaf.text, &mut found);
        for (atom, _) in found {
            assert!(
                !atom.value.is_empty() && !atom.value.contains(char::is_whitespace),
                "{atom:?}"
            );
        }
    }
    let Ok(settings) = serde_json::from_value(json!({})) else {
        return;
    };
    let Ok(mut detector) = ProvenanceDetector::new(&Config::default(), settings) else {
        return;
    };
    let event = |kind: &str, body: serde_json::Value| {
        let mut e = json!({"schema": "toolgate.event.v1", "kind": kind, "event_id": "e",
            "time": "2025-01-01T00:00:00Z", "agent_id": "a", "session_id": "s",
            "server": "srv", "call_id": "c", "tool": "t"});
        e.as_object_mut()
            .unwrap()
            .extend(body.as_object().unwrap().clone());
        Event::from_value(e).expect("well-formed event")
    };
    let mut out = Vec::new();
    detector.observe(
        &event(
            "tool_result",
            json!({"result": {"content": [{"type": "text", "text": input}]}}),
        ),
        &mut out,
    );
    detector.observe(
        &event(
            "tool_call",
            json!({"arguments": {"body": input, "to": input}}),
        ),
        &mut out,
    );
    let snapshot = detector.snapshot().expect("snapshot");
    detector.restore(&snapshot).expect("restore");
});
