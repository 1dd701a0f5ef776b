//! The injection classifier's two decoders of outside input: any text it scores (a
//! tool result, a definition's text) and any model file a config names. Scoring never
//! panics, tokens and the best window lie on character boundaries inside the text, and
//! a model file either decodes or is refused with an error, and one that decodes
//! writes back to a file that decodes too.
#![no_main]

use libfuzzer_sys::fuzz_target;
use toolgate_detectors::injection::analysis::Context;
use toolgate_detectors::injection::classifier::{Model, tokens};

fuzz_target!(|data: &[u8]| {
    let Ok(input) = std::str::from_utf8(data) else {
        return;
    };
    for t in tokens(input) {
        assert!(t.start < t.end && t.end <= input.len());
        assert!(input.is_char_boundary(t.start) && input.is_char_boundary(t.end));
    }
    if let Ok(model) = Model::shipped() {
        for context in [Context::Result, Context::Description] {
            if let Some(best) = model.score(input, context) {
                assert!(best.window.end <= input.len());
                assert!(input.is_char_boundary(best.window.start));
                assert!(input.is_char_boundary(best.window.end));
                assert!(best.window_index < best.windows);
                let _ = model.explain(input, best.window, 8);
            }
        }
    }
    if let Ok(model) = Model::from_json(input) {
        let again = Model::from_json(&model.to_json()).expect("a written model reads back");
        let nonzero = |m: &Model| m.weights.iter().filter(|w| **w != 0.0).count();
        assert!(nonzero(&again) <= nonzero(&model));
    }
});
