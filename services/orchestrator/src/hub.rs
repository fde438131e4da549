//! Live turn events for whoever is watching (an SSE response, a WebSocket): a broadcast
//! channel per session. The durable record is the workflow's history and the
//! `conversation.events` topic; this is the low-latency path.
//!
//! A turn's activities may run in any orchestrator replica (Temporal hands each to
//! whichever worker polls first; the local engine's runs move after a crash), while its
//! watchers are connected to others. With Redis as the cache, every event is also
//! published on the Redis channel `turns:<tenant>:<session>` and each replica relays the events
//! of the others to its own watchers. Watchers here get this replica's events at once;
//! the others' a Redis round trip later. A step's events are published before its
//! result is recorded, and Redis hands a message to its subscribers before it answers
//! the publisher, so they are on their way to every replica before the next step (a
//! round trip through the workflow engine later) can emit its own. Redis pub/sub is fire
//! and forget: an SSE client that misses a turn's end learns it from the run's outcome
//! (see `send_message`); a WebSocket watcher sees the turn's messages when it lists
//! them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use somagent_common::infra::cache::RedisCache;
use tokio::sync::{broadcast, mpsc, oneshot};

/// One event of a turn: `delta`, `restart` (the model's answer to `round` starts over:
/// drop that round's deltas and tool calls of earlier attempts), `retract` (the answer
/// is withheld: drop every delta of the turn), `tool_call`, `policy`, `message`, `done`
/// or `error`. Deltas and tool calls name their `round` and `attempt`.
#[derive(Debug, Clone, PartialEq)]
pub struct TurnEvent {
    /// The session's tenant: watchers are keyed by tenant and session, so an event can
    /// only ever reach watchers of its own tenant.
    pub tenant: String,
    pub session_id: String,
    pub turn: u32,
    pub kind: &'static str,
    pub data: Value,
}

const KINDS: [&str; 8] = [
    "delta",
    "restart",
    "retract",
    "tool_call",
    "policy",
    "message",
    "done",
    "error",
];
/// Every replica listens on all sessions' channels: one subscription per process, and
/// a replica's relay traffic is the platform's live events (a few per token).
const CHANNELS: &str = "turns:*";

/// The Redis channel of a tenant's session. Tenant ids and session ids are UUIDs (no
/// `:`), so the channel names one pair only.
fn channel_of(tenant: &str, session_id: &str) -> String {
    format!("turns:{tenant}:{session_id}")
}

/// The key watchers of a session are kept under.
fn watch_key(tenant: &str, session_id: &str) -> (String, String) {
    (tenant.to_owned(), session_id.to_owned())
}

#[derive(Default)]
pub struct TurnHub {
    sessions: Mutex<HashMap<(String, String), broadcast::Sender<TurnEvent>>>,
    relay: Option<Relay>,
}

/// Where this replica's events go for the others.
struct Relay {
    /// Tells this replica's events from the others' when they come back.
    origin: String,
    /// Bounded: while Redis is slow or away, events beyond it are dropped rather than
    /// held (they would reach watchers after their turns ended).
    outbox: mpsc::Sender<Outgoing>,
    /// Set while publishing fails, so steps do not wait on a flush that cannot happen.
    failing: Arc<AtomicBool>,
}

/// Events waiting for Redis, at most.
const OUTBOX: usize = 16_384;

enum Outgoing {
    Event(String, Vec<u8>),
    /// Answered once everything queued before it has been handed to Redis (or dropped,
    /// when Redis refused it).
    Flushed(oneshot::Sender<()>),
}

impl TurnHub {
    /// A hub whose events reach watchers in this process only.
    pub fn local() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// A hub shared with every replica using `redis`.
    pub fn shared(redis: RedisCache) -> Arc<Self> {
        let (outbox, queued) = mpsc::channel(OUTBOX);
        let origin = uuid::Uuid::new_v4().simple().to_string();
        let failing = Arc::new(AtomicBool::new(false));
        let hub = Arc::new(Self {
            sessions: Mutex::default(),
            relay: Some(Relay {
                origin: origin.clone(),
                outbox,
                failing: failing.clone(),
            }),
        });
        tokio::spawn(publish(redis.clone(), queued, failing));
        let mut incoming = redis.listen(CHANNELS);
        let relayed = Arc::downgrade(&hub);
        tokio::spawn(async move {
            while let Some((channel, payload)) = incoming.recv().await {
                let Some(hub) = relayed.upgrade() else { return };
                if let Some(event) = decode(&channel, &payload, &origin) {
                    hub.deliver(event);
                }
            }
        });
        hub
    }

    pub fn subscribe(&self, tenant: &str, session_id: &str) -> broadcast::Receiver<TurnEvent> {
        let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        sessions
            .entry(watch_key(tenant, session_id))
            .or_insert_with(|| broadcast::channel(1024).0)
            .subscribe()
    }

