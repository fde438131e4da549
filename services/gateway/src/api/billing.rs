//! `/v1/billing/*`: what the tenant's usage cost, from the ledger billing keeps of
//! every metered model, embedding and tool call (`billing:read`). Money is in integer
//! micro-units of its currency (1,000,000 = one unit), never floats.

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use somagent_common::clock::{rfc3339_ms, unix_now_ms};
use somagent_common::error::ApiError;
use somagent_common::proto::billing::v1 as pb;
use utoipa::{IntoParams, ToSchema};

use super::Authenticated;
use super::body::json_body;
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
pub(super) fn period(from: Option<&str>, to: Option<&str>) -> Result<(i64, i64), ApiError> {
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

/// A budget: a limit on what the tenant, one user or one project may use per period.
#[derive(Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BudgetView {
    /// Unique in the tenant; what a refusal (402) names.
    name: String,
    /// `tenant`, `user` or `project`.
    scope: String,
    /// The user's subject or the project's id; absent for `tenant`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    scope_id: String,
    /// `tokens`, or `money` in micro-units of `currency`.
    metric: String,
    /// `day` or `month` (UTC calendar), or `total`.
    period: String,
    limit: i64,
    /// Percent of the limit at which the tenant's admins are notified (80 by default).
    #[serde(default)]
    soft_percent: u32,
    /// For `money`: the currency counted (USD by default).
    #[serde(default)]
    currency: String,
}

/// A budget and where it stands this period.
#[derive(Serialize, ToSchema)]
pub struct BudgetStatus {
    #[serde(flatten)]
    budget: BudgetView,
    /// This period: `2026-12`, `2026-12-06` or `total`.
    period_label: String,
    /// When the period ends and the spend starts again from 0; absent for `total`.
    #[serde(skip_serializing_if = "Option::is_none")]
    resets_at: Option<String>,
    /// Settled use this period.
    spent: i64,
    /// Held by calls in flight.
    reserved: i64,
    remaining: i64,
}

#[derive(Serialize, ToSchema)]
pub struct BudgetList {
    budgets: Vec<BudgetStatus>,
}

/// The whole set of the tenant's budgets, replacing the one before.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BudgetSet {
    budgets: Vec<BudgetView>,
}

fn budget_list(answer: pb::ListBudgetsResponse) -> BudgetList {
    BudgetList {
        budgets: answer
            .budgets
            .into_iter()
            .filter_map(|s| {
                let b = s.budget?;
                Some(BudgetStatus {
                    budget: BudgetView {
                        name: b.name,
                        scope: b.scope,
                        scope_id: b.scope_id,
                        metric: b.metric,
                        period: b.period,
                        limit: b.limit,
                        soft_percent: b.soft_percent,
                        currency: b.currency,
                    },
                    period_label: s.period_label,
                    resets_at: (s.resets_at_ms > 0).then(|| rfc3339_ms(s.resets_at_ms)),
                    spent: s.spent,
                    reserved: s.reserved,
                    remaining: s.remaining,
                })
            })
            .collect(),
    }
}

/// The tenant's budgets, each with what it spent and holds reserved this period.
#[utoipa::path(get, path = "/v1/billing/budgets", tag = "billing",
    responses((status = 200, body = BudgetList), (status = 401, body = Problem), (status = 403, body = Problem)),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn budgets(
    State(gateway): State<Gateway>,
    auth: Authenticated,
) -> Result<Json<BudgetList>, ApiError> {
    let answer = gateway
        .billing
        .clone()
        .list_budgets(auth.forward(pb::ListBudgetsRequest {}))
        .answer()
        .await?;
    Ok(Json(budget_list(answer)))
}

