//! From findings to signed decisions for the sinks. Pure: the same findings and events
//! give byte-identical decisions (ids, times and Ed25519 signatures are all derived
//! from them), so a replay after a restart repeats decisions instead of inventing new
//! ones.
//!
//! - A finding with `action: block` becomes a `block` decision scoped as narrowly as
//!   the finding is (agent, session, and its server and tool when it names them), in
//!   force for `decision_ttl` after the finding first fired.
//! - A held call (`await_verdict`) gets a verdict scoped to its `call_id`: `block` if
//!   a blocking finding points at the call, `allow` otherwise.
//!
//! Before a block is signed the engine applies [`BlockLimiter`]: at most
//! `[engine] max_blocks_per_agent` blocks per agent within `block_rate_window` of event
//! time, so a flood of findings (forged events included) cannot block an agent's
//! every session and tool. A finding resting on an event whose Kafka record key was
//! not its `agent_id` makes no decision at all ([`ForgedEvidence`], README trust
//! model).

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::Path;

use anyhow::{Context, Result};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use toolgate_detectors::glob::GlobSet;
use toolgate_detectors::provenance::atoms;
use toolgate_edge::fs::Access;
use toolgate_protocol::config::{BlockRule, BlockScope};
use toolgate_protocol::decision::{Decision, DecisionAction, DecisionSigner, Scope};
use toolgate_protocol::event::EventBody;
use toolgate_protocol::{Duration, Event, Finding, FindingAction, Timestamp};

/// Turns findings into decisions and signs them.
pub struct DecisionMaker {
    signer: DecisionSigner,
    ttl: Duration,
    /// `[[engine.blocks]]`, compiled: the first whose rules match a finding applies.
    blocks: Vec<(GlobSet, Option<BlockScope>, Option<Duration>)>,
}

impl DecisionMaker {
    /// Signs with `signer`; block decisions last `ttl`.
    pub fn new(signer: DecisionSigner, ttl: Duration) -> Self {
        DecisionMaker {
            signer,
            ttl,
            blocks: Vec::new(),
        }
    }

    /// Scopes and times blocks per rule (`[[engine.blocks]]`).
    pub fn with_blocks(mut self, rules: &[BlockRule]) -> Self {
        self.blocks = rules
            .iter()
            .map(|r| (GlobSet::new(&r.rules), r.scope, r.ttl))
            .collect();
        self
    }

    /// What the block a blocking finding asks for covers and for how long: `None`
    /// when it makes no standing block (scope `call`, or not a block at all).
    pub fn standing_block(&self, finding: &Finding) -> Option<(Scope, Duration)> {
        if finding.action != FindingAction::Block {
            return None;
        }
        let rule = format!("{}/{}", finding.detector.as_str(), finding.rule_id);
        let (scope, ttl) = self
            .blocks
            .iter()
            .find(|(rules, _, _)| rules.matches(Some(&rule)))
            .map_or((None, None), |(_, scope, ttl)| (*scope, *ttl));
        let mut covers = Scope {
            agent_id: finding.agent_id.clone(),
            session_id: Some(finding.session_id.clone()),
            server: finding.server.clone(),
            tool: finding.tool.clone(),
            call_id: None,
            destination: None,
        };
        match scope {
            None | Some(BlockScope::Destination) => covers.destination = destination_of(finding),
            Some(BlockScope::Tool) => {}
            Some(BlockScope::Call) => return None,
            Some(BlockScope::Server) => covers.tool = None,
            Some(BlockScope::Session) => (covers.server, covers.tool) = (None, None),
            Some(BlockScope::Agent) => {
                (covers.session_id, covers.server, covers.tool) = (None, None, None);
            }
        }
        Some((covers, ttl.unwrap_or(self.ttl)))
    }

    /// The block decision a finding calls for, if it calls for one.
    pub fn for_finding(&self, finding: &Finding) -> Option<Decision> {
        let (scope, ttl) = self.standing_block(finding)?;
        let mut decision = Decision {
            schema: Default::default(),
            decision_id: format!("block-{}", finding.finding_id),
            time: finding.first_seen,
            expires_at: Some(finding.first_seen.saturating_add(ttl)),
            action: DecisionAction::Block,
            scope,
            reason: format!("{} ({})", finding.title, finding.rule_id),
            finding_ids: vec![finding.finding_id.clone()],
            key_id: String::new(),
            signature: String::new(),
        };
        self.signer.sign(&mut decision);
        Some(decision)
    }

