//! The code tool, turned on by a tenant admin: Python and shell run in the sandbox, a
//! fresh private directory each call, no network, nothing of the machine writable or
//! private readable, killed at its timeout, its output cut at the limit. Terraform runs
//! there too when its CLI is installed, and says it is unavailable when not. The sandbox
//! does not depend on the backends, so this runs on the embedded ones.

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{Backends, Rooted, login, with_root_on};
use crate::lifecycle::call;

const PASSWORD: &str = "a long user passphrase";

#[tokio::test]
async fn code_runs_in_a_sandbox_a_tenant_admin_turns_on() {
    let Rooted {
        platform: _platform,
        gateway,
        client,
        root,
        data,
        ..
    } = with_root_on(Backends::Embedded, &[]).await;
    let g = |path: &str| format!("{gateway}{path}");

    // Off until a tenant admin turns it on: a developer may not.
    let (status, _) = call(
        &client,
        Method::POST,
        &g("/v1/users"),
        &root,
        Some(json!({"username": "dee", "password": PASSWORD, "roles": ["developer"]})),
    )
    .await;
    assert_eq!(status, 201);
    let dee = login(&client, &gateway, "default", "dee", PASSWORD).await;
    let (status, refused) = call(
        &client,
        Method::POST,
        &g("/v1/tools"),
        &dee,
        Some(json!({"id": "code", "sandbox": {}})),
    )
    .await;
    assert_eq!(status, 403, "{refused}");
    let (status, tool) = call(
        &client,
        Method::POST,
        &g("/v1/tools"),
        &root,
        Some(json!({"id": "code", "sandbox": {}, "timeout_ms": 3000})),
    )
    .await;
    assert_eq!(
        (status, tool["kind"].as_str()),
        (201, Some("sandbox")),
        "{tool}"
    );

    let run = |action: &str, arguments: Value| {
        let (client, url, root) = (client.clone(), g("/v1/tools/code/invoke"), root.clone());
        let body = json!({"action": action, "arguments": arguments});
        async move {
            let (status, answer) = call(&client, Method::POST, &url, &root, Some(body)).await;
            assert_eq!(status, 200, "{answer}");
            answer["result"].clone()
        }
    };

    let ran = run("run_python", json!({"code": "import sys\nprint(6 * 7)\nprint(sys.stdin.read().upper(), end='')", "stdin": "hi"})).await;
    assert_eq!(
        (ran["exit_code"].as_i64(), ran["stdout"].as_str()),
        (Some(0), Some("42\nHI")),
        "{ran}"
    );

    // Its own directory is writable, and nothing else is; private files are not readable.
    let data_dir = data.path().display().to_string();
    let ran = run("run_python", json!({"code": format!(
        "import os\nopen('mine.txt', 'w').write('ok')\nprint(open('mine.txt').read(), os.getcwd() == os.environ['HOME'])\n\
         for path in ['/tmp/escape.txt', '/etc/escape.txt']:\n    try:\n        open(path, 'w'); print('wrote', path)\n    except OSError as e:\n        print('refused', path)\n\
         for path in ['{data_dir}', '/root', '/proc/1/environ']:\n    try:\n        os.listdir(path) if os.path.isdir(path) else open(path).read(); print('read', path)\n    except OSError as e:\n        print('refused', path)\n")})).await;
    let said = ran["stdout"].as_str().unwrap();
    assert!(said.starts_with("ok True\n"), "{ran}");
    for path in [
        "/tmp/escape.txt",
        "/etc/escape.txt",
        &data_dir,
        "/root",
        "/proc/1/environ",
    ] {
        assert!(said.contains(&format!("refused {path}")), "{path}: {ran}");
    }

    // No network: not the platform's own gateway, not anything.
    let port = gateway.rsplit(':').next().unwrap();
    let ran = run("run_python", json!({"code": format!(
        "import socket\ntry:\n    socket.create_connection(('127.0.0.1', {port}), timeout=2); print('connected')\nexcept OSError as e:\n    print('refused')\n")})).await;
    assert_eq!(ran["stdout"], "refused\n", "{ran}");

    // Limits: time, memory, output.
    let ran = run("run_python", json!({"code": "while True:\n    pass\n"})).await;
    assert!(
        ran["timed_out"] == true || ran["signal"].is_number(),
        "{ran}"
    );
    assert!(ran["duration_ms"].as_u64().unwrap() < 10_000, "{ran}");
    let ran = run(
        "run_python",
        json!({"code": "x = bytearray(4 * 1024 ** 3)\nprint('allocated')"}),
    )
    .await;
    assert_ne!(ran["exit_code"], 0, "{ran}");
    assert!(
        ran["stderr"].as_str().unwrap().contains("MemoryError"),
        "{ran}"
    );
    let ran = run("run_shell", json!({"code": "yes flood | head -c 10000000"})).await;
    assert_eq!(ran["truncated"], true, "{ran}");
    assert!(ran["stdout"].as_str().unwrap().len() <= 64 * 1024);

    // A shell sees its own empty directory, each call a fresh one.
    let ran = run("run_shell", json!({"code": "ls -A; echo done"})).await;
    assert_eq!(ran["stdout"], "main.sh\ndone\n", "{ran}");

    // Terraform: the CLI on a configuration in the same sandbox; apply only after a
    // person's approval (inside a session turn); without the CLI it says so.
    let (status, tf) = call(
        &client,
        Method::POST,
        &g("/v1/tools"),
        &root,
        Some(json!({"id": "terraform", "sandbox": {"runner": "terraform"}})),
    )
    .await;
    assert_eq!(status, 201, "{tf}");
    let config = json!({"files": {"main.tf": "output \"answer\" {\n  value = 6 * 7\n}\n"}});
    let invoke = |action: &str, arguments: Value| {
        let (client, url, root) = (
            client.clone(),
            g("/v1/tools/terraform/invoke"),
            root.clone(),
        );
        let body = json!({"action": action, "arguments": arguments});
        async move { call(&client, Method::POST, &url, &root, Some(body)).await }
    };
    let installed = ["/usr/local/bin/terraform", "/usr/bin/terraform"]
        .iter()
        .any(|p| std::path::Path::new(p).exists());
    if installed {
        assert!(tf.get("unavailable").is_none(), "{tf}");
        let (status, planned) = invoke("plan", config.clone()).await;
        assert_eq!(status, 200, "{planned}");
        let said = planned["result"]["stdout"].as_str().unwrap();
        assert!(said.contains("answer = 42"), "{planned}");
        let (status, held) = invoke("apply", config.clone()).await;
        assert_eq!(
            (
                status,
                held["error"]["details"]["requires_approval"].as_bool()
            ),
            (409, Some(true)),
            "{held}"
        );
        let (status, bad) = invoke("plan", json!({"files": {"../main.tf": ""}})).await;
        assert_eq!(status, 422, "{bad}");
    } else {
        assert!(
            tf["unavailable"]
                .as_str()
                .unwrap()
                .contains("not installed"),
            "{tf}"
        );
        let (status, refused) = invoke("plan", config.clone()).await;
        assert_eq!(status, 503, "{refused}");
    }

    // The calls are in the log like any tool's.
    let (_, log) = call(
        &client,
        Method::GET,
        &g("/v1/tools/invocations?tool_id=code"),
        &root,
        None,
    )
    .await;
    assert!(log["invocations"].as_array().unwrap().len() >= 7, "{log}");
}

