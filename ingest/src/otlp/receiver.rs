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
//! - 400 for a body that does not decode, 404 and 405 for another path or method, 413
//!   past the size limit, 415 for an encoding it does not speak, 408 for a body that did
//!   not arrive within [`ReceiverOptions::read_timeout`]; none of these is retried;
//! - 503 with `Retry-After` only when a retry can succeed: publishing failed for now
//!   ([`PublishError::Unavailable`]), so nothing is lost, or
//!   [`ReceiverOptions::max_connections`] requests were already in progress.
//!
//! Errors carry a `google.rpc.Status` in the request's encoding, as OTLP/HTTP specifies.
//!
//! No one client can hold the listener. tiny_http reads each connection's headers (and
//! bodies of up to 1 KiB) on threads of its own; one dispatcher thread takes the
//! requests and hands each to a thread of its own, at most `max_connections` at once,
//! so a slow body delays only its own request. tiny_http 0.12 gives no access to its
//! sockets, so no timeout can be set on them and a blocked read cannot be interrupted.
//! The deadline is kept in two ways instead: a body that trickles is cut off at its
//! deadline and answered 408; a client that goes silent gives its slot back at the
//! deadline, and its thread waits for it alone (answering 408 if it ever sends again)
//! until it closes the connection.

use std::io::Read;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

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
    /// Requests answered 503 because publishing failed for now.
    pub publish_failures: AtomicU64,
    /// Requests answered 503 at once, their body unread, because
    /// [`ReceiverOptions::max_connections`] requests were in progress.
    pub overloaded: AtomicU64,
    /// Requests whose body did not arrive within [`ReceiverOptions::read_timeout`]:
    /// their slot was given back then, and 408 answered if the client sent again.
    pub read_timeouts: AtomicU64,
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
    /// How long a request's body may take to arrive, counted from when its headers
    /// were read. It bounds how long one slow or silent client holds one of
    /// `max_connections`; a body still incomplete then is answered 408.
    pub read_timeout: Duration,
    /// Requests in progress at once (body arriving, or being decoded and published).
    /// One more is answered 503 with `Retry-After` at once, its body unread, so that
    /// exporters back off instead of waiting behind stalled clients, and memory stays
    /// bounded (each request may hold `max_body_bytes`). Idle keep-alive connections
    /// are not counted.
    pub max_connections: usize,
    /// How spans become events.
    pub mapping: MappingOptions,
}

/// A running receiver; stops when dropped.
pub struct OtlpReceiver {
    server: Arc<tiny_http::Server>,
    addr: SocketAddr,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

/// What the dispatcher and the request threads share.
struct Shared {
    options: ReceiverOptions,
    /// One publish at a time: a batch's acknowledgements are told apart from the next's.
    publisher: Mutex<Box<dyn Publish>>,
    counters: Arc<ReceiverCounters>,
    /// Requests holding a slot (at most `max_connections`).
    in_flight: AtomicUsize,
    stop: AtomicBool,
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
        let server = tiny_http::Server::http(&options.listen).map_err(|e| IngestError::Input {
            path: options.listen.clone(),
            message: format!("cannot listen for OTLP/HTTP: {e}"),
        })?;
        let addr = server
            .server_addr()
            .to_ip()
            .ok_or_else(|| IngestError::Input {
                path: options.listen.clone(),
                message: "not an IP address".into(),
            })?;
        let server = Arc::new(server);
        let shared = Arc::new(Shared {
            options,
            publisher: Mutex::new(publisher),
            counters,
            in_flight: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
        });
        let serving = Arc::clone(&server);
        let dispatching = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("otlp".into())
            .spawn(move || dispatch(&serving, &dispatching))
            .map_err(|e| IngestError::io("the OTLP receiver thread", e))?;
        Ok(OtlpReceiver {
            server,
            addr,
            shared,
            thread: Some(thread),
        })
    }

