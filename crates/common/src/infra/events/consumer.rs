//! The one loop every consumer runs: take the next event, handle it (retrying what may
//! pass on another try), commit. An event that cannot be handled goes to the topic's
//! dead-letter topic (`<topic>.dlq`) with why, and the group moves on: one poison event
//! never stops a consumer. Nothing is committed before it is handled or dead-lettered,
//! so nothing acknowledged is lost; handlers are idempotent (by event id, here or in
//! their own transaction with [`crate::infra::db::claim_event`]), so a redelivery
//! changes nothing.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use tokio_util::sync::CancellationToken;

use super::{Delivery, EventBus, EventsError, Subscription};
use crate::infra::db::Db;
use crate::metrics::Metrics;

/// Events handled one by one before their offsets are committed together, at most,
/// and for at most how long: bounds what a crash hands to the next consumer again.
const UNCOMMITTED_MAX: usize = 256;
const UNCOMMITTED_FOR: Duration = Duration::from_secs(1);

/// Why an event was not handled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandleError {
    /// Another try may pass (a backend was away): retried with backoff, then
    /// dead-lettered.
    #[error("{0}")]
    Transient(String),
    /// No try will pass (the event is malformed, names nothing known): dead-lettered at
    /// once.
    #[error("{0}")]
    Poison(String),
}

/// What a consumer does with one event.
pub trait Handler: Send + Sync + 'static {
    fn handle(&self, delivery: &Delivery) -> impl Future<Output = Result<(), HandleError>> + Send;
}

impl<F, Fut> Handler for F
where
    F: Fn(Delivery) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), HandleError>> + Send,
{
    fn handle(&self, delivery: &Delivery) -> impl Future<Output = Result<(), HandleError>> + Send {
        self(delivery.clone())
    }
}

/// What a consumer does with a batch of events, in the order they came: all of them
/// or none (one transaction), idempotently by event id, since a batch that fails
/// halfway through a commit comes again.
pub trait BatchHandler: Send + Sync + 'static {
    fn handle_batch(
        &self,
        deliveries: &[Delivery],
    ) -> impl Future<Output = Result<(), HandleError>> + Send;
}

/// A batch handler given one event at a time: how a failed batch is retried event by
/// event, so that only the events that fail go to the dead-letter topic.
struct OneByOne<H>(Arc<H>);

