//! The slm service: the model gateway. Chat completions (whole or streamed) and
//! embeddings over
//! per-tenant model profiles, on any OpenAI-compatible upstream or the local model,
//! with retries, fallbacks, timeouts, and every call metered as `billing.usage`.
//!
//! Layout:
//! - `domain/`: chat messages and deltas, profiles, prices; no I/O.
//! - `config`: the upstreams an operator configures, and the local model's file.
//! - `upstream/`: OpenAI-compatible servers (`async-openai`) and the local model.
//! - `gguf_model`: SmolLM2 on candle; `minilm`: the local embedding model on candle.
//! - `model_router`: profiles → upstream calls, retries, fallbacks, streaming, metering.
//! - `metering`, `counting`: usage events through the outbox; token counts when an
//!   upstream reports none.
//! - `store`: the stored profiles: tenants' tunings and platform admins' profiles.
//! - `profiles`: who may set which profile (prices belong to the platform).
//! - `output_rules`: the tenant's output guard from policy, which every answer's text
//!   passes as it streams (`domain::output_guard`).
//! - `grpc`: the `somagent.slm.v1` service the gateway calls.
//! - `async_inference`: answers `slm.requests` on `slm.responses`.

mod api;
mod async_inference;
pub mod config;
pub mod domain;
mod gguf_model;
mod metering;
mod minilm;
mod model_router;
mod output_rules;
mod profiles;
mod store;
mod upstream;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use somagent_common::app::{ServiceApp, ServiceBuilder, ServiceContext};
use somagent_common::auth::{ServiceTokens, Verifier, builtin_issuer};
use somagent_common::infra::db::Migration;
use somagent_common::infra::events::ConsumeOptions;
use somagent_common::infra::outbox::Outbox;
use somagent_common::proto::policy::v1::policy_service_client::PolicyServiceClient;
use somagent_common::service::POLICY;

use crate::config::{LOCAL_MODEL_ID, SlmConfig};
use crate::domain::profile::{DEFAULT_TIMEOUT_MS, Profile};
use crate::upstream::{Upstream, Upstreams};

pub use somagent_common::service::SLM as SPEC;

/// This service's own schema migrations, applied after the common ones.
pub const MIGRATIONS: &[Migration] = store::MIGRATIONS;

