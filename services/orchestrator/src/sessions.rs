//! The session use cases: open, read, list and delete sessions, and start a turn. Who
//! may see what is decided here, once: a session belongs to the user who opened it and
//! tenant admins see all of the tenant's; another tenant's session is "not found".

use std::sync::Arc;

use somagent_common::auth::{Capability, Principal};
use somagent_common::clock::{unix_now, unix_now_ms};
use somagent_common::error::{ApiError, ErrorCode};
use somagent_common::moderation::PromptModeration;
use somagent_common::paging::PageSize;
use somagent_workflows::{Engine, StartRequest};
use tokio::sync::broadcast;

use crate::capsules::{Capsules, ENVIRONMENT_KEY};
use crate::domain::approval::{self, Approval, ApprovalStatus, Verdict};
use crate::domain::session::{self, Session, SessionRequest};
use crate::hub::{Live, TurnHub};
use crate::store::{SessionStore, StoredMessage};
use crate::turn::{self, TurnInput};

#[derive(Clone)]
pub struct Sessions {
    pub store: SessionStore,
    pub engine: Arc<dyn Engine>,
    pub hub: Arc<TurnHub>,
    /// The session path's one decision on a prompt (and its strikes): here, where every
    /// turn starts, whoever calls; the turn does not ask again.
    pub moderation: PromptModeration,
    /// The tenant's settings (whether turns recall by default).
    pub settings: Arc<somagent_common::settings_cache::SettingsCache>,
    /// The capsules sessions run as.
    pub capsules: Capsules,
}

/// A turn that has started: its number, its workflow run and its live events
/// (subscribed before the run started, so none is missed).
pub struct StartedTurn {
    pub session_id: String,
    pub turn: u32,
    pub run: String,
    pub events: broadcast::Receiver<Live>,
}

impl Sessions {
    pub async fn open(
        &self,
        principal: &Principal,
        request: SessionRequest,
    ) -> Result<Session, ApiError> {
        principal.require(Capability::SessionsWrite)?;
        let mut request = request;
        if !request.capsule_id.is_empty() {
            // The capsule must be installed (or the platform's) and verify now; the
            // model it names is the session's unless the session names one.
            let capsule = self
                .capsules
                .resolve(
                    principal,
                    &request.capsule_id,
                    environment_of(&request.metadata),
                    true,
                )
                .await?;
            if capsule.definition.kind == somagent_common::capsule::Kind::Project {
                return Err(ApiError::validation(
                    "capsule_id",
                    "is a project capsule: run it with `POST /v1/capsules/{id}/execute`",
                ));
            }
            if request.model.is_empty() {
                request.model = capsule.definition.model.unwrap_or_default();
            }
        }
        let session = request.open(
            uuid::Uuid::now_v7().to_string(),
            principal.tenant.clone(),
            principal.subject.clone(),
            unix_now(),
        );
        self.store
            .create(&session)
            .await
            .map_err(ApiError::internal)?;
        Ok(session)
    }

    pub async fn get(&self, principal: &Principal, id: &str) -> Result<Session, ApiError> {
        principal.require(Capability::SessionsRead)?;
        self.visible(principal, id).await
    }

    /// The session if the caller may see it: theirs, or any of the tenant's for admins.
    async fn visible(&self, principal: &Principal, id: &str) -> Result<Session, ApiError> {
        self.store
            .get(&principal.tenant, id)
            .await
            .map_err(ApiError::internal)?
            .filter(|s| s.owner == principal.subject || principal.can(Capability::TenantAdmin))
            .ok_or_else(|| ApiError::not_found("session"))
    }

    /// A page of the sessions the caller may see, and the cursor of the next.
    pub async fn list(
        &self,
        principal: &Principal,
        cursor: &str,
        size: PageSize,
    ) -> Result<(Vec<Session>, String), ApiError> {
        principal.require(Capability::SessionsRead)?;
        let owner = (!principal.can(Capability::TenantAdmin)).then_some(principal.subject.as_str());
        let rows = self
            .store
            .list(&principal.tenant, owner, cursor, size.rows_to_read())
            .await
            .map_err(ApiError::internal)?;
        Ok(size.cut(rows, |s| s.id.clone()))
    }

