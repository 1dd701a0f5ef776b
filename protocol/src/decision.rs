//! `toolgate.decision.v1`: a signed instruction from the engine to the sinks. See
//! DESIGN.md, "Wire contract: decisions". The signature is Ed25519 over the RFC 8785
//! canonical JSON of every other field, so any JSON encoder can re-derive the bytes.

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::canonical::to_canonical_string;
use crate::time::Timestamp;

/// The schema tag every decision carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum DecisionSchema {
    /// `toolgate.decision.v1`
    #[default]
    #[serde(rename = "toolgate.decision.v1")]
    V1,
}

/// What the sink must do with matching calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DecisionAction {
    /// Refuse matching calls.
    Block,
    /// Let matching calls through (answers a held call, or lifts a block).
    Allow,
    /// Hold matching calls until a person approves.
    RequireApproval,
}

/// Which calls a decision applies to; the most specific matching decision wins.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scope {
    /// The agent (always required: decisions are keyed by agent).
    pub agent_id: String,
    /// Only this session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    /// Only this server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    /// Only this tool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool: Option<String>,
    /// Only this held call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call_id: Option<String>,
    /// Only calls whose arguments name this destination: an address, a URL or host,
    /// an account, in the canonical form `provenance` gives its atoms (lowercase, URLs
    /// without scheme, `www.` and trailing slash, numbers as digits), as the engine
    /// read it (after the sink's redaction).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination: Option<String>,
}

impl Scope {
    /// How many optional qualifiers narrow this scope; more is more specific.
    pub fn specificity(&self) -> usize {
        [
            &self.session_id,
            &self.server,
            &self.tool,
            &self.call_id,
            &self.destination,
        ]
        .iter()
        .filter(|f| f.is_some())
        .count()
    }
}

/// A signed decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Decision {
    /// Always `toolgate.decision.v1`.
    pub schema: DecisionSchema,
    /// Unique id.
    pub decision_id: String,
    /// When the engine decided.
    pub time: Timestamp,
    /// After this the decision no longer applies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Timestamp>,
    /// What to do.
    pub action: DecisionAction,
    /// To which calls.
    pub scope: Scope,
    /// Why, in words a user can be shown.
    pub reason: String,
    /// The findings that caused it.
    pub finding_ids: Vec<String>,
    /// Which engine key signed it.
    pub key_id: String,
    /// Base64 (standard, padded) Ed25519 signature over the canonical JSON of every
    /// other field.
    pub signature: String,
}

impl Decision {
    /// The bytes the signature covers: canonical JSON of the decision without `signature`.
    pub fn signed_bytes(&self) -> Vec<u8> {
        let mut value = serde_json::to_value(self).unwrap_or(Value::Null);
        if let Value::Object(map) = &mut value {
            map.remove("signature");
        }
        to_canonical_string(&value).into_bytes()
    }

    /// Whether the decision has expired at `now`.
    pub fn is_expired(&self, now: Timestamp) -> bool {
        self.expires_at.is_some_and(|t| now >= t)
    }
}

/// Why a key or a signature was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SignatureError {
    /// A key is not 32 bytes of base64.
    #[error("key {key_id:?}: expected 32 bytes in base64, {problem}")]
    BadKey {
        /// The key's id.
        key_id: String,
        /// What was wrong.
        problem: String,
    },
    /// The decision names a key this verifier does not trust.
    #[error("decision {decision_id:?} is signed with unknown key {key_id:?}")]
    UnknownKey {
        /// The decision.
        decision_id: String,
        /// The key it names.
        key_id: String,
    },
    /// The signature field is not 64 bytes of base64.
    #[error("decision {decision_id:?}: signature is not 64 bytes of base64")]
    MalformedSignature {
        /// The decision.
        decision_id: String,
    },
    /// The signature does not verify: the decision was altered or forged.
    #[error("decision {decision_id:?}: signature does not verify against key {key_id:?}")]
    Invalid {
        /// The decision.
        decision_id: String,
        /// The key tried.
        key_id: String,
    },
}

fn decode_key(key_id: &str, b64: &str) -> Result<[u8; 32], SignatureError> {
    let bytes = B64.decode(b64.trim()).map_err(|e| SignatureError::BadKey {
        key_id: key_id.to_string(),
        problem: e.to_string(),
    })?;
    <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| SignatureError::BadKey {
        key_id: key_id.to_string(),
        problem: format!("found {} bytes", bytes.len()),
    })
}

/// The engine's side: signs decisions with one named key.
pub struct DecisionSigner {
    key_id: String,
    key: SigningKey,
}

impl DecisionSigner {
    /// From a 32-byte secret seed.
    pub fn from_seed(key_id: impl Into<String>, seed: [u8; 32]) -> Self {
        DecisionSigner {
            key_id: key_id.into(),
            key: SigningKey::from_bytes(&seed),
        }
    }

    /// From a base64-encoded 32-byte secret seed.
    pub fn from_seed_base64(key_id: impl Into<String>, b64: &str) -> Result<Self, SignatureError> {
        let key_id = key_id.into();
        let seed = decode_key(&key_id, b64)?;
        Ok(Self::from_seed(key_id, seed))
    }

    /// The key id written into every decision.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// The public key, base64, for sinks' configuration.
    pub fn public_key_base64(&self) -> String {
        B64.encode(self.key.verifying_key().as_bytes())
    }

