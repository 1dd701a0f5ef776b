//! `toolgate analyze`: offline replay of recorded events through the detectors.

use std::sync::Arc;

use anyhow::{Context, Result};

use toolgate_analytics::history::HistoryWriter;
use toolgate_engine::metrics::Gauges;
use toolgate_engine::outputs::FindingWriter;
use toolgate_engine::replay::{default_dead_letter_path, pins_file, replay};
use toolgate_engine::writers::{Row, Writers};

use super::{Output, load_config};
use crate::cli::AnalyzeArgs;

/// Runs the replay, writing findings to the command line's output, and events and
/// findings to the history and every `[[outputs]]` of the config through the engine's
/// writers (the same thread and code as `toolgate run`); prints the summary to stderr.
pub fn run(args: &AnalyzeArgs) -> Result<()> {
    let config = load_config(args.config.as_deref())?;
    let output = args.output.as_deref().unwrap_or("-");
    let mut main = FindingWriter::new(output, args.format, Output::open(output)?);
    let dead_letter = args
        .dead_letter
        .clone()
        .unwrap_or_else(|| default_dead_letter_path(args.output.as_deref()));
    let pins = pins_file(&config, args.pins.as_deref());
    let history = match &args.history {
        Some(location) => {
            let mut history = config.history.clone();
            history.location = location.clone();
            let redactor = toolgate_engine::configured_redactor(&config)?;
            Some(
                HistoryWriter::open(&history, redactor)
                    .with_context(|| format!("opening history {location}"))?,
            )
        }
        None => None,
    };
    let writers = Writers::start(
        history,
        &config.outputs,
        std::path::Path::new(&config.engine.data_dir),
        None,
        Arc::new(Gauges::default()),
    )?;
    let rows = writers.sender()?;
    let keep_events = writers.wants_events();
    let stats = replay(
        &config,
        &args.input,
        &dead_letter,
        pins.as_deref(),
        |event| {
            if keep_events {
                rows.send(Row::Event(Box::new(event.clone())))?;
            }
            Ok(())
        },
        |finding| {
            main.write(finding)
                .with_context(|| format!("writing findings to {}", main.name()))?;
            rows.send(Row::Finding(Box::new(finding.clone())))
        },
    );
    drop(rows);
    // The writers are closed whatever the replay did, so that what they took is kept.
    let written = writers.close();
    let stats = stats?;
    main.into_inner()
        .finish()
        .with_context(|| format!("writing findings to {output}"))?;
    if let (Some(h), Some(location)) = (written?, &args.history) {
        eprintln!(
            "history: {} rows in {} files ({} bytes) under {location}",
            h.rows_published, h.files_published, h.bytes_published
        );
    }
    eprint!("{}{}", stats.summary(), crate::process::peak_rss_note());
    Ok(())
}
