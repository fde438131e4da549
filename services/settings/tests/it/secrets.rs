//! Secrets in the settings store: sealed at rest and bound to their tenant and name (a
//! sealed value moved to another row does not open), versioned by how often they were
//! set, re-sealed under a new master key, gone for good when removed.

use std::sync::Arc;

use somagent_common::config::EventsUrl;
use somagent_common::infra::db::Db;
use somagent_common::infra::events::EventBus;
use somagent_common::infra::outbox::Outbox;
use somagent_common::secrets::{MasterKey, ResealScope, Sealer};
use somagent_settings::secrets::{self, SecretStore};
use sqlx::Row;

use crate::store::{person, stores, unique};

const VALUE: &[u8] = b"smtp-password-1b9e44";

async fn secret_store(db: &Db, sealer: Arc<Sealer>, bus_dir: &std::path::Path) -> SecretStore {
    let bus = EventBus::connect(&EventsUrl::Local { path: None }, bus_dir)
        .await
        .unwrap();
    SecretStore::new(db.clone(), sealer, Outbox::new(db.clone(), bus))
}

async fn sealed_values(db: &Db) -> Vec<String> {
    sqlx::query("SELECT sealed FROM settings_secrets ORDER BY tenant_id")
        .fetch_all(db.pool())
        .await
        .unwrap()
        .iter()
        .map(|r| r.try_get(0).unwrap())
        .collect()
}

#[tokio::test]
async fn a_secret_is_sealed_bound_to_its_row_and_resealed_under_a_new_key() {
    for (name, _, db, _dirs) in stores().await {
        let bus_dir = tempfile::tempdir().unwrap();
        let (_, old_entry) = MasterKey::generate();
        let sealer = Arc::new(Sealer::parse(&old_entry).unwrap());
        let store = secret_store(&db, sealer.clone(), bus_dir.path()).await;
        let (t1, t2) = (unique("t"), unique("t"));
        let alice = person(&t1, "alice");
        let hank = person(&t2, "hank");
        assert_eq!(
            store.put(&alice, "smtp", VALUE).await.unwrap().version,
            1,
            "{name}"
        );
        assert_eq!(
            store.put(&alice, "smtp", VALUE).await.unwrap().version,
            2,
            "{name}"
        );
        store.put(&hank, "smtp", b"hank's own").await.unwrap();
        assert!(
            store.put(&alice, "bad name", VALUE).await.is_err(),
            "{name}"
        );
        assert!(store.put(&alice, "empty", b"").await.is_err(), "{name}");

        // At rest: sealed, never the value.
        let stored = sealed_values(&db).await;
        assert!(stored.iter().all(|s| Sealer::is_sealed(s)), "{name}");
        assert!(
            !stored.iter().any(|s| s.contains("smtp-password")),
            "{name}"
        );
        let (value, version) = store.read(&alice.tenant, "smtp").await.unwrap().unwrap();
        assert_eq!((value.as_slice(), version), (VALUE, 2), "{name}");

        // A new master key first, the old one still known: every secret re-sealed
        // under the new one, and each still opens as its own.
        let (_, new_entry) = MasterKey::generate();
        let rotated = Arc::new(Sealer::parse(&format!("{},{}", *new_entry, *old_entry)).unwrap());
        let count = secrets::reseal(&db, &rotated, ResealScope::NotCurrent)
            .await
            .unwrap();
        assert_eq!(count, 2, "{name}");
        assert!(
            sealed_values(&db)
                .await
                .iter()
                .all(|s| rotated.is_current(s)),
            "{name}"
        );
        let only_new = Arc::new(Sealer::parse(&new_entry).unwrap());
        let store = secret_store(&db, only_new, bus_dir.path()).await;
        let (value, _) = store.read(&alice.tenant, "smtp").await.unwrap().unwrap();
        assert_eq!(value.as_slice(), VALUE, "{name}");

        // Alice's sealed value copied over Hank's row does not open as his.
        sqlx::query(
            "UPDATE settings_secrets SET sealed = (SELECT sealed FROM settings_secrets WHERE tenant_id = $1) WHERE tenant_id = $2",
        )
        .bind(alice.tenant.as_str())
        .bind(hank.tenant.as_str())
        .execute(db.pool())
        .await
        .unwrap();
        assert!(store.read(&hank.tenant, "smtp").await.is_err(), "{name}");

        // Removed for good.
        assert!(store.delete(&alice, "smtp").await.unwrap(), "{name}");
        assert!(!store.delete(&alice, "smtp").await.unwrap(), "{name}");
        assert!(
            store.read(&alice.tenant, "smtp").await.unwrap().is_none(),
            "{name}"
        );
        assert_eq!(store.list(&alice.tenant).await.unwrap(), vec![], "{name}");
    }
}
