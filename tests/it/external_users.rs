//! People of an external OIDC provider (Keycloak with the realm in deploy/keycloak) use
//! the platform with that provider's tokens: the gateway exchanges each for a platform
//! token, identity provisions the person as a user of the tenant the provider names,
//! and sessions and turns work for them as for anyone.

use serde_json::{Value, json};
use somagent_common::infra::events::{EventBus, topics};

use crate::helpers::{
    Backends, Platform, Rooted, free_ports, login, required_env, wait_ok, with_scripted_llm,
};

/// An access token from Keycloak's token endpoint, for a realm user (password grant).
/// With brute-force protection on, Keycloak refuses a login that runs at the same time
/// as another of the same user as if the password were wrong (keycloak/keycloak#33527),
/// and journeys run in parallel: such a refusal is retried a few times.
async fn keycloak_token(client: &reqwest::Client, issuer: &str, user: &str, pass: &str) -> String {
    let mut answer = Value::Null;
    for _ in 0..10 {
        answer = client
            .post(format!("{issuer}/protocol/openid-connect/token"))
            .form(&[
                ("grant_type", "password"),
                ("client_id", "somagent-api"),
                ("client_secret", "somagent-api-secret"),
                ("username", user),
                ("password", pass),
            ])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if let Some(token) = answer["access_token"].as_str() {
            return token.to_owned();
        }
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }
    panic!("Keycloak issued no token: {answer}")
}

