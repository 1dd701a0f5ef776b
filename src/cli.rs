//! The `toolgate` command line.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use toolgate_protocol::Severity;
use toolgate_protocol::config::FindingFormat;

/// toolgate: firewall and streaming analytics for AI-agent tool calls.
#[derive(Debug, Parser)]
#[command(name = "toolgate", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
    /// How logs are written to stderr: `text` lines, or `json` lines for a log
    /// pipeline. `TOOLGATE_LOG` filters them (e.g. `warn,toolgate_engine=debug`).
    #[arg(long, global = true, value_enum, default_value_t = toolgate_edge::logging::LogFormat::Text)]
    pub log_format: toolgate_edge::logging::LogFormat,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Convert a public benchmark's recorded traces into toolgate events.
    #[command(subcommand)]
    Import(ImportCommand),
    /// Run the streaming engine: events from Kafka, findings and signed decisions back.
    Run(RunArgs),
    /// Embedded broker, engine and a simulated fleet with scripted attacks, for a minute.
    Demo(DemoArgs),
    /// Run the detectors over recorded events and write findings.
    Analyze(AnalyzeArgs),
    /// Score detection per session against the ground-truth labels events carry.
    Eval(EvalArgs),
    /// Review pinned tool definitions and approve or reject changed ones.
    #[command(subcommand)]
    Definitions(DefinitionsCommand),
    /// Check the sequence rules of a config, or convert Sigma rules into toolgate's.
    #[command(subcommand)]
    Rules(RulesCommand),
    /// Learn behaviour from recorded events: per-role call models and session clusters.
    Train(TrainArgs),
    /// Query the Parquet history with SQL; an interactive shell without a query.
    Sql(SqlArgs),
    /// Serve the history read-only over the PostgreSQL wire protocol (psql, Grafana, ...).
    ServeSql(ServeSqlArgs),
    /// Maintain the Parquet history.
    #[command(subcommand)]
    History(HistoryCommand),
    /// Check a config for gaps in protection, as the binaries do at start.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// The engine's block decisions in force, and lifting one.
    #[command(subcommand)]
    Decisions(DecisionsCommand),
}

/// `toolgate decisions`.
#[derive(Debug, Subcommand)]
pub enum DecisionsCommand {
    /// Every block decision in force: signed by the engine's key, not expired, not
    /// lifted.
    List(DecisionsTarget),
    /// Lift a block: publish a signed `allow` of its scope, with who and why, until
    /// the block would have expired.
    Lift(DecisionsLiftArgs),
}

/// Where the decisions are and which key signs them.
#[derive(Debug, Args)]
pub struct DecisionsTarget {
    /// toolgate.toml: `[kafka]` (topic, client properties) and `[engine]` (the data
    /// directory holding the signing key).
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// Kafka bootstrap servers, instead of `[kafka] brokers`.
    #[arg(long)]
    pub brokers: Option<String>,
}

/// `toolgate decisions lift`.
#[derive(Debug, Args)]
pub struct DecisionsLiftArgs {
    /// The block's `decision_id` (as `toolgate decisions list` shows it).
    pub decision_id: String,
    /// Why it is lifted; kept in the `allow` decision with the operator's name.
    #[arg(long)]
    pub reason: String,
    /// Where and which key.
    #[command(flatten)]
    pub target: DecisionsTarget,
}

/// `toolgate config`.
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print where the config leaves protection off or weaker than it looks, for the
    /// sink and the engine; fails when a binary would refuse to start with it.
    Check(ConfigCheckArgs),
}

/// `toolgate config check`.
#[derive(Debug, Args)]
pub struct ConfigCheckArgs {
    /// toolgate.toml; the built-in defaults if absent.
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// The sinks are started with `--brokers` (an engine to talk to) although
    /// `[kafka] brokers` is empty.
    #[arg(long)]
    pub brokers: bool,
}

/// Which history to read: `--history`, else the config's `[history] location`.
#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// The history: a directory or `s3://bucket/prefix`.
    #[arg(long)]
    pub history: Option<String>,
    /// toolgate.toml, for `[history]` (location, S3 options).
    #[arg(long, short)]
    pub config: Option<PathBuf>,
}

