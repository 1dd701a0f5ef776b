//! The `policy` detector through its config: access by role/server/tool with first-match
//! semantics and a default, approvals, argument constraints, the tool's own schema,
//! monitor vs enforce, bounded and restorable schema state, and config errors.

use serde_json::{Value, json};
use toolgate_detectors::policy::{CallView, PolicySettings, compile};
use toolgate_detectors::{Detector, FindingDraft, build_detectors, registry};
use toolgate_protocol::config::Config;
use toolgate_protocol::{Event, FindingAction, Severity};

fn detector(toml: &str) -> Box<dyn Detector> {
    let config = Config::from_toml(toml, "test").unwrap_or_else(|e| panic!("{e}"));
    build_detectors(&registry(), &config)
        .unwrap_or_else(|e| panic!("{e}"))
        .into_iter()
        .find(|d| d.name() == "policy")
        .expect("policy registered")
}

fn build_error(toml: &str) -> String {
    let config = Config::from_toml(toml, "test").unwrap();
    match build_detectors(&registry(), &config) {
        Ok(_) => panic!("expected an error for {toml}"),
        Err(e) => e.to_string(),
    }
}

fn call(role: Option<&str>, server: &str, tool: &str, arguments: Value) -> Event {
    let mut e = json!({
        "schema": "toolgate.event.v1", "kind": "tool_call", "event_id": format!("{server}-{tool}"),
        "time": "2025-01-01T00:00:00Z", "agent_id": "agent-1", "session_id": "s",
        "server": server, "call_id": "c1", "tool": tool, "arguments": arguments
    });
    if let Some(r) = role {
        e["agent_role"] = json!(r);
    }
    Event::from_value(e).unwrap()
}

fn listing(server: &str, tool: &str, schema: Value) -> Event {
    Event::from_value(json!({
        "schema": "toolgate.event.v1", "kind": "tool_list", "event_id": "l",
        "time": "2025-01-01T00:00:00Z", "agent_id": "agent-1", "session_id": "s", "server": server,
        "tools": [{"name": tool, "description": "d", "inputSchema": schema}]
    }))
    .unwrap()
}

fn run(d: &mut Box<dyn Detector>, event: &Event) -> Vec<FindingDraft> {
    let mut out = Vec::new();
    d.observe(event, &mut out);
    out
}

const SUPPORT_POLICY: &str = r#"
[detectors.policy]
default = "allow"

[[detectors.policy.rules]]
id = "support-may-read-tickets"
roles = ["support-*"]
servers = ["tickets"]
effect = "allow"

[[detectors.policy.rules]]
id = "support-no-other-servers"
roles = ["support-*"]
effect = "deny"
reason = "support agents only work on tickets"

[[detectors.policy.rules]]
id = "payments-need-approval"
tools = ["send_money", "schedule_*"]
effect = "require_approval"
mode = "monitor"

[[detectors.policy.rules]]
id = "mail-limits"
servers = ["mail"]
tools = ["send_email"]
effect = "constrain"
[[detectors.policy.rules.arguments]]
path = "recipients"
forbidden_values = ["*@gmail.com", "*@*.ru"]
max_items = 3
[[detectors.policy.rules.arguments]]
path = "body"
max_bytes = 64
[[detectors.policy.rules.arguments]]
path = "subject"
required = true
"#;

#[test]
fn first_matching_access_rule_decides_by_role() {
    let mut d = detector(SUPPORT_POLICY);
    assert!(
        run(
            &mut d,
            &call(Some("support-bot"), "tickets", "read", json!({}))
        )
        .is_empty()
    );
    let denied = run(
        &mut d,
        &call(Some("support-bot"), "shell", "exec", json!({})),
    );
    assert_eq!(denied.len(), 1);
    let f = &denied[0];
    assert_eq!(f.rule_id, "support-no-other-servers");
    assert_eq!(f.action, FindingAction::Block);
    assert_eq!(f.severity, Severity::High);
    assert_eq!(f.evidence["violation"], "denied");
    assert_eq!(f.evidence["reason"], "support agents only work on tickets");
    // Another role, and no role at all, fall through to the default.
    assert!(
        run(
            &mut d,
            &call(Some("finance-bot"), "shell", "exec", json!({}))
        )
        .is_empty()
    );
    assert!(run(&mut d, &call(None, "shell", "exec", json!({}))).is_empty());
}

