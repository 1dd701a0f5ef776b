//! The bounded, per-agent index of where data came from: chunk sketches in a banded LSH
//! table and exact atoms in a hash table, each entry carrying its source (event, server,
//! tool, trust labels, time).
//!
//! Entries live in insertion order per agent, and chunks and atom postings are numbered
//! in that order, so the LSH and atom tables are intrusive chains from the newest
//! posting backwards: one head per key and a short back-link per posting. Chunk numbers
//! are `u32` and wrap; only their distances matter, and an agent's live chunks are far
//! fewer than 2^32.
//! Evicting the oldest entry pops its postings off the front and drops a table key only
//! when that posting was its head. Eviction is by event-time horizon, per-agent caps and
//! a global byte cap (oldest entries of the whole fleet first).

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use toolgate_protocol::Timestamp;

use super::sketch::{BANDS, K, Sketch, band_keys};

/// Keys are already uniform 64-bit hashes: hashing them again is wasted work.
#[derive(Default)]
pub struct IdentityHasher(u64);

impl Hasher for IdentityHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
    fn write_u32(&mut self, n: u32) {
        // The table reads its control bits from the top of the hash: spread a u32 there.
        self.0 = u64::from(n).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

type Table = HashMap<u64, u64, BuildHasherDefault<IdentityHasher>>;
type BandTable = HashMap<u32, u32, BuildHasherDefault<IdentityHasher>>;

/// Most postings followed back along one chain: keys shared by many entries (a
/// boilerplate header in every result) stop being informative long before that.
const MAX_CHAIN: usize = 48;
/// Most candidate chunks verified per query chunk.
pub const MAX_CANDIDATES: usize = 256;

/// Where one indexed piece of data came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Source {
    /// The event that carried it.
    pub event_id: String,
    /// The session it was seen in (flows are followed across an agent's sessions).
    pub session: String,
    /// Its server (empty for a user's message).
    pub server: String,
    /// Its tool (empty for a user's message).
    pub tool: String,
    /// Trust domain of the server itself, as an index into the detector's domain table.
    pub domain: u8,
    /// Every label the data carries: its own domain and those inherited from the
    /// arguments of the call that produced it, as a bit set over the domain table.
    pub labels: u64,
    /// Event time.
    pub time: Timestamp,
    /// Sources this data was derived from (results of calls that carried them), first few.
    pub derived_from: Vec<String>,
    /// Hash of the raw content (0: none), so an identical copy need not be indexed again.
    #[serde(default)]
    pub content: u64,
}

struct Entry {
    source: Source,
    bytes: usize,
    /// Shingles over all its chunks.
    shingles: u32,
    chunks_end: u32,
    atoms_end: u64,
}

struct Chunk {
    sketch: Sketch,
    entry: u64,
    /// Distance back to the previous chunk with the same band key; 0 = none (or too far).
    prev: [u16; BANDS],
}

struct AtomPost {
    key: u64,
    entry: u64,
    prev: u32,
    /// Seen in prose rather than as a record's whole value.
    prose: bool,
}

/// One agent's part of the index.
#[derive(Default)]
struct AgentIndex {
    entries: VecDeque<Entry>,
    entry_base: u64,
    chunks: VecDeque<Chunk>,
    chunk_base: u32,
    atoms: VecDeque<AtomPost>,
    atom_base: u64,
    bands: BandTable,
    atom_heads: Table,
    /// Content hash → the newest entry holding it.
    contents: Table,
    bytes: usize,
}

fn back_link(current: u64, head: Option<&u64>) -> u32 {
    head.map_or(0, |&h| u32::try_from(current - h).unwrap_or(0))
}

fn band_link(current: u32, head: Option<&u32>) -> u16 {
    head.map_or(0, |&h| u16::try_from(current.wrapping_sub(h)).unwrap_or(0))
}

impl AgentIndex {
    fn next_entry(&self) -> u64 {
        self.entry_base + self.entries.len() as u64
    }

