//! `POST /v1/embeddings`: the official `openai` client against the gateway, on an
//! upstream's embedding model and on the local one (all-MiniLM-L6-v2 in process);
//! vectors of the wrong size refused, chat models refused, every call metered.

use serde_json::{Value, json};
use somagent_common::infra::events::{EventBus, topics};

use crate::helpers::{Backends, Rooted, published, with_scripted_llm};

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn floats(value: &Value) -> Vec<f32> {
    value
        .as_array()
        .unwrap_or_else(|| panic!("a vector: {value}"))
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

#[tokio::test]
async fn embeddings_through_the_official_openai_client_on_an_upstream_and_the_local_model() {
    let Some(pythonpath) = crate::helpers::required_env("OPENAI_PYTHONPATH") else {
        return;
    };
    let Some(local) = crate::helpers::required_env("EMBEDDING_MODEL") else {
        return;
    };
    let (
        _llm,
        Rooted {
            platform: _platform,
            gateway,
            client,
            root,
            data,
            events,
        },
    ) = with_scripted_llm(
        Backends::Embedded,
        &[
            ("SOMAGENT_SLM__EMBEDDING_MODEL", "hashed-64"),
            ("SOMAGENT_SLM__EMBEDDING_DIMENSIONS", "64"),
            ("SOMAGENT_SLM__EMBEDDING_PRICE", "100"),
            ("SOMAGENT_SLM__EMBEDDING_MODEL_DIR", local.as_str()),
        ],
    )
    .await;

    // Both embedding models are listed with their vector size.
    let models: Value = client
        .get(format!("{gateway}/v1/models"))
        .bearer_auth(&root)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let size_of = |id: &str| {
        models["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["id"] == id)
            .map(|m| m["dimensions"].clone())
    };
    assert_eq!(size_of("embeddings"), Some(json!(64)), "{models}");
    assert_eq!(size_of("all-minilm-l6-v2"), Some(json!(384)), "{models}");
    assert_eq!(size_of("default"), Some(Value::Null), "{models}");

    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/python/openai_embeddings.py");
    let mut command = std::process::Command::new("python3");
    command
        .arg(script)
        .env("PYTHONPATH", &pythonpath)
        .env("OPENAI_BASE_URL", format!("{gateway}/v1"))
        .env("OPENAI_API_KEY", &root);
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let seen: Value = serde_json::from_slice(&output.stdout).unwrap();

    // The upstream's vectors arrive exactly, through base64 and as floats alike.
    let expected = somagent_scripted_llm::hashed_vector("alpha beta gamma", 64);
    let vectors = &seen["default"]["vectors"];
    assert_eq!(floats(&vectors[0]), expected, "{seen}");
    assert_eq!(
        floats(&vectors[1]),
        somagent_scripted_llm::hashed_vector("delta", 64)
    );
    assert_eq!(seen["default"]["indexes"], json!([0, 1]));
    assert_eq!(seen["default"]["prompt_tokens"], 4);
    assert_eq!(seen["default"]["model"], "hashed-64");
    assert_eq!(floats(&seen["float"]), expected);
    assert_eq!(seen["smaller"], 16);

    // The local model: 384 numbers of unit length, closer for related sentences.
    let local: Vec<Vec<f32>> = seen["local"]
        .as_array()
        .unwrap()
        .iter()
        .map(floats)
        .collect();
    assert!(local.iter().all(|v| v.len() == 384));
    assert!((dot(&local[0], &local[0]) - 1.0).abs() < 1e-3);
    let (related, unrelated) = (dot(&local[0], &local[1]), dot(&local[0], &local[2]));
    assert!(related > unrelated + 0.3, "{related} vs {unrelated}");

    assert_eq!(seen["chat_model"]["status"], 422, "{seen}");

    // A server that answers vectors of another size than its profile says is refused,
    // never cut or padded.
    let response = client
        .put(format!("{gateway}/v1/model-profiles/misfit"))
        .bearer_auth(&root)
        .json(&json!({"scope": "platform", "upstream": "default", "model": "hashed-wrong-64", "dimensions": 64}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
    let response = client
        .post(format!("{gateway}/v1/embeddings"))
        .bearer_auth(&root)
        .json(&json!({"model": "misfit", "input": "one two"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 502);
    let problem: Value = response.json().await.unwrap();
    assert!(
        problem["error"]["message"]
            .as_str()
            .unwrap()
            .contains("63 numbers"),
        "{problem}"
    );

    // Bad input is a clear 422 naming the field; a chat model is not embedded.
    for (body, field) in [
        (json!({"model": "embeddings", "input": ""}), "input[0]"),
        (json!({"model": "embeddings", "input": []}), "input"),
        (
            json!({"model": "embeddings", "input": [[1, 2, 3]]}),
            "input",
        ),
        (
            json!({"model": "embeddings", "input": "x", "encoding_format": "hex"}),
            "encoding_format",
        ),
        (
            json!({"model": "all-minilm-l6-v2", "input": "x", "dimensions": 100}),
            "dimensions",
        ),
        (
            json!({"model": "embeddings", "input": "x", "dimensions": 65}),
            "dimensions",
        ),
        (json!({"model": "default", "input": "x"}), "model"),
    ] {
        let response = client
            .post(format!("{gateway}/v1/embeddings"))
            .bearer_auth(&root)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 422, "{body}");
        let problem: Value = response.json().await.unwrap();
        assert!(
            problem["error"]["details"]["fields"].get(field).is_some(),
            "{body}: {problem}"
        );
    }
    let response = client
        .post(format!("{gateway}/v1/embeddings"))
        .json(&json!({"input": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);

    // Every call was metered: the upstream's at its price, the local one's tokens.
    let bus = EventBus::connect(&events, data.path()).await.unwrap();
    let usage = published(&bus, topics::BILLING_USAGE).await;
    let upstream: Vec<_> = usage
        .iter()
        .filter(|e| e.data["profile"] == "embeddings")
        .collect();
    assert_eq!(upstream.len(), 3, "{usage:?}");
    assert_eq!(upstream[0].data["prompt_tokens"], 4);
    assert_eq!(
        upstream[0].data["cost_micros"], 1,
        "4 tokens at 100 per 1,000, rounded up"
    );
    let local = usage
        .iter()
        .find(|e| e.data["profile"] == "all-minilm-l6-v2")
        .expect("the local model's call was metered");
    assert!(
        local.data["prompt_tokens"].as_i64().unwrap() >= 20,
        "{:?}",
        local.data
    );
}
