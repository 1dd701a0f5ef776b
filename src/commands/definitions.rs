//! `toolgate definitions`: the operator's side of pinned tool definitions.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use toolgate_detectors::definitions::{DefinitionsState, diff};
use toolgate_detectors::injection::analysis::analyze_tool;

use super::load_config;
use crate::cli::{DefinitionsCommand, PinTarget, PinsArgs};
use toolgate_engine::replay::pins_file;

/// The pins files: `--pins`, else `[detectors.definitions] pins_file`, else the sinks'
/// own per-server files under `[sink] spool_dir` (the one of `server` if named).
fn locate(args: &PinsArgs, server: Option<&str>) -> Result<Vec<PathBuf>> {
    let config = load_config(args.config.as_deref())?;
    if let Some(p) = pins_file(&config, args.pins.as_deref()) {
        return Ok(vec![p]);
    }
    let dir = config.sink_pins_dir();
    if let Some(p) = server.and_then(|s| config.sink_pins_file(s)) {
        if !p.exists() {
            bail!(
                "no pins file for this server at {} (name one with --pins)",
                p.display()
            );
        }
        return Ok(vec![p]);
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "json"))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    if files.is_empty() {
        bail!(
            "no pins: name the file with --pins or [detectors.definitions] pins_file (the sinks' own are in {})",
            dir.display()
        );
    }
    Ok(files)
}

/// The one pins file of `target`'s server.
fn locate_one(target: &PinTarget) -> Result<PathBuf> {
    let mut files = locate(&target.pins, Some(&target.server))?;
    match files.len() {
        1 => Ok(files.remove(0)),
        _ => bail!("several pins files; name one with --pins"),
    }
}

fn load(path: &PathBuf) -> Result<DefinitionsState> {
    let bytes =
        std::fs::read(path).with_context(|| format!("cannot read pins file {}", path.display()))?;
    DefinitionsState::from_json(&bytes)
        .with_context(|| format!("invalid pins file {}", path.display()))
}

fn short(fp: &str) -> &str {
    fp.get(..19).unwrap_or(fp)
}

/// Runs one `definitions` subcommand.
pub fn run(cmd: &DefinitionsCommand) -> Result<()> {
    match cmd {
        DefinitionsCommand::List(args) => list(args),
        DefinitionsCommand::Diff(target) => show_diff(target),
        DefinitionsCommand::Approve(target) => decide(target, true),
        DefinitionsCommand::Reject(target) => decide(target, false),
    }
}

fn list(args: &PinsArgs) -> Result<()> {
    for path in locate(args, None)? {
        list_one(&path)?;
    }
    Ok(())
}

fn list_one(path: &PathBuf) -> Result<()> {
    let state = load(path)?;
    let mut pending_total = 0;
    for (server, tools) in &state.pins.servers {
        for (tool, pins) in tools {
            let pinned = pins
                .pinned
                .as_ref()
                .map_or("(none)", |p| short(&p.fingerprint));
            let mut line = format!("{server}/{tool}  pinned {pinned}");
            if !pins.pending.is_empty() {
                pending_total += pins.pending.len();
                let fps: Vec<&str> = pins.pending.iter().map(|p| short(&p.fingerprint)).collect();
                line += &format!("  PENDING {}", fps.join(", "));
            }
            if !pins.rejected.is_empty() {
                line += &format!("  rejected {}", pins.rejected.len());
            }
            println!("{line}");
        }
    }
    eprintln!(
        "{pending_total} change(s) pending approval in {}",
        path.display()
    );
    Ok(())
}

fn show_diff(target: &PinTarget) -> Result<()> {
    let path = locate_one(target)?;
    let state = load(&path)?;
    let Some(pins) = state.pins.get(&target.server, &target.tool) else {
        bail!(
            "{}/{} is not in {}",
            target.server,
            target.tool,
            path.display()
        );
    };
    if pins.pending.is_empty() {
        println!("nothing pending for {}/{}", target.server, target.tool);
        return Ok(());
    }
    let null = serde_json::Value::Null;
    let before = pins.pinned.as_ref().map_or(&null, |p| &p.definition);
    for pending in &pins.pending {
        if target
            .fingerprint
            .as_deref()
            .is_some_and(|fp| fp != pending.fingerprint)
        {
            continue;
        }
        println!(
            "{}/{}: {} -> {} (first seen {} by {})",
            target.server,
            target.tool,
            pins.pinned
                .as_ref()
                .map_or("(none)", |p| p.fingerprint.as_str()),
            pending.fingerprint,
            pending.first_seen,
            pending.agent_id
        );
        println!("{}", diff::render(&diff::diff(before, &pending.definition)));
        let d = &pending.definition;
        let analysis = analyze_tool(
            d["name"].as_str().unwrap_or(&target.tool),
            d["title"].as_str(),
            d["description"].as_str(),
            d["inputSchema"].as_object(),
        );
        let signals: Vec<&str> = analysis.signals.iter().map(|s| s.id).collect();
        println!(
            "poisoning score of the new definition: {} ({})",
            analysis.score,
            signals.join(", ")
        );
    }
    Ok(())
}

fn decide(target: &PinTarget, approve: bool) -> Result<()> {
    let path = locate_one(target)?;
    let mut state = load(&path)?;
    let fp = target.fingerprint.as_deref();
    let chosen = if approve {
        state.pins.approve(&target.server, &target.tool, fp)?
    } else {
        state.pins.reject(&target.server, &target.tool, fp)?
    };
    toolgate_edge::fs::replace(&path, &state.to_json()?).context("cannot save the pins")?;
    eprintln!(
        "{} {} for {}/{} in {}",
        if approve { "approved" } else { "rejected" },
        chosen.fingerprint,
        target.server,
        target.tool,
        path.display()
    );
    Ok(())
}
