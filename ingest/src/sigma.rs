//! Sigma rules (detection and correlation) converted into toolgate's rule format.
//!
//! toolgate's own format (`[[detectors.sequence.rules]]`) is the core: it is what the
//! sequence detector compiles, and it says directly what a sequence of tool calls
//! needs (ordered steps with per-step join fields, "not followed by"). Sigma is the
//! format SOC teams already write and share, so it is imported onto that core:
//!
//! | Sigma | toolgate rule |
//! | --- | --- |
//! | detection rule | one step (`kind = "sequence"`, no `within`): a single-event rule |
//! | `event_count` correlation | `kind = "count"`, `threshold` from `gte`/`gt` |
//! | `value_count` correlation | `kind = "distinct"`, `field` and `threshold` |
//! | `temporal` correlation | `kind = "unordered"`, one step per referenced rule |
//! | `temporal_ordered` correlation | `kind = "sequence"`, steps in the listed order |
//!
//! Field names are toolgate event fields (`tool`, `server`, `trust_domain`,
//! `arguments.to`, `result.text`, ...); the OpenTelemetry GenAI names
//! (`gen_ai.tool.name`, ...) are accepted too. `logsource.category` may name the event
//! kind (`tool_call`, `tool_result`, `tool_list`, `user_message`) and
//! `logsource.service` the server. Supported value modifiers: `contains`,
//! `startswith`, `endswith`, `all`, `re`, `gt`, `gte`, `lt`, `lte`, `exists`, `cased`
//! is refused (toolgate compares text case-insensitively, as Sigma does by default).
//! Anything else is an error naming the rule and the key, never silently dropped.
//!
//! The output is rule tables as JSON values; the sequence detector checks them like
//! any rule written by hand. This module depends on nothing but serde.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{Map, Value, json};

/// A Sigma document that cannot be converted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("sigma {origin}, document {document} ({rule}): {message}")]
#[non_exhaustive]
pub struct SigmaError {
    /// File name or `<inline>`.
    pub origin: String,
    /// 1-based document number in the file.
    pub document: usize,
    /// The rule's title or id.
    pub rule: String,
    /// What is wrong, naming the key.
    pub message: String,
}

struct Doc {
    number: usize,
    value: Map<String, Value>,
}

impl Doc {
    fn label(&self) -> String {
        ["title", "name", "id"]
            .iter()
            .find_map(|k| self.value.get(*k).and_then(Value::as_str))
            .unwrap_or("untitled")
            .to_string()
    }

    fn refs(&self) -> Vec<String> {
        ["name", "id", "title"]
            .iter()
            .filter_map(|k| {
                self.value
                    .get(*k)
                    .and_then(Value::as_str)
                    .map(str::to_string)
            })
            .collect()
    }
}

/// Converts every rule in a (multi-document) Sigma YAML text into rule tables.
pub fn convert(text: &str, origin: &str) -> Result<Vec<Value>, SigmaError> {
    let mut docs = Vec::new();
    for (i, doc) in serde_norway::Deserializer::from_str(text).enumerate() {
        let err = |message: String| SigmaError {
            origin: origin.into(),
            document: i + 1,
            rule: "?".into(),
            message,
        };
        let value = Value::deserialize(doc).map_err(|e| err(format!("not valid YAML: {e}")))?;
        match value {
            Value::Object(map) => docs.push(Doc {
                number: i + 1,
                value: map,
            }),
            Value::Null => {}
            other => return Err(err(format!("a rule must be a mapping, found {other}"))),
        }
    }
    let fail = |doc: &Doc, message: String| SigmaError {
        origin: origin.into(),
        document: doc.number,
        rule: doc.label(),
        message,
    };
    let mut conditions: BTreeMap<String, (usize, Value)> = BTreeMap::new();
    for (i, doc) in docs.iter().enumerate() {
        if doc.value.contains_key("detection") {
            let cond = detection(&doc.value).map_err(|m| fail(doc, m))?;
            for r in doc.refs() {
                conditions.insert(r, (i, cond.clone()));
            }
        }
    }
    let mut referenced = vec![false; docs.len()];
    let mut out = Vec::new();
    for doc in &docs {
        if let Some(corr) = doc.value.get("correlation") {
            let (rule, used) = correlation(doc, corr, &conditions).map_err(|m| fail(doc, m))?;
            let generate = corr
                .get("generate")
                .and_then(Value::as_bool)
                .unwrap_or(false);
            if !generate {
                for u in used {
                    referenced[u] = true;
                }
            }
            out.push(rule);
        } else if !doc.value.contains_key("detection") {
            return Err(fail(doc, "neither `detection` nor `correlation`".into()));
        }
    }
    let mut singles = Vec::new();
    for (i, doc) in docs.iter().enumerate() {
        if doc.value.contains_key("detection") && !referenced[i] {
            let cond = detection(&doc.value).map_err(|m| fail(doc, m))?;
            let mut rule = header(doc).map_err(|m| fail(doc, m))?;
            rule["steps"] = json!([{ "where": cond }]);
            singles.push(rule);
        }
    }
    singles.extend(out);
    Ok(singles)
}

