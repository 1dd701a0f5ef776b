//! The `volume` detector: how much an agent, a session, a server or a tool does over a
//! sliding window, against static limits and limits learned per key; arguments far
//! larger than their schema type or their own history; and fleet-wide heavy hitters.
//!
//! Windows are rings of panes in event time ([`window`]). Distinct values of chosen
//! arguments (paths, URLs, recipients) are counted with Apache DataSketches
//! HyperLogLog, heavy hitters with its frequent-items sketch. Every event above a
//! limit raises a draft; the pipeline folds repeats into one finding with a count.
//! Events older than a key's window are counted as late
//! (`toolgate_volume_late_events_total`) and not added. State is bounded by
//! `max_keys` and `key_ttl` and restorable through snapshots.

pub mod settings;
pub mod size;
mod state;
pub mod window;

use std::collections::{BTreeMap, HashMap};

use datasketches::frequencies::{ErrorType, FrequentItemsSketch};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use toolgate_protocol::config::Config;
use toolgate_protocol::event::EventBody;
use toolgate_protocol::{DetectorKind, Event, FindingAction, Severity, Timestamp};

use crate::factory::{BuildError, Configured};
use crate::glob::GlobSet;
use crate::metrics::StateGauge;
use crate::{Detector, FindingDraft, StateError};
pub use settings::{HeavyItem, Metric, Scope, ThresholdConfig, VolumeSettings};
use window::{DistinctRing, DistinctState, Ewma, Placement, Ring};

/// The detector's name under `[detectors]`.
pub const NAME: &str = "volume";

/// Most empty panes fed to the moving averages after an idle gap; by then the mean has
/// decayed to nothing anyway.
const MAX_EMPTY_PANES: u32 = 1000;

impl Configured for VolumeDetector {
    const NAME: &'static str = NAME;
    const KIND: DetectorKind = DetectorKind::Volume;
    const SUMMARY: &'static str =
        "sliding-window counts, bytes and distinct values; learned limits; heavy hitters";
    type Settings = VolumeSettings;

    fn build(_config: &Config, s: VolumeSettings) -> Result<Self, BuildError> {
        VolumeDetector::new(s)
    }
}

fn invalid(message: impl Into<String>) -> BuildError {
    BuildError::Settings {
        name: NAME.into(),
        message: message.into(),
    }
}

const CALLS: usize = 0;
const ARG_BYTES: usize = 1;
const RESULT_BYTES: usize = 2;
const SCOPE_METRICS: [Metric; 3] = [Metric::Calls, Metric::ArgumentBytes, Metric::ResultBytes];

#[derive(Debug, Clone, Serialize, Deserialize)]
struct ScopeKey {
    last_seen: i64,
    ring: Ring,
    ewma: [Ewma; 3],
}

#[derive(Debug, Clone)]
enum Counter {
    Sum(Ring),
    Distinct(DistinctRing),
}

#[derive(Debug, Clone)]
struct ThresholdKey {
    last_seen: i64,
    counter: Counter,
}

