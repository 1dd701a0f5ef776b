//! Offline replay: events from the `jsonl` input, put in event-time order, run through the
//! configured detectors, findings handed to the caller as they close. Streams: memory
//! is bounded by the reorder buffer and the detectors' own caps, not by the input.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde::Serialize;
use toolgate_detectors::{EmitPolicy, FoldStats, build_pipeline, definitions};
use toolgate_ingest::kafka::Polled;
use toolgate_ingest::{DeadLetterWriter, RejectCounts, Rejected};
use toolgate_protocol::config::Config;
use toolgate_protocol::{Event, Finding};

use crate::configured_redactor;
use crate::driver::{Driver, Step};
use crate::sources::{InputContext, Next, open_input};

/// What a replay read and produced.
#[derive(Debug, Default, Serialize)]
pub struct ReplayStats {
    /// Events decoded.
    pub events: u64,
    /// Lines rejected, by cause.
    pub rejected: RejectCounts,
    /// Where rejected lines were written, if any were.
    pub dead_letter_file: Option<String>,
    /// Blank lines skipped.
    pub blank_lines: u64,
    /// Events that arrived later than the allowed lateness.
    pub late_events: u64,
    /// Findings by detector.
    pub findings_by_detector: BTreeMap<&'static str, u64>,
    /// Findings by severity.
    pub findings_by_severity: BTreeMap<&'static str, u64>,
    /// Folding counters.
    pub folding: FoldStats,
    /// Detectors that ran.
    pub detectors: Vec<&'static str>,
    /// Detector state at the end, by exported gauge name.
    pub state: BTreeMap<&'static str, u64>,
    /// Wall-clock seconds.
    pub seconds: f64,
}

impl ReplayStats {
    /// Findings in all.
    pub fn findings(&self) -> u64 {
        self.findings_by_detector.values().sum()
    }

