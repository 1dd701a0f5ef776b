//! The configured detectors run together over one ordered stream of events.

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};
use toolgate_protocol::{Event, Finding, FindingOutcome, Timestamp};

use crate::fold::{FindingFolder, FoldStats, FolderState};
use crate::outcome;
use crate::secrets::Redactor;
use crate::{Detector, FindingDraft, StateError};

/// Detectors plus the folder that turns their drafts into findings.
pub struct Pipeline {
    detectors: Vec<Box<dyn Detector>>,
    folder: FindingFolder,
    drafts: Vec<FindingDraft>,
    watermark: Timestamp,
    redactor: Redactor,
    redacted: u64,
}

/// What a restore could not match between the snapshot and this pipeline.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RestoreReport {
    /// Detectors in the snapshot that this pipeline does not run (their state was dropped).
    pub dropped: Vec<String>,
    /// Detectors this pipeline runs that the snapshot had no state for (they start empty).
    pub fresh: Vec<String>,
}

#[derive(Serialize, Deserialize)]
struct PipelineState {
    version: u32,
    watermark: Timestamp,
    folder: FolderState,
    detectors: BTreeMap<String, String>,
}

const STATE_VERSION: u32 = 1;

impl Pipeline {
    /// Runs `detectors`, folding their findings with `folder`.
    pub fn new(detectors: Vec<Box<dyn Detector>>, folder: FindingFolder) -> Self {
        Pipeline {
            detectors,
            folder,
            drafts: Vec::new(),
            watermark: Timestamp::from_unix_nanos(i64::MIN),
            redactor: Redactor::disabled(),
            redacted: 0,
        }
    }

    /// Redacts every finding's title, description and evidence with `redactor` before
    /// it is folded, so no secret a detector quoted leaves the pipeline.
    pub fn set_redactor(&mut self, redactor: Redactor) {
        self.redactor = redactor;
    }

    /// Values redacted from findings so far.
    pub fn redacted_values(&self) -> u64 {
        self.redacted
    }

    /// Folds the drafts made; `observed` is the event they came from (none for a
    /// window closing or the end), which says what was done about each.
    fn fold_drafts(&mut self, observed: Option<&Event>, out: &mut Vec<Finding>) {
        let fates = match observed {
            Some(event) => outcome::of_drafts(event, &self.drafts),
            None => vec![FindingOutcome::Observed; self.drafts.len()],
        };
        for (mut draft, fate) in self.drafts.drain(..).zip(fates) {
            self.redacted += self.redactor.redact_draft(&mut draft) as u64;
            self.folder.add(draft, fate, out);
        }
    }

    /// Every detector's state gauges, for metrics.
    pub fn gauges(&self) -> Vec<(crate::metrics::StateGauge, u64)> {
        let mut out = Vec::new();
        for d in &self.detectors {
            d.gauges(&mut out);
        }
        out
    }

    /// Names of the detectors, in the order they run.
    pub fn detector_names(&self) -> Vec<&'static str> {
        self.detectors.iter().map(|d| d.name()).collect()
    }

    /// Folding counters.
    pub fn fold_stats(&self) -> FoldStats {
        self.folder.stats()
    }

    /// Feeds one event to every detector; pushes findings that are ready.
    pub fn observe(&mut self, event: &Event, out: &mut Vec<Finding>) {
        for d in &mut self.detectors {
            d.observe(event, &mut self.drafts);
        }
        self.fold_drafts(Some(event), out);
        if let Some((call, really)) = outcome::settlement(event) {
            self.folder.settle(&call, really, event.time, out);
        }
    }

    /// Event time reached `watermark` (ignored if it goes backwards).
    pub fn advance(&mut self, watermark: Timestamp, out: &mut Vec<Finding>) {
        if watermark <= self.watermark {
            return;
        }
        self.watermark = watermark;
        for d in &mut self.detectors {
            d.advance(watermark, &mut self.drafts);
        }
        self.fold_drafts(None, out);
        self.folder.advance(watermark, out);
    }

    /// End of input: every open finding is emitted.
    pub fn finish(&mut self, out: &mut Vec<Finding>) {
        for d in &mut self.detectors {
            d.finish(&mut self.drafts);
        }
        self.fold_drafts(None, out);
        self.folder.flush(out);
    }

    /// The state of every detector and of the folder.
    pub fn snapshot(&self) -> Result<Vec<u8>, StateError> {
        let mut detectors = BTreeMap::new();
        for d in &self.detectors {
            detectors.insert(d.name().to_string(), B64.encode(d.snapshot()?));
        }
        let state = PipelineState {
            version: STATE_VERSION,
            watermark: self.watermark,
            folder: self.folder.state(),
            detectors,
        };
        serde_json::to_vec(&state).map_err(|e| StateError::Encode {
            what: "pipeline".into(),
            message: e.to_string(),
        })
    }

    /// The state of one detector, if it runs here.
    pub fn detector_snapshot(&self, name: &str) -> Option<Result<Vec<u8>, StateError>> {
        self.detectors
            .iter()
            .find(|d| d.name() == name)
            .map(|d| d.snapshot())
    }

    /// Restores one detector's state; `false` if no detector of that name runs here.
    pub fn restore_detector(&mut self, name: &str, snapshot: &[u8]) -> Result<bool, StateError> {
        match self.detectors.iter_mut().find(|d| d.name() == name) {
            Some(d) => d.restore(snapshot).map(|()| true),
            None => Ok(false),
        }
    }

    /// Restores a snapshot taken by [`Pipeline::snapshot`].
    pub fn restore(&mut self, snapshot: &[u8]) -> Result<RestoreReport, StateError> {
        let decode_err = |what: &str, message: String| StateError::Decode {
            what: what.to_string(),
            message,
        };
        let mut state: PipelineState =
            serde_json::from_slice(snapshot).map_err(|e| decode_err("pipeline", e.to_string()))?;
        if state.version != STATE_VERSION {
            return Err(decode_err(
                "pipeline",
                format!(
                    "snapshot version {} (this build reads {STATE_VERSION})",
                    state.version
                ),
            ));
        }
        let mut report = RestoreReport::default();
        for d in &mut self.detectors {
            match state.detectors.remove(d.name()) {
                Some(b64) => {
                    let bytes = B64
                        .decode(b64)
                        .map_err(|e| decode_err(d.name(), e.to_string()))?;
                    d.restore(&bytes)?;
                }
                None => report.fresh.push(d.name().to_string()),
            }
        }
        report.dropped = state.detectors.into_keys().collect();
        self.folder.set_state(state.folder);
        self.watermark = state.watermark;
        Ok(report)
    }
}
