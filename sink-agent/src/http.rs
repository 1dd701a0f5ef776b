//! The streamable-HTTP proxy, the other I/O edge around [`Session`]: a reverse proxy in
//! front of one remote MCP server (`toolgate-sink http --listen … --upstream …`).
//!
//! Blocking I/O, a thread per connection (`toolgate-http`: at most `[sink]
//! http_max_connections` at once, each request and each write to the client under a
//! deadline): a POST's JSON-RPC body goes through the session (checks, events), then
//! upstream unchanged; the answer comes back unchanged too, whether a JSON body or an
//! SSE stream (each event is inspected as it passes and written on at once, so progress
//! notifications and the server's own requests keep streaming). GET (the server's
//! stream) and DELETE (end of session) pass through, inspected the same way. Headers
//! pass except hop-by-hop ones and `Accept-Encoding` (the proxy must read what it
//! inspects).
//!
//! One [`Session`] per `Mcp-Session-Id` the upstream issued in answer to an
//! `initialize`, so JSON-RPC ids of different sessions never meet; requests without one
//! share a session (a stateless upstream). Any other id is answered 404, as the spec
//! answers an unknown or expired session, and a new `initialize` past `[sink]
//! http_max_sessions` or `http_max_sessions_per_client` is refused: no one can push a
//! live session, and what was decided for it, out (`http/sessions.rs`). Decisions for
//! the whole agent are kept and applied to every session made later.
//!
//! Listening on loopback, the proxy refuses (403) a `Host` or `Origin` that is not a
//! loopback name: a web page cannot reach it through DNS rebinding, whatever the
//! upstream checks (the proxy rewrites `Host` for the upstream, so the upstream's own
//! check could not see the agent's). A refused call is answered here with
//! HTTP 200 and a JSON-RPC result (`isError: true`); a held call keeps its request
//! open until the verdict.

mod sessions;
mod sse;

pub use sse::sse_fields;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde_json::Value;
use toolgate_protocol::Timestamp;
use toolgate_protocol::config::SinkConfig;

use crate::SinkError;
use crate::decisions::Rejected;
use crate::jsonrpc::{self, Id};
use crate::oversized::Capture;
use crate::session::{Outbound, Report, Session};
use crate::transport::{ReportWriter, Written};
use crate::verdicts::VerdictSignal;
use sessions::{Kept, Registry, Start, Starting};
use toolgate_http::{Limits, Request, Server};

/// Request headers not passed upstream: hop-by-hop, framing the proxy redoes, and
/// compression it could not inspect through.
const DROPPED_REQUEST_HEADERS: &[&str] = &[
    "host",
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
    "accept-encoding",
    // The proxy answered the expectation itself.
    "expect",
];

/// Response headers not passed back (the proxy frames the body itself).
const DROPPED_RESPONSE_HEADERS: &[&str] = &[
    "connection",
    "keep-alive",
    "transfer-encoding",
    "content-length",
    "trailer",
    "upgrade",
];

/// An oversized request is read this far, at most, to find its tail and digest: past
/// it, size, tail and digest are those of the part read.
const OVERSIZED_READ_MAX: u64 = 1 << 30;

/// Counters of one run, printed at exit.
#[derive(Debug, Default)]
pub struct HttpCounters {
    /// Requests handled.
    pub requests: AtomicU64,
    /// Request bodies over the limit, refused.
    pub refused_oversized: AtomicU64,
    /// Upstream failures answered with 502.
    pub upstream_errors: AtomicU64,
    /// Requests refused for a `Host` or `Origin` that is not loopback.
    pub refused_hosts: AtomicU64,
    /// Requests naming an `Mcp-Session-Id` the proxy does not keep, answered 404.
    pub unknown_sessions: AtomicU64,
    /// `initialize` requests refused at a session cap.
    pub refused_sessions: AtomicU64,
    /// What the HTTP server refused itself: connections at `http_max_connections`,
    /// requests late (408) or malformed.
    pub server: Arc<toolgate_http::Counters>,
}

