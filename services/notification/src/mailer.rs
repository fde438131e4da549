//! Sends queued emails over SMTP (`SOMAGENT_SMTP_URL`: `smtp://host:587` with STARTTLS
//! when offered, `?tls=required` to insist, `smtps://` for implicit TLS, credentials in
//! the URL's user and password), a few at a time, each try recorded; failures are tried
//! again on the retry schedule, then the email is dead. Each email carries a
//! `Message-ID` made of its queue id, so a receiver can drop a duplicate left by a
//! crash between sending and recording.

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

/// Emails in flight at once.
const CONCURRENCY: usize = 8;
/// The longest one SMTP exchange may take.
const SMTP_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

pub struct Mailer {
    emails: Emails,
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    schedule: RetrySchedule,
    wake: Arc<Notify>,
    attempts: Family<OutcomeLabels, Counter>,
}

impl Mailer {
    /// A mailer for the SMTP server at `url`, sending as `from`.
    pub fn new(
        emails: Emails,
        url: &str,
        from: &str,
        schedule: RetrySchedule,
        wake: Arc<Notify>,
        metrics: &Metrics,
    ) -> anyhow::Result<Self> {
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
            .map_err(|e| anyhow::anyhow!("SOMAGENT_SMTP_URL does not read: {e}"))?
            .timeout(Some(SMTP_TIMEOUT))
            .build();
        let from: Mailbox = from
            .parse()
            .map_err(|e| anyhow::anyhow!("SOMAGENT_SMTP_FROM `{from}` is not an address: {e}"))?;
        let attempts = Family::default();
        metrics.register(
            "email_attempts",
            "Email sending tries, by outcome (sent, failed, dead)",
            attempts.clone(),
        );
        Ok(Self {
            emails,
            transport,
            from,
            schedule,
            wake,
            attempts,
        })
    }

    pub async fn run(self, stopping: CancellationToken) {
        let this = Arc::new(self);
        let mut flying: JoinSet<()> = JoinSet::new();
        let mut failing = false;
        loop {
            let free = CONCURRENCY.saturating_sub(flying.len());
            if free > 0 {
                let lease = unix_now_ms() + 2 * SMTP_TIMEOUT.as_millis() as i64;
                match this.emails.claim_due(free, lease).await {
                    Ok(due) => {
                        failing = false;
                        for email in due {
                            let this = this.clone();
                            flying.spawn(async move { this.try_once(email).await });
                        }
                    }
                    Err(e) => {
                        if !failing {
                            tracing::warn!(error = %e, "cannot read the email queue");
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

    async fn try_once(&self, email: DueEmail) {
        let failure = self.send(&email).await.err();
        let next_at = failure.as_ref().and_then(|_| {
            self.schedule
                .after(email.attempts + 1, retry::spread())
                .map(|wait| unix_now_ms() + wait.as_millis() as i64)
        });
        let outcome = match (&failure, next_at) {
            (None, _) => "sent",
            (Some(_), Some(_)) => "failed",
            (Some(_), None) => "dead",
        };
        self.attempts
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
        if let Some(why) = &failure {
            tracing::warn!(email = %email.id, tenant = %email.tenant, tries = email.attempts + 1,
                outcome, error = %why, "an email was not sent");
        }
        if let Err(e) = self
            .emails
            .record(&email, failure.as_deref(), next_at)
            .await
        {
            // The lease runs out and it is tried again: at least once.
            tracing::warn!(email = %email.id, error = %e, "cannot record an email try");
        }
    }

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
