//! A JSON decoder as lenient as the MCP peers a sink stands between.
//!
//! serde_json is strict; the official MCP SDKs are not. Node's `JSON.parse` reads the
//! line as UTF-8 with every invalid byte replaced, keeps lone surrogates (`"\udc00"`)
//! and turns `1e400` into `Infinity`; Python's `json` also takes `NaN`, `Infinity` and
//! `-Infinity`; neither limits nesting. A line serde_json rejects can therefore still be
//! read, and acted on, by the server. This decoder reads every such line into the value
//! the peer works with, as closely as a [`Value`] can hold it, and says which liberties
//! it took ([`Quirks`]) so the sink can refuse the message or inspect this view:
//!
//! - invalid UTF-8 inside a string becomes U+FFFD, as Node and Python's `replace` do;
//! - a lone surrogate escape becomes U+FFFD (a `String` cannot hold it; the text
//!   around it is unchanged, so a secret or an instruction beside it is still seen);
//! - a number beyond `f64` becomes `±f64::MAX` (the peer's `±Infinity`), `NaN` becomes
//!   `null`;
//! - a container nested deeper than the limit (64 in the sink) is flattened into an array of its
//!   strings (keys included) and numbers in order, so every text in it is still there
//!   for the checks to read, though no longer at its path;
//! - raw control characters in strings are kept as they are.
//!
//! Anything serde_json accepts decodes to the same value here (property-tested). The
//! decoder never recurses, so no input can exhaust the stack, and the values it builds
//! are at most `max_depth` deep, so code that walks them recursively is safe too.

use serde_json::{Map, Number, Value};

/// Which liberties the decoder took with a line serde_json would reject.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Quirks {
    /// A string held bytes that are not UTF-8 (replaced by U+FFFD).
    pub invalid_utf8: bool,
    /// A `\uD800`–`\uDFFF` escape without its pair (replaced by U+FFFD).
    pub lone_surrogate: bool,
    /// A number beyond `f64`, or `NaN` / `Infinity` (clamped, or `null` for `NaN`).
    pub non_finite_number: bool,
    /// Containers nested deeper than the limit (flattened).
    pub too_deep: bool,
    /// A raw control character inside a string.
    pub control_character: bool,
}

impl Quirks {
    /// Whether any liberty was taken.
    pub fn any(&self) -> bool {
        self.names().next().is_some()
    }

    /// The liberties taken, as stable names for events, logs and metrics.
    pub fn names(&self) -> impl Iterator<Item = &'static str> {
        [
            (self.invalid_utf8, "invalid_utf8"),
            (self.lone_surrogate, "lone_surrogate"),
            (self.non_finite_number, "non_finite_number"),
            (self.too_deep, "too_deep"),
            (self.control_character, "control_character"),
        ]
        .into_iter()
        .filter_map(|(set, name)| set.then_some(name))
    }

    /// The names joined with commas (`lone_surrogate,too_deep`).
    pub fn joined(&self) -> String {
        self.names().collect::<Vec<_>>().join(",")
    }
}

/// A line decoded leniently.
#[derive(Debug, Clone, PartialEq)]
pub struct Lenient {
    /// What the peer reads, as closely as a [`Value`] holds it.
    pub value: Value,
    /// What was done to get there; all false for strict JSON.
    pub quirks: Quirks,
}

/// Not JSON even to the most lenient peer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not JSON at byte {offset}: {problem}")]
pub struct LenientError {
    /// Where decoding stopped.
    pub offset: usize,
    /// What was wrong there.
    pub problem: &'static str,
}

/// Nesting the sink keeps of a leniently read line, well under serde_json's 128: what
/// it builds from that reading (an event nests the arguments at another depth than
/// the message did) must parse strictly again downstream.
pub const DEFAULT_MAX_DEPTH: usize = 64;

/// Decodes one JSON text (surrounding whitespace allowed) leniently; containers deeper
/// than `max_depth` are flattened.
pub fn parse(bytes: &[u8], max_depth: usize) -> Result<Lenient, LenientError> {
    let mut p = Parser {
        b: bytes,
        i: 0,
        quirks: Quirks::default(),
    };
    let value = p.document(max_depth.max(1))?;
    p.ws();
    if p.i != p.b.len() {
        return Err(p.err("trailing characters"));
    }
    Ok(Lenient {
        value,
        quirks: p.quirks,
    })
}

/// An open container while the document is read.
enum Open {
    Array(Vec<Value>),
    /// An object, and the key whose value is being read.
    Object(Map<String, Value>, String),
}

struct Parser<'a> {
    b: &'a [u8],
    i: usize,
    quirks: Quirks,
}

