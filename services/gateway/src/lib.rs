//! The gateway service: the platform's one public door.
//!
//! Layout:
//! - `api/`: the public routes (auth, tenants, users, API keys), their wire types
//!   (`views`), the OpenAPI document (`openapi`), the guards (`limits`) and the
//!   extractor that verifies the caller (`principal`).
//! - `login_throttle`, `rate_limit`: failed logins per address and account, requests
//!   per tenant and API key, in the shared cache.
//! - `revocations`: the access-token deny-list.
//! - `token_exchange`: external issuers' tokens exchanged for platform tokens, cached.
//! - `build` wires them to identity (gRPC) and the shared verifier; `main.rs` is the
//!   thin binary `somagent-gateway`.
//!
//! What is served is in the OpenAPI document at `GET /openapi.json`; the rest of the
//! public API arrives with its issues.

mod api;
mod client_address;
pub mod config;
mod credential_watch;
mod login_throttle;
mod moderation;
mod rate_limit;
mod revocations;
mod service_status;
mod token_exchange;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use somagent_common::app::{ServiceApp, ServiceBuilder, ServiceContext};
use somagent_common::auth::{TrustedIssuer, Verifier, builtin_issuer};
use somagent_common::infra::db::Migration;
use somagent_common::proto::analytics::v1::analytics_service_client::AnalyticsServiceClient;
use somagent_common::proto::billing::v1::billing_service_client::BillingServiceClient;
use somagent_common::proto::capsule::v1::capsule_service_client::CapsuleServiceClient;
use somagent_common::proto::constitution::v1::constitution_service_client::ConstitutionServiceClient;
use somagent_common::proto::identity::v1::identity_service_client::IdentityServiceClient;
use somagent_common::proto::memory::v1::memory_service_client::MemoryServiceClient;
use somagent_common::proto::notification::v1::notification_service_client::NotificationServiceClient;
use somagent_common::proto::orchestrator::v1::orchestrator_service_client::OrchestratorServiceClient;
use somagent_common::proto::policy::v1::policy_service_client::PolicyServiceClient;
use somagent_common::proto::settings::v1::settings_service_client::SettingsServiceClient;
use somagent_common::proto::slm::v1::slm_service_client::SlmServiceClient;
use somagent_common::proto::tool::v1::tool_service_client::ToolServiceClient;
use somagent_common::service::{
    ANALYTICS, BILLING, CAPSULE_REPO, CONSTITUTION, IDENTITY, MEMORY, NOTIFICATION, ORCHESTRATOR,
    POLICY, SETTINGS, SLM, TOOL,
};

pub use somagent_common::service::GATEWAY as SPEC;

/// This service's own schema migrations, applied after the common ones.
pub const MIGRATIONS: &[Migration] = &[];

/// What the gateway's handlers share, behind one pointer: axum clones the state for
/// every layer and handler of every request, and cloning a dozen gRPC clients each
/// time was a third of an authenticated request's CPU.
#[derive(Clone)]
pub struct Gateway(Arc<Shared>);

