//! The suite's workflows and activities, and what they let a test observe.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use somagent_workflows::{Activity, ActivityError, ActivityOptions, Ctx, Registry, Workflow};
use tokio::sync::Notify;

const FAST: ActivityOptions =
    ActivityOptions::new(Duration::from_secs(1), 3).with_backoff(Duration::from_millis(10));
/// Long enough to be cancelled in the middle; beats, so on Temporal it is a regular
/// activity that the server can cancel.
const LONG: ActivityOptions =
    ActivityOptions::new(Duration::from_secs(60), 1).with_heartbeat(Duration::from_secs(5));

pub const ECHO: Activity<Value, Value> = Activity::new("echo", FAST);
pub const FLAKY: Activity<Value, Value> = Activity::new("flaky", FAST);
pub const INVALID: Activity<Value, Value> = Activity::new("invalid", FAST);
pub const SLOW: Activity<Value, Value> = Activity::new("slow", FAST);
pub const STUCK: Activity<Value, Value> = Activity::new("stuck", LONG);
pub const TIDY: Activity<Value, Value> = Activity::new("tidy", FAST);

/// Runs the activities its input names, in order; returns their outputs.
pub const STEPS: Workflow<Vec<String>, Vec<Value>> = Workflow::new("steps");
/// Publishes, sleeps the given ms, and returns the time and two draws.
pub const NAP: Workflow<u64, Value> = Workflow::new("nap");
/// Waits for signal `go` (up to the given ms), then for `never` (0.5 s).
pub const WAITER: Workflow<u64, Value> = Workflow::new("waiter");
/// Runs `nap` as a child and returns what it returned.
pub const PARENT: Workflow<u64, Value> = Workflow::new("parent");
/// Runs `stuck` until cancelled, then tidies up.
pub const CANCELLABLE: Workflow<(), Value> = Workflow::new("cancellable");

/// What the activities did, shared by every engine process of one test.
#[derive(Default)]
pub struct Probe {
    attempts: Mutex<HashMap<String, u32>>,
    /// `stuck` attempts that ended without finishing (dropped: cancelled).
    pub stopped: Mutex<u32>,
    pub stuck_started: Notify,
}

impl Probe {
    pub fn attempts(&self, name: &str) -> u32 {
        self.attempts
            .lock()
            .unwrap()
            .get(name)
            .copied()
            .unwrap_or(0)
    }

    fn count(&self, name: &str) -> u32 {
        let mut attempts = self.attempts.lock().unwrap();
        let n = attempts.entry(name.to_owned()).or_default();
        *n += 1;
        *n
    }
}

struct DropGuard(Arc<Probe>, bool);

impl Drop for DropGuard {
    fn drop(&mut self) {
        if !self.1 {
            *self.0.stopped.lock().unwrap() += 1;
        }
    }
}

pub fn registry(probe: &Arc<Probe>) -> Registry {
    let mut registry = Registry::new();
    let p = probe.clone();
    registry.activity(&ECHO, move |info, input: Value| {
        let n = p.count("echo");
        async move { Ok(json!({ "run": info.workflow_id, "input": input, "attempt": info.attempt, "count": n })) }
    });
    let p = probe.clone();
    registry.activity(&FLAKY, move |info, _input: Value| {
        p.count("flaky");
        async move {
            if info.attempt < 3 {
                Err(ActivityError::retryable("unavailable", "not yet"))
            } else {
                Ok(json!({ "attempt": info.attempt }))
            }
        }
    });
    let p = probe.clone();
    registry.activity(&INVALID, move |_, _: Value| {
        p.count("invalid");
        async { Err::<Value, _>(ActivityError::fatal("validation_failed", "bad input")) }
    });
    let p = probe.clone();
    registry.activity(&SLOW, move |_, _: Value| {
        p.count("slow");
        async {
            tokio::time::sleep(Duration::from_secs(30)).await;
            Ok(Value::Null)
        }
    });
    let p = probe.clone();
    registry.activity(&STUCK, move |_, _: Value| {
        p.count("stuck");
        let probe = p.clone();
        async move {
            let mut guard = DropGuard(probe.clone(), false);
            probe.stuck_started.notify_one();
            tokio::time::sleep(Duration::from_secs(50)).await;
            guard.1 = true;
            Ok(Value::Null)
        }
    });
    let p = probe.clone();
    registry.activity(&TIDY, move |_, _: Value| {
        p.count("tidy");
        async { Ok(json!("tidied")) }
    });

    registry.workflow(&STEPS, |ctx: Ctx, names: Vec<String>| async move {
        let mut out = Vec::new();
        for name in names {
            let activity = match name.as_str() {
                "echo" => &ECHO,
                "flaky" => &FLAKY,
                "invalid" => &INVALID,
                "slow" => &SLOW,
                _ => return Err(ActivityError::fatal("validation_failed", "unknown step")),
            };
            out.push(ctx.activity(activity, &json!({ "step": name })).await?);
        }
        Ok(out)
    });
    registry.workflow(&NAP, |ctx: Ctx, ms: u64| async move {
        let at = ctx.now().await?.unix_timestamp_nanos() / 1_000_000;
        let draws = (ctx.random(), ctx.random());
        ctx.publish(&json!({ "phase": "sleeping", "at": at, "draws": [draws.0, draws.1] }));
        ctx.sleep(Duration::from_millis(ms)).await?;
        ctx.publish(&json!({ "phase": "awake" }));
        Ok(json!({ "at": at, "draws": [draws.0, draws.1] }))
    });
    registry.workflow(&WAITER, |ctx: Ctx, ms: u64| async move {
        ctx.publish(&json!({ "phase": "waiting" }));
        let go: Option<Value> = ctx.signal("go", Duration::from_millis(ms)).await?;
        let never: Option<Value> = ctx.signal("never", Duration::from_millis(500)).await?;
        Ok(json!({ "go": go, "never": never }))
    });
    registry.workflow(&PARENT, |ctx: Ctx, ms: u64| async move {
        let id = format!("{}-child", ctx.workflow_id());
        let child = ctx.child(&NAP, &id, &ms).await?;
        let after = ctx.activity(&ECHO, &json!("after the child")).await?;
        Ok(json!({ "child": child, "after": after }))
    });
    registry.workflow(&CANCELLABLE, |ctx: Ctx, (): ()| async move {
        match ctx.activity(&STUCK, &json!({})).await {
            Err(e) if e.is_cancelled() => {
                ctx.cleanup().activity(&TIDY, &json!({})).await?;
                Err(e)
            }
            other => other,
        }
    });
    registry
}
