//! `/v1/projects*` (KAMACHIQ) and `/v1/mao/*` (multi-agent runs): durable workflows in
//! the orchestrator that turn a goal into reviewed deliverables, or run directives as
//! agents. These handlers map; the orchestrator decides.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::Value;
use somagent_common::error::ApiError;
use somagent_common::proto::orchestrator::v1 as pb;
use utoipa::{IntoParams, ToSchema};

use super::Authenticated;
use super::body::json_body;
use super::forward::{Answer, json_answer};
use super::views::Problem;
use crate::Gateway;

type JsonAnswer = Result<Json<Value>, ApiError>;

fn parsed(body: pb::JsonBody) -> JsonAnswer {
    json_answer(&body.json, "the orchestrator").map(Json)
}

/// The body as JSON text.
fn text(body: Result<Json<Value>, JsonRejection>) -> Result<String, ApiError> {
    let value = json_body(body)?;
    if !value.is_object() {
        return Err(ApiError::bad_request("the body is a JSON object"));
    }
    Ok(value.to_string())
}

/// An optional body: none is an empty object.
fn optional(body: &Bytes) -> Result<String, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok("{}".into());
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(value) if value.is_object() => Ok(value.to_string()),
        Ok(_) => Err(ApiError::bad_request("the body is a JSON object")),
        Err(e) => Err(ApiError::bad_request(format!("the body is not JSON: {e}"))),
    }
}

/// A project: `{goal, constraints?, budget_tokens?, parallelism?, approval?: "auto" |
/// "manual", approval_timeout_secs?, requeue_timeout_secs?, max_deliverables?,
/// pass_score?, max_revisions?, model?, planner?, reviewer?, worker?}`.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct NewProject {
    /// What the project is to achieve (1-8000 characters).
    goal: String,
    constraints: Option<Vec<String>>,
    /// Tokens the whole project may spend (200 000 by default); each deliverable's
    /// share is reserved from it while it runs.
    budget_tokens: Option<u64>,
    /// Deliverables run at once (4 by default, at most 16).
    parallelism: Option<u32>,
    /// `auto` (default) or `manual`: the plan waits for `POST /v1/projects/{id}/approve`.
    approval: Option<String>,
    approval_timeout_secs: Option<u64>,
    requeue_timeout_secs: Option<u64>,
    max_deliverables: Option<u32>,
    /// The review score a deliverable needs (70 by default).
    pass_score: Option<u32>,
    max_revisions: Option<u32>,
    model: Option<String>,
    planner: Option<String>,
    reviewer: Option<String>,
    worker: Option<String>,
}

/// Starts a KAMACHIQ project (`projects:run`): policy on the goal, the planner's plan
/// of deliverables, governance, optional approval, waves of agents, review, bundle.
#[utoipa::path(post, path = "/v1/projects", tag = "projects", request_body = NewProject,
    responses((status = 202, description = "`{project_id, status}`"), (status = 401, body = Problem),
              (status = 403, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn start(
    State(gateway): State<Gateway>,
    auth: Authenticated,
    body: Result<Json<Value>, JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let json = text(body)?;
    let answer = gateway
        .orchestrator
        .clone()
        .start_project(auth.forward(pb::JsonBody { json }))
        .answer()
        .await?;
    Ok((StatusCode::ACCEPTED, parsed(answer)?))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// 1-200, 50 by default.
    limit: Option<u32>,
}

/// The caller's projects (all of the tenant's for its admins), newest first.
#[utoipa::path(get, path = "/v1/projects", tag = "projects", params(ListParams),
    responses((status = 200, description = "`{runs: [...]}`"), (status = 401, body = Problem), (status = 403, body = Problem)),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn list(
    State(gateway): State<Gateway>,
    auth: Authenticated,
    Query(p): Query<ListParams>,
) -> JsonAnswer {
    let request = pb::ListRunsRequest {
        status: String::new(),
        limit: p.limit.unwrap_or(50),
    };
    parsed(
        gateway
            .orchestrator
            .clone()
            .list_projects(auth.forward(request))
            .answer()
            .await?,
    )
}

/// A project as it stands: status, plan, waves, each deliverable's state, score,
/// attempts and spend, the budget, the approval, the bundle.
#[utoipa::path(get, path = "/v1/projects/{id}", tag = "projects", params(("id" = String, Path)),
    responses((status = 200, description = "the project"), (status = 401, body = Problem), (status = 404, body = Problem)),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn get(
    State(gateway): State<Gateway>,
    auth: Authenticated,
    Path(id): Path<String>,
) -> JsonAnswer {
    parsed(
        gateway
            .orchestrator
            .clone()
            .get_project(auth.forward(pb::RunRef { id }))
            .answer()
            .await?,
    )
}

/// One deliverable, with its output and reviews.
#[utoipa::path(get, path = "/v1/projects/{id}/deliverables/{deliverable}", tag = "projects",
    params(("id" = String, Path), ("deliverable" = String, Path)),
    responses((status = 200, description = "the deliverable"), (status = 401, body = Problem), (status = 404, body = Problem)),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn deliverable(
    State(gateway): State<Gateway>,
    auth: Authenticated,
    Path((id, deliverable)): Path<(String, String)>,
) -> JsonAnswer {
    parsed(
        gateway
            .orchestrator
            .clone()
            .get_deliverable(auth.forward(pb::DeliverableRef { id, deliverable }))
            .answer()
            .await?,
    )
}

/// `{approved?: bool (true), notes?}`.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ApprovalBody {
    approved: Option<bool>,
    notes: Option<String>,
}

/// Approves (or rejects) a plan that waits for approval (`projects:run`).
#[utoipa::path(post, path = "/v1/projects/{id}/approve", tag = "projects", params(("id" = String, Path)),
    request_body = ApprovalBody,
    responses((status = 200, description = "sent"), (status = 401, body = Problem), (status = 404, body = Problem),
              (status = 409, description = "the plan is not waiting for approval", body = Problem)),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn approve(
    State(gateway): State<Gateway>,
    auth: Authenticated,
    Path(id): Path<String>,
    body: Bytes,
) -> JsonAnswer {
    let json = optional(&body)?;
    parsed(
        gateway
            .orchestrator
            .clone()
            .approve_project(auth.forward(pb::RunBody { id, json }))
            .answer()
            .await?,
    )
}

/// `{description?, acceptance_criteria?, tools?}`: the fix.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct RequeueBody {
    description: Option<String>,
    acceptance_criteria: Option<Vec<String>>,
    tools: Option<Vec<String>>,
}

