//! KAMACHIQ projects and multi-agent runs through the gateway, on the scripted
//! upstream: a planner whose first answer is repaired, a deliverable blocked by policy
//! and requeued, a plan approval, a deliverable revised after a low review, the
//! bundle, the report and the notifications; a cancel mid-wave; a budget that runs
//! out; a restart mid-project on each engine; a MAO DAG passing outputs along.

use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use reqwest::Method;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::helpers::{
    Backends, Platform, ROOT_PASSWORD, free_ports, login, other_tenant_admin, until, viewer_of,
    wait_ok, with_scripted_llm,
};
use crate::lifecycle::call;

/// How long a journey waits for a run to reach a state.
const POLL: Duration = Duration::from_secs(90);

const RULES: [(&str, &str); 1] = [("SOMAGENT_SLM__LLM_MODEL", "rules")];

fn deliverable(id: &str, title: &str, deps: &[&str], tools: &[&str]) -> Value {
    json!({"id": id, "title": title, "description": format!("Build the {title}."),
           "acceptance_criteria": [format!("the {title} works")], "dependencies": deps,
           "tools": tools, "estimate_tokens": 5000})
}

/// The scripted planner, workers and reviewer of the owl tracker project.
fn script(llm: &somagent_scripted_llm::ScriptedLlm) {
    let plan = json!({"deliverables": [
        deliverable("spec", "Spec", &[], &[]),
        deliverable("api", "API", &["spec"], &[]),
        deliverable("ops", "Ops", &[], &["github"]),
        deliverable("docs", "Docs", &["api"], &[]),
    ]});
    // The planner's first answer is no plan; asked again with why, it plans.
    llm.on(
        "Plan at most",
        &["We should build an owl tracker, step by step."],
    );
    llm.on("Your plan was not accepted", &[&plan.to_string()]);
    // Reviews, by the work they are shown: the API's first draft scores low.
    llm.on(
        "Work submitted:\nAPI-DRAFT",
        &[r#"{"score": 40, "notes": "missing the endpoints"}"#],
    );
    llm.on("Score the work", &[r#"{"score": 90, "notes": "good"}"#]);
    // The workers.
    llm.on("Revise the deliverable", &["API-FINAL with endpoints"]);
    llm.on("Deliverable: Spec", &["SPEC-OUT"]);
    llm.on("Deliverable: API", &["API-DRAFT"]);
    llm.on("Deliverable: Ops", &["OPS-OUT"]);
    llm.on("Deliverable: Docs", &["DOCS-OUT"]);
}

fn of<'a>(view: &'a Value, id: &str) -> &'a Value {
    view["deliverables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["id"] == id)
        .unwrap_or_else(|| panic!("no deliverable {id}: {view}"))
}

#[tokio::test]
async fn a_project_goes_from_a_goal_to_reviewed_deliverables_on_each_engine() {
    for backends in Backends::all() {
        let (llm, rooted) = with_scripted_llm(backends, &RULES).await;
        script(&llm);
        let (client, gateway, root) = (
            rooted.client.clone(),
            rooted.gateway.clone(),
            rooted.root.clone(),
        );
        let g = |path: &str| format!("{gateway}{path}");
        let (status, rule) = call(&client, Method::POST, &g("/v1/policy/rules"), &root, Some(json!({
            "name": "No GitHub for agents", "kind": "deny_tool", "value": "github", "severity": "high", "score": 90,
        }))).await;
        assert_eq!(status, 201, "{rule}");

        let (status, problem) = call(
            &client,
            Method::POST,
            &g("/v1/projects"),
            &root,
            Some(json!({"goal": " "})),
        )
        .await;
        assert_eq!(status, 422, "{problem}");
        let (status, started) = call(
            &client,
            Method::POST,
            &g("/v1/projects"),
            &root,
            Some(json!({
                "goal": "Ship the owl tracker", "approval": "manual", "parallelism": 2,
                "constraints": ["Rust only"],
            })),
        )
        .await;
        assert_eq!(status, 202, "{started}");
        let id = started["project_id"].as_str().unwrap().to_owned();
        let url = g(&format!("/v1/projects/{id}"));

        // Planned (after one repair) and governed: Ops needs a tool policy denies.
        let view = until(
            &client,
            &url,
            &root,
            "the plan waits for approval",
            POLL,
            |v| v["status"] == "awaiting_approval",
        )
        .await;
        assert_eq!(view["planning"]["attempts"], 2, "{backends:?}: {view:#}");
        assert!(
            view["planning"]["rejected"][0][0]
                .as_str()
                .unwrap()
                .contains("not a JSON object"),
            "{view:#}"
        );
        assert_eq!(view["deliverables"].as_array().unwrap().len(), 4);
        assert_eq!(of(&view, "ops")["state"], "blocked");
        assert!(
            of(&view, "ops")["reason"]
                .as_str()
                .unwrap()
                .contains("github"),
            "{view:#}"
        );
        assert_eq!(of(&view, "spec")["state"], "planned");
        let planner_prompt = llm
            .requests()
            .into_iter()
            .find(|r| {
                r["messages"].as_array().unwrap().iter().any(|m| {
                    m["content"]
                        .as_str()
                        .is_some_and(|c| c.contains("Plan at most"))
                })
            })
            .unwrap();
        assert!(
            planner_prompt["messages"][0]["content"]
                .as_str()
                .unwrap()
                .contains("planner"),
            "{planner_prompt}"
        );
        // The upstream is asked for the planner's schema as structured output, held to
        // the project's most deliverables.
        let format = &planner_prompt["response_format"];
        assert_eq!(format["type"], "json_schema", "{planner_prompt}");
        assert_eq!(format["json_schema"]["name"], "kamachiq-planner");
        assert_eq!(
            format["json_schema"]["schema"]["properties"]["deliverables"]["maxItems"], 12,
            "{format}"
        );

        // Another tenant sees nothing; a viewer cannot approve; requeueing what is not
        // blocked is a conflict.
        let hank = other_tenant_admin(&client, &gateway, &root).await;
        let (status, _) = call(&client, Method::GET, &url, &hank, None).await;
        assert_eq!(status, 404);
        let (status, _) = call(
            &client,
            Method::POST,
            &g(&format!("/v1/projects/{id}/approve")),
            &hank,
            None,
        )
        .await;
        assert_eq!(status, 404);
        let (viewer, _) = viewer_of(&client, &gateway, &root).await;
        let (status, _) = call(
            &client,
            Method::POST,
            &g(&format!("/v1/projects/{id}/approve")),
            &viewer,
            None,
        )
        .await;
        assert_eq!(status, 403, "{backends:?}");
        let (status, _) = call(
            &client,
            Method::POST,
            &g(&format!("/v1/projects/{id}/requeue/spec")),
            &root,
            None,
        )
        .await;
        assert_eq!(status, 409);

        // The fix for Ops (no GitHub) and the approval: Ops joins the first wave.
        let (status, requeued) = call(
            &client,
            Method::POST,
            &g(&format!("/v1/projects/{id}/requeue/ops")),
            &root,
            Some(json!({"tools": []})),
        )
        .await;
        assert_eq!(status, 200, "{requeued}");
        let (status, approved) = call(
            &client,
            Method::POST,
            &g(&format!("/v1/projects/{id}/approve")),
            &root,
            Some(json!({"notes": "go"})),
        )
        .await;
        assert_eq!(status, 200, "{approved}");

        let view = until(&client, &url, &root, "the project completes", POLL, |v| {
            !matches!(
                v["status"].as_str(),
                Some(
                    "planning"
                        | "awaiting_approval"
                        | "running"
                        | "starting"
                        | "waiting_for_requeue"
                )
            )
        })
        .await;
        assert_eq!(view["status"], "completed", "{backends:?}: {view:#}");
        assert_eq!(view["approval"]["status"], "approved");
        assert_eq!(
            view["waves"],
            json!([["spec", "ops"], ["api"], ["docs"]]),
            "{view:#}"
        );
        for d in ["spec", "api", "ops", "docs"] {
            assert_eq!(of(&view, d)["state"], "completed", "{d}: {view:#}");
        }
        let api = of(&view, "api");
        assert_eq!(
            (api["revisions"].as_u64(), api["score"].as_u64()),
            (Some(1), Some(90)),
            "{view:#}"
        );
        assert!(view["budget"]["spent"].as_u64().unwrap() > 0);
        assert_eq!(view["budget"]["reserved"], 0);
        let bundle: Vec<&str> = view["bundle"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(Value::as_str)
            .collect();
        for file in [
            "deliverables/api.md",
            "release-notes.md",
            "governance-report.json",
        ] {
            assert!(
                bundle.contains(&format!("projects/{id}/{file}").as_str()),
                "{file}: {bundle:?}"
            );
        }
        let (status, api) = call(
            &client,
            Method::GET,
            &g(&format!("/v1/projects/{id}/deliverables/api")),
            &root,
            None,
        )
        .await;
        assert_eq!(status, 200, "{api}");
        assert_eq!(api["output"], "API-FINAL with endpoints");
        assert_eq!(api["reviews"][0]["score"], 40);
        assert_eq!(api["reviews"][0]["notes"], "missing the endpoints");
        // Docs was given what the API produced.
        let docs_prompt = llm
            .requests()
            .into_iter()
            .rev()
            .find(|r| {
                r["messages"]
                    .as_array()
                    .unwrap()
                    .last()
                    .and_then(|m| m["content"].as_str())
                    .is_some_and(|c| {
                        c.contains("Deliverable: Docs") && !c.contains("Work submitted")
                    })
            })
            .unwrap();
        assert!(
            docs_prompt.to_string().contains("API-FINAL"),
            "{docs_prompt}"
        );

        // The initiator was told at each stage.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (_, inbox) = call(&client, Method::GET, &g("/v1/notifications"), &root, None).await;
            let kinds: Vec<String> = inbox["notifications"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|n| n["kind"].as_str().map(str::to_owned))
                .collect();
            if [
                "project.planned",
                "project.awaiting_approval",
                "project.completed",
            ]
            .iter()
            .all(|k| kinds.iter().any(|s| s == k))
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{backends:?}: notifications {kinds:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        // The governance report counts it: the blocked deliverable, the approval, the
        // budget, the scores.
        let deadline = Instant::now() + Duration::from_secs(60);
        let run = loop {
            let (status, report) = call(
                &client,
                Method::GET,
                &g("/v1/analytics/governance"),
                &root,
                None,
            )
            .await;
            assert_eq!(status, 200, "{report}");
            if let Some(run) = report["projects"]
                .as_array()
                .and_then(|p| p.iter().find(|r| r["project_id"] == json!(id)))
            {
                break run.clone();
            }
            assert!(Instant::now() < deadline, "{backends:?}: {report:#}");
            tokio::time::sleep(Duration::from_millis(300)).await;
        };
        assert_eq!(run["status"], "completed", "{run}");
        assert_eq!(run["denied"], 1, "{run}");
        assert_eq!(run["approval"], "approved", "{run}");
        assert_eq!(
            (run["delivered"].as_i64(), run["deliverables"].as_i64()),
            (Some(4), Some(4)),
            "{run}"
        );
        assert_eq!(run["mean_score"], 90.0, "{run}");
        let (_, listed) = call(&client, Method::GET, &g("/v1/projects"), &root, None).await;
        assert_eq!(listed["runs"][0]["id"], json!(id), "{listed}");
        let (status, _) = call(
            &client,
            Method::POST,
            &g(&format!("/v1/projects/{id}/cancel")),
            &root,
            None,
        )
        .await;
        assert_eq!(status, 409, "an ended project is not cancelled");
    }
}

#[tokio::test]
async fn a_project_is_cancelled_mid_wave_and_one_out_of_budget_stops_cleanly() {
    let (llm, rooted) = with_scripted_llm(Backends::Embedded, &RULES).await;
    let (client, gateway, root) = (
        rooted.client.clone(),
        rooted.gateway.clone(),
        rooted.root.clone(),
    );
    let g = |path: &str| format!("{gateway}{path}");
    let plan = json!({"deliverables": [
        deliverable("alpha", "Alpha", &[], &[]),
        deliverable("beta", "Beta", &[], &[]),
    ]});
    let second = json!({"deliverables": [
        deliverable("gamma", "Gamma", &[], &[]),
        deliverable("delta", "Delta", &[], &[]),
    ]});
    llm.on("Plan at most", &[&plan.to_string(), &second.to_string()]);
    llm.on("Score the work", &[r#"{"score": 95}"#]);
    // More words than the whole budget, at once.
    let huge = "token ".repeat(2000);
    llm.on("Deliverable: Gamma", &[&huge]);
    llm.on("Deliverable: Delta", &[&huge]);
    let long = "word ".repeat(400);
    llm.on_slowly(
        "Deliverable: Alpha",
        &[&long],
        Some(Duration::from_millis(50)),
    );
    llm.on_slowly(
        "Deliverable: Beta",
        &[&long],
        Some(Duration::from_millis(50)),
    );

    // Cancelled while both agents write.
    let (_, started) = call(
        &client,
        Method::POST,
        &g("/v1/projects"),
        &root,
        Some(json!({"goal": "Greek letters"})),
    )
    .await;
    let id = started["project_id"].as_str().unwrap().to_owned();
    let url = g(&format!("/v1/projects/{id}"));
    until(&client, &url, &root, "both run", POLL, |v| {
        v["deliverables"]
            .as_array()
            .is_some_and(|d| d.len() == 2 && d.iter().all(|d| d["state"] == "running"))
    })
    .await;
    // A WebSocket follows it: its state now, then its stages.
    let mut request = format!("{}/v1/ws", gateway.replacen("http", "ws", 1))
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {root}").parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    ws.send(Message::text(
        json!({"type": "subscribe", "project_id": id}).to_string(),
    ))
    .await
    .unwrap();
    let mut next = async || -> Value {
        let message = tokio::time::timeout(Duration::from_secs(30), ws.next())
            .await
            .expect("a message in time")
            .unwrap()
            .unwrap();
        serde_json::from_str(message.to_text().unwrap()).unwrap()
    };
    let mut seen = vec![next().await, next().await];
    seen.sort_by_key(|m| m["type"] != "subscribed");
    assert_eq!(seen[0]["type"], "subscribed", "{seen:?}");
    assert_eq!(
        (seen[1]["type"].as_str(), seen[1]["event"].as_str()),
        (Some("run"), Some("state")),
        "{seen:?}"
    );
    assert_eq!(
        seen[1]["data"]["deliverables"].as_array().map(Vec::len),
        Some(2),
        "{seen:?}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, answer) = call(
        &client,
        Method::POST,
        &g(&format!("/v1/projects/{id}/cancel")),
        &root,
        None,
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let view = until(
        &client,
        &url,
        &root,
        "the project is cancelled",
        POLL,
        |v| v["status"] == "cancelled" && v["run_status"] == "cancelled",
    )
    .await;
    assert_eq!(view["budget"]["reserved"], 0, "{view:#}");
    for d in ["alpha", "beta"] {
        assert_eq!(of(&view, d)["state"], "cancelled", "{view:#}");
    }
    let last = loop {
        let message = next().await;
        if message["event"] == "project.cancelled" {
            break message;
        }
    };
    assert_eq!(last["data"]["status"], "cancelled", "{last}");
    // Another tenant cannot follow it.
    let hank = other_tenant_admin(&client, &gateway, &root).await;
    let mut request = format!("{}/v1/ws", gateway.replacen("http", "ws", 1))
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {hank}").parse().unwrap());
    let (mut theirs, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    theirs
        .send(Message::text(
            json!({"type": "subscribe", "project_id": id}).to_string(),
        ))
        .await
        .unwrap();
    let refused: Value =
        serde_json::from_str(theirs.next().await.unwrap().unwrap().to_text().unwrap()).unwrap();
    assert_eq!(refused["code"], "not_found", "{refused}");
    // The agents' own turns were cancelled too: their sessions are not left running.
    let (_, sessions) = call(&client, Method::GET, &g("/v1/sessions"), &root, None).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut sessions = sessions;
    while sessions["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .any(|s| s["status"] == "running")
    {
        assert!(Instant::now() < deadline, "{sessions:#}");
        tokio::time::sleep(Duration::from_millis(200)).await;
        sessions = call(&client, Method::GET, &g("/v1/sessions"), &root, None)
            .await
            .1;
    }

    // A budget smaller than one agent's answer: the project stops, saying so.
    let (_, started) = call(
        &client,
        Method::POST,
        &g("/v1/projects"),
        &root,
        Some(json!({
            "goal": "Greek letters again", "budget_tokens": 1000, "parallelism": 1,
        })),
    )
    .await;
    let id = started["project_id"].as_str().unwrap().to_owned();
    let url = g(&format!("/v1/projects/{id}"));
    let view = until(&client, &url, &root, "the budget runs out", POLL, |v| {
        matches!(
            v["status"].as_str(),
            Some("budget_exhausted" | "completed" | "partial" | "failed")
        )
    })
    .await;
    assert_eq!(view["status"], "budget_exhausted", "{view:#}");
    assert_eq!(of(&view, "gamma")["state"], "budget_exhausted", "{view:#}");
    assert_eq!(of(&view, "delta")["state"], "budget_exhausted", "{view:#}");
    assert!(
        of(&view, "delta")["tokens"] == 0,
        "nothing left for the second: {view:#}"
    );
    assert!(
        view["error"].as_str().unwrap().contains("budget"),
        "{view:#}"
    );
    assert_eq!(view["budget"]["reserved"], 0);
    assert!(
        !view["bundle"].as_array().unwrap().is_empty(),
        "the report is written even so"
    );
}

#[tokio::test]
async fn a_multi_agent_dag_passes_outputs_along_its_edges() {
    let (llm, rooted) = with_scripted_llm(Backends::Embedded, &RULES).await;
    let (client, gateway, root) = (
        rooted.client.clone(),
        rooted.gateway.clone(),
        rooted.root.clone(),
    );
    let g = |path: &str| format!("{gateway}{path}");
    llm.on("Find facts about owls", &["FACT-1 owls hunt at night"]);
    llm.on("Find facts about bats", &["FACT-2 bats echolocate"]);
    llm.on("Write an article", &["ARTICLE about night animals"]);

    for (body, field) in [
        (
            json!({"mode": "dag", "directives": [
            {"id": "a", "persona": "p", "goal": "x", "depends_on": ["b"]},
            {"id": "b", "persona": "p", "goal": "y", "depends_on": ["a"]}]}),
            "cycle",
        ),
        (
            json!({"mode": "dag", "directives": [{"id": "a", "persona": "p", "goal": "x", "depends_on": ["ghost"]}]}),
            "ghost",
        ),
        (json!({"directives": [{"goal": "x"}]}), "capsule"),
        (
            json!({"mode": "circle", "directives": [{"persona": "p", "goal": "x"}]}),
            "mode",
        ),
    ] {
        let (status, problem) = call(
            &client,
            Method::POST,
            &g("/v1/mao/start"),
            &root,
            Some(body),
        )
        .await;
        assert_eq!(status, 422, "{problem}");
        assert!(problem.to_string().contains(field), "{field}: {problem}");
    }

    let (status, started) = call(&client, Method::POST, &g("/v1/mao/start"), &root, Some(json!({
        "name": "night animals", "mode": "dag", "parallelism": 2,
        "directives": [
            {"id": "owls", "persona": "You research birds.", "goal": "Find facts about owls"},
            {"id": "bats", "persona": "You research mammals.", "goal": "Find facts about bats"},
            {"id": "article", "capsule": "kamachiq-worker", "goal": "Write an article", "depends_on": ["owls", "bats"]},
        ],
    }))).await;
    assert_eq!(status, 202, "{started}");
    let id = started["workflow_id"].as_str().unwrap().to_owned();
    let url = g(&format!("/v1/mao/{id}"));
    let view = until(&client, &url, &root, "the run completes", POLL, |v| {
        matches!(
            v["status"].as_str(),
            Some("completed" | "failed" | "cancelled")
        )
    })
    .await;
    assert_eq!(view["status"], "completed", "{view:#}");
    let tasks = view["tasks"].as_array().unwrap();
    assert!(tasks.iter().all(|t| t["state"] == "completed"), "{view:#}");
    let article = tasks.iter().find(|t| t["id"] == "article").unwrap();
    assert_eq!(article["output"], "ARTICLE about night animals");
    // The article's agent was given both researchers' findings, and the worker's persona.
    let request = llm
        .requests()
        .into_iter()
        .rev()
        .find(|r| r.to_string().contains("Write an article"))
        .unwrap();
    let text = request.to_string();
    assert!(
        text.contains("FACT-1") && text.contains("FACT-2"),
        "{request}"
    );
    assert!(
        request["messages"][0]["content"]
            .as_str()
            .unwrap()
            .contains("senior engineer"),
        "{request}"
    );
    assert_eq!(
        view["artifacts"].as_array().unwrap().len(),
        4,
        "three outputs and the summary: {view:#}"
    );
    // An agent's time bounds its model call, not only when the call starts: an answer
    // that would take 12 s ends at the agent's 2 s.
    llm.on_slowly(
        "Count every owl slowly",
        &["one two three four five six seven eight nine ten eleven twelve"],
        Some(Duration::from_secs(1)),
    );
    let asked = Instant::now();
    let (status, slow) = call(&client, Method::POST, &g("/v1/mao/start"), &root, Some(json!({
        "directives": [{"id": "counter", "persona": "You count.", "goal": "Count every owl slowly",
                        "timeout_secs": 2, "retries": 1}],
    }))).await;
    assert_eq!(status, 202, "{slow}");
    let slow_url = g(&format!(
        "/v1/mao/{}",
        slow["workflow_id"].as_str().unwrap()
    ));
    let slow = until(
        &client,
        &slow_url,
        &root,
        "the slow agent times out",
        POLL,
        |v| somagent_common::runs::is_final(v["status"].as_str().unwrap_or_default()),
    )
    .await;
    let counter = &slow["tasks"][0];
    assert_eq!(counter["state"], "timed_out", "{slow:#}");
    assert!(
        asked.elapsed() < Duration::from_secs(8),
        "the agent ran past its time: {:?} {slow:#}",
        asked.elapsed()
    );

    let hank = other_tenant_admin(&client, &gateway, &root).await;
    let (status, _) = call(&client, Method::GET, &url, &hank, None).await;
    assert_eq!(status, 404);
    let (status, _) = call(
        &client,
        Method::POST,
        &g(&format!("/v1/mao/{id}/cancel")),
        &root,
        None,
    )
    .await;
    assert_eq!(status, 409);

    // The platform's project capsule runs as a project, its input the goal; not as a
    // session.
    let execute = g("/v1/capsules/kamachiq-project/execute");
    let (status, problem) = call(
        &client,
        Method::POST,
        &execute,
        &root,
        Some(json!({"input": {}})),
    )
    .await;
    assert_eq!(status, 422, "{problem}");
    let (status, run) = call(
        &client,
        Method::POST,
        &execute,
        &root,
        Some(json!({"input": {"goal": "Count the owls"}})),
    )
    .await;
    assert_eq!(status, 202, "{run}");
    assert_eq!(run["capsule"]["id"], "kamachiq-project");
    let project = run["project_id"].as_str().unwrap().to_owned();
    let (status, view) = call(
        &client,
        Method::GET,
        &g(&format!("/v1/projects/{project}")),
        &root,
        None,
    )
    .await;
    assert_eq!(status, 200, "{view}");
    assert_eq!(view["title"], "Count the owls");
    let (status, _) = call(
        &client,
        Method::POST,
        &g(&format!("/v1/projects/{project}/cancel")),
        &root,
        None,
    )
    .await;
    assert_eq!(status, 200);
    let (status, problem) = call(
        &client,
        Method::POST,
        &g("/v1/sessions"),
        &root,
        Some(json!({"capsule_id": "kamachiq-project"})),
    )
    .await;
    assert_eq!(status, 422, "{problem}");
}

/// A platform killed mid-wave resumes the project from where it was: what completed
/// before the crash is not asked of the model again.
#[tokio::test]
async fn a_project_survives_a_restart_mid_wave_on_each_engine() {
    for backends in Backends::all() {
        let llm = somagent_scripted_llm::ScriptedLlm::start().await.unwrap();
        let plan = json!({"deliverables": [
            deliverable("first", "First", &[], &[]),
            deliverable("second", "Second", &["first"], &[]),
        ]});
        llm.on("Plan at most", &[&plan.to_string()]);
        // Reviews first: a review's prompt names its deliverable too.
        llm.on("Score the work", &[r#"{"score": 99}"#]);
        llm.on("Deliverable: First", &["FIRST-OUT"]);
        llm.on_slowly(
            "Deliverable: Second",
            &[&"slow ".repeat(60)],
            Some(Duration::from_millis(100)),
        );
        let base = llm.base_url();
        let data = tempfile::tempdir().unwrap();
        let ports = free_ports();
        let backend_env = backends.env().await;
        let mut env = vec![
            ("SOMAGENT_IDENTITY__BOOTSTRAP_ADMIN_PASSWORD", ROOT_PASSWORD),
            ("SOMAGENT_SLM__LLM_BASE_URL", base.as_str()),
            ("SOMAGENT_SLM__LLM_MODEL", "rules"),
        ];
        env.extend(backend_env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let client = reqwest::Client::new();
        let mut platform = Platform::start_with(data.path(), &ports, &env);
        let gateway = platform.addresses["gateway"].clone();
        wait_ok(&client, &format!("{gateway}/readyz")).await;
        let root = login(&client, &gateway, "default", "admin", ROOT_PASSWORD).await;
        let (_, started) = call(
            &client,
            Method::POST,
            &format!("{gateway}/v1/projects"),
            &root,
            Some(json!({"goal": "Two steps"})),
        )
        .await;
        let id = started["project_id"].as_str().unwrap().to_owned();
        let url = format!("{gateway}/v1/projects/{id}");
        until(
            &client,
            &url,
            &root,
            "the second deliverable runs",
            POLL,
            |v| {
                v["deliverables"]
                    .as_array()
                    .is_some_and(|d| d.len() == 2 && d[1]["state"] == "running")
            },
        )
        .await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let asked_first = |llm: &somagent_scripted_llm::ScriptedLlm| {
            llm.requests()
                .iter()
                .filter(|r| {
                    r["messages"]
                        .as_array()
                        .unwrap()
                        .last()
                        .and_then(|m| m["content"].as_str())
                        .is_some_and(|c| {
                            c.contains("Deliverable: First") && !c.contains("Work submitted")
                        })
                })
                .count()
        };
        let before = asked_first(&llm);
        assert_eq!(before, 1);
        platform.child.kill().unwrap();
        platform.child.wait().unwrap();
        drop(platform);

        let _platform = Platform::start_with(data.path(), &ports, &env);
        wait_ok(&client, &format!("{gateway}/readyz")).await;
        let root = login(&client, &gateway, "default", "admin", ROOT_PASSWORD).await;
        let view = until(
            &client,
            &url,
            &root,
            "the project completes after the restart",
            POLL,
            |v| {
                matches!(
                    v["status"].as_str(),
                    Some("completed" | "partial" | "failed" | "budget_exhausted")
                )
            },
        )
        .await;
        assert_eq!(view["status"], "completed", "{backends:?}: {view:#}");
        assert_eq!(
            asked_first(&llm),
            1,
            "{backends:?}: the first deliverable ran once"
        );
        assert_eq!(of(&view, "second")["state"], "completed");
    }
}
