//! Anomaly checks on every engine: a steady week, then an hour far above it, tells the
//! tenant's admins once; the next anomalous hour extends the incident silently.

use serde_json::json;
use somagent_analytics::anomalies::Detector;
use somagent_analytics::domain::rows::rows_of;
use somagent_common::config::EventsUrl;
use somagent_common::infra::events::{Envelope, EventBus, topics};
use somagent_common::infra::outbox::Outbox;
use somagent_common::tenant::TenantId;

use crate::{unique, warehouses};

const HOUR: i64 = 3_600_000;

fn tokens(tenant: &TenantId, ms: i64, n: u64) -> Envelope {
    let mut e = Envelope::new(
        "slm.usage",
        "slm",
        tenant.clone(),
        json!({"kind": "model", "call_id": unique("c"), "user": "u1", "profile": "default", "prompt_tokens": n, "completion_tokens": 0}),
    );
    e.time = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).unwrap();
    e
}

#[tokio::test]
async fn an_hour_far_above_the_week_is_one_incident() {
    for (engine, wh, db, dir) in warehouses().await {
        let bus = EventBus::connect(&EventsUrl::Local { path: None }, dir.path())
            .await
            .unwrap();
        let detector = Detector {
            warehouse: wh.clone(),
            db: db.clone(),
            outbox: Outbox::new(db.clone(), bus),
        };
        let acme = TenantId::parse(unique("acme")).unwrap();
        let calm = TenantId::parse(unique("calm")).unwrap();
        let now = (somagent_common::clock::unix_now_ms() / HOUR) * HOUR + 60_000;
        let last_hour = now - 60_000 - HOUR;
        let mut events = Vec::new();
        for h in 1..=(7 * 24) {
            let at = last_hour - h * HOUR + 10;
            events.push(tokens(&acme, at, 2000 + (h as u64 % 5) * 50));
            events.push(tokens(&calm, at, 2000));
        }
        events.push(tokens(&acme, last_hour + 10, 90_000));
        events.push(tokens(&calm, last_hour + 10, 2100));
        let rows: Vec<_> = events
            .iter()
            .flat_map(|e| rows_of(topics::BILLING_USAGE, e))
            .collect();
        wh.insert(&rows).await.unwrap();

        let told = detector.check(now).await.unwrap();
        assert_eq!(told.len(), 1, "{engine}: {told:?}");
        assert_eq!(told[0].tenant, acme, "{engine}");
        assert_eq!(told[0].kind, "analytics.anomaly");
        assert_eq!(told[0].data["audience"], "tenant_admins");
        assert_eq!(told[0].data["metric"], "tokens");
        // The same hour checked again says nothing more.
        assert!(detector.check(now).await.unwrap().is_empty(), "{engine}");
        // Another anomalous hour right after only extends the incident.
        wh.insert(&rows_of(
            topics::BILLING_USAGE,
            &tokens(&acme, last_hour + HOUR + 10, 95_000),
        ))
        .await
        .unwrap();
        assert!(
            detector.check(now + HOUR).await.unwrap().is_empty(),
            "{engine}"
        );
    }
}
