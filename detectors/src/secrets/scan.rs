//! Finds secrets and personal data in text in one pass, without a regex engine.
//!
//! Every kind is found from a cheap anchor and then checked by code: literal prefixes
//! (`AKIA`, `ghp_`, `-----BEGIN`, `eyJ`, `Bearer `, `@`, `password=` …) through one
//! Aho-Corasick automaton, and digit runs (card numbers, phone numbers) and IBANs by a
//! byte loop. Checks are structural, not just shape: card numbers pass Luhn and carry a
//! known issuer prefix, IBANs pass the ISO 13616 mod-97 check and their country's
//! length, JWTs have a JSON header with `alg`. A plain regex set over the same shapes is
//! the baseline in `benches/secrets.rs`.

use std::sync::LazyLock;

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};
use serde::Serialize;

use super::validate::{iban_valid, jwt_header_valid, luhn_valid};

/// What a found value is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum SecretKind {
    /// AWS access key id (`AKIA…`, `ASIA…`).
    AwsAccessKey,
    /// Google API key (`AIza…`).
    GoogleApiKey,
    /// GitHub token (`ghp_…`, `github_pat_…`).
    GithubToken,
    /// Slack token (`xoxb-…`).
    SlackToken,
    /// Stripe, OpenAI, Anthropic and similar `sk-`/`sk_live_` API keys.
    ApiKey,
    /// PEM private key block.
    PrivateKey,
    /// JSON Web Token.
    Jwt,
    /// `Bearer` token in an authorization header or text.
    BearerToken,
    /// A value assigned to a key named like a secret (`password=…`, `"api_key": "…"`).
    CredentialAssignment,
    /// Payment card number (Luhn-valid, known issuer prefix).
    CardNumber,
    /// International bank account number (mod-97 valid).
    Iban,
    /// Email address.
    Email,
    /// Phone number in international (`+…`) or North American formatted form.
    Phone,
}

/// Families of kinds, for settings that name many kinds at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SecretClass {
    /// Keys, tokens, passwords: anything that grants access.
    Credentials,
    /// Card numbers and bank accounts.
    Financial,
    /// Emails and phone numbers.
    Contact,
}

impl SecretKind {
    /// Every kind.
    pub const ALL: [SecretKind; 13] = [
        SecretKind::AwsAccessKey,
        SecretKind::GoogleApiKey,
        SecretKind::GithubToken,
        SecretKind::SlackToken,
        SecretKind::ApiKey,
        SecretKind::PrivateKey,
        SecretKind::Jwt,
        SecretKind::BearerToken,
        SecretKind::CredentialAssignment,
        SecretKind::CardNumber,
        SecretKind::Iban,
        SecretKind::Email,
        SecretKind::Phone,
    ];

    /// The name used in settings, evidence and redaction markers.
    pub fn as_str(self) -> &'static str {
        match self {
            SecretKind::AwsAccessKey => "aws_access_key",
            SecretKind::GoogleApiKey => "google_api_key",
            SecretKind::GithubToken => "github_token",
            SecretKind::SlackToken => "slack_token",
            SecretKind::ApiKey => "api_key",
            SecretKind::PrivateKey => "private_key",
            SecretKind::Jwt => "jwt",
            SecretKind::BearerToken => "bearer_token",
            SecretKind::CredentialAssignment => "credential_assignment",
            SecretKind::CardNumber => "card_number",
            SecretKind::Iban => "iban",
            SecretKind::Email => "email",
            SecretKind::Phone => "phone",
        }
    }

    /// The family.
    pub fn class(self) -> SecretClass {
        match self {
            SecretKind::CardNumber | SecretKind::Iban => SecretClass::Financial,
            SecretKind::Email | SecretKind::Phone => SecretClass::Contact,
            _ => SecretClass::Credentials,
        }
    }

    /// The kinds a settings name stands for: a kind name, a class name
    /// (`credentials`, `financial`, `contact`) or `all`.
    pub fn parse_set(name: &str) -> Option<Vec<SecretKind>> {
        let class = match name {
            "all" => return Some(Self::ALL.to_vec()),
            "credentials" => Some(SecretClass::Credentials),
            "financial" => Some(SecretClass::Financial),
            "contact" => Some(SecretClass::Contact),
            _ => None,
        };
        match class {
            Some(c) => Some(Self::ALL.into_iter().filter(|k| k.class() == c).collect()),
            None => Self::ALL
                .into_iter()
                .find(|k| k.as_str() == name)
                .map(|k| vec![k]),
        }
    }
}

