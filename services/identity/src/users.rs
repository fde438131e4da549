//! A tenant's users: created, listed and read by those who may manage users, always in
//! the caller's own tenant (taken from the verified token, never from the request).

use somagent_common::auth::{Capability, Principal, Role};
use somagent_common::error::{ApiError, ErrorCode, on_constraint};
use somagent_common::infra::events::EventBus;

use crate::domain::totp::TotpSecret;
use crate::domain::{names, password};
use crate::store::{IdentityStore, User};

pub struct NewUser {
    pub username: String,
    pub password: String,
    pub roles: Vec<String>,
}

#[derive(Clone)]
pub struct UserService {
    store: IdentityStore,
    events: EventBus,
}

impl UserService {
    pub fn new(store: IdentityStore, events: EventBus) -> Self {
        Self { store, events }
    }

    pub async fn create(&self, actor: &Principal, new: NewUser) -> Result<User, ApiError> {
        actor.require(Capability::UsersWrite)?;
        names::username(&new.username).map_err(|e| ApiError::validation("username", e))?;
        if new.roles.is_empty() {
            return Err(ApiError::validation("roles", "name at least one role"));
        }
        let mut roles = Vec::new();
        for name in &new.roles {
            let role = Role::parse(name).ok_or_else(|| {
                ApiError::validation(
                    "roles",
                    format!("unknown role `{name}` (viewer, operator, developer, admin)"),
                )
            })?;
            if !roles.contains(&role) {
                roles.push(role);
            }
        }
        let secret = password::Password::parse(new.password)
            .map_err(|e| ApiError::validation("password", e))?;
        let hash = tokio::task::spawn_blocking(move || password::hash(&secret))
            .await
            .map_err(ApiError::internal)?;
        let mut capabilities: Vec<Capability> =
            roles.iter().flat_map(|r| r.capabilities()).collect();
        capabilities.sort();
        capabilities.dedup();
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
