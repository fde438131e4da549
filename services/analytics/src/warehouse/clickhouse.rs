//! The warehouse in ClickHouse, over its HTTP interface (`clickhouse://[user[:password]@]
//! host:8123/database[?secure=true]`). Written for the SQL of ClickHouse 18.16 and
//! later: tables are `ReplacingMergeTree`s ordered by tenant, time and event id, so a
//! redelivered event is one row once merged, and every query reads them `FINAL`. Rows
//! go in as `JSONEachRow`; answers come back as `TabSeparated`. Values are written into
//! the SQL as escaped literals (18.16 has no server-side parameters).

use std::time::Duration;

use serde_json::Value;

use super::{Cell, Col, Query, TABLES, Table, WarehouseError};

#[derive(Clone)]
pub struct ClickHouse {
    http: reqwest::Client,
    /// `http(s)://host:port/`
    base: String,
    database: String,
    user: String,
    password: String,
}

fn unavailable(e: impl std::fmt::Display) -> WarehouseError {
    WarehouseError::Unavailable(e.to_string())
}

/// A string literal: backslash and quote escaped.
pub fn literal(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('\'');
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("\\'"),
            '\0' => out.push_str("\\0"),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// The SQL of `q` with its values in place of the `?`s.
fn rendered(q: &Query) -> String {
    let mut args = q.args.iter();
    let mut out = String::with_capacity(q.sql.len() + 32);
    for c in q.sql.chars() {
        if c == '?' {
            match args.next() {
                Some(Cell::Int(n)) => out.push_str(&n.to_string()),
                Some(Cell::Text(t)) => out.push_str(&literal(t)),
                None => out.push_str("NULL"),
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// One `TabSeparated` field, unescaped.
fn unescape(field: &str) -> String {
    let mut out = String::with_capacity(field.len());
    let mut chars = field.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('t') => out.push('\t'),
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('0') => out.push('\0'),
            Some('b') => out.push('\u{8}'),
            Some('f') => out.push('\u{c}'),
            Some(other) => out.push(other),
            None => out.push('\\'),
        }
    }
    out
}

/// `[0.5,12,99.25]` as numbers.
fn floats(field: &str) -> Vec<f64> {
    field
        .trim_matches(|c| c == '[' || c == ']')
        .split(',')
        .filter_map(|v| v.trim().parse().ok())
        .collect()
}

fn column_type(kind: Col) -> &'static str {
    match kind {
        Col::Text => "String",
        Col::Int => "Int64",
        Col::UInt => "UInt64",
        Col::Floats => "Array(Float64)",
    }
}

impl ClickHouse {
    /// From `clickhouse://[user[:password]@]host:port/database[?secure=true]`.
    pub fn from_url(url: &str) -> anyhow::Result<Self> {
        let parsed = url::Url::parse(url)?;
        anyhow::ensure!(
            parsed.scheme() == "clickhouse",
            "an analytics URL is clickhouse://…"
        );
        let host = parsed
            .host_str()
            .ok_or_else(|| anyhow::anyhow!("the analytics URL names no host"))?;
        let secure = parsed
            .query_pairs()
            .any(|(k, v)| k == "secure" && v == "true");
        let port = parsed.port().unwrap_or(if secure { 8443 } else { 8123 });
        let database = parsed.path().trim_start_matches('/').to_owned();
        let database = if database.is_empty() {
            "default".to_owned()
        } else {
            database
        };
        anyhow::ensure!(
            database
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "the analytics database is letters, digits and _"
        );
        let user = if parsed.username().is_empty() {
            "default"
        } else {
            parsed.username()
        };
        let password = parsed
            .password()
            .map(|p| {
                percent_encoding::percent_decode_str(p)
                    .decode_utf8_lossy()
                    .into_owned()
            })
            .unwrap_or_default();
        Ok(Self {
            http: reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(5))
                .timeout(Duration::from_secs(120))
                .build()?,
            base: format!("{}://{host}:{port}/", if secure { "https" } else { "http" }),
            database,
            user: user.to_owned(),
            password,
        })
    }

    /// Runs `query` in the database; with `data`, the query's rows (an insert).
    async fn post(&self, query: &str, data: String) -> Result<String, WarehouseError> {
        self.send(query, data, &self.database).await
    }

    async fn send(
        &self,
        query: &str,
        data: String,
        database: &str,
    ) -> Result<String, WarehouseError> {
        let mut url = url::Url::parse(&self.base).map_err(unavailable)?;
        url.query_pairs_mut()
            .append_pair("database", database)
            // No query runs away (18.16 has no setting that stops one its client left).
            .append_pair("max_execution_time", "60");
        // Without data the statement is the body; with it, the statement goes in the URL.
        let body = if data.is_empty() {
            query.to_owned()
        } else {
            url.query_pairs_mut().append_pair("query", query);
            data
        };
        let answer = self
            .http
            .post(url)
            .header("X-ClickHouse-User", &self.user)
            .header("X-ClickHouse-Key", &self.password)
            .body(body)
            .send()
            .await
            .map_err(unavailable)?;
        let status = answer.status();
        let text = answer.text().await.map_err(unavailable)?;
        if !status.is_success() {
            let first: String = text
                .lines()
                .next()
                .unwrap_or_default()
                .chars()
                .take(300)
                .collect();
            return Err(WarehouseError::Unavailable(format!(
                "ClickHouse answered {status}: {first}"
            )));
        }
        Ok(text)
    }

    /// Whether the server answers, for readiness.
    pub async fn ping(&self) -> Result<(), WarehouseError> {
        self.post("SELECT 1", String::new()).await.map(|_| ())
    }

    pub async fn prepare(&self) -> Result<(), WarehouseError> {
        self.send(
            &format!("CREATE DATABASE IF NOT EXISTS {}", self.database),
            String::new(),
            "default",
        )
        .await?;
        for table in TABLES {
            let columns: Vec<String> = table
                .columns
                .iter()
                .map(|(name, kind)| format!("{name} {}", column_type(*kind)))
                .collect();
            let ddl = format!(
                "CREATE TABLE IF NOT EXISTS {}.{} ({}) ENGINE = ReplacingMergeTree() \
                 PARTITION BY toYYYYMM(toDateTime(intDiv(time_ms, 1000))) \
                 ORDER BY (tenant, time_ms, event_id)",
                self.database,
                table.name,
                columns.join(", ")
            );
            self.post(&ddl, String::new()).await?;
        }
        Ok(())
    }

    pub async fn insert(&self, table: &Table, rows: &[Value]) -> Result<(), WarehouseError> {
        let mut body = String::with_capacity(rows.len() * 256);
        for row in rows {
            body.push_str(&row.to_string());
            body.push('\n');
        }
        self.post(
            &format!("INSERT INTO {} FORMAT JSONEachRow", table.name),
            body,
        )
        .await
        .map(|_| ())
    }

    pub async fn fetch(&self, q: &Query) -> Result<Vec<Vec<Cell>>, WarehouseError> {
        let sql = format!("{} FORMAT TabSeparated", rendered(q));
        let text = self.post(&sql, String::new()).await?;
        text.lines()
            .filter(|l| !l.is_empty())
            .map(|line| {
                let fields: Vec<&str> = line.split('\t').collect();
                if fields.len() != q.shape.len() {
                    return Err(WarehouseError::Malformed(format!(
                        "{} columns where {} were asked for",
                        fields.len(),
                        q.shape.len()
                    )));
                }
                Ok(fields
                    .iter()
                    .zip(&q.shape)
                    .map(|(f, kind)| match kind {
                        Col::Text | Col::Floats => Cell::Text(unescape(f)),
                        _ => Cell::Int(
                            f.parse::<i64>()
                                .or_else(|_| f.parse::<f64>().map(|x| x as i64))
                                .unwrap_or(0),
                        ),
                    })
                    .collect())
            })
            .collect()
    }

    pub async fn percentiles(
        &self,
        table: &str,
        groups: &[&str],
        value: &str,
        filter: &str,
        args: &[Cell],
    ) -> Result<Vec<(Vec<String>, [f64; 3])>, WarehouseError> {
        let mut select: Vec<String> = groups.iter().map(|g| (*g).to_owned()).collect();
        select.push(format!("quantilesExact(0.5, 0.95, 0.99)({value})"));
        // Without groups an aggregate answers one row even over nothing: counted, and
        // left out when empty.
        select.push("count(*)".into());
        let grouping = if groups.is_empty() {
            String::new()
        } else {
            format!(" GROUP BY {0} ORDER BY {0}", groups.join(", "))
        };
        let mut shape = vec![Col::Text; groups.len()];
        shape.push(Col::Floats);
        shape.push(Col::Int);
        let q = Query {
            sql: format!(
                "SELECT {} FROM {table} FINAL WHERE {filter}{grouping}",
                select.join(", ")
            ),
            args: args.to_vec(),
            shape,
        };
        Ok(self
            .fetch(&q)
            .await?
            .into_iter()
            .filter_map(|row| {
                if row[groups.len() + 1].int() == 0 {
                    return None;
                }
                let p = floats(&row[groups.len()].text());
                if p.len() != 3 {
                    return None;
                }
                let key = row[..groups.len()].iter().map(Cell::text).collect();
                Some((key, [p[0], p[1], p[2]]))
            })
            .collect())
    }

    pub async fn forget_tenant(&self, tenant: &str) -> Result<(), WarehouseError> {
        for table in TABLES {
            self.post(
                &format!(
                    "ALTER TABLE {} DELETE WHERE tenant = {}",
                    table.name,
                    literal(tenant)
                ),
                String::new(),
            )
            .await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_escaped_into_the_sql() {
        let q = Query::new("SELECT 1 WHERE a = ? AND b = ?", &[])
            .text("it's a \\ test")
            .int(-5);
        assert_eq!(
            rendered(&q),
            "SELECT 1 WHERE a = 'it\\'s a \\\\ test' AND b = -5"
        );
        assert_eq!(unescape("a\\tb\\\\c\\nd"), "a\tb\\c\nd");
        assert_eq!(floats("[0.5,12,99.25]"), vec![0.5, 12.0, 99.25]);
    }

    #[test]
    fn urls_name_the_server_database_and_credentials() {
        let c = ClickHouse::from_url("clickhouse://ana:p%40ss@ch.example:9123/metrics").unwrap();
        assert_eq!(c.base, "http://ch.example:9123/");
        assert_eq!(
            (c.database.as_str(), c.user.as_str(), c.password.as_str()),
            ("metrics", "ana", "p@ss")
        );
        let d = ClickHouse::from_url("clickhouse://127.0.0.1:8123").unwrap();
        assert_eq!(
            (d.database.as_str(), d.user.as_str()),
            ("default", "default")
        );
        assert!(ClickHouse::from_url("clickhouse://h/bad-name;drop").is_err());
        assert!(ClickHouse::from_url("http://h/x").is_err());
    }
}
