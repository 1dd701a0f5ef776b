//! The `injection` detector: instruction-like text aimed at the model, in tool
//! descriptions (tool poisoning) and in tool results (indirect prompt injection).
//!
//! Two halves, one score: the learned [`classifier`] scores every window of a text,
//! and the signal table ([`analysis`]) adds its own score of the best window at the
//! weight the classifier learned for it. Severities come from thresholds calibrated on
//! benign texts of each context (`medium` = at most 1% of benign texts reach it, of
//! all of them and of each corpus large enough to tell, `high` = 0.1%; see
//! [`learn`]). Invisible characters are `high` whatever the
//! score: the model reads them, a reviewer does not see them. Every finding names
//! the window, quotes it, and lists the words that weighed most and the table's
//! signals.
//!
//! Settings (`[detectors.injection]`): `min_severity`, `descriptions`, `results`,
//! `max_result_bytes`, `model_file`.

pub mod analysis;
pub mod classifier;
pub mod learn;

use std::ops::Range;
use std::sync::Arc;

use serde::Deserialize;
use serde_json::{Value, json};
use toolgate_protocol::config::Config;
use toolgate_protocol::event::EventBody;
use toolgate_protocol::{DetectorKind, Event, Severity};

use crate::factory::{BuildError, Configured};
use crate::{Detector, FindingDraft, StateError};
use analysis::{Analysis, Context, analyze_text, analyze_tool};
use classifier::{Model, Thresholds};

/// The detector's name under `[detectors]`.
pub const NAME: &str = "injection";

/// `[detectors.injection]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InjectionSettings {
    /// Least severity reported: `low` (only the signal table rates this low),
    /// `medium` (at most 1% of benign texts reach it), `high` (0.1%) or `critical`.
    #[serde(default = "default_min_severity")]
    pub min_severity: Severity,
    /// Analyze the tool definitions in `tool_list` events.
    #[serde(default = "yes")]
    pub descriptions: bool,
    /// Analyze the text of `tool_result` events.
    #[serde(default = "yes")]
    pub results: bool,
    /// Most bytes of one result's text analyzed; the rest is skipped, and the evidence
    /// says so.
    #[serde(default = "default_max_result_bytes")]
    pub max_result_bytes: usize,
    /// A model from `toolgate train injection`, relative to the config; the shipped
    /// one (trained on the public corpora) without it.
    #[serde(default)]
    pub model_file: Option<String>,
    /// The model itself: read from `model_file` when the config is loaded.
    #[serde(default)]
    pub model: Option<Value>,
}

fn default_min_severity() -> Severity {
    Severity::Low
}
fn yes() -> bool {
    true
}
fn default_max_result_bytes() -> usize {
    256 * 1024
}

impl Configured for InjectionDetector {
    const NAME: &'static str = NAME;
    const KIND: DetectorKind = DetectorKind::Definition;
    const SUMMARY: &'static str = "tool poisoning in descriptions and prompt injection in results";
    type Settings = InjectionSettings;

    fn build(_config: &Config, mut s: InjectionSettings) -> Result<Self, BuildError> {
        let model = match s.model.take() {
            Some(m) => Arc::new(
                Model::from_value(m).map_err(|e| BuildError::settings(NAME, e.to_string()))?,
            ),
            None => Model::shipped().map_err(|e| BuildError::settings(NAME, e))?,
        };
        Ok(InjectionDetector { settings: s, model })
    }

    fn load_files(
        table: &mut serde_json::Map<String, Value>,
        files: &dyn crate::Files,
    ) -> Result<(), BuildError> {
        crate::factory::load_model(
            NAME,
            table,
            files,
            "detectors.injection",
            classifier::SECTION,
        )
    }
}

/// The detector. Stateless: every event is judged on its own.
pub struct InjectionDetector {
    settings: InjectionSettings,
    model: Arc<Model>,
}

/// Most words listed as weighing most.
const PHRASES: usize = 8;
/// Longest quote of the window in evidence.
const QUOTE_CHARS: usize = 400;

/// The judgement of one text.
struct Verdict {
    score: f32,
    window: Range<usize>,
    window_index: usize,
    windows: usize,
    table: Analysis,
}

impl Verdict {
    /// The window as evidence.
    fn window_json(&self) -> Value {
        json!({"start": self.window.start, "end": self.window.end, "index": self.window_index,
               "of": self.windows, "table_score": self.table.score})
    }
}

