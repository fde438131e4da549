//! The Temporal engine: the same workflows and activities, run by a worker on the
//! official Rust SDK. Temporal keeps each run's history, times out and retries its
//! activities, and hands a run to another worker when its worker dies; a start with an
//! id that exists is refused by the server, so a retried start is idempotent.
//!
//! Our workflows are plain async functions over [`WorkflowContext`]; on Temporal each
//! runs inside the SDK's workflow function through a bridge: the bridge collects the
//! activities the workflow asks for, the SDK function schedules them as Temporal
//! activities and feeds their results back. Replay works as Temporal's always does: the
//! workflow asks again, and the answers come from the history.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use anyhow::Context as _;
use serde_json::Value;
use somagent_common::config::TemporalTarget;
use temporalio_client::errors::{
    WorkflowGetResultError, WorkflowInteractionError, WorkflowStartError,
};
use temporalio_client::{
    Client, ClientOptions, Connection, ConnectionOptions, Url, WorkflowDescribeOptions,
    WorkflowExecutionStatus, WorkflowGetResultOptions, WorkflowIdReusePolicy, WorkflowStartOptions,
};
use temporalio_common::protos::temporal::api::failure::v1::Failure;
use temporalio_common::protos::temporal::api::failure::v1::failure::FailureInfo;
use temporalio_common::{
    ActivityDefinition, HasWorkflowDefinition, RetryPolicy, WorkflowDefinition,
};
use temporalio_macros::{activities, workflow, workflow_methods};
use temporalio_sdk::activities::{ActivityContext, ActivityError as SdkActivityError};
use temporalio_sdk::{
    ActivityExecutionError, ActivityOptions as SdkActivityOptions, ApplicationFailure,
    LocalActivityOptions, Runtime, Worker, WorkerOptions, WorkflowResult, WorkflowTermination,
};

use super::{
    Activities, ActivityError, ActivityOptions, Engine, Outcome, WorkflowContext, WorkflowFn,
};
use crate::turn;

/// How long a workflow task waits on the worker that ran the run's last task (and
/// caches its state) before any worker may take it: short, so a restarted process picks
/// its runs up quickly.
const STICKY_TIMEOUT: Duration = Duration::from_secs(3);

pub struct TemporalEngine {
    client: Client,
    task_queue: String,
    kinds: Vec<&'static str>,
    stop_worker: Box<dyn Fn() + Send + Sync>,
}

impl TemporalEngine {
    /// Connects to Temporal and starts a worker for `workflows` and `activities` on the
    /// target's task queue. Fails if Temporal cannot be reached or the worker cannot
    /// start, so a misconfigured service does not come up.
    pub async fn start_worker(
        target: &TemporalTarget,
        identity: &str,
        activities: Arc<dyn Activities>,
        workflows: HashMap<&'static str, WorkflowFn>,
    ) -> anyhow::Result<Arc<Self>> {
        let client = connect(target, identity).await?;
        let mut options = WorkerOptions::new(target.task_queue.clone())
            .sticky_queue_schedule_to_start_timeout(STICKY_TIMEOUT)
            .build();
        let kinds: Vec<&'static str> = workflows.keys().copied().collect();
        for (kind, run) in workflows {
            match kind {
                turn::KIND => {
                    options.register_workflow_with_factory::<SessionTurn, _>(move || {
                        SessionTurn { run: run.clone() }
                    })?;
                }
                other => anyhow::bail!("no Temporal workflow type is declared for `{other}`"),
            }
        }
        options.register_activities(TemporalActivities {
            inner: activities,
            runtime: tokio::runtime::Handle::current(),
        });

        // The SDK's worker future is not Send: it runs on a thread of its own, on a
        // current-thread runtime; activities are sent back to the service's runtime.
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let worker_client = client.clone();
        std::thread::Builder::new()
            .name("temporal-worker".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(anyhow::anyhow!(e)));
                        return;
                    }
                };
                rt.block_on(async move {
                    let worker = Runtime::from_current_tokio(Default::default())
                        .map_err(anyhow::Error::from)
                        .and_then(|runtime| {
                            Worker::new(&runtime, worker_client, options)
                                .map(|worker| (runtime, worker))
                                .map_err(anyhow::Error::from)
                        });
                    let (_runtime, mut worker) = match worker {
                        Ok(w) => w,
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                            return;
                        }
                    };
                    let _ = ready_tx.send(Ok(
                        Box::new(worker.shutdown_handle()) as Box<dyn Fn() + Send + Sync>
                    ));
                    if let Err(e) = worker.run().await {
                        tracing::error!(error = %e, "the Temporal worker stopped");
                    }
                });
            })
            .context("cannot start the Temporal worker thread")?;
        let stop_worker = ready_rx
            .await
            .context("the Temporal worker thread ended before it started")?
            .context("cannot start the Temporal worker")?;
        tracing::info!(task_queue = %target.task_queue, namespace = %target.namespace, "Temporal worker started");
        Ok(Arc::new(Self {
            client,
            task_queue: target.task_queue.clone(),
            kinds,
            stop_worker,
        }))
    }
}

