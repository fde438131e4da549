//! The transactional outbox for events that must never be lost (usage, billing): the
//! event is written to the service's own database first, then published; a relay
//! publishes whatever is left (the bus was down, the process died in between). Delivery
//! is at least once; consumers deduplicate on the event id.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::{Any, Row, Transaction};
use tokio_util::sync::CancellationToken;

use super::db::{Db, DbError};
use super::events::{Envelope, EventBus};
use crate::clock::unix_now_ms;

/// Rows younger than this are left to the publish that wrote them.
const SETTLE: Duration = Duration::from_secs(2);
/// How often the relay runs while this process has rows to clear or to send.
const RELAY_EVERY: Duration = Duration::from_millis(500);
/// How often it looks otherwise: for rows another process (a replica that died) left.
const RELAY_IDLE: Duration = Duration::from_secs(5);
/// How long [`Outbox::deliver`] waits for the bus before writing the outbox instead.
pub const DELIVER_WITHIN: Duration = Duration::from_secs(1);

#[derive(Clone)]
pub struct Outbox {
    db: Db,
    events: EventBus,
    /// Events published whose rows are still to be cleared: the relay's next round
    /// clears them in one transaction, long before it would send them again (rows
    /// younger than [`SETTLE`] are not relayed), so a publish pays for one commit.
    published: Arc<Mutex<Vec<String>>>,
    /// Rows this process left for the relay (the bus refused them) or that the last
    /// round found: the relay comes back soon while there are any.
    left: Arc<std::sync::atomic::AtomicBool>,
}

impl Outbox {
    pub fn new(db: Db, events: EventBus) -> Self {
        Self {
            db,
            events,
            published: Arc::default(),
            left: Arc::default(),
        }
    }

    /// The bus itself, for events not worth a commit (figures, not facts).
    pub fn events(&self) -> &EventBus {
        &self.events
    }

    /// Makes `event` durable, then publishes it. Once this returns Ok the event will
    /// reach the bus, now or from the relay.
    pub async fn publish(&self, topic: &str, key: &str, event: &Envelope) -> Result<(), DbError> {
        self.publish_many(&[(topic, key, event)]).await
    }

    /// Publishes `event`, which no record of the caller's must commit with: the bus
    /// answers once it holds the event durably, so the outbox is written only if the
    /// bus refuses or has not answered within [`DELIVER_WITHIN`], and the relay sends
    /// it later (consumers drop the copy if both arrive). Ok once the event is durable
    /// in one place or the other. Writing the outbox first cost a commit of its own per
    /// event and a second encoding; what it bought, durability before the bus answers,
    /// is now at most [`DELIVER_WITHIN`] at risk if the process dies in that time.
    pub async fn deliver(&self, topic: &str, key: &str, event: &Envelope) -> Result<(), DbError> {
        let published =
            tokio::time::timeout(DELIVER_WITHIN, self.events.publish(topic, key, event)).await;
        let why = match published {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no answer within {DELIVER_WITHIN:?}"),
        };
        tracing::warn!(error = %why, topic, "the bus did not take an event; kept in the outbox");
        self.store(topic, key, event).await?;
        self.keep_relaying();
        Ok(())
    }

    /// Writes `event` to the outbox for the relay alone.
    async fn store(&self, topic: &str, key: &str, event: &Envelope) -> Result<(), DbError> {
        let mut tx = self.db.begin().await?;
        insert(&mut tx, topic, key, event, unix_now_ms()).await?;
        tx.commit().await?;
        Ok(())
    }

    /// [`Outbox::publish`] for several events at once, made durable in one commit.
    pub async fn publish_many(&self, events: &[(&str, &str, &Envelope)]) -> Result<(), DbError> {
        if events.is_empty() {
            return Ok(());
        }
        let tx = self.db.begin().await?;
        self.commit_and_publish(tx, events).await
    }

    /// Commits `tx`, which holds a use case's own writes (an invocation's log row),
    /// with `events` added to the outbox, then publishes them: the record and its events
    /// become durable together, in one commit. `tx` must be of this outbox's database.
    pub async fn commit_and_publish(
        &self,
        mut tx: Transaction<'static, Any>,
        events: &[(&str, &str, &Envelope)],
    ) -> Result<(), DbError> {
        let now = unix_now_ms();
        for (topic, key, event) in events {
            insert(&mut tx, topic, key, event, now).await?;
        }
        tx.commit().await?;
        let mut sent = Vec::with_capacity(events.len());
        for (topic, key, event) in events {
            match self.events.publish(topic, key, event).await {
                Ok(()) => sent.push(event.id.to_string()),
                Err(e) => {
                    tracing::warn!(error = %e, topic, "event kept in the outbox for the relay");
                    self.keep_relaying();
                }
            }
        }
        self.published
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(sent);
        Ok(())
    }

