//! The built-in issuer's token endpoint logic (RFC 6749): grants in, signed access
//! tokens out. Failures say no more than "invalid credentials", so a caller cannot
//! learn which tenants or users exist.

use std::sync::Arc;

use somagent_common::auth::{Claims, TOKEN_AUDIENCE};
use somagent_common::clock::unix_now;
use somagent_common::error::{ApiError, ErrorCode};
use somagent_common::infra::cache::{AttemptLimit, Cache};
use somagent_common::tenant::TenantId;

use crate::domain::totp::TotpSecret;
use crate::domain::{api_key, password, refresh_token};
use crate::keyring::Keyring;
use crate::store::{IdentityStore, RefreshRecord, RefreshUse};

/// Access tokens live this long; clients refresh or log in again after.
pub const ACCESS_TOKEN_TTL_SECS: i64 = 15 * 60;

/// Service tokens live this long; a service asks again for longer work.
pub const SERVICE_TOKEN_TTL_SECS: i64 = 5 * 60;

/// A grant as the token endpoint receives it (form or JSON).
#[derive(Debug, Default, Clone)]
pub struct Grant {
    pub grant_type: String,
    /// The tenant's slug as the person types it: a name to look up, not yet a tenant.
    pub tenant: String,
    pub username: String,
    pub password: String,
    pub totp: String,
    /// For `client_credentials`: an API key.
    pub client_secret: String,
    /// For `refresh_token`.
    pub refresh_token: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedToken {
    pub access_token: String,
    pub expires_in: i64,
    pub scope: String,
    /// Given with a password login and with each refresh, which spends the old one.
    pub refresh_token: Option<String>,
}

/// Failed password logins allowed per account (tenant + username) per window.
pub const LOGIN_ATTEMPTS_PER_ACCOUNT: i64 = 5;
/// The window failed logins are counted in.
pub const LOGIN_WINDOW: std::time::Duration = std::time::Duration::from_secs(300);

/// A service acting for a user, and the one service its token is for.
#[derive(Debug, Clone, Copy)]
pub struct Acting<'a> {
    pub service: &'a str,
    pub callee: &'a str,
}