    pub async fn delete(&self, principal: &Principal, id: &str) -> Result<(), ApiError> {
        principal.require(Capability::SessionsWrite)?;
        let session = self.visible(principal, id).await?;
        self.store
            .delete(&principal.tenant, &session.id)
            .await
            .map_err(ApiError::internal)?;
        Ok(())
    }

    /// A page of a session's messages after `cursor`, and the cursor of the next.
    pub async fn messages(
        &self,
        principal: &Principal,
        session_id: &str,
        cursor: &str,
        size: PageSize,
    ) -> Result<(Vec<StoredMessage>, String), ApiError> {
        let after = session::message_cursor(cursor)?;
        let session = self.get(principal, session_id).await?;
        let rows = self
            .store
            .messages(&principal.tenant, &session.id, after, size.rows_to_read())
            .await
            .map_err(ApiError::internal)?;
        let (rows, next) = size.cut(rows, |(position, _)| position.to_string());
        Ok((rows.into_iter().map(|(_, m)| m).collect(), next))
    }

    /// Starts the next turn of a session with the user's message: moderated once, at
    /// most one turn running per session, the turn a durable workflow run.
    pub async fn start_turn(
        &self,
        principal: &Principal,
        token: &str,
        session_id: &str,
        content: String,
    ) -> Result<StartedTurn, ApiError> {
        principal.require(Capability::SessionsWrite)?;
        session::check_content(&content)?;
        let session = self.visible(principal, session_id).await?;
        self.moderation
            .check(principal, token, &content, &session.id)
            .await?;
        // A capsule runs as verified now, not as it was when the session opened.
        let capsule = if session.capsule_id.is_empty() {
            None
        } else {
            Some(
                self.capsules
                    .resolve(
                        principal,
                        &session.capsule_id,
                        environment_of(&session.metadata),
                        false,
                    )
                    .await?,
            )
        };
        let events = self.hub.subscribe(&session.tenant, &session.id);
        let Some(turn_no) = self
            .store
            .begin_turn(&principal.tenant, &session.id, &content)
            .await
            .map_err(ApiError::internal)?
        else {
            return Err(ApiError::new(
                ErrorCode::Conflict,
                "the session is still answering its last message",
            ));
        };
        // A tenant that turned recall off is not overruled by settings being away.
        let tenant_settings = self
            .settings
            .tenant(&principal.tenant, &principal.subject)
            .await?;
        let recall_by_default =
            somagent_common::settings_cache::flag(&tenant_settings, "sessions.memory_recall")
                .unwrap_or(true);
        let mut recall = turn::RecallSettings::of_session(&session.metadata, recall_by_default);
        if let Some(capsule) = &capsule {
            recall.follow(&capsule.definition.memory);
        }
        let started_ms = somagent_common::clock::unix_now_ms();
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
            recall,
            model: session.model,
            // A capsule's time limit bounds each of its turns' model calls.
            deadline_ms: capsule
                .as_ref()
                .and_then(|c| c.definition.limits.timeout_secs)
                .map(|secs| {
                    started_ms.saturating_add(
                        i64::try_from(secs.saturating_mul(1000)).unwrap_or(i64::MAX),
                    )
                }),
            capsule,
            content,
            started_ms,
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
        Ok(StartedTurn {
            session_id: session.id,
            turn: turn_no,
            run,
            events,
        })
    }
}

/// What a person's answer did.
pub struct Resolved {
    pub turn: u32,
    pub approved: bool,
}

