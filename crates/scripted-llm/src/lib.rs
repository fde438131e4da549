//! An OpenAI-compatible chat completions server whose behaviour is chosen by the
//! requested `model`, for tests and benchmarks. It speaks the real wire format:
//! `POST /v1/chat/completions` (JSON, or SSE chunks ending in `data: [DONE]` when
//! `stream: true`, with a usage chunk when `stream_options.include_usage`), tool calls,
//! usage, and errors in OpenAI's `{"error": {...}}` shape.
//!
//! Models:
//! - `scripted`: answers `Echo: <last user message>`, a word per chunk; a `|` in the
//!   message is left out of the answer and cuts the chunks there instead, so a test
//!   can have a word split across chunks without the prompt holding the word.
//! - `tool-caller`: first asks for the tool `lookup` with `{"query": <last user
//!   message>}`; once the conversation holds a tool result, answers `The tool said: <it>`.
//! - `chatty-tool-caller`: like `tool-caller`, first saying `Looking up: <last user
//!   message>` (cut at `|`s as `scripted` does) in the answer that asks for the tool.
//! - `tool-user`: follows a script in the last user message, one call per line as
//!   `call <function> <JSON arguments>`, rounds separated by a line `then`. Each round
//!   asks for its calls (ids `call_<turn>_<round>_<n>`, `turn` counting the user
//!   messages), but only of functions the request offers in `tools`: naming one it does
//!   not offer, it answers `I have no tool <names>` instead. After the last round it
//!   answers `Results: ` and the contents of the tool messages since the user's,
//!   joined by ` || `. Without a script, as `scripted`.
//! - `no-usage`: like `scripted`, without usage figures.
//! - `slow-N`: like `scripted`, waiting N ms before each chunk.
//! - `silent`: never answers.
//! - `fail-500`, `fail-429`: always that status (`Retry-After: 0` on 429).
//! - `rules`: answers a last user message by the first rule the test set (`on`,
//!   `on_slowly`) whose text it contains, each rule's answers in turn (the last one
//!   repeated); as `scripted` when none matches.
//! - `flaky-N`: the first N requests for a given conversation get a 503, then as
//!   `scripted`.
//! - `cut-N`: the first N streamed answers to a given conversation break off halfway
//!   (the connection drops after some words), then as `scripted`.
//!
//! Embeddings (`POST /v1/embeddings`, float or base64, `dimensions` honoured):
//! - `hashed-N`: N-dimensional unit vectors hashed from the text's lowercase words
//!   (each word adds ±1 at the place its hash picks), so texts that share words are
//!   close and others are not: lexical, deterministic, and enough to tell in a test
//!   which passage a question finds. Usage counts one token per word.
//! - `hashed-N-slow-M`: like `hashed-N`, answering each request after M ms (a model
//!   slow enough for a test to act while a document is being ingested).
//! - `hashed-wrong-N`: like `hashed-N`, one number short (a misbehaving server).
//! - `fail-500`: always a 500.
//!
//! Every request is recorded (`requests()`), so tests can see retries and fallbacks.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

#[derive(Default)]
struct Shared {
    requests: Mutex<Vec<Value>>,
    attempts: Mutex<HashMap<String, u32>>,
    rules: Mutex<Vec<Rule>>,
}

/// `rules`' answers to a last user message containing `contains`: the first time the
/// first answer, then the next, the last one repeated.
struct Rule {
    contains: String,
    answers: Vec<String>,
    used: usize,
    /// A wait before each chunk.
    delay: Option<Duration>,
}

/// A running scripted server; it stops when dropped.
pub struct ScriptedLlm {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ScriptedLlm {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl ScriptedLlm {
    /// Starts on a free loopback port.
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_on("127.0.0.1:0").await
    }

