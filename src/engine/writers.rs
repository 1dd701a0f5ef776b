//! The engine's writers off the hot path: the Parquet history and the `[[outputs]]`
//! files, on one thread fed through a bounded channel (a slow disk slows the workers
//! down rather than growing memory). [`flush`] is the barrier a checkpoint
//! waits on: every row sent before it is durable when it returns.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

use anyhow::{Context, Result, anyhow};
use toolgate_analytics::history::{HistoryStats, HistoryWriter};
use toolgate_protocol::config::OutputConfig;
use toolgate_protocol::decision::Decision;
use toolgate_protocol::{Event, Finding};

use super::metrics::Gauges;
use crate::outputs::Output;

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

/// The writer thread's handle.
pub struct Writers {
    tx: Option<SyncSender<Row>>,
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
        let files = Output::open_all(outputs, dead_letter_dir)?;
        let wants_events = history.is_some() || files.iter().any(Output::wants_tool_calls);
        let (tx, rx) = sync_channel(8192);
        let thread = std::thread::Builder::new()
            .name("writers".into())
            .spawn(move || write_loop(rx, history, files, watcher, &gauges))
            .context("starting the writer thread")?;
        Ok(Writers {
            tx: Some(tx),
            thread: Some(thread),
            wants_events,
        })
    }

    /// A sender for the workers.
    pub fn sender(&self) -> Result<SyncSender<Row>> {
        self.tx
            .clone()
            .ok_or_else(|| anyhow!("the writers are closed"))
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

/// Sends a flush through `tx` and waits until every row sent before is durable.
pub fn flush(tx: &SyncSender<Row>) -> Result<()> {
    crate::barrier::flush(tx, Row::Flush, "writer")
}

fn write_loop(
    rx: Receiver<Row>,
    mut history: Option<HistoryWriter>,
    mut files: Vec<Output>,
    mut watcher: Option<Watcher>,
    gauges: &Gauges,
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
            failed = Some(format!("{e:#}"));
        }
    }
    if let Some(e) = failed {
        return Err(anyhow!(e));
    }
    for w in files {
        w.close()?;
    }
    history
        .map(|h| h.close_all().context("closing the history"))
        .transpose()
}
