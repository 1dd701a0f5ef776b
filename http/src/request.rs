//! Reading one HTTP/1.1 request off a connection: the request line, header fields and
//! body (by `Content-Length` or chunked), each bounded, and every framing that two
//! readers could see differently refused (RFC 9112: no space before a colon, no folded
//! fields, not both `Content-Length` and `Transfer-Encoding`, one `Content-Length`).

use std::io::{self, BufRead, BufReader, Read, Write};

/// Longest request line and header fields together (and a chunked body's trailers).
const MAX_HEAD_BYTES: u64 = 64 * 1024;
/// Most header fields in one request.
const MAX_HEADERS: usize = 128;
/// Longest line framing a chunk of a chunked body (its size and extensions).
const MAX_CHUNK_LINE: u64 = 4 * 1024;

/// The reason phrase of `status` (empty for one this table lacks, which HTTP allows).
pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        206 => "Partial Content",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        411 => "Length Required",
        413 => "Content Too Large",
        415 => "Unsupported Media Type",
        417 => "Expectation Failed",
        422 => "Unprocessable Content",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "",
    }
}

/// Why a request was not read; each closes the connection.
pub(crate) enum Failure {
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
    /// Answers the client (nothing for [`Failure::Closed`]); `name` opens the text.
    pub(crate) fn answer(self, name: &str, out: &mut impl Write) {
        let (status, text) = match self {
            Failure::Closed => return,
            Failure::TimedOut => (408, "the request did not arrive in time"),
            Failure::TooLarge => (431, "the request's header fields are too large"),
            Failure::Bad(why) => (400, why),
            Failure::Version => (505, "only HTTP/1.0 and HTTP/1.1 are served"),
            Failure::Expectation => (417, "only Expect: 100-continue is understood"),
        };
        let body = format!("{name}: {text}\n");
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

pub(crate) fn failure(e: io::Error) -> Failure {
    if e.kind() == io::ErrorKind::TimedOut {
        Failure::TimedOut
    } else {
        Failure::Closed
    }
}

/// A request as read, before it is handed on.
pub(crate) struct Parts {
    pub(crate) method: String,
    pub(crate) target: String,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Vec<u8>,
    pub(crate) oversized: bool,
    /// Where an oversized body's unread part stands.
    pub(crate) rest: Option<Rest>,
    pub(crate) keep_alive: bool,
}

/// What is left to read of a body over the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rest {
    /// This many bytes of a `Content-Length` body, whose sender may still wait for
    /// `100 Continue` before it sends them.
    Length { left: u64, continue_pending: bool },
    /// The rest of a chunked body: this many bytes of the current chunk, then the
    /// chunks after it.
    Chunked(u64),
}

/// Reads one request from `input`; bodies over `max_body` are left unread. A client
/// that asked for `100-continue` is told to go on through `out`.
pub(crate) fn read_request(
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
    let mut continue_pending = false;
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
        // An oversized body's sender waits too: told to go on only if the handler
        // reads the rest ([`Rest`]).
        Some("100-continue") => continue_pending = http11 && too_large,
        Some(_) => return Err(Failure::Expectation),
    }

    let mut body = Vec::new();
    let mut rest = None;
    if chunked {
        rest = read_chunked(input, max_body, &mut body)?.map(Rest::Chunked);
    } else if too_large {
        rest = length.map(|n| Rest::Length {
            left: n,
            continue_pending,
        });
    } else if let Some(n) = length {
        let got = Read::take(&mut *input, n)
            .read_to_end(&mut body)
            .map_err(failure)?;
        if got as u64 != n {
            return Err(Failure::Closed);
        }
    }
    let oversized = rest.is_some();
    Ok(Parts {
        method,
        target,
        headers,
        body,
        oversized,
        rest,
        keep_alive: keep_alive && !oversized,
    })
}

