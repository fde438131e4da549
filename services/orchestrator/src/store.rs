//! Sessions and their messages, in portable SQL; every query names its tenant.

use serde_json::Value;
use somagent_common::clock::unix_now;
use somagent_common::infra::db::{self, Db, DbError, FromAnyRow, Migration};
use somagent_common::tenant::TenantId;
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::domain::approval::{Approval, ApprovalStatus};
use crate::domain::session::Session;

/// Never edit one that has been applied: add the next.
pub const MIGRATIONS: &[Migration] = &[
    Migration::portable(
        1,
        "sessions",
        include_str!("../migrations/0001_sessions.sql"),
    ),
    Migration::portable(
        2,
        "workflows moved",
        include_str!("../migrations/0002_workflows_moved.sql"),
    ),
    Migration::portable(
        3,
        "tool approvals",
        include_str!("../migrations/0003_tool_approvals.sql"),
    ),
    Migration::portable(
        4,
        "agent runs",
        include_str!("../migrations/0004_agent_runs.sql"),
    ),
];

const APPROVAL_COLUMNS: &str = "session_id, turn, call_id, tool, action, arguments, status, requested_by, \
     requested_at, expires_at, resolved_by, reason, resolved_at";

#[derive(Debug, Clone, PartialEq)]
pub struct StoredMessage {
    pub id: String,
    pub session_id: String,
    pub turn: u32,
    pub role: String,
    pub content: String,
    pub tool_calls: String,
    pub tool_call_id: String,
    pub created_at: i64,
}

#[derive(Clone)]
pub struct SessionStore {
    db: Db,
}

const SESSION_COLUMNS: &str =
    "id, tenant_id, owner, status, capsule_id, model, metadata, turns, created_at";
const MESSAGE_COLUMNS: &str =
    "id, session_id, turn, role, content, tool_calls, tool_call_id, created_at";

impl SessionStore {
    pub fn new(db: Db) -> Self {
        Self { db }
    }

    pub async fn create(&self, s: &Session) -> Result<(), DbError> {
        sqlx::query(
            "INSERT INTO sessions (id, tenant_id, owner, status, capsule_id, model, metadata, turns, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, 0, $8, $8)",
        )
        .bind(&s.id)
        .bind(&s.tenant)
        .bind(&s.owner)
        .bind(&s.status)
        .bind(&s.capsule_id)
        .bind(&s.model)
        .bind(s.metadata.to_string())
        .bind(s.created_at)
        .execute(self.db.pool())
        .await?;
        Ok(())
    }

