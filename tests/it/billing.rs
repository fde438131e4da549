//! Billing through the gateway, as a client would see it: every model call the
//! platform metered is in the ledger once, at the prices of its profile, and usage adds
//! up to exactly what the upstream reported times those prices; another tenant sees
//! none of it; bad queries are clear 422s. On the embedded backends and on the real
//! servers (PostgreSQL, Kafka) under CI.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use somagent_common::auth::grpc::with_bearer;
use somagent_common::proto::billing::v1 as pb;
use somagent_common::proto::billing::v1::billing_service_client::BillingServiceClient;

use crate::helpers::{Backends, Rooted, metrics_page, other_tenant_admin, with_scripted_llm};
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

    // This month's invoice is open, with a line for the model and the same total; as
    // CSV too. A month with no usage has none.
    let (status, listed) = call(
        &client,
        Method::GET,
        &g("/v1/billing/invoices"),
        &root,
        None,
    )
    .await;
    assert_eq!(status, 200, "{listed}");
    let invoice = &listed["invoices"][0];
    assert_eq!(invoice["status"], "open", "{listed}");
    assert_eq!(
        (
            &invoice["lines"][0]["kind"],
            &invoice["lines"][0]["item"],
            &invoice["lines"][0]["calls"]
        ),
        (&json!("model"), &json!("default"), &json!(3)),
        "{listed}"
    );
    assert_eq!(
        invoice["totals"],
        json!([{"currency": "USD", "amount_micros": expected_cost}]),
        "{listed}"
    );
    let id = invoice["id"].as_str().unwrap();
    let csv = client
        .get(g(&format!("/v1/billing/invoices/{id}?format=csv")))
        .bearer_auth(&root)
        .send()
        .await
        .unwrap();
    assert_eq!(csv.status(), 200);
    assert!(
        csv.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/csv")
    );
    let text = csv.text().await.unwrap();
    assert!(text.starts_with("invoice,status,kind,item,"), "{text}");
    assert!(
        text.contains(&format!("{id},open,total,,,USD,,,,{expected_cost}\r\n")),
        "{text}"
    );
    let (status, none) = call(
        &client,
        Method::GET,
        &g("/v1/billing/invoices/2020-01"),
        &root,
        None,
    )
    .await;
    assert_eq!(status, 404, "{none}");

    // Another tenant's admin sees none of it.
    let hank = other_tenant_admin(&client, &gateway, &root).await;
    let (status, theirs) = call(&client, Method::GET, &g("/v1/billing/usage"), &hank, None).await;
    assert_eq!((status, &theirs["totals"]), (200, &json!([])), "{theirs}");
    let (_, theirs) = call(&client, Method::GET, &g("/v1/billing/entries"), &hank, None).await;
    assert_eq!(theirs["entries"], json!([]), "{theirs}");
    let (_, theirs) = call(
        &client,
        Method::GET,
        &g("/v1/billing/invoices"),
        &hank,
        None,
    )
    .await;
    assert_eq!(theirs["invoices"], json!([]), "{theirs}");
    let (status, _) = call(
        &client,
        Method::GET,
        &g(&format!("/v1/billing/invoices/{id}")),
        &hank,
        None,
    )
    .await;
    assert_eq!(status, 404);

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

#[tokio::test]
async fn a_monthly_budget_stops_spending_with_a_402_naming_it() {
    for backends in Backends::all() {
        budget_journey(backends).await;
    }
}

