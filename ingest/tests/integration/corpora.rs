//! The MCP-SafetyBench and InjecAgent importers on the shared datasets: every sample
//! becomes valid events with its ground-truth labels.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use toolgate_ingest::corpora::{Importer, import_injecagent, import_safetybench};
use toolgate_protocol::{Event, EventKind};

fn datasets() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/datasets")
}

fn import(importer: Importer, dir: &str) -> Vec<Event> {
    let mut events = Vec::new();
    let stats = importer(&datasets().join(dir), &mut |e| {
        events.push(e.clone());
        Ok(())
    })
    .unwrap();
    assert_eq!(stats.events as usize, events.len());
    events
}

fn count_by(events: &[Event], label: &str) -> BTreeMap<(String, String), usize> {
    let mut counts = BTreeMap::new();
    for e in events {
        let key = (
            e.labels.get(label).cloned().unwrap_or_default(),
            e.kind().as_str().to_string(),
        );
        *counts.entry(key).or_default() += 1;
    }
    counts
}

#[test]
fn safetybench_yields_96_poisoned_listings_and_14_injected_results() {
    let events = import(import_safetybench, "mcp-safetybench");
    let counts = count_by(&events, "sample");
    assert_eq!(counts[&("description".into(), "tool_list".into())], 96);
    assert_eq!(counts[&("result".into(), "tool_result".into())], 14);
    assert!(events.iter().all(|e| e.labels["outcome"] == "malicious"));
    assert!(events.windows(2).all(|w| w[0].time < w[1].time));
    // One server per listed definition, so pins never interfere.
    let servers: std::collections::BTreeSet<_> = events
        .iter()
        .filter(|e| e.kind() == EventKind::ToolList)
        .map(|e| e.server().unwrap_or_default().to_string())
        .collect();
    assert_eq!(servers.len(), 96);
}

#[test]
fn injecagent_yields_330_clean_tools_and_every_injected_case() {
    let events = import(import_injecagent, "injecagent");
    let counts = count_by(&events, "outcome");
    assert_eq!(counts[&("benign".into(), "tool_list".into())], 330);
    assert_eq!(counts[&("malicious".into(), "tool_result".into())], 2108);
    assert_eq!(counts[&("malicious".into(), "user_message".into())], 2108);
    let first_case = events
        .iter()
        .find(|e| e.kind() == EventKind::ToolCall)
        .unwrap();
    assert!(
        first_case
            .to_json()
            .contains("\"product_id\":\"B08KFQ9HK5\""),
        "{}",
        first_case.to_json()
    );
}

#[test]
fn a_directory_without_tasks_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let err = import_safetybench(dir.path(), &mut |_| Ok(())).unwrap_err();
    assert!(
        err.to_string().contains("no MCP-SafetyBench task files"),
        "{err}"
    );
    let err = import_injecagent(dir.path(), &mut |_| Ok(())).unwrap_err();
    assert!(err.to_string().contains("tools.json"), "{err}");
}
