//! MCP both ways, with the official Python SDK as the peer. `/mcp`: an MCP client sees
//! the caller's tools (those the tenant has set up, none that needs a person's
//! approval) and calls them under the same governance as the REST API: refusals as
//! tool errors, a viewer not allowed to call, no token no answer, another tenant none
//! of it.

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{Backends, Rooted, login, with_root_on};
use crate::lifecycle::call;
use crate::tool_turns::{TOKEN, github};

const PASSWORD: &str = "a long user passphrase";

/// Runs the SDK's client against `/mcp` with `header: value`, calling `calls`
/// (name, arguments); what it saw.
async fn mcp_client(
    pythonpath: &str,
    gateway: &str,
    header: &str,
    value: &str,
    calls: &[(&str, Value)],
) -> Value {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/it/mcp/client.py");
    let mut command = std::process::Command::new("python3");
    command
        .arg(script)
        .arg(format!("{gateway}/mcp"))
        .arg(header)
        .arg(value)
        .env("PYTHONPATH", pythonpath);
    for (name, arguments) in calls {
        command.arg(name).arg(arguments.to_string());
    }
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .expect("python3 runs");
    assert!(
        output.status.success(),
        "the MCP client failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("the client prints JSON")
}

#[tokio::test]
async fn an_mcp_client_uses_the_callers_tools_under_governance() {
    let Some(pythonpath) = crate::helpers::required_env("MCP_PYTHONPATH") else {
        return;
    };
    for backends in Backends::all() {
        mcp_server_journey(backends, &pythonpath).await;
    }
}

async fn mcp_server_journey(backends: Backends, pythonpath: &str) {
    let (base, seen) = github().await;
    let Rooted {
        platform: _platform,
        gateway,
        client,
        root,
        data: _data,
        ..
    } = with_root_on(
        backends,
        &[("SOMAGENT_TOOL__ALLOW_PRIVATE_NETWORKS", "true")],
    )
    .await;
    let g = |path: &str| format!("{gateway}{path}");
    let (status, _) = call(
        &client,
        Method::PUT,
        &g("/v1/tools/github/credentials"),
        &root,
        Some(json!({"credential": TOKEN, "base_url": base})),
    )
    .await;
    assert_eq!(status, 200);

    let bearer = format!("Bearer {root}");
    let seen_by_client = mcp_client(
        pythonpath,
        &gateway,
        "Authorization",
        &bearer,
        &[
            (
                "github__get_issue",
                json!({"owner": "acme", "repo": "app", "issue_number": 7}),
            ),
            ("github__get_issue", json!({"owner": "acme"})),
            (
                "github__merge_pull_request",
                json!({"owner": "acme", "repo": "app", "pull_number": 12}),
            ),
        ],
    )
    .await;
    assert_eq!(seen_by_client["server"], "somagent");
    let names: Vec<&str> = seen_by_client["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"github__get_issue"), "{names:?}");
    assert!(
        names.iter().all(|n| n.starts_with("github__")),
        "only what the tenant set up: {names:?}"
    );
    assert!(
        !names.contains(&"github__merge_pull_request"),
        "a call needing approval is not offered"
    );
    let get_issue = seen_by_client["tools"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "github__get_issue")
        .unwrap();
    assert_eq!(
        get_issue["schema"]["required"],
        json!(["owner", "repo", "issue_number"]),
        "{get_issue}"
    );

    let calls = seen_by_client["calls"].as_array().unwrap();
    assert_eq!(
        (
            calls[0]["is_error"].as_bool(),
            calls[0]["structured"]["title"].as_str()
        ),
        (Some(false), Some("Crash on start")),
        "{calls:?}"
    );
    let refused: Value = serde_json::from_str(calls[1]["text"].as_str().unwrap()).unwrap();
    assert_eq!(
        (
            calls[1]["is_error"].as_bool(),
            refused["error"]["code"].as_str()
        ),
        (Some(true), Some("validation_failed")),
        "{refused}"
    );
    let held: Value = serde_json::from_str(calls[2]["text"].as_str().unwrap()).unwrap();
    assert_eq!(
        held["error"]["details"]["requires_approval"], true,
        "{held}"
    );
    let reached: Vec<String> = seen
        .lock()
        .unwrap()
        .iter()
        .map(|(m, p, _, _)| format!("{m} {p}"))
        .collect();
    assert_eq!(
        reached,
        ["GET /repos/acme/app/issues/7"],
        "only the valid call reached GitHub"
    );
    let (_, log) = call(
        &client,
        Method::GET,
        &g("/v1/tools/invocations?tool_id=github"),
        &root,
        None,
    )
    .await;
    assert_eq!(
        log["invocations"][0]["outcome"], "ok",
        "the MCP call is in the tool log: {log}"
    );

    // A viewer, who may not invoke tools, is offered none, and a call by name is refused.
    let (status, _) = call(
        &client,
        Method::POST,
        &g("/v1/users"),
        &root,
        Some(json!({"username": "vic", "password": PASSWORD, "roles": ["viewer"]})),
    )
    .await;
    assert_eq!(status, 201);
    let vic = login(&client, &gateway, "default", "vic", PASSWORD).await;
    let viewer = mcp_client(
        pythonpath,
        &gateway,
        "Authorization",
        &format!("Bearer {vic}"),
        &[(
            "github__get_issue",
            json!({"owner": "acme", "repo": "app", "issue_number": 7}),
        )],
    )
    .await;
    assert_eq!(viewer["tools"], json!([]), "{viewer}");
    let forbidden: Value =
        serde_json::from_str(viewer["calls"][0]["text"].as_str().unwrap()).unwrap();
    assert_eq!(forbidden["error"]["code"], "forbidden", "{forbidden}");
    assert_eq!(seen.lock().unwrap().len(), 1);

    // Another tenant sees none of it; no credential, no answer.
    let (status, _) = call(&client, Method::POST, &g("/v1/tenants"), &root,
        Some(json!({"slug": "globex", "display_name": "Globex", "admin": {"username": "hank", "password": PASSWORD}}))).await;
    assert_eq!(status, 201);
    let hank = login(&client, &gateway, "globex", "hank", PASSWORD).await;
    let theirs = mcp_client(
        pythonpath,
        &gateway,
        "Authorization",
        &format!("Bearer {hank}"),
        &[],
    )
    .await;
    assert_eq!(theirs["tools"], json!([]), "{theirs}");
    let anonymous = client
        .post(g("/mcp"))
        .header("accept", "application/json, text/event-stream")
        .json(&json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
    let problem: Value = anonymous.json().await.unwrap();
    assert_eq!(problem["error"]["code"], "unauthorized", "{problem}");
}
