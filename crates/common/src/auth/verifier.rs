//! The one token verifier of the platform (DESIGN §1.4): the gateway checks every
//! bearer token with it, and every service checks the token on each internal call.
//!
//! It trusts a fixed list of issuers (the built-in one and any external OIDC issuer),
//! fetches each one's keys from its JWKS (found by OpenID discovery), caches them, and
//! fetches again when a token names a key it has not seen (rotation), at most once per
//! [`REFRESH_COOLDOWN`] so a flood of made-up `kid`s cannot hammer the issuer. Only
//! asymmetric algorithms are accepted, and each only with a key of its own family:
//! `alg: none`, HMAC and algorithm confusion are refused. Revoked token ids are looked
//! up in the shared cache so a revocation takes effect everywhere at once.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::Value;
use tokio::sync::{Mutex, RwLock};

use super::principal::{Principal, grants};
use crate::error::{ApiError, ErrorCode};
use crate::infra::cache::Cache;
use crate::tenant::TenantId;

/// The shortest time between two JWKS fetches for unknown key ids.
pub const REFRESH_COOLDOWN: Duration = Duration::from_secs(10);
/// Clock skew tolerated on `exp` and `nbf`.
pub const LEEWAY_SECS: u64 = 5;

/// Why a token was refused. The message is safe to show; it never echoes the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct AuthError(pub String);

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        ApiError::new(ErrorCode::Unauthorized, e.0)
    }
}

/// How an issuer's claims become a principal.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct ClaimMapping {
    /// The claim naming the tenant (a dotted path into the claims).
    pub tenant_claim: String,
    /// Used when the token has no tenant claim (an issuer that serves one tenant).
    pub default_tenant: Option<String>,
    /// The claim holding role names (`roles`, or Keycloak's `realm_access.roles`).
    pub roles_claim: String,
    /// The claim holding capability names, if the issuer sets them.
    pub capabilities_claim: String,
    /// The claim with a human-readable name.
    pub username_claim: String,
    /// Whether roles bring their capabilities (external issuers), or the token's
    /// capabilities are exact (the built-in issuer).
    pub expand_roles: bool,
    /// The tenants (slugs or ids) this issuer may place people in; empty: any. An
    /// issuer a tenant brings should name that tenant alone.
    pub tenants: Vec<String>,
    /// The capabilities this issuer may grant beside roles (`moderation:bypass`,
    /// `training.admin`, `billing.admin`); none unless named. Never `platform:admin`.
    pub grantable: Vec<String>,
}

impl Default for ClaimMapping {
    fn default() -> Self {
        Self {
            tenant_claim: "tenant".into(),
            default_tenant: None,
            roles_claim: "roles".into(),
            capabilities_claim: "capabilities".into(),
            username_claim: "preferred_username".into(),
            expand_roles: true,
            tenants: Vec::new(),
            grantable: Vec::new(),
        }
    }
}

/// One issuer the platform trusts.
#[derive(Debug, Clone, Deserialize)]
pub struct TrustedIssuer {
    /// The exact `iss` of its tokens.
    pub issuer: String,
    /// The `aud` its tokens must name (one of these).
    pub audience: Audience,
    /// Where its keys are; unset means OpenID discovery from `issuer`.
    #[serde(default)]
    pub jwks_uri: Option<String>,
    #[serde(default)]
    pub mapping: ClaimMapping,
}

/// The audiences a verifier accepts: a token must name at least one. Configured as one
/// string or a list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Audience(Vec<String>);

impl Audience {
    /// This one, and `other` too.
    pub fn or(mut self, other: impl Into<String>) -> Self {
        self.0.push(other.into());
        self
    }

    pub fn names(&self) -> &[String] {
        &self.0
    }
}

impl From<&str> for Audience {
    fn from(value: &str) -> Self {
        Self(vec![value.to_owned()])
    }
}

impl From<String> for Audience {
    fn from(value: String) -> Self {
        Self(vec![value])
    }
}

impl std::fmt::Display for Audience {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0.join(" "))
    }
}

