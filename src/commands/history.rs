//! `toolgate history`: maintenance of the Parquet history, and the one place the
//! commands resolve which history they mean.

use anyhow::{Context, Result};
use toolgate_analytics::history::HistoryWriter;
use toolgate_protocol::Duration;
use toolgate_protocol::config::HistoryConfig;

use super::load_config;
use crate::cli::{CompactArgs, HistoryArgs};

/// `--history`, else the config's `[history]`, else the default location.
pub fn history_config(args: &HistoryArgs) -> Result<HistoryConfig> {
    let mut config = load_config(args.config.as_deref())?.history;
    if let Some(location) = &args.history {
        config.location = location.clone();
    }
    Ok(config)
}

/// Compacts every hour with enough small files that nothing wrote to for `--min-age`.
pub fn compact(args: &CompactArgs) -> Result<()> {
    let config = history_config(&args.history)?;
    let min_age = Duration::parse(&args.min_age).context("--min-age")?;
    let min_age = min_age.to_std();
    let mut writer = HistoryWriter::open(&config, None)
        .with_context(|| format!("opening history {}", config.location))?;
    let stats = writer
        .compact(min_age)
        .with_context(|| format!("compacting history {}", config.location))?;
    eprintln!(
        "compacted {} hour(s): {} files into {}, {} rows{}",
        stats.partitions,
        stats.files_in,
        stats.files_out,
        stats.rows,
        if stats.recovered > 0 {
            format!("; finished {} interrupted compaction(s)", stats.recovered)
        } else {
            String::new()
        }
    );
    Ok(())
}
