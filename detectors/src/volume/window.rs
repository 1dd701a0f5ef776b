//! Sliding windows as rings of panes, the moving mean and variance learned from them,
//! and the HyperLogLog ring behind distinct counts.
//!
//! A window of `P` panes covers the pane an event falls in and the `P - 1` before it,
//! so it slides by one pane: unlike fixed buckets, a burst is never split in two by a
//! bucket boundary. Panes are numbered by event time (`time / pane_len`), so replays
//! and restores see the same panes.

use datasketches::hll::{HllSketch, HllType, HllUnion};
use serde::{Deserialize, Serialize};

/// Register count (log2) of every distinct-value sketch: about 3 % relative error, at
/// most 1 KiB per pane, and exact for the first few hundred values (list mode).
const LG_K: u8 = 10;

/// Where a value landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// In the window.
    InWindow,
    /// Older than the window's oldest pane: not counted.
    Late,
}

/// `width` counters per pane, for the last `panes` panes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Ring {
    head: i64,
    width: usize,
    values: Vec<u64>,
}

impl Ring {
    /// An empty ring whose newest pane is `head`.
    pub fn new(panes: usize, width: usize, head: i64) -> Self {
        Ring {
            head,
            width,
            values: vec![0; panes * width],
        }
    }

    fn panes(&self) -> i64 {
        (self.values.len() / self.width) as i64
    }

    fn slot(&self, pane: i64) -> usize {
        pane.rem_euclid(self.panes()) as usize * self.width
    }

    /// Newest pane.
    pub fn head(&self) -> i64 {
        self.head
    }

    /// Makes `pane` the newest (if it is newer), handing each pane that closes to
    /// `on_close`: the old head with its values, then up to `max_empty` empty ones.
    pub fn roll(&mut self, pane: i64, max_empty: u32, mut on_close: impl FnMut(&[u64])) {
        if pane <= self.head {
            return;
        }
        let old = self.slot(self.head);
        on_close(&self.values[old..old + self.width]);
        let gap = pane.saturating_sub(self.head).saturating_sub(1);
        let zeros = vec![0; self.width];
        for _ in 0..gap.min(i64::from(max_empty)) {
            on_close(&zeros);
        }
        let clear = pane.saturating_sub(self.head).min(self.panes());
        for k in 0..clear {
            let s = self.slot(pane - k);
            self.values[s..s + self.width].fill(0);
        }
        self.head = pane;
    }

    /// Adds `v` to counter `metric` of `pane` (rolling forward first if it is newer).
    pub fn add(&mut self, pane: i64, metric: usize, v: u64) -> Placement {
        if pane <= self.head - self.panes() {
            return Placement::Late;
        }
        self.roll(pane, 0, |_| {});
        let s = self.slot(pane) + metric;
        self.values[s] = self.values[s].saturating_add(v);
        Placement::InWindow
    }

    /// Sum of counter `metric` over the window.
    pub fn sum(&self, metric: usize) -> u64 {
        self.values
            .iter()
            .skip(metric)
            .step_by(self.width)
            .fold(0u64, |a, &v| a.saturating_add(v))
    }

    /// Bytes this ring holds.
    pub fn heap_bytes(&self) -> usize {
        self.values.len() * 8
    }
}

/// Exponentially weighted mean and variance (West's incremental form).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq)]
pub struct Ewma {
    /// Mean.
    pub mean: f64,
    /// Variance.
    pub var: f64,
    /// Samples seen (saturating).
    pub n: u32,
}

impl Ewma {
    /// Takes one sample with weight `alpha`; the first sample sets the mean.
    pub fn push(&mut self, x: f64, alpha: f64) {
        if self.n == 0 {
            self.mean = x;
            self.var = 0.0;
        } else {
            let diff = x - self.mean;
            let incr = alpha * diff;
            self.mean += incr;
            self.var = (1.0 - alpha) * (self.var + diff * incr);
        }
        self.n = self.n.saturating_add(1);
    }

    /// Standard deviation.
    pub fn std(&self) -> f64 {
        self.var.max(0.0).sqrt()
    }
}

/// Distinct values over the window: one HyperLogLog per pane, and the union of the
/// closed panes kept so an update costs one union of two sketches.
#[derive(Debug, Clone)]
pub struct DistinctRing {
    head: i64,
    panes: Vec<Option<HllSketch>>,
    closed: Option<HllSketch>,
}

impl DistinctRing {
    /// An empty ring whose newest pane is `head`.
    pub fn new(panes: usize, head: i64) -> Self {
        DistinctRing {
            head,
            panes: vec![None; panes],
            closed: None,
        }
    }

    fn slot(&self, pane: i64) -> usize {
        pane.rem_euclid(self.panes.len() as i64) as usize
    }

    /// Counts `value` in `pane`.
    pub fn add(&mut self, pane: i64, value: &str) -> Placement {
        let n = self.panes.len() as i64;
        if pane <= self.head - n {
            return Placement::Late;
        }
        if pane > self.head {
            let clear = (pane - self.head).min(n);
            for k in 0..clear {
                let s = self.slot(pane - k);
                self.panes[s] = None;
            }
            self.head = pane;
            self.closed = None;
        } else if pane < self.head {
            self.closed = None;
        }
        let s = self.slot(pane);
        let sketch = self.panes[s].get_or_insert_with(new_sketch);
        sketch.update(value);
        Placement::InWindow
    }

