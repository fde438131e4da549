//! The turn's tool steps: the user's tools as OpenAI function definitions, a call put
//! before a person, a call run through the tool service (which decides on it under
//! policy, limits and metering) and what the model is told of it.

use serde_json::{Value, json};
use somagent_common::auth::grpc::with_bearer;
use somagent_common::clock::unix_now_ms;
use somagent_common::error::{ApiError, ErrorCode};
use somagent_common::proto::tool::v1 as tpb;
use somagent_common::service::TOOL;
use somagent_common::tool_functions::{describe, function_name};
use somagent_common::turn::{
    ApprovalRequired, ApprovalResolved, ConversationEvent, ToolResult, TurnEvent,
};
use somagent_workflows::ActivityError;

use super::activities::TurnActivities;
use super::{Ask, Asked, Consent, Function, ToolRan, ToolRun, Toolbox, Who};
use crate::domain::approval::{Approval, ApprovalStatus};

/// The most of an action's description the model is given.
const MAX_DESCRIPTION: usize = 1024;

/// The tools the caller may use, as the toolbox of a turn: those the tenant has set up
/// (the credential set, where one is needed, and the site, where the tool is served per
/// customer); every built-in adapter is listed, and offering the model ones that can
/// only fail would crowd its choice.
fn toolbox_of(tools: Vec<tpb::Tool>, mut toolbox: Toolbox) -> Toolbox {
    for tool in tools.into_iter().filter(|t| t.ready) {
        for action in tool.actions {
            let Some(name) = function_name(&tool.id, &action.name) else {
                tracing::warn!(tool = %tool.id, action = %action.name, "an action whose function name would pass 64 characters is not offered to models");
                continue;
            };
            if toolbox.function(&name).is_some() {
                continue;
            }
            let parameters: Value = serde_json::from_str(&action.parameters_json)
                .unwrap_or_else(|_| json!({"type": "object"}));
            let about = describe(&tool.name, &action.description);
            toolbox.definitions.push(json!({
                "type": "function",
                "function": {
                    "name": name,
                    "description": cut_text(&about, MAX_DESCRIPTION),
                    "parameters": parameters,
                },
            }));
            toolbox.functions.push(Function {
                name,
                tool: tool.id.clone(),
                action: action.name,
                requires_approval: action.requires_approval,
            });
        }
    }
    toolbox
}

/// `text` cut to at most `max` bytes, on a character boundary.
fn cut_text(text: &str, max: usize) -> &str {
    &text[..text.floor_char_boundary(max)]
}

/// A tool's result as the model gets it: whole when it fits, else its beginning, said
/// to be cut.
fn for_the_model(result: String, max: usize) -> String {
    if result.len() <= max {
        return result;
    }
    json!({
        "truncated": true,
        "bytes": result.len(),
        "partial": cut_text(&result, max.saturating_sub(64)),
    })
    .to_string()
}

/// A refusal or failure as the model is told it.
fn refusal(code: &str, message: impl Into<String>, details: Value) -> String {
    let mut error = json!({ "code": code, "message": message.into() });
    if !details.is_null() {
        error["details"] = details;
    }
    json!({ "error": error }).to_string()
}

impl TurnActivities {
    /// The tools the turn's user may use, as the model is offered them. A user who may
    /// not read tools gets none; the tool service unreachable after the step's retries
    /// fails the step, and the turn goes on without tools.
    pub(super) async fn toolbox(&self, who: Who) -> Result<Toolbox, ActivityError> {
        use somagent_common::settings_cache::number;
        let settings = self
            .settings
            .tenant(&who.tenant, &who.subject)
            .await
            .map_err(|e| ActivityError::retryable("unavailable", e.message))?;
        let toolbox = Toolbox {
            definitions: Vec::new(),
            functions: Vec::new(),
            max_rounds: number(&settings, "sessions.tool_rounds")
                .and_then(|n| u32::try_from(n).ok())
                .unwrap_or(self.config.max_tool_rounds),
            approval_timeout_secs: number(&settings, "sessions.approval_timeout_secs")
                .unwrap_or(self.config.approval_timeout_secs),
            result_max_bytes: self.config.tool_result_max_bytes,
        };
        if !who.capabilities.iter().any(|c| c == "tools:invoke") {
            return Ok(toolbox);
        }
        let token = self.token(&who, &TOOL).await?;
        let listed = self
            .tool
            .clone()
            .list_tools(with_bearer(
                &token,
                tonic::Request::new(tpb::ListToolsRequest { ready_only: true }),
            ))
            .await;
        match listed {
            Ok(list) => Ok(toolbox_of(list.into_inner().tools, toolbox)),
            Err(status) if status.code() == tonic::Code::PermissionDenied => Ok(toolbox),
            Err(status) => Err(super::activities::status_error(status)),
        }
    }

