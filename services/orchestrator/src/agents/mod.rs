//! Agents at work beyond one session: multi-agent runs (MAO) and KAMACHIQ projects, as
//! durable workflows over the session turn.
//!
//! - `agent_task` (`task`): one agent's piece of work as a child workflow: its capsule
//!   (or an inline persona) resolved and verified, a session of its own, a turn (a
//!   child `session_turn`: tools, memory, policy, metering) retried on failure, and,
//!   when reviewed, the reviewer's score and revisions up to a bound; within a token
//!   budget and a deadline checked before each turn.
//! - `mao_run` (`mao`): directives in `sequential`, `parallel` or `dag` order, each an
//!   `agent_task`, outputs passed along the edges, a batch of at most `parallelism`
//!   at a time, artifacts bundled to object storage.
//! - `kamachiq_project` (`project`): policy on the goal → the planner capsule's plan,
//!   repaired when it does not check → governance per deliverable (blocked ones wait
//!   for a requeue) → optional approval → waves of `agent_task`s, each reviewed →
//!   deliverables, release notes and the governance report bundled; events and
//!   notifications at every stage.
//!
//! `activities` does their I/O; `runs` is the use-case layer the API calls.

mod activities;
pub mod live;
mod mao;
mod project;
pub mod records;
pub mod runs;
mod task;

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use somagent_common::tenant::TenantId;
use somagent_workflows::{Activity, ActivityOptions, Ctx, Registry, Workflow};

pub use activities::AgentActivities;

use crate::capsules::CapsuleRun;
use crate::domain::plan::Review;

pub const AGENT_TASK: Workflow<TaskInput, TaskOutcome> = Workflow::new("agent_task");
pub const MAO_RUN: Workflow<mao::MaoInput, Value> = Workflow::new("mao_run");
pub const PROJECT: Workflow<project::ProjectInput, Value> = Workflow::new("kamachiq_project");

const QUICK: ActivityOptions = ActivityOptions::new(Duration::from_secs(15), 3);

pub const CAPSULE_RESOLVE: Activity<Resolve, CapsuleRun> = Activity::new("capsule.resolve", QUICK);
pub const AGENT_BEGIN: Activity<Begin, u32> = Activity::new("agent.begin", QUICK);
pub const RUN_EVENT: Activity<RunEvent, ()> = Activity::new("run.event", QUICK);
pub const BUNDLE: Activity<Bundle, Vec<String>> = Activity::new(
    "run.bundle",
    ActivityOptions::new(Duration::from_secs(60), 3),
);

/// Who a run acts for: the person who started it, with what their request could do.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Initiator {
    pub tenant: TenantId,
    pub subject: String,
    pub capabilities: Vec<String>,
}

/// Resolves (and verifies) a capsule for the initiator's tenant.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Resolve {
    pub who: Initiator,
    pub capsule: String,
}

/// Opens (once) a task's session and its turn `turn` with `content`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Begin {
    pub who: Initiator,
    pub session_id: String,
    pub turn: u32,
    pub capsule_id: String,
    pub model: String,
    pub content: String,
    pub metadata: Value,
}

/// An event of a run on `workflow.events`, its id fixed by the run and `seq` so a
/// retried step publishes it once.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunEvent {
    pub who: Initiator,
    pub run: String,
    pub seq: u32,
    pub kind: String,
    pub data: Value,
}

/// Files of a run to put in object storage under `prefix`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Bundle {
    pub who: Initiator,
    pub prefix: String,
    pub files: Vec<(String, String)>,
}

/// What agent does a task: an installed capsule (tools narrowed or named by the task),
/// or a persona given inline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type")]
pub enum Agent {
    Capsule {
        id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        tools: Option<Vec<String>>,
    },
    Persona {
        persona: String,
        #[serde(default)]
        tools: Vec<String>,
    },
}

/// How a task's work is reviewed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReviewSpec {
    pub reviewer: String,
    pub title: String,
    pub criteria: Vec<String>,
    pub pass_score: u32,
    pub max_revisions: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskInput {
    pub who: Initiator,
    /// The run (project or MAO) the task belongs to.
    pub parent: String,
    pub task_id: String,
    pub agent: Agent,
    /// A model profile; the capsule's, else the tenant's default, when empty.
    pub model: String,
    pub content: String,
    pub budget_tokens: Option<u64>,
    pub timeout_secs: Option<u64>,
    /// Further tries of a turn that fails.
    pub retries: u32,
    pub review: Option<ReviewSpec>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskStatus {
    Completed,
    Failed,
    BudgetExhausted,
    TimedOut,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskOutcome {
    pub status: TaskStatus,
    pub output: String,
    pub score: Option<u32>,
    /// Turns of the agent (first tries, retries and revisions).
    pub attempts: u32,
    pub revisions: u32,
    /// Tokens (prompt and completion) its turns and reviews spent.
    pub tokens: u64,
    pub cost_micros: i64,
    pub session_id: String,
    pub reviews: Vec<Review>,
    pub error: Option<String>,
}

/// The id of a session a run opens for one of its agents: fixed by the run, so a
/// replayed or retried step opens the same one.
pub fn session_for(run: &str, purpose: &str) -> String {
    uuid::Uuid::new_v5(
        &uuid::Uuid::NAMESPACE_OID,
        format!("{run}/{purpose}").as_bytes(),
    )
    .to_string()
}

/// Runs `tasks` as child `agent_task`s at once (started in this order, so a replay
/// numbers them alike) and waits for every one.
async fn run_batch(
    ctx: &Ctx,
    tasks: &[(String, TaskInput)],
) -> Vec<Result<TaskOutcome, somagent_workflows::ActivityError>> {
    futures::future::join_all(
        tasks
            .iter()
            .map(|(id, input)| ctx.child(&AGENT_TASK, id, input)),
    )
    .await
}

/// The time now, in Unix ms, as the run recorded it.
async fn now_ms(ctx: &Ctx) -> Result<i64, somagent_workflows::ActivityError> {
    let now = ctx.now().await?;
    Ok(i64::try_from(now.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX))
}

/// Declares the workflows and their activities.
pub fn register(registry: &mut Registry, activities: AgentActivities) {
    let a = std::sync::Arc::new(activities);
    let resolve = a.clone();
    registry.activity(&CAPSULE_RESOLVE, move |_, input| {
        let a = resolve.clone();
        async move { a.resolve(input).await }
    });
    let begin = a.clone();
    registry.activity(&AGENT_BEGIN, move |_, input| {
        let a = begin.clone();
        async move { a.begin(input).await }
    });
    let event = a.clone();
    registry.activity(&RUN_EVENT, move |_, input| {
        let a = event.clone();
        async move { a.event(input).await }
    });
    let bundle = a;
    registry.activity(&BUNDLE, move |_, input| {
        let a = bundle.clone();
        async move { a.bundle(input).await }
    });
    registry.workflow(&AGENT_TASK, task::agent_task);
    registry.workflow(&MAO_RUN, mao::mao_run);
    registry.workflow(&PROJECT, project::kamachiq_project);
}
