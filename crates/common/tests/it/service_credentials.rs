//! Service credentials and audiences: each service's credential is the documented HMAC
//! of identity's root (the contract deployers and the Helm chart rely on), proves that
//! one service only, and a token meant for one service is refused by another.

use aws_lc_rs::hmac;
use somagent_common::auth::{
    Claims, ISSUER_KEY_FILE, ServiceIssuerKey, SigningKey, Verifier, builtin_issuer, jwks,
};
use somagent_common::config::CommonConfig;
use somagent_common::service::{POLICY, SLM};

#[test]
fn a_credential_is_the_documented_hmac_and_proves_one_service_only() {
    let root = ServiceIssuerKey::new("a root only identity holds");
    let expected = data_encoding::BASE64URL_NOPAD.encode(
        hmac::sign(
            &hmac::Key::new(hmac::HMAC_SHA256, b"a root only identity holds"),
            b"somagent service credential v1\0orchestrator",
        )
        .as_ref(),
    );
    let orchestrator = root.credential_for("orchestrator");
    assert_eq!(orchestrator.expose(), expected);
    assert!(root.verifies("orchestrator", orchestrator.expose()));
    // The gateway's credential is not the orchestrator's, nor is another root's.
    let gateway = root.credential_for("gateway");
    assert!(!root.verifies("orchestrator", gateway.expose()));
    let other_root = ServiceIssuerKey::new("another root");
    assert!(!other_root.verifies("orchestrator", orchestrator.expose()));
    assert!(!root.verifies("orchestrator", ""));
    assert!(!root.verifies("orchestrator", "not base64 at all!"));
    assert!(!format!("{root:?}{orchestrator:?}").contains(&expected));
}

#[test]
fn on_one_machine_the_root_is_made_once_readable_by_its_owner_only() {
    let dir = tempfile::tempdir().unwrap();
    let first = ServiceIssuerKey::load(dir.path()).unwrap();
    let again = ServiceIssuerKey::load(dir.path()).unwrap();
    assert_eq!(
        first.credential_for("slm").expose(),
        again.credential_for("slm").expose()
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join(ISSUER_KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}

#[tokio::test]
async fn a_service_refuses_a_token_meant_for_another() {
    let key = SigningKey::generate().unwrap();
    let set = jwks(std::iter::once(&key));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let identity = format!("http://{}", listener.local_addr().unwrap());
    let app = axum::Router::new().route(
        "/.well-known/jwks.json",
        axum::routing::get(move || {
            let set = set.clone();
            async move { axum::Json(set) }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    let config = CommonConfig {
        public_url: Some("https://agents.example".into()),
        endpoints: [("identity".to_owned(), identity)].into(),
        ..CommonConfig::default()
    };
    let now = somagent_common::clock::unix_now();
    let token = |aud: &str| {
        key.sign(&Claims {
            iss: "https://agents.example".into(),
            sub: "user-1".into(),
            aud: aud.into(),
            exp: now + 300,
            iat: now,
            nbf: None,
            jti: uuid::Uuid::now_v7().to_string(),
            tenant: "acme".into(),
            username: None,
            roles: vec![],
            capabilities: vec!["policy:read".into()],
            act: None,
            amr: vec![],
            key: None,
        })
        .unwrap()
    };
    let policy = Verifier::new(vec![builtin_issuer(&config, &POLICY)], None);
    let slm = Verifier::new(vec![builtin_issuer(&config, &SLM)], None);
    // Users' own tokens pass everywhere; a service token only at its callee.
    for verifier in [&policy, &slm] {
        verifier.verify(&token("somagent")).await.unwrap();
    }
    policy.verify(&token("somagent:policy")).await.unwrap();
    slm.verify(&token("somagent:slm")).await.unwrap();
    assert_eq!(
        policy.verify(&token("somagent:slm")).await.unwrap_err().0,
        "token is for another audience"
    );
    assert_eq!(
        slm.verify(&token("somagent:policy")).await.unwrap_err().0,
        "token is for another audience"
    );
}
