//! What a session turn tells whoever watches it, as it happens: one event type on every
//! path (the orchestrator's hub and its replica relay, gRPC to the gateway, SSE and the
//! WebSocket). On the wire the variant's name is the event's type and its fields are the
//! data: SSE `event: delta` + `data: {"content", "round", "attempt"}`, WebSocket
//! `{"type": "delta", "session_id", "turn", "data": {...}}`.
//!
//! Also the shapes a turn shares with its callers: a tool call, a policy decision and
//! token usage.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::proto::common::v1 as common_pb;
use crate::proto::orchestrator::v1 as pb;

/// An OpenAI tool call, whole (its streamed pieces joined).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolCall {
    pub id: String,
    /// Always `function`.
    #[serde(rename = "type")]
    pub kind: String,
    pub function: FunctionCall,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunctionCall {
    pub name: String,
    /// The model's JSON text, as it wrote it.
    pub arguments: String,
}

/// Policy's decision on a text.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PolicyDecision {
    pub allowed: bool,
    pub score: u32,
    pub severity: String,
    pub reasons: Vec<String>,
    pub rule_ids: Vec<String>,
    pub flagged: Vec<String>,
    /// slm's output guard stopped the answer while it streamed.
    #[serde(default)]
    pub filtered: bool,
}

/// Tokens and money a turn (or a step of it) used.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TurnUsage {
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub cost_micros: i64,
}

impl std::ops::AddAssign for TurnUsage {
    fn add_assign(&mut self, other: Self) {
        self.prompt_tokens += other.prompt_tokens;
        self.completion_tokens += other.completion_tokens;
        self.cost_micros += other.cost_micros;
    }
}

/// A failure as a client may see it (`ActivityError::public`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublicError {
    pub code: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
    /// The problem's details (the budget a refusal names).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<Value>,
}

impl PublicError {
    /// `ActivityError::public`'s value; whatever does not read as one is a failure with
    /// nothing of it passed on.
    pub fn read(public: &Value) -> Self {
        serde_json::from_value(public.clone()).unwrap_or_else(|_| PublicError {
            code: "unavailable".into(),
            message: "the turn failed".into(),
            correlation_id: None,
            details: None,
        })
    }
}

/// One event of a turn.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data", rename_all = "snake_case")]
pub enum TurnEvent {
    /// A piece of the model's answer to round `round`, from its `attempt`th start.
    Delta {
        content: String,
        round: u32,
        attempt: u32,
    },
    /// The model's answer to `round` starts over: drop that round's deltas and tool
    /// calls of earlier attempts.
    Restart { round: u32, attempt: u32 },
    /// The answer is withheld: drop every delta of the turn.
    Retract { turn: u32, rule_ids: Vec<String> },
    /// A tool call the model made.
    ToolCall {
        #[serde(flatten)]
        call: ToolCall,
        round: u32,
        attempt: u32,
    },
    /// Policy refused something of the turn.
    Policy {
        action: String,
        #[serde(flatten)]
        decision: PolicyDecision,
    },
    /// The message the turn keeps, with the document passages its model was given to
    /// cite.
    Message {
        role: String,
        content: String,
        turn: u32,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        citations: Vec<Citation>,
    },
    /// The turn ended (`completed` or `withheld`).
    Done {
        outcome: String,
        turn: u32,
        usage: TurnUsage,
    },
    /// The turn failed.
    Error(PublicError),
    /// This stream ends because its server is restarting; the turn goes on.
    Reconnect { reason: String },
    /// The watcher fell behind and missed `missed` events.
    Lagged { missed: u64 },
    /// A tool call waits for a person until `expires_at` (RFC 3339).
    ApprovalRequired(ApprovalRequired),
    /// A person approved or denied a call, or nobody answered in time.
    ApprovalResolved(ApprovalResolved),
    /// A tool call ran, or was refused: what the model is told.
    ToolResult(ToolResult),
}

/// A document passage a turn's model was given: what an answer citing it points to.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Citation {
    pub document_id: String,
    pub title: String,
    /// The passage's place in its document, from 0.
    pub position: u32,
    /// The headings above it.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub section: String,
}