    /// Sets `key_id` and `signature` on the decision.
    pub fn sign(&self, decision: &mut Decision) {
        decision.key_id.clone_from(&self.key_id);
        let signature = self.key.sign(&decision.signed_bytes());
        decision.signature = B64.encode(signature.to_bytes());
    }
}

/// The sink's side: the set of engine public keys it trusts, by key id.
#[derive(Default, Clone)]
pub struct DecisionVerifier {
    keys: BTreeMap<String, VerifyingKey>,
}

impl DecisionVerifier {
    /// Trusts a base64-encoded Ed25519 public key under `key_id`.
    pub fn add_key(&mut self, key_id: &str, public_b64: &str) -> Result<(), SignatureError> {
        let bytes = decode_key(key_id, public_b64)?;
        let key = VerifyingKey::from_bytes(&bytes).map_err(|_| SignatureError::BadKey {
            key_id: key_id.to_string(),
            problem: "not a valid Ed25519 point".into(),
        })?;
        self.keys.insert(key_id.to_string(), key);
        Ok(())
    }

    /// Accepts the decision only if it names a trusted key and the signature verifies.
    pub fn verify(&self, decision: &Decision) -> Result<(), SignatureError> {
        let key = self
            .keys
            .get(&decision.key_id)
            .ok_or_else(|| SignatureError::UnknownKey {
                decision_id: decision.decision_id.clone(),
                key_id: decision.key_id.clone(),
            })?;
        let sig_bytes = B64
            .decode(decision.signature.as_bytes())
            .ok()
            .and_then(|b| <[u8; 64]>::try_from(b.as_slice()).ok())
            .ok_or_else(|| SignatureError::MalformedSignature {
                decision_id: decision.decision_id.clone(),
            })?;
        key.verify_strict(&decision.signed_bytes(), &Signature::from_bytes(&sig_bytes))
            .map_err(|_| SignatureError::Invalid {
                decision_id: decision.decision_id.clone(),
                key_id: decision.key_id.clone(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decision() -> Decision {
        Decision {
            schema: DecisionSchema::V1,
            decision_id: "d-1".into(),
            time: Timestamp::parse("2025-05-01T10:00:00Z").unwrap(),
            expires_at: Some(Timestamp::parse("2025-05-01T11:00:00Z").unwrap()),
            action: DecisionAction::Block,
            scope: Scope {
                agent_id: "agent-7".into(),
                session_id: Some("s-1".into()),
                server: None,
                tool: Some("send_email".into()),
                call_id: None,
                destination: None,
            },
            reason: "internal data sent to an external tool".into(),
            finding_ids: vec!["f-1".into()],
            key_id: String::new(),
            signature: String::new(),
        }
    }

    fn signer() -> DecisionSigner {
        DecisionSigner::from_seed("engine-2025", [7u8; 32])
    }

    fn verifier() -> DecisionVerifier {
        let mut v = DecisionVerifier::default();
        v.add_key("engine-2025", &signer().public_key_base64())
            .unwrap();
        v
    }

    #[test]
    fn signed_decision_verifies_after_a_json_round_trip() {
        let mut d = decision();
        signer().sign(&mut d);
        assert_eq!(d.key_id, "engine-2025");
        // A verifier in another process sees re-encoded JSON, possibly reordered.
        let json = serde_json::to_string(&d).unwrap();
        let back: Decision = serde_json::from_str(&json).unwrap();
        verifier().verify(&back).unwrap();
    }

    #[test]
    fn any_change_to_a_signed_field_breaks_the_signature() {
        let mut d = decision();
        signer().sign(&mut d);
        let edits: [fn(&mut Decision); 6] = [
            |d| d.action = DecisionAction::Allow,
            |d| d.scope.agent_id = "agent-8".into(),
            |d| d.scope.tool = None,
            |d| d.expires_at = None,
            |d| d.reason.push('!'),
            |d| d.finding_ids.clear(),
        ];
        for edit in edits {
            let mut forged = d.clone();
            edit(&mut forged);
            assert!(matches!(
                verifier().verify(&forged),
                Err(SignatureError::Invalid { .. })
            ));
        }
    }

    #[test]
    fn unknown_keys_and_garbage_signatures_are_refused() {
        let mut d = decision();
        DecisionSigner::from_seed("rogue", [9u8; 32]).sign(&mut d);
        assert!(matches!(
            verifier().verify(&d),
            Err(SignatureError::UnknownKey { .. })
        ));
        let mut d = decision();
        signer().sign(&mut d);
        d.signature = "not base64!".into();
        assert!(matches!(
            verifier().verify(&d),
            Err(SignatureError::MalformedSignature { .. })
        ));
        let mut v = DecisionVerifier::default();
        assert!(matches!(
            v.add_key("k", "c2hvcnQ="),
            Err(SignatureError::BadKey { .. })
        ));
    }

    #[test]
    fn expiry_and_specificity() {
        let d = decision();
        assert!(!d.is_expired(Timestamp::parse("2025-05-01T10:59:59Z").unwrap()));
        assert!(d.is_expired(Timestamp::parse("2025-05-01T11:00:00Z").unwrap()));
        assert_eq!(d.scope.specificity(), 2);
    }
}