    fn insert(
        &mut self,
        source: Source,
        sketches: Vec<Sketch>,
        atoms: &[(u64, bool)],
        bytes: usize,
    ) -> u64 {
        let seq = self.next_entry();
        let shingles = sketches.iter().map(|s| s.shingles).sum();
        for sketch in sketches {
            let n = self.chunk_end();
            let mut prev = [0u16; BANDS];
            for (b, key) in band_keys(&sketch).into_iter().enumerate() {
                prev[b] = band_link(n, self.bands.get(&key));
                self.bands.insert(key, n);
            }
            self.chunks.push_back(Chunk {
                sketch,
                entry: seq,
                prev,
            });
        }
        for &(key, prose) in atoms {
            let n = self.atom_base + self.atoms.len() as u64;
            let prev = back_link(n, self.atom_heads.get(&key));
            self.atom_heads.insert(key, n);
            self.atoms.push_back(AtomPost {
                key,
                entry: seq,
                prev,
                prose,
            });
        }
        if source.content != 0 {
            self.contents.insert(source.content, seq);
        }
        self.entries.push_back(Entry {
            source,
            bytes,
            shingles,
            chunks_end: self.chunk_end(),
            atoms_end: self.atom_base + self.atoms.len() as u64,
        });
        self.bytes += bytes;
        seq
    }

    fn chunk_end(&self) -> u32 {
        self.chunk_base.wrapping_add(self.chunks.len() as u32)
    }

    fn evict_front(&mut self) -> Option<Entry> {
        let entry = self.entries.pop_front()?;
        if self.contents.get(&entry.source.content) == Some(&self.entry_base) {
            self.contents.remove(&entry.source.content);
        }
        self.entry_base += 1;
        while self.chunk_base != entry.chunks_end {
            let Some(chunk) = self.chunks.pop_front() else {
                break;
            };
            for key in band_keys(&chunk.sketch) {
                if self.bands.get(&key) == Some(&self.chunk_base) {
                    self.bands.remove(&key);
                }
            }
            self.chunk_base = self.chunk_base.wrapping_add(1);
        }
        while self.atom_base < entry.atoms_end {
            let Some(post) = self.atoms.pop_front() else {
                break;
            };
            if self.atom_heads.get(&post.key) == Some(&self.atom_base) {
                self.atom_heads.remove(&post.key);
            }
            self.atom_base += 1;
        }
        self.bytes -= entry.bytes;
        Some(entry)
    }

    fn entry(&self, seq: u64) -> Option<&Entry> {
        seq.checked_sub(self.entry_base)
            .and_then(|i| self.entries.get(usize::try_from(i).ok()?))
    }

    fn chunk(&self, n: u32) -> Option<&Chunk> {
        self.chunks.get(n.wrapping_sub(self.chunk_base) as usize)
    }

    fn atom(&self, n: u64) -> Option<&AtomPost> {
        n.checked_sub(self.atom_base)
            .and_then(|i| self.atoms.get(usize::try_from(i).ok()?))
    }
}

/// Bounds on the index.
#[derive(Debug, Clone, Copy)]
pub struct Caps {
    /// Entries older than this (event time, behind the watermark) are dropped.
    pub horizon: toolgate_protocol::Duration,
    /// Most indexed bytes (normal form) per agent; the agent's oldest go first.
    pub max_bytes_per_agent: usize,
    /// Most entries per agent.
    pub max_entries_per_agent: usize,
    /// Most indexed bytes over all agents; the fleet's oldest go first.
    pub max_bytes_total: usize,
}

/// Current sizes, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct IndexStats {
    /// Agents with at least one entry.
    pub agents: usize,
    /// Indexed results and messages.
    pub entries: usize,
    /// Chunk sketches.
    pub chunks: usize,
    /// Atom postings.
    pub atoms: usize,
    /// Bytes of normal form indexed.
    pub bytes: usize,
    /// Entries dropped because they fell behind the horizon.
    pub evicted_expired: u64,
    /// Entries dropped by the per-agent caps.
    pub evicted_agent_cap: u64,
    /// Entries dropped by the global cap.
    pub evicted_global_cap: u64,
}

/// A verified reference to an indexed chunk: the entry it belongs to and its sketch.
pub struct ChunkRef<'a> {
    /// The entry's sequence number within its agent.
    pub entry: u64,
    /// The chunk's sketch.
    pub sketch: &'a Sketch,
    /// Shingles of the whole entry (all its chunks).
    pub entry_shingles: u32,
}

/// The whole fleet's index.
pub struct Index {
    caps: Caps,
    agents: HashMap<Arc<str>, AgentIndex>,
    order: VecDeque<(Arc<str>, u64)>,
    bytes: usize,
    stats: IndexStats,
}

impl Index {
    /// An empty index.
    pub fn new(caps: Caps) -> Self {
        Index {
            caps,
            agents: HashMap::new(),
            order: VecDeque::new(),
            bytes: 0,
            stats: IndexStats::default(),
        }
    }

