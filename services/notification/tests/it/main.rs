mod inbox;
mod queue;

use somagent_common::config::DatabaseUrl;
use somagent_common::infra::db::{COMMON_MIGRATIONS, Db};

pub fn unique(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::new_v4().simple())
}

/// The service's database on SQLite, and on PostgreSQL when the run has one (under CI
/// it must).
pub async fn databases() -> Vec<(&'static str, Db, Option<tempfile::TempDir>)> {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = Db::connect(
        &DatabaseUrl::Sqlite {
            path: dir.path().join("{service}.db"),
        },
        "notification",
    )
    .await
    .unwrap();
    let mut dbs = vec![("sqlite", sqlite, Some(dir))];
    if let Some(url) = somagent_common::testing::required_env("DATABASE_URL") {
        dbs.push((
            "postgres",
            Db::postgres(&url, &unique("notification")).await.unwrap(),
            None,
        ));
    }
    for (_, db, _) in &dbs {
        db.migrate("common", COMMON_MIGRATIONS).await.unwrap();
        db.migrate("notification", somagent_notification::MIGRATIONS)
            .await
            .unwrap();
    }
    dbs
}
