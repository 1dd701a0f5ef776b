//! A worker thread owns the detector state of some partitions of the events topic
//! (partition `p` goes to worker `p % workers`) and runs their events through it: one
//! agent's events are on one partition, so one agent's state is on one worker.
//!
//! Each partition runs its events through a [`Driver`], the same path `analyze` takes:
//! events are put back in event-time order within the allowed lateness (per
//! partition, its newest event time minus the lateness is its watermark), and a held
//! call is processed on arrival, after its agent's earlier events, so its verdict is
//! never kept waiting. An event older than what was already processed is late: it is
//! still processed (per-agent detectors still learn from it) and counted. A partition
//! with no events for `idle_timeout` processes everything it holds (nothing earlier is
//! coming) and lets its event time follow the wall clock, so windows of quiet agents
//! close and other partitions never wait for it.
//!
//! Records arrive undecoded, in batches, and are decoded here, so decoding runs on
//! every worker at once rather than on the consumer's thread. Work arrives through one
//! channel, so a checkpoint or a revocation is handled after every record dispatched
//! before it.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender};
use std::time::{Duration as WallDuration, Instant};

use anyhow::{Context, Result};
use toolgate_detectors::{EmitPolicy, build_pipeline, definitions};
use toolgate_ingest::kafka::{DEAD_LETTER_MAX_BYTES, KafkaRejected, Polled, RawRecord};
use toolgate_protocol::decision::Decision;
use toolgate_protocol::{
    DetectorKind, Duration, Event, Finding, FindingAction, FindingOutcome, Severity, Timestamp,
};

use super::checkpoint::{self, Checkpoint};
use super::decisions::{DecisionMaker, ForgedEvidence, key_matches};
use super::driver::{Driver, Step};
use super::event_time::Pending;
use super::writers::Row;
use super::{Counters, Shared, metrics};

/// What a worker is asked to do.
pub enum Work {
    /// Decode and process these records, in order.
    Records(Vec<RawRecord>),
    /// Take over these partitions; answer where each starts.
    Assign {
        /// The partitions.
        partitions: Vec<i32>,
        /// Start offsets, in order (`None`: the group's committed offset).
        reply: SyncSender<Vec<Option<i64>>>,
    },
    /// Snapshot these partitions (all of this worker's when `None`), then drop them if
    /// `release`.
    Snapshot {
        /// Which.
        partitions: Option<Vec<i32>>,
        /// Give them up after the snapshot (a revocation).
        release: bool,
        /// The checkpoints, or the first error.
        reply: SyncSender<Result<Vec<(i32, Checkpoint)>, String>>,
    },
}

/// An event as its partition delivered it.
pub struct Arrived {
    /// The event.
    pub event: Event,
    /// Its record's key was not its `agent_id`: what it causes for that agent is not
    /// signed.
    pub forged: bool,
    /// The size of the record it was decoded from.
    pub bytes: usize,
    /// Its record's offset: the partition's commit stays before its oldest held
    /// event, so a lost checkpoint costs state, never an unprocessed event.
    pub offset: i64,
}

impl Pending for Arrived {
    fn event(&self) -> &Event {
        &self.event
    }

    fn bytes(&self) -> usize {
        self.bytes
    }

    /// A forged event gets no verdict, so it must not hurry (and mark late) the
    /// events of the agent it claims.
    fn urgent(&self) -> bool {
        self.event.await_verdict && !self.forged
    }
}

struct PartitionState {
    driver: Driver<Arrived>,
    /// The offset after the last record read (or the checkpoint's): the events held
    /// for reordering are in the checkpoint with the detectors' state.
    next_offset: Option<i64>,
    /// When an event that was not late last arrived: quiet is measured from here, so
    /// dead letters and late events cannot keep held events waiting.
    last_record: Instant,
    /// Recently processed events whose record key was not their agent_id (held ones
    /// carry their own mark, checkpointed).
    forged: ForgedEvidence,
}

