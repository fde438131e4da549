//! `/v1/capsules*`: capsules (versioned agent and task templates) and their
//! marketplace. Publishers register Ed25519 keys and submit signed, attested versions;
//! reviewers approve or reject them; tenants install a version per environment,
//! upgrade, roll back and uninstall; everyone searches, downloads and rates; and
//! `execute` runs an installed capsule as a session. The capsule repository decides;
//! these handlers map.

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};
use somagent_common::auth::Capability;
use somagent_common::capsule::Definition;
use somagent_common::error::ApiError;
use somagent_common::proto::capsule::v1 as pb;
use utoipa::{IntoParams, ToSchema};

use super::Authenticated;
use super::body::json_body;
use super::forward::{Answer, json_answer};
use super::views::Problem;
use crate::Gateway;

type JsonAnswer = Result<Json<Value>, ApiError>;
type Created = Result<(StatusCode, Json<Value>), ApiError>;

fn parsed(body: pb::Body) -> Result<Json<Value>, ApiError> {
    json_answer(&body.json, "capsule-repo").map(Json)
}

fn object(body: Result<Json<Value>, JsonRejection>) -> Result<String, ApiError> {
    let value = json_body(body)?;
    if !value.is_object() {
        return Err(ApiError::bad_request("the body is a JSON object"));
    }
    Ok(value.to_string())
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CatalogParams {
    /// Words that must all appear in the id, name, summary, category or tags.
    q: Option<String>,
    category: Option<String>,
    tag: Option<String>,
    /// `agent`, `task`, `planner` or `reviewer`.
    kind: Option<String>,
    /// Only the capsules installed in the caller's tenant.
    installed: Option<bool>,
}

/// The catalog: approved public capsules, the tenant's own private ones and the
/// platform's, each at its latest version with rating, downloads, runs and the
/// tenant's installations.
#[utoipa::path(get, path = "/v1/capsules", tag = "capsules", params(CatalogParams),
    responses((status = 200, description = "`{capsules: [...], categories: [...]}`"),
              (status = 401, body = Problem), (status = 403, body = Problem)),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn catalog(
    State(gateway): State<Gateway>,
    auth: Authenticated,
    Query(p): Query<CatalogParams>,
) -> JsonAnswer {
    let request = pb::CatalogRequest {
        q: p.q.unwrap_or_default(),
        category: p.category.unwrap_or_default(),
        tag: p.tag.unwrap_or_default(),
        kind: p.kind.unwrap_or_default(),
        installed: p.installed.unwrap_or(false),
    };
    parsed(
        gateway
            .capsules
            .clone()
            .catalog(auth.forward(request))
            .answer()
            .await?,
    )
}

/// A capsule: its latest definition, versions, rating, counts and installations.
#[utoipa::path(get, path = "/v1/capsules/{id}", tag = "capsules",
    params(("id" = String, Path)),
    responses((status = 200, description = "the capsule"), (status = 401, body = Problem),
              (status = 404, body = Problem)),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn get(
    State(gateway): State<Gateway>,
    auth: Authenticated,
    Path(id): Path<String>,
) -> JsonAnswer {
    parsed(
        gateway
            .capsules
            .clone()
            .get_capsule(auth.forward(pb::ById { id }))
            .answer()
            .await?,
    )
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DownloadParams {
    /// The latest approved version when absent.
    version: Option<String>,
}

/// An approved version's signed definition with its attestation, signature and the
/// publisher's public key, to verify offline. Counts a download.
#[utoipa::path(get, path = "/v1/capsules/{id}/download", tag = "capsules",
    params(("id" = String, Path), DownloadParams),
    responses((status = 200, description = "the signed definition"), (status = 401, body = Problem),
              (status = 404, body = Problem)),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn download(
    State(gateway): State<Gateway>,
    auth: Authenticated,
    Path(id): Path<String>,
    Query(p): Query<DownloadParams>,
) -> JsonAnswer {
    let request = pb::ByVersion {
        id,
        version: p.version.unwrap_or_default(),
    };
    parsed(
        gateway
            .capsules
            .clone()
            .download(auth.forward(request))
            .answer()
            .await?,
    )
}

/// A publisher key: `{"name", "public_key"}`, the raw Ed25519 public key (32 bytes)
/// in base64url.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct NewKey {
    name: String,
    public_key: String,
}

/// Registers a publisher key for the tenant (`capsules:write`).
#[utoipa::path(post, path = "/v1/capsules/keys", tag = "capsules", request_body = NewKey,
    responses((status = 201, description = "the key"), (status = 401, body = Problem),
              (status = 403, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn add_key(
    State(gateway): State<Gateway>,
    auth: Authenticated,
    body: Result<Json<Value>, JsonRejection>,
) -> Created {
    let json = object(body)?;
    let answer = gateway
        .capsules
        .clone()
        .add_key(auth.forward(pb::Body { json }))
        .answer()
        .await?;
    Ok((StatusCode::CREATED, parsed(answer)?))
}

/// The tenant's publisher keys.
#[utoipa::path(get, path = "/v1/capsules/keys", tag = "capsules",
    responses((status = 200, description = "`{keys: [...]}`"), (status = 401, body = Problem)),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn keys(State(gateway): State<Gateway>, auth: Authenticated) -> JsonAnswer {
    parsed(
        gateway
            .capsules
            .clone()
            .list_keys(auth.forward(pb::Empty {}))
            .answer()
            .await?,
    )
}

/// Revokes a publisher key (`capsules:write`): the versions it signed stop installing
/// and running.
#[utoipa::path(delete, path = "/v1/capsules/keys/{id}", tag = "capsules",
    params(("id" = String, Path)),
    responses((status = 200, description = "the revoked key"), (status = 401, body = Problem),
              (status = 404, body = Problem)),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn revoke_key(
    State(gateway): State<Gateway>,
    auth: Authenticated,
    Path(id): Path<String>,
) -> JsonAnswer {
    parsed(
        gateway
            .capsules
            .clone()
            .revoke_key(auth.forward(pb::ById { id }))
            .answer()
            .await?,
    )
}

/// A submission: `{definition, attestation_hash, signature, key_id, visibility?, notes?}`.
/// The attestation is the SHA-256 (hex) of the definition's canonical JSON (keys
/// sorted, no whitespace); the signature is the key's Ed25519 signature (base64url) of
/// `somagent-capsule:v1\n<id>\n<version>\n<attestation_hash>`.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct NewSubmission {
    #[schema(value_type = Object)]
    definition: Value,
    attestation_hash: String,
    signature: String,
    key_id: String,
    /// `private` (default: this tenant only) or `public` (the marketplace).
    visibility: Option<String>,
    notes: Option<String>,
}

/// Submits a capsule version for review (`capsules:write`).
#[utoipa::path(post, path = "/v1/capsules/submissions", tag = "capsules", request_body = NewSubmission,
    responses((status = 201, description = "the submission, pending review"),
              (status = 400, description = "the attestation or signature does not verify", body = Problem),
              (status = 401, body = Problem), (status = 403, body = Problem),
              (status = 409, description = "the version exists, or the id is another publisher's", body = Problem),
              (status = 422, body = Problem)),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn submit(
    State(gateway): State<Gateway>,
    auth: Authenticated,
    body: Result<Json<Value>, JsonRejection>,
) -> Created {
    let json = object(body)?;
    let answer = gateway
        .capsules
        .clone()
        .submit(auth.forward(pb::Body { json }))
        .answer()
        .await?;
    Ok((StatusCode::CREATED, parsed(answer)?))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SubmissionParams {
    /// `pending`, `approved` or `rejected`.
    status: Option<String>,
}

/// The tenant's submissions (and for the platform's reviewers, the public queue).
#[utoipa::path(get, path = "/v1/capsules/submissions", tag = "capsules", params(SubmissionParams),
    responses((status = 200, description = "`{submissions: [...]}`"), (status = 401, body = Problem)),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn submissions(
    State(gateway): State<Gateway>,
    auth: Authenticated,
    Query(p): Query<SubmissionParams>,
) -> JsonAnswer {
    let request = pb::ListSubmissionsRequest {
        status: p.status.unwrap_or_default(),
    };
    parsed(
        gateway
            .capsules
            .clone()
            .list_submissions(auth.forward(request))
            .answer()
            .await?,
    )
}

#[utoipa::path(get, path = "/v1/capsules/submissions/{id}", tag = "capsules",
    params(("id" = String, Path)),
    responses((status = 200, description = "the submission"), (status = 401, body = Problem),
              (status = 404, body = Problem)),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn submission(
    State(gateway): State<Gateway>,
    auth: Authenticated,
    Path(id): Path<String>,
) -> JsonAnswer {
    parsed(
        gateway
            .capsules
            .clone()
            .get_submission(auth.forward(pb::ById { id }))
            .answer()
            .await?,
    )
}

/// `{"decision": "approve" | "reject", "notes"}` (notes required to reject).
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ReviewDecision {
    decision: String,
    notes: Option<String>,
}

/// Approves or rejects a pending submission (`capsules:review`, not its submitter; a
/// public one needs `platform:admin`).
#[utoipa::path(post, path = "/v1/capsules/submissions/{id}/review", tag = "capsules",
    params(("id" = String, Path)), request_body = ReviewDecision,
    responses((status = 200, description = "the reviewed submission"), (status = 401, body = Problem),
              (status = 403, body = Problem), (status = 404, body = Problem),
              (status = 409, description = "already reviewed, or it no longer verifies", body = Problem)),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn review(
    State(gateway): State<Gateway>,
    auth: Authenticated,
    Path(id): Path<String>,
    body: Result<Json<Value>, JsonRejection>,
) -> JsonAnswer {
    let json = object(body)?;
    parsed(
        gateway
            .capsules
            .clone()
            .review(auth.forward(pb::ReviewRequest { id, json }))
            .answer()
            .await?,
    )
}

/// The tenant's installations.
#[utoipa::path(get, path = "/v1/capsules/installations", tag = "capsules",
    responses((status = 200, description = "`{installations: [...]}`"), (status = 401, body = Problem)),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn installations(State(gateway): State<Gateway>, auth: Authenticated) -> JsonAnswer {
    parsed(
        gateway
            .capsules
            .clone()
            .list_installations(auth.forward(pb::Empty {}))
            .answer()
            .await?,
    )
}

/// `{"version"?, "environment"?: "prod" | "staging", "notes"?}`.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct InstallRequest {
    /// The latest approved version when absent.
    version: Option<String>,
    environment: Option<String>,
    notes: Option<String>,
}

/// Installs an approved version in the tenant (`capsules:write`), or upgrades the one
/// installed, which stays to roll back to. The version is verified first.
#[utoipa::path(post, path = "/v1/capsules/{id}/installations", tag = "capsules",
    params(("id" = String, Path)), request_body = InstallRequest,
    responses((status = 200, description = "the installation"), (status = 401, body = Problem),
              (status = 403, body = Problem), (status = 404, body = Problem),
              (status = 409, description = "the version fails verification", body = Problem)),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn install(
    State(gateway): State<Gateway>,
    auth: Authenticated,
    Path(id): Path<String>,
    body: Result<Json<Value>, JsonRejection>,
) -> JsonAnswer {
    let json = object(body)?;
    parsed(
        gateway
            .capsules
            .clone()
            .install(auth.forward(pb::InstallRequest { id, json }))
            .answer()
            .await?,
    )
}

/// Rolls an installation back to the version before (`capsules:write`).
#[utoipa::path(post, path = "/v1/capsules/{id}/installations/{environment}/rollback", tag = "capsules",
    params(("id" = String, Path), ("environment" = String, Path)),
    responses((status = 200, description = "the installation"), (status = 401, body = Problem),
              (status = 404, body = Problem),
              (status = 409, description = "there is no previous version", body = Problem)),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn rollback(
    State(gateway): State<Gateway>,
    auth: Authenticated,
    Path((id, environment)): Path<(String, String)>,
) -> JsonAnswer {
    parsed(
        gateway
            .capsules
            .clone()
            .rollback(auth.forward(pb::ByEnvironment { id, environment }))
            .answer()
            .await?,
    )
}

/// Uninstalls a capsule from an environment (`capsules:write`).
#[utoipa::path(delete, path = "/v1/capsules/{id}/installations/{environment}", tag = "capsules",
    params(("id" = String, Path), ("environment" = String, Path)),
    responses((status = 200, description = "uninstalled"), (status = 401, body = Problem),
              (status = 404, body = Problem)),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn uninstall(
    State(gateway): State<Gateway>,
    auth: Authenticated,
    Path((id, environment)): Path<(String, String)>,
) -> JsonAnswer {
    parsed(
        gateway
            .capsules
            .clone()
            .uninstall(auth.forward(pb::ByEnvironment { id, environment }))
            .answer()
            .await?,
    )
}

/// `{"stars": 1-5, "comment"?}`.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct RatingRequest {
    stars: u32,
    comment: Option<String>,
}

/// The caller's rating of a capsule, replaced when given again.
#[utoipa::path(put, path = "/v1/capsules/{id}/rating", tag = "capsules",
    params(("id" = String, Path)), request_body = RatingRequest,
    responses((status = 200, description = "the rating and the capsule's standing"),
              (status = 401, body = Problem), (status = 404, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn rate(
    State(gateway): State<Gateway>,
    auth: Authenticated,
    Path(id): Path<String>,
    body: Result<Json<Value>, JsonRejection>,
) -> JsonAnswer {
    let json = object(body)?;
    parsed(
        gateway
            .capsules
            .clone()
            .rate(auth.forward(pb::RateRequest { id, json }))
            .answer()
            .await?,
    )
}

/// A capsule's ratings, newest first (the caller's own marked).
#[utoipa::path(get, path = "/v1/capsules/{id}/ratings", tag = "capsules",
    params(("id" = String, Path)),
    responses((status = 200, description = "`{ratings: [...]}`"), (status = 401, body = Problem),
              (status = 404, body = Problem)),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn ratings(
    State(gateway): State<Gateway>,
    auth: Authenticated,
    Path(id): Path<String>,
) -> JsonAnswer {
    parsed(
        gateway
            .capsules
            .clone()
            .list_ratings(auth.forward(pb::ById { id }))
            .answer()
            .await?,
    )
}

/// `{"input": {...}, "environment"?, "model"?, "metadata"?}`: the input is checked
/// against the capsule's input schema and rendered into the first message.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExecuteRequest {
    #[schema(value_type = Object)]
    input: Value,
    /// `prod` (default) or `staging`: which installation runs.
    environment: Option<String>,
    /// A model profile; the capsule's (or the tenant's default) when absent.
    model: Option<String>,
    #[schema(value_type = Object)]
    metadata: Option<Value>,
}

/// Runs an installed capsule (or one of the platform's) as a session: a session with
/// its persona, tools, memory and limits, whose first turn is the rendered input.
/// Follow it on `/v1/sessions/{id}` or `/v1/ws`. A project capsule runs as a project
/// (`projects:run`) whose goal is the rendered input: `{project_id, ...}`.
#[utoipa::path(post, path = "/v1/capsules/{id}/execute", tag = "capsules",
    params(("id" = String, Path)), request_body = ExecuteRequest,
    responses((status = 202, description = "`{session_id, turn, capsule: {id, version}}`, or `{project_id, capsule}` for a project capsule"),
              (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem),
              (status = 409, description = "the capsule fails verification", body = Problem),
              (status = 422, description = "the input does not match the input schema", body = Problem)),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn execute(
    State(gateway): State<Gateway>,
    auth: Authenticated,
    Path(id): Path<String>,
    body: Result<Json<ExecuteRequest>, JsonRejection>,
) -> Created {
    auth.principal.require(Capability::SessionsWrite)?;
    let b = json_body(body)?;
    let environment = b.environment.unwrap_or_else(|| "prod".into());
    let resolved = gateway
        .capsules
        .clone()
        .resolve(auth.forward(pb::ResolveRequest {
            id: id.clone(),
            environment: environment.clone(),
            input_json: b.input.to_string(),
            count_run: false,
        }))
        .answer()
        .await?;
    if resolved.prompt.trim().is_empty() {
        return Err(ApiError::validation(
            "input",
            "renders an empty first message",
        ));
    }
    let definition = serde_json::from_str::<Value>(&resolved.definition_json)
        .ok()
        .and_then(|v| Definition::parse(&v).ok())
        .ok_or_else(|| {
            ApiError::internal(anyhow::anyhow!(
                "capsule-repo answered a definition that does not read"
            ))
        })?;
    if let Some(project) = &definition.project {
        // A project capsule runs as a project: its input is the goal.
        let body = json!({
            "goal": resolved.prompt, "approval": project.approval, "budget_tokens": project.budget_tokens,
            "parallelism": project.parallelism, "max_deliverables": project.max_deliverables,
            "pass_score": project.pass_score, "max_revisions": project.max_revisions,
            "planner": project.planner, "reviewer": project.reviewer, "worker": project.worker,
            "model": b.model.or_else(|| definition.model.clone()),
        });
        let body: serde_json::Map<String, Value> = body
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(_, v)| !v.is_null())
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let started = gateway
            .orchestrator
            .clone()
            .start_project(
                auth.forward(somagent_common::proto::orchestrator::v1::JsonBody {
                    json: Value::Object(body).to_string(),
                }),
            )
            .answer()
            .await?;
        let mut answer = json_answer(&started.json, "the orchestrator")?;
        answer["capsule"] = json!({ "id": id, "version": resolved.version, "attestation_hash": resolved.attestation_hash });
        return Ok((StatusCode::ACCEPTED, Json(answer)));
    }
    let mut metadata = match b.metadata {
        None => json!({}),
        Some(m @ Value::Object(_)) => m,
        Some(_) => return Err(ApiError::validation("metadata", "is a JSON object")),
    };
    metadata["capsule_environment"] = json!(environment);
    let session = super::sessions::open(
        &gateway,
        &auth,
        somagent_common::proto::orchestrator::v1::CreateSessionRequest {
            capsule_id: id.clone(),
            model: b.model.unwrap_or_default(),
            metadata_json: metadata.to_string(),
        },
        Some(resolved.prompt),
    )
    .await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({
            "session_id": session.id,
            "turn": session.turns,
            "status": session.status,
            "capsule": { "id": id, "version": resolved.version, "attestation_hash": resolved.attestation_hash },
        })),
    ))
}
