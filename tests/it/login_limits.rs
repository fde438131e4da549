//! Brute force against passwords: guesses in parallel, guesses straight at identity,
//! and guesses from many clients behind one ingress.

use somagent_common::proto::identity::v1 as pb;
use somagent_common::proto::identity::v1::identity_service_client::IdentityServiceClient;

use crate::helpers::{Backends, Rooted, with_root_on};

async fn guess(
    client: &reqwest::Client,
    gateway: &str,
    username: &str,
    forwarded_for: Option<&str>,
) -> u16 {
    let mut request = client.post(format!("{gateway}/v1/auth/token")).form(&[
        ("grant_type", "password"),
        ("tenant", "default"),
        ("username", username),
        ("password", "a wrong password"),
    ]);
    if let Some(address) = forwarded_for {
        request = request.header("X-Forwarded-For", address);
    }
    request.send().await.unwrap().status().as_u16()
}

/// Forty guesses sent at once on one account: the limit of five failures holds, where
/// counting after the password check let every one of them through.
#[tokio::test]
async fn parallel_guesses_do_not_outrun_the_limit() {
    for backends in Backends::all() {
        let Rooted {
            platform: _platform,
            gateway,
            client,
            data: _data,
            ..
        } = with_root_on(backends, &[]).await;
        let guesses = (0..40).map(|_| guess(&client, &gateway, "admin", None));
        let statuses = futures::future::join_all(guesses).await;
        let checked = statuses.iter().filter(|s| **s == 401).count();
        assert!(
            checked <= 5,
            "{checked} passwords were checked ({backends:?}): {statuses:?}"
        );
        assert!(
            statuses.iter().all(|s| *s == 401 || *s == 429),
            "{statuses:?}"
        );
    }
}

/// A caller that reaches identity directly, past the gateway, is limited the same way.
#[tokio::test]
async fn identity_limits_guesses_that_skip_the_gateway() {
    let Rooted {
        platform,
        data: _data,
        ..
    } = with_root_on(Backends::Embedded, &[]).await;
    let mut identity = IdentityServiceClient::connect(platform.addresses["identity"].clone())
        .await
        .unwrap();
    let mut codes = Vec::new();
    for _ in 0..8 {
        let answer = identity
            .issue_token(pb::IssueTokenRequest {
                grant_type: "password".into(),
                tenant: "default".into(),
                username: "admin".into(),
                password: "a wrong password".into(),
                ..Default::default()
            })
            .await;
        codes.push(answer.expect_err("a wrong password").code());
    }
    assert_eq!(&codes[..5], &[tonic::Code::Unauthenticated; 5], "{codes:?}");
    assert_eq!(
        &codes[5..],
        &[tonic::Code::ResourceExhausted; 3],
        "{codes:?}"
    );
}

/// Behind a trusted ingress each client has its own per-address bucket; without the
/// setting, a forged header changes nothing.
#[tokio::test]
async fn behind_a_trusted_proxy_each_client_has_its_own_limit() {
    let Rooted {
        platform: _platform,
        gateway,
        client,
        data: _data,
        ..
    } = with_root_on(
        Backends::Embedded,
        &[("SOMAGENT_GATEWAY__TRUSTED_PROXIES", "127.0.0.0/8")],
    )
    .await;
    // Twenty failures from one client, on twenty accounts (so no account limit bites).
    for i in 0..20 {
        let status = guess(
            &client,
            &gateway,
            &format!("user-{i}"),
            Some("198.51.100.1"),
        )
        .await;
        assert_eq!(status, 401);
    }
    assert_eq!(
        guess(&client, &gateway, "user-x", Some("198.51.100.1")).await,
        429,
        "that client is over its limit"
    );
    // The client cannot escape by prepending another address: the ingress appends the
    // real one, which is what counts.
    assert_eq!(
        guess(
            &client,
            &gateway,
            "user-y",
            Some("203.0.113.50, 198.51.100.1")
        )
        .await,
        429
    );
    // Another client behind the same ingress is not.
    assert_eq!(
        guess(&client, &gateway, "user-z", Some("198.51.100.2")).await,
        401
    );

    // Without trusted proxies the header is the client's own word and is ignored.
    let Rooted {
        platform: _other,
        gateway,
        client,
        data: _data,
        ..
    } = with_root_on(Backends::Embedded, &[]).await;
    for i in 0..20 {
        let forged = format!("198.51.100.{i}");
        assert_eq!(
            guess(&client, &gateway, &format!("user-{i}"), Some(&forged)).await,
            401
        );
    }
    assert_eq!(
        guess(&client, &gateway, "user-x", Some("198.51.100.99")).await,
        429
    );
}
