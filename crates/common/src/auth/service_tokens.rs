//! Tokens with which a service calls another for a user: short-lived service tokens
//! from identity, each for one callee, asked for with this service's own credential and
//! cached until shortly before they expire.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::ServiceCredential;
use crate::proto::identity::v1 as pb;
use crate::proto::identity::v1::identity_service_client::IdentityServiceClient;
use crate::service::ServiceSpec;
use crate::tenant::TenantId;

/// (callee, tenant, subject, capabilities asked for)
type Key = (&'static str, TenantId, String, Vec<String>);

pub struct ServiceTokens {
    identity: IdentityServiceClient<crate::grpc_channel::Channel>,
    caller: &'static str,
    credential: ServiceCredential,
    cached: Mutex<HashMap<Key, (Instant, String)>>,
}

impl ServiceTokens {
    /// Tokens for the service `caller`, which proves itself with `credential`.
    pub fn new(
        identity: IdentityServiceClient<crate::grpc_channel::Channel>,
        caller: &ServiceSpec,
        credential: ServiceCredential,
    ) -> Self {
        Self {
            identity,
            caller: caller.name,
            credential,
            cached: Mutex::default(),
        }
    }

    /// Tokens for the service `caller` of this platform: identity at its configured
    /// address, asked with the service's own credential.
    pub fn connect(
        config: &crate::config::CommonConfig,
        caller: &ServiceSpec,
    ) -> anyhow::Result<Self> {
        let identity = IdentityServiceClient::new(
            config.channel(&crate::service::IDENTITY, Some(Duration::from_secs(10)))?,
        );
        Ok(Self::new(
            identity,
            caller,
            ServiceCredential::load(&config.data_dir, caller)?,
        ))
    }

    /// A token for calling `callee` as `subject` of `tenant`, with at most
    /// `capabilities` (identity narrows them further to what this service may ask of
    /// that callee and what the user holds now).
    pub async fn for_user(
        &self,
        callee: &ServiceSpec,
        tenant: &TenantId,
        subject: &str,
        capabilities: &[String],
    ) -> Result<String, tonic::Status> {
        let key = (
            callee.name,
            tenant.clone(),
            subject.to_owned(),
            capabilities.to_vec(),
        );
        if let Some((until, token)) = self
            .cached
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
            && Instant::now() < *until
        {
            return Ok(token.clone());
        }
        let request = pb::IssueServiceTokenRequest {
            service: self.caller.into(),
            callee: callee.name.into(),
            tenant: tenant.as_str().to_owned(),
            subject: subject.to_owned(),
            capabilities: capabilities.to_vec(),
            ..Default::default()
        };
        let issued = self
            .identity
            .clone()
            .issue_service_token(self.credential.attach(tonic::Request::new(request)))
            .await?
            .into_inner();
        let lifetime =
            Duration::from_secs(issued.expires_in).saturating_sub(Duration::from_secs(60));
        let mut cached = self.cached.lock().unwrap_or_else(|e| e.into_inner());
        if cached.len() > 10_000 {
            cached.clear();
        }
        cached.insert(
            key,
            (Instant::now() + lifetime, issued.access_token.clone()),
        );
        Ok(issued.access_token)
    }
}
