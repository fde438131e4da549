//! Onboarding a tenant through the gateway, and tenant isolation on `/v1/tenants`.

use serde_json::{Value, json};

use crate::helpers::{Backends, Rooted, login, with_root, with_root_on};

#[tokio::test]
async fn a_platform_admin_onboards_a_tenant_whose_admin_sees_only_it() {
    for backends in Backends::all() {
        a_platform_admin_onboards_a_tenant_whose_admin_sees_only_it_on(backends).await;
    }
}

async fn a_platform_admin_onboards_a_tenant_whose_admin_sees_only_it_on(backends: Backends) {
    let Rooted {
        platform,
        gateway,
        client,
        root,
        data: _data,
        ..
    } = with_root_on(backends, &[]).await;
    let tenants = format!("{gateway}/v1/tenants");

    let created = client
        .post(&tenants)
        .bearer_auth(&root)
        .json(&json!({"slug": "acme", "display_name": "Acme Inc.", "admin": {"username": "alice", "password": "alice's long passphrase"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let acme: Value = created.json().await.unwrap();
    assert_eq!(acme["slug"], "acme");
    assert_eq!(acme["status"], "active");
    let acme_id = acme["id"].as_str().unwrap().to_owned();

    // Refusals, each with nothing written.
    let attempts = [
        (
            json!({"slug": "acme", "display_name": "Again", "admin": {"username": "bob", "password": "bob's long passphrase"}}),
            409,
            "conflict",
        ),
        (
            json!({"slug": "Not A Slug", "display_name": "X", "admin": {"username": "bob", "password": "bob's long passphrase"}}),
            422,
            "validation_failed",
        ),
        (
            json!({"slug": "globex", "display_name": "Globex", "admin": {"username": "bob", "password": "short"}}),
            422,
            "validation_failed",
        ),
        (
            json!({"slug": "globex", "display_name": "Globex"}),
            422,
            "validation_failed",
        ),
        (
            json!({"slug": "globex", "display_name": "Globex", "admin": {"username": "bob", "password": "bob's long passphrase"}, "plan": "gold"}),
            422,
            "validation_failed",
        ),
    ];
    for (body, status, code) in attempts {
        let response = client
            .post(&tenants)
            .bearer_auth(&root)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), status, "{body}");
        let problem: Value = response.json().await.unwrap();
        assert_eq!(problem["error"]["code"], code, "{problem}");
    }
    let weak = client.post(&tenants).bearer_auth(&root).json(&json!({"slug": "globex", "display_name": "Globex", "admin": {"username": "bob", "password": "short"}})).send().await.unwrap();
    let problem: Value = weak.json().await.unwrap();
    assert!(
        problem["error"]["message"]
            .as_str()
            .unwrap()
            .contains("admin.password"),
        "{problem}"
    );
    let malformed = client
        .post(&tenants)
        .bearer_auth(&root)
        .header("content-type", "application/json")
        .body("{oops")
        .send()
        .await
        .unwrap();
    assert_eq!(malformed.status(), 400);
    let all: Value = client
        .get(&tenants)
        .bearer_auth(&root)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let slugs: Vec<&str> = all["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["slug"].as_str().unwrap())
        .collect();
    assert_eq!(slugs, ["default", "acme"], "nothing half-written");

    // Acme's admin logs in to acme and sees acme only.
    let alice = login(
        &client,
        &gateway,
        "acme",
        "alice",
        "alice's long passphrase",
    )
    .await;
    let me: Value = client
        .get(format!("{gateway}/v1/me"))
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["tenant"], acme_id.as_str());
    assert_eq!(me["roles"], json!(["admin"]));
    let mine: Value = client
        .get(&tenants)
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(mine["tenants"].as_array().unwrap().len(), 1);
    assert_eq!(mine["tenants"][0]["id"], acme_id.as_str());
    let default_id = all["tenants"][0]["id"].as_str().unwrap();
    let probe = client
        .get(format!("{tenants}/{default_id}"))
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap();
    assert_eq!(
        probe.status(),
        404,
        "another tenant's id looks like no tenant"
    );
    let own = client
        .get(format!("{tenants}/{acme_id}"))
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap();
    assert_eq!(own.status(), 200);
    // A tenant admin is not a platform admin.
    let denied = client
        .post(&tenants)
        .bearer_auth(&alice)
        .json(&json!({"slug": "globex", "display_name": "Globex", "admin": {"username": "bob", "password": "bob's long passphrase"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(denied.status(), 403);
    let problem: Value = denied.json().await.unwrap();
    assert_eq!(
        problem["error"]["details"]["missing_capability"],
        "platform:admin"
    );
    // The same user name in another tenant is another user: alice cannot log in to default.
    let wrong_tenant = client
        .post(format!("{gateway}/v1/auth/token"))
        .form(&[
            ("grant_type", "password"),
            ("tenant", "default"),
            ("username", "alice"),
            ("password", "alice's long passphrase"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(wrong_tenant.status(), 401);
    // Without a token: 401, before anything else.
    assert_eq!(client.get(&tenants).send().await.unwrap().status(), 401);
    drop(platform);
}

#[tokio::test]
async fn tenants_page_with_a_cursor() {
    let Rooted {
        platform,
        gateway,
        client,
        root,
        data: _data,
        ..
    } = with_root().await;
    for i in 0..4 {
        let body = json!({"slug": format!("t{i}"), "display_name": format!("T{i}"), "admin": {"username": "admin", "password": "a long enough passphrase"}});
        let response = client
            .post(format!("{gateway}/v1/tenants"))
            .bearer_auth(&root)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut url = format!("{gateway}/v1/tenants?limit=2");
        if let Some(c) = &cursor {
            url.push_str(&format!("&cursor={c}"));
        }
        let page: Value = client
            .get(url)
            .bearer_auth(&root)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let items = page["tenants"].as_array().unwrap();
        assert!(items.len() <= 2);
        seen.extend(items.iter().map(|t| t["slug"].as_str().unwrap().to_owned()));
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen, ["default", "t0", "t1", "t2", "t3"]);
    drop(platform);
}
