//! The files detector settings name, read from disk for the detectors (they do no
//! I/O): rule files (toolgate TOML and Sigma YAML, converted by the ingest crate) and
//! the trained models of `toolgate train`. Which settings are files, and where their
//! content goes, is each detector's own business (`Configured::load_files`); this is
//! only the reading. Relative paths are from the config file's directory.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde_json::Value;
use toolgate_detectors::Files;
use toolgate_ingest::sigma;
use toolgate_protocol::config::Config;

/// Reads every file the detectors' settings name into their tables, once.
pub fn resolve(config: &mut Config, base: &Path) -> Result<()> {
    toolgate_detectors::load_files(config, &DiskFiles { base })?;
    Ok(())
}

/// Files read from disk, relative to `base`.
pub struct DiskFiles<'a> {
    /// The config file's directory.
    pub base: &'a Path,
}

impl Files for DiskFiles<'_> {
    fn rules(&self, path: &str) -> Result<Vec<Value>, String> {
        let mut rules = Vec::new();
        for file in expand(&self.base.join(path)).map_err(|e| format!("{e:#}"))? {
            rules.extend(read_rule_file(&file).map_err(|e| format!("{e:#}"))?);
        }
        Ok(rules)
    }

    fn model(&self, path: &str) -> Result<Value, String> {
        let path = self.base.join(path);
        let text = std::fs::read_to_string(&path)
            .map_err(|e| format!("cannot read model file {}: {e}", path.display()))?;
        serde_json::from_str(&text)
            .map_err(|e| format!("model file {} is not JSON: {e}", path.display()))
    }
}

/// A file, or every `.toml`, `.yml` and `.yaml` file under a directory (recursively),
/// in path order.
fn expand(path: &Path) -> Result<Vec<PathBuf>> {
    if !path.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
        .with_context(|| format!("cannot read rule directory {}", path.display()))?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<_>>()
        .with_context(|| format!("cannot read rule directory {}", path.display()))?;
    entries.sort();
    let mut files = Vec::new();
    for p in entries {
        if p.is_dir() {
            files.extend(expand(&p)?);
        } else if p
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| matches!(e, "toml" | "yml" | "yaml"))
        {
            files.push(p);
        }
    }
    Ok(files)
}

/// The rules of one file, each tagged with the file as its source.
pub fn read_rule_file(path: &Path) -> Result<Vec<Value>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read rule file {}", path.display()))?;
    let name = path.display().to_string();
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    let mut rules = match ext {
        "yml" | "yaml" => sigma::convert(&text, &name)?,
        "toml" => {
            #[derive(serde::Deserialize)]
            #[serde(deny_unknown_fields)]
            struct RuleFile {
                #[serde(default)]
                rules: Vec<Value>,
            }
            let file: RuleFile =
                toml::from_str(&text).with_context(|| format!("invalid rule file {name}"))?;
            file.rules
        }
        _ => bail!("rule file {name}: expected a .toml, .yml or .yaml file"),
    };
    for r in &mut rules {
        if let Value::Object(o) = r {
            let source = match o.get("source").and_then(Value::as_str) {
                Some(s) => format!("{name} ({s})"),
                None => name.clone(),
            };
            o.insert("source".into(), Value::String(source));
        }
    }
    Ok(rules)
}
