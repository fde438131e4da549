//! The gateway's public HTTP routes. Each is registered with its OpenAPI description
//! (`routes!`), so the served document covers exactly the routes that exist.

mod analytics;
mod api_keys;
mod approvals;
mod auth;
mod billing;
mod body;
mod capsules;
mod chat;
mod embeddings;
mod forward;
mod guards;
mod mcp;
mod memory;
mod notifications;
mod openapi;
mod paging;
mod policy;
mod principal;
mod profiles;
mod projects;
mod sessions;
mod settings;
mod tenants;
mod tools;
mod users;
pub(crate) mod views;
mod webhooks;
mod workflows;
mod ws;

pub use principal::Authenticated;

use std::sync::Arc;

use axum::Router;
use axum::http::HeaderValue;
use axum::routing::get;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::Gateway;

/// The public routes and the OpenAPI document describing them.
fn documented(gateway: Gateway) -> (Router, utoipa::openapi::OpenApi) {
    OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .routes(routes!(auth::token))
        .routes(routes!(auth::revoke))
        .routes(routes!(auth::rotate_keys))
        .routes(routes!(auth::me))
        .routes(routes!(auth::status))
        .routes(routes!(auth::openid_configuration))
        .routes(routes!(auth::jwks))
        .routes(routes!(tenants::create, tenants::list))
        .routes(routes!(tenants::get, tenants::update, tenants::delete))
        .routes(routes!(users::create, users::list))
        .routes(routes!(users::get, users::update, users::delete))
        .routes(routes!(users::enroll_mfa))
        .routes(routes!(users::verify_mfa))
        .routes(routes!(users::disable_mfa))
        .routes(routes!(api_keys::create, api_keys::list))
        .routes(routes!(api_keys::revoke))
        .routes(routes!(chat::chat_completions))
        .routes(routes!(chat::models))
        .routes(routes!(embeddings::embeddings))
        .routes(routes!(billing::usage))
        .routes(routes!(billing::entries))
        .routes(routes!(billing::budgets, billing::put_budgets))
        .routes(routes!(billing::invoices))
        .routes(routes!(billing::invoice))
        .routes(routes!(analytics::export))
        .routes(routes!(analytics::report))
        .routes(routes!(settings::get_settings, settings::patch_settings))
        .routes(routes!(settings::versions))
        .routes(routes!(settings::version))
        .routes(routes!(settings::flags))
        .routes(routes!(
            settings::flag,
            settings::put_flag,
            settings::clear_flag
        ))
        .routes(routes!(settings::preferences, settings::patch_preferences))
        .routes(routes!(settings::secrets))
        .routes(routes!(settings::put_secret, settings::delete_secret))
        .routes(routes!(
            memory::put_memory,
            memory::get_memory,
            memory::delete_memory
        ))
        .routes(routes!(memory::list_memories))
        .routes(routes!(memory::search))
        .routes(routes!(memory::retrieve))
        .routes(routes!(memory::list_documents))
        .routes(routes!(memory::get_document, memory::delete_document))
        .routes(routes!(memory::remember))
        .merge(
            // Documents are larger than any other body.
            OpenApiRouter::new()
                .routes(routes!(memory::add_document))
                .layer(axum::extract::DefaultBodyLimit::max(
                    memory::MAX_UPLOAD_BYTES,
                )),
        )
        .routes(routes!(capsules::catalog))
        .routes(routes!(capsules::keys, capsules::add_key))
        .routes(routes!(capsules::revoke_key))
        .routes(routes!(capsules::submissions, capsules::submit))
        .routes(routes!(capsules::submission))
        .routes(routes!(capsules::review))
        .routes(routes!(capsules::installations))
        .routes(routes!(capsules::get))
        .routes(routes!(capsules::download))
        .routes(routes!(capsules::install))
        .routes(routes!(capsules::rollback))
        .routes(routes!(capsules::uninstall))
        .routes(routes!(capsules::rate))
        .routes(routes!(capsules::ratings))
        .routes(routes!(capsules::execute))
        .routes(routes!(projects::start, projects::list))
        .routes(routes!(projects::get))
        .routes(routes!(projects::deliverable))
        .routes(routes!(projects::approve))
        .routes(routes!(projects::requeue))
        .routes(routes!(projects::cancel))
        .routes(routes!(projects::start_mao))
        .routes(routes!(projects::get_mao))
        .routes(routes!(projects::cancel_mao))
        .routes(routes!(profiles::list))
        .routes(routes!(profiles::put, profiles::delete))
        .routes(routes!(policy::evaluate))
        .routes(routes!(policy::list_rules, policy::create_rule))
        .routes(routes!(
            policy::get_rule,
            policy::update_rule,
            policy::delete_rule
        ))
        .routes(routes!(policy::current_constitution))
        .routes(routes!(policy::constitution_version))
        .routes(routes!(policy::publish_constitution))
        .routes(routes!(sessions::create, sessions::list))
        .routes(routes!(sessions::get, sessions::delete))
        .routes(routes!(sessions::send, sessions::messages))
        .routes(routes!(approvals::list))
        .routes(routes!(approvals::answer))
        .routes(routes!(tools::list, tools::create))
        .routes(routes!(tools::invocations))
        .routes(routes!(tools::get, tools::delete))
        .routes(routes!(tools::put_credential, tools::delete_credential))
        .routes(routes!(tools::invoke))
        .routes(routes!(ws::ws))
        .routes(routes!(notifications::list, notifications::send))
        .routes(routes!(notifications::read))
        .routes(routes!(notifications::read_all))
        .routes(routes!(notifications::stream))
        .routes(routes!(webhooks::create, webhooks::list))
        .routes(routes!(webhooks::get, webhooks::update, webhooks::delete))
        .routes(routes!(webhooks::rotate_secret))
        .routes(routes!(webhooks::deliveries))
        .routes(routes!(webhooks::retry))
        .routes(routes!(workflows::list))
        .routes(routes!(workflows::get))
        .routes(routes!(workflows::cancel))
        .routes(routes!(workflows::signal))
        .with_state(gateway)
        .split_for_parts()
}

fn router(gateway: Gateway) -> Router {
    let gateway_for_mcp = gateway.clone();
    let (routes, document) = documented(gateway);
    let docs = Router::new()
        .route("/openapi.json", get(openapi::document))
        .route("/docs", get(openapi::docs))
        .route("/docs/docs.js", get(openapi::docs_script))
        .route("/docs/docs.css", get(openapi::docs_style))
        .with_state(Arc::new(document));
    routes
        .merge(docs)
        .merge(mcp::routes(gateway_for_mcp))
        .layer(guards::body_limit())
        .layer(axum::middleware::from_fn(guards::deadline))
}

/// The routes with CORS for the configured origins.
pub fn public(gateway: Gateway, cors_origins: Vec<HeaderValue>) -> Router {
    router(gateway).layer(guards::cors(cors_origins))
}
