//! The JSON encoding of OTLP/HTTP (`application/json`), as the OTLP specification
//! defines it: protobuf's JSON mapping with lowerCamelCase field names, trace and span
//! ids as hex strings (not base64), 64-bit integers as decimal strings or numbers,
//! enums as integers, `bytesValue` as base64. Unknown fields are ignored, as the
//! specification requires.

use base64::Engine as _;
use serde_json::{Map, Value};

use super::{AnyValue, Attributes, MAX_NESTING, OtlpError, ResourceSpans, Span};

fn err(path: &str, message: impl Into<String>) -> OtlpError {
    OtlpError::Json {
        path: path.to_string(),
        message: message.into(),
    }
}

fn describe(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn object<'a>(v: &'a Value, path: &str) -> Result<&'a Map<String, Value>, OtlpError> {
    v.as_object()
        .ok_or_else(|| err(path, format!("expected an object, got {}", describe(v))))
}

/// The array at `key`, empty when absent or null.
fn array<'a>(o: &'a Map<String, Value>, key: &str, path: &str) -> Result<&'a [Value], OtlpError> {
    match o.get(key) {
        None | Some(Value::Null) => Ok(&[]),
        Some(Value::Array(a)) => Ok(a),
        Some(v) => Err(err(
            &format!("{path}.{key}"),
            format!("expected an array, got {}", describe(v)),
        )),
    }
}

fn string<'a>(o: &'a Map<String, Value>, key: &str, path: &str) -> Result<&'a str, OtlpError> {
    match o.get(key) {
        None | Some(Value::Null) => Ok(""),
        Some(Value::String(s)) => Ok(s),
        Some(v) => Err(err(
            &format!("{path}.{key}"),
            format!("expected a string, got {}", describe(v)),
        )),
    }
}

/// A 64-bit integer: a decimal string or a JSON number.
fn int64(o: &Map<String, Value>, key: &str, path: &str) -> Result<Option<i128>, OtlpError> {
    let p = || format!("{path}.{key}");
    match o.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => s
            .parse::<i128>()
            .map(Some)
            .map_err(|_| err(&p(), format!("{s:?} is not an integer"))),
        Some(Value::Number(n)) => n
            .as_i64()
            .map(i128::from)
            .or_else(|| n.as_u64().map(i128::from))
            .map(Some)
            .ok_or_else(|| err(&p(), format!("{n} is not an integer"))),
        Some(v) => Err(err(
            &p(),
            format!("expected an integer, got {}", describe(v)),
        )),
    }
}

fn unsigned(o: &Map<String, Value>, key: &str, path: &str) -> Result<u64, OtlpError> {
    match int64(o, key, path)? {
        None => Ok(0),
        Some(v) => u64::try_from(v)
            .map_err(|_| err(&format!("{path}.{key}"), format!("{v} is out of range"))),
    }
}

fn hex_id(o: &Map<String, Value>, key: &str, path: &str) -> Result<Vec<u8>, OtlpError> {
    let s = string(o, key, path)?;
    if s.len() % 2 != 0 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(err(&format!("{path}.{key}"), format!("{s:?} is not hex")));
    }
    Ok((0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap_or_default())
        .collect())
}

/// Decodes an `ExportTraceServiceRequest`.
pub fn decode_request(body: &[u8]) -> Result<Vec<ResourceSpans>, OtlpError> {
    let root: Value =
        serde_json::from_slice(body).map_err(|e| err("request", format!("not JSON: {e}")))?;
    let root = object(&root, "request")?;
    let mut out = Vec::new();
    for (i, rs) in array(root, "resourceSpans", "request")?.iter().enumerate() {
        let path = format!("resourceSpans[{i}]");
        let rs = object(rs, &path)?;
        let mut resource_spans = ResourceSpans::default();
        if let Some(resource) = rs.get("resource").filter(|v| !v.is_null()) {
            let rpath = format!("{path}.resource");
            resource_spans.resource = attributes(object(resource, &rpath)?, &rpath)?;
        }
        for (j, scope) in array(rs, "scopeSpans", &path)?.iter().enumerate() {
            let spath = format!("{path}.scopeSpans[{j}]");
            let scope = object(scope, &spath)?;
            for (k, span) in array(scope, "spans", &spath)?.iter().enumerate() {
                let path = format!("{spath}.spans[{k}]");
                resource_spans
                    .spans
                    .push(decode_span(object(span, &path)?, &path)?);
            }
        }
        out.push(resource_spans);
    }
    Ok(out)
}

