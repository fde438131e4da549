//! The local engine's tables: leases on runs, the journal of steps, durable deadlines
//! and signals. Portable SQL.

use somagent_common::tenant::TenantId;
use std::collections::HashMap;

use serde_json::Value;
use somagent_common::clock::unix_now_ms;
use somagent_common::infra::db::Db;
use sqlx::Row;

use crate::engine::{EngineError, StepView};
use crate::error::ActivityError;

/// A step's recorded answer.
#[derive(Debug, Clone)]
pub struct Entry {
    pub kind: String,
    pub name: String,
    pub answer: Result<Value, ActivityError>,
}

/// A step as it is recorded.
pub struct Record<'a> {
    pub seq: u64,
    pub kind: &'a str,
    pub name: &'a str,
    pub answer: &'a Result<Value, ActivityError>,
    pub attempts: u32,
    pub started_at: i64,
    pub ended_at: i64,
}

pub struct Orphan {
    pub id: String,
    pub kind: String,
    pub tenant: TenantId,
    pub input: Value,
    pub cancel_requested: bool,
}

#[derive(Clone)]
pub struct Journal {
    db: Db,
}

fn encode(answer: &Result<Value, ActivityError>) -> (i64, String) {
    match answer {
        Ok(v) => (1, v.to_string()),
        Err(e) => (0, serde_json::to_string(e).unwrap_or_default()),
    }
}

fn decode(ok: bool, output: &str) -> Result<Value, ActivityError> {
    if ok {
        serde_json::from_str(output)
            .map_err(|e| ActivityError::undecodable("a journaled answer", &e))
    } else {
        Err(serde_json::from_str(output)
            .unwrap_or_else(|_| ActivityError::fatal("internal", "a journaled failure")))
    }
}

impl Journal {
    pub fn new(db: Db) -> Self {
        Self { db }
    }

