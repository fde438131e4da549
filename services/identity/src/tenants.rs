//! Tenants: created with their first admin by a platform admin; seen by platform admins
//! and by their own members only. Another tenant's id answers "not found", never
//! "forbidden", so ids cannot be probed.

use somagent_common::auth::{Capability, Principal, Role};
use somagent_common::clock::unix_now;
use somagent_common::error::{ApiError, ErrorCode, on_constraint};
use somagent_common::infra::events::EventBus;
use somagent_common::paging::PageSize;
use somagent_common::tenant::TenantId;

use crate::cutoffs::TokenCutoffs;
use crate::domain::{names, password};
use crate::store::{IdentityStore, Tenant, User};

pub struct NewTenant {
    pub slug: String,
    pub display_name: String,
    pub admin_username: String,
    pub admin_password: String,
}

/// A change to a tenant; `None` leaves a field as it is.
#[derive(Debug, Default)]
pub struct TenantChange {
    pub display_name: Option<String>,
    /// `active` or `suspended`.
    pub status: Option<String>,
}

#[derive(Clone)]
pub struct TenantService {
    store: IdentityStore,
    events: EventBus,
    cutoffs: TokenCutoffs,
}

/// The one answer for a tenant the caller may not see, one that does not exist, and
/// an id that is not a tenant id at all: none of them tells the others apart.
pub(crate) fn not_found() -> ApiError {
    ApiError::not_found("tenant")
}

/// A new tenant's id: a UUIDv7, so tenants list in creation order.
pub(crate) fn new_tenant_id() -> TenantId {
    TenantId::parse(uuid::Uuid::now_v7().to_string()).expect("a UUID is a tenant id")
}

/// Whether `actor` may make `change` to a tenant (its own if `own`), answered in the
/// order [`TenantService::update`] checks: another tenant is "not found" first, then
/// what the change asks for.
fn may_change(actor: &Principal, own: bool, change: &TenantChange) -> Result<(), ApiError> {
    let platform = actor.can(Capability::PlatformAdmin);
    if !platform && !own {
        return Err(not_found());
    }
    if change.display_name.is_none() && change.status.is_none() {
        return Err(ApiError::validation(
            "body",
            "name at least one of display_name, status",
        ));
    }
    if let Some(name) = &change.display_name {
        if !platform {
            actor.require(Capability::TenantAdmin)?;
        }
        names::display_name(name).map_err(|e| ApiError::validation("display_name", e))?;
    }
    if let Some(status) = &change.status {
        actor.require(Capability::PlatformAdmin)?;
        if !matches!(status.as_str(), "active" | "suspended") {
            return Err(ApiError::validation("status", "is `active` or `suspended`"));
        }
        if own {
            return Err(ApiError::new(
                ErrorCode::Conflict,
                "a platform admin cannot change the status of their own tenant",
            ));
        }
    }
    Ok(())
}

impl TenantService {
    pub fn new(store: IdentityStore, events: EventBus, cutoffs: TokenCutoffs) -> Self {
        Self {
            store,
            events,
            cutoffs,
        }
    }

    pub async fn create(&self, actor: &Principal, new: NewTenant) -> Result<Tenant, ApiError> {
        actor.require(Capability::PlatformAdmin)?;
        // The new tenant's admin is a login of its own, which would outlive the API key
        // or the service that made it.
        crate::users::require_interactive(actor, "creating a tenant")?;
        names::slug(&new.slug).map_err(|e| ApiError::validation("slug", e))?;
        names::display_name(&new.display_name)
            .map_err(|e| ApiError::validation("display_name", e))?;
        names::username(&new.admin_username)
            .map_err(|e| ApiError::validation("admin.username", e))?;
        let secret = password::Password::parse(new.admin_password)
            .map_err(|e| ApiError::validation("admin.password", e))?;
        let hash = tokio::task::spawn_blocking(move || password::hash(&secret))
            .await
            .map_err(ApiError::internal)?;
        let now = unix_now();
        let tenant = Tenant {
            id: new_tenant_id(),
            slug: new.slug,
            display_name: new.display_name,
            status: "active".into(),
            created_at: now,
        };
        let admin = User {
            id: uuid::Uuid::now_v7().to_string(),
            tenant_id: tenant.id.clone(),
            username: new.admin_username,
            password_hash: hash,
            status: "active".into(),
            roles: vec![Role::Admin],
            capabilities: Role::Admin.capabilities(),
            created_at: now,
            mfa_enabled: false,
        };
        self.store
            .create_tenant_with_admin(&tenant, &admin)
            .await
            .map_err(|e| {
                on_constraint(e, "tenants_slug", "a tenant with this slug already exists")
            })?;
        crate::audit::record(
            &self.events,
            actor,
            &tenant.id,
            "tenant",
            tenant.id.as_str(),
            "create",
        )
        .await;
        tracing::info!(tenant = %tenant.id, slug = %tenant.slug, "tenant created");
        Ok(tenant)
    }

