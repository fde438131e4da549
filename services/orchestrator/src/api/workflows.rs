//! The operators' verbs on a tenant's workflow runs: list, describe, cancel, signal.
//! Only the tenant's admins (`tenant:admin`) may use them, and only on their own
//! tenant: the tenant is the caller's, never the request's, and the engine scopes every
//! verb to it, so another tenant's run is "not found". Requests are parsed here before
//! the engine is asked; the engine's refusals map to problems in `somagent-workflows`
//! (ended → 409, unknown → 404).

use serde_json::Value;
use somagent_common::auth::grpc::caller;
use somagent_common::auth::{Capability, Principal};
use somagent_common::error::{ApiError, ErrorCode};
use somagent_common::proto::orchestrator::v1 as pb;
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
    let mut filter = filter_of(principal.tenant.as_str(), request)?;
    let limit = filter.limit as usize;
    // One more than the page, to learn whether another page follows.
    filter.limit += 1;
    let mut runs = engine.list(&filter).await?;
    let next_cursor = if runs.len() > limit {
        runs.truncate(limit);
        runs.last().map(Cursor::after).unwrap_or_default()
    } else {
        String::new()
    };
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
    let view = engine.describe(principal.tenant.as_str(), id).await?;
    Ok(view_message(view))
}

#[tracing::instrument(skip_all, fields(tenant_id = principal.tenant.as_str()))]
pub async fn cancel(
    engine: &dyn Engine,
    principal: &Principal,
    request: pb::CancelWorkflowRequest,
) -> Result<pb::CancelWorkflowResponse, ApiError> {
    let id = run_id(&request.id)?;
    engine.cancel(principal.tenant.as_str(), id).await?;
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
    engine
        .signal(principal.tenant.as_str(), id, name, payload)
        .await?;
    tracing::info!(run = id, signal = name, operator = %principal.subject, "workflow run signalled by an operator");
    Ok(pb::SignalWorkflowResponse {
        id: id.to_owned(),
        name: name.to_owned(),
    })
}

fn filter_of(tenant: &str, r: pb::ListWorkflowsRequest) -> Result<RunFilter, ApiError> {
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
            let cursor = Cursor::parse(c)?;
            Some((cursor.created_at, cursor.id))
        }
    };
    Ok(RunFilter {
        tenant: tenant.to_owned(),
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

/// A page boundary: the `created_at` and id of the last run shown, which the next page
/// starts below (runs are listed newest first, ties by id). Opaque to clients:
/// base64url of `<created_at>:<id>`.
#[derive(Debug, PartialEq)]
struct Cursor {
    created_at: i64,
    id: String,
}

impl Cursor {
    fn after(run: &RunSummary) -> String {
        base64url::encode(format!("{}:{}", run.created_at, run.id).as_bytes())
    }

    fn parse(raw: &str) -> Result<Self, ApiError> {
        let bad = || ApiError::bad_request("`cursor` is not a cursor of this list");
        let text = base64url::decode(raw)
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .ok_or_else(bad)?;
        let (at, id) = text.split_once(':').ok_or_else(bad)?;
        let at: i64 = at.parse().map_err(|_| bad())?;
        if at < 0 || id.is_empty() || id.len() > MAX_ID {
            return Err(bad());
        }
        Ok(Self {
            created_at: at,
            id: id.to_owned(),
        })
    }
}

/// Unpadded base64url (RFC 4648 §5). Decoding takes only the canonical encoding, so a
/// cursor has one spelling.
mod base64url {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

    pub fn encode(bytes: &[u8]) -> String {
        let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
        for chunk in bytes.chunks(3) {
            let n = chunk
                .iter()
                .enumerate()
                .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
            for i in 0..=chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
            }
        }
        out
    }

    pub fn decode(text: &str) -> Option<Vec<u8>> {
        if text.len() % 4 == 1 {
            return None;
        }
        let mut out = Vec::with_capacity(text.len() / 4 * 3 + 2);
        for chunk in text.as_bytes().chunks(4) {
            let mut n = 0u32;
            for (i, c) in chunk.iter().enumerate() {
                let v = ALPHABET.iter().position(|a| a == c)? as u32;
                n |= v << (18 - 6 * i);
            }
            for i in 0..chunk.len() - 1 {
                out.push((n >> (16 - 8 * i)) as u8);
            }
        }
        (encode(&out) == text).then_some(out)
    }
}

/// Milliseconds since the epoch as RFC 3339; empty if out of range.
fn rfc3339_ms(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
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
            tenant: "t".into(),
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
            let raw = Cursor::after(&summary(1_767_225_600_123, id));
            assert!(
                raw.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            );
            assert_eq!(
                Cursor::parse(&raw).unwrap(),
                Cursor {
                    created_at: 1_767_225_600_123,
                    id: id.to_owned()
                }
            );
        }
        let not_cursors = [
            "%%%",
            "a",
            "bm9jb2xvbg",                            // "nocolon"
            &base64url::encode(b"abc:id"),           // not a time
            &base64url::encode(b"-5:id"),            // before the epoch
            &base64url::encode(b"12:"),              // no id
            &base64url::encode(&[0xff, 0xfe, b':']), // not UTF-8
            "MTI6aWQ=",                              // padded
            "MTI6aWR",                               // not canonical
        ];
        for raw in not_cursors {
            let error = Cursor::parse(raw).unwrap_err();
            assert_eq!(error.code, ErrorCode::BadRequest, "{raw}");
        }
    }

    #[test]
    fn base64url_round_trips_every_length() {
        let bytes: Vec<u8> = (0..=255).collect();
        for n in 0..bytes.len() {
            let text = base64url::encode(&bytes[..n]);
            assert_eq!(text.len(), (n * 4).div_ceil(3));
            assert_eq!(base64url::decode(&text).as_deref(), Some(&bytes[..n]));
        }
        assert_eq!(base64url::encode(b"\xfb\xff"), "-_8");
    }

    #[test]
    fn a_list_request_is_checked_field_by_field() {
        let field = |r: pb::ListWorkflowsRequest| {
            let e = filter_of("t", r).unwrap_err();
            (
                e.code,
                e.details["fields"]
                    .as_object()
                    .map(|f| f.keys().cloned().collect::<Vec<_>>()),
            )
        };
        let defaults = filter_of("t", pb::ListWorkflowsRequest::default()).unwrap();
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