/// Puts a deliverable that policy blocked back into the plan, fixed (`projects:run`):
/// it is checked again and, if allowed, runs in the next wave.
#[utoipa::path(post, path = "/v1/projects/{id}/requeue/{deliverable}", tag = "projects",
    params(("id" = String, Path), ("deliverable" = String, Path)), request_body = RequeueBody,
    responses((status = 200, description = "sent"), (status = 401, body = Problem), (status = 404, body = Problem),
              (status = 409, description = "the deliverable is not blocked", body = Problem)),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn requeue(
    State(gateway): State<Gateway>,
    auth: Authenticated,
    Path((id, deliverable)): Path<(String, String)>,
    body: Bytes,
) -> JsonAnswer {
    let json = optional(&body)?;
    let request = pb::DeliverableBody {
        id,
        deliverable,
        json,
    };
    parsed(
        gateway
            .orchestrator
            .clone()
            .requeue_deliverable(auth.forward(request))
            .answer()
            .await?,
    )
}

/// Cancels a project (`projects:cancel`): running agents are cancelled, what was spent
/// stays spent, the rest of the budget is released.
#[utoipa::path(post, path = "/v1/projects/{id}/cancel", tag = "projects", params(("id" = String, Path)),
    responses((status = 200, description = "cancelling"), (status = 401, body = Problem), (status = 404, body = Problem),
              (status = 409, description = "it has ended", body = Problem)),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn cancel(
    State(gateway): State<Gateway>,
    auth: Authenticated,
    Path(id): Path<String>,
) -> JsonAnswer {
    parsed(
        gateway
            .orchestrator
            .clone()
            .cancel_project(auth.forward(pb::RunRef { id }))
            .answer()
            .await?,
    )
}

/// A multi-agent run: `{name?, mode?: "sequential" | "parallel" | "dag", parallelism?,
/// model?, directives: [{id?, capsule? | persona?, goal, tools?, budget_tokens?,
/// timeout_secs?, retries?, depends_on?}]}`.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct NewMao {
    name: Option<String>,
    mode: Option<String>,
    parallelism: Option<u32>,
    model: Option<String>,
    #[schema(value_type = Vec<Object>)]
    directives: Vec<Value>,
}

/// Starts a multi-agent run (`projects:run`): each directive an agent, outputs passed
/// along the edges, artifacts bundled.
#[utoipa::path(post, path = "/v1/mao/start", tag = "projects", request_body = NewMao,
    responses((status = 202, description = "`{workflow_id, status}`"), (status = 401, body = Problem),
              (status = 403, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn start_mao(
    State(gateway): State<Gateway>,
    auth: Authenticated,
    body: Result<Json<Value>, JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let json = text(body)?;
    let answer = gateway
        .orchestrator
        .clone()
        .start_mao(auth.forward(pb::JsonBody { json }))
        .answer()
        .await?;
    Ok((StatusCode::ACCEPTED, parsed(answer)?))
}

/// A multi-agent run as it stands: status, each task's state, attempts, spend and
/// output, the artifacts.
#[utoipa::path(get, path = "/v1/mao/{id}", tag = "projects", params(("id" = String, Path)),
    responses((status = 200, description = "the run"), (status = 401, body = Problem), (status = 404, body = Problem)),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn get_mao(
    State(gateway): State<Gateway>,
    auth: Authenticated,
    Path(id): Path<String>,
) -> JsonAnswer {
    parsed(
        gateway
            .orchestrator
            .clone()
            .get_mao(auth.forward(pb::RunRef { id }))
            .answer()
            .await?,
    )
}

/// Cancels a multi-agent run (`projects:cancel`).
#[utoipa::path(post, path = "/v1/mao/{id}/cancel", tag = "projects", params(("id" = String, Path)),
    responses((status = 200, description = "cancelling"), (status = 401, body = Problem), (status = 404, body = Problem),
              (status = 409, description = "it has ended", body = Problem)),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn cancel_mao(
    State(gateway): State<Gateway>,
    auth: Authenticated,
    Path(id): Path<String>,
) -> JsonAnswer {
    parsed(
        gateway
            .orchestrator
            .clone()
            .cancel_mao(auth.forward(pb::RunRef { id }))
            .answer()
            .await?,
    )
}