/// Replaces the tenant's budgets (`tenant:admin` or `billing.admin`). Before every model
/// and tool call its largest cost is held against each budget it falls under; a call
/// that does not fit is refused with a 402 naming the budget. A budget whose name or
/// limit changes keeps what it spent this period. Audited.
#[utoipa::path(put, path = "/v1/billing/budgets", tag = "billing",
    request_body = BudgetSet,
    responses((status = 200, body = BudgetList), (status = 401, body = Problem), (status = 403, body = Problem),
              (status = 422, description = "a field is wrong (`budgets[i].field`), two budgets share a name or count the same thing", body = Problem)),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn put_budgets(
    State(gateway): State<Gateway>,
    auth: Authenticated,
    body: Result<Json<BudgetSet>, JsonRejection>,
) -> Result<Json<BudgetList>, ApiError> {
    let set = json_body(body)?;
    let request = pb::PutBudgetsRequest {
        budgets: set
            .budgets
            .into_iter()
            .map(|b| pb::Budget {
                name: b.name,
                scope: b.scope,
                scope_id: b.scope_id,
                metric: b.metric,
                period: b.period,
                limit: b.limit,
                soft_percent: b.soft_percent,
                currency: b.currency,
            })
            .collect(),
    };
    let answer = gateway
        .billing
        .clone()
        .put_budgets(auth.forward(request))
        .answer()
        .await?;
    Ok(Json(budget_list(answer)))
}

/// One line of an invoice: a model profile's or tool's use in the month.
#[derive(Serialize, ToSchema)]
pub struct InvoiceLineView {
    /// `model`, `embedding` or `tool`.
    kind: String,
    /// The model profile or the tool.
    item: String,
    currency: String,
    /// Usage from an earlier month that reached the ledger after that month's invoice
    /// closed.
    late: bool,
    calls: u64,
    prompt_tokens: u64,
    completion_tokens: u64,
    amount_micros: i64,
}

#[derive(Serialize, ToSchema)]
pub struct InvoiceTotalView {
    currency: String,
    amount_micros: i64,
}

/// A month's invoice.
#[derive(Serialize, ToSchema)]
pub struct InvoiceView {
    /// The month, `YYYY-MM`.
    id: String,
    /// `open` (the month's figures so far) or `closed` (final: it never changes).
    status: String,
    period_start: String,
    period_end: String,
    /// When it closed, or (open) the moment its figures are from.
    as_of: String,
    lines: Vec<InvoiceLineView>,
    totals: Vec<InvoiceTotalView>,
}

#[derive(Serialize, ToSchema)]
pub struct InvoiceList {
    invoices: Vec<InvoiceView>,
}

/// `?format=csv` for CSV (as does `Accept: text/csv`).
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct InvoiceFormat {
    /// `json` (default) or `csv`.
    format: Option<String>,
}

fn invoice_view(i: pb::Invoice) -> InvoiceView {
    InvoiceView {
        id: i.id,
        status: i.status,
        period_start: rfc3339_ms(i.period_start_ms),
        period_end: rfc3339_ms(i.period_end_ms),
        as_of: rfc3339_ms(i.cutoff_ms),
        lines: i
            .lines
            .into_iter()
            .map(|l| InvoiceLineView {
                kind: l.kind,
                item: l.item,
                currency: l.currency,
                late: l.late,
                calls: l.calls,
                prompt_tokens: l.prompt_tokens,
                completion_tokens: l.completion_tokens,
                amount_micros: l.amount_micros,
            })
            .collect(),
        totals: i
            .totals
            .into_iter()
            .map(|t| InvoiceTotalView {
                currency: t.currency,
                amount_micros: t.amount_micros,
            })
            .collect(),
    }
}

/// The tenant's invoices, newest first: one per month since its first usage, open
/// until an hour after the month ends, then closed and final.
#[utoipa::path(get, path = "/v1/billing/invoices", tag = "billing",
    responses((status = 200, body = InvoiceList), (status = 401, body = Problem), (status = 403, body = Problem)),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn invoices(
    State(gateway): State<Gateway>,
    auth: Authenticated,
) -> Result<Json<InvoiceList>, ApiError> {
    let answer = gateway
        .billing
        .clone()
        .list_invoices(auth.forward(pb::ListInvoicesRequest {}))
        .answer()
        .await?;
    Ok(Json(InvoiceList {
        invoices: answer.invoices.into_iter().map(invoice_view).collect(),
    }))
}