/// One worker's loop; returns when the channel closes.
pub fn run(shared: Arc<Shared>, work: Receiver<Work>) {
    let mut worker = Worker {
        shared,
        partitions: BTreeMap::new(),
        step: Step::default(),
        held: 0,
    };
    let tick = WallDuration::from_millis(100);
    let mut next_tick = Instant::now() + tick;
    loop {
        match work.recv_timeout(tick) {
            Ok(w) => worker.handle(w),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        let now = Instant::now();
        if now >= next_tick {
            worker.advance_idle(now);
            worker.report_state();
            next_tick = now + tick;
        }
    }
}

struct Worker {
    shared: Arc<Shared>,
    partitions: BTreeMap<i32, PartitionState>,
    step: Step<Arrived>,
    /// This worker's share of [`Counters::held`], as last reported.
    held: u64,
}

impl Worker {
    fn handle(&mut self, work: Work) {
        match work {
            Work::Records(records) => {
                self.shared
                    .gauges
                    .worker_queue
                    .fetch_sub(records.len() as i64, Ordering::Relaxed);
                let shared = Arc::clone(&self.shared);
                let topic = &shared.topics.events;
                let max_bytes = shared.config.limits.max_event_bytes;
                for record in records {
                    // The key says whose producer wrote it: checked against the event.
                    let key = record.key.clone();
                    let bytes = record.payload.len();
                    match record.decode(topic, max_bytes, DEAD_LETTER_MAX_BYTES) {
                        Polled::Event {
                            partition,
                            offset,
                            event,
                        } => self.event(partition, offset, key.as_deref(), *event, bytes),
                        Polled::Rejected(r) => self.rejected(&r),
                    }
                }
            }
            Work::Assign { partitions, reply } => {
                let starts = partitions.iter().map(|p| self.assign(*p)).collect();
                let _ = reply.send(starts);
            }
            Work::Snapshot {
                partitions,
                release,
                reply,
            } => {
                let _ = reply.send(self.snapshot(partitions, release));
            }
        }
    }

    fn fresh_driver(&self) -> Result<Driver<Arrived>> {
        let mut pipeline = build_pipeline(&self.shared.config, EmitPolicy::FirstAndFinal)?;
        if let Some(pins) = &self.shared.pins {
            pipeline
                .restore_detector(definitions::NAME, pins)
                .context("the pins file")?;
        }
        Ok(Driver::new(pipeline, &self.shared.config.event_time))
    }

    /// Takes a partition over from its checkpoint, if it has a readable one.
    fn assign(&mut self, partition: i32) -> Option<i64> {
        let mut driver = match self.fresh_driver() {
            Ok(d) => d,
            Err(e) => {
                // The config was checked at start-up; this cannot differ per partition.
                tracing::error!(partition, error = format!("{e:#}"), "building detectors");
                return None;
            }
        };
        let store = &self.shared.checkpoints;
        let restored = store.load(partition).and_then(|ckpt| match ckpt {
            Some(c) => {
                driver
                    .pipeline_mut()
                    .restore(&c.pipeline)
                    .with_context(|| format!("restoring partition {partition}"))?;
                let held = checkpoint::decode_held(&c)
                    .with_context(|| format!("restoring partition {partition}'s held events"))?;
                driver.restore_buffer(held);
                Ok(Some(c.next_offset))
            }
            None => Ok(None),
        });
        let next_offset = match restored {
            Ok(c) => c,
            Err(e) => {
                let aside = store.quarantine(partition);
                tracing::error!(
                    partition,
                    error = format!("{e:#}"),
                    moved_aside = ?aside,
                    "unreadable checkpoint; the partition starts afresh from the committed offset"
                );
                // A half-restored pipeline is not trusted.
                if let Ok(d) = self.fresh_driver() {
                    driver = d;
                }
                None
            }
        };
        self.partitions.insert(
            partition,
            PartitionState {
                driver,
                next_offset,
                last_record: Instant::now(),
                forged: ForgedEvidence::default(),
            },
        );
        next_offset
    }

    fn snapshot(
        &mut self,
        partitions: Option<Vec<i32>>,
        release: bool,
    ) -> Result<Vec<(i32, Checkpoint)>, String> {
        let which: Vec<i32> =
            partitions.unwrap_or_else(|| self.partitions.keys().copied().collect());
        let mut out = Vec::new();
        for p in &which {
            let Some(state) = self.partitions.get(p) else {
                continue;
            };
            let Some(next_offset) = state.next_offset else {
                continue;
            };
            let pipeline = state
                .driver
                .pipeline()
                .snapshot()
                .map_err(|e| format!("snapshot of partition {p}: {e}"))?;
            out.push((
                *p,
                Checkpoint::new(next_offset, pipeline, &state.driver.reorder().saved()),
            ));
        }
        if release {
            for p in &which {
                self.partitions.remove(p);
            }
            if let Ok(mut state) = self.shared.gauges.state.lock() {
                state.retain(|(p, _), _| !which.contains(p));
            }
        }
        Ok(out)
    }

    fn event(
        &mut self,
        partition: i32,
        offset: i64,
        key: Option<&[u8]>,
        event: Event,
        bytes: usize,
    ) {
        let read = Instant::now();
        self.check_gap(partition, offset);
        let shared = Arc::clone(&self.shared);
        let counters = &shared.counters;
        let Some(state) = self.partitions.get_mut(&partition) else {
            // Not ours (a record fetched before a revocation): its new owner reads it.
            counters.inc(&counters.unowned);
            return;
        };
        counters.inc(&counters.events);
        state.next_offset = Some(offset + 1);
        // An event under another agent's key (or none) is still analysed, but what
        // it causes for the agent it claims is not signed (README, trust model).
        let forged = !key_matches(key, &event.agent_id);
        if forged {
            counters.inc(&counters.key_mismatch);
            let mismatched = Counters::get(&counters.key_mismatch);
            if mismatched.is_power_of_two() {
                // Whatever the producer put there, escaped and cut short.
                let key = key.map(|k| String::from_utf8_lossy(&k[..k.len().min(64)]).into_owned());
                tracing::warn!(
                    partition,
                    offset,
                    agent_id = ?event.agent_id,
                    key = ?key,
                    mismatched,
                    "an event's Kafka record key is not its agent_id: its findings go out, it decides nothing"
                );
            }
        }
        let late = state.driver.reorder().late();
        self.step.clear();
        let arrived = Arrived {
            event,
            forged,
            bytes,
            offset,
        };
        state.driver.push(arrived, &mut self.step);
        if state.driver.reorder().late() > late {
            counters.inc(&counters.late);
        } else {
            state.last_record = Instant::now();
        }
        processed(&shared, &mut state.forged, &mut self.step, read);
    }

    fn rejected(&mut self, rejected: &KafkaRejected) {
        self.check_gap(rejected.partition, rejected.offset);
        let shared = &self.shared;
        let Some(state) = self.partitions.get_mut(&rejected.partition) else {
            // As for events: the partition's new owner dead-letters it.
            shared.counters.inc(&shared.counters.unowned);
            return;
        };
        state.next_offset = Some(rejected.offset + 1);
        shared.counters.inc(&shared.counters.rejected);
        metrics::count(&shared.gauges.rejected_by_kind, rejected.error.kind());
        let mut headers = rejected.headers();
        let mut key = rejected.key.clone().unwrap_or_default();
        let mut payload = std::borrow::Cow::Borrowed(&rejected.raw[..]);
        // A malformed record carries the same secrets as a good one: kept redacted,
        // as text, unless `[dead_letter] keep_raw`.
        if let Some(r) = &shared.dead_letter_redactor {
            for (_, value) in headers.iter_mut() {
                r.redact_text_in_place(value);
            }
            headers.push(("toolgate.redacted", "true".to_string()));
            // Bytes that held a secret are kept as redacted text; others as they came.
            let redact = |bytes: &[u8]| {
                let mut text = String::from_utf8_lossy(bytes).into_owned();
                (r.redact_text_in_place(&mut text) > 0).then(|| text.into_bytes())
            };
            if let Some(k) = redact(&key) {
                key = k;
            }
            if let Some(p) = redact(&rejected.raw) {
                payload = std::borrow::Cow::Owned(p);
            }
        }
        shared
            .outbox
            .send(&shared.topics.dlq, &key, &payload, Some(&headers));
    }

    /// Says so when a record comes from past the offset its partition expected next:
    /// the records between were deleted (retention passed the checkpoint or the
    /// consumer) and librdkafka skipped to the earliest left without a word. Logged,
    /// counted and reported as a finding, since detection never saw them.
    fn check_gap(&mut self, partition: i32, offset: i64) {
        let Some(expected) = self.partitions.get(&partition).and_then(|s| s.next_offset) else {
            return;
        };
        if offset <= expected {
            return;
        }
        let skipped = offset - expected;
        let shared = &self.shared;
        shared.counters.inc(&shared.counters.offset_gaps);
        shared
            .counters
            .offset_gap_records
            .fetch_add(u64::try_from(skipped).unwrap_or(0), Ordering::Relaxed);
        let topic = &shared.topics.events;
        tracing::warn!(
            %topic,
            partition,
            expected,
            got = offset,
            skipped,
            "offset gap: {skipped} records were deleted before they were read (retention passed the checkpoint or the consumer); detection never saw them"
        );
        // The engine's own finding, from no event: nothing forged in it.
        shared.emit(
            &[offset_gap_finding(topic, partition, expected, offset)],
            |_| false,
        );
    }

    /// The detectors' state gauges of each partition, for metrics.
    fn report_state(&mut self) {
        let held: u64 = self
            .partitions
            .values()
            .map(|s| s.driver.reorder().buffered() as u64)
            .sum();
        let counters = &self.shared.counters;
        counters.held.fetch_add(held, Ordering::Relaxed);
        counters.held.fetch_sub(self.held, Ordering::Relaxed);
        self.held = held;
        if let Ok(mut state) = self.shared.gauges.state.lock() {
            for (p, s) in &self.partitions {
                for (gauge, value) in s.driver.pipeline().gauges() {
                    state.insert((*p, gauge.name()), value);
                }
                let reorder = s.driver.reorder();
                for (gauge, value) in [
                    ("toolgate_engine_reorder_held_events", reorder.buffered()),
                    (
                        "toolgate_engine_reorder_held_bytes",
                        reorder.buffered_bytes(),
                    ),
                ] {
                    state.insert((*p, gauge), value as u64);
                }
                state.insert((*p, "toolgate_engine_reorder_early_total"), reorder.early());
            }
        }
    }

    /// Partitions quiet for `idle_timeout` process what they hold and follow the wall
    /// clock.
    fn advance_idle(&mut self, now: Instant) {
        let idle = self.shared.config.engine.idle_timeout.to_std();
        let lateness = self.shared.config.event_time.allowed_lateness;
        for state in self.partitions.values_mut() {
            let quiet = now.duration_since(state.last_record);
            if quiet < idle {
                continue;
            }
            if let Some(newest) = state.driver.reorder().newest() {
                let clock = newest.saturating_add(Duration::from_std(quiet));
                self.step.clear();
                state.driver.idle(clock, lateness, &mut self.step);
                processed(&self.shared, &mut state.forged, &mut self.step, now);
            }
        }
    }
}

/// Which findings of a step may not decide: one citing a forged event, one made
/// while observing a forged event for the agent it claims, and one the watermark made
/// in a step that observed a forged event for its agent.
struct Taint<'a> {
    forged: &'a ForgedEvidence,
    step: &'a Step<Arrived>,
    claimed: HashSet<&'a str>,
}

