//! Changing and removing tenants and users, as their admins would, on the embedded and
//! the distributed backends: every change takes effect at once for tokens already out.

use reqwest::{Client, Method};
use serde_json::{Value, json};

use crate::helpers::{Backends, Rooted, login, with_root_on};

const PASSWORD: &str = "a long user passphrase";

/// Sends `method url` with `token` (and a JSON body) and returns the status and body.
pub async fn call(
    client: &Client,
    method: Method,
    url: &str,
    token: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = client.request(method, url).bearer_auth(token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let body = response.json::<Value>().await.unwrap_or(Value::Null);
    (status, body)
}

/// The status of a password login.
async fn login_status(
    client: &Client,
    gateway: &str,
    tenant: &str,
    user: &str,
    password: &str,
) -> u16 {
    client
        .post(format!("{gateway}/v1/auth/token"))
        .form(&[
            ("grant_type", "password"),
            ("tenant", tenant),
            ("username", user),
            ("password", password),
        ])
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

async fn me_status(client: &Client, gateway: &str, token: &str) -> u16 {
    call(
        client,
        Method::GET,
        &format!("{gateway}/v1/me"),
        token,
        None,
    )
    .await
    .0
}

#[tokio::test]
async fn changed_and_removed_users_and_tenants_lose_their_tokens_at_once() {
    for backends in Backends::all() {
        users_and_tenants_change(backends).await;
    }
}

async fn users_and_tenants_change(backends: Backends) {
    let Rooted {
        platform: _platform,
        gateway,
        client,
        root,
        data: _data,
        ..
    } = with_root_on(backends, &[]).await;
    let (status, acme) = call(
        &client,
        Method::POST,
        &format!("{gateway}/v1/tenants"),
        &root,
        Some(json!({"slug": "acme", "display_name": "Acme", "admin": {"username": "alice", "password": PASSWORD}})),
    )
    .await;
    assert_eq!(status, 201, "{backends:?}: {acme}");
    let acme_id = acme["id"].as_str().unwrap().to_owned();
    let alice = login(&client, &gateway, "acme", "alice", PASSWORD).await;
    let (status, bob) = call(
        &client,
        Method::POST,
        &format!("{gateway}/v1/users"),
        &alice,
        Some(json!({"username": "bob", "password": PASSWORD, "roles": ["operator"]})),
    )
    .await;
    assert_eq!(status, 201, "{bob}");
    let bob_url = format!("{gateway}/v1/users/{}", bob["id"].as_str().unwrap());
    let login_bob = client
        .post(format!("{gateway}/v1/auth/token"))
        .form(&[
            ("grant_type", "password"),
            ("tenant", "acme"),
            ("username", "bob"),
            ("password", PASSWORD),
        ])
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    let bob_token = login_bob["access_token"].as_str().unwrap().to_owned();
    let bob_refresh = login_bob["refresh_token"].as_str().unwrap().to_owned();
    assert_eq!(me_status(&client, &gateway, &bob_token).await, 200);

    // New roles: the old token (old capabilities) stops working; a refresh carries on
    // with the new ones.
    let (status, changed) = call(
        &client,
        Method::PATCH,
        &bob_url,
        &alice,
        Some(json!({"roles": ["developer"]})),
    )
    .await;
    assert_eq!(
        (status, &changed["roles"]),
        (200, &json!(["developer"])),
        "{changed}"
    );
    assert_eq!(
        me_status(&client, &gateway, &bob_token).await,
        401,
        "{backends:?}: a token of the old roles"
    );
    let refreshed: Value = client
        .post(format!("{gateway}/v1/auth/token"))
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", &bob_refresh),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let bob_token = refreshed["access_token"]
        .as_str()
        .expect("a refreshed token")
        .to_owned();
    let bob_refresh = refreshed["refresh_token"].as_str().unwrap().to_owned();
    let (_, me) = call(
        &client,
        Method::GET,
        &format!("{gateway}/v1/me"),
        &bob_token,
        None,
    )
    .await;
    assert!(
        me["capabilities"]
            .as_array()
            .unwrap()
            .contains(&json!("capsules:write")),
        "{me}"
    );

    // Disabled: token, login and refresh all refused.
    let (status, _) = call(
        &client,
        Method::PATCH,
        &bob_url,
        &alice,
        Some(json!({"status": "disabled"})),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(me_status(&client, &gateway, &bob_token).await, 401);
    assert_eq!(
        login_status(&client, &gateway, "acme", "bob", PASSWORD).await,
        401
    );
    let refresh = client
        .post(format!("{gateway}/v1/auth/token"))
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", &bob_refresh),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(refresh.status(), 401, "a disabled user's login has ended");
    let (status, _) = call(
        &client,
        Method::PATCH,
        &bob_url,
        &alice,
        Some(json!({"status": "active"})),
    )
    .await;
    assert_eq!(status, 200);
    let bob_token = login(&client, &gateway, "acme", "bob", PASSWORD).await;

    // Bob changes his own password, but not his roles.
    let new_password = "bob's brand new passphrase";
    let (status, problem) = call(
        &client,
        Method::PATCH,
        &bob_url,
        &bob_token,
        Some(json!({"roles": ["admin"]})),
    )
    .await;
    assert_eq!(
        (
            status,
            problem["error"]["details"]["missing_capability"].as_str()
        ),
        (403, Some("users:write")),
        "{problem}"
    );
    // Changing one's own password takes the current one (OWASP ASVS 2.1.5).
    let (status, problem) = call(
        &client,
        Method::PATCH,
        &bob_url,
        &bob_token,
        Some(json!({"password": new_password})),
    )
    .await;
    assert_eq!(status, 422, "{problem}");
    assert!(
        problem["error"]["details"]["fields"]["current_password"].is_string(),
        "{problem}"
    );
    let (status, problem) = call(
        &client,
        Method::PATCH,
        &bob_url,
        &bob_token,
        Some(json!({"password": new_password, "current_password": "not bob's passphrase"})),
    )
    .await;
    assert_eq!(status, 403, "{problem}");
    assert_eq!(
        login_status(&client, &gateway, "acme", "bob", PASSWORD).await,
        200,
        "a refused change changes nothing"
    );
    let (status, _) = call(
        &client,
        Method::PATCH,
        &bob_url,
        &bob_token,
        Some(json!({"password": new_password, "current_password": PASSWORD})),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        login_status(&client, &gateway, "acme", "bob", PASSWORD).await,
        401
    );
    let bob_token = login(&client, &gateway, "acme", "bob", new_password).await;
    let (status, problem) = call(
        &client,
        Method::PATCH,
        &bob_url,
        &bob_token,
        Some(json!({"password": "short", "current_password": new_password})),
    )
    .await;
    assert_eq!(status, 422, "{problem}");

    // Malformed changes are refused and change nothing.
    let alice_url = format!(
        "{gateway}/v1/users/{}",
        me_of(&client, &gateway, &alice).await["subject"]
            .as_str()
            .unwrap()
    );
    for (body, expected) in [
        (json!({}), 422),
        (json!({"status": "sleeping"}), 422),
        (json!({"roles": []}), 422),
        (json!({"roles": ["root"]}), 422),
        (json!({"nickname": "b"}), 422),
    ] {
        let (status, problem) =
            call(&client, Method::PATCH, &bob_url, &alice, Some(body.clone())).await;
        assert_eq!(status, expected, "{body}: {problem}");
        assert!(problem["error"]["message"].is_string(), "{problem}");
    }
    let (_, unchanged) = call(&client, Method::GET, &bob_url, &alice, None).await;
    assert_eq!(
        (&unchanged["roles"], &unchanged["status"]),
        (&json!(["developer"]), &json!("active"))
    );
    // Nobody locks themself out.
    let (status, _) = call(
        &client,
        Method::PATCH,
        &alice_url,
        &alice,
        Some(json!({"roles": ["viewer"]})),
    )
    .await;
    assert_eq!(status, 409);
    let (status, _) = call(&client, Method::DELETE, &alice_url, &alice, None).await;
    assert_eq!(status, 409);

    // Deleted: gone, and so are its tokens.
    let (status, _) = call(&client, Method::DELETE, &bob_url, &alice, None).await;
    assert_eq!(status, 204);
    assert_eq!(me_status(&client, &gateway, &bob_token).await, 401);
    assert_eq!(
        call(&client, Method::GET, &bob_url, &alice, None).await.0,
        404
    );
    assert_eq!(
        call(&client, Method::DELETE, &bob_url, &alice, None)
            .await
            .0,
        404
    );
    assert_eq!(
        login_status(&client, &gateway, "acme", "bob", new_password).await,
        401
    );

    // The tenant: its admin renames it but cannot suspend it; the platform admin can.
    let acme_url = format!("{gateway}/v1/tenants/{acme_id}");
    let (status, renamed) = call(
        &client,
        Method::PATCH,
        &acme_url,
        &alice,
        Some(json!({"display_name": "Acme Corp"})),
    )
    .await;
    assert_eq!(
        (status, renamed["display_name"].as_str()),
        (200, Some("Acme Corp"))
    );
    let (status, _) = call(
        &client,
        Method::PATCH,
        &acme_url,
        &alice,
        Some(json!({"status": "suspended"})),
    )
    .await;
    assert_eq!(status, 403);
    let (status, suspended) = call(
        &client,
        Method::PATCH,
        &acme_url,
        &root,
        Some(json!({"status": "suspended"})),
    )
    .await;
    assert_eq!(
        (status, suspended["status"].as_str()),
        (200, Some("suspended"))
    );
    assert_eq!(
        me_status(&client, &gateway, &alice).await,
        401,
        "a suspended tenant's token"
    );
    assert_eq!(
        login_status(&client, &gateway, "acme", "alice", PASSWORD).await,
        401
    );
    let (status, _) = call(
        &client,
        Method::PATCH,
        &acme_url,
        &root,
        Some(json!({"status": "active"})),
    )
    .await;
    assert_eq!(status, 200);
    let alice = login(&client, &gateway, "acme", "alice", PASSWORD).await;
    assert_eq!(me_status(&client, &gateway, &alice).await, 200);

    // Deleting: not one's own tenant; afterwards the tenant is gone for everyone.
    let root_tenant = me_of(&client, &gateway, &root).await["tenant"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, _) = call(
        &client,
        Method::DELETE,
        &format!("{gateway}/v1/tenants/{root_tenant}"),
        &root,
        None,
    )
    .await;
    assert_eq!(status, 409);
    let (status, _) = call(&client, Method::DELETE, &acme_url, &alice, None).await;
    assert_eq!(status, 403, "a tenant admin does not delete their tenant");
    let (status, _) = call(&client, Method::DELETE, &acme_url, &root, None).await;
    assert_eq!(status, 204);
    assert_eq!(me_status(&client, &gateway, &alice).await, 401);
    assert_eq!(
        login_status(&client, &gateway, "acme", "alice", PASSWORD).await,
        401
    );
    assert_eq!(
        call(&client, Method::GET, &acme_url, &root, None).await.0,
        404
    );
    let (_, tenants) = call(
        &client,
        Method::GET,
        &format!("{gateway}/v1/tenants"),
        &root,
        None,
    )
    .await;
    assert!(
        !tenants["tenants"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["id"] == acme_id.as_str()),
        "{tenants}"
    );
    let (status, _) = call(
        &client,
        Method::POST,
        &format!("{gateway}/v1/tenants"),
        &root,
        Some(json!({"slug": "acme", "display_name": "Acme again", "admin": {"username": "zed", "password": PASSWORD}})),
    )
    .await;
    assert_eq!(status, 409, "a deleted tenant's slug stays taken");
}

pub async fn me_of(client: &Client, gateway: &str, token: &str) -> Value {
    call(
        client,
        Method::GET,
        &format!("{gateway}/v1/me"),
        token,
        None,
    )
    .await
    .1
}
