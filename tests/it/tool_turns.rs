//! Agents that act, through the gateway as a client would, with the built-in GitHub
//! adapter against a server speaking GitHub's API: called directly (GitHub's headers,
//! a list over pages, a 429 waited out); a session's model is offered the tenant's
//! tools, its calls run (under policy, with the tenant's credential), their results go
//! back to it round after round; a merge requires approval and waits for a person, who
//! approves or denies it, or nobody answers in time; a wait survives a restart of the
//! platform; another tenant's model is not offered the tool nor its credential.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
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

pub(crate) const TOKEN: &str = "ghp_16C7e42F292c6912E7710c838347Ae178B4a";
const PASSWORD: &str = "a long user passphrase";

/// What the GitHub-compatible server saw: method, path and query, the headers GitHub
/// asks for (`authorization`, `accept`, `x-github-api-version`), the body.
pub(crate) type Seen = Arc<Mutex<Vec<(String, String, [String; 3], Value)>>>;

/// A server speaking GitHub's REST API for what the journey uses: an issue, a list of
/// issues over two pages (the second refused once with 429 and `Retry-After: 1`), and
/// merging a pull request.
pub(crate) async fn github() -> (String, Seen) {
    let seen: Seen = Arc::default();
    #[derive(Clone)]
    struct Server {
        seen: Seen,
        base: String,
        limited: Arc<Mutex<bool>>,
    }
    fn record(server: &Server, method: &str, uri: &Uri, headers: &HeaderMap, body: Value) {
        let header = |n: &str| {
            headers
                .get(n)
                .map(|v| v.to_str().unwrap().to_owned())
                .unwrap_or_default()
        };
        server.seen.lock().unwrap().push((
            method.into(),
            uri.to_string(),
            [
                header("authorization"),
                header("accept"),
                header("x-github-api-version"),
            ],
            body,
        ));
    }
    async fn issue(
        State(server): State<Server>,
        uri: Uri,
        headers: HeaderMap,
        Path((_, _, number)): Path<(String, String, u64)>,
    ) -> Json<Value> {
        record(&server, "GET", &uri, &headers, Value::Null);
        Json(json!({"number": number, "title": "Crash on start", "state": "open"}))
    }
    async fn issues(
        State(server): State<Server>,
        uri: Uri,
        headers: HeaderMap,
        Query(q): Query<std::collections::HashMap<String, String>>,
    ) -> Response {
        record(&server, "GET", &uri, &headers, Value::Null);
        if q.get("page").map(String::as_str) == Some("2") {
            let mut limited = server.limited.lock().unwrap();
            if !*limited {
                *limited = true;
                return (
                    StatusCode::TOO_MANY_REQUESTS,
                    [("retry-after", "1")],
                    Json(json!({"message": "You have exceeded a secondary rate limit"})),
                )
                    .into_response();
            }
            return Json(json!([{"number": 3}])).into_response();
        }
        let next = format!(
            r#"<{}/repos/acme/app/issues?state=open&page=2>; rel="next""#,
            server.base
        );
        (
            [("link", next)],
            Json(json!([{"number": 1}, {"number": 2}])),
        )
            .into_response()
    }
    async fn merge(
        State(server): State<Server>,
        uri: Uri,
        headers: HeaderMap,
        Json(body): Json<Value>,
    ) -> Json<Value> {
        record(&server, "PUT", &uri, &headers, body);
        Json(
            json!({"sha": "6dcb09b5b57875f334f61aebed695e2e4193db5e", "merged": true, "message": "Pull Request successfully merged"}),
        )
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let server = Server {
        seen: seen.clone(),
        base: base.clone(),
        limited: Arc::default(),
    };
    let app = Router::new()
        .route("/repos/{owner}/{repo}/issues", get(issues))
        .route("/repos/{owner}/{repo}/issues/{number}", get(issue))
        .route("/repos/{owner}/{repo}/pulls/{number}/merge", put(merge))
        .with_state(server);
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (base, seen)
}

const READ: &str = r#"call github__get_issue {"owner": "acme", "repo": "app", "issue_number": 7}"#;
const MERGE: &str = r#"call github__merge_pull_request {"owner": "acme", "repo": "app", "pull_number": 12, "merge_method": "squash"}"#;

/// The headers GitHub asks every request to carry.
fn github_headers() -> [String; 3] {
    [
        format!("Bearer {TOKEN}"),
        "application/vnd.github+json".into(),
        "2022-11-28".into(),
    ]
}

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
    let (base, seen) = github().await;
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

    // The tenant's GitHub (the built-in adapter, served here), its token set; a model
    // that follows its prompt's script.
    let (status, set) = call(
        &client,
        Method::PUT,
        &g("/v1/tools/github/credentials"),
        &root,
        Some(json!({"credential": TOKEN, "base_url": base})),
    )
    .await;
    assert_eq!(
        (status, set["credential_set"].as_bool()),
        (200, Some(true)),
        "{set}"
    );
    let (_, shown) = call(&client, Method::GET, &g("/v1/tools/github"), &root, None).await;
    assert_eq!(
        (
            shown["kind"].as_str(),
            shown["base_url"].as_str(),
            shown["site_set"].as_bool()
        ),
        (Some("builtin"), Some(base.as_str()), Some(true)),
        "{shown}"
    );
    assert!(!shown.to_string().contains(TOKEN));
    platform_profile(&client, &gateway, &root, "tool-user").await;
    let session = create_session(&client, &gateway, &root, json!({"model": "tool-user"})).await;

    // Called directly: GitHub's headers on every request, a list over two pages with
    // the second's 429 waited out as `Retry-After` says.
    let (status, listed) = call(&client, Method::POST, &g("/v1/tools/github/invoke"), &root,
        Some(json!({"action": "list_issues", "arguments": {"owner": "acme", "repo": "app", "state": "open", "max_pages": 2}}))).await;
    assert_eq!(status, 200, "{listed}");
    assert_eq!(
        listed["result"],
        json!([{"number": 1}, {"number": 2}, {"number": 3}])
    );
    let pages: Vec<_> = std::mem::take(&mut *seen.lock().unwrap());
    let asked: Vec<&str> = pages.iter().map(|(_, uri, _, _)| uri.as_str()).collect();
    assert_eq!(
        asked,
        [
            "/repos/acme/app/issues?state=open",
            "/repos/acme/app/issues?state=open&page=2",
            "/repos/acme/app/issues?state=open&page=2"
        ]
    );
    assert!(
        pages
            .iter()
            .all(|(_, _, headers, _)| *headers == github_headers()),
        "{pages:?}"
    );
    let (status, one) = call(
        &client,
        Method::POST,
        &g("/v1/tools/github/invoke"),
        &root,
        Some(json!({"action": "list_issues", "arguments": {"owner": "acme", "repo": "app"}})),
    )
    .await;
    assert_eq!(
        (status, one["result"].as_array().map(Vec::len)),
        (200, Some(2)),
        "{one}"
    );
    seen.lock().unwrap().clear();

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
        (Some(true), Some("github__get_issue")),
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
            github_headers(),
            Value::Null
        )]
    );
    // The model was offered GitHub's actions as OpenAI functions, with their schemas,
    // and none of the adapters this tenant has not set up.
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
    assert!(
        names.contains(&"github__get_issue") && names.contains(&"github__merge_pull_request"),
        "{names:?}"
    );
    // What the tenant set up, and the platform's own memory tool.
    assert!(
        names
            .iter()
            .all(|n| n.starts_with("github__") || n.starts_with("memory__")),
        "{names:?}"
    );
    assert!(names.contains(&"memory__remember"), "{names:?}");
    let merge = offered
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["function"]["name"] == "github__merge_pull_request")
        .unwrap();
    assert_eq!(
        merge["function"]["parameters"]["required"],
        json!(["owner", "repo", "pull_number"]),
        "{merge}"
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
        tokio::spawn(async move { send_sse(&client, &gateway, &root, &session, MERGE).await })
    };
    let asked = pending_approval(&client, &gateway, &root, &session).await;
    assert_eq!(
        (asked["tool"].as_str(), asked["action"].as_str()),
        (Some("github"), Some("merge_pull_request")),
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
    let hank = crate::helpers::other_tenant_admin(&client, &gateway, &root).await;
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
        (Some(call_id.as_str()), Some("merge_pull_request"))
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
            .contains(r#""merged":true"#),
        "{events:?}"
    );
    let merged = seen.lock().unwrap()[1].clone();
    assert_eq!(
        merged,
        (
            "PUT".to_owned(),
            "/repos/acme/app/pulls/12/merge".to_owned(),
            github_headers(),
            json!({"merge_method": "squash"})
        )
    );

    // Denied: the call does not run, and the model is told why.
    let watching = {
        let (client, gateway, root, session) = (
            client.clone(),
            gateway.clone(),
            root.clone(),
            session.clone(),
        );
        tokio::spawn(async move { send_sse(&client, &gateway, &root, &session, MERGE).await })
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
        Some(json!({"name": "no reads", "kind": "deny_tool", "value": "github.get_issue", "severity": "high", "score": 100}))).await;
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

    // Another tenant's model is not offered the tool, and calling it directly finds no
    // credential: this tenant's is not theirs.
    let theirs = create_session(&client, &gateway, &hank, json!({"model": "tool-user"})).await;
    let events = send_sse(&client, &gateway, &hank, &theirs, READ).await;
    assert_eq!(
        event(&events, "message")["content"],
        "I have no tool github__get_issue",
        "{events:?}"
    );
    let (status, problem) = call(&client, Method::POST, &g("/v1/tools/github/invoke"), &hank,
        Some(json!({"action": "get_issue", "arguments": {"owner": "acme", "repo": "app", "issue_number": 7}}))).await;
    assert_eq!(
        (status, problem["error"]["details"]["missing"].as_str()),
        (409, Some("credential")),
        "{problem}"
    );
    let (_, theirs_shown) = call(&client, Method::GET, &g("/v1/tools/github"), &hank, None).await;
    assert_eq!(
        (
            theirs_shown["credential_set"].as_bool(),
            theirs_shown["base_url"].as_str()
        ),
        (Some(false), Some("https://api.github.com")),
        "{theirs_shown}"
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
                Some(json!({"content": MERGE})),
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
    assert!(last.contains(r#""merged":true"#), "{last}");
    assert_eq!(seen.lock().unwrap().len(), 3, "the approved call ran once");

    // Nobody answers in time: a denial the model is told of, and too late to approve.
    let events = send_sse(&client, &gateway, &root, &session, MERGE).await;
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
        &format!("{gateway}/v1/tools/invocations?tool_id=github"),
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
    assert_eq!(
        approvers.len(),
        5,
        "two lists, a read and two merges: {log}"
    );
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
