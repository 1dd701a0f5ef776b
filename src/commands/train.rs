//! `toolgate train`: read recorded events (in event-time order, filtered by label),
//! hand them to `toolgate_analytics::train::Trainer`, and write one JSON model with two
//! parts: `sequence` (per-role n-gram call models and the score
//! distributions their thresholds come from, learned by the sequence detector's own
//! learner) and `sessions` (k-means clusters of session feature vectors, fitted with
//! linfa). `[detectors.sequence.learned] model_file` and `[detectors.session]
//! model_file` load it.

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use toolgate_analytics::train::Trainer;
use toolgate_detectors::sequence::LearnedSettings;
use toolgate_detectors::session::SessionSettings;
use toolgate_ingest::{JsonlSource, SourceItem};
use toolgate_protocol::Event;
use toolgate_protocol::config::Config;

use super::load_config;
use crate::cli::TrainArgs;
use toolgate_engine::event_time::Reorder;

enum Filter {
    Is(String, String),
    IsNot(String, String),
}

impl Filter {
    fn parse(s: &str) -> Result<Filter> {
        if let Some((k, v)) = s.split_once("!=") {
            return Ok(Filter::IsNot(k.into(), v.into()));
        }
        match s.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok(Filter::Is(k.into(), v.into())),
            _ => bail!("--where {s:?}: expected LABEL=VALUE or LABEL!=VALUE"),
        }
    }

    fn keeps(&self, e: &Event) -> bool {
        match self {
            Filter::Is(k, v) => e.labels.get(k) == Some(v),
            Filter::IsNot(k, v) => e.labels.get(k) != Some(v),
        }
    }
}

/// Settings table of a detector with the trained model taken out (training starts
/// from nothing).
fn table(config: &Config, path: &[&str]) -> Value {
    let mut v = config
        .detectors
        .get(path[0])
        .cloned()
        .unwrap_or_else(|| json!({}));
    for p in &path[1..] {
        v = v.get(*p).cloned().unwrap_or_else(|| json!({}));
    }
    if let Value::Object(o) = &mut v {
        o.remove("model");
        o.remove("enabled");
    }
    v
}

/// Reads the events, learns, writes the model.
pub fn run(args: &TrainArgs) -> Result<()> {
    if let Some(crate::cli::TrainModel::Injection(a)) = &args.model {
        return super::injection::run(a);
    }
    let (Some(input), Some(output)) = (args.input.as_deref(), args.output.as_deref()) else {
        bail!("--input and --output are required");
    };
    let config = load_config(args.config.as_deref())?;
    let filters: Vec<Filter> = args
        .filters
        .iter()
        .map(|f| Filter::parse(f))
        .collect::<Result<_>>()?;
    if args.max_clusters < 2 {
        bail!("--max-clusters must be at least 2");
    }
    let learned: LearnedSettings = serde_json::from_value(table(&config, &["sequence", "learned"]))
        .context("invalid [detectors.sequence.learned]")?;
    let session_settings: SessionSettings = serde_json::from_value(table(&config, &["session"]))
        .context("invalid [detectors.session]")?;
    let mut trainer = Trainer::new(&config, learned, &session_settings)?;

    let mut source = JsonlSource::open(input, config.limits.max_event_bytes)?;
    let mut reorder = Reorder::new(
        config.event_time.allowed_lateness,
        config.event_time.max_buffered_events,
    )
    .with_max_bytes(config.event_time.max_buffered_bytes);
    let (mut read, mut rejected) = (0u64, 0u64);
    let mut ready = Vec::new();
    let learn = |events: &mut Vec<Event>, trainer: &mut Trainer| {
        for e in events.drain(..) {
            if filters.iter().all(|f| f.keeps(&e)) {
                trainer.observe(&e);
            }
        }
    };
    for item in source.by_ref() {
        match item? {
            SourceItem::Event(e) => {
                read += 1;
                reorder.push(*e, &mut ready);
            }
            SourceItem::Rejected(_) => rejected += 1,
        }
        learn(&mut ready, &mut trainer);
        if let Some(w) = reorder.watermark() {
            trainer.advance(w.unix_nanos());
        }
    }
    reorder.finish(&mut ready);
    learn(&mut ready, &mut trainer);
    let trained = trainer
        .finish(args.max_clusters)
        .context("cannot learn from these events")?;
    let (sequence, model, used) = (trained.sequence, trained.sessions, trained.events);
    let out = json!({
        "format": "toolgate.model.v1",
        "input": input,
        "filters": args.filters,
        "events": used,
        "sequence": sequence,
        "sessions": model,
    });
    let text = serde_json::to_vec_pretty(&out).context("cannot encode the model")?;
    toolgate_edge::fs::replace(output, &text).context("cannot save the model")?;
    eprintln!(
        "events: {read} read, {rejected} rejected, {used} learned from\nroles: {}",
        sequence
            .roles
            .iter()
            .map(|(r, m)| format!("{r} ({} calls, {} sessions)", m.calls, m.sessions))
            .collect::<Vec<_>>()
            .join(", ")
    );
    eprintln!(
        "sessions: {} clustered into k = {} (silhouette by k: {}); model written to {}",
        model.sessions,
        model.clusters.len(),
        model
            .silhouette
            .iter()
            .map(|(k, s)| format!("{k}: {s}"))
            .collect::<Vec<_>>()
            .join(", "),
        output.display()
    );
    Ok(())
}
