//! `toolgate analyze`: offline replay of recorded events through the detectors.

use anyhow::{Context, Result};

use toolgate_analytics::history::HistoryWriter;

use super::import::redactor;
use super::{Output, load_config};
use crate::cli::AnalyzeArgs;
use crate::outputs::{FindingWriter, Output as FindingOutput};
use crate::replay::{default_dead_letter_path, pins_file, replay};

/// Runs the replay, writing findings to the command line's output and to every
/// `[[outputs]]` of the config; prints the summary to stderr.
pub fn run(args: &AnalyzeArgs) -> Result<()> {
    let config = load_config(args.config.as_deref())?;
    let output = args.output.as_deref().unwrap_or("-");
    let mut main = FindingWriter::new(output, args.format, Output::open(output)?);
    let extra = std::cell::RefCell::new(FindingOutput::open_all(
        &config.outputs,
        std::path::Path::new(&config.engine.data_dir),
    )?);
    let dead_letter = args
        .dead_letter
        .clone()
        .unwrap_or_else(|| default_dead_letter_path(args.output.as_deref()));
    let pins = pins_file(&config, args.pins.as_deref());
    // Both callbacks write to the history and the outputs; they never run at the same
    // time.
    let history = std::cell::RefCell::new(match &args.history {
        Some(location) => {
            let mut history = config.history.clone();
            history.location = location.clone();
            let redactor = redactor(&config, config.redaction.enabled)?;
            Some(
                HistoryWriter::open(&history, redactor)
                    .with_context(|| format!("opening history {location}"))?,
            )
        }
        None => None,
    });
    let stats = replay(
        &config,
        &args.input,
        &dead_letter,
        pins.as_deref(),
        |event| {
            if let Some(h) = history.borrow_mut().as_mut() {
                h.append_event(event).context("writing history")?;
            }
            for w in extra.borrow_mut().iter_mut() {
                w.write_event(event)?;
            }
            Ok(())
        },
        |finding| {
            if let Some(h) = history.borrow_mut().as_mut() {
                h.append_finding(finding).context("writing history")?;
            }
            main.write(finding)
                .with_context(|| format!("writing findings to {}", main.name()))?;
            for w in extra.borrow_mut().iter_mut() {
                w.write(finding)?;
            }
            Ok(())
        },
    )?;
    main.into_inner()
        .finish()
        .with_context(|| format!("writing findings to {output}"))?;
    for w in extra.into_inner() {
        let name = w.name().to_string();
        w.close().with_context(|| format!("closing {name}"))?;
    }
    if let Some(h) = history.into_inner() {
        let location = format!("{:?}", h.location());
        let written = h
            .close_all()
            .with_context(|| format!("writing history {location}"))?;
        eprintln!(
            "history: {} rows in {} files ({} bytes) under {location}",
            written.rows_published, written.files_published, written.bytes_published
        );
    }
    eprint!("{}{}", stats.summary(), crate::process::peak_rss_note());
    Ok(())
}
