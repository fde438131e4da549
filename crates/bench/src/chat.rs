//! Chat through the platform against a scripted OpenAI-compatible upstream started
//! here: what slm's output guard adds to each delta, time to first token added by the
//! platform over calling the upstream directly, and the whole-turn overhead of a session
//! turn (moderation, policy in and out, the workflow journal, messages, events) over the
//! upstream's own answer time, at 1, 10 and 100 concurrent sessions.

use std::time::{Duration, Instant};

use anyhow::Context;
use futures::StreamExt;
use serde_json::json;

use crate::stats::{Samples, human};

/// Time to the first content chunk of a streamed chat completion at `url`.
pub(crate) async fn first_token(
    client: &reqwest::Client,
    url: &str,
    token: Option<&str>,
    model: &str,
    text: &str,
) -> anyhow::Result<(Duration, Duration)> {
    let started = Instant::now();
    let mut request = client.post(url).json(&json!({
        "model": model, "stream": true,
        "messages": [{"role": "user", "content": text}],
    }));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await?.error_for_status()?;
    let mut body = response.bytes_stream();
    let mut first = None;
    let mut seen = String::new();
    while let Some(chunk) = body.next().await {
        seen.push_str(&String::from_utf8_lossy(&chunk?));
        if first.is_none() && seen.contains("\"content\":\"E") {
            first = Some(started.elapsed());
        }
    }
    Ok((first.context("no content arrived")?, started.elapsed()))
}

pub async fn run(gateway: &str, password: &str, seconds: u64) -> anyhow::Result<()> {
    crate::output_guard::run(seconds.min(5))?;
    let llm = somagent_scripted_llm::ScriptedLlm::start_on(
        &std::env::var("SOMAGENT_BENCH_LLM_ADDR").unwrap_or_else(|_| "127.0.0.1:20999".into()),
    )
    .await?;
    let direct = format!("{}/chat/completions", llm.base_url());
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(128)
        .build()?;
    let token = crate::stats::admin_token(&client, gateway, password).await?;
    let through = format!("{gateway}/v1/chat/completions");

    println!("== time to first token, streamed, 1 caller ({seconds} s each)");
    for (label, url, token) in [
        ("upstream directly", &direct, None),
        ("through the gateway", &through, Some(token.as_str())),
    ] {
        let deadline = Instant::now() + Duration::from_secs(seconds);
        let mut samples = Vec::new();
        let mut n = 0;
        while Instant::now() < deadline {
            n += 1;
            samples.push(
                first_token(&client, url, token, "scripted", &format!("question {n}"))
                    .await?
                    .0,
            );
        }
        println!("{label:<24} {}", Samples::new(samples).summary());
    }

    println!(
        "== session turns (POST /v1/sessions/{{id}}/messages, whole answer) vs the upstream's own answer"
    );
    for concurrency in [1usize, 10, 100] {
        let sessions =
            crate::stats::open_sessions(&client, gateway, &token, "scripted", concurrency).await?;
        let deadline = Instant::now() + Duration::from_secs(seconds);
        let started = Instant::now();
        let tasks: Vec<_> = sessions
            .into_iter()
            .map(|session| {
                let (client, gateway, token) = (client.clone(), gateway.to_owned(), token.clone());
                tokio::spawn(async move {
                    let mut samples = Vec::new();
                    let mut failed = 0usize;
                    let mut first_failure: Option<String> = None;
                    let mut n = 0;
                    while Instant::now() < deadline {
                        n += 1;
                        let t = Instant::now();
                        let answer = client
                            .post(format!("{gateway}/v1/sessions/{session}/messages"))
                            .bearer_auth(&token)
                            .json(&json!({"content": format!("turn {n} of the benchmark")}))
                            .send()
                            .await;
                        match answer {
                            Ok(r) if r.status().is_success() => samples.push(t.elapsed()),
                            Ok(r) => {
                                failed += 1;
                                let status = r.status();
                                let body = r.text().await.unwrap_or_default();
                                first_failure.get_or_insert_with(|| format!("{status} {body}"));
                            }
                            Err(e) => {
                                failed += 1;
                                first_failure.get_or_insert_with(|| e.to_string());
                            }
                        }
                    }
                    (samples, failed, first_failure)
                })
            })
            .collect();
        let (mut turns, mut failed, mut why) = (Vec::new(), 0, None);
        for task in tasks {
            let (samples, failures, first) = task.await?;
            turns.extend(samples);
            failed += failures;
            why = why.or(first);
        }
        if let Some(why) = why {
            println!("    first failed turn: {why}");
        }
        let elapsed = started.elapsed().as_secs_f64();
        // The upstream alone, at the same concurrency.
        let deadline = Instant::now() + Duration::from_secs(seconds.min(3));
        let tasks: Vec<_> = (0..concurrency)
            .map(|i| {
                let (client, direct) = (client.clone(), direct.clone());
                tokio::spawn(async move {
                    let mut samples = Vec::new();
                    let mut n = 0;
                    while Instant::now() < deadline {
                        n += 1;
                        if let Ok((_, total)) =
                            first_token(&client, &direct, None, "scripted", &format!("{i} {n}"))
                                .await
                        {
                            samples.push(total);
                        }
                    }
                    samples
                })
            })
            .collect();
        let mut upstream = Vec::new();
        for task in tasks {
            upstream.extend(task.await?);
        }
        let turns = Samples::new(turns);
        let upstream = Samples::new(upstream);
        println!(
            "{concurrency:>3} sessions  turn {}  ({:.0} turns/s, {failed} failed)  upstream alone p50 {}  → overhead p50 {} p99 {}",
            turns.summary(),
            turns.len() as f64 / elapsed,
            human(upstream.percentile(50.0)),
            human(
                turns
                    .percentile(50.0)
                    .saturating_sub(upstream.percentile(50.0))
            ),
            human(
                turns
                    .percentile(99.0)
                    .saturating_sub(upstream.percentile(99.0))
            ),
        );
    }
    Ok(())
}
