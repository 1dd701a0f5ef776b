//! The policy check the sink runs before forwarding a call (target: ≤ 5 µs per call),
//! and the `policy` detector's whole `observe` on the same call (policy plus the
//! tool's own schema), with a policy of 18 rules shaped like a real deployment.
//!
//! `cargo bench --bench policy`

use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::json;
use std::hint::black_box;
use toolgate_detectors::policy::{CallView, PolicySettings, compile};
use toolgate_detectors::{build_detectors, registry};
use toolgate_protocol::Event;
use toolgate_protocol::config::Config;

fn policy_toml() -> String {
    let mut toml = String::from("[detectors.policy]\ntool_schemas = \"enforce\"\n");
    for (i, role) in ["support", "finance", "ops", "research", "sales"]
        .iter()
        .enumerate()
    {
        toml += &format!(
            "[[detectors.policy.rules]]\nid = \"{role}-tickets\"\nroles = [\"{role}-*\"]\nservers = [\"tickets\", \"kb-{i}\"]\neffect = \"allow\"\n\
             [[detectors.policy.rules]]\nid = \"{role}-no-shell\"\nroles = [\"{role}-*\"]\nservers = [\"shell*\", \"k8s-*\"]\neffect = \"deny\"\n\
             [[detectors.policy.rules]]\nid = \"{role}-payments\"\nroles = [\"{role}-*\"]\ntools = [\"send_money\", \"schedule_*\"]\neffect = \"require_approval\"\n"
        );
    }
    toml += r#"
[[detectors.policy.rules]]
id = "mail-limits"
servers = ["mail"]
tools = ["send_email"]
effect = "constrain"
[[detectors.policy.rules.arguments]]
path = "recipients"
forbidden_values = ["*@gmail.com", "*@*.ru", "*@protonmail.*"]
max_items = 10
[[detectors.policy.rules.arguments]]
path = "body"
max_bytes = 20000
forbidden_patterns = ['-----BEGIN [A-Z ]*PRIVATE KEY-----']
[[detectors.policy.rules.arguments]]
path = "subject"
required = true
max_bytes = 200

[[detectors.policy.rules]]
id = "files"
tools = ["read_file", "write_file"]
effect = "constrain"
[[detectors.policy.rules.arguments]]
path = "path"
forbidden_patterns = ['(^|/)\.ssh/', '(^|/)\.env$', '^/etc/']

[[detectors.policy.rules]]
id = "default-allow-mail"
servers = ["mail", "calendar", "drive"]
effect = "allow"
"#;
    toml
}

fn call() -> Event {
    Event::from_value(json!({
        "schema": "toolgate.event.v1", "kind": "tool_call", "event_id": "e", "time": "2025-01-01T00:00:00Z",
        "agent_id": "agent-7", "session_id": "s", "agent_role": "sales-assistant", "server": "mail",
        "call_id": "c", "tool": "send_email",
        "arguments": {"recipients": ["emma.johnson@bluesparrowtech.com", "david.smith@bluesparrowtech.com"],
                      "subject": "Quarterly numbers", "body": "Hi both, the Q3 numbers are attached. Best, Anna".repeat(4)}
    }))
    .expect("bench event")
}

fn policy(c: &mut Criterion) {
    let config = Config::from_toml(&policy_toml(), "bench").expect("bench config");
    let settings: PolicySettings =
        serde_json::from_value(config.detectors["policy"].clone()).expect("settings");
    let compiled = compile(&settings).expect("policy compiles");
    let event = call();
    let toolgate_protocol::EventBody::ToolCall { arguments, .. } = &event.body else {
        unreachable!("a tool_call");
    };
    let view = CallView {
        agent_id: &event.agent_id,
        role: event.agent_role.as_deref(),
        server: "mail",
        tool: "send_email",
        arguments,
    };
    let mut group = c.benchmark_group("policy");
    group.bench_function("check_call_18_rules", |b| {
        let mut out = Vec::new();
        b.iter(|| {
            out.clear();
            compiled.check(black_box(&view), &mut out);
            black_box(out.len())
        })
    });
    let mut detector = build_detectors(&registry(), &config)
        .expect("detectors")
        .into_iter()
        .find(|d| d.name() == "policy")
        .expect("policy detector");
    let listing = Event::from_value(json!({
        "schema": "toolgate.event.v1", "kind": "tool_list", "event_id": "l", "time": "2025-01-01T00:00:00Z",
        "agent_id": "agent-7", "session_id": "s", "server": "mail",
        "tools": [{"name": "send_email", "inputSchema": {"type": "object", "properties": {
            "recipients": {"type": "array", "items": {"type": "string"}, "maxItems": 20},
            "subject": {"type": "string", "maxLength": 500}, "body": {"type": "string"}},
            "required": ["recipients", "subject", "body"], "additionalProperties": false}}]
    }))
    .expect("listing");
    let mut drafts = Vec::new();
    detector.observe(&listing, &mut drafts);
    group.bench_function("detector_observe_call_with_schema", |b| {
        b.iter(|| {
            drafts.clear();
            detector.observe(black_box(&event), &mut drafts);
            black_box(drafts.len())
        })
    });
    group.finish();
}

criterion_group!(benches, policy);
criterion_main!(benches);
