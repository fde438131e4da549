//! `/v1/sessions`: agent sessions and their turns. Sending a message starts a turn (a
//! durable workflow in the orchestrator); with `Accept: text/event-stream` its events
//! stream back as they happen (`delta`, `restart`, `retract`, `tool_call`, `policy`,
//! `message`, `done`, `error`, and `reconnect` when the server restarts while the turn goes on),
//! otherwise the answer comes when the turn is done. The orchestrator judges prompts.

use std::convert::Infallible;

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use somagent_common::auth::Capability;
use somagent_common::error::{ApiError, ErrorCode};
use somagent_common::proto::common::v1::PageRequest;
use somagent_common::proto::orchestrator::v1 as pb;
use somagent_common::turn::TurnEvent;
use utoipa::ToSchema;

use super::Authenticated;
use super::body::json_body;
use super::forward::Answer;
use super::paging::{Page, next_cursor};
use super::views::Problem;
use crate::Gateway;

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSession {
    /// If given, the first turn starts with it.
    prompt: Option<String>,
    capsule_id: Option<String>,
    /// A model profile (`GET /v1/models`); the tenant's default if absent.
    model: Option<String>,
    #[schema(value_type = Object)]
    metadata: Option<Value>,
}

#[derive(Serialize, ToSchema)]
pub struct SessionView {
    session_id: String,
    owner: String,
    /// `idle` or `running`.
    status: String,
    capsule_id: Option<String>,
    model: Option<String>,
    #[schema(value_type = Object)]
    metadata: Value,
    turns: u32,
    created_at: String,
}

