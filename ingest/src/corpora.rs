//! Importers for public tool-poisoning and prompt-injection corpora, so `toolgate eval`
//! measures description and result analysis on them like on AgentDojo runs:
//!
//! - **MCP-SafetyBench** (`mcp-safetybench/test/<category>/*.json`): every
//!   `mcp_server_modifications` entry becomes a poisoned `tool_list` (its
//!   `modification_description`) and, when it has one, an injected `tool_result` (its
//!   `modification_return`); `outcome = "malicious"`.
//! - **InjecAgent** (`injecagent/`): every tool of `tools.json` becomes a clean
//!   `tool_list` (`outcome = "benign"`); every case of `test_cases_*.json` becomes a
//!   session with the user's instruction, the user tool's call and its response carrying
//!   the attacker's instruction (`outcome = "malicious"`).
//!
//! Each sample is its own session, and each listed definition is served by its own
//! server, so per-session rates are per-sample rates and no sample's pin interferes
//! with another's.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{Map, Value, json};
use toolgate_protocol::{Event, Timestamp};

use crate::{IngestError, files_under};

/// What an import produced.
#[derive(Debug, Default, Clone)]
pub struct CorpusStats {
    /// Samples by `sample` label (`description`, `result`, `case`).
    pub samples: BTreeMap<String, u64>,
    /// Events written.
    pub events: u64,
}

/// The shape of every importer here: a dataset directory and a sink for events.
pub type Importer = fn(
    &Path,
    &mut dyn FnMut(&Event) -> Result<(), IngestError>,
) -> Result<CorpusStats, IngestError>;

const START: i64 = 1_735_689_600_000_000_000; // 2025-01-01T00:00:00Z

struct Emitter<'a> {
    emit: &'a mut dyn FnMut(&Event) -> Result<(), IngestError>,
    stats: CorpusStats,
    origin: String,
    /// Event time of the first event; corpora start on different days so their
    /// imports can be concatenated in time order.
    start: i64,
}

impl Emitter<'_> {
    fn push(&mut self, mut value: Value) -> Result<(), IngestError> {
        let n = self.stats.events as i64;
        value["schema"] = json!("toolgate.event.v1");
        value["event_id"] = json!(format!("{}-{n:06}", self.origin));
        value["time"] =
            json!(Timestamp::from_unix_nanos(self.start + n * 1_000_000_000).to_string());
        let event = Event::from_value(value).map_err(|e| IngestError::Input {
            path: self.origin.clone(),
            message: format!("sample {n} does not make a valid event: {e}"),
        })?;
        (self.emit)(&event)?;
        self.stats.events += 1;
        Ok(())
    }

    fn sample(&mut self, kind: &str) {
        *self.stats.samples.entry(kind.to_string()).or_default() += 1;
    }
}

fn read_json(path: &Path) -> Result<Value, IngestError> {
    let bytes = std::fs::read(path).map_err(|e| IngestError::io(path.display().to_string(), e))?;
    serde_json::from_slice(&bytes).map_err(|e| IngestError::Input {
        path: path.display().to_string(),
        message: format!("not JSON: {e}"),
    })
}

