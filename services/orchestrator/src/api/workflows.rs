//! The operators' verbs on a tenant's workflow runs: list, describe, cancel, signal.
//! Only the tenant's admins (`tenant:admin`) may use them, and only on their own
//! tenant: the tenant is the caller's, never the request's, and the engine scopes every
//! verb to it, so another tenant's run is "not found". Requests are parsed here before
//! the engine is asked; the engine's refusals map to problems in `somagent-workflows`
//! (ended → 409, unknown → 404).

use serde_json::Value;
use somagent_common::auth::grpc::caller;
use somagent_common::auth::{Capability, Principal};
use somagent_common::clock::rfc3339_ms;
use somagent_common::error::{ApiError, ErrorCode};
use somagent_common::paging::{Cursor, PageSize};
use somagent_common::proto::orchestrator::v1 as pb;
use somagent_common::tenant::TenantId;
use somagent_workflows::{Engine, RunFilter, RunStatus, RunSummary, RunView, StepView};

const DEFAULT_LIMIT: u32 = 20;
const MAX_LIMIT: u32 = 100;
const MAX_ID: usize = 200;
const MAX_SIGNAL_NAME: usize = 64;
const MAX_PAYLOAD: usize = 64 * 1024;

/// The verified caller, if they operate their tenant.
pub fn operator<T>(request: &tonic::Request<T>) -> Result<Principal, tonic::Status> {
    let principal = caller(request)?;
    principal.require(Capability::TenantAdmin)?;
    Ok(principal)
}

#[tracing::instrument(skip_all, fields(tenant_id = principal.tenant.as_str()))]
pub async fn list(
    engine: &dyn Engine,
    principal: &Principal,
    request: pb::ListWorkflowsRequest,
) -> Result<pb::ListWorkflowsResponse, ApiError> {
    let mut filter = filter_of(&principal.tenant, request)?;
    let size = PageSize::clamped(filter.limit, MAX_LIMIT);
    filter.limit = size.rows_to_read() as u32;
    let runs = engine.list(&filter).await?;
    let (runs, next_cursor) = size.cut(runs, RunCursor::after);
    Ok(pb::ListWorkflowsResponse {
        runs: runs.into_iter().map(summary_message).collect(),
        next_cursor,
    })
}

#[tracing::instrument(skip_all, fields(tenant_id = principal.tenant.as_str()))]
pub async fn get(
    engine: &dyn Engine,
    principal: &Principal,
    request: pb::GetWorkflowRequest,
) -> Result<pb::WorkflowRun, ApiError> {
    let id = run_id(&request.id)?;
    let view = engine.describe(&principal.tenant, id).await?;
    Ok(view_message(view))
}

#[tracing::instrument(skip_all, fields(tenant_id = principal.tenant.as_str()))]
pub async fn cancel(
    engine: &dyn Engine,
    principal: &Principal,
    request: pb::CancelWorkflowRequest,
) -> Result<pb::CancelWorkflowResponse, ApiError> {
    let id = run_id(&request.id)?;
    engine.cancel(&principal.tenant, id).await?;
    tracing::info!(run = id, operator = %principal.subject, "workflow run cancelled by an operator");
    Ok(pb::CancelWorkflowResponse {
        id: id.to_owned(),
        status: "cancelling".into(),
    })
}

#[tracing::instrument(skip_all, fields(tenant_id = principal.tenant.as_str()))]
pub async fn signal(
    engine: &dyn Engine,
    principal: &Principal,
    request: pb::SignalWorkflowRequest,
) -> Result<pb::SignalWorkflowResponse, ApiError> {
    let id = run_id(&request.id)?;
    let name = signal_name(&request.name)?;
    let payload = payload(&request.payload_json)?;
    engine.signal(&principal.tenant, id, name, payload).await?;
    tracing::info!(run = id, signal = name, operator = %principal.subject, "workflow run signalled by an operator");
    Ok(pb::SignalWorkflowResponse {
        id: id.to_owned(),
        name: name.to_owned(),
    })
}

