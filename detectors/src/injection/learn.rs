//! Learning the classifier's weights and severity thresholds from labelled texts.
//! Pure and deterministic: same samples in the same order, same model, byte for byte
//! (the order examples are visited in comes from a fixed-seed generator, and every sum
//! is taken in a fixed order).
//!
//! - **Examples are windows**, as the detector scores them: a benign text gives its
//!   windows (up to [`LearnSettings::benign_windows`]), a malicious one the windows
//!   that hold its planted instruction (the sample's `span`) with the text around it,
//!   or, without a span, its first windows.
//! - **Model**: logistic regression over the hashed features of a window plus one
//!   numeric feature, the signal table's score of the window, trained with AdaGrad.
//!   Every (corpus, class) pair weighs the same in total, so the largest corpus does
//!   not decide what "benign" looks like.
//! - **Thresholds** come from benign texts the model being calibrated never saw: the
//!   samples are cut into folds by group, each fold is scored by a model trained on the
//!   others, and `medium`/`high` are the scores that at most 1% / 0.1% of those
//!   out-of-fold benign units reach, per context: of all of them, and of each corpus
//!   large enough to read the rate from ([`threshold_per_corpus`]). The shipped model
//!   is then trained on everything and keeps those thresholds.

use std::collections::BTreeMap;
use std::ops::Range;

use serde_json::Value;

use crate::hash::fnv1a;

use super::analysis::{Analysis, Context, analyze_passages, analyze_text};
use super::classifier::{
    BUCKETS_LOG2, Calibration, Model, Thresholds, Token, WINDOW, counts_once, tokens,
    window_features,
};

/// One labelled text.
#[derive(Debug, Clone)]
pub struct Sample {
    /// The text.
    pub text: String,
    /// Where the planted instruction is, when known.
    pub span: Option<Range<usize>>,
    /// Aimed at the model (an injection, a poisoned definition).
    pub malicious: bool,
    /// Result or definition text.
    pub context: Context,
    /// The corpus it comes from.
    pub corpus: String,
    /// Samples sharing a group (the same attacker goal, the same template) are never
    /// split between training and test.
    pub group: String,
    /// What a finding is about: texts with the same unit (the texts of one tool
    /// definition) are judged together, by their highest score.
    pub unit: String,
    /// The table's analysis of the whole unit, when the caller can read it as the
    /// detector does (a definition with its schema, by `analyze_tool`); without it the
    /// unit's texts are read together by passages.
    pub table: Option<Analysis>,
}

/// How to learn.
#[derive(Debug, Clone)]
pub struct LearnSettings {
    /// Passes over the examples.
    pub epochs: usize,
    /// AdaGrad's step.
    pub rate: f64,
    /// L2 penalty, applied to the weights an example touches.
    pub l2: f64,
    /// Folds for out-of-fold thresholds.
    pub folds: usize,
    /// Most windows taken from one benign text.
    pub benign_windows: usize,
    /// Most windows taken from one malicious text.
    pub malicious_windows: usize,
    /// A feature is learned only if it occurs in this many corpora: words one corpus
    /// alone uses (its names, its templates) describe that corpus, not attacks.
    pub min_corpora: usize,
}

impl Default for LearnSettings {
    fn default() -> Self {
        LearnSettings {
            epochs: 8,
            rate: 0.1,
            l2: 1e-4,
            folds: 5,
            benign_windows: 6,
            malicious_windows: 4,
            min_corpora: 2,
        }
    }
}

/// Share of benign units that may reach `medium`.
pub const FPR_MEDIUM: f64 = 0.01;
/// Share of benign units that may reach `high`.
pub const FPR_HIGH: f64 = 0.001;

struct Example {
    features: Vec<u32>,
    value: f32,
    table: f32,
    malicious: bool,
}

/// A small deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// The signal table's score of a slice, 0 to 1: the table's own evidence, one feature
/// of the model.
pub fn table_feature(text: &str, context: Context) -> f32 {
    table_feature_of(&analyze_text(text, context))
}

