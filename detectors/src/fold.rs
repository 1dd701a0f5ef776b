//! Folding repeats: occurrences with the same detector, rule, group key and fold window
//! become one finding with `count`, `first_seen` and `last_seen`, never silently dropped.

use std::collections::{BTreeSet, HashMap};

use serde::{Deserialize, Serialize};
use toolgate_protocol::finding::FindingSchema;
use toolgate_protocol::{Duration, Finding, FindingAction, FindingOutcome, Timestamp};

use crate::draft::{FindingDraft, finding_id};
use crate::outcome::{CallRef, awaits_settlement};

/// When a folded finding is emitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EmitPolicy {
    /// On its first occurrence (alerts must not wait), and again with the final
    /// count when its window closes if repeats were folded in since. Consumers keep the
    /// latest record per `finding_id`. For live streams.
    FirstAndFinal,
    /// Once, when its window closes, with the final count. For offline replay, where
    /// one record per id is wanted and latency does not matter.
    FinalOnly,
}

/// Counters for metrics and summaries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FoldStats {
    /// Drafts received.
    pub drafts: u64,
    /// Drafts folded into an already open finding.
    pub folded: u64,
    /// Findings closed before their window ended because `max_open` was reached.
    pub closed_early: u64,
    /// Drafts whose window had already closed; emitted on their own, same id.
    pub late: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct OpenFinding {
    finding: Finding,
    window_end: Timestamp,
    emitted_count: u64,
    /// The call of the latest occurrence, whose outcome the finding carries (the
    /// finding's own `call_id` is the first occurrence's).
    #[serde(default)]
    latest_call: Option<String>,
}

/// Holds open findings until their fold window closes.
#[derive(Debug)]
pub struct FindingFolder {
    window: Duration,
    max_open: usize,
    max_event_ids: usize,
    policy: EmitPolicy,
    open: HashMap<String, OpenFinding>,
    closing_order: BTreeSet<(Timestamp, String)>,
    watermark: Timestamp,
    stats: FoldStats,
}

/// The folder's state in a snapshot.
#[derive(Serialize, Deserialize)]
pub(crate) struct FolderState {
    open: Vec<OpenFinding>,
    watermark: Timestamp,
    stats: FoldStats,
}

impl FindingFolder {
    /// A folder with the given window, caps and emission policy.
    pub fn new(
        window: Duration,
        max_open: usize,
        max_event_ids: usize,
        policy: EmitPolicy,
    ) -> Self {
        FindingFolder {
            window: if window == Duration::ZERO {
                Duration::from_nanos(1)
            } else {
                window
            },
            max_open: max_open.max(1),
            max_event_ids: max_event_ids.max(1),
            policy,
            open: HashMap::new(),
            closing_order: BTreeSet::new(),
            watermark: Timestamp::from_unix_nanos(i64::MIN),
            stats: FoldStats::default(),
        }
    }

    /// Counters so far.
    pub fn stats(&self) -> FoldStats {
        self.stats
    }

    /// Findings currently open.
    pub fn open_count(&self) -> usize {
        self.open.len()
    }

    /// Adds one occurrence, with what was done about it: a folded finding carries its
    /// latest occurrence's outcome.
    pub fn add(&mut self, draft: FindingDraft, outcome: FindingOutcome, out: &mut Vec<Finding>) {
        self.stats.drafts += 1;
        let window_start = draft.time.floor_to(self.window);
        let window_end = window_start.saturating_add(self.window);
        let id = finding_id(
            draft.detector,
            &draft.rule_id,
            &draft.group_key,
            window_start,
        );
        if let Some(open) = self.open.get_mut(&id) {
            self.stats.folded += 1;
            open.latest_call.clone_from(&draft.call_id);
            merge(&mut open.finding, draft, self.max_event_ids);
            open.finding.outcome = Some(outcome);
            // A repeat that blocks a held call is emitted at once, naming that call: the
            // engine answers a held call from the findings its event made, and a folded
            // repeat would otherwise let the second exfiltration through.
            if outcome == FindingOutcome::HeldRefused && self.policy == EmitPolicy::FirstAndFinal {
                let mut again = open.finding.clone();
                again.call_id.clone_from(&open.latest_call);
                out.push(again);
                open.emitted_count = open.finding.count;
            }
            return;
        }
        let latest_call = draft.call_id.clone();
        let mut finding = new_finding(id.clone(), draft);
        finding.outcome = Some(outcome);
        finding.event_ids.truncate(self.max_event_ids);
        if window_end <= self.watermark {
            self.stats.late += 1;
            out.push(finding);
            return;
        }
        let emitted_count = if self.policy == EmitPolicy::FirstAndFinal {
            out.push(finding.clone());
            1
        } else {
            0
        };
        self.closing_order.insert((window_end, id.clone()));
        self.open.insert(
            id,
            OpenFinding {
                finding,
                window_end,
                emitted_count,
                latest_call,
            },
        );
        while self.open.len() > self.max_open {
            let Some((_, oldest)) = self.closing_order.pop_first() else {
                break;
            };
            self.stats.closed_early += 1;
            self.close(&oldest, out);
        }
    }

