//! `toolgate.toml`, the one configuration file every toolgate binary reads: servers and
//! their trust domains, the flow policy between domains, limits, event-time and
//! finding-folding settings, per-detector settings, Kafka, and outputs.
//!
//! Unknown keys are errors (every struct denies them), and values that parse but make no
//! sense (a server in an undeclared trust domain, a zero limit) are errors naming the
//! key. Detector tables are kept as JSON values here and checked by the detector
//! registry, which owns each detector's settings type.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;
use serde_json::Value;

use crate::event::DEFAULT_MAX_EVENT_BYTES;
use crate::time::Duration;

mod outputs;
pub use outputs::{FindingFormat, OutputConfig, SyslogTransport, WebhookBody};

/// A configuration problem, naming the file and the key.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Not valid TOML, or a key or type the schema does not have.
    #[error("config {origin}: {message}")]
    Parse {
        /// File name or `<inline>`.
        origin: String,
        /// The parser's message, with line, column and key.
        message: String,
    },
    /// A value that parses but is not allowed.
    #[error("config {origin}: `{key}`: {message}")]
    Invalid {
        /// File name or `<inline>`.
        origin: String,
        /// Dotted key.
        key: String,
        /// What is wrong.
        message: String,
    },
}

mod engine;
mod gaps;
mod resolve;
mod sink;
pub use engine::{BlockRule, BlockScope, EngineConfig, HistoryConfig, OtlpConfig, S3Config};
pub use gaps::{Gap, Level, Role};
pub use sink::{FailMode, HoldClass, SecretsMode, SinkConfig, Unparseable, file_name_of};

/// The whole file. Every section is optional; an empty file is a valid config.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Trust domains and which flows between them are forbidden.
    #[serde(default)]
    pub trust: TrustConfig,
    /// MCP servers by the name agents configure them under.
    #[serde(default)]
    pub servers: BTreeMap<String, ServerConfig>,
    /// Input limits.
    #[serde(default)]
    pub limits: LimitsConfig,
    /// Event-time ordering.
    #[serde(default)]
    pub event_time: EventTimeConfig,
    /// Folding of repeated findings.
    #[serde(default)]
    pub findings: FindingsConfig,
    /// Per-detector tables, keyed by detector name (`[detectors.<name>]`); each may set
    /// `enabled = false`. Checked against the detector registry when detectors are built.
    #[serde(default)]
    pub detectors: BTreeMap<String, Value>,
    /// Kafka connection and topics.
    #[serde(default)]
    pub kafka: KafkaConfig,
    /// Where findings go, besides the command line's own output.
    #[serde(default)]
    pub outputs: Vec<OutputConfig>,
    /// Redaction of secrets and personal data before anything is stored or logged.
    #[serde(default)]
    pub redaction: RedactionConfig,
    /// What dead-letter records keep of the input they reject.
    #[serde(default)]
    pub dead_letter: DeadLetterConfig,
    /// The Parquet history of events, findings and decisions.
    #[serde(default)]
    pub history: HistoryConfig,
    /// The per-agent sink (`toolgate-sink`): identity, where its events go, local checks.
    #[serde(default)]
    pub sink: SinkConfig,
    /// The streaming engine (`toolgate run`): its data directory, checkpoints, decisions.
    #[serde(default)]
    pub engine: EngineConfig,
    /// The engine's OTLP/HTTP receiver for OpenTelemetry GenAI tool spans.
    #[serde(default)]
    pub otlp: OtlpConfig,
}

/// How secrets and personal data found in events and findings are replaced before they
/// are stored, logged or sent on. Kind names are those of the `secrets` detector
/// (`aws_access_key`, `email`, `iban`, …) or its classes (`credentials`, `financial`,
/// `contact`, `all`); the detector checks them when it is built.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedactionConfig {
    /// Redact at all. Detection still runs on the original values; only what is stored
    /// and logged is redacted.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Replacement for every kind not listed under `kinds`.
    #[serde(default)]
    pub mode: RedactionMode,
    /// Replacement per kind or class, overriding `mode` (later, more specific entries
    /// win: a kind name beats its class).
    #[serde(default)]
    pub kinds: BTreeMap<String, RedactionMode>,
    /// Environment variable holding the key for `hash` (HMAC-SHA256). Without a key the
    /// hash is a plain SHA-256, which a guesser can reverse for short values such as
    /// phone or card numbers.
    #[serde(default)]
    pub hash_key_env: Option<String>,
    /// The key itself: filled in by the binary from `hash_key_env` after loading (the
    /// detectors do no I/O); never read from the file.
    #[serde(skip)]
    pub hash_key: Option<Vec<u8>>,
}

