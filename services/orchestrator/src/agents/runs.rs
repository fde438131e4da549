//! The use cases of projects and multi-agent runs: start one (its request checked
//! here), read, approve, requeue, cancel. A run is its initiator's and its tenant's
//! admins'; to anyone else it is not found.

use std::sync::Arc;

use serde::Deserialize;
use serde_json::{Value, json};
use somagent_common::auth::{Capability, Principal};
use somagent_common::clock::{rfc3339, unix_now};
use somagent_common::error::{ApiError, ErrorCode};
use somagent_workflows::{Engine, RunStatus, StartRequest};

use super::mao::{Directive, MaoInput, Mode};
use super::project::{ApprovalAnswer, ProjectInput, Requeue};
use super::records::{RunRecord, RunRecords};
use super::{Agent, Initiator, MAO_RUN, PROJECT};
use crate::domain::plan::{layers, valid_id};

pub const PROJECT_KIND: &str = "project";
pub const MAO_KIND: &str = "mao";

#[derive(Clone)]
pub struct Runs {
    pub engine: Arc<dyn Engine>,
    pub records: RunRecords,
    pub hub: Arc<super::live::RunHub>,
}

fn read<T: for<'de> Deserialize<'de>>(json: &str) -> Result<T, ApiError> {
    let json = if json.trim().is_empty() { "{}" } else { json };
    serde_json::from_str(json).map_err(|e| {
        ApiError::new(
            ErrorCode::ValidationFailed,
            format!("the body does not read: {e}"),
        )
    })
}

fn initiator(principal: &Principal) -> Initiator {
    Initiator {
        tenant: principal.tenant.clone(),
        subject: principal.subject.clone(),
        capabilities: principal
            .capabilities
            .iter()
            .map(|c| c.as_str().to_owned())
            .collect(),
    }
}

fn bounded(
    field: &str,
    value: Option<u64>,
    default: u64,
    range: std::ops::RangeInclusive<u64>,
) -> Result<u64, ApiError> {
    let v = value.unwrap_or(default);
    if range.contains(&v) {
        Ok(v)
    } else {
        Err(ApiError::validation(
            field,
            format!("is {}-{}", range.start(), range.end()),
        ))
    }
}