impl<'de> Deserialize<'de> for Audience {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Given {
            One(String),
            Many(Vec<String>),
        }
        let names = match Given::deserialize(d)? {
            Given::One(one) => vec![one],
            Given::Many(many) => many,
        };
        if names.is_empty() || names.iter().any(String::is_empty) {
            return Err(serde::de::Error::custom(
                "audience names at least one audience",
            ));
        }
        Ok(Self(names))
    }
}

struct KeyEntry {
    key: DecodingKey,
    algorithms: Vec<Algorithm>,
}

struct IssuerState {
    config: TrustedIssuer,
    keys: RwLock<HashMap<String, KeyEntry>>,
    /// Held while fetching; also remembers when the last fetch happened.
    fetched: Mutex<Option<Instant>>,
}

pub struct Verifier {
    issuers: Vec<IssuerState>,
    http: reqwest::Client,
    revocations: Option<Cache>,
    cooldown: Duration,
    verified: VerifiedTokens,
}

/// Tokens whose signature and claims were already checked, by their SHA-256, with the
/// principal they stand for, until they expire. A token is presented again and again
/// (each request of a client, each internal call on its behalf), and checking its
/// signature again finds the same answer: only the revocation lookups, which can
/// change, run each time. Emptied whenever an issuer's keys are fetched again, so a
/// key withdrawn from a JWKS stops verifying at once.
#[derive(Default)]
struct VerifiedTokens(std::sync::Mutex<HashMap<[u8; 32], Principal>>);

/// Enough for every token live at once on a busy replica; past it the map starts over.
const VERIFIED_TOKENS: usize = 50_000;

impl VerifiedTokens {
    fn digest(token: &str) -> [u8; 32] {
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes());
        let mut key = [0; 32];
        key.copy_from_slice(digest.as_ref());
        key
    }

    /// The principal of a token verified before and not expired since.
    fn get(&self, key: &[u8; 32]) -> Option<Principal> {
        let now = crate::clock::unix_now();
        let map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.get(key)
            .filter(|p| {
                p.expires_at
                    .is_some_and(|exp| now <= exp + LEEWAY_SECS as i64)
            })
            .cloned()
    }

    fn insert(&self, key: [u8; 32], principal: &Principal) {
        if principal.expires_at.is_none() {
            return;
        }
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= VERIFIED_TOKENS {
            map.clear();
        }
        map.insert(key, principal.clone());
    }

    fn clear(&self) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }
}

/// The cache key that marks token `jti` as revoked (until the token would expire).
pub fn revocation_key(jti: &str) -> String {
    format!("auth:revoked:{jti}")
}

/// The cache key that, while present, revokes every token obtained with the API key
/// `id` (set when the key is revoked, for as long as such a token can live).
pub fn api_key_revocation_key(id: &str) -> String {
    format!("auth:revoked:key:{id}")
}

/// When a token was issued, in unix milliseconds: exact from a UUIDv7 `jti` (the
/// built-in issuer's), else the start of its `iat` second, so a cutoff in that second
/// voids it (the safe side).
fn issued_at_ms(principal: &Principal) -> i64 {
    let exact = principal
        .token_id
        .as_deref()
        .and_then(|jti| uuid::Uuid::parse_str(jti).ok())
        .filter(|id| id.get_version_num() == 7)
        .and_then(|id| id.get_timestamp())
        .map(|ts| {
            let (secs, nanos) = ts.to_unix();
            secs as i64 * 1000 + i64::from(nanos / 1_000_000)
        });
    exact.unwrap_or_else(|| principal.issued_at.map_or(i64::MIN, |s| s * 1000))
}

/// The cache key holding the unix time (ms) before which every token of `tenant` is void
/// (set when a tenant is suspended or deleted).
pub fn tenant_cutoff_key(tenant: &str) -> String {
    format!("auth:cutoff:tenant:{tenant}")
}

/// The cache key holding the unix time (ms) before which every token of the user `subject`
/// of `tenant` is void (set when the user is disabled, deleted or changes roles).
pub fn subject_cutoff_key(tenant: &str, subject: &str) -> String {
    format!("auth:cutoff:subject:{}:{tenant}:{subject}", tenant.len())
}

