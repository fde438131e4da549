//! Capsules through the gateway, as publishers, reviewers and tenants use them: a
//! publisher key, signed and attested submissions (and the ones refused), review by
//! someone else, install, execute as a session with the capsule's persona, input
//! schema and tools, upgrade, rollback, ratings and counts; another tenant sees none of
//! a private capsule; a revoked key or a row edited behind the repository's back stops
//! a capsule from running.

use reqwest::Method;
use serde_json::{Value, json};
use sqlx::Connection;

use crate::helpers::{Backends, login, other_tenant_admin, viewer_of, with_scripted_llm};
use crate::lifecycle::call;

/// A publisher's key pair, as a publisher's own tooling would hold it.
struct Publisher {
    key: somagent_common::auth::SigningKey,
}

impl Publisher {
    fn new() -> Self {
        Self {
            key: somagent_common::auth::SigningKey::generate().unwrap(),
        }
    }

    fn public_key(&self) -> String {
        data_encoding::BASE64URL_NOPAD.encode(self.key.public_key())
    }

    /// SHA-256 of the definition with its keys sorted and no whitespace (serde_json's
    /// maps are sorted), and the signature of what the platform says it signs.
    fn sign(&self, definition: &Value) -> (String, String) {
        let canonical = definition.to_string();
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, canonical.as_bytes());
        let hash = data_encoding::HEXLOWER.encode(digest.as_ref());
        let message = format!(
            "somagent-capsule:v1\n{}\n{}\n{hash}",
            definition["id"].as_str().unwrap(),
            definition["version"].as_str().unwrap()
        );
        let signature =
            data_encoding::BASE64URL_NOPAD.encode(&self.key.sign_bytes(message.as_bytes()));
        (hash, signature)
    }

    fn submission(&self, key_id: &str, definition: &Value, visibility: &str) -> Value {
        let (hash, signature) = self.sign(definition);
        json!({"definition": definition, "attestation_hash": hash, "signature": signature,
               "key_id": key_id, "visibility": visibility, "notes": "first cut"})
    }
}

fn owl_expert(version: &str, persona: &str) -> Value {
    json!({
        "id": "owl-expert", "version": version, "kind": "task", "name": "Owl expert",
        "summary": "Knows everything about owls", "category": "nature", "tags": ["birds", "owls"],
        "persona": persona,
        "input_schema": {"type": "object", "required": ["topic"],
                         "properties": {"topic": {"type": "string", "minLength": 2}}},
        "prompt_template": "Tell me about {{topic}}.",
        "tools": [],
        "limits": {"max_rounds": 2, "max_tokens": 4000}
    })
}

