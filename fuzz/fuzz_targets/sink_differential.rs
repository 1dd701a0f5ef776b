//! The sink against a model of the peers it stands between (issue 19): any bytes as a
//! `tools/call`'s arguments. Where the model — Node's reading: the line decoded as
//! UTF-8 with replacement, then `JSON.parse`, lone surrogates kept, numbers as f64 —
//! reads the line, the sink either refused it with an error carrying its id, or
//! inspected exactly what the model read (the event's arguments) and forwarded the
//! original bytes unchanged. Where the model cannot read it, the peer cannot act on it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value};
use toolgate_detectors::secrets::Redactor;
use toolgate_protocol::Timestamp;
use toolgate_protocol::config::Config;
use toolgate_sink::session::{Identity, Outbound, Report, Session, finish_event};

const PREFIX: &[u8] =
    br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t","arguments":{"a":"#;
const SUFFIX: &[u8] = b"}}}";

fuzz_target!(|data: &[u8]| {
    let mut line = PREFIX.to_vec();
    line.extend_from_slice(data);
    line.extend_from_slice(SUFFIX);
    let model = Model::read(&line);

    for mode in ["refuse", "forward"] {
        let config = Config::from_toml(&format!("[sink]\nunparseable = \"{mode}\"\n"), "fuzz")
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
        let (mut out, mut report) = (Vec::new(), Report::default());
        session.from_client(&line, Timestamp::EPOCH, &mut out, &mut report);

        let Some(seen) = &model else {
            continue;
        };
        match &out[..] {
            [Outbound::ToServer(forwarded)] => {
                assert_eq!(forwarded, &line, "forwarded bytes changed");
                let event = report.events.first().expect("a forwarded call is reported");
                let event = finish_event(event.clone(), &Redactor::disabled());
                let toolgate_protocol::EventBody::ToolCall { arguments, .. } = &event.body else {
                    panic!("not a tool_call event");
                };
                let expected = seen["params"]["arguments"].as_object().expect("object");
                assert!(
                    same_map(arguments, expected),
                    "the sink inspected {arguments:?}, the peer reads {expected:?}"
                );
            }
            [Outbound::ToClient(answer)] => {
                let answer: Value = serde_json::from_slice(answer).expect("answer is JSON");
                assert_eq!(answer["id"], 1, "a refusal carries the request's id");
            }
            other => panic!("neither forwarded nor refused: {other:?}"),
        }
    }
});

fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same(a, b))
        }
        (Value::Object(x), Value::Object(y)) => same_map(x, y),
        _ => a == b,
    }
}

fn same_map(x: &Map<String, Value>, y: &Map<String, Value>) -> bool {
    x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
}

/// An independent model of `JSON.parse(buffer.toString("utf8"))`, written for clarity,
/// not speed, over UTF-16 code units as JavaScript strings are. `None` where
/// JavaScript throws, and for nesting past 100 levels (the sink flattens from 128, and
/// the model would only recurse).
struct Model {
    s: Vec<char>,
    i: usize,
    depth: usize,
}

impl Model {
    fn read(bytes: &[u8]) -> Option<Value> {
        let text = String::from_utf8_lossy(bytes);
        let mut m = Model {
            s: text.chars().collect(),
            i: 0,
            depth: 0,
        };
        let v = m.value()?;
        m.ws();
        (m.i == m.s.len()).then_some(v)
    }

    fn ws(&mut self) {
        while matches!(self.s.get(self.i), Some(' ' | '\t' | '\n' | '\r')) {
            self.i += 1;
        }
    }

