//! Tool calls through the platform against an API served here: what an invocation adds
//! (authentication, the schema check, limits, the policy decision, the credential,
//! the call log, audit and usage through the outbox) over calling the API directly, at
//! 1 and 64 connections; and session turns with one tool round on the scripted
//! upstream.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::Path;
use axum::routing::get;
use serde_json::{Value, json};

use crate::stats::{Samples, human};

/// A small API: one item by id.
async fn serve_api() -> anyhow::Result<String> {
    async fn item(Path(id): Path<String>) -> Json<Value> {
        Json(json!({"id": id, "name": "widget", "stock": 12}))
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    let app = axum::Router::new().route("/items/{id}", get(item));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(format!("http://{address}"))
}

fn openapi() -> Value {
    json!({
        "openapi": "3.0.3",
        "info": {"title": "Inventory", "version": "1"},
        "paths": {"/items/{id}": {"get": {"operationId": "get_item",
            "parameters": [{"name": "id", "in": "path", "required": true, "schema": {"type": "string"}}]}}}
    })
}

/// Runs `call` from `concurrency` tasks for `seconds`: the latencies and the failures.
async fn load<F, Fut>(concurrency: usize, seconds: u64, call: F) -> (Samples, usize, f64)
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let call = Arc::new(call);
    let failed = Arc::new(AtomicUsize::new(0));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let tasks: Vec<_> = (0..concurrency)
        .map(|i| {
            let (call, failed) = (call.clone(), failed.clone());
            tokio::spawn(async move {
                let mut samples = Vec::new();
                let mut n = 0;
                while Instant::now() < deadline {
                    n += 1;
                    let t = Instant::now();
                    if call(i * 1_000_000 + n).await {
                        samples.push(t.elapsed());
                    } else {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
                samples
            })
        })
        .collect();
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap_or_default());
    }
    let elapsed = started.elapsed().as_secs_f64();
    let per_second = all.len() as f64 / elapsed;
    (
        Samples::new(all),
        failed.load(Ordering::Relaxed),
        per_second,
    )
}

pub async fn run(gateway: &str, password: &str, seconds: u64) -> anyhow::Result<()> {
    let api = serve_api().await?;
    let llm = somagent_scripted_llm::ScriptedLlm::start_on(
        &std::env::var("SOMAGENT_BENCH_LLM_ADDR").unwrap_or_else(|_| "127.0.0.1:20999".into()),
    )
    .await?;
    let _ = llm.base_url();
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .build()?;
    let token = crate::stats::admin_token(&client, gateway, password).await?;
    let created = client
        .post(format!("{gateway}/v1/tools"))
        .bearer_auth(&token)
        .json(
            &json!({"id": "inventory", "openapi": openapi(), "base_url": api,
            "rate_limit_per_minute": 100_000_000, "price_micros": 10}),
        )
        .send()
        .await?;
    anyhow::ensure!(
        created.status().is_success(),
        "the tool was not created: {}",
        created.text().await?
    );

    println!(
        "== one tool call: the API directly vs POST /v1/tools/{{id}}/invoke ({seconds} s each)"
    );
    for concurrency in [1usize, 64] {
        let direct = {
            let (client, api) = (client.clone(), api.clone());
            load(concurrency, seconds, move |n| {
                let (client, api) = (client.clone(), api.clone());
                async move {
                    client
                        .get(format!("{api}/items/{n}"))
                        .send()
                        .await
                        .is_ok_and(|r| r.status().is_success())
                }
            })
            .await
        };
        let through = {
            let (client, gateway, token) = (client.clone(), gateway.to_owned(), token.clone());
            load(concurrency, seconds, move |n| {
                let (client, gateway, token) = (client.clone(), gateway.clone(), token.clone());
                async move {
                    client
                        .post(format!("{gateway}/v1/tools/inventory/invoke"))
                        .bearer_auth(&token)
                        .json(&json!({"action": "get_item", "arguments": {"id": n.to_string()}}))
                        .send()
                        .await
                        .is_ok_and(|r| r.status().is_success())
                }
            })
            .await
        };
        for (label, (samples, failed, rate)) in
            [("API directly", &direct), ("through the gateway", &through)]
        {
            println!(
                "{concurrency:>3} conns  {label:<20} {}  {rate:>8.0} calls/s  {failed} failed",
                samples.summary()
            );
        }
        println!(
            "{concurrency:>3} conns  added per call       p50 {:>9}  p99 {:>9}",
            human(
                through
                    .0
                    .percentile(50.0)
                    .saturating_sub(direct.0.percentile(50.0))
            ),
            human(
                through
                    .0
                    .percentile(99.0)
                    .saturating_sub(direct.0.percentile(99.0))
            ),
        );
    }

    println!("== session turns with one tool round (the model calls the tool, then answers)");
    let profile = client
        .put(format!("{gateway}/v1/model-profiles/tool-user"))
        .bearer_auth(&token)
        .json(&json!({"scope": "platform", "upstream": "default", "model": "tool-user"}))
        .send()
        .await?;
    anyhow::ensure!(profile.status().is_success(), "the tool-user profile");
    for concurrency in [1usize, 16] {
        let sessions =
            crate::stats::open_sessions(&client, gateway, &token, "tool-user", concurrency).await?;
        let sessions = Arc::new(sessions);
        let (client, gateway, token) = (client.clone(), gateway.to_owned(), token.clone());
        let (turns, failed, rate) = load(concurrency, seconds, move |n| {
            let (client, gateway, token, sessions) =
                (client.clone(), gateway.clone(), token.clone(), sessions.clone());
            async move {
                let session = &sessions[n / 1_000_000];
                let answer = client
                    .post(format!("{gateway}/v1/sessions/{session}/messages"))
                    .bearer_auth(&token)
                    .json(&json!({"content": format!("call inventory__get_item {{\"id\": \"{n}\"}}")}))
                    .send()
                    .await;
                match answer {
                    Ok(r) if r.status().is_success() => r
                        .json::<Value>()
                        .await
                        .is_ok_and(|v| v.to_string().contains("widget")),
                    _ => false,
                }
            }
        })
        .await;
        println!(
            "{concurrency:>3} sessions  turn {}  {rate:>6.1} turns/s  {failed} failed",
            turns.summary()
        );
    }
    Ok(())
}
