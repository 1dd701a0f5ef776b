//! Any bytes as an oversized JSON-RPC message streaming past, split at any point: the
//! id sniffer never panics, finds the same id however the bytes are split, and on a
//! valid object with one top-level `id` finds exactly what a JSON parser reads there.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use toolgate_sink::jsonrpc::IdSniffer;

fuzz_target!(|data: &[u8]| {
    let Some((&split, data)) = data.split_first() else {
        return;
    };
    let whole = {
        let mut s = IdSniffer::default();
        s.push(data);
        s.id().cloned()
    };
    let cut = usize::from(split) % (data.len() + 1);
    let parts = {
        let mut s = IdSniffer::default();
        s.push(&data[..cut]);
        s.push(&data[cut..]);
        s.id().cloned()
    };
    assert_eq!(whole, parts, "split at {cut}");
    if let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(data) {
        let text = String::from_utf8_lossy(data);
        // A duplicated member: the parser keeps the last, the sniffer the first.
        if text.matches("\"id\"").count() == 1 {
            let expected = map
                .get("id")
                .filter(|v| v.is_string() || v.is_number())
                .cloned();
            assert_eq!(whole, expected, "{text}");
        }
    }
});