struct Threshold {
    config: ThresholdConfig,
    servers: GlobSet,
    tools: GlobSet,
    arguments: GlobSet,
    keys: HashMap<Box<str>, ThresholdKey>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct ToolProfile {
    seq: u64,
    /// Top-level arguments with a size their schema type implies: (name, bytes, why).
    caps: Vec<(String, u64, String)>,
    /// Moving mean and variance of ln(1 + bytes) per argument.
    sizes: BTreeMap<String, Ewma>,
}

struct Heavy {
    interval: i64,
    sketch: FrequentItemsSketch<String>,
    /// Agent, session, server and tool of an item's latest call, for the finding.
    last: HashMap<String, [String; 4]>,
}

/// The volume detector.
pub struct VolumeDetector {
    s: VolumeSettings,
    pane_len: i64,
    scopes: BTreeMap<Scope, HashMap<Box<str>, ScopeKey>>,
    thresholds: Vec<Threshold>,
    tools: HashMap<Box<str>, ToolProfile>,
    tool_seq: u64,
    heavy: Option<Heavy>,
    watermark: i64,
    next_sweep: i64,
    late: u64,
    evicted: u64,
    key: String,
}

impl VolumeDetector {
    /// Builds the detector, checking the settings.
    pub fn new(s: VolumeSettings) -> Result<Self, BuildError> {
        if s.panes == 0 || s.panes > 1000 {
            return Err(invalid("`panes` must be between 1 and 1000"));
        }
        let pane_len = s.window.as_nanos() / s.panes as i64;
        if pane_len <= 0 {
            return Err(invalid("`window` must be longer than `panes` nanoseconds"));
        }
        if s.max_keys == 0 {
            return Err(invalid("`max_keys` must be at least 1"));
        }
        let a = &s.adaptive;
        if !(a.alpha > 0.0 && a.alpha <= 1.0) {
            return Err(invalid("`adaptive.alpha` must be in (0, 1]"));
        }
        if !(a.z > 0.0 && s.argument_size.z > 0.0) {
            return Err(invalid(
                "`adaptive.z` and `argument_size.z` must be above 0",
            ));
        }
        if s.argument_size.schema_factor.is_nan() || s.argument_size.schema_factor < 1.0 {
            return Err(invalid("`argument_size.schema_factor` must be at least 1"));
        }
        let h = &s.heavy_hitters;
        if h.enabled {
            if !h.max_map_size.is_power_of_two() || h.max_map_size < 8 {
                return Err(invalid(
                    "`heavy_hitters.max_map_size` must be a power of two, at least 8",
                ));
            }
            if h.interval.as_nanos() <= 0 {
                return Err(invalid("`heavy_hitters.interval` must be above zero"));
            }
            if !(h.min_share > 0.0 && h.min_share <= 1.0) {
                return Err(invalid("`heavy_hitters.min_share` must be in (0, 1]"));
            }
        }
        let mut thresholds = Vec::new();
        for (i, t) in s.thresholds.iter().enumerate() {
            if t.name.is_empty() {
                return Err(invalid(format!("`thresholds[{i}].name` is empty")));
            }
            if s.thresholds[..i].iter().any(|o| o.name == t.name) {
                return Err(invalid(format!(
                    "`thresholds[{i}].name`: {:?} is used twice",
                    t.name
                )));
            }
            match (t.metric, t.arguments.is_empty()) {
                (Metric::Distinct, true) => {
                    return Err(invalid(format!(
                        "`thresholds[{i}].arguments`: a `distinct` threshold must name the arguments whose values it counts"
                    )));
                }
                (Metric::Distinct, false) | (_, true) => {}
                (_, false) => {
                    return Err(invalid(format!(
                        "`thresholds[{i}].arguments` only applies to `metric = \"distinct\"`"
                    )));
                }
            }
            thresholds.push(Threshold {
                config: t.clone(),
                servers: GlobSet::new(&t.servers),
                tools: GlobSet::new(&t.tools),
                arguments: GlobSet::new_case_insensitive(&t.arguments),
                keys: HashMap::new(),
            });
        }
        let scopes = if a.enabled {
            a.scopes.iter().map(|&sc| (sc, HashMap::new())).collect()
        } else {
            BTreeMap::new()
        };
        let heavy = if h.enabled {
            Some(Heavy {
                interval: i64::MIN,
                sketch: new_frequent(h.max_map_size),
                last: HashMap::new(),
            })
        } else {
            None
        };
        Ok(VolumeDetector {
            pane_len,
            scopes,
            thresholds,
            tools: HashMap::new(),
            tool_seq: 0,
            heavy,
            watermark: i64::MIN,
            next_sweep: i64::MIN,
            late: 0,
            evicted: 0,
            key: String::new(),
            s,
        })
    }

    fn pane(&self, t: Timestamp) -> i64 {
        t.unix_nanos().div_euclid(self.pane_len)
    }