impl From<pb::Session> for SessionView {
    fn from(s: pb::Session) -> Self {
        Self {
            session_id: s.id,
            owner: s.owner,
            status: s.status,
            capsule_id: Some(s.capsule_id).filter(|c| !c.is_empty()),
            model: Some(s.model).filter(|m| !m.is_empty()),
            metadata: serde_json::from_str(&s.metadata_json).unwrap_or(Value::Null),
            turns: s.turns,
            created_at: s.created_at,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct SessionPage {
    sessions: Vec<SessionView>,
    next_cursor: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SendMessage {
    content: String,
}

#[derive(Serialize, ToSchema)]
pub struct MessageView {
    id: String,
    /// `user`, `assistant` or `tool`.
    role: String,
    content: String,
    #[schema(value_type = Object)]
    tool_calls: Option<Value>,
    tool_call_id: Option<String>,
    turn: u32,
    created_at: String,
    /// On a turn's answer: the document passages its model was given, to cite.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    #[schema(value_type = Vec<Object>)]
    citations: Vec<somagent_common::turn::Citation>,
}

#[derive(Serialize, ToSchema)]
pub struct MessagePage {
    messages: Vec<MessageView>,
    next_cursor: Option<String>,
}

/// The answer to a message, when not streamed.
#[derive(Serialize, ToSchema)]
pub struct TurnAnswer {
    turn: u32,
    /// `completed`, `withheld` (the answer broke the policy) or `denied` (the message did).
    outcome: String,
    message: Option<MessageView>,
    #[schema(value_type = Object)]
    usage: Value,
    #[schema(value_type = Object)]
    policy: Option<Value>,
}

/// Create a session; with a `prompt`, its first turn starts at once.
#[utoipa::path(post, path = "/v1/sessions", tag = "sessions", request_body = CreateSession,
    responses((status = 201, body = SessionView), (status = 401, body = Problem),
        (status = 403, description = "a missing capability, or a prompt the policy refuses (with what was flagged)", body = Problem),
        (status = 422, body = Problem)),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn create(
    State(gateway): State<Gateway>,
    auth: Authenticated,
    body: Result<Json<CreateSession>, JsonRejection>,
) -> Result<(StatusCode, Json<SessionView>), ApiError> {
    auth.principal.require(Capability::SessionsWrite)?;
    let b = json_body(body)?;
    let request = pb::CreateSessionRequest {
        capsule_id: b.capsule_id.unwrap_or_default(),
        model: b.model.unwrap_or_default(),
        metadata_json: b.metadata.map(|m| m.to_string()).unwrap_or_default(),
    };
    let session = open(&gateway, &auth, request, b.prompt).await?;
    Ok((StatusCode::CREATED, Json(session.into())))
}

/// Opens a session and, with a prompt, starts its first turn (which runs on its own;
/// its events are for whoever watches the session). A prompt the policy refuses leaves
/// no session behind.
pub(super) async fn open(
    gateway: &Gateway,
    auth: &Authenticated,
    request: pb::CreateSessionRequest,
    prompt: Option<String>,
) -> Result<pb::Session, ApiError> {
    let mut orchestrator = gateway.orchestrator.clone();
    let mut session = orchestrator
        .create_session(auth.forward(request))
        .answer()
        .await?;
    if let Some(prompt) = prompt {
        let request = pb::SendMessageRequest {
            session_id: session.id.clone(),
            content: prompt,
        };
        if let Err(refused) = orchestrator.send_message(auth.forward(request)).await {
            let delete = pb::DeleteSessionRequest {
                id: session.id.clone(),
            };
            if let Err(e) = orchestrator.delete_session(auth.forward(delete)).await {
                tracing::warn!(session = %session.id, error = %e, "cannot remove a session whose first prompt was refused");
            }
            return Err(refused.into());
        }
        session.status = "running".into();
        session.turns = 1;
    }
    Ok(session)
}

/// The caller's sessions (all of the tenant's for its admins).
#[utoipa::path(get, path = "/v1/sessions", tag = "sessions", params(Page),
    responses((status = 200, body = SessionPage), (status = 401, body = Problem), (status = 403, body = Problem)),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn list(
    State(gateway): State<Gateway>,
    auth: Authenticated,
    Query(page): Query<Page>,
) -> Result<Json<SessionPage>, ApiError> {
    auth.principal.require(Capability::SessionsRead)?;
    let answer = gateway
        .orchestrator
        .clone()
        .list_sessions(auth.forward(pb::ListSessionsRequest {
            page: Some(PageRequest::from(page)),
        }))
        .answer()
        .await?;
    Ok(Json(SessionPage {
        sessions: answer.sessions.into_iter().map(SessionView::from).collect(),
        next_cursor: next_cursor(answer.page),
    }))
}

/// One session.
#[utoipa::path(get, path = "/v1/sessions/{id}", tag = "sessions", params(("id" = String, Path, description = "the session's id")),
    responses((status = 200, body = SessionView), (status = 401, body = Problem), (status = 404, body = Problem)),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn get(
    State(gateway): State<Gateway>,
    auth: Authenticated,
    Path(id): Path<String>,
) -> Result<Json<SessionView>, ApiError> {
    auth.principal.require(Capability::SessionsRead)?;
    let s = gateway
        .orchestrator
        .clone()
        .get_session(auth.forward(pb::GetSessionRequest { id }))
        .answer()
        .await?;
    Ok(Json(s.into()))
}

/// Delete a session.
#[utoipa::path(delete, path = "/v1/sessions/{id}", tag = "sessions", params(("id" = String, Path, description = "the session's id")),
    responses((status = 204, description = "deleted"), (status = 401, body = Problem), (status = 404, body = Problem)),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn delete(
    State(gateway): State<Gateway>,
    auth: Authenticated,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    auth.principal.require(Capability::SessionsWrite)?;
    gateway
        .orchestrator
        .clone()
        .delete_session(auth.forward(pb::DeleteSessionRequest { id }))
        .answer()
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The session's messages, oldest first.
#[utoipa::path(get, path = "/v1/sessions/{id}/messages", tag = "sessions",
    params(("id" = String, Path, description = "the session's id"), Page),
    responses((status = 200, body = MessagePage), (status = 401, body = Problem), (status = 404, body = Problem)),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn messages(
    State(gateway): State<Gateway>,
    auth: Authenticated,
    Path(id): Path<String>,
    Query(page): Query<Page>,
) -> Result<Json<MessagePage>, ApiError> {
    auth.principal.require(Capability::SessionsRead)?;
    let answer = gateway
        .orchestrator
        .clone()
        .list_messages(auth.forward(pb::ListMessagesRequest {
            session_id: id,
            page: Some(PageRequest::from(page)),
        }))
        .answer()
        .await?;
    Ok(Json(MessagePage {
        messages: answer.messages.into_iter().map(message_view).collect(),
        next_cursor: next_cursor(answer.page),
    }))
}

fn message_view(m: pb::Message) -> MessageView {
    MessageView {
        id: m.id,
        role: m.role,
        content: m.content,
        tool_calls: Some(m.tool_calls_json)
            .filter(|t| !t.is_empty())
            .and_then(|t| serde_json::from_str(&t).ok()),
        tool_call_id: Some(m.tool_call_id).filter(|t| !t.is_empty()),
        turn: m.turn,
        created_at: m.created_at,
        citations: Vec::new(),
    }
}

/// Send a message: the next turn. `Accept: text/event-stream` streams its events
/// (`delta`, `restart`, `retract`, `tool_call`, `policy`, `message`, `done` with usage,
/// `error`; `restart` (`{round, attempt}`) means the model's answer starts over after a
/// failed attempt: drop that round's deltas and tool calls of earlier attempts, which
/// carry their `round` and `attempt`; `retract` (`{turn, rule_ids}`) means the answer
/// broke the tenant's output policy: drop every delta of the turn, the withheld stand-in
/// comes as the `message`); otherwise the answer comes when the turn is done.
#[utoipa::path(post, path = "/v1/sessions/{id}/messages", tag = "sessions",
    params(("id" = String, Path, description = "the session's id")), request_body = SendMessage,
    responses((status = 200, description = "the answer, or an SSE stream of the turn's events", body = TurnAnswer),
        (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem),
        (status = 409, description = "the session is still answering", body = Problem), (status = 422, body = Problem)),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn send(
    State(gateway): State<Gateway>,
    auth: Authenticated,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Result<Json<SendMessage>, JsonRejection>,
) -> Result<Response, ApiError> {
    auth.principal.require(Capability::SessionsWrite)?;
    // The orchestrator judges the prompt (once, with the user's strikes) before the
    // turn starts.
    let b = json_body(body)?;
    let stream_wanted = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/event-stream"));
    let request = pb::SendMessageRequest {
        session_id: id,
        content: b.content,
    };
    let events = gateway
        .orchestrator
        .clone()
        .send_message(auth.forward(request))
        .answer()
        .await?;
    if stream_wanted {
        let watch = crate::credential_watch::CredentialWatch::new(gateway.verifier.clone(), &auth);
        let sse = events.map(|item| {
            Ok::<_, Infallible>(match item {
                Ok(e) => match TurnEvent::from_proto(e) {
                    Some(event) => Event::default()
                        .event(event.kind())
                        .data(event.data().to_string()),
                    // An event this gateway does not know yet: a comment, which
                    // clients skip.
                    None => Event::default().comment("an event of a newer kind"),
                },
                Err(status) => {
                    let error = ApiError::from(status);
                    Event::default().event("error").data(
                        json!({ "code": error.code.as_str(), "message": error.message })
                            .to_string(),
                    )
                }
            })
        });
        // A revoked or expired credential ends the stream, with a last `error` event
        // that says why.
        let sse = watch.guard(sse, |why| {
            Ok(Event::default()
                .event("error")
                .data(json!({ "code": why.code, "message": why.message }).to_string()))
        });
        let reconnect = TurnEvent::reconnect();
        let sse = until_stopping(
            sse,
            gateway.stopping.clone(),
            Event::default()
                .event(reconnect.kind())
                .data(reconnect.data().to_string()),
        );
        let mut response = Sse::new(sse)
            .keep_alive(KeepAlive::default())
            .into_response();
        response
            .headers_mut()
            .insert("x-accel-buffering", HeaderValue::from_static("no"));
        return Ok(response);
    }
    let mut events = events;
    let mut answer = TurnAnswer {
        turn: 0,
        outcome: String::new(),
        message: None,
        usage: json!({}),
        policy: None,
    };
    while let Some(item) = events.next().await {
        let Some(event) = TurnEvent::from_proto(item?) else {
            continue;
        };
        match event {
            TurnEvent::Message {
                role,
                content,
                turn,
                citations,
            } => {
                answer.message = Some(MessageView {
                    id: String::new(),
                    role,
                    content,
                    tool_calls: None,
                    tool_call_id: None,
                    turn,
                    created_at: String::new(),
                    citations,
                })
            }
            policy @ TurnEvent::Policy { .. } => answer.policy = Some(policy.data()),
            TurnEvent::Done {
                outcome,
                turn,
                usage,
            } => {
                answer.turn = turn;
                answer.outcome = outcome;
                answer.usage = json!(usage);
                return Ok(Json(answer).into_response());
            }
            TurnEvent::Error(e) => {
                let code = ErrorCode::parse(&e.code).unwrap_or(ErrorCode::Unavailable);
                // A refusal carries its problem's details; a failure only the id its
                // cause was logged under.
                let details = match e.correlation_id {
                    Some(id) => json!({ "correlation_id": id }),
                    None => e.details.unwrap_or(Value::Null),
                };
                return Err(ApiError::new(
                    if code == ErrorCode::Internal {
                        ErrorCode::Unavailable
                    } else {
                        code
                    },
                    e.message,
                )
                .with_details(details));
            }
            _ => {}
        }
    }
    Err(ApiError::new(
        ErrorCode::Unavailable,
        "the turn's events ended before it was done",
    ))
}

/// Ends `events` when the gateway starts to stop, with a `last` event telling the
/// client to reconnect (a turn goes on, and the client follows it on another replica).
pub(super) fn until_stopping<S>(
    events: S,
    stopping: tokio_util::sync::CancellationToken,
    last: Event,
) -> impl futures::Stream<Item = Result<Event, Infallible>>
where
    S: futures::Stream<Item = Result<Event, Infallible>>,
{
    let cut = stopping.clone();
    events.take_until(stopping.cancelled_owned()).chain(
        futures::stream::once(async move { cut.is_cancelled() })
            .filter_map(move |stopped| futures::future::ready(stopped.then(|| Ok(last.clone())))),
    )
}