    /// Hands `event` to its session's watchers here and, when shared, everywhere.
    pub fn send(&self, event: TurnEvent) {
        if let Some(relay) = &self.relay {
            let payload = json!({
                "origin": relay.origin, "tenant": event.tenant, "session_id": event.session_id,
                "turn": event.turn, "kind": event.kind, "data": event.data,
            });
            let channel = channel_of(&event.tenant, &event.session_id);
            let _ = relay
                .outbox
                .try_send(Outgoing::Event(channel, payload.to_string().into_bytes()));
        }
        self.deliver(event);
    }

    /// Waits (briefly) until the events sent so far have left for the other replicas,
    /// so that what a later step sends from another replica cannot overtake them.
    pub async fn flush(&self) {
        let Some(relay) = &self.relay else { return };
        if relay.failing.load(Ordering::Relaxed) {
            return;
        }
        let (done, flushed) = oneshot::channel();
        if relay.outbox.try_send(Outgoing::Flushed(done)).is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(1), flushed).await;
        }
    }

    fn deliver(&self, event: TurnEvent) {
        let key = watch_key(&event.tenant, &event.session_id);
        let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(tx) = sessions.get(&key)
            && tx.send(event).is_err()
        {
            // Nobody listens any more.
            sessions.remove(&key);
        }
    }
}

/// Publishes queued events in order, as many per round trip as are waiting.
async fn publish(redis: RedisCache, mut queued: mpsc::Receiver<Outgoing>, flag: Arc<AtomicBool>) {
    let mut batch = Vec::new();
    let mut failing = false;
    while queued.recv_many(&mut batch, 256).await > 0 {
        let mut events = Vec::with_capacity(batch.len());
        let mut flushed = Vec::new();
        for item in batch.drain(..) {
            match item {
                Outgoing::Event(channel, payload) => events.push((channel, payload)),
                Outgoing::Flushed(done) => flushed.push(done),
            }
        }
        match redis.publish(&events).await {
            Ok(()) => {
                failing = false;
                flag.store(false, Ordering::Relaxed);
            }
            Err(e) => {
                // Watchers elsewhere miss these and fall back on the run's outcome.
                if !failing {
                    tracing::warn!(error = %e, "cannot relay live turn events to the other replicas");
                }
                failing = true;
                flag.store(true, Ordering::Relaxed);
            }
        }
        for done in flushed {
            let _ = done.send(());
        }
    }
}

/// Another replica's event, as received on `channel`; none for this replica's own (its
/// watchers have it), for anything malformed, or for an event whose tenant or session
/// is not the channel's (whoever can publish on Redis must not reach another tenant's
/// watchers by naming them in the payload).
fn decode(channel: &str, payload: &[u8], own: &str) -> Option<TurnEvent> {
    let value: Value = serde_json::from_slice(payload).ok()?;
    if value["origin"].as_str()? == own {
        return None;
    }
    let tenant = value["tenant"].as_str()?;
    let session_id = value["session_id"].as_str()?;
    if tenant.is_empty() || channel != channel_of(tenant, session_id) {
        tracing::warn!(
            channel,
            "a live turn event names another tenant or session than its channel; dropped"
        );
        return None;
    }
    let kind = value["kind"].as_str()?;
    Some(TurnEvent {
        tenant: tenant.to_owned(),
        session_id: session_id.to_owned(),
        turn: u32::try_from(value["turn"].as_u64()?).ok()?,
        kind: KINDS.into_iter().find(|k| *k == kind)?,
        data: value["data"].clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_other_replicas_events_of_known_kinds_are_relayed() {
        let event = |origin: &str, kind: &str| {
            json!({ "origin": origin, "tenant": "t1", "session_id": "s1", "turn": 3, "kind": kind, "data": { "content": "hi" } })
                .to_string()
                .into_bytes()
        };
        let channel = channel_of("t1", "s1");
        assert_eq!(
            decode(&channel, &event("other", "delta"), "me"),
            Some(TurnEvent {
                tenant: "t1".into(),
                session_id: "s1".into(),
                turn: 3,
                kind: "delta",
                data: json!({ "content": "hi" }),
            })
        );
        assert_eq!(decode(&channel, &event("me", "delta"), "me"), None);
        assert_eq!(decode(&channel, &event("other", "surprise"), "me"), None);
        assert_eq!(decode(&channel, b"not json", "me"), None);
        // An event naming another tenant than its channel's is dropped.
        assert_eq!(
            decode(&channel_of("t2", "s1"), &event("other", "delta"), "me"),
            None
        );
        assert_eq!(decode("turns:s1", &event("other", "delta"), "me"), None);
    }

    #[tokio::test]
    async fn watchers_of_one_tenant_never_get_another_tenants_events() {
        let hub = TurnHub::local();
        let mut mine = hub.subscribe("t1", "s1");
        let mut theirs = hub.subscribe("t2", "s1");
        hub.send(TurnEvent {
            tenant: "t1".into(),
            session_id: "s1".into(),
            turn: 1,
            kind: "delta",
            data: json!({ "content": "private" }),
        });
        assert_eq!(mine.recv().await.unwrap().data["content"], "private");
        assert!(theirs.try_recv().is_err());
    }
}
