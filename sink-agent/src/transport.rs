//! Where events go. For now the JSONL file transport (air-gapped use): one event per
//! line, appended by a task of its own so a slow disk never stalls the MCP stream.

use std::path::PathBuf;

use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

use crate::SinkError;
use crate::session::Report;

/// Writes the events of a session's reports.
pub struct EventWriter {
    path: Option<PathBuf>,
}

impl EventWriter {
    /// Events appended to `path`; `None` discards them (checks still run).
    pub fn new(path: Option<PathBuf>) -> Self {
        EventWriter { path }
    }

    /// Writes until every sender is gone; returns how many events were written.
    pub async fn run(self, mut reports: mpsc::UnboundedReceiver<Report>) -> Result<u64, SinkError> {
        let mut file = match &self.path {
            Some(path) => {
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    tokio::fs::create_dir_all(dir)
                        .await
                        .map_err(|e| SinkError::Events(path.clone(), e))?;
                }
                Some(
                    tokio::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(path)
                        .await
                        .map_err(|e| SinkError::Events(path.clone(), e))?,
                )
            }
            None => None,
        };
        let mut written = 0u64;
        let mut buf = Vec::new();
        while let Some(report) = reports.recv().await {
            // Local findings (a changed definition held, say) are for the person
            // running the agent; the engine raises its own from the events.
            for finding in &report.findings {
                eprintln!(
                    "toolgate-sink: {} finding {}: {}",
                    finding.severity.as_str(),
                    finding.rule_id,
                    finding.title
                );
            }
            for event in &report.events {
                buf.extend_from_slice(event.to_json().as_bytes());
                buf.push(b'\n');
                written += 1;
            }
            if let (Some(f), Some(path)) = (file.as_mut(), &self.path)
                && reports.is_empty()
                && !buf.is_empty()
            {
                f.write_all(&buf)
                    .await
                    .map_err(|e| SinkError::Events(path.clone(), e))?;
                buf.clear();
            }
        }
        if let (Some(f), Some(path)) = (file.as_mut(), &self.path) {
            f.write_all(&buf)
                .await
                .map_err(|e| SinkError::Events(path.clone(), e))?;
            f.flush()
                .await
                .map_err(|e| SinkError::Events(path.clone(), e))?;
        }
        Ok(written)
    }
}
