//! Token exchange (RFC 8693): an access token of a trusted external OIDC issuer
//! (Keycloak) in, a short platform access token for the same person out, so the
//! platform's services only ever see tokens of its own issuer.
//!
//! identity verifies the external token itself (the issuers of `SOMAGENT_OIDC_ISSUERS`
//! alone: a platform token cannot be exchanged), whoever forwards it. The person is
//! provisioned just in time as a user of the tenant their issuer names, keyed by issuer
//! and subject; on each exchange their roles follow the issuer's (a role removed there
//! is removed here, and tokens issued before are void), while a user disabled here
//! stays disabled. Such a user has no password.

use somagent_common::auth::{ACCESS_TOKEN_TYPE, ClaimMapping, Principal, TrustedIssuer, Verifier};
use somagent_common::clock::unix_now;
use somagent_common::error::{ApiError, ErrorCode, on_constraint};
use somagent_common::infra::events::EventBus;

use crate::cutoffs::TokenCutoffs;
use crate::domain::external_user;
use crate::store::{ExternalLink, IdentityStore, Tenant, User, UserChange};
use crate::tokens::{IssuedToken, TokenService};

/// Stored in place of a password hash: not a PHC string, so no password ever matches.
const NO_PASSWORD: &str = "!external";

pub struct TokenExchange {
    /// Trusts the external issuers only.
    verifier: Verifier,
    /// Those issuers, for what each may decide (tenants, capabilities).
    issuers: Vec<TrustedIssuer>,
    store: IdentityStore,
    events: EventBus,
    cutoffs: TokenCutoffs,
    tokens: TokenService,
}

fn forbidden(message: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::Forbidden, message)
}

impl TokenExchange {
    pub fn new(
        issuers: Vec<TrustedIssuer>,
        cache: somagent_common::infra::cache::Cache,
        store: IdentityStore,
        events: EventBus,
        cutoffs: TokenCutoffs,
        tokens: TokenService,
    ) -> Self {
        Self {
            verifier: Verifier::new(issuers.clone(), Some(cache)),
            issuers,
            store,
            events,
            cutoffs,
            tokens,
        }
    }

    pub async fn exchange(
        &self,
        subject_token: &str,
        token_type: &str,
    ) -> Result<IssuedToken, ApiError> {
        if !token_type.is_empty() && token_type != ACCESS_TOKEN_TYPE {
            return Err(ApiError::validation(
                "subject_token_type",
                format!("only {ACCESS_TOKEN_TYPE} is exchanged"),
            ));
        }
        if subject_token.is_empty() {
            return Err(ApiError::validation("subject_token", "is required"));
        }
        let external = self.verifier.verify(subject_token).await?;
        let expires_at = external.expires_at.ok_or_else(|| {
            ApiError::new(ErrorCode::Unauthorized, "token lacks a required claim")
        })?;
        let tenant = self.tenant_of(&external).await?;
        let user = self.user_for(&external, &tenant).await?;
        if user.status != "active" {
            return Err(forbidden("your account on this platform is disabled"));
        }
        if user.roles.is_empty() {
            return Err(forbidden(
                "your identity provider gives you no role on this platform",
            ));
        }
        self.tokens.for_external(&user, expires_at)
    }

    /// How the issuer that vouched for `external` is configured.
    fn mapping_of(&self, external: &Principal) -> Option<&ClaimMapping> {
        self.issuers
            .iter()
            .find(|i| i.issuer == external.issuer)
            .map(|i| &i.mapping)
    }

    /// The active tenant the issuer places the person in, by slug (or id), if the
    /// issuer may place people there.
    async fn tenant_of(&self, external: &Principal) -> Result<Tenant, ApiError> {
        let named = external.tenant.as_str();
        let allowed = self
            .mapping_of(external)
            .map_or(&[][..], |m| &m.tenants[..]);
        let mut tenant = self
            .store
            .tenant_by_slug(named)
            .await
            .map_err(ApiError::internal)?;
        if tenant.is_none() {
            tenant = self
                .store
                .tenant_by_id(&external.tenant)
                .await
                .map_err(ApiError::internal)?;
        }
        let tenant = tenant.filter(|t| t.status == "active").ok_or_else(|| {
            forbidden(format!(
                "your identity provider places you in tenant `{named}`, which is not an active tenant of this platform"
            ))
            .with_details(serde_json::json!({ "tenant": named }))
        })?;
        if !allowed.is_empty()
            && !allowed
                .iter()
                .any(|a| *a == tenant.slug || a == tenant.id.as_str())
        {
            return Err(forbidden(format!(
                "your identity provider may not place people in tenant `{named}`"
            ))
            .with_details(serde_json::json!({ "tenant": named })));
        }
        Ok(tenant)
    }

