//! Who administers a tenant, as identity says, asked with this service's own
//! credential and kept a minute: the administrators' notifications are emailed to each
//! of them as their own preferences say.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use somagent_common::auth::ServiceCredential;
use somagent_common::proto::identity::v1 as pb;
use somagent_common::proto::identity::v1::identity_service_client::IdentityServiceClient;
use somagent_common::tenant::TenantId;

const FRESH_FOR: Duration = Duration::from_secs(60);

/// A tenant's administrators, and when identity said so.
type Kept = (Instant, Arc<Vec<String>>);

pub struct TenantAdmins {
    identity: IdentityServiceClient<somagent_common::grpc_channel::Channel>,
    credential: ServiceCredential,
    cached: Mutex<HashMap<TenantId, Kept>>,
}

impl TenantAdmins {
    pub fn new(
        identity: IdentityServiceClient<somagent_common::grpc_channel::Channel>,
        credential: ServiceCredential,
    ) -> Self {
        Self {
            identity,
            credential,
            cached: Mutex::default(),
        }
    }

    /// The ids of the tenant's active administrators.
    pub async fn of(&self, tenant: &TenantId) -> Result<Arc<Vec<String>>, tonic::Status> {
        if let Some((at, ids)) = self
            .cached
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(tenant)
            && at.elapsed() < FRESH_FOR
        {
            return Ok(ids.clone());
        }
        let request = pb::ListTenantAdminsRequest {
            service: crate::SPEC.name.to_owned(),
            tenant: tenant.as_str().to_owned(),
        };
        let ids = Arc::new(
            self.identity
                .clone()
                .list_tenant_admins(self.credential.attach(tonic::Request::new(request)))
                .await?
                .into_inner()
                .user_ids,
        );
        let mut cached = self.cached.lock().unwrap_or_else(|e| e.into_inner());
        if cached.len() > 10_000 {
            cached.clear();
        }
        cached.insert(tenant.clone(), (Instant::now(), ids.clone()));
        Ok(ids)
    }
}