impl Verifier {
    pub fn new(issuers: Vec<TrustedIssuer>, revocations: Option<Cache>) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .expect("an HTTP client with a timeout builds");
        Self {
            issuers: issuers
                .into_iter()
                .map(|config| IssuerState {
                    config,
                    keys: RwLock::default(),
                    fetched: Mutex::new(None),
                })
                .collect(),
            http,
            revocations,
            cooldown: REFRESH_COOLDOWN,
            verified: VerifiedTokens::default(),
        }
    }

    /// Changes the shortest time between JWKS fetches (tests shorten it).
    pub fn with_refresh_cooldown(mut self, cooldown: Duration) -> Self {
        self.cooldown = cooldown;
        self
    }

    /// Verifies `token` and returns the principal it stands for.
    pub async fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        let key = VerifiedTokens::digest(token);
        let principal = match self.verified.get(&key) {
            Some(principal) => principal,
            None => {
                let principal = self.verify_signed(token).await?;
                self.verified.insert(key, &principal);
                principal
            }
        };
        if let Some(cache) = &self.revocations {
            check_revocations(cache, &principal).await?;
        }
        Ok(principal)
    }

    /// The signature, the issuer, the audience and the times: what a token says of
    /// itself, which does not change.
    async fn verify_signed(&self, token: &str) -> Result<Principal, AuthError> {
        let refused = |why: &str| AuthError(why.to_owned());
        let header = jsonwebtoken::decode_header(token).map_err(|_| refused("malformed token"))?;
        if !matches!(
            header.alg,
            Algorithm::EdDSA
                | Algorithm::RS256
                | Algorithm::RS384
                | Algorithm::RS512
                | Algorithm::PS256
                | Algorithm::ES256
        ) {
            return Err(refused("token algorithm not accepted"));
        }
        let kid = header
            .kid
            .ok_or_else(|| refused("token names no signing key"))?;
        // The issuer decides which keys may verify; read it unverified only to pick them.
        let unverified: Value = jsonwebtoken::dangerous::insecure_decode_claims(token)
            .map_err(|_| refused("malformed token"))?;
        let iss = unverified
            .get("iss")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let issuer = self
            .issuers
            .iter()
            .find(|i| i.config.issuer == iss)
            .ok_or_else(|| refused("token from an issuer that is not trusted"))?;

        let claims = self
            .check_signature(issuer, &kid, header.alg, token)
            .await?;
        principal(&issuer.config, &claims)
    }

    async fn check_signature(
        &self,
        issuer: &IssuerState,
        kid: &str,
        alg: Algorithm,
        token: &str,
    ) -> Result<Value, AuthError> {
        if !issuer.keys.read().await.contains_key(kid) {
            self.refresh(issuer).await;
        }
        let keys = issuer.keys.read().await;
        let entry = keys
            .get(kid)
            .ok_or_else(|| AuthError("token signed by an unknown key".into()))?;
        if !entry.algorithms.contains(&alg) {
            return Err(AuthError("token algorithm does not match its key".into()));
        }
        let mut validation = Validation::new(alg);
        validation.set_issuer(&[&issuer.config.issuer]);
        validation.set_audience(issuer.config.audience.names());
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.validate_nbf = true;
        validation.leeway = LEEWAY_SECS;
        jsonwebtoken::decode::<Value>(token, &entry.key, &validation)
            .map(|data| data.claims)
            .map_err(|e| {
                use jsonwebtoken::errors::ErrorKind;
                AuthError(
                    match e.kind() {
                        ErrorKind::ExpiredSignature => "token expired",
                        ErrorKind::ImmatureSignature => "token not valid yet",
                        ErrorKind::InvalidAudience => "token is for another audience",
                        ErrorKind::InvalidIssuer => "token from an issuer that is not trusted",
                        ErrorKind::InvalidSignature => "token signature is invalid",
                        ErrorKind::MissingRequiredClaim(_) => "token lacks a required claim",
                        _ => "token is invalid",
                    }
                    .into(),
                )
            })
    }

    /// Fetches the issuer's keys again unless that happened within the cooldown.
    async fn refresh(&self, issuer: &IssuerState) {
        let mut fetched = issuer.fetched.lock().await;
        if fetched.is_some_and(|at| at.elapsed() < self.cooldown) {
            return;
        }
        *fetched = Some(Instant::now());
        match self.fetch_keys(&issuer.config).await {
            Ok(keys) => {
                *issuer.keys.write().await = keys;
                self.verified.clear();
            }
            Err(e) => {
                tracing::warn!(issuer = %issuer.config.issuer, error = %e, "cannot fetch signing keys")
            }
        }
    }

    async fn fetch_keys(
        &self,
        issuer: &TrustedIssuer,
    ) -> anyhow::Result<HashMap<String, KeyEntry>> {
        let jwks_uri = match &issuer.jwks_uri {
            Some(uri) => uri.clone(),
            None => {
                let discovery = format!(
                    "{}/.well-known/openid-configuration",
                    issuer.issuer.trim_end_matches('/')
                );
                let doc: Value = self
                    .http
                    .get(&discovery)
                    .send()
                    .await?
                    .error_for_status()?
                    .json()
                    .await?;
                doc.get("jwks_uri")
                    .and_then(Value::as_str)
                    .ok_or_else(|| anyhow::anyhow!("{discovery} names no jwks_uri"))?
                    .to_owned()
            }
        };
        let set: JwkSet = self
            .http
            .get(&jwks_uri)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        Ok(usable_keys(&set))
    }
}