/// What one client and all clients together may hold of the proxy (`[sink] http_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// Sessions open at once, all clients together.
    pub max_sessions: usize,
    /// Sessions open at once for one client (its IP address; an IPv6 client by its /64).
    pub max_sessions_per_client: usize,
    /// A session unused this long, with no request in progress, is forgotten.
    pub session_idle_timeout: Duration,
    /// Connections served at once; one more is answered 503 and closed.
    pub max_connections: usize,
    /// How long a client may take to send a request (from its first byte), to start
    /// its next one on a kept-alive connection, and to take each write of an answer.
    pub client_timeout: Duration,
}

impl HttpLimits {
    /// The limits `[sink]` sets.
    pub fn from_config(sink: &SinkConfig) -> Self {
        HttpLimits {
            max_sessions: sink.http_max_sessions,
            max_sessions_per_client: sink.http_max_sessions_per_client,
            session_idle_timeout: Duration::from_millis(sink.http_session_idle_timeout_ms),
            max_connections: sink.http_max_connections,
            client_timeout: Duration::from_millis(sink.http_client_timeout_ms),
        }
    }
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits::from_config(&SinkConfig::default())
    }
}

/// Makes the session for a new MCP session.
pub type SessionFactory = Box<dyn Fn() -> Result<Session, SinkError> + Send + Sync>;

/// The proxy's shared state.
pub struct HttpProxy {
    upstream: String,
    client: ureq::Agent,
    max_message_bytes: usize,
    new_session: SessionFactory,
    /// Verifies each decision once, made once: the partition carries other agents'
    /// decisions too, and a session per decision would redo the config's work each time.
    verifier: Mutex<Session>,
    sessions: Mutex<Registry>,
    /// Every decision that verified, so a session made later starts with them. Locked
    /// before `sessions` when both are.
    decisions: Mutex<Kept>,
    events: ReportWriter,
    signal: VerdictSignal,
    counters: HttpCounters,
    /// The HTTP server under the proxy, with its connection cap and deadlines.
    server: Arc<Server>,
    /// Only loopback `Host` and `Origin` values are served (the listener is on
    /// loopback).
    loopback_only: AtomicBool,
}

impl HttpProxy {
    /// A proxy to `upstream` (an `http://` or `https://` MCP endpoint).
    pub fn new(
        upstream: String,
        new_session: SessionFactory,
        events: crate::transport::EventWriter,
        pins_file: Option<std::path::PathBuf>,
        max_message_bytes: usize,
        max_decisions: usize,
        limits: HttpLimits,
    ) -> Result<Arc<HttpProxy>, SinkError> {
        check_upstream(&upstream)?;
        let verifier = Mutex::new(new_session()?);
        let counters = HttpCounters::default();
        let client: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            // Tool calls and streams may run for long; only connecting is bounded.
            .timeout_global(None)
            .timeout_connect(Some(Duration::from_secs(10)))
            .build()
            .into();
        let limits = HttpLimits {
            max_connections: limits.max_connections.max(1),
            client_timeout: limits.client_timeout.max(Duration::from_millis(1)),
            ..limits
        };
        Ok(Arc::new(HttpProxy {
            upstream,
            client,
            max_message_bytes,
            new_session,
            verifier,
            sessions: Mutex::new(Registry::new(
                limits.max_sessions,
                limits.max_sessions_per_client,
                limits.session_idle_timeout,
            )),
            decisions: Mutex::new(Kept::new(max_decisions)),
            events: ReportWriter::new(events, pins_file),
            signal: VerdictSignal::default(),
            server: Server::new(
                "toolgate-sink",
                Limits {
                    max_connections: limits.max_connections,
                    setting: "sink.http_max_connections",
                    request_timeout: limits.client_timeout,
                    idle_timeout: limits.client_timeout,
                    max_body: max_message_bytes,
                },
                Arc::clone(&counters.server),
            ),
            counters,
            loopback_only: AtomicBool::new(false),
        }))
    }