    pub async fn start_on(addr: &str) -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::default());
        let app = axum::Router::new()
            .route("/v1/chat/completions", post(chat))
            .route("/v1/models", get(models))
            .route("/v1/embeddings", post(embeddings))
            .with_state(shared.clone());
        let listener = axum::serve::ListenerExt::tap_io(listener, |stream| {
            let _ = stream.set_nodelay(true);
        });
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self { addr, shared, task })
    }

    /// The OpenAI base URL (`http://127.0.0.1:PORT/v1`).
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Makes `rules` answer a last user message containing `contains` with `answers`,
    /// one per time it matches (the last one repeated).
    pub fn on(&self, contains: &str, answers: &[&str]) {
        self.on_slowly(contains, answers, None);
    }

    /// [`ScriptedLlm::on`], waiting `delay` before each chunk of a streamed answer.
    pub fn on_slowly(&self, contains: &str, answers: &[&str], delay: Option<Duration>) {
        self.shared.rules.lock().unwrap().push(Rule {
            contains: contains.to_owned(),
            answers: answers.iter().map(|a| (*a).to_owned()).collect(),
            used: 0,
            delay,
        });
    }

    /// Every request body received so far, oldest first.
    pub fn requests(&self) -> Vec<Value> {
        self.shared.requests.lock().unwrap().clone()
    }
}

async fn models() -> Json<Value> {
    let ids = [
        "scripted",
        "tool-caller",
        "chatty-tool-caller",
        "tool-user",
        "rules",
        "no-usage",
        "silent",
        "fail-500",
        "fail-429",
    ];
    Json(json!({
        "object": "list",
        "data": ids.iter().map(|id| json!({"id": id, "object": "model", "created": 0, "owned_by": "scripted"})).collect::<Vec<_>>(),
    }))
}

fn error(status: StatusCode, message: &str) -> Response {
    let mut response = (
        status,
        Json(json!({"error": {"message": message, "type": "server_error", "code": status.as_u16().to_string()}})),
    )
        .into_response();
    if status == StatusCode::TOO_MANY_REQUESTS {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("0"));
    }
    response
}

/// What the model says to `messages`: text, or tool calls.
enum Answer {
    Text(String),
    /// Tool calls, after the text said with them (often none).
    Tools(Vec<(String, String, String)>, String),
}

fn answer(model: &str, messages: &[Value], tools: &[Value]) -> Answer {
    let last_user = messages
        .iter()
        .rev()
        .find(|m| m["role"] == "user")
        .map(|m| content_text(&m["content"]))
        .unwrap_or_default();
    if model == "tool-caller" || model == "chatty-tool-caller" {
        if let Some(result) = messages.iter().rev().find(|m| m["role"] == "tool") {
            return Answer::Text(format!(
                "The tool said: {}",
                content_text(&result["content"])
            ));
        }
        let said = if model == "chatty-tool-caller" {
            format!("Looking up: {last_user}")
        } else {
            String::new()
        };
        return Answer::Tools(
            vec![(
                "call_1".into(),
                "lookup".into(),
                json!({ "query": last_user }).to_string(),
            )],
            said,
        );
    }
    if model == "tool-user"
        && let Some(answer) = follow_script(messages, &last_user, tools)
    {
        return answer;
    }
    Answer::Text(format!("Echo: {last_user}"))
}

/// `rules`' answer to the conversation, and its delay, if a rule matches.
fn ruled(shared: &Shared, messages: &[Value]) -> Option<(String, Option<Duration>)> {
    let last_user = messages
        .iter()
        .rev()
        .find(|m| m["role"] == "user")
        .map(|m| content_text(&m["content"]))?;
    let mut rules = shared.rules.lock().unwrap();
    let rule = rules.iter_mut().find(|r| last_user.contains(&r.contains))?;
    let answer = rule
        .answers
        .get(rule.used)
        .or_else(|| rule.answers.last())
        .cloned()?;
    rule.used += 1;
    Some((answer, rule.delay))
}

