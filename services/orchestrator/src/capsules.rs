//! The capsule a session runs as: resolved through the capsule repository (which
//! verifies its attestation and signature) when the session opens and again before
//! every turn, acting for the user with a token for capsule-repo alone.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use somagent_common::auth::grpc::with_bearer;
use somagent_common::auth::{Principal, ServiceTokens};
use somagent_common::capsule::Definition;
use somagent_common::error::ApiError;
use somagent_common::proto::capsule::v1 as pb;
use somagent_common::proto::capsule::v1::capsule_service_client::CapsuleServiceClient;
use somagent_common::service::CAPSULE_REPO;
use somagent_common::tenant::TenantId;

/// A verified capsule version, as a turn runs it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CapsuleRun {
    pub version: String,
    pub attestation_hash: String,
    pub definition: Definition,
}

/// The session metadata key naming the environment whose installation a session runs
/// (`prod` when absent).
pub const ENVIRONMENT_KEY: &str = "capsule_environment";

#[derive(Clone)]
pub struct Capsules {
    pub client: CapsuleServiceClient<somagent_common::grpc_channel::Channel>,
    pub tokens: Arc<ServiceTokens>,
}

impl Capsules {
    /// The verified version of `capsule` the caller's tenant runs in `environment`;
    /// counted as a run when `count_run`.
    pub async fn resolve(
        &self,
        principal: &Principal,
        capsule: &str,
        environment: &str,
        count_run: bool,
    ) -> Result<CapsuleRun, ApiError> {
        let capabilities: Vec<String> = principal
            .capabilities
            .iter()
            .map(|c| c.as_str().to_owned())
            .collect();
        self.resolve_for(
            &principal.tenant,
            &principal.subject,
            &capabilities,
            capsule,
            environment,
            count_run,
        )
        .await
    }

    /// [`Capsules::resolve`] for a user known by tenant, id and capabilities (a
    /// workflow acting for them).
    pub async fn resolve_for(
        &self,
        tenant: &TenantId,
        subject: &str,
        capabilities: &[String],
        capsule: &str,
        environment: &str,
        count_run: bool,
    ) -> Result<CapsuleRun, ApiError> {
        let token = self
            .tokens
            .for_user(&CAPSULE_REPO, tenant, subject, capabilities)
            .await?;
        let request = pb::ResolveRequest {
            id: capsule.to_owned(),
            environment: environment.to_owned(),
            input_json: String::new(),
            count_run,
        };
        let resolved = self
            .client
            .clone()
            .resolve(with_bearer(&token, tonic::Request::new(request)))
            .await?
            .into_inner();
        let definition = serde_json::from_str(&resolved.definition_json)
            .ok()
            .and_then(|v| Definition::parse(&v).ok())
            .ok_or_else(|| {
                ApiError::internal(anyhow::anyhow!(
                    "capsule-repo answered a definition that does not read"
                ))
            })?;
        Ok(CapsuleRun {
            version: resolved.version,
            attestation_hash: resolved.attestation_hash,
            definition,
        })
    }
}
