//! Conditions on one event, as written under a rule step's `where`: a table of field
//! paths and matchers, combined with `any_of`, `all_of` and `none_of`.
//!
//! ```toml
//! where = { kind = "tool_call", trust_domain = "external", tool = ["send_*", "post_*"],
//!           "arguments.to" = { ends_with = ["@gmail.com", "@proton.me"] },
//!           "arguments.amount" = { gt = 1000 } }
//! ```
//!
//! A plain string is a glob, a list of strings is any of those globs; a table holds
//! operators that must all hold. String comparisons ignore case (as Sigma's do) except
//! `regex`, which takes its own flags (`(?i)`). A field that holds a list (an argument
//! that is an array) matches when any element does.

use std::borrow::Cow;

use regex::Regex;
use serde_json::{Map, Value};
use toolgate_protocol::Event;
use toolgate_protocol::config::Config;
use toolgate_protocol::event::EventBody;

use crate::glob::Glob;

/// Something on an event a condition can look at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Field {
    /// `kind`: `tool_list`, `tool_call`, `tool_result`, `user_message`.
    Kind,
    /// `agent_id`.
    AgentId,
    /// `session_id`.
    SessionId,
    /// `agent_role`.
    AgentRole,
    /// `host`.
    Host,
    /// `server`.
    Server,
    /// `tool`.
    Tool,
    /// `trust_domain`: the server's domain as the config resolves it.
    TrustDomain,
    /// `call_id`.
    CallId,
    /// `labels.<name>`.
    Label(String),
    /// `arguments` (the whole object as JSON) or `arguments.<a>.<b>`.
    Argument(Vec<String>),
    /// `result.text`: the text content of a result.
    ResultText,
    /// `result.is_error`.
    ResultIsError,
    /// `text`: a user message.
    Text,
    /// `sink_action`: what the sink did (`allowed`, `blocked`, `held`).
    SinkAction,
}

impl Field {
    /// Reads a field path; OpenTelemetry GenAI names are accepted for the fields they
    /// name.
    pub fn parse(path: &str) -> Result<Field, String> {
        Ok(match path {
            "kind" => Field::Kind,
            "agent_id" | "gen_ai.agent.id" => Field::AgentId,
            "session_id" | "gen_ai.conversation.id" => Field::SessionId,
            "agent_role" => Field::AgentRole,
            "host" | "host.name" => Field::Host,
            "server" | "mcp.server.name" => Field::Server,
            "tool" | "gen_ai.tool.name" => Field::Tool,
            "trust_domain" => Field::TrustDomain,
            "call_id" | "gen_ai.tool.call.id" => Field::CallId,
            "result.text" => Field::ResultText,
            "result.is_error" | "result.isError" => Field::ResultIsError,
            "text" => Field::Text,
            "sink_action" => Field::SinkAction,
            "arguments" => Field::Argument(Vec::new()),
            _ => {
                if let Some(name) = path.strip_prefix("labels.").filter(|n| !n.is_empty()) {
                    Field::Label(name.to_string())
                } else if let Some(rest) = path.strip_prefix("arguments.") {
                    let parts: Vec<String> = rest.split('.').map(str::to_string).collect();
                    if parts.iter().any(String::is_empty) {
                        return Err(format!("field {path:?} has an empty part"));
                    }
                    Field::Argument(parts)
                } else {
                    return Err(format!(
                        "unknown field {path:?}; fields are kind, agent_id, session_id, agent_role, host, server, tool, trust_domain, call_id, labels.<name>, arguments[.<path>], result.text, result.is_error, text, sink_action"
                    ));
                }
            }
        })
    }

