//! Putting a stream back into event-time order: events are held until the watermark
//! (newest time seen minus the allowed lateness) passes them, then released oldest
//! first. Events older than what was already released are late: they are released at
//! once, processed, and counted. Memory is bounded by `max_buffered` events and by
//! `max_bytes` of their encoded size: 1,500 one-megabyte events with one timestamp
//! must not all wait in memory.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;

use toolgate_protocol::{Duration, Event, Timestamp};

struct Held {
    time: Timestamp,
    seq: u64,
    bytes: usize,
    event: Event,
}

impl PartialEq for Held {
    fn eq(&self, other: &Self) -> bool {
        (self.time, self.seq) == (other.time, other.seq)
    }
}
impl Eq for Held {}
impl PartialOrd for Held {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Held {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.time, self.seq).cmp(&(other.time, other.seq))
    }
}

/// The reorder buffer.
pub struct Reorder {
    heap: BinaryHeap<Reverse<Held>>,
    lateness: Duration,
    max_buffered: usize,
    max_bytes: usize,
    bytes: usize,
    early: u64,
    seq: u64,
    newest: Option<Timestamp>,
    released_up_to: Option<Timestamp>,
    late: u64,
}

impl Reorder {
    /// Holds events up to `lateness` behind the newest, at most `max_buffered` of them.
    pub fn new(lateness: Duration, max_buffered: usize) -> Self {
        Reorder {
            heap: BinaryHeap::new(),
            lateness,
            max_buffered: max_buffered.max(1),
            max_bytes: usize::MAX,
            bytes: 0,
            early: 0,
            seq: 0,
            newest: None,
            released_up_to: None,
            late: 0,
        }
    }

    /// Bounds the events held by their encoded size too ([`Event::encoded_len`]); past it
    /// the oldest are released early, as past the count bound.
    pub fn with_max_bytes(mut self, max_bytes: usize) -> Self {
        self.max_bytes = max_bytes.max(1);
        self
    }

    /// Encoded bytes of the events held now.
    pub fn buffered_bytes(&self) -> usize {
        self.bytes
    }

    /// Events released before the watermark passed them, because a bound was reached.
    pub fn early(&self) -> u64 {
        self.early
    }

    /// Events that arrived after newer ones had already been released.
    pub fn late(&self) -> u64 {
        self.late
    }

    /// The time up to which every event has been released; detectors may expire
    /// state older than this.
    pub fn watermark(&self) -> Option<Timestamp> {
        self.released_up_to
    }

    /// Adds an event; pushes every event that is now ready onto `ready`, in order.
    pub fn push(&mut self, event: Event, ready: &mut Vec<Event>) {
        let time = event.time;
        if self.released_up_to.is_some_and(|r| time < r) {
            self.late += 1;
            ready.push(event);
            return;
        }
        self.seq += 1;
        let bytes = event.encoded_len();
        self.bytes += bytes;
        self.heap.push(Reverse(Held {
            time,
            seq: self.seq,
            bytes,
            event,
        }));
        let newest = self.newest.map_or(time, |n| n.max(time));
        self.newest = Some(newest);
        let watermark = newest.saturating_sub(self.lateness);
        while let Some(Reverse(top)) = self.heap.peek() {
            let full = self.heap.len() > self.max_buffered || self.bytes > self.max_bytes;
            if top.time > watermark && !full {
                break;
            }
            if top.time > watermark {
                self.early += 1;
            }
            self.release_one(ready);
        }
    }

    /// Releases everything still held, in order.
    pub fn finish(&mut self, ready: &mut Vec<Event>) {
        while !self.heap.is_empty() {
            self.release_one(ready);
        }
    }

    fn release_one(&mut self, ready: &mut Vec<Event>) {
        if let Some(Reverse(held)) = self.heap.pop() {
            self.bytes -= held.bytes;
            self.released_up_to = Some(self.released_up_to.map_or(held.time, |r| r.max(held.time)));
            ready.push(held.event);
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
        assert_eq!(r.heap.len(), 3);
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
        assert!(r.heap.len() < 11, "{} held", r.heap.len());
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
}
