//! A run's stages, live, for whoever watches it (a WebSocket): the platform's
//! [`LiveHub`] keyed by tenant and run id, relayed between replicas over Redis like
//! turn events. The same events go to `workflow.events`, durably; this is only the fast
//! path to a watcher, who reads the run's state first and then follows.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use somagent_common::live::{LiveEvent, LiveHub};
use somagent_common::tenant::TenantId;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunLive {
    pub tenant: TenantId,
    pub run_id: String,
    /// `project.planned`, `mao.progress`...
    pub kind: String,
    pub data: Value,
}

impl LiveEvent for RunLive {
    const KIND: &'static str = "runs";

    fn tenant(&self) -> &TenantId {
        &self.tenant
    }

    /// Run ids are `project-<hex>` and `mao-<hex>` (no `:`).
    fn topic(&self) -> &str {
        &self.run_id
    }
}

impl RunLive {
    /// Whether the run ended with this event.
    pub fn is_last(&self) -> bool {
        self.data["status"]
            .as_str()
            .is_some_and(somagent_common::runs::is_final)
    }
}

pub type RunHub = LiveHub<RunLive>;
