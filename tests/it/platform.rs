//! `somagent up`: all 13 services in one process, on embedded backends, surviving a
//! crash with their data.

use std::time::Duration;

use somagent_common::config::EventsUrl;
use somagent_common::infra::events::{Envelope, EventBus, topics};
use somagent_common::service::SERVICES;
use somagent_common::tenant::TenantId;
use sqlx::Row;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::helpers::{Platform, command, free_ports, metrics_page, wait_ok};

#[tokio::test]
async fn the_platform_serves_every_service_and_keeps_its_data_across_a_crash() {
    let data = tempfile::tempdir().unwrap();
    let ports = free_ports();
    let client = reqwest::Client::new();
    let platform = Platform::start(data.path(), &ports);
    assert_eq!(platform.addresses.len(), 13);

    for spec in SERVICES {
        let base = &platform.addresses[spec.name];
        assert_eq!(base, &format!("http://127.0.0.1:{}", ports[spec.name]));
        wait_ok(&client, &format!("{base}/healthz")).await;
        let ready: serde_json::Value = client
            .get(format!("{base}/readyz"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(ready["status"], "ready", "{}: {ready}", spec.name);
        for backend in spec.backends {
            assert_eq!(
                ready["checks"][backend.name()],
                "ok",
                "{}: {ready}",
                spec.name
            );
        }
        let metrics = metrics_page(&client, base).await;
        let series = format!(
            "somagent_http_requests_total{{service=\"{}\",method=\"GET\",route=\"/readyz\",status=\"200\"}}",
            spec.name
        );
        assert!(
            metrics.contains(&series),
            "{}: {series} missing from /metrics",
            spec.name
        );
        // The same port speaks gRPC: the standard health service answers SERVING.
        let channel = tonic::transport::Channel::from_shared(base.clone())
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut health = HealthClient::new(channel);
        let status = health
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await
            .unwrap();
        assert_eq!(
            status.into_inner().status,
            ServingStatus::Serving as i32,
            "{}",
            spec.name
        );
        // An unknown route is a JSON problem, not an HTML page.
        let missing = client
            .get(format!("{base}/v1/nothing-here"))
            .send()
            .await
            .unwrap();
        assert_eq!(missing.status(), 404);
        let problem: serde_json::Value = missing.json().await.unwrap();
        assert_eq!(problem["error"]["code"], "not_found");
    }

    let status = command("somagent", &ports)
        .args(["status", "--json"])
        .output()
        .unwrap();
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stdout)
    );
    let report: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(report["ready"], true);
    assert_eq!(report["services"].as_array().unwrap().len(), 13);

    // Another process writes to the platform's durable event log while it runs.
    let bus = EventBus::connect(&EventsUrl::Local { path: None }, data.path())
        .await
        .unwrap();
    let fact = Envelope::new(
        "test.recorded",
        "e2e",
        TenantId::parse("acme").unwrap(),
        serde_json::json!({"n": 1}),
    );
    bus.publish(topics::AUDIT, "acme", &fact).await.unwrap();
    let applied_before = applied_at(data.path()).await;
    drop(bus);

    // Crash: SIGKILL, no chance to clean up. Then start again on the same data.
    drop(platform);
    let platform = Platform::start(data.path(), &ports);
    for spec in SERVICES {
        wait_ok(
            &client,
            &format!("{}/readyz", platform.addresses[spec.name]),
        )
        .await;
    }
    assert_eq!(
        applied_at(data.path()).await,
        applied_before,
        "the same databases, not new ones"
    );
    let bus = EventBus::connect(&EventsUrl::Local { path: None }, data.path())
        .await
        .unwrap();
    let mut sub = bus.subscribe("e2e-reader", &[topics::AUDIT]).await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(10), sub.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        got.event, fact,
        "the event published before the crash is still there"
    );

    // A clean stop on SIGTERM.
    let exit = platform.stop();
    assert!(exit.success(), "somagent up exited with {exit}");
}

/// When the identity database's migrations were applied: unchanged if the data is kept.
async fn applied_at(data: &std::path::Path) -> Vec<(String, i64)> {
    let db = somagent_common::infra::db::Db::sqlite(&data.join("identity.db"))
        .await
        .unwrap();
    let rows =
        sqlx::query("SELECT scope, applied_at FROM schema_migrations ORDER BY scope, version")
            .fetch_all(db.pool())
            .await
            .unwrap();
    let out: Vec<(String, i64)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    db.close().await;
    assert!(!out.is_empty());
    out
}
