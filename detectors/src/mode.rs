//! Whether a finding asks for a block or only reports: the `mode` key of the policy
//! rules, `secrets` and `provenance`.

use serde::Deserialize;

/// Whether a rule or a detector blocks or only reports.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Report only: findings are alerts and the sink forwards the call.
    Monitor,
    /// Block: findings ask for a block and the sink refuses the call.
    #[default]
    Enforce,
}

impl Mode {
    /// `monitor` or `enforce`.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Monitor => "monitor",
            Mode::Enforce => "enforce",
        }
    }
}
