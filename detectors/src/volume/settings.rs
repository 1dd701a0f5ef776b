//! `[detectors.volume]`.

use serde::{Deserialize, Serialize};
use toolgate_protocol::{Duration, FindingAction, Severity};

/// `[detectors.volume]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VolumeSettings {
    /// Length of the sliding window every count, byte sum and distinct count covers.
    #[serde(default = "default_window")]
    pub window: Duration,
    /// Panes the window is divided into: it slides by `window / panes`, so a burst no
    /// longer than `window - window / panes` is always seen whole.
    #[serde(default = "default_panes")]
    pub panes: usize,
    /// A key (agent, session, server, tool) idle this long is forgotten.
    #[serde(default = "default_key_ttl")]
    pub key_ttl: Duration,
    /// Most keys tracked over all scopes and thresholds; past it the longest idle go
    /// first (counted in `toolgate_volume_evicted_keys_total`).
    #[serde(default = "default_max_keys")]
    pub max_keys: usize,
    /// Static limits on a scope's window.
    #[serde(default)]
    pub thresholds: Vec<ThresholdConfig>,
    /// Limits learned per key: EWMA mean and variance of each pane, z-score of the
    /// window.
    #[serde(default)]
    pub adaptive: AdaptiveConfig,
    /// Argument sizes against what the tool's own `inputSchema` lets them be, and
    /// against the sizes usually sent to that argument.
    #[serde(default)]
    pub argument_size: ArgumentSizeConfig,
    /// Fleet-wide heavy hitters (frequent items).
    #[serde(default)]
    pub heavy_hitters: HeavyHittersConfig,
}

/// What a window is kept for.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// One agent instance.
    Agent,
    /// One session of one agent.
    Session,
    /// One server name, fleet-wide.
    Server,
    /// One tool of one server, fleet-wide.
    Tool,
}

impl Scope {
    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Agent => "agent",
            Scope::Session => "session",
            Scope::Server => "server",
            Scope::Tool => "tool",
        }
    }
}

/// What a window measures.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// `tool_call` events.
    Calls,
    /// Bytes of call arguments (JSON).
    ArgumentBytes,
    /// Bytes of results (text content and structured content).
    ResultBytes,
    /// Distinct values of the threshold's `arguments` (HyperLogLog).
    Distinct,
}

impl Metric {
    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Metric::Calls => "calls",
            Metric::ArgumentBytes => "argument_bytes",
            Metric::ResultBytes => "result_bytes",
            Metric::Distinct => "distinct",
        }
    }
}

/// One `[[detectors.volume.thresholds]]` entry: a static limit.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThresholdConfig {
    /// Rule id in findings (`volume_threshold` plus this name in the group key).
    pub name: String,
    /// Per what the window is kept.
    pub scope: Scope,
    /// What is measured.
    pub metric: Metric,
    /// The window value above which a finding is raised.
    pub max: u64,
    /// Only events of servers matching one of these globs count (all when empty).
    #[serde(default)]
    pub servers: Vec<String>,
    /// Only events of tools matching one of these globs count (all when empty).
    #[serde(default)]
    pub tools: Vec<String>,
    /// For `distinct`: argument names (globs, any depth) whose string values are
    /// counted, e.g. `["path", "file*", "url", "to", "recipients"]`.
    #[serde(default)]
    pub arguments: Vec<String>,
    /// Severity of the finding.
    #[serde(default = "default_severity")]
    pub severity: Severity,
    /// `alert`, or `block` to ask the sink to refuse further calls.
    #[serde(default = "default_action")]
    pub action: FindingAction,
}

/// `[detectors.volume.adaptive]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdaptiveConfig {
    /// Learn and check at all.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Scopes with learned limits.
    #[serde(default = "default_adaptive_scopes")]
    pub scopes: Vec<Scope>,
    /// Weight of the newest pane in the moving mean and variance (0–1).
    #[serde(default = "default_alpha")]
    pub alpha: f64,
    /// Standard deviations above the learned mean that make a spike.
    #[serde(default = "default_z")]
    pub z: f64,
    /// Panes a key must have been seen for before it is judged.
    #[serde(default = "default_warmup_panes")]
    pub warmup_panes: u32,
    /// Smallest window call count that can be a spike.
    #[serde(default = "default_min_calls")]
    pub min_calls: u64,
    /// Smallest window argument bytes that can be a spike.
    #[serde(default = "default_min_argument_bytes")]
    pub min_argument_bytes: u64,
    /// Smallest window result bytes that can be a spike.
    #[serde(default = "default_min_result_bytes")]
    pub min_result_bytes: u64,
}