    /// Indexes one result or message of `agent`; returns its sequence number.
    pub fn insert(
        &mut self,
        agent: &str,
        source: Source,
        sketches: Vec<Sketch>,
        atoms: &[(u64, bool)],
        bytes: usize,
    ) -> u64 {
        let key: Arc<str> = match self.agents.get_key_value(agent) {
            Some((k, _)) => k.clone(),
            None => Arc::from(agent),
        };
        let idx = self.agents.entry(key.clone()).or_default();
        let seq = idx.insert(source, sketches, atoms, bytes);
        self.bytes += bytes;
        self.order.push_back((key, seq));
        let caps = self.caps;
        let mut evicted = 0;
        while (idx.bytes > caps.max_bytes_per_agent
            || idx.entries.len() > caps.max_entries_per_agent)
            && idx.entries.len() > 1
        {
            if let Some(e) = idx.evict_front() {
                self.bytes -= e.bytes;
                evicted += 1;
            }
        }
        self.stats.evicted_agent_cap += evicted;
        while self.bytes > caps.max_bytes_total && self.order.len() > 1 {
            if self.evict_oldest() {
                self.stats.evicted_global_cap += 1;
            }
        }
        seq
    }

    /// Drops the fleet's oldest live entry; false if the oldest order record was stale.
    fn evict_oldest(&mut self) -> bool {
        let Some((agent, seq)) = self.order.pop_front() else {
            return false;
        };
        let Some(idx) = self.agents.get_mut(&agent) else {
            return false;
        };
        if idx.entry_base != seq {
            return false;
        }
        if let Some(e) = idx.evict_front() {
            self.bytes -= e.bytes;
        }
        if idx.entries.is_empty() {
            self.agents.remove(&agent);
        }
        true
    }

    /// Drops entries whose event time is older than `watermark - horizon`.
    pub fn expire(&mut self, watermark: Timestamp) {
        let cutoff = watermark.saturating_sub(self.caps.horizon);
        while let Some((agent, seq)) = self.order.front() {
            let live = self
                .agents
                .get(agent)
                .filter(|idx| idx.entry_base == *seq)
                .and_then(|idx| idx.entries.front());
            match live {
                Some(e) if e.source.time >= cutoff => break,
                Some(_) => {
                    if self.evict_oldest() {
                        self.stats.evicted_expired += 1;
                    }
                }
                None => {
                    self.order.pop_front();
                }
            }
        }
        self.agents.retain(|_, idx| !idx.entries.is_empty());
    }