impl Parser<'_> {
    fn err(&self, problem: &'static str) -> LenientError {
        LenientError {
            offset: self.i,
            problem,
        }
    }

    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.b.get(self.i) {
            self.i += 1;
        }
    }

    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn expect(&mut self, byte: u8, problem: &'static str) -> Result<(), LenientError> {
        self.ws();
        if self.peek() == Some(byte) {
            self.i += 1;
            Ok(())
        } else {
            Err(self.err(problem))
        }
    }

    /// The key of an object member and its colon.
    fn key(&mut self) -> Result<String, LenientError> {
        self.ws();
        if self.peek() != Some(b'"') {
            return Err(self.err("expected a string key"));
        }
        let key = self.string()?;
        self.expect(b':', "expected `:` after a key")?;
        Ok(key)
    }

    /// A whole document, with an explicit stack instead of recursion.
    fn document(&mut self, max_depth: usize) -> Result<Value, LenientError> {
        let mut stack: Vec<Open> = Vec::new();
        'values: loop {
            self.ws();
            let mut value = match self.peek() {
                Some(open @ (b'[' | b'{')) => {
                    self.i += 1;
                    if stack.len() >= max_depth {
                        self.quirks.too_deep = true;
                        let mut leaves = Vec::new();
                        self.flatten(open, &mut leaves)?;
                        Value::Array(leaves)
                    } else {
                        self.ws();
                        let close = if open == b'[' { b']' } else { b'}' };
                        if self.peek() == Some(close) {
                            self.i += 1;
                            if open == b'[' {
                                Value::Array(Vec::new())
                            } else {
                                Value::Object(Map::new())
                            }
                        } else {
                            stack.push(if open == b'[' {
                                Open::Array(Vec::new())
                            } else {
                                Open::Object(Map::new(), self.key()?)
                            });
                            continue 'values;
                        }
                    }
                }
                Some(_) => self.scalar()?,
                None => return Err(self.err("expected a value")),
            };
            // Hand the value to its container; close every container that ends here.
            loop {
                let Some(top) = stack.last_mut() else {
                    return Ok(value);
                };
                match top {
                    Open::Array(items) => items.push(value),
                    Open::Object(map, key) => {
                        // The last of duplicate keys wins, as in JavaScript and Python.
                        map.insert(std::mem::take(key), value);
                    }
                }
                self.ws();
                match (self.peek(), &mut *top) {
                    (Some(b','), Open::Array(_)) => {
                        self.i += 1;
                        continue 'values;
                    }
                    (Some(b','), Open::Object(_, key)) => {
                        self.i += 1;
                        *key = self.key()?;
                        continue 'values;
                    }
                    (Some(b']'), Open::Array(_)) | (Some(b'}'), Open::Object(..)) => {
                        self.i += 1;
                        value = match stack.pop() {
                            Some(Open::Array(items)) => Value::Array(items),
                            Some(Open::Object(map, _)) => Value::Object(map),
                            None => return Err(self.err("unbalanced brackets")),
                        };
                    }
                    _ => return Err(self.err("expected `,` or the end of the container")),
                }
            }
        }
    }

    /// The rest of a container past the depth limit (its opening bracket read): its
    /// strings and numbers, in order, with the brackets checked.
    fn flatten(&mut self, open: u8, leaves: &mut Vec<Value>) -> Result<(), LenientError> {
        let mut closers = vec![if open == b'[' { b']' } else { b'}' }];
        while let Some(&expected) = closers.last() {
            self.ws();
            match self.peek() {
                Some(b'[') => {
                    self.i += 1;
                    closers.push(b']');
                }
                Some(b'{') => {
                    self.i += 1;
                    closers.push(b'}');
                }
                Some(c @ (b']' | b'}')) => {
                    if c != expected {
                        return Err(self.err("mismatched bracket"));
                    }
                    self.i += 1;
                    closers.pop();
                }
                Some(b',' | b':') => self.i += 1,
                Some(_) => {
                    let v = self.scalar()?;
                    if matches!(v, Value::String(_) | Value::Number(_)) {
                        leaves.push(v);
                    }
                }
                None => return Err(self.err("unterminated container")),
            }
        }
        Ok(())
    }

    /// A string, number or literal.
    fn scalar(&mut self) -> Result<Value, LenientError> {
        match self.peek() {
            Some(b'"') => self.string().map(Value::String),
            Some(b't') => self.literal(b"true", Value::Bool(true)),
            Some(b'f') => self.literal(b"false", Value::Bool(false)),
            Some(b'n') => self.literal(b"null", Value::Null),
            Some(b'N') => {
                self.quirks.non_finite_number = true;
                self.literal(b"NaN", Value::Null)
            }
            Some(b'I') => {
                self.quirks.non_finite_number = true;
                self.literal(b"Infinity", huge(false))
            }
            Some(b'-') if self.b[self.i..].starts_with(b"-Infinity") => {
                self.quirks.non_finite_number = true;
                self.literal(b"-Infinity", huge(true))
            }
            Some(b'-' | b'0'..=b'9') => self.number(),
            _ => Err(self.err("expected a value")),
        }
    }

    fn literal(&mut self, word: &[u8], value: Value) -> Result<Value, LenientError> {
        if self.b[self.i..].starts_with(word) {
            self.i += word.len();
            Ok(value)
        } else {
            Err(self.err("unknown literal"))
        }
    }

    fn number(&mut self) -> Result<Value, LenientError> {
        let start = self.i;
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        let digits = |p: &mut Self| {
            let from = p.i;
            while let Some(b'0'..=b'9') = p.peek() {
                p.i += 1;
            }
            p.i > from
        };
        if !digits(self) {
            return Err(self.err("expected digits"));
        }
        let mut integer = true;
        if self.peek() == Some(b'.') {
            self.i += 1;
            integer = false;
            if !digits(self) {
                return Err(self.err("expected digits after `.`"));
            }
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.i += 1;
            integer = false;
            if let Some(b'+' | b'-') = self.peek() {
                self.i += 1;
            }
            if !digits(self) {
                return Err(self.err("expected exponent digits"));
            }
        }
        // ASCII by construction.
        let text = std::str::from_utf8(&self.b[start..self.i]).unwrap_or("0");
        if integer {
            if let Ok(n) = text.parse::<u64>() {
                return Ok(Value::Number(n.into()));
            }
            // serde_json reads `-0` as the float -0.0; so does this.
            if let Ok(n) = text.parse::<i64>()
                && n != 0
            {
                return Ok(Value::Number(n.into()));
            }
        }
        let f: f64 = text.parse().map_err(|_| self.err("bad number"))?;
        Ok(match Number::from_f64(f) {
            Some(n) => Value::Number(n),
            None => {
                self.quirks.non_finite_number = true;
                huge(f < 0.0)
            }
        })
    }

    /// A string (at its opening quote), escapes resolved.
    fn string(&mut self) -> Result<String, LenientError> {
        self.i += 1;
        let mut out: Vec<u8> = Vec::new();
        loop {
            let rest = &self.b[self.i..];
            let run = rest
                .iter()
                .position(|&c| c == b'"' || c == b'\\' || c < 0x20)
                .ok_or_else(|| self.err("unterminated string"))?;
            out.extend_from_slice(&rest[..run]);
            self.i += run;
            match self.b[self.i] {
                b'"' => {
                    self.i += 1;
                    break;
                }
                b'\\' => self.escape(&mut out)?,
                c => {
                    self.quirks.control_character = true;
                    out.push(c);
                    self.i += 1;
                }
            }
        }
        Ok(match String::from_utf8(out) {
            Ok(s) => s,
            Err(e) => {
                self.quirks.invalid_utf8 = true;
                String::from_utf8_lossy(e.as_bytes()).into_owned()
            }
        })
    }

    /// One escape (at its backslash), appended as UTF-8.
    fn escape(&mut self, out: &mut Vec<u8>) -> Result<(), LenientError> {
        let c = *self
            .b
            .get(self.i + 1)
            .ok_or_else(|| self.err("unterminated escape"))?;
        self.i += 2;
        let simple = match c {
            b'"' => b'"',
            b'\\' => b'\\',
            b'/' => b'/',
            b'b' => 0x08,
            b'f' => 0x0c,
            b'n' => b'\n',
            b'r' => b'\r',
            b't' => b'\t',
            b'u' => {
                let unit = self.hex4()?;
                let ch = match unit {
                    0xD800..=0xDBFF => {
                        let low = if self.b[self.i..].starts_with(b"\\u") {
                            let save = self.i;
                            self.i += 2;
                            match self.hex4()? {
                                low @ 0xDC00..=0xDFFF => Some(low),
                                _ => {
                                    // Not its pair: that escape is read on its own.
                                    self.i = save;
                                    None
                                }
                            }
                        } else {
                            None
                        };
                        match low {
                            Some(low) => char::from_u32(
                                0x10000
                                    + ((u32::from(unit) - 0xD800) << 10)
                                    + (u32::from(low) - 0xDC00),
                            ),
                            None => None,
                        }
                    }
                    0xDC00..=0xDFFF => None,
                    u => char::from_u32(u32::from(u)),
                };
                let ch = ch.unwrap_or_else(|| {
                    self.quirks.lone_surrogate = true;
                    char::REPLACEMENT_CHARACTER
                });
                let mut buf = [0u8; 4];
                out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
                return Ok(());
            }
            _ => return Err(self.err("unknown escape")),
        };
        out.push(simple);
        Ok(())
    }

    fn hex4(&mut self) -> Result<u16, LenientError> {
        let digits = self
            .b
            .get(self.i..self.i + 4)
            .ok_or_else(|| self.err("short \\u escape"))?;
        let mut unit = 0u16;
        for &d in digits {
            let v = (d as char)
                .to_digit(16)
                .ok_or_else(|| self.err("bad \\u escape"))?;
            unit = unit * 16 + v as u16;
        }
        self.i += 4;
        Ok(unit)
    }
}

