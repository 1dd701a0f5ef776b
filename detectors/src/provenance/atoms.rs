//! Exact "atoms": short values that identify a destination or a piece of data on their
//! own (email addresses, URLs and hosts, IBANs, long numbers, phone numbers, key-like
//! tokens, file paths). MinHash is weak on strings this short, so they are matched
//! exactly, in a canonical form (lowercase; URLs without scheme, `www.` and trailing
//! slash; numbers as digits only).

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

/// What an atom is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AtomKind {
    /// `name@domain.tld`.
    Email,
    /// A URL or a bare host name with a known top-level domain.
    Url,
    /// Two letters, two check digits and 10–30 letters or digits.
    Iban,
    /// `+` and 8–15 digits.
    Phone,
    /// Nine or more digits (accounts, cards, ids).
    Number,
    /// Letters and digits mixed, 8 or more characters (keys, passport numbers, ids).
    Token,
    /// A file system path or a file name with a known extension.
    Path,
}

impl AtomKind {
    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            AtomKind::Email => "email",
            AtomKind::Url => "url",
            AtomKind::Iban => "iban",
            AtomKind::Phone => "phone",
            AtomKind::Number => "number",
            AtomKind::Token => "token",
            AtomKind::Path => "path",
        }
    }

    /// Atoms that are data in themselves (an account, a key, an id), as opposed to
    /// addresses (where data goes): one of them leaving is a leak.
    pub fn is_data(self) -> bool {
        matches!(self, AtomKind::Iban | AtomKind::Number | AtomKind::Token)
    }
}

/// One atom found in a text.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Atom {
    /// What it is.
    pub kind: AtomKind,
    /// Canonical form.
    pub value: String,
}

const TLDS: &[&str] = &[
    "com", "org", "net", "io", "ai", "co", "dev", "app", "info", "biz", "xyz", "me", "us", "uk",
    "de", "fr", "eu", "ru", "cn", "jp", "in", "br", "nl", "ch", "it", "es", "ca", "au", "gov",
    "edu", "site", "online", "top", "link", "cloud",
];

const FILE_EXTENSIONS: &[&str] = &[
    "txt", "md", "pdf", "doc", "docx", "xls", "xlsx", "csv", "ppt", "pptx", "json", "yaml", "yml",
    "xml", "html", "zip", "tar", "gz", "png", "jpg", "jpeg", "gif", "py", "js", "ts", "rs", "sh",
    "env", "pem", "key", "log", "sql", "db", "ini", "toml", "cfg", "conf",
];

#[inline]
fn is_token_char(c: char) -> bool {
    if c.is_ascii() {
        return c.is_ascii_alphanumeric()
            || matches!(
                c,
                '@' | '.' | '/' | ':' | '-' | '_' | '+' | '%' | '~' | '#' | '?' | '=' | '&' | '\\'
            );
    }
    c.is_alphanumeric()
        || matches!(
            c,
            '@' | '.' | '/' | ':' | '-' | '_' | '+' | '%' | '~' | '#' | '?' | '=' | '&' | '\\'
        )
}

/// Every atom in `text`, deduplicated, in order of first appearance.
pub fn extract(text: &str, out: &mut Vec<Atom>) {
    let start = out.len();
    for_each_atom(text, |atom, _| push(out, start, atom));
}

/// Every atom in `text` with where it stood: `true` when in prose (a line of words an
/// outsider could have written), `false` when it is the whole value of a line or field
/// (`sender: a@b.c`, `- a@b.c`, a JSON string holding just the address): a record a
/// system kept rather than text someone wrote. An atom seen both ways counts as prose.
pub fn extract_placed(text: &str, out: &mut Vec<(Atom, bool)>) {
    let start = out.len();
    for_each_atom(text, |atom, prose| {
        match out[start..].iter_mut().find(|(a, _)| *a == atom) {
            Some(found) => found.1 |= prose,
            None => out.push((atom, prose)),
        }
    });
}

