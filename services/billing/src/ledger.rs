//! The ledger in the service's database: entries written in batches, each event once
//! (its id is the key; a second event for the same call is also refused), and usage
//! added up in SQL, tenant by tenant.

use somagent_common::clock::unix_now_ms;
use somagent_common::infra::db::{Db, DbError, Migration, values_rows};
use somagent_common::tenant::TenantId;
use sqlx::Row;

use crate::domain::entry::{EntryKind, LedgerEntry};
use crate::domain::grouping::{GroupBy, day_label};

pub const MIGRATIONS: &[Migration] = &[
    Migration::portable(1, "ledger", include_str!("../migrations/0001_ledger.sql")),
    Migration {
        version: 2,
        name: "append_only",
        sqlite: include_str!("../migrations/0002_append_only.sqlite.sql"),
        postgres: include_str!("../migrations/0002_append_only.postgres.sql"),
    },
];

const COLUMNS: [&str; 17] = [
    "event_id",
    "tenant_id",
    "kind",
    "call_id",
    "user_id",
    "session_id",
    "project_id",
    "item",
    "detail",
    "prompt_tokens",
    "completion_tokens",
    "prompt_price_micros",
    "completion_price_micros",
    "cost_micros",
    "currency",
    "event_time_ms",
    "ingested_at_ms",
];

/// What usage to add up.
#[derive(Debug, Clone, Default)]
pub struct UsageQuery {
    pub from_ms: i64,
    pub to_ms: i64,
    pub groups: Vec<GroupBy>,
    pub user: String,
    pub model: String,
    pub tool: String,
    pub session_id: String,
}

/// One group's usage in one currency.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageRow {
    pub group: Vec<String>,
    pub currency: String,
    pub calls: u64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub cost_micros: i64,
}

/// The most rows a usage query returns (a year by day by model is well within it).
pub const MAX_USAGE_ROWS: usize = 10_000;

#[derive(Clone)]
pub struct Ledger {
    db: Db,
}

impl Ledger {
    pub fn new(db: Db) -> Self {
        Self { db }
    }

    /// Writes the entries not already in, in one transaction; how many were new.
    pub async fn enter(&self, entries: &[LedgerEntry]) -> Result<u64, DbError> {
        if entries.is_empty() {
            return Ok(0);
        }
        let now = unix_now_ms();
        let mut tx = self.db.begin().await?;
        let mut added = 0;
        for rows in entries.chunks(self.db.kind().rows_per_insert(COLUMNS.len())) {
            let values = values_rows(rows.len(), COLUMNS.len());
            // Only column names and parameter markers are formatted into the text.
            let sql = format!(
                "INSERT INTO billing_ledger ({}) VALUES {values} ON CONFLICT DO NOTHING",
                COLUMNS.join(", ")
            );
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
            for e in rows {
                query = query
                    .bind(e.event_id.clone())
                    .bind(e.tenant.as_str().to_owned())
                    .bind(e.kind.as_str())
                    .bind(e.call_id.clone())
                    .bind(e.user.clone())
                    .bind(e.session_id.clone())
                    .bind(e.project_id.clone())
                    .bind(e.item.clone())
                    .bind(e.detail.clone())
                    .bind(e.prompt_tokens as i64)
                    .bind(e.completion_tokens as i64)
                    .bind(e.prompt_price_micros)
                    .bind(e.completion_price_micros)
                    .bind(e.cost_micros)
                    .bind(e.currency.clone())
                    .bind(e.event_time_ms)
                    .bind(now);
            }
            added += query.execute(&mut *tx).await?.rows_affected();
        }
        tx.commit().await?;
        Ok(added)
    }

    /// The tenant's usage in `q`'s period, grouped as asked, in each currency; and the
    /// totals per currency.
    pub async fn usage(
        &self,
        tenant: &TenantId,
        q: &UsageQuery,
    ) -> Result<(Vec<UsageRow>, Vec<UsageRow>), DbError> {
        let rows = self.sum(tenant, q, &q.groups).await?;
        let totals = self.sum(tenant, q, &[]).await?;
        Ok((rows, totals))
    }

