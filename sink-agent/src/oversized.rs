//! Messages too large to inspect whole are never out of view (issue 22): as one streams
//! past, the sink keeps its first and last bytes, its size, its SHA-256 and its
//! JSON-RPC `id`, in memory bounded whatever its size. A server's oversized result then
//! becomes a `tool_result` event like any other, carrying the inspected head and tail
//! as its text and labelled as truncated, so the detectors read what they can and a
//! padded payload cannot pass unseen.

use sha2::{Digest, Sha256};
use toolgate_protocol::fingerprint::hex;

use crate::jsonrpc::IdSniffer;

/// Most bytes kept from the start of an oversized message.
pub const HEAD_BYTES: usize = 1 << 20;
/// Most bytes kept from the end of an oversized message.
pub const TAIL_BYTES: usize = 256 << 10;

/// What is kept of one oversized message while it streams past.
pub struct Capture {
    head: Vec<u8>,
    head_max: usize,
    /// The last `tail_max` bytes, as a ring: `tail_at` is where the oldest byte is
    /// once the ring is full.
    tail: Vec<u8>,
    tail_max: usize,
    tail_at: usize,
    size: u64,
    digest: Sha256,
    id: IdSniffer,
}

/// An oversized message, as far as it was inspected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Truncated {
    /// Its top-level `id` (a string or a number), if it had one.
    pub id: Option<serde_json::Value>,
    /// Its size in bytes.
    pub size: u64,
    /// Its SHA-256, hex.
    pub sha256: String,
    /// Its first bytes.
    pub head: Vec<u8>,
    /// Its last bytes (none of them also in `head`).
    pub tail: Vec<u8>,
}

impl Capture {
    /// Keeps at most [`HEAD_BYTES`] and [`TAIL_BYTES`], and no more than a sixteenth
    /// and a sixty-fourth of `max_message_bytes`: encoded in the event, a byte may take
    /// six (a control character escaped as `\u0001`), and the event must stay below the
    /// limit events are held to.
    pub fn new(max_message_bytes: usize) -> Self {
        Self::with_bounds(
            HEAD_BYTES.min(max_message_bytes / 16),
            TAIL_BYTES.min(max_message_bytes / 64),
        )
    }

    fn with_bounds(head_max: usize, tail_max: usize) -> Self {
        Capture {
            head: Vec::new(),
            head_max,
            tail: Vec::new(),
            tail_max,
            tail_at: 0,
            size: 0,
            digest: Sha256::new(),
            id: IdSniffer::default(),
        }
    }

    /// The next bytes of the message.
    pub fn push(&mut self, mut bytes: &[u8]) {
        self.size += bytes.len() as u64;
        self.digest.update(bytes);
        self.id.push(bytes);
        let room = self.head_max - self.head.len();
        if room > 0 {
            let n = room.min(bytes.len());
            self.head.extend_from_slice(&bytes[..n]);
            bytes = &bytes[n..];
        }
        if self.tail_max == 0 {
            return;
        }
        if bytes.len() >= self.tail_max {
            self.tail.clear();
            self.tail
                .extend_from_slice(&bytes[bytes.len() - self.tail_max..]);
            self.tail_at = 0;
            return;
        }
        for &b in bytes {
            if self.tail.len() < self.tail_max {
                self.tail.push(b);
            } else {
                self.tail[self.tail_at] = b;
                self.tail_at = (self.tail_at + 1) % self.tail_max;
            }
        }
    }

    /// The message ended.
    pub fn finish(self) -> Truncated {
        let mut tail = self.tail;
        tail.rotate_left(self.tail_at);
        let sha256 = hex(&self.digest.finalize());
        Truncated {
            id: self.id.id().cloned(),
            size: self.size,
            sha256,
            head: self.head,
            tail,
        }
    }
}

impl Truncated {
    /// The head and tail as text for the detectors: JSON's escapes of the common
    /// characters undone (`\n`, `\"`, `\\`, `\t`, `\/`) so phrases read as the model
    /// reads them; invalid UTF-8 at the cut points replaced.
    pub fn texts(&self) -> (String, String) {
        (unescape(&self.head), unescape(&self.tail))
    }

    /// The tool a `tools/call` names, read from the message's start (where the MCP
    /// SDKs write `params.name`, ahead of the arguments) or its end (members sorted by
    /// name put it last); `(unreadable)` when neither shows it. `None` for any other
    /// method, or when neither end shows the method.
    pub fn called_tool(&self) -> Option<String> {
        // The first `"method"` may be a nested key (in the arguments), so any mention
        // of the method at either end counts: a refused message is better reported
        // once too often than not at all.
        let method = member(&self.head, b"method", Occurrence::First)
            .or_else(|| member(&self.tail, b"method", Occurrence::Last));
        let named = |bytes: &[u8]| find(bytes, b"\"tools/call\"").is_some();
        if method.as_ref().and_then(|m| m.as_str()) != Some("tools/call")
            && !named(&self.head)
            && !named(&self.tail)
        {
            return None;
        }
        let first_param = find(&self.head, b"\"params\"").and_then(|at| {
            let rest = self.head[at + 8..].trim_ascii_start().strip_prefix(b":")?;
            let rest = rest.trim_ascii_start().strip_prefix(b"{")?;
            let rest = rest.trim_ascii_start();
            rest.starts_with(b"\"name\"")
                .then(|| member(rest, b"name", Occurrence::First))
                .flatten()
        });
        let name = first_param.or_else(|| member(&self.tail, b"name", Occurrence::Last));
        Some(
            name.as_ref()
                .and_then(|v| v.as_str())
                .filter(|n| !n.is_empty() && n.len() <= 512)
                .unwrap_or("(unreadable)")
                .to_string(),
        )
    }
}

