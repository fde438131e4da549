//! Prices belong to the platform: a tenant admin tunes platform profiles but cannot set
//! a price, an upstream or a model, nor shadow a platform profile's name; a tuning is
//! billed at its base's price; a model no profile names is a 404 naming those there are.

use reqwest::Method;
use serde_json::{Value, json};
use somagent_common::infra::events::{EventBus, topics};

use crate::helpers::{Backends, Rooted, login, published, with_scripted_llm};
use crate::lifecycle::call;

#[tokio::test]
async fn tenants_tune_platform_profiles_and_pay_the_platform_price() {
    let (
        llm,
        Rooted {
            platform: _p,
            gateway,
            client,
            root,
            data,
            events,
        },
    ) = with_scripted_llm(
        Backends::Embedded,
        &[
            ("SOMAGENT_SLM__LLM_PRICE_PROMPT", "1000"),
            ("SOMAGENT_SLM__LLM_PRICE_COMPLETION", "2000"),
        ],
    )
    .await;
    let (status, _) = call(
        &client,
        Method::POST,
        &format!("{gateway}/v1/users"),
        &root,
        Some(json!({"username": "tenant-admin", "password": "a long user passphrase", "roles": ["admin"]})),
    )
    .await;
    assert_eq!(status, 201);
    let admin = login(
        &client,
        &gateway,
        "default",
        "tenant-admin",
        "a long user passphrase",
    )
    .await;
    let put = |name: &str, body: Value| {
        let (client, url, admin) = (
            client.clone(),
            format!("{gateway}/v1/model-profiles/{name}"),
            admin.clone(),
        );
        async move { call(&client, Method::PUT, &url, &admin, Some(body)).await }
    };

    // A tenant admin cannot make `default` free, under its name or any other.
    for name in ["default", "free"] {
        let (status, problem) = put(
            name,
            json!({"upstream": "default", "model": "scripted", "prompt_price_micros_per_1k": 0, "completion_price_micros_per_1k": 0}),
        )
        .await;
        assert_eq!(status, 403, "{problem}");
        assert_eq!(problem["error"]["code"], "forbidden");
        assert!(
            problem["error"]["message"]
                .as_str()
                .unwrap()
                .contains("platform admins"),
            "{problem}"
        );
    }
    let (status, problem) = put(
        "free",
        json!({"scope": "platform", "upstream": "default", "model": "scripted", "prompt_price_micros_per_1k": 0}),
    )
    .await;
    assert_eq!(status, 403, "{problem}");
    assert_eq!(
        problem["error"]["details"]["missing_capability"],
        "platform:admin"
    );
    // Nor shadow it with a tuning of the same name.
    let (status, problem) = put("default", json!({"base": "default", "temperature": 0.5})).await;
    assert_eq!(status, 409, "{problem}");

    // A tuning of `default` at `default`'s price.
    let (status, saved) = put(
        "careful",
        json!({"base": "default", "temperature": 0.2, "max_tokens": 50}),
    )
    .await;
    assert_eq!(status, 200, "{saved}");
    assert_eq!(
        (
            &saved["scope"],
            &saved["base"],
            &saved["prompt_price_micros_per_1k"],
            &saved["completion_price_micros_per_1k"]
        ),
        (
            &json!("tenant"),
            &json!("default"),
            &json!(1000),
            &json!(2000)
        )
    );
    let (_, listed) = call(
        &client,
        Method::GET,
        &format!("{gateway}/v1/model-profiles"),
        &admin,
        None,
    )
    .await;
    let default = listed["profiles"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "default")
        .unwrap();
    assert_eq!(
        (&default["scope"], &default["prompt_price_micros_per_1k"]),
        (&json!("platform"), &json!(1000)),
        "{listed}"
    );

    // An unknown model is a 404 naming the models there are, and no model is called.
    let before = llm.requests().len();
    let response = client
        .post(format!("{gateway}/v1/chat/completions"))
        .bearer_auth(&admin)
        .json(&json!({"model": "gpt-expensive", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["error"]["code"], "model_not_found", "{problem}");
    let mut named: Vec<String> = problem["error"]["details"]["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(llm.requests().len(), before, "no model was called");
    // The same models as GET /v1/models lists.
    let (_, models) = call(
        &client,
        Method::GET,
        &format!("{gateway}/v1/models"),
        &admin,
        None,
    )
    .await;
    let mut listed: Vec<String> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_owned())
        .collect();
    named.sort();
    listed.sort();
    assert_eq!(named, listed);
    for id in ["careful", "default", "scripted"] {
        assert!(listed.iter().any(|m| m == id), "{listed:?}");
    }

    // The tuning answers with its settings and is billed at the platform's price.
    let response = client
        .post(format!("{gateway}/v1/chat/completions"))
        .bearer_auth(&admin)
        .json(&json!({"model": "careful", "messages": [{"role": "user", "content": "tell me"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-somagent-profile"], "careful");
    let sent = llm.requests().last().unwrap().clone();
    assert_eq!(sent["model"], "scripted");
    assert_eq!(sent["max_tokens"].as_u64(), Some(50), "{sent}");
    let bus = EventBus::connect(&events, data.path()).await.unwrap();
    let usage = published(&bus, topics::BILLING_USAGE).await;
    let billed = usage
        .iter()
        .find(|e| e.data["profile"] == "careful")
        .expect("the tuning's call is metered");
    let (prompt, completion) = (
        billed.data["prompt_tokens"].as_i64().unwrap(),
        billed.data["completion_tokens"].as_i64().unwrap(),
    );
    assert!(prompt > 0 && completion > 0, "{}", billed.data);
    assert_eq!(
        billed.data["cost_micros"].as_i64().unwrap(),
        (prompt * 1000 + 999) / 1000 + (completion * 2000 + 999) / 1000
    );
}
