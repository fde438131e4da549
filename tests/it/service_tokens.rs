//! Services acting for a user (DESIGN §1.4): each service proves which one it is with
//! its own credential (derived from identity's root) and gets a short-lived token for
//! one callee, with no more than that caller may ask of it; the gateway gets none, and
//! a token meant for one service is refused by every other.

use reqwest::Method;
use serde_json::{Value, json};
use somagent_common::auth::{ISSUER_KEY_FILE, SERVICE_KEY_HEADER, ServiceIssuerKey};
use somagent_common::proto::identity::v1 as pb;
use somagent_common::proto::identity::v1::identity_service_client::IdentityServiceClient;
use somagent_common::proto::policy::v1 as ppb;
use somagent_common::proto::policy::v1::policy_service_client::PolicyServiceClient;
use somagent_common::proto::slm::v1 as spb;
use somagent_common::proto::slm::v1::slm_service_client::SlmServiceClient;

use crate::helpers::{Rooted, login, with_root};
use crate::lifecycle::call;

const PASSWORD: &str = "a long user passphrase";

/// The claims of a token, read without checking it (the services check it below).
fn claims_of(token: &str) -> Value {
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(
        &data_encoding::BASE64URL_NOPAD
            .decode(payload.as_bytes())
            .unwrap(),
    )
    .unwrap()
}

fn with_credential<T>(credential: &str, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert(SERVICE_KEY_HEADER, credential.parse().unwrap());
    request
}

fn bearer<T>(token: &str, message: T) -> tonic::Request<T> {
    somagent_common::auth::grpc::with_bearer(token, tonic::Request::new(message))
}

fn prompt() -> ppb::EvaluateRequest {
    ppb::EvaluateRequest {
        action: "prompt".into(),
        text: "Summarise the quarterly report, please.".into(),
        ..Default::default()
    }
}

