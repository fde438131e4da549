//! The workflow layer (DESIGN §5): workflows are plain async functions over a small
//! [`WorkflowContext`]; all their I/O happens in activities, each with an explicit
//! timeout and a bounded retry policy, so an engine can record, retry and replay them.
//! The `local` engine journals each activity's result in the relational store and, after
//! a restart, replays a workflow from its journal and carries on from the last completed
//! activity. The `temporal` engine registers the same workflows and activities with a
//! Temporal worker; Temporal keeps the history, retries and times out activities, and
//! moves a run to another worker when its worker dies.

pub mod local;
pub mod temporal;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

pub type WorkflowFuture = Pin<Box<dyn Future<Output = Result<Value, ActivityError>> + Send>>;
/// A workflow: its context and input in, its result out. Registered by kind with
/// whichever engine runs it.
pub type WorkflowFn = Arc<dyn Fn(Arc<dyn WorkflowContext>, Value) -> WorkflowFuture + Send + Sync>;

/// How an activity is run: how long one attempt may take, and how often to try.
#[derive(Debug, Clone, Copy)]
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

    /// The wait before attempt `attempt` (1-based; the first has none).
    pub fn backoff(&self, attempt: u32) -> Duration {
        self.initial_backoff * 2u32.saturating_pow(attempt.saturating_sub(2)).min(64)
    }
}

/// Why an activity failed, and whether another attempt may succeed. Validation errors
/// are not retried.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct ActivityError {
    pub message: String,
    pub retryable: bool,
    /// The platform error code (`validation_failed`, `timeout`, ...), for the caller.
    pub code: String,
}

impl ActivityError {
    pub fn retryable(code: &str, message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            retryable: true,
            code: code.into(),
        }
    }

    pub fn fatal(code: &str, message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            retryable: false,
            code: code.into(),
        }
    }
    /// What a client (a watcher, `conversation.events`) may be told. The messages of
    /// refusals come from services' problems, written for callers; anything else (a
    /// database's or an engine's own words) goes to the log under a correlation id,
    /// and the client gets the id.
    pub fn public(&self) -> Value {
        const FOR_CALLERS: [&str; 9] = [
            "bad_request",
            "validation_failed",
            "unauthorized",
            "forbidden",
            "not_found",
            "conflict",
            "payload_too_large",
            "rate_limited",
            "budget_exhausted",
        ];
        if FOR_CALLERS.contains(&self.code.as_str()) {
            return serde_json::json!({ "code": self.code, "message": self.message });
        }
        let id = somagent_common::error::correlation_id();
        tracing::warn!(correlation_id = %id, code = %self.code, cause = %self.message, "a turn failed");
        let (code, message) = match self.code.as_str() {
            "timeout" => ("timeout", "the turn took too long"),
            _ => ("unavailable", "the turn failed"),
        };
        serde_json::json!({
            "code": code,
            "message": format!("{message} (correlation id {id})"),
            "correlation_id": id,
        })
    }

    /// [`ActivityError::public`] of a journaled error; whatever does not read as one is
    /// reported as a failure with nothing of it passed on.
    pub fn public_of(raw: &Value) -> Value {
        serde_json::from_value::<Self>(raw.clone())
            .unwrap_or_else(|_| Self::fatal("internal", raw.to_string()))
            .public()
    }
}

/// What a workflow may do besides computing: run activities and read time. Nothing
/// else: a workflow that did its own I/O could not be replayed.
#[tonic::async_trait]
pub trait WorkflowContext: Send + Sync {
    /// The workflow's stable id (`session-<id>-turn-<n>`).
    fn workflow_id(&self) -> &str;

    /// Runs activity `name` with `input`, or returns its journaled result on replay.
    async fn activity(
        &self,
        name: &str,
        input: Value,
        options: ActivityOptions,
    ) -> Result<Value, ActivityError>;
}

/// Runs one activity attempt.
#[tonic::async_trait]
pub trait Activities: Send + Sync {
    async fn run(
        &self,
        workflow_id: &str,
        name: &str,
        input: Value,
    ) -> Result<Value, ActivityError>;
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Completed(Value),
    Failed(ActivityError),
}

/// Starts workflow runs and tells how they ended, on whichever engine is configured.
#[tonic::async_trait]
pub trait Engine: Send + Sync {
    /// Starts workflow `kind` as run `id`; a run that exists already is left as it is
    /// (a retried start is idempotent). True if this call started it.
    async fn start(
        &self,
        kind: &str,
        id: &str,
        tenant: &str,
        input: &Value,
    ) -> anyhow::Result<bool>;

    /// The run's outcome, if it has ended.
    async fn outcome(&self, id: &str) -> anyhow::Result<Option<Outcome>>;
}

/// What the engines' contract tests run.
#[cfg(test)]
pub(crate) mod testing {
    use std::collections::HashMap;
    use std::sync::Mutex;
    use std::time::Duration;

    use serde_json::{Value, json};

    use super::{Activities, ActivityError};

    /// Activities that count their attempts and fail as told: `flaky` fails twice then
    /// succeeds, `invalid` fails for good, `slow` outlasts any timeout; any other
    /// answers with its run, input and attempt.
    pub struct Scripted {
        flaky: &'static str,
        invalid: &'static str,
        slow: &'static str,
        attempts: Mutex<HashMap<String, u32>>,
    }

    impl Scripted {
        pub fn new(flaky: &'static str, invalid: &'static str, slow: &'static str) -> Self {
            Self {
                flaky,
                invalid,
                slow,
                attempts: Mutex::default(),
            }
        }

        pub fn attempts(&self, name: &str) -> u32 {
            self.attempts
                .lock()
                .unwrap()
                .get(name)
                .copied()
                .unwrap_or(0)
        }
    }

    #[tonic::async_trait]
    impl Activities for Scripted {
        async fn run(
            &self,
            workflow_id: &str,
            name: &str,
            input: Value,
        ) -> Result<Value, ActivityError> {
            let n = {
                let mut attempts = self.attempts.lock().unwrap();
                let n = attempts.entry(name.to_owned()).or_default();
                *n += 1;
                *n
            };
            if name == self.flaky && n < 3 {
                Err(ActivityError::retryable("unavailable", "not yet"))
            } else if name == self.invalid {
                Err(ActivityError::fatal("validation_failed", "bad input"))
            } else if name == self.slow {
                tokio::time::sleep(Duration::from_secs(30)).await;
                Ok(Value::Null)
            } else {
                Ok(json!({ "name": name, "run": workflow_id, "input": input, "attempt": n }))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::ActivityError;

    #[test]
    fn a_failures_own_words_never_reach_the_client() {
        let broken = ActivityError::retryable(
            "unavailable",
            "error returned from database: password authentication failed for user \"somagent\"",
        );
        let public = broken.public();
        assert!(!public.to_string().contains("database"), "{public}");
        assert!(!public.to_string().contains("somagent\\\""), "{public}");
        let id = public["correlation_id"].as_str().unwrap();
        assert!(public["message"].as_str().unwrap().contains(id));
        // A refusal a service wrote for its caller is passed on as it is.
        let refused =
            ActivityError::fatal("forbidden", "this needs the capability `sessions:write`");
        assert_eq!(refused.public()["message"], refused.message.as_str());
        assert_eq!(
            ActivityError::public_of(&serde_json::json!("garbage"))["code"],
            "unavailable"
        );
    }
}
