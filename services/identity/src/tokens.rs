//! The built-in issuer's token endpoint logic (RFC 6749): grants in, signed access
//! tokens out. Failures say no more than "invalid credentials", so a caller cannot
//! learn which tenants or users exist.

use std::sync::Arc;

use somagent_common::auth::{Claims, TOKEN_AUDIENCE};
use somagent_common::error::{ApiError, ErrorCode};

use crate::domain::password;
use crate::domain::totp::TotpSecret;
use crate::keyring::Keyring;
use crate::store::IdentityStore;

/// Access tokens live this long; clients refresh or log in again after.
pub const ACCESS_TOKEN_TTL_SECS: i64 = 15 * 60;

/// A grant as the token endpoint receives it (form or JSON).
#[derive(Debug, Default, Clone)]
pub struct Grant {
    pub grant_type: String,
    pub tenant: String,
    pub username: String,
    pub password: String,
    pub totp: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedToken {
    pub access_token: String,
    pub expires_in: i64,
    pub scope: String,
}

#[derive(Clone)]
pub struct TokenService {
    store: IdentityStore,
    keyring: Arc<Keyring>,
    issuer: String,
}

fn invalid_credentials() -> ApiError {
    ApiError::new(
        ErrorCode::Unauthorized,
        "invalid tenant, username, password or one-time code",
    )
}

impl TokenService {
    pub fn new(store: IdentityStore, keyring: Arc<Keyring>, issuer: String) -> Self {
        Self {
            store,
            keyring,
            issuer,
        }
    }

    pub async fn issue(&self, grant: Grant) -> Result<IssuedToken, ApiError> {
        match grant.grant_type.as_str() {
            "password" => self.password_grant(grant).await,
            "" => Err(ApiError::validation("grant_type", "is required")),
            other => Err(ApiError::new(
                ErrorCode::BadRequest,
                format!(
                    "unsupported grant_type `{}`",
                    other.chars().take(40).collect::<String>()
                ),
            )
            .with_details(serde_json::json!({ "supported": ["password"] }))),
        }
    }

    async fn password_grant(&self, grant: Grant) -> Result<IssuedToken, ApiError> {
        for (field, value) in [
            ("tenant", &grant.tenant),
            ("username", &grant.username),
            ("password", &grant.password),
        ] {
            if value.is_empty() {
                return Err(ApiError::validation(field, "is required"));
            }
        }
        let tenant = self
            .store
            .tenant_by_slug(&grant.tenant)
            .await
            .map_err(ApiError::internal)?
            .filter(|t| t.status == "active");
        let user = match &tenant {
            Some(t) => self
                .store
                .user_by_username(&t.id, &grant.username)
                .await
                .map_err(ApiError::internal)?,
            None => None,
        };
        // Hash even when there is no such user, so timing does not tell.
        let stored = user.as_ref().map(|u| u.password_hash.clone());
        let candidate = grant.password.clone();
        let matches = tokio::task::spawn_blocking(move || match stored {
            Some(hash) => password::verify(&candidate, &hash),
            None => {
                password::verify(&candidate, &DECOY_HASH);
                false
            }
        })
        .await
        .map_err(ApiError::internal)?;
        let (Some(tenant), Some(user)) = (tenant, user) else {
            return Err(invalid_credentials());
        };
        if !matches || user.status != "active" {
            return Err(invalid_credentials());
        }
        if let Some(mfa) = self
            .store
            .mfa_state(&user.id)
            .await
            .map_err(ApiError::internal)?
        {
            let secret = TotpSecret::from_base32(&mfa.secret).ok_or_else(|| {
                ApiError::internal(anyhow::anyhow!("stored TOTP secret unreadable"))
            })?;
            let now = crate::bootstrap::now() as u64;
            let step = secret
                .verify(&grant.totp, now, mfa.last_step.map(|s| s as u64))
                .ok_or_else(invalid_credentials)?;
            // Remember the step; a concurrent login with the same code loses here.
            if !self
                .store
                .use_totp_step(&user.id, step as i64)
                .await
                .map_err(ApiError::internal)?
            {
                return Err(invalid_credentials());
            }
        }
        let now = crate::bootstrap::now();
        let claims = Claims {
            iss: self.issuer.clone(),
            sub: user.id.clone(),
            aud: TOKEN_AUDIENCE.into(),
            exp: now + ACCESS_TOKEN_TTL_SECS,
            iat: now,
            nbf: Some(now),
            jti: uuid::Uuid::now_v7().to_string(),
            tenant: tenant.id.clone(),
            username: Some(user.username.clone()),
            roles: user.roles.iter().map(|r| r.as_str().to_owned()).collect(),
            capabilities: user
                .capabilities
                .iter()
                .map(|c| c.as_str().to_owned())
                .collect(),
            act: None,
        };
        let access_token = self
            .keyring
            .current()
            .sign(&claims)
            .map_err(ApiError::internal)?;
        tracing::info!(tenant = %tenant.id, subject = %user.id, "access token issued");
        Ok(IssuedToken {
            access_token,
            expires_in: ACCESS_TOKEN_TTL_SECS,
            scope: claims.capabilities.join(" "),
        })
    }
}

/// A real argon2id hash of a random password, checked when the user does not exist so
/// that answer takes as long as a wrong password does.
static DECOY_HASH: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    let random = data_encoding::BASE32_NOPAD.encode(&crate::domain::random_bytes::<20>());
    password::hash(&password::Password::parse(random).expect("32 characters pass the policy"))
});
