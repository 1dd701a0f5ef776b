//! One connection: requests read under deadlines and handed on one at a time, answers
//! written under a deadline too. A deadline, not a timeout per read: a byte now and
//! then buys no more time.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{IpAddr, TcpListener, TcpStream};
use std::os::unix::io::AsRawFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::request::{Failure, Rest, read_request, read_rest};
use crate::{Counters, Limits, reason};

/// After an answer to a request whose body was left unread, how long and how much of
/// it is read off before closing (see [`linger`]).
const LINGER: Duration = Duration::from_secs(2);
const LINGER_BYTES: u64 = 64 << 20;

/// Counts a request in progress until dropped, however its handler ends.
struct Busy<'a>(&'a AtomicUsize);

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// One request, its body read, answered with [`Request::respond`] or through
/// [`Request::into_writer`].
pub struct Request<'c> {
    /// As sent (`POST`, `GET`, ...).
    pub method: String,
    /// The request target (path and query).
    pub target: String,
    /// The header fields in order, names as sent.
    pub headers: Vec<(String, String)>,
    /// The client's address.
    pub peer: IpAddr,
    /// The body; when `oversized`, the part read before it went over the limit
    /// (chunks that fit), the rest left for [`Request::read_rest`].
    pub body: Vec<u8>,
    /// The body is larger than the limit and was not read whole; the connection closes
    /// after the answer.
    pub oversized: bool,
    rest: Option<Rest>,
    input: &'c mut BufReader<Timed>,
    out: &'c mut TcpStream,
    keep_alive: bool,
    reusable: &'c mut bool,
}

impl<'c> Request<'c> {
    /// The first field named `name`, in any case.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Reads at most `max` more bytes of an oversized body through `f`, as they arrive
    /// and within the request's deadline, so a body too large to hold can still be
    /// inspected as it streams past. Returns whether its end was reached (always, for
    /// a body that was not oversized).
    pub fn read_rest(&mut self, max: u64, f: &mut dyn FnMut(&[u8])) -> io::Result<bool> {
        let Some(rest) = self.rest.as_mut() else {
            return Ok(true);
        };
        let whole =
            read_rest(self.input, self.out, rest, max, f).map_err(|failure| match failure {
                Failure::TimedOut => io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the body did not arrive within the request's deadline",
                ),
                Failure::Closed => io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the client closed the connection within the body",
                ),
                Failure::Bad(why) => io::Error::new(io::ErrorKind::InvalidData, why),
                _ => io::Error::new(io::ErrorKind::InvalidData, "malformed body framing"),
            })?;
        if whole {
            self.rest = None;
        }
        Ok(whole)
    }

    /// Answers with a whole body; the connection then serves the client's next request
    /// unless it asked to close it.
    pub fn respond(self, status: u16, headers: &[(String, String)], body: &[u8]) {
        let mut head = format!("HTTP/1.1 {status} {}\r\n", reason(status));
        for (name, value) in headers {
            head.push_str(name);
            head.push_str(": ");
            head.push_str(value);
            head.push_str("\r\n");
        }
        if status >= 200 && status != 204 && status != 304 {
            head.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        if !self.keep_alive {
            head.push_str("Connection: close\r\n");
        }
        head.push_str("\r\n");
        let out = self.out;
        let sent = out
            .write_all(head.as_bytes())
            .and_then(|()| out.write_all(body))
            .and_then(|()| out.flush());
        *self.reusable = self.keep_alive && sent.is_ok();
    }

    /// The connection, for an answer written as it comes (the caller frames it and says
    /// `Connection: close`); it is closed afterwards.
    pub fn into_writer(self) -> &'c mut TcpStream {
        self.out
    }
}

