//! The detector's checkpoint: windows, threshold keys, tool profiles and the heavy
//! hitters' sketch as versioned JSON, and their restoration, which refuses state made
//! under another window shape.

use super::*;

#[derive(Serialize, Deserialize)]
struct State {
    version: u32,
    watermark: i64,
    late: u64,
    evicted: u64,
    tool_seq: u64,
    scopes: BTreeMap<Scope, BTreeMap<String, ScopeKey>>,
    thresholds: BTreeMap<String, BTreeMap<String, ThresholdKeyState>>,
    tools: BTreeMap<String, ToolProfile>,
    heavy: Option<HeavyState>,
}

#[derive(Serialize, Deserialize)]
struct ThresholdKeyState {
    last_seen: i64,
    sum: Option<Ring>,
    distinct: Option<DistinctState>,
}

#[derive(Serialize, Deserialize)]
struct HeavyState {
    interval: i64,
    sketch: Vec<u8>,
    last: BTreeMap<String, [String; 4]>,
}

const STATE_VERSION: u32 = 1;

fn decode_error(message: impl Into<String>) -> StateError {
    StateError::Decode {
        what: NAME.into(),
        message: message.into(),
    }
}

impl VolumeDetector {
    /// The detector's state as JSON, for a checkpoint.
    pub(super) fn encode_state(&self) -> Result<Vec<u8>, StateError> {
        let state = State {
            version: STATE_VERSION,
            watermark: self.watermark,
            late: self.late,
            evicted: self.evicted,
            tool_seq: self.tool_seq,
            scopes: self
                .scopes
                .iter()
                .map(|(s, m)| {
                    (
                        *s,
                        m.iter().map(|(k, v)| (k.to_string(), v.clone())).collect(),
                    )
                })
                .collect(),
            thresholds: self
                .thresholds
                .iter()
                .map(|t| {
                    let keys = t
                        .keys
                        .iter()
                        .map(|(k, v)| {
                            let (sum, distinct) = match &v.counter {
                                Counter::Sum(r) => (Some(r.clone()), None),
                                Counter::Distinct(d) => (None, Some(d.to_state())),
                            };
                            (
                                k.to_string(),
                                ThresholdKeyState {
                                    last_seen: v.last_seen,
                                    sum,
                                    distinct,
                                },
                            )
                        })
                        .collect();
                    (t.config.name.clone(), keys)
                })
                .collect(),
            tools: self
                .tools
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
            heavy: self.heavy.as_ref().map(|h| HeavyState {
                interval: h.interval,
                sketch: h.sketch.serialize(),
                last: h.last.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            }),
        };
        serde_json::to_vec(&state).map_err(|e| StateError::Encode {
            what: NAME.into(),
            message: e.to_string(),
        })
    }

    /// Replaces the state with a checkpoint's, refusing one made with another shape
    /// (version, pane count, threshold kinds).
    pub(super) fn decode_state(&mut self, snapshot: &[u8]) -> Result<(), StateError> {
        let state: State =
            serde_json::from_slice(snapshot).map_err(|e| decode_error(e.to_string()))?;
        if state.version != STATE_VERSION {
            return Err(decode_error(format!(
                "snapshot version {} is not {STATE_VERSION}",
                state.version
            )));
        }
        let width_ok = |r: &Ring, w: usize| r.heap_bytes() == self.s.panes * w * 8;
        for (scope, map) in &mut self.scopes {
            map.clear();
            for (k, v) in state.scopes.get(scope).into_iter().flatten() {
                if !width_ok(&v.ring, 3) {
                    return Err(decode_error("a window has a different pane count"));
                }
                map.insert(k.as_str().into(), v.clone());
            }
        }
        for t in &mut self.thresholds {
            t.keys.clear();
            for (k, v) in state.thresholds.get(&t.config.name).into_iter().flatten() {
                let counter = match (&v.sum, &v.distinct, t.config.metric) {
                    (Some(r), None, m) if m != Metric::Distinct && width_ok(r, 1) => {
                        Counter::Sum(r.clone())
                    }
                    (None, Some(d), Metric::Distinct) => Counter::Distinct(
                        DistinctRing::from_state(d.clone(), self.s.panes).map_err(decode_error)?,
                    ),
                    _ => {
                        return Err(decode_error(format!(
                            "threshold {:?} has state of another kind or pane count",
                            t.config.name
                        )));
                    }
                };
                t.keys.insert(
                    k.as_str().into(),
                    ThresholdKey {
                        last_seen: v.last_seen,
                        counter,
                    },
                );
            }
        }
        self.tools = state
            .tools
            .into_iter()
            .map(|(k, v)| (k.into_boxed_str(), v))
            .collect();
        if let (Some(h), Some(hs)) = (&mut self.heavy, state.heavy) {
            h.interval = hs.interval;
            h.sketch = FrequentItemsSketch::deserialize(&hs.sketch)
                .map_err(|e| decode_error(format!("heavy hitters: {e}")))?;
            h.last = hs.last.into_iter().collect();
        }
        self.watermark = state.watermark;
        self.next_sweep = i64::MIN;
        self.late = state.late;
        self.evicted = state.evicted;
        self.tool_seq = state.tool_seq;
        Ok(())
    }
}
