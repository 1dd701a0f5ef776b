//! The OTLP/HTTP trace receiver: `POST /v1/traces`, protobuf or JSON, gzip or not, as
//! OpenTelemetry SDK exporters send them. Each request's tool spans become events that
//! are handed to a [`Publish`] (the engine's events topic) and acknowledged only once
//! published: 200, with `partial_success` counting the tool spans that could not be
//! mapped; 400 for a body that does not decode; 413 past the size limit; 415 for an
//! encoding it does not speak; 503 with `Retry-After` when publishing failed, so the
//! exporter retries and nothing is lost. Errors carry a `google.rpc.Status` in the
//! request's encoding, as OTLP/HTTP specifies.

use std::io::Read;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;

use toolgate_protocol::Event;

use super::genai::{MappingOptions, events_from_spans};
use super::{Encoding, decode_request, proto};
use crate::IngestError;

/// Where the receiver's events go.
pub trait Publish: Send {
    /// Publishes `events` durably (acknowledged) or says why not.
    fn publish(&mut self, events: &[Event]) -> Result<(), String>;
}

/// What the receiver has done, for metrics.
#[derive(Debug, Default)]
pub struct ReceiverCounters {
    /// Export requests answered 200.
    pub requests: AtomicU64,
    /// Requests refused (400, 404, 405, 413, 415).
    pub bad_requests: AtomicU64,
    /// Requests answered 503 because publishing failed.
    pub publish_failures: AtomicU64,
    /// Spans received in accepted requests.
    pub spans: AtomicU64,
    /// Tool spans turned into events.
    pub tool_spans: AtomicU64,
    /// Tool spans that could not be mapped.
    pub rejected_spans: AtomicU64,
    /// Spans that are not tool executions.
    pub ignored_spans: AtomicU64,
}

/// How the receiver listens and maps.
#[derive(Debug, Clone)]
pub struct ReceiverOptions {
    /// `host:port` to listen on.
    pub listen: String,
    /// Request bodies larger than this (after gunzip) are refused.
    pub max_body_bytes: usize,
    /// How spans become events.
    pub mapping: MappingOptions,
}

/// A running receiver; stops when dropped.
pub struct OtlpReceiver {
    server: Arc<tiny_http::Server>,
    addr: SocketAddr,
    thread: Option<JoinHandle<()>>,
}

impl OtlpReceiver {
    /// Listens and serves on its own thread.
    pub fn start(
        options: ReceiverOptions,
        publisher: Box<dyn Publish>,
        counters: Arc<ReceiverCounters>,
    ) -> Result<OtlpReceiver, IngestError> {
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
        let serving = Arc::clone(&server);
        let thread = std::thread::Builder::new()
            .name("otlp".into())
            .spawn(move || serve(&serving, &options, publisher, &counters))
            .map_err(|e| IngestError::io("the OTLP receiver thread", e))?;
        Ok(OtlpReceiver {
            server,
            addr,
            thread: Some(thread),
        })
    }

    /// Where it listens.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        self.server.unblock();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
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

// google.rpc.Code values.
const INVALID_ARGUMENT: i32 = 3;
const NOT_FOUND: i32 = 5;
const RESOURCE_EXHAUSTED: i32 = 8;
const UNAVAILABLE: i32 = 14;

fn serve(
    server: &tiny_http::Server,
    options: &ReceiverOptions,
    mut publisher: Box<dyn Publish>,
    counters: &ReceiverCounters,
) {
    for mut request in server.incoming_requests() {
        let answer = handle(&mut request, options, publisher.as_mut(), counters);
        if answer.status != 200 {
            tracing::debug!(
                status = answer.status,
                answer = %String::from_utf8_lossy(&answer.body),
                "refused an OTLP request"
            );
        }
        match answer.status {
            200 => counters.requests.fetch_add(1, Ordering::Relaxed),
            503 => counters.publish_failures.fetch_add(1, Ordering::Relaxed),
            _ => counters.bad_requests.fetch_add(1, Ordering::Relaxed),
        };
        let mut response = tiny_http::Response::from_data(answer.body)
            .with_status_code(answer.status)
            .with_header(header("Content-Type", answer.content_type));
        if answer.retry_after {
            response = response.with_header(header("Retry-After", "1"));
        }
        let _ = request.respond(response);
    }
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

fn handle(
    request: &mut tiny_http::Request,
    options: &ReceiverOptions,
    publisher: &mut dyn Publish,
    counters: &ReceiverCounters,
) -> Answer {
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
    let content_type = header_value(request, "Content-Type")
        .unwrap_or_default()
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    let encoding = match content_type.as_str() {
        "application/x-protobuf" => Encoding::Protobuf,
        "application/json" => Encoding::Json,
        other => {
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
    let limit = options.max_body_bytes as u64 + 1;
    let mut body = Vec::new();
    let read = if gzip {
        flate2::read::GzDecoder::new(request.as_reader())
            .take(limit)
            .read_to_end(&mut body)
    } else {
        request.as_reader().take(limit).read_to_end(&mut body)
    };
    if let Err(e) = read {
        return error(
            400,
            INVALID_ARGUMENT,
            &format!("reading the body: {e}"),
            Some(encoding),
        );
    }
    if body.len() > options.max_body_bytes {
        return error(
            413,
            RESOURCE_EXHAUSTED,
            &format!("the body is over {} bytes", options.max_body_bytes),
            Some(encoding),
        );
    }
    let resources = match decode_request(&body, encoding) {
        Ok(r) => r,
        Err(e) => return error(400, INVALID_ARGUMENT, &e.to_string(), Some(encoding)),
    };
    let converted = events_from_spans(&resources, &options.mapping);
    if !converted.events.is_empty()
        && let Err(e) = publisher.publish(&converted.events)
    {
        let mut answer = error(
            503,
            UNAVAILABLE,
            &format!("cannot publish the events now: {e}"),
            Some(encoding),
        );
        answer.retry_after = true;
        return answer;
    }
    let spans: u64 = resources.iter().map(|r| r.spans.len() as u64).sum();
    let rejected = converted.rejected.len() as u64;
    counters.spans.fetch_add(spans, Ordering::Relaxed);
    counters
        .tool_spans
        .fetch_add(converted.events.len() as u64 / 2, Ordering::Relaxed);
    counters
        .rejected_spans
        .fetch_add(rejected, Ordering::Relaxed);
    counters
        .ignored_spans
        .fetch_add(converted.ignored, Ordering::Relaxed);
    let message = if rejected == 0 {
        String::new()
    } else {
        let shown: Vec<String> = converted
            .rejected
            .iter()
            .take(3)
            .map(|r| {
                format!(
                    "span {:?} ({}/{}): {}",
                    r.name, r.trace_id, r.span_id, r.error
                )
            })
            .collect();
        let message = format!("{rejected} tool span(s) rejected: {}", shown.join("; "));
        tracing::warn!(rejected, "{message}");
        message
    };
    match encoding {
        Encoding::Protobuf => Answer {
            status: 200,
            body: proto::encode_response(rejected, &message),
            content_type: "application/x-protobuf",
            retry_after: false,
        },
        Encoding::Json => {
            let body = if rejected == 0 {
                serde_json::json!({})
            } else {
                serde_json::json!({"partialSuccess": {"rejectedSpans": rejected.to_string(), "errorMessage": message}})
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
