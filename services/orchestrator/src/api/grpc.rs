//! orchestrator's gRPC surface: sessions, their messages, and turns streamed as they
//! run. Sessions belong to the user who made them; tenant admins see all of the
//! tenant's. Another tenant's session is "not found". The tenant admins' verbs on
//! workflow runs are in `workflow_admin`.

use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use serde_json::{Value, json};
use somagent_common::auth::grpc::caller;
use somagent_common::auth::{Capability, Principal};
use somagent_common::clock::rfc3339;
use somagent_common::error::{ApiError, ErrorCode};
use somagent_common::paging::PageSize;
use somagent_common::proto::common::v1::PageInfo;
use somagent_common::proto::orchestrator::v1 as pb;
use somagent_common::proto::orchestrator::v1::orchestrator_service_server::OrchestratorService;
use somagent_common::turn::TurnEvent;
use somagent_workflows::ActivityError;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use crate::api::workflows as workflow_admin;
use crate::hub::TurnHub;
use crate::store::{Session, SessionStore};
use crate::turn::{self, TurnInput};
use somagent_common::moderation::PromptModeration;
use somagent_workflows::{Engine, Outcome, StartRequest};

/// The longest message a user may send.
const MAX_CONTENT: usize = 100_000;

pub struct OrchestratorGrpc {
    pub store: SessionStore,
    pub engine: Arc<dyn Engine>,
    pub hub: Arc<TurnHub>,
    /// The session path's one decision on a prompt (and its strikes): here, where every
    /// turn starts, whoever calls; the turn does not ask again.
    pub moderation: PromptModeration,
    /// Cancelled when this process starts to stop: live streams end with `reconnect`.
    pub stopping: CancellationToken,
}

fn session_message(s: Session) -> pb::Session {
    pb::Session {
        id: s.id,
        tenant: s.tenant.into(),
        owner: s.owner,
        status: s.status,
        capsule_id: s.capsule_id,
        model: s.model,
        metadata_json: s.metadata.to_string(),
        created_at: rfc3339(s.created_at),
        turns: s.turns,
    }
}

impl OrchestratorGrpc {
    /// The session if the caller may see it: theirs, or any of the tenant's for admins.
    async fn visible(&self, principal: &Principal, id: &str) -> Result<Session, ApiError> {
        let session = self
            .store
            .get(&principal.tenant, id)
            .await
            .map_err(ApiError::internal)?
            .filter(|s| s.owner == principal.subject || principal.can(Capability::TenantAdmin))
            .ok_or_else(|| ApiError::not_found("session"))?;
        Ok(session)
    }
}

type EventStream = std::pin::Pin<Box<dyn Stream<Item = Result<pb::TurnEvent, Status>> + Send>>;

#[tonic::async_trait]
impl OrchestratorService for OrchestratorGrpc {
    async fn create_session(
        &self,
        request: Request<pb::CreateSessionRequest>,
    ) -> Result<Response<pb::Session>, Status> {
        let principal = caller(&request)?;
        principal.require(Capability::SessionsWrite)?;
        let r = request.into_inner();
        let metadata: Value = if r.metadata_json.is_empty() {
            json!({})
        } else {
            serde_json::from_str(&r.metadata_json)
                .map_err(|e| ApiError::validation("metadata", e.to_string()))?
        };
        if !metadata.is_object() || metadata.to_string().len() > 16 * 1024 {
            return Err(
                ApiError::validation("metadata", "is a JSON object of at most 16 KiB").into(),
            );
        }
        if r.model.len() > 200 {
            return Err(ApiError::validation("model", "is at most 200 characters").into());
        }
        // Capsules do not exist yet: a session that names one would silently run
        // without it, which is worse than refusing.
        if !r.capsule_id.is_empty() {
            return Err(ApiError::validation(
                "capsule_id",
                "capsules are not available on this platform yet; create the session without one",
            )
            .into());
        }
        let session = Session {
            id: uuid::Uuid::now_v7().to_string(),
            tenant: principal.tenant.clone(),
            owner: principal.subject.clone(),
            status: "idle".into(),
            capsule_id: r.capsule_id,
            model: r.model,
            metadata,
            turns: 0,
            created_at: somagent_common::clock::unix_now(),
        };
        self.store
            .create(&session)
            .await
            .map_err(ApiError::internal)?;
        Ok(Response::new(session_message(session)))
    }

    async fn get_session(
        &self,
        request: Request<pb::GetSessionRequest>,
    ) -> Result<Response<pb::Session>, Status> {
        let principal = caller(&request)?;
        principal.require(Capability::SessionsRead)?;
        Ok(Response::new(session_message(
            self.visible(&principal, &request.get_ref().id).await?,
        )))
    }

