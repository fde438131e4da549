//! The output policy holds while answers stream: a tenant's forbidden term that the
//! model splits across deltas never reaches a session's watchers, `conversation.events`
//! or the stored messages (the watcher is told to `retract`), nor a
//! `/v1/chat/completions` client, streamed or not (`finish_reason: "content_filter"`).

use reqwest::Method;
use serde_json::{Value, json};
use somagent_common::infra::events::{EventBus, topics};
use somagent_scripted_llm::ScriptedLlm;

use crate::chat::sse_data;
use crate::helpers::{Backends, Rooted, login, platform_profile, published, with_scripted_llm};
use crate::lifecycle::call;
use crate::sessions::{answers, create_session, said, send_sse};

const TERM: &str = "forbidden-word";
/// The scripted model leaves out the `|`s and cuts its deltas there: the answer says
/// the term (in another case) in three pieces, and the prompt never holds it.
const PROMPT: &str = "please say forbidden|-WO|rd and then go on talking for a while";
const WITHHELD: &str = "[withheld: the answer broke this tenant's policy]";

fn holds_term(text: &str) -> bool {
    text.to_lowercase().contains(TERM)
}

/// Starts the platform with a tenant rule forbidding [`TERM`]; the model server stops
/// with the first half.
async fn platform_with_rule(backends: Backends) -> (ScriptedLlm, Rooted) {
    let (llm, rooted) = with_scripted_llm(backends, &[]).await;
    let (status, rule) = call(
        &rooted.client,
        Method::POST,
        &format!("{}/v1/policy/rules", rooted.gateway),
        &rooted.root,
        Some(json!({
            "name": "No forbidden word", "kind": "forbidden_term", "value": "Forbidden-Word",
            "severity": "high", "score": 90,
        })),
    )
    .await;
    assert_eq!(status, 201, "{rule}");
    (llm, rooted)
}

#[tokio::test]
async fn a_forbidden_term_split_across_deltas_never_reaches_watchers_the_topic_or_the_store() {
    for backends in Backends::all() {
        session_turn(backends).await;
    }
}

async fn session_turn(backends: Backends) {
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
    ) = platform_with_rule(backends).await;
    let id = create_session(&client, &gateway, &root, json!({})).await;

    let events = send_sse(&client, &gateway, &root, &id, PROMPT).await;
    let kinds: Vec<&str> = events.iter().map(|(k, _)| k.as_str()).collect();
    let streamed = said(&events);
    assert!(
        !holds_term(&streamed),
        "{backends:?}: the watcher got {streamed:?}"
    );
    assert!(
        "echo: please say forbidden-word".starts_with(&streamed.to_lowercase()),
        "{backends:?}: only what came before the term may stream: {streamed:?}"
    );
    let retract = kinds
        .iter()
        .position(|k| *k == "retract")
        .unwrap_or_else(|| panic!("{backends:?}: no retract: {kinds:?}"));
    assert_eq!(
        &kinds[retract..],
        ["retract", "message", "done"],
        "{backends:?}"
    );
    assert_eq!(events[retract + 1].1["content"], WITHHELD);
    assert_eq!(events[retract + 2].1["outcome"], "withheld");

    // Stored: the stand-in, never the words.
    assert_eq!(
        answers(&client, &gateway, &root, &id).await,
        [WITHHELD],
        "{backends:?}"
    );

    // On the topic: nothing of this session holds the term.
    let bus = EventBus::connect(&bus_url, data.path()).await.unwrap();
    let ours: Vec<_> = published(&bus, topics::CONVERSATION)
        .await
        .into_iter()
        .filter(|e| e.data["session_id"] == id.as_str())
        .collect();
    assert!(
        ours.iter().any(|e| e.kind == "turn.withheld"),
        "{backends:?}: {ours:?}"
    );
    for event in &ours {
        assert!(
            !holds_term(&event.data.to_string()),
            "{backends:?}: {} holds the term: {}",
            event.kind,
            event.data
        );
    }

    // A clean answer still streams whole.
    let events = send_sse(&client, &gateway, &root, &id, "hello there").await;
    assert_eq!(said(&events), "Echo: hello there", "{backends:?}");
    assert!(!events.iter().any(|(k, _)| k == "retract"));

    // What the model says in a tool round is guarded the same: the round stops there,
    // its tool is not called, and the turn is withheld.
    platform_profile(&client, &gateway, &root, "chatty-tool-caller").await;
    let tooled = create_session(
        &client,
        &gateway,
        &root,
        json!({"model": "chatty-tool-caller"}),
    )
    .await;
    let events = send_sse(&client, &gateway, &root, &tooled, PROMPT).await;
    let kinds: Vec<&str> = events.iter().map(|(k, _)| k.as_str()).collect();
    let streamed = said(&events);
    assert!(!holds_term(&streamed), "{backends:?}: {streamed:?}");
    assert!(
        streamed.starts_with("Looking up: please"),
        "{backends:?}: {streamed:?}"
    );
    assert!(!kinds.contains(&"tool_call"), "{backends:?}: {kinds:?}");
    assert_eq!(
        &kinds[kinds.len() - 3..],
        ["retract", "message", "done"],
        "{backends:?}"
    );
    assert_eq!(
        answers(&client, &gateway, &root, &tooled).await,
        [WITHHELD],
        "{backends:?}"
    );
}

