//! The HTTP/1.1 server side of the proxy, bounded in what one client can hold: the
//! proxy serves at most `http_max_connections` connections at once, each on a thread of
//! its own, and answers one more with 503 on the accepting thread. A client has
//! `http_client_timeout_ms` to send the first byte of a request, then as long again from
//! that byte for the whole request (line, headers, body), or the connection is closed
//! (with 408 if a request had begun); each write of an answer must be taken within that
//! time too. A deadline, not a timeout per read: a byte now and then buys no more time.
//!
//! tiny_http, used before, gave no access to its sockets (no timeout could be set) and
//! started a thread for every connection however many came.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{IpAddr, TcpListener, TcpStream};
use std::os::unix::io::AsRawFd;
use std::time::{Duration, Instant};

/// Longest request line and header fields together (and a chunked body's trailers).
const MAX_HEAD_BYTES: u64 = 64 * 1024;
/// Most header fields in one request.
const MAX_HEADERS: usize = 128;
/// Longest line framing a chunk of a chunked body (its size and extensions).
const MAX_CHUNK_LINE: u64 = 4 * 1024;
/// After an answer to a request whose body was left unread, how long and how much of
/// it is read off before closing (see [`linger`]).
const LINGER: Duration = Duration::from_secs(2);
const LINGER_BYTES: u64 = 64 << 20;

/// One request, its body read, answered with [`Request::respond`] or through
/// [`Request::into_writer`].
pub(crate) struct Request<'c> {
    /// As sent (`POST`, `GET`, ...).
    pub(crate) method: String,
    /// The request target (path and query).
    pub(crate) target: String,
    /// The header fields in order, names as sent.
    pub(crate) headers: Vec<(String, String)>,
    /// The client's address.
    pub(crate) peer: IpAddr,
    /// The body (empty when `oversized`).
    pub(crate) body: Vec<u8>,
    /// The body is larger than the limit and was not read; the connection closes after
    /// the answer.
    pub(crate) oversized: bool,
    out: &'c mut TcpStream,
    keep_alive: bool,
    reusable: &'c mut bool,
}

impl<'c> Request<'c> {
    /// The first field named `name`, in any case.
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Answers with a whole body; the connection then serves the client's next request
    /// unless it asked to close it.
    pub(crate) fn respond(self, status: u16, headers: &[(String, String)], body: &[u8]) {
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
    pub(crate) fn into_writer(self) -> &'c mut TcpStream {
        self.out
    }
}

