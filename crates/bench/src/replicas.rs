//! Live events between replicas: two platforms on the same servers, a session's turns
//! started through the first, and a WebSocket watcher on each. Every delta reaches the
//! first replica's watcher straight from the turn and the second's through Redis; the
//! difference between the two arrivals is what a watcher on another replica waits.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::stats::Samples;

/// Arrival time of each delta, by turn and its words (unique within a turn here), at
/// one watcher: a delta missed on the way does not shift the others.
type Arrivals = HashMap<(u64, String), Instant>;

async fn watch(
    gateway: &str,
    token: &str,
    session: &str,
) -> anyhow::Result<tokio::task::JoinHandle<anyhow::Result<Arrivals>>> {
    let mut request =
        format!("{}/v1/ws", gateway.replacen("http", "ws", 1)).into_client_request()?;
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {token}").parse()?);
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await?;
    ws.send(Message::text(
        json!({"type": "subscribe", "session_id": session}).to_string(),
    ))
    .await?;
    let reply = ws.next().await.context("the subscription reply")??;
    anyhow::ensure!(reply.to_text()?.contains("subscribed"), "{reply:?}");
    Ok(tokio::spawn(async move {
        let mut arrivals = Arrivals::new();
        // Ends when the session has been quiet for a while: the bench is done.
        while let Ok(Some(frame)) = tokio::time::timeout(Duration::from_secs(3), ws.next()).await {
            let at = Instant::now();
            let event: Value = serde_json::from_str(frame?.to_text()?)?;
            let turn = event["turn"].as_u64().unwrap_or(0);
            if event["type"] == "delta" {
                let words = event["data"]["content"].as_str().unwrap_or_default();
                arrivals.insert((turn, words.to_owned()), at);
            }
        }
        Ok(arrivals)
    }))
}

pub async fn run(gateways: &[String], password: &str, seconds: u64) -> anyhow::Result<()> {
    anyhow::ensure!(gateways.len() == 2, "name two gateways");
    let llm = somagent_scripted_llm::ScriptedLlm::start_on(
        &std::env::var("SOMAGENT_BENCH_LLM_ADDR").unwrap_or_else(|_| "127.0.0.1:20999".into()),
    )
    .await?;
    let client = reqwest::Client::new();
    let token = crate::stats::admin_token(&client, &gateways[0], password).await?;
    // Tokens 10 ms apart, as a fast model streams them; a platform profile makes the
    // scripted model callable by name.
    client
        .put(format!("{}/v1/model-profiles/slow-10", gateways[0]))
        .bearer_auth(&token)
        .json(&json!({"scope": "platform", "upstream": "default", "model": "slow-10"}))
        .send()
        .await?
        .error_for_status()?;
    let created: Value = client
        .post(format!("{}/v1/sessions", gateways[0]))
        .bearer_auth(&token)
        .json(&json!({"model": "slow-10"}))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let session = created["session_id"]
        .as_str()
        .context("a session id")?
        .to_owned();
    let here = watch(&gateways[0], &token, &session).await?;
    let there = watch(&gateways[1], &token, &session).await?;
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut turns = 0;
    while Instant::now() < deadline {
        turns += 1;
        client
            .post(format!("{}/v1/sessions/{session}/messages", gateways[0]))
            .bearer_auth(&token)
            .json(&json!({"content": format!("turn {turns}: one two three four five six seven eight nine ten")}))
            .send()
            .await?
            .error_for_status()?;
    }
    // The watchers stop once quiet.
    let (here, there) = (here.await??, there.await??);
    let mut gaps = Vec::new();
    let mut missed = 0;
    for (key, at) in &here {
        match there.get(key) {
            Some(relayed) => gaps.push(relayed.saturating_duration_since(*at)),
            None => missed += 1,
        }
    }
    let gaps = Samples::new(gaps);
    println!(
        "== live events between two replicas ({turns} turns, {} deltas)",
        here.len()
    );
    println!(
        "delta at a watcher on the other replica, later than on the turn's own: {}  ({missed} missed)",
        gaps.summary()
    );
    drop(llm);
    Ok(())
}
