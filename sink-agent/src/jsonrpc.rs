//! Just enough JSON-RPC 2.0 to route MCP messages: what kind a message is, its id and
//! method, and the members the checks read. Anything else is carried as JSON, and the
//! proxy forwards the original bytes, not a re-encoding.

use serde_json::{Map, Value, json};
use toolgate_protocol::lenient;

/// A request id, as a key (JSON-RPC ids are strings or numbers; `1` and `"1"` differ).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Id(String);

impl Id {
    /// The key of an id value; `None` for a value that cannot be an id.
    pub fn of(value: &Value) -> Option<Id> {
        match value {
            Value::String(_) | Value::Number(_) => Some(Id(value.to_string())),
            _ => None,
        }
    }

    /// The id as JSON text (a string keeps its quotes), for an event's `call_id`.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// One message of a batch, or a whole message.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    /// A request: expects a response with the same id.
    Request {
        /// Its id as sent.
        id: Value,
        /// `tools/call`, `tools/list`, ...
        method: String,
        /// `params`, if an object.
        params: Option<Map<String, Value>>,
    },
    /// A notification: no id, no response.
    Notification {
        /// Its method.
        method: String,
    },
    /// A method call whose `id` is neither a string nor a number (`null`, an object):
    /// not a valid request, and not a notification either.
    InvalidId {
        /// Its method.
        method: String,
    },
    /// A response to an earlier request.
    Response {
        /// The request's id.
        id: Value,
        /// `result`, if present and an object.
        result: Option<Map<String, Value>>,
        /// An `error` member is present.
        is_error: bool,
    },
    /// Valid JSON that is not a JSON-RPC message; forwarded for the peer to answer.
    Other,
}

/// A parsed line.
#[derive(Debug, Clone, PartialEq)]
pub enum Parsed {
    /// One message.
    Single(Message),
    /// A JSON-RPC batch (an array), in order.
    Batch(Vec<(Value, Message)>),
}

/// Why a line is not JSON, even to the most lenient peer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not JSON: {0}")]
pub struct NotJson(pub String);

/// A parsed line and how it was read.
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded {
    /// The message or batch.
    pub parsed: Parsed,
    /// `None` for strict JSON; otherwise serde_json refused the line and this is the
    /// lenient view a peer would act on, with the liberties taken to read it
    /// (`lone_surrogate,non_finite_number`, ...).
    pub lenient: Option<String>,
}

/// Parses one line: strictly, or as leniently as the MCP peers do when serde_json
/// refuses it (see [`toolgate_protocol::lenient`]). Only a line no peer reads is
/// [`NotJson`].
pub fn parse(bytes: &[u8]) -> Result<Decoded, NotJson> {
    let (value, lenient) = match serde_json::from_slice::<Value>(bytes) {
        Ok(value) => (value, None),
        Err(strict) => {
            let l = lenient::parse(bytes, lenient::DEFAULT_MAX_DEPTH)
                .map_err(|_| NotJson(strict.to_string()))?;
            let mut quirks = l.quirks.joined();
            if quirks.is_empty() {
                // Read only by this decoder's own leniency (a leading zero, say).
                quirks = "nonstandard_syntax".into();
            }
            (l.value, Some(quirks))
        }
    };
    let parsed = match value {
        Value::Array(items) => Parsed::Batch(
            items
                .into_iter()
                .map(|v| {
                    let m = classify(&v);
                    (v, m)
                })
                .collect(),
        ),
        v => Parsed::Single(classify(&v)),
    };
    Ok(Decoded { parsed, lenient })
}

