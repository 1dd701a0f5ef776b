//! Renderings of findings for people and SIEMs, shared by `toolgate analyze` and the
//! engine: toolgate's own JSON, OCSF Detection Finding (class 2004), ECS, and CEF.
//! Each rendering is one line per finding, so every output is a stream of lines.

pub mod cef;
pub mod deliver;
pub mod ecs;
pub mod ocsf;
pub mod syslog;

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::Path;

use anyhow::{Context, Result};
use toolgate_protocol::Finding;
pub use toolgate_protocol::config::FindingFormat;
use toolgate_protocol::config::OutputConfig;

use deliver::Delivery;

/// toolgate's version, as SIEM formats report the product version.
pub const PRODUCT_VERSION: &str = env!("CARGO_PKG_VERSION");

/// One finding rendered in `format`, without a trailing newline.
pub fn render(finding: &Finding, format: FindingFormat) -> String {
    match format {
        FindingFormat::Jsonl => finding.to_json(),
        FindingFormat::Ocsf => ocsf::detection_finding(finding).to_string(),
        FindingFormat::Ecs => ecs::alert(finding).to_string(),
        FindingFormat::Cef => cef::line(finding),
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

/// One opened `[[outputs]]` entry.
pub enum Output {
    /// Appended to a file.
    File(FindingWriter<BufWriter<File>>),
    /// Sent to a syslog collector.
    Syslog {
        /// The delivery thread.
        delivery: Delivery,
        /// How messages are headed.
        header: syslog::Header,
        /// The message body.
        format: FindingFormat,
        /// For messages.
        name: String,
    },
}

impl Output {
    /// Opens every output; undeliverable records of network outputs go to files under
    /// `dead_letter_dir`.
    pub fn open_all(outputs: &[OutputConfig], dead_letter_dir: &Path) -> Result<Vec<Output>> {
        let mut opened = Vec::new();
        for (i, o) in outputs.iter().enumerate() {
            opened.push(match o {
                OutputConfig::File { format, path } => {
                    let file = OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(path)
                        .with_context(|| format!("cannot open output {path}"))?;
                    Output::File(FindingWriter::new(
                        path.clone(),
                        *format,
                        BufWriter::new(file),
                    ))
                }
                OutputConfig::Syslog {
                    address,
                    transport,
                    format,
                    ca_file,
                    server_name,
                    facility,
                    app_name,
                    buffer,
                } => {
                    let connect = syslog::SyslogConnect::new(
                        address,
                        *transport,
                        ca_file.as_deref(),
                        server_name.as_deref(),
                    )
                    .with_context(|| format!("outputs[{i}]"))?;
                    let safe: String = address
                        .chars()
                        .map(|c| {
                            if c.is_ascii_alphanumeric() || c == '.' {
                                c
                            } else {
                                '_'
                            }
                        })
                        .collect();
                    let dead_letter_file =
                        dead_letter_dir.join(format!("outputs/{i}-syslog-{safe}.dlq.jsonl"));
                    Output::Syslog {
                        name: format!("outputs[{i}] (syslog {address})"),
                        delivery: Delivery::start(Box::new(connect), *buffer, dead_letter_file)?,
                        header: syslog::Header {
                            facility: *facility,
                            hostname: syslog::hostname(),
                            app_name: app_name.clone(),
                        },
                        format: *format,
                    }
                }
            });
        }
        Ok(opened)
    }

    /// What it is, for messages.
    pub fn name(&self) -> &str {
        match self {
            Output::File(w) => w.name(),
            Output::Syslog { name, .. } => name,
        }
    }

    /// Writes (or queues) one finding.
    pub fn write(&mut self, finding: &Finding) -> Result<()> {
        match self {
            Output::File(w) => w
                .write(finding)
                .with_context(|| format!("writing findings to {}", w.name())),
            Output::Syslog {
                delivery,
                header,
                format,
                ..
            } => delivery.send(syslog::frame(header, finding, *format)),
        }
    }

    /// Makes everything written so far durable: on disk, delivered, or dead-lettered.
    pub fn flush(&mut self) -> Result<()> {
        match self {
            Output::File(w) => {
                let name = w.name().to_string();
                let out = w.out_mut();
                out.flush()
                    .and_then(|()| out.get_ref().sync_data())
                    .with_context(|| format!("writing findings to {name}"))
            }
            Output::Syslog { delivery, .. } => delivery.flush(),
        }
    }

    /// Flushes and closes.
    pub fn close(mut self) -> Result<()> {
        self.flush()?;
        match self {
            Output::File(_) => Ok(()),
            Output::Syslog { delivery, .. } => delivery.close(),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
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
}