    async fn sum(
        &self,
        tenant: &TenantId,
        q: &UsageQuery,
        groups: &[GroupBy],
    ) -> Result<Vec<UsageRow>, DbError> {
        let mut filters = String::new();
        let mut binds: Vec<String> = Vec::new();
        for (value, condition) in [
            (&q.user, "user_id = {}"),
            (&q.model, "kind <> 'tool' AND item = {}"),
            (&q.tool, "kind = 'tool' AND item = {}"),
            (&q.session_id, "session_id = {}"),
        ] {
            if !value.is_empty() {
                binds.push(value.clone());
                filters.push_str(" AND ");
                filters.push_str(&condition.replace("{}", &format!("${}", 3 + binds.len())));
            }
        }
        let keys: Vec<String> = groups
            .iter()
            .enumerate()
            .map(|(i, g)| format!("{} AS g{i}", g.sql()))
            .collect();
        let group_names: Vec<String> = (0..groups.len()).map(|i| format!("g{i}")).collect();
        let mut select = keys.clone();
        select.extend(
            [
                "currency",
                "COUNT(*)",
                "CAST(SUM(prompt_tokens) AS BIGINT)",
                "CAST(SUM(completion_tokens) AS BIGINT)",
                "CAST(SUM(cost_micros) AS BIGINT)",
            ]
            .map(str::to_owned),
        );
        let mut by = group_names.clone();
        by.push("currency".into());
        // Only the fixed expressions of `GroupBy` and parameter markers are formatted in.
        let sql = format!(
            "SELECT {} FROM billing_ledger WHERE tenant_id = $1 AND event_time_ms >= $2 AND event_time_ms < $3{filters} \
             GROUP BY {} ORDER BY {} LIMIT {}",
            select.join(", "),
            by.join(", "),
            by.join(", "),
            MAX_USAGE_ROWS
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(tenant.as_str().to_owned())
            .bind(q.from_ms)
            .bind(q.to_ms);
        for b in binds {
            query = query.bind(b);
        }
        let rows = query.fetch_all(self.db.pool()).await?;
        let n = groups.len();
        rows.iter()
            .map(|r| {
                let mut group = Vec::with_capacity(n);
                for (i, g) in groups.iter().enumerate() {
                    let value: String = r.try_get(i)?;
                    group.push(match g {
                        GroupBy::Day => value.parse::<i64>().map(day_label).unwrap_or(value),
                        _ => value,
                    });
                }
                Ok(UsageRow {
                    group,
                    currency: r.try_get(n)?,
                    calls: r.try_get::<i64, _>(n + 1)? as u64,
                    prompt_tokens: r.try_get::<i64, _>(n + 2)? as u64,
                    completion_tokens: r.try_get::<i64, _>(n + 3)? as u64,
                    cost_micros: r.try_get(n + 4)?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(DbError::from)
    }

    /// The tenant's entries in `[from_ms, to_ms)`, oldest first, after the cursor
    /// `after` (`<event time>:<event id>` of the last one seen).
    pub async fn entries(
        &self,
        tenant: &TenantId,
        from_ms: i64,
        to_ms: i64,
        after: Option<(i64, String)>,
        limit: u32,
    ) -> Result<Vec<StoredEntry>, DbError> {
        let (after_time, after_id) = after.unwrap_or((i64::MIN, String::new()));
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {} FROM billing_ledger WHERE tenant_id = $1 AND event_time_ms >= $2 AND event_time_ms < $3 \
             AND (event_time_ms > $4 OR (event_time_ms = $4 AND event_id > $5)) \
             ORDER BY event_time_ms, event_id LIMIT {limit}",
            COLUMNS.join(", ")
        )))
        .bind(tenant.as_str().to_owned())
        .bind(from_ms)
        .bind(to_ms)
        .bind(after_time)
        .bind(after_id)
        .fetch_all(self.db.pool())
        .await?;
        rows.iter()
            .map(|r| {
                let kind: String = r.try_get(2)?;
                let entry = LedgerEntry {
                    event_id: r.try_get(0)?,
                    tenant: tenant.clone(),
                    kind: EntryKind::parse(&kind).ok_or_else(|| {
                        sqlx::Error::Decode(format!("unknown entry kind `{kind}`").into())
                    })?,
                    call_id: r.try_get(3)?,
                    user: r.try_get(4)?,
                    session_id: r.try_get(5)?,
                    project_id: r.try_get(6)?,
                    item: r.try_get(7)?,
                    detail: r.try_get(8)?,
                    prompt_tokens: r.try_get::<i64, _>(9)? as u64,
                    completion_tokens: r.try_get::<i64, _>(10)? as u64,
                    prompt_price_micros: r.try_get(11)?,
                    completion_price_micros: r.try_get(12)?,
                    cost_micros: r.try_get(13)?,
                    currency: r.try_get(14)?,
                    event_time_ms: r.try_get(15)?,
                };
                Ok(StoredEntry {
                    entry,
                    ingested_at_ms: r.try_get(16)?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(DbError::from)
    }
}

/// An entry as read back, with when the ledger took it in.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEntry {
    pub entry: LedgerEntry,
    pub ingested_at_ms: i64,
}