/// `toolgate sql`.
#[derive(Debug, Args)]
pub struct SqlArgs {
    /// The query; without one, an interactive shell starts.
    pub query: Option<String>,
    /// Which history.
    #[command(flatten)]
    pub history: HistoryArgs,
    /// table, csv, json (one object per line) or parquet.
    #[arg(long, default_value = "table")]
    pub format: toolgate_analytics::sql::format::OutputFormat,
    /// Where to write the result; stdout if absent or `-`.
    #[arg(long)]
    pub output: Option<String>,
}

/// `toolgate serve-sql`.
#[derive(Debug, Args)]
pub struct ServeSqlArgs {
    /// Address to listen on (port 0 picks a free one; the address is printed).
    #[arg(long, default_value = "127.0.0.1:5433")]
    pub listen: String,
    /// Which history.
    #[command(flatten)]
    pub history: HistoryArgs,
    /// The user name clients log in as when a password is required.
    #[arg(long, default_value = "toolgate")]
    pub user: String,
    /// The environment variable holding the password (SCRAM-SHA-256); without it,
    /// anyone who can reach the port can read the history.
    #[arg(long, value_name = "VAR")]
    pub password_env: Option<String>,
    /// Memory all queries together may reserve (DataFusion's memory pool), e.g.
    /// `512MiB`, `2GiB`. Sorts, grouping and repartitioning spill to disk past it;
    /// what cannot spill fails with "Resources exhausted" (SQLSTATE 53200).
    #[arg(long, value_name = "SIZE", default_value = "1GiB", value_parser = parse_bytes)]
    pub memory_limit: usize,
    /// Memory one query may reserve (all of one connection's open statements);
    /// a quarter of `--memory-limit` if absent, and never more than it.
    #[arg(long, value_name = "SIZE", value_parser = parse_bytes)]
    pub query_memory_limit: Option<usize>,
    /// Failed logins from one address (an IPv6 /64) within `--login-lockout` after
    /// which that address is refused for `--login-lockout`; logins in progress count.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    pub login_max_failures: u32,
    /// How long failed logins are remembered, and how long a locked-out address waits.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_duration)]
    pub login_lockout: std::time::Duration,
    /// How long every failed login waits before its error is sent.
    #[arg(long, value_name = "DURATION", default_value = "500ms", value_parser = parse_duration)]
    pub login_failure_delay: std::time::Duration,
    /// Failed logins per second from all addresses together; past it, new logins are
    /// refused for the rest of that second.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..))]
    pub login_max_failures_per_second: u32,
}

/// A size in bytes: a whole number, optionally with a binary unit (`KiB`, `MiB`,
/// `GiB`, `TiB`, or `K`, `M`, `G`, `T` for the same).
pub fn parse_bytes(s: &str) -> Result<usize, String> {
    let invalid = |reason: &str| {
        format!("invalid size {s:?}: {reason}; expected e.g. 1073741824, 512MiB or 1GiB")
    };
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let n: usize = number.parse().map_err(|_| invalid("not a whole number"))?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kib" => 10,
        "m" | "mib" => 20,
        "g" | "gib" => 30,
        "t" | "tib" => 40,
        _ => return Err(invalid("unknown unit")),
    };
    let bytes = 1usize
        .checked_shl(shift)
        .and_then(|scale| n.checked_mul(scale))
        .ok_or_else(|| invalid("too large"))?;
    if bytes == 0 {
        return Err(invalid("must be more than 0"));
    }
    Ok(bytes)
}

/// A duration such as `500ms`, `60s` or `10m`.
/// A positive duration (`500ms`, `1m`): zero would switch the throttle it sets off.
fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let d = toolgate_protocol::Duration::parse(s).map_err(|e| e.to_string())?;
    match d.to_std() {
        zero if zero.is_zero() => Err(format!("{s:?} must be longer than 0")),
        d => Ok(d),
    }
}

