//! The event bus: facts published by services, consumed by groups.
//!
//! Two engines behind one small surface: a durable local log (a SQLite file, for one
//! machine) and Kafka. Both give at-least-once delivery per consumer group: a delivery
//! is committed only after its handler is done, and one not committed is delivered
//! again to the group's next consumer (after a crash, a restart or a rebalance). Order
//! holds per key. Every consumer runs [`consume`]: retries, dead letters, idempotency
//! by event id, lag.

mod consumer;
mod envelope;
mod kafka;
mod local;

use std::time::Duration;

pub use consumer::{
    BatchHandler, ConsumeOptions, ConsumerMetrics, HandleError, Handler, consume, consume_batches,
    dead_letter_topic,
};
pub use envelope::{Envelope, topics};
pub use kafka::KafkaBus;
pub use local::LocalLog;

use crate::config::EventsUrl;

#[derive(Debug, thiserror::Error)]
pub enum EventsError {
    #[error("events: {0}")]
    Config(String),
    #[error("events: {0}")]
    Backend(String),
    #[error("events: malformed event: {0}")]
    Malformed(String),
    #[error("events: the subscription was closed")]
    Closed,
}

impl From<crate::infra::db::DbError> for EventsError {
    fn from(e: crate::infra::db::DbError) -> Self {
        Self::Backend(e.to_string())
    }
}

impl From<sqlx::Error> for EventsError {
    fn from(e: sqlx::Error) -> Self {
        Self::Backend(e.to_string())
    }
}

impl From<rdkafka::error::KafkaError> for EventsError {
    fn from(e: rdkafka::error::KafkaError) -> Self {
        Self::Backend(e.to_string())
    }
}

/// The bus, chosen by the scheme of `events_url`.
#[derive(Clone)]
pub enum EventBus {
    Local(LocalLog),
    Kafka(KafkaBus),
}

impl EventBus {
    /// Connects to the bus at `url`; `local://` keeps its log in `data_dir/events.db`.
    pub async fn connect(url: &EventsUrl, data_dir: &std::path::Path) -> Result<Self, EventsError> {
        match url {
            EventsUrl::Local { path } => {
                let path = path.clone().unwrap_or_else(|| data_dir.join("events.db"));
                Ok(Self::Local(LocalLog::open(&path).await?))
            }
            EventsUrl::Kafka(raw) => Ok(Self::Kafka(KafkaBus::connect(raw)?)),
        }
    }

    /// Publishes `event` on `topic`; returns once the bus has made it durable.
    /// `key` orders events (the tenant or session id): same key, same order.
    pub async fn publish(
        &self,
        topic: &str,
        key: &str,
        event: &Envelope,
    ) -> Result<(), EventsError> {
        let payload =
            serde_json::to_string(event).map_err(|e| EventsError::Malformed(e.to_string()))?;
        match self {
            Self::Local(log) => log.publish(topic, key, &event.id, payload).await,
            Self::Kafka(bus) => bus.publish(topic, key, event, payload).await,
        }
    }

    /// Joins consumer group `group` on `topics`. A new group starts at the oldest
    /// retained event; a known group resumes after its last commit.
    pub async fn subscribe(
        &self,
        group: &str,
        topics: &[&str],
    ) -> Result<Subscription, EventsError> {
        if group.is_empty() || topics.is_empty() {
            return Err(EventsError::Config(
                "a subscription needs a group and a topic".into(),
            ));
        }
        match self {
            Self::Local(log) => Ok(Subscription::Local(log.subscribe(group, topics).await?)),
            Self::Kafka(bus) => Ok(Subscription::Kafka(bus.subscribe(group, topics).await?)),
        }
    }

    /// A round trip to the bus, for readiness.
    pub async fn ping(&self) -> Result<(), EventsError> {
        match self {
            Self::Local(log) => log.ping().await,
            Self::Kafka(bus) => bus.ping().await,
        }
    }

    /// Waits until everything published so far is durable, for up to `timeout`.
    pub async fn flush(&self, timeout: Duration) -> Result<(), EventsError> {
        match self {
            Self::Local(_) => Ok(()),
            Self::Kafka(bus) => bus.flush(timeout).await,
        }
    }

    pub fn engine(&self) -> &'static str {
        match self {
            Self::Local(_) => "local",
            Self::Kafka(_) => "kafka",
        }
    }
}

/// One event handed to a consumer, with what is needed to commit it.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub topic: String,
    pub key: String,
    pub event: Envelope,
    position: Position,
}

#[derive(Debug, Clone)]
enum Position {
    Local { seq: i64 },
    Kafka { partition: i32, offset: i64 },
}

impl Position {
    /// The partition (the local log has one per topic) and the place in it.
    fn lane_and_place(&self) -> (i32, i64) {
        match *self {
            Self::Local { seq } => (0, seq),
            Self::Kafka { partition, offset } => (partition, offset),
        }
    }
}

/// A consumer's membership of its group.
pub enum Subscription {
    Local(local::LocalSubscription),
    Kafka(kafka::KafkaSubscription),
}

impl Subscription {
    /// The next event for this consumer, waiting until one is published.
    pub async fn next(&mut self) -> Result<Delivery, EventsError> {
        match self {
            Self::Local(sub) => sub.next().await,
            Self::Kafka(sub) => sub.next().await,
        }
    }

    /// The next event if one has arrived already, without waiting or reading anything:
    /// what a batch takes after its first event. (Abandoning a read of the local log
    /// half way cost a query per batch and left the next one waiting behind it.)
    pub async fn next_arrived(&mut self) -> Option<Delivery> {
        match self {
            Self::Local(sub) => sub.next_buffered(),
            // The Kafka client's queue is in memory: a receive that is not ready at
            // once is dropped having taken nothing.
            Self::Kafka(sub) => tokio::time::timeout(std::time::Duration::ZERO, sub.next())
                .await
                .ok()
                .and_then(Result::ok),
        }
    }

    /// Records a batch as handled: the last of its deliveries on each topic and
    /// partition, which covers the others.
    pub async fn commit_all(&mut self, deliveries: &[Delivery]) -> Result<(), EventsError> {
        let mut last: Vec<&Delivery> = Vec::new();
        for d in deliveries {
            let (lane, place) = d.position.lane_and_place();
            match last
                .iter_mut()
                .find(|l| l.topic == d.topic && l.position.lane_and_place().0 == lane)
            {
                Some(l) if l.position.lane_and_place().1 < place => *l = d,
                Some(_) => {}
                None => last.push(d),
            }
        }
        match self {
            Self::Local(sub) => sub.commit(&last).await,
            Self::Kafka(sub) => sub.commit(&last),
        }
    }

    /// Records that `delivery` (and everything before it on its topic or partition) is
    /// handled, so the group does not see it again.
    pub async fn commit(&mut self, delivery: &Delivery) -> Result<(), EventsError> {
        self.commit_all(std::slice::from_ref(delivery)).await
    }
}

impl crate::readiness::Probe for EventBus {
    async fn probe(&self) -> Result<(), String> {
        self.ping().await.map_err(|e| e.to_string())
    }
}
