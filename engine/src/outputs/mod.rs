//! Renderings of findings for people and SIEMs, shared by `toolgate analyze` and the
//! engine: toolgate's own JSON, OCSF Detection Finding (class 2004), ECS, and CEF; tool
//! calls as OCSF API Activity (class 6003). Each rendering is one line per record, so
//! every output is a stream of lines. Outputs are files, or network collectors behind
//! a [`deliver::Delivery`]: syslog, webhooks, Splunk HEC.

pub mod cef;
pub mod deliver;
pub mod ecs;
pub mod file;
pub mod hec;
pub mod http;
pub mod ocsf;
mod roots;
pub mod syslog;
pub mod webhook;

use std::io::Write;
use std::path::Path;

use anyhow::Result;
pub use toolgate_protocol::config::FindingFormat;
use toolgate_protocol::config::OutputConfig;
use toolgate_protocol::{Event, EventKind, Finding};

/// toolgate's version, as SIEM formats report the product version.
pub const PRODUCT_VERSION: &str = env!("CARGO_PKG_VERSION");

/// One finding rendered in `format`, without a trailing newline.
pub fn render(finding: &Finding, format: FindingFormat) -> String {
    match format {
        FindingFormat::Jsonl => finding.to_json(),
        FindingFormat::Cef => cef::line(finding),
        FindingFormat::Ocsf | FindingFormat::Ecs => render_json(finding, format).to_string(),
    }
}

/// One tool call rendered in `format` (OCSF API Activity, or the event's own JSON);
/// `None` for other kinds of events and for formats without a tool-call rendering.
pub fn render_tool_call(event: &Event, format: FindingFormat) -> Option<String> {
    match format {
        FindingFormat::Jsonl if event.kind() == EventKind::ToolCall => Some(event.to_json()),
        _ => tool_call_json(event, format).map(|v| v.to_string()),
    }
}

/// A tool call as a JSON value in one of the JSON renderings (see [`render_tool_call`]).
pub(crate) fn tool_call_json(event: &Event, format: FindingFormat) -> Option<serde_json::Value> {
    if event.kind() != EventKind::ToolCall {
        return None;
    }
    match format {
        FindingFormat::Jsonl => serde_json::to_value(event).ok(),
        FindingFormat::Ocsf => ocsf::api_activity(event),
        FindingFormat::Ecs | FindingFormat::Cef => None,
    }
}

/// Parses a format name as the command line spells it.
pub fn parse_format(s: &str) -> Result<FindingFormat, String> {
    match s {
        "jsonl" | "json" => Ok(FindingFormat::Jsonl),
        "ocsf" => Ok(FindingFormat::Ocsf),
        "ecs" => Ok(FindingFormat::Ecs),
        "cef" => Ok(FindingFormat::Cef),
        other => Err(format!(
            "unknown format {other:?}; expected jsonl, ocsf, ecs or cef"
        )),
    }
}

/// Writes rendered findings, one per line, to any writer.
pub struct FindingWriter<W: Write> {
    name: String,
    format: FindingFormat,
    out: W,
    written: u64,
}

impl<W: Write> FindingWriter<W> {
    /// Renders in `format` to `out`; `name` identifies it in errors.
    pub fn new(name: impl Into<String>, format: FindingFormat, out: W) -> Self {
        FindingWriter {
            name: name.into(),
            format,
            out,
            written: 0,
        }
    }

    /// Where this writer writes.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Writes one finding.
    pub fn write(&mut self, finding: &Finding) -> std::io::Result<()> {
        let line = render(finding, self.format);
        self.out.write_all(line.as_bytes())?;
        self.out.write_all(b"\n")?;
        self.written += 1;
        Ok(())
    }

    /// Findings written.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// The writer underneath, to flush or sync it.
    pub fn out_mut(&mut self) -> &mut W {
        &mut self.out
    }

    /// The writer, back.
    pub fn into_inner(self) -> W {
        self.out
    }
}

/// One opened `[[outputs]]` entry: where findings (and, if it takes them, tool calls)
/// go. Each kind is a module here with an `open` function; [`open`] is the registry
/// that maps a config entry to its kind. A new kind is its module, one arm in [`open`]
/// and its `OutputConfig` variant.
pub trait Output: Send {
    /// What it is, for messages.
    fn name(&self) -> &str;

    /// Whether it takes tool calls as well as findings.
    fn wants_tool_calls(&self) -> bool {
        false
    }

    /// Writes (or queues) one finding.
    fn write(&mut self, finding: &Finding) -> Result<()>;

    /// Writes (or queues) one event, if it is a tool call and this output takes them.
    fn write_event(&mut self, _event: &Event) -> Result<()> {
        Ok(())
    }

    /// Makes everything written so far durable: on disk, delivered, or dead-lettered.
    fn flush(&mut self) -> Result<()>;

    /// Flushes and closes.
    fn close(self: Box<Self>) -> Result<()>;
}

/// What opening an output needs besides its own config entry.
pub struct OpenContext<'a> {
    /// `outputs[i]`, for errors.
    pub key: String,
    /// Its position in `[[outputs]]`, which keeps dead-letter files apart.
    pub index: usize,
    /// Where undeliverable records of network outputs go, under `outputs/`.
    pub dead_letter_dir: &'a Path,
}

impl OpenContext<'_> {
    /// The dead-letter file of a network output of `kind` sending to `target`.
    pub fn dead_letter_file(&self, kind: &str, target: &str) -> std::path::PathBuf {
        self.dead_letter_dir.join(format!(
            "outputs/{}-{kind}-{}.dlq.jsonl",
            self.index,
            file_safe(target)
        ))
    }
}

