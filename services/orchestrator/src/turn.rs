//! `SessionWorkflow`, one turn: policy on the input (a denial is final) → the model,
//! its deltas streamed out as they come → tool calls answered (no tools are installed
//! yet, so every call gets a tool error back and the model carries on) → policy on the
//! output → messages persisted → `conversation.events`. slm guards the answer's text as
//! it streams (every round's): a delta reaches watchers and the topic only once the
//! text up to it passes the tenant's terms and patterns; an answer it stops, or one the
//! final check denies, is withheld and watchers get `retract`. Usage is metered by slm, and
//! every policy decision audited by policy.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use somagent_common::auth::ServiceTokens;
use somagent_common::infra::cache::Cache;
use somagent_common::infra::events::{Envelope, EventBus, topics};
use somagent_common::proto::policy::v1 as ppb;
use somagent_common::proto::policy::v1::policy_service_client::PolicyServiceClient;
use somagent_common::proto::slm::v1 as spb;
use somagent_common::proto::slm::v1::slm_service_client::SlmServiceClient;
use somagent_common::service::{POLICY, SLM, ServiceSpec};
use somagent_common::tenant::TenantId;

use crate::hub::{TurnEvent, TurnHub};
use crate::store::SessionStore;
use crate::workflow::{Activities, ActivityError, ActivityOptions, WorkflowContext};

pub const KIND: &str = "session_turn";
/// The turn's activities, by name.
pub const POLICY_CHECK: &str = "policy.check";
pub const SESSION_HISTORY: &str = "session.history";
pub const MODEL_COMPLETE: &str = "model.complete";
pub const TURN_FINISH: &str = "turn.finish";
/// Rounds of tool calls before the model must answer.
const MAX_TOOL_ROUNDS: usize = 4;
const QUICK: ActivityOptions = ActivityOptions::new(Duration::from_secs(10), 3);
/// The model call: slm bounds the wait for each token; this bounds the whole answer.
/// It beats while it streams, so when its process dies another takes it over within
/// seconds rather than after the whole bound.
const MODEL: ActivityOptions =
    ActivityOptions::new(Duration::from_secs(300), 2).with_heartbeat(Duration::from_secs(5));
pub const WITHHELD: &str = "[withheld: the answer broke this tenant's policy]";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TurnInput {
    pub session_id: String,
    pub turn: u32,
    pub tenant: String,
    pub subject: String,
    /// What the user's request could do; the turn acts with no more.
    pub capabilities: Vec<String>,
    pub model: String,
    pub content: String,
}

/// The workflow id of turn `turn` of session `session`: stable, so a retried start is
/// the same run.
pub fn run_id(session: &str, turn: u32) -> String {
    format!("session-{session}-turn-{turn}")
}

fn who(input: &TurnInput) -> Value {
    json!({ "tenant": input.tenant, "subject": input.subject, "capabilities": input.capabilities, "session_id": input.session_id, "turn": input.turn })
}

/// The turn, as a workflow: only activities do I/O.
pub async fn session_turn(
    ctx: Arc<dyn WorkflowContext>,
    input: Value,
) -> Result<Value, ActivityError> {
    let input: TurnInput = serde_json::from_value(input)
        .map_err(|e| ActivityError::fatal("validation_failed", format!("turn input: {e}")))?;
    match turn(ctx.as_ref(), &input).await {
        Ok(done) => Ok(done),
        Err(error) => {
            // The session must not stay busy, and watchers must hear why.
            let finish =
                json!({ "who": who(&input), "outcome": "failed", "error": error, "messages": [] });
            ctx.activity(TURN_FINISH, finish, QUICK).await?;
            Err(error)
        }
    }
}

