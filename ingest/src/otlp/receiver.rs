//! The OTLP/HTTP trace receiver: `POST /v1/traces`, protobuf or JSON, gzip or not, as
//! OpenTelemetry SDK exporters send them. Each request's tool spans become events that
//! are handed to a [`Publish`] (the engine's events topic) and acknowledged only once
//! published. Every answer tells the exporter the truth about what to do next:
//!
//! - 200 once the events are published, with `partial_success` counting the tool spans
//!   rejected for good: not mappable, with an event over
//!   [`ReceiverOptions::max_event_bytes`], or refused by the publisher
//!   ([`PublishError::Refused`]). The other spans are published once; the exporter does
//!   not send them again;
//! - 401 for a request without the bearer token, when one is configured
//!   ([`ReceiverOptions::token`]), before anything else is looked at;
//! - 400 for a body that does not decode, 404 and 405 for another path or method, 413
//!   past the size limit, 415 for an encoding it does not speak, 408 for a body that did
//!   not arrive within [`ReceiverOptions::read_timeout`]; none of these is retried;
//! - 503 with `Retry-After` only when a retry can succeed: publishing failed for now
//!   ([`PublishError::Unavailable`]), so nothing is lost, or
//!   [`ReceiverOptions::max_connections`] requests were already in progress.
//!
//! Errors carry a `google.rpc.Status` in the request's encoding, as OTLP/HTTP specifies.
//!
//! No one client can hold the listener: it runs on `toolgate-http`, which serves at
//! most [`ReceiverOptions::max_connections`] connections at once, each on a thread of
//! its own (one more is answered 503 with `Retry-After` at once), reads each request
//! whole within [`ReceiverOptions::read_timeout`] of its first byte (408 otherwise),
//! closes a kept-alive connection idle for [`IDLE_TIMEOUT`], and never reads a body
//! over the limit into memory.

use std::io::Read;
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use toolgate_http::{Limits, Request, Running, Server};
use toolgate_protocol::Event;

use super::genai::{MappingOptions, RejectedSpan, events_from_spans};
use super::{Encoding, decode_request, proto};
use crate::IngestError;

/// Where the receiver's events go.
pub trait Publish: Send {
    /// Publishes `events` durably (acknowledged), or says why not: which events can
    /// never be published, or that nothing can be published now.
    fn publish(&mut self, events: &[Event]) -> Result<(), PublishError>;
}

/// One event a [`Publish`] will never accept, whatever the number of tries.
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    /// Its index in the slice given to [`Publish::publish`].
    pub index: usize,
    /// Why, e.g. over the broker's message size limit.
    pub reason: String,
}

/// Why a [`Publish`] did not publish every event. The two cases call for opposite
/// answers (200 with `partial_success`, or 503), so they are told apart by type.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PublishError {
    /// These events can never be published: sending them again gets the same answer.
    /// Every other event was published.
    #[error("{} event(s) refused for good", .0.len())]
    Refused(Vec<Refusal>),
    /// Nothing can be published now (the broker is unreachable or did not acknowledge
    /// in time); the same events may be published if sent again.
    #[error("{0}")]
    Unavailable(String),
}

/// What the receiver has done, for metrics.
#[derive(Debug, Default)]
pub struct ReceiverCounters {
    /// Export requests answered 200.
    pub requests: AtomicU64,
    /// Requests refused (400, 404, 405, 413, 415).
    pub bad_requests: AtomicU64,
    /// Requests without the bearer token (401).
    pub unauthorized: AtomicU64,
    /// Requests answered 503 because publishing failed for now.
    pub publish_failures: AtomicU64,
    /// What the HTTP server refused itself: connections past
    /// [`ReceiverOptions::max_connections`] (503 at once), requests not whole within
    /// [`ReceiverOptions::read_timeout`] (408), and requests it does not read.
    pub http: Arc<toolgate_http::Counters>,
    /// Spans received in accepted requests.
    pub spans: AtomicU64,
    /// Tool spans turned into published events.
    pub tool_spans: AtomicU64,
    /// Tool spans rejected for good: not mappable, with an event over the size limit,
    /// or refused by the publisher.
    pub rejected_spans: AtomicU64,
    /// Spans that are not tool executions.
    pub ignored_spans: AtomicU64,
}