/// Imports MCP-SafetyBench tasks under `root` (the dataset directory or its `test/`).
pub fn import_safetybench(
    root: &Path,
    emit: &mut dyn FnMut(&Event) -> Result<(), IngestError>,
) -> Result<CorpusStats, IngestError> {
    let files = files_under(root, &|p| {
        p.extension().is_some_and(|e| e == "json")
            && p.parent()
                .is_some_and(|d| d != root && d.file_name().is_some_and(|n| n != "test"))
    })?;
    if files.is_empty() {
        return Err(IngestError::Input {
            path: root.display().to_string(),
            message: "no MCP-SafetyBench task files (<category>/<task>.json) here".into(),
        });
    }
    let mut out = Emitter {
        emit,
        stats: CorpusStats::default(),
        origin: "mcp-safetybench".into(),
        start: START + 86_400 * 1_000_000_000,
    };
    for file in files {
        let task = read_json(&file)?;
        let category = file
            .parent()
            .and_then(Path::file_name)
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let stem = file
            .file_stem()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let attack = task["attack_category"]
            .as_str()
            .unwrap_or("unknown")
            .to_string();
        let modifications = task["mcp_server_modifications"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        for (i, m) in modifications.iter().enumerate() {
            let tool = m["tool_name"].as_str().unwrap_or("tool").to_string();
            let id = format!("{category}/{stem}/{i}");
            let labels = |sample: &str| {
                json!({"dataset": "mcp-safetybench", "sample": sample, "outcome": "malicious",
                       "attack_type": attack, "category": category, "task": format!("{category}/{stem}")})
            };
            if let Some(description) = m["modification_description"].as_str() {
                out.sample("description");
                out.push(json!({
                    "kind": "tool_list", "agent_id": "mcp-safetybench", "session_id": format!("{id}/description"),
                    "server": format!("safetybench-{category}-{stem}-{i}"),
                    "tools": [{"name": tool, "description": description, "inputSchema": {"type": "object"}}],
                    "labels": labels("description"),
                }))?;
            }
            let text = match &m["modification_return"] {
                Value::Null => None,
                Value::String(s) => Some((s.clone(), None)),
                other => Some((other.to_string(), other.as_object().cloned())),
            };
            if let Some((text, structured)) = text {
                out.sample("result");
                let session = format!("{id}/result");
                let server = format!("safetybench-{category}");
                let mut result = json!({"content": [{"type": "text", "text": text}]});
                if let Some(s) = structured {
                    result["structuredContent"] = Value::Object(s);
                }
                out.push(json!({
                    "kind": "tool_call", "agent_id": "mcp-safetybench", "session_id": session,
                    "server": server, "call_id": format!("{id}/call"), "tool": tool, "arguments": {},
                    "labels": labels("result"),
                }))?;
                out.push(json!({
                    "kind": "tool_result", "agent_id": "mcp-safetybench", "session_id": session,
                    "server": server, "call_id": format!("{id}/call"), "tool": tool, "result": result,
                    "labels": labels("result"),
                }))?;
            }
        }
    }
    Ok(out.stats)
}

/// InjecAgent's parameter list as a JSON Schema.
fn injecagent_schema(parameters: Option<&Vec<Value>>) -> Value {
    let mut props = Map::new();
    let mut required = Vec::new();
    for p in parameters.into_iter().flatten() {
        let Some(name) = p["name"].as_str() else {
            continue;
        };
        let kind = match p["type"].as_str().unwrap_or("string") {
            k @ ("integer" | "number" | "boolean" | "array" | "object") => k,
            _ => "string",
        };
        props.insert(
            name.to_string(),
            json!({"type": kind, "description": p["description"]}),
        );
        if p["required"].as_bool() == Some(true) {
            required.push(name.to_string());
        }
    }
    json!({"type": "object", "properties": props, "required": required})
}

/// InjecAgent writes tool parameters as Python dict literals; read them as JSON where
/// the quoting allows, or keep the text.
fn injecagent_arguments(text: &str) -> Value {
    serde_json::from_str::<Value>(text)
        .or_else(|_| serde_json::from_str::<Value>(&text.replace('\'', "\"")))
        .ok()
        .filter(Value::is_object)
        .unwrap_or_else(|| json!({"parameters": text}))
}

/// Imports InjecAgent's `tools.json` and `test_cases_*.json` from `root`.
pub fn import_injecagent(
    root: &Path,
    emit: &mut dyn FnMut(&Event) -> Result<(), IngestError>,
) -> Result<CorpusStats, IngestError> {
    let mut out = Emitter {
        emit,
        stats: CorpusStats::default(),
        origin: "injecagent".into(),
        start: START,
    };
    let toolkits = read_json(&root.join("tools.json"))?;
    for kit in toolkits.as_array().into_iter().flatten() {
        let toolkit = kit["toolkit"].as_str().unwrap_or("toolkit");
        for tool in kit["tools"].as_array().into_iter().flatten() {
            let name = format!("{toolkit}{}", tool["name"].as_str().unwrap_or(""));
            out.sample("description");
            out.push(json!({
                "kind": "tool_list", "agent_id": "injecagent", "session_id": format!("tools/{name}"),
                "server": format!("injecagent-{name}"),
                "tools": [{"name": name, "description": tool["summary"],
                           "inputSchema": injecagent_schema(tool["parameters"].as_array())}],
                "labels": {"dataset": "injecagent", "sample": "description", "outcome": "benign", "toolkit": toolkit},
            }))?;
        }
    }
    let cases = files_under(root, &|p| {
        p.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("test_cases_") && n.ends_with(".json"))
    })?;
    for file in cases {
        let variant = file
            .file_stem()
            .and_then(|n| n.to_str())
            .unwrap_or("")
            .trim_start_matches("test_cases_")
            .to_string();
        let list = read_json(&file)?;
        for (i, case) in list.as_array().into_iter().flatten().enumerate() {
            let session = format!("{variant}/{i}");
            let tool = case["User Tool"].as_str().unwrap_or("tool");
            let labels = json!({"dataset": "injecagent", "sample": "case", "outcome": "malicious",
                                "variant": variant, "attack_type": case["Attack Type"].as_str().unwrap_or("unknown")});
            out.sample("case");
            let server = format!("injecagent-{tool}");
            out.push(json!({"kind": "user_message", "agent_id": "injecagent", "session_id": session,
                            "text": case["User Instruction"].as_str().unwrap_or(""), "labels": labels}))?;
            out.push(json!({"kind": "tool_call", "agent_id": "injecagent", "session_id": session,
                            "server": server, "call_id": format!("{session}/call"), "tool": tool,
                            "arguments": injecagent_arguments(case["Tool Parameters"].as_str().unwrap_or("{}")),
                            "labels": labels}))?;
            out.push(json!({"kind": "tool_result", "agent_id": "injecagent", "session_id": session,
                            "server": server, "call_id": format!("{session}/call"), "tool": tool,
                            "result": {"content": [{"type": "text", "text": case["Tool Response"].as_str().unwrap_or("")}]},
                            "labels": labels}))?;
        }
    }
    Ok(out.stats)
}