/// One found value: its kind and byte range in the scanned text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SecretMatch {
    /// What it is.
    pub kind: SecretKind,
    /// Start byte.
    pub start: usize,
    /// End byte (exclusive).
    pub end: usize,
}

#[derive(Clone, Copy)]
enum Anchor {
    Aws,
    Google,
    Github,
    GithubPat,
    Slack,
    SkKey,
    Pem,
    Jwt,
    Bearer,
    Assignment,
    At,
}

const ANCHORS: &[(&str, Anchor)] = &[
    ("AKIA", Anchor::Aws),
    ("ASIA", Anchor::Aws),
    ("AIza", Anchor::Google),
    ("ghp_", Anchor::Github),
    ("gho_", Anchor::Github),
    ("ghu_", Anchor::Github),
    ("ghs_", Anchor::Github),
    ("ghr_", Anchor::Github),
    ("github_pat_", Anchor::GithubPat),
    ("xoxb-", Anchor::Slack),
    ("xoxp-", Anchor::Slack),
    ("xoxa-", Anchor::Slack),
    ("xoxr-", Anchor::Slack),
    ("xoxs-", Anchor::Slack),
    ("sk_live_", Anchor::SkKey),
    ("rk_live_", Anchor::SkKey),
    ("sk-", Anchor::SkKey),
    ("-----BEGIN ", Anchor::Pem),
    ("eyJ", Anchor::Jwt),
    ("bearer ", Anchor::Bearer),
    ("password", Anchor::Assignment),
    ("passwd", Anchor::Assignment),
    ("secret", Anchor::Assignment),
    ("api_key", Anchor::Assignment),
    ("apikey", Anchor::Assignment),
    ("api-key", Anchor::Assignment),
    ("access_token", Anchor::Assignment),
    ("auth_token", Anchor::Assignment),
    ("@", Anchor::At),
];

static AUTOMATON: LazyLock<AhoCorasick> = LazyLock::new(|| {
    AhoCorasickBuilder::new()
        .ascii_case_insensitive(true)
        .match_kind(MatchKind::LeftmostLongest)
        .build(ANCHORS.iter().map(|(p, _)| p))
        .unwrap_or_else(|e| panic!("secret anchors are fixed strings: {e}"))
});

fn is_alnum(b: u8) -> bool {
    b.is_ascii_alphanumeric()
}

/// `true` when the byte before `at` does not continue a word.
fn starts_word(bytes: &[u8], at: usize) -> bool {
    at == 0 || !(is_alnum(bytes[at - 1]) || bytes[at - 1] == b'_')
}

/// `true` when the byte at `at` does not continue a word.
fn ends_word(bytes: &[u8], at: usize) -> bool {
    at >= bytes.len() || !(is_alnum(bytes[at]) || bytes[at] == b'_')
}

/// Length of the run of bytes from `from` satisfying `ok`, at most `max`.
fn run(bytes: &[u8], from: usize, max: usize, ok: impl Fn(u8) -> bool) -> usize {
    bytes[from.min(bytes.len())..]
        .iter()
        .take(max)
        .take_while(|&&b| ok(b))
        .count()
}

fn token_char(b: u8) -> bool {
    is_alnum(b) || b == b'_' || b == b'-'
}

/// Every secret in `text`, in order, without overlaps.
pub fn scan(text: &str) -> Vec<SecretMatch> {
    let mut out = Vec::new();
    scan_into(text, &mut out);
    out
}

