//! The durable local log: events in a SQLite file, consumer offsets beside them.
//!
//! Publishes go through one writer task that commits them in batches (group commit),
//! so a burst costs one fsync, and each publisher is answered only after its batch is
//! durable. Subscribers are woken at once in this process and poll for other
//! processes' writes. One consumer per group reads at a time, holding a lease that
//! expires if its process dies; the next one resumes after the last commit.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use sqlx::Row;
use tokio::sync::{Notify, mpsc, oneshot};
use uuid::Uuid;

use super::{Delivery, Envelope, EventsError, Position};
use crate::clock::unix_now_ms;
use crate::infra::db::{Db, Migration, values_rows};

const MIGRATIONS: &[Migration] = &[Migration::portable(
    1,
    "event_log",
    "CREATE TABLE IF NOT EXISTS events (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        topic TEXT NOT NULL,
        key TEXT NOT NULL,
        event_id TEXT NOT NULL,
        payload TEXT NOT NULL,
        published_at BIGINT NOT NULL
    );
    CREATE INDEX IF NOT EXISTS events_by_topic ON events (topic, seq);
    CREATE TABLE IF NOT EXISTS consumer_offsets (
        group_id TEXT NOT NULL,
        topic TEXT NOT NULL,
        next_seq BIGINT NOT NULL,
        PRIMARY KEY (group_id, topic)
    );
    CREATE TABLE IF NOT EXISTS consumer_leases (
        group_id TEXT PRIMARY KEY,
        owner TEXT NOT NULL,
        expires_at BIGINT NOT NULL
    );",
)];

/// Most publishes one batch commits.
const BATCH: usize = 512;
/// How often the log looks for events written by another process (one query for all
/// its subscribers), and how often a group waits its turn for the lease.
const POLL: Duration = Duration::from_millis(200);
/// A consumer that stops renewing its lease for this long loses its group.
const LEASE: Duration = Duration::from_secs(10);
/// Events read per query: a batch consumer takes at most what one read brought.
const FETCH: i64 = 1000;

struct Pending {
    topic: String,
    key: String,
    event_id: String,
    payload: String,
    done: oneshot::Sender<Result<(), EventsError>>,
}

#[derive(Clone)]
pub struct LocalLog {
    db: Db,
    writer: mpsc::Sender<Pending>,
    watchers: Watchers,
}

/// Per topic, the subscriptions in this process to wake when it gets events: only
/// those, where waking every group on every commit cost each a read.
#[derive(Clone, Default)]
struct Watchers(Arc<Watched>);

#[derive(Default)]
struct Watched {
    by_topic: std::sync::Mutex<HashMap<String, Vec<Weak<Notify>>>>,
    /// The newest sequence number whose subscriptions have been woken. A gap between
    /// it and a batch this process writes is another process's events; so is a newest
    /// row beyond it that the watcher finds.
    woken_to: AtomicI64,
}

impl Watchers {
    fn watch(&self, topics: &[&str]) -> Arc<Notify> {
        let notify = Arc::new(Notify::new());
        let mut map = self.0.by_topic.lock().unwrap_or_else(|e| e.into_inner());
        for topic in topics {
            let list = map.entry((*topic).to_owned()).or_default();
            list.retain(|w| w.strong_count() > 0);
            list.push(Arc::downgrade(&notify));
        }
        notify
    }

    /// Wakes every subscription: the log grew, written by another process.
    fn wake_all(&self) {
        let map = self.0.by_topic.lock().unwrap_or_else(|e| e.into_inner());
        for notify in map.values().flatten().filter_map(Weak::upgrade) {
            notify.notify_one();
        }
    }

