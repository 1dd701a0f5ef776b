//! `[sink]`: the per-agent proxy's own settings.

use std::collections::BTreeMap;

use serde::Deserialize;

/// `[sink]`: what `toolgate-sink` needs beyond the shared sections (`[servers]` for
/// trust domains, `[redaction]`, `[detectors.policy]` and `[detectors.definitions]` for
/// its local checks).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkConfig {
    /// The agent's stable identity. If absent: `TOOLGATE_AGENT_ID`, else derived from
    /// the host name and the agent's process (the proxy's parent), so every proxy under
    /// one agent process reports the same id.
    #[serde(default)]
    pub agent_id: Option<String>,
    /// The agent's policy group (`agent_role` in events and policy rules);
    /// `TOOLGATE_AGENT_ROLE` if absent.
    #[serde(default)]
    pub agent_role: Option<String>,
    /// Append events to this JSONL file (the air-gapped transport).
    #[serde(default)]
    pub events_file: Option<String>,
    /// Largest JSON-RPC message the proxy inspects whole, in bytes. A larger message
    /// from the agent is refused with a JSON-RPC error; a larger one from the server is
    /// passed through and reported truncated (head, tail, size, SHA-256).
    #[serde(default = "default_sink_max_message_bytes")]
    pub max_message_bytes: usize,
    /// Secrets (keys, tokens) in a call's arguments: `off`, `monitor` (report) or
    /// `enforce` (refuse the call).
    #[serde(default)]
    pub secrets: SecretsMode,
    /// A message serde_json refuses but an MCP peer reads (a lone surrogate, `1e400`,
    /// invalid UTF-8, `NaN`, nesting past 128 levels): `refuse` answers it with a
    /// JSON-RPC error carrying its id, and replaces a server's result or listing so
    /// read with one; `forward` runs every check on the lenient reading and passes the
    /// original bytes on. Either way its event is labelled `toolgate.unparseable` and
    /// the engine raises `unparseable_message`.
    #[serde(default)]
    pub unparseable: Unparseable,
    /// The engine's decision-signing public keys: key id → Ed25519 public key in
    /// base64. A decision signed with any other key is logged and ignored.
    #[serde(default)]
    pub decision_keys: BTreeMap<String, String>,
    /// Apply the engine's decisions (blocks, verdicts on held calls). Unset means yes,
    /// and a sink sending events to a broker without `decision_keys` then refuses to
    /// start; `false` runs it as a reporter only, said once at start.
    #[serde(default)]
    pub enforce_decisions: Option<bool>,
    /// Most engine decisions kept at once (the oldest go first).
    #[serde(default = "default_sink_max_decisions")]
    pub max_decisions: usize,
    /// With `[kafka] brokers` set, events go to Kafka through an on-disk spool here (one
    /// subdirectory per server): kept until the broker acknowledges them, replayed in
    /// order after an outage or a restart.
    #[serde(default = "default_sink_spool_dir")]
    pub spool_dir: String,
    /// Most bytes the spool holds; past it, events are dropped, counted, and reported
    /// as a finding once the broker is back.
    #[serde(default = "default_sink_spool_max_bytes")]
    pub spool_max_bytes: u64,
    /// At exit, how long to wait for the broker to acknowledge what is left, in
    /// milliseconds; the rest stays in the spool for the next start.
    #[serde(default = "default_sink_flush_timeout_ms")]
    pub flush_timeout_ms: u64,
    /// Longest wait of one fetch for decisions, in milliseconds. Kafka answers as soon
    /// as a decision arrives; a broker that answers only when the wait is over
    /// (librdkafka's mock cluster, the embedded default) adds up to this much to every
    /// verdict on a held call. Lower is faster there, higher is fewer requests to
    /// the brokers from an idle fleet.
    #[serde(default = "default_sink_decision_fetch_wait_ms")]
    pub decision_fetch_wait_ms: u64,
    /// Tool classes whose calls wait for the engine's verdict before they are
    /// forwarded (`[[sink.hold]]`); the first class that matches a call applies.
    #[serde(default)]
    pub hold: Vec<HoldClass>,
    /// `toolgate-sink http`: most MCP sessions open at once, all clients together.
    /// Past it a new `initialize` is refused (503); no open session is dropped.
    #[serde(default = "default_sink_http_max_sessions")]
    pub http_max_sessions: usize,
    /// `toolgate-sink http`: most MCP sessions open at once for one client (its IP
    /// address; an IPv6 client by its /64). Past it a new `initialize` is refused (429).
    #[serde(default = "default_sink_http_max_sessions_per_client")]
    pub http_max_sessions_per_client: usize,
    /// `toolgate-sink http`: a session unused this long, in milliseconds, with no
    /// request in progress, is forgotten; its client gets 404 and starts a new one.
    #[serde(default = "default_sink_http_session_idle_timeout_ms")]
    pub http_session_idle_timeout_ms: u64,
    /// `toolgate-sink http`: most connections served at once, each on a thread of its
    /// own; one more is answered 503 and closed.
    #[serde(default = "default_sink_http_max_connections")]
    pub http_max_connections: usize,
    /// `toolgate-sink http`: how long, in milliseconds, a client may take to send a
    /// request (line, headers and body, from its first byte), to begin its next one on
    /// a kept-alive connection, and to take each write of an answer. Past it the
    /// connection is closed (408 for a request begun), so a slow client holds no thread.
    #[serde(default = "default_sink_http_client_timeout_ms")]
    pub http_client_timeout_ms: u64,
}

