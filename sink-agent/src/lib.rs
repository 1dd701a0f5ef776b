//! toolgate-sink, the per-agent sink: a transparent MCP proxy that reports every tool
//! list, call and result as `toolgate.event.v1` events and runs the local checks before
//! a call is forwarded (policy, argument limits, secrets, pinned definitions).
//!
//! Pure decisions in the core, I/O at the edge: [`session`] turns lines into lines,
//! events and findings without touching a file, a socket or the clock; [`stdio`] and
//! [`transport`] do the reading and writing. The checks themselves are the detectors'
//! own (`toolgate-detectors`), so the sink and the engine judge a call the same way.
//!
//! Events go to Kafka through an on-disk [`spool`] ([`kafka`]) and/or to a JSONL file
//! ([`transport`]); signed decisions come back from Kafka and are applied to the
//! session. It must start fast and stay small, so it never depends on Arrow or
//! DataFusion, nor on an async runtime.
//!
//! The proxies: [`stdio`] for servers started as a child process, [`http`] for remote
//! servers over streamable HTTP, and [`library::Sink`] for agents written in Rust. A
//! call matching `[[sink.hold]]` waits for the engine's signed verdict ([`verdicts`]).
//!
//! Diagnostics are `tracing` events (target `toolgate_sink::…`): the proxy binary
//! writes them to stderr (`toolgate_edge::logging`; stdout carries the MCP stream), and an agent
//! embedding the library sends them wherever its own subscriber does.
#![deny(missing_docs)]

pub mod decisions;
pub mod framing;
pub mod http;
pub mod identity;
pub mod jsonrpc;
pub mod kafka;
pub mod library;
pub mod oversized;
pub mod session;
pub mod spool;
pub mod stdio;
pub mod transport;
pub mod verdicts;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use toolgate_detectors::glob::GlobSet;
use toolgate_detectors::policy::{self, PolicySettings};
use toolgate_detectors::secrets::Redactor;
use toolgate_detectors::{BuildError, definitions};
use toolgate_protocol::config::Config;

use decisions::Decisions;
use session::{Checks, HoldRule, Identity, Session};
use toolgate_protocol::decision::DecisionVerifier;

/// What can stop the sink.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SinkError {
    /// No server command was given.
    #[error("no MCP server command given (put it after `--`)")]
    NoCommand,
    /// The server could not be started.
    #[error("cannot start the MCP server {command:?}: {source}")]
    Spawn {
        /// The program.
        command: String,
        /// Why.
        source: std::io::Error,
    },
    /// Waiting for the server failed.
    #[error("waiting for the MCP server: {0}")]
    Wait(std::io::Error),
    /// The events file could not be written.
    #[error("cannot write events to {path}: {source}", path = .0.display(), source = .1)]
    Events(PathBuf, std::io::Error),
    /// A local check could not be built from the config.
    #[error("invalid local check: {0}")]
    Check(String),
    /// Redaction could not be set up.
    #[error("invalid [redaction]: {0}")]
    Redaction(String),
    /// `TOOLGATE_SESSION_ID` is not a usable session id.
    #[error("{0}")]
    SessionId(String),
    /// The config would leave protection off without a word (`toolgate config check`).
    #[error("refusing to start: {0}")]
    Unprotected(String),
    /// The pins file could not be read or written.
    #[error("pins file {path}: {message}", path = .0.display(), message = .1)]
    Pins(PathBuf, String),
    /// No randomness for ids.
    #[error("cannot read /dev/urandom for ids: {0}")]
    Random(std::io::Error),
    /// The Kafka client could not be set up.
    #[error("kafka: {0}")]
    Kafka(String),
    /// The event spool failed.
    #[error(transparent)]
    Spool(#[from] spool::SpoolError),
    /// A task of the proxy failed.
    #[error("proxy task: {0}")]
    Task(String),
    /// The HTTP proxy's upstream is not an MCP endpoint it can reach.
    #[error("--upstream {url:?}: {problem}")]
    Upstream {
        /// What was given.
        url: String,
        /// What is wrong with it.
        problem: &'static str,
    },
}

