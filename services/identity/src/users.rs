//! A tenant's users: created, listed and read by those who may manage users, always in
//! the caller's own tenant (taken from the verified token, never from the request).

use somagent_common::auth::{Capability, Principal, Role};
use somagent_common::error::{ApiError, on_constraint};
use somagent_common::infra::events::EventBus;

use crate::domain::{names, password};
use crate::store::{IdentityStore, User};

pub const MAX_PAGE: i64 = 100;

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
        let limit = i64::from(limit).clamp(1, MAX_PAGE);
        let mut page = self
            .store
            .list_users(actor.tenant.as_str(), cursor, limit + 1)
            .await
            .map_err(ApiError::internal)?;
        let next = if page.len() as i64 > limit {
            page.truncate(limit as usize);
            page.last().map(|u| u.id.clone()).unwrap_or_default()
        } else {
            String::new()
        };
        Ok((page, next))
    }
}
