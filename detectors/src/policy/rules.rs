//! The policy as written in `[detectors.policy]`, and its compiled form with the one
//! function both the sink (before forwarding a call) and the engine use:
//! [`Policy::check`].
//!
//! Access: rules are read in order and the first `allow`, `deny` or `require_approval`
//! rule whose selectors match the call decides; if none does, `default` decides.
//! Arguments: the constraints of *every* matching rule apply, whichever rule decided
//! access, so a broad `allow` can sit before a narrow limit.

use regex::Regex;
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::glob::{Glob, GlobSet};
use crate::mode::Mode;

/// What a rule does to the calls it matches.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum Effect {
    /// The call may go ahead.
    #[default]
    Allow,
    /// The call must not go ahead.
    Deny,
    /// The call waits for a person's approval.
    RequireApproval,
    /// Only the rule's argument constraints apply; access is decided by other rules.
    Constrain,
}

/// One `[[detectors.policy.rules]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// Names the rule in findings and in the sink's refusal.
    pub id: String,
    /// Globs over `agent_role`; empty matches any call, including one with no role.
    #[serde(default)]
    pub roles: Vec<String>,
    /// Globs over `agent_id`; empty matches any agent.
    #[serde(default)]
    pub agents: Vec<String>,
    /// Globs over the server name; empty matches any server.
    #[serde(default)]
    pub servers: Vec<String>,
    /// Globs over the tool name; empty matches any tool.
    #[serde(default)]
    pub tools: Vec<String>,
    /// `allow`, `deny`, `require_approval` or `constrain`.
    #[serde(default)]
    pub effect: Effect,
    /// `monitor` or `enforce`.
    #[serde(default)]
    pub mode: Mode,
    /// Why, shown to the agent's user when a call is refused.
    #[serde(default)]
    pub reason: Option<String>,
    /// Limits on argument values, checked whenever the rule matches.
    #[serde(default)]
    pub arguments: Vec<ArgumentConstraintConfig>,
}

/// Limits on one argument.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArgumentConstraintConfig {
    /// Dotted path into the arguments; `*` stands for every element or key
    /// (`attachments.*.name`). String limits apply to each string found there, and to
    /// each string element when the value is an array.
    pub path: String,
    /// The argument must be present.
    #[serde(default)]
    pub required: bool,
    /// Largest size in bytes of the value as JSON (strings: their UTF-8 length).
    #[serde(default)]
    pub max_bytes: Option<usize>,
    /// Most elements when the value is an array.
    #[serde(default)]
    pub max_items: Option<usize>,
    /// Smallest and largest number allowed.
    #[serde(default)]
    pub min_value: Option<f64>,
    /// Largest number allowed.
    #[serde(default)]
    pub max_value: Option<f64>,
    /// Every string must match this regex somewhere (anchor it with `^…$` for a whole
    /// match).
    #[serde(default)]
    pub pattern: Option<String>,
    /// No string may match any of these regexes.
    #[serde(default)]
    pub forbidden_patterns: Vec<String>,
    /// Every string must match one of these globs (case-insensitive), e.g.
    /// `["*@corp.example"]`.
    #[serde(default)]
    pub allowed_values: Vec<String>,
    /// No string may match any of these globs (case-insensitive), e.g.
    /// `["*@gmail.com", "/etc/*"]`.
    #[serde(default)]
    pub forbidden_values: Vec<String>,
}

/// A policy could not be compiled; the message names the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyError(pub String);

struct Constraint {
    path: Vec<String>,
    spec: ArgumentConstraintConfig,
    pattern: Option<Regex>,
    forbidden_patterns: Vec<Regex>,
    allowed_values: Vec<Glob>,
    forbidden_values: Vec<Glob>,
}

/// A compiled rule.
pub struct Rule {
    /// The rule's id.
    pub id: String,
    /// Its effect.
    pub effect: Effect,
    /// Its mode.
    pub mode: Mode,
    /// Its reason, or a generated one.
    pub reason: String,
    roles: GlobSet,
    agents: GlobSet,
    servers: GlobSet,
    tools: GlobSet,
    constraints: Vec<Constraint>,
}

/// The call being judged.
#[derive(Debug, Clone, Copy)]
pub struct CallView<'a> {
    /// `agent_id`.
    pub agent_id: &'a str,
    /// `agent_role`, if the event has one.
    pub role: Option<&'a str>,
    /// Server name.
    pub server: &'a str,
    /// Tool name.
    pub tool: &'a str,
    /// Arguments.
    pub arguments: &'a Map<String, Value>,
}

/// What is wrong with a call.
#[derive(Debug, Clone, PartialEq)]
pub enum Problem {
    /// A `deny` rule (or the default) refuses the call.
    Denied,
    /// A `require_approval` rule holds the call.
    ApprovalRequired,
    /// An argument breaks a rule's constraint.
    Argument {
        /// Where.
        path: String,
        /// What.
        problem: String,
    },
}

