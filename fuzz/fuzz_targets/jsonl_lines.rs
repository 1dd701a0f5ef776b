//! Any byte stream as JSON Lines: every non-blank line becomes exactly one event or one
//! rejected record, numbered in order, with no bytes beyond the limit held.
#![no_main]

use libfuzzer_sys::fuzz_target;
use toolgate_ingest::{JsonlSource, SourceItem};

const LIMIT: usize = 256;

fuzz_target!(|data: &[u8]| {
    let reader = Box::new(std::io::Cursor::new(data.to_vec()));
    let mut source = JsonlSource::from_reader("fuzz", reader, LIMIT);
    let mut items = 0u64;
    let mut last_line = 0u64;
    for item in source.by_ref() {
        match item.expect("in-memory reads cannot fail") {
            SourceItem::Event(_) => {}
            SourceItem::Rejected(r) => {
                assert!(r.line > last_line);
                last_line = r.line;
                assert!(r.raw.len() <= LIMIT);
                assert!(r.raw.len() <= r.raw_len);
            }
        }
        items += 1;
    }
    // Every newline ends a line; bytes after the last one are a final line.
    let newlines = data.iter().filter(|b| **b == b'\n').count() as u64;
    let tail = data
        .rsplit(|b| *b == b'\n')
        .next()
        .is_some_and(|t| !t.is_empty());
    let lines = newlines + u64::from(tail);
    assert_eq!(items + source.blank_lines(), lines);
});