/// The default [`ReceiverOptions::read_timeout`]: minutes of slack for a batch of a
/// few MiB on a slow link would let a silent client hold its slot as long; ten seconds
/// is what OpenTelemetry exporters wait for an answer by default.
pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// The default [`ReceiverOptions::max_connections`].
pub const DEFAULT_MAX_CONNECTIONS: usize = 64;

/// How long a kept-alive connection may wait for its next request. Short, because an
/// idle connection holds one of `max_connections`: exporters send a batch every few
/// seconds and reconnect cheaply.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(2);

/// How the receiver listens and maps.
#[derive(Debug, Clone)]
pub struct ReceiverOptions {
    /// `host:port` to listen on.
    pub listen: String,
    /// Request bodies larger than this (after gunzip) are refused.
    pub max_body_bytes: usize,
    /// The largest encoded event. A tool span with an event over it is rejected in
    /// `partial_success` before anything is published: the engine would dead-letter
    /// the event, and sending the span again cannot make it smaller.
    pub max_event_bytes: usize,
    /// How long a request may take to arrive whole, counted from its first byte. It
    /// bounds how long one slow or silent client holds one of `max_connections`; a
    /// request still incomplete then is answered 408.
    pub read_timeout: Duration,
    /// Connections served at once (idle kept-alive ones included, for at most
    /// [`IDLE_TIMEOUT`]). One more is answered 503 with `Retry-After` at once, unread,
    /// so that exporters back off instead of waiting behind stalled clients, and
    /// memory stays bounded (each request may hold `max_body_bytes`).
    pub max_connections: usize,
    /// How spans become events.
    pub mapping: MappingOptions,
    /// The bearer token every request must carry; `None` serves anyone (loopback).
    pub token: Option<String>,
}

/// A running receiver; stops when dropped, after answering the requests in progress.
pub struct OtlpReceiver {
    running: Running,
}

/// What the request threads share.
struct Shared {
    options: ReceiverOptions,
    /// One publish at a time: a batch's acknowledgements are told apart from the next's.
    publisher: Mutex<Box<dyn Publish>>,
    counters: Arc<ReceiverCounters>,
}