/// A tool call that waits for a person's approval.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalRequired {
    pub call_id: String,
    pub tool: String,
    pub action: String,
    /// The model's arguments, as JSON text.
    pub arguments: String,
    pub expires_at: String,
    pub round: u32,
}

/// How an approval ended.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalResolved {
    pub call_id: String,
    pub approved: bool,
    #[serde(default)]
    pub reason: String,
    /// Who answered; empty when nobody did in time.
    #[serde(default)]
    pub by: String,
    #[serde(default)]
    pub timed_out: bool,
}

/// What a tool call brought back.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolResult {
    pub call_id: String,
    /// The function the model called (`<tool>__<action>`).
    pub name: String,
    pub ok: bool,
    /// The result as JSON text, cut to the size the model gets.
    pub content: String,
    pub duration_ms: u64,
    pub cost_micros: i64,
    pub round: u32,
}

impl TurnEvent {
    /// The event's type on the wire.
    pub fn kind(&self) -> &'static str {
        match self {
            TurnEvent::Delta { .. } => "delta",
            TurnEvent::Restart { .. } => "restart",
            TurnEvent::Retract { .. } => "retract",
            TurnEvent::ToolCall { .. } => "tool_call",
            TurnEvent::Policy { .. } => "policy",
            TurnEvent::Message { .. } => "message",
            TurnEvent::Done { .. } => "done",
            TurnEvent::Error(_) => "error",
            TurnEvent::Reconnect { .. } => "reconnect",
            TurnEvent::Lagged { .. } => "lagged",
            TurnEvent::ApprovalRequired(_) => "approval_required",
            TurnEvent::ApprovalResolved(_) => "approval_resolved",
            TurnEvent::ToolResult(_) => "tool_result",
        }
    }

    /// The event's data on the wire.
    pub fn data(&self) -> Value {
        match serde_json::to_value(self) {
            Ok(Value::Object(mut tagged)) => tagged.remove("data").unwrap_or(Value::Null),
            _ => Value::Null,
        }
    }

    /// The last event of a stream cut short because its server is stopping: the turn
    /// goes on elsewhere (another replica, or this one after its restart).
    pub fn reconnect() -> Self {
        TurnEvent::Reconnect {
            reason: "this server is restarting; the turn goes on: watch the session (GET /v1/ws) or read its messages".into(),
        }
    }

    /// The last event of a turn's stream.
    pub fn is_last(&self) -> bool {
        matches!(self, TurnEvent::Done { .. } | TurnEvent::Error(_))
    }

    /// A failure event from `ActivityError::public`'s value; whatever does not read as
    /// one is reported as a failure with nothing of it passed on.
    pub fn error(public: &Value) -> Self {
        TurnEvent::Error(PublicError::read(public))
    }

    /// As sent over gRPC for turn `turn` of `session_id`.
    pub fn into_proto(self, session_id: &str, turn: u32) -> pb::TurnEvent {
        use pb::turn_event::Event;
        let event = match self {
            TurnEvent::Delta {
                content,
                round,
                attempt,
            } => Event::Delta(pb::TurnDelta {
                content,
                round,
                attempt,
            }),
            TurnEvent::Restart { round, attempt } => {
                Event::Restart(pb::TurnRestart { round, attempt })
            }
            TurnEvent::Retract { turn, rule_ids } => {
                Event::Retract(pb::TurnRetract { turn, rule_ids })
            }
            TurnEvent::ToolCall {
                call,
                round,
                attempt,
            } => Event::ToolCall(pb::TurnToolCall {
                id: call.id,
                name: call.function.name,
                arguments: call.function.arguments,
                round,
                attempt,
            }),
            TurnEvent::Policy { action, decision } => Event::Policy(pb::TurnPolicy {
                action,
                allowed: decision.allowed,
                score: decision.score,
                severity: decision.severity,
                reasons: decision.reasons,
                rule_ids: decision.rule_ids,
                flagged: decision.flagged,
                filtered: decision.filtered,
            }),
            TurnEvent::Message {
                role,
                content,
                turn,
                citations,
            } => Event::Message(pb::TurnMessage {
                role,
                content,
                turn,
                citations: citations
                    .into_iter()
                    .map(|c| pb::Citation {
                        document_id: c.document_id,
                        title: c.title,
                        position: c.position,
                        section: c.section,
                    })
                    .collect(),
            }),
            TurnEvent::Done {
                outcome,
                turn,
                usage,
            } => Event::Done(pb::TurnDone {
                outcome,
                turn,
                usage: Some(common_pb::Usage {
                    prompt_tokens: u64::try_from(usage.prompt_tokens).unwrap_or(0),
                    completion_tokens: u64::try_from(usage.completion_tokens).unwrap_or(0),
                    cost_micros: usage.cost_micros,
                    currency: "USD".into(),
                }),
            }),
            TurnEvent::Error(e) => Event::Error(pb::TurnError {
                code: e.code,
                message: e.message,
                correlation_id: e.correlation_id.unwrap_or_default(),
                details: e.details.map(|d| d.to_string()).unwrap_or_default(),
            }),
            TurnEvent::Reconnect { reason } => Event::Reconnect(pb::TurnReconnect { reason }),
            TurnEvent::Lagged { missed } => Event::Lagged(pb::TurnLagged { missed }),
            TurnEvent::ApprovalRequired(a) => Event::ApprovalRequired(pb::TurnApprovalRequired {
                call_id: a.call_id,
                tool: a.tool,
                action: a.action,
                arguments: a.arguments,
                expires_at: a.expires_at,
                round: a.round,
            }),
            TurnEvent::ApprovalResolved(a) => Event::ApprovalResolved(pb::TurnApprovalResolved {
                call_id: a.call_id,
                approved: a.approved,
                reason: a.reason,
                by: a.by,
                timed_out: a.timed_out,
            }),
            TurnEvent::ToolResult(r) => Event::ToolResult(pb::TurnToolResult {
                call_id: r.call_id,
                name: r.name,
                ok: r.ok,
                content: r.content,
                duration_ms: r.duration_ms,
                cost_micros: r.cost_micros,
                round: r.round,
            }),
        };
        pb::TurnEvent {
            session_id: session_id.to_owned(),
            turn,
            event: Some(event),
        }
    }

    /// From gRPC; `None` for an event without a body (sent by a newer peer this one
    /// does not know).
    pub fn from_proto(event: pb::TurnEvent) -> Option<Self> {
        use pb::turn_event::Event;
        Some(match event.event? {
            Event::Delta(d) => TurnEvent::Delta {
                content: d.content,
                round: d.round,
                attempt: d.attempt,
            },
            Event::Restart(r) => TurnEvent::Restart {
                round: r.round,
                attempt: r.attempt,
            },
            Event::Retract(r) => TurnEvent::Retract {
                turn: r.turn,
                rule_ids: r.rule_ids,
            },
            Event::ToolCall(c) => TurnEvent::ToolCall {
                call: ToolCall {
                    id: c.id,
                    kind: "function".into(),
                    function: FunctionCall {
                        name: c.name,
                        arguments: c.arguments,
                    },
                },
                round: c.round,
                attempt: c.attempt,
            },
            Event::Policy(p) => TurnEvent::Policy {
                action: p.action,
                decision: PolicyDecision {
                    allowed: p.allowed,
                    score: p.score,
                    severity: p.severity,
                    reasons: p.reasons,
                    rule_ids: p.rule_ids,
                    flagged: p.flagged,
                    filtered: p.filtered,
                },
            },
            Event::Message(m) => TurnEvent::Message {
                role: m.role,
                content: m.content,
                turn: m.turn,
                citations: m
                    .citations
                    .into_iter()
                    .map(|c| Citation {
                        document_id: c.document_id,
                        title: c.title,
                        position: c.position,
                        section: c.section,
                    })
                    .collect(),
            },
            Event::Done(d) => {
                let usage = d.usage.unwrap_or_default();
                TurnEvent::Done {
                    outcome: d.outcome,
                    turn: d.turn,
                    usage: TurnUsage {
                        prompt_tokens: i64::try_from(usage.prompt_tokens).unwrap_or(i64::MAX),
                        completion_tokens: i64::try_from(usage.completion_tokens)
                            .unwrap_or(i64::MAX),
                        cost_micros: usage.cost_micros,
                    },
                }
            }
            Event::Error(e) => TurnEvent::Error(PublicError {
                code: e.code,
                message: e.message,
                correlation_id: (!e.correlation_id.is_empty()).then_some(e.correlation_id),
                details: serde_json::from_str(&e.details).ok(),
            }),
            Event::Reconnect(r) => TurnEvent::Reconnect { reason: r.reason },
            Event::Lagged(l) => TurnEvent::Lagged { missed: l.missed },
            Event::ApprovalRequired(a) => TurnEvent::ApprovalRequired(ApprovalRequired {
                call_id: a.call_id,
                tool: a.tool,
                action: a.action,
                arguments: a.arguments,
                expires_at: a.expires_at,
                round: a.round,
            }),
            Event::ApprovalResolved(a) => TurnEvent::ApprovalResolved(ApprovalResolved {
                call_id: a.call_id,
                approved: a.approved,
                reason: a.reason,
                by: a.by,
                timed_out: a.timed_out,
            }),
            Event::ToolResult(r) => TurnEvent::ToolResult(ToolResult {
                call_id: r.call_id,
                name: r.name,
                ok: r.ok,
                content: r.content,
                duration_ms: r.duration_ms,
                cost_micros: r.cost_micros,
                round: r.round,
            }),
        })
    }
}

