//! The notification service's gRPC surface: mapping only. Every call verifies the token
//! it carries and reads the caller's tenant alone; a user sees their own inbox (and an
//! administrator the administrators' notifications), and only an administrator of the
//! tenant (`settings:write`) sees or changes its webhooks.

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use serde_json::{Value, json};
use somagent_common::CancellationToken;
use somagent_common::auth::grpc::caller;
use somagent_common::auth::{Capability, Principal};
use somagent_common::error::ApiError;
use somagent_common::infra::events::{Envelope, topics};
use somagent_common::infra::outbox::Outbox;
use somagent_common::paging::PageSize;
use somagent_common::proto::notification::v1 as pb;
use somagent_common::proto::notification::v1::notification_service_server::NotificationService;
use tokio::sync::broadcast::error::RecvError;
use tonic::{Request, Response, Status};

use crate::domain::notice::Severity;
use crate::inbox::{Inbox, Reader, Stored};
use crate::live::{ADMINS, Live, NotificationHub};
use crate::webhooks::{Change, Delivery, Endpoint, Webhooks};

const MAX_PAGE: u32 = 200;
const DEFAULT_PAGE: u32 = 50;

pub struct NotificationGrpc {
    pub inbox: Inbox,
    pub webhooks: Webhooks,
    pub hub: Arc<NotificationHub>,
    pub outbox: Outbox,
    /// Wakes the sender: a retried delivery goes out at once.
    pub wake: Arc<tokio::sync::Notify>,
    pub stopping: CancellationToken,
}

fn reader(p: &Principal) -> Reader {
    Reader {
        user_id: p.subject.clone(),
        admin: p.can(Capability::TenantAdmin),
    }
}

fn page_size(page: Option<&somagent_common::proto::common::v1::PageRequest>) -> (PageSize, String) {
    let limit = page
        .map(|p| p.limit)
        .filter(|l| *l > 0)
        .unwrap_or(DEFAULT_PAGE);
    (
        PageSize::clamped(limit, MAX_PAGE),
        page.map(|p| p.cursor.clone()).unwrap_or_default(),
    )
}

fn notification_message(n: Stored) -> pb::Notification {
    pb::Notification {
        id: n.id,
        kind: n.kind,
        severity: n.severity,
        title: n.title,
        body: n.body,
        data_json: n.data,
        audience: n.audience,
        created_at_ms: n.created_at_ms,
        read_at_ms: n.read_at_ms,
        event_id: n.event_id,
    }
}

fn webhook_message(e: Endpoint) -> pb::Webhook {
    pb::Webhook {
        id: e.id,
        url: e.url,
        description: e.description,
        event_types: e.event_types,
        enabled: e.enabled,
        disabled_reason: e.disabled_reason,
        failing_since_ms: e.failing_since_ms,
        created_at_ms: e.created_at_ms,
        updated_at_ms: e.updated_at_ms,
    }
}

fn delivery_message(d: Delivery) -> pb::Delivery {
    pb::Delivery {
        id: d.id,
        webhook_id: d.endpoint_id,
        message_id: d.message_id,
        event_type: d.event_type,
        status: d.status,
        attempts: d.attempts,
        next_attempt_at_ms: d.next_attempt_at_ms,
        created_at_ms: d.created_at_ms,
        delivered_at_ms: d.delivered_at_ms,
        history: d
            .history
            .into_iter()
            .map(|a| pb::Attempt {
                number: a.number,
                at_ms: a.at_ms,
                status_code: a.status_code,
                latency_ms: a.latency_ms,
                error: a.error,
            })
            .collect(),
        payload_json: d.payload,
    }
}

/// The caller, who must administer the tenant's webhooks.
fn admin<T>(request: &Request<T>) -> Result<Principal, Status> {
    let principal = caller(request)?;
    principal.require(Capability::SettingsWrite)?;
    Ok(principal)
}

type NotificationStream = Pin<Box<dyn Stream<Item = Result<pb::Notification, Status>> + Send>>;

#[tonic::async_trait]
impl NotificationService for NotificationGrpc {
    async fn list_notifications(
        &self,
        request: Request<pb::ListNotificationsRequest>,
    ) -> Result<Response<pb::ListNotificationsResponse>, Status> {
        let principal = caller(&request)?;
        principal.require(Capability::NotificationsRead)?;
        let r = request.into_inner();
        let (size, cursor) = page_size(r.page.as_ref());
        let page = self
            .inbox
            .list(
                &principal.tenant,
                &reader(&principal),
                r.unread_only,
                size,
                &cursor,
            )
            .await
            .map_err(|e| match e {
                somagent_common::infra::db::DbError::Invalid(m) => {
                    ApiError::validation("cursor", m)
                }
                other => ApiError::internal(other),
            })?;
        Ok(Response::new(pb::ListNotificationsResponse {
            notifications: page
                .notifications
                .into_iter()
                .map(notification_message)
                .collect(),
            page: Some(somagent_common::proto::common::v1::PageInfo {
                next_cursor: page.next_cursor,
            }),
            unread: page.unread,
        }))
    }