/// The checks `config` asks for, for `agent_id`, with the pins from `pins` if given.
/// `engine_link` says whether there is an engine to ask for verdicts on held calls.
pub fn checks(
    config: &Config,
    pins: Option<&[u8]>,
    agent_id: &str,
    engine_link: bool,
) -> Result<Checks, SinkError> {
    let policy = match config.detectors.get(policy::NAME) {
        Some(table) => {
            let settings: PolicySettings =
                toolgate_detectors::settings(policy::NAME, table.clone()).map_err(check)?;
            Some(policy::compile(&settings).map_err(check)?)
        }
        None => None,
    };
    // On unless `enabled = false`, as in the engine: pins that are off by default let a
    // rug pull through (issue 22).
    let definitions = match config.detector_enabled(definitions::NAME) {
        true => {
            let mut table = config
                .detectors
                .get(definitions::NAME)
                .cloned()
                .unwrap_or_else(|| serde_json::Value::Object(Default::default()));
            if let Some(t) = table.as_object_mut() {
                t.remove("enabled");
            }
            let factory =
                toolgate_detectors::factory::factory::<definitions::DefinitionsDetector>();
            let mut d = (factory.build)(config, table).map_err(check)?;
            if let Some(bytes) = pins {
                d.restore(bytes)
                    .map_err(|e| SinkError::Pins(PathBuf::from("(pins)"), e.to_string()))?;
            }
            Some(d)
        }
        false => None,
    };
    let secrets = config.sink.secrets;
    let redactor =
        Redactor::new(&config.redaction).map_err(|e| SinkError::Redaction(e.to_string()))?;
    let mut verifier = DecisionVerifier::default();
    for (key_id, public) in &config.sink.decision_keys {
        verifier
            .add_key(key_id, public)
            .map_err(|e| SinkError::Check(format!("sink.decision_keys.{key_id}: {e}")))?;
    }
    Ok(Checks {
        policy,
        definitions,
        secrets,
        unparseable: config.sink.unparseable,
        redactor,
        decisions: Decisions::new(agent_id.to_string(), verifier, config.sink.max_decisions),
        holds: config
            .sink
            .hold
            .iter()
            .map(|h| HoldRule {
                name: h.name.clone(),
                tools: GlobSet::new(&h.tools),
                servers: GlobSet::new(&h.servers),
                timeout: toolgate_protocol::Duration::from_millis(h.hold_timeout_ms as i64),
                fail_mode: h.fail_mode,
            })
            .collect(),
        engine_link,
    })
}

fn check(e: BuildError) -> SinkError {
    SinkError::Check(e.to_string())
}

/// The identity of this proxy's session with `server`.
pub fn identity(config: &Config, server: &str, session_id: String) -> Identity {
    let host = identity::host_name();
    let agent_id = config
        .sink
        .agent_id
        .clone()
        .or_else(|| {
            std::env::var("TOOLGATE_AGENT_ID")
                .ok()
                .filter(|v| !v.is_empty())
        })
        .unwrap_or_else(|| identity::derived_agent_id(host.as_deref().unwrap_or("localhost")));
    let agent_role = config.sink.agent_role.clone().or_else(|| {
        std::env::var("TOOLGATE_AGENT_ROLE")
            .ok()
            .filter(|v| !v.is_empty())
    });
    Identity {
        agent_id,
        agent_role,
        host,
        session_id,
        server: server.to_string(),
        trust_domain: config.servers.get(server).map(|s| s.trust_domain.clone()),
    }
}

/// The pins file's content, or `None` while there is none yet (the first run writes
/// it). An unreadable file is an error: running without the pins would let a changed
/// definition through as new.
pub fn read_pins(path: Option<&Path>) -> Result<Option<Vec<u8>>, SinkError> {
    match path {
        Some(p) => toolgate_edge::fs::read_if_exists(p)
            .map_err(|e| SinkError::Pins(p.to_path_buf(), e.to_string())),
        None => Ok(None),
    }
}

/// Milliseconds since the Unix epoch, by the wall clock (session ids and start times).
pub fn unix_millis() -> u64 {
    u64::try_from(toolgate_protocol::Timestamp::now().unix_millis()).unwrap_or(0)
}

/// Checks, before the sink starts, that pins can be kept at `path`: its directory is
/// made and a file written and removed there. Pins that cannot be saved are lost at
/// exit, and a rug pull between two runs passes with only a log line (issue 22).
pub fn prepare_pins(path: &Path) -> Result<(), SinkError> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
    let probe = dir.join(format!(
        ".{}.{}.probe",
        name.unwrap_or_default(),
        std::process::id()
    ));
    std::fs::create_dir_all(dir)
        .and_then(|()| std::fs::write(&probe, b""))
        .and_then(|()| std::fs::remove_file(&probe))
        .map_err(|e| {
            SinkError::Pins(
                path.to_path_buf(),
                format!(
                    "cannot be written ({e}): set [detectors.definitions] pins_file or [sink] spool_dir to a writable place, or [detectors.definitions] enabled = false"
                ),
            )
        })
}

/// Replaces the pins file, so a reader or a crash sees the old pins or the new ones.
pub fn save_pins(path: &Path, bytes: &[u8]) -> Result<(), SinkError> {
    let parent = path.parent().filter(|p| !p.as_os_str().is_empty());
    parent
        .map_or(Ok(()), std::fs::create_dir_all)
        .and_then(|()| toolgate_edge::fs::replace(path, bytes))
        .map_err(|e| SinkError::Pins(path.to_path_buf(), e.to_string()))
}

