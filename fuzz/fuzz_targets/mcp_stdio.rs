//! Any bytes from either side of the stdio proxy, split at any point: the framer gives
//! back exactly the bytes it was fed, and the session answers every line without a
//! panic, forwarding what it does not refuse unchanged, and every event it queues is
//! either refused by validation or decodes again once written.
#![no_main]

use libfuzzer_sys::fuzz_target;
use toolgate_detectors::secrets::Redactor;
use toolgate_protocol::Timestamp;
use toolgate_protocol::config::Config;
use toolgate_sink::framing::{Frame, LineFramer};
use toolgate_sink::session::{Identity, Outbound, Report, Session, finish_event};

fuzz_target!(|data: &[u8]| {
    let Some((&split, data)) = data.split_first() else {
        return;
    };
    let config = Config::from_toml(
        "[detectors.policy]\n[[detectors.policy.rules]]\nid = \"d\"\ntools = [\"x*\"]\neffect = \"deny\"\n\
         [detectors.definitions]\n",
        "fuzz",
    )
    .expect("config");
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
    let redactor = Redactor::disabled();

    let cut = usize::from(split).min(data.len());
    let mut framer = LineFramer::new(256);
    let mut frames = Vec::new();
    framer.push(&data[..cut], &mut frames);
    framer.push(&data[cut..], &mut frames);
    framer.finish(&mut frames);

    let mut rebuilt = Vec::new();
    for (i, frame) in frames.iter().enumerate() {
        match frame {
            Frame::Message(line) => {
                rebuilt.extend_from_slice(line);
                rebuilt.push(b'\n');
                let (mut out, mut report) = (Vec::new(), Report::default());
                if i % 2 == 0 {
                    session.from_client(line, Timestamp::EPOCH, &mut out, &mut report);
                    if let [Outbound::ToServer(forwarded)] = &out[..] {
                        if serde_json::from_slice::<serde_json::Value>(line)
                            .is_ok_and(|v| !v.is_array())
                        {
                            assert_eq!(forwarded, line);
                        }
                    }
                } else {
                    session.from_server(line, Timestamp::EPOCH, &mut out, &mut report);
                }
                // Every event the session queues (it checked them) must decode again,
                // redacted as the writer sends it, to itself.
                for e in report.events {
                    let event = finish_event(e, &redactor);
                    let decoded = toolgate_protocol::Event::decode(event.to_json().as_bytes())
                        .expect("written events decode");
                    assert_eq!(decoded, event, "an event changed on the wire");
                }
            }
            Frame::Oversized { bytes, last } => {
                rebuilt.extend_from_slice(bytes);
                if *last {
                    rebuilt.push(b'\n');
                }
            }
        }
    }
    // The framer ends the last line with a newline even if the input did not.
    if !data.is_empty() && !data.ends_with(b"\n") {
        rebuilt.pop();
    }
    assert_eq!(rebuilt, data);
});
