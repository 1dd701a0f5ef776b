//! Turning tool data into comparable text: field-level splitting of JSON, decoding of
//! the layers an agent (or an attacker) wraps text in, and normalization so that
//! re-wrapped, re-cased or re-punctuated copies compare equal.
//!
//! Normal form: NFKC, lowercase, invisible format characters removed, and every run of
//! characters that are not letters or digits replaced by one space. Punctuation and line
//! breaks carry no provenance, and YAML/JSON re-quoting changes them freely.

use std::borrow::Cow;

use base64::Engine as _;
use serde_json::{Map, Value};
use unicode_normalization::{IsNormalized, UnicodeNormalization, is_nfkc_quick};

/// Most nesting of decoding layers followed (base64 inside a JSON string inside a URL…).
const MAX_DECODE_DEPTH: usize = 3;
/// Shortest run worth trying to decode as base64 or hex: shorter runs are words or ids.
const MIN_ENCODED_RUN: usize = 16;

/// One string value of an event with where it sits, e.g. `arguments.body` or
/// `arguments.body[base64]` for a layer decoded out of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leaf<'a> {
    /// Dotted path of the field, with decoding layers in brackets.
    pub path: String,
    /// The last key on the path (`body`, `recipients`), for destination matching.
    pub key: Cow<'a, str>,
    /// The value, decoded where a layer was found.
    pub text: Cow<'a, str>,
    /// The leaves after it say the same thing better: it is a JSON document they split,
    /// or one encoded token (no spaces of its own) they decode. Its own text would only
    /// dilute a comparison.
    pub redundant: bool,
}

impl Leaf<'_> {
    /// The same leaf, owning its text.
    pub fn into_owned(self) -> Leaf<'static> {
        Leaf {
            path: self.path,
            key: Cow::Owned(self.key.into_owned()),
            text: Cow::Owned(self.text.into_owned()),
            redundant: self.redundant,
        }
    }
}

/// Every string leaf of `map` under `prefix`, each followed by the layers decoded out
/// of it. A string that is itself a JSON document is split further. Values beyond
/// `max_bytes` in total are not collected.
pub fn leaves_of_map<'a>(
    prefix: &str,
    map: &'a Map<String, Value>,
    max_bytes: usize,
    out: &mut Vec<Leaf<'a>>,
) {
    let mut budget = max_bytes;
    for (k, v) in map {
        walk(&join(prefix, k), Cow::Borrowed(k), v, &mut budget, 0, out);
    }
}

/// The leaves of one value (a result's content block, a user's message).
pub fn leaves_of_value<'a>(
    path: &str,
    key: &'a str,
    value: &'a Value,
    max_bytes: usize,
    out: &mut Vec<Leaf<'a>>,
) {
    let mut budget = max_bytes;
    walk(path, Cow::Borrowed(key), value, &mut budget, 0, out);
}

/// The leaves of a plain text: the text and the layers decoded out of it.
pub fn leaves_of_text<'a>(
    path: &str,
    key: &'a str,
    text: &'a str,
    max_bytes: usize,
    out: &mut Vec<Leaf<'a>>,
) {
    let mut budget = max_bytes;
    push_text(
        path,
        Cow::Borrowed(key),
        Cow::Borrowed(text),
        &mut budget,
        0,
        out,
    );
}

fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_string()
    } else {
        format!("{prefix}.{key}")
    }
}

fn walk<'a>(
    path: &str,
    key: Cow<'a, str>,
    value: &'a Value,
    budget: &mut usize,
    depth: usize,
    out: &mut Vec<Leaf<'a>>,
) {
    if *budget == 0 {
        return;
    }
    match value {
        Value::String(s) => push_text(path, key, Cow::Borrowed(s), budget, depth, out),
        Value::Number(n) => {
            // Account numbers and ids travel as JSON numbers too; short ones carry nothing.
            let s = n.to_string();
            if s.len() >= 6 {
                push_text(path, key, Cow::Owned(s), budget, depth, out);
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                walk(
                    &format!("{path}[{i}]"),
                    key.clone(),
                    item,
                    budget,
                    depth,
                    out,
                );
            }
        }
        Value::Object(map) => {
            for (k, v) in map {
                walk(&join(path, k), Cow::Borrowed(k), v, budget, depth, out);
            }
        }
        Value::Bool(_) | Value::Null => {}
    }
}

