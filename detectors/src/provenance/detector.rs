//! The detector: indexes what results and users said, judges what calls send.

use std::collections::{BTreeMap, HashMap, VecDeque};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use toolgate_protocol::config::Config;
use toolgate_protocol::event::EventBody;
use toolgate_protocol::{DetectorKind, Event, Severity, Timestamp};

use super::NAME;
use super::atoms::{self, Atom};
use super::index::{Caps, ChunkRef, Index, IndexStats, SnapshotEntry, Source};
use super::settings::{EgressClass, FlowException, ProvenanceSettings};
use super::sketch;
use super::text::{self, Leaf};
use crate::factory::{BuildError, Configured};
use crate::glob::Glob;
use crate::metrics::StateGauge;
use crate::mode::Mode;
use crate::{Detector, FindingDraft, StateError};

mod findings;

/// Label bit of what a user said: trusted for destinations, never a forbidden source.
const USER_BIT: u64 = 1 << 63;
/// Most trust domains (bits 0..63 of a label set).
const MAX_DOMAINS: usize = 63;
/// Sources listed per finding.
const MAX_SOURCES_SHOWN: usize = 5;
/// Derived-from ids kept per indexed entry.
const MAX_DERIVED: usize = 4;

impl Configured for ProvenanceDetector {
    const NAME: &'static str = NAME;
    const KIND: DetectorKind = DetectorKind::Provenance;
    const SUMMARY: &'static str = "data crossing trust domains between servers, and egress destinations taken from untrusted content";
    type Settings = ProvenanceSettings;

    fn build(config: &Config, s: ProvenanceSettings) -> Result<Self, BuildError> {
        ProvenanceDetector::new(config, s)
    }
}

struct Egress {
    servers: Vec<Glob>,
    tools: Vec<Glob>,
    destinations: Vec<Glob>,
}

struct Exception {
    id: String,
    from: Option<String>,
    to: Option<String>,
    servers: Vec<Glob>,
    tools: Vec<Glob>,
    max_bytes: Option<usize>,
}

struct Pending {
    labels: u64,
    sources: Vec<String>,
    time: Timestamp,
}

/// See the module documentation of [`crate::provenance`].
pub struct ProvenanceDetector {
    config: Config,
    settings: ProvenanceSettings,
    domains: Vec<String>,
    untrusted_mask: u64,
    egress_domains: Vec<String>,
    egress: Vec<Egress>,
    destinations: Vec<Glob>,
    exceptions: Vec<Exception>,
    index: Index,
    pending: HashMap<String, Pending>,
    pending_order: VecDeque<(String, Timestamp)>,
    /// Data older than this is past the horizon: a late result is not indexed at all,
    /// or replaying a backlog would grow the index without bound between watermarks.
    forget_before: Option<Timestamp>,
}

fn globs(key: &str, patterns: &[String], case_insensitive: bool) -> Result<Vec<Glob>, BuildError> {
    if patterns.iter().any(|p| p.is_empty()) {
        return Err(BuildError::Settings {
            name: NAME.into(),
            message: format!("`{key}`: a pattern is empty"),
        });
    }
    Ok(patterns
        .iter()
        .map(|p| {
            if case_insensitive {
                Glob::new_case_insensitive(p)
            } else {
                Glob::new(p)
            }
        })
        .collect())
}

