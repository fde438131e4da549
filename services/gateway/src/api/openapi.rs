//! The OpenAPI 3.1 document of the public API, generated from the handlers and the
//! types they take and answer (`utoipa`), served at `GET /openapi.json`, with a
//! reference page at `GET /docs`.

use axum::Json;
use axum::response::Html;
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

/// `GET /docs`: an interactive reference of `/openapi.json` (the page loads its viewer
/// from a CDN; the document itself is served here).
pub async fn docs() -> Html<&'static str> {
    Html(
        r#"<!doctype html>
<html>
  <head>
    <title>SomaAgent API</title>
    <meta charset="utf-8" />
    <meta name="viewport" content="width=device-width, initial-scale=1" />
  </head>
  <body>
    <script id="api-reference" data-url="/openapi.json"></script>
    <script src="https://cdn.jsdelivr.net/npm/@scalar/api-reference"></script>
    <noscript>The API document is at <a href="/openapi.json">/openapi.json</a>.</noscript>
  </body>
</html>
"#,
    )
}
