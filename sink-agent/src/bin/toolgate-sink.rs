//! `toolgate-sink`: the proxy beside each agent.

use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use anyhow::Result;
use clap::{Parser, Subcommand};
use toolgate_edge::logging::{self, LogFormat};
use toolgate_protocol::config::Config;
use toolgate_sink::{read_pins, unix_millis};

/// The per-agent MCP proxy: reports every tool call and enforces local checks.
#[derive(Parser)]
#[command(name = "toolgate-sink", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// How diagnostics are written to stderr: `text` lines, or `json` objects for a log
    /// pipeline. `TOOLGATE_LOG` filters them (e.g. `warn`).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
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
    /// Reverse-proxy a remote MCP server over streamable HTTP:
    /// `toolgate-sink http --server crm --listen 127.0.0.1:8931 --upstream https://crm.internal/mcp`.
    Http {
        /// toolgate.toml, as for `stdio`.
        #[arg(short, long)]
        config: Option<PathBuf>,
        /// The server's name, as in `[servers]` and in events.
        #[arg(long)]
        server: String,
        /// Where the agent connects (`host:port`; port 0 picks a free one, printed).
        #[arg(long)]
        listen: String,
        /// The MCP server's endpoint (`http://…` or `https://…`).
        #[arg(long)]
        upstream: String,
        /// Kafka bootstrap servers, instead of `[kafka] brokers`.
        #[arg(long)]
        brokers: Option<String>,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    logging::init(cli.log_format);
    match cli.command {
        Command::Stdio {
            config,
            server,
            brokers,
            command,
        } => stdio(config, &server, brokers.as_deref(), &command),
        Command::Http {
            config,
            server,
            listen,
            upstream,
            brokers,
        } => http(config, &server, &listen, upstream, brokers.as_deref()),
    }
}

fn load(
    config: Option<PathBuf>,
    server: &str,
    brokers: Option<&str>,
) -> Result<(Config, Option<PathBuf>)> {
    // The engine's resolution too: the same hash key, the same credentials.
    let config = Config::resolve(config.as_deref())?;
    toolgate_sink::check_protection(&config, brokers)?;
    let pins_file = config.sink_pins_file(server);
    if let Some(path) = &pins_file {
        toolgate_sink::prepare_pins(path)?;
    }
    Ok((config, pins_file))
}

fn http(
    config: Option<PathBuf>,
    server: &str,
    listen: &str,
    upstream: String,
    brokers: Option<&str>,
) -> Result<()> {
    let stop = toolgate_sink::http::stop_on_signals()?;
    let (config, pins_file) = load(config, server, brokers)?;
    let first = toolgate_sink::session(
        &config,
        server,
        brokers,
        read_pins(pins_file.as_deref())?.as_deref(),
        unix_millis(),
        toolgate_sink::SessionScope::Own,
    )?;
    let agent_id = first.identity().agent_id.clone();
    let events = toolgate_sink::event_writer(&config, first.identity(), brokers)?;
    let factory = {
        let (config, server) = (config.clone(), server.to_string());
        let (brokers, pins_file) = (brokers.map(str::to_string), pins_file.clone());
        Box::new(move || {
            // A pins file that cannot be read refuses the session, never drops the pins.
            let pins = read_pins(pins_file.as_deref())?;
            toolgate_sink::session(
                &config,
                &server,
                brokers.as_deref(),
                pins.as_deref(),
                unix_millis(),
                toolgate_sink::SessionScope::Own,
            )
        })
    };
    let proxy = toolgate_sink::http::HttpProxy::new(
        upstream.clone(),
        factory,
        events,
        pins_file,
        config.sink.max_message_bytes,
        config.sink.max_decisions,
        toolgate_sink::http::HttpLimits::from_config(&config.sink),
    )?;
    let listener = std::net::TcpListener::bind(listen)
        .map_err(|e| anyhow::anyhow!("cannot listen on {listen}: {e}"))?;
    let address = listener.local_addr()?;
    tracing::info!(
        listen = %format_args!("http://{address}"),
        %upstream,
        "listening"
    );
    let mut decisions = {
        let proxy = proxy.clone();
        toolgate_sink::decisions_from_kafka(&config, brokers, agent_id, move |bytes| {
            proxy.apply_decision(bytes)
        })?
    };
    let written = proxy.serve(listener, &stop)?;
    if let Some(d) = decisions.as_mut() {
        d.close();
    }
    report_shipped(&written);
    Ok(())
}

fn report_shipped(written: &toolgate_sink::transport::Written) {
    if let Some(k) = written.shipped
        && (k.dropped + k.rejected + k.pending > 0)
    {
        tracing::warn!(
            delivered = k.delivered,
            pending = k.pending,
            dropped = k.dropped,
            rejected = k.rejected,
            "kafka: some events not delivered (pending: left in the spool for the next start; dropped: spool full; rejected: refused by the broker)"
        );
    }
}

fn stdio(
    config: Option<PathBuf>,
    server: &str,
    brokers: Option<&str>,
    command: &[OsString],
) -> Result<()> {
    let (config, pins_file) = load(config, server, brokers)?;
    let pins = read_pins(pins_file.as_deref())?;
    let millis = unix_millis();
    // Started by the agent: the proxies of one agent run share its session.
    let session = toolgate_sink::session(
        &config,
        server,
        brokers,
        pins.as_deref(),
        millis,
        toolgate_sink::SessionScope::AgentRun,
    )?;
    let events = toolgate_sink::event_writer(&config, session.identity(), brokers)?;
    let session = Arc::new(Mutex::new(session));
    let signal = toolgate_sink::verdicts::VerdictSignal::default();
    let mut decisions =
        toolgate_sink::decision_subscriber(&config, brokers, &session, signal.clone())?;
    let (code, totals) = toolgate_sink::stdio::run(
        command,
        session,
        signal,
        events,
        pins_file,
        config.sink.max_message_bytes,
    )?;
    if let Some(d) = decisions.as_mut() {
        let d = d.close();
        if d.ignored > 0 {
            tracing::warn!(
                applied = d.applied,
                ignored = d.ignored,
                "some decisions were ignored"
            );
        }
    }
    report_shipped(&totals.written);
    let t = &totals;
    if t.not_json
        + t.unparseable
        + t.malformed_calls
        + t.refused_oversized
        + t.passed_oversized
        + t.written.invalid
        > 0
    {
        tracing::warn!(
            not_json = t.not_json,
            unparseable = t.unparseable,
            calls_without_id = t.malformed_calls,
            refused_oversized = t.refused_oversized,
            passed_oversized = t.passed_oversized,
            invalid_events = t.written.invalid,
            "the session met messages it could not inspect"
        );
    }
    std::process::exit(code);
}
