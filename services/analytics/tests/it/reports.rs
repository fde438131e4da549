//! Reports over a known set of events, on every engine.

use serde_json::{Value, json};
use somagent_analytics::domain::period::Period;
use somagent_analytics::domain::rows::rows_of;
use somagent_analytics::reports;
use somagent_analytics::warehouse::{Warehouse, tables};
use somagent_common::infra::events::{Envelope, topics};
use somagent_common::tenant::TenantId;

use crate::{unique, warehouses};

const DAY: i64 = 86_400_000;
/// 2026-12-01T00:00:00Z
const T0: i64 = 1_796_083_200_000;

fn at(mut e: Envelope, ms: i64) -> Envelope {
    e.time = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).unwrap();
    e
}

fn usage(
    tenant: &TenantId,
    ms: i64,
    profile: &str,
    user: &str,
    tokens: (u64, u64),
    cost: i64,
    latency: u64,
) -> (&'static str, Envelope) {
    (
        topics::BILLING_USAGE,
        at(
            Envelope::new("slm.usage", "slm", tenant.clone(), json!({"kind": "model", "call_id": unique("c"), "user": user,
                "profile": profile, "upstream": "openai", "model": "m", "prompt_tokens": tokens.0,
                "completion_tokens": tokens.1, "cost_micros": cost, "currency": "USD", "latency_ms": latency}))
            .with_subject(user),
            ms,
        ),
    )
}

fn events_of(tenant: &TenantId) -> Vec<(&'static str, Envelope)> {
    let mut events = vec![
        usage(tenant, T0 + 1000, "default", "u1", (10, 20), 300, 100),
        usage(tenant, T0 + 2000, "default", "u2", (5, 5), 100, 300),
        usage(tenant, T0 + DAY + 5, "fast", "u1", (1, 1), 7, 50),
        (
            topics::BILLING_USAGE,
            at(Envelope::new("tool.usage", "tool", tenant.clone(), json!({"call_id": "t1", "user": "u1", "tool": "crm",
                "action": "find", "cost_micros": 2500, "currency": "USD"})).with_subject("u1"), T0 + 3000),
        ),
        (
            topics::AUDIT,
            at(Envelope::new("slm.call_failed", "slm", tenant.clone(), json!({"kind": "model", "user": "u1",
                "profile": "default", "upstream": "openai", "failure": "timeout", "latency_ms": 30000})).with_subject("u1"), T0 + 500),
        ),
        (
            topics::AUDIT,
            at(Envelope::new("tool.invoked", "tool", tenant.clone(), json!({"resource": {"type": "tool", "id": "crm"},
                "action": "find", "result": "ok", "status": 200, "duration_ms": 42})).with_subject("u1"), T0 + 3000),
        ),
    ];
    for (i, (outcome, code, ms)) in [
        ("completed", "", 1000),
        ("completed", "", 3000),
        ("failed", "budget_exhausted", 500),
    ]
    .iter()
    .enumerate()
    {
        let mut data = json!({"session_id": format!("s{}", i % 2), "turn": i + 1, "outcome": outcome, "duration_ms": ms,
            "usage": {"prompt_tokens": 10, "completion_tokens": 5, "cost_micros": 50}});
        if !code.is_empty() {
            data["error"] = json!({"code": code, "message": "no room"});
        }
        events.push((
            topics::CONVERSATION,
            at(
                Envelope::new(
                    format!("turn.{outcome}"),
                    "orchestrator",
                    tenant.clone(),
                    data,
                )
                .with_subject("u1"),
                T0 + 10_000 + i as i64,
            ),
        ));
    }
    for (allowed, action, rules, user) in [
        (true, "prompt", json!([]), "u1"),
        (false, "prompt", json!(["no-secrets"]), "u2"),
        (false, "prompt", json!(["no-secrets", "no-pii"]), "u2"),
        (false, "tool_call", json!(["no-pii"]), "u1"),
    ] {
        events.push((topics::AUDIT, at(Envelope::new("policy.decision", "policy", tenant.clone(), json!({
            "action": format!("policy.evaluate:{action}"), "outcome": if allowed { "allowed" } else { "denied" },
            "score": if allowed { 0 } else { 90 }, "severity": "high", "rule_ids": rules})).with_subject(user), T0 + 20_000)));
    }
    events.push((
        topics::CONVERSATION,
        at(
            Envelope::new(
                "tool.approval_resolved",
                "orchestrator",
                tenant.clone(),
                json!({"session_id": "s1", "call_id": "call_1", "approved": true, "by": "u9"}),
            )
            .with_subject("u1"),
            T0 + 30_000,
        ),
    ));
    events.push((topics::NOTIFICATIONS, at(Envelope::new("billing.budget_threshold", "billing", tenant.clone(),
        json!({"audience": "tenant_admins", "budget": {"name": "monthly"}, "threshold": "soft", "period": "2026-12", "spent": 81, "limit": 100})), T0 + 40_000)));
    for (version, ms) in [("3", T0 - DAY), ("4", T0 + 50_000)] {
        events.push((topics::AUDIT, at(Envelope::new("constitution.published", "constitution", tenant.clone(),
            json!({"resource": {"type": "constitution", "id": version}, "hash": format!("h{version}")})).with_subject("u9"), ms)));
    }
    events.push((
        topics::WORKFLOW,
        at(
            Envelope::new(
                "project.completed",
                "orchestrator",
                tenant.clone(),
                json!({"project_id": "p1"}),
            )
            .with_subject("u1"),
            T0 + 60_000,
        ),
    ));
    events
}

