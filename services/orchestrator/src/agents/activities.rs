//! The I/O of multi-agent runs and projects: capsules resolved (and verified) for the
//! initiator, the sessions their agents talk in, their events, their files.

use bytes::Bytes;
use somagent_common::clock::unix_now;
use somagent_common::error::{ApiError, ErrorCode};
use somagent_common::infra::events::{Envelope, EventBus, topics};
use somagent_common::infra::objects::Objects;
use somagent_workflows::ActivityError;

use super::{Begin, Bundle, Resolve, RunEvent};
use crate::capsules::{CapsuleRun, Capsules};
use crate::domain::session::Session;
use crate::store::SessionStore;

pub struct AgentActivities {
    pub store: SessionStore,
    pub capsules: Capsules,
    pub events: EventBus,
    pub objects: Objects,
    /// The runs' watchers.
    pub hub: std::sync::Arc<super::live::RunHub>,
}

/// A refusal that will not change on a retry (a capsule not installed or failing
/// verification, a missing right) fails the step; the rest are retried.
fn api_error(e: ApiError) -> ActivityError {
    let code = e.code.as_str();
    match e.code {
        ErrorCode::Unavailable
        | ErrorCode::Timeout
        | ErrorCode::Internal
        | ErrorCode::RateLimited => ActivityError::retryable(code, e.message),
        _ => ActivityError::fatal(code, e.message),
    }
}

fn unavailable(e: impl std::fmt::Display) -> ActivityError {
    ActivityError::retryable("unavailable", e.to_string())
}

impl AgentActivities {
    pub async fn resolve(&self, input: Resolve) -> Result<CapsuleRun, ActivityError> {
        let who = &input.who;
        self.capsules
            .resolve_for(
                &who.tenant,
                &who.subject,
                &who.capabilities,
                &input.capsule,
                "prod",
                true,
            )
            .await
            .map_err(api_error)
    }

    /// Opens the task's session (the first time) and its turn `turn`; a retried step
    /// finds both done and answers the same.
    pub async fn begin(&self, input: Begin) -> Result<u32, ActivityError> {
        let who = &input.who;
        let session = match self
            .store
            .get(&who.tenant, &input.session_id)
            .await
            .map_err(unavailable)?
        {
            Some(session) => session,
            None => {
                let session = Session {
                    id: input.session_id.clone(),
                    tenant: who.tenant.clone(),
                    owner: who.subject.clone(),
                    status: "idle".into(),
                    capsule_id: input.capsule_id.clone(),
                    model: input.model.clone(),
                    metadata: input.metadata.clone(),
                    turns: 0,
                    created_at: unix_now(),
                };
                if let Err(e) = self.store.create(&session).await {
                    // Another attempt made it meanwhile.
                    self.store
                        .get(&who.tenant, &input.session_id)
                        .await
                        .map_err(unavailable)?
                        .ok_or_else(|| unavailable(e))?
                } else {
                    session
                }
            }
        };
        if session.turns >= input.turn {
            return Ok(input.turn);
        }
        match self
            .store
            .begin_turn(&who.tenant, &session.id, &input.content)
            .await
            .map_err(unavailable)?
        {
            Some(turn) => Ok(turn),
            None => Err(ActivityError::retryable(
                "conflict",
                "the agent's session is still answering its last turn",
            )),
        }
    }

    pub async fn event(&self, input: RunEvent) -> Result<(), ActivityError> {
        let mut envelope = Envelope::new(
            input.kind.clone(),
            "orchestrator",
            input.who.tenant.clone(),
            input.data,
        )
        .with_subject(input.who.subject.clone());
        envelope.id = uuid::Uuid::new_v5(
            &uuid::Uuid::NAMESPACE_OID,
            format!("{}/event/{}", input.run, input.seq).as_bytes(),
        );
        self.events
            .publish(topics::WORKFLOW, &input.run, &envelope)
            .await
            .map_err(unavailable)?;
        self.hub.send(super::live::RunLive {
            tenant: input.who.tenant,
            run_id: input.run,
            kind: input.kind,
            data: envelope.data,
        });
        self.hub.flush().await;
        Ok(())
    }

    pub async fn bundle(&self, input: Bundle) -> Result<Vec<String>, ActivityError> {
        let mut keys = Vec::with_capacity(input.files.len());
        for (name, content) in input.files {
            let key = format!("{}/{name}", input.prefix);
            self.objects
                .put(&input.who.tenant, &key, Bytes::from(content))
                .await
                .map_err(unavailable)?;
            keys.push(key);
        }
        Ok(keys)
    }
}
