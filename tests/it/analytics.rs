//! Analytics through the gateway, as a client would see it: what the journey did (model
//! calls, a session turn, a prompt the tenant's policy refused) is what the usage,
//! sessions and decisions reports say, matching billing's own figures; an export
//! downloads every row; the governance report names the rule; another tenant sees none
//! of it and a viewer cannot export. On the embedded warehouse, and on ClickHouse under
//! CI.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{Backends, Rooted, other_tenant_admin, viewer_of, with_scripted_llm};
use crate::lifecycle::call;
use crate::sessions::create_session;

#[tokio::test]
async fn analytics_counts_what_the_journey_did() {
    for backends in Backends::all() {
        journey(backends).await;
    }
}

/// Polls a report until `done` says it has caught up with the events.
pub(crate) async fn report_until(
    client: &reqwest::Client,
    url: &str,
    token: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let mut last = Value::Null;
    for _ in 0..300 {
        let (status, report) = call(client, Method::GET, url, token, None).await;
        assert_eq!(status, 200, "{url}: {report}");
        if done(&report) {
            return report;
        }
        last = report;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{url} never caught up: {last}");
}

async fn journey(backends: Backends) {
    let (
        _llm,
        Rooted {
            platform: _platform,
            gateway,
            client,
            root,
            ..
        },
    ) = with_scripted_llm(
        backends,
        &[
            ("SOMAGENT_SLM__LLM_PRICE_PROMPT", "1500"),
            ("SOMAGENT_SLM__LLM_PRICE_COMPLETION", "6000"),
        ],
    )
    .await;
    let g = |path: &str| format!("{gateway}{path}");

    // Two model calls, a session turn, and a prompt the tenant's rule refuses.
    for question in [
        "What is the capital of France?",
        "Say something about the sea",
    ] {
        let (status, answer) = call(
            &client,
            Method::POST,
            &g("/v1/chat/completions"),
            &root,
            Some(json!({"model": "default", "messages": [{"role": "user", "content": question}]})),
        )
        .await;
        assert_eq!(status, 200, "{answer}");
    }
    let session = create_session(&client, &gateway, &root, json!({})).await;
    let (status, answer) = call(
        &client,
        Method::POST,
        &g(&format!("/v1/sessions/{session}/messages")),
        &root,
        Some(json!({"content": "hello there"})),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let (status, rule) = call(&client, Method::POST, &g("/v1/policy/rules"), &root, Some(json!({
        "name": "Secret project", "kind": "forbidden_term", "value": "Bluebird", "severity": "high", "score": 80,
    }))).await;
    assert_eq!(status, 201, "{rule}");
    let rule_id = rule["id"].as_str().unwrap().to_owned();
    let (status, refused) = call(&client, Method::POST, &g("/v1/chat/completions"), &root,
        Some(json!({"model": "default", "messages": [{"role": "user", "content": "tell me about bluebird"}]}))).await;
    assert_eq!(status, 403, "{refused}");

    // Usage by model, matching billing's ledger call for call and micro for micro.
    let today = g("/v1/analytics/usage?group_by=model&interval=day");
    let usage = report_until(&client, &today, &root, |r| {
        r["lines"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["calls"].as_i64().unwrap())
            .sum::<i64>()
            >= 3
    })
    .await;
    let (status, billed) = call(&client, Method::GET, &g("/v1/billing/usage"), &root, None).await;
    assert_eq!(status, 200, "{billed}");
    let sum = |lines: &Value, field: &str| {
        lines
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l[field].as_i64().unwrap())
            .sum::<i64>()
    };
    for field in ["calls", "prompt_tokens", "completion_tokens", "cost_micros"] {
        assert_eq!(
            sum(&usage["lines"], field),
            sum(&billed["totals"], field),
            "{field}: {usage} vs {billed}"
        );
    }
    assert!(usage["lines"][0]["at"].is_string(), "{usage}");
    assert_eq!(usage["lines"][0]["group"]["model"], "default", "{usage}");

    // The turn, and the refusal by its rule.
    let sessions = report_until(&client, &g("/v1/analytics/sessions"), &root, |r| {
        r["turns"] == 1
    })
    .await;
    assert_eq!(sessions["outcomes"]["completed"], 1, "{sessions}");
    assert!(
        sessions["latency_ms"]["p50"].as_f64().unwrap() > 0.0,
        "{sessions}"
    );
    let decisions = report_until(&client, &g("/v1/analytics/decisions"), &root, |r| {
        r["denied"].as_i64() >= Some(1)
    })
    .await;
    assert!(
        decisions["denied_by_rule"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["name"] == rule_id.as_str()),
        "{decisions}"
    );
    let prompts = decisions["by_action"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["action"] == "prompt")
        .cloned()
        .unwrap();
    assert!(prompts["allowed"].as_i64().unwrap() >= 3, "{decisions}");
    let models = call(
        &client,
        Method::GET,
        &g("/v1/analytics/models"),
        &root,
        None,
    )
    .await
    .1;
    assert!(
        models["upstreams"][0]["latency_ms"]["p50"]
            .as_f64()
            .is_some(),
        "{models}"
    );

    // The governance report, as JSON and Markdown.
    let (status, report) = call(
        &client,
        Method::GET,
        &g("/v1/analytics/governance"),
        &root,
        None,
    )
    .await;
    assert_eq!(status, 200, "{report}");
    assert!(report["denials"].as_i64().unwrap() >= 1, "{report}");
    let markdown = client
        .get(g("/v1/analytics/governance?format=markdown"))
        .bearer_auth(&root)
        .send()
        .await
        .unwrap();
    assert_eq!(
        markdown.headers()["content-type"],
        "text/markdown; charset=utf-8"
    );
    let markdown = markdown.text().await.unwrap();
    assert!(
        markdown.contains("# Governance report") && markdown.contains(&rule_id),
        "{markdown}"
    );

    // Exports: every usage row, as CSV and as JSON lines.
    let csv = client
        .get(g("/v1/analytics/export?dataset=usage"))
        .bearer_auth(&root)
        .send()
        .await
        .unwrap();
    assert_eq!(csv.status(), 200);
    assert!(
        csv.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .contains("usage.csv")
    );
    let csv = csv.text().await.unwrap();
    let mut lines = csv.lines();
    assert!(
        lines
            .next()
            .unwrap()
            .starts_with("event_id,tenant,time_ms,user_id"),
        "{csv}"
    );
    assert_eq!(
        lines.count() as i64,
        sum(&billed["totals"], "calls"),
        "{csv}"
    );
    let jsonl = client
        .get(g("/v1/analytics/export?dataset=turns&format=jsonl"))
        .bearer_auth(&root)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let turn: Value = serde_json::from_str(jsonl.lines().next().unwrap()).unwrap();
    assert_eq!(turn["session_id"], session.as_str(), "{jsonl}");
    assert_eq!(turn["outcome"], "completed", "{jsonl}");

    // Clear problems for what cannot be answered.
    for (path, status) in [
        ("/v1/analytics/usage?from=2026-01-01&to=2027-06-01", 422),
        ("/v1/analytics/usage?group_by=color", 422),
        ("/v1/analytics/usage?interval=fortnight", 422),
        ("/v1/analytics/weather", 404),
        ("/v1/analytics/export?dataset=secrets", 422),
    ] {
        let (got, problem) = call(&client, Method::GET, &g(path), &root, None).await;
        assert_eq!(got, status, "{path}: {problem}");
        assert!(problem["error"]["code"].is_string(), "{path}: {problem}");
    }

    // A viewer reads reports but exports nothing; another tenant sees none of it.
    let (viewer, _) = viewer_of(&client, &gateway, &root).await;
    assert_eq!(
        call(
            &client,
            Method::GET,
            &g("/v1/analytics/sessions"),
            &viewer,
            None
        )
        .await
        .0,
        200
    );
    for path in [
        "/v1/analytics/export?dataset=usage",
        "/v1/analytics/governance",
    ] {
        assert_eq!(
            call(&client, Method::GET, &g(path), &viewer, None).await.0,
            403,
            "{path}"
        );
    }
    let other = other_tenant_admin(&client, &gateway, &root).await;
    let (_, theirs) = call(
        &client,
        Method::GET,
        &g("/v1/analytics/usage"),
        &other,
        None,
    )
    .await;
    assert_eq!(theirs["lines"], json!([]), "{theirs}");
    let (_, theirs) = call(
        &client,
        Method::GET,
        &g("/v1/analytics/sessions"),
        &other,
        None,
    )
    .await;
    assert_eq!(theirs["turns"], 0, "{theirs}");
    let export = client
        .get(g("/v1/analytics/export?dataset=events&format=jsonl"))
        .bearer_auth(&other)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        !export.contains(&session),
        "another tenant's export holds this tenant's session"
    );
}