/// Whether a connection is waiting on `listener`, within `wait`.
pub(crate) fn wait_for_connection(listener: &TcpListener, wait: Duration) -> bool {
    let mut fd = libc::pollfd {
        fd: listener.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let millis = wait.as_millis().min(i32::MAX as u128) as libc::c_int;
    // SAFETY: poll(2) on one pollfd owned by this frame, for a socket it borrows.
    unsafe { libc::poll(&mut fd, 1, millis) > 0 }
}

/// Whether the client closed its side of `stream` or the connection failed, looked at
/// without waiting (while the proxy waits on the upstream, not on the client).
pub fn hung_up(stream: &TcpStream) -> bool {
    let mut byte = 0u8;
    // SAFETY: recv(2) of at most one byte into a byte owned by this frame; MSG_PEEK
    // leaves it queued and MSG_DONTWAIT never blocks.
    let n = unsafe {
        libc::recv(
            stream.as_raw_fd(),
            (&mut byte as *mut u8).cast::<libc::c_void>(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    match n {
        0 => true,
        n if n > 0 => false,
        _ => !matches!(
            io::Error::last_os_error().kind(),
            io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
        ),
    }
}

/// Answers a connection past the cap with 503 without ever waiting on it (this runs on
/// the accepting thread) and returns it half-closed, for [`Lingering`] to close; `None`
/// (closed at once) if it cannot be made non-blocking, since reading it could then
/// hold the accepting thread.
pub(crate) fn refuse_connection(
    mut stream: TcpStream,
    name: &str,
    max: usize,
    setting: &str,
) -> Option<TcpStream> {
    stream.set_nonblocking(true).ok()?;
    let body = format!("{name}: {max} connections are open ({setting}); retry later\n");
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nRetry-After: 1\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    // A new connection's send buffer is empty: this does not block.
    let _ = stream.write_all(answer.as_bytes());
    let _ = stream.shutdown(std::net::Shutdown::Write);
    Some(stream)
}

/// Refused connections, half-closed after their 503 and kept a moment while what their
/// clients still send is read off. Closed at once, a socket that then receives the
/// request answers it with a reset, and the client's kernel may discard the 503 before
/// the client reads it: the client sees "connection reset" instead of "retry later".
/// The accepting thread drains them between accepts, never blocking; there are at most
/// [`Lingering::MAX`] of them, the oldest closed first.
#[derive(Default)]
pub(crate) struct Lingering {
    streams: std::collections::VecDeque<(TcpStream, Instant)>,
}

impl Lingering {
    const MAX: usize = 256;
    const FOR: Duration = Duration::from_secs(2);
    /// Read off one connection per pass, at most: a pass every 20 ms takes a refused
    /// 8 MiB export well within [`Lingering::FOR`].
    const PASS_BYTES: usize = 1 << 20;

    /// Keeps `stream` until its client closes it or [`Lingering::FOR`] passes.
    pub(crate) fn add(&mut self, stream: TcpStream) {
        if self.streams.len() >= Self::MAX {
            self.streams.pop_front();
        }
        self.streams.push_back((stream, Instant::now() + Self::FOR));
    }

    /// Whether any are kept.
    pub(crate) fn is_empty(&self) -> bool {
        self.streams.is_empty()
    }

    /// Reads off what has arrived; closes those whose client closed, failed or whose
    /// time is up.
    pub(crate) fn drain(&mut self) {
        let now = Instant::now();
        let mut scratch = [0u8; 16 * 1024];
        self.streams.retain_mut(|(stream, until)| {
            if now >= *until {
                return false;
            }
            // Until nothing is waiting, within a budget: one client cannot hold the
            // accepting thread.
            let mut read = 0;
            while read < Self::PASS_BYTES {
                match stream.read(&mut scratch) {
                    Ok(0) => return false,
                    Ok(n) => read += n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => return false,
                }
            }
            true
        });
    }
}

/// Reads and answers requests on one connection until the client closes it, is silent
/// for `limits.idle_timeout` between requests, misses a request's deadline, or an
/// answer leaves the connection unusable. Bodies larger than `limits.max_body` are not
/// read.
pub(crate) fn serve_connection(
    stream: TcpStream,
    peer: IpAddr,
    limits: &Limits,
    name: &str,
    counters: &Counters,
    handle: &dyn Fn(Request<'_>),
) {
    // Accepted sockets inherit the listener's non-blocking mode on some systems.
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_nodelay(true);
    let Ok(mut out) = stream.try_clone() else {
        return;
    };
    // A client that stops taking an answer gives its thread back.
    let _ = out.set_write_timeout(Some(limits.request_timeout));
    let mut input = BufReader::with_capacity(
        16 * 1024,
        Timed {
            stream,
            deadline: Instant::now() + limits.idle_timeout,
        },
    );
    loop {
        // Between requests: the next one's first byte within the idle timeout.
        input.get_mut().deadline = Instant::now() + limits.idle_timeout;
        match input.fill_buf() {
            Ok(bytes) if !bytes.is_empty() => {}
            _ => return,
        }
        // From that byte: the whole request within the request timeout.
        input.get_mut().deadline = Instant::now() + limits.request_timeout;
        let parts = match read_request(&mut input, limits.max_body, &mut out) {
            Ok(parts) => parts,
            Err(refused) => {
                let unread = !matches!(refused, Failure::Closed | Failure::TimedOut);
                match refused {
                    Failure::Closed => {}
                    Failure::TimedOut => {
                        counters.timed_out.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {
                        counters.malformed.fetch_add(1, Ordering::Relaxed);
                    }
                }
                refused.answer(name, &mut out);
                if unread {
                    linger(&mut input, &out);
                }
                return;
            }
        };
        let unread = parts.oversized;
        let mut reusable = false;
        counters.busy.fetch_add(1, Ordering::AcqRel);
        let _busy = Busy(&counters.busy);
        handle(Request {
            method: parts.method,
            target: parts.target,
            headers: parts.headers,
            peer,
            body: parts.body,
            oversized: parts.oversized,
            rest: parts.rest,
            input: &mut input,
            out: &mut out,
            keep_alive: parts.keep_alive,
            reusable: &mut reusable,
        });
        drop(_busy);
        if !reusable {
            if unread {
                linger(&mut input, &out);
            }
            return;
        }
    }
}

/// Reads off, for a while, what the client still sends after an answer that left part
/// of its request unread: closing with unread bytes sends a reset, which can destroy
/// the answer before the client reads it.
fn linger(input: &mut BufReader<Timed>, out: &TcpStream) {
    let _ = out.shutdown(std::net::Shutdown::Write);
    input.get_mut().deadline = Instant::now() + LINGER;
    let _ = io::copy(&mut Read::take(&mut *input, LINGER_BYTES), &mut io::sink());
}

/// The client's socket, read under a deadline that the connection loop moves.
struct Timed {
    stream: TcpStream,
    deadline: Instant,
}

impl Read for Timed {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(past_deadline());
        }
        self.stream.set_read_timeout(Some(left))?;
        self.stream.read(buf).map_err(|e| match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => past_deadline(),
            _ => e,
        })
    }
}

fn past_deadline() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "the client's deadline passed")
}
