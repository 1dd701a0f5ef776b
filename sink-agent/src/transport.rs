//! Where events go: Kafka through the spool ([`crate::kafka::Shipper`]), a JSONL file
//! (the air-gapped transport), or both. Each event (built and checked by the session) is
//! redacted and encoded by the proxy thread that saw the message, right after the message itself was
//! forwarded, while the peer is busy answering, so the work overlaps with a wait the
//! agent has anyway. The file is flushed every [`FLUSH_INTERVAL`]; the shipper takes
//! events through a channel and never makes the proxy wait.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use toolgate_detectors::secrets::Redactor;

use crate::SinkError;
use crate::kafka::{Shipped, Shipper};

/// How often buffered events are handed to the file.
pub const FLUSH_INTERVAL: std::time::Duration = std::time::Duration::from_millis(100);
use crate::session::{Report, finish_event};

/// What the writer did, for the summary at exit.
#[derive(Debug, Default, Clone, Copy)]
pub struct Written {
    /// Events written.
    pub events: u64,
    /// Events the protocol rejected (not written; the messages themselves passed).
    pub invalid: u64,
    /// What the Kafka shipper did, when events go to Kafka.
    pub shipped: Option<Shipped>,
}

/// Writes the events of a session's reports.
pub struct EventWriter {
    path: Option<PathBuf>,
    file: Option<BufWriter<File>>,
    kafka: Option<Shipper>,
    redactor: Redactor,
    written: Written,
    /// Events are buffered and not yet handed to the file.
    dirty: bool,
}

impl EventWriter {
    /// Events appended to `path` and handed to `kafka`, after `redactor`; with neither
    /// they are discarded (the checks still run).
    pub fn open(
        path: Option<PathBuf>,
        kafka: Option<Shipper>,
        redactor: Redactor,
    ) -> Result<Self, SinkError> {
        let file = match &path {
            Some(p) => {
                let fail = |e| SinkError::Events(p.clone(), e);
                if let Some(dir) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir).map_err(fail)?;
                }
                let f = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)
                    .map_err(fail)?;
                Some(BufWriter::with_capacity(256 * 1024, f))
            }
            None => None,
        };
        Ok(EventWriter {
            path,
            file,
            kafka,
            redactor,
            written: Written::default(),
            dirty: false,
        })
    }

    /// Flushes the file, lets the shipper deliver what it can within its flush timeout,
    /// and says what was written.
    pub fn finish(&mut self) -> Result<Written, SinkError> {
        self.flush()?;
        if let Some(mut shipper) = self.kafka.take() {
            self.written.shipped = Some(shipper.close()?);
        }
        Ok(self.written)
    }

    /// Hands buffered events to the file. The proxy calls it every
    /// [`FLUSH_INTERVAL`] and at the end: a write to the file per message would sit on
    /// the path of every call.
    pub fn flush(&mut self) -> Result<(), SinkError> {
        if let (true, Some(f)) = (self.dirty, self.file.as_mut()) {
            f.flush()
                .map_err(|e| SinkError::Events(self.path.clone().unwrap_or_default(), e))?;
        }
        self.dirty = false;
        Ok(())
    }

    /// Buffers a report's events (see [`EventWriter::flush`]).
    pub fn write(&mut self, report: Report) -> Result<(), SinkError> {
        // Local findings (a changed definition held, say) are for the person running
        // the agent; the engine raises its own from the events.
        for finding in &report.findings {
            tracing::warn!(
                severity = finding.severity.as_str(),
                rule_id = %finding.rule_id,
                title = %finding.title,
                "local finding"
            );
        }
        let fail = |e| SinkError::Events(self.path.clone().unwrap_or_default(), e);
        self.written.invalid += report.invalid_events;
        for event in report.events {
            let event = finish_event(event, &self.redactor);
            self.written.events += 1;
            let json = event.to_json();
            if let Some(f) = self.file.as_mut() {
                f.write_all(json.as_bytes()).map_err(fail)?;
                f.write_all(b"\n").map_err(fail)?;
                self.dirty = true;
            }
            if let Some(k) = &self.kafka {
                k.send(&event.agent_id, json.into_bytes());
            }
        }
        Ok(())
    }
}

/// The event writer shared by the proxy's threads, with the pins file: reports are
/// written after the message they came from was forwarded.
#[derive(Clone)]
pub(crate) struct ReportWriter {
    writer: Arc<Mutex<EventWriter>>,
    /// The first event that cannot be written stops the event stream, not the proxy.
    failed: Arc<AtomicBool>,
    pins_file: Option<PathBuf>,
}

impl ReportWriter {
    pub(crate) fn new(writer: EventWriter, pins_file: Option<PathBuf>) -> Self {
        ReportWriter {
            writer: Arc::new(Mutex::new(writer)),
            failed: Arc::new(AtomicBool::new(false)),
            pins_file,
        }
    }

    /// Saves the pins a report carries and writes its events.
    pub(crate) fn write(&self, mut report: Report) {
        if let (Some(path), Some(pins)) = (&self.pins_file, report.pins.take())
            && let Err(e) = crate::save_pins(path, &pins)
        {
            tracing::error!(error = %e, "saving pins");
        }
        if self.failed.load(Ordering::Relaxed) {
            return;
        }
        if let Ok(mut w) = self.writer.lock()
            && let Err(e) = w.write(report)
            && !self.failed.swap(true, Ordering::Relaxed)
        {
            tracing::error!(
                error = %e,
                "writing events failed; no more are written in this session"
            );
        }
    }

    /// Flushes the file every [`FLUSH_INTERVAL`] until `done`.
    pub(crate) fn start_flusher(
        &self,
        done: Arc<AtomicBool>,
    ) -> Result<std::thread::JoinHandle<()>, SinkError> {
        let writer = self.writer.clone();
        std::thread::Builder::new()
            .name("events-flush".into())
            .spawn(move || {
                while !done.load(Ordering::Relaxed) {
                    std::thread::sleep(FLUSH_INTERVAL);
                    if let Ok(mut w) = writer.lock()
                        && let Err(e) = w.flush()
                    {
                        tracing::error!(error = %e, "flushing events");
                    }
                }
            })
            .map_err(|e| SinkError::Task(e.to_string()))
    }

    /// [`EventWriter::finish`].
    pub(crate) fn finish(&self) -> Result<Written, SinkError> {
        match self.writer.lock() {
            Ok(mut w) => w.finish(),
            Err(_) => Ok(Written::default()),
        }
    }
}
