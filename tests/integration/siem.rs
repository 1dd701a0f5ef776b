//! The renderings for SIEMs, checked by other people's tools: OCSF Detection Findings
//! (class 2004) validated by py-ocsf-models, OCSF API Activity (class 6003) for tool
//! calls validated by ocsf-pydantic, and CEF over RFC 5424 syslog (TCP and
//! TLS, octet-counted) received by a real rsyslogd, for the findings of every detector
//! the golden corpora cover.

use crate::certs;
use crate::common;

use std::process::Command;

use common::{corpus_findings, ocsf_validate as validate, repo};
use toolgate_engine::outputs::{FindingFormat, open_all, render, render_tool_call};
use toolgate_protocol::config::{OutputConfig, SyslogTransport};

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

#[test]
fn ocsf_api_activity_of_every_sample_tool_call_validates_against_ocsf_pydantic() {
    let text =
        std::fs::read_to_string(repo().join("examples/agentdojo-sample.jsonl")).expect("sample");
    let events: Vec<toolgate_protocol::Event> = text
        .lines()
        .map(|l| toolgate_protocol::Event::decode(l.as_bytes()).expect("event"))
        .collect();
    let lines: Vec<String> = events
        .iter()
        .filter_map(|e| render_tool_call(e, FindingFormat::Ocsf))
        .collect();
    let calls = text.matches("\"kind\":\"tool_call\"").count();
    assert!(
        calls > 10 && lines.len() == calls,
        "{} of {calls}",
        lines.len()
    );
    let (ok, report) = validate(&lines);
    assert!(ok, "{report}");
    assert!(
        report.contains(&format!("{n} of {n} valid", n = lines.len())),
        "{report}"
    );

    // Missing a required object, and a derived attribute that disagrees.
    let original: serde_json::Value = serde_json::from_str(&lines[0]).expect("json");
    let mut no_api = original.clone();
    no_api.as_object_mut().expect("object").remove("api");
    let mut wrong_type = original;
    wrong_type["type_uid"] = serde_json::json!(600301);
    let (ok, report) = validate(&[no_api.to_string(), wrong_type.to_string()]);
    assert!(!ok, "{report}");
    assert!(
        report.contains("line 1") && report.contains("api"),
        "{report}"
    );
    assert!(
        report.contains("line 2") && report.contains("type_uid is 600301"),
        "{report}"
    );
}

/// rsyslogd, or `None` (after saying why) when the test may skip.
fn rsyslogd() -> Option<std::path::PathBuf> {
    let found = ["/usr/sbin/rsyslogd", "/sbin/rsyslogd"]
        .iter()
        .map(std::path::PathBuf::from)
        .find(|p| p.exists());
    if found.is_none() {
        assert!(
            std::env::var_os("TOOLGATE_REQUIRE_RSYSLOG").is_none(),
            "rsyslogd is required; run tests/tools/ensure-rsyslog.sh"
        );
        eprintln!("skipped: rsyslogd is not installed (tests/tools/ensure-rsyslog.sh installs it)");
    }
    found
}

/// A real rsyslogd listening on loopback (plain TCP, or TLS with a certificate made
/// for the test), writing each message it receives as one line of
/// `PRI|APP-NAME|MSGID|STRUCTURED-DATA|MSG`.
struct Rsyslog {
    child: std::process::Child,
    port: u16,
    out: std::path::PathBuf,
    ca: Option<std::path::PathBuf>,
}

