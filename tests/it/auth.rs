//! Logging in through the gateway as a client would: the token endpoint, `/v1/me`, and
//! the issuer's discovery documents, on `somagent up`.

use somagent_common::auth::{TOKEN_AUDIENCE, TrustedIssuer, Verifier, builtin_mapping};

use crate::helpers::{
    Backends, Platform, ROOT_PASSWORD, Rooted, free_ports, login as admin_login, wait_ok,
    with_root_on,
};

const ADMIN_PASSWORD: &str = ROOT_PASSWORD;

#[tokio::test]
async fn the_bootstrap_admin_logs_in_and_sees_their_principal() {
    for backends in Backends::all() {
        the_bootstrap_admin_logs_in_and_sees_their_principal_on(backends).await;
    }
}

async fn the_bootstrap_admin_logs_in_and_sees_their_principal_on(backends: Backends) {
    let Rooted {
        platform,
        gateway,
        client,
        data: _data,
        ..
    } = with_root_on(backends, &[]).await;

    let login = client
        .post(format!("{gateway}/v1/auth/token"))
        .form(&[
            ("grant_type", "password"),
            ("tenant", "default"),
            ("username", "admin"),
            ("password", ADMIN_PASSWORD),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 200);
    assert_eq!(login.headers()["cache-control"], "no-store");
    let body: serde_json::Value = login.json().await.unwrap();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 900);
    let token = body["access_token"].as_str().unwrap().to_owned();

    let me: serde_json::Value = client
        .get(format!("{gateway}/v1/me"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["username"], "admin");
    assert_eq!(me["roles"], serde_json::json!(["admin"]));
    let caps: Vec<&str> = me["capabilities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    assert!(
        caps.contains(&"platform:admin") && caps.contains(&"users:write"),
        "{caps:?}"
    );
    assert!(!me["tenant"].as_str().unwrap().is_empty());
    let status: serde_json::Value = client
        .get(format!("{gateway}/v1/status"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        (status["service"].as_str(), status["state"].as_str()),
        (Some("gateway"), Some("ready"))
    );
    assert_eq!(status["tenant"], me["tenant"]);

    // JSON bodies work too.
    let json_login = client
        .post(format!("{gateway}/v1/auth/token"))
        .json(&serde_json::json!({"grant_type": "password", "tenant": "default", "username": "admin", "password": ADMIN_PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(json_login.status(), 200);

    // Anyone can verify the platform's tokens from its discovery document alone.
    let discovery: serde_json::Value = client
        .get(format!("{gateway}/.well-known/openid-configuration"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(discovery["issuer"], gateway.as_str());
    let outsider = Verifier::new(
        vec![TrustedIssuer {
            issuer: gateway.clone(),
            audience: TOKEN_AUDIENCE.into(),
            jwks_uri: None,
            mapping: builtin_mapping(),
        }],
        None,
    );
    let principal = outsider.verify(&token).await.unwrap();
    assert_eq!(principal.username.as_deref(), Some("admin"));
    drop(platform);
}

#[tokio::test]
async fn bad_logins_and_bad_tokens_get_clear_refusals() {
    for backends in Backends::all() {
        bad_logins_and_bad_tokens_get_clear_refusals_on(backends).await;
    }
}

async fn bad_logins_and_bad_tokens_get_clear_refusals_on(backends: Backends) {
    let Rooted {
        platform,
        gateway,
        client,
        data: _data,
        ..
    } = with_root_on(backends, &[]).await;
    let token_url = format!("{gateway}/v1/auth/token");

    let attempt = |form: Vec<(&'static str, &'static str)>| {
        let (client, url) = (client.clone(), token_url.clone());
        async move {
            let response = client.post(url).form(&form).send().await.unwrap();
            let status = response.status().as_u16();
            (status, response.json::<serde_json::Value>().await.unwrap())
        }
    };
    let wrong_password = attempt(vec![
        ("grant_type", "password"),
        ("tenant", "default"),
        ("username", "admin"),
        ("password", "not the password"),
    ])
    .await;
    let no_such_user = attempt(vec![
        ("grant_type", "password"),
        ("tenant", "default"),
        ("username", "nobody"),
        ("password", "whatever it is"),
    ])
    .await;
    let no_such_tenant = attempt(vec![
        ("grant_type", "password"),
        ("tenant", "globex"),
        ("username", "admin"),
        ("password", ADMIN_PASSWORD),
    ])
    .await;
    for (status, body) in [&wrong_password, &no_such_user, &no_such_tenant] {
        assert_eq!(*status, 401, "{body}");
        assert_eq!(body["error"]["code"], "unauthorized");
    }
    // The three refusals are the same: they do not tell which part was wrong.
    assert_eq!(wrong_password.1, no_such_user.1);
    assert_eq!(wrong_password.1, no_such_tenant.1);
    let (status, body) = attempt(vec![
        ("grant_type", "password"),
        ("tenant", "default"),
        ("username", "admin"),
    ])
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (422, Some("validation_failed")),
        "{body}"
    );
    let (status, body) = attempt(vec![("grant_type", "implicit")]).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("bad_request")),
        "{body}"
    );
    let raw = client
        .post(&token_url)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status(), 400);

    let me = format!("{gateway}/v1/me");
    let anonymous = client.get(&me).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);
    assert_eq!(
        anonymous.headers()["www-authenticate"],
        "Bearer realm=\"somagent\""
    );
    for bad in ["garbage", "a.b.c", "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0."] {
        let response = client.get(&me).bearer_auth(bad).send().await.unwrap();
        assert_eq!(response.status(), 401, "{bad}");
        let challenge = response.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(challenge.contains("error=\"invalid_token\""), "{challenge}");
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "unauthorized");
    }
    // A token signed by a key the platform never published.
    let stranger = somagent_common::auth::SigningKey::generate().unwrap();
    let forged = stranger
        .sign(&serde_json::json!({"iss": gateway, "sub": "x", "aud": "somagent", "exp": 4_000_000_000_i64, "tenant": "t"}))
        .unwrap();
    assert_eq!(
        client
            .get(&me)
            .bearer_auth(forged)
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    drop(platform);
}

#[tokio::test]
async fn repeated_failed_logins_are_refused_for_a_while() {
    for backends in Backends::all() {
        repeated_failed_logins_are_refused_for_a_while_on(backends).await;
    }
}

async fn repeated_failed_logins_are_refused_for_a_while_on(backends: Backends) {
    let Rooted {
        platform,
        gateway,
        client,
        data: _data,
        ..
    } = with_root_on(backends, &[]).await;
    let login = |username: &str, password: &'static str| {
        let (client, url, username) = (
            client.clone(),
            format!("{gateway}/v1/auth/token"),
            username.to_owned(),
        );
        async move {
            client
                .post(url)
                .form(&[
                    ("grant_type", "password"),
                    ("tenant", "default"),
                    ("username", &username),
                    ("password", password),
                ])
                .send()
                .await
                .unwrap()
        }
    };
    for _ in 0..5 {
        assert_eq!(login("admin", "a wrong password").await.status(), 401);
    }
    // The account is now locked for the window, even with the right password.
    let locked = login("admin", ADMIN_PASSWORD).await;
    assert_eq!(locked.status(), 429);
    let retry_after: u64 = locked.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=300).contains(&retry_after), "{retry_after}");
    let body: serde_json::Value = locked.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limited");
    // Other accounts are not locked by it, until the address itself has failed too often.
    for i in 0..15 {
        assert_eq!(
            login(&format!("someone-{i}"), "a wrong password")
                .await
                .status(),
            401
        );
    }
    assert_eq!(
        login("yet-another", "a wrong password").await.status(),
        429,
        "the address is over its limit"
    );
    drop(platform);
}

