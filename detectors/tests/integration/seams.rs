//! The detector seam: folding, deterministic ids, emission policies, caps, snapshot and
//! restore, and building from config. A small detector defined here exercises it; real
//! detectors have their own corpus tests.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use toolgate_detectors::{
    BuildError, Detector, DetectorFactory, EmitPolicy, FindingDraft, FindingFolder, Pipeline,
    StateError, build_detectors, settings,
};
use toolgate_protocol::config::Config;
use toolgate_protocol::event::EventBody;
use toolgate_protocol::{
    DetectorKind, Duration, Event, Finding, FindingAction, FindingOutcome, Severity, Timestamp,
};

/// Flags every call to `tool`, and every call that got no result within `timeout`.
struct Watch {
    tool: String,
    timeout: Duration,
    pending: BTreeMap<String, (Timestamp, Event)>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WatchSettings {
    tool: String,
    #[serde(default = "five_seconds")]
    timeout: Duration,
}

fn five_seconds() -> Duration {
    Duration::from_secs(5)
}

#[derive(Serialize, Deserialize)]
struct WatchState {
    pending: Vec<(String, Timestamp, String)>,
}

impl Detector for Watch {
    fn name(&self) -> &'static str {
        "watch"
    }

    fn observe(&mut self, event: &Event, out: &mut Vec<FindingDraft>) {
        match &event.body {
            EventBody::ToolCall {
                tool,
                call_id,
                arguments,
                ..
            } => {
                if *tool == self.tool {
                    let draft = FindingDraft::about(DetectorKind::Rule, "watched_tool", event)
                        .describe("watched tool called", format!("{tool} was called"))
                        .rate(Severity::Low, 20, 0.9);
                    // `{"block": true}` makes the occurrence ask for a block.
                    out.push(if arguments.get("block") == Some(&json!(true)) {
                        draft.block()
                    } else {
                        draft
                    });
                }
                self.pending
                    .insert(call_id.clone(), (event.time, event.clone()));
            }
            EventBody::ToolResult { call_id, .. } => {
                self.pending.remove(call_id);
            }
            _ => {}
        }
    }

    fn advance(&mut self, watermark: Timestamp, out: &mut Vec<FindingDraft>) {
        let expired: Vec<String> = self
            .pending
            .iter()
            .filter(|(_, (t, _))| t.saturating_add(self.timeout) <= watermark)
            .map(|(k, _)| k.clone())
            .collect();
        for call_id in expired {
            if let Some((_, event)) = self.pending.remove(&call_id) {
                out.push(
                    FindingDraft::about(DetectorKind::Rule, "no_result", &event)
                        .describe("call without result", "no result within the timeout")
                        .rate(Severity::High, 70, 0.6)
                        .block(),
                );
            }
        }
    }

    fn snapshot(&self) -> Result<Vec<u8>, StateError> {
        let state = WatchState {
            pending: self
                .pending
                .iter()
                .map(|(k, (t, e))| (k.clone(), *t, e.to_json()))
                .collect(),
        };
        serde_json::to_vec(&state).map_err(|e| StateError::Encode {
            what: "watch".into(),
            message: e.to_string(),
        })
    }

    fn restore(&mut self, snapshot: &[u8]) -> Result<(), StateError> {
        let err = |message: String| StateError::Decode {
            what: "watch".into(),
            message,
        };
        let state: WatchState = serde_json::from_slice(snapshot).map_err(|e| err(e.to_string()))?;
        self.pending.clear();
        for (k, t, json) in state.pending {
            let e = Event::decode(json.as_bytes()).map_err(|e| err(e.to_string()))?;
            self.pending.insert(k, (t, e));
        }
        Ok(())
    }
}

fn factories() -> Vec<DetectorFactory> {
    vec![DetectorFactory {
        name: "watch",
        kind: DetectorKind::Rule,
        summary: "test detector",
        build: |_config, table| {
            let s: WatchSettings = settings("watch", table)?;
            Ok(Box::new(Watch {
                tool: s.tool,
                timeout: s.timeout,
                pending: BTreeMap::new(),
            }))
        },
        load_files: |_table, _files| Ok(()),
    }]
}

fn config(text: &str) -> Config {
    Config::from_toml(text, "test.toml").unwrap()
}

fn pipeline(policy: EmitPolicy, window: Duration, max_open: usize) -> Pipeline {
    let detectors = build_detectors(
        &factories(),
        &config("[detectors.watch]\ntool = \"send\"\n"),
    )
    .unwrap();
    Pipeline::new(detectors, FindingFolder::new(window, max_open, 4, policy))
}

