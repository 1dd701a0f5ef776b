//! `toolgate demo`.

use anyhow::Result;

use super::load_config;
use super::run::{stop_on_signals, workers};
use crate::cli::DemoArgs;
use crate::demo::{DemoOptions, run as run_demo};

/// Runs the demo until its time is up or SIGINT.
pub fn run(args: &DemoArgs) -> Result<()> {
    let stop = stop_on_signals()?;
    let config = match &args.config {
        Some(path) => Some(load_config(Some(path))?),
        None => None,
    };
    run_demo(
        DemoOptions {
            config,
            data_dir: args.data_dir.clone(),
            agents: args.agents,
            seconds: args.seconds,
            workers: workers(args.workers),
        },
        &stop,
    )
}
