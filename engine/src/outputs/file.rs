//! `type = "file"`: findings (and tool calls, if asked) appended to a file, one
//! rendered record per line, synced at every flush.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};

use anyhow::{Context, Result};
use toolgate_protocol::config::OutputConfig;
use toolgate_protocol::{Event, Finding};

use super::{FindingWriter, OpenContext, Output, render_tool_call};

/// An open file output.
pub struct FileOutput {
    writer: FindingWriter<BufWriter<File>>,
    tool_calls: bool,
}

/// Opens a `file` entry: created if missing, appended to otherwise.
pub fn open(config: &OutputConfig, _context: &OpenContext<'_>) -> Result<Box<dyn Output>> {
    let OutputConfig::File {
        format,
        path,
        tool_calls,
    } = config
    else {
        anyhow::bail!("not a file output");
    };
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("cannot open output {path}"))?;
    Ok(Box::new(FileOutput {
        writer: FindingWriter::new(path.clone(), *format, BufWriter::new(file)),
        tool_calls: *tool_calls,
    }))
}

impl Output for FileOutput {
    fn name(&self) -> &str {
        self.writer.name()
    }

    fn wants_tool_calls(&self) -> bool {
        self.tool_calls
    }

    fn write(&mut self, finding: &Finding) -> Result<()> {
        self.writer
            .write(finding)
            .with_context(|| format!("writing findings to {}", self.writer.name()))
    }

    fn write_event(&mut self, event: &Event) -> Result<()> {
        if !self.tool_calls {
            return Ok(());
        }
        let Some(line) = render_tool_call(event, self.writer.format) else {
            return Ok(());
        };
        let name = self.writer.name().to_string();
        let out = self.writer.out_mut();
        out.write_all(line.as_bytes())
            .and_then(|()| out.write_all(b"\n"))
            .with_context(|| format!("writing tool calls to {name}"))
    }

    fn flush(&mut self) -> Result<()> {
        let name = self.writer.name().to_string();
        let out = self.writer.out_mut();
        out.flush()
            .and_then(|()| out.get_ref().sync_data())
            .with_context(|| format!("writing findings to {name}"))
    }

    fn close(mut self: Box<Self>) -> Result<()> {
        self.flush()
    }
}