fn at(secs: i64) -> Timestamp {
    Timestamp::parse("2025-01-01T00:00:00Z")
        .unwrap()
        .saturating_add(Duration::from_secs(secs))
}

fn call(secs: i64, session: &str, call_id: &str, tool: &str) -> Event {
    Event::decode(
        json!({
            "schema": "toolgate.event.v1", "kind": "tool_call", "event_id": format!("e-{call_id}"),
            "time": at(secs).to_string(), "agent_id": "agent", "session_id": session,
            "server": "mail", "call_id": call_id, "tool": tool, "arguments": {}
        })
        .to_string()
        .as_bytes(),
    )
    .unwrap()
}

fn result(secs: i64, call_id: &str) -> Event {
    Event::decode(
        json!({
            "schema": "toolgate.event.v1", "kind": "tool_result", "event_id": format!("r-{call_id}"),
            "time": at(secs).to_string(), "agent_id": "agent", "session_id": "s1",
            "server": "mail", "call_id": call_id, "tool": "send", "result": {"content": []}
        })
        .to_string()
        .as_bytes(),
    )
    .unwrap()
}

/// Feeds events in order, advancing the watermark to each event's time.
fn run(p: &mut Pipeline, events: &[Event]) -> Vec<Finding> {
    let mut out = Vec::new();
    for e in events {
        p.observe(e, &mut out);
        p.advance(e.time, &mut out);
    }
    out
}

fn stream() -> Vec<Event> {
    vec![
        call(0, "s1", "c1", "send"),
        result(1, "c1"),
        call(10, "s1", "c2", "send"),
        result(11, "c2"),
        call(20, "s1", "c3", "read"),
        call(30, "s1", "c4", "send"),
        result(31, "c4"),
        call(70, "s2", "c5", "send"),
        result(71, "c5"),
        call(130, "s1", "c6", "send"),
        result(131, "c6"),
    ]
}

#[test]
fn repeats_fold_into_one_finding_per_window() {
    let mut p = pipeline(EmitPolicy::FinalOnly, Duration::from_secs(60), 100);
    let mut out = run(&mut p, &stream());
    p.finish(&mut out);
    let watched: Vec<&Finding> = out.iter().filter(|f| f.rule_id == "watched_tool").collect();
    // s1 window [0,60): c1, c2, c4; s2 window [60,120): c5; s1 window [120,180): c6.
    let counts: Vec<(String, u64)> = watched
        .iter()
        .map(|f| (f.session_id.clone(), f.count))
        .collect();
    assert_eq!(
        counts,
        [("s1".into(), 3), ("s2".into(), 1), ("s1".into(), 1)]
    );
    let first = watched[0];
    assert_eq!((first.first_seen, first.last_seen), (at(0), at(30)));
    assert_eq!(first.event_ids, ["e-c1", "e-c2", "e-c4"]);
    // The call without a result became a blocking finding once the watermark passed.
    let missing: Vec<&Finding> = out.iter().filter(|f| f.rule_id == "no_result").collect();
    assert_eq!(missing.len(), 1);
    assert_eq!(missing[0].call_id.as_deref(), Some("c3"));
    assert_eq!(missing[0].action, FindingAction::Block);
    // Each id once under FinalOnly.
    let mut ids: Vec<&str> = out.iter().map(|f| f.finding_id.as_str()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), out.len());
    for f in &out {
        f.validate().unwrap();
    }
}

#[test]
fn finding_ids_are_deterministic_across_runs() {
    let ids = |events: &[Event]| {
        let mut p = pipeline(EmitPolicy::FinalOnly, Duration::from_secs(60), 100);
        let mut out = run(&mut p, events);
        p.finish(&mut out);
        out.into_iter()
            .map(|f| (f.finding_id, f.count))
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(&stream()), ids(&stream()));
}

#[test]
fn first_and_final_emits_immediately_then_the_final_count() {
    let mut p = pipeline(EmitPolicy::FirstAndFinal, Duration::from_secs(60), 100);
    let events = stream();
    let mut out = Vec::new();
    p.observe(&events[0], &mut out);
    assert_eq!(out.len(), 1, "the first occurrence is not held back");
    assert_eq!(out[0].count, 1);
    out.extend(run(&mut p, &events[1..]));
    p.finish(&mut out);
    let s1: Vec<u64> = out
        .iter()
        .filter(|f| f.finding_id == out[0].finding_id)
        .map(|f| f.count)
        .collect();
    assert_eq!(
        s1,
        [1, 3],
        "first record, then the folded one under the same id"
    );
    // A finding that never repeated is not emitted twice.
    let s2: Vec<&Finding> = out.iter().filter(|f| f.session_id == "s2").collect();
    assert_eq!(s2.len(), 1);
}

