use sqlx::Row;

use somagent_common::config::DatabaseUrl;
use somagent_common::error::{ErrorCode, on_constraint};
use somagent_common::infra::db::{COMMON_MIGRATIONS, Db, DbError, Migration, claim_event};

use crate::helpers::{real_url, unique};

const NOTES_V1: &[Migration] = &[Migration::portable(
    1,
    "notes",
    "CREATE TABLE notes (id TEXT PRIMARY KEY, tenant TEXT NOT NULL, body TEXT NOT NULL, n BIGINT NOT NULL,
        CONSTRAINT notes_tenant_body UNIQUE (tenant, body))",
)];

/// One database per engine; the SQLite one lives as long as the returned guard.
async fn databases() -> Vec<(Db, Option<tempfile::TempDir>)> {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = DatabaseUrl::Sqlite {
        path: dir.path().join("{service}.db"),
    };
    let mut all = vec![(Db::connect(&sqlite, "contract").await.unwrap(), Some(dir))];
    if let Some(url) = real_url("DATABASE") {
        all.push((Db::postgres(&url, &unique("contract")).await.unwrap(), None));
    }
    all
}

#[tokio::test]
async fn migrations_apply_once_and_refuse_edits() {
    for (db, _guard) in databases().await {
        db.migrate("common", COMMON_MIGRATIONS).await.unwrap();
        db.migrate("notes", NOTES_V1).await.unwrap();
        // Applying again is a no-op, not a "table exists" failure.
        db.migrate("notes", NOTES_V1).await.unwrap();
        let edited = [Migration::portable(
            1,
            "notes",
            "CREATE TABLE notes (id TEXT)",
        )];
        let err = db.migrate("notes", &edited).await.unwrap_err();
        assert!(
            matches!(err, DbError::MigrationChanged { version: 1, .. }),
            "{err}"
        );
        let applied: i64 = sqlx::query("SELECT COUNT(*) FROM schema_migrations")
            .fetch_one(db.pool())
            .await
            .unwrap()
            .get(0);
        // The common ones and the one of `notes`.
        assert_eq!(
            applied,
            COMMON_MIGRATIONS.len() as i64 + 1,
            "{:?}",
            db.kind()
        );
    }
}

#[tokio::test]
async fn portable_sql_round_trips_and_constraints_map_to_conflict() {
    for (db, _guard) in databases().await {
        db.migrate("notes", NOTES_V1).await.unwrap();
        let insert = "INSERT INTO notes (id, tenant, body, n) VALUES ($1, $2, $3, $4)";
        sqlx::query(insert)
            .bind("a")
            .bind("t1")
            .bind("hello")
            .bind(41_i64)
            .execute(db.pool())
            .await
            .unwrap();
        let row = sqlx::query("SELECT body, n FROM notes WHERE id = $1 AND tenant = $2")
            .bind("a")
            .bind("t1")
            .fetch_one(db.pool())
            .await
            .unwrap();
        assert_eq!(row.get::<String, _>(0), "hello");
        assert_eq!(row.get::<i64, _>(1), 41);

        let duplicate = sqlx::query(insert)
            .bind("b")
            .bind("t1")
            .bind("hello")
            .bind(1_i64)
            .execute(db.pool())
            .await;
        let error = on_constraint(duplicate.unwrap_err(), "notes_tenant_body", "note exists");
        assert_eq!(error.code, ErrorCode::Conflict, "{:?}", db.kind());
        // Another tenant may use the same body: uniqueness is per tenant.
        sqlx::query(insert)
            .bind("c")
            .bind("t2")
            .bind("hello")
            .bind(1_i64)
            .execute(db.pool())
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn a_rolled_back_transaction_leaves_nothing() {
    for (db, _guard) in databases().await {
        db.migrate("notes", NOTES_V1).await.unwrap();
        let mut tx = db.begin().await.unwrap();
        sqlx::query("INSERT INTO notes (id, tenant, body, n) VALUES ($1, $2, $3, $4)")
            .bind("x")
            .bind("t")
            .bind("half")
            .bind(1_i64)
            .execute(&mut *tx)
            .await
            .unwrap();
        tx.rollback().await.unwrap();
        let count: i64 = sqlx::query("SELECT COUNT(*) FROM notes")
            .fetch_one(db.pool())
            .await
            .unwrap()
            .get(0);
        assert_eq!(count, 0);
    }
}

#[tokio::test]
async fn an_event_is_claimed_once_per_consumer() {
    for (db, _guard) in databases().await {
        db.migrate("common", COMMON_MIGRATIONS).await.unwrap();
        let id = uuid::Uuid::now_v7();
        let mut tx = db.begin().await.unwrap();
        assert!(claim_event(&mut tx, "billing", &id).await.unwrap());
        assert!(!claim_event(&mut tx, "billing", &id).await.unwrap());
        // Another consumer handles the same event on its own.
        assert!(claim_event(&mut tx, "analytics", &id).await.unwrap());
        tx.commit().await.unwrap();
        // A claim inside a rolled-back transaction does not count.
        let other = uuid::Uuid::now_v7();
        let mut tx = db.begin().await.unwrap();
        assert!(claim_event(&mut tx, "billing", &other).await.unwrap());
        tx.rollback().await.unwrap();
        let mut tx = db.begin().await.unwrap();
        assert!(claim_event(&mut tx, "billing", &other).await.unwrap());
        tx.commit().await.unwrap();
    }
}

#[tokio::test]
async fn each_service_gets_its_own_store() {
    let dir = tempfile::tempdir().unwrap();
    let url = DatabaseUrl::Sqlite {
        path: dir.path().join("{service}.db"),
    };
    let a = Db::connect(&url, "identity").await.unwrap();
    let b = Db::connect(&url, "billing").await.unwrap();
    a.migrate("notes", NOTES_V1).await.unwrap();
    assert!(dir.path().join("identity.db").exists());
    assert!(
        sqlx::query("SELECT COUNT(*) FROM notes")
            .fetch_one(b.pool())
            .await
            .is_err()
    );
    if let Some(url) = real_url("DATABASE") {
        let url = DatabaseUrl::Postgres(url);
        let (s1, s2) = (unique("svc"), unique("svc"));
        let a = Db::connect(&url, &s1).await.unwrap();
        let b = Db::connect(&url, &s2).await.unwrap();
        a.migrate("notes", NOTES_V1).await.unwrap();
        b.ping().await.unwrap();
        assert!(
            sqlx::query("SELECT COUNT(*) FROM notes")
                .fetch_one(b.pool())
                .await
                .is_err()
        );
    }
}
