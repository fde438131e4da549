//! The orchestrator's own settings: `[orchestrator]` in the configuration file,
//! `SOMAGENT_ORCHESTRATOR__<KEY>` in the environment.

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OrchestratorConfig {
    /// How long a tool call that requires approval waits for a person, in seconds;
    /// no answer by then is a denial the model is told about.
    pub approval_timeout_secs: u64,
    /// Rounds of tool calls in one turn before the model must answer.
    pub max_tool_rounds: u32,
    /// The most of one tool result the model gets, in bytes (the rest is cut, and the
    /// model is told so).
    pub tool_result_max_bytes: usize,
}

impl Default for OrchestratorConfig {
    fn default() -> Self {
        Self {
            approval_timeout_secs: 15 * 60,
            max_tool_rounds: 8,
            tool_result_max_bytes: 16 * 1024,
        }
    }
}
