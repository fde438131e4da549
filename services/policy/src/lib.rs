//! The policy service: decisions over the tenant's constitution and its own rules,
//! compiled to Rego and evaluated in process (`regorus`) or on an OPA server
//! (`SOMAGENT_POLICY__OPA_URL`). Decisions are `{allowed, score, severity, reasons, rule_ids,
//! constitution_hash}`, cached until the constitution or the rules change, audited, and
//! denied whenever the engine fails or is late (fail closed).
//!
//! Layout: `rules` (the tenant's rules), `rego` (the compiler), `engine` (regorus or
//! OPA), `decider` (caching, deadlines, audit), `store`, `grpc`.

mod api;
pub mod config;
mod decider;
pub mod domain;
pub mod engine;
#[cfg(test)]
mod engine_contract_tests;
mod store;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use somagent_common::app::{ServiceApp, ServiceBuilder, ServiceContext};
use somagent_common::auth::{ServiceTokens, Verifier, builtin_issuer};
use somagent_common::infra::db::Migration;
use somagent_common::infra::events::{ConsumeOptions, Delivery, EventBus, consume, topics};
use somagent_common::proto::constitution::v1::constitution_service_client::ConstitutionServiceClient;
use somagent_common::service::CONSTITUTION;

pub use somagent_common::service::POLICY as SPEC;

/// This service's own schema migrations, applied after the common ones.
pub const MIGRATIONS: &[Migration] = store::MIGRATIONS;

/// Builds the service from its context, ready to run.
pub async fn build(ctx: ServiceContext) -> anyhow::Result<ServiceApp> {
    let config = ctx.config.clone();
    let settings: config::PolicyConfig = ctx.settings()?;
    let builder = ServiceBuilder::new(ctx, MIGRATIONS).await?;
    let db = builder.db().context("policy needs its database")?.clone();
    let shared = &builder.context().backends;
    let events = shared
        .events
        .clone()
        .context("policy needs the event bus")?;
    let cache = shared.cache.clone().context("policy needs the cache")?;
    let engine = match settings.opa_url()? {
        Some(url) => {
            tracing::info!(%url, "policy decisions by the OPA server");
            engine::Engine::Opa(engine::Opa::new(url.as_str())?)
        }
        None => engine::Engine::InProcess(engine::InProcess::default()),
    };
    let channel = config.channel(&CONSTITUTION, Some(Duration::from_secs(5)))?;
    let decider = Arc::new(decider::PolicyDecider::new(
        engine,
        store::RuleStore::new(db),
        ConstitutionServiceClient::new(channel),
        events.clone(),
        builder.metrics(),
    ));
    tracing::info!(engine = decider.engine_name(), "policy engine ready");
    forget_on_change(&builder, decider.clone(), &events).await?;
    let grpc = api::grpc::PolicyGrpc {
        decider,
        events,
        tokens: ServiceTokens::connect(&config, &SPEC)?,
    };
    let service =
        somagent_common::proto::policy::v1::policy_service_server::PolicyServiceServer::new(grpc);
    let verifier = Arc::new(Verifier::new(
        vec![builtin_issuer(&config, &SPEC)],
        Some(cache),
    ));
    Ok(builder.authenticated_grpc(verifier, service).build())
}

/// Drops a tenant's compiled policy and cached decisions when its constitution or
/// rules change. Every replica listens in a group of its own: all of them must hear it.
async fn forget_on_change(
    builder: &ServiceBuilder,
    decider: Arc<decider::PolicyDecider>,
    events: &EventBus,
) -> anyhow::Result<()> {
    let group = format!("policy-cache-{}", uuid::Uuid::new_v4().simple());
    let forget = move |delivery: Delivery| {
        let decider = decider.clone();
        async move {
            decider.invalidate(&delivery.event.tenant);
            Ok(())
        }
    };
    let options = ConsumeOptions::new(builder.stopping()).metrics(builder.consumer_metrics());
    let consumer = consume(
        events,
        &group,
        &[topics::CONSTITUTION_UPDATED],
        forget,
        options,
    )
    .await?;
    builder.spawn(consumer);
    Ok(())
}