fn header(doc: &Doc) -> Result<Value, String> {
    let v = &doc.value;
    let id = v
        .get("name")
        .or_else(|| v.get("id"))
        .and_then(Value::as_str)
        .ok_or("a rule needs an `id` or a `name`")?;
    let severity = match v.get("level").and_then(Value::as_str) {
        None => "medium",
        Some("informational") => "info",
        Some(l @ ("low" | "medium" | "high" | "critical")) => l,
        Some(other) => return Err(format!("`level`: unknown level {other:?}")),
    };
    let mut rule = json!({
        "id": id,
        "severity": severity,
        "source": format!("sigma:{}", v.get("id").and_then(Value::as_str).unwrap_or(id)),
    });
    if let Some(t) = v.get("title").and_then(Value::as_str) {
        rule["title"] = json!(t);
    }
    if let Some(d) = v.get("description").and_then(Value::as_str) {
        rule["description"] = json!(d.trim());
    }
    if let Some(tags) = v.get("tags").and_then(Value::as_array) {
        rule["tags"] = json!(tags.iter().filter_map(Value::as_str).collect::<Vec<_>>());
    }
    Ok(rule)
}

/// The `where` of a detection rule: its condition over its selections, plus what its
/// `logsource` says.
fn detection(rule: &Map<String, Value>) -> Result<Value, String> {
    let det = rule
        .get("detection")
        .and_then(Value::as_object)
        .ok_or("`detection` must be a mapping")?;
    let cond_text = match det.get("condition") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(list)) if list.len() == 1 => list[0]
            .as_str()
            .ok_or("`detection.condition` must be a string")?
            .to_string(),
        Some(_) => return Err("`detection.condition`: one condition string is supported".into()),
        None => return Err("`detection.condition` is missing".into()),
    };
    let mut selections = BTreeMap::new();
    for (name, body) in det {
        if name == "condition" || name == "timeframe" {
            continue;
        }
        selections.insert(
            name.clone(),
            selection(body).map_err(|e| format!("`detection.{name}`: {e}"))?,
        );
    }
    let mut cond = Parser::new(&cond_text, &selections)
        .parse()
        .map_err(|e| format!("`detection.condition` {cond_text:?}: {e}"))?;
    if let Some(ls) = rule.get("logsource").and_then(Value::as_object) {
        let mut extra = Vec::new();
        if let Some(p) = ls.get("product").and_then(Value::as_str)
            && p != "toolgate"
        {
            return Err(format!(
                "`logsource.product` is {p:?}; toolgate reads rules for product `toolgate`"
            ));
        }
        match ls.get("category").and_then(Value::as_str) {
            Some(c @ ("tool_call" | "tool_result" | "tool_list" | "user_message")) => {
                extra.push(json!({"kind": c}))
            }
            Some(other) => {
                return Err(format!(
                    "`logsource.category` {other:?} is not an event kind (tool_call, tool_result, tool_list, user_message)"
                ));
            }
            None => {}
        }
        if let Some(s) = ls.get("service").and_then(Value::as_str) {
            extra.push(json!({"server": s}));
        }
        if !extra.is_empty() {
            extra.push(cond);
            cond = json!({"all_of": extra});
        }
    }
    Ok(cond)
}

