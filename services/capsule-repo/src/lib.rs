//! The capsule-repo service: capsules (versioned agent and task templates), their
//! publishers' keys, submissions and reviews, each tenant's installations, the
//! catalog with its ratings and counts, and the verified definition every run uses.
//!
//! Layout:
//! - `domain/access`: who sees, reviews and installs what; `domain/attest`: whether a
//!   stored version is still what its publisher signed. No I/O.
//! - `store`: the tables, in portable SQL.
//! - `shipped`: the platform's own capsules (`capsules/*.json`), signed at start.
//! - `api/grpc`: the `somagent.capsule.v1` service the gateway and orchestrator call.

mod api;
pub mod domain;
pub mod shipped;
pub mod store;

use std::sync::Arc;

use anyhow::Context;
use somagent_common::app::{ServiceApp, ServiceBuilder, ServiceContext};
use somagent_common::auth::{Verifier, builtin_issuer};
use somagent_common::infra::db::{Db, Migration};
use somagent_common::infra::outbox::Outbox;
use somagent_common::proto::capsule::v1::capsule_service_server::CapsuleServiceServer;
use somagent_common::secrets::{ResealScope, Sealer, StoredSigningKey};

pub use somagent_common::service::CAPSULE_REPO as SPEC;

/// This service's own schema migrations, applied after the common ones.
pub const MIGRATIONS: &[Migration] = store::MIGRATIONS;

fn platform_key(db: Db, sealer: Arc<Sealer>) -> StoredSigningKey {
    StoredSigningKey::new(db, sealer, "capsule_platform_keys", "capsule/platform_key")
}

/// Re-seals the platform's capsule signing key under the current master key of
/// `sealer`, for `somagent keys rotate`; how many records.
pub async fn reseal(db: Db, sealer: Arc<Sealer>, scope: ResealScope) -> anyhow::Result<u64> {
    platform_key(db, sealer).reseal(scope).await
}

/// Builds the service from its context, ready to run.
pub async fn build(ctx: ServiceContext) -> anyhow::Result<ServiceApp> {
    let config = ctx.config.clone();
    let builder = ServiceBuilder::new(ctx, MIGRATIONS).await?;
    let db = builder
        .db()
        .context("capsule-repo needs its database")?
        .clone();
    let shared = &builder.context().backends;
    let events = shared
        .events
        .clone()
        .context("capsule-repo needs the event bus")?;
    let outbox = Outbox::new(db.clone(), events);
    builder.spawn(outbox.clone().relay(builder.stopping()));
    let sealer = Arc::new(somagent_common::secrets::load_sealer(&config)?);
    let key = platform_key(db.clone(), sealer).get().await?;
    let store = store::CapsuleStore::new(db);
    shipped::load(&store, &key).await?;
    let platform_key = Arc::new((
        key.kid().to_owned(),
        data_encoding::BASE64URL_NOPAD.encode(key.public_key()),
    ));
    let verifier = Arc::new(Verifier::new(
        vec![builtin_issuer(&config, &SPEC)],
        shared.cache.clone(),
    ));
    let service = CapsuleServiceServer::new(api::grpc::CapsuleGrpc {
        store,
        outbox,
        platform_key,
    });
    Ok(builder.authenticated_grpc(verifier, service).build())
}