    /// The field's values on `event` (none when it does not have it).
    pub fn values<'e>(&self, event: &'e Event, config: &'e Config, out: &mut Vec<FieldValue<'e>>) {
        let s = |v: &'e str| FieldValue::Str(Cow::Borrowed(v));
        match self {
            Field::Kind => out.push(s(event.kind().as_str())),
            Field::AgentId => out.push(s(&event.agent_id)),
            Field::SessionId => out.push(s(&event.session_id)),
            Field::AgentRole => out.extend(event.agent_role.as_deref().map(s)),
            Field::Host => out.extend(event.host.as_deref().map(s)),
            Field::Server => out.extend(event.server().map(s)),
            Field::Tool => out.extend(event.tool().map(s)),
            Field::TrustDomain => {
                if let Some(server) = event.server() {
                    out.push(s(
                        config.trust_domain_of(server, event.trust_domain.as_deref())
                    ));
                }
            }
            Field::CallId => out.extend(event.call_id().map(s)),
            Field::Label(name) => out.extend(event.labels.get(name).map(|v| s(v))),
            Field::Argument(path) => {
                if let EventBody::ToolCall { arguments, .. } = &event.body {
                    argument_values(arguments, path, out);
                }
            }
            Field::ResultText => {
                if let EventBody::ToolResult { result, .. } = &event.body {
                    out.extend(result.texts().map(s));
                }
            }
            Field::ResultIsError => {
                if let EventBody::ToolResult { result, .. } = &event.body {
                    out.push(FieldValue::Bool(result.is_error.unwrap_or(false)));
                }
            }
            Field::Text => {
                if let EventBody::UserMessage { text } = &event.body {
                    out.push(s(text));
                }
            }
            Field::SinkAction => {
                if let Some(a) = &event.sink_action
                    && let Ok(Value::String(action)) = serde_json::to_value(a.action)
                {
                    out.push(FieldValue::Str(Cow::Owned(action)));
                }
            }
        }
    }
}

fn argument_values<'e>(
    args: &'e Map<String, Value>,
    path: &[String],
    out: &mut Vec<FieldValue<'e>>,
) {
    if path.is_empty() {
        out.push(FieldValue::Str(Cow::Owned(
            Value::Object(args.clone()).to_string(),
        )));
        return;
    }
    let mut node = match args.get(&path[0]) {
        Some(v) => v,
        None => return,
    };
    for key in &path[1..] {
        node = match node {
            Value::Object(o) => match o.get(key) {
                Some(v) => v,
                None => return,
            },
            Value::Array(items) => match key.parse::<usize>().ok().and_then(|i| items.get(i)) {
                Some(v) => v,
                None => return,
            },
            _ => return,
        };
    }
    push_json(node, out, true);
}

fn push_json<'e>(v: &'e Value, out: &mut Vec<FieldValue<'e>>, expand: bool) {
    match v {
        Value::String(s) => out.push(FieldValue::Str(Cow::Borrowed(s))),
        Value::Number(n) => out.push(FieldValue::Num(
            n.as_f64().unwrap_or(f64::NAN),
            n.to_string(),
        )),
        Value::Bool(b) => out.push(FieldValue::Bool(*b)),
        Value::Null => out.push(FieldValue::Null),
        Value::Array(items) if expand => items.iter().for_each(|i| push_json(i, out, false)),
        other => out.push(FieldValue::Str(Cow::Owned(other.to_string()))),
    }
}

/// One value of a field.
#[derive(Debug, Clone, PartialEq)]
pub enum FieldValue<'e> {
    /// Text.
    Str(Cow<'e, str>),
    /// A number, and its JSON spelling.
    Num(f64, String),
    /// A boolean.
    Bool(bool),
    /// JSON null.
    Null,
}

impl FieldValue<'_> {
    /// The value as text (numbers and booleans as in JSON).
    pub fn text(&self) -> Cow<'_, str> {
        match self {
            FieldValue::Str(s) => Cow::Borrowed(s.as_ref()),
            FieldValue::Num(_, s) => Cow::Borrowed(s.as_str()),
            FieldValue::Bool(b) => Cow::Borrowed(if *b { "true" } else { "false" }),
            FieldValue::Null => Cow::Borrowed("null"),
        }
    }
}

/// A compiled test on one field's values.
#[derive(Debug, Clone)]
pub enum Matcher {
    /// Any of these globs (case-insensitive).
    Glob(Vec<Glob>),
    /// Contains any of these (lowercase).
    Contains(Vec<String>),
    /// Contains every one of these (lowercase).
    ContainsAll(Vec<String>),
    /// Starts with any of these (lowercase).
    StartsWith(Vec<String>),
    /// Ends with any of these (lowercase).
    EndsWith(Vec<String>),
    /// Matches the regex.
    Regex(Regex),
    /// A number compared with a bound.
    Compare(Cmp, f64),
    /// The field is present (or absent).
    Exists(bool),
    /// Equal to a boolean.
    Bool(bool),
    /// Every one of these holds.
    All(Vec<Matcher>),
}

