//! A tenant's users: created, listed and read by those who may manage users, always in
//! the caller's own tenant (taken from the verified token, never from the request).

use somagent_common::auth::{Capability, Principal, Role};
use somagent_common::clock::unix_now;
use somagent_common::error::{ApiError, ErrorCode, on_constraint};
use somagent_common::infra::events::EventBus;
use somagent_common::paging::PageSize;

use crate::cutoffs::TokenCutoffs;
use crate::domain::totp::TotpSecret;
use crate::domain::{names, password, recovery_code};
use crate::reauth::Reauth;
use crate::store::{IdentityStore, User, UserChange};

/// What enrolling in MFA shows the user, once.
pub struct MfaEnrollment {
    pub secret: String,
    pub otpauth_uri: String,
    pub recovery_codes: Vec<String>,
}

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
    /// Proof for changing one's own password.
    pub current_password: Option<String>,
}

#[derive(Clone)]
pub struct UserService {
    store: IdentityStore,
    events: EventBus,
    cutoffs: TokenCutoffs,
    reauth: Reauth,
}

/// Capabilities granted beside roles, named in `roles`: no role carries them. Who
/// grants one must hold it ([`may_grant`]), so only a platform admin makes another.
pub(crate) const GRANTABLE: &[Capability] = &[
    Capability::ModerationBypass,
    Capability::TrainingAdmin,
    Capability::BillingAdmin,
    Capability::PlatformAdmin,
];

/// Whether `actor` holds `capability` for the purpose of granting it or managing its
/// holders: a platform admin stands for every capability granted beside roles (it is
/// how the first holder of each gets it).
fn holds(actor: &Principal, capability: Capability) -> bool {
    actor.can(capability)
        || (GRANTABLE.contains(&capability) && actor.can(Capability::PlatformAdmin))
}

/// Nobody acts above their own rank: an actor may change, disable or delete a user only
/// if it holds every capability the user holds (so a tenant admin cannot touch the
/// platform admin, nor a narrowed API key an admin).
pub(crate) fn may_manage(actor: &Principal, target: &User) -> Result<(), ApiError> {
    within_rank(
        actor,
        &target.capabilities,
        "this user holds capabilities you do not; only someone who holds all of them may manage them",
    )
}

/// An actor grants only what it holds itself.
fn may_grant(actor: &Principal, capabilities: &[Capability]) -> Result<(), ApiError> {
    within_rank(
        actor,
        capabilities,
        "you may grant only capabilities you hold yourself",
    )
}

/// Ok if `actor` holds each of `capabilities`, else a 403 with `refusal` naming those
/// beyond it.
fn within_rank(
    actor: &Principal,
    capabilities: &[Capability],
    refusal: &str,
) -> Result<(), ApiError> {
    let beyond: Vec<&str> = capabilities
        .iter()
        .filter(|c| !holds(actor, **c))
        .map(|c| c.as_str())
        .collect();
    if beyond.is_empty() {
        return Ok(());
    }
    Err(ApiError::new(ErrorCode::Forbidden, refusal)
        .with_details(serde_json::json!({ "capabilities_beyond_yours": beyond })))
}

/// Refuses a principal that came from an API key or acts through a service: what it
/// holds is a delegation, never proof enough to change how the account logs in.
pub(crate) fn require_interactive(actor: &Principal, what: &str) -> Result<(), ApiError> {
    if actor.is_delegated() {
        return Err(ApiError::new(
            ErrorCode::Forbidden,
            format!("{what} needs a login with your password, not an API key or a service token"),
        ));
    }
    Ok(())
}

