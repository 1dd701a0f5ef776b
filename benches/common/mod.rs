//! What the benches share: a counting allocator (heap held, for memory per unit of
//! state), AgentDojo events (from the shared archive when it is beside the
//! repository, else the sample), and a simulated fleet that replays them.

#![allow(dead_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicIsize, Ordering};

use toolgate_protocol::{Event, Timestamp};

/// A global allocator that counts bytes held; install it with `#[global_allocator]`.
pub struct Counting;

pub static HELD: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        HELD.fetch_add(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        HELD.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        HELD.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

pub const AGENTS: usize = 1000;
pub const EVENT_INTERVAL_S: i64 = 15;
pub const EVENTS_PER_HOUR: usize = AGENTS * 3600 / EVENT_INTERVAL_S as usize;

pub fn sample_events() -> Vec<Event> {
    let root = env!("CARGO_MANIFEST_DIR");
    let archive =
        Path::new(root).join("../shared/datasets/agentdojo/runs-workspace-travel-banking.tar.gz");
    let mut events = Vec::new();
    if archive.exists()
        && let Ok(mapping) = toolgate_ingest::agentdojo::Mapping::shipped()
    {
        let _ = toolgate_ingest::agentdojo::import(&archive, &mapping, |e| {
            if events.len() < 300_000 {
                events.push(e.clone());
            }
            Ok(())
        });
    }
    if events.is_empty() {
        let text = std::fs::read_to_string(Path::new(root).join("examples/agentdojo-sample.jsonl"))
            .expect("examples/agentdojo-sample.jsonl");
        events = text
            .lines()
            .filter_map(|l| Event::decode(l.as_bytes()).ok())
            .collect();
    }
    events
}

/// Runs (sessions) of the sample, each a list of events in order.
pub fn runs(events: Vec<Event>) -> Vec<Vec<Event>> {
    let mut by: BTreeMap<String, Vec<Event>> = BTreeMap::new();
    for e in events {
        by.entry(e.session_id.clone()).or_default().push(e);
    }
    by.into_values().collect()
}

/// The fleet: agent `a` replays runs `a`, `a + AGENTS`, … in turn, one event every
/// 15 s, each replayed run a new session.
pub struct Fleet {
    runs: Vec<Vec<Event>>,
    cursor: Vec<(usize, usize, usize)>,
    tick: i64,
}

impl Fleet {
    pub fn new(runs: Vec<Vec<Event>>) -> Self {
        let cursor = (0..AGENTS).map(|a| (a % runs.len(), 0, 0)).collect();
        Fleet {
            runs,
            cursor,
            tick: 0,
        }
    }

    /// The next `n` events of the whole fleet, in time order.
    pub fn next(&mut self, n: usize) -> Vec<Event> {
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            for a in 0..AGENTS {
                let (run, pos, replay) = self.cursor[a];
                let mut e = self.runs[run][pos].clone();
                e.agent_id = format!("agent-{a:04}");
                e.session_id = format!("agent-{a:04}-{replay}");
                e.time = Timestamp::from_unix_nanos(
                    1_700_000_000_000_000_000
                        + (self.tick * EVENT_INTERVAL_S * 1000 + a as i64) * 1_000_000,
                );
                out.push(e);
                self.cursor[a] = if pos + 1 < self.runs[run].len() {
                    (run, pos + 1, replay)
                } else {
                    ((run + AGENTS) % self.runs.len(), 0, replay + 1)
                };
            }
            self.tick += 1;
        }
        out
    }
}
