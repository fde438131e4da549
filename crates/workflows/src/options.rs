use std::time::Duration;

/// How an activity is run: how long one attempt may take, and how often to try.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ActivityOptions {
    pub start_to_close: Duration,
    pub max_attempts: u32,
    pub initial_backoff: Duration,
    /// How long an attempt may go without a sign of life before another worker takes
    /// it over (Temporal's heartbeat timeout; the engine beats while the attempt runs).
    /// Unset, the step is short: on Temporal a local activity, run by the workflow's
    /// own worker without a round trip through the server per step.
    pub heartbeat: Option<Duration>,
}

impl ActivityOptions {
    pub const fn new(start_to_close: Duration, max_attempts: u32) -> Self {
        Self {
            start_to_close,
            max_attempts,
            initial_backoff: Duration::from_millis(200),
            heartbeat: None,
        }
    }

    /// The same, taken over after `after` without a heartbeat.
    pub const fn with_heartbeat(mut self, after: Duration) -> Self {
        self.heartbeat = Some(after);
        self
    }

    /// The same, with the first retry after `backoff` (doubling, up to 64 times that).
    pub const fn with_backoff(mut self, backoff: Duration) -> Self {
        self.initial_backoff = backoff;
        self
    }

    /// The wait before attempt `attempt` (1-based; the first has none).
    pub fn backoff(&self, attempt: u32) -> Duration {
        self.initial_backoff * 2u32.saturating_pow(attempt.saturating_sub(2)).min(64)
    }
}
