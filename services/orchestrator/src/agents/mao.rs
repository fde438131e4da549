//! `mao_run`: directives run as agents, in order, at once, or as a DAG; outputs passed
//! along the edges; artifacts bundled. Only the context's steps do I/O.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use somagent_workflows::{ActivityError, Ctx};

use super::{
    Agent, BUNDLE, Bundle, Initiator, RUN_EVENT, RunEvent, TaskInput, TaskOutcome, TaskStatus,
    run_batch,
};
use crate::domain::plan::layers;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    Sequential,
    Parallel,
    Dag,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Directive {
    pub id: String,
    pub agent: Agent,
    pub goal: String,
    pub budget_tokens: Option<u64>,
    pub timeout_secs: Option<u64>,
    pub retries: u32,
    /// What it waits for (in `dag` mode; in `sequential` mode, the directive before).
    pub depends_on: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MaoInput {
    pub who: Initiator,
    pub run_id: String,
    pub name: String,
    pub mode: Mode,
    pub parallelism: u32,
    pub model: String,
    pub directives: Vec<Directive>,
}

/// A directive as it goes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskState {
    pub id: String,
    /// `waiting`, `running`, `completed`, `failed`, `budget_exhausted`, `timed_out`,
    /// `skipped` (something it needs failed).
    pub state: String,
    pub depends_on: Vec<String>,
    pub attempts: u32,
    pub tokens: u64,
    pub session_id: Option<String>,
    pub output: Option<String>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MaoState {
    pub run_id: String,
    pub name: String,
    pub mode: Mode,
    pub status: String,
    pub tasks: Vec<TaskState>,
    pub tokens: u64,
    pub artifacts: Vec<String>,
}

pub fn state_name(status: TaskStatus) -> &'static str {
    match status {
        TaskStatus::Completed => "completed",
        TaskStatus::Failed => "failed",
        TaskStatus::BudgetExhausted => "budget_exhausted",
        TaskStatus::TimedOut => "timed_out",
    }
}

/// A task's first message: its goal, and what the tasks it waited for produced.
pub fn with_inputs(goal: &str, inputs: &[(&str, &str)]) -> String {
    if inputs.is_empty() {
        return goal.to_owned();
    }
    let mut text = format!("{goal}\n\nWhat earlier agents produced:");
    for (id, output) in inputs {
        text.push_str(&format!("\n\n## {id}\n{output}"));
    }
    text
}

pub async fn mao_run(ctx: Ctx, input: MaoInput) -> Result<Value, ActivityError> {
    let mut state = MaoState {
        run_id: input.run_id.clone(),
        name: input.name.clone(),
        mode: input.mode,
        status: "running".into(),
        tasks: input
            .directives
            .iter()
            .map(|d| TaskState {
                id: d.id.clone(),
                state: "waiting".into(),
                depends_on: d.depends_on.clone(),
                attempts: 0,
                tokens: 0,
                session_id: None,
                output: None,
                error: None,
            })
            .collect(),
        tokens: 0,
        artifacts: Vec::new(),
    };
    ctx.publish(&state);
    let mut seq = 0;
    match run(&ctx, &input, &mut state, &mut seq).await {
        Ok(()) => Ok(serde_json::to_value(&state).unwrap_or_default()),
        Err(e) => {
            state.status = if e.is_cancelled() {
                "cancelled"
            } else {
                "failed"
            }
            .into();
            let cleanup = ctx.cleanup();
            cleanup.publish(&state);
            seq += 1;
            cleanup
                .activity(
                    &RUN_EVENT,
                    &event(&input, seq, &format!("mao.{}", state.status), &state),
                )
                .await?;
            Err(e)
        }
    }
}

fn event(input: &MaoInput, seq: u32, kind: &str, state: &MaoState) -> RunEvent {
    RunEvent {
        who: input.who.clone(),
        run: input.run_id.clone(),
        seq,
        kind: kind.to_owned(),
        data: json!({
            "run_id": input.run_id, "title": format!("Multi-agent run “{}” {}", input.name, state.status),
            "status": state.status, "tokens": state.tokens,
            "tasks": state.tasks.iter().map(|t| json!({"id": t.id, "state": t.state})).collect::<Vec<_>>(),
        }),
    }
}

