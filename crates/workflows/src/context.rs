//! What a workflow may do, and the typed face it does it through.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::ActivityError;
use crate::options::ActivityOptions;
use crate::registry::{Activity, Workflow};

/// One thing a workflow waits on. Each is a step of the run's history: recorded when it
/// completes, answered from the record on replay. Steps are numbered in the order the
/// workflow first asks for them, so a workflow must ask in the same order every time
/// (concurrent steps are fine when they are created in a fixed order).
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Answers with the activity's output.
    Activity {
        name: String,
        input: Value,
        options: ActivityOptions,
    },
    /// Answers `null` once the duration has passed (counted from the first ask, across
    /// restarts).
    Sleep(Duration),
    /// Answers `{"received": payload}` with the oldest unread signal of that name, or
    /// `null` when none came within the timeout.
    Signal { name: String, timeout: Duration },
    /// Starts workflow `kind` as run `id` (once) and answers with its result.
    Child {
        kind: String,
        id: String,
        input: Value,
    },
    /// Answers the time, in milliseconds since the epoch, as first recorded.
    Now,
}

impl Step {
    /// The step's kind and name as recorded, to tell a replay that took another path.
    pub fn label(&self) -> (&'static str, String) {
        match self {
            Step::Activity { name, .. } => ("activity", name.clone()),
            Step::Sleep(d) => ("sleep", format!("{} ms", d.as_millis())),
            Step::Signal { name, .. } => ("signal", name.clone()),
            Step::Child { kind, id, .. } => ("child", format!("{kind} {id}")),
            Step::Now => ("now", String::new()),
        }
    }
}

/// Whether a step stops when its run is cancelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Cancellable,
    /// Runs even in a cancelled run: what a workflow does to leave things tidy (mark a
    /// session idle, release a reservation) after it learns it was cancelled.
    Cleanup,
}

/// What an engine gives a running workflow. Workflows use it through [`Ctx`].
#[tonic::async_trait]
pub trait WorkflowContext: Send + Sync {
    /// The run's stable id.
    fn workflow_id(&self) -> &str;

    /// Waits on `step`, or returns its recorded answer on replay. In a cancelled run a
    /// [`Scope::Cancellable`] step gets [`ActivityError::cancelled`] (the one running
    /// when the cancel came is stopped); a [`Scope::Cleanup`] step runs regardless.
    async fn step(&self, step: Step, scope: Scope) -> Result<Value, ActivityError>;

    /// Replaces the state queries read. Not a step: the latest wins, and a replay
    /// publishes again as it goes.
    fn publish(&self, state: Value);
}

/// The typed context a workflow function receives.
#[derive(Clone)]
pub struct Ctx {
    inner: Arc<dyn WorkflowContext>,
    draws: Arc<AtomicU64>,
    scope: Scope,
}

impl Ctx {
    pub fn new(inner: Arc<dyn WorkflowContext>) -> Self {
        Self {
            inner,
            draws: Arc::default(),
            scope: Scope::Cancellable,
        }
    }

    /// The same context, whose steps run even once the run is cancelled: for the
    /// clean-up a workflow does on its way out.
    pub fn cleanup(&self) -> Self {
        Self {
            scope: Scope::Cleanup,
            ..self.clone()
        }
    }

    pub fn workflow_id(&self) -> &str {
        self.inner.workflow_id()
    }

    /// Runs `activity` with `input`: its options bound each attempt and the retries.
    pub async fn activity<I: Serialize, O: DeserializeOwned>(
        &self,
        activity: &Activity<I, O>,
        input: &I,
    ) -> Result<O, ActivityError> {
        let input = serde_json::to_value(input)
            .map_err(|e| ActivityError::undecodable(activity.name, &e))?;
        let output = self
            .inner
            .step(
                Step::Activity {
                    name: activity.name.to_owned(),
                    input,
                    options: activity.options,
                },
                self.scope,
            )
            .await?;
        serde_json::from_value(output).map_err(|e| {
            ActivityError::undecodable(&format!("the output of {}", activity.name), &e)
        })
    }

    /// Sleeps for `duration`, durably: a restart does not start the wait again.
    pub async fn sleep(&self, duration: Duration) -> Result<(), ActivityError> {
        self.inner
            .step(Step::Sleep(duration), self.scope)
            .await
            .map(drop)
    }

    /// The next signal `name` sent to this run, waiting up to `timeout`; `None` if none
    /// came. Signals sent before the wait are kept, oldest first.
    pub async fn signal<T: DeserializeOwned>(
        &self,
        name: &str,
        timeout: Duration,
    ) -> Result<Option<T>, ActivityError> {
        let answer = self
            .inner
            .step(
                Step::Signal {
                    name: name.to_owned(),
                    timeout,
                },
                self.scope,
            )
            .await?;
        match answer.get("received") {
            None => Ok(None),
            Some(payload) => serde_json::from_value(payload.clone())
                .map(Some)
                .map_err(|e| {
                    ActivityError::fatal(
                        "validation_failed",
                        format!("signal `{name}` does not read: {e}"),
                    )
                }),
        }
    }

    /// Starts `workflow` as run `id` (a run with that id is not started twice) and
    /// waits for its result. The child's failure is the error; a cancelled parent
    /// cancels it.
    pub async fn child<I: Serialize, O: DeserializeOwned>(
        &self,
        workflow: &Workflow<I, O>,
        id: &str,
        input: &I,
    ) -> Result<O, ActivityError> {
        let input = serde_json::to_value(input)
            .map_err(|e| ActivityError::undecodable(workflow.kind, &e))?;
        let output = self
            .inner
            .step(
                Step::Child {
                    kind: workflow.kind.to_owned(),
                    id: id.to_owned(),
                    input,
                },
                self.scope,
            )
            .await?;
        serde_json::from_value(output)
            .map_err(|e| ActivityError::undecodable(&format!("the result of child {id}"), &e))
    }

    /// Publishes the state queries (and `GET /v1/workflows/{id}`) show while the run is
    /// on; the latest wins.
    pub fn publish<S: Serialize>(&self, state: &S) {
        match serde_json::to_value(state) {
            Ok(state) => self.inner.publish(state),
            Err(e) => {
                tracing::warn!(run = self.workflow_id(), error = %e, "a workflow's state does not serialise")
            }
        }
    }

    /// The time, recorded the first time it is read at this point of the run.
    pub async fn now(&self) -> Result<time::OffsetDateTime, ActivityError> {
        let ms = self.inner.step(Step::Now, self.scope).await?;
        let ms = ms
            .as_i64()
            .ok_or_else(|| ActivityError::fatal("internal", "a recorded time is not a number"))?;
        time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
            .map_err(|e| ActivityError::fatal("internal", e.to_string()))
    }

    /// A random number that is the same on every replay: the run's id seeds it, and
    /// the draws are counted.
    pub fn random(&self) -> u64 {
        let draw = self.draws.fetch_add(1, Ordering::Relaxed);
        // FNV-1a of the id, then SplitMix64 over the draw: stable across builds and
        // engines, unlike the standard library's hasher.
        let seed = self
            .workflow_id()
            .bytes()
            .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
                (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
            });
        let mut z = seed.wrapping_add(draw.wrapping_add(1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// The untyped step, for engines' own tests and adapters.
    pub async fn step(&self, step: Step) -> Result<Value, ActivityError> {
        self.inner.step(step, self.scope).await
    }
}
