//! `somagent status` and `somagent services`: what runs where, and is it ready.

use std::process::ExitCode;
use std::time::Duration;

use somagent_common::config::{self, CommonConfig};
use somagent_common::service::SERVICES;

pub fn services() -> ExitCode {
    let config = match config::load::<CommonConfig>() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("somagent: {e}");
            return ExitCode::from(2);
        }
    };
    for spec in SERVICES {
        println!(
            "{:<13} {:>5}  {}",
            spec.name,
            config.port(spec),
            spec.summary
        );
    }
    ExitCode::SUCCESS
}

pub async fn status(host: &str, json: bool) -> ExitCode {
    let config = match config::load::<CommonConfig>() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("somagent: {e}");
            return ExitCode::from(2);
        }
    };
    let client = match reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
    {
        Ok(client) => client,
        Err(e) => {
            eprintln!("somagent: cannot build an HTTP client: {e}");
            return ExitCode::FAILURE;
        }
    };
    let checks = SERVICES.iter().map(|spec| {
        let url = format!("http://{host}:{}/readyz", config.port(spec));
        let client = client.clone();
        async move {
            let outcome = match client.get(&url).send().await {
                Ok(response) => {
                    let ready = response.status().is_success();
                    let body: serde_json::Value = response.json().await.unwrap_or_default();
                    (
                        if ready { "ready" } else { "not_ready" },
                        body["checks"].clone(),
                    )
                }
                Err(e) if e.is_connect() => ("down", serde_json::json!("nothing listens there")),
                Err(e) => ("down", serde_json::json!(e.to_string())),
            };
            (spec, url, outcome)
        }
    });
    let results = futures::future::join_all(checks).await;
    let all_ready = results.iter().all(|(_, _, (state, _))| *state == "ready");
    if json {
        let report: Vec<_> = results
            .iter()
            .map(|(spec, url, (state, checks))| {
                serde_json::json!({ "service": spec.name, "url": url, "status": state, "checks": checks })
            })
            .collect();
        println!(
            "{}",
            serde_json::json!({ "ready": all_ready, "services": report })
        );
    } else {
        for (spec, url, (state, checks)) in &results {
            let detail = match checks {
                serde_json::Value::Object(map) => map
                    .iter()
                    .filter(|(_, v)| v.as_str() != Some("ok"))
                    .map(|(k, v)| format!("{k}: {}", v.as_str().unwrap_or_default()))
                    .collect::<Vec<_>>()
                    .join("; "),
                serde_json::Value::String(s) => s.clone(),
                _ => String::new(),
            };
            println!(
                "{:<13} {:<10} {}  {}",
                spec.name,
                state,
                url.trim_end_matches("/readyz"),
                detail
            );
        }
    }
    if all_ready {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