/// Builds the service from its context, ready to run.
pub async fn build(ctx: ServiceContext) -> anyhow::Result<ServiceApp> {
    let config = ctx.config.clone();
    let slm = SlmConfig::resolve(ctx.settings()?, &config.data_dir)?;
    let builder = ServiceBuilder::new(ctx, MIGRATIONS).await?;
    let db = builder.db().context("slm needs its database")?.clone();
    let shared = &builder.context().backends;
    let events = shared.events.clone().context("slm needs the event bus")?;
    let cache = shared.cache.clone().context("slm needs the cache")?;

    let mut upstreams = Upstreams::default();
    for u in &slm.upstreams {
        upstreams.insert(
            u.name.clone(),
            Upstream::OpenAi(upstream::openai::OpenAiUpstream::new(
                &u.base_url,
                u.api_key.as_deref(),
            )?),
        );
        tracing::info!(upstream = %u.name, base_url = %u.base_url, "model upstream configured");
    }
    let mut platform = Vec::new();
    let profile = |name: &str, upstream: &str, model: &str| Profile {
        name: name.into(),
        upstream: upstream.into(),
        model: model.into(),
        temperature: None,
        max_tokens: None,
        fallbacks: Vec::new(),
        price: Default::default(),
        currency: "USD".into(),
        timeout_ms: DEFAULT_TIMEOUT_MS,
        platform: true,
        base: None,
        dimensions: None,
    };
    if let Some(model) = &slm.default_model
        && slm.upstreams.iter().any(|u| u.name == "default")
    {
        platform.push(Profile {
            price: slm.default_price,
            ..profile("default", "default", model)
        });
        // OpenAI clients call a model by its own id; it is the same model at the same
        // price.
        if model != "default" {
            platform.push(Profile {
                price: slm.default_price,
                ..profile(model, "default", model)
            });
        }
    }
    if let Some(path) = &slm.local_model {
        upstreams.insert(
            "local",
            Upstream::Local(upstream::in_process::LocalUpstream::new(
                path.clone(),
                slm.requantize_q8,
            )),
        );
        tracing::info!(path = %path.display(), "the local model is available");
        platform.push(profile(LOCAL_MODEL_ID, "local", LOCAL_MODEL_ID));
        if !platform.iter().any(|p| p.name == "default") {
            platform.push(profile("default", "local", LOCAL_MODEL_ID));
        }
    }
    if let Some((model, size)) = &slm.embedding_model {
        let upstream_model = Profile {
            price: slm.embedding_price,
            dimensions: Some(*size),
            ..profile(model, "default", model)
        };
        platform.push(Profile {
            name: model_router::EMBEDDINGS_PROFILE.into(),
            ..upstream_model.clone()
        });
        if model != model_router::EMBEDDINGS_PROFILE {
            platform.push(upstream_model);
        }
    }
    if let Some(dir) = &slm.local_embeddings {
        upstreams.insert(
            "local-embeddings",
            Upstream::LocalEmbeddings(upstream::local_embeddings::LocalEmbedder::new(dir.clone())),
        );
        tracing::info!(path = %dir.display(), "the local embedding model is available");
        let local = Profile {
            dimensions: Some(minilm::DIMENSIONS),
            ..profile(minilm::MODEL_ID, "local-embeddings", minilm::MODEL_ID)
        };
        if !platform
            .iter()
            .any(|p| p.name == model_router::EMBEDDINGS_PROFILE)
        {
            platform.push(Profile {
                name: model_router::EMBEDDINGS_PROFILE.into(),
                ..local.clone()
            });
        }
        platform.push(local);
    }
    if upstreams.is_empty() {
        tracing::warn!(
            "no model is configured: chat answers 503 until SOMAGENT_SLM__LLM_BASE_URL and SOMAGENT_SLM__LLM_MODEL are set or the local model is installed (scripts/fetch-models.sh)"
        );
    }

    let outbox = Outbox::new(db.clone(), events.clone());
    builder.spawn(outbox.clone().relay(builder.stopping()));
    let budgets = somagent_common::budget_holds::BudgetHolds::connect(&config, &SPEC)?;
    let router = model_router::ModelRouter::new(
        upstreams,
        store::ProfileStore::new(db.clone()),
        platform,
        metering::UsageMeter::new(outbox.clone()),
        budgets,
        domain::counting::TokenCounter::new()?,
        upstream::metrics::UpstreamMetrics::register(builder.metrics()),
    );
    let verifier = Arc::new(Verifier::new(
        vec![builtin_issuer(&config, &SPEC)],
        Some(cache.clone()),
    ));
    let router = Arc::new(router);
    let policy = PolicyServiceClient::new(config.channel(&POLICY, Some(Duration::from_secs(15)))?);
    let output_rules = Arc::new(output_rules::OutputRuleSource::new(
        policy.clone(),
        ServiceTokens::connect(&config, &SPEC)?,
    ));
    let gate = async_inference::Gate {
        verifier: verifier.clone(),
        policy: somagent_common::moderation::PromptModeration::new(policy, cache),
        output_rules: output_rules.clone(),
    };
    let answering = async_inference::consumer(
        router.clone(),
        gate,
        &events,
        outbox,
        ConsumeOptions::new(builder.stopping())
            .handled_in(db)
            .metrics(builder.consumer_metrics()),
    )
    .await?;
    builder.spawn(answering);
    let grpc = api::grpc::SlmGrpc {
        router,
        output_rules,
    };
    let service = somagent_common::proto::slm::v1::slm_service_server::SlmServiceServer::new(grpc);
    Ok(builder.authenticated_grpc(verifier, service).build())
}
