//! The stdio proxy, the I/O edge around [`Session`]: starts the MCP server as a child
//! and moves lines between the pipes through the session.
//!
//! Plain threads and blocking pipe I/O, one per direction: a line is judged and written
//! on the thread that read it, with no hand-off in between, because every microsecond
//! here is added to each of the agent's tool calls. Events go to the writer thread
//! ([`crate::transport`]). The child's stderr is the proxy's; its exit code is the
//! proxy's; SIGINT, SIGTERM and SIGHUP are passed on to it.

use std::ffi::OsString;
use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use toolgate_protocol::Timestamp;

use crate::SinkError;
use crate::framing::{Frame, LineFramer};
use crate::jsonrpc;
use crate::oversized::Capture;
use crate::session::{Outbound, Report, Session};
use crate::transport::{EventWriter, ReportWriter, Written};
use crate::verdicts::VerdictSignal;

/// Counters of one run, printed by the binary at exit.
#[derive(Debug, Default, Clone, Copy)]
pub struct Totals {
    /// Lines that were not JSON, forwarded as they were.
    pub not_json: u64,
    /// Messages only a lenient decoder reads (`[sink] unparseable`).
    pub unparseable: u64,
    /// `tools/call` messages without a usable id, refused.
    pub malformed_calls: u64,
    /// Oversized messages from the agent, refused.
    pub refused_oversized: u64,
    /// Oversized messages from the server, passed through whole and reported truncated.
    pub passed_oversized: u64,
    /// What the event writer did.
    pub written: Written,
}

#[derive(Default)]
struct Counters {
    not_json: AtomicU64,
    unparseable: AtomicU64,
    malformed_calls: AtomicU64,
    refused_oversized: AtomicU64,
    passed_oversized: AtomicU64,
}

