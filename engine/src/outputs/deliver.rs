//! Delivery to a network output (a SIEM's collector, a webhook) that may be down: its
//! own thread, a bounded queue, retries with backoff, and a dead-letter file. A record
//! is either delivered or appended to the dead-letter file, never lost: when the queue
//! is full (the collector is down or slow) new records go straight to the file, records
//! the collector refuses for good go there with its answer, and a flush (the engine's
//! checkpoint) waits until the queue is delivered, or moves what is left to the file
//! while the collector is unreachable.

use std::collections::VecDeque;
use std::io::Write;
use std::path::PathBuf;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use toolgate_protocol::{Event, Finding};

use super::Output;

/// How a network output turns findings (and tool calls) into the records it sends.
pub trait Records: Send {
    /// The record of one finding.
    fn finding(&self, finding: &Finding) -> Vec<u8>;

    /// Whether it sends tool calls too.
    fn wants_tool_calls(&self) -> bool {
        false
    }

    /// The record of one tool call, or `None` for events it does not send.
    fn tool_call(&self, _event: &Event) -> Option<Vec<u8>> {
        None
    }
}

/// A network output: records made by `R`, sent by a [`Delivery`] thread.
pub struct Network<R> {
    name: String,
    delivery: Delivery,
    records: R,
}

impl<R: Records + 'static> Network<R> {
    /// Starts delivering `records` through `transport`; see [`Delivery::start`].
    pub fn start(
        name: String,
        transport: Box<dyn Transport>,
        buffer: usize,
        dead_letter_file: PathBuf,
        records: R,
    ) -> Result<Box<dyn Output>> {
        Ok(Box::new(Network {
            name,
            delivery: Delivery::start(transport, buffer, dead_letter_file)?,
            records,
        }))
    }
}

impl<R: Records> Output for Network<R> {
    fn name(&self) -> &str {
        &self.name
    }

    fn wants_tool_calls(&self) -> bool {
        self.records.wants_tool_calls()
    }

    fn write(&mut self, finding: &Finding) -> Result<()> {
        self.delivery.send(self.records.finding(finding))
    }

    fn write_event(&mut self, event: &Event) -> Result<()> {
        if !self.records.wants_tool_calls() {
            return Ok(());
        }
        match self.records.tool_call(event) {
            Some(record) => self.delivery.send(record),
            None => Ok(()),
        }
    }

    fn flush(&mut self) -> Result<()> {
        self.delivery.flush()
    }

    fn close(self: Box<Self>) -> Result<()> {
        self.delivery.close()
    }
}

/// Carries records to one collector.
pub trait Transport: Send {
    /// Delivers a prefix of `records` (never empty), in order; returns how many.
    fn send(&mut self, records: &[Vec<u8>]) -> Result<usize, Failure>;
    /// What it delivers to, for messages.
    fn describe(&self) -> String;
}

/// Why [`Transport::send`] delivered nothing.
#[derive(Debug)]
pub enum Failure {
    /// Worth retrying later (unreachable, busy, timed out).
    Retry(String),
    /// The collector refused the first `count` records for good (a bad request, a
    /// rejected token): they go to the dead-letter file with `reason`.
    Refused {
        /// How many records.
        count: usize,
        /// The collector's answer.
        reason: String,
    },
}

enum Message {
    Record(Vec<u8>),
    Flush(crate::barrier::Reply),
}

/// The sending side.
pub struct Delivery {
    tx: Option<SyncSender<Message>>,
    thread: Option<JoinHandle<()>>,
    dead_letters: DeadLetters,
}

/// Where undeliverable records go: one JSON line each (`{"record": …}`, with
/// `"error"` when the collector refused it).
#[derive(Clone)]
struct DeadLetters {
    path: PathBuf,
}

impl DeadLetters {
    fn append(&self, records: &[Vec<u8>]) -> std::io::Result<()> {
        self.append_refused(records, None)
    }

    fn append_refused(&self, records: &[Vec<u8>], error: Option<&str>) -> std::io::Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        for r in records {
            let mut line = serde_json::json!({"record": String::from_utf8_lossy(r)});
            if let Some(e) = error {
                line["error"] = e.into();
            }
            writeln!(file, "{line}")?;
        }
        file.sync_data()
    }
}

