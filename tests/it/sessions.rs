//! Sessions through the gateway: turns streamed over SSE or answered whole, tool calls
//! answered, messages listed, prompts moderated, other tenants kept out, and a turn
//! interrupted by a crash completed exactly once after the restart.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};
use somagent_common::infra::events::{EventBus, topics};
use somagent_scripted_llm::ScriptedLlm;

use crate::helpers::{
    Backends, Platform, ROOT_PASSWORD, Rooted, free_ports, login, platform_bus, published, wait_ok,
    with_scripted_llm,
};
use crate::lifecycle::call;

/// `(event, data)` pairs of an SSE body.
pub(crate) fn sse_events(body: &str) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    let mut kind = String::from("message");
    for line in body.lines() {
        if let Some(k) = line.strip_prefix("event:") {
            kind = k.trim().to_owned();
        } else if let Some(d) = line.strip_prefix("data:") {
            out.push((
                kind.clone(),
                serde_json::from_str(d.trim()).unwrap_or(Value::Null),
            ));
            kind = "message".into();
        }
    }
    out
}

/// Creates a session through `gateway` with `body` and returns its id.
pub(crate) async fn create_session(
    client: &reqwest::Client,
    gateway: &str,
    token: &str,
    body: Value,
) -> String {
    let (status, session) = call(
        client,
        Method::POST,
        &format!("{gateway}/v1/sessions"),
        token,
        Some(body),
    )
    .await;
    assert_eq!(status, 201, "{session}");
    assert_eq!(session["status"], "idle");
    session["session_id"].as_str().unwrap().to_owned()
}

/// The text of the `delta` events among `events`, joined.
pub(crate) fn said(events: &[(String, Value)]) -> String {
    events
        .iter()
        .filter(|(k, _)| k == "delta")
        .filter_map(|(_, d)| d["content"].as_str())
        .collect()
}

