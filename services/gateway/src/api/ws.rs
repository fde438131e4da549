//! `GET /v1/ws`: a WebSocket on which a client follows sessions and its notifications
//! live. It authenticates with the usual header (bearer token or `X-API-Key`) or, where
//! it cannot set headers (browsers), with a first message `{"type": "auth", "token":
//! "..."}`. Then `{"type": "subscribe", "session_id": "..."}` and `{"type":
//! "unsubscribe", ...}`; the server sends each turn event as `{"type":
//! <delta|restart|retract|tool_call|policy|message|done|error>, "session_id", "turn",
//! "data"}`, and `subscribed`, `unsubscribed` or `error` replies. `{"type": "subscribe",
//! "channel": "notifications"}` follows the caller's new notifications, each sent as
//! `{"type": "notification", "data": <the notification as the inbox lists it>}`.
//! `{"type": "subscribe", "project_id": "..."}` (or `"run_id"`, a multi-agent run)
//! follows a run: `{"type": "run", "run_id", "event", "data"}`, first its state now
//! (`"event": "state"`), then each stage and batch until it ends.
//! When the credential expires or is revoked, a last `{"type": "error", "code":
//! "token_expired" | "token_revoked", "message"}` is sent and the connection closes.
//! When the gateway stops, it closes the connection with code 1012 (service restart):
//! reconnect and subscribe again.

use std::collections::HashMap;
use std::time::Duration;

use axum::extract::State;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::response::Response;
use futures::StreamExt;
use serde_json::{Value, json};
use somagent_common::auth::Capability;
use somagent_common::proto::orchestrator::v1 as pb;
use somagent_common::turn::TurnEvent;
use tokio::sync::mpsc;

use super::Authenticated;
use crate::Gateway;

/// How long a client has to authenticate by message.
const AUTH_WITHIN: Duration = Duration::from_secs(10);
/// Sessions one connection may follow at once.
const MAX_SUBSCRIPTIONS: usize = 64;

/// Follow sessions and notifications live over a WebSocket.
#[utoipa::path(get, path = "/v1/ws", tag = "sessions",
    responses((status = 101, description = "switching to the WebSocket protocol described above")),
    security((), ("bearer" = []), ("api_key" = [])))]
pub async fn ws(
    State(gateway): State<Gateway>,
    auth: Result<Authenticated, Response>,
    upgrade: WebSocketUpgrade,
) -> Response {
    upgrade.on_upgrade(move |socket| serve(gateway, auth.ok(), socket))
}

fn text(value: Value) -> Message {
    Message::Text(value.to_string().into())
}

async fn serve(gateway: Gateway, auth: Option<Authenticated>, mut socket: WebSocket) {
    let auth = match auth {
        Some(auth) => auth,
        None => match authenticate_by_message(&gateway, &mut socket).await {
            Some(auth) => auth,
            None => {
                let _ = socket.send(text(json!({"type": "error", "message": "authenticate first: {\"type\": \"auth\", \"token\": ...}"}))).await;
                return;
            }
        },
    };
    let (out_tx, mut out_rx) = mpsc::channel::<Message>(256);
    let mut watching: HashMap<String, tokio::task::JoinHandle<()>> = HashMap::new();
    // The connection lives only as long as its credential.
    let ended =
        crate::credential_watch::CredentialWatch::new(gateway.verifier.clone(), &auth).ended();
    tokio::pin!(ended);
    let stopping = gateway.stopping.clone();
    loop {
        tokio::select! {
            // 1012: the service is restarting; the client reconnects and subscribes again.
            () = stopping.cancelled() => {
                let frame = axum::extract::ws::CloseFrame { code: 1012, reason: "the server is restarting".into() };
                let _ = socket.send(Message::Close(Some(frame))).await;
                break;
            }
            why = &mut ended => {
                let _ = socket
                    .send(text(json!({"type": "error", "code": why.code, "message": why.message})))
                    .await;
                let _ = socket.send(Message::Close(None)).await;
                break;
            }
            outgoing = out_rx.recv() => {
                let Some(message) = outgoing else { break };
                if socket.send(message).await.is_err() {
                    break;
                }
            }
            incoming = socket.recv() => {
                let Some(Ok(message)) = incoming else { break };
                let Message::Text(body) = message else { continue };
                let request: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
                let session = request["session_id"].as_str().unwrap_or_default().to_owned();
                let notifications = request["channel"] == "notifications";
                let run = request["project_id"].as_str().or_else(|| request["run_id"].as_str()).map(str::to_owned);
                let reply = match request["type"].as_str() {
                    Some("subscribe" | "unsubscribe") if notifications => {
                        follow_notifications(&gateway, &auth, request["type"] == "subscribe", &mut watching, &out_tx).await
                    }
                    Some("subscribe" | "unsubscribe") if run.is_some() => {
                        let run = run.unwrap_or_default();
                        follow_run(&gateway, &auth, &run, request["type"] == "subscribe", &mut watching, &out_tx).await
                    }
                    Some("subscribe") if session.is_empty() => json!({"type": "error", "message": "subscribe needs a session_id, a project_id or run_id, or \"channel\": \"notifications\""}),
                    Some("subscribe") if watching.len() >= MAX_SUBSCRIPTIONS => json!({"type": "error", "message": "too many subscriptions on one connection"}),
                    Some("subscribe") if auth.principal.require(Capability::SessionsRead).is_err() => {
                        json!({"type": "error", "session_id": session, "code": "forbidden", "message": "this needs the capability `sessions:read`"})
                    }
                    Some("subscribe") => {
                        let request = pb::WatchSessionRequest { session_id: session.clone() };
                        match gateway.orchestrator.clone().watch_session(auth.forward(request)).await {
                            Ok(stream) => {
                                let tx = out_tx.clone();
                                let task = tokio::spawn(async move {
                                    let mut stream = stream.into_inner();
                                    while let Some(Ok(e)) = stream.next().await {
                                        let (session_id, turn) = (e.session_id.clone(), e.turn);
                                        // An event this gateway does not know yet is skipped.
                                        let Some(event) = TurnEvent::from_proto(e) else { continue };
                                        let event = json!({"type": event.kind(), "session_id": session_id, "turn": turn, "data": event.data()});
                                        if tx.send(text(event)).await.is_err() {
                                            return;
                                        }
                                    }
                                });
                                if let Some(old) = watching.insert(session.clone(), task) {
                                    old.abort();
                                }
                                json!({"type": "subscribed", "session_id": session})
                            }
                            Err(status) => {
                                let error = somagent_common::error::ApiError::from(status);
                                json!({"type": "error", "session_id": session, "code": error.code.as_str(), "message": error.message})
                            }
                        }
                    }
                    Some("unsubscribe") => {
                        if let Some(task) = watching.remove(&session) {
                            task.abort();
                        }
                        json!({"type": "unsubscribed", "session_id": session})
                    }
                    _ => json!({"type": "error", "message": "send {\"type\": \"subscribe\" | \"unsubscribe\", \"session_id\": ...}"}),
                };
                if socket.send(text(reply)).await.is_err() {
                    break;
                }
            }
        }
    }
    for (_, task) in watching {
        task.abort();
    }
}