impl<'a> Taint<'a> {
    fn new(forged: &'a ForgedEvidence, step: &'a Step<Arrived>) -> Self {
        let claimed = step
            .processed
            .iter()
            .filter(|(a, _)| a.forged)
            .map(|(a, _)| a.event.agent_id.as_str())
            .collect();
        Taint {
            forged,
            step,
            claimed,
        }
    }

    /// Whether finding `k` of the step is tainted.
    fn of(&self, k: usize) -> bool {
        let f = &self.step.findings[k];
        if self.forged.taints(f, None) {
            return true;
        }
        // The processed event whose observation made finding k, if one did.
        let processed = &self.step.processed;
        let i = processed.partition_point(|(_, r)| r.end <= k);
        match processed.get(i) {
            Some((a, r)) if r.contains(&k) => a.forged && a.event.agent_id == f.agent_id,
            _ => self.claimed.contains(f.agent_id.as_str()),
        }
    }
}

/// The verdict on each held call a step processed, in order: the decision to sign,
/// or `None` when it may not be signed (the call was forged, or its block rests on
/// a tainted finding; the sink's fail mode answers it then).
fn verdicts(
    decisions: &DecisionMaker,
    step: &Step<Arrived>,
    taint: &Taint<'_>,
) -> Vec<Option<Decision>> {
    let findings = &step.findings;
    let mut out = Vec::new();
    for (arrived, range) in &step.processed {
        if !arrived.event.await_verdict {
            continue;
        }
        if arrived.forged {
            out.push(None);
            continue;
        }
        let own = &findings[range.clone()];
        // Earlier blocks count as their decisions would at the sink: a tainted one is
        // never signed, so it neither blocks the call nor spoils its verdict.
        let earlier: Vec<Finding> = (0..range.start)
            .filter(|&k| findings[k].action == FindingAction::Block && !taint.of(k))
            .map(|k| findings[k].clone())
            .collect();
        let Some(verdict) = decisions.verdict(&arrived.event, own, &earlier) else {
            continue;
        };
        let forged_basis = verdict.finding_ids.iter().any(|id| {
            range
                .clone()
                .any(|k| &findings[k].finding_id == id && taint.of(k))
        });
        out.push((!forged_basis).then_some(verdict));
    }
    out
}