fn push_text<'a>(
    path: &str,
    key: Cow<'a, str>,
    text: Cow<'a, str>,
    budget: &mut usize,
    depth: usize,
    out: &mut Vec<Leaf<'a>>,
) {
    if text.trim().is_empty() || *budget == 0 {
        return;
    }
    let text = match text {
        Cow::Borrowed(t) => unescape_json(clip(t, *budget)),
        Cow::Owned(t) => Cow::Owned(unescape_json(clip(&t, *budget)).into_owned()),
    };
    *budget -= text.len();
    let mut decoded = Vec::new();
    let mut inner_json = None;
    if depth < MAX_DECODE_DEPTH {
        let trimmed = text.trim();
        if (trimmed.starts_with('{') || trimmed.starts_with('['))
            && let Ok(inner) = serde_json::from_str::<Value>(trimmed)
            && (inner.is_object() || inner.is_array())
        {
            inner_json = Some(inner);
        } else {
            decoded = decode_layers(&text);
        }
    }
    // An encoded value has no spaces of its own (they are `%20`, `&#32;`, or inside
    // base64): its decoding replaces it.
    let redundant =
        inner_json.is_some() || (!decoded.is_empty() && !text.trim().contains(char::is_whitespace));
    out.push(Leaf {
        path: path.to_string(),
        key: key.clone(),
        text,
        redundant,
    });
    if let Some(inner) = inner_json {
        // The parsed document lives only here: its leaves own their text.
        let mut inner_leaves = Vec::new();
        walk(
            &format!("{path}[json]"),
            key,
            &inner,
            budget,
            depth + 1,
            &mut inner_leaves,
        );
        out.extend(inner_leaves.into_iter().map(|leaf| leaf.into_owned()));
        return;
    }
    for (layer, d) in decoded {
        push_text(
            &format!("{path}[{layer}]"),
            key.clone(),
            Cow::Owned(d),
            budget,
            depth + 1,
            out,
        );
    }
}

/// The longest prefix of `s` of at most `max` bytes that ends on a char boundary.
pub fn clip(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// The texts hidden in `text` one layer down, named by layer: URL (percent) encoding,
/// HTML entities, and base64 or hex runs (the whole value or runs inside it). Only
/// decodings that yield mostly printable UTF-8 count. JSON string escapes are not a
/// layer: they are undone in place ([`unescape_json`]), since escaped text is the same
/// text and indexing it twice would only cost.
pub fn decode_layers(text: &str) -> Vec<(&'static str, String)> {
    let mut found = Vec::new();
    let hints = layer_hints(text.as_bytes());
    if hints.percent
        && let Some(s) = percent_decode(text)
        && s != text
    {
        found.push(("url", s));
    }
    if hints.entity
        && let Some(s) = html_unescape(text)
        && s != text
    {
        found.push(("html", s));
    }
    if hints.encoded_run {
        let mut b64 = String::new();
        let mut hex = String::new();
        for run in encoded_runs(text) {
            if let Some(s) = hex_decode(run) {
                push_run(&mut hex, &s);
            } else if let Some(s) = base64_decode(run) {
                push_run(&mut b64, &s);
            }
        }
        if !b64.is_empty() {
            found.push(("base64", b64));
        }
        if !hex.is_empty() {
            found.push(("hex", hex));
        }
    }
    found
}

/// `text` with JSON (and YAML double-quoted) string escapes undone, borrowed when it
/// has none.
pub fn unescape_json(text: &str) -> Cow<'_, str> {
    if has_json_escape(text)
        && let Some(s) = json_unescape(text)
    {
        Cow::Owned(s)
    } else {
        Cow::Borrowed(text)
    }
}

