//! Every gauge a detector reports about its own state, named in one place. The engine
//! exports them (Prometheus, OpenTelemetry); `toolgate analyze` prints them at the end.

/// A gauge of detector state: what it is named when exported and what it means.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum StateGauge {
    /// Agents with data in the provenance index.
    ProvenanceAgents,
    /// Results and messages in the provenance index.
    ProvenanceEntries,
    /// Chunk sketches in the provenance index.
    ProvenanceChunks,
    /// Atom postings in the provenance index.
    ProvenanceAtoms,
    /// Bytes of normal form in the provenance index.
    ProvenanceBytes,
    /// Provenance entries dropped for age, since start.
    ProvenanceEvictedExpired,
    /// Provenance entries dropped by the per-agent caps, since start.
    ProvenanceEvictedAgentCap,
    /// Provenance entries dropped by the fleet-wide cap, since start.
    ProvenanceEvictedGlobalCap,
    /// Calls waiting for their result to pass on derived labels.
    ProvenancePendingCalls,
    /// Keys (agent, session, server, tool, per threshold) with a volume window.
    VolumeKeys,
    /// Bytes of volume windows and sketches (estimated).
    VolumeBytes,
    /// (Server, tool) pairs with argument-size profiles.
    VolumeTools,
    /// Events older than their key's window, not counted, since start.
    VolumeLateEvents,
    /// Volume keys dropped by `max_keys`, since start.
    VolumeEvictedKeys,
    /// (Rule, group) states of sequence rules.
    SequenceGroups,
    /// Sequence matches waiting for `not_followed_by` to time out.
    SequencePending,
    /// Sequence groups dropped by `max_groups`, since start.
    SequenceEvictedGroups,
    /// Events older than the watermark when they reached the sequence detector.
    SequenceLateEvents,
    /// Roles with a learned call model.
    SequenceRoles,
    /// Live sessions followed by the learned model.
    SequenceLiveSessions,
    /// Tokens, transitions and terms over all role models.
    SequenceModelEntries,
    /// Live sessions waiting to be scored against the session clusters.
    SessionLive,
}

impl StateGauge {
    /// The exported name.
    pub fn name(self) -> &'static str {
        match self {
            StateGauge::ProvenanceAgents => "toolgate_provenance_index_agents",
            StateGauge::ProvenanceEntries => "toolgate_provenance_index_entries",
            StateGauge::ProvenanceChunks => "toolgate_provenance_index_chunks",
            StateGauge::ProvenanceAtoms => "toolgate_provenance_index_atoms",
            StateGauge::ProvenanceBytes => "toolgate_provenance_index_bytes",
            StateGauge::ProvenanceEvictedExpired => "toolgate_provenance_evicted_expired_total",
            StateGauge::ProvenanceEvictedAgentCap => "toolgate_provenance_evicted_agent_cap_total",
            StateGauge::ProvenanceEvictedGlobalCap => {
                "toolgate_provenance_evicted_global_cap_total"
            }
            StateGauge::ProvenancePendingCalls => "toolgate_provenance_pending_calls",
            StateGauge::VolumeKeys => "toolgate_volume_keys",
            StateGauge::VolumeBytes => "toolgate_volume_state_bytes",
            StateGauge::VolumeTools => "toolgate_volume_tool_profiles",
            StateGauge::VolumeLateEvents => "toolgate_volume_late_events_total",
            StateGauge::VolumeEvictedKeys => "toolgate_volume_evicted_keys_total",
            StateGauge::SequenceGroups => "toolgate_sequence_groups",
            StateGauge::SequencePending => "toolgate_sequence_pending_matches",
            StateGauge::SequenceEvictedGroups => "toolgate_sequence_evicted_groups_total",
            StateGauge::SequenceLateEvents => "toolgate_sequence_late_events_total",
            StateGauge::SequenceRoles => "toolgate_sequence_roles",
            StateGauge::SequenceLiveSessions => "toolgate_sequence_live_sessions",
            StateGauge::SequenceModelEntries => "toolgate_sequence_model_entries",
            StateGauge::SessionLive => "toolgate_session_live_sessions",
        }
    }
}