/// Appends every secret in `text` to `out`, in order, without overlaps.
pub fn scan_into(text: &str, out: &mut Vec<SecretMatch>) {
    let first = out.len();
    let bytes = text.as_bytes();
    let mut covered = 0;
    for m in AUTOMATON.find_iter(bytes) {
        if m.start() < covered {
            continue;
        }
        let (pattern, anchor) = ANCHORS[m.pattern().as_usize()];
        let exact_case = &bytes[m.start()..m.end()] == pattern.as_bytes();
        if let Some(found) = check_anchor(bytes, m.start(), m.end(), anchor, exact_case) {
            covered = found.end;
            out.push(found);
        }
    }
    scan_numbers(bytes, out);
    if out.len() - first > 1 {
        let tail = &mut out[first..];
        tail.sort_by_key(|m| (m.start, std::cmp::Reverse(m.end)));
        let mut kept = first;
        for i in first..out.len() {
            if kept == first || out[i].start >= out[kept - 1].end {
                out[kept] = out[i];
                kept += 1;
            }
        }
        out.truncate(kept);
    }
}

/// Checks what follows an anchor. `exact_case` says the anchor matched in its own
/// spelling (the automaton ignores case so `Bearer` and `PASSWORD` are found too).
fn check_anchor(
    bytes: &[u8],
    start: usize,
    end: usize,
    anchor: Anchor,
    exact_case: bool,
) -> Option<SecretMatch> {
    let found = |kind, end| Some(SecretMatch { kind, start, end });
    match anchor {
        Anchor::Aws => {
            let n = run(bytes, end, 17, |b| {
                b.is_ascii_uppercase() || (b'2'..=b'7').contains(&b)
            });
            (n == 16 && exact_case && starts_word(bytes, start) && ends_word(bytes, end + n))
                .then_some(())?;
            found(SecretKind::AwsAccessKey, end + n)
        }
        Anchor::Google => {
            let n = run(bytes, end, 36, token_char);
            (n == 35 && exact_case && starts_word(bytes, start)).then_some(())?;
            found(SecretKind::GoogleApiKey, end + n)
        }
        Anchor::Github => {
            let n = run(bytes, end, 37, is_alnum);
            (n == 36 && exact_case && starts_word(bytes, start) && ends_word(bytes, end + n))
                .then_some(())?;
            found(SecretKind::GithubToken, end + n)
        }
        Anchor::GithubPat => {
            let n = run(bytes, end, 100, |b| is_alnum(b) || b == b'_');
            (n >= 60 && exact_case && starts_word(bytes, start)).then_some(())?;
            found(SecretKind::GithubToken, end + n)
        }
        Anchor::Slack => {
            let n = run(bytes, end, 200, |b| is_alnum(b) || b == b'-');
            (n >= 10 && exact_case && starts_word(bytes, start)).then_some(())?;
            found(SecretKind::SlackToken, end + n)
        }
        Anchor::SkKey => {
            let n = run(bytes, end, 200, token_char);
            let min = if end - start == 3 { 32 } else { 20 };
            let body = &bytes[end..end + n];
            (n >= min
                && exact_case
                && starts_word(bytes, start)
                && body.iter().any(u8::is_ascii_digit)
                && body.iter().any(u8::is_ascii_alphabetic))
            .then_some(())?;
            found(SecretKind::ApiKey, end + n)
        }
        Anchor::Pem => pem_block(bytes, end).and_then(|e| found(SecretKind::PrivateKey, e)),
        Anchor::Jwt => {
            if !exact_case || !starts_word(bytes, start) {
                return None;
            }
            jwt(bytes, start).and_then(|e| found(SecretKind::Jwt, e))
        }
        Anchor::Bearer => {
            if !starts_word(bytes, start) {
                return None;
            }
            let n = run(bytes, end, 4096, |b| is_alnum(b) || b"-._~+/".contains(&b));
            let n = n + run(bytes, end + n, 2, |b| b == b'=');
            let body = &bytes[end..end + n];
            let classes = [
                body.iter().any(u8::is_ascii_digit),
                body.iter().any(u8::is_ascii_lowercase),
                body.iter().any(u8::is_ascii_uppercase),
            ];
            (n >= 16 && classes.iter().filter(|&&c| c).count() >= 2).then_some(())?;
            Some(SecretMatch {
                kind: SecretKind::BearerToken,
                start: end,
                end: end + n,
            })
        }
        Anchor::Assignment => {
            // `DB_PASSWORD=` and `client_secret:` count; `secretary:` does not.
            let after = bytes.get(end).copied().unwrap_or(b' ');
            if (start > 0 && is_alnum(bytes[start - 1])) || is_alnum(after) {
                return None;
            }
            assignment_value(bytes, end).map(|(s, e)| SecretMatch {
                kind: SecretKind::CredentialAssignment,
                start: s,
                end: e,
            })
        }
        Anchor::At => email(bytes, start),
    }
}

