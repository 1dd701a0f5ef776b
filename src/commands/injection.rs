//! `toolgate train injection`: learns the injection classifier's weights and severity
//! thresholds from the public corpora (`toolgate_ingest::texts`), writes the model, and
//! with `--evaluate` measures it across corpora: leave-one-corpus-out, and a split of
//! every corpus by group, beside the signal table, into a Markdown report.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use anyhow::{Context as _, Result};
use serde_json::{Value, json};
use toolgate_detectors::injection::analysis::{Analysis, Context};
use toolgate_detectors::injection::classifier::Model;
use toolgate_detectors::injection::learn::{
    self, LearnSettings, Prepared, Sample, UnitScore, fold_of, recall, threshold_at,
};
use toolgate_detectors::injection::{rate_definition, rate_text, read_tool};
use toolgate_ingest::texts::{CORPORA, LabelledText, TextContext, load_all};
use toolgate_protocol::Severity;
use toolgate_protocol::event::{Event, EventBody};

use crate::cli::TrainInjectionArgs;

fn sample(t: LabelledText) -> Sample {
    Sample {
        text: t.text,
        span: t.span,
        malicious: t.malicious,
        context: match t.context {
            TextContext::Result => Context::Result,
            TextContext::Definition => Context::Description,
        },
        corpus: t.corpus.to_string(),
        group: t.group,
        unit: t.unit,
        table: None,
    }
}

fn context_name(c: Context) -> &'static str {
    match c {
        Context::Result => "results",
        Context::Description => "descriptions",
    }
}

/// The corpus name of published servers' definitions.
const SERVERS: &str = "mcp-servers";

/// Published servers' definitions (`tool_list` events, one per server) as benign
/// samples: every text the detector reads, a unit per tool, a group per server.
fn server_definitions(path: &std::path::Path) -> Result<Vec<Sample>> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut out = Vec::new();
    for (n, line) in bytes.split(|b| *b == b'\n').enumerate() {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let event = Event::decode(line)
            .with_context(|| format!("{}:{}: not a toolgate event", path.display(), n + 1))?;
        let EventBody::ToolList { server, tools } = event.body else {
            anyhow::bail!("{}:{}: not a tool_list event", path.display(), n + 1);
        };
        for tool in tools {
            let (table, texts) = read_tool(&tool);
            for (_, text) in texts.into_iter().filter(|(_, t)| !t.trim().is_empty()) {
                out.push(Sample {
                    text,
                    span: None,
                    malicious: false,
                    context: Context::Description,
                    corpus: SERVERS.to_string(),
                    group: format!("{SERVERS}/{server}"),
                    unit: format!("{SERVERS}/{server}/{}", tool.name),
                    table: Some(table.clone()),
                });
            }
        }
    }
    Ok(out)
}

/// Counts per corpus, context and class.
fn counts(samples: &[&Prepared]) -> Value {
    let mut m: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
    for p in samples {
        let s = &p.sample;
        let class = if s.malicious { "malicious" } else { "benign" };
        *m.entry(s.corpus.clone())
            .or_default()
            .entry(format!("{} {class}", context_name(s.context)))
            .or_default() += 1;
    }
    json!(m)
}

/// Reads the corpora, trains, writes the model; evaluates when asked.
pub fn run(args: &TrainInjectionArgs) -> Result<()> {
    let texts = load_all(&args.datasets).with_context(|| {
        format!(
            "cannot read the corpora under {} (the shared/datasets folder)",
            args.datasets.display()
        )
    })?;
    // AgentDojo's `injecagent` attack is InjecAgent's "IMPORTANT!!!" wrapper (its
    // `enhanced` cases): holding out either corpus removes the other's copy too.
    let mut attacks: Vec<String> = texts.iter().map(|t| t.attack.clone()).collect();
    let mut samples: Vec<Sample> = texts.into_iter().map(sample).collect();
    let servers = server_definitions(&args.definitions)?;
    attacks.extend(servers.iter().map(|_| String::new()));
    samples.extend(servers);
    let settings = LearnSettings::default();
    let prepared = learn::prepare(samples, &settings);
    let all: Vec<&Prepared> = prepared.iter().collect();
    let trained_on = json!({
        "corpora": counts(&all),
        "calibration": "thresholds are the scores at most 1% / 0.1% of benign units reach, of all of them and of each corpus's (from 100 / 1,000 units), out of fold (5 folds by group), per context; the table's bands rise from 45 / 70 where more than 1% / 0.1% of benign units reach them (0.1% read from 1,000 units or more)",
    });
    let (model, _) = learn::train(&all, &settings, trained_on);
    toolgate_edge::fs::replace(&args.output, model.to_json().as_bytes())
        .with_context(|| format!("cannot write {}", args.output.display()))?;
    eprintln!(
        "model written to {}: {} texts; thresholds results {:?}, descriptions {:?}",
        args.output.display(),
        all.len(),
        model.calibration.results,
        model.calibration.descriptions
    );
    if let Some(report) = &args.evaluate {
        let text = evaluate(&prepared, &attacks, &settings);
        toolgate_edge::fs::replace(report, text.as_bytes())
            .with_context(|| format!("cannot write {}", report.display()))?;
        eprintln!("evaluation written to {}", report.display());
    }
    Ok(())
}