impl Drop for TemporalEngine {
    fn drop(&mut self) {
        (self.stop_worker)();
    }
}

async fn connect(target: &TemporalTarget, identity: &str) -> anyhow::Result<Client> {
    let url: Url = target
        .address
        .parse()
        .with_context(|| format!("bad Temporal address `{}`", target.address))?;
    let connection = Connection::connect(
        ConnectionOptions::new(url)
            .identity(identity.to_owned())
            .connect_timeout(Duration::from_secs(10))
            .build(),
    )
    .await
    .with_context(|| format!("cannot reach Temporal at {}", target.address))?;
    Ok(Client::new(
        connection,
        ClientOptions::new(target.namespace.clone()).build(),
    )?)
}

#[tonic::async_trait]
impl Engine for Arc<TemporalEngine> {
    async fn start(
        &self,
        kind: &str,
        id: &str,
        _tenant: &str,
        input: &Value,
    ) -> anyhow::Result<bool> {
        anyhow::ensure!(
            self.kinds.contains(&kind),
            "no workflow is registered as `{kind}`"
        );
        let options = WorkflowStartOptions::new(self.task_queue.clone(), id.to_owned())
            .id_reuse_policy(WorkflowIdReusePolicy::RejectDuplicate)
            .build();
        match self
            .client
            .start_workflow(Named(kind.to_owned()), input.clone(), options)
            .await
        {
            Ok(_) => Ok(true),
            Err(WorkflowStartError::AlreadyStarted { .. }) => Ok(false),
            Err(e) => Err(anyhow::Error::new(e).context("cannot start a workflow on Temporal")),
        }
    }

    async fn outcome(&self, id: &str) -> anyhow::Result<Option<Outcome>> {
        let handle = self.client.get_workflow_handle::<Named>(id.to_owned());
        let status = match handle.describe(WorkflowDescribeOptions::default()).await {
            Ok(description) => description.status(),
            Err(WorkflowInteractionError::NotFound(_)) => return Ok(None),
            Err(e) => return Err(anyhow::Error::new(e).context("cannot describe a workflow")),
        };
        if matches!(
            status,
            WorkflowExecutionStatus::Running
                | WorkflowExecutionStatus::Paused
                | WorkflowExecutionStatus::Unspecified
                | WorkflowExecutionStatus::Unknown
        ) {
            return Ok(None);
        }
        Ok(Some(
            match handle.get_result(WorkflowGetResultOptions::default()).await {
                Ok(value) => Outcome::Completed(value),
                Err(WorkflowGetResultError::Failed(error)) => {
                    Outcome::Failed(activity_error(error.failure()))
                }
                Err(WorkflowGetResultError::NotFound(_)) => return Ok(None),
                Err(other) => {
                    Outcome::Failed(ActivityError::fatal("workflow_ended", other.to_string()))
                }
            },
        ))
    }
}