/// A numeric comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cmp {
    /// `>`.
    Gt,
    /// `>=`.
    Gte,
    /// `<`.
    Lt,
    /// `<=`.
    Lte,
}

fn strings(v: &Value, what: &str) -> Result<Vec<String>, String> {
    match v {
        Value::String(s) => Ok(vec![s.to_lowercase()]),
        Value::Array(items) => items
            .iter()
            .map(|i| match i {
                Value::String(s) => Ok(s.to_lowercase()),
                Value::Number(n) => Ok(n.to_string()),
                other => Err(format!("`{what}` takes strings, found {other}")),
            })
            .collect(),
        Value::Number(n) => Ok(vec![n.to_string()]),
        other => Err(format!(
            "`{what}` takes a string or a list of strings, found {other}"
        )),
    }
}

impl Matcher {
    /// Compiles the value written for a field.
    pub fn compile(v: &Value) -> Result<Matcher, String> {
        match v {
            Value::String(_) | Value::Array(_) | Value::Number(_) => Ok(Matcher::Glob(
                strings(v, "glob")?
                    .iter()
                    .map(|g| Glob::new_case_insensitive(g))
                    .collect(),
            )),
            Value::Bool(b) => Ok(Matcher::Bool(*b)),
            Value::Object(ops) => {
                let mut all = Vec::new();
                for (op, arg) in ops {
                    let number = || {
                        arg.as_f64()
                            .ok_or_else(|| format!("`{op}` takes a number, found {arg}"))
                    };
                    all.push(match op.as_str() {
                        "glob" => Matcher::compile(arg)?,
                        "contains" => Matcher::Contains(strings(arg, op)?),
                        "contains_all" => Matcher::ContainsAll(strings(arg, op)?),
                        "starts_with" => Matcher::StartsWith(strings(arg, op)?),
                        "ends_with" => Matcher::EndsWith(strings(arg, op)?),
                        "regex" => {
                            let pattern = arg
                                .as_str()
                                .ok_or_else(|| format!("`regex` takes a string, found {arg}"))?;
                            Matcher::Regex(
                                Regex::new(pattern)
                                    .map_err(|e| format!("`regex` {pattern:?}: {e}"))?,
                            )
                        }
                        "gt" => Matcher::Compare(Cmp::Gt, number()?),
                        "gte" => Matcher::Compare(Cmp::Gte, number()?),
                        "lt" => Matcher::Compare(Cmp::Lt, number()?),
                        "lte" => Matcher::Compare(Cmp::Lte, number()?),
                        "exists" => Matcher::Exists(
                            arg.as_bool()
                                .ok_or_else(|| format!("`exists` takes true or false, found {arg}"))?,
                        ),
                        other => {
                            return Err(format!(
                                "unknown operator `{other}`; operators are glob, contains, contains_all, starts_with, ends_with, regex, gt, gte, lt, lte, exists"
                            ));
                        }
                    });
                }
                if all.is_empty() {
                    return Err("an empty operator table matches nothing".into());
                }
                Ok(if all.len() == 1 {
                    all.remove(0)
                } else {
                    Matcher::All(all)
                })
            }
            Value::Null => Err("null is not a matcher; use { exists = false }".into()),
        }
    }

