//! Replaces secrets and personal data in events and findings before they are stored,
//! logged or sent on. Detectors see the original event; only what leaves the detector
//! (a finding, a stored or forwarded event) is redacted.
//!
//! Tool definitions in `tool_list` events are left alone: they are written by the
//! server's author, not by users, and pins compare them byte for byte.

use std::borrow::Cow;

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use toolgate_protocol::config::{RedactionConfig, RedactionMode};
use toolgate_protocol::event::EventBody;
use toolgate_protocol::fingerprint::hex;
use toolgate_protocol::{Event, Finding};

use super::scan::{SecretClass, SecretKind, SecretMatch, scan_into};
use crate::FindingDraft;

/// `[redaction]` names a kind that does not exist.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RedactionError {
    /// Unknown kind or class under `redaction.kinds`.
    #[error(
        "`redaction.kinds.{0}`: no such kind; use a kind ({kinds}) or `credentials`, `financial`, `contact`, `all`",
        kinds = SecretKind::ALL.map(SecretKind::as_str).join(", ")
    )]
    UnknownKind(String),
}

/// Applies one `[redaction]` configuration.
#[derive(Debug, Clone)]
pub struct Redactor {
    modes: [RedactionMode; SecretKind::ALL.len()],
    key: Option<Vec<u8>>,
}

impl Redactor {
    /// A redactor for `config`, hashing with its `hash_key` when one was filled in.
    pub fn new(config: &RedactionConfig) -> Result<Self, RedactionError> {
        let mut modes = [config.mode; SecretKind::ALL.len()];
        if !config.enabled {
            modes = [RedactionMode::Keep; SecretKind::ALL.len()];
        } else {
            // Classes first, then single kinds, so the specific entry wins.
            let mut entries: Vec<(&String, &RedactionMode)> = config.kinds.iter().collect();
            entries.sort_by_key(|(name, _)| {
                SecretKind::parse_set(name).map(|k| std::cmp::Reverse(k.len()))
            });
            for (name, mode) in entries {
                let kinds = SecretKind::parse_set(name)
                    .ok_or_else(|| RedactionError::UnknownKind(name.clone()))?;
                for kind in kinds {
                    modes[index(kind)] = *mode;
                }
            }
        }
        Ok(Redactor {
            modes,
            key: config.hash_key.clone().filter(|k| !k.is_empty()),
        })
    }

    /// A redactor that changes nothing.
    pub fn disabled() -> Self {
        Redactor {
            modes: [RedactionMode::Keep; SecretKind::ALL.len()],
            key: None,
        }
    }

    /// Whether any kind is redacted at all.
    pub fn is_active(&self) -> bool {
        self.modes.iter().any(|m| *m != RedactionMode::Keep)
    }

    /// The mode for one kind.
    pub fn mode(&self, kind: SecretKind) -> RedactionMode {
        self.modes[index(kind)]
    }

    /// What replaces `value`, a found value of `kind`.
    pub fn replacement(&self, kind: SecretKind, value: &str) -> String {
        match self.mode(kind) {
            RedactionMode::Keep => value.to_string(),
            RedactionMode::Drop => format!("[REDACTED:{}]", kind.as_str()),
            RedactionMode::Hash => {
                let (scheme, digest) = match &self.key {
                    Some(key) => ("hmac-sha256", hmac_sha256(key, value.as_bytes())),
                    None => ("sha256", Sha256::digest(value.as_bytes()).into()),
                };
                format!("[{}:{scheme}:{}]", kind.as_str(), hex(&digest[..8]))
            }
            RedactionMode::Mask => mask(kind, value),
        }
    }

