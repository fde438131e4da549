//! The Kubernetes adapter against a real kube-apiserver (`scripts/ci-services.sh`
//! builds and starts it): a kubeconfig set as the tenant's credential (its CA trusted,
//! its token sent), deployments listed, scaled and read back from the cluster, an API
//! error passed on as a problem, and a session whose model calls a Kubernetes action
//! and answers with what the cluster said.

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{Backends, platform_profile, required_env, with_scripted_llm};
use crate::lifecycle::call;
use crate::sessions::{create_session, send_sse};

/// A kubeconfig for the test cluster, as `kubectl config view --minify --raw` prints it.
fn kubeconfig(server: &str, ca_pem: &[u8], token: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\ncurrent-context: ci\nclusters:\n- name: ci\n  cluster:\n    server: {server}\n    certificate-authority-data: {}\ncontexts:\n- name: ci\n  context:\n    cluster: ci\n    user: agent\n    namespace: default\nusers:\n- name: agent\n  user:\n    token: {token}\n",
        data_encoding::BASE64.encode(ca_pem)
    )
}

#[tokio::test]
async fn a_session_reads_and_scales_deployments_on_a_real_cluster() {
    let (Some(server), Some(ca), Some(token)) = (
        required_env("KUBE_URL"),
        required_env("KUBE_CA"),
        required_env("KUBE_TOKEN"),
    ) else {
        return;
    };
    let ca_pem = std::fs::read(&ca).unwrap();

    // A deployment on the cluster, made directly (as its owners would have).
    let cluster = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(&ca_pem).unwrap()])
        .build()
        .unwrap();
    let name = format!("web-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let created = cluster
        .post(format!(
            "{server}/apis/apps/v1/namespaces/default/deployments"
        ))
        .bearer_auth(&token)
        .json(&json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "labels": {"app": name}},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
                "template": {"metadata": {"labels": {"app": name}},
                    "spec": {"containers": [{"name": "web", "image": "nginx:1.27"}]}}}
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201, "{}", created.text().await.unwrap());

    let (llm, r) = with_scripted_llm(
        Backends::Embedded,
        &[("SOMAGENT_TOOL__ALLOW_PRIVATE_NETWORKS", "true")],
    )
    .await;
    let g = |path: &str| format!("{}{path}", r.gateway);
    let config = kubeconfig(&server, &ca_pem, &token);
    let (status, set) = call(
        &r.client,
        Method::PUT,
        &g("/v1/tools/kubernetes/credentials"),
        &r.root,
        Some(json!({"credential": config})),
    )
    .await;
    assert_eq!(status, 200, "{set}");
    // A kubeconfig that runs a program on someone's machine cannot be used here.
    let exec = config.replace(
        &format!("    token: {token}\n"),
        "    exec:\n      command: aws\n",
    );
    let (status, refused) = call(
        &r.client,
        Method::PUT,
        &g("/v1/tools/kubernetes/credentials"),
        &r.root,
        Some(json!({"credential": exec})),
    )
    .await;
    assert_eq!(status, 422, "{refused}");

    let invoke = |action: &str, arguments: Value| {
        let (client, url, root) = (
            r.client.clone(),
            g("/v1/tools/kubernetes/invoke"),
            r.root.clone(),
        );
        let body = json!({"action": action, "arguments": arguments});
        async move { call(&client, Method::POST, &url, &root, Some(body)).await }
    };
    let (status, listed) = invoke(
        "list_deployments",
        json!({"namespace": "default", "label_selector": format!("app={name}")}),
    )
    .await;
    assert_eq!(status, 200, "{listed}");
    assert_eq!(
        listed["result"]["items"][0]["metadata"]["name"],
        name.as_str()
    );
    assert_eq!(listed["result"]["kind"], "DeploymentList");

    // Scaled through the tool: the cluster has it.
    let (status, scaled) = invoke(
        "scale_deployment",
        json!({"namespace": "default", "name": name, "spec": {"replicas": 3}}),
    )
    .await;
    assert_eq!(
        (status, scaled["result"]["spec"]["replicas"].as_u64()),
        (200, Some(3)),
        "{scaled}"
    );
    let stored: Value = cluster
        .get(format!(
            "{server}/apis/apps/v1/namespaces/default/deployments/{name}"
        ))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stored["spec"]["replicas"], 3);
    let (status, rollout) = invoke(
        "rollout_status",
        json!({"namespace": "default", "name": name}),
    )
    .await;
    assert_eq!(
        (status, rollout["result"]["metadata"]["generation"].as_u64()),
        (200, Some(2)),
        "{rollout}"
    );
    // What the cluster refuses is a problem with its status.
    let (status, missing) = invoke(
        "get_deployment",
        json!({"namespace": "default", "name": "no-such-app"}),
    )
    .await;
    assert_eq!(
        (status, missing["error"]["details"]["status"].as_u64()),
        (502, Some(404)),
        "{missing}"
    );
    // Deleting a pod waits for a person.
    let (status, _) = invoke("delete_pod", json!({"namespace": "default", "name": "x"})).await;
    assert_eq!(status, 409);

    // In a session: the model asks the cluster, and answers with what it said.
    platform_profile(&r.client, &r.gateway, &r.root, "tool-user").await;
    let session = create_session(
        &r.client,
        &r.gateway,
        &r.root,
        json!({"model": "tool-user"}),
    )
    .await;
    let script =
        format!(r#"call kubernetes__get_deployment {{"namespace": "default", "name": "{name}"}}"#);
    let events = send_sse(&r.client, &r.gateway, &r.root, &session, &script).await;
    let result = events
        .iter()
        .find(|(k, _)| k == "tool_result")
        .map(|(_, v)| v.clone())
        .unwrap_or_else(|| panic!("no tool result: {events:?}"));
    assert_eq!(
        (result["ok"].as_bool(), result["name"].as_str()),
        (Some(true), Some("kubernetes__get_deployment")),
        "{result}"
    );
    let answer = events
        .iter()
        .find(|(k, _)| k == "message")
        .and_then(|(_, v)| v["content"].as_str())
        .unwrap_or_default()
        .to_owned();
    assert!(
        answer.contains(&name) && answer.contains("\"replicas\":3"),
        "{answer}"
    );
    let offered = llm
        .requests()
        .iter()
        .rev()
        .find(|q| q["model"] == "tool-user")
        .unwrap()["tools"]
        .clone();
    assert!(
        offered
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["function"]["name"] == "kubernetes__scale_deployment"),
        "{offered}"
    );

    let deleted = cluster
        .delete(format!(
            "{server}/apis/apps/v1/namespaces/default/deployments/{name}"
        ))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert!(deleted.status().is_success());
}
