//! The stdio proxy, the I/O edge around [`Session`]: starts the MCP server as a child,
//! pumps the agent's stdin to it and its stdout back, line by line through the
//! session, and writes events off the MCP path. The child's stderr is the proxy's
//! stderr; its exit code is the proxy's; SIGINT, SIGTERM and SIGHUP are passed on.

use std::ffi::OsString;
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::process::Command;
use tokio::sync::mpsc;
use toolgate_protocol::Timestamp;

use crate::SinkError;
use crate::framing::{Frame, LineFramer};
use crate::jsonrpc;
use crate::session::{Outbound, Report, Session};
use crate::transport::EventWriter;

/// Counters of one run, printed by the binary at exit.
#[derive(Debug, Default, Clone, Copy)]
pub struct Totals {
    /// Lines that were not JSON, forwarded as they were.
    pub not_json: u64,
    /// Oversized messages from the agent, refused.
    pub refused_oversized: u64,
    /// Oversized messages from the server, passed through uninspected.
    pub passed_oversized: u64,
    /// Events written.
    pub events: u64,
}

/// Runs `command` behind the proxy until it exits; returns its exit code, the counters
/// and the pins as they are at the end (to persist).
pub async fn run(
    command: &[OsString],
    session: Session,
    events: EventWriter,
    max_message_bytes: usize,
) -> Result<(i32, Totals, Option<Vec<u8>>), SinkError> {
    let (program, args) = command.split_first().ok_or(SinkError::NoCommand)?;
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| SinkError::Spawn {
            command: program.to_string_lossy().into_owned(),
            source: e,
        })?;
    let (Some(child_in), Some(child_out)) = (child.stdin.take(), child.stdout.take()) else {
        return Err(SinkError::NoCommand);
    };
    let pid = child.id();

    let session = Arc::new(Mutex::new(session));
    let totals = Arc::new(Mutex::new(Totals::default()));
    let (to_client, client_rx) = mpsc::channel::<Vec<u8>>(256);
    let (to_server, server_rx) = mpsc::channel::<Vec<u8>>(256);
    let (event_tx, event_rx) = mpsc::unbounded_channel::<Report>();

    let writers = (
        tokio::spawn(write_lines(tokio::io::stdout(), client_rx)),
        tokio::spawn(write_lines(child_in, server_rx)),
    );
    let event_task = tokio::spawn(events.run(event_rx));

    let from_agent = tokio::spawn(pump(
        tokio::io::stdin(),
        Direction::FromClient,
        session.clone(),
        to_server.clone(),
        to_client.clone(),
        event_tx.clone(),
        totals.clone(),
        max_message_bytes,
    ));
    // The server's side never writes to the server: it gets a sender of its own, so
    // the agent's EOF (the end of `to_server`) reaches the server's stdin.
    let (no_server, _) = mpsc::channel::<Vec<u8>>(1);
    drop(to_server);
    let from_server = tokio::spawn(pump(
        child_out,
        Direction::FromServer,
        session.clone(),
        no_server,
        to_client,
        event_tx,
        totals.clone(),
        max_message_bytes,
    ));
    let signals = tokio::spawn(forward_signals(pid));

    // The agent closing stdin ends its side; the server then sees EOF and exits.
    let _ = from_agent.await;
    let status = child.wait().await.map_err(SinkError::Wait)?;
    let _ = from_server.await;
    signals.abort();
    let _ = writers.0.await;
    let _ = writers.1.await;
    let written = event_task
        .await
        .map_err(|e| SinkError::Task(e.to_string()))??;
    let mut totals = totals.lock().map(|t| *t).unwrap_or_default();
    totals.events = written;
    let code = status.code().unwrap_or_else(|| {
        use std::os::unix::process::ExitStatusExt;
        128 + status.signal().unwrap_or(0)
    });
    let pins = session.lock().ok().and_then(|s| s.pins_snapshot());
    Ok((code, totals, pins))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Direction {
    FromClient,
    FromServer,
}