    /// Wakes the subscriptions of the batch's topics, which this process wrote as the
    /// sequence numbers `first..=last`; and every subscription if the log grew by
    /// another process's events since the last wake.
    fn wrote(&self, batch: &[Pending], first: i64, last: i64) {
        if self.0.woken_to.fetch_max(last, Ordering::AcqRel) < first - 1 {
            self.wake_all();
            return;
        }
        let map = self.0.by_topic.lock().unwrap_or_else(|e| e.into_inner());
        let mut woken: Vec<&str> = Vec::new();
        for pending in batch {
            if woken.contains(&pending.topic.as_str()) {
                continue;
            }
            woken.push(&pending.topic);
            // `notify_one` keeps a permit for a subscription that is busy reading, so a
            // commit between its read and its wait still wakes it.
            for watcher in map.get(&pending.topic).into_iter().flatten() {
                if let Some(notify) = watcher.upgrade() {
                    notify.notify_one();
                }
            }
        }
    }
}

impl LocalLog {
    pub async fn open(path: &Path) -> Result<Self, EventsError> {
        let db = Db::sqlite(path).await?;
        db.migrate("event_log", MIGRATIONS).await?;
        let (writer, queue) = mpsc::channel(BATCH * 4);
        let watchers = Watchers::default();
        let newest = sqlx::query_scalar::<_, Option<i64>>("SELECT MAX(seq) FROM events")
            .fetch_one(db.pool())
            .await?;
        watchers
            .0
            .woken_to
            .store(newest.unwrap_or(0), Ordering::Release);
        tokio::spawn(write_batches(db.clone(), queue, watchers.clone()));
        tokio::spawn(watch_other_writers(db.clone(), Arc::downgrade(&watchers.0)));
        Ok(Self {
            db,
            writer,
            watchers,
        })
    }

    pub(super) async fn publish(
        &self,
        topic: &str,
        key: &str,
        event_id: &Uuid,
        payload: String,
    ) -> Result<(), EventsError> {
        let (done, answer) = oneshot::channel();
        self.writer
            .send(Pending {
                topic: topic.to_owned(),
                key: key.to_owned(),
                event_id: event_id.to_string(),
                payload,
                done,
            })
            .await
            .map_err(|_| EventsError::Closed)?;
        answer.await.map_err(|_| EventsError::Closed)?
    }

    pub(super) async fn ping(&self) -> Result<(), EventsError> {
        self.db.ping().await?;
        Ok(())
    }

    pub(super) async fn subscribe(
        &self,
        group: &str,
        topics: &[&str],
    ) -> Result<LocalSubscription, EventsError> {
        let owner = Uuid::new_v4().to_string();
        // Wait for the group's lease: one consumer of a group reads at a time.
        while !self.take_lease(group, &owner).await? {
            tokio::time::sleep(POLL).await;
        }
        let mut cursors = HashMap::new();
        for topic in topics {
            let next: Option<i64> = sqlx::query(
                "SELECT next_seq FROM consumer_offsets WHERE group_id = $1 AND topic = $2",
            )
            .bind(group)
            .bind(*topic)
            .fetch_optional(self.db.pool())
            .await?
            .map(|row| row.try_get(0))
            .transpose()?;
            cursors.insert((*topic).to_owned(), next.unwrap_or(0));
        }
        Ok(LocalSubscription {
            log: self.clone(),
            published: self.watchers.watch(topics),
            group: group.to_owned(),
            owner,
            cursors,
            buffer: Default::default(),
            renewed_at: tokio::time::Instant::now(),
        })
    }

    async fn take_lease(&self, group: &str, owner: &str) -> Result<bool, EventsError> {
        let now = unix_now_ms();
        let expires = now + LEASE.as_millis() as i64;
        let taken = sqlx::query(
            "INSERT INTO consumer_leases (group_id, owner, expires_at) VALUES ($1, $2, $3) \
             ON CONFLICT (group_id) DO UPDATE SET owner = excluded.owner, expires_at = excluded.expires_at \
             WHERE consumer_leases.owner = excluded.owner OR consumer_leases.expires_at < $4",
        )
        .bind(group)
        .bind(owner)
        .bind(expires)
        .bind(now)
        .execute(self.db.pool())
        .await?;
        Ok(taken.rows_affected() == 1)
    }