async fn budget_journey(backends: Backends) {
    let prompt_price = PROMPT_PRICE.to_string();
    let completion_price = COMPLETION_PRICE.to_string();
    let (
        _llm,
        Rooted {
            platform,
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
    const LIMIT: u64 = 2000;

    // A wrong budget is a 422 naming the field; nothing is stored.
    let (status, problem) = call(
        &client,
        Method::PUT,
        &g("/v1/billing/budgets"),
        &root,
        Some(json!({"budgets": [{"name": "m", "scope": "team", "metric": "money", "period": "month", "limit": 1}]})),
    )
    .await;
    assert_eq!(status, 422, "{problem}");
    assert!(
        problem["error"]["details"]["fields"]["budgets[0].scope"].is_string(),
        "{problem}"
    );

    let (status, set) = call(
        &client,
        Method::PUT,
        &g("/v1/billing/budgets"),
        &root,
        Some(json!({"budgets": [{"name": "monthly", "scope": "tenant", "metric": "money", "period": "month", "limit": LIMIT}]})),
    )
    .await;
    assert_eq!(status, 200, "{set}");
    assert_eq!(set["budgets"][0]["remaining"], LIMIT, "{set}");
    assert_eq!(set["budgets"][0]["soft_percent"], 80, "{set}");
    assert_eq!(set["budgets"][0]["currency"], "USD", "{set}");
    assert!(set["budgets"][0]["resets_at"].is_string(), "{set}");

    // Calls until the budget has no room for the next.
    let mut reported = Vec::new();
    let refusal = loop {
        let (status, answer) = call(
            &client,
            Method::POST,
            &g("/v1/chat/completions"),
            &root,
            Some(json!({"model": "default", "max_tokens": 40,
                        "messages": [{"role": "user", "content": "Tell me about the sea"}]})),
        )
        .await;
        if status != 200 {
            break (status, answer);
        }
        let usage = &answer["usage"];
        reported.push((
            usage["prompt_tokens"].as_u64().unwrap(),
            usage["completion_tokens"].as_u64().unwrap(),
        ));
        assert!(
            reported.len() < 100,
            "{backends:?}: the budget never refused"
        );
    };
    let (status, problem) = refusal;
    assert_eq!(status, 402, "{backends:?}: {problem}");
    assert_eq!(problem["error"]["code"], "budget_exhausted", "{problem}");
    // Operators see it too: billing counts the refusal by the budget's scope, and slm
    // every attempt on the upstream.
    let billing_metrics = metrics_page(&client, &platform.addresses["billing"]).await;
    assert!(
        billing_metrics
            .lines()
            .any(|l| l.starts_with("somagent_budget_refusals_total{")
                && l.contains("scope=\"tenant\"")),
        "{billing_metrics}"
    );
    let slm_metrics = metrics_page(&client, &platform.addresses["slm"]).await;
    let attempts: f64 = slm_metrics
        .lines()
        .filter(|l| l.starts_with("somagent_model_upstream_attempts_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(
        attempts >= reported.len() as f64,
        "{} calls, {attempts} attempts: {slm_metrics}",
        reported.len()
    );
    assert_eq!(
        problem["error"]["details"]["budget"]["name"], "monthly",
        "{problem}"
    );
    assert!(
        problem["error"]["message"]
            .as_str()
            .unwrap()
            .contains("`monthly`"),
        "{problem}"
    );
    assert!(
        reported.len() >= 2,
        "{backends:?}: {} calls fit",
        reported.len()
    );
    // A session's turn is refused the same way: its model call would not fit.
    let (status, session) = call(
        &client,
        Method::POST,
        &g("/v1/sessions"),
        &root,
        Some(json!({})),
    )
    .await;
    assert_eq!(status, 201, "{session}");
    let (status, turn) = call(
        &client,
        Method::POST,
        &g(&format!(
            "/v1/sessions/{}/messages",
            session["session_id"].as_str().unwrap()
        )),
        &root,
        Some(json!({"content": "Tell me about the sea"})),
    )
    .await;
    assert_eq!(
        (status, &turn["error"]["code"]),
        (402, &json!("budget_exhausted")),
        "{backends:?}: {turn}"
    );
    assert!(
        turn["error"]["message"]
            .as_str()
            .unwrap()
            .contains("`monthly`"),
        "{turn}"
    );
    // The problem's details came through the turn's workflow (on either engine): the
    // client can read which budget, and when it resets, without parsing the message.
    assert_eq!(
        turn["error"]["details"]["budget"]["name"], "monthly",
        "{backends:?}: {turn}"
    );
    assert!(
        turn["error"]["details"]["resets_at"].is_string()
            && turn["error"]["details"]["requested"].as_i64() > Some(0),
        "{turn}"
    );

    // What the budget spent is what the upstream reported, times the prices, and never
    // more than the limit; the ledger says the same.
    let cost = |(p, c): (u64, u64)| {
        (p * PROMPT_PRICE).div_ceil(1000) + (c * COMPLETION_PRICE).div_ceil(1000)
    };
    let spent: u64 = reported.iter().copied().map(cost).sum();
    assert!(spent <= LIMIT, "{backends:?}: spent {spent} of {LIMIT}");
    let mut state = Value::Null;
    for _ in 0..100 {
        let (status, body) =
            call(&client, Method::GET, &g("/v1/billing/budgets"), &root, None).await;
        assert_eq!(status, 200, "{body}");
        state = body;
        if state["budgets"][0]["spent"] == spent && state["budgets"][0]["reserved"] == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        (
            &state["budgets"][0]["spent"],
            &state["budgets"][0]["reserved"]
        ),
        (&json!(spent), &json!(0)),
        "{backends:?}: {state}"
    );
    // The ledger's model calls (the turn's recall embedded its question too).
    let mut models = Value::Null;
    for _ in 0..200 {
        let (_, body) = call(
            &client,
            Method::GET,
            &g("/v1/billing/usage?group_by=kind"),
            &root,
            None,
        )
        .await;
        models = body["lines"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["group"]["kind"] == "model")
            .cloned()
            .unwrap_or_default();
        if models["calls"] == reported.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        (&models["calls"], &models["cost_micros"]),
        (&json!(reported.len()), &json!(spent)),
        "{backends:?}: {models}"
    );

    // Another tenant has its own budgets (none) and its calls are not refused.
    let hank = other_tenant_admin(&client, &gateway, &root).await;
    let (_, theirs) = call(&client, Method::GET, &g("/v1/billing/budgets"), &hank, None).await;
    assert_eq!(theirs["budgets"], json!([]), "{theirs}");

    // A user's own token cannot hold or settle a budget directly, even one that may
    // use models: only slm and the tool service, acting for a user, can.
    let mut billing = BillingServiceClient::connect(platform.addresses["billing"].clone())
        .await
        .unwrap();
    let refused = billing
        .reserve(with_bearer(
            &root,
            tonic::Request::new(pb::ReserveRequest {
                tokens: 1,
                ..Default::default()
            }),
        ))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
    let refused = billing
        .settle(with_bearer(
            &root,
            tonic::Request::new(pb::SettleRequest {
                reservation_id: "anything".into(),
                ..Default::default()
            }),
        ))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");

    // Raising the limit lets calls through again, and keeps what was spent.
    let (status, set) = call(
        &client,
        Method::PUT,
        &g("/v1/billing/budgets"),
        &root,
        Some(json!({"budgets": [{"name": "monthly", "scope": "tenant", "metric": "money", "period": "month", "limit": LIMIT * 10}]})),
    )
    .await;
    assert_eq!(
        (status, &set["budgets"][0]["spent"]),
        (200, &json!(spent)),
        "{set}"
    );
    let (status, answer) = call(
        &client,
        Method::POST,
        &g("/v1/chat/completions"),
        &root,
        Some(json!({"model": "default", "max_tokens": 40, "messages": [{"role": "user", "content": "again"}]})),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
}
