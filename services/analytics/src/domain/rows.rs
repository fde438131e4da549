//! The platform's events as the warehouse's rows: every event is one row of `events`
//! (what, from whom, when; never its data), and the events analytics answers questions
//! about are also one row of a table of their own, with the facts they carry. Prompts,
//! answers, tokens and secrets are never in any of them.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use somagent_common::infra::events::{Envelope, topics};

/// Every event: what it was, from which service, about whom.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventRow {
    pub event_id: String,
    pub tenant: String,
    pub time_ms: i64,
    pub topic: String,
    pub kind: String,
    pub source: String,
    pub subject: String,
}

/// A metered model, embedding or tool call (`billing.usage`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UsageRow {
    pub event_id: String,
    pub tenant: String,
    pub time_ms: i64,
    pub user_id: String,
    pub session_id: String,
    pub project_id: String,
    /// `model`, `embedding` or `tool`.
    pub kind: String,
    /// The model profile, or the tool.
    pub item: String,
    /// The upstream (models), or the tool's action.
    pub upstream: String,
    pub model: String,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub cost_micros: i64,
    pub currency: String,
    pub latency_ms: u64,
}

/// A session turn's end (`conversation.events`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TurnRow {
    pub event_id: String,
    pub tenant: String,
    pub time_ms: i64,
    pub user_id: String,
    pub session_id: String,
    pub turn: u64,
    /// `completed`, `withheld` or `failed`.
    pub outcome: String,
    /// Why it failed (`budget_exhausted`, `upstream_failed`...); empty otherwise.
    pub error_code: String,
    pub duration_ms: u64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub cost_micros: i64,
}

/// A policy decision (`agent.audit`, `policy.decision`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DecisionRow {
    pub event_id: String,
    pub tenant: String,
    pub time_ms: i64,
    pub user_id: String,
    /// What was judged: `prompt`, `completion`, `tool_call`...
    pub action: String,
    pub tool: String,
    /// 1 allowed, 0 denied.
    pub allowed: u8,
    pub severity: String,
    pub score: i64,
    /// The rules that decided, space-separated.
    pub rule_ids: String,
    pub session_id: String,
}

/// A failed try on a model upstream (`agent.audit`, `slm.call_failed`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelFailureRow {
    pub event_id: String,
    pub tenant: String,
    pub time_ms: i64,
    pub user_id: String,
    pub kind: String,
    pub profile: String,
    pub upstream: String,
    /// `transient`, `timeout`, `rejected`, `busy`.
    pub failure: String,
    pub status: u64,
    pub latency_ms: u64,
}

/// A tool call, whatever became of it (`agent.audit`, `tool.invoked`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCallRow {
    pub event_id: String,
    pub tenant: String,
    pub time_ms: i64,
    pub user_id: String,
    pub tool: String,
    pub action: String,
    /// `ok`, `denied`, `failed`, `timeout`...
    pub result: String,
    pub status: u64,
    pub duration_ms: u64,
}

/// A workflow's or task's step (`workflow.events`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkflowRow {
    pub event_id: String,
    pub tenant: String,
    pub time_ms: i64,
    pub user_id: String,
    /// The event's type: `project.completed`, `task.failed`...
    pub kind: String,
    pub workflow_id: String,
    /// The last word of the type: `started`, `progress`, `completed`, `failed`...
    pub status: String,
}

/// What a governance report lists: approvals, budget thresholds, constitutions
/// published, moderation refusals of a user.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GovernanceRow {
    pub event_id: String,
    pub tenant: String,
    pub time_ms: i64,
    pub user_id: String,
    /// `approval`, `budget`, `constitution`, `project`.
    pub kind: String,
    /// What it said, JSON text (ids, outcome, version, hash; never content).
    pub detail: String,
}

/// One row of one table.
#[derive(Debug, Clone, PartialEq)]
pub enum Row {
    Event(EventRow),
    Usage(UsageRow),
    Turn(TurnRow),
    Decision(DecisionRow),
    ModelFailure(ModelFailureRow),
    ToolCall(ToolCallRow),
    Workflow(WorkflowRow),
    Governance(GovernanceRow),
}

/// Topics whose events carry people's words (async inference's prompts and answers):
/// counted in `events`, nothing more.
const WORDS_ONLY: &[&str] = &[topics::SLM_REQUESTS, topics::SLM_RESPONSES];

fn text(data: &Value, field: &str) -> String {
    match &data[field] {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => String::new(),
    }
}

fn count(data: &Value, field: &str) -> u64 {
    data[field].as_u64().unwrap_or(0)
}

fn micros(data: &Value, field: &str) -> i64 {
    data[field].as_i64().unwrap_or(0)
}

