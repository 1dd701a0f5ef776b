//! Server-sent event streams through the proxy: each event inspected, every byte sent
//! on as it comes, and an event too large to inspect reported from what streamed past.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::mpsc::{RecvTimeoutError, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use toolgate_protocol::Timestamp;

use super::{HttpProxy, write_chunk, write_head};
use crate::oversized::Capture;
use crate::session::{Outbound, Report, Session};

/// How often a stream whose upstream is silent looks whether its client is still there.
const HANGUP_CHECK: Duration = Duration::from_secs(1);

/// An SSE stream is read in pieces of at most this many bytes: a line longer than
/// `max_message_bytes` is never held whole.
const SSE_PIECE: u64 = 64 * 1024;

impl HttpProxy {
    /// Relays an SSE stream event by event, flushing each at once. The upstream is read
    /// on a thread of its own, so that while it is silent this one still notices a
    /// client that went away, and gives the connection back. That reader stops at its
    /// next piece, or at once when the caller shuts its upstream connection down.
    pub(super) fn stream(
        self: &Arc<Self>,
        writer: &mut TcpStream,
        status: u16,
        headers: &[(String, String)],
        upstream: ureq::BodyReader<'static>,
        session: &Arc<Mutex<Session>>,
        refusals: Vec<Vec<u8>>,
    ) -> std::io::Result<()> {
        write_head(writer, status, headers, true)?;
        for refusal in refusals {
            let mut event = b"event: message\ndata: ".to_vec();
            event.extend_from_slice(&refusal);
            event.extend_from_slice(b"\n\n");
            write_chunk(writer, &event)?;
        }
        let (pieces, passed) = std::sync::mpsc::sync_channel(16);
        let (proxy, session) = (Arc::clone(self), Arc::clone(session));
        std::thread::Builder::new()
            .name("http-upstream".into())
            .spawn(move || proxy.read_events(upstream, &session, &pieces))?;
        loop {
            match passed.recv_timeout(HANGUP_CHECK) {
                Ok(piece) => write_chunk(writer, &piece?)?,
                Err(RecvTimeoutError::Timeout) => {
                    if toolgate_http::hung_up(writer) {
                        return Ok(());
                    }
                }
                Err(RecvTimeoutError::Disconnected) => {
                    writer.write_all(b"0\r\n\r\n")?;
                    return writer.flush();
                }
            }
        }
    }

