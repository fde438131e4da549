//! The turn's activities: the calls to policy, slm and the store, and the events.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use serde_json::Value;
use somagent_common::auth::ServiceTokens;
use somagent_common::clock::unix_now_ms;
use somagent_common::infra::cache::Cache;
use somagent_common::infra::events::{Envelope, EventBus, topics};
use somagent_common::proto::memory::v1 as mpb;
use somagent_common::proto::memory::v1::memory_service_client::MemoryServiceClient;
use somagent_common::proto::policy::v1 as ppb;
use somagent_common::proto::policy::v1::policy_service_client::PolicyServiceClient;
use somagent_common::proto::slm::v1 as spb;
use somagent_common::proto::slm::v1::slm_service_client::SlmServiceClient;
use somagent_common::proto::tool::v1::tool_service_client::ToolServiceClient;
use somagent_common::service::{MEMORY, POLICY, SLM, ServiceSpec};
use somagent_workflows::ActivityError;

use super::{
    Checked, Citation, Decision, Finish, Finished, Message, ModelCall, ModelReply, PolicyCheck,
    RecallAsk, Recalled, ToolCall, TurnOutcome, Usage, Who,
};
use crate::hub::{Live, TurnHub};
use crate::store::SessionStore;
use somagent_common::turn::{ConversationEvent, PublicError, TurnEnded, TurnEvent};

/// The turn's activities: the calls to policy, slm and the store, and the events.
pub struct TurnActivities {
    pub store: SessionStore,
    pub policy: PolicyServiceClient<somagent_common::grpc_channel::Channel>,
    pub slm: SlmServiceClient<somagent_common::grpc_channel::Channel>,
    pub tokens: ServiceTokens,
    pub hub: Arc<TurnHub>,
    pub events: EventBus,
    pub cache: Cache,
    pub metrics: super::TurnMetrics,
    pub tool: ToolServiceClient<somagent_common::grpc_channel::Channel>,
    pub memory: MemoryServiceClient<somagent_common::grpc_channel::Channel>,
    pub config: crate::config::OrchestratorConfig,
    /// The tenant's session settings, over `config`'s defaults.
    pub settings: Arc<somagent_common::settings_cache::SettingsCache>,
}

pub(super) fn status_error(status: tonic::Status) -> ActivityError {
    let retry = matches!(
        status.code(),
        tonic::Code::Unavailable
            | tonic::Code::DeadlineExceeded
            | tonic::Code::ResourceExhausted
            | tonic::Code::Aborted
    );
    let problem = somagent_common::error::ApiError::from(status.clone());
    let code = problem.code.as_str();
    if retry {
        ActivityError::retryable(code, status.message())
    } else {
        ActivityError::fatal(code, status.message())
    }
    .with_details(problem.details)
}

/// The OpenAI `tool_calls` JSON the store keeps.
fn tool_calls_json(calls: &[ToolCall]) -> String {
    if calls.is_empty() {
        String::new()
    } else {
        serde_json::to_string(calls).unwrap_or_default()
    }
}

/// The highest tool call index a streamed piece may name. Models number their calls
/// from 0, in order; a piece far beyond that is a broken stream, and the calls are
/// not grown to reach it.
const MAX_TOOL_CALL_INDEX: u32 = 64;

/// Joins a streamed piece of a tool call into the calls so far: a piece of an index
/// not seen yet starts that call; the id and the name come once, the arguments in
/// pieces, appended in order.
fn join_tool_call(
    calls: &mut Vec<ToolCall>,
    piece: spb::ToolCallDelta,
) -> Result<(), ActivityError> {
    if piece.index > MAX_TOOL_CALL_INDEX {
        return Err(ActivityError::fatal(
            "internal",
            format!(
                "slm streamed a piece of tool call {}, beyond the {MAX_TOOL_CALL_INDEX} a model may make in one answer",
                piece.index
            ),
        ));
    }
    let index = piece.index as usize;
    while calls.len() <= index {
        calls.push(ToolCall {
            kind: "function".into(),
            ..ToolCall::default()
        });
    }
    let call = &mut calls[index];
    if !piece.id.is_empty() {
        call.id = piece.id;
    }
    if !piece.name.is_empty() {
        call.function.name = piece.name;
    }
    call.function.arguments.push_str(&piece.arguments);
    Ok(())
}

