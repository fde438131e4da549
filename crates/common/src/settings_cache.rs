//! Tenant settings and users' preferences as the services read them: one cached copy
//! per tenant (and per user), fetched from the settings service with a service token
//! acting for the user who asked (or whose preferences they are), and dropped when
//! `settings.updated` says the tenant's changed. No service keeps a copy
//! of its own: a change takes effect on the next read, without a restart.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::auth::grpc::with_bearer;
use crate::auth::{Capability, ServiceTokens};
use crate::error::ApiError;
use crate::infra::events::{ConsumeOptions, Delivery, EventBus, consume, topics};
use crate::proto::settings::v1 as pb;
use crate::proto::settings::v1::settings_service_client::SettingsServiceClient;
use crate::service::SETTINGS;
use crate::tenant::TenantId;

/// Longest a copy is used without an announcement (one missed while the bus was away).
const FRESH_FOR: Duration = Duration::from_secs(300);

/// A tenant's settings (no user) or one user's preferences.
type Key = (TenantId, Option<String>);

pub struct SettingsCache {
    client: SettingsServiceClient<crate::grpc_channel::Channel>,
    tokens: Arc<ServiceTokens>,
    cached: Mutex<HashMap<Key, (Instant, Arc<Value>)>>,
}

impl SettingsCache {
    pub fn new(
        client: SettingsServiceClient<crate::grpc_channel::Channel>,
        tokens: Arc<ServiceTokens>,
    ) -> Arc<Self> {
        Arc::new(Self {
            client,
            tokens,
            cached: Mutex::default(),
        })
    }

    fn cached(&self) -> std::sync::MutexGuard<'_, HashMap<Key, (Instant, Arc<Value>)>> {
        self.cached.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn fresh(&self, key: &Key) -> Option<Arc<Value>> {
        self.cached()
            .get(key)
            .filter(|(at, _)| at.elapsed() < FRESH_FOR)
            .map(|(_, value)| value.clone())
    }

    fn keep(&self, key: Key, json: &str) -> Result<Arc<Value>, ApiError> {
        let value: Value = serde_json::from_str(json).map_err(ApiError::internal)?;
        let value = Arc::new(value);
        let mut cached = self.cached();
        if cached.len() > 10_000 {
            cached.clear();
        }
        cached.insert(key, (Instant::now(), value.clone()));
        Ok(value)
    }

    async fn token(&self, tenant: &TenantId, subject: &str) -> Result<String, ApiError> {
        self.tokens
            .for_user(
                &SETTINGS,
                tenant,
                subject,
                &[Capability::SettingsRead.as_str().to_owned()],
            )
            .await
            .map_err(ApiError::from)
    }

    /// The tenant's settings, defaults filled in, read for `subject` of it.
    pub async fn tenant(&self, tenant: &TenantId, subject: &str) -> Result<Arc<Value>, ApiError> {
        let key = (tenant.clone(), None);
        if let Some(value) = self.fresh(&key) {
            return Ok(value);
        }
        let token = self.token(tenant, subject).await?;
        let answer = self
            .client
            .clone()
            .get_settings(with_bearer(
                &token,
                tonic::Request::new(pb::GetSettingsRequest {}),
            ))
            .await
            .map_err(ApiError::from)?
            .into_inner();
        self.keep(key, &answer.json)
    }

    /// `user`'s own preferences, defaults filled in, read acting for them.
    pub async fn preferences(&self, tenant: &TenantId, user: &str) -> Result<Arc<Value>, ApiError> {
        let key = (tenant.clone(), Some(user.to_owned()));
        if let Some(value) = self.fresh(&key) {
            return Ok(value);
        }
        let token = self.token(tenant, user).await?;
        let answer = self
            .client
            .clone()
            .get_preferences(with_bearer(
                &token,
                tonic::Request::new(pb::GetPreferencesRequest {}),
            ))
            .await
            .map_err(ApiError::from)?
            .into_inner();
        self.keep(key, &answer.json)
    }

    pub fn forget(&self, tenant: &TenantId) {
        self.cached().retain(|(of, _), _| of != tenant);
    }

    /// Drops a tenant's copy whenever its settings change. Every replica listens in a
    /// group of its own (`group_prefix-<random>`): all of them must hear it.
    pub async fn follow(
        self: &Arc<Self>,
        events: &EventBus,
        group_prefix: &str,
        options: ConsumeOptions,
    ) -> anyhow::Result<impl Future<Output = ()> + Send + 'static + use<>> {
        let group = format!("{group_prefix}-{}", uuid::Uuid::new_v4().simple());
        let this = self.clone();
        let forget = move |delivery: Delivery| {
            let this = this.clone();
            async move {
                this.forget(&delivery.event.tenant);
                Ok(())
            }
        };
        Ok(consume(events, &group, &[topics::SETTINGS_UPDATED], forget, options).await?)
    }
}

/// A whole number at `path` (`sessions.tool_rounds`) of a settings document.
pub fn number(settings: &Value, path: &str) -> Option<u64> {
    lookup(settings, path)?.as_u64()
}

/// A true or false at `path` of a settings document.
pub fn flag(settings: &Value, path: &str) -> Option<bool> {
    lookup(settings, path)?.as_bool()
}

fn lookup<'a>(settings: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(settings, |v, key| v.get(key))
}
