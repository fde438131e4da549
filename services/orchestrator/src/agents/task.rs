//! `agent_task`: one agent's piece of work. Only the context's steps do I/O.

use serde_json::json;
use somagent_common::capsule::{Definition, Kind, Limits, MemorySpec, render};
use somagent_workflows::{ActivityError, Ctx};

use super::{
    AGENT_BEGIN, Agent, Begin, CAPSULE_RESOLVE, Resolve, ReviewSpec, TaskInput, TaskOutcome,
    TaskStatus, now_ms, session_for,
};
use crate::capsules::CapsuleRun;
use crate::domain::plan::{Review, parse_review};
use crate::turn::{self, RecallSettings, SESSION_TURN, TurnInput, TurnOutcome};

/// What a revision asks when the capsule states no `revise` prompt.
const REVISE: &str = "A reviewer scored your work {{score}}/100 and said:\n{{notes}}\n\nRevise it so it meets every criterion. Answer with the whole revised work.";
/// What a review asks when the reviewer states no `review` prompt.
const REVIEW: &str = "Deliverable: {{title}}\n\nAcceptance criteria:\n{{acceptance_criteria}}\n\nWork submitted:\n{{output}}\n\nAnswer with one JSON object: {\"score\": 0-100, \"notes\": \"...\"}";

/// An agent's session and how far it got.
pub(super) struct Seat {
    pub session_id: String,
    pub capsule_id: String,
    pub capsule: CapsuleRun,
    pub turns: u32,
    /// The latest (Unix ms) this seat's turns may run to: past it a model call ends.
    pub deadline_ms: Option<i64>,
}

/// Whose turns a seat takes, on which model, for which run and task.
pub(super) struct Call<'a> {
    pub who: &'a super::Initiator,
    pub model: &'a str,
    pub run: &'a str,
    pub task: &'a str,
}

/// What one turn gave: the answer or why there is none, and what it spent.
pub(super) struct Turned {
    pub answer: Result<String, String>,
    pub tokens: u64,
    pub cost_micros: i64,
}

