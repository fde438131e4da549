//! TOTP MFA through the gateway: enroll, verify, then password logins need a fresh code.

use serde_json::{Value, json};
use somagent_identity::domain::totp::{DIGITS, STEP_SECONDS, TotpSecret};

use crate::helpers::{Backends, Rooted, with_root_on};

const ALICE_PASSWORD: &str = "alice's long passphrase";

fn step_now() -> u64 {
    time::OffsetDateTime::now_utc().unix_timestamp() as u64 / STEP_SECONDS
}

#[tokio::test]
async fn once_mfa_is_on_a_login_needs_a_fresh_code() {
    for backends in Backends::all() {
        once_mfa_is_on_a_login_needs_a_fresh_code_on(backends).await;
    }
}

async fn once_mfa_is_on_a_login_needs_a_fresh_code_on(backends: Backends) {
    let Rooted {
        platform,
        gateway,
        client,
        root,
        data: _data,
        ..
    } = with_root_on(backends, &[]).await;
    let login = |tenant: &'static str,
                 username: &'static str,
                 password: &'static str,
                 totp: Option<String>| {
        let (client, url) = (client.clone(), format!("{gateway}/v1/auth/token"));
        async move {
            let mut form = vec![
                ("grant_type", "password".to_owned()),
                ("tenant", tenant.into()),
                ("username", username.into()),
                ("password", password.into()),
            ];
            if let Some(code) = totp {
                form.push(("totp", code));
            }
            let response = client.post(url).form(&form).send().await.unwrap();
            let status = response.status().as_u16();
            (
                status,
                response.json::<Value>().await.unwrap()["access_token"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            )
        }
    };
    let created = client
        .post(format!("{gateway}/v1/tenants"))
        .bearer_auth(&root)
        .json(&json!({"slug": "acme", "display_name": "Acme", "admin": {"username": "alice", "password": ALICE_PASSWORD}}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let (status, alice) = login("acme", "alice", ALICE_PASSWORD, None).await;
    assert_eq!(status, 200);
    let me: Value = client
        .get(format!("{gateway}/v1/me"))
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let alice_id = me["subject"].as_str().unwrap().to_owned();
    let mfa = |action: &'static str, token: String, id: String, body: Value| {
        let (client, url) = (
            client.clone(),
            format!("{gateway}/v1/users/{id}/mfa/{action}"),
        );
        async move {
            let response = client
                .post(url)
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

    // Enrolling takes the password: a stolen session alone cannot bind an authenticator.
    let (status, problem) = mfa("enroll", alice.clone(), alice_id.clone(), json!({})).await;
    assert_eq!(status, 422, "{problem}");
    let (status, problem) = mfa(
        "enroll",
        alice.clone(),
        alice_id.clone(),
        json!({"password": "not alice's passphrase"}),
    )
    .await;
    assert_eq!(
        (status, problem["error"]["code"].as_str()),
        (403, Some("forbidden")),
        "{problem}"
    );
    let (status, enrolled) = mfa(
        "enroll",
        alice.clone(),
        alice_id.clone(),
        json!({"password": ALICE_PASSWORD}),
    )
    .await;
    assert_eq!(status, 200, "{enrolled}");
    let recovery: Vec<String> = enrolled["recovery_codes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(recovery.len(), 10, "ten recovery codes: {enrolled}");
    let secret_text = enrolled["secret"].as_str().unwrap().to_owned();
    assert!(
        enrolled["otpauth_uri"]
            .as_str()
            .unwrap()
            .contains(&format!("secret={secret_text}"))
    );
    let secret = TotpSecret::from_base32(&secret_text).unwrap();
    // Not active until verified.
    assert_eq!(login("acme", "alice", ALICE_PASSWORD, None).await.0, 200);
    let wrong = secret.code_for_step(step_now() + 10, DIGITS);
    let (status, problem) = mfa(
        "verify",
        alice.clone(),
        alice_id.clone(),
        json!({"code": wrong}),
    )
    .await;
    assert_eq!(
        (status, problem["error"]["code"].as_str()),
        (422, Some("validation_failed"))
    );
    let (status, body) = mfa(
        "verify",
        alice.clone(),
        alice_id.clone(),
        json!({"code": secret.code_for_step(step_now(), DIGITS)}),
    )
    .await;
    assert_eq!(
        (status, &body["mfa_enabled"]),
        (200, &json!(true)),
        "{body}"
    );
    let user: Value = client
        .get(format!("{gateway}/v1/users/{alice_id}"))
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(user["mfa_enabled"], true);

    // The password alone no longer logs in; a fresh code does, once.
    assert_eq!(login("acme", "alice", ALICE_PASSWORD, None).await.0, 401);
    let fresh = secret.code_for_step(step_now() + 1, DIGITS);
    assert_eq!(
        login("acme", "alice", ALICE_PASSWORD, Some(fresh.clone()))
            .await
            .0,
        200
    );
    assert_eq!(
        login("acme", "alice", ALICE_PASSWORD, Some(fresh)).await.0,
        401,
        "a replayed code"
    );
    // Enrolling again while active is refused rather than silently resetting MFA.
    let (status, _) = mfa(
        "enroll",
        alice.clone(),
        alice_id.clone(),
        json!({"password": ALICE_PASSWORD}),
    )
    .await;
    assert_eq!(status, 409);
    // Nobody else sets up alice's MFA: the platform admin of another tenant sees no such user.
    let (status, _) = mfa(
        "enroll",
        root.clone(),
        alice_id.clone(),
        json!({"password": crate::helpers::ROOT_PASSWORD}),
    )
    .await;
    assert_eq!(status, 404);

    // A recovery code logs in in place of a TOTP code, once.
    assert_eq!(
        login("acme", "alice", ALICE_PASSWORD, Some(recovery[0].clone()))
            .await
            .0,
        200
    );
    assert_eq!(
        login("acme", "alice", ALICE_PASSWORD, Some(recovery[0].clone()))
            .await
            .0,
        401,
        "a spent recovery code"
    );

    // Turning MFA off takes the password and a current code; a token from an API key
    // never may, even with both.
    let (_, alice) = login("acme", "alice", ALICE_PASSWORD, Some(recovery[1].clone())).await;
    let key: Value = client
        .post(format!("{gateway}/v1/api-keys"))
        .bearer_auth(&alice)
        .json(&json!({"name": "ci", "scopes": ["users:read", "api_keys:own"], "password": ALICE_PASSWORD}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let key = key["key"].as_str().expect("an api key").to_owned();
    let disable = |token: Option<String>, api_key: Option<String>, body: Value| {
        let (client, url) = (client.clone(), format!("{gateway}/v1/auth/mfa"));
        async move {
            let mut request = client.delete(url).json(&body);
            if let Some(token) = token {
                request = request.bearer_auth(token);
            }
            if let Some(key) = api_key {
                request = request.header("X-API-Key", key);
            }
            let response = request.send().await.unwrap();
            (
                response.status().as_u16(),
                response.text().await.unwrap_or_default(),
            )
        }
    };
    let (status, body) = disable(
        None,
        Some(key.clone()),
        json!({"password": ALICE_PASSWORD, "code": recovery[2]}),
    )
    .await;
    assert_eq!(status, 403, "an API key turning MFA off: {body}");
    let (status, body) = disable(
        Some(alice.clone()),
        None,
        json!({"password": ALICE_PASSWORD, "code": "000000"}),
    )
    .await;
    assert_eq!(status, 403, "a wrong code: {body}");
    let (status, body) = disable(
        Some(alice.clone()),
        None,
        json!({"password": "not alice's passphrase", "code": recovery[2]}),
    )
    .await;
    assert_eq!(status, 403, "a wrong password: {body}");
    let (status, body) = disable(
        Some(alice.clone()),
        None,
        json!({"password": ALICE_PASSWORD, "code": recovery[2]}),
    )
    .await;
    assert_eq!(status, 204, "{body}");
    assert_eq!(login("acme", "alice", ALICE_PASSWORD, None).await.0, 200);
    drop(platform);
}