    /// Applies a decision to every session and keeps it for sessions made later.
    pub fn apply_decision(&self, bytes: &[u8]) -> Result<String, Rejected> {
        // Held from verifying to applying, as while a session is made: each session
        // gets the decision either here or from the kept ones.
        let mut kept = self.kept();
        let now = Timestamp::now();
        // Verified once, so it is kept even while no session exists yet.
        let verdict = self
            .verifier
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .apply_decision(bytes, now);
        if verdict.is_ok() {
            kept.keep(bytes, now);
            let sessions = self.registry().all();
            for s in sessions {
                let _ = s
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .apply_decision(bytes, now);
            }
            drop(kept);
            self.signal.notify();
        }
        verdict
    }

    /// Serves on `listener` until `stop`; returns what was written.
    pub fn serve(
        self: &Arc<Self>,
        listener: TcpListener,
        stop: &AtomicBool,
    ) -> Result<Written, SinkError> {
        let on_loopback = listener.local_addr().is_ok_and(|a| a.ip().is_loopback());
        self.loopback_only.store(on_loopback, Ordering::Relaxed);
        let done = Arc::new(AtomicBool::new(false));
        let flusher = self.events.start_flusher(done.clone())?;
        let proxy = Arc::clone(self);
        let handle: toolgate_http::Handler =
            Arc::new(move |request: Request<'_>| proxy.handle(request));
        let served = self.server.serve(&listener, stop, &handle);
        done.store(true, Ordering::Relaxed);
        let _ = flusher.join();
        served.map_err(|e| SinkError::Task(format!("the listener: {e}")))?;
        self.events.finish()
    }

    /// The counters so far.
    pub fn counters(&self) -> &HttpCounters {
        &self.counters
    }

    fn handle(self: &Arc<Self>, mut request: Request<'_>) {
        self.counters.requests.fetch_add(1, Ordering::Relaxed);
        let method = request.method.to_ascii_uppercase();
        if self.loopback_only.load(Ordering::Relaxed) {
            for name in ["host", "origin"] {
                if let Some(value) = request.header(name)
                    && !names_loopback(value)
                {
                    self.counters.refused_hosts.fetch_add(1, Ordering::Relaxed);
                    let body = format!("toolgate-sink: {name} {value:?} is not a loopback name");
                    return respond(request, 403, "text/plain", body.into_bytes());
                }
            }
        }
        let session_header = request.header("mcp-session-id").map(str::to_string);
        let headers: Vec<(String, String)> = request
            .headers
            .iter()
            .filter(|(name, _)| {
                !DROPPED_REQUEST_HEADERS.contains(&name.to_ascii_lowercase().as_str())
            })
            .cloned()
            .collect();
        let url = self.upstream_url(&request.target);
        if request.oversized {
            self.counters
                .refused_oversized
                .fetch_add(1, Ordering::Relaxed);
            let kept = self.inspect_oversized(&mut request, session_header.as_deref());
            let answer = jsonrpc::error(
                kept.id.as_ref().unwrap_or(&Value::Null),
                -32600,
                &format!(
                    "toolgate refused a message larger than {} bytes",
                    self.max_message_bytes
                ),
            );
            return respond_json(request, 413, answer.to_string().into_bytes());
        }
        match method.as_str() {
            "POST" => {
                let body = std::mem::take(&mut request.body);
                let (session, starting) = match &session_header {
                    Some(id) => match self.known_session(id) {
                        Some(s) => (s, None),
                        None => return self.unknown_session(request),
                    },
                    // Each initialize starts a session of its own, kept under the id the
                    // server's answer gives it; other requests without an id share one.
                    None if is_initialize(&body) => match self.start_session(request.peer) {
                        Ok((s, starting)) => (s, Some(starting)),
                        Err(Start::Full(full)) => {
                            return self.refuse_session(request, &body, full);
                        }
                        Err(Start::Failed) => return no_session(request),
                    },
                    None => match self.shared_session() {
                        Some(s) => (s, None),
                        None => return no_session(request),
                    },
                };
                self.post(request, &url, headers, body, &session, starting);
            }
            "GET" | "DELETE" => {
                let found = match &session_header {
                    Some(id) => self.known_session(id),
                    None => self.shared_session(),
                };
                let Some(session) = found else {
                    return match session_header {
                        Some(_) => self.unknown_session(request),
                        None => no_session(request),
                    };
                };
                // A GET is the session's long-lived stream: it gets an agent of its own,
                // shut down when the client leaves, so the upstream read blocked on a
                // silent server ends and the server frees its one stream slot.
                let own = (method == "GET")
                    .then(|| ureq::Agent::new_with_config(self.client.config().clone()));
                let client = own.as_ref().unwrap_or(&self.client);
                let builder = if method == "GET" {
                    client.get(&url)
                } else {
                    client.delete(&url)
                };
                let mut builder = builder;
                for (k, v) in &headers {
                    builder = builder.header(k, v);
                }
                match builder.call() {
                    Ok(response) => {
                        if method == "DELETE"
                            && response.status().is_success()
                            && let Some(id) = &session_header
                        {
                            self.registry().remove(id);
                        }
                        self.relay(request, response, &session, Vec::new(), own);
                    }
                    Err(e) => self.upstream_failed(request, &e.to_string()),
                }
            }
            _ => respond(request, 405, "text/plain", b"method not allowed".to_vec()),
        }
        // Idle time counts from the end of a request: a long stream is use.
        if let Some(id) = &session_header {
            self.registry().touch(id, Instant::now());
        }
    }

    /// Reads an oversized request as it streams past (at most
    /// [`OVERSIZED_READ_MAX`] of it), keeping its id, head, tail, size and digest; a
    /// `tools/call` among them is reported to its session as a call refused for its
    /// size, so padding a call is no way past inspection.
    fn inspect_oversized(
        &self,
        request: &mut Request<'_>,
        session_header: Option<&str>,
    ) -> crate::oversized::Truncated {
        let mut capture = Capture::new(self.max_message_bytes);
        capture.push(&std::mem::take(&mut request.body));
        if let Err(e) = request.read_rest(OVERSIZED_READ_MAX, &mut |bytes| capture.push(bytes)) {
            tracing::warn!(error = %e, "an oversized request ended before its end was read: reported from what arrived");
        }
        let kept = capture.finish();
        let session = match session_header {
            Some(id) => self.known_session(id),
            None => self.shared_session(),
        };
        match session {
            Some(session) => {
                let mut report = Report::default();
                if let Ok(mut s) = session.lock() {
                    s.oversized_from_client(
                        &kept,
                        self.max_message_bytes,
                        Timestamp::now(),
                        &mut report,
                    );
                }
                self.events.write(report);
            }
            None => tracing::warn!(
                size = kept.size,
                "an oversized request of no session the sink knows was refused unreported"
            ),
        }
        kept
    }

    #[allow(clippy::too_many_arguments)]
    fn post(
        self: &Arc<Self>,
        request: Request<'_>,
        url: &str,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
        session: &Arc<Mutex<Session>>,
        starting: Option<Starting<'_>>,
    ) {
        let (mut out, mut report) = (Vec::new(), Report::default());
        let held = {
            let Ok(mut s) = session.lock() else {
                return respond(request, 500, "text/plain", b"session lost".to_vec());
            };
            s.from_client(&body, Timestamp::now(), &mut out, &mut report);
            // A held call leaves nothing to send; which one it was is in the body.
            if out.is_empty() {
                // Read as the session read it: a call held under `unparseable =
                // "forward"` is not strict JSON.
                jsonrpc::parse(&body)
                    .ok()
                    .and_then(|d| match d.parsed {
                        jsonrpc::Parsed::Single(jsonrpc::Message::Request { id, .. }) => {
                            Id::of(&id)
                        }
                        _ => None,
                    })
                    .filter(|id| s.is_held(id))
            } else {
                None
            }
        };
        // Sent before any wait: the engine answers a held call from this event.
        self.events.write(report);
        if let Some(id) = held {
            self.signal.notify();
            match self.await_verdict(session, &id) {
                Some(o) => out.push(o),
                None => return respond(request, 500, "text/plain", b"session lost".to_vec()),
            }
        }
        let mut forward = None;
        let mut answers = Vec::new();
        for o in out {
            match o {
                Outbound::ToServer(line) => forward = Some(line),
                Outbound::ToClient(line) => answers.push(line),
            }
        }
        let Some(forward) = forward else {
            // Refused (or a malformed call): answered here, nothing reaches upstream.
            let body = answers.into_iter().next().unwrap_or_default();
            return respond_json(request, 200, body);
        };
        let mut builder = self.client.post(url);
        for (k, v) in &headers {
            builder = builder.header(k, v);
        }
        match builder.send(&forward[..]) {
            Ok(response) => {
                // Only the answer to an initialize names a session the proxy keeps;
                // without a name (a stateless upstream) its place is given back.
                if let Some(starting) = starting
                    && response.status().is_success()
                    && let Some(id) = response
                        .headers()
                        .get("mcp-session-id")
                        .and_then(|v| v.to_str().ok())
                {
                    starting.promote(id);
                }
                self.relay(request, response, session, answers, None);
            }
            Err(e) => self.upstream_failed(request, &e.to_string()),
        }
    }

    /// Waits for the verdict on held call `id`, or its deadline.
    fn await_verdict(&self, session: &Arc<Mutex<Session>>, id: &Id) -> Option<Outbound> {
        loop {
            let seen = self.signal.generation();
            let deadline = {
                let mut s = session.lock().ok()?;
                let mut report = Report::default();
                if let Some(o) = s.resolve_hold(id, Timestamp::now(), &mut report) {
                    drop(s);
                    self.events.write(report);
                    return Some(o);
                }
                if !s.is_held(id) {
                    return None;
                }
                s.next_hold_deadline()
            };
            let left = deadline.map_or(0, |d| d.unix_nanos() - Timestamp::now().unix_nanos());
            let left = Duration::from_nanos(left.clamp(1_000_000, 100_000_000) as u64);
            self.signal.wait(seen, left);
        }
    }

    /// Passes the upstream's answer back: JSON bodies whole, SSE event by event, both
    /// inspected on the way. `refusals` (batch members refused here) are added: into a
    /// JSON batch answer, or as events ahead of a stream. `own` is the agent the request
    /// used if it was its own, shut down when the stream's client leaves.
    fn relay(
        self: &Arc<Self>,
        request: Request<'_>,
        response: ureq::http::Response<ureq::Body>,
        session: &Arc<Mutex<Session>>,
        refusals: Vec<Vec<u8>>,
        own: Option<ureq::Agent>,
    ) {
        let status = response.status().as_u16();
        let headers: Vec<(String, String)> = response
            .headers()
            .iter()
            .filter(|(k, _)| !DROPPED_RESPONSE_HEADERS.contains(&k.as_str()))
            .filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string())))
            .collect();
        let is_stream = headers
            .iter()
            .any(|(k, v)| k == "content-type" && v.starts_with("text/event-stream"));
        let mut upstream = response.into_body().into_reader();
        if is_stream {
            let writer = request.into_writer();
            let streamed = self.stream(writer, status, &headers, upstream, session, refusals);
            // Whether the client left or the stream ended, nothing more is read: closing
            // the upstream connection ends a read still blocked on it.
            if let Some(agent) = own {
                agent.shutdown();
            }
            if let Err(e) = streamed {
                tracing::debug!(error = %e, "stream to the client ended");
            }
            return;
        }
        let mut body = Vec::new();
        let limit = self.max_message_bytes as u64;
        if upstream
            .by_ref()
            .take(limit)
            .read_to_end(&mut body)
            .is_err()
        {
            return self.upstream_failed(request, "the answer broke off");
        }
        if body.len() as u64 == limit {
            // Larger than the limit: passed through whole as it streams, and reported
            // truncated (head, tail, size, digest) when it ends.
            let mut capture = Capture::new(self.max_message_bytes);
            capture.push(&body);
            let mut writer = request.into_writer();
            let passed = write_head(&mut writer, status, &headers, true).and_then(|()| {
                write_chunk(&mut writer, &body)?;
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    let n = upstream.read(&mut buf)?;
                    if n == 0 {
                        break;
                    }
                    capture.push(&buf[..n]);
                    write_chunk(&mut writer, &buf[..n])?;
                }
                writer.write_all(b"0\r\n\r\n")?;
                writer.flush()
            });
            if let Err(e) = passed {
                tracing::debug!(error = %e, "an oversized answer broke off");
            }
            let mut report = Report::default();
            if let Ok(mut s) = session.lock() {
                s.oversized_from_server(&capture.finish(), Timestamp::now(), &mut report);
            }
            self.events.write(report);
            return;
        }
        let body = if body.iter().all(u8::is_ascii_whitespace) {
            body
        } else {
            let (mut out, mut report) = (Vec::new(), Report::default());
            if let Ok(mut s) = session.lock() {
                s.from_server(&body, Timestamp::now(), &mut out, &mut report);
            }
            self.events.write(report);
            let answered = match out.pop() {
                Some(Outbound::ToClient(line)) => line,
                _ => body,
            };
            merge_refusals(answered, refusals)
        };
        request.respond(status, &headers, &body);
    }

    fn upstream_failed(&self, request: Request<'_>, why: &str) {
        self.counters
            .upstream_errors
            .fetch_add(1, Ordering::Relaxed);
        tracing::warn!(upstream = %self.upstream, why, "upstream failed");
        respond(
            request,
            502,
            "text/plain",
            format!("toolgate-sink: the upstream MCP server failed: {why}").into_bytes(),
        );
    }

    fn upstream_url(&self, path_and_query: &str) -> String {
        // The upstream is one endpoint; a query string the client added goes along.
        match path_and_query.split_once('?') {
            Some((_, query)) if !query.is_empty() => {
                let sep = if self.upstream.contains('?') {
                    '&'
                } else {
                    '?'
                };
                format!("{}{sep}{query}", self.upstream)
            }
            _ => self.upstream.clone(),
        }
    }
}

