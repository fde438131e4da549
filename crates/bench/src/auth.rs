//! Token verification time in process, and authenticated `GET /v1/me` through a running
//! gateway at a fixed concurrency.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use somagent_common::auth::{
    Claims, SigningKey, TOKEN_AUDIENCE, TrustedIssuer, Verifier, builtin_mapping, jwks,
};
use somagent_common::config::CacheUrl;
use somagent_common::infra::cache::Cache;

use crate::stats::{Samples, peak_rss_mib};

/// Verifies one token `count` times against a JWKS served on loopback.
pub async fn verification(count: usize) -> anyhow::Result<()> {
    let key = Arc::new(SigningKey::generate()?);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let published = key.clone();
    let app = axum::Router::new().route(
        "/jwks",
        axum::routing::get(move || {
            let key = published.clone();
            async move { axum::Json(jwks([key.as_ref()])) }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    let cache = Cache::connect(&CacheUrl::Memory).await?;
    let verifier = Verifier::new(
        vec![TrustedIssuer {
            issuer: url.clone(),
            audience: TOKEN_AUDIENCE.into(),
            jwks_uri: Some(format!("{url}/jwks")),
            mapping: builtin_mapping(),
        }],
        Some(cache),
    );
    let now = somagent_common::clock::unix_now();
    let token = key.sign(&Claims {
        iss: url,
        sub: "bench-user".into(),
        aud: TOKEN_AUDIENCE.into(),
        exp: now + 3600,
        iat: now,
        nbf: Some(now),
        jti: uuid::Uuid::new_v4().to_string(),
        tenant: "bench".into(),
        username: Some("bench".into()),
        roles: vec!["operator".into()],
        capabilities: vec!["sessions:read".into(), "sessions:write".into()],
        act: None,
        amr: vec!["pwd".into()],
        key: None,
    })?;
    verifier
        .verify(&token)
        .await
        .context("the first verification")?;
    let mut samples = Vec::with_capacity(count);
    for _ in 0..count {
        let started = Instant::now();
        verifier.verify(&token).await?;
        samples.push(started.elapsed());
    }
    println!("== token verification (EdDSA, JWKS cached, revocation checked; {count} times)");
    println!("in process           {}", Samples::new(samples).summary());
    Ok(())
}

/// `GET /v1/me` with a bearer token from `concurrency` tasks for `seconds`.
pub async fn me_load(
    gateway: &str,
    password: &str,
    concurrency: usize,
    seconds: u64,
    label: &str,
) -> anyhow::Result<()> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .build()?;
    let token = crate::stats::admin_token(&client, gateway, password).await?;
    let url = format!("{gateway}/v1/me");
    // Warm up connections and caches.
    for _ in 0..200 {
        client
            .get(&url)
            .bearer_auth(&token)
            .send()
            .await?
            .error_for_status()?;
    }
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let (client, url, token) = (client.clone(), url.clone(), token.clone());
            tokio::spawn(async move {
                let mut samples = Vec::new();
                let mut failures = 0u64;
                while Instant::now() < deadline {
                    let t = Instant::now();
                    match client.get(&url).bearer_auth(&token).send().await {
                        Ok(r) if r.status().is_success() => {
                            let _ = r.bytes().await;
                            samples.push(t.elapsed());
                        }
                        _ => failures += 1,
                    }
                }
                (samples, failures)
            })
        })
        .collect();
    let mut all = Vec::new();
    let mut failures = 0;
    for task in tasks {
        let (samples, failed) = task.await?;
        all.extend(samples);
        failures += failed;
    }
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "{label:<20} {}  throughput {:>7.0} req/s  ({} requests, {failures} failed, {concurrency} connections)",
        Samples::new(all.clone()).summary(),
        all.len() as f64 / elapsed,
        all.len()
    );
    if let Some(rss) = peak_rss_mib() {
        println!("(load generator peak RSS {rss:.0} MiB)");
    }
    Ok(())
}
