//! Which MCP server and trust domain each AgentDojo tool belongs to
//! (`ingest/mappings/agentdojo.toml`, embedded as the default).

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;
use toolgate_protocol::config::Config;

use crate::IngestError;

/// The mapping shipped for the `workspace`, `travel` and `banking` suites.
pub const DEFAULT_MAPPING: &str = include_str!("../../mappings/agentdojo.toml");

/// Server name given to tools the mapping does not list.
pub const UNMAPPED_SERVER: &str = "unmapped";

/// The whole mapping file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mapping {
    /// Trust domain of tools no server lists.
    pub default_domain: String,
    /// Per suite.
    pub suites: BTreeMap<String, SuiteMapping>,
}

/// One suite's servers.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SuiteMapping {
    /// `agent_role` of every event of this suite's runs.
    pub role: String,
    /// Servers by name.
    pub servers: BTreeMap<String, ServerMapping>,
}

/// One server.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerMapping {
    /// Its trust domain.
    pub trust_domain: String,
    /// What it is.
    #[serde(default)]
    pub description: Option<String>,
    /// The tools it serves.
    pub tools: Vec<String>,
}

/// Where one tool lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement<'a> {
    /// Server name.
    pub server: &'a str,
    /// Trust domain.
    pub trust_domain: &'a str,
    /// Whether the mapping listed the tool.
    pub mapped: bool,
}

impl Mapping {
    /// The shipped mapping.
    pub fn shipped() -> Result<Mapping, IngestError> {
        Self::from_toml(DEFAULT_MAPPING, "ingest/mappings/agentdojo.toml")
    }

    /// Reads a mapping file.
    pub fn load(path: &Path) -> Result<Mapping, IngestError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| IngestError::io(path.display().to_string(), e))?;
        Self::from_toml(&text, &path.display().to_string())
    }

    /// Parses and checks a mapping: each tool on at most one server per suite.
    pub fn from_toml(text: &str, origin: &str) -> Result<Mapping, IngestError> {
        let input_err = |message: String| IngestError::Input {
            path: origin.to_string(),
            message,
        };
        let mapping: Mapping = toml::from_str(text).map_err(|e| input_err(e.to_string()))?;
        for (suite, s) in &mapping.suites {
            let mut seen: BTreeMap<&str, &str> = BTreeMap::new();
            for (server, m) in &s.servers {
                for tool in &m.tools {
                    if let Some(other) = seen.insert(tool, server) {
                        return Err(input_err(format!(
                            "`suites.{suite}`: tool {tool:?} is listed on both {other:?} and {server:?}"
                        )));
                    }
                }
            }
        }
        Ok(mapping)
    }

    /// Checks that every trust domain the mapping uses is declared in `config`.
    pub fn check_domains(&self, config: &Config) -> Result<(), IngestError> {
        let known = |d: &str| config.trust.domains.iter().any(|x| x == d);
        let mut used = vec![("default_domain".to_string(), &self.default_domain)];
        for (suite, s) in &self.suites {
            for (server, m) in &s.servers {
                used.push((
                    format!("suites.{suite}.servers.{server}.trust_domain"),
                    &m.trust_domain,
                ));
            }
        }
        match used.into_iter().find(|(_, d)| !known(d)) {
            None => Ok(()),
            Some((key, d)) => Err(IngestError::Input {
                path: "mapping".into(),
                message: format!(
                    "`{key}`: trust domain {d:?} is not declared in the config's [trust] domains ({})",
                    config.trust.domains.join(", ")
                ),
            }),
        }
    }

    /// The agent role of a suite's runs.
    pub fn role<'a>(&'a self, suite: &'a str) -> String {
        self.suites
            .get(suite)
            .map_or_else(|| format!("agentdojo-{suite}"), |s| s.role.clone())
    }

    /// Where `tool` of `suite` lives.
    pub fn place<'a>(&'a self, suite: &str, tool: &str) -> Placement<'a> {
        self.suites
            .get(suite)
            .and_then(|s| {
                s.servers
                    .iter()
                    .find(|(_, m)| m.tools.iter().any(|t| t == tool))
            })
            .map_or(
                Placement {
                    server: UNMAPPED_SERVER,
                    trust_domain: &self.default_domain,
                    mapped: false,
                },
                |(server, m)| Placement {
                    server,
                    trust_domain: &m.trust_domain,
                    mapped: true,
                },
            )
    }
}
