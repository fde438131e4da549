//! The tenants' webhook endpoints and their deliveries, in the service's database.
//!
//! An endpoint's signing secret is sealed under the master key, bound to its tenant and
//! id, and shown to the caller once (on creation and rotation). A delivery is a row per
//! message and endpoint, queued in the same transaction as the notification it carries
//! (so nothing acknowledged is lost), claimed by a sender with a lease (so replicas
//! never send one at the same time), and logged attempt by attempt.

use serde::Serialize;
use serde_json::{Value, json};
use somagent_common::clock::unix_now_ms;
use somagent_common::error::ApiError;
use somagent_common::infra::db::{self, Db, DbError, DbKind, FromAnyRow};
use somagent_common::paging::{Cursor, PageSize};
use somagent_common::secrets::{ResealScope, Sealer};
use somagent_common::tenant::TenantId;
use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};
use std::sync::Arc;
use zeroize::Zeroizing;

use crate::domain::endpoint;
use crate::domain::notice::Notice;
use crate::domain::signature;

/// Endpoints one tenant may have.
pub const MAX_ENDPOINTS: i64 = 50;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Endpoint {
    pub id: String,
    pub url: String,
    pub description: String,
    pub event_types: Vec<String>,
    pub enabled: bool,
    pub disabled_reason: String,
    pub failing_since_ms: i64,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

const ENDPOINT_COLUMNS: &str = "id, url, description, event_types, enabled, disabled_reason, \
     failing_since_ms, created_at_ms, updated_at_ms";

impl FromAnyRow for Endpoint {
    fn from_row(row: &AnyRow) -> Result<Self, sqlx::Error> {
        Ok(Self {
            id: row.try_get(0)?,
            url: row.try_get(1)?,
            description: row.try_get(2)?,
            event_types: db::get_words(row, 3, |w| Some(w.to_owned()))?,
            enabled: db::get_bool(row, 4)?,
            disabled_reason: row.try_get(5)?,
            failing_since_ms: row.try_get(6)?,
            created_at_ms: row.try_get(7)?,
            updated_at_ms: row.try_get(8)?,
        })
    }
}

/// What a change to an endpoint sets; `None` keeps the current value.
#[derive(Debug, Default)]
pub struct Change {
    pub url: Option<String>,
    pub description: Option<String>,
    pub event_types: Option<Vec<String>>,
    pub enabled: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Attempt {
    pub number: u32,
    pub at_ms: i64,
    pub status_code: u32,
    pub latency_ms: u64,
    pub error: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Delivery {
    pub id: String,
    pub endpoint_id: String,
    pub message_id: String,
    pub event_type: String,
    pub payload: String,
    pub status: String,
    pub attempts: u32,
    pub next_attempt_at_ms: i64,
    pub created_at_ms: i64,
    pub delivered_at_ms: i64,
    pub history: Vec<Attempt>,
}

const DELIVERY_COLUMNS: &str = "id, endpoint_id, message_id, event_type, payload, status, \
     attempts, next_attempt_at_ms, created_at_ms, delivered_at_ms";

impl FromAnyRow for Delivery {
    fn from_row(row: &AnyRow) -> Result<Self, sqlx::Error> {
        Ok(Self {
            id: row.try_get(0)?,
            endpoint_id: row.try_get(1)?,
            message_id: row.try_get(2)?,
            event_type: row.try_get(3)?,
            payload: row.try_get(4)?,
            status: row.try_get(5)?,
            attempts: db::get_u32(row, 6)?,
            next_attempt_at_ms: row.try_get(7)?,
            created_at_ms: row.try_get(8)?,
            delivered_at_ms: row.try_get(9)?,
            history: Vec::new(),
        })
    }
}

/// A delivery claimed for sending, with what sending needs.
pub struct Due {
    pub id: String,
    pub tenant: TenantId,
    pub endpoint_id: String,
    pub url: String,
    pub message_id: String,
    pub payload: String,
    /// Tries made before this one.
    pub attempts: u32,
    pub secret: Zeroizing<String>,
}

/// How one try went.
pub struct Outcome {
    pub status_code: u32,
    pub latency_ms: u64,
    /// Empty on success.
    pub error: String,
}

impl Outcome {
    pub fn succeeded(&self) -> bool {
        (200..300).contains(&self.status_code)
    }
}

/// What recording a try did to its endpoint.
#[derive(Debug, PartialEq, Eq)]
pub enum Health {
    Fine,
    /// Its deliveries have failed for longer than the operator allows: now disabled.
    Disabled,
}

#[derive(Clone)]
pub struct Webhooks {
    db: Db,
    sealer: Arc<Sealer>,
    allow_private: bool,
}

/// What a sealed secret is bound to: a sealed value moved to another row does not open.
fn binding(tenant: &TenantId, id: &str) -> String {
    format!("webhook-secret:{tenant}:{id}")
}

fn invalid(field: &str) -> impl Fn(String) -> ApiError + '_ {
    move |message| ApiError::validation(field, message)
}

impl Webhooks {
    pub fn new(db: Db, sealer: Arc<Sealer>, allow_private: bool) -> Self {
        Self {
            db,
            sealer,
            allow_private,
        }
    }

    pub fn allows_private(&self) -> bool {
        self.allow_private
    }

    /// A new endpoint and its secret (shown this once).
    pub async fn create(
        &self,
        tenant: &TenantId,
        url: &str,
        description: &str,
        event_types: &[String],
    ) -> Result<(Endpoint, Zeroizing<String>), ApiError> {
        let url = endpoint::check_url(url, self.allow_private).map_err(invalid("url"))?;
        let types = endpoint::check_types(event_types).map_err(invalid("event_types"))?;
        check_description(description)?;
        let count: i64 = sqlx::query("SELECT COUNT(*) FROM webhook_endpoints WHERE tenant_id = $1")
            .bind(tenant.as_str())
            .fetch_one(self.db.pool())
            .await
            .map_err(ApiError::internal)?
            .try_get(0)
            .map_err(ApiError::internal)?;
        if count >= MAX_ENDPOINTS {
            return Err(ApiError::validation(
                "url",
                format!("a tenant has at most {MAX_ENDPOINTS} webhook endpoints"),
            ));
        }
        let id = uuid::Uuid::now_v7().to_string();
        let secret = signature::new_secret();
        let now = unix_now_ms();
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO webhook_endpoints (tenant_id, secret, {ENDPOINT_COLUMNS}) \
             VALUES ($1, $2, $3, $4, $5, $6, 1, '', 0, $7, $7)"
        )))
        .bind(tenant.as_str())
        .bind(self.sealer.seal(secret.as_bytes(), &binding(tenant, &id)))
        .bind(&id)
        .bind(url.as_str())
        .bind(description)
        .bind(types.join(" "))
        .bind(now)
        .execute(self.db.pool())
        .await
        .map_err(ApiError::internal)?;
        let created = self.get(tenant, &id).await?;
        Ok((created, secret))
    }

    pub async fn list(&self, tenant: &TenantId) -> Result<Vec<Endpoint>, DbError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE tenant_id = $1 ORDER BY id"
        )))
        .bind(tenant.as_str())
        .fetch_all(self.db.pool())
        .await?;
        db::all(&rows)
    }

    pub async fn get(&self, tenant: &TenantId, id: &str) -> Result<Endpoint, ApiError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE tenant_id = $1 AND id = $2"
        )))
        .bind(tenant.as_str())
        .bind(id)
        .fetch_optional(self.db.pool())
        .await
        .map_err(ApiError::internal)?;
        db::optional(row)
            .map_err(ApiError::internal)?
            .ok_or_else(|| ApiError::not_found("webhook"))
    }

    pub async fn update(
        &self,
        tenant: &TenantId,
        id: &str,
        change: Change,
    ) -> Result<Endpoint, ApiError> {
        let current = self.get(tenant, id).await?;
        let url = match &change.url {
            Some(url) => endpoint::check_url(url, self.allow_private)
                .map_err(invalid("url"))?
                .to_string(),
            None => current.url,
        };
        let types = match &change.event_types {
            Some(types) => endpoint::check_types(types).map_err(invalid("event_types"))?,
            None => current.event_types,
        };
        let description = change.description.unwrap_or(current.description);
        check_description(&description)?;
        let enabled = change.enabled.unwrap_or(current.enabled);
        // Enabling again starts its health afresh.
        let (reason, failing_since) = if enabled && !current.enabled {
            (String::new(), 0)
        } else {
            (current.disabled_reason, current.failing_since_ms)
        };
        sqlx::query(
            "UPDATE webhook_endpoints SET url = $3, description = $4, event_types = $5, \
             enabled = $6, disabled_reason = $7, failing_since_ms = $8, updated_at_ms = $9 \
             WHERE tenant_id = $1 AND id = $2",
        )
        .bind(tenant.as_str())
        .bind(id)
        .bind(&url)
        .bind(&description)
        .bind(types.join(" "))
        .bind(i64::from(enabled))
        .bind(&reason)
        .bind(failing_since)
        .bind(unix_now_ms())
        .execute(self.db.pool())
        .await
        .map_err(ApiError::internal)?;
        self.get(tenant, id).await
    }

    /// Removes an endpoint with its deliveries and their log.
    pub async fn delete(&self, tenant: &TenantId, id: &str) -> Result<(), ApiError> {
        let mut tx = self.db.begin().await.map_err(ApiError::internal)?;
        let gone = sqlx::query("DELETE FROM webhook_endpoints WHERE tenant_id = $1 AND id = $2")
            .bind(tenant.as_str())
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(ApiError::internal)?
            .rows_affected();
        if gone == 0 {
            return Err(ApiError::not_found("webhook"));
        }
        sqlx::query(
            "DELETE FROM webhook_attempts WHERE delivery_id IN \
             (SELECT id FROM webhook_deliveries WHERE tenant_id = $1 AND endpoint_id = $2)",
        )
        .bind(tenant.as_str())
        .bind(id)
        .execute(&mut *tx)
        .await
        .map_err(ApiError::internal)?;
        sqlx::query("DELETE FROM webhook_deliveries WHERE tenant_id = $1 AND endpoint_id = $2")
            .bind(tenant.as_str())
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(ApiError::internal)?;
        tx.commit().await.map_err(ApiError::internal)?;
        Ok(())
    }

    /// A new secret for an endpoint, shown this once; the old one signs no more.
    pub async fn rotate(
        &self,
        tenant: &TenantId,
        id: &str,
    ) -> Result<(Endpoint, Zeroizing<String>), ApiError> {
        let secret = signature::new_secret();
        let done = sqlx::query(
            "UPDATE webhook_endpoints SET secret = $3, updated_at_ms = $4 WHERE tenant_id = $1 AND id = $2",
        )
        .bind(tenant.as_str())
        .bind(id)
        .bind(self.sealer.seal(secret.as_bytes(), &binding(tenant, id)))
        .bind(unix_now_ms())
        .execute(self.db.pool())
        .await
        .map_err(ApiError::internal)?
        .rows_affected();
        if done == 0 {
            return Err(ApiError::not_found("webhook"));
        }
        Ok((self.get(tenant, id).await?, secret))
    }

    /// Queues `notice` for every enabled endpoint of the tenant that receives its kind,
    /// in `tx`; how many deliveries were new.
    pub async fn enqueue(
        tx: &mut Transaction<'static, Any>,
        tenant: &TenantId,
        notice: &Notice,
        at_ms: i64,
    ) -> Result<u64, DbError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE tenant_id = $1 AND enabled = 1"
        )))
        .bind(tenant.as_str())
        .fetch_all(&mut **tx)
        .await?;
        let endpoints: Vec<Endpoint> = db::all(&rows)?;
        let message_id = format!("msg_{}", notice.id.simple());
        let payload = payload(tenant, notice, at_ms).to_string();
        let mut queued = 0;
        for e in endpoints
            .iter()
            .filter(|e| endpoint::receives(&e.event_types, &notice.kind))
        {
            queued += sqlx::query(
                "INSERT INTO webhook_deliveries (id, tenant_id, endpoint_id, message_id, event_type, \
                 payload, status, attempts, next_attempt_at_ms, leased_until_ms, created_at_ms, delivered_at_ms) \
                 VALUES ($1, $2, $3, $4, $5, $6, 'pending', 0, $7, 0, $7, 0) \
                 ON CONFLICT (endpoint_id, message_id) DO NOTHING",
            )
            .bind(uuid::Uuid::now_v7().to_string())
            .bind(tenant.as_str())
            .bind(&e.id)
            .bind(&message_id)
            .bind(&notice.kind)
            .bind(&payload)
            .bind(at_ms)
            .execute(&mut **tx)
            .await?
            .rows_affected();
        }
        Ok(queued)
    }

    /// Leases up to `limit` due deliveries until `lease_until_ms`, leaving out the
    /// endpoints in `busy`; each with what sending it needs. A delivery whose secret
    /// does not open is not claimed again for an hour (and logged).
    pub async fn claim_due(
        &self,
        limit: usize,
        lease_until_ms: i64,
        busy: &[String],
    ) -> Result<Vec<Due>, DbError> {
        self.claim_due_fairly(limit, lease_until_ms, busy, &[])
            .await
    }

    /// [`Webhooks::claim_due`] leaving out the tenants in `busy_tenants` too: one
    /// tenant's slow endpoints do not take every slot from the others.
    pub async fn claim_due_fairly(
        &self,
        limit: usize,
        lease_until_ms: i64,
        busy: &[String],
        busy_tenants: &[String],
    ) -> Result<Vec<Due>, DbError> {
        let now = unix_now_ms();
        let mut skip = String::new();
        if !busy.is_empty() {
            skip.push_str(&format!(
                " AND d.endpoint_id NOT IN ({})",
                db::numbered_params(4, busy.len())
            ));
        }
        if !busy_tenants.is_empty() {
            skip.push_str(&format!(
                " AND d.tenant_id NOT IN ({})",
                db::numbered_params(4 + busy.len(), busy_tenants.len())
            ));
        }
        // PostgreSQL: replicas claiming at once skip each other's rows; the outer
        // condition on the lease is checked again on the locked row either way.
        let lock = if self.db.kind() == DbKind::Postgres {
            " FOR UPDATE OF d SKIP LOCKED"
        } else {
            ""
        };
        let sql = format!(
            "UPDATE webhook_deliveries SET leased_until_ms = $1 WHERE id IN (\
             SELECT d.id FROM webhook_deliveries d JOIN webhook_endpoints e ON e.id = d.endpoint_id \
             WHERE d.status = 'pending' AND d.next_attempt_at_ms <= $2 AND d.leased_until_ms <= $2 \
             AND e.enabled = 1{skip} ORDER BY d.next_attempt_at_ms LIMIT $3{lock}) \
             AND leased_until_ms <= $2 RETURNING id"
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(lease_until_ms)
            .bind(now)
            .bind(i64::try_from(limit).unwrap_or(i64::MAX));
        for b in busy.iter().chain(busy_tenants) {
            query = query.bind(b);
        }
        let claimed: Vec<String> = query
            .fetch_all(self.db.pool())
            .await?
            .iter()
            .map(|r| r.try_get::<String, _>(0))
            .collect::<Result<_, _>>()?;
        if claimed.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!(
            "SELECT d.id, d.tenant_id, d.endpoint_id, e.url, d.message_id, d.payload, d.attempts, e.secret \
             FROM webhook_deliveries d JOIN webhook_endpoints e ON e.id = d.endpoint_id \
             WHERE d.id IN ({})",
            db::numbered_params(1, claimed.len())
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for id in &claimed {
            query = query.bind(id);
        }
        let mut due = Vec::with_capacity(claimed.len());
        for row in query.fetch_all(self.db.pool()).await? {
            let id: String = row.try_get(0)?;
            let tenant: TenantId = row.try_get(1)?;
            let endpoint_id: String = row.try_get(2)?;
            let sealed: String = row.try_get(7)?;
            match self
                .sealer
                .open_text(&sealed, &binding(&tenant, &endpoint_id))
            {
                Ok(secret) => due.push(Due {
                    id,
                    tenant,
                    endpoint_id,
                    url: row.try_get(3)?,
                    message_id: row.try_get(4)?,
                    payload: row.try_get(5)?,
                    attempts: db::get_u32(&row, 6)?,
                    secret,
                }),
                Err(e) => {
                    tracing::error!(delivery = %id, endpoint = %endpoint_id, error = %e,
                        "a webhook's secret does not open; its delivery waits an hour");
                    sqlx::query("UPDATE webhook_deliveries SET leased_until_ms = $2 WHERE id = $1")
                        .bind(&id)
                        .bind(now + 3_600_000)
                        .execute(self.db.pool())
                        .await?;
                }
            }
        }
        Ok(due)
    }

    /// Gives back leases on deliveries not tried after all.
    pub async fn unclaim(&self, ids: &[String]) -> Result<(), DbError> {
        if ids.is_empty() {
            return Ok(());
        }
        let sql = format!(
            "UPDATE webhook_deliveries SET leased_until_ms = 0 WHERE id IN ({})",
            db::numbered_params(1, ids.len())
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for id in ids {
            query = query.bind(id);
        }
        query.execute(self.db.pool()).await?;
        Ok(())
    }

    /// Logs a try of `due` and settles what follows: delivered, another try at
    /// `next_at_ms`, or (`None`) dead. An endpoint that has failed for longer than
    /// `disable_after_ms` without a success is disabled.
    pub async fn record(
        &self,
        due: &Due,
        outcome: &Outcome,
        next_at_ms: Option<i64>,
        disable_after_ms: i64,
    ) -> Result<Health, DbError> {
        Ok(self
            .record_many(&[(due, outcome, next_at_ms)], disable_after_ms)
            .await?
            .remove(0))
    }

    /// [`Webhooks::record`] for several tries at once, in one commit: the sender's
    /// tries finish together, and one commit for all of them is what lets a queue on
    /// one SQLite file keep up with many endpoints.
    pub async fn record_many(
        &self,
        tries: &[(&Due, &Outcome, Option<i64>)],
        disable_after_ms: i64,
    ) -> Result<Vec<Health>, DbError> {
        let mut tx = self.db.begin().await?;
        let mut healths = Vec::with_capacity(tries.len());
        for (due, outcome, next_at_ms) in tries {
            healths.push(record_in(&mut tx, due, outcome, *next_at_ms, disable_after_ms).await?);
        }
        tx.commit().await?;
        Ok(healths)
    }

    /// A page of an endpoint's deliveries, newest first, each with its attempts.
    pub async fn deliveries(
        &self,
        tenant: &TenantId,
        endpoint_id: &str,
        status: &str,
        size: PageSize,
        cursor: &str,
    ) -> Result<(Vec<Delivery>, String), ApiError> {
        self.get(tenant, endpoint_id).await?;
        if !status.is_empty() && !["pending", "delivered", "dead"].contains(&status) {
            return Err(ApiError::validation(
                "status",
                "is pending, delivered or dead",
            ));
        }
        let mut sql = format!(
            "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries WHERE tenant_id = $1 AND endpoint_id = $2"
        );
        let before = if cursor.is_empty() {
            None
        } else {
            let fields = Cursor::decode(cursor, 1)
                .ok_or_else(|| ApiError::validation("cursor", "is not one this list gave"))?;
            fields.into_iter().next()
        };
        let mut next = 3;
        if !status.is_empty() {
            sql.push_str(&format!(" AND status = ${next}"));
            next += 1;
        }
        if before.is_some() {
            sql.push_str(&format!(" AND id < ${next}"));
        }
        sql.push_str(&format!(" ORDER BY id DESC LIMIT {}", size.rows_to_read()));
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(tenant.as_str())
            .bind(endpoint_id);
        if !status.is_empty() {
            query = query.bind(status);
        }
        if let Some(before) = &before {
            query = query.bind(before);
        }
        let rows = query
            .fetch_all(self.db.pool())
            .await
            .map_err(ApiError::internal)?;
        let (mut page, next_cursor) = size.cut(
            db::all::<Delivery>(&rows).map_err(ApiError::internal)?,
            |d| Cursor::encode(&[&d.id]),
        );
        self.fill_history(&mut page)
            .await
            .map_err(ApiError::internal)?;
        Ok((page, next_cursor))
    }

    async fn fill_history(&self, deliveries: &mut [Delivery]) -> Result<(), DbError> {
        if deliveries.is_empty() {
            return Ok(());
        }
        let sql = format!(
            "SELECT delivery_id, number, at_ms, status_code, latency_ms, error FROM webhook_attempts \
             WHERE delivery_id IN ({}) ORDER BY delivery_id, number",
            db::numbered_params(1, deliveries.len())
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for d in deliveries.iter() {
            query = query.bind(&d.id);
        }
        for row in query.fetch_all(self.db.pool()).await? {
            let of: String = row.try_get(0)?;
            let attempt = Attempt {
                number: db::get_u32(&row, 1)?,
                at_ms: row.try_get(2)?,
                status_code: db::get_u32(&row, 3)?,
                latency_ms: u64::try_from(row.try_get::<i64, _>(4)?).unwrap_or(0),
                error: row.try_get(5)?,
            };
            if let Some(d) = deliveries.iter_mut().find(|d| d.id == of) {
                d.history.push(attempt);
            }
        }
        Ok(())
    }

    /// Queues a delivery again for now, whatever became of it (a dead one included).
    pub async fn retry(
        &self,
        tenant: &TenantId,
        endpoint_id: &str,
        delivery_id: &str,
    ) -> Result<Delivery, ApiError> {
        self.get(tenant, endpoint_id).await?;
        // A delivery being tried right now is left to that try (its lease holds).
        let done = sqlx::query(
            "UPDATE webhook_deliveries SET status = 'pending', next_attempt_at_ms = $4, leased_until_ms = 0 \
             WHERE tenant_id = $1 AND endpoint_id = $2 AND id = $3 AND leased_until_ms <= $4",
        )
        .bind(tenant.as_str())
        .bind(endpoint_id)
        .bind(delivery_id)
        .bind(unix_now_ms())
        .execute(self.db.pool())
        .await
        .map_err(ApiError::internal)?
        .rows_affected();
        if done == 0 {
            let exists = sqlx::query(
                "SELECT 1 FROM webhook_deliveries WHERE tenant_id = $1 AND endpoint_id = $2 AND id = $3",
            )
            .bind(tenant.as_str())
            .bind(endpoint_id)
            .bind(delivery_id)
            .fetch_optional(self.db.pool())
            .await
            .map_err(ApiError::internal)?
            .is_some();
            return Err(if exists {
                ApiError::new(
                    somagent_common::error::ErrorCode::Conflict,
                    "the delivery is being tried right now; see its log in a moment",
                )
            } else {
                ApiError::not_found("delivery")
            });
        }
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries WHERE id = $1"
        )))
        .bind(delivery_id)
        .fetch_one(self.db.pool())
        .await
        .map_err(ApiError::internal)?;
        let mut one = vec![Delivery::from_row(&row).map_err(ApiError::internal)?];
        self.fill_history(&mut one)
            .await
            .map_err(ApiError::internal)?;
        Ok(one.remove(0))
    }

    /// Re-seals the endpoints' secrets `scope` asks for (a master key rotation).
    pub async fn reseal(&self, scope: ResealScope) -> anyhow::Result<u64> {
        let rows = sqlx::query("SELECT tenant_id, id, secret FROM webhook_endpoints")
            .fetch_all(self.db.pool())
            .await?;
        let mut done = 0;
        for row in rows {
            let (tenant, id, stored): (TenantId, String, String) =
                (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
            if !scope.wants(&self.sealer, &stored) {
                continue;
            }
            let bound = binding(&tenant, &id);
            let plain = self.sealer.open(&stored, &bound)?;
            done += sqlx::query(
                "UPDATE webhook_endpoints SET secret = $1 WHERE tenant_id = $2 AND id = $3 AND secret = $4",
            )
            .bind(self.sealer.seal(&plain, &bound))
            .bind(&tenant)
            .bind(&id)
            .bind(&stored)
            .execute(self.db.pool())
            .await?
            .rows_affected();
        }
        Ok(done)
    }
}

/// One try's record, in `tx`: the attempt row, the delivery's new state, and the
/// endpoint's health.
async fn record_in(
    tx: &mut Transaction<'static, Any>,
    due: &Due,
    outcome: &Outcome,
    next_at_ms: Option<i64>,
    disable_after_ms: i64,
) -> Result<Health, DbError> {
    let now = unix_now_ms();
    let number = due.attempts + 1;
    sqlx::query(
        "INSERT INTO webhook_attempts (delivery_id, number, at_ms, status_code, latency_ms, error) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (delivery_id, number) DO NOTHING",
    )
    .bind(&due.id)
    .bind(i64::from(number))
    .bind(now)
    .bind(i64::from(outcome.status_code))
    .bind(i64::try_from(outcome.latency_ms).unwrap_or(i64::MAX))
    .bind(&outcome.error)
    .execute(&mut **tx)
    .await?;
    let (status, next, delivered_at) = if outcome.succeeded() {
        ("delivered", 0, now)
    } else {
        match next_at_ms {
            Some(at) => ("pending", at, 0),
            None => ("dead", 0, 0),
        }
    };
    sqlx::query(
        "UPDATE webhook_deliveries SET status = $2, attempts = $3, next_attempt_at_ms = $4, \
             leased_until_ms = 0, delivered_at_ms = $5 WHERE id = $1",
    )
    .bind(&due.id)
    .bind(status)
    .bind(i64::from(number))
    .bind(next)
    .bind(delivered_at)
    .execute(&mut **tx)
    .await?;
    let health = if outcome.succeeded() {
        sqlx::query(
                "UPDATE webhook_endpoints SET failing_since_ms = 0 WHERE id = $1 AND failing_since_ms <> 0",
            )
            .bind(&due.endpoint_id)
            .execute(&mut **tx)
            .await?;
        Health::Fine
    } else {
        sqlx::query(
                "UPDATE webhook_endpoints SET failing_since_ms = $2 WHERE id = $1 AND failing_since_ms = 0",
            )
            .bind(&due.endpoint_id)
            .bind(now)
            .execute(&mut **tx)
            .await?;
        let disabled = sqlx::query(
                "UPDATE webhook_endpoints SET enabled = 0, disabled_reason = $3, updated_at_ms = $2 \
                 WHERE id = $1 AND enabled = 1 AND failing_since_ms <> 0 AND failing_since_ms <= $4",
            )
            .bind(&due.endpoint_id)
            .bind(now)
            .bind(format!(
                "every delivery failed for {} hours; the last: {}",
                disable_after_ms / 3_600_000,
                outcome.error
            ))
            .bind(now - disable_after_ms)
            .execute(&mut **tx)
            .await?
            .rows_affected();
        if disabled == 1 {
            Health::Disabled
        } else {
            Health::Fine
        }
    };
    Ok(health)
}

fn check_description(description: &str) -> Result<(), ApiError> {
    if description.chars().count() > 500 {
        return Err(ApiError::validation(
            "description",
            "is at most 500 characters",
        ));
    }
    Ok(())
}

/// The body every endpoint receives for a notice, as the Standard Webhooks
/// specification suggests: `{type, timestamp, data}`.
pub fn payload(tenant: &TenantId, notice: &Notice, at_ms: i64) -> Value {
    let timestamp = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(at_ms) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default();
    json!({
        "type": notice.kind,
        "timestamp": timestamp,
        "data": {
            "id": notice.id,
            "tenant": tenant,
            "audience": notice.audience.as_str(),
            "user_id": notice.audience.user_id(),
            "severity": notice.severity.as_str(),
            "title": notice.title,
            "body": notice.body,
            "details": notice.data,
        },
    })
}
