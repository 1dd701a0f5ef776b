//! Webhooks: each finding POSTed as one JSON request. The body is the finding in a
//! toolgate rendering, or a message for people (Slack Block Kit, a Teams Adaptive
//! Card). With a secret, each request is signed so the receiver can check it came from
//! this engine and is fresh:
//!
//! - `X-Toolgate-Timestamp`: Unix seconds when the request was sent;
//! - `X-Toolgate-Signature`: `sha256=` and the lowercase hex HMAC-SHA256, keyed with
//!   the secret, of the timestamp, a `.`, and the exact body bytes.
//!
//! The signature is made when the request is sent, not when the finding is queued, so
//! a retried request carries a fresh timestamp.

use anyhow::{Context, Result, bail};
use hmac::{KeyInit, Mac};
use serde_json::{Value, json};
use toolgate_protocol::config::{FindingFormat, OutputConfig, WebhookBody};
use toolgate_protocol::fingerprint::hex;
use toolgate_protocol::{Finding, FindingAction};

use super::deliver::{Failure, Network, Records, Transport};
use super::http::{HttpPoster, unix_seconds};
use super::{OpenContext, Output, render};

/// Opens a `webhook` entry.
pub fn open(config: &OutputConfig, context: &OpenContext<'_>) -> Result<Box<dyn Output>> {
    let OutputConfig::Webhook {
        url,
        body,
        format,
        secret_env,
        ca_file,
        timeout,
        buffer,
    } = config
    else {
        bail!("not a webhook output");
    };
    let poster = HttpPoster::new(url, ca_file.as_deref(), timeout.to_std())
        .with_context(|| context.key.clone())?;
    let client =
        WebhookClient::new(poster, secret_env.as_deref()).with_context(|| context.key.clone())?;
    Network::start(
        format!("{} (webhook {url})", context.key),
        Box::new(client),
        *buffer,
        context.dead_letter_file("webhook", url),
        WebhookRecords {
            body: *body,
            format: *format,
        },
    )
}

/// Findings as request bodies.
struct WebhookRecords {
    body: WebhookBody,
    format: FindingFormat,
}

impl Records for WebhookRecords {
    fn finding(&self, finding: &Finding) -> Vec<u8> {
        body(finding, self.body, self.format)
    }
}

/// The timestamp header.
pub const TIMESTAMP_HEADER: &str = "X-Toolgate-Timestamp";
/// The signature header.
pub const SIGNATURE_HEADER: &str = "X-Toolgate-Signature";

/// `sha256=<hex>` of `timestamp.body` keyed with `secret`.
pub fn signature(secret: &[u8], timestamp: u64, body: &[u8]) -> String {
    let mut mac =
        hmac::Hmac::<sha2::Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("sha256={}", hex(&mac.finalize().into_bytes()))
}

/// The request body for one finding.
pub fn body(finding: &Finding, body: WebhookBody, format: FindingFormat) -> Vec<u8> {
    match body {
        WebhookBody::Toolgate => render(finding, format).into_bytes(),
        WebhookBody::Slack => slack(finding).to_string().into_bytes(),
        WebhookBody::Teams => teams(finding).to_string().into_bytes(),
    }
}

/// At most `max` characters of `s`, marked when cut.
fn cut(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// Slack's mrkdwn treats these three as control characters.
fn slack_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn headline(f: &Finding) -> String {
    let verb = match f.action {
        FindingAction::Block => "blocked",
        FindingAction::Alert => "alert",
    };
    format!(
        "[{}] {} ({verb}, agent {})",
        f.severity.as_str().to_uppercase(),
        f.title,
        f.agent_id
    )
}

fn target(f: &Finding) -> String {
    match (&f.server, &f.tool) {
        (Some(s), Some(t)) => format!("{s}/{t}"),
        (Some(s), None) => s.clone(),
        (None, Some(t)) => t.clone(),
        (None, None) => "-".into(),
    }
}

/// A Slack incoming-webhook message: `text` for notifications and Block Kit blocks
/// within Slack's limits (header 150 characters, section text 3,000, fields 2,000).
pub fn slack(f: &Finding) -> Value {
    let field = |name: &str, value: &str| json!({"type": "mrkdwn", "text": cut(&format!("*{name}*\n{}", slack_escape(value)), 2000)});
    json!({
        "text": cut(&slack_escape(&headline(f)), 3000),
        "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": cut(&f.title, 150), "emoji": false}},
            {"type": "section", "text": {"type": "mrkdwn", "text": cut(&slack_escape(&f.description), 3000)}},
            {"type": "section", "fields": [
                field("Severity", f.severity.as_str()),
                field("Action", f.action.as_str()),
                field("Agent", &f.agent_id),
                field("Session", &f.session_id),
                field("Tool", &target(f)),
                field("Risk", &format!("{} / 100", f.risk_score)),
            ]},
            {"type": "context", "elements": [
                {"type": "mrkdwn", "text": cut(&slack_escape(&format!(
                    "toolgate {}/{} · finding {} · {}",
                    f.detector.as_str(), f.rule_id, f.finding_id, f.time
                )), 2000)},
            ]},
        ],
    })
}