#[test]
fn an_event_exactly_at_the_window_end_opens_a_new_window() {
    let mut p = pipeline(EmitPolicy::FinalOnly, Duration::from_secs(60), 100);
    let mut out = run(
        &mut p,
        &[call(59, "s1", "a", "send"), call(60, "s1", "b", "send")],
    );
    p.finish(&mut out);
    let watched: Vec<&Finding> = out.iter().filter(|f| f.rule_id == "watched_tool").collect();
    assert_eq!(watched.len(), 2);
    assert_ne!(watched[0].finding_id, watched[1].finding_id);
}

#[test]
fn caps_close_the_oldest_early_and_count_it() {
    let mut p = pipeline(EmitPolicy::FinalOnly, Duration::from_secs(3600), 2);
    let events: Vec<Event> = (0..5)
        .map(|i| call(i, &format!("s{i}"), &format!("c{i}"), "send"))
        .collect();
    let mut out = Vec::new();
    for e in &events {
        p.observe(e, &mut out);
    }
    assert_eq!(out.len(), 3, "three of five sessions were pushed out early");
    assert_eq!(p.fold_stats().closed_early, 3);
    p.finish(&mut out);
    assert_eq!(
        out.iter().filter(|f| f.rule_id == "watched_tool").count(),
        5
    );
    // Evidence ids are capped at 4, the count is not.
    let mut p = pipeline(EmitPolicy::FinalOnly, Duration::from_secs(3600), 100);
    let events: Vec<Event> = (0..10)
        .map(|i| call(i, "s1", &format!("c{i}"), "send"))
        .collect();
    let mut out = Vec::new();
    for e in &events {
        p.observe(e, &mut out);
    }
    p.finish(&mut out);
    assert_eq!(out[0].count, 10);
    assert_eq!(out[0].event_ids.len(), 4);
}

#[test]
fn a_draft_for_an_already_closed_window_is_emitted_and_counted_as_late() {
    let mut p = pipeline(EmitPolicy::FinalOnly, Duration::from_secs(60), 100);
    let mut out = run(
        &mut p,
        &[call(0, "s1", "a", "send"), call(200, "s1", "b", "read")],
    );
    let before = out.len();
    p.observe(&call(5, "s1", "late", "send"), &mut out);
    assert_eq!(out.len(), before + 1);
    assert_eq!(p.fold_stats().late, 1);
}

#[test]
fn restoring_mid_stream_gives_identical_findings() {
    let events = stream();
    let mut whole = pipeline(EmitPolicy::FirstAndFinal, Duration::from_secs(60), 100);
    let mut expected = run(&mut whole, &events);
    whole.finish(&mut expected);

    for cut in 1..events.len() {
        let mut first = pipeline(EmitPolicy::FirstAndFinal, Duration::from_secs(60), 100);
        let mut got = run(&mut first, &events[..cut]);
        let snapshot = first.snapshot().unwrap();
        drop(first);
        let mut second = pipeline(EmitPolicy::FirstAndFinal, Duration::from_secs(60), 100);
        let report = second.restore(&snapshot).unwrap();
        assert!(report.dropped.is_empty() && report.fresh.is_empty());
        got.extend(run(&mut second, &events[cut..]));
        second.finish(&mut got);
        assert_eq!(got, expected, "cut after {cut} events");
    }
}

#[test]
fn corrupt_snapshots_are_refused() {
    let mut p = pipeline(EmitPolicy::FinalOnly, Duration::from_secs(60), 100);
    assert!(matches!(
        p.restore(b"{not json"),
        Err(StateError::Decode { .. })
    ));
    let good = p.snapshot().unwrap();
    let mut v: Value = serde_json::from_slice(&good).unwrap();
    v["version"] = json!(99);
    let err = p.restore(&serde_json::to_vec(&v).unwrap()).unwrap_err();
    assert!(err.to_string().contains("version 99"), "{err}");
    v["version"] = json!(1);
    v["detectors"]["watch"] = json!("!!!");
    assert!(p.restore(&serde_json::to_vec(&v).unwrap()).is_err());
}

