//! Learning normal behaviour from recorded events ([`Trainer`]): the sequence
//! detector's own learner, run in training mode, builds the per-role call models, and
//! each session's feature vector is collected for the `session` detector's clusters.
//!
//! Fitting the clusters ([`fit_sessions`]): standardize the session vectors, run
//! k-means (linfa-clustering) for each k from 2 to `max_k`, keep the k with the best
//! mean silhouette, and give each cluster a distance threshold from its own members.
//!
//! Deterministic: the k-means initialisation uses a seeded generator and the silhouette
//! is computed on an evenly strided sample, so the same events give the same model.
//! Events are handed over by the caller (in event-time order); nothing here reads files.

use std::collections::HashMap;

use linfa::DatasetBase;
use linfa::prelude::*;
use linfa_clustering::KMeans;
use ndarray::{Array2, ArrayView1};
use rand::SeedableRng;
use rand::rngs::StdRng;
use toolgate_detectors::sequence::LearnedModel;
use toolgate_detectors::sequence::LearnedSettings;
use toolgate_detectors::sequence::learned::Learner;
use toolgate_detectors::session::{
    self, Cluster, FeatureSpec, SessionAccumulator, SessionModel, SessionSettings, distance,
};
use toolgate_protocol::Event;
use toolgate_protocol::config::Config;

/// Seed of the k-means initialisation: a fixed seed makes training reproducible.
pub const SEED: u64 = 0x746f_6f6c_6761_7465;

/// Percentile of each cluster's member distances that becomes its threshold.
pub const PERCENTILE: f64 = 99.0;

/// Learns from events handed over in event-time order.
pub struct Trainer<'c> {
    config: &'c Config,
    learner: Learner,
    spec: FeatureSpec,
    min_calls: u64,
    sessions: HashMap<String, SessionAccumulator>,
    events: u64,
}

/// What training produced.
#[derive(Debug, Clone)]
pub struct Trained {
    /// The per-role call models (`[detectors.sequence.learned] model`).
    pub sequence: LearnedModel,
    /// The session clusters (`[detectors.session] model`).
    pub sessions: SessionModel,
    /// Events learned from.
    pub events: u64,
}

impl<'c> Trainer<'c> {
    /// A trainer for `config` with the detectors' settings (their `model` left out:
    /// training starts from nothing).
    pub fn new(
        config: &'c Config,
        learned: LearnedSettings,
        session: &SessionSettings,
    ) -> Result<Self, TrainError> {
        let mut learner = Learner::new(learned).map_err(TrainError::Settings)?;
        learner.train_only = true;
        Ok(Trainer {
            config,
            learner,
            spec: session::feature_spec(config, session),
            min_calls: session.min_calls,
            sessions: HashMap::new(),
            events: 0,
        })
    }

    /// Learns from one event.
    pub fn observe(&mut self, event: &Event) {
        self.events += 1;
        let mut none = Vec::new();
        self.learner
            .observe(event, self.config, i64::MIN, &mut none);
        self.sessions
            .entry(format!("{}\u{1f}{}", event.agent_id, event.session_id))
            .or_default()
            .add(event, self.config, &self.spec);
    }

    /// Event time has reached `watermark`: idle sessions' paths are scored into the
    /// role models.
    pub fn advance(&mut self, watermark: i64) {
        self.learner.advance(watermark, &mut Vec::new());
    }

    /// Ends training: fits the session clusters (k from 2 to `max_k`).
    pub fn finish(mut self, max_k: usize) -> Result<Trained, TrainError> {
        self.learner.finish(&mut Vec::new());
        let mut keys: Vec<&String> = self.sessions.keys().collect();
        keys.sort();
        let vectors: Vec<Vec<f64>> = keys
            .iter()
            .filter_map(|k| self.sessions.get(*k))
            .filter(|a| a.calls() >= self.min_calls)
            .map(|a| a.vector(&self.spec))
            .collect();
        let sessions = fit_sessions(self.spec.names(), &vectors, max_k, PERCENTILE, SEED)?;
        Ok(Trained {
            sequence: self.learner.model(),
            sessions,
            events: self.events,
        })
    }
}

