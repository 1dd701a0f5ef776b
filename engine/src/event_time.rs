//! Putting a stream back into event-time order: events are held until the watermark
//! (newest time seen minus the allowed lateness) passes them, then released oldest
//! first. Events older than what was already released are late: they are released at
//! once, processed, and counted. Memory is bounded by `max_buffered` events and by
//! `max_bytes` of their encoded size: 1,500 one-megabyte events with one timestamp
//! must not all wait in memory.
//!
//! A call the sink holds for a verdict (`await_verdict`) cannot wait for the
//! watermark: an agent is blocked on it. It is released on arrival, after every event
//! of its own agent held before it, so its verdict weighs everything that agent did
//! earlier. Order is kept per agent: that agent's events older than the released call
//! are late from then on; other agents' events are not disturbed.
//!
//! The rule depends only on the events and the order they arrive in (and, in the
//! stream, on which events were forged: those never hurry), so `analyze` and the
//! stream, fed the same events in the same order, process them identically.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use toolgate_protocol::{Duration, Event, Timestamp};

/// What the buffer holds: an event, perhaps with what its reader knows about it.
pub trait Pending {
    /// The event.
    fn event(&self) -> &Event;

    /// Its size in memory for the byte bound: its encoded size unless the reader
    /// knows a cheaper measure (the record it was decoded from).
    fn bytes(&self) -> usize {
        self.event().encoded_len()
    }

    /// Whether someone waits on it (a call held for a verdict), so it is released on
    /// arrival. A reader that knows it can decide nothing (a forged event) says no.
    fn urgent(&self) -> bool {
        self.event().await_verdict
    }
}

impl Pending for Event {
    fn event(&self) -> &Event {
        self
    }
}

/// Where an event sits in the buffer: its time, then its arrival.
type Key = (Timestamp, u64);

struct Held<T> {
    bytes: usize,
    item: T,
}

/// The reorder buffer.
pub struct Reorder<T = Event> {
    held: BTreeMap<Key, Held<T>>,
    /// Each agent's held events, for releasing one agent's past at once.
    by_agent: HashMap<String, BTreeSet<Key>>,
    lateness: Duration,
    max_buffered: usize,
    max_bytes: usize,
    bytes: usize,
    early: u64,
    seq: u64,
    newest: Option<Timestamp>,
    released_up_to: Option<Timestamp>,
    /// Agents released past `released_up_to` by a held call, and how far.
    agent_released: HashMap<String, Timestamp>,
    /// `agent_released`'s size after its last pruning.
    pruned_len: usize,
    late: u64,
}

/// A buffer's state, for a checkpoint: restored, the buffer carries on as if it had
/// never stopped.
pub struct Saved<T> {
    /// The newest event time seen.
    pub newest: Option<Timestamp>,
    /// Every event up to this time has been released.
    pub released_up_to: Option<Timestamp>,
    /// Agents released further by a held call.
    pub agent_released: Vec<(String, Timestamp)>,
    /// The events held, oldest first.
    pub held: Vec<T>,
}

impl<T: Pending> Reorder<T> {
    /// Holds events up to `lateness` behind the newest, at most `max_buffered` of them.
    pub fn new(lateness: Duration, max_buffered: usize) -> Self {
        Reorder {
            held: BTreeMap::new(),
            by_agent: HashMap::new(),
            lateness,
            max_buffered: max_buffered.max(1),
            max_bytes: usize::MAX,
            bytes: 0,
            early: 0,
            seq: 0,
            newest: None,
            released_up_to: None,
            agent_released: HashMap::new(),
            pruned_len: 0,
            late: 0,
        }
    }

    /// Bounds the events held by their size too ([`Pending::bytes`]); past it the
    /// oldest are released early, as past the count bound.
    pub fn with_max_bytes(mut self, max_bytes: usize) -> Self {
        self.max_bytes = max_bytes.max(1);
        self
    }

    /// Encoded bytes of the events held now.
    pub fn buffered_bytes(&self) -> usize {
        self.bytes
    }

    /// Events held now.
    pub fn buffered(&self) -> usize {
        self.held.len()
    }

    /// Events released before the watermark passed them, because a bound was reached.
    pub fn early(&self) -> u64 {
        self.early
    }

    /// Events that arrived after newer ones (of any agent past the watermark, of
    /// their own agent past a held call) had already been released.
    pub fn late(&self) -> u64 {
        self.late
    }

