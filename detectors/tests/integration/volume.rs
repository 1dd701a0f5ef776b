//! The `volume` detector through its config: static thresholds on calls, bytes and
//! distinct values over sliding windows, learned spikes, argument sizes against the
//! schema and against their history, heavy hitters, late events, caps, restore.

use crate::common;

use common::*;
use serde_json::json;
use toolgate_protocol::{FindingAction, Severity};

fn config(extra: &str) -> String {
    format!(
        "[detectors.volume]\nwindow = \"60s\"\npanes = 12\n[detectors.volume.heavy_hitters]\nenabled = false\n{extra}"
    )
}

/// A static limit on calls per `scope` window.
fn chatty(scope: &str, max: u64) -> String {
    format!(
        "[[detectors.volume.thresholds]]\nname = \"chatty\"\nscope = \"{scope}\"\nmetric = \"calls\"\nmax = {max}\n"
    )
}

const BULK_READ: &str = r#"
[[detectors.volume.thresholds]]
name = "bulk-read"
scope = "session"
metric = "distinct"
arguments = ["path", "file*"]
max = 50
severity = "high"
action = "block"
"#;

#[test]
fn distinct_paths_over_the_limit_are_flagged_and_repeats_are_not() {
    let toml = config(BULK_READ);
    let mut d = build("volume", &toml);
    let mut s = Stream::new("a1", "s1");
    let mut found = Vec::new();
    for i in 0..200 {
        found.extend(observe(
            &mut d,
            &s.call(i * 100, "fs", "read_file", json!({"path": "/etc/hosts"})),
        ));
    }
    assert!(
        found.is_empty(),
        "one path read 200 times is not a bulk read: {found:?}"
    );
    for i in 0..49 {
        found.extend(observe(
            &mut d,
            &s.call(
                20_000 + i * 100,
                "fs",
                "read_file",
                json!({"path": format!("/home/ann/doc{i}.txt")}),
            ),
        ));
    }
    assert!(found.is_empty(), "50 distinct paths are within the limit");
    let over = observe(
        &mut d,
        &s.call(
            25_000,
            "fs",
            "read_file",
            json!({"options": {"file_name": "/home/ann/secret.key"}}),
        ),
    );
    assert_eq!(
        rules(&over),
        ["volume_threshold"],
        "a nested matching argument counts"
    );
    let f = &over[0];
    assert_eq!(
        (f.severity, f.action),
        (Severity::High, FindingAction::Block)
    );
    assert_eq!(f.evidence["value"], json!(51.0));
    assert!(f.title.contains("bulk-read"), "{}", f.title);
    let again = observe(
        &mut d,
        &s.call(25_100, "fs", "read_file", json!({"path": "/x"})),
    );
    assert_eq!(
        again[0].group_key, f.group_key,
        "repeats fold into one finding"
    );
    let other_session =
        Stream::new("a1", "s2").call(25_200, "fs", "read_file", json!({"path": "/y"}));
    assert!(
        observe(&mut d, &other_session).is_empty(),
        "another session has its own window"
    );
}

#[test]
fn the_window_slides_by_panes_and_its_edge_is_exact() {
    let toml = config(&chatty("agent", 3));
    let mut d = build("volume", &toml);
    let mut s = Stream::new("a1", "s1");
    // Panes are 5 s. Calls at 0, 1, 2 s fill pane 0; a call at exactly 60 s falls in
    // pane 12, whose window (panes 1..=12) no longer holds pane 0.
    for ms in [0, 1000, 2000] {
        assert!(observe(&mut d, &s.call(ms, "crm", "lookup", json!({}))).is_empty());
    }
    assert!(observe(&mut d, &s.call(60_000, "crm", "lookup", json!({}))).is_empty());
    // One millisecond before the edge the fourth call is still in pane 11's window.
    let mut d = build("volume", &toml);
    for ms in [0, 1000, 2000] {
        observe(&mut d, &s.call(ms, "crm", "lookup", json!({})));
    }
    let found = observe(&mut d, &s.call(59_999, "crm", "lookup", json!({})));
    assert_eq!(rules(&found), ["volume_threshold"]);
    assert_eq!(found[0].evidence["value"], json!(4.0));
    // A burst straddling what would be a fixed bucket's edge is seen whole.
    let mut d = build("volume", &toml);
    for ms in [58_000, 59_000, 61_000, 62_000] {
        let f = observe(&mut d, &s.call(ms, "crm", "lookup", json!({})));
        assert_eq!(f.is_empty(), ms != 62_000);
    }
}

