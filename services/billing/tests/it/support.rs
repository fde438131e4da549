//! The databases and buses the suites run on: the embedded ones always, the real
//! servers when `SOMAGENT_TEST_{DATABASE,EVENTS}_URL` is set (always under `CI=true`).

use serde_json::{Value, json};
use somagent_common::config::{DatabaseUrl, EventsUrl};
use somagent_common::infra::db::Db;
use somagent_common::infra::events::{Envelope, EventBus};
use somagent_common::tenant::TenantId;

pub fn unique(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::new_v4().simple())
}

pub fn tenant(name: &str) -> TenantId {
    TenantId::parse(name).unwrap()
}

/// Each database the ledger runs on, migrated and empty.
pub async fn databases() -> Vec<(&'static str, Db, Option<tempfile::TempDir>)> {
    let dir = tempfile::tempdir().unwrap();
    let url = DatabaseUrl::Sqlite {
        path: dir.path().join("{service}.db"),
    };
    let db = Db::connect(&url, "billing").await.unwrap();
    migrate(&db).await;
    let mut all = vec![("sqlite", db, Some(dir))];
    if let Some(url) = somagent_common::testing::required_env("DATABASE_URL") {
        let db = Db::postgres(&url, &unique("billing")).await.unwrap();
        migrate(&db).await;
        all.push(("postgres", db, None));
    }
    all
}

/// The common tables (the outbox) and billing's, as the service has them.
async fn migrate(db: &Db) {
    db.migrate("common", somagent_common::infra::db::COMMON_MIGRATIONS)
        .await
        .unwrap();
    db.migrate("billing", somagent_billing::MIGRATIONS)
        .await
        .unwrap();
}

/// Each bus, fresh: its own log file, or its own topic prefix on Kafka.
pub async fn buses() -> Vec<(&'static str, EventBus, tempfile::TempDir)> {
    let dir = tempfile::tempdir().unwrap();
    let local = EventBus::connect(&EventsUrl::Local { path: None }, dir.path())
        .await
        .unwrap();
    let mut all = vec![("local", local, dir)];
    if let Some(url) = somagent_common::testing::required_env("EVENTS_URL") {
        let url = format!("{url}?prefix={}.", unique("billing"));
        let kafka = EventBus::connect(&url.parse().unwrap(), std::path::Path::new("."))
            .await
            .unwrap();
        all.push(("kafka", kafka, tempfile::tempdir().unwrap()));
    }
    all
}

/// A chat completion's usage event, as slm publishes it.
pub fn model_call(
    tenant_name: &str,
    user: &str,
    profile: &str,
    prompt: u64,
    completion: u64,
) -> Envelope {
    // 150 and 600 micro-units per 1,000 tokens, rounded up as slm rounds.
    let cost = (prompt * 150).div_ceil(1000) + (completion * 600).div_ceil(1000);
    usage_event(
        "slm.usage",
        tenant_name,
        json!({"kind": "model", "call_id": unique("chatcmpl"), "user": user, "session_id": "s1",
               "profile": profile, "upstream": "default", "model": format!("{profile}-upstream"),
               "prompt_tokens": prompt, "completion_tokens": completion,
               "prompt_price_micros_per_1k": 150, "completion_price_micros_per_1k": 600,
               "cost_micros": cost, "currency": "USD"}),
    )
}

/// A tool call's usage event, as the tool service publishes it.
pub fn tool_call(tenant_name: &str, user: &str, tool: &str, price: i64) -> Envelope {
    usage_event(
        "tool.usage",
        tenant_name,
        json!({"call_id": unique("inv"), "user": user, "tool": tool, "action": "run",
               "price_micros": price, "cost_micros": price, "currency": "USD"}),
    )
}

fn usage_event(kind: &str, tenant_name: &str, data: Value) -> Envelope {
    let user = data["user"].as_str().unwrap_or_default().to_owned();
    Envelope::new(kind, "test", tenant(tenant_name), data).with_subject(user)
}
