//! Replaces secrets and personal data in events and findings before they are stored,
//! logged or sent on. Detectors see the original event; only what leaves the detector
//! (a finding, a stored or forwarded event) is redacted.
//!
//! Everything a sender controls is covered: values and object keys at any depth, the
//! ids and labels an agent or server chooses (`session_id`, `call_id`, `host`,
//! `labels`), and tool definitions (a server can put anything in a description or a
//! schema). Pins stay comparable because sink and engine fingerprint the same redacted
//! definitions. Every replaced value is listed in the event's `redacted` (kind and
//! field, never the value), so a detector downstream of the redaction still knows a
//! secret was there.

use std::borrow::Cow;

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use toolgate_protocol::config::{RedactionConfig, RedactionMode};
use toolgate_protocol::event::{EventBody, MAX_REDACTED, Redacted};
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

    /// Redacts every string in a JSON value, object keys included, in place; returns
    /// the number of values replaced.
    pub fn redact_value(&self, value: &mut Value) -> usize {
        let mut notes = Notes::discard();
        self.value(value, &mut String::new(), &mut notes);
        notes.count
    }

    /// Redacts an event in place: the values and keys of a call's arguments, of a
    /// result and of a listing's definitions, a user's message, and the ids and labels
    /// a sender chooses. Each replaced value is added to `event.redacted`; returns how
    /// many were replaced.
    pub fn redact_event(&self, event: &mut Event) -> usize {
        if !self.is_active() {
            return 0;
        }
        let mut notes = Notes {
            list: Some(std::mem::take(&mut event.redacted)),
            count: 0,
        };
        let mut path = String::new();
        for (field, id) in [
            ("session_id", Some(&mut event.session_id)),
            ("host", event.host.as_mut()),
        ] {
            if let Some(id) = id {
                path.push_str(field);
                self.string(id, &path, &mut notes);
                path.clear();
            }
        }
        if !event.labels.is_empty() {
            let labels = std::mem::take(&mut event.labels);
            for (mut k, mut v) in labels {
                path.push_str("labels");
                self.string(&mut k, &path, &mut notes);
                self.string(&mut v, &path, &mut notes);
                path.clear();
                event
                    .labels
                    .insert(unique_key(k, |k| event.labels.contains_key(k)), v);
            }
        }
        match &mut event.body {
            EventBody::ToolList { tools, .. } => {
                for (i, tool) in tools.iter_mut().enumerate() {
                    let at = format!("tools[{i}]");
                    let field = |name: &str| format!("{at}.{name}");
                    for (name, text) in [
                        ("title", tool.title.as_mut()),
                        ("description", tool.description.as_mut()),
                    ] {
                        if let Some(text) = text {
                            self.string(text, &field(name), &mut notes);
                        }
                    }
                    for (name, map) in [
                        ("inputSchema", tool.input_schema.as_mut()),
                        ("outputSchema", tool.output_schema.as_mut()),
                        ("annotations", tool.annotations.as_mut()),
                    ] {
                        if let Some(map) = map {
                            self.map(map, &mut field(name), &mut notes);
                        }
                    }
                    self.map(&mut tool.other, &mut at.clone(), &mut notes);
                }
            }
            EventBody::ToolCall {
                call_id, arguments, ..
            } => {
                self.string(call_id, "call_id", &mut notes);
                self.map(arguments, &mut "arguments".into(), &mut notes);
            }
            EventBody::ToolResult {
                call_id, result, ..
            } => {
                self.string(call_id, "call_id", &mut notes);
                let mut path = String::from("result.content");
                for (i, c) in result.content.iter_mut().enumerate() {
                    let len = path.len();
                    path.push_str(&format!("[{i}]"));
                    self.value(c, &mut path, &mut notes);
                    path.truncate(len);
                }
                if let Some(structured) = &mut result.structured_content {
                    self.map(
                        structured,
                        &mut "result.structuredContent".into(),
                        &mut notes,
                    );
                }
                self.map(&mut result.other, &mut "result".into(), &mut notes);
            }
            EventBody::UserMessage { text } => self.string(text, "text", &mut notes),
        }
        event.redacted = notes.list.unwrap_or_default();
        notes.count
    }

    /// Redacts one JSON value at `path` (extended and restored as it descends).
    fn value(&self, value: &mut Value, path: &mut String, notes: &mut Notes) {
        match value {
            Value::String(s) => self.string(s, path, notes),
            Value::Array(items) => {
                for (i, v) in items.iter_mut().enumerate() {
                    let len = path.len();
                    path.push('[');
                    path.push_str(&i.to_string());
                    path.push(']');
                    self.value(v, path, notes);
                    path.truncate(len);
                }
            }
            Value::Object(map) => self.map(map, path, notes),
            // A card number sent as a JSON number is still a card number.
            Value::Number(n) if n.is_u64() && n.to_string().len() >= 13 => {
                let mut digits = n.to_string();
                let before = notes.count;
                self.string(&mut digits, path, notes);
                if notes.count > before {
                    *value = Value::String(digits);
                }
            }
            _ => {}
        }
    }

    /// Redacts an object's keys, then its values.
    fn map(&self, map: &mut Map<String, Value>, path: &mut String, notes: &mut Notes) {
        let secret_keys: Vec<String> = map.keys().filter(|k| self.finds(k)).cloned().collect();
        for key in secret_keys {
            let Some(v) = map.remove(&key) else { continue };
            let mut new_key = key;
            self.string(&mut new_key, path, notes);
            let unique = unique_key(new_key, |k| map.contains_key(k));
            map.insert(unique, v);
        }
        for (k, v) in map.iter_mut() {
            let len = path.len();
            path.push('.');
            path.push_str(k);
            self.value(v, path, notes);
            path.truncate(len);
        }
    }

    /// Whether `text` holds a value this redactor replaces.
    fn finds(&self, text: &str) -> bool {
        let mut found = Vec::new();
        scan_into(text, &mut found);
        found
            .iter()
            .any(|m| self.mode(m.kind) != RedactionMode::Keep)
    }

    /// Redacts one string, noting each replaced value at `path`.
    fn string(&self, s: &mut String, path: &str, notes: &mut Notes) {
        let mut found: Vec<SecretMatch> = Vec::new();
        scan_into(s, &mut found);
        found.retain(|m| self.mode(m.kind) != RedactionMode::Keep);
        if found.is_empty() {
            return;
        }
        let mut out = String::with_capacity(s.len());
        let mut at = 0;
        for m in &found {
            out.push_str(&s[at..m.start]);
            out.push_str(&self.replacement(m.kind, &s[m.start..m.end]));
            at = m.end;
            notes.note(m.kind, path);
        }
        out.push_str(&s[at..]);
        *s = out;
    }

    /// Redacts a finding draft's title, description, evidence and the ids it copied
    /// from its event, in place. The group key is left: it only feeds the finding id's
    /// hash and is never written.
    pub fn redact_draft(&self, draft: &mut FindingDraft) -> usize {
        if !self.is_active() {
            return 0;
        }
        let mut n = self.redact_text_in_place(&mut draft.title)
            + self.redact_text_in_place(&mut draft.description)
            + self.redact_text_in_place(&mut draft.session_id)
            + self.redact_value(&mut draft.evidence);
        if let Some(call_id) = &mut draft.call_id {
            n += self.redact_text_in_place(call_id);
        }
        n
    }

    /// Redacts a finding's title, description, evidence and ids, in place.
    pub fn redact_finding(&self, finding: &mut Finding) -> usize {
        if !self.is_active() {
            return 0;
        }
        let mut n = self.redact_text_in_place(&mut finding.title)
            + self.redact_text_in_place(&mut finding.description)
            + self.redact_text_in_place(&mut finding.session_id)
            + self.redact_value(&mut finding.evidence);
        if let Some(call_id) = &mut finding.call_id {
            n += self.redact_text_in_place(call_id);
        }
        n
    }
}

