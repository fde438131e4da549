//! The notification service's own settings: `[notification]` in the configuration
//! file, `SOMAGENT_NOTIFICATION__<KEY>` in the environment.

use std::time::Duration;

use anyhow::{Context, bail};
use serde::Deserialize;

use crate::domain::retry::RetrySchedule;
use crate::sender::SenderConfig;

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NotificationConfig {
    /// Webhook endpoints may be on private and loopback addresses (tests, private
    /// installations). Off: the platform cannot be made to call its own services.
    pub allow_private_networks: bool,
    /// Seconds between a failed webhook try and the next, comma-separated; one more
    /// try than entries, then the delivery is dead.
    pub retry_schedule_secs: String,
    /// The longest a webhook try waits for an answer.
    pub attempt_timeout_secs: u64,
    /// Webhook tries in flight at once, and to one endpoint.
    pub concurrency: usize,
    pub per_endpoint: usize,
    /// An endpoint whose deliveries all failed for this long is disabled.
    pub disable_after_secs: u64,
    /// Notifications older than this leave the inboxes.
    pub retention_days: u64,
}

impl Default for NotificationConfig {
    fn default() -> Self {
        Self {
            allow_private_networks: false,
            retry_schedule_secs: "5,300,1800,7200,18000,36000,36000".into(),
            attempt_timeout_secs: 15,
            concurrency: 64,
            per_endpoint: 4,
            disable_after_secs: 5 * 86_400,
            retention_days: 90,
        }
    }
}

impl NotificationConfig {
    pub fn sender(&self) -> anyhow::Result<SenderConfig> {
        let delays = self
            .retry_schedule_secs
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::parse::<u64>)
            .collect::<Result<Vec<_>, _>>()
            .context("notification.retry_schedule_secs is seconds, comma-separated")?;
        if self.concurrency == 0 || self.per_endpoint == 0 || self.attempt_timeout_secs == 0 {
            bail!("notification.concurrency, per_endpoint and attempt_timeout_secs are at least 1");
        }
        Ok(SenderConfig {
            schedule: RetrySchedule::from_secs(&delays),
            concurrency: self.concurrency,
            per_endpoint: self.per_endpoint.min(self.concurrency),
            attempt_timeout: Duration::from_secs(self.attempt_timeout_secs),
            disable_after: Duration::from_secs(self.disable_after_secs),
            poll: Duration::from_secs(1),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_read_and_a_bad_schedule_does_not() {
        let sender = NotificationConfig::default().sender().unwrap();
        assert_eq!(sender.schedule, RetrySchedule::default());
        let bad = NotificationConfig {
            retry_schedule_secs: "5,soon".into(),
            ..NotificationConfig::default()
        };
        assert!(bad.sender().is_err());
    }
}
