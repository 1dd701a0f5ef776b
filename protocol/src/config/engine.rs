//! The engine's own sections: `[engine]` (workers' data, checkpoints, decisions,
//! metrics), `[history]` (the Parquet history, local or on S3) and `[otlp]` (the
//! OTLP/HTTP receiver).

use serde::Deserialize;

use crate::time::Duration;

/// `[otlp]`: agents instrumented with OpenTelemetry export their spans to the engine,
/// which turns each GenAI tool execution into events on the events topic.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OtlpConfig {
    /// Where `POST /v1/traces` is served, e.g. `127.0.0.1:4318` (OTLP/HTTP's port);
    /// no receiver when absent.
    #[serde(default)]
    pub listen: Option<String>,
    /// Request bodies larger than this, after gunzip, are refused (413). Defaults to
    /// the event limit's default, so a span as large as an event fits.
    #[serde(default = "default_otlp_max_request_bytes")]
    pub max_request_bytes: usize,
    /// The `server` of a tool span that names none (no `mcp.server.name` or
    /// `server.address`).
    #[serde(default = "default_otlp_server")]
    pub default_server: String,
    /// The environment variable holding the bearer token exporters must send
    /// (`Authorization: Bearer <token>`); others get 401. Required unless `listen`
    /// is a loopback address. Read only by the engine, when the receiver starts: the
    /// sinks and other commands sharing this file need not have it.
    #[serde(default)]
    pub token_env: Option<String>,
    /// The token itself, when the program embedding the engine supplies it (never
    /// from the file); otherwise read from `token_env`.
    #[serde(skip)]
    pub token: Option<String>,
}

impl Default for OtlpConfig {
    fn default() -> Self {
        OtlpConfig {
            listen: None,
            max_request_bytes: default_otlp_max_request_bytes(),
            default_server: default_otlp_server(),
            token_env: None,
            token: None,
        }
    }
}

/// A request holds at least one span as large as an event may be (issue 22: at 8 MiB
/// it refused what the engine would take).
fn default_otlp_max_request_bytes() -> usize {
    crate::event::DEFAULT_MAX_EVENT_BYTES
}
fn default_otlp_server() -> String {
    "otel".into()
}

/// `[engine]`: what `toolgate run` needs beyond `[kafka]`, `[history]` and `[outputs]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EngineConfig {
    /// Where the engine keeps checkpoints and its signing key. Engines of one consumer
    /// group must share it (a network file system) for state to follow a partition
    /// when it moves to another engine.
    #[serde(default = "default_engine_data_dir")]
    pub data_dir: String,
    /// How often detector state and offsets are checkpointed together (and the history
    /// committed); offsets are committed to Kafka only then.
    #[serde(default = "default_checkpoint_interval")]
    pub checkpoint_interval: Duration,
    /// The Ed25519 seed (32 bytes, base64) decisions are signed with. Created with
    /// mode 0600 on first start if missing; relative paths are under `data_dir`.
    #[serde(default = "default_signing_key_file")]
    pub signing_key_file: String,
    /// The `key_id` decisions carry; sinks look the public key up by it.
    #[serde(default = "default_key_id")]
    pub key_id: String,
    /// How long a block decision made from a finding stays in force at the sinks.
    #[serde(default = "default_decision_ttl")]
    pub decision_ttl: Duration,
    /// A partition whose event time has not moved for this long (wall clock)
    /// processes every event it holds for ordering and lets its event time run on
    /// with the clock, so windows of quiet agents still close.
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout: Duration,
    /// Where `/metrics` (Prometheus) and `/healthz` are served, e.g. `127.0.0.1:9464`;
    /// not served when absent.
    #[serde(default)]
    pub metrics_listen: Option<String>,
    /// Where the same metrics are pushed with OpenTelemetry (OTLP/HTTP protobuf), e.g.
    /// `http://collector:4318/v1/metrics`; not exported when absent.
    #[serde(default)]
    pub metrics_otlp_endpoint: Option<String>,
    /// How often they are pushed.
    #[serde(default = "default_metrics_otlp_interval")]
    pub metrics_otlp_interval: Duration,
    /// At most this many block decisions (made from findings; verdicts on held calls
    /// are not counted) are signed per agent within `block_rate_window` of event time.
    /// Further blocks are not signed: their findings still go out, a metric counts
    /// them and one warning per burst says so. Bounds what forged events can do.
    #[serde(default = "default_max_blocks_per_agent")]
    pub max_blocks_per_agent: usize,
    /// The window `max_blocks_per_agent` counts in (event time).
    #[serde(default = "default_block_rate_window")]
    pub block_rate_window: Duration,
    /// How the block a finding asks for is scoped and how long it lasts, by rule
    /// (`[[engine.blocks]]`): the first entry whose `rules` match applies. A finding
    /// no entry matches blocks what it names (its session, its server and tool when it
    /// names them, and the destination when it names one) for `decision_ttl`.
    #[serde(default)]
    pub blocks: Vec<BlockRule>,
}

