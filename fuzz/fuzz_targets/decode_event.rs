//! Any bytes: the event decoder returns an event or an error, never panics, and an
//! event it accepts survives its own encoding unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use toolgate_protocol::Event;

fuzz_target!(|data: &[u8]| {
    if let Ok(event) = Event::decode_with_limit(data, 1 << 16) {
        let again = Event::decode(event.to_json().as_bytes()).expect("re-decode own encoding");
        assert_eq!(again, event);
    }
});
