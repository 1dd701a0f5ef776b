//! One module per subcommand; each turns parsed arguments into work and a summary.

pub mod analyze;
pub mod config;
pub mod decisions;
pub mod definitions;
pub mod demo;
pub mod eval;
pub mod history;
pub mod import;
pub mod injection;
pub mod rules;
pub mod run;
pub mod sql;
pub mod train;

use std::path::Path;

use std::io::{BufWriter, Write};

use anyhow::{Context, Result};
use flate2::Compression;
use flate2::write::GzEncoder;
use toolgate_protocol::config::Config;

/// The config through the one resolution both binaries share (the file or the
/// defaults, then the environment it names), with the rule and model files it names
/// read in.
pub fn load_config(path: Option<&Path>) -> Result<Config> {
    let mut config = Config::resolve(path).context("invalid configuration")?;
    if let Some(p) = path {
        let base = p.parent().unwrap_or_else(|| Path::new("."));
        toolgate_engine::detector_files::resolve(&mut config, base)
            .with_context(|| format!("in configuration {}", p.display()))?;
    }
    Ok(config)
}

/// A place output goes: stdout, a file, or a gzipped file (by a `.gz` name).
pub enum Output {
    /// `-`
    Stdout(BufWriter<std::io::Stdout>),
    /// A plain file.
    File(BufWriter<std::fs::File>),
    /// A file whose name ends in `.gz`.
    Gzip(Box<GzEncoder<BufWriter<std::fs::File>>>),
}

impl Output {
    /// Opens `path`, or stdout for `-`.
    pub fn open(path: &str) -> Result<Output> {
        if path == "-" {
            return Ok(Output::Stdout(BufWriter::new(std::io::stdout())));
        }
        let file = std::fs::File::create(path).with_context(|| format!("cannot create {path}"))?;
        Ok(if path.ends_with(".gz") {
            Output::Gzip(Box::new(GzEncoder::new(
                BufWriter::new(file),
                Compression::fast(),
            )))
        } else {
            Output::File(BufWriter::new(file))
        })
    }

    /// Flushes everything and, for gzip, writes the trailer.
    pub fn finish(self) -> std::io::Result<()> {
        match self {
            Output::Stdout(mut w) => w.flush(),
            Output::File(mut w) => w.flush(),
            Output::Gzip(e) => e.finish()?.flush(),
        }
    }
}

impl Write for Output {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Output::Stdout(w) => w.write(buf),
            Output::File(w) => w.write(buf),
            Output::Gzip(w) => w.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Output::Stdout(w) => w.flush(),
            Output::File(w) => w.flush(),
            Output::Gzip(w) => w.flush(),
        }
    }
}
