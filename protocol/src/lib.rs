//! toolgate's wire contracts, shared by the sink, the engine and every tool.
//!
//! - [`event`] — `toolgate.event.v1`, decoded with errors that name the field, the
//!   expected and the found value ([`DecodeError`]);
//! - [`finding`] — `toolgate.finding.v1`;
//! - [`decision`] — `toolgate.decision.v1` with Ed25519 signing and verification;
//! - [`canonical`] — RFC 8785 canonical JSON, the byte form signatures and
//!   [`fingerprint`]s are computed over;
//! - [`config`] — `toolgate.toml`;
//! - [`time`] — RFC 3339 timestamps and config durations;
//! - [`lenient`] — JSON read as leniently as the MCP peers read it, for the sink;
//! - [`partition`] — the key-to-partition function every producer of toolgate topics
//!   shares, so a sink can read only its own partition of decisions.
//!
//! Pure data and validation: no I/O beyond reading a config file, no async runtime, no
//! Kafka or Arrow, so the per-agent sink can depend on it and stay small.
#![deny(missing_docs)]

pub mod canonical;
pub mod config;
pub mod decision;
mod decode;
pub mod error;
pub mod event;
pub mod finding;
pub mod fingerprint;
pub mod lenient;
pub mod partition;
pub mod time;

pub use decode::MAX_IDENTIFIER_BYTES;
pub use error::{DecodeError, FieldProblem};
pub use event::{Event, EventBody, EventKind, ToolDefinition, ToolResult};
pub use finding::{DetectorKind, Finding, FindingAction, FindingOutcome, Severity};
pub use time::{Duration, Timestamp};