    /// Puts a call before a person: the approval recorded (once, however often this
    /// runs) and announced to the session's watchers and on `conversation.events`.
    pub(super) async fn ask_approval(
        &self,
        workflow_id: &str,
        ask: Ask,
    ) -> Result<Asked, ActivityError> {
        let who = &ask.who;
        let now = unix_now_ms();
        let timeout_ms = i64::try_from(ask.timeout_secs.saturating_mul(1000)).unwrap_or(i64::MAX);
        let approval = Approval {
            session_id: who.session_id.clone(),
            turn: who.turn,
            call_id: ask.call.id.clone(),
            tool: ask.function.tool.clone(),
            action: ask.function.action.clone(),
            arguments: ask.call.function.arguments.clone(),
            status: ApprovalStatus::Pending,
            requested_by: who.subject.clone(),
            requested_at: now,
            expires_at: now.saturating_add(timeout_ms),
            resolved_by: String::new(),
            reason: String::new(),
            resolved_at: None,
        };
        let unavailable = |e: somagent_common::infra::db::DbError| {
            ActivityError::retryable("unavailable", e.to_string())
        };
        self.store
            .ask_approval(&who.tenant, &approval)
            .await
            .map_err(unavailable)?;
        // A retried step keeps the first deadline.
        let expires_at_ms = self
            .store
            .approval(&who.tenant, &who.session_id, &ask.call.id)
            .await
            .map_err(unavailable)?
            .filter(|a| a.turn == who.turn)
            .map_or(approval.expires_at, |a| a.expires_at);
        let required = ApprovalRequired {
            call_id: ask.call.id.clone(),
            tool: ask.function.tool.clone(),
            action: ask.function.action.clone(),
            arguments: ask.call.function.arguments.clone(),
            expires_at: rfc3339_ms(expires_at_ms),
            round: ask.round,
        };
        self.emit(who, TurnEvent::ApprovalRequired(required.clone()));
        let event = ConversationEvent::ApprovalRequired {
            session_id: who.session_id.clone(),
            turn: who.turn,
            subject: who.subject.clone(),
            approval: required,
        };
        self.publish_once(
            who,
            workflow_id,
            &format!("approval-{}-{}", ask.round, ask.call.id),
            &event,
        )
        .await?;
        Ok(Asked { expires_at_ms })
    }

    /// Runs a call (or tells the model why it did not run) and announces the result.
    pub(super) async fn run_tool(
        &self,
        workflow_id: &str,
        run: ToolRun,
    ) -> Result<ToolRan, ActivityError> {
        let who = &run.who;
        let name = run.call.function.name.clone();
        let mut approved_by = String::new();
        if let Some(answer) = &run.approval {
            let (status, by, reason) = match answer {
                Consent::Answered(v) if v.approved => {
                    (ApprovalStatus::Approved, v.by.clone(), v.reason.clone())
                }
                Consent::Answered(v) => (ApprovalStatus::Denied, v.by.clone(), v.reason.clone()),
                Consent::TimedOut => (ApprovalStatus::Expired, String::new(), String::new()),
            };
            self.store
                .settle_approval(
                    &who.tenant,
                    &who.session_id,
                    who.turn,
                    &run.call.id,
                    status,
                    &by,
                    &reason,
                    unix_now_ms(),
                )
                .await
                .map_err(|e| ActivityError::retryable("unavailable", e.to_string()))?;
            let resolved = ApprovalResolved {
                call_id: run.call.id.clone(),
                approved: status == ApprovalStatus::Approved,
                reason: reason.clone(),
                by: by.clone(),
                timed_out: status == ApprovalStatus::Expired,
            };
            self.emit(who, TurnEvent::ApprovalResolved(resolved.clone()));
            let event = ConversationEvent::ApprovalResolved {
                session_id: who.session_id.clone(),
                turn: who.turn,
                resolved,
            };
            self.publish_once(
                who,
                workflow_id,
                &format!("approval-resolved-{}-{}", run.round, run.call.id),
                &event,
            )
            .await?;
            approved_by = by;
        }
        let started = std::time::Instant::now();
        let (ran, cost_micros) = match (&run.function, &run.approval) {
            (None, _) => (
                ToolRan {
                    content: refusal(
                        "not_found",
                        format!("the tool `{name}` is not available"),
                        Value::Null,
                    ),
                    ok: false,
                },
                0,
            ),
            (Some(_), Some(Consent::TimedOut)) => (
                ToolRan {
                    content: refusal(
                        "approval_timeout",
                        "nobody approved this call in time, so it did not run",
                        Value::Null,
                    ),
                    ok: false,
                },
                0,
            ),
            (Some(_), Some(Consent::Answered(v))) if !v.approved => (
                ToolRan {
                    content: refusal(
                        "denied_by_person",
                        "a person denied this call, so it did not run",
                        json!({ "reason": v.reason }),
                    ),
                    ok: false,
                },
                0,
            ),
            (Some(function), _) => {
                let request = tpb::InvokeRequest {
                    tool_id: function.tool.clone(),
                    action: function.action.clone(),
                    arguments_json: run.call.function.arguments.clone(),
                    session_id: who.session_id.clone(),
                    approved_by,
                    // The same on every retry of this step: a call that ran is not run
                    // again.
                    idempotency_key: format!("{workflow_id}:{}:{}", run.round, run.call.id),
                };
                self.invoke(who, request, run.result_max_bytes).await?
            }
        };
        let result = ToolResult {
            call_id: run.call.id.clone(),
            name,
            ok: ran.ok,
            content: ran.content.clone(),
            duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            cost_micros,
            round: run.round,
        };
        self.emit(who, TurnEvent::ToolResult(result.clone()));
        let event = ConversationEvent::ToolResult {
            session_id: who.session_id.clone(),
            turn: who.turn,
            result,
        };
        self.publish_once(
            who,
            workflow_id,
            &format!("tool-result-{}-{}", run.round, run.call.id),
            &event,
        )
        .await?;
        Ok(ran)
    }

