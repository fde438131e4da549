//! The operators' API on workflow runs, through the gateway as a client would: a tenant
//! admin finds a session turn running, reads its steps, signals it, pages through the
//! tenant's runs and cancels the turn, which then ends `cancelled` and leaves its
//! session idle; ended runs refuse cancels and signals; other tenants get "not found",
//! members without `tenant:admin` a 403, bad filters and cursors a problem. The CLI
//! reads the same API.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{Backends, Rooted, login, platform_profile, with_scripted_llm};
use crate::lifecycle::call;
use crate::sessions::{create_session, send_sse};

const PASSWORD: &str = "a long user passphrase";
/// Long enough between words for the turn to be caught running.
const SLOW: &str = "slow-1500";

#[tokio::test]
async fn a_tenant_admin_inspects_signals_and_cancels_the_tenants_workflow_runs() {
    for backends in Backends::all() {
        operators_journey(backends).await;
    }
}

async fn operators_journey(backends: Backends) {
    let (
        _llm,
        Rooted {
            platform: _p,
            gateway,
            client,
            root,
            data: _data,
            ..
        },
    ) = with_scripted_llm(backends, &[]).await;
    let g = |path: &str| format!("{gateway}{path}");

    // A turn that completes, then one left running on a slow model.
    let quick = create_session(&client, &gateway, &root, json!({})).await;
    let (status, answer) = call(
        &client,
        Method::POST,
        &g(&format!("/v1/sessions/{quick}/messages")),
        &root,
        Some(json!({"content": "hello"})),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let quick_run = format!("session-{quick}-turn-1");
    platform_profile(&client, &gateway, &root, SLOW).await;
    let slow = create_session(&client, &gateway, &root, json!({"model": SLOW})).await;
    let slow_run = format!("session-{slow}-turn-1");
    let turn = {
        let (client, gateway, root, slow) =
            (client.clone(), gateway.clone(), root.clone(), slow.clone());
        tokio::spawn(async move {
            let words = "one two three four five six seven eight nine ten eleven twelve";
            send_sse(&client, &gateway, &root, &slow, words).await
        })
    };

    // Listed as running; its history was read and it waits on the model.
    let run = eventually(
        backends,
        "the slow turn is running on the model",
        async || {
            let (status, page) = call(
                &client,
                Method::GET,
                &g("/v1/workflows?status=running&kind=session_turn"),
                &root,
                None,
            )
            .await;
            assert_eq!(status, 200, "{page}");
            let listed = page["workflows"]
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r["id"] == slow_run.as_str());
            if !listed {
                return None;
            }
            let (status, run) = call(
                &client,
                Method::GET,
                &g(&format!("/v1/workflows/{slow_run}")),
                &root,
                None,
            )
            .await;
            assert_eq!(status, 200, "{run}");
            (run["current_step"]["name"] == "model.complete").then_some(run)
        },
    )
    .await;
    assert_eq!(
        (run["kind"].as_str(), run["status"].as_str()),
        (Some("session_turn"), Some("running")),
        "{run}"
    );
    assert!(
        run["created_at"].as_str().unwrap().ends_with('Z') && run["ended_at"].is_null(),
        "{run}"
    );
    let history = run["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "session.history")
        .unwrap_or_else(|| panic!("{backends:?}: no session.history step: {run}"));
    assert_eq!(
        (history["kind"].as_str(), history["status"].as_str()),
        (Some("activity"), Some("completed")),
        "{run}"
    );
    assert_eq!(run["cancel_requested"], false);

    // A signal to a running run is kept for it.
    let (status, sent) = call(
        &client,
        Method::POST,
        &g(&format!("/v1/workflows/{slow_run}/signals/operator.note")),
        &root,
        Some(json!({"note": "looking at it"})),
    )
    .await;
    assert_eq!(status, 202, "{sent}");
    assert_eq!(sent["signal"], "operator.note");

    // Pages of one, newest first, each from the last one's cursor.
    let (status, first) = call(
        &client,
        Method::GET,
        &g("/v1/workflows?limit=1"),
        &root,
        None,
    )
    .await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["workflows"].as_array().unwrap().len(), 1, "{first}");
    assert_eq!(first["workflows"][0]["id"], slow_run.as_str(), "{first}");
    let cursor = first["next_cursor"]
        .as_str()
        .expect("a next page")
        .to_owned();
    let (status, second) = call(
        &client,
        Method::GET,
        &g(&format!("/v1/workflows?limit=1&cursor={cursor}")),
        &root,
        None,
    )
    .await;
    assert_eq!(status, 200, "{second}");
    assert_eq!(second["workflows"][0]["id"], quick_run.as_str(), "{second}");
    assert_eq!(second["workflows"][0]["status"], "completed", "{second}");

    // Bad filters and cursors are the caller's problem, never a 500.
    for (query, code, field) in [
        ("status=done", 422, Some("status")),
        ("limit=0", 422, Some("limit")),
        ("limit=101", 422, Some("limit")),
        ("cursor=not-a-cursor", 400, None),
        ("cursor=MTI6", 400, None),
    ] {
        let (status, problem) = call(
            &client,
            Method::GET,
            &g(&format!("/v1/workflows?{query}")),
            &root,
            None,
        )
        .await;
        assert_eq!(status, code, "{query}: {problem}");
        match field {
            Some(field) => assert!(
                problem["error"]["details"]["fields"][field].is_string(),
                "{query}: {problem}"
            ),
            None => assert_eq!(problem["error"]["code"], "bad_request", "{problem}"),
        }
    }
    let (status, problem) = call(
        &client,
        Method::POST,
        &g(&format!("/v1/workflows/{slow_run}/signals/Not%20A%20Name")),
        &root,
        None,
    )
    .await;
    assert_eq!(status, 422, "{problem}");
    assert!(problem["error"]["details"]["fields"]["name"].is_string());

    // Another tenant's admin sees nothing of it; a member who is no admin may not ask.
    let (status, _) = call(
        &client,
        Method::POST,
        &g("/v1/tenants"),
        &root,
        Some(json!({"slug": "other", "display_name": "Other", "admin": {"username": "olga", "password": PASSWORD}})),
    )
    .await;
    assert_eq!(status, 201);
    let olga = login(&client, &gateway, "other", "olga", PASSWORD).await;
    let (status, user) = call(
        &client,
        Method::POST,
        &g("/v1/users"),
        &root,
        Some(json!({"username": "oscar", "password": PASSWORD, "roles": ["operator"]})),
    )
    .await;
    assert_eq!(status, 201, "{user}");
    let oscar = login(&client, &gateway, "default", "oscar", PASSWORD).await;
    let verbs = [
        (Method::GET, format!("/v1/workflows/{slow_run}")),
        (Method::POST, format!("/v1/workflows/{slow_run}/cancel")),
        (
            Method::POST,
            format!("/v1/workflows/{slow_run}/signals/operator.note"),
        ),
    ];
    for (method, path) in &verbs {
        let (status, problem) = call(&client, method.clone(), &g(path), &olga, None).await;
        assert_eq!(status, 404, "{method} {path} by another tenant: {problem}");
        let (status, problem) = call(&client, method.clone(), &g(path), &oscar, None).await;
        assert_eq!(status, 403, "{method} {path} by a member: {problem}");
        assert_eq!(
            problem["error"]["details"]["missing_capability"],
            "tenant:admin"
        );
    }
    let (status, theirs) = call(&client, Method::GET, &g("/v1/workflows"), &olga, None).await;
    assert_eq!(
        (status, &theirs["workflows"]),
        (200, &json!([])),
        "{theirs}"
    );
    let (status, _) = call(&client, Method::GET, &g("/v1/workflows"), &oscar, None).await;
    assert_eq!(status, 403);

    // Cancelled: accepted at once, ended shortly after, and the turn says so.
    let (status, cancelling) = call(
        &client,
        Method::POST,
        &g(&format!("/v1/workflows/{slow_run}/cancel")),
        &root,
        None,
    )
    .await;
    assert_eq!(status, 202, "{cancelling}");
    assert_eq!(
        cancelling,
        json!({"id": slow_run.as_str(), "status": "cancelling"})
    );
    let ended = eventually(backends, "the cancelled turn ends", async || {
        let (_, run) = call(
            &client,
            Method::GET,
            &g(&format!("/v1/workflows/{slow_run}")),
            &root,
            None,
        )
        .await;
        (run["status"] != "running").then_some(run)
    })
    .await;
    assert_eq!(ended["status"], "cancelled", "{ended}");
    assert_eq!(ended["cancel_requested"], true, "{ended}");
    assert!(
        ended["ended_at"].is_string() && ended["current_step"].is_null(),
        "{ended}"
    );
    let events = tokio::time::timeout(Duration::from_secs(30), turn)
        .await
        .expect("the turn's stream ends once the turn is cancelled")
        .unwrap();
    let (kind, data) = events.last().expect("the turn's events");
    assert_eq!(
        (kind.as_str(), data["code"].as_str()),
        ("error", Some("cancelled")),
        "{events:?}"
    );
    let session = eventually(backends, "the session is idle again", async || {
        let (_, session) = call(
            &client,
            Method::GET,
            &g(&format!("/v1/sessions/{slow}")),
            &root,
            None,
        )
        .await;
        (session["status"] == "idle").then_some(session)
    })
    .await;
    assert_eq!(session["turns"], 1, "{session}");

    // An ended run takes no more cancels or signals.
    for (path, run) in [
        (format!("/v1/workflows/{slow_run}/cancel"), &slow_run),
        (format!("/v1/workflows/{quick_run}/cancel"), &quick_run),
        (
            format!("/v1/workflows/{quick_run}/signals/operator.note"),
            &quick_run,
        ),
    ] {
        let (status, problem) = call(&client, Method::POST, &g(&path), &root, None).await;
        assert_eq!(status, 409, "{path} ({run}): {problem}");
        assert_eq!(problem["error"]["code"], "conflict", "{problem}");
    }

    // The CLI reads the same API.
    let (gateway_url, token) = (gateway.clone(), root.clone());
    let out = tokio::task::spawn_blocking(move || {
        crate::helpers::command("somagent", &BTreeMap::new())
            .args(["workflows", "list", "--status", "cancelled", "--gateway"])
            .arg(&gateway_url)
            .env("SOMAGENT_TOKEN", &token)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains(&slow_run) && stdout.contains("cancelled"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!stdout.contains(&quick_run), "{stdout}");
}

/// Polls `probe` until it yields, for up to 60 s (Temporal takes its time).
async fn eventually(
    backends: Backends,
    what: &str,
    probe: impl AsyncFn() -> Option<Value>,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(Instant::now() < deadline, "{backends:?}: {what}: timed out");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