#[test]
fn approval_rules_in_monitor_mode_alert_without_blocking() {
    let mut d = detector(SUPPORT_POLICY);
    let out = run(
        &mut d,
        &call(None, "bank", "schedule_transaction", json!({"amount": 10})),
    );
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].rule_id, "payments-need-approval");
    assert_eq!(out[0].evidence["violation"], "approval_required");
    assert_eq!(out[0].evidence["mode"], "monitor");
    assert_eq!(out[0].action, FindingAction::Alert);
}

#[test]
fn argument_constraints_report_each_problem_with_its_path() {
    let mut d = detector(SUPPORT_POLICY);
    let ok = call(
        None,
        "mail",
        "send_email",
        json!({"recipients": ["ann@corp.example"], "subject": "hi", "body": "short"}),
    );
    assert!(run(&mut d, &ok).is_empty());
    let bad = call(
        None,
        "mail",
        "send_email",
        json!({"recipients": ["a@corp.example", "x@GMAIL.com", "b@c.d", "e@mail.ru"], "body": "x".repeat(65)}),
    );
    let out = run(&mut d, &bad);
    assert_eq!(out.len(), 1, "{out:#?}");
    assert_eq!(out[0].rule_id, "mail-limits");
    assert_eq!(out[0].action, FindingAction::Block);
    let problems: Vec<String> = out[0].evidence["arguments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            format!(
                "{}: {}",
                p["path"].as_str().unwrap(),
                p["problem"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        problems,
        vec![
            "arguments.recipients: 4 items, more than the policy's 3",
            "arguments.recipients[1]: \"x@GMAIL.com\" matches the forbidden value \"*@gmail.com\"",
            "arguments.recipients[3]: \"e@mail.ru\" matches the forbidden value \"*@*.ru\"",
            "arguments.body: 65 bytes, more than the policy's 64",
            "arguments.subject: required by policy but missing",
        ]
    );
}

#[test]
fn constraints_apply_even_when_an_earlier_rule_allowed_the_call() {
    let mut d = detector(
        r#"
[detectors.policy]
[[detectors.policy.rules]]
id = "allow-all"
effect = "allow"
[[detectors.policy.rules]]
id = "paths"
tools = ["read_file"]
effect = "constrain"
[[detectors.policy.rules.arguments]]
path = "path"
forbidden_patterns = ['(^|/)\.ssh/', '(^|/)\.env$']
"#,
    );
    let out = run(
        &mut d,
        &call(
            None,
            "fs",
            "read_file",
            json!({"path": "/home/u/.ssh/id_rsa"}),
        ),
    );
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].rule_id, "paths");
    assert!(
        run(
            &mut d,
            &call(
                None,
                "fs",
                "read_file",
                json!({"path": "/home/u/notes.txt"})
            )
        )
        .is_empty()
    );
}

#[test]
fn default_deny_names_the_default_and_wildcard_paths_reach_nested_values() {
    let mut d = detector(
        r#"
[detectors.policy]
default = "deny"
default_mode = "monitor"
[[detectors.policy.rules]]
id = "files"
servers = ["fs"]
effect = "allow"
[[detectors.policy.rules.arguments]]
path = "files.*.name"
pattern = '^[\w.-]+$'
"#,
    );
    let out = run(&mut d, &call(None, "web", "fetch", json!({})));
    assert_eq!(out[0].rule_id, "default");
    assert_eq!(out[0].action, FindingAction::Alert);
    let out = run(
        &mut d,
        &call(
            None,
            "fs",
            "write",
            json!({"files": [{"name": "ok.txt"}, {"name": "../../etc/passwd"}]}),
        ),
    );
    assert_eq!(out.len(), 1);
    assert_eq!(
        out[0].evidence["arguments"][0]["path"],
        "arguments.files[1].name"
    );
}