    pub async fn get(&self, tenant: &TenantId, id: &str) -> Result<Option<Session>, DbError> {
        let sql = format!(
            "SELECT {SESSION_COLUMNS} FROM sessions WHERE tenant_id = $1 AND id = $2 AND status <> 'deleted'"
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(tenant)
            .bind(id)
            .fetch_optional(self.db.pool())
            .await?;
        db::optional(row)
    }

    /// A page of the tenant's sessions (of `owner` if given), after `after`.
    pub async fn list(
        &self,
        tenant: &TenantId,
        owner: Option<&str>,
        after: &str,
        limit: i64,
    ) -> Result<Vec<Session>, DbError> {
        let sql = format!(
            "SELECT {SESSION_COLUMNS} FROM sessions WHERE tenant_id = $1 AND status <> 'deleted' AND id > $2 \
             AND ($3 = '' OR owner = $3) ORDER BY id LIMIT $4"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(tenant)
            .bind(after)
            .bind(owner.unwrap_or_default())
            .bind(limit)
            .fetch_all(self.db.pool())
            .await?;
        db::all(&rows)
    }

    pub async fn delete(&self, tenant: &TenantId, id: &str) -> Result<bool, DbError> {
        Ok(sqlx::query("UPDATE sessions SET status = 'deleted', updated_at = $1 WHERE tenant_id = $2 AND id = $3 AND status <> 'deleted'")
            .bind(unix_now())
            .bind(tenant)
            .bind(id)
            .execute(self.db.pool())
            .await?
            .rows_affected()
            == 1)
    }

    /// Opens turn n+1 of an idle session and stores the user's message with it, in one
    /// transaction; None if the session is busy with a turn (or gone).
    pub async fn begin_turn(
        &self,
        tenant: &TenantId,
        id: &str,
        content: &str,
    ) -> Result<Option<u32>, DbError> {
        let mut tx = self.db.begin().await?;
        let claimed = sqlx::query(
            "UPDATE sessions SET status = 'running', turns = turns + 1, updated_at = $1 \
             WHERE tenant_id = $2 AND id = $3 AND status = 'idle'",
        )
        .bind(unix_now())
        .bind(tenant)
        .bind(id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if claimed != 1 {
            return Ok(None);
        }
        let turn: i64 = sqlx::query("SELECT turns FROM sessions WHERE id = $1")
            .bind(id)
            .fetch_one(&mut *tx)
            .await?
            .try_get(0)?;
        let position = next_position(&mut tx, id).await?;
        insert_message(
            &mut tx,
            tenant,
            &format!("session-{id}-turn-{turn}-user"),
            id,
            turn,
            position,
            "user",
            content,
            "",
            "",
        )
        .await?;
        tx.commit().await?;
        Ok(Some(turn as u32))
    }

    /// Stores a turn's new messages once (ids fixed by the turn), and makes the session
    /// idle again. `tenant` is a string as the turn workflow carries it (in its
    /// serialized input).
    pub async fn finish_turn(
        &self,
        tenant: &TenantId,
        id: &str,
        turn: u32,
        messages: &[(String, String, String, String)],
    ) -> Result<(), DbError> {
        let mut tx = self.db.begin().await?;
        for (i, (role, content, tool_calls, tool_call_id)) in messages.iter().enumerate() {
            let message_id = format!("session-{id}-turn-{turn}-{i}");
            let exists = sqlx::query("SELECT 1 FROM messages WHERE id = $1")
                .bind(&message_id)
                .fetch_optional(&mut *tx)
                .await?
                .is_some();
            if !exists {
                let position = next_position(&mut tx, id).await?;
                insert_message(
                    &mut tx,
                    tenant,
                    &message_id,
                    id,
                    i64::from(turn),
                    position,
                    role,
                    content,
                    tool_calls,
                    tool_call_id,
                )
                .await?;
            }
        }
        sqlx::query("UPDATE sessions SET status = 'idle', updated_at = $1 WHERE tenant_id = $2 AND id = $3 AND status = 'running'")
            .bind(unix_now())
            .bind(tenant)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The session's messages in order, after position `after`. `tenant` is a string
    /// because the turn workflow reads them too, with the tenant as its input carries it.
    pub async fn messages(
        &self,
        tenant: &TenantId,
        id: &str,
        after: i64,
        limit: i64,
    ) -> Result<Vec<(i64, StoredMessage)>, DbError> {
        let sql = format!(
            "SELECT {MESSAGE_COLUMNS}, position FROM messages WHERE tenant_id = $1 AND session_id = $2 AND position > $3 \
             ORDER BY position LIMIT $4"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(tenant)
            .bind(id)
            .bind(after)
            .bind(limit)
            .fetch_all(self.db.pool())
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get::<i64, _>(8)?, StoredMessage::from_row(r)?)))
            .collect::<Result<_, sqlx::Error>>()
            .map_err(DbError::Query)
    }
}

/// Approvals of tool calls: asked by a turn, answered by a person (or expired), settled
/// by the turn as it saw the answer.
impl SessionStore {
    /// Records that a call waits for approval; asking again (a retried step) changes
    /// nothing.
    pub async fn ask_approval(&self, tenant: &TenantId, a: &Approval) -> Result<(), DbError> {
        sqlx::query(
            "INSERT INTO tool_approvals (tenant_id, session_id, turn, call_id, tool, action, arguments, status, \
             requested_by, requested_at, expires_at, resolved_by, reason, resolved_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, '', '', NULL) ON CONFLICT DO NOTHING",
        )
        .bind(tenant)
        .bind(&a.session_id)
        .bind(i64::from(a.turn))
        .bind(&a.call_id)
        .bind(&a.tool)
        .bind(&a.action)
        .bind(&a.arguments)
        .bind(ApprovalStatus::Pending.as_str())
        .bind(&a.requested_by)
        .bind(a.requested_at)
        .bind(a.expires_at)
        .execute(self.db.pool())
        .await?;
        Ok(())
    }

    /// The newest approval of call `call_id` in the session.
    pub async fn approval(
        &self,
        tenant: &TenantId,
        session: &str,
        call_id: &str,
    ) -> Result<Option<Approval>, DbError> {
        let sql = format!(
            "SELECT {APPROVAL_COLUMNS} FROM tool_approvals WHERE tenant_id = $1 AND session_id = $2 AND call_id = $3 \
             ORDER BY turn DESC LIMIT 1"
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(tenant)
            .bind(session)
            .bind(call_id)
            .fetch_optional(self.db.pool())
            .await?;
        db::optional(row)
    }

    /// The session's approvals, newest first.
    pub async fn approvals(
        &self,
        tenant: &TenantId,
        session: &str,
        limit: i64,
    ) -> Result<Vec<Approval>, DbError> {
        let sql = format!(
            "SELECT {APPROVAL_COLUMNS} FROM tool_approvals WHERE tenant_id = $1 AND session_id = $2 \
             ORDER BY requested_at DESC, turn DESC, call_id LIMIT $3"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(tenant)
            .bind(session)
            .bind(limit)
            .fetch_all(self.db.pool())
            .await?;
        db::all(&rows)
    }

    /// A person's answer to a pending approval that has not expired at `now`; false if
    /// it was answered already or has expired (only one answer counts).
    #[allow(clippy::too_many_arguments)]
    pub async fn answer_approval(
        &self,
        tenant: &TenantId,
        session: &str,
        turn: u32,
        call_id: &str,
        status: ApprovalStatus,
        by: &str,
        reason: &str,
        now: i64,
    ) -> Result<bool, DbError> {
        Ok(sqlx::query(
            "UPDATE tool_approvals SET status = $1, resolved_by = $2, reason = $3, resolved_at = $4 \
             WHERE tenant_id = $5 AND session_id = $6 AND turn = $7 AND call_id = $8 AND status = 'pending' AND expires_at > $4",
        )
        .bind(status.as_str())
        .bind(by)
        .bind(reason)
        .bind(now)
        .bind(tenant)
        .bind(session)
        .bind(i64::from(turn))
        .bind(call_id)
        .execute(self.db.pool())
        .await?
        .rows_affected()
            == 1)
    }

    /// Takes back an answer the turn could not be told, so it may be given again.
    pub async fn reopen_approval(
        &self,
        tenant: &TenantId,
        session: &str,
        turn: u32,
        call_id: &str,
    ) -> Result<(), DbError> {
        sqlx::query(
            "UPDATE tool_approvals SET status = 'pending', resolved_by = '', reason = '', resolved_at = NULL \
             WHERE tenant_id = $1 AND session_id = $2 AND turn = $3 AND call_id = $4",
        )
        .bind(tenant)
        .bind(session)
        .bind(i64::from(turn))
        .bind(call_id)
        .execute(self.db.pool())
        .await?;
        Ok(())
    }

    /// How the approval ended as the turn saw it: that is what happened, whatever a late
    /// answer said.
    #[allow(clippy::too_many_arguments)]
    pub async fn settle_approval(
        &self,
        tenant: &TenantId,
        session: &str,
        turn: u32,
        call_id: &str,
        status: ApprovalStatus,
        by: &str,
        reason: &str,
        now: i64,
    ) -> Result<(), DbError> {
        sqlx::query(
            "UPDATE tool_approvals SET status = $1, resolved_by = $2, reason = $3, \
             resolved_at = COALESCE(resolved_at, $4) \
             WHERE tenant_id = $5 AND session_id = $6 AND turn = $7 AND call_id = $8",
        )
        .bind(status.as_str())
        .bind(by)
        .bind(reason)
        .bind(now)
        .bind(tenant)
        .bind(session)
        .bind(i64::from(turn))
        .bind(call_id)
        .execute(self.db.pool())
        .await?;
        Ok(())
    }
}

impl FromAnyRow for Approval {
    fn from_row(r: &AnyRow) -> Result<Self, sqlx::Error> {
        let status: String = r.try_get(6)?;
        Ok(Approval {
            session_id: r.try_get(0)?,
            turn: db::get_u32(r, 1)?,
            call_id: r.try_get(2)?,
            tool: r.try_get(3)?,
            action: r.try_get(4)?,
            arguments: r.try_get(5)?,
            status: ApprovalStatus::parse(&status).ok_or_else(|| {
                sqlx::Error::Decode(format!("an approval status `{status}`").into())
            })?,
            requested_by: r.try_get(7)?,
            requested_at: r.try_get(8)?,
            expires_at: r.try_get(9)?,
            resolved_by: r.try_get(10)?,
            reason: r.try_get(11)?,
            resolved_at: r.try_get(12)?,
        })
    }
}

async fn next_position(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    session: &str,
) -> Result<i64, DbError> {
    let last: Option<i64> = sqlx::query("SELECT MAX(position) FROM messages WHERE session_id = $1")
        .bind(session)
        .fetch_one(&mut **tx)
        .await?
        .try_get(0)?;
    Ok(last.unwrap_or(0) + 1)
}

#[allow(clippy::too_many_arguments)]
async fn insert_message(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    tenant: &TenantId,
    id: &str,
    session: &str,
    turn: i64,
    position: i64,
    role: &str,
    content: &str,
    tool_calls: &str,
    tool_call_id: &str,
) -> Result<(), DbError> {
    sqlx::query(
        "INSERT INTO messages (id, tenant_id, session_id, turn, position, role, content, tool_calls, tool_call_id, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(id)
    .bind(tenant)
    .bind(session)
    .bind(turn)
    .bind(position)
    .bind(role)
    .bind(content)
    .bind(tool_calls)
    .bind(tool_call_id)
    .bind(unix_now())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

impl FromAnyRow for Session {
    fn from_row(r: &AnyRow) -> Result<Self, sqlx::Error> {
        let metadata: String = r.try_get(6)?;
        Ok(Session {
            id: r.try_get(0)?,
            tenant: r.try_get(1)?,
            owner: r.try_get(2)?,
            status: r.try_get(3)?,
            capsule_id: r.try_get(4)?,
            model: r.try_get(5)?,
            metadata: serde_json::from_str(&metadata).unwrap_or(Value::Null),
            turns: db::get_u32(r, 7)?,
            created_at: r.try_get(8)?,
        })
    }
}

impl FromAnyRow for StoredMessage {
    fn from_row(r: &AnyRow) -> Result<Self, sqlx::Error> {
        Ok(StoredMessage {
            id: r.try_get(0)?,
            session_id: r.try_get(1)?,
            turn: db::get_u32(r, 2)?,
            role: r.try_get(3)?,
            content: r.try_get(4)?,
            tool_calls: r.try_get(5)?,
            tool_call_id: r.try_get(6)?,
            created_at: r.try_get(7)?,
        })
    }
}
