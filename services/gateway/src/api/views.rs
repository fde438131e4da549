//! What the public API answers with: one type per resource, so handlers stay thin and
//! the OpenAPI document is generated from the same types the wire carries.

use serde::Serialize;
use serde_json::Value;
use somagent_common::auth::Principal;
use somagent_common::proto::identity::v1 as pb;
use utoipa::ToSchema;

/// An error: `{"error": {"code", "message", "details"}}`.
#[derive(Serialize, ToSchema)]
pub struct Problem {
    pub error: ProblemBody,
}

#[derive(Serialize, ToSchema)]
pub struct ProblemBody {
    /// A stable, machine-readable code (`validation_failed`, `forbidden`, ...).
    pub code: String,
    /// What went wrong, for people.
    pub message: String,
    /// More about it: the field that failed, the missing capability, ...
    #[schema(value_type = Object)]
    pub details: Option<Value>,
}

fn optional(value: String) -> Option<String> {
    (!value.is_empty()).then_some(value)
}

#[derive(Serialize, ToSchema)]
pub struct Tenant {
    pub id: String,
    pub slug: String,
    pub display_name: String,
    /// `active` or `suspended`.
    pub status: String,
    /// RFC 3339.
    pub created_at: String,
}

impl From<pb::Tenant> for Tenant {
    fn from(t: pb::Tenant) -> Self {
        Self {
            id: t.id,
            slug: t.slug,
            display_name: t.display_name,
            status: t.status,
            created_at: t.created_at,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct User {
    pub id: String,
    pub tenant: String,
    pub username: String,
    /// `active` or `disabled`.
    pub status: String,
    pub roles: Vec<String>,
    pub mfa_enabled: bool,
    pub created_at: String,
}

impl From<pb::User> for User {
    fn from(u: pb::User) -> Self {
        Self {
            id: u.id,
            tenant: u.tenant,
            username: u.username,
            status: u.status,
            roles: u.roles,
            mfa_enabled: u.mfa_enabled,
            created_at: u.created_at,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct ApiKey {
    pub id: String,
    /// The public part of the key, for recognising it.
    pub prefix: String,
    pub name: String,
    pub scopes: Vec<String>,
    pub expires_at: Option<String>,
    pub last_used_at: Option<String>,
    pub created_at: String,
}

impl From<pb::ApiKey> for ApiKey {
    fn from(k: pb::ApiKey) -> Self {
        Self {
            id: k.id,
            prefix: k.prefix,
            name: k.name,
            scopes: k.scopes,
            expires_at: optional(k.expires_at),
            last_used_at: optional(k.last_used_at),
            created_at: k.created_at,
        }
    }
}

/// A new API key with the key itself, shown this once.
#[derive(Serialize, ToSchema)]
pub struct NewApiKey {
    #[serde(flatten)]
    pub api_key: ApiKey,
    /// Send it as `X-API-Key`; it is never shown again.
    pub key: String,
}

/// A page of a list; `next_cursor` is absent on the last page.
#[derive(Serialize, ToSchema)]
pub struct TenantPage {
    pub tenants: Vec<Tenant>,
    pub next_cursor: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct UserPage {
    pub users: Vec<User>,
    pub next_cursor: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct ApiKeyPage {
    pub api_keys: Vec<ApiKey>,
    pub next_cursor: Option<String>,
}

/// The caller as the platform sees them.
#[derive(Serialize, ToSchema)]
pub struct Me {
    pub tenant: String,
    /// The user's id (or the external issuer's subject).
    pub subject: String,
    pub username: Option<String>,
    pub roles: Vec<String>,
    pub capabilities: Vec<String>,
    /// On a service token: the platform service acting for the subject.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
}

impl From<Principal> for Me {
    fn from(p: Principal) -> Self {
        Self {
            tenant: p.tenant.as_str().to_owned(),
            subject: p.subject,
            username: p.username,
            roles: p.roles.iter().map(|r| r.as_str().to_owned()).collect(),
            capabilities: p
                .capabilities
                .iter()
                .map(|c| c.as_str().to_owned())
                .collect(),
            actor: p.actor,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct Status {
    pub service: String,
    /// `ready` when every service below is serving, else `degraded`.
    pub state: String,
    pub version: String,
    pub tenant: String,
    /// When the services were asked (RFC 3339).
    pub checked_at: String,
    /// Each service the gateway calls, as it answered just now.
    pub services: std::collections::BTreeMap<String, ServiceStatus>,
}

#[derive(Serialize, ToSchema, Debug, Clone)]
pub struct ServiceStatus {
    /// `serving`, `not_serving` or `unreachable`.
    pub state: String,
    /// How long the health check took, in milliseconds.
    pub latency_ms: f64,
}

/// RFC 6749 §5.1.
#[derive(Serialize, ToSchema)]
pub struct Token {
    pub access_token: String,
    /// `Bearer`.
    pub token_type: String,
    /// Seconds until the access token expires.
    pub expires_in: u64,
    /// Given with a password login and each refresh; spent when used.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    /// The token's capabilities, space-separated.
    pub scope: String,
}

impl From<pb::TokenResponse> for Token {
    fn from(t: pb::TokenResponse) -> Self {
        Self {
            access_token: t.access_token,
            token_type: t.token_type,
            expires_in: t.expires_in,
            refresh_token: optional(t.refresh_token),
            scope: t.scope,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct SigningKey {
    /// The new key's id, as it appears in the JWKS and in token headers.
    pub kid: String,
}

#[derive(Serialize, ToSchema)]
pub struct MfaEnrollment {
    /// Base32 TOTP secret, shown this once.
    pub secret: String,
    pub otpauth_uri: String,
    /// Ten one-time codes for a lost authenticator (each works once in place of a
    /// TOTP code), shown this once.
    pub recovery_codes: Vec<String>,
}

#[derive(Serialize, ToSchema)]
pub struct MfaState {
    pub mfa_enabled: bool,
}
