//! OpenAI-compatible chat through the gateway against a scripted OpenAI-compatible
//! server: whole answers and SSE streams, tool calls, usage and its metering, retries,
//! fallbacks, timeouts, and bad requests.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use somagent_common::config::EventsUrl;
use somagent_common::infra::events::{EventBus, topics};

use crate::helpers::{Backends, Rooted, login, published, with_scripted_llm};
use crate::lifecycle::call;

/// The `data:` payloads of an SSE body, in order.
pub fn sse_data(body: &str) -> Vec<String> {
    body.lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .map(|d| d.trim().to_owned())
        .collect()
}

async fn chat(
    client: &reqwest::Client,
    gateway: &str,
    token: &str,
    body: Value,
) -> reqwest::Response {
    client
        .post(format!("{gateway}/v1/chat/completions"))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn chat_completions_answer_stream_call_tools_fall_back_and_are_metered() {
    for backends in Backends::all() {
        chat_journey(backends).await;
    }
}

async fn chat_journey(backends: Backends) {
    let (
        llm,
        Rooted {
            platform: _platform,
            gateway,
            client,
            root,
            data,
            events,
        },
    ) = with_scripted_llm(
        backends,
        &[
            ("SOMAGENT_SLM__LLM_PRICE_PROMPT", "1000"),
            ("SOMAGENT_SLM__LLM_PRICE_COMPLETION", "2000"),
        ],
    )
    .await;

    // A whole answer.
    let response = chat(&client, &gateway, &root, json!({
        "model": "default",
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello there"}],
    }))
    .await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-somagent-profile"], "default");
    let cost: i64 = response.headers()["x-somagent-cost-micros"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["object"], "chat.completion");
    assert_eq!(
        answer["choices"][0]["message"]["content"],
        "Echo: hello there"
    );
    assert_eq!(answer["choices"][0]["finish_reason"], "stop");
    let usage = &answer["usage"];
    let (prompt, completion) = (
        usage["prompt_tokens"].as_i64().unwrap(),
        usage["completion_tokens"].as_i64().unwrap(),
    );
    assert!(prompt > 0 && completion > 0, "{usage}");
    assert_eq!(usage["total_tokens"].as_i64().unwrap(), prompt + completion);
    // 1000 micros per 1K prompt tokens, 2000 per 1K completion tokens, rounded up.
    assert_eq!(
        cost,
        (prompt * 1000 + 999) / 1000 + (completion * 2000 + 999) / 1000
    );

    // The same as a stream, with usage at the end.
    let response = chat(
        &client,
        &gateway,
        &root,
        json!({
            "model": "default", "stream": true, "stream_options": {"include_usage": true},
            "messages": [{"role": "user", "content": "stream me three words"}],
        }),
    )
    .await;
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let frames = sse_data(&response.text().await.unwrap());
    assert_eq!(frames.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = frames[..frames.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    assert!(chunks.len() > 3, "one chunk per word: {chunks:?}");
    assert!(
        chunks
            .iter()
            .all(|c| c["object"] == "chat.completion.chunk")
    );
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, "Echo: stream me three words");
    let finish = chunks
        .iter()
        .find_map(|c| c["choices"][0]["finish_reason"].as_str());
    assert_eq!(finish, Some("stop"));
    let last = chunks.last().unwrap();
    assert_eq!(last["choices"], json!([]));
    assert!(
        last["usage"]["completion_tokens"].as_i64().unwrap() > 0,
        "{last}"
    );

    // Scripted models are called by name through platform profiles (a platform admin's).
    for model in ["tool-caller", "fail-500", "flaky-1", "fail-429", "silent"] {
        crate::helpers::platform_profile(&client, &gateway, &root, model).await;
    }

    // Tool calls, streamed in pieces, then the tool's result back to the model.
    let ask = json!([{"role": "user", "content": "weather in Paris"}]);
    let tools = json!([{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]);
    let response = chat(
        &client,
        &gateway,
        &root,
        json!({"model": "tool-caller", "stream": true, "messages": ask, "tools": tools}),
    )
    .await;
    assert_eq!(response.status(), 200);
    let frames = sse_data(&response.text().await.unwrap());
    let mut arguments = String::new();
    let mut name = None;
    let mut id = None;
    for d in &frames[..frames.len() - 1] {
        let chunk: Value = serde_json::from_str(d).unwrap();
        for call in chunk["choices"][0]["delta"]["tool_calls"]
            .as_array()
            .into_iter()
            .flatten()
        {
            assert_eq!(call["index"], 0);
            name = name.or_else(|| call["function"]["name"].as_str().map(str::to_owned));
            id = id.or_else(|| call["id"].as_str().map(str::to_owned));
            arguments.push_str(call["function"]["arguments"].as_str().unwrap_or_default());
        }
    }
    assert_eq!(
        (name.as_deref(), id.as_deref()),
        (Some("lookup"), Some("call_1"))
    );
    assert_eq!(
        serde_json::from_str::<Value>(&arguments).unwrap(),
        json!({"query": "weather in Paris"})
    );
    let response = chat(&client, &gateway, &root, json!({
        "model": "tool-caller", "tools": tools,
        "messages": [
            {"role": "user", "content": "weather in Paris"},
            {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": arguments}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "sunny, 21 C"},
        ],
    }))
    .await;
    let answer: Value = response.json().await.unwrap();
    assert_eq!(
        answer["choices"][0]["message"]["content"], "The tool said: sunny, 21 C",
        "{answer}"
    );
    // Whole answers carry tool calls too.
    let answer: Value = chat(
        &client,
        &gateway,
        &root,
        json!({"model": "tool-caller", "messages": ask, "tools": tools}),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(answer["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(
        answer["choices"][0]["message"]["tool_calls"][0]["function"]["name"],
        "lookup"
    );

    // A tenant profile over a platform profile whose upstream keeps failing: retried,
    // then its fallback answers.
    let profile = |name: &str, body: Value| {
        let (client, url, root) = (
            client.clone(),
            format!("{gateway}/v1/model-profiles/{name}"),
            root.clone(),
        );
        async move { call(&client, Method::PUT, &url, &root, Some(body)).await }
    };
    let (status, saved) = profile(
        "primary",
        json!({"base": "fail-500", "fallbacks": ["backup"]}),
    )
    .await;
    assert_eq!(status, 200, "{saved}");
    assert_eq!(saved["scope"], "tenant");
    assert_eq!(saved["base"], "fail-500");
    assert_eq!(saved["model"], "fail-500");
    assert_eq!(profile("backup", json!({"base": "default"})).await.0, 200);
    let before = llm.requests().len();
    let response = chat(
        &client,
        &gateway,
        &root,
        json!({"model": "primary", "messages": [{"role": "user", "content": "anyone?"}]}),
    )
    .await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-somagent-profile"], "backup");
    let models: Vec<String> = llm.requests()[before..]
        .iter()
        .map(|r| r["model"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        models,
        ["fail-500", "fail-500", "fail-500", "scripted"],
        "one try and two retries, then the fallback"
    );
    // A passing hiccup is retried without the caller noticing.
    let response = chat(
        &client,
        &gateway,
        &root,
        json!({"model": "flaky-1", "messages": [{"role": "user", "content": "again"}]}),
    )
    .await;
    assert_eq!(response.status(), 200);
    // Rate-limited upstream with no fallback: a clear 503.
    let response = chat(
        &client,
        &gateway,
        &root,
        json!({"model": "fail-429", "messages": [{"role": "user", "content": "x"}]}),
    )
    .await;
    assert_eq!(response.status(), 503);
    let problem: Value = response.json().await.unwrap();
    assert_eq!(
        problem["error"]["details"]["upstream_status"], 429,
        "{problem}"
    );

    // An upstream that never answers: a timeout, not a hang.
    assert_eq!(
        profile("stuck", json!({"base": "silent", "timeout_ms": 300}))
            .await
            .0,
        200
    );
    let started = std::time::Instant::now();
    let response = chat(&client, &gateway, &root, json!({"model": "stuck", "stream": true, "messages": [{"role": "user", "content": "hello?"}]})).await;
    assert_eq!(response.status(), 504);
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["error"]["code"], "timeout");
    assert!(
        problem["error"]["message"]
            .as_str()
            .unwrap()
            .contains("did not answer"),
        "{problem}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "3 tries of 0.3 s and backoff"
    );

    // Bad requests are problems, and bad profiles too.
    for (body, field) in [
        (json!({"model": "default", "messages": []}), "messages"),
        (
            json!({"model": "default", "n": 2, "messages": [{"role": "user", "content": "x"}]}),
            "n",
        ),
        (
            json!({"model": "default", "messages": [{"role": "wizard", "content": "x"}]}),
            "messages",
        ),
        (
            json!({"model": "default", "temperature": 7, "messages": [{"role": "user", "content": "x"}]}),
            "temperature",
        ),
        (
            json!({"model": "default", "messages": [{"role": "tool", "content": "x"}]}),
            "messages",
        ),
    ] {
        let response = chat(&client, &gateway, &root, body.clone()).await;
        assert_eq!(response.status(), 422, "{body}");
        let problem: Value = response.json().await.unwrap();
        assert!(
            problem["error"]["details"]["fields"][field].is_string(),
            "{field}: {problem}"
        );
    }
    let (status, problem) = profile(
        "nowhere",
        json!({"upstream": "http://evil.example", "model": "x"}),
    )
    .await;
    assert_eq!(status, 403, "tenants name no upstream: {problem}");
    let (status, problem) = profile(
        "nowhere",
        json!({"scope": "platform", "upstream": "http://evil.example", "model": "x"}),
    )
    .await;
    assert_eq!(
        status, 422,
        "platform profiles name configured upstreams only: {problem}"
    );

    // The models the tenant may use.
    let (status, models) = call(
        &client,
        Method::GET,
        &format!("{gateway}/v1/models"),
        &root,
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(models["object"], "list");
    let ids: Vec<&str> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["id"].as_str())
        .collect();
    for id in ["default", "primary", "backup", "stuck"] {
        assert!(ids.contains(&id), "{models}");
    }

    // A viewer may read the models but not use them.
    let (status, _) = call(&client, Method::POST, &format!("{gateway}/v1/users"), &root, Some(json!({"username": "watcher", "password": "a long user passphrase", "roles": ["viewer"]}))).await;
    assert_eq!(status, 201);
    let viewer = login(
        &client,
        &gateway,
        "default",
        "watcher",
        "a long user passphrase",
    )
    .await;
    let response = chat(
        &client,
        &gateway,
        &viewer,
        json!({"model": "default", "messages": [{"role": "user", "content": "x"}]}),
    )
    .await;
    assert_eq!(response.status(), 403);
    assert_eq!(
        call(
            &client,
            Method::GET,
            &format!("{gateway}/v1/models"),
            &viewer,
            None
        )
        .await
        .0,
        200
    );

    // Every answered call was metered on billing.usage, with its tokens and cost.
    let bus = EventBus::connect(&events, data.path()).await.unwrap();
    let seen = published(&bus, topics::BILLING_USAGE).await;
    assert!(seen.len() >= 7, "{backends:?}: {} usage events", seen.len());
    let first = &seen[0];
    assert_eq!(first.kind, "slm.usage");
    assert_eq!(first.data["profile"], "default");
    assert_eq!(first.data["prompt_tokens"].as_i64().unwrap(), prompt);
    assert_eq!(first.data["cost_micros"].as_i64().unwrap(), cost);
    assert_eq!(
        first.data["user"],
        me_subject(&client, &gateway, &root).await
    );
    assert!(seen.iter().any(|e| e.data["profile"] == "backup"));
}

async fn me_subject(client: &reqwest::Client, gateway: &str, token: &str) -> Value {
    crate::lifecycle::me_of(client, gateway, token).await["subject"].clone()
}

#[tokio::test]
async fn an_upstream_without_usage_is_counted_and_no_model_is_a_clear_503() {
    let (
        _llm,
        Rooted {
            platform: _p,
            gateway,
            client,
            root,
            data,
            ..
        },
    ) = with_scripted_llm(
        Backends::Embedded,
        &[("SOMAGENT_SLM__LLM_MODEL", "no-usage")],
    )
    .await;
    let answer: Value = chat(&client, &gateway, &root, json!({"model": "default", "messages": [{"role": "user", "content": "count these tokens please"}]}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        answer["choices"][0]["message"]["content"],
        "Echo: count these tokens please"
    );
    let usage = &answer["usage"];
    assert!(usage["prompt_tokens"].as_i64().unwrap() >= 5, "{usage}");
    assert!(usage["completion_tokens"].as_i64().unwrap() >= 5, "{usage}");
    let bus = EventBus::connect(&EventsUrl::Local { path: None }, data.path())
        .await
        .unwrap();
    let mut events = bus
        .subscribe("e2e-usage", &[topics::BILLING_USAGE])
        .await
        .unwrap();
    let delivery = tokio::time::timeout(Duration::from_secs(5), events.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(delivery.event.data["tokens_counted_by_platform"], true);
    assert_eq!(
        delivery.event.data["completion_tokens"],
        usage["completion_tokens"]
    );

    // No upstream and no local model: 503 saying how to configure one.
    let bare = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let ports = crate::helpers::free_ports();
    let platform = crate::helpers::Platform::start_with(
        bare.path(),
        &ports,
        &[
            (
                "SOMAGENT_IDENTITY__BOOTSTRAP_ADMIN_PASSWORD",
                crate::helpers::ROOT_PASSWORD,
            ),
            ("HOME", home.path().to_str().unwrap()),
        ],
    );
    let gateway = platform.addresses["gateway"].clone();
    crate::helpers::wait_ok(&client, &format!("{gateway}/readyz")).await;
    let token = login(
        &client,
        &gateway,
        "default",
        "admin",
        crate::helpers::ROOT_PASSWORD,
    )
    .await;
    let response = chat(
        &client,
        &gateway,
        &token,
        json!({"model": "default", "messages": [{"role": "user", "content": "x"}]}),
    )
    .await;
    assert_eq!(response.status(), 503);
    let problem: Value = response.json().await.unwrap();
    assert!(
        problem["error"]["message"]
            .as_str()
            .unwrap()
            .contains("SOMAGENT_SLM__LLM_BASE_URL"),
        "{problem}"
    );
}

#[tokio::test]
async fn requests_on_the_bus_are_answered_on_the_bus_once() {
    let (
        llm,
        Rooted {
            platform,
            gateway,
            client,
            root,
            data,
            ..
        },
    ) = with_scripted_llm(Backends::Embedded, &[]).await;
    let me = crate::lifecycle::me_of(&client, &gateway, &root).await;
    let tenant =
        somagent_common::tenant::TenantId::parse(me["tenant"].as_str().unwrap().to_owned())
            .unwrap();
    let bus = EventBus::connect(&EventsUrl::Local { path: None }, data.path())
        .await
        .unwrap();
    let service = crate::async_inference::service_token_for_slm(
        &platform.addresses["identity"],
        data.path(),
        &root,
    )
    .await;
    let request = somagent_common::infra::events::Envelope::new(
        "slm.request",
        "e2e",
        tenant.clone(),
        json!({"request_id": "req-1", "token": service, "model": "default", "messages": [{"role": "user", "content": "answer later"}]}),
    )
    .with_subject(me["subject"].as_str().unwrap().to_owned());
    // Delivered twice, as at-least-once delivery may.
    for _ in 0..2 {
        bus.publish(topics::SLM_REQUESTS, tenant.as_str(), &request)
            .await
            .unwrap();
    }
    let mut responses = bus
        .subscribe("e2e-responses", &[topics::SLM_RESPONSES])
        .await
        .unwrap();
    let first = tokio::time::timeout(Duration::from_secs(15), responses.next())
        .await
        .unwrap()
        .unwrap()
        .event;
    assert_eq!(first.data["request_id"], "req-1");
    assert_eq!(first.data["status"], "completed", "{}", first.data);
    assert_eq!(first.data["message"]["content"], "Echo: answer later");
    assert!(first.data["usage"]["completion_tokens"].as_i64().unwrap() > 0);
    assert_eq!(first.tenant, tenant);
    let again = tokio::time::timeout(Duration::from_secs(3), responses.next()).await;
    assert!(again.is_err(), "answered once: {again:?}");
    assert_eq!(llm.requests().len(), 1, "the model was asked once");
}
