//! Agents that act, through the gateway as a client would: a session's model is offered
//! the user's tools, its calls run (under policy, with the tenant's credential), their
//! results go back to it round after round; a call that requires approval waits for a
//! person, who approves or denies it, or nobody answers in time; a wait survives a
//! restart of the platform; another tenant's model is not offered the tool.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::routing::get;
use axum::{Json, Router};
use reqwest::Method;
use serde_json::{Value, json};
use somagent_common::infra::events::topics;
use somagent_scripted_llm::ScriptedLlm;

use crate::helpers::{
    Backends, Platform, ROOT_PASSWORD, free_ports, login, platform_bus, platform_profile,
    published, wait_ok,
};
use crate::lifecycle::call;
use crate::sessions::{create_session, send_sse};

const TOKEN: &str = "ghp_tracker_token_5e1b";
const PASSWORD: &str = "a long user passphrase";

/// What the tracker saw: method, path, the Authorization header, the body.
type Seen = Arc<Mutex<Vec<(String, String, String, Value)>>>;

/// A small issue tracker with GitHub's shapes: read an issue, change its state.
async fn tracker() -> (String, Seen) {
    let seen: Seen = Arc::default();
    fn auth(headers: &HeaderMap) -> String {
        headers
            .get("authorization")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default()
    }
    async fn issue(
        State(seen): State<Seen>,
        headers: HeaderMap,
        Path((owner, repo, number)): Path<(String, String, u64)>,
    ) -> Json<Value> {
        let path = format!("/repos/{owner}/{repo}/issues/{number}");
        seen.lock()
            .unwrap()
            .push(("GET".into(), path, auth(&headers), Value::Null));
        Json(json!({"number": number, "title": "Crash on start", "state": "open"}))
    }
    async fn update(
        State(seen): State<Seen>,
        headers: HeaderMap,
        Path((owner, repo, number)): Path<(String, String, u64)>,
        Json(body): Json<Value>,
    ) -> Json<Value> {
        let path = format!("/repos/{owner}/{repo}/issues/{number}");
        seen.lock()
            .unwrap()
            .push(("PATCH".into(), path, auth(&headers), body.clone()));
        Json(json!({"number": number, "title": "Crash on start", "state": body["state"]}))
    }
    let app = Router::new()
        .route(
            "/repos/{owner}/{repo}/issues/{number}",
            get(issue).patch(update),
        )
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{address}"), seen)
}

fn openapi() -> Value {
    let path = json!([
        {"name": "owner", "in": "path", "required": true, "schema": {"type": "string"}},
        {"name": "repo", "in": "path", "required": true, "schema": {"type": "string"}},
        {"name": "number", "in": "path", "required": true, "schema": {"type": "integer"}}
    ]);
    json!({
        "openapi": "3.0.3",
        "info": {"title": "Tracker", "version": "1"},
        "servers": [{"url": "https://tracker.example.invalid"}],
        "components": {"securitySchemes": {"token": {"type": "http", "scheme": "bearer"}}},
        "paths": {"/repos/{owner}/{repo}/issues/{number}": {
            "parameters": path,
            "get": {"operationId": "get_issue", "summary": "Read an issue"},
            "patch": {"operationId": "set_issue_state", "summary": "Open or close an issue",
                "x-somagent-requires-approval": true,
                "requestBody": {"required": true, "content": {"application/json": {"schema": {
                    "type": "object", "required": ["state"], "additionalProperties": false,
                    "properties": {"state": {"type": "string", "enum": ["open", "closed"]}}}}}}}
        }}
    })
}

const READ: &str = r#"call tracker__get_issue {"owner": "acme", "repo": "app", "number": 7}"#;
const CLOSE: &str = r#"call tracker__set_issue_state {"owner": "acme", "repo": "app", "number": 7, "body": {"state": "closed"}}"#;

/// A platform on `backends` with the scripted upstream, its data kept for a restart.
struct Running {
    platform: Platform,
    gateway: String,
    root: String,
}

