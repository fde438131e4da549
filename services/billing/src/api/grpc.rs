//! Billing's gRPC surface: mapping only. Every call verifies the token it carries and
//! reads the caller's tenant alone.

use somagent_common::auth::Capability;
use somagent_common::auth::grpc::caller;
use somagent_common::error::ApiError;
use somagent_common::proto::billing::v1 as pb;
use somagent_common::proto::billing::v1::billing_service_server::BillingService;
use tonic::{Request, Response, Status};

use crate::domain::grouping::parse_groups;
use crate::ledger::{Ledger, StoredEntry, UsageQuery, UsageRow};

/// The longest period one query may cover: a usage query reads every entry in it.
const MAX_PERIOD_MS: i64 = 400 * 86_400_000;

pub struct BillingGrpc {
    pub ledger: Ledger,
}

fn period(from_ms: i64, to_ms: i64) -> Result<(i64, i64), ApiError> {
    if from_ms < 0 || to_ms <= from_ms {
        return Err(ApiError::validation("to", "is after `from`"));
    }
    if to_ms - from_ms > MAX_PERIOD_MS {
        return Err(ApiError::validation(
            "to",
            "is at most 400 days after `from`",
        ));
    }
    Ok((from_ms, to_ms))
}

fn row_message(r: UsageRow) -> pb::UsageRow {
    pb::UsageRow {
        group: r.group,
        currency: r.currency,
        calls: r.calls,
        prompt_tokens: r.prompt_tokens,
        completion_tokens: r.completion_tokens,
        cost_micros: r.cost_micros,
    }
}

fn entry_message(stored: StoredEntry) -> pb::Entry {
    let e = stored.entry;
    pb::Entry {
        event_id: e.event_id,
        kind: e.kind.as_str().to_owned(),
        call_id: e.call_id,
        user: e.user,
        session_id: e.session_id,
        project_id: e.project_id,
        item: e.item,
        detail: e.detail,
        prompt_tokens: e.prompt_tokens,
        completion_tokens: e.completion_tokens,
        prompt_price_micros_per_1k: e.prompt_price_micros,
        completion_price_micros_per_1k: e.completion_price_micros,
        cost_micros: e.cost_micros,
        currency: e.currency,
        event_time_ms: e.event_time_ms,
        ingested_at_ms: stored.ingested_at_ms,
    }
}

#[tonic::async_trait]
impl BillingService for BillingGrpc {
    async fn usage(
        &self,
        request: Request<pb::UsageRequest>,
    ) -> Result<Response<pb::UsageResponse>, Status> {
        let principal = caller(&request)?;
        principal.require(Capability::BillingRead)?;
        let r = request.into_inner();
        let (from_ms, to_ms) = period(r.from_ms, r.to_ms)?;
        let groups =
            parse_groups(&r.group_by).map_err(|why| ApiError::validation("group_by", why))?;
        let query = UsageQuery {
            from_ms,
            to_ms,
            groups,
            user: r.user,
            model: r.model,
            tool: r.tool,
            session_id: r.session_id,
        };
        let (rows, totals) = self
            .ledger
            .usage(&principal.tenant, &query)
            .await
            .map_err(ApiError::internal)?;
        Ok(Response::new(pb::UsageResponse {
            rows: rows.into_iter().map(row_message).collect(),
            totals: totals.into_iter().map(row_message).collect(),
        }))
    }

    async fn list_entries(
        &self,
        request: Request<pb::ListEntriesRequest>,
    ) -> Result<Response<pb::ListEntriesResponse>, Status> {
        let principal = caller(&request)?;
        principal.require(Capability::BillingRead)?;
        let r = request.into_inner();
        let (from_ms, to_ms) = period(r.from_ms, r.to_ms)?;
        let limit = match r.limit {
            0 => 100,
            n if n <= 1000 => n,
            _ => return Err(ApiError::validation("limit", "is at most 1000").into()),
        };
        let after = if r.after.is_empty() {
            None
        } else {
            let (time, id) = r
                .after
                .split_once(':')
                .and_then(|(t, id)| Some((t.parse::<i64>().ok()?, id.to_owned())))
                .ok_or_else(|| ApiError::validation("after", "is the `next` of a page"))?;
            Some((time, id))
        };
        let entries = self
            .ledger
            .entries(&principal.tenant, from_ms, to_ms, after, limit)
            .await
            .map_err(ApiError::internal)?;
        let next = if entries.len() == limit as usize {
            entries
                .last()
                .map(|e| format!("{}:{}", e.entry.event_time_ms, e.entry.event_id))
                .unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(pb::ListEntriesResponse {
            entries: entries.into_iter().map(entry_message).collect(),
            next,
        }))
    }
}
