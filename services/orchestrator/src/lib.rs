//! The orchestrator service: sessions and their turns, each turn a durable workflow
//! (`SessionWorkflow`) on the configured engine: the local one (journaled in the
//! relational store, resumed after a restart from its last completed activity) or
//! Temporal (`SOMAGENT_WORKFLOWS_URL=temporal://...`); exactly one completion per turn.
//!
//! Layout: `api/` (gRPC transport: mapping only), `sessions` (the use cases),
//! `domain/` (what a session and a message may be; no I/O), `turn/` (the session turn:
//! its workflow and its activities, declared to the engine of `somagent-workflows`),
//! `store` (sessions, messages), `hub` (live events). Activities act for users with service tokens from identity, each for one
//! callee (`common::auth::ServiceTokens`).

mod agents;
mod api;
mod capsules;
mod config;
mod domain;
mod hub;
mod sessions;
mod store;
mod turn;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use somagent_common::app::{ServiceApp, ServiceBuilder, ServiceContext};
use somagent_common::auth::{ServiceTokens, Verifier, builtin_issuer};
use somagent_common::infra::db::Migration;
use somagent_common::infra::events::ConsumeOptions;
use somagent_common::proto::capsule::v1::capsule_service_client::CapsuleServiceClient;
use somagent_common::proto::memory::v1::memory_service_client::MemoryServiceClient;
use somagent_common::proto::policy::v1::policy_service_client::PolicyServiceClient;
use somagent_common::proto::settings::v1::settings_service_client::SettingsServiceClient;
use somagent_common::proto::slm::v1::slm_service_client::SlmServiceClient;
use somagent_common::proto::tool::v1::tool_service_client::ToolServiceClient;
use somagent_common::service::{CAPSULE_REPO, MEMORY, POLICY, SETTINGS, SLM, TOOL};
use somagent_common::settings_cache::SettingsCache;

use somagent_workflows::local::LocalEngine;
use somagent_workflows::store::RunStore;
use somagent_workflows::temporal::TemporalEngine;
use somagent_workflows::{Engine, Registry};

pub use somagent_common::service::ORCHESTRATOR as SPEC;

/// This service's own schema migrations, applied after the common ones.
pub const MIGRATIONS: &[Migration] = store::MIGRATIONS;

/// Builds the service from its context, ready to run; turns a previous process left
/// unfinished are resumed.
pub async fn build(ctx: ServiceContext) -> anyhow::Result<ServiceApp> {
    let config = ctx.config.clone();
    let settings: config::OrchestratorConfig = ctx.settings()?;
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
    if !cache.is_shared() && config.workflows_url.temporal().is_some() {
        tracing::warn!(
            "live turn events stay in this process (the cache is in process): with more than one orchestrator replica, set SOMAGENT_CACHE_URL to Redis"
        );
    }
    let hub = hub::TurnHub::over(&cache, &builder);
    let moderation = somagent_common::moderation::PromptModeration::new(
        PolicyServiceClient::new(channel(&POLICY, Some(Duration::from_secs(10)))?),
        cache.clone(),
    );
    // The tenant's session settings (recall, tool rounds, approval timeouts), read
    // through one cached copy that `settings.updated` refreshes.
    let tenant_settings = SettingsCache::new(
        SettingsServiceClient::new(channel(&SETTINGS, Some(Duration::from_secs(5)))?),
        Arc::new(ServiceTokens::connect(&config, &SPEC)?),
    );
    let following = tenant_settings
        .follow(
            &events,
            "orchestrator-settings",
            ConsumeOptions::new(builder.stopping()).metrics(builder.consumer_metrics()),
        )
        .await?;
    builder.spawn(following);
    let activities = turn::TurnActivities {
        store: store.clone(),
        policy: PolicyServiceClient::new(channel(&POLICY, Some(Duration::from_secs(10)))?),
        slm: SlmServiceClient::new(channel(&SLM, None)?),
        tokens: ServiceTokens::connect(&config, &SPEC)?,
        hub: hub.clone(),
        events,
        cache: cache.clone(),
        metrics: turn::TurnMetrics::register(builder.metrics()),
        // Each action's own timeout bounds a call there; this bounds the wait for it.
        tool: ToolServiceClient::new(channel(&TOOL, Some(Duration::from_secs(320)))?),
        // Recall embeds the question (the local model may be loading) and searches.
        memory: MemoryServiceClient::new(channel(&MEMORY, Some(Duration::from_secs(25)))?),
        config: settings,
        settings: tenant_settings.clone(),
    };
    let mut registry = Registry::new();
    registry.observed_by(somagent_workflows::ActivityMetrics::register(
        builder.metrics(),
    ));
    turn::register(&mut registry, activities);
    let run_hub = somagent_common::live::LiveHub::<agents::live::RunLive>::over(&cache, &builder);
    let capsules = capsules::Capsules {
        client: CapsuleServiceClient::new(channel(&CAPSULE_REPO, Some(Duration::from_secs(10)))?),
        tokens: Arc::new(ServiceTokens::connect(&config, &SPEC)?),
    };
    agents::register(
        &mut registry,
        agents::AgentActivities {
            store: store.clone(),
            capsules: capsules.clone(),
            events: shared
                .events
                .clone()
                .context("the orchestrator needs the event bus")?,
            objects: shared
                .objects
                .clone()
                .context("the orchestrator needs object storage (bundles)")?,
            hub: run_hub.clone(),
        },
    );
    let records = agents::records::RunRecords::new(db.clone());
    db.migrate("workflows", somagent_workflows::MIGRATIONS)
        .await?;
    let engine: Arc<dyn Engine> = match config.workflows_url.temporal() {
        Some(target) => {
            let identity = format!("{}@{}", SPEC.name, std::process::id());
            Arc::new(TemporalEngine::start(&target, &identity, registry, RunStore::new(db)).await?)
        }
        None => {
            let engine = LocalEngine::new(db, registry);
            engine.keep_resuming();
            Arc::new(engine)
        }
    };
    let stopping = engine.clone();
    let engine_for_runs = engine.clone();
    let probe = somagent_workflows::EngineProbe(engine.clone());
    let grpc = api::grpc::OrchestratorGrpc {
        stopping: builder.stopping(),
        sessions: sessions::Sessions {
            store,
            engine,
            hub,
            moderation,
            settings: tenant_settings,
            capsules,
        },
        runs: agents::runs::Runs {
            engine: engine_for_runs,
            records,
            hub: run_hub,
        },
    };
    let verifier = Arc::new(Verifier::new(
        vec![builtin_issuer(&config, &SPEC)],
        Some(cache),
    ));
    let service =
        somagent_common::proto::orchestrator::v1::orchestrator_service_server::OrchestratorServiceServer::new(grpc);
    Ok(builder
        .authenticated_grpc(verifier, service)
        .on_shutdown(move || async move { stopping.shutdown().await })
        .ready_when("workflows", probe)
        .build())
}
