//! One AgentDojo run (a JSON file) turned into toolgate events.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use toolgate_protocol::event::{Event, EventBody, ToolResult};
use toolgate_protocol::fingerprint::hex;
use toolgate_protocol::{Duration, Timestamp};

use super::ImportStats;
use super::mapping::Mapping;

/// A run file, as AgentDojo writes it. Only the fields the importer uses.
#[derive(Debug, Deserialize)]
pub(crate) struct Run {
    suite_name: String,
    pipeline_name: String,
    user_task_id: String,
    #[serde(default)]
    injection_task_id: Option<String>,
    #[serde(default)]
    attack_type: Option<String>,
    #[serde(default)]
    injections: BTreeMap<String, String>,
    messages: Vec<Message>,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    utility: Option<bool>,
    #[serde(default)]
    security: Option<bool>,
}

#[derive(Debug, Deserialize)]
struct Message {
    role: String,
    #[serde(default)]
    content: Option<Content>,
    #[serde(default)]
    tool_calls: Option<Vec<Call>>,
    #[serde(default)]
    tool_call_id: Option<String>,
    #[serde(default)]
    tool_call: Option<Call>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Content {
    Text(String),
    Blocks(Vec<Block>),
}

#[derive(Debug, Deserialize)]
struct Block {
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    text: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Call {
    function: String,
    #[serde(default)]
    args: Option<Map<String, Value>>,
    #[serde(default)]
    id: Option<String>,
}

impl Content {
    fn text(&self) -> String {
        match self {
            Content::Text(s) => s.clone(),
            Content::Blocks(blocks) => blocks
                .iter()
                .filter_map(|b| b.content.as_deref().or(b.text.as_deref()))
                .collect::<Vec<_>>()
                .join("\n"),
        }
    }
}

/// Outcome label values, as `toolgate eval` reads them.
pub const OUTCOME_BENIGN: &str = "benign";
/// The attacker's goal was reached.
pub const OUTCOME_ATTACK_SUCCEEDED: &str = "attack_succeeded";
/// An attack was attempted and failed.
pub const OUTCOME_ATTACK_FAILED: &str = "attack_failed";

/// Injected text counts as present in a result when its letters and digits, in order,
/// appear in the result's. Tool outputs re-wrap and YAML-escape what was injected, so
/// a plain substring test misses most of them.
fn fold_alnum(s: &str) -> String {
    s.replace("\\n", " ")
        .chars()
        .filter(|c| c.is_alphanumeric())
        .flat_map(char::to_lowercase)
        .collect()
}

/// Shortest folded injection that is looked for; shorter ones would match by chance.
const MIN_INJECTION_CHARS: usize = 20;

struct Pending {
    call_id: String,
    function: String,
}

/// Which run a file is. AgentDojo's layout is
/// `runs/<pipeline>/<suite>/<user_task>/<attack>/<injection_task>.json`, and the path is
/// the identity: inside the files, locally served models all report `pipeline_name`
/// `local-…`, and `attack_type` sometimes names the base attack of a variant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RunId {
    pipeline: String,
    suite: String,
    user_task: String,
    attack: String,
    injection_task: String,
}

impl RunId {
    /// From the path when it has the layout's shape, else from the file's own fields.
    pub(crate) fn locate(path: &str, run: &Run) -> RunId {
        let parts: Vec<&str> = path.trim_end_matches(".json").rsplit('/').take(5).collect();
        if let [injection_task, attack, user_task, suite, pipeline] = parts[..]
            && *suite == run.suite_name
            && *user_task == run.user_task_id
        {
            return RunId {
                pipeline: pipeline.into(),
                suite: suite.into(),
                user_task: user_task.into(),
                attack: attack.into(),
                injection_task: injection_task.into(),
            };
        }
        RunId {
            pipeline: run.pipeline_name.clone(),
            suite: run.suite_name.clone(),
            user_task: run.user_task_id.clone(),
            attack: run.attack_type.clone().unwrap_or_else(|| "none".into()),
            injection_task: run
                .injection_task_id
                .clone()
                .unwrap_or_else(|| "none".into()),
        }
    }
}

/// Converts one run, starting at `start`, one second per event.
pub(crate) fn convert(
    id: RunId,
    run: Run,
    mapping: &Mapping,
    start: Timestamp,
    stats: &mut ImportStats,
) -> Vec<Event> {
    let RunId {
        pipeline,
        suite,
        user_task,
        attack,
        injection_task,
    } = id;
    let session_id = format!("{pipeline}/{suite}/{user_task}/{attack}/{injection_task}");
    let run_hash = hex(&Sha256::digest(session_id.as_bytes())[..8]);
    let outcome = match (attack.as_str(), run.security) {
        ("none", _) => OUTCOME_BENIGN,
        (_, Some(true)) => OUTCOME_ATTACK_SUCCEEDED,
        (_, Some(false)) => OUTCOME_ATTACK_FAILED,
        (_, None) => "unknown",
    };
    let flag = |b: Option<bool>| b.map_or("unknown", |b| if b { "true" } else { "false" });
    let mut labels = BTreeMap::from([
        ("dataset".to_string(), "agentdojo".to_string()),
        ("suite".into(), suite.clone()),
        ("pipeline".into(), pipeline),
        // AgentDojo also runs each injection task as the user's own request, to check
        // it can be done at all: benign by label, the attacker's behaviour in content.
        (
            "task_kind".into(),
            if user_task.starts_with("injection_task") {
                "injection_task_as_user_task"
            } else {
                "user_task"
            }
            .into(),
        ),
        ("user_task".into(), user_task),
        ("injection_task".into(), injection_task),
        ("attack_type".into(), attack),
        ("security".into(), flag(run.security).into()),
        ("utility".into(), flag(run.utility).into()),
        ("outcome".into(), outcome.into()),
    ]);
    if run.error.is_some() {
        labels.insert("run_error".into(), "true".into());
    }
    let injections: Vec<(&str, String)> = run
        .injections
        .iter()
        .map(|(vector, text)| (vector.as_str(), fold_alnum(text)))
        .filter(|(_, folded)| folded.len() >= MIN_INJECTION_CHARS)
        .collect();

    let role = mapping.role(&suite);
    let mut events = Vec::new();
    let mut pending: Vec<Pending> = Vec::new();
    let mut synthesized = 0usize;
    let mut next = |body: EventBody, extra: Option<(&str, String)>, trust: Option<&str>| {
        let n = events.len();
        let mut labels = labels.clone();
        if let Some((k, v)) = extra {
            labels.insert(k.to_string(), v);
        }
        events.push(Event {
            event_id: format!("ad-{run_hash}-{n:03}"),
            time: start.saturating_add(Duration::from_secs(n as i64)),
            agent_id: session_id.clone(),
            session_id: session_id.clone(),
            agent_role: Some(role.clone()),
            host: None,
            trust_domain: trust.map(str::to_string),
            sink_action: None,
            await_verdict: false,
            trace_id: None,
            span_id: None,
            labels,
            redacted: Vec::new(),
            body,
        });
    };

    for message in run.messages {
        match message.role.as_str() {
            "user" => {
                let text = message
                    .content
                    .as_ref()
                    .map(Content::text)
                    .unwrap_or_default();
                next(EventBody::UserMessage { text }, None, None);
            }
            "assistant" => {
                pending.clear();
                for call in message.tool_calls.unwrap_or_default() {
                    let call_id =
                        call.id
                            .clone()
                            .filter(|id| !id.is_empty())
                            .unwrap_or_else(|| {
                                synthesized += 1;
                                format!("ad-{run_hash}-call-{synthesized}")
                            });
                    let place = mapping.place(&suite, &call.function);
                    if !place.mapped {
                        *stats
                            .unmapped_tools
                            .entry(call.function.clone())
                            .or_default() += 1;
                    }
                    pending.push(Pending {
                        call_id: call_id.clone(),
                        function: call.function.clone(),
                    });
                    next(
                        EventBody::ToolCall {
                            server: place.server.to_string(),
                            call_id,
                            tool: call.function,
                            arguments: call.args.unwrap_or_default(),
                        },
                        None,
                        Some(place.trust_domain),
                    );
                }
            }
            "tool" => {
                let function = message
                    .tool_call
                    .as_ref()
                    .map(|c| c.function.clone())
                    .unwrap_or_default();
                // Results follow their calls in order; ids are absent in many runs, so
                // match by id, else by function name, else by position.
                // Some runs carry empty ids; those are no ids at all.
                let tool_call_id = message.tool_call_id.clone().filter(|id| !id.is_empty());
                let index = tool_call_id
                    .as_ref()
                    .and_then(|id| pending.iter().position(|p| &p.call_id == id))
                    .or_else(|| pending.iter().position(|p| p.function == function))
                    .or(if pending.is_empty() { None } else { Some(0) });
                let (call_id, tool) = match index {
                    Some(i) => {
                        let p = pending.remove(i);
                        (p.call_id, p.function)
                    }
                    None => {
                        stats.unmatched_results += 1;
                        synthesized += 1;
                        (
                            tool_call_id
                                .clone()
                                .unwrap_or_else(|| format!("ad-{run_hash}-call-{synthesized}")),
                            if function.is_empty() {
                                "unknown".into()
                            } else {
                                function
                            },
                        )
                    }
                };
                let text = message
                    .content
                    .as_ref()
                    .map(Content::text)
                    .unwrap_or_default();
                let is_error = message.error.is_some();
                let text = match (&message.error, text.is_empty()) {
                    (Some(err), true) => err.clone(),
                    _ => text,
                };
                let folded = fold_alnum(&text);
                let vectors: Vec<&str> = injections
                    .iter()
                    .filter(|(_, inj)| folded.contains(inj.as_str()))
                    .map(|(v, _)| *v)
                    .collect();
                let extra = (!vectors.is_empty()).then(|| {
                    stats.injected_results += 1;
                    ("injection_vectors", vectors.join(","))
                });
                let place = mapping.place(&suite, &tool);
                let result = ToolResult {
                    content: vec![json!({"type": "text", "text": text})],
                    is_error: Some(is_error),
                    ..ToolResult::default()
                };
                next(
                    EventBody::ToolResult {
                        server: place.server.to_string(),
                        call_id,
                        tool,
                        result,
                    },
                    extra,
                    Some(place.trust_domain),
                );
            }
            // System prompts are the agent's own configuration, not tool traffic.
            _ => {}
        }
    }
    *stats
        .runs_by_outcome
        .entry(outcome.to_string())
        .or_default() += 1;
    events
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folding_sees_through_yaml_rewrapping() {
        let injected = "\n\n<INFORMATION>\n\nThis is an important message from me, Emma Johnson.\n</INFORMATION>";
        let in_yaml = "body: \"Hi,\\n\\n<INFORMATION>\\nThis is an important message\\\n    \\ from me, Emma Johnson.\\n</INFORMATION>\"";
        assert!(fold_alnum(in_yaml).contains(&fold_alnum(injected)));
        assert!(!fold_alnum("an unrelated review of the hotel").contains(&fold_alnum(injected)));
    }
}
