//! Secrets and personal data: the scanner ([`scan`]), redaction of events and findings
//! ([`Redactor`]), and the `secrets` detector, which raises a finding when a credential
//! (or another configured kind) travels in a call's arguments, a tool's result or a
//! user's message. Evidence names the kind and the field, never the value.
//!
//! Settings (`[detectors.secrets]`): `in_arguments`, `in_results`, `in_user_messages`,
//! `block`, `mode`, `max_scan_bytes`.

pub mod redact;
pub mod scan;
mod validate;

use std::collections::BTreeSet;

use serde::Deserialize;
use serde_json::{Map, Value, json};
use toolgate_protocol::config::{Config, RedactionConfig, RedactionMode};
use toolgate_protocol::event::EventBody;
use toolgate_protocol::{DetectorKind, Event, Severity};

use crate::factory::{BuildError, Configured};
use crate::mode::Mode;
use crate::{Detector, FindingDraft, StateError};
pub use redact::{RedactionError, Redactor};
pub use scan::{SecretClass, SecretKind, SecretMatch, scan, scan_into};
pub use validate::{iban_valid, luhn_valid};

/// The detector's name under `[detectors]`.
pub const NAME: &str = "secrets";

/// `[detectors.secrets]`. Kind lists take kind names (`aws_access_key`, `email`, …),
/// class names (`credentials`, `financial`, `contact`) or `all`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretsSettings {
    /// Kinds that raise `secret_in_arguments` when a call sends them.
    #[serde(default = "default_in_arguments")]
    pub in_arguments: Vec<String>,
    /// Kinds that raise `secret_in_result` when a tool returns them to the model.
    #[serde(default = "default_in_results")]
    pub in_results: Vec<String>,
    /// Kinds that raise `secret_in_user_message` when a user types them.
    #[serde(default)]
    pub in_user_messages: Vec<String>,
    /// Kinds whose presence in a call's arguments asks for a block (with `mode =
    /// "enforce"`).
    #[serde(default = "default_block")]
    pub block: Vec<String>,
    /// `monitor` (alerts only) or `enforce` (kinds under `block` ask for a block).
    #[serde(default)]
    pub mode: Mode,
    /// Most bytes of one string value scanned; the rest is skipped and the evidence
    /// says so.
    #[serde(default = "default_max_scan_bytes")]
    pub max_scan_bytes: usize,
}

fn default_in_arguments() -> Vec<String> {
    vec!["credentials".into(), "card_number".into()]
}
fn default_in_results() -> Vec<String> {
    vec!["credentials".into()]
}
fn default_block() -> Vec<String> {
    [
        "private_key",
        "aws_access_key",
        "google_api_key",
        "github_token",
        "slack_token",
        "api_key",
    ]
    .map(String::from)
    .to_vec()
}
fn default_max_scan_bytes() -> usize {
    256 * 1024
}

fn kind_set(key: &str, names: &[String]) -> Result<BTreeSet<SecretKind>, BuildError> {
    let mut set = BTreeSet::new();
    for name in names {
        let kinds = SecretKind::parse_set(name).ok_or_else(|| BuildError::Settings {
            name: NAME.into(),
            message: format!(
                "`{key}`: no such kind {name:?}; use a kind ({}) or `credentials`, `financial`, `contact`, `all`",
                SecretKind::ALL.map(SecretKind::as_str).join(", ")
            ),
        })?;
        set.extend(kinds);
    }
    Ok(set)
}

impl Configured for SecretsDetector {
    const NAME: &'static str = NAME;
    const KIND: DetectorKind = DetectorKind::Policy;
    const SUMMARY: &'static str =
        "credentials, card numbers and other personal data in calls, results and messages";
    type Settings = SecretsSettings;

