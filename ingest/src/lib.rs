//! toolgate's sources: where events come from and how they are decoded.
//!
//! - [`jsonl`]: `toolgate.event.v1` lines from files, directories or stdin (gzip
//!   accepted), each line decoded or turned into a [`Rejected`] record;
//! - [`dead_letter`]: where rejected input goes, with its error and original bytes, so
//!   nothing that failed to decode is lost or skipped silently;
//! - [`kafka`]: the engine's consumer group member on the events topic, decoding each
//!   record or handing it back for the dead-letter topic, with rebalance hooks;
//! - [`otlp`]: OpenTelemetry traces over OTLP/HTTP, whose GenAI tool spans become
//!   events;
//! - [`agentdojo`]: the importer for recorded AgentDojo runs;
//! - [`corpora`]: importers for MCP-SafetyBench and InjecAgent samples.
//!
//! Sources decode and route; they hold no detection logic.
#![deny(missing_docs)]

pub mod agentdojo;
pub mod corpora;
pub mod dead_letter;
pub mod jsonl;
pub mod kafka;
pub mod otlp;
pub mod sigma;
pub mod texts;

pub use dead_letter::{DeadLetterWriter, RejectCounts, Rejected};
pub use jsonl::{JsonlSource, SourceItem};

/// An input or output could not be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IngestError {
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The Kafka client failed.
    #[error("kafka: {what}: {message}")]
    Kafka {
        /// What was being done.
        what: String,
        /// The client's message.
        message: String,
    },
    /// An input path names nothing readable as events.
    #[error("{path}: {message}")]
    Input {
        /// The path.
        path: String,
        /// What is wrong.
        message: String,
    },
}

impl IngestError {
    pub(crate) fn io(path: impl Into<String>, source: std::io::Error) -> Self {
        IngestError::Io {
            path: path.into(),
            source,
        }
    }
}

/// Opens a file for reading, transparently gunzipping it if it starts with the gzip
/// magic bytes (whatever its name).
pub(crate) fn open_maybe_gzip(
    path: &std::path::Path,
) -> Result<Box<dyn std::io::BufRead + Send>, IngestError> {
    use std::io::{BufRead, BufReader};
    let file =
        std::fs::File::open(path).map_err(|e| IngestError::io(path.display().to_string(), e))?;
    let mut reader = BufReader::with_capacity(256 * 1024, file);
    let head = reader
        .fill_buf()
        .map_err(|e| IngestError::io(path.display().to_string(), e))?;
    if head.starts_with(&[0x1f, 0x8b]) {
        Ok(Box::new(BufReader::with_capacity(
            256 * 1024,
            flate2::bufread::MultiGzDecoder::new(reader),
        )))
    } else {
        Ok(Box::new(reader))
    }
}

/// Every file under `dir` (recursively) that `keep` accepts, sorted by path so inputs
/// are read in the same order on every machine.
pub(crate) fn files_under(
    dir: &std::path::Path,
    keep: &dyn Fn(&std::path::Path) -> bool,
) -> Result<Vec<std::path::PathBuf>, IngestError> {
    fn walk(
        dir: &std::path::Path,
        keep: &dyn Fn(&std::path::Path) -> bool,
        out: &mut Vec<std::path::PathBuf>,
    ) -> Result<(), IngestError> {
        let io = |e| IngestError::io(dir.display().to_string(), e);
        for entry in std::fs::read_dir(dir).map_err(io)? {
            let path = entry.map_err(io)?.path();
            if path.is_dir() {
                walk(&path, keep, out)?;
            } else if keep(&path) {
                out.push(path);
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(dir, keep, &mut out)?;
    out.sort();
    Ok(out)
}
