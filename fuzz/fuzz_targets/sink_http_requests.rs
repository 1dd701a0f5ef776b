//! Any bytes as what a client sends one of our HTTP listeners (the sink's proxy, the
//! OTLP receiver, /metrics) on one connection: every request is
//! read whole or refused with a status, never panics, and never yields more than its
//! bounds (a body within the limit, head fields within the cap).
#![no_main]

use libfuzzer_sys::fuzz_target;
use toolgate_http::read_requests;

fuzz_target!(|data: &[u8]| {
    for outcome in read_requests(data, 256) {
        assert!(outcome.body <= 256);
        assert!(outcome.headers <= 128);
        if outcome.oversized {
            assert_eq!(outcome.body, 0);
        }
        if let Err(status) = outcome.request {
            assert!([0, 400, 408, 417, 431, 505].contains(&status));
        }
    }
});