    pub async fn get(&self, actor: &Principal, id: &TenantId) -> Result<Tenant, ApiError> {
        if !actor.can(Capability::PlatformAdmin) && actor.tenant != *id {
            return Err(not_found());
        }
        self.store
            .tenant_by_id(id)
            .await
            .map_err(ApiError::internal)?
            .ok_or_else(not_found)
    }

    /// Renames a tenant (its admins or platform admins) or suspends / reactivates it
    /// (platform admins, never their own tenant). Suspending voids the tenant's tokens
    /// at once; its users cannot log in until it is active again.
    pub async fn update(
        &self,
        actor: &Principal,
        id: &TenantId,
        change: TenantChange,
    ) -> Result<Tenant, ApiError> {
        may_change(actor, actor.tenant == *id, &change)?;
        if change.status.as_deref() == Some("suspended") {
            self.cutoffs.tenant(id).await?;
        }
        let tenant = self
            .store
            .update_tenant(id, change.display_name.as_deref(), change.status.as_deref())
            .await
            .map_err(ApiError::internal)?
            .ok_or_else(not_found)?;
        crate::audit::record(&self.events, actor, id, "tenant", id.as_str(), "update").await;
        Ok(tenant)
    }

    /// What [`TenantService::update`] answers for an id that is not a tenant id at all:
    /// what it answers for any tenant that does not exist, the change checked first.
    pub fn update_unknown(&self, actor: &Principal, change: &TenantChange) -> ApiError {
        may_change(actor, false, change)
            .err()
            .unwrap_or_else(not_found)
    }

    /// Deletes a tenant (platform admins, never their own): it disappears from every
    /// listing, its users cannot log in and every token of it stops working at once.
    /// Its slug stays taken, so old links never reach a new owner.
    pub async fn delete(&self, actor: &Principal, id: &TenantId) -> Result<(), ApiError> {
        if !actor.can(Capability::PlatformAdmin) {
            if actor.tenant == *id {
                actor.require(Capability::PlatformAdmin)?;
            }
            return Err(not_found());
        }
        if actor.tenant == *id {
            return Err(ApiError::new(
                ErrorCode::Conflict,
                "a platform admin cannot delete their own tenant",
            ));
        }
        if self
            .store
            .tenant_by_id(id)
            .await
            .map_err(ApiError::internal)?
            .is_none()
        {
            return Err(not_found());
        }
        self.cutoffs.tenant(id).await?;
        self.store
            .update_tenant(id, None, Some("deleted"))
            .await
            .map_err(ApiError::internal)?
            .ok_or_else(not_found)?;
        crate::audit::record(&self.events, actor, id, "tenant", id.as_str(), "delete").await;
        tracing::info!(tenant = %id, "tenant deleted");
        Ok(())
    }

    /// A page of tenants and the cursor of the next page, if any.
    pub async fn list(
        &self,
        actor: &Principal,
        cursor: &str,
        size: PageSize,
    ) -> Result<(Vec<Tenant>, String), ApiError> {
        if !actor.can(Capability::PlatformAdmin) {
            let own = self
                .store
                .tenant_by_id(&actor.tenant)
                .await
                .map_err(ApiError::internal)?;
            let page = if cursor.is_empty() {
                own.into_iter().collect()
            } else {
                Vec::new()
            };
            return Ok((page, String::new()));
        }
        let rows = self
            .store
            .list_tenants(cursor, size.rows_to_read())
            .await
            .map_err(ApiError::internal)?;
        Ok(size.cut(rows, |r| r.id.as_str().to_owned()))
    }
}
