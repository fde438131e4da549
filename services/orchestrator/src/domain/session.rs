//! A session and the rules on what a client may put in one: its metadata, its model,
//! its capsule, the messages it sends and the cursor it pages messages with.

use serde_json::{Map, Value};
use somagent_common::error::ApiError;
use somagent_common::tenant::TenantId;

/// The longest message a user may send, in bytes.
pub const MAX_CONTENT: usize = 100_000;
/// The largest metadata object a session keeps, serialized.
const MAX_METADATA: usize = 16 * 1024;
/// The longest model name a session may ask for.
const MAX_MODEL: usize = 200;

#[derive(Debug, Clone, PartialEq)]
pub struct Session {
    pub id: String,
    pub tenant: TenantId,
    pub owner: String,
    pub status: String,
    pub capsule_id: String,
    pub model: String,
    pub metadata: Value,
    pub turns: u32,
    pub created_at: i64,
}

/// What a client asked for in a new session, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionRequest {
    pub model: String,
    pub metadata: Value,
    /// The capsule the session runs as; empty for none.
    pub capsule_id: String,
}

impl SessionRequest {
    /// Checks a request as it arrives: `metadata_json` empty or a JSON object of at most
    /// 16 KiB, a model name of at most 200 characters, a capsule id of the capsule
    /// alphabet (whether it is installed is the capsule repository's answer).
    pub fn parse(metadata_json: &str, model: String, capsule_id: &str) -> Result<Self, ApiError> {
        let metadata = if metadata_json.is_empty() {
            Value::Object(Map::new())
        } else {
            serde_json::from_str(metadata_json)
                .map_err(|e| ApiError::validation("metadata", e.to_string()))?
        };
        if !metadata.is_object() || metadata.to_string().len() > MAX_METADATA {
            return Err(ApiError::validation(
                "metadata",
                "is a JSON object of at most 16 KiB",
            ));
        }
        if model.len() > MAX_MODEL {
            return Err(ApiError::validation("model", "is at most 200 characters"));
        }
        if !capsule_id.is_empty() && !somagent_common::capsule::valid_id(capsule_id) {
            return Err(ApiError::validation(
                "capsule_id",
                "is a capsule id ([a-z0-9][a-z0-9_-]{1,63})",
            ));
        }
        Ok(Self {
            model,
            metadata,
            capsule_id: capsule_id.to_owned(),
        })
    }

    /// The new, idle session `owner` opens with this request.
    pub fn open(self, id: String, tenant: TenantId, owner: String, now: i64) -> Session {
        Session {
            id,
            tenant,
            owner,
            status: "idle".into(),
            capsule_id: self.capsule_id,
            model: self.model,
            metadata: self.metadata,
            turns: 0,
            created_at: now,
        }
    }
}

/// A message a user sends: not blank, at most [`MAX_CONTENT`] bytes.
pub fn check_content(content: &str) -> Result<(), ApiError> {
    if content.trim().is_empty() || content.len() > MAX_CONTENT {
        return Err(ApiError::validation(
            "content",
            format!("is 1-{MAX_CONTENT} characters"),
        ));
    }
    Ok(())
}

/// A cursor into a session's messages: the position of the last message read, or the
/// start when empty.
pub fn message_cursor(cursor: &str) -> Result<i64, ApiError> {
    if cursor.is_empty() {
        return Ok(0);
    }
    cursor
        .parse::<i64>()
        .ok()
        .filter(|position| *position >= 0)
        .ok_or_else(|| ApiError::validation("cursor", "is not a cursor of this list"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The one field a validation problem names.
    fn field_of(e: &ApiError) -> String {
        let fields = e.details["fields"]
            .as_object()
            .expect("a validation problem");
        assert_eq!(fields.len(), 1, "{:?}", e.details);
        fields.keys().next().unwrap().clone()
    }

    #[test]
    fn a_request_is_checked_field_by_field() {
        let ok = SessionRequest::parse(r#"{"team":"blue"}"#, "gpt".into(), "").unwrap();
        assert_eq!(ok.metadata["team"], "blue");
        let capsule = SessionRequest::parse("", String::new(), "research-assistant").unwrap();
        assert_eq!(capsule.capsule_id, "research-assistant");
        assert_eq!(
            SessionRequest::parse("", String::new(), "")
                .unwrap()
                .metadata,
            Value::Object(Map::new())
        );
        let long_model = "m".repeat(201);
        let big = format!(r#"{{"k":"{}"}}"#, "x".repeat(MAX_METADATA));
        for (metadata, model, capsule, field) in [
            ("[1]", "m", "", "metadata"),
            ("{not json", "m", "", "metadata"),
            (big.as_str(), "m", "", "metadata"),
            ("{}", long_model.as_str(), "", "model"),
            ("{}", "m", "Research Assistant", "capsule_id"),
        ] {
            let refused = SessionRequest::parse(metadata, model.into(), capsule).unwrap_err();
            assert_eq!(field_of(&refused), field, "{model} {capsule}");
        }
    }

    #[test]
    fn content_and_cursors_have_their_bounds() {
        assert!(check_content("hello").is_ok());
        for bad in ["  \n".to_owned(), "a".repeat(MAX_CONTENT + 1)] {
            assert_eq!(field_of(&check_content(&bad).unwrap_err()), "content");
        }
        assert_eq!(message_cursor("").unwrap(), 0);
        assert_eq!(message_cursor("42").unwrap(), 42);
        for bad in ["-1", "x", "4 2"] {
            assert_eq!(field_of(&message_cursor(bad).unwrap_err()), "cursor");
        }
    }
}
