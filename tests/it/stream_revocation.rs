//! A stream does not outlive its credential: revoking the token or disabling the user
//! ends open SSE and WebSocket streams, with a last event that says why.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use reqwest::Method;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::helpers::{Backends, Rooted, login, platform_profile, with_scripted_llm};
use crate::lifecycle::call;

const PASSWORD: &str = "a long user passphrase";

type Body = futures::stream::BoxStream<'static, reqwest::Result<axum::body::Bytes>>;

/// Reads the response into `text` until it holds `needle` (within 20 s).
async fn read_until(body: &mut Body, text: &mut String, needle: &str) {
    while !text.contains(needle) {
        let chunk = tokio::time::timeout(Duration::from_secs(20), body.next())
            .await
            .unwrap_or_else(|_| panic!("no {needle} in time: {text}"))
            .expect("the stream is open")
            .unwrap();
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
}

/// Reads the rest of the response into `text`; false if it had not ended within 4 s.
async fn read_to_end(body: &mut Body, text: &mut String) -> bool {
    tokio::time::timeout(Duration::from_secs(4), async {
        while let Some(chunk) = body.next().await {
            text.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
        }
    })
    .await
    .is_ok()
}

#[tokio::test]
async fn disabling_a_user_ends_their_open_streams() {
    let (
        _llm,
        Rooted {
            platform: _platform,
            gateway,
            client,
            root,
            data: _data,
            ..
        },
    ) = with_scripted_llm(Backends::Embedded, &[]).await;
    let g = |path: &str| format!("{gateway}{path}");
    // A model that takes its time: a word every 300 ms.
    platform_profile(&client, &gateway, &root, "slow-300").await;
    let (status, user) = call(
        &client,
        Method::POST,
        &g("/v1/users"),
        &root,
        Some(json!({"username": "watcher", "password": PASSWORD, "roles": ["operator"]})),
    )
    .await;
    assert_eq!(status, 201, "{user}");
    let user_url = g(&format!("/v1/users/{}", user["id"].as_str().unwrap()));
    let token = login(&client, &gateway, "default", "watcher", PASSWORD).await;
    let (status, session) = call(
        &client,
        Method::POST,
        &g("/v1/sessions"),
        &token,
        Some(json!({"model": "slow-300"})),
    )
    .await;
    assert_eq!(status, 201, "{session}");
    let id = session["session_id"].as_str().unwrap().to_owned();

    // A WebSocket following the session, and an SSE turn streaming into it.
    let ws_url = format!("{}/v1/ws", gateway.replacen("http", "ws", 1));
    let mut request = ws_url.as_str().into_client_request().unwrap();
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    let (mut socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    socket
        .send(Message::text(
            json!({"type": "subscribe", "session_id": id}).to_string(),
        ))
        .await
        .unwrap();
    let long = "one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen seventeen eighteen nineteen twenty";
    let response = client
        .post(g(&format!("/v1/sessions/{id}/messages")))
        .bearer_auth(&token)
        .header("accept", "text/event-stream")
        .json(&json!({"content": long}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut body: Body = response.bytes_stream().boxed();
    let mut text = String::new();
    read_until(&mut body, &mut text, "event: delta").await;

    // The admin disables the user mid-answer.
    let (status, _) = call(
        &client,
        Method::PATCH,
        &user_url,
        &root,
        Some(json!({"status": "disabled"})),
    )
    .await;
    assert_eq!(status, 200);

    // The SSE stream ends within a few seconds, long before the answer would, with an
    // `error` event naming why.
    let ended = read_to_end(&mut body, &mut text).await;
    assert!(
        ended,
        "the stream kept flowing after the user was disabled: {text}"
    );
    let last_error = text
        .split("\n\n")
        .filter(|e| e.contains("event: error"))
        .last()
        .unwrap_or_else(|| panic!("no error event: {text}"));
    assert!(last_error.contains("token_revoked"), "{last_error}");
    assert!(
        !text.contains("twenty"),
        "the whole answer went out: {text}"
    );

    // The WebSocket is told the same and closed.
    let closing = tokio::time::timeout(Duration::from_secs(4), async {
        let mut seen = Vec::new();
        while let Some(Ok(message)) = socket.next().await {
            if let Message::Text(body) = &message {
                let value: Value = serde_json::from_str(body).unwrap();
                if value["type"] == "error" {
                    seen.push(value);
                }
            }
            if message.is_close() {
                break;
            }
        }
        seen
    })
    .await
    .expect("the WebSocket closed after the user was disabled");
    assert!(
        closing.iter().any(|e| e["code"] == "token_revoked"),
        "{closing:?}"
    );
}

/// A streamed chat completion ends once its token is revoked, with an OpenAI-style
/// error chunk naming why.
#[tokio::test]
async fn revoking_a_token_ends_its_streamed_completion() {
    let (
        _llm,
        Rooted {
            platform: _platform,
            gateway,
            client,
            root,
            data: _data,
            ..
        },
    ) = with_scripted_llm(Backends::Embedded, &[]).await;
    platform_profile(&client, &gateway, &root, "slow-300").await;
    let long = "one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen seventeen eighteen nineteen twenty";
    let response = client
        .post(format!("{gateway}/v1/chat/completions"))
        .bearer_auth(&root)
        .json(&json!({"model": "slow-300", "stream": true, "messages": [{"role": "user", "content": long}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut body: Body = response.bytes_stream().boxed();
    let mut text = String::new();
    read_until(&mut body, &mut text, "\"content\"").await;
    let revoked = client
        .post(format!("{gateway}/v1/auth/revoke"))
        .form(&[("token", root.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), 200);
    let ended = read_to_end(&mut body, &mut text).await;
    assert!(
        ended,
        "the completion kept streaming after its token was revoked: {text}"
    );
    assert!(text.contains("token_revoked"), "{text}");
    assert!(
        !text.contains("twenty"),
        "the whole answer went out: {text}"
    );
}