/// The signature keys of a JWKS, each with the algorithms its family allows. Keys for
/// encryption, symmetric keys and keys without an id are left out.
fn usable_keys(set: &JwkSet) -> HashMap<String, KeyEntry> {
    let mut keys = HashMap::new();
    for jwk in &set.keys {
        let Some(kid) = jwk.common.key_id.clone() else {
            continue;
        };
        if matches!(
            jwk.common.public_key_use,
            Some(PublicKeyUse::Encryption) | Some(PublicKeyUse::Other(_))
        ) {
            continue;
        }
        let mut algorithms = match &jwk.algorithm {
            AlgorithmParameters::OctetKeyPair(_) => vec![Algorithm::EdDSA],
            AlgorithmParameters::RSA(_) => vec![
                Algorithm::RS256,
                Algorithm::RS384,
                Algorithm::RS512,
                Algorithm::PS256,
            ],
            AlgorithmParameters::EllipticCurve(_) => vec![Algorithm::ES256],
            // Never a shared secret: anyone holding it could mint tokens.
            _ => continue,
        };
        // A key that names its algorithm is good for that one only.
        if let Some(named) = jwk.common.key_algorithm {
            let named = match named {
                KeyAlgorithm::EdDSA => Some(Algorithm::EdDSA),
                KeyAlgorithm::RS256 => Some(Algorithm::RS256),
                KeyAlgorithm::RS384 => Some(Algorithm::RS384),
                KeyAlgorithm::RS512 => Some(Algorithm::RS512),
                KeyAlgorithm::PS256 => Some(Algorithm::PS256),
                KeyAlgorithm::ES256 => Some(Algorithm::ES256),
                _ => None,
            };
            algorithms.retain(|a| Some(*a) == named);
        }
        if algorithms.is_empty() {
            continue;
        }
        if let Ok(key) = DecodingKey::from_jwk(jwk) {
            keys.insert(kid, KeyEntry { key, algorithms });
        }
    }
    keys
}

/// Follows a dotted path (`realm_access.roles`) into the claims.
fn lookup<'a>(claims: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.')
        .try_fold(claims, |node, part| node.get(part))
}

fn strings(value: Option<&Value>) -> Vec<String> {
    match value {
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        Some(Value::String(s)) => s
            .split([' ', ','])
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect(),
        _ => Vec::new(),
    }
}

/// Refuses a token revoked by id, or issued before a cutoff of its tenant or subject,
/// in one round trip to the cache. Fails closed: if revocations cannot be read, no
/// token is trusted.
async fn check_revocations(cache: &Cache, principal: &Principal) -> Result<(), AuthError> {
    let refused = |why: &str| AuthError(why.to_owned());
    let tenant = principal.tenant.as_str();
    let mut keys = vec![
        tenant_cutoff_key(tenant),
        subject_cutoff_key(tenant, &principal.subject),
    ];
    if let Some(jti) = &principal.token_id {
        keys.push(revocation_key(jti));
    }
    if let Some(key) = &principal.api_key {
        keys.push(api_key_revocation_key(key));
    }
    let values = cache
        .get_many(&keys)
        .await
        .map_err(|_| refused("token revocation cannot be checked right now"))?;
    // Past the two cutoffs: the token's own revocation and its API key's.
    if values.iter().skip(2).any(Option::is_some) {
        return Err(refused("token revoked"));
    }
    let issued = issued_at_ms(principal);
    for cutoff in values.iter().take(2).flatten() {
        let cutoff: i64 = std::str::from_utf8(cutoff)
            .ok()
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| refused("token revocation cannot be checked right now"))?;
        if issued < cutoff {
            return Err(refused("token revoked"));
        }
    }
    Ok(())
}

