//! Sends the outgoing queue (`emails`) on one channel: a few messages at a time, each
//! try recorded; failures are tried again on the retry schedule, then the message is
//! dead. The channel's own work is its [`Carrier`]: SMTP for email ([`Smtp`]), the
//! tenant's Slack tool for Slack (`slack::Slack`).

use std::sync::Arc;
use std::time::Duration;

use lettre::message::{Mailbox, header::ContentType};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use somagent_common::CancellationToken;
use somagent_common::clock::unix_now_ms;
use somagent_common::metrics::Metrics;
use tokio::sync::Notify;
use tokio::task::JoinSet;

use crate::domain::retry::{self, RetrySchedule};
use crate::emails::{DueEmail, Emails};

/// Messages in flight at once, per channel.
const CONCURRENCY: usize = 8;
/// The longest one send may take.
const SEND_TIMEOUT: Duration = Duration::from_secs(30);

/// One channel's way out.
pub trait Carrier: Send + Sync + 'static {
    /// `email`, `slack`: the queue rows it sends.
    const CHANNEL: &'static str;
    fn send(&self, message: &DueEmail) -> impl Future<Output = Result<(), String>> + Send;
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    channel: &'static str,
    outcome: &'static str,
}

/// Tries per channel and outcome, registered once for every courier.
#[derive(Clone)]
pub struct CourierMetrics(Family<OutcomeLabels, Counter>);

impl CourierMetrics {
    pub fn register(metrics: &Metrics) -> Self {
        let family = Family::default();
        metrics.register(
            "outgoing_attempts",
            "Email and Slack sending tries, by channel and outcome (sent, failed, dead)",
            family.clone(),
        );
        Self(family)
    }
}

pub struct Courier<C: Carrier> {
    pub queue: Emails,
    pub carrier: C,
    pub schedule: RetrySchedule,
    pub wake: Arc<Notify>,
    pub metrics: CourierMetrics,
}

impl<C: Carrier> Courier<C> {
    pub async fn run(self, stopping: CancellationToken) {
        let this = Arc::new(self);
        let mut flying: JoinSet<()> = JoinSet::new();
        let mut failing = false;
        loop {
            let free = CONCURRENCY.saturating_sub(flying.len());
            if free > 0 {
                let lease = unix_now_ms() + 2 * SEND_TIMEOUT.as_millis() as i64;
                match this.queue.claim_due(C::CHANNEL, free, lease).await {
                    Ok(due) => {
                        failing = false;
                        for message in due {
                            let this = this.clone();
                            flying.spawn(async move { this.try_once(message).await });
                        }
                    }
                    Err(e) => {
                        if !failing {
                            tracing::warn!(error = %e, channel = C::CHANNEL, "cannot read the outgoing queue");
                        }
                        failing = true;
                    }
                }
            }
            tokio::select! {
                () = stopping.cancelled() => break,
                Some(_) = flying.join_next(), if !flying.is_empty() => {}
                () = this.wake.notified() => {}
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
        while flying.join_next().await.is_some() {}
    }

    async fn try_once(&self, message: DueEmail) {
        let failure = match tokio::time::timeout(SEND_TIMEOUT, self.carrier.send(&message)).await {
            Ok(result) => result.err(),
            Err(_) => Some(format!("no answer within {} s", SEND_TIMEOUT.as_secs())),
        };
        let next_at = failure.as_ref().and_then(|_| {
            self.schedule
                .after(message.attempts + 1, retry::spread())
                .map(|wait| unix_now_ms() + wait.as_millis() as i64)
        });
        let outcome = match (&failure, next_at) {
            (None, _) => "sent",
            (Some(_), Some(_)) => "failed",
            (Some(_), None) => "dead",
        };
        self.metrics
            .0
            .get_or_create(&OutcomeLabels {
                channel: C::CHANNEL,
                outcome,
            })
            .inc();
        if let Some(why) = &failure {
            tracing::warn!(message = %message.id, tenant = %message.tenant, channel = C::CHANNEL,
                tries = message.attempts + 1, outcome, error = %why, "a message was not sent");
        }
        if let Err(e) = self
            .queue
            .record(&message, failure.as_deref(), next_at)
            .await
        {
            // The lease runs out and it is tried again: at least once.
            tracing::warn!(message = %message.id, error = %e, "cannot record a send");
        }
    }
}

/// Email over SMTP (`SOMAGENT_SMTP_URL`: `smtp://host:587` with STARTTLS when offered,
/// `?tls=required` to insist, `smtps://` for implicit TLS, credentials in the URL's
/// user and password; with credentials, STARTTLS is required unless the URL says
/// `tls=none`, so a password never crosses in clear by default). Each email's `Message-ID` is made of its queue id, so a
/// receiver can drop a duplicate left by a crash between sending and recording.
pub struct Smtp {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
}

impl Smtp {
    pub fn new(url: &str, from: &str) -> anyhow::Result<Self> {
        let url = with_starttls(url);
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(&url)
            .map_err(|e| anyhow::anyhow!("SOMAGENT_SMTP_URL does not read: {e}"))?
            .timeout(Some(SEND_TIMEOUT))
            .build();
        let from: Mailbox = from
            .parse()
            .map_err(|e| anyhow::anyhow!("SOMAGENT_SMTP_FROM `{from}` is not an address: {e}"))?;
        Ok(Self { transport, from })
    }
}

/// `url` with a `tls=` choice: the one it names, or STARTTLS (required with
/// credentials, when offered without).
fn with_starttls(url: &str) -> String {
    let Ok(mut parsed) = url::Url::parse(url) else {
        return url.to_owned();
    };
    if parsed.scheme() != "smtp" || parsed.query_pairs().any(|(k, _)| k == "tls") {
        return url.to_owned();
    }
    let tls = if parsed.username().is_empty() {
        "opportunistic"
    } else {
        "required"
    };
    parsed.query_pairs_mut().append_pair("tls", tls);
    parsed.to_string()
}

impl Carrier for Smtp {
    const CHANNEL: &'static str = "email";

    async fn send(&self, email: &DueEmail) -> Result<(), String> {
        let to: Mailbox = email
            .address
            .parse()
            .map_err(|e| format!("the address does not read: {e}"))?;
        let message = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(&email.subject)
            .message_id(Some(format!("<{}@somagent>", email.id)))
            .header(ContentType::TEXT_PLAIN)
            .body(email.body.clone())
            .map_err(|e| format!("the message does not build: {e}"))?;
        self.transport
            .send(message)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string().chars().take(500).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::with_starttls;

    #[test]
    fn smtp_urls_ask_for_starttls_and_require_it_with_a_password() {
        assert_eq!(
            with_starttls("smtp://mail:587"),
            "smtp://mail:587?tls=opportunistic"
        );
        assert_eq!(
            with_starttls("smtp://ana:pw@mail:587"),
            "smtp://ana:pw@mail:587?tls=required"
        );
        assert_eq!(
            with_starttls("smtp://mail:25?tls=none"),
            "smtp://mail:25?tls=none"
        );
        assert_eq!(with_starttls("smtps://ana:pw@mail"), "smtps://ana:pw@mail");
    }
}
