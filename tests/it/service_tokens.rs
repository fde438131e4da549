//! Services acting for a user (DESIGN §1.4): with the platform's service key a service
//! gets a short-lived token that names the user and itself; without the key, or for a
//! user who can no longer act, it gets nothing.

use reqwest::Method;
use serde_json::json;
use somagent_common::auth::{SERVICE_KEY_HEADER, ServiceKey};
use somagent_common::proto::identity::v1 as pb;
use somagent_common::proto::identity::v1::identity_service_client::IdentityServiceClient;

use crate::helpers::{Rooted, login, with_root};
use crate::lifecycle::{call, me_of};

const PASSWORD: &str = "a long user passphrase";

#[tokio::test]
async fn a_service_acts_for_a_user_with_a_short_lived_token_only_with_the_service_key() {
    let Rooted {
        platform,
        gateway,
        client,
        root,
        data,
        ..
    } = with_root().await;
    let (_, acme) = call(
        &client,
        Method::POST,
        &format!("{gateway}/v1/tenants"),
        &root,
        Some(json!({"slug": "acme", "display_name": "Acme", "admin": {"username": "alice", "password": PASSWORD}})),
    )
    .await;
    let alice = login(&client, &gateway, "acme", "alice", PASSWORD).await;
    let (_, bob) = call(
        &client,
        Method::POST,
        &format!("{gateway}/v1/users"),
        &alice,
        Some(json!({"username": "bob", "password": PASSWORD, "roles": ["operator"]})),
    )
    .await;
    let bob_id = bob["id"].as_str().unwrap().to_owned();
    let tenant = acme["id"].as_str().unwrap().to_owned();
    let bob_token = login(&client, &gateway, "acme", "bob", PASSWORD).await;

    let mut identity = IdentityServiceClient::connect(platform.addresses["identity"].clone())
        .await
        .unwrap();
    // `somagent up` made the key in its data directory, readable by its owner only.
    let key = ServiceKey::load(data.path()).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(data.path().join("service-key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let by_subject = |service: &str, caps: &[&str]| pb::IssueServiceTokenRequest {
        service: service.into(),
        tenant: tenant.clone(),
        subject: bob_id.clone(),
        capabilities: caps.iter().map(|c| (*c).to_owned()).collect(),
        ..Default::default()
    };

    // Without the key, or with a wrong one: refused.
    let refused = identity
        .issue_service_token(by_subject("orchestrator", &[]))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);
    let mut wrong = tonic::Request::new(by_subject("orchestrator", &[]));
    wrong
        .metadata_mut()
        .insert(SERVICE_KEY_HEADER, "not-the-key".parse().unwrap());
    assert_eq!(
        identity
            .issue_service_token(wrong)
            .await
            .unwrap_err()
            .code(),
        tonic::Code::Unauthenticated
    );
    let unknown_service = identity
        .issue_service_token(key.attach(tonic::Request::new(by_subject("mallory", &[]))))
        .await
        .unwrap_err();
    assert_eq!(unknown_service.code(), tonic::Code::InvalidArgument);

    // With it: a token for bob, naming the service, short-lived, narrowed on request.
    let issued = identity
        .issue_service_token(key.attach(tonic::Request::new(by_subject(
            "orchestrator",
            &["sessions:read", "sessions:write", "users:write"],
        ))))
        .await
        .unwrap()
        .into_inner();
    assert!(issued.expires_in <= 300, "{}", issued.expires_in);
    assert!(issued.refresh_token.is_empty());
    let me = me_of(&client, &gateway, &issued.access_token).await;
    assert_eq!(me["subject"], bob_id.as_str());
    assert_eq!(me["actor"], "service:orchestrator");
    assert_eq!(
        me["capabilities"],
        json!(["sessions:read", "sessions:write"]),
        "never more than bob holds: {me}"
    );

    // From bob's own token: his capabilities, and it must be a valid token.
    let request = pb::IssueServiceTokenRequest {
        service: "slm".into(),
        on_behalf_of_token: bob_token.clone(),
        ..Default::default()
    };
    let issued = identity
        .issue_service_token(key.attach(tonic::Request::new(request)))
        .await
        .unwrap()
        .into_inner();
    let me = me_of(&client, &gateway, &issued.access_token).await;
    assert_eq!(
        (me["subject"].as_str(), me["actor"].as_str()),
        (Some(bob_id.as_str()), Some("service:slm"))
    );
    assert!(
        me["capabilities"]
            .as_array()
            .unwrap()
            .contains(&json!("models:use")),
        "{me}"
    );
    let forged = pb::IssueServiceTokenRequest {
        service: "slm".into(),
        on_behalf_of_token: format!("{bob_token}x"),
        ..Default::default()
    };
    assert_eq!(
        identity
            .issue_service_token(key.attach(tonic::Request::new(forged)))
            .await
            .unwrap_err()
            .code(),
        tonic::Code::Unauthenticated
    );

    // Bob disabled: no service acts for him any more, and its earlier token is void.
    let (status, _) = call(
        &client,
        Method::PATCH,
        &format!("{gateway}/v1/users/{bob_id}"),
        &alice,
        Some(json!({"status": "disabled"})),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        call(
            &client,
            Method::GET,
            &format!("{gateway}/v1/me"),
            &issued.access_token,
            None
        )
        .await
        .0,
        401
    );
    let gone = identity
        .issue_service_token(key.attach(tonic::Request::new(by_subject("orchestrator", &[]))))
        .await
        .unwrap_err();
    assert_eq!(gone.code(), tonic::Code::PermissionDenied, "{gone:?}");
}
