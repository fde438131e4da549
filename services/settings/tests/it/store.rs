//! The settings store on SQLite and (under CI) PostgreSQL: patches make versions that
//! read back with what they replaced, a misfit is refused naming its path and writes
//! nothing, a stale `If-Match` is a conflict, flags fall back to the platform's, and
//! every change is audited and announced in the same commit.

use std::collections::BTreeSet;

use serde_json::{Value, json};
use somagent_common::auth::Principal;
use somagent_common::config::{DatabaseUrl, EventsUrl};
use somagent_common::error::ErrorCode;
use somagent_common::infra::db::{COMMON_MIGRATIONS, Db};
use somagent_common::infra::events::EventBus;
use somagent_common::infra::outbox::Outbox;
use somagent_common::tenant::TenantId;
use somagent_settings::store::{Scope, SettingsStore};
use sqlx::Row;

pub fn unique(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::new_v4().simple())
}

pub async fn stores() -> Vec<(&'static str, SettingsStore, Db, Vec<tempfile::TempDir>)> {
    let dir = tempfile::tempdir().unwrap();
    let bus_dir = tempfile::tempdir().unwrap();
    let bus = EventBus::connect(&EventsUrl::Local { path: None }, bus_dir.path())
        .await
        .unwrap();
    let sqlite = Db::connect(
        &DatabaseUrl::Sqlite {
            path: dir.path().join("{service}.db"),
        },
        "settings",
    )
    .await
    .unwrap();
    let mut dbs = vec![("sqlite", sqlite)];
    if let Some(url) = somagent_common::testing::required_env("DATABASE_URL") {
        dbs.push((
            "postgres",
            Db::postgres(&url, &unique("settings")).await.unwrap(),
        ));
    }
    let mut out = Vec::new();
    for (name, db) in dbs {
        db.migrate("common", COMMON_MIGRATIONS).await.unwrap();
        db.migrate("settings", somagent_settings::MIGRATIONS)
            .await
            .unwrap();
        let store = SettingsStore::new(db.clone(), Outbox::new(db.clone(), bus.clone()));
        out.push((name, store, db, Vec::new()));
    }
    out[0].3 = vec![dir, bus_dir];
    out
}

pub fn person(tenant: &str, subject: &str) -> Principal {
    Principal {
        tenant: TenantId::parse(tenant).unwrap(),
        subject: subject.into(),
        username: None,
        roles: BTreeSet::new(),
        capabilities: BTreeSet::new(),
        issuer: "test".into(),
        token_id: None,
        expires_at: None,
        issued_at: None,
        actor: None,
        auth_methods: Vec::new(),
        api_key: None,
        audiences: Vec::new(),
    }
}

async fn outbox_topics(db: &Db) -> Vec<String> {
    sqlx::query("SELECT topic FROM outbox ORDER BY created_at, id")
        .fetch_all(db.pool())
        .await
        .unwrap()
        .iter()
        .map(|r| r.try_get::<String, _>(0).unwrap())
        .collect()
}