    /// Chunks of `agent` sharing at least one LSH band with any of `probes`, and their
    /// neighbours in the same entry, newest first, each once, at most
    /// [`MAX_CANDIDATES`] of them, appended to `out`.
    pub fn candidates<'a>(&'a self, agent: &str, probes: &[&Sketch], out: &mut Vec<ChunkRef<'a>>) {
        let Some(idx) = self.agents.get(agent) else {
            return;
        };
        // Positions from the oldest live chunk, so that sorting puts the newest first.
        let mut seen: Vec<u32> = Vec::new();
        let keys = probes
            .iter()
            .flat_map(|s| band_keys(s).into_iter().enumerate());
        for (b, key) in keys {
            let Some(&head) = idx.bands.get(&key) else {
                continue;
            };
            let mut n = head;
            for _ in 0..MAX_CHAIN {
                let Some(chunk) = idx.chunk(n) else { break };
                seen.push(n.wrapping_sub(idx.chunk_base));
                let back = chunk.prev[b];
                if back == 0 {
                    break;
                }
                n = n.wrapping_sub(u32::from(back));
            }
        }
        // A copy that straddles a chunk boundary shares only part of itself with each
        // side, and the smaller part may miss every band: verify the neighbours within
        // the same entry too.
        let found = seen.len();
        for i in 0..found {
            let pos = seen[i];
            let Some(entry) = idx.chunks.get(pos as usize).map(|c| c.entry) else {
                continue;
            };
            for n in [pos.wrapping_sub(1), pos + 1] {
                if idx.chunks.get(n as usize).is_some_and(|c| c.entry == entry) {
                    seen.push(n);
                }
            }
        }
        seen.sort_unstable_by(|a, b| b.cmp(a));
        seen.dedup();
        seen.truncate(MAX_CANDIDATES);
        out.extend(seen.into_iter().filter_map(|pos| {
            let c = idx.chunks.get(pos as usize)?;
            Some(ChunkRef {
                entry: c.entry,
                sketch: &c.sketch,
                entry_shingles: idx.entry(c.entry).map_or(c.sketch.shingles, |e| e.shingles),
            })
        }));
    }

    /// Entries of `agent` holding the atom `key`, newest first, each with whether the
    /// atom stood in prose there, appended to `out`.
    pub fn atom_sources(&self, agent: &str, key: u64, out: &mut Vec<(u64, bool)>) {
        let Some(idx) = self.agents.get(agent) else {
            return;
        };
        let Some(&head) = idx.atom_heads.get(&key) else {
            return;
        };
        let mut n = head;
        for _ in 0..MAX_CHAIN {
            let Some(post) = idx.atom(n) else { break };
            if !out.iter().any(|(e, _)| *e == post.entry) {
                out.push((post.entry, post.prose));
            }
            if post.prev == 0 {
                break;
            }
            n -= u64::from(post.prev);
        }
    }

    /// Whether `agent` already holds content with this hash and exactly these labels,
    /// seen at or after `not_before`: then indexing the copy again adds nothing.
    pub fn holds_copy(
        &self,
        agent: &str,
        content: u64,
        labels: u64,
        not_before: Timestamp,
    ) -> bool {
        let Some(idx) = self.agents.get(agent) else {
            return false;
        };
        idx.contents
            .get(&content)
            .and_then(|&seq| idx.entry(seq))
            .is_some_and(|e| e.source.labels == labels && e.source.time >= not_before)
    }

    /// The source of entry `seq` of `agent`, if it is still indexed.
    pub fn source(&self, agent: &str, seq: u64) -> Option<&Source> {
        self.agents.get(agent)?.entry(seq).map(|e| &e.source)
    }

    /// Current sizes and eviction counts.
    pub fn stats(&self) -> IndexStats {
        let mut s = self.stats;
        s.agents = self.agents.len();
        s.entries = self.agents.values().map(|a| a.entries.len()).sum();
        s.chunks = self.agents.values().map(|a| a.chunks.len()).sum();
        s.atoms = self.agents.values().map(|a| a.atoms.len()).sum();
        s.bytes = self.bytes;
        s
    }

    /// Every live entry in the order it was inserted, for snapshots.
    pub fn export(&self) -> Vec<SnapshotEntry> {
        let mut out = Vec::new();
        let mut next: HashMap<&str, u64> = HashMap::new();
        for (agent, seq) in &self.order {
            let Some(idx) = self.agents.get(agent) else {
                continue;
            };
            let expected = next.entry(agent).or_insert(idx.entry_base);
            if *seq < *expected {
                continue;
            }
            let Some(entry) = idx.entry(*seq) else {
                continue;
            };
            *expected = seq + 1;
            let chunk_start = if *seq == idx.entry_base {
                idx.chunk_base
            } else {
                idx.entry(seq - 1).map_or(idx.chunk_base, |p| p.chunks_end)
            };
            let chunk_count = entry.chunks_end.wrapping_sub(chunk_start);
            let atom_start = if *seq == idx.entry_base {
                idx.atom_base
            } else {
                idx.entry(seq - 1).map_or(idx.atom_base, |p| p.atoms_end)
            };
            out.push(SnapshotEntry {
                agent: agent.to_string(),
                source: entry.source.clone(),
                bytes: entry.bytes,
                chunks: (0..chunk_count)
                    .filter_map(|i| idx.chunk(chunk_start.wrapping_add(i)))
                    .map(|c| (c.sketch.mins.to_vec(), c.sketch.shingles))
                    .collect(),
                atoms: (atom_start..entry.atoms_end)
                    .filter_map(|n| idx.atom(n))
                    .map(|a| (a.key, a.prose))
                    .collect(),
            });
        }
        out
    }

    /// Rebuilds the index from [`Index::export`]'s output (in its order).
    pub fn import(&mut self, entries: Vec<SnapshotEntry>) -> Result<(), String> {
        for e in entries {
            let sketches = e
                .chunks
                .into_iter()
                .map(|(mins, shingles)| {
                    let mins: [u16; K] = mins.try_into().map_err(|v: Vec<u16>| {
                        format!("a sketch has {} values, expected {K}", v.len())
                    })?;
                    Ok(Sketch { mins, shingles })
                })
                .collect::<Result<Vec<_>, String>>()?;
            self.insert(&e.agent, e.source, sketches, &e.atoms, e.bytes);
        }
        Ok(())
    }
}

/// One entry in a snapshot.
#[derive(Debug, Serialize, Deserialize)]
pub struct SnapshotEntry {
    agent: String,
    source: Source,
    bytes: usize,
    chunks: Vec<(Vec<u16>, u32)>,
    atoms: Vec<(u64, bool)>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provenance::sketch::sketch;
    use toolgate_protocol::Duration;