/// `toolgate history`.
#[derive(Debug, Subcommand)]
pub enum HistoryCommand {
    /// Merge each hour's small files into one (atomically for readers).
    Compact(CompactArgs),
}

/// `toolgate history compact`.
#[derive(Debug, Args)]
pub struct CompactArgs {
    /// Which history.
    #[command(flatten)]
    pub history: HistoryArgs,
    /// Leave hours alone that were written to more recently than this (e.g. `10m`).
    #[arg(long, default_value = "10m")]
    pub min_age: String,
}

/// `toolgate rules`.
#[derive(Debug, Subcommand)]
pub enum RulesCommand {
    /// Compile every rule of the config (inline, rule files, built-in) and list them.
    Check(RulesCheckArgs),
    /// Convert Sigma YAML (detection and correlation rules) into a toolgate rule file.
    ImportSigma(ImportSigmaArgs),
}

/// `toolgate rules check`.
#[derive(Debug, Args)]
pub struct RulesCheckArgs {
    /// toolgate.toml.
    #[arg(long, short)]
    pub config: Option<PathBuf>,
}

/// `toolgate rules import-sigma`.
#[derive(Debug, Args)]
pub struct ImportSigmaArgs {
    /// Sigma files (`.yml`, several documents each allowed).
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Where to write the TOML rule file; stdout if absent or `-`.
    #[arg(long)]
    pub output: Option<String>,
}

/// `toolgate train`.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct TrainArgs {
    /// Another model than the behaviour models.
    #[command(subcommand)]
    pub model: Option<TrainModel>,
    /// Events to learn from: a JSONL file (gzip accepted), a directory, or `-`.
    #[arg(long, required = true)]
    pub input: Option<String>,
    /// Where to write the model (JSON).
    #[arg(long, required = true)]
    pub output: Option<PathBuf>,
    /// toolgate.toml: trust domains and the `[detectors.sequence.learned]` and
    /// `[detectors.session]` settings the model must match.
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// Learn only from sessions whose label matches, e.g. `outcome=benign` (repeatable;
    /// all must match).
    #[arg(long = "where", value_name = "LABEL=VALUE")]
    pub filters: Vec<String>,
    /// Most clusters tried; k is chosen between 2 and this by the silhouette score.
    #[arg(long, default_value_t = 8)]
    pub max_clusters: usize,
}

/// Models `toolgate train` learns besides the behaviour models.
#[derive(Debug, Subcommand)]
pub enum TrainModel {
    /// The injection classifier: weights and severity thresholds from the public
    /// corpora (AgentDojo, InjecAgent, BIPIA, MCP-SafetyBench). Deterministic.
    Injection(TrainInjectionArgs),
}

/// `toolgate train injection`.
#[derive(Debug, Args)]
pub struct TrainInjectionArgs {
    /// The `shared/datasets` folder.
    #[arg(long, default_value = "../shared/datasets")]
    pub datasets: PathBuf,
    /// Benign definitions of published MCP servers, as `tool_list` events (JSONL):
    /// real tools' own wording, which the corpora lack (their only benign definitions
    /// are InjecAgent's synthetic ones). `benches/harness/real_definitions.py` collects
    /// them.
    #[arg(
        long,
        default_value = "detectors/models/training/mcp-server-definitions.jsonl"
    )]
    pub definitions: PathBuf,
    /// Where to write the model (`[detectors.injection] model_file` reads it; the
    /// shipped one is `detectors/models/injection.json`).
    #[arg(long)]
    pub output: PathBuf,
    /// Also measure it across corpora (leave-one-corpus-out and per-corpus splits,
    /// beside the signal table) and write the table here (Markdown).
    #[arg(long)]
    pub evaluate: Option<PathBuf>,
}

/// `toolgate definitions`.
#[derive(Debug, Subcommand)]
pub enum DefinitionsCommand {
    /// Every pinned tool, with changes pending and rejected.
    List(PinsArgs),
    /// What a pending change would change, and how its text scores for poisoning.
    Diff(PinTarget),
    /// Pin a pending change: the tool may be called with it.
    Approve(PinTarget),
    /// Reject a pending change: it keeps raising blocking findings when served.
    Reject(PinTarget),
}

