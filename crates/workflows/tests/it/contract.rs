//! Every verb, on every engine, as a user of the crate sees it.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use somagent_workflows::{Engine, EngineError, Outcome, RunFilter, RunStatus, StartRequest};

use somagent_common::tenant::TenantId;

use crate::engines::{Harness, all};
use crate::probe::{CANCELLABLE, NAP, PARENT, STEPS, WAITER};

fn tenant(id: &str) -> TenantId {
    TenantId::parse(id).unwrap()
}

/// Runs `check` on every engine at once; names the engine in a failure.
async fn on_every_engine<F, Fut>(check: F)
where
    F: Fn(Harness) -> Fut,
    Fut: Future<Output = ()>,
{
    let runs = all().await.into_iter().map(|h| {
        let name = h.name.clone();
        let fut = check(h);
        async move {
            eprintln!("contract on {name}");
            fut.await;
        }
    });
    futures::future::join_all(runs).await;
}

fn id(what: &str) -> String {
    format!("{what}-{}", uuid::Uuid::new_v4().simple())
}

async fn start(engine: &Arc<dyn Engine>, kind: &str, id: &str, input: Value) -> bool {
    engine
        .start(StartRequest {
            kind,
            id,
            tenant: &tenant("acme"),
            input: &input,
        })
        .await
        .unwrap()
}

