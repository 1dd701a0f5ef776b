//! `toolgate rules`: check the sequence rules a config runs; convert Sigma rules.

use std::io::Write;

use anyhow::{Context, Result};
use serde_json::Value;
use toolgate_detectors::sequence::{self, RuleSpec, SequenceDetector, SequenceSettings};
use toolgate_ingest::sigma;

use super::{Output, load_config};
use crate::cli::{ImportSigmaArgs, RulesCheckArgs};

/// Compiles every rule and lists them, one line each.
pub fn check(args: &RulesCheckArgs) -> Result<()> {
    let config = load_config(args.config.as_deref())?;
    let table = config
        .detectors
        .get(sequence::NAME)
        .cloned()
        .unwrap_or_else(|| Value::Object(Default::default()));
    let mut table = table;
    if let Value::Object(t) = &mut table {
        t.remove("enabled");
    }
    let settings: SequenceSettings =
        toolgate_detectors::settings(sequence::NAME, table).context("invalid rules")?;
    let detector = SequenceDetector::new(&config, settings).context("invalid rules")?;
    let mut out = std::io::stdout().lock();
    for rule in detector.rules() {
        let s = rule.spec();
        writeln!(
            out,
            "{:<40} {:<10} {:<9} {:<6} {} step(s){}  [{}]",
            s.id,
            format!("{:?}", s.kind).to_lowercase(),
            s.severity.as_str(),
            s.action.as_str(),
            s.steps.len(),
            s.within.map(|w| format!(" within {w}")).unwrap_or_default(),
            s.source.as_deref().unwrap_or("inline"),
        )?;
    }
    eprintln!("{} rules compiled", detector.rules().len());
    Ok(())
}

/// Converts Sigma files into one TOML rule file (`[[rules]]`), checking each rule
/// compiles.
pub fn import_sigma(args: &ImportSigmaArgs) -> Result<()> {
    let mut rules: Vec<RuleSpec> = Vec::new();
    for path in &args.files {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        for table in sigma::convert(&text, &path.display().to_string())? {
            let spec: RuleSpec = serde_json::from_value(table.clone()).with_context(|| {
                format!("{}: converted rule {table} is not valid", path.display())
            })?;
            sequence::Rule::compile(spec.clone())
                .map_err(anyhow::Error::msg)
                .with_context(|| format!("{}", path.display()))?;
            rules.push(spec);
        }
    }
    #[derive(serde::Serialize)]
    struct RuleFile<'a> {
        rules: &'a [RuleSpec],
    }
    let text =
        toml::to_string(&RuleFile { rules: &rules }).context("cannot write the rules as TOML")?;
    let target = args.output.as_deref().unwrap_or("-");
    let mut out = Output::open(target)?;
    writeln!(
        out,
        "# Converted from Sigma by `toolgate rules import-sigma`; see the sequence detector's rule format."
    )?;
    out.write_all(text.as_bytes())?;
    out.finish().with_context(|| format!("writing {target}"))?;
    eprintln!("{} rules converted", rules.len());
    Ok(())
}