    /// The verdict on a held call, given the findings observing it produced and those
    /// its step made `earlier` (events of its agent released with it, whose block
    /// decisions the sink has not seen yet: one whose scope covers the call blocks it,
    /// as that decision would have at the sink); `None` for anything but a held
    /// `tool_call`.
    pub fn verdict(
        &self,
        event: &Event,
        findings: &[Finding],
        earlier: &[Finding],
    ) -> Option<Decision> {
        if !event.await_verdict {
            return None;
        }
        let EventBody::ToolCall {
            server,
            call_id,
            tool,
            arguments,
        } = &event.body
        else {
            return None;
        };
        // An earlier block covers the call as its decision would at the sink.
        let named = std::cell::OnceCell::new();
        let covers = |f: &Finding| {
            self.standing_block(f).is_some_and(|(s, _)| {
                s.agent_id == event.agent_id
                    && s.session_id
                        .as_ref()
                        .is_none_or(|id| id == &event.session_id)
                    && s.server.as_ref().is_none_or(|s| s == server)
                    && s.tool.as_ref().is_none_or(|t| t == tool)
                    && s.destination.as_ref().is_none_or(|d| {
                        atoms::names_destination(
                            named.get_or_init(|| atoms::destinations(arguments)),
                            d,
                        )
                    })
            })
        };
        let blocking: Vec<&Finding> = findings
            .iter()
            .filter(|f| {
                f.action == FindingAction::Block
                    && (f.call_id.as_deref() == Some(call_id.as_str())
                        || f.event_ids.contains(&event.event_id))
            })
            .chain(
                earlier
                    .iter()
                    .filter(|f| f.action == FindingAction::Block && covers(f)),
            )
            .collect();
        let (action, reason) = match blocking.first() {
            Some(f) => (
                DecisionAction::Block,
                format!("{} ({})", f.title, f.rule_id),
            ),
            None => (DecisionAction::Allow, "no blocking finding".to_string()),
        };
        let mut decision = Decision {
            schema: Default::default(),
            decision_id: format!("verdict-{}", event.event_id),
            time: event.time,
            expires_at: Some(event.time.saturating_add(self.ttl)),
            action,
            scope: Scope {
                agent_id: event.agent_id.clone(),
                session_id: Some(event.session_id.clone()),
                server: Some(server.clone()),
                tool: Some(tool.clone()),
                call_id: Some(call_id.clone()),
                destination: None,
            },
            reason,
            finding_ids: blocking.iter().map(|f| f.finding_id.clone()).collect(),
            key_id: String::new(),
            signature: String::new(),
        };
        self.signer.sign(&mut decision);
        Some(decision)
    }

    /// The public key sinks configure under `[sink.decision_keys]`.
    pub fn public_key(&self) -> (&str, String) {
        (self.signer.key_id(), self.signer.public_key_base64())
    }
}

/// The one destination a finding names (`provenance/untrusted_destination`), exactly:
/// a shortened one names nothing precisely, and a finding naming several is scoped to
/// its tool, so that none of them gets through.
fn destination_of(finding: &Finding) -> Option<String> {
    let named = finding.evidence["destinations"].as_array()?;
    let values: std::collections::BTreeSet<&str> =
        named.iter().filter_map(|d| d["value"].as_str()).collect();
    match values.into_iter().collect::<Vec<_>>()[..] {
        [one] if !one.is_empty() && !one.ends_with('…') => Some(one.to_string()),
        _ => None,
    }
}

/// Whether a record's Kafka key is the `agent_id` of the event it carries. Sinks and
/// the OTLP receiver key every event by its agent; an event under another key (or
/// none) claims an agent its producer does not speak for, so it decides nothing.
pub fn key_matches(key: Option<&[u8]>, agent_id: &str) -> bool {
    key == Some(agent_id.as_bytes())
}

/// Forged evidence, per partition: the ids of recent events whose record key was
/// not their `agent_id`. The rule: a finding becomes a decision only if it cites none
/// of them and was not produced while handling one for the agent that event claimed.
/// Its findings still go out as alerts.
#[derive(Debug, Default)]
pub struct ForgedEvidence {
    ids: HashSet<String>,
    order: VecDeque<String>,
}