impl ProvenanceDetector {
    /// Builds the detector, checking every domain the settings name against `[trust]`.
    pub fn new(config: &Config, s: ProvenanceSettings) -> Result<Self, BuildError> {
        let invalid = |message: String| BuildError::Settings {
            name: NAME.into(),
            message,
        };
        let known = |key: &str, d: &str| {
            if config.trust.domains.iter().any(|k| k == d) {
                Ok(())
            } else {
                Err(invalid(format!(
                    "`{key}`: unknown trust domain {d:?}; `[trust] domains` has {}",
                    config.trust.domains.join(", ")
                )))
            }
        };
        for d in &s.untrusted_domains {
            known("untrusted_domains", d)?;
        }
        for d in &s.egress_domains {
            known("egress_domains", d)?;
        }
        for d in &s.critical_domains {
            known("critical_domains", d)?;
        }
        if !(0.0..=1.0).contains(&s.min_containment) || s.min_containment.is_nan() {
            return Err(invalid(format!(
                "`min_containment` must be between 0 and 1, found {}",
                s.min_containment
            )));
        }
        if s.min_shared_chars < sketch::SHINGLE {
            return Err(invalid(format!(
                "`min_shared_chars` must be at least {}",
                sketch::SHINGLE
            )));
        }
        let egress = s
            .egress
            .iter()
            .enumerate()
            .map(|(i, c): (usize, &EgressClass)| {
                if c.tools.is_empty() {
                    return Err(invalid(format!("`egress[{i}].tools` is empty")));
                }
                Ok(Egress {
                    servers: globs(&format!("egress[{i}].servers"), &c.servers, false)?,
                    tools: globs(&format!("egress[{i}].tools"), &c.tools, false)?,
                    destinations: globs(
                        &format!("egress[{i}].destinations"),
                        &c.destinations,
                        true,
                    )?,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut exceptions = Vec::new();
        for (i, e) in s.allow.iter().enumerate() {
            let e: &FlowException = e;
            for (key, d) in [("from", &e.from), ("to", &e.to)] {
                if let Some(d) = d {
                    known(&format!("allow[{i}].{key}"), d)?;
                }
            }
            exceptions.push(Exception {
                id: e.id.clone(),
                from: e.from.clone(),
                to: e.to.clone(),
                servers: globs(&format!("allow[{i}].servers"), &e.servers, false)?,
                tools: globs(&format!("allow[{i}].tools"), &e.tools, false)?,
                max_bytes: e.max_bytes,
            });
        }
        let destinations = globs("destination_arguments", &s.destination_arguments, true)?;
        let caps = Caps {
            horizon: s.horizon,
            max_bytes_per_agent: s.max_bytes_per_agent,
            max_entries_per_agent: s.max_entries_per_agent.max(1),
            max_bytes_total: s.max_bytes_total,
        };
        let mut detector = ProvenanceDetector {
            config: config.clone(),
            egress_domains: s.egress_domains.clone(),
            settings: s,
            domains: Vec::new(),
            untrusted_mask: 0,
            egress,
            destinations,
            exceptions,
            index: Index::new(caps),
            pending: HashMap::new(),
            pending_order: VecDeque::new(),
            forget_before: None,
        };
        for d in config.trust.domains.clone() {
            detector.intern(&d);
        }
        detector.untrusted_mask = detector
            .settings
            .untrusted_domains
            .clone()
            .iter()
            .fold(0, |m, d| m | (1 << detector.intern(d)));
        Ok(detector)
    }

    /// The index's current sizes, for metrics.
    pub fn stats(&self) -> IndexStats {
        self.index.stats()
    }

    fn intern(&mut self, domain: &str) -> u8 {
        if let Some(i) = self.domains.iter().position(|d| d == domain) {
            return i as u8;
        }
        if self.domains.len() >= MAX_DOMAINS {
            // More domains than bits: the rest count as the default domain.
            let default = self.config.trust.default_domain.clone();
            return self.domains.iter().position(|d| *d == default).unwrap_or(0) as u8;
        }
        self.domains.push(domain.to_string());
        (self.domains.len() - 1) as u8
    }

    fn domain_of(&mut self, server: &str, reported: Option<&str>) -> u8 {
        let d = self.config.trust_domain_of(server, reported);
        if let Some(i) = self.domains.iter().position(|k| k == d) {
            return i as u8;
        }
        let d = d.to_string();
        self.intern(&d)
    }

    fn label_names(&self, labels: u64) -> Vec<String> {
        let mut names: Vec<String> = (0..self.domains.len())
            .filter(|i| labels & (1 << i) != 0)
            .map(|i| self.domains[i].clone())
            .collect();
        if labels & USER_BIT != 0 {
            names.push("user".into());
        }
        names
    }

    fn pending_key(agent: &str, call: &str) -> String {
        format!("{agent}\u{1f}{call}")
    }

    fn expire_pending(&mut self, cutoff: Option<Timestamp>) {
        while let Some((key, time)) = self.pending_order.front() {
            let over_cap = self.pending.len() > self.settings.max_pending_calls;
            let expired = cutoff.is_some_and(|c| *time < c);
            if !over_cap && !expired {
                break;
            }
            if let Some(p) = self.pending.get(key)
                && p.time == *time
            {
                self.pending.remove(key);
            }
            self.pending_order.pop_front();
        }
    }

    fn index_event(&mut self, event: &Event, mut source: Source, leaves: &[Leaf], chunks: bool) {
        if self.forget_before.is_some_and(|c| event.time < c) {
            return;
        }
        // Agents re-read the same files and lists all the time. A copy with the same
        // labels seen within half the horizon is already there; older ones are indexed
        // again so that what was read recently is remembered for the whole horizon.
        source.content = sketch::content_hash(leaves.iter().map(|l| l.text.as_bytes()));
        let half = toolgate_protocol::Duration::from_nanos(self.settings.horizon.as_nanos() / 2);
        if self.index.holds_copy(
            &event.agent_id,
            source.content,
            source.labels,
            event.time.saturating_sub(half),
        ) {
            return;
        }
        let mut atoms_found = Vec::new();
        for leaf in leaves {
            atoms::extract_placed(&leaf.text, &mut atoms_found);
        }
        let mut keys: Vec<(u64, bool)> = atoms_found
            .iter()
            .map(|(a, prose)| (atom_key(a), *prose))
            .collect();
        // One posting per atom; prose wins over a record.
        keys.sort_by_key(|&(k, prose)| (k, !prose));
        keys.dedup_by_key(|(k, _)| *k);
        let mut sketches = Vec::new();
        let mut bytes = keys.len() * 8;
        if chunks {
            let mut buf = Vec::new();
            for leaf in leaves {
                text::normalize_into(&leaf.text, &mut buf);
            }
            bytes += buf.len();
            sketches = sketch::index_chunks(&buf)
                .into_iter()
                .filter_map(|(s, e)| sketch::sketch(&buf[s..e]))
                .collect();
        }
        if sketches.is_empty() && keys.is_empty() {
            return;
        }
        self.index
            .insert(&event.agent_id, source, sketches, &keys, bytes);
    }

    fn observe_result(
        &mut self,
        event: &Event,
        server: &str,
        call_id: &str,
        tool: &str,
        result: &toolgate_protocol::event::ToolResult,
    ) {
        let own = self.domain_of(server, event.trust_domain.as_deref());
        let inherited = self
            .pending
            .remove(&Self::pending_key(&event.agent_id, call_id));
        let (labels, derived_from) = match inherited {
            Some(p) => ((1 << own) | p.labels, p.sources),
            None => (1 << own, Vec::new()),
        };
        let mut leaves = Vec::new();
        let budget = self.settings.max_scan_bytes;
        for (i, block) in result.content.iter().enumerate() {
            let path = format!("result.content[{i}]");
            match block.get("text").and_then(Value::as_str) {
                Some(t) => text::leaves_of_text(&path, "text", t, budget, &mut leaves),
                None => text::leaves_of_value(&path, "content", block, budget, &mut leaves),
            }
        }
        if let Some(s) = &result.structured_content {
            text::leaves_of_map("result.structuredContent", s, budget, &mut leaves);
        }
        let source = Source {
            event_id: event.event_id.clone(),
            session: event.session_id.clone(),
            server: server.to_string(),
            tool: tool.to_string(),
            domain: own,
            labels,
            time: event.time,
            derived_from,
            content: 0,
        };
        self.index_event(event, source, &leaves, true);
    }

    fn observe_user(&mut self, event: &Event, message: &str) {
        let mut leaves = Vec::new();
        text::leaves_of_text(
            "text",
            "text",
            message,
            self.settings.max_scan_bytes,
            &mut leaves,
        );
        let source = Source {
            event_id: event.event_id.clone(),
            session: event.session_id.clone(),
            server: String::new(),
            tool: String::new(),
            domain: u8::MAX,
            labels: USER_BIT,
            time: event.time,
            derived_from: Vec::new(),
            content: 0,
        };
        // What the user said only vouches for destinations; its text is the user's own.
        self.index_event(event, source, &leaves, false);
    }

    fn egress_destinations(&self, server: &str, tool: &str, domain: &str) -> Option<&[Glob]> {
        for class in &self.egress {
            if class.servers.iter().any(|g| g.matches(server))
                && class.tools.iter().any(|g| g.matches(tool))
            {
                return Some(if class.destinations.is_empty() {
                    &self.destinations
                } else {
                    &class.destinations
                });
            }
        }
        self.egress_domains
            .iter()
            .any(|d| d == domain)
            .then_some(&self.destinations[..])
    }

    fn observe_call(
        &mut self,
        event: &Event,
        server: &str,
        call_id: &str,
        tool: &str,
        arguments: &serde_json::Map<String, Value>,
        out: &mut Vec<FindingDraft>,
    ) {
        let to = self.domain_of(server, event.trust_domain.as_deref());
        let to_name = self.domains[usize::from(to)].clone();
        let agent = event.agent_id.as_str();
        let mut leaves = Vec::new();
        text::leaves_of_map(
            "arguments",
            arguments,
            self.settings.max_scan_bytes,
            &mut leaves,
        );
        if leaves.is_empty() {
            return;
        }
        // Which leaves name where this call sends data (none unless it is egress).
        let egress = self.egress_destinations(server, tool, &to_name);
        let destination: Vec<bool> = leaves
            .iter()
            .map(|l| egress.is_some_and(|g| g.iter().any(|g| g.matches(&l.key))))
            .collect();
        let egress = egress.is_some();

        let mut matches: BTreeMap<u64, SourceMatch> = BTreeMap::new();
        // A destination is where data goes, not data, unless it is long enough to carry
        // some (a URL with a document in its query string).
        let long = self.settings.min_copied_chars;
        let data_leaves: Vec<bool> = leaves
            .iter()
            .zip(&destination)
            .map(|(l, &d)| !l.redundant && (!d || l.text.len() >= long))
            .collect();
        self.match_text(agent, &leaves, &data_leaves, &mut matches);
        let mut dest_atoms: Vec<DestinationAtom> = Vec::new();
        for (i, leaf) in leaves.iter().enumerate() {
            let mut found = Vec::new();
            atoms::extract(&leaf.text, &mut found);
            let destination = destination[i];
            for atom in found {
                let mut entries = Vec::new();
                self.index
                    .atom_sources(agent, atom_key(&atom), &mut entries);
                for &(seq, _) in &entries {
                    // A destination is where data goes, not data: it only passes labels on.
                    let m = matches.entry(seq).or_default();
                    if !destination && !m.atoms.contains(&atom) {
                        m.atoms.push(atom.clone());
                        m.atom_leaf.get_or_insert(i);
                    }
                }
                if destination {
                    dest_atoms.push(DestinationAtom {
                        leaf: i,
                        atom,
                        sources: entries,
                    });
                }
            }
        }

        // Derived data: whatever the call carried, its result carries.
        let mut labels = 0u64;
        let mut carried = Vec::new();
        for (&seq, _) in matches.iter().rev() {
            if let Some(src) = self.index.source(agent, seq) {
                labels |= src.labels & !USER_BIT;
                if src.labels & !USER_BIT != 0 && carried.len() < MAX_DERIVED {
                    carried.push(src.event_id.clone());
                }
            }
        }
        if labels != 0 {
            let key = Self::pending_key(agent, call_id);
            self.pending.insert(
                key.clone(),
                Pending {
                    labels,
                    sources: carried,
                    time: event.time,
                },
            );
            self.pending_order.push_back((key, event.time));
            self.expire_pending(None);
        }

        let user_directed = self.settings.trust_user_destinations
            && !dest_atoms.is_empty()
            && dest_atoms.iter().all(|d| {
                d.sources.iter().any(|&(seq, _)| {
                    self.index
                        .source(agent, seq)
                        .is_some_and(|s| s.labels & USER_BIT != 0)
                })
            });
        if let Some(d) =
            self.flow_finding(event, server, tool, to, &leaves, &matches, user_directed)
        {
            out.push(d);
        }
        if egress
            && let Some(d) =
                self.destination_finding(event, server, tool, &to_name, &leaves, &dest_atoms)
        {
            out.push(d);
        }
    }

    /// Text matches of the arguments against the agent's chunks. The arguments are
    /// normalized into one text, so data split over several fields still adds up; what
    /// one query window shares with the chunks of one entry is added up too, so a copy
    /// that straddles two chunks of the source counts whole.
    /// Only the leaves marked in `data` are compared: destinations say where data goes
    /// (atoms judge them), and redundant leaves are said again by their decodings.
    fn match_text(
        &self,
        agent: &str,
        leaves: &[Leaf],
        data: &[bool],
        matches: &mut BTreeMap<u64, SourceMatch>,
    ) {
        let mut buf = Vec::new();
        let mut spans = Vec::with_capacity(leaves.len());
        for (leaf, &is_data) in leaves.iter().zip(data) {
            let start = buf.len();
            if is_data {
                text::normalize_into(&leaf.text, &mut buf);
            }
            spans.push((start, buf.len()));
        }
        let shingles_of = |chars: usize| (chars + 1).saturating_sub(sketch::SHINGLE) as f64;
        let min_shared = shingles_of(self.settings.min_shared_chars);
        let min_copied = shingles_of(self.settings.min_copied_chars);
        let mut candidates: Vec<ChunkRef<'_>> = Vec::new();
        let mut per_entry: BTreeMap<u64, (f64, f64, u32)> = BTreeMap::new();
        for (start, end) in sketch::query_chunks(&buf) {
            let window = &buf[start..end];
            let Some(query) = sketch::sketch(window) else {
                continue;
            };
            candidates.clear();
            per_entry.clear();
            match sketch::halves(window) {
                Some([a, b]) => self
                    .index
                    .candidates(agent, &[&query, &a, &b], &mut candidates),
                None => self.index.candidates(agent, &[&query], &mut candidates),
            }
            for c in &candidates {
                let o = sketch::overlap(&query, c.sketch);
                let e = per_entry
                    .entry(c.entry)
                    .or_insert((0.0, 0.0, c.entry_shingles));
                e.0 += o.shared;
                e.1 = e.1.max(o.jaccard);
            }
            let q = f64::from(query.shingles.max(1));
            for (&entry, &(shared, jaccard, entry_shingles)) in &per_entry {
                let shared = shared.min(q).min(f64::from(entry_shingles.max(1)));
                let containment = (shared / q).max(shared / f64::from(entry_shingles.max(1)));
                if shared < min_shared
                    || (containment < self.settings.min_containment && shared < min_copied)
                {
                    continue;
                }
                let m = matches.entry(entry).or_default();
                let better = m
                    .text
                    .as_ref()
                    .is_none_or(|t| (shared, containment) > (t.shared, t.containment));
                if better {
                    // The field that fills most of the matching window explains it.
                    let leaf = spans
                        .iter()
                        .enumerate()
                        .max_by_key(|(_, (s, e))| e.min(&end).saturating_sub(*s.max(&start)))
                        .map_or(0, |(i, _)| i);
                    let leaf_bytes = spans
                        .iter()
                        .zip(leaves)
                        .filter(|((s, e), _)| *e > start && *s < end)
                        .map(|(_, l)| l.text.len())
                        .sum();
                    m.text = Some(TextMatch {
                        containment,
                        jaccard,
                        shared,
                        leaf,
                        leaf_bytes,
                    });
                }
            }
        }
    }

    fn excepted(
        &self,
        from: &str,
        to: &str,
        server: &str,
        tool: &str,
        bytes: usize,
    ) -> Option<&str> {
        self.exceptions
            .iter()
            .find(|e| {
                e.from.as_deref().is_none_or(|f| f == from)
                    && e.to.as_deref().is_none_or(|t| t == to)
                    && e.servers.iter().any(|g| g.matches(server))
                    && e.tools.iter().any(|g| g.matches(tool))
                    && e.max_bytes.is_none_or(|m| bytes <= m)
            })
            .map(|e| e.id.as_str())
    }
}

/// Atoms are hashed with their kind, so a path and a host spelled alike differ.
fn atom_key(atom: &Atom) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ (atom.kind as u64);
    for &b in atom.value.as_bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h ^ (h >> 29)
}

/// An atom in a destination argument, with the entries that hold it (and whether in
/// prose), looked up once per call.
struct DestinationAtom {
    leaf: usize,
    atom: Atom,
    sources: Vec<(u64, bool)>,
}

#[derive(Default)]
struct SourceMatch {
    text: Option<TextMatch>,
    atoms: Vec<Atom>,
    atom_leaf: Option<usize>,
}

struct TextMatch {
    containment: f64,
    jaccard: f64,
    /// Estimated shingles in common.
    shared: f64,
    leaf: usize,
    leaf_bytes: usize,
}

struct FlowHit<'a> {
    src: &'a Source,
    m: &'a SourceMatch,
    from: Vec<&'a str>,
}

#[derive(Serialize, Deserialize)]
struct Snapshot {
    version: u32,
    domains: Vec<String>,
    entries: Vec<SnapshotEntry>,
    pending: Vec<(String, u64, Vec<String>, Timestamp)>,
    #[serde(default)]
    forget_before: Option<Timestamp>,
}

impl Detector for ProvenanceDetector {
    fn name(&self) -> &'static str {
        NAME
    }

    fn observe(&mut self, event: &Event, out: &mut Vec<FindingDraft>) {
        match &event.body {
            EventBody::ToolResult {
                server,
                call_id,
                tool,
                result,
            } => {
                self.observe_result(event, server, call_id, tool, result);
            }
            EventBody::ToolCall {
                server,
                call_id,
                tool,
                arguments,
            } => {
                self.observe_call(event, server, call_id, tool, arguments, out);
            }
            EventBody::UserMessage { text } => self.observe_user(event, text),
            EventBody::ToolList { .. } => {}
        }
    }

    fn gauges(&self, out: &mut Vec<(StateGauge, u64)>) {
        let s = self.index.stats();
        out.extend([
            (StateGauge::ProvenanceAgents, s.agents as u64),
            (StateGauge::ProvenanceEntries, s.entries as u64),
            (StateGauge::ProvenanceChunks, s.chunks as u64),
            (StateGauge::ProvenanceAtoms, s.atoms as u64),
            (StateGauge::ProvenanceBytes, s.bytes as u64),
            (StateGauge::ProvenanceEvictedExpired, s.evicted_expired),
            (StateGauge::ProvenanceEvictedAgentCap, s.evicted_agent_cap),
            (StateGauge::ProvenanceEvictedGlobalCap, s.evicted_global_cap),
            (
                StateGauge::ProvenancePendingCalls,
                self.pending.len() as u64,
            ),
        ]);
    }

    fn advance(&mut self, watermark: Timestamp, _out: &mut Vec<FindingDraft>) {
        self.index.expire(watermark);
        let cutoff = watermark.saturating_sub(self.settings.horizon);
        self.expire_pending(Some(cutoff));
        self.forget_before = Some(self.forget_before.map_or(cutoff, |c| c.max(cutoff)));
    }

    fn snapshot(&self) -> Result<Vec<u8>, StateError> {
        let pending = self
            .pending_order
            .iter()
            .filter_map(|(k, t)| {
                let p = self.pending.get(k)?;
                (p.time == *t).then(|| (k.clone(), p.labels, p.sources.clone(), p.time))
            })
            .collect();
        let snap = Snapshot {
            version: 1,
            domains: self.domains.clone(),
            entries: self.index.export(),
            pending,
            forget_before: self.forget_before,
        };
        serde_json::to_vec(&snap).map_err(|e| StateError::Encode {
            what: NAME.into(),
            message: e.to_string(),
        })
    }

    fn restore(&mut self, snapshot: &[u8]) -> Result<(), StateError> {
        let err = |message: String| StateError::Decode {
            what: NAME.into(),
            message,
        };
        let snap: Snapshot = serde_json::from_slice(snapshot).map_err(|e| err(e.to_string()))?;
        if snap.version != 1 {
            return Err(err(format!(
                "snapshot version {} is not supported (expected 1)",
                snap.version
            )));
        }
        if snap.domains.len() > MAX_DOMAINS {
            return Err(err(format!(
                "{} trust domains, at most {MAX_DOMAINS}",
                snap.domains.len()
            )));
        }
        let mut index = Index::new(Caps {
            horizon: self.settings.horizon,
            max_bytes_per_agent: self.settings.max_bytes_per_agent,
            max_entries_per_agent: self.settings.max_entries_per_agent.max(1),
            max_bytes_total: self.settings.max_bytes_total,
        });
        index.import(snap.entries).map_err(err)?;
        self.index = index;
        self.domains = snap.domains;
        self.untrusted_mask = self
            .settings
            .untrusted_domains
            .iter()
            .filter_map(|d| self.domains.iter().position(|x| x == d))
            .fold(0, |m, i| m | (1 << i));
        self.forget_before = snap.forget_before;
        self.pending.clear();
        self.pending_order.clear();
        for (key, labels, sources, time) in snap.pending {
            self.pending.insert(
                key.clone(),
                Pending {
                    labels,
                    sources,
                    time,
                },
            );
            self.pending_order.push_back((key, time));
        }
        Ok(())
    }
}
