//! The infrastructure concerns of DESIGN §4, each one small type over an embedded and a
//! distributed engine, chosen by the scheme of its URL.

pub mod cache;
pub mod db;
pub mod events;
pub mod objects;
pub mod outbox;

use crate::config::CommonConfig;
use crate::service::Backend;

/// The backends services of one process share: one event bus, one cache, one object
/// store. (Each service opens its own database.) In the one-process platform this is
/// what makes the in-process cache and the local log shared by all services.
#[derive(Clone, Default)]
pub struct SharedBackends {
    pub events: Option<events::EventBus>,
    pub cache: Option<cache::Cache>,
    pub objects: Option<objects::Objects>,
}

impl SharedBackends {
    /// Opens the backends in `needs` (the database excepted), naming the one that fails.
    pub async fn open(config: &CommonConfig, needs: &[Backend]) -> anyhow::Result<Self> {
        use anyhow::Context;
        let mut shared = Self::default();
        if needs.contains(&Backend::Events) {
            shared.events = Some(
                events::EventBus::connect(&config.events_url, &config.data_dir)
                    .await
                    .with_context(|| format!("events_url {}", config.events_url))?,
            );
        }
        if needs.contains(&Backend::Cache) {
            shared.cache = Some(
                cache::Cache::connect(&config.cache_url)
                    .await
                    .with_context(|| format!("cache_url {}", config.cache_url))?,
            );
        }
        if needs.contains(&Backend::Objects) {
            let url = config.resolved_objects_url();
            shared.objects = Some(
                objects::Objects::connect(&url).with_context(|| format!("objects_url {url}"))?,
            );
        }
        Ok(shared)
    }
}
