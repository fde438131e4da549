//! A tenant's users: created, listed and read by those who may manage users, always in
//! the caller's own tenant (taken from the verified token, never from the request).

use somagent_common::auth::{Capability, Principal, Role};
use somagent_common::error::{ApiError, ErrorCode, on_constraint};
use somagent_common::infra::events::EventBus;

use crate::cutoffs::TokenCutoffs;
use crate::domain::totp::TotpSecret;
use crate::domain::{names, password};
use crate::store::{IdentityStore, User, UserChange};

pub struct NewUser {
    pub username: String,
    pub password: String,
    pub roles: Vec<String>,
}

/// A requested change to a user; `None` leaves a field as it is.
#[derive(Debug, Default)]
pub struct UserUpdate {
    pub status: Option<String>,
    pub roles: Option<Vec<String>>,
    pub password: Option<String>,
}

#[derive(Clone)]
pub struct UserService {
    store: IdentityStore,
    events: EventBus,
    cutoffs: TokenCutoffs,
}

/// Roles from their names (at least one, known, without repeats) and the capabilities
/// they grant together.
/// Capabilities a tenant's admin may grant a user beside roles, named in `roles`: no
/// role carries them.
pub(crate) const GRANTABLE: &[Capability] = &[Capability::ModerationBypass];

fn parse_roles(names: &[String]) -> Result<(Vec<Role>, Vec<Capability>), ApiError> {
    let mut roles = Vec::new();
    let mut granted = Vec::new();
    for name in names {
        if let Some(capability) = Capability::parse(name).filter(|c| GRANTABLE.contains(c)) {
            granted.push(capability);
            continue;
        }
        let role = Role::parse(name).ok_or_else(|| {
            ApiError::validation(
                "roles",
                format!(
                    "unknown role `{name}` (viewer, operator, developer, admin, or the capability moderation:bypass)"
                ),
            )
        })?;
        if !roles.contains(&role) {
            roles.push(role);
        }
    }
    if roles.is_empty() {
        return Err(ApiError::validation("roles", "name at least one role"));
    }
    let mut capabilities: Vec<Capability> = roles.iter().flat_map(|r| r.capabilities()).collect();
    capabilities.extend(granted);
    capabilities.sort();
    capabilities.dedup();
    Ok((roles, capabilities))
}

/// Checks a new password against the rules and hashes it off the async threads.
async fn hash_password(candidate: String) -> Result<String, ApiError> {
    let secret =
        password::Password::parse(candidate).map_err(|e| ApiError::validation("password", e))?;
    tokio::task::spawn_blocking(move || password::hash(&secret))
        .await
        .map_err(ApiError::internal)
}

impl UserService {
    pub fn new(store: IdentityStore, events: EventBus, cutoffs: TokenCutoffs) -> Self {
        Self {
            store,
            events,
            cutoffs,
        }
    }

    pub async fn create(&self, actor: &Principal, new: NewUser) -> Result<User, ApiError> {
        actor.require(Capability::UsersWrite)?;
        names::username(&new.username).map_err(|e| ApiError::validation("username", e))?;
        let (roles, capabilities) = parse_roles(&new.roles)?;
        let hash = hash_password(new.password).await?;
        let user = User {
            id: uuid::Uuid::now_v7().to_string(),
            tenant_id: actor.tenant.as_str().to_owned(),
            username: new.username,
            password_hash: hash,
            status: "active".into(),
            roles,
            capabilities,
            created_at: crate::bootstrap::now(),
            mfa_enabled: false,
        };
        self.store.create_user(&user).await.map_err(|e| {
            on_constraint(
                e,
                "users_tenant_id_username",
                "a user with this username already exists",
            )
        })?;
        crate::audit::record(
            &self.events,
            actor,
            &user.tenant_id,
            "user",
            &user.id,
            "create",
        )
        .await;
        Ok(user)
    }

    /// Changes a user: `users:write` may change anyone's status, roles or password in
    /// the tenant, except their own status and roles (so an admin cannot lock
    /// themself out); everyone may change their own password. A disabled user, new
    /// roles or a new password void the user's tokens issued before; disabling or a new
    /// password also ends their logins (refresh tokens).
    pub async fn update(
        &self,
        actor: &Principal,
        id: &str,
        change: UserUpdate,
    ) -> Result<User, ApiError> {
        let tenant = actor.tenant.as_str();
        let user = self
            .store
            .user_by_id(tenant, id)
            .await
            .map_err(ApiError::internal)?
            .ok_or_else(|| ApiError::not_found("user"))?;
        let own = user.id == actor.subject;
        let only_password = change.status.is_none() && change.roles.is_none();
        if !(own && only_password) {
            actor.require(Capability::UsersWrite)?;
        }
        if change.status.is_none() && change.roles.is_none() && change.password.is_none() {
            return Err(ApiError::validation(
                "body",
                "name at least one of status, roles, password",
            ));
        }
        if own && !only_password {
            return Err(ApiError::new(
                ErrorCode::Conflict,
                "you cannot change your own status or roles",
            ));
        }
        let mut stored = UserChange::default();
        if let Some(status) = change.status {
            if !matches!(status.as_str(), "active" | "disabled") {
                return Err(ApiError::validation("status", "is `active` or `disabled`"));
            }
            stored.status = Some(status);
        }
        if let Some(roles) = &change.roles {
            stored.roles = Some(parse_roles(roles)?);
        }
        if let Some(password) = change.password {
            stored.password_hash = Some(hash_password(password).await?);
        }
        let ends_logins =
            stored.status.as_deref() == Some("disabled") || stored.password_hash.is_some();
        self.cutoffs.subject(tenant, &user.id).await?;
        let updated = self
            .store
            .update_user(tenant, &user.id, &stored)
            .await
            .map_err(ApiError::internal)?
            .ok_or_else(|| ApiError::not_found("user"))?;
        if ends_logins {
            self.store
                .revoke_refresh_for_user(tenant, &user.id, crate::bootstrap::now())
                .await
                .map_err(ApiError::internal)?;
        }
        crate::audit::record(&self.events, actor, tenant, "user", &user.id, "update").await;
        Ok(updated)
    }

