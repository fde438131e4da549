//! Every refusal is the one problem format with a stable code, whatever refused it;
//! status reports what it measured.

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{Backends, Rooted, with_root_on};
use crate::lifecycle::call;

async fn problem_of(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let text = response.text().await.unwrap();
    assert!(
        content_type.starts_with("application/json"),
        "a {status} as {content_type:?}: {text}"
    );
    (status, serde_json::from_str(&text).unwrap())
}

#[tokio::test]
async fn refusals_before_a_handler_runs_are_problems_and_status_is_measured() {
    let Rooted {
        platform: _platform,
        gateway,
        client,
        root,
        data: _data,
        ..
    } = with_root_on(Backends::Embedded, &[]).await;
    let g = |path: &str| format!("{gateway}{path}");

    // A query string that does not parse.
    let (status, problem) = problem_of(
        client
            .get(g("/v1/users?limit=lots"))
            .bearer_auth(&root)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, problem["error"]["code"].as_str()),
        (400, Some("bad_request")),
        "{problem}"
    );

    // A method the route does not have.
    let response = client
        .delete(g("/v1/models"))
        .bearer_auth(&root)
        .send()
        .await
        .unwrap();
    assert!(response.headers().contains_key("allow"));
    let (status, problem) = problem_of(response).await;
    assert_eq!(
        (status, problem["error"]["code"].as_str()),
        (405, Some("method_not_allowed")),
        "{problem}"
    );

    // A token request over the body limit. The server closes a connection whose body it
    // refused to read; asking for that up front keeps the client's pool from handing the
    // dying connection to the next request (a race, not a refusal under test).
    let (status, problem) = problem_of(
        client
            .post(g("/v1/auth/token"))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("connection", "close")
            .body(vec![b'a'; 2 * 1024 * 1024])
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, problem["error"]["code"].as_str()),
        (413, Some("payload_too_large")),
        "{problem}"
    );

    // A capsule that is not installed is refused, never silently ignored; an id that
    // cannot be one is a validation problem.
    let (status, problem) = call(
        &client,
        Method::POST,
        &g("/v1/sessions"),
        &root,
        Some(json!({"capsule_id": "researcher"})),
    )
    .await;
    assert_eq!(status, 404, "{problem}");
    assert!(
        problem["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("not installed")),
        "{problem}"
    );
    let (status, problem) = call(
        &client,
        Method::POST,
        &g("/v1/sessions"),
        &root,
        Some(json!({"capsule_id": "Not A Capsule"})),
    )
    .await;
    assert_eq!(status, 422, "{problem}");
    assert!(
        problem["error"]["details"]["fields"]["capsule_id"].is_string(),
        "{problem}"
    );
    let (_, listed) = call(&client, Method::GET, &g("/v1/sessions"), &root, None).await;
    assert_eq!(listed["sessions"], json!([]), "nothing half-made: {listed}");

    // Status says what it found, service by service.
    let (status, report) = call(&client, Method::GET, &g("/v1/status"), &root, None).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["state"], "ready", "{report}");
    let services = report["services"].as_object().expect("the services asked");
    for name in [
        "identity",
        "slm",
        "policy",
        "constitution",
        "orchestrator",
        "capsule-repo",
    ] {
        assert_eq!(services[name]["state"], "serving", "{report}");
        assert!(services[name]["latency_ms"].as_f64().is_some(), "{report}");
    }
    assert!(
        report["checked_at"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z'))
    );
}
