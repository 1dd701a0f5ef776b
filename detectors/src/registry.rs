//! The list of every detector toolgate has, and how the configured set is built.

use serde_json::Value;
use toolgate_protocol::config::Config;

use crate::Detector;
use crate::factory::{BuildError, DetectorFactory, Files, factory};
use crate::fold::{EmitPolicy, FindingFolder};
use crate::pipeline::Pipeline;
use crate::secrets::Redactor;

/// Every detector toolgate has, in the order they run. Each detector issue adds its
/// entry here; there is no other place detectors are registered.
pub fn registry() -> Vec<DetectorFactory> {
    vec![
        factory::<crate::definitions::DefinitionsDetector>(),
        factory::<crate::injection::InjectionDetector>(),
        factory::<crate::secrets::SecretsDetector>(),
        factory::<crate::policy::PolicyDetector>(),
        factory::<crate::provenance::ProvenanceDetector>(),
        factory::<crate::volume::VolumeDetector>(),
        factory::<crate::sequence::SequenceDetector>(),
        factory::<crate::session::SessionDetector>(),
    ]
}

/// Reads every file the detectors' settings name into their tables, through `files`:
/// done once when the config is loaded, so that every pipeline built from it (one per
/// partition, say) has the same rules and models.
pub fn load_files(config: &mut Config, files: &dyn Files) -> Result<(), BuildError> {
    for f in registry() {
        if let Some(Value::Object(table)) = config.detectors.get_mut(f.name) {
            (f.load_files)(table, files)?;
        }
    }
    Ok(())
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