impl Default for RedactionConfig {
    fn default() -> Self {
        RedactionConfig {
            enabled: true,
            mode: RedactionMode::default(),
            kinds: BTreeMap::new(),
            hash_key_env: None,
            hash_key: None,
        }
    }
}

fn default_true() -> bool {
    true
}

/// `[dead_letter]`: rejected input is kept with its error so nothing is lost silently;
/// by default it is kept redacted, since a malformed line carries the same secrets as a
/// good one.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeadLetterConfig {
    /// Keep the rejected bytes exactly as they came (base64 when not UTF-8) instead of
    /// as text redacted with `[redaction]`. Off by default: turn it on only where the
    /// dead letters are as protected as the raw traffic.
    #[serde(default)]
    pub keep_raw: bool,
}

/// How a found value is replaced.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum RedactionMode {
    /// `[email:hmac-sha256:1f2e…]`: equal values stay equal, so joins still work.
    Hash,
    /// Keep what identifies the value to a person without giving it away: the last four
    /// digits of a card or account, the domain of an email. Credentials are never
    /// partly shown and read `[REDACTED:<kind>]`.
    #[default]
    Mask,
    /// `[REDACTED:<kind>]`.
    Drop,
    /// Leave the value as it is.
    Keep,
}

/// Trust domains and the flow policy between them.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustConfig {
    /// Every trust domain a server or event may be labelled with.
    #[serde(default = "default_domains")]
    pub domains: Vec<String>,
    /// The domain of a server that is not listed under `[servers]` and whose events carry
    /// no `trust_domain`.
    #[serde(default = "default_domain")]
    pub default_domain: String,
    /// Flows that must not happen: data from `from` reaching a tool in `to`.
    #[serde(default = "default_forbidden_flows")]
    pub forbidden_flows: Vec<FlowRule>,
}

impl Default for TrustConfig {
    fn default() -> Self {
        TrustConfig {
            domains: default_domains(),
            default_domain: default_domain(),
            forbidden_flows: default_forbidden_flows(),
        }
    }
}

fn default_domains() -> Vec<String> {
    ["public", "untrusted", "internal", "secret", "external"]
        .map(String::from)
        .to_vec()
}

fn default_domain() -> String {
    "untrusted".into()
}

fn default_forbidden_flows() -> Vec<FlowRule> {
    [
        ("internal", "external"),
        ("secret", "external"),
        ("secret", "untrusted"),
    ]
    .map(|(from, to)| FlowRule {
        from: from.into(),
        to: to.into(),
    })
    .to_vec()
}

/// One forbidden flow between trust domains.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct FlowRule {
    /// Domain the data comes from.
    pub from: String,
    /// Domain it must not reach.
    pub to: String,
}

/// One MCP server.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// The server's trust domain; overrides what sinks report.
    pub trust_domain: String,
    /// What the server is, for people reading findings.
    #[serde(default)]
    pub description: Option<String>,
}

/// Input limits.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Largest accepted encoded event, in bytes; larger ones are dead-lettered.
    #[serde(default = "default_max_event_bytes")]
    pub max_event_bytes: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_event_bytes: DEFAULT_MAX_EVENT_BYTES,
        }
    }
}

fn default_max_event_bytes() -> usize {
    DEFAULT_MAX_EVENT_BYTES
}

