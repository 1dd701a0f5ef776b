//! Delivery to a network output (a SIEM's collector) that may be down: its own thread,
//! a bounded queue, reconnection with backoff, and a dead-letter file. A record is
//! either written to the connection or appended to the dead-letter file, never lost:
//! when the queue is full (the collector is down or slow) new records go straight to
//! the file, and a flush (the engine's checkpoint) waits until the queue is delivered,
//! or moves what is left to the file while the collector is unreachable.

use std::io::Write;
use std::path::PathBuf;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};

/// Opens a connection to the collector.
pub trait Connect: Send {
    /// A new connection.
    fn connect(&mut self) -> std::io::Result<Box<dyn Write + Send>>;
    /// What it connects to, for messages.
    fn describe(&self) -> String;
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

/// Where undeliverable records go: one JSON line each (`{"record": …}`).
#[derive(Clone)]
struct DeadLetters {
    path: PathBuf,
}

impl DeadLetters {
    fn append(&self, records: &[Vec<u8>]) -> std::io::Result<()> {
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
            let line = serde_json::json!({"record": String::from_utf8_lossy(r)});
            writeln!(file, "{line}")?;
        }
        file.sync_data()
    }
}

impl Delivery {
    /// Starts delivering through `connect`, with at most `buffer` records queued;
    /// what cannot be delivered goes to `dead_letter_file`.
    pub fn start(
        connect: Box<dyn Connect>,
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
            .spawn(move || deliver(connect, rx, spill))
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

fn deliver(mut connect: Box<dyn Connect>, rx: Receiver<Message>, dead_letters: DeadLetters) {
    let mut conn: Option<Box<dyn Write + Send>> = None;
    let mut pending: Vec<Vec<u8>> = Vec::new();
    let mut backoff = Duration::from_millis(100);
    let mut next_attempt = Instant::now();
    let mut said_down = false;
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
                    let _ = dead_letters.append(&pending);
                    return;
                }
            }
        };
        let mut flush_reply = None;
        match message {
            Some(Message::Record(r)) => pending.push(r),
            Some(Message::Flush(reply)) => flush_reply = Some(reply),
            None => {}
        }
        // Take whatever else is queued, so one write carries a batch.
        while let Ok(m) = rx.try_recv() {
            match m {
                Message::Record(r) => pending.push(r),
                Message::Flush(reply) => {
                    flush_reply = Some(reply);
                    break;
                }
            }
        }
        if !pending.is_empty() && (Instant::now() >= next_attempt || flush_reply.is_some()) {
            match write_all(&mut conn, &mut *connect, &pending) {
                Ok(()) => {
                    pending.clear();
                    backoff = Duration::from_millis(100);
                    if said_down {
                        eprintln!("toolgate: {} is reachable again", connect.describe());
                        said_down = false;
                    }
                }
                Err(e) => {
                    conn = None;
                    if !said_down {
                        eprintln!(
                            "toolgate: {}: {e}; retrying, and spilling to {} when the buffer is full",
                            connect.describe(),
                            dead_letters.path.display()
                        );
                        said_down = true;
                    }
                    next_attempt = Instant::now() + backoff;
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
        if let Some(reply) = flush_reply {
            // The collector is unreachable: what is pending is kept on disk instead.
            let answer = dead_letters
                .append(&pending)
                .map_err(|e| format!("cannot write {}: {e}", dead_letters.path.display()));
            if answer.is_ok() {
                pending.clear();
            }
            let _ = reply.send(answer);
        }
    }
}

fn write_all(
    conn: &mut Option<Box<dyn Write + Send>>,
    connect: &mut dyn Connect,
    records: &[Vec<u8>],
) -> std::io::Result<()> {
    let stream = match conn {
        Some(c) => c,
        None => conn.insert(connect.connect()?),
    };
    for r in records {
        stream.write_all(r)?;
    }
    stream.flush()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::net::TcpListener;

    struct Tcp(String);

    impl Connect for Tcp {
        fn connect(&mut self) -> std::io::Result<Box<dyn Write + Send>> {
            Ok(Box::new(std::net::TcpStream::connect(&self.0)?))
        }
        fn describe(&self) -> String {
            self.0.clone()
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
        let d = Delivery::start(Box::new(Tcp(down)), 2, dlq.clone()).unwrap();
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
        let d = Delivery::start(Box::new(Tcp(up)), 100, dir.path().join("none.jsonl")).unwrap();
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
