//! The one Temporal workflow type every run is, and the bridge between a registry
//! workflow (a `Send` future over [`WorkflowContext`]) and the SDK's context.
//!
//! The registry workflow is polled by [`drive`]; each step it asks for becomes an SDK
//! command (an activity, a timer, a condition wait, a child workflow), created in the
//! order asked, so a replay issues the same commands and Temporal answers them from the
//! history. Cancellation is the SDK's: every cancellable step inherits the run's
//! cancellation; a clean-up step gets a token of its own and runs regardless.

use somagent_common::tenant::TenantId;
use std::collections::{HashMap, VecDeque};
use std::future::{Future, poll_fn};
use std::pin::{Pin, pin};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use temporalio_common::RetryPolicy;
use temporalio_macros::{workflow, workflow_methods};
use temporalio_sdk::{
    ActivityOptions as SdkActivityOptions, CancellableFuture, ChildWorkflowCancellationType,
    ChildWorkflowOptions, LocalActivityOptions, ParentClosePolicy, SyncWorkflowContext,
    TimerOptions, TimerResult, WaitConditionOptions, WorkflowCancellationToken, WorkflowContext,
    WorkflowContextView, WorkflowResult, WorkflowTermination,
};

use super::activities::{Call, Done, Ended, Indexed, TemporalActivities};
use super::failure::{self, application_failure};
use crate::context::{Ctx, Scope, Step, WorkflowContext as StepContext};
use crate::engine::{RunStatus, StepView};
use crate::error::ActivityError;
use crate::options::ActivityOptions;
use crate::registry::Registry;

/// What a run is: the registry workflow, its tenant and input, and its parent.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Start {
    pub kind: String,
    pub tenant: TenantId,
    pub input: Value,
    pub parent: Option<String>,
}

/// A signal, by name, as sent to a run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Message {
    pub name: String,
    pub payload: Value,
}

/// What operators see of a run while it runs: its query result.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct View {
    pub state: Option<Value>,
    /// Errors here are recorded errors; the engine makes them public when it shows them.
    pub steps: Vec<StepView>,
    pub current: Option<StepView>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[workflow]
pub struct Envelope {
    registry: Registry,
    view: Arc<Mutex<View>>,
    /// Signals not read yet, oldest first.
    inbox: VecDeque<Message>,
}

impl Envelope {
    pub fn new(registry: Registry) -> Self {
        Self {
            registry,
            view: Arc::default(),
            inbox: VecDeque::new(),
        }
    }
}

#[workflow_methods(factory_only)]
impl Envelope {
    #[run(name = "somagent.workflow")]
    pub async fn run(ctx: &mut WorkflowContext<Self>, start: Start) -> WorkflowResult<Value> {
        drive(ctx, start).await
    }

    #[signal(name = "somagent.signal")]
    pub fn receive(&mut self, _ctx: &mut SyncWorkflowContext<Self>, message: Message) {
        self.inbox.push_back(message);
    }

    #[query(name = "somagent.view")]
    pub fn view(&self, _ctx: &WorkflowContextView) -> Value {
        serde_json::to_value(&*lock(&self.view)).unwrap_or(Value::Null)
    }
}

type Pending<'a> = Pin<Box<dyn Future<Output = Result<Value, ActivityError>> + 'a>>;

/// The workflow's time in milliseconds since the epoch: the history's, the same on
/// every replay.
fn time_ms(ctx: &WorkflowContext<Envelope>) -> i64 {
    ctx.workflow_time()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_millis() as i64)
}

fn fail(error: &ActivityError) -> WorkflowTermination {
    WorkflowTermination::from(application_failure(error))
}