async fn turn(ctx: &dyn WorkflowContext, input: &TurnInput) -> Result<Value, ActivityError> {
    let check =
        |action: &str, text: &str| json!({ "who": who(input), "action": action, "text": text });
    let asked = ctx
        .activity(POLICY_CHECK, check("prompt", &input.content), QUICK)
        .await?;
    if asked["allowed"] != true {
        let finish =
            json!({ "who": who(input), "outcome": "denied", "decision": asked, "messages": [] });
        ctx.activity(TURN_FINISH, finish, QUICK).await?;
        return Ok(json!({ "outcome": "denied", "decision": asked }));
    }
    let history = ctx
        .activity(SESSION_HISTORY, json!({ "who": who(input) }), QUICK)
        .await?;
    let mut transcript: Vec<Value> = history.as_array().cloned().unwrap_or_default();
    let mut new_messages: Vec<Value> = Vec::new();
    let mut usage = json!({ "prompt_tokens": 0, "completion_tokens": 0, "cost_micros": 0 });
    let mut answer = String::new();
    // slm's output guard stopped the answer mid-stream: it is withheld, whatever the
    // final check says of the part that went out.
    let mut filtered = false;
    for round in 0..=MAX_TOOL_ROUNDS {
        let call = json!({ "who": who(input), "model": input.model, "messages": transcript, "round": round });
        let reply = ctx.activity(MODEL_COMPLETE, call, MODEL).await?;
        for key in ["prompt_tokens", "completion_tokens", "cost_micros"] {
            usage[key] =
                json!(usage[key].as_i64().unwrap_or(0) + reply["usage"][key].as_i64().unwrap_or(0));
        }
        answer = reply["content"].as_str().unwrap_or_default().to_owned();
        filtered = reply["filtered"] == true;
        let calls = reply["tool_calls"].as_array().cloned().unwrap_or_default();
        if filtered || calls.is_empty() || round == MAX_TOOL_ROUNDS {
            break;
        }
        let assistant = json!({ "role": "assistant", "content": answer, "tool_calls": calls });
        transcript.push(assistant.clone());
        new_messages.push(assistant);
        for call in &calls {
            let name = call["function"]["name"].as_str().unwrap_or_default();
            let result = json!({
                "role": "tool",
                "tool_call_id": call["id"],
                "content": json!({ "error": format!("the tool `{name}` is not available") }).to_string(),
            });
            transcript.push(result.clone());
            new_messages.push(result);
        }
    }
    let said = ctx
        .activity(POLICY_CHECK, check("completion", &answer), QUICK)
        .await?;
    let mut said = said;
    if filtered {
        said["allowed"] = json!(false);
        said["filtered"] = json!(true);
    }
    let allowed = said["allowed"] == true;
    let content = if allowed { answer } else { WITHHELD.to_owned() };
    new_messages.push(json!({ "role": "assistant", "content": content }));
    let outcome = if allowed { "completed" } else { "withheld" };
    let finish = json!({ "who": who(input), "outcome": outcome, "decision": said, "messages": new_messages, "usage": usage });
    ctx.activity(TURN_FINISH, finish, QUICK).await?;
    Ok(json!({ "outcome": outcome, "content": content, "usage": usage }))
}

/// The turn's activities: the calls to policy, slm and the store, and the events.
pub struct TurnActivities {
    pub store: SessionStore,
    pub policy: PolicyServiceClient<tonic::transport::Channel>,
    pub slm: SlmServiceClient<tonic::transport::Channel>,
    pub tokens: ServiceTokens,
    pub hub: Arc<TurnHub>,
    pub events: EventBus,
    pub cache: Cache,
}

#[derive(Deserialize)]
struct Who {
    tenant: String,
    subject: String,
    capabilities: Vec<String>,
    session_id: String,
    turn: u32,
}

fn who_of(input: &Value) -> Result<Who, ActivityError> {
    serde_json::from_value(input["who"].clone())
        .map_err(|e| ActivityError::fatal("validation_failed", e.to_string()))
}

fn status_error(status: tonic::Status) -> ActivityError {
    let retry = matches!(
        status.code(),
        tonic::Code::Unavailable
            | tonic::Code::DeadlineExceeded
            | tonic::Code::ResourceExhausted
            | tonic::Code::Aborted
    );
    let code = somagent_common::error::ApiError::from(status.clone())
        .code
        .as_str()
        .to_owned();
    if retry {
        ActivityError::retryable(&code, status.message())
    } else {
        ActivityError::fatal(&code, status.message())
    }
}

impl TurnActivities {
    fn emit(&self, who: &Who, kind: &'static str, data: Value) {
        self.hub.send(TurnEvent {
            tenant: who.tenant.clone(),
            session_id: who.session_id.clone(),
            turn: who.turn,
            kind,
            data,
        });
    }

    /// A token for calling `callee` as the user, narrowed to what the user's request
    /// could do.
    async fn token(&self, who: &Who, callee: &ServiceSpec) -> Result<String, ActivityError> {
        self.tokens
            .for_user(callee, &who.tenant, &who.subject, &who.capabilities)
            .await
            .map_err(|status| match status.code() {
                tonic::Code::Unavailable | tonic::Code::DeadlineExceeded => {
                    ActivityError::retryable("unavailable", "identity cannot be reached")
                }
                _ => ActivityError::fatal(
                    "forbidden",
                    format!("the user cannot be acted for: {}", status.message()),
                ),
            })
    }

