//! Tools a tenant defines from an OpenAPI document, called through the gateway as a
//! client would: arguments checked against the schema, the credential sent the way the
//! document says and never shown, policy deciding on each call, limits, failures as
//! problems that leak nothing, the call log, usage and audit events, and another
//! tenant seeing none of it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use axum::{Json, Router};
use reqwest::Method;
use serde_json::{Value, json};
use somagent_common::infra::events::topics;

use somagent_common::infra::events::EventBus;

use crate::helpers::{Backends, Rooted, published, with_root_on};
use crate::lifecycle::call;

const KEY: &str = "crm-key-7f3a9c";

/// What the CRM saw: method, path and query, the API key header, the body.
type Seen = Arc<Mutex<Vec<(String, String, Option<String>, Value)>>>;

/// A small CRM API: contacts, one endpoint that fails echoing its key, one that is slow.
async fn crm() -> (String, Seen) {
    let seen: Seen = Arc::default();
    async fn contacts(
        State(seen): State<Seen>,
        headers: HeaderMap,
        Query(q): Query<Vec<(String, String)>>,
    ) -> Json<Value> {
        let key = headers
            .get("x-api-key")
            .map(|v| v.to_str().unwrap().to_owned());
        let query = q
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("&");
        seen.lock().unwrap().push((
            "GET".into(),
            format!("/api/contacts?{query}"),
            key,
            Value::Null,
        ));
        Json(json!({"contacts": [{"email": "ada@example.com", "name": "Ada"}]}))
    }
    async fn create(
        State(seen): State<Seen>,
        headers: HeaderMap,
        Json(body): Json<Value>,
    ) -> (StatusCode, Json<Value>) {
        let key = headers
            .get("x-api-key")
            .map(|v| v.to_str().unwrap().to_owned());
        seen.lock()
            .unwrap()
            .push(("POST".into(), "/api/contacts".into(), key, body.clone()));
        (StatusCode::CREATED, Json(json!({"id": 7, "contact": body})))
    }
    async fn remove(
        State(seen): State<Seen>,
        headers: HeaderMap,
        Path(id): Path<String>,
    ) -> StatusCode {
        let key = headers
            .get("x-api-key")
            .map(|v| v.to_str().unwrap().to_owned());
        seen.lock().unwrap().push((
            "DELETE".into(),
            format!("/api/contacts/{id}"),
            key,
            Value::Null,
        ));
        StatusCode::NO_CONTENT
    }
    async fn broken(headers: HeaderMap) -> (StatusCode, String) {
        let key = headers
            .get("x-api-key")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("internal error; your key was {key}"),
        )
    }
    async fn slow() -> Json<Value> {
        tokio::time::sleep(Duration::from_secs(5)).await;
        Json(json!({}))
    }
    let app = Router::new()
        .route("/api/contacts", get(contacts).post(create))
        .route("/api/contacts/{id}", axum::routing::delete(remove))
        .route("/api/broken", get(broken))
        .route("/api/slow", get(slow))
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{address}/api"), seen)
}