    /// A sink settled held call `call` otherwise than its findings expected (the
    /// verdict came after the hold's deadline, say): the open findings about it take
    /// the real outcome, and one already emitted is emitted again with it (same id). A
    /// finding whose window closed before the settlement keeps the expected outcome.
    pub(crate) fn settle(
        &mut self,
        call: &CallRef<'_>,
        really: FindingOutcome,
        time: Timestamp,
        out: &mut Vec<Finding>,
    ) {
        let start = out.len();
        for open in self.open.values_mut() {
            let f = &mut open.finding;
            if open.latest_call.as_deref() != Some(call.call_id)
                || f.server.as_deref() != Some(call.server)
                || f.agent_id != call.agent_id
                || f.session_id != call.session_id
                || !awaits_settlement(f.outcome)
                || f.outcome == Some(really)
            {
                continue;
            }
            f.outcome = Some(really);
            if open.emitted_count > 0 {
                let mut again = f.clone();
                again.time = again.time.max(time);
                out.push(again);
                open.emitted_count = f.count;
            }
        }
        // The open findings are a hash map: their order is not event time's.
        out[start..].sort_by(|a, b| a.finding_id.cmp(&b.finding_id));
    }

    /// Event time reached `watermark`: emits every finding whose window has ended.
    pub fn advance(&mut self, watermark: Timestamp, out: &mut Vec<Finding>) {
        if watermark <= self.watermark {
            return;
        }
        self.watermark = watermark;
        while let Some((end, _)) = self.closing_order.first() {
            if *end > watermark {
                break;
            }
            if let Some((_, id)) = self.closing_order.pop_first() {
                self.close(&id, out);
            }
        }
    }

    /// Emits every open finding, as at the end of input.
    pub fn flush(&mut self, out: &mut Vec<Finding>) {
        while let Some((_, id)) = self.closing_order.pop_first() {
            self.close(&id, out);
        }
    }

    fn close(&mut self, id: &str, out: &mut Vec<Finding>) {
        if let Some(open) = self.open.remove(id)
            && open.finding.count > open.emitted_count
        {
            out.push(open.finding);
        }
    }

    pub(crate) fn state(&self) -> FolderState {
        let mut open: Vec<OpenFinding> = self.open.values().cloned().collect();
        open.sort_by(|a, b| a.finding.finding_id.cmp(&b.finding.finding_id));
        FolderState {
            open,
            watermark: self.watermark,
            stats: self.stats,
        }
    }

    pub(crate) fn set_state(&mut self, state: FolderState) {
        self.open.clear();
        self.closing_order.clear();
        for o in state.open {
            self.closing_order
                .insert((o.window_end, o.finding.finding_id.clone()));
            self.open.insert(o.finding.finding_id.clone(), o);
        }
        self.watermark = state.watermark;
        self.stats = state.stats;
    }
}

fn new_finding(finding_id: String, d: FindingDraft) -> Finding {
    Finding {
        schema: FindingSchema::V1,
        finding_id,
        time: d.time,
        first_seen: d.time,
        last_seen: d.time,
        count: 1,
        detector: d.detector,
        rule_id: d.rule_id,
        title: d.title,
        description: d.description,
        severity: d.severity,
        risk_score: d.risk_score,
        confidence: d.confidence,
        agent_id: d.agent_id,
        session_id: d.session_id,
        server: d.server,
        tool: d.tool,
        call_id: d.call_id,
        event_ids: d.event_ids,
        evidence: d.evidence,
        tags: d.tags,
        action: d.action,
        outcome: None,
    }
}

/// Folds one more occurrence in. The first occurrence's text and evidence stay; the
/// rating is the worst seen; evidence ids accumulate up to the cap.
fn merge(f: &mut Finding, d: FindingDraft, max_event_ids: usize) {
    f.count += 1;
    f.first_seen = f.first_seen.min(d.time);
    f.last_seen = f.last_seen.max(d.time);
    f.time = f.last_seen;
    f.severity = f.severity.max(d.severity);
    f.risk_score = f.risk_score.max(d.risk_score);
    f.confidence = f.confidence.max(d.confidence);
    if d.action == FindingAction::Block {
        f.action = FindingAction::Block;
    }
    for id in d.event_ids {
        if f.event_ids.len() >= max_event_ids {
            break;
        }
        if !f.event_ids.contains(&id) {
            f.event_ids.push(id);
        }
    }
    for tag in d.tags {
        if !f.tags.contains(&tag) {
            f.tags.push(tag);
        }
    }
}
