//! ArcSight Common Event Format lines (`CEF:0|...`), the payload the engine sends over
//! RFC 5424 syslog.

use toolgate_protocol::{Finding, FindingOutcome, Severity};

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
        // `act` is what the device did; what the finding asked for is a custom field.
        (
            "act",
            f.outcome
                .map_or("unknown", FindingOutcome::as_str)
                .to_string(),
        ),
        ("flexString1Label", "requestedAction".into()),
        ("flexString1", f.action.as_str().to_string()),
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::outputs::tests::sample;
    use toolgate_protocol::FindingAction;

    /// Splits a CEF line the way a receiver does: seven unescaped `|` in the header,
    /// then `key=value` pairs where a value runs until the next ` key=`.
    fn parse(line: &str) -> (Vec<String>, BTreeMap<String, String>) {
        let mut header = Vec::new();
        let mut field = String::new();
        let mut chars = line.chars();
        while header.len() < 7 {
            match chars.next() {
                Some('\\') => field.push(chars.next().unwrap()),
                Some('|') => header.push(std::mem::take(&mut field)),
                Some(c) => field.push(c),
                None => panic!("short header"),
            }
        }
        let rest: String = chars.collect();
        let mut ext = BTreeMap::new();
        let mut key = String::new();
        let mut value = String::new();
        let mut in_value = false;
        let mut it = rest.chars().peekable();
        while let Some(c) = it.next() {
            if !in_value {
                if c == '=' {
                    in_value = true;
                } else {
                    key.push(c);
                }
                continue;
            }
            match c {
                '\\' => match it.next() {
                    Some('n') => value.push('\n'),
                    Some('r') => value.push('\r'),
                    Some(o) => value.push(o),
                    None => {}
                },
                ' ' => {
                    // A space ends the value only when a new `key=` follows.
                    let ahead: String = it.clone().take_while(|c| *c != ' ').collect();
                    if ahead.contains('=')
                        && !ahead.starts_with('=')
                        && ahead
                            .split('=')
                            .next()
                            .is_some_and(|k| k.chars().all(char::is_alphanumeric))
                    {
                        ext.insert(std::mem::take(&mut key), std::mem::take(&mut value));
                        in_value = false;
                    } else {
                        value.push(' ');
                    }
                }
                c => value.push(c),
            }
        }
        ext.insert(key, value);
        (header, ext)
    }

    #[test]
    fn escaping_round_trips_through_a_cef_parser() {
        let mut f = sample(FindingAction::Block);
        f.outcome = Some(FindingOutcome::Forwarded);
        let line = line(&f);
        assert!(line.starts_with("CEF:0|toolgate|toolgate|"));
        let (header, ext) = parse(&line);
        assert_eq!(header[4], "provenance:internal_to_external");
        assert_eq!(header[5], "Data | from mail = sent out");
        assert_eq!(header[6], "8");
        assert_eq!(ext["msg"], f.description);
        assert_eq!(ext["externalId"], f.finding_id);
        assert_eq!(ext["cnt"], "3");
        assert_eq!(ext["act"], "forwarded", "issue 22: what was done");
        assert_eq!(ext["flexString1"], "block");
        assert_eq!(ext["cs1"], "agent-7");
        assert_eq!(ext["cs3Label"], "mcpServer");
        assert_eq!(ext["cs6"], "owasp-asi:ASI01");
        assert_eq!(ext["rt"], f.time.unix_millis().to_string());
    }
}