/// A selection: a mapping (fields AND-ed), a list of mappings (OR-ed), or a list of
/// keywords (any text of the event contains one).
fn selection(body: &Value) -> Result<Value, String> {
    match body {
        Value::Object(fields) => {
            let mut parts = Vec::new();
            for (key, value) in fields {
                parts.push(field_test(key, value)?);
            }
            if parts.is_empty() {
                return Err("an empty selection".into());
            }
            Ok(if parts.len() == 1 {
                parts.remove(0)
            } else {
                json!({"all_of": parts})
            })
        }
        Value::Array(items) if items.iter().all(Value::is_object) && !items.is_empty() => {
            let parts = items.iter().map(selection).collect::<Result<Vec<_>, _>>()?;
            Ok(json!({"any_of": parts}))
        }
        Value::Array(items) if !items.is_empty() => {
            let words: Vec<String> = items.iter().map(scalar).collect::<Result<_, _>>()?;
            Ok(keywords(&words))
        }
        Value::String(_) | Value::Number(_) => Ok(keywords(&[scalar(body)?])),
        other => Err(format!(
            "a selection must be a mapping or a list, found {other}"
        )),
    }
}

fn keywords(words: &[String]) -> Value {
    let parts: Vec<Value> = ["arguments", "result.text", "text"]
        .iter()
        .map(|f| json!({ *f: {"contains": words} }))
        .collect();
    json!({ "any_of": parts })
}

fn scalar(v: &Value) -> Result<String, String> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        other => Err(format!("expected a string or number, found {other}")),
    }
}

/// `field|mod1|mod2: value(s)` as a where-table.
fn field_test(key: &str, value: &Value) -> Result<Value, String> {
    let mut parts = key.split('|');
    let field = parts.next().unwrap_or_default();
    if field.is_empty() {
        return Err(format!("`{key}`: empty field name"));
    }
    let mods: Vec<&str> = parts.collect();
    let mut op: Option<&str> = None;
    let mut all = false;
    for m in &mods {
        match *m {
            "contains" => op = Some("contains"),
            "startswith" => op = Some("starts_with"),
            "endswith" => op = Some("ends_with"),
            "re" => op = Some("regex"),
            "gt" | "gte" | "lt" | "lte" => op = Some(m),
            "exists" => op = Some("exists"),
            "all" => all = true,
            other => {
                return Err(format!(
                    "`{key}`: modifier `{other}` is not supported (contains, startswith, endswith, all, re, gt, gte, lt, lte, exists)"
                ));
            }
        }
    }
    let values: Vec<&Value> = match value {
        Value::Array(items) => items.iter().collect(),
        single => vec![single],
    };
    if values.is_empty() {
        return Err(format!("`{key}`: an empty list matches nothing"));
    }
    let one = |v: &Value| -> Result<Value, String> {
        Ok(match (op, v) {
            (_, Value::Null) => json!({"exists": false}),
            (Some("exists"), Value::Bool(b)) => json!({"exists": b}),
            (Some("exists"), other) => {
                return Err(format!(
                    "`{key}`: `exists` takes true or false, found {other}"
                ));
            }
            (Some(o @ ("gt" | "gte" | "lt" | "lte")), Value::Number(n)) => json!({ o: n }),
            (Some(o @ ("gt" | "gte" | "lt" | "lte")), other) => {
                return Err(format!("`{key}`: `{o}` takes a number, found {other}"));
            }
            (Some("regex"), Value::String(s)) => json!({"regex": s}),
            (Some(o), v) => json!({ o: scalar(v)? }),
            (None, Value::Bool(b)) => json!(b),
            (None, v) => json!({"glob": sigma_glob(&scalar(v)?)}),
        })
    };
    let tests: Vec<Value> = values
        .into_iter()
        .map(|v| one(v).map(|m| json!({ field: m })))
        .collect::<Result<_, _>>()?;
    Ok(match (tests.len(), all) {
        (1, _) => tests.into_iter().next().unwrap_or(Value::Null),
        (_, true) => json!({"all_of": tests}),
        (_, false) => json!({"any_of": tests}),
    })
}