    /// `text` with every found value replaced, and how many were.
    pub fn redact_text<'a>(&self, text: &'a str) -> (Cow<'a, str>, usize) {
        if !self.is_active() {
            return (Cow::Borrowed(text), 0);
        }
        let mut found: Vec<SecretMatch> = Vec::new();
        scan_into(text, &mut found);
        found.retain(|m| self.mode(m.kind) != RedactionMode::Keep);
        if found.is_empty() {
            return (Cow::Borrowed(text), 0);
        }
        let mut out = String::with_capacity(text.len());
        let mut at = 0;
        for m in &found {
            out.push_str(&text[at..m.start]);
            out.push_str(&self.replacement(m.kind, &text[m.start..m.end]));
            at = m.end;
        }
        out.push_str(&text[at..]);
        (Cow::Owned(out), found.len())
    }

    /// Redacts every string in a JSON value (not object keys), in place; returns the
    /// number of values replaced.
    pub fn redact_value(&self, value: &mut Value) -> usize {
        match value {
            Value::String(s) => self.redact_string(s),
            Value::Array(items) => items.iter_mut().map(|v| self.redact_value(v)).sum(),
            Value::Object(map) => self.redact_map(map),
            // A card number sent as a JSON number is still a card number.
            Value::Number(n) if n.is_u64() && n.to_string().len() >= 13 => {
                let digits = n.to_string();
                let (redacted, count) = self.redact_text(&digits);
                if count > 0 {
                    *value = Value::String(redacted.into_owned());
                }
                count
            }
            _ => 0,
        }
    }

    fn redact_map(&self, map: &mut Map<String, Value>) -> usize {
        map.values_mut().map(|v| self.redact_value(v)).sum()
    }

    fn redact_string(&self, s: &mut String) -> usize {
        let (redacted, n) = self.redact_text(s);
        if let Cow::Owned(r) = redacted {
            *s = r;
        }
        n
    }

    /// Redacts a call's arguments, a result's content and a user's message, in place;
    /// returns the number of values replaced.
    pub fn redact_event(&self, event: &mut Event) -> usize {
        if !self.is_active() {
            return 0;
        }
        match &mut event.body {
            EventBody::ToolList { .. } => 0,
            EventBody::ToolCall { arguments, .. } => self.redact_map(arguments),
            EventBody::ToolResult { result, .. } => {
                let mut n: usize = result
                    .content
                    .iter_mut()
                    .map(|c| self.redact_value(c))
                    .sum();
                if let Some(structured) = &mut result.structured_content {
                    n += self.redact_map(structured);
                }
                n + self.redact_map(&mut result.other)
            }
            EventBody::UserMessage { text } => self.redact_string(text),
        }
    }

    /// Redacts a finding draft's title, description and evidence, in place.
    pub fn redact_draft(&self, draft: &mut FindingDraft) -> usize {
        if !self.is_active() {
            return 0;
        }
        self.redact_string(&mut draft.title)
            + self.redact_string(&mut draft.description)
            + self.redact_value(&mut draft.evidence)
    }

    /// Redacts a finding's title, description and evidence, in place.
    pub fn redact_finding(&self, finding: &mut Finding) -> usize {
        if !self.is_active() {
            return 0;
        }
        self.redact_string(&mut finding.title)
            + self.redact_string(&mut finding.description)
            + self.redact_value(&mut finding.evidence)
    }
}

fn index(kind: SecretKind) -> usize {
    SecretKind::ALL
        .iter()
        .position(|k| *k == kind)
        .unwrap_or_default()
}

fn mask(kind: SecretKind, value: &str) -> String {
    match kind.class() {
        SecretClass::Credentials => format!("[REDACTED:{}]", kind.as_str()),
        _ if kind == SecretKind::Email => match value.split_once('@') {
            Some((local, domain)) => {
                let first: String = local.chars().take(1).collect();
                format!("{first}***@{domain}")
            }
            None => format!("[REDACTED:{}]", kind.as_str()),
        },
        _ => {
            let total = value.bytes().filter(u8::is_ascii_alphanumeric).count();
            let mut seen = 0;
            value
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() {
                        seen += 1;
                        if seen + 4 <= total { '*' } else { c }
                    } else {
                        c
                    }
                })
                .collect()
        }
    }
}

