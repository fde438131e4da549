//! With no upstream configured, chat runs on the local model (SmolLM2-135M-Instruct)
//! in process, streaming real tokens.

use serde_json::{Value, json};

use crate::chat::sse_data;
use crate::helpers::{Rooted, with_root_env};

#[tokio::test]
async fn the_local_model_answers_out_of_the_box_and_streams() {
    let Some(path) = crate::helpers::required_env("LOCAL_MODEL") else {
        return;
    };
    let Rooted {
        platform: _platform,
        gateway,
        client,
        root,
        data: _data,
        ..
    } = with_root_env(&[("SOMAGENT_SLM__LLM_MODEL_PATH", path.as_str())]).await;
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
