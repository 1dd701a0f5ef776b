//! Any text (tool results and arguments come from outside): the secret scanner never
//! panics, its matches lie on character boundaries, in order and without overlaps, and
//! redaction leaves no match of a redacted kind behind.
#![no_main]

use libfuzzer_sys::fuzz_target;
use toolgate_detectors::secrets::{Redactor, scan};
use toolgate_protocol::config::{RedactionConfig, RedactionMode};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let found = scan(text);
    for m in &found {
        assert!(m.start < m.end && text.is_char_boundary(m.start) && text.is_char_boundary(m.end));
    }
    assert!(found.windows(2).all(|w| w[0].end <= w[1].start));
    let drop = Redactor::new(&RedactionConfig {
        mode: RedactionMode::Drop,
        ..RedactionConfig::default()
    })
    .expect("default kinds");
    let (redacted, n) = drop.redact_text(text);
    assert_eq!(n, found.len());
    if n > 0 {
        assert!(redacted.contains("[REDACTED:"));
    }
});