    /// The newest event time seen.
    pub fn newest(&self) -> Option<Timestamp> {
        self.newest
    }

    /// The time up to which every event has been released; detectors may expire
    /// state older than this.
    pub fn watermark(&self) -> Option<Timestamp> {
        self.released_up_to
    }

    /// Adds an event; pushes every event that is now ready onto `ready`, in order.
    pub fn push(&mut self, item: T, ready: &mut Vec<T>) {
        let event = item.event();
        let time = event.time;
        let mark = self
            .released_up_to
            .max(self.agent_released.get(&event.agent_id).copied());
        self.newest = Some(self.newest.map_or(time, |n| n.max(time)));
        if mark.is_some_and(|r| time < r) {
            self.late += 1;
            ready.push(item);
            return;
        }
        let urgent = item.urgent().then(|| event.agent_id.clone());
        let key = self.hold(item);
        let watermark = self.newest.map(|n| n.saturating_sub(self.lateness));
        self.release_through(watermark, ready);
        if let Some(agent) = urgent
            && self.held.contains_key(&key)
        {
            self.release_agent(&agent, key, ready);
            if self.released_up_to.is_none_or(|r| r < time) {
                self.agent_released.insert(agent, time);
            }
        }
        self.prune();
    }

    /// Releases every event held up to `watermark`, and the oldest beyond it while a
    /// bound is exceeded.
    fn release_through(&mut self, watermark: Option<Timestamp>, ready: &mut Vec<T>) {
        while let Some((&(time, _), _)) = self.held.first_key_value() {
            let full = self.held.len() > self.max_buffered || self.bytes > self.max_bytes;
            let due = watermark.is_some_and(|w| time <= w);
            if !due && !full {
                break;
            }
            if !due {
                self.early += 1;
            }
            self.release_first(ready);
        }
    }

    /// Releases everything held (the input ended, or went quiet: nothing earlier is
    /// coming), in order. Later events older than these are late.
    pub fn finish(&mut self, ready: &mut Vec<T>) {
        while !self.held.is_empty() {
            self.release_first(ready);
        }
    }

    fn hold(&mut self, item: T) -> Key {
        self.seq += 1;
        let event = item.event();
        let key = (event.time, self.seq);
        let bytes = item.bytes();
        self.bytes += bytes;
        match self.by_agent.get_mut(&event.agent_id) {
            Some(keys) => {
                keys.insert(key);
            }
            None => {
                self.by_agent
                    .insert(event.agent_id.clone(), BTreeSet::from([key]));
            }
        }
        self.held.insert(key, Held { bytes, item });
        key
    }

    fn release_first(&mut self, ready: &mut Vec<T>) {
        if let Some((key, held)) = self.held.pop_first() {
            self.forget(&key, &held);
            self.released_up_to = Some(self.released_up_to.map_or(key.0, |r| r.max(key.0)));
            ready.push(held.item);
        }
    }

    /// Releases `agent`'s events held up to `last`, in order.
    fn release_agent(&mut self, agent: &str, last: Key, ready: &mut Vec<T>) {
        let Some(keys) = self.by_agent.get(agent) else {
            return;
        };
        let due: Vec<Key> = keys.range(..=last).copied().collect();
        for key in due {
            if let Some(held) = self.held.remove(&key) {
                self.forget(&key, &held);
                ready.push(held.item);
            }
        }
    }

    fn forget(&mut self, key: &Key, held: &Held<T>) {
        self.bytes -= held.bytes;
        let agent = &held.item.event().agent_id;
        if let Some(keys) = self.by_agent.get_mut(agent) {
            keys.remove(key);
            if keys.is_empty() {
                self.by_agent.remove(agent);
            }
        }
    }

    /// Drops agent marks the watermark has overtaken, once their number has doubled:
    /// amortized constant time. Past `max_buffered` marks (held calls of that many
    /// agents within the lateness, or stamped in the future), only the newest
    /// `max_buffered / 2` stay: the other agents' older events are then put in order
    /// instead of counted late. At most `2 * max_buffered + 65` marks are kept.
    fn prune(&mut self) {
        if self.agent_released.len() <= 2 * self.pruned_len + 64 {
            return;
        }
        if let Some(r) = self.released_up_to {
            self.agent_released.retain(|_, t| *t > r);
        }
        if self.agent_released.len() > self.max_buffered {
            // Keep the newest half of the bound.
            let mut times: Vec<Timestamp> = self.agent_released.values().copied().collect();
            let drop = times.len() - (self.max_buffered / 2).max(1);
            let (_, cut, _) = times.select_nth_unstable(drop);
            let cut = *cut;
            self.agent_released.retain(|_, t| *t > cut);
        }
        self.pruned_len = self.agent_released.len();
    }

