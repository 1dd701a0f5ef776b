//! The `definitions` detector: tool-definition integrity.
//!
//! - **Pins**: the first definition seen for each `server/tool` is pinned (trust on
//!   first use). A later, different definition is a `rug_pull`: reported with a
//!   readable diff, asking for a block, and held as *pending* until a person approves
//!   or rejects it (`toolgate definitions approve|reject`). Servers named in
//!   `auto_approve_servers` have changes pinned at once and reported as `info`.
//! - **Added and removed tools** on a server that already has pins.
//! - **Look-alike names**: a new tool named like a tool of another server (homoglyph,
//!   typosquat, case/separator variant), or named with characters drawn like Latin ones;
//!   a typosquat is `info` unless more says impersonation.
//! - **Fleet divergence**: one server name serving different definitions of a tool to
//!   different agents within `divergence_window`: one finding per variant that is
//!   neither the pinned nor the majority definition, for the agents served it.
//!
//! The detector's snapshot is the pins file: pretty JSON an operator can read and the
//! command line edits. The detector itself does no I/O; the binaries that run it load
//! and save `pins_file`.

pub mod diff;
pub mod names;
pub mod pins;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::json;
use toolgate_protocol::config::Config;
use toolgate_protocol::event::{EventBody, ToolDefinition};
use toolgate_protocol::{DetectorKind, Duration, Event, Severity, Timestamp};

use crate::factory::{BuildError, Configured};
use crate::{Detector, FindingDraft, StateError};
use pins::{PinStore, PinnedDefinition};

/// The detector's name under `[detectors]`.
pub const NAME: &str = "definitions";

/// `[detectors.definitions]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DefinitionSettings {
    /// The pins file, read before and written after a run by the binary that runs this
    /// detector (`toolgate analyze`, the engine); `toolgate definitions` edits it.
    #[serde(default)]
    pub pins_file: Option<String>,
    /// Servers whose changed definitions are pinned at once (reported as `info`).
    #[serde(default)]
    pub auto_approve_servers: Vec<String>,
    /// Report tools that appear on a server that already has pinned tools.
    #[serde(default = "yes")]
    pub report_added: bool,
    /// Report pinned tools missing from a later listing of their server.
    #[serde(default = "yes")]
    pub report_removed: bool,
    /// Report new tools whose names imitate tools of other servers.
    #[serde(default = "yes")]
    pub report_lookalikes: bool,
    /// Window in which different definitions served to different agents count as
    /// fleet divergence.
    #[serde(default = "default_divergence_window")]
    pub divergence_window: Duration,
    /// Most `server/tool` pairs pinned; past it new tools are reported, not pinned.
    #[serde(default = "default_max_tools")]
    pub max_tools: usize,
}

fn yes() -> bool {
    true
}
fn default_divergence_window() -> Duration {
    Duration::from_secs(3600)
}
fn default_max_tools() -> usize {
    100_000
}

/// Most fingerprints remembered per tool for divergence.
const MAX_SERVED_PER_TOOL: usize = 8;

/// Agents named per served definition, at most; the count goes on past it.
const MAX_AGENTS_NAMED: usize = 32;

/// Two descriptions sharing this share of their words are near copies.
const NEAR_COPY: f64 = 0.6;

/// A fingerprint recently served, and to whom.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Served {
    /// The agents it was served to, up to [`MAX_AGENTS_NAMED`]: at the cap, "that many
    /// or more" (a variant the fleet at large gets is not told apart by its count).
    #[serde(default)]
    pub agents: Vec<String>,
    /// The last agent it was served to, in pins files written before `agents`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<String>,
    /// When, last.
    pub last_seen: Timestamp,
}

/// The detector's whole state: the pins file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DefinitionsState {
    /// Pins, pending changes and rejections.
    #[serde(default)]
    pub pins: PinStore,
    /// Recently served fingerprints per `server/tool`, for divergence.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub served: BTreeMap<String, BTreeMap<String, Served>>,
}

impl DefinitionsState {
    /// Reads a pins file's content.
    pub fn from_json(bytes: &[u8]) -> Result<Self, StateError> {
        serde_json::from_slice(bytes).map_err(|e| StateError::Decode {
            what: "pins file".into(),
            message: e.to_string(),
        })
    }