/// The destinations a call's arguments name, as a block scoped to a destination sees
/// them, at the engine and at the sink alike: every atom in every argument, decoded as
/// the provenance detector decodes them (percent escapes, entities, base64, hex, JSON
/// inside strings), in canonical form.
pub fn destinations(arguments: &serde_json::Map<String, serde_json::Value>) -> BTreeSet<String> {
    let mut leaves = Vec::new();
    super::text::leaves_of_map("arguments", arguments, DESTINATION_SCAN_BYTES, &mut leaves);
    let mut named = BTreeSet::new();
    for leaf in &leaves {
        for_each_atom(&leaf.text, |atom, _| {
            named.insert(atom.value);
        });
    }
    named
}

/// How much of a call's arguments [`destinations`] reads (the provenance detector's
/// default scan).
const DESTINATION_SCAN_BYTES: usize = 256 * 1024;

/// Whether destinations `named` (see [`destinations`]) include `destination`: the same
/// address or account, or for a URL any URL of its host (a path or query changed is
/// the same place).
pub fn names_destination(named: &BTreeSet<String>, destination: &str) -> bool {
    if named.contains(destination) {
        return true;
    }
    let Some(host) = url_host(destination) else {
        return false;
    };
    named.iter().any(|n| url_host(n) == Some(host))
}

/// The host of a canonical URL atom (no scheme, no `www.`): what comes before its
/// path, query or port. `None` for addresses and numbers.
fn url_host(canonical: &str) -> Option<&str> {
    if canonical.contains('@') {
        return None;
    }
    let host = canonical
        .split(['/', '?', '#', ':'])
        .next()
        .unwrap_or(canonical);
    (host.contains('.') && host.chars().any(|c| c.is_ascii_alphabetic())).then_some(host)
}

fn for_each_atom(text: &str, mut found: impl FnMut(Atom, bool)) {
    for line in text.lines() {
        if !may_hold_atom(line.as_bytes()) {
            continue;
        }
        let prose = !is_field_line(line);
        for raw in line.split(|c: char| !is_token_char(c)) {
            // Only tokens with a digit or an address character can be atoms: skipping
            // plain words here is most of the speed.
            if !raw
                .bytes()
                .any(|b| b.is_ascii_digit() || matches!(b, b'@' | b'.' | b'/' | b'\\' | b':'))
            {
                continue;
            }
            let token = raw
                .trim_start_matches(|c: char| {
                    matches!(c, '.' | ':' | '?' | '=' | '&' | '#' | '-' | '_')
                })
                .trim_end_matches(|c: char| {
                    matches!(
                        c,
                        '.' | ':' | '?' | '=' | '&' | '#' | '-' | '_' | '/' | '\\'
                    )
                });
            if token.len() < 6 {
                continue;
            }
            if let Some(a) = classify(token) {
                found(a, prose);
            }
        }
        // Phone numbers and IBANs are often written in groups: "+1 555 010 9999", "DE89 3704 0044".
        if line.bytes().filter(u8::is_ascii_digit).count() >= 8 {
            for grouped in grouped_runs(line) {
                if let Some(a) = phone_or_number(&grouped).or_else(|| iban(&grouped)) {
                    found(a, prose);
                }
            }
        }
    }
}

/// Whether a line has anything an atom needs: a digit, an address character, or a dot
/// followed by a letter (a host or a file name). Most prose lines have none.
fn may_hold_atom(b: &[u8]) -> bool {
    b.iter().enumerate().any(|(i, &c)| {
        c.is_ascii_digit()
            || matches!(c, b'@' | b'/' | b'\\')
            || (c == b'.' && b.get(i + 1).is_some_and(u8::is_ascii_alphabetic))
    })
}

/// A line that holds one value: optionally a list dash, optionally a short `key:`, then
/// a single token (quotes allowed).
fn is_field_line(line: &str) -> bool {
    let mut t = line.trim();
    while let Some(rest) = t.strip_prefix("- ") {
        t = rest.trim_start();
    }
    if let Some((key, value)) = t.split_once(": ")
        && !key.is_empty()
        && key.len() <= 40
        && key
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | ' '))
    {
        t = value.trim();
    }
    let t = t.trim_matches(|c| matches!(c, '"' | '\'' | ',' | '<' | '>'));
    !t.is_empty() && !t.contains(char::is_whitespace)
}