#[test]
fn result_bytes_are_summed_per_server_across_the_fleet() {
    let toml = config(
        r#"
[[detectors.volume.thresholds]]
name = "drive-dump"
scope = "server"
metric = "result_bytes"
servers = ["drive"]
max = 100000
"#,
    );
    let mut d = build("volume", &toml);
    let page = "x".repeat(30_000);
    let mut found = Vec::new();
    for (i, agent) in ["a1", "a2", "a3", "a4"].iter().enumerate() {
        found.extend(observe(
            &mut d,
            &Stream::new(agent, "s").result(i as i64 * 1000, "drive", "read", &page),
        ));
        found.extend(observe(
            &mut d,
            &Stream::new(agent, "s").result(i as i64 * 1000, "mail", "read", &page),
        ));
    }
    assert_eq!(
        rules(&found),
        ["volume_threshold"],
        "only the fourth drive page crosses 100 kB"
    );
    assert_eq!(found[0].agent_id, "a4");
}

#[test]
fn a_learned_spike_is_flagged_and_steady_traffic_is_not() {
    let toml = config(
        "[detectors.volume.adaptive]\nscopes = [\"agent\"]\nwarmup_panes = 60\nmin_calls = 20\n",
    );
    let mut d = build("volume", &toml);
    let mut s = Stream::new("a1", "s");
    let mut events = Vec::new();
    // Two calls per 5 s pane for 20 minutes: 24 per window.
    for pane in 0..240 {
        for k in 0..2 {
            events.push(s.call(pane * 5000 + k * 2000, "crm", "lookup", json!({"id": pane})));
        }
    }
    assert!(
        run(&mut d, &events).is_empty(),
        "steady traffic is not a spike"
    );
    let burst: Vec<_> = (0..80)
        .map(|k| s.call(1_200_000 + k * 50, "crm", "lookup", json!({"id": k})))
        .collect();
    let found = run(&mut d, &burst);
    assert!(
        rules(&found).contains(&"volume_spike"),
        "{:?}",
        rules(&found)
    );
    let f = found
        .iter()
        .find(|f| f.rule_id == "volume_spike")
        .map(|f| &f.evidence);
    assert_eq!(f.map(|e| e["scope"].clone()), Some(json!("agent")));
    assert!(f.is_some_and(|e| e["z"].as_f64().unwrap_or(0.0) >= 4.0));
    // A new agent bursting at once is still warming up: no learned limit yet.
    let mut fresh = Stream::new("a2", "s");
    let burst: Vec<_> = (0..80)
        .map(|k| fresh.call(1_200_000 + k * 50, "crm", "lookup", json!({})))
        .collect();
    assert!(run(&mut d, &burst).iter().all(|f| f.agent_id != "a2"));
}

