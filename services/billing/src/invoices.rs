//! Invoices: one per tenant per calendar month (UTC), built from the ledger. A month's
//! invoice is open (its figures live) until an hour after the month ends, then closed:
//! its lines are written once and never change (triggers refuse it). An entry belongs
//! to the first invoice whose month it is not after and whose close it was in the
//! ledger by; one that arrives after its month's invoice closed goes on the next as a
//! late line, so every entry is invoiced exactly once.

use somagent_common::clock::unix_now_ms;
use somagent_common::infra::db::{Db, DbError, Migration};
use somagent_common::tenant::TenantId;
use sqlx::Row;
use tokio_util::sync::CancellationToken;

use crate::domain::budget::Period;

pub const MIGRATION: Migration = Migration {
    version: 4,
    name: "invoices",
    sqlite: include_str!("../migrations/0004_invoices.sqlite.sql"),
    postgres: include_str!("../migrations/0004_invoices.postgres.sql"),
};

/// How long after a month ends its invoice closes: usage still on its way (in an
/// outbox, on the bus) gets this long to reach the ledger.
pub const CLOSE_AFTER_MS: i64 = 3_600_000;
/// How far behind the moment of closing its cutoff is: an entry being written while
/// the invoice is read (its ingest time before the read, its commit after) must not
/// count as invoiced, so only what was in the ledger a minute before is.
pub const SETTLED_MS: i64 = 60_000;
/// The most months one closing round closes for a tenant (a long-stopped billing
/// catches up over several rounds).
const MONTHS_PER_ROUND: usize = 24;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvoiceLine {
    /// `model`, `embedding` or `tool`.
    pub kind: String,
    /// The model profile or the tool.
    pub item: String,
    pub currency: String,
    /// Usage of an earlier month that reached the ledger after that month's invoice
    /// closed.
    pub late: bool,
    pub calls: u64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub amount_micros: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invoice {
    /// The month, `YYYY-MM`.
    pub id: String,
    pub closed: bool,
    pub period_start_ms: i64,
    pub period_end_ms: i64,
    /// When it closed (closed), or what it holds up to (open: now).
    pub cutoff_ms: i64,
    pub lines: Vec<InvoiceLine>,
}

impl Invoice {
    /// The total per currency, in the order currencies first appear.
    pub fn totals(&self) -> Vec<(String, i64)> {
        let mut totals: Vec<(String, i64)> = Vec::new();
        for line in &self.lines {
            match totals.iter_mut().find(|(c, _)| *c == line.currency) {
                Some((_, sum)) => *sum += line.amount_micros,
                None => totals.push((line.currency.clone(), line.amount_micros)),
            }
        }
        totals
    }
}

/// A month: its label and bounds.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Month {
    label: String,
    start_ms: i64,
    end_ms: i64,
}

impl Month {
    fn containing(at_ms: i64) -> Self {
        let window = Period::Month.window(at_ms);
        let end_ms = window.ends_at_ms.unwrap_or(i64::MAX);
        let start_ms = parse_month(&window.label).map_or(0, |m| m.start_ms);
        Self {
            label: window.label,
            start_ms,
            end_ms,
        }
    }

    fn next(&self) -> Self {
        Self::containing(self.end_ms)
    }
}

/// `YYYY-MM` as a month, if it is one.
fn parse_month(label: &str) -> Option<Month> {
    let (year, month) = label.split_once('-')?;
    if year.len() != 4 || month.len() != 2 {
        return None;
    }
    let month = time::Month::try_from(month.parse::<u8>().ok()?).ok()?;
    let first = time::Date::from_calendar_date(year.parse().ok()?, month, 1).ok()?;
    let start_ms = (first.midnight().assume_utc().unix_timestamp_nanos() / 1_000_000) as i64;
    let window = Period::Month.window(start_ms);
    Some(Month {
        label: window.label,
        start_ms,
        end_ms: window.ends_at_ms?,
    })
}

/// The latest closed invoice's month end and cutoff: the entries it and every earlier
/// invoice hold are those before that end that were in the ledger by that cutoff.
#[derive(Debug, Clone, Copy, Default)]
struct Invoiced {
    end_ms: i64,
    cutoff_ms: i64,
}