/// What follows a driver's step: verdicts on the held calls it processed (first: an
/// agent is waiting on each), then its findings, then the history's rows. What a
/// forged event causes decides nothing ([`Taint`]).
fn processed(
    shared: &Shared,
    forged: &mut ForgedEvidence,
    step: &mut Step<Arrived>,
    read: Instant,
) {
    for (arrived, _) in &step.processed {
        if arrived.forged {
            forged.note(&arrived.event.event_id);
        }
    }
    let taint = Taint::new(forged, step);
    for answer in verdicts(&shared.decisions, step, &taint) {
        match answer {
            Some(verdict) => {
                shared.counters.inc(&shared.counters.verdicts);
                shared.send_decision(verdict);
                shared.gauges.verdict_latency.observe(read.elapsed());
            }
            None => metrics::count(&shared.gauges.decisions_refused, "key_mismatch"),
        }
    }
    let findings = &step.findings;
    let now = Timestamp::now().unix_nanos();
    for (arrived, _) in &step.processed {
        if let Ok(age) = u64::try_from(now - arrived.event.time.unix_nanos()) {
            shared
                .gauges
                .processing_latency
                .observe(WallDuration::from_nanos(age));
        }
    }
    for k in 0..findings.len() {
        shared.emit(&findings[k..=k], |_| taint.of(k));
    }
    if shared.keep_events {
        for (arrived, _) in step.processed.drain(..) {
            shared.write(Row::Event(Box::new(arrived.event)));
        }
    }
    step.clear();
}