/// Reads a chunked body into `body`. When a chunk would take it past `max`, stops
/// before that chunk's data and returns its size: the rest is unread.
fn read_chunked(
    input: &mut BufReader<impl Read>,
    max: usize,
    body: &mut Vec<u8>,
) -> Result<Option<u64>, Failure> {
    let mut line = Vec::new();
    loop {
        let size = read_chunk_size(input, &mut line)?;
        if size == 0 {
            return Ok(None);
        }
        if size > max.saturating_sub(body.len()) as u64 {
            return Ok(Some(size));
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

/// Reads at most `max` more bytes of an oversized body through `f`, keeping `rest` up
/// to date; true when the body's end was reached.
pub(crate) fn read_rest(
    input: &mut BufReader<impl Read>,
    out: &mut impl Write,
    rest: &mut Rest,
    max: u64,
    f: &mut dyn FnMut(&[u8]),
) -> Result<bool, Failure> {
    let mut budget = max;
    let mut line = Vec::new();
    loop {
        match rest {
            Rest::Length {
                left,
                continue_pending,
            } => {
                if std::mem::take(continue_pending) {
                    out.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
                        .and_then(|()| out.flush())
                        .map_err(|_| Failure::Closed)?;
                }
                let passed = pass(input, (*left).min(budget), f)?;
                *left -= passed;
                budget -= passed;
                if *left == 0 {
                    return Ok(true);
                }
                if budget == 0 {
                    return Ok(false);
                }
            }
            Rest::Chunked(left) => {
                if *left > 0 {
                    let passed = pass(input, (*left).min(budget), f)?;
                    *left -= passed;
                    budget -= passed;
                    if *left > 0 {
                        return Ok(false);
                    }
                    let mut line_budget = MAX_CHUNK_LINE;
                    read_line(input, &mut line_budget, &mut line)?;
                    if !line.is_empty() {
                        return Err(Failure::Bad("a chunk does not end where its size says"));
                    }
                }
                let size = read_chunk_size(input, &mut line)?;
                if size == 0 {
                    return Ok(true);
                }
                *left = size;
                if budget == 0 {
                    return Ok(false);
                }
            }
        }
    }
}

/// Reads a chunk's size line; after the last chunk (size 0), also its trailer fields
/// up to the empty line that ends the body.
fn read_chunk_size(input: &mut BufReader<impl Read>, line: &mut Vec<u8>) -> Result<u64, Failure> {
    let mut budget = MAX_CHUNK_LINE;
    read_line(input, &mut budget, line)?;
    let text = std::str::from_utf8(line).map_err(|_| Failure::Bad("malformed chunk size"))?;
    let digits = text.split(';').next().unwrap_or("").trim();
    let size = u64::from_str_radix(digits, 16).map_err(|_| Failure::Bad("malformed chunk size"))?;
    if size == 0 {
        let mut budget = MAX_HEAD_BYTES;
        loop {
            read_line(input, &mut budget, line)?;
            if line.is_empty() {
                break;
            }
        }
    }
    Ok(size)
}

/// Hands the next `n` bytes of `input` to `f` as they arrive; an early end is the
/// client's closing.
fn pass(
    input: &mut BufReader<impl Read>,
    n: u64,
    f: &mut dyn FnMut(&[u8]),
) -> Result<u64, Failure> {
    let mut passed = 0;
    while passed < n {
        let chunk = input.fill_buf().map_err(failure)?;
        if chunk.is_empty() {
            return Err(Failure::Closed);
        }
        let take = chunk
            .len()
            .min(usize::try_from(n - passed).unwrap_or(usize::MAX));
        f(&chunk[..take]);
        input.consume(take);
        passed += take as u64;
    }
    Ok(passed)
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
    /// The body was over the limit and not read whole.
    pub oversized: bool,
    /// Bytes of an oversized body's rest streamed past ([`read_rest`], at most
    /// [`READ_REST_MAX`]), and whether its end was reached (or the status its framing
    /// failed with).
    pub rest: Option<(usize, Result<bool, u16>)>,
}

/// How much of an oversized body's rest [`read_requests`] streams.
pub const READ_REST_MAX: u64 = 4096;

fn status(f: &Failure) -> u16 {
    match f {
        Failure::Closed => 0,
        Failure::TimedOut => 408,
        Failure::TooLarge => 431,
        Failure::Bad(_) => 400,
        Failure::Version => 505,
        Failure::Expectation => 417,
    }
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
                let rest = p.rest.map(|mut rest| {
                    let mut streamed = 0;
                    let whole =
                        read_rest(&mut input, &mut out, &mut rest, READ_REST_MAX, &mut |b| {
                            streamed += b.len();
                        });
                    (streamed, whole.map_err(|f| status(&f)))
                });
                seen.push(ReadOutcome {
                    request: Ok((p.method, p.target)),
                    headers: p.headers.len(),
                    body: p.body.len(),
                    oversized: p.oversized,
                    rest,
                });
                if !again {
                    break;
                }
            }
            Err(f) => {
                seen.push(ReadOutcome {
                    request: Err(status(&f)),
                    headers: 0,
                    body: 0,
                    oversized: false,
                    rest: None,
                });
                break;
            }
        }
    }
    seen
}