fn push(out: &mut Vec<Atom>, start: usize, atom: Atom) {
    if !out[start..].contains(&atom) {
        out.push(atom);
    }
}

/// A value a sink redacted in `hash` mode (`[iban:hmac-sha256:1f2e…]`, brackets
/// already split off): still one value of its kind, equal wherever the original was,
/// so flows and destinations are followed through redaction.
fn hashed(token: &str) -> Option<Atom> {
    let (kind, rest) = token.split_once(':')?;
    let (scheme, digest) = rest.split_once(':')?;
    if !matches!(scheme, "sha256" | "hmac-sha256")
        || digest.len() < 16
        || !digest.bytes().all(|c| c.is_ascii_hexdigit())
    {
        return None;
    }
    let kind = match kind {
        "email" => AtomKind::Email,
        "phone" => AtomKind::Phone,
        "iban" => AtomKind::Iban,
        "card_number" => AtomKind::Number,
        "aws_access_key"
        | "google_api_key"
        | "github_token"
        | "slack_token"
        | "api_key"
        | "private_key"
        | "jwt"
        | "bearer_token"
        | "credential_assignment" => AtomKind::Token,
        _ => return None,
    };
    Some(Atom {
        kind,
        value: token.to_ascii_lowercase(),
    })
}

/// The canonical atom a whole value is, if it is one.
pub fn classify(token: &str) -> Option<Atom> {
    if let Some(a) = hashed(token) {
        return Some(a);
    }
    let b = token.as_bytes();
    let digits = b.iter().filter(|c| c.is_ascii_digit()).count();
    let addressy = b
        .iter()
        .any(|c| matches!(c, b'@' | b'.' | b'/' | b'\\' | b':' | b'+'));
    // Without a digit or an address character a token can only be a key-like token,
    // which needs digits too.
    if digits == 0 && !addressy {
        return None;
    }
    // Most tokens are lowercase already (dates, ids, addresses): no copy for them.
    let lower: std::borrow::Cow<'_, str> =
        if token.bytes().any(|c| c.is_ascii_uppercase()) || !token.is_ascii() {
            std::borrow::Cow::Owned(token.to_lowercase())
        } else {
            std::borrow::Cow::Borrowed(token)
        };
    let atom = |kind, value: String| Some(Atom { kind, value });
    if let Some(rest) = lower
        .split_once("://")
        .map(|(_, r)| r)
        .or_else(|| lower.starts_with("www.").then_some(&*lower))
    {
        let rest = rest
            .strip_prefix("www.")
            .unwrap_or(rest)
            .trim_end_matches('/');
        let host = rest.split(['/', '?', '#']).next().unwrap_or("");
        return (host.contains('.') && rest.len() >= 4).then(|| Atom {
            kind: AtomKind::Url,
            value: rest.to_string(),
        });
    }
    let mail = lower.strip_prefix("mailto:").unwrap_or(&lower);
    if let Some((local, domain)) = mail.split_once('@') {
        if !local.is_empty()
            && domain.contains('.')
            && !domain.contains('@')
            && !domain.ends_with('.')
        {
            return atom(AtomKind::Email, mail.to_string());
        }
        return None;
    }
    if let Some(a) = iban(token) {
        return Some(a);
    }
    if let Some(a) = phone_or_number(token) {
        return Some(a);
    }
    if lower.starts_with('/')
        || lower.starts_with("~/")
        || lower.starts_with("./")
        || lower.get(1..3) == Some(":\\")
    {
        let segments = lower.split(['/', '\\']).filter(|s| !s.is_empty()).count();
        return (segments >= 2).then(|| Atom {
            kind: AtomKind::Path,
            value: lower.to_string(),
        });
    }
    if let Some((stem, ext)) = lower.rsplit_once('.')
        && !stem.is_empty()
        && stem.len() >= 2
        && ext.chars().all(|c| c.is_ascii_alphanumeric())
    {
        if TLDS.contains(&ext) && !stem.contains(['/', '\\', '@']) {
            let host = stem.strip_prefix("www.").unwrap_or(stem);
            return atom(AtomKind::Url, format!("{host}.{ext}"));
        }
        if FILE_EXTENSIONS.contains(&ext) {
            return atom(AtomKind::Path, lower.to_string());
        }
    }
    let letters = token.chars().filter(|c| c.is_alphabetic()).count();
    let plain = token
        .chars()
        .all(|c| c.is_alphanumeric() || matches!(c, '-' | '_'));
    let key_like = (token.len() >= 8 && letters >= 2 && digits >= 3)
        || (token.len() >= 16 && letters >= 4 && digits >= 1);
    if plain && key_like && !looks_like_date(token) {
        return atom(AtomKind::Token, lower.into_owned());
    }
    None
}

