//! `toolgate run`: the streaming engine, against the brokers given or an embedded one.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use anyhow::{Context, Result};

use super::load_config;
use crate::cli::RunArgs;
use toolgate_engine::embedded::EmbeddedBroker;
use toolgate_engine::{EngineOptions, run as run_engine};

/// Runs until SIGINT, SIGTERM or SIGHUP, then checkpoints and prints a summary.
pub fn run(args: &RunArgs) -> Result<()> {
    // First: the embedded broker's threads must be started with the signals blocked.
    let stop = stop_on_signals()?;
    let mut config = load_config(args.config.as_deref())?;
    for gap in config.gaps(toolgate_protocol::config::Role::Engine) {
        tracing::warn!(key = %gap.key, "{}", gap.message);
    }
    if let Some(dir) = &args.data_dir {
        config.engine.data_dir = dir.clone();
    }
    if let Some(listen) = &args.metrics_listen {
        config.engine.metrics_listen = Some(listen.clone());
    }
    if let Some(listen) = &args.otlp_listen {
        config.otlp.listen = Some(listen.clone());
    }
    if let Some(h) = &args.history {
        config.history.location = h.clone();
    }
    let brokers = args
        .brokers
        .clone()
        .or_else(|| (!config.kafka.brokers.is_empty()).then(|| config.kafka.brokers.join(",")));
    let embedded = match &brokers {
        Some(_) => None,
        None => {
            let broker = EmbeddedBroker::start(&config.kafka.topics, args.partitions)?;
            let bootstrap = broker.bootstrap();
            tracing::info!(
                bootstrap,
                "embedded broker on {bootstrap} (sinks: --brokers {bootstrap})"
            );
            Some(broker)
        }
    };
    let brokers = brokers
        .or_else(|| embedded.as_ref().map(|b| b.bootstrap().to_string()))
        .context("no brokers")?;
    let report = run_engine(
        &config,
        EngineOptions {
            brokers,
            workers: workers(args.workers),
            history: !args.no_history,
            watcher: None,
            counters: Default::default(),
        },
        &stop,
    )?;
    eprintln!("{}", serde_json::to_string_pretty(&report)?);
    drop(embedded);
    Ok(())
}

/// The worker count: as asked, else one per core.
pub fn workers(asked: Option<usize>) -> usize {
    asked.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from))
}

/// A flag raised by SIGINT, SIGTERM or SIGHUP. Call it before any thread starts (the
/// signals are blocked in the threads started after it and taken by one of its own).
pub fn stop_on_signals() -> Result<Arc<AtomicBool>> {
    toolgate_edge::signals::block()
        .raise_on_first(|_| tracing::info!("stopping: checkpointing and leaving the group"))
        .context("starting the signal listener")
}
