//! The notification service: what the platform's events mean for its people, in their
//! inboxes, live, and at the tenants' webhooks.
//!
//! Layout:
//! - `domain/`: events as notices, preferences, endpoints, signatures, retries; no I/O.
//! - `inbox`: each user's notifications and what they read, in the service's database.
//! - `webhooks`: the tenants' endpoints (secrets sealed) and the delivery queue and log.
//! - `intake`: the notifying topics into inboxes and deliveries, in batches, once each.
//! - `sender`: signed webhook deliveries with retries, dead letters and disabling.
//! - `emails`, `courier`, `slack`: the outgoing queue (email, Slack) and its sending
//!   over SMTP and through the tenant's Slack tool.
//! - `admins`: who administers a tenant, as identity says.
//! - `live`: new notifications to their watchers in every replica.
//! - `api/grpc`: the `somagent.notification.v1` service the gateway calls.

pub mod admins;
mod api;
pub mod config;
pub mod courier;
pub mod domain;
pub mod emails;
pub mod inbox;
pub mod intake;
pub mod live;
pub mod sender;
pub mod slack;
pub mod webhooks;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use somagent_common::app::{ServiceApp, ServiceBuilder, ServiceContext};
use somagent_common::auth::{ServiceCredential, ServiceTokens, Verifier, builtin_issuer};
use somagent_common::clock::unix_now_ms;
use somagent_common::infra::db::Migration;
use somagent_common::infra::events::ConsumeOptions;
use somagent_common::infra::outbox::Outbox;
use somagent_common::proto::identity::v1::identity_service_client::IdentityServiceClient;
use somagent_common::proto::notification::v1::notification_service_server::NotificationServiceServer;
use somagent_common::proto::settings::v1::settings_service_client::SettingsServiceClient;
use somagent_common::proto::tool::v1::tool_service_client::ToolServiceClient;
use somagent_common::service::{IDENTITY, SETTINGS, TOOL};
use somagent_common::settings_cache::SettingsCache;
use tokio::sync::Notify;

pub use somagent_common::service::NOTIFICATION as SPEC;

/// This service's own schema migrations, applied after the common ones.
pub const MIGRATIONS: &[Migration] = &[
    inbox::MIGRATION,
    emails::MIGRATIONS[0],
    emails::MIGRATIONS[1],
];

/// Re-seals the webhook secrets `scope` asks for under the current master key of
/// `sealer`, for `somagent keys rotate`; how many.
pub async fn reseal(
    db: somagent_common::infra::db::Db,
    sealer: Arc<somagent_common::secrets::Sealer>,
    scope: somagent_common::secrets::ResealScope,
) -> anyhow::Result<u64> {
    webhooks::Webhooks::new(db, sealer, false)
        .reseal(scope)
        .await
}

