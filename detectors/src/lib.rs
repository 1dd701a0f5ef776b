//! All of toolgate's detection logic, and the seam every detector plugs into.
//!
//! A [`Detector`] observes events in event-time order and emits [`FindingDraft`]s; the
//! [`Pipeline`] runs the configured detectors, gives each draft its deterministic id and
//! folds repeats into one finding ([`FindingFolder`]). The [`registry`] lists every
//! detector that exists and builds the configured set from `toolgate.toml`.
//!
//! Pure and deterministic: no I/O, no wall clock (time is the events' time and the
//! watermark the caller passes in), no threads. The same events in the same order give
//! the same findings, byte for byte, in the engine, in `toolgate analyze` and in the
//! sink. State is bounded by each detector's caps and restorable through
//! [`Detector::snapshot`] / [`Detector::restore`].
#![deny(missing_docs)]

pub mod definitions;
mod draft;
pub mod factory;
mod fold;
pub mod glob;
mod hash;
pub mod injection;
mod late;
pub mod metrics;
pub mod mode;
mod outcome;
mod pipeline;
pub mod policy;
pub mod provenance;
mod registry;
pub mod secrets;
pub mod sequence;
pub mod session;
pub mod volume;

use toolgate_protocol::{Event, Timestamp};

pub use draft::{FindingDraft, finding_id};
pub use factory::{BuildError, Configured, DetectorFactory, Files, NoFiles, settings};
pub use fold::{EmitPolicy, FindingFolder, FoldStats};
pub use pipeline::{Pipeline, RestoreReport};
pub use registry::{build_detectors, build_pipeline, load_files, registry};

/// One detector. Implementations hold their own bounded state.
pub trait Detector: Send {
    /// The detector's name: its key under `[detectors]` in `toolgate.toml`.
    fn name(&self) -> &'static str;

    /// Looks at one event (in event-time order, give or take allowed lateness) and
    /// pushes any findings it raises.
    fn observe(&mut self, event: &Event, out: &mut Vec<FindingDraft>);

    /// Event time has reached `watermark`: expire state older than the detector's
    /// horizon and emit findings that were waiting for time to pass ("not followed by
    /// within T"). Called with non-decreasing watermarks.
    fn advance(&mut self, watermark: Timestamp, out: &mut Vec<FindingDraft>) {
        let _ = (watermark, out);
    }

    /// The input has ended (an offline replay): raise whatever was waiting for more
    /// events or for time to pass. Not called by the streaming engine.
    fn finish(&mut self, out: &mut Vec<FindingDraft>) {
        let _ = out;
    }

    /// The detector's state, in a form [`Detector::restore`] reads back.
    fn snapshot(&self) -> Result<Vec<u8>, StateError>;

    /// Replaces the detector's state with a snapshot.
    fn restore(&mut self, snapshot: &[u8]) -> Result<(), StateError>;

    /// Current sizes of the detector's state, for metrics ([`metrics::StateGauge`]).
    fn gauges(&self, out: &mut Vec<(metrics::StateGauge, u64)>) {
        let _ = out;
    }
}

/// `restore` for a detector that keeps no state: only an empty snapshot fits.
pub(crate) fn restore_stateless(name: &str, snapshot: &[u8]) -> Result<(), StateError> {
    if snapshot.is_empty() {
        Ok(())
    } else {
        Err(StateError::Decode {
            what: name.into(),
            message: "this detector keeps no state, but the snapshot has some".into(),
        })
    }
}

/// A snapshot could not be written or read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StateError {
    /// The state could not be encoded.
    #[error("cannot snapshot {what}: {message}")]
    Encode {
        /// Whose state.
        what: String,
        /// Why.
        message: String,
    },
    /// The snapshot is corrupt or from an incompatible version.
    #[error("cannot restore {what}: {message}")]
    Decode {
        /// Whose state.
        what: String,
        /// Why.
        message: String,
    },
}
