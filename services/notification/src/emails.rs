//! The outgoing queue in the service's database, for the channels that reach a person
//! (`email`, `slack`): a row per notification and address (an email address, a Slack
//! channel), queued in the same transaction as the notification, held until the
//! recipient's quiet hours end, leased by the courier that sends it, tried on the
//! retry schedule and marked `dead` after the last try.

use somagent_common::clock::unix_now_ms;
use somagent_common::infra::db::{self, Db, DbError, DbKind, Migration};
use somagent_common::tenant::TenantId;
use sqlx::{Any, Row, Transaction};

use crate::domain::notice::Notice;

pub const MIGRATIONS: [Migration; 2] = [
    Migration::portable(2, "emails", include_str!("../migrations/0002_emails.sql")),
    Migration::portable(
        3,
        "channels",
        include_str!("../migrations/0003_channels.sql"),
    ),
];

/// A message claimed for sending.
pub struct DueEmail {
    pub id: String,
    pub tenant: TenantId,
    /// Whom it tells (Slack posts act for them).
    pub user_id: String,
    pub address: String,
    pub subject: String,
    pub body: String,
    /// Tries made before this one.
    pub attempts: u32,
}

/// The subject and text of the email for `notice`.
pub fn compose(notice: &Notice) -> (String, String) {
    let subject = format!("[SomaAgent] {}", notice.title);
    let mut body = format!("{}\n\n", notice.title);
    if !notice.body.is_empty() {
        body.push_str(&notice.body);
        body.push_str("\n\n");
    }
    body.push_str(&format!(
        "Severity: {}\nKind: {}\nNotification: {}\n\nYour notification preferences are at /v1/me/preferences.\n",
        notice.severity.as_str(),
        notice.kind,
        notice.id
    ));
    (subject, body)
}

/// Where a notice goes on a person's channel, and when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipient {
    /// `email` or `slack`.
    pub channel: &'static str,
    pub address: String,
    pub user_id: String,
    pub not_before_ms: i64,
}

#[derive(Clone)]
pub struct Emails {
    db: Db,
}

impl Emails {
    pub fn new(db: Db) -> Self {
        Self { db }
    }

    /// Queues `notice` on `channel` for `address` (telling `user`) in `tx`, not to be
    /// sent before `not_before_ms`; false when it was already queued (the event came
    /// again).
    pub async fn enqueue(
        tx: &mut Transaction<'static, Any>,
        tenant: &TenantId,
        notice: &Notice,
        to: &Recipient,
    ) -> Result<bool, DbError> {
        let (subject, body) = compose(notice);
        let done = sqlx::query(
            "INSERT INTO email_deliveries (id, tenant_id, notification_id, address, subject, body, \
             status, attempts, next_attempt_at_ms, leased_until_ms, last_error, created_at_ms, sent_at_ms, \
             channel, user_id) \
             VALUES ($1, $2, $3, $4, $5, $6, 'pending', 0, $7, 0, '', $8, 0, $9, $10) \
             ON CONFLICT (notification_id, address) DO NOTHING",
        )
        .bind(uuid::Uuid::now_v7().to_string())
        .bind(tenant.as_str())
        .bind(notice.id.to_string())
        .bind(&to.address)
        .bind(&subject)
        .bind(&body)
        .bind(to.not_before_ms)
        .bind(unix_now_ms())
        .bind(to.channel)
        .bind(&to.user_id)
        .execute(&mut **tx)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Leases up to `limit` due messages of `channel` until `lease_until_ms`.
    pub async fn claim_due(
        &self,
        channel: &str,
        limit: usize,
        lease_until_ms: i64,
    ) -> Result<Vec<DueEmail>, DbError> {
        let now = unix_now_ms();
        let lock = if self.db.kind() == DbKind::Postgres {
            " FOR UPDATE SKIP LOCKED"
        } else {
            ""
        };
        let sql = format!(
            "UPDATE email_deliveries SET leased_until_ms = $1 WHERE id IN (\
             SELECT id FROM email_deliveries WHERE status = 'pending' AND next_attempt_at_ms <= $2 \
             AND leased_until_ms <= $2 AND channel = $4 ORDER BY next_attempt_at_ms LIMIT $3{lock}) \
             AND leased_until_ms <= $2 \
             RETURNING id, tenant_id, address, subject, body, attempts, user_id"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(lease_until_ms)
            .bind(now)
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .bind(channel)
            .fetch_all(self.db.pool())
            .await?;
        rows.iter()
            .map(|row| {
                Ok(DueEmail {
                    id: row.try_get(0)?,
                    tenant: row.try_get(1)?,
                    address: row.try_get(2)?,
                    subject: row.try_get(3)?,
                    body: row.try_get(4)?,
                    attempts: db::get_u32(row, 5)?,
                    user_id: row.try_get(6)?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(DbError::Query)
    }

    /// Records a try: sent, another try at `next_at_ms`, or (`None`) dead.
    pub async fn record(
        &self,
        due: &DueEmail,
        failure: Option<&str>,
        next_at_ms: Option<i64>,
    ) -> Result<(), DbError> {
        let now = unix_now_ms();
        let (status, next, sent_at) = match (failure, next_at_ms) {
            (None, _) => ("sent", 0, now),
            (Some(_), Some(at)) => ("pending", at, 0),
            (Some(_), None) => ("dead", 0, 0),
        };
        sqlx::query(
            "UPDATE email_deliveries SET status = $2, attempts = $3, next_attempt_at_ms = $4, \
             leased_until_ms = 0, last_error = $5, sent_at_ms = $6 WHERE id = $1",
        )
        .bind(&due.id)
        .bind(status)
        .bind(i64::from(due.attempts + 1))
        .bind(next)
        .bind(failure.unwrap_or_default())
        .bind(sent_at)
        .execute(self.db.pool())
        .await?;
        Ok(())
    }

    /// The status of each email of a notification, by address (for tests and support).
    pub async fn statuses(&self, notification_id: &str) -> Result<Vec<(String, String)>, DbError> {
        let rows = sqlx::query(
            "SELECT address, status FROM email_deliveries WHERE notification_id = $1 ORDER BY address",
        )
        .bind(notification_id)
        .fetch_all(self.db.pool())
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect::<Result<_, sqlx::Error>>()
            .map_err(DbError::Query)
    }
}
