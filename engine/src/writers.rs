//! The writers off the hot path, for the stream and the replay alike: the Parquet
//! history and the `[[outputs]]`, on one thread fed through a bounded channel (a slow
//! disk slows the detectors down rather than growing memory). [`RowSender::flush`] is
//! the barrier a checkpoint waits on: every row sent before it is durable when it
//! returns.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;

use anyhow::{Context, Result, anyhow};
use toolgate_analytics::history::{HistoryStats, HistoryWriter};
use toolgate_protocol::config::OutputConfig;
use toolgate_protocol::decision::Decision;
use toolgate_protocol::{Event, Finding};

use super::metrics::Gauges;
use crate::outputs::{self, Output};

/// What the writers receive.
pub enum Row {
    /// An event, for the history and the outputs that take tool calls.
    Event(Box<Event>),
    /// A finding, for the history and the outputs.
    Finding(Box<Finding>),
    /// A decision, for the history.
    Decision(Box<Decision>),
    /// Make everything before this durable, then answer.
    Flush(crate::barrier::Reply),
}

/// Sees every finding and decision as it is written (the demo prints them).
pub type Watcher = Box<dyn FnMut(&Row) + Send>;

/// Where rows go to the writer thread, counted in the writer queue's gauge until the
/// thread takes them.
#[derive(Clone)]
pub struct RowSender {
    tx: SyncSender<Row>,
    gauges: Arc<Gauges>,
    failed: Arc<OnceLock<String>>,
}

impl RowSender {
    /// Queues a row; waits while the queue is full. Fails once the writers have failed
    /// (so a replay stops at the first write error instead of reading on for nothing)
    /// or the thread has stopped; the stream, which must go on deciding, ignores that
    /// and meets the error at its next checkpoint ([`RowSender::flush`]).
    pub fn send(&self, row: Row) -> Result<()> {
        if let Some(e) = self.failed.get() {
            return Err(anyhow!("the writers failed: {e}"));
        }
        self.gauges.writer_queue.fetch_add(1, Ordering::Relaxed);
        self.tx
            .send(row)
            .map_err(|_| anyhow!("the writer thread stopped"))
    }

    /// Waits until every row sent before is durable, or returns the writers' error.
    pub fn flush(&self) -> Result<()> {
        crate::barrier::flush(&self.tx, Row::Flush, "writer")
    }
}

/// The writer thread's handle.
pub struct Writers {
    tx: Option<SyncSender<Row>>,
    gauges: Arc<Gauges>,
    failed: Arc<OnceLock<String>>,
    thread: Option<JoinHandle<Result<Option<HistoryStats>>>>,
    wants_events: bool,
}

impl Writers {
    /// Opens the outputs and starts the thread; `history` is `None` to keep none.
    pub fn start(
        history: Option<HistoryWriter>,
        outputs: &[OutputConfig],
        dead_letter_dir: &Path,
        watcher: Option<Watcher>,
        gauges: Arc<Gauges>,
    ) -> Result<Self> {
        let files = outputs::open_all(outputs, dead_letter_dir)?;
        let wants_events = history.is_some() || files.iter().any(|o| o.wants_tool_calls());
        let (tx, rx) = sync_channel(8192);
        let counted = Arc::clone(&gauges);
        let failed = Arc::new(OnceLock::new());
        let said = Arc::clone(&failed);
        let thread = std::thread::Builder::new()
            .name("writers".into())
            .spawn(move || write_loop(rx, history, files, watcher, &counted, &said))
            .context("starting the writer thread")?;
        Ok(Writers {
            tx: Some(tx),
            gauges,
            failed,
            thread: Some(thread),
            wants_events,
        })
    }

    /// A sender for the workers or the replay.
    pub fn sender(&self) -> Result<RowSender> {
        let tx = self
            .tx
            .clone()
            .ok_or_else(|| anyhow!("the writers are closed"))?;
        Ok(RowSender {
            tx,
            gauges: Arc::clone(&self.gauges),
            failed: Arc::clone(&self.failed),
        })
    }

    /// Whether events are kept (the history is on, or an output takes tool calls);
    /// otherwise only findings and decisions need sending.
    pub fn wants_events(&self) -> bool {
        self.wants_events
    }

    /// Flushes, stops the thread and returns the history's counters.
    pub fn close(mut self) -> Result<Option<HistoryStats>> {
        drop(self.tx.take());
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(r)) => r,
            Some(Err(_)) => Err(anyhow!("the writer thread panicked")),
            None => Ok(None),
        }
    }
}

fn write_loop(
    rx: Receiver<Row>,
    mut history: Option<HistoryWriter>,
    mut files: Vec<Box<dyn Output>>,
    mut watcher: Option<Watcher>,
    gauges: &Gauges,
    said: &OnceLock<String>,
) -> Result<Option<HistoryStats>> {
    // After an error the thread keeps draining (so senders never block for ever) and
    // reports the error at the next flush and at close.
    let mut failed: Option<String> = None;
    for row in rx {
        if !matches!(row, Row::Flush(_)) {
            gauges.writer_queue.fetch_sub(1, Ordering::Relaxed);
        }
        if let Some(w) = watcher.as_mut() {
            w(&row);
        }
        let result = match &row {
            Row::Event(e) => {
                let mut r = history
                    .as_mut()
                    .map_or(Ok(()), |h| h.append_event(e).context("writing the history"));
                for w in &mut files {
                    if r.is_ok() {
                        r = w.write_event(e);
                    }
                }
                r
            }
            Row::Finding(f) => {
                let mut r = history.as_mut().map_or(Ok(()), |h| {
                    h.append_finding(f).context("writing the history")
                });
                for w in &mut files {
                    if r.is_ok() {
                        r = w.write(f);
                    }
                }
                r
            }
            Row::Decision(d) => history.as_mut().map_or(Ok(()), |h| {
                h.append_decision(d).context("writing the history")
            }),
            Row::Flush(reply) => {
                let mut r = history
                    .as_mut()
                    .map_or(Ok(()), |h| h.commit().context("committing the history"));
                for w in &mut files {
                    if r.is_ok() {
                        r = w.flush();
                    }
                }
                let answer = match (&failed, r) {
                    (Some(e), _) => Err(e.clone()),
                    (None, Err(e)) => Err(format!("{e:#}")),
                    (None, Ok(())) => Ok(()),
                };
                let _ = reply.send(answer);
                continue;
            }
        };
        if let Err(e) = result
            && failed.is_none()
        {
            tracing::error!(error = format!("{e:#}"), "writers failed");
            let _ = said.set(format!("{e:#}"));
            failed = Some(format!("{e:#}"));
        }
    }
    // Everything is closed whatever failed, so that what was written is kept (one
    // refused webhook must not cost the history); the first error is returned.
    let mut first = failed.map(|e| anyhow!(e));
    for w in files {
        let name = w.name().to_string();
        if let Err(e) = w.close().with_context(|| format!("closing {name}")) {
            first.get_or_insert(e);
        }
    }
    let stats = match history.map(|h| h.close_all().context("closing the history")) {
        Some(Ok(stats)) => Some(stats),
        Some(Err(e)) => {
            first.get_or_insert(e);
            None
        }
        None => None,
    };
    match first {
        Some(e) => Err(e),
        None => Ok(stats),
    }
}