async fn run(
    ctx: &Ctx,
    input: &MaoInput,
    state: &mut MaoState,
    seq: &mut u32,
) -> Result<(), ActivityError> {
    *seq += 1;
    ctx.activity(&RUN_EVENT, &event(input, *seq, "mao.started", state))
        .await?;
    let edges: Vec<(String, Vec<String>)> = input
        .directives
        .iter()
        .map(|d| (d.id.clone(), d.depends_on.clone()))
        .collect();
    // Checked when the run was asked for; a cycle cannot be here.
    let waves = layers(&edges).map_err(|cycle| {
        ActivityError::fatal(
            "validation_failed",
            format!("a cycle through {}", cycle.join(", ")),
        )
    })?;
    for wave in waves {
        let runnable: Vec<&str> = wave
            .iter()
            .map(String::as_str)
            .filter(|id| {
                let task = state.tasks.iter().find(|t| t.id == *id);
                task.is_some_and(|t| {
                    t.depends_on.iter().all(|dep| {
                        state
                            .tasks
                            .iter()
                            .any(|o| o.id == *dep && o.state == "completed")
                    })
                })
            })
            .collect();
        for id in &wave {
            if !runnable.contains(&id.as_str())
                && let Some(task) = state.tasks.iter_mut().find(|t| t.id == *id)
            {
                task.state = "skipped".into();
                task.error = Some("something it needs did not complete".into());
            }
        }
        for batch in runnable.chunks(input.parallelism.max(1) as usize) {
            let mut children = Vec::new();
            for id in batch {
                let Some(directive) = input.directives.iter().find(|d| d.id == *id) else {
                    continue;
                };
                let inputs: Vec<(&str, &str)> = directive
                    .depends_on
                    .iter()
                    .filter_map(|dep| {
                        state
                            .tasks
                            .iter()
                            .find(|t| t.id == *dep)
                            .and_then(|t| t.output.as_deref().map(|o| (dep.as_str(), o)))
                    })
                    .collect();
                children.push((
                    format!("{}-task-{}", input.run_id, directive.id),
                    TaskInput {
                        who: input.who.clone(),
                        parent: input.run_id.clone(),
                        task_id: directive.id.clone(),
                        agent: directive.agent.clone(),
                        model: input.model.clone(),
                        content: with_inputs(&directive.goal, &inputs),
                        budget_tokens: directive.budget_tokens,
                        timeout_secs: directive.timeout_secs,
                        retries: directive.retries,
                        review: None,
                    },
                ));
                if let Some(task) = state.tasks.iter_mut().find(|t| t.id == *id) {
                    task.state = "running".into();
                }
            }
            ctx.publish(&*state);
            let outcomes = run_batch(ctx, &children).await;
            for ((_, task_input), outcome) in children.iter().zip(outcomes) {
                let outcome: TaskOutcome = outcome?;
                state.tokens += outcome.tokens;
                if let Some(task) = state.tasks.iter_mut().find(|t| t.id == task_input.task_id) {
                    task.state = state_name(outcome.status).into();
                    task.attempts = outcome.attempts;
                    task.tokens = outcome.tokens;
                    task.session_id = Some(outcome.session_id.clone());
                    task.output = Some(outcome.output.clone());
                    task.error = outcome.error.clone();
                }
            }
            ctx.publish(&*state);
            *seq += 1;
            ctx.activity(&RUN_EVENT, &event(input, *seq, "mao.progress", state))
                .await?;
        }
    }
    let mut files: Vec<(String, String)> = state
        .tasks
        .iter()
        .filter_map(|t| {
            t.output
                .as_ref()
                .map(|o| (format!("{}.md", t.id), o.clone()))
        })
        .collect();
    files.push((
        "summary.json".into(),
        serde_json::to_string_pretty(&*state).unwrap_or_default(),
    ));
    state.artifacts = ctx
        .activity(
            &BUNDLE,
            &Bundle {
                who: input.who.clone(),
                prefix: format!("mao/{}", input.run_id),
                files,
            },
        )
        .await?;
    state.status = if state.tasks.iter().all(|t| t.state == "completed") {
        "completed".into()
    } else {
        "failed".into()
    };
    ctx.publish(&*state);
    *seq += 1;
    ctx.activity(
        &RUN_EVENT,
        &event(input, *seq, &format!("mao.{}", state.status), state),
    )
    .await?;
    Ok(())
}