async fn get(client: &reqwest::Client, url: &str, token: &str) -> (u16, Value) {
    let response = client.get(url).bearer_auth(token).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn send(
    client: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    token: &str,
    body: Value,
) -> (u16, Value) {
    let response = client
        .request(method, url)
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn a_keycloak_user_is_provisioned_and_runs_a_turn() {
    let Some(issuer) = required_env("OIDC_URL") else {
        return;
    };
    for backends in Backends::all() {
        a_keycloak_user_is_provisioned_and_runs_a_turn_on(backends, &issuer).await;
    }
}

async fn a_keycloak_user_is_provisioned_and_runs_a_turn_on(backends: Backends, issuer: &str) {
    let trusted = json!([{ "issuer": issuer, "audience": "somagent", "mapping": { "roles_claim": "roles" } }]).to_string();
    let (
        _llm,
        Rooted {
            platform,
            gateway,
            client,
            root,
            data,
            events,
        },
    ) = with_scripted_llm(backends, &[("SOMAGENT_OIDC_ISSUERS", trusted.as_str())]).await;
    let alice = keycloak_token(&client, issuer, "alice", "alice-password-123").await;
    let me = format!("{gateway}/v1/me");

    // Keycloak places alice in tenant `acme`, which this platform does not have yet.
    let (status, problem) = get(&client, &me, &alice).await;
    assert_eq!(status, 403, "{problem}");
    assert_eq!(problem["error"]["code"], "forbidden", "{problem}");
    assert!(
        problem["error"]["message"]
            .as_str()
            .unwrap()
            .contains("tenant `acme`"),
        "{problem}"
    );

    let (status, acme) = send(
        &client,
        reqwest::Method::POST,
        &format!("{gateway}/v1/tenants"),
        &root,
        json!({"slug": "acme", "display_name": "Acme", "admin": {"username": "acme-admin", "password": "acme admin's long passphrase"}}),
    )
    .await;
    assert_eq!(status, 201, "{acme}");

    // Now she is a user of acme, as the platform's own tokens say.
    let (status, seen) = get(&client, &me, &alice).await;
    assert_eq!(status, 200, "{seen}");
    assert_eq!(seen["tenant"], acme["id"], "{seen}");
    assert_eq!(seen["username"], "alice");
    assert_eq!(seen["roles"], json!(["operator"]));
    let alice_id = seen["subject"].as_str().unwrap().to_owned();
    assert!(uuid::Uuid::parse_str(&alice_id).is_ok(), "{seen}");
    let (_, again) = get(&client, &me, &alice).await;
    assert_eq!(again["subject"], alice_id, "provisioned once");
    let admin = login(
        &client,
        &gateway,
        "acme",
        "acme-admin",
        "acme admin's long passphrase",
    )
    .await;
    let (status, listed) = get(&client, &format!("{gateway}/v1/users"), &admin).await;
    assert_eq!(status, 200, "{listed}");
    let provisioned = listed["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["id"] == alice_id.as_str())
        .unwrap_or_else(|| panic!("alice is a user of acme: {listed}"));
    assert_eq!(provisioned["username"], "alice");
    assert_eq!(provisioned["roles"], json!(["operator"]));

    // A session and a turn, answered by the model, with her Keycloak token.
    let (status, session) = send(
        &client,
        reqwest::Method::POST,
        &format!("{gateway}/v1/sessions"),
        &alice,
        json!({}),
    )
    .await;
    assert_eq!(status, 201, "{session}");
    let id = session["session_id"].as_str().unwrap();
    let (status, answer) = send(
        &client,
        reqwest::Method::POST,
        &format!("{gateway}/v1/sessions/{id}/messages"),
        &alice,
        json!({"content": "hello from keycloak"}),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["outcome"], "completed", "{answer}");
    assert_eq!(answer["message"]["content"], "Echo: hello from keycloak");

    // Her account lives at the identity provider: no API key here would outlive its
    // decisions.
    let (status, refused) = send(
        &client,
        reqwest::Method::POST,
        &format!("{gateway}/v1/api-keys"),
        &alice,
        json!({"name": "mine", "scopes": ["sessions:read"]}),
    )
    .await;
    assert_eq!(status, 403, "{refused}");

    // She has no password here: not even one an admin sets lets her log in with it.
    let (status, changed) = send(
        &client,
        reqwest::Method::PATCH,
        &format!("{gateway}/v1/users/{alice_id}"),
        &admin,
        json!({"password": "a password set by the admin"}),
    )
    .await;
    assert_eq!(status, 200, "{changed}");
    let password_login = client
        .post(format!("{gateway}/v1/auth/token"))
        .form(&[
            ("grant_type", "password"),
            ("tenant", "acme"),
            ("username", "alice"),
            ("password", "a password set by the admin"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(password_login.status(), 401);

    // Disabled here, she stays disabled, Keycloak token or not.
    let (status, _) = send(
        &client,
        reqwest::Method::PATCH,
        &format!("{gateway}/v1/users/{alice_id}"),
        &admin,
        json!({"status": "disabled"}),
    )
    .await;
    assert_eq!(status, 200);
    let (status, problem) = get(&client, &me, &alice).await;
    assert_eq!(status, 403, "{problem}");
    assert!(
        problem["error"]["message"]
            .as_str()
            .unwrap()
            .contains("disabled"),
        "{problem}"
    );

    // The provisioning is audited, without the token.
    let bus = EventBus::connect(&events, data.path()).await.unwrap();
    let mut audit = bus
        .subscribe(
            &format!("e2e-{}", uuid::Uuid::new_v4().simple()),
            &[topics::AUDIT],
        )
        .await
        .unwrap();
    let event = loop {
        let delivery = tokio::time::timeout(std::time::Duration::from_secs(30), audit.next())
            .await
            .expect("a provisioning audit event")
            .unwrap();
        if delivery.event.kind == "identity.user_provisioned" {
            break delivery.event;
        }
    };
    assert_eq!(event.data["action"], "provision");
    assert_eq!(event.data["resource"]["id"], alice_id.as_str());
    assert_eq!(event.data["issuer"], issuer);
    assert!(!serde_json::to_string(&event).unwrap().contains(&alice));
    drop(platform);
}

/// Without the issuer configured, the same Keycloak token is refused at the door.
#[tokio::test]
async fn a_token_of_an_issuer_not_configured_is_refused() {
    let Some(issuer) = required_env("OIDC_URL") else {
        return;
    };
    let data = tempfile::tempdir().unwrap();
    let platform = Platform::start(data.path(), &free_ports());
    let gateway = platform.addresses["gateway"].clone();
    let client = reqwest::Client::new();
    wait_ok(&client, &format!("{gateway}/readyz")).await;
    let alice = keycloak_token(&client, &issuer, "alice", "alice-password-123").await;
    let (status, problem) = get(&client, &format!("{gateway}/v1/me"), &alice).await;
    assert_eq!(status, 401, "{problem}");
    assert_eq!(problem["error"]["code"], "unauthorized");
    drop(platform);
}

/// An issuer configured for some tenants places nobody in another, whatever its tokens
/// claim (an identity provider a tenant brings speaks for that tenant alone).
#[tokio::test]
async fn an_issuer_places_people_only_in_its_own_tenants() {
    let Some(issuer) = required_env("OIDC_URL") else {
        return;
    };
    let trusted = json!([{ "issuer": issuer, "audience": "somagent",
        "mapping": { "roles_claim": "roles", "tenants": ["globex"] } }])
    .to_string();
    let Rooted {
        platform: _platform,
        gateway,
        client,
        root,
        data: _data,
        ..
    } = crate::helpers::with_root_env(&[("SOMAGENT_OIDC_ISSUERS", trusted.as_str())]).await;
    let (status, acme) = send(
        &client,
        reqwest::Method::POST,
        &format!("{gateway}/v1/tenants"),
        &root,
        json!({"slug": "acme", "display_name": "Acme", "admin": {"username": "acme-admin", "password": "acme admin's long passphrase"}}),
    )
    .await;
    assert_eq!(status, 201, "{acme}");
    let alice = keycloak_token(&client, &issuer, "alice", "alice-password-123").await;
    let (status, problem) = get(&client, &format!("{gateway}/v1/me"), &alice).await;
    assert_eq!(status, 403, "{problem}");
    assert!(
        problem["error"]["message"]
            .as_str()
            .unwrap()
            .contains("may not place people in tenant `acme`"),
        "{problem}"
    );
}

/// The administrator Keycloak is started with by `scripts/ci-services.sh` (test values).
const KEYCLOAK_ADMIN: (&str, &str) = ("admin", "admin-ci-only");

/// A realm user of its own for a test that changes roles, made through Keycloak's admin
/// API (the imported `alice` is shared with other tests).
struct RealmUser {
    admin_api: String,
    admin_token: String,
    id: String,
    username: String,
    client: reqwest::Client,
}

impl RealmUser {
    async fn create(client: &reqwest::Client, issuer: &str, role: &str) -> Self {
        let (base, realm) = issuer.split_once("/realms/").expect("a Keycloak realm URL");
        let token: Value = client
            .post(format!(
                "{base}/realms/master/protocol/openid-connect/token"
            ))
            .form(&[
                ("grant_type", "password"),
                ("client_id", "admin-cli"),
                ("username", KEYCLOAK_ADMIN.0),
                ("password", KEYCLOAK_ADMIN.1),
            ])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let admin_token = token["access_token"]
            .as_str()
            .unwrap_or_else(|| panic!("Keycloak's admin logs in: {token}"))
            .to_owned();
        let admin_api = format!("{base}/admin/realms/{realm}");
        let username = format!("bob-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
        let created = client
            .post(format!("{admin_api}/users"))
            .bearer_auth(&admin_token)
            .json(&json!({
                "username": username, "enabled": true, "emailVerified": true,
                "email": format!("{username}@acme.test"), "firstName": "Bob", "lastName": "Acme",
                "attributes": {"tenant": ["acme"]},
                "credentials": [{"type": "password", "value": "bob-password-123", "temporary": false}],
            }))
            .send()
            .await
            .unwrap();
        assert_eq!(created.status(), 201, "{}", created.text().await.unwrap());
        let id = created.headers()["location"]
            .to_str()
            .unwrap()
            .rsplit('/')
            .next()
            .unwrap()
            .to_owned();
        let user = Self {
            admin_api,
            admin_token,
            id,
            username,
            client: client.clone(),
        };
        user.roles(reqwest::Method::POST, role).await;
        user
    }

    /// Removes the user from the realm (a failed test leaves one behind, with a name
    /// of its own).
    async fn delete(self) {
        let deleted = self
            .client
            .delete(format!("{}/users/{}", self.admin_api, self.id))
            .bearer_auth(&self.admin_token)
            .send()
            .await
            .unwrap();
        assert_eq!(deleted.status(), 204);
    }

    /// Adds (POST) or removes (DELETE) a realm role.
    async fn roles(&self, method: reqwest::Method, role: &str) {
        let api = &self.admin_api;
        let representation: Value = self
            .client
            .get(format!("{api}/roles/{role}"))
            .bearer_auth(&self.admin_token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let changed = self
            .client
            .request(
                method,
                format!("{api}/users/{}/role-mappings/realm", self.id),
            )
            .bearer_auth(&self.admin_token)
            .json(&json!([representation]))
            .send()
            .await
            .unwrap();
        assert_eq!(changed.status(), 204);
    }
}

/// A role removed in Keycloak is removed on the platform at the person's next token,
/// and an older token, still valid at Keycloak, does not bring it back.
#[tokio::test]
async fn roles_follow_the_identity_provider() {
    let Some(issuer) = required_env("OIDC_URL") else {
        return;
    };
    let trusted = json!([{ "issuer": issuer, "audience": "somagent", "mapping": { "roles_claim": "roles" } }]).to_string();
    let Rooted {
        platform,
        gateway,
        client,
        root,
        data: _data,
        ..
    } = crate::helpers::with_root_on(
        Backends::Embedded,
        &[("SOMAGENT_OIDC_ISSUERS", trusted.as_str())],
    )
    .await;
    let (status, _) = send(
        &client,
        reqwest::Method::POST,
        &format!("{gateway}/v1/tenants"),
        &root,
        json!({"slug": "acme", "display_name": "Acme", "admin": {"username": "acme-admin", "password": "acme admin's long passphrase"}}),
    )
    .await;
    assert_eq!(status, 201);
    let bob = RealmUser::create(&client, &issuer, "developer").await;
    let me = format!("{gateway}/v1/me");
    let first = keycloak_token(&client, &issuer, &bob.username, "bob-password-123").await;
    let (status, seen) = get(&client, &me, &first).await;
    assert_eq!(status, 200, "{seen}");
    assert_eq!(seen["roles"], json!(["developer"]));

    bob.roles(reqwest::Method::DELETE, "developer").await;
    bob.roles(reqwest::Method::POST, "viewer").await;
    // A token's `iat` is in seconds: the next one must be of a later second.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let second = keycloak_token(&client, &issuer, &bob.username, "bob-password-123").await;
    let (status, seen) = get(&client, &me, &second).await;
    assert_eq!(status, 200, "{seen}");
    assert_eq!(seen["roles"], json!(["viewer"]));
    assert!(
        !seen["capabilities"]
            .as_array()
            .unwrap()
            .contains(&json!("capsules:write")),
        "{seen}"
    );
    let (status, seen) = get(&client, &me, &first).await;
    assert_eq!(status, 200, "{seen}");
    assert_eq!(seen["roles"], json!(["viewer"]), "the older token");
    bob.delete().await;
    drop(platform);
}