/// Builds the service from its context, ready to run.
pub async fn build(ctx: ServiceContext) -> anyhow::Result<ServiceApp> {
    let config = ctx.config.clone();
    let settings: config::NotificationConfig = ctx.settings()?;
    let sender_config = settings.sender()?;
    let builder = ServiceBuilder::new(ctx, MIGRATIONS).await?;
    let db = builder
        .db()
        .context("notification needs its database")?
        .clone();
    let shared = &builder.context().backends;
    let cache = shared
        .cache
        .clone()
        .context("notification needs the cache")?;
    let events = shared
        .events
        .clone()
        .context("notification needs the event bus")?;
    let outbox = Outbox::new(db.clone(), events.clone());
    builder.spawn(outbox.clone().relay(builder.stopping()));
    let sealer = Arc::new(somagent_common::secrets::load_sealer(&config)?);
    if settings.allow_private_networks {
        tracing::warn!(
            "webhooks may call private and loopback addresses (notification.allow_private_networks)"
        );
    }
    let webhooks = webhooks::Webhooks::new(db.clone(), sealer, settings.allow_private_networks);
    let hub = live::NotificationHub::over(&cache, &builder);
    let wake = Arc::new(Notify::new());
    let tokens = Arc::new(ServiceTokens::connect(&config, &SPEC)?);
    let preferences = SettingsCache::new(
        SettingsServiceClient::new(config.channel(&SETTINGS, Some(Duration::from_secs(10)))?),
        tokens.clone(),
    );
    let options = ConsumeOptions::new(builder.stopping()).metrics(builder.consumer_metrics());
    builder.spawn(
        preferences
            .follow(&events, "notification-settings", options.clone())
            .await?,
    );
    let queue = emails::Emails::new(db.clone());
    let courier_metrics = courier::CourierMetrics::register(builder.metrics());
    let mut couriers = Vec::new();
    if let Some(url) = somagent_common::config::secret_from_env("SMTP_URL")? {
        let from = std::env::var("SOMAGENT_SMTP_FROM")
            .ok()
            .filter(|f| !f.is_empty())
            .unwrap_or_else(|| "SomaAgent <notifications@somagent.invalid>".into());
        let wake = Arc::new(Notify::new());
        let mailer = courier::Courier {
            queue: queue.clone(),
            carrier: courier::Smtp::new(&url, &from)?,
            schedule: sender_config.schedule.clone(),
            wake: wake.clone(),
            metrics: courier_metrics.clone(),
        };
        tracing::info!(server = %somagent_common::config::redact(&url), "emails go out over SMTP");
        builder.spawn(mailer.run(builder.stopping()));
        couriers.push(("email", wake));
    } else {
        tracing::info!("no SOMAGENT_SMTP_URL: notifications are not emailed");
    }
    let slack_wake = Arc::new(Notify::new());
    let slack = courier::Courier {
        queue,
        carrier: slack::Slack {
            tool: ToolServiceClient::new(config.channel(&TOOL, Some(Duration::from_secs(60)))?),
            tokens: tokens.clone(),
        },
        schedule: sender_config.schedule.clone(),
        wake: slack_wake.clone(),
        metrics: courier_metrics,
    };
    builder.spawn(slack.run(builder.stopping()));
    couriers.push(("slack", slack_wake));
    let outgoing = intake::Outgoing {
        admins: Arc::new(admins::TenantAdmins::new(
            IdentityServiceClient::new(config.channel(&IDENTITY, Some(Duration::from_secs(10)))?),
            ServiceCredential::load(&config.data_dir, &SPEC)?,
        )),
        couriers,
    };
    let intake = intake::Intake {
        db: db.clone(),
        preferences,
        hub: hub.clone(),
        wake: wake.clone(),
        outgoing,
    };
    builder.spawn(intake::consumer(&events, intake, options).await?);
    let sender = sender::Sender::new(
        webhooks.clone(),
        sender_config,
        wake.clone(),
        outbox.clone(),
        builder.metrics(),
    )?;
    builder.spawn(sender.run(builder.stopping()));
    let inbox = inbox::Inbox::new(db);
    builder.spawn(prune(
        inbox.clone(),
        Duration::from_secs(settings.retention_days.max(1) * 86_400),
        builder.stopping(),
    ));
    let verifier = Arc::new(Verifier::new(
        vec![builtin_issuer(&config, &SPEC)],
        Some(cache),
    ));
    let service = NotificationServiceServer::new(api::grpc::NotificationGrpc {
        inbox,
        webhooks,
        hub,
        outbox,
        wake,
        stopping: builder.stopping(),
    });
    Ok(builder.authenticated_grpc(verifier, service).build())
}

/// Once an hour, notifications past their retention leave the inboxes.
async fn prune(inbox: inbox::Inbox, keep: Duration, stopping: somagent_common::CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(3600));
    loop {
        tokio::select! {
            () = stopping.cancelled() => return,
            _ = tick.tick() => {}
        }
        let before = unix_now_ms() - i64::try_from(keep.as_millis()).unwrap_or(i64::MAX / 2);
        match inbox.prune(before).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(removed = n, "old notifications pruned"),
            Err(e) => tracing::warn!(error = %e, "cannot prune old notifications"),
        }
    }
}