fn capsule_field(field: &str, value: Option<String>, default: &str) -> Result<String, ApiError> {
    let id = value.unwrap_or_else(|| default.to_owned());
    if somagent_common::capsule::valid_id(&id) {
        Ok(id)
    } else {
        Err(ApiError::validation(field, "is a capsule id"))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StartProject {
    goal: String,
    #[serde(default)]
    constraints: Vec<String>,
    budget_tokens: Option<u64>,
    parallelism: Option<u64>,
    /// `auto` (default) or `manual`: a person approves the plan first.
    approval: Option<String>,
    approval_timeout_secs: Option<u64>,
    requeue_timeout_secs: Option<u64>,
    max_deliverables: Option<u64>,
    pass_score: Option<u64>,
    max_revisions: Option<u64>,
    #[serde(default)]
    model: Option<String>,
    planner: Option<String>,
    reviewer: Option<String>,
    worker: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StartMao {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    mode: Option<String>,
    parallelism: Option<u64>,
    #[serde(default)]
    model: Option<String>,
    directives: Vec<DirectiveBody>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DirectiveBody {
    id: Option<String>,
    /// A capsule installed in the tenant (or the platform's); `agent_id` as the
    /// original API named it.
    #[serde(alias = "agent_id")]
    capsule: Option<String>,
    persona: Option<String>,
    goal: String,
    tools: Option<Vec<String>>,
    budget_tokens: Option<u64>,
    timeout_secs: Option<u64>,
    retries: Option<u64>,
    #[serde(default)]
    depends_on: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ApproveBody {
    approved: Option<bool>,
    #[serde(default)]
    notes: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RequeueBody {
    description: Option<String>,
    acceptance_criteria: Option<Vec<String>>,
    tools: Option<Vec<String>>,
}

impl Runs {
    /// The run if the caller may see it (of `kind`, when given), with its record.
    async fn visible(
        &self,
        principal: &Principal,
        kind: Option<&str>,
        id: &str,
    ) -> Result<RunRecord, ApiError> {
        self.records
            .get(&principal.tenant, id)
            .await
            .map_err(ApiError::internal)?
            .filter(|r| kind.is_none_or(|k| r.kind == k))
            .filter(|r| r.initiator == principal.subject || principal.can(Capability::TenantAdmin))
            .ok_or_else(|| {
                ApiError::not_found(if kind == Some(PROJECT_KIND) {
                    "project"
                } else {
                    "run"
                })
            })
    }

    async fn start(
        &self,
        principal: &Principal,
        kind: &str,
        workflow: &str,
        id: &str,
        title: &str,
        input: &Value,
    ) -> Result<(), ApiError> {
        self.records
            .record(
                &principal.tenant,
                &RunRecord {
                    id: id.to_owned(),
                    kind: kind.to_owned(),
                    initiator: principal.subject.clone(),
                    title: title.chars().take(200).collect(),
                    created_at: unix_now(),
                },
            )
            .await
            .map_err(ApiError::internal)?;
        self.engine
            .start(StartRequest {
                kind: workflow,
                id,
                tenant: &principal.tenant,
                input,
            })
            .await?;
        Ok(())
    }

    pub async fn start_project(
        &self,
        principal: &Principal,
        json: &str,
    ) -> Result<Value, ApiError> {
        principal.require(Capability::ProjectsRun)?;
        principal.require(Capability::SessionsWrite)?;
        let b: StartProject = read(json)?;
        let goal = b.goal.trim().to_owned();
        if goal.is_empty() || goal.len() > 8000 {
            return Err(ApiError::validation("goal", "is 1-8000 characters"));
        }
        if b.constraints.len() > 20 || b.constraints.iter().any(|c| c.len() > 1000) {
            return Err(ApiError::validation(
                "constraints",
                "are at most 20, each at most 1000 characters",
            ));
        }
        let approval = match b.approval.as_deref() {
            None | Some("auto") => false,
            Some("manual") => true,
            Some(_) => return Err(ApiError::validation("approval", "is `auto` or `manual`")),
        };
        let model = b.model.unwrap_or_default();
        if model.len() > 200 {
            return Err(ApiError::validation("model", "is at most 200 characters"));
        }
        let id = format!("project-{}", uuid::Uuid::now_v7().simple());
        let input = ProjectInput {
            who: initiator(principal),
            project_id: id.clone(),
            goal: goal.clone(),
            constraints: b.constraints,
            model,
            budget_tokens: bounded(
                "budget_tokens",
                b.budget_tokens,
                200_000,
                1_000..=100_000_000,
            )?,
            parallelism: bounded("parallelism", b.parallelism, 4, 1..=16)? as u32,
            approval,
            approval_timeout_secs: bounded(
                "approval_timeout_secs",
                b.approval_timeout_secs,
                86_400,
                1..=30 * 86_400,
            )?,
            requeue_timeout_secs: bounded(
                "requeue_timeout_secs",
                b.requeue_timeout_secs,
                86_400,
                1..=30 * 86_400,
            )?,
            max_deliverables: b
                .max_deliverables
                .map(|m| bounded("max_deliverables", Some(m), 12, 1..=100).map(|v| v as u32))
                .transpose()?,
            pass_score: b
                .pass_score
                .map(|m| bounded("pass_score", Some(m), 70, 0..=100).map(|v| v as u32))
                .transpose()?,
            max_revisions: b
                .max_revisions
                .map(|m| bounded("max_revisions", Some(m), 2, 0..=5).map(|v| v as u32))
                .transpose()?,
            planner: capsule_field("planner", b.planner, "kamachiq-planner")?,
            reviewer: capsule_field("reviewer", b.reviewer, "kamachiq-reviewer")?,
            worker: capsule_field("worker", b.worker, "kamachiq-worker")?,
        };
        let value = serde_json::to_value(&input).map_err(ApiError::internal)?;
        self.start(principal, PROJECT_KIND, PROJECT.kind, &id, &goal, &value)
            .await?;
        Ok(json!({ "project_id": id, "workflow_id": id, "status": "planning" }))
    }

    pub async fn start_mao(&self, principal: &Principal, json: &str) -> Result<Value, ApiError> {
        principal.require(Capability::ProjectsRun)?;
        principal.require(Capability::SessionsWrite)?;
        let b: StartMao = read(json)?;
        let mode = match b.mode.as_deref() {
            None | Some("sequential") => Mode::Sequential,
            Some("parallel") => Mode::Parallel,
            Some("dag") => Mode::Dag,
            Some(_) => {
                return Err(ApiError::validation(
                    "mode",
                    "is `sequential`, `parallel` or `dag`",
                ));
            }
        };
        if b.directives.is_empty() || b.directives.len() > 50 {
            return Err(ApiError::validation("directives", "are 1-50"));
        }
        let mut directives: Vec<Directive> = Vec::with_capacity(b.directives.len());
        for (n, d) in b.directives.into_iter().enumerate() {
            let field = |f: &str| format!("directives[{n}].{f}");
            let id = d.id.unwrap_or_else(|| format!("task-{}", n + 1));
            if !valid_id(&id) || directives.iter().any(|o| o.id == id) {
                return Err(ApiError::validation(
                    &field("id"),
                    "is a unique [a-z0-9][a-z0-9_-]{0,63}",
                ));
            }
            let goal = d.goal.trim().to_owned();
            if goal.is_empty() || goal.len() > 20_000 {
                return Err(ApiError::validation(
                    &field("goal"),
                    "is 1-20000 characters",
                ));
            }
            let agent = match (d.capsule, d.persona) {
                (Some(capsule), None) => {
                    if !somagent_common::capsule::valid_id(&capsule) {
                        return Err(ApiError::validation(&field("capsule"), "is a capsule id"));
                    }
                    Agent::Capsule {
                        id: capsule,
                        tools: d.tools,
                    }
                }
                (None, Some(persona)) if !persona.trim().is_empty() && persona.len() <= 32_768 => {
                    Agent::Persona {
                        persona,
                        tools: d.tools.unwrap_or_default(),
                    }
                }
                _ => {
                    return Err(ApiError::validation(
                        &field("capsule"),
                        "a directive names a capsule or gives a persona (1-32768 characters), not both",
                    ));
                }
            };
            let depends_on = match mode {
                Mode::Dag => d.depends_on,
                Mode::Sequential => directives
                    .last()
                    .map(|p| vec![p.id.clone()])
                    .unwrap_or_default(),
                Mode::Parallel => Vec::new(),
            };
            directives.push(Directive {
                id,
                agent,
                goal,
                budget_tokens: d.budget_tokens,
                timeout_secs: d
                    .timeout_secs
                    .map(|t| bounded(&field("timeout_secs"), Some(t), 600, 1..=86_400))
                    .transpose()?,
                retries: bounded(&field("retries"), d.retries, 1, 0..=5)? as u32,
                depends_on,
            });
        }
        for d in &directives {
            if let Some(missing) = d
                .depends_on
                .iter()
                .find(|dep| !directives.iter().any(|o| o.id == **dep))
            {
                return Err(ApiError::validation(
                    "directives",
                    format!(
                        "`{}` depends on `{missing}`, which is not a directive",
                        d.id
                    ),
                ));
            }
        }
        let edges: Vec<(String, Vec<String>)> = directives
            .iter()
            .map(|d| (d.id.clone(), d.depends_on.clone()))
            .collect();
        if let Err(cycle) = layers(&edges) {
            return Err(ApiError::validation(
                "directives",
                format!("the dependencies form a cycle through {}", cycle.join(", ")),
            ));
        }
        let id = format!("mao-{}", uuid::Uuid::now_v7().simple());
        let name = b
            .name
            .unwrap_or_else(|| directives[0].goal.chars().take(80).collect());
        let input = MaoInput {
            who: initiator(principal),
            run_id: id.clone(),
            name: name.clone(),
            mode,
            parallelism: bounded("parallelism", b.parallelism, 4, 1..=16)? as u32,
            model: b.model.unwrap_or_default(),
            directives,
        };
        let value = serde_json::to_value(&input).map_err(ApiError::internal)?;
        self.start(principal, MAO_KIND, MAO_RUN.kind, &id, &name, &value)
            .await?;
        Ok(json!({ "workflow_id": id, "run_id": id, "orchestration_id": id, "status": "running" }))
    }

    /// A run's view: its state as it last published it, and how the run stands.
    pub async fn get(
        &self,
        principal: &Principal,
        kind: &str,
        id: &str,
    ) -> Result<Value, ApiError> {
        principal.require(Capability::ProjectsRead)?;
        let record = self.visible(principal, Some(kind), id).await?;
        let view = self.engine.describe(&principal.tenant, id).await?;
        let mut state = view.state.unwrap_or_else(|| json!({}));
        let run_status = view.summary.status;
        if state.get("status").is_none() || run_status == RunStatus::Cancelled {
            state["status"] = json!(match run_status {
                RunStatus::Running => "starting",
                other => other.as_str(),
            });
        }
        if let Some(deliverables) = state.get_mut("deliverables").and_then(Value::as_array_mut) {
            for d in deliverables {
                if let Some(d) = d.as_object_mut() {
                    d.remove("output");
                }
            }
        }
        if let Some(tasks) = state.get_mut("tasks").and_then(Value::as_array_mut) {
            for t in tasks {
                if let Some(output) = t.get("output").and_then(Value::as_str).map(str::to_owned) {
                    t["output"] = json!(preview(&output));
                }
            }
        }
        state["id"] = json!(record.id);
        state["title"] = json!(record.title);
        state["initiator"] = json!(record.initiator);
        state["created_at"] = json!(rfc3339(record.created_at));
        state["run_status"] = json!(run_status.as_str());
        if let Some(error) = view.error {
            state["run_error"] = error;
        }
        Ok(state)
    }

    pub async fn list(
        &self,
        principal: &Principal,
        kind: &str,
        limit: u32,
    ) -> Result<Value, ApiError> {
        principal.require(Capability::ProjectsRead)?;
        let mine = (!principal.can(Capability::TenantAdmin)).then_some(principal.subject.as_str());
        let records = self
            .records
            .list(&principal.tenant, kind, mine, limit.clamp(1, 200))
            .await
            .map_err(ApiError::internal)?;
        let mut runs = Vec::with_capacity(records.len());
        for r in records {
            let status = match self.engine.query(&principal.tenant, &r.id).await {
                Ok(Some(state)) => state
                    .get("status")
                    .cloned()
                    .unwrap_or_else(|| json!("starting")),
                _ => json!("starting"),
            };
            runs.push(
                json!({"id": r.id, "title": r.title, "initiator": r.initiator,
                             "created_at": rfc3339(r.created_at), "status": status}),
            );
        }
        Ok(json!({ "runs": runs }))
    }

    pub async fn deliverable(
        &self,
        principal: &Principal,
        id: &str,
        deliverable: &str,
    ) -> Result<Value, ApiError> {
        principal.require(Capability::ProjectsRead)?;
        self.visible(principal, Some(PROJECT_KIND), id).await?;
        let state = self
            .engine
            .query(&principal.tenant, id)
            .await?
            .unwrap_or_default();
        state
            .get("deliverables")
            .and_then(Value::as_array)
            .and_then(|all| all.iter().find(|d| d["id"] == deliverable))
            .cloned()
            .ok_or_else(|| ApiError::not_found("deliverable"))
    }

    pub async fn approve(
        &self,
        principal: &Principal,
        id: &str,
        json: &str,
    ) -> Result<Value, ApiError> {
        principal.require(Capability::ProjectsRun)?;
        self.visible(principal, Some(PROJECT_KIND), id).await?;
        let b: ApproveBody = read(json)?;
        let state = self
            .engine
            .query(&principal.tenant, id)
            .await?
            .unwrap_or_default();
        if state["status"] != "awaiting_approval" {
            return Err(ApiError::new(
                ErrorCode::Conflict,
                "the project's plan is not waiting for approval",
            ));
        }
        if b.notes.len() > 4000 {
            return Err(ApiError::validation("notes", "is at most 4000 characters"));
        }
        let answer = ApprovalAnswer {
            approved: b.approved.unwrap_or(true),
            by: principal.subject.clone(),
            notes: b.notes,
        };
        let payload = serde_json::to_value(&answer).map_err(ApiError::internal)?;
        self.engine
            .signal(&principal.tenant, id, "approve", payload)
            .await?;
        Ok(json!({ "project_id": id, "approved": answer.approved }))
    }

    pub async fn requeue(
        &self,
        principal: &Principal,
        id: &str,
        deliverable: &str,
        json: &str,
    ) -> Result<Value, ApiError> {
        principal.require(Capability::ProjectsRun)?;
        self.visible(principal, Some(PROJECT_KIND), id).await?;
        let b: RequeueBody = read(json)?;
        let state = self
            .engine
            .query(&principal.tenant, id)
            .await?
            .unwrap_or_default();
        let found = state
            .get("deliverables")
            .and_then(Value::as_array)
            .and_then(|all| all.iter().find(|d| d["id"] == deliverable))
            .ok_or_else(|| ApiError::not_found("deliverable"))?;
        if found["state"] != "blocked" {
            return Err(ApiError::new(
                ErrorCode::Conflict,
                "only a blocked deliverable is requeued",
            ));
        }
        if b.description
            .as_ref()
            .is_some_and(|d| d.trim().is_empty() || d.len() > 8000)
        {
            return Err(ApiError::validation("description", "is 1-8000 characters"));
        }
        let payload = serde_json::to_value(Requeue {
            deliverable: deliverable.to_owned(),
            by: principal.subject.clone(),
            description: b.description,
            acceptance_criteria: b.acceptance_criteria,
            tools: b.tools,
        })
        .map_err(ApiError::internal)?;
        self.engine
            .signal(&principal.tenant, id, "requeue", payload)
            .await?;
        Ok(json!({ "project_id": id, "deliverable": deliverable, "requeued": true }))
    }

    /// A run's stages from now on, and its view as it stands (read after subscribing, so
    /// nothing falls between the two).
    pub async fn watch(
        &self,
        principal: &Principal,
        id: &str,
    ) -> Result<
        (
            Value,
            tokio::sync::broadcast::Receiver<super::live::RunLive>,
        ),
        ApiError,
    > {
        principal.require(Capability::ProjectsRead)?;
        let record = self.visible(principal, None, id).await?;
        let events = self.hub.subscribe(&principal.tenant, &record.id);
        let view = self.get(principal, &record.kind, &record.id).await?;
        Ok((view, events))
    }

    pub async fn cancel(
        &self,
        principal: &Principal,
        kind: &str,
        id: &str,
    ) -> Result<Value, ApiError> {
        principal.require(Capability::ProjectsCancel)?;
        self.visible(principal, Some(kind), id).await?;
        self.engine.cancel(&principal.tenant, id).await?;
        Ok(json!({ "id": id, "status": "cancelling" }))
    }
}

/// The start of a long output, for lists.
fn preview(text: &str) -> String {
    if text.len() <= 2000 {
        return text.to_owned();
    }
    let mut end = 2000;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}
