//! Renderings of findings for people and SIEMs, shared by `toolgate analyze` and the
//! engine: toolgate's own JSON, OCSF Detection Finding (class 2004), ECS, and CEF.
//! Each rendering is one line per finding, so every output is a stream of lines.

pub mod cef;
pub mod ecs;
pub mod ocsf;

use std::io::Write;

use toolgate_protocol::Finding;
pub use toolgate_protocol::config::FindingFormat;

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

    /// The writer, back.
    pub fn into_inner(self) -> W {
        self.out
    }
}
