//! The list of every detector toolgate has, and how the configured set is built.

use serde::de::DeserializeOwned;
use serde_json::Value;
use toolgate_protocol::DetectorKind;
use toolgate_protocol::config::Config;

use crate::Detector;
use crate::fold::{EmitPolicy, FindingFolder};
use crate::pipeline::Pipeline;
use crate::secrets::Redactor;

/// Builds a detector from the whole config and its own table (without `enabled`).
pub type BuildFn = fn(&Config, Value) -> Result<Box<dyn Detector>, BuildError>;

/// How to build one detector from its `[detectors.<name>]` table.
pub struct DetectorFactory {
    /// Key under `[detectors]`.
    pub name: &'static str,
    /// Family of the findings it raises.
    pub kind: DetectorKind,
    /// One line for `--help` and docs.
    pub summary: &'static str,
    /// Builds the detector.
    pub build: BuildFn,
}

/// A detector could not be built from the config.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// `[detectors.<name>]` names no detector.
    #[error("`detectors.{name}`: no such detector; known detectors: {known}")]
    UnknownDetector {
        /// The name in the config.
        name: String,
        /// The names the registry has.
        known: String,
    },
    /// `[redaction]` is wrong.
    #[error(transparent)]
    Redaction(#[from] crate::secrets::RedactionError),
    /// A detector's settings are wrong.
    #[error("`detectors.{name}`: {message}")]
    Settings {
        /// The detector.
        name: String,
        /// What is wrong, naming the key.
        message: String,
    },
}

/// Every detector toolgate has, in the order they run. Each detector issue adds its
/// entry here; there is no other place detectors are registered.
pub fn registry() -> Vec<DetectorFactory> {
    vec![
        crate::definitions::factory(),
        crate::injection::factory(),
        crate::secrets::factory(),
        crate::policy::factory(),
        crate::provenance::factory(),
        crate::volume::factory(),
        crate::sequence::factory(),
        crate::session::factory(),
    ]
}

/// Reads a detector's settings table into its typed settings (which should deny unknown
/// fields), naming the detector in errors.
pub fn settings<T: DeserializeOwned>(name: &str, table: Value) -> Result<T, BuildError> {
    serde_json::from_value(table).map_err(|e| BuildError::Settings {
        name: name.to_string(),
        message: e.to_string(),
    })
}

/// Builds every enabled detector of `factories`: all of them unless a table says
/// `enabled = false`. A table naming no factory is an error.
pub fn build_detectors(
    factories: &[DetectorFactory],
    config: &Config,
) -> Result<Vec<Box<dyn Detector>>, BuildError> {
    for name in config.detectors.keys() {
        if !factories.iter().any(|f| f.name == name) {
            let known: Vec<&str> = factories.iter().map(|f| f.name).collect();
            return Err(BuildError::UnknownDetector {
                name: name.clone(),
                known: if known.is_empty() {
                    "(none yet)".into()
                } else {
                    known.join(", ")
                },
            });
        }
    }
    let mut built = Vec::new();
    for factory in factories {
        let mut table = config
            .detectors
            .get(factory.name)
            .cloned()
            .unwrap_or_else(|| Value::Object(Default::default()));
        let enabled = match table.as_object_mut().and_then(|t| t.remove("enabled")) {
            None => true,
            Some(Value::Bool(b)) => b,
            Some(other) => {
                return Err(BuildError::Settings {
                    name: factory.name.into(),
                    message: format!("`enabled` must be true or false, found {other}"),
                });
            }
        };
        if enabled {
            built.push((factory.build)(config, table)?);
        }
    }
    Ok(built)
}

/// The pipeline of every enabled detector of [`registry`], folding findings as the
/// config's `[findings]` section says and redacting them as `[redaction]` says (with
/// the `hash_key` the caller filled in).
pub fn build_pipeline(config: &Config, policy: EmitPolicy) -> Result<Pipeline, BuildError> {
    let detectors = build_detectors(&registry(), config)?;
    let f = &config.findings;
    let mut pipeline = Pipeline::new(
        detectors,
        FindingFolder::new(f.fold_window, f.max_open, f.max_event_ids, policy),
    );
    pipeline.set_redactor(Redactor::new(&config.redaction)?);
    Ok(pipeline)
}