#[derive(Clone, Copy)]
enum Occurrence {
    First,
    Last,
}

/// Where `needle` first occurs in `haystack`.
fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The value of the first (or last) member named `key` in `bytes`, a piece of a JSON
/// text, if it is there whole.
fn member(bytes: &[u8], key: &[u8], which: Occurrence) -> Option<serde_json::Value> {
    let quoted = [b"\"", key, b"\""].concat();
    let mut places: Vec<usize> = bytes
        .windows(quoted.len())
        .enumerate()
        .filter(|(_, w)| *w == quoted.as_slice())
        .map(|(i, _)| i + quoted.len())
        .collect();
    if let Occurrence::Last = which {
        places.reverse();
    }
    places.into_iter().find_map(|from| {
        let value = bytes[from..].trim_ascii_start().strip_prefix(b":")?;
        serde_json::Deserializer::from_slice(value.trim_ascii_start())
            .into_iter::<serde_json::Value>()
            .next()?
            .ok()
    })
}

fn unescape(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('r') => out.push('\r'),
            Some(c @ ('"' | '\\' | '/')) => out.push(c),
            Some(c) => {
                out.push('\\');
                out.push(c);
            }
            None => out.push('\\'),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn capture(message: &[u8], chunk: usize, head: usize, tail: usize) -> Truncated {
        let mut c = Capture::with_bounds(head, tail);
        for part in message.chunks(chunk) {
            c.push(part);
        }
        c.finish()
    }

    #[test]
    fn head_tail_size_digest_and_id_whatever_the_chunks() {
        let message = format!(
            r#"{{"result":{{"content":[{{"type":"text","text":"{}"}}]}},"jsonrpc":"2.0","id":7}}"#,
            "x".repeat(10_000)
        );
        let whole = hex(&Sha256::digest(message.as_bytes()));
        for chunk in [1, 7, 64, 4096, 1 << 20] {
            let t = capture(message.as_bytes(), chunk, 100, 40);
            assert_eq!(t.size, message.len() as u64);
            assert_eq!(t.sha256, whole);
            assert_eq!(t.id, Some(json!(7)), "the id after a huge result");
            assert_eq!(t.head, message.as_bytes()[..100]);
            assert_eq!(
                t.tail,
                message.as_bytes()[message.len() - 40..],
                "chunk {chunk}"
            );
        }
    }

    #[test]
    fn a_message_shorter_than_head_and_tail_is_kept_once() {
        let t = capture(b"0123456789", 3, 6, 8);
        assert_eq!(t.head, b"012345");
        assert_eq!(t.tail, b"6789");
    }

    #[test]
    fn the_texts_read_as_the_model_reads_them() {
        let t = capture(br#"{"text":"line one\nsay \"hi\" \\ done"#, 5, 1 << 10, 0);
        let (head, tail) = t.texts();
        assert_eq!(head, "{\"text\":\"line one\nsay \"hi\" \\ done");
        assert!(tail.is_empty());
    }

    #[test]
    fn the_tool_of_a_call_is_read_from_its_head() {
        let call = format!(
            r#"{{"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {{"name": "send_email", "arguments": {{"body": "{}"}}}}}}"#,
            "z".repeat(5000)
        );
        let t = capture(call.as_bytes(), 512, 200, 50);
        assert_eq!(t.called_tool().as_deref(), Some("send_email"));
        let list = capture(
            br#"{"id": 1, "method": "tools/list", "params": {"name": "x"}}"#,
            9,
            200,
            50,
        );
        assert_eq!(list.called_tool(), None);
        // Members sorted by name: the arguments come first, the name at the end.
        let sorted = format!(
            r#"{{"id":3,"jsonrpc":"2.0","method":"tools/call","params":{{"arguments":{{"name":"decoy","body":"{}"}},"name":"send_email"}}}}"#,
            "z".repeat(5000)
        );
        let t = capture(sorted.as_bytes(), 512, 200, 50);
        assert_eq!(t.called_tool().as_deref(), Some("send_email"));
        let hidden = format!(
            r#"{{"method":"tools/call","params":{{"a":"{0}","name":"x","b":"{0}"}}}}"#,
            "z".repeat(5000)
        );
        let t = capture(hidden.as_bytes(), 512, 200, 50);
        assert_eq!(t.called_tool().as_deref(), Some("(unreadable)"));
    }

    #[test]
    fn bounds_follow_the_message_limit() {
        let c = Capture::new(64 << 20);
        assert_eq!((c.head_max, c.tail_max), (HEAD_BYTES, TAIL_BYTES));
        let c = Capture::new(1 << 20);
        assert_eq!((c.head_max, c.tail_max), (64 << 10, 16 << 10));
    }
}