#[derive(Clone)]
pub struct Invoices {
    db: Db,
    settled_ms: i64,
}

impl Invoices {
    pub fn new(db: Db) -> Self {
        Self {
            db,
            settled_ms: SETTLED_MS,
        }
    }

    /// How long an entry must have been in the ledger to be on a closing invoice
    /// ([`SETTLED_MS`] unless set; tests that cannot wait a minute set less).
    pub fn settled_after(mut self, ms: i64) -> Self {
        self.settled_ms = ms;
        self
    }

    /// The tenant's invoices, newest first: the closed ones, and the open ones since.
    pub async fn list(&self, tenant: &TenantId, now_ms: i64) -> Result<Vec<Invoice>, DbError> {
        let mut closed = self.closed(tenant, None).await?;
        let mut open = Vec::new();
        let first_open = match closed.last() {
            Some(last) => parse_month(&last.id).map(|m| m.next()),
            None => self.first_month(tenant).await?,
        };
        if let Some(mut month) = first_open {
            let current = Month::containing(now_ms);
            while month.start_ms <= current.start_ms && open.len() < MONTHS_PER_ROUND {
                open.push(self.open_invoice(tenant, &month, now_ms).await?);
                month = month.next();
            }
        }
        open.reverse();
        closed.reverse();
        open.extend(closed);
        Ok(open)
    }

    /// One invoice: closed as it was written, or open as it stands now. `None` for a
    /// month with no invoice (before the tenant's first usage, or to come).
    pub async fn get(
        &self,
        tenant: &TenantId,
        id: &str,
        now_ms: i64,
    ) -> Result<Option<Invoice>, DbError> {
        let Some(month) = parse_month(id) else {
            return Ok(None);
        };
        if let Some(invoice) = self.closed(tenant, Some(&month.label)).await?.pop() {
            return Ok(Some(invoice));
        }
        let Some(first) = self.first_month(tenant).await? else {
            return Ok(None);
        };
        if month.start_ms < first.start_ms || month.start_ms > now_ms {
            return Ok(None);
        }
        Ok(Some(self.open_invoice(tenant, &month, now_ms).await?))
    }

    async fn open_invoice(
        &self,
        tenant: &TenantId,
        month: &Month,
        now_ms: i64,
    ) -> Result<Invoice, DbError> {
        let mut before = self.invoiced(tenant).await?;
        if before.end_ms != 0 && before.end_ms < month.start_ms {
            // The month before is still open too (its close is due within the hour):
            // it holds what came before this month, late or not.
            before = Invoiced {
                end_ms: month.start_ms,
                cutoff_ms: i64::MAX,
            };
        }
        let lines = self
            .lines_from_ledger(tenant, month, now_ms, before)
            .await?;
        Ok(Invoice {
            id: month.label.clone(),
            closed: false,
            period_start_ms: month.start_ms,
            period_end_ms: month.end_ms,
            cutoff_ms: now_ms,
            lines,
        })
    }

    /// The month of the tenant's first ledger entry, if it has one.
    async fn first_month(&self, tenant: &TenantId) -> Result<Option<Month>, DbError> {
        let row = sqlx::query("SELECT MIN(event_time_ms) FROM billing_ledger WHERE tenant_id = $1")
            .bind(tenant.as_str())
            .fetch_one(self.db.pool())
            .await?;
        Ok(row.try_get::<Option<i64>, _>(0)?.map(Month::containing))
    }

    async fn invoiced(&self, tenant: &TenantId) -> Result<Invoiced, DbError> {
        let row = sqlx::query(
            "SELECT period_end_ms, cutoff_ms FROM billing_invoices WHERE tenant_id = $1 \
             ORDER BY month DESC LIMIT 1",
        )
        .bind(tenant.as_str())
        .fetch_optional(self.db.pool())
        .await?;
        Ok(match row {
            Some(r) => Invoiced {
                end_ms: r.try_get(0)?,
                cutoff_ms: r.try_get(1)?,
            },
            None => Invoiced::default(),
        })
    }