    /// Deletes a user of the caller's tenant with their API keys and logins; their
    /// tokens stop working at once. Nobody deletes themself.
    pub async fn delete(&self, actor: &Principal, id: &str) -> Result<(), ApiError> {
        actor.require(Capability::UsersWrite)?;
        let tenant = actor.tenant.as_str();
        let user = self
            .store
            .user_by_id(tenant, id)
            .await
            .map_err(ApiError::internal)?
            .ok_or_else(|| ApiError::not_found("user"))?;
        if user.id == actor.subject {
            return Err(ApiError::new(
                ErrorCode::Conflict,
                "you cannot delete yourself",
            ));
        }
        self.cutoffs.subject(tenant, &user.id).await?;
        if !self
            .store
            .delete_user(tenant, &user.id)
            .await
            .map_err(ApiError::internal)?
        {
            return Err(ApiError::not_found("user"));
        }
        crate::audit::record(&self.events, actor, tenant, "user", &user.id, "delete").await;
        Ok(())
    }

    /// Starts MFA for the caller: a new TOTP secret and its `otpauth://` URI, shown once.
    /// Only users themselves enroll, so nobody else ever sees their secret.
    pub async fn enroll_mfa(
        &self,
        actor: &Principal,
        id: &str,
    ) -> Result<(String, String), ApiError> {
        let user = self.own_account(actor, id).await?;
        let secret = TotpSecret::generate();
        let encoded = secret.to_base32();
        if !self
            .store
            .begin_mfa(&user.tenant_id, &user.id, &encoded)
            .await
            .map_err(ApiError::internal)?
        {
            return Err(ApiError::new(
                ErrorCode::Conflict,
                "MFA is already active for this user",
            ));
        }
        crate::audit::record(
            &self.events,
            actor,
            &user.tenant_id,
            "user",
            &user.id,
            "mfa_enroll",
        )
        .await;
        let uri = secret.otpauth_uri("SomaAgent", &user.username);
        Ok((encoded, uri))
    }

    /// Confirms enrollment with a current code; from then on password logins need one.
    pub async fn verify_mfa(
        &self,
        actor: &Principal,
        id: &str,
        code: &str,
    ) -> Result<(), ApiError> {
        let user = self.own_account(actor, id).await?;
        let pending = self
            .store
            .pending_mfa(&user.tenant_id, &user.id)
            .await
            .map_err(ApiError::internal)?
            .ok_or_else(|| {
                ApiError::new(
                    ErrorCode::Conflict,
                    "no MFA enrollment is waiting for a code",
                )
            })?;
        let secret = TotpSecret::from_base32(&pending)
            .ok_or_else(|| ApiError::internal(anyhow::anyhow!("stored TOTP secret unreadable")))?;
        let step = secret
            .verify(code, crate::bootstrap::now() as u64, None)
            .ok_or_else(|| {
                ApiError::validation("code", "is not the current code of the enrolled secret")
            })?;
        self.store
            .activate_mfa(&user.id, step as i64)
            .await
            .map_err(ApiError::internal)?;
        crate::audit::record(
            &self.events,
            actor,
            &user.tenant_id,
            "user",
            &user.id,
            "mfa_activate",
        )
        .await;
        Ok(())
    }

    /// The caller's own account; someone else's in the same tenant is forbidden, and
    /// anything else is not found.
    async fn own_account(&self, actor: &Principal, id: &str) -> Result<User, ApiError> {
        let user = self
            .store
            .user_by_id(actor.tenant.as_str(), id)
            .await
            .map_err(ApiError::internal)?
            .ok_or_else(|| ApiError::not_found("user"))?;
        if user.id != actor.subject {
            return Err(ApiError::new(
                ErrorCode::Forbidden,
                "only the user themself can set up their MFA",
            ));
        }
        Ok(user)
    }

    pub async fn get(&self, actor: &Principal, id: &str) -> Result<User, ApiError> {
        actor.require(Capability::UsersRead)?;
        self.store
            .user_by_id(actor.tenant.as_str(), id)
            .await
            .map_err(ApiError::internal)?
            .ok_or_else(|| ApiError::not_found("user"))
    }

    pub async fn list(
        &self,
        actor: &Principal,
        cursor: &str,
        limit: u32,
    ) -> Result<(Vec<User>, String), ApiError> {
        actor.require(Capability::UsersRead)?;
        let rows = self
            .store
            .list_users(
                actor.tenant.as_str(),
                cursor,
                crate::paging::rows_to_read(limit),
            )
            .await
            .map_err(ApiError::internal)?;
        Ok(crate::paging::page(rows, limit, |r| r.id.as_str()))
    }
}