/// The reason phrase of `status`.
pub(crate) fn reason(status: u16) -> &'static str {
    ureq::http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("")
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
pub(crate) fn hung_up(stream: &TcpStream) -> bool {
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

/// Answers a connection past the cap with 503 and closes it, without ever waiting on
/// it: this runs on the accepting thread.
pub(crate) fn refuse_connection(mut stream: TcpStream, max: usize) {
    let _ = stream.set_nonblocking(true);
    let body = format!(
        "toolgate-sink: {max} connections are open (sink.http_max_connections); retry later\n"
    );
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nRetry-After: 1\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    // A new connection's send buffer is empty: this does not block.
    let _ = stream.write_all(answer.as_bytes());
    // What the client already sent is read off, so that closing sends FIN rather than
    // a reset that could discard the answer.
    let mut scratch = [0u8; 4096];
    for _ in 0..16 {
        if !matches!(stream.read(&mut scratch), Ok(n) if n > 0) {
            break;
        }
    }
    let _ = stream.shutdown(std::net::Shutdown::Write);
}

/// Reads and answers requests on one connection until the client closes it, is silent
/// for `timeout` between requests, misses a request's deadline, or an answer leaves the
/// connection unusable. Bodies larger than `max_body` are not read.
pub(crate) fn serve_connection(
    stream: TcpStream,
    peer: IpAddr,
    timeout: Duration,
    max_body: usize,
    handle: &dyn Fn(Request<'_>),
) {
    // Accepted sockets inherit the listener's non-blocking mode on some systems.
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_nodelay(true);
    let Ok(mut out) = stream.try_clone() else {
        return;
    };
    // A client that stops taking an answer gives its thread back.
    let _ = out.set_write_timeout(Some(timeout));
    let mut input = BufReader::with_capacity(
        16 * 1024,
        Timed {
            stream,
            deadline: Instant::now() + timeout,
        },
    );
    loop {
        // Between requests: the next one's first byte within `timeout`.
        input.get_mut().deadline = Instant::now() + timeout;
        match input.fill_buf() {
            Ok(bytes) if !bytes.is_empty() => {}
            _ => return,
        }
        // From that byte: the whole request within `timeout`.
        input.get_mut().deadline = Instant::now() + timeout;
        let parts = match read_request(&mut input, max_body, &mut out) {
            Ok(parts) => parts,
            Err(refused) => {
                let unread = !matches!(refused, Failure::Closed | Failure::TimedOut);
                refused.answer(&mut out);
                if unread {
                    linger(&mut input, &out);
                }
                return;
            }
        };
        let unread = parts.oversized;
        let mut reusable = false;
        handle(Request {
            method: parts.method,
            target: parts.target,
            headers: parts.headers,
            peer,
            body: parts.body,
            oversized: parts.oversized,
            out: &mut out,
            keep_alive: parts.keep_alive,
            reusable: &mut reusable,
        });
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

/// Why a request was not read; each closes the connection.
enum Failure {
    /// The client closed the connection or it failed: nothing to answer.
    Closed,
    /// The request did not arrive by its deadline.
    TimedOut,
    /// The head is larger than [`MAX_HEAD_BYTES`] or has too many fields.
    TooLarge,
    /// Not a request this server reads.
    Bad(&'static str),
    /// Not HTTP/1.0 or HTTP/1.1.
    Version,
    /// An `Expect` other than `100-continue`.
    Expectation,
}

impl Failure {
    fn answer(self, out: &mut TcpStream) {
        let (status, text) = match self {
            Failure::Closed => return,
            Failure::TimedOut => (408, "the request did not arrive in time"),
            Failure::TooLarge => (431, "the request's header fields are too large"),
            Failure::Bad(why) => (400, why),
            Failure::Version => (505, "only HTTP/1.0 and HTTP/1.1 are served"),
            Failure::Expectation => (417, "only Expect: 100-continue is understood"),
        };
        let body = format!("toolgate-sink: {text}\n");
        let head = format!(
            "HTTP/1.1 {status} {}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            reason(status),
            body.len()
        );
        let _ = out
            .write_all(head.as_bytes())
            .and_then(|()| out.write_all(body.as_bytes()))
            .and_then(|()| out.flush());
    }
}

fn failure(e: io::Error) -> Failure {
    if e.kind() == io::ErrorKind::TimedOut {
        Failure::TimedOut
    } else {
        Failure::Closed
    }
}

/// A request as read, before it is handed on.
struct Parts {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    oversized: bool,
    keep_alive: bool,
}

fn read_request(
    input: &mut BufReader<impl Read>,
    max_body: usize,
    out: &mut impl Write,
) -> Result<Parts, Failure> {
    let mut budget = MAX_HEAD_BYTES;
    let mut line = Vec::new();
    // Empty lines before a request line are allowed (RFC 9112, 2.2).
    loop {
        read_line(input, &mut budget, &mut line)?;
        if !line.is_empty() {
            break;
        }
    }
    let request_line =
        std::str::from_utf8(&line).map_err(|_| Failure::Bad("the request line is not text"))?;
    let mut words = request_line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (words.next(), words.next(), words.next(), words.next())
    else {
        return Err(Failure::Bad("malformed request line"));
    };
    if method.is_empty() || target.is_empty() {
        return Err(Failure::Bad("malformed request line"));
    }
    let http11 = match version {
        "HTTP/1.1" => true,
        "HTTP/1.0" => false,
        _ => return Err(Failure::Version),
    };
    let (method, target) = (method.to_string(), target.to_string());
    let mut headers: Vec<(String, String)> = Vec::new();
    loop {
        read_line(input, &mut budget, &mut line)?;
        if line.is_empty() {
            break;
        }
        if headers.len() == MAX_HEADERS {
            return Err(Failure::TooLarge);
        }
        let text =
            std::str::from_utf8(&line).map_err(|_| Failure::Bad("a header field is not text"))?;
        let Some((name, value)) = text.split_once(':') else {
            return Err(Failure::Bad("a header field has no colon"));
        };
        // No space before the colon and no folded lines (RFC 9112, 5.1 and 5.2): both
        // have served to smuggle requests past a proxy.
        if name.is_empty()
            || name
                .bytes()
                .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
        {
            return Err(Failure::Bad("malformed header field name"));
        }
        let value = value.trim_matches(|c| c == ' ' || c == '\t');
        headers.push((name.to_string(), value.to_string()));
    }

    let values = |name: &str| -> Vec<String> {
        headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim().to_ascii_lowercase())
            .collect()
    };
    let close = values("connection")
        .iter()
        .any(|v| v.split(',').any(|t| t.trim() == "close"));
    let keep_alive = http11 && !close;
    let chunked = match values("transfer-encoding").as_slice() {
        [] => false,
        [one] if one == "chunked" => true,
        _ => {
            return Err(Failure::Bad(
                "only Transfer-Encoding: chunked is understood",
            ));
        }
    };
    let length = match values("content-length").as_slice() {
        [] => None,
        [one] => Some(
            one.parse::<u64>()
                .map_err(|_| Failure::Bad("Content-Length is not a number"))?,
        ),
        _ => return Err(Failure::Bad("more than one Content-Length")),
    };
    if chunked && length.is_some() {
        return Err(Failure::Bad(
            "both Content-Length and Transfer-Encoding: the body's end is ambiguous",
        ));
    }
    let too_large = length.is_some_and(|n| n > max_body as u64);
    match values("expect").first().map(String::as_str) {
        None => {}
        // The client waits for this before it sends its body; not for one left unread.
        Some("100-continue")
            if http11 && !too_large && (chunked || length.is_some_and(|n| n > 0)) =>
        {
            out.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
                .and_then(|()| out.flush())
                .map_err(|_| Failure::Closed)?;
        }
        Some("100-continue") => {}
        Some(_) => return Err(Failure::Expectation),
    }

    let mut body = Vec::new();
    let mut oversized = too_large;
    if chunked {
        oversized = !read_chunked(input, max_body, &mut body)?;
    } else if let Some(n) = length.filter(|_| !too_large) {
        let got = Read::take(&mut *input, n)
            .read_to_end(&mut body)
            .map_err(failure)?;
        if got as u64 != n {
            return Err(Failure::Closed);
        }
    }
    if oversized {
        body = Vec::new();
    }
    Ok(Parts {
        method,
        target,
        headers,
        body,
        oversized,
        keep_alive: keep_alive && !oversized,
    })
}

/// Reads a chunked body into `body`; false when it grows past `max` (the rest unread).
fn read_chunked(
    input: &mut BufReader<impl Read>,
    max: usize,
    body: &mut Vec<u8>,
) -> Result<bool, Failure> {
    let mut line = Vec::new();
    loop {
        let mut budget = MAX_CHUNK_LINE;
        read_line(input, &mut budget, &mut line)?;
        let text = std::str::from_utf8(&line).map_err(|_| Failure::Bad("malformed chunk size"))?;
        let digits = text.split(';').next().unwrap_or("").trim();
        let size =
            u64::from_str_radix(digits, 16).map_err(|_| Failure::Bad("malformed chunk size"))?;
        if size == 0 {
            let mut budget = MAX_HEAD_BYTES;
            loop {
                read_line(input, &mut budget, &mut line)?;
                if line.is_empty() {
                    return Ok(true);
                }
            }
        }
        if size > max.saturating_sub(body.len()) as u64 {
            return Ok(false);
        }
        let got = Read::take(&mut *input, size)
            .read_to_end(body)
            .map_err(failure)?;
        if got as u64 != size {
            return Err(Failure::Closed);
        }
        let mut budget = MAX_CHUNK_LINE;
        read_line(input, &mut budget, &mut line)?;
        if !line.is_empty() {
            return Err(Failure::Bad("a chunk does not end where its size says"));
        }
    }
}

/// Reads one line into `line`, without its CRLF (or bare LF), charged to `budget`.
fn read_line(
    input: &mut BufReader<impl Read>,
    budget: &mut u64,
    line: &mut Vec<u8>,
) -> Result<(), Failure> {
    line.clear();
    let n = Read::take(&mut *input, *budget)
        .read_until(b'\n', line)
        .map_err(failure)?;
    *budget -= n as u64;
    if line.last() != Some(&b'\n') {
        return Err(if *budget == 0 {
            Failure::TooLarge
        } else {
            Failure::Closed
        });
    }
    line.pop();
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    Ok(())
}

/// What [`read_requests`] made of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadOutcome {
    /// Method and target, or the status it was refused with.
    pub request: Result<(String, String), u16>,
    /// Header fields kept.
    pub headers: usize,
    /// Body bytes read.
    pub body: usize,
    /// The body was over the limit and left unread.
    pub oversized: bool,
}

/// Reads the requests in `bytes` as one connection would, until one ends it: for the
/// fuzz target of this decoder of outside input.
pub fn read_requests(bytes: &[u8], max_body: usize) -> Vec<ReadOutcome> {
    let mut input = BufReader::new(bytes);
    let mut out = Vec::new();
    let mut seen = Vec::new();
    while !input.buffer().is_empty() || !input.get_ref().is_empty() {
        match read_request(&mut input, max_body, &mut out) {
            Ok(p) => {
                let again = p.keep_alive;
                seen.push(ReadOutcome {
                    request: Ok((p.method, p.target)),
                    headers: p.headers.len(),
                    body: p.body.len(),
                    oversized: p.oversized,
                });
                if !again {
                    break;
                }
            }
            Err(f) => {
                let status = match f {
                    Failure::Closed => 0,
                    Failure::TimedOut => 408,
                    Failure::TooLarge => 431,
                    Failure::Bad(_) => 400,
                    Failure::Version => 505,
                    Failure::Expectation => 417,
                };
                seen.push(ReadOutcome {
                    request: Err(status),
                    headers: 0,
                    body: 0,
                    oversized: false,
                });
                break;
            }
        }
    }
    seen
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    /// A connection to a server that hands each request it reads to `answer`.
    fn serve(answer: fn(Request<'_>)) -> std::net::SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                std::thread::spawn(move || {
                    serve_connection(
                        stream,
                        IpAddr::from([127, 0, 0, 1]),
                        Duration::from_millis(500),
                        64,
                        &answer,
                    );
                });
            }
        });
        addr
    }

    fn echo(request: Request<'_>) {
        let text = format!(
            "{} {} {} {}",
            request.method,
            request.target,
            request.oversized,
            String::from_utf8_lossy(&request.body)
        );
        request.respond(200, &[], text.as_bytes());
    }

    fn exchange(addr: std::net::SocketAddr, raw: &[u8]) -> String {
        let mut s = TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(raw).unwrap();
        let mut got = String::new();
        let _ = s.read_to_string(&mut got);
        got
    }

    #[test]
    fn requests_are_read_whole_kept_alive_and_bounded() {
        let addr = serve(echo);
        // Two requests on one connection, the second chunked and closing it.
        let got = exchange(
            addr,
            b"POST /mcp?x=1 HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhelloPOST /mcp HTTP/1.1\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n3\r\nabc\r\n2;ext=1\r\nde\r\n0\r\n\r\n",
        );
        assert!(got.contains("POST /mcp?x=1 false hello"), "{got}");
        assert!(got.contains("POST /mcp false abcde"), "{got}");
        // Over the limit: handed on unread, and the connection closes.
        let got = exchange(addr, b"POST /mcp HTTP/1.1\r\nContent-Length: 65\r\n\r\n");
        assert!(got.ends_with("POST /mcp true "), "{got}");
        assert!(got.contains("Connection: close"), "{got}");
        // Ambiguous framing and folded fields are refused.
        let got = exchange(
            addr,
            b"POST /mcp HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
        );
        assert!(got.starts_with("HTTP/1.1 400"), "{got}");
        let got = exchange(addr, b"GET / HTTP/1.1\r\nA: b\r\n c\r\n\r\n");
        assert!(got.starts_with("HTTP/1.1 400"), "{got}");
        // A body that stops coming is cut off at the deadline.
        let got = exchange(addr, b"POST /mcp HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc");
        assert!(got.starts_with("HTTP/1.1 408"), "{got}");
    }
}