fn decode_span(o: &Map<String, Value>, path: &str) -> Result<Span, OtlpError> {
    let mut span = Span {
        trace_id: hex_id(o, "traceId", path)?,
        span_id: hex_id(o, "spanId", path)?,
        name: string(o, "name", path)?.to_string(),
        start_time_unix_nano: unsigned(o, "startTimeUnixNano", path)?,
        end_time_unix_nano: unsigned(o, "endTimeUnixNano", path)?,
        attributes: attributes(o, path)?,
        ..Span::default()
    };
    if let Some(status) = o.get("status").filter(|v| !v.is_null()) {
        let spath = format!("{path}.status");
        let status = object(status, &spath)?;
        span.status_message = string(status, "message", &spath)?.to_string();
        // OTLP/JSON sends enums as integers; protobuf's own JSON mapping as names.
        span.status_code = match status.get("code") {
            Some(Value::String(name)) if name.starts_with("STATUS_CODE_") => match name.as_str() {
                "STATUS_CODE_UNSET" => 0,
                "STATUS_CODE_OK" => 1,
                "STATUS_CODE_ERROR" => 2,
                other => {
                    return Err(err(
                        &format!("{spath}.code"),
                        format!("{other:?} is not a status code"),
                    ));
                }
            },
            _ => match int64(status, "code", &spath)? {
                None => 0,
                Some(c) => i32::try_from(c)
                    .map_err(|_| err(&format!("{spath}.code"), format!("{c} is out of range")))?,
            },
        };
    }
    Ok(span)
}

fn attributes(o: &Map<String, Value>, path: &str) -> Result<Attributes, OtlpError> {
    array(o, "attributes", path)?
        .iter()
        .enumerate()
        .map(|(i, kv)| key_value(kv, &format!("{path}.attributes[{i}]"), 0))
        .collect()
}

fn key_value(v: &Value, path: &str, depth: usize) -> Result<(String, AnyValue), OtlpError> {
    let o = object(v, path)?;
    let key = string(o, "key", path)?.to_string();
    let value = match o.get("value").filter(|v| !v.is_null()) {
        None => AnyValue::Empty,
        Some(v) => any_value(v, &format!("{path}.value"), depth)?,
    };
    Ok((key, value))
}

