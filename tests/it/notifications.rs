//! Notifications through the gateway, as a client would see them: a turn's completion
//! and a budget threshold land in the inbox, live on the WebSocket and the SSE stream,
//! and at the tenant's webhook signed as the Standard Webhooks specification says (the
//! test checks the signature with its own HMAC); an endpoint down for the first tries
//! gets the event later with the same id and body; one dead for every try is
//! dead-lettered, and a manual retry delivers it once it is back; another tenant sees
//! none of it. On the embedded backends and on the real servers under CI.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_lc_rs::hmac;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use data_encoding::BASE64;
use futures::{SinkExt, StreamExt};
use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{Backends, Rooted, other_tenant_admin, viewer_of, with_scripted_llm};
use crate::lifecycle::call;
use crate::sessions::create_session;

/// One request a webhook endpoint received.
#[derive(Clone, Debug)]
struct Received {
    id: String,
    timestamp: String,
    signature: String,
    body: String,
    answered: u16,
}

/// A webhook endpoint the test runs: it answers 503 to its first `fail_first`
/// requests, then 204, and keeps everything it was sent.
#[derive(Clone, Default)]
struct Endpoint {
    received: Arc<Mutex<Vec<Received>>>,
    fail_first: Arc<AtomicUsize>,
}

impl Endpoint {
    async fn start(fail_first: usize) -> (Self, String) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let this = Self::default();
        this.fail_first.store(fail_first, Ordering::SeqCst);
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        this.serve(listener);
        (this, url)
    }

    fn serve(&self, listener: tokio::net::TcpListener) {
        let app = axum::Router::new()
            .route("/hook", axum::routing::post(receive))
            .with_state(self.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    }

    fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    /// Waits until a request with `pred` was answered with success.
    async fn delivered(&self, what: &str, pred: impl Fn(&Value) -> bool) -> (Received, Value) {
        for _ in 0..300 {
            if let Some(r) = self.received().into_iter().find(|r| {
                r.answered < 300 && pred(&serde_json::from_str(&r.body).unwrap_or(Value::Null))
            }) {
                let body = serde_json::from_str(&r.body).unwrap();
                return (r, body);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("no {what} delivered: {:#?}", self.received());
    }
}

async fn receive(State(endpoint): State<Endpoint>, headers: HeaderMap, body: String) -> StatusCode {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let failing = endpoint
        .fail_first
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok();
    let answer = if failing {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::NO_CONTENT
    };
    endpoint.received.lock().unwrap().push(Received {
        id: header("webhook-id"),
        timestamp: header("webhook-timestamp"),
        signature: header("webhook-signature"),
        body,
        answered: answer.as_u16(),
    });
    answer
}

/// A stand-in for Slack's Web API: `chat.postMessage` answered `ok`, every request
/// kept with its bearer token.
#[derive(Clone, Default)]
struct SlackApi {
    posted: Arc<Mutex<Vec<(String, Value)>>>,
}

impl SlackApi {
    async fn start() -> (Self, String) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let this = Self::default();
        let base = format!("http://{}/api", listener.local_addr().unwrap());
        let state = this.clone();
        let app = axum::Router::new()
            .route(
                "/api/chat.postMessage",
                axum::routing::post(
                    |State(api): State<SlackApi>, headers: HeaderMap, body: String| async move {
                        let auth = headers
                            .get("authorization")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or_default()
                            .to_owned();
                        let body: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
                        api.posted.lock().unwrap().push((auth, body));
                        axum::Json(
                            json!({"ok": true, "channel": "C0NOTIFY", "ts": "1700000000.000100"}),
                        )
                    },
                ),
            )
            .with_state(state);
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (this, base)
    }

    async fn posted_with(&self, needle: &str) -> (String, Value) {
        for _ in 0..300 {
            if let Some(p) = self
                .posted
                .lock()
                .unwrap()
                .iter()
                .find(|(_, b)| b["text"].as_str().is_some_and(|t| t.contains(needle)))
            {
                return p.clone();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "nothing posted to Slack with `{needle}`: {:?}",
            self.posted.lock().unwrap()
        );
    }
}

/// Verifies a request as the Standard Webhooks specification tells receivers to:
/// HMAC-SHA256 keyed by the base64 part of the `whsec_` secret, over
/// `<webhook-id>.<webhook-timestamp>.<body>`, base64, one of the `v1,` signatures;
/// and a timestamp within five minutes.
fn verifies(secret: &str, r: &Received) -> bool {
    let key = BASE64
        .decode(secret.strip_prefix("whsec_").unwrap().as_bytes())
        .unwrap();
    let key = hmac::Key::new(hmac::HMAC_SHA256, &key);
    let signed = format!("{}.{}.{}", r.id, r.timestamp, r.body);
    let expected = BASE64.encode(hmac::sign(&key, signed.as_bytes()).as_ref());
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let fresh = r
        .timestamp
        .parse::<i64>()
        .is_ok_and(|t| (now - t).abs() <= 300);
    fresh
        && r.signature
            .split(' ')
            .any(|s| s.strip_prefix("v1,") == Some(expected.as_str()))
}

/// The SMTP server the platform mails through, and the Maildir it keeps messages in
/// (started by `scripts/ci-services.sh`; under CI it must be there).
fn smtp() -> Option<(String, std::path::PathBuf)> {
    let url = somagent_common::testing::required_env("SMTP_URL")?;
    let maildir = somagent_common::testing::required_env("SMTP_MAILDIR")?;
    Some((url, std::path::PathBuf::from(maildir)))
}

/// The messages in the Maildir addressed to `to`.
fn mails_to(maildir: &std::path::Path, to: &str) -> Vec<String> {
    let mut found = Vec::new();
    for sub in ["new", "cur"] {
        let Ok(entries) = std::fs::read_dir(maildir.join(sub)) else {
            continue;
        };
        for entry in entries.flatten() {
            if let Ok(text) = std::fs::read_to_string(entry.path())
                && text
                    .lines()
                    .any(|l| l.eq_ignore_ascii_case(&format!("to: {to}")))
            {
                found.push(text);
            }
        }
    }
    found
}

/// Waits until a message to `to` whose text holds `needle` has arrived.
async fn mail_arrives(maildir: &std::path::Path, to: &str, needle: &str) -> String {
    for _ in 0..300 {
        if let Some(m) = mails_to(maildir, to)
            .into_iter()
            .find(|m| m.contains(needle))
        {
            return m;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "no mail to {to} with `{needle}`: {:#?}",
        mails_to(maildir, to)
    );
}

/// Polls the inbox until a notification of `kind` is in it.
async fn inbox_has(
    client: &reqwest::Client,
    gateway: &str,
    token: &str,
    kind: &str,
) -> (Value, Value) {
    for _ in 0..200 {
        let (status, page) = call(
            client,
            Method::GET,
            &format!("{gateway}/v1/notifications"),
            token,
            None,
        )
        .await;
        assert_eq!(status, 200, "{page}");
        if let Some(n) = page["notifications"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["kind"] == kind)
        {
            return (n.clone(), page);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no {kind} notification in the inbox");
}

#[tokio::test]
async fn events_reach_the_inbox_the_websocket_and_signed_webhooks() {
    for backends in Backends::all() {
        journey(backends).await;
    }
}

async fn journey(backends: Backends) {
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;

    let mail = smtp();
    let (slack, slack_base) = SlackApi::start().await;

    let (
        _llm,
        Rooted {
            platform: _platform,
            gateway,
            client,
            root,
            ..
        },
    ) = with_scripted_llm(backends, &{
        let mut env = vec![
            ("SOMAGENT_NOTIFICATION__ALLOW_PRIVATE_NETWORKS", "true"),
            ("SOMAGENT_TOOL__ALLOW_PRIVATE_NETWORKS", "true"),
            ("SOMAGENT_NOTIFICATION__RETRY_SCHEDULE_SECS", "1,1,1"),
            ("SOMAGENT_SLM__LLM_PRICE_PROMPT", "1000"),
        ];
        if let Some((url, _)) = &mail {
            env.push(("SOMAGENT_SMTP_URL", url.as_str()));
        }
        env
    })
    .await;
    let g = |path: &str| format!("{gateway}{path}");
    // Mail for the root goes to an address of this run's own.
    let root_address = format!("root-{}@example.com", uuid::Uuid::new_v4().simple());
    // And to Slack through the tenant's Slack tool, in a channel of the root's choosing.
    let (status, set) = call(
        &client,
        Method::PUT,
        &g("/v1/tools/slack/credentials"),
        &root,
        Some(json!({"credential": "xoxb-test-token", "base_url": slack_base})),
    )
    .await;
    assert_eq!(status, 200, "{set}");
    let (status, prefs) = call(
        &client,
        Method::PATCH,
        &g("/v1/me/preferences"),
        &root,
        Some(json!({"notifications": {"channels": ["in_app", "email", "slack"], "email": root_address,
            "slack_channel": "C0NOTIFY"}})),
    )
    .await;
    assert_eq!(status, 200, "{prefs}");
    let (status, problem) = call(
        &client,
        Method::PATCH,
        &g("/v1/me/preferences"),
        &root,
        Some(json!({"notifications": {"email": "root@example.com\r\nBcc: all@example.com"}})),
    )
    .await;
    assert_eq!(status, 422, "{problem}");

    // Bad endpoints are clear 422s.
    for (body, field) in [
        (json!({"url": "ftp://example.com/in"}), "url"),
        (json!({"url": "https://user:pw@example.com/in"}), "url"),
        (
            json!({"url": "https://example.com/in", "event_types": ["not a type"]}),
            "event_types",
        ),
    ] {
        let (status, problem) =
            call(&client, Method::POST, &g("/v1/webhooks"), &root, Some(body)).await;
        assert_eq!(status, 422, "{problem}");
        assert_eq!(problem["error"]["code"], "validation_failed", "{problem}");
        assert!(
            problem["error"]["details"]["fields"][field].is_string(),
            "{problem}"
        );
    }

    // An endpoint that is down for its first two tries.
    let (endpoint, url) = Endpoint::start(2).await;
    let (status, hook) = call(
        &client,
        Method::POST,
        &g("/v1/webhooks"),
        &root,
        Some(json!({"url": url, "description": "ops", "event_types": ["turn.completed", "billing.*", "tenant.*"]})),
    )
    .await;
    assert_eq!(status, 201, "{hook}");
    let secret = hook["secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("whsec_"), "{hook}");
    let hook_id = hook["id"].as_str().unwrap().to_owned();
    // The secret is shown once.
    let (_, listed) = call(&client, Method::GET, &g("/v1/webhooks"), &root, None).await;
    assert_eq!(listed["webhooks"].as_array().unwrap().len(), 1, "{listed}");
    assert!(!listed.to_string().contains(&secret), "{listed}");

    // The caller follows their notifications on a WebSocket.
    let mut request = format!("{}/v1/ws", gateway.replacen("http", "ws", 1))
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {root}").parse().unwrap());
    let (mut socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    socket
        .send(Message::text(
            json!({"type": "subscribe", "channel": "notifications"}).to_string(),
        ))
        .await
        .unwrap();
    let reply: Value =
        serde_json::from_str(socket.next().await.unwrap().unwrap().to_text().unwrap()).unwrap();
    assert_eq!(
        reply,
        json!({"type": "subscribed", "channel": "notifications"})
    );

    // A token budget whose soft threshold (1 %, 1,000 tokens) the first turn crosses.
    let (status, set) = call(
        &client,
        Method::PUT,
        &g("/v1/billing/budgets"),
        &root,
        Some(json!({"budgets": [{"name": "daily-tokens", "scope": "tenant", "metric": "tokens", "period": "day", "limit": 100000, "soft_percent": 1}]})),
    )
    .await;
    assert_eq!(status, 200, "{set}");

    // A turn completes.
    let session = create_session(&client, &gateway, &root, json!({})).await;
    let (status, answer) = call(
        &client,
        Method::POST,
        &g(&format!("/v1/sessions/{session}/messages")),
        &root,
        Some(json!({"content": "tell me about the sea and the wind ".repeat(150)})),
    )
    .await;
    assert_eq!(status, 200, "{answer}");

    // In the inbox, unread.
    let (turn, page) = inbox_has(&client, &gateway, &root, "turn.completed").await;
    assert_eq!(turn["data"]["session_id"], session, "{turn}");
    assert_eq!(turn["severity"], "info", "{turn}");
    assert_eq!(turn["audience"], "user", "{turn}");
    assert!(turn["read_at"].is_null(), "{turn}");
    assert!(page["unread"].as_u64().unwrap() >= 1, "{page}");
    // The budget's soft threshold reaches the tenant's administrators.
    let (threshold, _) = inbox_has(&client, &gateway, &root, "billing.budget_threshold").await;
    assert_eq!(threshold["audience"], "tenant_admins", "{threshold}");
    assert_eq!(threshold["severity"], "warning", "{threshold}");

    // Live on the WebSocket.
    let mut live = Vec::new();
    while live.len() < 2 {
        let frame = tokio::time::timeout(Duration::from_secs(10), socket.next())
            .await
            .expect("the notifications came live")
            .unwrap()
            .unwrap();
        let event: Value = serde_json::from_str(frame.to_text().unwrap()).unwrap();
        assert_eq!(event["type"], "notification", "{event}");
        live.push(event["data"]["kind"].as_str().unwrap().to_owned());
    }
    assert!(live.contains(&"turn.completed".to_owned()), "{live:?}");
    assert!(
        live.contains(&"billing.budget_threshold".to_owned()),
        "{live:?}"
    );

    // At the webhook, signed, after two failed tries: the same id and body each time.
    let (delivered, body) = endpoint
        .delivered("turn.completed", |b| b["type"] == "turn.completed")
        .await;
    assert!(verifies(&secret, &delivered), "{delivered:?}");
    assert_eq!(body["data"]["details"]["session_id"], session, "{body}");
    assert_eq!(body["data"]["id"], turn["id"], "{body}");
    let tries: Vec<Received> = endpoint
        .received()
        .into_iter()
        .filter(|r| r.id == delivered.id)
        .collect();
    assert!(tries.len() >= 2, "{tries:#?}");
    assert!(tries.iter().all(|r| r.body == delivered.body));
    assert!(tries.iter().all(|r| verifies(&secret, r)), "{tries:#?}");
    assert_eq!(
        tries.iter().filter(|r| r.answered == 503).count(),
        tries.len() - 1
    );
    // A signature under another secret does not verify.
    assert!(!verifies(
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        &delivered
    ));
    let (threshold_hook, _) = endpoint
        .delivered("billing.budget_threshold", |b| {
            b["type"] == "billing.budget_threshold"
        })
        .await;
    assert!(verifies(&secret, &threshold_hook));

    // On Slack, with the tenant's token, in the root's channel.
    let (auth, posted) = slack.posted_with("Your agent answered").await;
    assert_eq!(auth, "Bearer xoxb-test-token");
    assert_eq!(posted["channel"], "C0NOTIFY", "{posted}");
    assert!(
        posted["text"].as_str().unwrap().contains(&session),
        "{posted}"
    );

    // By email, both: the user's own and, as an admin, the budget's.
    if let Some((_, maildir)) = &mail {
        let turn_mail = mail_arrives(
            maildir,
            &root_address,
            "Subject: [SomaAgent] Your agent answered",
        )
        .await;
        assert!(turn_mail.contains(&session), "{turn_mail}");
        assert!(turn_mail.contains("Severity: info"), "{turn_mail}");
        mail_arrives(maildir, &root_address, "Subject: [SomaAgent] Budget").await;
    }

    // The delivery log shows each try.
    let (status, log) = call(
        &client,
        Method::GET,
        &g(&format!(
            "/v1/webhooks/{hook_id}/deliveries?status=delivered"
        )),
        &root,
        None,
    )
    .await;
    assert_eq!(status, 200, "{log}");
    let turn_delivery = log["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["event_type"] == "turn.completed")
        .unwrap_or_else(|| panic!("{log}"))
        .clone();
    assert_eq!(
        turn_delivery["message_id"],
        delivered.id.as_str(),
        "{turn_delivery}"
    );
    let history = turn_delivery["history"].as_array().unwrap();
    assert_eq!(history.len(), tries.len(), "{turn_delivery}");
    assert_eq!(history[0]["status_code"], 503, "{turn_delivery}");
    assert_eq!(
        history.last().unwrap()["status_code"],
        204,
        "{turn_delivery}"
    );
    assert!(history.iter().all(|a| a["latency_ms"].is_u64()));

    // Read one, then all.
    let id = turn["id"].as_str().unwrap();
    let (status, _) = call(
        &client,
        Method::POST,
        &g(&format!("/v1/notifications/{id}/read")),
        &root,
        None,
    )
    .await;
    assert_eq!(status, 200);
    let (_, page) = call(&client, Method::GET, &g("/v1/notifications"), &root, None).await;
    let again = page["notifications"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["id"] == id)
        .unwrap();
    assert!(again["read_at"].is_string(), "{again}");
    let (_, unread) = call(
        &client,
        Method::GET,
        &g("/v1/notifications?unread=true"),
        &root,
        None,
    )
    .await;
    assert!(
        unread["notifications"]
            .as_array()
            .unwrap()
            .iter()
            .all(|n| n["id"] != id),
        "{unread}"
    );
    let (status, all) = call(
        &client,
        Method::POST,
        &g("/v1/notifications/read-all"),
        &root,
        None,
    )
    .await;
    assert_eq!(status, 200, "{all}");
    let (_, after) = call(
        &client,
        Method::GET,
        &g("/v1/notifications?unread=true"),
        &root,
        None,
    )
    .await;
    assert_eq!(after["unread"], 0, "{after}");
    assert_eq!(after["notifications"], json!([]), "{after}");

    // An administrator's message to one user reaches their SSE stream; a viewer may
    // read their own inbox but neither send nor see webhooks.
    let (viewer, viewer_id) = viewer_of(&client, &gateway, &root).await;
    // The viewer wants email, but it is their quiet hours (the hour around now, UTC).
    let viewer_address = format!("reader-{}@example.com", uuid::Uuid::new_v4().simple());
    let hour = time::OffsetDateTime::now_utc().hour();
    let (status, prefs) = call(
        &client,
        Method::PATCH,
        &g("/v1/me/preferences"),
        &viewer,
        Some(
            json!({"notifications": {"channels": ["in_app", "email"], "email": viewer_address,
            "quiet_hours": {"enabled": true, "start": format!("{:02}:00", (hour + 23) % 24),
                            "end": format!("{:02}:59", (hour + 1) % 24), "time_zone": "UTC"}}}),
        ),
    )
    .await;
    assert_eq!(status, 200, "{prefs}");
    let mut stream = client
        .get(g("/v1/notifications/stream"))
        .bearer_auth(&viewer)
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    let (status, sent) = call(
        &client,
        Method::POST,
        &g("/v1/notifications"),
        &root,
        Some(json!({"user_id": viewer_id, "severity": "warning", "title": "Maintenance tonight", "body": "From 22:00 UTC."})),
    )
    .await;
    assert_eq!(status, 202, "{sent}");
    let mut text = String::new();
    while !text.contains("Maintenance tonight") {
        let chunk = tokio::time::timeout(Duration::from_secs(10), stream.chunk())
            .await
            .expect("the notification came on the stream")
            .unwrap()
            .expect("the stream stays open");
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(text.contains("event: notification"), "{text}");
    let (mine, _) = inbox_has(&client, &gateway, &viewer, "tenant.message").await;
    assert_eq!(mine["title"], "Maintenance tonight", "{mine}");
    // A critical one is emailed at once, quiet hours or not; the warning waits.
    if let Some((_, maildir)) = &mail {
        let (status, _) = call(
            &client,
            Method::POST,
            &g("/v1/notifications"),
            &root,
            Some(json!({"user_id": viewer_id, "severity": "critical", "title": "Password reset required"})),
        )
        .await;
        assert_eq!(status, 202);
        mail_arrives(maildir, &viewer_address, "Password reset required").await;
        assert!(
            mails_to(maildir, &viewer_address)
                .iter()
                .all(|m| !m.contains("Maintenance tonight")),
            "the warning was mailed during quiet hours"
        );
    }
    // The viewer does not see the administrators' notifications nor the root's.
    let (_, theirs) = call(&client, Method::GET, &g("/v1/notifications"), &viewer, None).await;
    assert!(
        theirs["notifications"]
            .as_array()
            .unwrap()
            .iter()
            .all(|n| n["audience"] == "user" && n["kind"] == "tenant.message"),
        "{theirs}"
    );
    for (method, path) in [
        (Method::GET, "/v1/webhooks".to_owned()),
        (Method::POST, "/v1/notifications".to_owned()),
    ] {
        let (status, problem) = call(
            &client,
            method,
            &g(&path),
            &viewer,
            Some(json!({"severity": "info", "title": "x"})),
        )
        .await;
        assert_eq!(status, 403, "{path}: {problem}");
    }
    let (tenant_message, _) = endpoint
        .delivered("tenant.message", |b| b["type"] == "tenant.message")
        .await;
    assert!(verifies(&secret, &tenant_message));

    // Another tenant sees none of it.
    let other = other_tenant_admin(&client, &gateway, &root).await;
    let (_, theirs) = call(&client, Method::GET, &g("/v1/notifications"), &other, None).await;
    assert_eq!(theirs["notifications"], json!([]), "{theirs}");
    let (_, hooks) = call(&client, Method::GET, &g("/v1/webhooks"), &other, None).await;
    assert_eq!(hooks["webhooks"], json!([]), "{hooks}");
    for (method, path) in [
        (Method::GET, format!("/v1/webhooks/{hook_id}")),
        (Method::GET, format!("/v1/webhooks/{hook_id}/deliveries")),
        (Method::POST, format!("/v1/notifications/{id}/read")),
        (
            Method::POST,
            format!(
                "/v1/webhooks/{hook_id}/deliveries/{}/retry",
                turn_delivery["id"].as_str().unwrap()
            ),
        ),
        (Method::DELETE, format!("/v1/webhooks/{hook_id}")),
    ] {
        let (status, problem) = call(&client, method, &g(&path), &other, None).await;
        assert_eq!(status, 404, "{path}: {problem}");
    }
}

#[tokio::test]
async fn a_dead_endpoint_is_dead_lettered_and_retried_by_hand() {
    let (
        _llm,
        Rooted {
            platform: _platform,
            gateway,
            client,
            root,
            ..
        },
    ) = with_scripted_llm(
        Backends::Embedded,
        &[
            ("SOMAGENT_NOTIFICATION__ALLOW_PRIVATE_NETWORKS", "true"),
            ("SOMAGENT_NOTIFICATION__RETRY_SCHEDULE_SECS", "1,1"),
        ],
    )
    .await;
    let g = |path: &str| format!("{gateway}{path}");
    // A port nothing listens on, for now.
    let parked = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = parked.local_addr().unwrap();
    drop(parked);
    let (status, hook) = call(
        &client,
        Method::POST,
        &g("/v1/webhooks"),
        &root,
        Some(json!({"url": format!("http://{address}/hook")})),
    )
    .await;
    assert_eq!(status, 201, "{hook}");
    let hook_id = hook["id"].as_str().unwrap().to_owned();
    let secret = hook["secret"].as_str().unwrap().to_owned();
    let (status, _) = call(
        &client,
        Method::POST,
        &g("/v1/notifications"),
        &root,
        Some(json!({"severity": "critical", "title": "Disk almost full"})),
    )
    .await;
    assert_eq!(status, 202);

    // Three tries (the first and two retries), then the dead-letter list.
    let mut dead = Value::Null;
    for _ in 0..150 {
        let (_, page) = call(
            &client,
            Method::GET,
            &g(&format!("/v1/webhooks/{hook_id}/deliveries?status=dead")),
            &root,
            None,
        )
        .await;
        if let Some(d) = page["deliveries"].as_array().and_then(|d| d.first()) {
            dead = d.clone();
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(dead["status"], "dead", "never dead-lettered");
    assert_eq!(dead["attempts"], 3, "{dead}");
    let history = dead["history"].as_array().unwrap();
    assert_eq!(history.len(), 3, "{dead}");
    assert!(history.iter().all(|a| a["status_code"].is_null() && a["error"].as_str().unwrap().contains("connect")), "{dead}");
    let (_, hook_now) = call(
        &client,
        Method::GET,
        &g(&format!("/v1/webhooks/{hook_id}")),
        &root,
        None,
    )
    .await;
    assert!(hook_now["failing_since"].is_string(), "{hook_now}");
    assert_eq!(hook_now["enabled"], true, "{hook_now}");

    // Back up; retried by hand, it arrives signed, with the same id.
    let listener = tokio::net::TcpListener::bind(address).await.unwrap();
    let endpoint = Endpoint::default();
    endpoint.serve(listener);
    let delivery_id = dead["id"].as_str().unwrap();
    let (status, retried) = call(
        &client,
        Method::POST,
        &g(&format!(
            "/v1/webhooks/{hook_id}/deliveries/{delivery_id}/retry"
        )),
        &root,
        None,
    )
    .await;
    assert_eq!(status, 202, "{retried}");
    assert_eq!(retried["status"], "pending", "{retried}");
    let (got, body) = endpoint
        .delivered("the retried delivery", |b| b["type"] == "tenant.message")
        .await;
    assert_eq!(got.id, dead["message_id"].as_str().unwrap());
    assert!(verifies(&secret, &got));
    assert_eq!(body["data"]["title"], "Disk almost full", "{body}");
    assert_eq!(body["data"]["severity"], "critical", "{body}");
    for _ in 0..50 {
        let (_, page) = call(
            &client,
            Method::GET,
            &g(&format!(
                "/v1/webhooks/{hook_id}/deliveries?status=delivered"
            )),
            &root,
            None,
        )
        .await;
        if !page["deliveries"].as_array().unwrap().is_empty() {
            assert_eq!(page["deliveries"][0]["attempts"], 4, "{page}");
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, hook_now) = call(
        &client,
        Method::GET,
        &g(&format!("/v1/webhooks/{hook_id}")),
        &root,
        None,
    )
    .await;
    assert!(hook_now["failing_since"].is_null(), "{hook_now}");

    // Deleting the endpoint removes it and its log.
    let (status, _) = call(
        &client,
        Method::DELETE,
        &g(&format!("/v1/webhooks/{hook_id}")),
        &root,
        None,
    )
    .await;
    assert_eq!(status, 204);
    let (status, _) = call(
        &client,
        Method::GET,
        &g(&format!("/v1/webhooks/{hook_id}/deliveries")),
        &root,
        None,
    )
    .await;
    assert_eq!(status, 404);
}