#[tokio::test]
async fn settings_change_by_merge_patch_in_versions_that_read_back() {
    for (name, store, db, _dirs) in stores().await {
        let t = unique("t");
        let admin = person(&t, "admin");
        let tenant = &admin.tenant;

        let (fresh, stored) = store.resolved(tenant, &Scope::Tenant).await.unwrap();
        assert_eq!(stored.version, 0, "{name}");
        assert_eq!(
            fresh["sessions"]["tool_rounds"],
            Value::Null,
            "{name}: the platform's"
        );

        let (after, v1) = store
            .patch(
                &admin,
                &Scope::Tenant,
                &json!({"display_name": "Acme", "sessions": {"tool_rounds": 2}}),
                0,
            )
            .await
            .unwrap();
        assert_eq!(
            (v1.version, &after["sessions"]["tool_rounds"]),
            (1, &json!(2)),
            "{name}"
        );
        assert_eq!(
            after["sessions"]["memory_recall"], true,
            "{name}: defaults stay"
        );
        let (after, v2) = store
            .patch(
                &admin,
                &Scope::Tenant,
                &json!({"sessions": {"tool_rounds": null, "memory_recall": false}}),
                1,
            )
            .await
            .unwrap();
        assert_eq!(v2.version, 2, "{name}");
        assert_eq!(
            after["sessions"]["tool_rounds"],
            Value::Null,
            "{name}: null resets to the default"
        );
        assert_eq!(after["display_name"], "Acme", "{name}");

        // The same patch again changes nothing and makes no version.
        let (_, same) = store
            .patch(
                &admin,
                &Scope::Tenant,
                &json!({"sessions": {"memory_recall": false}}),
                0,
            )
            .await
            .unwrap();
        assert_eq!(same.version, 2, "{name}");

        // A stale If-Match, an unknown key, a wrong type: refused, nothing written.
        let stale = store
            .patch(&admin, &Scope::Tenant, &json!({"display_name": "B"}), 1)
            .await
            .unwrap_err();
        assert_eq!(
            (stale.code, &stale.details["version"]),
            (ErrorCode::Conflict, &json!(2)),
            "{name}"
        );
        for (patch, path) in [
            (json!({"colour": "red"}), "colour"),
            (
                json!({"sessions": {"tool_rounds": "many"}}),
                "sessions.tool_rounds",
            ),
            (
                json!({"sessions": {"approval_timeout_secs": 1}}),
                "sessions.approval_timeout_secs",
            ),
        ] {
            let e = store
                .patch(&admin, &Scope::Tenant, &patch, 0)
                .await
                .unwrap_err();
            assert_eq!(e.code, ErrorCode::ValidationFailed, "{name}");
            assert!(
                e.details["fields"][path].is_string(),
                "{name}: {path}: {e:?}"
            );
        }

        // Each version reads back with what it replaced.
        let versions = store.versions(tenant, &Scope::Tenant, 10).await.unwrap();
        assert_eq!(
            versions.iter().map(|v| v.version).collect::<Vec<_>>(),
            [2, 1],
            "{name}"
        );
        let first = store
            .version(tenant, &Scope::Tenant, 1)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(first.previous, json!({}), "{name}");
        assert_eq!(
            first.document,
            json!({"display_name": "Acme", "sessions": {"tool_rounds": 2}}),
            "{name}"
        );
        assert_eq!(versions[0].previous, first.document, "{name}");
        assert_eq!(first.changed_by, "admin", "{name}");
        assert!(
            store
                .version(tenant, &Scope::Tenant, 3)
                .await
                .unwrap()
                .is_none(),
            "{name}"
        );

        // Audited and announced, twice each (the two changes), nothing for refusals.
        let topics = outbox_topics(&db).await;
        assert_eq!(
            topics.iter().filter(|t| *t == "agent.audit").count(),
            2,
            "{name}: {topics:?}"
        );
        assert_eq!(
            topics.iter().filter(|t| *t == "settings.updated").count(),
            2,
            "{name}"
        );

        // Another tenant's settings are its own.
        let other = person(&unique("t"), "admin");
        let (theirs, v) = store.resolved(&other.tenant, &Scope::Tenant).await.unwrap();
        assert_eq!(
            (v.version, &theirs["display_name"]),
            (0, &json!("")),
            "{name}"
        );
    }
}

#[tokio::test]
async fn preferences_are_each_users_own_and_flags_fall_back_to_the_platform() {
    for (name, store, _db, _dirs) in stores().await {
        let t = unique("t");
        let alice = person(&t, "alice");
        let bob = person(&t, "bob");
        let quiet = json!({"notifications": {"min_severity": "warning",
            "quiet_hours": {"enabled": true, "start": "22:30", "time_zone": "Europe/Paris"}}});
        let (mine, _) = store
            .patch(&alice, &Scope::User("alice".into()), &quiet, 0)
            .await
            .unwrap();
        assert_eq!(
            mine["notifications"]["quiet_hours"]["end"], "07:00",
            "{name}"
        );
        assert_eq!(
            mine["notifications"]["channels"],
            json!(["in_app"]),
            "{name}"
        );
        let (bobs, _) = store
            .resolved(&bob.tenant, &Scope::User("bob".into()))
            .await
            .unwrap();
        assert_eq!(bobs["notifications"]["min_severity"], "info", "{name}");
        let e = store
            .patch(
                &alice,
                &Scope::User("alice".into()),
                &json!({"notifications": {"quiet_hours": {"time_zone": "Paris"}}}),
                0,
            )
            .await
            .unwrap_err();
        assert!(
            e.details["fields"]["notifications.quiet_hours.time_zone"].is_string(),
            "{name}: {e:?}"
        );

        // Off when nobody set it; the platform's default; the tenant's own over it.
        let flag = unique("beta").to_lowercase();
        assert_eq!(
            store.flag(&alice.tenant, &flag).await.unwrap().source,
            "unset",
            "{name}"
        );
        store
            .put_flag(&alice, &flag, Some(true), true)
            .await
            .unwrap();
        let f = store.flag(&alice.tenant, &flag).await.unwrap();
        assert_eq!((f.enabled, f.source), (true, "platform"), "{name}");
        let f = store
            .put_flag(&alice, &flag, Some(false), false)
            .await
            .unwrap();
        assert_eq!((f.enabled, f.source), (false, "tenant"), "{name}");
        let elsewhere = person(&unique("t"), "x");
        assert!(
            store.flag(&elsewhere.tenant, &flag).await.unwrap().enabled,
            "{name}"
        );
        let f = store.put_flag(&alice, &flag, None, false).await.unwrap();
        assert_eq!((f.enabled, f.source), (true, "platform"), "{name}: cleared");
        assert!(
            store
                .put_flag(&alice, "Bad Name", Some(true), false)
                .await
                .is_err(),
            "{name}"
        );
        store.put_flag(&alice, &flag, None, true).await.unwrap();
    }
}