/// Scores `text`: its best window, plus the table's score of that window at the
/// model's weight. `table_fired` says whether the table found anything in the whole
/// text (or tool); if not, it finds nothing in a window of it either, and the second
/// scan is skipped (most results).
fn judge(model: &Model, text: &str, context: Context, table_fired: bool) -> Option<Verdict> {
    let best = model.score(text, context)?;
    let table = if table_fired {
        analyze_text(&text[best.window.clone()], context)
    } else {
        Analysis::default()
    };
    let score = best.score + model.table_weight * learn::table_feature_of(&table);
    Some(Verdict {
        score,
        window: best.window,
        window_index: best.window_index,
        windows: best.windows,
        table,
    })
}

/// Severity of a text: the higher of the classifier's (its score against the
/// calibrated thresholds; it has no `low`: one benign text in twenty would reach it)
/// and the table's own (its bands: 30 low, then medium and high from the calibrated
/// `table_medium` / `table_high`, 45 and 70 unless benign text of the context reaches
/// those too often, 90 critical unless `high` starts above), so the table's evidence still counts where the
/// classifier has not learned it. Invisible characters are `high` at least.
fn severity(score: f32, t: &Thresholds, whole: &Analysis) -> Option<Severity> {
    let learned = learned_severity(score, t);
    let table = match whole.score {
        s if s >= 90 && s >= t.table_high => Some(Severity::Critical),
        s if s >= t.table_high => Some(Severity::High),
        s if s >= t.table_medium => Some(Severity::Medium),
        s if s >= 30 => Some(Severity::Low),
        _ => None,
    };
    let mut s = learned.max(table);
    if whole.signals.iter().any(|h| h.id == "hidden_unicode") {
        s = s.max(Some(Severity::High));
    }
    s
}

/// The classifier's half of [`severity`]: `medium` and `high` from its calibrated
/// thresholds, nothing below.
fn learned_severity(score: f32, t: &Thresholds) -> Option<Severity> {
    if score >= t.high {
        Some(Severity::High)
    } else if score >= t.medium {
        Some(Severity::Medium)
    } else {
        None
    }
}

/// How the detector rates one text of `context` on its own (for measurement: a
/// definition's table analysis also weighs the whole tool, see [`analyze_tool`]).
pub fn rate_text(model: &Model, text: &str, context: Context) -> Option<Severity> {
    let t = model.calibration.of(context);
    let whole = analyze_text(text, context);
    let score =
        judge(model, text, context, !whole.signals.is_empty()).map_or(f32::MIN, |v| v.score);
    severity(score, t, &whole)
}

/// How the detector rates a definition from its texts (for measurement, where corpora
/// give texts): the classifier's best text against the table's `whole` analysis of
/// the tool ([`analyze_tool`]) when the caller has the tool, else of its texts read
/// together by passages.
pub fn rate_definition(
    model: &Model,
    texts: &[&str],
    whole: Option<&Analysis>,
) -> Option<Severity> {
    let read;
    let whole = match whole {
        Some(w) => w,
        None => {
            read = analysis::analyze_passages(&texts.join("\n"), Context::Description);
            &read
        }
    };
    let score = texts
        .iter()
        .filter_map(|t| judge(model, t, Context::Description, !whole.signals.is_empty()))
        .map(|v| v.score)
        .fold(f32::MIN, f32::max);
    severity(score, &model.calibration.descriptions, whole)
}

/// 0 to 100: 50 at the `medium` threshold, rising with the score.
fn score_0_100(score: f32, t: &Thresholds) -> u8 {
    let p = 1.0 / (1.0 + (-(score - t.medium)).exp());
    (p * 100.0).round().clamp(0.0, 100.0) as u8
}

fn confidence(s: Severity) -> f64 {
    match s {
        Severity::Info | Severity::Low => 0.6,
        Severity::Medium => 0.8,
        _ => 0.95,
    }
}

/// Runs of this many token characters or more are quoted as `[…]`: keys, tokens and
/// hashes are no words worth showing, and a window can start inside a secret, where
/// the redactor would no longer recognize it.
const OPAQUE_RUN: usize = 16;

fn opaque_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '+' | '/' | '=' | '_' | '-')
}

