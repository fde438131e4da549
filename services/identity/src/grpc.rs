//! identity's gRPC surface. Tokens, the JWKS, tenants, users, MFA and API keys are
//! served; the other operations
//! of the contract arrive with the rest of the identity issue and answer
//! `UNIMPLEMENTED` until then, never a made-up result.

use somagent_common::proto::identity::v1 as pb;
use somagent_common::proto::identity::v1::identity_service_server::IdentityService;
use tonic::{Request, Response, Status};

use somagent_common::auth::Verifier;
use somagent_common::auth::grpc::principal_of;

use crate::api_keys::{ApiKeyService, NewApiKey};
use crate::store::Tenant;
use crate::store::{ApiKeyRecord, User};
use crate::tenants::{NewTenant, TenantService};
use crate::tokens::{Grant, TokenService};
use crate::users::{NewUser, UserService};

pub struct IdentityGrpc {
    pub tokens: TokenService,
    pub tenants: TenantService,
    pub users: UserService,
    pub api_keys: ApiKeyService,
    pub jwks: std::sync::Arc<crate::keyring::Keyring>,
    /// Verifies the caller's token on every call that acts for someone.
    pub verifier: std::sync::Arc<Verifier>,
    pub events: somagent_common::infra::events::EventBus,
}

fn tenant_message(t: Tenant) -> pb::Tenant {
    pb::Tenant {
        id: t.id,
        slug: t.slug,
        display_name: t.display_name,
        status: t.status,
        created_at: rfc3339(t.created_at),
    }
}