    /// A short human summary for stderr.
    pub fn summary(&self) -> String {
        let mut s = format!(
            "events: {} read, {} rejected, {} late; {:.1} s ({:.0} events/s)\n",
            self.events,
            self.rejected.total,
            self.late_events,
            self.seconds,
            self.events as f64 / self.seconds.max(1e-9)
        );
        if self.rejected.total > 0 {
            let kinds: Vec<String> = self
                .rejected
                .by_kind
                .iter()
                .map(|(k, n)| format!("{k} {n}"))
                .collect();
            s += &format!(
                "rejected by cause: {}; written to {}\n",
                kinds.join(", "),
                self.dead_letter_file.as_deref().unwrap_or("?")
            );
        }
        s += &format!(
            "detectors: {}\n",
            if self.detectors.is_empty() {
                "(none registered)".to_string()
            } else {
                self.detectors.join(", ")
            }
        );
        let fmt = |m: &BTreeMap<&str, u64>| {
            m.iter()
                .map(|(k, n)| format!("{k} {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        if !self.state.is_empty() {
            s += &format!("state: {}\n", fmt(&self.state));
        }
        s += &format!("findings: {}", self.findings());
        if self.findings() > 0 {
            s += &format!(
                " (by detector: {}; by severity: {})",
                fmt(&self.findings_by_detector),
                fmt(&self.findings_by_severity)
            );
        }
        s.push('\n');
        s
    }
}

/// Replays `input` (a file, a directory or `-`). Rejected lines go to `dead_letter`,
/// created only if there is one. The `definitions` detector's pins are read from
/// `pins_file` before and written back after, when it is given. `on_event` sees every
/// event in processing order; `on_finding` every finding once, with its final count.
pub fn replay(
    config: &Config,
    input: &str,
    dead_letter: &Path,
    pins_file: Option<&Path>,
    mut on_event: impl FnMut(&Event) -> Result<()>,
    mut on_finding: impl FnMut(&Finding) -> Result<()>,
) -> Result<ReplayStats> {
    let started = Instant::now();
    let mut pipeline = build_pipeline(config, EmitPolicy::FinalOnly)?;
    if let Some(path) = pins_file
        && let Some(bytes) =
            toolgate_edge::fs::read_if_exists(path).context("cannot read the pins file")?
    {
        pipeline
            .restore_detector(definitions::NAME, &bytes)
            .with_context(|| format!("invalid pins file {}", path.display()))?;
    }
    let mut source = open_input(
        "jsonl",
        &InputContext {
            config,
            location: Some(input),
            brokers: "",
            properties: &[],
            owner: None,
        },
    )?;
    let max_bytes = config.limits.max_event_bytes;
    let mut stats = ReplayStats {
        detectors: pipeline.detector_names(),
        ..ReplayStats::default()
    };
    let mut driver = Driver::new(pipeline, &config.event_time);
    let mut dlq: Option<DeadLetterWriter> = None;
    let mut step = Step::default();

    let mut emit = |step: &mut Step<Event>, stats: &mut ReplayStats| -> Result<()> {
        for (event, _) in &step.processed {
            on_event(event)?;
        }
        for f in &step.findings {
            *stats
                .findings_by_detector
                .entry(f.detector.as_str())
                .or_default() += 1;
            *stats
                .findings_by_severity
                .entry(f.severity.as_str())
                .or_default() += 1;
            on_finding(f)?;
        }
        step.clear();
        Ok(())
    };

    loop {
        let record = match source.next(Duration::MAX)? {
            Next::Record(record) => record,
            Next::Idle => continue,
            Next::Ended => break,
        };
        let partition = record.partition;
        match record.decode(source.origin(partition), max_bytes, max_bytes) {
            Polled::Event { event, .. } => {
                stats.events += 1;
                driver.push(*event, &mut step);
            }
            Polled::Rejected(rejected) => {
                let rejected = Rejected::from_record(*rejected);
                stats.rejected.add(&rejected.error);
                let writer = match &mut dlq {
                    Some(w) => w,
                    None => {
                        let mut w = DeadLetterWriter::create(dead_letter)
                            .context("cannot create the dead-letter file")?;
                        if !config.dead_letter.keep_raw
                            && let Some(redactor) = configured_redactor(config)?
                        {
                            w = w.redacting(Box::new(move |text: &mut String| {
                                redactor.redact_text_in_place(text)
                            }));
                        }
                        dlq.insert(w)
                    }
                };
                writer.write(&rejected)?;
            }
        }
        emit(&mut step, &mut stats)?;
    }
    driver.finish(&mut step);
    stats.state = driver
        .pipeline()
        .gauges()
        .into_iter()
        .map(|(g, v)| (g.name(), v))
        .collect();
    let late = driver.reorder().late();
    let pipeline = driver.pipeline_mut();
    pipeline.finish(&mut step.findings);
    emit(&mut step, &mut stats)?;

    if let Some(path) = pins_file
        && let Some(state) = pipeline.detector_snapshot(definitions::NAME)
    {
        toolgate_edge::fs::replace(path, &state?).context("cannot save the pins")?;
    }
    if let Some(w) = dlq {
        w.finish()?;
        stats.dead_letter_file = Some(dead_letter.display().to_string());
    }
    stats.blank_lines = source.skipped();
    stats.late_events = late;
    stats.folding = pipeline.fold_stats();
    stats.seconds = started.elapsed().as_secs_f64();
    Ok(stats)
}

/// Where rejected lines go when the command line does not say: beside the output when
/// it is a file, else (stdout, `/dev/null`, a pipe) in the working directory.
pub fn default_dead_letter_path(output: Option<&str>) -> PathBuf {
    // An output that does not exist yet will be a file.
    let is_file = |o: &str| std::fs::metadata(o).map_or(true, |m| m.is_file());
    match output {
        Some(o) if o != "-" && is_file(o) => PathBuf::from(format!("{o}.dlq.jsonl")),
        _ => PathBuf::from("toolgate-rejected.dlq.jsonl"),
    }
}

/// The pins file: the command line's `--pins`, else `[detectors.definitions] pins_file`.
pub fn pins_file(config: &Config, flag: Option<&Path>) -> Option<PathBuf> {
    flag.map(Path::to_path_buf).or_else(|| config.pins_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issue_22_dead_letters_go_beside_a_file_output_and_nowhere_near_a_device() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("f.jsonl");
        let out = out.to_str().unwrap();
        assert_eq!(
            default_dead_letter_path(Some(out)),
            PathBuf::from(format!("{out}.dlq.jsonl")),
            "not yet written"
        );
        std::fs::write(out, "").unwrap();
        assert_eq!(
            default_dead_letter_path(Some(out)),
            PathBuf::from(format!("{out}.dlq.jsonl"))
        );
        for other in [Some("/dev/null"), Some("-"), None] {
            assert_eq!(
                default_dead_letter_path(other),
                PathBuf::from("toolgate-rejected.dlq.jsonl"),
                "{other:?}"
            );
        }
    }
}