/// A workflow or activity type known by name, with JSON in and out.
struct Named(String);

impl WorkflowDefinition for Named {
    type Input = Value;
    type Output = Value;
    fn name(&self) -> &str {
        &self.0
    }
}

impl HasWorkflowDefinition for Named {
    type Run = Self;
}

impl ActivityDefinition for Named {
    type Input = Value;
    type Output = Value;
    fn name(&self) -> &str {
        &self.0
    }
}

/// The session turn as a Temporal workflow type.
#[workflow]
pub struct SessionTurn {
    run: WorkflowFn,
}

#[workflow_methods(factory_only)]
impl SessionTurn {
    #[run(name = turn::KIND)]
    pub async fn run(
        ctx: &mut temporalio_sdk::WorkflowContext<Self>,
        input: Value,
    ) -> WorkflowResult<Value> {
        let run = ctx.state(|s| s.run.clone());
        drive(ctx, run, input).await
    }
}

/// Runs our workflow function over a bridge context: polls it until it waits on
/// activities, schedules those with Temporal, hands their results back, and repeats.
async fn drive<W>(
    ctx: &temporalio_sdk::WorkflowContext<W>,
    run: WorkflowFn,
    input: Value,
) -> WorkflowResult<Value> {
    let bridge = Arc::new(Bridge {
        id: ctx.workflow_id().to_owned(),
        next: AtomicU64::new(0),
        state: Mutex::default(),
    });
    let mut workflow = run(bridge.clone(), input);
    // Activities in flight, by the order they were asked for. Not a FuturesUnordered:
    // it wakes itself, which the SDK takes for nondeterminism.
    type Answer = Result<Value, ActivityExecutionError>;
    type Call<'a> = Pin<Box<dyn Future<Output = Answer> + 'a>>;
    let mut in_flight: Vec<(u64, Call<'_>)> = Vec::new();
    loop {
        // The workflow only ever waits on the bridge, which the loop below answers, so
        // nothing needs waking: it is polled again after every answer.
        if let Poll::Ready(result) = workflow
            .as_mut()
            .poll(&mut Context::from_waker(Waker::noop()))
        {
            return result.map_err(|e| WorkflowTermination::from(application_failure(&e)));
        }
        for ask in bridge.take_asks() {
            let call: Call<'_> = if ask.options.heartbeat.is_some() {
                Box::pin(ctx.execute_activity(
                    Named(ask.name),
                    ask.input,
                    sdk_options(&ask.options),
                ))
            } else {
                Box::pin(ctx.execute_local_activity(
                    Named(ask.name),
                    ask.input,
                    local_options(&ask.options),
                ))
            };
            in_flight.push((ask.seq, call));
        }
        if in_flight.is_empty() {
            return Err(WorkflowTermination::from(
                ApplicationFailure::non_retryable(anyhow::anyhow!(
                    "the workflow waited on something other than an activity"
                )),
            ));
        }
        let (seq, result) = std::future::poll_fn(|cx| {
            for i in 0..in_flight.len() {
                if let Poll::Ready(result) = in_flight[i].1.as_mut().poll(cx) {
                    return Poll::Ready((in_flight.remove(i).0, result));
                }
            }
            Poll::Pending
        })
        .await;
        let result = result.map_err(|e| match e.failure() {
            Some(failure) => activity_error(failure),
            None => ActivityError::fatal("internal", e.to_string()),
        });
        bridge.answer(seq, result);
    }
}

/// A step that beats is a regular activity: any worker may take it over when its
/// worker dies.
fn sdk_options(options: &ActivityOptions) -> SdkActivityOptions {
    SdkActivityOptions::with_start_to_close_timeout(options.start_to_close)
        .retry_policy(retry_policy(options))
        .maybe_heartbeat_timeout(options.heartbeat)
        .build()
}

