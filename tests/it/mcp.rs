//! MCP both ways, with the official Python SDK as the peer. A tenant mounts an MCP
//! server as a tool its agents use like any other. `/mcp`: an MCP client sees
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
        names
            .iter()
            .all(|n| n.starts_with("github__") || n.starts_with("memory__")),
        "only what the tenant set up, and the platform's memory: {names:?}"
    );
    assert!(names.contains(&"memory__recall"), "{names:?}");
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
    let hank = crate::helpers::other_tenant_admin(&client, &gateway, &root).await;
    let theirs = mcp_client(
        pythonpath,
        &gateway,
        "Authorization",
        &format!("Bearer {hank}"),
        &[],
    )
    .await;
    // Only the platform's memory tool, which is every tenant's own.
    let their_names: Vec<&str> = theirs["tools"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert!(
        their_names.iter().all(|n| n.starts_with("memory__")),
        "{theirs}"
    );
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

/// The SDK's MCP server on a free port, guarded by `token`; it stops when dropped.
struct McpServerProcess(std::process::Child, u16);

impl Drop for McpServerProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn mcp_server(pythonpath: &str, token: &str) -> McpServerProcess {
    use std::io::BufRead;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/it/mcp/server.py");
    let mut child = std::process::Command::new("python3")
        .arg(script)
        .arg(port.to_string())
        .arg(token)
        .env("PYTHONPATH", pythonpath)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("python3 runs");
    let stdout = child.stdout.take().unwrap();
    let mut lines = std::io::BufReader::new(stdout).lines();
    assert!(
        lines.any(|l| l.is_ok_and(|l| l == "ready")),
        "the MCP server did not start"
    );
    McpServerProcess(child, port)
}

#[tokio::test]
async fn a_tenant_mounts_an_mcp_server_whose_tools_its_agents_use() {
    let Some(pythonpath) = crate::helpers::required_env("MCP_PYTHONPATH") else {
        return;
    };
    for backends in Backends::all() {
        mount_journey(backends, &pythonpath).await;
    }
}

async fn mount_journey(backends: Backends, pythonpath: &str) {
    const SECRET: &str = "mcp-orders-secret-81f2";
    let server = mcp_server(pythonpath, SECRET);
    let url = format!("http://127.0.0.1:{}/mcp", server.1);
    let (
        _llm,
        Rooted {
            platform: _platform,
            gateway,
            client,
            root,
            data: _data,
            ..
        },
    ) = crate::helpers::with_scripted_llm(
        backends,
        &[("SOMAGENT_TOOL__ALLOW_PRIVATE_NETWORKS", "true")],
    )
    .await;
    let g = |path: &str| format!("{gateway}{path}");

    // A wrong token: the server refuses, and nothing is mounted.
    let (status, refused) = call(
        &client,
        Method::POST,
        &g("/v1/tools"),
        &root,
        Some(json!({"id": "orders", "mcp": {"url": url, "credential": "wrong"}})),
    )
    .await;
    assert_eq!(
        (status, refused["error"]["code"].as_str()),
        (502, Some("upstream_failed")),
        "{refused}"
    );
    assert!(!refused.to_string().contains("wrong\""), "{refused}");
    let (status, _) = call(&client, Method::GET, &g("/v1/tools/orders"), &root, None).await;
    assert_eq!(status, 404);

    let (status, mounted) = call(
        &client,
        Method::POST,
        &g("/v1/tools"),
        &root,
        Some(
            json!({"id": "orders", "mcp": {"url": url, "credential": SECRET}, "price_micros": 300}),
        ),
    )
    .await;
    assert_eq!(status, 201, "{mounted}");
    let actions: Vec<&str> = mounted["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["orders_lookup", "refund"], "{mounted}");
    assert_eq!(
        (
            mounted["kind"].as_str(),
            mounted["name"].as_str(),
            mounted["credential_set"].as_bool()
        ),
        (Some("mcp"), Some("Orders"), Some(true)),
        "{mounted}"
    );
    assert!(!mounted.to_string().contains(SECRET));

    let invoke = |action: &str, arguments: Value| {
        let (client, url, root) = (client.clone(), g("/v1/tools/orders/invoke"), root.clone());
        let body = json!({"action": action, "arguments": arguments});
        async move { call(&client, Method::POST, &url, &root, Some(body)).await }
    };
    let (status, found) = invoke("orders_lookup", json!({"order_id": "A1"})).await;
    assert_eq!(
        (
            status,
            found["result"]["status"].as_str(),
            found["cost_micros"].as_i64()
        ),
        (200, Some("shipped"), Some(300)),
        "{found}"
    );
    let (status, invalid) = invoke("orders_lookup", json!({})).await;
    assert_eq!(
        (
            status,
            invalid["error"]["details"]["fields"]["arguments"].is_string()
        ),
        (422, true),
        "{invalid}"
    );
    let (status, failed) = invoke("refund", json!({"order_id": "A1", "reason": "damaged"})).await;
    assert_eq!(
        (status, failed["error"]["details"]["tool_error"].is_string()),
        (502, true),
        "{failed}"
    );

    // A session's model uses it like any other tool.
    crate::helpers::platform_profile(&client, &gateway, &root, "tool-user").await;
    let session =
        crate::sessions::create_session(&client, &gateway, &root, json!({"model": "tool-user"}))
            .await;
    let events = crate::sessions::send_sse(
        &client,
        &gateway,
        &root,
        &session,
        r#"call orders__orders_lookup {"order_id": "A7"}"#,
    )
    .await;
    let answer = events
        .iter()
        .find(|(k, _)| k == "message")
        .map(|(_, d)| d["content"].as_str().unwrap().to_owned())
        .unwrap();
    assert!(
        answer.contains("shipped") && answer.contains("A7"),
        "{answer}"
    );

    // Another tenant sees none of it.
    let hank = crate::helpers::other_tenant_admin(&client, &gateway, &root).await;
    let (status, _) = call(&client, Method::GET, &g("/v1/tools/orders"), &hank, None).await;
    assert_eq!(status, 404);
}

/// The Python interpreter the tests run MCP peers with, and the directory it lives in.
fn python() -> (String, String) {
    let out = std::process::Command::new("python3")
        .args(["-c", "import sys; print(sys.executable); print(sys.prefix)"])
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let mut lines = text.lines();
    (
        lines.next().unwrap().to_owned(),
        lines.next().unwrap().to_owned(),
    )
}

#[tokio::test]
async fn an_mcp_server_over_stdio_runs_in_the_sandbox_for_each_call() {
    let Some(pythonpath) = crate::helpers::required_env("MCP_PYTHONPATH") else {
        return;
    };
    const SECRET: &str = "stdio-orders-token-5d1";
    let (python, prefix) = python();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/it/mcp/server.py");
    let scripts = concat!(env!("CARGO_MANIFEST_DIR"), "/it/mcp");
    // The operator allows the server by name: its command, what it may read, its
    // environment, and where the tenant's credential goes.
    let command = format!(r#"["{python}", "{script}", "stdio", "{SECRET}"]"#);
    let read = format!(r#"["{prefix}", "{pythonpath}", "{scripts}"]"#);
    let env = format!(r#"{{PYTHONPATH="{pythonpath}"}}"#);
    let Rooted {
        platform: _platform,
        gateway,
        client,
        root,
        // Kept: the platform's data directory lives as long as it runs.
        data: _data,
        ..
    } = with_root_on(
        Backends::Embedded,
        &[
            (
                "SOMAGENT_TOOL__MCP_COMMANDS__ORDERS__COMMAND",
                command.as_str(),
            ),
            ("SOMAGENT_TOOL__MCP_COMMANDS__ORDERS__READ", read.as_str()),
            ("SOMAGENT_TOOL__MCP_COMMANDS__ORDERS__ENV", env.as_str()),
            (
                "SOMAGENT_TOOL__MCP_COMMANDS__ORDERS__CREDENTIAL_ENV",
                "ORDERS_TOKEN",
            ),
        ],
    )
    .await;
    let g = |path: &str| format!("{gateway}{path}");

    // Only what the operator allows can be mounted.
    let (status, refused) = call(
        &client,
        Method::POST,
        &g("/v1/tools"),
        &root,
        Some(json!({"id": "shell", "mcp": {"command": "bash"}})),
    )
    .await;
    assert_eq!(status, 422, "{refused}");
    assert_eq!(
        refused["error"]["details"]["allowed"],
        json!(["orders"]),
        "{refused}"
    );

    let (status, mounted) = call(
        &client,
        Method::POST,
        &g("/v1/tools"),
        &root,
        Some(json!({"id": "orders", "mcp": {"command": "orders", "credential": SECRET}})),
    )
    .await;
    assert_eq!(status, 201, "{mounted}");
    let actions: Vec<&str> = mounted["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["orders_lookup", "refund", "probe"], "{mounted}");
    assert!(!mounted.to_string().contains(SECRET));

    let invoke = |action: &str, arguments: Value| {
        let (client, url, root) = (client.clone(), g("/v1/tools/orders/invoke"), root.clone());
        let body = json!({"action": action, "arguments": arguments});
        async move { call(&client, Method::POST, &url, &root, Some(body)).await }
    };
    // The credential reached the server in its environment.
    let (status, found) = invoke("orders_lookup", json!({"order_id": "A-17"})).await;
    assert_eq!(
        (status, found["result"]["status"].as_str()),
        (200, Some("shipped")),
        "{found}"
    );
    // It runs confined: no network, nothing of the machine's private files.
    let (status, probed) = invoke("probe", json!({})).await;
    assert_eq!(status, 200, "{probed}");
    assert_eq!(
        (
            probed["result"]["network"].as_bool(),
            probed["result"]["home_readable"].as_bool()
        ),
        (Some(false), Some(false)),
        "{probed}"
    );
    let (status, failed) = invoke("refund", json!({"order_id": "A-17", "reason": "late"})).await;
    assert_eq!(status, 502, "{failed}");
    assert_eq!(
        failed["error"]["details"]["tool_error"], "Error executing tool refund",
        "{failed}"
    );
}
