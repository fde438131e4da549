//! A KAMACHIQ project end to end through a running platform, on a scripted upstream
//! whose every model call takes about `--model-ms`: a planner answering a DAG of
//! `--deliverables` deliverables (`--width` a wave), each done by a worker and reviewed.
//! Prints the wall time, the time the upstream alone needs on the critical path (the
//! plan, then each wave's slowest worker and review), the platform's own share of the
//! wall time, and the workflow steps it recorded per second.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::stats::{Samples, human};

pub struct Options {
    pub gateway: String,
    pub password: String,
    pub deliverables: usize,
    pub width: usize,
    pub model_ms: u64,
    pub label: String,
}

/// A plan of `n` deliverables in waves of `width`, each needing one of the wave before.
/// No whitespace: each answer streams as one chunk, so every call takes the same time.
fn plan(n: usize, width: usize) -> String {
    let deliverables: Vec<Value> = (0..n)
        .map(|i| {
            let deps: Vec<String> = if i >= width {
                vec![format!("d{}", i - width)]
            } else {
                Vec::new()
            };
            json!({"id": format!("d{i}"), "title": format!("D{i}"), "description": format!("build-d{i}"),
                   "acceptance_criteria": ["works"], "dependencies": deps, "estimate_tokens": 2000})
        })
        .collect();
    json!({ "deliverables": deliverables }).to_string()
}

/// How long the upstream alone takes to stream `prompt`'s answer, median of `n`.
async fn direct(
    client: &reqwest::Client,
    base: &str,
    prompt: &str,
    n: usize,
) -> anyhow::Result<Duration> {
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let started = Instant::now();
        let body = client
            .post(format!("{base}/chat/completions"))
            .json(
                &json!({"model": "rules", "stream": true, "stream_options": {"include_usage": true},
                          "messages": [{"role": "user", "content": prompt}]}),
            )
            .send()
            .await?
            .error_for_status()?
            .text()
            .await?;
        anyhow::ensure!(
            body.contains("[DONE]"),
            "the upstream did not finish: {body}"
        );
        samples.push(started.elapsed());
    }
    Ok(Samples::new(samples).percentile(50.0))
}

pub async fn run(options: Options) -> anyhow::Result<()> {
    let address =
        std::env::var("SOMAGENT_BENCH_LLM_ADDR").unwrap_or_else(|_| "127.0.0.1:20999".into());
    let llm = somagent_scripted_llm::ScriptedLlm::start_on(&address).await?;
    // Four events a call (the role, the answer, the finish, the usage), each after the
    // delay: about `model_ms` a call.
    let delay = Some(Duration::from_millis(options.model_ms / 4));
    llm.on_slowly(
        "Plan at most",
        &[&plan(options.deliverables, options.width)],
        delay,
    );
    llm.on_slowly("Score the work", &[r#"{"score":90,"notes":"ok"}"#], delay);
    llm.on_slowly("Deliverable:", &["done"], delay);
    let client = reqwest::Client::new();
    let base = llm.base_url();
    let plan_ms = direct(&client, &base, "Plan at most 100", 5).await?;
    let work_ms = direct(&client, &base, "Deliverable: D1", 5).await?;
    let review_ms = direct(&client, &base, "Score the work", 5).await?;
    let waves = options.deliverables.div_ceil(options.width);
    let critical = plan_ms + (work_ms + review_ms) * u32::try_from(waves).unwrap_or(u32::MAX);

    let token = crate::stats::admin_token(&client, &options.gateway, &options.password).await?;
    let started = Instant::now();
    let project: Value = client
        .post(format!("{}/v1/projects", options.gateway))
        .bearer_auth(&token)
        .json(
            &json!({"goal": "A benchmark project", "parallelism": options.width,
                      "max_deliverables": options.deliverables, "budget_tokens": 100_000_000}),
        )
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let id = project["project_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let view = loop {
        let view: Value = client
            .get(format!("{}/v1/projects/{id}", options.gateway))
            .bearer_auth(&token)
            .send()
            .await?
            .json()
            .await?;
        let status = view["status"].as_str().unwrap_or_default();
        if !matches!(
            status,
            "planning" | "running" | "starting" | "awaiting_approval" | "waiting_for_requeue"
        ) {
            break view;
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(1800),
            "the project did not end in 30 minutes"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let wall = started.elapsed();
    anyhow::ensure!(
        view["status"] == "completed",
        "the project ended {}: {view:#}",
        view["status"]
    );
    let (runs, steps) = steps_recorded(&client, &options.gateway, &token).await?;
    let own = wall.saturating_sub(critical);
    println!(
        "{}: {} deliverables in {waves} waves of {}: wall {} (upstream on the critical path {}: plan {}, work {}, review {} a call)",
        options.label,
        options.deliverables,
        options.width,
        human(wall),
        human(critical),
        human(plan_ms),
        human(work_ms),
        human(review_ms),
    );
    println!(
        "{}: platform's own share {:.1} % ({}); {runs} workflow runs, {steps} steps, {:.0} steps/s; {} model calls",
        options.label,
        own.as_secs_f64() / wall.as_secs_f64() * 100.0,
        human(own),
        steps as f64 / wall.as_secs_f64(),
        llm.requests().len() - 15,
    );
    Ok(())
}

/// The workflow runs of the tenant and the steps they recorded.
async fn steps_recorded(
    client: &reqwest::Client,
    gateway: &str,
    token: &str,
) -> anyhow::Result<(usize, usize)> {
    let mut cursor = String::new();
    let mut ids = Vec::new();
    loop {
        let mut url = format!("{gateway}/v1/workflows?limit=100");
        if !cursor.is_empty() {
            url.push_str(&format!("&cursor={cursor}"));
        }
        let page: Value = client
            .get(url)
            .bearer_auth(token)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        for run in page["workflows"].as_array().into_iter().flatten() {
            ids.push(run["id"].as_str().unwrap_or_default().to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(next) if !next.is_empty() => cursor = next.to_owned(),
            _ => break,
        }
    }
    let mut steps = 0;
    for id in &ids {
        let run: Value = client
            .get(format!("{gateway}/v1/workflows/{id}"))
            .bearer_auth(token)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        steps += run["steps"].as_array().map_or(0, Vec::len);
    }
    Ok((ids.len(), steps))
}