    fn build(config: &Config, s: SecretsSettings) -> Result<Self, BuildError> {
        if s.max_scan_bytes == 0 {
            return Err(BuildError::Settings {
                name: NAME.into(),
                message: "`max_scan_bytes` must be at least 1".into(),
            });
        }
        Ok(SecretsDetector {
            in_arguments: kind_set("in_arguments", &s.in_arguments)?,
            in_results: kind_set("in_results", &s.in_results)?,
            in_user_messages: kind_set("in_user_messages", &s.in_user_messages)?,
            block: kind_set("block", &s.block)?,
            mode: s.mode,
            max_scan_bytes: s.max_scan_bytes,
            preview: Redactor::new(&preview_redaction(&config.redaction)).map_err(|e| {
                BuildError::Settings {
                    name: NAME.into(),
                    message: e.to_string(),
                }
            })?,
        })
    }
}

/// How found values are shown in evidence: as `[redaction]` says, except that a
/// value is never shown whole (with redaction off, or `keep` for a kind, it is masked).
fn preview_redaction(configured: &RedactionConfig) -> RedactionConfig {
    let mut preview = configured.clone();
    if !preview.enabled {
        preview = RedactionConfig {
            mode: RedactionMode::Mask,
            ..RedactionConfig::default()
        };
    }
    if preview.mode == RedactionMode::Keep {
        preview.mode = RedactionMode::Mask;
    }
    for mode in preview.kinds.values_mut() {
        if *mode == RedactionMode::Keep {
            *mode = RedactionMode::Mask;
        }
    }
    preview
}

/// The detector. Stateless: each event is judged on its own.
pub struct SecretsDetector {
    in_arguments: BTreeSet<SecretKind>,
    in_results: BTreeSet<SecretKind>,
    in_user_messages: BTreeSet<SecretKind>,
    block: BTreeSet<SecretKind>,
    mode: Mode,
    max_scan_bytes: usize,
    preview: Redactor,
}

/// One found value, located.
struct Located {
    kind: SecretKind,
    field: String,
    preview: String,
}

struct Walk<'a> {
    wanted: &'a BTreeSet<SecretKind>,
    max_scan_bytes: usize,
    preview: &'a Redactor,
    found: Vec<Located>,
    truncated: bool,
    scratch: Vec<SecretMatch>,
}

impl Walk<'_> {
    fn text(&mut self, field: &str, text: &str) {
        let mut cut = text.len().min(self.max_scan_bytes);
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        self.truncated |= cut < text.len();
        self.scratch.clear();
        scan_into(&text[..cut], &mut self.scratch);
        for m in &self.scratch {
            if self.wanted.contains(&m.kind) && self.found.len() < 32 {
                self.found.push(Located {
                    kind: m.kind,
                    field: field.to_string(),
                    preview: self.preview.replacement(m.kind, &text[m.start..m.end]),
                });
            }
        }
    }

    fn value(&mut self, field: &str, value: &Value) {
        match value {
            Value::String(s) => self.text(field, s),
            Value::Number(n) if n.is_u64() => self.text(field, &n.to_string()),
            Value::Array(items) => {
                for (i, v) in items.iter().enumerate() {
                    self.value(&format!("{field}[{i}]"), v);
                }
            }
            Value::Object(map) => self.map(field, map),
            _ => {}
        }
    }

    fn map(&mut self, field: &str, map: &Map<String, Value>) {
        for (k, v) in map {
            // A key can carry a secret as well as a value can.
            self.text(field, k);
            self.value(&format!("{field}.{k}"), v);
        }
    }

    /// Values a redactor upstream (a sink, the OTLP receiver) replaced under `prefix`:
    /// the text no longer shows them, the event's `redacted` list does.
    fn noted(&mut self, event: &Event, prefix: &str) {
        for r in &event.redacted {
            // A kind's own name parses to itself alone; a class name is not a kind.
            let Some(kinds) = SecretKind::parse_set(&r.kind) else {
                continue;
            };
            let [kind] = kinds.as_slice() else {
                continue;
            };
            if r.field.starts_with(prefix) && self.wanted.contains(kind) && self.found.len() < 32 {
                self.found.push(Located {
                    kind: *kind,
                    field: r.field.clone(),
                    preview: "(redacted before it reached the engine)".into(),
                });
            }
        }
    }
}

impl SecretsDetector {
    fn walk<'a>(&'a self, wanted: &'a BTreeSet<SecretKind>) -> Walk<'a> {
        Walk {
            wanted,
            max_scan_bytes: self.max_scan_bytes,
            preview: &self.preview,
            found: Vec::new(),
            truncated: false,
            scratch: Vec::new(),
        }
    }

