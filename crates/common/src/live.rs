//! Live events for whoever is watching (an SSE response, a WebSocket): a broadcast
//! channel per tenant and topic (a session, a user). The durable record is elsewhere
//! (a workflow's history, the inbox, the topics); this is the low-latency path.
//!
//! The event may arise in any replica while its watchers are connected to others. With
//! Redis as the cache, every event is also published on the Redis channel
//! `<kind>:<tenant>:<topic>` and each replica relays the events of the others to its own
//! watchers. Watchers here get this replica's events at once; the others' a Redis round
//! trip later. Redis hands a message to its subscribers before it answers the
//! publisher, so after [`LiveHub::flush`] an event is on its way to every replica.
//! Redis pub/sub is fire and forget: a watcher that must not miss anything reads the
//! durable record when it (re)connects.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::CancellationToken;
use crate::app::ServiceBuilder;
use crate::infra::cache::Cache;
use crate::tenant::TenantId;

/// An event a [`LiveHub`] carries.
pub trait LiveEvent: Clone + Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The Redis channels' prefix, one per kind of event (`turns`, `notifications`).
    const KIND: &'static str;
    /// Whose it is: an event only ever reaches watchers of its own tenant.
    fn tenant(&self) -> &TenantId;
    /// What watchers subscribe to within the tenant: a session id, a user id. Never
    /// contains `:`.
    fn topic(&self) -> &str;
}

/// The Redis channel of a tenant's topic. Tenant ids and topics have no `:`, so the
/// channel names one pair only.
fn channel_of<E: LiveEvent>(tenant: &TenantId, topic: &str) -> String {
    format!("{}:{tenant}:{topic}", E::KIND)
}

type Key = (TenantId, String);

pub struct LiveHub<E: LiveEvent> {
    watchers: Mutex<HashMap<Key, broadcast::Sender<E>>>,
    relay: Option<Relay>,
}

/// Where this replica's events go for the others.
struct Relay {
    /// Tells this replica's events from the others' when they come back.
    origin: String,
    /// Bounded: while Redis is slow or away, events beyond it are dropped rather than
    /// held (they would reach watchers long after they happened).
    outbox: mpsc::Sender<Outgoing>,
    /// Set while publishing fails, so callers do not wait on a flush that cannot happen.
    failing: Arc<AtomicBool>,
}

/// Events waiting for Redis, at most.
const OUTBOX: usize = 16_384;
/// Events one watcher may fall behind by before it is told it lagged.
const PER_WATCHER: usize = 1024;

enum Outgoing {
    Event(String, Vec<u8>),
    /// Answered once everything queued before it has been handed to Redis (or dropped,
    /// when Redis refused it).
    Flushed(oneshot::Sender<()>),
}

impl<E: LiveEvent> LiveHub<E> {
    /// A hub whose events reach watchers in this process only.
    pub fn local() -> Arc<Self> {
        Arc::new(Self {
            watchers: Mutex::default(),
            relay: None,
        })
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
            watchers: Mutex::default(),
            relay: Some(Relay {
                origin: origin.clone(),
                outbox,
                failing: failing.clone(),
            }),
        });
        let stopping = service.stopping();
        service.spawn(publish(
            E::KIND,
            redis.clone(),
            queued,
            failing,
            stopping.clone(),
        ));
        let mut incoming = redis.listen(&format!("{}:*", E::KIND));
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
                if let Some(event) = decode::<E>(&channel, &payload, &origin) {
                    hub.deliver(event);
                }
            }
        });
        hub
    }

    pub fn subscribe(&self, tenant: &TenantId, topic: &str) -> broadcast::Receiver<E> {
        let mut watchers = self.watchers.lock().unwrap_or_else(|e| e.into_inner());
        // Topics whose watchers all left, and that no event has come for since.
        if watchers.len() >= 1024 {
            watchers.retain(|_, tx| tx.receiver_count() > 0);
        }
        watchers
            .entry((tenant.clone(), topic.to_owned()))
            .or_insert_with(|| broadcast::channel(PER_WATCHER).0)
            .subscribe()
    }

    /// Hands `event` to its topic's watchers here and, when shared, everywhere.
    pub fn send(&self, event: E) {
        if let Some(relay) = &self.relay {
            let relayed = Relayed {
                origin: relay.origin.clone(),
                live: event.clone(),
            };
            if let Ok(payload) = serde_json::to_vec(&relayed) {
                let channel = channel_of::<E>(event.tenant(), event.topic());
                let _ = relay.outbox.try_send(Outgoing::Event(channel, payload));
            }
        }
        self.deliver(event);
    }

    /// Waits (briefly) until the events sent so far have left for the other replicas,
    /// so that what is sent next from another replica cannot overtake them.
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

    fn deliver(&self, event: E) {
        let key = (event.tenant().clone(), event.topic().to_owned());
        let mut watchers = self.watchers.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(tx) = watchers.get(&key)
            && tx.send(event).is_err()
        {
            // Nobody listens any more.
            watchers.remove(&key);
        }
    }
}