    fn keys(&self) -> usize {
        self.scopes.values().map(HashMap::len).sum::<usize>()
            + self.thresholds.iter().map(|t| t.keys.len()).sum::<usize>()
    }

    fn observe_traffic(&mut self, event: &Event, out: &mut Vec<FindingDraft>) {
        let (server, tool, metric, bytes, arguments) = match &event.body {
            EventBody::ToolCall {
                server,
                tool,
                arguments,
                ..
            } => (
                server.as_str(),
                tool.as_str(),
                ARG_BYTES,
                size::object_len(arguments),
                Some(arguments),
            ),
            EventBody::ToolResult {
                server,
                tool,
                result,
                ..
            } => {
                let mut bytes: u64 = result.content.iter().map(size::json_len).sum();
                if let Some(sc) = &result.structured_content {
                    bytes += size::object_len(sc);
                }
                (server.as_str(), tool.as_str(), RESULT_BYTES, bytes, None)
            }
            _ => return,
        };
        let pane = self.pane(event.time);
        let now = event.time.unix_nanos();
        // Older than any key's time to live at the watermark: no window it could fall
        // in is still held, and a key made for it would only wait for the next sweep.
        if now < self.watermark.saturating_sub(self.s.key_ttl.as_nanos()) {
            self.late += 1;
            return;
        }
        let is_call = arguments.is_some();
        let scope_list: Vec<Scope> = self.scopes.keys().copied().collect();
        for scope in scope_list {
            key_of(&mut self.key, scope, event, server, tool);
            let panes = self.s.panes;
            let alpha = self.s.adaptive.alpha;
            let fresh = !self.scopes[&scope].contains_key(self.key.as_str());
            if fresh {
                self.make_room();
            }
            let Some(map) = self.scopes.get_mut(&scope) else {
                continue;
            };
            let entry = if fresh {
                map.entry(self.key.clone().into_boxed_str())
                    .or_insert_with(|| ScopeKey {
                        last_seen: now,
                        ring: Ring::new(panes, 3, pane),
                        ewma: [Ewma::default(); 3],
                    })
            } else {
                match map.get_mut(self.key.as_str()) {
                    Some(e) => e,
                    None => continue,
                }
            };
            entry.last_seen = entry.last_seen.max(now);
            let ewma = &mut entry.ewma;
            entry.ring.roll(pane, MAX_EMPTY_PANES, |closed| {
                for (m, e) in ewma.iter_mut().enumerate() {
                    e.push(closed[m] as f64, alpha);
                }
            });
            let mut placed = entry.ring.add(pane, metric, bytes);
            if is_call {
                placed = entry.ring.add(pane, CALLS, 1);
            }
            if placed == Placement::Late {
                self.late += 1;
                continue;
            }
            let checks: &[usize] = if is_call {
                &[CALLS, ARG_BYTES]
            } else {
                &[RESULT_BYTES]
            };
            for &m in checks {
                if let Some(d) = spike(&self.s, scope, &self.key, entry, m, event) {
                    out.push(d);
                }
            }
        }
        self.check_thresholds(event, server, tool, pane, metric, bytes, arguments, out);
    }