fn any_value(v: &Value, path: &str, depth: usize) -> Result<AnyValue, OtlpError> {
    if depth >= MAX_NESTING {
        return Err(err(path, format!("nested deeper than {MAX_NESTING}")));
    }
    let o = object(v, path)?;
    if let Some(s) = o.get("stringValue") {
        return s
            .as_str()
            .map(|s| AnyValue::String(s.to_string()))
            .ok_or_else(|| err(&format!("{path}.stringValue"), "expected a string"));
    }
    if let Some(b) = o.get("boolValue") {
        return b
            .as_bool()
            .map(AnyValue::Bool)
            .ok_or_else(|| err(&format!("{path}.boolValue"), "expected a boolean"));
    }
    if o.contains_key("intValue") {
        let i = int64(o, "intValue", path)?.unwrap_or_default();
        return i64::try_from(i)
            .map(AnyValue::Int)
            .map_err(|_| err(&format!("{path}.intValue"), format!("{i} is out of range")));
    }
    if let Some(d) = o.get("doubleValue") {
        return match d {
            Value::Number(n) => Ok(AnyValue::Double(n.as_f64().unwrap_or_default())),
            Value::String(s) => s.parse::<f64>().map(AnyValue::Double).map_err(|_| {
                err(
                    &format!("{path}.doubleValue"),
                    format!("{s:?} is not a number"),
                )
            }),
            other => Err(err(
                &format!("{path}.doubleValue"),
                format!("expected a number, got {}", describe(other)),
            )),
        };
    }
    if let Some(a) = o.get("arrayValue") {
        let apath = format!("{path}.arrayValue");
        return array(object(a, &apath)?, "values", &apath)?
            .iter()
            .enumerate()
            .map(|(i, v)| any_value(v, &format!("{apath}.values[{i}]"), depth + 1))
            .collect::<Result<_, _>>()
            .map(AnyValue::Array);
    }
    if let Some(l) = o.get("kvlistValue") {
        let lpath = format!("{path}.kvlistValue");
        return array(object(l, &lpath)?, "values", &lpath)?
            .iter()
            .enumerate()
            .map(|(i, v)| key_value(v, &format!("{lpath}.values[{i}]"), depth + 1))
            .collect::<Result<_, _>>()
            .map(AnyValue::KvList);
    }
    if let Some(b) = o.get("bytesValue") {
        let s = b
            .as_str()
            .ok_or_else(|| err(&format!("{path}.bytesValue"), "expected a base64 string"))?;
        return base64::engine::general_purpose::STANDARD
            .decode(s)
            .map(AnyValue::Bytes)
            .map_err(|e| err(&format!("{path}.bytesValue"), format!("not base64: {e}")));
    }
    Ok(AnyValue::Empty)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_specifications_example_shapes_decode() {
        let body = br#"{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"agent-a"}}]},
          "scopeSpans":[{"scope":{"name":"x"},"spans":[{"traceId":"5B8EFFF798038103D269B633813FC60C","spanId":"EEE19B7EC3C1B174",
          "name":"execute_tool search","kind":3,"startTimeUnixNano":"1544712660000000000","endTimeUnixNano":1544712661000000000,
          "attributes":[{"key":"n","value":{"intValue":"-3"}},{"key":"l","value":{"arrayValue":{"values":[{"boolValue":true},{"doubleValue":1.5},{"bytesValue":"AP8="}]}}},
          {"key":"kv","value":{"kvlistValue":{"values":[{"key":"a","value":{"stringValue":"b"}}]}}},{"key":"none"}],
          "status":{"code":2,"message":"failed"},"somethingNew":1}]}]}]}"#;
        let rs = decode_request(body).unwrap();
        let span = &rs[0].spans[0];
        assert_eq!(rs[0].resource[0].1, AnyValue::String("agent-a".into()));
        assert_eq!(span.trace_id.len(), 16);
        assert_eq!(
            span.span_id,
            [0xee, 0xe1, 0x9b, 0x7e, 0xc3, 0xc1, 0xb1, 0x74]
        );
        assert_eq!(span.start_time_unix_nano, 1_544_712_660_000_000_000);
        assert_eq!(span.end_time_unix_nano, 1_544_712_661_000_000_000);
        assert_eq!(span.attributes[0].1, AnyValue::Int(-3));
        assert_eq!(
            span.attributes[1].1,
            AnyValue::Array(vec![
                AnyValue::Bool(true),
                AnyValue::Double(1.5),
                AnyValue::Bytes(vec![0, 255])
            ])
        );
        assert_eq!(span.attributes[3].1, AnyValue::Empty);
        assert_eq!(
            (span.status_code, span.status_message.as_str()),
            (2, "failed")
        );
    }

    #[test]
    fn wrong_shapes_name_the_path() {
        let cases: [(&[u8], &str); 4] = [
            (b"[]", "JSON: request: expected an object, got an array"),
            (
                br#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"xyz"}]}]}]}"#,
                "JSON: resourceSpans[0].scopeSpans[0].spans[0].traceId: \"xyz\" is not hex",
            ),
            (
                br#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"startTimeUnixNano":"-1"}]}]}]}"#,
                "JSON: resourceSpans[0].scopeSpans[0].spans[0].startTimeUnixNano: -1 is out of range",
            ),
            (
                br#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"attributes":[{"key":"k","value":{"intValue":true}}]}]}]}]}"#,
                "JSON: resourceSpans[0].scopeSpans[0].spans[0].attributes[0].value.intValue: expected an integer, got a boolean",
            ),
        ];
        for (body, want) in cases {
            assert_eq!(decode_request(body).unwrap_err().to_string(), want);
        }
    }
}
