//! Tenants: created with their first admin by a platform admin; seen by platform admins
//! and by their own members only. Another tenant's id answers "not found", never
//! "forbidden", so ids cannot be probed.

use somagent_common::auth::{Capability, Principal, Role};
use somagent_common::error::{ApiError, on_constraint};
use somagent_common::infra::events::EventBus;

use crate::domain::{names, password};
use crate::store::{IdentityStore, Tenant, User};

pub struct NewTenant {
    pub slug: String,
    pub display_name: String,
    pub admin_username: String,
    pub admin_password: String,
}

#[derive(Clone)]
pub struct TenantService {
    store: IdentityStore,
    events: EventBus,
}

fn not_found() -> ApiError {
    ApiError::not_found("tenant")
}

impl TenantService {
    pub fn new(store: IdentityStore, events: EventBus) -> Self {
        Self { store, events }
    }

    pub async fn create(&self, actor: &Principal, new: NewTenant) -> Result<Tenant, ApiError> {
        actor.require(Capability::PlatformAdmin)?;
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
        let now = crate::bootstrap::now();
        let tenant = Tenant {
            id: uuid::Uuid::now_v7().to_string(),
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
            &tenant.id,
            "create",
        )
        .await;
        tracing::info!(tenant = %tenant.id, slug = %tenant.slug, "tenant created");
        Ok(tenant)
    }

    pub async fn get(&self, actor: &Principal, id: &str) -> Result<Tenant, ApiError> {
        if !actor.can(Capability::PlatformAdmin) && actor.tenant.as_str() != id {
            return Err(not_found());
        }
        self.store
            .tenant_by_id(id)
            .await
            .map_err(ApiError::internal)?
            .ok_or_else(not_found)
    }

    /// A page of tenants and the cursor of the next page, if any.
    pub async fn list(
        &self,
        actor: &Principal,
        cursor: &str,
        limit: u32,
    ) -> Result<(Vec<Tenant>, String), ApiError> {
        if !actor.can(Capability::PlatformAdmin) {
            let own = self
                .store
                .tenant_by_id(actor.tenant.as_str())
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
            .list_tenants(cursor, crate::paging::rows_to_read(limit))
            .await
            .map_err(ApiError::internal)?;
        Ok(crate::paging::page(rows, limit, |r| r.id.as_str()))
    }
}
