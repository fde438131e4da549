//! The platform's events as notifications: which events notify, whom (the user an
//! event is about, or the tenant's administrators), how urgently, and in what words.
//!
//! - `conversation.events`: a turn's end (`turn.completed`, `turn.withheld`,
//!   `turn.failed`) and a tool call waiting for approval notify the session's owner.
//! - `workflow.events`: a run's or task's end or block (`*.completed`, `*.failed`,
//!   `*.blocked`, `*.cancelled`, `*.budget_exhausted`, `*.rejected`) and a project's
//!   stages (`*.planned`, `*.awaiting_approval`, `*.wave_completed`) notify its
//!   initiator (the envelope's subject).
//! - `agent.notifications`: anything any service wants said, in the shape
//!   `{audience?: "user"|"tenant_admins", user_id?, severity, title, body|message}`.
//!
//! A notice's id is fixed by the event and its audience, so an event read twice makes
//! one notification.

use serde_json::{Value, json};
use somagent_common::infra::events::{Envelope, topics};
use somagent_common::turn::{ConversationEvent, TurnEnded};
use uuid::Uuid;

/// How urgent, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Info,
    Warning,
    Error,
    Critical,
}

impl Severity {
    pub const NAMES: &[&str] = &["info", "warning", "error", "critical"];

    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "info" => Self::Info,
            "warning" => Self::Warning,
            "error" => Self::Error,
            "critical" => Self::Critical,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Info => "info",
            Self::Warning => "warning",
            Self::Error => "error",
            Self::Critical => "critical",
        }
    }
}

/// Who a notice is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Audience {
    /// One user, by their id (the subject of their tokens).
    User(String),
    /// Every administrator of the tenant (`tenant:admin`).
    TenantAdmins,
}

impl Audience {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::User(_) => "user",
            Self::TenantAdmins => "tenant_admins",
        }
    }

    /// The user's id; empty for the administrators.
    pub fn user_id(&self) -> &str {
        match self {
            Self::User(id) => id,
            Self::TenantAdmins => "",
        }
    }
}

/// What an event means for the people it concerns.
#[derive(Debug, Clone, PartialEq)]
pub struct Notice {
    pub id: Uuid,
    pub kind: String,
    pub severity: Severity,
    pub title: String,
    pub body: String,
    pub data: Value,
    pub audience: Audience,
}

/// Longest title and body kept (what a service sends beyond is cut).
const MAX_TITLE: usize = 200;
const MAX_BODY: usize = 4000;

/// The notice an event of `topic` makes, if any.
pub fn from_event(topic: &str, event: &Envelope) -> Option<Notice> {
    match topic {
        topics::CONVERSATION => conversation(event),
        topics::WORKFLOW => workflow(event),
        topics::NOTIFICATIONS => announced(event),
        _ => None,
    }
}

fn notice(
    event: &Envelope,
    audience: Audience,
    severity: Severity,
    title: &str,
    body: &str,
    data: Value,
) -> Notice {
    let id = Uuid::new_v5(
        &event.id,
        format!("{}:{}", audience.as_str(), audience.user_id()).as_bytes(),
    );
    Notice {
        id,
        kind: event.kind.clone(),
        severity,
        title: cut(title, MAX_TITLE),
        body: cut(body, MAX_BODY),
        data,
        audience,
    }
}

fn cut(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// The user an event is about: its subject, when it names one.
fn subject(event: &Envelope) -> Option<Audience> {
    event
        .subject
        .as_deref()
        .filter(|s| !s.is_empty() && !s.starts_with("service:"))
        .map(|s| Audience::User(s.to_owned()))
}

fn conversation(event: &Envelope) -> Option<Notice> {
    let ended = |e: &TurnEnded| {
        json!({
            "session_id": e.session_id,
            "turn": e.turn,
            "outcome": e.outcome,
            "usage": e.usage,
        })
    };
    match ConversationEvent::of(event)? {
        ConversationEvent::TurnCompleted(e) => Some(notice(
            event,
            subject(event)?,
            Severity::Info,
            "Your agent answered",
            &format!("Turn {} of session {} completed.", e.turn, e.session_id),
            ended(&e),
        )),
        ConversationEvent::TurnWithheld(e) => Some(notice(
            event,
            subject(event)?,
            Severity::Warning,
            "An answer was withheld by policy",
            &format!(
                "The answer to turn {} of session {} broke the rules: {}.",
                e.turn,
                e.session_id,
                e.rule_ids.join(", ")
            ),
            ended(&e),
        )),
        ConversationEvent::TurnFailed(e) => {
            let why = e.error.as_ref().map(|e| e.message.as_str()).unwrap_or("");
            let mut data = ended(&e);
            if let Some(error) = &e.error {
                data["error"] = json!({ "code": error.code, "message": error.message });
            }
            Some(notice(
                event,
                subject(event)?,
                Severity::Warning,
                "A turn failed",
                &format!("Turn {} of session {} failed: {why}", e.turn, e.session_id),
                data,
            ))
        }
        ConversationEvent::ApprovalRequired {
            session_id,
            turn,
            subject: owner,
            approval,
        } => {
            let audience = if owner.is_empty() {
                subject(event)?
            } else {
                Audience::User(owner)
            };
            Some(notice(
                event,
                audience,
                Severity::Warning,
                "A tool call waits for your approval",
                &format!(
                    "Session {session_id} wants to run `{}` ({}); approve or deny it before {}.",
                    approval.tool, approval.action, approval.expires_at
                ),
                json!({
                    "session_id": session_id,
                    "turn": turn,
                    "call_id": approval.call_id,
                    "tool": approval.tool,
                    "action": approval.action,
                    "expires_at": approval.expires_at,
                }),
            ))
        }
        _ => None,
    }
}

fn workflow(event: &Envelope) -> Option<Notice> {
    let (_, what) = event.kind.rsplit_once('.')?;
    let severity = match what {
        // A project's stages: its plan made, each wave done, its end.
        "completed" | "planned" | "wave_completed" => Severity::Info,
        "blocked" | "cancelled" | "awaiting_approval" | "budget_exhausted" | "rejected" => {
            Severity::Warning
        }
        "failed" => Severity::Error,
        _ => return None,
    };
    let title = event.data["title"]
        .as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| {
            format!(
                "{} {what}",
                event.kind.trim_end_matches(&format!(".{what}"))
            )
        });
    let body = event.data["message"].as_str().unwrap_or_default();
    Some(notice(
        event,
        subject(event)?,
        severity,
        &title,
        body,
        event.data.clone(),
    ))
}

