//! Kafka through `rdkafka`: an idempotent producer (acks=all) and consumer groups that
//! commit only what their handlers finished.
//!
//! URL: `kafka://host:port[,host:port…][?prefix=…&partitions=…&replication=…&group_protocol=…&linger_ms=…]`.
//! `prefix` namespaces topics and groups (tests use it for isolation); topics are
//! created when first used, with the broker's defaults unless the URL says otherwise.
//! Consumer groups use the KIP-848 protocol (`consumer`, Kafka 4.0+ brokers), which
//! joins in a fraction of a second; `group_protocol=classic` serves older brokers.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::Message;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};
use url::Url;

use super::{Delivery, Envelope, EventsError, Position};

/// How long the producer waits to fill a batch. Publishers wait for their event's
/// acknowledgement, so each waits this long too.
const LINGER_MS: i32 = 1;

#[derive(Clone)]
pub struct KafkaBus {
    brokers: String,
    prefix: String,
    partitions: i32,
    replication: i32,
    group_protocol: String,
    producer: FutureProducer,
    admin: Arc<AdminClient<DefaultClientContext>>,
    /// Topics known to exist: read by every publish, so behind a lock that many read
    /// at once.
    known_topics: Arc<std::sync::RwLock<HashSet<String>>>,
    /// Held while creating topics, so concurrent first publishes create a topic once.
    creating: Arc<tokio::sync::Mutex<()>>,
}

impl KafkaBus {
    pub fn connect(raw: &str) -> Result<Self, EventsError> {
        let url = Url::parse(raw).map_err(|e| EventsError::Config(format!("events_url: {e}")))?;
        let brokers = raw
            .trim_start_matches("kafka://")
            .split(['?', '/'])
            .next()
            .unwrap_or_default()
            .to_owned();
        let mut prefix = String::new();
        let (mut partitions, mut replication) = (-1, -1);
        let mut group_protocol = "consumer".to_owned();
        let mut linger_ms = LINGER_MS;
        for (key, value) in url.query_pairs() {
            let number = || {
                value.parse::<i32>().map_err(|_| {
                    EventsError::Config(format!("events_url: `{key}` must be a number"))
                })
            };
            match key.as_ref() {
                "prefix" => prefix = value.into_owned(),
                "partitions" => partitions = number()?,
                "replication" => replication = number()?,
                "linger_ms" => linger_ms = number()?.max(0),
                "group_protocol" => match value.as_ref() {
                    "consumer" | "classic" => group_protocol = value.into_owned(),
                    _ => {
                        return Err(EventsError::Config(
                            "events_url: group_protocol must be consumer or classic".into(),
                        ));
                    }
                },
                other => {
                    return Err(EventsError::Config(format!(
                        "events_url: unknown option `{other}`"
                    )));
                }
            }
        }
        let producer: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", linger_ms.to_string())
            .set("message.timeout.ms", "30000")
            .create()?;
        let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .create()?;
        Ok(Self {
            brokers,
            prefix,
            partitions,
            replication,
            group_protocol,
            producer,
            admin: Arc::new(admin),
            known_topics: Arc::default(),
            creating: Arc::default(),
        })
    }

    fn topic(&self, topic: &str) -> String {
        format!("{}{topic}", self.prefix)
    }