    pub async fn orphans(&self, now: i64) -> Result<Vec<Orphan>, EngineError> {
        let rows = sqlx::query(
            "SELECT id, kind, tenant_id, input, cancel_requested FROM wf_runs \
             WHERE status = 'running' AND engine = 'local' AND lease_until < $1",
        )
        .bind(now)
        .fetch_all(self.db.pool())
        .await?;
        rows.iter()
            .map(|r| {
                let input: String = r.try_get(3)?;
                Ok(Orphan {
                    id: r.try_get(0)?,
                    kind: r.try_get(1)?,
                    tenant: r.try_get(2)?,
                    input: serde_json::from_str(&input).unwrap_or(Value::Null),
                    cancel_requested: r.try_get::<i64, _>(4)? != 0,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(EngineError::from)
    }

    /// Takes a lapsed lease; false if another process was quicker.
    pub async fn claim(&self, id: &str, owner: &str, until: i64) -> Result<bool, EngineError> {
        let now = unix_now_ms();
        Ok(sqlx::query(
            "UPDATE wf_runs SET lease_owner = $1, lease_until = $2, updated_at = $3 \
             WHERE id = $4 AND status = 'running' AND lease_until < $3",
        )
        .bind(owner)
        .bind(until)
        .bind(now)
        .bind(id)
        .execute(self.db.pool())
        .await?
        .rows_affected()
            == 1)
    }

    /// Extends the lease `owner` holds: whether a cancel was asked, or `None` if the
    /// lease is no longer `owner`'s.
    /// Writes the run's newly published state with it.
    pub async fn renew(
        &self,
        id: &str,
        owner: &str,
        until: i64,
        state: Option<&Value>,
    ) -> Result<Option<bool>, EngineError> {
        let row = sqlx::query(
            "UPDATE wf_runs SET lease_until = $1, state = COALESCE($4, state) WHERE id = $2 AND lease_owner = $3 AND status = 'running' \
             RETURNING cancel_requested",
        )
        .bind(until)
        .bind(id)
        .bind(owner)
        .bind(state.map(Value::to_string))
        .fetch_optional(self.db.pool())
        .await?;
        Ok(match row {
            Some(row) => Some(row.try_get::<i64, _>(0)? != 0),
            None => None,
        })
    }

    /// Gives up every lease `owner` holds.
    pub async fn release(&self, owner: &str) -> Result<(), EngineError> {
        sqlx::query(
            "UPDATE wf_runs SET lease_owner = NULL, lease_until = 0 WHERE lease_owner = $1 AND status = 'running'",
        )
        .bind(owner)
        .execute(self.db.pool())
        .await?;
        Ok(())
    }

    pub async fn load(&self, id: &str) -> Result<HashMap<u64, Entry>, EngineError> {
        let rows =
            sqlx::query("SELECT seq, kind, name, ok, output FROM wf_journal WHERE run_id = $1")
                .bind(id)
                .fetch_all(self.db.pool())
                .await?;
        rows.iter()
            .map(|r| {
                let output: String = r.try_get(4)?;
                Ok((
                    r.try_get::<i64, _>(0)? as u64,
                    Entry {
                        kind: r.try_get(1)?,
                        name: r.try_get(2)?,
                        answer: decode(r.try_get::<i64, _>(3)? == 1, &output),
                    },
                ))
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(EngineError::from)
    }

    pub async fn record(&self, id: &str, record: &Record<'_>) -> Result<(), EngineError> {
        let mut conn = self.db.pool().acquire().await.map_err(EngineError::from)?;
        insert_record(&mut conn, id, record).await
    }

    /// The run's recorded steps, in order, as operators see them.
    pub async fn steps(&self, id: &str) -> Result<Vec<StepView>, EngineError> {
        let rows = sqlx::query(
            "SELECT seq, kind, name, ok, output, attempts, started_at, ended_at FROM wf_journal \
             WHERE run_id = $1 ORDER BY seq",
        )
        .bind(id)
        .fetch_all(self.db.pool())
        .await?;
        rows.iter()
            .map(|r| {
                let ok = r.try_get::<i64, _>(3)? == 1;
                let output: String = r.try_get(4)?;
                Ok(StepView {
                    seq: r.try_get::<i64, _>(0)? as u64,
                    kind: r.try_get(1)?,
                    name: r.try_get(2)?,
                    status: if ok { "completed" } else { "failed" }.into(),
                    attempts: r.try_get::<i64, _>(5)? as u32,
                    started_at: Some(r.try_get(6)?),
                    ended_at: Some(r.try_get(7)?),
                    error: (!ok).then(|| {
                        ActivityError::public_of(
                            &serde_json::from_str(&output).unwrap_or(Value::Null),
                        )
                    }),
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(EngineError::from)
    }

    /// A timer or signal wait the run is in at step `seq`, if one is on record.
    pub async fn open_wait(&self, id: &str, seq: u64) -> Result<Option<StepView>, EngineError> {
        let row = sqlx::query("SELECT until_ms FROM wf_waits WHERE run_id = $1 AND seq = $2")
            .bind(id)
            .bind(seq as i64)
            .fetch_optional(self.db.pool())
            .await?;
        Ok(match row {
            Some(row) => Some(StepView {
                seq,
                kind: "wait".into(),
                name: format!("until {}", row.try_get::<i64, _>(0)?),
                status: "running".into(),
                attempts: 1,
                started_at: None,
                ended_at: None,
                error: None,
            }),
            None => None,
        })
    }

    /// When the wait at step `seq` ends: fixed the first time it is asked.
    pub async fn wait_until(&self, id: &str, seq: u64, until: i64) -> Result<i64, EngineError> {
        sqlx::query(
            "INSERT INTO wf_waits (run_id, seq, until_ms) VALUES ($1, $2, $3) ON CONFLICT (run_id, seq) DO NOTHING",
        )
        .bind(id)
        .bind(seq as i64)
        .bind(until)
        .execute(self.db.pool())
        .await?;
        let row = sqlx::query("SELECT until_ms FROM wf_waits WHERE run_id = $1 AND seq = $2")
            .bind(id)
            .bind(seq as i64)
            .fetch_one(self.db.pool())
            .await?;
        Ok(row.try_get(0)?)
    }

    pub async fn send_signal(
        &self,
        id: &str,
        name: &str,
        payload: &Value,
    ) -> Result<(), EngineError> {
        sqlx::query(
            "INSERT INTO wf_signals (run_id, name, payload, sent_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(id)
        .bind(name)
        .bind(payload.to_string())
        .bind(unix_now_ms())
        .execute(self.db.pool())
        .await?;
        Ok(())
    }

    /// Takes the oldest unread signal `name` for the wait at step `seq` and journals it
    /// as that step's answer, in one transaction.
    pub async fn take_signal(
        &self,
        id: &str,
        seq: u64,
        name: &str,
        started_at: i64,
    ) -> Result<Option<Value>, EngineError> {
        let mut tx = self.db.begin().await?;
        let row = sqlx::query(
            "SELECT id, payload FROM wf_signals WHERE run_id = $1 AND name = $2 AND taken_seq IS NULL ORDER BY id LIMIT 1",
        )
        .bind(id)
        .bind(name)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let signal: i64 = row.try_get(0)?;
        let payload: String = row.try_get(1)?;
        let payload = serde_json::from_str(&payload).unwrap_or(Value::Null);
        sqlx::query("UPDATE wf_signals SET taken_seq = $1 WHERE id = $2")
            .bind(seq as i64)
            .bind(signal)
            .execute(&mut *tx)
            .await?;
        let answer = Ok(serde_json::json!({ "received": payload }));
        insert_record(
            &mut tx,
            id,
            &Record {
                seq,
                kind: "signal",
                name,
                answer: &answer,
                attempts: 1,
                started_at,
                ended_at: unix_now_ms(),
            },
        )
        .await?;
        tx.commit().await.map_err(EngineError::from)?;
        Ok(Some(payload))
    }
}

async fn insert_record(
    conn: &mut sqlx::AnyConnection,
    id: &str,
    record: &Record<'_>,
) -> Result<(), EngineError> {
    let (ok, output) = encode(record.answer);
    sqlx::query(
        "INSERT INTO wf_journal (run_id, seq, kind, name, ok, output, attempts, started_at, ended_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (run_id, seq) DO NOTHING",
    )
    .bind(id)
    .bind(record.seq as i64)
    .bind(record.kind)
    .bind(record.name)
    .bind(ok)
    .bind(output)
    .bind(i64::from(record.attempts))
    .bind(record.started_at)
    .bind(record.ended_at)
    .execute(conn)
    .await?;
    Ok(())
}
