//! The workflows and activities a service declares, by name, with their types.

use std::collections::HashMap;
use std::future::Future;
use std::marker::PhantomData;
use std::sync::Arc;

use futures::future::BoxFuture;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::context::Ctx;
use crate::error::ActivityError;
use crate::options::ActivityOptions;

/// An activity's name, options and types: what a workflow calls and a registry
/// implements, checked against each other by the compiler.
pub struct Activity<I, O> {
    pub name: &'static str,
    pub options: ActivityOptions,
    types: PhantomData<fn(I) -> O>,
}

impl<I, O> Activity<I, O> {
    pub const fn new(name: &'static str, options: ActivityOptions) -> Self {
        Self {
            name,
            options,
            types: PhantomData,
        }
    }
}

/// A workflow's kind and types: what is started (by an engine or as a child) and what
/// a registry implements.
pub struct Workflow<I, O> {
    pub kind: &'static str,
    types: PhantomData<fn(I) -> O>,
}

impl<I, O> Workflow<I, O> {
    pub const fn new(kind: &'static str) -> Self {
        Self {
            kind,
            types: PhantomData,
        }
    }
}

/// Which run, step and attempt an activity runs for.
#[derive(Debug, Clone)]
pub struct ActivityInfo {
    pub workflow_id: String,
    pub name: String,
    /// 1 for the first attempt.
    pub attempt: u32,
}

pub type WorkflowFn =
    Arc<dyn Fn(Ctx, Value) -> BoxFuture<'static, Result<Value, ActivityError>> + Send + Sync>;
pub type ActivityFn = Arc<
    dyn Fn(ActivityInfo, Value) -> BoxFuture<'static, Result<Value, ActivityError>> + Send + Sync,
>;

/// The workflows and activities one engine runs.
#[derive(Clone, Default)]
pub struct Registry {
    workflows: HashMap<&'static str, WorkflowFn>,
    activities: HashMap<&'static str, ActivityFn>,
    metrics: Option<crate::metrics::ActivityMetrics>,
}

impl Registry {
    pub fn new() -> Self {
        Self::default()
    }

    /// Declares workflow `workflow` as `run`. A kind declared twice is a bug and panics
    /// at start-up.
    pub fn workflow<I, O, F, Fut>(&mut self, workflow: &Workflow<I, O>, run: F) -> &mut Self
    where
        I: DeserializeOwned + Send + 'static,
        O: Serialize + 'static,
        F: Fn(Ctx, I) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<O, ActivityError>> + Send + 'static,
    {
        let kind = workflow.kind;
        let run = Arc::new(run);
        let erased: WorkflowFn = Arc::new(move |ctx, input| {
            let run = run.clone();
            Box::pin(async move {
                let input: I = serde_json::from_value(input).map_err(|e| {
                    ActivityError::fatal(
                        "validation_failed",
                        format!("the input of workflow `{kind}` does not read: {e}"),
                    )
                })?;
                let output = run(ctx, input).await?;
                serde_json::to_value(output)
                    .map_err(|e| ActivityError::undecodable(&format!("the result of `{kind}`"), &e))
            })
        });
        assert!(
            self.workflows.insert(kind, erased).is_none(),
            "workflow `{kind}` is declared twice"
        );
        self
    }

    /// Declares activity `activity` as `run`. A name declared twice panics at start-up.
    pub fn activity<I, O, F, Fut>(&mut self, activity: &Activity<I, O>, run: F) -> &mut Self
    where
        I: DeserializeOwned + Send + 'static,
        O: Serialize + 'static,
        F: Fn(ActivityInfo, I) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<O, ActivityError>> + Send + 'static,
    {
        let name = activity.name;
        let run = Arc::new(run);
        let erased: ActivityFn = Arc::new(move |info, input| {
            let run = run.clone();
            Box::pin(async move {
                // An input that does not read will not read on a retry either.
                let input: I = serde_json::from_value(input).map_err(|e| {
                    ActivityError::fatal(
                        "validation_failed",
                        format!("the input of activity `{name}` does not read: {e}"),
                    )
                })?;
                let output = run(info, input).await?;
                serde_json::to_value(output)
                    .map_err(|e| ActivityError::undecodable(&format!("the output of `{name}`"), &e))
            })
        });
        assert!(
            self.activities.insert(name, erased).is_none(),
            "activity `{name}` is declared twice"
        );
        self
    }

    pub fn workflow_fn(&self, kind: &str) -> Option<WorkflowFn> {
        self.workflows.get(kind).cloned()
    }

    pub fn kinds(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.workflows.keys().copied()
    }

    pub fn knows(&self, kind: &str) -> bool {
        self.workflows.contains_key(kind)
    }

    /// Records every activity attempt in `metrics`.
    pub fn observed_by(&mut self, metrics: crate::metrics::ActivityMetrics) -> &mut Self {
        self.metrics = Some(metrics);
        self
    }

    /// Runs one attempt of activity `info.name`.
    pub async fn run_activity(
        &self,
        info: ActivityInfo,
        input: Value,
    ) -> Result<Value, ActivityError> {
        let Some(run) = self.activities.get(info.name.as_str()).cloned() else {
            return Err(ActivityError::fatal(
                "internal",
                format!("no activity is declared as `{}`", info.name),
            ));
        };
        let Some(metrics) = &self.metrics else {
            return run(info, input).await;
        };
        let (name, attempt) = (info.name.clone(), info.attempt);
        let started = std::time::Instant::now();
        let result = run(info, input).await;
        metrics.observe(&name, attempt, started.elapsed(), &result);
        result
    }
}