    /// The state to checkpoint, held events oldest first.
    pub fn saved(&self) -> Saved<&T> {
        Saved {
            newest: self.newest,
            released_up_to: self.released_up_to,
            agent_released: self
                .agent_released
                .iter()
                .filter(|(_, t)| self.released_up_to.is_none_or(|r| **t > r))
                .map(|(a, t)| (a.clone(), *t))
                .collect(),
            held: self.held.values().map(|h| &h.item).collect(),
        }
    }

    /// Carries on from a checkpoint's state.
    pub fn restore(&mut self, saved: Saved<T>) {
        self.held.clear();
        self.by_agent.clear();
        self.bytes = 0;
        self.newest = saved.newest;
        self.released_up_to = saved.released_up_to;
        self.agent_released = saved.agent_released.into_iter().collect();
        self.pruned_len = self.agent_released.len();
        for item in saved.held {
            self.hold(item);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use toolgate_protocol::event::EventBody;

    fn ev(secs: i64, id: &str) -> Event {
        Event {
            event_id: id.into(),
            time: Timestamp::from_unix_nanos(secs * 1_000_000_000),
            agent_id: "a".into(),
            session_id: "s".into(),
            agent_role: None,
            host: None,
            trust_domain: None,
            sink_action: None,
            await_verdict: false,
            trace_id: None,
            span_id: None,
            labels: Default::default(),
            redacted: Vec::new(),
            body: EventBody::UserMessage {
                text: String::new(),
            },
        }
    }

    fn ids(v: &[Event]) -> Vec<&str> {
        v.iter().map(|e| e.event_id.as_str()).collect()
    }

    #[test]
    fn out_of_order_within_lateness_is_reordered() {
        let mut r = Reorder::new(Duration::from_secs(10), 100);
        let mut out = Vec::new();
        for (t, id) in [(100, "a"), (105, "c"), (102, "b"), (120, "d")] {
            r.push(ev(t, id), &mut out);
        }
        assert_eq!(
            ids(&out),
            ["a", "b", "c"],
            "released once 10 s behind the newest"
        );
        r.finish(&mut out);
        assert_eq!(ids(&out), ["a", "b", "c", "d"]);
        assert_eq!(r.late(), 0);
    }

    #[test]
    fn an_event_exactly_at_the_lateness_bound_is_still_in_order() {
        let mut r = Reorder::new(Duration::from_secs(10), 100);
        let mut out = Vec::new();
        r.push(ev(100, "a"), &mut out);
        r.push(ev(110, "c"), &mut out);
        r.push(ev(100, "b"), &mut out);
        r.finish(&mut out);
        assert_eq!(ids(&out), ["a", "b", "c"]);
        assert_eq!(r.late(), 0);
    }

    #[test]
    fn events_beyond_lateness_are_released_at_once_and_counted() {
        let mut r = Reorder::new(Duration::from_secs(10), 100);
        let mut out = Vec::new();
        r.push(ev(100, "a"), &mut out);
        r.push(ev(200, "b"), &mut out);
        assert_eq!(ids(&out), ["a"]);
        r.push(ev(50, "late"), &mut out);
        assert_eq!(ids(&out), ["a", "late"]);
        assert_eq!(r.late(), 1);
    }

    #[test]
    fn the_buffer_is_bounded() {
        let mut r = Reorder::new(Duration::from_secs(3600), 3);
        let mut out = Vec::new();
        for t in 0..10 {
            r.push(ev(t, &t.to_string()), &mut out);
        }
        assert_eq!(out.len(), 7);
        assert_eq!(r.buffered(), 3);
    }

    fn big(secs: i64, id: &str, bytes: usize) -> Event {
        let mut e = ev(secs, id);
        e.body = EventBody::UserMessage {
            text: "x".repeat(bytes),
        };
        e
    }

    #[test]
    fn issue_19_the_buffer_is_bounded_in_bytes_too() {
        // Within the count bound and the lateness, all with one timestamp: only the
        // byte bound can release them, oldest first.
        let bound = 10 * 100_000;
        let mut r = Reorder::new(Duration::from_secs(3600), 100_000).with_max_bytes(bound);
        let mut out = Vec::new();
        let mut most = 0;
        for i in 0..200 {
            r.push(big(100, &i.to_string(), 100_000), &mut out);
            most = most.max(r.buffered_bytes());
        }
        assert!(most <= bound, "held {most} bytes, bound {bound}");
        assert!(r.buffered() < 11, "{} held", r.buffered());
        let released: Vec<String> = (0..out.len()).map(|i| i.to_string()).collect();
        assert_eq!(ids(&out), released, "oldest first, none dropped");
        assert_eq!(r.early(), out.len() as u64);
        r.finish(&mut out);
        assert_eq!(out.len(), 200, "nothing lost");
        assert_eq!(r.buffered_bytes(), 0);
        assert_eq!(r.late(), 0);
    }

    #[test]
    fn issue_19_one_event_over_the_byte_bound_passes_straight_through() {
        let mut r = Reorder::new(Duration::from_secs(3600), 100).with_max_bytes(1000);
        let mut out = Vec::new();
        r.push(big(100, "huge", 5000), &mut out);
        assert_eq!(ids(&out), ["huge"]);
        assert_eq!(r.buffered_bytes(), 0);
    }

    fn of(secs: i64, id: &str, agent: &str, held: bool) -> Event {
        let mut e = ev(secs, id);
        e.agent_id = agent.into();
        e.await_verdict = held;
        e
    }

    #[test]
    fn issue_22_a_held_call_is_released_at_once_after_its_agents_past() {
        let mut r = Reorder::new(Duration::from_secs(30), 100);
        let mut out = Vec::new();
        r.push(of(100, "a-result", "a", false), &mut out);
        r.push(of(99, "b-earlier", "b", false), &mut out);
        r.push(of(105, "a-later", "a", false), &mut out);
        r.push(of(103, "a-call", "a", true), &mut out);
        assert_eq!(
            ids(&out),
            ["a-result", "a-call"],
            "the call waits for nothing, its agent's older events go first, and nothing newer or of another agent moves"
        );
        // The agent's events older than its released call are late now; another
        // agent's are not.
        r.push(of(101, "a-late", "a", false), &mut out);
        r.push(of(101, "b-in-time", "b", false), &mut out);
        assert_eq!(ids(&out), ["a-result", "a-call", "a-late"]);
        assert_eq!(r.late(), 1);
        r.finish(&mut out);
        assert_eq!(
            ids(&out),
            [
                "a-result",
                "a-call",
                "a-late",
                "b-earlier",
                "b-in-time",
                "a-later"
            ]
        );
    }

    #[test]
    fn issue_22_a_saved_buffer_carries_on_as_if_it_never_stopped() {
        let arrivals = [
            of(100, "1", "a", false),
            of(130, "2", "b", false),
            of(110, "3", "a", true),
            of(105, "4", "a", false),
            of(120, "5", "b", false),
            of(200, "6", "b", false),
            of(190, "7", "a", false),
        ];
        let whole = {
            let mut r = Reorder::new(Duration::from_secs(30), 100);
            let mut out = Vec::new();
            for e in arrivals.clone() {
                r.push(e, &mut out);
            }
            r.finish(&mut out);
            (ids(&out).join(","), r.late())
        };
        for cut in 0..arrivals.len() {
            let mut r = Reorder::new(Duration::from_secs(30), 100);
            let mut out = Vec::new();
            for e in arrivals[..cut].iter().cloned() {
                r.push(e, &mut out);
            }
            let saved = r.saved();
            let saved = Saved {
                newest: saved.newest,
                released_up_to: saved.released_up_to,
                agent_released: saved.agent_released,
                held: saved.held.into_iter().cloned().collect(),
            };
            let late = r.late();
            let mut r = Reorder::new(Duration::from_secs(30), 100);
            r.restore(saved);
            for e in arrivals[cut..].iter().cloned() {
                r.push(e, &mut out);
            }
            r.finish(&mut out);
            assert_eq!(
                (ids(&out).join(","), late + r.late()),
                whole,
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn issue_22_agent_marks_stay_bounded() {
        let mut r = Reorder::new(Duration::from_secs(3600), 100);
        let mut out = Vec::new();
        for i in 0..10_000 {
            r.push(
                of(1_000 + i, &i.to_string(), &format!("agent-{i}"), true),
                &mut out,
            );
            assert!(
                r.agent_released.len() <= 2 * 100 + 64 + 1,
                "{}",
                r.agent_released.len()
            );
        }
        assert_eq!(out.len(), 10_000, "every held call released at once");
    }
}