impl Rsyslog {
    fn start(binary: &std::path::Path, dir: &std::path::Path, tls: bool) -> Rsyslog {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("port")
            .port();
        let out = dir.join("received.log");
        let mut global = format!("global(workDirectory=\"{}\"", dir.display());
        let mut input = format!(
            "module(load=\"imtcp\")\ninput(type=\"imtcp\" port=\"{port}\" ruleset=\"toolgate\")"
        );
        let mut ca = None;
        if tls {
            // A CA of the test's own, and the collector's certificate signed by it.
            let certs::LocalhostCert {
                ca: ca_cert,
                cert,
                key,
            } = certs::localhost_cert(dir);
            global += &format!(
                " DefaultNetstreamDriver=\"gtls\" DefaultNetstreamDriverCAFile=\"{a}\" DefaultNetstreamDriverCertFile=\"{c}\" DefaultNetstreamDriverKeyFile=\"{k}\"",
                a = ca_cert.display(),
                c = cert.display(),
                k = key.display()
            );
            input = format!(
                "module(load=\"imtcp\" StreamDriver.Name=\"gtls\" StreamDriver.Mode=\"1\" StreamDriver.AuthMode=\"anon\")\ninput(type=\"imtcp\" port=\"{port}\" ruleset=\"toolgate\")"
            );
            ca = Some(ca_cert);
        }
        let conf = format!(
            "{global})\n{input}\ntemplate(name=\"fields\" type=\"string\" string=\"%PRI%|%APP-NAME%|%MSGID%|%STRUCTURED-DATA%|%msg%\\n\")\nruleset(name=\"toolgate\") {{ action(type=\"omfile\" file=\"{}\" template=\"fields\") }}\n",
            out.display()
        );
        let conf_path = dir.join("rsyslog.conf");
        std::fs::write(&conf_path, conf).expect("conf");
        let child = Command::new(binary)
            .args(["-n", "-f"])
            .arg(&conf_path)
            .arg("-i")
            .arg(dir.join("rsyslog.pid"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("rsyslogd");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "rsyslogd did not start"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        Rsyslog {
            child,
            port,
            out,
            ca,
        }
    }

    /// The lines received, once there are `n` (or after 20 s).
    fn received(&self, n: usize) -> Vec<String> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            let text = std::fs::read_to_string(&self.out).unwrap_or_default();
            let lines: Vec<String> = text.lines().map(str::to_string).collect();
            if lines.len() >= n || std::time::Instant::now() > deadline {
                return lines;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn cef_over_syslog_reaches_rsyslog(tls: bool) {
    let Some(binary) = rsyslogd() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let rsyslog = Rsyslog::start(&binary, dir.path(), tls);
    let findings = corpus_findings();
    let output = OutputConfig::Syslog {
        address: format!("127.0.0.1:{}", rsyslog.port),
        transport: if tls {
            SyslogTransport::Tls
        } else {
            SyslogTransport::Tcp
        },
        format: FindingFormat::Cef,
        ca_file: rsyslog.ca.as_ref().map(|p| p.display().to_string()),
        server_name: tls.then(|| "localhost".to_string()),
        facility: 10,
        app_name: "toolgate".into(),
        buffer: 1000,
    };
    let mut outputs = open_all(&[output], dir.path()).expect("open");
    let mut syslog = outputs.pop().expect("one output");
    for f in &findings {
        syslog.write(f).expect("write");
    }
    syslog.close().expect("delivered");
    let lines = rsyslog.received(findings.len());
    assert_eq!(lines.len(), findings.len(), "{lines:#?}");
    for (line, f) in lines.iter().zip(&findings) {
        let fields: Vec<&str> = line.splitn(5, '|').collect();
        let pri = 10 * 8 + u32::from(toolgate_engine::outputs::syslog::severity(f.severity));
        assert_eq!(fields[0], pri.to_string(), "{line}");
        assert_eq!(fields[1], "toolgate");
        assert_eq!(fields[2], "finding");
        assert!(
            fields[3].contains(&format!("finding_id=\"{}\"", f.finding_id)),
            "{line}"
        );
        assert!(
            fields[4]
                .trim_start()
                .starts_with("CEF:0|toolgate|toolgate|"),
            "{line}"
        );
        assert!(fields[4].contains(&f.finding_id), "{line}");
    }
    assert!(
        !dir.path().join("outputs").exists(),
        "nothing was dead-lettered"
    );
}

#[test]
fn cef_over_syslog_tcp_reaches_rsyslog_octet_counted() {
    cef_over_syslog_reaches_rsyslog(false);
}

#[test]
fn cef_over_syslog_tls_reaches_rsyslog() {
    cef_over_syslog_reaches_rsyslog(true);
}