#[test]
fn tool_schema_limits_are_checked_from_the_latest_listing_and_survive_restore() {
    let toml = "[detectors.policy]\ntool_schemas = \"enforce\"\nmax_schemas = 1\n";
    let mut d = detector(toml);
    let schema = json!({"type": "object", "properties": {"q": {"type": "string", "maxLength": 5}}, "additionalProperties": false});
    assert!(run(&mut d, &listing("search", "find", schema)).is_empty());
    let bad = call(None, "search", "find", json!({"q": "too long", "extra": 1}));
    let out = run(&mut d, &bad);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].rule_id, "tool_schema");
    assert_eq!(out[0].action, FindingAction::Block);
    assert_eq!(out[0].evidence["problems"].as_array().unwrap().len(), 2);

    let snapshot = d.snapshot().unwrap();
    let mut restored = detector(toml);
    restored.restore(&snapshot).unwrap();
    assert_eq!(run(&mut restored, &bad), out);

    // max_schemas = 1: a second tool's schema evicts the first.
    run(
        &mut d,
        &listing("search", "other", json!({"type": "object"})),
    );
    assert!(run(&mut d, &bad).is_empty());
    assert!(restored.restore(b"not json").is_err());
}

#[test]
fn config_errors_name_the_key() {
    let e = build_error(
        "[detectors.policy]\n[[detectors.policy.rules]]\nid = \"r\"\n[[detectors.policy.rules.arguments]]\npath = \"a\"\npattern = \"(\"\n",
    );
    assert!(e.contains("rules[0] (\"r\").arguments[0].pattern"), "{e}");
    let e = build_error(
        "[detectors.policy]\n[[detectors.policy.rules]]\nid = \"r\"\n[[detectors.policy.rules]]\nid = \"r\"\n",
    );
    assert!(e.contains("duplicate rule id"), "{e}");
    let e =
        build_error("[detectors.policy]\n[[detectors.policy.rules]]\nid = \"r\"\ntool = [\"x\"]\n");
    assert!(e.contains("unknown field `tool`"), "{e}");
    let e = build_error(
        "[detectors.policy]\n[[detectors.policy.rules]]\nid = \"r\"\neffect = \"constrain\"\n",
    );
    assert!(e.contains("needs `arguments`"), "{e}");
    let e = build_error("[detectors.policy]\ndefault = \"maybe\"\n");
    assert!(e.contains("unknown variant `maybe`"), "{e}");
}

#[test]
fn the_sink_can_check_a_call_without_the_detector() {
    let settings: PolicySettings = toml_settings(SUPPORT_POLICY);
    let policy = compile(&settings).unwrap();
    let args = json!({}).as_object().cloned().unwrap();
    let mut violations = Vec::new();
    policy.check(
        &CallView {
            agent_id: "a",
            role: Some("support-bot"),
            server: "shell",
            tool: "exec",
            arguments: &args,
        },
        &mut violations,
    );
    assert_eq!(violations.len(), 1);
    assert_eq!(violations[0].rule_id(), "support-no-other-servers");
}

fn toml_settings(toml: &str) -> PolicySettings {
    let config = Config::from_toml(toml, "test").unwrap();
    serde_json::from_value(config.detectors["policy"].clone()).unwrap()
}

