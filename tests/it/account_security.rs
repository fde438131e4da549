//! Account takeover paths an attacker would try: a password changed without proof, an
//! API key acting as its owner's login, an admin acting above their rank.

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{Backends, ROOT_PASSWORD, Rooted, login, with_root_on};
use crate::lifecycle::call;

const PASSWORD: &str = "a long user passphrase";

/// An API key's holder uses the API within its scopes, but never changes the account's
/// password or mints more keys, even with the current password in hand.
#[tokio::test]
async fn an_api_key_never_changes_a_password_or_makes_keys() {
    let Rooted {
        platform: _platform,
        gateway,
        client,
        root,
        data: _data,
        ..
    } = with_root_on(Backends::Embedded, &[]).await;
    let g = |path: &str| format!("{gateway}{path}");
    let (status, bob) = call(
        &client,
        Method::POST,
        &g("/v1/users"),
        &root,
        Some(json!({"username": "bob", "password": PASSWORD, "roles": ["admin"]})),
    )
    .await;
    assert_eq!(status, 201, "{bob}");
    let bob_id = bob["id"].as_str().unwrap().to_owned();
    let bob_token = login(&client, &gateway, "default", "bob", PASSWORD).await;
    let (status, made) = call(
        &client,
        Method::POST,
        &g("/v1/api-keys"),
        &bob_token,
        Some(
            json!({"name": "automation", "scopes": ["users:read", "users:write", "api_keys:own"], "password": PASSWORD}),
        ),
    )
    .await;
    assert_eq!(status, 201, "{made}");
    let key = made["key"].as_str().unwrap().to_owned();
    let with_key = |method: Method, path: &str, body: Value| {
        let request = client
            .request(method, g(path))
            .header("X-API-Key", &key)
            .json(&body);
        async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            (
                status,
                response.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    };
    // The key works for what it is scoped to.
    let (status, _) = with_key(Method::GET, "/v1/users", Value::Null).await;
    assert_eq!(status, 200);
    let (status, problem) = with_key(
        Method::PATCH,
        &format!("/v1/users/{bob_id}"),
        json!({"password": "a new long passphrase", "current_password": PASSWORD}),
    )
    .await;
    assert_eq!(status, 403, "{problem}");
    let (status, problem) = with_key(
        Method::POST,
        "/v1/api-keys",
        json!({"name": "another", "scopes": ["users:read"]}),
    )
    .await;
    assert_eq!(status, 403, "keys never mint keys: {problem}");
    // The same with the key's access token used as a bearer token.
    let exchanged: Value = client
        .post(g("/v1/auth/token"))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_secret", &key),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let key_token = exchanged["access_token"].as_str().unwrap();
    let (status, _) = call(
        &client,
        Method::PATCH,
        &g(&format!("/v1/users/{bob_id}")),
        key_token,
        Some(json!({"password": "a new long passphrase", "current_password": PASSWORD})),
    )
    .await;
    assert_eq!(status, 403);
    // Nor does it make logins of its own that would outlive it.
    let (status, problem) = with_key(
        Method::POST,
        "/v1/users",
        json!({"username": "backdoor", "password": "a long user passphrase", "roles": ["viewer"]}),
    )
    .await;
    assert_eq!(status, 403, "{problem}");
    // Bob's password is what it was; when he changes it, the keys made under the old
    // one stop working.
    let bob_token = login(&client, &gateway, "default", "bob", PASSWORD).await;
    let (status, _) = call(
        &client,
        Method::PATCH,
        &g(&format!("/v1/users/{bob_id}")),
        &bob_token,
        Some(json!({"password": "bob's brand new passphrase", "current_password": PASSWORD})),
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = with_key(Method::GET, "/v1/users", Value::Null).await;
    assert_eq!(status, 401, "a key made under the old password");
}

/// A second admin of the platform's own tenant cannot reset, disable, delete or demote
/// the platform admin, nor grant what they do not hold; the platform admin can.
#[tokio::test]
async fn nobody_acts_above_their_own_rank() {
    let Rooted {
        platform: _platform,
        gateway,
        client,
        root,
        data: _data,
        ..
    } = with_root_on(Backends::Embedded, &[]).await;
    let g = |path: &str| format!("{gateway}{path}");
    let me: Value = client
        .get(g("/v1/me"))
        .bearer_auth(&root)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let root_url = g(&format!("/v1/users/{}", me["subject"].as_str().unwrap()));
    let (status, second) = call(
        &client,
        Method::POST,
        &g("/v1/users"),
        &root,
        Some(json!({"username": "second", "password": PASSWORD, "roles": ["admin"]})),
    )
    .await;
    assert_eq!(status, 201, "{second}");
    let second_url = g(&format!("/v1/users/{}", second["id"].as_str().unwrap()));
    let second = login(&client, &gateway, "default", "second", PASSWORD).await;

    for body in [
        json!({"password": "taken over, for good"}),
        json!({"status": "disabled"}),
        json!({"roles": ["viewer"]}),
    ] {
        let (status, problem) = call(
            &client,
            Method::PATCH,
            &root_url,
            &second,
            Some(body.clone()),
        )
        .await;
        assert_eq!(status, 403, "{body}: {problem}");
        assert!(
            problem["error"]["details"]["capabilities_beyond_yours"]
                .as_array()
                .is_some_and(|c| c.contains(&json!("platform:admin"))),
            "{problem}"
        );
    }
    let (status, _) = call(&client, Method::DELETE, &root_url, &second, None).await;
    assert_eq!(status, 403);
    // The platform admin still logs in with the same password and keeps its rank.
    let root_again = login(&client, &gateway, "default", "admin", ROOT_PASSWORD).await;
    let (status, _) = call(&client, Method::GET, &g("/v1/tenants"), &root_again, None).await;
    assert_eq!(status, 200);

    // Granting what one does not hold.
    let (status, problem) = call(
        &client,
        Method::POST,
        &g("/v1/users"),
        &second,
        Some(json!({"username": "trusted", "password": PASSWORD, "roles": ["operator", "moderation:bypass"]})),
    )
    .await;
    assert_eq!(status, 403, "{problem}");
    let (status, plain) = call(
        &client,
        Method::POST,
        &g("/v1/users"),
        &second,
        Some(json!({"username": "plain", "password": PASSWORD, "roles": ["operator"]})),
    )
    .await;
    assert_eq!(status, 201, "{plain}");
    let plain_url = g(&format!("/v1/users/{}", plain["id"].as_str().unwrap()));
    for roles in [
        json!(["operator", "moderation:bypass"]),
        json!(["admin", "platform:admin"]),
    ] {
        let (status, problem) = call(
            &client,
            Method::PATCH,
            &plain_url,
            &second,
            Some(json!({"roles": roles})),
        )
        .await;
        assert_eq!(status, 403, "{roles}: {problem}");
    }
    // The platform admin may grant it; then the second admin, who lacks it, can no
    // longer manage that user.
    let (status, granted) = call(
        &client,
        Method::PATCH,
        &plain_url,
        &root_again,
        Some(json!({"roles": ["operator", "moderation:bypass"]})),
    )
    .await;
    assert_eq!(status, 200, "{granted}");
    let (status, _) = call(
        &client,
        Method::PATCH,
        &plain_url,
        &second,
        Some(json!({"status": "disabled"})),
    )
    .await;
    assert_eq!(status, 403);
    // Who outranks may act: the platform admin demotes the second admin.
    let (status, demoted) = call(
        &client,
        Method::PATCH,
        &second_url,
        &root_again,
        Some(json!({"roles": ["viewer"]})),
    )
    .await;
    assert_eq!(status, 200, "{demoted}");
    assert_eq!(demoted["roles"], json!(["viewer"]));
}