    /// The person's platform user, provisioned on first use and brought up to date
    /// with the issuer's roles on every later one.
    async fn user_for(&self, external: &Principal, tenant: &Tenant) -> Result<User, ApiError> {
        let grantable = self
            .mapping_of(external)
            .map_or(&[][..], |m| &m.grantable[..]);
        let (roles, capabilities) =
            external_user::grants(&external.roles, &external.capabilities, grantable);
        let link = self
            .store
            .external_link(&external.issuer, &external.subject)
            .await
            .map_err(ApiError::internal)?;
        if let Some(link) = link {
            if let Some(user) = self
                .up_to_date(&link, external, tenant, &roles, &capabilities)
                .await?
            {
                return Ok(user);
            }
            // Its user was deleted: the person starts afresh.
            self.store
                .unlink_external(&external.issuer, &external.subject)
                .await
                .map_err(ApiError::internal)?;
        }
        if roles.is_empty() {
            return Err(forbidden(
                "your identity provider gives you no role on this platform",
            ));
        }
        self.provision(external, tenant, roles, capabilities).await
    }

    /// The linked user with the issuer's current roles; `None` if the user is gone.
    async fn up_to_date(
        &self,
        link: &ExternalLink,
        external: &Principal,
        tenant: &Tenant,
        roles: &[somagent_common::auth::Role],
        capabilities: &[somagent_common::auth::Capability],
    ) -> Result<Option<User>, ApiError> {
        if link.tenant_id != tenant.id {
            return Err(forbidden(
                "your identity provider now places you in another tenant than your account on this platform; an administrator must delete that account first",
            ));
        }
        let Some(mut user) = self
            .store
            .user_by_id(&link.tenant_id, &link.user_id)
            .await
            .map_err(ApiError::internal)?
        else {
            return Ok(None);
        };
        let mut held_roles = user.roles.clone();
        held_roles.sort();
        let mut held = user.capabilities.clone();
        held.sort();
        let issued_at = external.issued_at.unwrap_or(0);
        // Roles follow the newest token seen: an older one, still valid at the issuer,
        // speaks for roles that may have been removed since.
        let newest = issued_at >= link.claims_issued_at;
        if newest && (held_roles != roles || held != capabilities) {
            // Tokens issued with the old roles end now, before the change is stored.
            self.cutoffs.subject(&user.tenant_id, &user.id).await?;
            let change = UserChange {
                roles: Some((roles.to_vec(), capabilities.to_vec())),
                ..UserChange::default()
            };
            user = self
                .store
                .update_user(&user.tenant_id, &user.id, &change)
                .await
                .map_err(ApiError::internal)?
                .ok_or_else(|| ApiError::internal(anyhow::anyhow!("provisioned user vanished")))?;
            let names: Vec<&str> = roles.iter().map(|r| r.as_str()).collect();
            crate::audit::record_provisioning(
                &self.events,
                &user.tenant_id,
                &user.id,
                &external.issuer,
                "update_roles",
                &names,
            )
            .await;
        }
        if let Err(e) = self
            .store
            .touch_external(&external.issuer, &external.subject, unix_now(), issued_at)
            .await
        {
            tracing::warn!(error = %e, "cannot record an external user's last exchange");
        }
        Ok(Some(user))
    }

    async fn provision(
        &self,
        external: &Principal,
        tenant: &Tenant,
        roles: Vec<somagent_common::auth::Role>,
        capabilities: Vec<somagent_common::auth::Capability>,
    ) -> Result<User, ApiError> {
        let username = match external_user::preferred_username(external.username.as_deref()) {
            Some(name)
                if self
                    .store
                    .user_by_username(&tenant.id, &name)
                    .await
                    .map_err(ApiError::internal)?
                    .is_none() =>
            {
                name
            }
            _ => external_user::derived_username(&external.issuer, &external.subject),
        };
        let user = User {
            id: uuid::Uuid::now_v7().to_string(),
            tenant_id: tenant.id.clone(),
            username,
            password_hash: NO_PASSWORD.into(),
            status: "active".into(),
            roles,
            capabilities,
            created_at: unix_now(),
            mfa_enabled: false,
        };
        if let Err(e) = self
            .store
            .provision_external(
                &external.issuer,
                &external.subject,
                external.issued_at.unwrap_or(0),
                &user,
            )
            .await
        {
            // The same person's first request on another replica won the race.
            let raced = self
                .store
                .external_link(&external.issuer, &external.subject)
                .await
                .map_err(ApiError::internal)?;
            return match raced {
                Some(link) => self
                    .store
                    .user_by_id(&link.tenant_id, &link.user_id)
                    .await
                    .map_err(ApiError::internal)?
                    .ok_or_else(|| ApiError::internal(e)),
                None => Err(on_constraint(
                    e,
                    "users_tenant_id_username",
                    "a user with this username already exists",
                )),
            };
        }
        let names: Vec<&str> = user.roles.iter().map(|r| r.as_str()).collect();
        crate::audit::record_provisioning(
            &self.events,
            &user.tenant_id,
            &user.id,
            &external.issuer,
            "provision",
            &names,
        )
        .await;
        tracing::info!(tenant = %user.tenant_id, user = %user.id, issuer = %external.issuer, "external user provisioned");
        Ok(user)
    }
}
