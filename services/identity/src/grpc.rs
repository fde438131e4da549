//! identity's gRPC surface: tenants, users, MFA, API keys, tokens (including service
//! tokens that act for a user), revocation, signing keys and the JWKS. Every call that
//! acts for someone verifies the token it carries.

use somagent_common::clock::rfc3339;
use somagent_common::paging::PageSize;
use somagent_common::proto::common::v1::PageInfo;
use somagent_common::proto::identity::v1 as pb;
use somagent_common::proto::identity::v1::identity_service_server::IdentityService;
use tonic::{Request, Response, Status};

use somagent_common::auth::grpc::caller;
use somagent_common::auth::{Capability, SERVICE_KEY_HEADER, ServiceIssuerKey, Verifier};
use somagent_common::error::ApiError;
use somagent_common::tenant::TenantId;

use crate::api_keys::{ApiKeyService, NewApiKey};
use crate::domain::service_grants;
use crate::store::Tenant;
use crate::store::{ApiKeyRecord, User};
use crate::tenants::{NewTenant, TenantChange, TenantService};
use crate::tokens::{Acting, Grant, TokenService};
use crate::users::{NewUser, UserService, UserUpdate};

/// The most rows one page of a list holds, whatever the caller asks for.
const MAX_PAGE: u32 = 100;

pub struct IdentityGrpc {
    pub tokens: TokenService,
    pub tenants: TenantService,
    pub users: UserService,
    pub api_keys: ApiKeyService,
    /// External issuers' tokens for platform tokens (RFC 8693).
    pub exchange: crate::exchange::TokenExchange,
    pub jwks: std::sync::Arc<crate::keyring::Keyring>,
    /// Verifies the caller's token on every call that acts for someone.
    pub verifier: std::sync::Arc<Verifier>,
    pub events: somagent_common::infra::events::EventBus,
    /// The root of the service credentials: proves which service calls
    /// `IssueServiceToken`.
    pub issuer_key: ServiceIssuerKey,
}

/// A tenant id from a request. No tenant has one that does not parse, so it is answered
/// as any other tenant that does not exist.
fn tenant_id(id: &str) -> Result<TenantId, Status> {
    TenantId::parse(id).map_err(|_| crate::tenants::not_found().into())
}

fn tenant_message(t: Tenant) -> pb::Tenant {
    pb::Tenant {
        id: t.id.into(),
        slug: t.slug,
        display_name: t.display_name,
        status: t.status,
        created_at: rfc3339(t.created_at),
    }
}

fn user_message(u: User) -> pb::User {
    pb::User {
        id: u.id,
        tenant: u.tenant_id.into(),
        username: u.username,
        status: u.status,
        // The roles, and what was granted beside them.
        roles: u
            .roles
            .iter()
            .map(|r| r.as_str())
            .chain(
                u.capabilities
                    .iter()
                    .filter(|c| crate::users::GRANTABLE.contains(c))
                    .map(|c| c.as_str()),
            )
            .map(str::to_owned)
            .collect(),
        mfa_enabled: u.mfa_enabled,
        created_at: rfc3339(u.created_at),
    }
}

fn key_message(k: ApiKeyRecord) -> pb::ApiKey {
    pb::ApiKey {
        id: k.id,
        prefix: k.prefix,
        name: k.name,
        scopes: k.scopes.iter().map(|c| c.as_str().to_owned()).collect(),
        expires_at: k.expires_at.map(rfc3339).unwrap_or_default(),
        last_used_at: k.last_used_at.map(rfc3339).unwrap_or_default(),
        created_at: rfc3339(k.created_at),
    }
}

#[tonic::async_trait]
impl IdentityService for IdentityGrpc {
    async fn create_tenant(
        &self,
        request: Request<pb::CreateTenantRequest>,
    ) -> Result<Response<pb::Tenant>, Status> {
        let actor = caller(&request)?;
        let r = request.into_inner();
        let new = NewTenant {
            slug: r.slug,
            display_name: r.display_name,
            admin_username: r.admin_username,
            admin_password: r.admin_password,
        };
        Ok(Response::new(tenant_message(
            self.tenants.create(&actor, new).await?,
        )))
    }

    async fn get_tenant(
        &self,
        request: Request<pb::GetTenantRequest>,
    ) -> Result<Response<pb::Tenant>, Status> {
        let actor = caller(&request)?;
        let id = tenant_id(&request.get_ref().id)?;
        let tenant = self.tenants.get(&actor, &id).await?;
        Ok(Response::new(tenant_message(tenant)))
    }

