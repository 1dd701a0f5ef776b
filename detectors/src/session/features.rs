//! A session's behaviour as a fixed vector of numbers, the same for training
//! (`toolgate train`) and for scoring live sessions. Features are chosen to carry over
//! between roles and servers: counts, sizes, shares per trust domain and the shape of
//! the flow between domains, not tool names.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use toolgate_protocol::Event;
use toolgate_protocol::config::Config;
use toolgate_protocol::event::EventBody;

use crate::glob::GlobSet;
use crate::volume::size;

/// Most distinct tools, servers and targets remembered per session.
const MAX_DISTINCT: usize = 1024;

/// What decides which domains and arguments mean what.
#[derive(Debug, Clone)]
pub struct FeatureSpec {
    /// Every declared trust domain, in config order: one share feature each.
    pub domains: Vec<String>,
    /// Domains whose content outsiders write.
    pub untrusted: Vec<String>,
    /// Domains whose tools send data out.
    pub egress: Vec<String>,
    /// Argument names (globs) that say where a call acts: recipients, URLs, paths.
    pub targets: GlobSet,
}

impl FeatureSpec {
    /// The feature names, in vector order.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = [
            "ln_calls",
            "ln_distinct_tools",
            "ln_distinct_servers",
            "ln_duration_s",
            "ln_argument_bytes_per_call",
            "ln_result_bytes_per_result",
            "error_share",
            "ln_distinct_targets",
            "domain_switch_share",
            "ln_egress_after_untrusted",
            "share_read_tools",
            "share_change_tools",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        names.extend(self.domains.iter().map(|d| format!("share_{d}")));
        names
    }
}

/// Running totals of one session.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct SessionAccumulator {
    /// First event time (ns).
    pub first: i64,
    /// Last event time (ns).
    pub last: i64,
    calls: u64,
    results: u64,
    errors: u64,
    argument_bytes: u64,
    result_bytes: u64,
    tools: BTreeSet<String>,
    servers: BTreeSet<String>,
    domain_calls: BTreeMap<String, u64>,
    targets: BTreeSet<u64>,
    last_domain: Option<String>,
    switches: u64,
    untrusted_seen: bool,
    egress_after_untrusted: u64,
    read_calls: u64,
    change_calls: u64,
    /// Event ids kept as evidence (the first few calls).
    pub event_ids: Vec<String>,
}

/// What a tool does, by the verb its name starts with: the tool mix in a form that
/// carries over between roles whose tools have different names.
enum Verb {
    Read,
    Change,
}

const READ_VERBS: [&str; 10] = [
    "get", "read", "list", "search", "find", "fetch", "query", "lookup", "check", "download",
];
const CHANGE_VERBS: [&str; 16] = [
    "send", "post", "create", "update", "write", "add", "share", "delete", "remove", "reserve",
    "schedule", "pay", "transfer", "append", "upload", "invite",
];

fn verb_class(tool: &str) -> Option<Verb> {
    let first = tool
        .split(['_', '-', '.', '/'])
        .next()
        .unwrap_or("")
        .to_ascii_lowercase();
    if READ_VERBS.contains(&first.as_str()) {
        Some(Verb::Read)
    } else if CHANGE_VERBS.contains(&first.as_str()) {
        Some(Verb::Change)
    } else {
        None
    }
}

fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b.to_ascii_lowercase())).wrapping_mul(0x0100_0000_01b3)
    })
}

fn collect_targets(names: &GlobSet, args: &Map<String, Value>, out: &mut BTreeSet<u64>) {
    for (k, v) in args {
        match v {
            Value::String(s) if names.matches(Some(k)) && out.len() < MAX_DISTINCT => {
                out.insert(fnv(s));
            }
            Value::Array(items) if names.matches(Some(k)) => {
                for s in items.iter().filter_map(Value::as_str) {
                    if out.len() < MAX_DISTINCT {
                        out.insert(fnv(s));
                    }
                }
            }
            Value::Object(inner) => collect_targets(names, inner, out),
            _ => {}
        }
    }
}

impl SessionAccumulator {
    /// Calls seen.
    pub fn calls(&self) -> u64 {
        self.calls
    }

    /// Adds one event.
    pub fn add(&mut self, event: &Event, config: &Config, spec: &FeatureSpec) {
        let t = event.time.unix_nanos();
        if self.calls == 0 && self.results == 0 {
            self.first = t;
        }
        self.first = self.first.min(t);
        self.last = self.last.max(t);
        match &event.body {
            EventBody::ToolCall {
                server,
                tool,
                arguments,
                ..
            } => {
                self.calls += 1;
                self.argument_bytes += size::object_len(arguments);
                if self.tools.len() < MAX_DISTINCT {
                    self.tools.insert(format!("{server}/{tool}"));
                }
                if self.servers.len() < MAX_DISTINCT {
                    self.servers.insert(server.clone());
                }
                let domain = config.trust_domain_of(server, event.trust_domain.as_deref());
                *self.domain_calls.entry(domain.to_string()).or_default() += 1;
                if self.last_domain.as_deref().is_some_and(|d| d != domain) {
                    self.switches += 1;
                }
                self.last_domain = Some(domain.to_string());
                if self.untrusted_seen && spec.egress.iter().any(|d| d == domain) {
                    self.egress_after_untrusted += 1;
                }
                collect_targets(&spec.targets, arguments, &mut self.targets);
                match verb_class(tool) {
                    Some(Verb::Read) => self.read_calls += 1,
                    Some(Verb::Change) => self.change_calls += 1,
                    None => {}
                }
                if self.event_ids.len() < 8 {
                    self.event_ids.push(event.event_id.clone());
                }
            }
            EventBody::ToolResult { server, result, .. } => {
                self.results += 1;
                self.result_bytes += result.content.iter().map(size::json_len).sum::<u64>();
                if result.is_error == Some(true) {
                    self.errors += 1;
                }
                let domain = config.trust_domain_of(server, event.trust_domain.as_deref());
                if spec.untrusted.iter().any(|d| d == domain) {
                    self.untrusted_seen = true;
                }
            }
            _ => {}
        }
    }

    /// The feature vector (see [`FeatureSpec::names`]).
    pub fn vector(&self, spec: &FeatureSpec) -> Vec<f64> {
        let ln = |x: f64| (1.0 + x).ln();
        let calls = self.calls as f64;
        let mut v = vec![
            ln(calls),
            ln(self.tools.len() as f64),
            ln(self.servers.len() as f64),
            ln((self.last - self.first).max(0) as f64 / 1e9),
            ln(self.argument_bytes as f64 / calls.max(1.0)),
            ln(self.result_bytes as f64 / (self.results as f64).max(1.0)),
            self.errors as f64 / (self.results as f64).max(1.0),
            ln(self.targets.len() as f64),
            self.switches as f64 / (calls - 1.0).max(1.0),
            ln(self.egress_after_untrusted as f64),
            self.read_calls as f64 / calls.max(1.0),
            self.change_calls as f64 / calls.max(1.0),
        ];
        for d in &spec.domains {
            v.push(self.domain_calls.get(d).copied().unwrap_or(0) as f64 / calls.max(1.0));
        }
        v
    }
}