    #[allow(clippy::too_many_arguments)]
    fn check_thresholds(
        &mut self,
        event: &Event,
        server: &str,
        tool: &str,
        pane: i64,
        metric: usize,
        bytes: u64,
        arguments: Option<&Map<String, Value>>,
        out: &mut Vec<FindingDraft>,
    ) {
        let now = event.time.unix_nanos();
        let mut values = Vec::new();
        for i in 0..self.thresholds.len() {
            let t = &self.thresholds[i];
            let wanted = match t.config.metric {
                Metric::Calls | Metric::ArgumentBytes | Metric::Distinct => arguments.is_some(),
                Metric::ResultBytes => metric == RESULT_BYTES,
            };
            if !wanted || !t.servers.matches(Some(server)) || !t.tools.matches(Some(tool)) {
                continue;
            }
            values.clear();
            if t.config.metric == Metric::Distinct
                && let Some(args) = arguments
            {
                collect_values(&t.arguments, args, &mut values);
                if values.is_empty() {
                    continue;
                }
            }
            key_of(&mut self.key, t.config.scope, event, server, tool);
            if !self.thresholds[i].keys.contains_key(self.key.as_str()) {
                self.make_room();
            }
            let panes = self.s.panes;
            let t = &mut self.thresholds[i];
            let entry = t
                .keys
                .entry(self.key.as_str().into())
                .or_insert_with(|| ThresholdKey {
                    last_seen: now,
                    counter: match t.config.metric {
                        Metric::Distinct => Counter::Distinct(DistinctRing::new(panes, pane)),
                        _ => Counter::Sum(Ring::new(panes, 1, pane)),
                    },
                });
            entry.last_seen = entry.last_seen.max(now);
            let (placed, value) = match &mut entry.counter {
                Counter::Sum(ring) => {
                    let v = if t.config.metric == Metric::Calls {
                        1
                    } else {
                        bytes
                    };
                    let p = ring.add(pane, 0, v);
                    (p, ring.sum(0) as f64)
                }
                Counter::Distinct(ring) => {
                    let mut p = Placement::InWindow;
                    for v in &values {
                        p = ring.add(pane, v);
                    }
                    (p, ring.estimate().round())
                }
            };
            if placed == Placement::Late {
                self.late += 1;
                continue;
            }
            if value > t.config.max as f64 {
                out.push(threshold_draft(
                    &self.s, t, &self.key, value, event, &values,
                ));
            }
        }
    }

    fn observe_definitions(&mut self, event: &Event) {
        let EventBody::ToolList { server, tools } = &event.body else {
            return;
        };
        for def in tools {
            let mut caps = Vec::new();
            if let Some(props) = def
                .input_schema
                .as_ref()
                .and_then(|s| s.get("properties"))
                .and_then(Value::as_object)
            {
                for (name, schema) in props {
                    if let Some((cap, why)) = size::implied_cap(schema) {
                        caps.push((name.clone(), cap, why));
                    }
                }
            }
            tool_key(&mut self.key, server, &def.name);
            self.tool_seq += 1;
            let seq = self.tool_seq;
            let profile = self.tools.entry(self.key.as_str().into()).or_default();
            profile.caps = caps;
            profile.seq = seq;
        }
        self.bound_tools();
    }

    fn bound_tools(&mut self) {
        let max = self.s.argument_size.max_tools;
        if self.tools.len() <= max {
            return;
        }
        let mut order: Vec<(u64, Box<str>)> =
            self.tools.iter().map(|(k, p)| (p.seq, k.clone())).collect();
        order.sort();
        let excess = self.tools.len() - max;
        for (_, k) in order.into_iter().take(excess.max(max / 10)) {
            self.tools.remove(&k);
        }
    }

