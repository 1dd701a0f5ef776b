//! The protobuf encoding of OTLP/HTTP (`application/x-protobuf`): a decoder for the
//! part of `opentelemetry.proto.collector.trace.v1.ExportTraceServiceRequest` that the
//! mapping reads, written against the protobuf wire format (varints, length-delimited
//! fields, fixed 32/64-bit fields). Unknown fields are skipped, as protobuf requires;
//! a known field with the wrong wire type, a truncated value, invalid UTF-8 in a string
//! or nesting past [`MAX_NESTING`] is an error naming where it is.
//!
//! Also the two small responses a receiver sends (`ExportTraceServiceResponse`,
//! `google.rpc.Status`), encoded.

use super::{AnyValue, MAX_NESTING, OtlpError, ResourceSpans, Span};

const VARINT: u8 = 0;
const I64: u8 = 1;
const LEN: u8 = 2;
const I32: u8 = 5;

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

type R<T> = Result<T, String>;

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    fn done(&self) -> bool {
        self.pos >= self.buf.len()
    }

    fn varint(&mut self) -> R<u64> {
        let mut value = 0u64;
        for shift in (0..70).step_by(7) {
            let byte = *self
                .buf
                .get(self.pos)
                .ok_or_else(|| "truncated varint".to_string())?;
            self.pos += 1;
            if shift == 63 && byte > 1 {
                return Err("varint longer than 64 bits".into());
            }
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err("varint longer than 10 bytes".into())
    }

    fn fixed<const N: usize>(&mut self) -> R<[u8; N]> {
        let end = self.pos.checked_add(N).filter(|&e| e <= self.buf.len());
        let end = end.ok_or_else(|| format!("truncated {}-bit value", N * 8))?;
        let mut out = [0u8; N];
        out.copy_from_slice(&self.buf[self.pos..end]);
        self.pos = end;
        Ok(out)
    }

    fn len_delimited(&mut self) -> R<&'a [u8]> {
        let len = usize::try_from(self.varint()?).map_err(|_| "length too large")?;
        let end = self
            .pos
            .checked_add(len)
            .filter(|&e| e <= self.buf.len())
            .ok_or_else(|| format!("length {len} runs past the end of the message"))?;
        let out = &self.buf[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    /// The next field number and wire type.
    fn key(&mut self) -> R<(u64, u8)> {
        let key = self.varint()?;
        let field = key >> 3;
        if field == 0 {
            return Err("field number 0".into());
        }
        Ok((field, (key & 7) as u8))
    }

    fn skip(&mut self, wire_type: u8) -> R<()> {
        match wire_type {
            VARINT => self.varint().map(drop),
            I64 => self.fixed::<8>().map(drop),
            LEN => self.len_delimited().map(drop),
            I32 => self.fixed::<4>().map(drop),
            other => Err(format!("wire type {other} (groups are not supported)")),
        }
    }
}

fn expect(wire_type: u8, wanted: u8, field: &str) -> R<()> {
    if wire_type == wanted {
        Ok(())
    } else {
        Err(format!("{field}: wire type {wire_type}, expected {wanted}"))
    }
}

fn string(bytes: &[u8], field: &str) -> R<String> {
    String::from_utf8(bytes.to_vec()).map_err(|_| format!("{field}: not UTF-8"))
}

/// Runs `f` on each field of a message, prefixing errors with the path.
fn fields<'a>(
    buf: &'a [u8],
    path: &str,
    mut f: impl FnMut(&mut Reader<'a>, u64, u8) -> Result<bool, OtlpError>,
) -> Result<(), OtlpError> {
    let mut r = Reader::new(buf);
    let err = |message: String| OtlpError::Protobuf {
        path: path.to_string(),
        message,
    };
    while !r.done() {
        let (field, wire_type) = r.key().map_err(err)?;
        if !f(&mut r, field, wire_type)? {
            r.skip(wire_type).map_err(err)?;
        }
    }
    Ok(())
}

fn at(path: &str, message: String) -> OtlpError {
    OtlpError::Protobuf {
        path: path.to_string(),
        message,
    }
}

/// Decodes an `ExportTraceServiceRequest`.
pub fn decode_request(body: &[u8]) -> Result<Vec<ResourceSpans>, OtlpError> {
    let mut out = Vec::new();
    fields(body, "request", |r, field, wt| {
        if field != 1 {
            return Ok(false);
        }
        let path = format!("resource_spans[{}]", out.len());
        expect(wt, LEN, "resource_spans").map_err(|m| at(&path, m))?;
        let bytes = r.len_delimited().map_err(|m| at(&path, m))?;
        out.push(resource_spans(bytes, &path)?);
        Ok(true)
    })?;
    Ok(out)
}

fn resource_spans(buf: &[u8], path: &str) -> Result<ResourceSpans, OtlpError> {
    let mut rs = ResourceSpans::default();
    let mut scopes = 0;
    fields(buf, path, |r, field, wt| match field {
        1 => {
            let path = format!("{path}.resource");
            expect(wt, LEN, "resource").map_err(|m| at(&path, m))?;
            let bytes = r.len_delimited().map_err(|m| at(&path, m))?;
            fields(bytes, &path, |r, field, wt| {
                if field != 1 {
                    return Ok(false);
                }
                let path = format!("{path}.attributes[{}]", rs.resource.len());
                expect(wt, LEN, "attributes").map_err(|m| at(&path, m))?;
                let bytes = r.len_delimited().map_err(|m| at(&path, m))?;
                rs.resource.push(key_value(bytes, &path, 0)?);
                Ok(true)
            })?;
            Ok(true)
        }
        2 => {
            let path = format!("{path}.scope_spans[{scopes}]");
            scopes += 1;
            expect(wt, LEN, "scope_spans").map_err(|m| at(&path, m))?;
            let bytes = r.len_delimited().map_err(|m| at(&path, m))?;
            let mut n = 0;
            fields(bytes, &path, |r, field, wt| {
                if field != 2 {
                    return Ok(false);
                }
                let path = format!("{path}.spans[{n}]");
                n += 1;
                expect(wt, LEN, "spans").map_err(|m| at(&path, m))?;
                let bytes = r.len_delimited().map_err(|m| at(&path, m))?;
                rs.spans.push(span(bytes, &path)?);
                Ok(true)
            })?;
            Ok(true)
        }
        _ => Ok(false),
    })?;
    Ok(rs)
}

fn span(buf: &[u8], path: &str) -> Result<Span, OtlpError> {
    let mut s = Span::default();
    fields(buf, path, |r, field, wt| {
        let e = |m: String| at(path, m);
        match field {
            1 | 2 | 5 => {
                let name = ["", "trace_id", "span_id", "", "", "name"][field as usize];
                expect(wt, LEN, name).map_err(e)?;
                let bytes = r.len_delimited().map_err(e)?;
                match field {
                    1 => s.trace_id = bytes.to_vec(),
                    2 => s.span_id = bytes.to_vec(),
                    _ => s.name = string(bytes, "name").map_err(e)?,
                }
            }
            7 | 8 => {
                expect(wt, I64, "start/end time").map_err(e)?;
                let v = u64::from_le_bytes(r.fixed::<8>().map_err(e)?);
                if field == 7 {
                    s.start_time_unix_nano = v;
                } else {
                    s.end_time_unix_nano = v;
                }
            }
            9 => {
                let path = format!("{path}.attributes[{}]", s.attributes.len());
                expect(wt, LEN, "attributes").map_err(|m| at(&path, m))?;
                let bytes = r.len_delimited().map_err(|m| at(&path, m))?;
                s.attributes.push(key_value(bytes, &path, 0)?);
            }
            15 => {
                let path = format!("{path}.status");
                expect(wt, LEN, "status").map_err(|m| at(&path, m))?;
                let bytes = r.len_delimited().map_err(|m| at(&path, m))?;
                fields(bytes, &path, |r, field, wt| {
                    let e = |m: String| at(&path, m);
                    match field {
                        2 => {
                            expect(wt, LEN, "message").map_err(e)?;
                            let b = r.len_delimited().map_err(e)?;
                            s.status_message = string(b, "message").map_err(e)?;
                        }
                        3 => {
                            expect(wt, VARINT, "code").map_err(e)?;
                            s.status_code = r.varint().map_err(e)? as i32;
                        }
                        _ => return Ok(false),
                    }
                    Ok(true)
                })?;
            }
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    Ok(s)
}

fn key_value(buf: &[u8], path: &str, depth: usize) -> Result<(String, AnyValue), OtlpError> {
    let mut key = String::new();
    let mut value = AnyValue::Empty;
    fields(buf, path, |r, field, wt| {
        let e = |m: String| at(path, m);
        match field {
            1 => {
                expect(wt, LEN, "key").map_err(e)?;
                key = string(r.len_delimited().map_err(e)?, "key").map_err(e)?;
            }
            2 => {
                expect(wt, LEN, "value").map_err(e)?;
                let bytes = r.len_delimited().map_err(e)?;
                value = any_value(bytes, &format!("{path}.value"), depth)?;
            }
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    Ok((key, value))
}

fn any_value(buf: &[u8], path: &str, depth: usize) -> Result<AnyValue, OtlpError> {
    if depth >= MAX_NESTING {
        return Err(at(path, format!("nested deeper than {MAX_NESTING}")));
    }
    let mut value = AnyValue::Empty;
    fields(buf, path, |r, field, wt| {
        let e = |m: String| at(path, m);
        value = match field {
            1 => {
                expect(wt, LEN, "string_value").map_err(e)?;
                AnyValue::String(string(r.len_delimited().map_err(e)?, "string_value").map_err(e)?)
            }
            2 => {
                expect(wt, VARINT, "bool_value").map_err(e)?;
                AnyValue::Bool(r.varint().map_err(e)? != 0)
            }
            3 => {
                expect(wt, VARINT, "int_value").map_err(e)?;
                AnyValue::Int(r.varint().map_err(e)? as i64)
            }
            4 => {
                expect(wt, I64, "double_value").map_err(e)?;
                AnyValue::Double(f64::from_le_bytes(r.fixed::<8>().map_err(e)?))
            }
            5 | 6 => {
                expect(wt, LEN, "array_value/kvlist_value").map_err(e)?;
                let bytes = r.len_delimited().map_err(e)?;
                let mut items = Vec::new();
                let mut pairs = Vec::new();
                fields(bytes, path, |r, f, wt| {
                    if f != 1 {
                        return Ok(false);
                    }
                    let path = format!("{path}.values[{}]", items.len() + pairs.len());
                    expect(wt, LEN, "values").map_err(|m| at(&path, m))?;
                    let b = r.len_delimited().map_err(|m| at(&path, m))?;
                    if field == 5 {
                        items.push(any_value(b, &path, depth + 1)?);
                    } else {
                        pairs.push(key_value(b, &path, depth + 1)?);
                    }
                    Ok(true)
                })?;
                if field == 5 {
                    AnyValue::Array(items)
                } else {
                    AnyValue::KvList(pairs)
                }
            }
            7 => {
                expect(wt, LEN, "bytes_value").map_err(e)?;
                AnyValue::Bytes(r.len_delimited().map_err(e)?.to_vec())
            }
            _ => return Ok(false),
        };
        Ok(true)
    })?;
    Ok(value)
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_len(out: &mut Vec<u8>, field: u64, bytes: &[u8]) {
    put_varint(out, (field << 3) | u64::from(LEN));
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// An `ExportTraceServiceResponse`: empty when nothing was rejected, otherwise with
/// `partial_success` (`rejected_spans`, `error_message`).
pub fn encode_response(rejected_spans: u64, error_message: &str) -> Vec<u8> {
    if rejected_spans == 0 && error_message.is_empty() {
        return Vec::new();
    }
    let mut partial = Vec::new();
    put_varint(&mut partial, 1 << 3);
    put_varint(&mut partial, rejected_spans);
    if !error_message.is_empty() {
        put_len(&mut partial, 2, error_message.as_bytes());
    }
    let mut out = Vec::new();
    put_len(&mut out, 1, &partial);
    out
}

/// A `google.rpc.Status` with `code` and `message`, the body of an OTLP/HTTP error.
pub fn encode_status(code: i32, message: &str) -> Vec<u8> {
    let mut out = Vec::new();
    put_varint(&mut out, 1 << 3);
    put_varint(&mut out, code as u64);
    put_len(&mut out, 2, message.as_bytes());
    out
}

/// Test and fuzz support: encodes a request from [`ResourceSpans`], so decoding can be
/// checked against a known encoding.
pub fn encode_request(resources: &[ResourceSpans]) -> Vec<u8> {
    fn any(v: &AnyValue) -> Vec<u8> {
        let mut out = Vec::new();
        match v {
            AnyValue::String(s) => put_len(&mut out, 1, s.as_bytes()),
            AnyValue::Bool(b) => {
                put_varint(&mut out, 2 << 3);
                put_varint(&mut out, u64::from(*b));
            }
            AnyValue::Int(i) => {
                put_varint(&mut out, 3 << 3);
                put_varint(&mut out, *i as u64);
            }
            AnyValue::Double(d) => {
                put_varint(&mut out, (4 << 3) | u64::from(I64));
                out.extend_from_slice(&d.to_le_bytes());
            }
            AnyValue::Array(items) => {
                let mut inner = Vec::new();
                for i in items {
                    put_len(&mut inner, 1, &any(i));
                }
                put_len(&mut out, 5, &inner);
            }
            AnyValue::KvList(pairs) => {
                let mut inner = Vec::new();
                for p in pairs {
                    put_len(&mut inner, 1, &kv(p));
                }
                put_len(&mut out, 6, &inner);
            }
            AnyValue::Bytes(b) => put_len(&mut out, 7, b),
            AnyValue::Empty => {}
        }
        out
    }
    fn kv((k, v): &(String, AnyValue)) -> Vec<u8> {
        let mut out = Vec::new();
        put_len(&mut out, 1, k.as_bytes());
        put_len(&mut out, 2, &any(v));
        out
    }
    let mut out = Vec::new();
    for rs in resources {
        let mut resource = Vec::new();
        for a in &rs.resource {
            put_len(&mut resource, 1, &kv(a));
        }
        let mut scope = Vec::new();
        for s in &rs.spans {
            let mut span = Vec::new();
            put_len(&mut span, 1, &s.trace_id);
            put_len(&mut span, 2, &s.span_id);
            put_len(&mut span, 5, s.name.as_bytes());
            put_varint(&mut span, (7 << 3) | u64::from(I64));
            span.extend_from_slice(&s.start_time_unix_nano.to_le_bytes());
            put_varint(&mut span, (8 << 3) | u64::from(I64));
            span.extend_from_slice(&s.end_time_unix_nano.to_le_bytes());
            for a in &s.attributes {
                put_len(&mut span, 9, &kv(a));
            }
            let mut status = Vec::new();
            put_len(&mut status, 2, s.status_message.as_bytes());
            put_varint(&mut status, 3 << 3);
            put_varint(&mut status, s.status_code as u64);
            put_len(&mut span, 15, &status);
            put_len(&mut scope, 2, &span);
        }
        let mut body = Vec::new();
        put_len(&mut body, 1, &resource);
        put_len(&mut body, 2, &scope);
        put_len(&mut out, 1, &body);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<ResourceSpans> {
        vec![ResourceSpans {
            resource: vec![("service.name".into(), AnyValue::String("agent".into()))],
            spans: vec![Span {
                trace_id: vec![1; 16],
                span_id: vec![2; 8],
                name: "execute_tool send".into(),
                start_time_unix_nano: 1_740_823_200_000_000_000,
                end_time_unix_nano: 1_740_823_200_500_000_000,
                attributes: vec![
                    ("n".into(), AnyValue::Int(-5)),
                    ("d".into(), AnyValue::Double(0.25)),
                    ("b".into(), AnyValue::Bool(true)),
                    (
                        "nested".into(),
                        AnyValue::KvList(vec![(
                            "a".into(),
                            AnyValue::Array(vec![
                                AnyValue::String("x".into()),
                                AnyValue::Bytes(vec![0, 255]),
                            ]),
                        )]),
                    ),
                ],
                status_code: 2,
                status_message: "boom".into(),
            }],
        }]
    }

    #[test]
    fn a_request_round_trips() {
        let spans = sample();
        assert_eq!(decode_request(&encode_request(&spans)).unwrap(), spans);
    }

    /// A request encoded by Google's protobuf runtime (the OpenTelemetry Python SDK's
    /// `opentelemetry-proto`), and the same in JSON; both also seed the fuzzer.
    #[test]
    fn a_request_encoded_by_googles_protobuf_decodes() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/otlp/execute_tool.pb");
        let body = std::fs::read(path).unwrap();
        let rs = decode_request(&body).unwrap();
        let span = &rs[0].spans[0];
        assert_eq!(
            rs[0].resource,
            vec![("service.name".into(), AnyValue::String("agent-a".into()))]
        );
        assert_eq!(span.trace_id, (0..16).collect::<Vec<u8>>());
        assert_eq!(span.span_id, (0..8).collect::<Vec<u8>>());
        assert_eq!(span.name, "execute_tool send_email");
        assert_eq!(span.start_time_unix_nano, 1_740_823_200_000_000_000);
        assert_eq!(span.end_time_unix_nano, 1_740_823_200_500_000_000);
        assert_eq!(
            (span.status_code, span.status_message.as_str()),
            (2, "failed")
        );
        assert_eq!(
            span.attributes[5].1,
            AnyValue::Array(vec![
                AnyValue::Int(-3),
                AnyValue::Double(1.5),
                AnyValue::Bool(true)
            ])
        );
        assert_eq!(
            span.attributes[6].1,
            AnyValue::KvList(vec![("a".into(), AnyValue::Bytes(vec![0, 255]))])
        );
        let json_path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/fixtures/otlp/execute_tool.json"
        );
        let from_json =
            super::super::json::decode_request(&std::fs::read(json_path).unwrap()).unwrap();
        assert_eq!(
            from_json, rs,
            "both encodings of one request decode the same"
        );
    }

    #[test]
    fn unknown_fields_are_skipped() {
        let mut body = encode_request(&sample());
        // Field 99 as a varint, a fixed32 and a length-delimited value.
        for extra in [
            vec![0x98, 0x06, 0x01],
            vec![0x9d, 0x06, 1, 2, 3, 4],
            vec![0x9a, 0x06, 0x02, b'h', b'i'],
        ] {
            body.extend_from_slice(&extra);
        }
        assert_eq!(decode_request(&body).unwrap(), sample());
    }

    #[test]
    fn damage_is_an_error_that_says_where() {
        let body = encode_request(&sample());
        let cut = decode_request(&body[..body.len() - 3]).unwrap_err();
        assert!(cut.to_string().contains("resource_spans[0]"), "{cut}");
        // A known field with the wrong wire type.
        let wrong = decode_request(&[0x08, 0x01]).unwrap_err();
        assert_eq!(
            wrong.to_string(),
            "protobuf: resource_spans[0]: resource_spans: wire type 0, expected 2"
        );
        // Invalid UTF-8 in the span name.
        let mut spans = sample();
        spans[0].spans[0].name = "\u{1}".into();
        let mut body = encode_request(&spans);
        let name_at = body
            .windows(2)
            .position(|w| w == [0x2a, 0x01])
            .expect("name field");
        body[name_at + 2] = 0xff;
        let bad = decode_request(&body).unwrap_err().to_string();
        assert!(
            bad.contains("spans[0]") && bad.contains("name: not UTF-8"),
            "{bad}"
        );
    }

    #[test]
    fn nesting_is_bounded() {
        let mut v = AnyValue::String("deep".into());
        for _ in 0..(MAX_NESTING + 5) {
            v = AnyValue::Array(vec![v]);
        }
        let mut spans = sample();
        spans[0].spans[0].attributes = vec![("deep".into(), v)];
        let err = decode_request(&encode_request(&spans)).unwrap_err();
        assert!(err.to_string().contains("nested deeper than 32"), "{err}");
    }

    #[test]
    fn responses_encode_as_protobuf() {
        assert!(encode_response(0, "").is_empty());
        assert_eq!(
            encode_response(2, "no"),
            [0x0a, 0x06, 0x08, 0x02, 0x12, 0x02, b'n', b'o']
        );
        assert_eq!(encode_status(3, "x"), [0x08, 0x03, 0x12, 0x01, b'x']);
    }
}