/// A run allowed the network goes out only through the tool service's egress proxy
/// (relayed into its own network namespace): it reaches what tools may reach, and no
/// more, whatever it tries.
#[tokio::test]
async fn code_allowed_the_network_goes_out_through_the_egress_proxy() {
    let app = axum::Router::new().route("/", axum::routing::get(|| async { "hello from the api" }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let api = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let code = |gateway_port: &str| {
        format!(
            "import socket, urllib.request, urllib.error\n\
             try:\n    print(urllib.request.urlopen('http://127.0.0.1:{api}/', timeout=5).read().decode())\n\
             except urllib.error.HTTPError as e:\n    print('proxy said', e.code)\n\
             except Exception as e:\n    print('failed', type(e).__name__)\n\
             try:\n    socket.create_connection(('127.0.0.1', {gateway_port}), timeout=2); print('direct connected')\n\
             except OSError:\n    print('direct refused')\n"
        )
    };
    for (allow_private, allow_hosts, expected) in [
        ("false", json!([]), "proxy said 403\ndirect refused\n"),
        ("true", json!([]), "hello from the api\ndirect refused\n"),
        // Only the hosts the tool names, when it names some.
        (
            "true",
            json!(["pypi.org"]),
            "proxy said 403\ndirect refused\n",
        ),
    ] {
        let r = with_root_on(
            Backends::Embedded,
            &[("SOMAGENT_TOOL__ALLOW_PRIVATE_NETWORKS", allow_private)],
        )
        .await;
        let (status, tool) = call(
            &r.client,
            Method::POST,
            &format!("{}/v1/tools", r.gateway),
            &r.root,
            Some(
                json!({"id": "code-net", "sandbox": {"network": true, "allow_hosts": allow_hosts}}),
            ),
        )
        .await;
        assert_eq!(status, 201, "{tool}");
        let port = r.gateway.rsplit(':').next().unwrap().to_owned();
        let (status, ran) = call(
            &r.client,
            Method::POST,
            &format!("{}/v1/tools/code-net/invoke", r.gateway),
            &r.root,
            Some(json!({"action": "run_python", "arguments": {"code": code(&port)}})),
        )
        .await;
        assert_eq!(status, 200, "{ran}");
        assert_eq!(
            ran["result"]["stdout"], expected,
            "allow_private_networks={allow_private}, allow_hosts={allow_hosts}: {ran}"
        );
    }
}
