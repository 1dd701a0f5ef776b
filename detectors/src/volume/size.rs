//! Sizes of JSON values, the size an argument's schema type implies, and the sizes an
//! argument usually has.

use serde_json::{Map, Value};

/// Length of `v` as compact JSON, without allocating (string escapes not counted).
pub fn json_len(v: &Value) -> u64 {
    match v {
        Value::Null => 4,
        Value::Bool(true) => 4,
        Value::Bool(false) => 5,
        Value::Number(n) => match n.as_i64() {
            Some(i) => {
                i.unsigned_abs()
                    .checked_ilog10()
                    .map_or(1, |d| u64::from(d) + 1)
                    + u64::from(i < 0)
            }
            None => 24,
        },
        Value::String(s) => s.len() as u64 + 2,
        Value::Array(a) => {
            2 + a.iter().map(json_len).sum::<u64>() + a.len().saturating_sub(1) as u64
        }
        Value::Object(o) => object_len(o),
    }
}

/// Length of an object as compact JSON.
pub fn object_len(o: &Map<String, Value>) -> u64 {
    2 + o
        .iter()
        .map(|(k, v)| k.len() as u64 + 3 + json_len(v))
        .sum::<u64>()
        + o.len().saturating_sub(1) as u64
}

/// Size of an argument's value as compared with limits: a string's own bytes,
/// anything else its JSON.
pub fn value_size(v: &Value) -> u64 {
    match v {
        Value::String(s) => s.len() as u64,
        other => json_len(other),
    }
}

/// The most bytes a top-level argument's schema lets a sensible value have, and why;
/// `None` where the type puts no bound on size (free text, objects, arrays). Declared
/// `maxLength` is the policy detector's to enforce, so it is not repeated here.
pub fn implied_cap(schema: &Value) -> Option<(u64, String)> {
    let o = schema.as_object()?;
    if let Some(values) = o.get("enum").and_then(Value::as_array) {
        let longest = values.iter().map(value_size).max()?;
        return Some((longest.max(1), "enum".into()));
    }
    if let Some(c) = o.get("const") {
        return Some((value_size(c).max(1), "const".into()));
    }
    let types: Vec<&str> = match o.get("type") {
        Some(Value::String(t)) => vec![t.as_str()],
        Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).collect(),
        _ => return None,
    };
    let mut cap: Option<(u64, String)> = None;
    for t in types {
        let this = match t {
            "boolean" => (5, "boolean".to_string()),
            "integer" | "number" => (24, t.to_string()),
            "null" => (4, "null".into()),
            "string" => match o.get("format").and_then(Value::as_str)? {
                f @ ("email" | "idn-email") => (254, format!("string/{f}")),
                f @ ("uri" | "url" | "iri" | "uri-reference") => (2048, format!("string/{f}")),
                f @ ("hostname" | "idn-hostname") => (253, format!("string/{f}")),
                "ipv4" => (15, "string/ipv4".into()),
                "ipv6" => (45, "string/ipv6".into()),
                "uuid" => (36, "string/uuid".into()),
                "date" => (10, "string/date".into()),
                "time" => (25, "string/time".into()),
                "date-time" => (35, "string/date-time".into()),
                _ => return None,
            },
            _ => return None,
        };
        if cap.as_ref().is_none_or(|c| this.0 > c.0) {
            cap = Some(this);
        }
    }
    cap
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_len_is_the_compact_length() {
        for v in [
            json!(null),
            json!(true),
            json!(false),
            json!(0),
            json!(-12345),
            json!(9_000_000_000u64),
            json!("héllo"),
            json!([1, "a", [], {}]),
            json!({"a": 1, "bb": [true, null], "c": {"d": "e"}}),
        ] {
            assert_eq!(json_len(&v), v.to_string().len() as u64, "{v}");
        }
    }

    #[test]
    fn caps_follow_the_type() {
        assert_eq!(
            implied_cap(&json!({"type": "boolean"})).map(|c| c.0),
            Some(5)
        );
        assert_eq!(
            implied_cap(&json!({"type": "string", "format": "email"})).map(|c| c.0),
            Some(254)
        );
        assert_eq!(
            implied_cap(&json!({"enum": ["low", "medium", "high"]})).map(|c| c.0),
            Some(6)
        );
        assert_eq!(implied_cap(&json!({"type": "string"})), None);
        assert_eq!(implied_cap(&json!({"type": ["integer", "string"]})), None);
        assert_eq!(implied_cap(&json!({"type": "object"})), None);
    }
}