fn looks_like_date(token: &str) -> bool {
    token.bytes().filter(u8::is_ascii_digit).count() == 8
        && token.bytes().filter(|c| *c == b'-').count() == 2
}

fn iban(token: &str) -> Option<Atom> {
    let b = token.as_bytes();
    if b.len() < 14 || !b[..2].iter().all(u8::is_ascii_alphabetic) {
        return None;
    }
    let compact: String = token.chars().filter(|c| *c != ' ').collect();
    let b = compact.as_bytes();
    let ok = (14..=34).contains(&b.len())
        && b[..2].iter().all(u8::is_ascii_alphabetic)
        && b[2..4].iter().all(u8::is_ascii_digit)
        && b[4..].iter().all(u8::is_ascii_alphanumeric)
        && b[4..].iter().filter(|c| c.is_ascii_digit()).count() >= 6;
    ok.then(|| Atom {
        kind: AtomKind::Iban,
        value: compact.to_lowercase(),
    })
}

fn phone_or_number(token: &str) -> Option<Atom> {
    let t = token.trim();
    let plus = t.starts_with('+');
    let body = t.trim_start_matches('+');
    if body.len() < 8
        || body.is_empty()
        || !body
            .chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '-' | ' ' | '.' | '(' | ')'))
    {
        return None;
    }
    let digits: String = body.chars().filter(char::is_ascii_digit).collect();
    if plus && (8..=15).contains(&digits.len()) {
        return Some(Atom {
            kind: AtomKind::Phone,
            value: digits,
        });
    }
    (digits.len() >= 9 && !plus).then_some(Atom {
        kind: AtomKind::Number,
        value: digits,
    })
}