/// `server` as one file name: letters, digits and `-_.` kept, anything else `_`
/// (the spool's and the pins' per-server names).
pub fn file_name_of(server: &str) -> String {
    server
        .chars()
        .map(|c| match c.is_ascii_alphanumeric() || "-_.".contains(c) {
            true => c,
            false => '_',
        })
        .collect()
}

/// A class of tools (egress: send, post, pay, share, write outside) whose calls are
/// held until the engine answers for that call, so data leaving is stopped before it
/// leaves.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct HoldClass {
    /// The class's name, in the `sink_action` rule of held calls (`hold.NAME`).
    pub name: String,
    /// Tool-name globs (`*`, `?`) of the class.
    pub tools: Vec<String>,
    /// Server-name globs; empty means every server.
    #[serde(default)]
    pub servers: Vec<String>,
    /// Longest wait for the verdict, in milliseconds.
    #[serde(default = "default_hold_timeout_ms")]
    pub hold_timeout_ms: u64,
    /// Without a verdict in time, or with no engine to ask: `fail_closed` refuses the
    /// call, `fail_open` forwards it.
    #[serde(default)]
    pub fail_mode: FailMode,
}

/// `[sink] unparseable`: what the sink does with a message only a lenient decoder reads.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Unparseable {
    /// Answer it with a JSON-RPC error (`[sink] unparseable`) instead of passing it on.
    #[default]
    Refuse,
    /// Check the lenient reading and pass the original bytes on if the checks allow.
    Forward,
}

/// `[sink] secrets`: what a secret in a call's arguments does.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum SecretsMode {
    /// Not checked.
    Off,
    /// Reported in the event's `sink_action`; the call goes ahead.
    #[default]
    Monitor,
    /// The call is refused.
    Enforce,
}

/// What a held call does when the engine does not answer in time.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum FailMode {
    /// Forward the call.
    FailOpen,
    /// Refuse the call.
    #[default]
    FailClosed,
}

fn default_hold_timeout_ms() -> u64 {
    2_000
}

impl Default for SinkConfig {
    fn default() -> Self {
        SinkConfig {
            agent_id: None,
            agent_role: None,
            events_file: None,
            max_message_bytes: default_sink_max_message_bytes(),
            secrets: SecretsMode::default(),
            unparseable: Unparseable::default(),
            decision_keys: BTreeMap::new(),
            enforce_decisions: None,
            max_decisions: default_sink_max_decisions(),
            spool_dir: default_sink_spool_dir(),
            spool_max_bytes: default_sink_spool_max_bytes(),
            flush_timeout_ms: default_sink_flush_timeout_ms(),
            decision_fetch_wait_ms: default_sink_decision_fetch_wait_ms(),
            hold: Vec::new(),
            http_max_sessions: default_sink_http_max_sessions(),
            http_max_sessions_per_client: default_sink_http_max_sessions_per_client(),
            http_session_idle_timeout_ms: default_sink_http_session_idle_timeout_ms(),
            http_max_connections: default_sink_http_max_connections(),
            http_client_timeout_ms: default_sink_http_client_timeout_ms(),
        }
    }
}

fn default_sink_http_max_sessions() -> usize {
    1_024
}

fn default_sink_http_max_sessions_per_client() -> usize {
    256
}

fn default_sink_http_session_idle_timeout_ms() -> u64 {
    3_600_000
}

fn default_sink_http_max_connections() -> usize {
    256
}

fn default_sink_http_client_timeout_ms() -> u64 {
    30_000
}

fn default_sink_decision_fetch_wait_ms() -> u64 {
    20
}

fn default_sink_spool_dir() -> String {
    "toolgate-data/sink-spool".into()
}

fn default_sink_spool_max_bytes() -> u64 {
    256 << 20
}

fn default_sink_flush_timeout_ms() -> u64 {
    5_000
}

fn default_sink_max_decisions() -> usize {
    10_000
}

fn default_sink_max_message_bytes() -> usize {
    crate::event::DEFAULT_MAX_MESSAGE_BYTES
}
