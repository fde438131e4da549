//! The capsule store's contract on SQLite always and on PostgreSQL when the run has it
//! (under CI it must): ids belong to their first publisher, versions are immutable, a
//! review happens once, installations upgrade, roll back once and uninstall, ratings
//! are one per user, and one tenant's installations are never another's.

use somagent_capsule_repo::store::{CapsuleStore, Package, Use};
use somagent_common::config::DatabaseUrl;
use somagent_common::error::ErrorCode;
use somagent_common::infra::db::{COMMON_MIGRATIONS, Db};
use somagent_common::tenant::TenantId;

async fn stores() -> Vec<(&'static str, CapsuleStore, tempfile::TempDir)> {
    let mut out = Vec::new();
    let dir = tempfile::tempdir().unwrap();
    let db = Db::connect(
        &DatabaseUrl::Sqlite {
            path: dir.path().join("{service}.db"),
        },
        "capsule-repo",
    )
    .await
    .unwrap();
    out.push(("sqlite", db, dir));
    if let Some(url) = somagent_common::testing::required_env("DATABASE_URL") {
        let schema = format!("capsules_{}", uuid::Uuid::new_v4().simple());
        out.push((
            "postgres",
            Db::postgres(&url, &schema).await.unwrap(),
            tempfile::tempdir().unwrap(),
        ));
    }
    let mut stores = Vec::new();
    for (name, db, dir) in out {
        db.migrate("common", COMMON_MIGRATIONS).await.unwrap();
        db.migrate("capsule-repo", somagent_capsule_repo::MIGRATIONS)
            .await
            .unwrap();
        stores.push((name, CapsuleStore::new(db), dir));
    }
    stores
}

fn package(capsule: &str, version: &str, publisher: &str) -> Package {
    Package {
        id: uuid::Uuid::now_v7().to_string(),
        capsule_id: capsule.into(),
        version: version.into(),
        version_key: somagent_common::capsule::version_key(version).unwrap(),
        publisher: publisher.into(),
        submitted_by: "u1".into(),
        visibility: "public".into(),
        status: "pending".into(),
        kind: "agent".into(),
        name: format!("{capsule} agent"),
        summary: "Finds owls".into(),
        category: "nature".into(),
        tags: vec!["birds".into()],
        definition: "{}".into(),
        attestation_hash: "h".into(),
        signature: "s".into(),
        key_id: "k".into(),
        notes: String::new(),
        reviewer: None,
        reviewed_at: None,
        review_notes: None,
        created_at: 1,
    }
}

fn tenant(id: &str) -> TenantId {
    TenantId::parse(id).unwrap()
}

#[tokio::test]
async fn ids_belong_to_their_first_publisher_and_versions_are_immutable() {
    for (engine, store, _dir) in stores().await {
        store
            .submit(&package("owl", "1.0.0", "acme"))
            .await
            .unwrap();
        let again = store
            .submit(&package("owl", "1.0.0", "acme"))
            .await
            .unwrap_err();
        assert_eq!(
            again.code,
            ErrorCode::Conflict,
            "{engine}: {}",
            again.message
        );
        let taken = store
            .submit(&package("owl", "2.0.0", "rival"))
            .await
            .unwrap_err();
        assert_eq!(taken.code, ErrorCode::Conflict, "{engine}");
        assert!(
            taken.message.contains("another publisher"),
            "{engine}: {}",
            taken.message
        );
        store
            .submit(&package("owl", "1.10.0", "acme"))
            .await
            .unwrap();
        store
            .submit(&package("owl", "1.9.0", "acme"))
            .await
            .unwrap();
        // Pending versions are nobody's to install yet.
        assert!(
            store
                .approved(&tenant("other"), Some("owl"))
                .await
                .unwrap()
                .is_empty()
        );
        for version in ["1.0.0", "1.9.0", "1.10.0"] {
            let p = store.version("owl", version).await.unwrap().unwrap();
            let reviewed = store
                .review(&p.id, &tenant("root"), "op", true, "")
                .await
                .unwrap()
                .unwrap();
            assert_eq!(reviewed.status, "approved");
            // A review happens once.
            assert!(
                store
                    .review(&p.id, &tenant("root"), "op", false, "no")
                    .await
                    .unwrap()
                    .is_none()
            );
        }
        let versions: Vec<String> = store
            .approved(&tenant("other"), Some("owl"))
            .await
            .unwrap()
            .into_iter()
            .map(|p| p.version)
            .collect();
        assert_eq!(
            versions,
            ["1.10.0", "1.9.0", "1.0.0"],
            "{engine}: newest first, as versions"
        );
    }
}

