//! `/v1/workflows`: the operators' view of the tenant's workflow runs (session turns,
//! ...), for its admins (`tenant:admin`): list them, read one in full (its steps and
//! where it is), cancel one, send one a signal. The orchestrator checks the same
//! capability again and scopes every call to the caller's tenant.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use somagent_common::auth::Capability;
use somagent_common::error::ApiError;
use somagent_common::proto::orchestrator::v1 as pb;
use utoipa::{IntoParams, ToSchema};

use super::Authenticated;
use super::forward::Answer;
use super::views::Problem;
use crate::Gateway;

/// `?kind=&status=&limit=&cursor=` of `GET /v1/workflows`.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct WorkflowQuery {
    /// Only runs of this kind (`session_turn`, ...).
    #[serde(default)]
    kind: Option<String>,
    /// Only runs in this status: `running`, `completed`, `failed` or `cancelled`.
    #[serde(default)]
    status: Option<String>,
    /// At most this many (1..=100, default 20).
    #[serde(default)]
    limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    #[serde(default)]
    cursor: Option<String>,
}

/// A workflow run, as listed. Times are RFC 3339.
#[derive(Serialize, ToSchema)]
pub struct WorkflowSummary {
    id: String,
    /// What it runs (`session_turn`, ...).
    kind: String,
    /// `running`, `completed`, `failed` or `cancelled`.
    status: String,
    /// The run that started this one as its child.
    parent_id: Option<String>,
    created_at: String,
    updated_at: String,
    ended_at: Option<String>,
}

/// One step of a run.
#[derive(Serialize, ToSchema)]
pub struct WorkflowStep {
    seq: u64,
    /// `activity`, `sleep`, `signal`, `child` or `now`.
    kind: String,
    /// The activity's name (`session.history`, `model.complete`, ...) or the signal's.
    name: String,
    /// `running`, `completed` or `failed`.
    status: String,
    attempts: u32,
    started_at: Option<String>,
    ended_at: Option<String>,
    /// A failed step's error: `{code, message}`.
    #[schema(value_type = Object)]
    error: Option<Value>,
}

/// A workflow run in full.
#[derive(Serialize, ToSchema)]
pub struct WorkflowRun {
    #[serde(flatten)]
    summary: WorkflowSummary,
    /// What the run waits on now, when known (running runs only).
    current_step: Option<WorkflowStep>,
    steps: Vec<WorkflowStep>,
    /// The state the run last published.
    #[schema(value_type = Object)]
    state: Option<Value>,
    #[schema(value_type = Object)]
    result: Option<Value>,
    /// How it failed: `{code, message}`.
    #[schema(value_type = Object)]
    error: Option<Value>,
    /// An operator asked it to stop.
    cancel_requested: bool,
}

