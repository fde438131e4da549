//! Live turn events for whoever is watching (an SSE response, a WebSocket): the
//! platform's [`LiveHub`] keyed by tenant and session.
//!
//! A turn's activities may run in any orchestrator replica (Temporal hands each to
//! whichever worker polls first; the local engine's runs move after a crash), while its
//! watchers are connected to others; with Redis the hub relays between them. A step's
//! events are published before its result is recorded, and Redis hands a message to its
//! subscribers before it answers the publisher, so they are on their way to every
//! replica before the next step (a round trip through the workflow engine later) can
//! emit its own. Redis pub/sub is fire and forget: an SSE client that misses a turn's
//! end learns it from the run's outcome (see `send_message`); a WebSocket watcher sees
//! the turn's messages when it lists them.

use serde::{Deserialize, Serialize};
use somagent_common::live::{LiveEvent, LiveHub};
use somagent_common::tenant::TenantId;
use somagent_common::turn::TurnEvent;

/// A turn event on its way to the session's watchers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Live {
    /// The session's tenant: watchers are keyed by tenant and session, so an event can
    /// only ever reach watchers of its own tenant; a relayed event whose tenant does
    /// not parse is dropped whole.
    pub tenant: TenantId,
    pub session_id: String,
    pub turn: u32,
    pub event: TurnEvent,
}

impl LiveEvent for Live {
    const KIND: &'static str = "turns";

    fn tenant(&self) -> &TenantId {
        &self.tenant
    }

    /// Session ids are UUIDs (no `:`).
    fn topic(&self) -> &str {
        &self.session_id
    }
}

pub type TurnHub = LiveHub<Live>;

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn watchers_of_a_session_get_its_turn_events() {
        let tenant = TenantId::parse("t1").unwrap();
        let hub = TurnHub::local();
        let mut watching = hub.subscribe(&tenant, "s1");
        let delta = Live {
            tenant: tenant.clone(),
            session_id: "s1".into(),
            turn: 3,
            event: TurnEvent::Delta {
                content: "hi".into(),
                round: 1,
                attempt: 1,
            },
        };
        hub.send(delta.clone());
        assert_eq!(watching.recv().await.unwrap(), delta);
        let mut other = hub.subscribe(&tenant, "s2");
        hub.send(delta);
        assert!(other.try_recv().is_err());
    }
}
