//! API keys through the gateway: made once, narrowed to their scopes, usable wherever a
//! bearer token is, revoked at once, invisible across tenants.

use serde_json::{Value, json};

use crate::helpers::{Backends, Rooted, login, with_root_on};

#[tokio::test]
async fn an_api_key_acts_with_its_scopes_until_revoked() {
    for backends in Backends::all() {
        an_api_key_acts_with_its_scopes_until_revoked_on(backends).await;
    }
}

async fn an_api_key_acts_with_its_scopes_until_revoked_on(backends: Backends) {
    let Rooted {
        platform,
        gateway: gw,
        client,
        root,
        data: _data,
        ..
    } = with_root_on(backends, &[]).await;
    let tenant = json!({"slug": "acme", "display_name": "Acme", "admin": {"username": "alice", "password": "alice's long passphrase"}});
    assert_eq!(
        client
            .post(format!("{gw}/v1/tenants"))
            .bearer_auth(&root)
            .json(&tenant)
            .send()
            .await
            .unwrap()
            .status(),
        201
    );
    let alice = login(&client, &gw, "acme", "alice", "alice's long passphrase").await;
    let bob_user =
        json!({"username": "bob", "password": "bob's long passphrase", "roles": ["operator"]});
    assert_eq!(
        client
            .post(format!("{gw}/v1/users"))
            .bearer_auth(&alice)
            .json(&bob_user)
            .send()
            .await
            .unwrap()
            .status(),
        201
    );
    let bob = login(&client, &gw, "acme", "bob", "bob's long passphrase").await;
    let keys = format!("{gw}/v1/api-keys");

    let make = |token: String, mut body: Value| {
        let (client, keys) = (client.clone(), keys.clone());
        if body.get("password").is_none() {
            body["password"] = json!("bob's long passphrase");
        }
        async move {
            let response = client
                .post(keys)
                .bearer_auth(token)
                .json(&body)
                .send()
                .await
                .unwrap();
            (
                response.status().as_u16(),
                response.json::<Value>().await.unwrap(),
            )
        }
    };
    let (status, made) = make(
        bob.clone(),
        json!({"name": "ci reader", "scopes": ["sessions:read"]}),
    )
    .await;
    assert_eq!(status, 201, "{made}");
    let key = made["key"].as_str().unwrap().to_owned();
    assert!(key.starts_with("sak_") && key.contains(made["prefix"].as_str().unwrap()));
    // A key outlasts the login that makes it: a stolen access token alone makes none.
    let (status, problem) = make(
        bob.clone(),
        json!({"name": "stolen", "scopes": ["sessions:read"], "password": "not bob's passphrase"}),
    )
    .await;
    assert_eq!(status, 403, "{problem}");
    for (body, why) in [
        (
            json!({"name": "too much", "scopes": ["users:write"]}),
            "beyond",
        ),
        (
            json!({"name": "typo", "scopes": ["sessions:reed"]}),
            "unknown capability",
        ),
        (json!({"name": "nothing", "scopes": []}), "at least one"),
        (
            json!({"name": "no proof", "scopes": ["sessions:read"], "password": ""}),
            "password",
        ),
        (
            json!({"name": "stale", "scopes": ["sessions:read"], "expires_at": "2020-01-01T00:00:00Z"}),
            "future",
        ),
    ] {
        let (status, problem) = make(bob.clone(), body).await;
        assert_eq!(status, 422, "{problem}");
        assert!(
            problem["error"]["message"].as_str().unwrap().contains(why),
            "{problem}"
        );
    }

    // The key works wherever a bearer token does, with its scopes only.
    let me: Value = client
        .get(format!("{gw}/v1/me"))
        .header("x-api-key", &key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["username"], "bob");
    assert_eq!(me["capabilities"], json!(["sessions:read"]));
    let exchanged = client
        .post(format!("{gw}/v1/auth/token"))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_secret", key.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(exchanged.status(), 200);
    let exchanged: Value = exchanged.json().await.unwrap();
    assert_eq!(exchanged["scope"], "sessions:read");
    // A token obtained with the key: it dies with the key (below).
    let key_token = exchanged["access_token"].as_str().unwrap().to_owned();
    // With only sessions:read it cannot even list keys (that needs api_keys:own).
    assert_eq!(
        client
            .get(&keys)
            .header("x-api-key", &key)
            .send()
            .await
            .unwrap()
            .status(),
        403
    );

    // Listing shows prefixes and use, never the key.
    let listed: Value = client
        .get(&keys)
        .bearer_auth(&bob)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let entry = &listed["api_keys"][0];
    assert_eq!(entry["name"], "ci reader");
    assert!(entry.get("key").is_none() && !listed.to_string().contains(&key));
    assert!(entry["last_used_at"].is_string(), "{entry}");
    // The tenant's admin sees bob's keys; the platform admin of another tenant does not.
    let alices_view: Value = client
        .get(&keys)
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(alices_view["api_keys"].as_array().unwrap().len(), 1);
    let roots_view: Value = client
        .get(&keys)
        .bearer_auth(&root)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(roots_view["api_keys"].as_array().unwrap().is_empty());
    let key_id = entry["id"].as_str().unwrap();
    assert_eq!(
        client
            .delete(format!("{keys}/{key_id}"))
            .bearer_auth(&root)
            .send()
            .await
            .unwrap()
            .status(),
        404
    );

    // Revoked: refused at once.
    assert_eq!(
        client
            .delete(format!("{keys}/{key_id}"))
            .bearer_auth(&bob)
            .send()
            .await
            .unwrap()
            .status(),
        204
    );
    let refused = client
        .get(format!("{gw}/v1/me"))
        .header("x-api-key", &key)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    assert_eq!(
        refused.json::<Value>().await.unwrap()["error"]["message"],
        "invalid API key"
    );
    // So is a token obtained with the key before, though it had not expired.
    assert_eq!(
        client
            .get(format!("{gw}/v1/me"))
            .bearer_auth(&key_token)
            .send()
            .await
            .unwrap()
            .status(),
        401,
        "a token of a revoked key"
    );
    assert_eq!(
        client
            .delete(format!("{keys}/{key_id}"))
            .bearer_auth(&bob)
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    assert_eq!(
        client
            .get(format!("{gw}/v1/me"))
            .header("x-api-key", "sak_made_up")
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    drop(platform);
}
