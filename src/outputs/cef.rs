//! ArcSight Common Event Format lines (`CEF:0|...`), the payload the engine sends over
//! RFC 5424 syslog.

use toolgate_protocol::{Finding, Severity};

use super::PRODUCT_VERSION;

/// CEF severity, 0 to 10.
pub fn severity(s: Severity) -> u8 {
    match s {
        Severity::Info => 1,
        Severity::Low => 3,
        Severity::Medium => 5,
        Severity::High => 8,
        Severity::Critical => 10,
    }
}

/// Header fields escape `\` and `|`; line breaks become spaces.
fn header(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '|' => out.push_str("\\|"),
            '\r' | '\n' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// Extension values escape `\` and `=`, and line breaks as `\n` / `\r`.
fn value(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '=' => out.push_str("\\="),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
    out
}

/// The finding as one CEF line.
pub fn line(f: &Finding) -> String {
    let mut ext: Vec<(&str, String)> = vec![
        ("rt", f.time.unix_millis().to_string()),
        ("start", f.first_seen.unix_millis().to_string()),
        ("end", f.last_seen.unix_millis().to_string()),
        ("cnt", f.count.to_string()),
        ("externalId", f.finding_id.clone()),
        ("cat", f.detector.as_str().to_string()),
        ("act", f.action.as_str().to_string()),
        ("msg", f.description.clone()),
        ("cs1Label", "agentId".into()),
        ("cs1", f.agent_id.clone()),
        ("cs2Label", "sessionId".into()),
        ("cs2", f.session_id.clone()),
        ("cn1Label", "riskScore".into()),
        ("cn1", f.risk_score.to_string()),
        ("cfp1Label", "confidence".into()),
        ("cfp1", f.confidence.to_string()),
    ];
    let optional = [
        ("cs3Label", "cs3", "mcpServer", &f.server),
        ("cs4Label", "cs4", "tool", &f.tool),
        ("cs5Label", "cs5", "callId", &f.call_id),
    ];
    for (label_key, key, label, v) in optional {
        if let Some(v) = v {
            ext.push((label_key, label.into()));
            ext.push((key, v.clone()));
        }
    }
    if !f.tags.is_empty() {
        ext.push(("cs6Label", "tags".into()));
        ext.push(("cs6", f.tags.join(",")));
    }
    let extension: Vec<String> = ext
        .iter()
        .map(|(k, v)| format!("{k}={}", value(v)))
        .collect();
    format!(
        "CEF:0|toolgate|toolgate|{}|{}|{}|{}|{}",
        header(PRODUCT_VERSION),
        header(&format!("{}:{}", f.detector.as_str(), f.rule_id)),
        header(&f.title),
        severity(f.severity),
        extension.join(" ")
    )
}
