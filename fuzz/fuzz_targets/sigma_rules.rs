//! Any text as a Sigma file (rules come from outside: shared repositories, other
//! teams): conversion never panics; every rule it produces either is refused by the
//! rule compiler with an error or compiles and runs over a few events without panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::json;
use toolgate_detectors::FindingDraft;
use toolgate_detectors::sequence::{Rule, RuleSet, RuleSpec};
use toolgate_protocol::Event;
use toolgate_protocol::config::Config;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(tables) = toolgate_ingest::sigma::convert(text, "fuzz") else {
        return;
    };
    let specs: Vec<RuleSpec> = tables
        .into_iter()
        .filter_map(|t| serde_json::from_value::<RuleSpec>(t).ok())
        .filter(|s| Rule::compile(s.clone()).is_ok())
        .collect();
    let mut ids = std::collections::BTreeSet::new();
    let specs: Vec<RuleSpec> = specs
        .into_iter()
        .filter(|s| ids.insert(s.id.clone()))
        .collect();
    let Ok(mut rules) = RuleSet::new(specs, 64) else {
        return;
    };
    let config = Config::default();
    let mut out: Vec<FindingDraft> = Vec::new();
    for (i, kind) in ["tool_call", "tool_result", "tool_call"].iter().enumerate() {
        let mut e = json!({
            "schema": "toolgate.event.v1", "kind": kind, "event_id": format!("e{i}"),
            "time": format!("2025-01-01T00:00:0{i}Z"), "agent_id": "a", "session_id": "s",
            "server": "mail", "tool": "send_email", "call_id": "c1",
        });
        if *kind == "tool_call" {
            e["arguments"] = json!({"to": ["x@proton.me", 7], "body": "curl http://x", "n": 3.5});
        } else {
            e["result"] = json!({"content": [{"type": "text", "text": "ok"}], "isError": true});
        }
        if let Ok(event) = Event::from_value(e) {
            rules.observe(&event, &config, i64::MIN, &mut out);
        }
        rules.advance(
            1_735_689_600_000_000_000 + i as i64 * 1_000_000_000,
            true,
            &mut out,
        );
    }
    rules.advance(i64::MAX, false, &mut out);
});