/// [`table_feature`] of an analysis already made.
pub fn table_feature_of(a: &super::analysis::Analysis) -> f32 {
    a.score.min(100) as f32 / 100.0
}

/// Token ranges of `sample` to learn from.
fn example_windows(s: &Sample, toks: &[Token], settings: &LearnSettings) -> Vec<Range<usize>> {
    let n = toks.len();
    if n == 0 {
        return Vec::new();
    }
    // Whole windows, as the detector scores them: the last one ends at `to`.
    let spread = |from: usize, to: usize, most: usize| -> Vec<Range<usize>> {
        let mut v = Vec::new();
        let mut start = from;
        while start < to && v.len() < most {
            let s = start.min(to.saturating_sub(WINDOW)).max(from);
            v.push(s..(s + WINDOW).min(n));
            start += WINDOW;
        }
        v
    };
    if !s.malicious {
        return spread(0, n, settings.benign_windows);
    }
    let Some(span) = &s.span else {
        return spread(0, n, settings.malicious_windows);
    };
    let first = toks.iter().position(|t| t.end > span.start);
    let last = toks.iter().rposition(|t| t.start < span.end);
    let (Some(a), Some(b)) = (first, last) else {
        return Vec::new();
    };
    let len = b + 1 - a;
    if len >= WINDOW {
        return spread(a, b + 1, settings.malicious_windows);
    }
    // The instruction with some of the text around it, the amount before it chosen
    // from the text's hash so the model sees it at every position of a window.
    let room = WINDOW - len;
    let before = (fnv1a(s.text.as_bytes()) % (room as u64 + 1)) as usize;
    let start = a.saturating_sub(before);
    let end = (start + WINDOW).min(n);
    let start = end.saturating_sub(WINDOW).min(start);
    std::iter::once(start..end).collect()
}

/// A sample with the windows learned from it, cut once for every model trained.
pub struct Prepared {
    /// The sample.
    pub sample: Sample,
    examples: Vec<Example>,
}

/// Cuts every sample into its learning windows.
pub fn prepare(samples: Vec<Sample>, settings: &LearnSettings) -> Vec<Prepared> {
    samples
        .into_iter()
        .map(|s| {
            let toks = tokens(&s.text);
            let examples = example_windows(&s, &toks, settings)
                .into_iter()
                .map(|w| {
                    let slice = &s.text[toks[w.start].start..toks[w.end - 1].end];
                    let (features, value) = window_features(&toks[w], counts_once(s.context));
                    Example {
                        features: features.into_iter().map(|f| f as u32).collect(),
                        value,
                        table: table_feature(slice, s.context),
                        malicious: s.malicious,
                    }
                })
                .collect();
            Prepared {
                sample: s,
                examples,
            }
        })
        .collect()
}

/// The examples of `samples` with their weights: each (corpus, class) weighs the same
/// in total, and half the weight is malicious.
fn weighted<'a>(samples: &[&'a Prepared]) -> Vec<(&'a Example, f64)> {
    let mut classes: BTreeMap<(&str, bool), usize> = BTreeMap::new();
    for p in samples {
        *classes
            .entry((p.sample.corpus.as_str(), p.sample.malicious))
            .or_default() += p.examples.len();
    }
    let malicious_classes = classes.keys().filter(|k| k.1).count().max(1) as f64;
    let benign_classes = classes.keys().filter(|k| !k.1).count().max(1) as f64;
    let total: usize = classes.values().sum();
    let mut out = Vec::with_capacity(total);
    for p in samples {
        let class = (p.sample.corpus.as_str(), p.sample.malicious);
        let per_class = if class.1 {
            malicious_classes
        } else {
            benign_classes
        };
        let weight = total as f64 / (2.0 * per_class * classes[&class] as f64);
        out.extend(p.examples.iter().map(|e| (e, weight)));
    }
    out
}

