//! Golden corpus: `corpus/<detector>/<case>.jsonl` events, run through that detector
//! alone (with `<case>.toml` as config when present), must give exactly the findings in
//! `<case>.expected.jsonl`: one line per finding with its rule, severity, action,
//! count, evidence events and redacted evidence. After an intended change, regenerate
//! with `TOOLGATE_BLESS=1 cargo test -p toolgate-detectors --test integration corpus::` and review
//! the diff.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use toolgate_detectors::{EmitPolicy, build_pipeline, registry};
use toolgate_protocol::Event;
use toolgate_protocol::config::Config;

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../corpus")
}

/// Runs one case; returns its findings as expected-file lines.
fn run_case(detector: &str, events: &Path) -> Vec<String> {
    let config_path = events.with_extension("toml");
    let toml = std::fs::read_to_string(&config_path).unwrap_or_default();
    let mut config = Config::from_toml(&toml, &config_path.display().to_string())
        .unwrap_or_else(|e| panic!("{e}"));
    for factory in registry() {
        if factory.name != detector {
            config
                .detectors
                .insert(factory.name.to_string(), json!({"enabled": false}));
        }
    }
    let mut pipeline = build_pipeline(&config, EmitPolicy::FinalOnly)
        .unwrap_or_else(|e| panic!("{}: {e}", events.display()));
    assert_eq!(
        pipeline.detector_names(),
        vec![detector],
        "corpus directory names a detector"
    );
    let mut findings = Vec::new();
    for (n, line) in std::fs::read_to_string(events).unwrap().lines().enumerate() {
        let event = Event::decode(line.as_bytes())
            .unwrap_or_else(|e| panic!("{}:{}: {e}", events.display(), n + 1));
        pipeline.observe(&event, &mut findings);
    }
    pipeline.finish(&mut findings);
    findings.sort_by(|a, b| {
        (a.first_seen, &a.rule_id, &a.finding_id).cmp(&(b.first_seen, &b.rule_id, &b.finding_id))
    });
    findings
        .iter()
        .map(|f| {
            json!({
                "rule_id": f.rule_id,
                "severity": f.severity,
                "action": f.action,
                "tool": f.tool,
                "count": f.count,
                "event_ids": f.event_ids,
                "evidence": f.evidence,
            })
            .to_string()
        })
        .collect()
}

#[test]
fn every_corpus_case_gives_its_expected_findings() {
    let bless = std::env::var_os("TOOLGATE_BLESS").is_some();
    let known: Vec<&str> = registry().iter().map(|f| f.name).collect();
    let mut cases = 0;
    let mut failures = Vec::new();
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(corpus_dir())
        .unwrap()
        .map(|d| d.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    for dir in dirs {
        let detector = dir.file_name().unwrap().to_str().unwrap().to_string();
        assert!(
            known.contains(&detector.as_str()),
            "corpus/{detector}: no such detector"
        );
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|d| d.unwrap().path())
            .filter(|p| {
                p.extension().is_some_and(|e| e == "jsonl")
                    && !p.to_string_lossy().ends_with(".expected.jsonl")
            })
            .collect();
        files.sort();
        for events in files {
            cases += 1;
            let actual = run_case(&detector, &events);
            let expected_path = events.with_extension("expected.jsonl");
            if bless {
                std::fs::write(&expected_path, actual.join("\n") + "\n").unwrap();
                continue;
            }
            let expected: Vec<String> = std::fs::read_to_string(&expected_path)
                .unwrap_or_else(|_| panic!("missing {}", expected_path.display()))
                .lines()
                .filter(|l| !l.trim().is_empty())
                .map(|l| serde_json::from_str::<Value>(l).unwrap().to_string())
                .collect();
            if actual != expected {
                failures.push(format!(
                    "{}:\n  expected:\n    {}\n  actual:\n    {}",
                    events.display(),
                    expected.join("\n    "),
                    actual.join("\n    ")
                ));
            }
        }
    }
    assert!(cases >= 4, "corpus cases found: {cases}");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