/// The kind of one JSON-RPC object.
pub fn classify(value: &Value) -> Message {
    let Value::Object(o) = value else {
        return Message::Other;
    };
    let method = o.get("method").and_then(Value::as_str);
    let id = o.get("id").filter(|v| Id::of(v).is_some());
    match (method, id) {
        (Some(method), Some(id)) => Message::Request {
            id: id.clone(),
            method: method.to_string(),
            params: o.get("params").and_then(Value::as_object).cloned(),
        },
        (Some(method), None) if !o.contains_key("id") => Message::Notification {
            method: method.to_string(),
        },
        (Some(method), None) => Message::InvalidId {
            method: method.to_string(),
        },
        (None, Some(id)) if o.contains_key("result") || o.contains_key("error") => {
            Message::Response {
                id: id.clone(),
                result: o.get("result").and_then(Value::as_object).cloned(),
                is_error: o.contains_key("error"),
            }
        }
        _ => Message::Other,
    }
}

/// The answer to a refused `tools/call`: a well-formed result with `isError: true`, so
/// the agent shows the reason instead of failing or waiting.
pub fn refusal(id: &Value, text: &str) -> Value {
    json!({
        "jsonrpc": "2.0",
        "id": id,
        "result": {
            "content": [{"type": "text", "text": text}],
            "isError": true,
        }
    })
}

/// A JSON-RPC error response (`id` null when the request's id could not be read).
pub fn error(id: &Value, code: i64, message: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}})
}

/// Finds a request's top-level `id` in a message too large to parse whole, reading
/// it as it streams past (parts of a line), in constant memory: so a refusal of an
/// oversized request still carries its id and the client can match it. Members
/// before `id` (a huge `params` first) are skipped at any depth.
#[derive(Debug, Default)]
pub struct IdSniffer {
    depth: u32,
    in_string: bool,
    escape: bool,
    /// At depth 1, the next string is a member name.
    expect_key: bool,
    in_key: bool,
    key: Vec<u8>,
    /// A member name ended; its `:` comes next.
    after_key: bool,
    capturing: bool,
    value: Vec<u8>,
    found: Option<Value>,
    done: bool,
}

/// The longest id text kept: longer ones are not ids a client could have sent.
const MAX_ID_BYTES: usize = 1024;