    /// Creates the topics not seen yet; an existing topic is fine.
    async fn ensure_topics(&self, topics: &[String]) -> Result<(), EventsError> {
        let unknown = || -> Vec<String> {
            let known = self.known_topics.read().unwrap_or_else(|e| e.into_inner());
            topics
                .iter()
                .filter(|t| !known.contains(*t))
                .cloned()
                .collect()
        };
        if unknown().is_empty() {
            return Ok(());
        }
        let _creating = self.creating.lock().await;
        let missing = unknown();
        if missing.is_empty() {
            return Ok(());
        }
        let new: Vec<NewTopic> = missing
            .iter()
            .map(|t| {
                NewTopic::new(
                    t,
                    self.partitions,
                    TopicReplication::Fixed(self.replication),
                )
            })
            .collect();
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
        for result in self.admin.create_topics(&new, &options).await? {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((topic, code)) => {
                    return Err(EventsError::Backend(format!(
                        "cannot create topic {topic}: {code}"
                    )));
                }
            }
        }
        // Creation returns before every partition has a leader; publishing or joining
        // a group before then races the broker, so wait until the metadata says ready.
        for topic in &missing {
            self.await_leaders(topic).await?;
        }
        self.known_topics
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .extend(missing);
        Ok(())
    }

    async fn await_leaders(&self, topic: &str) -> Result<(), EventsError> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let producer = self.producer.clone();
            let name = topic.to_owned();
            let ready = tokio::task::spawn_blocking(move || {
                let metadata = producer
                    .client()
                    .fetch_metadata(Some(&name), Duration::from_secs(5))?;
                Ok::<_, rdkafka::error::KafkaError>(metadata.topics().iter().any(|t| {
                    t.name() == name
                        && t.error().is_none()
                        && !t.partitions().is_empty()
                        && t.partitions()
                            .iter()
                            .all(|p| p.leader() >= 0 && p.error().is_none())
                }))
            })
            .await
            .map_err(|e| EventsError::Backend(e.to_string()))??;
            if ready {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                return Err(EventsError::Backend(format!(
                    "topic {topic} has no leader after 30s"
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub(super) async fn publish(
        &self,
        topic: &str,
        key: &str,
        event: &Envelope,
        payload: String,
    ) -> Result<(), EventsError> {
        let topic = self.topic(topic);
        self.ensure_topics(std::slice::from_ref(&topic)).await?;
        let id = event.id.to_string();
        let mut headers = OwnedHeaders::new()
            .insert(Header {
                key: "event-id",
                value: Some(id.as_str()),
            })
            .insert(Header {
                key: "event-type",
                value: Some(event.kind.as_str()),
            });
        if let Some(trace) = &event.trace {
            headers = headers.insert(Header {
                key: "traceparent",
                value: Some(trace.as_str()),
            });
        }
        let record = FutureRecord::to(&topic)
            .key(key)
            .payload(&payload)
            .headers(headers);
        self.producer
            .send(record, Duration::from_secs(30))
            .await
            .map_err(|(e, _)| EventsError::Backend(e.to_string()))?;
        Ok(())
    }

    pub(super) async fn subscribe(
        &self,
        group: &str,
        topics: &[&str],
    ) -> Result<KafkaSubscription, EventsError> {
        let topics: Vec<String> = topics.iter().map(|t| self.topic(t)).collect();
        self.ensure_topics(&topics).await?;
        let consumer: StreamConsumer = ClientConfig::new()
            .set("bootstrap.servers", &self.brokers)
            .set("group.id", format!("{}{group}", self.prefix))
            .set("group.protocol", &self.group_protocol)
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .set("enable.partition.eof", "false")
            .create()?;
        let names: Vec<&str> = topics.iter().map(String::as_str).collect();
        consumer.subscribe(&names)?;
        Ok(KafkaSubscription {
            consumer,
            prefix: self.prefix.clone(),
        })
    }

    pub(super) async fn ping(&self) -> Result<(), EventsError> {
        let producer = self.producer.clone();
        tokio::task::spawn_blocking(move || {
            producer
                .client()
                .fetch_metadata(None, Duration::from_secs(2))
                .map(|_| ())
        })
        .await
        .map_err(|e| EventsError::Backend(e.to_string()))??;
        Ok(())
    }

    pub(super) async fn flush(&self, timeout: Duration) -> Result<(), EventsError> {
        let producer = self.producer.clone();
        tokio::task::spawn_blocking(move || producer.flush(timeout))
            .await
            .map_err(|e| EventsError::Backend(e.to_string()))??;
        Ok(())
    }
}

pub struct KafkaSubscription {
    consumer: StreamConsumer,
    /// Stripped from delivered topic names, so consumers see the platform's names.
    prefix: String,
}

impl KafkaSubscription {
    pub(super) async fn next(&mut self) -> Result<Delivery, EventsError> {
        loop {
            let message = self.consumer.recv().await?;
            let topic = message.topic();
            let topic = topic.strip_prefix(&self.prefix).unwrap_or(topic).to_owned();
            let key = message
                .key()
                .map(|k| String::from_utf8_lossy(k).into_owned())
                .unwrap_or_default();
            let position = Position::Kafka {
                partition: message.partition(),
                offset: message.offset(),
            };
            let parsed = message
                .payload()
                .ok_or_else(|| "empty payload".to_owned())
                .and_then(|p| serde_json::from_slice::<Envelope>(p).map_err(|e| e.to_string()));
            match parsed {
                Ok(event) => {
                    return Ok(Delivery {
                        topic,
                        key,
                        event,
                        position,
                    });
                }
                Err(error) => {
                    // A message that is not an envelope can never be handled; log it and
                    // move past it rather than block the partition forever. It is not
                    // committed here: events read before it may not be handled yet, and
                    // the next commit on its partition covers it.
                    tracing::error!(topic, ?position, %error, "skipping a message that is not an envelope");
                }
            }
        }
    }

    /// Records the deliveries (the last of each partition) as handled, in one commit.
    pub(super) fn commit(&mut self, deliveries: &[&Delivery]) -> Result<(), EventsError> {
        if deliveries.is_empty() {
            return Ok(());
        }
        let mut list = TopicPartitionList::new();
        for delivery in deliveries {
            let Position::Kafka { partition, offset } = delivery.position else {
                return Err(EventsError::Config(
                    "a local delivery cannot be committed to Kafka".into(),
                ));
            };
            list.add_partition_offset(
                &format!("{}{}", self.prefix, delivery.topic),
                partition,
                Offset::Offset(offset + 1),
            )?;
        }
        self.consumer.commit(&list, CommitMode::Async)?;
        Ok(())
    }
}

impl Drop for KafkaSubscription {
    fn drop(&mut self) {
        // Leave the group now so its partitions move to the next consumer at once.
        self.consumer.unsubscribe();
    }
}
