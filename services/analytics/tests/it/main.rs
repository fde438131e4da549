//! The warehouse contract on every engine: SQLite always, and PostgreSQL and ClickHouse
//! when the run has them (under CI it must): the same events give the same answers,
//! each event once however often it comes, one tenant's never in another's.

mod anomalies;
mod reports;

use somagent_analytics::warehouse::Warehouse;
use somagent_common::config::{AnalyticsUrl, DatabaseUrl};
use somagent_common::infra::db::{COMMON_MIGRATIONS, Db};

pub fn unique(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::new_v4().simple())
}

async fn database(url: Option<&str>, dir: &std::path::Path) -> Db {
    let db = match url {
        Some(url) => Db::postgres(url, &unique("analytics")).await.unwrap(),
        None => Db::connect(
            &DatabaseUrl::Sqlite {
                path: dir.join("{service}.db"),
            },
            "analytics",
        )
        .await
        .unwrap(),
    };
    db.migrate("common", COMMON_MIGRATIONS).await.unwrap();
    db.migrate("analytics", somagent_analytics::MIGRATIONS)
        .await
        .unwrap();
    db
}

/// Each engine's warehouse, with the database beside it and what keeps it alive.
pub async fn warehouses() -> Vec<(&'static str, Warehouse, Db, tempfile::TempDir)> {
    let mut out = Vec::new();
    let dir = tempfile::tempdir().unwrap();
    let db = database(None, dir.path()).await;
    out.push((
        "sqlite",
        somagent_analytics::open_warehouse(&AnalyticsUrl::Local, db.clone())
            .await
            .unwrap(),
        db,
        dir,
    ));
    if let Some(url) = somagent_common::testing::required_env("DATABASE_URL") {
        let dir = tempfile::tempdir().unwrap();
        let db = database(Some(&url), dir.path()).await;
        out.push((
            "postgres",
            somagent_analytics::open_warehouse(&AnalyticsUrl::Local, db.clone())
                .await
                .unwrap(),
            db,
            dir,
        ));
    }
    if let Some(url) = somagent_common::testing::required_env("ANALYTICS_URL") {
        // A database of this run's own on the shared server.
        let mut parsed = url::Url::parse(&url).unwrap();
        parsed.set_path(&format!("/{}", unique("t")));
        let dir = tempfile::tempdir().unwrap();
        let db = database(None, dir.path()).await;
        let ch: AnalyticsUrl = parsed.as_str().parse().unwrap();
        out.push((
            "clickhouse",
            somagent_analytics::open_warehouse(&ch, db.clone())
                .await
                .unwrap(),
            db,
            dir,
        ));
    }
    out
}
