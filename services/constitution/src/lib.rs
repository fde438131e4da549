//! The constitution service: versioned constitutions per tenant, signed with Ed25519 and
//! verified every time they are read; the platform's default one for tenants without
//! their own; `constitution.updated` with the new hash on every publish.
//!
//! Layout: `store` (versions and the signing key), `signing` (hash, sign, verify),
//! `grpc` (the `somagent.constitution.v1` service the gateway and policy call).

mod grpc;
mod signing;
mod store;

use std::sync::Arc;

use anyhow::Context;
use somagent_common::app::{ServiceApp, ServiceBuilder, ServiceContext};
use somagent_common::auth::{Verifier, builtin_issuer};
use somagent_common::infra::db::Migration;
use somagent_common::infra::outbox::Outbox;

pub use somagent_common::service::CONSTITUTION as SPEC;

/// This service's own schema migrations, applied after the common ones.
pub const MIGRATIONS: &[Migration] = store::MIGRATIONS;

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
    let store = store::ConstitutionStore::new(db.clone());
    let key = store.signing_key().await?;
    let outbox = Outbox::new(db, events);
    outbox
        .clone()
        .spawn_relay(somagent_common::CancellationToken::new());
    let grpc = grpc::ConstitutionGrpc {
        store,
        signer: Arc::new(signing::Signer::new(key)),
        outbox,
        verifier: Arc::new(Verifier::new(vec![builtin_issuer(&config)], Some(cache))),
    };
    let service = somagent_common::proto::constitution::v1::constitution_service_server::ConstitutionServiceServer::new(grpc);
    Ok(builder.grpc(service).build())
}
