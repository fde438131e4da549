use serde_json::Value;

/// Why a step or a run failed, and whether another attempt may succeed. Validation
/// errors are not retried; `cancelled` is what every wait of a cancelled run returns.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct ActivityError {
    pub message: String,
    pub retryable: bool,
    /// The platform error code (`validation_failed`, `timeout`, `cancelled`, ...).
    pub code: String,
    /// The problem's structured details (the budget a refusal names, the fields a
    /// validation failure names), passed on with the message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<Value>,
}

/// Codes whose messages were written by a service for its caller, so they may be shown.
const FOR_CALLERS: [&str; 10] = [
    "bad_request",
    "validation_failed",
    "unauthorized",
    "forbidden",
    "not_found",
    "conflict",
    "payload_too_large",
    "rate_limited",
    "budget_exhausted",
    "cancelled",
];

impl ActivityError {
    pub fn retryable(code: &str, message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            retryable: true,
            code: code.into(),
            details: None,
        }
    }

    pub fn fatal(code: &str, message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            retryable: false,
            code: code.into(),
            details: None,
        }
    }

    /// The same error carrying a problem's details (nothing when they are null).
    pub fn with_details(mut self, details: Value) -> Self {
        self.details = (!details.is_null()).then_some(details);
        self
    }

    /// What a wait of a cancelled run returns.
    pub fn cancelled() -> Self {
        Self::fatal("cancelled", "the workflow was cancelled")
    }

    pub fn is_cancelled(&self) -> bool {
        self.code == "cancelled"
    }

    /// A value that does not decode as the type a step promised: a bug, not the
    /// caller's mistake, and never papered over with a default.
    pub(crate) fn undecodable(what: &str, error: &serde_json::Error) -> Self {
        Self::fatal("internal", format!("{what} does not decode: {error}"))
    }

    /// What a client (a watcher, `conversation.events`, an operator) may be told. The
    /// messages of refusals come from services' problems, written for callers;
    /// anything else (a database's or an engine's own words) goes to the log under a
    /// correlation id, and the client gets the id.
    pub fn public(&self) -> Value {
        if FOR_CALLERS.contains(&self.code.as_str()) {
            let mut public = serde_json::json!({ "code": self.code, "message": self.message });
            if let Some(details) = &self.details {
                public["details"] = details.clone();
            }
            return public;
        }
        let id = somagent_common::error::correlation_id();
        tracing::warn!(correlation_id = %id, code = %self.code, cause = %self.message, "a workflow step failed");
        let (code, message) = match self.code.as_str() {
            "timeout" => ("timeout", "the work took too long"),
            _ => ("unavailable", "the work failed"),
        };
        serde_json::json!({
            "code": code,
            "message": format!("{message} (correlation id {id})"),
            "correlation_id": id,
        })
    }

    /// [`ActivityError::public`] of a recorded error; whatever does not read as one is
    /// reported as a failure with nothing of it passed on.
    pub fn public_of(raw: &Value) -> Value {
        serde_json::from_value::<Self>(raw.clone())
            .unwrap_or_else(|_| Self::fatal("internal", raw.to_string()))
            .public()
    }
}

#[cfg(test)]
mod tests {
    use super::ActivityError;

    #[test]
    fn a_failures_own_words_never_reach_the_client() {
        let broken = ActivityError::retryable(
            "unavailable",
            "error returned from database: password authentication failed for user \"somagent\"",
        );
        let public = broken.public();
        assert!(!public.to_string().contains("database"), "{public}");
        let id = public["correlation_id"].as_str().unwrap();
        assert!(public["message"].as_str().unwrap().contains(id));
        // A refusal a service wrote for its caller is passed on as it is.
        let refused =
            ActivityError::fatal("forbidden", "this needs the capability `sessions:write`");
        assert_eq!(refused.public()["message"], refused.message.as_str());
        // ... with its details; an internal failure's details stay in the log.
        let exhausted = ActivityError::fatal("budget_exhausted", "budget `monthly` is spent")
            .with_details(serde_json::json!({"budget": {"name": "monthly"}}));
        assert_eq!(exhausted.public()["details"]["budget"]["name"], "monthly");
        let broken = broken.with_details(serde_json::json!({"host": "db.internal"}));
        assert!(!broken.public().to_string().contains("db.internal"));
        assert_eq!(ActivityError::cancelled().public()["code"], "cancelled");
        assert_eq!(
            ActivityError::public_of(&serde_json::json!("garbage"))["code"],
            "unavailable"
        );
    }
}
