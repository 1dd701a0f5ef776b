//! Dead letters: input that failed to decode, kept with its error and original bytes.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::Serialize;
use toolgate_protocol::DecodeError;

use crate::IngestError;
use crate::kafka::KafkaRejected;

/// One record that could not be decoded.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejected {
    /// Where it came from (file name, `-` for stdin).
    pub source: String,
    /// 1-based line number in that source.
    pub line: u64,
    /// Why it was rejected.
    pub error: DecodeError,
    /// The original bytes, up to the size limit (see `raw_len`).
    pub raw: Vec<u8>,
    /// The full length of the original record in bytes.
    pub raw_len: usize,
}

impl Rejected {
    /// A record of a file that did not decode (its origin is the file, its offset
    /// the line's number).
    pub fn from_record(record: KafkaRejected) -> Self {
        Rejected {
            source: record.topic,
            line: u64::try_from(record.offset).unwrap_or(0),
            error: record.error,
            raw: record.raw,
            raw_len: record.raw_len,
        }
    }
}

#[derive(Serialize)]
struct DeadLetterRecord<'a> {
    source: &'a str,
    line: u64,
    error_kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<&'a str>,
    error: String,
    /// The original text: redacted (any invalid UTF-8 replaced), or with `keep_raw`
    /// exactly as it came when it is UTF-8.
    #[serde(skip_serializing_if = "Option::is_none")]
    raw: Option<std::borrow::Cow<'a, str>>,
    /// The original bytes in base64, when they are not UTF-8.
    #[serde(skip_serializing_if = "Option::is_none")]
    raw_base64: Option<String>,
    raw_bytes: usize,
    raw_truncated: bool,
    /// `raw` and `error` went through the redactor.
    redacted: bool,
}

/// Replaces secrets in text in place (the `[redaction]` redactor; ingest has no
/// detection logic of its own).
/// Returns how many values it replaced.
pub type RedactFn = Box<dyn Fn(&mut String) -> usize + Send + Sync>;

/// Appends rejected records to a JSONL file, one object per record.
pub struct DeadLetterWriter {
    path: String,
    out: std::io::BufWriter<std::fs::File>,
    written: u64,
    redact: Option<RedactFn>,
}

impl DeadLetterWriter {
    /// Creates (or truncates) the dead-letter file.
    pub fn create(path: &Path) -> Result<Self, IngestError> {
        let file = std::fs::File::create(path)
            .map_err(|e| IngestError::io(path.display().to_string(), e))?;
        Ok(DeadLetterWriter {
            path: path.display().to_string(),
            out: std::io::BufWriter::new(file),
            written: 0,
            redact: None,
        })
    }

    /// Redacts every record's error and bytes with `redact` (`[dead_letter] keep_raw =
    /// false`, the default): bytes that held a secret are kept as redacted text
    /// (invalid UTF-8 replaced), the others exactly as they came.
    pub fn redacting(mut self, redact: RedactFn) -> Self {
        self.redact = Some(redact);
        self
    }

    /// Writes one record.
    pub fn write(&mut self, r: &Rejected) -> Result<(), IngestError> {
        let mut error = r.error.to_string();
        let mut redacted_text = None;
        if let Some(redact) = &self.redact {
            redact(&mut error);
            let mut text = String::from_utf8_lossy(&r.raw).into_owned();
            if redact(&mut text) > 0 {
                redacted_text = Some(text);
            }
        }
        let (raw, raw_base64) = match redacted_text {
            Some(text) => (Some(std::borrow::Cow::Owned(text)), None),
            None => match std::str::from_utf8(&r.raw) {
                Ok(text) => (Some(std::borrow::Cow::Borrowed(text)), None),
                Err(_) => (None, Some(B64.encode(&r.raw))),
            },
        };
        let record = DeadLetterRecord {
            source: &r.source,
            line: r.line,
            error_kind: r.error.kind(),
            field: r.error.field(),
            error,
            raw,
            raw_base64,
            raw_bytes: r.raw_len,
            raw_truncated: r.raw.len() < r.raw_len,
            redacted: self.redact.is_some(),
        };
        let line = serde_json::to_string(&record).unwrap_or_default();
        writeln!(self.out, "{line}").map_err(|e| IngestError::io(self.path.clone(), e))?;
        self.written += 1;
        Ok(())
    }

    /// Records written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Flushes to disk.
    pub fn finish(mut self) -> Result<u64, IngestError> {
        self.out
            .flush()
            .map_err(|e| IngestError::io(self.path.clone(), e))?;
        Ok(self.written)
    }
}

/// Rejected records counted by cause.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct RejectCounts {
    /// Total rejected.
    pub total: u64,
    /// By [`DecodeError::kind`].
    pub by_kind: BTreeMap<&'static str, u64>,
}

impl RejectCounts {
    /// Counts one rejection.
    pub fn add(&mut self, error: &DecodeError) {
        self.total += 1;
        *self.by_kind.entry(error.kind()).or_default() += 1;
    }
}
