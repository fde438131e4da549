//! The constitution service: versioned constitutions per tenant, signed with Ed25519 and
//! verified every time they are read; the platform's default one for tenants without
//! their own; `constitution.updated` with the new hash on every publish.
//!
//! Layout: `store` (versions and the signing key, sealed under the master key), `signing` (hash, sign, verify),
//! `grpc` (the `somagent.constitution.v1` service the gateway and policy call).

mod api;
mod domain;
mod store;

use std::sync::Arc;

use anyhow::Context;
use somagent_common::app::{ServiceApp, ServiceBuilder, ServiceContext};
use somagent_common::auth::{Verifier, builtin_issuer};
use somagent_common::infra::db::{Db, Migration};
use somagent_common::infra::outbox::Outbox;
use somagent_common::secrets::{ResealScope, Sealer};

pub use somagent_common::service::CONSTITUTION as SPEC;

/// This service's own schema migrations, applied after the common ones.
pub const MIGRATIONS: &[Migration] = store::MIGRATIONS;

/// Re-seals the service's signing key in `db` (its migrated database) under the
/// current master key of `sealer`, for `somagent keys rotate`; returns how many
/// records it rewrote.
pub async fn reseal(db: Db, sealer: Arc<Sealer>, scope: ResealScope) -> anyhow::Result<u64> {
    store::ConstitutionStore::new(db, sealer)
        .reseal(scope)
        .await
}

/// Builds the service from its context, ready to run.
pub async fn build(ctx: ServiceContext) -> anyhow::Result<ServiceApp> {
    let config = ctx.config.clone();
    let builder = ServiceBuilder::new(ctx, MIGRATIONS).await?;
    let db = builder
        .db()
        .context("constitution needs its database")?
        .clone();
    let shared = &builder.context().backends;
    let events = shared
        .events
        .clone()
        .context("constitution needs the event bus")?;
    let cache = shared
        .cache
        .clone()
        .context("constitution needs the cache")?;
    let sealer = somagent_common::secrets::load_sealer(&config)?;
    let store = store::ConstitutionStore::new(db.clone(), Arc::new(sealer));
    // A key stored before keys were sealed is sealed now.
    store.reseal(ResealScope::Plaintext).await?;
    let key = store.signing_key().await?;
    let outbox = Outbox::new(db, events);
    builder.spawn(outbox.clone().relay(builder.stopping()));
    let grpc = api::grpc::ConstitutionGrpc {
        store,
        signer: Arc::new(domain::signing::Signer::new(key)),
        outbox,
    };
    let verifier = Arc::new(Verifier::new(
        vec![builtin_issuer(&config, &SPEC)],
        Some(cache),
    ));
    let service = somagent_common::proto::constitution::v1::constitution_service_server::ConstitutionServiceServer::new(grpc);
    Ok(builder.authenticated_grpc(verifier, service).build())
}
