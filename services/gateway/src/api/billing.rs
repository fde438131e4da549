//! `/v1/billing/*`: what the tenant's usage cost, from the ledger billing keeps of
//! every metered model, embedding and tool call (`billing:read`). Money is in integer
//! micro-units of its currency (1,000,000 = one unit), never floats.

use axum::Json;
use axum::extract::{Query, State};
use serde::{Deserialize, Serialize};
use somagent_common::clock::{rfc3339_ms, unix_now_ms};
use somagent_common::error::ApiError;
use somagent_common::proto::billing::v1 as pb;
use utoipa::{IntoParams, ToSchema};

use super::Authenticated;
use super::forward::Answer;
use super::views::Problem;
use crate::Gateway;

/// `?from=&to=`: a period, each end an RFC 3339 time or a `YYYY-MM-DD` date (UTC
/// midnight); from the start of this month until now by default.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UsageParams {
    from: Option<String>,
    to: Option<String>,
    /// Comma-separated, in order: `day`, `model`, `tool`, `user`, `session`,
    /// `project`, `kind`.
    group_by: Option<String>,
    /// Only this user's, model profile's, tool's or session's calls.
    user: Option<String>,
    model: Option<String>,
    tool: Option<String>,
    session_id: Option<String>,
}

/// `?from=&to=&limit=&after=` of `GET /v1/billing/entries`.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EntriesParams {
    from: Option<String>,
    to: Option<String>,
    /// 1..=1000, 100 by default.
    limit: Option<u32>,
    /// The `next` of the previous page.
    after: Option<String>,
}

/// One group's usage in one currency.
#[derive(Serialize, ToSchema)]
pub struct UsageLine {
    /// The value of each `group_by` field, by name.
    #[schema(value_type = Object)]
    group: serde_json::Map<String, serde_json::Value>,
    currency: String,
    calls: u64,
    prompt_tokens: u64,
    completion_tokens: u64,
    cost_micros: i64,
}

#[derive(Serialize, ToSchema)]
pub struct UsageReport {
    from: String,
    to: String,
    group_by: Vec<String>,
    lines: Vec<UsageLine>,
    /// The whole period, one line per currency.
    totals: Vec<UsageLine>,
}

/// A ledger entry: one metered call.
#[derive(Serialize, ToSchema)]
pub struct LedgerEntryView {
    event_id: String,
    /// `model`, `embedding` or `tool`.
    kind: String,
    call_id: String,
    user: String,
    session_id: String,
    project_id: String,
    /// The model profile or the tool.
    item: String,
    /// The upstream model, or the tool's action.
    detail: String,
    prompt_tokens: u64,
    completion_tokens: u64,
    /// Micro-units per 1,000 tokens when the call was made (per call for a tool).
    prompt_price_micros: i64,
    completion_price_micros: i64,
    cost_micros: i64,
    currency: String,
    /// When the call was made, and when the ledger took it in.
    event_time: String,
    ingested_at: String,
}

#[derive(Serialize, ToSchema)]
pub struct LedgerPage {
    entries: Vec<LedgerEntryView>,
    /// For the next page (`after`); absent on the last.
    #[serde(skip_serializing_if = "Option::is_none")]
    next: Option<String>,
}

/// A period's end as Unix milliseconds.
fn instant(field: &str, value: &str) -> Result<i64, ApiError> {
    let format = &time::format_description::well_known::Rfc3339;
    if let Ok(at) = time::OffsetDateTime::parse(value, format) {
        return Ok((at.unix_timestamp_nanos() / 1_000_000) as i64);
    }
    let date = value.split('-').collect::<Vec<_>>();
    let parsed = match date[..] {
        [y, m, d] if y.len() == 4 && m.len() == 2 && d.len() == 2 => (|| {
            let month = time::Month::try_from(m.parse::<u8>().ok()?).ok()?;
            time::Date::from_calendar_date(y.parse().ok()?, month, d.parse().ok()?).ok()
        })(),
        _ => None,
    };
    parsed
        .map(|d| (d.midnight().assume_utc().unix_timestamp_nanos() / 1_000_000) as i64)
        .ok_or_else(|| ApiError::validation(field, "is an RFC 3339 time or a YYYY-MM-DD date"))
}