    /// Whether the field's values (none when absent) satisfy the matcher.
    pub fn matches(&self, values: &[FieldValue<'_>]) -> bool {
        match self {
            Matcher::Exists(want) => values.is_empty() != *want,
            Matcher::All(all) => all.iter().all(|m| m.matches(values)),
            _ => values.iter().any(|v| self.matches_one(v)),
        }
    }

    fn matches_one(&self, v: &FieldValue<'_>) -> bool {
        let lower = || {
            let t = v.text();
            if t.chars().any(char::is_uppercase) {
                Cow::Owned(t.to_lowercase())
            } else {
                t
            }
        };
        match self {
            Matcher::Glob(globs) => {
                let t = v.text();
                globs.iter().any(|g| g.matches(&t))
            }
            Matcher::Contains(subs) => {
                let t = lower();
                subs.iter().any(|s| t.contains(s.as_str()))
            }
            Matcher::ContainsAll(subs) => {
                let t = lower();
                subs.iter().all(|s| t.contains(s.as_str()))
            }
            Matcher::StartsWith(p) => {
                let t = lower();
                p.iter().any(|s| t.starts_with(s.as_str()))
            }
            Matcher::EndsWith(p) => {
                let t = lower();
                p.iter().any(|s| t.ends_with(s.as_str()))
            }
            Matcher::Regex(re) => re.is_match(&v.text()),
            Matcher::Compare(cmp, bound) => {
                let x = match v {
                    FieldValue::Num(x, _) => *x,
                    FieldValue::Str(s) => match s.trim().parse::<f64>() {
                        Ok(x) => x,
                        Err(_) => return false,
                    },
                    _ => return false,
                };
                match cmp {
                    Cmp::Gt => x > *bound,
                    Cmp::Gte => x >= *bound,
                    Cmp::Lt => x < *bound,
                    Cmp::Lte => x <= *bound,
                }
            }
            Matcher::Bool(b) => match v {
                FieldValue::Bool(x) => x == b,
                other => other
                    .text()
                    .eq_ignore_ascii_case(if *b { "true" } else { "false" }),
            },
            Matcher::Exists(_) | Matcher::All(_) => self.matches(std::slice::from_ref(v)),
        }
    }
}

/// A compiled `where`.
#[derive(Debug, Clone)]
pub enum Condition {
    /// Every part holds (a `where` table's entries).
    All(Vec<Condition>),
    /// At least one part holds.
    Any(Vec<Condition>),
    /// The part does not hold.
    Not(Box<Condition>),
    /// A field test.
    Field(Field, Matcher),
}

impl Condition {
    /// Compiles a `where` table. Keys are field paths, or `any_of` / `all_of` /
    /// `none_of` with a list of tables. A nested table whose keys are not operators
    /// continues the path (`arguments = { to = "*@x.com" }` is `arguments.to`).
    pub fn compile(table: &Map<String, Value>) -> Result<Condition, String> {
        let mut parts = Vec::new();
        compile_into(table, "", &mut parts)?;
        Ok(if parts.len() == 1 {
            parts.remove(0)
        } else {
            Condition::All(parts)
        })
    }