#[tokio::test]
async fn each_service_gets_tokens_only_for_its_own_callees_and_needs() {
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
    let mut policy = PolicyServiceClient::connect(platform.addresses["policy"].clone())
        .await
        .unwrap();
    let mut slm = SlmServiceClient::connect(platform.addresses["slm"].clone())
        .await
        .unwrap();
    // `somagent up` made the root in its data directory, readable by its owner only.
    let root_file = data.path().join(ISSUER_KEY_FILE);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&root_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let issuer_key = ServiceIssuerKey::new(std::fs::read_to_string(&root_file).unwrap().trim());
    let credential = |service: &str| issuer_key.credential_for(service).expose().to_owned();
    let orchestrator = credential("orchestrator");
    let ask = |service: &str, callee: &str, caps: &[&str]| pb::IssueServiceTokenRequest {
        service: service.into(),
        callee: callee.into(),
        tenant: tenant.clone(),
        subject: bob_id.clone(),
        capabilities: caps.iter().map(|c| (*c).to_owned()).collect(),
        ..Default::default()
    };
    let refusal = |r: Result<tonic::Response<pb::TokenResponse>, tonic::Status>| {
        let status = r.unwrap_err();
        (status.code(), status.message().to_owned())
    };

    // No credential, a made-up one, or another service's under the orchestrator's
    // name: refused.
    let (code, _) = refusal(
        identity
            .issue_service_token(ask("orchestrator", "slm", &[]))
            .await,
    );
    assert_eq!(code, tonic::Code::Unauthenticated);
    for wrong in ["not-the-key", &credential("gateway"), &credential("slm")] {
        let (code, message) = refusal(
            identity
                .issue_service_token(with_credential(wrong, ask("orchestrator", "slm", &[])))
                .await,
        );
        assert_eq!(code, tonic::Code::Unauthenticated, "{message}");
    }
    let (code, _) = refusal(
        identity
            .issue_service_token(with_credential(&orchestrator, ask("mallory", "slm", &[])))
            .await,
    );
    assert_eq!(code, tonic::Code::InvalidArgument);

    // The gateway, with its own genuine credential, gets no token for anyone.
    for callee in ["slm", "policy", "orchestrator", "identity"] {
        let (code, message) = refusal(
            identity
                .issue_service_token(with_credential(
                    &credential("gateway"),
                    ask("gateway", callee, &[]),
                ))
                .await,
        );
        assert_eq!(code, tonic::Code::PermissionDenied, "{message}");
        assert!(message.contains("may not act for users"), "{message}");
    }

    // The orchestrator: nothing for a callee outside its table, nothing outside what it
    // needs of slm; asked for more, it gets only what it needs (RFC 6749 §3.3).
    for callee in ["identity", "notification", "billing"] {
        let (code, message) = refusal(
            identity
                .issue_service_token(with_credential(
                    &orchestrator,
                    ask("orchestrator", callee, &[]),
                ))
                .await,
        );
        assert_eq!(code, tonic::Code::PermissionDenied, "{callee}: {message}");
    }
    let (code, message) = refusal(
        identity
            .issue_service_token(with_credential(
                &orchestrator,
                ask("orchestrator", "slm", &["users:write"]),
            ))
            .await,
    );
    assert_eq!(code, tonic::Code::PermissionDenied, "{message}");
    let for_slm = identity
        .issue_service_token(with_credential(
            &orchestrator,
            ask(
                "orchestrator",
                "slm",
                &["models:use", "users:write", "sessions:write"],
            ),
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(for_slm.expires_in <= 300, "{}", for_slm.expires_in);
    assert!(for_slm.refresh_token.is_empty());
    assert_eq!(for_slm.scope, "models:use");
    let claims = claims_of(&for_slm.access_token);
    assert_eq!(claims["aud"], "somagent:slm");
    assert_eq!(claims["sub"], bob_id.as_str());
    assert_eq!(claims["act"]["sub"], "service:orchestrator");
    assert_eq!(claims["capabilities"], json!(["models:use"]));

    // Of memory, what a turn recalls and remembers for the user; nothing else.
    let for_memory = identity
        .issue_service_token(with_credential(
            &orchestrator,
            ask(
                "orchestrator",
                "memory",
                &["memory:read", "memory:write", "users:write"],
            ),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(for_memory.scope, "memory:read memory:write");
    assert_eq!(
        claims_of(&for_memory.access_token)["aud"],
        "somagent:memory"
    );

    // Of the tool service, the user's tools to offer the model and calls of them; not
    // the writing of tools or credentials.
    let for_tool = identity
        .issue_service_token(with_credential(
            &orchestrator,
            ask(
                "orchestrator",
                "tool",
                &["tools:read", "tools:invoke", "tools:write"],
            ),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(for_tool.scope, "tools:read tools:invoke");
    assert_eq!(claims_of(&for_tool.access_token)["aud"], "somagent:tool");

    let for_policy = identity
        .issue_service_token(with_credential(
            &orchestrator,
            ask("orchestrator", "policy", &[]),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(for_policy.scope, "policy:read");
    // Policy takes its own token, and decides (reading the tenant's constitution with
    // a token of its own, as the policy service).
    let decided = policy
        .evaluate(bearer(&for_policy.access_token, prompt()))
        .await
        .unwrap()
        .into_inner();
    assert!(decided.allowed, "{decided:?}");
    // A token meant for slm is refused by policy, one meant for policy by slm, and
    // neither passes the public gateway.
    let refused = policy
        .evaluate(bearer(&for_slm.access_token, prompt()))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);
    assert!(
        refused.message().contains("another audience"),
        "{refused:?}"
    );
    let chat = spb::ChatRequest {
        model: "no-such-model".into(),
        messages: vec![spb::ChatMessage {
            role: "user".into(),
            content: "hi".into(),
            ..Default::default()
        }],
        ..Default::default()
    };
    let refused = slm
        .chat_completion(bearer(&for_policy.access_token, chat.clone()))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused:?}");
    for token in [&for_slm.access_token, &for_policy.access_token] {
        let (status, _) = call(
            &client,
            Method::GET,
            &format!("{gateway}/v1/me"),
            token,
            None,
        )
        .await;
        assert_eq!(status, 401);
    }

    // From bob's own token: no more than it holds and the table allows.
    let request = pb::IssueServiceTokenRequest {
        service: "orchestrator".into(),
        callee: "slm".into(),
        on_behalf_of_token: bob_token.clone(),
        ..Default::default()
    };
    let issued = identity
        .issue_service_token(with_credential(&orchestrator, request.clone()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(issued.scope, "models:use");
    assert_eq!(claims_of(&issued.access_token)["sub"], bob_id.as_str());
    let forged = pb::IssueServiceTokenRequest {
        on_behalf_of_token: format!("{bob_token}x"),
        ..request
    };
    let (code, _) = refusal(
        identity
            .issue_service_token(with_credential(&orchestrator, forged))
            .await,
    );
    assert_eq!(code, tonic::Code::Unauthenticated);

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
    let refused = policy
        .evaluate(bearer(&for_policy.access_token, prompt()))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused:?}");
    let (code, message) = refusal(
        identity
            .issue_service_token(with_credential(
                &orchestrator,
                ask("orchestrator", "policy", &[]),
            ))
            .await,
    );
    assert_eq!(code, tonic::Code::PermissionDenied, "{message}");
}