struct LayerHints {
    percent: bool,
    entity: bool,
    encoded_run: bool,
}

/// One pass over the bytes for signs of each layer, so that most texts (which have
/// none) cost a single scan.
fn layer_hints(b: &[u8]) -> LayerHints {
    let next_is = |i: usize, f: fn(&u8) -> bool| b.get(i).is_some_and(f);
    LayerHints {
        percent: memchr_iter(b'%', b).any(|i| {
            next_is(i + 1, u8::is_ascii_hexdigit) && next_is(i + 2, u8::is_ascii_hexdigit)
        }),
        entity: memchr_iter(b'&', b)
            .any(|i| next_is(i + 1, |n| *n == b'#' || n.is_ascii_alphabetic())),
        // Encoded text has no spaces: only a long unbroken token can hold it.
        encoded_run: b
            .split(u8::is_ascii_whitespace)
            .any(|t| t.len() >= MIN_ENCODED_RUN),
    }
}

fn has_json_escape(text: &str) -> bool {
    let b = text.as_bytes();
    memchr_iter(b'\\', b)
        .any(|i| matches!(b.get(i + 1), Some(b'"' | b'n' | b't' | b'r' | b'u' | b'/')))
}

fn memchr_iter(needle: u8, hay: &[u8]) -> impl Iterator<Item = usize> + '_ {
    hay.iter()
        .enumerate()
        .filter(move |(_, b)| **b == needle)
        .map(|(i, _)| i)
}

fn push_run(acc: &mut String, s: &str) {
    if !acc.is_empty() {
        acc.push(' ');
    }
    acc.push_str(s);
}

/// Maximal runs of base64/hex alphabet characters long enough to hide text.
fn encoded_runs(text: &str) -> impl Iterator<Item = &str> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '+' | '/' | '=' | '-' | '_')))
        .filter(|run| run.len() >= MIN_ENCODED_RUN)
}

fn printable(bytes: &[u8]) -> Option<String> {
    let s = std::str::from_utf8(bytes).ok()?;
    let total = s.chars().count();
    let good = s
        .chars()
        .filter(|c| !c.is_control() || matches!(c, '\n' | '\r' | '\t'))
        .count();
    // Random bytes are rarely valid UTF-8, and almost never mostly printable.
    (total > 0 && good * 100 >= total * 95).then(|| s.to_string())
}

fn base64_decode(run: &str) -> Option<String> {
    let body = run.trim_end_matches('=');
    // A base64 text of words has both cases; an identifier or a word usually does not.
    if !(body.bytes().any(|b| b.is_ascii_lowercase())
        && body.bytes().any(|b| b.is_ascii_uppercase()))
    {
        return None;
    }
    let url_safe = body.contains(['-', '_']);
    let engine = if url_safe {
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
    } else {
        &base64::engine::general_purpose::STANDARD_NO_PAD
    };
    let bytes = engine.decode(body).ok()?;
    printable(&bytes)
}

fn hex_decode(run: &str) -> Option<String> {
    if !run.len().is_multiple_of(2) || !run.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let bytes: Vec<u8> = run
        .as_bytes()
        .chunks(2)
        .map(|p| (hex_val(p[0]) << 4) | hex_val(p[1]))
        .collect();
    printable(&bytes)
}

fn hex_val(b: u8) -> u8 {
    match b {
        b'0'..=b'9' => b - b'0',
        b'a'..=b'f' => b - b'a' + 10,
        b'A'..=b'F' => b - b'A' + 10,
        _ => 0,
    }
}