/// `tool-user`'s answer: the next round of the script's calls, or the results.
fn follow_script(messages: &[Value], script: &str, tools: &[Value]) -> Option<Answer> {
    let mut rounds: Vec<Vec<(String, String)>> = vec![Vec::new()];
    for line in script.lines().map(str::trim) {
        if line == "then" {
            rounds.push(Vec::new());
        } else if let Some(call) = line.strip_prefix("call ") {
            let (name, args) = call.split_once(' ').unwrap_or((call, "{}"));
            rounds
                .last_mut()?
                .push((name.to_owned(), args.trim().to_owned()));
        }
    }
    rounds.retain(|r| !r.is_empty());
    if rounds.is_empty() {
        return None;
    }
    let since_user = messages
        .iter()
        .rposition(|m| m["role"] == "user")
        .map_or(messages, |i| &messages[i + 1..]);
    let done = since_user
        .iter()
        .filter(|m| m["role"] == "assistant" && m["tool_calls"].is_array())
        .count();
    let Some(round) = rounds.get(done) else {
        let results: Vec<String> = since_user
            .iter()
            .filter(|m| m["role"] == "tool")
            .map(|m| content_text(&m["content"]))
            .collect();
        return Some(Answer::Text(format!("Results: {}", results.join(" || "))));
    };
    let offered: Vec<&str> = tools
        .iter()
        .filter_map(|t| t["function"]["name"].as_str())
        .collect();
    let missing: Vec<&str> = round
        .iter()
        .map(|(name, _)| name.as_str())
        .filter(|name| !offered.contains(name))
        .collect();
    if !missing.is_empty() {
        return Some(Answer::Text(format!(
            "I have no tool {}",
            missing.join(", ")
        )));
    }
    let turn = messages.iter().filter(|m| m["role"] == "user").count();
    Some(Answer::Tools(
        round
            .iter()
            .enumerate()
            .map(|(n, (name, args))| {
                (
                    format!("call_{turn}_{done}_{n}"),
                    name.clone(),
                    args.clone(),
                )
            })
            .collect(),
        String::new(),
    ))
}

fn content_text(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p["text"].as_str())
            .collect::<Vec<_>>()
            .join(""),
        _ => String::new(),
    }
}

/// A rough count, the same on every call, so tests can predict usage.
fn count(text: &str) -> u64 {
    text.split_whitespace().count() as u64
}

/// The words of `text`, lowercase, as `hashed-N` embeds and counts them.
pub fn words(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
}

/// The `hashed-N` vector of `text`: its words hashed (FNV-1a) into `size` places with a
/// sign each, scaled to unit length (all zeros for a text without words).
pub fn hashed_vector(text: &str, size: usize) -> Vec<f32> {
    let mut vector = vec![0f32; size.max(1)];
    for word in words(text) {
        let hash = word.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
        let place = (hash % vector.len() as u64) as usize;
        vector[place] += if hash >> 63 == 0 { 1.0 } else { -1.0 };
    }
    let norm = vector.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        vector.iter_mut().for_each(|x| *x /= norm);
    }
    vector
}

