//! `toolgate import agentdojo|safetybench|injecagent`.

use std::io::Write;
use std::time::Instant;

use anyhow::{Context, Result};
use toolgate_ingest::IngestError;
use toolgate_ingest::agentdojo::{self, Mapping};

use super::{Output, load_config};
use crate::cli::{AgentdojoArgs, CorpusArgs};
use toolgate_detectors::secrets::Redactor;
use toolgate_ingest::corpora;
use toolgate_protocol::Event;
use toolgate_protocol::config::Config;

/// Converts AgentDojo runs to events; prints a summary to stderr.
pub fn agentdojo(args: &AgentdojoArgs) -> Result<()> {
    let started = Instant::now();
    let config = load_config(args.config.as_deref())?;
    let mapping = match &args.mapping {
        Some(p) => Mapping::load(p)?,
        None => Mapping::shipped()?,
    };
    mapping.check_domains(&config)?;
    let redactor = redactor(&config, args.redact)?;
    let mut redacted = 0;
    let mut out = Output::open(&args.output)?;
    let stats = agentdojo::import(&args.input, &mapping, |event| {
        let line = redacted_json(event, redactor.as_ref(), &mut redacted);
        writeln!(out, "{line}").map_err(|e| IngestError::Io {
            path: args.output.clone(),
            source: e,
        })
    })
    .with_context(|| format!("importing {}", args.input.display()))?;
    out.finish()
        .with_context(|| format!("writing {}", args.output))?;

    let secs = started.elapsed().as_secs_f64();
    let mut summary = format!(
        "imported {} runs, {} events in {secs:.1} s ({:.0} events/s) to {}\n",
        stats.runs,
        stats.events(),
        stats.events() as f64 / secs.max(1e-9),
        args.output
    );
    summary += &format!("events by kind: {}\n", join_map(&stats.events_by_kind));
    summary += &format!("runs by outcome: {}\n", join_map(&stats.runs_by_outcome));
    summary += &format!(
        "results carrying injected text: {}\n",
        stats.injected_results
    );
    if !stats.unmapped_tools.is_empty() {
        summary += &format!(
            "tools not in the mapping (put on server \"unmapped\"): {}\n",
            join_map(&stats.unmapped_tools)
        );
    }
    if stats.unmatched_results > 0 {
        summary += &format!(
            "results with no matching call: {}\n",
            stats.unmatched_results
        );
    }
    if stats.bad_file_count > 0 {
        summary += &format!("files that are not valid runs: {}\n", stats.bad_file_count);
        for (path, reason) in &stats.bad_files {
            summary += &format!("  {path}: {reason}\n");
        }
    }
    if args.redact {
        summary += &format!("values redacted: {redacted}\n");
    }
    summary += &crate::process::peak_rss_note();
    eprint!("{summary}");
    Ok(())
}

/// Converts MCP-SafetyBench tasks to events.
pub fn safetybench(args: &CorpusArgs) -> Result<()> {
    corpus(args, "MCP-SafetyBench", corpora::import_safetybench)
}

/// Converts InjecAgent tools and cases to events.
pub fn injecagent(args: &CorpusArgs) -> Result<()> {
    corpus(args, "InjecAgent", corpora::import_injecagent)
}

/// The redactor `--redact` asks for (the config's hash key is resolved at load).
pub(crate) fn redactor(config: &Config, redact: bool) -> Result<Option<Redactor>> {
    if !redact {
        return Ok(None);
    }
    Ok(Some(Redactor::new(&config.redaction)?))
}

fn redacted_json(event: &Event, redactor: Option<&Redactor>, count: &mut u64) -> String {
    match redactor {
        Some(r) => {
            let mut copy = event.clone();
            *count += r.redact_event(&mut copy) as u64;
            copy.to_json()
        }
        None => event.to_json(),
    }
}

fn corpus(args: &CorpusArgs, name: &str, import: corpora::Importer) -> Result<()> {
    let config = load_config(args.config.as_deref())?;
    let redactor = redactor(&config, args.redact)?;
    let mut redacted = 0;
    let mut out = Output::open(&args.output)?;
    let stats = import(&args.input, &mut |event| {
        let line = redacted_json(event, redactor.as_ref(), &mut redacted);
        writeln!(out, "{line}").map_err(|e| IngestError::Io {
            path: args.output.clone(),
            source: e,
        })
    })
    .with_context(|| format!("importing {name} from {}", args.input.display()))?;
    out.finish()
        .with_context(|| format!("writing {}", args.output))?;
    eprintln!(
        "imported {name}: {} events to {}; samples: {}{}",
        stats.events,
        args.output,
        join_map(&stats.samples),
        if args.redact {
            format!("; values redacted: {redacted}")
        } else {
            String::new()
        }
    );
    Ok(())
}

fn join_map<K: std::fmt::Display>(m: &std::collections::BTreeMap<K, u64>) -> String {
    m.iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}