/// Runs the registry workflow `start.kind` over a bridge context, then records its end.
async fn drive(ctx: &WorkflowContext<Envelope>, start: Start) -> WorkflowResult<Value> {
    let id = ctx.workflow_id().to_owned();
    let (registry, view) = ctx.state(|s| (s.registry.clone(), s.view.clone()));
    let Some(run) = registry.workflow_fn(&start.kind) else {
        return Err(fail(&ActivityError::fatal(
            "validation_failed",
            format!("no workflow is declared as `{}` here", start.kind),
        )));
    };
    if let Some(parent) = &start.parent {
        let row = Indexed {
            id: id.clone(),
            tenant: start.tenant.clone(),
            kind: start.kind.clone(),
            parent: parent.clone(),
            input: start.input.clone(),
        };
        ctx.execute_local_activity(TemporalActivities::index, row, bookkeeping())
            .await
            .map_err(|e| fail(&failure::of(e.failure(), &e)))?;
    }

    let bridge = Arc::new(Bridge {
        id: id.clone(),
        next: AtomicU64::new(0),
        asks: Mutex::default(),
        answers: Mutex::default(),
        view,
    });
    let mut workflow = run(Ctx::new(bridge.clone()), start.input.clone());
    // Steps in flight, in the order they were asked for. Not a FuturesUnordered: it
    // wakes itself, which the SDK takes for nondeterminism.
    let mut in_flight: Vec<(u64, Pending<'_>)> = Vec::new();
    let result = loop {
        // The workflow only ever waits on the bridge, which this loop answers, so
        // nothing needs waking: it is polled again after every answer.
        if let Poll::Ready(result) = workflow
            .as_mut()
            .poll(&mut Context::from_waker(Waker::noop()))
        {
            break result;
        }
        let mut answered = false;
        for ask in bridge.take_asks() {
            let now = time_ms(ctx);
            bridge.began(&ask, now);
            if ask.scope == Scope::Cancellable && ctx.cancellation_token().is_cancelled() {
                bridge.answer(ask.seq, Err(ActivityError::cancelled()), now);
                answered = true;
                continue;
            }
            let token = match ask.scope {
                Scope::Cancellable => None,
                Scope::Cleanup => Some(WorkflowCancellationToken::new()),
            };
            match ask.step {
                Step::Now => {
                    bridge.answer(ask.seq, Ok(json!(now)), now);
                    answered = true;
                }
                step => {
                    in_flight.push((ask.seq, pending(ctx, &bridge, ask.seq, step, token, &start)))
                }
            }
        }
        if answered {
            continue;
        }
        if in_flight.is_empty() {
            break Err(ActivityError::fatal(
                "internal",
                "the workflow waited on something other than its context",
            ));
        }
        let (seq, result) = poll_fn(|cx| {
            for i in 0..in_flight.len() {
                if let Poll::Ready(result) = in_flight[i].1.as_mut().poll(cx) {
                    return Poll::Ready((in_flight.remove(i).0, result));
                }
            }
            Poll::Pending
        })
        .await;
        bridge.answer(seq, result, time_ms(ctx));
    };
    drop(in_flight);
    drop(workflow);

    let cancelled = ctx.cancellation_token().is_cancelled();
    let state = lock(&bridge.view).state.clone();
    let (ended, termination) = match result {
        Ok(value) => (
            Ended {
                id,
                status: RunStatus::Completed,
                result: Some(value.clone()),
                error: None,
                state,
            },
            Ok(value),
        ),
        Err(e) if e.is_cancelled() && cancelled => (
            Ended {
                id,
                status: RunStatus::Cancelled,
                result: None,
                error: None,
                state,
            },
            Err(WorkflowTermination::cancelled()),
        ),
        Err(e) => (
            Ended {
                id,
                status: RunStatus::Failed,
                result: None,
                error: serde_json::to_value(&e).ok(),
                state,
            },
            Err(fail(&e)),
        ),
    };
    // If this cannot be recorded, the engine reads the end from the server when asked.
    let _ = ctx
        .execute_local_activity(TemporalActivities::finish, ended, bookkeeping())
        .await;
    termination
}

/// The index steps: short, retried a few times, and run even in a cancelled run.
fn bookkeeping() -> LocalActivityOptions {
    LocalActivityOptions::builder()
        .start_to_close_timeout(Duration::from_secs(10))
        .retry_policy(
            RetryPolicy::builder()
                .initial_interval(Duration::from_millis(200))
                .backoff_coefficient(2.0)
                .maximum_interval(Duration::from_secs(5))
                .maximum_attempts(5)
                .build(),
        )
        .cancellation_token(WorkflowCancellationToken::new())
        .build()
}

/// The SDK command for `step`, as a future of its answer.
fn pending<'a>(
    ctx: &'a WorkflowContext<Envelope>,
    bridge: &Arc<Bridge>,
    seq: u64,
    step: Step,
    token: Option<WorkflowCancellationToken>,
    start: &Start,
) -> Pending<'a> {
    match step {
        Step::Activity {
            name,
            input,
            options,
        } => {
            let bridge = bridge.clone();
            let settle =
                move |result: Result<Done, temporalio_sdk::ActivityExecutionError>| match result {
                    Ok(done) => {
                        bridge.attempted(seq, done.attempt);
                        Ok(done.output)
                    }
                    Err(e) => Err(failure::of(e.failure(), &e)),
                };
            let call = Call {
                name: name.clone(),
                input,
            };
            if options.heartbeat.is_some() {
                let fut = ctx.execute_activity(
                    TemporalActivities::step,
                    call,
                    sdk_options(&options, seq, name, token),
                );
                Box::pin(async move { settle(fut.await) })
            } else {
                let fut = ctx.execute_local_activity(
                    TemporalActivities::step,
                    call,
                    local_options(&options, name, token),
                );
                Box::pin(async move { settle(fut.await) })
            }
        }
        Step::Sleep(duration) => {
            let timer = ctx.timer(
                TimerOptions::builder(duration)
                    .maybe_cancellation_token(token)
                    .summary("sleep".to_owned())
                    .build(),
            );
            Box::pin(async move {
                match timer.await {
                    TimerResult::Fired => Ok(Value::Null),
                    TimerResult::Cancelled => Err(ActivityError::cancelled()),
                }
            })
        }
        Step::Signal { name, timeout } => {
            let wanted = name.clone();
            let arrived = ctx.wait_condition_with_options(
                move |s: &Envelope| s.inbox.iter().any(|m| m.name == wanted),
                WaitConditionOptions::builder()
                    .maybe_cancellation_token(token.clone())
                    .build(),
            );
            let timer = ctx.timer(
                TimerOptions::builder(timeout)
                    .maybe_cancellation_token(token)
                    .summary(format!("signal {name}"))
                    .build(),
            );
            Box::pin(async move {
                let mut arrived = pin!(arrived);
                let mut timer = pin!(timer);
                // The signal first: one that came as the timer fired is still read.
                let first = poll_fn(|cx| {
                    if let Poll::Ready(r) = arrived.as_mut().poll(cx) {
                        return Poll::Ready(Ok(r));
                    }
                    if let Poll::Ready(t) = timer.as_mut().poll(cx) {
                        return Poll::Ready(Err(t));
                    }
                    Poll::Pending
                })
                .await;
                match first {
                    Ok(Ok(())) => {
                        timer.cancel();
                        let message = ctx.state_mut(|s| {
                            let at = s.inbox.iter().position(|m| m.name == name)?;
                            s.inbox.remove(at)
                        });
                        Ok(match message {
                            Some(message) => json!({ "received": message.payload }),
                            None => Value::Null,
                        })
                    }
                    Ok(Err(_)) | Err(TimerResult::Cancelled) => Err(ActivityError::cancelled()),
                    Err(TimerResult::Fired) => Ok(Value::Null),
                }
            })
        }
        Step::Child { kind, id, input } => {
            let child = Start {
                kind: kind.clone(),
                tenant: start.tenant.clone(),
                input,
                parent: Some(ctx.workflow_id().to_owned()),
            };
            let options = ChildWorkflowOptions::builder()
                .workflow_id(id)
                .cancel_type(ChildWorkflowCancellationType::TryCancel)
                .parent_close_policy(ParentClosePolicy::RequestCancel)
                .maybe_cancellation_token(token)
                .static_summary(kind)
                .build();
            let started = ctx.start_child_workflow(Envelope::run, child, options);
            Box::pin(async move {
                let started = started.await.map_err(|e| failure::of(e.failure(), &e))?;
                started
                    .result()
                    .await
                    .map_err(|e| failure::of(e.failure(), &e))
            })
        }
        Step::Now => unreachable!("answered in place"),
    }
}

