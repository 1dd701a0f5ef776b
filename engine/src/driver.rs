//! The one path from events to findings, for the stream (`toolgate run`, one driver
//! per partition) and the replay (`toolgate analyze`, one driver): events go in in
//! arrival order, are put back in event-time order ([`Reorder`], with the bounded
//! lateness of `[event_time]`), run through the detectors, and the watermark is
//! advanced. Fed the same events in the same order, both put them in the same order.
//! Their findings can still differ where the stream's clock enters: its watermark is
//! per partition, and a quiet partition processes what it holds after `idle_timeout`.
//!
//! Each step says which events it processed and which findings observing each one
//! made, so the stream can answer a held call from exactly its own findings.

use std::ops::Range;

use toolgate_detectors::Pipeline;
use toolgate_protocol::config::EventTimeConfig;
use toolgate_protocol::{Duration, Finding, Timestamp};

use crate::event_time::{Pending, Reorder, Saved};

/// Detectors behind a reorder buffer.
pub struct Driver<T> {
    pipeline: Pipeline,
    reorder: Reorder<T>,
}

/// What one step of the driver did.
pub struct Step<T> {
    /// The events processed, in order, each with the range of [`Step::findings`]
    /// observing it made.
    pub processed: Vec<(T, Range<usize>)>,
    /// The findings made, in order: each processed event's, then the watermark's.
    pub findings: Vec<Finding>,
    ready: Vec<T>,
}

impl<T> Default for Step<T> {
    fn default() -> Self {
        Step {
            processed: Vec::new(),
            findings: Vec::new(),
            ready: Vec::new(),
        }
    }
}

impl<T> Step<T> {
    /// Empties the step for the next one, keeping its memory.
    pub fn clear(&mut self) {
        self.processed.clear();
        self.findings.clear();
    }
}

impl<T: Pending> Driver<T> {
    /// `pipeline` behind a reorder buffer bounded as `[event_time]` says.
    pub fn new(pipeline: Pipeline, event_time: &EventTimeConfig) -> Self {
        Driver {
            pipeline,
            reorder: Reorder::new(event_time.allowed_lateness, event_time.max_buffered_events)
                .with_max_bytes(event_time.max_buffered_bytes),
        }
    }

    /// The detectors.
    pub fn pipeline(&self) -> &Pipeline {
        &self.pipeline
    }

    /// The detectors, to restore or snapshot them.
    pub fn pipeline_mut(&mut self) -> &mut Pipeline {
        &mut self.pipeline
    }

    /// The reorder buffer, for its counters and its state.
    pub fn reorder(&self) -> &Reorder<T> {
        &self.reorder
    }

    /// Carries on from a checkpoint's buffer.
    pub fn restore_buffer(&mut self, saved: Saved<T>) {
        self.reorder.restore(saved);
    }

    /// Takes one event, in arrival order; processes what it makes ready.
    pub fn push(&mut self, item: T, step: &mut Step<T>) {
        let mut ready = std::mem::take(&mut step.ready);
        self.reorder.push(item, &mut ready);
        self.process(&mut ready, step);
        step.ready = ready;
        if let Some(w) = self.reorder.watermark() {
            self.pipeline.advance(w, &mut step.findings);
        }
    }

    /// The input went quiet: nothing earlier is coming, so everything held is
    /// processed, and event time moves on to `clock` minus the allowed lateness.
    pub fn idle(&mut self, clock: Timestamp, lateness: Duration, step: &mut Step<T>) {
        self.flush(step);
        let released = self.reorder.watermark().unwrap_or(Timestamp::EPOCH);
        let w = clock.saturating_sub(lateness).max(released);
        self.pipeline.advance(w, &mut step.findings);
    }

    /// The input ended: everything held is processed. The detectors' own state
    /// stays open until [`Pipeline::finish`].
    pub fn finish(&mut self, step: &mut Step<T>) {
        self.flush(step);
        if let Some(w) = self.reorder.watermark() {
            self.pipeline.advance(w, &mut step.findings);
        }
    }

    fn flush(&mut self, step: &mut Step<T>) {
        if self.reorder.buffered() == 0 {
            return;
        }
        let mut ready = std::mem::take(&mut step.ready);
        self.reorder.finish(&mut ready);
        self.process(&mut ready, step);
        step.ready = ready;
    }

    fn process(&mut self, ready: &mut Vec<T>, step: &mut Step<T>) {
        for item in ready.drain(..) {
            let start = step.findings.len();
            self.pipeline.observe(item.event(), &mut step.findings);
            step.processed.push((item, start..step.findings.len()));
        }
    }
}
