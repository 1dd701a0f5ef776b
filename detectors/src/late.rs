//! Sessions whose events arrive already idle by the watermark (a late replay). No
//! `advance` will reach them, so they are held up to a cap and, past it, the older half
//! is handed back to be scored: a late replay is in order within itself, so its older
//! sessions are the finished ones. Shared by the learned sequence model and the
//! `session` detector.

use std::collections::HashSet;

/// Most late sessions held at once.
pub(crate) const MAX_LATE_SESSIONS: usize = 1024;

/// The keys of the late sessions held.
#[derive(Debug, Default)]
pub(crate) struct LateSessions {
    keys: HashSet<String>,
}

impl LateSessions {
    /// Notes `key` as late; true when there are now too many and
    /// [`LateSessions::take_oldest_half`] should be called.
    pub(crate) fn note(&mut self, key: String) -> bool {
        self.keys.insert(key);
        self.keys.len() > MAX_LATE_SESSIONS
    }

    /// The older half of the held keys, by `last` (their newest event time), oldest
    /// first; the rest stay held. Keys `last` no longer knows are dropped.
    pub(crate) fn take_oldest_half(&mut self, last: impl Fn(&str) -> Option<i64>) -> Vec<String> {
        let mut late: Vec<(i64, String)> = self
            .keys
            .drain()
            .filter_map(|k| last(&k).map(|t| (t, k)))
            .collect();
        late.sort();
        let keep = late.split_off(late.len() / 2);
        self.keys = keep.into_iter().map(|(_, k)| k).collect();
        late.into_iter().map(|(_, k)| k).collect()
    }

    /// Forgets every key (an `advance` has scored what was idle).
    pub(crate) fn clear(&mut self) {
        self.keys.clear();
    }
}