/// Undoes JSON (and YAML double-quoted) string escapes, leaving unknown ones as they are.
fn json_unescape(text: &str) -> Option<String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    let mut changed = false;
    while let Some(at) = rest.find('\\') {
        out.push_str(&rest[..at]);
        let tail = &rest[at + 1..];
        let mut chars = tail.chars();
        match chars.next() {
            Some('n' | 'r' | 't') => {
                out.push(' ');
                rest = &tail[1..];
                changed = true;
            }
            Some(c @ ('"' | '\\' | '/' | '\'')) => {
                out.push(c);
                rest = &tail[1..];
                changed = true;
            }
            Some('u') => {
                let hex = tail.get(1..5).unwrap_or("");
                match u32::from_str_radix(hex, 16).ok().and_then(char::from_u32) {
                    Some(ch) => {
                        out.push(ch);
                        rest = &tail[5..];
                    }
                    None => {
                        out.push(' ');
                        rest = &tail[1..];
                    }
                }
                changed = true;
            }
            _ => {
                out.push('\\');
                rest = tail;
            }
        }
    }
    out.push_str(rest);
    changed.then_some(out)
}

fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    let mut changed = false;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len()
                && bytes[i + 1].is_ascii_hexdigit()
                && bytes[i + 2].is_ascii_hexdigit() =>
            {
                out.push((hex_val(bytes[i + 1]) << 4) | hex_val(bytes[i + 2]));
                i += 3;
                changed = true;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    if !changed {
        return None;
    }
    printable(&out)
}

fn html_unescape(text: &str) -> Option<String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    let mut changed = false;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        let tail = &rest[amp..];
        let entity_end = clip(tail, 12).find(';');
        let decoded = entity_end.and_then(|end| html_entity(&tail[1..end]).map(|c| (c, end)));
        match decoded {
            Some((c, end)) => {
                out.push(c);
                rest = &tail[end + 1..];
                changed = true;
            }
            None => {
                out.push('&');
                rest = &tail[1..];
            }
        }
    }
    out.push_str(rest);
    changed.then_some(out)
}

fn html_entity(name: &str) -> Option<char> {
    if let Some(num) = name.strip_prefix('#') {
        let code = match num.strip_prefix(['x', 'X']) {
            Some(hex) => u32::from_str_radix(hex, 16).ok()?,
            None => num.parse().ok()?,
        };
        return char::from_u32(code);
    }
    Some(match name {
        "amp" => '&',
        "lt" => '<',
        "gt" => '>',
        "quot" => '"',
        "apos" => '\'',
        "nbsp" => ' ',
        _ => return None,
    })
}

/// Characters that render as nothing and are used to hide or split text.
fn invisible(c: char) -> bool {
    matches!(c,
        '\u{00AD}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2064}'
        | '\u{2066}'..='\u{2069}' | '\u{FEFF}' | '\u{E0000}'..='\u{E007F}')
}

/// Appends the normal form of `text` to `out` (see the module doc), with a separating
/// space if `out` is not empty. ASCII text skips Unicode normalization.
pub fn normalize_into(text: &str, out: &mut Vec<u8>) {
    let mut space = !out.is_empty() && out.last() != Some(&b' ');
    let push = |out: &mut Vec<u8>, c: char, space: &mut bool| {
        if c.is_alphanumeric() {
            if *space {
                out.push(b' ');
                *space = false;
            }
            if c.is_ascii() {
                out.push(c.to_ascii_lowercase() as u8);
            } else {
                for l in c.to_lowercase() {
                    let mut buf = [0u8; 4];
                    out.extend_from_slice(l.encode_utf8(&mut buf).as_bytes());
                }
            }
        } else if !invisible(c) && !out.is_empty() {
            *space = true;
        }
    };
    if text.is_ascii() {
        for &b in text.as_bytes() {
            if b.is_ascii_alphanumeric() {
                if space {
                    out.push(b' ');
                    space = false;
                }
                out.push(b.to_ascii_lowercase());
            } else if !out.is_empty() {
                space = true;
            }
        }
    } else if is_nfkc_quick(text.chars()) == IsNormalized::Yes {
        for c in text.chars() {
            push(out, c, &mut space);
        }
    } else {
        for c in text.nfkc() {
            push(out, c, &mut space);
        }
    }
}

