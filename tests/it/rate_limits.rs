//! Request limits per API key and per tenant: over the limit is a 429 with
//! `Retry-After`, shared by every replica through the cache (checked on Redis too).

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{Backends, Rooted, login, with_root_on};
use crate::lifecycle::call;

const PASSWORD: &str = "a long user passphrase";

#[tokio::test]
async fn a_tenant_and_an_api_key_over_their_limits_get_429_with_retry_after() {
    for backends in Backends::all() {
        limits(backends).await;
    }
}

async fn limits(backends: Backends) {
    let Rooted {
        platform: _platform,
        gateway,
        client,
        root,
        data: _data,
        ..
    } = with_root_on(
        backends,
        &[
            ("SOMAGENT_GATEWAY__RATE_LIMIT_TENANT", "40"),
            ("SOMAGENT_GATEWAY__RATE_LIMIT_API_KEY", "5"),
        ],
    )
    .await;
    // A fresh tenant, so the counters are its own.
    let (status, _) = call(
        &client,
        Method::POST,
        &format!("{gateway}/v1/tenants"),
        &root,
        Some(json!({"slug": "busy", "display_name": "Busy", "admin": {"username": "admin", "password": PASSWORD}})),
    )
    .await;
    assert_eq!(status, 201);
    let admin = login(&client, &gateway, "busy", "admin", PASSWORD).await;
    let (status, key) = call(
        &client,
        Method::POST,
        &format!("{gateway}/v1/api-keys"),
        &admin,
        Some(json!({"name": "robot", "scopes": ["sessions:read"], "password": PASSWORD})),
    )
    .await;
    assert_eq!(status, 201);
    let key = key["key"].as_str().unwrap().to_owned();
    let with_key = || {
        client
            .get(format!("{gateway}/v1/me"))
            .header("x-api-key", &key)
            .send()
    };
    for n in 0..5 {
        assert_eq!(
            with_key().await.unwrap().status(),
            200,
            "{backends:?}: request {n}"
        );
    }
    let limited = with_key().await.unwrap();
    assert_eq!(limited.status(), 429, "{backends:?}");
    let wait: u64 = limited.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&wait), "{wait}");
    let problem: Value = limited.json().await.unwrap();
    assert_eq!(problem["error"]["code"], "rate_limited");
    assert!(
        problem["error"]["message"]
            .as_str()
            .unwrap()
            .contains("API key"),
        "{problem}"
    );

    // The key's limit is its own: the admin's token still works, until the tenant's
    // budget (40 a minute, the key's requests included) is spent.
    let mut answered = Vec::new();
    for _ in 0..40 {
        answered.push(
            call(
                &client,
                Method::GET,
                &format!("{gateway}/v1/me"),
                &admin,
                None,
            )
            .await
            .0,
        );
    }
    let ok = answered.iter().filter(|s| **s == 200).count();
    assert!(ok > 0 && ok < 40, "{answered:?}");
    assert!(
        answered.iter().all(|s| *s == 200 || *s == 429),
        "{answered:?}"
    );
    assert_eq!(*answered.last().unwrap(), 429);

    // Another tenant is not affected.
    assert_eq!(
        call(
            &client,
            Method::GET,
            &format!("{gateway}/v1/me"),
            &root,
            None
        )
        .await
        .0,
        200
    );
}