    /// Reads an SSE stream for [`HttpProxy::stream`]: each event inspected, every byte
    /// sent on as it comes. Stops at the end of the stream, on a failure (sent on), or
    /// when the client is gone (nothing takes what it sends).
    fn read_events(
        &self,
        upstream: ureq::BodyReader<'static>,
        session: &Arc<Mutex<Session>>,
        pieces: &SyncSender<std::io::Result<Vec<u8>>>,
    ) {
        let send = |bytes: Vec<u8>| pieces.send(Ok(bytes)).is_ok();
        let mut upstream = BufReader::with_capacity(64 * 1024, upstream);
        let mut event = Vec::new();
        let mut line = Vec::new();
        // An event too large to inspect: sent on as it comes, its data kept for its
        // report (head, tail, size, digest, id) until the event ends.
        let mut oversized: Option<Capture> = None;
        // Lines are read in pieces of at most SSE_PIECE bytes, so one endless line
        // costs no more memory than a piece: whether the next piece starts a line, and
        // whether the line it continues is a data line.
        let (mut at_line_start, mut data_line) = (true, false);
        loop {
            line.clear();
            let n = match Read::take(&mut upstream, SSE_PIECE).read_until(b'\n', &mut line) {
                Ok(n) => n,
                Err(e) => {
                    let _ = pieces.send(Err(e));
                    return;
                }
            };
            let starts_line = at_line_start;
            at_line_start = line.last() == Some(&b'\n');
            let blank = starts_line && (line == b"\n" || line == b"\r\n");
            if let Some(capture) = oversized.as_mut() {
                if n > 0 && !blank {
                    if starts_line {
                        data_line = line.starts_with(b"data:");
                        if data_line {
                            // Data lines join with a newline, as the client reads them.
                            capture.push(b"\n");
                            capture.push(&sse_fields(&line).0);
                        }
                    } else if data_line {
                        let bare = line.strip_suffix(b"\n").unwrap_or(&line);
                        capture.push(bare.strip_suffix(b"\r").unwrap_or(bare));
                    }
                    if !send(line.clone()) {
                        return;
                    }
                    continue;
                }
                if let Some(capture) = oversized.take() {
                    let mut report = Report::default();
                    if let Ok(mut s) = session.lock() {
                        s.oversized_from_server(&capture.finish(), Timestamp::now(), &mut report);
                    }
                    self.events.write(report);
                }
                if n == 0 || !send(line.clone()) {
                    return;
                }
                continue;
            }
            if n > 0 && !blank {
                event.extend_from_slice(&line);
                if event.len() <= self.max_message_bytes {
                    continue;
                }
                let mut capture = Capture::new(self.max_message_bytes);
                capture.push(&sse_fields(&event).0);
                // A line still going on goes on as data if it started as data.
                let last_line = event
                    .iter()
                    .rposition(|&b| b == b'\n')
                    .map_or(&event[..], |i| &event[i + 1..]);
                data_line = !at_line_start && last_line.starts_with(b"data:");
                oversized = Some(capture);
                if !send(std::mem::take(&mut event)) {
                    return;
                }
                continue;
            }
            let piece = if event.is_empty() {
                line.clone()
            } else {
                if n > 0 {
                    event.extend_from_slice(&line);
                }
                let passed = self.inspect_event(&event, session);
                event.clear();
                passed
            };
            if !piece.is_empty() && !send(piece) {
                return;
            }
            if n == 0 {
                return;
            }
        }
    }

    /// Runs one SSE event's data through the session; the event's own bytes go on
    /// unless the session changed the message.
    fn inspect_event(&self, event: &[u8], session: &Arc<Mutex<Session>>) -> Vec<u8> {
        let (data, other) = sse_fields(event);
        if data.is_empty() {
            return event.to_vec();
        }
        let (mut out, mut report) = (Vec::new(), Report::default());
        if let Ok(mut s) = session.lock() {
            s.from_server(&data, Timestamp::now(), &mut out, &mut report);
        }
        self.events.write(report);
        match out.pop() {
            Some(Outbound::ToClient(line)) if line != data => {
                let mut rebuilt = other;
                rebuilt.extend_from_slice(b"data: ");
                rebuilt.extend_from_slice(&line);
                rebuilt.extend_from_slice(b"\n\n");
                rebuilt
            }
            _ => event.to_vec(),
        }
    }
}

/// One SSE event split into its data (the `data:` lines joined with newlines, as the
/// SSE spec reads them) and its other lines (`id:`, `event:`, `retry:`, comments), each
/// ending in a newline.
pub fn sse_fields(event: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let mut data = Vec::new();
    let mut other = Vec::new();
    let mut first = true;
    for line in event.split_inclusive(|&b| b == b'\n') {
        let bare = line.strip_suffix(b"\n").unwrap_or(line);
        let bare = bare.strip_suffix(b"\r").unwrap_or(bare);
        if let Some(rest) = bare.strip_prefix(b"data:") {
            if !first {
                data.push(b'\n');
            }
            first = false;
            data.extend_from_slice(rest.strip_prefix(b" ").unwrap_or(rest));
        } else if !bare.is_empty() {
            other.extend_from_slice(bare);
            other.push(b'\n');
        }
    }
    (data, other)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_fields_follow_the_event_stream_rules() {
        let (data, other) = sse_fields(b"event: message\r\nid: 4\ndata: {\"a\":\ndata:1}\n\n");
        assert_eq!(data, b"{\"a\":\n1}");
        assert_eq!(other, b"event: message\nid: 4\n");
        let (data, _) = sse_fields(b": keep-alive\n\n");
        assert!(data.is_empty());
    }
}