    async fn policy_check(&self, input: Value) -> Result<Value, ActivityError> {
        let who = who_of(&input)?;
        let request = ppb::EvaluateRequest {
            action: input["action"].as_str().unwrap_or_default().to_owned(),
            text: input["text"].as_str().unwrap_or_default().to_owned(),
            tool: String::new(),
            session_id: who.session_id.clone(),
        };
        let token = self.token(&who, &POLICY).await?;
        let d = self
            .policy
            .clone()
            .evaluate(somagent_common::auth::grpc::with_bearer(
                &token,
                tonic::Request::new(request),
            ))
            .await
            .map_err(status_error)?
            .into_inner();
        let decision = json!({
            "allowed": d.allowed, "score": d.score, "severity": d.severity, "reasons": d.reasons,
            "rule_ids": d.rule_ids, "flagged": d.flagged, "action": input["action"],
        });
        if !d.allowed {
            self.emit(&who, "policy", decision.clone());
        }
        Ok(decision)
    }

    async fn history(&self, input: Value) -> Result<Value, ActivityError> {
        let who = who_of(&input)?;
        let rows = self
            .store
            .messages(&who.tenant, &who.session_id, 0, 10_000)
            .await
            .map_err(|e| ActivityError::retryable("unavailable", e.to_string()))?;
        Ok(Value::Array(
            rows.into_iter()
                .map(|(_, m)| {
                    let mut out = json!({ "role": m.role, "content": m.content });
                    if !m.tool_calls.is_empty() {
                        out["tool_calls"] =
                            serde_json::from_str(&m.tool_calls).unwrap_or(Value::Null);
                    }
                    if !m.tool_call_id.is_empty() {
                        out["tool_call_id"] = json!(m.tool_call_id);
                    }
                    out
                })
                .collect(),
        ))
    }

    async fn model(&self, input: Value) -> Result<Value, ActivityError> {
        let who = who_of(&input)?;
        let messages = input["messages"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|m| spb::ChatMessage {
                role: m["role"].as_str().unwrap_or_default().to_owned(),
                content: m["content"].as_str().unwrap_or_default().to_owned(),
                tool_call_id: m["tool_call_id"].as_str().unwrap_or_default().to_owned(),
                tool_calls_json: m
                    .get("tool_calls")
                    .filter(|v| !v.is_null())
                    .map(Value::to_string)
                    .unwrap_or_default(),
                ..Default::default()
            })
            .collect();
        let request = spb::ChatRequest {
            model: input["model"].as_str().unwrap_or_default().to_owned(),
            messages,
            session_id: who.session_id.clone(),
            ..Default::default()
        };
        let round = input["round"].as_u64().unwrap_or(0);
        // Which start of this answer this is, counted while the token is fetched.
        let (token, attempt) =
            tokio::join!(self.token(&who, &SLM), self.count_attempt(&who, round));
        let token = token?;
        if attempt > 1 {
            // An earlier start broke off (its model call failed, or its replica died, or
            // it stalled and may still be talking): watchers drop what it streamed,
            // and the answer comes again.
            self.emit(
                &who,
                "restart",
                json!({ "round": round, "attempt": attempt }),
            );
        }
        let mut chunks = self
            .slm
            .clone()
            .chat_completion_stream(somagent_common::auth::grpc::with_bearer(
                &token,
                tonic::Request::new(request),
            ))
            .await
            .map_err(status_error)?
            .into_inner();
        let mut content = String::new();
        let mut calls: Vec<Value> = Vec::new();
        let mut usage = json!({});
        let mut filtered = false;
        let mut feed = DeltaFeed::new(&who, round, attempt);
        while let Some(chunk) = chunks.next().await {
            let chunk = match chunk {
                Ok(chunk) => chunk,
                Err(status) => {
                    // What this attempt said so far is progress too: consumers drop
                    // it when the next attempt comes.
                    self.publish_progress(&who, feed.flush()).await;
                    return Err(status_error(status));
                }
            };
            if !chunk.delta.is_empty() {
                content.push_str(&chunk.delta);
                // Watchers here first; the topic gets the words in batches.
                self.emit(
                    &who,
                    "delta",
                    json!({ "content": chunk.delta, "round": round, "attempt": attempt }),
                );
                self.publish_progress(&who, feed.push(&chunk.delta)).await;
            }
            if !chunk.tool_calls_json.is_empty() {
                let pieces: Value =
                    serde_json::from_str(&chunk.tool_calls_json).unwrap_or(Value::Null);
                for piece in pieces.as_array().into_iter().flatten() {
                    let index = piece["index"].as_u64().unwrap_or(0) as usize;
                    while calls.len() <= index {
                        calls.push(json!({ "id": "", "type": "function", "function": { "name": "", "arguments": "" } }));
                    }
                    let call = &mut calls[index];
                    if let Some(id) = piece["id"].as_str() {
                        call["id"] = json!(id);
                    }
                    for field in ["name", "arguments"] {
                        if let Some(part) = piece["function"][field].as_str() {
                            let joined = format!(
                                "{}{part}",
                                call["function"][field].as_str().unwrap_or_default()
                            );
                            call["function"][field] = json!(joined);
                        }
                    }
                }
            }
            if let Some(u) = chunk.usage {
                usage = json!({ "prompt_tokens": u.prompt_tokens, "completion_tokens": u.completion_tokens, "cost_micros": u.cost_micros });
            }
            filtered |= chunk.finish_reason == "content_filter";
        }
        self.publish_progress(&who, feed.flush()).await;
        if filtered {
            // Calls from an answer that broke the policy are not made, nor announced.
            return Ok(
                json!({ "content": content, "tool_calls": [], "usage": usage, "filtered": true }),
            );
        }
        for call in &calls {
            let mut announced = call.clone();
            announced["round"] = json!(round);
            announced["attempt"] = json!(attempt);
            self.emit(&who, "tool_call", announced);
            let event =
                conversation_event(&who, "tool.call", json!({ "round": round, "call": call }));
            self.publish_progress(&who, event).await;
        }
        Ok(json!({ "content": content, "tool_calls": calls, "usage": usage }))
    }