    async fn release_lease(&self, group: &str, owner: &str) {
        let _ = sqlx::query("DELETE FROM consumer_leases WHERE group_id = $1 AND owner = $2")
            .bind(group)
            .bind(owner)
            .execute(self.db.pool())
            .await;
    }
}

/// Wakes the subscriptions when the log grows by another process's writes, until the
/// log is dropped: one query per [`POLL`] for all of them, where each used to ask on
/// its own (most of an idle platform's work). Writes made here wake their topics'
/// subscriptions at once and are not woken for again: under load, waking every
/// subscription for this process's own writes made each of them read for nothing.
async fn watch_other_writers(db: Db, watchers: Weak<Watched>) {
    loop {
        tokio::time::sleep(POLL).await;
        let Some(watchers) = watchers.upgrade().map(Watchers) else {
            return;
        };
        let newest = sqlx::query_scalar::<_, Option<i64>>("SELECT MAX(seq) FROM events")
            .fetch_one(db.pool())
            .await;
        match newest {
            Ok(newest) => {
                let newest = newest.unwrap_or(0);
                if watchers.0.woken_to.fetch_max(newest, Ordering::AcqRel) < newest {
                    watchers.wake_all();
                }
            }
            Err(e) => tracing::debug!(error = %e, "cannot look for other writers' events"),
        }
    }
}

/// Commits queued publishes in batches; answers each publisher after its batch.
async fn write_batches(db: Db, mut queue: mpsc::Receiver<Pending>, watchers: Watchers) {
    let mut batch = Vec::with_capacity(BATCH);
    while queue.recv_many(&mut batch, BATCH).await > 0 {
        let result = write(&db, &batch).await;
        if let Ok(last) = result {
            watchers.wrote(&batch, last - batch.len() as i64 + 1, last);
        }
        for pending in batch.drain(..) {
            let answer = match &result {
                Ok(_) => Ok(()),
                Err(e) => Err(EventsError::Backend(e.to_string())),
            };
            let _ = pending.done.send(answer);
        }
    }
}

