//! Approvals of a session's tool calls: a call of an action that requires approval
//! waits (its turn paused, watchers told `approval_required`) until a person with
//! `tools:approve` who may see the session answers here, or the wait runs out (a
//! denial the model is told about).

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use serde::{Deserialize, Serialize};
use somagent_common::auth::Capability;
use somagent_common::error::ApiError;
use somagent_common::proto::orchestrator::v1 as pb;
use utoipa::ToSchema;

use super::Authenticated;
use super::body::json_body;
use super::forward::Answer;
use super::views::Problem;
use crate::Gateway;

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApprovalAnswer {
    /// True runs the call; false refuses it (the model is told).
    approve: bool,
    /// Why, for the record and for the model when refused; at most 1000 characters.
    #[serde(default)]
    reason: String,
}

#[derive(Serialize, ToSchema)]
pub struct ApprovalGiven {
    session_id: String,
    turn: u32,
    call_id: String,
    approved: bool,
}

#[derive(Serialize, ToSchema)]
pub struct ApprovalView {
    call_id: String,
    turn: u32,
    tool: String,
    action: String,
    /// The model's arguments, as JSON text.
    arguments: String,
    /// `pending`, `approved`, `denied` or `expired`.
    status: String,
    requested_by: String,
    requested_at: String,
    expires_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    resolved_by: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    resolved_at: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct ApprovalList {
    approvals: Vec<ApprovalView>,
}

fn some(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

/// Approve or deny a tool call the session's turn waits on. Only the first answer
/// counts; an answer after the wait ran out is refused (409).
#[utoipa::path(post, path = "/v1/sessions/{id}/approvals/{call_id}", tag = "sessions",
    params(("id" = String, Path, description = "the session's id"), ("call_id" = String, Path, description = "the tool call's id, as `approval_required` named it")),
    request_body = ApprovalAnswer,
    responses((status = 200, body = ApprovalGiven), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, body = Problem), (status = 409, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn answer(
    State(gateway): State<Gateway>,
    auth: Authenticated,
    Path((id, call_id)): Path<(String, String)>,
    body: Result<Json<ApprovalAnswer>, JsonRejection>,
) -> Result<Json<ApprovalGiven>, ApiError> {
    auth.principal.require(Capability::ToolsApprove)?;
    let b = json_body(body)?;
    let r = gateway
        .orchestrator
        .clone()
        .resolve_approval(auth.forward(pb::ResolveApprovalRequest {
            session_id: id,
            call_id,
            approve: b.approve,
            reason: b.reason,
        }))
        .answer()
        .await?;
    Ok(Json(ApprovalGiven {
        session_id: r.session_id,
        turn: r.turn,
        call_id: r.call_id,
        approved: r.approved,
    }))
}

/// The session's tool-call approvals, newest first: those pending and how the others
/// ended.
#[utoipa::path(get, path = "/v1/sessions/{id}/approvals", tag = "sessions",
    params(("id" = String, Path, description = "the session's id")),
    responses((status = 200, body = ApprovalList), (status = 401, body = Problem), (status = 404, body = Problem)),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn list(
    State(gateway): State<Gateway>,
    auth: Authenticated,
    Path(id): Path<String>,
) -> Result<Json<ApprovalList>, ApiError> {
    auth.principal.require(Capability::SessionsRead)?;
    let r = gateway
        .orchestrator
        .clone()
        .list_approvals(auth.forward(pb::ListApprovalsRequest { session_id: id }))
        .answer()
        .await?;
    Ok(Json(ApprovalList {
        approvals: r
            .approvals
            .into_iter()
            .map(|a| ApprovalView {
                call_id: a.call_id,
                turn: a.turn,
                tool: a.tool,
                action: a.action,
                arguments: a.arguments,
                status: a.status,
                requested_by: a.requested_by,
                requested_at: a.requested_at,
                expires_at: a.expires_at,
                resolved_by: some(a.resolved_by),
                reason: some(a.reason),
                resolved_at: some(a.resolved_at),
            })
            .collect(),
    }))
}