/// Forged event ids remembered per partition, at most (oldest forgotten first).
const FORGED_IDS: usize = 4096;

impl ForgedEvidence {
    /// Remembers an event that came under a key other than its `agent_id`.
    pub fn note(&mut self, event_id: &str) {
        if self.ids.insert(event_id.to_string()) {
            self.order.push_back(event_id.to_string());
        }
        while self.order.len() > FORGED_IDS {
            if let Some(old) = self.order.pop_front() {
                self.ids.remove(&old);
            }
        }
    }

    /// Whether `finding` may not become a decision: it cites a forged event, or it
    /// concerns `claimed`, the agent a forged event now being handled claims to be
    /// (a detector may not cite the event that tipped it over).
    pub fn taints(&self, finding: &Finding, claimed: Option<&str>) -> bool {
        claimed == Some(finding.agent_id.as_str())
            || (!self.ids.is_empty() && finding.event_ids.iter().any(|id| self.ids.contains(id)))
    }
}

/// What [`BlockLimiter::admit`] says about a block decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Within the limit: sign and send it.
    Signed,
    /// The same decision again (a finding's final emission): send it again, it is
    /// not counted twice.
    Repeat,
    /// Over the limit: not signed. `first` is true once per burst, for one warning.
    Suppressed {
        /// The first suppressed block since the agent was last under the limit.
        first: bool,
    },
}

/// At most `max` block decisions per agent within `window` of their event time
/// (a decision's `time`, its finding's first occurrence), so replaying the same
/// events admits the same blocks.
#[derive(Debug)]
pub struct BlockLimiter {
    max: usize,
    window: Duration,
    agents: HashMap<String, AgentBlocks>,
    /// The newest decision time seen, for forgetting agents with no recent block.
    newest: Option<Timestamp>,
    admitted_since_sweep: usize,
}

#[derive(Debug, Default)]
struct AgentBlocks {
    /// Blocks signed within the window: time and decision id (at most `max`).
    recent: VecDeque<(Timestamp, String)>,
    /// The current burst over the limit was already reported.
    warned: bool,
}

/// Agents are swept for expired entries after this many admissions.
const SWEEP_EVERY: usize = 4096;

impl BlockLimiter {
    /// `max` blocks per agent per `window`.
    pub fn new(max: usize, window: Duration) -> Self {
        BlockLimiter {
            max,
            window,
            agents: HashMap::new(),
            newest: None,
            admitted_since_sweep: 0,
        }
    }

    /// Whether a block decision for `agent` with id `decision_id` at `time` may be
    /// signed; counts it if so.
    pub fn admit(&mut self, agent: &str, decision_id: &str, time: Timestamp) -> Admission {
        self.newest = Some(self.newest.map_or(time, |n| n.max(time)));
        self.admitted_since_sweep += 1;
        if self.admitted_since_sweep >= SWEEP_EVERY {
            self.sweep();
        }
        let since = time.saturating_sub(self.window);
        let blocks = self.agents.entry(agent.to_string()).or_default();
        if blocks.recent.iter().any(|(_, id)| id == decision_id) {
            return Admission::Repeat;
        }
        blocks.recent.retain(|(t, _)| *t > since);
        if blocks.recent.len() < self.max {
            blocks.recent.push_back((time, decision_id.to_string()));
            blocks.warned = false;
            return Admission::Signed;
        }
        let first = !blocks.warned;
        blocks.warned = true;
        Admission::Suppressed { first }
    }

    /// Forgets agents whose blocks all fell out of the window (memory stays bounded
    /// by the agents blocked recently).
    fn sweep(&mut self) {
        self.admitted_since_sweep = 0;
        let Some(newest) = self.newest else {
            return;
        };
        let since = newest.saturating_sub(self.window);
        self.agents
            .retain(|_, b| b.recent.iter().any(|(t, _)| *t > since));
    }
}