/// The event writer `config` asks for: Kafka through the spool when a broker is named
/// (`brokers`, else `[kafka] brokers`), the JSONL file when `[sink] events_file` is set.
pub fn event_writer(
    config: &Config,
    identity: &Identity,
    brokers: Option<&str>,
) -> Result<transport::EventWriter, SinkError> {
    let redactor =
        Redactor::new(&config.redaction).map_err(|e| SinkError::Redaction(e.to_string()))?;
    let kafka = match kafka::KafkaLink::from_config(config, brokers) {
        Some(link) => Some(kafka::Shipper::start(link, identity.clone())?),
        None => None,
    };
    transport::EventWriter::open(
        config.sink.events_file.as_ref().map(PathBuf::from),
        kafka,
        redactor,
    )
}

/// Checks `config` for gaps in protection before a sink starts (`brokers` from the
/// command line): logs each warning and note once, and refuses the config when a gap
/// would switch protection off silently, naming every key to change.
pub fn check_protection(config: &Config, brokers: Option<&str>) -> Result<(), SinkError> {
    use toolgate_protocol::config::{Level, Role};
    let role = Role::Sink {
        brokers_flag: brokers.is_some_and(|b| !b.is_empty()),
    };
    let mut refused = Vec::new();
    for gap in config.gaps(role) {
        match gap.level {
            Level::Refuse => refused.push(gap.to_string()),
            Level::Warn => tracing::warn!(key = %gap.key, "{}", gap.message),
            Level::Note => tracing::info!(key = %gap.key, "{}", gap.message),
        }
    }
    match refused.is_empty() {
        true => Ok(()),
        false => Err(SinkError::Unprotected(refused.join("; "))),
    }
}

/// Reads the engine's decisions from Kafka into `session` when a broker is named and
/// `[sink.decision_keys]` can verify them; `signal` is woken after each one applied.
pub fn decision_subscriber(
    config: &Config,
    brokers: Option<&str>,
    session: &Arc<Mutex<Session>>,
    signal: verdicts::VerdictSignal,
) -> Result<Option<kafka::DecisionSubscriber>, SinkError> {
    let agent_id = match session.lock() {
        Ok(s) => s.identity().agent_id.clone(),
        Err(_) => return Err(SinkError::Task("the session lock is poisoned".into())),
    };
    let session = session.clone();
    decisions_from_kafka(config, brokers, agent_id, move |bytes| {
        let applied = match session.lock() {
            Ok(mut s) => s.apply_decision(bytes, toolgate_protocol::Timestamp::now()),
            Err(p) => p
                .into_inner()
                .apply_decision(bytes, toolgate_protocol::Timestamp::now()),
        };
        if applied.is_ok() {
            signal.notify();
        }
        applied
    })
}

/// The decision subscriber for `agent_id` with its own `apply`, when a broker is named
/// and `[sink.decision_keys]` can verify decisions.
pub fn decisions_from_kafka(
    config: &Config,
    brokers: Option<&str>,
    agent_id: String,
    apply: impl FnMut(&[u8]) -> Result<String, decisions::Rejected> + Send + 'static,
) -> Result<Option<kafka::DecisionSubscriber>, SinkError> {
    let Some(link) = kafka::KafkaLink::from_config(config, brokers) else {
        return Ok(None);
    };
    if config.sink.decision_keys.is_empty() || config.sink.enforce_decisions == Some(false) {
        return Ok(None);
    }
    kafka::DecisionSubscriber::start(&link, agent_id, apply).map(Some)
}

/// Which session a new [`session`] belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionScope {
    /// A session of its own (the HTTP proxy's MCP sessions).
    Own,
    /// The agent run's: [`identity::agent_run_session_id`] (the stdio proxy, started by
    /// the agent).
    AgentRun,
    /// `TOOLGATE_SESSION_ID` if set, else its own (an agent embedding the library).
    FromEnv,
}

/// A session for `server` with the checks of `config`; `brokers` (from the command
/// line) or `[kafka] brokers` make a link to the engine.
pub fn session(
    config: &Config,
    server: &str,
    brokers: Option<&str>,
    pins: Option<&[u8]>,
    unix_millis: u64,
    scope: SessionScope,
) -> Result<Session, SinkError> {
    // Ids of events and calls start with a prefix of this sink's own, unique even when
    // several sinks share the session id.
    let prefix = identity::new_ulid(unix_millis).map_err(SinkError::Random)?;
    let shared = match scope {
        SessionScope::Own => None,
        SessionScope::AgentRun => {
            let host = identity::host_name();
            identity::agent_run_session_id(host.as_deref().unwrap_or("localhost"))
                .map_err(SinkError::SessionId)?
        }
        SessionScope::FromEnv => identity::session_from_env().map_err(SinkError::SessionId)?,
    };
    let session_id = shared.unwrap_or_else(|| prefix.clone());
    let identity = identity(config, server, session_id);
    let engine_link = kafka::KafkaLink::from_config(config, brokers).is_some();
    let checks = checks(config, pins, &identity.agent_id, engine_link)?;
    Ok(Session::new(identity, checks, prefix))
}