fn principal(issuer: &TrustedIssuer, claims: &Value) -> Result<Principal, AuthError> {
    let map = &issuer.mapping;
    let tenant = lookup(claims, &map.tenant_claim)
        .and_then(Value::as_str)
        .map(str::to_owned)
        .or_else(|| map.default_tenant.clone())
        .ok_or_else(|| AuthError("token names no tenant".into()))?;
    let tenant =
        TenantId::parse(tenant).map_err(|_| AuthError("token names an invalid tenant".into()))?;
    let subject = lookup(claims, "sub")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    if subject.is_empty() {
        return Err(AuthError("token names no subject".into()));
    }
    let (roles, capabilities) = grants(
        &strings(lookup(claims, &map.roles_claim)),
        &strings(lookup(claims, &map.capabilities_claim)),
        map.expand_roles,
    );
    Ok(Principal {
        tenant,
        subject,
        username: lookup(claims, &map.username_claim)
            .or_else(|| lookup(claims, "username"))
            .and_then(Value::as_str)
            .map(str::to_owned),
        roles,
        capabilities,
        issuer: issuer.issuer.clone(),
        token_id: lookup(claims, "jti")
            .and_then(Value::as_str)
            .map(str::to_owned),
        expires_at: lookup(claims, "exp").and_then(Value::as_i64),
        issued_at: lookup(claims, "iat").and_then(Value::as_i64),
        actor: lookup(claims, "act.sub")
            .and_then(Value::as_str)
            .map(str::to_owned),
        auth_methods: strings(lookup(claims, "amr")),
        api_key: lookup(claims, "key")
            .and_then(Value::as_str)
            .map(str::to_owned),
        audiences: strings(lookup(claims, "aud")),
    })
}

/// The mapping for the built-in issuer's tokens (`auth::Claims`): exact capabilities.
pub fn builtin_mapping() -> ClaimMapping {
    ClaimMapping {
        username_claim: "username".into(),
        expand_roles: false,
        ..ClaimMapping::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal(expires_at: Option<i64>) -> Principal {
        Principal {
            tenant: TenantId::parse("acme").unwrap(),
            subject: "u1".into(),
            username: None,
            roles: Default::default(),
            capabilities: Default::default(),
            issuer: "https://issuer.test".into(),
            token_id: Some("t1".into()),
            expires_at,
            issued_at: None,
            actor: None,
            auth_methods: Vec::new(),
            api_key: None,
            audiences: vec!["somagent".into()],
        }
    }

    #[test]
    fn a_verified_token_is_remembered_only_until_it_expires() {
        let verified = VerifiedTokens::default();
        let now = crate::clock::unix_now();
        let live = VerifiedTokens::digest("live.token.sig");
        let expired = VerifiedTokens::digest("expired.token.sig");
        verified.insert(live, &principal(Some(now + 60)));
        verified.insert(expired, &principal(Some(now - LEEWAY_SECS as i64 - 1)));
        assert!(verified.get(&live).is_some());
        assert!(
            verified.get(&expired).is_none(),
            "an expired token is verified again, and refused"
        );
        assert!(
            verified
                .get(&VerifiedTokens::digest("live.token.sig2"))
                .is_none(),
            "another token, however alike, is not the one verified"
        );
        verified.insert(VerifiedTokens::digest("no.exp.sig"), &principal(None));
        assert!(
            verified
                .get(&VerifiedTokens::digest("no.exp.sig"))
                .is_none()
        );
        verified.clear();
        assert!(verified.get(&live).is_none(), "new keys: verified again");
    }
}