/// The period asked for: `from` (start of this month by default) to `to` (now).
fn period(from: Option<&str>, to: Option<&str>) -> Result<(i64, i64), ApiError> {
    let now = unix_now_ms();
    let to = match to {
        Some(t) => instant("to", t)?,
        None => now + 1,
    };
    let from = match from {
        Some(f) => instant("from", f)?,
        None => {
            let today = time::OffsetDateTime::now_utc().date();
            let first = today.replace_day(1).unwrap_or(today);
            (first.midnight().assume_utc().unix_timestamp_nanos() / 1_000_000) as i64
        }
    };
    Ok((from, to))
}

fn line(groups: &[String], row: pb::UsageRow) -> UsageLine {
    UsageLine {
        group: groups
            .iter()
            .cloned()
            .zip(row.group.into_iter().map(serde_json::Value::String))
            .collect(),
        currency: row.currency,
        calls: row.calls,
        prompt_tokens: row.prompt_tokens,
        completion_tokens: row.completion_tokens,
        cost_micros: row.cost_micros,
    }
}

/// The tenant's usage in a period, grouped: calls, tokens and cost per currency.
#[utoipa::path(get, path = "/v1/billing/usage", tag = "billing",
    params(UsageParams),
    responses((status = 200, body = UsageReport), (status = 401, body = Problem), (status = 403, body = Problem),
              (status = 422, description = "an unknown `group_by` field, a period that ends before it starts or is over 400 days", body = Problem)),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn usage(
    State(gateway): State<Gateway>,
    auth: Authenticated,
    Query(params): Query<UsageParams>,
) -> Result<Json<UsageReport>, ApiError> {
    let (from_ms, to_ms) = period(params.from.as_deref(), params.to.as_deref())?;
    let group_by: Vec<String> = params
        .group_by
        .as_deref()
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|g| !g.is_empty())
        .map(str::to_owned)
        .collect();
    let request = pb::UsageRequest {
        from_ms,
        to_ms,
        group_by: group_by.clone(),
        user: params.user.unwrap_or_default(),
        model: params.model.unwrap_or_default(),
        tool: params.tool.unwrap_or_default(),
        session_id: params.session_id.unwrap_or_default(),
    };
    let answer = gateway
        .billing
        .clone()
        .usage(auth.forward(request))
        .answer()
        .await?;
    Ok(Json(UsageReport {
        from: rfc3339_ms(from_ms),
        to: rfc3339_ms(to_ms),
        lines: answer
            .rows
            .into_iter()
            .map(|r| line(&group_by, r))
            .collect(),
        totals: answer.totals.into_iter().map(|r| line(&[], r)).collect(),
        group_by,
    }))
}

/// The ledger: every metered call in a period, oldest first, with the prices it was
/// charged at.
#[utoipa::path(get, path = "/v1/billing/entries", tag = "billing",
    params(EntriesParams),
    responses((status = 200, body = LedgerPage), (status = 401, body = Problem), (status = 403, body = Problem),
              (status = 422, body = Problem)),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn entries(
    State(gateway): State<Gateway>,
    auth: Authenticated,
    Query(params): Query<EntriesParams>,
) -> Result<Json<LedgerPage>, ApiError> {
    let (from_ms, to_ms) = period(params.from.as_deref(), params.to.as_deref())?;
    let request = pb::ListEntriesRequest {
        from_ms,
        to_ms,
        limit: params.limit.unwrap_or(0),
        after: params.after.unwrap_or_default(),
    };
    let answer = gateway
        .billing
        .clone()
        .list_entries(auth.forward(request))
        .answer()
        .await?;
    Ok(Json(LedgerPage {
        entries: answer
            .entries
            .into_iter()
            .map(|e| LedgerEntryView {
                event_id: e.event_id,
                kind: e.kind,
                call_id: e.call_id,
                user: e.user,
                session_id: e.session_id,
                project_id: e.project_id,
                item: e.item,
                detail: e.detail,
                prompt_tokens: e.prompt_tokens,
                completion_tokens: e.completion_tokens,
                prompt_price_micros: e.prompt_price_micros_per_1k,
                completion_price_micros: e.completion_price_micros_per_1k,
                cost_micros: e.cost_micros,
                currency: e.currency,
                event_time: rfc3339_ms(e.event_time_ms),
                ingested_at: rfc3339_ms(e.ingested_at_ms),
            })
            .collect(),
        next: Some(answer.next).filter(|n| !n.is_empty()),
    }))
}