    /// Counts a start of round `round` of the turn's model call and returns which start
    /// it is, 1 for the first. Counted in the cache: Redis is shared by every replica
    /// (whose watchers may have seen an earlier start's words); the in-process cache
    /// goes with its process, as do the watchers of a one-process platform. The count
    /// only shapes the live stream, so a cache that cannot count says "first".
    async fn count_attempt(&self, who: &Who, round: u64) -> u32 {
        let key = format!(
            "model-attempts:{}:{}:{}:{round}",
            who.tenant, who.session_id, who.turn
        );
        match self.cache.incr(&key, 1, Duration::from_secs(3600)).await {
            Ok(n) => u32::try_from(n).unwrap_or(u32::MAX),
            Err(e) => {
                tracing::warn!(session = %who.session_id, error = %e, "cannot count the model call's attempts");
                1
            }
        }
    }

    /// Publishes a progress event (a batch of deltas, a tool call) on
    /// `conversation.events`. Progress is not the record: the messages and the turn's
    /// end are, published by `turn.finish`; so a failure here is logged, and the turn
    /// goes on.
    async fn publish_progress(&self, who: &Who, event: Option<Envelope>) {
        let Some(event) = event else { return };
        if let Err(e) = self
            .events
            .publish(topics::CONVERSATION, &who.session_id, &event)
            .await
        {
            tracing::warn!(session = %who.session_id, error = %e, "cannot publish a turn's progress");
        }
    }

