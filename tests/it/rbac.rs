//! Every role against every route of the front door, and every route tried across
//! tenants: what a role may not do is a 403 naming the capability; another tenant's
//! ids are 404, and nothing of the other tenant changes.

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{Rooted, login, with_root};
use crate::lifecycle::{call, me_of};

const PASSWORD: &str = "a long user passphrase";

#[tokio::test]
async fn each_role_gets_exactly_its_routes() {
    let Rooted {
        platform: _platform,
        gateway,
        client,
        root,
        data: _data,
        ..
    } = with_root().await;
    let (status, acme) = call(
        &client,
        Method::POST,
        &format!("{gateway}/v1/tenants"),
        &root,
        Some(json!({"slug": "acme", "display_name": "Acme", "admin": {"username": "alice", "password": PASSWORD}})),
    )
    .await;
    assert_eq!(status, 201);
    let acme_id = acme["id"].as_str().unwrap().to_owned();
    let alice = login(&client, &gateway, "acme", "alice", PASSWORD).await;
    let mut tokens = vec![("admin", alice.clone())];
    for role in ["viewer", "operator", "developer"] {
        let (status, _) = call(
            &client,
            Method::POST,
            &format!("{gateway}/v1/users"),
            &alice,
            Some(json!({"username": role, "password": PASSWORD, "roles": [role]})),
        )
        .await;
        assert_eq!(status, 201);
        tokens.push((role, login(&client, &gateway, "acme", role, PASSWORD).await));
    }
    let (_, target) = call(
        &client,
        Method::POST,
        &format!("{gateway}/v1/users"),
        &alice,
        Some(json!({"username": "target", "password": PASSWORD, "roles": ["viewer"]})),
    )
    .await;
    let target = format!("{gateway}/v1/users/{}", target["id"].as_str().unwrap());
    let tenant = format!("{gateway}/v1/tenants/{acme_id}");
    let g = |path: &str| format!("{gateway}{path}");

    // (method, url, body, the capability it needs or None for every member)
    let routes: Vec<(Method, String, Option<Value>, Option<&str>)> = vec![
        (Method::GET, g("/v1/me"), None, None),
        (Method::GET, g("/v1/status"), None, None),
        (Method::GET, g("/v1/tenants"), None, None),
        (Method::GET, tenant.clone(), None, None),
        (
            Method::PATCH,
            tenant.clone(),
            Some(json!({"display_name": "Acme"})),
            Some("tenant:admin"),
        ),
        (
            Method::POST,
            g("/v1/tenants"),
            Some(
                json!({"slug": "x", "display_name": "X", "admin": {"username": "x", "password": PASSWORD}}),
            ),
            Some("platform:admin"),
        ),
        (
            Method::POST,
            g("/v1/auth/keys/rotate"),
            None,
            Some("platform:admin"),
        ),
        (Method::GET, g("/v1/users"), None, Some("users:read")),
        (Method::GET, target.clone(), None, Some("users:read")),
        (
            Method::POST,
            g("/v1/users"),
            Some(json!({"username": "newbie", "password": PASSWORD, "roles": ["viewer"]})),
            Some("users:write"),
        ),
        (
            Method::PATCH,
            target.clone(),
            Some(json!({"roles": ["viewer"]})),
            Some("users:write"),
        ),
        (Method::GET, g("/v1/api-keys"), None, None),
        (
            Method::POST,
            g("/v1/api-keys"),
            Some(json!({"name": "k", "scopes": ["sessions:read"], "password": PASSWORD})),
            None,
        ),
    ];
    for (role, token) in &tokens {
        let me = me_of(&client, &gateway, token).await;
        let held: Vec<&str> = me["capabilities"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(Value::as_str)
            .collect();
        for (method, url, body, needs) in &routes {
            let (status, answer) = call(&client, method.clone(), url, token, body.clone()).await;
            let allowed = needs.is_none_or(|c| held.contains(&c));
            if allowed {
                assert!(
                    (200..300).contains(&status),
                    "{role} {method} {url}: {status} {answer}"
                );
            } else {
                assert_eq!(status, 403, "{role} {method} {url}: {answer}");
                assert_eq!(
                    answer["error"]["details"]["missing_capability"].as_str(),
                    *needs,
                    "{role} {method} {url}: {answer}"
                );
            }
        }
        // Which capabilities each role holds is the role table's (DESIGN §8).
        let expect_admin = *role == "admin";
        assert_eq!(held.contains(&"users:write"), expect_admin, "{role}");
        assert_eq!(held.contains(&"tenant:admin"), expect_admin, "{role}");
        assert_eq!(
            held.contains(&"capsules:write"),
            matches!(*role, "developer" | "admin"),
            "{role}"
        );
        assert_eq!(
            held.contains(&"sessions:write"),
            *role != "viewer",
            "{role}"
        );
        assert!(!held.contains(&"platform:admin"), "{role}");
    }
    // Removing a user is the admins' alone; it is tried last, as it changes things.
    for (role, token) in tokens.iter().rev() {
        let (status, answer) = call(&client, Method::DELETE, &target, token, None).await;
        if *role == "admin" {
            assert_eq!(status, 204, "{answer}");
        } else {
            assert_eq!(status, 403, "{role}: {answer}");
        }
    }
}

#[tokio::test]
async fn another_tenants_ids_are_not_found_on_every_route() {
    let Rooted {
        platform: _platform,
        gateway,
        client,
        root,
        data: _data,
        ..
    } = with_root().await;
    let mut admins = Vec::new();
    for slug in ["acme", "globex"] {
        let (status, created) = call(
            &client,
            Method::POST,
            &format!("{gateway}/v1/tenants"),
            &root,
            Some(json!({"slug": slug, "display_name": slug, "admin": {"username": "admin", "password": PASSWORD}})),
        )
        .await;
        assert_eq!(status, 201);
        admins.push((
            created["id"].as_str().unwrap().to_owned(),
            login(&client, &gateway, slug, "admin", PASSWORD).await,
        ));
    }
    let ((acme_id, acme_admin), (_, globex_admin)) = (&admins[0], &admins[1]);
    let (_, bob) = call(
        &client,
        Method::POST,
        &format!("{gateway}/v1/users"),
        acme_admin,
        Some(json!({"username": "bob", "password": PASSWORD, "roles": ["operator"]})),
    )
    .await;
    let bob_id = bob["id"].as_str().unwrap();
    let (status, key) = call(
        &client,
        Method::POST,
        &format!("{gateway}/v1/api-keys"),
        acme_admin,
        Some(json!({"name": "ci", "scopes": ["sessions:read"], "password": PASSWORD})),
    )
    .await;
    assert_eq!(status, 201);
    let key_id = key["id"].as_str().unwrap();

    let g = |path: String| format!("{gateway}{path}");
    let attempts: Vec<(Method, String, Option<Value>)> = vec![
        (Method::GET, g(format!("/v1/tenants/{acme_id}")), None),
        (
            Method::PATCH,
            g(format!("/v1/tenants/{acme_id}")),
            Some(json!({"display_name": "Mine"})),
        ),
        (Method::DELETE, g(format!("/v1/tenants/{acme_id}")), None),
        (Method::GET, g(format!("/v1/users/{bob_id}")), None),
        (
            Method::PATCH,
            g(format!("/v1/users/{bob_id}")),
            Some(json!({"status": "disabled"})),
        ),
        (Method::DELETE, g(format!("/v1/users/{bob_id}")), None),
        (
            Method::POST,
            g(format!("/v1/users/{bob_id}/mfa/enroll")),
            None,
        ),
        (
            Method::POST,
            g(format!("/v1/users/{bob_id}/mfa/verify")),
            Some(json!({"code": "123456"})),
        ),
        (Method::DELETE, g(format!("/v1/api-keys/{key_id}")), None),
    ];
    for (method, url, body) in &attempts {
        let (status, answer) = call(&client, method.clone(), url, globex_admin, body.clone()).await;
        assert_eq!(status, 404, "globex's admin {method} {url}: {answer}");
        assert_eq!(answer["error"]["code"], "not_found", "{answer}");
    }
    // Lists hold only the caller's tenant.
    let (_, users) = call(
        &client,
        Method::GET,
        &g("/v1/users".into()),
        globex_admin,
        None,
    )
    .await;
    let names: Vec<&str> = users["users"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|u| u["username"].as_str())
        .collect();
    assert_eq!(names, ["admin"], "{users}");
    let (_, keys) = call(
        &client,
        Method::GET,
        &g("/v1/api-keys".into()),
        globex_admin,
        None,
    )
    .await;
    assert_eq!(keys["api_keys"], json!([]), "{keys}");
    let (_, tenants) = call(
        &client,
        Method::GET,
        &g("/v1/tenants".into()),
        globex_admin,
        None,
    )
    .await;
    assert_eq!(tenants["tenants"].as_array().unwrap().len(), 1, "{tenants}");
    assert_eq!(tenants["tenants"][0]["slug"], "globex");

    // And nothing of acme changed.
    let bob_token = login(&client, &gateway, "acme", "bob", PASSWORD).await;
    assert_eq!(
        me_of(&client, &gateway, &bob_token).await["username"],
        "bob"
    );
    let (_, tenant) = call(
        &client,
        Method::GET,
        &g(format!("/v1/tenants/{acme_id}")),
        acme_admin,
        None,
    )
    .await;
    assert_eq!(tenant["display_name"], "acme");
    let (_, keys) = call(
        &client,
        Method::GET,
        &g("/v1/api-keys".into()),
        acme_admin,
        None,
    )
    .await;
    assert_eq!(keys["api_keys"].as_array().unwrap().len(), 1, "{keys}");
}
