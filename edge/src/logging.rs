//! Where the logs of both binaries (`toolgate` and `toolgate-sink`) go: `tracing`
//! events on stderr, as text lines for people or JSON lines (`--log-format json`) for a
//! log pipeline. Libraries only emit `tracing` events; the binary chooses where they
//! go. `TOOLGATE_LOG` filters them by level and target (`info` by default; e.g.
//! `warn,toolgate_engine=debug`).

use std::str::FromStr;

use tracing_subscriber::filter::Targets;
use tracing_subscriber::fmt;
use tracing_subscriber::prelude::*;

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One human-readable line per event.
    #[default]
    Text,
    /// One JSON object per event: time, level, target, message and fields.
    Json,
}

/// Installs the subscriber for the whole process.
pub fn init(format: LogFormat) {
    let (filter, bad_filter) = match std::env::var("TOOLGATE_LOG") {
        Ok(spec) => match Targets::from_str(&spec) {
            Ok(t) => (t, None),
            Err(e) => (
                default_filter(),
                Some(format!("TOOLGATE_LOG={spec:?}: {e}; logging at info")),
            ),
        },
        Err(_) => (default_filter(), None),
    };
    let registry = tracing_subscriber::registry().with(filter);
    let installed = match format {
        LogFormat::Text => registry
            .with(fmt::layer().with_writer(std::io::stderr).with_ansi(false))
            .try_init(),
        LogFormat::Json => registry
            .with(
                fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_writer(std::io::stderr),
            )
            .try_init(),
    };
    if installed.is_ok()
        && let Some(warning) = bad_filter
    {
        tracing::warn!("{warning}");
    }
}

fn default_filter() -> Targets {
    Targets::new().with_default(tracing::Level::INFO)
}