impl Sessions {
    /// A person's answer to a tool call the session's turn waits on: the session must be
    /// one they may see, the call pending and not expired, and only the first answer
    /// counts. The waiting turn gets it as a signal.
    pub async fn resolve_approval(
        &self,
        principal: &Principal,
        session_id: &str,
        call_id: &str,
        approve: bool,
        reason: String,
    ) -> Result<Resolved, ApiError> {
        principal.require(Capability::ToolsApprove)?;
        approval::check_answer(call_id, &reason)?;
        let session = self.visible(principal, session_id).await?;
        let tenant = &principal.tenant;
        let waiting = self
            .store
            .approval(tenant, &session.id, call_id)
            .await
            .map_err(ApiError::internal)?
            .ok_or_else(|| ApiError::not_found("approval"))?;
        let now = unix_now_ms();
        if waiting.status != ApprovalStatus::Pending {
            return Err(ApiError::new(
                ErrorCode::Conflict,
                format!("this call was {} already", waiting.status.as_str()),
            )
            .with_details(serde_json::json!({"status": waiting.status.as_str()})));
        }
        if waiting.expires_at <= now {
            return Err(ApiError::new(
                ErrorCode::Conflict,
                "the wait for an answer is over: the call was denied",
            )
            .with_details(serde_json::json!({"status": "expired"})));
        }
        let status = if approve {
            ApprovalStatus::Approved
        } else {
            ApprovalStatus::Denied
        };
        let answered = self
            .store
            .answer_approval(
                tenant,
                &session.id,
                waiting.turn,
                call_id,
                status,
                &principal.subject,
                &reason,
                now,
            )
            .await
            .map_err(ApiError::internal)?;
        if !answered {
            return Err(ApiError::new(
                ErrorCode::Conflict,
                "this call was answered already, or its wait is over",
            ));
        }
        let verdict = Verdict {
            approved: approve,
            reason,
            by: principal.subject.clone(),
        };
        let run = turn::run_id(&session.id, waiting.turn);
        let payload = serde_json::to_value(&verdict).map_err(ApiError::internal)?;
        if let Err(e) = self
            .engine
            .signal(tenant, &run, &approval::signal_name(call_id), payload)
            .await
        {
            let ended = matches!(
                e,
                somagent_workflows::EngineError::Ended(_)
                    | somagent_workflows::EngineError::NotFound(_)
            );
            // A turn that has ended waits for nothing: the call did not run. A turn
            // that could not be told gets the answer again later: it is taken back.
            let undone = if ended {
                self.store
                    .settle_approval(
                        tenant,
                        &session.id,
                        waiting.turn,
                        call_id,
                        ApprovalStatus::Expired,
                        "",
                        "",
                        now,
                    )
                    .await
            } else {
                self.store
                    .reopen_approval(tenant, &session.id, waiting.turn, call_id)
                    .await
            };
            if let Err(undo) = undone {
                tracing::error!(error = %undo, run = %run, "an approval the turn was not told of stays answered");
            }
            return Err(if ended {
                ApiError::new(
                    ErrorCode::Conflict,
                    "the turn that asked has ended; the call did not run",
                )
                .with_details(serde_json::json!({"status": "expired"}))
            } else {
                ApiError::from(e)
            });
        }
        tracing::info!(session = %session.id, call_id, approved = approve, by = %principal.subject, "a tool call was answered");
        Ok(Resolved {
            turn: waiting.turn,
            approved: approve,
        })
    }

    /// The session's approvals, newest first: pending ones and how the others ended.
    pub async fn approvals(
        &self,
        principal: &Principal,
        session_id: &str,
    ) -> Result<Vec<Approval>, ApiError> {
        let session = self.get(principal, session_id).await?;
        self.store
            .approvals(&principal.tenant, &session.id, 100)
            .await
            .map_err(ApiError::internal)
    }
}

/// The environment whose installation a session's capsule runs (`prod` by default).
fn environment_of(metadata: &serde_json::Value) -> &str {
    metadata
        .get(ENVIRONMENT_KEY)
        .and_then(serde_json::Value::as_str)
        .unwrap_or("prod")
}