impl OtlpReceiver {
    /// Listens and serves on its own threads.
    pub fn start(
        options: ReceiverOptions,
        publisher: Box<dyn Publish>,
        counters: Arc<ReceiverCounters>,
    ) -> Result<OtlpReceiver, IngestError> {
        if options.max_connections == 0 || options.read_timeout.is_zero() {
            return Err(IngestError::Input {
                path: options.listen.clone(),
                message: "the OTLP receiver needs max_connections and read_timeout above zero"
                    .into(),
            });
        }
        let listener = TcpListener::bind(&options.listen).map_err(|e| IngestError::Input {
            path: options.listen.clone(),
            message: format!("cannot listen for OTLP/HTTP: {e}"),
        })?;
        let server = Server::new(
            "toolgate-otlp",
            Limits {
                max_connections: options.max_connections,
                setting: "the OTLP receiver's max_connections",
                request_timeout: options.read_timeout,
                idle_timeout: IDLE_TIMEOUT.min(options.read_timeout),
                max_body: raw_limit(options.max_body_bytes),
            },
            Arc::clone(&counters.http),
        );
        let shared = Arc::new(Shared {
            options,
            publisher: Mutex::new(publisher),
            counters,
        });
        let running = server
            .spawn(
                listener,
                "otlp",
                Arc::new(move |request: Request<'_>| serve(request, &shared)),
            )
            .map_err(|e| IngestError::io("the OTLP receiver thread", e))?;
        Ok(OtlpReceiver { running })
    }

    /// Where it listens.
    pub fn local_addr(&self) -> SocketAddr {
        self.running.local_addr()
    }

    /// Connections open now.
    pub fn open_connections(&self) -> usize {
        self.running.server().open_connections()
    }
}

/// The most bytes read of a body as sent: gzip makes incompressible data slightly
/// larger, so a gzipped body whose content is within `max_body_bytes` must fit.
fn raw_limit(max_body_bytes: usize) -> usize {
    max_body_bytes
        .saturating_add(max_body_bytes / 64)
        .saturating_add(1024)
}

/// An answer: status, body, content type.
struct Answer {
    status: u16,
    body: Vec<u8>,
    content_type: &'static str,
    retry_after: bool,
}

/// Whether an `Authorization` header carries `token` as its bearer token. Compared in
/// time that does not depend on where they differ.
fn authorized(authorization: Option<&str>, token: &str) -> bool {
    let Some(given) = authorization.and_then(|v| {
        let (scheme, value) = v.trim().split_once(' ')?;
        scheme
            .eq_ignore_ascii_case("bearer")
            .then_some(value.trim())
    }) else {
        return false;
    };
    let (a, b) = (given.as_bytes(), token.as_bytes());
    let diff = a
        .iter()
        .zip(b)
        .fold(a.len() ^ b.len(), |acc, (x, y)| acc | usize::from(x ^ y));
    std::hint::black_box(diff) == 0
}

fn error(status: u16, code: i32, message: &str, encoding: Option<Encoding>) -> Answer {
    match encoding {
        Some(Encoding::Protobuf) => Answer {
            status,
            body: proto::encode_status(code, message),
            content_type: "application/x-protobuf",
            retry_after: false,
        },
        Some(Encoding::Json) => Answer {
            status,
            body: serde_json::json!({"code": code, "message": message})
                .to_string()
                .into_bytes(),
            content_type: "application/json",
            retry_after: false,
        },
        None => Answer {
            status,
            body: message.as_bytes().to_vec(),
            content_type: "text/plain; charset=utf-8",
            retry_after: false,
        },
    }
}

// google.rpc.Code values.
const INVALID_ARGUMENT: i32 = 3;
const UNAUTHENTICATED: i32 = 16;
const NOT_FOUND: i32 = 5;
const RESOURCE_EXHAUSTED: i32 = 8;
const UNAVAILABLE: i32 = 14;

/// Answers one request, on its connection's thread, and counts the answer.
fn serve(mut request: Request<'_>, shared: &Shared) {
    let answer = handle(&mut request, shared);
    let counters = &shared.counters;
    match answer.status {
        200 => counters.requests.fetch_add(1, Ordering::Relaxed),
        503 => counters.publish_failures.fetch_add(1, Ordering::Relaxed),
        401 => {
            let n = counters.unauthorized.fetch_add(1, Ordering::Relaxed) + 1;
            // Audited, without flooding the log: the first, then at each power of two.
            if n.is_power_of_two() {
                tracing::warn!(
                    peer = %request.peer,
                    refused = n,
                    "OTLP request without the bearer token refused (401)"
                );
            }
            0
        }
        _ => counters.bad_requests.fetch_add(1, Ordering::Relaxed),
    };
    respond(request, answer);
}

fn respond(request: Request<'_>, answer: Answer) {
    if answer.status != 200 {
        tracing::debug!(
            status = answer.status,
            answer = %String::from_utf8_lossy(&answer.body),
            "refused an OTLP request"
        );
    }
    let mut headers = vec![("Content-Type".to_string(), answer.content_type.to_string())];
    if answer.retry_after {
        headers.push(("Retry-After".to_string(), "1".to_string()));
    }
    if answer.status == 401 {
        headers.push((
            "WWW-Authenticate".to_string(),
            "Bearer realm=\"toolgate-otlp\"".to_string(),
        ));
    }
    request.respond(answer.status, &headers, &answer.body);
}

/// The body's encoding, from `Content-Type`; what that said when it is neither.
fn encoding_of(request: &Request<'_>) -> Result<Encoding, String> {
    let content_type = request
        .header("Content-Type")
        .unwrap_or_default()
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    match content_type.as_str() {
        "application/x-protobuf" => Ok(Encoding::Protobuf),
        "application/json" => Ok(Encoding::Json),
        _ => Err(content_type),
    }
}

fn handle(request: &mut Request<'_>, shared: &Shared) -> Answer {
    let options = &shared.options;
    // Before anything else: an unknown client learns nothing, not even the path.
    if let Some(token) = &options.token
        && !authorized(request.header("Authorization"), token)
    {
        return error(
            401,
            UNAUTHENTICATED,
            "a bearer token is required (Authorization: Bearer <[otlp] token_env>)",
            None,
        );
    }
    let path = request.target.split('?').next().unwrap_or_default();
    if path != "/v1/traces" {
        return error(
            404,
            NOT_FOUND,
            &format!("no such path {path}; traces go to /v1/traces"),
            None,
        );
    }
    if request.method != "POST" {
        return error(405, INVALID_ARGUMENT, "/v1/traces takes POST", None);
    }
    let encoding = match encoding_of(request) {
        Ok(e) => e,
        Err(other) => {
            return error(
                415,
                INVALID_ARGUMENT,
                &format!(
                    "Content-Type {other:?}: expected application/x-protobuf or application/json"
                ),
                None,
            );
        }
    };
    let gzip = match request
        .header("Content-Encoding")
        .map(|v| v.trim().to_ascii_lowercase())
    {
        None => false,
        Some(e) if e.is_empty() || e == "identity" => false,
        Some(e) if e == "gzip" => true,
        Some(other) => {
            return error(
                415,
                INVALID_ARGUMENT,
                &format!("Content-Encoding {other:?}: expected gzip or none"),
                Some(encoding),
            );
        }
    };
    let body = match read_body(request, gzip, options.max_body_bytes) {
        Body::Complete(body) => body,
        Body::TooLarge => {
            return error(
                413,
                RESOURCE_EXHAUSTED,
                &format!("the body is over {} bytes", options.max_body_bytes),
                Some(encoding),
            );
        }
        Body::Failed(e) => {
            return error(
                400,
                INVALID_ARGUMENT,
                &format!("reading the body: {e}"),
                Some(encoding),
            );
        }
    };
    let resources = match decode_request(&body, encoding) {
        Ok(r) => r,
        Err(e) => return error(400, INVALID_ARGUMENT, &e.to_string(), Some(encoding)),
    };
    let converted = events_from_spans(&resources, &options.mapping);
    // A call and a result for each mapped span.
    let mapped = converted.events.len() as u64 / 2;
    let mut rejected = converted.rejected;
    let unmappable = rejected.len();
    let events = withhold_oversized(converted.events, options.max_event_bytes, &mut rejected);
    if !events.is_empty() {
        let published = {
            let mut publisher = shared
                .publisher
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            publisher.publish(&events)
        };
        match published {
            Ok(()) => {}
            Err(PublishError::Refused(refusals)) => {
                reject_refused(&events, &refusals, &mut rejected);
            }
            Err(PublishError::Unavailable(e)) => {
                let mut answer = error(
                    503,
                    UNAVAILABLE,
                    &format!("cannot publish the events now: {e}"),
                    Some(encoding),
                );
                answer.retry_after = true;
                return answer;
            }
        }
    }
    let spans: u64 = resources.iter().map(|r| r.spans.len() as u64).sum();
    let withheld = (rejected.len() - unmappable) as u64;
    let counters = &shared.counters;
    counters.spans.fetch_add(spans, Ordering::Relaxed);
    counters
        .tool_spans
        .fetch_add(mapped.saturating_sub(withheld), Ordering::Relaxed);
    counters
        .rejected_spans
        .fetch_add(rejected.len() as u64, Ordering::Relaxed);
    counters
        .ignored_spans
        .fetch_add(converted.ignored, Ordering::Relaxed);
    accepted(&rejected, encoding)
}

/// The 200 answer, with `partial_success` when spans were rejected.
fn accepted(rejected: &[RejectedSpan], encoding: Encoding) -> Answer {
    let count = rejected.len() as u64;
    let message = if rejected.is_empty() {
        String::new()
    } else {
        let shown: Vec<String> = rejected
            .iter()
            .take(3)
            .map(|r| {
                format!(
                    "span {:?} ({}/{}): {}",
                    r.name, r.trace_id, r.span_id, r.error
                )
            })
            .collect();
        let message = format!("{count} tool span(s) rejected: {}", shown.join("; "));
        tracing::warn!(rejected = count, "{message}");
        message
    };
    match encoding {
        Encoding::Protobuf => Answer {
            status: 200,
            body: proto::encode_response(count, &message),
            content_type: "application/x-protobuf",
            retry_after: false,
        },
        Encoding::Json => {
            let body = if count == 0 {
                serde_json::json!({})
            } else {
                serde_json::json!({"partialSuccess": {"rejectedSpans": count.to_string(), "errorMessage": message}})
            };
            Answer {
                status: 200,
                body: body.to_string().into_bytes(),
                content_type: "application/json",
                retry_after: false,
            }
        }
    }
}

/// The span an event came from: every event made from a span carries its trace and
/// span ids, and the events of one span are rejected together.
fn span_key(event: &Event) -> (Option<String>, Option<String>) {
    (event.trace_id.clone(), event.span_id.clone())
}

fn rejected_span(event: &Event, error: String) -> RejectedSpan {
    RejectedSpan {
        trace_id: event.trace_id.clone().unwrap_or_default(),
        span_id: event.span_id.clone().unwrap_or_default(),
        // The span's name is not kept on its events; its tool is.
        name: event.tool().unwrap_or_default().to_string(),
        error,
    }
}

/// Takes out the events of every span that has an event over `max_bytes`, and
/// rejects those spans, before anything is published: the whole span or none of it.
fn withhold_oversized(
    mut events: Vec<Event>,
    max_bytes: usize,
    rejected: &mut Vec<RejectedSpan>,
) -> Vec<Event> {
    let mut too_large = Vec::new();
    for event in &events {
        let size = event.to_json().len();
        let key = span_key(event);
        if size > max_bytes && !too_large.contains(&key) {
            rejected.push(rejected_span(
                event,
                format!("an event of {size} bytes is over the {max_bytes}-byte event limit"),
            ));
            too_large.push(key);
        }
    }
    if !too_large.is_empty() {
        events.retain(|e| !too_large.contains(&span_key(e)));
    }
    events
}

/// Rejects the spans of the events the publisher refused for good, once per span.
fn reject_refused(events: &[Event], refusals: &[Refusal], rejected: &mut Vec<RejectedSpan>) {
    let mut seen = Vec::new();
    for refusal in refusals {
        let Some(event) = events.get(refusal.index) else {
            continue;
        };
        let key = span_key(event);
        if !seen.contains(&key) {
            rejected.push(rejected_span(
                event,
                format!("refused by the publisher: {}", refusal.reason),
            ));
            seen.push(key);
        }
    }
}

/// What became of a request's body.
enum Body {
    Complete(Vec<u8>),
    TooLarge,
    Failed(std::io::Error),
}

/// The body, gunzipped when `gzip`, if it is within `max_bytes`. The server read it
/// whole already, within the request's deadline, unless it was over the raw limit.
fn read_body(request: &mut Request<'_>, gzip: bool, max_bytes: usize) -> Body {
    if request.oversized || (!gzip && request.body.len() > max_bytes) {
        return Body::TooLarge;
    }
    if !gzip {
        return Body::Complete(std::mem::take(&mut request.body));
    }
    let limit = max_bytes as u64 + 1;
    let mut body = Vec::new();
    let mut decoder = flate2::read::GzDecoder::new(request.body.as_slice());
    if let Err(e) = decoder.by_ref().take(limit).read_to_end(&mut body) {
        return Body::Failed(e);
    }
    if body.len() > max_bytes {
        return Body::TooLarge;
    }
    Body::Complete(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issue_22_only_the_configured_bearer_token_is_let_in() {
        let token = "s3cret-token";
        for ok in [
            "Bearer s3cret-token",
            "bearer s3cret-token",
            "  Bearer   s3cret-token ",
        ] {
            assert!(authorized(Some(ok), token), "{ok:?}");
        }
        for bad in [
            None,
            Some(""),
            Some("s3cret-token"),
            Some("Basic s3cret-token"),
            Some("Bearer s3cret-toke"),
            Some("Bearer s3cret-token2"),
            Some("Bearer S3CRET-TOKEN"),
            Some("Bearer"),
        ] {
            assert!(!authorized(bad, token), "{bad:?}");
        }
    }
}
