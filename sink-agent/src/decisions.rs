//! The engine's signed decisions as the sink keeps them: verified against the
//! configured keys, for this agent only, until they expire. Pure: bytes and the time go
//! in, a verdict comes out; where the bytes come from (Kafka, the library API) is the
//! edge's business.
//!
//! Matching follows DESIGN.md: every qualifier a decision names (session, server, tool,
//! call) must match the call, and among the decisions that match, the most specific
//! wins; between equally specific ones, the latest.

use toolgate_protocol::Timestamp;
use toolgate_protocol::decision::{Decision, DecisionVerifier, SignatureError};

/// Why a decision was not applied. Each is logged by the edge and otherwise ignored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Rejected {
    /// Not a `toolgate.decision.v1` object.
    #[error("not a decision: {0}")]
    Malformed(String),
    /// Unknown key or a signature that does not verify.
    #[error("{0}")]
    Unverified(#[from] SignatureError),
    /// For another agent (the topic is keyed by agent, but partitions hold many).
    #[error("decision {decision_id:?} is for agent {agent_id:?}, not this one")]
    OtherAgent {
        /// The decision.
        decision_id: String,
        /// Its agent.
        agent_id: String,
    },
    /// Already expired when it arrived.
    #[error("decision {0:?} has expired")]
    Expired(String),
}

/// The decisions in force for one agent.
pub struct Decisions {
    agent_id: String,
    verifier: DecisionVerifier,
    held: Vec<Decision>,
    max: usize,
}

impl Decisions {
    /// Decisions for `agent_id` that verify against `verifier`; at most `max` are kept
    /// (the oldest go first).
    pub fn new(agent_id: String, verifier: DecisionVerifier, max: usize) -> Self {
        Decisions {
            agent_id,
            verifier,
            held: Vec::new(),
            max: max.max(1),
        }
    }

    /// Verifies and keeps one decision as received (its JSON bytes).
    pub fn admit(&mut self, bytes: &[u8], now: Timestamp) -> Result<&Decision, Rejected> {
        let decision: Decision =
            serde_json::from_slice(bytes).map_err(|e| Rejected::Malformed(e.to_string()))?;
        self.verifier.verify(&decision)?;
        if decision.scope.agent_id != self.agent_id {
            return Err(Rejected::OtherAgent {
                decision_id: decision.decision_id,
                agent_id: decision.scope.agent_id,
            });
        }
        if decision.is_expired(now) {
            return Err(Rejected::Expired(decision.decision_id));
        }
        self.held
            .retain(|d| d.decision_id != decision.decision_id && !d.is_expired(now));
        if self.held.len() >= self.max {
            self.held.remove(0);
        }
        self.held.push(decision);
        Ok(&self.held[self.held.len() - 1])
    }

    /// The decision that applies to a call, if any; `names` says whether the call's
    /// arguments name a destination (for decisions scoped to one).
    pub fn lookup(
        &self,
        session_id: &str,
        server: &str,
        tool: &str,
        call_id: Option<&str>,
        names: &dyn Fn(&str) -> bool,
        now: Timestamp,
    ) -> Option<&Decision> {
        let matches = |want: &Option<String>, have: Option<&str>| {
            want.as_deref().is_none_or(|w| Some(w) == have)
        };
        self.held
            .iter()
            .filter(|d| !d.is_expired(now))
            .filter(|d| {
                matches(&d.scope.session_id, Some(session_id))
                    && matches(&d.scope.server, Some(server))
                    && matches(&d.scope.tool, Some(tool))
                    && matches(&d.scope.call_id, call_id)
                    && d.scope.destination.as_deref().is_none_or(names)
            })
            .max_by_key(|d| (d.scope.specificity(), d.time))
    }

    /// The engine's verdict on one held call: a decision naming that `call_id` (and
    /// matching the rest of the call) whose id is `verdict-<event_id>` of the call's
    /// event, the latest if several. The event id is this sink's own: sinks of one
    /// agent run share its session, and their JSON-RPC ids (the `call_id`) collide, so
    /// the call id alone could let one sink's verdict release another's call.
    pub fn verdict_for_call(
        &self,
        session_id: &str,
        server: &str,
        tool: &str,
        (call_id, event_id): (&str, &str),
        now: Timestamp,
    ) -> Option<&Decision> {
        let matches = |want: &Option<String>, have: &str| want.as_deref().is_none_or(|w| w == have);
        self.held
            .iter()
            .filter(|d| !d.is_expired(now))
            .filter(|d| {
                d.scope.call_id.as_deref() == Some(call_id)
                    && d.decision_id.strip_prefix("verdict-") == Some(event_id)
                    && matches(&d.scope.session_id, session_id)
                    && matches(&d.scope.server, server)
                    && matches(&d.scope.tool, tool)
            })
            .max_by_key(|d| d.time)
    }

    /// Forgets verdicts on `call_id`: a new call that reuses a JSON-RPC id must not
    /// inherit the verdict on an earlier one.
    pub fn forget_call(&mut self, call_id: &str) {
        self.held
            .retain(|d| d.scope.call_id.as_deref() != Some(call_id));
    }