    fn check_argument_sizes(&mut self, event: &Event, out: &mut Vec<FindingDraft>) {
        let EventBody::ToolCall {
            server,
            tool,
            arguments,
            ..
        } = &event.body
        else {
            return;
        };
        tool_key(&mut self.key, server, tool);
        if !self.tools.contains_key(self.key.as_str()) {
            self.tool_seq += 1;
            let seq = self.tool_seq;
            self.tools.insert(
                self.key.as_str().into(),
                ToolProfile {
                    seq,
                    ..ToolProfile::default()
                },
            );
            self.bound_tools();
        }
        let cfg = &self.s.argument_size;
        let Some(profile) = self.tools.get_mut(self.key.as_str()) else {
            return;
        };
        for (name, value) in arguments {
            let bytes = size::value_size(value);
            if let Some((_, cap, why)) = profile.caps.iter().find(|(n, _, _)| n == name)
                && bytes as f64 > *cap as f64 * cfg.schema_factor
            {
                out.push(
                    FindingDraft::about(DetectorKind::Volume, "argument_size_schema", event)
                        .describe(
                            format!("Argument `{name}` of {tool} is far larger than its type"),
                            format!(
                                "`{name}` carries {bytes} bytes, but the tool's schema declares it {why}, which needs at most {cap}: more than {}× that is how data is smuggled through a small field.",
                                cfg.schema_factor
                            ),
                        )
                        .rate(Severity::Medium, 55, 0.7)
                        .evidence(json!({
                            "argument": name, "bytes": bytes, "schema_type": why,
                            "implied_max_bytes": cap, "factor": cfg.schema_factor,
                        }))
                        .tags(["owasp-asi:ASI02", "atlas:AML.T0025"]),
                );
            }
            if profile.sizes.len() >= 256 && !profile.sizes.contains_key(name) {
                continue;
            }
            let ewma = profile.sizes.entry(name.clone()).or_default();
            let x = (1.0 + bytes as f64).ln();
            if ewma.n >= cfg.warmup_calls && bytes >= cfg.min_bytes {
                let std = ewma.std().max(0.5);
                let z = (x - ewma.mean) / std;
                if z >= cfg.z {
                    let usual = ewma.mean.exp() - 1.0;
                    out.push(
                        FindingDraft::about(DetectorKind::Volume, "argument_size_spike", event)
                            .describe(
                                format!("Argument `{name}` of {tool} is unusually large"),
                                format!(
                                    "`{name}` carries {bytes} bytes; its usual size is about {usual:.0} bytes (z = {z:.1} on log size over {} calls).",
                                    ewma.n
                                ),
                            )
                            .rate(Severity::Low, 40, 0.5)
                            .evidence(json!({
                                "argument": name, "bytes": bytes,
                                "usual_bytes": usual.round(), "z": round2(z),
                                "calls_learned": ewma.n,
                            }))
                            .tags(["owasp-asi:ASI02"]),
                    );
                }
            }
            ewma.push(x, self.s.adaptive.alpha.max(0.02));
        }
    }

    fn count_heavy(&mut self, event: &Event, out: &mut Vec<FindingDraft>) {
        let EventBody::ToolCall { server, tool, .. } = &event.body else {
            return;
        };
        let interval = event
            .time
            .unix_nanos()
            .div_euclid(self.s.heavy_hitters.interval.as_nanos());
        self.close_heavy(interval, out);
        let item_kind = self.s.heavy_hitters.item;
        let Some(h) = &mut self.heavy else {
            return;
        };
        if interval < h.interval {
            self.late += 1;
            return;
        }
        let item = match item_kind {
            HeavyItem::Agent => event.agent_id.clone(),
            HeavyItem::Server => server.clone(),
            HeavyItem::Tool => format!("{server}/{tool}"),
            HeavyItem::AgentTool => format!("{} {server}/{tool}", event.agent_id),
        };
        if h.last.len() < self.s.heavy_hitters.max_map_size * 4 || h.last.contains_key(&item) {
            h.last.insert(
                item.clone(),
                [
                    event.agent_id.clone(),
                    event.session_id.clone(),
                    server.clone(),
                    tool.clone(),
                ],
            );
        }
        h.sketch.update(item);
    }

