//! orchestrator's gRPC surface: sessions, their messages, and turns streamed as they
//! run. Sessions belong to the user who made them; tenant admins see all of the
//! tenant's. Another tenant's session is "not found". The tenant admins' verbs on
//! workflow runs are in `workflow_admin`.

use std::time::Duration;

use futures::Stream;
use somagent_common::auth::grpc::{bearer_of, caller};
use somagent_common::clock::{rfc3339, rfc3339_ms};
use somagent_common::paging::PageSize;
use somagent_common::proto::common::v1::PageInfo;
use somagent_common::proto::orchestrator::v1 as pb;
use somagent_common::proto::orchestrator::v1::orchestrator_service_server::OrchestratorService;
use somagent_common::turn::TurnEvent;
use somagent_workflows::{ActivityError, Outcome};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use crate::agents::runs::{MAO_KIND, PROJECT_KIND, Runs};
use crate::api::workflows as workflow_admin;
use crate::domain::session::{Session, SessionRequest};
use crate::sessions::{Sessions, StartedTurn};
use crate::turn;

pub struct OrchestratorGrpc {
    pub sessions: Sessions,
    pub runs: Runs,
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

type EventStream = std::pin::Pin<Box<dyn Stream<Item = Result<pb::TurnEvent, Status>> + Send>>;

#[tonic::async_trait]
impl OrchestratorService for OrchestratorGrpc {
    async fn create_session(
        &self,
        request: Request<pb::CreateSessionRequest>,
    ) -> Result<Response<pb::Session>, Status> {
        let principal = caller(&request)?;
        let r = request.into_inner();
        let asked = SessionRequest::parse(&r.metadata_json, r.model, &r.capsule_id)?;
        let session = self.sessions.open(&principal, asked).await?;
        Ok(Response::new(session_message(session)))
    }

    async fn get_session(
        &self,
        request: Request<pb::GetSessionRequest>,
    ) -> Result<Response<pb::Session>, Status> {
        let principal = caller(&request)?;
        let session = self.sessions.get(&principal, &request.get_ref().id).await?;
        Ok(Response::new(session_message(session)))
    }

    async fn list_sessions(
        &self,
        request: Request<pb::ListSessionsRequest>,
    ) -> Result<Response<pb::ListSessionsResponse>, Status> {
        let principal = caller(&request)?;
        let page = request.into_inner().page.unwrap_or_default();
        let size = PageSize::clamped(page.limit, 200);
        let (rows, next) = self.sessions.list(&principal, &page.cursor, size).await?;
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
        self.sessions
            .delete(&principal, &request.get_ref().id)
            .await?;
        Ok(Response::new(pb::DeleteSessionResponse {}))
    }

    type SendMessageStream = EventStream;

