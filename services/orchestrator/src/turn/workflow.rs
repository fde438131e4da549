//! The turn's decisions. Only the context's steps do I/O, so the engine can replay it.

use serde_json::json;
use somagent_workflows::{ActivityError, Ctx};

use super::{
    Checked, Finish, MAX_TOOL_ROUNDS, MODEL_COMPLETE, Message, ModelCall, POLICY_CHECK,
    PolicyCheck, SESSION_HISTORY, TURN_FINISH, TurnInput, TurnOutcome, TurnResult, Usage, WITHHELD,
    Who,
};

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
            };
            ctx.cleanup().activity(&TURN_FINISH, &finish).await?;
            Err(error)
        }
    }
}

async fn turn(ctx: &Ctx, who: &Who, input: &TurnInput) -> Result<TurnResult, ActivityError> {
    // The prompt was judged (once, with the user's strikes) where the turn was asked
    // for: `SendMessage` refuses it before any turn starts.
    let mut transcript = ctx.activity(&SESSION_HISTORY, who).await?;
    let mut new_messages: Vec<Message> = Vec::new();
    let mut usage = Usage::default();
    let mut answer = String::new();
    let mut filtered = false;
    for round in 0..=MAX_TOOL_ROUNDS {
        ctx.publish(&json!({ "step": "model", "round": round, "usage": usage }));
        let call = ModelCall {
            who: who.clone(),
            model: input.model.clone(),
            messages: transcript.clone(),
            round,
        };
        let reply = ctx.activity(&MODEL_COMPLETE, &call).await?;
        usage += reply.usage;
        answer = reply.content;
        // slm's output guard stopped the answer mid-stream: it is withheld, whatever
        // the final check says of the part that went out.
        filtered = reply.filtered;
        if filtered || reply.tool_calls.is_empty() || round == MAX_TOOL_ROUNDS {
            break;
        }
        let assistant = Message {
            tool_calls: reply.tool_calls.clone(),
            ..Message::new("assistant", answer.clone())
        };
        transcript.push(assistant.clone());
        new_messages.push(assistant);
        for call in &reply.tool_calls {
            let error =
                json!({ "error": format!("the tool `{}` is not available", call.function.name) });
            let result = Message {
                tool_call_id: call.id.clone(),
                ..Message::new("tool", error.to_string())
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
    };
    ctx.activity(&TURN_FINISH, &finish).await?;
    Ok(TurnResult {
        outcome,
        content,
        usage,
        decision: Some(said),
    })
}