/// Publishes queued events in order, as many per round trip as are waiting.
async fn publish(
    kind: &'static str,
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
                // Watchers elsewhere miss these and fall back on the durable record.
                if !failing {
                    tracing::warn!(error = %e, kind, "cannot relay live events to the other replicas");
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
/// watchers have it), for anything malformed, or for an event whose tenant or topic is
/// not the channel's (whoever can publish on Redis must not reach another tenant's
/// watchers by naming them in the payload).
fn decode<E: LiveEvent>(channel: &str, payload: &[u8], own: &str) -> Option<E> {
    let relayed: Relayed<E> = serde_json::from_slice(payload).ok()?;
    if relayed.origin == own {
        return None;
    }
    let live = relayed.live;
    if channel != channel_of::<E>(live.tenant(), live.topic()) {
        tracing::warn!(
            channel,
            "a live event names another tenant or topic than its channel; dropped"
        );
        return None;
    }
    Some(live)
}

/// An event as relayed between replicas, with the replica it came from.
#[derive(Serialize, Deserialize)]
#[serde(bound = "E: LiveEvent")]
struct Relayed<E> {
    origin: String,
    #[serde(flatten)]
    live: E,
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Note {
        tenant: TenantId,
        user: String,
        text: String,
    }

    impl LiveEvent for Note {
        const KIND: &'static str = "notes";
        fn tenant(&self) -> &TenantId {
            &self.tenant
        }
        fn topic(&self) -> &str {
            &self.user
        }
    }

    fn tenant(id: &str) -> TenantId {
        TenantId::parse(id).unwrap()
    }

    fn note(of: &str, text: &str) -> Note {
        Note {
            tenant: tenant(of),
            user: "u1".into(),
            text: text.into(),
        }
    }

    #[test]
    fn only_other_replicas_well_formed_events_are_relayed() {
        let relayed = |origin: &str, live: &Note| {
            serde_json::to_vec(&Relayed {
                origin: origin.into(),
                live: live.clone(),
            })
            .unwrap()
        };
        let event = note("t1", "hi");
        let channel = channel_of::<Note>(&tenant("t1"), "u1");
        assert_eq!(channel, "notes:t1:u1");
        assert_eq!(
            decode::<Note>(&channel, &relayed("other", &event), "me"),
            Some(event.clone())
        );
        assert_eq!(decode::<Note>(&channel, &relayed("me", &event), "me"), None);
        let surprise = json!({ "origin": "other", "tenant": "t1", "user": "u1" });
        assert_eq!(
            decode::<Note>(&channel, surprise.to_string().as_bytes(), "me"),
            None
        );
        assert_eq!(decode::<Note>(&channel, b"not json", "me"), None);
        // An event naming another tenant than its channel's is dropped.
        assert_eq!(
            decode::<Note>(
                &channel_of::<Note>(&tenant("t2"), "u1"),
                &relayed("other", &event),
                "me"
            ),
            None
        );
        assert_eq!(
            decode::<Note>("notes:u1", &relayed("other", &event), "me"),
            None
        );
    }

    #[tokio::test]
    async fn watchers_of_one_tenant_never_get_another_tenants_events() {
        let hub = LiveHub::<Note>::local();
        let mut mine = hub.subscribe(&tenant("t1"), "u1");
        let mut theirs = hub.subscribe(&tenant("t2"), "u1");
        hub.send(note("t1", "private"));
        assert_eq!(mine.recv().await.unwrap(), note("t1", "private"));
        assert!(theirs.try_recv().is_err());
    }
}
