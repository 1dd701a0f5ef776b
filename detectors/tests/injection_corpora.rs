//! The `injection` detector on public corpora in `../shared/datasets`: poisoned MCP tool
//! descriptions and injected returns from MCP-SafetyBench against InjecAgent's 330
//! clean tool specifications. Target (issue 4): at least 95 % of poisoned descriptions
//! flagged at no more than 1 % of clean ones. Per-signal counts are printed
//! (`cargo test -p toolgate-detectors --test injection_corpora -- --nocapture`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value, json};
use toolgate_detectors::injection::analysis::signal_ids;
use toolgate_detectors::{Detector, FindingDraft, build_detectors, registry};
use toolgate_protocol::Event;
use toolgate_protocol::config::Config;

fn datasets() -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/datasets");
    assert!(p.exists(), "shared datasets missing at {}", p.display());
    p
}

fn injection() -> Box<dyn Detector> {
    let config = Config::from_toml("", "test").unwrap();
    build_detectors(&registry(), &config)
        .unwrap()
        .into_iter()
        .find(|d| d.name() == "injection")
        .expect("injection detector registered")
}

/// A `tool_list` event with one tool, as a sink would report it.
fn listing(name: &str, description: &str, schema: Value) -> Event {
    Event::from_value(json!({
        "schema": "toolgate.event.v1", "kind": "tool_list", "event_id": "e",
        "time": "2025-01-01T00:00:00Z", "agent_id": "a", "session_id": "s", "server": "srv",
        "tools": [{"name": name, "description": description, "inputSchema": schema}]
    }))
    .unwrap()
}

fn result(text: &str) -> Event {
    Event::from_value(json!({
        "schema": "toolgate.event.v1", "kind": "tool_result", "event_id": "e",
        "time": "2025-01-01T00:00:00Z", "agent_id": "a", "session_id": "s", "server": "srv",
        "call_id": "c", "tool": "t", "result": {"content": [{"type": "text", "text": text}]}
    }))
    .unwrap()
}

fn structured_result(value: &Value) -> Event {
    Event::from_value(json!({
        "schema": "toolgate.event.v1", "kind": "tool_result", "event_id": "e",
        "time": "2025-01-01T00:00:00Z", "agent_id": "a", "session_id": "s", "server": "srv",
        "call_id": "c", "tool": "t",
        "result": {"content": [{"type": "text", "text": value.to_string()}], "structuredContent": value}
    }))
    .unwrap()
}

/// Runs the detector; returns whether it flagged and which signals fired.
fn judge(detector: &mut Box<dyn Detector>, event: &Event) -> (bool, Vec<String>) {
    let mut out: Vec<FindingDraft> = Vec::new();
    detector.observe(event, &mut out);
    let signals = out
        .iter()
        .flat_map(|d| {
            d.evidence["signals"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .filter_map(|s| s["id"].as_str().map(str::to_string))
        .collect();
    (!out.is_empty(), signals)
}

struct Tally {
    n: usize,
    flagged: usize,
    signals: BTreeMap<String, usize>,
}

fn tally(detector: &mut Box<dyn Detector>, events: &[Event]) -> Tally {
    let mut t = Tally {
        n: 0,
        flagged: 0,
        signals: BTreeMap::new(),
    };
    for e in events {
        let (flagged, signals) = judge(detector, e);
        t.n += 1;
        t.flagged += usize::from(flagged);
        for s in signals {
            *t.signals.entry(s).or_default() += 1;
        }
    }
    t
}

fn safetybench() -> (Vec<Event>, Vec<Event>) {
    let mut descriptions = Vec::new();
    let mut returns = Vec::new();
    let root = datasets().join("mcp-safetybench/test");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap()
        .flat_map(|d| std::fs::read_dir(d.unwrap().path()).into_iter().flatten())
        .map(|f| f.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    for f in files {
        let task: Value = serde_json::from_slice(&std::fs::read(&f).unwrap()).unwrap();
        for m in task["mcp_server_modifications"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let name = m["tool_name"].as_str().unwrap_or("tool");
            if let Some(d) = m["modification_description"].as_str() {
                descriptions.push(listing(name, d, json!({"type": "object"})));
            }
            match &m["modification_return"] {
                Value::Null => {}
                Value::String(r) => returns.push(result(r)),
                structured => returns.push(structured_result(structured)),
            }
        }
    }
    (descriptions, returns)
}

fn injecagent_tools() -> Vec<Event> {
    let toolkits: Value =
        serde_json::from_slice(&std::fs::read(datasets().join("injecagent/tools.json")).unwrap())
            .unwrap();
    let mut events = Vec::new();
    for kit in toolkits.as_array().unwrap() {
        for tool in kit["tools"].as_array().unwrap() {
            let mut props = Map::new();
            let mut required = Vec::new();
            for p in tool["parameters"].as_array().into_iter().flatten() {
                let name = p["name"].as_str().unwrap().to_string();
                let kind = match p["type"].as_str().unwrap_or("string") {
                    "integer" => "integer",
                    "number" => "number",
                    "boolean" => "boolean",
                    "array" => "array",
                    "object" => "object",
                    _ => "string",
                };
                props.insert(
                    name.clone(),
                    json!({"type": kind, "description": p["description"]}),
                );
                if p["required"].as_bool() == Some(true) {
                    required.push(name);
                }
            }
            let name = format!(
                "{}{}",
                kit["toolkit"].as_str().unwrap(),
                tool["name"].as_str().unwrap()
            );
            events.push(listing(
                &name,
                tool["summary"].as_str().unwrap(),
                json!({"type": "object", "properties": props, "required": required}),
            ));
        }
    }
    events
}

fn report(name: &str, t: &Tally) {
    println!(
        "{name}: {}/{} flagged ({:.1} %)",
        t.flagged,
        t.n,
        100.0 * t.flagged as f64 / t.n as f64
    );
    for id in signal_ids() {
        if let Some(n) = t.signals.get(id) {
            println!("    {id:20} {n}");
        }
    }
}

#[test]
fn poisoned_descriptions_are_flagged_and_clean_ones_are_not() {
    let mut d = injection();
    let (poisoned, returns) = safetybench();
    let clean = injecagent_tools();
    assert_eq!(poisoned.len(), 96);
    assert_eq!(clean.len(), 330);
    let p = tally(&mut d, &poisoned);
    let c = tally(&mut d, &clean);
    let r = tally(&mut d, &returns);
    report("MCP-SafetyBench poisoned descriptions", &p);
    report("MCP-SafetyBench injected returns", &r);
    report("InjecAgent clean tool specs", &c);
    assert!(
        p.flagged * 100 >= p.n * 95,
        "poisoned flagged {}/{}",
        p.flagged,
        p.n
    );
    assert!(
        c.flagged * 100 <= c.n,
        "clean flagged {}/{}",
        c.flagged,
        c.n
    );
    assert!(
        r.flagged * 100 >= r.n * 95,
        "injected returns flagged {}/{}",
        r.flagged,
        r.n
    );
}