    fn keep_relaying(&self) {
        self.left.store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// How long the relay waits before its next round.
    fn relay_wait(&self) -> Duration {
        let pending = !self
            .published
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_empty();
        if pending || self.left.load(std::sync::atomic::Ordering::Relaxed) {
            RELAY_EVERY
        } else {
            RELAY_IDLE
        }
    }

    /// Clears the rows of the events published since the last round, in one
    /// transaction (put back to try again if it fails).
    async fn clear_published(&self) -> Result<(), DbError> {
        let ids = std::mem::take(&mut *self.published.lock().unwrap_or_else(|e| e.into_inner()));
        if ids.is_empty() {
            return Ok(());
        }
        let cleared = async {
            let mut tx = self.db.begin().await?;
            for id in &ids {
                sqlx::query("DELETE FROM outbox WHERE id = $1")
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
            Ok::<_, DbError>(())
        }
        .await;
        if cleared.is_err() {
            self.published
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .extend(ids);
        }
        cleared
    }

    async fn sent(&self, id: &str) -> Result<(), DbError> {
        sqlx::query("DELETE FROM outbox WHERE id = $1")
            .bind(id)
            .execute(self.db.pool())
            .await?;
        Ok(())
    }

    /// Publishes what is left over, oldest first; the number published.
    pub async fn relay_once(&self) -> Result<usize, DbError> {
        if let Err(e) = self.clear_published().await {
            // Left for the next round; what is left over still goes out.
            tracing::warn!(error = %e, "published outbox rows could not be cleared yet");
        }
        // Rows published but not cleared yet are not sent again.
        let pending: std::collections::HashSet<String> = self
            .published
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect();
        let settled = unix_now_ms() - SETTLE.as_millis() as i64;
        let rows = sqlx::query(
            "SELECT id, topic, event_key, payload FROM outbox WHERE created_at < $1 ORDER BY created_at LIMIT 200",
        )
        .bind(settled)
        .fetch_all(self.db.pool())
        .await?;
        // Rows still here (found now, or too young to send yet): come back soon.
        let left = !rows.is_empty()
            || sqlx::query("SELECT 1 FROM outbox LIMIT 1")
                .fetch_optional(self.db.pool())
                .await?
                .is_some();
        self.left.store(left, std::sync::atomic::Ordering::Relaxed);
        let mut published = 0;
        for row in rows {
            let (id, topic, key, payload): (String, String, String, String) = (
                row.try_get(0)?,
                row.try_get(1)?,
                row.try_get(2)?,
                row.try_get(3)?,
            );
            if pending.contains(&id) {
                continue;
            }
            let Ok(event) = serde_json::from_str::<Envelope>(&payload) else {
                tracing::error!(id, "an unreadable outbox row was dropped");
                self.sent(&id).await?;
                continue;
            };
            if let Err(e) = self.events.publish(&topic, &key, &event).await {
                tracing::warn!(error = %e, "the outbox relay will try again");
                break;
            }
            self.sent(&id).await?;
            published += 1;
        }
        Ok(published)
    }

    /// Relays until `shutdown`, then once more.
    pub async fn relay(self, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = tokio::time::sleep(self.relay_wait()) => {}
            }
            if let Err(e) = self.relay_once().await {
                tracing::warn!(error = %e, "the outbox relay failed; retrying");
            }
        }
        // What was written while the service stopped goes out before the bus closes.
        let _ = self.relay_once().await;
    }
}

/// Adds `event` to the outbox in `tx` (once: the same event again changes nothing).
async fn insert(
    tx: &mut Transaction<'static, Any>,
    topic: &str,
    key: &str,
    event: &Envelope,
    now: i64,
) -> Result<(), DbError> {
    let payload = serde_json::to_string(event).map_err(|e| DbError::Invalid(e.to_string()))?;
    sqlx::query(
        "INSERT INTO outbox (id, topic, event_key, payload, created_at) VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (id) DO NOTHING",
    )
    .bind(event.id.to_string())
    .bind(topic)
    .bind(key)
    .bind(payload)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
