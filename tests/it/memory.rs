//! Memory through the gateway, as a client would use it: memories per scope (remember,
//! recall, forget, expire), documents (Markdown as JSON, PDF as a multipart upload)
//! ingested with progress, hybrid search and passages to cite, deletes for real, and
//! nothing of it visible to another user's scope or another tenant. On the embedded
//! backends and on the real servers (PostgreSQL, Qdrant, Temporal) under CI.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{Backends, Rooted, login, other_tenant_admin, with_scripted_llm};
use crate::lifecycle::call;

const PASSWORD: &str = "a memory tester's passphrase";

/// The scripted upstream's lexical embeddings: deterministic, so a test knows which
/// passage a question finds.
pub const EMBEDDINGS: [(&str, &str); 2] = [
    ("SOMAGENT_SLM__EMBEDDING_MODEL", "hashed-256"),
    ("SOMAGENT_SLM__EMBEDDING_DIMENSIONS", "256"),
];

pub const GUIDE: &str = "# Zephyr-9 kettle\n\nThe Zephyr-9 is a 1.7 litre electric kettle.\n\n\
## Warranty\n\nThe Zephyr-9 warranty lasts 24 months from the date of purchase. Keep the receipt.\n\n\
## Descaling\n\nDescale the kettle every four weeks with citric acid.\n";

/// A one-page PDF whose text is `lines`, in Helvetica: what a real PDF writer makes,
/// with its cross-reference table at the right offsets.
pub fn pdf(lines: &[&str]) -> Vec<u8> {
    let mut content = String::from("BT /F1 12 Tf 14 TL 72 720 Td\n");
    for line in lines {
        content.push_str(&format!(
            "({}) Tj T*\n",
            line.replace('(', "\\(").replace(')', "\\)")
        ));
    }
    content.push_str("ET\n");
    let objects = [
        "<< /Type /Catalog /Pages 2 0 R >>".to_owned(),
        "<< /Type /Pages /Kids [3 0 R] /Count 1 >>".to_owned(),
        "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R /Resources << /Font << /F1 5 0 R >> >> >>".to_owned(),
        format!("<< /Length {} >>\nstream\n{content}endstream", content.len()),
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>".to_owned(),
    ];
    let mut out = b"%PDF-1.4\n".to_vec();
    let mut offsets = Vec::new();
    for (i, object) in objects.iter().enumerate() {
        offsets.push(out.len());
        out.extend_from_slice(format!("{} 0 obj\n{object}\nendobj\n", i + 1).as_bytes());
    }
    let xref = out.len();
    out.extend_from_slice(
        format!("xref\n0 {}\n0000000000 65535 f \n", objects.len() + 1).as_bytes(),
    );
    for offset in offsets {
        out.extend_from_slice(format!("{offset:010} 00000 n \n").as_bytes());
    }
    out.extend_from_slice(
        format!(
            "trailer\n<< /Size {} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n",
            objects.len() + 1
        )
        .as_bytes(),
    );
    out
}

/// Waits for the document's ingestion to end; the document as it ended.
pub async fn ingested(client: &reqwest::Client, gateway: &str, token: &str, id: &str) -> Value {
    ingested_within(client, gateway, token, id, Duration::from_secs(30)).await
}

