//! Billing through the gateway, as a client would see it: every model call the
//! platform metered is in the ledger once, at the prices of its profile, and usage adds
//! up to exactly what the upstream reported times those prices; another tenant sees
//! none of it; bad queries are clear 422s. On the embedded backends and on the real
//! servers (PostgreSQL, Kafka) under CI.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{Backends, Rooted, other_tenant_admin, with_scripted_llm};
use crate::lifecycle::call;

/// Micro-units per 1,000 tokens.
const PROMPT_PRICE: u64 = 1500;
const COMPLETION_PRICE: u64 = 6000;

#[tokio::test]
async fn every_metered_call_is_in_the_ledger_once_at_its_price() {
    for backends in Backends::all() {
        ledger_journey(backends).await;
    }
}

async fn ledger_journey(backends: Backends) {
    let prompt_price = PROMPT_PRICE.to_string();
    let completion_price = COMPLETION_PRICE.to_string();
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
            ("SOMAGENT_SLM__LLM_PRICE_PROMPT", prompt_price.as_str()),
            (
                "SOMAGENT_SLM__LLM_PRICE_COMPLETION",
                completion_price.as_str(),
            ),
        ],
    )
    .await;
    let g = |path: &str| format!("{gateway}{path}");

    // Three calls; the upstream says what each used.
    let mut reported = Vec::new();
    for question in [
        "What is the capital of France?",
        "Say something long about the sea and the sky and the wind",
        "ok",
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
        let usage = &answer["usage"];
        reported.push((
            usage["prompt_tokens"].as_u64().unwrap(),
            usage["completion_tokens"].as_u64().unwrap(),
        ));
    }
    let cost = |(p, c): (u64, u64)| {
        (p * PROMPT_PRICE).div_ceil(1000) + (c * COMPLETION_PRICE).div_ceil(1000)
    };
    let expected_cost: u64 = reported.iter().copied().map(cost).sum();
    let expected_prompt: u64 = reported.iter().map(|r| r.0).sum();
    let expected_completion: u64 = reported.iter().map(|r| r.1).sum();

    // The ledger takes the usage events in from the bus: wait until all three are in.
    let mut report = Value::Null;
    for _ in 0..200 {
        let (status, body) = call(
            &client,
            Method::GET,
            &g("/v1/billing/usage?group_by=model,kind"),
            &root,
            None,
        )
        .await;
        assert_eq!(status, 200, "{body}");
        report = body;
        if report["totals"][0]["calls"] == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let totals = &report["totals"];
    assert_eq!(
        totals.as_array().map(Vec::len),
        Some(1),
        "{backends:?}: {report}"
    );
    assert_eq!(
        (
            &totals[0]["calls"],
            &totals[0]["prompt_tokens"],
            &totals[0]["completion_tokens"],
            &totals[0]["cost_micros"],
            &totals[0]["currency"]
        ),
        (
            &json!(3),
            &json!(expected_prompt),
            &json!(expected_completion),
            &json!(expected_cost),
            &json!("USD")
        ),
        "{backends:?}: {report}"
    );
    assert_eq!(
        report["lines"][0]["group"],
        json!({"model": "default", "kind": "model"}),
        "{report}"
    );

    // Each call once in the ledger, at the prices of its time.
    let (status, page) = call(&client, Method::GET, &g("/v1/billing/entries"), &root, None).await;
    assert_eq!(status, 200, "{page}");
    let entries = page["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 3, "{page}");
    let mut seen: Vec<(u64, u64)> = entries
        .iter()
        .map(|e| {
            assert_eq!(e["prompt_price_micros"], PROMPT_PRICE);
            assert_eq!(e["completion_price_micros"], COMPLETION_PRICE);
            assert_eq!(e["kind"], "model");
            (
                e["prompt_tokens"].as_u64().unwrap(),
                e["completion_tokens"].as_u64().unwrap(),
            )
        })
        .collect();
    seen.sort();
    reported.sort();
    assert_eq!(seen, reported, "{backends:?}");

    // Another tenant's admin sees none of it.
    let hank = other_tenant_admin(&client, &gateway, &root).await;
    let (status, theirs) = call(&client, Method::GET, &g("/v1/billing/usage"), &hank, None).await;
    assert_eq!((status, &theirs["totals"]), (200, &json!([])), "{theirs}");
    let (_, theirs) = call(&client, Method::GET, &g("/v1/billing/entries"), &hank, None).await;
    assert_eq!(theirs["entries"], json!([]), "{theirs}");

    // Clear errors for bad queries.
    for (query, field) in [
        ("group_by=price", "group_by"),
        ("from=yesterday", "from"),
        ("from=2026-02-01&to=2026-01-01", "to"),
        ("from=2020-01-01&to=2026-01-01", "to"),
    ] {
        let (status, problem) = call(
            &client,
            Method::GET,
            &g(&format!("/v1/billing/usage?{query}")),
            &root,
            None,
        )
        .await;
        assert_eq!(status, 422, "{query}: {problem}");
        assert!(
            problem["error"]["details"]["fields"][field].is_string(),
            "{query}: {problem}"
        );
    }
    let (status, _) = call(
        &client,
        Method::GET,
        &g("/v1/billing/usage"),
        "not a token",
        None,
    )
    .await;
    assert_eq!(status, 401);
}