/// Where the pins are.
#[derive(Debug, Args)]
pub struct PinsArgs {
    /// The pins file; `[detectors.definitions] pins_file` of the config if absent,
    /// else the sinks' own files under `[sink] spool_dir` (`@pins/<server>.json`).
    #[arg(long)]
    pub pins: Option<PathBuf>,
    /// toolgate.toml.
    #[arg(long, short)]
    pub config: Option<PathBuf>,
}

/// One tool's pending change.
#[derive(Debug, Args)]
pub struct PinTarget {
    /// Where the pins are.
    #[command(flatten)]
    pub pins: PinsArgs,
    /// Server name.
    pub server: String,
    /// Tool name.
    pub tool: String,
    /// Which pending change, when there are several.
    #[arg(long)]
    pub fingerprint: Option<String>,
}

/// Importers.
#[derive(Debug, Subcommand)]
pub enum ImportCommand {
    /// AgentDojo runs (a `runs/` directory, its .tar.gz, or one run file).
    Agentdojo(AgentdojoArgs),
    /// MCP-SafetyBench tasks: poisoned tool descriptions and injected returns.
    Safetybench(CorpusArgs),
    /// InjecAgent: clean tool specifications and injected tool responses.
    Injecagent(CorpusArgs),
}

/// `toolgate import safetybench|injecagent`.
#[derive(Debug, Args)]
pub struct CorpusArgs {
    /// The dataset directory (e.g. `../shared/datasets/injecagent`).
    #[arg(long)]
    pub input: PathBuf,
    /// Where to write events (JSONL; gzipped if the name ends in .gz; `-` for stdout).
    #[arg(long)]
    pub output: String,
    /// toolgate.toml whose `[redaction]` `--redact` applies.
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// Write events with secrets and personal data replaced as `[redaction]` says.
    #[arg(long)]
    pub redact: bool,
}

/// `toolgate import agentdojo`.
#[derive(Debug, Args)]
pub struct AgentdojoArgs {
    /// The runs: a directory, a .tar.gz of it, or a single run .json.
    #[arg(long)]
    pub input: PathBuf,
    /// Where to write events (JSONL; gzipped if the name ends in .gz; `-` for stdout).
    #[arg(long)]
    pub output: String,
    /// Tool-to-server mapping (TOML); the shipped mapping for the workspace, travel
    /// and banking suites by default.
    #[arg(long)]
    pub mapping: Option<PathBuf>,
    /// toolgate.toml whose trust domains the mapping must use.
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// Write events with secrets and personal data replaced as the config's
    /// `[redaction]` says (for copies that are shared or kept).
    #[arg(long)]
    pub redact: bool,
}

/// `toolgate run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// toolgate.toml; built-in defaults if absent.
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// Kafka bootstrap brokers (`host:port,…`); overrides `[kafka] brokers`. Without
    /// either, an embedded broker starts on 127.0.0.1 and its address is printed.
    #[arg(long)]
    pub brokers: Option<String>,
    /// Checkpoints and the signing key go here; overrides `[engine] data_dir`.
    #[arg(long)]
    pub data_dir: Option<String>,
    /// The Parquet history; overrides `[history] location`.
    #[arg(long)]
    pub history: Option<String>,
    /// Keep no history.
    #[arg(long, conflicts_with = "history")]
    pub no_history: bool,
    /// Worker threads; the machine's cores by default.
    #[arg(long)]
    pub workers: Option<usize>,
    /// Partitions per topic of the embedded broker.
    #[arg(long, default_value_t = 4)]
    pub partitions: i32,
    /// Serve `/metrics` (Prometheus) and `/healthz` here, e.g. `127.0.0.1:9464`;
    /// overrides `[engine] metrics_listen`.
    #[arg(long)]
    pub metrics_listen: Option<String>,
    /// Receive OpenTelemetry traces (OTLP/HTTP, `POST /v1/traces`) here, e.g.
    /// `127.0.0.1:4318`; overrides `[otlp] listen`.
    #[arg(long)]
    pub otlp_listen: Option<String>,
}

