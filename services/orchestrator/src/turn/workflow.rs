//! The turn's decisions. Only the context's steps do I/O, so the engine can replay it.

use std::time::Duration;

use serde_json::json;
use somagent_workflows::{ActivityError, Ctx};

use super::{
    APPROVAL_ASK, Ask, Checked, Consent, Finish, MODEL_COMPLETE, Message, ModelCall, POLICY_CHECK,
    PolicyCheck, RECALL, RecallAsk, Recalled, SESSION_HISTORY, TOOL_RUN, TOOLBOX, TURN_FINISH,
    ToolCall, ToolRun, Toolbox, TurnInput, TurnOutcome, TurnResult, Usage, WITHHELD, Who,
};
use crate::domain::approval::{Verdict, signal_name};

pub async fn session_turn(ctx: Ctx, input: TurnInput) -> Result<TurnResult, ActivityError> {
    let who = Who::of(&input);
    match turn(&ctx, &who, &input).await {
        Ok(done) => Ok(done),
        Err(error) => {
            // The session must not stay busy, and watchers must hear why: even when the
            // run was cancelled.
            let finish = Finish {
                who,
                outcome: TurnOutcome::Failed,
                decision: None,
                error: Some(error.clone()),
                messages: Vec::new(),
                usage: Usage::default(),
                citations: Vec::new(),
            };
            ctx.cleanup().activity(&TURN_FINISH, &finish).await?;
            Err(error)
        }
    }
}

async fn turn(ctx: &Ctx, who: &Who, input: &TurnInput) -> Result<TurnResult, ActivityError> {
    // The prompt was judged (once, with the user's strikes) where the turn was asked
    // for: `SendMessage` refuses it before any turn starts.
    // The history, the tools and what memory recalls are independent: asked for at
    // once (in this fixed order, so a replay numbers them alike), the turn waits for
    // the slowest, not their sum; recall's embedding is most of the wait.
    let recall = async {
        // What memory recalls for the question goes into the prompt (not the history),
        // just before it. Without the memory service the turn goes on without.
        if !input.recall.enabled {
            return Ok(Recalled::default());
        }
        let ask = RecallAsk {
            who: who.clone(),
            query: input.content.clone(),
            settings: input.recall.clone(),
        };
        match ctx.activity(&RECALL, &ask).await {
            Ok(recalled) => Ok(recalled),
            Err(e) if e.is_cancelled() => Err(e),
            Err(_) => Ok(Recalled::default()),
        }
    };
    let toolbox = async {
        // A capsule that uses no tool is offered none: no need to ask for them.
        if input
            .capsule
            .as_ref()
            .is_some_and(|c| c.definition.tools.is_empty())
        {
            return Ok(Toolbox::default());
        }
        // Without the tool service the turn goes on, the model offered no tools.
        match ctx.activity(&TOOLBOX, who).await {
            Ok(toolbox) => Ok(toolbox),
            Err(e) if e.is_cancelled() => Err(e),
            Err(_) => Ok(Toolbox::default()),
        }
    };
    let (transcript, toolbox, recalled) =
        futures::join!(ctx.activity(&SESSION_HISTORY, who), toolbox, recall);
    let (mut transcript, mut toolbox, recalled) = (transcript?, toolbox?, recalled?);
    if let Some(capsule) = &input.capsule {
        as_capsule(&capsule.definition, &mut transcript, &mut toolbox);
    }
    let token_limit = input
        .capsule
        .as_ref()
        .and_then(|c| c.definition.limits.max_tokens);
    // A capsule that names its output's schema gets answers of that schema.
    let response_format = input.capsule.as_ref().and_then(|c| {
        let schema = c.definition.output_schema.as_ref()?;
        Some(json!({"type": "json_schema", "json_schema": {"name": c.definition.id, "schema": schema}}))
    });
    if !recalled.context.is_empty() {
        let at = transcript
            .iter()
            .rposition(|m| m.role == "user")
            .unwrap_or(transcript.len());
        transcript.insert(at, Message::new("system", recalled.context.clone()));
    }
    let mut new_messages: Vec<Message> = Vec::new();
    let mut usage = Usage::default();
    let mut answer = String::new();
    let mut filtered = false;
    for round in 0..=toolbox.max_rounds {
        ctx.publish(&json!({ "step": "model", "round": round, "usage": usage }));
        // The last round offers no tools: the model must answer; so does a round
        // past the capsule's token limit.
        let spent = u64::try_from(usage.prompt_tokens + usage.completion_tokens).unwrap_or(0);
        let out_of_tokens = token_limit.is_some_and(|limit| spent >= limit);
        let tools = if round < toolbox.max_rounds && !out_of_tokens {
            toolbox.definitions.clone()
        } else {
            Vec::new()
        };
        let call = ModelCall {
            who: who.clone(),
            model: input.model.clone(),
            messages: transcript.clone(),
            round,
            tools,
            response_format: response_format.clone(),
            deadline_ms: input.deadline_ms,
        };
        let reply = ctx.activity(&MODEL_COMPLETE, &call).await?;
        usage += reply.usage;
        answer = reply.content;
        // slm's output guard stopped the answer mid-stream: it is withheld, whatever
        // the final check says of the part that went out.
        filtered = reply.filtered;
        if filtered || reply.tool_calls.is_empty() || round == toolbox.max_rounds || out_of_tokens {
            break;
        }
        let assistant = Message {
            tool_calls: reply.tool_calls.clone(),
            ..Message::new("assistant", answer.clone())
        };
        transcript.push(assistant.clone());
        new_messages.push(assistant);
        for (call, content) in run_calls(ctx, who, &toolbox, &reply.tool_calls, round).await? {
            let result = Message {
                tool_call_id: call.id.clone(),
                ..Message::new("tool", content)
            };
            transcript.push(result.clone());
            new_messages.push(result);
        }
    }
    ctx.publish(&json!({ "step": "review", "usage": usage }));
    let check = PolicyCheck {
        who: who.clone(),
        action: Checked::Completion,
        text: answer.clone(),
    };
    let mut said = ctx.activity(&POLICY_CHECK, &check).await?;
    if filtered {
        said.allowed = false;
        said.filtered = true;
    }
    let (outcome, content) = if said.allowed {
        (TurnOutcome::Completed, answer)
    } else {
        (TurnOutcome::Withheld, WITHHELD.to_owned())
    };
    new_messages.push(Message::new("assistant", content.clone()));
    let finish = Finish {
        who: who.clone(),
        outcome,
        decision: Some(said.clone()),
        error: None,
        messages: new_messages,
        usage,
        citations: if outcome == TurnOutcome::Completed {
            recalled.citations
        } else {
            Vec::new()
        },
    };
    ctx.activity(&TURN_FINISH, &finish).await?;
    Ok(TurnResult {
        outcome,
        content,
        usage,
        decision: Some(said),
    })
}