    /// The pins file's content.
    pub fn to_json(&self) -> Result<Vec<u8>, StateError> {
        serde_json::to_vec_pretty(self).map_err(|e| StateError::Encode {
            what: "pins file".into(),
            message: e.to_string(),
        })
    }
}

impl Configured for DefinitionsDetector {
    const NAME: &'static str = NAME;
    const KIND: DetectorKind = DetectorKind::Definition;
    const SUMMARY: &'static str =
        "pinned tool definitions: rug pulls, added and removed tools, fleet divergence";
    type Settings = DefinitionSettings;

    fn build(_config: &Config, s: DefinitionSettings) -> Result<Self, BuildError> {
        Ok(DefinitionsDetector {
            settings: s,
            state: DefinitionsState::default(),
        })
    }
}

/// The detector.
pub struct DefinitionsDetector {
    settings: DefinitionSettings,
    state: DefinitionsState,
}

impl DefinitionsDetector {
    fn pinned_count(&self) -> usize {
        self.state.pins.servers.values().map(|t| t.len()).sum()
    }

    fn draft(&self, rule: &str, event: &Event, server: &str, tool: &str) -> FindingDraft {
        let mut d = FindingDraft::about(DetectorKind::Definition, rule, event)
            .group_by(format!("{}\u{1f}{server}\u{1f}{tool}", event.agent_id));
        d.tool = Some(tool.to_string());
        d
    }

    /// A tool seen for the first time: does its name imitate another server's tool?
    /// Homoglyphs and case variants do whatever else is true; a one-edit difference is
    /// common between honest tools of different servers (`git_commit` of the git
    /// server, `get_commit` of GitHub's), so it is `info` unless more says
    /// impersonation: the descriptions are near copies, or the tool was added to a
    /// server this agent already used after the other was pinned for the agent.
    fn check_lookalike(
        &self,
        event: &Event,
        server: &str,
        tool: &ToolDefinition,
        added_later: bool,
        out: &mut Vec<FindingDraft>,
    ) {
        let (tool, description) = (tool.name.as_str(), tool.description.as_deref());
        if !self.settings.report_lookalikes {
            return;
        }
        // Every tool of another server the name imitates, judged on its own; the
        // worst of them is reported.
        let mut worst: Option<Imitation<'_>> = None;
        for (other_server, tools) in &self.state.pins.servers {
            if other_server == server {
                continue;
            }
            for (other_tool, pins) in tools {
                let Some(likeness) = names::likeness(tool, other_tool) else {
                    continue;
                };
                let mut more = Vec::new();
                if likeness == names::Likeness::Typosquat
                    && let Some(other) = &pins.pinned
                {
                    let theirs = other.definition["description"].as_str();
                    if let (Some(a), Some(b)) = (description, theirs)
                        && names::word_overlap(a, b) >= NEAR_COPY
                    {
                        more.push("near_copy_description");
                    }
                    if added_later
                        && other.agent_id == event.agent_id
                        && other.first_seen < event.time
                    {
                        more.push("added_after_the_other_was_pinned_for_this_agent");
                    }
                }
                let found = Imitation {
                    likeness,
                    server: other_server,
                    tool: other_tool,
                    more,
                };
                if worst.as_ref().is_none_or(|w| found.rank() > w.rank()) {
                    worst = Some(found);
                }
            }
        }
        let confusables: String = names::confusable_chars(tool).into_iter().collect();
        let (title, why, severity, risk, confidence) = match &worst {
            Some(w) => {
                let (severity, risk, confidence) = w.rating();
                (
                    format!(
                        "Tool {tool:?} on {server:?} imitates {:?} on {:?}",
                        w.tool, w.server
                    ),
                    format!(
                        "The names are a {} pair: a model asked to use {:?} may call {tool:?} on {server:?} instead.{}",
                        w.likeness.as_str(),
                        w.tool,
                        match (w.likeness, w.more.is_empty()) {
                            (names::Likeness::Typosquat, true) =>
                                " One edit apart is also how honest tools of two servers are often named; nothing else here says impersonation.",
                            (names::Likeness::Typosquat, false) =>
                                " Its description is a near copy of the other's, or it appeared on a server already in use after the other was pinned.",
                            _ => "",
                        }
                    ),
                    severity,
                    risk,
                    confidence,
                )
            }
            None if !confusables.is_empty() => (
                format!("Tool {tool:?} on {server:?} is named with look-alike characters"),
                format!(
                    "{confusables:?} are drawn like Latin letters; a name that only looks ASCII is made to be mistaken for another."
                ),
                Severity::Medium,
                60,
                0.7,
            ),
            None => return,
        };
        out.push(
            self.draft("lookalike_tool_name", event, server, tool)
                .describe(title, why)
                .rate(severity, risk, confidence)
                .evidence(json!({
                    "likeness": worst.as_ref().map(|w| w.likeness.as_str()),
                    "imitated": worst.as_ref().map(|w| json!({"server": w.server, "tool": w.tool})),
                    "confusable_characters": confusables,
                    "impersonation": worst.as_ref().map(|w| w.more.clone()).unwrap_or_default(),
                }))
                .tags(["mcp:tool-shadowing", "atlas:AML.T0051"]),
        );
    }