/// The contents of the session's assistant messages, in order.
pub(crate) async fn answers(
    client: &reqwest::Client,
    gateway: &str,
    token: &str,
    session: &str,
) -> Vec<String> {
    let (status, listed) = call(
        client,
        Method::GET,
        &format!("{gateway}/v1/sessions/{session}/messages"),
        token,
        None,
    )
    .await;
    assert_eq!(status, 200, "{listed}");
    listed["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] == "assistant")
        .map(|m| m["content"].as_str().unwrap_or_default().to_owned())
        .collect()
}

pub(crate) async fn send_sse(
    client: &reqwest::Client,
    gateway: &str,
    token: &str,
    session: &str,
    content: &str,
) -> Vec<(String, Value)> {
    let response = client
        .post(format!("{gateway}/v1/sessions/{session}/messages"))
        .bearer_auth(token)
        .header("accept", "text/event-stream")
        .json(&json!({ "content": content }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    sse_events(&response.text().await.unwrap())
}

#[tokio::test]
async fn a_session_streams_its_turns_answers_tool_calls_and_keeps_its_messages() {
    for backends in Backends::all() {
        session_journey(backends).await;
    }
}

async fn session_journey(backends: Backends) {
    let (
        llm,
        Rooted {
            platform,
            gateway,
            client,
            root,
            data,
            events: bus_url,
        },
    ) = with_scripted_llm(backends, &[]).await;
    let id = create_session(
        &client,
        &gateway,
        &root,
        json!({"metadata": {"topic": "demo"}}),
    )
    .await;

    // Streamed: deltas, then the message, then done with usage.
    let events = send_sse(&client, &gateway, &root, &id, "hello world").await;
    let kinds: Vec<&str> = events.iter().map(|(k, _)| k.as_str()).collect();
    assert!(
        kinds.iter().filter(|k| **k == "delta").count() >= 3,
        "{kinds:?}"
    );
    assert_eq!(&kinds[kinds.len() - 2..], ["message", "done"], "{kinds:?}");
    assert_eq!(said(&events), "Echo: hello world");
    let (_, done) = events.last().unwrap();
    assert_eq!(done["outcome"], "completed");
    assert!(
        done["usage"]["completion_tokens"].as_i64().unwrap() > 0,
        "{done}"
    );

    // Whole: the answer when the turn is done.
    let (status, answer) = call(
        &client,
        Method::POST,
        &format!("{gateway}/v1/sessions/{id}/messages"),
        &root,
        Some(json!({"content": "second message"})),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        (answer["turn"].as_u64(), answer["outcome"].as_str()),
        (Some(2), Some("completed"))
    );
    assert_eq!(answer["message"]["content"], "Echo: second message");

    let (status, listed) = call(
        &client,
        Method::GET,
        &format!("{gateway}/v1/sessions/{id}/messages"),
        &root,
        None,
    )
    .await;
    assert_eq!(status, 200);
    let roles: Vec<&str> = listed["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["role"].as_str())
        .collect();
    assert_eq!(
        roles,
        ["user", "assistant", "user", "assistant"],
        "{listed}"
    );
    // The model saw the whole conversation on the second turn.
    let last = llm.requests().last().unwrap().clone();
    assert_eq!(last["messages"].as_array().unwrap().len(), 3, "{last}");

    // A model that calls a tool: the call is answered with a tool error and the model
    // carries on.
    crate::helpers::platform_profile(&client, &gateway, &root, "tool-caller").await;
    let tooled = create_session(&client, &gateway, &root, json!({"model": "tool-caller"})).await;
    let events = send_sse(&client, &gateway, &root, &tooled, "find the report").await;
    let call_event = events
        .iter()
        .find(|(k, _)| k == "tool_call")
        .expect("a tool_call event");
    assert_eq!(call_event.1["function"]["name"], "lookup");
    let (_, message) = events.iter().find(|(k, _)| k == "message").unwrap();
    assert!(
        message["content"]
            .as_str()
            .unwrap()
            .contains("not available"),
        "{message}"
    );
    let (_, listed) = call(
        &client,
        Method::GET,
        &format!("{gateway}/v1/sessions/{tooled}/messages"),
        &root,
        None,
    )
    .await;
    let roles: Vec<&str> = listed["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["role"].as_str())
        .collect();
    assert_eq!(
        roles,
        ["user", "assistant", "tool", "assistant"],
        "{listed}"
    );

    // A prompt the policy refuses: 403 with what was flagged, and no turn.
    let (status, problem) = call(
        &client,
        Method::POST,
        &format!("{gateway}/v1/sessions/{id}/messages"),
        &root,
        Some(json!({"content": "how to build a bomb"})),
    )
    .await;
    assert_eq!(status, 403);
    assert_eq!(
        problem["error"]["details"]["flagged"],
        json!(["build a bomb"])
    );
    let (status, problem) = call(
        &client,
        Method::POST,
        &format!("{gateway}/v1/sessions"),
        &root,
        Some(json!({"prompt": "build a bomb now"})),
    )
    .await;
    assert_eq!(status, 403, "{problem}");

    // Created with a prompt: the first turn runs by itself.
    let (status, started) = call(
        &client,
        Method::POST,
        &format!("{gateway}/v1/sessions"),
        &root,
        Some(json!({"prompt": "start right away"})),
    )
    .await;
    assert_eq!((status, started["status"].as_str()), (201, Some("running")));
    let started = started["session_id"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, listed) = call(
            &client,
            Method::GET,
            &format!("{gateway}/v1/sessions/{started}/messages"),
            &root,
            None,
        )
        .await;
        if listed["messages"].as_array().unwrap().len() == 2 {
            assert_eq!(listed["messages"][1]["content"], "Echo: start right away");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the first turn did not finish: {listed}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Bad input, and other people's sessions.
    let (status, _) = call(
        &client,
        Method::POST,
        &format!("{gateway}/v1/sessions/{id}/messages"),
        &root,
        Some(json!({"content": ""})),
    )
    .await;
    assert_eq!(status, 422);
    let (status, _) = call(
        &client,
        Method::POST,
        &format!("{gateway}/v1/sessions"),
        &root,
        Some(json!({"metadata": [1, 2]})),
    )
    .await;
    assert_eq!(status, 422);
    let (status, _) = call(&client, Method::POST, &format!("{gateway}/v1/tenants"), &root, Some(json!({"slug": "other", "display_name": "Other", "admin": {"username": "olga", "password": "a long user passphrase"}}))).await;
    assert_eq!(status, 201);
    let olga = login(&client, &gateway, "other", "olga", "a long user passphrase").await;
    for (method, path) in [
        (Method::GET, format!("/v1/sessions/{id}")),
        (Method::GET, format!("/v1/sessions/{id}/messages")),
        (Method::DELETE, format!("/v1/sessions/{id}")),
    ] {
        let (status, _) = call(
            &client,
            method.clone(),
            &format!("{gateway}{path}"),
            &olga,
            None,
        )
        .await;
        assert_eq!(status, 404, "{method} {path}");
    }
    let (status, _) = call(
        &client,
        Method::POST,
        &format!("{gateway}/v1/sessions/{id}/messages"),
        &olga,
        Some(json!({"content": "hi"})),
    )
    .await;
    assert_eq!(status, 404);
    let (_, theirs) = call(
        &client,
        Method::GET,
        &format!("{gateway}/v1/sessions"),
        &olga,
        None,
    )
    .await;
    assert_eq!(theirs["sessions"], json!([]));

    // The turns are on conversation.events.
    let bus = EventBus::connect(&bus_url, data.path()).await.unwrap();
    let conversation = published(&bus, topics::CONVERSATION).await;
    let of = |kind: &str, session: &str| {
        conversation
            .iter()
            .filter(|e| e.kind == kind && e.data["session_id"] == session)
            .collect::<Vec<_>>()
    };
    let completed = conversation
        .iter()
        .filter(|e| e.kind == "turn.completed")
        .count();
    assert_eq!(
        completed, 4,
        "{backends:?}: two turns, the tool turn and the started one"
    );
    // The words as they came, in batches, and each new message once.
    let first_turn: String = of("message.delta", &id)
        .iter()
        .filter(|e| e.data["turn"] == 1)
        .map(|e| e.data["content"].as_str().unwrap())
        .collect();
    assert_eq!(first_turn, "Echo: hello world");
    let created: Vec<_> = of("message.created", &tooled)
        .iter()
        .map(|e| e.data["role"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(created, ["assistant", "tool", "assistant"]);
    assert_eq!(of("message.created", &id).len(), 2, "one answer per turn");
    let calls = of("tool.call", &tooled);
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].data["call"]["function"]["name"], "lookup");

    let (status, _) = call(
        &client,
        Method::DELETE,
        &format!("{gateway}/v1/sessions/{id}"),
        &root,
        None,
    )
    .await;
    assert_eq!(status, 204);
    assert_eq!(
        call(
            &client,
            Method::GET,
            &format!("{gateway}/v1/sessions/{id}"),
            &root,
            None
        )
        .await
        .0,
        404
    );

    // Operators see the turns on the services' own metrics: how they ended, what each
    // step cost and how often it ran, what policy decided.
    let scrape = |service: &str| {
        let url = format!("{}/metrics", platform.addresses[service]);
        let client = client.clone();
        async move { client.get(url).send().await.unwrap().text().await.unwrap() }
    };
    let orchestrator = scrape("orchestrator").await;
    let count = |text: &str, series: &str| -> f64 {
        text.lines()
            .find(|l| l.starts_with(series))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{series} missing from /metrics:\n{text}"))
    };
    assert!(
        count(
            &orchestrator,
            "somagent_turns_ended_total{service=\"orchestrator\",outcome=\"completed\"}"
        ) >= 3.0
    );
    for step in [
        "policy.check",
        "session.history",
        "model.complete",
        "turn.finish",
    ] {
        let attempts = format!(
            "somagent_workflow_activity_attempts_total{{service=\"orchestrator\",activity=\"{step}\",outcome=\"ok\"}}"
        );
        assert!(count(&orchestrator, &attempts) >= 1.0, "{attempts}");
        let timed = format!(
            "somagent_workflow_activity_duration_seconds_count{{service=\"orchestrator\",activity=\"{step}\",outcome=\"ok\"}}"
        );
        assert!(count(&orchestrator, &timed) >= 1.0, "{timed}");
    }
    let policy = scrape("policy").await;
    let allowed = "somagent_policy_decisions_total{service=\"policy\",action=\"prompt\",result=\"allowed\",cached=\"false\"}";
    assert!(count(&policy, allowed) >= 1.0);
}

#[tokio::test]
async fn an_answer_that_breaks_off_starts_over_and_the_client_is_told() {
    for backends in Backends::all() {
        broken_answer(backends).await;
    }
}

async fn broken_answer(backends: Backends) {
    let (
        _llm,
        Rooted {
            platform: _p,
            gateway,
            client,
            root,
            data,
            events: bus_url,
        },
    ) = with_scripted_llm(backends, &[]).await;
    // The model's first streamed answer drops its connection halfway.
    crate::helpers::platform_profile(&client, &gateway, &root, "cut-1").await;
    let id = create_session(&client, &gateway, &root, json!({"model": "cut-1"})).await;
    let content = "this answer breaks off halfway and is then told again in full";
    let expected = format!("Echo: {content}");
    let events = send_sse(&client, &gateway, &root, &id, content).await;
    let kinds: Vec<&str> = events.iter().map(|(k, _)| k.as_str()).collect();
    let restart = kinds
        .iter()
        .position(|k| *k == "restart")
        .unwrap_or_else(|| panic!("no restart: {kinds:?}"));
    let before = said(&events[..restart]);
    assert!(
        !before.is_empty() && expected.starts_with(&before) && before != expected,
        "the first attempt said {before:?}"
    );
    assert_eq!(events[restart].1["attempt"], 2, "{:?}", events[restart]);
    let attempts = |events: &[(String, Value)]| -> Vec<Value> {
        events
            .iter()
            .filter(|(k, _)| k == "delta")
            .map(|(_, d)| d["attempt"].clone())
            .collect()
    };
    assert!(attempts(&events[..restart]).iter().all(|a| *a == 1));
    assert!(attempts(&events[restart..]).iter().all(|a| *a == 2));
    assert_eq!(said(&events[restart..]), expected, "{kinds:?}");
    assert_eq!(&kinds[kinds.len() - 2..], ["message", "done"], "{kinds:?}");
    assert_eq!(events[kinds.len() - 2].1["content"], expected.as_str());

    // The answer is kept once.
    assert_eq!(
        answers(&client, &gateway, &root, &id).await,
        [expected.as_str()]
    );

    // Consumers of the topic can tell the attempts apart the same way.
    let bus = EventBus::connect(&bus_url, data.path()).await.unwrap();
    let deltas: Vec<_> = published(&bus, topics::CONVERSATION)
        .await
        .into_iter()
        .filter(|e| e.kind == "message.delta" && e.data["session_id"] == id.as_str())
        .collect();
    let of_attempt = |n: u64| -> String {
        deltas
            .iter()
            .filter(|e| e.data["attempt"] == n)
            .filter_map(|e| e.data["content"].as_str())
            .collect()
    };
    assert_eq!(of_attempt(2), expected);
    let first = of_attempt(1);
    assert!(
        !first.is_empty() && expected.starts_with(&first),
        "{deltas:?}"
    );
}

#[tokio::test]
async fn a_turn_cut_off_by_a_crash_completes_exactly_once_after_the_restart() {
    for backends in Backends::all() {
        crash_and_restart(backends, Stop::Kill).await;
    }
}

/// A rolling restart: SIGTERM mid-turn. The process stops promptly and cleanly, giving
/// its runs up (the local engine releases their leases; Temporal's worker hands the
/// running step back), and the next process completes the turn once.
#[tokio::test]
async fn a_turn_cut_off_by_a_rolling_restart_completes_exactly_once() {
    for backends in Backends::all() {
        crash_and_restart(backends, Stop::Term).await;
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Stop {
    Kill,
    Term,
}

/// On the local engine the restarted process resumes the run from its journal; on
/// Temporal the new worker picks the run up once the killed attempt misses its
/// heartbeat (or at once when it was handed back on SIGTERM).
async fn crash_and_restart(backends: Backends, stop: Stop) {
    let llm = ScriptedLlm::start().await.unwrap();
    let base = llm.base_url();
    let data = tempfile::tempdir().unwrap();
    let ports = free_ports();
    let backend_env = backends.env().await;
    let mut env = vec![
        ("SOMAGENT_IDENTITY__BOOTSTRAP_ADMIN_PASSWORD", ROOT_PASSWORD),
        ("SOMAGENT_SLM__LLM_BASE_URL", base.as_str()),
        ("SOMAGENT_SLM__LLM_MODEL", "slow-300"),
    ];
    env.extend(backend_env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    let client = reqwest::Client::new();
    let mut platform = Platform::start_with(data.path(), &ports, &env);
    let gateway = platform.addresses["gateway"].clone();
    wait_ok(&client, &format!("{gateway}/readyz")).await;
    let root = login(&client, &gateway, "default", "admin", ROOT_PASSWORD).await;
    let id = create_session(&client, &gateway, &root, json!({})).await;
    // Start the turn and wait for its first words, then kill everything.
    let mut response = client
        .post(format!("{gateway}/v1/sessions/{id}/messages"))
        .bearer_auth(&root)
        .header("accept", "text/event-stream")
        .json(&json!({"content": "one two three four five"}))
        .send()
        .await
        .unwrap();
    let first = response.chunk().await.unwrap().expect("the first event");
    assert!(
        String::from_utf8_lossy(&first).contains("delta"),
        "{first:?}"
    );
    match stop {
        Stop::Kill => {
            platform.child.kill().unwrap();
            platform.child.wait().unwrap();
        }
        Stop::Term => {
            let pid = platform.child.id().to_string();
            let sent = std::process::Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .unwrap();
            assert!(sent.success());
            let asked = Instant::now();
            let status = loop {
                if let Some(status) = platform.child.try_wait().unwrap() {
                    break status;
                }
                assert!(
                    asked.elapsed() < Duration::from_secs(20),
                    "{backends:?}: SIGTERM did not stop the platform within 20 s"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            };
            assert!(status.success(), "{backends:?}: stopped with {status}");
            // The client was told to follow the turn elsewhere, not left hanging.
            let mut rest = String::new();
            while let Ok(Some(chunk)) = response.chunk().await {
                rest.push_str(&String::from_utf8_lossy(&chunk));
            }
            assert!(rest.contains("event: reconnect"), "{backends:?}: {rest}");
        }
    }
    drop(platform);

    let platform = Platform::start_with(data.path(), &ports, &env);
    wait_ok(&client, &format!("{gateway}/readyz")).await;
    let root = login(&client, &gateway, "default", "admin", ROOT_PASSWORD).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let messages = loop {
        let (_, listed) = call(
            &client,
            Method::GET,
            &format!("{gateway}/v1/sessions/{id}/messages"),
            &root,
            None,
        )
        .await;
        let messages = listed["messages"].as_array().cloned().unwrap_or_default();
        if messages.len() >= 2 {
            break messages;
        }
        assert!(
            Instant::now() < deadline,
            "the interrupted turn was not completed after the restart: {listed}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (_, listed) = call(
        &client,
        Method::GET,
        &format!("{gateway}/v1/sessions/{id}/messages"),
        &root,
        None,
    )
    .await;
    assert_eq!(
        listed["messages"].as_array().unwrap().len(),
        2,
        "{backends:?}: exactly one answer: {listed}"
    );
    assert_eq!(messages[1]["content"], "Echo: one two three four five");
    let (_, session) = call(
        &client,
        Method::GET,
        &format!("{gateway}/v1/sessions/{id}"),
        &root,
        None,
    )
    .await;
    assert_eq!(session["status"], "idle");
    let bus = platform_bus(&env, data.path()).await;
    let completions: std::collections::BTreeSet<_> = published(&bus, topics::CONVERSATION)
        .await
        .into_iter()
        .filter(|e| e.kind == "turn.completed")
        .map(|e| e.id)
        .collect();
    assert_eq!(
        completions.len(),
        1,
        "one completion, however often it was announced"
    );
    drop(platform);
}

#[tokio::test]
async fn a_websocket_follows_a_sessions_turns_live() {
    for backends in Backends::all() {
        websocket_on(backends).await;
    }
}

async fn websocket_on(backends: Backends) {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;

    let (
        _llm,
        Rooted {
            platform: _p,
            gateway,
            client,
            root,
            data: _data,
            ..
        },
    ) = with_scripted_llm(backends, &[]).await;
    let id = create_session(&client, &gateway, &root, json!({})).await;
    let ws_url = format!("{}/v1/ws", gateway.replacen("http", "ws", 1));

    // Without credentials: told to authenticate, then closed.
    let (mut anonymous, _) = tokio_tungstenite::connect_async(ws_url.as_str())
        .await
        .unwrap();
    anonymous
        .send(Message::text(
            json!({"type": "subscribe", "session_id": id}).to_string(),
        ))
        .await
        .unwrap();
    let refused = anonymous.next().await.unwrap().unwrap();
    assert!(
        refused.to_text().unwrap().contains("authenticate first"),
        "{refused:?}"
    );

    // With the bearer header.
    let mut request = ws_url.as_str().into_client_request().unwrap();
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {root}").parse().unwrap());
    let (mut socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    // And a browser-style one, authenticating by its first message.
    let (mut browser, _) = tokio_tungstenite::connect_async(ws_url.as_str())
        .await
        .unwrap();
    browser
        .send(Message::text(
            json!({"type": "auth", "token": root}).to_string(),
        ))
        .await
        .unwrap();
    for ws in [&mut socket, &mut browser] {
        ws.send(Message::text(
            json!({"type": "subscribe", "session_id": id}).to_string(),
        ))
        .await
        .unwrap();
        let reply: Value =
            serde_json::from_str(ws.next().await.unwrap().unwrap().to_text().unwrap()).unwrap();
        assert_eq!(reply, json!({"type": "subscribed", "session_id": id}));
    }
    let (status, answer) = call(
        &client,
        Method::POST,
        &format!("{gateway}/v1/sessions/{id}/messages"),
        &root,
        Some(json!({"content": "live words here"})),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    for ws in [&mut socket, &mut browser] {
        let mut kinds = Vec::new();
        let mut text = String::new();
        loop {
            let frame = tokio::time::timeout(Duration::from_secs(10), ws.next())
                .await
                .unwrap()
                .unwrap()
                .unwrap();
            let event: Value = serde_json::from_str(frame.to_text().unwrap()).unwrap();
            assert_eq!(
                (event["session_id"].as_str(), event["turn"].as_u64()),
                (Some(id.as_str()), Some(1)),
                "{event}"
            );
            let kind = event["type"].as_str().unwrap().to_owned();
            if kind == "delta" {
                text.push_str(event["data"]["content"].as_str().unwrap());
            }
            kinds.push(kind.clone());
            if kind == "done" {
                break;
            }
        }
        assert_eq!(text, "Echo: live words here");
        assert!(kinds.contains(&"message".to_owned()), "{kinds:?}");
    }
    // Another tenant's session cannot be followed.
    socket
        .send(Message::text(
            json!({"type": "subscribe", "session_id": "not-a-session"}).to_string(),
        ))
        .await
        .unwrap();
    let reply: Value =
        serde_json::from_str(socket.next().await.unwrap().unwrap().to_text().unwrap()).unwrap();
    assert_eq!(
        (reply["type"].as_str(), reply["code"].as_str()),
        (Some("error"), Some("not_found")),
        "{reply}"
    );
}

/// Two replicas of the whole platform on the same servers, as Helm runs them: a turn's
/// events reach its SSE client on one replica and WebSocket watchers on both, whichever
/// replica runs the turn's steps (on Temporal, any worker; on the local engine, the
/// replica that started it). Every event has a watcher on a replica that did not
/// produce it, so each turn shows the relay between replicas works.
#[tokio::test]
async fn every_replica_streams_a_turn_wherever_it_runs() {
    if !Backends::all().contains(&Backends::Distributed) {
        eprintln!("replicas share live events through Redis: this journey needs the real servers");
        return;
    }
    if std::env::var("SOMAGENT_TEST_WORKFLOWS_URL").is_ok() {
        two_replicas(&[]).await;
    }
    two_replicas(&[("SOMAGENT_WORKFLOWS_URL", "local://")]).await;
}

async fn two_replicas(extra: &[(&str, &str)]) {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;

    let llm = ScriptedLlm::start().await.unwrap();
    let base = llm.base_url();
    let backend = Backends::Distributed.env().await;
    let ports = [free_ports(), free_ports()];
    // One issuer for both, as behind one load balancer.
    let public = format!("http://127.0.0.1:{}", ports[0]["gateway"]);
    let mut env = vec![
        ("SOMAGENT_IDENTITY__BOOTSTRAP_ADMIN_PASSWORD", ROOT_PASSWORD),
        ("SOMAGENT_SLM__LLM_BASE_URL", base.as_str()),
        ("SOMAGENT_SLM__LLM_MODEL", "scripted"),
        ("SOMAGENT_PUBLIC_URL", public.as_str()),
    ];
    env.extend(backend.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    env.extend_from_slice(extra);
    let client = reqwest::Client::new();
    let data = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let mut replicas = Vec::new();
    // One after the other: the second finds the schema and the admin made.
    for (data, ports) in data.iter().zip(&ports) {
        let platform = Platform::start_with(data.path(), ports, &env);
        let gateway = platform.addresses["gateway"].clone();
        wait_ok(&client, &format!("{gateway}/readyz")).await;
        replicas.push((platform, gateway));
    }
    let gateways = [replicas[0].1.clone(), replicas[1].1.clone()];
    let root = login(&client, &gateways[0], "default", "admin", ROOT_PASSWORD).await;
    let id = create_session(&client, &gateways[0], &root, json!({})).await;

    let mut watchers = Vec::new();
    for gateway in &gateways {
        let mut request = format!("{}/v1/ws", gateway.replacen("http", "ws", 1))
            .into_client_request()
            .unwrap();
        request
            .headers_mut()
            .insert("authorization", format!("Bearer {root}").parse().unwrap());
        let (mut ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
        ws.send(Message::text(
            json!({"type": "subscribe", "session_id": id}).to_string(),
        ))
        .await
        .unwrap();
        let reply: Value =
            serde_json::from_str(ws.next().await.unwrap().unwrap().to_text().unwrap()).unwrap();
        assert_eq!(reply["type"], "subscribed", "{reply}");
        watchers.push(ws);
    }

    for turn in 1..=4u64 {
        let gateway = &gateways[turn as usize % 2];
        let content = format!("turn {turn} of the replicated session");
        let expected = format!("Echo: {content}");
        // The client: every delta, then the message, then done. A turn whose events
        // stayed in another replica would end with only `done`, after a quiet spell.
        let events = send_sse(&client, gateway, &root, &id, &content).await;
        let kinds: Vec<&str> = events.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            &kinds[kinds.len() - 2..],
            ["message", "done"],
            "turn {turn}: {kinds:?}"
        );
        assert_eq!(said(&events), expected, "turn {turn}: {kinds:?}");
        assert_eq!(events[kinds.len() - 2].1["content"], expected.as_str());

        // Both watchers: the same turn, whole.
        for (i, ws) in watchers.iter_mut().enumerate() {
            let mut text = String::new();
            let mut kinds = Vec::new();
            loop {
                let frame = tokio::time::timeout(Duration::from_secs(15), ws.next())
                    .await
                    .unwrap_or_else(|_| {
                        panic!(
                            "turn {turn}: the watcher on replica {i} heard {kinds:?}, then nothing"
                        )
                    })
                    .unwrap()
                    .unwrap();
                let event: Value = serde_json::from_str(frame.to_text().unwrap()).unwrap();
                assert_eq!(event["turn"].as_u64(), Some(turn), "{event}");
                let kind = event["type"].as_str().unwrap().to_owned();
                if kind == "delta" {
                    text.push_str(event["data"]["content"].as_str().unwrap());
                }
                kinds.push(kind.clone());
                if kind == "done" {
                    break;
                }
            }
            assert_eq!(text, expected, "turn {turn}, replica {i}: {kinds:?}");
            assert!(kinds.contains(&"message".to_owned()), "{kinds:?}");
        }
    }

    // The replica running the model call dies mid-answer (the turn started through the
    // second one): the other carries the turn on (Temporal hands it the call once the
    // heartbeats stop; the local engine takes the run over when its lease lapses), and
    // its watcher hears the answer start over and then whole, once.
    crate::helpers::platform_profile(&client, &gateways[0], &root, "slow-300").await;
    let slow = create_session(&client, &gateways[0], &root, json!({"model": "slow-300"})).await;
    for ws in watchers.iter_mut() {
        ws.send(Message::text(
            json!({"type": "subscribe", "session_id": slow}).to_string(),
        ))
        .await
        .unwrap();
    }
    let content = "a replica dies while this answer is being told";
    let expected = format!("Echo: {content}");
    let doomed = tokio::spawn({
        let (client, gateway, root, slow) = (
            client.clone(),
            gateways[1].clone(),
            root.clone(),
            slow.clone(),
        );
        async move {
            let response = client
                .post(format!("{gateway}/v1/sessions/{slow}/messages"))
                .bearer_auth(&root)
                .header("accept", "text/event-stream")
                .json(&json!({ "content": content }))
                .send()
                .await;
            if let Ok(response) = response {
                let _ = response.text().await;
            }
        }
    });
    type Ws = tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >;
    let next_of_slow = async |ws: &mut Ws| -> Value {
        loop {
            let frame = tokio::time::timeout(Duration::from_secs(60), ws.next())
                .await
                .expect("an event within a minute")
                .unwrap()
                .unwrap();
            let event: Value = serde_json::from_str(frame.to_text().unwrap()).unwrap();
            if event["session_id"] == slow.as_str() && event["type"] != "subscribed" {
                return event;
            }
        }
    };
    let first = next_of_slow(&mut watchers[0]).await;
    assert_eq!(first["type"], "delta", "{first}");
    let on_temporal = env
        .iter()
        .rev()
        .find(|(k, _)| *k == "SOMAGENT_WORKFLOWS_URL")
        .is_some_and(|(_, v)| v.starts_with("temporal://"));
    let victim = if on_temporal {
        let pid = model_call_runner(&turn_run(&slow, 1)).await;
        replicas
            .iter()
            .position(|(p, _)| p.child.id() == pid)
            .unwrap_or_else(|| panic!("the model call runs in process {pid}, not a replica"))
    } else {
        // The local engine runs a turn where it was started.
        1
    };
    drop(replicas.remove(victim));
    let survivor = 1 - victim;
    // The survivor's watcher has heard everything; the first replica's, all but one.
    let mut heard = Some(first).filter(|_| survivor == 0);
    let (mut text, mut kinds) = (String::new(), Vec::new());
    loop {
        let event = match heard.take() {
            Some(event) => event,
            None => next_of_slow(&mut watchers[survivor]).await,
        };
        let kind = event["type"].as_str().unwrap().to_owned();
        match kind.as_str() {
            "delta" => text.push_str(event["data"]["content"].as_str().unwrap()),
            "restart" => text.clear(),
            "error" => panic!("the turn failed: {event}"),
            _ => {}
        }
        kinds.push(kind.clone());
        if kind == "done" {
            assert_eq!(event["data"]["outcome"], "completed", "{event}");
            break;
        }
    }
    assert!(kinds.contains(&"restart".to_owned()), "{kinds:?}");
    assert_eq!(text, expected, "{kinds:?}");
    doomed.await.unwrap();
    // Kept once.
    assert_eq!(
        answers(&client, &gateways[survivor], &root, &slow).await,
        [expected.as_str()]
    );
    drop(llm);
}

/// The workflow id of turn `turn` of `session`.
fn turn_run(session: &str, turn: u32) -> String {
    format!("session-{session}-turn-{turn}")
}

/// The process whose worker runs the model call of Temporal run `run` now, from the
/// server's own account (`temporal workflow describe`).
async fn model_call_runner(run: &str) -> u32 {
    let url = std::env::var("SOMAGENT_TEST_WORKFLOWS_URL").unwrap();
    let address = url
        .trim_start_matches("temporal://")
        .split(['?', '/'])
        .next()
        .unwrap()
        .to_owned();
    for _ in 0..50 {
        let out = std::process::Command::new("temporal")
            .args([
                "workflow",
                "describe",
                "-w",
                run,
                "--address",
                &address,
                "-o",
                "json",
            ])
            .output()
            .expect("the temporal CLI (scripts/ci-services.sh puts it on PATH)");
        let described: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        let identity = described["pendingActivities"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|a| {
                a["activityId"]
                    .as_str()
                    .is_some_and(|id| id.ends_with(":model.complete"))
            })
            .and_then(|a| a["lastWorkerIdentity"].as_str());
        if let Some(pid) = identity.and_then(|i| i.rsplit('@').next()?.parse().ok()) {
            return pid;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("Temporal does not say who runs the model call of {run}");
}