async fn start(
    data: &std::path::Path,
    env: &[(String, String)],
    approval_timeout: &str,
) -> Running {
    let mut all: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    all.push((
        "SOMAGENT_ORCHESTRATOR__APPROVAL_TIMEOUT_SECS",
        approval_timeout,
    ));
    let platform = Platform::start_with(data, &free_ports(), &all);
    let gateway = platform.addresses["gateway"].clone();
    let client = reqwest::Client::new();
    wait_ok(&client, &format!("{gateway}/readyz")).await;
    let root = login(&client, &gateway, "default", "admin", ROOT_PASSWORD).await;
    Running {
        platform,
        gateway,
        root,
    }
}

/// Waits until the session lists a pending approval, and returns it.
async fn pending_approval(
    client: &reqwest::Client,
    gateway: &str,
    token: &str,
    session: &str,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, listed) = call(
            client,
            Method::GET,
            &format!("{gateway}/v1/sessions/{session}/approvals"),
            token,
            None,
        )
        .await;
        if status == 200
            && let Some(p) = listed["approvals"]
                .as_array()
                .unwrap()
                .iter()
                .find(|a| a["status"] == "pending")
        {
            return p.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no approval became pending: {listed}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the session's turn has ended, and returns its messages.
async fn idle_messages(
    client: &reqwest::Client,
    gateway: &str,
    token: &str,
    session: &str,
) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let (status, s) = call(
            client,
            Method::GET,
            &format!("{gateway}/v1/sessions/{session}"),
            token,
            None,
        )
        .await;
        if status == 200 && s["status"] == "idle" {
            break;
        }
        assert!(Instant::now() < deadline, "the turn did not end: {s}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (_, listed) = call(
        client,
        Method::GET,
        &format!("{gateway}/v1/sessions/{session}/messages"),
        token,
        None,
    )
    .await;
    listed["messages"].as_array().unwrap().clone()
}

fn kinds(events: &[(String, Value)]) -> Vec<&str> {
    events.iter().map(|(k, _)| k.as_str()).collect()
}

fn event<'a>(events: &'a [(String, Value)], kind: &str) -> &'a Value {
    &events
        .iter()
        .find(|(k, _)| k == kind)
        .unwrap_or_else(|| panic!("no `{kind}` among {:?}", kinds(events)))
        .1
}

#[tokio::test]
async fn a_sessions_model_calls_tools_under_approval_across_a_restart() {
    for backends in Backends::all() {
        journey(backends).await;
    }
}