fn filter_of(tenant: &TenantId, r: pb::ListWorkflowsRequest) -> Result<RunFilter, ApiError> {
    let limit = match r.limit {
        None => DEFAULT_LIMIT,
        Some(n @ 1..=MAX_LIMIT) => n,
        Some(_) => {
            return Err(ApiError::validation("limit", format!("is 1-{MAX_LIMIT}")));
        }
    };
    let status = match r.status.as_str() {
        "" => None,
        s => Some(RunStatus::parse(s).ok_or_else(|| {
            ApiError::validation(
                "status",
                "is one of `running`, `completed`, `failed`, `cancelled`",
            )
        })?),
    };
    if r.kind.len() > MAX_ID {
        return Err(ApiError::validation(
            "kind",
            format!("is at most {MAX_ID} characters"),
        ));
    }
    let before = match r.cursor.as_str() {
        "" => None,
        c => {
            let cursor = RunCursor::parse(c)?;
            Some((cursor.created_at, cursor.id))
        }
    };
    Ok(RunFilter {
        tenant: tenant.clone(),
        kind: Some(r.kind).filter(|k| !k.is_empty()),
        status,
        before,
        limit,
    })
}

fn run_id(id: &str) -> Result<&str, ApiError> {
    if id.is_empty() || id.len() > MAX_ID {
        return Err(ApiError::validation(
            "id",
            format!("is 1-{MAX_ID} characters"),
        ));
    }
    Ok(id)
}

/// Signal names are the workflows' own vocabulary (`approval`, `plan.approved`): a
/// narrow alphabet keeps them safe to log and to put in a path.
fn signal_name(name: &str) -> Result<&str, ApiError> {
    let ok = (1..=MAX_SIGNAL_NAME).contains(&name.len())
        && name
            .bytes()
            .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'.' | b'-'));
    if !ok {
        return Err(ApiError::validation(
            "name",
            format!("is 1-{MAX_SIGNAL_NAME} of `a-z`, `0-9`, `_`, `.`, `-`"),
        ));
    }
    Ok(name)
}

/// The payload is kept in the journal until the run reads it, so it is bounded.
fn payload(json: &str) -> Result<Value, ApiError> {
    if json.len() > MAX_PAYLOAD {
        return Err(ApiError::new(
            ErrorCode::PayloadTooLarge,
            format!("a signal's payload is at most {} KiB", MAX_PAYLOAD / 1024),
        ));
    }
    if json.is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_str(json).map_err(|e| ApiError::validation("payload", e.to_string()))
}

/// Where the next page starts: the last run of this page (runs are listed newest
/// first, ties by id), as an opaque [`Cursor`].
#[derive(Debug, PartialEq)]
struct RunCursor {
    created_at: i64,
    id: String,
}

impl RunCursor {
    fn after(run: &RunSummary) -> String {
        Cursor::encode(&[&run.created_at.to_string(), &run.id])
    }

    fn parse(raw: &str) -> Result<Self, ApiError> {
        let bad = || ApiError::bad_request("`cursor` is not a cursor of this list");
        let fields = Cursor::decode(raw, 2).ok_or_else(bad)?;
        let at: i64 = fields[0].parse().map_err(|_| bad())?;
        let id = &fields[1];
        if at < 0 || id.is_empty() || id.len() > MAX_ID {
            return Err(bad());
        }
        Ok(Self {
            created_at: at,
            id: id.clone(),
        })
    }
}

fn json_text(value: Option<&Value>) -> String {
    value.map(Value::to_string).unwrap_or_default()
}

fn summary_message(s: RunSummary) -> pb::WorkflowRun {
    pb::WorkflowRun {
        id: s.id,
        kind: s.kind,
        status: s.status.as_str().to_owned(),
        parent_id: s.parent_id.unwrap_or_default(),
        created_at: rfc3339_ms(s.created_at),
        updated_at: rfc3339_ms(s.updated_at),
        ended_at: s.ended_at.map(rfc3339_ms).unwrap_or_default(),
        ..Default::default()
    }
}

fn step_message(s: StepView) -> pb::WorkflowStep {
    pb::WorkflowStep {
        seq: s.seq,
        kind: s.kind,
        name: s.name,
        status: s.status,
        attempts: s.attempts,
        started_at: s.started_at.map(rfc3339_ms).unwrap_or_default(),
        ended_at: s.ended_at.map(rfc3339_ms).unwrap_or_default(),
        error_json: json_text(s.error.as_ref()),
    }
}