/// Event-time ordering of input, the same for `analyze` and the stream (where the
/// bounds apply per partition). A call held for a verdict is never held back.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventTimeConfig {
    /// How far behind the newest event another event may arrive and still be put in
    /// order; later ones (and an agent's events older than its last held call, which
    /// is processed on arrival) are processed as they come and counted as late.
    #[serde(default = "default_allowed_lateness")]
    pub allowed_lateness: Duration,
    /// Most events held for reordering (per partition in the stream); past it the
    /// oldest are released early.
    #[serde(default = "default_max_buffered_events")]
    pub max_buffered_events: usize,
    /// Most bytes of events (their encoded size, or their record's) held for
    /// reordering (per partition in the stream); past it the oldest are released
    /// early, so large events cannot fill memory.
    #[serde(default = "default_max_buffered_bytes")]
    pub max_buffered_bytes: usize,
}

impl Default for EventTimeConfig {
    fn default() -> Self {
        EventTimeConfig {
            allowed_lateness: default_allowed_lateness(),
            max_buffered_events: default_max_buffered_events(),
            max_buffered_bytes: default_max_buffered_bytes(),
        }
    }
}

fn default_allowed_lateness() -> Duration {
    Duration::from_secs(30)
}

fn default_max_buffered_events() -> usize {
    100_000
}

fn default_max_buffered_bytes() -> usize {
    256 << 20
}

/// Folding of repeated findings into one.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FindingsConfig {
    /// Repeats of one detector, rule and group within one window of this length are
    /// folded into one finding with a count.
    #[serde(default = "default_fold_window")]
    pub fold_window: Duration,
    /// Most findings kept open for folding; past it the oldest are emitted early.
    #[serde(default = "default_max_open")]
    pub max_open: usize,
    /// Most evidence event ids kept per finding (`count` still counts every repeat).
    #[serde(default = "default_max_event_ids")]
    pub max_event_ids: usize,
}

impl Default for FindingsConfig {
    fn default() -> Self {
        FindingsConfig {
            fold_window: default_fold_window(),
            max_open: default_max_open(),
            max_event_ids: default_max_event_ids(),
        }
    }
}

fn default_fold_window() -> Duration {
    Duration::from_secs(600)
}

fn default_max_open() -> usize {
    100_000
}

fn default_max_event_ids() -> usize {
    32
}

/// Kafka connection and topics.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// Bootstrap brokers (`host:port`); empty means the embedded broker.
    #[serde(default)]
    pub brokers: Vec<String>,
    /// Consumer group of the engine.
    #[serde(default = "default_group_id")]
    pub group_id: String,
    /// Topic names.
    #[serde(default)]
    pub topics: TopicsConfig,
    /// Extra librdkafka properties (e.g. `security.protocol`), passed through as given.
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
    /// librdkafka properties whose values are read from environment variables at start
    /// (property name = variable name), so credentials such as `sasl.password` stay out
    /// of the file. A property may be given here or in `properties`, not both.
    #[serde(default)]
    pub properties_env: BTreeMap<String, String>,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            brokers: Vec::new(),
            group_id: default_group_id(),
            topics: TopicsConfig::default(),
            properties: BTreeMap::new(),
            properties_env: BTreeMap::new(),
        }
    }
}

fn default_group_id() -> String {
    "toolgate-engine".into()
}

/// Kafka topic names.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicsConfig {
    /// Events from sinks.
    #[serde(default = "topic_events")]
    pub events: String,
    /// Signed decisions to sinks.
    #[serde(default = "topic_decisions")]
    pub decisions: String,
    /// Findings for downstream consumers.
    #[serde(default = "topic_findings")]
    pub findings: String,
    /// Dead letters: input that failed to decode.
    #[serde(default = "topic_dlq")]
    pub dlq: String,
}

impl Default for TopicsConfig {
    fn default() -> Self {
        TopicsConfig {
            events: topic_events(),
            decisions: topic_decisions(),
            findings: topic_findings(),
            dlq: topic_dlq(),
        }
    }
}

fn topic_events() -> String {
    "toolgate.events".into()
}
fn topic_decisions() -> String {
    "toolgate.decisions".into()
}
fn topic_findings() -> String {
    "toolgate.findings".into()
}
fn topic_dlq() -> String {
    "toolgate.dlq".into()
}

