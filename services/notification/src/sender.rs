//! Sends queued webhook deliveries: claims due ones from the store, sends each signed
//! (a fresh timestamp and signature per try, the same `webhook-id` and body), and
//! records the try. Deliveries run concurrently, at most a few per endpoint and half
//! the slots per tenant, so a slow or dead endpoint holds only its own slots and one
//! tenant's cannot hold everyone's: the claim leaves out endpoints and tenants whose
//! slots are full, and a try ends at its timeout.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use serde_json::json;
use somagent_common::CancellationToken;
use somagent_common::clock::unix_now_ms;
use somagent_common::infra::events::{Envelope, topics};
use somagent_common::infra::outbox::Outbox;
use somagent_common::metrics::Metrics;
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::task::JoinSet;

use crate::domain::retry::{self, RetrySchedule};
use crate::domain::signature;
use crate::webhooks::{Due, Health, Outcome, Webhooks};

/// How the sender behaves (`[notification]` settings).
#[derive(Debug, Clone)]
pub struct SenderConfig {
    pub schedule: RetrySchedule,
    /// Tries in flight at once, all endpoints together.
    pub concurrency: usize,
    /// Tries in flight at once to one endpoint.
    pub per_endpoint: usize,
    pub attempt_timeout: Duration,
    /// An endpoint failing this long without a success is disabled.
    pub disable_after: Duration,
    /// How often due deliveries are looked for when nothing new was queued.
    pub poll: Duration,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

#[derive(Clone)]
struct SenderMetrics {
    attempts: Family<OutcomeLabels, Counter>,
    dead: Counter,
    disabled: Counter,
}

impl SenderMetrics {
    fn register(metrics: &Metrics) -> Self {
        let this = Self {
            attempts: Family::default(),
            dead: Counter::default(),
            disabled: Counter::default(),
        };
        metrics.register(
            "webhook_attempts",
            "Webhook delivery tries, by outcome (delivered, failed)",
            this.attempts.clone(),
        );
        metrics.register(
            "webhook_dead",
            "Webhook deliveries whose every try failed (the dead-letter list)",
            this.dead.clone(),
        );
        metrics.register(
            "webhook_endpoints_disabled",
            "Webhook endpoints disabled for failing too long",
            this.disabled.clone(),
        );
        this
    }
}

/// A try to record, and where to say how it went.
struct Record {
    due: Due,
    outcome: Outcome,
    next_at: Option<i64>,
    done: oneshot::Sender<Result<(Due, Outcome, Health), String>>,
}

pub struct Sender {
    webhooks: Webhooks,
    /// Tries to record: one task commits all that are waiting at once.
    records: mpsc::Sender<Record>,
    waiting: Option<mpsc::Receiver<Record>>,
    http: reqwest::Client,
    config: SenderConfig,
    /// Woken when deliveries are queued, so they go out at once.
    wake: Arc<Notify>,
    outbox: Outbox,
    metrics: SenderMetrics,
}

/// The HTTP client deliveries are sent with: no redirects followed (a 3xx is a failed
/// try), and, unless the operator allows private networks, names that resolve to a
/// private address refused at connect time.
pub fn http_client(allow_private: bool) -> anyhow::Result<reqwest::Client> {
    let mut builder = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("somagent-webhooks/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(10))
        .pool_max_idle_per_host(4)
        // A proxy from the environment would resolve names itself, past the guard.
        .no_proxy();
    if !allow_private {
        builder = builder.dns_resolver(Arc::new(somagent_common::egress::PublicOnly));
    }
    Ok(builder.build()?)
}

impl Sender {
    pub fn new(
        webhooks: Webhooks,
        config: SenderConfig,
        wake: Arc<Notify>,
        outbox: Outbox,
        metrics: &Metrics,
    ) -> anyhow::Result<Self> {
        let (records, waiting) = mpsc::channel(1024);
        Ok(Self {
            http: http_client(webhooks.allows_private())?,
            records,
            waiting: Some(waiting),
            webhooks,
            config,
            wake,
            outbox,
            metrics: SenderMetrics::register(metrics),
        })
    }

    /// Sends until `stopping`; tries in flight then finish (each within its timeout).
    pub async fn run(mut self, stopping: CancellationToken) {
        let waiting = self.waiting.take();
        let recorder = waiting.map(|w| {
            let disable_after =
                i64::try_from(self.config.disable_after.as_millis()).unwrap_or(i64::MAX / 2);
            tokio::spawn(record_tries(self.webhooks.clone(), w, disable_after))
        });
        let this = Arc::new(self);
        let mut flying: JoinSet<(String, String)> = JoinSet::new();
        let mut per_endpoint: HashMap<String, usize> = HashMap::new();
        let mut per_tenant: HashMap<String, usize> = HashMap::new();
        // One tenant holds at most half the slots: its endpoints timing out cannot
        // keep every other tenant's deliveries waiting.
        let tenant_share = (this.config.concurrency / 2).max(this.config.per_endpoint);
        let mut failing = false;
        loop {
            // Claim as much as there are slots for.
            loop {
                let free = this.config.concurrency.saturating_sub(flying.len());
                // Each claim is a commit: claim when a few slots are free, not after
                // every try (the queue may be one SQLite file that syncs each commit).
                if free == 0 || (!flying.is_empty() && free < (this.config.concurrency / 8).max(1))
                {
                    break;
                }
                let busy: Vec<String> = per_endpoint
                    .iter()
                    .filter(|(_, n)| **n >= this.config.per_endpoint)
                    .map(|(e, _)| e.clone())
                    .collect();
                let busy_tenants: Vec<String> = per_tenant
                    .iter()
                    .filter(|(_, n)| **n >= tenant_share)
                    .map(|(t, _)| t.clone())
                    .collect();
                let lease = unix_now_ms()
                    + i64::try_from(
                        (this.config.attempt_timeout + Duration::from_secs(30)).as_millis(),
                    )
                    .unwrap_or(i64::MAX / 2);
                let claimed = match this
                    .webhooks
                    .claim_due_fairly(free.min(64), lease, &busy, &busy_tenants)
                    .await
                {
                    Ok(claimed) => {
                        failing = false;
                        claimed
                    }
                    Err(e) => {
                        if !failing {
                            tracing::warn!(error = %e, "cannot read the webhook delivery queue");
                        }
                        failing = true;
                        break;
                    }
                };
                if claimed.is_empty() {
                    break;
                }
                let mut later = Vec::new();
                for due in claimed {
                    let tenant = due.tenant.as_str().to_owned();
                    let n = per_endpoint.entry(due.endpoint_id.clone()).or_default();
                    let t = per_tenant.get(&tenant).copied().unwrap_or(0);
                    if *n >= this.config.per_endpoint || t >= tenant_share {
                        later.push(due.id);
                        continue;
                    }
                    *n += 1;
                    *per_tenant.entry(tenant.clone()).or_default() += 1;
                    let this = this.clone();
                    flying.spawn(async move {
                        let endpoint = due.endpoint_id.clone();
                        this.try_once(due).await;
                        (endpoint, tenant)
                    });
                }
                if let Err(e) = this.webhooks.unclaim(&later).await {
                    tracing::warn!(error = %e, "cannot give back webhook deliveries; they wait for their lease");
                }
            }
            tokio::select! {
                () = stopping.cancelled() => break,
                Some(done) = flying.join_next(), if !flying.is_empty() => {
                    let mut finished = vec![done];
                    while let Some(more) = flying.try_join_next() {
                        finished.push(more);
                    }
                    for (endpoint, tenant) in finished.into_iter().flatten() {
                        for (counts, key) in [(&mut per_endpoint, endpoint), (&mut per_tenant, tenant)] {
                            if let Some(n) = counts.get_mut(&key) {
                                *n = n.saturating_sub(1);
                                if *n == 0 {
                                    counts.remove(&key);
                                }
                            }
                        }
                    }
                }
                () = this.wake.notified() => {}
                () = tokio::time::sleep(this.config.poll) => {}
            }
        }
        while flying.join_next().await.is_some() {}
        drop(this);
        if let Some(recorder) = recorder {
            let _ = recorder.await;
        }
    }

    /// One try of `due`, recorded whatever happens.
    async fn try_once(&self, due: Due) {
        let outcome = self.send(&due).await;
        let delivered = outcome.succeeded();
        let next_at = if delivered {
            None
        } else {
            self.config
                .schedule
                .after(due.attempts + 1, retry::spread())
                .map(|wait| unix_now_ms() + i64::try_from(wait.as_millis()).unwrap_or(i64::MAX / 2))
        };
        self.metrics
            .attempts
            .get_or_create(&OutcomeLabels {
                outcome: if delivered { "delivered" } else { "failed" },
            })
            .inc();
        if !delivered && next_at.is_none() {
            self.metrics.dead.inc();
            tracing::warn!(delivery = %due.id, endpoint = %due.endpoint_id, tenant = %due.tenant,
                tries = due.attempts + 1, "a webhook delivery failed its last try: dead-lettered");
        }
        let (done, recorded) = oneshot::channel();
        let asked = self
            .records
            .send(Record {
                due,
                outcome,
                next_at,
                done,
            })
            .await;
        let answer = match asked {
            Ok(()) => recorded
                .await
                .unwrap_or_else(|_| Err("the recorder stopped".into())),
            Err(_) => Err("the recorder stopped".into()),
        };
        let (due, outcome) = match answer {
            Ok((due, outcome, health)) => match health {
                Health::Fine => return,
                Health::Disabled => (due, outcome),
            },
            // The lease runs out and the delivery is tried again: at least once.
            Err(e) => {
                tracing::warn!(error = %e, "cannot record a webhook try");
                return;
            }
        };
        self.metrics.disabled.inc();
        self.announce_disabled(&due, &outcome).await;
    }

    async fn send(&self, due: &Due) -> Outcome {
        // The resolver never sees an IP literal: an endpoint made while private
        // networks were allowed is checked again now.
        if !self.webhooks.allows_private()
            && let Err(e) = url::Url::parse(&due.url)
                .map_err(|e| e.to_string())
                .and_then(|u| somagent_common::egress::check_literal(&u))
        {
            return Outcome {
                status_code: 0,
                latency_ms: 0,
                error: e,
            };
        }
        let timestamp = unix_now_ms() / 1000;
        let signed = match signature::sign(
            &due.secret,
            &due.message_id,
            timestamp,
            due.payload.as_bytes(),
        ) {
            Ok(signed) => signed,
            Err(e) => {
                return Outcome {
                    status_code: 0,
                    latency_ms: 0,
                    error: e,
                };
            }
        };
        let started = Instant::now();
        let request = self
            .http
            .post(&due.url)
            .header("content-type", "application/json")
            .header("webhook-id", &due.message_id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signed)
            .body(due.payload.clone())
            .send();
        let answer = tokio::time::timeout(self.config.attempt_timeout, request).await;
        let latency_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        match answer {
            Ok(Ok(response)) => {
                let status = response.status();
                Outcome {
                    status_code: u32::from(status.as_u16()),
                    latency_ms,
                    error: if status.is_success() {
                        String::new()
                    } else {
                        format!("the endpoint answered {status}")
                    },
                }
            }
            Ok(Err(e)) => Outcome {
                status_code: 0,
                latency_ms,
                error: describe(&e),
            },
            Err(_) => Outcome {
                status_code: 0,
                latency_ms,
                error: format!(
                    "no answer within {} s",
                    self.config.attempt_timeout.as_secs_f64()
                ),
            },
        }
    }

    /// Tells the tenant's administrators that an endpoint was disabled.
    async fn announce_disabled(&self, due: &Due, outcome: &Outcome) {
        tracing::warn!(endpoint = %due.endpoint_id, tenant = %due.tenant,
            "a webhook endpoint failed too long and was disabled");
        let event = Envelope::new(
            "webhook.disabled",
            "notification",
            due.tenant.clone(),
            json!({
                "audience": "tenant_admins",
                "severity": "warning",
                "title": "A webhook endpoint was disabled",
                "body": format!(
                    "Deliveries to webhook {} ({}) failed for {} hours without a success (the last: {}). \
                     Fix the endpoint, enable it again, and retry its dead deliveries.",
                    due.endpoint_id,
                    origin_of(&due.url),
                    self.config.disable_after.as_secs() / 3600,
                    outcome.error
                ),
                "webhook_id": due.endpoint_id,
                "origin": origin_of(&due.url),
            }),
        );
        if let Err(e) = self
            .outbox
            .publish(topics::NOTIFICATIONS, due.tenant.as_str(), &event)
            .await
        {
            tracing::warn!(error = %e, "cannot announce a disabled webhook endpoint");
        }
    }
}

/// `scheme://host[:port]` of an endpoint: its path and query may carry a credential
/// (many services put one in the webhook URL) and go nowhere else.
fn origin_of(url: &str) -> String {
    url::Url::parse(url)
        .map(|u| u.origin().ascii_serialization())
        .unwrap_or_default()
}

/// Records tries as they finish, all that are waiting in one commit.
async fn record_tries(
    webhooks: Webhooks,
    mut waiting: mpsc::Receiver<Record>,
    disable_after_ms: i64,
) {
    let mut batch = Vec::new();
    while waiting.recv_many(&mut batch, 256).await > 0 {
        let tries: Vec<(&Due, &Outcome, Option<i64>)> = batch
            .iter()
            .map(|r| (&r.due, &r.outcome, r.next_at))
            .collect();
        let result = webhooks.record_many(&tries, disable_after_ms).await;
        match result {
            Ok(healths) => {
                for (record, health) in batch.drain(..).zip(healths) {
                    let _ = record.done.send(Ok((record.due, record.outcome, health)));
                }
            }
            Err(e) => {
                for record in batch.drain(..) {
                    let _ = record.done.send(Err(e.to_string()));
                }
            }
        }
    }
}

/// A transport failure in words, without the request (its URL is the tenant's own;
/// nothing secret is in a reqwest error, but the chain is what helps).
fn describe(e: &reqwest::Error) -> String {
    let what = if e.is_connect() {
        "cannot connect"
    } else if e.is_timeout() {
        "timed out"
    } else {
        "the request failed"
    };
    let mut text = what.to_owned();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text.chars().take(500).collect()
}
