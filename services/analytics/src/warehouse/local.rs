//! The warehouse in the service's own database: SQLite for `somagent up`, or
//! PostgreSQL. Rows go in by multi-row inserts that skip an event already there.

use serde_json::Value;
use somagent_common::infra::db::{Db, Migration, values_rows};
use sqlx::Row;

use super::{Cell, Col, Query, Table, WarehouseError, percentile};

pub const MIGRATION: Migration = Migration::portable(
    1,
    "warehouse",
    include_str!("../../migrations/0001_warehouse.sql"),
);

#[derive(Clone)]
pub struct Local {
    db: Db,
}

fn unavailable(e: impl std::fmt::Display) -> WarehouseError {
    WarehouseError::Unavailable(e.to_string())
}

/// The `?` parameter marks as `$1, $2, …`. Queries are the service's own: no `?` in literals.
fn numbered(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 8);
    let mut n = 0;
    for c in sql.chars() {
        if c == '?' {
            n += 1;
            out.push_str(&format!("${n}"));
        } else {
            out.push(c);
        }
    }
    out
}

/// Every `sum(…)` as `CAST(sum(…) AS BIGINT)`: PostgreSQL sums `BIGINT`s into
/// `NUMERIC`, which the driver does not read. The queries are the service's own, with
/// no `sum(` inside a literal.
fn integer_sums(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 32);
    let mut rest = sql;
    while let Some(at) = rest.find("sum(") {
        out.push_str(&rest[..at]);
        let mut depth = 0;
        let mut end = rest.len();
        for (i, c) in rest[at + 3..].char_indices() {
            match c {
                '(' => depth += 1,
                ')' => {
                    depth -= 1;
                    if depth == 0 {
                        end = at + 3 + i + 1;
                        break;
                    }
                }
                _ => {}
            }
        }
        out.push_str("CAST(");
        out.push_str(&rest[at..end]);
        out.push_str(" AS BIGINT)");
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

impl Local {
    pub fn new(db: Db) -> Self {
        Self { db }
    }

    pub async fn insert(&self, table: &Table, rows: &[Value]) -> Result<(), WarehouseError> {
        let columns: Vec<&str> = table.columns.iter().map(|(c, _)| *c).collect();
        let per_insert = self.db.kind().rows_per_insert(columns.len()).max(1);
        let mut tx = self.db.begin().await.map_err(unavailable)?;
        for chunk in rows.chunks(per_insert) {
            let sql = format!(
                "INSERT INTO {} ({}) VALUES {} ON CONFLICT (event_id) DO NOTHING",
                table.name,
                columns.join(", "),
                values_rows(chunk.len(), columns.len())
            );
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
            for row in chunk {
                for (column, kind) in table.columns {
                    let v = &row[*column];
                    query = match kind {
                        Col::Text => query.bind(v.as_str().unwrap_or_default().to_owned()),
                        _ => query.bind(v.as_i64().unwrap_or(0)),
                    };
                }
            }
            query.execute(&mut *tx).await.map_err(unavailable)?;
        }
        tx.commit().await.map_err(unavailable)
    }

    pub async fn fetch(&self, q: &Query) -> Result<Vec<Vec<Cell>>, WarehouseError> {
        let mut query = sqlx::query(sqlx::AssertSqlSafe(numbered(&integer_sums(&q.sql))));
        for arg in &q.args {
            query = match arg {
                Cell::Int(n) => query.bind(*n),
                Cell::Text(t) => query.bind(t.clone()),
            };
        }
        let rows = query.fetch_all(self.db.pool()).await.map_err(unavailable)?;
        rows.iter()
            .map(|row| {
                q.shape
                    .iter()
                    .enumerate()
                    .map(|(i, kind)| match kind {
                        Col::Text => row.try_get::<String, _>(i).map(Cell::Text),
                        _ => row
                            .try_get::<i64, _>(i)
                            .or_else(|_| {
                                row.try_get::<Option<i64>, _>(i)
                                    .map(Option::unwrap_or_default)
                            })
                            .map(Cell::Int),
                    })
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| WarehouseError::Malformed(e.to_string()))
            })
            .collect()
    }

    /// Reads the group's values in order and picks the ranks: exact, and fine at the
    /// scale one machine's platform reaches.
    pub async fn percentiles(
        &self,
        table: &str,
        groups: &[&str],
        value: &str,
        filter: &str,
        args: &[Cell],
    ) -> Result<Vec<(Vec<String>, [f64; 3])>, WarehouseError> {
        let mut select: Vec<String> = groups.iter().map(|g| (*g).to_owned()).collect();
        select.push(value.to_owned());
        let mut order = select.clone();
        order.truncate(groups.len());
        order.push(value.to_owned());
        let mut shape = vec![Col::Text; groups.len()];
        shape.push(Col::Int);
        let q = Query {
            sql: format!(
                "SELECT {} FROM {table} WHERE {filter} ORDER BY {}",
                select.join(", "),
                order.join(", ")
            ),
            args: args.to_vec(),
            shape,
        };
        let rows = self.fetch(&q).await?;
        let mut out: Vec<(Vec<String>, [f64; 3])> = Vec::new();
        let mut values: Vec<i64> = Vec::new();
        let mut current: Option<Vec<String>> = None;
        let flush = |key: Option<Vec<String>>,
                     values: &mut Vec<i64>,
                     out: &mut Vec<(Vec<String>, [f64; 3])>| {
            if let Some(key) = key {
                out.push((
                    key,
                    [
                        percentile(values, 0.5),
                        percentile(values, 0.95),
                        percentile(values, 0.99),
                    ],
                ));
            }
            values.clear();
        };
        for row in rows {
            let key: Vec<String> = row[..groups.len()].iter().map(Cell::text).collect();
            if current.as_ref() != Some(&key) {
                flush(current.take(), &mut values, &mut out);
                current = Some(key);
            }
            values.push(row[groups.len()].int());
        }
        flush(current, &mut values, &mut out);
        Ok(out)
    }

    pub async fn forget_tenant(&self, tenant: &str) -> Result<(), WarehouseError> {
        let mut tx = self.db.begin().await.map_err(unavailable)?;
        for table in super::TABLES {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "DELETE FROM {} WHERE tenant = $1",
                table.name
            )))
            .bind(tenant)
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
        }
        tx.commit().await.map_err(unavailable)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_are_read_as_integers_and_parameters_numbered() {
        assert_eq!(
            integer_sums(
                "SELECT sum(a + b), count(*), sum(CASE WHEN x = 'y' THEN 1 ELSE 0 END) FROM t"
            ),
            "SELECT CAST(sum(a + b) AS BIGINT), count(*), CAST(sum(CASE WHEN x = 'y' THEN 1 ELSE 0 END) AS BIGINT) FROM t"
        );
        assert_eq!(numbered("a = ? AND b < ?"), "a = $1 AND b < $2");
    }
}
