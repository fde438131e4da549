//! Start-up problems end the process with one line that names the problem, and each
//! service also runs as a binary of its own.

use std::process::Output;

use crate::helpers::{command, free_ports, wait_ok};

fn one_line(output: &Output) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr);
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one line, got:\n{stderr}");
    lines[0].to_owned()
}

#[test]
fn bad_configuration_stops_start_up_with_one_line_naming_the_key() {
    let data = tempfile::tempdir().unwrap();
    let ports = free_ports();
    let cases: &[(&str, &str, &[&str])] = &[
        (
            "SOMAGENT_EVENTS_URL",
            "nats://127.0.0.1:4222",
            &["events_url", "unknown scheme `nats`", "kafka://"],
        ),
        (
            "SOMAGENT_DATABASE_URL",
            "mysql://h/db",
            &["database_url", "unknown scheme `mysql`"],
        ),
        (
            "SOMAGENT_CACHE_URL",
            "memcached://h",
            &["cache_url", "redis://"],
        ),
        (
            "SOMAGENT_OBJECTS_URL",
            "gs://bucket",
            &["objects_url", "s3://"],
        ),
        (
            "SOMAGENT_PORTS__GATEWAY",
            "ten-thousand",
            &["ports.gateway"],
        ),
        (
            "SOMAGENT_PORTS__NOSUCH",
            "10500",
            &["ports.nosuch", "no service"],
        ),
        (
            "SOMAGENT_GATEWAY__RATE_LIMIT_TENANT",
            "lots",
            &["gateway.rate_limit_tenant"],
        ),
        (
            "SOMAGENT_SLM__LLM_BASE_ULR",
            "http://127.0.0.1:1",
            &["llm_base_ulr"],
        ),
        ("SOMAGENT_POLICY__OPA_URL", "opa:8181", &["policy.opa_url"]),
        (
            "SOMAGENT_CONFIG",
            "/nonexistent/somagent.toml",
            &["SOMAGENT_CONFIG", "/nonexistent/somagent.toml"],
        ),
    ];
    for (key, value, expected) in cases {
        let output = command("somagent", &ports)
            .args(["up", "--data-dir"])
            .arg(data.path())
            .env(key, value)
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(2), "{key}={value}");
        let line = one_line(&output);
        for part in *expected {
            assert!(
                line.contains(part),
                "{key}={value}: `{part}` not in: {line}"
            );
        }
    }
    // A TOML file is read, and its bad value is named with where it came from.
    let file = data.path().join("somagent.toml");
    std::fs::write(&file, "cache_url = \"memcached://h\"\n").unwrap();
    let output = command("somagent", &ports)
        .arg("status")
        .env("SOMAGENT_CONFIG", &file)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let line = one_line(&output);
    assert!(
        line.contains("cache_url") && line.contains("somagent.toml"),
        "{line}"
    );
    // A secret read from a _FILE path: a password never shows in the error.
    let secret = data.path().join("db-url");
    std::fs::write(&secret, "oracle://admin:hunter2@h/db\n").unwrap();
    let output = command("somagent", &ports)
        .arg("status")
        .env("SOMAGENT_DATABASE_URL_FILE", &secret)
        .output()
        .unwrap();
    let line = one_line(&output);
    assert!(
        line.contains("database_url") && line.contains("oracle"),
        "{line}"
    );
    assert!(!line.contains("hunter2"), "a secret leaked into: {line}");
}

#[test]
fn a_taken_port_stops_start_up_with_one_line() {
    let data = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let mut ports = free_ports();
    ports.insert("identity", port);
    let output = command("somagent", &ports)
        .args(["up", "--data-dir"])
        .arg(data.path())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let line = one_line(&output);
    assert!(
        line.contains(&format!("127.0.0.1:{port}")) && line.contains("identity"),
        "{line}"
    );
    assert!(line.contains("already taken"), "{line}");
}

#[tokio::test]
async fn each_service_runs_as_its_own_binary() {
    let data = tempfile::tempdir().unwrap();
    let ports = free_ports();
    let client = reqwest::Client::new();
    for name in ["gateway", "identity", "capsule-repo"] {
        let mut child = command(&format!("somagent-{name}"), &ports)
            .env("SOMAGENT_DATA_DIR", data.path())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let base = format!("http://127.0.0.1:{}", ports[name]);
        wait_ok(&client, &format!("{base}/readyz")).await;
        let ready: serde_json::Value = client
            .get(format!("{base}/readyz"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(ready["service"], name);
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let status = child.wait().unwrap();
        assert!(
            status.success(),
            "somagent-{name} exited with {status} on SIGTERM"
        );
    }
    assert!(data.path().join("identity.db").exists());
    assert!(data.path().join("capsule-repo.db").exists());
}