/// A page of runs, newest first; `next_cursor` is absent on the last page.
#[derive(Serialize, ToSchema)]
pub struct WorkflowPage {
    workflows: Vec<WorkflowSummary>,
    next_cursor: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct Cancelling {
    id: String,
    /// `cancelling`: the run stops at its current step and ends `cancelled`.
    status: String,
}

#[derive(Serialize, ToSchema)]
pub struct SignalSent {
    id: String,
    signal: String,
    /// `sent`: kept until the run reads it.
    status: String,
}

fn optional(value: String) -> Option<String> {
    (!value.is_empty()).then_some(value)
}

fn json_of(text: String) -> Option<Value> {
    optional(text).map(|t| serde_json::from_str(&t).unwrap_or(Value::String(t)))
}

fn summary_of(run: &mut pb::WorkflowRun) -> WorkflowSummary {
    WorkflowSummary {
        id: std::mem::take(&mut run.id),
        kind: std::mem::take(&mut run.kind),
        status: std::mem::take(&mut run.status),
        parent_id: optional(std::mem::take(&mut run.parent_id)),
        created_at: std::mem::take(&mut run.created_at),
        updated_at: std::mem::take(&mut run.updated_at),
        ended_at: optional(std::mem::take(&mut run.ended_at)),
    }
}

impl From<pb::WorkflowStep> for WorkflowStep {
    fn from(s: pb::WorkflowStep) -> Self {
        Self {
            seq: s.seq,
            kind: s.kind,
            name: s.name,
            status: s.status,
            attempts: s.attempts,
            started_at: optional(s.started_at),
            ended_at: optional(s.ended_at),
            error: json_of(s.error_json),
        }
    }
}

impl From<pb::WorkflowRun> for WorkflowRun {
    fn from(mut run: pb::WorkflowRun) -> Self {
        Self {
            summary: summary_of(&mut run),
            current_step: run.current_step.map(WorkflowStep::from),
            steps: run.steps.into_iter().map(WorkflowStep::from).collect(),
            state: json_of(run.state_json),
            result: json_of(run.result_json),
            error: json_of(run.error_json),
            cancel_requested: run.cancel_requested,
        }
    }
}

/// The tenant's workflow runs, newest first.
#[utoipa::path(get, path = "/v1/workflows", tag = "workflows", params(WorkflowQuery),
    responses((status = 200, body = WorkflowPage), (status = 400, description = "a cursor not of this list", body = Problem),
        (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 422, description = "a bad `status`, `kind` or `limit`, named in `details.fields`", body = Problem)),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn list(
    State(gateway): State<Gateway>,
    auth: Authenticated,
    Query(q): Query<WorkflowQuery>,
) -> Result<Json<WorkflowPage>, ApiError> {
    auth.principal.require(Capability::TenantAdmin)?;
    let request = pb::ListWorkflowsRequest {
        kind: q.kind.unwrap_or_default(),
        status: q.status.unwrap_or_default(),
        limit: q.limit,
        cursor: q.cursor.unwrap_or_default(),
    };
    let page = gateway
        .orchestrator
        .clone()
        .list_workflows(auth.forward(request))
        .answer()
        .await?;
    Ok(Json(WorkflowPage {
        workflows: page
            .runs
            .into_iter()
            .map(|mut r| summary_of(&mut r))
            .collect(),
        next_cursor: optional(page.next_cursor),
    }))
}

/// One workflow run: its steps, the step it is on, its state and how it ended.
#[utoipa::path(get, path = "/v1/workflows/{id}", tag = "workflows",
    params(("id" = String, Path, description = "the run's id")),
    responses((status = 200, body = WorkflowRun), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, body = Problem)),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn get(
    State(gateway): State<Gateway>,
    auth: Authenticated,
    Path(id): Path<String>,
) -> Result<Json<WorkflowRun>, ApiError> {
    auth.principal.require(Capability::TenantAdmin)?;
    let run = gateway
        .orchestrator
        .clone()
        .get_workflow(auth.forward(pb::GetWorkflowRequest { id }))
        .answer()
        .await?;
    Ok(Json(run.into()))
}

/// Cancel a running run: it stops at its current step (a running activity is stopped)
/// and ends `cancelled`. A session turn cancelled this way ends with an `error` event
/// (`cancelled`) and leaves its session idle.
#[utoipa::path(post, path = "/v1/workflows/{id}/cancel", tag = "workflows",
    params(("id" = String, Path, description = "the run's id")),
    responses((status = 202, body = Cancelling), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, body = Problem), (status = 409, description = "the run has ended", body = Problem)),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn cancel(
    State(gateway): State<Gateway>,
    auth: Authenticated,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<Cancelling>), ApiError> {
    auth.principal.require(Capability::TenantAdmin)?;
    let answer = gateway
        .orchestrator
        .clone()
        .cancel_workflow(auth.forward(pb::CancelWorkflowRequest { id }))
        .answer()
        .await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(Cancelling {
            id: answer.id,
            status: answer.status,
        }),
    ))
}

/// Send signal `name` to a running run, with the request's JSON body (any JSON of at
/// most 64 KiB; none: `null`) as its payload. The run reads it when it next waits for
/// that signal; until then it is kept.
#[utoipa::path(post, path = "/v1/workflows/{id}/signals/{name}", tag = "workflows",
    params(("id" = String, Path, description = "the run's id"),
        ("name" = String, Path, description = "the signal: 1-64 of `a-z`, `0-9`, `_`, `.`, `-`")),
    request_body(content = Object, description = "the signal's payload, any JSON", content_type = "application/json"),
    responses((status = 202, body = SignalSent), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 404, body = Problem),
        (status = 409, description = "the run has ended", body = Problem),
        (status = 413, description = "a payload over 64 KiB", body = Problem), (status = 422, body = Problem)),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn signal(
    State(gateway): State<Gateway>,
    auth: Authenticated,
    Path((id, name)): Path<(String, String)>,
    body: Bytes,
) -> Result<(StatusCode, Json<SignalSent>), ApiError> {
    auth.principal.require(Capability::TenantAdmin)?;
    // Read here so a body that is not JSON is the caller's 400, not the service's 422.
    let payload_json = if body.iter().all(u8::is_ascii_whitespace) {
        String::new()
    } else {
        serde_json::from_slice::<Value>(&body)
            .map_err(|e| ApiError::bad_request(format!("the body is not JSON: {e}")))?
            .to_string()
    };
    let answer = gateway
        .orchestrator
        .clone()
        .signal_workflow(auth.forward(pb::SignalWorkflowRequest {
            id,
            name,
            payload_json,
        }))
        .answer()
        .await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(SignalSent {
            id: answer.id,
            signal: answer.name,
            status: "sent".into(),
        }),
    ))
}
