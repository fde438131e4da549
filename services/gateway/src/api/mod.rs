//! The gateway's public HTTP routes.

mod api_keys;
mod auth;
mod limits;
mod principal;
mod tenants;
mod users;

pub use principal::Authenticated;

use axum::Router;
use axum::routing::{delete, get, post};

use crate::Gateway;

fn router(gateway: Gateway) -> Router {
    Router::new()
        .route("/v1/auth/token", post(auth::token))
        .route("/v1/auth/revoke", post(auth::revoke))
        .route("/v1/auth/keys/rotate", post(auth::rotate_keys))
        .route("/v1/me", get(auth::me))
        .route("/v1/status", get(auth::status))
        .route("/v1/tenants", post(tenants::create).get(tenants::list))
        .route("/v1/tenants/{id}", get(tenants::get))
        .route("/v1/users", post(users::create).get(users::list))
        .route("/v1/users/{id}", get(users::get))
        .route("/v1/users/{id}/mfa/enroll", post(users::enroll_mfa))
        .route("/v1/users/{id}/mfa/verify", post(users::verify_mfa))
        .route("/v1/api-keys", post(api_keys::create).get(api_keys::list))
        .route("/v1/api-keys/{id}", delete(api_keys::revoke))
        .route(
            "/.well-known/openid-configuration",
            get(auth::openid_configuration),
        )
        .route("/.well-known/jwks.json", get(auth::jwks))
        .with_state(gateway)
        .layer(limits::body_limit())
        .layer(axum::middleware::from_fn(limits::deadline))
}

/// The routes with CORS for the configured origins.
pub fn public(gateway: Gateway) -> anyhow::Result<Router> {
    Ok(router(gateway).layer(limits::cors()?))
}
