//! The OpenAPI 3.1 document of the public API, generated from the handlers and the
//! types they take and answer (`utoipa`), served at `GET /openapi.json`, with a
//! reference page at `GET /docs`.

use axum::Json;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "SomaAgent",
        description = "The public API of SomaAgent, a multi-tenant platform for LLM agents. \
            Errors are `{\"error\": {\"code\", \"message\", \"details\"}}`.",
    ),
    components(schemas(super::views::Problem)),
    modifiers(&Credentials),
    tags(
        (name = "auth", description = "Tokens, the caller, the issuer's keys"),
        (name = "tenants", description = "Tenants (platform admins) and your own"),
        (name = "users", description = "Your tenant's users and MFA"),
        (name = "api-keys", description = "API keys, sent as `X-API-Key`"),
        (name = "models", description = "OpenAI-compatible chat and the tenant's model profiles"),
        (name = "policy", description = "Policy decisions, the tenant's rules and its signed constitution"),
        (name = "sessions", description = "Agent sessions and their turns, streamed over SSE"),
        (name = "tools", description = "The tenant's tools: define them from OpenAPI documents, set their credentials (write-only), call their actions, read the call log"),
        (name = "workflows", description = "The tenant's workflow runs, for its admins: list, inspect, cancel, signal"),
        (name = "settings", description = "The tenant's settings (JSON merge patches, versioned), feature flags, and each user's preferences"),
        (name = "billing", description = "What usage cost: the ledger of every metered call and its sums, in integer micro-units"),
        (name = "analytics", description = "What the tenant's events add up to: usage, sessions and turns, decisions, models, tools, workflows; governance reports and exports"),
        (name = "projects", description = "KAMACHIQ projects (a goal planned into deliverables, governed, approved, run in waves by agents, reviewed, bundled) and multi-agent runs"),
        (name = "capsules", description = "Capsules: versioned, signed agent and task templates; submissions, reviews, installations, ratings, and running one as a session"),
        (name = "notifications", description = "Your inbox, live over SSE and the WebSocket; the tenant's signed webhooks and their delivery log"),
    )
)]
pub struct ApiDoc;

/// The two ways to authenticate: a bearer access token, or an API key header.
struct Credentials;

impl Modify for Credentials {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some("An access token from `POST /v1/auth/token`"))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "X-API-Key",
                "An API key from `POST /v1/api-keys`",
            ))),
        );
    }
}

pub async fn document(
    axum::extract::State(doc): axum::extract::State<std::sync::Arc<utoipa::openapi::OpenApi>>,
) -> Json<utoipa::openapi::OpenApi> {
    Json((*doc).clone())
}

/// What the docs page may load: its own script and style from this origin, the API
/// document from this origin, nothing else (no inline script, no frames, no forms).
const DOCS_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// A page or asset of the docs, with the headers that keep it to itself.
fn docs_asset(content_type: &'static str, body: &'static str) -> axum::response::Response {
    use axum::http::header;
    use axum::response::IntoResponse;
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, DOCS_CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// `GET /docs`: a reference page of `/openapi.json`, built into the binary: it works
/// with no internet and runs no third-party code.
pub async fn docs() -> axum::response::Response {
    docs_asset(
        "text/html; charset=utf-8",
        include_str!("../../assets/docs.html"),
    )
}

/// `GET /docs/docs.js`: the page's script.
pub async fn docs_script() -> axum::response::Response {
    docs_asset(
        "text/javascript; charset=utf-8",
        include_str!("../../assets/docs.js"),
    )
}

/// `GET /docs/docs.css`: the page's style.
pub async fn docs_style() -> axum::response::Response {
    docs_asset(
        "text/css; charset=utf-8",
        include_str!("../../assets/docs.css"),
    )
}