#[tokio::test]
async fn a_revoked_token_stops_working_at_once_and_the_revocation_is_audited() {
    for backends in Backends::all() {
        a_revoked_token_stops_working_at_once_and_the_revocation_is_audited_on(backends).await;
    }
}

async fn a_revoked_token_stops_working_at_once_and_the_revocation_is_audited_on(
    backends: Backends,
) {
    use somagent_common::infra::events::{EventBus, topics};

    let Rooted {
        platform,
        gateway,
        client,
        data,
        events,
        ..
    } = with_root_on(backends, &[]).await;
    let login =
        || async { admin_login(&client, &gateway, "default", "admin", ADMIN_PASSWORD).await };
    let failed = client
        .post(format!("{gateway}/v1/auth/token"))
        .form(&[
            ("grant_type", "password"),
            ("tenant", "default"),
            ("username", "admin"),
            ("password", "not it at all"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(failed.status(), 401);
    let (token, other) = (login().await, login().await);
    let me = format!("{gateway}/v1/me");
    assert_eq!(
        client
            .get(&me)
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    let revoke = |value: String| {
        let (client, url) = (client.clone(), format!("{gateway}/v1/auth/revoke"));
        async move {
            client
                .post(url)
                .form(&[("token", value)])
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(revoke(token.clone()).await, 200);
    let refused = client.get(&me).bearer_auth(&token).send().await.unwrap();
    assert_eq!(refused.status(), 401);
    let body: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["message"], "token revoked");
    // Only that token: another login of the same user still works.
    assert_eq!(
        client
            .get(&me)
            .bearer_auth(&other)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    // Revoking again, or revoking garbage, is not an error (RFC 7009).
    assert_eq!(revoke(token.clone()).await, 200);
    assert_eq!(revoke("not-a-token".into()).await, 200);
    let missing = client
        .post(format!("{gateway}/v1/auth/revoke"))
        .form(&[("token_type_hint", "access_token")])
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 422);

    // The revocation is an audit event, and the token is not in it.
    let bus = EventBus::connect(&events, data.path()).await.unwrap();
    let mut audit = bus.subscribe("e2e-audit", &[topics::AUDIT]).await.unwrap();
    let mut logins = Vec::new();
    let event = loop {
        // A Kafka consumer group takes seconds to join.
        let delivery = tokio::time::timeout(std::time::Duration::from_secs(30), audit.next())
            .await
            .unwrap()
            .unwrap();
        if delivery.event.kind == "identity.login" {
            logins.push(delivery.event.data["outcome"].as_str().unwrap().to_owned());
            assert!(!delivery.event.data.to_string().contains(ADMIN_PASSWORD));
        }
        if delivery.event.kind == "auth.token_revoked" {
            break delivery.event;
        }
    };
    assert_eq!(
        logins,
        ["success", "failure", "success", "success"],
        "each login attempt is audited"
    );
    assert_eq!(event.data["action"], "revoke");
    assert_eq!(event.source, "gateway");
    let text = serde_json::to_string(&event).unwrap();
    assert!(
        !text.contains(&token),
        "the token leaked into the audit event"
    );
    drop(platform);
}

// External OIDC users (Keycloak) are in `external_users`.

#[tokio::test]
async fn refresh_tokens_rotate_and_a_reused_one_revokes_the_login() {
    for backends in Backends::all() {
        refresh_tokens_rotate_and_a_reused_one_revokes_the_login_on(backends).await;
    }
}

async fn refresh_tokens_rotate_and_a_reused_one_revokes_the_login_on(backends: Backends) {
    let Rooted {
        platform,
        gateway,
        client,
        data: _data,
        ..
    } = with_root_on(backends, &[]).await;
    let token_url = format!("{gateway}/v1/auth/token");
    let grant = |form: Vec<(&'static str, String)>| {
        let (client, url) = (client.clone(), token_url.clone());
        async move {
            let response = client.post(url).form(&form).send().await.unwrap();
            (
                response.status().as_u16(),
                response.json::<serde_json::Value>().await.unwrap(),
            )
        }
    };
    let password = || {
        vec![
            ("grant_type", "password".to_owned()),
            ("tenant", "default".into()),
            ("username", "admin".into()),
            ("password", ADMIN_PASSWORD.into()),
        ]
    };
    let refresh = |token: &str| {
        vec![("grant_type", "refresh_token"), ("refresh_token", token)]
            .into_iter()
            .map(|(k, v)| (k, v.to_owned()))
            .collect::<Vec<_>>()
    };

    let (status, first) = grant(password()).await;
    assert_eq!(status, 200);
    let r1 = first["refresh_token"].as_str().unwrap().to_owned();
    let (status, second) = grant(refresh(&r1)).await;
    assert_eq!(status, 200, "{second}");
    let r2 = second["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(r1, r2);
    let me = client
        .get(format!("{gateway}/v1/me"))
        .bearer_auth(second["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), 200);
    let (status, third) = grant(refresh(&r2)).await;
    assert_eq!(status, 200);
    let r3 = third["refresh_token"].as_str().unwrap().to_owned();

    // r1 was spent: presenting it again means it was copied, so the login ends.
    let (status, problem) = grant(refresh(&r1)).await;
    assert_eq!(status, 401);
    assert!(
        problem["error"]["message"]
            .as_str()
            .unwrap()
            .contains("already used"),
        "{problem}"
    );
    let (status, _) = grant(refresh(&r3)).await;
    assert_eq!(
        status, 401,
        "the newest token of the same login is revoked too"
    );

    // Another login is not affected, and revoking its refresh token ends it.
    let (_, other) = grant(password()).await;
    let r4 = other["refresh_token"].as_str().unwrap().to_owned();
    let revoked = client
        .post(format!("{gateway}/v1/auth/revoke"))
        .form(&[("token", r4.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), 200);
    assert_eq!(grant(refresh(&r4)).await.0, 401);
    assert_eq!(grant(refresh("srt_not-a-real-token")).await.0, 401);
    let (status, problem) = grant(vec![("grant_type", "refresh_token".to_owned())]).await;
    assert_eq!(
        (status, problem["error"]["code"].as_str()),
        (422, Some("validation_failed"))
    );
    drop(platform);
}

#[tokio::test]
async fn a_rotated_key_takes_over_while_old_tokens_stay_valid() {
    for backends in Backends::all() {
        a_rotated_key_takes_over_while_old_tokens_stay_valid_on(backends).await;
    }
}

async fn a_rotated_key_takes_over_while_old_tokens_stay_valid_on(backends: Backends) {
    let Rooted {
        platform,
        gateway,
        client,
        data: _data,
        ..
    } = with_root_on(backends, &[]).await;
    let login =
        || async { admin_login(&client, &gateway, "default", "admin", ADMIN_PASSWORD).await };
    let kid = |token: &str| {
        let header = data_encoding::BASE64URL_NOPAD
            .decode(token.split('.').next().unwrap().as_bytes())
            .unwrap();
        serde_json::from_slice::<serde_json::Value>(&header).unwrap()["kid"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let old = login().await;
    let me = format!("{gateway}/v1/me");
    assert_eq!(
        client
            .get(&me)
            .bearer_auth(&old)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    let rotated = client
        .post(format!("{gateway}/v1/auth/keys/rotate"))
        .bearer_auth(&old)
        .send()
        .await
        .unwrap();
    assert_eq!(rotated.status(), 200);
    let new_kid = rotated.json::<serde_json::Value>().await.unwrap()["kid"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(new_kid, kid(&old));
    let jwks: serde_json::Value = client
        .get(format!("{gateway}/.well-known/jwks.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let kids: Vec<&str> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap())
        .collect();
    assert!(
        kids.contains(&new_kid.as_str()) && kids.contains(&kid(&old).as_str()),
        "{kids:?}"
    );

    // Published first, signing a little later: by then every verifier can know it.
    tokio::time::sleep(std::time::Duration::from_secs(16)).await;
    let new = login().await;
    assert_eq!(kid(&new), new_kid);
    assert_eq!(
        client
            .get(&me)
            .bearer_auth(&new)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        client
            .get(&me)
            .bearer_auth(&old)
            .send()
            .await
            .unwrap()
            .status(),
        200,
        "old tokens stay valid"
    );
    drop(platform);
}

#[tokio::test]
async fn browsers_get_cors_for_configured_origins_only_and_huge_bodies_are_refused() {
    let data = tempfile::tempdir().unwrap();
    let ports = free_ports();
    let platform = Platform::start_with(
        data.path(),
        &ports,
        &[
            (
                "SOMAGENT_IDENTITY__BOOTSTRAP_ADMIN_PASSWORD",
                ADMIN_PASSWORD,
            ),
            ("SOMAGENT_GATEWAY__CORS_ORIGINS", "https://app.example"),
        ],
    );
    let gateway = platform.addresses["gateway"].clone();
    let client = reqwest::Client::new();
    wait_ok(&client, &format!("{gateway}/readyz")).await;
    let preflight = |origin: &'static str| {
        client
            .request(reqwest::Method::OPTIONS, format!("{gateway}/v1/me"))
            .header("origin", origin)
            .header("access-control-request-method", "GET")
            .header("access-control-request-headers", "authorization")
            .send()
    };
    let allowed = preflight("https://app.example").await.unwrap();
    assert_eq!(
        allowed.headers()["access-control-allow-origin"],
        "https://app.example"
    );
    assert!(
        allowed.headers()["access-control-allow-headers"]
            .to_str()
            .unwrap()
            .contains("authorization")
    );
    let other = preflight("https://evil.example").await.unwrap();
    assert!(other.headers().get("access-control-allow-origin").is_none());

    let huge = serde_json::json!({"username": "x".repeat(2 * 1024 * 1024), "password": "p", "roles": ["viewer"]});
    let token = { admin_login(&client, &gateway, "default", "admin", ADMIN_PASSWORD).await };
    let refused = client
        .post(format!("{gateway}/v1/users"))
        .bearer_auth(&token)
        .json(&huge)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 413);
    let problem: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(problem["error"]["code"], "payload_too_large");
    drop(platform);
}