    /// Calls the tool service as the user. Its refusals and the tool's failures are
    /// what the model is told; only the tool service being unreachable is retried.
    async fn invoke(
        &self,
        who: &Who,
        request: tpb::InvokeRequest,
        max_bytes: usize,
    ) -> Result<(ToolRan, i64), ActivityError> {
        let token = self.token(who, &TOOL).await?;
        match self
            .tool
            .clone()
            .invoke(with_bearer(&token, tonic::Request::new(request)))
            .await
        {
            Ok(answer) => {
                let answer = answer.into_inner();
                Ok((
                    ToolRan {
                        content: for_the_model(answer.result_json, max_bytes),
                        ok: true,
                    },
                    answer.cost_micros,
                ))
            }
            Err(status) => {
                let error = ApiError::from(status.clone());
                if status.code() == tonic::Code::Unavailable && error.code == ErrorCode::Unavailable
                {
                    return Err(ActivityError::retryable("unavailable", error.message));
                }
                Ok((
                    ToolRan {
                        content: for_the_model(
                            refusal(error.code.as_str(), error.message, error.details),
                            max_bytes,
                        ),
                        ok: false,
                    },
                    0,
                ))
            }
        }
    }
}

/// Unix milliseconds as RFC 3339.
fn rfc3339_ms(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn action(name: &str, approval: bool) -> tpb::Action {
        tpb::Action {
            name: name.into(),
            description: "Does it".into(),
            parameters_json: r#"{"type":"object","properties":{"q":{"type":"string"}}}"#.into(),
            capability: "tools:invoke".into(),
            requires_approval: approval,
            ..Default::default()
        }
    }

    #[test]
    fn each_action_is_a_function_the_model_can_name() {
        let unset = tpb::Tool {
            id: "github".into(),
            auth: "bearer".into(),
            actions: vec![action("list_issues", false)],
            ..Default::default()
        };
        let tools = vec![
            unset,
            tpb::Tool {
                id: "crm".into(),
                name: "Acme CRM".into(),
                auth: "header".into(),
                credential_set: true,
                ready: true,
                actions: vec![
                    action("list_contacts", false),
                    action("delete_contact", true),
                    action(&"x".repeat(70), false),
                ],
                ..Default::default()
            },
        ];
        let toolbox = toolbox_of(tools, Toolbox::default());
        let names: Vec<_> = toolbox.functions.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["crm__list_contacts", "crm__delete_contact"]);
        assert!(
            toolbox
                .function("crm__delete_contact")
                .unwrap()
                .requires_approval
        );
        let first = &toolbox.definitions[0]["function"];
        assert_eq!(first["description"], "Acme CRM: Does it");
        assert_eq!(first["parameters"]["properties"]["q"]["type"], "string");
    }

    #[test]
    fn a_long_result_is_cut_and_says_so() {
        let long = "é".repeat(10_000);
        let cut: Value = serde_json::from_str(&for_the_model(long.clone(), 1000)).unwrap();
        assert_eq!(cut["truncated"], true);
        assert_eq!(cut["bytes"], long.len());
        assert!(cut["partial"].as_str().unwrap().len() <= 1000);
        assert_eq!(for_the_model("{}".into(), 1000), "{}");
    }
}
