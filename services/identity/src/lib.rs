//! The identity service: tenants, users, roles, MFA, API keys, tokens and signing keys.
//!
//! Layout:
//! - `domain/`: passwords (argon2id), TOTP (RFC 6238), API keys; no I/O.
//! - `store/`: tenants, users and signing keys in portable SQL.
//! - `bootstrap`: the first start's tenant `default` and user `admin`.
//! - `keyring`: the built-in issuer's Ed25519 signing keys and their JWKS.
//! - `build` wires them; `main.rs` is the thin binary `somagent-identity`.
//!
//! - `tokens`: the token endpoint's grants and service tokens.
//! - `cutoffs`: voiding a user's or tenant's tokens at once when they change.
//! - `exchange`: external OIDC issuers' tokens for platform tokens (RFC 8693), with
//!   their people provisioned just in time.
//! - `tenants`, `users`, `api_keys`: the managed resources, with their rules.
//! - `grpc`: the `somagent.identity.v1` service the gateway and other services call.
//!
//! The JWKS is also served on `GET /.well-known/jwks.json` (internal; the gateway
//! publishes it).

pub mod api_keys;
mod audit;
pub mod bootstrap;
pub mod config;
mod cutoffs;
pub mod domain;
mod exchange;
mod grpc;
pub mod keyring;
mod reauth;
pub mod store;
pub mod tenants;
pub mod tokens;
pub mod users;

use std::sync::Arc;

use anyhow::Context;
use axum::routing::get;
use somagent_common::app::{ServiceApp, ServiceBuilder, ServiceContext};
use somagent_common::infra::db::Migration;

pub use somagent_common::service::IDENTITY as SPEC;

/// This service's own schema migrations, applied after the common ones.
pub const MIGRATIONS: &[Migration] = store::MIGRATIONS;

/// Builds the service from its context, ready to run: bootstraps an empty store and
/// loads (or makes) its signing keys first.
pub async fn build(ctx: ServiceContext) -> anyhow::Result<ServiceApp> {
    let data_dir = ctx.config.data_dir.clone();
    let settings: config::IdentityConfig = ctx.settings()?;
    let builder = ServiceBuilder::new(ctx, MIGRATIONS).await?;
    let db = builder.db().context("identity needs its database")?.clone();
    let sealer = somagent_common::secrets::load_sealer(&builder.context().config)?;
    let store = store::IdentityStore::new(db, Arc::new(sealer));
    // Rows written before secrets were sealed are sealed now, before anything reads them.
    let sealed = store.reseal(store::ResealScope::Plaintext).await?;
    if sealed > 0 {
        tracing::info!(sealed, "sealed stored secrets that were in plaintext");
    }
    let password = settings.bootstrap_admin_password.filter(|p| !p.is_empty());
    bootstrap::bootstrap(&store, &data_dir, password).await?;
    let keyring = Arc::new(keyring::Keyring::load_or_create(&store).await?);
    builder.spawn(keyring.clone().maintain(builder.stopping()));
    let config = builder.context().config.clone();
    let issuer = config.issuer();
    let shared = &builder.context().backends;
    let events = shared
        .events
        .clone()
        .context("identity needs the event bus")?;
    let cache = shared.cache.clone().context("identity needs the cache")?;
    let cutoffs = cutoffs::TokenCutoffs::new(cache.clone());
    let issuer_key = somagent_common::auth::ServiceIssuerKey::load(&data_dir)?;
    // Calls acting for a user carry their token; identity checks it like anyone else,
    // against its own published keys.
    let verifier = Arc::new(somagent_common::auth::Verifier::new(
        vec![somagent_common::auth::builtin_issuer(&config, &SPEC)],
        Some(cache.clone()),
    ));
    let jwks = keyring.clone();
    let routes = axum::Router::new().route(
        "/.well-known/jwks.json",
        get(move || {
            let keyring = jwks.clone();
            async move { axum::Json(keyring.jwks()) }
        }),
    );
    let tokens = tokens::TokenService::new(
        store.clone(),
        events.clone(),
        keyring.clone(),
        issuer,
        cache.clone(),
    );
    // The same external issuers the gateway trusts, verified again here: identity takes
    // nobody's word for an external token.
    let exchange = exchange::TokenExchange::new(
        somagent_common::auth::external_issuers_from_env()?,
        cache.clone(),
        store.clone(),
        events.clone(),
        cutoffs.clone(),
        tokens.clone(),
    );
    let reauth = reauth::Reauth::new(store.clone(), cache);
    let grpc = grpc::IdentityGrpc {
        tokens,
        exchange,
        tenants: tenants::TenantService::new(store.clone(), events.clone(), cutoffs.clone()),
        users: users::UserService::new(
            store.clone(),
            events.clone(),
            cutoffs.clone(),
            reauth.clone(),
        ),
        api_keys: api_keys::ApiKeyService::new(store, events.clone(), reauth, cutoffs),
        events,
        jwks: keyring,
        verifier: verifier.clone(),
        issuer_key,
    };
    let service =
        somagent_common::proto::identity::v1::identity_service_server::IdentityServiceServer::new(
            grpc,
        );
    Ok(builder
        .http(routes)
        .authenticated_grpc(verifier, service)
        .build())
}
