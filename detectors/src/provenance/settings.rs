//! `[detectors.provenance]`.

use serde::Deserialize;
use toolgate_protocol::Duration;

use crate::mode::Mode;

/// `[detectors.provenance]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProvenanceSettings {
    /// How long (event time) returned data is remembered and can be matched.
    #[serde(default = "default_horizon")]
    pub horizon: Duration,
    /// `monitor` (alerts) or `enforce` (findings ask for a block of the call).
    #[serde(default)]
    pub mode: Mode,
    /// Domains whose content outsiders can write (web pages, incoming mail, reviews):
    /// values found only there must not choose where an egress call sends data.
    #[serde(default = "default_untrusted")]
    pub untrusted_domains: Vec<String>,
    /// Source domains whose data leaving is `critical` rather than `high`.
    #[serde(default = "default_critical")]
    pub critical_domains: Vec<String>,
    /// Domains whose tools send data or value out: every call to them is egress.
    #[serde(default = "default_egress_domains")]
    pub egress_domains: Vec<String>,
    /// More egress tools, wherever their server sits, each with its destination
    /// arguments.
    #[serde(default)]
    pub egress: Vec<EgressClass>,
    /// Argument names (case-insensitive globs on the last key of the path) that say
    /// where an egress call sends data.
    #[serde(default = "default_destinations")]
    pub destination_arguments: Vec<String>,
    /// A forbidden flow whose every destination the user named in the session (an
    /// address in the user's own message) is the user's decision: reported as `info`,
    /// never blocked. The hijack this detector looks for is the agent's, not the user's.
    #[serde(default = "yes")]
    pub trust_user_destinations: bool,
    /// Flows allowed although `[trust] forbidden_flows` forbids them.
    #[serde(default)]
    pub allow: Vec<FlowException>,
    /// Share (0–1) of the shorter side's shingles that must be found in the other for a
    /// text match: the argument in a chunk of the source, or the chunk in the argument.
    #[serde(default = "default_min_containment")]
    pub min_containment: f64,
    /// Fewest characters (of normal form) two texts must share to match at all.
    #[serde(default = "default_min_shared_chars")]
    pub min_shared_chars: usize,
    /// A copied run at least this long (characters of normal form) matches whatever
    /// surrounds it, even below `min_containment`: a paragraph pasted into a long email.
    #[serde(default = "default_min_copied_chars")]
    pub min_copied_chars: usize,
    /// Contact atoms (emails, URLs, phones, paths) from one source that make a flow on
    /// their own; a single data atom (id, account, key) always does.
    #[serde(default = "default_min_contact_atoms")]
    pub min_contact_atoms: usize,
    /// Characters of a matched argument shown in a finding; the rest is cut.
    #[serde(default = "default_max_fragment_chars")]
    pub max_fragment_chars: usize,
    /// Most bytes of one event's values read (decoded layers included).
    #[serde(default = "default_max_scan_bytes")]
    pub max_scan_bytes: usize,
    /// Most bytes of normal form indexed per agent; its oldest entries go first.
    #[serde(default = "default_max_bytes_per_agent")]
    pub max_bytes_per_agent: usize,
    /// Most results and messages indexed per agent.
    #[serde(default = "default_max_entries_per_agent")]
    pub max_entries_per_agent: usize,
    /// Most bytes of normal form indexed over the whole fleet; the oldest go first.
    #[serde(default = "default_max_bytes_total")]
    pub max_bytes_total: usize,
    /// Most calls remembered between call and result for derived labels.
    #[serde(default = "default_max_pending_calls")]
    pub max_pending_calls: usize,
}

/// Tools that send data out, beyond the egress domains.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EgressClass {
    /// Server globs.
    #[serde(default = "any")]
    pub servers: Vec<String>,
    /// Tool globs, e.g. `send_*`, `post_*`, `upload_*`.
    pub tools: Vec<String>,
    /// Destination argument globs for these tools; empty means `destination_arguments`.
    #[serde(default)]
    pub destinations: Vec<String>,
}

/// A flow the policy forbids but this deployment allows, for some tools and sizes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlowException {
    /// Name shown when the exception is used.
    pub id: String,
    /// Source domain; any if absent.
    #[serde(default)]
    pub from: Option<String>,
    /// Destination domain; any if absent.
    #[serde(default)]
    pub to: Option<String>,
    /// Destination server globs.
    #[serde(default = "any")]
    pub servers: Vec<String>,
    /// Destination tool globs.
    #[serde(default = "any")]
    pub tools: Vec<String>,
    /// Largest matched argument (bytes) the exception covers; any size if absent.
    #[serde(default)]
    pub max_bytes: Option<usize>,
}

fn yes() -> bool {
    true
}
fn any() -> Vec<String> {
    vec!["*".into()]
}
fn default_horizon() -> Duration {
    Duration::from_secs(3600)
}
fn default_untrusted() -> Vec<String> {
    vec!["untrusted".into()]
}
fn default_critical() -> Vec<String> {
    vec!["secret".into()]
}
fn default_egress_domains() -> Vec<String> {
    vec!["external".into()]
}
fn default_destinations() -> Vec<String> {
    [
        "to",
        "cc",
        "bcc",
        "recipient*",
        "email",
        "emails",
        "address",
        "*_address",
        "url",
        "urls",
        "uri",
        "link",
        "endpoint",
        "webhook*",
        "host",
        "domain",
        "iban",
        "*_iban",
        "account*",
        "*_account",
        "path",
        "*_path",
        "destination*",
        "target",
        "channel*",
        "participants",
        "phone*",
        "number",
        "share_with",
        "user",
        "username",
    ]
    .map(String::from)
    .to_vec()
}
fn default_min_containment() -> f64 {
    0.6
}
fn default_min_shared_chars() -> usize {
    40
}
fn default_min_copied_chars() -> usize {
    120
}
fn default_min_contact_atoms() -> usize {
    3
}
fn default_max_fragment_chars() -> usize {
    48
}
fn default_max_scan_bytes() -> usize {
    256 * 1024
}
fn default_max_bytes_per_agent() -> usize {
    8 << 20
}
fn default_max_entries_per_agent() -> usize {
    10_000
}
fn default_max_bytes_total() -> usize {
    1 << 30
}
fn default_max_pending_calls() -> usize {
    100_000
}
