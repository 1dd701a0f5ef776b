//! Any bytes as an OTLP/HTTP trace export, in both encodings: the decoders return spans
//! or an error naming where, never panic; spans re-encoded as protobuf decode to the
//! same spans (when they hold no NaN, which equals nothing); and every event the GenAI
//! mapping makes from them decodes as a `toolgate.event.v1` record.
#![no_main]

use libfuzzer_sys::fuzz_target;
use toolgate_ingest::otlp::genai::{MappingOptions, events_from_spans};
use toolgate_ingest::otlp::{AnyValue, Encoding, decode_request, proto};
use toolgate_protocol::Event;

fn has_nan(v: &AnyValue) -> bool {
    match v {
        AnyValue::Double(d) => d.is_nan(),
        AnyValue::Array(items) => items.iter().any(has_nan),
        AnyValue::KvList(pairs) => pairs.iter().any(|(_, v)| has_nan(v)),
        _ => false,
    }
}

fuzz_target!(|data: &[u8]| {
    let options = MappingOptions {
        default_server: "otel".into(),
    };
    for encoding in [Encoding::Protobuf, Encoding::Json] {
        let Ok(resources) = decode_request(data, encoding) else {
            continue;
        };
        let nan = resources.iter().any(|r| {
            r.resource.iter().any(|(_, v)| has_nan(v))
                || r.spans
                    .iter()
                    .any(|s| s.attributes.iter().any(|(_, v)| has_nan(v)))
        });
        if !nan {
            let again = decode_request(&proto::encode_request(&resources), Encoding::Protobuf)
                .expect("spans re-encoded as protobuf decode");
            assert_eq!(again, resources);
        }
        let converted = events_from_spans(&resources, &options);
        for event in &converted.events {
            Event::decode(event.to_json().as_bytes()).expect("a mapped event decodes");
        }
    }
});
