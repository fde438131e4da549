//! `session_turn`, one turn of a session, as a durable workflow (its prompt was judged
//! by policy when the turn was asked for) → the user's tools offered to the model as
//! OpenAI tool definitions → the model, its deltas streamed out as they come → its tool
//! calls run through the tool service (under policy, limits and metering there), those
//! that require approval only after a person approves them (a signal, waited for up to
//! the configured timeout; no answer is a denial), their results back to the model,
//! round after round, each a step → policy on the output → messages persisted →
//! `conversation.events`. slm guards the answer's text as it streams (every round's):
//! a delta reaches watchers and the topic only once the text up to it passes the
//! tenant's terms and patterns; an answer it stops, or one the final check denies, is
//! withheld and watchers get `retract`. Usage is metered by slm, and every policy
//! decision audited by policy.
//!
//! `workflow` makes the decisions; `activities` does the I/O; this module declares the
//! steps and the types that pass between them.

mod activities;
mod tool_calls;
mod workflow;

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use serde::{Deserialize, Serialize};
use somagent_common::tenant::TenantId;
use somagent_workflows::{Activity, ActivityError, ActivityOptions, Registry, Workflow};

pub use activities::TurnActivities;

/// The workflow: its input, and how it ended.
pub const SESSION_TURN: Workflow<TurnInput, TurnResult> = Workflow::new("session_turn");

const QUICK: ActivityOptions = ActivityOptions::new(Duration::from_secs(10), 3);
/// The model call: slm bounds the wait for each token; this bounds the whole answer.
/// It beats while it streams, so when its process dies another takes it over within
/// seconds rather than after the whole bound.
const MODEL: ActivityOptions =
    ActivityOptions::new(Duration::from_secs(300), 2).with_heartbeat(Duration::from_secs(5));

pub const POLICY_CHECK: Activity<PolicyCheck, Decision> = Activity::new("policy.check", QUICK);
pub const SESSION_HISTORY: Activity<Who, Vec<Message>> = Activity::new("session.history", QUICK);
pub const MODEL_COMPLETE: Activity<ModelCall, ModelReply> = Activity::new("model.complete", MODEL);
pub const TURN_FINISH: Activity<Finish, Finished> = Activity::new("turn.finish", QUICK);
pub const TOOLBOX: Activity<Who, Toolbox> = Activity::new("tool.list", QUICK);
pub const APPROVAL_ASK: Activity<Ask, Asked> = Activity::new("approval.ask", QUICK);
/// Recall embeds the question (on the local model, CPU work) and searches.
pub const RECALL: Activity<RecallAsk, Recalled> = Activity::new(
    "memory.recall",
    ActivityOptions::new(Duration::from_secs(30), 2),
);
/// A tool call: the tool service bounds the call itself (each action's timeout); this
/// bounds the wait for it. A retry repeats the call's idempotency key, so a call that
/// ran is not run twice.
const TOOL: ActivityOptions = ActivityOptions::new(Duration::from_secs(330), 3);
pub const TOOL_RUN: Activity<ToolRun, ToolRan> = Activity::new("tool.invoke", TOOL);

/// Declares the turn and its activities.
pub fn register(registry: &mut Registry, activities: TurnActivities) {
    let activities = std::sync::Arc::new(activities);
    let a = activities.clone();
    registry.activity(&POLICY_CHECK, move |_, input| {
        let a = a.clone();
        async move { a.step(a.policy_check(input).await).await }
    });
    let a = activities.clone();
    registry.activity(&SESSION_HISTORY, move |_, who| {
        let a = a.clone();
        async move { a.step(a.history(who).await).await }
    });
    let a = activities.clone();
    registry.activity(&MODEL_COMPLETE, move |_, call| {
        let a = a.clone();
        async move { a.step(a.model(call).await).await }
    });
    let a = activities.clone();
    registry.activity(&TOOLBOX, move |_, who| {
        let a = a.clone();
        async move { a.step(a.toolbox(who).await).await }
    });
    let a = activities.clone();
    registry.activity(&RECALL, move |_, ask| {
        let a = a.clone();
        async move { a.step(a.recall(ask).await).await }
    });
    let a = activities.clone();
    registry.activity(&APPROVAL_ASK, move |info, ask| {
        let a = a.clone();
        async move { a.step(a.ask_approval(&info.workflow_id, ask).await).await }
    });
    let a = activities.clone();
    registry.activity(&TOOL_RUN, move |info, run| {
        let a = a.clone();
        async move { a.step(a.run_tool(&info.workflow_id, run).await).await }
    });
    let a = activities;
    registry.activity(&TURN_FINISH, move |info, finish| {
        let a = a.clone();
        async move { a.step(a.finish(&info.workflow_id, finish).await).await }
    });
    registry.workflow(&SESSION_TURN, workflow::session_turn);
}

