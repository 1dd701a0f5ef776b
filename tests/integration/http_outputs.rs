//! The HTTP outputs end to end: `toolgate analyze` sends its findings (and tool calls)
//! to webhooks and a Splunk HEC served by `tests/python/http_collector.py`, which
//! checks signatures with Python's hmac, Slack messages with slack_sdk, Teams cards
//! against the Adaptive Card schema, and HEC's envelope and token. OCSF records sent
//! to HEC are validated by the OCSF models of tests/siem.rs.

use crate::common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use common::{corpus_findings, ocsf_validate, python_venv, repo};
use serde_json::Value;
use toolgate_engine::outputs::webhook;

const SECRET: &str = "correct horse battery staple";
const TOKEN: &str = "11111111-2222-3333-4444-555555555555";

struct Collector {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Collector {
    fn start(dir: &Path, busy: usize) -> Collector {
        let python = python_venv("test-venv-webhooks", "requirements-webhooks.txt");
        let log = dir.join("requests.jsonl");
        let mut child = Command::new(python)
            .arg(repo().join("tests/python/http_collector.py"))
            .args(["--log", &log.display().to_string()])
            .args(["--secret", SECRET, "--hec-token", TOKEN])
            .args(["--busy", &busy.to_string()])
            .stdout(Stdio::piped())
            .spawn()
            .expect("collector");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("port");
        let port = line.trim().parse().expect("the collector prints its port");
        Collector { child, port, log }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Every logged request.
    fn requests(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("log line"))
            .collect()
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `toolgate analyze` over the AgentDojo sample with `outputs` (TOML) added to
/// the config; returns the findings it wrote.
fn analyze(dir: &Path, outputs: &str) -> Vec<Value> {
    let config = dir.join("toolgate.toml");
    std::fs::write(
        &config,
        format!(
            "[engine]\ndata_dir = {:?}\n{outputs}",
            dir.join("data").display().to_string()
        ),
    )
    .expect("config");
    let findings = dir.join("findings.jsonl");
    let out = Command::new(env!("CARGO_BIN_EXE_toolgate"))
        .arg("analyze")
        .args(["--config", &config.display().to_string()])
        .args([
            "--input",
            &repo()
                .join("examples/agentdojo-sample.jsonl")
                .display()
                .to_string(),
        ])
        .args(["--output", &findings.display().to_string()])
        .env("TG_TEST_WEBHOOK_SECRET", SECRET)
        .env("TG_TEST_HEC_TOKEN", TOKEN)
        .env("TG_TEST_WRONG_TOKEN", "not-the-token")
        .output()
        .expect("toolgate analyze");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read_to_string(findings)
        .expect("findings")
        .lines()
        .map(|l| serde_json::from_str(l).expect("finding"))
        .collect()
}

fn sample_tool_calls() -> BTreeSet<String> {
    std::fs::read_to_string(repo().join("examples/agentdojo-sample.jsonl"))
        .expect("sample")
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("event"))
        .filter(|e| e["kind"] == "tool_call")
        .map(|e| e["event_id"].as_str().expect("event_id").to_string())
        .collect()
}

#[test]
fn webhooks_and_splunk_hec_receive_every_finding_signed_and_valid() {
    let dir = tempfile::tempdir().expect("tempdir");
    // The collector answers the first HEC request 503, as a busy HEC does.
    let collector = Collector::start(dir.path(), 1);
    let outputs = format!(
        r#"
[[outputs]]
type = "webhook"
url = "{toolgate}"
secret_env = "TG_TEST_WEBHOOK_SECRET"

[[outputs]]
type = "webhook"
url = "{slack}"
body = "slack"

[[outputs]]
type = "webhook"
url = "{teams}"
body = "teams"
secret_env = "TG_TEST_WEBHOOK_SECRET"

[[outputs]]
type = "splunk_hec"
url = "{hec}"
token_env = "TG_TEST_HEC_TOKEN"
format = "ocsf"
tool_calls = true
index = "security"
batch = 7
"#,
        toolgate = collector.url("/toolgate"),
        slack = collector.url("/slack"),
        teams = collector.url("/teams"),
        hec = collector.url(""),
    );
    let findings = analyze(dir.path(), &outputs);
    assert!(findings.len() >= 3, "{findings:?}");
    let finding_ids: BTreeSet<String> = findings
        .iter()
        .map(|f| f["finding_id"].as_str().expect("id").to_string())
        .collect();
    let requests = collector.requests();
    for r in &requests {
        assert!(
            r["problems"].as_array().is_some_and(Vec::is_empty),
            "the collector found problems: {r}"
        );
    }
    let accepted = |path: &str| -> Vec<Value> {
        requests
            .iter()
            .filter(|r| r["path"] == path && r["status"] == 200)
            .flat_map(|r| r["records"].as_array().cloned().unwrap_or_default())
            .collect()
    };
    let signed: BTreeSet<String> = accepted("/toolgate")
        .iter()
        .map(|f| f["finding_id"].as_str().expect("id").to_string())
        .collect();
    assert_eq!(signed, finding_ids);
    assert_eq!(accepted("/slack").len(), findings.len());
    assert_eq!(accepted("/teams").len(), findings.len());

    let hec = accepted("/services/collector/event");
    assert!(
        requests
            .iter()
            .any(|r| r["path"] == "/services/collector/event" && r["status"] == 503),
        "the busy answer was retried"
    );
    let of_type =
        |t: &str| -> Vec<&Value> { hec.iter().filter(|e| e["sourcetype"] == t).collect() };
    let hec_findings: BTreeSet<String> = of_type("toolgate:finding")
        .iter()
        .map(|e| {
            e["event"]["finding_info"]["uid"]
                .as_str()
                .expect("uid")
                .to_string()
        })
        .collect();
    assert_eq!(hec_findings, finding_ids);
    let hec_calls: BTreeSet<String> = of_type("toolgate:tool_call")
        .iter()
        .map(|e| {
            e["event"]["metadata"]["uid"]
                .as_str()
                .expect("uid")
                .to_string()
        })
        .collect();
    assert_eq!(hec_calls, sample_tool_calls());
    for e in &hec {
        assert_eq!(e["index"], "security");
        assert_eq!(e["source"], "toolgate");
    }
    // Every request carried at most `batch` events.
    assert!(
        requests
            .iter()
            .filter(|r| r["path"] == "/services/collector/event")
            .all(|r| r["records"].as_array().map_or(0, Vec::len) <= 7)
    );
    let events: Vec<Value> = hec.iter().map(|e| e["event"].clone()).collect();
    let lines: Vec<String> = events.iter().map(Value::to_string).collect();
    let (ok, report) = ocsf_validate(&lines);
    assert!(ok, "{report}");
    assert!(
        report.contains(&format!("{n} of {n} valid", n = events.len())),
        "{report}"
    );
    assert!(
        !dir.path().join("data/outputs").exists(),
        "nothing was dead-lettered"
    );
}

#[test]
fn refused_requests_are_dead_lettered_with_the_collectors_answer() {
    let dir = tempfile::tempdir().expect("tempdir");
    let collector = Collector::start(dir.path(), 0);
    // No secret where the collector requires one; a token it does not know.
    let outputs = format!(
        r#"
[[outputs]]
type = "webhook"
url = "{toolgate}"

[[outputs]]
type = "splunk_hec"
url = "{hec}"
token_env = "TG_TEST_WRONG_TOKEN"
tool_calls = true
"#,
        toolgate = collector.url("/toolgate"),
        hec = collector.url("/services/collector/event"),
    );
    let findings = analyze(dir.path(), &outputs);
    let outputs_dir = dir.path().join("data/outputs");
    let dead_letters = |prefix: &str| -> Vec<Value> {
        let file = std::fs::read_dir(&outputs_dir)
            .expect("dead-letter directory")
            .map(|e| e.expect("entry").path())
            .find(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with(prefix))
            })
            .unwrap_or_else(|| panic!("no dead-letter file {prefix}*"));
        std::fs::read_to_string(file)
            .expect("dead letters")
            .lines()
            .map(|l| serde_json::from_str(l).expect("dead letter"))
            .collect()
    };
    let webhook = dead_letters("0-webhook-");
    assert_eq!(webhook.len(), findings.len());
    for d in &webhook {
        assert!(
            d["error"]
                .as_str()
                .is_some_and(|e| e.starts_with("HTTP 400: ") && e.contains("unsigned")),
            "{d}"
        );
        let finding: Value =
            serde_json::from_str(d["record"].as_str().expect("record")).expect("JSON");
        assert_eq!(finding["schema"], "toolgate.finding.v1");
    }
    let hec = dead_letters("1-hec-");
    assert_eq!(hec.len(), findings.len() + sample_tool_calls().len());
    for d in &hec {
        assert!(
            d["error"]
                .as_str()
                .is_some_and(|e| e.starts_with("HTTP 403: ") && e.contains("Invalid token")),
            "{d}"
        );
    }
}

