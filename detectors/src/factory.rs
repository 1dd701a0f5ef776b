//! How a detector is made from `toolgate.toml`: the types the registry and every
//! detector module share. A leaf module: it names no detector, so detectors depend on
//! it and the registry on them, without a cycle.

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use toolgate_protocol::DetectorKind;
use toolgate_protocol::config::Config;

use crate::Detector;

/// Builds a detector from the whole config and its own table (without `enabled`).
pub type BuildFn = fn(&Config, Value) -> Result<Box<dyn Detector>, BuildError>;

/// Reads the files a detector's settings name (rule files, trained models) into its
/// table, through [`Files`].
pub type LoadFilesFn = fn(&mut Map<String, Value>, &dyn Files) -> Result<(), BuildError>;

/// The files detectors' settings name, read for them: detectors do no I/O, so the
/// binary that loads the config hands them this (paths relative to the config file),
/// and each detector says which of its settings are files and what goes where
/// ([`Configured::load_files`]). Errors are messages naming the file.
pub trait Files {
    /// The rule tables of the rule file at `path`, or of every rule file under the
    /// directory at `path`, each with its file named in `source`.
    fn rules(&self, path: &str) -> Result<Vec<Value>, String>;
    /// The JSON document of the model file at `path` (written by `toolgate train`).
    fn model(&self, path: &str) -> Result<Value, String>;
}

/// For where no file is to be read (tests, tools that build detectors from a config
/// alone): a setting that names one is an error saying so.
pub struct NoFiles;

impl Files for NoFiles {
    fn rules(&self, path: &str) -> Result<Vec<Value>, String> {
        Err(format!("cannot read rule file {path} here"))
    }

    fn model(&self, path: &str) -> Result<Value, String> {
        Err(format!("cannot read model file {path} here"))
    }
}

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
    /// Reads the files its settings name, once, when the config is loaded.
    pub load_files: LoadFilesFn,
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

    /// Reads the files its settings name into its table, through `files`, when the
    /// config is loaded; most detectors name none.
    fn load_files(_table: &mut Map<String, Value>, _files: &dyn Files) -> Result<(), BuildError> {
        Ok(())
    }
}

/// The registry entry of detector `D`.
pub fn factory<D: Configured>() -> DetectorFactory {
    DetectorFactory {
        name: D::NAME,
        kind: D::KIND,
        summary: D::SUMMARY,
        build: build_erased::<D>,
        load_files: D::load_files,
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

/// Puts the `section` of the model file that `table`'s `model_file` names into
/// `table`'s `model`; `key` is the table's path in the config (`detectors.session`),
/// for errors. Nothing without a `model_file`.
pub fn load_model(
    detector: &str,
    table: &mut Map<String, Value>,
    files: &dyn Files,
    key: &str,
    section: &str,
) -> Result<(), BuildError> {
    let Some(file) = table.get("model_file") else {
        return Ok(());
    };
    let Some(file) = file.as_str() else {
        return Err(BuildError::settings(
            detector,
            format!("`{key}.model_file` must be a file name, found {file}"),
        ));
    };
    let mut model = files
        .model(file)
        .map_err(|e| BuildError::settings(detector, e))?;
    let Some(part) = model.get_mut(section).map(Value::take) else {
        return Err(BuildError::settings(
            detector,
            format!("model file {file} has no `{section}` section; write it with `toolgate train`"),
        ));
    };
    table.insert("model".into(), part);
    Ok(())
}

/// Reads a detector's settings table into its typed settings (which should deny unknown
/// fields), naming the detector in errors.
pub fn settings<T: DeserializeOwned>(name: &str, table: Value) -> Result<T, BuildError> {
    serde_json::from_value(table).map_err(|e| BuildError::Settings {
        name: name.to_string(),
        message: e.to_string(),
    })
}
