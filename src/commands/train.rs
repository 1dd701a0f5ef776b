//! `toolgate train`: learn normal behaviour from recorded events. Writes one JSON
//! model with two parts: `sequence` (per-role n-gram call models and the score
//! distributions their thresholds come from, learned by the sequence detector's own
//! learner) and `sessions` (k-means clusters of session feature vectors, fitted with
//! linfa). `[detectors.sequence.learned] model_file` and `[detectors.session]
//! model_file` load it.

use std::collections::HashMap;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use toolgate_analytics::train::fit_sessions;
use toolgate_detectors::sequence::LearnedSettings;
use toolgate_detectors::sequence::learned::Learner;
use toolgate_detectors::session::{self, SessionAccumulator, SessionSettings};
use toolgate_ingest::{JsonlSource, SourceItem};
use toolgate_protocol::Event;
use toolgate_protocol::config::Config;

use super::load_config;
use crate::cli::TrainArgs;
use crate::event_time::Reorder;
use crate::replay::write_atomically;

/// Seed of the k-means initialisation: a fixed seed makes training reproducible.
const SEED: u64 = 0x746f_6f6c_6761_7465;

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
    let mut learner = Learner::new(learned).map_err(anyhow::Error::msg)?;
    learner.train_only = true;
    let session_settings: SessionSettings = serde_json::from_value(table(&config, &["session"]))
        .context("invalid [detectors.session]")?;
    let spec = session::feature_spec(&config, &session_settings);

    let mut source = JsonlSource::open(&args.input, config.limits.max_event_bytes)?;
    let mut reorder = Reorder::new(
        config.event_time.allowed_lateness,
        config.event_time.max_buffered_events,
    );
    let mut sessions: HashMap<String, SessionAccumulator> = HashMap::new();
    let (mut read, mut used, mut rejected) = (0u64, 0u64, 0u64);
    let mut ready = Vec::new();
    // Training raises nothing; the learner's drafts (none with `train_only`) go here.
    let mut ignored = Vec::new();
    let mut learn = |events: &mut Vec<Event>, learner: &mut Learner, used: &mut u64| {
        let mut ignored = Vec::new();
        for e in events.drain(..) {
            if !filters.iter().all(|f| f.keeps(&e)) {
                continue;
            }
            *used += 1;
            learner.observe(&e, &config, i64::MIN, &mut ignored);
            sessions
                .entry(format!("{}\u{1f}{}", e.agent_id, e.session_id))
                .or_default()
                .add(&e, &config, &spec);
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
        learn(&mut ready, &mut learner, &mut used);
        if let Some(w) = reorder.watermark() {
            learner.advance(w.unix_nanos(), &mut ignored);
        }
    }
    reorder.finish(&mut ready);
    learn(&mut ready, &mut learner, &mut used);
    learner.finish(&mut ignored);

    let mut keys: Vec<&String> = sessions.keys().collect();
    keys.sort();
    let vectors: Vec<Vec<f64>> = keys
        .iter()
        .filter_map(|k| sessions.get(*k))
        .filter(|a| a.calls() >= session_settings.min_calls)
        .map(|a| a.vector(&spec))
        .collect();
    let model = fit_sessions(spec.names(), &vectors, args.max_clusters, 99.0, SEED)
        .context("cannot cluster the sessions")?;
    let sequence = learner.model();
    let out = json!({
        "format": "toolgate.model.v1",
        "input": args.input,
        "filters": args.filters,
        "events": used,
        "sequence": sequence,
        "sessions": model,
    });
    let text = serde_json::to_vec_pretty(&out).context("cannot encode the model")?;
    write_atomically(&args.output, &text)?;
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
        vectors.len(),
        model.clusters.len(),
        model
            .silhouette
            .iter()
            .map(|(k, s)| format!("{k}: {s}"))
            .collect::<Vec<_>>()
            .join(", "),
        args.output.display()
    );
    Ok(())
}
