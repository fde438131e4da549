//! The orchestrator service: sessions and their turns, each turn a durable workflow
//! (`SessionWorkflow`) on the configured engine: the local one (journaled in the
//! relational store, resumed after a restart from its last completed activity) or
//! Temporal (`SOMAGENT_WORKFLOWS_URL=temporal://...`); exactly one completion per turn.
//!
//! Layout: `workflow/` (the context, activity options, both engines), `turn` (the
//! session turn and its activities), `store` (sessions, messages), `hub` (live events),
//! `grpc`. Activities act for users with service tokens from identity, each for one
//! callee (`common::auth::ServiceTokens`).

mod grpc;
mod hub;
mod store;
mod turn;
pub mod workflow;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use somagent_common::app::{ServiceApp, ServiceBuilder, ServiceContext};
use somagent_common::auth::{ServiceCredential, ServiceTokens, Verifier, builtin_issuer};
use somagent_common::infra::cache::Cache;
use somagent_common::infra::db::Migration;
use somagent_common::proto::identity::v1::identity_service_client::IdentityServiceClient;
use somagent_common::proto::policy::v1::policy_service_client::PolicyServiceClient;
use somagent_common::proto::slm::v1::slm_service_client::SlmServiceClient;
use somagent_common::service::{IDENTITY, POLICY, SLM};

use crate::workflow::local::LocalEngine;
use crate::workflow::temporal::TemporalEngine;
use crate::workflow::{Engine, WorkflowFn};

pub use somagent_common::service::ORCHESTRATOR as SPEC;

/// This service's own schema migrations, applied after the common ones.
pub const MIGRATIONS: &[Migration] = store::MIGRATIONS;

/// Builds the service from its context, ready to run; turns a previous process left
/// unfinished are resumed.
pub async fn build(ctx: ServiceContext) -> anyhow::Result<ServiceApp> {
    let config = ctx.config.clone();
    let builder = ServiceBuilder::new(ctx, MIGRATIONS).await?;
    let db = builder
        .db()
        .context("the orchestrator needs its database")?
        .clone();
    let shared = &builder.context().backends;
    let events = shared
        .events
        .clone()
        .context("the orchestrator needs the event bus")?;
    let cache = shared
        .cache
        .clone()
        .context("the orchestrator needs the cache")?;
    let channel = |spec, timeout| config.channel(spec, timeout);
    let store = store::SessionStore::new(db.clone());
    // Replicas share live events through Redis when the cache is there.
    let hub = match &cache {
        Cache::Redis(redis) => hub::TurnHub::shared(redis.clone()),
        Cache::Memory(_) => {
            if config.workflows_url.temporal().is_some() {
                tracing::warn!(
                    "live turn events stay in this process (the cache is in process): with more than one orchestrator replica, set SOMAGENT_CACHE_URL to Redis"
                );
            }
            hub::TurnHub::local()
        }
    };
    let activities = turn::TurnActivities {
        store: store.clone(),
        policy: PolicyServiceClient::new(channel(&POLICY, Some(Duration::from_secs(10)))?),
        slm: SlmServiceClient::new(channel(&SLM, None)?),
        tokens: ServiceTokens::new(
            IdentityServiceClient::new(channel(&IDENTITY, Some(Duration::from_secs(10)))?),
            &SPEC,
            ServiceCredential::load(&config.data_dir, &SPEC)?,
        ),
        hub: hub.clone(),
        events,
        cache: cache.clone(),
    };
    let mut workflows: HashMap<&'static str, WorkflowFn> = HashMap::new();
    workflows.insert(
        turn::KIND,
        Arc::new(|ctx, input| Box::pin(turn::session_turn(ctx, input))),
    );
    let engine: Arc<dyn Engine> = match config.workflows_url.temporal() {
        Some(target) => {
            let identity = format!("{}@{}", SPEC.name, std::process::id());
            Arc::new(
                TemporalEngine::start_worker(&target, &identity, Arc::new(activities), workflows)
                    .await?,
            )
        }
        None => {
            let engine = LocalEngine::new(db, Arc::new(activities), workflows);
            engine.keep_resuming();
            Arc::new(engine)
        }
    };
    let grpc = grpc::OrchestratorGrpc {
        store,
        engine,
        hub,
        verifier: Arc::new(Verifier::new(
            vec![builtin_issuer(&config, &SPEC)],
            Some(cache),
        )),
    };
    let service =
        somagent_common::proto::orchestrator::v1::orchestrator_service_server::OrchestratorServiceServer::new(grpc);
    Ok(builder.grpc(service).build())
}