fn view_message(v: RunView) -> pb::WorkflowRun {
    pb::WorkflowRun {
        steps: v.steps.into_iter().map(step_message).collect(),
        current_step: v.current_step.map(step_message),
        state_json: json_text(v.state.as_ref()),
        result_json: json_text(v.result.as_ref()),
        error_json: json_text(v.error.as_ref()),
        cancel_requested: v.cancel_requested,
        ..summary_message(v.summary)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(created_at: i64, id: &str) -> RunSummary {
        RunSummary {
            id: id.into(),
            kind: "session_turn".into(),
            tenant: TenantId::parse("t").unwrap(),
            status: RunStatus::Running,
            parent_id: None,
            created_at,
            updated_at: created_at,
            ended_at: None,
        }
    }

    #[test]
    fn a_cursor_names_the_run_it_follows_and_nothing_else_passes_as_one() {
        for id in [
            "a",
            "session-1-turn-2",
            "with:colons:in:it",
            "ünïcode",
            "xy",
        ] {
            let raw = RunCursor::after(&summary(1_767_225_600_123, id));
            assert!(
                raw.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            );
            assert_eq!(
                RunCursor::parse(&raw).unwrap(),
                RunCursor {
                    created_at: 1_767_225_600_123,
                    id: id.to_owned()
                }
            );
        }
        let not_cursors = [
            "%%%",
            "a",
            "bm9jb2xvbg",                    // "nocolon"
            &Cursor::encode(&["abc", "id"]), // not a time
            &Cursor::encode(&["-5", "id"]),  // before the epoch
            &Cursor::encode(&["12", ""]),    // no id
            &Cursor::encode(&["12"]),        // one field
            "MTIKaWQ=",                      // padded
            "MTIKaWR",                       // not canonical
        ];
        for raw in not_cursors {
            let error = RunCursor::parse(raw).unwrap_err();
            assert_eq!(error.code, ErrorCode::BadRequest, "{raw}");
        }
    }

    #[test]
    fn a_list_request_is_checked_field_by_field() {
        let tenant = TenantId::parse("t").unwrap();
        let field = |r: pb::ListWorkflowsRequest| {
            let e = filter_of(&tenant, r).unwrap_err();
            (
                e.code,
                e.details["fields"]
                    .as_object()
                    .map(|f| f.keys().cloned().collect::<Vec<_>>()),
            )
        };
        let defaults = filter_of(&tenant, pb::ListWorkflowsRequest::default()).unwrap();
        assert_eq!(
            (defaults.limit, defaults.kind, defaults.status),
            (20, None, None)
        );
        for limit in [0, 101] {
            let r = pb::ListWorkflowsRequest {
                limit: Some(limit),
                ..Default::default()
            };
            assert_eq!(
                field(r),
                (ErrorCode::ValidationFailed, Some(vec!["limit".into()]))
            );
        }
        let r = pb::ListWorkflowsRequest {
            status: "done".into(),
            ..Default::default()
        };
        assert_eq!(
            field(r),
            (ErrorCode::ValidationFailed, Some(vec!["status".into()]))
        );
        let r = pb::ListWorkflowsRequest {
            cursor: "nope!".into(),
            ..Default::default()
        };
        assert_eq!(field(r).0, ErrorCode::BadRequest);
    }

    #[test]
    fn signals_are_named_narrowly_and_carry_bounded_json() {
        for ok in ["approval", "plan.approved", "a-b_c.9"] {
            assert!(signal_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "Approval", "a b", "a/b", &"x".repeat(65)] {
            assert!(signal_name(bad).is_err(), "{bad}");
        }
        assert_eq!(payload("").unwrap(), Value::Null);
        assert_eq!(payload("{\"ok\":true}").unwrap()["ok"], true);
        assert_eq!(payload("{").unwrap_err().code, ErrorCode::ValidationFailed);
        let big = format!("\"{}\"", "x".repeat(MAX_PAYLOAD));
        assert_eq!(payload(&big).unwrap_err().code, ErrorCode::PayloadTooLarge);
    }

    #[test]
    fn times_keep_their_milliseconds() {
        assert_eq!(rfc3339_ms(1_767_225_600_123), "2026-01-01T00:00:00.123Z");
        assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00Z");
    }
}
