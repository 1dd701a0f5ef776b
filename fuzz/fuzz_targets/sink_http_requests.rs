//! Any bytes as what a client sends one of our HTTP listeners (the sink's proxy, the
//! OTLP receiver, /metrics) on one connection: every request is
//! read whole or refused with a status, never panics, and never yields more than its
//! bounds (a body within the limit, head fields within the cap, an oversized body's
//! rest streamed in bounded reads).
#![no_main]

use libfuzzer_sys::fuzz_target;
use toolgate_http::read_requests;

fuzz_target!(|data: &[u8]| {
    for outcome in read_requests(data, 256) {
        assert!(outcome.body <= 256);
        assert!(outcome.headers <= 128);
        // An oversized body's rest streams past in bounded reads: never more than
        // asked for, and a framing failure is a status, not a panic.
        assert_eq!(outcome.oversized, outcome.rest.is_some());
        if let Some((streamed, whole)) = outcome.rest {
            assert!(streamed as u64 <= toolgate_http::READ_REST_MAX);
            if let Err(status) = whole {
                assert!([0, 400, 408, 431].contains(&status));
            }
        }
        if let Err(status) = outcome.request {
            assert!([0, 400, 408, 417, 431, 505].contains(&status));
        }
    }
});