    async fn list_tenants(
        &self,
        request: Request<pb::ListTenantsRequest>,
    ) -> Result<Response<pb::ListTenantsResponse>, Status> {
        let actor = caller(&request)?;
        let page = request.into_inner().page.unwrap_or_default();
        let size = PageSize::clamped(page.limit, MAX_PAGE);
        let (tenants, next) = self.tenants.list(&actor, &page.cursor, size).await?;
        Ok(Response::new(pb::ListTenantsResponse {
            tenants: tenants.into_iter().map(tenant_message).collect(),
            page: Some(PageInfo { next_cursor: next }),
        }))
    }

    async fn update_tenant(
        &self,
        request: Request<pb::UpdateTenantRequest>,
    ) -> Result<Response<pb::Tenant>, Status> {
        let actor = caller(&request)?;
        let r = request.into_inner();
        let change = TenantChange {
            display_name: r.display_name,
            status: r.status,
        };
        let Ok(id) = TenantId::parse(r.id) else {
            return Err(self.tenants.update_unknown(&actor, &change).into());
        };
        Ok(Response::new(tenant_message(
            self.tenants.update(&actor, &id, change).await?,
        )))
    }

    async fn delete_tenant(
        &self,
        request: Request<pb::DeleteTenantRequest>,
    ) -> Result<Response<pb::DeleteTenantResponse>, Status> {
        let actor = caller(&request)?;
        let id = tenant_id(&request.get_ref().id)?;
        self.tenants.delete(&actor, &id).await?;
        Ok(Response::new(pb::DeleteTenantResponse {}))
    }

    async fn create_user(
        &self,
        request: Request<pb::CreateUserRequest>,
    ) -> Result<Response<pb::User>, Status> {
        let actor = caller(&request)?;
        let r = request.into_inner();
        let new = NewUser {
            username: r.username,
            password: r.password,
            roles: r.roles,
        };
        Ok(Response::new(user_message(
            self.users.create(&actor, new).await?,
        )))
    }

    async fn get_user(
        &self,
        request: Request<pb::GetUserRequest>,
    ) -> Result<Response<pb::User>, Status> {
        let actor = caller(&request)?;
        let user = self.users.get(&actor, &request.get_ref().id).await?;
        Ok(Response::new(user_message(user)))
    }

    async fn list_users(
        &self,
        request: Request<pb::ListUsersRequest>,
    ) -> Result<Response<pb::ListUsersResponse>, Status> {
        let actor = caller(&request)?;
        let page = request.into_inner().page.unwrap_or_default();
        let size = PageSize::clamped(page.limit, MAX_PAGE);
        let (users, next) = self.users.list(&actor, &page.cursor, size).await?;
        Ok(Response::new(pb::ListUsersResponse {
            users: users.into_iter().map(user_message).collect(),
            page: Some(PageInfo { next_cursor: next }),
        }))
    }

    async fn update_user(
        &self,
        request: Request<pb::UpdateUserRequest>,
    ) -> Result<Response<pb::User>, Status> {
        let actor = caller(&request)?;
        let r = request.into_inner();
        let change = UserUpdate {
            status: r.status,
            roles: r.replace_roles.then_some(r.roles),
            password: r.password,
            current_password: Some(r.current_password).filter(|p| !p.is_empty()),
        };
        Ok(Response::new(user_message(
            self.users.update(&actor, &r.id, change).await?,
        )))
    }

    async fn delete_user(
        &self,
        request: Request<pb::DeleteUserRequest>,
    ) -> Result<Response<pb::DeleteUserResponse>, Status> {
        let actor = caller(&request)?;
        self.users.delete(&actor, &request.get_ref().id).await?;
        Ok(Response::new(pb::DeleteUserResponse {}))
    }

    async fn enroll_mfa(
        &self,
        request: Request<pb::EnrollMfaRequest>,
    ) -> Result<Response<pb::EnrollMfaResponse>, Status> {
        let actor = caller(&request)?;
        let r = request.get_ref();
        let enrolled = self
            .users
            .enroll_mfa(&actor, &r.user_id, &r.password)
            .await?;
        Ok(Response::new(pb::EnrollMfaResponse {
            secret: enrolled.secret,
            otpauth_uri: enrolled.otpauth_uri,
            recovery_codes: enrolled.recovery_codes,
        }))
    }

    async fn disable_mfa(
        &self,
        request: Request<pb::DisableMfaRequest>,
    ) -> Result<Response<pb::DisableMfaResponse>, Status> {
        let actor = caller(&request)?;
        let r = request.get_ref();
        self.users.disable_mfa(&actor, &r.password, &r.code).await?;
        Ok(Response::new(pb::DisableMfaResponse {}))
    }