/// Training could not produce a model.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TrainError {
    /// The learner's settings are wrong.
    #[error("`detectors.sequence.learned`: {0}")]
    Settings(String),
    /// Too few sessions to cluster.
    #[error("{found} sessions with enough calls to learn from; at least {needed} are needed")]
    TooFewSessions {
        /// Sessions given.
        found: usize,
        /// Sessions needed.
        needed: usize,
    },
    /// A vector of the wrong length or a value that is not a number.
    #[error("session {index}: {message}")]
    BadVector {
        /// Which session.
        index: usize,
        /// What is wrong.
        message: String,
    },
    /// linfa failed.
    #[error("k-means with k = {k}: {message}")]
    KMeans {
        /// The k tried.
        k: usize,
        /// linfa's error.
        message: String,
    },
}

/// Most sessions the silhouette is computed over (it is quadratic).
const SILHOUETTE_SAMPLE: usize = 2000;

/// Fits the session model. `percentile` (0–100) of each cluster's member distances
/// becomes its threshold.
pub fn fit_sessions(
    features: Vec<String>,
    vectors: &[Vec<f64>],
    max_k: usize,
    percentile: f64,
    seed: u64,
) -> Result<SessionModel, TrainError> {
    let d = features.len();
    let n = vectors.len();
    let needed = 10.max(2 * max_k.max(2));
    if n < needed {
        return Err(TrainError::TooFewSessions { found: n, needed });
    }
    for (i, v) in vectors.iter().enumerate() {
        if v.len() != d {
            return Err(TrainError::BadVector {
                index: i,
                message: format!("{} values for {d} features", v.len()),
            });
        }
        if let Some(j) = v.iter().position(|x| !x.is_finite()) {
            return Err(TrainError::BadVector {
                index: i,
                message: format!("feature {} is {}", features[j], v[j]),
            });
        }
    }
    let mut mean = vec![0.0; d];
    for v in vectors {
        for (m, x) in mean.iter_mut().zip(v) {
            *m += x / n as f64;
        }
    }
    let mut std = vec![0.0; d];
    for v in vectors {
        for ((s, x), m) in std.iter_mut().zip(v).zip(&mean) {
            *s += (x - m) * (x - m) / n as f64;
        }
    }
    // A feature constant in training gets unit scale: any change from it then counts
    // in its own units instead of dividing by zero.
    let std: Vec<f64> = std
        .into_iter()
        .map(|v| if v > 1e-12 { v.sqrt() } else { 1.0 })
        .collect();
    let mut data = Array2::<f64>::zeros((n, d));
    for (i, v) in vectors.iter().enumerate() {
        for j in 0..d {
            data[[i, j]] = (v[j] - mean[j]) / std[j];
        }
    }
    let stride = n.div_ceil(SILHOUETTE_SAMPLE).max(1);
    let sample: Vec<usize> = (0..n).step_by(stride).collect();
    let mut tried = Vec::new();
    let mut best: Option<(f64, usize, Array2<f64>, Vec<usize>)> = None;
    for k in 2..=max_k.max(2).min(n - 1) {
        let rng = StdRng::seed_from_u64(seed);
        let dataset = DatasetBase::from(data.clone());
        let model = KMeans::params_with_rng(k, rng)
            .n_runs(4)
            .max_n_iterations(300)
            .tolerance(1e-6)
            .fit(&dataset)
            .map_err(|e| TrainError::KMeans {
                k,
                message: e.to_string(),
            })?;
        let labels: Vec<usize> = model.predict(&data).to_vec();
        let score = silhouette(&data, &labels, k, &sample);
        tried.push((k, (score * 1000.0).round() / 1000.0));
        if best.as_ref().is_none_or(|b| score > b.0) {
            best = Some((score, k, model.centroids().clone(), labels));
        }
    }
    let Some((_, k, centroids, labels)) = best else {
        return Err(TrainError::TooFewSessions { found: n, needed });
    };
    let mut member_distances: Vec<Vec<f64>> = vec![Vec::new(); k];
    for (i, &l) in labels.iter().enumerate() {
        let row: Vec<f64> = data.row(i).to_vec();
        let c: Vec<f64> = centroids.row(l).to_vec();
        member_distances[l].push(distance(&row, &c));
    }
    let mut all: Vec<f64> = member_distances.iter().flatten().copied().collect();
    all.sort_by(f64::total_cmp);
    // Small clusters have too few members for a percentile of their own: no cluster's
    // threshold is below the median member distance of the whole model.
    let floor = all.get(all.len() / 2).copied().unwrap_or(0.0);
    let clusters = (0..k)
        .map(|c| {
            let mut ds = member_distances[c].clone();
            ds.sort_by(f64::total_cmp);
            let at = ((percentile / 100.0) * ds.len() as f64).ceil() as usize;
            let p = ds
                .get(at.saturating_sub(1).min(ds.len().saturating_sub(1)))
                .copied()
                .unwrap_or(0.0);
            Cluster {
                centroid: centroids.row(c).to_vec(),
                size: ds.len() as u64,
                threshold: p.max(floor),
                mean_distance: if ds.is_empty() {
                    0.0
                } else {
                    ds.iter().sum::<f64>() / ds.len() as f64
                },
            }
        })
        .collect();
    Ok(SessionModel {
        features,
        mean,
        std,
        clusters,
        silhouette: tried,
        percentile,
        sessions: n as u64,
    })
}

