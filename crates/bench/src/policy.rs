//! Policy evaluation: the compiled default constitution evaluated by the engine in
//! process (and by OPA when SOMAGENT_TEST_OPA_URL is set), then `POST
//! /v1/policy/evaluate` through a running gateway, with distinct texts (every one
//! evaluated) and with one repeated text (answered from the decision cache).

use std::time::{Duration, Instant};

use serde_json::json;
use somagent_common::constitution::Constitution;
use somagent_policy::domain::rego::compile;
use somagent_policy::engine::{Engine, InProcess, Opa};

use crate::stats::Samples;

pub async fn in_process(count: usize) -> anyhow::Result<()> {
    let constitution = Constitution::default_document();
    let compiled = compile("bench-tenant", &constitution, "bench", &[]);
    let mut engines = vec![(
        "regorus, in process",
        Engine::InProcess(InProcess::default()),
    )];
    if let Ok(url) = std::env::var("SOMAGENT_TEST_OPA_URL") {
        engines.push(("OPA server (HTTP)", Engine::Opa(Opa::new(&url)?)));
    }
    println!("== policy evaluation of the default constitution ({count} distinct prompts)");
    for (label, engine) in engines {
        // Warm up (first parse, connection).
        engine
            .evaluate(
                &compiled,
                &compiled.input("prompt", "hello", "", &["operator"])?,
            )
            .await?;
        let mut samples = Vec::with_capacity(count);
        for i in 0..count {
            let text = format!(
                "Request {i}: summarise the quarterly report and draft three follow-up emails"
            );
            let input = compiled.input("prompt", &text, "", &["operator"])?;
            let started = Instant::now();
            let decision = engine.evaluate(&compiled, &input).await?;
            samples.push(started.elapsed());
            anyhow::ensure!(
                decision["allowed"] == true,
                "an unexpected denial: {decision}"
            );
        }
        println!("{label:<24} {}", Samples::new(samples).summary());
    }
    Ok(())
}

pub async fn through_gateway(gateway: &str, password: &str, seconds: u64) -> anyhow::Result<()> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()?;
    let token = crate::stats::admin_token(&client, gateway, password).await?;
    let url = format!("{gateway}/v1/policy/evaluate");
    println!("== POST /v1/policy/evaluate through the gateway ({seconds} s per run)");
    for (concurrency, distinct) in [(1, true), (64, true), (64, false)] {
        let deadline = Instant::now() + Duration::from_secs(seconds);
        let started = Instant::now();
        let tasks: Vec<_> = (0..concurrency)
            .map(|task| {
                let (client, url, token) = (client.clone(), url.clone(), token.clone());
                tokio::spawn(async move {
                    let mut samples = Vec::new();
                    let mut n = 0u64;
                    while Instant::now() < deadline {
                        n += 1;
                        let text = if distinct {
                            format!("task {task} request {n}: summarise the quarterly report")
                        } else {
                            "summarise the quarterly report".to_owned()
                        };
                        let t = Instant::now();
                        let ok = client
                            .post(&url)
                            .bearer_auth(&token)
                            .json(&json!({"action": "prompt", "text": text}))
                            .send()
                            .await
                            .is_ok_and(|r| r.status().is_success());
                        if ok {
                            samples.push(t.elapsed());
                        }
                    }
                    samples
                })
            })
            .collect();
        let mut all = Vec::new();
        for task in tasks {
            all.extend(task.await?);
        }
        let label = format!(
            "{concurrency} conn, {}",
            if distinct {
                "distinct texts"
            } else {
                "cached decision"
            }
        );
        println!(
            "{label:<28} {}  throughput {:>7.0} req/s",
            Samples::new(all.clone()).summary(),
            all.len() as f64 / started.elapsed().as_secs_f64()
        );
    }
    Ok(())
}