impl Config {
    /// Reads and validates a file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_toml(&text, &path.display().to_string())
    }

    /// Parses and validates TOML text; `origin` names it in errors.
    pub fn from_toml(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            origin: origin.to_string(),
            message: e.to_string().trim_end().to_string(),
        })?;
        config.validate(origin)?;
        Ok(config)
    }

    /// The pins file of the `definitions` detector, `[detectors.definitions]
    /// pins_file`, if the config names one. The sink and the engine read it through
    /// this, so they pin against the same file.
    pub fn pins_file(&self) -> Option<std::path::PathBuf> {
        self.detectors
            .get("definitions")?
            .get("pins_file")?
            .as_str()
            .map(std::path::PathBuf::from)
    }

    /// The trust domain of a server: its `[servers]` entry, else what the event
    /// reported, else the default domain.
    pub fn trust_domain_of<'a>(&'a self, server: &str, reported: Option<&'a str>) -> &'a str {
        self.servers
            .get(server)
            .map(|s| s.trust_domain.as_str())
            .or(reported)
            .unwrap_or(&self.trust.default_domain)
    }

    /// Whether data from domain `from` may reach domain `to`.
    pub fn flow_forbidden(&self, from: &str, to: &str) -> bool {
        self.trust
            .forbidden_flows
            .iter()
            .any(|f| f.from == from && f.to == to)
    }

    fn validate(&self, origin: &str) -> Result<(), ConfigError> {
        let invalid = |key: String, message: String| ConfigError::Invalid {
            origin: origin.to_string(),
            key,
            message,
        };
        if let Some(both) = self
            .kafka
            .properties_env
            .keys()
            .find(|k| self.kafka.properties.contains_key(*k))
        {
            return Err(invalid(
                format!("kafka.properties_env.{both}"),
                "is also set in `kafka.properties`; give it in one place".into(),
            ));
        }
        for (i, b) in self.engine.blocks.iter().enumerate() {
            if b.rules.is_empty() || b.rules.iter().any(|r| !r.contains('/')) {
                return Err(invalid(
                    format!("engine.blocks[{i}].rules"),
                    "needs at least one `<detector>/<rule_id>` pattern (`*/*` for every rule)"
                        .into(),
                ));
            }
            if b.ttl.is_some_and(|t| t.as_nanos() == 0) {
                return Err(invalid(
                    format!("engine.blocks[{i}].ttl"),
                    "must be longer than 0 (scope = \"call\" makes no standing block)".into(),
                ));
            }
        }
        let domains = &self.trust.domains;
        let known = |d: &str| domains.iter().any(|x| x == d);
        let listing = || domains.join(", ");
        for (i, d) in domains.iter().enumerate() {
            if d.is_empty() {
                return Err(invalid(format!("trust.domains[{i}]"), "is empty".into()));
            }
            if domains[..i].contains(d) {
                return Err(invalid(
                    format!("trust.domains[{i}]"),
                    format!("{d:?} is listed twice"),
                ));
            }
        }
        if !known(&self.trust.default_domain) {
            return Err(invalid(
                "trust.default_domain".into(),
                format!(
                    "unknown trust domain {:?}; declared: {}",
                    self.trust.default_domain,
                    listing()
                ),
            ));
        }
        for (i, flow) in self.trust.forbidden_flows.iter().enumerate() {
            for (side, d) in [("from", &flow.from), ("to", &flow.to)] {
                if !known(d) {
                    return Err(invalid(
                        format!("trust.forbidden_flows[{i}].{side}"),
                        format!("unknown trust domain {d:?}; declared: {}", listing()),
                    ));
                }
            }
        }
        for (name, server) in &self.servers {
            if !known(&server.trust_domain) {
                return Err(invalid(
                    format!("servers.{name}.trust_domain"),
                    format!(
                        "unknown trust domain {:?}; declared: {}",
                        server.trust_domain,
                        listing()
                    ),
                ));
            }
        }
        let positive = [
            ("limits.max_event_bytes", self.limits.max_event_bytes),
            (
                "event_time.max_buffered_events",
                self.event_time.max_buffered_events,
            ),
            (
                "event_time.max_buffered_bytes",
                self.event_time.max_buffered_bytes,
            ),
            ("findings.max_open", self.findings.max_open),
            ("findings.max_event_ids", self.findings.max_event_ids),
            ("history.row_group_rows", self.history.row_group_rows),
            ("history.max_open_files", self.history.max_open_files),
            ("history.compact_min_files", self.history.compact_min_files),
            (
                "engine.max_blocks_per_agent",
                self.engine.max_blocks_per_agent,
            ),
            (
                "history.max_file_bytes",
                usize::try_from(self.history.max_file_bytes).unwrap_or(usize::MAX),
            ),
        ];
        for (key, value) in positive {
            if value == 0 {
                return Err(invalid(key.into(), "must be at least 1".into()));
            }
        }
        if self.findings.fold_window == Duration::ZERO {
            return Err(invalid(
                "findings.fold_window".into(),
                "must be longer than 0".into(),
            ));
        }
        if self.history.location.is_empty() {
            return Err(invalid("history.location".into(), "is empty".into()));
        }
        if self.history.max_file_age == Duration::ZERO {
            return Err(invalid(
                "history.max_file_age".into(),
                "must be longer than 0".into(),
            ));
        }
        if self.sink.max_message_bytes == 0 {
            return Err(invalid(
                "sink.max_message_bytes".into(),
                "must be at least 1".into(),
            ));
        }
        if self.sink.max_decisions == 0 {
            return Err(invalid(
                "sink.max_decisions".into(),
                "must be at least 1".into(),
            ));
        }
        for (key, value) in [
            (
                "engine.checkpoint_interval",
                self.engine.checkpoint_interval,
            ),
            ("engine.decision_ttl", self.engine.decision_ttl),
            ("engine.idle_timeout", self.engine.idle_timeout),
            ("engine.block_rate_window", self.engine.block_rate_window),
        ] {
            if value == Duration::ZERO {
                return Err(invalid(key.into(), "must be longer than 0".into()));
            }
        }
        for (key, value) in [
            ("kafka.group_id", &self.kafka.group_id),
            ("engine.data_dir", &self.engine.data_dir),
            ("engine.signing_key_file", &self.engine.signing_key_file),
            ("engine.key_id", &self.engine.key_id),
        ] {
            if value.is_empty() {
                return Err(invalid(key.into(), "is empty".into()));
            }
        }
        if self.sink.spool_max_bytes < 1 << 20 {
            return Err(invalid(
                "sink.spool_max_bytes".into(),
                format!("{} is below the 1 MiB minimum", self.sink.spool_max_bytes),
            ));
        }
        if !(1..=10_000).contains(&self.sink.decision_fetch_wait_ms) {
            return Err(invalid(
                "sink.decision_fetch_wait_ms".into(),
                format!(
                    "{} is not between 1 and 10000",
                    self.sink.decision_fetch_wait_ms
                ),
            ));
        }
        for (key, value) in [
            ("sink.http_max_sessions", self.sink.http_max_sessions as u64),
            (
                "sink.http_max_sessions_per_client",
                self.sink.http_max_sessions_per_client as u64,
            ),
            (
                "sink.http_session_idle_timeout_ms",
                self.sink.http_session_idle_timeout_ms,
            ),
            (
                "sink.http_max_connections",
                self.sink.http_max_connections as u64,
            ),
            (
                "sink.http_client_timeout_ms",
                self.sink.http_client_timeout_ms,
            ),
        ] {
            if value == 0 {
                return Err(invalid(key.into(), "must be at least 1".into()));
            }
        }
        if self.sink.http_max_sessions_per_client > self.sink.http_max_sessions {
            return Err(invalid(
                "sink.http_max_sessions_per_client".into(),
                format!(
                    "{} is more than sink.http_max_sessions ({})",
                    self.sink.http_max_sessions_per_client, self.sink.http_max_sessions
                ),
            ));
        }
        for (i, class) in self.sink.hold.iter().enumerate() {
            let field = |f: &str| format!("sink.hold[{i}].{f}");
            if class.name.is_empty() {
                return Err(invalid(field("name"), "is empty".into()));
            }
            if class.tools.is_empty() {
                return Err(invalid(field("tools"), "names no tool".into()));
            }
            if !(1..=60_000).contains(&class.hold_timeout_ms) {
                return Err(invalid(
                    field("hold_timeout_ms"),
                    format!("{} is not between 1 and 60000", class.hold_timeout_ms),
                ));
            }
        }
        if self.sink.spool_dir.is_empty() {
            return Err(invalid("sink.spool_dir".into(), "is empty".into()));
        }
        if self.sink.agent_id.as_deref() == Some("") {
            return Err(invalid("sink.agent_id".into(), "is empty".into()));
        }
        for (name, table) in &self.detectors {
            if !table.is_object() {
                return Err(invalid(
                    format!("detectors.{name}"),
                    "must be a table".into(),
                ));
            }
        }
        for (i, broker) in self.kafka.brokers.iter().enumerate() {
            let ok = broker.rsplit_once(':').is_some_and(|(host, port)| {
                !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0)
            });
            if !ok {
                return Err(invalid(
                    format!("kafka.brokers[{i}]"),
                    format!("{broker:?} is not host:port"),
                ));
            }
        }
        let topics = &self.kafka.topics;
        for (key, topic) in [
            ("events", &topics.events),
            ("decisions", &topics.decisions),
            ("findings", &topics.findings),
            ("dlq", &topics.dlq),
        ] {
            let legal = !topic.is_empty()
                && topic.len() <= 249
                && topic
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
            if !legal {
                return Err(invalid(
                    format!("kafka.topics.{key}"),
                    format!("{topic:?} is not a legal Kafka topic name"),
                ));
            }
        }
        outputs::validate(&self.outputs).map_err(|(key, message)| invalid(key, message))?;
        if let Some(endpoint) = &self.engine.metrics_otlp_endpoint
            && !(endpoint.starts_with("http://") || endpoint.starts_with("https://"))
        {
            return Err(invalid(
                "engine.metrics_otlp_endpoint".into(),
                format!("{endpoint:?} is not an http:// or https:// URL"),
            ));
        }
        if self.engine.metrics_otlp_interval.as_nanos() <= 0 {
            return Err(invalid(
                "engine.metrics_otlp_interval".into(),
                "must be longer than zero".into(),
            ));
        }
        if let Some(listen) = &self.otlp.listen
            && listen
                .rsplit_once(':')
                .is_none_or(|(h, p)| h.is_empty() || p.parse::<u16>().is_err())
        {
            return Err(invalid(
                "otlp.listen".into(),
                format!("{listen:?} is not host:port"),
            ));
        }
        if self.otlp.max_request_bytes == 0 {
            return Err(invalid(
                "otlp.max_request_bytes".into(),
                "must be at least 1".into(),
            ));
        }
        if self.otlp.default_server.is_empty() {
            return Err(invalid("otlp.default_server".into(), "is empty".into()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {

    /// The demo's config had no `[kafka]` table and got an empty group id, which
    /// librdkafka turns into a consumer without a group.
    #[test]
    fn a_missing_section_gets_the_same_defaults_as_an_empty_one() {
        let missing = Config::from_toml("", "t.toml").unwrap();
        let empty = Config::from_toml("[kafka]\n[engine]\n", "t.toml").unwrap();
        assert_eq!(missing.kafka.group_id, "toolgate-engine");
        assert_eq!(missing.kafka.group_id, empty.kafka.group_id);
        assert_eq!(missing.engine.data_dir, empty.engine.data_dir);
        assert_eq!(
            missing.engine.checkpoint_interval,
            empty.engine.checkpoint_interval
        );
        let err = Config::from_toml("[kafka]\ngroup_id = \"\"\n", "t.toml").unwrap_err();
        assert!(err.to_string().contains("kafka.group_id"), "{err}");
    }
    use super::*;

    fn err(text: &str) -> String {
        Config::from_toml(text, "t.toml").unwrap_err().to_string()
    }

    #[test]
    fn empty_file_gives_defaults() {
        let c = Config::from_toml("", "t.toml").unwrap();
        assert_eq!(c.trust.domains.len(), 5);
        assert!(c.flow_forbidden("internal", "external"));
        assert!(!c.flow_forbidden("external", "internal"));
        assert_eq!(c.trust_domain_of("unknown", None), "untrusted");
        assert_eq!(c.trust_domain_of("unknown", Some("internal")), "internal");
        assert_eq!(c.kafka.topics.dlq, "toolgate.dlq");
    }

    #[test]
    fn server_config_overrides_the_reported_domain() {
        let c = Config::from_toml("[servers.mail]\ntrust_domain = \"secret\"\n", "t.toml").unwrap();
        assert_eq!(c.trust_domain_of("mail", Some("public")), "secret");
    }

    #[test]
    fn unknown_keys_are_named() {
        let e = err("[servers.mail]\ntrust_domian = \"internal\"\n");
        assert!(e.contains("trust_domian"), "{e}");
        let e = err("[limits]\nmax_event_byte = 5\n");
        assert!(e.contains("max_event_byte"), "{e}");
        let e = err("[[outputs]]\ntype = \"file\"\nformat = \"ocsf\"\npath = \"x\"\ncolour = 1\n");
        assert!(e.contains("colour"), "{e}");
    }

    #[test]
    fn issue_19_the_block_rate_limit_has_defaults_and_its_bad_values_are_named() {
        let c = Config::from_toml("", "t.toml").unwrap();
        assert_eq!(c.engine.max_blocks_per_agent, 20);
        assert_eq!(c.engine.block_rate_window, Duration::from_secs(600));
        let c = Config::from_toml(
            "[engine]\nmax_blocks_per_agent = 3\nblock_rate_window = \"1m\"\n",
            "t.toml",
        )
        .unwrap();
        assert_eq!(c.engine.max_blocks_per_agent, 3);
        assert_eq!(c.engine.block_rate_window, Duration::from_secs(60));
        let e = err("[engine]\nmax_blocks_per_agent = 0\n");
        assert!(e.contains("engine.max_blocks_per_agent"), "{e}");
        let e = err("[engine]\nblock_rate_window = \"0s\"\n");
        assert!(e.contains("engine.block_rate_window"), "{e}");
    }

    #[test]
    fn the_http_sinks_bounds_are_checked() {
        let c = Config::from_toml("", "t.toml").unwrap();
        assert_eq!(
            (
                c.sink.http_max_sessions,
                c.sink.http_max_sessions_per_client
            ),
            (1_024, 256)
        );
        let e = err("[sink]\nhttp_client_timeout_ms = 0\n");
        assert!(e.contains("`sink.http_client_timeout_ms`"), "{e}");
        let e = err("[sink]\nhttp_max_sessions = 4\nhttp_max_sessions_per_client = 5\n");
        assert!(e.contains("`sink.http_max_sessions_per_client`"), "{e}");
    }

    #[test]
    fn bad_values_are_named() {
        let e = err("[servers.mail]\ntrust_domain = \"intenral\"\n");
        assert!(
            e.contains("`servers.mail.trust_domain`") && e.contains("intenral"),
            "{e}"
        );
        let e = err("[trust]\nforbidden_flows = [{ from = \"secret\", to = \"outside\" }]\n");
        assert!(e.contains("`trust.forbidden_flows[0].to`"), "{e}");
        let e = err("[limits]\nmax_event_bytes = 0\n");
        assert!(e.contains("`limits.max_event_bytes`"), "{e}");
        let e = err("[findings]\nfold_window = \"10 minutes\"\n");
        assert!(e.contains("fold_window") && e.contains("10 minutes"), "{e}");
        let e = err("[kafka]\nbrokers = [\"kafka-1\"]\n");
        assert!(e.contains("`kafka.brokers[0]`"), "{e}");
        let e = err("[kafka.topics]\nevents = \"has space\"\n");
        assert!(e.contains("`kafka.topics.events`"), "{e}");
        let e = err("[[outputs]]\ntype = \"file\"\nformat = \"xml\"\npath = \"x\"\n");
        assert!(e.contains("xml"), "{e}");
        let e = err("detectors = { provenance = 3 }\n");
        assert!(e.contains("`detectors.provenance`"), "{e}");
    }
}
