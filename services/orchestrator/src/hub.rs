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

use serde::{Deserialize, Serialize};
use somagent_common::CancellationToken;
use somagent_common::app::ServiceBuilder;
use somagent_common::infra::cache::Cache;
use somagent_common::tenant::TenantId;
use somagent_common::turn::TurnEvent;
use tokio::sync::{broadcast, mpsc, oneshot};

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

/// Every replica listens on all sessions' channels: one subscription per process, and
/// a replica's relay traffic is the platform's live events (a few per token).
const CHANNELS: &str = "turns:*";

/// The Redis channel of a tenant's session. Tenant ids and session ids are UUIDs (no
/// `:`), so the channel names one pair only.
fn channel_of(tenant: &TenantId, session_id: &str) -> String {
    format!("turns:{tenant}:{session_id}")
}

/// The key watchers of a session are kept under.
fn watch_key(tenant: &TenantId, session_id: &str) -> (TenantId, String) {
    (tenant.clone(), session_id.to_owned())
}

#[derive(Default)]
pub struct TurnHub {
    sessions: Mutex<HashMap<(TenantId, String), broadcast::Sender<Live>>>,
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

    /// A hub shared with every replica using `cache`, when the cache is shared (Redis);
    /// otherwise this process's only. Its relay tasks run in the service's task set and
    /// stop with it, publishing what is queued first.
    pub fn over(cache: &Cache, service: &ServiceBuilder) -> Arc<Self> {
        if cache.is_shared() {
            Self::shared(cache.clone(), service)
        } else {
            Self::local()
        }
    }

    /// A hub shared with every replica using `redis`.
    fn shared(redis: Cache, service: &ServiceBuilder) -> Arc<Self> {
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
        let stopping = service.stopping();
        service.spawn(publish(redis.clone(), queued, failing, stopping.clone()));
        let mut incoming = redis.listen(CHANNELS);
        let relayed = Arc::downgrade(&hub);
        service.spawn(async move {
            loop {
                let (channel, payload) = tokio::select! {
                    () = stopping.cancelled() => return,
                    next = incoming.recv() => match next {
                        Some(message) => message,
                        None => return,
                    },
                };
                let Some(hub) = relayed.upgrade() else { return };
                if let Some(event) = decode(&channel, &payload, &origin) {
                    hub.deliver(event);
                }
            }
        });
        hub
    }

    pub fn subscribe(&self, tenant: &TenantId, session_id: &str) -> broadcast::Receiver<Live> {
        let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        sessions
            .entry(watch_key(tenant, session_id))
            .or_insert_with(|| broadcast::channel(1024).0)
            .subscribe()
    }

    /// Hands `event` to its session's watchers here and, when shared, everywhere.
    pub fn send(&self, event: Live) {
        if let Some(relay) = &self.relay {
            let relayed = Relayed {
                origin: relay.origin.clone(),
                live: event.clone(),
            };
            if let Ok(payload) = serde_json::to_vec(&relayed) {
                let channel = channel_of(&event.tenant, &event.session_id);
                let _ = relay.outbox.try_send(Outgoing::Event(channel, payload));
            }
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

    fn deliver(&self, event: Live) {
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
async fn publish(
    redis: Cache,
    mut queued: mpsc::Receiver<Outgoing>,
    flag: Arc<AtomicBool>,
    stopping: CancellationToken,
) {
    let mut batch = Vec::new();
    let mut failing = false;
    let mut closed = false;
    loop {
        let taken = tokio::select! {
            taken = queued.recv_many(&mut batch, 256) => taken,
            // Take nothing more, and publish what is queued before ending.
            () = stopping.cancelled(), if !closed => {
                queued.close();
                closed = true;
                continue;
            }
        };
        if taken == 0 {
            break;
        }
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
fn decode(channel: &str, payload: &[u8], own: &str) -> Option<Live> {
    let relayed: Relayed = serde_json::from_slice(payload).ok()?;
    if relayed.origin == own {
        return None;
    }
    let live = relayed.live;
    if channel != channel_of(&live.tenant, &live.session_id) {
        tracing::warn!(
            channel,
            "a live turn event names another tenant or session than its channel; dropped"
        );
        return None;
    }
    Some(live)
}

/// An event as relayed between replicas, with the replica it came from.
#[derive(Serialize, Deserialize)]
struct Relayed {
    origin: String,
    #[serde(flatten)]
    live: Live,
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn tenant(id: &str) -> TenantId {
        TenantId::parse(id).unwrap()
    }

    fn delta(of: &str, content: &str) -> Live {
        Live {
            tenant: tenant(of),
            session_id: "s1".into(),
            turn: 3,
            event: TurnEvent::Delta {
                content: content.into(),
                round: 1,
                attempt: 1,
            },
        }
    }

    #[test]
    fn only_other_replicas_events_of_known_kinds_are_relayed() {
        let relayed = |origin: &str, live: &Live| {
            serde_json::to_vec(&Relayed {
                origin: origin.into(),
                live: live.clone(),
            })
            .unwrap()
        };
        let event = delta("t1", "hi");
        let channel = channel_of(&tenant("t1"), "s1");
        assert_eq!(
            decode(&channel, &relayed("other", &event), "me"),
            Some(event.clone())
        );
        assert_eq!(decode(&channel, &relayed("me", &event), "me"), None);
        let surprise = json!({ "origin": "other", "tenant": "t1", "session_id": "s1", "turn": 3, "event": { "type": "surprise", "data": {} } });
        assert_eq!(
            decode(&channel, surprise.to_string().as_bytes(), "me"),
            None
        );
        assert_eq!(decode(&channel, b"not json", "me"), None);
        // An event naming another tenant than its channel's is dropped.
        assert_eq!(
            decode(
                &channel_of(&tenant("t2"), "s1"),
                &relayed("other", &event),
                "me"
            ),
            None
        );
        assert_eq!(decode("turns:s1", &relayed("other", &event), "me"), None);
    }

    #[tokio::test]
    async fn watchers_of_one_tenant_never_get_another_tenants_events() {
        let hub = TurnHub::local();
        let mut mine = hub.subscribe(&tenant("t1"), "s1");
        let mut theirs = hub.subscribe(&tenant("t2"), "s1");
        hub.send(delta("t1", "private"));
        assert_eq!(mine.recv().await.unwrap(), delta("t1", "private"));
        assert!(theirs.try_recv().is_err());
    }
}
