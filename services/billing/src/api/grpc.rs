//! Billing's gRPC surface: mapping only. Every call verifies the token it carries and
//! reads the caller's tenant alone.

use somagent_common::auth::Capability;
use somagent_common::auth::Principal;
use somagent_common::auth::grpc::caller;
use somagent_common::clock::unix_now_ms;
use somagent_common::error::{ApiError, ErrorCode};
use somagent_common::proto::billing::v1 as pb;
use somagent_common::proto::billing::v1::billing_service_server::BillingService;
use tonic::{Request, Response, Status};

use crate::budgets::{BudgetState, Budgets};
use crate::domain::budget::{Budget, BudgetInput, CallScope, Cost};
use crate::domain::grouping::parse_groups;
use crate::invoices::{Invoice, Invoices};
use crate::ledger::{Ledger, StoredEntry, UsageQuery, UsageRow};

/// The services that reserve for the calls they make, and what the user they act for
/// must be allowed to do for it (one of): a model call, a reader's search embedding
/// its query, a tool call.
const RESERVERS: &[(&str, &[Capability])] = &[
    (
        "service:slm",
        &[Capability::ModelsUse, Capability::MemoryRead],
    ),
    ("service:tool", &[Capability::ToolsInvoke]),
];

/// The longest period one query may cover: a usage query reads every entry in it.
const MAX_PERIOD_MS: i64 = 400 * 86_400_000;

pub struct BillingGrpc {
    pub ledger: Ledger,
    pub budgets: Budgets,
    pub invoices: Invoices,
}

