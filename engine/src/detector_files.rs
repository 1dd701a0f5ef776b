//! Files named in detector settings, read before the detectors are built (they do no
//! I/O): `[detectors.sequence] rule_files` (toolgate TOML rule files and Sigma YAML)
//! and the trained models of `toolgate train` (`[detectors.sequence.learned]
//! model_file`, `[detectors.session] model_file`). Relative paths are from the config
//! file's directory.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde_json::{Map, Value};
use toolgate_ingest::sigma;
use toolgate_protocol::config::Config;

/// Reads every file the detector tables name and puts its content into the tables.
pub fn resolve(config: &mut Config, base: &Path) -> Result<()> {
    if let Some(Value::Object(seq)) = config.detectors.get_mut("sequence") {
        let files = string_list(seq.get("rule_files"), "detectors.sequence.rule_files")?;
        let mut loaded = Vec::new();
        for f in files {
            for path in expand(&base.join(&f))? {
                loaded.extend(read_rule_file(&path)?);
            }
        }
        if !loaded.is_empty() {
            let rules = seq
                .entry("rules")
                .or_insert_with(|| Value::Array(Vec::new()));
            match rules {
                Value::Array(list) => list.extend(loaded),
                _ => bail!("`detectors.sequence.rules` must be a list of rule tables"),
            }
        }
        if let Some(Value::Object(learned)) = seq.get_mut("learned") {
            load_model(learned, base, "sequence", "detectors.sequence.learned")?;
        }
    }
    if let Some(Value::Object(session)) = config.detectors.get_mut("session") {
        load_model(session, base, "sessions", "detectors.session")?;
    }
    Ok(())
}

fn string_list(v: Option<&Value>, key: &str) -> Result<Vec<String>> {
    match v {
        None => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|i| {
                i.as_str()
                    .map(str::to_string)
                    .with_context(|| format!("`{key}` must list file names, found {i}"))
            })
            .collect(),
        Some(other) => bail!("`{key}` must be a list of file names, found {other}"),
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

fn load_model(table: &mut Map<String, Value>, base: &Path, part: &str, key: &str) -> Result<()> {
    let Some(file) = table.get("model_file") else {
        return Ok(());
    };
    let file = file
        .as_str()
        .with_context(|| format!("`{key}.model_file` must be a file name"))?;
    let path = base.join(file);
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read model file {}", path.display()))?;
    let mut model: Value = serde_json::from_str(&text)
        .with_context(|| format!("model file {} is not JSON", path.display()))?;
    let section = model.get_mut(part).map(Value::take).with_context(|| {
        format!(
            "model file {} has no `{part}` section; write it with `toolgate train`",
            path.display()
        )
    })?;
    table.insert("model".into(), section);
    Ok(())
}
