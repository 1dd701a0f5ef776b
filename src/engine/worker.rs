//! A worker thread owns the detector state of some partitions of the events topic
//! (partition `p` goes to worker `p % workers`) and runs their events through it, in
//! the order the partition holds them: one agent's events are on one partition, so
//! one agent's state is on one worker.
//!
//! Event time is per partition: its watermark is the newest event time seen minus the
//! allowed lateness. An event older than the watermark is late: it is still processed
//! (per-agent detectors still learn from it) and counted. A partition with no events
//! for `idle_timeout` lets its event time follow the wall clock, so windows of quiet
//! agents close and other partitions never wait for it.
//!
//! Records arrive undecoded, in batches, and are decoded here, so decoding runs on
//! every worker at once rather than on the consumer's thread. Work arrives through one
//! channel, so a checkpoint or a revocation is handled after every record dispatched
//! before it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender};
use std::time::{Duration as WallDuration, Instant};

use anyhow::{Context, Result};
use toolgate_detectors::{EmitPolicy, Pipeline, build_pipeline, definitions};
use toolgate_ingest::kafka::{KafkaRejected, Polled, RawRecord};
use toolgate_protocol::{Duration, Event, Finding, Timestamp};

use super::checkpoint::Checkpoint;
use super::writers::Row;
use super::{Shared, metrics};

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

struct PartitionState {
    pipeline: Pipeline,
    /// The offset after the last record processed (or the checkpoint's).
    next_offset: Option<i64>,
    newest: Option<Timestamp>,
    last_record: Instant,
}

/// One worker's loop; returns when the channel closes.
pub fn run(shared: Arc<Shared>, work: Receiver<Work>) {
    let mut worker = Worker {
        shared,
        partitions: BTreeMap::new(),
        findings: Vec::new(),
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
    findings: Vec<Finding>,
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
                    match record.decode(topic, max_bytes) {
                        Polled::Event {
                            partition,
                            offset,
                            event,
                        } => self.event(partition, offset, *event),
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

    fn fresh_pipeline(&self) -> Result<Pipeline> {
        let mut pipeline = build_pipeline(&self.shared.config, EmitPolicy::FirstAndFinal)?;
        if let Some(pins) = &self.shared.pins {
            pipeline
                .restore_detector(definitions::NAME, pins)
                .context("the pins file")?;
        }
        Ok(pipeline)
    }

    /// Takes a partition over from its checkpoint, if it has a readable one.
    fn assign(&mut self, partition: i32) -> Option<i64> {
        let mut pipeline = match self.fresh_pipeline() {
            Ok(p) => p,
            Err(e) => {
                // The config was checked at start-up; this cannot differ per partition.
                tracing::error!(partition, error = format!("{e:#}"), "building detectors");
                return None;
            }
        };
        let store = &self.shared.checkpoints;
        let restored = store.load(partition).and_then(|ckpt| match ckpt {
            Some(c) => pipeline
                .restore(&c.pipeline)
                .map(|_| Some(c))
                .with_context(|| format!("restoring partition {partition}")),
            None => Ok(None),
        });
        let checkpoint = match restored {
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
                if let Ok(p) = self.fresh_pipeline() {
                    pipeline = p;
                }
                None
            }
        };
        let next_offset = checkpoint.as_ref().map(|c| c.next_offset);
        self.partitions.insert(
            partition,
            PartitionState {
                pipeline,
                next_offset,
                newest: checkpoint.and_then(|c| c.newest),
                last_record: Instant::now(),
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
                .pipeline
                .snapshot()
                .map_err(|e| format!("snapshot of partition {p}: {e}"))?;
            out.push((
                *p,
                Checkpoint {
                    next_offset,
                    newest: state.newest,
                    pipeline,
                },
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

    fn event(&mut self, partition: i32, offset: i64, event: Event) {
        let read = Instant::now();
        let shared = Arc::clone(&self.shared);
        let counters = &shared.counters;
        let Some(state) = self.partitions.get_mut(&partition) else {
            // Not ours (a record fetched before a revocation): its new owner reads it.
            counters.inc(&counters.unowned);
            return;
        };
        counters.inc(&counters.events);
        let lateness = shared.config.event_time.allowed_lateness;
        if state
            .newest
            .is_some_and(|n| event.time < n.saturating_sub(lateness))
        {
            counters.inc(&counters.late);
        }
        let newest = state.newest.map_or(event.time, |n| n.max(event.time));
        state.newest = Some(newest);
        state.last_record = Instant::now();
        state.next_offset = Some(offset + 1);
        self.findings.clear();
        state.pipeline.observe(&event, &mut self.findings);
        // Answer a held call before anything else: an agent is waiting on it.
        if let Some(verdict) = shared.decisions.verdict(&event, &self.findings) {
            counters.inc(&counters.verdicts);
            shared.send_decision(verdict);
            shared.gauges.verdict_latency.observe(read.elapsed());
        }
        let age = Timestamp::now().unix_nanos() - event.time.unix_nanos();
        if let Ok(age) = u64::try_from(age) {
            shared
                .gauges
                .processing_latency
                .observe(WallDuration::from_nanos(age));
        }
        state
            .pipeline
            .advance(newest.saturating_sub(lateness), &mut self.findings);
        let findings = std::mem::take(&mut self.findings);
        shared.emit(&findings);
        self.findings = findings;
        if shared.keep_events {
            shared.write(Row::Event(Box::new(event)));
        }
    }

    fn rejected(&mut self, rejected: &KafkaRejected) {
        let shared = &self.shared;
        let Some(state) = self.partitions.get_mut(&rejected.partition) else {
            // As for events: the partition's new owner dead-letters it.
            shared.counters.inc(&shared.counters.unowned);
            return;
        };
        state.next_offset = Some(rejected.offset + 1);
        state.last_record = Instant::now();
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
            for bytes in [&mut key, payload.to_mut()] {
                let mut text = String::from_utf8_lossy(bytes).into_owned();
                r.redact_text_in_place(&mut text);
                *bytes = text.into_bytes();
            }
        }
        shared
            .outbox
            .send(&shared.topics.dlq, &key, &payload, Some(&headers));
    }

    /// The detectors' state gauges of each partition, for metrics.
    fn report_state(&self) {
        if let Ok(mut state) = self.shared.gauges.state.lock() {
            for (p, s) in &self.partitions {
                for (gauge, value) in s.pipeline.gauges() {
                    state.insert((*p, gauge.name()), value);
                }
            }
        }
    }

    /// Partitions quiet for `idle_timeout` follow the wall clock.
    fn advance_idle(&mut self, now: Instant) {
        let idle = wall(self.shared.config.engine.idle_timeout);
        let lateness = self.shared.config.event_time.allowed_lateness;
        self.findings.clear();
        for state in self.partitions.values_mut() {
            let quiet = now.duration_since(state.last_record);
            if quiet < idle {
                continue;
            }
            if let Some(newest) = state.newest {
                let nanos = i64::try_from(quiet.as_nanos()).unwrap_or(i64::MAX);
                let clock = newest.saturating_add(Duration::from_nanos(nanos));
                state
                    .pipeline
                    .advance(clock.saturating_sub(lateness), &mut self.findings);
            }
        }
        if !self.findings.is_empty() {
            let findings = std::mem::take(&mut self.findings);
            self.shared.emit(&findings);
            self.findings = findings;
        }
    }
}

fn wall(d: Duration) -> WallDuration {
    WallDuration::from_nanos(u64::try_from(d.as_nanos()).unwrap_or(0))
}
