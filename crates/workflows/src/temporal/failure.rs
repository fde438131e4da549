//! Our errors as Temporal failures and back: the code rides as the failure's type,
//! whether it may be retried as its non-retryable flag, and the problem's details as
//! the failure's first details payload (JSON).

use temporalio_common::protos::temporal::api::failure::v1::Failure;
use temporalio_common::protos::temporal::api::failure::v1::failure::FailureInfo;
use temporalio_sdk::ApplicationFailure;

use crate::error::ActivityError;

pub fn application_failure(error: &ActivityError) -> ApplicationFailure {
    ApplicationFailure::builder(error.message.clone())
        .type_name(error.code.clone())
        .non_retryable(!error.retryable)
        .maybe_details(error.details.clone())
        .build()
}

/// A Temporal failure as our error: the innermost application failure says what went
/// wrong; a cancellation on the way is a cancellation, a timeout a timeout.
pub fn activity_error(failure: &Failure) -> ActivityError {
    let mut current = Some(failure);
    let mut timed_out = None;
    while let Some(f) = current {
        match &f.failure_info {
            Some(FailureInfo::ApplicationFailureInfo(info)) => {
                return ActivityError {
                    message: f.message.clone(),
                    retryable: !info.non_retryable,
                    code: if info.r#type.is_empty() {
                        "internal".into()
                    } else {
                        info.r#type.clone()
                    },
                    details: info
                        .details
                        .as_ref()
                        .and_then(|d| d.payloads.first())
                        .and_then(|p| serde_json::from_slice(&p.data).ok()),
                };
            }
            Some(FailureInfo::CanceledFailureInfo(_)) => return ActivityError::cancelled(),
            Some(FailureInfo::TimeoutFailureInfo(_)) => {
                timed_out.get_or_insert_with(|| f.message.clone());
            }
            _ => {}
        }
        current = f.cause.as_deref();
    }
    match timed_out {
        Some(message) => ActivityError::fatal("timeout", format!("a step timed out: {message}")),
        None => ActivityError::fatal("internal", failure.message.clone()),
    }
}

/// The error of a failed SDK call that may carry a Temporal failure.
pub fn of(failure: Option<&Failure>, fallback: impl std::fmt::Display) -> ActivityError {
    match failure {
        Some(failure) => activity_error(failure),
        None => ActivityError::fatal("internal", fallback.to_string()),
    }
}
