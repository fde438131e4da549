//! `/v1/policy/*` and `/v1/constitutions/*`: evaluate a text or a tool call against the
//! tenant's policy; manage its own rules (`policy:write`); read its signed constitution
//! and publish new versions (`constitution:write`).

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use somagent_common::auth::Capability;
use somagent_common::error::ApiError;
use somagent_common::proto::constitution::v1 as cpb;
use somagent_common::proto::policy::v1 as pb;
use utoipa::ToSchema;

use super::Authenticated;
use super::body::json_body;
use super::forward::Answer;
use super::views::Problem;
use crate::Gateway;

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EvaluateBody {
    /// `prompt`, `completion` or `tool`.
    action: String,
    #[serde(default)]
    text: String,
    /// For `tool`: the tool's name.
    #[serde(default)]
    tool: String,
    #[serde(default)]
    session_id: String,
}

#[derive(Serialize, ToSchema)]
pub struct Decision {
    allowed: bool,
    /// 0-100.
    score: u32,
    severity: Option<String>,
    reasons: Vec<String>,
    rule_ids: Vec<String>,
    flagged: Vec<String>,
    constitution_hash: String,
}

/// Evaluate a text or a tool call against the caller's tenant's policy.
#[utoipa::path(post, path = "/v1/policy/evaluate", tag = "policy", request_body = EvaluateBody,
    responses((status = 200, body = Decision), (status = 401, body = Problem), (status = 403, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn evaluate(
    State(gateway): State<Gateway>,
    auth: Authenticated,
    body: Result<Json<EvaluateBody>, JsonRejection>,
) -> Result<Json<Decision>, ApiError> {
    auth.principal.require(Capability::PolicyRead)?;
    let b = json_body(body)?;
    let request = pb::EvaluateRequest {
        action: b.action,
        text: b.text,
        tool: b.tool,
        session_id: b.session_id,
    };
    let d = gateway
        .policy
        .clone()
        .evaluate(auth.forward(request))
        .answer()
        .await?;
    Ok(Json(Decision {
        allowed: d.allowed,
        score: d.score,
        severity: Some(d.severity).filter(|s| !s.is_empty()),
        reasons: d.reasons,
        rule_ids: d.rule_ids,
        flagged: d.flagged,
        constitution_hash: d.constitution_hash,
    }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RuleBody {
    name: String,
    #[serde(default)]
    description: String,
    /// `forbidden_term`, `forbidden_pattern` (a regular expression) or `deny_tool`.
    kind: String,
    value: String,
    /// `low`, `medium`, `high` or `critical`.
    severity: String,
    /// 0-100; at the constitution's block score or above, a request is refused.
    score: u32,
    #[serde(default = "yes")]
    enabled: bool,
}

fn yes() -> bool {
    true
}

#[derive(Serialize, ToSchema)]
pub struct PolicyRule {
    id: String,
    name: String,
    description: String,
    kind: String,
    value: String,
    severity: String,
    score: u32,
    enabled: bool,
    updated_at: String,
}

impl From<pb::Rule> for PolicyRule {
    fn from(r: pb::Rule) -> Self {
        Self {
            id: r.id,
            name: r.name,
            description: r.description,
            kind: r.kind,
            value: r.value,
            severity: r.severity,
            score: r.score,
            enabled: r.enabled,
            updated_at: r.updated_at,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct PolicyRules {
    rules: Vec<PolicyRule>,
}

fn rule_message(id: String, b: RuleBody) -> pb::Rule {
    pb::Rule {
        id,
        name: b.name,
        description: b.description,
        kind: b.kind,
        value: b.value,
        severity: b.severity,
        score: b.score,
        enabled: b.enabled,
        updated_at: String::new(),
    }
}

/// The tenant's own rules.
#[utoipa::path(get, path = "/v1/policy/rules", tag = "policy",
    responses((status = 200, body = PolicyRules), (status = 401, body = Problem), (status = 403, body = Problem)),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn list_rules(
    State(gateway): State<Gateway>,
    auth: Authenticated,
) -> Result<Json<PolicyRules>, ApiError> {
    auth.principal.require(Capability::PolicyRead)?;
    let answer = gateway
        .policy
        .clone()
        .list_rules(auth.forward(pb::ListRulesRequest {}))
        .answer()
        .await?;
    Ok(Json(PolicyRules {
        rules: answer.rules.into_iter().map(PolicyRule::from).collect(),
    }))
}

/// Add a rule; decisions use it at once.
#[utoipa::path(post, path = "/v1/policy/rules", tag = "policy", request_body = RuleBody,
    responses((status = 201, body = PolicyRule), (status = 401, body = Problem), (status = 403, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn create_rule(
    State(gateway): State<Gateway>,
    auth: Authenticated,
    body: Result<Json<RuleBody>, JsonRejection>,
) -> Result<(StatusCode, Json<PolicyRule>), ApiError> {
    auth.principal.require(Capability::PolicyWrite)?;
    let rule = rule_message(String::new(), json_body(body)?);
    let saved = gateway
        .policy
        .clone()
        .create_rule(auth.forward(rule))
        .answer()
        .await?;
    Ok((StatusCode::CREATED, Json(saved.into())))
}

/// One rule.
#[utoipa::path(get, path = "/v1/policy/rules/{id}", tag = "policy",
    params(("id" = String, Path, description = "the rule's id")),
    responses((status = 200, body = PolicyRule), (status = 401, body = Problem), (status = 404, body = Problem)),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn get_rule(
    State(gateway): State<Gateway>,
    auth: Authenticated,
    Path(id): Path<String>,
) -> Result<Json<PolicyRule>, ApiError> {
    auth.principal.require(Capability::PolicyRead)?;
    let rule = gateway
        .policy
        .clone()
        .get_rule(auth.forward(pb::GetRuleRequest { id }))
        .answer()
        .await?;
    Ok(Json(rule.into()))
}

/// Replace a rule.
#[utoipa::path(put, path = "/v1/policy/rules/{id}", tag = "policy",
    params(("id" = String, Path, description = "the rule's id")), request_body = RuleBody,
    responses((status = 200, body = PolicyRule), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn update_rule(
    State(gateway): State<Gateway>,
    auth: Authenticated,
    Path(id): Path<String>,
    body: Result<Json<RuleBody>, JsonRejection>,
) -> Result<Json<PolicyRule>, ApiError> {
    auth.principal.require(Capability::PolicyWrite)?;
    let rule = rule_message(id, json_body(body)?);
    let saved = gateway
        .policy
        .clone()
        .update_rule(auth.forward(rule))
        .answer()
        .await?;
    Ok(Json(saved.into()))
}

/// Delete a rule.
#[utoipa::path(delete, path = "/v1/policy/rules/{id}", tag = "policy",
    params(("id" = String, Path, description = "the rule's id")),
    responses((status = 204, description = "deleted"), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn delete_rule(
    State(gateway): State<Gateway>,
    auth: Authenticated,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    auth.principal.require(Capability::PolicyWrite)?;
    gateway
        .policy
        .clone()
        .delete_rule(auth.forward(pb::GetRuleRequest { id }))
        .answer()
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Serialize, ToSchema)]
pub struct ConstitutionView {
    version: u32,
    /// The constitution itself.
    #[schema(value_type = Object)]
    document: Value,
    /// SHA-256 of the canonical document, hex.
    hash: String,
    /// Ed25519 over "<tenant>\n<version>\n<hash>", base64url.
    signature: String,
    key_id: String,
    /// The raw Ed25519 key that verifies `signature`, base64url.
    public_key: String,
    published_at: Option<String>,
}

impl From<cpb::Constitution> for ConstitutionView {
    fn from(c: cpb::Constitution) -> Self {
        Self {
            version: c.version,
            document: serde_json::from_str(&c.document_json).unwrap_or(Value::Null),
            hash: c.hash,
            signature: c.signature,
            key_id: c.key_id,
            public_key: c.public_key,
            published_at: Some(c.published_at).filter(|p| !p.is_empty()),
        }
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PublishBody {
    /// `{name, principles, forbidden_terms, forbidden_patterns, pii, tools, roles,
    /// thresholds}`, as `GET /v1/constitutions/current` shows it.
    #[schema(value_type = Object)]
    document: Value,
}

/// The tenant's constitution in force (version 0 is the platform's default).
#[utoipa::path(get, path = "/v1/constitutions/current", tag = "policy",
    responses((status = 200, body = ConstitutionView), (status = 401, body = Problem), (status = 403, body = Problem)),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn current_constitution(
    State(gateway): State<Gateway>,
    auth: Authenticated,
) -> Result<Json<ConstitutionView>, ApiError> {
    auth.principal.require(Capability::ConstitutionRead)?;
    let c = gateway
        .constitution
        .clone()
        .get_current(auth.forward(cpb::GetCurrentRequest {}))
        .answer()
        .await?;
    Ok(Json(c.into()))
}

/// One version of the tenant's constitution.
#[utoipa::path(get, path = "/v1/constitutions/{version}", tag = "policy",
    params(("version" = u32, Path, description = "the version; 0 is the platform's default")),
    responses((status = 200, body = ConstitutionView), (status = 401, body = Problem), (status = 404, body = Problem)),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn constitution_version(
    State(gateway): State<Gateway>,
    auth: Authenticated,
    Path(version): Path<String>,
) -> Result<Json<ConstitutionView>, ApiError> {
    auth.principal.require(Capability::ConstitutionRead)?;
    let version: u32 = version
        .parse()
        .map_err(|_| ApiError::not_found("constitution version"))?;
    let c = gateway
        .constitution
        .clone()
        .get_version(auth.forward(cpb::GetVersionRequest { version }))
        .answer()
        .await?;
    Ok(Json(c.into()))
}

/// Publish the next version (admins): signed, in force at once, announced as
/// `constitution.updated`.
#[utoipa::path(post, path = "/v1/constitutions", tag = "policy", request_body = PublishBody,
    responses((status = 201, body = ConstitutionView), (status = 401, body = Problem), (status = 403, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn publish_constitution(
    State(gateway): State<Gateway>,
    auth: Authenticated,
    body: Result<Json<PublishBody>, JsonRejection>,
) -> Result<(StatusCode, Json<ConstitutionView>), ApiError> {
    auth.principal.require(Capability::ConstitutionWrite)?;
    let b = json_body(body)?;
    let request = cpb::PublishRequest {
        document_json: b.document.to_string(),
    };
    let c = gateway
        .constitution
        .clone()
        .publish(auth.forward(request))
        .answer()
        .await?;
    Ok((StatusCode::CREATED, Json(c.into())))
}
