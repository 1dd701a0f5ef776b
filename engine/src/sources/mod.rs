//! Sources the engine runs beside its consumer of the events topic: receivers that take
//! events from outside the fleet's sinks (OTLP/HTTP traces today) and publish them to
//! the events topic, keyed by agent, so that the workers see them exactly as the
//! sinks' events: partitioned, checkpointed, replayable.
//!
//! Each kind is a module with a `start` function, listed once in [`KINDS`]: a new
//! kind is its module, one line there, and its config section.

pub mod otlp;

use std::net::SocketAddr;

use anyhow::{Context, Result};
use toolgate_protocol::config::Config;

use crate::Counters;

/// A running source; it stops when dropped.
pub trait Source: Send {
    /// Its kind, as [`KINDS`] names it.
    fn kind(&self) -> &'static str;

    /// Where it listens, for a source that listens.
    fn local_addr(&self) -> Option<SocketAddr>;
}

/// What starting a source needs besides the config.
pub struct SourceContext<'a> {
    /// The engine's config: each source reads its own section.
    pub config: &'a Config,
    /// Bootstrap brokers of the events topic.
    pub brokers: &'a str,
    /// `[kafka.properties]`, for the source's producer.
    pub properties: &'a [(String, String)],
    /// The engine's counters, where sources count what they did.
    pub counters: &'a Counters,
}

/// Starts a source when its config section turns it on; `None` otherwise.
pub type Start = fn(&SourceContext<'_>) -> Result<Option<Box<dyn Source>>>;

/// The registry: every kind of source, by name.
pub const KINDS: &[(&str, Start)] = &[("otlp", otlp::start)];

/// Starts every source the config turns on.
pub fn start_all(context: &SourceContext<'_>) -> Result<Vec<Box<dyn Source>>> {
    let mut running = Vec::new();
    for (kind, start) in KINDS {
        if let Some(source) =
            start(context).with_context(|| format!("starting the {kind} source"))?
        {
            running.push(source);
        }
    }
    Ok(running)
}