    /// The lines of `month`'s invoice with the ledger as it was at `cutoff_ms`, leaving
    /// out what earlier invoices hold.
    async fn lines_from_ledger(
        &self,
        tenant: &TenantId,
        month: &Month,
        cutoff_ms: i64,
        before: Invoiced,
    ) -> Result<Vec<InvoiceLine>, DbError> {
        let rows = sqlx::query(
            "SELECT kind, item, currency, \
             CASE WHEN event_time_ms < $2 THEN 1 ELSE 0 END AS late, \
             COUNT(*), CAST(SUM(prompt_tokens) AS BIGINT), CAST(SUM(completion_tokens) AS BIGINT), \
             CAST(SUM(cost_micros) AS BIGINT) \
             FROM billing_ledger WHERE tenant_id = $1 AND event_time_ms < $3 AND ingested_at_ms <= $4 \
             AND NOT (event_time_ms < $5 AND ingested_at_ms <= $6) \
             GROUP BY kind, item, currency, late ORDER BY late, kind, item, currency",
        )
        .bind(tenant.as_str())
        .bind(month.start_ms)
        .bind(month.end_ms)
        .bind(cutoff_ms)
        .bind(before.end_ms)
        .bind(before.cutoff_ms)
        .fetch_all(self.db.pool())
        .await?;
        rows.iter()
            .map(|r| line_of(r, 0))
            .collect::<Result<_, sqlx::Error>>()
            .map_err(DbError::from)
    }