    /// None kept (expired ones are dropped as new ones arrive).
    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use toolgate_protocol::decision::{DecisionAction, DecisionSchema, DecisionSigner, Scope};

    fn t(s: i64) -> Timestamp {
        Timestamp::from_unix_nanos(s * 1_000_000_000)
    }

    fn decision(id: &str, action: DecisionAction, scope: Scope, expires: Option<i64>) -> Decision {
        Decision {
            schema: DecisionSchema::V1,
            decision_id: id.into(),
            time: t(100),
            expires_at: expires.map(t),
            action,
            scope,
            reason: format!("reason {id}"),
            finding_ids: vec![],
            key_id: String::new(),
            signature: String::new(),
        }
    }

    fn scope(tool: Option<&str>, call: Option<&str>) -> Scope {
        Scope {
            agent_id: "a1".into(),
            session_id: None,
            server: Some("mail".into()),
            tool: tool.map(str::to_string),
            call_id: call.map(str::to_string),
            destination: None,
        }
    }

    fn setup() -> (DecisionSigner, Decisions) {
        let signer = DecisionSigner::from_seed("engine-1", [7; 32]);
        let mut verifier = DecisionVerifier::default();
        verifier
            .add_key("engine-1", &signer.public_key_base64())
            .expect("key");
        (signer, Decisions::new("a1".into(), verifier, 100))
    }

    fn signed(signer: &DecisionSigner, mut d: Decision) -> Vec<u8> {
        signer.sign(&mut d);
        serde_json::to_vec(&d).expect("json")
    }

    #[test]
    fn the_most_specific_decision_wins_until_it_expires() {
        let (signer, mut decisions) = setup();
        let server_wide = decision("d1", DecisionAction::Block, scope(None, None), None);
        let one_call = decision(
            "d2",
            DecisionAction::Allow,
            scope(Some("send"), Some("c7")),
            Some(200),
        );
        decisions
            .admit(&signed(&signer, server_wide), t(100))
            .expect("d1");
        decisions
            .admit(&signed(&signer, one_call), t(100))
            .expect("d2");

        let pick = |call: Option<&str>, now| {
            decisions
                .lookup("s1", "mail", "send", call, &|_| false, t(now))
                .map(|d| d.decision_id.clone())
        };
        assert_eq!(pick(Some("c7"), 150).as_deref(), Some("d2"));
        assert_eq!(pick(Some("c8"), 150).as_deref(), Some("d1"));
        assert_eq!(pick(Some("c7"), 200).as_deref(), Some("d1"), "d2 expired");
        assert!(
            decisions
                .lookup("s1", "files", "send", None, &|_| false, t(150))
                .is_none()
        );
    }

    #[test]
    fn issue_22_a_block_scoped_to_a_destination_leaves_the_tools_other_calls_alone() {
        let (signer, mut decisions) = setup();
        let mut to_attacker = scope(Some("send"), None);
        to_attacker.destination = Some("attacker@evil.example.com".into());
        let block = decision("d1", DecisionAction::Block, to_attacker, None);
        decisions
            .admit(&signed(&signer, block), t(100))
            .expect("d1");
        let pick = |to: &str| {
            let names = |d: &str| d == to;
            decisions
                .lookup("s1", "mail", "send", None, &names, t(150))
                .map(|d| d.decision_id.clone())
        };
        assert_eq!(pick("attacker@evil.example.com").as_deref(), Some("d1"));
        assert_eq!(pick("boss@corp.com"), None, "lunch at noon? goes out");
    }

    #[test]
    fn forged_foreign_and_expired_decisions_are_refused() {
        let (signer, mut decisions) = setup();
        let mut forged = decision("d1", DecisionAction::Block, scope(None, None), None);
        signer.sign(&mut forged);
        forged.reason = "changed after signing".into();
        let err = decisions
            .admit(&serde_json::to_vec(&forged).unwrap(), t(100))
            .unwrap_err();
        assert!(matches!(err, Rejected::Unverified(_)), "{err}");

        let other = DecisionSigner::from_seed("engine-1", [8; 32]);
        let err = decisions
            .admit(
                &signed(
                    &other,
                    decision("d2", DecisionAction::Block, scope(None, None), None),
                ),
                t(100),
            )
            .unwrap_err();
        assert!(matches!(err, Rejected::Unverified(_)), "{err}");

        let mut foreign = scope(None, None);
        foreign.agent_id = "a2".into();
        let err = decisions
            .admit(
                &signed(
                    &signer,
                    decision("d3", DecisionAction::Block, foreign, None),
                ),
                t(100),
            )
            .unwrap_err();
        assert!(matches!(err, Rejected::OtherAgent { .. }), "{err}");

        let err = decisions
            .admit(
                &signed(
                    &signer,
                    decision("d4", DecisionAction::Block, scope(None, None), Some(50)),
                ),
                t(100),
            )
            .unwrap_err();
        assert!(matches!(err, Rejected::Expired(_)), "{err}");

        let err = decisions.admit(b"{\"decision_id\":1}", t(100)).unwrap_err();
        assert!(matches!(err, Rejected::Malformed(_)), "{err}");
        assert!(decisions.is_empty());
    }
}
