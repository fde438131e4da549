use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::routing::get;
use somagent_common::auth::{
    Actor, Capability, ClaimMapping, Claims, Role, SigningKey, TrustedIssuer, Verifier,
    builtin_mapping, jwks, revocation_key,
};
use somagent_common::config::CacheUrl;
use somagent_common::infra::cache::Cache;

const AUDIENCE: &str = "somagent";

#[derive(Clone)]
struct Published {
    url: String,
    keys: Arc<Mutex<Vec<SigningKey>>>,
    fetches: Arc<AtomicUsize>,
}

/// An OIDC issuer on loopback: discovery document and JWKS of the published keys.
async fn issuer() -> Published {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let published = Published {
        url,
        keys: Arc::new(Mutex::new(vec![SigningKey::generate().unwrap()])),
        fetches: Arc::default(),
    };
    let app = axum::Router::new()
        .route(
            "/.well-known/openid-configuration",
            get(|State(p): State<Published>| async move {
                axum::Json(
                    serde_json::json!({ "issuer": p.url, "jwks_uri": format!("{}/jwks", p.url) }),
                )
            }),
        )
        .route(
            "/jwks",
            get(|State(p): State<Published>| async move {
                p.fetches.fetch_add(1, Ordering::SeqCst);
                axum::Json(jwks(p.keys.lock().unwrap().iter()))
            }),
        )
        .with_state(published.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    published
}

use somagent_common::clock::unix_now as now;

fn claims(iss: &str) -> Claims {
    Claims {
        iss: iss.to_owned(),
        sub: "user-1".into(),
        aud: AUDIENCE.into(),
        exp: now() + 300,
        iat: now(),
        nbf: None,
        jti: uuid::Uuid::new_v4().to_string(),
        tenant: "acme".into(),
        username: Some("alice".into()),
        roles: vec!["operator".into()],
        capabilities: vec!["sessions:read".into(), "sessions:write".into()],
        act: None,
        amr: vec!["pwd".into()],
        key: None,
    }
}

fn trusting(p: &Published, mapping: ClaimMapping, cache: Option<Cache>) -> Verifier {
    let trusted = TrustedIssuer {
        issuer: p.url.clone(),
        audience: AUDIENCE.into(),
        jwks_uri: None,
        mapping,
    };
    Verifier::new(vec![trusted], cache).with_refresh_cooldown(Duration::from_millis(200))
}

fn sign(p: &Published, claims: &Claims) -> String {
    p.keys.lock().unwrap()[0].sign(claims).unwrap()
}

fn b64(value: &serde_json::Value) -> String {
    data_encoding::BASE64URL_NOPAD.encode(value.to_string().as_bytes())
}

#[tokio::test]
async fn a_valid_token_becomes_its_principal() {
    let p = issuer().await;
    let verifier = trusting(&p, builtin_mapping(), None);
    let mut c = claims(&p.url);
    c.act = Some(Actor {
        sub: "orchestrator".into(),
    });
    let principal = verifier.verify(&sign(&p, &c)).await.unwrap();
    assert_eq!(principal.tenant.as_str(), "acme");
    assert_eq!(principal.subject, "user-1");
    assert_eq!(principal.username.as_deref(), Some("alice"));
    assert_eq!(principal.actor.as_deref(), Some("orchestrator"));
    assert!(principal.roles.contains(&Role::Operator));
    // The built-in issuer's capabilities are exact: the role does not widen them.
    assert!(principal.can(Capability::SessionsWrite));
    assert!(!principal.can(Capability::ToolsInvoke));
    let denied = principal.require(Capability::UsersWrite).unwrap_err();
    assert_eq!(
        denied.body()["error"]["details"]["missing_capability"],
        "users:write"
    );
}

#[tokio::test]
async fn forged_and_stale_tokens_are_refused() {
    let p = issuer().await;
    let verifier = trusting(&p, builtin_mapping(), None);
    let good = sign(&p, &claims(&p.url));
    verifier.verify(&good).await.unwrap();
    let kid = p.keys.lock().unwrap()[0].kid().to_owned();
    let payload = b64(&serde_json::to_value(claims(&p.url)).unwrap());

    // alg: none, with and without a signature.
    let none = format!(
        "{}.{payload}.",
        b64(&serde_json::json!({"alg": "none", "kid": kid}))
    );
    assert!(verifier.verify(&none).await.is_err());
    // Algorithm confusion: HS256 "signed" with the public key as the shared secret.
    let jwk = p.keys.lock().unwrap()[0].jwk();
    let public = data_encoding::BASE64URL_NOPAD
        .decode(jwk["x"].as_str().unwrap().as_bytes())
        .unwrap();
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    header.kid = Some(kid.clone());
    let confused = jsonwebtoken::encode(
        &header,
        &claims(&p.url),
        &jsonwebtoken::EncodingKey::from_secret(&public),
    )
    .unwrap();
    assert_eq!(
        verifier.verify(&confused).await.unwrap_err().0,
        "token algorithm not accepted"
    );
    // A tampered payload: same signature, another tenant.
    let mut parts: Vec<&str> = good.split('.').collect();
    let mut evil = claims(&p.url);
    evil.tenant = "globex".into();
    let evil_payload = b64(&serde_json::to_value(evil).unwrap());
    parts[1] = &evil_payload;
    assert_eq!(
        verifier.verify(&parts.join(".")).await.unwrap_err().0,
        "token signature is invalid"
    );

    let cases: Vec<(Claims, &str)> = vec![
        (
            Claims {
                exp: now() - 60,
                ..claims(&p.url)
            },
            "token expired",
        ),
        (
            Claims {
                nbf: Some(now() + 120),
                ..claims(&p.url)
            },
            "token not valid yet",
        ),
        (
            Claims {
                aud: "someone-else".into(),
                ..claims(&p.url)
            },
            "token is for another audience",
        ),
        (
            Claims {
                iss: "http://evil.example".into(),
                ..claims(&p.url)
            },
            "token from an issuer that is not trusted",
        ),
        (
            Claims {
                tenant: "../other".into(),
                ..claims(&p.url)
            },
            "token names an invalid tenant",
        ),
    ];
    for (c, why) in cases {
        assert_eq!(verifier.verify(&sign(&p, &c)).await.unwrap_err().0, why);
    }
    // A key the issuer never published.
    let stranger = SigningKey::generate()
        .unwrap()
        .sign(&claims(&p.url))
        .unwrap();
    assert_eq!(
        verifier.verify(&stranger).await.unwrap_err().0,
        "token signed by an unknown key"
    );
    for garbage in ["", "a.b", "not-a-token", "a.b.c.d"] {
        assert!(verifier.verify(garbage).await.is_err(), "{garbage}");
    }
}

#[tokio::test]
async fn rotated_keys_are_picked_up_and_old_tokens_stay_valid() {
    let p = issuer().await;
    let verifier = trusting(&p, builtin_mapping(), None);
    let old = sign(&p, &claims(&p.url));
    verifier.verify(&old).await.unwrap();
    // Rotation: a new key signs from now on; the old one stays published.
    p.keys
        .lock()
        .unwrap()
        .insert(0, SigningKey::generate().unwrap());
    tokio::time::sleep(Duration::from_millis(250)).await;
    let new = sign(&p, &claims(&p.url));
    verifier.verify(&new).await.unwrap();
    verifier.verify(&old).await.unwrap();
    // Retired: once its tokens have expired the old key leaves the JWKS.
    p.keys.lock().unwrap().truncate(1);
    tokio::time::sleep(Duration::from_millis(250)).await;
    let stranger = SigningKey::generate()
        .unwrap()
        .sign(&claims(&p.url))
        .unwrap();
    assert!(
        verifier.verify(&stranger).await.is_err(),
        "triggers a refresh"
    );
    assert!(
        verifier.verify(&old).await.is_err(),
        "the retired key no longer verifies"
    );
}

#[tokio::test]
async fn made_up_key_ids_cannot_hammer_the_issuer() {
    let p = issuer().await;
    let verifier =
        trusting(&p, builtin_mapping(), None).with_refresh_cooldown(Duration::from_secs(60));
    for _ in 0..50 {
        let stranger = SigningKey::generate()
            .unwrap()
            .sign(&claims(&p.url))
            .unwrap();
        assert!(verifier.verify(&stranger).await.is_err());
    }
    assert_eq!(
        p.fetches.load(Ordering::SeqCst),
        1,
        "one fetch per cooldown"
    );
}

#[tokio::test]
async fn a_revoked_token_is_refused_at_once() {
    let p = issuer().await;
    let cache = Cache::connect(&CacheUrl::Memory).await.unwrap();
    let verifier = trusting(&p, builtin_mapping(), Some(cache.clone()));
    let c = claims(&p.url);
    let token = sign(&p, &c);
    verifier.verify(&token).await.unwrap();
    cache
        .set(
            &revocation_key(&c.jti),
            b"1",
            Some(Duration::from_secs(300)),
        )
        .await
        .unwrap();
    assert_eq!(
        verifier.verify(&token).await.unwrap_err().0,
        "token revoked"
    );
}

#[tokio::test]
async fn an_external_issuers_roles_map_to_capabilities() {
    let p = issuer().await;
    let mapping = ClaimMapping {
        roles_claim: "realm_access.roles".into(),
        ..ClaimMapping::default()
    };
    let verifier = trusting(&p, mapping, None);
    let mut token_claims = serde_json::to_value(claims(&p.url)).unwrap();
    token_claims["roles"] = serde_json::json!([]);
    token_claims["capabilities"] = serde_json::json!([]);
    token_claims["realm_access"] = serde_json::json!({ "roles": ["developer", "offline_access"] });
    token_claims["preferred_username"] = serde_json::json!("bob");
    let token = p.keys.lock().unwrap()[0].sign(&token_claims).unwrap();
    let principal = verifier.verify(&token).await.unwrap();
    assert!(principal.roles.contains(&Role::Developer));
    assert!(
        principal.can(Capability::CapsulesWrite),
        "a developer edits capsules"
    );
    assert!(!principal.can(Capability::UsersWrite));
    assert_eq!(principal.username.as_deref(), Some("bob"));
}

/// Keycloak (the realm in deploy/keycloak): its RS256 tokens verify through discovery,
/// and its realm roles and tenant attribute become the principal.
#[tokio::test]
async fn tokens_from_a_real_oidc_provider_verify() {
    let Some(issuer) = crate::helpers::real_url("OIDC") else {
        return;
    };
    let http = reqwest::Client::new();
    let token_url = format!("{issuer}/protocol/openid-connect/token");
    let grant = |form: Vec<(&'static str, &'static str)>| {
        let (http, token_url) = (http.clone(), token_url.clone());
        async move {
            let response = http.post(&token_url).form(&form).send().await.unwrap();
            assert!(
                response.status().is_success(),
                "{}",
                response.text().await.unwrap()
            );
            let body: serde_json::Value = response.json().await.unwrap();
            body["access_token"].as_str().unwrap().to_owned()
        }
    };
    let client = [
        ("client_id", "somagent-api"),
        ("client_secret", "somagent-api-secret"),
    ];
    let password = grant(
        [
            ("grant_type", "password"),
            ("username", "alice"),
            ("password", "alice-password-123"),
            ("scope", "openid"),
        ]
        .into_iter()
        .chain(client)
        .collect(),
    )
    .await;
    let service = grant(
        [("grant_type", "client_credentials")]
            .into_iter()
            .chain(client)
            .collect(),
    )
    .await;

    let trusted = |audience: &str| TrustedIssuer {
        issuer: issuer.clone(),
        audience: audience.into(),
        jwks_uri: None,
        mapping: ClaimMapping::default(),
    };
    let verifier = Verifier::new(vec![trusted("somagent")], None);
    let alice = verifier.verify(&password).await.unwrap();
    assert_eq!(alice.tenant.as_str(), "acme");
    assert_eq!(alice.username.as_deref(), Some("alice"));
    assert!(alice.roles.contains(&Role::Operator), "{alice:?}");
    assert!(alice.can(Capability::SessionsWrite) && !alice.can(Capability::UsersWrite));
    let robot = verifier.verify(&service).await.unwrap();
    assert!(
        robot.roles.contains(&Role::Viewer) && !robot.can(Capability::SessionsWrite),
        "{robot:?}"
    );

    // The same token for a verifier expecting another audience, and tampered with.
    let strict = Verifier::new(vec![trusted("another-api")], None);
    assert_eq!(
        strict.verify(&password).await.unwrap_err().0,
        "token is for another audience"
    );
    let mut parts: Vec<String> = password.split('.').map(str::to_owned).collect();
    let mut claims: serde_json::Value = serde_json::from_slice(
        &data_encoding::BASE64URL_NOPAD
            .decode(parts[1].as_bytes())
            .unwrap(),
    )
    .unwrap();
    claims["roles"] = serde_json::json!(["admin"]);
    parts[1] = b64(&claims);
    assert_eq!(
        verifier.verify(&parts.join(".")).await.unwrap_err().0,
        "token signature is invalid"
    );
}
