//! Hand-made event streams for the behaviour detectors' tests: events at exact
//! millisecond offsets, so boundaries (a step exactly at a span limit, a pane edge) can
//! be placed on purpose.

#![allow(dead_code)]

use serde_json::{Value, json};
use toolgate_detectors::{Detector, FindingDraft, build_detectors, registry};
use toolgate_protocol::config::Config;
use toolgate_protocol::{Event, Timestamp};

/// 2025-01-01T00:00:00Z.
pub const T0: i64 = 1_735_689_600_000_000_000;

/// The time `ms` milliseconds after [`T0`].
pub fn at(ms: i64) -> Timestamp {
    Timestamp::from_unix_nanos(T0 + ms * 1_000_000)
}

/// Builds the detector `name` from a whole config.
pub fn build(name: &str, toml: &str) -> Box<dyn Detector> {
    let config = Config::from_toml(toml, "test").unwrap_or_else(|e| panic!("{e}"));
    build_detectors(&registry(), &config)
        .unwrap_or_else(|e| panic!("{e}"))
        .into_iter()
        .find(|d| d.name() == name)
        .unwrap_or_else(|| panic!("{name} is registered"))
}

/// The error building a config gives.
pub fn build_error(toml: &str) -> String {
    let config = match Config::from_toml(toml, "test") {
        Ok(c) => c,
        Err(e) => return e.to_string(),
    };
    match build_detectors(&registry(), &config) {
        Ok(_) => panic!("expected an error for {toml}"),
        Err(e) => e.to_string(),
    }
}

/// Events of one agent and session.
pub struct Stream {
    pub agent: String,
    pub session: String,
    pub role: Option<String>,
    n: u64,
}

impl Stream {
    pub fn new(agent: &str, session: &str) -> Self {
        Stream {
            agent: agent.into(),
            session: session.into(),
            role: None,
            n: 0,
        }
    }

    pub fn with_role(mut self, role: &str) -> Self {
        self.role = Some(role.into());
        self
    }

    fn base(&mut self, kind: &str, ms: i64) -> Value {
        self.n += 1;
        let mut v = json!({
            "schema": "toolgate.event.v1", "kind": kind,
            "event_id": format!("{}-{}-{}", self.agent, self.session, self.n),
            "time": at(ms).to_string(), "agent_id": self.agent, "session_id": self.session,
        });
        if let Some(r) = &self.role {
            v["agent_role"] = json!(r);
        }
        v
    }

    pub fn call(&mut self, ms: i64, server: &str, tool: &str, arguments: Value) -> Event {
        let mut v = self.base("tool_call", ms);
        v["server"] = json!(server);
        v["tool"] = json!(tool);
        v["call_id"] = json!(format!("c{}", self.n));
        v["arguments"] = arguments;
        event(v)
    }

    pub fn result(&mut self, ms: i64, server: &str, tool: &str, text: &str) -> Event {
        let mut v = self.base("tool_result", ms);
        v["server"] = json!(server);
        v["tool"] = json!(tool);
        v["call_id"] = json!(format!("c{}", self.n));
        v["result"] = json!({"content": [{"type": "text", "text": text}]});
        event(v)
    }

    pub fn list(&mut self, ms: i64, server: &str, tools: Value) -> Event {
        let mut v = self.base("tool_list", ms);
        v["server"] = json!(server);
        v["tools"] = tools;
        event(v)
    }

    pub fn user(&mut self, ms: i64, text: &str) -> Event {
        let mut v = self.base("user_message", ms);
        v["text"] = json!(text);
        event(v)
    }
}

fn event(v: Value) -> Event {
    Event::from_value(v).unwrap_or_else(|e| panic!("{e}"))
}

/// Observes `e` and returns what the detector raised.
pub fn observe(d: &mut Box<dyn Detector>, e: &Event) -> Vec<FindingDraft> {
    let mut out = Vec::new();
    d.observe(e, &mut out);
    out
}

/// Observes every event, advancing the watermark to each event's time first.
pub fn run(d: &mut Box<dyn Detector>, events: &[Event]) -> Vec<FindingDraft> {
    let mut out = Vec::new();
    for e in events {
        d.advance(e.time, &mut out);
        d.observe(e, &mut out);
    }
    out
}

/// The rule ids of `found`.
pub fn rules(found: &[FindingDraft]) -> Vec<&str> {
    found.iter().map(|f| f.rule_id.as_str()).collect()
}

/// A gauge's value by its exported name.
pub fn gauge(d: &dyn Detector, name: &str) -> u64 {
    let mut g = Vec::new();
    d.gauges(&mut g);
    g.into_iter()
        .find(|(k, _)| k.name() == name)
        .map(|(_, v)| v)
        .unwrap_or_else(|| panic!("no gauge {name}"))
}

/// Runs `events` straight through, and again with a snapshot taken after `split` events
/// restored into a freshly built detector: the findings must be identical.
pub fn assert_restore_mid_stream(name: &str, toml: &str, events: &[Event], split: usize) {
    let mut whole = build(name, toml);
    let expected = run(&mut whole, events);
    let mut first = build(name, toml);
    let mut got = run(&mut first, &events[..split]);
    let snapshot = first.snapshot().unwrap_or_else(|e| panic!("{e}"));
    let mut second = build(name, toml);
    second.restore(&snapshot).unwrap_or_else(|e| panic!("{e}"));
    got.extend(run(&mut second, &events[split..]));
    assert!(!expected.is_empty(), "the stream should raise findings");
    assert_eq!(
        got, expected,
        "findings differ after a restore at event {split}"
    );
}