impl Delivery {
    /// Starts delivering through `transport`, with at most `buffer` records queued;
    /// what cannot be delivered goes to `dead_letter_file`.
    pub fn start(
        transport: Box<dyn Transport>,
        buffer: usize,
        dead_letter_file: PathBuf,
    ) -> Result<Delivery> {
        let (tx, rx) = sync_channel(buffer.max(1));
        let dead_letters = DeadLetters {
            path: dead_letter_file,
        };
        let spill = dead_letters.clone();
        let thread = std::thread::Builder::new()
            .name("output".into())
            .spawn(move || deliver(transport, rx, spill))
            .context("starting an output thread")?;
        Ok(Delivery {
            tx: Some(tx),
            thread: Some(thread),
            dead_letters,
        })
    }

    /// Queues a record; when the queue is full, appends it to the dead-letter file.
    pub fn send(&self, record: Vec<u8>) -> Result<()> {
        let tx = self
            .tx
            .as_ref()
            .ok_or_else(|| anyhow!("the output is closed"))?;
        match tx.try_send(Message::Record(record)) {
            Ok(()) => Ok(()),
            Err(
                TrySendError::Full(Message::Record(r))
                | TrySendError::Disconnected(Message::Record(r)),
            ) => self
                .dead_letters
                .append(&[r])
                .with_context(|| format!("cannot write {}", self.dead_letters.path.display())),
            Err(_) => Ok(()),
        }
    }

    /// Returns once every record sent before is delivered or in the dead-letter file.
    pub fn flush(&self) -> Result<()> {
        let tx = self
            .tx
            .as_ref()
            .ok_or_else(|| anyhow!("the output is closed"))?;
        crate::barrier::flush(tx, Message::Flush, "output")
    }