/// Starts or stops following a project or multi-agent run; the reply to send. Its
/// events arrive as `{"type": "run", "run_id", "event": <kind>, "data"}`, the first
/// being its state now (`"event": "state"`).
async fn follow_run(
    gateway: &Gateway,
    auth: &Authenticated,
    run: &str,
    subscribe: bool,
    watching: &mut HashMap<String, tokio::task::JoinHandle<()>>,
    out: &mpsc::Sender<Message>,
) -> Value {
    let key = format!("@run:{run}");
    if !subscribe {
        if let Some(task) = watching.remove(&key) {
            task.abort();
        }
        return json!({"type": "unsubscribed", "run_id": run});
    }
    if watching.len() >= MAX_SUBSCRIPTIONS {
        return json!({"type": "error", "run_id": run, "message": "too many subscriptions on one connection"});
    }
    let request = auth.forward(pb::RunRef { id: run.to_owned() });
    match gateway.orchestrator.clone().watch_run(request).await {
        Ok(stream) => {
            let tx = out.clone();
            let run_id = run.to_owned();
            let task = tokio::spawn(async move {
                let mut stream = stream.into_inner();
                while let Some(Ok(item)) = stream.next().await {
                    let event: Value = serde_json::from_str(&item.json).unwrap_or(Value::Null);
                    let message = json!({"type": "run", "run_id": run_id, "event": event["type"], "data": event["data"]});
                    if tx.send(text(message)).await.is_err() {
                        return;
                    }
                }
            });
            if let Some(old) = watching.insert(key, task) {
                old.abort();
            }
            json!({"type": "subscribed", "run_id": run})
        }
        Err(status) => {
            let error = somagent_common::error::ApiError::from(status);
            json!({"type": "error", "run_id": run, "code": error.code.as_str(), "message": error.message})
        }
    }
}

/// The key notifications are followed under (session ids are UUIDs).
const NOTIFICATIONS: &str = "@notifications";

/// Starts or stops following the caller's notifications; the reply to send.
async fn follow_notifications(
    gateway: &Gateway,
    auth: &Authenticated,
    subscribe: bool,
    watching: &mut HashMap<String, tokio::task::JoinHandle<()>>,
    out: &mpsc::Sender<Message>,
) -> Value {
    if !subscribe {
        if let Some(task) = watching.remove(NOTIFICATIONS) {
            task.abort();
        }
        return json!({"type": "unsubscribed", "channel": "notifications"});
    }
    if let Err(e) = auth.principal.require(Capability::NotificationsRead) {
        return json!({"type": "error", "channel": "notifications", "code": e.code.as_str(), "message": e.message});
    }
    let request = auth.forward(somagent_common::proto::notification::v1::WatchRequest {});
    match gateway.notification.clone().watch(request).await {
        Ok(stream) => {
            let tx = out.clone();
            let task = tokio::spawn(async move {
                let mut stream = stream.into_inner();
                while let Some(Ok(n)) = stream.next().await {
                    let view = super::notifications::NotificationView::from(n);
                    if tx
                        .send(text(json!({"type": "notification", "data": view})))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            });
            if let Some(old) = watching.insert(NOTIFICATIONS.to_owned(), task) {
                old.abort();
            }
            json!({"type": "subscribed", "channel": "notifications"})
        }
        Err(status) => {
            let error = somagent_common::error::ApiError::from(status);
            json!({"type": "error", "channel": "notifications", "code": error.code.as_str(), "message": error.message})
        }
    }
}

/// The first message as credentials: `{"type": "auth", "token": "<access token or API key>"}`.
async fn authenticate_by_message(
    gateway: &Gateway,
    socket: &mut WebSocket,
) -> Option<Authenticated> {
    let first = tokio::time::timeout(AUTH_WITHIN, socket.recv())
        .await
        .ok()??
        .ok()?;
    let Message::Text(body) = first else {
        return None;
    };
    let request: Value = serde_json::from_str(&body).ok()?;
    if request["type"] != "auth" {
        return None;
    }
    let token = request["token"].as_str()?;
    super::principal::from_credential(gateway, token).await.ok()
}