fn mask_opaque(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut run = String::new();
    let flush = |run: &mut String, out: &mut String| {
        if run.chars().count() >= OPAQUE_RUN {
            out.push_str("[…]");
        } else {
            out.push_str(run);
        }
        run.clear();
    };
    for c in s.chars() {
        if opaque_char(c) {
            run.push(c);
        } else {
            flush(&mut run, &mut out);
            out.push(c);
        }
    }
    flush(&mut run, &mut out);
    out
}

/// Bytes a quote may reach past its window to find whitespace.
const QUOTE_SLACK: usize = 256;

/// The window, widened to whitespace on both sides and cut at whitespace, with opaque
/// runs masked. A window starts at a word, which may be inside a credential
/// (`postgres://user:Pass@host`); widened to whole whitespace-separated pieces, the
/// redactor downstream still recognizes them.
fn quote(text: &str, window: &Range<usize>) -> String {
    let from = window.start.saturating_sub(QUOTE_SLACK);
    let mut start = text
        .get(from..window.start)
        .and_then(|before| before.rfind(char::is_whitespace).map(|i| from + i + 1))
        .unwrap_or(from);
    while !text.is_char_boundary(start) {
        start -= 1;
    }
    let to = (window.end + QUOTE_SLACK).min(text.len());
    let mut end = text
        .get(window.end..to)
        .and_then(|after| after.find(char::is_whitespace).map(|i| window.end + i))
        .unwrap_or(to);
    while !text.is_char_boundary(end) {
        end += 1;
    }
    let w = mask_opaque(text.get(start..end).unwrap_or(""));
    match w.char_indices().nth(QUOTE_CHARS) {
        Some((i, _)) => {
            let cut = w[..i].rfind(char::is_whitespace).unwrap_or(i);
            format!("{}…", &w[..cut])
        }
        None => w,
    }
}

/// The words that weighed most. Only words of letters shorter than an opaque run (see
/// [`OPAQUE_RUN`]): a phrase is cut from its text at punctuation, where a password or
/// token would lose what makes the redactor recognize it.
fn phrases(model: &Model, text: &str, window: &Range<usize>) -> Vec<(String, f32)> {
    let mut p = model.explain(text, window.clone(), PHRASES * 4);
    p.retain(|(w, _)| {
        w.split(' ')
            .all(|t| t.chars().count() < OPAQUE_RUN && t.chars().all(char::is_alphabetic))
    });
    p.truncate(PHRASES);
    p
}

fn signal_list(a: &Analysis) -> String {
    if a.signals.is_empty() {
        return "no signal of the table".into();
    }
    a.signals
        .iter()
        .map(|s| s.id)
        .collect::<Vec<_>>()
        .join(", ")
}

fn round2(x: f32) -> f64 {
    (f64::from(x) * 100.0).round() / 100.0
}

/// `span` widened on both sides to about `len` bytes in all, on character boundaries.
fn around_span(text: &str, span: Range<usize>, len: usize) -> Range<usize> {
    let pad = len.saturating_sub(span.len()) / 2;
    let mut start = span.start.saturating_sub(pad);
    let mut end = (span.end + pad).min(text.len());
    while !text.is_char_boundary(start) {
        start -= 1;
    }
    while !text.is_char_boundary(end) {
        end += 1;
    }
    start..end
}

/// The text of a definition the table's strongest signal fired in (strong before
/// weak, heavier first), found by its fragment, with where the fragment is; invisible
/// characters are found by the characters.
fn table_field<'a>(
    texts: &'a [(String, String)],
    whole: &Analysis,
) -> Option<(&'a String, &'a String, Option<Range<usize>>)> {
    let mut signals: Vec<_> = whole.signals.iter().collect();
    signals.sort_by_key(|s| (std::cmp::Reverse(s.strong), std::cmp::Reverse(s.weight)));
    signals.iter().find_map(|s| {
        let fragment = s.fragment.trim_end_matches('…');
        texts.iter().find_map(|(path, text)| {
            if s.id == "hidden_unicode" {
                analysis::has_hidden_unicode(text).then_some((path, text, None))
            } else if fragment.is_empty() {
                None
            } else {
                text.find(fragment)
                    .map(|at| (path, text, Some(at..at + fragment.len())))
            }
        })
    })
}

fn phrases_json(p: &[(String, f32)]) -> Value {
    Value::Array(
        p.iter()
            .map(|(w, x)| json!({"phrase": w, "weight": round2(*x)}))
            .collect(),
    )
}

