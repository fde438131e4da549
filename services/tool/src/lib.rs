//! The tool service: a registry of tools per tenant, their credentials (sealed, never
//! returned) and invocations under policy, rate limits and metering.
//!
//! Layout: `api/` (gRPC: mapping only), `tools` and `invocations` (the use cases),
//! `domain/` (what a tool is: manifests, OpenAPI tools, argument checks, the HTTP
//! request of a call; no I/O), `store` (tools, credentials, the invocation log),
//! `egress_proxy` (the browser's way out), `config.rs`; where tools may send
//! requests is `somagent_common::egress`. Tools come from OpenAPI 3
//! documents a tenant gives; built-in adapters and MCP mounts are not served yet.

mod access;
pub mod adapters;
mod api;
mod browser;
pub mod config;
pub mod domain;
mod egress_proxy;
mod invocations;
mod mcp_client;
mod mounts;
pub mod sandbox;
mod store;
mod tools;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use somagent_common::app::{ServiceApp, ServiceBuilder, ServiceContext};
use somagent_common::auth::{ServiceTokens, Verifier, builtin_issuer};
use somagent_common::infra::db::Migration;
use somagent_common::infra::outbox::Outbox;
use somagent_common::proto::memory::v1::memory_service_client::MemoryServiceClient;
use somagent_common::proto::policy::v1::policy_service_client::PolicyServiceClient;
use somagent_common::proto::tool::v1::tool_service_server::ToolServiceServer;
use somagent_common::service::{MEMORY, POLICY};

pub use somagent_common::service::TOOL as SPEC;

/// This service's own schema migrations, applied after the common ones.
pub const MIGRATIONS: &[Migration] = store::MIGRATIONS;

/// Re-seals the tenants' tool credentials in `db` (its migrated database) under the
/// current master key of `sealer`, for `somagent keys rotate`; returns how many records
/// it rewrote.
pub async fn reseal(
    db: somagent_common::infra::db::Db,
    sealer: Arc<somagent_common::secrets::Sealer>,
    scope: somagent_common::secrets::ResealScope,
) -> anyhow::Result<u64> {
    store::ToolStore::new(db).reseal(&sealer, scope).await
}

/// Builds the service from its context, ready to run.
pub async fn build(ctx: ServiceContext) -> anyhow::Result<ServiceApp> {
    let config = ctx.config.clone();
    let settings: config::ToolConfig = ctx.settings()?;
    let builder = ServiceBuilder::new(ctx, MIGRATIONS).await?;
    let db = builder
        .db()
        .context("the tool service needs its database")?
        .clone();
    let shared = &builder.context().backends;
    let events = shared
        .events
        .clone()
        .context("the tool service needs the event bus")?;
    let cache = shared
        .cache
        .clone()
        .context("the tool service needs the cache")?;
    let sealer = Arc::new(somagent_common::secrets::load_sealer(&config)?);
    let outbox = Outbox::new(db.clone(), events);
    builder.spawn(outbox.clone().relay(builder.stopping()));
    if settings.allow_private_networks {
        tracing::warn!(
            "tools may call private and loopback addresses (tool.allow_private_networks)"
        );
    }
    let budgets = somagent_common::budget_holds::BudgetHolds::connect(&config, &SPEC)?;
    let invoker = invocations::Invoker {
        registry: tools::Registry {
            store: store::ToolStore::new(db),
            sealer,
            outbox,
        },
        cache: cache.clone(),
        policy: PolicyServiceClient::new(config.channel(&POLICY, Some(Duration::from_secs(10)))?),
        tokens: ServiceTokens::connect(&config, &SPEC)?,
        http: invocations::http_client(&settings)?,
        access: access::Access::new(settings.allow_private_networks),
        browser: browser::Browser::detect(&settings.chromium, settings.allow_private_networks),
        memory: MemoryServiceClient::new(config.channel(&MEMORY, Some(Duration::from_secs(30)))?),
        sandbox: Arc::new(sandbox::Sandbox::detect(settings.allow_private_networks).await),
        config: settings,
        schemas: invocations::SchemaCache::default(),
        budgets,
    };
    let verifier = Arc::new(Verifier::new(
        vec![builtin_issuer(&config, &SPEC)],
        Some(cache),
    ));
    let service = ToolServiceServer::new(api::grpc::ToolGrpc { invoker });
    Ok(builder.authenticated_grpc(verifier, service).build())
}
