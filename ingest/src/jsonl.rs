//! `toolgate.event.v1` as JSON Lines: from a file, every `*.jsonl`/`*.ndjson` file under
//! a directory (sorted, gzip accepted), or stdin (`-`). Lines are read with a bound, so
//! one enormous line costs at most the limit in memory; it is rejected, not loaded.

use std::collections::VecDeque;
use std::io::BufRead;
use std::path::{Path, PathBuf};

use toolgate_protocol::Event;

use crate::dead_letter::Rejected;
use crate::kafka::{Polled, RawRecord};
use crate::{IngestError, files_under, open_maybe_gzip};

/// One line's outcome.
#[derive(Debug)]
pub enum SourceItem {
    /// A valid event.
    Event(Box<Event>),
    /// A line that did not decode.
    Rejected(Rejected),
}

/// Reads events from one or more JSONL inputs, in order.
pub struct JsonlSource {
    pending: VecDeque<PathBuf>,
    current: Option<(String, Box<dyn BufRead + Send>)>,
    line: u64,
    max_bytes: usize,
    buf: Vec<u8>,
    blank_lines: u64,
    /// The names of the inputs read to their end, in order.
    done: Vec<String>,
}

const EXTENSIONS: [&str; 4] = [".jsonl", ".ndjson", ".jsonl.gz", ".ndjson.gz"];

impl JsonlSource {
    /// Opens `input`: a file, a directory of JSONL files, or `-` for stdin.
    /// Lines longer than `max_bytes` are rejected as too large.
    pub fn open(input: &str, max_bytes: usize) -> Result<Self, IngestError> {
        let mut source = JsonlSource {
            pending: VecDeque::new(),
            current: None,
            line: 0,
            max_bytes,
            buf: Vec::new(),
            blank_lines: 0,
            done: Vec::new(),
        };
        if input == "-" {
            let stdin = Box::new(std::io::BufReader::new(std::io::stdin()));
            return Ok(Self::from_reader("-", stdin, max_bytes));
        }
        let path = Path::new(input);
        let meta = std::fs::metadata(path).map_err(|e| IngestError::io(input, e))?;
        if meta.is_dir() {
            let files = files_under(path, &|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|name| EXTENSIONS.iter().any(|ext| name.ends_with(ext)))
            })?;
            if files.is_empty() {
                return Err(IngestError::Input {
                    path: input.into(),
                    message: format!("no files ending in {} here", EXTENSIONS.join(", ")),
                });
            }
            source.pending.extend(files);
        } else {
            source.pending.push_back(path.to_path_buf());
        }
        Ok(source)
    }

    /// Reads events from an already open reader; `name` is the source in dead letters.
    pub fn from_reader(name: &str, reader: Box<dyn BufRead + Send>, max_bytes: usize) -> Self {
        JsonlSource {
            pending: VecDeque::new(),
            current: Some((name.to_string(), reader)),
            line: 0,
            max_bytes,
            buf: Vec::new(),
            blank_lines: 0,
            done: Vec::new(),
        }
    }

    /// Lines that were empty or whitespace only (not events, not errors).
    pub fn blank_lines(&self) -> u64 {
        self.blank_lines
    }

    /// Reads the next line into `self.buf`, keeping at most `max_bytes + 1` bytes of it.
    /// Returns the line's full length, or `None` at the end of the current input.
    fn read_line(&mut self) -> Result<Option<usize>, IngestError> {
        self.buf.clear();
        let Some((name, reader)) = self.current.as_mut() else {
            return Ok(None);
        };
        let mut total = 0usize;
        loop {
            let chunk = reader
                .fill_buf()
                .map_err(|e| IngestError::io(name.clone(), e))?;
            if chunk.is_empty() {
                return Ok((total > 0).then_some(total));
            }
            let (used, done) = match chunk.iter().position(|&b| b == b'\n') {
                Some(i) => (i + 1, true),
                None => (chunk.len(), false),
            };
            let content = if done { &chunk[..used - 1] } else { chunk };
            let room = (self.max_bytes + 1).saturating_sub(self.buf.len());
            self.buf
                .extend_from_slice(&content[..content.len().min(room)]);
            total += content.len();
            reader.consume(used);
            if done {
                return Ok(Some(total));
            }
        }
    }
}

impl JsonlSource {
    /// The next line that is not blank, undecoded: its partition is the file's place
    /// among the inputs (see [`JsonlSource::origin`]), its offset the line's number
    /// (from 1), and a line over the limit keeps `max_bytes + 1` of its bytes.
    pub fn next_record(&mut self) -> Option<Result<RawRecord, IngestError>> {
        loop {
            if self.current.is_none() {
                let path = self.pending.pop_front()?;
                match open_maybe_gzip(&path) {
                    Ok(reader) => self.current = Some((path.display().to_string(), reader)),
                    Err(e) => return Some(Err(e)),
                }
                self.line = 0;
            }
            let len = match self.read_line() {
                Ok(Some(len)) => len,
                Ok(None) => {
                    if let Some((name, _)) = self.current.take() {
                        self.done.push(name);
                    }
                    continue;
                }
                Err(e) => {
                    self.current = None;
                    return Some(Err(e));
                }
            };
            self.line += 1;
            let mut len = len;
            if self.buf.last() == Some(&b'\r') && len <= self.max_bytes {
                self.buf.pop();
                len -= 1;
            }
            if self.buf.iter().all(u8::is_ascii_whitespace) && len <= self.max_bytes {
                self.blank_lines += 1;
                continue;
            }
            return Some(Ok(RawRecord {
                partition: i32::try_from(self.done.len()).unwrap_or(i32::MAX),
                offset: i64::try_from(self.line).unwrap_or(i64::MAX),
                key: None,
                payload: self.buf.clone(),
                length: len,
            }));
        }
    }

    /// The name of the input a record's partition is (the file, `-` for stdin).
    pub fn origin(&self, partition: i32) -> &str {
        let done = usize::try_from(partition).unwrap_or(usize::MAX);
        match self.done.get(done) {
            Some(name) => name,
            None => self.current.as_ref().map_or("", |(name, _)| name),
        }
    }
}

impl Iterator for JsonlSource {
    type Item = Result<SourceItem, IngestError>;

    fn next(&mut self) -> Option<Self::Item> {
        let record = match self.next_record()? {
            Ok(record) => record,
            Err(e) => return Some(Err(e)),
        };
        let (max_bytes, partition) = (self.max_bytes, record.partition);
        Some(Ok(
            match record.decode(self.origin(partition), max_bytes, max_bytes) {
                Polled::Event { event, .. } => SourceItem::Event(event),
                Polled::Rejected(rejected) => {
                    SourceItem::Rejected(Rejected::from_record(*rejected))
                }
            },
        ))
    }
}
