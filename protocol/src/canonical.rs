//! RFC 8785 JSON Canonicalization Scheme (JCS): the byte form that fingerprints and
//! signatures are computed over, so that key order, whitespace and number spelling
//! never change a fingerprint or break a signature.
//!
//! Object members are sorted by the UTF-16 code units of their names; strings use the
//! minimal ECMAScript escapes; numbers are printed as ECMAScript's `Number.toString`
//! prints the IEEE-754 double they denote. Integers outside ±2^53 are therefore
//! printed as the nearest double, exactly as a JavaScript verifier would see them.

use serde_json::Value;

/// The canonical form of `value`.
pub fn to_canonical_string(value: &Value) -> String {
    let mut out = String::new();
    write_value(value, &mut out);
    out
}

fn write_value(value: &Value, out: &mut String) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => {
            let f = if let Some(i) = n.as_i64() {
                i as f64
            } else if let Some(u) = n.as_u64() {
                u as f64
            } else {
                n.as_f64().unwrap_or(0.0)
            };
            write_number(f, out);
        }
        Value::String(s) => write_string(s, out),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_value(item, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut members: Vec<(&String, &Value)> = map.iter().collect();
            members.sort_by(|a, b| a.0.encode_utf16().cmp(b.0.encode_utf16()));
            out.push('{');
            for (i, (k, v)) in members.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_string(k, out);
                out.push(':');
                write_value(v, out);
            }
            out.push('}');
        }
    }
}

fn write_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{8}' => out.push_str("\\b"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\u{c}' => out.push_str("\\f"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x20 => {
                out.push_str(&format!("\\u{:04x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// ECMAScript `Number.prototype.toString()` for a finite double (ECMA-262 7.1.12.1).
fn write_number(f: f64, out: &mut String) {
    if f == 0.0 || !f.is_finite() {
        // JSON has no NaN or infinity; serde_json never yields them. -0 prints as 0.
        out.push('0');
        return;
    }
    if f < 0.0 {
        out.push('-');
    }
    // Rust's `{:e}` prints the shortest digits that round-trip: "d.ddde±x".
    let sci = format!("{:e}", f.abs());
    let (mantissa, exp) = sci.split_once('e').unwrap_or((sci.as_str(), "0"));
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    let k = digits.len() as i32;
    // n is the position of the decimal point relative to the digit string.
    let n = exp.parse::<i32>().unwrap_or(0) + 1;
    if k <= n && n <= 21 {
        out.push_str(&digits);
        out.extend(std::iter::repeat_n('0', (n - k) as usize));
    } else if 0 < n && n <= 21 {
        out.push_str(&digits[..n as usize]);
        out.push('.');
        out.push_str(&digits[n as usize..]);
    } else if -6 < n && n <= 0 {
        out.push_str("0.");
        out.extend(std::iter::repeat_n('0', (-n) as usize));
        out.push_str(&digits);
    } else {
        out.push_str(&digits[..1]);
        if k > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        out.push('e');
        out.push(if n > 0 { '+' } else { '-' });
        out.push_str(&(n - 1).abs().to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn num(f: f64) -> String {
        let mut s = String::new();
        write_number(f, &mut s);
        s
    }

    #[test]
    fn numbers_follow_ecmascript() {
        // Values from RFC 8785 appendix B and ECMAScript behaviour.
        // Inputs as RFC 8785 writes them, parsed as a JSON reader would.
        let cases: [(&str, &str); 16] = [
            ("0", "0"),
            ("-0", "0"),
            ("1", "1"),
            ("-1.5", "-1.5"),
            ("4.50", "4.5"),
            ("2e-3", "0.002"),
            ("1e-6", "0.000001"),
            ("1e-7", "1e-7"),
            ("0.000000000000000000000000001", "1e-27"),
            ("333333333.33333329", "333333333.3333333"),
            ("1e21", "1e+21"),
            ("1e20", "100000000000000000000"),
            ("1E30", "1e+30"),
            ("9007199254740992", "9007199254740992"),
            ("5e-324", "5e-324"),
            ("1.7976931348623157e308", "1.7976931348623157e+308"),
        ];
        for (input, want) in cases {
            let f: f64 = input.parse().unwrap();
            assert_eq!(num(f), want, "for {input}");
        }
    }

    #[test]
    fn rfc8785_example_object() {
        // RFC 8785 section 3.2.2 input, parsed as JSON.
        let input = r#"{
          "numbers": [333333333.33333329, 1E30, 4.50, 2e-3, 0.000000000000000000000000001],
          "string": "\u20ac$\u000F\u000aA'\u0042\u0022\u005c\\\"\/",
          "literals": [null, true, false]
        }"#;
        let v: Value = serde_json::from_str(input).unwrap();
        assert_eq!(
            to_canonical_string(&v),
            r#"{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],"string":"€$\u000f\nA'B\"\\\\\"/"}"#
        );
    }

    #[test]
    fn keys_sort_by_utf16_code_units() {
        // RFC 8785 section 3.2.3: U+10000 sorts before U+E000 in UTF-16, after it in UTF-8.
        let v = json!({"\u{e000}": 1, "\u{10000}": 2, "a": 3, "A": 4, "\u{80}": 5});
        assert_eq!(
            to_canonical_string(&v),
            "{\"A\":4,\"a\":3,\"\u{80}\":5,\"\u{10000}\":2,\"\u{e000}\":1}"
        );
    }

    #[test]
    fn key_order_and_whitespace_do_not_matter() {
        let a: Value =
            serde_json::from_str(r#"{"b": [1, 2.0, {"y": 1, "x": 2}], "a": "s"}"#).unwrap();
        let b: Value = serde_json::from_str(r#"{"a":"s","b":[1,2,{"x":2,"y":1}]}"#).unwrap();
        assert_eq!(to_canonical_string(&a), to_canonical_string(&b));
    }

    proptest! {
        #[test]
        fn numbers_round_trip(f in any::<f64>().prop_filter("finite", |f| f.is_finite())) {
            let s = num(f);
            let back: f64 = s.parse().unwrap();
            prop_assert_eq!(back, if f == 0.0 { 0.0 } else { f });
        }

        #[test]
        fn canonical_form_is_a_fixed_point(s in "\\PC{0,30}", n in any::<i32>(), f in -1e12f64..1e12) {
            let v = json!({"s": s, "n": n, "f": f, "nested": [{"k": s}]});
            let once = to_canonical_string(&v);
            let reparsed: Value = serde_json::from_str(&once).unwrap();
            prop_assert_eq!(to_canonical_string(&reparsed), once);
        }
    }
}