impl<H: BatchHandler> Handler for OneByOne<H> {
    fn handle(&self, delivery: &Delivery) -> impl Future<Output = Result<(), HandleError>> + Send {
        self.0.handle_batch(std::slice::from_ref(delivery))
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ConsumerLabels {
    group: String,
    topic: String,
}

/// Consumers' metrics, registered once per service.
#[derive(Clone)]
pub struct ConsumerMetrics {
    handled: Family<ConsumerLabels, Counter>,
    retried: Family<ConsumerLabels, Counter>,
    dead_lettered: Family<ConsumerLabels, Counter>,
    /// How old the event being handled is: how far behind the group is, in time.
    lag: Family<ConsumerLabels, Gauge>,
}

impl ConsumerMetrics {
    pub fn register(metrics: &Metrics) -> Self {
        let this = Self {
            handled: Family::default(),
            retried: Family::default(),
            dead_lettered: Family::default(),
            lag: Family::default(),
        };
        metrics.register(
            "consumer_events_handled",
            "Events a consumer group handled, by topic",
            this.handled.clone(),
        );
        metrics.register(
            "consumer_retries",
            "Retries of events that failed to be handled, by group and topic",
            this.retried.clone(),
        );
        metrics.register(
            "consumer_dead_letters",
            "Events a consumer group gave up on and sent to `<topic>.dlq`",
            this.dead_lettered.clone(),
        );
        metrics.register(
            "consumer_lag_seconds",
            "Age of the last event a consumer group took, in seconds",
            this.lag.clone(),
        );
        this
    }
}

/// How a consumer runs.
#[derive(Clone)]
pub struct ConsumeOptions {
    /// Tries per event before it is dead-lettered.
    pub max_attempts: u32,
    /// The wait before the second try; doubled each time, up to 64 times this.
    pub backoff: Duration,
    /// Where handled event ids are kept, when the handler itself keeps none: an event
    /// already handled by the group is skipped.
    pub handled_in: Option<Db>,
    /// The loop ends (before its next event) when this is cancelled.
    pub stopping: CancellationToken,
    pub metrics: Option<ConsumerMetrics>,
    /// How long a batch consumer waits, after a batch's first event, for more to join
    /// it: zero handles what has arrived at once.
    pub linger: Duration,
}

impl ConsumeOptions {
    pub fn new(stopping: CancellationToken) -> Self {
        Self {
            max_attempts: 5,
            backoff: Duration::from_millis(200),
            handled_in: None,
            stopping,
            metrics: None,
            linger: Duration::ZERO,
        }
    }

    /// Lets a batch wait `linger` after its first event for more: under load each
    /// batch's commits (the handler's and the offsets') then serve many events instead
    /// of one or two, for figures that may arrive that much later.
    pub fn linger(mut self, linger: Duration) -> Self {
        self.linger = linger;
        self
    }

    pub fn handled_in(mut self, db: Db) -> Self {
        self.handled_in = Some(db);
        self
    }

    pub fn metrics(mut self, metrics: ConsumerMetrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    pub fn attempts(mut self, max_attempts: u32, backoff: Duration) -> Self {
        self.max_attempts = max_attempts.max(1);
        self.backoff = backoff;
        self
    }
}

/// The dead-letter topic of `topic`.
pub fn dead_letter_topic(topic: &str) -> String {
    format!("{topic}.dlq")
}

/// Joins group `group` on `topics` (failing if the bus refuses) and returns the loop
/// that handles its events with `handler` until `options.stopping`: spawn it into the
/// service's task set.
pub async fn consume<H: Handler>(
    bus: &EventBus,
    group: &str,
    topics: &[&str],
    handler: H,
    options: ConsumeOptions,
) -> Result<impl Future<Output = ()> + Send + 'static + use<H>, EventsError> {
    let subscription = bus.subscribe(group, topics).await?;
    let consumer = Consumer {
        bus: bus.clone(),
        group: group.to_owned(),
        subscription,
        handler,
        options,
    };
    Ok(consumer.run())
}

/// [`consume`] for a handler that takes events in batches: each batch is what has
/// arrived, up to `max` events, handled at once and committed at once. A batch that
/// cannot be handled is taken apart: its events are handled one by one, and only those
/// that fail are dead-lettered.
pub async fn consume_batches<H: BatchHandler>(
    bus: &EventBus,
    group: &str,
    topics: &[&str],
    handler: H,
    max: usize,
    options: ConsumeOptions,
) -> Result<impl Future<Output = ()> + Send + 'static + use<H>, EventsError> {
    let subscription = bus.subscribe(group, topics).await?;
    let handler = Arc::new(handler);
    let consumer = Consumer {
        bus: bus.clone(),
        group: group.to_owned(),
        subscription,
        handler: OneByOne(handler.clone()),
        options,
    };
    Ok(consumer.run_batches(handler, max.max(1)))
}

struct Consumer<H> {
    bus: EventBus,
    group: String,
    subscription: Subscription,
    handler: H,
    options: ConsumeOptions,
}

impl<H: BatchHandler> Consumer<OneByOne<H>> {
    async fn run_batches(mut self, handler: Arc<H>, max: usize) {
        while let Some(first) = self.next_or_stop().await {
            // What has arrived already joins the batch, and what arrives while it
            // lingers.
            let until = tokio::time::Instant::now() + self.options.linger;
            let mut batch = vec![first];
            while batch.len() < max {
                if let Some(delivery) = self.subscription.next_arrived().await {
                    batch.push(delivery);
                    continue;
                }
                if self.options.linger.is_zero() {
                    break;
                }
                let stopping = self.options.stopping.clone();
                tokio::select! {
                    () = tokio::time::sleep_until(until) => break,
                    () = stopping.cancelled() => break,
                    next = self.subscription.next() => match next {
                        Ok(delivery) => batch.push(delivery),
                        Err(e) => {
                            // What was gathered is handled; the next read meets the
                            // trouble again and waits it out.
                            tracing::warn!(group = %self.group, error = %e, "a batch stopped gathering");
                            break;
                        }
                    },
                }
            }
            if !self.process_batch(&handler, &batch).await {
                return;
            }
            if let Err(e) = self.subscription.commit_all(&batch).await {
                tracing::warn!(group = %self.group, error = %e, "cannot commit events; they will come again");
            }
        }
    }

