//! Secret and PII scanning throughput, against the plain approach in the same run: a
//! `regex::RegexSet` over the same shapes to learn which kinds occur, then each
//! matching `Regex` to find them. The baseline does not validate (no Luhn, mod-97 or
//! JWT header check), so it does strictly less work per match.
//!
//! Inputs: the text of every tool result in `examples/agentdojo-sample.jsonl`
//! (ordinary emails, calendars, files, bank statements) repeated to ~1 MiB, and the
//! same text with a secret or personal value every ~200 bytes.
//!
//! `cargo bench --bench secrets`

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use regex::{Regex, RegexSet};
use std::hint::black_box;
use toolgate_detectors::secrets::scan;
use toolgate_protocol::{Event, EventBody};

const BASELINE_PATTERNS: &[&str] = &[
    r"\b(?:AKIA|ASIA)[A-Z2-7]{16}\b",
    r"\bAIza[0-9A-Za-z_-]{35}",
    r"\bgh[pousr]_[A-Za-z0-9]{36}\b|\bgithub_pat_[A-Za-z0-9_]{60,}",
    r"\bxox[bpars]-[A-Za-z0-9-]{10,}",
    r"\b(?:sk|rk)_live_[A-Za-z0-9_-]{20,}|\bsk-[A-Za-z0-9_-]{32,}",
    r"-----BEGIN [A-Z ]*PRIVATE KEY-----",
    r"\beyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]*",
    r"(?i)\bbearer\s+[A-Za-z0-9._~+/-]{16,}=*",
    r#"(?i)\b(?:password|passwd|secret|api[_-]?key|access_token|auth_token)[A-Za-z0-9_-]*["']?\s*[:=]>?\s*["']?[^\s"',;<>{}()\[\]]{8,}"#,
    r"\b(?:\d[ -]?){13,19}\b",
    r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?\b",
    r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}",
    r"\+\d[\d \-().]{7,18}\d|\(\d{3}\) \d{3}-\d{4}|\b\d{3}[-.]\d{3}[-.]\d{4}\b",
];

fn result_text() -> String {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/agentdojo-sample.jsonl"
    );
    let text = std::fs::read_to_string(path).expect("examples/agentdojo-sample.jsonl");
    let mut out = String::new();
    for line in text.lines() {
        if let Ok(Event {
            body: EventBody::ToolResult { result, .. },
            ..
        }) = Event::decode(line.as_bytes())
        {
            for t in result.texts() {
                out.push_str(t);
                out.push('\n');
            }
        }
    }
    let unit = out.clone();
    while out.len() < 1 << 20 {
        out.push_str(&unit);
    }
    out
}

fn dense(text: &str) -> String {
    let values = [
        "AKIAIOSFODNN7EXAMPLE",
        "4111 1111 1111 1111",
        "GB29NWBK60161331926819",
        "mark.black-2134@gmail.com",
        "+1 (415) 555-0132",
        "Bearer abcDEF123456ghiJKL789",
        "password=Tr0ub4dor&3x",
    ];
    let mut out = String::with_capacity(text.len() + text.len() / 8);
    for (i, chunk) in text.as_bytes().chunks(200).enumerate() {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push(' ');
        out.push_str(values[i % values.len()]);
        out.push(' ');
    }
    out
}

fn baseline(set: &RegexSet, regexes: &[Regex], text: &str) -> usize {
    set.matches(text)
        .iter()
        .map(|i| regexes[i].find_iter(text).count())
        .sum()
}

fn secrets(c: &mut Criterion) {
    let set = RegexSet::new(BASELINE_PATTERNS).expect("baseline patterns");
    let regexes: Vec<Regex> = BASELINE_PATTERNS
        .iter()
        .map(|p| Regex::new(p).expect("baseline pattern"))
        .collect();
    let plain = result_text();
    let dense = dense(&plain);
    for (name, text) in [
        ("agentdojo_results", &plain),
        ("secret_every_200_bytes", &dense),
    ] {
        let mut group = c.benchmark_group(format!("secret_scan_{name}"));
        group.throughput(Throughput::Bytes(text.len() as u64));
        group.sample_size(20);
        group.bench_function("regex_set_baseline", |b| {
            b.iter(|| black_box(baseline(&set, &regexes, black_box(text))))
        });
        group.bench_function("toolgate_scan", |b| {
            b.iter(|| black_box(scan(black_box(text)).len()))
        });
        group.finish();
    }
}

criterion_group!(benches, secrets);
criterion_main!(benches);