    fn draft(
        &self,
        event: &Event,
        rule: &str,
        walk: Walk<'_>,
        title: String,
        why: &str,
    ) -> Option<FindingDraft> {
        if walk.found.is_empty() {
            return None;
        }
        let kinds: BTreeSet<SecretKind> = walk.found.iter().map(|l| l.kind).collect();
        let credential = kinds.iter().any(|k| k.class() == SecretClass::Credentials);
        let outbound = rule == "secret_in_arguments";
        let severity = match (outbound, credential) {
            (true, true) if kinds.contains(&SecretKind::PrivateKey) => Severity::Critical,
            (true, true) => Severity::High,
            (true, false) | (false, true) => Severity::Medium,
            (false, false) => Severity::Low,
        };
        let risk = match severity {
            Severity::Critical => 95,
            Severity::High => 80,
            Severity::Medium => 55,
            _ => 30,
        };
        let names: Vec<&str> = kinds.iter().map(|k| k.as_str()).collect();
        let matches: Vec<Value> = walk
            .found
            .iter()
            .map(|l| json!({"kind": l.kind.as_str(), "field": l.field, "preview": l.preview}))
            .collect();
        let mut draft = FindingDraft::about(DetectorKind::Policy, rule, event)
            .describe(
                title,
                format!("Found {} ({}). {why}", names.join(", "), walk.found.len()),
            )
            .rate(severity, risk, 0.9)
            .evidence(json!({
                "kinds": names,
                "matches": matches,
                "truncated": walk.truncated,
            }))
            .tags(["owasp-llm:LLM02", "atlas:AML.T0057"]);
        if outbound && self.mode == Mode::Enforce && kinds.iter().any(|k| self.block.contains(k)) {
            draft = draft.block();
        }
        Some(draft)
    }
}

impl Detector for SecretsDetector {
    fn name(&self) -> &'static str {
        NAME
    }

    fn observe(&mut self, event: &Event, out: &mut Vec<FindingDraft>) {
        let drafted = match &event.body {
            EventBody::ToolCall {
                server,
                tool,
                arguments,
                ..
            } if !self.in_arguments.is_empty() => {
                let mut walk = self.walk(&self.in_arguments);
                walk.map("arguments", arguments);
                walk.noted(event, "arguments");
                self.draft(
                    event,
                    "secret_in_arguments",
                    walk,
                    format!("Call to {tool:?} on server {server:?} sends a secret"),
                    "A credential or personal data leaving through a tool call may be exfiltration, or a secret the agent should never have seen.",
                )
            }
            EventBody::ToolResult {
                server,
                tool,
                result,
                ..
            } if !self.in_results.is_empty() => {
                let mut walk = self.walk(&self.in_results);
                for (i, c) in result.content.iter().enumerate() {
                    walk.value(&format!("result.content[{i}]"), c);
                }
                if let Some(structured) = &result.structured_content {
                    walk.map("result.structuredContent", structured);
                }
                walk.noted(event, "result");
                self.draft(
                    event,
                    "secret_in_result",
                    walk,
                    format!("Result of {tool:?} on server {server:?} exposes a secret to the model"),
                    "Whatever enters the model's context can be repeated into a later call; the agent now holds this secret.",
                )
            }
            EventBody::UserMessage { text } if !self.in_user_messages.is_empty() => {
                let mut walk = self.walk(&self.in_user_messages);
                walk.text("text", text);
                walk.noted(event, "text");
                self.draft(
                    event,
                    "secret_in_user_message",
                    walk,
                    "A user gave the agent a secret".to_string(),
                    "Secrets typed into a conversation end up in model context, logs and tool calls.",
                )
            }
            _ => None,
        };
        out.extend(drafted);
    }

    fn snapshot(&self) -> Result<Vec<u8>, StateError> {
        Ok(Vec::new())
    }

    fn restore(&mut self, snapshot: &[u8]) -> Result<(), StateError> {
        crate::restore_stateless(NAME, snapshot)
    }
}