    fn eat(&mut self, c: char) -> bool {
        self.ws();
        if self.s.get(self.i) == Some(&c) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    fn value(&mut self) -> Option<Value> {
        self.ws();
        match *self.s.get(self.i)? {
            '{' => {
                self.i += 1;
                self.nest()?;
                let mut map = Map::new();
                if !self.eat('}') {
                    loop {
                        self.ws();
                        if self.s.get(self.i) != Some(&'"') {
                            return None;
                        }
                        let k = self.string()?;
                        if !self.eat(':') {
                            return None;
                        }
                        let v = self.value()?;
                        map.insert(k, v);
                        if self.eat('}') {
                            break;
                        }
                        if !self.eat(',') {
                            return None;
                        }
                    }
                }
                self.depth -= 1;
                Some(Value::Object(map))
            }
            '[' => {
                self.i += 1;
                self.nest()?;
                let mut items = Vec::new();
                if !self.eat(']') {
                    loop {
                        items.push(self.value()?);
                        if self.eat(']') {
                            break;
                        }
                        if !self.eat(',') {
                            return None;
                        }
                    }
                }
                self.depth -= 1;
                Some(Value::Array(items))
            }
            '"' => self.string().map(Value::String),
            't' => self.word("true", Value::Bool(true)),
            'f' => self.word("false", Value::Bool(false)),
            'n' => self.word("null", Value::Null),
            '-' | '0'..='9' => self.number(),
            _ => None,
        }
    }

    fn nest(&mut self) -> Option<()> {
        self.depth += 1;
        (self.depth <= 100).then_some(())
    }

    fn word(&mut self, w: &str, v: Value) -> Option<Value> {
        for c in w.chars() {
            if self.s.get(self.i) != Some(&c) {
                return None;
            }
            self.i += 1;
        }
        Some(v)
    }

    /// JSON's number grammar, exactly; the value as JavaScript's double.
    fn number(&mut self) -> Option<Value> {
        let start = self.i;
        let digit = |m: &Self| m.s.get(m.i).is_some_and(char::is_ascii_digit);
        if self.s.get(self.i) == Some(&'-') {
            self.i += 1;
        }
        if self.s.get(self.i) == Some(&'0') {
            self.i += 1;
        } else if digit(self) {
            while digit(self) {
                self.i += 1;
            }
        } else {
            return None;
        }
        if self.s.get(self.i) == Some(&'.') {
            self.i += 1;
            if !digit(self) {
                return None;
            }
            while digit(self) {
                self.i += 1;
            }
        }
        if matches!(self.s.get(self.i), Some('e' | 'E')) {
            self.i += 1;
            if matches!(self.s.get(self.i), Some('+' | '-')) {
                self.i += 1;
            }
            if !digit(self) {
                return None;
            }
            while digit(self) {
                self.i += 1;
            }
        }
        let text: String = self.s[start..self.i].iter().collect();
        let f: f64 = text.parse().ok()?;
        // JavaScript's Infinity; the sink's view holds the largest finite double.
        let f = f.clamp(f64::MIN, f64::MAX);
        serde_json::Number::from_f64(f).map(Value::Number)
    }

    fn string(&mut self) -> Option<String> {
        self.i += 1;
        let mut units: Vec<u16> = Vec::new();
        loop {
            let c = *self.s.get(self.i)?;
            self.i += 1;
            match c {
                '"' => break,
                '\\' => {
                    let e = *self.s.get(self.i)?;
                    self.i += 1;
                    let unit = match e {
                        '"' => '"' as u16,
                        '\\' => '\\' as u16,
                        '/' => '/' as u16,
                        'b' => 8,
                        'f' => 12,
                        'n' => 10,
                        'r' => 13,
                        't' => 9,
                        'u' => {
                            let hex: String = self.s.get(self.i..self.i + 4)?.iter().collect();
                            if !hex.chars().all(|h| h.is_ascii_hexdigit()) {
                                return None;
                            }
                            self.i += 4;
                            u16::from_str_radix(&hex, 16).ok()?
                        }
                        _ => return None,
                    };
                    units.push(unit);
                }
                c if (c as u32) < 0x20 => return None,
                c => {
                    let mut buf = [0u16; 2];
                    units.extend_from_slice(c.encode_utf16(&mut buf));
                }
            }
        }
        // What a Rust string can hold of a JavaScript one: lone surrogates as U+FFFD.
        Some(String::from_utf16_lossy(&units))
    }
}
