//! Checks a call's arguments against the limits the tool itself declares in its
//! `inputSchema`: types, required and unknown properties, `enum`/`const`, string
//! lengths and patterns, numeric bounds and array sizes, recursively.
//!
//! A compiled subset of JSON Schema: keywords that only combine schemas (`$ref`,
//! `oneOf`, `anyOf`, `allOf`, `not`, `if`) are not evaluated, so a schema that relies on
//! them is checked only as far as its plain keywords go. That errs towards letting a
//! call through, never towards blocking a valid one.

use regex::Regex;
use serde_json::{Map, Value};

/// Most problems reported for one call.
const MAX_PROBLEMS: usize = 16;

/// A compiled schema node.
#[derive(Debug, Clone, Default)]
pub struct Schema {
    types: Vec<String>,
    properties: Vec<(String, Schema)>,
    required: Vec<String>,
    /// `additionalProperties: false`.
    closed: bool,
    additional: Option<Box<Schema>>,
    items: Option<Box<Schema>>,
    allowed: Option<Vec<Value>>,
    min_length: Option<u64>,
    max_length: Option<u64>,
    pattern: Option<Regex>,
    minimum: Option<f64>,
    maximum: Option<f64>,
    exclusive_minimum: Option<f64>,
    exclusive_maximum: Option<f64>,
    min_items: Option<u64>,
    max_items: Option<u64>,
}

/// One way the arguments break the schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaProblem {
    /// Where, e.g. `arguments.to[0]`.
    pub path: String,
    /// What is wrong.
    pub problem: String,
}