fn openapi() -> Value {
    json!({
        "openapi": "3.0.3",
        "info": {"title": "Acme CRM", "version": "1.0"},
        "servers": [{"url": "https://crm.example.invalid/api"}],
        "components": {
            "securitySchemes": {"key": {"type": "apiKey", "in": "header", "name": "X-API-Key"}},
            "schemas": {"Contact": {"type": "object", "required": ["email"], "additionalProperties": false,
                "properties": {"email": {"type": "string", "minLength": 3}, "name": {"type": "string"}}}}
        },
        "paths": {
            "/contacts": {
                "get": {"operationId": "list_contacts", "summary": "Find contacts",
                    "parameters": [{"name": "q", "in": "query", "schema": {"type": "string"}}]},
                "post": {"operationId": "create_contact", "requestBody": {"required": true,
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Contact"}}}}}
            },
            "/contacts/{id}": {"delete": {"operationId": "delete_contact",
                "parameters": [{"name": "id", "in": "path", "required": true, "schema": {"type": "integer"}}]}},
            "/broken": {"get": {"operationId": "broken"}},
            "/slow": {"get": {"operationId": "slow"}}
        }
    })
}

#[tokio::test]
async fn a_tenant_defines_a_tool_and_calls_it_under_policy_and_limits() {
    for backends in Backends::all() {
        journey(backends).await;
    }
}

async fn journey(backends: Backends) {
    let (base, seen) = crm().await;
    let Rooted {
        platform: _platform,
        gateway,
        client,
        root,
        data,
        events,
    } = with_root_on(
        backends,
        &[("SOMAGENT_TOOL__ALLOW_PRIVATE_NETWORKS", "true")],
    )
    .await;
    let g = |path: &str| format!("{gateway}{path}");

    // A tool from the document, served where the test's CRM listens; each action 2 calls
    // a minute.
    let (status, tool) = call(
        &client,
        Method::POST,
        &g("/v1/tools"),
        &root,
        Some(
            json!({"id": "crm", "openapi": openapi(), "base_url": base, "price_micros": 2500,
            "rate_limit_per_minute": 2, "timeout_ms": 1000}),
        ),
    )
    .await;
    assert_eq!(status, 201, "{tool}");
    let actions: Vec<&str> = tool["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        [
            "broken",
            "list_contacts",
            "create_contact",
            "delete_contact",
            "slow"
        ]
    );
    assert_eq!(
        (tool["auth"].as_str(), tool["credential_set"].as_bool()),
        (Some("header"), Some(false))
    );
    let (status, again) = call(
        &client,
        Method::POST,
        &g("/v1/tools"),
        &root,
        Some(json!({"id": "crm", "openapi": openapi()})),
    )
    .await;
    assert_eq!(status, 409, "{again}");
    let (status, bad) = call(
        &client,
        Method::POST,
        &g("/v1/tools"),
        &root,
        Some(json!({"id": "swagger", "openapi": {"swagger": "2.0", "paths": {}}})),
    )
    .await;
    assert_eq!(
        (
            status,
            bad["error"]["details"]["fields"]["openapi.openapi"].is_string()
        ),
        (422, true),
        "{bad}"
    );

    // Without its credential the call says what to set.
    let invoke = |action: &str, arguments: Value| {
        let client = client.clone();
        let url = g("/v1/tools/crm/invoke");
        let root = root.clone();
        let body = json!({"action": action, "arguments": arguments});
        async move { call(&client, Method::POST, &url, &root, Some(body)).await }
    };
    let (status, missing) = invoke("list_contacts", json!({})).await;
    assert_eq!(status, 409, "{missing}");
    assert_eq!(
        missing["error"]["details"]["set_with"],
        "PUT /v1/tools/crm/credentials"
    );

    let (status, set) = call(
        &client,
        Method::PUT,
        &g("/v1/tools/crm/credentials"),
        &root,
        Some(json!({"credential": KEY})),
    )
    .await;
    assert_eq!(
        (status, set["credential_set"].as_bool()),
        (200, Some(true)),
        "{set}"
    );
    let (_, shown) = call(&client, Method::GET, &g("/v1/tools/crm"), &root, None).await;
    assert_eq!(shown["credential_set"], true);
    assert!(
        !shown.to_string().contains(KEY),
        "a credential is never returned: {shown}"
    );

    // Calls reach the API with the key where the document puts it.
    let (status, found) = invoke("list_contacts", json!({"q": "ada lovelace"})).await;
    assert_eq!(status, 200, "{found}");
    assert_eq!(found["result"]["contacts"][0]["name"], "Ada");
    assert_eq!(
        (found["status"].as_u64(), found["cost_micros"].as_i64()),
        (Some(200), Some(2500))
    );
    let (status, created) = invoke(
        "create_contact",
        json!({"body": {"email": "grace@example.com"}}),
    )
    .await;
    assert_eq!(
        (status, created["status"].as_u64()),
        (200, Some(201)),
        "{created}"
    );
    {
        let seen = seen.lock().unwrap();
        assert_eq!(
            seen[0],
            (
                "GET".into(),
                "/api/contacts?q=ada lovelace".into(),
                Some(KEY.into()),
                Value::Null
            )
        );
        assert_eq!(
            seen[1],
            (
                "POST".into(),
                "/api/contacts".into(),
                Some(KEY.into()),
                json!({"email": "grace@example.com"})
            )
        );
    }

    // Arguments that do not fit the schema never leave the platform.
    for (arguments, field) in [
        (json!({"body": {"email": "x"}}), "arguments.body.email"),
        (
            json!({"body": {"email": "a@b.c", "extra": 1}}),
            "arguments.body",
        ),
        (json!({}), "arguments"),
    ] {
        let (status, refused) = invoke("create_contact", arguments.clone()).await;
        assert_eq!(status, 422, "{arguments}: {refused}");
        assert!(
            refused["error"]["details"]["fields"][field].is_string(),
            "{field}: {refused}"
        );
    }
    let (status, refused) = invoke("delete_contact", json!({"id": "seven"})).await;
    assert_eq!(
        (
            status,
            refused["error"]["details"]["fields"]["arguments.id"].is_string()
        ),
        (422, true),
        "{refused}"
    );
    let (status, _) = invoke("no_such_action", json!({})).await;
    assert_eq!(status, 404);
    assert_eq!(
        seen.lock().unwrap().len(),
        2,
        "nothing refused reached the API"
    );

    // A policy rule denying the action: denied before it runs.
    let (status, _) = call(
        &client,
        Method::POST,
        &g("/v1/policy/rules"),
        &root,
        Some(
            json!({"name": "no deletes", "kind": "deny_tool", "value": "crm.delete_contact",
            "severity": "high", "score": 100}),
        ),
    )
    .await;
    assert_eq!(status, 201);
    let (status, denied) = invoke("delete_contact", json!({"id": 7})).await;
    assert_eq!(status, 403, "{denied}");
    assert!(
        denied["error"]["details"]["rule_ids"]
            .to_string()
            .contains("tools.denied"),
        "{denied}"
    );
    assert_eq!(
        seen.lock().unwrap().len(),
        2,
        "a denied call never reaches the API"
    );

    // The API failing: a 502 with its status, and not its body (which held the key).
    let (status, failed) = invoke("broken", json!({})).await;
    assert_eq!(
        (status, failed["error"]["details"]["status"].as_u64()),
        (502, Some(500)),
        "{failed}"
    );
    assert!(!failed.to_string().contains(KEY), "{failed}");

    // Slower than its timeout: a 504.
    let (status, slow) = invoke("slow", json!({})).await;
    assert_eq!(status, 504, "{slow}");

    // The call log, newest first, with outcomes and cost.
    let (status, log) = call(
        &client,
        Method::GET,
        &g("/v1/tools/invocations?tool_id=crm&limit=3"),
        &root,
        None,
    )
    .await;
    assert_eq!(status, 200, "{log}");
    let outcomes = |page: &Value| -> Vec<String> {
        page["invocations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["outcome"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(outcomes(&log), ["timeout", "failed", "denied"], "{log}");
    assert_eq!(log["invocations"][0]["cost_micros"], 0);
    let next = log["next_cursor"].as_str().expect("more pages");
    let (_, rest) = call(
        &client,
        Method::GET,
        &g(&format!("/v1/tools/invocations?tool_id=crm&cursor={next}")),
        &root,
        None,
    )
    .await;
    assert_eq!(outcomes(&rest), ["ok", "ok"], "{rest}");
    assert_eq!(rest["invocations"][1]["action"], "list_contacts");
    assert_eq!(rest["invocations"][1]["cost_micros"], 2500);

    // A money budget with less room than the tool's price: the call is refused with a
    // 402 naming it before it reaches the API; without the budget it runs again.
    let budget = |limit: u64| json!({"budgets": [{"name": "tools-cap", "scope": "tenant", "metric": "money", "period": "total", "limit": limit}]});
    let (status, set) = call(
        &client,
        Method::PUT,
        &g("/v1/billing/budgets"),
        &root,
        Some(budget(2000)),
    )
    .await;
    assert_eq!(status, 200, "{set}");
    let reached = seen.lock().unwrap().len();
    let (status, refused) = invoke("list_contacts", json!({})).await;
    assert_eq!(
        (status, &refused["error"]["details"]["budget"]["name"]),
        (402, &json!("tools-cap")),
        "{refused}"
    );
    assert_eq!(refused["error"]["details"]["requested"], 2500, "{refused}");
    assert_eq!(
        seen.lock().unwrap().len(),
        reached,
        "a refused call never reaches the API"
    );
    let (status, cleared) = call(
        &client,
        Method::PUT,
        &g("/v1/billing/budgets"),
        &root,
        Some(json!({"budgets": []})),
    )
    .await;
    assert_eq!(
        (status, &cleared["budgets"]),
        (200, &json!([])),
        "{cleared}"
    );

    // Over the action's limit of 2 a minute: a 429 with when to come back. (The window
    // is the clock's minute, so a run that crosses one gets up to two more calls.)
    let mut ran = 0;
    let limited = loop {
        let (status, answer) = invoke("list_contacts", json!({})).await;
        match status {
            200 => ran += 1,
            429 => break answer,
            other => panic!("{other}: {answer}"),
        }
        assert!(ran <= 3, "no limit after {ran} more calls");
    };
    assert_eq!(limited["error"]["code"], "rate_limited", "{limited}");

    // Another tenant sees none of its tools (only the built-in adapters, none set up),
    // cannot use or overwrite its credential.
    let hank = crate::helpers::other_tenant_admin(&client, &gateway, &root).await;
    let (_, theirs) = call(&client, Method::GET, &g("/v1/tools"), &hank, None).await;
    let tools = theirs["tools"].as_array().unwrap();
    assert!(
        tools
            .iter()
            .all(|t| t["kind"] == "builtin" && t["credential_set"] == false),
        "{theirs}"
    );
    assert_eq!(
        tools.len(),
        15,
        "the built-in adapters and the memory tool: {theirs}"
    );
    for (method, path, body) in [
        (Method::GET, "/v1/tools/crm", None),
        (
            Method::POST,
            "/v1/tools/crm/invoke",
            Some(json!({"action": "list_contacts"})),
        ),
        (
            Method::PUT,
            "/v1/tools/crm/credentials",
            Some(json!({"credential": "mine"})),
        ),
        (Method::DELETE, "/v1/tools/crm", None),
    ] {
        let (status, problem) = call(&client, method.clone(), &g(path), &hank, body).await;
        assert_eq!(status, 404, "{method} {path}: {problem}");
        assert!(!problem.to_string().contains(KEY));
    }
    let (_, hank_log) = call(
        &client,
        Method::GET,
        &g("/v1/tools/invocations"),
        &hank,
        None,
    )
    .await;
    assert_eq!(hank_log["invocations"], json!([]));

    // Usage at the tool's price for each call that ran, and audit records without the key.
    let bus = EventBus::connect(&events, data.path()).await.unwrap();
    let usage: Vec<_> = published(&bus, topics::BILLING_USAGE)
        .await
        .into_iter()
        .filter(|e| e.kind == "tool.usage")
        .collect();
    assert_eq!(usage.len(), 2 + ran, "{usage:?}");
    assert!(
        usage
            .iter()
            .all(|e| e.data["cost_micros"] == 2500 && e.data["tool"] == "crm")
    );
    let audit = published(&bus, topics::AUDIT).await;
    let invoked: Vec<_> = audit.iter().filter(|e| e.kind == "tool.invoked").collect();
    assert_eq!(invoked.len(), 5 + ran, "each call that ran or was denied");
    assert!(audit.iter().any(|e| e.kind == "tool.credential_set"));
    assert!(
        !format!("{audit:?}").contains(KEY),
        "no credential in an event"
    );

    // Built-in adapters can be neither replaced nor removed; one served per customer
    // (Jira) asks for its site before it is called.
    let (status, taken) = call(
        &client,
        Method::POST,
        &g("/v1/tools"),
        &root,
        Some(json!({"id": "github", "openapi": openapi()})),
    )
    .await;
    assert_eq!(status, 409, "{taken}");
    let (status, kept) = call(&client, Method::DELETE, &g("/v1/tools/github"), &root, None).await;
    assert_eq!(status, 409, "{kept}");
    let (status, _) = call(
        &client,
        Method::PUT,
        &g("/v1/tools/jira/credentials"),
        &root,
        Some(json!({"credential": "ada@acme.test:atl-token"})),
    )
    .await;
    assert_eq!(status, 200);
    let (status, unsited) = call(
        &client,
        Method::POST,
        &g("/v1/tools/jira/invoke"),
        &root,
        Some(json!({"action": "get_issue", "arguments": {"issueIdOrKey": "ENG-7"}})),
    )
    .await;
    assert_eq!(
        (
            status,
            unsited["error"]["details"]["missing"].as_str(),
            unsited["error"]["details"]["set_with"].as_str()
        ),
        (
            409,
            Some("base_url"),
            Some("PUT /v1/tools/jira/credentials")
        ),
        "{unsited}"
    );
    let (status, bad) = call(
        &client,
        Method::PUT,
        &g("/v1/tools/jira/credentials"),
        &root,
        Some(json!({"base_url": "ftp://acme.atlassian.net"})),
    )
    .await;
    assert_eq!(
        (
            status,
            bad["error"]["details"]["fields"]["base_url"].is_string()
        ),
        (422, true),
        "{bad}"
    );

    // Removing the tool removes its credential: a new tool of that id starts without one.
    let (status, _) = call(&client, Method::DELETE, &g("/v1/tools/crm"), &root, None).await;
    assert_eq!(status, 204);
    let (status, again) = call(
        &client,
        Method::POST,
        &g("/v1/tools"),
        &root,
        Some(json!({"id": "crm", "openapi": openapi(), "base_url": base})),
    )
    .await;
    assert_eq!(
        (status, again["credential_set"].as_bool()),
        (201, Some(false)),
        "{again}"
    );
}

#[tokio::test]
async fn by_default_a_tool_cannot_reach_private_addresses() {
    let (base, seen) = crm().await;
    let Rooted {
        platform: _platform,
        gateway,
        client,
        root,
        data: _data,
        ..
    } = with_root_on(Backends::Embedded, &[]).await;
    let (status, _) = call(
        &client,
        Method::POST,
        &format!("{gateway}/v1/tools"),
        &root,
        Some(json!({"id": "crm", "openapi": openapi(), "base_url": base})),
    )
    .await;
    assert_eq!(status, 201);
    let (status, _) = call(
        &client,
        Method::PUT,
        &format!("{gateway}/v1/tools/crm/credentials"),
        &root,
        Some(json!({"credential": KEY})),
    )
    .await;
    assert_eq!(status, 200);
    let (status, refused) = call(
        &client,
        Method::POST,
        &format!("{gateway}/v1/tools/crm/invoke"),
        &root,
        Some(json!({"action": "list_contacts"})),
    )
    .await;
    assert_eq!(status, 403, "{refused}");
    assert!(
        seen.lock().unwrap().is_empty(),
        "the platform's network stayed out of reach"
    );
}
