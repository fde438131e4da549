//! Approvals of tool calls: what a person's answer may be, the states an approval goes
//! through, and the signal that carries the answer to the waiting turn.

use serde::{Deserialize, Serialize};
use somagent_common::error::ApiError;

/// The longest call id a model may name (OpenAI's are about 30 characters).
pub const MAX_CALL_ID: usize = 128;
/// The longest reason a person may give.
pub const MAX_REASON: usize = 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApprovalStatus {
    /// Waiting for a person.
    Pending,
    Approved,
    Denied,
    /// Nobody answered in time: a denial.
    Expired,
}

impl ApprovalStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Approved => "approved",
            Self::Denied => "denied",
            Self::Expired => "expired",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::Pending, Self::Approved, Self::Denied, Self::Expired]
            .into_iter()
            .find(|v| v.as_str() == s)
    }
}

/// A tool call that asked for a person's approval, and how that ended.
#[derive(Debug, Clone, PartialEq)]
pub struct Approval {
    pub session_id: String,
    pub turn: u32,
    pub call_id: String,
    pub tool: String,
    pub action: String,
    /// The model's arguments, as it wrote them.
    pub arguments: String,
    pub status: ApprovalStatus,
    /// The user whose turn asked.
    pub requested_by: String,
    pub requested_at: i64,
    pub expires_at: i64,
    pub resolved_by: String,
    pub reason: String,
    pub resolved_at: Option<i64>,
}

/// A person's answer, as the waiting turn receives it (the signal's payload).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    pub approved: bool,
    #[serde(default)]
    pub reason: String,
    /// Who answered.
    pub by: String,
}

/// The signal a turn waits on for call `call_id`.
pub fn signal_name(call_id: &str) -> String {
    format!("approval:{call_id}")
}

/// Checks a person's answer as it arrives.
pub fn check_answer(call_id: &str, reason: &str) -> Result<(), ApiError> {
    if call_id.is_empty() || call_id.len() > MAX_CALL_ID {
        return Err(ApiError::validation(
            "call_id",
            format!("is 1-{MAX_CALL_ID} bytes"),
        ));
    }
    if reason.chars().count() > MAX_REASON {
        return Err(ApiError::validation(
            "reason",
            format!("is at most {MAX_REASON} characters"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_bounded_and_name_the_field() {
        assert!(check_answer("call_1", "fine").is_ok());
        let long = "x".repeat(MAX_CALL_ID + 1);
        assert_eq!(
            check_answer(&long, "").unwrap_err().details["fields"]["call_id"],
            format!("is 1-{MAX_CALL_ID} bytes")
        );
        assert!(check_answer("", "").is_err());
        let essay = "é".repeat(MAX_REASON + 1);
        assert!(check_answer("c", &essay).unwrap_err().details["fields"]["reason"].is_string());
        assert!(check_answer("c", &"é".repeat(MAX_REASON)).is_ok());
    }

    #[test]
    fn statuses_round_trip() {
        for s in ["pending", "approved", "denied", "expired"] {
            assert_eq!(ApprovalStatus::parse(s).unwrap().as_str(), s);
        }
        assert_eq!(ApprovalStatus::parse("maybe"), None);
    }
}