    async fn verify_mfa(
        &self,
        request: Request<pb::VerifyMfaRequest>,
    ) -> Result<Response<pb::VerifyMfaResponse>, Status> {
        let actor = caller(&request)?;
        let r = request.get_ref();
        self.users.verify_mfa(&actor, &r.user_id, &r.code).await?;
        Ok(Response::new(pb::VerifyMfaResponse { enabled: true }))
    }

    async fn create_api_key(
        &self,
        request: Request<pb::CreateApiKeyRequest>,
    ) -> Result<Response<pb::CreateApiKeyResponse>, Status> {
        let actor = caller(&request)?;
        let r = request.into_inner();
        let new = NewApiKey {
            name: r.name,
            scopes: r.scopes,
            expires_at: r.expires_at,
            password: r.password,
        };
        let (record, secret) = self.api_keys.create(&actor, new).await?;
        Ok(Response::new(pb::CreateApiKeyResponse {
            key: Some(key_message(record)),
            secret,
        }))
    }

    async fn list_api_keys(
        &self,
        request: Request<pb::ListApiKeysRequest>,
    ) -> Result<Response<pb::ListApiKeysResponse>, Status> {
        let actor = caller(&request)?;
        let page = request.into_inner().page.unwrap_or_default();
        let size = PageSize::clamped(page.limit, MAX_PAGE);
        let (keys, next) = self.api_keys.list(&actor, &page.cursor, size).await?;
        Ok(Response::new(pb::ListApiKeysResponse {
            keys: keys.into_iter().map(key_message).collect(),
            page: Some(PageInfo { next_cursor: next }),
        }))
    }

    async fn revoke_api_key(
        &self,
        request: Request<pb::RevokeApiKeyRequest>,
    ) -> Result<Response<pb::RevokeApiKeyResponse>, Status> {
        let actor = caller(&request)?;
        self.api_keys.revoke(&actor, &request.get_ref().id).await?;
        Ok(Response::new(pb::RevokeApiKeyResponse {}))
    }

    async fn issue_token(
        &self,
        request: Request<pb::IssueTokenRequest>,
    ) -> Result<Response<pb::TokenResponse>, Status> {
        let r = request.into_inner();
        let grant = Grant {
            grant_type: r.grant_type,
            tenant: r.tenant,
            username: r.username,
            password: r.password,
            totp: r.totp,
            client_secret: r.client_secret,
            refresh_token: r.refresh_token,
        };
        let issued = self.tokens.issue(grant).await?;
        Ok(Response::new(token_message(issued)))
    }

    /// Revokes the login a refresh token belongs to; holding the token is the proof.
    async fn revoke_token(
        &self,
        request: Request<pb::RevokeTokenRequest>,
    ) -> Result<Response<pb::RevokeTokenResponse>, Status> {
        self.tokens.revoke_refresh(&request.get_ref().token).await?;
        Ok(Response::new(pb::RevokeTokenResponse {}))
    }

