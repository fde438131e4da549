//! `/v1/notifications*`: the caller's inbox (what the platform's events mean for them,
//! and for an administrator what the tenant's administrators are told), read page by
//! page or followed live over SSE; and a way for administrators to notify their users.

use std::convert::Infallible;

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use somagent_common::auth::Capability;
use somagent_common::clock::rfc3339_ms;
use somagent_common::error::ApiError;
use somagent_common::proto::common::v1::PageRequest;
use somagent_common::proto::notification::v1 as pb;
use utoipa::{IntoParams, ToSchema};

use super::Authenticated;
use super::body::json_body;
use super::forward::Answer;
use super::views::Problem;
use crate::Gateway;

/// A notification as the caller sees it.
#[derive(Serialize, ToSchema)]
pub struct NotificationView {
    id: String,
    /// What happened: `turn.completed`, `tool.approval_required`, `billing.budget_threshold`...
    kind: String,
    /// `info`, `warning`, `error` or `critical`.
    severity: String,
    title: String,
    body: String,
    /// The event's facts (its session, budget, workflow...).
    #[schema(value_type = Object)]
    data: Value,
    /// `user` (the caller's own) or `tenant_admins`.
    audience: String,
    created_at: String,
    /// Absent while unread.
    #[serde(skip_serializing_if = "Option::is_none")]
    read_at: Option<String>,
    /// The platform event it came from.
    event_id: String,
}

