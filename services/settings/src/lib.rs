//! The settings service: each tenant's settings and feature flags, each user's
//! preferences; versioned, audited, announced on `settings.updated` so the services'
//! cached copies (`somagent_common::settings_cache`) drop them.
//!
//! Layout:
//! - `domain/schema`: the documents' shapes, defaults, and merge patches; no I/O.
//! - `store`: versions and flags in the service's database, with their events.
//! - `secrets`: tenants' secrets, sealed under the master key, write-only.
//! - `api/grpc`: the `somagent.settings.v1` service the gateway and services call.

mod api;
pub mod domain;
pub mod secrets;
pub mod store;

use std::sync::Arc;

use anyhow::Context;
use somagent_common::app::{ServiceApp, ServiceBuilder, ServiceContext};
use somagent_common::auth::{Verifier, builtin_issuer};
use somagent_common::infra::db::Migration;
use somagent_common::infra::outbox::Outbox;
use somagent_common::proto::settings::v1::settings_service_server::SettingsServiceServer;

pub use somagent_common::service::SETTINGS as SPEC;

/// This service's own schema migrations, applied after the common ones.
pub const MIGRATIONS: &[Migration] = store::MIGRATIONS;

/// Re-seals the tenants' secrets `scope` asks for under the current master key of
/// `sealer`, for `somagent keys rotate`; how many.
pub async fn reseal(
    db: somagent_common::infra::db::Db,
    sealer: Arc<somagent_common::secrets::Sealer>,
    scope: somagent_common::secrets::ResealScope,
) -> anyhow::Result<u64> {
    secrets::reseal(&db, &sealer, scope).await
}

/// Builds the service from its context, ready to run.
pub async fn build(ctx: ServiceContext) -> anyhow::Result<ServiceApp> {
    let config = ctx.config.clone();
    let builder = ServiceBuilder::new(ctx, MIGRATIONS).await?;
    let db = builder.db().context("settings needs its database")?.clone();
    let shared = &builder.context().backends;
    let cache = shared.cache.clone().context("settings needs the cache")?;
    let events = shared
        .events
        .clone()
        .context("settings needs the event bus")?;
    let outbox = Outbox::new(db.clone(), events);
    builder.spawn(outbox.clone().relay(builder.stopping()));
    let sealer = Arc::new(somagent_common::secrets::load_sealer(&config)?);
    let secrets = secrets::SecretStore::new(db.clone(), sealer, outbox.clone());
    let store = store::SettingsStore::new(db, outbox);
    let verifier = Arc::new(Verifier::new(
        vec![builtin_issuer(&config, &SPEC)],
        Some(cache),
    ));
    let service = SettingsServiceServer::new(api::grpc::SettingsGrpc { store, secrets });
    Ok(builder.authenticated_grpc(verifier, service).build())
}
