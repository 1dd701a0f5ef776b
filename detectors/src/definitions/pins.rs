//! Trust-on-first-use pins of tool definitions, and the changes waiting for a person.
//!
//! The store is plain data, serialized as the pins file an operator reviews: for each
//! `server/tool`, the pinned definition, changed definitions pending approval, and
//! fingerprints that were rejected. Approval and rejection are operations on this
//! data; the command line applies them to the file.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use toolgate_protocol::Timestamp;

/// What is known about one tool of one server.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolPins {
    /// The approved definition, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pinned: Option<PinnedDefinition>,
    /// Changed definitions held until a person approves or rejects them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pending: Vec<PinnedDefinition>,
    /// Fingerprints a person rejected; still flagged whenever they are served.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rejected: Vec<String>,
}

/// One definition as seen.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PinnedDefinition {
    /// `sha256:` fingerprint of the definition.
    pub fingerprint: String,
    /// The fingerprinted view (name, title, description, schemas, annotations).
    pub definition: Value,
    /// When it was first seen.
    pub first_seen: Timestamp,
    /// The event it was first seen in.
    pub event_id: String,
    /// The agent that saw it first.
    pub agent_id: String,
}

/// Every pin, keyed by server and tool name. The pins file's content.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PinStore {
    /// Format version of the pins file.
    #[serde(default = "version")]
    pub version: u32,
    /// `servers[server][tool]`.
    #[serde(default)]
    pub servers: BTreeMap<String, BTreeMap<String, ToolPins>>,
}

fn version() -> u32 {
    1
}

/// Why an approval or rejection could not be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PinError {
    /// Nothing is pending for that tool.
    #[error("nothing is pending for {server}/{tool}")]
    NothingPending {
        /// Server.
        server: String,
        /// Tool.
        tool: String,
    },
    /// Several changes are pending and none was chosen.
    #[error(
        "{count} changes are pending for {server}/{tool}; name one with its fingerprint: {fingerprints}"
    )]
    Ambiguous {
        /// Server.
        server: String,
        /// Tool.
        tool: String,
        /// How many.
        count: usize,
        /// Their fingerprints.
        fingerprints: String,
    },
    /// The named fingerprint is not pending.
    #[error("{fingerprint} is not pending for {server}/{tool}")]
    NotPending {
        /// Server.
        server: String,
        /// Tool.
        tool: String,
        /// The fingerprint given.
        fingerprint: String,
    },
}

impl PinStore {
    /// The entry for a tool, if any.
    pub fn get(&self, server: &str, tool: &str) -> Option<&ToolPins> {
        self.servers.get(server)?.get(tool)
    }

    pub(crate) fn entry(&mut self, server: &str, tool: &str) -> &mut ToolPins {
        self.servers
            .entry(server.to_string())
            .or_default()
            .entry(tool.to_string())
            .or_default()
    }

    fn take_pending(
        &mut self,
        server: &str,
        tool: &str,
        fingerprint: Option<&str>,
    ) -> Result<PinnedDefinition, PinError> {
        let pins = self
            .servers
            .get_mut(server)
            .and_then(|s| s.get_mut(tool))
            .filter(|p| !p.pending.is_empty())
            .ok_or_else(|| PinError::NothingPending {
                server: server.into(),
                tool: tool.into(),
            })?;
        let index = match fingerprint {
            Some(fp) => pins
                .pending
                .iter()
                .position(|p| p.fingerprint == fp)
                .ok_or_else(|| PinError::NotPending {
                    server: server.into(),
                    tool: tool.into(),
                    fingerprint: fp.into(),
                })?,
            None if pins.pending.len() == 1 => 0,
            None => {
                return Err(PinError::Ambiguous {
                    server: server.into(),
                    tool: tool.into(),
                    count: pins.pending.len(),
                    fingerprints: pins
                        .pending
                        .iter()
                        .map(|p| p.fingerprint.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                });
            }
        };
        Ok(pins.pending.remove(index))
    }

    /// Makes a pending definition the pinned one.
    pub fn approve(
        &mut self,
        server: &str,
        tool: &str,
        fingerprint: Option<&str>,
    ) -> Result<PinnedDefinition, PinError> {
        let chosen = self.take_pending(server, tool, fingerprint)?;
        let pins = self.entry(server, tool);
        pins.rejected.retain(|r| *r != chosen.fingerprint);
        pins.pinned = Some(chosen.clone());
        Ok(chosen)
    }

    /// Refuses a pending definition for good: it stays flagged whenever it is served.
    pub fn reject(
        &mut self,
        server: &str,
        tool: &str,
        fingerprint: Option<&str>,
    ) -> Result<PinnedDefinition, PinError> {
        let chosen = self.take_pending(server, tool, fingerprint)?;
        let pins = self.entry(server, tool);
        if !pins.rejected.contains(&chosen.fingerprint) {
            pins.rejected.push(chosen.fingerprint.clone());
        }
        Ok(chosen)
    }
}
