//! With no upstream configured, chat runs on the local model (SmolLM2-135M-Instruct)
//! in process, streaming real tokens; held to a JSON schema when asked, it answers
//! JSON of that schema, and so it plans, works and reviews a tiny project.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::lifecycle::call;

use crate::chat::sse_data;
use crate::helpers::{Rooted, until, with_root_env};

/// `somagent up` with the local model and nothing else to answer; `None` where the
/// model is not installed (never under `CI=true`).
async fn on_the_local_model() -> Option<Rooted> {
    let path = crate::helpers::required_env("LOCAL_MODEL")?;
    Some(
        with_root_env(&[
            ("SOMAGENT_SLM__LLM_MODEL_PATH", path.as_str()),
            ("SOMAGENT_SLM__LLM_LOCAL_Q8", "true"),
        ])
        .await,
    )
}

#[tokio::test]
async fn the_local_model_answers_out_of_the_box_and_streams() {
    // The platform and its data directory live as long as the bindings.
    let Some(Rooted {
        platform: _platform,
        data: _data,
        gateway,
        client,
        root,
        ..
    }) = on_the_local_model().await
    else {
        return;
    };
    let models: Value = client
        .get(format!("{gateway}/v1/models"))
        .bearer_auth(&root)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ids: Vec<&str> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["id"].as_str())
        .collect();
    assert!(
        ids.contains(&"default") && ids.contains(&"smollm2-135m-instruct"),
        "{models}"
    );

    let response = client
        .post(format!("{gateway}/v1/chat/completions"))
        .bearer_auth(&root)
        .json(&json!({
            "model": "default", "stream": true, "temperature": 0, "max_tokens": 24,
            "stream_options": {"include_usage": true},
            "messages": [{"role": "system", "content": "You are a helpful assistant."}, {"role": "user", "content": "What is the capital of France?"}],
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let frames = sse_data(&response.text().await.unwrap());
    assert_eq!(frames.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = frames[..frames.len() - 1]
        .iter()
        .map(|f| serde_json::from_str(f).unwrap())
        .collect();
    let pieces: Vec<&str> = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    let text = pieces.concat();
    assert!(pieces.len() > 2, "streamed token by token: {pieces:?}");
    assert!(text.contains("Paris"), "{text}");
    let usage = &chunks.last().unwrap()["usage"];
    assert!(usage["prompt_tokens"].as_i64().unwrap() > 10, "{usage}");
    let completion = usage["completion_tokens"].as_i64().unwrap();
    assert!(completion > 2 && completion <= 24, "{usage}");
}

#[tokio::test]
async fn the_local_model_answers_in_a_json_schema_and_runs_a_tiny_project() {
    // The platform and its data directory live as long as the bindings.
    let Some(Rooted {
        platform: _platform,
        data: _data,
        gateway,
        client,
        root,
        ..
    }) = on_the_local_model().await
    else {
        return;
    };
    let g = |path: &str| format!("{gateway}{path}");

    // Structured output through the OpenAI-compatible route.
    let schema = json!({
        "type": "object", "required": ["city", "country", "population"],
        "properties": {
            "city": {"type": "string", "maxLength": 40},
            "country": {"type": "string", "maxLength": 40},
            "population": {"type": "integer", "minimum": 0},
        },
    });
    let (status, answer) = call(&client, Method::POST, &g("/v1/chat/completions"), &root, Some(json!({
        "model": "default", "temperature": 0,
        "response_format": {"type": "json_schema", "json_schema": {"name": "city", "schema": schema}},
        "messages": [{"role": "user", "content": "Describe the capital of France as JSON."}],
    }))).await;
    assert_eq!(status, 200, "{answer}");
    let text = answer["choices"][0]["message"]["content"].as_str().unwrap();
    let city: Value = serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"));
    assert!(
        jsonschema::validator_for(&schema).unwrap().is_valid(&city),
        "{city}"
    );
    assert_eq!(answer["choices"][0]["finish_reason"], "stop", "{answer}");
    // A format no model could follow is the caller's mistake, said before any model runs.
    let (status, problem) = call(
        &client,
        Method::POST,
        &g("/v1/chat/completions"),
        &root,
        Some(json!({
            "model": "default",
            "response_format": {"type": "json_schema", "json_schema": {"schema": schema}},
            "messages": [{"role": "user", "content": "hi"}],
        })),
    )
    .await;
    assert_eq!(status, 422, "{problem}");
    assert!(
        problem["error"]["details"]["fields"]["response_format.json_schema.name"].is_string(),
        "{problem}"
    );

    // A tiny project, from the goal to reviewed deliverables, with no key anywhere.
    let (status, started) = call(
        &client,
        Method::POST,
        &g("/v1/projects"),
        &root,
        Some(json!({
            "goal": "A one-page website about owls", "max_deliverables": 2, "max_revisions": 1,
        })),
    )
    .await;
    assert_eq!(status, 202, "{started}");
    let url = g(&format!(
        "/v1/projects/{}",
        started["project_id"].as_str().unwrap()
    ));
    let view = until(
        &client,
        &url,
        &root,
        "the tiny project did not end",
        Duration::from_secs(600),
        |view| somagent_common::runs::is_final(view["status"].as_str().unwrap_or_default()),
    )
    .await;
    eprintln!("the tiny project on the local model: {view:#}");
    // Quality aside, it went the whole way: planned by the schema at the first try,
    // each deliverable worked and scored, the bundle written.
    assert!(
        ["completed", "partial"].contains(&view["status"].as_str().unwrap()),
        "{view:#}"
    );
    assert_eq!(view["planning"]["attempts"], 1, "{view:#}");
    let deliverables = view["deliverables"].as_array().unwrap();
    assert!((1..=2).contains(&deliverables.len()), "{view:#}");
    for d in deliverables {
        assert!(
            ["completed", "failed"].contains(&d["state"].as_str().unwrap()),
            "{d:#}"
        );
        let score = d["score"]
            .as_u64()
            .unwrap_or_else(|| panic!("no score: {d:#}"));
        assert!(score <= 100, "{d:#}");
        assert!(d["tokens"].as_u64().unwrap() > 0, "{d:#}");
    }
    assert!(!view["bundle"].as_array().unwrap().is_empty(), "{view:#}");
}