/// A tool definition as the detector reads it: the table's analysis of the whole tool
/// and every text the classifier scores, with where it is. Training reads real
/// definitions through this too.
pub fn read_tool(tool: &toolgate_protocol::ToolDefinition) -> (Analysis, Vec<(String, String)>) {
    let whole = analyze_tool(
        &tool.name,
        tool.title.as_deref(),
        tool.description.as_deref(),
        tool.input_schema.as_ref(),
    );
    let texts = definition_texts(
        tool.title.as_deref(),
        tool.description.as_deref(),
        tool.input_schema.as_ref(),
    );
    (whole, texts)
}

/// Every text of a tool definition the model reads, with where it is (the field path
/// a finding names).
fn definition_texts(
    title: Option<&str>,
    description: Option<&str>,
    schema: Option<&serde_json::Map<String, Value>>,
) -> Vec<(String, String)> {
    type Texts = Vec<(String, String)>;
    fn walk(v: &Value, path: &str, out: &mut Texts, depth: usize) {
        match v {
            Value::String(s) => out.push((path.to_string(), s.clone())),
            Value::Array(items) if depth < 16 => {
                for (i, item) in items.iter().enumerate() {
                    walk(item, &format!("{path}[{i}]"), out, depth + 1);
                }
            }
            Value::Object(map) => walk_map(map, path, out, depth),
            _ => {}
        }
    }
    fn walk_map(map: &serde_json::Map<String, Value>, path: &str, out: &mut Texts, depth: usize) {
        if depth >= 16 {
            return;
        }
        // Under `properties` the keys are parameter names, text the model reads too;
        // elsewhere keywords like `type` hold schema words, not prose.
        let parameters = path.ends_with(".properties");
        for (k, item) in map {
            let here = format!("{path}.{k}");
            if parameters {
                out.push((format!("{here} (name)"), k.clone()));
            } else if matches!(k.as_str(), "type" | "$schema" | "format" | "required") {
                continue;
            }
            walk(item, &here, out, depth + 1);
        }
    }
    let mut out = Vec::new();
    if let Some(t) = title {
        out.push(("title".into(), t.to_string()));
    }
    if let Some(d) = description {
        out.push(("description".into(), d.to_string()));
    }
    if let Some(schema) = schema {
        walk_map(schema, "inputSchema", &mut out, 0);
    }
    out
}

