//! The full-text index on both databases: words match whole, ranked, per tenant.

use somagent_common::infra::db::Db;
use somagent_common::tenant::TenantId;
use somagent_memory::store_for_tests::{index, may_hold, put_chunk, put_memory, search};
use somagent_memory::vectors::Kind;

use crate::vectors::{postgres, sqlite};

/// SQLite always; PostgreSQL where one is given (under CI, always).
async fn databases() -> (Vec<(&'static str, Db)>, tempfile::TempDir) {
    let (db, dir) = sqlite().await;
    let mut dbs = vec![("sqlite", db)];
    if let Some(db) = postgres().await {
        dbs.push(("postgres", db));
    }
    (dbs, dir)
}

#[tokio::test]
async fn the_text_index_finds_exact_words_per_tenant_on_every_database() {
    let (dbs, _dir) = databases().await;
    for (name, db) in dbs {
        let acme = TenantId::parse("acme").unwrap();
        let globex = TenantId::parse("globex").unwrap();
        index(&db, &acme, "c1", "The SKU-4411 widget ships in blue.").await;
        index(
            &db,
            &acme,
            "c2",
            "Widgets come in many colours; blue is common.",
        )
        .await;
        index(&db, &acme, "c3", "Nothing related here.").await;
        index(&db, &globex, "g1", "SKU-4411 is also a globex part.").await;
        let found = search(&db, &acme, "where is sku 4411?").await;
        assert_eq!(
            found.first().map(String::as_str),
            Some("c1"),
            "{name}: {found:?}"
        );
        assert!(
            !found.contains(&"g1".to_owned()),
            "{name}: another tenant's text"
        );
        assert!(!found.contains(&"c3".to_owned()), "{name}");
        let blue = search(&db, &acme, "blue").await;
        assert_eq!(blue.len(), 2, "{name}: {blue:?}");
        // Re-indexing replaces; unindexing removes.
        index(&db, &acme, "c1", "Now about something else entirely.").await;
        assert_eq!(
            search(&db, &acme, "sku 4411").await,
            Vec::<String>::new(),
            "{name}"
        );
        // Query syntax is never interpreted.
        assert!(
            search(&db, &acme, "\"blue\" OR NEAR( * ) AND -")
                .await
                .contains(&"c2".to_owned())
        );
    }
}

/// SQLite runs a text search as one full-text match joined to its items, never as one
/// match per item of the tenant (which costs a hundred times more at 500 chunks).
#[tokio::test]
async fn sqlite_runs_the_text_match_once() {
    let (db, _dir) = sqlite().await;
    let acme = TenantId::parse("acme").unwrap();
    for i in 0..300 {
        index(&db, &acme, &format!("c{i}"), &format!("word number {i}")).await;
    }
    sqlx::query("ANALYZE").execute(db.pool()).await.unwrap();
    let plan = somagent_memory::store_for_tests::sqlite_search_plan(&db).await;
    assert!(
        plan.first()
            .is_some_and(|step| step.starts_with("SCAN f VIRTUAL TABLE")),
        "{plan:?}"
    );
}

/// A search first asks whether the scopes it covers hold anything (where they hold
/// nothing, the question is not embedded): it must say yes for every live memory of
/// the owners asked and every chunk, and no for another tenant's, another user's, an
/// expired one, or a kind not asked for.
#[tokio::test]
async fn a_search_knows_when_its_scopes_hold_nothing_on_every_database() {
    let (dbs, _dir) = databases().await;
    for (name, db) in dbs {
        let acme = TenantId::parse("acme").unwrap();
        let globex = TenantId::parse("globex").unwrap();
        let ann = [
            ("user", "", "ann"),
            ("tenant", "", ""),
            ("session", "s1", "ann"),
        ];
        let with_documents = [("user", "", "ann"), ("document", "", "")];
        assert!(!may_hold(&db, &acme, &ann, &[], 100).await, "{name}: empty");

        put_memory(&db, &globex, ("user", "", "ann"), None).await;
        put_memory(&db, &acme, ("user", "", "bob"), None).await;
        put_memory(&db, &acme, ("session", "s2", "ann"), None).await;
        put_memory(&db, &acme, ("tenant", "", ""), Some(50)).await;
        put_chunk(&db, &globex, "d1").await;
        assert!(
            !may_hold(&db, &acme, &ann, &[], 100).await,
            "{name}: another tenant's, another user's, another session's, an expired one"
        );
        assert!(
            !may_hold(&db, &acme, &with_documents, &[], 100).await,
            "{name}"
        );
        assert!(
            may_hold(&db, &acme, &ann, &[], 10).await,
            "{name}: the tenant's memory before it expires"
        );

        put_memory(&db, &acme, ("session", "s1", "ann"), None).await;
        assert!(
            may_hold(&db, &acme, &ann, &[], 100).await,
            "{name}: the session's"
        );
        assert!(
            may_hold(&db, &acme, &ann, &[Kind::Memory], 100).await,
            "{name}"
        );
        assert!(
            !may_hold(&db, &acme, &ann, &[Kind::Chunk], 100).await,
            "{name}: memories are not chunks"
        );

        put_chunk(&db, &acme, "d2").await;
        assert!(
            may_hold(&db, &acme, &[("document", "", "")], &[Kind::Chunk], 100).await,
            "{name}: the tenant's document"
        );
        assert!(
            !may_hold(&db, &acme, &[("user", "", "bob")], &[Kind::Chunk], 100).await,
            "{name}: chunks only where documents are searched"
        );
        assert!(
            may_hold(&db, &acme, &[], &[], 100).await,
            "{name}: no owner named matches every owner"
        );
    }
}