/// The workflow id of turn `turn` of session `session`: stable, so a retried start is
/// the same run.
pub fn run_id(session: &str, turn: u32) -> String {
    format!("session-{session}-turn-{turn}")
}

pub const WITHHELD: &str = "[withheld: the answer broke this tenant's policy]";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TurnInput {
    pub session_id: String,
    pub turn: u32,
    pub tenant: TenantId,
    pub subject: String,
    /// What the user's request could do; the turn acts with no more.
    pub capabilities: Vec<String>,
    pub model: String,
    pub content: String,
    /// What the turn recalls before its model call. A run started before recall
    /// existed recalls nothing, so its replay takes the same steps.
    #[serde(default = "RecallSettings::off")]
    pub recall: RecallSettings,
    /// When the turn was asked for (Unix ms), for its duration; 0 in runs started
    /// before it was kept.
    #[serde(default)]
    pub started_ms: i64,
    /// The capsule the session runs as, verified when the turn was asked for: its
    /// persona leads the prompt, its tools bound what the model is offered, its
    /// limits bound the rounds and tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capsule: Option<crate::capsules::CapsuleRun>,
    /// The latest (Unix ms) its model calls may run to: an agent task's deadline, so
    /// the task's time bounds its turns, not only when each starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline_ms: Option<i64>,
}

/// What a turn recalls, from the session's metadata `memory` object: `recall` (the
/// tenant's `sessions.memory_recall` setting by default), `passages` and `memories` (how many of each, 4 by default), `scopes`
/// (memory scopes; the user's, the session's and the tenant's by default) and
/// `max_tokens` (how much of the prompt it may take, 800 by default).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecallSettings {
    pub enabled: bool,
    pub passages: u32,
    pub memories: u32,
    #[serde(default)]
    pub scopes: Vec<String>,
    pub max_tokens: u32,
}

impl Default for RecallSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            passages: 4,
            memories: 4,
            scopes: Vec::new(),
            max_tokens: 800,
        }
    }
}

impl RecallSettings {
    /// What a capsule says of recall overrides the session's defaults: whether to
    /// recall, and from which scopes.
    pub fn follow(&mut self, memory: &somagent_common::capsule::MemorySpec) {
        if let Some(recall) = memory.recall {
            self.enabled = recall;
        }
        if !memory.scopes.is_empty() {
            self.scopes.clone_from(&memory.scopes);
        }
    }

    pub fn off() -> Self {
        Self {
            enabled: false,
            ..Self::default()
        }
    }

    /// The settings a session's metadata gives, within bounds; what it does not say
    /// is the default.
    pub fn of_session(metadata: &serde_json::Value, by_default: bool) -> Self {
        let mut settings = Self {
            enabled: by_default,
            ..Self::default()
        };
        let Some(memory) = metadata.get("memory") else {
            return settings;
        };
        let number = |key: &str, most: u32, default: u32| {
            memory
                .get(key)
                .and_then(serde_json::Value::as_u64)
                .map_or(default, |n| u32::try_from(n).unwrap_or(most).min(most))
        };
        settings.enabled = memory
            .get("recall")
            .and_then(serde_json::Value::as_bool)
            .unwrap_or(by_default);
        settings.passages = number("passages", 20, settings.passages);
        settings.memories = number("memories", 20, settings.memories);
        settings.max_tokens = number("max_tokens", 8000, settings.max_tokens);
        settings.scopes = memory
            .get("scopes")
            .and_then(serde_json::Value::as_array)
            .map(|scopes| {
                scopes
                    .iter()
                    .filter_map(|s| s.as_str().map(str::to_owned))
                    .take(8)
                    .collect()
            })
            .unwrap_or_default();
        settings
    }
}

/// What the turn asks memory for.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RecallAsk {
    pub who: Who,
    pub query: String,
    pub settings: RecallSettings,
}

/// What memory gave: the context for the prompt, and the passages in it to cite.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Recalled {
    pub context: String,
    pub citations: Vec<Citation>,
}

/// Whose turn it is: every step acts for this user, with no more than these
/// capabilities.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Who {
    pub tenant: TenantId,
    pub subject: String,
    pub capabilities: Vec<String>,
    pub session_id: String,
    pub turn: u32,
    /// When the turn was asked for (Unix ms); 0 when unknown.
    #[serde(default)]
    pub started_ms: i64,
}

impl Who {
    pub fn of(input: &TurnInput) -> Self {
        Self {
            tenant: input.tenant.clone(),
            subject: input.subject.clone(),
            capabilities: input.capabilities.clone(),
            session_id: input.session_id.clone(),
            started_ms: input.started_ms,
            turn: input.turn,
        }
    }
}