/// Which buckets occur in at least `min_corpora` of the samples' corpora.
fn supported(samples: &[&Prepared], min_corpora: usize) -> Vec<bool> {
    let dim = 1usize << BUCKETS_LOG2;
    if min_corpora <= 1 {
        return vec![true; dim];
    }
    let mut corpora: BTreeMap<&str, u64> = BTreeMap::new();
    for p in samples {
        let n = corpora.len();
        corpora
            .entry(p.sample.corpus.as_str())
            .or_insert(1 << (n % 64));
    }
    let mut seen = vec![0u64; dim];
    for p in samples {
        let bit = corpora[p.sample.corpus.as_str()];
        for e in &p.examples {
            for &f in &e.features {
                seen[f as usize] |= bit;
            }
        }
    }
    seen.into_iter()
        .map(|m| m.count_ones() as usize >= min_corpora)
        .collect()
}

fn sigmoid(z: f64) -> f64 {
    1.0 / (1.0 + (-z).exp())
}

/// Trains weights on `samples` (thresholds left at zero).
pub fn fit(samples: &[&Prepared], settings: &LearnSettings) -> Model {
    let examples = weighted(samples);
    let dim = 1usize << BUCKETS_LOG2;
    let learnable = supported(samples, settings.min_corpora);
    let mut w = vec![0.0f64; dim];
    let mut g2 = vec![0.0f64; dim];
    let (mut bias, mut bias_g2) = (0.0f64, 0.0f64);
    let (mut tw, mut tw_g2) = (0.0f64, 0.0f64);
    let mut order: Vec<usize> = (0..examples.len()).collect();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let eps = 1e-8;
    for _ in 0..settings.epochs {
        for i in (1..order.len()).rev() {
            let j = (rng.next() % (i as u64 + 1)) as usize;
            order.swap(i, j);
        }
        for &k in &order {
            let (e, weight) = examples[k];
            let value = f64::from(e.value);
            let table = f64::from(e.table);
            let z =
                bias + tw * table + value * e.features.iter().map(|&f| w[f as usize]).sum::<f64>();
            let y = if e.malicious { 1.0 } else { 0.0 };
            let g = (sigmoid(z) - y) * weight;
            for &f in &e.features {
                let f = f as usize;
                if !learnable[f] {
                    continue;
                }
                let grad = g * value + settings.l2 * w[f];
                g2[f] += grad * grad;
                w[f] -= settings.rate * grad / (g2[f] + eps).sqrt();
            }
            bias_g2 += g * g;
            bias -= settings.rate * g / (bias_g2 + eps).sqrt();
            let gt = g * table;
            tw_g2 += gt * gt;
            tw -= settings.rate * gt / (tw_g2 + eps).sqrt();
        }
    }
    let zero = Thresholds {
        medium: 0.0,
        high: 0.0,
        table_medium: Thresholds::TABLE_MEDIUM,
        table_high: Thresholds::TABLE_HIGH,
        benign_texts: 0,
    };
    Model {
        weights: w.into_iter().map(|x| x as f32).collect(),
        bias: bias as f32,
        table_weight: tw as f32,
        calibration: Calibration {
            results: zero,
            descriptions: zero,
        },
        trained_on: Value::Null,
    }
}

/// A unit's score.
#[derive(Debug, Clone)]
pub struct UnitScore {
    /// The unit.
    pub unit: String,
    /// The corpus it comes from.
    pub corpus: String,
    /// Any of its texts malicious.
    pub malicious: bool,
    /// Its context.
    pub context: Context,
    /// The highest score of its texts.
    pub score: f32,
}

/// Scores per unit (the highest of its texts), in unit order.
pub fn unit_scores(model: &Model, samples: &[&Prepared]) -> Vec<UnitScore> {
    let mut units: BTreeMap<&str, UnitScore> = BTreeMap::new();
    for p in samples {
        let s = &p.sample;
        // The detector's own score (the table always scanned: what training saw).
        let score = super::judge(model, &s.text, s.context, true).map_or(f32::MIN, |v| v.score);
        let u = units.entry(s.unit.as_str()).or_insert_with(|| UnitScore {
            unit: s.unit.clone(),
            corpus: s.corpus.clone(),
            malicious: false,
            context: s.context,
            score: f32::MIN,
        });
        u.malicious |= s.malicious;
        u.score = u.score.max(score);
    }
    units.into_values().collect()
}