/// A short step is a local activity: run by the worker that runs the workflow and
/// recorded in its history when the workflow task completes, without a round trip
/// through the server's task queues per step. If that worker dies the workflow task is
/// retried elsewhere and the step runs again (our activities are idempotent).
fn local_options(options: &ActivityOptions) -> LocalActivityOptions {
    LocalActivityOptions::builder()
        .start_to_close_timeout(options.start_to_close)
        .retry_policy(retry_policy(options))
        .build()
}

fn retry_policy(options: &ActivityOptions) -> RetryPolicy {
    RetryPolicy::builder()
        .initial_interval(options.initial_backoff)
        .backoff_coefficient(2.0)
        .maximum_interval(options.initial_backoff * 64)
        .maximum_attempts(options.max_attempts)
        .build()
}

/// Our error as a Temporal application failure: the code is its type, and a
/// validation error is not retried.
fn application_failure(error: &ActivityError) -> ApplicationFailure {
    ApplicationFailure::builder(error.message.clone())
        .type_name(error.code.clone())
        .non_retryable(!error.retryable)
        .build()
}

/// A Temporal failure as our error: the innermost application failure says what went
/// wrong; a timeout on the way is a timeout.
fn activity_error(failure: &Failure) -> ActivityError {
    let mut current = Some(failure);
    let mut timed_out = None;
    while let Some(f) = current {
        match &f.failure_info {
            Some(FailureInfo::ApplicationFailureInfo(info)) => {
                return ActivityError {
                    message: f.message.clone(),
                    retryable: !info.non_retryable,
                    code: if info.r#type.is_empty() {
                        "internal".into()
                    } else {
                        info.r#type.clone()
                    },
                };
            }
            Some(FailureInfo::TimeoutFailureInfo(_)) => {
                timed_out.get_or_insert_with(|| f.message.clone());
            }
            _ => {}
        }
        current = f.cause.as_deref();
    }
    match timed_out {
        Some(message) => {
            ActivityError::fatal("timeout", format!("an activity timed out: {message}"))
        }
        None => ActivityError::fatal("internal", failure.message.clone()),
    }
}

struct Ask {
    seq: u64,
    name: String,
    input: Value,
    options: ActivityOptions,
}

#[derive(Default)]
struct BridgeState {
    asks: Vec<Ask>,
    answers: HashMap<u64, Result<Value, ActivityError>>,
}

/// The workflow's context on Temporal: asks are queued for [`drive`], which answers them.
struct Bridge {
    id: String,
    next: AtomicU64,
    state: Mutex<BridgeState>,
}

impl Bridge {
    fn lock(&self) -> std::sync::MutexGuard<'_, BridgeState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn take_asks(&self) -> Vec<Ask> {
        std::mem::take(&mut self.lock().asks)
    }

    fn answer(&self, seq: u64, result: Result<Value, ActivityError>) {
        self.lock().answers.insert(seq, result);
    }
}

#[tonic::async_trait]
impl WorkflowContext for Bridge {
    fn workflow_id(&self) -> &str {
        &self.id
    }

    async fn activity(
        &self,
        name: &str,
        input: Value,
        options: ActivityOptions,
    ) -> Result<Value, ActivityError> {
        let seq = self.next.fetch_add(1, Ordering::Relaxed);
        self.lock().asks.push(Ask {
            seq,
            name: name.to_owned(),
            input,
            options,
        });
        std::future::poll_fn(|_| match self.lock().answers.remove(&seq) {
            Some(answer) => Poll::Ready(answer),
            None => Poll::Pending,
        })
        .await
    }
}

/// The turn's activities as Temporal activity types; each attempt runs on the service's
/// runtime and beats while it runs when its options ask for a heartbeat.
pub struct TemporalActivities {
    inner: Arc<dyn Activities>,
    runtime: tokio::runtime::Handle,
}