fn pem_block(bytes: &[u8], end: usize) -> Option<usize> {
    let header_end = end + run(bytes, end, 40, |b| b.is_ascii_uppercase() || b == b' ');
    if !bytes[end..header_end].ends_with(b"PRIVATE KEY")
        || !bytes[header_end..].starts_with(b"-----")
    {
        return None;
    }
    let body = header_end + 5;
    let rest = &bytes[body..];
    let footer = find(rest, b"-----END ");
    let stop = match footer {
        Some(at) => {
            let after = body + at + 9;
            let label = run(bytes, after, 40, |b| b.is_ascii_uppercase() || b == b' ');
            let close = after + label;
            if bytes[close..].starts_with(b"-----") {
                close + 5
            } else {
                close
            }
        }
        None => {
            // A truncated key is still a key: take the base64 body that follows.
            body + run(bytes, body, usize::MAX, |b| {
                is_alnum(b) || b"+/=\r\n\\ ".contains(&b)
            })
        }
    };
    Some(stop)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn jwt(bytes: &[u8], start: usize) -> Option<usize> {
    let seg = |from: usize| run(bytes, from, 8192, token_char);
    let h = seg(start);
    if h < 10 || bytes.get(start + h) != Some(&b'.') {
        return None;
    }
    let p_start = start + h + 1;
    let p = seg(p_start);
    if p < 10 || bytes.get(p_start + p) != Some(&b'.') {
        return None;
    }
    let s_start = p_start + p + 1;
    let s = seg(s_start);
    jwt_header_valid(&bytes[start..start + h]).then_some(s_start + s)
}

/// After a secret-like key: optional key suffix and closing quote, `:`/`=`, optional
/// opening quote, then the value.
fn assignment_value(bytes: &[u8], end: usize) -> Option<(usize, usize)> {
    let mut i = end + run(bytes, end, 32, |b| is_alnum(b) || b == b'_' || b == b'-');
    i += run(bytes, i, 1, |b| b == b'"' || b == b'\'');
    i += run(bytes, i, 4, |b| b == b' ' || b == b'\t');
    if !matches!(bytes.get(i), Some(b':') | Some(b'=')) {
        return None;
    }
    i += 1;
    i += run(bytes, i, 1, |b| b == b'>');
    i += run(bytes, i, 4, |b| b == b' ' || b == b'\t');
    i += run(bytes, i, 1, |b| b == b'"' || b == b'\'');
    let n = run(bytes, i, 512, |b| {
        b > b' ' && b < 0x7f && !b"\"',;<>{}()[]`\\".contains(&b)
    });
    let value = &bytes[i..i + n];
    // A link after "reset your password:" is not the password.
    let url = value.windows(3).take(12).any(|w| w == b"://");
    let placeholder = url
        || value.starts_with(b"$")
        || value.iter().all(|&b| b == value[0])
        || value.eq_ignore_ascii_case(b"required")
        || value.eq_ignore_ascii_case(b"optional");
    (n >= 8 && !placeholder && value.iter().any(|b| !b.is_ascii_lowercase())).then_some((i, i + n))
}

fn email(bytes: &[u8], at: usize) -> Option<SecretMatch> {
    let local_ok = |b: u8| is_alnum(b) || b"._%+-".contains(&b);
    let local = bytes[..at]
        .iter()
        .rev()
        .take(64)
        .take_while(|&&b| local_ok(b))
        .count();
    let start = at - local;
    let start = start + run(bytes, start, local, |b| b == b'.');
    if start == at {
        return None;
    }
    let domain = run(bytes, at + 1, 253, |b| {
        is_alnum(b) || b == b'.' || b == b'-'
    });
    let mut end = at + 1 + domain;
    while end > at + 1 && matches!(bytes[end - 1], b'.' | b'-') {
        end -= 1;
    }
    let host = &bytes[at + 1..end];
    let tld_start = host.iter().rposition(|&b| b == b'.')? + 1;
    let tld = &host[tld_start..];
    (tld_start > 1 && tld.len() >= 2 && tld.iter().all(u8::is_ascii_alphabetic)).then_some(
        SecretMatch {
            kind: SecretKind::Email,
            start,
            end,
        },
    )
}

/// Card numbers, IBANs and phone numbers, found by walking the bytes once.
fn scan_numbers(bytes: &[u8], out: &mut Vec<SecretMatch>) {
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        let boundary = i == 0 || !(is_alnum(bytes[i - 1]) || bytes[i - 1] == b'_');
        let found = if !boundary {
            None
        } else if b.is_ascii_digit() {
            card(bytes, i).or_else(|| north_american_phone(bytes, i))
        } else if b == b'+' || b == b'(' {
            international_phone(bytes, i).or_else(|| north_american_phone(bytes, i))
        } else if b.is_ascii_uppercase() {
            iban(bytes, i)
        } else {
            None
        };
        match found {
            Some(m) => {
                i = m.end;
                out.push(m);
            }
            None => {
                // Skip the rest of a word: nothing starts inside one.
                let in_word = is_alnum(b) || b == b'_';
                i += 1;
                while in_word && i < bytes.len() && (is_alnum(bytes[i]) || bytes[i] == b'_') {
                    i += 1;
                }
            }
        }
    }
}