/// Sigma's plain values use `*` and `?` as wildcards, with `\` escaping them; toolgate
/// globs have no escape, so an escaped wildcard is kept as the wildcard (a looser
/// match, never a missed one).
fn sigma_glob(s: &str) -> String {
    s.replace("\\*", "*")
        .replace("\\?", "?")
        .replace("\\\\", "\\")
}

/// The condition language: `and`, `or`, `not`, parentheses, `1 of sel*`, `all of
/// sel*`, `1 of them`, `all of them`.
struct Parser<'a> {
    tokens: Vec<String>,
    pos: usize,
    selections: &'a BTreeMap<String, Value>,
}

impl<'a> Parser<'a> {
    fn new(text: &str, selections: &'a BTreeMap<String, Value>) -> Self {
        let spaced = text.replace('(', " ( ").replace(')', " ) ");
        Parser {
            tokens: spaced.split_whitespace().map(str::to_string).collect(),
            pos: 0,
            selections,
        }
    }

    fn parse(mut self) -> Result<Value, String> {
        let v = self.or()?;
        match self.tokens.get(self.pos) {
            None => Ok(v),
            Some(t) => Err(format!("unexpected {t:?}")),
        }
    }

    fn peek(&self) -> Option<&str> {
        self.tokens.get(self.pos).map(String::as_str)
    }

    fn next(&mut self) -> Result<String, String> {
        let t = self.tokens.get(self.pos).cloned().ok_or("ends too early")?;
        self.pos += 1;
        Ok(t)
    }

    fn or(&mut self) -> Result<Value, String> {
        let mut parts = vec![self.and()?];
        while self.peek() == Some("or") {
            self.pos += 1;
            parts.push(self.and()?);
        }
        Ok(if parts.len() == 1 {
            parts.remove(0)
        } else {
            json!({"any_of": parts})
        })
    }

    fn and(&mut self) -> Result<Value, String> {
        let mut parts = vec![self.not()?];
        while self.peek() == Some("and") {
            self.pos += 1;
            parts.push(self.not()?);
        }
        Ok(if parts.len() == 1 {
            parts.remove(0)
        } else {
            json!({"all_of": parts})
        })
    }

    fn not(&mut self) -> Result<Value, String> {
        if self.peek() == Some("not") {
            self.pos += 1;
            return Ok(json!({"none_of": [self.not()?]}));
        }
        self.atom()
    }

    fn atom(&mut self) -> Result<Value, String> {
        let t = self.next()?;
        match t.as_str() {
            "(" => {
                let v = self.or()?;
                match self.next()?.as_str() {
                    ")" => Ok(v),
                    other => Err(format!("expected `)`, found {other:?}")),
                }
            }
            "1" | "all" | "any" => {
                if self.next()? != "of" {
                    return Err(format!("expected `of` after `{t}`"));
                }
                let pattern = self.next()?;
                let names: Vec<&String> = self
                    .selections
                    .keys()
                    .filter(|k| pattern == "them" || wildcard(&pattern, k))
                    .filter(|k| pattern != "them" || !k.starts_with('_'))
                    .collect();
                if names.is_empty() {
                    return Err(format!("`{t} of {pattern}` names no selection"));
                }
                let parts: Vec<Value> = names.iter().map(|n| self.selections[*n].clone()).collect();
                Ok(if t == "all" {
                    json!({"all_of": parts})
                } else {
                    json!({"any_of": parts})
                })
            }
            name => self
                .selections
                .get(name)
                .cloned()
                .ok_or_else(|| format!("no selection named {name:?}")),
        }
    }
}

