//! Asynchronous inference over the bus: a request on `slm.requests`
//! (`{request_id, token, model, messages, max_tokens?, temperature?, session_id?}`) is
//! answered on `slm.responses` with `{request_id, status: completed | failed, message?,
//! finish_reason?, usage?, error?}`, `error` being the problem `{code, message,
//! details}`. Metered like any call. A request delivered twice is answered once: the
//! handled ids are kept in the store, and the answer's event id is fixed by the request
//! id so consumers can deduplicate a repeated answer.
//!
//! Writing to the topic proves nothing, so a request is governed as the gRPC path is:
//! `token` is the caller's platform access token or a service token acting for them,
//! verified by the one verifier; its tenant must be the envelope's; it needs
//! `models:use`; the prompt passes the tenant's policy. Anything else is answered with
//! a failure and never reaches a model or the bill.

use std::sync::Arc;

use serde_json::{Value, json};
use somagent_common::infra::events::{
    ConsumeOptions, Delivery, Envelope, EventBus, HandleError, consume, topics,
};
use somagent_common::infra::outbox::Outbox;

use somagent_common::auth::{Capability, Principal, Verifier};
use somagent_common::error::{ApiError, ErrorCode};

use crate::domain::chat::{ChatCall, FinishReason, Message, Role};
use crate::metering::Caller;
use crate::model_router::ModelRouter;
use somagent_common::moderation::PromptModeration;

const CONSUMER: &str = "slm-async";

/// What a request must get past before a model sees it.
pub struct Gate {
    pub verifier: Arc<Verifier>,
    pub policy: PromptModeration,
    /// The tenant's output guard, which the answer's text passes as the model writes it.
    pub output_rules: Arc<crate::output_rules::OutputRuleSource>,
}

/// Joins the `slm-async` group on `slm.requests` and returns the loop that answers
/// them, through the one consumer loop: an answer that cannot be stored is retried with
/// backoff, a request already answered is skipped by its event id.
pub async fn consumer(
    router: Arc<ModelRouter>,
    gate: Gate,
    events: &EventBus,
    outbox: Outbox,
    options: ConsumeOptions,
) -> anyhow::Result<impl std::future::Future<Output = ()> + Send + 'static> {
    let answering = Arc::new(Answering {
        router,
        gate,
        outbox,
    });
    let handler = move |delivery: Delivery| {
        let answering = answering.clone();
        async move { answering.handle(&delivery.event).await }
    };
    Ok(consume(events, CONSUMER, &[topics::SLM_REQUESTS], handler, options).await?)
}

struct Answering {
    router: Arc<ModelRouter>,
    gate: Gate,
    outbox: Outbox,
}