/// Which text policy judges.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Checked {
    /// A model's answer, before it is kept. (A session's prompts are judged before a
    /// turn starts.)
    Completion,
    /// Instructions a workflow gives an agent: a project's goal, a deliverable.
    Prompt,
    /// A tool a workflow means to let an agent use; the text is the tool's name.
    Tool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PolicyCheck {
    pub who: Who,
    pub action: Checked,
    pub text: String,
}

// The shapes the turn shares with its watchers and with slm.
pub use somagent_common::turn::{
    Citation, PolicyDecision as Decision, ToolCall, TurnUsage as Usage,
};

/// A message of the transcript, as the model sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    pub role: String,
    pub content: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub tool_call_id: String,
}

impl Message {
    fn new(role: &str, content: impl Into<String>) -> Self {
        Self {
            role: role.into(),
            content: content.into(),
            tool_calls: Vec::new(),
            tool_call_id: String::new(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModelCall {
    pub who: Who,
    pub model: String,
    pub messages: Vec<Message>,
    pub round: u32,
    /// The OpenAI `tools` the model may call.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<serde_json::Value>,
    /// The OpenAI `response_format` the answer takes: a capsule's output schema.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_format: Option<serde_json::Value>,
    /// Past this (Unix ms) the call ends, failed: the turn's deadline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline_ms: Option<i64>,
}

/// The tools a turn offers its model, fixed when the turn starts (a tool added while
/// it runs is offered from the next turn on), and the turn's limits on using them.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Toolbox {
    /// The OpenAI `tools` array.
    pub definitions: Vec<serde_json::Value>,
    pub functions: Vec<Function>,
    pub max_rounds: u32,
    pub approval_timeout_secs: u64,
    /// The most of one tool result the model gets, in bytes.
    pub result_max_bytes: usize,
}

impl Toolbox {
    pub fn function(&self, name: &str) -> Option<&Function> {
        self.functions.iter().find(|f| f.name == name)
    }
}

/// A function the model may call: one action of one tool.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Function {
    /// As the model calls it: `<tool>__<action>`, within OpenAI's `[A-Za-z0-9_-]{1,64}`.
    pub name: String,
    pub tool: String,
    pub action: String,
    pub requires_approval: bool,
}

/// A call to put before a person.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Ask {
    pub who: Who,
    pub call: ToolCall,
    pub function: Function,
    pub round: u32,
    pub timeout_secs: u64,
}

/// When the approval stops waiting (unix milliseconds).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Asked {
    pub expires_at_ms: i64,
}

/// A tool call to run: unknown to the toolbox (`function` absent), refused by a person,
/// or to invoke.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ToolRun {
    pub who: Who,
    pub call: ToolCall,
    pub function: Option<Function>,
    /// For a call that required approval: how that went.
    pub approval: Option<Consent>,
    pub round: u32,
    pub result_max_bytes: usize,
}

/// How a call's approval went. (Not an `Option` within an `Option`: JSON would read a
/// timed-out approval as no approval at all.)
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Consent {
    Answered(crate::domain::approval::Verdict),
    TimedOut,
}

/// What the model is told of the call.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ToolRan {
    pub content: String,
    pub ok: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModelReply {
    pub content: String,
    pub tool_calls: Vec<ToolCall>,
    pub usage: Usage,
    /// slm's output guard stopped the answer: it is withheld whatever else is said.
    pub filtered: bool,
}

/// Turns by how they ended, on the orchestrator's `/metrics`.
#[derive(Clone)]
pub struct TurnMetrics {
    ended: Family<OutcomeLabels, Counter>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

impl TurnMetrics {
    pub fn register(metrics: &somagent_common::metrics::Metrics) -> Self {
        let ended = Family::default();
        metrics.register(
            "turns_ended",
            "Session turns that ended, by outcome (completed, withheld, failed)",
            ended.clone(),
        );
        Self { ended }
    }

    fn ended(&self, outcome: TurnOutcome) {
        self.ended
            .get_or_create(&OutcomeLabels {
                outcome: outcome.as_str(),
            })
            .inc();
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TurnOutcome {
    Completed,
    Withheld,
    Failed,
}

impl TurnOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            TurnOutcome::Completed => "completed",
            TurnOutcome::Withheld => "withheld",
            TurnOutcome::Failed => "failed",
        }
    }
}

/// The turn's last step: its messages stored, its end announced.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Finish {
    pub who: Who,
    pub outcome: TurnOutcome,
    pub decision: Option<Decision>,
    pub error: Option<ActivityError>,
    pub messages: Vec<Message>,
    pub usage: Usage,
    /// The passages the model was given, for the answer to cite.
    #[serde(default)]
    pub citations: Vec<Citation>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Finished {
    pub persisted: usize,
}

/// How the turn ended: the run's result.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TurnResult {
    pub outcome: TurnOutcome,
    #[serde(default)]
    pub content: String,
    #[serde(default)]
    pub usage: Usage,
    #[serde(default)]
    pub decision: Option<Decision>,
}