    async fn mark_read(
        &self,
        request: Request<pb::MarkReadRequest>,
    ) -> Result<Response<pb::MarkReadResponse>, Status> {
        let principal = caller(&request)?;
        principal.require(Capability::NotificationsRead)?;
        let id = request.into_inner().id;
        let seen = self
            .inbox
            .mark_read(&principal.tenant, &reader(&principal), &id)
            .await
            .map_err(ApiError::internal)?;
        if !seen {
            return Err(ApiError::not_found("notification").into());
        }
        Ok(Response::new(pb::MarkReadResponse { marked: 1 }))
    }

    async fn mark_all_read(
        &self,
        request: Request<pb::MarkAllReadRequest>,
    ) -> Result<Response<pb::MarkReadResponse>, Status> {
        let principal = caller(&request)?;
        principal.require(Capability::NotificationsRead)?;
        let marked = self
            .inbox
            .mark_all_read(&principal.tenant, &reader(&principal))
            .await
            .map_err(ApiError::internal)?;
        Ok(Response::new(pb::MarkReadResponse { marked }))
    }

    type WatchStream = NotificationStream;

    async fn watch(
        &self,
        request: Request<pb::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let principal = caller(&request)?;
        principal.require(Capability::NotificationsRead)?;
        let mut own = self.hub.subscribe(&principal.tenant, &principal.subject);
        let mut admins = principal
            .can(Capability::TenantAdmin)
            .then(|| self.hub.subscribe(&principal.tenant, ADMINS));
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<pb::Notification, Status>>(256);
        let stopping = self.stopping.clone();
        tokio::spawn(async move {
            loop {
                let next: Result<Live, RecvError> = tokio::select! {
                    () = stopping.cancelled() => return,
                    () = tx.closed() => return,
                    n = own.recv() => n,
                    n = async { match admins.as_mut() { Some(rx) => rx.recv().await, None => std::future::pending().await } } => n,
                };
                match next {
                    Ok(live) => {
                        if tx
                            .send(Ok(notification_message(live.notification)))
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                    // A watcher that fell behind lists the inbox for what it missed.
                    Err(RecvError::Lagged(_)) => {}
                    Err(RecvError::Closed) => return,
                }
            }
        });
        Ok(Response::new(Box::pin(futures::stream::unfold(
            rx,
            |mut rx| async move { rx.recv().await.map(|item| (item, rx)) },
        ))))
    }

    async fn send(
        &self,
        request: Request<pb::SendRequest>,
    ) -> Result<Response<pb::SendResponse>, Status> {
        let principal = admin(&request)?;
        let r = request.into_inner();
        let severity = Severity::parse(&r.severity).ok_or_else(|| {
            ApiError::validation(
                "severity",
                format!("is one of {}", Severity::NAMES.join(", ")),
            )
        })?;
        let title = r.title.trim();
        if title.is_empty() || title.chars().count() > 200 {
            return Err(ApiError::validation("title", "is 1 to 200 characters").into());
        }
        if r.body.chars().count() > 4000 {
            return Err(ApiError::validation("body", "is at most 4000 characters").into());
        }
        let kind = if r.kind.is_empty() {
            "tenant.message".to_owned()
        } else {
            r.kind
        };
        // The platform's own kinds (`billing.…`, `turn.…`) are not an admin's to send.
        if crate::domain::endpoint::check_types(std::slice::from_ref(&kind)).is_err()
            || kind.ends_with('*')
            || !kind.starts_with("tenant.")
        {
            return Err(ApiError::validation(
                "kind",
                "starts with `tenant.`, such as `tenant.maintenance`",
            )
            .into());
        }
        let details: Value = if r.data_json.is_empty() {
            json!({})
        } else {
            serde_json::from_str(&r.data_json)
                .map_err(|e| ApiError::validation("data", format!("is not JSON: {e}")))?
        };
        let mut data = json!({
            "severity": severity.as_str(),
            "title": title,
            "body": r.body,
            "details": details,
            "sent_by": principal.subject,
        });
        if r.user_id.is_empty() {
            data["audience"] = json!("tenant_admins");
        } else {
            data["audience"] = json!("user");
            data["user_id"] = json!(r.user_id);
        }
        let event = Envelope::new(kind, "notification", principal.tenant.clone(), data);
        self.outbox
            .publish(topics::NOTIFICATIONS, principal.tenant.as_str(), &event)
            .await
            .map_err(ApiError::internal)?;
        Ok(Response::new(pb::SendResponse {
            event_id: event.id.to_string(),
        }))
    }

    async fn create_webhook(
        &self,
        request: Request<pb::CreateWebhookRequest>,
    ) -> Result<Response<pb::CreateWebhookResponse>, Status> {
        let principal = admin(&request)?;
        let r = request.into_inner();
        let (endpoint, secret) = self
            .webhooks
            .create(&principal.tenant, &r.url, &r.description, &r.event_types)
            .await?;
        Ok(Response::new(pb::CreateWebhookResponse {
            webhook: Some(webhook_message(endpoint)),
            secret: secret.to_string(),
        }))
    }

    async fn list_webhooks(
        &self,
        request: Request<pb::ListWebhooksRequest>,
    ) -> Result<Response<pb::ListWebhooksResponse>, Status> {
        let principal = admin(&request)?;
        let webhooks = self
            .webhooks
            .list(&principal.tenant)
            .await
            .map_err(ApiError::internal)?;
        Ok(Response::new(pb::ListWebhooksResponse {
            webhooks: webhooks.into_iter().map(webhook_message).collect(),
        }))
    }

    async fn get_webhook(
        &self,
        request: Request<pb::GetWebhookRequest>,
    ) -> Result<Response<pb::Webhook>, Status> {
        let principal = admin(&request)?;
        let found = self
            .webhooks
            .get(&principal.tenant, &request.into_inner().id)
            .await?;
        Ok(Response::new(webhook_message(found)))
    }

    async fn update_webhook(
        &self,
        request: Request<pb::UpdateWebhookRequest>,
    ) -> Result<Response<pb::Webhook>, Status> {
        let principal = admin(&request)?;
        let r = request.into_inner();
        let change = Change {
            url: r.url,
            description: r.description,
            event_types: r.replace_event_types.then_some(r.event_types),
            enabled: r.enabled,
        };
        let updated = self
            .webhooks
            .update(&principal.tenant, &r.id, change)
            .await?;
        Ok(Response::new(webhook_message(updated)))
    }

    async fn delete_webhook(
        &self,
        request: Request<pb::DeleteWebhookRequest>,
    ) -> Result<Response<pb::DeleteWebhookResponse>, Status> {
        let principal = admin(&request)?;
        self.webhooks
            .delete(&principal.tenant, &request.into_inner().id)
            .await?;
        Ok(Response::new(pb::DeleteWebhookResponse {}))
    }

    async fn rotate_webhook_secret(
        &self,
        request: Request<pb::GetWebhookRequest>,
    ) -> Result<Response<pb::CreateWebhookResponse>, Status> {
        let principal = admin(&request)?;
        let (endpoint, secret) = self
            .webhooks
            .rotate(&principal.tenant, &request.into_inner().id)
            .await?;
        Ok(Response::new(pb::CreateWebhookResponse {
            webhook: Some(webhook_message(endpoint)),
            secret: secret.to_string(),
        }))
    }

    async fn list_deliveries(
        &self,
        request: Request<pb::ListDeliveriesRequest>,
    ) -> Result<Response<pb::ListDeliveriesResponse>, Status> {
        let principal = admin(&request)?;
        let r = request.into_inner();
        let (size, cursor) = page_size(r.page.as_ref());
        let (deliveries, next_cursor) = self
            .webhooks
            .deliveries(&principal.tenant, &r.webhook_id, &r.status, size, &cursor)
            .await?;
        Ok(Response::new(pb::ListDeliveriesResponse {
            deliveries: deliveries.into_iter().map(delivery_message).collect(),
            page: Some(somagent_common::proto::common::v1::PageInfo { next_cursor }),
        }))
    }

    async fn retry_delivery(
        &self,
        request: Request<pb::RetryDeliveryRequest>,
    ) -> Result<Response<pb::Delivery>, Status> {
        let principal = admin(&request)?;
        let r = request.into_inner();
        let delivery = self
            .webhooks
            .retry(&principal.tenant, &r.webhook_id, &r.delivery_id)
            .await?;
        self.wake.notify_one();
        Ok(Response::new(delivery_message(delivery)))
    }
}