impl Detector for InjectionDetector {
    fn name(&self) -> &'static str {
        NAME
    }

    fn observe(&mut self, event: &Event, out: &mut Vec<FindingDraft>) {
        let model = &self.model;
        match &event.body {
            EventBody::ToolList { server, tools } if self.settings.descriptions => {
                let t = &model.calibration.descriptions;
                for tool in tools {
                    let (whole, texts) = read_tool(tool);
                    let best = texts
                        .iter()
                        .filter_map(|(path, text)| {
                            judge(model, text, Context::Description, !whole.signals.is_empty())
                                .map(|v| (path, text, v))
                        })
                        .max_by(|a, b| a.2.score.total_cmp(&b.2.score));
                    let score = best.as_ref().map_or(f32::MIN, |b| b.2.score);
                    let Some(severity) = severity(score, t, &whole) else {
                        continue;
                    };
                    if severity < self.settings.min_severity {
                        continue;
                    }
                    // When the table, not the classifier, sets the severity, quote the
                    // field the table's strongest signal fired in, around the signal.
                    let mut at = None;
                    let best = if learned_severity(score, t) < Some(severity) {
                        table_field(&texts, &whole)
                            .and_then(|(path, text, signal)| {
                                at = signal;
                                judge(model, text, Context::Description, true)
                                    .map(|v| (path, text, v))
                            })
                            .or(best)
                    } else {
                        best
                    };
                    let fingerprint = tool.fingerprint();
                    let (field, fragment, phrases, window) = match &best {
                        Some((path, text, v)) => {
                            // The classifier's window when it holds the signal, else as
                            // much text around the signal.
                            let span = match at.clone() {
                                Some(a) if a.start < v.window.start || a.end > v.window.end => {
                                    around_span(text, a, v.window.len())
                                }
                                _ => v.window.clone(),
                            };
                            (
                                path.as_str(),
                                quote(text, &span),
                                phrases(model, text, &span),
                                v.window_json(),
                            )
                        }
                        None => ("", String::new(), Vec::new(), Value::Null),
                    };
                    let mut draft = FindingDraft::about(DetectorKind::Definition, "poisoned_description", event)
                        .describe(
                            format!("Tool {:?} on server {server:?} carries instructions aimed at the model", tool.name),
                            format!(
                                "The definition of {:?} scores {score:.2} for text aimed at the model (medium from {:.2}, high from {:.2}; {}), quoted from `{field}`. The model reads this text every time the tool is listed.",
                                tool.name,
                                t.medium,
                                t.high,
                                signal_list(&whole)
                            ),
                        )
                        .rate(severity, score_0_100(score, t), confidence(severity))
                        .group_by(format!("{}\u{1f}{server}\u{1f}{}\u{1f}{fingerprint}", event.agent_id, tool.name))
                        .evidence(json!({
                            "tool": tool.name,
                            "fingerprint": fingerprint,
                            "score": round2(score),
                            "thresholds": {"medium": round2(t.medium), "high": round2(t.high)},
                            "field": field,
                            "window": window,
                            "fragment": fragment,
                            "phrases": phrases_json(&phrases),
                            "table_score": whole.score,
                            "signals": whole.signals,
                        }))
                        .tags(["atlas:AML.T0051", "mcp:tool-poisoning"]);
                    draft.tool = Some(tool.name.clone());
                    out.push(draft);
                }
            }
            EventBody::ToolResult {
                server,
                tool,
                result,
                ..
            } if self.settings.results => {
                let t = &model.calibration.results;
                let mut text = String::new();
                for t in result.texts() {
                    text.push_str(t);
                    text.push('\n');
                }
                if let Some(structured) = &result.structured_content {
                    text.push_str(&Value::Object(structured.clone()).to_string());
                }
                let total = text.len();
                let mut cut = total.min(self.settings.max_result_bytes);
                while !text.is_char_boundary(cut) {
                    cut -= 1;
                }
                let text = &text[..cut];
                let whole = analyze_text(text, Context::Result);
                // A text without words (only invisible characters, say) has no window
                // but can still carry the table's evidence.
                let v = judge(model, text, Context::Result, !whole.signals.is_empty());
                let score = v.as_ref().map_or(f32::MIN, |v| v.score);
                let Some(severity) = severity(score, t, &whole) else {
                    return;
                };
                if severity < self.settings.min_severity {
                    return;
                }
                let (phrases, window, fragment, place) = match &v {
                    Some(v) => (
                        phrases(model, text, &v.window),
                        v.window_json(),
                        quote(text, &v.window),
                        format!(
                            "Bytes {}..{} of the result (window {} of {})",
                            v.window.start,
                            v.window.end,
                            v.window_index + 1,
                            v.windows
                        ),
                    ),
                    None => (
                        Vec::new(),
                        Value::Null,
                        String::new(),
                        "The result (no words to score)".to_string(),
                    ),
                };
                out.push(
                    FindingDraft::about(DetectorKind::Definition, "injected_result", event)
                        .describe(
                            format!("Result of {tool:?} on server {server:?} carries instructions aimed at the model"),
                            format!(
                                "{place} scores {} for prompt injection (medium from {:.2}, high from {:.2}; {}). Text in a tool result is data; instructions in it come from whoever wrote that data.",
                                v.as_ref().map_or("nothing".to_string(), |v| format!("{:.2}", v.score)),
                                t.medium,
                                t.high,
                                signal_list(&whole)
                            ),
                        )
                        .rate(severity, score_0_100(score, t), confidence(severity))
                        .evidence(json!({
                            "score": v.as_ref().map(|v| round2(v.score)),
                            "thresholds": {"medium": round2(t.medium), "high": round2(t.high)},
                            "window": window,
                            "fragment": fragment,
                            "phrases": phrases_json(&phrases),
                            "table_score": whole.score,
                            "signals": whole.signals,
                            "analyzed_bytes": cut,
                            "result_bytes": total,
                        }))
                        .tags(["atlas:AML.T0051.001"]),
                );
            }
            _ => {}
        }
    }

    fn snapshot(&self) -> Result<Vec<u8>, StateError> {
        Ok(Vec::new())
    }

    fn restore(&mut self, snapshot: &[u8]) -> Result<(), StateError> {
        crate::restore_stateless(NAME, snapshot)
    }
}
