//! Each user's inbox in the service's database: the notifications addressed to them,
//! and to the tenant's administrators when they are one, newest first, each read or
//! not by each reader. Kept for a retention period, then pruned.

use serde::{Deserialize, Serialize};
use somagent_common::clock::unix_now_ms;
use somagent_common::infra::db::{self, Db, DbError, FromAnyRow, Migration};
use somagent_common::paging::{Cursor, PageSize};
use somagent_common::tenant::TenantId;
use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};

use crate::domain::notice::Notice;

pub const MIGRATION: Migration = Migration::portable(
    1,
    "notifications",
    include_str!("../migrations/0001_notifications.sql"),
);

/// Who reads an inbox: a user, and whether they administer the tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reader {
    pub user_id: String,
    pub admin: bool,
}

impl Reader {
    /// The SQL condition on `n` for what this reader sees, its user bound as `$2`.
    fn sees(&self) -> &'static str {
        if self.admin {
            "n.tenant_id = $1 AND (n.user_id = $2 OR n.audience = 'tenant_admins')"
        } else {
            "n.tenant_id = $1 AND n.user_id = $2"
        }
    }
}

/// A notification as stored, for one reader.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stored {
    pub id: String,
    pub kind: String,
    pub severity: String,
    pub title: String,
    pub body: String,
    pub data: String,
    pub audience: String,
    pub user_id: String,
    pub created_at_ms: i64,
    /// 0 while unread.
    pub read_at_ms: i64,
    pub event_id: String,
}

impl FromAnyRow for Stored {
    fn from_row(row: &AnyRow) -> Result<Self, sqlx::Error> {
        Ok(Self {
            id: row.try_get(0)?,
            kind: row.try_get(1)?,
            severity: row.try_get(2)?,
            title: row.try_get(3)?,
            body: row.try_get(4)?,
            data: row.try_get(5)?,
            audience: row.try_get(6)?,
            user_id: row.try_get(7)?,
            created_at_ms: row.try_get(8)?,
            event_id: row.try_get(9)?,
            read_at_ms: row.try_get(10)?,
        })
    }
}

const COLUMNS: &str = "n.id, n.kind, n.severity, n.title, n.body, n.data, n.audience, n.user_id, \
     n.created_at_ms, n.event_id, COALESCE((SELECT r.read_at_ms FROM notification_reads r \
     WHERE r.notification_id = n.id AND r.user_id = $2), 0)";

const UNREAD: &str = "NOT EXISTS (SELECT 1 FROM notification_reads r \
     WHERE r.notification_id = n.id AND r.user_id = $2)";

/// A page of an inbox.
pub struct Page {
    pub notifications: Vec<Stored>,
    pub next_cursor: String,
    pub unread: u64,
}

#[derive(Clone)]
pub struct Inbox {
    db: Db,
}

impl Inbox {
    pub fn new(db: Db) -> Self {
        Self { db }
    }