async fn ingest(wh: &Warehouse, events: &[(&str, Envelope)]) {
    let rows: Vec<_> = events.iter().flat_map(|(t, e)| rows_of(t, e)).collect();
    wh.insert(&rows).await.unwrap();
}

#[tokio::test]
async fn every_engine_gives_the_same_answers_once_per_event_and_per_tenant() {
    for (engine, wh, _db, _dir) in warehouses().await {
        let acme = TenantId::parse(unique("acme")).unwrap();
        let globex = TenantId::parse(unique("globex")).unwrap();
        let events = events_of(&acme);
        ingest(&wh, &events).await;
        // Everything again (a redelivery), and another tenant's own.
        ingest(&wh, &events).await;
        ingest(&wh, &events_of(&globex)).await;
        let week = Period::new(T0 - DAY / 2, T0 + 7 * DAY).unwrap();
        let a = acme.as_str();

        let by_model = reports::usage(&wh, a, &week, Some(DAY), &["model".into()])
            .await
            .unwrap();
        let lines = by_model["lines"].as_array().unwrap();
        assert_eq!(lines.len(), 2, "{engine}: {by_model}");
        assert_eq!(lines[0]["group"]["model"], "default", "{engine}");
        assert_eq!(
            (
                lines[0]["calls"].as_i64(),
                lines[0]["prompt_tokens"].as_i64(),
                lines[0]["completion_tokens"].as_i64(),
                lines[0]["cost_micros"].as_i64()
            ),
            (Some(2), Some(15), Some(25), Some(400)),
            "{engine}: {by_model}"
        );
        assert_eq!(lines[0]["at"], "2026-12-01T00:00:00Z", "{engine}");
        assert_eq!(lines[1]["at"], "2026-12-02T00:00:00Z", "{engine}");
        let by_user = reports::usage(&wh, a, &week, None, &["user".into(), "kind".into()])
            .await
            .unwrap();
        let u1_tool = by_user["lines"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["group"]["user"] == "u1" && l["group"]["kind"] == "tool")
            .cloned();
        assert_eq!(u1_tool.unwrap()["cost_micros"], 2500, "{engine}: {by_user}");
        assert!(
            reports::usage(&wh, a, &week, None, &["model".into(), "tool".into()])
                .await
                .is_err()
        );
        assert!(
            reports::usage(&wh, a, &week, None, &["color".into()])
                .await
                .is_err()
        );

        let sessions = reports::sessions(&wh, a, &week, Some(DAY)).await.unwrap();
        assert_eq!(sessions["turns"], 3, "{engine}: {sessions}");
        assert_eq!(sessions["sessions"], 2, "{engine}");
        assert_eq!(sessions["outcomes"]["completed"], 2, "{engine}");
        assert_eq!(
            sessions["failures"],
            json!([{"reason": "budget_exhausted", "count": 1}]),
            "{engine}"
        );
        assert_eq!(
            sessions["latency_ms"]["p50"], 1000.0,
            "{engine}: {sessions}"
        );
        assert_eq!(sessions["latency_ms"]["p99"], 3000.0, "{engine}");

        let decisions = reports::decisions(&wh, a, &week).await.unwrap();
        assert_eq!(
            (decisions["allowed"].as_i64(), decisions["denied"].as_i64()),
            (Some(1), Some(3)),
            "{engine}: {decisions}"
        );
        assert_eq!(
            decisions["denied_by_rule"],
            json!([{"name": "no-pii", "count": 2}, {"name": "no-secrets", "count": 2}]),
            "{engine}"
        );

        let models = reports::models(&wh, a, &week).await.unwrap();
        let default = models["upstreams"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["profile"] == "default")
            .unwrap()
            .clone();
        assert_eq!(
            (default["calls"].as_i64(), default["failed_tries"].as_i64()),
            (Some(2), Some(1)),
            "{engine}: {models}"
        );
        assert!(
            (default["error_rate"].as_f64().unwrap() - 1.0 / 3.0).abs() < 1e-9,
            "{engine}"
        );
        assert_eq!(default["failures"]["timeout"], 1, "{engine}");
        assert_eq!(default["latency_ms"]["p99"], 300.0, "{engine}: {default}");

        let tools = reports::tools(&wh, a, &week).await.unwrap();
        assert_eq!(tools["tools"][0]["results"]["ok"], 1, "{engine}: {tools}");
        assert_eq!(tools["tools"][0]["duration_ms"]["p50"], 42.0, "{engine}");
        let flows = reports::workflows(&wh, a, &week).await.unwrap();
        assert_eq!(
            flows["events"],
            json!([{"kind": "project.completed", "count": 1, "runs": 1}]),
            "{engine}"
        );

        let g = reports::governance(&wh, a, &week).await.unwrap();
        assert_eq!((g.decisions, g.denials), (4, 3), "{engine}");
        assert_eq!(g.moderation_strikes[0].name, "u2", "{engine}");
        assert_eq!(g.moderation_strikes[0].count, 2, "{engine}");
        assert_eq!(g.approvals.len(), 1, "{engine}");
        assert!(g.approvals[0].approved);
        assert_eq!(g.budget_events[0].budget, "monthly", "{engine}");
        let versions: Vec<&str> = g.constitutions.iter().map(|c| c.version.as_str()).collect();
        assert_eq!(
            versions,
            ["3", "4"],
            "{engine}: the one in force at the start, then the new one"
        );
        assert!(g.to_markdown().contains("| no-pii | 2 |"), "{engine}");

        // Exports page through every row once, oldest first.
        let table = tables::by_dataset("usage").unwrap();
        let first = reports::export_page(&wh, table, a, &week, None, 2)
            .await
            .unwrap();
        assert_eq!(first.len(), 2, "{engine}");
        let last = &first[1];
        let rest = reports::export_page(
            &wh,
            table,
            a,
            &week,
            Some((last[2].int(), last[0].text())),
            10,
        )
        .await
        .unwrap();
        assert_eq!(rest.len(), 2, "{engine}: four usage rows in all");

        // The other tenant sees its own only; a period before anything is empty.
        let theirs = reports::usage(&wh, globex.as_str(), &week, None, &[])
            .await
            .unwrap();
        assert_eq!(theirs["lines"][0]["calls"], 4, "{engine}: {theirs}");
        let nothing = reports::sessions(&wh, a, &Period::new(0, 1000).unwrap(), None)
            .await
            .unwrap();
        assert_eq!(nothing["turns"], 0, "{engine}");
        assert_eq!(nothing["latency_ms"], Value::Null, "{engine}");
    }
}
