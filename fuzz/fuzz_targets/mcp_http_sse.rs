//! Any bytes as an SSE stream from an MCP server behind the HTTP proxy: split into
//! events at blank lines, each event's fields are read without a panic, its data is
//! never longer than the event, and the session takes the data without a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use toolgate_protocol::Timestamp;
use toolgate_protocol::config::Config;
use toolgate_sink::http::sse_fields;
use toolgate_sink::session::{Identity, Report, Session};

fuzz_target!(|data: &[u8]| {
    let config = Config::from_toml("", "fuzz").expect("config");
    let identity = Identity {
        agent_id: "a".into(),
        agent_role: None,
        host: None,
        session_id: "s".into(),
        server: "srv".into(),
        trust_domain: None,
    };
    let checks = toolgate_sink::checks(&config, None, "a", false).expect("checks");
    let mut session = Session::new(identity, checks, "e".into());
    // A client request first, so a response in the stream is matched to a call.
    let (mut out, mut report) = (Vec::new(), Report::default());
    session.from_client(
        br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t","arguments":{}}}"#,
        Timestamp::EPOCH,
        &mut out,
        &mut report,
    );
    let mut rest = data;
    while !rest.is_empty() {
        let end = rest
            .windows(2)
            .position(|w| w == b"\n\n")
            .map_or(rest.len(), |i| i + 2);
        let (event, tail) = rest.split_at(end);
        let (fields, other) = sse_fields(event);
        assert!(fields.len() + other.len() <= event.len() + 1);
        let (mut out, mut report) = (Vec::new(), Report::default());
        session.from_server(&fields, Timestamp::EPOCH, &mut out, &mut report);
        rest = tail;
    }
});