    /// Fleet divergence: one server name serving different definitions of a tool to
    /// different agents within `divergence_window`. A definition is out of line when it
    /// is neither the pinned (approved) one nor the one most agents were served; only
    /// the agents served such a variant get the finding, one per variant (its
    /// sessions fold into it), with how many agents got each variant.
    fn check_divergence(
        &mut self,
        event: &Event,
        server: &str,
        tool: &str,
        fingerprint: &str,
        out: &mut Vec<FindingDraft>,
    ) {
        let window = self.settings.divergence_window;
        // A tool listed for the first time is about to be pinned as it is (trust on
        // first use).
        let pinned = match self.state.pins.get(server, tool) {
            Some(p) => p.pinned.as_ref().map(|p| p.fingerprint.clone()),
            None => Some(fingerprint.to_string()),
        };
        let served = self
            .state
            .served
            .entry(format!("{server}/{tool}"))
            .or_default();
        served.retain(|_, s| s.last_seen.saturating_add(window) >= event.time);
        let variant = served
            .entry(fingerprint.to_string())
            .or_insert_with(|| Served {
                agents: Vec::new(),
                agent_id: None,
                last_seen: event.time,
            });
        variant.last_seen = variant.last_seen.max(event.time);
        for agent in variant
            .agent_id
            .take()
            .into_iter()
            .chain([event.agent_id.clone()])
        {
            if variant.agents.len() < MAX_AGENTS_NAMED && !variant.agents.contains(&agent) {
                variant.agents.push(agent);
            }
        }
        while served.len() > MAX_SERVED_PER_TOOL {
            let oldest = served
                .iter()
                .filter(|(fp, _)| fp.as_str() != fingerprint)
                .min_by_key(|(_, s)| s.last_seen)
                .map(|(fp, _)| fp.clone());
            match oldest {
                Some(fp) => served.remove(&fp),
                None => break,
            };
        }
        // Another definition served to another agent: one agent served two in turn is
        // a change over time (a rug pull), not divergence.
        let elsewhere = served.iter().any(|(fp, s)| {
            fp.as_str() != fingerprint && s.agents.iter().any(|a| *a != event.agent_id)
        });
        if !elsewhere {
            return;
        }
        // Most agents; a tie goes to the pinned one, then to the smaller fingerprint.
        let majority = served
            .iter()
            .max_by(|(a_fp, a), (b_fp, b)| {
                a.agents
                    .len()
                    .cmp(&b.agents.len())
                    .then_with(|| {
                        (Some(*a_fp) == pinned.as_ref()).cmp(&(Some(*b_fp) == pinned.as_ref()))
                    })
                    .then_with(|| b_fp.cmp(a_fp))
            })
            .map(|(fp, _)| fp.clone());
        if pinned.as_deref() == Some(fingerprint) || majority.as_deref() == Some(fingerprint) {
            return;
        }
        let variants: Vec<serde_json::Value> = served
            .iter()
            .map(|(fp, s)| {
                json!({
                    "fingerprint": fp,
                    "agents": s.agents.len(),
                    "agents_or_more": s.agents.len() >= MAX_AGENTS_NAMED,
                    "agents_named": s.agents,
                })
            })
            .collect();
        let (count, total) = (
            served.get(fingerprint).map_or(0, |s| s.agents.len()),
            served.values().map(|s| s.agents.len()).sum::<usize>(),
        );
        let draft = self
            .draft("fleet_divergence", event, server, tool)
            .group_by(format!("{server}\u{1f}{tool}\u{1f}{fingerprint}"))
            .describe(
                format!("Server {server:?} served this agent a definition of {tool:?} that other agents were not served"),
                format!(
                    "Agent {:?} was served {fingerprint}, as were {count} of the {total} agents served {tool:?} within {window}; the pinned definition is {} and the one most agents got is {}. One server name should mean one definition: this variant was served to some agents only.",
                    event.agent_id,
                    pinned.as_deref().unwrap_or("(none)"),
                    majority.as_deref().unwrap_or("(none)"),
                ),
            )
            .rate(Severity::Medium, 55, 0.8)
            .evidence(json!({"fingerprint": fingerprint, "pinned": pinned, "majority": majority, "variants": variants}))
            .tags(["mcp:fleet-divergence"]);
        out.push(draft);
    }
}