    /// Handles the batch, or each of its events (dead-lettering those that fail);
    /// false if the consumer was told to stop first.
    async fn process_batch(&self, handler: &H, batch: &[Delivery]) -> bool {
        let mut fresh = Vec::with_capacity(batch.len());
        for delivery in batch {
            self.note_lag(delivery);
            if !matches!(self.already_handled(delivery).await, Ok(true)) {
                fresh.push(delivery.clone());
            }
        }
        let mut attempt = 1;
        loop {
            match handler.handle_batch(&fresh).await {
                Ok(()) => {
                    for delivery in &fresh {
                        self.mark_handled(delivery).await;
                        if let Some(metrics) = &self.options.metrics {
                            metrics.handled.get_or_create(&self.labels(delivery)).inc();
                        }
                    }
                    return true;
                }
                Err(HandleError::Transient(why)) if attempt < self.options.max_attempts => {
                    tracing::info!(group = %self.group, events = fresh.len(), attempt, error = %why, "a batch failed; trying again");
                    let wait = self.options.backoff * 2u32.saturating_pow(attempt - 1).min(64);
                    if self.pause(wait).await {
                        return false;
                    }
                    attempt += 1;
                }
                Err(e) => {
                    tracing::warn!(group = %self.group, events = fresh.len(), error = %e, "a batch failed; handling its events one by one");
                    break;
                }
            }
        }
        for delivery in &fresh {
            if !self.process(delivery).await {
                return false;
            }
        }
        true
    }
}

impl<H: Handler> Consumer<H> {
    async fn run(mut self) {
        while let Some(first) = self.next_or_stop().await {
            // What one read brought is handled event by event, then committed at once:
            // a commit per event was an fsync per event. Nothing is committed before it
            // is handled or dead-lettered, so a stop in the middle leaves the rest for
            // the group's next consumer.
            let started = tokio::time::Instant::now();
            let mut handled = Vec::new();
            let mut next = Some(first);
            while let Some(delivery) = next.take() {
                if !self.process(&delivery).await {
                    break;
                }
                handled.push(delivery);
                if handled.len() < UNCOMMITTED_MAX
                    && started.elapsed() < UNCOMMITTED_FOR
                    && !self.options.stopping.is_cancelled()
                {
                    next = self.subscription.next_arrived().await;
                }
            }
            if let Err(e) = self.subscription.commit_all(&handled).await {
                tracing::warn!(group = %self.group, error = %e, "cannot commit events; they will come again");
            }
            if self.options.stopping.is_cancelled() {
                return;
            }
        }
    }

    /// The next event, waiting out a bus that is away; none once told to stop.
    async fn next_or_stop(&mut self) -> Option<Delivery> {
        let stopping = self.options.stopping.clone();
        loop {
            let next = tokio::select! {
                () = stopping.cancelled() => return None,
                next = self.subscription.next() => next,
            };
            match next {
                Ok(delivery) => return Some(delivery),
                Err(e) => {
                    tracing::warn!(group = %self.group, error = %e, "a consumer paused");
                    if self.pause(Duration::from_secs(1)).await {
                        return None;
                    }
                }
            }
        }
    }

    /// Sleeps, unless the consumer is told to stop first (then true).
    async fn pause(&self, wait: Duration) -> bool {
        tokio::select! {
            () = self.options.stopping.cancelled() => true,
            () = tokio::time::sleep(wait) => false,
        }
    }

    /// How old the event being handled is: how far behind the group is.
    fn note_lag(&self, delivery: &Delivery) {
        if let Some(metrics) = &self.options.metrics {
            let age = time::OffsetDateTime::now_utc() - delivery.event.time;
            metrics
                .lag
                .get_or_create(&self.labels(delivery))
                .set(age.whole_seconds().max(0));
        }
    }

    fn labels(&self, delivery: &Delivery) -> ConsumerLabels {
        ConsumerLabels {
            group: self.group.clone(),
            topic: delivery.topic.clone(),
        }
    }

