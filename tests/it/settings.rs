//! Settings through the gateway: a tenant admin changes the tenant's settings with a
//! merge patch and the very next session turn follows them (no restart: the
//! orchestrator's cached copy is dropped by `settings.updated`); versions read back;
//! bad patches are 422s naming the key; preferences are each user's own; flags fall
//! back to the platform's. On the embedded backends and the real servers.

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{Backends, Rooted, other_tenant_admin, with_scripted_llm};
use crate::lifecycle::call;
use crate::memory::EMBEDDINGS;

/// The recalled-context system message of the model's last request, if it had one.
fn recalled(llm: &somagent_scripted_llm::ScriptedLlm) -> bool {
    llm.requests().last().cloned().unwrap_or(Value::Null)["messages"]
        .as_array()
        .is_some_and(|messages| {
            messages.iter().any(|m| {
                m["role"] == "system"
                    && m["content"]
                        .as_str()
                        .is_some_and(|c| c.starts_with("Context recalled"))
            })
        })
}

#[tokio::test]
async fn a_settings_change_is_followed_by_the_next_turn_without_a_restart() {
    for backends in Backends::all() {
        journey(backends).await;
    }
}

async fn journey(backends: Backends) {
    let (
        llm,
        Rooted {
            platform: _platform,
            gateway,
            client,
            root,
            data: _data,
            ..
        },
    ) = with_scripted_llm(backends, &EMBEDDINGS).await;
    let g = |path: &str| format!("{gateway}{path}");

    let (status, fresh) = call(&client, Method::GET, &g("/v1/settings"), &root, None).await;
    assert_eq!(status, 200, "{fresh}");
    assert_eq!(fresh["version"], 0, "{fresh}");
    assert_eq!(
        fresh["settings"]["sessions"]["memory_recall"], true,
        "{fresh}"
    );

    // Something to recall, and a session whose turns recall it.
    let (status, _) = call(
        &client,
        Method::PUT,
        &g("/v1/memory/tenant/customer"),
        &root,
        Some(json!({"text": "The customer's name is Ada Lovelace"})),
    )
    .await;
    assert!((200..300).contains(&status), "{status}");
    let (_, session) = call(
        &client,
        Method::POST,
        &g("/v1/sessions"),
        &root,
        Some(json!({})),
    )
    .await;
    let id = session["session_id"].as_str().unwrap().to_owned();
    let ask = || {
        let (client, url, root) = (
            client.clone(),
            g(&format!("/v1/sessions/{id}/messages")),
            root.clone(),
        );
        async move {
            let (status, answer) = call(
                &client,
                Method::POST,
                &url,
                &root,
                Some(json!({"content": "What is the customer's name?"})),
            )
            .await;
            assert_eq!(status, 200, "{answer}");
        }
    };
    ask().await;
    assert!(recalled(&llm), "{backends:?}: recall is on by default");

    // Recall off for the tenant: the next turn recalls nothing.
    let (status, off) = call(
        &client,
        Method::PATCH,
        &g("/v1/settings"),
        &root,
        Some(json!({"display_name": "Acme", "sessions": {"memory_recall": false}})),
    )
    .await;
    assert_eq!(status, 200, "{off}");
    assert_eq!(off["version"], 1, "{off}");
    assert_eq!(off["settings"]["sessions"]["memory_recall"], false, "{off}");
    assert_eq!(
        off["settings"]["sessions"]["tool_rounds"],
        Value::Null,
        "{off}: the platform's"
    );
    // The announcement reaches the orchestrator over the bus.
    let mut followed = false;
    for _ in 0..50 {
        ask().await;
        if !recalled(&llm) {
            followed = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(
        followed,
        "{backends:?}: the turn still recalls after the change"
    );
    // And back on (the key reset to its default).
    let (status, on) = call(
        &client,
        Method::PATCH,
        &g("/v1/settings"),
        &root,
        Some(json!({"sessions": {"memory_recall": null}})),
    )
    .await;
    assert_eq!((status, &on["version"]), (200, &json!(2)), "{on}");
    let mut followed = false;
    for _ in 0..50 {
        ask().await;
        if recalled(&llm) {
            followed = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(followed, "{backends:?}: recall did not come back");

    // Versions read back with what each replaced; a stale If-Match is a 409.
    let (_, versions) = call(
        &client,
        Method::GET,
        &g("/v1/settings/versions"),
        &root,
        None,
    )
    .await;
    assert_eq!(versions["versions"][0]["version"], 2, "{versions}");
    assert_eq!(
        versions["versions"][0]["previous"],
        json!({"display_name": "Acme", "sessions": {"memory_recall": false}}),
        "{versions}"
    );
    let (status, first) = call(
        &client,
        Method::GET,
        &g("/v1/settings/versions/1"),
        &root,
        None,
    )
    .await;
    assert_eq!((status, &first["previous"]), (200, &json!({})), "{first}");
    let stale = client
        .patch(g("/v1/settings"))
        .bearer_auth(&root)
        .header("content-type", "application/merge-patch+json")
        .header("if-match", "\"1\"")
        .body(r#"{"display_name": "Other"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(stale.status(), 409);

    // Bad patches name what is wrong.
    for (patch, field) in [
        (json!({"colour": "red"}), "colour"),
        (
            json!({"sessions": {"tool_rounds": 99}}),
            "sessions.tool_rounds",
        ),
    ] {
        let (status, problem) = call(
            &client,
            Method::PATCH,
            &g("/v1/settings"),
            &root,
            Some(patch),
        )
        .await;
        assert_eq!(status, 422, "{problem}");
        assert!(
            problem["error"]["details"]["fields"][field].is_string(),
            "{problem}"
        );
    }

    // Preferences are the caller's own; another tenant sees nothing of these settings.
    let (status, prefs) = call(
        &client,
        Method::PATCH,
        &g("/v1/me/preferences"),
        &root,
        Some(
            json!({"notifications": {"channels": ["in_app", "email"], "min_severity": "warning"}}),
        ),
    )
    .await;
    assert_eq!(status, 200, "{prefs}");
    assert_eq!(
        prefs["settings"]["notifications"]["quiet_hours"]["time_zone"],
        "UTC"
    );
    let hank = other_tenant_admin(&client, &gateway, &root).await;
    let (_, theirs) = call(&client, Method::GET, &g("/v1/settings"), &hank, None).await;
    assert_eq!(
        (&theirs["version"], &theirs["settings"]["display_name"]),
        (&json!(0), &json!("")),
        "{theirs}"
    );
    let (_, theirs) = call(&client, Method::GET, &g("/v1/me/preferences"), &hank, None).await;
    assert_eq!(
        theirs["settings"]["notifications"]["min_severity"], "info",
        "{theirs}"
    );

    // A flag: the platform's default (root is a platform admin), the tenant's own over it.
    let (status, flag) = call(
        &client,
        Method::PUT,
        &g("/v1/settings/flags/new-console"),
        &root,
        Some(json!({"enabled": true, "scope": "platform"})),
    )
    .await;
    assert_eq!(
        (status, &flag["source"]),
        (200, &json!("platform")),
        "{flag}"
    );
    let (_, theirs) = call(
        &client,
        Method::GET,
        &g("/v1/settings/flags/new-console"),
        &hank,
        None,
    )
    .await;
    assert_eq!(
        (&theirs["enabled"], &theirs["source"]),
        (&json!(true), &json!("platform")),
        "{theirs}"
    );
    let (status, own) = call(
        &client,
        Method::PUT,
        &g("/v1/settings/flags/new-console"),
        &hank,
        Some(json!({"enabled": false})),
    )
    .await;
    assert_eq!((status, &own["source"]), (200, &json!("tenant")), "{own}");
    let (status, _) = call(
        &client,
        Method::PUT,
        &g("/v1/settings/flags/new-console"),
        &hank,
        Some(json!({"enabled": true, "scope": "platform"})),
    )
    .await;
    assert_eq!(status, 403, "a tenant admin sets no platform default");
    let (_, mine) = call(&client, Method::GET, &g("/v1/settings/flags"), &root, None).await;
    assert_eq!(
        mine["flags"],
        json!([{"name": "new-console", "enabled": true, "source": "platform"}]),
        "{mine}"
    );
}

/// A value to look for everywhere it must not be.
const SECRET: &str = "whsec-7f3a9c21d4e8b605";

#[tokio::test]
async fn a_secret_is_written_never_shown_and_read_only_by_the_service_that_uses_it() {
    for backends in Backends::all() {
        secret_journey(backends).await;
    }
}

async fn secret_journey(backends: Backends) {
    use somagent_common::auth::grpc::with_bearer;
    use somagent_common::auth::{ISSUER_KEY_FILE, SERVICE_KEY_HEADER, ServiceIssuerKey};
    use somagent_common::proto::identity::v1 as ipb;
    use somagent_common::proto::identity::v1::identity_service_client::IdentityServiceClient;
    use somagent_common::proto::settings::v1 as pb;
    use somagent_common::proto::settings::v1::settings_service_client::SettingsServiceClient;

    let Rooted {
        platform,
        gateway,
        client,
        root,
        data,
        events,
    } = crate::helpers::with_root_on(backends, &[]).await;
    let g = |path: &str| format!("{gateway}{path}");
    let mut seen = String::new();

    // Written twice; what comes back is its name and version, never the value.
    for version in [1, 2] {
        let (status, stored) = call(
            &client,
            Method::PUT,
            &g("/v1/settings/secrets/webhook-signing"),
            &root,
            Some(json!({"value": SECRET})),
        )
        .await;
        assert_eq!(
            (status, &stored["version"]),
            (200, &json!(version)),
            "{stored}"
        );
        seen.push_str(&stored.to_string());
    }
    let (status, listed) = call(
        &client,
        Method::GET,
        &g("/v1/settings/secrets"),
        &root,
        None,
    )
    .await;
    assert_eq!(status, 200, "{listed}");
    assert_eq!(listed["secrets"][0]["name"], "webhook-signing", "{listed}");
    seen.push_str(&listed.to_string());
    // No route reads one back.
    let (status, one) = call(
        &client,
        Method::GET,
        &g("/v1/settings/secrets/webhook-signing"),
        &root,
        None,
    )
    .await;
    assert!(status == 404 || status == 405, "{status}: {one}");
    seen.push_str(&one.to_string());
    // A bad name and a missing value are clear 422s that do not echo what was sent.
    let (status, bad) = call(
        &client,
        Method::PUT,
        &g("/v1/settings/secrets/bad%20name"),
        &root,
        Some(json!({"value": SECRET})),
    )
    .await;
    assert_eq!(status, 422, "{bad}");
    seen.push_str(&bad.to_string());
    let (status, bad) = call(
        &client,
        Method::PUT,
        &g("/v1/settings/secrets/x"),
        &root,
        Some(json!({"valeur": SECRET})),
    )
    .await;
    assert_eq!(status, 422, "{bad}");
    seen.push_str(&bad.to_string());

    // A person's own token cannot read it over gRPC; the notification service, acting
    // for a user of the tenant, can.
    let me: Value = client
        .get(g("/v1/me"))
        .bearer_auth(&root)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut settings = SettingsServiceClient::connect(platform.addresses["settings"].clone())
        .await
        .unwrap();
    let refused = settings
        .read_secret(with_bearer(
            &root,
            tonic::Request::new(pb::ReadSecretRequest {
                name: "webhook-signing".into(),
            }),
        ))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
    let issuer = ServiceIssuerKey::new(
        std::fs::read_to_string(data.path().join(ISSUER_KEY_FILE))
            .unwrap()
            .trim(),
    );
    let mut ask = tonic::Request::new(ipb::IssueServiceTokenRequest {
        service: "notification".into(),
        callee: "settings".into(),
        tenant: me["tenant"].as_str().unwrap().to_owned(),
        subject: me["subject"].as_str().unwrap().to_owned(),
        capabilities: vec!["settings:read".into()],
        ..Default::default()
    });
    ask.metadata_mut().insert(
        SERVICE_KEY_HEADER,
        issuer
            .credential_for("notification")
            .expose()
            .parse()
            .unwrap(),
    );
    let mut identity = IdentityServiceClient::connect(platform.addresses["identity"].clone())
        .await
        .unwrap();
    let token = identity
        .issue_service_token(ask)
        .await
        .unwrap()
        .into_inner()
        .access_token;
    let read = settings
        .read_secret(with_bearer(
            &token,
            tonic::Request::new(pb::ReadSecretRequest {
                name: "webhook-signing".into(),
            }),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (read.value.as_slice(), read.version),
        (SECRET.as_bytes(), 2)
    );

    // Another tenant sees none of it; removed, it is gone.
    let hank = other_tenant_admin(&client, &gateway, &root).await;
    let (_, theirs) = call(
        &client,
        Method::GET,
        &g("/v1/settings/secrets"),
        &hank,
        None,
    )
    .await;
    assert_eq!(theirs["secrets"], json!([]), "{theirs}");
    let (status, _) = call(
        &client,
        Method::DELETE,
        &g("/v1/settings/secrets/webhook-signing"),
        &hank,
        None,
    )
    .await;
    assert_eq!(status, 404);
    let (status, _) = call(
        &client,
        Method::DELETE,
        &g("/v1/settings/secrets/webhook-signing"),
        &root,
        None,
    )
    .await;
    assert_eq!(status, 204);
    let gone = settings
        .read_secret(with_bearer(
            &token,
            tonic::Request::new(pb::ReadSecretRequest {
                name: "webhook-signing".into(),
            }),
        ))
        .await
        .unwrap_err();
    assert_eq!(gone.code(), tonic::Code::NotFound);

    // Nowhere in what came back, in the platform's log, or in any event it published.
    assert!(!seen.contains(SECRET), "{seen}");
    let log = std::fs::read_to_string(data.path().with_extension("log")).unwrap_or_default();
    assert!(!log.contains(SECRET), "the platform's log holds the secret");
    let bus = somagent_common::infra::events::EventBus::connect(&events, data.path())
        .await
        .unwrap();
    let mut published = String::new();
    for topic in ["agent.audit", "settings.updated"] {
        for event in crate::helpers::published(&bus, topic).await {
            published.push_str(&serde_json::to_string(&event).unwrap());
        }
    }
    assert!(
        published.contains("webhook-signing"),
        "the changes were audited: {published}"
    );
    assert!(!published.contains(SECRET), "an event holds the secret");
}