/// Runs `command` behind the proxy until it exits; returns its exit code and the
/// counters. Pins are saved to `pins_file` whenever a listing was checked.
///
/// Calls held for the engine's verdict wait in the session, not in a thread: the
/// agent's later messages go on, and a `verdicts` thread forwards or refuses each held
/// call when `signal` says a decision arrived, or at its deadline.
pub fn run(
    command: &[OsString],
    session: Arc<Mutex<Session>>,
    signal: VerdictSignal,
    events: EventWriter,
    pins_file: Option<PathBuf>,
    max_message_bytes: usize,
) -> Result<(i32, Totals), SinkError> {
    let (program, args) = command.split_first().ok_or(SinkError::NoCommand)?;
    // Blocked before the spawn, so a signal that comes early waits for the forwarder
    // instead of killing the proxy and orphaning the server; unblocked in the child.
    let blocked = toolgate_edge::signals::block();
    let forwarded = blocked.set();
    let mut command = Command::new(program);
    // SAFETY: the hook only calls pthread_sigmask, which is async-signal-safe.
    unsafe {
        command.pre_exec(move || {
            libc::pthread_sigmask(libc::SIG_UNBLOCK, &forwarded, std::ptr::null_mut());
            Ok(())
        });
    }
    let mut child = command
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| SinkError::Spawn {
            command: program.to_string_lossy().into_owned(),
            source: e,
        })?;
    let (Some(child_in), Some(mut child_out)) = (child.stdin.take(), child.stdout.take()) else {
        return Err(SinkError::NoCommand);
    };
    let server_in = SharedServer(Arc::new(Mutex::new(Some(child_in))));
    blocked
        .forward_to(child.id())
        .map_err(|e| SinkError::Task(e.to_string()))?;

    let counters = Arc::new(Counters::default());
    let done = Arc::new(AtomicBool::new(false));
    let events = ReportWriter::new(events, pins_file);
    {
        let (session, counters, sink) = (session.clone(), counters.clone(), events.clone());
        let (mut server_in, signal) = (server_in.clone(), signal.clone());
        std::thread::Builder::new()
            .name("from-agent".into())
            .spawn(move || {
                let mut stdin = std::io::stdin().lock();
                // What is kept of an oversized request streaming past: its id for the
                // refusal, its head and tail, size and digest for its event.
                let mut capture: Option<Capture> = None;
                pump(
                    &mut stdin,
                    max_message_bytes,
                    |frame, out, report| match frame {
                        Frame::Message(line) => {
                            let holding = match session.lock() {
                                Ok(mut s) => {
                                    s.from_client(&line, Timestamp::now(), out, report);
                                    s.holding()
                                }
                                Err(_) => 0,
                            };
                            if holding > 0 {
                                signal.notify();
                            }
                        }
                        Frame::Oversized { last: true, bytes } => {
                            counters.refused_oversized.fetch_add(1, Ordering::Relaxed);
                            let mut kept = capture
                                .take()
                                .unwrap_or_else(|| Capture::new(max_message_bytes));
                            kept.push(&bytes);
                            let kept = kept.finish();
                            if let Ok(mut s) = session.lock() {
                                s.oversized_from_client(
                                    &kept,
                                    max_message_bytes,
                                    Timestamp::now(),
                                    report,
                                );
                            }
                            let answer = jsonrpc::error(
                                kept.id.as_ref().unwrap_or(&serde_json::Value::Null),
                                -32600,
                                &format!(
                                    "toolgate refused a message larger than {max_message_bytes} bytes"
                                ),
                            );
                            out.push(Outbound::ToClient(answer.to_string().into_bytes()));
                        }
                        Frame::Oversized { bytes, .. } => {
                            capture
                                .get_or_insert_with(|| Capture::new(max_message_bytes))
                                .push(&bytes);
                        }
                    },
                    &mut server_in,
                    &counters,
                    &sink,
                );
                // Held calls are settled (by their deadline at the latest) before the
                // agent's EOF reaches the server: closing its stdin is how it does.
                while session.lock().is_ok_and(|s| s.holding() > 0) {
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
                server_in.close();
            })
            .map_err(|e| SinkError::Task(e.to_string()))?;
    }

    let verdicts = {
        let (session, signal, done) = (session.clone(), signal.clone(), done.clone());
        let (mut server_in, events) = (server_in.clone(), events.clone());
        std::thread::Builder::new()
            .name("verdicts".into())
            .spawn(move || settle_held_calls(&session, &signal, &mut server_in, &events, &done))
            .map_err(|e| SinkError::Task(e.to_string()))?
    };

    let from_server = {
        let (session, counters, sink) = (session.clone(), counters.clone(), events.clone());
        std::thread::Builder::new()
            .name("from-server".into())
            .spawn(move || {
                let mut nowhere = std::io::sink();
                // Held from the first part of an oversized line to its last, so the
                // other thread cannot write into the middle of it.
                let mut streaming: Option<std::io::StdoutLock<'static>> = None;
                // What is kept of it for its event: head, tail, size, digest, id.
                let mut capture: Option<Capture> = None;
                pump(
                    &mut child_out,
                    max_message_bytes,
                    |frame, out, report| match frame {
                        Frame::Message(line) => {
                            if let Ok(mut s) = session.lock() {
                                s.from_server(&line, Timestamp::now(), out, report);
                            }
                        }
                        Frame::Oversized { bytes, last } => {
                            capture
                                .get_or_insert_with(|| Capture::new(max_message_bytes))
                                .push(&bytes);
                            let stdout = streaming.get_or_insert_with(|| std::io::stdout().lock());
                            let _ = stdout.write_all(&bytes);
                            if last {
                                let _ = stdout.write_all(b"\n");
                                let _ = stdout.flush();
                                streaming = None;
                                counters.passed_oversized.fetch_add(1, Ordering::Relaxed);
                                if let (Some(c), Ok(mut s)) = (capture.take(), session.lock()) {
                                    s.oversized_from_server(&c.finish(), Timestamp::now(), report);
                                }
                            }
                        }
                    },
                    &mut nowhere,
                    &counters,
                    &sink,
                );
            })
            .map_err(|e| SinkError::Task(e.to_string()))?
    };

    let flusher = events.start_flusher(done.clone())?;

    let _ = from_server.join();
    let status = child.wait().map_err(SinkError::Wait)?;
    done.store(true, Ordering::Relaxed);
    signal.notify();
    let _ = flusher.join();
    let _ = verdicts.join();
    // The agent's side may still be blocked reading stdin; it ends with the process.
    let written = events.finish()?;
    let totals = Totals {
        not_json: counters.not_json.load(Ordering::Relaxed),
        unparseable: counters.unparseable.load(Ordering::Relaxed),
        malformed_calls: counters.malformed_calls.load(Ordering::Relaxed),
        refused_oversized: counters.refused_oversized.load(Ordering::Relaxed),
        passed_oversized: counters.passed_oversized.load(Ordering::Relaxed),
        written,
    };
    let code = status.code().unwrap_or_else(|| {
        use std::os::unix::process::ExitStatusExt;
        128 + status.signal().unwrap_or(0)
    });
    Ok((code, totals))
}