// The macro also declares a constant per activity, for typed calls we do not make.
#[allow(dead_code)]
#[activities]
impl TemporalActivities {
    #[activity(name = turn::POLICY_CHECK)]
    pub async fn policy_check(
        self: Arc<Self>,
        ctx: ActivityContext,
        input: Value,
    ) -> Result<Value, SdkActivityError> {
        self.attempt(ctx, turn::POLICY_CHECK, input).await
    }

    #[activity(name = turn::SESSION_HISTORY)]
    pub async fn session_history(
        self: Arc<Self>,
        ctx: ActivityContext,
        input: Value,
    ) -> Result<Value, SdkActivityError> {
        self.attempt(ctx, turn::SESSION_HISTORY, input).await
    }

    #[activity(name = turn::MODEL_COMPLETE)]
    pub async fn model_complete(
        self: Arc<Self>,
        ctx: ActivityContext,
        input: Value,
    ) -> Result<Value, SdkActivityError> {
        self.attempt(ctx, turn::MODEL_COMPLETE, input).await
    }

    #[activity(name = turn::TURN_FINISH)]
    pub async fn turn_finish(
        self: Arc<Self>,
        ctx: ActivityContext,
        input: Value,
    ) -> Result<Value, SdkActivityError> {
        self.attempt(ctx, turn::TURN_FINISH, input).await
    }
}

/// Aborts the attempt's task if the SDK drops the attempt (cancelled, or shutting down).
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl TemporalActivities {
    async fn attempt(
        &self,
        ctx: ActivityContext,
        name: &'static str,
        input: Value,
    ) -> Result<Value, SdkActivityError> {
        let workflow_id = ctx.info().workflow_id.clone().unwrap_or_default();
        let inner = self.inner.clone();
        let mut work = self
            .runtime
            .spawn(async move { inner.run(&workflow_id, name, input).await });
        let _abort = AbortOnDrop(work.abort_handle());
        let beat = ctx.info().heartbeat_timeout.map(|timeout| timeout / 3);
        let joined = loop {
            match beat {
                None => break (&mut work).await,
                Some(every) => tokio::select! {
                    joined = &mut work => break joined,
                    () = tokio::time::sleep(every) => {
                        if let Err(e) = ctx.record_heartbeat(()).await {
                            tracing::warn!(activity = name, error = %e, "cannot record an activity heartbeat");
                        }
                    }
                },
            }
        };
        let result = joined.unwrap_or_else(|e| {
            Err(ActivityError::retryable(
                "internal",
                format!("the activity stopped: {e}"),
            ))
        });
        result.map_err(|e| SdkActivityError::Application(Box::new(application_failure(&e))))
    }
}

/// The engine's contract on a real Temporal server (`SOMAGENT_TEST_WORKFLOWS_URL`; under
/// `CI=true` a missing server fails): bounded retries, no retry of validation errors,
/// timeouts, idempotent starts. The crash-and-restart journey is in the e2e suite.
#[cfg(test)]
mod tests {
    use serde_json::json;
    use somagent_common::config::WorkflowsUrl;

    use super::super::testing::Scripted;
    use super::*;