    /// Flushes and stops the thread.
    pub fn close(mut self) -> Result<()> {
        let flushed = self.flush();
        drop(self.tx.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        flushed
    }
}

const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// Refusals are logged at most this often: a rejected token refuses every record.
const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(60);

fn deliver(mut transport: Box<dyn Transport>, rx: Receiver<Message>, dead_letters: DeadLetters) {
    let mut pending: VecDeque<Vec<u8>> = VecDeque::new();
    let mut backoff = Duration::from_millis(100);
    let mut next_attempt = Instant::now();
    let mut said_down = false;
    let mut last_refusal_log: Option<Instant> = None;
    loop {
        let message = if pending.is_empty() {
            match rx.recv() {
                Ok(m) => Some(m),
                Err(_) => return,
            }
        } else {
            match rx.recv_timeout(next_attempt.saturating_duration_since(Instant::now())) {
                Ok(m) => Some(m),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => {
                    let _ = dead_letters.append(pending.make_contiguous());
                    return;
                }
            }
        };
        let mut flush_reply = None;
        match message {
            Some(Message::Record(r)) => pending.push_back(r),
            Some(Message::Flush(reply)) => flush_reply = Some(reply),
            None => {}
        }
        // Take whatever else is queued, so one send can carry a batch.
        while let Ok(m) = rx.try_recv() {
            match m {
                Message::Record(r) => pending.push_back(r),
                Message::Flush(reply) => {
                    flush_reply = Some(reply);
                    break;
                }
            }
        }
        if Instant::now() >= next_attempt || flush_reply.is_some() {
            while !pending.is_empty() {
                let len = pending.len();
                match transport.send(pending.make_contiguous()) {
                    Ok(n) => {
                        pending.drain(..n.clamp(1, len));
                        backoff = Duration::from_millis(100);
                        if said_down {
                            tracing::info!(output = %transport.describe(), "reachable again");
                            said_down = false;
                        }
                    }
                    Err(Failure::Refused { count, reason }) => {
                        let refused: Vec<Vec<u8>> = pending.drain(..count.clamp(1, len)).collect();
                        if last_refusal_log.is_none_or(|t| t.elapsed() >= REFUSAL_LOG_INTERVAL) {
                            tracing::warn!(
                                output = %transport.describe(),
                                records = refused.len(),
                                reason,
                                kept_in = %dead_letters.path.display(),
                                "refused records; they are kept in the dead-letter file"
                            );
                            last_refusal_log = Some(Instant::now());
                        }
                        if let Err(e) = dead_letters.append_refused(&refused, Some(&reason)) {
                            tracing::error!(
                                file = %dead_letters.path.display(),
                                error = %e,
                                "cannot write the dead-letter file"
                            );
                        }
                    }
                    Err(Failure::Retry(e)) => {
                        if !said_down {
                            tracing::warn!(
                                output = %transport.describe(),
                                error = %e,
                                spill_to = %dead_letters.path.display(),
                                "unreachable; retrying, and spilling to the dead-letter file when the buffer is full"
                            );
                            said_down = true;
                        }
                        next_attempt = Instant::now() + backoff;
                        backoff = (backoff * 2).min(BACKOFF_MAX);
                        break;
                    }
                }
            }
        }
        if let Some(reply) = flush_reply {
            // The collector is unreachable: what is pending is kept on disk instead.
            let answer = dead_letters
                .append(pending.make_contiguous())
                .map_err(|e| format!("cannot write {}: {e}", dead_letters.path.display()));
            if answer.is_ok() {
                pending.clear();
            }
            let _ = reply.send(answer);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::net::TcpListener;

    struct Tcp(String, Option<std::net::TcpStream>);

    impl Transport for Tcp {
        fn send(&mut self, records: &[Vec<u8>]) -> Result<usize, Failure> {
            let retry = |e: std::io::Error| Failure::Retry(e.to_string());
            let stream = match &mut self.1 {
                Some(s) => s,
                None => self
                    .1
                    .insert(std::net::TcpStream::connect(&self.0).map_err(retry)?),
            };
            for r in records {
                stream.write_all(r).map_err(retry)?;
            }
            Ok(records.len())
        }
        fn describe(&self) -> String {
            self.0.clone()
        }
    }

    /// Refuses every record whose text starts with `bad`, two at a time.
    struct Picky(std::sync::Arc<std::sync::Mutex<Vec<String>>>);

    impl Transport for Picky {
        fn send(&mut self, records: &[Vec<u8>]) -> Result<usize, Failure> {
            if records[0].starts_with(b"bad") {
                let count = records
                    .iter()
                    .take_while(|r| r.starts_with(b"bad"))
                    .count()
                    .min(2);
                return Err(Failure::Refused {
                    count,
                    reason: "HTTP 400: bad".into(),
                });
            }
            self.0
                .lock()
                .unwrap()
                .push(String::from_utf8_lossy(&records[0]).into_owned());
            Ok(1)
        }
        fn describe(&self) -> String {
            "picky".into()
        }
    }

    #[test]
    fn refused_records_go_to_the_dead_letter_file_with_the_reason_and_the_rest_are_delivered() {
        let dir = tempfile::tempdir().unwrap();
        let dlq = dir.path().join("refused.jsonl");
        let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let d = Delivery::start(Box::new(Picky(got.clone())), 100, dlq.clone()).unwrap();
        for r in ["ok1", "bad1", "bad2", "bad3", "ok2"] {
            d.send(r.as_bytes().to_vec()).unwrap();
        }
        d.close().unwrap();
        assert_eq!(*got.lock().unwrap(), ["ok1", "ok2"]);
        let kept: Vec<serde_json::Value> = std::fs::read_to_string(&dlq)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(kept.len(), 3);
        for (line, want) in kept.iter().zip(["bad1", "bad2", "bad3"]) {
            assert_eq!(line["record"], want);
            assert_eq!(line["error"], "HTTP 400: bad");
        }
    }

    #[test]
    fn records_reach_the_collector_or_the_dead_letter_file_never_neither() {
        let dir = tempfile::tempdir().unwrap();
        let dlq = dir.path().join("out.dlq.jsonl");
        // Nothing listens there: everything must end up in the file.
        let unused = TcpListener::bind("127.0.0.1:0").unwrap();
        let down = unused.local_addr().unwrap().to_string();
        drop(unused);
        let d = Delivery::start(Box::new(Tcp(down, None)), 2, dlq.clone()).unwrap();
        for i in 0..5 {
            d.send(format!("r{i}\n").into_bytes()).unwrap();
        }
        d.flush().unwrap();
        d.close().unwrap();
        let kept = std::fs::read_to_string(&dlq).unwrap();
        for i in 0..5 {
            assert!(kept.contains(&format!("\"r{i}\\n\"")), "{kept}");
        }
        assert_eq!(kept.lines().count(), 5);

        // A listening collector gets them all, in order.
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let up = listener.local_addr().unwrap().to_string();
        let reader = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut text = String::new();
            s.read_to_string(&mut text).unwrap();
            text
        });
        let d =
            Delivery::start(Box::new(Tcp(up, None)), 100, dir.path().join("none.jsonl")).unwrap();
        for i in 0..50 {
            d.send(format!("m{i};").into_bytes()).unwrap();
        }
        d.close().unwrap();
        let got = reader.join().unwrap();
        let want: String = (0..50).map(|i| format!("m{i};")).collect();
        assert_eq!(got, want);
        assert!(!dir.path().join("none.jsonl").exists());
    }
}
