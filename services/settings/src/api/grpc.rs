//! Settings' gRPC surface: mapping only. Every call verifies the token it carries and
//! reads and writes the caller's tenant alone (and the caller's own preferences).

use serde_json::Value;
use somagent_common::auth::grpc::caller;
use somagent_common::auth::{Capability, Principal};
use somagent_common::error::ApiError;
use somagent_common::proto::settings::v1 as pb;
use somagent_common::proto::settings::v1::settings_service_server::SettingsService;
use tonic::{Request, Response, Status};

use crate::secrets::{SecretInfo, SecretStore};
use crate::store::{Flag, Scope, SettingsStore, Stored, Version};
use somagent_common::error::ErrorCode;

/// The most a patch may be.
const MAX_PATCH_BYTES: usize = 64 * 1024;

pub struct SettingsGrpc {
    pub store: SettingsStore,
    pub secrets: SecretStore,
}

/// The services that read tenants' secrets (a webhook's signing secret, SMTP
/// credentials), acting for a user of the tenant.
const SECRET_READERS: &[&str] = &["service:notification"];

fn secret_info(s: SecretInfo) -> pb::SecretInfo {
    pb::SecretInfo {
        name: s.name,
        version: s.version,
        changed_by: s.changed_by,
        changed_at_ms: s.changed_at_ms,
    }
}

fn settings_message((resolved, stored): (Value, Stored)) -> pb::Settings {
    pb::Settings {
        json: resolved.to_string(),
        version: stored.version,
        updated_at_ms: stored.changed_at_ms,
        updated_by: stored.changed_by,
    }
}

fn version_message(v: Version) -> pb::Version {
    pb::Version {
        version: v.version,
        json: v.document.to_string(),
        previous_json: v.previous.to_string(),
        changed_by: v.changed_by,
        changed_at_ms: v.changed_at_ms,
    }
}

fn flag_message(f: Flag) -> pb::Flag {
    pb::Flag {
        name: f.name,
        enabled: f.enabled,
        source: f.source.into(),
    }
}

fn patch_of(r: &pb::PatchRequest) -> Result<Value, ApiError> {
    if r.patch_json.len() > MAX_PATCH_BYTES {
        return Err(ApiError::validation("patch", "is at most 64 KiB"));
    }
    serde_json::from_str(&r.patch_json)
        .map_err(|e| ApiError::validation("patch", format!("is not JSON: {e}")))
}

/// A person's own preferences: only a user's own token (or a service acting for them)
/// reads or changes them.
fn own(principal: &Principal) -> Scope {
    Scope::User(principal.subject.clone())
}

#[tonic::async_trait]
impl SettingsService for SettingsGrpc {
    async fn get_settings(
        &self,
        request: Request<pb::GetSettingsRequest>,
    ) -> Result<Response<pb::Settings>, Status> {
        let principal = caller(&request)?;
        principal.require(Capability::SettingsRead)?;
        let found = self
            .store
            .resolved(&principal.tenant, &Scope::Tenant)
            .await
            .map_err(ApiError::internal)?;
        Ok(Response::new(settings_message(found)))
    }

    async fn patch_settings(
        &self,
        request: Request<pb::PatchRequest>,
    ) -> Result<Response<pb::Settings>, Status> {
        let principal = caller(&request)?;
        principal.require(Capability::SettingsWrite)?;
        let r = request.into_inner();
        let patch = patch_of(&r)?;
        let done = self
            .store
            .patch(&principal, &Scope::Tenant, &patch, r.if_version)
            .await?;
        Ok(Response::new(settings_message(done)))
    }

    async fn list_versions(
        &self,
        request: Request<pb::ListVersionsRequest>,
    ) -> Result<Response<pb::ListVersionsResponse>, Status> {
        let principal = caller(&request)?;
        principal.require(Capability::SettingsRead)?;
        let limit = match request.into_inner().limit {
            0 => 50,
            n => n,
        };
        let versions = self
            .store
            .versions(&principal.tenant, &Scope::Tenant, limit)
            .await
            .map_err(ApiError::internal)?;
        Ok(Response::new(pb::ListVersionsResponse {
            versions: versions.into_iter().map(version_message).collect(),
        }))
    }

    async fn get_version(
        &self,
        request: Request<pb::GetVersionRequest>,
    ) -> Result<Response<pb::Version>, Status> {
        let principal = caller(&request)?;
        principal.require(Capability::SettingsRead)?;
        let version = self
            .store
            .version(
                &principal.tenant,
                &Scope::Tenant,
                request.into_inner().version,
            )
            .await
            .map_err(ApiError::internal)?
            .ok_or_else(|| ApiError::not_found("settings version"))?;
        Ok(Response::new(version_message(version)))
    }

