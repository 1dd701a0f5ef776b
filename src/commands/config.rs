//! `toolgate config check`: the report each binary makes at start, for a config file,
//! so a gap in protection is found before anything runs.

use std::io::Write;

use anyhow::Result;
use toolgate_protocol::config::{Config, Gap, Level, Role};

use crate::cli::ConfigCheckArgs;

/// Prints the sink's and the engine's gaps, worst first; fails when a sink would
/// refuse the config or it does not load.
pub fn check(args: &ConfigCheckArgs) -> Result<()> {
    let origin = args
        .config
        .as_deref()
        .map_or("<defaults>".to_string(), |p| p.display().to_string());
    let mut config = match &args.config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    let mut out = std::io::stdout().lock();
    let mut refused = 0;
    // What the binaries read from the environment at start: missing here may be set
    // where they run, so it is reported, not fatal.
    if let Err(e) = config.resolve_environment(&origin, |var| std::env::var_os(var)) {
        writeln!(
            out,
            "environment: {e} (here; the binaries need it where they run)"
        )?;
    }
    let sink = Role::Sink {
        brokers_flag: args.brokers,
    };
    for (name, role) in [("sink", sink), ("engine", Role::Engine)] {
        let gaps = config.gaps(role);
        refused += gaps.iter().filter(|g| g.level == Level::Refuse).count();
        writeln!(out, "{name}: {}", summary(&gaps))?;
        for gap in &gaps {
            writeln!(out, "  {gap}")?;
        }
    }
    out.flush()?;
    if refused > 0 {
        anyhow::bail!("{origin}: {refused} gap(s) a binary refuses to start with");
    }
    Ok(())
}

fn summary(gaps: &[Gap]) -> String {
    let count = |l: Level| gaps.iter().filter(|g| g.level == l).count();
    match gaps.is_empty() {
        true => "no gaps".into(),
        false => format!(
            "{} refuse, {} warn, {} note",
            count(Level::Refuse),
            count(Level::Warn),
            count(Level::Note)
        ),
    }
}