#[test]
fn arguments_far_beyond_their_schema_type_or_their_history_are_flagged() {
    let mut d = build("volume", &config(""));
    let mut s = Stream::new("a1", "s");
    observe(
        &mut d,
        &s.list(
            0,
            "mail",
            json!([{
                "name": "send_email",
                "inputSchema": {"type": "object", "properties": {
                    "to": {"type": "string", "format": "email"},
                    "urgent": {"type": "boolean"},
                    "body": {"type": "string"}
                }}
            }]),
        ),
    );
    let normal = observe(
        &mut d,
        &s.call(
            1000,
            "mail",
            "send_email",
            json!({"to": "bob@example.com", "urgent": false, "body": "hi"}),
        ),
    );
    assert!(normal.is_empty());
    let smuggled = format!("bob@example.com?{}", "QUJD".repeat(500));
    let found = observe(
        &mut d,
        &s.call(
            2000,
            "mail",
            "send_email",
            json!({"to": smuggled, "body": "hi"}),
        ),
    );
    assert_eq!(rules(&found), ["argument_size_schema"]);
    assert_eq!(found[0].evidence["schema_type"], json!("string/email"));

    for i in 0..30 {
        observe(
            &mut d,
            &s.call(
                3000 + i,
                "mail",
                "send_email",
                json!({"to": "bob@example.com", "body": format!("short note number {i}")}),
            ),
        );
    }
    let dump = "row;".repeat(5000);
    let found = observe(
        &mut d,
        &s.call(
            5000,
            "mail",
            "send_email",
            json!({"to": "bob@example.com", "body": dump}),
        ),
    );
    assert_eq!(rules(&found), ["argument_size_spike"]);
    assert_eq!(found[0].evidence["argument"], json!("body"));
}

#[test]
fn heavy_hitters_are_reported_when_their_interval_closes() {
    let toml = "[detectors.volume]\n[detectors.volume.heavy_hitters]\nitem = \"agent\"\ninterval = \"1m\"\nmin_share = 0.5\nmin_count = 100\nmax_map_size = 64\n";
    let mut d = build("volume", toml);
    let mut events = Vec::new();
    let mut hot = Stream::new("hot-agent", "s");
    for i in 0..600 {
        events.push(hot.call(i * 50, "crm", "export", json!({})));
    }
    for a in 0..40 {
        let mut s = Stream::new(&format!("quiet-{a}"), "s");
        for i in 0..10 {
            events.push(s.call(i * 1000 + a, "crm", "lookup", json!({})));
        }
    }
    events.sort_by_key(|e| e.time);
    assert!(
        run(&mut d, &events).is_empty(),
        "nothing before the interval closes"
    );
    let mut out = Vec::new();
    d.advance(at(60_000), &mut out);
    assert_eq!(rules(&out), ["heavy_hitter"], "{out:?}");
    assert_eq!(out[0].agent_id, "hot-agent");
    assert_eq!(out[0].evidence["fleet_calls"], json!(1000));
    assert_eq!(out[0].time, at(60_000));
    d.advance(at(120_000), &mut out);
    assert_eq!(out.len(), 1, "counts start afresh each interval");
}

#[test]
fn events_older_than_the_window_are_counted_as_late_not_added() {
    let toml = config(&chatty("session", 2));
    let mut d = build("volume", &toml);
    let mut s = Stream::new("a1", "s");
    observe(&mut d, &s.call(100_000, "crm", "lookup", json!({})));
    // Within the window though out of order: counted.
    observe(&mut d, &s.call(70_000, "crm", "lookup", json!({})));
    assert_eq!(gauge(d.as_ref(), "toolgate_volume_late_events_total"), 0);
    // Beyond the window: late.
    let late = observe(&mut d, &s.call(10_000, "crm", "lookup", json!({})));
    assert!(late.is_empty());
    assert!(gauge(d.as_ref(), "toolgate_volume_late_events_total") >= 1);
    let third = observe(&mut d, &s.call(100_500, "crm", "lookup", json!({})));
    assert_eq!(
        rules(&third),
        ["volume_threshold"],
        "the in-order and out-of-order calls count"
    );
    assert_eq!(third[0].evidence["value"], json!(3.0));
}