/// A problem and the rule that found it (`None`: the policy's default).
pub struct Violation<'p> {
    /// The rule, or `None` for the default effect.
    pub rule: Option<&'p Rule>,
    /// The problem.
    pub problem: Problem,
}

impl Violation<'_> {
    /// The rule's id, or `default`.
    pub fn rule_id(&self) -> &str {
        self.rule.map_or("default", |r| r.id.as_str())
    }
}

/// A compiled policy.
pub struct Policy {
    rules: Vec<Rule>,
    default: Effect,
    default_mode: Mode,
}

impl Policy {
    /// Compiles rules; errors name `rules[i]…` and the problem.
    pub fn compile(
        rules: &[RuleConfig],
        default: Effect,
        default_mode: Mode,
    ) -> Result<Policy, PolicyError> {
        if default == Effect::Constrain {
            return Err(PolicyError(
                "`default` must be allow, deny or require_approval".into(),
            ));
        }
        let mut compiled = Vec::with_capacity(rules.len());
        for (i, r) in rules.iter().enumerate() {
            let at = |k: &str| format!("rules[{i}] ({:?}).{k}", r.id);
            if r.id.trim().is_empty() {
                return Err(PolicyError(format!("rules[{i}].id: must not be empty")));
            }
            if rules[..i].iter().any(|o| o.id == r.id) {
                return Err(PolicyError(format!("{}: duplicate rule id", at("id"))));
            }
            let mut constraints = Vec::new();
            for (j, c) in r.arguments.iter().enumerate() {
                let key = |k: &str| at(&format!("arguments[{j}].{k}"));
                if c.path.is_empty() || c.path.split('.').any(str::is_empty) {
                    return Err(PolicyError(format!(
                        "{}: empty path segment in {:?}",
                        key("path"),
                        c.path
                    )));
                }
                let regex = |p: &str, k: &str| {
                    regex::RegexBuilder::new(p)
                        .size_limit(1 << 20)
                        .build()
                        .map_err(|e| PolicyError(format!("{}: {e}", key(k))))
                };
                constraints.push(Constraint {
                    path: c.path.split('.').map(str::to_string).collect(),
                    pattern: c
                        .pattern
                        .as_deref()
                        .map(|p| regex(p, "pattern"))
                        .transpose()?,
                    forbidden_patterns: c
                        .forbidden_patterns
                        .iter()
                        .map(|p| regex(p, "forbidden_patterns"))
                        .collect::<Result<_, _>>()?,
                    allowed_values: c
                        .allowed_values
                        .iter()
                        .map(|g| Glob::new_case_insensitive(g))
                        .collect(),
                    forbidden_values: c
                        .forbidden_values
                        .iter()
                        .map(|g| Glob::new_case_insensitive(g))
                        .collect(),
                    spec: c.clone(),
                });
            }
            if r.effect == Effect::Constrain && constraints.is_empty() {
                return Err(PolicyError(format!(
                    "{}: a `constrain` rule needs `arguments`",
                    at("effect")
                )));
            }
            let reason = r.reason.clone().unwrap_or_else(|| match r.effect {
                Effect::Deny => format!("policy rule {:?} does not allow this tool", r.id),
                Effect::RequireApproval => {
                    format!("policy rule {:?} requires approval for this tool", r.id)
                }
                _ => format!("policy rule {:?} limits this tool's arguments", r.id),
            });
            compiled.push(Rule {
                id: r.id.clone(),
                effect: r.effect,
                mode: r.mode,
                reason,
                roles: GlobSet::new(&r.roles),
                agents: GlobSet::new(&r.agents),
                servers: GlobSet::new(&r.servers),
                tools: GlobSet::new(&r.tools),
                constraints,
            });
        }
        Ok(Policy {
            rules: compiled,
            default,
            default_mode,
        })
    }

    /// Mode of the default effect.
    pub fn default_mode(&self) -> Mode {
        self.default_mode
    }

    /// Whether the policy has no rules and allows by default (nothing to check).
    pub fn is_permissive(&self) -> bool {
        self.rules.is_empty() && self.default == Effect::Allow
    }