/// [`ingested`], waiting up to `wait`.
async fn ingested_within(
    client: &reqwest::Client,
    gateway: &str,
    token: &str,
    id: &str,
    wait: Duration,
) -> Value {
    let mut seen_progress = false;
    for _ in 0..wait.as_millis() / 100 {
        let (status, doc) = call(
            client,
            Method::GET,
            &format!("{gateway}/v1/memory/documents/{id}"),
            token,
            None,
        )
        .await;
        assert_eq!(status, 200, "{doc}");
        if doc["status"] != "ingesting" {
            assert!(seen_progress || doc["chunks_total"].as_u64().is_some());
            return doc;
        }
        seen_progress = true;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("document {id} is still being ingested after {wait:?}");
}

#[tokio::test]
async fn memories_documents_and_retrieval_through_the_gateway() {
    for backends in Backends::all() {
        memory_journey(backends).await;
    }
}

async fn memory_journey(backends: Backends) {
    let (
        _llm,
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
    let (status, bob) = call(
        &client,
        Method::POST,
        &g("/v1/users"),
        &root,
        Some(json!({"username": "bob", "password": PASSWORD, "roles": ["operator"]})),
    )
    .await;
    assert_eq!(status, 201, "{bob}");
    let bob = login(&client, &gateway, "default", "bob", PASSWORD).await;

    // Remember, recall, list.
    let (status, memory) = call(
        &client,
        Method::PUT,
        &g("/v1/memory/user/favourite-colour"),
        &root,
        Some(json!({"text": "My favourite colour is teal", "metadata": {"topic": "prefs"}})),
    )
    .await;
    assert_eq!(status, 200, "{backends:?}: {memory}");
    assert_eq!(memory["model"], "hashed-256");
    assert_eq!(memory["dimensions"], 256);
    assert_eq!(memory["scope"], "user");
    let (status, again) = call(
        &client,
        Method::GET,
        &g("/v1/memory/user/favourite-colour"),
        &root,
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(again["text"], "My favourite colour is teal");
    assert_eq!(again["metadata"]["topic"], "prefs");
    let (status, _) = call(
        &client,
        Method::PUT,
        &g("/v1/memory/tenant/office-hours"),
        &root,
        Some(json!({"text": "The office is open from nine to five on weekdays"})),
    )
    .await;
    assert_eq!(status, 200);
    let (_, listed) = call(&client, Method::GET, &g("/v1/memory/user"), &root, None).await;
    assert_eq!(listed["memories"].as_array().unwrap().len(), 1, "{listed}");

    // Search: the caller's own memories and the tenant's; another user's are not theirs.
    let (status, found) = call(
        &client,
        Method::POST,
        &g("/v1/memory/search"),
        &root,
        Some(json!({"query": "what is my favourite colour", "kinds": ["memory"]})),
    )
    .await;
    assert_eq!(status, 200, "{found}");
    assert_eq!(found["hits"][0]["key"], "favourite-colour", "{found}");
    assert!(
        found["hits"][0]["similarity"].as_f64().unwrap() > 0.3,
        "{found}"
    );
    let (_, bobs) = call(
        &client,
        Method::POST,
        &g("/v1/memory/search"),
        &bob,
        Some(json!({"query": "what is my favourite colour office"})),
    )
    .await;
    let keys: Vec<&str> = bobs["hits"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|h| h["key"].as_str())
        .collect();
    assert_eq!(keys, ["office-hours"], "{backends:?}: bob saw {bobs}");
    let (status, _) = call(
        &client,
        Method::GET,
        &g("/v1/memory/user/favourite-colour"),
        &bob,
        None,
    )
    .await;
    assert_eq!(status, 404, "bob's user scope is his own");
    // A viewer may read memory (search embeds its query for it) but not write it.
    let (status, _) = call(
        &client,
        Method::POST,
        &g("/v1/users"),
        &root,
        Some(json!({"username": "vera", "password": PASSWORD, "roles": ["viewer"]})),
    )
    .await;
    assert_eq!(status, 201);
    let vera = login(&client, &gateway, "default", "vera", PASSWORD).await;
    let (status, seen) = call(
        &client,
        Method::POST,
        &g("/v1/memory/search"),
        &vera,
        Some(json!({"query": "office opening hours"})),
    )
    .await;
    assert_eq!(status, 200, "{seen}");
    assert_eq!(seen["hits"][0]["key"], "office-hours", "{seen}");
    let (status, _) = call(
        &client,
        Method::PUT,
        &g("/v1/memory/user/mine"),
        &vera,
        Some(json!({"text": "a viewer's note"})),
    )
    .await;
    assert_eq!(status, 403);

    // A memory with a time to live is gone after it.
    let (status, _) = call(
        &client,
        Method::PUT,
        &g("/v1/memory/session:s-1/scratch"),
        &root,
        Some(json!({"text": "temporary scratch note", "ttl_seconds": 1})),
    )
    .await;
    assert_eq!(status, 200);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let (status, _) = call(
        &client,
        Method::GET,
        &g("/v1/memory/session:s-1/scratch"),
        &root,
        None,
    )
    .await;
    assert_eq!(status, 404, "an expired memory is not recalled");

    // Forget.
    let (status, _) = call(
        &client,
        Method::DELETE,
        &g("/v1/memory/user/favourite-colour"),
        &root,
        None,
    )
    .await;
    assert_eq!(status, 204);
    let (_, found) = call(
        &client,
        Method::POST,
        &g("/v1/memory/search"),
        &root,
        Some(json!({"query": "favourite colour teal", "kinds": ["memory"], "scopes": ["user"]})),
    )
    .await;
    assert_eq!(
        found["hits"],
        json!([]),
        "a forgotten memory is not found: {found}"
    );

    // Documents: Markdown as JSON, a PDF as a multipart upload, each ingested.
    let (status, guide) = call(
        &client,
        Method::POST,
        &g("/v1/memory/documents"),
        &root,
        Some(
            json!({"title": "Zephyr-9 manual", "content_type": "text/markdown", "content": GUIDE,
                    "metadata": {"team": "support"}, "source": "zephyr9.md"}),
        ),
    )
    .await;
    assert_eq!(status, 202, "{guide}");
    let guide_id = guide["id"].as_str().unwrap().to_owned();
    let guide = ingested(&client, &gateway, &root, &guide_id).await;
    assert_eq!(guide["status"], "ready", "{guide}");
    assert!(guide["chunks_total"].as_u64().unwrap() >= 3, "{guide}");
    assert_eq!(guide["chunks_done"], guide["chunks_total"]);
    let (status, same) = call(
        &client,
        Method::POST,
        &g("/v1/memory/documents"),
        &root,
        Some(json!({"content_type": "text/markdown", "content": GUIDE})),
    )
    .await;
    assert_eq!(
        (status, &same["id"], &same["duplicate"]),
        (200, &json!(guide_id), &json!(true))
    );

    let form = reqwest::multipart::Form::new()
        .text("title", "Aurora-3 toaster leaflet")
        .part(
            "file",
            reqwest::multipart::Part::bytes(pdf(&[
                "Aurora-3 toaster.",
                "The Aurora-3 browning dial has seven settings.",
                "Its crumb tray slides out from the back.",
            ]))
            .file_name("aurora3.pdf")
            .mime_str("application/pdf")
            .unwrap(),
        );
    let response = client
        .post(g("/v1/memory/documents"))
        .bearer_auth(&root)
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let leaflet: Value = response.json().await.unwrap();
    let leaflet_id = leaflet["id"].as_str().unwrap().to_owned();
    let leaflet = ingested(&client, &gateway, &root, &leaflet_id).await;
    assert_eq!(leaflet["status"], "ready", "{leaflet}");
    assert_eq!(leaflet["content_type"], "application/pdf");
    assert_eq!(leaflet["source"], "aurora3.pdf");

    // Passages to cite, from the right document and section.
    let (status, retrieved) = call(
        &client,
        Method::POST,
        &g("/v1/rag/retrieve"),
        &bob,
        Some(json!({"query": "How long does the Zephyr-9 warranty last?", "top_k": 3})),
    )
    .await;
    assert_eq!(status, 200, "{retrieved}");
    let first = &retrieved["passages"][0];
    assert_eq!(first["document_id"], json!(guide_id), "{retrieved}");
    assert!(
        first["text"].as_str().unwrap().contains("24 months"),
        "{retrieved}"
    );
    assert_eq!(first["section"], "Zephyr-9 kettle > Warranty");
    assert_eq!(first["title"], "Zephyr-9 manual");
    let (_, retrieved) = call(
        &client,
        Method::POST,
        &g("/v1/rag/retrieve"),
        &root,
        Some(json!({"query": "How many settings does the Aurora-3 browning dial have?"})),
    )
    .await;
    assert_eq!(
        retrieved["passages"][0]["document_id"],
        json!(leaflet_id),
        "{retrieved}"
    );
    assert!(
        retrieved["passages"][0]["text"]
            .as_str()
            .unwrap()
            .contains("seven settings")
    );
    // A metadata filter keeps to the documents that have it.
    let (_, filtered) = call(
        &client,
        Method::POST,
        &g("/v1/memory/search"),
        &root,
        Some(json!({"query": "Aurora-3 browning dial settings", "kinds": ["chunk"], "filter": {"team": "support"}})),
    )
    .await;
    assert!(
        filtered["hits"]
            .as_array()
            .unwrap()
            .iter()
            .all(|h| h["document_id"] == json!(guide_id)),
        "{filtered}"
    );

    // Another tenant sees none of it, and can delete none of it.
    let hank = other_tenant_admin(&client, &gateway, &root).await;
    let (status, theirs) = call(
        &client,
        Method::POST,
        &g("/v1/rag/retrieve"),
        &hank,
        Some(json!({"query": "Zephyr-9 warranty months"})),
    )
    .await;
    assert_eq!((status, &theirs["passages"]), (200, &json!([])), "{theirs}");
    let (status, _) = call(
        &client,
        Method::GET,
        &g(&format!("/v1/memory/documents/{guide_id}")),
        &hank,
        None,
    )
    .await;
    assert_eq!(status, 404);
    let (status, _) = call(
        &client,
        Method::DELETE,
        &g(&format!("/v1/memory/documents/{guide_id}")),
        &hank,
        None,
    )
    .await;
    assert_eq!(status, 404);
    let (_, theirs) = call(
        &client,
        Method::GET,
        &g("/v1/memory/tenant/office-hours"),
        &hank,
        None,
    )
    .await;
    assert_eq!(theirs["error"]["code"], "not_found");

    // Deleting a document is for real: nothing of it is found right after.
    let (status, _) = call(
        &client,
        Method::DELETE,
        &g(&format!("/v1/memory/documents/{guide_id}")),
        &root,
        None,
    )
    .await;
    assert_eq!(status, 204);
    let (_, after) = call(
        &client,
        Method::POST,
        &g("/v1/memory/search"),
        &root,
        Some(json!({"query": "Zephyr-9 warranty 24 months descale kettle", "kinds": ["chunk"], "top_k": 50})),
    )
    .await;
    assert!(
        after["hits"]
            .as_array()
            .unwrap()
            .iter()
            .all(|h| h["document_id"] != json!(guide_id)),
        "{after}"
    );
    let (status, _) = call(
        &client,
        Method::GET,
        &g(&format!("/v1/memory/documents/{guide_id}")),
        &root,
        None,
    )
    .await;
    assert_eq!(status, 404);

    // Bad input is a clear problem naming what is wrong.
    for (method, path, body, field) in [
        (
            Method::PUT,
            "/v1/memory/users/x",
            json!({"text": "x"}),
            "scope",
        ),
        (
            Method::PUT,
            "/v1/memory/user/a%2Fb",
            json!({"text": "x"}),
            "key",
        ),
        (
            Method::PUT,
            "/v1/memory/user/k",
            json!({"text": "  "}),
            "text",
        ),
        (
            Method::PUT,
            "/v1/memory/user/k",
            json!({"text": "x", "metadata": [1]}),
            "metadata",
        ),
        (
            Method::PUT,
            "/v1/memory/user/k",
            json!({"text": "x", "ttl_seconds": 0}),
            "ttl_seconds",
        ),
        (
            Method::POST,
            "/v1/memory/search",
            json!({"query": "x", "top_k": 1000}),
            "top_k",
        ),
        (
            Method::POST,
            "/v1/memory/search",
            json!({"vector": [1.0, 2.0]}),
            "vector",
        ),
        (Method::POST, "/v1/memory/search", json!({}), "query"),
        (
            Method::POST,
            "/v1/memory/search",
            json!({"query": "x", "filter": {"a": [1]}}),
            "filter",
        ),
        (
            Method::POST,
            "/v1/memory/search",
            json!({"query": "x", "kinds": ["file"]}),
            "kinds",
        ),
        (
            Method::POST,
            "/v1/memory/documents",
            json!({"content_type": "image/png", "content": "x"}),
            "content_type",
        ),
        (
            Method::POST,
            "/v1/memory/documents",
            json!({"content_type": "application/pdf", "content": "not a pdf"}),
            "content",
        ),
        (
            Method::POST,
            "/v1/memory/documents",
            json!({"content_type": "text/plain"}),
            "content",
        ),
    ] {
        let (status, problem) =
            call(&client, method.clone(), &g(path), &root, Some(body.clone())).await;
        assert_eq!(status, 422, "{method} {path} {body}: {problem}");
        assert!(
            problem["error"]["details"]["fields"].get(field).is_some(),
            "{path} {body}: {problem}"
        );
    }
    let response = client
        .post(g("/v1/memory/search"))
        .json(&json!({"query": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
}

/// The system message a chat request to the model carried, if any.
fn recalled_context(request: &Value) -> Option<String> {
    request["messages"]
        .as_array()?
        .iter()
        .find(|m| {
            m["role"] == "system"
                && m["content"]
                    .as_str()
                    .is_some_and(|c| c.starts_with("Context recalled"))
        })
        .and_then(|m| m["content"].as_str().map(str::to_owned))
}

#[tokio::test]
async fn a_session_turn_recalls_memories_and_passages_and_its_answer_cites_them() {
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
    ) = with_scripted_llm(Backends::Embedded, &EMBEDDINGS).await;
    let g = |path: &str| format!("{gateway}{path}");
    let (status, guide) = call(
        &client,
        Method::POST,
        &g("/v1/memory/documents"),
        &root,
        Some(
            json!({"title": "Zephyr-9 manual", "content_type": "text/markdown", "content": GUIDE}),
        ),
    )
    .await;
    assert_eq!(status, 202, "{guide}");
    let guide_id = guide["id"].as_str().unwrap().to_owned();
    assert_eq!(
        ingested(&client, &gateway, &root, &guide_id).await["status"],
        "ready"
    );

    let (status, session) = call(
        &client,
        Method::POST,
        &g("/v1/sessions"),
        &root,
        Some(json!({})),
    )
    .await;
    assert_eq!(status, 201, "{session}");
    let id = session["session_id"].as_str().unwrap().to_owned();
    let ask = |content: &'static str| {
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
                Some(json!({"content": content})),
            )
            .await;
            assert_eq!(status, 200, "{answer}");
            answer
        }
    };

    // The question's passages go into the prompt, and the answer cites them.
    let answer = ask("How long does the Zephyr-9 warranty last?").await;
    let citations = &answer["message"]["citations"];
    assert_eq!(citations[0]["document_id"], json!(guide_id), "{answer}");
    assert_eq!(citations[0]["section"], "Zephyr-9 kettle > Warranty");
    assert_eq!(citations[0]["title"], "Zephyr-9 manual");
    let prompt = llm.requests().last().cloned().unwrap();
    let context = recalled_context(&prompt).expect("the prompt carried what was recalled");
    assert!(
        context.contains("[1] Zephyr-9 manual — Zephyr-9 kettle > Warranty"),
        "{context}"
    );
    assert!(context.contains("24 months"), "{context}");
    // Just before the question, and not kept in the session's history.
    let messages = prompt["messages"].as_array().unwrap();
    assert_eq!(messages[messages.len() - 2]["role"], "system");
    let (_, history) = call(
        &client,
        Method::GET,
        &g(&format!("/v1/sessions/{id}/messages")),
        &root,
        None,
    )
    .await;
    assert!(
        history["messages"]
            .as_array()
            .unwrap()
            .iter()
            .all(|m| m["role"] != "system"),
        "{history}"
    );

    // What the session is told to remember, its next turns recall.
    let (status, remembered) = call(
        &client,
        Method::POST,
        &g(&format!("/v1/sessions/{id}/remember")),
        &root,
        Some(json!({"text": "The customer's name is Ada Lovelace"})),
    )
    .await;
    assert_eq!(status, 201, "{remembered}");
    assert_eq!(remembered["scope"], format!("session:{id}"));
    ask("What is the customer's name?").await;
    let context = recalled_context(&llm.requests().last().cloned().unwrap()).unwrap_or_default();
    assert!(context.contains("Ada Lovelace"), "{context}");

    // A forgotten document is recalled no more.
    let (status, _) = call(
        &client,
        Method::DELETE,
        &g(&format!("/v1/memory/documents/{guide_id}")),
        &root,
        None,
    )
    .await;
    assert_eq!(status, 204);
    let answer = ask("How long does the Zephyr-9 warranty last?").await;
    assert!(answer["message"].get("citations").is_none(), "{answer}");
    let context = recalled_context(&llm.requests().last().cloned().unwrap()).unwrap_or_default();
    assert!(!context.contains("24 months"), "{context}");

    // A session can turn recall off; another tenant's sessions recall nothing of this one.
    let (_, quiet) = call(
        &client,
        Method::POST,
        &g("/v1/sessions"),
        &root,
        Some(json!({"metadata": {"memory": {"recall": false}}})),
    )
    .await;
    let quiet_id = quiet["session_id"].as_str().unwrap();
    let (status, _) = call(
        &client,
        Method::POST,
        &g(&format!("/v1/sessions/{quiet_id}/messages")),
        &root,
        Some(json!({"content": "What is the customer's name?"})),
    )
    .await;
    assert_eq!(status, 200);
    assert!(recalled_context(&llm.requests().last().cloned().unwrap()).is_none());
    let hank = other_tenant_admin(&client, &gateway, &root).await;
    let (_, theirs) = call(
        &client,
        Method::POST,
        &g("/v1/sessions"),
        &hank,
        Some(json!({})),
    )
    .await;
    let theirs = theirs["session_id"].as_str().unwrap();
    let (status, _) = call(
        &client,
        Method::POST,
        &g(&format!("/v1/sessions/{theirs}/messages")),
        &hank,
        Some(json!({"content": "What is the customer's name? Ada?"})),
    )
    .await;
    assert_eq!(status, 200);
    let context = recalled_context(&llm.requests().last().cloned().unwrap()).unwrap_or_default();
    assert!(
        !context.contains("Lovelace"),
        "another tenant recalled: {context}"
    );
    // Nor can it write to a session that is not its own.
    let (status, _) = call(
        &client,
        Method::POST,
        &g(&format!("/v1/sessions/{id}/remember")),
        &hank,
        Some(json!({"text": "injected"})),
    )
    .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn agents_remember_recall_and_forget_with_the_built_in_memory_tool() {
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
    ) = with_scripted_llm(Backends::Embedded, &EMBEDDINGS).await;
    let g = |path: &str| format!("{gateway}{path}");
    crate::helpers::platform_profile(&client, &gateway, &root, "tool-user").await;

    // Called directly: it remembers in the caller's memory, recalls, forgets.
    let (status, remembered) = call(
        &client,
        Method::POST,
        &g("/v1/tools/memory/invoke"),
        &root,
        Some(json!({"action": "remember", "arguments": {"text": "The deploy window is Tuesday at noon", "key": "deploy-window"}})),
    )
    .await;
    assert_eq!(status, 200, "{remembered}");
    assert_eq!(remembered["result"]["remembered"]["scope"], "user");
    let (status, mine) = call(
        &client,
        Method::GET,
        &g("/v1/memory/user/deploy-window"),
        &root,
        None,
    )
    .await;
    assert_eq!(
        (status, mine["text"].as_str()),
        (200, Some("The deploy window is Tuesday at noon"))
    );
    let (_, recalled) = call(
        &client,
        Method::POST,
        &g("/v1/tools/memory/invoke"),
        &root,
        Some(json!({"action": "recall", "arguments": {"query": "when is the deploy window"}})),
    )
    .await;
    assert_eq!(
        recalled["result"]["results"][0]["memory"]["key"], "deploy-window",
        "{recalled}"
    );
    let (status, _) = call(
        &client,
        Method::POST,
        &g("/v1/tools/memory/invoke"),
        &root,
        Some(json!({"action": "forget", "arguments": {"key": "deploy-window"}})),
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = call(
        &client,
        Method::GET,
        &g("/v1/memory/user/deploy-window"),
        &root,
        None,
    )
    .await;
    assert_eq!(status, 404);
    // Forgetting what is not there is the tool's error, told to the caller.
    let (status, problem) = call(
        &client,
        Method::POST,
        &g("/v1/tools/memory/invoke"),
        &root,
        Some(json!({"action": "forget", "arguments": {"key": "deploy-window"}})),
    )
    .await;
    assert_eq!(status, 502, "{problem}");
    assert!(
        problem["error"]["details"]["tool_error"]
            .as_str()
            .unwrap()
            .contains("no such memory"),
        "{problem}"
    );

    // In a session turn, the model remembers into the session's memory.
    let (_, session) = call(
        &client,
        Method::POST,
        &g("/v1/sessions"),
        &root,
        Some(json!({"model": "tool-user"})),
    )
    .await;
    let id = session["session_id"].as_str().unwrap().to_owned();
    let (status, answer) = call(
        &client,
        Method::POST,
        &g(&format!("/v1/sessions/{id}/messages")),
        &root,
        Some(json!({"content": "call memory__remember {\"text\": \"The user prefers metric units\", \"key\": \"units\"}"})),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert!(
        answer["message"]["content"]
            .as_str()
            .unwrap()
            .contains("remembered"),
        "{answer}"
    );
    let (status, kept) = call(
        &client,
        Method::GET,
        &g(&format!("/v1/memory/session:{id}/units")),
        &root,
        None,
    )
    .await;
    assert_eq!(status, 200, "{kept}");
    assert_eq!(kept["text"], "The user prefers metric units");
    // The model was offered the memory tool's three functions.
    let offered: Vec<String> = llm
        .requests()
        .iter()
        .flat_map(|r| r["tools"].as_array().cloned().unwrap_or_default())
        .filter_map(|t| t["function"]["name"].as_str().map(str::to_owned))
        .collect();
    for name in ["memory__remember", "memory__recall", "memory__forget"] {
        assert!(
            offered.iter().any(|o| o == name),
            "{name} not in {offered:?}"
        );
    }
}

/// A document's ingestion cut off by a crash goes on after the restart from the batch
/// it was at: what was embedded before is not embedded again, and every chunk ends up
/// searchable once.
#[tokio::test]
async fn a_document_ingestion_cut_off_by_a_crash_resumes_where_it_was() {
    for backends in Backends::all() {
        ingestion_crash(backends).await;
    }
}

async fn ingestion_crash(backends: Backends) {
    use crate::helpers::{Platform, ROOT_PASSWORD, free_ports, wait_ok};
    use std::time::Instant;

    let llm = somagent_scripted_llm::ScriptedLlm::start().await.unwrap();
    let base = llm.base_url();
    let data = tempfile::tempdir().unwrap();
    let ports = free_ports();
    let backend_env = backends.env().await;
    // Small chunks (one paragraph each) from a model that takes 300 ms a batch: the
    // document takes several seconds, long enough to crash in the middle.
    let mut env = vec![
        ("SOMAGENT_IDENTITY__BOOTSTRAP_ADMIN_PASSWORD", ROOT_PASSWORD),
        ("SOMAGENT_SLM__LLM_BASE_URL", base.as_str()),
        ("SOMAGENT_SLM__LLM_MODEL", "scripted"),
        ("SOMAGENT_SLM__EMBEDDING_MODEL", "hashed-256-slow-300"),
        ("SOMAGENT_SLM__EMBEDDING_DIMENSIONS", "256"),
        ("SOMAGENT_MEMORY__CHUNK_TOKENS", "24"),
        ("SOMAGENT_MEMORY__CHUNK_OVERLAP", "0"),
    ];
    env.extend(backend_env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    let client = reqwest::Client::new();
    let mut platform = Platform::start_with(data.path(), &ports, &env);
    let gateway = platform.addresses["gateway"].clone();
    wait_ok(&client, &format!("{gateway}/readyz")).await;
    let root = crate::helpers::login(&client, &gateway, "default", "admin", ROOT_PASSWORD).await;

    const PARAGRAPHS: usize = 640;
    let markdown: String = (0..PARAGRAPHS)
        .map(|i| {
            format!("Paragraph {i} tells of the lighthouse keeper code k{i}x and the tide.\n\n")
        })
        .collect();
    let (status, added) = call(
        &client,
        Method::POST,
        &format!("{gateway}/v1/memory/documents"),
        &root,
        Some(json!({"title": "Logbook", "content_type": "text/markdown", "content": markdown})),
    )
    .await;
    assert_eq!(status, 202, "{added}");
    let id = added["id"].as_str().unwrap().to_owned();

    // Crash once some batches are in, not all.
    let deadline = Instant::now() + Duration::from_secs(60);
    let (done_before, total) = loop {
        let (_, doc) = call(
            &client,
            Method::GET,
            &format!("{gateway}/v1/memory/documents/{id}"),
            &root,
            None,
        )
        .await;
        let done = doc["chunks_done"].as_u64().unwrap_or(0);
        if done > 0 {
            let total = doc["chunks_total"].as_u64().unwrap();
            assert!(
                done < total,
                "{backends:?}: ingested before the crash: {doc}"
            );
            break (done, total);
        }
        assert!(
            Instant::now() < deadline,
            "{backends:?}: no progress: {doc}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(total, PARAGRAPHS as u64);
    platform.child.kill().unwrap();
    platform.child.wait().unwrap();
    drop(platform);
    // Whatever was embedded before the crash, counted by text.
    let embedded = |from: usize| -> usize {
        llm.requests()[from..]
            .iter()
            .filter_map(|r| r["input"].as_array().map(Vec::len))
            .sum()
    };
    let before_restart = llm.requests().len();

    let platform = Platform::start_with(data.path(), &ports, &env);
    wait_ok(&client, &format!("{gateway}/readyz")).await;
    let root = crate::helpers::login(&client, &gateway, "default", "admin", ROOT_PASSWORD).await;
    // On Temporal the batch cut off is taken over once its heartbeat is missed (15 s).
    let doc = ingested_within(&client, &gateway, &root, &id, Duration::from_secs(90)).await;
    assert_eq!(doc["status"], "ready", "{backends:?}: {doc}");
    assert_eq!(doc["chunks_done"], json!(total), "{doc}");
    // The restart embedded what was left (and at most the one batch in flight at the
    // crash again), not the whole document.
    let after = embedded(before_restart);
    let left = (total - done_before) as usize;
    assert!(
        after >= left && after <= left + 64,
        "{backends:?}: {done_before} of {total} chunks were in at the crash; the restart embedded {after} texts"
    );

    // Every paragraph is found, the first and the last, each once.
    for i in [0, PARAGRAPHS / 2, PARAGRAPHS - 1] {
        let (status, found) = call(
            &client,
            Method::POST,
            &format!("{gateway}/v1/rag/retrieve"),
            &root,
            Some(json!({"query": format!("keeper code k{i}x"), "top_k": 5})),
        )
        .await;
        assert_eq!(status, 200, "{found}");
        let passages = found["passages"].as_array().unwrap();
        let with_code: Vec<_> = passages
            .iter()
            .filter(|p| {
                p["text"]
                    .as_str()
                    .is_some_and(|t| t.contains(&format!(" k{i}x ")))
            })
            .collect();
        assert_eq!(with_code.len(), 1, "{backends:?}: paragraph {i}: {found}");
        assert!(
            passages[0]["text"]
                .as_str()
                .unwrap()
                .contains(&format!(" k{i}x ")),
            "{backends:?}: paragraph {i} first: {found}"
        );
    }
    drop(platform);
}