/// Runs of digit or letter groups separated by single spaces or dashes, joined, for
/// grouped phone numbers and IBANs. Only runs of three or more groups are returned.
fn grouped_runs(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut groups: Vec<&str> = Vec::new();
    let flush = |groups: &mut Vec<&str>, out: &mut Vec<String>| {
        if groups.len() >= 3 {
            out.push(groups.join(" "));
        }
        groups.clear();
    };
    for word in text.split(' ') {
        let w = word.trim_end_matches([',', '.', ';']);
        let group = !w.is_empty()
            && w.len() <= 9
            && w.trim_start_matches('+')
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '(' | ')' | '-'))
            && w.chars().any(|c| c.is_ascii_digit());
        if group {
            groups.push(w);
        } else {
            flush(&mut groups, &mut out);
        }
    }
    flush(&mut groups, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn atoms(text: &str) -> Vec<(AtomKind, String)> {
        let mut out = Vec::new();
        extract(text, &mut out);
        out.into_iter().map(|a| (a.kind, a.value)).collect()
    }

    #[test]
    fn values_a_sink_hashed_are_atoms_of_their_kind() {
        let found = atoms(
            "Pay [iban:hmac-sha256:0a1b2c3d4e5f6a7b] now, cc [email:sha256:00112233445566ff].",
        );
        assert_eq!(
            found,
            [
                (
                    AtomKind::Iban,
                    "iban:hmac-sha256:0a1b2c3d4e5f6a7b".to_string()
                ),
                (AtomKind::Email, "email:sha256:00112233445566ff".to_string()),
            ]
        );
        assert_eq!(classify("iban:md5:0a1b2c3d4e5f6a7b"), None);
        assert_eq!(classify("iban:sha256:xyz"), None);
        assert_eq!(
            classify("[REDACTED:iban]"),
            None,
            "a dropped value is no value"
        );
    }

    #[test]
    fn each_kind_is_found_in_canonical_form() {
        let found = atoms(
            "Mail Mark.Black-2134@Gmail.com or see https://www.secure-systems-252.com/login/ \
             and pay US133000000121212121212; call +1 (555) 010-9999, card 4111111111111111, \
             key AKIAIOSFODNN7EXAMPLE, file /home/emma/notes/plan.txt and feedback.xlsx",
        );
        let has = |k: AtomKind, v: &str| found.iter().any(|(kk, vv)| *kk == k && vv == v);
        assert!(
            has(AtomKind::Email, "mark.black-2134@gmail.com"),
            "{found:?}"
        );
        assert!(
            has(AtomKind::Url, "secure-systems-252.com/login"),
            "{found:?}"
        );
        assert!(has(AtomKind::Iban, "us133000000121212121212"), "{found:?}");
        assert!(has(AtomKind::Phone, "15550109999"), "{found:?}");
        assert!(has(AtomKind::Number, "4111111111111111"), "{found:?}");
        assert!(has(AtomKind::Token, "akiaiosfodnn7example"), "{found:?}");
        assert!(
            has(AtomKind::Path, "/home/emma/notes/plan.txt"),
            "{found:?}"
        );
        assert!(has(AtomKind::Path, "feedback.xlsx"), "{found:?}");
    }

    #[test]
    fn plain_words_dates_and_amounts_are_not_atoms() {
        assert!(
            atoms("Please send 100 dollars on 2024-05-12 to the usual place, thanks.").is_empty()
        );
        assert!(atoms("internationalization is a long word").is_empty());
    }

    #[test]
    fn a_bare_host_and_a_url_to_it_share_a_form() {
        assert_eq!(
            classify("www.example.com"),
            classify("https://example.com/")
        );
    }

    #[test]
    fn atoms_in_records_are_told_from_atoms_in_prose() {
        let mut out = Vec::new();
        extract_placed(
            "- sender: mark@corp.com\n  participants:\n  - 'ann@corp.com'\n  body: please wire it to US133000000121212121212 today\n",
            &mut out,
        );
        let prose = |v: &str| out.iter().find(|(a, _)| a.value == v).map(|(_, p)| *p);
        assert_eq!(prose("mark@corp.com"), Some(false));
        assert_eq!(prose("ann@corp.com"), Some(false));
        assert_eq!(prose("us133000000121212121212"), Some(true));
    }

    #[test]
    fn grouped_numbers_are_joined() {
        let found = atoms("IBAN DE89 3704 0044 0532 0130 00 please");
        assert!(
            found.contains(&(AtomKind::Iban, "de89370400440532013000".into())),
            "{found:?}"
        );
    }

    #[test]
    fn issue_22_a_destination_is_recognized_in_any_argument_however_encoded() {
        let call = serde_json::json!({
            "channel": "general",
            "body": "see https://WWW.Evil.example.com/drop/ for details",
            "cc": ["Boss@Corp.com"],
            "account": 4_111_111_111_111_111u64,
            "encoded": "attacker%40evil.example.org",
            "note": "lunch at noon?",
        });
        let named = destinations(call.as_object().unwrap());
        for d in [
            "evil.example.com/drop",
            "evil.example.com/other?x=1",
            "boss@corp.com",
            "4111111111111111",
            "attacker@evil.example.org",
        ] {
            assert!(names_destination(&named, d), "{d} in {named:?}");
        }
        for d in [
            "attacker@evil.example.com",
            "example.com",
            "4111111111111112",
        ] {
            assert!(!names_destination(&named, d), "{d} in {named:?}");
        }
    }
}
