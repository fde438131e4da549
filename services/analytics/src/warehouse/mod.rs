//! The warehouse: the same tables on two engines. `local` keeps them in the service's
//! own database (SQLite for `somagent up`, or PostgreSQL), `clickhouse` in ClickHouse
//! (`SOMAGENT_ANALYTICS_URL=clickhouse://host:8123/db`), spoken to over its HTTP
//! interface. Both take rows in batches, each event once (the event id is the key: a
//! redelivered event changes nothing), and answer the same SQL: queries are written
//! once with `?` marking each parameter, and two dialect hooks ([`Warehouse::bucket`] and
//! [`Warehouse::fin`]); percentiles are each engine's own.

pub mod clickhouse;
pub mod local;
pub mod tables;

use serde_json::Value;

use crate::domain::rows::Row;
pub use tables::{Col, TABLES, Table};

/// A value in a query or a result.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    Int(i64),
    Text(String),
}

impl Cell {
    pub fn int(&self) -> i64 {
        match self {
            Self::Int(n) => *n,
            Self::Text(t) => t.parse().unwrap_or(0),
        }
    }

    pub fn text(&self) -> String {
        match self {
            Self::Int(n) => n.to_string(),
            Self::Text(t) => t.clone(),
        }
    }
}

/// A query: SQL with a `?` for each parameter, and their values in order.
#[derive(Debug, Clone)]
pub struct Query {
    pub sql: String,
    pub args: Vec<Cell>,
    /// What each result column is read as.
    pub shape: Vec<Col>,
}

impl Query {
    pub fn new(sql: impl Into<String>, shape: &[Col]) -> Self {
        Self {
            sql: sql.into(),
            args: Vec::new(),
            shape: shape.to_vec(),
        }
    }

    pub fn text(mut self, value: impl Into<String>) -> Self {
        self.args.push(Cell::Text(value.into()));
        self
    }

    pub fn int(mut self, value: i64) -> Self {
        self.args.push(Cell::Int(value));
        self
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WarehouseError {
    #[error("the warehouse is unavailable: {0}")]
    Unavailable(String),
    #[error("the warehouse answered what this build cannot read: {0}")]
    Malformed(String),
}

#[derive(Clone)]
pub enum Warehouse {
    Local(local::Local),
    ClickHouse(clickhouse::ClickHouse),
}

impl Warehouse {
    pub fn engine(&self) -> &'static str {
        match self {
            Self::Local(_) => "local",
            Self::ClickHouse(_) => "clickhouse",
        }
    }

    /// Creates the tables where they do not exist (the local ones are migrations).
    pub async fn prepare(&self) -> Result<(), WarehouseError> {
        match self {
            Self::Local(_) => Ok(()),
            Self::ClickHouse(c) => c.prepare().await,
        }
    }

    /// Stores `rows`, each event once.
    pub async fn insert(&self, rows: &[Row]) -> Result<(), WarehouseError> {
        let mut by_table: Vec<(&'static Table, Vec<Value>)> = Vec::new();
        for row in rows {
            let (table, value) = tables::of(row);
            match by_table.iter_mut().find(|(t, _)| t.name == table.name) {
                Some((_, values)) => values.push(value),
                None => by_table.push((table, vec![value])),
            }
        }
        for (table, values) in &by_table {
            match self {
                Self::Local(l) => l.insert(table, values).await?,
                Self::ClickHouse(c) => c.insert(table, values).await?,
            }
        }
        Ok(())
    }

    /// The rows a query answers, each read as its shape says.
    pub async fn fetch(&self, query: &Query) -> Result<Vec<Vec<Cell>>, WarehouseError> {
        match self {
            Self::Local(l) => l.fetch(query).await,
            Self::ClickHouse(c) => c.fetch(query).await,
        }
    }

    /// `column` rounded down to a multiple of `ms`.
    pub fn bucket(&self, column: &str, ms: i64) -> String {
        match self {
            Self::Local(_) => format!("(({column} / {ms}) * {ms})"),
            Self::ClickHouse(_) => format!("(intDiv({column}, {ms}) * {ms})"),
        }
    }

    /// What follows a table's name so that each event counts once: ClickHouse keeps a
    /// redelivered event's row until a merge, and `FINAL` reads the table as merged.
    pub fn fin(&self) -> &'static str {
        match self {
            Self::Local(_) => "",
            Self::ClickHouse(_) => " FINAL",
        }
    }

    /// The 50th, 95th and 99th percentiles of `value` in each group of `groups` (text
    /// columns) of `table`'s rows matching `filter` (SQL with a `?` for each parameter, and
    /// `args`), as `(group values, [p50, p95, p99])`.
    pub async fn percentiles(
        &self,
        table: &str,
        groups: &[&str],
        value: &str,
        filter: &str,
        args: &[Cell],
    ) -> Result<Vec<(Vec<String>, [f64; 3])>, WarehouseError> {
        match self {
            Self::Local(l) => l.percentiles(table, groups, value, filter, args).await,
            Self::ClickHouse(c) => c.percentiles(table, groups, value, filter, args).await,
        }
    }

    /// Removes what the warehouse keeps of a tenant (its data deleted on request).
    pub async fn forget_tenant(&self, tenant: &str) -> Result<(), WarehouseError> {
        match self {
            Self::Local(l) => l.forget_tenant(tenant).await,
            Self::ClickHouse(c) => c.forget_tenant(tenant).await,
        }
    }
}

/// The `p`-th percentile (0..1) of sorted `values`, by nearest rank.
pub fn percentile(sorted: &[i64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1] as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_by_nearest_rank() {
        let values: Vec<i64> = (1..=100).collect();
        assert_eq!(percentile(&values, 0.5), 50.0);
        assert_eq!(percentile(&values, 0.99), 99.0);
        assert_eq!(percentile(&[7], 0.99), 7.0);
        assert_eq!(percentile(&[], 0.5), 0.0);
    }
}