/// Issue 19: a message the sink read only leniently (a parser differential) is a
/// finding in the engine, refused or not, and says which liberties were taken.
#[test]
fn issue_19_a_leniently_read_message_is_an_unparseable_message_finding() {
    let mut d = detector("");
    let mut refused = call(None, "fs", "echo", json!({"m": "\u{FFFD}"}));
    refused
        .labels
        .insert("toolgate.unparseable".into(), "lone_surrogate".into());
    refused.sink_action = Some(toolgate_protocol::event::SinkAction {
        action: toolgate_protocol::event::SinkActionKind::Blocked,
        rule: Some("sink.unparseable".into()),
        reason: None,
    });
    let found = run(&mut d, &refused);
    let f = found
        .iter()
        .find(|f| f.rule_id == "unparseable_message")
        .expect("finding");
    assert_eq!(f.severity, Severity::High);
    assert_eq!(f.evidence["quirks"], "lone_surrogate");
    assert_eq!(f.evidence["refused_at_sink"], true);

    let mut forwarded = call(None, "fs", "echo", json!({"pad": f64::MAX}));
    forwarded
        .labels
        .insert("toolgate.unparseable".into(), "non_finite_number".into());
    let found = run(&mut d, &forwarded);
    let f = found
        .iter()
        .find(|f| f.rule_id == "unparseable_message")
        .expect("finding");
    assert_eq!(f.evidence["refused_at_sink"], false);

    // An ordinary call raises none.
    let plain = call(None, "fs", "echo", json!({"m": "hi"}));
    assert!(run(&mut d, &plain).is_empty());
}

/// Issue 22: padding arguments past the sink's limit was a way past every check. The
/// sink refuses such a call and reports its head and tail, labelled truncated; policy
/// raises `oversized_arguments`, blocking in enforce mode.
#[test]
fn issue_22_a_call_too_large_to_inspect_is_an_oversized_arguments_finding() {
    let truncated = || {
        let mut e = call(
            None,
            "mail",
            "send_email",
            json!({"toolgate.truncated_head": "{"}),
        );
        for (k, v) in [
            ("toolgate.truncated", "true"),
            ("toolgate.original_bytes", "25000000"),
            ("toolgate.original_sha256", "ab"),
        ] {
            e.labels.insert(k.into(), v.into());
        }
        e
    };
    let found = run(&mut detector(""), &truncated());
    let f = found
        .iter()
        .find(|f| f.rule_id == "oversized_arguments")
        .expect("finding");
    assert_eq!(f.severity, Severity::High);
    assert_eq!(f.evidence["original_bytes"], "25000000");
    assert_eq!(f.action, FindingAction::Alert, "monitor unless asked");
    let enforcing = "[detectors.policy]\noversized_arguments = \"enforce\"\n";
    let found = run(&mut detector(enforcing), &truncated());
    let f = found
        .iter()
        .find(|f| f.rule_id == "oversized_arguments")
        .expect("finding");
    assert_eq!(f.action, FindingAction::Block);
}

/// Issue 19: sinks and the OTLP receiver redact before publishing, so the engine's
/// `secrets` detector saw only `[REDACTED:aws_access_key]` and raised nothing. The
/// event's `redacted` list carries what was there; the finding names kind and field.
#[test]
fn issue_19_secrets_redacted_upstream_are_still_found_from_the_redacted_list() {
    let config = Config::from_toml("", "test").unwrap();
    let mut secrets = build_detectors(&registry(), &config)
        .unwrap()
        .into_iter()
        .find(|d| d.name() == "secrets")
        .expect("secrets registered");
    let mut sent = call(
        None,
        "web",
        "post",
        json!({"body": "[REDACTED:aws_access_key]"}),
    );
    sent.redacted = vec![toolgate_protocol::event::Redacted {
        kind: "aws_access_key".into(),
        field: "arguments.body".into(),
    }];
    let found = run(&mut secrets, &sent);
    let f = found
        .iter()
        .find(|f| f.rule_id == "secret_in_arguments")
        .expect("a finding from the redacted list");
    assert_eq!(f.evidence["kinds"], json!(["aws_access_key"]));
    assert_eq!(f.evidence["matches"][0]["field"], "arguments.body");
    // The same event from a raw source, redacted by the engine itself, finds the same.
    let mut raw = call(
        None,
        "web",
        "post",
        json!({"body": "key AKIAIOSFODNN7EXAMPLE"}),
    );
    raw.redacted.clear();
    let direct = run(&mut secrets, &raw);
    assert_eq!(direct[0].evidence["kinds"], f.evidence["kinds"]);
    // A class name or an unknown kind in the list is not taken for a kind.
    let mut odd = sent.clone();
    odd.redacted[0].kind = "credentials".into();
    assert!(run(&mut secrets, &odd).is_empty());
}