/// The lowest score that at most `fpr` of `benign` reach (just above the score of the
/// benign unit ranked `floor(fpr·n)` from the top).
pub fn threshold_at(benign: &[f32], fpr: f64) -> f32 {
    let mut v: Vec<f32> = benign.to_vec();
    v.sort_by(|a, b| b.total_cmp(a));
    let k = (fpr * v.len() as f64).floor() as usize;
    match v.get(k) {
        Some(&s) => next_up(s),
        None => f32::MIN,
    }
}

fn next_up(x: f32) -> f32 {
    if x.is_nan() || x == f32::INFINITY {
        return x;
    }
    let bits = x.to_bits();
    let up = if x == 0.0 {
        1
    } else if x > 0.0 {
        bits + 1
    } else {
        bits - 1
    };
    f32::from_bits(up)
}

/// Share of `malicious` at or above `threshold`.
pub fn recall(malicious: &[f32], threshold: f32) -> f64 {
    if malicious.is_empty() {
        return 0.0;
    }
    malicious.iter().filter(|&&s| s >= threshold).count() as f64 / malicious.len() as f64
}

/// The lowest score that at most `fpr` of all benign units, and of the benign units of
/// every corpus, reach: the highest of the pooled [`threshold_at`] and the corpora's
/// own, each read only from a corpus with enough units to see the rate once (100 for
/// 1%, 1,000 for 0.1%).
///
/// Why per corpus: a threshold pooled over corpora lets a corpus of unusual text (a
/// large share of imperatives, as in AgentDojo's emails of tasks) take more than its
/// share of false alarms, and a corpus never seen, as the next deployment's traffic
/// is, behaves like any one of them, not like their mixture. Held out, AgentDojo's
/// benign results reached `medium` at 3.2% with pooled thresholds, 2.4% with these.
pub fn threshold_per_corpus(benign: &[(&str, f32)], fpr: f64) -> f32 {
    let mut by: BTreeMap<&str, Vec<f32>> = BTreeMap::new();
    for &(corpus, score) in benign {
        by.entry(corpus).or_default().push(score);
    }
    let pooled: Vec<f32> = benign.iter().map(|b| b.1).collect();
    by.values()
        .filter(|v| v.len() as f64 * fpr >= 1.0)
        .map(|v| threshold_at(v, fpr))
        .fold(threshold_at(&pooled, fpr), f32::max)
}

/// Thresholds from benign units' scores: the classifier's from `benign` (with their
/// corpora, see [`threshold_per_corpus`]), the table's bands from `table` (the same
/// units' table scores, pooled: the bands only rise from their historical floors).
pub fn thresholds(benign: &[(&str, f32)], table: &[f32]) -> Thresholds {
    // The table's bands only ever rise: where benign text of the context reaches them
    // more often than the budget allows.
    // Scores stop at 100: a band past it would switch the table off, so a table
    // that benign text saturates still rates its perfect scores.
    let band = |fpr: f64, floor: u32| -> u32 {
        let t = threshold_at(table, fpr).ceil();
        if t.is_finite() && t > floor as f32 {
            (t as u32).min(100)
        } else {
            floor
        }
    };
    // A rate is read only from enough benign units to see it once (1,000 for 0.1%);
    // below that the band keeps its floor, and `high` never starts below `medium`.
    let enough = |fpr: f64| table.len() as f64 * fpr >= 1.0;
    let table_medium = if enough(FPR_MEDIUM) {
        band(FPR_MEDIUM, Thresholds::TABLE_MEDIUM)
    } else {
        Thresholds::TABLE_MEDIUM
    };
    let table_high = if enough(FPR_HIGH) {
        band(FPR_HIGH, Thresholds::TABLE_HIGH)
    } else {
        Thresholds::TABLE_HIGH
    };
    let medium = threshold_per_corpus(benign, FPR_MEDIUM);
    Thresholds {
        medium,
        high: threshold_per_corpus(benign, FPR_HIGH).max(medium),
        table_medium,
        table_high: table_high.max(table_medium),
        benign_texts: benign.len() as u64,
    }
}

