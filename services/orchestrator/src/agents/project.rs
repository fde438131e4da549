//! `kamachiq_project`: from a goal to reviewed deliverables. Only the context's steps
//! do I/O; every decision here is made on what they returned, so a replay decides
//! the same.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use somagent_common::capsule::render;
use somagent_workflows::{ActivityError, Ctx};

use super::mao::{state_name, with_inputs};
use super::task::{Call, Seat};
use super::{
    Agent, BUNDLE, Bundle, CAPSULE_RESOLVE, Initiator, RUN_EVENT, Resolve, ReviewSpec, RunEvent,
    TaskInput, TaskOutcome, TaskStatus, now_ms, run_batch, session_for,
};
use crate::domain::plan::{Deliverable, Review, parse_plan};
use crate::turn::{Checked, POLICY_CHECK, PolicyCheck, Who};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProjectInput {
    pub who: Initiator,
    pub project_id: String,
    pub goal: String,
    pub constraints: Vec<String>,
    /// The model every agent of the project uses; each capsule's own (or the tenant's
    /// default) when empty.
    pub model: String,
    pub budget_tokens: u64,
    pub parallelism: u32,
    pub approval: bool,
    pub approval_timeout_secs: u64,
    pub requeue_timeout_secs: u64,
    pub max_deliverables: Option<u32>,
    pub pass_score: Option<u32>,
    pub max_revisions: Option<u32>,
    pub planner: String,
    pub reviewer: String,
    pub worker: String,
}

/// A person's answer to a plan waiting for approval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApprovalAnswer {
    pub approved: bool,
    pub by: String,
    #[serde(default)]
    pub notes: String,
}