async fn journey(backends: Backends) {
    let (base, seen) = tracker().await;
    let llm = ScriptedLlm::start().await.unwrap();
    let mut env = backends.env().await;
    env.extend(
        [
            (
                "SOMAGENT_IDENTITY__BOOTSTRAP_ADMIN_PASSWORD",
                ROOT_PASSWORD.to_owned(),
            ),
            ("SOMAGENT_SLM__LLM_BASE_URL", llm.base_url()),
            ("SOMAGENT_SLM__LLM_MODEL", "scripted".to_owned()),
            ("SOMAGENT_TOOL__ALLOW_PRIVATE_NETWORKS", "true".to_owned()),
        ]
        .map(|(k, v)| (k.to_owned(), v)),
    );
    let data = tempfile::tempdir().unwrap();
    let client = reqwest::Client::new();
    let Running {
        platform,
        gateway,
        root,
    } = start(data.path(), &env, "120").await;
    let g = |path: &str| format!("{gateway}{path}");

    // The tenant's tracker, its token set; a model that follows its prompt's script.
    let (status, tool) = call(
        &client,
        Method::POST,
        &g("/v1/tools"),
        &root,
        Some(
            json!({"id": "tracker", "openapi": openapi(), "base_url": base, "price_micros": 1000}),
        ),
    )
    .await;
    assert_eq!(status, 201, "{tool}");
    let (status, _) = call(
        &client,
        Method::PUT,
        &g("/v1/tools/tracker/credentials"),
        &root,
        Some(json!({"credential": TOKEN})),
    )
    .await;
    assert_eq!(status, 200);
    platform_profile(&client, &gateway, &root, "tool-user").await;
    let session = create_session(&client, &gateway, &root, json!({"model": "tool-user"})).await;

    // A call that needs nobody: it runs with the token, and its result reaches the model.
    let events = send_sse(&client, &gateway, &root, &session, READ).await;
    assert_eq!(
        kinds(&events)
            .iter()
            .filter(|k| ["tool_call", "tool_result", "done"].contains(k))
            .collect::<Vec<_>>(),
        [&"tool_call", &"tool_result", &"done"],
        "{events:?}"
    );
    let result = event(&events, "tool_result");
    assert_eq!(
        (result["ok"].as_bool(), result["name"].as_str()),
        (Some(true), Some("tracker__get_issue")),
        "{result}"
    );
    let answer = event(&events, "message")["content"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        answer.starts_with("Results: ") && answer.contains("Crash on start"),
        "{answer}"
    );
    assert_eq!(
        seen.lock().unwrap().clone(),
        [(
            "GET".to_owned(),
            "/repos/acme/app/issues/7".to_owned(),
            format!("Bearer {TOKEN}"),
            Value::Null
        )]
    );
    // The model was offered both actions as OpenAI functions, with their schemas.
    let offered = llm
        .requests()
        .iter()
        .rev()
        .find(|r| r["model"] == "tool-user")
        .unwrap()["tools"]
        .clone();
    let names: Vec<&str> = offered
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["function"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["tracker__get_issue", "tracker__set_issue_state"],
        "{offered}"
    );
    assert_eq!(
        offered[1]["function"]["parameters"]["properties"]["body"]["properties"]["state"]["enum"],
        json!(["open", "closed"])
    );
    let messages = idle_messages(&client, &gateway, &root, &session).await;
    let roles: Vec<&str> = messages
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["user", "assistant", "tool", "assistant"]);

    // A call that needs approval waits; watchers see it asked and answered.
    let watching = {
        let (client, gateway, root, session) = (
            client.clone(),
            gateway.clone(),
            root.clone(),
            session.clone(),
        );
        tokio::spawn(async move { send_sse(&client, &gateway, &root, &session, CLOSE).await })
    };
    let asked = pending_approval(&client, &gateway, &root, &session).await;
    assert_eq!(
        (asked["tool"].as_str(), asked["action"].as_str()),
        (Some("tracker"), Some("set_issue_state")),
        "{asked}"
    );
    let call_id = asked["call_id"].as_str().unwrap().to_owned();
    assert_eq!(
        seen.lock().unwrap().len(),
        1,
        "nothing runs before a person approves"
    );
    let approve = |token: &str, session: &str, call_id: &str, body: Value| {
        let (client, url, token) = (
            client.clone(),
            g(&format!("/v1/sessions/{session}/approvals/{call_id}")),
            token.to_owned(),
        );
        async move { call(&client, Method::POST, &url, &token, Some(body)).await }
    };

    // Who may answer: not a viewer, not another tenant, not with a malformed answer.
    let (status, _) = call(
        &client,
        Method::POST,
        &g("/v1/users"),
        &root,
        Some(json!({"username": "vera", "password": PASSWORD, "roles": ["viewer"]})),
    )
    .await;
    assert_eq!(status, 201);
    let vera = login(&client, &gateway, "default", "vera", PASSWORD).await;
    let (status, problem) = approve(&vera, &session, &call_id, json!({"approve": true})).await;
    assert_eq!(status, 403, "{problem}");
    let (status, _) = call(&client, Method::POST, &g("/v1/tenants"), &root,
        Some(json!({"slug": "globex", "display_name": "Globex", "admin": {"username": "hank", "password": PASSWORD}}))).await;
    assert_eq!(status, 201);
    let hank = login(&client, &gateway, "globex", "hank", PASSWORD).await;
    let (status, problem) = approve(&hank, &session, &call_id, json!({"approve": true})).await;
    assert_eq!(status, 404, "{problem}");
    let (status, problem) = approve(&root, &session, &call_id, json!({"approve": "yes"})).await;
    assert_eq!(status, 422, "{problem}");
    let (status, problem) =
        approve(&root, &session, "call_unknown", json!({"approve": true})).await;
    assert_eq!(status, 404, "{problem}");

    let (status, given) = approve(
        &root,
        &session,
        &call_id,
        json!({"approve": true, "reason": "triaged"}),
    )
    .await;
    assert_eq!(
        (status, given["approved"].as_bool()),
        (200, Some(true)),
        "{given}"
    );
    let (status, again) = approve(&root, &session, &call_id, json!({"approve": false})).await;
    assert_eq!(status, 409, "only the first answer counts: {again}");
    let events = watching.await.unwrap();
    let order: Vec<&str> = kinds(&events)
        .into_iter()
        .filter(|k| k.starts_with("approval") || *k == "tool_result")
        .collect();
    assert_eq!(
        order,
        ["approval_required", "approval_resolved", "tool_result"],
        "{events:?}"
    );
    let required = event(&events, "approval_required");
    assert_eq!(
        (required["call_id"].as_str(), required["action"].as_str()),
        (Some(call_id.as_str()), Some("set_issue_state"))
    );
    assert!(
        required["expires_at"].as_str().unwrap().ends_with('Z'),
        "{required}"
    );
    let resolved = event(&events, "approval_resolved");
    assert_eq!(
        (resolved["approved"].as_bool(), resolved["reason"].as_str()),
        (Some(true), Some("triaged")),
        "{resolved}"
    );
    assert!(
        event(&events, "message")["content"]
            .as_str()
            .unwrap()
            .contains(r#""state":"closed""#),
        "{events:?}"
    );
    assert_eq!(seen.lock().unwrap()[1].0, "PATCH");
    assert_eq!(seen.lock().unwrap()[1].3, json!({"state": "closed"}));

    // Denied: the call does not run, and the model is told why.
    let watching = {
        let (client, gateway, root, session) = (
            client.clone(),
            gateway.clone(),
            root.clone(),
            session.clone(),
        );
        tokio::spawn(async move { send_sse(&client, &gateway, &root, &session, CLOSE).await })
    };
    let asked = pending_approval(&client, &gateway, &root, &session).await;
    let (status, _) = approve(
        &root,
        &session,
        asked["call_id"].as_str().unwrap(),
        json!({"approve": false, "reason": "not on a Friday"}),
    )
    .await;
    assert_eq!(status, 200);
    let events = watching.await.unwrap();
    let result = event(&events, "tool_result");
    assert_eq!(result["ok"], false, "{result}");
    let told: Value = serde_json::from_str(result["content"].as_str().unwrap()).unwrap();
    assert_eq!(
        (
            told["error"]["code"].as_str(),
            told["error"]["details"]["reason"].as_str()
        ),
        (Some("denied_by_person"), Some("not on a Friday")),
        "{told}"
    );
    assert_eq!(
        seen.lock().unwrap().len(),
        2,
        "a denied call never reaches the API"
    );

    // A call policy denies: the model is told, the API never called.
    let (status, _) = call(&client, Method::POST, &g("/v1/policy/rules"), &root,
        Some(json!({"name": "no reads", "kind": "deny_tool", "value": "tracker.get_issue", "severity": "high", "score": 100}))).await;
    assert_eq!(status, 201);
    let events = send_sse(&client, &gateway, &root, &session, READ).await;
    let told: Value =
        serde_json::from_str(event(&events, "tool_result")["content"].as_str().unwrap()).unwrap();
    assert_eq!(told["error"]["code"], "forbidden", "{told}");
    assert_eq!(
        seen.lock().unwrap().len(),
        2,
        "a denied call never reaches the API"
    );

    // Another tenant's model is not offered the tool at all.
    let theirs = create_session(&client, &gateway, &hank, json!({"model": "tool-user"})).await;
    let events = send_sse(&client, &gateway, &hank, &theirs, READ).await;
    assert_eq!(
        event(&events, "message")["content"],
        "I have no tool tracker__get_issue",
        "{events:?}"
    );

    // A wait survives a restart of the platform: approved after it, the call runs.
    let asking = {
        let (client, url, root) = (
            client.clone(),
            g(&format!("/v1/sessions/{session}/messages")),
            root.clone(),
        );
        tokio::spawn(async move {
            call(
                &client,
                Method::POST,
                &url,
                &root,
                Some(json!({"content": CLOSE})),
            )
            .await
        })
    };
    let asked = pending_approval(&client, &gateway, &root, &session).await;
    assert!(platform.stop().success());
    asking.abort();
    // Back with a short wait for approvals: a wait already under way keeps its deadline.
    let Running {
        platform,
        gateway,
        root,
    } = start(data.path(), &env, "3").await;
    let again = pending_approval(&client, &gateway, &root, &session).await;
    assert_eq!(again["call_id"], asked["call_id"]);
    let (status, given) = call(
        &client,
        Method::POST,
        &format!(
            "{gateway}/v1/sessions/{session}/approvals/{}",
            asked["call_id"].as_str().unwrap()
        ),
        &root,
        Some(json!({"approve": true})),
    )
    .await;
    assert_eq!(status, 200, "{given}");
    let messages = idle_messages(&client, &gateway, &root, &session).await;
    let last = messages.last().unwrap()["content"].as_str().unwrap();
    assert!(last.contains(r#""state":"closed""#), "{last}");
    assert_eq!(seen.lock().unwrap().len(), 3, "the approved call ran once");

    // Nobody answers in time: a denial the model is told of, and too late to approve.
    let events = send_sse(&client, &gateway, &root, &session, CLOSE).await;
    let resolved = event(&events, "approval_resolved");
    assert_eq!(
        (
            resolved["approved"].as_bool(),
            resolved["timed_out"].as_bool()
        ),
        (Some(false), Some(true)),
        "{resolved}"
    );
    let told: Value =
        serde_json::from_str(event(&events, "tool_result")["content"].as_str().unwrap()).unwrap();
    assert_eq!(told["error"]["code"], "approval_timeout", "{told}");
    let late = event(&events, "approval_required")["call_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, problem) = call(
        &client,
        Method::POST,
        &format!("{gateway}/v1/sessions/{session}/approvals/{late}"),
        &root,
        Some(json!({"approve": true})),
    )
    .await;
    assert_eq!(
        (status, problem["error"]["details"]["status"].as_str()),
        (409, Some("expired")),
        "{problem}"
    );
    assert_eq!(seen.lock().unwrap().len(), 3);
    let (_, listed) = call(
        &client,
        Method::GET,
        &format!("{gateway}/v1/sessions/{session}/approvals"),
        &root,
        None,
    )
    .await;
    let statuses: Vec<&str> = listed["approvals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        statuses,
        ["expired", "approved", "denied", "approved"],
        "{listed}"
    );

    // The tool log says who approved; the topic tells consumers each step once.
    let (_, log) = call(
        &client,
        Method::GET,
        &format!("{gateway}/v1/tools/invocations?tool_id=tracker"),
        &root,
        None,
    )
    .await;
    let approvers: Vec<Option<&str>> = log["invocations"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["outcome"] == "ok")
        .map(|i| i["approved_by"].as_str())
        .collect();
    assert_eq!(approvers.len(), 3, "{log}");
    assert_eq!(approvers.iter().filter(|a| a.is_some()).count(), 2, "{log}");
    let all: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let bus = platform_bus(&all, data.path()).await;
    let conversation = published(&bus, topics::CONVERSATION).await;
    // At least once on the topic, each under one id.
    let count = |kind: &str| {
        conversation
            .iter()
            .filter(|e| e.kind == kind && e.data["session_id"] == session.as_str())
            .map(|e| e.id)
            .collect::<std::collections::BTreeSet<_>>()
            .len()
    };
    assert_eq!(
        (
            count("tool.approval_required"),
            count("tool.approval_resolved")
        ),
        (4, 4)
    );
    assert!(
        !format!("{conversation:?}").contains(TOKEN),
        "no credential in an event"
    );
    assert!(platform.stop().success());
}