/// A Teams workflow-webhook message: one Adaptive Card (schema 1.4) attachment.
pub fn teams(f: &Finding) -> Value {
    let color = match f.severity {
        toolgate_protocol::Severity::Critical | toolgate_protocol::Severity::High => "Attention",
        toolgate_protocol::Severity::Medium => "Warning",
        _ => "Default",
    };
    let fact = |title: &str, value: &str| json!({"title": title, "value": value});
    json!({
        "type": "message",
        "attachments": [{
            "contentType": "application/vnd.microsoft.card.adaptive",
            "content": {
                "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                "type": "AdaptiveCard",
                "version": "1.4",
                "body": [
                    {"type": "TextBlock", "text": headline(f), "weight": "Bolder", "size": "Medium", "color": color, "wrap": true},
                    {"type": "TextBlock", "text": f.description, "wrap": true},
                    {"type": "FactSet", "facts": [
                        fact("Severity", f.severity.as_str()),
                        fact("Action", f.action.as_str()),
                        fact("Agent", &f.agent_id),
                        fact("Session", &f.session_id),
                        fact("Tool", &target(f)),
                        fact("Risk", &format!("{} / 100", f.risk_score)),
                        fact("Rule", &format!("{}/{}", f.detector.as_str(), f.rule_id)),
                        fact("Finding", &f.finding_id),
                        fact("Time", &f.time.to_string()),
                    ]},
                ],
            },
        }],
    })
}

/// Sends each record (a request body) as one POST, signed when there is a secret.
pub struct WebhookClient {
    poster: HttpPoster,
    secret: Option<Vec<u8>>,
}

impl WebhookClient {
    /// Posts through `poster`; `secret_env` names the variable holding the key.
    pub fn new(poster: HttpPoster, secret_env: Option<&str>) -> Result<Self> {
        let secret = match secret_env {
            None => None,
            Some(name) => match std::env::var(name) {
                Ok(v) if !v.is_empty() => Some(v.into_bytes()),
                Ok(_) => bail!("secret_env: the variable {name} is empty"),
                Err(_) => bail!("secret_env: the variable {name} is not set"),
            },
        };
        Ok(WebhookClient { poster, secret })
    }
}

impl Transport for WebhookClient {
    fn send(&mut self, records: &[Vec<u8>]) -> Result<usize, Failure> {
        let body = &records[0];
        let mut headers = Vec::new();
        if let Some(secret) = &self.secret {
            let timestamp = unix_seconds();
            headers.push((TIMESTAMP_HEADER, timestamp.to_string()));
            headers.push((SIGNATURE_HEADER, signature(secret, timestamp, body)));
        }
        self.poster.post(body, &headers, 1)?;
        Ok(1)
    }

    fn describe(&self) -> String {
        format!("webhook {}", self.poster.url())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outputs::tests::sample;

    /// RFC 4231 test case 2 keys HMAC-SHA256 with "Jefe".
    #[test]
    fn the_signature_is_hmac_sha256_of_timestamp_dot_body() {
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(b"Jefe").unwrap();
        mac.update(b"what do ya want for nothing?");
        assert_eq!(
            hex(&mac.finalize().into_bytes()),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        let a = signature(b"k", 1_700_000_000, b"{}");
        assert!(a.starts_with("sha256=") && a.len() == 7 + 64, "{a}");
        assert_ne!(a, signature(b"k", 1_700_000_001, b"{}"));
        assert_ne!(a, signature(b"k", 1_700_000_000, b"{ }"));
        assert_ne!(a, signature(b"j", 1_700_000_000, b"{}"));
    }

    #[test]
    fn slack_text_is_escaped_and_within_limits() {
        let mut f = sample(FindingAction::Block);
        f.title = "x".repeat(400);
        f.description = "<script> & more".into();
        let m = slack(&f);
        let header = m["blocks"][0]["text"]["text"].as_str().unwrap();
        assert_eq!(header.chars().count(), 150);
        assert_eq!(m["blocks"][1]["text"]["text"], "&lt;script&gt; &amp; more");
    }
}