/// One `[[engine.blocks]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlockRule {
    /// `<detector>/<rule_id>` patterns (`*` matches any run of characters), e.g.
    /// `provenance/cross_domain_flow`, `policy/*`.
    pub rules: Vec<String>,
    /// What the block covers; the finding's own scope when absent.
    #[serde(default)]
    pub scope: Option<BlockScope>,
    /// How long it lasts; `decision_ttl` when absent.
    #[serde(default)]
    pub ttl: Option<Duration>,
}

/// What a block made from a finding covers at the sinks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BlockScope {
    /// No standing block: only the call the finding is about, when it is held, is
    /// refused (its verdict); later calls are judged on their own findings.
    Call,
    /// Later calls of the session to the finding's tool on its server that name the
    /// destination the finding names (`provenance/untrusted_destination`); the tool's
    /// calls to anywhere else pass. What a finding naming no destination gets is
    /// `tool`. The default.
    Destination,
    /// Later calls of the session to the finding's tool on its server, to any
    /// destination.
    Tool,
    /// Later calls of the session to the finding's server.
    Server,
    /// Every later call of the session.
    Session,
    /// Every later call of the agent, in any session.
    Agent,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            data_dir: default_engine_data_dir(),
            checkpoint_interval: default_checkpoint_interval(),
            signing_key_file: default_signing_key_file(),
            key_id: default_key_id(),
            decision_ttl: default_decision_ttl(),
            idle_timeout: default_idle_timeout(),
            metrics_listen: None,
            metrics_otlp_endpoint: None,
            metrics_otlp_interval: default_metrics_otlp_interval(),
            max_blocks_per_agent: default_max_blocks_per_agent(),
            block_rate_window: default_block_rate_window(),
            blocks: Vec::new(),
        }
    }
}

fn default_engine_data_dir() -> String {
    "toolgate-data".into()
}
fn default_checkpoint_interval() -> Duration {
    Duration::from_secs(5)
}
fn default_signing_key_file() -> String {
    "decision-signing.key".into()
}
fn default_key_id() -> String {
    "engine-1".into()
}
fn default_decision_ttl() -> Duration {
    Duration::from_secs(3600)
}
fn default_metrics_otlp_interval() -> Duration {
    Duration::from_secs(10)
}
fn default_idle_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_max_blocks_per_agent() -> usize {
    20
}
fn default_block_rate_window() -> Duration {
    Duration::from_secs(600)
}

/// Where and how the Parquet history is written (`[history]`). Files roll by size and
/// age; small files of closed hours are compacted.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryConfig {
    /// A local directory, or `s3://bucket/prefix` (credentials from the `AWS_*`
    /// environment, never from this file).
    #[serde(default = "default_history_location")]
    pub location: String,
    /// A file is closed and published once its encoded data reaches this size (the
    /// footer with statistics and indexes comes on top).
    #[serde(default = "default_max_file_bytes")]
    pub max_file_bytes: u64,
    /// A file is closed and published once it has been open this long (wall clock).
    #[serde(default = "default_max_file_age")]
    pub max_file_age: Duration,
    /// Rows per Parquet row group; each is sorted by agent, then time.
    #[serde(default = "default_row_group_rows")]
    pub row_group_rows: usize,
    /// Most files open at once (one per table and hour); past it the least recently
    /// written is published.
    #[serde(default = "default_max_open_files")]
    pub max_open_files: usize,
    /// Compaction merges an hour's files once it has at least this many small ones.
    #[serde(default = "default_compact_min_files")]
    pub compact_min_files: usize,
    /// Files this large or larger are left alone by compaction.
    #[serde(default = "default_compact_small_file_bytes")]
    pub compact_small_file_bytes: u64,
    /// Options for `s3://` locations.
    #[serde(default)]
    pub s3: S3Config,
}

impl Default for HistoryConfig {
    fn default() -> Self {
        HistoryConfig {
            location: default_history_location(),
            max_file_bytes: default_max_file_bytes(),
            max_file_age: default_max_file_age(),
            row_group_rows: default_row_group_rows(),
            max_open_files: default_max_open_files(),
            compact_min_files: default_compact_min_files(),
            compact_small_file_bytes: default_compact_small_file_bytes(),
            s3: S3Config::default(),
        }
    }
}

fn default_history_location() -> String {
    "toolgate-data/history".into()
}

fn default_max_file_bytes() -> u64 {
    128 << 20
}

fn default_max_file_age() -> Duration {
    Duration::from_secs(300)
}

fn default_row_group_rows() -> usize {
    65_536
}

fn default_max_open_files() -> usize {
    64
}

fn default_compact_min_files() -> usize {
    4
}

fn default_compact_small_file_bytes() -> u64 {
    32 << 20
}

/// S3 (or S3-compatible) settings for an `s3://` history location. Anything left out
/// is read from the `AWS_*` environment as the AWS tools do.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Config {
    /// Endpoint URL of an S3-compatible store (MinIO, Ceph, ...).
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Region.
    #[serde(default)]
    pub region: Option<String>,
    /// Allow plain `http://` endpoints (test and on-premises stores).
    #[serde(default)]
    pub allow_http: bool,
}