    async fn list_sessions(
        &self,
        request: Request<pb::ListSessionsRequest>,
    ) -> Result<Response<pb::ListSessionsResponse>, Status> {
        let principal = caller(&request)?;
        principal.require(Capability::SessionsRead)?;
        let page = request.into_inner().page.unwrap_or_default();
        let size = PageSize::clamped(page.limit, 200);
        let owner = (!principal.can(Capability::TenantAdmin)).then_some(principal.subject.as_str());
        let rows = self
            .store
            .list(&principal.tenant, owner, &page.cursor, size.rows_to_read())
            .await
            .map_err(ApiError::internal)?;
        let (rows, next) = size.cut(rows, |s| s.id.clone());
        Ok(Response::new(pb::ListSessionsResponse {
            sessions: rows.into_iter().map(session_message).collect(),
            page: Some(PageInfo { next_cursor: next }),
        }))
    }

    async fn delete_session(
        &self,
        request: Request<pb::DeleteSessionRequest>,
    ) -> Result<Response<pb::DeleteSessionResponse>, Status> {
        let principal = caller(&request)?;
        principal.require(Capability::SessionsWrite)?;
        let session = self.visible(&principal, &request.get_ref().id).await?;
        self.store
            .delete(&principal.tenant, &session.id)
            .await
            .map_err(ApiError::internal)?;
        Ok(Response::new(pb::DeleteSessionResponse {}))
    }

    type SendMessageStream = EventStream;