impl IdSniffer {
    /// Reads the next bytes of the message.
    pub fn push(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if self.done {
                return;
            }
            self.byte(b);
        }
    }

    /// The id, once read: a string or a number.
    pub fn id(&self) -> Option<&Value> {
        self.found.as_ref()
    }

    fn byte(&mut self, b: u8) {
        if self.capturing {
            let ends = !self.in_string && self.depth == 1 && (b == b',' || b == b'}');
            if ends {
                self.found = serde_json::from_slice::<Value>(&self.value)
                    .ok()
                    .filter(|v| v.is_string() || v.is_number());
                self.done = true;
                return;
            }
            self.value.push(b);
            if self.value.len() > MAX_ID_BYTES {
                self.done = true;
                return;
            }
        }
        if self.in_string {
            if self.escape {
                self.escape = false;
            } else if b == b'\\' {
                self.escape = true;
            } else if b == b'"' {
                self.in_string = false;
                if self.in_key {
                    self.in_key = false;
                    self.after_key = true;
                }
                return;
            }
            if self.in_key && self.key.len() <= 2 {
                self.key.push(b);
            }
            return;
        }
        match b {
            b'"' => {
                self.in_string = true;
                if self.depth == 1 && self.expect_key {
                    self.expect_key = false;
                    self.in_key = true;
                    self.key.clear();
                }
            }
            b'{' | b'[' => {
                if self.depth == 0 && b == b'[' {
                    // A batch: no one id to answer with.
                    self.done = true;
                }
                self.depth += 1;
                if self.depth == 1 {
                    self.expect_key = true;
                }
            }
            b'}' | b']' => {
                self.depth = self.depth.saturating_sub(1);
                if self.depth == 0 {
                    self.done = true;
                }
            }
            b',' if self.depth == 1 => self.expect_key = true,
            b':' if self.depth == 1 && self.after_key => {
                self.after_key = false;
                if self.key == b"id" {
                    self.capturing = true;
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_told_apart() {
        let p = parse(br#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"x"}}"#)
            .unwrap()
            .parsed;
        assert!(
            matches!(p, Parsed::Single(Message::Request { ref method, .. }) if method == "tools/call")
        );
        let p = parse(br#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{}}"#)
            .unwrap()
            .parsed;
        assert!(matches!(p, Parsed::Single(Message::Notification { .. })));
        let p = parse(br#"{"jsonrpc":"2.0","id":"a","error":{"code":1,"message":"m"}}"#)
            .unwrap()
            .parsed;
        assert!(matches!(
            p,
            Parsed::Single(Message::Response { is_error: true, .. })
        ));
        let p = parse(br#"[{"jsonrpc":"2.0","id":1,"method":"ping"},3]"#)
            .unwrap()
            .parsed;
        let Parsed::Batch(items) = p else { panic!() };
        assert_eq!(items[1].1, Message::Other);
        assert!(parse(b"{nope").is_err());
        let p = parse(br#"{"jsonrpc":"2.0","id":null,"method":"tools/call"}"#)
            .unwrap()
            .parsed;
        assert!(matches!(p, Parsed::Single(Message::InvalidId { .. })));
    }

    #[test]
    fn lines_only_a_lenient_peer_reads_are_parsed_and_marked() {
        let d = parse(br#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"echo","arguments":{"pad":1e400,"m":"\udc00"}}}"#)
            .unwrap();
        assert_eq!(
            d.lenient.as_deref(),
            Some("lone_surrogate,non_finite_number")
        );
        assert!(
            matches!(d.parsed, Parsed::Single(Message::Request { ref id, .. }) if id == &json!(3))
        );
        assert_eq!(
            parse(b"{\"id\":01}").unwrap().lenient.as_deref(),
            Some("nonstandard_syntax")
        );
        assert_eq!(parse(br#"{"id":1}"#).unwrap().lenient, None);
    }

    #[test]
    fn numeric_and_string_ids_stay_distinct() {
        assert_ne!(Id::of(&json!(1)), Id::of(&json!("1")));
        assert_eq!(Id::of(&json!(null)), None);
    }

    fn sniff(parts: &[&[u8]]) -> Option<Value> {
        let mut s = IdSniffer::default();
        for p in parts {
            s.push(p);
        }
        s.id().cloned()
    }

    #[test]
    fn issue_22_an_oversized_requests_id_is_read_as_it_streams_past() {
        let pad = "x".repeat(100_000);
        let tail = format!(
            r#"{{"jsonrpc":"2.0","method":"tools/call","params":{{"name":"w","arguments":{{"text":"{pad}","id":"not this","nested":{{"id":9}}}}}},"id":"req-7"}}"#
        );
        // Split anywhere, even inside the id.
        let bytes = tail.as_bytes();
        for cut in [1, 17, bytes.len() - 5, bytes.len() - 1] {
            assert_eq!(
                sniff(&[&bytes[..cut], &bytes[cut..]]),
                Some(json!("req-7")),
                "cut at {cut}"
            );
        }
        assert_eq!(
            sniff(&[
                br#"{"id": 42 , "method":"tools/call","params":{"#,
                pad.as_bytes()
            ]),
            Some(json!(42)),
            "found before the rest arrives"
        );
        assert_eq!(
            sniff(&[br#"{"method":"x","params":{"s":"a \"id\": 5, \\"},"id":"k\"q"}"#]),
            Some(json!("k\"q")),
            "escaped quotes and backslashes in strings"
        );
        for none in [
            &br#"{"method":"notifications/x","params":{"id":1}}"#[..],
            br#"{"id":null,"method":"x"}"#,
            br#"{"id":{"a":1},"method":"x"}"#,
            br#"[{"id":1}]"#,
            br#"{"idx":1}"#,
        ] {
            assert_eq!(sniff(&[none]), None, "{}", String::from_utf8_lossy(none));
        }
    }
}