#[test]
fn config_builds_enabled_detectors_and_names_bad_keys() {
    let built =
        build_detectors(&factories(), &config("[detectors.watch]\ntool = \"x\"\n")).unwrap();
    assert_eq!(built.len(), 1);
    let off = build_detectors(
        &factories(),
        &config("[detectors.watch]\nenabled = false\ntool = \"x\"\n"),
    )
    .unwrap();
    assert!(off.is_empty());
    let err = |text: &str| match build_detectors(&factories(), &config(text)) {
        Err(e) => e,
        Ok(_) => panic!("accepted {text}"),
    };
    let e = err("[detectors.wach]\ntool = \"x\"\n");
    assert!(matches!(e, BuildError::UnknownDetector { .. }));
    assert_eq!(
        e.to_string(),
        "`detectors.wach`: no such detector; known detectors: watch"
    );
    let e = err("[detectors.watch]\ntool = \"x\"\ntimeuot = \"5s\"\n").to_string();
    assert!(
        e.starts_with("`detectors.watch`:") && e.contains("timeuot"),
        "{e}"
    );
    let e = err("[detectors.watch]\ntool = \"x\"\nenabled = \"yes\"\n").to_string();
    assert!(e.contains("`enabled`"), "{e}");
    let e = err("[detectors.watch]\ntool = \"x\"\ntimeout = \"soon\"\n").to_string();
    assert!(e.contains("soon"), "{e}");
}

#[test]
fn the_shipped_registry_builds_from_the_default_config() {
    let p = toolgate_detectors::build_pipeline(&Config::default(), EmitPolicy::FinalOnly).unwrap();
    let names = p.detector_names();
    let registered: Vec<&str> = toolgate_detectors::registry()
        .iter()
        .map(|f| f.name)
        .collect();
    assert_eq!(names, registered);
}