    /// Whether `event` satisfies the condition.
    pub fn matches(&self, event: &Event, config: &Config) -> bool {
        match self {
            Condition::All(all) => all.iter().all(|c| c.matches(event, config)),
            Condition::Any(any) => any.iter().any(|c| c.matches(event, config)),
            Condition::Not(c) => !c.matches(event, config),
            Condition::Field(field, matcher) => {
                let mut values = Vec::new();
                field.values(event, config, &mut values);
                matcher.matches(&values)
            }
        }
    }
}

const OPERATORS: [&str; 11] = [
    "glob",
    "contains",
    "contains_all",
    "starts_with",
    "ends_with",
    "regex",
    "gt",
    "gte",
    "lt",
    "lte",
    "exists",
];

fn compile_into(
    table: &Map<String, Value>,
    prefix: &str,
    out: &mut Vec<Condition>,
) -> Result<(), String> {
    for (key, value) in table {
        let path = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        let combinator =
            prefix.is_empty() && matches!(key.as_str(), "any_of" | "all_of" | "none_of");
        if combinator {
            let items = value
                .as_array()
                .ok_or_else(|| format!("`{key}` takes a list of tables, found {value}"))?;
            let mut parts = Vec::new();
            for (i, item) in items.iter().enumerate() {
                let t = item
                    .as_object()
                    .ok_or_else(|| format!("`{key}[{i}]` must be a table, found {item}"))?;
                parts.push(Condition::compile(t).map_err(|e| format!("`{key}[{i}]`: {e}"))?);
            }
            if parts.is_empty() {
                return Err(format!("`{key}` is empty"));
            }
            out.push(match key.as_str() {
                "any_of" => Condition::Any(parts),
                "all_of" => Condition::All(parts),
                _ => Condition::Not(Box::new(Condition::Any(parts))),
            });
            continue;
        }
        if let Value::Object(inner) = value
            && !inner.is_empty()
            && !inner.keys().all(|k| OPERATORS.contains(&k.as_str()))
        {
            compile_into(inner, &path, out)?;
            continue;
        }
        let field = Field::parse(&path)?;
        let matcher = Matcher::compile(value).map_err(|e| format!("`{path}`: {e}"))?;
        out.push(Condition::Field(field, matcher));
    }
    if out.is_empty() && prefix.is_empty() {
        return Err(
            "`where` is empty; write `where = {}` only through `kind` or another field".into(),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(v: Value) -> Event {
        let mut base = json!({
            "schema": "toolgate.event.v1", "event_id": "e1", "time": "2025-01-01T00:00:00Z",
            "agent_id": "a", "session_id": "s", "agent_role": "support-bot",
        });
        if let (Some(b), Some(o)) = (base.as_object_mut(), v.as_object()) {
            b.extend(o.clone());
        }
        Event::from_value(base).unwrap_or_else(|e| panic!("{e}"))
    }

    fn cond(v: Value) -> Condition {
        match v {
            Value::Object(t) => Condition::compile(&t).unwrap_or_else(|e| panic!("{e}")),
            _ => panic!("not a table"),
        }
    }

    #[test]
    fn fields_operators_and_combinators() {
        let config = Config::from_toml("[servers.mail]\ntrust_domain = \"external\"\n", "t")
            .unwrap_or_else(|e| panic!("{e}"));
        let call = event(json!({
            "kind": "tool_call", "server": "mail", "tool": "send_email", "call_id": "c1",
            "arguments": {"to": ["ann@corp.example", "x@Proton.me"], "amount": 1500, "meta": {"urgent": true}}
        }));
        let yes = [
            json!({"kind": "tool_call", "trust_domain": "external", "tool": ["send_*", "post_*"]}),
            json!({"arguments.to": {"ends_with": "@proton.me"}}),
            json!({"arguments": {"to": {"ends_with": ["@gmail.com", "@proton.me"]}}}),
            json!({"arguments.amount": {"gt": 1000, "lte": 1500}}),
            json!({"arguments.meta.urgent": true}),
            json!({"arguments.cc": {"exists": false}, "agent_role": "support-*"}),
            json!({"any_of": [{"tool": "nope"}, {"server": "MAIL"}]}),
            json!({"none_of": [{"tool": "read_*"}]}),
            json!({"gen_ai.tool.name": {"regex": "^send_(e|sms)"}}),
            json!({"arguments": {"contains_all": ["ann@", "proton"]}}),
        ];
        for c in yes {
            assert!(cond(c.clone()).matches(&call, &config), "{c} should match");
        }
        let no = [
            json!({"kind": "tool_result"}),
            json!({"arguments.amount": {"gt": 1500}}),
            json!({"arguments.to": {"starts_with": "bob"}}),
            json!({"arguments.cc": {"exists": true}}),
            json!({"none_of": [{"tool": "send_*"}]}),
            json!({"labels.team": "x"}),
        ];
        for c in no {
            assert!(
                !cond(c.clone()).matches(&call, &config),
                "{c} should not match"
            );
        }
    }

    #[test]
    fn bad_conditions_say_what_is_wrong() {
        let err = |v: Value| match v {
            Value::Object(t) => Condition::compile(&t).err().unwrap_or_default(),
            _ => String::new(),
        };
        assert!(err(json!({"tool_name": "x"})).contains("unknown field \"tool_name\""));
        assert!(err(json!({"tool": {"gt": "x"}})).contains("`gt` takes a number"));
        assert!(err(json!({"tool": {"regex": "("}})).contains("`tool`: `regex`"));
        assert!(err(json!({"any_of": "x"})).contains("`any_of` takes a list"));
        assert!(err(json!({"arguments.": "x"})).contains("empty part"));
    }
}