#[tokio::test]
async fn private_versions_stay_with_their_publisher() {
    for (engine, store, _dir) in stores().await {
        let mut private = package("secret-agent", "1.0.0", "acme");
        private.visibility = "private".into();
        private.status = "approved".into();
        store.submit(&private).await.unwrap();
        assert_eq!(
            store.approved(&tenant("acme"), None).await.unwrap().len(),
            1,
            "{engine}"
        );
        assert!(
            store
                .approved(&tenant("other"), None)
                .await
                .unwrap()
                .is_empty(),
            "{engine}"
        );
        assert!(
            store
                .submissions(&tenant("other"), false, None)
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            store
                .submissions(&tenant("acme"), false, None)
                .await
                .unwrap()
                .len(),
            1
        );
    }
}

#[tokio::test]
async fn installations_upgrade_roll_back_once_and_stay_in_their_tenant() {
    for (engine, store, _dir) in stores().await {
        let (acme, other) = (tenant("acme"), tenant("other"));
        let first = store
            .install(&acme, "owl", "prod", "1.0.0", "u1", "")
            .await
            .unwrap();
        assert_eq!(
            (first.version.as_str(), first.previous_version.as_deref()),
            ("1.0.0", None)
        );
        let upgraded = store
            .install(&acme, "owl", "prod", "1.1.0", "u1", "new")
            .await
            .unwrap();
        assert_eq!(
            upgraded.previous_version.as_deref(),
            Some("1.0.0"),
            "{engine}"
        );
        // Installing the same version again keeps what to roll back to.
        let same = store
            .install(&acme, "owl", "prod", "1.1.0", "u1", "")
            .await
            .unwrap();
        assert_eq!(same.previous_version.as_deref(), Some("1.0.0"), "{engine}");
        store
            .install(&acme, "owl", "staging", "1.1.0", "u1", "")
            .await
            .unwrap();
        assert!(
            store.installations(&other).await.unwrap().is_empty(),
            "{engine}"
        );
        assert!(
            store
                .installation(&other, "owl", "prod")
                .await
                .unwrap()
                .is_none()
        );
        assert!(
            store
                .rollback(&other, "owl", "prod", "x")
                .await
                .unwrap()
                .is_none()
        );
        assert!(!store.uninstall(&other, "owl", "prod", "x").await.unwrap());
        let back = store
            .rollback(&acme, "owl", "prod", "u2")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (back.version.as_str(), back.previous_version),
            ("1.0.0", None),
            "{engine}"
        );
        // Nothing before that: the installation stays as it is.
        let again = store
            .rollback(&acme, "owl", "prod", "u2")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(again.version, "1.0.0");
        assert!(store.uninstall(&acme, "owl", "prod", "u2").await.unwrap());
        assert!(!store.uninstall(&acme, "owl", "prod", "u2").await.unwrap());
        assert_eq!(
            store.installations(&acme).await.unwrap().len(),
            1,
            "{engine}: staging stays"
        );
    }
}

#[tokio::test]
async fn ratings_are_one_per_user_and_counts_add_up() {
    for (engine, store, _dir) in stores().await {
        let (acme, other) = (tenant("acme"), tenant("other"));
        store.rate("owl", &acme, "u1", 2, "meh").await.unwrap();
        store
            .rate("owl", &acme, "u1", 5, "better now")
            .await
            .unwrap();
        store.rate("owl", &other, "u1", 4, "").await.unwrap();
        for _ in 0..3 {
            store.count_use("owl", Use::Run).await.unwrap();
        }
        store.count_use("owl", Use::Download).await.unwrap();
        let standing = store.standings().await.unwrap()["owl"];
        assert_eq!(
            (
                standing.ratings,
                standing.stars_total,
                standing.runs,
                standing.downloads
            ),
            (2, 9, 3, 1),
            "{engine}"
        );
        let ratings = store.ratings("owl", &acme, "u1").await.unwrap();
        assert_eq!(ratings.len(), 2);
        let mine: Vec<_> = ratings.iter().filter(|r| r.mine).collect();
        assert_eq!(
            mine.len(),
            1,
            "{engine}: same subject in another tenant is not mine"
        );
        assert_eq!((mine[0].stars, mine[0].comment.as_str()), (5, "better now"));
    }
}