/// Waits until the session is idle again and returns the request the model got for
/// its last turn.
async fn last_turn(
    client: &reqwest::Client,
    gateway: &str,
    token: &str,
    session: &str,
    llm: &somagent_scripted_llm::ScriptedLlm,
) -> Value {
    for _ in 0..200 {
        let (status, s) = call(
            client,
            Method::GET,
            &format!("{gateway}/v1/sessions/{session}"),
            token,
            None,
        )
        .await;
        assert_eq!(status, 200, "{s}");
        if s["status"] == "idle" {
            let (_, messages) = call(
                client,
                Method::GET,
                &format!("{gateway}/v1/sessions/{session}/messages"),
                token,
                None,
            )
            .await;
            let last = messages["messages"]
                .as_array()
                .unwrap()
                .last()
                .cloned()
                .unwrap();
            assert_eq!(last["role"], "assistant", "{messages}");
            return llm.requests().last().cloned().unwrap();
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("session {session} never finished its turn");
}

fn system_prompt(request: &Value) -> String {
    let first = &request["messages"][0];
    assert_eq!(first["role"], "system", "{request}");
    first["content"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_capsule_is_published_reviewed_installed_run_upgraded_and_rolled_back() {
    let (llm, rooted) = with_scripted_llm(Backends::Embedded, &[]).await;
    let (client, gateway, root) = (
        rooted.client.clone(),
        rooted.gateway.clone(),
        rooted.root.clone(),
    );
    let g = |path: &str| format!("{gateway}{path}");
    // A developer publishes; the tenant's admin (root) reviews.
    let (status, dev) = call(
        &client,
        Method::POST,
        &g("/v1/users"),
        &root,
        Some(json!({"username": "dev", "password": "a long developer passphrase", "roles": ["developer"]})),
    )
    .await;
    assert_eq!(status, 201, "{dev}");
    let dev = login(
        &client,
        &gateway,
        "default",
        "dev",
        "a long developer passphrase",
    )
    .await;
    let (viewer, _) = viewer_of(&client, &gateway, &root).await;

    let publisher = Publisher::new();
    let (status, refused) = call(
        &client,
        Method::POST,
        &g("/v1/capsules/keys"),
        &viewer,
        Some(json!({"name": "viewer key", "public_key": publisher.public_key()})),
    )
    .await;
    assert_eq!(status, 403, "a viewer publishes nothing: {refused}");
    let (status, bad) = call(
        &client,
        Method::POST,
        &g("/v1/capsules/keys"),
        &dev,
        Some(json!({"name": "short", "public_key": "AAAA"})),
    )
    .await;
    assert_eq!(status, 422, "{bad}");
    let (status, key) = call(
        &client,
        Method::POST,
        &g("/v1/capsules/keys"),
        &dev,
        Some(json!({"name": "release key", "public_key": publisher.public_key()})),
    )
    .await;
    assert_eq!(status, 201, "{key}");
    let key_id = key["id"].as_str().unwrap().to_owned();

    // Submissions the repository refuses: a wrong attestation, a signature by another
    // key, a definition that breaks the rules.
    let v1 = owl_expert("1.0.0", "You are OWL-PERSONA-ONE, an ornithologist.");
    let mut wrong_hash = publisher.submission(&key_id, &v1, "private");
    wrong_hash["attestation_hash"] = json!("00".repeat(32));
    let (status, problem) = call(
        &client,
        Method::POST,
        &g("/v1/capsules/submissions"),
        &dev,
        Some(wrong_hash),
    )
    .await;
    assert_eq!(status, 400, "{problem}");
    assert_eq!(
        problem["error"]["details"]["computed"],
        json!(publisher.sign(&v1).0)
    );
    let mut forged = publisher.submission(&key_id, &v1, "private");
    forged["signature"] = json!(Publisher::new().sign(&v1).1);
    let (status, problem) = call(
        &client,
        Method::POST,
        &g("/v1/capsules/submissions"),
        &dev,
        Some(forged),
    )
    .await;
    assert_eq!(status, 400, "{problem}");
    assert!(
        problem["error"]["message"]
            .as_str()
            .unwrap()
            .contains("signature"),
        "{problem}"
    );
    let mut broken = v1.clone();
    broken["id"] = json!("Owl Expert");
    let (status, problem) = call(
        &client,
        Method::POST,
        &g("/v1/capsules/submissions"),
        &dev,
        Some(publisher.submission(&key_id, &broken, "private")),
    )
    .await;
    assert_eq!(status, 422, "{problem}");
    assert!(
        problem["error"]["details"]["fields"]["definition.id"].is_string(),
        "{problem}"
    );

    let (status, submitted) = call(
        &client,
        Method::POST,
        &g("/v1/capsules/submissions"),
        &dev,
        Some(publisher.submission(&key_id, &v1, "private")),
    )
    .await;
    assert_eq!(status, 201, "{submitted}");
    assert_eq!(submitted["status"], "pending");
    let first = submitted["id"].as_str().unwrap().to_owned();
    let (status, again) = call(
        &client,
        Method::POST,
        &g("/v1/capsules/submissions"),
        &dev,
        Some(publisher.submission(&key_id, &v1, "private")),
    )
    .await;
    assert_eq!(status, 409, "a version is immutable: {again}");
    // Not installable before review.
    let (status, _) = call(
        &client,
        Method::POST,
        &g("/v1/capsules/owl-expert/installations"),
        &dev,
        Some(json!({})),
    )
    .await;
    assert_eq!(status, 404);

    // The developer cannot review; root approves; a second review is a conflict.
    let review = |id: &str| g(&format!("/v1/capsules/submissions/{id}/review"));
    let (status, _) = call(
        &client,
        Method::POST,
        &review(&first),
        &dev,
        Some(json!({"decision": "approve"})),
    )
    .await;
    assert_eq!(status, 403);
    let (status, problem) = call(
        &client,
        Method::POST,
        &review(&first),
        &root,
        Some(json!({"decision": "reject"})),
    )
    .await;
    assert_eq!(status, 422, "a rejection says why: {problem}");
    let (status, approved) = call(
        &client,
        Method::POST,
        &review(&first),
        &root,
        Some(json!({"decision": "approve", "notes": "good owls"})),
    )
    .await;
    assert_eq!(status, 200, "{approved}");
    assert_eq!(approved["status"], "approved");
    assert_eq!(approved["review"]["notes"], "good owls");
    let (status, _) = call(
        &client,
        Method::POST,
        &review(&first),
        &root,
        Some(json!({"decision": "approve"})),
    )
    .await;
    assert_eq!(status, 409);

    // Root publishes too (with its own key) and cannot approve its own submission.
    let root_publisher = Publisher::new();
    let (_, root_key) = call(
        &client,
        Method::POST,
        &g("/v1/capsules/keys"),
        &root,
        Some(json!({"name": "root key", "public_key": root_publisher.public_key()})),
    )
    .await;
    let mine = json!({"id": "root-helper", "version": "0.1.0", "kind": "agent", "name": "Root helper",
                      "persona": "You help root."});
    let (status, own) = call(
        &client,
        Method::POST,
        &g("/v1/capsules/submissions"),
        &root,
        Some(root_publisher.submission(root_key["id"].as_str().unwrap(), &mine, "private")),
    )
    .await;
    assert_eq!(status, 201, "{own}");
    let (status, problem) = call(
        &client,
        Method::POST,
        &review(own["id"].as_str().unwrap()),
        &root,
        Some(json!({"decision": "approve"})),
    )
    .await;
    assert_eq!(status, 403, "{problem}");

    // Another tenant sees none of the private capsule.
    let hank = other_tenant_admin(&client, &gateway, &root).await;
    let (_, theirs) = call(&client, Method::GET, &g("/v1/capsules"), &hank, None).await;
    let ids: Vec<&str> = theirs["capsules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert!(!ids.contains(&"owl-expert"), "{theirs}");
    assert!(
        ids.contains(&"kamachiq-planner"),
        "the platform's own are everyone's: {theirs}"
    );
    for (method, path, body) in [
        (Method::GET, "/v1/capsules/owl-expert".to_owned(), None),
        (
            Method::POST,
            "/v1/capsules/owl-expert/installations".to_owned(),
            Some(json!({})),
        ),
        (
            Method::GET,
            format!("/v1/capsules/submissions/{first}"),
            None,
        ),
        (
            Method::POST,
            "/v1/capsules/owl-expert/execute".to_owned(),
            Some(json!({"input": {"topic": "owls"}})),
        ),
        (
            Method::PUT,
            "/v1/capsules/owl-expert/rating".to_owned(),
            Some(json!({"stars": 1})),
        ),
    ] {
        let (status, answer) = call(&client, method, &g(&path), &hank, body).await;
        assert_eq!(status, 404, "{path}: {answer}");
    }
    // Nor can it publish under the id, or sign with this tenant's key.
    let hank_publisher = Publisher::new();
    let (_, hank_key) = call(
        &client,
        Method::POST,
        &g("/v1/capsules/keys"),
        &hank,
        Some(json!({"name": "hank", "public_key": hank_publisher.public_key()})),
    )
    .await;
    let hijack = owl_expert("9.0.0", "You are an impostor.");
    let (status, problem) = call(
        &client,
        Method::POST,
        &g("/v1/capsules/submissions"),
        &hank,
        Some(hank_publisher.submission(hank_key["id"].as_str().unwrap(), &hijack, "public")),
    )
    .await;
    assert_eq!(status, 409, "{problem}");
    let (status, problem) = call(
        &client,
        Method::POST,
        &g("/v1/capsules/submissions"),
        &hank,
        Some(publisher.submission(
            &key_id,
            &json!({"id": "hank-owl", "version": "1.0.0", "kind": "agent",
            "name": "x", "persona": "x"}),
            "private",
        )),
    )
    .await;
    assert_eq!(status, 400, "another tenant's key: {problem}");

    // Search and install.
    let (_, found) = call(
        &client,
        Method::GET,
        &g("/v1/capsules?q=owls%20birds"),
        &viewer,
        None,
    )
    .await;
    let found = found["capsules"].as_array().unwrap();
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(
        (found[0]["id"].as_str(), found[0]["official"].as_bool()),
        (Some("owl-expert"), Some(false))
    );
    let (status, _) = call(
        &client,
        Method::POST,
        &g("/v1/capsules/owl-expert/installations"),
        &viewer,
        Some(json!({})),
    )
    .await;
    assert_eq!(status, 403, "a viewer installs nothing");
    let (status, installed) = call(
        &client,
        Method::POST,
        &g("/v1/capsules/owl-expert/installations"),
        &dev,
        Some(json!({"environment": "prod"})),
    )
    .await;
    assert_eq!(status, 200, "{installed}");
    assert_eq!(installed["version"], "1.0.0");

    // Execute: the input is checked against the schema, then runs as a session whose
    // prompt starts with the persona and whose first message is the rendered input.
    let execute = g("/v1/capsules/owl-expert/execute");
    let (status, problem) = call(
        &client,
        Method::POST,
        &execute,
        &dev,
        Some(json!({"input": {"subject": "owls"}})),
    )
    .await;
    assert_eq!(status, 422, "{problem}");
    assert!(
        problem["error"]["message"]
            .as_str()
            .unwrap()
            .contains("topic"),
        "{problem}"
    );
    let (status, run) = call(
        &client,
        Method::POST,
        &execute,
        &dev,
        Some(json!({"input": {"topic": "snowy owls"}})),
    )
    .await;
    assert_eq!(status, 202, "{run}");
    assert_eq!(run["capsule"]["version"], "1.0.0");
    let session = run["session_id"].as_str().unwrap().to_owned();
    let request = last_turn(&client, &gateway, &dev, &session, &llm).await;
    assert!(
        system_prompt(&request).contains("OWL-PERSONA-ONE"),
        "{request}"
    );
    let messages = request["messages"].as_array().unwrap();
    assert_eq!(
        messages.last().unwrap()["content"],
        "Tell me about snowy owls."
    );
    assert!(
        request
            .get("tools")
            .is_none_or(|t| t.as_array().is_none_or(Vec::is_empty)),
        "a capsule with no tools is offered none: {request}"
    );
    let (_, s) = call(
        &client,
        Method::GET,
        &g(&format!("/v1/sessions/{session}")),
        &dev,
        None,
    )
    .await;
    assert_eq!(s["capsule_id"], "owl-expert");

    // Upgrade to 1.1.0: the next turn of the same session runs the new persona.
    let v2 = owl_expert("1.1.0", "You are OWL-PERSONA-TWO, a field biologist.");
    let (_, second) = call(
        &client,
        Method::POST,
        &g("/v1/capsules/submissions"),
        &dev,
        Some(publisher.submission(&key_id, &v2, "private")),
    )
    .await;
    let (status, _) = call(
        &client,
        Method::POST,
        &review(second["id"].as_str().unwrap()),
        &root,
        Some(json!({"decision": "approve"})),
    )
    .await;
    assert_eq!(status, 200);
    let (_, upgraded) = call(
        &client,
        Method::POST,
        &g("/v1/capsules/owl-expert/installations"),
        &dev,
        Some(json!({})),
    )
    .await;
    assert_eq!(
        (
            upgraded["version"].as_str(),
            upgraded["previous_version"].as_str()
        ),
        (Some("1.1.0"), Some("1.0.0"))
    );
    let (status, answer) = call(
        &client,
        Method::POST,
        &g(&format!("/v1/sessions/{session}/messages")),
        &dev,
        Some(json!({"content": "And barn owls?"})),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert!(system_prompt(&llm.requests().last().cloned().unwrap()).contains("OWL-PERSONA-TWO"));

    // Roll back once; twice is a conflict.
    let rollback = g("/v1/capsules/owl-expert/installations/prod/rollback");
    let (status, back) = call(&client, Method::POST, &rollback, &dev, None).await;
    assert_eq!(
        (status, back["version"].as_str()),
        (200, Some("1.0.0")),
        "{back}"
    );
    let (status, _) = call(&client, Method::POST, &rollback, &dev, None).await;
    assert_eq!(status, 409);
    let (_, run) = call(
        &client,
        Method::POST,
        &execute,
        &dev,
        Some(json!({"input": {"topic": "owlets"}})),
    )
    .await;
    let request = last_turn(
        &client,
        &gateway,
        &dev,
        run["session_id"].as_str().unwrap(),
        &llm,
    )
    .await;
    assert!(
        system_prompt(&request).contains("OWL-PERSONA-ONE"),
        "{request}"
    );

    // Ratings (one per user, editable), downloads and runs show in the catalog.
    for (token, stars) in [(&dev, 2), (&dev, 5), (&viewer, 3)] {
        let (status, rated) = call(
            &client,
            Method::PUT,
            &g("/v1/capsules/owl-expert/rating"),
            token,
            Some(json!({"stars": stars, "comment": "hoot"})),
        )
        .await;
        assert_eq!(status, 200, "{rated}");
    }
    let (status, _) = call(
        &client,
        Method::PUT,
        &g("/v1/capsules/owl-expert/rating"),
        &dev,
        Some(json!({"stars": 6})),
    )
    .await;
    assert_eq!(status, 422);
    let (status, download) = call(
        &client,
        Method::GET,
        &g("/v1/capsules/owl-expert/download?version=1.1.0"),
        &viewer,
        None,
    )
    .await;
    assert_eq!(status, 200, "{download}");
    assert_eq!(download["public_key"], json!(publisher.public_key()));
    assert_eq!(download["attestation_hash"], json!(publisher.sign(&v2).0));
    let (_, capsule) = call(
        &client,
        Method::GET,
        &g("/v1/capsules/owl-expert"),
        &viewer,
        None,
    )
    .await;
    assert_eq!(
        capsule["rating"],
        json!({"average": 4.0, "count": 2}),
        "{capsule}"
    );
    assert_eq!(capsule["runs"], 2, "two sessions ran it: {capsule}");
    assert_eq!(
        capsule["downloads"], 3,
        "two installs and a download: {capsule}"
    );
    assert_eq!(capsule["versions"].as_array().unwrap().len(), 2);
    assert_eq!(capsule["installations"][0]["version"], "1.0.0");

    // A capsule of the platform's runs without installing it: `POST /v1/sessions` with
    // its id.
    let (status, s) = call(
        &client,
        Method::POST,
        &g("/v1/sessions"),
        &dev,
        Some(json!({"capsule_id": "research-assistant", "prompt": "What do we know about owls?"})),
    )
    .await;
    assert_eq!(status, 201, "{s}");
    let request = last_turn(
        &client,
        &gateway,
        &dev,
        s["session_id"].as_str().unwrap(),
        &llm,
    )
    .await;
    assert!(
        system_prompt(&request).contains("research assistant"),
        "{request}"
    );
    let (status, problem) = call(
        &client,
        Method::POST,
        &g("/v1/sessions"),
        &dev,
        Some(json!({"capsule_id": "no-such-capsule"})),
    )
    .await;
    assert_eq!(status, 404, "{problem}");

    // A revoked key stops what it signed from running, even in an open session.
    let (status, _) = call(
        &client,
        Method::DELETE,
        &g(&format!("/v1/capsules/keys/{key_id}")),
        &dev,
        None,
    )
    .await;
    assert_eq!(status, 200);
    let (status, problem) = call(
        &client,
        Method::POST,
        &execute,
        &dev,
        Some(json!({"input": {"topic": "owls"}})),
    )
    .await;
    assert_eq!(status, 409, "{problem}");
    assert!(
        problem["error"]["message"]
            .as_str()
            .unwrap()
            .contains("revoked"),
        "{problem}"
    );
    let (status, problem) = call(
        &client,
        Method::POST,
        &g(&format!("/v1/sessions/{session}/messages")),
        &dev,
        Some(json!({"content": "Still there?"})),
    )
    .await;
    assert_eq!(status, 409, "{problem}");
    let (status, _) = call(
        &client,
        Method::DELETE,
        &g("/v1/capsules/owl-expert/installations/prod"),
        &dev,
        None,
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = call(
        &client,
        Method::POST,
        &execute,
        &dev,
        Some(json!({"input": {"topic": "owls"}})),
    )
    .await;
    assert_eq!(status, 404, "uninstalled");

    // A platform capsule whose stored definition was edited behind the repository's
    // back is refused, not run.
    let url = format!(
        "sqlite://{}",
        rooted.data.path().join("capsule-repo.db").display()
    );
    let mut db = sqlx::SqliteConnection::connect(&url).await.unwrap();
    sqlx::query("UPDATE capsule_packages SET definition = replace(definition, 'careful', 'careless') WHERE capsule_id = 'research-assistant'")
        .execute(&mut db)
        .await
        .unwrap();
    db.close().await.unwrap();
    let (status, problem) = call(
        &client,
        Method::POST,
        &g("/v1/sessions"),
        &dev,
        Some(json!({"capsule_id": "research-assistant"})),
    )
    .await;
    assert_eq!(status, 409, "{problem}");
    assert!(
        problem["error"]["message"]
            .as_str()
            .unwrap()
            .contains("attestation"),
        "{problem}"
    );
}