async fn embeddings(State(shared): State<Arc<Shared>>, Json(body): Json<Value>) -> Response {
    shared.requests.lock().unwrap().push(body.clone());
    let model = body["model"].as_str().unwrap_or_default().to_owned();
    if model == "fail-500" {
        return error(StatusCode::INTERNAL_SERVER_ERROR, "the model crashed");
    }
    let (model_name, delay) = match model.split_once("-slow-") {
        Some((name, ms)) if name.starts_with("hashed-") => match ms.parse::<u64>() {
            Ok(ms) => (name, Duration::from_millis(ms)),
            Err(_) => return error(StatusCode::NOT_FOUND, "no such embedding model"),
        },
        _ => (model.as_str(), Duration::ZERO),
    };
    tokio::time::sleep(delay).await;
    let (short, size) = match model_name.strip_prefix("hashed-wrong-") {
        Some(n) => (true, n.parse::<usize>().ok()),
        None => (
            false,
            model_name
                .strip_prefix("hashed-")
                .and_then(|n| n.parse().ok()),
        ),
    };
    let Some(mut size) = size.filter(|n| *n > 1) else {
        return error(StatusCode::NOT_FOUND, "no such embedding model");
    };
    if let Some(asked) = body["dimensions"].as_u64() {
        size = size.min(asked as usize);
    }
    let texts: Vec<String> = match &body["input"] {
        Value::String(text) => vec![text.clone()],
        Value::Array(items) => items
            .iter()
            .filter_map(|t| t.as_str().map(str::to_owned))
            .collect(),
        _ => {
            return error(
                StatusCode::BAD_REQUEST,
                "input is a string or a list of strings",
            );
        }
    };
    let base64 = body["encoding_format"] == "base64";
    let mut tokens = 0;
    let data: Vec<Value> = texts
        .iter()
        .enumerate()
        .map(|(index, text)| {
            tokens += words(text).count();
            let mut vector = hashed_vector(text, size);
            if short {
                vector.pop();
            }
            let embedding = if base64 {
                use base64::Engine;
                let bytes: Vec<u8> = vector.iter().flat_map(|x| x.to_le_bytes()).collect();
                json!(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                json!(vector)
            };
            json!({"object": "embedding", "index": index, "embedding": embedding})
        })
        .collect();
    Json(json!({
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }))
    .into_response()
}

async fn chat(State(shared): State<Arc<Shared>>, Json(body): Json<Value>) -> Response {
    shared.requests.lock().unwrap().push(body.clone());
    let model = body["model"].as_str().unwrap_or_default().to_owned();
    let messages = body["messages"].as_array().cloned().unwrap_or_default();
    if messages.is_empty() {
        return error(StatusCode::BAD_REQUEST, "messages is required");
    }
    let delay = model
        .strip_prefix("slow-")
        .and_then(|ms| ms.parse().ok())
        .map(Duration::from_millis);
    match model.as_str() {
        "silent" => {
            std::future::pending::<()>().await;
            unreachable!()
        }
        "fail-500" => return error(StatusCode::INTERNAL_SERVER_ERROR, "the model crashed"),
        "fail-429" => return error(StatusCode::TOO_MANY_REQUESTS, "slow down"),
        _ => {}
    }
    // The how-manyth request for this conversation, for models that change with it.
    let nth = |shared: &Shared| {
        let key = format!(
            "{model}:{}",
            serde_json::to_string(&messages).unwrap_or_default()
        );
        let mut attempts = shared.attempts.lock().unwrap();
        let seen = attempts.entry(key).or_default();
        *seen += 1;
        *seen
    };
    if let Some(n) = model
        .strip_prefix("flaky-")
        .and_then(|n| n.parse::<u32>().ok())
        && nth(&shared) <= n
    {
        return error(StatusCode::SERVICE_UNAVAILABLE, "warming up");
    }
    let cut = model
        .strip_prefix("cut-")
        .and_then(|n| n.parse::<u32>().ok())
        .is_some_and(|n| body["stream"] == true && nth(&shared) <= n);
    let prompt_tokens: u64 = messages
        .iter()
        .map(|m| count(&content_text(&m["content"])) + 1)
        .sum();
    let tools = body["tools"].as_array().cloned().unwrap_or_default();
    let (answer, delay) = match (model == "rules")
        .then(|| ruled(&shared, &messages))
        .flatten()
    {
        Some((text, rule_delay)) => (Answer::Text(text), rule_delay.or(delay)),
        None => (answer(&model, &messages, &tools), delay),
    };
    let with_usage = model != "no-usage";
    let id = format!("chatcmpl-{}", shared.requests.lock().unwrap().len());
    if body["stream"] == true {
        let include_usage = with_usage && body["stream_options"]["include_usage"] == true;
        return stream(id, model, answer, prompt_tokens, include_usage, delay, cut);
    }
    if let Some(delay) = delay {
        tokio::time::sleep(delay).await;
    }
    let (message, finish, completion_tokens) = match answer {
        Answer::Text(text) => {
            let text = text.replace('|', "");
            let n = count(&text);
            (json!({"role": "assistant", "content": text}), "stop", n)
        }
        Answer::Tools(calls, said) => (
            json!({"role": "assistant", "content": Some(said.replace('|', "")).filter(|s| !s.is_empty()), "tool_calls": calls.iter().map(|(id, name, args)| json!({
                "id": id, "type": "function", "function": {"name": name, "arguments": args}
            })).collect::<Vec<_>>()}),
            "tool_calls",
            5,
        ),
    };
    let mut response = json!({
        "id": id,
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
    });
    if with_usage {
        response["usage"] = json!({
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        });
    }
    Json(response).into_response()
}

fn stream(
    id: String,
    model: String,
    answer: Answer,
    prompt_tokens: u64,
    include_usage: bool,
    delay: Option<Duration>,
    cut: bool,
) -> Response {
    let chunk = move |delta: Value, finish: Option<&str>| {
        json!({
            "id": id, "object": "chat.completion.chunk", "created": 1_700_000_000, "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        })
    };
    let mut events: Vec<Value> = vec![chunk(json!({"role": "assistant", "content": ""}), None)];
    let mut say = |text: &str| {
        let words: Vec<&str> = if text.contains('|') {
            text.split('|').collect()
        } else {
            text.split_inclusive(' ').collect()
        };
        for word in words.into_iter().filter(|w| !w.is_empty()) {
            events.push(chunk(json!({"content": word}), None));
        }
    };
    let (finish, completion_tokens) = match answer {
        Answer::Text(text) => {
            say(&text);
            ("stop", count(&text.replace('|', "")))
        }
        Answer::Tools(calls, said) => {
            say(&said);
            for (index, (call_id, name, args)) in calls.iter().enumerate() {
                events.push(chunk(
                    json!({"tool_calls": [{"index": index, "id": call_id, "type": "function", "function": {"name": name, "arguments": ""}}]}),
                    None,
                ));
                // Arguments arrive in pieces, as real servers send them.
                let (head, tail) = args.split_at(args.len() / 2);
                for piece in [head, tail] {
                    events.push(chunk(
                        json!({"tool_calls": [{"index": index, "function": {"arguments": piece}}]}),
                        None,
                    ));
                }
            }
            ("tool_calls", 5)
        }
    };
    events.push(chunk(json!({}), Some(finish)));
    let usage_chunk = include_usage.then(|| {
        let mut last = chunk(json!({}), None);
        last["choices"] = json!([]);
        last["usage"] = json!({
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        });
        last
    });
    events.extend(usage_chunk);
    if cut {
        events.truncate(events.len() / 2);
    }
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<String, std::io::Error>>(8);
    tokio::spawn(async move {
        for event in events {
            if let Some(delay) = delay {
                tokio::time::sleep(delay).await;
            }
            if tx.send(Ok(format!("data: {event}\n\n"))).await.is_err() {
                return;
            }
        }
        let end = if cut {
            // An error in the body drops the connection mid-answer.
            Err(std::io::Error::other("the model server went away"))
        } else {
            Ok("data: [DONE]\n\n".into())
        };
        let _ = tx.send(end).await;
    });
    let body = Body::from_stream(tokio_stream_from(rx));
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(body)
        .unwrap_or_else(|_| error(StatusCode::INTERNAL_SERVER_ERROR, "stream"))
}

/// A receiver as a stream.
fn tokio_stream_from(
    mut rx: tokio::sync::mpsc::Receiver<Result<String, std::io::Error>>,
) -> impl futures::Stream<Item = Result<String, std::io::Error>> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}