/// Reads `input` to its end, hands each frame to `handle`, and writes what it produced:
/// lines for the server to `server`, lines for the agent to stdout.
fn pump(
    input: &mut impl Read,
    max_message_bytes: usize,
    mut handle: impl FnMut(Frame, &mut Vec<Outbound>, &mut Report),
    server: &mut impl Write,
    counters: &Counters,
    events: &ReportWriter,
) {
    let mut framer = LineFramer::new(max_message_bytes);
    let mut buf = vec![0u8; 64 * 1024];
    let mut frames = Vec::new();
    let mut out = Vec::new();
    loop {
        let n = match input.read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => 0,
        };
        if n == 0 {
            framer.finish(&mut frames);
        } else {
            framer.push(&buf[..n], &mut frames);
        }
        for frame in frames.drain(..) {
            let mut report = Report::default();
            handle(frame, &mut out, &mut report);
            for o in out.drain(..) {
                let written = match o {
                    Outbound::ToServer(mut line) => {
                        line.push(b'\n');
                        server.write_all(&line).and_then(|()| server.flush())
                    }
                    Outbound::ToClient(mut line) => {
                        line.push(b'\n');
                        let mut stdout = std::io::stdout().lock();
                        stdout.write_all(&line).and_then(|()| stdout.flush())
                    }
                };
                if written.is_err() {
                    return;
                }
            }
            counters
                .not_json
                .fetch_add(report.not_json, Ordering::Relaxed);
            counters
                .unparseable
                .fetch_add(report.unparseable, Ordering::Relaxed);
            counters
                .malformed_calls
                .fetch_add(report.malformed_calls, Ordering::Relaxed);
            if !report.events.is_empty()
                || report.invalid_events > 0
                || !report.findings.is_empty()
                || report.pins.is_some()
            {
                events.write(report);
            }
        }
        if n == 0 {
            return;
        }
    }
}

/// Forwards or refuses held calls as verdicts arrive or deadlines pass, until `done`.
fn settle_held_calls(
    session: &Mutex<Session>,
    signal: &VerdictSignal,
    server: &mut SharedServer,
    events: &ReportWriter,
    done: &AtomicBool,
) {
    let idle = std::time::Duration::from_millis(100);
    while !done.load(Ordering::Relaxed) {
        let seen = signal.generation();
        let (mut out, mut report) = (Vec::new(), Report::default());
        let deadline = match session.lock() {
            Ok(mut s) => {
                s.resolve_holds(Timestamp::now(), &mut out, &mut report);
                s.next_hold_deadline()
            }
            Err(_) => return,
        };
        if !report.events.is_empty() || report.invalid_events > 0 {
            events.write(report);
        }
        for o in out {
            let _ = match o {
                Outbound::ToServer(mut line) => {
                    line.push(b'\n');
                    server.write_all(&line)
                }
                Outbound::ToClient(mut line) => {
                    line.push(b'\n');
                    let mut stdout = std::io::stdout().lock();
                    stdout.write_all(&line).and_then(|()| stdout.flush())
                }
            };
        }
        let wait = deadline.map_or(idle, |d| {
            let left = d.unix_nanos() - Timestamp::now().unix_nanos();
            std::time::Duration::from_nanos(left.clamp(0, idle.as_nanos() as i64) as u64)
        });
        signal.wait(seen, wait);
    }
}

/// The server's stdin, written by the agent's thread and by the verdicts thread: one
/// `write` is one whole line under the lock, so lines never interleave.
#[derive(Clone)]
struct SharedServer(Arc<Mutex<Option<std::process::ChildStdin>>>);

impl SharedServer {
    fn close(&self) {
        if let Ok(mut s) = self.0.lock() {
            s.take();
        }
    }
}

impl Write for SharedServer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut guard = self
            .0
            .lock()
            .map_err(|_| std::io::Error::other("server stdin lock poisoned"))?;
        match guard.as_mut() {
            Some(stdin) => stdin.write_all(buf).map(|()| buf.len()),
            None => Err(std::io::ErrorKind::BrokenPipe.into()),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self.0.lock() {
            Ok(mut g) => g.as_mut().map_or(Ok(()), |s| s.flush()),
            Err(_) => Ok(()),
        }
    }
}