/// A tool of another server a new name imitates, and what else says impersonation.
struct Imitation<'a> {
    likeness: names::Likeness,
    server: &'a str,
    tool: &'a str,
    more: Vec<&'static str>,
}

impl Imitation<'_> {
    /// Severity, risk and confidence: a one-edit pair is `info` alone.
    fn rating(&self) -> (Severity, u8, f64) {
        match (self.likeness, self.more.is_empty()) {
            (names::Likeness::Homoglyph, _) => (Severity::High, 80, 0.7),
            (names::Likeness::Typosquat, false) => (Severity::Medium, 55, 0.7),
            (names::Likeness::Typosquat, true) => (Severity::Info, 15, 0.3),
            (names::Likeness::Variant, _) => (Severity::Low, 35, 0.7),
        }
    }

    /// Worse first by what it is rated, then by how close the names are.
    fn rank(&self) -> (u8, names::Likeness) {
        (self.rating().1, self.likeness)
    }
}

impl Detector for DefinitionsDetector {
    fn name(&self) -> &'static str {
        NAME
    }

    fn observe(&mut self, event: &Event, out: &mut Vec<FindingDraft>) {
        let EventBody::ToolList { server, tools } = &event.body else {
            return;
        };
        let server_known = self
            .state
            .pins
            .servers
            .get(server)
            .is_some_and(|t| !t.is_empty());
        for tool in tools {
            let fingerprint = tool.fingerprint().to_string();
            let view = tool.fingerprinted_view();
            self.check_divergence(event, server, &tool.name, &fingerprint, out);
            let seen = PinnedDefinition {
                fingerprint: fingerprint.clone(),
                definition: view.clone(),
                first_seen: event.time,
                event_id: event.event_id.clone(),
                agent_id: event.agent_id.clone(),
            };
            let existing = self.state.pins.get(server, &tool.name).cloned();
            let Some(entry) = existing
                .filter(|e| e.pinned.is_some() || !e.pending.is_empty() || !e.rejected.is_empty())
            else {
                if self.pinned_count() >= self.settings.max_tools {
                    out.push(
                        self.draft("pin_capacity", event, server, &tool.name)
                            .describe(
                                format!("Tool {:?} on {server:?} was not pinned: the pin store is full", tool.name),
                                format!("{} tools are pinned (max_tools); new tools are reported but not pinned.", self.settings.max_tools),
                            )
                            .rate(Severity::Low, 30, 1.0)
                            .evidence(json!({"fingerprint": fingerprint})),
                    );
                    continue;
                }
                self.check_lookalike(event, server, tool, server_known, out);
                self.state.pins.entry(server, &tool.name).pinned = Some(seen);
                if server_known && self.settings.report_added {
                    out.push(
                        self.draft("tool_added", event, server, &tool.name)
                            .describe(
                                format!("Server {server:?} added tool {:?}", tool.name),
                                format!("{:?} was not in earlier listings of {server:?}; it is now pinned as first seen.", tool.name),
                            )
                            .rate(Severity::Low, 30, 1.0)
                            .evidence(json!({"fingerprint": fingerprint, "definition": view}))
                            .tags(["mcp:tool-added"]),
                    );
                }
                continue;
            };
            let pinned_fp = entry.pinned.as_ref().map(|p| p.fingerprint.clone());
            if pinned_fp.as_deref() == Some(fingerprint.as_str()) {
                continue;
            }
            let changes = entry
                .pinned
                .as_ref()
                .map(|p| diff::diff(&p.definition, &view))
                .unwrap_or_default();
            let rendered = diff::render(&changes);
            if entry.rejected.contains(&fingerprint) {
                out.push(
                    self.draft("rejected_definition", event, server, &tool.name)
                        .group_by(format!("{}\u{1f}{server}\u{1f}{}\u{1f}{fingerprint}", event.agent_id, tool.name))
                        .describe(
                            format!("Server {server:?} serves a rejected definition of {:?}", tool.name),
                            format!("This definition ({fingerprint}) was rejected by an operator.\n{rendered}"),
                        )
                        .rate(Severity::High, 85, 1.0)
                        .evidence(json!({"fingerprint": fingerprint, "pinned": pinned_fp, "changes": changes}))
                        .tags(["mcp:rug-pull"])
                        .block(),
                );
                continue;
            }
            if self
                .settings
                .auto_approve_servers
                .iter()
                .any(|s| s == server)
            {
                let pins = self.state.pins.entry(server, &tool.name);
                pins.pending.retain(|p| p.fingerprint != fingerprint);
                pins.pinned = Some(seen);
                out.push(
                    self.draft("definition_auto_approved", event, server, &tool.name)
                        .group_by(format!("{}\u{1f}{server}\u{1f}{}\u{1f}{fingerprint}", event.agent_id, tool.name))
                        .describe(
                            format!("Definition of {:?} on {server:?} changed and was approved automatically", tool.name),
                            format!("{server:?} is listed in auto_approve_servers.\n{rendered}"),
                        )
                        .rate(Severity::Info, 10, 1.0)
                        .evidence(json!({"fingerprint": fingerprint, "previous": pinned_fp, "changes": changes})),
                );
                continue;
            }
            let pins = self.state.pins.entry(server, &tool.name);
            if !pins.pending.iter().any(|p| p.fingerprint == fingerprint) {
                pins.pending.push(seen);
            }
            out.push(
                self.draft("rug_pull", event, server, &tool.name)
                    .group_by(format!("{}\u{1f}{server}\u{1f}{}\u{1f}{fingerprint}", event.agent_id, tool.name))
                    .describe(
                        format!("Definition of {:?} on {server:?} changed after it was pinned", tool.name),
                        format!(
                            "The tool now has definition {fingerprint} instead of the pinned {}. It is held until approved (toolgate definitions approve {server} {}).\n{rendered}",
                            pinned_fp.as_deref().unwrap_or("(none)"),
                            tool.name
                        ),
                    )
                    .rate(Severity::High, 75, 0.9)
                    .evidence(json!({"fingerprint": fingerprint, "pinned": pinned_fp, "changes": changes}))
                    .tags(["mcp:rug-pull", "atlas:AML.T0051"])
                    .block(),
            );
        }
        if server_known && self.settings.report_removed {
            let listed: Vec<&str> = tools.iter().map(|t| t.name.as_str()).collect();
            let missing: Vec<String> = self
                .state
                .pins
                .servers
                .get(server)
                .map(|t| {
                    t.iter()
                        .filter(|(name, p)| p.pinned.is_some() && !listed.contains(&name.as_str()))
                        .map(|(name, _)| name.clone())
                        .collect()
                })
                .unwrap_or_default();
            for name in missing {
                out.push(
                    self.draft("tool_removed", event, server, &name)
                        .describe(
                            format!("Server {server:?} no longer lists tool {name:?}"),
                            format!("{name:?} is pinned but missing from this listing of {server:?}. Its pin is kept."),
                        )
                        .rate(Severity::Info, 15, 0.7)
                        .tags(["mcp:tool-removed"]),
                );
            }
        }
    }

    fn advance(&mut self, watermark: Timestamp, _out: &mut Vec<FindingDraft>) {
        let window = self.settings.divergence_window;
        for served in self.state.served.values_mut() {
            served.retain(|_, s| s.last_seen.saturating_add(window) >= watermark);
        }
        self.state.served.retain(|_, s| !s.is_empty());
    }

    fn snapshot(&self) -> Result<Vec<u8>, StateError> {
        self.state.to_json()
    }

    fn restore(&mut self, snapshot: &[u8]) -> Result<(), StateError> {
        self.state = if snapshot.is_empty() {
            DefinitionsState::default()
        } else {
            DefinitionsState::from_json(snapshot)?
        };
        Ok(())
    }
}
