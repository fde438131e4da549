//! The full-text index on both databases: words match whole, ranked, per tenant.

use somagent_common::tenant::TenantId;
use somagent_memory::store_for_tests::{index, search};

use crate::vectors::{postgres, sqlite};

#[tokio::test]
async fn the_text_index_finds_exact_words_per_tenant_on_every_database() {
    let (db, _dir) = sqlite().await;
    let mut dbs = vec![("sqlite", db)];
    if let Some(db) = postgres().await {
        dbs.push(("postgres", db));
    }
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