    async fn finish(&self, workflow_id: &str, input: Value) -> Result<Value, ActivityError> {
        let who = who_of(&input)?;
        let messages: Vec<(String, String, String, String)> = input["messages"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|m| {
                (
                    m["role"].as_str().unwrap_or_default().to_owned(),
                    m["content"].as_str().unwrap_or_default().to_owned(),
                    m.get("tool_calls")
                        .filter(|v| !v.is_null())
                        .map(Value::to_string)
                        .unwrap_or_default(),
                    m["tool_call_id"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect();
        self.store
            .finish_turn(&who.tenant, &who.session_id, who.turn, &messages)
            .await
            .map_err(|e| ActivityError::retryable("unavailable", e.to_string()))?;
        let outcome = input["outcome"].as_str().unwrap_or("completed");
        let public_error = if outcome == "failed" {
            ActivityError::public_of(&input["error"])
        } else {
            Value::Null
        };
        // Ids fixed by the run: however often this runs, consumers see each message and
        // the turn's end once.
        let stable = |what: &str| {
            uuid::Uuid::new_v5(
                &uuid::Uuid::NAMESPACE_URL,
                format!("somagent:{workflow_id}:{what}").as_bytes(),
            )
        };
        let mut events = Vec::new();
        for (i, (role, content, tool_calls, tool_call_id)) in messages.iter().enumerate() {
            let data = json!({ "index": i, "role": role, "content": content, "tool_calls": tool_calls, "tool_call_id": tool_call_id });
            events.push((stable(&format!("message-{i}")), "message.created", data));
        }
        events.push((
            stable("finish"),
            match outcome {
                "denied" => "turn.denied",
                "withheld" => "turn.withheld",
                "failed" => "turn.failed",
                _ => "turn.completed",
            },
            json!({
                "outcome": outcome, "usage": input["usage"],
                "rule_ids": input["decision"]["rule_ids"], "error": public_error,
            }),
        ));
        for (id, kind, data) in events {
            let mut event = conversation_event(&who, kind, data)
                .ok_or_else(|| ActivityError::fatal("validation_failed", "a bad tenant id"))?;
            event.id = id;
            self.events
                .publish(topics::CONVERSATION, &who.session_id, &event)
                .await
                .map_err(|e| ActivityError::retryable("unavailable", e.to_string()))?;
        }
        if outcome == "withheld" {
            // What streamed of the answer is taken back before its stand-in comes.
            self.emit(
                &who,
                "retract",
                json!({ "turn": who.turn, "rule_ids": input["decision"]["rule_ids"] }),
            );
        }
        if let Some(last) = messages
            .last()
            .filter(|_| outcome != "failed" && outcome != "denied")
        {
            self.emit(
                &who,
                "message",
                json!({ "role": last.0, "content": last.1, "turn": who.turn }),
            );
        }
        match outcome {
            "failed" => self.emit(&who, "error", public_error),
            _ => self.emit(
                &who,
                "done",
                json!({ "outcome": outcome, "turn": who.turn, "usage": input["usage"] }),
            ),
        }
        Ok(json!({ "persisted": messages.len() }))
    }
}

/// A `conversation.events` event of this turn: `data` with the session and turn added.
fn conversation_event(who: &Who, kind: &str, mut data: Value) -> Option<Envelope> {
    let tenant = TenantId::parse(who.tenant.clone()).ok()?;
    data["session_id"] = json!(who.session_id);
    data["turn"] = json!(who.turn);
    Some(Envelope::new(kind, "orchestrator", tenant, data).with_subject(who.subject.clone()))
}

/// Batches a streamed answer's deltas for the topic: a `message.delta` event at most
/// every [`DeltaFeed::EVERY`] or [`DeltaFeed::MAX`] bytes, so a long answer is a
/// handful of events rather than one per token. Each names its round and attempt: a
/// consumer that sees a later attempt of a round drops what the earlier one said.
struct DeltaFeed<'a> {
    who: &'a Who,
    round: u64,
    attempt: u32,
    seq: u64,
    pending: String,
    since: std::time::Instant,
}

impl<'a> DeltaFeed<'a> {
    const EVERY: Duration = Duration::from_millis(100);
    const MAX: usize = 2048;

    fn new(who: &'a Who, round: u64, attempt: u32) -> Self {
        Self {
            who,
            round,
            attempt,
            seq: 0,
            pending: String::new(),
            since: std::time::Instant::now(),
        }
    }

    fn push(&mut self, delta: &str) -> Option<Envelope> {
        self.pending.push_str(delta);
        if self.since.elapsed() >= Self::EVERY || self.pending.len() >= Self::MAX {
            self.flush()
        } else {
            None
        }
    }

    fn flush(&mut self) -> Option<Envelope> {
        if self.pending.is_empty() {
            return None;
        }
        let content = std::mem::take(&mut self.pending);
        self.since = std::time::Instant::now();
        self.seq += 1;
        conversation_event(
            self.who,
            "message.delta",
            json!({ "round": self.round, "attempt": self.attempt, "seq": self.seq, "content": content }),
        )
    }
}

#[tonic::async_trait]
impl Activities for TurnActivities {
    async fn run(
        &self,
        workflow_id: &str,
        name: &str,
        input: Value,
    ) -> Result<Value, ActivityError> {
        let result = match name {
            POLICY_CHECK => self.policy_check(input).await,
            SESSION_HISTORY => self.history(input).await,
            MODEL_COMPLETE => self.model(input).await,
            TURN_FINISH => self.finish(workflow_id, input).await,
            other => Err(ActivityError::fatal(
                "internal",
                format!("no activity `{other}`"),
            )),
        };
        // The next step may run in another replica: this step's live events go out
        // first, so watchers see them in order.
        self.hub.flush().await;
        result
    }
}