/// Runs one round's tool calls, in the order the model made them: first every call
/// that needs a person is put before them at once, then each waits for its answer
/// (until its own deadline), then each runs. What each call tells the model comes back
/// in order.
async fn run_calls<'a>(
    ctx: &Ctx,
    who: &Who,
    toolbox: &Toolbox,
    calls: &'a [ToolCall],
    round: u32,
) -> Result<Vec<(&'a ToolCall, String)>, ActivityError> {
    let mut deadlines = Vec::with_capacity(calls.len());
    for call in calls {
        let deadline = match toolbox.function(&call.function.name) {
            Some(function) if function.requires_approval => {
                let ask = Ask {
                    who: who.clone(),
                    call: call.clone(),
                    function: function.clone(),
                    round,
                    timeout_secs: toolbox.approval_timeout_secs,
                };
                Some(ctx.activity(&APPROVAL_ASK, &ask).await?.expires_at_ms)
            }
            _ => None,
        };
        deadlines.push(deadline);
    }
    let waiting: Vec<&str> = calls
        .iter()
        .zip(&deadlines)
        .filter(|(_, d)| d.is_some())
        .map(|(c, _)| c.id.as_str())
        .collect();
    if !waiting.is_empty() {
        ctx.publish(&json!({ "step": "approval", "round": round, "waiting_for": waiting }));
    }
    let mut results = Vec::with_capacity(calls.len());
    for (call, deadline) in calls.iter().zip(deadlines) {
        let approval = match deadline {
            Some(expires_at_ms) => {
                let now_ms = i64::try_from(ctx.now().await?.unix_timestamp_nanos() / 1_000_000)
                    .unwrap_or(i64::MAX);
                let left = u64::try_from(expires_at_ms.saturating_sub(now_ms)).unwrap_or(0);
                // Past the deadline an answer given in time may still be waiting (this
                // call's wait came after another's): it is read, not waited for.
                let verdict: Option<Verdict> = ctx
                    .signal(&signal_name(&call.id), Duration::from_millis(left.max(1)))
                    .await?;
                Some(verdict.map_or(Consent::TimedOut, Consent::Answered))
            }
            None => None,
        };
        let run = ToolRun {
            who: who.clone(),
            call: call.clone(),
            function: toolbox.function(&call.function.name).cloned(),
            approval,
            round,
            result_max_bytes: toolbox.result_max_bytes,
        };
        let ran = ctx.activity(&TOOL_RUN, &run).await?;
        results.push((call, ran.content));
    }
    Ok(results)
}

/// A capsule's session: its persona leads the prompt, the model is offered only the
/// tools it names, and no more rounds than it allows.
fn as_capsule(
    capsule: &somagent_common::capsule::Definition,
    transcript: &mut Vec<Message>,
    toolbox: &mut Toolbox,
) {
    transcript.insert(0, Message::new("system", capsule.persona.clone()));
    toolbox.functions.retain(|f| capsule.allows_tool(&f.name));
    let allowed: std::collections::HashSet<&str> =
        toolbox.functions.iter().map(|f| f.name.as_str()).collect();
    toolbox.definitions.retain(|d| {
        d.pointer("/function/name")
            .and_then(serde_json::Value::as_str)
            .is_some_and(|name| allowed.contains(name))
    });
    if let Some(rounds) = capsule.limits.max_rounds {
        toolbox.max_rounds = toolbox.max_rounds.min(rounds);
    }
}