async fn ended(engine: &Arc<dyn Engine>, id: &str, within: Duration) -> Outcome {
    let deadline = Instant::now() + within;
    loop {
        if let Some(outcome) = engine.outcome(id).await.unwrap() {
            return outcome;
        }
        assert!(
            Instant::now() < deadline,
            "{id} did not end within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn completed(outcome: Outcome) -> Value {
    match outcome {
        Outcome::Completed(value) => value,
        other => panic!("the run did not complete: {other:?}"),
    }
}

/// Until `check` holds of the run's published state.
async fn published(engine: &Arc<dyn Engine>, id: &str, check: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(Some(state)) = engine.query(&tenant("acme"), id).await
            && check(&state)
        {
            return state;
        }
        assert!(
            Instant::now() < deadline,
            "{id} never published the state looked for"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn activities_retry_within_bounds_fail_fast_when_invalid_and_start_once() {
    on_every_engine(|h| async move {
        let engine = h.engine().await;
        let run = id("flaky");
        assert!(start(&engine, STEPS.kind, &run, json!(["flaky", "echo"])).await);
        assert!(
            !start(&engine, STEPS.kind, &run, json!(["flaky", "echo"])).await,
            "the same id is the same run"
        );
        let out = completed(ended(&engine, &run, Duration::from_secs(30)).await);
        assert_eq!(out[0]["attempt"], 3, "{}: two retries: {out}", h.name);
        assert_eq!(out[1]["run"], run.as_str());
        assert_eq!(h.probe.attempts("flaky"), 3, "{}", h.name);
        assert!(
            !start(&engine, STEPS.kind, &run, json!(["echo"])).await,
            "an ended run is not started again"
        );

        let bad = id("invalid");
        start(&engine, STEPS.kind, &bad, json!(["invalid", "echo"])).await;
        match ended(&engine, &bad, Duration::from_secs(30)).await {
            Outcome::Failed(e) => {
                assert_eq!(
                    (e.code.as_str(), e.retryable),
                    ("validation_failed", false),
                    "{}: {e:?}",
                    h.name
                );
            }
            other => panic!("{}: {other:?}", h.name),
        }
        assert_eq!(h.probe.attempts("invalid"), 1, "{}: never retried", h.name);

        let slow = id("slow");
        start(&engine, STEPS.kind, &slow, json!(["slow"])).await;
        match ended(&engine, &slow, Duration::from_secs(30)).await {
            Outcome::Failed(e) => assert_eq!(e.code, "timeout", "{}: {e:?}", h.name),
            other => panic!("{}: {other:?}", h.name),
        }
        assert_eq!(
            h.probe.attempts("slow"),
            3,
            "{}: each attempt timed out",
            h.name
        );

        assert!(matches!(
            engine
                .start(StartRequest {
                    kind: "no_such_kind",
                    id: &id("x"),
                    tenant: &tenant("acme"),
                    input: &json!(null)
                })
                .await,
            Err(EngineError::UnknownKind(_))
        ));
        assert!(engine.outcome("no-such-run").await.unwrap().is_none());
        engine.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timer_fires_on_time_across_a_restart_and_time_and_randomness_replay() {
    on_every_engine(|h| async move {
        let first = h.engine().await;
        let run = id("nap");
        let began = Instant::now();
        start(&first, NAP.kind, &run, json!(4_000)).await;
        let before = published(&first, &run, |s| s["phase"] == "sleeping").await;
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        first.shutdown().await;
        let second = h.engine().await;
        let out = completed(ended(&second, &run, Duration::from_secs(30)).await);
        let took = began.elapsed();
        assert!(
            took >= Duration::from_millis(3_900),
            "{}: fired early ({took:?})",
            h.name
        );
        // Restarted from zero, it would have fired 4 s after the restart (≥ 5.5 s).
        assert!(
            took < Duration::from_millis(5_400),
            "{}: the timer started again ({took:?})",
            h.name
        );
        assert_eq!(out["at"], before["at"], "{}: now() replays", h.name);
        assert_eq!(
            out["draws"], before["draws"],
            "{}: random() replays",
            h.name
        );
        assert_ne!(out["draws"][0], out["draws"][1]);
        second.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signals_are_kept_until_read_even_when_sent_while_the_engine_is_down() {
    on_every_engine(|h| async move {
        let first = h.engine().await;
        let run = id("waiter");
        start(&first, WAITER.kind, &run, json!(60_000)).await;
        published(&first, &run, |s| s["phase"] == "waiting").await;
        first.shutdown().await;
        // Nothing runs the workflow now; the signal must wait for it.
        first
            .signal(&tenant("acme"), &run, "go", json!({ "approved": true }))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let second = h.engine().await;
        let out = completed(ended(&second, &run, Duration::from_secs(30)).await);
        assert_eq!(out["go"], json!({ "approved": true }), "{}", h.name);
        assert_eq!(
            out["never"],
            Value::Null,
            "{}: a wait with no signal times out",
            h.name
        );

        // A signal sent before the run waits is buffered; two are read in order.
        let early = id("early");
        start(&second, WAITER.kind, &early, json!(60_000)).await;
        second
            .signal(&tenant("acme"), &early, "go", json!(1))
            .await
            .unwrap();
        second
            .signal(&tenant("acme"), &early, "never", json!(2))
            .await
            .unwrap();
        let out = completed(ended(&second, &early, Duration::from_secs(30)).await);
        assert_eq!(
            (out["go"].clone(), out["never"].clone()),
            (json!(1), json!(2)),
            "{}",
            h.name
        );

        // Signals go only to the tenant's running runs.
        assert!(
            matches!(
                second
                    .signal(&tenant("other"), &early, "go", json!(1))
                    .await,
                Err(EngineError::NotFound(_))
            ),
            "{}",
            h.name
        );
        assert!(
            matches!(
                second.signal(&tenant("acme"), &early, "go", json!(1)).await,
                Err(EngineError::Ended(_))
            ),
            "{}",
            h.name
        );
        second.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_completes_while_its_parent_is_replayed() {
    on_every_engine(|h| async move {
        let first = h.engine().await;
        let run = id("parent");
        start(&first, PARENT.kind, &run, json!(2_500)).await;
        let child = format!("{run}-child");
        published(&first, &child, |s| s["phase"] == "sleeping").await;
        first.shutdown().await;
        let second = h.engine().await;
        let out = completed(ended(&second, &run, Duration::from_secs(30)).await);
        assert!(out["child"]["at"].is_i64(), "{}: {out}", h.name);
        assert_eq!(out["after"]["input"], "after the child", "{}", h.name);
        assert!(matches!(
            second.outcome(&child).await.unwrap(),
            Some(Outcome::Completed(_))
        ));
        let listed = second
            .list(&RunFilter {
                kind: Some(NAP.kind.into()),
                limit: 10,
                ..RunFilter::of(tenant("acme"))
            })
            .await
            .unwrap();
        let mine = listed
            .iter()
            .find(|r| r.id == child)
            .expect("the child is listed");
        assert_eq!(mine.parent_id.as_deref(), Some(run.as_str()), "{}", h.name);
        assert_eq!(mine.status, RunStatus::Completed);
        second.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_stops_the_running_activity_and_lets_the_workflow_tidy_up() {
    on_every_engine(|h| async move {
        let engine = h.engine().await;
        let run = id("cancel");
        start(&engine, CANCELLABLE.kind, &run, json!(null)).await;
        tokio::time::timeout(Duration::from_secs(30), h.probe.stuck_started.notified())
            .await
            .expect("the activity starts");
        assert!(matches!(
            engine.cancel(&tenant("other"), &run).await,
            Err(EngineError::NotFound(_))
        ));
        let asked = Instant::now();
        engine.cancel(&tenant("acme"), &run).await.unwrap();
        assert_eq!(
            ended(&engine, &run, Duration::from_secs(30)).await,
            Outcome::Cancelled,
            "{}",
            h.name
        );
        assert!(
            asked.elapsed() < Duration::from_secs(10),
            "{}: took {:?}",
            h.name,
            asked.elapsed()
        );
        // The activity was stopped, not left to finish; the clean-up ran once.
        let deadline = Instant::now() + Duration::from_secs(10);
        while *h.probe.stopped.lock().unwrap() == 0 {
            assert!(
                Instant::now() < deadline,
                "{}: the cancelled activity kept running",
                h.name
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(h.probe.attempts("tidy"), 1, "{}", h.name);
        assert!(
            matches!(
                engine.cancel(&tenant("acme"), &run).await,
                Err(EngineError::Ended(_))
            ),
            "{}",
            h.name
        );
        let view = engine.describe(&tenant("acme"), &run).await.unwrap();
        assert_eq!(view.summary.status, RunStatus::Cancelled, "{}", h.name);
        assert!(view.cancel_requested || h.name == "temporal", "{}", h.name);
        engine.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_see_a_tenants_runs_their_steps_and_published_state() {
    on_every_engine(|h| async move {
        let engine = h.engine().await;
        let run = id("seen");
        start(&engine, WAITER.kind, &run, json!(60_000)).await;
        let state = published(&engine, &run, |s| s["phase"] == "waiting").await;
        let view = engine.describe(&tenant("acme"), &run).await.unwrap();
        assert_eq!(view.summary.status, RunStatus::Running, "{}", h.name);
        assert_eq!(view.state.as_ref(), Some(&state), "{}", h.name);
        assert!(
            matches!(
                engine.describe(&tenant("other"), &run).await,
                Err(EngineError::NotFound(_))
            ),
            "{}",
            h.name
        );
        let done = id("done");
        start(&engine, STEPS.kind, &done, json!(["echo", "echo"])).await;
        completed(ended(&engine, &done, Duration::from_secs(30)).await);
        let view = engine.describe(&tenant("acme"), &done).await.unwrap();
        assert_eq!(view.summary.status, RunStatus::Completed, "{}", h.name);
        let names: Vec<&str> = view
            .steps
            .iter()
            .filter(|s| s.kind == "activity")
            .map(|s| s.name.as_str())
            .collect();
        assert_eq!(names, ["echo", "echo"], "{}: {:?}", h.name, view.steps);
        assert!(
            view.steps
                .iter()
                .all(|s| s.started_at.is_some() && s.ended_at >= s.started_at),
            "{}: {:?}",
            h.name,
            view.steps
        );

        let running = engine
            .list(&RunFilter {
                status: Some(RunStatus::Running),
                limit: 50,
                ..RunFilter::of(tenant("acme"))
            })
            .await
            .unwrap();
        assert!(
            running.iter().any(|r| r.id == run) && !running.iter().any(|r| r.id == done),
            "{}: {running:?}",
            h.name
        );
        let theirs = engine
            .list(&RunFilter {
                limit: 50,
                ..RunFilter::of(tenant("other"))
            })
            .await
            .unwrap();
        assert!(theirs.is_empty(), "{}", h.name);
        // Paging: newest first, then from the cursor on.
        let page = engine
            .list(&RunFilter {
                limit: 1,
                ..RunFilter::of(tenant("acme"))
            })
            .await
            .unwrap();
        assert_eq!(page.len(), 1);
        let next = engine
            .list(&RunFilter {
                limit: 1,
                before: Some((page[0].created_at, page[0].id.clone())),
                ..RunFilter::of(tenant("acme"))
            })
            .await
            .unwrap();
        assert_eq!(next.len(), 1);
        assert_ne!(next[0].id, page[0].id);
        engine.cancel(&tenant("acme"), &run).await.unwrap();
        ended(&engine, &run, Duration::from_secs(30)).await;
        engine.shutdown().await;
    })
    .await;
}