    fn source(id: &str, t: i64) -> Source {
        Source {
            event_id: id.into(),
            session: "s".into(),
            server: "s".into(),
            tool: "t".into(),
            domain: 0,
            labels: 1,
            time: Timestamp::from_unix_nanos(t * 1_000_000_000),
            derived_from: Vec::new(),
            content: 0,
        }
    }

    fn caps() -> Caps {
        Caps {
            horizon: Duration::from_secs(100),
            max_bytes_per_agent: 1000,
            max_entries_per_agent: 10,
            max_bytes_total: 2500,
        }
    }

    fn sk(text: &str) -> Sketch {
        sketch(text.as_bytes()).unwrap()
    }

    #[test]
    fn a_chunk_is_found_by_its_own_sketch_until_it_expires() {
        let mut index = Index::new(caps());
        index.insert(
            "a",
            source("e1", 0),
            vec![sk("the quarterly numbers are in")],
            &[(7, true)],
            100,
        );
        index.insert(
            "a",
            source("e2", 50),
            vec![sk("lunch menu for friday")],
            &[(7, false)],
            100,
        );
        let mut found = Vec::new();
        index.candidates("a", &[&sk("the quarterly numbers are in")], &mut found);
        assert_eq!(found.iter().map(|c| c.entry).collect::<Vec<_>>(), vec![0]);
        let mut atoms = Vec::new();
        index.atom_sources("a", 7, &mut atoms);
        assert_eq!(atoms, vec![(1, false), (0, true)], "newest first");
        drop(found);
        index.expire(Timestamp::from_unix_nanos(120 * 1_000_000_000));
        let mut found = Vec::new();
        index.candidates("a", &[&sk("the quarterly numbers are in")], &mut found);
        assert!(found.is_empty());
        atoms.clear();
        index.atom_sources("a", 7, &mut atoms);
        assert_eq!(atoms, vec![(1, false)]);
        assert_eq!(index.stats().evicted_expired, 1);
        assert!(index.candidates_for_other_agents_are_empty());
    }

    impl Index {
        fn candidates_for_other_agents_are_empty(&self) -> bool {
            let mut v = Vec::new();
            self.candidates("b", &[&sk("the quarterly numbers are in")], &mut v);
            v.is_empty()
        }
    }

    #[test]
    fn caps_evict_oldest_first_per_agent_and_fleet_wide() {
        let mut index = Index::new(Caps {
            max_bytes_total: 1500,
            ..caps()
        });
        for i in 0..12 {
            index.insert(
                "a",
                source(&format!("a{i}"), i),
                vec![sk(&format!("text number {i:04}"))],
                &[(i as u64, true)],
                80,
            );
        }
        let s = index.stats();
        assert_eq!(s.entries, 10);
        assert_eq!(s.evicted_agent_cap, 2);
        assert!(index.source("a", 1).is_none() && index.source("a", 2).is_some());
        for i in 0..20 {
            index.insert("b", source(&format!("b{i}"), 20 + i), vec![], &[], 100);
        }
        let s = index.stats();
        assert!(s.bytes <= 1500, "{s:?}");
        assert!(s.evicted_global_cap > 0);
        assert!(
            index.source("a", 2).is_none(),
            "the fleet's oldest went first"
        );
    }

    #[test]
    fn export_then_import_gives_the_same_index() {
        let mut index = Index::new(caps());
        for i in 0..14 {
            let agent = if i % 3 == 0 { "a" } else { "b" };
            index.insert(
                agent,
                source(&format!("e{i}"), i),
                vec![sk(&format!("text number {i:04}")), sk("shared header")],
                &[(i as u64 % 4, i % 2 == 0)],
                70,
            );
        }
        let snap = index.export();
        let mut copy = Index::new(caps());
        copy.import(serde_json::from_str(&serde_json::to_string(&snap).unwrap()).unwrap())
            .unwrap();
        assert_eq!(index.stats(), copy.stats());
        for agent in ["a", "b"] {
            let (mut x, mut y) = (Vec::new(), Vec::new());
            index.candidates(agent, &[&sk("shared header")], &mut x);
            copy.candidates(agent, &[&sk("shared header")], &mut y);
            let ids = |v: &Vec<ChunkRef>| v.iter().map(|c| c.entry).collect::<Vec<_>>();
            assert_eq!(ids(&x).len(), ids(&y).len());
            let (mut p, mut q) = (Vec::new(), Vec::new());
            index.atom_sources(agent, 1, &mut p);
            copy.atom_sources(agent, 1, &mut q);
            assert_eq!(p.len(), q.len());
        }
    }
}