impl Redactor {
    /// Redacts one string in place; returns the number of values replaced.
    pub fn redact_text_in_place(&self, s: &mut String) -> usize {
        let mut notes = Notes::discard();
        self.string(s, "", &mut notes);
        notes.count
    }
}

/// `key`, or `key#2`, `key#3`, ... if taken: two keys may redact alike, and neither
/// value may be lost.
fn unique_key(key: String, taken: impl Fn(&str) -> bool) -> String {
    let mut unique = key.clone();
    let mut n = 1;
    while taken(&unique) {
        n += 1;
        unique = format!("{key}#{n}");
    }
    unique
}

/// What one redaction replaced: a count, and where the caller wants it, the list.
struct Notes {
    list: Option<Vec<Redacted>>,
    count: usize,
}

impl Notes {
    fn discard() -> Self {
        Notes {
            list: None,
            count: 0,
        }
    }

    fn note(&mut self, kind: SecretKind, path: &str) {
        self.count += 1;
        if let Some(list) = &mut self.list
            && list.len() < MAX_REDACTED
        {
            let mut field = if path.is_empty() { "value" } else { path };
            // The wire keeps identifiers to 512 bytes.
            let mut cut = field.len().min(toolgate_protocol::MAX_IDENTIFIER_BYTES);
            while !field.is_char_boundary(cut) {
                cut -= 1;
            }
            field = &field[..cut];
            let entry = Redacted {
                kind: kind.as_str().to_string(),
                field: field.to_string(),
            };
            if !list.contains(&entry) {
                list.push(entry);
            }
        }
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
    fn events_are_redacted_in_arguments_results_messages_and_definitions() {
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
        let fields: Vec<(&str, &str)> = call
            .redacted
            .iter()
            .map(|r| (r.kind.as_str(), r.field.as_str()))
            .collect();
        assert_eq!(
            fields,
            [
                ("aws_access_key", "arguments.body.text"),
                ("card_number", "arguments.n"),
                ("email", "arguments.to[0]")
            ]
        );
        let mut list = Event::from_value(serde_json::json!({
            "schema": "toolgate.event.v1", "kind": "tool_list", "event_id": "e",
            "time": "2025-01-01T00:00:00Z", "agent_id": "a", "session_id": "s", "server": "mail",
            "tools": [{"name": "send", "description": "mail help@example.com",
                       "inputSchema": {"type": "object", "properties": {"k": {"default": "AKIAIOSFODNN7EXAMPLE"}}}}]
        }))
        .unwrap();
        assert_eq!(r.redact_event(&mut list), 2);
        assert!(!list.to_json().contains("AKIAIOSFODNN7EXAMPLE"));
        assert!(!list.to_json().contains("help@example.com"));
    }

    /// Issue 19: keys, ids and labels held raw secrets after redaction.
    #[test]
    fn issue_19_keys_ids_and_labels_are_redacted_and_listed_without_the_value() {
        let r = redactor(RedactionMode::Mask, &[]);
        let key = "AKIAIOSFODNN7EXAMPLE";
        let mut call = Event::from_value(serde_json::json!({
            "schema": "toolgate.event.v1", "kind": "tool_call", "event_id": "e",
            "time": "2025-01-01T00:00:00Z", "agent_id": "a", "session_id": format!("s-{key}"),
            "host": format!("h-{key}"), "server": "mail", "call_id": format!("c-{key}"), "tool": "send",
            "labels": {key: "v", "k": key},
            "arguments": {key: 1, "nested": {"ghp_0123456789abcdefghijklmnopqrstuvwxyz": {key: 2}}}
        }))
        .unwrap();
        assert!(r.redact_event(&mut call) >= 7);
        let json = call.to_json();
        assert!(!json.contains(key), "{json}");
        assert!(!json.contains("ghp_0123"), "{json}");
        for field in [
            "session_id",
            "host",
            "labels",
            "call_id",
            "arguments",
            "arguments.nested",
        ] {
            assert!(
                call.redacted.iter().any(|r| r.field == field),
                "{field}: {:?}",
                call.redacted
            );
        }
        // Both values survive under their redacted keys, and the event still decodes.
        let again = Event::decode(json.as_bytes()).expect("decodes");
        assert_eq!(again.redacted, call.redacted);
        // A second pass finds nothing new.
        let mut twice = again.clone();
        assert_eq!(r.redact_event(&mut twice), 0);
        assert_eq!(twice, again);
    }
}