/// Fold of a group.
pub fn fold_of(group: &str, folds: usize) -> usize {
    (fnv1a(group.as_bytes()) % folds.max(1) as u64) as usize
}

/// Out-of-fold scores of every unit of `samples`: each fold scored by a model trained
/// on the other folds.
pub fn out_of_fold(samples: &[&Prepared], settings: &LearnSettings) -> Vec<UnitScore> {
    let mut out = Vec::new();
    for fold in 0..settings.folds {
        let (test, train): (Vec<&Prepared>, Vec<&Prepared>) = samples
            .iter()
            .partition(|p| fold_of(&p.sample.group, settings.folds) == fold);
        if test.is_empty() {
            continue;
        }
        let model = fit(&train, settings);
        out.extend(unit_scores(&model, &test));
    }
    out
}

/// The signal table's score per unit, in unit order: a result's highest text; a
/// definition's [`Sample::table`], or its texts read together by passages.
pub fn table_unit_scores(samples: &[&Prepared]) -> Vec<UnitScore> {
    let mut units: BTreeMap<&str, (UnitScore, Vec<&str>, Option<u32>)> = BTreeMap::new();
    for p in samples {
        let s = &p.sample;
        let (u, texts, whole) = units.entry(s.unit.as_str()).or_insert_with(|| {
            let u = UnitScore {
                unit: s.unit.clone(),
                corpus: s.corpus.clone(),
                malicious: false,
                context: s.context,
                score: f32::MIN,
            };
            (u, Vec::new(), None)
        });
        u.malicious |= s.malicious;
        match s.context {
            Context::Result => u.score = u.score.max(analyze_text(&s.text, s.context).score as f32),
            Context::Description => {
                texts.push(&s.text);
                *whole = whole.or(s.table.as_ref().map(|a| a.score));
            }
        }
    }
    units
        .into_values()
        .map(|(mut u, texts, whole)| {
            if u.context == Context::Description {
                let score = whole.unwrap_or_else(|| {
                    analyze_passages(&texts.join("\n"), Context::Description).score
                });
                u.score = score as f32;
            }
            u
        })
        .collect()
}

/// Calibration from out-of-fold unit scores, and the table's bands from its unit
/// scores. A context without benign units takes the other's thresholds (said in
/// `trained_on` by the caller).
pub fn calibration<'a>(scores: &'a [UnitScore], table: &'a [UnitScore]) -> Calibration {
    let benign = |of: &'a [UnitScore], c: Context| {
        of.iter()
            .filter(move |u| !u.malicious && u.context == c)
            .map(|u| (u.corpus.as_str(), u.score))
    };
    let results: Vec<_> = benign(scores, Context::Result).collect();
    let descriptions: Vec<_> = benign(scores, Context::Description).collect();
    let table_of = |c| benign(table, c).map(|b| b.1).collect::<Vec<f32>>();
    let r = thresholds(&results, &table_of(Context::Result));
    let d = thresholds(&descriptions, &table_of(Context::Description));
    Calibration {
        results: if results.is_empty() { d } else { r },
        descriptions: if descriptions.is_empty() { r } else { d },
    }
}

/// The model to ship: thresholds from out-of-fold scores, weights from all samples.
/// The out-of-fold scores come back too, for reports.
pub fn train(
    samples: &[&Prepared],
    settings: &LearnSettings,
    trained_on: Value,
) -> (Model, Vec<UnitScore>) {
    let oof = out_of_fold(samples, settings);
    let mut model = fit(samples, settings);
    model.calibration = calibration(&oof, &table_unit_scores(samples));
    model.trained_on = trained_on;
    (model, oof)
}