#[tokio::test]
async fn chat_completions_withhold_a_forbidden_term_as_content_filter() {
    for backends in Backends::all() {
        chat_completions(backends).await;
    }
}

async fn chat_completions(backends: Backends) {
    let (
        _llm,
        Rooted {
            platform: _p,
            gateway,
            client,
            root,
            ..
        },
    ) = platform_with_rule(backends).await;
    let chat = |stream: bool| {
        client
            .post(format!("{gateway}/v1/chat/completions"))
            .bearer_auth(&root)
            .json(&json!({
                "model": "default", "stream": stream,
                "messages": [{ "role": "user", "content": PROMPT }],
            }))
            .send()
    };

    // Streamed: the text before the term, an error chunk, the content_filter chunk.
    let response = chat(true).await.unwrap();
    assert_eq!(response.status(), 200);
    let body = response.text().await.unwrap();
    assert!(!holds_term(&body), "{backends:?}: {body}");
    let data = sse_data(&body);
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"), "{body}");
    let chunks: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    let error = chunks
        .iter()
        .position(|c| c.get("error").is_some())
        .unwrap_or_else(|| panic!("{backends:?}: no error chunk: {body}"));
    assert_eq!(chunks[error]["error"]["code"], "content_filter");
    let last = chunks.last().unwrap();
    assert_eq!(
        last["choices"][0]["finish_reason"], "content_filter",
        "{body}"
    );
    assert_eq!(error, chunks.len() - 2, "{body}");
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert!(
        "echo: please say forbidden-word".starts_with(&text.to_lowercase()),
        "{text:?}"
    );

    // Whole: the reason, and nothing of the answer.
    let response = chat(false).await.unwrap();
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(
        answer["choices"][0]["finish_reason"], "content_filter",
        "{backends:?}: {answer}"
    );
    assert_eq!(answer["choices"][0]["message"]["content"], Value::Null);
    assert!(!holds_term(&answer.to_string()));

    // A clean answer is untouched.
    let clean: Value = client
        .post(format!("{gateway}/v1/chat/completions"))
        .bearer_auth(&root)
        .json(
            &json!({ "model": "default", "messages": [{ "role": "user", "content": "hi there" }] }),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(clean["choices"][0]["message"]["content"], "Echo: hi there");
    assert_eq!(clean["choices"][0]["finish_reason"], "stop");
}

/// Fail closed: with policy out of reach, slm cannot load the tenant's output rules, and
/// no answer is given (a user exempt from prompt moderation gets past the gateway
/// without policy, so only the guard stands in the way).
#[tokio::test]
async fn no_answer_without_the_output_rules() {
    let (
        _llm,
        Rooted {
            platform: _p,
            gateway,
            client,
            root,
            ..
        },
    ) = with_scripted_llm(
        Backends::Embedded,
        &[("SOMAGENT_ENDPOINTS__POLICY", "http://127.0.0.1:9")],
    )
    .await;
    let password = "a long user passphrase";
    let (status, user) = call(
        &client,
        Method::POST,
        &format!("{gateway}/v1/users"),
        &root,
        Some(json!({"username": "trusted", "password": password, "roles": ["operator", "moderation:bypass"]})),
    )
    .await;
    assert_eq!(status, 201, "{user}");
    let trusted = login(&client, &gateway, "default", "trusted", password).await;
    for stream in [false, true] {
        let response = client
            .post(format!("{gateway}/v1/chat/completions"))
            .bearer_auth(&trusted)
            .json(&json!({
                "model": "default", "stream": stream,
                "messages": [{ "role": "user", "content": "hello there" }],
            }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 503, "stream: {stream}");
        let problem: Value = response.json().await.unwrap();
        assert_eq!(problem["error"]["code"], "unavailable", "{problem}");
        assert!(
            problem["error"]["message"]
                .as_str()
                .unwrap()
                .contains("output policy"),
            "{problem}"
        );
    }
}