/// What a turn records on `conversation.events`, for consumers (notification,
/// analytics): the envelope's `type` and data. Each names its session and turn; ids are
/// fixed by the run, so a consumer sees each message and each turn's end once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum ConversationEvent {
    /// Words of the answer to `round`, in batches (`seq` counts them per attempt); a
    /// later `attempt` of a round replaces what an earlier one said.
    #[serde(rename = "message.delta")]
    MessageDelta {
        session_id: String,
        turn: u32,
        round: u32,
        attempt: u32,
        seq: u64,
        content: String,
    },
    /// A tool call the model made in `round`.
    #[serde(rename = "tool.call")]
    ToolCall {
        session_id: String,
        turn: u32,
        round: u32,
        call: ToolCall,
    },
    /// A message the turn kept (`index`: its place among the turn's messages).
    #[serde(rename = "message.created")]
    MessageCreated {
        session_id: String,
        turn: u32,
        index: u32,
        role: String,
        content: String,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        tool_calls: Vec<ToolCall>,
        #[serde(default, skip_serializing_if = "String::is_empty")]
        tool_call_id: String,
    },
    /// A tool call of `round` waits for a person's approval.
    #[serde(rename = "tool.approval_required")]
    ApprovalRequired {
        session_id: String,
        turn: u32,
        /// The session's owner, whose agent asks.
        subject: String,
        #[serde(flatten)]
        approval: ApprovalRequired,
    },
    /// The approval ended: approved, denied or timed out.
    #[serde(rename = "tool.approval_resolved")]
    ApprovalResolved {
        session_id: String,
        turn: u32,
        #[serde(flatten)]
        resolved: ApprovalResolved,
    },
    /// A tool call ran or was refused.
    #[serde(rename = "tool.result")]
    ToolResult {
        session_id: String,
        turn: u32,
        #[serde(flatten)]
        result: ToolResult,
    },
    #[serde(rename = "turn.completed")]
    TurnCompleted(TurnEnded),
    #[serde(rename = "turn.withheld")]
    TurnWithheld(TurnEnded),
    #[serde(rename = "turn.failed")]
    TurnFailed(TurnEnded),
}