fn retry_policy(options: &ActivityOptions) -> RetryPolicy {
    RetryPolicy::builder()
        .initial_interval(options.initial_backoff)
        .backoff_coefficient(2.0)
        .maximum_interval(options.initial_backoff * 64)
        .maximum_attempts(options.max_attempts)
        .build()
}

/// A step that beats is a regular activity: any worker may take it over when its
/// worker dies, and the server can cancel it.
fn sdk_options(
    options: &ActivityOptions,
    seq: u64,
    name: String,
    token: Option<WorkflowCancellationToken>,
) -> SdkActivityOptions {
    SdkActivityOptions::with_start_to_close_timeout(options.start_to_close)
        // The step and its name, so operators (and `temporal workflow describe`) can
        // tell pending activities apart: they are all `somagent.activity`.
        .activity_id(format!("{seq}:{name}"))
        .retry_policy(retry_policy(options))
        .maybe_heartbeat_timeout(options.heartbeat)
        .maybe_cancellation_token(token)
        .summary(name)
        .build()
}

/// A short step is a local activity: run by the worker that runs the workflow and
/// recorded in its history when the workflow task completes, without a round trip
/// through the server's task queues per step. If that worker dies the workflow task is
/// retried elsewhere and the step runs again (activities are idempotent).
fn local_options(
    options: &ActivityOptions,
    name: String,
    token: Option<WorkflowCancellationToken>,
) -> LocalActivityOptions {
    LocalActivityOptions::builder()
        .start_to_close_timeout(options.start_to_close)
        .retry_policy(retry_policy(options))
        .maybe_cancellation_token(token)
        .summary(name)
        .build()
}