/// Files held in memory, as a test hands them to the detectors.
struct MemoryFiles(BTreeMap<&'static str, Value>);

impl toolgate_detectors::Files for MemoryFiles {
    fn rules(&self, path: &str) -> Result<Vec<Value>, String> {
        match self.0.get(path) {
            Some(Value::Array(rules)) => Ok(rules.clone()),
            _ => Err(format!("no rule file {path}")),
        }
    }

    fn model(&self, path: &str) -> Result<Value, String> {
        self.0
            .get(path)
            .cloned()
            .ok_or_else(|| format!("no model file {path}"))
    }
}

/// Issue 20: each detector reads the files its settings name through the loader it is
/// handed (no file names known outside the detector), once, into its table; the rules
/// then build like inline ones, and a missing file or model section names the key.
#[test]
fn issue_20_detectors_read_their_files_through_the_loader_they_are_handed() {
    let toml = r#"
[detectors.sequence]
rule_files = ["payments.toml"]
[[detectors.sequence.rules]]
id = "inline"
steps = [{ name = "a", where = { kind = "tool_call", tool = "a" } }]
[detectors.sequence.learned]
model_file = "model.json"
[detectors.session]
model_file = "model.json"
"#;
    let files = MemoryFiles(BTreeMap::from([
        (
            "payments.toml",
            json!([{ "id": "from_file", "source": "payments.toml",
                     "steps": [{ "name": "b", "where": { "kind": "tool_call", "tool": "b" } }] }]),
        ),
        (
            "model.json",
            json!({ "sequence": { "marker": "seq" }, "sessions": { "marker": "ses" } }),
        ),
    ]));
    let mut config = Config::from_toml(toml, "test").expect("config");
    toolgate_detectors::load_files(&mut config, &files).expect("loaded");
    let seq = &config.detectors["sequence"];
    let ids: Vec<&str> = seq["rules"]
        .as_array()
        .expect("rules")
        .iter()
        .map(|r| r["id"].as_str().expect("id"))
        .collect();
    assert_eq!(ids, ["inline", "from_file"]);
    assert_eq!(seq["learned"]["model"], json!({ "marker": "seq" }));
    assert_eq!(
        config.detectors["session"]["model"],
        json!({ "marker": "ses" })
    );

    // Without a loader that can read, the file is named.
    let mut config = Config::from_toml(toml, "test").expect("config");
    let err = toolgate_detectors::load_files(&mut config, &toolgate_detectors::NoFiles)
        .expect_err("no files here");
    assert!(err.to_string().contains("payments.toml"), "{err}");

    // A model file without the detector's section says which and how to make it.
    let files = MemoryFiles(BTreeMap::from([("model.json", json!({ "sequence": {} }))]));
    let mut config =
        Config::from_toml("[detectors.session]\nmodel_file = \"model.json\"\n", "test")
            .expect("config");
    let err = toolgate_detectors::load_files(&mut config, &files).expect_err("no section");
    assert!(
        err.to_string()
            .contains("`detectors.session`: model file model.json has no `sessions` section"),
        "{err}"
    );
}

/// `event` with `extra` members set (`sink_action`, `await_verdict`).
fn with(event: Event, extra: Value) -> Event {
    let mut v: Value = serde_json::from_str(&event.to_json()).unwrap();
    for (k, x) in extra.as_object().unwrap() {
        v[k] = x.clone();
    }
    Event::decode(v.to_string().as_bytes()).unwrap()
}

fn held(event: Event) -> Event {
    with(
        event,
        json!({"await_verdict": true, "sink_action": {"action": "held", "rule": "hold.egress"}}),
    )
}

/// `result(secs, call_id)` reporting how the sink settled the held call.
fn settled(secs: i64, call_id: &str, action: &str) -> Event {
    with(
        result(secs, call_id),
        json!({"sink_action": {"action": action, "rule": "hold.egress"}}),
    )
}

fn outcome_of(found: &[Finding], session: &str, rule: &str) -> Vec<Option<FindingOutcome>> {
    found
        .iter()
        .filter(|f| f.session_id == session && f.rule_id == rule)
        .map(|f| f.outcome)
        .collect()
}

/// Issue 22: a finding says what was done about its call, not only what it asks for.
#[test]
fn issue_22_each_finding_says_what_was_done_about_its_call() {
    let mut p = pipeline(EmitPolicy::FinalOnly, Duration::from_secs(60), 100);
    let refused = with(
        call(1, "s3", "c2", "send"),
        json!({"sink_action": {"action": "blocked", "rule": "deny", "reason": "policy"}}),
    );
    let mut found = run(
        &mut p,
        &[
            call(0, "s2", "c1", "send"),
            refused,
            held(call(2, "s1", "c3", "send")),
            settled(3, "c3", "allowed"),
        ],
    );
    p.advance(at(100), &mut found);
    p.finish(&mut found);
    use FindingOutcome::*;
    assert_eq!(outcome_of(&found, "s2", "watched_tool"), [Some(Forwarded)]);
    assert_eq!(
        outcome_of(&found, "s3", "watched_tool"),
        [Some(RefusedAtSink)]
    );
    assert_eq!(
        outcome_of(&found, "s1", "watched_tool"),
        [Some(HeldReleased)]
    );
    // Raised when a window of event time closed: nothing was there to stop.
    assert_eq!(outcome_of(&found, "s2", "no_result"), [Some(Observed)]);
}

/// Issue 22: the verdict came after the hold's deadline and the sink's fail mode
/// refused the call the engine let go: the finding is emitted again, same id, with
/// what really happened, and its final version keeps it.
#[test]
fn issue_22_a_settlement_unlike_the_expected_one_corrects_the_finding() {
    let mut p = pipeline(EmitPolicy::FirstAndFinal, Duration::from_secs(60), 100);
    let mut found = run(
        &mut p,
        &[
            held(call(0, "s1", "c1", "send")),
            settled(1, "c1", "blocked"),
            held(call(2, "s1", "c2", "send")),
            settled(3, "c2", "allowed"),
        ],
    );
    p.finish(&mut found);
    use FindingOutcome::*;
    let versions = outcome_of(&found, "s1", "watched_tool");
    assert_eq!(
        versions,
        [Some(HeldReleased), Some(HeldRefused), Some(HeldReleased)],
        "first, corrected, final (the latest occurrence's, as settled)"
    );
    assert!(found.iter().all(|f| f.finding_id == found[0].finding_id));
}

/// Issue 22 review: a repeat that blocks a held call folded silently into the open
/// finding, so the engine's verdict on that second call (drawn from the findings its
/// event made) was `allow`. It is emitted at once, naming the call it blocks.
#[test]
fn issue_22_a_folded_repeat_that_blocks_a_held_call_is_emitted_with_that_call() {
    let mut p = pipeline(EmitPolicy::FirstAndFinal, Duration::from_secs(60), 100);
    let blocking = |secs, call_id| {
        held(with(
            call(secs, "s1", call_id, "send"),
            json!({"arguments": {"block": true}}),
        ))
    };
    let found = run(&mut p, &[blocking(0, "c1"), blocking(1, "c2")]);
    let calls: Vec<(Option<&str>, Option<FindingOutcome>, u64)> = found
        .iter()
        .map(|f| (f.call_id.as_deref(), f.outcome, f.count))
        .collect();
    assert_eq!(
        calls,
        [
            (Some("c1"), Some(FindingOutcome::HeldRefused), 1),
            (Some("c2"), Some(FindingOutcome::HeldRefused), 2)
        ]
    );
    assert_eq!(found[0].action, FindingAction::Block);
}