impl Schema {
    /// Compiles a tool's `inputSchema`. Keywords with values of the wrong type and
    /// patterns that do not compile are ignored (a broken schema must not block calls).
    pub fn compile(schema: &Map<String, Value>) -> Schema {
        let num = |k: &str| schema.get(k).and_then(Value::as_f64);
        let count = |k: &str| schema.get(k).and_then(Value::as_u64);
        let types = match schema.get("type") {
            Some(Value::String(t)) => vec![t.clone()],
            Some(Value::Array(ts)) => ts
                .iter()
                .filter_map(|t| t.as_str().map(str::to_string))
                .collect(),
            _ => Vec::new(),
        };
        let sub = |v: &Value| v.as_object().map(|m| Box::new(Schema::compile(m)));
        Schema {
            types,
            properties: schema
                .get("properties")
                .and_then(Value::as_object)
                .map(|props| {
                    props
                        .iter()
                        .filter_map(|(k, v)| v.as_object().map(|m| (k.clone(), Schema::compile(m))))
                        .collect()
                })
                .unwrap_or_default(),
            required: schema
                .get("required")
                .and_then(Value::as_array)
                .map(|r| {
                    r.iter()
                        .filter_map(|x| x.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default(),
            closed: schema.get("additionalProperties") == Some(&Value::Bool(false)),
            additional: schema.get("additionalProperties").and_then(sub),
            items: schema.get("items").and_then(sub),
            allowed: match (schema.get("enum"), schema.get("const")) {
                (Some(Value::Array(values)), _) => Some(values.clone()),
                (_, Some(value)) => Some(vec![value.clone()]),
                _ => None,
            },
            min_length: count("minLength"),
            max_length: count("maxLength"),
            pattern: schema
                .get("pattern")
                .and_then(Value::as_str)
                .and_then(|p| regex::RegexBuilder::new(p).size_limit(1 << 20).build().ok()),
            minimum: num("minimum"),
            maximum: num("maximum"),
            exclusive_minimum: num("exclusiveMinimum"),
            exclusive_maximum: num("exclusiveMaximum"),
            min_items: count("minItems"),
            max_items: count("maxItems"),
        }
    }

    /// Every problem of `arguments` (the call's arguments object), at most 16.
    pub fn check_arguments(&self, arguments: &Map<String, Value>) -> Vec<SchemaProblem> {
        let mut out = Vec::new();
        self.check_object(arguments, "arguments", &mut out);
        out
    }

    fn check(&self, value: &Value, path: &str, out: &mut Vec<SchemaProblem>) {
        if out.len() >= MAX_PROBLEMS {
            return;
        }
        let mut problem = |p: String| {
            if out.len() < MAX_PROBLEMS {
                out.push(SchemaProblem {
                    path: path.to_string(),
                    problem: p,
                });
            }
        };
        if !self.types.is_empty() && !self.types.iter().any(|t| type_matches(t, value)) {
            problem(format!(
                "expected {}, found {}",
                self.types.join(" or "),
                type_name(value)
            ));
            return;
        }
        if let Some(allowed) = &self.allowed
            && !allowed.contains(value)
        {
            problem(format!("{} is not one of the allowed values", short(value)));
        }
        match value {
            Value::String(s) => {
                let chars = s.chars().count() as u64;
                if let Some(max) = self.max_length.filter(|&m| chars > m) {
                    problem(format!("{chars} characters, more than maxLength {max}"));
                }
                if let Some(min) = self.min_length.filter(|&m| chars < m) {
                    problem(format!("{chars} characters, fewer than minLength {min}"));
                }
                if let Some(re) = self.pattern.as_ref().filter(|re| !re.is_match(s)) {
                    problem(format!("does not match pattern {:?}", re.as_str()));
                }
            }
            Value::Number(n) => {
                let x = n.as_f64().unwrap_or(f64::NAN);
                for (bound, ok, name) in [
                    (
                        self.minimum,
                        x >= self.minimum.unwrap_or(f64::MIN),
                        "minimum",
                    ),
                    (
                        self.maximum,
                        x <= self.maximum.unwrap_or(f64::MAX),
                        "maximum",
                    ),
                    (
                        self.exclusive_minimum,
                        x > self.exclusive_minimum.unwrap_or(f64::MIN),
                        "exclusiveMinimum",
                    ),
                    (
                        self.exclusive_maximum,
                        x < self.exclusive_maximum.unwrap_or(f64::MAX),
                        "exclusiveMaximum",
                    ),
                ] {
                    if let Some(b) = bound
                        && !ok
                    {
                        problem(format!("{n} is outside {name} {b}"));
                    }
                }
            }
            Value::Array(items) => {
                let n = items.len() as u64;
                if let Some(max) = self.max_items.filter(|&m| n > m) {
                    problem(format!("{n} items, more than maxItems {max}"));
                }
                if let Some(min) = self.min_items.filter(|&m| n < m) {
                    problem(format!("{n} items, fewer than minItems {min}"));
                }
                if let Some(item) = &self.items {
                    for (i, v) in items.iter().enumerate() {
                        item.check(v, &format!("{path}[{i}]"), out);
                    }
                }
            }
            Value::Object(map) => self.check_object(map, path, out),
            _ => {}
        }
    }

    fn check_object(&self, map: &Map<String, Value>, path: &str, out: &mut Vec<SchemaProblem>) {
        for name in &self.required {
            if !map.contains_key(name) && out.len() < MAX_PROBLEMS {
                out.push(SchemaProblem {
                    path: format!("{path}.{name}"),
                    problem: "required by the tool's schema but missing".into(),
                });
            }
        }
        for (key, value) in map {
            let child = format!("{path}.{key}");
            match self.properties.iter().find(|(k, _)| k == key) {
                Some((_, schema)) => schema.check(value, &child, out),
                None if self.closed => {
                    if out.len() < MAX_PROBLEMS {
                        out.push(SchemaProblem {
                            path: child,
                            problem: "not a parameter of this tool (additionalProperties is false)"
                                .into(),
                        });
                    }
                }
                None => {
                    if let Some(extra) = &self.additional {
                        extra.check(value, &child, out);
                    }
                }
            }
        }
    }
}

fn type_matches(t: &str, v: &Value) -> bool {
    match t {
        "string" => v.is_string(),
        "number" => v.is_number(),
        "integer" => v.is_i64() || v.is_u64() || v.as_f64().is_some_and(|f| f.fract() == 0.0),
        "boolean" => v.is_boolean(),
        "array" => v.is_array(),
        "object" => v.is_object(),
        "null" => v.is_null(),
        _ => true,
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.chars().count() > 40 {
        format!("{}…", s.chars().take(40).collect::<String>())
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn problems(schema: Value, args: Value) -> Vec<String> {
        let s = Schema::compile(schema.as_object().unwrap());
        s.check_arguments(args.as_object().unwrap())
            .into_iter()
            .map(|p| format!("{}: {}", p.path, p.problem))
            .collect()
    }

    fn mail_schema() -> Value {
        json!({
            "type": "object",
            "properties": {
                "to": {"type": "array", "items": {"type": "string", "pattern": "^[^@]+@[^@]+$"}, "maxItems": 3},
                "subject": {"type": "string", "maxLength": 10},
                "priority": {"type": "integer", "minimum": 1, "maximum": 5},
                "format": {"enum": ["text", "html"]}
            },
            "required": ["to"],
            "additionalProperties": false
        })
    }

    #[test]
    fn valid_arguments_pass() {
        assert!(
            problems(
                mail_schema(),
                json!({"to": ["a@b.c"], "subject": "hi", "priority": 3, "format": "text"})
            )
            .is_empty()
        );
    }

    #[test]
    fn each_limit_is_reported_with_its_path() {
        let found = problems(
            mail_schema(),
            json!({"to": ["a@b.c", "nope", "c@d", "e@f"], "subject": "a much longer subject", "priority": 9, "format": "pdf", "bcc": "x@y.z"}),
        );
        assert_eq!(
            found,
            vec![
                "arguments.bcc: not a parameter of this tool (additionalProperties is false)",
                "arguments.format: \"pdf\" is not one of the allowed values",
                "arguments.priority: 9 is outside maximum 5",
                "arguments.subject: 21 characters, more than maxLength 10",
                "arguments.to: 4 items, more than maxItems 3",
                "arguments.to[1]: does not match pattern \"^[^@]+@[^@]+$\"",
            ]
        );
    }

    #[test]
    fn missing_required_and_wrong_types() {
        assert_eq!(
            problems(mail_schema(), json!({"priority": "high"})),
            vec![
                "arguments.to: required by the tool's schema but missing",
                "arguments.priority: expected integer, found string",
            ]
        );
    }

    #[test]
    fn open_schemas_and_unknown_keywords_do_not_block() {
        let open = json!({"type": "object", "properties": {"q": {"type": "string"}}, "oneOf": [{"required": ["x"]}]});
        assert!(problems(open, json!({"q": "x", "extra": 1})).is_empty());
        let broken =
            json!({"type": "object", "properties": {"q": {"type": "string", "pattern": "("}}});
        assert!(problems(broken, json!({"q": "anything"})).is_empty());
    }
}