    /// Reports the heavy hitters of every interval before `interval` and starts afresh.
    fn close_heavy(&mut self, interval: i64, out: &mut Vec<FindingDraft>) {
        let cfg = self.s.heavy_hitters.clone();
        let Some(h) = &mut self.heavy else {
            return;
        };
        if interval <= h.interval {
            return;
        }
        if h.interval != i64::MIN && !h.sketch.is_empty() {
            let total = h.sketch.total_weight();
            let end = Timestamp::from_unix_nanos(
                h.interval
                    .saturating_add(1)
                    .saturating_mul(cfg.interval.as_nanos()),
            );
            let mut rows = h.sketch.frequent_items(ErrorType::NoFalsePositives);
            rows.sort_by(|a, b| {
                b.lower_bound()
                    .cmp(&a.lower_bound())
                    .then(a.item().cmp(b.item()))
            });
            for row in rows {
                let share = row.lower_bound() as f64 / total as f64;
                if row.lower_bound() < cfg.min_count || share < cfg.min_share {
                    continue;
                }
                let [agent, session, server, tool] =
                    h.last.get(row.item()).cloned().unwrap_or_default();
                let fleet = matches!(cfg.item, HeavyItem::Server | HeavyItem::Tool);
                out.push(FindingDraft {
                    detector: DetectorKind::Volume,
                    rule_id: "heavy_hitter".into(),
                    group_key: row.item().clone(),
                    time: end,
                    title: format!("{} made {:.0}% of the fleet's calls", row.item(), share * 100.0),
                    description: format!(
                        "In the {} ending {end}, {} accounted for at least {} of {total} tool calls across the fleet ({:.1}%; frequent-items sketch, no false positives).",
                        cfg.interval, row.item(), row.lower_bound(), share * 100.0
                    ),
                    severity: Severity::Low,
                    risk_score: 35,
                    confidence: 0.8,
                    agent_id: if fleet { "*".into() } else { agent },
                    session_id: if fleet { "*".into() } else { session },
                    server: (!server.is_empty()).then_some(server),
                    tool: (!tool.is_empty() && !matches!(cfg.item, HeavyItem::Agent | HeavyItem::Server)).then_some(tool),
                    call_id: None,
                    event_ids: Vec::new(),
                    evidence: json!({
                        "item": row.item(), "item_kind": format!("{:?}", cfg.item).to_lowercase(),
                        "calls_lower_bound": row.lower_bound(), "calls_upper_bound": row.upper_bound(),
                        "fleet_calls": total, "share": round2(share),
                        "interval": cfg.interval.to_string(),
                    }),
                    tags: vec!["owasp-asi:ASI08".into()],
                    action: FindingAction::Alert,
                });
            }
        }
        h.sketch = new_frequent(cfg.max_map_size);
        h.last.clear();
        h.interval = interval;
    }

    /// Keeps the key count under `max_keys`: the longest idle tenth go.
    fn make_room(&mut self) {
        let total = self.keys();
        if total < self.s.max_keys {
            return;
        }
        let mut idle: Vec<(i64, usize, Box<str>)> = Vec::with_capacity(total);
        for (i, map) in self.scopes.values().enumerate() {
            idle.extend(map.iter().map(|(k, v)| (v.last_seen, i, k.clone())));
        }
        let base = self.scopes.len();
        for (i, t) in self.thresholds.iter().enumerate() {
            idle.extend(
                t.keys
                    .iter()
                    .map(|(k, v)| (v.last_seen, base + i, k.clone())),
            );
        }
        idle.sort();
        let drop = (total + 1 - self.s.max_keys)
            .max(self.s.max_keys / 10)
            .min(total);
        let scopes: Vec<Scope> = self.scopes.keys().copied().collect();
        for (_, table, key) in idle.into_iter().take(drop) {
            if table < base {
                if let Some(m) = self.scopes.get_mut(&scopes[table]) {
                    m.remove(&key);
                }
            } else {
                self.thresholds[table - base].keys.remove(&key);
            }
            self.evicted += 1;
        }
    }