/// The normal form of `text` as a string.
pub fn normalize(text: &str) -> String {
    let mut out = Vec::with_capacity(text.len());
    normalize_into(text, &mut out);
    // Only whole UTF-8 sequences are ever pushed.
    String::from_utf8(out).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::STANDARD;

    #[test]
    fn normal_form_ignores_case_wrapping_punctuation_and_hidden_characters() {
        assert_eq!(normalize("Hello,\n  World!"), "hello world");
        assert_eq!(normalize("  HELLO   world  "), "hello world");
        assert_eq!(normalize("pass\u{200B}word"), "password");
        assert_eq!(normalize("ＦＵＬＬ width"), "full width");
        assert_eq!(normalize("Straße"), "straße");
    }

    #[test]
    fn each_layer_is_decoded() {
        let secret = "the quarterly revenue is 4.2 million";
        let layers = |s: &str| decode_layers(s).into_iter().collect::<Vec<_>>();
        let b64 = STANDARD.encode(secret);
        assert!(
            layers(&b64)
                .iter()
                .any(|(l, s)| *l == "base64" && s == secret)
        );
        let hex: String = secret.bytes().map(|b| format!("{b:02x}")).collect();
        assert!(layers(&hex).iter().any(|(l, s)| *l == "hex" && s == secret));
        assert!(
            layers("the%20quarterly%20revenue%20is%204.2%20million")
                .iter()
                .any(|(l, s)| *l == "url" && s == secret)
        );
        assert!(
            layers("the &quot;quarterly&quot; revenue &#x69;s")
                .iter()
                .any(|(l, s)| *l == "html" && s == "the \"quarterly\" revenue is")
        );
        assert_eq!(
            unescape_json(r#"the \"quarterly\"\nrevenue \u0069s"#),
            "the \"quarterly\" revenue is"
        );
    }

    #[test]
    fn an_ampersand_before_multibyte_text_is_not_cut_mid_character() {
        // Found by the provenance_text fuzz target.
        assert!(
            decode_layers("&&x&,x&&88\u{40c7}&';")
                .iter()
                .all(|(_, s)| !s.is_empty())
        );
        assert_eq!(
            html_unescape("&amp;\u{40c7}&lt;"),
            Some("&\u{40c7}<".to_string())
        );
    }

    #[test]
    fn words_and_ids_are_not_mistaken_for_encodings() {
        assert!(decode_layers("internationalization").is_empty());
        assert!(decode_layers("US133000000121212121212").is_empty());
        assert!(
            decode_layers("deadbeefdeadbeef").is_empty(),
            "hex of non-text"
        );
        assert!(decode_layers("plain words & more").is_empty());
    }

    #[test]
    fn nested_layers_and_json_documents_are_split_into_fields() {
        let inner = STANDARD.encode("confidential merger plan for Q3");
        let doc = serde_json::json!({"payload": format!("{{\"data\": \"{inner}\"}}"), "n": 12});
        let mut out = Vec::new();
        leaves_of_map("arguments", doc.as_object().unwrap(), 1 << 20, &mut out);
        let paths: Vec<&str> = out.iter().map(|l| l.path.as_str()).collect();
        assert!(
            paths.contains(&"arguments.payload[json].data[base64]"),
            "{paths:?}"
        );
        let decoded = out.iter().find(|l| l.path.ends_with("[base64]")).unwrap();
        assert_eq!(decoded.text, "confidential merger plan for Q3");
        assert_eq!(decoded.key, "data");
    }

    #[test]
    fn the_byte_budget_bounds_what_is_collected() {
        let doc = serde_json::json!({"a": "x".repeat(100), "b": "y".repeat(100)});
        let mut out = Vec::new();
        leaves_of_map("", doc.as_object().unwrap(), 150, &mut out);
        let total: usize = out.iter().map(|l| l.text.len()).sum();
        assert_eq!(total, 150);
    }
}
