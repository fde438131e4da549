//! A chat call as the platform sees it, whatever the upstream: messages in, a stream of
//! deltas out, ending with the finish reason and the token usage.

use std::sync::Arc;

use serde_json::Value;
use somagent_common::error::ApiError;

use crate::domain::output_guard::OutputRules;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    System,
    User,
    Assistant,
    Tool,
}

impl Role {
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "system" | "developer" => Some(Self::System),
            "user" => Some(Self::User),
            "assistant" => Some(Self::Assistant),
            "tool" => Some(Self::Tool),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::System => "system",
            Self::User => "user",
            Self::Assistant => "assistant",
            Self::Tool => "tool",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    /// JSON text, as the model wrote it.
    pub arguments: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub role: Role,
    pub content: String,
    pub name: Option<String>,
    /// On a `tool` message: the call it answers.
    pub tool_call_id: Option<String>,
    /// On an `assistant` message: the calls it made.
    pub tool_calls: Vec<ToolCall>,
}

impl Message {
    pub fn new(role: Role, content: impl Into<String>) -> Self {
        Self {
            role,
            content: content.into(),
            name: None,
            tool_call_id: None,
            tool_calls: Vec::new(),
        }
    }
}

/// What to ask a model: as the caller asks it, then (for the upstream) with the
/// profile's model and defaults applied.
#[derive(Debug, Clone, Default)]
pub struct ChatCall {
    /// The profile the caller names (empty for the tenant's default); once a profile
    /// is applied, that profile's model at its upstream.
    pub model: String,
    pub messages: Vec<Message>,
    /// The OpenAI `tools` array.
    pub tools: Option<Value>,
    /// The OpenAI `tool_choice`.
    pub tool_choice: Option<Value>,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub max_tokens: Option<u32>,
    pub stop: Vec<String>,
    pub seed: Option<u64>,
    /// The OpenAI `response_format`: `json_object`, or `json_schema` with the schema
    /// the answer takes (`None` for text).
    pub response_format: Option<Value>,
    /// The tenant's rules for what the answer may not say: its text goes out only as
    /// far as they pass it (`None` only where no answer text reaches anyone).
    pub output_rules: Option<Arc<OutputRules>>,
}

impl ChatCall {
    /// The rules a call keeps whatever brought it: a tool's answer names the call it
    /// answers, `tools` is an array, sampling stays in the range every upstream takes,
    /// and an answer may have at least one token.
    pub fn check(&self) -> Result<(), ApiError> {
        if let Some(i) = self
            .messages
            .iter()
            .position(|m| m.role == Role::Tool && m.tool_call_id.is_none())
        {
            return Err(ApiError::validation(
                "messages",
                format!("message {i} (tool) needs a tool_call_id"),
            ));
        }
        if self.tools.as_ref().is_some_and(|t| !t.is_array()) {
            return Err(ApiError::validation("tools", "is an array of tools"));
        }
        if self.temperature.is_some_and(|t| !(0.0..=2.0).contains(&t)) {
            return Err(ApiError::validation("temperature", "is between 0 and 2"));
        }
        if self.max_tokens == Some(0) {
            return Err(ApiError::validation("max_tokens", "is at least 1"));
        }
        if let Some(format) = &self.response_format {
            check_response_format(format)?;
        }
        Ok(())
    }
}

