//! API keys: made for the caller with scopes that are a subset of what the caller may
//! do, shown once, listed by prefix, revoked at once. A key is exchanged for a
//! short-lived access token (the `client_credentials` grant), so everything past the
//! gateway sees an ordinary signed token.

use somagent_common::auth::{Capability, Principal};
use somagent_common::clock::unix_now;
use somagent_common::error::{ApiError, ErrorCode};
use somagent_common::infra::events::EventBus;
use somagent_common::paging::PageSize;

use crate::cutoffs::TokenCutoffs;
use crate::domain::api_key;
use crate::reauth::Reauth;
use crate::store::{ApiKeyRecord, IdentityStore};

pub struct NewApiKey {
    pub name: String,
    pub scopes: Vec<String>,
    /// RFC 3339; empty means the key does not expire.
    pub expires_at: String,
    /// The owner's password.
    pub password: String,
}

#[derive(Clone)]
pub struct ApiKeyService {
    store: IdentityStore,
    events: EventBus,
    reauth: Reauth,
    cutoffs: TokenCutoffs,
}

impl ApiKeyService {
    pub fn new(
        store: IdentityStore,
        events: EventBus,
        reauth: Reauth,
        cutoffs: TokenCutoffs,
    ) -> Self {
        Self {
            store,
            events,
            reauth,
            cutoffs,
        }
    }

    /// The stored record and the key itself, which is never shown again.
    pub async fn create(
        &self,
        actor: &Principal,
        new: NewApiKey,
    ) -> Result<(ApiKeyRecord, String), ApiError> {
        actor.require(Capability::ApiKeysOwn)?;
        // Keys never mint keys: a leaked key must not outlive its own revocation.
        crate::users::require_interactive(actor, "creating an API key")?;
        // A key outlives the identity provider's decisions (a person disabled there keeps
        // a working key here), so people who sign in through one do not make keys.
        if actor
            .auth_methods
            .iter()
            .any(|m| m == somagent_common::auth::AMR_FEDERATED)
        {
            return Err(ApiError::new(
                ErrorCode::Forbidden,
                "API keys are for accounts of this platform; you sign in through your identity provider",
            ));
        }
        let name = new.name.trim();
        if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
            return Err(ApiError::validation(
                "name",
                "must be 1-100 printable characters",
            ));
        }
        if new.scopes.is_empty() {
            return Err(ApiError::validation(
                "scopes",
                "name at least one capability",
            ));
        }
        let mut scopes = Vec::new();
        for scope in &new.scopes {
            let cap = Capability::parse(scope).ok_or_else(|| {
                ApiError::validation("scopes", format!("unknown capability `{scope}`"))
            })?;
            if !actor.can(cap) {
                return Err(ApiError::validation(
                    "scopes",
                    format!("`{scope}` is beyond what you may do yourself"),
                ));
            }
            if !scopes.contains(&cap) {
                scopes.push(cap);
            }
        }
        // A key outlasts the login that makes it: the password, not just a token.
        let owner = self
            .store
            .user_by_id(&actor.tenant, &actor.subject)
            .await
            .map_err(ApiError::internal)?
            .ok_or_else(|| ApiError::not_found("user"))?;
        self.reauth
            .password(&owner, Some(&new.password), "password")
            .await?;
        let now = unix_now();
        let expires_at = if new.expires_at.is_empty() {
            None
        } else {
            let at = time::OffsetDateTime::parse(
                &new.expires_at,
                &time::format_description::well_known::Rfc3339,
            )
            .map_err(|_| ApiError::validation("expires_at", "must be an RFC 3339 time"))?
            .unix_timestamp();
            if at <= now {
                return Err(ApiError::validation("expires_at", "must be in the future"));
            }
            Some(at)
        };
        let made = api_key::generate();
        let record = ApiKeyRecord {
            id: uuid::Uuid::now_v7().to_string(),
            tenant_id: actor.tenant.clone(),
            user_id: actor.subject.clone(),
            name: name.to_owned(),
            prefix: made.prefix.clone(),
            hash: made.hash.clone(),
            scopes,
            expires_at,
            revoked_at: None,
            last_used_at: None,
            created_at: now,
        };
        self.store
            .insert_api_key(&record)
            .await
            .map_err(ApiError::internal)?;
        crate::audit::record(
            &self.events,
            actor,
            &record.tenant_id,
            "api_key",
            &record.id,
            "create",
        )
        .await;
        Ok((record, made.secret))
    }

    /// The caller's keys, or all of the tenant's with `api_keys:manage`.
    pub async fn list(
        &self,
        actor: &Principal,
        cursor: &str,
        size: PageSize,
    ) -> Result<(Vec<ApiKeyRecord>, String), ApiError> {
        actor.require(Capability::ApiKeysOwn)?;
        let owner = (!actor.can(Capability::ApiKeysManage)).then_some(actor.subject.as_str());
        let rows = self
            .store
            .list_api_keys(&actor.tenant, owner, cursor, size.rows_to_read())
            .await
            .map_err(ApiError::internal)?;
        Ok(size.cut(rows, |r| r.id.clone()))
    }

    /// Revokes a key: the caller's own, or with `api_keys:manage` another user's of the
    /// tenant whose holder does not outrank the caller. Tokens already obtained with it
    /// stop working at once.
    pub async fn revoke(&self, actor: &Principal, id: &str) -> Result<(), ApiError> {
        actor.require(Capability::ApiKeysOwn)?;
        let tenant = &actor.tenant;
        let not_found = || ApiError::new(ErrorCode::NotFound, "api key not found");
        let holder = self
            .store
            .api_key_owner(tenant, id)
            .await
            .map_err(ApiError::internal)?
            .ok_or_else(not_found)?;
        let owner = (!actor.can(Capability::ApiKeysManage)).then_some(actor.subject.as_str());
        if holder != actor.subject {
            if owner.is_some() {
                return Err(not_found());
            }
            // Another user's key: only someone of at least their rank revokes it.
            if let Some(user) = self
                .store
                .user_by_id(tenant, &holder)
                .await
                .map_err(ApiError::internal)?
            {
                crate::users::may_manage(actor, &user)?;
            }
        }
        // Checked to be the caller's to revoke first: voiding the tokens of someone
        // else's key would be a way to cut them off.
        self.cutoffs.api_key(id).await?;
        let done = self
            .store
            .revoke_api_key(tenant, id, owner, unix_now())
            .await
            .map_err(ApiError::internal)?;
        if !done {
            return Err(ApiError::new(ErrorCode::NotFound, "api key not found"));
        }
        crate::audit::record(&self.events, actor, tenant, "api_key", id, "revoke").await;
        Ok(())
    }
}