    /// A short-lived token for one of the platform's services calling another for a
    /// user. The caller proves which service it is with its own credential; the token
    /// is for the callee it names alone, with no more than the grants table lets that
    /// caller ask of that callee. The user is named by a valid token of theirs or by
    /// tenant + subject.
    async fn issue_service_token(
        &self,
        request: Request<pb::IssueServiceTokenRequest>,
    ) -> Result<Response<pb::TokenResponse>, Status> {
        let presented = presented_service_key(&request);
        let r = request.into_inner();
        self.verify_service(&r.service, &presented)?;
        if r.callee.is_empty() {
            return Err(
                ApiError::validation("callee", "names the service the token is for").into(),
            );
        }
        let allowed = service_grants::allowed(&r.service, &r.callee).ok_or_else(|| {
            Status::permission_denied(if service_grants::acts_for_users(&r.service) {
                format!(
                    "the `{}` service may not call `{}` for a user",
                    r.service, r.callee
                )
            } else {
                format!("the `{}` service may not act for users", r.service)
            })
        })?;
        let (tenant, subject, held) = if r.on_behalf_of_token.is_empty() {
            if r.tenant.is_empty() || r.subject.is_empty() {
                return Err(ApiError::validation(
                    "on_behalf_of_token",
                    "name the user by their token or by tenant and subject",
                )
                .into());
            }
            // A tenant named by something that is not a tenant id is no active tenant:
            // answered, once the capabilities are settled, like any other.
            (TenantId::parse(r.tenant).ok(), r.subject, None)
        } else {
            let p = self
                .verifier
                .verify(&r.on_behalf_of_token)
                .await
                .map_err(|e| Status::from(ApiError::from(e)))?;
            // Never more than the token it stands for (an API key's narrowed scopes).
            let held: Vec<Capability> = p.capabilities.iter().copied().collect();
            (Some(p.tenant), p.subject, Some(held))
        };
        let asked: Vec<Capability> = r
            .capabilities
            .iter()
            .map(|c| {
                Capability::parse(c).ok_or_else(|| {
                    ApiError::validation("capabilities", format!("unknown capability `{c}`"))
                })
            })
            .collect::<Result<_, _>>()?;
        // Like an OAuth scope (RFC 6749 §3.3): what is asked for beyond what may be
        // given is left out, and the response's `scope` says what was.
        let narrow: Vec<Capability> = allowed
            .iter()
            .copied()
            .filter(|c| asked.is_empty() || asked.contains(c))
            .filter(|c| held.as_ref().is_none_or(|h| h.contains(c)))
            .collect();
        if narrow.is_empty() {
            return Err(Status::permission_denied(format!(
                "the `{}` service may ask `{}` only for: {}",
                r.service,
                r.callee,
                allowed
                    .iter()
                    .map(|c| c.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        let tenant = tenant.ok_or_else(crate::tokens::cannot_act_for)?;
        let acting = Acting {
            service: &r.service,
            callee: &r.callee,
        };
        let issued = self
            .tokens
            .for_service(acting, &tenant, &subject, &narrow)
            .await?;
        Ok(Response::new(token_message(issued)))
    }

    async fn list_tenant_admins(
        &self,
        request: Request<pb::ListTenantAdminsRequest>,
    ) -> Result<Response<pb::ListTenantAdminsResponse>, Status> {
        let presented = presented_service_key(&request);
        let r = request.into_inner();
        self.verify_service(&r.service, &presented)?;
        if !service_grants::lists_admins(&r.service) {
            return Err(Status::permission_denied(format!(
                "the `{}` service may not list a tenant's administrators",
                r.service
            )));
        }
        let Ok(tenant) = TenantId::parse(r.tenant) else {
            return Ok(Response::new(pb::ListTenantAdminsResponse::default()));
        };
        let user_ids = self.users.admins(&tenant, 100).await?;
        Ok(Response::new(pb::ListTenantAdminsResponse { user_ids }))
    }

    /// An external issuer's access token for a platform token: the token is the proof,
    /// verified here whoever forwards it.
    async fn exchange_token(
        &self,
        request: Request<pb::ExchangeTokenRequest>,
    ) -> Result<Response<pb::TokenResponse>, Status> {
        let r = request.into_inner();
        let issued = self
            .exchange
            .exchange(&r.subject_token, &r.subject_token_type)
            .await?;
        Ok(Response::new(token_message(issued)))
    }

    async fn rotate_signing_key(
        &self,
        request: Request<pb::RotateSigningKeyRequest>,
    ) -> Result<Response<pb::RotateSigningKeyResponse>, Status> {
        let actor = caller(&request)?;
        actor.require(somagent_common::auth::Capability::PlatformAdmin)?;
        let kid = self
            .jwks
            .rotate()
            .await
            .map_err(|e| Status::from(somagent_common::error::ApiError::internal(e)))?;
        crate::audit::record(
            &self.events,
            &actor,
            &actor.tenant,
            "signing_key",
            &kid,
            "rotate",
        )
        .await;
        Ok(Response::new(pb::RotateSigningKeyResponse { kid }))
    }

    async fn get_jwks(
        &self,
        _: Request<pb::GetJwksRequest>,
    ) -> Result<Response<pb::GetJwksResponse>, Status> {
        Ok(Response::new(pb::GetJwksResponse {
            jwks_json: self.jwks.jwks().to_string(),
        }))
    }
}

/// The service credential a request presents, if any.
fn presented_service_key<T>(request: &Request<T>) -> String {
    request
        .metadata()
        .get(SERVICE_KEY_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

impl IdentityGrpc {
    /// Checks that `presented` is the credential of the platform service `service`.
    fn verify_service(&self, service: &str, presented: &str) -> Result<(), Status> {
        if presented.is_empty() {
            return Err(Status::unauthenticated(
                "this needs the calling service's own credential",
            ));
        }
        if !somagent_common::service::SERVICES
            .iter()
            .any(|s| s.name == service)
        {
            return Err(
                ApiError::validation("service", "is not one of the platform's services").into(),
            );
        }
        if !self.issuer_key.verifies(service, presented) {
            return Err(Status::unauthenticated(format!(
                "the credential presented is not the `{service}` service's"
            )));
        }
        Ok(())
    }
}

/// An issued token as the token endpoint answers it (RFC 6749 §5.1).
fn token_message(issued: crate::tokens::IssuedToken) -> pb::TokenResponse {
    pb::TokenResponse {
        access_token: issued.access_token,
        token_type: "Bearer".into(),
        expires_in: issued.expires_in as u64,
        refresh_token: issued.refresh_token.unwrap_or_default(),
        scope: issued.scope,
    }
}