    /// The tenant's closed invoices, oldest first (or the one of `month`).
    async fn closed(
        &self,
        tenant: &TenantId,
        month: Option<&str>,
    ) -> Result<Vec<Invoice>, DbError> {
        let heads = sqlx::query(
            "SELECT month, period_start_ms, period_end_ms, cutoff_ms FROM billing_invoices \
             WHERE tenant_id = $1 AND ($2 = '' OR month = $2) ORDER BY month",
        )
        .bind(tenant.as_str())
        .bind(month.unwrap_or_default())
        .fetch_all(self.db.pool())
        .await?;
        let lines = sqlx::query(
            "SELECT month, kind, item, currency, late, calls, prompt_tokens, completion_tokens, amount_micros \
             FROM billing_invoice_lines WHERE tenant_id = $1 AND ($2 = '' OR month = $2) ORDER BY month, line_no",
        )
        .bind(tenant.as_str())
        .bind(month.unwrap_or_default())
        .fetch_all(self.db.pool())
        .await?;
        let mut invoices = heads
            .iter()
            .map(|r| {
                Ok(Invoice {
                    id: r.try_get(0)?,
                    closed: true,
                    period_start_ms: r.try_get(1)?,
                    period_end_ms: r.try_get(2)?,
                    cutoff_ms: r.try_get(3)?,
                    lines: Vec::new(),
                })
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()?;
        for r in &lines {
            let month: String = r.try_get(0)?;
            if let Some(invoice) = invoices.iter_mut().find(|i| i.id == month) {
                invoice.lines.push(line_of(r, 1)?);
            }
        }
        Ok(invoices)
    }

    /// Closes every month that ended more than [`CLOSE_AFTER_MS`] before `now_ms` and
    /// has no closed invoice yet, for each tenant with usage; how many it closed.
    /// Replicas may race: the first to write a month's invoice wins, the others' is
    /// refused and rolled back.
    pub async fn close_due(&self, now_ms: i64) -> Result<usize, DbError> {
        let tenants = sqlx::query("SELECT DISTINCT tenant_id FROM billing_ledger")
            .fetch_all(self.db.pool())
            .await?;
        let mut closed = 0;
        for row in &tenants {
            let name: String = row.try_get(0)?;
            let Ok(tenant) = TenantId::parse(&name) else {
                continue;
            };
            closed += self.close_tenant(&tenant, now_ms).await?;
        }
        Ok(closed)
    }

    async fn close_tenant(&self, tenant: &TenantId, now_ms: i64) -> Result<usize, DbError> {
        let last = self.closed_months(tenant).await?;
        let mut month = match last {
            Some(label) => match parse_month(&label) {
                Some(m) => m.next(),
                None => return Ok(0),
            },
            None => match self.first_month(tenant).await? {
                Some(m) => m,
                None => return Ok(0),
            },
        };
        let mut closed = 0;
        while month.end_ms + CLOSE_AFTER_MS <= now_ms && closed < MONTHS_PER_ROUND {
            if !self.close(tenant, &month, now_ms).await? {
                break;
            }
            closed += 1;
            month = month.next();
        }
        Ok(closed)
    }

    async fn closed_months(&self, tenant: &TenantId) -> Result<Option<String>, DbError> {
        let row = sqlx::query(
            "SELECT month FROM billing_invoices WHERE tenant_id = $1 ORDER BY month DESC LIMIT 1",
        )
        .bind(tenant.as_str())
        .fetch_optional(self.db.pool())
        .await?;
        Ok(row.map(|r| r.try_get(0)).transpose()?)
    }

    /// Writes `month`'s invoice as the ledger stands at `now_ms`; false if another
    /// replica closed it first.
    async fn close(&self, tenant: &TenantId, month: &Month, now_ms: i64) -> Result<bool, DbError> {
        let before = self.invoiced(tenant).await?;
        let cutoff = now_ms - self.settled_ms;
        let lines = self
            .lines_from_ledger(tenant, month, cutoff, before)
            .await?;
        let mut tx = self.db.begin().await?;
        let written = sqlx::query(
            "INSERT INTO billing_invoices (tenant_id, month, period_start_ms, period_end_ms, cutoff_ms) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
        )
        .bind(tenant.as_str())
        .bind(&month.label)
        .bind(month.start_ms)
        .bind(month.end_ms)
        .bind(cutoff)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if written == 0 {
            return Ok(false);
        }
        for (i, l) in lines.iter().enumerate() {
            sqlx::query(
                "INSERT INTO billing_invoice_lines (tenant_id, month, line_no, kind, item, currency, late, \
                 calls, prompt_tokens, completion_tokens, amount_micros) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
            )
            .bind(tenant.as_str())
            .bind(&month.label)
            .bind(i as i64)
            .bind(&l.kind)
            .bind(&l.item)
            .bind(&l.currency)
            .bind(i64::from(l.late))
            .bind(l.calls as i64)
            .bind(l.prompt_tokens as i64)
            .bind(l.completion_tokens as i64)
            .bind(l.amount_micros)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        tracing::info!(tenant = %tenant, month = %month.label, lines = lines.len(), "an invoice closed");
        Ok(true)
    }

    /// Closes what is due at start and then every few minutes.
    pub fn closing(&self, stopping: CancellationToken) -> impl Future<Output = ()> + use<> {
        let this = self.clone();
        async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(300));
            loop {
                tokio::select! {
                    () = stopping.cancelled() => return,
                    _ = tick.tick() => {}
                }
                if let Err(e) = this.close_due(unix_now_ms()).await {
                    tracing::warn!(error = %e, "invoices could not be closed; trying again");
                }
            }
        }
    }
}

/// An invoice line from a row whose columns from `first` are kind, item, currency,
/// late, calls, prompt tokens, completion tokens and amount.
fn line_of(r: &sqlx::any::AnyRow, first: usize) -> Result<InvoiceLine, sqlx::Error> {
    Ok(InvoiceLine {
        kind: r.try_get(first)?,
        item: r.try_get(first + 1)?,
        currency: r.try_get(first + 2)?,
        late: r.try_get::<i64, _>(first + 3)? == 1,
        calls: r.try_get::<i64, _>(first + 4)? as u64,
        prompt_tokens: r.try_get::<i64, _>(first + 5)? as u64,
        completion_tokens: r.try_get::<i64, _>(first + 6)? as u64,
        amount_micros: r.try_get(first + 7)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn months_follow_the_calendar() {
        let m = parse_month("2026-12").unwrap();
        assert_eq!(m.next().label, "2027-01");
        assert_eq!(Month::containing(m.end_ms - 1).label, "2026-12");
        assert_eq!(Month::containing(m.end_ms).start_ms, m.end_ms);
        assert!(parse_month("2026-13").is_none());
        assert!(parse_month("26-01").is_none());
    }
}