/// Digits from `start` in groups separated by one `sep` byte (or none); returns the
/// digits and the end.
fn digit_groups(bytes: &[u8], start: usize, seps: &[u8], max_digits: usize) -> (Vec<u8>, usize) {
    let mut digits = Vec::with_capacity(19);
    let mut i = start;
    let mut end = start;
    while i < bytes.len() && digits.len() <= max_digits {
        let b = bytes[i];
        if b.is_ascii_digit() {
            digits.push(b - b'0');
            i += 1;
            end = i;
        } else if seps.contains(&b) && bytes.get(i + 1).is_some_and(u8::is_ascii_digit) && end == i
        {
            i += 1;
        } else {
            break;
        }
    }
    (digits, end)
}

fn card(bytes: &[u8], start: usize) -> Option<SecretMatch> {
    let (digits, end) = digit_groups(bytes, start, b" -", 19);
    if !(13..=19).contains(&digits.len()) || !ends_word(bytes, end) {
        return None;
    }
    let prefix = |n: usize| digits[..n].iter().fold(0u32, |acc, &d| acc * 10 + d as u32);
    let issuer = match digits[0] {
        4 => true,
        5 => (51..=55).contains(&prefix(2)),
        2 => (2221..=2720).contains(&prefix(4)),
        3 => matches!(prefix(2), 34 | 37 | 35 | 36 | 38 | 30),
        6 => prefix(4) == 6011 || prefix(2) == 65 || (644..=649).contains(&prefix(3)),
        _ => false,
    };
    let distinct = digits.iter().any(|&d| d != digits[0]);
    (issuer && distinct && luhn_valid(&digits)).then_some(SecretMatch {
        kind: SecretKind::CardNumber,
        start,
        end,
    })
}

fn international_phone(bytes: &[u8], start: usize) -> Option<SecretMatch> {
    if bytes[start] != b'+' || !bytes.get(start + 1).is_some_and(u8::is_ascii_digit) {
        return None;
    }
    let mut digits = 0;
    let mut i = start + 1;
    let mut end = i;
    while i < bytes.len() {
        let b = bytes[i];
        if b.is_ascii_digit() {
            digits += 1;
            i += 1;
            end = i;
        } else if b" -.()".contains(&b) && i + 1 < bytes.len() && end + 2 > i {
            i += 1;
        } else {
            break;
        }
    }
    ((8..=15).contains(&digits) && ends_word(bytes, end)).then_some(SecretMatch {
        kind: SecretKind::Phone,
        start,
        end,
    })
}