/// Roles (and granted capabilities) from their names: at least one known role, no
/// repeats, and the capabilities they grant together.
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
                    "unknown role `{name}` (viewer, operator, developer, admin, or one of the capabilities moderation:bypass, training.admin, billing.admin, platform:admin)"
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
    pub fn new(
        store: IdentityStore,
        events: EventBus,
        cutoffs: TokenCutoffs,
        reauth: Reauth,
    ) -> Self {
        Self {
            store,
            events,
            cutoffs,
            reauth,
        }
    }

    pub async fn create(&self, actor: &Principal, new: NewUser) -> Result<User, ApiError> {
        actor.require(Capability::UsersWrite)?;
        names::username(&new.username).map_err(|e| ApiError::validation("username", e))?;
        // A user with a password is a login of its own, which would outlive the API key
        // or the service that made it.
        require_interactive(actor, "creating a user")?;
        let (roles, capabilities) = parse_roles(&new.roles)?;
        may_grant(actor, &capabilities)?;
        let hash = hash_password(new.password).await?;
        let user = User {
            id: uuid::Uuid::now_v7().to_string(),
            tenant_id: actor.tenant.clone(),
            username: new.username,
            password_hash: hash,
            status: "active".into(),
            roles,
            capabilities,
            created_at: unix_now(),
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

    /// Changes a user. `users:write` may change the status, roles or password of a user
    /// of the tenant who holds nothing the actor does not (and grant only what the actor
    /// holds), but not its own status or roles, so an admin cannot lock themself out.
    /// Anyone may change their own password with the current one, from a password login
    /// (never through an API key or a service). A disabled user, new roles or a new
    /// password void the user's tokens issued before; disabling or a new password also
    /// ends their logins (refresh tokens).
    pub async fn update(
        &self,
        actor: &Principal,
        id: &str,
        change: UserUpdate,
    ) -> Result<User, ApiError> {
        let tenant = &actor.tenant;
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
        if !own {
            may_manage(actor, &user)?;
        }
        if change.password.is_some() {
            require_interactive(actor, "changing a password")?;
        }
        let mut stored = UserChange::default();
        if let Some(status) = change.status {
            if !matches!(status.as_str(), "active" | "disabled") {
                return Err(ApiError::validation("status", "is `active` or `disabled`"));
            }
            stored.status = Some(status);
        }
        if let Some(roles) = &change.roles {
            let parsed = parse_roles(roles)?;
            may_grant(actor, &parsed.1)?;
            stored.roles = Some(parsed);
        }
        if let Some(password) = change.password {
            if own {
                self.reauth
                    .password(
                        &user,
                        change.current_password.as_deref(),
                        "current_password",
                    )
                    .await?;
            }
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
        // Again after the change: a token issued between the first cutoff and the change
        // carries what the user no longer has.
        self.cutoffs.subject(tenant, &user.id).await?;
        let now = unix_now();
        if ends_logins {
            self.store
                .revoke_refresh_for_user(tenant, &user.id, now)
                .await
                .map_err(ApiError::internal)?;
        }
        if stored.password_hash.is_some() {
            // Whoever changed the password may be taking the account back: the keys made
            // under the old one go with it (OWASP ASVS 3.3.3).
            self.store
                .revoke_api_keys_of_user(tenant, &user.id, now)
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
        let tenant = &actor.tenant;
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
        may_manage(actor, &user)?;
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

    /// Starts MFA for the caller: a new TOTP secret, its `otpauth://` URI and ten
    /// recovery codes, shown once. Only users themselves enroll, from a password login
    /// and with their password, so nobody else ever sees their secret and a stolen
    /// session cannot bind its own authenticator.
    pub async fn enroll_mfa(
        &self,
        actor: &Principal,
        id: &str,
        password: &str,
    ) -> Result<MfaEnrollment, ApiError> {
        require_interactive(actor, "setting up MFA")?;
        let user = self.own_account(actor, id).await?;
        self.reauth
            .password(&user, Some(password), "password")
            .await?;
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
        let codes: Vec<(String, String)> = (0..recovery_code::COUNT)
            .map(|_| recovery_code::generate())
            .collect();
        let hashes: Vec<String> = codes.iter().map(|(_, h)| h.clone()).collect();
        self.store
            .replace_recovery_codes(&user.id, &hashes, unix_now())
            .await
            .map_err(ApiError::internal)?;
        let otpauth_uri = secret.otpauth_uri("SomaAgent", &user.username);
        Ok(MfaEnrollment {
            secret: encoded,
            otpauth_uri,
            recovery_codes: codes.into_iter().map(|(c, _)| c).collect(),
        })
    }

    /// Turns MFA off for the caller: their password and a current code (or one of their
    /// recovery codes), from a password login.
    pub async fn disable_mfa(
        &self,
        actor: &Principal,
        password: &str,
        code: &str,
    ) -> Result<(), ApiError> {
        require_interactive(actor, "turning MFA off")?;
        let user = self.own_account(actor, &actor.subject).await?;
        self.reauth
            .password(&user, Some(password), "password")
            .await?;
        let state = self
            .store
            .mfa_state(&user.id)
            .await
            .map_err(ApiError::internal)?
            .ok_or_else(|| ApiError::new(ErrorCode::Conflict, "MFA is not active for you"))?;
        self.reauth.code(&user, &state, code).await?;
        self.store
            .disable_mfa(&user.tenant_id, &user.id)
            .await
            .map_err(ApiError::internal)?;
        crate::audit::record(
            &self.events,
            actor,
            &user.tenant_id,
            "user",
            &user.id,
            "mfa_disable",
        )
        .await;
        Ok(())
    }

    /// Confirms enrollment with a current code; from then on password logins need one.
    pub async fn verify_mfa(
        &self,
        actor: &Principal,
        id: &str,
        code: &str,
    ) -> Result<(), ApiError> {
        require_interactive(actor, "setting up MFA")?;
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
            .verify(code, unix_now() as u64, None)
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
            .user_by_id(&actor.tenant, id)
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
            .user_by_id(&actor.tenant, id)
            .await
            .map_err(ApiError::internal)?
            .ok_or_else(|| ApiError::not_found("user"))
    }

    /// The ids of the tenant's active administrators, at most `limit`: who the platform
    /// tells about the tenant (asked by a service, never through the API).
    pub async fn admins(
        &self,
        tenant: &somagent_common::tenant::TenantId,
        limit: i64,
    ) -> Result<Vec<String>, ApiError> {
        self.store
            .tenant_admins(tenant, limit)
            .await
            .map_err(ApiError::internal)
    }

    pub async fn list(
        &self,
        actor: &Principal,
        cursor: &str,
        size: PageSize,
    ) -> Result<(Vec<User>, String), ApiError> {
        actor.require(Capability::UsersRead)?;
        let rows = self
            .store
            .list_users(&actor.tenant, cursor, size.rows_to_read())
            .await
            .map_err(ApiError::internal)?;
        Ok(size.cut(rows, |r| r.id.clone()))
    }
}