    fn sweep(&mut self, watermark: i64) {
        let horizon = watermark.saturating_sub(self.s.key_ttl.as_nanos());
        for map in self.scopes.values_mut() {
            map.retain(|_, k| k.last_seen >= horizon);
        }
        for t in &mut self.thresholds {
            t.keys.retain(|_, k| k.last_seen >= horizon);
        }
    }
}

fn new_frequent(max_map_size: usize) -> FrequentItemsSketch<String> {
    match FrequentItemsSketch::new(max_map_size) {
        Ok(s) => s,
        Err(_) => unreachable!("max_map_size was checked to be a power of two"),
    }
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

fn key_of(buf: &mut String, scope: Scope, event: &Event, server: &str, tool: &str) {
    buf.clear();
    match scope {
        Scope::Agent => buf.push_str(&event.agent_id),
        Scope::Session => {
            buf.push_str(&event.agent_id);
            buf.push('/');
            buf.push_str(&event.session_id);
        }
        Scope::Server => buf.push_str(server),
        Scope::Tool => tool_key(buf, server, tool),
    }
}

fn tool_key(buf: &mut String, server: &str, tool: &str) {
    buf.clear();
    buf.push_str(server);
    buf.push('/');
    buf.push_str(tool);
}

/// String and number values under argument names matching `names`, at any depth
/// (elements of a matching array count one by one).
fn collect_values(names: &GlobSet, args: &Map<String, Value>, out: &mut Vec<String>) {
    fn take(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::String(s) => out.push(s.clone()),
            Value::Number(n) => out.push(n.to_string()),
            Value::Array(items) => items.iter().for_each(|i| take(i, out)),
            _ => {}
        }
    }
    for (k, v) in args {
        if names.matches(Some(k)) {
            take(v, out);
        } else if let Value::Object(inner) = v {
            collect_values(names, inner, out);
        } else if let Value::Array(items) = v {
            for item in items {
                if let Value::Object(inner) = item {
                    collect_values(names, inner, out);
                }
            }
        }
    }
}

fn spike(
    s: &VolumeSettings,
    scope: Scope,
    key: &str,
    entry: &ScopeKey,
    m: usize,
    event: &Event,
) -> Option<FindingDraft> {
    let a = &s.adaptive;
    let e = entry.ewma[m];
    if e.n < a.warmup_panes {
        return None;
    }
    let value = entry.ring.sum(m);
    let floor = match m {
        CALLS => a.min_calls,
        ARG_BYTES => a.min_argument_bytes,
        _ => a.min_result_bytes,
    };
    if value < floor {
        return None;
    }
    let p = s.panes as f64;
    let expected = p * e.mean;
    // Independent panes: the window's variance is P times a pane's. A floor of a tenth
    // of the expected value keeps perfectly regular traffic from making every extra
    // call a spike.
    let std = (p * e.var.max(0.0)).sqrt().max(0.1 * expected + 1.0);
    let z = (value as f64 - expected) / std;
    if z < a.z {
        return None;
    }
    let metric = SCOPE_METRICS[m];
    Some(
        FindingDraft::about(DetectorKind::Volume, "volume_spike", event)
            .group_by(format!("{}\u{1f}{key}\u{1f}{}", scope.as_str(), metric.as_str()))
            .describe(
                format!("{} spike for {} {key}", metric.as_str(), scope.as_str()),
                format!(
                    "{value} {} in the last {} for {} {key}, where {expected:.0} is usual (z = {z:.1}, learned over {} panes).",
                    metric.as_str(),
                    s.window,
                    scope.as_str(),
                    e.n
                ),
            )
            .rate(
                if z >= 2.0 * a.z { Severity::High } else { Severity::Medium },
                if z >= 2.0 * a.z { 70 } else { 50 },
                (1.0 - a.z / z / 2.0).clamp(0.5, 0.95),
            )
            .evidence(json!({
                "scope": scope.as_str(), "key": key, "metric": metric.as_str(),
                "window": s.window.to_string(), "value": value,
                "expected": round2(expected), "std": round2(std), "z": round2(z),
                "panes_learned": e.n,
            }))
            .tags(["owasp-asi:ASI08"]),
    )
}

fn threshold_draft(
    s: &VolumeSettings,
    t: &Threshold,
    key: &str,
    value: f64,
    event: &Event,
    values: &[String],
) -> FindingDraft {
    let c = &t.config;
    let what = match c.metric {
        Metric::Distinct => format!("distinct values of {}", c.arguments.join(", ")),
        m => m.as_str().replace('_', " "),
    };
    let mut evidence = json!({
        "threshold": c.name, "scope": c.scope.as_str(), "key": key,
        "metric": c.metric.as_str(), "value": value, "max": c.max,
        "window": s.window.to_string(),
    });
    if c.metric == Metric::Distinct {
        evidence["estimator"] = json!("hyperloglog (lg_k 10)");
        evidence["latest_values"] = json!(values.iter().take(3).collect::<Vec<_>>());
    }
    let mut d = FindingDraft::about(DetectorKind::Volume, "volume_threshold", event)
        .group_by(format!("{}\u{1f}{}\u{1f}{key}", c.name, c.scope.as_str()))
        .describe(
            format!("{}: {value:.0} {what} for {} {key}", c.name, c.scope.as_str()),
            format!(
                "{value:.0} {what} in the last {} for {} {key}, above the limit of {} set by threshold `{}`.",
                s.window,
                c.scope.as_str(),
                c.max,
                c.name
            ),
        )
        .rate(c.severity, severity_score(c.severity), 0.9)
        .evidence(evidence)
        .tags(["owasp-asi:ASI08"]);
    if c.action == FindingAction::Block {
        d = d.block();
    }
    d
}

fn severity_score(s: Severity) -> u8 {
    match s {
        Severity::Info => 10,
        Severity::Low => 30,
        Severity::Medium => 50,
        Severity::High => 75,
        Severity::Critical => 95,
    }
}

impl Detector for VolumeDetector {
    fn name(&self) -> &'static str {
        NAME
    }

