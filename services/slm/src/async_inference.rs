//! Asynchronous inference over the bus: a request on `slm.requests`
//! (`{request_id, model, messages, max_tokens?, temperature?, session_id?}`, the
//! envelope naming the tenant and the user it is for) is answered on `slm.responses`
//! with `{request_id, status: completed | failed, message?, finish_reason?, usage?,
//! error?}`. Metered like any call. A request delivered twice is answered once: the
//! handled ids are kept in the store, and the answer's event id is fixed by the request
//! id so consumers can deduplicate a repeated answer.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use somagent_common::infra::db::{Db, claim_event};
use somagent_common::infra::events::{Envelope, EventBus, topics};
use somagent_common::infra::outbox::Outbox;

use crate::domain::chat::{Message, Role};
use crate::metering::Caller;
use crate::router::{ChatInput, ModelRouter};

const CONSUMER: &str = "slm-async";

/// Answers requests until the process ends.
pub async fn serve(
    router: Arc<ModelRouter>,
    events: EventBus,
    db: Db,
    outbox: Outbox,
) -> anyhow::Result<()> {
    let mut requests = events.subscribe(CONSUMER, &[topics::SLM_REQUESTS]).await?;
    tokio::spawn(async move {
        loop {
            let delivery = match requests.next().await {
                Ok(delivery) => delivery,
                Err(e) => {
                    tracing::warn!(error = %e, "async inference paused");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            let event = &delivery.event;
            if already_handled(&db, &event.id).await {
                let _ = requests.commit(&delivery).await;
                continue;
            }
            let answer = answer(&router, event).await;
            let request_id = event.data["request_id"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            let mut response = Envelope::new("slm.response", "slm", event.tenant.clone(), answer);
            response.id = uuid::Uuid::new_v5(
                &uuid::Uuid::NAMESPACE_URL,
                format!("somagent:slm-response:{}", event.id).as_bytes(),
            );
            if let Some(subject) = &event.subject {
                response = response.with_subject(subject.clone());
            }
            let key = if request_id.is_empty() {
                event.tenant.as_str().to_owned()
            } else {
                request_id
            };
            if let Err(e) = outbox.publish(topics::SLM_RESPONSES, &key, &response).await {
                // Not committed: the request comes again.
                tracing::error!(error = %e, "an async answer could not be stored; the request will be retried");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            mark_handled(&db, &event.id).await;
            if let Err(e) = requests.commit(&delivery).await {
                tracing::warn!(error = %e, "cannot commit an async inference request");
            }
        }
    });
    Ok(())
}

async fn already_handled(db: &Db, id: &uuid::Uuid) -> bool {
    sqlx::query("SELECT 1 FROM processed_events WHERE consumer = $1 AND event_id = $2")
        .bind(CONSUMER)
        .bind(id.to_string())
        .fetch_optional(db.pool())
        .await
        .ok()
        .flatten()
        .is_some()
}

async fn mark_handled(db: &Db, id: &uuid::Uuid) {
    let marked = async {
        let mut tx = db.begin().await?;
        claim_event(&mut tx, CONSUMER, id).await?;
        tx.commit().await?;
        Ok::<_, anyhow::Error>(())
    };
    if let Err(e) = marked.await {
        tracing::warn!(error = %e, "cannot record an async request as handled");
    }
}

async fn answer(router: &Arc<ModelRouter>, event: &Envelope) -> Value {
    let data = &event.data;
    let request_id = data["request_id"].clone();
    let failed =
        |message: String| json!({ "request_id": request_id, "status": "failed", "error": message });
    let Some(subject) = event.subject.clone() else {
        return failed("the request names no user (the envelope's subject)".into());
    };
    let mut messages = Vec::new();
    for (i, m) in data["messages"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        let Some(role) = m["role"].as_str().and_then(Role::parse) else {
            return failed(format!("message {i} has no known role"));
        };
        messages.push(Message::new(
            role,
            m["content"].as_str().unwrap_or_default(),
        ));
    }
    let input = ChatInput {
        model: data["model"].as_str().unwrap_or_default().to_owned(),
        messages,
        max_tokens: data["max_tokens"].as_u64().map(|n| n as u32),
        temperature: data["temperature"].as_f64().map(|t| t as f32),
        ..ChatInput::default()
    };
    let caller = Caller {
        tenant: event.tenant.clone(),
        subject,
        session: data["session_id"].as_str().map(str::to_owned),
    };
    let outcome = async {
        let answer = router.open(caller, input).await?;
        let profile = answer.profile.clone();
        let (done, usage, cost, currency) = answer.collect().await?;
        Ok::<_, somagent_common::error::ApiError>((done, usage, cost, currency, profile))
    };
    match outcome.await {
        Ok((done, usage, cost, currency, profile)) => json!({
            "request_id": request_id,
            "status": "completed",
            "profile": profile,
            "message": { "role": "assistant", "content": done.content },
            "finish_reason": done.finish_reason.map(|f| f.as_str()),
            "usage": { "prompt_tokens": usage.prompt, "completion_tokens": usage.completion, "cost_micros": cost, "currency": currency },
        }),
        Err(e) => failed(e.message),
    }
}
