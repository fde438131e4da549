//! The platform's events into notifications: `agent.notifications`, `conversation.events`
//! and `workflow.events`, in batches through the one consumer loop. Each batch is one
//! transaction: the notifications its events make (those the users' preferences let
//! into their inboxes) and the webhook deliveries they queue commit together, and only
//! then is the batch acknowledged; an event that comes again finds its rows and adds
//! nothing. Then the new notifications go to their watchers, and the senders are woken.
//! A notification also goes to each recipient's own channels (email when SMTP is
//! configured, Slack) where they asked for it at its severity (a user, or each of the
//! tenant's administrators), held until their quiet hours end unless it is critical.

use std::sync::Arc;

use serde_json::Value;
use somagent_common::tenant::TenantId;

use somagent_common::clock::unix_now_ms;
use somagent_common::error::ErrorCode;
use somagent_common::infra::db::Db;
use somagent_common::infra::events::{
    BatchHandler, ConsumeOptions, Delivery, EventBus, EventsError, HandleError, consume_batches,
    topics,
};
use somagent_common::settings_cache::SettingsCache;
use tokio::sync::Notify;

use crate::admins::TenantAdmins;
use crate::domain::notice::{self, Audience, Notice, Severity};
use crate::domain::{preferences, quiet_hours};
use crate::emails::{Emails, Recipient};
use crate::inbox::Inbox;
use crate::live::{Live, NotificationHub};
use crate::webhooks::Webhooks;

/// The consumer group: every notification replica shares the topics' partitions.
pub const GROUP: &str = "notification-intake";
/// Events per batch.
pub const BATCH: usize = 500;
pub const TOPICS: &[&str] = &[
    topics::NOTIFICATIONS,
    topics::CONVERSATION,
    topics::WORKFLOW,
];

pub struct Intake {
    pub db: Db,
    pub preferences: Arc<SettingsCache>,
    pub hub: Arc<NotificationHub>,
    /// Wakes the webhook sender.
    pub wake: Arc<Notify>,
    pub outgoing: Outgoing,
}

/// The channels that reach people outside the platform: who administers each tenant,
/// and the couriers to wake, by channel (email only when SMTP is configured).
pub struct Outgoing {
    pub admins: Arc<TenantAdmins>,
    pub couriers: Vec<(&'static str, Arc<Notify>)>,
}

impl Intake {
    /// A user's preferences; `None` when they cannot be read because the user is gone
    /// or may no longer read them (the defaults apply). Settings being away is worth
    /// another try.
    async fn preferences_of(
        &self,
        tenant: &TenantId,
        user: &str,
    ) -> Result<Option<Arc<Value>>, HandleError> {
        match self.preferences.preferences(tenant, user).await {
            Ok(prefs) => Ok(Some(prefs)),
            // The user is gone, or may not be acted for: the defaults apply.
            Err(e) if matches!(e.code, ErrorCode::NotFound | ErrorCode::Forbidden) => Ok(None),
            // Anything else may pass on another try (the consumer retries, then
            // dead-letters the batch's event rather than drop a message quietly).
            Err(e) => Err(HandleError::Transient(format!(
                "cannot read {user}'s preferences: {}",
                e.message
            ))),
        }
    }

    /// Whether `notice` goes to an inbox: the administrators' always; a user's as
    /// their preferences say.
    async fn to_inbox(&self, tenant: &TenantId, notice: &Notice) -> Result<bool, HandleError> {
        let Audience::User(user) = &notice.audience else {
            return Ok(true);
        };
        Ok(self
            .preferences_of(tenant, user)
            .await?
            .is_none_or(|prefs| preferences::inbox_allows(&prefs, notice.severity)))
    }