    /// Where it listens.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Requests in progress now (body arriving, or being decoded and published).
    pub fn in_flight(&self) -> usize {
        self.shared.in_flight.load(Ordering::Acquire)
    }
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        self.server.unblock();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// How often the dispatcher looks at the stop flag and for requests past their deadline.
const TICK: Duration = Duration::from_millis(50);

/// A request's slot: one of `max_connections`, given back exactly once, when the
/// request is done or at its deadline if its body is still arriving then.
struct Slot {
    state: AtomicU8,
    deadline: Instant,
}

/// The request may be waiting on its client: the deadline gives the slot back.
const RECEIVING: u8 = 0;
/// The body is in; decoding, publishing and answering take our time, not the client's.
const WORKING: u8 = 1;
/// The slot was given back.
const RELEASED: u8 = 2;

impl Slot {
    /// Gives the slot back because the body did not arrive in time; false when it was
    /// given back already or the body had arrived.
    fn expire(&self, shared: &Shared) -> bool {
        let expired = self
            .state
            .compare_exchange(RECEIVING, RELEASED, Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        if expired {
            shared.in_flight.fetch_sub(1, Ordering::AcqRel);
            shared
                .counters
                .read_timeouts
                .fetch_add(1, Ordering::Relaxed);
        }
        expired
    }

    /// The body arrived: the slot is kept until the answer is sent. False when the
    /// deadline gave it back first.
    fn start_work(&self) -> bool {
        self.state
            .compare_exchange(RECEIVING, WORKING, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// The request is done.
    fn finish(&self, shared: &Shared) {
        if self.state.swap(RELEASED, Ordering::AcqRel) != RELEASED {
            shared.in_flight.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// Finishes a slot however its request thread ends.
struct Release<'a> {
    slot: &'a Slot,
    shared: &'a Shared,
}

impl Drop for Release<'_> {
    fn drop(&mut self) {
        self.slot.finish(self.shared);
    }
}

/// Takes requests from tiny_http and hands each to a thread of its own. It never
/// reads a body nor answers: tiny_http reads what is left of a body when a request
/// is dropped, and a stalled client would hold the dispatcher there.
fn dispatch(server: &tiny_http::Server, shared: &Arc<Shared>) {
    let mut slots: Vec<Arc<Slot>> = Vec::new();
    while !shared.stop.load(Ordering::Acquire) {
        let received = server.recv_timeout(TICK);
        expire_late(&mut slots, shared);
        match received {
            Ok(Some(request)) => admit(request, &mut slots, shared),
            Ok(None) => {}
            Err(e) => {
                // tiny_http's accept loop has ended: no request will come any more.
                tracing::error!(error = %e, "the OTLP receiver stopped accepting connections");
                break;
            }
        }
    }
    // Requests in progress are answered before the receiver is gone, within a deadline.
    let grace = Instant::now() + shared.options.read_timeout;
    while shared.in_flight.load(Ordering::Acquire) > 0 && Instant::now() < grace {
        std::thread::sleep(TICK);
        expire_late(&mut slots, shared);
    }
}

/// Gives back the slots of requests whose body is still arriving past their deadline.
fn expire_late(slots: &mut Vec<Arc<Slot>>, shared: &Shared) {
    let now = Instant::now();
    slots.retain(|slot| {
        if now >= slot.deadline {
            slot.expire(shared);
        }
        slot.state.load(Ordering::Acquire) != RELEASED
    });
}

fn admit(request: tiny_http::Request, slots: &mut Vec<Arc<Slot>>, shared: &Arc<Shared>) {
    let max = shared.options.max_connections;
    if shared.in_flight.load(Ordering::Acquire) >= max {
        shared.counters.overloaded.fetch_add(1, Ordering::Relaxed);
        let mut answer = error(
            503,
            UNAVAILABLE,
            &format!("{max} requests are in progress; retry later"),
            encoding_of(&request).ok(),
        );
        answer.retry_after = true;
        if let Some(request) = on_own_thread("otlp-refuse", request, move |r| respond(r, answer)) {
            // Out of threads: left unanswered rather than answered here (see above).
            std::mem::forget(request);
        }
        return;
    }
    shared.in_flight.fetch_add(1, Ordering::AcqRel);
    let slot = Arc::new(Slot {
        state: AtomicU8::new(RECEIVING),
        deadline: Instant::now() + shared.options.read_timeout,
    });
    slots.push(Arc::clone(&slot));
    let (mine, theirs) = (Arc::clone(&slot), Arc::clone(shared));
    let started = on_own_thread("otlp-request", request, move |request| {
        let _release = Release {
            slot: &mine,
            shared: &theirs,
        };
        serve(request, &mine, &theirs);
    });
    if let Some(request) = started {
        slot.finish(shared);
        std::mem::forget(request);
    }
}

/// Runs `work` with the request on a new thread; gives the request back when no
/// thread could be started.
fn on_own_thread(
    name: &str,
    request: tiny_http::Request,
    work: impl FnOnce(tiny_http::Request) + Send + 'static,
) -> Option<tiny_http::Request> {
    let (tx, rx) = std::sync::mpsc::sync_channel::<tiny_http::Request>(1);
    let started = std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            if let Ok(request) = rx.recv() {
                work(request);
            }
        });
    match started {
        Ok(_) => tx.send(request).err().map(|e| e.0),
        Err(e) => {
            tracing::error!(error = %e, "cannot start a thread for an OTLP request");
            Some(request)
        }
    }
}

/// An answer: status, body, content type.
struct Answer {
    status: u16,
    body: Vec<u8>,
    content_type: &'static str,
    retry_after: bool,
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

fn timed_out(read_timeout: Duration, encoding: Encoding) -> Answer {
    error(
        408,
        DEADLINE_EXCEEDED,
        &format!("the body did not arrive within {read_timeout:?}"),
        Some(encoding),
    )
}

// google.rpc.Code values.
const INVALID_ARGUMENT: i32 = 3;
const DEADLINE_EXCEEDED: i32 = 4;
const NOT_FOUND: i32 = 5;
const RESOURCE_EXHAUSTED: i32 = 8;
const UNAVAILABLE: i32 = 14;

/// Answers one request, on its own thread, and counts the answer.
fn serve(mut request: tiny_http::Request, slot: &Slot, shared: &Shared) {
    let answer = handle(&mut request, slot, shared);
    let counters = &shared.counters;
    match answer.status {
        200 => counters.requests.fetch_add(1, Ordering::Relaxed),
        503 => counters.publish_failures.fetch_add(1, Ordering::Relaxed),
        // Counted in read_timeouts when the slot was given back.
        408 => 0,
        _ => counters.bad_requests.fetch_add(1, Ordering::Relaxed),
    };
    respond(request, answer);
}

fn respond(request: tiny_http::Request, answer: Answer) {
    if answer.status != 200 {
        tracing::debug!(
            status = answer.status,
            answer = %String::from_utf8_lossy(&answer.body),
            "refused an OTLP request"
        );
    }
    let mut response = tiny_http::Response::from_data(answer.body)
        .with_status_code(answer.status)
        .with_header(header("Content-Type", answer.content_type));
    if answer.retry_after {
        response = response.with_header(header("Retry-After", "1"));
    }
    let _ = request.respond(response);
}

fn header(name: &'static str, value: &'static str) -> tiny_http::Header {
    tiny_http::Header::from_bytes(name, value).expect("the receiver's headers are static ASCII")
}

fn header_value<'a>(request: &'a tiny_http::Request, name: &'static str) -> Option<&'a str> {
    request
        .headers()
        .iter()
        .find(|h| h.field.equiv(name))
        .map(|h| h.value.as_str())
}

/// The body's encoding, from `Content-Type`; what that said when it is neither.
fn encoding_of(request: &tiny_http::Request) -> Result<Encoding, String> {
    let content_type = header_value(request, "Content-Type")
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

fn handle(request: &mut tiny_http::Request, slot: &Slot, shared: &Shared) -> Answer {
    let options = &shared.options;
    let path = request.url().split('?').next().unwrap_or_default();
    if path != "/v1/traces" {
        return error(
            404,
            NOT_FOUND,
            &format!("no such path {path}; traces go to /v1/traces"),
            None,
        );
    }
    if *request.method() != tiny_http::Method::Post {
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
    let gzip =
        match header_value(request, "Content-Encoding").map(|v| v.trim().to_ascii_lowercase()) {
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
    let body = match read_body(request, gzip, options.max_body_bytes, slot.deadline) {
        Body::Complete(body) => body,
        Body::TimedOut => {
            slot.expire(shared);
            return timed_out(options.read_timeout, encoding);
        }
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
    if !slot.start_work() {
        // The last bytes came after the deadline, which gave the slot back already.
        return timed_out(options.read_timeout, encoding);
    }
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
    TimedOut,
    TooLarge,
    Failed(std::io::Error),
}

/// Reads the body (gunzipped when `gzip`) whole, up to `max_bytes`, by `deadline`.
fn read_body(
    request: &mut tiny_http::Request,
    gzip: bool,
    max_bytes: usize,
    deadline: Instant,
) -> Body {
    let mut raw = Deadline {
        inner: request.as_reader(),
        deadline,
        expired: false,
    };
    let limit = max_bytes as u64 + 1;
    let mut body = Vec::new();
    let read = if gzip {
        flate2::read::GzDecoder::new(raw.by_ref())
            .take(limit)
            .read_to_end(&mut body)
    } else {
        raw.by_ref().take(limit).read_to_end(&mut body)
    };
    // Decided by the flag: gzip may wrap the reader's error in its own.
    if raw.expired {
        return Body::TimedOut;
    }
    if let Err(e) = read {
        return Body::Failed(e);
    }
    if body.len() > max_bytes {
        return Body::TooLarge;
    }
    if gzip {
        // Whatever follows the gzip stream is read now, under the deadline: tiny_http
        // would read it when the request is dropped, under none.
        let trailing = std::io::copy(&mut raw.by_ref().take(limit), &mut std::io::sink());
        if raw.expired {
            return Body::TimedOut;
        }
        match trailing {
            Err(e) => return Body::Failed(e),
            Ok(n) if n >= limit => return Body::TooLarge,
            Ok(_) => {}
        }
    }
    Body::Complete(body)
}

/// A body reader that gives up once its deadline has passed, however slowly the bytes
/// come: a per-read timeout would let a client send one byte just before each expires.
struct Deadline<'a> {
    inner: &'a mut dyn Read,
    deadline: Instant,
    expired: bool,
}

impl Read for Deadline<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if Instant::now() >= self.deadline {
            self.expired = true;
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the body's deadline passed",
            ));
        }
        self.inner.read(buf)
    }
}
