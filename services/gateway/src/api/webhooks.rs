//! `/v1/webhooks*`: the tenant's webhook endpoints (`settings:write`). Each receives
//! the notification kinds it names, signed as the Standard Webhooks specification says
//! (`webhook-id`, `webhook-timestamp`, `webhook-signature`), at least once, tried again
//! with growing delays over about a day, then dead-lettered; its delivery log shows
//! every try, and a delivery can be sent again by hand.

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::Value;
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

#[derive(Serialize, ToSchema)]
pub struct WebhookView {
    id: String,
    url: String,
    description: String,
    /// The notification kinds it receives (`turn.completed`, `billing.*`); empty: all.
    event_types: Vec<String>,
    enabled: bool,
    /// Why the platform disabled it (every delivery failing for days).
    #[serde(skip_serializing_if = "String::is_empty")]
    disabled_reason: String,
    /// Since when its deliveries fail without a success; absent when healthy.
    #[serde(skip_serializing_if = "Option::is_none")]
    failing_since: Option<String>,
    created_at: String,
    updated_at: String,
}

impl From<pb::Webhook> for WebhookView {
    fn from(w: pb::Webhook) -> Self {
        Self {
            id: w.id,
            url: w.url,
            description: w.description,
            event_types: w.event_types,
            enabled: w.enabled,
            disabled_reason: w.disabled_reason,
            failing_since: (w.failing_since_ms > 0).then(|| rfc3339_ms(w.failing_since_ms)),
            created_at: rfc3339_ms(w.created_at_ms),
            updated_at: rfc3339_ms(w.updated_at_ms),
        }
    }
}

/// An endpoint with its signing secret: shown on creation and rotation only.
#[derive(Serialize, ToSchema)]
pub struct WebhookWithSecret {
    #[serde(flatten)]
    webhook: WebhookView,
    /// `whsec_<base64 key>`: keep it; it is never shown again.
    secret: String,
}

fn with_secret(answer: pb::CreateWebhookResponse) -> WebhookWithSecret {
    WebhookWithSecret {
        webhook: answer.webhook.unwrap_or_default().into(),
        secret: answer.secret,
    }
}

#[derive(Serialize, ToSchema)]
pub struct WebhookList {
    webhooks: Vec<WebhookView>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewWebhook {
    /// An http(s) URL on a public address.
    url: String,
    #[serde(default)]
    description: String,
    /// Notification kinds, or families such as `billing.*`; absent or `["*"]`: all.
    #[serde(default)]
    event_types: Vec<String>,
}

/// What a change sets; what is absent stays.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookChange {
    url: Option<String>,
    description: Option<String>,
    event_types: Option<Vec<String>>,
    /// `true` enables a disabled endpoint again (its health starts afresh).
    enabled: Option<bool>,
}

#[derive(Serialize, ToSchema)]
pub struct AttemptView {
    number: u32,
    at: String,
    /// Absent when no answer came (refused, timed out).
    #[serde(skip_serializing_if = "Option::is_none")]
    status_code: Option<u32>,
    latency_ms: u64,
    #[serde(skip_serializing_if = "String::is_empty")]
    error: String,
}

#[derive(Serialize, ToSchema)]
pub struct DeliveryView {
    id: String,
    webhook_id: String,
    /// The `webhook-id` header, the same on every try: receivers deduplicate on it.
    message_id: String,
    event_type: String,
    /// `pending`, `delivered` or `dead` (every try failed).
    status: String,
    attempts: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_attempt_at: Option<String>,
    created_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    delivered_at: Option<String>,
    /// The body as sent.
    #[schema(value_type = Object)]
    payload: Value,
    history: Vec<AttemptView>,
}

