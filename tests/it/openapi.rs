//! The OpenAPI document describes every public route, and the docs page serves it.

use serde_json::Value;

use crate::helpers::{Rooted, with_root};

#[tokio::test]
async fn the_openapi_document_covers_every_public_route() {
    let Rooted {
        platform: _platform,
        gateway,
        client,
        data: _data,
        ..
    } = with_root().await;
    let response = client
        .get(format!("{gateway}/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let doc: Value = response.json().await.unwrap();
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1"),
        "{}",
        doc["openapi"]
    );
    let routes = [
        ("post", "/v1/auth/token"),
        ("post", "/v1/auth/revoke"),
        ("post", "/v1/auth/keys/rotate"),
        ("get", "/v1/me"),
        ("get", "/v1/status"),
        ("post", "/v1/tenants"),
        ("get", "/v1/tenants"),
        ("get", "/v1/tenants/{id}"),
        ("patch", "/v1/tenants/{id}"),
        ("delete", "/v1/tenants/{id}"),
        ("post", "/v1/users"),
        ("get", "/v1/users"),
        ("get", "/v1/users/{id}"),
        ("patch", "/v1/users/{id}"),
        ("delete", "/v1/users/{id}"),
        ("post", "/v1/users/{id}/mfa/enroll"),
        ("post", "/v1/users/{id}/mfa/verify"),
        ("post", "/v1/api-keys"),
        ("get", "/v1/api-keys"),
        ("delete", "/v1/api-keys/{id}"),
        ("get", "/.well-known/openid-configuration"),
        ("get", "/.well-known/jwks.json"),
        ("post", "/v1/chat/completions"),
        ("get", "/v1/models"),
        ("post", "/v1/embeddings"),
        ("put", "/v1/memory/{scope}/{key}"),
        ("get", "/v1/memory/{scope}/{key}"),
        ("delete", "/v1/memory/{scope}/{key}"),
        ("get", "/v1/memory/{scope}"),
        ("post", "/v1/memory/search"),
        ("post", "/v1/rag/retrieve"),
        ("post", "/v1/memory/documents"),
        ("get", "/v1/memory/documents"),
        ("get", "/v1/memory/documents/{id}"),
        ("delete", "/v1/memory/documents/{id}"),
        ("post", "/v1/sessions/{id}/remember"),
        ("get", "/v1/model-profiles"),
        ("put", "/v1/model-profiles/{name}"),
        ("delete", "/v1/model-profiles/{name}"),
        ("post", "/v1/policy/evaluate"),
        ("get", "/v1/policy/rules"),
        ("post", "/v1/policy/rules"),
        ("get", "/v1/policy/rules/{id}"),
        ("put", "/v1/policy/rules/{id}"),
        ("delete", "/v1/policy/rules/{id}"),
        ("get", "/v1/constitutions/current"),
        ("get", "/v1/constitutions/{version}"),
        ("post", "/v1/constitutions"),
        ("post", "/v1/sessions"),
        ("get", "/v1/sessions"),
        ("get", "/v1/workflows"),
        ("get", "/v1/workflows/{id}"),
        ("post", "/v1/workflows/{id}/cancel"),
        ("post", "/v1/workflows/{id}/signals/{name}"),
        ("get", "/v1/sessions/{id}"),
        ("delete", "/v1/sessions/{id}"),
        ("post", "/v1/sessions/{id}/messages"),
        ("get", "/v1/sessions/{id}/messages"),
        ("get", "/v1/sessions/{id}/approvals"),
        ("post", "/v1/sessions/{id}/approvals/{call_id}"),
        ("get", "/v1/ws"),
        ("delete", "/v1/auth/mfa"),
        ("get", "/v1/tools"),
        ("post", "/v1/tools"),
        ("get", "/v1/tools/invocations"),
        ("get", "/v1/tools/{id}"),
        ("delete", "/v1/tools/{id}"),
        ("put", "/v1/tools/{id}/credentials"),
        ("delete", "/v1/tools/{id}/credentials"),
        ("post", "/v1/tools/{id}/invoke"),
        ("get", "/v1/billing/usage"),
        ("get", "/v1/billing/entries"),
        ("get", "/v1/billing/budgets"),
        ("put", "/v1/billing/budgets"),
        ("get", "/v1/billing/invoices"),
        ("get", "/v1/billing/invoices/{id}"),
        ("get", "/v1/analytics/{report}"),
        ("get", "/v1/analytics/export"),
        ("get", "/v1/capsules"),
        ("get", "/v1/capsules/keys"),
        ("post", "/v1/capsules/keys"),
        ("delete", "/v1/capsules/keys/{id}"),
        ("get", "/v1/capsules/submissions"),
        ("post", "/v1/capsules/submissions"),
        ("get", "/v1/capsules/submissions/{id}"),
        ("post", "/v1/capsules/submissions/{id}/review"),
        ("get", "/v1/capsules/installations"),
        ("get", "/v1/capsules/{id}"),
        ("get", "/v1/capsules/{id}/download"),
        ("post", "/v1/capsules/{id}/installations"),
        (
            "post",
            "/v1/capsules/{id}/installations/{environment}/rollback",
        ),
        ("delete", "/v1/capsules/{id}/installations/{environment}"),
        ("put", "/v1/capsules/{id}/rating"),
        ("get", "/v1/capsules/{id}/ratings"),
        ("post", "/v1/capsules/{id}/execute"),
        ("post", "/v1/projects"),
        ("get", "/v1/projects"),
        ("get", "/v1/projects/{id}"),
        ("get", "/v1/projects/{id}/deliverables/{deliverable}"),
        ("post", "/v1/projects/{id}/approve"),
        ("post", "/v1/projects/{id}/requeue/{deliverable}"),
        ("post", "/v1/projects/{id}/cancel"),
        ("post", "/v1/mao/start"),
        ("get", "/v1/mao/{id}"),
        ("post", "/v1/mao/{id}/cancel"),
        ("get", "/v1/notifications"),
        ("post", "/v1/notifications"),
        ("post", "/v1/notifications/{id}/read"),
        ("post", "/v1/notifications/read-all"),
        ("get", "/v1/notifications/stream"),
        ("post", "/v1/webhooks"),
        ("get", "/v1/webhooks"),
        ("get", "/v1/webhooks/{id}"),
        ("patch", "/v1/webhooks/{id}"),
        ("delete", "/v1/webhooks/{id}"),
        ("post", "/v1/webhooks/{id}/secret/rotate"),
        ("get", "/v1/webhooks/{id}/deliveries"),
        ("post", "/v1/webhooks/{id}/deliveries/{delivery_id}/retry"),
        ("get", "/v1/settings"),
        ("patch", "/v1/settings"),
        ("get", "/v1/settings/versions"),
        ("get", "/v1/settings/versions/{version}"),
        ("get", "/v1/settings/flags"),
        ("get", "/v1/settings/flags/{name}"),
        ("put", "/v1/settings/flags/{name}"),
        ("delete", "/v1/settings/flags/{name}"),
        ("get", "/v1/me/preferences"),
        ("patch", "/v1/me/preferences"),
        ("get", "/v1/settings/secrets"),
        ("put", "/v1/settings/secrets/{name}"),
        ("delete", "/v1/settings/secrets/{name}"),
    ];
    let paths = doc["paths"].as_object().unwrap();
    let documented: usize = paths.values().map(|p| p.as_object().unwrap().len()).sum();
    assert_eq!(
        documented,
        routes.len(),
        "documented operations: {:?}",
        paths.keys().collect::<Vec<_>>()
    );
    for (method, path) in routes {
        let operation = &doc["paths"][path][method];
        assert!(operation.is_object(), "{method} {path} is not documented");
        assert!(
            operation["responses"]
                .as_object()
                .is_some_and(|r| !r.is_empty()),
            "{method} {path} documents no responses"
        );
        // Every `$ref` resolves to a schema in the document.
        for reference in refs(operation) {
            let name = reference.trim_start_matches("#/components/schemas/");
            assert!(
                doc["components"]["schemas"][name].is_object(),
                "{method} {path}: {reference}"
            );
        }
    }
    // Protected routes say how to authenticate; the token endpoint does not need to.
    assert!(doc["paths"]["/v1/me"]["get"]["security"].is_array());
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
    assert_eq!(
        doc["components"]["securitySchemes"]["api_key"]["name"],
        "X-API-Key"
    );
    // The answer types are the wire's.
    let token = &doc["components"]["schemas"]["Token"]["properties"];
    assert!(
        token["access_token"].is_object() && token["expires_in"].is_object(),
        "{token}"
    );
    let problem = &doc["components"]["schemas"]["ProblemBody"]["properties"];
    assert!(problem["code"].is_object() && problem["message"].is_object());

    // The docs page and everything it loads come from the gateway itself, under a
    // policy that forbids any other origin: it works offline and runs no one else's code.
    let docs = client.get(format!("{gateway}/docs")).send().await.unwrap();
    assert_eq!(docs.status(), 200);
    let csp = docs.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        csp.contains("default-src 'none'") && csp.contains("script-src 'self'"),
        "{csp}"
    );
    let page = docs.text().await.unwrap();
    assert!(page.contains("/openapi.json"));
    for line in page.lines() {
        for attr in ["src=\"", "href=\""] {
            if let Some(at) = line.find(attr) {
                let target = &line[at + attr.len()..];
                assert!(
                    target.starts_with('/'),
                    "the docs page loads something from elsewhere: {line}"
                );
            }
        }
    }
    for asset in ["/docs/docs.js", "/docs/docs.css"] {
        let served = client
            .get(format!("{gateway}{asset}"))
            .send()
            .await
            .unwrap();
        assert_eq!(served.status(), 200, "{asset}");
        let body = served.text().await.unwrap();
        assert!(!body.contains("https://"), "{asset} reaches out: {body}");
    }
    assert!(page.contains("/docs/docs.js"));
}

fn refs(value: &Value) -> Vec<String> {
    match value {
        Value::Object(map) => map
            .iter()
            .flat_map(|(k, v)| match (k.as_str(), v) {
                ("$ref", Value::String(r)) => vec![r.clone()],
                _ => refs(v),
            })
            .collect(),
        Value::Array(items) => items.iter().flat_map(refs).collect(),
        _ => Vec::new(),
    }
}