/// The engine's signing key: read from `path`, or made and written there (mode 0600)
/// when the file does not exist yet. Engines of one group sharing a data directory may
/// start together: the key is published whole and without replacing one already there,
/// so they all end up with the same key.
pub fn load_or_create_signer(path: &Path, key_id: &str) -> Result<DecisionSigner> {
    if !path.exists() {
        let mut seed = [0u8; 32];
        toolgate_edge::random::fill(&mut seed).context("cannot make a new signing key")?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        toolgate_edge::fs::create_whole(path, B64.encode(seed).as_bytes(), Access::Private)
            .context("cannot create the signing key")?;
    }
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read signing key {}", path.display()))?;
    DecisionSigner::from_seed_base64(key_id, text.trim())
        .with_context(|| format!("signing key {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outputs::tests::sample;
    use toolgate_protocol::DetectorKind;
    use toolgate_protocol::decision::DecisionVerifier;

    fn maker() -> DecisionMaker {
        DecisionMaker::new(
            DecisionSigner::from_seed("k1", [7; 32]),
            Duration::from_secs(60),
        )
    }

    fn verifier(m: &DecisionMaker) -> DecisionVerifier {
        let mut v = DecisionVerifier::default();
        let (id, key) = m.public_key();
        v.add_key(id, &key).unwrap();
        v
    }

    #[test]
    fn a_blocking_finding_becomes_a_signed_block_scoped_like_the_finding() {
        let m = maker();
        assert!(m.for_finding(&sample(FindingAction::Alert)).is_none());
        let f = sample(FindingAction::Block);
        let d = m.for_finding(&f).unwrap();
        verifier(&m).verify(&d).unwrap();
        assert_eq!(d.action, DecisionAction::Block);
        assert_eq!(d.scope.session_id.as_deref(), Some("sess-1"));
        assert_eq!(d.scope.tool.as_deref(), Some("post"));
        assert_eq!(d.finding_ids, std::slice::from_ref(&f.finding_id));
        assert_eq!(
            d.expires_at,
            Some(f.first_seen.saturating_add(Duration::from_secs(60)))
        );
        assert_eq!(
            m.for_finding(&f),
            Some(d),
            "the same finding, the same bytes"
        );
    }

    #[test]
    fn issue_19_past_the_limit_an_agents_blocks_are_suppressed_within_the_window_only() {
        let t0 = Timestamp::parse("2025-03-01T10:00:00Z").unwrap();
        let at = |secs: i64| t0.saturating_add(Duration::from_secs(secs));
        let mut limiter = BlockLimiter::new(2, Duration::from_secs(60));
        assert_eq!(limiter.admit("a", "b1", at(0)), Admission::Signed);
        assert_eq!(limiter.admit("a", "b2", at(10)), Admission::Signed);
        assert_eq!(
            limiter.admit("a", "b1", at(0)),
            Admission::Repeat,
            "a finding's final emission is the same decision, not a new block"
        );
        assert_eq!(
            limiter.admit("a", "b3", at(20)),
            Admission::Suppressed { first: true }
        );
        assert_eq!(
            limiter.admit("a", "b4", at(30)),
            Admission::Suppressed { first: false },
            "one warning per burst, not one per suppressed block"
        );
        assert_eq!(
            limiter.admit("b", "c1", at(30)),
            Admission::Signed,
            "another agent has its own budget"
        );
        // b1 fell out of the window: one more block fits, and a new burst warns again.
        assert_eq!(limiter.admit("a", "b5", at(61)), Admission::Signed);
        assert_eq!(
            limiter.admit("a", "b6", at(62)),
            Admission::Suppressed { first: true }
        );
    }

    #[test]
    fn issue_19_a_finding_citing_or_caused_by_a_wrongly_keyed_event_is_tainted() {
        assert!(key_matches(Some(b"agent-7"), "agent-7"));
        assert!(!key_matches(Some(b"agent-8"), "agent-7"));
        assert!(!key_matches(None, "agent-7"));
        let f = sample(FindingAction::Block);
        let mut forged = ForgedEvidence::default();
        assert!(!forged.taints(&f, None));
        assert!(
            forged.taints(&f, Some(f.agent_id.as_str())),
            "produced while a forged event for its agent was handled"
        );
        assert!(!forged.taints(&f, Some("someone-else")));
        forged.note(&f.event_ids[0]);
        assert!(forged.taints(&f, None), "cites a forged event");
        for i in 0..FORGED_IDS {
            forged.note(&format!("other-{i}"));
        }
        assert!(!forged.taints(&f, None), "bounded: the oldest is forgotten");
    }

    fn held_call(id: &str) -> Event {
        let line = format!(
            r#"{{"schema":"toolgate.event.v1","kind":"tool_call","event_id":"{id}","time":"2025-03-01T10:00:05Z","agent_id":"agent-7","session_id":"sess-1","server":"web","call_id":"c-9","tool":"post","arguments":{{}},"await_verdict":true}}"#
        );
        Event::decode(line.as_bytes()).unwrap()
    }

    #[test]
    fn a_held_call_is_answered_block_or_allow_by_its_own_findings() {
        let m = maker();
        let call = held_call("e2");
        let allow = m
            .verdict(&call, &[sample(FindingAction::Alert)], &[])
            .unwrap();
        assert_eq!(allow.action, DecisionAction::Allow);
        assert_eq!(allow.scope.call_id.as_deref(), Some("c-9"));
        verifier(&m).verify(&allow).unwrap();
        let block = m
            .verdict(&call, &[sample(FindingAction::Block)], &[])
            .unwrap();
        assert_eq!(block.action, DecisionAction::Block);
        assert_eq!(block.finding_ids.len(), 1);
        let mut other = sample(FindingAction::Block);
        other.call_id = Some("c-other".into());
        other.event_ids = vec!["e-other".into()];
        assert_eq!(
            m.verdict(&call, &[other], &[]).unwrap().action,
            DecisionAction::Allow,
            "another call's finding does not block this one"
        );
        let mut not_held = call.clone();
        not_held.await_verdict = false;
        assert!(m.verdict(&not_held, &[], &[]).is_none());
    }

    #[test]
    fn issue_22_a_block_found_earlier_in_the_same_step_covers_the_held_call() {
        // A session-wide block found on an earlier event of the agent, released with
        // the call: the sink has not seen its decision yet, so the verdict carries it.
        let m = maker();
        let call = held_call("e9");
        let mut session_block = sample(FindingAction::Block);
        (
            session_block.server,
            session_block.tool,
            session_block.call_id,
        ) = (None, None, None);
        session_block.event_ids = vec!["e1".into()];
        let v = m.verdict(&call, &[], &[session_block.clone()]).unwrap();
        assert_eq!(v.action, DecisionAction::Block);
        assert_eq!(v.finding_ids, [session_block.finding_id.clone()]);
        for (what, f) in [
            ("another session", {
                let mut f = session_block.clone();
                f.session_id = "sess-2".into();
                f
            }),
            ("another tool", {
                let mut f = session_block.clone();
                f.tool = Some("read".into());
                f
            }),
            ("only an alert", sample(FindingAction::Alert)),
        ] {
            assert_eq!(
                m.verdict(&call, &[], &[f]).unwrap().action,
                DecisionAction::Allow,
                "{what}"
            );
        }
    }

    /// Issue 22: one block refused every later call to the tool for an hour. Each rule
    /// now says what its blocks cover and for how long (`[[engine.blocks]]`).
    #[test]
    fn issue_22_blocks_are_scoped_and_timed_per_rule() {
        let config = toolgate_protocol::config::Config::from_toml(
            r#"
[[engine.blocks]]
rules = ["provenance/internal_to_*"]
scope = "call"

[[engine.blocks]]
rules = ["policy/*"]
scope = "server"
ttl = "5m"

[[engine.blocks]]
rules = ["sequence/*"]
scope = "agent"
"#,
            "test.toml",
        )
        .expect("config");
        let m = maker().with_blocks(&config.engine.blocks);
        let flow = sample(FindingAction::Block);
        assert_eq!(flow.rule_id, "internal_to_external");
        assert!(m.for_finding(&flow).is_none(), "call: no standing block");
        // Nor does it cover another held call of the session.
        let other = held_call("e-other");
        assert_eq!(
            m.verdict(&other, &[], std::slice::from_ref(&flow))
                .unwrap()
                .action,
            DecisionAction::Allow
        );

        let mut policy = sample(FindingAction::Block);
        (policy.detector, policy.rule_id) = (DetectorKind::Policy, "deny-exec".into());
        let d = m.for_finding(&policy).unwrap();
        assert_eq!(
            (d.scope.server.as_deref(), d.scope.tool.as_deref()),
            (Some("web"), None)
        );
        assert_eq!(d.scope.session_id.as_deref(), Some("sess-1"));
        assert_eq!(
            d.expires_at,
            Some(policy.first_seen.saturating_add(Duration::from_secs(300)))
        );

        let mut sequence = sample(FindingAction::Block);
        sequence.detector = DetectorKind::Sequence;
        let d = m.for_finding(&sequence).unwrap();
        assert_eq!(d.scope.session_id, None, "every session of the agent");
        assert_eq!((d.scope.server, d.scope.tool), (None, None));
        assert_eq!(
            d.expires_at,
            Some(sequence.first_seen.saturating_add(Duration::from_secs(60))),
            "decision_ttl when the rule sets none"
        );

        let mut volume = sample(FindingAction::Block);
        volume.detector = DetectorKind::Volume;
        let d = m.for_finding(&volume).unwrap();
        assert_eq!(
            d.scope.tool.as_deref(),
            Some("post"),
            "no entry: as the finding"
        );

        let bad = toolgate_protocol::config::Config::from_toml(
            "[[engine.blocks]]\nrules = []\n",
            "bad.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(bad.contains("engine.blocks[0].rules"), "{bad}");
        let zero = toolgate_protocol::config::Config::from_toml(
            "[[engine.blocks]]\nrules = [\"*/*\"]\nttl = \"0s\"\n",
            "zero.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(zero.contains("engine.blocks[0].ttl"), "{zero}");
    }

    /// Issue 22: one block on a message to an attacker's address refused every later
    /// `post` of the session ("lunch at noon?" included). A finding that names a
    /// destination blocks that destination.
    #[test]
    fn issue_22_a_block_on_a_destination_covers_calls_to_it_and_no_others() {
        let mut to_attacker = sample(FindingAction::Block);
        (to_attacker.detector, to_attacker.rule_id) =
            (DetectorKind::Provenance, "untrusted_destination".into());
        to_attacker.evidence = serde_json::json!({"destinations": [
            {"argument": "arguments.to", "kind": "email", "value": "attacker@evil.example.com"}
        ]});
        to_attacker.event_ids = vec!["e1".into()];
        let m = maker();
        let d = m.for_finding(&to_attacker).unwrap();
        assert_eq!(
            d.scope.destination.as_deref(),
            Some("attacker@evil.example.com")
        );
        assert_eq!(d.scope.tool.as_deref(), Some("post"));
        let call_to = |id: &str, to: &str| {
            let mut call = held_call(id);
            if let EventBody::ToolCall { arguments, .. } = &mut call.body {
                arguments.insert("to".into(), serde_json::json!(to));
                arguments.insert("text".into(), serde_json::json!("lunch at noon?"));
            }
            call
        };
        let earlier = std::slice::from_ref(&to_attacker);
        let verdict = |call: &Event| m.verdict(call, &[], earlier).unwrap().action;
        assert_eq!(
            verdict(&call_to("e2", "Attacker@Evil.example.com")),
            DecisionAction::Block
        );
        assert_eq!(
            verdict(&call_to("e3", "boss@corp.com")),
            DecisionAction::Allow
        );
        // `tool` keeps the whole tool blocked; a shortened destination names nothing.
        let tool_wide = toolgate_protocol::config::Config::from_toml(
            "[[engine.blocks]]\nrules = [\"provenance/*\"]\nscope = \"tool\"\n",
            "t.toml",
        )
        .expect("config");
        let m = maker().with_blocks(&tool_wide.engine.blocks);
        assert_eq!(m.for_finding(&to_attacker).unwrap().scope.destination, None);
        let mut two = to_attacker.clone();
        if let Some(named) = two.evidence["destinations"].as_array_mut() {
            named.push(serde_json::json!({"value": "other@evil.example.com"}));
        }
        assert_eq!(
            maker().for_finding(&two).unwrap().scope.destination,
            None,
            "several: the tool"
        );
        let mut shortened = to_attacker.clone();
        shortened.evidence["destinations"][0]["value"] =
            serde_json::json!("https://evil.example.com/a-very-long…");
        assert_eq!(
            maker().for_finding(&shortened).unwrap().scope.destination,
            None
        );
    }

    #[test]
    fn a_signing_key_is_made_once_private_and_then_reused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys/signing.key");
        let first = load_or_create_signer(&path, "k").unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let again = load_or_create_signer(&path, "k").unwrap();
        assert_eq!(first.public_key_base64(), again.public_key_base64());
        std::fs::write(&path, "not a key").unwrap();
        let err = format!("{:#}", load_or_create_signer(&path, "k").err().unwrap());
        assert!(err.contains("signing.key"), "{err}");
    }
}