#[allow(clippy::too_many_arguments)]
async fn pump(
    mut input: impl AsyncRead + Unpin,
    direction: Direction,
    session: Arc<Mutex<Session>>,
    to_server: mpsc::Sender<Vec<u8>>,
    to_client: mpsc::Sender<Vec<u8>>,
    events: mpsc::UnboundedSender<Report>,
    totals: Arc<Mutex<Totals>>,
    max_message_bytes: usize,
) {
    let mut framer = LineFramer::new(max_message_bytes);
    let mut buf = vec![0u8; 64 * 1024];
    let mut frames = Vec::new();
    let mut out = Vec::new();
    loop {
        let n = match input.read(&mut buf).await {
            Ok(0) | Err(_) => 0,
            Ok(n) => n,
        };
        if n == 0 {
            framer.finish(&mut frames);
        } else {
            framer.push(&buf[..n], &mut frames);
        }
        for frame in frames.drain(..) {
            let mut report = Report::default();
            match frame {
                Frame::Message(line) => {
                    let now = Timestamp::now();
                    let Ok(mut s) = session.lock() else { return };
                    match direction {
                        Direction::FromClient => s.from_client(&line, now, &mut out, &mut report),
                        Direction::FromServer => s.from_server(&line, now, &mut out, &mut report),
                    }
                }
                Frame::Oversized { mut bytes, last } => match direction {
                    // Passed through as it streams in: parts go out unterminated and
                    // the last one ends the line.
                    Direction::FromServer => {
                        if last {
                            bytes.push(b'\n');
                            count(&totals, |t| t.passed_oversized += 1);
                        }
                        if to_client.send(bytes).await.is_err() {
                            return;
                        }
                    }
                    Direction::FromClient if last => {
                        count(&totals, |t| t.refused_oversized += 1);
                        let answer = jsonrpc::error(
                            &serde_json::Value::Null,
                            -32600,
                            &format!(
                                "toolgate refused a message larger than {max_message_bytes} bytes"
                            ),
                        );
                        out.push(Outbound::ToClient(answer.to_string().into_bytes()));
                    }
                    Direction::FromClient => {}
                },
            }
            if report.not_json > 0 {
                count(&totals, |t| t.not_json += report.not_json);
            }
            if !report.events.is_empty() || !report.findings.is_empty() {
                let _ = events.send(report);
            }
            for o in out.drain(..) {
                let sent = match o {
                    Outbound::ToServer(line) => to_server.send(terminated(line)).await,
                    Outbound::ToClient(line) => to_client.send(terminated(line)).await,
                };
                if sent.is_err() {
                    return;
                }
            }
        }
        if n == 0 {
            return;
        }
    }
}

fn terminated(mut line: Vec<u8>) -> Vec<u8> {
    line.push(b'\n');
    line
}

fn count(totals: &Mutex<Totals>, f: impl FnOnce(&mut Totals)) {
    if let Ok(mut t) = totals.lock() {
        f(&mut t);
    }
}

async fn write_lines(mut output: impl AsyncWrite + Unpin, mut lines: mpsc::Receiver<Vec<u8>>) {
    while let Some(line) = lines.recv().await {
        if output.write_all(&line).await.is_err() {
            return;
        }
        // Flush when nothing else is queued, so a burst is written at once.
        if lines.is_empty() && output.flush().await.is_err() {
            return;
        }
    }
    let _ = output.shutdown().await;
}

async fn forward_signals(pid: Option<u32>) {
    use tokio::signal::unix::{SignalKind, signal};
    let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()) else {
        return;
    };
    let kinds = [
        (SignalKind::interrupt(), libc::SIGINT),
        (SignalKind::terminate(), libc::SIGTERM),
        (SignalKind::hangup(), libc::SIGHUP),
    ];
    let mut streams = Vec::new();
    for (kind, number) in kinds {
        if let Ok(s) = signal(kind) {
            streams.push((s, number));
        }
    }
    loop {
        let received = first_signal(&mut streams).await;
        let Some(number) = received else { return };
        // SAFETY: kill(2) with a pid we spawned and a valid signal number.
        unsafe {
            libc::kill(pid, number);
        }
    }
}

/// Waits for the first of several signal streams.
async fn first_signal(streams: &mut [(tokio::signal::unix::Signal, i32)]) -> Option<i32> {
    std::future::poll_fn(|cx| {
        for (s, number) in streams.iter_mut() {
            match s.poll_recv(cx) {
                std::task::Poll::Ready(Some(())) => return std::task::Poll::Ready(Some(*number)),
                std::task::Poll::Ready(None) => return std::task::Poll::Ready(None),
                std::task::Poll::Pending => {}
            }
        }
        std::task::Poll::Pending
    })
    .await
}