impl Default for AdaptiveConfig {
    fn default() -> Self {
        AdaptiveConfig {
            enabled: true,
            scopes: default_adaptive_scopes(),
            alpha: default_alpha(),
            z: default_z(),
            warmup_panes: default_warmup_panes(),
            min_calls: default_min_calls(),
            min_argument_bytes: default_min_argument_bytes(),
            min_result_bytes: default_min_result_bytes(),
        }
    }
}

/// `[detectors.volume.argument_size]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArgumentSizeConfig {
    /// Check at all.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// A value larger than this many times what its schema type allows (a boolean, a
    /// number, an enum, an email, a date, a URI) is flagged.
    #[serde(default = "default_schema_factor")]
    pub schema_factor: f64,
    /// Standard deviations above the usual (log) size of an argument that flag a value.
    #[serde(default = "default_z")]
    pub z: f64,
    /// Values of an argument seen before its usual size is trusted.
    #[serde(default = "default_size_warmup")]
    pub warmup_calls: u32,
    /// Smallest value (bytes) that can be flagged as unusually large.
    #[serde(default = "default_min_flag_bytes")]
    pub min_bytes: u64,
    /// Most (server, tool) schemas and argument profiles remembered.
    #[serde(default = "default_max_tools")]
    pub max_tools: usize,
}

impl Default for ArgumentSizeConfig {
    fn default() -> Self {
        ArgumentSizeConfig {
            enabled: true,
            schema_factor: default_schema_factor(),
            z: default_z(),
            warmup_calls: default_size_warmup(),
            min_bytes: default_min_flag_bytes(),
            max_tools: default_max_tools(),
        }
    }
}

/// What heavy hitters are counted over.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum HeavyItem {
    /// Calls per agent.
    Agent,
    /// Calls per server.
    Server,
    /// Calls per server and tool.
    Tool,
    /// Calls per agent, server and tool.
    AgentTool,
}

/// `[detectors.volume.heavy_hitters]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeavyHittersConfig {
    /// Count at all.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// What an item is.
    #[serde(default = "default_heavy_item")]
    pub item: HeavyItem,
    /// Reporting interval (event time); the counts start afresh after each.
    #[serde(default = "default_heavy_interval")]
    pub interval: Duration,
    /// Share (0–1) of the fleet's calls in an interval that makes an item heavy.
    #[serde(default = "default_min_share")]
    pub min_share: f64,
    /// Fewest calls (guaranteed lower bound) that make an item heavy.
    #[serde(default = "default_min_count")]
    pub min_count: u64,
    /// Size of the frequent-items map (a power of two); error is about
    /// 3.5 / max_map_size of the interval's calls.
    #[serde(default = "default_max_map_size")]
    pub max_map_size: usize,
}

impl Default for HeavyHittersConfig {
    fn default() -> Self {
        HeavyHittersConfig {
            enabled: true,
            item: default_heavy_item(),
            interval: default_heavy_interval(),
            min_share: default_min_share(),
            min_count: default_min_count(),
            max_map_size: default_max_map_size(),
        }
    }
}

fn yes() -> bool {
    true
}
fn default_window() -> Duration {
    Duration::from_secs(60)
}
fn default_panes() -> usize {
    12
}
fn default_key_ttl() -> Duration {
    Duration::from_secs(3600)
}
fn default_max_keys() -> usize {
    200_000
}
fn default_severity() -> Severity {
    Severity::Medium
}
fn default_action() -> FindingAction {
    FindingAction::Alert
}
fn default_adaptive_scopes() -> Vec<Scope> {
    vec![Scope::Agent, Scope::Server, Scope::Tool]
}
fn default_alpha() -> f64 {
    0.05
}
fn default_z() -> f64 {
    4.0
}
fn default_warmup_panes() -> u32 {
    60
}
fn default_min_calls() -> u64 {
    30
}
fn default_min_argument_bytes() -> u64 {
    256 * 1024
}
fn default_min_result_bytes() -> u64 {
    4 * 1024 * 1024
}
fn default_schema_factor() -> f64 {
    4.0
}
fn default_size_warmup() -> u32 {
    20
}
fn default_min_flag_bytes() -> u64 {
    4096
}
fn default_max_tools() -> usize {
    10_000
}
fn default_heavy_item() -> HeavyItem {
    HeavyItem::AgentTool
}
fn default_heavy_interval() -> Duration {
    Duration::from_secs(300)
}
fn default_min_share() -> f64 {
    0.25
}
fn default_min_count() -> u64 {
    1000
}
fn default_max_map_size() -> usize {
    1024
}