    /// Handles `delivery` or dead-letters it; false if the consumer was told to stop
    /// first.
    async fn process(&self, delivery: &Delivery) -> bool {
        let labels = self.labels(delivery);
        self.note_lag(delivery);
        match self.already_handled(delivery).await {
            Ok(true) => return true,
            Ok(false) => {}
            Err(e) => {
                // Better handled twice (handlers are idempotent) than stuck.
                tracing::warn!(group = %self.group, error = %e, "cannot tell whether an event was handled");
            }
        }
        let mut attempt = 1;
        let failure = loop {
            match self.handler.handle(delivery).await {
                Ok(()) => {
                    self.mark_handled(delivery).await;
                    if let Some(metrics) = &self.options.metrics {
                        metrics.handled.get_or_create(&labels).inc();
                    }
                    return true;
                }
                Err(HandleError::Transient(why)) if attempt < self.options.max_attempts => {
                    tracing::info!(group = %self.group, event = %delivery.event.id, attempt, error = %why, "an event failed; trying again");
                    if let Some(metrics) = &self.options.metrics {
                        metrics.retried.get_or_create(&labels).inc();
                    }
                    let wait = self.options.backoff * 2u32.saturating_pow(attempt - 1).min(64);
                    if self.pause(wait).await {
                        return false;
                    }
                    attempt += 1;
                }
                Err(e) => break e,
            }
        };
        self.dead_letter(delivery, &failure, attempt).await
    }

    /// Sends `delivery` to its dead-letter topic, trying until the bus takes it: an
    /// event is never dropped. False if the consumer was told to stop first.
    async fn dead_letter(&self, delivery: &Delivery, failure: &HandleError, attempts: u32) -> bool {
        tracing::error!(group = %self.group, topic = %delivery.topic, event = %delivery.event.id, attempts, error = %failure, "an event could not be handled; dead-lettered");
        let topic = dead_letter_topic(&delivery.topic);
        let letter = super::Envelope {
            id: delivery.event.id,
            kind: "dead_letter".into(),
            source: self.group.clone(),
            tenant: delivery.event.tenant.clone(),
            subject: delivery.event.subject.clone(),
            time: time::OffsetDateTime::now_utc(),
            trace: delivery.event.trace.clone(),
            data: serde_json::json!({
                "topic": delivery.topic,
                "group": self.group,
                "attempts": attempts,
                "error": failure.to_string(),
                "poison": matches!(failure, HandleError::Poison(_)),
                "event": delivery.event,
            }),
        };
        loop {
            match self.bus.publish(&topic, &delivery.key, &letter).await {
                Ok(()) => break,
                Err(e) => {
                    tracing::warn!(group = %self.group, error = %e, "cannot dead-letter an event; trying again");
                    if self.pause(Duration::from_secs(1)).await {
                        return false;
                    }
                }
            }
        }
        if let Some(metrics) = &self.options.metrics {
            metrics
                .dead_lettered
                .get_or_create(&self.labels(delivery))
                .inc();
        }
        true
    }

    async fn already_handled(&self, delivery: &Delivery) -> Result<bool, sqlx::Error> {
        let Some(db) = &self.options.handled_in else {
            return Ok(false);
        };
        let row =
            sqlx::query("SELECT 1 FROM processed_events WHERE consumer = $1 AND event_id = $2")
                .bind(&self.group)
                .bind(delivery.event.id.to_string())
                .fetch_optional(db.pool())
                .await?;
        Ok(row.is_some())
    }

    async fn mark_handled(&self, delivery: &Delivery) {
        let Some(db) = &self.options.handled_in else {
            return;
        };
        let marked = sqlx::query(
            "INSERT INTO processed_events (consumer, event_id, processed_at) VALUES ($1, $2, $3) \
             ON CONFLICT (consumer, event_id) DO NOTHING",
        )
        .bind(&self.group)
        .bind(delivery.event.id.to_string())
        .bind(crate::clock::unix_now_ms())
        .execute(db.pool())
        .await;
        if let Err(e) = marked {
            tracing::warn!(group = %self.group, error = %e, "cannot record a handled event; a redelivery will be handled again");
        }
    }
}
