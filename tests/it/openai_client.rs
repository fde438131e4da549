//! The official `openai` Python client (PyPI), unchanged, against the gateway.

use serde_json::Value;

use crate::helpers::{Backends, Rooted, with_scripted_llm};

#[tokio::test]
async fn the_official_openai_client_works_unchanged() {
    let Some(pythonpath) = crate::helpers::required_env("OPENAI_PYTHONPATH") else {
        return;
    };
    for backends in Backends::all() {
        openai_client_on(backends, &pythonpath).await;
    }
}

async fn openai_client_on(backends: Backends, pythonpath: &str) {
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
    ) = with_scripted_llm(backends, &[]).await;
    crate::helpers::platform_profile(&client, &gateway, &root, "tool-caller").await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/python/openai_compat.py");
    let mut command = std::process::Command::new("python3");
    command
        .arg(script)
        .env("PYTHONPATH", pythonpath)
        .env("OPENAI_BASE_URL", format!("{gateway}/v1"))
        .env("OPENAI_API_KEY", &root);
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let seen: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(
        seen["whole"]["content"], "Echo: hello from python",
        "{seen}"
    );
    assert_eq!(seen["whole"]["finish_reason"], "stop");
    assert!(seen["whole"]["completion_tokens"].as_i64().unwrap() > 0);
    assert_eq!(seen["stream"]["content"], "Echo: stream from python");
    assert!(seen["stream"]["chunks"].as_i64().unwrap() > 3);
    assert!(
        seen["stream"]["completion_tokens"].as_i64().unwrap() > 0,
        "{seen}"
    );
    assert_eq!(seen["tool"]["name"], "lookup");
    assert_eq!(seen["tool"]["arguments"]["query"], "find it");
    assert!(
        seen["models"]
            .as_array()
            .unwrap()
            .contains(&Value::from("default"))
    );
    assert_eq!(seen["error"]["status"], 422);
}