/// A flag raised by SIGINT, SIGTERM or SIGHUP (blocked in every thread started after
/// this call), so the server stops between requests and the event transports finish.
pub fn stop_on_signals() -> Result<Arc<AtomicBool>, SinkError> {
    toolgate_edge::signals::block()
        .raise_on_first(|_| {})
        .map_err(|e| SinkError::Task(e.to_string()))
}

/// Whether a `Host` (`name[:port]`) or `Origin` (`scheme://name[:port]`) names this
/// machine's loopback: `localhost`, `127.0.0.0/8` or `[::1]`.
pub fn names_loopback(value: &str) -> bool {
    let authority = value.split_once("://").map_or(value, |(_, rest)| rest);
    let authority = authority.split('/').next().unwrap_or("");
    let host = if let Some(v6) = authority.strip_prefix('[') {
        v6.split(']').next().unwrap_or("")
    } else {
        authority.rsplit_once(':').map_or(authority, |(h, _)| h)
    };
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn is_initialize(body: &[u8]) -> bool {
    // Read as the session reads it, lenient JSON included.
    jsonrpc::parse(body).is_ok_and(|d| {
        matches!(
            d.parsed,
            jsonrpc::Parsed::Single(jsonrpc::Message::Request { ref method, .. })
                if method == "initialize"
        )
    })
}

fn respond(request: Request<'_>, status: u16, content_type: &str, body: Vec<u8>) {
    let headers = [("Content-Type".to_string(), content_type.to_string())];
    request.respond(status, &headers, &body);
}

fn respond_json(request: Request<'_>, status: u16, body: Vec<u8>) {
    respond(request, status, "application/json", body);
}

/// A session could not be made (logged where it failed).
fn no_session(request: Request<'_>) {
    respond(request, 500, "text/plain", b"no session".to_vec());
}

/// Refusals of batch members go into the server's batch answer.
fn merge_refusals(answer: Vec<u8>, refusals: Vec<Vec<u8>>) -> Vec<u8> {
    if refusals.is_empty() {
        return answer;
    }
    let mut items: Vec<Value> = match serde_json::from_slice(&answer) {
        Ok(Value::Array(items)) => items,
        Ok(other) => vec![other],
        Err(_) => Vec::new(),
    };
    for r in refusals {
        match serde_json::from_slice(&r) {
            Ok(Value::Array(more)) => items.extend(more),
            Ok(one) => items.push(one),
            Err(_) => {}
        }
    }
    serde_json::to_vec(&Value::Array(items)).unwrap_or(answer)
}

fn write_head(
    w: &mut dyn Write,
    status: u16,
    headers: &[(String, String)],
    chunked: bool,
) -> std::io::Result<()> {
    write!(w, "HTTP/1.1 {status} {}\r\n", toolgate_http::reason(status))?;
    for (k, v) in headers {
        write!(w, "{k}: {v}\r\n")?;
    }
    if chunked {
        w.write_all(b"Transfer-Encoding: chunked\r\n")?;
    }
    // A stream ends the connection's use; the client opens another for what follows.
    w.write_all(b"Connection: close\r\n\r\n")?;
    w.flush()
}

fn write_chunk(w: &mut dyn Write, bytes: &[u8]) -> std::io::Result<()> {
    if bytes.is_empty() {
        return Ok(());
    }
    write!(w, "{:x}\r\n", bytes.len())?;
    w.write_all(bytes)?;
    w.write_all(b"\r\n")?;
    w.flush()
}

/// Refuses at start an upstream the proxy could never forward to, so the mistake is
/// named once instead of failing every call.
fn check_upstream(url: &str) -> Result<(), SinkError> {
    let problem = |problem| SinkError::Upstream {
        url: url.to_string(),
        problem,
    };
    let uri: ureq::http::Uri = url
        .parse()
        .map_err(|_| problem("not a URL (expected e.g. http://127.0.0.1:3000/mcp)"))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        Some(_) => return Err(problem("the scheme must be http or https")),
        None => return Err(problem("no scheme (expected http:// or https://)")),
    }
    match uri.host() {
        Some(h) if !h.is_empty() => Ok(()),
        _ => Err(problem("no host")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issue_22_an_upstream_that_is_not_http_is_refused_naming_it() {
        for ok in [
            "http://127.0.0.1:3000/mcp",
            "https://mcp.example.com/mcp",
            "http://localhost",
        ] {
            assert!(check_upstream(ok).is_ok(), "{ok}");
        }
        for (bad, why) in [
            ("ftp://x", "scheme must be http or https"),
            ("127.0.0.1:3000", "scheme"),
            ("x", "no scheme"),
            ("http://", "not a URL"),
            ("", "not a URL"),
        ] {
            let err = check_upstream(bad).unwrap_err().to_string();
            assert!(
                err.contains(&format!("{bad:?}")) && err.contains(why),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn only_loopback_names_pass_on_a_loopback_listener() {
        for ok in [
            "localhost:8931",
            "127.0.0.1:8931",
            "127.0.0.1",
            "[::1]:80",
            "http://localhost:3000",
            "http://127.0.0.1:8931/",
        ] {
            assert!(names_loopback(ok), "{ok}");
        }
        for bad in [
            "evil.example:8931",
            "http://evil.example",
            "10.0.0.1:8931",
            "localhost.evil.example",
            "null",
            "",
        ] {
            assert!(!names_loopback(bad), "{bad}");
        }
    }

    #[test]
    fn refusals_join_a_batch_answer_or_make_one() {
        let merged = merge_refusals(
            br#"[{"jsonrpc":"2.0","id":1,"result":{}}]"#.to_vec(),
            vec![br#"[{"jsonrpc":"2.0","id":2,"result":{"isError":true}}]"#.to_vec()],
        );
        let v: Value = serde_json::from_slice(&merged).unwrap();
        assert_eq!(v.as_array().map(Vec::len), Some(2));
        let untouched = br#"{"jsonrpc":"2.0","id":1,"result":{}}"#.to_vec();
        assert_eq!(merge_refusals(untouched.clone(), vec![]), untouched);
    }
}