/// `(555) 123-4567`, `555-123-4567`, `555.123.4567`.
fn north_american_phone(bytes: &[u8], start: usize) -> Option<SecretMatch> {
    let s = bytes.get(start..start + 14).unwrap_or(&bytes[start..]);
    let d = |r: std::ops::Range<usize>| s.get(r).is_some_and(|x| x.iter().all(u8::is_ascii_digit));
    let end = if s.len() >= 14
        && s[0] == b'('
        && d(1..4)
        && &s[4..6] == b") "
        && d(6..9)
        && s[9] == b'-'
        && d(10..14)
    {
        start + 14
    } else if s.len() >= 12
        && d(0..3)
        && d(4..7)
        && d(8..12)
        && s[3] == s[7]
        && matches!(s[3], b'-' | b'.')
    {
        start + 12
    } else {
        return None;
    };
    ends_word(bytes, end).then_some(SecretMatch {
        kind: SecretKind::Phone,
        start,
        end,
    })
}

fn iban(bytes: &[u8], start: usize) -> Option<SecretMatch> {
    let head = bytes.get(start..start + 4)?;
    if !(head[0].is_ascii_uppercase()
        && head[1].is_ascii_uppercase()
        && head[2].is_ascii_digit()
        && head[3].is_ascii_digit())
    {
        return None;
    }
    let mut compact = Vec::with_capacity(34);
    let mut i = start;
    let mut end = start;
    while i < bytes.len() && compact.len() <= 34 {
        let b = bytes[i];
        if b.is_ascii_digit() || b.is_ascii_uppercase() {
            compact.push(b);
            i += 1;
            end = i;
        } else if b == b' '
            && end == i
            && compact.len() % 4 == 0
            && bytes.get(i + 1).is_some_and(|n| n.is_ascii_alphanumeric())
        {
            i += 1;
        } else {
            break;
        }
    }
    // A trailing group that ran into the next word is not part of the IBAN.
    if !ends_word(bytes, end) {
        return None;
    }
    iban_valid(&compact).then_some(SecretMatch {
        kind: SecretKind::Iban,
        start,
        end,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(text: &str) -> Vec<(SecretKind, &str)> {
        scan(text)
            .into_iter()
            .map(|m| (m.kind, &text[m.start..m.end]))
            .collect()
    }

    #[test]
    fn finds_each_kind_with_its_exact_span() {
        let cases = [
            (
                "key AKIAIOSFODNN7EXAMPLE here",
                SecretKind::AwsAccessKey,
                "AKIAIOSFODNN7EXAMPLE",
            ),
            (
                "k=AIzaSyA1234567890abcdefghijklmnopqrstuv",
                SecretKind::GoogleApiKey,
                "AIzaSyA1234567890abcdefghijklmnopqrstuv",
            ),
            (
                "ghp_0123456789abcdefghijABCDEFGHIJ012345",
                SecretKind::GithubToken,
                "ghp_0123456789abcdefghijABCDEFGHIJ012345",
            ),
            (
                "xoxb-123456789012-abcdefABCDEF",
                SecretKind::SlackToken,
                "xoxb-123456789012-abcdefABCDEF",
            ),
            (
                "use sk_live_4eC39HqLyjWDarjtT1zdp7dc now",
                SecretKind::ApiKey,
                "sk_live_4eC39HqLyjWDarjtT1zdp7dc",
            ),
            (
                "Authorization: Bearer abcDEF123456ghiJKL789",
                SecretKind::BearerToken,
                "abcDEF123456ghiJKL789",
            ),
            (
                "DB_PASSWORD=Tr0ub4dor&3x",
                SecretKind::CredentialAssignment,
                "Tr0ub4dor&3x",
            ),
            (
                "{\"api_key\": \"9f8e7d6c5b4a3210\"}",
                SecretKind::CredentialAssignment,
                "9f8e7d6c5b4a3210",
            ),
            (
                "pay 4111 1111 1111 1111 today",
                SecretKind::CardNumber,
                "4111 1111 1111 1111",
            ),
            (
                "card 5500-0000-0000-0004.",
                SecretKind::CardNumber,
                "5500-0000-0000-0004",
            ),
            (
                "to GB29NWBK60161331926819 please",
                SecretKind::Iban,
                "GB29NWBK60161331926819",
            ),
            (
                "to DE89 3704 0044 0532 0130 00.",
                SecretKind::Iban,
                "DE89 3704 0044 0532 0130 00",
            ),
            (
                "mail emma.johnson@bluesparrowtech.com.",
                SecretKind::Email,
                "emma.johnson@bluesparrowtech.com",
            ),
            (
                "call +1 (415) 555-0132 now",
                SecretKind::Phone,
                "+1 (415) 555-0132",
            ),
            ("call (415) 555-0132", SecretKind::Phone, "(415) 555-0132"),
            ("call 415-555-0132", SecretKind::Phone, "415-555-0132"),
        ];
        for (text, kind, span) in cases {
            assert_eq!(kinds(text), vec![(kind, span)], "in {text:?}");
        }
    }

    #[test]
    fn finds_pem_private_keys_whole_or_truncated() {
        let pem =
            "x -----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA\n-----END RSA PRIVATE KEY----- y";
        assert_eq!(
            kinds(pem),
            vec![(SecretKind::PrivateKey, &pem[2..pem.len() - 2])]
        );
        let cut = "-----BEGIN OPENSSH PRIVATE KEY-----\\nb3BlbnNzaC1rZXktdjEA";
        assert_eq!(kinds(cut), vec![(SecretKind::PrivateKey, cut)]);
        assert!(kinds("-----BEGIN CERTIFICATE-----\nMIIB").is_empty());
    }

    #[test]
    fn finds_jwts_with_a_json_header_only() {
        let jwt = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U";
        assert_eq!(kinds(&format!("t={jwt};")), vec![(SecretKind::Jwt, jwt)]);
        // Right shape, header is not JSON with `alg`.
        assert!(kinds("eyJub3RhbGciOjF9AAAA.eyJzdWIiOiIxMjM0In0.sig").is_empty());
    }

    #[test]
    fn ignores_look_alikes() {
        for text in [
            "AKIAIOSFODNN7EXAMPL",                            // 15 after the prefix
            "xAKIAIOSFODNN7EXAMPLE",                          // inside a word
            "4111 1111 1111 1112",                            // fails Luhn
            "order 1234567812345678",                         // no issuer prefix / Luhn
            "0000 0000 0000 0000",                            // Luhn-valid but not a card
            "GB28NWBK60161331926819",                         // bad IBAN checksum
            "ISO8601 and AB12 are codes",                     // IBAN-shaped start only
            "at 2024-05-13 10:00 the meeting",                // date, not a phone
            "version 10.2.3.4 released",                      // dotted numbers
            "user@localhost is not routable",                 // no dot in the domain
            "password: required",                             // documentation, not a value
            "the password is stored in the vault",            // no assignment
            "secret=${VAULT_TOKEN}",                          // placeholder
            "reset your password: https://example.com/reset", // a link, not a password
            "Bearer token authentication",                    // prose
            "desk-0123456789abcdefghijklmnopqrstuvwxyz",      // `sk-` inside a word
            "tracking id 1Z999AA10123456784",                 // not a card
        ] {
            assert_eq!(kinds(text), vec![], "in {text:?}");
        }
    }

    #[test]
    fn matches_do_not_overlap_and_keep_order() {
        let text = "jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhYmMifQ.c2lnbmF0dXJlMTIz and Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhYmMifQ.c2lnbmF0dXJlMTIz mail a@b.io";
        let found = scan(text);
        assert!(found.windows(2).all(|w| w[0].end <= w[1].start));
        let names: Vec<_> = found.iter().map(|m| m.kind).collect();
        assert_eq!(
            names,
            vec![SecretKind::Jwt, SecretKind::BearerToken, SecretKind::Email]
        );
    }

    #[test]
    fn kind_sets_parse_from_names_and_classes() {
        assert_eq!(SecretKind::parse_set("iban"), Some(vec![SecretKind::Iban]));
        assert_eq!(
            SecretKind::parse_set("contact"),
            Some(vec![SecretKind::Email, SecretKind::Phone])
        );
        assert_eq!(SecretKind::parse_set("all").map(|v| v.len()), Some(13));
        assert_eq!(SecretKind::parse_set("nope"), None);
    }

    #[test]
    fn never_panics_on_multibyte_text() {
        for text in [
            "é@é.é",
            "+é",
            "(é) ",
            "AKIA€",
            "-----BEGIN é",
            "password=é€€€€€€€€",
            "eyJé.é.é",
            "DE89é",
        ] {
            for m in scan(text) {
                assert!(text.is_char_boundary(m.start) && text.is_char_boundary(m.end));
            }
        }
    }
}