/// What a token stands on: how its subject proved who they are, or which service acts
/// for them.
#[derive(Debug, Clone, Copy)]
enum Basis<'a> {
    /// A password login (`amr` as proved: `pwd`, with `otp`/`mfa` once MFA is on).
    Login(&'a [&'a str]),
    /// The API key of this id.
    ApiKey(&'a str),
    /// A service acting for the subject, for one callee.
    Service(Acting<'a>),
    /// An external issuer's token, exchanged.
    Federated,
}

#[derive(Clone)]
pub struct TokenService {
    store: IdentityStore,
    events: somagent_common::infra::events::EventBus,
    keyring: Arc<Keyring>,
    issuer: String,
    login_attempts: AttemptLimit,
}

/// The counter of one account's login attempts.
fn account_key(tenant: &str, username: &str) -> String {
    // Lengths first, so `a:b` + `c` and `a` + `b:c` cannot share a counter.
    format!(
        "ratelimit:login:account:{}:{tenant}:{}:{username}",
        tenant.len(),
        username.len()
    )
}

fn invalid_credentials() -> ApiError {
    ApiError::new(
        ErrorCode::Unauthorized,
        "invalid tenant, username, password or one-time code",
    )
}

/// A service token's user (or their tenant) is gone, disabled or was never there: one
/// answer for all, so a service cannot probe who exists.
pub(crate) fn cannot_act_for() -> ApiError {
    ApiError::new(ErrorCode::Forbidden, "the user cannot be acted for")
}

impl TokenService {
    pub fn new(
        store: IdentityStore,
        events: somagent_common::infra::events::EventBus,
        keyring: Arc<Keyring>,
        issuer: String,
        cache: Cache,
    ) -> Self {
        Self {
            store,
            events,
            keyring,
            issuer,
            login_attempts: AttemptLimit::new(cache, LOGIN_ATTEMPTS_PER_ACCOUNT, LOGIN_WINDOW),
        }
    }

    pub async fn issue(&self, grant: Grant) -> Result<IssuedToken, ApiError> {
        match grant.grant_type.as_str() {
            "password" => self.password_grant(grant).await,
            "client_credentials" => self.api_key_grant(&grant.client_secret).await,
            "refresh_token" => self.refresh_grant(&grant.refresh_token).await,
            "" => Err(ApiError::validation("grant_type", "is required")),
            other => Err(ApiError::new(
                ErrorCode::BadRequest,
                format!(
                    "unsupported grant_type `{}`",
                    other.chars().take(40).collect::<String>()
                ),
            )
            .with_details(serde_json::json!({ "supported": ["password", "client_credentials", "refresh_token"] }))),
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
        // Counted before the password is checked, where the password is checked: a
        // caller that reaches identity directly is limited too.
        let attempt = self
            .login_attempts
            .admit(account_key(&grant.tenant, &grant.username))
            .await?;
        let issued = self.password_login(grant).await;
        attempt.settle(&issued).await;
        issued
    }

    async fn password_login(&self, grant: Grant) -> Result<IssuedToken, ApiError> {
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
        let Some(tenant) = tenant else {
            return Err(invalid_credentials());
        };
        let checked = self.check_login(user, matches, &grant.totp).await;
        let user_id = checked.as_ref().ok().map(|(u, _)| u.id.clone());
        crate::audit::record_login(
            &self.events,
            &tenant.id,
            user_id.as_deref(),
            &grant.username,
            "password",
            checked.is_ok(),
        )
        .await;
        let (user, amr) = checked?;
        let mut issued = self.sign(
            &tenant.id,
            &user,
            user.capabilities.clone(),
            unix_now() + ACCESS_TOKEN_TTL_SECS,
            Basis::Login(amr),
        )?;
        let family = uuid::Uuid::now_v7().to_string();
        issued.refresh_token = Some(self.new_refresh(&tenant.id, &user.id, &family).await?);
        Ok(issued)
    }

    /// The second half of a password login, once the tenant is known: the password
    /// matched, the user is active, and a fresh one-time code if MFA is on.
    async fn check_login(
        &self,
        user: Option<crate::store::User>,
        password_matches: bool,
        totp: &str,
    ) -> Result<(crate::store::User, &'static [&'static str]), ApiError> {
        let user = user.ok_or_else(invalid_credentials)?;
        if !password_matches || user.status != "active" {
            return Err(invalid_credentials());
        }
        // A person of an external issuer proves who they are there, even if someone
        // gave their account a password here.
        if self
            .store
            .is_external_user(&user.id)
            .await
            .map_err(ApiError::internal)?
        {
            return Err(invalid_credentials());
        }
        if let Some(mfa) = self
            .store
            .mfa_state(&user.id)
            .await
            .map_err(ApiError::internal)?
        {
            if !second_factor(&self.store, &user.id, &mfa, totp).await? {
                return Err(invalid_credentials());
            }
            return Ok((user, &["pwd", "otp", "mfa"]));
        }
        Ok((user, &["pwd"]))
    }

    /// `refresh_token`: spends the token and gives a new access token and a new refresh
    /// token of the same login. A token presented twice revokes that whole login.
    async fn refresh_grant(&self, presented: &str) -> Result<IssuedToken, ApiError> {
        let invalid = || ApiError::new(ErrorCode::Unauthorized, "invalid refresh token");
        if presented.is_empty() {
            return Err(ApiError::validation("refresh_token", "is required"));
        }
        if !refresh_token::looks_like(presented) {
            return Err(invalid());
        }
        let now = unix_now();
        let record = match self
            .store
            .use_refresh(&refresh_token::hash(presented), now)
            .await
            .map_err(ApiError::internal)?
        {
            RefreshUse::Fresh(record) => record,
            RefreshUse::Reused => {
                tracing::warn!("a refresh token was presented twice; its login is revoked");
                return Err(ApiError::new(
                    ErrorCode::Unauthorized,
                    "refresh token already used; every token of this login is revoked",
                ));
            }
            RefreshUse::Invalid => return Err(invalid()),
        };
        if !self.tenant_is_active(&record.tenant_id).await? {
            return Err(invalid());
        }
        let user = self
            .store
            .user_by_id(&record.tenant_id, &record.user_id)
            .await
            .map_err(ApiError::internal)?
            .filter(|u| u.status == "active")
            .ok_or_else(invalid)?;
        // The user's current capabilities: a role change applies at the next refresh.
        // A refresh continues the login it belongs to: a password login, with MFA if the
        // user has it.
        let amr: &[&str] = if self
            .store
            .mfa_state(&user.id)
            .await
            .map_err(ApiError::internal)?
            .is_some()
        {
            &["pwd", "otp", "mfa"]
        } else {
            &["pwd"]
        };
        let mut issued = self.sign(
            &record.tenant_id,
            &user,
            user.capabilities.clone(),
            now + ACCESS_TOKEN_TTL_SECS,
            Basis::Login(amr),
        )?;
        issued.refresh_token = Some(
            self.new_refresh(&record.tenant_id, &user.id, &record.family_id)
                .await?,
        );
        Ok(issued)
    }

    /// Revokes the login a refresh token belongs to (RFC 7009); unknown tokens are fine.
    pub async fn revoke_refresh(&self, presented: &str) -> Result<(), ApiError> {
        if !refresh_token::looks_like(presented) {
            return Ok(());
        }
        let hash = refresh_token::hash(presented);
        if let Some(family) = self
            .store
            .refresh_family_of(&hash)
            .await
            .map_err(ApiError::internal)?
        {
            self.store
                .revoke_refresh_family(&family, unix_now())
                .await
                .map_err(ApiError::internal)?;
        }
        Ok(())
    }

    async fn new_refresh(
        &self,
        tenant: &TenantId,
        user_id: &str,
        family: &str,
    ) -> Result<String, ApiError> {
        let (token, hash) = refresh_token::generate();
        let now = unix_now();
        let record = RefreshRecord {
            id: uuid::Uuid::now_v7().to_string(),
            family_id: family.to_owned(),
            tenant_id: tenant.clone(),
            user_id: user_id.to_owned(),
            hash,
            expires_at: now + refresh_token::TTL_SECS,
            created_at: now,
        };
        self.store
            .insert_refresh(&record)
            .await
            .map_err(ApiError::internal)?;
        Ok(token)
    }

    /// `client_credentials` with an API key as the secret: a token with the key's scopes,
    /// narrowed to what its owner may still do, ending no later than the key.
    async fn api_key_grant(&self, presented: &str) -> Result<IssuedToken, ApiError> {
        let invalid = || ApiError::new(ErrorCode::Unauthorized, "invalid client credentials");
        if presented.is_empty() {
            return Err(ApiError::validation("client_secret", "is required"));
        }
        let prefix = api_key::prefix_of(presented).ok_or_else(invalid)?;
        let key = self
            .store
            .api_key_by_prefix(prefix)
            .await
            .map_err(ApiError::internal)?
            .ok_or_else(invalid)?;
        let now = unix_now();
        if !api_key::matches(presented, &key.hash)
            || key.revoked_at.is_some()
            || key.expires_at.is_some_and(|at| at <= now)
        {
            return Err(invalid());
        }
        if !self.tenant_is_active(&key.tenant_id).await? {
            return Err(invalid());
        }
        let user = self
            .store
            .user_by_id(&key.tenant_id, &key.user_id)
            .await
            .map_err(ApiError::internal)?
            .filter(|u| u.status == "active")
            .ok_or_else(invalid)?;
        let capabilities = key
            .scopes
            .iter()
            .copied()
            .filter(|c| user.capabilities.contains(c))
            .collect();
        if let Err(e) = self.store.touch_api_key(&key.id, now).await {
            tracing::warn!(error = %e, "cannot record an api key's last use");
        }
        let expires = key.expires_at.map_or(now + ACCESS_TOKEN_TTL_SECS, |at| {
            at.min(now + ACCESS_TOKEN_TTL_SECS)
        });
        self.sign(
            &key.tenant_id,
            &user,
            capabilities,
            expires,
            Basis::ApiKey(&key.id),
        )
    }

    /// A short-lived token for the platform service `acting.service` calling
    /// `acting.callee` for user `subject` of `tenant` (DESIGN §1.4): the user's current
    /// capabilities, narrowed to `narrow`, with the service named in `act` and the
    /// callee in `aud`. The user and their tenant must still be active, so a workflow
    /// cannot act for someone who has since been disabled.
    pub async fn for_service(
        &self,
        acting: Acting<'_>,
        tenant: &TenantId,
        subject: &str,
        narrow: &[somagent_common::auth::Capability],
    ) -> Result<IssuedToken, ApiError> {
        if !self.tenant_is_active(tenant).await? {
            return Err(cannot_act_for());
        }
        let user = self
            .store
            .user_by_id(tenant, subject)
            .await
            .map_err(ApiError::internal)?
            .filter(|u| u.status == "active")
            .ok_or_else(cannot_act_for)?;
        let capabilities = user
            .capabilities
            .iter()
            .copied()
            .filter(|c| narrow.contains(c))
            .collect::<Vec<_>>();
        if capabilities.is_empty() {
            return Err(ApiError::new(
                ErrorCode::Forbidden,
                "the user holds none of the capabilities asked for",
            ));
        }
        let now = unix_now();
        self.sign(
            tenant,
            &user,
            capabilities,
            now + SERVICE_TOKEN_TTL_SECS,
            Basis::Service(acting),
        )
    }

    /// An access token for `user`, exchanged for an external issuer's token that expires
    /// at `external_exp`: the user's current grants, never outliving that token nor a
    /// password login's, marked as federated.
    pub(crate) fn for_external(
        &self,
        user: &crate::store::User,
        external_exp: i64,
    ) -> Result<IssuedToken, ApiError> {
        let exp = external_exp.min(unix_now() + ACCESS_TOKEN_TTL_SECS);
        self.sign(
            &user.tenant_id,
            user,
            user.capabilities.clone(),
            exp,
            Basis::Federated,
        )
    }

    async fn tenant_is_active(&self, tenant: &TenantId) -> Result<bool, ApiError> {
        Ok(self
            .store
            .tenant_by_id(tenant)
            .await
            .map_err(ApiError::internal)?
            .is_some_and(|t| t.status == "active"))
    }

    fn sign(
        &self,
        tenant: &TenantId,
        user: &crate::store::User,
        capabilities: Vec<somagent_common::auth::Capability>,
        exp: i64,
        basis: Basis<'_>,
    ) -> Result<IssuedToken, ApiError> {
        let acting = match basis {
            Basis::Service(acting) => Some(acting),
            _ => None,
        };
        let amr: &[&str] = match basis {
            Basis::Login(amr) => amr,
            Basis::ApiKey(_) => &[somagent_common::auth::AMR_API_KEY],
            Basis::Service(_) => &[],
            Basis::Federated => &[somagent_common::auth::AMR_FEDERATED],
        };
        let now = unix_now();
        let claims = Claims {
            iss: self.issuer.clone(),
            sub: user.id.clone(),
            aud: acting.map_or_else(
                || TOKEN_AUDIENCE.to_owned(),
                |a| somagent_common::auth::service_audience(a.callee),
            ),
            exp,
            iat: now,
            nbf: Some(now),
            jti: uuid::Uuid::now_v7().to_string(),
            tenant: tenant.as_str().to_owned(),
            username: Some(user.username.clone()),
            roles: user.roles.iter().map(|r| r.as_str().to_owned()).collect(),
            capabilities: capabilities.iter().map(|c| c.as_str().to_owned()).collect(),
            act: acting.map(|a| somagent_common::auth::Actor {
                sub: format!("service:{}", a.service),
            }),
            amr: amr.iter().map(|m| (*m).to_owned()).collect(),
            key: match basis {
                Basis::ApiKey(id) => Some(id.to_owned()),
                _ => None,
            },
        };
        let access_token = self
            .keyring
            .current()
            .sign(&claims)
            .map_err(ApiError::internal)?;
        tracing::info!(tenant = tenant.as_str(), subject = %user.id, "access token issued");
        Ok(IssuedToken {
            access_token,
            expires_in: exp - now,
            scope: claims.capabilities.join(" "),
            refresh_token: None,
        })
    }
}

/// Whether `code` is the user's current TOTP code (not used before) or one of their
/// unused recovery codes, spending it either way: a concurrent use of the same code
/// loses.
pub(crate) async fn second_factor(
    store: &IdentityStore,
    user_id: &str,
    mfa: &crate::store::MfaState,
    code: &str,
) -> Result<bool, ApiError> {
    let now = unix_now();
    if crate::domain::recovery_code::looks_like(code) {
        return store
            .use_recovery_code(user_id, &crate::domain::recovery_code::hash(code), now)
            .await
            .map_err(ApiError::internal);
    }
    let secret = TotpSecret::from_base32(&mfa.secret)
        .ok_or_else(|| ApiError::internal(anyhow::anyhow!("stored TOTP secret unreadable")))?;
    let Some(step) = secret.verify(code, now as u64, mfa.last_step.map(|s| s as u64)) else {
        return Ok(false);
    };
    store
        .use_totp_step(user_id, step as i64)
        .await
        .map_err(ApiError::internal)
}

/// A real argon2id hash of a random password, checked when the user does not exist so
/// that answer takes as long as a wrong password does.
static DECOY_HASH: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    let random = data_encoding::BASE32_NOPAD.encode(&crate::domain::random_bytes::<20>());
    password::hash(&password::Password::parse(random).expect("32 characters pass the policy"))
});