struct Ask {
    seq: u64,
    step: Step,
    scope: Scope,
}

/// The workflow's context on Temporal: asks are queued for [`drive`], which answers them
/// and keeps the view the query shows.
struct Bridge {
    id: String,
    next: AtomicU64,
    asks: Mutex<Vec<Ask>>,
    answers: Mutex<HashMap<u64, Result<Value, ActivityError>>>,
    view: Arc<Mutex<View>>,
}

impl Bridge {
    fn take_asks(&self) -> Vec<Ask> {
        std::mem::take(&mut *lock(&self.asks))
    }

    fn began(&self, ask: &Ask, now: i64) {
        let (kind, name) = ask.step.label();
        let step = StepView {
            seq: ask.seq,
            kind: kind.to_owned(),
            name,
            status: "running".into(),
            attempts: 0,
            started_at: Some(now),
            ended_at: None,
            error: None,
        };
        let mut view = lock(&self.view);
        view.current = Some(step.clone());
        view.steps.push(step);
    }

    fn attempted(&self, seq: u64, attempts: u32) {
        if let Some(step) = lock(&self.view).steps.iter_mut().find(|s| s.seq == seq) {
            step.attempts = attempts;
        }
    }

    fn answer(&self, seq: u64, result: Result<Value, ActivityError>, now: i64) {
        {
            let mut view = lock(&self.view);
            if let Some(step) = view.steps.iter_mut().find(|s| s.seq == seq) {
                step.ended_at = Some(now);
                match &result {
                    Ok(_) => step.status = "completed".into(),
                    Err(e) => {
                        step.status = "failed".into();
                        step.error = serde_json::to_value(e).ok();
                    }
                }
                // Attempts of a failed step are not reported back; at least one ran.
                step.attempts = step.attempts.max(1);
            }
            view.current = view
                .steps
                .iter()
                .rev()
                .find(|s| s.status == "running")
                .cloned();
        }
        lock(&self.answers).insert(seq, result);
    }
}

#[tonic::async_trait]
impl StepContext for Bridge {
    fn workflow_id(&self) -> &str {
        &self.id
    }

    async fn step(&self, step: Step, scope: Scope) -> Result<Value, ActivityError> {
        let seq = self.next.fetch_add(1, Ordering::Relaxed);
        lock(&self.asks).push(Ask { seq, step, scope });
        poll_fn(|_| match lock(&self.answers).remove(&seq) {
            Some(answer) => Poll::Ready(answer),
            None => Poll::Pending,
        })
        .await
    }

    fn publish(&self, state: Value) {
        lock(&self.view).state = Some(state);
    }
}