impl From<pb::Notification> for NotificationView {
    fn from(n: pb::Notification) -> Self {
        Self {
            id: n.id,
            kind: n.kind,
            severity: n.severity,
            title: n.title,
            body: n.body,
            data: serde_json::from_str(&n.data_json).unwrap_or(Value::Null),
            audience: n.audience,
            created_at: rfc3339_ms(n.created_at_ms),
            read_at: (n.read_at_ms > 0).then(|| rfc3339_ms(n.read_at_ms)),
            event_id: n.event_id,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct NotificationPage {
    notifications: Vec<NotificationView>,
    /// Unread in the whole inbox, not only this page.
    unread: u64,
    /// For the next page (`cursor`); absent on the last.
    #[serde(skip_serializing_if = "Option::is_none")]
    next: Option<String>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct InboxParams {
    /// Only the unread ones.
    unread: Option<bool>,
    /// 1..=200, 50 by default.
    limit: Option<u32>,
    /// The `next` of the previous page.
    cursor: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct Marked {
    /// How many were unread and now are read.
    marked: u64,
}

/// What an administrator sends: to one user, or to the tenant's administrators.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SendBody {
    /// Absent: every administrator of the tenant.
    #[serde(default)]
    user_id: String,
    /// `info`, `warning`, `error` or `critical`.
    severity: String,
    title: String,
    #[serde(default)]
    body: String,
    /// `tenant.message` by default; what webhooks filter on.
    #[serde(default)]
    kind: String,
    #[serde(default)]
    #[schema(value_type = Object)]
    data: Option<Value>,
}

#[derive(Serialize, ToSchema)]
pub struct Sent {
    /// The event on `agent.notifications`; the notification follows within moments.
    event_id: String,
}

/// The caller's inbox, newest first.
#[utoipa::path(get, path = "/v1/notifications", tag = "notifications",
    params(InboxParams),
    responses((status = 200, body = NotificationPage), (status = 401, body = Problem), (status = 403, body = Problem),
              (status = 422, description = "a cursor this list did not give", body = Problem)),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn list(
    State(gateway): State<Gateway>,
    auth: Authenticated,
    Query(params): Query<InboxParams>,
) -> Result<Json<NotificationPage>, ApiError> {
    let request = pb::ListNotificationsRequest {
        unread_only: params.unread.unwrap_or(false),
        page: Some(PageRequest {
            limit: params.limit.unwrap_or(0),
            cursor: params.cursor.unwrap_or_default(),
        }),
    };
    let answer = gateway
        .notification
        .clone()
        .list_notifications(auth.forward(request))
        .answer()
        .await?;
    Ok(Json(NotificationPage {
        notifications: answer.notifications.into_iter().map(Into::into).collect(),
        unread: answer.unread,
        next: answer.page.map(|p| p.next_cursor).filter(|n| !n.is_empty()),
    }))
}

/// Notify the tenant's administrators, or one user (`settings:write`). It goes through
/// the same pipeline as the platform's own notifications: their preferences apply, and
/// webhooks receive it.
#[utoipa::path(post, path = "/v1/notifications", tag = "notifications", request_body = SendBody,
    responses((status = 202, body = Sent), (status = 401, body = Problem), (status = 403, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn send(
    State(gateway): State<Gateway>,
    auth: Authenticated,
    body: Result<Json<SendBody>, JsonRejection>,
) -> Result<(StatusCode, Json<Sent>), ApiError> {
    let b = json_body(body)?;
    let request = pb::SendRequest {
        user_id: b.user_id,
        severity: b.severity,
        title: b.title,
        body: b.body,
        kind: b.kind,
        data_json: b.data.map(|d| d.to_string()).unwrap_or_default(),
    };
    let answer = gateway
        .notification
        .clone()
        .send(auth.forward(request))
        .answer()
        .await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(Sent {
            event_id: answer.event_id,
        }),
    ))
}

/// Mark one notification read.
#[utoipa::path(post, path = "/v1/notifications/{id}/read", tag = "notifications",
    params(("id" = String, Path, description = "the notification's id")),
    responses((status = 200, body = Marked), (status = 401, body = Problem), (status = 404, body = Problem)),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn read(
    State(gateway): State<Gateway>,
    auth: Authenticated,
    Path(id): Path<String>,
) -> Result<Json<Marked>, ApiError> {
    let answer = gateway
        .notification
        .clone()
        .mark_read(auth.forward(pb::MarkReadRequest { id }))
        .answer()
        .await?;
    Ok(Json(Marked {
        marked: answer.marked,
    }))
}

/// Mark everything in the inbox up to now read.
#[utoipa::path(post, path = "/v1/notifications/read-all", tag = "notifications",
    responses((status = 200, body = Marked), (status = 401, body = Problem), (status = 403, body = Problem)),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn read_all(
    State(gateway): State<Gateway>,
    auth: Authenticated,
) -> Result<Json<Marked>, ApiError> {
    let answer = gateway
        .notification
        .clone()
        .mark_all_read(auth.forward(pb::MarkAllReadRequest {}))
        .answer()
        .await?;
    Ok(Json(Marked {
        marked: answer.marked,
    }))
}

/// The caller's new notifications as Server-Sent Events (`event: notification`, the
/// notification as data), until the credential expires or is revoked (a last `error`
/// event says which) or the gateway restarts (a last `reconnect`). What arrives while
/// disconnected is in the inbox.
#[utoipa::path(get, path = "/v1/notifications/stream", tag = "notifications",
    responses((status = 200, description = "text/event-stream of `notification` events"),
              (status = 401, body = Problem), (status = 403, body = Problem)),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn stream(
    State(gateway): State<Gateway>,
    auth: Authenticated,
) -> Result<Response, ApiError> {
    auth.principal.require(Capability::NotificationsRead)?;
    let events = gateway
        .notification
        .clone()
        .watch(auth.forward(pb::WatchRequest {}))
        .answer()
        .await?;
    let watch = crate::credential_watch::CredentialWatch::new(gateway.verifier.clone(), &auth);
    let sse = events.map(|item| {
        Ok::<_, Infallible>(match item {
            Ok(n) => Event::default()
                .event("notification")
                .data(json!(NotificationView::from(n)).to_string()),
            Err(status) => {
                let error = ApiError::from(status);
                Event::default().event("error").data(
                    json!({ "code": error.code.as_str(), "message": error.message }).to_string(),
                )
            }
        })
    });
    let sse = watch.guard(sse, |why| {
        Ok(Event::default()
            .event("error")
            .data(json!({ "code": why.code, "message": why.message }).to_string()))
    });
    let sse = super::sessions::until_stopping(
        sse,
        gateway.stopping.clone(),
        Event::default()
            .event("reconnect")
            .data(json!({ "message": "the server is restarting: reconnect, and list the inbox for what came meanwhile" }).to_string()),
    );
    let mut response = Sse::new(sse)
        .keep_alive(KeepAlive::default())
        .into_response();
    response
        .headers_mut()
        .insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(response)
}
