//! The `injection` detector: instruction-like text aimed at the model, in tool
//! descriptions (tool poisoning) and in tool results (indirect prompt injection).
//! Every finding lists the signals that fired, with the fragment and why it matters.
//!
//! Settings (`[detectors.injection]`): `threshold`, `descriptions`, `results`,
//! `max_result_bytes`.

pub mod analysis;

use serde::Deserialize;
use serde_json::{Value, json};
use toolgate_protocol::config::Config;
use toolgate_protocol::event::EventBody;
use toolgate_protocol::{DetectorKind, Event, Severity};

use crate::factory::{BuildError, Configured};
use crate::{Detector, FindingDraft, StateError};
use analysis::{Analysis, Context, analyze_text, analyze_tool};

/// The detector's name under `[detectors]`.
pub const NAME: &str = "injection";

/// `[detectors.injection]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InjectionSettings {
    /// Score (0 to 100) from which a finding is raised.
    #[serde(default = "default_threshold")]
    pub threshold: u32,
    /// Analyze the tool definitions in `tool_list` events.
    #[serde(default = "yes")]
    pub descriptions: bool,
    /// Analyze the text of `tool_result` events.
    #[serde(default = "yes")]
    pub results: bool,
    /// Most bytes of one result's text analyzed; the rest is skipped, and the evidence
    /// says so.
    #[serde(default = "default_max_result_bytes")]
    pub max_result_bytes: usize,
}

fn default_threshold() -> u32 {
    30
}
fn yes() -> bool {
    true
}
fn default_max_result_bytes() -> usize {
    256 * 1024
}

impl Configured for InjectionDetector {
    const NAME: &'static str = NAME;
    const KIND: DetectorKind = DetectorKind::Definition;
    const SUMMARY: &'static str = "tool poisoning in descriptions and prompt injection in results";
    type Settings = InjectionSettings;

    fn build(_config: &Config, s: InjectionSettings) -> Result<Self, BuildError> {
        if s.threshold == 0 || s.threshold > 100 {
            return Err(BuildError::Settings {
                name: NAME.into(),
                message: format!("`threshold` must be 1 to 100, found {}", s.threshold),
            });
        }
        Ok(InjectionDetector { settings: s })
    }
}

/// The detector. Stateless: every event is judged on its own.
pub struct InjectionDetector {
    settings: InjectionSettings,
}

fn rating(a: &Analysis) -> (Severity, f64) {
    let severity = match a.score {
        0..=44 => Severity::Low,
        45..=69 => Severity::Medium,
        70..=89 => Severity::High,
        _ => Severity::Critical,
    };
    let strong = a.signals.iter().filter(|s| s.strong).count();
    let confidence = match strong {
        0 | 1 => 0.6,
        2 => 0.8,
        _ => 0.95,
    };
    (severity, confidence)
}

fn signal_list(a: &Analysis) -> String {
    a.signals
        .iter()
        .map(|s| s.id)
        .collect::<Vec<_>>()
        .join(", ")
}

impl Detector for InjectionDetector {
    fn name(&self) -> &'static str {
        NAME
    }

    fn observe(&mut self, event: &Event, out: &mut Vec<FindingDraft>) {
        match &event.body {
            EventBody::ToolList { server, tools } if self.settings.descriptions => {
                for tool in tools {
                    let a = analyze_tool(
                        &tool.name,
                        tool.title.as_deref(),
                        tool.description.as_deref(),
                        tool.input_schema.as_ref(),
                    );
                    if a.score < self.settings.threshold {
                        continue;
                    }
                    let fingerprint = tool.fingerprint();
                    let (severity, confidence) = rating(&a);
                    let mut draft = FindingDraft::about(DetectorKind::Definition, "poisoned_description", event)
                        .describe(
                            format!("Tool {:?} on server {server:?} carries instructions aimed at the model", tool.name),
                            format!(
                                "The definition of {:?} scores {} of 100 for tool poisoning ({}). The model reads this text every time the tool is listed.",
                                tool.name,
                                a.score,
                                signal_list(&a)
                            ),
                        )
                        .rate(severity, a.score.min(100) as u8, confidence)
                        .group_by(format!("{}\u{1f}{server}\u{1f}{}\u{1f}{fingerprint}", event.agent_id, tool.name))
                        .evidence(json!({
                            "tool": tool.name,
                            "fingerprint": fingerprint,
                            "score": a.score,
                            "signals": a.signals,
                        }))
                        .tags(["atlas:AML.T0051", "mcp:tool-poisoning"]);
                    draft.tool = Some(tool.name.clone());
                    out.push(draft);
                }
            }
            EventBody::ToolResult {
                server,
                tool,
                result,
                ..
            } if self.settings.results => {
                let mut text = String::new();
                for t in result.texts() {
                    text.push_str(t);
                    text.push('\n');
                }
                if let Some(structured) = &result.structured_content {
                    text.push_str(&Value::Object(structured.clone()).to_string());
                }
                let total = text.len();
                let mut cut = total.min(self.settings.max_result_bytes);
                while !text.is_char_boundary(cut) {
                    cut -= 1;
                }
                let a = analyze_text(&text[..cut], Context::Result);
                if a.score < self.settings.threshold {
                    return;
                }
                let (severity, confidence) = rating(&a);
                out.push(
                    FindingDraft::about(DetectorKind::Definition, "injected_result", event)
                        .describe(
                            format!("Result of {tool:?} on server {server:?} carries instructions aimed at the model"),
                            format!(
                                "The result scores {} of 100 for prompt injection ({}). Text in a tool result is data; instructions in it come from whoever wrote that data.",
                                a.score,
                                signal_list(&a)
                            ),
                        )
                        .rate(severity, a.score.min(100) as u8, confidence)
                        .evidence(json!({
                            "score": a.score,
                            "signals": a.signals,
                            "analyzed_bytes": cut,
                            "result_bytes": total,
                        }))
                        .tags(["atlas:AML.T0051.001"]),
                );
            }
            _ => {}
        }
    }

    fn snapshot(&self) -> Result<Vec<u8>, StateError> {
        Ok(Vec::new())
    }

    fn restore(&mut self, snapshot: &[u8]) -> Result<(), StateError> {
        crate::restore_stateless(NAME, snapshot)
    }
}