impl From<pb::Delivery> for DeliveryView {
    fn from(d: pb::Delivery) -> Self {
        Self {
            id: d.id,
            webhook_id: d.webhook_id,
            message_id: d.message_id,
            event_type: d.event_type,
            status: d.status,
            attempts: d.attempts,
            next_attempt_at: (d.next_attempt_at_ms > 0).then(|| rfc3339_ms(d.next_attempt_at_ms)),
            created_at: rfc3339_ms(d.created_at_ms),
            delivered_at: (d.delivered_at_ms > 0).then(|| rfc3339_ms(d.delivered_at_ms)),
            payload: serde_json::from_str(&d.payload_json).unwrap_or(Value::Null),
            history: d
                .history
                .into_iter()
                .map(|a| AttemptView {
                    number: a.number,
                    at: rfc3339_ms(a.at_ms),
                    status_code: (a.status_code > 0).then_some(a.status_code),
                    latency_ms: a.latency_ms,
                    error: a.error,
                })
                .collect(),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct DeliveryPage {
    deliveries: Vec<DeliveryView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    next: Option<String>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeliveryParams {
    /// `pending`, `delivered` or `dead` (the dead-letter list); all by default.
    status: Option<String>,
    /// 1..=200, 50 by default.
    limit: Option<u32>,
    cursor: Option<String>,
}

/// Add an endpoint. The answer carries its signing secret, this once.
#[utoipa::path(post, path = "/v1/webhooks", tag = "notifications", request_body = NewWebhook,
    responses((status = 201, body = WebhookWithSecret), (status = 401, body = Problem), (status = 403, body = Problem),
              (status = 422, description = "not an http(s) URL, a private address, an unknown event type", body = Problem)),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn create(
    State(gateway): State<Gateway>,
    auth: Authenticated,
    body: Result<Json<NewWebhook>, JsonRejection>,
) -> Result<(StatusCode, Json<WebhookWithSecret>), ApiError> {
    let b = json_body(body)?;
    let request = pb::CreateWebhookRequest {
        url: b.url,
        description: b.description,
        event_types: b.event_types,
    };
    let answer = gateway
        .notification
        .clone()
        .create_webhook(auth.forward(request))
        .answer()
        .await?;
    Ok((StatusCode::CREATED, Json(with_secret(answer))))
}

/// The tenant's endpoints.
#[utoipa::path(get, path = "/v1/webhooks", tag = "notifications",
    responses((status = 200, body = WebhookList), (status = 401, body = Problem), (status = 403, body = Problem)),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn list(
    State(gateway): State<Gateway>,
    auth: Authenticated,
) -> Result<Json<WebhookList>, ApiError> {
    let answer = gateway
        .notification
        .clone()
        .list_webhooks(auth.forward(pb::ListWebhooksRequest {}))
        .answer()
        .await?;
    Ok(Json(WebhookList {
        webhooks: answer.webhooks.into_iter().map(Into::into).collect(),
    }))
}

/// One endpoint.
#[utoipa::path(get, path = "/v1/webhooks/{id}", tag = "notifications",
    params(("id" = String, Path, description = "the endpoint's id")),
    responses((status = 200, body = WebhookView), (status = 401, body = Problem), (status = 404, body = Problem)),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn get(
    State(gateway): State<Gateway>,
    auth: Authenticated,
    Path(id): Path<String>,
) -> Result<Json<WebhookView>, ApiError> {
    let answer = gateway
        .notification
        .clone()
        .get_webhook(auth.forward(pb::GetWebhookRequest { id }))
        .answer()
        .await?;
    Ok(Json(answer.into()))
}

/// Change an endpoint: its URL, description, event types, or enable it again.
#[utoipa::path(patch, path = "/v1/webhooks/{id}", tag = "notifications", request_body = WebhookChange,
    params(("id" = String, Path, description = "the endpoint's id")),
    responses((status = 200, body = WebhookView), (status = 401, body = Problem), (status = 404, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn update(
    State(gateway): State<Gateway>,
    auth: Authenticated,
    Path(id): Path<String>,
    body: Result<Json<WebhookChange>, JsonRejection>,
) -> Result<Json<WebhookView>, ApiError> {
    let b = json_body(body)?;
    let request = pb::UpdateWebhookRequest {
        id,
        url: b.url,
        description: b.description,
        replace_event_types: b.event_types.is_some(),
        event_types: b.event_types.unwrap_or_default(),
        enabled: b.enabled,
    };
    let answer = gateway
        .notification
        .clone()
        .update_webhook(auth.forward(request))
        .answer()
        .await?;
    Ok(Json(answer.into()))
}

/// Remove an endpoint, with its deliveries and their log.
#[utoipa::path(delete, path = "/v1/webhooks/{id}", tag = "notifications",
    params(("id" = String, Path, description = "the endpoint's id")),
    responses((status = 204), (status = 401, body = Problem), (status = 404, body = Problem)),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn delete(
    State(gateway): State<Gateway>,
    auth: Authenticated,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    gateway
        .notification
        .clone()
        .delete_webhook(auth.forward(pb::DeleteWebhookRequest { id }))
        .answer()
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A new signing secret, shown this once; the old one signs nothing from now on.
#[utoipa::path(post, path = "/v1/webhooks/{id}/secret/rotate", tag = "notifications",
    params(("id" = String, Path, description = "the endpoint's id")),
    responses((status = 200, body = WebhookWithSecret), (status = 401, body = Problem), (status = 404, body = Problem)),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn rotate_secret(
    State(gateway): State<Gateway>,
    auth: Authenticated,
    Path(id): Path<String>,
) -> Result<Json<WebhookWithSecret>, ApiError> {
    let answer = gateway
        .notification
        .clone()
        .rotate_webhook_secret(auth.forward(pb::GetWebhookRequest { id }))
        .answer()
        .await?;
    Ok(Json(with_secret(answer)))
}

/// An endpoint's deliveries, newest first, each with its tries (the delivery log);
/// `?status=dead` is its dead-letter list.
#[utoipa::path(get, path = "/v1/webhooks/{id}/deliveries", tag = "notifications",
    params(("id" = String, Path, description = "the endpoint's id"), DeliveryParams),
    responses((status = 200, body = DeliveryPage), (status = 401, body = Problem), (status = 404, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn deliveries(
    State(gateway): State<Gateway>,
    auth: Authenticated,
    Path(id): Path<String>,
    Query(params): Query<DeliveryParams>,
) -> Result<Json<DeliveryPage>, ApiError> {
    let request = pb::ListDeliveriesRequest {
        webhook_id: id,
        status: params.status.unwrap_or_default(),
        page: Some(PageRequest {
            limit: params.limit.unwrap_or(0),
            cursor: params.cursor.unwrap_or_default(),
        }),
    };
    let answer = gateway
        .notification
        .clone()
        .list_deliveries(auth.forward(request))
        .answer()
        .await?;
    Ok(Json(DeliveryPage {
        deliveries: answer.deliveries.into_iter().map(Into::into).collect(),
        next: answer.page.map(|p| p.next_cursor).filter(|n| !n.is_empty()),
    }))
}

/// Send a delivery again now (a dead one included), signed afresh with the same
/// `webhook-id` and body.
#[utoipa::path(post, path = "/v1/webhooks/{id}/deliveries/{delivery_id}/retry", tag = "notifications",
    params(("id" = String, Path, description = "the endpoint's id"), ("delivery_id" = String, Path, description = "the delivery's id")),
    responses((status = 202, body = DeliveryView), (status = 401, body = Problem), (status = 404, body = Problem)),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn retry(
    State(gateway): State<Gateway>,
    auth: Authenticated,
    Path((id, delivery_id)): Path<(String, String)>,
) -> Result<(StatusCode, Json<DeliveryView>), ApiError> {
    let answer = gateway
        .notification
        .clone()
        .retry_delivery(auth.forward(pb::RetryDeliveryRequest {
            webhook_id: id,
            delivery_id,
        }))
        .answer()
        .await?;
    Ok((StatusCode::ACCEPTED, Json(answer.into())))
}