    /// Where `notice` goes on the people's own channels, each with when it may go.
    async fn to_people(
        &self,
        tenant: &TenantId,
        notice: &Notice,
        now_ms: i64,
    ) -> Result<Vec<Recipient>, HandleError> {
        if self.outgoing.couriers.is_empty() {
            return Ok(Vec::new());
        }
        let users: Vec<String> = match &notice.audience {
            Audience::User(user) => vec![user.clone()],
            Audience::TenantAdmins => match self.outgoing.admins.of(tenant).await {
                Ok(ids) => ids.to_vec(),
                // A refusal will not change on another try (a misconfigured grant).
                Err(status)
                    if matches!(
                        status.code(),
                        tonic::Code::PermissionDenied | tonic::Code::Unauthenticated
                    ) =>
                {
                    tracing::warn!(tenant = %tenant, error = %status.message(),
                        "identity refuses to say who administers a tenant; nothing sent to its admins");
                    Vec::new()
                }
                Err(status) => {
                    return Err(HandleError::Transient(format!(
                        "cannot ask who administers the tenant: {}",
                        status.message()
                    )));
                }
            },
        };
        let now =
            jiff::Timestamp::from_millisecond(now_ms).unwrap_or_else(|_| jiff::Timestamp::now());
        let mut out: Vec<Recipient> = Vec::new();
        for user in users {
            let Some(prefs) = self.preferences_of(tenant, &user).await? else {
                continue;
            };
            // A critical notification does not wait for the morning.
            let not_before = if notice.severity == Severity::Critical {
                now_ms
            } else {
                quiet_hours::quiet_until(preferences::quiet_hours(&prefs), now)
                    .map_or(now_ms, |end| end.as_millisecond())
            };
            for (channel, _) in &self.outgoing.couriers {
                let Some(address) = preferences::address_on(&prefs, channel, notice.severity)
                else {
                    continue;
                };
                if !out
                    .iter()
                    .any(|r| r.channel == *channel && r.address == address)
                {
                    out.push(Recipient {
                        channel,
                        address,
                        user_id: user.clone(),
                        not_before_ms: not_before,
                    });
                }
            }
        }
        Ok(out)
    }
}

impl BatchHandler for Intake {
    async fn handle_batch(&self, deliveries: &[Delivery]) -> Result<(), HandleError> {
        let now = unix_now_ms();
        let mut notices = Vec::new();
        for d in deliveries {
            if let Some(n) = notice::from_event(&d.topic, &d.event) {
                let inbox = self.to_inbox(&d.event.tenant, &n).await?;
                let emails = self.to_people(&d.event.tenant, &n, now).await?;
                notices.push((d, n, inbox, emails));
            }
        }
        if notices.is_empty() {
            return Ok(());
        }
        let transient =
            |e: somagent_common::infra::db::DbError| HandleError::Transient(e.to_string());
        let mut tx = self.db.begin().await.map_err(transient)?;
        let mut added = Vec::new();
        let mut queued = 0;
        let mut sent_on: Vec<&'static str> = Vec::new();
        for (d, n, inbox, emails) in &notices {
            let tenant = &d.event.tenant;
            if *inbox
                && let Some(stored) = Inbox::add(&mut tx, tenant, n, &d.event.id, now)
                    .await
                    .map_err(transient)?
            {
                added.push(Live::of(tenant, stored));
            }
            queued += Webhooks::enqueue(&mut tx, tenant, n, now)
                .await
                .map_err(transient)?;
            for to in emails {
                if Emails::enqueue(&mut tx, tenant, n, to)
                    .await
                    .map_err(transient)?
                    && !sent_on.contains(&to.channel)
                {
                    sent_on.push(to.channel);
                }
            }
        }
        tx.commit()
            .await
            .map_err(|e| HandleError::Transient(e.to_string()))?;
        if queued > 0 {
            self.wake.notify_one();
        }
        for (channel, wake) in &self.outgoing.couriers {
            if sent_on.contains(channel) {
                wake.notify_one();
            }
        }
        for live in added {
            self.hub.send(live);
        }
        Ok(())
    }
}

/// Joins the group on the notifying topics: the loop to spawn.
pub async fn consumer(
    events: &EventBus,
    intake: Intake,
    options: ConsumeOptions,
) -> Result<impl std::future::Future<Output = ()> + Send + 'static, EventsError> {
    consume_batches(events, GROUP, TOPICS, intake, BATCH, options).await
}
