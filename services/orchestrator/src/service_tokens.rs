//! Tokens for acting on a user's behalf from workflow activities, which may run long
//! after the user's own token expired: short-lived service tokens from identity,
//! narrowed to what the user's request could do, cached until shortly before expiry.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use somagent_common::auth::ServiceKey;
use somagent_common::proto::identity::v1 as pb;
use somagent_common::proto::identity::v1::identity_service_client::IdentityServiceClient;

use crate::workflow::ActivityError;

type Key = (String, String, Vec<String>);

pub struct ServiceTokens {
    identity: IdentityServiceClient<tonic::transport::Channel>,
    key: ServiceKey,
    cached: Mutex<HashMap<Key, (Instant, String)>>,
}

impl ServiceTokens {
    pub fn new(
        identity: IdentityServiceClient<tonic::transport::Channel>,
        key: ServiceKey,
    ) -> Self {
        Self {
            identity,
            key,
            cached: Mutex::default(),
        }
    }

    /// A token for `subject` of `tenant` with at most `capabilities`.
    pub async fn for_user(
        &self,
        tenant: &str,
        subject: &str,
        capabilities: &[String],
    ) -> Result<String, ActivityError> {
        let key = (tenant.to_owned(), subject.to_owned(), capabilities.to_vec());
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
            service: "orchestrator".into(),
            tenant: tenant.to_owned(),
            subject: subject.to_owned(),
            capabilities: capabilities.to_vec(),
            ..Default::default()
        };
        let issued = self
            .identity
            .clone()
            .issue_service_token(self.key.attach(tonic::Request::new(request)))
            .await
            .map_err(|status| match status.code() {
                tonic::Code::Unavailable | tonic::Code::DeadlineExceeded => {
                    ActivityError::retryable("unavailable", "identity cannot be reached")
                }
                _ => ActivityError::fatal(
                    "forbidden",
                    format!("the user cannot be acted for: {}", status.message()),
                ),
            })?
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
