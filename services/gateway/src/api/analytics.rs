//! `/v1/analytics/*`: what the tenant's events add up to, in a bounded period
//! (`analytics:read`): usage over time, sessions and turns, policy decisions, model
//! upstreams, tools, workflow runs; the governance report and exports for its admins.

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde::Deserialize;
use somagent_common::error::ApiError;
use somagent_common::proto::analytics::v1 as pb;
use utoipa::IntoParams;

use super::Authenticated;
use super::forward::Answer;
use super::views::Problem;
use crate::Gateway;

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ReportParams {
    /// RFC 3339 or `YYYY-MM-DD`; the start of this month by default.
    from: Option<String>,
    /// RFC 3339 or `YYYY-MM-DD`; now by default. At most 400 days after `from`.
    to: Option<String>,
    /// `minute`, `hour`, `day` or `week`: a series (usage, sessions).
    interval: Option<String>,
    /// usage: comma-separated `kind`, `model`, `tool`, `user`, `session`, `upstream`, `project`.
    group_by: Option<String>,
    /// governance: `json` (default) or `markdown`.
    format: Option<String>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ExportParams {
    /// `usage`, `turns`, `decisions`, `model_failures`, `tool_calls`, `workflows`,
    /// `governance`, `events`.
    dataset: String,
    from: Option<String>,
    to: Option<String>,
    /// `csv` (default) or `jsonl`.
    format: Option<String>,
}

/// A report on the tenant's events: `usage`, `sessions`, `decisions`, `models`,
/// `tools`, `workflows`, or `governance` (tenant admins; `?format=markdown` for
/// Markdown).
#[utoipa::path(get, path = "/v1/analytics/{report}", tag = "analytics",
    params(("report" = String, Path, description = "usage, sessions, decisions, models, tools, workflows or governance"), ReportParams),
    responses((status = 200, description = "the report, JSON (or Markdown for the governance report)"),
              (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem),
              (status = 422, description = "a period over 400 days or ending before it starts, an unknown group or interval", body = Problem)),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn report(
    State(gateway): State<Gateway>,
    auth: Authenticated,
    Path(report): Path<String>,
    Query(params): Query<ReportParams>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (from_ms, to_ms) = super::billing::period(params.from.as_deref(), params.to.as_deref())?;
    let markdown = params.format.as_deref() == Some("markdown")
        || headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("text/markdown"));
    let request = pb::ReportRequest {
        report,
        from_ms,
        to_ms,
        interval: params.interval.unwrap_or_default(),
        group_by: params
            .group_by
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|g| !g.is_empty())
            .map(str::to_owned)
            .collect(),
    };
    let answer = gateway
        .analytics
        .clone()
        .report(auth.forward(request))
        .answer()
        .await?;
    if markdown && !answer.markdown.is_empty() {
        return Ok((
            [(header::CONTENT_TYPE, "text/markdown; charset=utf-8")],
            answer.markdown,
        )
            .into_response());
    }
    Ok(([(header::CONTENT_TYPE, "application/json")], answer.json).into_response())
}

/// A dataset of the tenant's events, oldest first, streamed as CSV or JSON lines
/// (tenant admins).
#[utoipa::path(get, path = "/v1/analytics/export", tag = "analytics",
    params(ExportParams),
    responses((status = 200, description = "text/csv or application/x-ndjson, streamed"),
              (status = 401, body = Problem), (status = 403, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn export(
    State(gateway): State<Gateway>,
    auth: Authenticated,
    Query(params): Query<ExportParams>,
) -> Result<Response, ApiError> {
    let (from_ms, to_ms) = super::billing::period(params.from.as_deref(), params.to.as_deref())?;
    let format = params.format.unwrap_or_else(|| "csv".into());
    let request = pb::ExportRequest {
        dataset: params.dataset.clone(),
        from_ms,
        to_ms,
        format: format.clone(),
    };
    let mut chunks = gateway
        .analytics
        .clone()
        .export(auth.forward(request))
        .answer()
        .await?;
    // The first chunk (or the refusal) comes before the response starts, so a bad
    // request is a problem, not a broken download.
    let first = match chunks.next().await {
        Some(Ok(chunk)) => Some(chunk.data),
        Some(Err(status)) => return Err(ApiError::from(status)),
        None => None,
    };
    let rest = chunks.map(|item| {
        item.map(|c| axum::body::Bytes::from(c.data))
            .map_err(|status| std::io::Error::other(status.message().to_owned()))
    });
    let body = futures::stream::iter(first.map(|d| Ok(axum::body::Bytes::from(d)))).chain(rest);
    let (content_type, extension) = if format == "jsonl" {
        ("application/x-ndjson", "jsonl")
    } else {
        ("text/csv; charset=utf-8", "csv")
    };
    let mut response = Body::from_stream(body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Ok(disposition) = HeaderValue::from_str(&format!(
        "attachment; filename=\"{}.{extension}\"",
        params
            .dataset
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect::<String>()
    )) {
        headers.insert(header::CONTENT_DISPOSITION, disposition);
    }
    Ok(response)
}