    fn observe(&mut self, event: &Event, out: &mut Vec<FindingDraft>) {
        match event.body {
            EventBody::ToolList { .. } if self.s.argument_size.enabled => {
                self.observe_definitions(event);
            }
            EventBody::ToolCall { .. } => {
                self.observe_traffic(event, out);
                if self.s.argument_size.enabled {
                    self.check_argument_sizes(event, out);
                }
                if self.heavy.is_some() {
                    self.count_heavy(event, out);
                }
            }
            EventBody::ToolResult { .. } => self.observe_traffic(event, out),
            _ => {}
        }
    }

    fn advance(&mut self, watermark: Timestamp, out: &mut Vec<FindingDraft>) {
        let w = watermark.unix_nanos();
        self.watermark = self.watermark.max(w);
        if self.heavy.is_some() {
            // An interval is reported once the watermark has passed its end.
            let interval = w.div_euclid(self.s.heavy_hitters.interval.as_nanos());
            self.close_heavy(interval, out);
        }
        if w >= self.next_sweep {
            self.sweep(w);
            self.next_sweep = w.saturating_add(self.pane_len.max(1_000_000_000));
        }
    }

    fn snapshot(&self) -> Result<Vec<u8>, StateError> {
        self.encode_state()
    }

    fn restore(&mut self, snapshot: &[u8]) -> Result<(), StateError> {
        self.decode_state(snapshot)
    }

    fn gauges(&self, out: &mut Vec<(StateGauge, u64)>) {
        let bytes: usize = self
            .scopes
            .values()
            .flat_map(|m| m.iter())
            .map(|(k, v)| k.len() + v.ring.heap_bytes() + std::mem::size_of::<ScopeKey>())
            .sum::<usize>()
            + self
                .thresholds
                .iter()
                .flat_map(|t| t.keys.iter())
                .map(|(k, v)| {
                    k.len()
                        + std::mem::size_of::<ThresholdKey>()
                        + match &v.counter {
                            Counter::Sum(r) => r.heap_bytes(),
                            Counter::Distinct(d) => d.heap_bytes(),
                        }
                })
                .sum::<usize>();
        out.push((StateGauge::VolumeKeys, self.keys() as u64));
        out.push((StateGauge::VolumeBytes, bytes as u64));
        out.push((StateGauge::VolumeTools, self.tools.len() as u64));
        out.push((StateGauge::VolumeLateEvents, self.late));
        out.push((StateGauge::VolumeEvictedKeys, self.evicted));
    }
}