fn user_message(u: User) -> pb::User {
    pb::User {
        id: u.id,
        tenant: u.tenant_id,
        username: u.username,
        status: u.status,
        roles: u.roles.iter().map(|r| r.as_str().to_owned()).collect(),
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

fn rfc3339(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

fn not_built(operation: &str) -> Status {
    Status::unimplemented(format!("identity.{operation} is not available yet"))
}

#[tonic::async_trait]
impl IdentityService for IdentityGrpc {
    async fn create_tenant(
        &self,
        request: Request<pb::CreateTenantRequest>,
    ) -> Result<Response<pb::Tenant>, Status> {
        let actor = principal_of(&self.verifier, &request).await?;
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
        let actor = principal_of(&self.verifier, &request).await?;
        let tenant = self.tenants.get(&actor, &request.get_ref().id).await?;
        Ok(Response::new(tenant_message(tenant)))
    }

    async fn list_tenants(
        &self,
        request: Request<pb::ListTenantsRequest>,
    ) -> Result<Response<pb::ListTenantsResponse>, Status> {
        let actor = principal_of(&self.verifier, &request).await?;
        let page = request.into_inner().page.unwrap_or_default();
        let (tenants, next) = self.tenants.list(&actor, &page.cursor, page.limit).await?;
        Ok(Response::new(pb::ListTenantsResponse {
            tenants: tenants.into_iter().map(tenant_message).collect(),
            page: Some(somagent_common::proto::common::v1::PageInfo { next_cursor: next }),
        }))
    }

    async fn update_tenant(
        &self,
        _: Request<pb::UpdateTenantRequest>,
    ) -> Result<Response<pb::Tenant>, Status> {
        Err(not_built("update_tenant"))
    }

    async fn delete_tenant(
        &self,
        _: Request<pb::DeleteTenantRequest>,
    ) -> Result<Response<pb::DeleteTenantResponse>, Status> {
        Err(not_built("delete_tenant"))
    }

    async fn create_user(
        &self,
        request: Request<pb::CreateUserRequest>,
    ) -> Result<Response<pb::User>, Status> {
        let actor = principal_of(&self.verifier, &request).await?;
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
        let actor = principal_of(&self.verifier, &request).await?;
        let user = self.users.get(&actor, &request.get_ref().id).await?;
        Ok(Response::new(user_message(user)))
    }

    async fn list_users(
        &self,
        request: Request<pb::ListUsersRequest>,
    ) -> Result<Response<pb::ListUsersResponse>, Status> {
        let actor = principal_of(&self.verifier, &request).await?;
        let page = request.into_inner().page.unwrap_or_default();
        let (users, next) = self.users.list(&actor, &page.cursor, page.limit).await?;
        Ok(Response::new(pb::ListUsersResponse {
            users: users.into_iter().map(user_message).collect(),
            page: Some(somagent_common::proto::common::v1::PageInfo { next_cursor: next }),
        }))
    }

    async fn update_user(
        &self,
        _: Request<pb::UpdateUserRequest>,
    ) -> Result<Response<pb::User>, Status> {
        Err(not_built("update_user"))
    }

    async fn delete_user(
        &self,
        _: Request<pb::DeleteUserRequest>,
    ) -> Result<Response<pb::DeleteUserResponse>, Status> {
        Err(not_built("delete_user"))
    }

    async fn enroll_mfa(
        &self,
        request: Request<pb::EnrollMfaRequest>,
    ) -> Result<Response<pb::EnrollMfaResponse>, Status> {
        let actor = principal_of(&self.verifier, &request).await?;
        let (secret, otpauth_uri) = self
            .users
            .enroll_mfa(&actor, &request.get_ref().user_id)
            .await?;
        Ok(Response::new(pb::EnrollMfaResponse {
            secret,
            otpauth_uri,
        }))
    }

    async fn verify_mfa(
        &self,
        request: Request<pb::VerifyMfaRequest>,
    ) -> Result<Response<pb::VerifyMfaResponse>, Status> {
        let actor = principal_of(&self.verifier, &request).await?;
        let r = request.get_ref();
        self.users.verify_mfa(&actor, &r.user_id, &r.code).await?;
        Ok(Response::new(pb::VerifyMfaResponse { enabled: true }))
    }

    async fn create_api_key(
        &self,
        request: Request<pb::CreateApiKeyRequest>,
    ) -> Result<Response<pb::CreateApiKeyResponse>, Status> {
        let actor = principal_of(&self.verifier, &request).await?;
        let r = request.into_inner();
        let new = NewApiKey {
            name: r.name,
            scopes: r.scopes,
            expires_at: r.expires_at,
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
        let actor = principal_of(&self.verifier, &request).await?;
        let page = request.into_inner().page.unwrap_or_default();
        let (keys, next) = self.api_keys.list(&actor, &page.cursor, page.limit).await?;
        Ok(Response::new(pb::ListApiKeysResponse {
            keys: keys.into_iter().map(key_message).collect(),
            page: Some(somagent_common::proto::common::v1::PageInfo { next_cursor: next }),
        }))
    }

    async fn revoke_api_key(
        &self,
        request: Request<pb::RevokeApiKeyRequest>,
    ) -> Result<Response<pb::RevokeApiKeyResponse>, Status> {
        let actor = principal_of(&self.verifier, &request).await?;
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
        Ok(Response::new(pb::TokenResponse {
            access_token: issued.access_token,
            token_type: "Bearer".into(),
            expires_in: issued.expires_in as u64,
            refresh_token: issued.refresh_token.unwrap_or_default(),
            scope: issued.scope,
        }))
    }

    async fn verify_token(
        &self,
        _: Request<pb::VerifyTokenRequest>,
    ) -> Result<Response<pb::Principal>, Status> {
        Err(not_built("verify_token"))
    }

    /// Revokes the login a refresh token belongs to; holding the token is the proof.
    async fn revoke_token(
        &self,
        request: Request<pb::RevokeTokenRequest>,
    ) -> Result<Response<pb::RevokeTokenResponse>, Status> {
        self.tokens.revoke_refresh(&request.get_ref().token).await?;
        Ok(Response::new(pb::RevokeTokenResponse {}))
    }

    async fn issue_service_token(
        &self,
        _: Request<pb::IssueServiceTokenRequest>,
    ) -> Result<Response<pb::TokenResponse>, Status> {
        Err(not_built("issue_service_token"))
    }

    async fn rotate_signing_key(
        &self,
        request: Request<pb::RotateSigningKeyRequest>,
    ) -> Result<Response<pb::RotateSigningKeyResponse>, Status> {
        let actor = principal_of(&self.verifier, &request).await?;
        actor.require(somagent_common::auth::Capability::PlatformAdmin)?;
        let kid = self
            .jwks
            .rotate()
            .await
            .map_err(|e| Status::from(somagent_common::error::ApiError::internal(e)))?;
        crate::audit::record(
            &self.events,
            &actor,
            actor.tenant.as_str(),
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
