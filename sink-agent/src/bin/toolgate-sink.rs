//! `toolgate-sink`: the proxy beside each agent.

use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use toolgate_protocol::config::Config;

/// The per-agent MCP proxy: reports every tool call and enforces local checks.
#[derive(Parser)]
#[command(name = "toolgate-sink", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Wrap an MCP server started over stdio:
    /// `toolgate-sink stdio --server github -- npx -y @modelcontextprotocol/server-github`.
    Stdio {
        /// toolgate.toml (`[sink]`, `[servers]`, `[redaction]`, `[detectors.policy]`,
        /// `[detectors.definitions]`); defaults apply without it.
        #[arg(short, long)]
        config: Option<PathBuf>,
        /// The server's name, as in `[servers]` and in events.
        #[arg(long)]
        server: String,
        /// Kafka bootstrap servers (`host:port,…`), instead of `[kafka] brokers`. With
        /// neither, events go only to `[sink] events_file`.
        #[arg(long)]
        brokers: Option<String>,
        /// The server command and its arguments.
        #[arg(last = true, required = true)]
        command: Vec<OsString>,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let Command::Stdio {
        config,
        server,
        brokers,
        command,
    } = cli.command;
    let config = match &config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    let pins_file = toolgate_sink::pins_file(&config);
    let pins = match &pins_file {
        Some(p) if p.exists() => Some(
            std::fs::read(p).with_context(|| format!("cannot read pins file {}", p.display()))?,
        ),
        _ => None,
    };
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let brokers = brokers.as_deref();
    let session = toolgate_sink::session(&config, &server, brokers, pins.as_deref(), millis)?;
    let events = toolgate_sink::event_writer(&config, session.identity(), brokers)?;
    let session = Arc::new(Mutex::new(session));
    let signal = toolgate_sink::verdicts::VerdictSignal::default();
    let wake = signal.clone();
    let mut decisions =
        toolgate_sink::decision_subscriber(&config, brokers, &session, move || wake.notify())?;
    let (code, totals) = toolgate_sink::stdio::run(
        &command,
        session,
        signal,
        events,
        pins_file,
        config.sink.max_message_bytes,
    )?;
    if let Some(d) = decisions.as_mut() {
        let d = d.close();
        if d.ignored > 0 {
            eprintln!(
                "toolgate-sink: {} decisions applied, {} ignored",
                d.applied, d.ignored
            );
        }
    }
    if let Some(k) = totals.written.shipped
        && (k.dropped + k.rejected + k.pending > 0)
    {
        eprintln!(
            "toolgate-sink: kafka: {} events delivered, {} left in the spool for the next start, {} dropped (spool full), {} refused by the broker",
            k.delivered, k.pending, k.dropped, k.rejected
        );
    }
    let t = &totals;
    if t.not_json + t.malformed_calls + t.refused_oversized + t.passed_oversized + t.written.invalid
        > 0
    {
        eprintln!(
            "toolgate-sink: {} lines not JSON, {} tools/call without an id refused, {} oversized messages refused, {} passed uninspected, {} events invalid",
            t.not_json,
            t.malformed_calls,
            t.refused_oversized,
            t.passed_oversized,
            t.written.invalid
        );
    }
    std::process::exit(code);
}