/// One row of the report.
struct Row {
    setting: String,
    context: Context,
    malicious: usize,
    benign: usize,
    benign_from: &'static str,
    at_1: f64,
    at_01: f64,
    /// At the calibrated thresholds: share of malicious and benign units at medium+
    /// and at high+.
    calibrated: (f64, f64, f64, f64),
    table_at_1: f64,
    table_at_01: f64,
    table_old: (f64, f64),
    /// As the detector rates: share of malicious and benign units at medium+ and high+.
    detector: (f64, f64, f64, f64),
}

/// Each unit's severity as the detector rates it: a result's text, a definition's
/// texts together (with the whole tool's table analysis when the sample has it).
fn detector_units(model: &Model, samples: &[&Prepared]) -> Vec<(bool, Context, Option<Severity>)> {
    type Unit<'a> = (bool, Context, Vec<&'a str>, Option<&'a Analysis>);
    let mut units: BTreeMap<&str, Unit> = BTreeMap::new();
    for p in samples {
        let s = &p.sample;
        let u = units
            .entry(s.unit.as_str())
            .or_insert((false, s.context, Vec::new(), None));
        u.0 |= s.malicious;
        u.2.push(&s.text);
        u.3 = u.3.or(s.table.as_ref());
    }
    units
        .into_values()
        .map(|(malicious, c, texts, table)| {
            let rated = match c {
                Context::Result => texts.iter().map(|t| rate_text(model, t, c)).max().flatten(),
                Context::Description => rate_definition(model, &texts, table),
            };
            (malicious, c, rated)
        })
        .collect()
}

fn share(
    units: &[(bool, Context, Option<Severity>)],
    c: Context,
    malicious: bool,
    least: Severity,
) -> f64 {
    let of: Vec<_> = units
        .iter()
        .filter(|u| u.1 == c && u.0 == malicious)
        .collect();
    if of.is_empty() {
        return f64::NAN;
    }
    of.iter().filter(|u| u.2 >= Some(least)).count() as f64 / of.len() as f64
}

fn split(scores: &[UnitScore], c: Context) -> (Vec<f32>, Vec<f32>) {
    let of = |m: bool| {
        scores
            .iter()
            .filter(|u| u.context == c && u.malicious == m)
            .map(|u| u.score)
            .collect::<Vec<_>>()
    };
    (of(true), of(false))
}

/// Measures one held-out set: `test` scored by `model`, benign from the test set when
/// it has any in the context, else from `fallback` (out-of-fold scores of the
/// training corpora).
fn rows(
    setting: &str,
    model: &Model,
    test: &[&Prepared],
    fallback: &[UnitScore],
    table_fallback: &[UnitScore],
) -> Vec<Row> {
    let scores = learn::unit_scores(model, test);
    let table = learn::table_unit_scores(test);
    let rated = detector_units(model, test);
    let mut out = Vec::new();
    for c in [Context::Result, Context::Description] {
        let (m, mut b) = split(&scores, c);
        let (tm, mut tb) = split(&table, c);
        if m.is_empty() {
            // A benign-only corpus (published servers' definitions): what it flags.
            if !b.is_empty() {
                out.push(benign_row(setting, model, c, &b, &tb, &rated));
            }
            continue;
        }
        let mut benign_from = "held out";
        if b.is_empty() {
            b = split(fallback, c).1;
            tb = split(table_fallback, c).1;
            benign_from = "training corpora, out of fold";
        }
        if b.is_empty() {
            continue;
        }
        let t = model.calibration.of(c);
        out.push(Row {
            setting: setting.to_string(),
            context: c,
            malicious: m.len(),
            benign: b.len(),
            benign_from,
            at_1: recall(&m, threshold_at(&b, 0.01)),
            at_01: recall(&m, threshold_at(&b, 0.001)),
            calibrated: (
                recall(&m, t.medium),
                recall(&b, t.medium),
                recall(&m, t.high),
                recall(&b, t.high),
            ),
            table_at_1: recall(&tm, threshold_at(&tb, 0.01)),
            table_at_01: recall(&tm, threshold_at(&tb, 0.001)),
            table_old: (recall(&tm, 45.0), recall(&tb, 45.0)),
            detector: (
                share(&rated, c, true, Severity::Medium),
                share(&rated, c, false, Severity::Medium),
                share(&rated, c, true, Severity::High),
                share(&rated, c, false, Severity::High),
            ),
        });
    }
    out
}

