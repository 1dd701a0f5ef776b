//! OpenTelemetry traces as a source: agents instrumented with the GenAI semantic
//! conventions export spans over OTLP/HTTP, and each tool execution among them becomes
//! toolgate events, so agents without a sink are still observed.
//!
//! - [`proto`] and [`json`] decode an `ExportTraceServiceRequest` in either OTLP/HTTP
//!   encoding into [`ResourceSpans`]; both are pure, bounded, and fuzzed;
//! - [`genai`] maps spans to events: a span whose `gen_ai.operation.name` is
//!   `execute_tool` (or whose `mcp.method.name` is `tools/call`) becomes a `tool_call`
//!   event and a `tool_result` event; other spans are ignored;
//! - [`receiver`] is the HTTP edge: `POST /v1/traces`, publishing through a
//!   [`receiver::Publish`] the engine provides (the events topic); each request is
//!   served on a thread of its own, with a deadline on its body and a cap on requests
//!   in progress, so no one client can hold it.

pub mod genai;
pub mod json;
pub mod proto;
pub mod receiver;

/// An attribute value (OTLP `AnyValue`).
#[derive(Debug, Clone, PartialEq)]
pub enum AnyValue {
    /// `string_value`.
    String(String),
    /// `bool_value`.
    Bool(bool),
    /// `int_value`.
    Int(i64),
    /// `double_value`.
    Double(f64),
    /// `array_value`.
    Array(Vec<AnyValue>),
    /// `kvlist_value`.
    KvList(Vec<(String, AnyValue)>),
    /// `bytes_value`.
    Bytes(Vec<u8>),
    /// No value set.
    Empty,
}

/// Attributes in the order they were sent.
pub type Attributes = Vec<(String, AnyValue)>;

/// One span, with what the mapping needs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Span {
    /// 16 bytes when valid.
    pub trace_id: Vec<u8>,
    /// 8 bytes when valid.
    pub span_id: Vec<u8>,
    /// The span's name.
    pub name: String,
    /// Start, nanoseconds since the Unix epoch.
    pub start_time_unix_nano: u64,
    /// End, nanoseconds since the Unix epoch.
    pub end_time_unix_nano: u64,
    /// The span's attributes.
    pub attributes: Attributes,
    /// `Status.code`: 0 unset, 1 ok, 2 error.
    pub status_code: i32,
    /// `Status.message`.
    pub status_message: String,
}

/// The spans of one resource (scopes flattened).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ResourceSpans {
    /// The resource's attributes (`service.name`, `host.name`, ...).
    pub resource: Attributes,
    /// Its spans, from every instrumentation scope.
    pub spans: Vec<Span>,
}

/// How an OTLP/HTTP body is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// `application/x-protobuf`.
    Protobuf,
    /// `application/json`.
    Json,
}

/// Attribute values nested deeper than this are refused (a hostile body must not
/// exhaust the stack).
pub const MAX_NESTING: usize = 32;

/// Why a request body could not be decoded.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum OtlpError {
    /// Not a valid protobuf `ExportTraceServiceRequest`.
    #[error("protobuf: {path}: {message}")]
    Protobuf {
        /// Where, e.g. `resource_spans[0].scope_spans[1].spans[2].attributes[0].value`.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// Not a valid OTLP/JSON `ExportTraceServiceRequest`.
    #[error("JSON: {path}: {message}")]
    Json {
        /// Where, e.g. `resourceSpans[0].scopeSpans[0].spans[3].traceId`.
        path: String,
        /// What is wrong.
        message: String,
    },
}

/// Decodes a request body in `encoding`.
pub fn decode_request(body: &[u8], encoding: Encoding) -> Result<Vec<ResourceSpans>, OtlpError> {
    match encoding {
        Encoding::Protobuf => proto::decode_request(body),
        Encoding::Json => json::decode_request(body),
    }
}