/// The registry of output kinds: opens one `[[outputs]]` entry.
pub fn open(config: &OutputConfig, context: &OpenContext<'_>) -> Result<Box<dyn Output>> {
    match config {
        OutputConfig::File { .. } => file::open(config, context),
        OutputConfig::Syslog { .. } => syslog::open(config, context),
        OutputConfig::Webhook { .. } => webhook::open(config, context),
        OutputConfig::SplunkHec { .. } => hec::open(config, context),
    }
}

/// Opens every output; undeliverable records of network outputs go to files under
/// `dead_letter_dir`.
pub fn open_all(outputs: &[OutputConfig], dead_letter_dir: &Path) -> Result<Vec<Box<dyn Output>>> {
    outputs
        .iter()
        .enumerate()
        .map(|(index, config)| {
            open(
                config,
                &OpenContext {
                    key: format!("outputs[{index}]"),
                    index,
                    dead_letter_dir,
                },
            )
        })
        .collect()
}

/// A file-name-safe form of an address or URL.
fn file_safe(s: &str) -> String {
    s.split_once("://")
        .map_or(s, |(_, rest)| rest)
        .chars()
        .take(80)
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// A finding as a JSON value in one of the JSON renderings.
pub(crate) fn render_json(finding: &Finding, format: FindingFormat) -> serde_json::Value {
    match format {
        FindingFormat::Ocsf => ocsf::detection_finding(finding),
        FindingFormat::Ecs => ecs::alert(finding),
        // Configs refuse CEF for JSON outputs; the finding itself is the fallback.
        FindingFormat::Jsonl | FindingFormat::Cef => {
            serde_json::to_value(finding).unwrap_or_default()
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::{FindingFormat, OutputConfig};
    use serde_json::json;
    use toolgate_protocol::finding::FindingSchema;
    use toolgate_protocol::{DetectorKind, Finding, FindingAction, Severity, Timestamp};

    /// A finding with awkward text in every free-form field.
    pub(crate) fn sample(action: FindingAction) -> Finding {
        Finding {
            schema: FindingSchema::V1,
            finding_id: "0123456789abcdef0123456789abcdef".into(),
            time: Timestamp::parse("2025-03-01T10:00:05.5Z").unwrap(),
            first_seen: Timestamp::parse("2025-03-01T10:00:00Z").unwrap(),
            last_seen: Timestamp::parse("2025-03-01T10:00:05.5Z").unwrap(),
            count: 3,
            detector: DetectorKind::Provenance,
            rule_id: "internal_to_external".into(),
            title: "Data | from mail = sent out".into(),
            description: "line one\nline two with a \\ backslash and a=b".into(),
            severity: Severity::High,
            risk_score: 85,
            confidence: 0.9,
            agent_id: "agent-7".into(),
            session_id: "sess-1".into(),
            server: Some("web".into()),
            tool: Some("post".into()),
            call_id: Some("c-9".into()),
            event_ids: vec!["e1".into(), "e2".into()],
            evidence: json!({"containment": 0.97}),
            tags: vec!["owasp-asi:ASI01".into()],
            action,
            outcome: None,
        }
    }

    #[test]
    fn every_format_renders_one_line() {
        for format in [
            super::FindingFormat::Jsonl,
            super::FindingFormat::Ocsf,
            super::FindingFormat::Ecs,
            super::FindingFormat::Cef,
        ] {
            let line = super::render(&sample(FindingAction::Alert), format);
            assert!(!line.contains('\n'), "{format:?}: {line}");
        }
        assert!(
            super::parse_format("xml")
                .unwrap_err()
                .contains("jsonl, ocsf, ecs or cef")
        );
    }

    #[test]
    fn a_file_output_takes_tool_calls_only_when_asked() {
        let dir = tempfile::tempdir().unwrap();
        let call = toolgate_protocol::Event::decode(
            br#"{"schema":"toolgate.event.v1","kind":"tool_call","event_id":"e1","time":"2025-03-01T10:00:00Z","agent_id":"a","session_id":"s","server":"mail","call_id":"c1","tool":"send","arguments":{"to":"x"}}"#,
        )
        .unwrap();
        let result = toolgate_protocol::Event::decode(
            br#"{"schema":"toolgate.event.v1","kind":"tool_result","event_id":"e2","time":"2025-03-01T10:00:01Z","agent_id":"a","session_id":"s","server":"mail","call_id":"c1","tool":"send","result":{"content":[]}}"#,
        )
        .unwrap();
        let path = |name: &str| dir.path().join(name).display().to_string();
        let configs = [
            (FindingFormat::Ocsf, true, "ocsf-calls"),
            (FindingFormat::Jsonl, true, "jsonl-calls"),
            (FindingFormat::Ocsf, false, "findings-only"),
        ]
        .map(|(format, tool_calls, name)| OutputConfig::File {
            format,
            path: path(name),
            tool_calls,
        });
        for mut out in super::open_all(&configs, dir.path()).unwrap() {
            out.write_event(&call).unwrap();
            out.write_event(&result).unwrap();
            out.write(&sample(FindingAction::Alert)).unwrap();
            out.close().unwrap();
        }
        let lines = |name: &str| -> Vec<serde_json::Value> {
            std::fs::read_to_string(path(name))
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect()
        };
        let ocsf = lines("ocsf-calls");
        assert_eq!(ocsf.len(), 2);
        assert_eq!(ocsf[0]["class_uid"], 6003);
        assert_eq!(ocsf[0]["api"]["request"]["uid"], "c1");
        assert_eq!(ocsf[1]["class_uid"], 2004);
        let jsonl = lines("jsonl-calls");
        assert_eq!(jsonl[0]["event_id"], "e1");
        assert_eq!(jsonl[1]["schema"], "toolgate.finding.v1");
        assert_eq!(lines("findings-only").len(), 1);
    }
}
