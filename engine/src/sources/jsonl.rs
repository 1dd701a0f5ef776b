//! The `jsonl` input: `toolgate.event.v1` lines from a file, the `*.jsonl`/`*.ndjson`
//! files of a directory (sorted, gzip accepted) or stdin (`-`), read once to their
//! end; `toolgate analyze`'s input. Each file is a partition (its place in the order)
//! and each line's number its offset, so a dead letter names the file and the line.

use std::time::Duration;

use anyhow::{Result, anyhow};
use toolgate_ingest::{IngestError, JsonlSource};

use super::{Input, InputContext, Next};

/// Opens the location the command line names; lines over `[limits] max_event_bytes`
/// are read only up to the limit.
pub fn open(context: &InputContext<'_>) -> Result<Box<dyn Input>> {
    let location = context
        .location
        .ok_or_else(|| anyhow!("the jsonl input reads a file, a directory or -"))?;
    Ok(Box::new(JsonlSource::open(
        location,
        context.config.limits.max_event_bytes,
    )?))
}

impl Input for JsonlSource {
    fn kind(&self) -> &'static str {
        "jsonl"
    }

    /// Reading a file never waits: the timeout is for inputs that can be idle.
    fn next(&mut self, _timeout: Duration) -> Result<Next, IngestError> {
        Ok(match self.next_record() {
            Some(record) => Next::Record(record?),
            None => Next::Ended,
        })
    }

    fn origin(&self, partition: i32) -> &str {
        JsonlSource::origin(self, partition)
    }

    /// A file is read once; there is nothing to forget.
    fn commit(&mut self, _positions: &[(i32, i64)]) -> Result<(), IngestError> {
        Ok(())
    }

    fn skipped(&self) -> u64 {
        self.blank_lines()
    }
}