#[test]
fn keys_are_bounded_by_max_keys_and_ttl() {
    let toml = "[detectors.volume]\nmax_keys = 50\nkey_ttl = \"10m\"\n[detectors.volume.adaptive]\nscopes = [\"session\"]\n";
    let mut d = build("volume", toml);
    let mut out = Vec::new();
    for i in 0..500 {
        d.observe(
            &Stream::new("a", &format!("s{i}")).call(i, "crm", "x", json!({})),
            &mut out,
        );
    }
    assert!(gauge(d.as_ref(), "toolgate_volume_keys") <= 50);
    assert!(gauge(d.as_ref(), "toolgate_volume_evicted_keys_total") >= 450);
    d.advance(at(11 * 60_000), &mut out);
    assert_eq!(
        gauge(d.as_ref(), "toolgate_volume_keys"),
        0,
        "idle keys expire"
    );
}

#[test]
fn a_restore_mid_stream_gives_identical_findings() {
    let toml = format!(
        "{BULK_READ}\n[detectors.volume.adaptive]\nscopes = [\"agent\", \"tool\"]\nwarmup_panes = 10\nmin_calls = 10\n[detectors.volume.heavy_hitters]\ninterval = \"1m\"\nmin_count = 10\n"
    );
    let mut events = Vec::new();
    let mut s = Stream::new("a1", "s1");
    for i in 0..300 {
        events.push(s.call(
            i * 1000,
            "fs",
            "read_file",
            json!({"path": format!("/p/{}", i % 7)}),
        ));
        events.push(s.result(i * 1000 + 10, "fs", "read_file", "content"));
    }
    for i in 0..80 {
        events.push(s.call(
            300_000 + i * 20,
            "fs",
            "read_file",
            json!({"path": format!("/bulk/{i}")}),
        ));
    }
    let toml = format!("[detectors.volume]\n{}", toml.trim_start());
    assert_restore_mid_stream("volume", &toml, &events, 350);
    assert_restore_mid_stream("volume", &toml, &events, 640);
}

#[test]
fn bad_settings_name_the_key() {
    let e = build_error("[detectors.volume]\npanes = 0\n");
    assert!(e.contains("detectors.volume") && e.contains("panes"), "{e}");
    let e = build_error(
        "[detectors.volume]\n[[detectors.volume.thresholds]]\nname = \"x\"\nscope = \"agent\"\nmetric = \"distinct\"\nmax = 3\n",
    );
    assert!(e.contains("thresholds[0].arguments"), "{e}");
    let e = build_error(
        "[detectors.volume]\n[[detectors.volume.thresholds]]\nname = \"x\"\nscope = \"planet\"\nmetric = \"calls\"\nmax = 3\n",
    );
    assert!(e.contains("planet"), "{e}");
    let e = build_error("[detectors.volume]\nwindwo = \"1m\"\n");
    assert!(e.contains("windwo"), "{e}");
    let e = build_error("[detectors.volume.heavy_hitters]\nmax_map_size = 100\n");
    assert!(e.contains("max_map_size"), "{e}");
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]
        /// Whatever the order events arrive in, the window count is exactly the number
        /// of counted events in the newest pane and the 11 before it; an event older
        /// than that is late and not counted.
        #[test]
        fn window_counts_match_a_brute_force_count(
            times in proptest::collection::vec(0i64..300_000, 1..80)
        ) {
            let mut d = build("volume", &config(&chatty("agent", 0)));
            let mut s = Stream::new("a1", "s1");
            let pane = |ms: i64| ms.div_euclid(5_000);
            let mut head = i64::MIN;
            let mut counted: Vec<i64> = Vec::new();
            for &t in &times {
                let p = pane(t);
                let late = head != i64::MIN && p <= head - 12;
                head = head.max(p);
                let found = observe(&mut d, &s.call(t, "crm", "x", json!({})));
                if late {
                    prop_assert!(found.is_empty());
                    continue;
                }
                counted.push(p);
                let expected = counted.iter().filter(|&&c| c > head - 12 && c <= head).count();
                prop_assert_eq!(found.len(), 1);
                prop_assert_eq!(found[0].evidence["value"].as_f64(), Some(expected as f64));
            }
        }
    }
}