impl Answering {
    async fn handle(&self, event: &Envelope) -> Result<(), HandleError> {
        let (answer, subject) = answer(&self.router, &self.gate, event).await;
        let request_id = event.data["request_id"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let mut response = Envelope::new("slm.response", "slm", event.tenant.clone(), answer);
        // Fixed by the request: a repeated answer has the same id, for consumers to
        // deduplicate.
        response.id = uuid::Uuid::new_v5(
            &uuid::Uuid::NAMESPACE_URL,
            format!("somagent:slm-response:{}", event.id).as_bytes(),
        );
        if let Some(subject) = subject {
            response = response.with_subject(subject);
        }
        let key = if request_id.is_empty() {
            event.tenant.as_str().to_owned()
        } else {
            request_id
        };
        self.outbox
            .publish(topics::SLM_RESPONSES, &key, &response)
            .await
            .map_err(|e| HandleError::Transient(format!("the answer could not be stored: {e}")))
    }
}

/// A failed answer: the problem as the gRPC path would give it, its internal cause
/// logged under the correlation id the problem names, never sent.
fn failed(request_id: &Value, error: ApiError) -> Value {
    if let Some(cause) = &error.cause {
        tracing::warn!(code = error.code.as_str(), details = %error.details, error = %cause, "an async inference request failed");
    }
    json!({
        "request_id": request_id,
        "status": "failed",
        "error": { "code": error.code.as_str(), "message": error.message, "details": error.details },
    })
}

/// The principal the request acts as, from the token it carries.
async fn principal(gate: &Gate, event: &Envelope) -> Result<(Principal, String), ApiError> {
    let token = event.data["token"].as_str().unwrap_or_default();
    if token.is_empty() {
        return Err(ApiError::new(
            ErrorCode::Unauthorized,
            "the request carries no token: put a service token for slm, acting for the caller, in `token`",
        ));
    }
    let principal = gate.verifier.verify(token).await.map_err(|_| {
        ApiError::new(
            ErrorCode::Unauthorized,
            "the request's token is not valid (unknown issuer, bad signature, expired or revoked)",
        )
    })?;
    // What the gRPC path takes from services: a token identity issued to a service for
    // slm alone. A user's own token works at every service; it never rides on the bus,
    // where whoever reads the topic could replay it.
    let for_slm = somagent_common::auth::service_audience(crate::SPEC.name);
    if principal.actor.is_none() || !principal.audiences.contains(&for_slm) {
        return Err(ApiError::new(
            ErrorCode::Unauthorized,
            format!(
                "the request's token must be a service token for slm (aud `{for_slm}`), never a user's own token"
            ),
        ));
    }
    if principal.tenant != event.tenant {
        return Err(ApiError::new(
            ErrorCode::Forbidden,
            "the request's token belongs to another tenant than the request",
        ));
    }
    if event
        .subject
        .as_ref()
        .is_some_and(|subject| *subject != principal.subject)
    {
        return Err(ApiError::new(
            ErrorCode::Forbidden,
            "the request's token is for another user than the request names",
        ));
    }
    principal.require(Capability::ModelsUse)?;
    Ok((principal, token.to_owned()))
}

/// The answer to one request, and the user it answers.
async fn answer(
    router: &Arc<ModelRouter>,
    gate: &Gate,
    event: &Envelope,
) -> (Value, Option<String>) {
    let data = &event.data;
    let request_id = data["request_id"].clone();
    let (principal, token) = match principal(gate, event).await {
        Ok(found) => found,
        Err(e) => return (failed(&request_id, e), event.subject.clone()),
    };
    let subject = Some(principal.subject.clone());
    let mut messages = Vec::new();
    for (i, m) in data["messages"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        let Some(role) = m["role"].as_str().and_then(Role::parse) else {
            let error = ApiError::validation("messages", format!("message {i} has no known role"));
            return (failed(&request_id, error), subject);
        };
        messages.push(Message::new(
            role,
            m["content"].as_str().unwrap_or_default(),
        ));
    }
    let session = data["session_id"].as_str().map(str::to_owned);
    // Every role is moderated: a request on the bus may put any text in any message.
    let said: Vec<&str> = messages.iter().map(|m| m.content.as_str()).collect();
    // The service token was for slm alone: policy is asked with slm's own, for policy.
    let moderated = async {
        let for_policy = gate.output_rules.policy_token(&principal, &token).await?;
        gate.policy
            .check(
                &principal,
                &for_policy,
                &said.join("\n"),
                session.as_deref().unwrap_or_default(),
            )
            .await
    };
    if let Err(e) = moderated.await {
        return (failed(&request_id, e), subject);
    }
    let call = ChatCall {
        model: data["model"].as_str().unwrap_or_default().to_owned(),
        messages,
        max_tokens: data["max_tokens"].as_u64().map(|n| n as u32),
        temperature: data["temperature"].as_f64().map(|t| t as f32),
        ..ChatCall::default()
    };
    if let Some(t) = call.temperature
        && !(0.0..=2.0).contains(&t)
    {
        let error = ApiError::validation("temperature", "is between 0 and 2");
        return (failed(&request_id, error), subject);
    }
    if call.max_tokens == Some(0) {
        let error = ApiError::validation("max_tokens", "is at least 1");
        return (failed(&request_id, error), subject);
    }
    let caller = Caller {
        tenant: principal.tenant.clone(),
        subject: principal.subject.clone(),
        session,
    };
    let outcome = async {
        let mut call = call;
        call.output_rules = Some(gate.output_rules.for_caller(&principal, &token).await?);
        let answer = router.open(caller, call).await?;
        let profile = answer.profile.clone();
        let (done, usage, cost, currency) = answer.collect().await?;
        Ok::<_, ApiError>((done, usage, cost, currency, profile))
    };
    let answer = match outcome.await {
        Ok((done, usage, cost, currency, profile)) => json!({
            "request_id": request_id,
            "status": "completed",
            "profile": profile,
            // A filtered answer is withheld whole, as on the gRPC path: what streamed
            // before the guard tripped is no answer.
            "message": {
                "role": "assistant",
                "content": (done.finish_reason != Some(FinishReason::ContentFilter)).then_some(done.content),
            },
            "finish_reason": done.finish_reason.map(|f| f.as_str()),
            "usage": { "prompt_tokens": usage.prompt, "completion_tokens": usage.completion, "cost_micros": cost, "currency": currency },
        }),
        Err(e) => failed(&request_id, e),
    };
    (answer, subject)
}