/// How a turn ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TurnEnded {
    pub session_id: String,
    pub turn: u32,
    /// `completed`, `withheld` or `failed`.
    pub outcome: String,
    pub usage: TurnUsage,
    /// The output rules that withheld the answer.
    #[serde(default)]
    pub rule_ids: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<PublicError>,
    /// From the turn's request to its end, in ms; absent when unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
}

impl ConversationEvent {
    /// The envelope's `type`.
    pub fn kind(&self) -> &'static str {
        match self {
            ConversationEvent::MessageDelta { .. } => "message.delta",
            ConversationEvent::ToolCall { .. } => "tool.call",
            ConversationEvent::MessageCreated { .. } => "message.created",
            ConversationEvent::ApprovalRequired { .. } => "tool.approval_required",
            ConversationEvent::ApprovalResolved { .. } => "tool.approval_resolved",
            ConversationEvent::ToolResult { .. } => "tool.result",
            ConversationEvent::TurnCompleted(_) => "turn.completed",
            ConversationEvent::TurnWithheld(_) => "turn.withheld",
            ConversationEvent::TurnFailed(_) => "turn.failed",
        }
    }

    /// The envelope's data.
    pub fn data(&self) -> Value {
        match serde_json::to_value(self) {
            Ok(Value::Object(mut tagged)) => tagged.remove("data").unwrap_or(Value::Null),
            _ => Value::Null,
        }
    }

    /// The event an envelope of `conversation.events` carries; `None` for another
    /// topic's or a newer kind this build does not know.
    pub fn of(envelope: &crate::infra::events::Envelope) -> Option<Self> {
        serde_json::from_value(serde_json::json!({ "type": envelope.kind, "data": envelope.data }))
            .ok()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn every_kind() -> Vec<TurnEvent> {
        vec![
            TurnEvent::Delta {
                content: "hi".into(),
                round: 1,
                attempt: 2,
            },
            TurnEvent::Restart {
                round: 1,
                attempt: 2,
            },
            TurnEvent::Retract {
                turn: 3,
                rule_ids: vec!["r1".into()],
            },
            TurnEvent::ToolCall {
                call: ToolCall {
                    id: "call_1".into(),
                    kind: "function".into(),
                    function: FunctionCall {
                        name: "weather".into(),
                        arguments: r#"{"city":"Oslo"}"#.into(),
                    },
                },
                round: 1,
                attempt: 1,
            },
            TurnEvent::Policy {
                action: "completion".into(),
                decision: PolicyDecision {
                    allowed: false,
                    score: 90,
                    severity: "high".into(),
                    reasons: vec!["pii".into()],
                    rule_ids: vec!["r1".into()],
                    flagged: vec!["card".into()],
                    filtered: true,
                },
            },
            TurnEvent::Message {
                role: "assistant".into(),
                content: "done".into(),
                turn: 3,
                citations: vec![Citation {
                    document_id: "d1".into(),
                    title: "Manual".into(),
                    position: 2,
                    section: "Warranty".into(),
                }],
            },
            TurnEvent::Done {
                outcome: "completed".into(),
                turn: 3,
                usage: TurnUsage {
                    prompt_tokens: 10,
                    completion_tokens: 5,
                    cost_micros: 42,
                },
            },
            TurnEvent::Error(PublicError {
                code: "timeout".into(),
                message: "the work took too long".into(),
                correlation_id: Some("c1".into()),
                details: None,
            }),
            TurnEvent::Error(PublicError {
                code: "budget_exhausted".into(),
                message: "budget `monthly` is spent".into(),
                correlation_id: None,
                details: Some(json!({"budget": {"name": "monthly"}})),
            }),
            TurnEvent::Reconnect {
                reason: "restarting".into(),
            },
            TurnEvent::Lagged { missed: 7 },
            TurnEvent::ApprovalRequired(ApprovalRequired {
                call_id: "call_2".into(),
                tool: "github".into(),
                action: "merge_pull_request".into(),
                arguments: r#"{"number":7}"#.into(),
                expires_at: "2026-12-05T12:00:00Z".into(),
                round: 1,
            }),
            TurnEvent::ApprovalResolved(ApprovalResolved {
                call_id: "call_2".into(),
                approved: false,
                reason: "not on a Friday".into(),
                by: "u1".into(),
                timed_out: false,
            }),
            TurnEvent::ToolResult(ToolResult {
                call_id: "call_2".into(),
                name: "github__merge_pull_request".into(),
                ok: true,
                content: r#"{"merged":true}"#.into(),
                duration_ms: 12,
                cost_micros: 100,
                round: 1,
            }),
        ]
    }

    #[test]
    fn conversation_events_read_back_from_their_envelopes() {
        let events = [
            ConversationEvent::MessageDelta {
                session_id: "s1".into(),
                turn: 1,
                round: 0,
                attempt: 1,
                seq: 2,
                content: "Echo".into(),
            },
            ConversationEvent::MessageCreated {
                session_id: "s1".into(),
                turn: 1,
                index: 0,
                role: "assistant".into(),
                content: "".into(),
                tool_calls: vec![ToolCall::default()],
                tool_call_id: String::new(),
            },
            ConversationEvent::ApprovalRequired {
                session_id: "s1".into(),
                turn: 1,
                subject: "u1".into(),
                approval: ApprovalRequired {
                    call_id: "c".into(),
                    tool: "github".into(),
                    action: "get_issue".into(),
                    arguments: "{}".into(),
                    expires_at: "2026-12-05T12:00:00Z".into(),
                    round: 0,
                },
            },
            ConversationEvent::ApprovalResolved {
                session_id: "s1".into(),
                turn: 1,
                resolved: ApprovalResolved {
                    call_id: "c".into(),
                    timed_out: true,
                    ..ApprovalResolved::default()
                },
            },
            ConversationEvent::ToolResult {
                session_id: "s1".into(),
                turn: 1,
                result: ToolResult {
                    call_id: "c".into(),
                    ok: true,
                    ..ToolResult::default()
                },
            },
            ConversationEvent::TurnFailed(TurnEnded {
                session_id: "s1".into(),
                turn: 1,
                outcome: "failed".into(),
                usage: TurnUsage::default(),
                rule_ids: vec![],
                error: Some(PublicError::default()),
                duration_ms: Some(1200),
            }),
        ];
        let tenant =
            crate::tenant::TenantId::parse("0190f7c2-8f0e-7a4e-9d43-1c8a1e2b3c4d".to_owned())
                .unwrap();
        for event in events {
            let envelope = crate::infra::events::Envelope::new(
                event.kind(),
                "orchestrator",
                tenant.clone(),
                event.data(),
            );
            assert_eq!(envelope.data["session_id"], "s1");
            assert_eq!(ConversationEvent::of(&envelope), Some(event));
        }
    }

    #[test]
    fn every_event_survives_grpc_and_json() {
        for event in every_kind() {
            let back = TurnEvent::from_proto(event.clone().into_proto("s1", 3));
            assert_eq!(back.as_ref(), Some(&event));
            let json = serde_json::to_string(&event).unwrap();
            assert_eq!(
                serde_json::from_str::<TurnEvent>(&json).unwrap(),
                event,
                "{json}"
            );
        }
    }

    /// The data clients have always read, field for field.
    #[test]
    fn the_wire_format_is_the_documented_one() {
        let events = every_kind();
        assert_eq!(events[0].kind(), "delta");
        assert_eq!(
            events[0].data(),
            json!({ "content": "hi", "round": 1, "attempt": 2 })
        );
        assert_eq!(
            events[3].data(),
            json!({ "id": "call_1", "type": "function", "function": { "name": "weather", "arguments": "{\"city\":\"Oslo\"}" }, "round": 1, "attempt": 1 })
        );
        assert_eq!(events[4].data()["action"], "completion");
        assert_eq!(events[4].data()["rule_ids"], json!(["r1"]));
        assert_eq!(
            events[6].data(),
            json!({ "outcome": "completed", "turn": 3, "usage": { "prompt_tokens": 10, "completion_tokens": 5, "cost_micros": 42 } })
        );
        assert_eq!(
            events[7].data(),
            json!({ "code": "timeout", "message": "the work took too long", "correlation_id": "c1" })
        );
        assert_eq!(events[8].data()["details"]["budget"]["name"], "monthly");
        assert_eq!(
            TurnEvent::error(&json!("garbage")).data()["code"],
            "unavailable"
        );
    }
}
