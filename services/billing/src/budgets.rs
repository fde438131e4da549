//! Budgets in use: a tenant's definitions (in the database, cached here), reservations
//! weighed against the counters, settlements made durable with their threshold
//! notifications, and the expiry of reservations whose caller went away.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use serde_json::json;
use somagent_common::audit::AuditRecord;
use somagent_common::auth::Principal;
use somagent_common::clock::unix_now_ms;
use somagent_common::error::{ApiError, ErrorCode};
use somagent_common::infra::cache::Cache;
use somagent_common::infra::db::{Db, DbError, Migration};
use somagent_common::infra::events::{Envelope, topics};
use somagent_common::infra::outbox::Outbox;
use somagent_common::tenant::TenantId;
use sqlx::Row;
use tokio_util::sync::CancellationToken;

use crate::counters::{Counters, Line, Moved, Reserved};
use crate::domain::budget::{
    Budget, BudgetInput, CallScope, Cost, Metric, Period, Scope, Threshold, parse_budgets,
};

pub const MIGRATION: Migration =
    Migration::portable(3, "budgets", include_str!("../migrations/0003_budgets.sql"));

/// How long a tenant's definitions are used before they are read again (a change on
/// another replica is also announced at once over the cache).
const DEFINITIONS_TTL: Duration = Duration::from_secs(30);
const CHANGED_CHANNEL: &str = "billing.budgets.changed";
pub const DEFAULT_TTL_MS: u32 = 600_000;
const TTL_RANGE_MS: std::ops::RangeInclusive<u32> = 1_000..=3_600_000;
/// How long a settlement's id is kept to refuse a second settle: longer than a
/// reservation (and its expiry) lives.
const SETTLEMENTS_KEPT_MS: i64 = 2 * 86_400_000;

/// Each tenant's budgets, and when they were read.
type Definitions = HashMap<TenantId, (Instant, Arc<Vec<Budget>>)>;

/// A budget and where it stands this period.
#[derive(Debug, Clone)]
pub struct BudgetState {
    pub budget: Budget,
    pub period_label: String,
    pub resets_at_ms: Option<i64>,
    pub spent: i64,
    pub reserved: i64,
}

/// A reservation held: its id and the budgets it weighs on.
#[derive(Debug, Clone, Default)]
pub struct Held {
    pub id: String,
    pub budgets: Vec<String>,
}

#[derive(Clone)]
pub struct Budgets {
    db: Db,
    counters: Counters,
    outbox: Outbox,
    cache: Cache,
    definitions: Arc<Mutex<Definitions>>,
    /// Reservations refused, by the refusing budget's scope.
    refusals: Family<RefusalLabels, Counter>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefusalLabels {
    scope: &'static str,
}

impl Budgets {
    pub fn new(db: Db, counters: Counters, outbox: Outbox, cache: Cache) -> Self {
        Self {
            db,
            counters,
            outbox,
            cache,
            definitions: Arc::default(),
            refusals: Family::default(),
        }
    }

    /// Counts refusals on `metrics` (`budget_refusals`, by scope) from now on.
    pub fn observed_by(self, metrics: &somagent_common::metrics::Metrics) -> Self {
        metrics.register(
            "budget_refusals",
            "Reservations refused because a budget had no room, by the budget's scope (tenant, user, project)",
            self.refusals.clone(),
        );
        self
    }

    pub fn engine(&self) -> &'static str {
        self.counters.engine()
    }

    /// The tenant's budgets, from the cache of definitions when fresh.
    async fn definitions(&self, tenant: &TenantId) -> Result<Arc<Vec<Budget>>, ApiError> {
        if let Some((at, budgets)) = self.lock_definitions().get(tenant)
            && at.elapsed() < DEFINITIONS_TTL
        {
            return Ok(budgets.clone());
        }
        let budgets = Arc::new(
            self.read_definitions(tenant)
                .await
                .map_err(ApiError::internal)?,
        );
        self.lock_definitions()
            .insert(tenant.clone(), (Instant::now(), budgets.clone()));
        Ok(budgets)
    }