impl std::ops::Deref for Gateway {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

pub struct Shared {
    pub identity: IdentityServiceClient<somagent_common::grpc_channel::Channel>,
    pub slm: SlmServiceClient<somagent_common::grpc_channel::Channel>,
    pub policy: PolicyServiceClient<somagent_common::grpc_channel::Channel>,
    pub constitution: ConstitutionServiceClient<somagent_common::grpc_channel::Channel>,
    pub moderation: moderation::Moderation,
    pub orchestrator: OrchestratorServiceClient<somagent_common::grpc_channel::Channel>,
    pub tool: ToolServiceClient<somagent_common::grpc_channel::Channel>,
    pub memory: MemoryServiceClient<somagent_common::grpc_channel::Channel>,
    pub billing: BillingServiceClient<somagent_common::grpc_channel::Channel>,
    pub settings: SettingsServiceClient<somagent_common::grpc_channel::Channel>,
    pub notification: NotificationServiceClient<somagent_common::grpc_channel::Channel>,
    pub analytics: AnalyticsServiceClient<somagent_common::grpc_channel::Channel>,
    pub capsules: CapsuleServiceClient<somagent_common::grpc_channel::Channel>,
    pub login_throttle: login_throttle::LoginThrottle,
    /// The services behind, asked for `/v1/status`.
    pub status: service_status::StatusProbe,
    /// Proxies whose forwarding headers name the client (`SOMAGENT_GATEWAY__TRUSTED_PROXIES`).
    pub trusted_proxies: client_address::TrustedProxies,
    pub revocations: revocations::Revocations,
    pub rate_limit: rate_limit::RateLimiter,
    /// Platform tokens exchanged for external issuers' tokens, until shortly before
    /// they expire.
    pub exchanged: token_exchange::ExchangedTokens,
    pub verifier: Arc<Verifier>,
    /// The built-in issuer (the gateway's public URL).
    pub issuer: String,
    /// Cancelled when the gateway starts to stop: live streams end, telling their
    /// clients to reconnect, so the drain does not wait on them.
    pub stopping: tokio_util::sync::CancellationToken,
}

/// External OIDC issuers the gateway also trusts (`SOMAGENT_OIDC_ISSUERS`). Their tokens
/// are verified here and exchanged with identity for platform tokens, so the services
/// behind see only the platform's own.
fn external_issuers() -> anyhow::Result<Vec<TrustedIssuer>> {
    let issuers = somagent_common::auth::external_issuers_from_env()?;
    for trusted in &issuers {
        tracing::info!(issuer = %trusted.issuer, audience = %trusted.audience, "trusting an external OIDC issuer");
    }
    Ok(issuers)
}

/// Builds the service from its context, ready to run.
pub async fn build(ctx: ServiceContext) -> anyhow::Result<ServiceApp> {
    let config = ctx.config.clone();
    let settings: config::GatewayConfig = ctx.settings()?;
    let cors_origins = settings.cors_origins()?;
    let cache = ctx
        .backends
        .cache
        .clone()
        .context("the gateway needs the cache")?;
    let events = ctx
        .backends
        .events
        .clone()
        .context("the gateway needs the event bus")?;
    let builder = ServiceBuilder::new(ctx, MIGRATIONS).await?;
    // Calls that stream (model answers, turns) have no overall timeout: the services
    // behind bound the wait for each piece.
    let unary = Some(Duration::from_secs(15));
    let channel = config.channel(&IDENTITY, unary)?;
    let slm = config.channel(&SLM, None)?;
    let policy_channel = config.channel(&POLICY, unary)?;
    let constitution_channel = config.channel(&CONSTITUTION, unary)?;
    let orchestrator_channel = config.channel(&ORCHESTRATOR, None)?;
    // A tool call is bounded by its action's timeout (at most 300 s), in the tool service.
    let tool_channel = config.channel(&TOOL, Some(Duration::from_secs(330)))?;
    // A search embeds its query first; an upload sends up to 20 MiB.
    let memory_channel = config.channel(&MEMORY, Some(Duration::from_secs(60)))?;
    let billing_channel = config.channel(&BILLING, unary)?;
    let settings_channel = config.channel(&SETTINGS, unary)?;
    // A notification stream lasts as long as its watcher.
    let notification_channel = config.channel(&NOTIFICATION, None)?;
    // An export streams as long as its download.
    let analytics_channel = config.channel(&ANALYTICS, None)?;
    let capsule_channel = config.channel(&CAPSULE_REPO, unary)?;
    let status = service_status::StatusProbe::new(vec![
        (IDENTITY.name, channel.clone()),
        (SLM.name, slm.clone()),
        (POLICY.name, policy_channel.clone()),
        (CONSTITUTION.name, constitution_channel.clone()),
        (ORCHESTRATOR.name, orchestrator_channel.clone()),
        (TOOL.name, tool_channel.clone()),
        (MEMORY.name, memory_channel.clone()),
        (BILLING.name, billing_channel.clone()),
        (SETTINGS.name, settings_channel.clone()),
        (NOTIFICATION.name, notification_channel.clone()),
        (ANALYTICS.name, analytics_channel.clone()),
        (CAPSULE_REPO.name, capsule_channel.clone()),
    ]);
    let policy = PolicyServiceClient::new(policy_channel);
    let constitution = ConstitutionServiceClient::new(constitution_channel);
    let orchestrator = OrchestratorServiceClient::new(orchestrator_channel);
    let issuer = config.issuer();
    let mut issuers = vec![builtin_issuer(&config, &SPEC)];
    issuers.extend(external_issuers()?);
    let verifier = Verifier::new(issuers, Some(cache.clone()));
    let gateway = Gateway(Arc::new(Shared {
        identity: IdentityServiceClient::new(channel),
        slm: SlmServiceClient::new(slm),
        moderation: moderation::Moderation::new(policy.clone(), cache.clone()),
        policy,
        constitution,
        orchestrator,
        tool: ToolServiceClient::new(tool_channel),
        memory: MemoryServiceClient::new(memory_channel),
        billing: BillingServiceClient::new(billing_channel),
        settings: SettingsServiceClient::new(settings_channel),
        notification: NotificationServiceClient::new(notification_channel),
        analytics: AnalyticsServiceClient::new(analytics_channel),
        capsules: CapsuleServiceClient::new(capsule_channel),
        login_throttle: login_throttle::LoginThrottle::new(cache.clone()),
        status,
        trusted_proxies: settings.trusted_proxies()?,
        rate_limit: rate_limit::RateLimiter::new(cache.clone(), settings.rate_limits()),
        revocations: revocations::Revocations::new(cache, events),
        verifier: Arc::new(verifier),
        exchanged: token_exchange::ExchangedTokens::default(),
        issuer,
        stopping: builder.stopping(),
    }));
    Ok(builder.http(api::public(gateway, cors_origins)).build())
}