/// HMAC-SHA256 (RFC 2104).
fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    const BLOCK: usize = 64;
    let mut block = [0u8; BLOCK];
    if key.len() > BLOCK {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let pad = |byte: u8| block.map(|b| b ^ byte);
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(message)
        .finalize();
    Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize()
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn redactor(mode: RedactionMode, kinds: &[(&str, RedactionMode)]) -> Redactor {
        let config = RedactionConfig {
            enabled: true,
            mode,
            kinds: kinds
                .iter()
                .map(|(k, m)| (k.to_string(), *m))
                .collect::<BTreeMap<_, _>>(),
            hash_key_env: None,
            hash_key: Some(b"key".to_vec()),
        };
        Redactor::new(&config).unwrap()
    }

    #[test]
    fn hmac_matches_rfc_4231_case_2() {
        let mac = hmac_sha256(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(
            hex(&mac),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn mask_keeps_last_four_and_email_domain_and_hides_credentials() {
        let r = redactor(RedactionMode::Mask, &[]);
        let (text, n) = r.redact_text(
            "card 4111 1111 1111 1111, iban GB29NWBK60161331926819, mail emma@bank.com, key AKIAIOSFODNN7EXAMPLE",
        );
        assert_eq!(n, 4);
        assert_eq!(
            text,
            "card **** **** **** 1111, iban ******************6819, mail e***@bank.com, key [REDACTED:aws_access_key]"
        );
    }

    #[test]
    fn hash_is_stable_keyed_and_names_the_kind() {
        let r = redactor(RedactionMode::Hash, &[]);
        let (a, _) = r.redact_text("to emma@bank.com");
        let (b, _) = r.redact_text("from emma@bank.com");
        let tag = |s: &str| s.split_once(' ').map(|(_, t)| t.to_string());
        assert_eq!(tag(&a), tag(&b));
        assert!(a.contains("[email:hmac-sha256:"), "{a}");
        let unkeyed = Redactor::new(&RedactionConfig {
            mode: RedactionMode::Hash,
            ..RedactionConfig::default()
        })
        .unwrap();
        assert!(
            unkeyed
                .redact_text("emma@bank.com")
                .0
                .starts_with("[email:sha256:")
        );
    }

    #[test]
    fn kinds_override_classes_and_the_default() {
        let r = redactor(
            RedactionMode::Drop,
            &[
                ("contact", RedactionMode::Keep),
                ("phone", RedactionMode::Mask),
            ],
        );
        let (text, n) =
            r.redact_text("emma@bank.com +1 415 555 0132 sk_live_4eC39HqLyjWDarjtT1zdp7dc");
        assert_eq!(n, 2);
        assert_eq!(text, "emma@bank.com +* *** *** 0132 [REDACTED:api_key]");
    }

    #[test]
    fn disabled_config_and_unknown_kinds() {
        let off = Redactor::new(&RedactionConfig {
            enabled: false,
            ..RedactionConfig::default()
        })
        .unwrap();
        assert!(!off.is_active());
        assert_eq!(off.redact_text("emma@bank.com").1, 0);
        let err = Redactor::new(&RedactionConfig {
            kinds: [("passport".to_string(), RedactionMode::Drop)].into(),
            ..RedactionConfig::default()
        })
        .unwrap_err();
        assert!(
            err.to_string().contains("`redaction.kinds.passport`"),
            "{err}"
        );
    }

    #[test]
    fn events_are_redacted_in_arguments_results_and_messages_but_not_definitions() {
        let r = redactor(RedactionMode::Drop, &[]);
        let mut call = Event::from_value(serde_json::json!({
            "schema": "toolgate.event.v1", "kind": "tool_call", "event_id": "e",
            "time": "2025-01-01T00:00:00Z", "agent_id": "a", "session_id": "s",
            "server": "mail", "call_id": "c", "tool": "send",
            "arguments": {"to": ["x@evil.io"], "body": {"text": "key AKIAIOSFODNN7EXAMPLE"}, "n": 4111111111111111u64}
        }))
        .unwrap();
        assert_eq!(r.redact_event(&mut call), 3);
        let EventBody::ToolCall { arguments, .. } = &call.body else {
            unreachable!()
        };
        assert_eq!(arguments["to"][0], "[REDACTED:email]");
        assert_eq!(arguments["body"]["text"], "key [REDACTED:aws_access_key]");
        assert_eq!(arguments["n"], "[REDACTED:card_number]");
        let mut list = Event::from_value(serde_json::json!({
            "schema": "toolgate.event.v1", "kind": "tool_list", "event_id": "e",
            "time": "2025-01-01T00:00:00Z", "agent_id": "a", "session_id": "s", "server": "mail",
            "tools": [{"name": "send", "description": "mail help@example.com", "inputSchema": {"type": "object"}}]
        }))
        .unwrap();
        assert_eq!(r.redact_event(&mut list), 0);
    }
}