    fn lock_definitions(&self) -> std::sync::MutexGuard<'_, Definitions> {
        self.definitions.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn read_definitions(&self, tenant: &TenantId) -> Result<Vec<Budget>, DbError> {
        let rows = sqlx::query(
            "SELECT name, scope, scope_id, metric, period, limit_amount, soft_percent, currency \
             FROM billing_budgets WHERE tenant_id = $1 ORDER BY position",
        )
        .bind(tenant.as_str())
        .fetch_all(self.db.pool())
        .await?;
        let inputs = rows
            .iter()
            .map(|r| {
                Ok(BudgetInput {
                    name: r.try_get(0)?,
                    scope: r.try_get(1)?,
                    scope_id: r.try_get(2)?,
                    metric: r.try_get(3)?,
                    period: r.try_get(4)?,
                    limit: r.try_get(5)?,
                    soft_percent: r.try_get::<i64, _>(6)? as u32,
                    currency: r.try_get(7)?,
                })
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()?;
        parse_budgets(inputs).map_err(|e| DbError::Invalid(format!("{}: {}", e.field, e.message)))
    }

    /// Drops cached definitions when any replica announces a change.
    pub fn follow_changes(&self, stopping: CancellationToken) -> impl Future<Output = ()> + use<> {
        let mut changes = self.cache.listen(CHANGED_CHANNEL);
        let definitions = self.definitions.clone();
        async move {
            loop {
                tokio::select! {
                    () = stopping.cancelled() => return,
                    change = changes.recv() => match change {
                        Some((_, tenant)) => {
                            let tenant = String::from_utf8_lossy(&tenant).into_owned();
                            definitions
                                .lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .retain(|t, _| t.as_str() != tenant);
                        }
                        None => return,
                    },
                }
            }
        }
    }

    /// Where each of the tenant's budgets stands now.
    pub async fn list(&self, tenant: &TenantId) -> Result<Vec<BudgetState>, ApiError> {
        let budgets = self.definitions(tenant).await?;
        let now = unix_now_ms();
        let windows: Vec<_> = budgets.iter().map(|b| b.period.window(now)).collect();
        let counters: Vec<String> = budgets
            .iter()
            .zip(&windows)
            .map(|(b, w)| counter(tenant, b, &w.label))
            .collect();
        let live = self
            .counters
            .read(&counters)
            .await
            .map_err(|e| ApiError::unavailable("the budget counters are unavailable", e))?;
        let mut out = Vec::with_capacity(budgets.len());
        for ((budget, window), (name, live)) in
            budgets.iter().zip(windows).zip(counters.iter().zip(live))
        {
            let (spent, reserved) = match live {
                Some(counts) => counts,
                None => (
                    self.durable_spent(name).await.map_err(ApiError::internal)?,
                    0,
                ),
            };
            out.push(BudgetState {
                budget: budget.clone(),
                period_label: window.label,
                resets_at_ms: window.ends_at_ms,
                spent,
                reserved,
            });
        }
        Ok(out)
    }

    /// Replaces the tenant's budgets, audited; where each stands afterwards.
    pub async fn put(
        &self,
        principal: &Principal,
        inputs: Vec<BudgetInput>,
    ) -> Result<Vec<BudgetState>, ApiError> {
        let tenant = &principal.tenant;
        let budgets =
            parse_budgets(inputs).map_err(|e| ApiError::validation(&e.field, e.message))?;
        let previous = self
            .read_definitions(tenant)
            .await
            .map_err(ApiError::internal)?;
        let now = unix_now_ms();
        let mut tx = self.db.begin().await.map_err(ApiError::internal)?;
        sqlx::query("DELETE FROM billing_budgets WHERE tenant_id = $1")
            .bind(tenant.as_str())
            .execute(&mut *tx)
            .await
            .map_err(|e| ApiError::internal(DbError::from(e)))?;
        for (position, b) in budgets.iter().enumerate() {
            sqlx::query(
                "INSERT INTO billing_budgets (tenant_id, name, budget_key, scope, scope_id, metric, \
                 period, limit_amount, soft_percent, currency, position, updated_at_ms) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
            )
            .bind(tenant.as_str())
            .bind(&b.name)
            .bind(b.key())
            .bind(b.scope.kind())
            .bind(b.scope.id())
            .bind(b.metric.as_str())
            .bind(b.period.as_str())
            .bind(b.limit)
            .bind(i64::from(b.soft_percent))
            .bind(&b.currency)
            .bind(position as i64)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(|e| ApiError::internal(DbError::from(e)))?;
        }
        let audit = AuditRecord::by("billing", "billing.budgets_changed", principal)
            .on("budgets", None)
            .action("replace")
            .with(
                "before",
                previous.iter().map(budget_json).collect::<Vec<_>>(),
            )
            .with("after", budgets.iter().map(budget_json).collect::<Vec<_>>())
            .envelope();
        self.outbox
            .commit_and_publish(tx, &[(topics::AUDIT, tenant.as_str(), &audit)])
            .await
            .map_err(ApiError::internal)?;
        self.lock_definitions().remove(tenant);
        if let Err(e) = self
            .cache
            .publish(&[(CHANGED_CHANNEL.into(), tenant.as_str().as_bytes().to_vec())])
            .await
        {
            tracing::warn!(error = %e, "other replicas were not told of a budget change; they see it within 30 s");
        }
        self.list(tenant).await
    }

    /// Holds `cost` against every budget of the tenant the call falls under, or refuses
    /// naming the first without room. No budget applying holds nothing.
    pub async fn reserve(
        &self,
        tenant: &TenantId,
        call: &CallScope,
        cost: &Cost,
        ttl_ms: u32,
    ) -> Result<Held, ApiError> {
        let budgets = self.definitions(tenant).await?;
        let now = unix_now_ms();
        let applying: Vec<(&Budget, Line, Option<i64>)> = budgets
            .iter()
            .filter(|b| b.applies_to(call))
            .filter_map(|b| {
                let amount = b.amount(cost)?;
                let window = b.period.window(now);
                Some((
                    b,
                    Line {
                        counter: counter(tenant, b, &window.label),
                        amount,
                        tokens: b.metric == Metric::Tokens,
                        limit: b.limit,
                        keep_ms: keep_ms(b.period),
                    },
                    window.ends_at_ms,
                ))
            })
            .collect();
        if applying.is_empty() {
            return Ok(Held::default());
        }
        let lines: Vec<Line> = applying.iter().map(|(_, l, _)| l.clone()).collect();
        let id = uuid::Uuid::now_v7().simple().to_string();
        let ttl = if ttl_ms == 0 {
            DEFAULT_TTL_MS
        } else {
            ttl_ms.clamp(*TTL_RANGE_MS.start(), *TTL_RANGE_MS.end())
        };
        let expires_at = now + i64::from(ttl);
        let unavailable = |e| ApiError::unavailable("the budget counters are unavailable", e);
        // The second round finds every counter loaded; a third covers a counter Redis
        // evicted in between.
        for _ in 0..3 {
            match self
                .counters
                .reserve(&id, tenant.as_str(), &lines, expires_at)
                .await
                .map_err(unavailable)?
            {
                Reserved::Held => {
                    return Ok(Held {
                        id,
                        budgets: applying.iter().map(|(b, _, _)| b.name.clone()).collect(),
                    });
                }
                Reserved::Refused(r) => {
                    let (budget, line, resets_at) = &applying[r.line];
                    let scope = budget.scope.kind();
                    self.refusals.get_or_create(&RefusalLabels { scope }).inc();
                    tracing::info!(tenant = %tenant, budget = %budget.name, scope, spent = r.spent, reserved = r.reserved, asked = line.amount, "a reservation was refused");
                    return Err(refusal(budget, line, r.spent, r.reserved, *resets_at));
                }
                Reserved::Missing(missing) => {
                    for i in missing {
                        let Some(line) = lines.get(i) else { continue };
                        let spent = self
                            .durable_spent(&line.counter)
                            .await
                            .map_err(ApiError::internal)?;
                        self.counters.load(line, spent).await.map_err(unavailable)?;
                    }
                }
            }
        }
        Err(ApiError::unavailable(
            "the budget counters could not be loaded",
            anyhow::anyhow!("counters missing after loading them"),
        ))
    }

    /// Counts the call's real use; the spend and any threshold it crossed become
    /// durable together. Settling twice, or a reservation not held, changes nothing.
    pub async fn settle(
        &self,
        tenant: &TenantId,
        id: &str,
        tokens: i64,
        micros: i64,
    ) -> Result<(), ApiError> {
        if id.is_empty() {
            return Ok(());
        }
        let moved = self
            .counters
            .settle(id, tenant.as_str(), tokens, micros)
            .await
            .map_err(|e| ApiError::unavailable("the budget counters are unavailable", e))?;
        let Some(moved) = moved else {
            return Ok(());
        };
        self.record_settlement(tenant, id, &moved)
            .await
            .map_err(ApiError::internal)
    }

    async fn record_settlement(
        &self,
        tenant: &TenantId,
        id: &str,
        moved: &[Moved],
    ) -> Result<(), DbError> {
        let now = unix_now_ms();
        let mut tx = self.db.begin().await?;
        let first = sqlx::query(
            "INSERT INTO billing_budget_settlements (reservation_id, tenant_id, settled_at_ms) \
             VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
        )
        .bind(id)
        .bind(tenant.as_str())
        .bind(now)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if !first {
            return Ok(());
        }
        for m in moved {
            sqlx::query(
                "INSERT INTO billing_budget_spend (counter, tenant_id, spent, updated_at_ms) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT (counter) DO UPDATE SET \
                 spent = billing_budget_spend.spent + excluded.spent, updated_at_ms = excluded.updated_at_ms",
            )
            .bind(&m.counter)
            .bind(tenant.as_str())
            .bind(m.actual)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        let budgets = self.definitions(tenant).await.unwrap_or_default();
        let mut notices: Vec<Envelope> = Vec::new();
        for m in moved {
            let prefix = |b: &Budget| format!("{}|{}|", tenant.as_str(), b.key());
            if let Some(b) = budgets.iter().find(|b| m.counter.starts_with(&prefix(b))) {
                notices.extend(
                    b.crossed(m.before, m.after)
                        .into_iter()
                        .map(|t| notice(tenant, b, m, t)),
                );
            }
        }
        let events: Vec<(&str, &str, &Envelope)> = notices
            .iter()
            .map(|e| (topics::NOTIFICATIONS, tenant.as_str(), e))
            .collect();
        self.outbox.commit_and_publish(tx, &events).await
    }

    pub async fn release(&self, tenant: &TenantId, id: &str) -> Result<(), ApiError> {
        if id.is_empty() {
            return Ok(());
        }
        self.counters
            .release(id, tenant.as_str())
            .await
            .map_err(|e| ApiError::unavailable("the budget counters are unavailable", e))?;
        Ok(())
    }

    async fn durable_spent(&self, counter: &str) -> Result<i64, DbError> {
        let row = sqlx::query("SELECT spent FROM billing_budget_spend WHERE counter = $1")
            .bind(counter)
            .fetch_optional(self.db.pool())
            .await?;
        Ok(row
            .map(|r| r.try_get::<i64, _>(0))
            .transpose()?
            .unwrap_or(0))
    }

    /// Every second: reservations past their time given back; once an hour, settlement
    /// ids old enough to never be settled again forgotten.
    pub fn expiry(&self, stopping: CancellationToken) -> impl Future<Output = ()> + use<> {
        let this = self.clone();
        async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            let mut last_prune = Instant::now();
            loop {
                tokio::select! {
                    () = stopping.cancelled() => return,
                    _ = tick.tick() => {}
                }
                match this.counters.expire(unix_now_ms()).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(
                        reservations = n,
                        "reservations whose caller did not come back were given back"
                    ),
                    Err(e) => {
                        tracing::warn!(error = %e, "reservations could not be expired; trying again")
                    }
                }
                if last_prune.elapsed() > Duration::from_secs(3600) {
                    last_prune = Instant::now();
                    let old = unix_now_ms() - SETTLEMENTS_KEPT_MS;
                    if let Err(e) = sqlx::query(
                        "DELETE FROM billing_budget_settlements WHERE settled_at_ms < $1",
                    )
                    .bind(old)
                    .execute(this.db.pool())
                    .await
                    {
                        tracing::warn!(error = %e, "old settlements could not be pruned");
                    }
                }
            }
        }
    }
}

/// A counter's key: the tenant, what the budget counts, and the period.
fn counter(tenant: &TenantId, budget: &Budget, label: &str) -> String {
    format!("{}|{}|{label}", tenant.as_str(), budget.key())
}

/// How long a counter is worth keeping in Redis once its period began.
fn keep_ms(period: Period) -> i64 {
    match period {
        Period::Day => 3 * 86_400_000,
        Period::Month => 70 * 86_400_000,
        Period::Total => 0,
    }
}

fn budget_json(b: &Budget) -> serde_json::Value {
    json!({
        "name": b.name,
        "scope": b.scope.kind(),
        "scope_id": b.scope.id(),
        "metric": b.metric.as_str(),
        "period": b.period.as_str(),
        "limit": b.limit,
        "soft_percent": b.soft_percent,
        "currency": b.currency,
    })
}

fn rfc3339(ms: i64) -> Option<String> {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()?
        .format(&time::format_description::well_known::Rfc3339)
        .ok()
}

fn unit(budget: &Budget) -> String {
    match budget.metric {
        Metric::Tokens => "tokens".into(),
        Metric::Money => format!("micro-{}", budget.currency),
    }
}

fn scope_text(budget: &Budget) -> String {
    match &budget.scope {
        Scope::Tenant => "the tenant".into(),
        Scope::User(id) => format!("user `{id}`"),
        Scope::Project(id) => format!("project `{id}`"),
    }
}

/// The 402 problem for a call that does not fit `budget`.
fn refusal(
    budget: &Budget,
    line: &Line,
    spent: i64,
    reserved: i64,
    resets_at: Option<i64>,
) -> ApiError {
    let resets = resets_at.and_then(rfc3339);
    let message = format!(
        "the budget `{}` ({} per {} for {}) has no room for this call: {spent} of {} {} spent, {reserved} held by calls in flight, {} asked{}",
        budget.name,
        budget.metric.as_str(),
        budget.period.as_str(),
        scope_text(budget),
        budget.limit,
        unit(budget),
        line.amount,
        resets
            .as_ref()
            .map(|r| format!("; it resets at {r}"))
            .unwrap_or_default(),
    );
    ApiError::new(ErrorCode::BudgetExhausted, message).with_details(json!({
        "budget": budget_json(budget),
        "spent": spent,
        "reserved": reserved,
        "requested": line.amount,
        "resets_at": resets,
    }))
}

/// The notification for a threshold `m` crossed on `budget`: one per budget, period and
/// threshold (its id is derived from them, so a repeat is recognised downstream).
fn notice(tenant: &TenantId, budget: &Budget, m: &Moved, threshold: Threshold) -> Envelope {
    let period = m.counter.rsplit('|').next().unwrap_or_default().to_owned();
    let (severity, title) = match threshold {
        Threshold::Soft => (
            "warning",
            format!(
                "Budget `{}` is at {}% of its limit",
                budget.name, budget.soft_percent
            ),
        ),
        Threshold::Exhausted => ("critical", format!("Budget `{}` is exhausted", budget.name)),
    };
    let mut event = Envelope::new(
        "billing.budget_threshold",
        "billing",
        tenant.clone(),
        json!({
            "audience": "tenant_admins",
            "severity": severity,
            "title": title,
            "threshold": threshold.as_str(),
            "budget": budget_json(budget),
            "period": period,
            "spent": m.after,
            "limit": budget.limit,
        }),
    );
    event.id = uuid::Uuid::new_v5(
        &uuid::Uuid::NAMESPACE_OID,
        format!("{}|{}", m.counter, threshold.as_str()).as_bytes(),
    );
    event
}