/// The rule of the finding an offset gap makes.
pub const OFFSET_GAP_RULE: &str = "offset_gap";

/// Who the engine's own findings are about.
pub const ENGINE_AGENT_ID: &str = "toolgate-engine";

/// The finding that says records of `partition` from `expected` up to `got` were never
/// read. Its id depends on the gap only, so a replay after a restart repeats it.
pub fn offset_gap_finding(topic: &str, partition: i32, expected: i64, got: i64) -> Finding {
    let now = Timestamp::now();
    let skipped = got - expected;
    let group = format!("{topic}/{partition}/{expected}-{got}");
    Finding {
        schema: Default::default(),
        finding_id: toolgate_detectors::finding_id(
            DetectorKind::Volume,
            OFFSET_GAP_RULE,
            &group,
            Timestamp::from_unix_nanos(0),
        ),
        time: now,
        first_seen: now,
        last_seen: now,
        count: u64::try_from(skipped).unwrap_or(1).max(1),
        detector: DetectorKind::Volume,
        rule_id: OFFSET_GAP_RULE.into(),
        title: format!("{skipped} events of {topic} partition {partition} were lost unread"),
        description: format!(
            "Offsets {expected} to {} of {topic} partition {partition} were deleted before the engine read them (the topic's retention passed its checkpoint, or its consumer fell that far behind). Detection never saw those events: tool calls among them went unchecked.",
            got - 1
        ),
        severity: Severity::High,
        risk_score: 70,
        confidence: 1.0,
        agent_id: ENGINE_AGENT_ID.into(),
        session_id: format!("{topic}/{partition}"),
        server: None,
        tool: None,
        call_id: None,
        event_ids: Vec::new(),
        evidence: serde_json::json!({
            "topic": topic,
            "partition": partition,
            "expected_offset": expected,
            "next_offset_read": got,
            "skipped_offsets": skipped,
        }),
        tags: vec!["toolgate:telemetry-gap".into()],
        action: FindingAction::Alert,
        outcome: Some(FindingOutcome::Observed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outputs::tests::sample;
    use toolgate_protocol::decision::{DecisionAction, DecisionSigner};

    fn arrived(line: &str, forged: bool) -> Arrived {
        Arrived {
            event: Event::decode(line.as_bytes()).unwrap(),
            forged,
            bytes: line.len(),
            offset: 0,
        }
    }

    const RESULT: &str = r#"{"schema":"toolgate.event.v1","kind":"tool_result","event_id":"e1","time":"2025-03-01T10:00:01Z","agent_id":"agent-7","session_id":"sess-1","server":"mail","call_id":"c-1","tool":"read","result":{"content":[]}}"#;
    const CALL: &str = r#"{"schema":"toolgate.event.v1","kind":"tool_call","event_id":"e9","time":"2025-03-01T10:00:05Z","agent_id":"agent-7","session_id":"sess-1","server":"web","call_id":"c-9","tool":"post","arguments":{},"await_verdict":true}"#;

    /// A step that processed a result whose observation made a session-wide block,
    /// then the agent's held call, which made nothing itself.
    fn step(result_forged: bool, call_forged: bool) -> Step<Arrived> {
        let mut block = sample(FindingAction::Block);
        (block.server, block.tool, block.call_id) = (None, None, None);
        block.event_ids = vec!["e1".into()];
        let mut step = Step::default();
        step.findings.push(block);
        step.processed.push((arrived(RESULT, result_forged), 0..1));
        step.processed.push((arrived(CALL, call_forged), 1..1));
        step
    }

    fn answers(step: &Step<Arrived>) -> Vec<Option<DecisionAction>> {
        let maker = DecisionMaker::new(
            DecisionSigner::from_seed("k1", [7; 32]),
            Duration::from_secs(60),
        );
        let forged = ForgedEvidence::default();
        verdicts(&maker, step, &Taint::new(&forged, step))
            .into_iter()
            .map(|v| v.map(|d| d.action))
            .collect()
    }

    #[test]
    fn issue_22_an_earlier_block_in_the_step_blocks_the_held_call_unless_forged() {
        assert_eq!(
            answers(&step(false, false)),
            [Some(DecisionAction::Block)],
            "the sink had not seen the earlier block's decision yet"
        );
        assert_eq!(
            answers(&step(true, false)),
            [Some(DecisionAction::Allow)],
            "a forged event's block is never signed, so it neither blocks nor spoils the verdict"
        );
        assert_eq!(
            answers(&step(false, true)),
            [None],
            "a forged call gets no verdict"
        );
    }
}
