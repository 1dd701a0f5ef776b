//! The renderings for SIEMs, checked by other people's tools: OCSF Detection Findings
//! (class 2004) validated by py-ocsf-models, for a finding of every detector the
//! golden corpora cover.

mod common;

use std::process::Command;

use common::{python_venv, repo};
use toolgate::outputs::{FindingFormat, render};
use toolgate_protocol::Finding;

/// The findings of every golden corpus case, each replayed with its own config.
fn corpus_findings() -> Vec<Finding> {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut out = Vec::new();
    for detector in std::fs::read_dir(repo().join("corpus")).expect("corpus") {
        let detector = detector.expect("entry").path();
        if !detector.is_dir() {
            continue;
        }
        for file in std::fs::read_dir(&detector).expect("corpus dir") {
            let input = file.expect("entry").path();
            let name = input.to_string_lossy().into_owned();
            if !name.ends_with(".jsonl") || name.ends_with(".expected.jsonl") {
                continue;
            }
            let toml = input.with_extension("toml");
            let config = toolgate::commands::load_config(toml.exists().then_some(toml.as_path()))
                .expect("config");
            toolgate::replay::replay(
                &config,
                &name,
                &dir.path().join("dlq.jsonl"),
                None,
                |_| Ok(()),
                |f| {
                    out.push(f.clone());
                    Ok(())
                },
            )
            .expect("replay");
        }
    }
    out
}

fn validate(lines: &[String]) -> (bool, String) {
    let python = python_venv("test-venv-ocsf", "requirements-ocsf.txt");
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("ocsf.jsonl");
    std::fs::write(&file, lines.join("\n") + "\n").expect("write");
    let out = Command::new(python)
        .arg(repo().join("tests/python/validate_ocsf.py"))
        .arg(&file)
        .output()
        .expect("python");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn ocsf_detection_findings_validate_against_py_ocsf_models() {
    let findings = corpus_findings();
    let detectors: std::collections::BTreeSet<&str> =
        findings.iter().map(|f| f.detector.as_str()).collect();
    assert!(detectors.len() >= 5, "{detectors:?}");
    let lines: Vec<String> = findings
        .iter()
        .map(|f| render(f, FindingFormat::Ocsf))
        .collect();
    let (ok, report) = validate(&lines);
    assert!(ok, "{report}");
    assert!(
        report.contains(&format!("{n} of {n} valid", n = lines.len())),
        "{report}"
    );

    // The validator does reject what is wrong.
    let original: serde_json::Value = serde_json::from_str(&lines[0]).expect("json");
    let mut wrong_type = original.clone();
    wrong_type["severity_id"] = serde_json::json!("high");
    let mut undefined = original;
    undefined["made_up"] = serde_json::json!(1);
    let (ok, report) = validate(&[wrong_type.to_string(), undefined.to_string()]);
    assert!(!ok, "{report}");
    assert!(
        report.contains("line 1") && report.contains("severity_id"),
        "{report}"
    );
    assert!(
        report.contains("line 2") && report.contains("made_up"),
        "{report}"
    );
}