pub async fn agent_task(ctx: Ctx, input: TaskInput) -> Result<TaskOutcome, ActivityError> {
    let who = &input.who;
    let capsule = match &input.agent {
        Agent::Capsule { id, tools } => {
            let mut run = ctx
                .activity(
                    &CAPSULE_RESOLVE,
                    &Resolve {
                        who: who.clone(),
                        capsule: id.clone(),
                    },
                )
                .await?;
            if let Some(tools) = tools {
                run.definition.tools.clone_from(tools);
            }
            run
        }
        Agent::Persona { persona, tools } => inline(persona, tools),
    };
    let capsule_id = match &input.agent {
        Agent::Capsule { id, .. } => id.clone(),
        Agent::Persona { .. } => String::new(),
    };
    let deadline = match input
        .timeout_secs
        .or(capsule.definition.limits.timeout_secs)
    {
        Some(secs) => {
            Some(now_ms(&ctx).await? + i64::try_from(secs.saturating_mul(1000)).unwrap_or(i64::MAX))
        }
        None => None,
    };
    let budget = match (input.budget_tokens, capsule.definition.limits.max_tokens) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    let mut outcome = TaskOutcome {
        status: TaskStatus::Completed,
        output: String::new(),
        score: None,
        attempts: 0,
        revisions: 0,
        tokens: 0,
        cost_micros: 0,
        session_id: session_for(ctx.workflow_id(), "agent"),
        reviews: Vec::new(),
        error: None,
    };
    let mut worker = Seat {
        session_id: outcome.session_id.clone(),
        capsule_id,
        capsule,
        turns: 0,
        deadline_ms: deadline,
    };
    // The work, retried while a turn fails.
    let mut content = input.content.clone();
    loop {
        if let Some(stop) = limit_reached(&ctx, &outcome, budget, deadline).await? {
            return Ok(stopped(outcome, stop));
        }
        outcome.attempts += 1;
        match turn_of(
            &ctx,
            &input,
            &mut worker,
            &content,
            budget.map(|b| b.saturating_sub(outcome.tokens)),
            &mut outcome,
        )
        .await?
        {
            Ok(answer) => {
                outcome.output = answer;
                break;
            }
            Err(why) if outcome.attempts <= input.retries => {
                content = format!(
                    "{}\n\n(The previous attempt failed: {why}. Try again.)",
                    input.content
                );
            }
            Err(why) => {
                outcome.status = TaskStatus::Failed;
                outcome.error = Some(why);
                return Ok(outcome);
            }
        }
    }
    let Some(spec) = &input.review else {
        return Ok(outcome);
    };
    let reviewer = ctx
        .activity(
            &CAPSULE_RESOLVE,
            &Resolve {
                who: who.clone(),
                capsule: spec.reviewer.clone(),
            },
        )
        .await?;
    let mut judge = Seat {
        session_id: session_for(ctx.workflow_id(), "review"),
        capsule_id: spec.reviewer.clone(),
        capsule: reviewer,
        turns: 0,
        deadline_ms: deadline,
    };
    loop {
        if let Some(stop) = limit_reached(&ctx, &outcome, budget, deadline).await? {
            return Ok(stopped(outcome, stop));
        }
        let review = review_of(&ctx, &input, spec, &mut judge, &mut outcome).await?;
        outcome.score = Some(review.score);
        outcome.reviews.push(review.clone());
        ctx.publish(
            &json!({ "step": "reviewed", "score": review.score, "revisions": outcome.revisions }),
        );
        if review.score >= spec.pass_score {
            return Ok(outcome);
        }
        if outcome.revisions >= spec.max_revisions {
            outcome.status = TaskStatus::Failed;
            outcome.error = Some(format!(
                "scored {} (pass: {}) after {} revisions",
                review.score, spec.pass_score, outcome.revisions
            ));
            return Ok(outcome);
        }
        if let Some(stop) = limit_reached(&ctx, &outcome, budget, deadline).await? {
            return Ok(stopped(outcome, stop));
        }
        let revise = worker
            .capsule
            .definition
            .prompts
            .get("revise")
            .map_or(REVISE, String::as_str)
            .to_owned();
        let ask = render(
            &revise,
            &json!({"score": review.score, "notes": review.notes}),
        );
        outcome.revisions += 1;
        outcome.attempts += 1;
        match turn_of(
            &ctx,
            &input,
            &mut worker,
            &ask,
            budget.map(|b| b.saturating_sub(outcome.tokens)),
            &mut outcome,
        )
        .await?
        {
            Ok(answer) => outcome.output = answer,
            Err(why) => {
                outcome.status = TaskStatus::Failed;
                outcome.error = Some(format!("the revision failed: {why}"));
                return Ok(outcome);
            }
        }
    }
}

/// A persona given inline, run like a capsule of the request's own (unsigned: it is
/// the caller's own text, under the caller's own rights).
fn inline(persona: &str, tools: &[String]) -> CapsuleRun {
    CapsuleRun {
        version: String::new(),
        attestation_hash: String::new(),
        definition: Definition {
            id: "inline".into(),
            version: "0.0.0".into(),
            kind: Kind::Task,
            name: "inline persona".into(),
            summary: String::new(),
            category: String::new(),
            tags: Vec::new(),
            persona: persona.to_owned(),
            model: None,
            tools: tools.to_vec(),
            memory: MemorySpec::default(),
            input_schema: None,
            output_schema: None,
            prompt_template: None,
            limits: Limits::default(),
            prompts: Default::default(),
            heuristics: Default::default(),
            project: None,
        },
    }
}

/// Why the task stops before its next turn, if it does: its budget spent or its
/// deadline passed.
async fn limit_reached(
    ctx: &Ctx,
    outcome: &TaskOutcome,
    budget: Option<u64>,
    deadline: Option<i64>,
) -> Result<Option<TaskStatus>, ActivityError> {
    if budget.is_some_and(|b| outcome.tokens >= b) {
        return Ok(Some(TaskStatus::BudgetExhausted));
    }
    if let Some(deadline) = deadline
        && now_ms(ctx).await? >= deadline
    {
        return Ok(Some(TaskStatus::TimedOut));
    }
    Ok(None)
}

fn stopped(mut outcome: TaskOutcome, status: TaskStatus) -> TaskOutcome {
    outcome.error = Some(match status {
        TaskStatus::BudgetExhausted => {
            format!("its token budget is spent ({} tokens)", outcome.tokens)
        }
        _ => "its time ran out".to_owned(),
    });
    outcome.status = status;
    outcome
}