/// Commits the batch; answers the sequence number of its last event. A batch's events
/// are numbered one after the other: SQLite has one writer at a time, a rolled-back
/// insert takes no number from AUTOINCREMENT, and no row is ever given its own `seq`.
async fn write(db: &Db, batch: &[Pending]) -> Result<i64, sqlx::Error> {
    const COLUMNS: usize = 5;
    let now = unix_now_ms();
    let mut tx = db.pool().begin().await?;
    // Multi-row inserts: a statement per event was most of a batch's time.
    for rows in batch.chunks(db.kind().rows_per_insert(COLUMNS)) {
        // Only parameter markers are formatted into the text.
        let sql = format!(
            "INSERT INTO events (topic, key, event_id, payload, published_at) VALUES {}",
            values_rows(rows.len(), COLUMNS)
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for pending in rows {
            query = query
                .bind(pending.topic.as_str())
                .bind(pending.key.as_str())
                .bind(pending.event_id.as_str())
                .bind(pending.payload.as_str())
                .bind(now);
        }
        query.execute(&mut *tx).await?;
    }
    // sqlx's `Any` driver does not pass SQLite's last row id on.
    let last = sqlx::query_scalar::<_, i64>("SELECT MAX(seq) FROM events")
        .fetch_one(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(last)
}

pub struct LocalSubscription {
    log: LocalLog,
    /// Woken when one of its topics gets events in this process.
    published: Arc<Notify>,
    group: String,
    owner: String,
    /// Per topic, the next sequence number to read.
    cursors: HashMap<String, i64>,
    buffer: std::collections::VecDeque<Delivery>,
    renewed_at: tokio::time::Instant,
}

impl LocalSubscription {
    pub(super) async fn next(&mut self) -> Result<Delivery, EventsError> {
        loop {
            if !self.buffer.is_empty() {
                // A slow handler working through a full read keeps its group.
                self.renew_lease().await?;
                if let Some(delivery) = self.buffer.pop_front() {
                    return Ok(delivery);
                }
            }
            self.renew_lease().await?;
            self.fill().await?;
            if self.buffer.is_empty() {
                // Woken by a publish (here or, through the log's watch, elsewhere), or
                // in time to renew the lease.
                tokio::select! {
                    () = self.published.notified() => {}
                    () = tokio::time::sleep(LEASE / 3) => {}
                }
            }
        }
    }

    /// The next event already read, if any.
    pub(super) fn next_buffered(&mut self) -> Option<Delivery> {
        self.buffer.pop_front()
    }

    async fn renew_lease(&mut self) -> Result<(), EventsError> {
        if self.renewed_at.elapsed() < LEASE / 3 {
            return Ok(());
        }
        if !self.log.take_lease(&self.group, &self.owner).await? {
            return Err(EventsError::Backend(format!(
                "consumer group {} was taken over after this consumer stalled",
                self.group
            )));
        }
        self.renewed_at = tokio::time::Instant::now();
        Ok(())
    }

    async fn fill(&mut self) -> Result<(), EventsError> {
        let mut sql = String::from("SELECT seq, topic, key, payload FROM events WHERE ");
        let mut binds = Vec::new();
        for (i, (topic, next)) in self.cursors.iter().enumerate() {
            if i > 0 {
                sql.push_str(" OR ");
            }
            sql.push_str(&format!(
                "(topic = ${} AND seq >= ${})",
                2 * i + 1,
                2 * i + 2
            ));
            binds.push((topic.clone(), *next));
        }
        sql.push_str(&format!(" ORDER BY seq LIMIT {FETCH}"));
        // Only bind-parameter markers and a constant are formatted into the text.
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for (topic, next) in &binds {
            query = query.bind(topic.as_str()).bind(*next);
        }
        let rows = query.fetch_all(self.log.db.pool()).await?;
        for row in rows {
            let seq: i64 = row.try_get(0)?;
            let topic: String = row.try_get(1)?;
            let key: String = row.try_get(2)?;
            let payload: String = row.try_get(3)?;
            self.cursors.insert(topic.clone(), seq + 1);
            match serde_json::from_str::<Envelope>(&payload) {
                Ok(event) => self.buffer.push_back(Delivery {
                    topic,
                    key,
                    event,
                    position: Position::Local { seq },
                }),
                Err(e) => {
                    tracing::error!(topic, seq, error = %e, "skipping an event that is not an envelope")
                }
            }
        }
        Ok(())
    }

    /// Records the deliveries (the last of each topic) as handled, in one commit.
    pub(super) async fn commit(&mut self, deliveries: &[&Delivery]) -> Result<(), EventsError> {
        if deliveries.is_empty() {
            return Ok(());
        }
        let mut tx = self.log.db.pool().begin().await?;
        for delivery in deliveries {
            let Position::Local { seq } = delivery.position else {
                return Err(EventsError::Config(
                    "a Kafka delivery cannot be committed to the local log".into(),
                ));
            };
            sqlx::query(
                "INSERT INTO consumer_offsets (group_id, topic, next_seq) VALUES ($1, $2, $3) \
                 ON CONFLICT (group_id, topic) DO UPDATE SET next_seq = MAX(consumer_offsets.next_seq, excluded.next_seq)",
            )
            .bind(&self.group)
            .bind(&delivery.topic)
            .bind(seq + 1)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }
}

impl Drop for LocalSubscription {
    fn drop(&mut self) {
        // Hand the group on at once rather than after the lease runs out.
        let log = self.log.clone();
        let (group, owner) = (self.group.clone(), self.owner.clone());
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move { log.release_lease(&group, &owner).await });
        }
    }
}