/// `toolgate demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Start from this toolgate.toml instead of the built-in `examples/demo.toml`.
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// Where the run's checkpoints, key, spools and history go; cleared first, so it
    /// must be a directory an earlier demo made, or new.
    #[arg(long, default_value = "toolgate-data/demo")]
    pub data_dir: PathBuf,
    /// Agents in the fleet; the first five each run one scripted attack.
    #[arg(long, default_value_t = 8)]
    pub agents: usize,
    /// How long the fleet runs.
    #[arg(long, default_value_t = 20)]
    pub seconds: u64,
    /// Engine worker threads; the machine's cores by default.
    #[arg(long)]
    pub workers: Option<usize>,
}

/// `toolgate analyze`.
#[derive(Debug, Args)]
pub struct AnalyzeArgs {
    /// Events: a JSONL file (gzip accepted), a directory of them, or `-` for stdin.
    #[arg(long)]
    pub input: String,
    /// toolgate.toml; built-in defaults if absent.
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// How to render findings.
    #[arg(long, default_value = "jsonl", value_parser = toolgate_engine::outputs::parse_format)]
    pub format: FindingFormat,
    /// Where to write findings; stdout if absent or `-`.
    #[arg(long)]
    pub output: Option<String>,
    /// Where lines that fail to decode go (created only if one does); by default
    /// `<output>.dlq.jsonl`, or `toolgate-rejected.dlq.jsonl` when the output is not a
    /// file (stdout, `/dev/null`).
    #[arg(long)]
    pub dead_letter: Option<PathBuf>,
    /// Pinned tool definitions, read before and written after the run; overrides
    /// `[detectors.definitions] pins_file`.
    #[arg(long)]
    pub pins: Option<PathBuf>,
    /// Also write every event and finding to this Parquet history (a directory or
    /// `s3://bucket/prefix`), so the replay can be queried with `toolgate sql`.
    #[arg(long)]
    pub history: Option<String>,
}

/// `toolgate eval`.
#[derive(Debug, Args)]
pub struct EvalArgs {
    /// Events carrying an outcome label: a JSONL file, a directory, or `-`.
    #[arg(long)]
    pub input: String,
    /// toolgate.toml; built-in defaults if absent.
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// Label holding each session's ground truth: `attack_succeeded` (or `malicious`),
    /// `attack_failed` or `benign` (as `toolgate import` writes it).
    #[arg(long, default_value = "outcome")]
    pub outcome_label: String,
    /// Also break results down by these labels (repeatable); `a+b` breaks down by both
    /// at once (`suite+injection_task`).
    #[arg(long = "by", default_values = ["attack_type", "suite"])]
    pub by: Vec<String>,
    /// A session counts as flagged when it has a finding at least this severe.
    #[arg(long, default_value = "low", value_parser = parse_severity)]
    pub min_severity: Severity,
    /// Also write the report as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Where lines that fail to decode go; `toolgate-rejected.dlq.jsonl` by default.
    #[arg(long)]
    pub dead_letter: Option<PathBuf>,
}

fn parse_severity(s: &str) -> Result<Severity, String> {
    Severity::parse(s).ok_or_else(|| {
        format!("unknown severity {s:?}; expected info, low, medium, high or critical")
    })
}

#[cfg(test)]
mod tests {
    use super::parse_bytes;

    #[test]
    fn issue_19_sizes_parse_with_binary_units() {
        assert_eq!(parse_bytes("1GiB"), Ok(1 << 30));
        assert_eq!(parse_bytes("512MiB"), Ok(512 << 20));
        assert_eq!(parse_bytes("16M"), Ok(16 << 20));
        assert_eq!(parse_bytes("64kib"), Ok(64 << 10));
        assert_eq!(parse_bytes("1048576"), Ok(1 << 20));
        for bad in [
            "",
            "0",
            "0MiB",
            "1.5GiB",
            "12MB",
            "MiB",
            "-1",
            "99999999999999999999TiB",
        ] {
            assert!(parse_bytes(bad).is_err(), "{bad:?}");
        }
    }
}