    async fn send_message(
        &self,
        request: Request<pb::SendMessageRequest>,
    ) -> Result<Response<Self::SendMessageStream>, Status> {
        let principal = caller(&request)?;
        let token = bearer_of(&request).unwrap_or_default().to_owned();
        let r = request.into_inner();
        let StartedTurn {
            session_id,
            turn: turn_no,
            run,
            mut events,
        } = self
            .sessions
            .start_turn(&principal, &token, &r.session_id, r.content)
            .await?;
        let engine = self.sessions.engine.clone();
        let reconnect = reconnect_event(&session_id, turn_no);
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
        let session = self
            .sessions
            .get(&principal, &request.get_ref().session_id)
            .await?;
        let mut events = self.sessions.hub.subscribe(&session.tenant, &session.id);
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
        let r = request.into_inner();
        let page = r.page.unwrap_or_default();
        let size = PageSize::clamped(page.limit, 500);
        let (rows, next) = self
            .sessions
            .messages(&principal, &r.session_id, &page.cursor, size)
            .await?;
        Ok(Response::new(pb::ListMessagesResponse {
            messages: rows
                .into_iter()
                .map(|m| pb::Message {
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

    async fn resolve_approval(
        &self,
        request: Request<pb::ResolveApprovalRequest>,
    ) -> Result<Response<pb::ResolveApprovalResponse>, Status> {
        let principal = caller(&request)?;
        let r = request.into_inner();
        let resolved = self
            .sessions
            .resolve_approval(&principal, &r.session_id, &r.call_id, r.approve, r.reason)
            .await?;
        Ok(Response::new(pb::ResolveApprovalResponse {
            session_id: r.session_id,
            turn: resolved.turn,
            call_id: r.call_id,
            approved: resolved.approved,
        }))
    }

    async fn list_approvals(
        &self,
        request: Request<pb::ListApprovalsRequest>,
    ) -> Result<Response<pb::ListApprovalsResponse>, Status> {
        let principal = caller(&request)?;
        let approvals = self
            .sessions
            .approvals(&principal, &request.get_ref().session_id)
            .await?;
        let ms = |ms: i64| rfc3339_ms(ms);
        Ok(Response::new(pb::ListApprovalsResponse {
            approvals: approvals
                .into_iter()
                .map(|a| pb::ToolApproval {
                    call_id: a.call_id,
                    turn: a.turn,
                    tool: a.tool,
                    action: a.action,
                    arguments: a.arguments,
                    status: a.status.as_str().into(),
                    requested_by: a.requested_by,
                    requested_at: ms(a.requested_at),
                    expires_at: ms(a.expires_at),
                    resolved_by: a.resolved_by,
                    reason: a.reason,
                    resolved_at: a.resolved_at.map(ms).unwrap_or_default(),
                })
                .collect(),
        }))
    }

    async fn list_workflows(
        &self,
        request: Request<pb::ListWorkflowsRequest>,
    ) -> Result<Response<pb::ListWorkflowsResponse>, Status> {
        let principal = workflow_admin::operator(&request)?;
        let page = workflow_admin::list(
            self.sessions.engine.as_ref(),
            &principal,
            request.into_inner(),
        )
        .await?;
        Ok(Response::new(page))
    }

    async fn get_workflow(
        &self,
        request: Request<pb::GetWorkflowRequest>,
    ) -> Result<Response<pb::WorkflowRun>, Status> {
        let principal = workflow_admin::operator(&request)?;
        let run = workflow_admin::get(
            self.sessions.engine.as_ref(),
            &principal,
            request.into_inner(),
        )
        .await?;
        Ok(Response::new(run))
    }

    async fn cancel_workflow(
        &self,
        request: Request<pb::CancelWorkflowRequest>,
    ) -> Result<Response<pb::CancelWorkflowResponse>, Status> {
        let principal = workflow_admin::operator(&request)?;
        let answer = workflow_admin::cancel(
            self.sessions.engine.as_ref(),
            &principal,
            request.into_inner(),
        )
        .await?;
        Ok(Response::new(answer))
    }

    async fn signal_workflow(
        &self,
        request: Request<pb::SignalWorkflowRequest>,
    ) -> Result<Response<pb::SignalWorkflowResponse>, Status> {
        let principal = workflow_admin::operator(&request)?;
        let answer = workflow_admin::signal(
            self.sessions.engine.as_ref(),
            &principal,
            request.into_inner(),
        )
        .await?;
        Ok(Response::new(answer))
    }

    async fn start_project(&self, request: Request<pb::JsonBody>) -> Json {
        let principal = caller(&request)?;
        json(
            self.runs
                .start_project(&principal, &request.get_ref().json)
                .await?,
        )
    }

    async fn list_projects(&self, request: Request<pb::ListRunsRequest>) -> Json {
        let principal = caller(&request)?;
        json(
            self.runs
                .list(&principal, PROJECT_KIND, request.get_ref().limit)
                .await?,
        )
    }

    async fn get_project(&self, request: Request<pb::RunRef>) -> Json {
        let principal = caller(&request)?;
        json(
            self.runs
                .get(&principal, PROJECT_KIND, &request.get_ref().id)
                .await?,
        )
    }

    async fn get_deliverable(&self, request: Request<pb::DeliverableRef>) -> Json {
        let principal = caller(&request)?;
        let r = request.get_ref();
        json(
            self.runs
                .deliverable(&principal, &r.id, &r.deliverable)
                .await?,
        )
    }

    async fn approve_project(&self, request: Request<pb::RunBody>) -> Json {
        let principal = caller(&request)?;
        let r = request.get_ref();
        json(self.runs.approve(&principal, &r.id, &r.json).await?)
    }

    async fn requeue_deliverable(&self, request: Request<pb::DeliverableBody>) -> Json {
        let principal = caller(&request)?;
        let r = request.get_ref();
        json(
            self.runs
                .requeue(&principal, &r.id, &r.deliverable, &r.json)
                .await?,
        )
    }

    async fn cancel_project(&self, request: Request<pb::RunRef>) -> Json {
        let principal = caller(&request)?;
        json(
            self.runs
                .cancel(&principal, PROJECT_KIND, &request.get_ref().id)
                .await?,
        )
    }

    async fn start_mao(&self, request: Request<pb::JsonBody>) -> Json {
        let principal = caller(&request)?;
        json(
            self.runs
                .start_mao(&principal, &request.get_ref().json)
                .await?,
        )
    }

    async fn get_mao(&self, request: Request<pb::RunRef>) -> Json {
        let principal = caller(&request)?;
        json(
            self.runs
                .get(&principal, MAO_KIND, &request.get_ref().id)
                .await?,
        )
    }

    type WatchRunStream =
        std::pin::Pin<Box<dyn Stream<Item = Result<pb::JsonBody, Status>> + Send>>;

    async fn watch_run(
        &self,
        request: Request<pb::RunRef>,
    ) -> Result<Response<Self::WatchRunStream>, Status> {
        let principal = caller(&request)?;
        let (view, mut events) = self.runs.watch(&principal, &request.get_ref().id).await?;
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<pb::JsonBody, Status>>(64);
        let stopping = self.stopping.clone();
        let body = |value: serde_json::Value| {
            Ok(pb::JsonBody {
                json: value.to_string(),
            })
        };
        let ended = view["status"]
            .as_str()
            .is_some_and(somagent_common::runs::is_final);
        tokio::spawn(async move {
            if tx
                .send(body(serde_json::json!({"type": "state", "data": view})))
                .await
                .is_err()
                || ended
            {
                return;
            }
            loop {
                let event = tokio::select! {
                    () = stopping.cancelled() => {
                        let _ = tx.send(body(serde_json::json!({"type": "reconnect"}))).await;
                        return;
                    }
                    event = events.recv() => event,
                };
                match event {
                    Ok(live) => {
                        let last = live.is_last();
                        let sent = tx
                            .send(body(
                                serde_json::json!({"type": live.kind, "data": live.data}),
                            ))
                            .await;
                        if sent.is_err() || last {
                            return;
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(missed)) => {
                        let note =
                            serde_json::json!({"type": "lagged", "data": {"missed": missed}});
                        if tx.send(body(note)).await.is_err() {
                            return;
                        }
                    }
                    Err(_) => return,
                }
            }
        });
        Ok(Response::new(Box::pin(futures::stream::unfold(
            rx,
            |mut rx| async move { rx.recv().await.map(|item| (item, rx)) },
        ))))
    }

    async fn cancel_mao(&self, request: Request<pb::RunRef>) -> Json {
        let principal = caller(&request)?;
        json(
            self.runs
                .cancel(&principal, MAO_KIND, &request.get_ref().id)
                .await?,
        )
    }
}

type Json = Result<Response<pb::JsonBody>, Status>;

fn json(value: serde_json::Value) -> Json {
    Ok(Response::new(pb::JsonBody {
        json: value.to_string(),
    }))
}

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