/// The rows `event`, read from `topic`, makes.
pub fn rows_of(topic: &str, event: &Envelope) -> Vec<Row> {
    let time_ms = i64::try_from(event.time.unix_timestamp_nanos() / 1_000_000).unwrap_or(0);
    let base = |e: &Envelope| EventRow {
        event_id: e.id.to_string(),
        tenant: e.tenant.as_str().to_owned(),
        time_ms,
        topic: topic.to_owned(),
        kind: e.kind.clone(),
        source: e.source.clone(),
        subject: e.subject.clone().unwrap_or_default(),
    };
    let mut rows = vec![Row::Event(base(event))];
    if WORDS_ONLY.contains(&topic) {
        return rows;
    }
    let data = &event.data;
    let id = event.id.to_string();
    let tenant = event.tenant.as_str().to_owned();
    let subject = event.subject.clone().unwrap_or_default();
    let user = |field: &str| {
        let named = text(data, field);
        if named.is_empty() {
            subject.clone()
        } else {
            named
        }
    };
    match (topic, event.kind.as_str()) {
        (topics::BILLING_USAGE, "slm.usage" | "tool.usage") => {
            let tool = event.kind == "tool.usage";
            let kind = if tool {
                "tool".to_owned()
            } else {
                match data["kind"].as_str() {
                    Some(k) => k.to_owned(),
                    None => "model".to_owned(),
                }
            };
            rows.push(Row::Usage(UsageRow {
                event_id: id,
                tenant,
                time_ms,
                user_id: user("user"),
                session_id: text(data, "session_id"),
                project_id: text(data, "project_id"),
                kind,
                item: if tool {
                    text(data, "tool")
                } else {
                    text(data, "profile")
                },
                upstream: if tool {
                    text(data, "action")
                } else {
                    text(data, "upstream")
                },
                model: text(data, "model"),
                prompt_tokens: count(data, "prompt_tokens"),
                completion_tokens: count(data, "completion_tokens"),
                cost_micros: micros(data, "cost_micros"),
                currency: text(data, "currency"),
                latency_ms: count(data, "latency_ms"),
            }));
        }
        (topics::CONVERSATION, "turn.completed" | "turn.withheld" | "turn.failed") => {
            rows.push(Row::Turn(TurnRow {
                event_id: id,
                tenant,
                time_ms,
                user_id: subject,
                session_id: text(data, "session_id"),
                turn: count(data, "turn"),
                outcome: text(data, "outcome"),
                error_code: data["error"]["code"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                duration_ms: count(data, "duration_ms"),
                prompt_tokens: count(&data["usage"], "prompt_tokens"),
                completion_tokens: count(&data["usage"], "completion_tokens"),
                cost_micros: micros(&data["usage"], "cost_micros"),
            }));
        }
        (topics::CONVERSATION, "tool.approval_resolved") => {
            rows.push(Row::Governance(GovernanceRow {
                event_id: id,
                tenant,
                time_ms,
                user_id: subject,
                kind: "approval".into(),
                detail: serde_json::json!({
                    "session_id": data["session_id"],
                    "call_id": data["call_id"],
                    "approved": data["approved"],
                    "by": data["by"],
                    "reason": data["reason"],
                })
                .to_string(),
            }));
        }
        (topics::AUDIT, "policy.decision") => {
            let action = text(data, "action");
            rows.push(Row::Decision(DecisionRow {
                event_id: id,
                tenant,
                time_ms,
                user_id: subject,
                action: action
                    .strip_prefix("policy.evaluate:")
                    .unwrap_or(&action)
                    .to_owned(),
                tool: data["resource"]["id"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                allowed: u8::from(data["outcome"] == "allowed"),
                severity: text(data, "severity"),
                score: micros(data, "score"),
                rule_ids: data["rule_ids"]
                    .as_array()
                    .map(|ids| {
                        ids.iter()
                            .filter_map(Value::as_str)
                            .filter(|r| !r.contains(char::is_whitespace))
                            .collect::<Vec<_>>()
                            .join(" ")
                    })
                    .unwrap_or_default(),
                session_id: text(data, "session_id"),
            }));
        }
        (topics::AUDIT, "slm.call_failed") => {
            rows.push(Row::ModelFailure(ModelFailureRow {
                event_id: id,
                tenant,
                time_ms,
                user_id: user("user"),
                kind: text(data, "kind"),
                profile: text(data, "profile"),
                upstream: text(data, "upstream"),
                failure: text(data, "failure"),
                status: count(data, "status"),
                latency_ms: count(data, "latency_ms"),
            }));
        }
        (topics::AUDIT, "tool.invoked") => {
            rows.push(Row::ToolCall(ToolCallRow {
                event_id: id,
                tenant,
                time_ms,
                user_id: subject,
                tool: data["resource"]["id"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                action: text(data, "action"),
                result: text(data, "result"),
                status: count(data, "status"),
                duration_ms: count(data, "duration_ms"),
            }));
        }
        (topics::AUDIT, "constitution.published") => {
            rows.push(Row::Governance(GovernanceRow {
                event_id: id,
                tenant,
                time_ms,
                user_id: subject,
                kind: "constitution".into(),
                detail: serde_json::json!({
                    "version": data["resource"]["id"],
                    "hash": data["hash"],
                })
                .to_string(),
            }));
        }
        (topics::NOTIFICATIONS, "billing.budget_threshold") => {
            rows.push(Row::Governance(GovernanceRow {
                event_id: id,
                tenant,
                time_ms,
                user_id: String::new(),
                kind: "budget".into(),
                detail: serde_json::json!({
                    "budget": data["budget"]["name"],
                    "threshold": data["threshold"],
                    "period": data["period"],
                    "spent": data["spent"],
                    "limit": data["limit"],
                })
                .to_string(),
            }));
        }
        (topics::WORKFLOW, kind) => {
            let status = kind.rsplit('.').next().unwrap_or_default().to_owned();
            // A project's end, for the governance report: its decisions, approval,
            // budget and scores (never its goal or outputs).
            if kind.starts_with("project.")
                && data["status"]
                    .as_str()
                    .is_some_and(somagent_common::runs::is_final)
            {
                rows.push(Row::Governance(GovernanceRow {
                    event_id: format!("{id}/governance"),
                    tenant: tenant.clone(),
                    time_ms,
                    user_id: subject.clone(),
                    kind: "project".into(),
                    detail: serde_json::json!({
                        "project_id": data["project_id"],
                        "status": data["status"],
                        "denied": data["denied"],
                        "approval": data["approval"],
                        "budget": data["budget"],
                        "deliverables": data["deliverables"],
                    })
                    .to_string(),
                }));
            }
            let workflow_id = ["workflow_id", "project_id", "run_id", "task_id"]
                .iter()
                .map(|f| text(data, f))
                .find(|v| !v.is_empty())
                .unwrap_or_default();
            rows.push(Row::Workflow(WorkflowRow {
                event_id: id,
                tenant,
                time_ms,
                user_id: subject,
                kind: kind.to_owned(),
                workflow_id,
                status,
            }));
        }
        _ => {}
    }
    rows
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use somagent_common::tenant::TenantId;

    use super::*;

    fn tenant() -> TenantId {
        TenantId::parse("acme").unwrap()
    }

    #[test]
    fn a_model_call_is_an_event_and_a_usage_row() {
        let event = Envelope::new(
            "slm.usage",
            "slm",
            tenant(),
            json!({"kind": "model", "call_id": "c1", "user": "u1", "session_id": "s1", "profile": "default",
                   "upstream": "openai", "model": "gpt", "prompt_tokens": 12, "completion_tokens": 30,
                   "cost_micros": 250, "currency": "USD", "latency_ms": 812}),
        )
        .with_subject("u1");
        let rows = rows_of(topics::BILLING_USAGE, &event);
        assert_eq!(rows.len(), 2);
        let Row::Usage(u) = &rows[1] else {
            panic!("{rows:?}")
        };
        assert_eq!(
            (u.kind.as_str(), u.item.as_str(), u.upstream.as_str()),
            ("model", "default", "openai")
        );
        assert_eq!(
            (
                u.prompt_tokens,
                u.completion_tokens,
                u.cost_micros,
                u.latency_ms
            ),
            (12, 30, 250, 812)
        );
        assert_eq!(u.user_id, "u1");
        assert_eq!(u.session_id, "s1");
    }

    #[test]
    fn a_decision_a_turn_and_words_only_topics() {
        let decision = Envelope::new(
            "policy.decision",
            "policy",
            tenant(),
            json!({"action": "policy.evaluate:prompt", "outcome": "denied", "score": 90, "severity": "high",
                   "rule_ids": ["no-secrets", "bad id"], "resource": {"type": "policy", "id": null}}),
        )
        .with_subject("u1");
        let Row::Decision(d) = &rows_of(topics::AUDIT, &decision)[1] else {
            panic!()
        };
        assert_eq!((d.action.as_str(), d.allowed, d.score), ("prompt", 0, 90));
        assert_eq!(d.rule_ids, "no-secrets");
        let failed = Envelope::new(
            "turn.failed",
            "orchestrator",
            tenant(),
            json!({"session_id": "s1", "turn": 3, "outcome": "failed", "duration_ms": 1500,
                   "usage": {"prompt_tokens": 1, "completion_tokens": 2, "cost_micros": 3},
                   "error": {"code": "budget_exhausted", "message": "no room"}}),
        )
        .with_subject("u1");
        let Row::Turn(t) = &rows_of(topics::CONVERSATION, &failed)[1] else {
            panic!()
        };
        assert_eq!(
            (t.error_code.as_str(), t.duration_ms, t.turn),
            ("budget_exhausted", 1500, 3)
        );
        let delta = Envelope::new(
            "message.delta",
            "orchestrator",
            tenant(),
            json!({"content": "secret words"}),
        );
        assert_eq!(rows_of(topics::CONVERSATION, &delta).len(), 1);
        let request = Envelope::new(
            "slm.request",
            "gateway",
            tenant(),
            json!({"prompt": "secret words"}),
        );
        let rows = rows_of(topics::SLM_REQUESTS, &request);
        assert_eq!(rows.len(), 1);
        assert!(!format!("{rows:?}").contains("secret words"));
    }
}