    /// Estimated distinct values over the window.
    pub fn estimate(&mut self) -> f64 {
        if self.closed.is_none() {
            let head = self.slot(self.head);
            let mut union = new_union();
            for (i, p) in self.panes.iter().enumerate() {
                if i != head
                    && let Some(p) = p
                {
                    union.update(p);
                }
            }
            self.closed = Some(union.to_sketch(HllType::Hll8));
        }
        let mut union = new_union();
        if let Some(c) = &self.closed {
            union.update(c);
        }
        if let Some(current) = &self.panes[self.slot(self.head)] {
            union.update(current);
        }
        union.estimate()
    }

    /// Bytes the sketches hold (estimated).
    pub fn heap_bytes(&self) -> usize {
        self.panes
            .iter()
            .chain(std::iter::once(&self.closed))
            .flatten()
            .map(HllSketch::estimated_size)
            .sum::<usize>()
            + self.panes.len() * std::mem::size_of::<Option<HllSketch>>()
    }

    /// The snapshot form: head and each pane's serialized sketch.
    pub fn to_state(&self) -> DistinctState {
        DistinctState {
            head: self.head,
            panes: self
                .panes
                .iter()
                .map(|p| p.as_ref().map(HllSketch::serialize))
                .collect(),
        }
    }

    /// Reads a snapshot back.
    pub fn from_state(state: DistinctState, panes: usize) -> Result<Self, String> {
        if state.panes.len() != panes {
            return Err(format!(
                "distinct ring has {} panes, settings say {panes}",
                state.panes.len()
            ));
        }
        let panes = state
            .panes
            .into_iter()
            .map(|p| {
                p.map(|b| HllSketch::deserialize(&b).map_err(|e| e.to_string()))
                    .transpose()
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(DistinctRing {
            head: state.head,
            panes,
            closed: None,
        })
    }
}

/// [`DistinctRing`] as stored in snapshots.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DistinctState {
    head: i64,
    panes: Vec<Option<Vec<u8>>>,
}

fn new_sketch() -> HllSketch {
    match HllSketch::new(LG_K, HllType::Hll8) {
        Ok(s) => s,
        Err(_) => unreachable!("lg_k {LG_K} is within the sketch's range"),
    }
}

fn new_union() -> HllUnion {
    match HllUnion::new(LG_K) {
        Ok(u) => u,
        Err(_) => unreachable!("lg_k {LG_K} is within the union's range"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_slides_one_pane_at_a_time() {
        let mut r = Ring::new(4, 1, 0);
        for pane in 0..4 {
            assert_eq!(r.add(pane, 0, 1), Placement::InWindow);
        }
        assert_eq!(r.sum(0), 4);
        r.add(4, 0, 10);
        assert_eq!(r.sum(0), 13, "pane 0 left the window");
        assert_eq!(r.add(0, 0, 5), Placement::Late, "pane 0 left the window");
        assert_eq!(r.add(1, 0, 5), Placement::InWindow, "pane 1 is still in it");
        assert_eq!(r.sum(0), 18);
        r.add(100, 0, 1);
        assert_eq!(r.sum(0), 1, "a long gap clears every pane");
    }

    #[test]
    fn roll_reports_closed_panes_and_gaps() {
        let mut r = Ring::new(3, 2, 0);
        r.add(0, 0, 7);
        r.add(0, 1, 9);
        let mut closed = Vec::new();
        r.roll(3, 10, |v| closed.push(v.to_vec()));
        assert_eq!(closed, vec![vec![7, 9], vec![0, 0], vec![0, 0]]);
    }

    #[test]
    fn ewma_follows_a_constant_and_a_shift() {
        let mut e = Ewma::default();
        for _ in 0..100 {
            e.push(10.0, 0.1);
        }
        assert!((e.mean - 10.0).abs() < 1e-9 && e.std() < 1e-9);
        for _ in 0..100 {
            e.push(20.0, 0.1);
        }
        assert!((e.mean - 20.0).abs() < 0.01, "{}", e.mean);
    }

    #[test]
    fn distinct_ring_counts_the_window_only() {
        let mut d = DistinctRing::new(3, 0);
        for i in 0..50 {
            d.add(0, &format!("/etc/file{i}"));
        }
        for i in 0..50 {
            d.add(1, &format!("/etc/file{i}"));
        }
        assert!((d.estimate() - 50.0).abs() < 2.0, "{}", d.estimate());
        d.add(2, "/new");
        assert!((d.estimate() - 51.0).abs() < 2.0);
        d.add(4, "/x");
        assert!(d.estimate() < 3.0, "panes 0 and 1 left: {}", d.estimate());
        let restored = DistinctRing::from_state(d.to_state(), 3);
        assert!(restored.is_ok());
        if let Ok(mut r) = restored {
            assert_eq!(r.estimate(), d.estimate());
        }
    }
}