    /// Every problem with `call`, pushed to `out`: at most one access problem, then
    /// argument problems of every matching rule.
    pub fn check<'p>(&'p self, call: &CallView<'_>, out: &mut Vec<Violation<'p>>) {
        let mut decided = false;
        for rule in &self.rules {
            if !(rule.tools.matches(Some(call.tool))
                && rule.servers.matches(Some(call.server))
                && rule.roles.matches(call.role)
                && rule.agents.matches(Some(call.agent_id)))
            {
                continue;
            }
            if !decided && rule.effect != Effect::Constrain {
                decided = true;
                let problem = match rule.effect {
                    Effect::Deny => Some(Problem::Denied),
                    Effect::RequireApproval => Some(Problem::ApprovalRequired),
                    _ => None,
                };
                if let Some(problem) = problem {
                    out.push(Violation {
                        rule: Some(rule),
                        problem,
                    });
                }
            }
            for c in &rule.constraints {
                c.check(call.arguments, &mut |path, problem| {
                    out.push(Violation {
                        rule: Some(rule),
                        problem: Problem::Argument { path, problem },
                    })
                });
            }
        }
        if !decided {
            let problem = match self.default {
                Effect::Deny => Some(Problem::Denied),
                Effect::RequireApproval => Some(Problem::ApprovalRequired),
                _ => None,
            };
            if let Some(problem) = problem {
                out.push(Violation {
                    rule: None,
                    problem,
                });
            }
        }
    }
}

impl Constraint {
    fn check(&self, arguments: &Map<String, Value>, report: &mut dyn FnMut(String, String)) {
        let mut found: Vec<(String, &Value)> = Vec::new();
        collect(arguments, &self.path, "arguments".to_string(), &mut found);
        if found.is_empty() {
            if self.spec.required {
                report(
                    format!("arguments.{}", self.spec.path),
                    "required by policy but missing".into(),
                );
            }
            return;
        }
        for (path, value) in found {
            self.check_value(&path, value, report);
        }
    }

    fn check_value(&self, path: &str, value: &Value, report: &mut dyn FnMut(String, String)) {
        let s = &self.spec;
        if let Some(max) = s.max_bytes {
            let size = match value {
                Value::String(text) => text.len(),
                other => other.to_string().len(),
            };
            if size > max {
                report(
                    path.to_string(),
                    format!("{size} bytes, more than the policy's {max}"),
                );
            }
        }
        if let (Some(max), Value::Array(items)) = (s.max_items, value)
            && items.len() > max
        {
            report(
                path.to_string(),
                format!("{} items, more than the policy's {max}", items.len()),
            );
        }
        if let Some(x) = value.as_f64()
            && (s.min_value.is_some_and(|min| x < min) || s.max_value.is_some_and(|max| x > max))
        {
            report(
                path.to_string(),
                format!("{x} is outside the policy's range"),
            );
        }
        let strings: Vec<(String, &str)> = match value {
            Value::String(text) => vec![(path.to_string(), text.as_str())],
            Value::Array(items) => items
                .iter()
                .enumerate()
                .filter_map(|(i, v)| v.as_str().map(|t| (format!("{path}[{i}]"), t)))
                .collect(),
            _ => Vec::new(),
        };
        for (at, text) in strings {
            if let Some(re) = self.pattern.as_ref().filter(|re| !re.is_match(text)) {
                report(
                    at.clone(),
                    format!("does not match the policy's pattern {:?}", re.as_str()),
                );
            }
            if let Some(re) = self.forbidden_patterns.iter().find(|re| re.is_match(text)) {
                report(
                    at.clone(),
                    format!("matches the forbidden pattern {:?}", re.as_str()),
                );
            }
            if !self.allowed_values.is_empty()
                && !self.allowed_values.iter().any(|g| g.matches(text))
            {
                report(
                    at.clone(),
                    format!("{:?} is not among the allowed values", preview(text)),
                );
            }
            if let Some(i) = self.forbidden_values.iter().position(|g| g.matches(text)) {
                report(
                    at.clone(),
                    format!(
                        "{:?} matches the forbidden value {:?}",
                        preview(text),
                        s.forbidden_values[i]
                    ),
                );
            }
        }
    }
}

fn preview(text: &str) -> String {
    if text.chars().count() > 60 {
        format!("{}…", text.chars().take(60).collect::<String>())
    } else {
        text.to_string()
    }
}

/// Values at `path` (with `*` wildcards) under `map`.
fn collect<'v>(
    map: &'v Map<String, Value>,
    path: &[String],
    at: String,
    out: &mut Vec<(String, &'v Value)>,
) {
    let Some((head, rest)) = path.split_first() else {
        return;
    };
    let children: Vec<(String, &Value)> = if head == "*" {
        map.iter().map(|(k, v)| (format!("{at}.{k}"), v)).collect()
    } else {
        map.get(head.as_str())
            .map(|v| (format!("{at}.{head}"), v))
            .into_iter()
            .collect()
    };
    for (child_at, value) in children {
        descend(value, rest, child_at, out);
    }
}

fn descend<'v>(value: &'v Value, rest: &[String], at: String, out: &mut Vec<(String, &'v Value)>) {
    if rest.is_empty() {
        out.push((at, value));
        return;
    }
    match value {
        Value::Object(map) => collect(map, rest, at, out),
        Value::Array(items) if rest[0] == "*" => {
            for (i, v) in items.iter().enumerate() {
                descend(v, &rest[1..], format!("{at}[{i}]"), out);
            }
        }
        _ => {}
    }
}