    /// Adds `notice` in `tx`, made of event `event_id`; `None` when it was already
    /// there (the event came again).
    pub async fn add(
        tx: &mut Transaction<'static, Any>,
        tenant: &TenantId,
        notice: &Notice,
        event_id: &uuid::Uuid,
        at_ms: i64,
    ) -> Result<Option<Stored>, DbError> {
        let stored = Stored {
            id: notice.id.to_string(),
            kind: notice.kind.clone(),
            severity: notice.severity.as_str().to_owned(),
            title: notice.title.clone(),
            body: notice.body.clone(),
            data: notice.data.to_string(),
            audience: notice.audience.as_str().to_owned(),
            user_id: notice.audience.user_id().to_owned(),
            created_at_ms: at_ms,
            read_at_ms: 0,
            event_id: event_id.to_string(),
        };
        let added = sqlx::query(
            "INSERT INTO notifications (id, tenant_id, audience, user_id, kind, severity, title, \
             body, data, event_id, created_at_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(&stored.id)
        .bind(tenant.as_str())
        .bind(&stored.audience)
        .bind(&stored.user_id)
        .bind(&stored.kind)
        .bind(&stored.severity)
        .bind(&stored.title)
        .bind(&stored.body)
        .bind(&stored.data)
        .bind(&stored.event_id)
        .bind(at_ms)
        .execute(&mut **tx)
        .await?
        .rows_affected();
        Ok((added == 1).then_some(stored))
    }

    /// A page of `reader`'s inbox, newest first, after `cursor`.
    pub async fn list(
        &self,
        tenant: &TenantId,
        reader: &Reader,
        unread_only: bool,
        size: PageSize,
        cursor: &str,
    ) -> Result<Page, DbError> {
        let mut sql = format!(
            "SELECT {COLUMNS} FROM notifications n WHERE {}",
            reader.sees()
        );
        if unread_only {
            sql.push_str(&format!(" AND {UNREAD}"));
        }
        let after = if cursor.is_empty() {
            None
        } else {
            let fields = Cursor::decode(cursor, 2)
                .ok_or_else(|| DbError::Invalid("the cursor is not one this list gave".into()))?;
            let at: i64 = fields[0]
                .parse()
                .map_err(|_| DbError::Invalid("the cursor is not one this list gave".into()))?;
            Some((at, fields[1].clone()))
        };
        if after.is_some() {
            sql.push_str(" AND (n.created_at_ms < $3 OR (n.created_at_ms = $3 AND n.id < $4))");
        }
        sql.push_str(&format!(
            " ORDER BY n.created_at_ms DESC, n.id DESC LIMIT {}",
            size.rows_to_read()
        ));
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(tenant.as_str())
            .bind(&reader.user_id);
        if let Some((at, id)) = &after {
            query = query.bind(*at).bind(id);
        }
        let rows = query.fetch_all(self.db.pool()).await?;
        let (notifications, next_cursor) = size.cut(db::all::<Stored>(&rows)?, |n| {
            Cursor::encode(&[&n.created_at_ms.to_string(), &n.id])
        });
        let unread: i64 = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT COUNT(*) FROM notifications n WHERE {} AND {UNREAD}",
            reader.sees()
        )))
        .bind(tenant.as_str())
        .bind(&reader.user_id)
        .fetch_one(self.db.pool())
        .await?
        .try_get(0)?;
        Ok(Page {
            notifications,
            next_cursor,
            unread: u64::try_from(unread).unwrap_or(0),
        })
    }

    /// Marks one notification read for `reader`; false when they cannot see it.
    pub async fn mark_read(
        &self,
        tenant: &TenantId,
        reader: &Reader,
        id: &str,
    ) -> Result<bool, DbError> {
        let visible = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT n.id FROM notifications n WHERE {} AND n.id = $3",
            reader.sees()
        )))
        .bind(tenant.as_str())
        .bind(&reader.user_id)
        .bind(id)
        .fetch_optional(self.db.pool())
        .await?
        .is_some();
        if visible {
            sqlx::query(
                "INSERT INTO notification_reads (notification_id, user_id, tenant_id, read_at_ms) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT (notification_id, user_id) DO NOTHING",
            )
            .bind(id)
            .bind(&reader.user_id)
            .bind(tenant.as_str())
            .bind(unix_now_ms())
            .execute(self.db.pool())
            .await?;
        }
        Ok(visible)
    }

    /// Marks everything `reader` sees up to now read; how many were unread.
    pub async fn mark_all_read(&self, tenant: &TenantId, reader: &Reader) -> Result<u64, DbError> {
        let done = sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO notification_reads (notification_id, user_id, tenant_id, read_at_ms) \
             SELECT n.id, $2, n.tenant_id, $3 FROM notifications n WHERE {} AND n.created_at_ms <= $3 \
             AND {UNREAD} ON CONFLICT (notification_id, user_id) DO NOTHING",
            reader.sees()
        )))
        .bind(tenant.as_str())
        .bind(&reader.user_id)
        .bind(unix_now_ms())
        .execute(self.db.pool())
        .await?;
        Ok(done.rows_affected())
    }

    /// Removes notifications made before `before_ms`, with their reads and what was sent
    /// of them; how many notifications.
    pub async fn prune(&self, before_ms: i64) -> Result<u64, DbError> {
        let mut tx = self.db.begin().await?;
        sqlx::query(
            "DELETE FROM notification_reads WHERE notification_id IN \
             (SELECT id FROM notifications WHERE created_at_ms < $1)",
        )
        .bind(before_ms)
        .execute(&mut *tx)
        .await?;
        let gone = sqlx::query("DELETE FROM notifications WHERE created_at_ms < $1")
            .bind(before_ms)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        // What was sent of them goes too: the payloads hold the same words. Deliveries
        // still pending (an endpoint down) stay until they end.
        sqlx::query(
            "DELETE FROM webhook_attempts WHERE delivery_id IN (SELECT id FROM webhook_deliveries \
             WHERE created_at_ms < $1 AND status <> 'pending')",
        )
        .bind(before_ms)
        .execute(&mut *tx)
        .await?;
        for sql in [
            "DELETE FROM webhook_deliveries WHERE created_at_ms < $1 AND status <> 'pending'",
            "DELETE FROM email_deliveries WHERE created_at_ms < $1 AND status <> 'pending'",
        ] {
            sqlx::query(sql).bind(before_ms).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(gone)
    }
}