    async fn list_flags(
        &self,
        request: Request<pb::ListFlagsRequest>,
    ) -> Result<Response<pb::ListFlagsResponse>, Status> {
        let principal = caller(&request)?;
        principal.require(Capability::SettingsRead)?;
        let flags = self
            .store
            .flags(&principal.tenant)
            .await
            .map_err(ApiError::internal)?;
        Ok(Response::new(pb::ListFlagsResponse {
            flags: flags.into_iter().map(flag_message).collect(),
        }))
    }

    async fn get_flag(
        &self,
        request: Request<pb::GetFlagRequest>,
    ) -> Result<Response<pb::Flag>, Status> {
        let principal = caller(&request)?;
        principal.require(Capability::SettingsRead)?;
        let flag = self
            .store
            .flag(&principal.tenant, &request.into_inner().name)
            .await
            .map_err(ApiError::internal)?;
        Ok(Response::new(flag_message(flag)))
    }

    async fn put_flag(
        &self,
        request: Request<pb::PutFlagRequest>,
    ) -> Result<Response<pb::Flag>, Status> {
        let principal = caller(&request)?;
        let r = request.into_inner();
        principal.require(if r.platform {
            Capability::PlatformAdmin
        } else {
            Capability::SettingsWrite
        })?;
        let enabled = (!r.clear).then_some(r.enabled);
        let flag = self
            .store
            .put_flag(&principal, &r.name, enabled, r.platform)
            .await?;
        Ok(Response::new(flag_message(flag)))
    }

    async fn get_preferences(
        &self,
        request: Request<pb::GetPreferencesRequest>,
    ) -> Result<Response<pb::Settings>, Status> {
        let principal = caller(&request)?;
        principal.require(Capability::SettingsRead)?;
        let found = self
            .store
            .resolved(&principal.tenant, &own(&principal))
            .await
            .map_err(ApiError::internal)?;
        Ok(Response::new(settings_message(found)))
    }

    async fn patch_preferences(
        &self,
        request: Request<pb::PatchRequest>,
    ) -> Result<Response<pb::Settings>, Status> {
        let principal = caller(&request)?;
        principal.require(Capability::SettingsRead)?;
        let r = request.into_inner();
        let patch = patch_of(&r)?;
        let done = self
            .store
            .patch(&principal, &own(&principal), &patch, r.if_version)
            .await?;
        Ok(Response::new(settings_message(done)))
    }

    async fn put_secret(
        &self,
        request: Request<pb::PutSecretRequest>,
    ) -> Result<Response<pb::SecretInfo>, Status> {
        let principal = caller(&request)?;
        principal.require(Capability::SettingsWrite)?;
        let r = request.into_inner();
        let value = zeroize::Zeroizing::new(r.value);
        let info = self.secrets.put(&principal, &r.name, &value).await?;
        Ok(Response::new(secret_info(info)))
    }

    async fn delete_secret(
        &self,
        request: Request<pb::DeleteSecretRequest>,
    ) -> Result<Response<pb::DeleteSecretResponse>, Status> {
        let principal = caller(&request)?;
        principal.require(Capability::SettingsWrite)?;
        let name = request.into_inner().name;
        if !self.secrets.delete(&principal, &name).await? {
            return Err(ApiError::not_found("secret").into());
        }
        Ok(Response::new(pb::DeleteSecretResponse {}))
    }

    async fn list_secrets(
        &self,
        request: Request<pb::ListSecretsRequest>,
    ) -> Result<Response<pb::ListSecretsResponse>, Status> {
        let principal = caller(&request)?;
        principal.require(Capability::SettingsRead)?;
        let secrets = self
            .secrets
            .list(&principal.tenant)
            .await
            .map_err(ApiError::internal)?;
        Ok(Response::new(pb::ListSecretsResponse {
            secrets: secrets.into_iter().map(secret_info).collect(),
        }))
    }

    async fn read_secret(
        &self,
        request: Request<pb::ReadSecretRequest>,
    ) -> Result<Response<pb::SecretValue>, Status> {
        let principal = caller(&request)?;
        let reader = principal
            .actor
            .as_deref()
            .is_some_and(|actor| SECRET_READERS.contains(&actor));
        if !reader {
            return Err(ApiError::new(
                ErrorCode::Forbidden,
                "secrets are read by the services that use them, never through the API",
            )
            .into());
        }
        principal.require(Capability::SettingsRead)?;
        let name = request.into_inner().name;
        crate::secrets::check_name(&name)?;
        let (value, version) = self
            .secrets
            .read(&principal.tenant, &name)
            .await?
            .ok_or_else(|| ApiError::not_found("secret"))?;
        Ok(Response::new(pb::SecretValue {
            value: value.to_vec(),
            version,
        }))
    }
}
