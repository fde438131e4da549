//! The built-in `memory` tool: an agent remembers, recalls and forgets on its own, in
//! the memory of the session it serves (or its user's), under the same policy, limits
//! and audit as every tool. The calls go to the memory service as the user.

use serde_json::{Value, json};

use super::manifest::{Action, AuthScheme, HttpBinding, ToolManifest};

pub const ID: &str = "memory";

/// A memory call, checked.
#[derive(Debug, Clone, PartialEq)]
pub enum MemoryCall {
    Remember {
        scope: String,
        key: String,
        text: String,
    },
    Recall {
        query: String,
        top_k: u32,
    },
    Forget {
        scope: String,
        key: String,
    },
}

/// The manifest every tenant sees.
pub fn manifest() -> ToolManifest {
    let scope = json!({"type": "string", "enum": ["session", "user"],
        "description": "Whose memory: this session's (the default in a session) or the user's, across sessions."});
    let action = |name: &str, description: &str, properties: Value, required: &[&str]| {
        Action {
            name: name.into(),
            description: description.into(),
            parameters: json!({
                "type": "object", "properties": properties, "required": required,
                "additionalProperties": false,
            }),
            // Listed and called as every tool is; the memory service then holds
            // the caller to `memory:read` or `memory:write`.
            capability: "tools:invoke".into(),
            rate_limit_per_minute: 120,
            timeout: std::time::Duration::from_secs(30),
            price_micros: 0,
            requires_approval: false,
            http: HttpBinding::default(),
            remote: Some(name.into()),
        }
    };
    ToolManifest {
        id: ID.into(),
        name: "Memory".into(),
        description: "The agent's own memory: remember a fact for later, recall what was remembered and what the tenant's documents say, forget a fact.".into(),
        version: "1".into(),
        base_url: "memory:".into(),
        site_required: false,
        auth: AuthScheme::None,
        headers: Default::default(),
        pagination: None,
        mcp: false,
        sandbox: None,
        browser: false,
        memory: true,
        actions: vec![
            action("remember", "Remember a fact. A key names it (a new one is made when none is given); the same key again replaces it.",
                json!({"text": {"type": "string", "description": "The fact, in a sentence or two."},
                       "key": {"type": "string", "description": "A short name for it, letters, digits, `-`, `_`, `.`."},
                       "scope": scope}), &["text"]),
            action("recall", "Recall what was remembered and what the tenant's documents say about something.",
                json!({"query": {"type": "string", "description": "What to recall, in words."},
                       "top_k": {"type": "integer", "minimum": 1, "maximum": 20, "description": "How many results (5 by default)."}}), &["query"]),
            action("forget", "Forget a fact remembered under a key.",
                json!({"key": {"type": "string"}, "scope": scope}), &["key"]),
        ],
    }
}

/// The call `action` with `arguments` (already checked against the action's schema)
/// means, in a session `session_id` (empty outside one).
pub fn call(
    action: &str,
    arguments: &serde_json::Map<String, Value>,
    session_id: &str,
    new_key: impl FnOnce() -> String,
) -> Result<MemoryCall, String> {
    let text = |field: &str| {
        arguments
            .get(field)
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    let scope = || match (text("scope").as_deref(), session_id.is_empty()) {
        (Some("user"), _) | (None, true) => Ok("user".to_owned()),
        (Some("session") | None, false) => Ok(format!("session:{session_id}")),
        (Some("session"), true) => Err("`scope: session` is for calls inside a session".to_owned()),
        (Some(other), _) => Err(format!("`scope` is `session` or `user`, not `{other}`")),
    };
    match action {
        "remember" => Ok(MemoryCall::Remember {
            scope: scope()?,
            key: text("key").unwrap_or_else(new_key),
            text: text("text").ok_or("`text` is required")?,
        }),
        "recall" => Ok(MemoryCall::Recall {
            query: text("query").ok_or("`query` is required")?,
            top_k: arguments
                .get("top_k")
                .and_then(Value::as_u64)
                .map_or(5, |k| k.clamp(1, 20) as u32),
        }),
        "forget" => Ok(MemoryCall::Forget {
            scope: scope()?,
            key: text("key").ok_or("`key` is required")?,
        }),
        other => Err(format!("the memory tool has no action `{other}`")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(v: Value) -> serde_json::Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn calls_land_in_the_sessions_memory_unless_the_users_is_asked_for() {
        let remember = call(
            "remember",
            &args(json!({"text": "likes tea"})),
            "s1",
            || "k1".into(),
        )
        .unwrap();
        assert_eq!(
            remember,
            MemoryCall::Remember {
                scope: "session:s1".into(),
                key: "k1".into(),
                text: "likes tea".into()
            }
        );
        let user = call(
            "forget",
            &args(json!({"key": "k", "scope": "user"})),
            "s1",
            String::new,
        )
        .unwrap();
        assert_eq!(
            user,
            MemoryCall::Forget {
                scope: "user".into(),
                key: "k".into()
            }
        );
        let outside = call("remember", &args(json!({"text": "x"})), "", || "k".into()).unwrap();
        assert!(matches!(outside, MemoryCall::Remember { scope, .. } if scope == "user"));
        assert!(
            call(
                "forget",
                &args(json!({"key": "k", "scope": "session"})),
                "",
                String::new
            )
            .is_err()
        );
        assert!(
            call(
                "forget",
                &args(json!({"key": "k", "scope": "tenant"})),
                "s1",
                String::new
            )
            .is_err()
        );
        assert_eq!(
            call(
                "recall",
                &args(json!({"query": "tea", "top_k": 99})),
                "s1",
                String::new
            )
            .unwrap(),
            MemoryCall::Recall {
                query: "tea".into(),
                top_k: 20
            }
        );
        assert_eq!(manifest().actions.len(), 3);
    }
}