fn euclid(a: ArrayView1<f64>, b: ArrayView1<f64>) -> f64 {
    a.iter()
        .zip(b.iter())
        .map(|(x, y)| (x - y) * (x - y))
        .sum::<f64>()
        .sqrt()
}

/// Mean silhouette over `sample` (Rousseeuw 1987): for each point, how much closer it
/// is to its own cluster than to the nearest other one, in -1..1.
fn silhouette(data: &Array2<f64>, labels: &[usize], k: usize, sample: &[usize]) -> f64 {
    let mut total = 0.0;
    let mut counted = 0;
    for &i in sample {
        let mut sum = vec![0.0; k];
        let mut count = vec![0usize; k];
        for &j in sample {
            if i == j {
                continue;
            }
            sum[labels[j]] += euclid(data.row(i), data.row(j));
            count[labels[j]] += 1;
        }
        let own = labels[i];
        if count[own] == 0 {
            continue;
        }
        let a = sum[own] / count[own] as f64;
        let b = (0..k)
            .filter(|&c| c != own && count[c] > 0)
            .map(|c| sum[c] / count[c] as f64)
            .fold(f64::INFINITY, f64::min);
        if !b.is_finite() {
            continue;
        }
        let s = (b - a) / a.max(b).max(1e-12);
        total += s;
        counted += 1;
    }
    if counted == 0 {
        -1.0
    } else {
        total / counted as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blobs() -> Vec<Vec<f64>> {
        let mut v = Vec::new();
        for i in 0..60 {
            let jitter = (i % 7) as f64 * 0.05;
            match i % 3 {
                0 => v.push(vec![0.0 + jitter, 0.0, 5.0]),
                1 => v.push(vec![10.0, 10.0 + jitter, 5.0]),
                _ => v.push(vec![-10.0 + jitter, 10.0, 5.0]),
            }
        }
        v
    }

    #[test]
    fn three_blobs_give_three_clusters_and_an_outlier_is_far() {
        let names = vec!["a".into(), "b".into(), "c".into()];
        let model =
            fit_sessions(names.clone(), &blobs(), 6, 99.0, 7).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            model.clusters.len(),
            3,
            "silhouette: {:?}",
            model.silhouette
        );
        assert_eq!(model.std[2], 1.0, "a constant feature gets unit scale");
        let z = model.standardize(&[5.0, -20.0, 5.0]);
        let (k, d) = model.nearest(&z).unwrap_or((0, 0.0));
        assert!(
            d > model.clusters[k].threshold * 3.0,
            "{d} vs {}",
            model.clusters[k].threshold
        );
        let z = model.standardize(&[10.1, 10.1, 5.0]);
        let (k, d) = model.nearest(&z).unwrap_or((0, f64::MAX));
        assert!(d <= model.clusters[k].threshold);
        let again = fit_sessions(names, &blobs(), 6, 99.0, 7).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(model, again, "training is deterministic");
    }

    #[test]
    fn bad_input_is_refused() {
        let names = vec!["a".into()];
        assert!(matches!(
            fit_sessions(names.clone(), &vec![vec![1.0]; 3], 4, 99.0, 1),
            Err(TrainError::TooFewSessions { .. })
        ));
        let mut v = vec![vec![1.0]; 20];
        v[3] = vec![f64::NAN];
        assert!(matches!(
            fit_sessions(names, &v, 4, 99.0, 1),
            Err(TrainError::BadVector { index: 3, .. })
        ));
    }
}