fn wildcard(pattern: &str, name: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => pattern == name,
    }
}

/// A correlation rule; returns it and the documents it consumed.
fn correlation(
    doc: &Doc,
    corr: &Value,
    conditions: &BTreeMap<String, (usize, Value)>,
) -> Result<(Value, Vec<usize>), String> {
    let c = corr.as_object().ok_or("`correlation` must be a mapping")?;
    let kind = c
        .get("type")
        .and_then(Value::as_str)
        .ok_or("`correlation.type` is missing")?;
    let names: Vec<String> = match c.get("rules") {
        Some(Value::Array(r)) => r.iter().map(scalar).collect::<Result<_, _>>()?,
        Some(Value::String(s)) => vec![s.clone()],
        _ => return Err("`correlation.rules` must list rule names or ids".into()),
    };
    let mut used = Vec::new();
    let mut steps = Vec::new();
    for n in &names {
        let (i, cond) = conditions.get(n).ok_or_else(|| {
            format!("`correlation.rules`: no detection rule named {n:?} in this file")
        })?;
        used.push(*i);
        steps.push(json!({"name": n, "where": cond}));
    }
    let timespan = c
        .get("timespan")
        .and_then(Value::as_str)
        .ok_or("`correlation.timespan` is missing")?;
    let by: Vec<String> = match c.get("group-by") {
        Some(Value::Array(f)) => f.iter().map(scalar).collect::<Result<_, _>>()?,
        Some(other) => {
            return Err(format!(
                "`correlation.group-by` must be a list, found {other}"
            ));
        }
        None => Vec::new(),
    };
    let mut rule = header(doc)?;
    rule["within"] = json!(timespan);
    rule["by"] = json!(by);
    let threshold = |field_needed: bool| -> Result<(u64, Option<String>), String> {
        let cond = c
            .get("condition")
            .and_then(Value::as_object)
            .ok_or("`correlation.condition` is missing")?;
        let field = cond
            .get("field")
            .and_then(Value::as_str)
            .map(str::to_string);
        if field_needed && field.is_none() {
            return Err("`correlation.condition.field` is required for value_count".into());
        }
        let mut n = None;
        for (op, v) in cond {
            let x = v.as_u64();
            n = match (op.as_str(), x) {
                ("field", _) => n,
                ("gte", Some(x)) => Some(x),
                ("gt", Some(x)) => Some(x + 1),
                ("gte" | "gt", None) => {
                    return Err(format!(
                        "`correlation.condition.{op}` must be a whole number"
                    ));
                }
                (other, _) => {
                    return Err(format!(
                        "`correlation.condition.{other}` is not supported: toolgate raises a finding when a count reaches a threshold (`gte`, `gt`)"
                    ));
                }
            };
        }
        Ok((
            n.ok_or("`correlation.condition` needs `gte` or `gt`")?,
            field,
        ))
    };
    let any_step = || {
        if steps.len() == 1 {
            steps.clone()
        } else {
            vec![
                json!({"where": {"any_of": steps.iter().map(|s| s["where"].clone()).collect::<Vec<_>>()}}),
            ]
        }
    };
    match kind {
        "event_count" => {
            let (n, _) = threshold(false)?;
            rule["kind"] = json!("count");
            rule["threshold"] = json!(n);
            rule["steps"] = json!(any_step());
        }
        "value_count" => {
            let (n, field) = threshold(true)?;
            rule["kind"] = json!("distinct");
            rule["threshold"] = json!(n);
            rule["field"] = json!(field);
            rule["steps"] = json!(any_step());
        }
        "temporal" => {
            rule["kind"] = json!("unordered");
            rule["steps"] = json!(steps);
        }
        "temporal_ordered" => {
            rule["kind"] = json!("sequence");
            rule["steps"] = json!(steps);
        }
        other => {
            return Err(format!(
                "`correlation.type` {other:?} is not one of event_count, value_count, temporal, temporal_ordered"
            ));
        }
    }
    Ok((rule, used))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_detection_rule_becomes_one_step() {
        let rules = convert(
            r#"
title: Mail to a throwaway domain
id: 6f1c1f1e-0000-4000-8000-000000000001
name: mail_to_throwaway
level: high
tags: [attack.exfiltration]
logsource: {product: toolgate, category: tool_call}
detection:
  selection:
    tool|startswith: send_
    arguments.to|endswith: ['@proton.me', '@tuta.io']
  filter:
    server: corp-mail
  condition: selection and not filter
"#,
            "t.yml",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(rules.len(), 1);
        let r = &rules[0];
        assert_eq!(r["id"], json!("mail_to_throwaway"));
        assert_eq!(r["severity"], json!("high"));
        let w = &r["steps"][0]["where"];
        assert_eq!(w["all_of"][0], json!({"kind": "tool_call"}));
        let inner = &w["all_of"][1]["all_of"];
        assert_eq!(
            inner[1],
            json!({"none_of": [{"server": {"glob": "corp-mail"}}]})
        );
    }

    #[test]
    fn correlations_map_onto_rule_kinds() {
        let text = r#"
title: Failed login
name: failed_login
logsource: {product: toolgate, category: tool_result}
detection:
  sel: {tool: login, result.is_error: true}
  condition: sel
---
title: Many failed logins
name: many_failed_logins
correlation:
  type: event_count
  rules: [failed_login]
  group-by: [agent_id]
  timespan: 5m
  condition: {gt: 9}
level: medium
---
title: Read
name: read_doc
detection:
  sel: {tool: read_*}
  condition: sel
---
title: Send
name: send_out
detection:
  sel: {trust_domain: external}
  condition: sel
---
title: Read then send
name: read_then_send
correlation:
  type: temporal_ordered
  rules: [read_doc, send_out]
  group-by: [agent_id, session_id]
  timespan: 1m
  generate: true
"#;
        let rules = convert(text, "t.yml").unwrap_or_else(|e| panic!("{e}"));
        let ids: Vec<&str> = rules.iter().filter_map(|r| r["id"].as_str()).collect();
        assert_eq!(
            ids,
            [
                "read_doc",
                "send_out",
                "many_failed_logins",
                "read_then_send"
            ]
        );
        assert_eq!(rules[2]["kind"], json!("count"));
        assert_eq!(rules[2]["threshold"], json!(10));
        assert_eq!(rules[3]["kind"], json!("sequence"));
        assert_eq!(rules[3]["within"], json!("1m"));
    }

    #[test]
    fn unsupported_parts_are_errors_naming_the_key() {
        let cases = [
            (
                "title: x\nname: x\ndetection:\n  s: {tool|base64: a}\n  condition: s\n",
                "modifier `base64`",
            ),
            (
                "title: x\nname: x\ndetection:\n  s: {tool: a}\n  condition: s or t\n",
                "no selection named \"t\"",
            ),
            (
                "title: x\nname: x\nlogsource: {product: windows}\ndetection:\n  s: {tool: a}\n  condition: s\n",
                "`logsource.product`",
            ),
            (
                "title: y\nname: y\ncorrelation: {type: event_count, rules: [nope], timespan: 1m, condition: {gte: 2}}\n",
                "no detection rule named \"nope\"",
            ),
            (
                "title: x\nname: x\ndetection:\n  s: {tool: a}\n  condition: s\n---\ntitle: y\nname: y\ncorrelation: {type: event_count, rules: [x], timespan: 1m, condition: {lt: 2}}\n",
                "`correlation.condition.lt` is not supported",
            ),
            (
                "title: x\nname: x\ndetection:\n  s: {tool: a}\n  condition: s\n  extra: [\n",
                "not valid YAML",
            ),
        ];
        for (text, want) in cases {
            match convert(text, "t.yml") {
                Ok(r) => panic!("expected an error for {text}, got {r:?}"),
                Err(e) => assert!(e.to_string().contains(want), "{e}"),
            }
        }
    }
}