/// A blocked deliverable, fixed and put back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Requeue {
    pub deliverable: String,
    pub by: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub acceptance_criteria: Option<Vec<String>>,
    #[serde(default)]
    pub tools: Option<Vec<String>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeliverableState {
    #[serde(flatten)]
    pub plan: Deliverable,
    /// `planned`, `blocked`, `running`, `completed`, `failed`, `budget_exhausted`,
    /// `timed_out`, `skipped`, `cancelled`.
    pub state: String,
    pub wave: Option<u32>,
    pub reason: Option<String>,
    pub score: Option<u32>,
    pub attempts: u32,
    pub revisions: u32,
    pub tokens: u64,
    pub budget_tokens: Option<u64>,
    pub session_id: Option<String>,
    pub output: Option<String>,
    pub reviews: Vec<Review>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Budget {
    pub limit: u64,
    /// Held for the deliverables running now.
    pub reserved: u64,
    pub spent: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Planning {
    pub attempts: u32,
    /// Why each rejected answer was not a plan.
    pub rejected: Vec<Vec<String>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApprovalState {
    /// `waiting`, `approved`, `rejected`, `timed_out`.
    pub status: String,
    pub by: Option<String>,
    pub notes: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProjectState {
    pub project_id: String,
    pub goal: String,
    pub initiator: String,
    /// `planning`, `awaiting_approval`, `running`, `waiting_for_requeue`, then
    /// `completed`, `partial`, `budget_exhausted`, `blocked`, `rejected`, `failed` or
    /// `cancelled`.
    pub status: String,
    pub deliverables: Vec<DeliverableState>,
    pub waves: Vec<Vec<String>>,
    pub budget: Budget,
    pub planning: Planning,
    pub approval: Option<ApprovalState>,
    pub decisions: Vec<Value>,
    pub bundle: Vec<String>,
    pub error: Option<String>,
}

/// How the project ended, when it ended on its own.
struct Ending {
    status: &'static str,
    error: Option<String>,
}

impl Ending {
    fn ok(status: &'static str) -> Self {
        Self {
            status,
            error: None,
        }
    }

    fn because(status: &'static str, why: impl Into<String>) -> Self {
        Self {
            status,
            error: Some(why.into()),
        }
    }
}

struct Project<'a> {
    ctx: &'a Ctx,
    input: &'a ProjectInput,
    state: ProjectState,
    seq: u32,
}

pub async fn kamachiq_project(ctx: Ctx, input: ProjectInput) -> Result<Value, ActivityError> {
    let mut project = Project {
        ctx: &ctx,
        input: &input,
        state: ProjectState {
            project_id: input.project_id.clone(),
            goal: input.goal.clone(),
            initiator: input.who.subject.clone(),
            status: "planning".into(),
            deliverables: Vec::new(),
            waves: Vec::new(),
            budget: Budget {
                limit: input.budget_tokens,
                ..Budget::default()
            },
            planning: Planning::default(),
            approval: None,
            decisions: Vec::new(),
            bundle: Vec::new(),
            error: None,
        },
        seq: 0,
    };
    match project.run().await {
        Ok(ending) => {
            project.state.status = ending.status.into();
            project.state.error = ending.error.clone();
            ctx.publish(&project.state);
            let kind = match ending.status {
                "completed" | "partial" => "completed",
                other => other,
            };
            project.event(&ctx, &format!("project.{kind}")).await?;
            match ending.status {
                "blocked" | "rejected" | "failed" => Err(ActivityError::fatal(
                    if ending.status == "blocked" {
                        "forbidden"
                    } else {
                        "failed"
                    },
                    ending
                        .error
                        .unwrap_or_else(|| format!("the project was {}", ending.status)),
                )),
                _ => Ok(serde_json::to_value(&project.state).unwrap_or_default()),
            }
        }
        Err(e) => {
            let status = if e.is_cancelled() {
                "cancelled"
            } else {
                "failed"
            };
            project.state.status = status.into();
            project.state.error = (!e.is_cancelled()).then(|| e.message.clone());
            project.state.budget.reserved = 0;
            for d in &mut project.state.deliverables {
                if d.state == "running" {
                    d.state = "cancelled".into();
                }
            }
            let cleanup = ctx.cleanup();
            cleanup.publish(&project.state);
            project
                .event(&cleanup, &format!("project.{status}"))
                .await?;
            Err(e)
        }
    }
}

impl Project<'_> {
    fn who(&self) -> Who {
        Who {
            tenant: self.input.who.tenant.clone(),
            subject: self.input.who.subject.clone(),
            capabilities: self.input.who.capabilities.clone(),
            session_id: self.input.project_id.clone(),
            turn: 0,
            started_ms: 0,
        }
    }

    fn publish(&self) {
        self.ctx.publish(&self.state);
    }

    async fn event(&mut self, ctx: &Ctx, kind: &str) -> Result<(), ActivityError> {
        self.seq += 1;
        let s = &self.state;
        let done = s
            .deliverables
            .iter()
            .filter(|d| d.state == "completed")
            .count();
        let title = match kind {
            "project.awaiting_approval" => "A project's plan waits for your approval".to_owned(),
            "project.blocked" if s.status == "waiting_for_requeue" => {
                "A project waits for blocked deliverables to be fixed and requeued".to_owned()
            }
            _ => format!(
                "Project {}: {} ({done} of {} deliverables done)",
                s.status,
                cut(&s.goal, 80),
                s.deliverables.len()
            ),
        };
        let event = RunEvent {
            who: self.input.who.clone(),
            run: self.input.project_id.clone(),
            seq: self.seq,
            kind: kind.to_owned(),
            data: json!({
                "project_id": s.project_id, "title": title, "status": s.status,
                "deliverables": s.deliverables.iter().map(|d| json!({
                    "id": d.plan.id, "state": d.state, "score": d.score, "tokens": d.tokens,
                })).collect::<Vec<_>>(),
                "budget": s.budget, "error": s.error, "approval": s.approval,
                "denied": s.decisions.iter().filter(|d| d["allowed"] == false).count(),
            }),
        };
        ctx.activity(&RUN_EVENT, &event).await
    }

    async fn check(&self, action: Checked, text: String) -> Result<(bool, String), ActivityError> {
        let decision = self
            .ctx
            .activity(
                &POLICY_CHECK,
                &PolicyCheck {
                    who: self.who(),
                    action,
                    text,
                },
            )
            .await?;
        let reason = if decision.reasons.is_empty() {
            format!("policy denied it (score {})", decision.score)
        } else {
            decision.reasons.join("; ")
        };
        Ok((decision.allowed, reason))
    }

    async fn run(&mut self) -> Result<Ending, ActivityError> {
        self.publish();
        let ctx = self.ctx;
        self.event(ctx, "project.started").await?;
        let goal_text = format!("{}\n{}", self.input.goal, self.input.constraints.join("\n"));
        let (allowed, reason) = self.check(Checked::Prompt, goal_text).await?;
        self.state.decisions.push(
            json!({"on": "goal", "allowed": allowed, "reason": (!allowed).then_some(&reason)}),
        );
        if !allowed {
            return Ok(Ending::because(
                "blocked",
                format!("the goal was refused: {reason}"),
            ));
        }
        let planner = ctx
            .activity(
                &CAPSULE_RESOLVE,
                &Resolve {
                    who: self.input.who.clone(),
                    capsule: self.input.planner.clone(),
                },
            )
            .await?;
        let heuristic = |name: &str| planner.definition.heuristics.get(name).copied();
        let max_deliverables = self
            .input
            .max_deliverables
            .map(u64::from)
            .or_else(|| heuristic("max_deliverables"))
            .unwrap_or(12)
            .min(100) as usize;
        let max_repairs = heuristic("max_repairs").unwrap_or(2).min(5) as u32;
        let default_budget = heuristic("default_budget_tokens").unwrap_or(20_000);
        let plan_prompt = planner
            .definition
            .prompts
            .get("plan")
            .cloned()
            .unwrap_or_default();
        let repair_prompt = planner
            .definition
            .prompts
            .get("repair")
            .cloned()
            .unwrap_or_else(|| "Your plan was not accepted:\n{{errors}}\n\nAnswer again with the whole corrected JSON object.".into());
        let schema = planner.definition.output_schema.clone();
        let mut planner = planner;
        // The model is told the most deliverables, and a model held to the schema
        // (the local one) cannot write more.
        if let Some(deliverables) = planner
            .definition
            .output_schema
            .as_mut()
            .and_then(|s| s.pointer_mut("/properties/deliverables"))
            .filter(|d| d.is_object())
        {
            deliverables["maxItems"] = json!(max_deliverables);
        }
        let mut seat =
            Seat {
                session_id: session_for(&self.input.project_id, "planner"),
                capsule_id: self.input.planner.clone(),
                deadline_ms: match planner.definition.limits.timeout_secs {
                    Some(secs) => Some(now_ms(ctx).await?.saturating_add(
                        i64::try_from(secs.saturating_mul(1000)).unwrap_or(i64::MAX),
                    )),
                    None => None,
                },
                capsule: planner,
                turns: 0,
            };
        let call = Call {
            who: &self.input.who,
            model: &self.input.model,
            run: &self.input.project_id,
            task: "plan",
        };
        let mut ask = render(
            &plan_prompt,
            &json!({"goal": self.input.goal, "constraints": self.input.constraints,
                    "max_deliverables": max_deliverables}),
        );
        let plan = loop {
            self.state.planning.attempts += 1;
            self.publish();
            let turned = seat.ask(ctx, &call, &ask, None).await?;
            self.state.budget.spent += turned.tokens;
            let errors = match turned.answer {
                Ok(answer) => match parse_plan(&answer, schema.as_ref(), max_deliverables) {
                    Ok(plan) => break plan,
                    Err(errors) => errors,
                },
                Err(why) => vec![format!("the planner did not answer: {why}")],
            };
            self.state.planning.rejected.push(errors.clone());
            if self.state.planning.attempts > max_repairs {
                return Ok(Ending::because(
                    "failed",
                    format!(
                        "the planner gave no valid plan in {} attempts: {}",
                        self.state.planning.attempts,
                        errors.join("; ")
                    ),
                ));
            }
            ask = render(&repair_prompt, &json!({"errors": errors}));
        };
        self.state.deliverables = plan
            .into_iter()
            .map(|d| DeliverableState {
                budget_tokens: Some(d.estimate_tokens.unwrap_or(default_budget).max(1)),
                plan: d,
                state: "planned".into(),
                wave: None,
                reason: None,
                score: None,
                attempts: 0,
                revisions: 0,
                tokens: 0,
                session_id: None,
                output: None,
                reviews: Vec::new(),
            })
            .collect();
        // Governance: each deliverable's instructions and tools, under the tenant's policy.
        for i in 0..self.state.deliverables.len() {
            self.govern(i).await?;
        }
        self.publish();
        self.event(ctx, "project.planned").await?;
        if self.input.approval
            && let Some(ending) = self.await_approval().await?
        {
            return Ok(ending);
        }
        self.execute(default_budget).await
    }

    /// Checks deliverable `i` against policy: planned if allowed, blocked (with why)
    /// if not.
    async fn govern(&mut self, i: usize) -> Result<(), ActivityError> {
        let d = self.state.deliverables[i].plan.clone();
        let text = format!(
            "{}\n{}\n{}",
            d.title,
            d.description,
            d.acceptance_criteria.join("\n")
        );
        let (mut allowed, mut reason) = self.check(Checked::Prompt, text).await?;
        if allowed {
            for tool in &d.tools {
                let (ok, why) = self.check(Checked::Tool, tool.clone()).await?;
                if !ok {
                    (allowed, reason) = (false, format!("tool `{tool}`: {why}"));
                    break;
                }
            }
        }
        self.state
            .decisions
            .push(json!({"on": d.id, "allowed": allowed, "reason": (!allowed).then_some(&reason)}));
        let entry = &mut self.state.deliverables[i];
        if allowed {
            entry.state = "planned".into();
            entry.reason = None;
        } else {
            entry.state = "blocked".into();
            entry.reason = Some(reason);
        }
        Ok(())
    }

    /// Waits for a person to approve the plan; the ending if they did not.
    async fn await_approval(&mut self) -> Result<Option<Ending>, ActivityError> {
        let ctx = self.ctx;
        self.state.status = "awaiting_approval".into();
        self.state.approval = Some(ApprovalState {
            status: "waiting".into(),
            by: None,
            notes: None,
        });
        self.publish();
        self.event(ctx, "project.awaiting_approval").await?;
        let answer: Option<ApprovalAnswer> = ctx
            .signal(
                "approve",
                Duration::from_secs(self.input.approval_timeout_secs),
            )
            .await?;
        let (status, ending) = match &answer {
            None => (
                "timed_out",
                Some(Ending::because(
                    "failed",
                    "the plan was not approved in time",
                )),
            ),
            Some(a) if !a.approved => (
                "rejected",
                Some(Ending::because(
                    "rejected",
                    format!("the plan was rejected: {}", a.notes),
                )),
            ),
            Some(_) => ("approved", None),
        };
        self.state.approval = Some(ApprovalState {
            status: status.into(),
            by: answer.as_ref().map(|a| a.by.clone()),
            notes: answer
                .as_ref()
                .map(|a| a.notes.clone())
                .filter(|n| !n.is_empty()),
        });
        self.state
            .decisions
            .push(json!({"on": "plan", "approval": status, "by": answer.as_ref().map(|a| &a.by)}));
        self.state.status = "running".into();
        Ok(ending)
    }

    fn completed(&self, id: &str) -> bool {
        self.state
            .deliverables
            .iter()
            .any(|d| d.plan.id == id && d.state == "completed")
    }

    /// Deliverables that can never run, because something they need ended without
    /// completing, are skipped.
    fn skip_the_stranded(&mut self) {
        loop {
            let ended_badly: Vec<String> = self
                .state
                .deliverables
                .iter()
                .filter(|d| {
                    matches!(
                        d.state.as_str(),
                        "failed" | "budget_exhausted" | "timed_out" | "skipped"
                    )
                })
                .map(|d| d.plan.id.clone())
                .collect();
            let mut changed = false;
            for d in &mut self.state.deliverables {
                if d.state == "planned"
                    && d.plan
                        .dependencies
                        .iter()
                        .any(|dep| ended_badly.contains(dep))
                {
                    d.state = "skipped".into();
                    d.reason = Some("something it needs did not complete".into());
                    changed = true;
                }
            }
            if !changed {
                return;
            }
        }
    }

    async fn execute(&mut self, default_budget: u64) -> Result<Ending, ActivityError> {
        let ctx = self.ctx;
        self.state.status = "running".into();
        let mut out_of_budget = false;
        loop {
            // Fixes sent while the waves ran join the next one.
            while self.state.deliverables.iter().any(|d| d.state == "blocked") {
                let asked: Option<Requeue> =
                    ctx.signal("requeue", Duration::from_millis(1)).await?;
                let Some(asked) = asked else { break };
                self.requeue(asked).await?;
            }
            self.skip_the_stranded();
            let runnable: Vec<usize> = (0..self.state.deliverables.len())
                .filter(|&i| {
                    let d = &self.state.deliverables[i];
                    d.state == "planned"
                        && d.plan.dependencies.iter().all(|dep| self.completed(dep))
                })
                .collect();
            if runnable.is_empty() {
                if out_of_budget || !self.state.deliverables.iter().any(|d| d.state == "blocked") {
                    break;
                }
                // Blocked deliverables wait for a fix.
                self.state.status = "waiting_for_requeue".into();
                self.publish();
                self.event(ctx, "project.blocked").await?;
                let asked: Option<Requeue> = ctx
                    .signal(
                        "requeue",
                        Duration::from_secs(self.input.requeue_timeout_secs),
                    )
                    .await?;
                self.state.status = "running".into();
                let Some(asked) = asked else { break };
                self.requeue(asked).await?;
                continue;
            }
            let wave = u32::try_from(self.state.waves.len() + 1).unwrap_or(u32::MAX);
            self.state.waves.push(
                runnable
                    .iter()
                    .map(|&i| self.state.deliverables[i].plan.id.clone())
                    .collect(),
            );
            for batch in runnable.chunks(self.input.parallelism.max(1) as usize) {
                let mut children = Vec::new();
                let mut grants = Vec::new();
                for &i in batch {
                    let left = self
                        .state
                        .budget
                        .limit
                        .saturating_sub(self.state.budget.spent + self.state.budget.reserved);
                    let want = self.state.deliverables[i]
                        .budget_tokens
                        .unwrap_or(default_budget);
                    let d = &mut self.state.deliverables[i];
                    d.wave = Some(wave);
                    if left == 0 {
                        d.state = "budget_exhausted".into();
                        d.reason = Some("the project's token budget is spent".into());
                        out_of_budget = true;
                        continue;
                    }
                    let grant = want.min(left);
                    self.state.budget.reserved += grant;
                    d.state = "running".into();
                    d.budget_tokens = Some(grant);
                    grants.push((i, grant));
                    children.push((
                        format!("{}-task-{}", self.input.project_id, d.plan.id),
                        self.task_for(i, grant),
                    ));
                }
                self.publish();
                let outcomes = run_batch(ctx, &children).await;
                for ((i, grant), outcome) in grants.into_iter().zip(outcomes) {
                    let outcome: TaskOutcome = outcome?;
                    self.state.budget.reserved -= grant;
                    self.state.budget.spent += outcome.tokens;
                    if outcome.status == TaskStatus::BudgetExhausted {
                        out_of_budget =
                            out_of_budget || self.state.budget.spent >= self.state.budget.limit;
                    }
                    let d = &mut self.state.deliverables[i];
                    d.state = state_name(outcome.status).into();
                    d.reason = outcome.error;
                    d.score = outcome.score;
                    d.attempts = outcome.attempts;
                    d.revisions = outcome.revisions;
                    d.tokens = outcome.tokens;
                    d.session_id = Some(outcome.session_id);
                    d.output = Some(outcome.output);
                    d.reviews = outcome.reviews;
                }
                self.publish();
                self.event(ctx, "project.progress").await?;
            }
            self.event(ctx, "project.wave_completed").await?;
            if out_of_budget || self.state.budget.spent >= self.state.budget.limit {
                out_of_budget = true;
            }
        }
        for d in &mut self.state.deliverables {
            if d.state == "planned" {
                d.state = "skipped".into();
                d.reason
                    .get_or_insert_with(|| "it never became runnable".into());
            }
        }
        self.state.bundle = self.bundle().await?;
        let all_done = self
            .state
            .deliverables
            .iter()
            .all(|d| d.state == "completed");
        Ok(if all_done {
            Ending::ok("completed")
        } else if out_of_budget {
            Ending::because("budget_exhausted", "the project's token budget is spent")
        } else {
            Ending::ok("partial")
        })
    }

    /// Applies a fix to a blocked deliverable and checks it again; a requeue of one
    /// that is not blocked (any more) changes nothing.
    async fn requeue(&mut self, asked: Requeue) -> Result<(), ActivityError> {
        let Some(i) = self
            .state
            .deliverables
            .iter()
            .position(|d| d.plan.id == asked.deliverable && d.state == "blocked")
        else {
            return Ok(());
        };
        let d = &mut self.state.deliverables[i].plan;
        if let Some(description) = asked.description {
            d.description = description;
        }
        if let Some(criteria) = asked.acceptance_criteria {
            d.acceptance_criteria = criteria;
        }
        if let Some(tools) = asked.tools {
            d.tools = tools;
        }
        self.state
            .decisions
            .push(json!({"on": asked.deliverable, "requeued_by": asked.by}));
        self.govern(i).await
    }

    fn task_for(&self, i: usize, grant: u64) -> TaskInput {
        let d = &self.state.deliverables[i].plan;
        let inputs: Vec<(&str, &str)> = d
            .dependencies
            .iter()
            .filter_map(|dep| {
                self.state
                    .deliverables
                    .iter()
                    .find(|o| o.plan.id == *dep)
                    .and_then(|o| o.output.as_deref().map(|out| (dep.as_str(), out)))
            })
            .collect();
        let criteria: Vec<String> = d
            .acceptance_criteria
            .iter()
            .map(|c| format!("- {c}"))
            .collect();
        let brief = format!(
            "Deliverable: {}\n\n{}\n\nAcceptance criteria:\n{}",
            d.title,
            d.description,
            criteria.join("\n")
        );
        TaskInput {
            who: self.input.who.clone(),
            parent: self.input.project_id.clone(),
            task_id: d.id.clone(),
            agent: Agent::Capsule {
                id: d
                    .capsule
                    .clone()
                    .unwrap_or_else(|| self.input.worker.clone()),
                tools: (!d.tools.is_empty()).then(|| d.tools.clone()),
            },
            model: self.input.model.clone(),
            content: with_inputs(&brief, &inputs),
            budget_tokens: Some(grant),
            timeout_secs: None,
            retries: 1,
            review: Some(ReviewSpec {
                reviewer: self.input.reviewer.clone(),
                title: d.title.clone(),
                criteria: d.acceptance_criteria.clone(),
                pass_score: self.input.pass_score.unwrap_or(70),
                max_revisions: self.input.max_revisions.unwrap_or(2),
            }),
        }
    }

    /// The deliverables, release notes and governance report, in object storage.
    async fn bundle(&mut self) -> Result<Vec<String>, ActivityError> {
        let s = &self.state;
        let mut files: Vec<(String, String)> = s
            .deliverables
            .iter()
            .filter(|d| d.state == "completed")
            .filter_map(|d| {
                d.output.as_ref().map(|o| {
                    (
                        format!("deliverables/{}.md", d.plan.id),
                        format!("# {}\n\n{o}\n", d.plan.title),
                    )
                })
            })
            .collect();
        let mut notes = format!("# Release notes\n\nGoal: {}\n\n## Delivered\n", s.goal);
        for d in s.deliverables.iter().filter(|d| d.state == "completed") {
            notes.push_str(&format!(
                "- **{}** ({}): score {}, {} revision(s), {} tokens\n",
                d.plan.title,
                d.plan.id,
                d.score.map_or_else(|| "-".into(), |x| x.to_string()),
                d.revisions,
                d.tokens
            ));
        }
        let missing: Vec<&DeliverableState> = s
            .deliverables
            .iter()
            .filter(|d| d.state != "completed")
            .collect();
        if !missing.is_empty() {
            notes.push_str("\n## Not delivered\n");
            for d in missing {
                notes.push_str(&format!(
                    "- **{}** ({}): {}{}\n",
                    d.plan.title,
                    d.plan.id,
                    d.state,
                    d.reason
                        .as_ref()
                        .map_or(String::new(), |r| format!(" — {r}"))
                ));
            }
        }
        files.push(("release-notes.md".into(), notes));
        files.push((
            "governance-report.json".into(),
            serde_json::to_string_pretty(&self.report()).unwrap_or_default(),
        ));
        self.ctx
            .activity(
                &BUNDLE,
                &Bundle {
                    who: self.input.who.clone(),
                    prefix: format!("projects/{}", self.input.project_id),
                    files,
                },
            )
            .await
    }

    /// What governed the project: every decision, the approval, the budget and each
    /// deliverable's score, revisions and spend.
    fn report(&self) -> Value {
        let s = &self.state;
        json!({
            "project_id": s.project_id, "goal": s.goal, "initiator": s.initiator,
            "decisions": s.decisions, "approval": s.approval, "budget": s.budget,
            "planning": s.planning,
            "deliverables": s.deliverables.iter().map(|d| json!({
                "id": d.plan.id, "title": d.plan.title, "state": d.state, "score": d.score,
                "revisions": d.revisions, "attempts": d.attempts, "tokens": d.tokens,
                "reason": d.reason,
            })).collect::<Vec<_>>(),
        })
    }
}

fn cut(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut out: String = text.chars().take(max).collect();
    out.push('…');
    out
}