impl Seat {
    /// One turn of this seat's session with `content`, its tokens bounded by
    /// `tokens_left`. Errors are the run's own (cancelled, or a step that cannot go
    /// on); a turn that fails is an `answer` of `Err`.
    pub(super) async fn ask(
        &mut self,
        ctx: &Ctx,
        call: &Call<'_>,
        content: &str,
        tokens_left: Option<u64>,
    ) -> Result<Turned, ActivityError> {
        self.turns += 1;
        let turn_no = ctx
            .activity(
                &AGENT_BEGIN,
                &Begin {
                    who: call.who.clone(),
                    session_id: self.session_id.clone(),
                    turn: self.turns,
                    capsule_id: self.capsule_id.clone(),
                    model: call.model.to_owned(),
                    content: content.to_owned(),
                    metadata: json!({ "run": call.run, "task": call.task }),
                },
            )
            .await?;
        let mut capsule = self.capsule.clone();
        if let Some(left) = tokens_left {
            capsule.definition.limits.max_tokens = Some(
                capsule
                    .definition
                    .limits
                    .max_tokens
                    .map_or(left, |m| m.min(left)),
            );
        }
        let mut recall = RecallSettings::off();
        recall.follow(&capsule.definition.memory);
        let model = if call.model.is_empty() {
            capsule.definition.model.clone().unwrap_or_default()
        } else {
            call.model.to_owned()
        };
        let turn_input = TurnInput {
            session_id: self.session_id.clone(),
            turn: turn_no,
            tenant: call.who.tenant.clone(),
            subject: call.who.subject.clone(),
            capabilities: call.who.capabilities.clone(),
            model,
            content: content.to_owned(),
            recall,
            started_ms: now_ms(ctx).await?,
            capsule: Some(capsule),
            deadline_ms: self.deadline_ms,
        };
        let run = turn::run_id(&self.session_id, turn_no);
        match ctx.child(&SESSION_TURN, &run, &turn_input).await {
            Ok(result) => Ok(Turned {
                tokens: u64::try_from(result.usage.prompt_tokens + result.usage.completion_tokens)
                    .unwrap_or(0),
                cost_micros: result.usage.cost_micros,
                answer: match result.outcome {
                    TurnOutcome::Completed => Ok(result.content),
                    TurnOutcome::Withheld => Err("the answer broke the tenant's policy".into()),
                    TurnOutcome::Failed => Err("the turn failed".into()),
                },
            }),
            Err(e) if e.is_cancelled() => Err(e),
            Err(e) => Ok(Turned {
                answer: Err(e.message),
                tokens: 0,
                cost_micros: 0,
            }),
        }
    }
}

/// One turn of `seat` for the task, its spend added to the outcome.
async fn turn_of(
    ctx: &Ctx,
    input: &TaskInput,
    seat: &mut Seat,
    content: &str,
    tokens_left: Option<u64>,
    outcome: &mut TaskOutcome,
) -> Result<Result<String, String>, ActivityError> {
    let call = Call {
        who: &input.who,
        model: &input.model,
        run: &input.parent,
        task: &input.task_id,
    };
    let turned = seat.ask(ctx, &call, content, tokens_left).await?;
    outcome.tokens += turned.tokens;
    outcome.cost_micros += turned.cost_micros;
    Ok(turned.answer)
}

/// The reviewer's verdict on the current output; an answer that holds none is asked
/// for once more, then counts as a score of 0.
async fn review_of(
    ctx: &Ctx,
    input: &TaskInput,
    spec: &ReviewSpec,
    judge: &mut Seat,
    outcome: &mut TaskOutcome,
) -> Result<Review, ActivityError> {
    let template = judge
        .capsule
        .definition
        .prompts
        .get("review")
        .map_or(REVIEW, String::as_str)
        .to_owned();
    let ask = render(
        &template,
        &json!({"title": spec.title, "acceptance_criteria": spec.criteria, "output": outcome.output}),
    );
    let mut answer = turn_of(ctx, input, judge, &ask, None, outcome).await?;
    if let Ok(text) = &answer
        && let Some(review) = parse_review(text)
    {
        return Ok(review);
    }
    answer = turn_of(
        ctx,
        input,
        judge,
        "Answer with the JSON object alone: {\"score\": 0-100, \"notes\": \"...\"}",
        None,
        outcome,
    )
    .await?;
    Ok(answer
        .ok()
        .and_then(|text| parse_review(&text))
        .unwrap_or_else(|| Review {
            score: 0,
            notes: "the reviewer's answer held no score".into(),
        }))
}