/// OpenAI's `response_format`: `{"type": "text"}`, `{"type": "json_object"}`, or
/// `{"type": "json_schema", "json_schema": {"name", "schema"?, "strict"?}}`.
fn check_response_format(format: &Value) -> Result<(), ApiError> {
    let field = "response_format";
    match format["type"].as_str() {
        Some("text" | "json_object") => Ok(()),
        Some("json_schema") => {
            let spec = &format["json_schema"];
            if !spec.is_object() {
                return Err(ApiError::validation(
                    "response_format.json_schema",
                    "is an object with the schema's `name` and its `schema`",
                ));
            }
            let name = spec["name"].as_str().unwrap_or_default();
            if name.is_empty()
                || name.len() > 64
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            {
                return Err(ApiError::validation(
                    "response_format.json_schema.name",
                    "is 1 to 64 letters, digits, `_` or `-`",
                ));
            }
            if !matches!(spec.get("schema"), None | Some(Value::Object(_))) {
                return Err(ApiError::validation(
                    "response_format.json_schema.schema",
                    "is a JSON Schema object",
                ));
            }
            Ok(())
        }
        _ => Err(ApiError::validation(
            field,
            "has `type` text, json_object or json_schema",
        )),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    Stop,
    Length,
    ToolCalls,
    ContentFilter,
}

impl FinishReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stop => "stop",
            Self::Length => "length",
            Self::ToolCalls => "tool_calls",
            Self::ContentFilter => "content_filter",
        }
    }

    pub fn parse(value: &str) -> Self {
        match value {
            "length" => Self::Length,
            "tool_calls" | "function_call" => Self::ToolCalls,
            "content_filter" => Self::ContentFilter,
            _ => Self::Stop,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TokenUsage {
    pub prompt: u64,
    pub completion: u64,
}

/// One piece of a streamed answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Delta {
    Text(String),
    /// A piece of tool call `index`: the id and name come first, arguments in pieces.
    ToolCall {
        index: u32,
        id: Option<String>,
        name: Option<String>,
        arguments: String,
    },
    /// The token usage, as the upstream reported it (after the finish, in OpenAI's
    /// streams).
    Usage(TokenUsage),
    /// The end: why, and the usage if the upstream reported it.
    Finish {
        reason: FinishReason,
        usage: Option<TokenUsage>,
    },
}

/// A whole answer, assembled from its deltas.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Completion {
    pub content: String,
    pub tool_calls: Vec<ToolCall>,
    pub finish_reason: Option<FinishReason>,
    pub usage: Option<TokenUsage>,
}

impl Completion {
    /// Adds one delta: text appends, tool call pieces join the call of their index.
    pub fn push(&mut self, delta: &Delta) {
        match delta {
            Delta::Text(text) => self.content.push_str(text),
            Delta::ToolCall {
                index,
                id,
                name,
                arguments,
            } => {
                let index = *index as usize;
                while self.tool_calls.len() <= index {
                    self.tool_calls.push(ToolCall {
                        id: String::new(),
                        name: String::new(),
                        arguments: String::new(),
                    });
                }
                let call = &mut self.tool_calls[index];
                if let Some(id) = id {
                    call.id.clone_from(id);
                }
                if let Some(name) = name {
                    call.name.push_str(name);
                }
                call.arguments.push_str(arguments);
            }
            Delta::Usage(usage) => self.usage = Some(*usage),
            Delta::Finish { reason, usage } => {
                self.finish_reason = Some(*reason);
                if usage.is_some() {
                    self.usage = *usage;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_that_breaks_a_rule_names_the_field() {
        let ok = ChatCall {
            messages: vec![Message::new(Role::User, "hi")],
            temperature: Some(0.7),
            max_tokens: Some(10),
            ..ChatCall::default()
        };
        assert!(ok.check().is_ok());
        let field = |call: ChatCall| {
            let e = call.check().unwrap_err();
            e.details["fields"]
                .as_object()
                .unwrap()
                .keys()
                .next()
                .unwrap()
                .clone()
        };
        let mut orphan = ok.clone();
        orphan.messages.push(Message::new(Role::Tool, "42"));
        assert_eq!(field(orphan), "messages");
        let mut tools = ok.clone();
        tools.tools = Some(serde_json::json!({"type": "function"}));
        assert_eq!(field(tools), "tools");
        let mut hot = ok.clone();
        hot.temperature = Some(2.5);
        assert_eq!(field(hot), "temperature");
        let mut none = ok;
        none.max_tokens = Some(0);
        assert_eq!(field(none), "max_tokens");
    }

    #[test]
    fn deltas_assemble_into_text_and_tool_calls() {
        let mut done = Completion::default();
        for delta in [
            Delta::Text("Hel".into()),
            Delta::Text("lo".into()),
            Delta::ToolCall {
                index: 0,
                id: Some("c1".into()),
                name: Some("search".into()),
                arguments: "{\"q\":".into(),
            },
            Delta::ToolCall {
                index: 1,
                id: Some("c2".into()),
                name: Some("time".into()),
                arguments: "{}".into(),
            },
            Delta::ToolCall {
                index: 0,
                id: None,
                name: None,
                arguments: "\"x\"}".into(),
            },
            Delta::Finish {
                reason: FinishReason::ToolCalls,
                usage: Some(TokenUsage {
                    prompt: 3,
                    completion: 4,
                }),
            },
        ] {
            done.push(&delta);
        }
        assert_eq!(done.content, "Hello");
        assert_eq!(done.tool_calls[0].arguments, "{\"q\":\"x\"}");
        assert_eq!(done.tool_calls[1].name, "time");
        assert_eq!(done.finish_reason, Some(FinishReason::ToolCalls));
        assert_eq!(
            done.usage,
            Some(TokenUsage {
                prompt: 3,
                completion: 4
            })
        );
    }
}
