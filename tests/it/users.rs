//! A tenant admin manages the tenant's users; roles decide what each may do; users of
//! one tenant never see another's.

use serde_json::{Value, json};

use crate::helpers::{Backends, Rooted, login, with_root_on};

#[tokio::test]
async fn a_tenant_admin_adds_users_whose_roles_decide_what_they_may_do() {
    for backends in Backends::all() {
        a_tenant_admin_adds_users_whose_roles_decide_what_they_may_do_on(backends).await;
    }
}

async fn a_tenant_admin_adds_users_whose_roles_decide_what_they_may_do_on(backends: Backends) {
    let Rooted {
        platform,
        gateway,
        client,
        root,
        data: _data,
        ..
    } = with_root_on(backends, &[]).await;
    let created = client
        .post(format!("{gateway}/v1/tenants"))
        .bearer_auth(&root)
        .json(&json!({"slug": "acme", "display_name": "Acme", "admin": {"username": "alice", "password": "alice's long passphrase"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let alice = login(
        &client,
        &gateway,
        "acme",
        "alice",
        "alice's long passphrase",
    )
    .await;
    let users = format!("{gateway}/v1/users");

    let add = |username: &'static str, roles: Value| {
        let (client, users, alice) = (client.clone(), users.clone(), alice.clone());
        async move {
            let response = client
                .post(users)
                .bearer_auth(alice)
                .json(&json!({"username": username, "password": "a long user passphrase", "roles": roles}))
                .send()
                .await
                .unwrap();
            (
                response.status().as_u16(),
                response.json::<Value>().await.unwrap(),
            )
        }
    };
    let (status, bob) = add("bob", json!(["operator"])).await;
    assert_eq!(status, 201, "{bob}");
    assert_eq!(bob["roles"], json!(["operator"]));
    let (status, _) = add("carol", json!(["viewer"])).await;
    assert_eq!(status, 201);
    let (status, problem) = add("bob", json!(["viewer"])).await;
    assert_eq!(
        (status, problem["error"]["code"].as_str()),
        (409, Some("conflict"))
    );
    let (status, problem) = add("dave", json!(["superuser"])).await;
    assert_eq!(
        (status, problem["error"]["code"].as_str()),
        (422, Some("validation_failed"))
    );
    assert!(
        problem["error"]["message"]
            .as_str()
            .unwrap()
            .contains("superuser"),
        "{problem}"
    );
    let (status, _) = add("erin", json!([])).await;
    assert_eq!(status, 422);

    // Bob, an operator, may run work but not manage users.
    let bob_token = login(&client, &gateway, "acme", "bob", "a long user passphrase").await;
    let me: Value = client
        .get(format!("{gateway}/v1/me"))
        .bearer_auth(&bob_token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let caps: Vec<&str> = me["capabilities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    assert!(
        caps.contains(&"sessions:write") && caps.contains(&"tools:invoke"),
        "{caps:?}"
    );
    assert!(
        !caps.contains(&"users:read") && !caps.contains(&"capsules:write"),
        "{caps:?}"
    );
    let denied = client
        .get(&users)
        .bearer_auth(&bob_token)
        .send()
        .await
        .unwrap();
    assert_eq!(denied.status(), 403);
    let problem: Value = denied.json().await.unwrap();
    assert_eq!(
        problem["error"]["details"]["missing_capability"],
        "users:read"
    );
    let denied = client
        .post(&users)
        .bearer_auth(&bob_token)
        .json(&json!({"username": "mallory", "password": "a long user passphrase", "roles": ["admin"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(denied.status(), 403, "an operator cannot make an admin");

    // Alice lists her tenant's users; the platform admin's tenant is not in it.
    let listed: Value = client
        .get(&users)
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let names: Vec<&str> = listed["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["username"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["alice", "bob", "carol"]);
    let bob_id = bob["id"].as_str().unwrap();
    assert_eq!(
        client
            .get(format!("{users}/{bob_id}"))
            .bearer_auth(&alice)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    // Across tenants a user id is "not found", whoever asks.
    let root_view = client
        .get(format!("{users}/{bob_id}"))
        .bearer_auth(&root)
        .send()
        .await
        .unwrap();
    assert_eq!(root_view.status(), 404);
    let root_users: Value = client
        .get(&users)
        .bearer_auth(&root)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let root_names: Vec<&str> = root_users["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["username"].as_str().unwrap())
        .collect();
    assert_eq!(root_names, ["admin"]);
    let admin_id = root_users["users"][0]["id"].as_str().unwrap();
    assert_eq!(
        client
            .get(format!("{users}/{admin_id}"))
            .bearer_auth(&alice)
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    drop(platform);
}
