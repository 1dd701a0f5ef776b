//! How a detector is made from `toolgate.toml`: the types the registry and every
//! detector module share. A leaf module: it names no detector, so detectors depend on
//! it and the registry on them, without a cycle.

use serde::de::DeserializeOwned;
use serde_json::Value;
use toolgate_protocol::DetectorKind;
use toolgate_protocol::config::Config;

use crate::Detector;

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

/// A detector made from its typed `[detectors.<name>]` settings. [`factory`] turns it
/// into the registry's entry: the table is read once there (unknown keys refused,
/// errors naming the detector), and the detector only checks what serde cannot.
pub trait Configured: Detector + Sized + 'static {
    /// Key under `[detectors]`.
    const NAME: &'static str;
    /// Family of the findings it raises.
    const KIND: DetectorKind;
    /// One line for `--help` and docs.
    const SUMMARY: &'static str;
    /// Its settings table, typed.
    type Settings: DeserializeOwned;
    /// Builds it from the whole config and its own settings.
    fn build(config: &Config, settings: Self::Settings) -> Result<Self, BuildError>;
}

/// The registry entry of detector `D`.
pub fn factory<D: Configured>() -> DetectorFactory {
    DetectorFactory {
        name: D::NAME,
        kind: D::KIND,
        summary: D::SUMMARY,
        build: build_erased::<D>,
    }
}

fn build_erased<D: Configured>(
    config: &Config,
    table: Value,
) -> Result<Box<dyn Detector>, BuildError> {
    let settings = settings(D::NAME, table)?;
    Ok(Box::new(D::build(config, settings)?))
}

impl BuildError {
    /// Detector `name`'s settings are wrong: `message` says what, naming the key.
    pub fn settings(name: &str, message: impl Into<String>) -> BuildError {
        BuildError::Settings {
            name: name.to_string(),
            message: message.into(),
        }
    }
}

/// Reads a detector's settings table into its typed settings (which should deny unknown
/// fields), naming the detector in errors.
pub fn settings<T: DeserializeOwned>(name: &str, table: Value) -> Result<T, BuildError> {
    serde_json::from_value(table).map_err(|e| BuildError::Settings {
        name: name.to_string(),
        message: e.to_string(),
    })
}