fn invoice_message(i: Invoice) -> pb::Invoice {
    let totals = i
        .totals()
        .into_iter()
        .map(|(currency, amount_micros)| pb::InvoiceTotal {
            currency,
            amount_micros,
        })
        .collect();
    pb::Invoice {
        id: i.id,
        status: if i.closed { "closed" } else { "open" }.into(),
        period_start_ms: i.period_start_ms,
        period_end_ms: i.period_end_ms,
        cutoff_ms: i.cutoff_ms,
        lines: i
            .lines
            .into_iter()
            .map(|l| pb::InvoiceLine {
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
        totals,
    }
}

/// Only a service's token, meant for billing and acting for a user who may make the
/// call, may hold or settle that user's tenant's budgets: a user's own token (through
/// the gateway or not) may not.
fn reserver(principal: &Principal) -> Result<(), ApiError> {
    let allowed = principal.actor.as_deref().is_some_and(|actor| {
        RESERVERS.iter().any(|(service, caps)| {
            *service == actor && caps.iter().any(|c| principal.capabilities.contains(c))
        })
    });
    if allowed {
        Ok(())
    } else {
        Err(ApiError::new(
            ErrorCode::Forbidden,
            "only slm and the tool service reserve budgets, for the user they act for",
        ))
    }
}

fn budget_message(b: Budget) -> pb::Budget {
    pb::Budget {
        scope: b.scope.kind().to_owned(),
        scope_id: b.scope.id().to_owned(),
        metric: b.metric.as_str().to_owned(),
        period: b.period.as_str().to_owned(),
        name: b.name,
        limit: b.limit,
        soft_percent: b.soft_percent,
        currency: b.currency,
    }
}

fn state_message(s: BudgetState) -> pb::BudgetState {
    let remaining = (s.budget.limit - s.spent - s.reserved).max(0);
    pb::BudgetState {
        budget: Some(budget_message(s.budget)),
        period_label: s.period_label,
        resets_at_ms: s.resets_at_ms.unwrap_or(0),
        spent: s.spent,
        reserved: s.reserved,
        remaining,
    }
}

fn states(list: Vec<BudgetState>) -> pb::ListBudgetsResponse {
    pb::ListBudgetsResponse {
        budgets: list.into_iter().map(state_message).collect(),
    }
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

    async fn list_budgets(
        &self,
        request: Request<pb::ListBudgetsRequest>,
    ) -> Result<Response<pb::ListBudgetsResponse>, Status> {
        let principal = caller(&request)?;
        principal.require(Capability::BillingRead)?;
        Ok(Response::new(states(
            self.budgets.list(&principal.tenant).await?,
        )))
    }

    async fn put_budgets(
        &self,
        request: Request<pb::PutBudgetsRequest>,
    ) -> Result<Response<pb::ListBudgetsResponse>, Status> {
        let principal = caller(&request)?;
        if !principal.capabilities.contains(&Capability::BillingAdmin) {
            principal.require(Capability::TenantAdmin)?;
        }
        let inputs = request
            .into_inner()
            .budgets
            .into_iter()
            .map(|b| BudgetInput {
                name: b.name,
                scope: b.scope,
                scope_id: b.scope_id,
                metric: b.metric,
                period: b.period,
                limit: b.limit,
                soft_percent: b.soft_percent,
                currency: b.currency,
            })
            .collect();
        Ok(Response::new(states(
            self.budgets.put(&principal, inputs).await?,
        )))
    }

    async fn reserve(
        &self,
        request: Request<pb::ReserveRequest>,
    ) -> Result<Response<pb::ReserveResponse>, Status> {
        let principal = caller(&request)?;
        reserver(&principal)?;
        let r = request.into_inner();
        if r.tokens < 0 || r.cost_micros < 0 {
            return Err(ApiError::validation("tokens", "a cost is 0 or more").into());
        }
        let call = CallScope {
            user: principal.subject.clone(),
            project: r.project_id,
        };
        let cost = Cost {
            tokens: r.tokens,
            micros: r.cost_micros,
            currency: r.currency,
        };
        let held = self
            .budgets
            .reserve(&principal.tenant, &call, &cost, r.ttl_ms)
            .await
            .inspect_err(|e| {
                tracing::info!(call_id = %r.call_id, error = %e.message, "a call was refused by a budget");
            })?;
        Ok(Response::new(pb::ReserveResponse {
            reservation_id: held.id,
            budgets: held.budgets,
        }))
    }

    async fn settle(
        &self,
        request: Request<pb::SettleRequest>,
    ) -> Result<Response<pb::SettleResponse>, Status> {
        let principal = caller(&request)?;
        reserver(&principal)?;
        let r = request.into_inner();
        self.budgets
            .settle(
                &principal.tenant,
                &r.reservation_id,
                r.tokens,
                r.cost_micros,
            )
            .await?;
        Ok(Response::new(pb::SettleResponse {}))
    }

    async fn release(
        &self,
        request: Request<pb::ReleaseRequest>,
    ) -> Result<Response<pb::SettleResponse>, Status> {
        let principal = caller(&request)?;
        reserver(&principal)?;
        self.budgets
            .release(&principal.tenant, &request.into_inner().reservation_id)
            .await?;
        Ok(Response::new(pb::SettleResponse {}))
    }

    async fn list_invoices(
        &self,
        request: Request<pb::ListInvoicesRequest>,
    ) -> Result<Response<pb::ListInvoicesResponse>, Status> {
        let principal = caller(&request)?;
        principal.require(Capability::BillingRead)?;
        let invoices = self
            .invoices
            .list(&principal.tenant, unix_now_ms())
            .await
            .map_err(ApiError::internal)?;
        Ok(Response::new(pb::ListInvoicesResponse {
            invoices: invoices.into_iter().map(invoice_message).collect(),
        }))
    }

    async fn get_invoice(
        &self,
        request: Request<pb::GetInvoiceRequest>,
    ) -> Result<Response<pb::Invoice>, Status> {
        let principal = caller(&request)?;
        principal.require(Capability::BillingRead)?;
        let id = request.into_inner().id;
        let invoice = self
            .invoices
            .get(&principal.tenant, &id, unix_now_ms())
            .await
            .map_err(ApiError::internal)?
            .ok_or_else(|| ApiError::not_found("invoice"))?;
        Ok(Response::new(invoice_message(invoice)))
    }
}