/// A row for held-out benign texts alone: how many the thresholds, the table and the
/// detector flag.
fn benign_row(
    setting: &str,
    model: &Model,
    c: Context,
    b: &[f32],
    tb: &[f32],
    rated: &[(bool, Context, Option<Severity>)],
) -> Row {
    let t = model.calibration.of(c);
    Row {
        setting: setting.to_string(),
        context: c,
        malicious: 0,
        benign: b.len(),
        benign_from: "held out",
        at_1: f64::NAN,
        at_01: f64::NAN,
        calibrated: (f64::NAN, recall(b, t.medium), f64::NAN, recall(b, t.high)),
        table_at_1: f64::NAN,
        table_at_01: f64::NAN,
        table_old: (f64::NAN, recall(tb, 45.0)),
        detector: (
            f64::NAN,
            share(rated, c, false, Severity::Medium),
            f64::NAN,
            share(rated, c, false, Severity::High),
        ),
    }
}

fn pct(x: f64) -> String {
    if x.is_nan() {
        return "n/a".into();
    }
    format!("{:.1}%", 100.0 * x)
}

/// Leave-one-corpus-out and per-corpus group splits, as Markdown.
fn evaluate(prepared: &[Prepared], attacks: &[String], settings: &LearnSettings) -> String {
    let mut all_rows = Vec::new();
    let corpora = CORPORA.into_iter().chain([SERVERS]);
    for corpus in corpora.clone() {
        // AgentDojo's `injecagent` attack is InjecAgent's wrapper: each held out with the other.
        let test: Vec<&Prepared> = prepared
            .iter()
            .filter(|p| p.sample.corpus == corpus)
            .collect();
        let train: Vec<&Prepared> = prepared
            .iter()
            .zip(attacks)
            .filter(|(p, attack)| {
                p.sample.corpus != corpus
                    && !(corpus == "injecagent" && attack.as_str() == "injecagent")
                    && !(corpus == "agentdojo" && attack.as_str() == "enhanced")
            })
            .map(|(p, _)| p)
            .collect();
        let (model, oof) = learn::train(&train, settings, Value::Null);
        let table_oof = learn::table_unit_scores(&train);
        all_rows.extend(rows(
            &format!("leave out {corpus}"),
            &model,
            &test,
            &oof,
            &table_oof,
        ));
    }
    // In-distribution: one split of every corpus by group, 70% to train.
    let (test, train): (Vec<&Prepared>, Vec<&Prepared>) = prepared
        .iter()
        .partition(|p| fold_of(&p.sample.group, 10) >= 7);
    let (model, oof) = learn::train(&train, settings, Value::Null);
    let table_oof = learn::table_unit_scores(&train);
    for corpus in corpora {
        let held: Vec<&Prepared> = test
            .iter()
            .copied()
            .filter(|p| p.sample.corpus == corpus)
            .collect();
        all_rows.extend(rows(
            &format!("{corpus} split (30% of groups)"),
            &model,
            &held,
            &oof,
            &table_oof,
        ));
    }
    let mut md = String::new();
    let _ = writeln!(
        md,
        "| setting | context | malicious | benign (from) | classifier recall @1% FPR | @0.1% FPR | calibrated medium+: recall / benign flagged | high+: recall / benign flagged | table recall @1% FPR | @0.1% FPR | table today (score ≥ 45): recall / benign flagged | detector medium+: recall / benign flagged | detector high+ |"
    );
    let _ = writeln!(md, "|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for r in &all_rows {
        let (cm, cmb, ch, chb) = r.calibrated;
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} ({}) | {} | {} | {} / {} | {} / {} | {} | {} | {} / {} | {} / {} | {} / {} |",
            r.setting,
            context_name(r.context),
            r.malicious,
            r.benign,
            r.benign_from,
            pct(r.at_1),
            pct(r.at_01),
            pct(cm),
            pct(cmb),
            pct(ch),
            pct(chb),
            pct(r.table_at_1),
            pct(r.table_at_01),
            pct(r.table_old.0),
            pct(r.table_old.1),
            pct(r.detector.0),
            pct(r.detector.1),
            pct(r.detector.2),
            pct(r.detector.3),
        );
    }
    md
}
