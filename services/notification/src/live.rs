//! New notifications for whoever is watching (the gateway's WebSocket and SSE streams),
//! through the platform's [`LiveHub`]: keyed by tenant and user, and `@admins` for what
//! the tenant's administrators all see. The inbox is the durable record; a watcher that
//! reconnects lists it.

use serde::{Deserialize, Serialize};
use somagent_common::live::{LiveEvent, LiveHub};
use somagent_common::tenant::TenantId;

use crate::inbox::Stored;

/// The topic of what every administrator of a tenant sees (user ids are UUIDs).
pub const ADMINS: &str = "@admins";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Live {
    pub tenant: TenantId,
    /// A user's id, or [`ADMINS`].
    pub topic: String,
    pub notification: Stored,
}

impl Live {
    pub fn of(tenant: &TenantId, notification: Stored) -> Self {
        let topic = if notification.user_id.is_empty() {
            ADMINS.to_owned()
        } else {
            notification.user_id.clone()
        };
        Self {
            tenant: tenant.clone(),
            topic,
            notification,
        }
    }
}

impl LiveEvent for Live {
    const KIND: &'static str = "notifications";

    fn tenant(&self) -> &TenantId {
        &self.tenant
    }

    fn topic(&self) -> &str {
        &self.topic
    }
}

pub type NotificationHub = LiveHub<Live>;