/// One month's invoice (`2026-11`): lines per model profile and tool with calls,
/// tokens and amount, totals per currency; as JSON, or as CSV with `?format=csv` or
/// `Accept: text/csv`.
#[utoipa::path(get, path = "/v1/billing/invoices/{id}", tag = "billing",
    params(("id" = String, Path, description = "the month, YYYY-MM"), InvoiceFormat),
    responses((status = 200, body = InvoiceView, content_type = "application/json"),
              (status = 200, description = "the invoice as CSV", content_type = "text/csv"),
              (status = 401, body = Problem), (status = 403, body = Problem),
              (status = 404, description = "no invoice for that month", body = Problem)),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn invoice(
    State(gateway): State<Gateway>,
    auth: Authenticated,
    Path(id): Path<String>,
    Query(format): Query<InvoiceFormat>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let csv = match format.format.as_deref() {
        Some("csv") => true,
        Some("json") => false,
        Some(_) => return Err(ApiError::validation("format", "is json or csv")),
        None => headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("text/csv")),
    };
    let answer = gateway
        .billing
        .clone()
        .get_invoice(auth.forward(pb::GetInvoiceRequest { id }))
        .answer()
        .await?;
    if !csv {
        return Ok(Json(invoice_view(answer)).into_response());
    }
    let filename = format!("invoice-{}.csv", answer.id);
    let body = invoice_csv(&answer);
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{filename}\""),
            ),
        ],
        body,
    )
        .into_response())
}

/// RFC 4180 rows, one per line then one total per currency; a cell a spreadsheet would
/// take for a formula is prefixed with `'`.
fn invoice_csv(i: &pb::Invoice) -> String {
    let mut out = String::from(
        "invoice,status,kind,item,late,currency,calls,prompt_tokens,completion_tokens,amount_micros\r\n",
    );
    let mut row = |cells: [String; 10]| {
        let cells: Vec<String> = cells.iter().map(|c| csv_cell(c)).collect();
        out.push_str(&cells.join(","));
        out.push_str("\r\n");
    };
    for l in &i.lines {
        row([
            i.id.clone(),
            i.status.clone(),
            l.kind.clone(),
            l.item.clone(),
            l.late.to_string(),
            l.currency.clone(),
            l.calls.to_string(),
            l.prompt_tokens.to_string(),
            l.completion_tokens.to_string(),
            l.amount_micros.to_string(),
        ]);
    }
    for t in &i.totals {
        row([
            i.id.clone(),
            i.status.clone(),
            "total".into(),
            String::new(),
            String::new(),
            t.currency.clone(),
            String::new(),
            String::new(),
            String::new(),
            t.amount_micros.to_string(),
        ]);
    }
    out
}

fn csv_cell(value: &str) -> String {
    let formula =
        value.starts_with(['=', '+', '-', '@', '\t', '\r']) && value.parse::<i64>().is_err();
    let value = if formula {
        format!("'{value}")
    } else {
        value.to_owned()
    };
    if value.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", value.replace('"', "\"\""))
    } else {
        value
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_quotes_cells_and_defuses_formulas() {
        let invoice = pb::Invoice {
            id: "2026-11".into(),
            status: "closed".into(),
            lines: vec![pb::InvoiceLine {
                kind: "tool".into(),
                item: "=HYPERLINK(\"x\"),y".into(),
                currency: "USD".into(),
                calls: 2,
                amount_micros: -5,
                ..Default::default()
            }],
            totals: vec![pb::InvoiceTotal {
                currency: "USD".into(),
                amount_micros: -5,
            }],
            ..Default::default()
        };
        let text = invoice_csv(&invoice);
        let lines: Vec<&str> = text.split("\r\n").collect();
        assert_eq!(
            lines[1],
            "2026-11,closed,tool,\"'=HYPERLINK(\"\"x\"\"),y\",false,USD,2,0,0,-5"
        );
        assert_eq!(lines[2], "2026-11,closed,total,,,USD,,,,-5");
    }
}