    fn target() -> Option<TemporalTarget> {
        let Ok(url) = std::env::var("SOMAGENT_TEST_WORKFLOWS_URL") else {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "CI=true but SOMAGENT_TEST_WORKFLOWS_URL is not set: run scripts/ci-services.sh"
            );
            eprintln!("SOMAGENT_TEST_WORKFLOWS_URL is not set: the Temporal contract does not run");
            return None;
        };
        let queue = format!("contract-{}", uuid::Uuid::new_v4().simple());
        let url: WorkflowsUrl = format!("{url}?task_queue={queue}").parse().unwrap();
        url.temporal()
    }

    /// Runs the activity its input names, with tight options.
    fn one_step() -> WorkflowFn {
        Arc::new(|ctx, input| {
            Box::pin(async move {
                let name = input["activity"].as_str().unwrap_or_default().to_owned();
                // Beating steps are regular activities, the others local ones.
                let options = ActivityOptions {
                    start_to_close: Duration::from_secs(1),
                    max_attempts: 3,
                    initial_backoff: Duration::from_millis(10),
                    heartbeat: (input["beat"] == true).then_some(Duration::from_secs(5)),
                };
                let first = ctx.activity(&name, json!({ "step": 1 }), options).await?;
                let then = ctx
                    .activity(turn::TURN_FINISH, json!({ "step": 2 }), options)
                    .await?;
                Ok(json!({ "first": first, "then": then }))
            })
        })
    }

    async fn ended(engine: &Arc<TemporalEngine>, id: &str) -> Outcome {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(outcome) = engine.outcome(id).await.unwrap() {
                return outcome;
            }
            assert!(tokio::time::Instant::now() < deadline, "{id} did not end");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    #[tokio::test]
    async fn runs_retry_within_bounds_fail_fast_on_invalid_input_and_start_once() {
        let Some(target) = target() else { return };
        let scripted = Arc::new(Scripted::new(
            turn::POLICY_CHECK,
            turn::SESSION_HISTORY,
            turn::MODEL_COMPLETE,
        ));
        let engine = TemporalEngine::start_worker(
            &target,
            "contract-test",
            scripted.clone(),
            HashMap::from([(turn::KIND, one_step())]),
        )
        .await
        .unwrap();
        let run = |suffix: &str| format!("contract-{}-{suffix}", uuid::Uuid::new_v4().simple());

        // Retryable failures are retried, and the run carries on with the next activity.
        let flaky = run("flaky");
        let input = json!({ "activity": turn::POLICY_CHECK, "beat": true });
        assert!(engine.start(turn::KIND, &flaky, "t", &input).await.unwrap());
        assert!(
            !engine.start(turn::KIND, &flaky, "t", &input).await.unwrap(),
            "a second start is refused"
        );
        let Outcome::Completed(value) = ended(&engine, &flaky).await else {
            panic!("the flaky run failed")
        };
        assert_eq!(value["first"]["attempt"], 3, "{value}");
        assert_eq!(value["first"]["run"], flaky.as_str());
        assert_eq!(value["then"]["input"]["step"], 2);
        assert_eq!(scripted.attempts(turn::POLICY_CHECK), 3);
        assert!(
            !engine.start(turn::KIND, &flaky, "t", &input).await.unwrap(),
            "an ended run is not started again"
        );
        assert_eq!(scripted.attempts(turn::POLICY_CHECK), 3);

        // A validation error is final: one attempt, its code kept.
        let invalid = run("invalid");
        engine
            .start(
                turn::KIND,
                &invalid,
                "t",
                &json!({ "activity": turn::SESSION_HISTORY }),
            )
            .await
            .unwrap();
        match ended(&engine, &invalid).await {
            Outcome::Failed(e) => {
                assert_eq!(
                    (e.code.as_str(), e.retryable),
                    ("validation_failed", false),
                    "{e:?}"
                );
                assert!(e.message.contains("bad input"), "{e:?}");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(scripted.attempts(turn::SESSION_HISTORY), 1);

        // An activity that outlasts its bound times out, attempt after attempt.
        let slow = run("slow");
        engine
            .start(
                turn::KIND,
                &slow,
                "t",
                &json!({ "activity": turn::MODEL_COMPLETE, "beat": true }),
            )
            .await
            .unwrap();
        match ended(&engine, &slow).await {
            Outcome::Failed(e) => assert_eq!(e.code, "timeout", "{e:?}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(scripted.attempts(turn::MODEL_COMPLETE), 3);

        assert!(engine.outcome("no-such-run").await.unwrap().is_none());
        assert!(
            engine
                .start("no_such_kind", &run("x"), "t", &input)
                .await
                .is_err()
        );
    }
}
