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

use std::path::Path;

use anyhow::{Context, Result};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use toolgate_protocol::decision::{Decision, DecisionAction, DecisionSigner, Scope};
use toolgate_protocol::event::EventBody;
use toolgate_protocol::{Duration, Event, Finding, FindingAction};

/// Turns findings into decisions and signs them.
pub struct DecisionMaker {
    signer: DecisionSigner,
    ttl: Duration,
}

impl DecisionMaker {
    /// Signs with `signer`; block decisions last `ttl`.
    pub fn new(signer: DecisionSigner, ttl: Duration) -> Self {
        DecisionMaker { signer, ttl }
    }

    /// The block decision a finding calls for, if it calls for one.
    pub fn for_finding(&self, finding: &Finding) -> Option<Decision> {
        if finding.action != FindingAction::Block {
            return None;
        }
        let mut decision = Decision {
            schema: Default::default(),
            decision_id: format!("block-{}", finding.finding_id),
            time: finding.first_seen,
            expires_at: Some(finding.first_seen.saturating_add(self.ttl)),
            action: DecisionAction::Block,
            scope: Scope {
                agent_id: finding.agent_id.clone(),
                session_id: Some(finding.session_id.clone()),
                server: finding.server.clone(),
                tool: finding.tool.clone(),
                call_id: None,
            },
            reason: format!("{} ({})", finding.title, finding.rule_id),
            finding_ids: vec![finding.finding_id.clone()],
            key_id: String::new(),
            signature: String::new(),
        };
        self.signer.sign(&mut decision);
        Some(decision)
    }

    /// The verdict on a held call, given the findings observing it produced; `None`
    /// for anything but a held `tool_call`.
    pub fn verdict(&self, event: &Event, findings: &[Finding]) -> Option<Decision> {
        if !event.await_verdict {
            return None;
        }
        let EventBody::ToolCall {
            server,
            call_id,
            tool,
            ..
        } = &event.body
        else {
            return None;
        };
        let blocking: Vec<&Finding> = findings
            .iter()
            .filter(|f| {
                f.action == FindingAction::Block
                    && (f.call_id.as_deref() == Some(call_id.as_str())
                        || f.event_ids.contains(&event.event_id))
            })
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

/// The engine's signing key: read from `path`, or made and written there (mode 0600)
/// when the file does not exist yet. Engines of one group sharing a data directory may
/// start together: the key is published whole and without replacing one already there,
/// so they all end up with the same key.
pub fn load_or_create_signer(path: &Path, key_id: &str) -> Result<DecisionSigner> {
    if !path.exists() {
        let mut seed = [0u8; 32];
        getrandom_seed(&mut seed)?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        let tmp = path.with_extension(format!("{}.tmp", std::process::id()));
        write_private(&tmp, B64.encode(seed).as_bytes())?;
        let published = std::fs::hard_link(&tmp, path);
        let _ = std::fs::remove_file(&tmp);
        match published {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => {
                return Err(e).with_context(|| format!("cannot create {}", path.display()));
            }
        }
    }
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read signing key {}", path.display()))?;
    DecisionSigner::from_seed_base64(key_id, text.trim())
        .with_context(|| format!("signing key {}", path.display()))
}

fn getrandom_seed(seed: &mut [u8; 32]) -> Result<()> {
    use std::io::Read;
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(seed))
        .context("cannot read /dev/urandom for a new signing key")
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create signing key {}", path.display()))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write signing key {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outputs::tests::sample;
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
        let allow = m.verdict(&call, &[sample(FindingAction::Alert)]).unwrap();
        assert_eq!(allow.action, DecisionAction::Allow);
        assert_eq!(allow.scope.call_id.as_deref(), Some("c-9"));
        verifier(&m).verify(&allow).unwrap();
        let block = m.verdict(&call, &[sample(FindingAction::Block)]).unwrap();
        assert_eq!(block.action, DecisionAction::Block);
        assert_eq!(block.finding_ids.len(), 1);
        let mut other = sample(FindingAction::Block);
        other.call_id = Some("c-other".into());
        other.event_ids = vec!["e-other".into()];
        assert_eq!(
            m.verdict(&call, &[other]).unwrap().action,
            DecisionAction::Allow,
            "another call's finding does not block this one"
        );
        let mut not_held = call.clone();
        not_held.await_verdict = false;
        assert!(m.verdict(&not_held, &[]).is_none());
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