    async fn send_message(
        &self,
        request: Request<pb::SendMessageRequest>,
    ) -> Result<Response<Self::SendMessageStream>, Status> {
        let principal = caller(&request)?;
        principal.require(Capability::SessionsWrite)?;
        let token = somagent_common::auth::grpc::bearer_of(&request)
            .unwrap_or_default()
            .to_owned();
        let r = request.into_inner();
        if r.content.trim().is_empty() || r.content.len() > MAX_CONTENT {
            return Err(
                ApiError::validation("content", format!("is 1-{MAX_CONTENT} characters")).into(),
            );
        }
        let session = self.visible(&principal, &r.session_id).await?;
        self.moderation
            .check(&principal, &token, &r.content, &session.id)
            .await?;
        // Subscribe before the turn starts, so no event is missed.
        let mut events = self.hub.subscribe(&session.tenant, &session.id);
        let Some(turn_no) = self
            .store
            .begin_turn(&principal.tenant, &session.id, &r.content)
            .await
            .map_err(ApiError::internal)?
        else {
            return Err(ApiError::new(
                ErrorCode::Conflict,
                "the session is still answering its last message",
            )
            .into());
        };
        let input = TurnInput {
            session_id: session.id.clone(),
            turn: turn_no,
            tenant: principal.tenant.clone(),
            subject: principal.subject.clone(),
            capabilities: principal
                .capabilities
                .iter()
                .map(|c| c.as_str().to_owned())
                .collect(),
            model: session.model.clone(),
            content: r.content,
        };
        let run = turn::run_id(&session.id, turn_no);
        let value = serde_json::to_value(&input).map_err(ApiError::internal)?;
        self.engine
            .start(StartRequest {
                kind: turn::SESSION_TURN.kind,
                id: &run,
                tenant: &principal.tenant,
                input: &value,
            })
            .await
            .map_err(ApiError::from)?;
        let engine = self.engine.clone();
        let reconnect = reconnect_event(&session.id, turn_no);
        let session_id = session.id.clone();
        let stream = async_stream(&self.stopping, reconnect, move |tx| async move {
            loop {
                match tokio::time::timeout(Duration::from_secs(5), events.recv()).await {
                    Ok(Ok(e)) if e.turn == turn_no => {
                        let last = e.event.is_last();
                        if tx
                            .send(Ok(e.event.into_proto(&e.session_id, e.turn)))
                            .await
                            .is_err()
                            || last
                        {
                            return;
                        }
                    }
                    Ok(Ok(_)) => {}
                    Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(_))) => {}
                    Ok(Err(_)) => return,
                    // Quiet for a while: the turn may have ended in another process.
                    Err(_) => {
                        let last = match engine.outcome(&run).await {
                            Ok(Some(Outcome::Completed(v))) => {
                                match serde_json::from_value::<turn::TurnResult>(v) {
                                    Ok(result) => TurnEvent::Done {
                                        outcome: result.outcome.as_str().to_owned(),
                                        turn: turn_no,
                                        usage: result.usage,
                                    },
                                    Err(e) => TurnEvent::error(
                                        &ActivityError::fatal(
                                            "internal",
                                            format!("a turn's result does not read: {e}"),
                                        )
                                        .public(),
                                    ),
                                }
                            }
                            Ok(Some(Outcome::Failed(e))) => TurnEvent::error(&e.public()),
                            Ok(Some(Outcome::Cancelled)) => {
                                TurnEvent::error(&ActivityError::cancelled().public())
                            }
                            _ => continue,
                        };
                        let _ = tx.send(Ok(last.into_proto(&session_id, turn_no))).await;
                        return;
                    }
                }
            }
        });
        Ok(Response::new(stream))
    }

    type WatchSessionStream = EventStream;

    async fn watch_session(
        &self,
        request: Request<pb::WatchSessionRequest>,
    ) -> Result<Response<Self::WatchSessionStream>, Status> {
        let principal = caller(&request)?;
        principal.require(Capability::SessionsRead)?;
        let session = self
            .visible(&principal, &request.get_ref().session_id)
            .await?;
        let mut events = self.hub.subscribe(&session.tenant, &session.id);
        let reconnect = reconnect_event(&session.id, 0);
        let session_id = session.id;
        let stream = async_stream(&self.stopping, reconnect, move |tx| async move {
            loop {
                match events.recv().await {
                    Ok(e) => {
                        if tx
                            .send(Ok(e.event.into_proto(&e.session_id, e.turn)))
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(missed)) => {
                        let note = TurnEvent::Lagged { missed }.into_proto(&session_id, 0);
                        if tx.send(Ok(note)).await.is_err() {
                            return;
                        }
                    }
                    Err(_) => return,
                }
            }
        });
        Ok(Response::new(stream))
    }

    async fn list_messages(
        &self,
        request: Request<pb::ListMessagesRequest>,
    ) -> Result<Response<pb::ListMessagesResponse>, Status> {
        let principal = caller(&request)?;
        principal.require(Capability::SessionsRead)?;
        let r = request.into_inner();
        let session = self.visible(&principal, &r.session_id).await?;
        let page = r.page.unwrap_or_default();
        let size = PageSize::clamped(page.limit, 500);
        let after: i64 = if page.cursor.is_empty() {
            0
        } else {
            page.cursor
                .parse()
                .map_err(|_| ApiError::validation("cursor", "is not a cursor of this list"))?
        };
        let rows = self
            .store
            .messages(&principal.tenant, &session.id, after, size.rows_to_read())
            .await
            .map_err(ApiError::internal)?;
        let (rows, next) = size.cut(rows, |(position, _)| position.to_string());
        Ok(Response::new(pb::ListMessagesResponse {
            messages: rows
                .into_iter()
                .map(|(_, m)| pb::Message {
                    id: m.id,
                    session_id: m.session_id,
                    role: m.role,
                    content: m.content,
                    tool_calls_json: m.tool_calls,
                    created_at: rfc3339(m.created_at),
                    turn: m.turn,
                    tool_call_id: m.tool_call_id,
                })
                .collect(),
            page: Some(PageInfo { next_cursor: next }),
        }))
    }

    async fn list_workflows(
        &self,
        request: Request<pb::ListWorkflowsRequest>,
    ) -> Result<Response<pb::ListWorkflowsResponse>, Status> {
        let principal = workflow_admin::operator(&request)?;
        let page =
            workflow_admin::list(self.engine.as_ref(), &principal, request.into_inner()).await?;
        Ok(Response::new(page))
    }

    async fn get_workflow(
        &self,
        request: Request<pb::GetWorkflowRequest>,
    ) -> Result<Response<pb::WorkflowRun>, Status> {
        let principal = workflow_admin::operator(&request)?;
        let run =
            workflow_admin::get(self.engine.as_ref(), &principal, request.into_inner()).await?;
        Ok(Response::new(run))
    }

    async fn cancel_workflow(
        &self,
        request: Request<pb::CancelWorkflowRequest>,
    ) -> Result<Response<pb::CancelWorkflowResponse>, Status> {
        let principal = workflow_admin::operator(&request)?;
        let answer =
            workflow_admin::cancel(self.engine.as_ref(), &principal, request.into_inner()).await?;
        Ok(Response::new(answer))
    }

    async fn signal_workflow(
        &self,
        request: Request<pb::SignalWorkflowRequest>,
    ) -> Result<Response<pb::SignalWorkflowResponse>, Status> {
        let principal = workflow_admin::operator(&request)?;
        let answer =
            workflow_admin::signal(self.engine.as_ref(), &principal, request.into_inner()).await?;
        Ok(Response::new(answer))
    }
}

/// A stream fed by a task through a channel.
/// The last event of a stream cut short because this process is stopping: the turn
/// goes on elsewhere (another replica, or this one after its restart).
fn reconnect_event(session_id: &str, turn: u32) -> pb::TurnEvent {
    TurnEvent::reconnect().into_proto(session_id, turn)
}

/// A stream of what `produce` sends, ended with `reconnect` if the process starts to
/// stop first.
fn async_stream<F, Fut>(
    stopping: &CancellationToken,
    reconnect: pb::TurnEvent,
    produce: F,
) -> EventStream
where
    F: FnOnce(tokio::sync::mpsc::Sender<Result<pb::TurnEvent, Status>>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(256);
    let last = tx.clone();
    let producing = produce(tx);
    let stopping = stopping.clone();
    tokio::spawn(async move {
        tokio::select! {
            () = producing => {}
            () = stopping.cancelled() => {
                let _ = last.send(Ok(reconnect)).await;
            }
        }
    });
    Box::pin(futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    }))
}