impl TurnActivities {
    /// Ends a step: the next step may run in another replica, so this step's live
    /// events go out first, and watchers see them in order.
    pub(super) async fn step<T>(
        &self,
        result: Result<T, ActivityError>,
    ) -> Result<T, ActivityError> {
        self.hub.flush().await;
        result
    }

    pub(super) fn emit(&self, who: &Who, event: TurnEvent) {
        self.hub.send(Live {
            tenant: who.tenant.clone(),
            session_id: who.session_id.clone(),
            turn: who.turn,
            event,
        });
    }

    /// A token for calling `callee` as the user, narrowed to what the user's request
    /// could do.
    pub(super) async fn token(
        &self,
        who: &Who,
        callee: &ServiceSpec,
    ) -> Result<String, ActivityError> {
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

    pub(super) async fn policy_check(&self, input: PolicyCheck) -> Result<Decision, ActivityError> {
        let who = &input.who;
        let (action, text, tool) = match input.action {
            Checked::Completion => ("completion", input.text, String::new()),
            Checked::Prompt => ("prompt", input.text, String::new()),
            Checked::Tool => ("tool", String::new(), input.text),
        };
        let request = ppb::EvaluateRequest {
            action: action.to_owned(),
            text,
            tool,
            session_id: who.session_id.clone(),
        };
        let token = self.token(who, &POLICY).await?;
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
        let decision = Decision {
            allowed: d.allowed,
            score: d.score,
            severity: d.severity,
            reasons: d.reasons,
            rule_ids: d.rule_ids,
            flagged: d.flagged,
            filtered: false,
        };
        if !decision.allowed {
            self.emit(
                who,
                TurnEvent::Policy {
                    action: action.to_owned(),
                    decision: decision.clone(),
                },
            );
        }
        Ok(decision)
    }

    /// What memory has for the question: the caller's memories and the tenant's
    /// passages, as a context message within the token budget, numbered for citing.
    pub(super) async fn recall(&self, ask: RecallAsk) -> Result<Recalled, ActivityError> {
        let who = &ask.who;
        let settings = &ask.settings;
        let can_read = who.capabilities.iter().any(|c| c == "memory:read");
        let wanted = settings.passages + settings.memories;
        if !can_read || wanted == 0 || ask.query.trim().is_empty() {
            return Ok(Recalled::default());
        }
        let token = self.token(who, &MEMORY).await?;
        let request = mpb::SearchRequest {
            query: ask.query.clone(),
            scopes: settings.scopes.clone(),
            top_k: wanted.min(100),
            session_id: who.session_id.clone(),
            ..Default::default()
        };
        let hits = self
            .memory
            .clone()
            .search(somagent_common::auth::grpc::with_bearer(
                &token,
                tonic::Request::new(request),
            ))
            .await
            .map_err(status_error)?
            .into_inner()
            .hits;
        Ok(recall_context(hits, settings))
    }

    pub(super) async fn history(&self, who: Who) -> Result<Vec<Message>, ActivityError> {
        let rows = self
            .store
            .messages(&who.tenant, &who.session_id, 0, 10_000)
            .await
            .map_err(|e| ActivityError::retryable("unavailable", e.to_string()))?;
        rows.into_iter()
            .map(|(_, m)| {
                let tool_calls = if m.tool_calls.is_empty() {
                    Vec::new()
                } else {
                    serde_json::from_str(&m.tool_calls).map_err(|e| {
                        ActivityError::fatal(
                            "internal",
                            format!("message {}'s tool calls do not read: {e}", m.id),
                        )
                    })?
                };
                Ok(Message {
                    role: m.role,
                    content: m.content,
                    tool_calls,
                    tool_call_id: m.tool_call_id,
                })
            })
            .collect()
    }

    /// The model's answer, ended (failed, not retried) at the call's deadline.
    pub(super) async fn model(&self, input: ModelCall) -> Result<ModelReply, ActivityError> {
        let Some(deadline) = input.deadline_ms else {
            return self.answer(input).await;
        };
        let ran_out = || {
            ActivityError::fatal(
                "deadline_exceeded",
                "the agent's time ran out while the model was answering",
            )
        };
        let left = u64::try_from(deadline.saturating_sub(unix_now_ms())).unwrap_or(0);
        if left == 0 {
            return Err(ran_out());
        }
        tokio::time::timeout(Duration::from_millis(left), self.answer(input))
            .await
            .map_err(|_| ran_out())?
    }

    async fn answer(&self, input: ModelCall) -> Result<ModelReply, ActivityError> {
        let who = &input.who;
        let round = input.round;
        let messages = input
            .messages
            .iter()
            .map(|m| spb::ChatMessage {
                role: m.role.clone(),
                content: m.content.clone(),
                tool_call_id: m.tool_call_id.clone(),
                tool_calls: m
                    .tool_calls
                    .iter()
                    .map(|c| spb::ToolCall {
                        id: c.id.clone(),
                        name: c.function.name.clone(),
                        arguments: c.function.arguments.clone(),
                    })
                    .collect(),
                ..Default::default()
            })
            .collect();
        let tools_json = if input.tools.is_empty() {
            String::new()
        } else {
            Value::Array(input.tools.clone()).to_string()
        };
        let request = spb::ChatRequest {
            model: input.model.clone(),
            messages,
            session_id: who.session_id.clone(),
            tools_json,
            response_format_json: input
                .response_format
                .as_ref()
                .map(Value::to_string)
                .unwrap_or_default(),
            ..Default::default()
        };
        // Which start of this answer this is, counted while the token is fetched.
        let (token, attempt) = tokio::join!(
            self.token(who, &SLM),
            self.count_attempt(who, u64::from(round))
        );
        let token = token?;
        if attempt > 1 {
            // An earlier start broke off (its model call failed, or its replica died, or
            // it stalled and may still be talking): watchers drop what it streamed,
            // and the answer comes again.
            self.emit(who, TurnEvent::Restart { round, attempt });
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
        let mut calls: Vec<ToolCall> = Vec::new();
        let mut usage = Usage::default();
        let mut filtered = false;
        let mut feed = DeltaFeed::new(who, round, attempt);
        while let Some(chunk) = chunks.next().await {
            let chunk = match chunk {
                Ok(chunk) => chunk,
                Err(status) => {
                    // What this attempt said so far is progress too: consumers drop
                    // it when the next attempt comes.
                    self.publish_progress(who, feed.flush()).await;
                    return Err(status_error(status));
                }
            };
            if !chunk.delta.is_empty() {
                content.push_str(&chunk.delta);
                // Watchers here first; the topic gets the words in batches.
                self.emit(
                    who,
                    TurnEvent::Delta {
                        content: chunk.delta.clone(),
                        round,
                        attempt,
                    },
                );
                self.publish_progress(who, feed.push(&chunk.delta)).await;
            }
            for piece in chunk.tool_calls {
                if let Err(e) = join_tool_call(&mut calls, piece) {
                    self.publish_progress(who, feed.flush()).await;
                    return Err(e);
                }
            }
            if let Some(u) = chunk.usage {
                usage = Usage {
                    prompt_tokens: i64::try_from(u.prompt_tokens).unwrap_or(i64::MAX),
                    completion_tokens: i64::try_from(u.completion_tokens).unwrap_or(i64::MAX),
                    cost_micros: u.cost_micros,
                };
            }
            filtered |= chunk.finish_reason == "content_filter";
        }
        self.publish_progress(who, feed.flush()).await;
        if filtered {
            // Calls from an answer that broke the policy are not made, nor announced.
            return Ok(ModelReply {
                content,
                tool_calls: Vec::new(),
                usage,
                filtered: true,
            });
        }
        for call in &calls {
            self.emit(
                who,
                TurnEvent::ToolCall {
                    call: call.clone(),
                    round,
                    attempt,
                },
            );
            let event = conversation_event(
                who,
                &ConversationEvent::ToolCall {
                    session_id: who.session_id.clone(),
                    turn: who.turn,
                    round,
                    call: call.clone(),
                },
            );
            self.publish_progress(who, Some(event)).await;
        }
        Ok(ModelReply {
            content,
            tool_calls: calls,
            usage,
            filtered: false,
        })
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

    /// Publishes an event of the turn on `conversation.events` under an id fixed by the
    /// run and `what`: however often its step runs, consumers see it once.
    pub(super) async fn publish_once(
        &self,
        who: &Who,
        workflow_id: &str,
        what: &str,
        event: &ConversationEvent,
    ) -> Result<(), ActivityError> {
        let mut envelope = conversation_event(who, event);
        envelope.id = stable_id(workflow_id, what);
        self.events
            .publish(topics::CONVERSATION, &who.session_id, &envelope)
            .await
            .map_err(|e| ActivityError::retryable("unavailable", e.to_string()))
    }

    pub(super) async fn finish(
        &self,
        workflow_id: &str,
        input: Finish,
    ) -> Result<Finished, ActivityError> {
        let who = &input.who;
        let messages: Vec<(String, String, String, String)> = input
            .messages
            .iter()
            .map(|m| {
                (
                    m.role.clone(),
                    m.content.clone(),
                    tool_calls_json(&m.tool_calls),
                    m.tool_call_id.clone(),
                )
            })
            .collect();
        self.store
            .finish_turn(&who.tenant, &who.session_id, who.turn, &messages)
            .await
            .map_err(|e| ActivityError::retryable("unavailable", e.to_string()))?;
        let outcome = input.outcome;
        let public_error = match (&input.error, outcome) {
            (Some(error), TurnOutcome::Failed) => Some(error.public()),
            (None, TurnOutcome::Failed) => {
                Some(ActivityError::fatal("internal", "the turn failed").public())
            }
            _ => None,
        };
        let rule_ids = input
            .decision
            .as_ref()
            .map(|d| d.rule_ids.clone())
            .unwrap_or_default();
        // Ids fixed by the run: however often this runs, consumers see each message and
        // the turn's end once.
        let stable = |what: &str| stable_id(workflow_id, what);
        let mut events = Vec::new();
        for (i, m) in input.messages.iter().enumerate() {
            let created = ConversationEvent::MessageCreated {
                session_id: who.session_id.clone(),
                turn: who.turn,
                index: u32::try_from(i).unwrap_or(u32::MAX),
                role: m.role.clone(),
                content: m.content.clone(),
                tool_calls: m.tool_calls.clone(),
                tool_call_id: m.tool_call_id.clone(),
            };
            events.push((stable(&format!("message-{i}")), created));
        }
        let ended = TurnEnded {
            session_id: who.session_id.clone(),
            turn: who.turn,
            outcome: outcome.as_str().to_owned(),
            usage: input.usage,
            rule_ids: rule_ids.clone(),
            error: public_error.as_ref().map(PublicError::read),
            duration_ms: (who.started_ms > 0)
                .then(|| u64::try_from(unix_now_ms() - who.started_ms).unwrap_or(0)),
        };
        events.push((
            stable("finish"),
            match outcome {
                TurnOutcome::Withheld => ConversationEvent::TurnWithheld(ended),
                TurnOutcome::Failed => ConversationEvent::TurnFailed(ended),
                TurnOutcome::Completed => ConversationEvent::TurnCompleted(ended),
            },
        ));
        for (id, event) in events {
            let mut event = conversation_event(who, &event);
            event.id = id;
            self.events
                .publish(topics::CONVERSATION, &who.session_id, &event)
                .await
                .map_err(|e| ActivityError::retryable("unavailable", e.to_string()))?;
        }
        if outcome == TurnOutcome::Withheld {
            // What streamed of the answer is taken back before its stand-in comes.
            self.emit(
                who,
                TurnEvent::Retract {
                    turn: who.turn,
                    rule_ids: rule_ids.clone(),
                },
            );
        }
        if let Some(last) = messages.last().filter(|_| outcome != TurnOutcome::Failed) {
            self.emit(
                who,
                TurnEvent::Message {
                    role: last.0.clone(),
                    content: last.1.clone(),
                    turn: who.turn,
                    citations: input.citations.clone(),
                },
            );
        }
        match outcome {
            TurnOutcome::Failed => {
                self.emit(who, TurnEvent::error(&public_error.unwrap_or(Value::Null)))
            }
            _ => self.emit(
                who,
                TurnEvent::Done {
                    outcome: outcome.as_str().to_owned(),
                    turn: who.turn,
                    usage: input.usage,
                },
            ),
        }
        self.metrics.ended(outcome);
        Ok(Finished {
            persisted: messages.len(),
        })
    }
}

/// The context message of what was recalled: memories first (what the user told the
/// platform to keep), then passages numbered for citing, each with its source, until
/// the token budget (about four characters a token) is spent.
fn recall_context(hits: Vec<mpb::Hit>, settings: &super::RecallSettings) -> Recalled {
    let budget = settings.max_tokens as usize * 4;
    let mut used = 0;
    let mut memories = Vec::new();
    let mut passages = Vec::new();
    let mut citations = Vec::new();
    for hit in hits.iter().filter(|h| h.kind == "memory") {
        let line = format!("- ({}) {}", hit.scope, hit.text.trim());
        if memories.len() == settings.memories as usize || used + line.len() > budget {
            break;
        }
        used += line.len();
        memories.push(line);
    }
    for hit in hits.iter().filter(|h| h.kind == "chunk") {
        let number = passages.len() + 1;
        let mut source = hit.title.clone();
        if !hit.section.is_empty() {
            source = format!("{source} — {}", hit.section);
        }
        let block = format!("[{number}] {source}\n{}", hit.text.trim());
        if passages.len() == settings.passages as usize || used + block.len() > budget {
            break;
        }
        used += block.len();
        passages.push(block);
        citations.push(Citation {
            document_id: hit.document_id.clone(),
            title: hit.title.clone(),
            position: hit.position,
            section: hit.section.clone(),
        });
    }
    if memories.is_empty() && passages.is_empty() {
        return Recalled::default();
    }
    let mut context = String::from(
        "Context recalled for this conversation. Use it where it answers the question; cite passages by their number, as [1].",
    );
    if !memories.is_empty() {
        context.push_str("\n\nMemories:\n");
        context.push_str(&memories.join("\n"));
    }
    if !passages.is_empty() {
        context.push_str("\n\nPassages:\n");
        context.push_str(&passages.join("\n\n"));
    }
    Recalled { context, citations }
}

/// An event id fixed by the run and what the event is of.
fn stable_id(workflow_id: &str, what: &str) -> uuid::Uuid {
    uuid::Uuid::new_v5(
        &uuid::Uuid::NAMESPACE_URL,
        format!("somagent:{workflow_id}:{what}").as_bytes(),
    )
}

/// The envelope of a `conversation.events` event of this turn.
fn conversation_event(who: &Who, event: &ConversationEvent) -> Envelope {
    Envelope::new(
        event.kind(),
        "orchestrator",
        who.tenant.clone(),
        event.data(),
    )
    .with_subject(who.subject.clone())
}

/// Batches a streamed answer's deltas for the topic: a `message.delta` event at most
/// every [`DeltaFeed::EVERY`] or [`DeltaFeed::MAX`] bytes, so a long answer is a
/// handful of events rather than one per token. Each names its round and attempt: a
/// consumer that sees a later attempt of a round drops what the earlier one said.
struct DeltaFeed<'a> {
    who: &'a Who,
    round: u32,
    attempt: u32,
    seq: u64,
    pending: String,
    since: std::time::Instant,
}

impl<'a> DeltaFeed<'a> {
    const EVERY: Duration = Duration::from_millis(100);
    const MAX: usize = 2048;

    fn new(who: &'a Who, round: u32, attempt: u32) -> Self {
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
        Some(conversation_event(
            self.who,
            &ConversationEvent::MessageDelta {
                session_id: self.who.session_id.clone(),
                turn: self.who.turn,
                round: self.round,
                attempt: self.attempt,
                seq: self.seq,
                content,
            },
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn piece(index: u32, id: &str, name: &str, arguments: &str) -> spb::ToolCallDelta {
        spb::ToolCallDelta {
            index,
            id: id.into(),
            name: name.into(),
            arguments: arguments.into(),
        }
    }

    #[test]
    fn streamed_pieces_join_into_whole_calls_by_index() {
        let mut calls = Vec::new();
        for p in [
            piece(0, "call_a", "lookup", ""),
            piece(1, "call_b", "weather", "{\"city\""),
            piece(0, "", "", "{\"q\":"),
            piece(1, "", "", ":\"Oslo\"}"),
            piece(0, "", "", "\"rust\"}"),
        ] {
            join_tool_call(&mut calls, p).unwrap();
        }
        assert_eq!(calls.len(), 2);
        assert_eq!(
            (calls[0].id.as_str(), calls[0].kind.as_str()),
            ("call_a", "function")
        );
        assert_eq!(calls[0].function.name, "lookup");
        assert_eq!(calls[0].function.arguments, "{\"q\":\"rust\"}");
        assert_eq!(calls[1].function.name, "weather");
        assert_eq!(calls[1].function.arguments, "{\"city\":\"Oslo\"}");
    }

    #[test]
    fn a_piece_far_beyond_any_real_call_is_refused_not_allocated() {
        let mut calls = Vec::new();
        let error = join_tool_call(&mut calls, piece(u32::MAX, "x", "f", "")).unwrap_err();
        assert!(!error.retryable);
        assert!(calls.is_empty());
    }
}