fn announced(event: &Envelope) -> Option<Notice> {
    let data = &event.data;
    let audience = match data["audience"].as_str() {
        Some("tenant_admins") => Audience::TenantAdmins,
        _ => match data["user_id"].as_str().filter(|u| !u.is_empty()) {
            Some(user) => Audience::User(user.to_owned()),
            None => subject(event).unwrap_or(Audience::TenantAdmins),
        },
    };
    let severity = data["severity"]
        .as_str()
        .and_then(Severity::parse)
        .unwrap_or(Severity::Info);
    let title = data["title"].as_str().unwrap_or(&event.kind);
    let body = data["body"]
        .as_str()
        .or_else(|| data["message"].as_str())
        .unwrap_or_default();
    Some(notice(event, audience, severity, title, body, data.clone()))
}

#[cfg(test)]
mod tests {
    use somagent_common::tenant::TenantId;

    use super::*;

    fn tenant() -> TenantId {
        TenantId::parse("acme").unwrap()
    }

    #[test]
    fn a_completed_turn_notifies_its_owner_once() {
        let event = Envelope::new(
            "turn.completed",
            "orchestrator",
            tenant(),
            json!({"session_id": "s1", "turn": 2, "outcome": "completed", "usage": {"prompt_tokens": 3, "completion_tokens": 4, "cost_micros": 5}}),
        )
        .with_subject("u1");
        let n = from_event(topics::CONVERSATION, &event).unwrap();
        assert_eq!(n.audience, Audience::User("u1".into()));
        assert_eq!(n.kind, "turn.completed");
        assert_eq!(n.severity, Severity::Info);
        assert_eq!(n.data["session_id"], "s1");
        assert_eq!(n.data["usage"]["completion_tokens"], 4);
        // The same event twice is the same notice.
        assert_eq!(from_event(topics::CONVERSATION, &event).unwrap().id, n.id);
        // Deltas and messages notify no one; nor does a turn with no owner.
        let delta = Envelope::new(
            "message.delta",
            "orchestrator",
            tenant(),
            json!({"session_id": "s1", "turn": 2, "round": 1, "attempt": 1, "seq": 0, "content": "hi"}),
        )
        .with_subject("u1");
        assert_eq!(from_event(topics::CONVERSATION, &delta), None);
        let mut ownerless = event;
        ownerless.subject = None;
        assert_eq!(from_event(topics::CONVERSATION, &ownerless), None);
    }

    #[test]
    fn an_announcement_names_its_audience_and_severity() {
        let budget = Envelope::new(
            "billing.budget_threshold",
            "billing",
            tenant(),
            json!({"audience": "tenant_admins", "severity": "critical", "title": "Budget `monthly` is exhausted"}),
        );
        let n = from_event(topics::NOTIFICATIONS, &budget).unwrap();
        assert_eq!(n.audience, Audience::TenantAdmins);
        assert_eq!(n.severity, Severity::Critical);
        assert_eq!(n.title, "Budget `monthly` is exhausted");
        let to_one = Envelope::new(
            "tenant.message",
            "notification",
            tenant(),
            json!({"user_id": "u9", "severity": "loud", "message": "hello"}),
        );
        let n = from_event(topics::NOTIFICATIONS, &to_one).unwrap();
        assert_eq!(n.audience, Audience::User("u9".into()));
        assert_eq!(n.severity, Severity::Info, "an unknown severity is info");
        assert_eq!(n.body, "hello");
        let long = "é".repeat(300);
        let n = from_event(
            topics::NOTIFICATIONS,
            &Envelope::new("x", "y", tenant(), json!({"title": long})),
        )
        .unwrap();
        assert!(n.title.len() <= MAX_TITLE + '…'.len_utf8());
    }

    #[test]
    fn a_workflows_end_notifies_its_initiator() {
        let failed = Envelope::new(
            "project.failed",
            "orchestrator",
            tenant(),
            json!({"project_id": "p1", "message": "the plan did not converge"}),
        )
        .with_subject("u1");
        let n = from_event(topics::WORKFLOW, &failed).unwrap();
        assert_eq!(n.severity, Severity::Error);
        assert_eq!(n.title, "project failed");
        assert_eq!(n.body, "the plan did not converge");
        let progress =
            Envelope::new("task.progress", "orchestrator", tenant(), json!({})).with_subject("u1");
        assert_eq!(from_event(topics::WORKFLOW, &progress), None);
    }

    #[test]
    fn severities_are_ordered() {
        assert!(Severity::Info < Severity::Warning);
        assert!(Severity::Error < Severity::Critical);
        for name in Severity::NAMES {
            assert_eq!(Severity::parse(name).unwrap().as_str(), *name);
        }
    }
}