/// What a peer's `±Infinity` is closest to in a [`Value`].
fn huge(negative: bool) -> Value {
    let f = if negative { f64::MIN } else { f64::MAX };
    Number::from_f64(f).map_or(Value::Null, Value::Number)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn lenient(text: &[u8]) -> Lenient {
        parse(text, DEFAULT_MAX_DEPTH).expect("lenient JSON")
    }

    #[test]
    fn the_probes_tricks_are_read_as_the_peers_read_them() {
        let l = lenient(br#"{"a":"AKIAIOSFODNN7EXAMPLE","pad":1e400,"n":-1e999}"#);
        assert_eq!(l.value["a"], "AKIAIOSFODNN7EXAMPLE");
        assert_eq!(l.value["pad"], json!(f64::MAX));
        assert_eq!(l.value["n"], json!(f64::MIN));
        assert!(l.quirks.non_finite_number);

        let l = lenient(br#"{"a":"x\udc00y","b":"\ud83d\ude00","c":"\ud800\u0041"}"#);
        assert_eq!(l.value["a"], "x\u{FFFD}y");
        assert_eq!(l.value["b"], "\u{1F600}");
        assert_eq!(l.value["c"], "\u{FFFD}A");
        assert!(l.quirks.lone_surrogate);

        let l = lenient(b"{\"a\":\"x\xffy\"}");
        assert_eq!(l.value["a"], "x\u{FFFD}y");
        assert!(l.quirks.invalid_utf8);

        let l = lenient(br#"[NaN, Infinity, -Infinity]"#);
        assert_eq!(l.value, json!([null, f64::MAX, f64::MIN]));

        let l = lenient(b"{\"a\":\"tab\there\"}");
        assert!(l.quirks.control_character);
        assert_eq!(l.value["a"], "tab\there");
    }

    #[test]
    fn deep_nesting_is_flattened_and_keeps_every_text() {
        let depth = 100_000;
        let mut line = String::from(r#"{"id":1,"secret":"#);
        line.push_str(&"[".repeat(depth));
        line.push_str(r#"{"k":"AKIAIOSFODNN7EXAMPLE"},2"#);
        line.push_str(&"]".repeat(depth));
        line.push('}');
        let l = parse(line.as_bytes(), 16).expect("deep but balanced");
        assert!(l.quirks.too_deep);
        assert_eq!(l.value["id"], 1);
        let text = l.value.to_string();
        assert!(text.contains("AKIAIOSFODNN7EXAMPLE") && text.contains("\"k\""));
        // Unbalanced or broken deep content is still refused.
        assert!(parse(b"[[[[[[1]]]]]", 2).is_err());
        assert!(parse(b"[[[[[[1}]]]]]", 2).is_err());
    }

    #[test]
    fn what_no_peer_reads_is_refused() {
        for bad in [
            &b""[..],
            b"{",
            b"{\"a\" 1}",
            b"[1,]x",
            b"{\"a\":1} x",
            b"\xff{}",
            b"\"\\x\"",
            b"tru",
            b"01x",
            b"-",
        ] {
            assert!(parse(bad, 8).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            any::<u64>().prop_map(|n| json!(n)),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(|f| json!(f)),
            ".*".prop_map(Value::String),
        ];
        leaf.prop_recursive(6, 64, 8, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
                prop::collection::btree_map(".*", inner, 0..8)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        /// Whatever serde_json reads, this decoder reads the same, with no quirk.
        #[test]
        fn strict_json_decodes_to_the_same_value(v in json_value(), pretty in any::<bool>()) {
            let text = if pretty {
                serde_json::to_vec_pretty(&v).expect("encode")
            } else {
                serde_json::to_vec(&v).expect("encode")
            };
            let strict: Value = serde_json::from_slice(&text).expect("strict");
            let l = parse(&text, DEFAULT_MAX_DEPTH).expect("lenient");
            prop_assert_eq!(l.value, strict);
            prop_assert!(!l.quirks.any());
        }

        /// Any bytes: no panic, and anything serde_json takes decodes the same.
        #[test]
        fn any_bytes_agree_with_serde_json_where_it_reads_them(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
            let lenient = parse(&bytes, DEFAULT_MAX_DEPTH);
            if let Ok(strict) = serde_json::from_slice::<Value>(&bytes) {
                prop_assert_eq!(lenient.expect("lenient reads what strict reads").value, strict);
            }
        }
    }
}