#[test]
fn slack_and_teams_messages_of_every_corpus_finding_are_valid() {
    let python = python_venv("test-venv-webhooks", "requirements-webhooks.txt");
    let findings = corpus_findings();
    let dir = tempfile::tempdir().expect("tempdir");
    let check = |kind: &str, lines: Vec<String>| {
        let file = dir.path().join(format!("{kind}.jsonl"));
        std::fs::write(&file, lines.join("\n") + "\n").expect("write");
        let out = Command::new(&python)
            .arg(repo().join("tests/python/http_collector.py"))
            .args(["--check", &file.display().to_string(), "--kind", kind])
            .output()
            .expect("python");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let slack: Vec<String> = findings
        .iter()
        .map(|f| webhook::slack(f).to_string())
        .collect();
    let teams: Vec<String> = findings
        .iter()
        .map(|f| webhook::teams(f).to_string())
        .collect();
    for (kind, lines) in [("slack", slack.clone()), ("teams", teams.clone())] {
        let n = lines.len();
        let (ok, report) = check(kind, lines);
        assert!(
            ok && report.contains(&format!("{n} of {n} valid")),
            "{kind}: {report}"
        );
    }

    // The checks do fail on what Slack and Teams would reject.
    let mut long_header: Value = serde_json::from_str(&slack[0]).expect("json");
    long_header["blocks"][0]["text"]["text"] = Value::from("x".repeat(151));
    let (ok, report) = check("slack", vec![long_header.to_string()]);
    assert!(!ok && report.contains("cannot exceed 150"), "{report}");
    let mut no_value: Value = serde_json::from_str(&teams[0]).expect("json");
    no_value["attachments"][0]["content"]["body"][2]["facts"][0]
        .as_object_mut()
        .expect("fact")
        .remove("value");
    let (ok, report) = check("teams", vec![no_value.to_string()]);
    assert!(
        !ok && report.contains("'value' is a required property"),
        "{report}"
    );
}
