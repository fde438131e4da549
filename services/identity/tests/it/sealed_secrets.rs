//! Secrets stored before sealing existed (plaintext TOTP secrets and signing keys) are
//! sealed when identity starts, keep working, and leave no plaintext on disk.

use std::path::Path;
use std::sync::Arc;

use somagent_common::auth::SigningKey;
use somagent_common::config::DatabaseUrl;
use somagent_common::infra::db::{COMMON_MIGRATIONS, Db};
use somagent_common::secrets::{Sealer, master_key};
use somagent_identity::domain::totp::TotpSecret;
use somagent_identity::store::IdentityStore;
use sqlx::Row;

async fn sqlite(data: &Path) -> Db {
    Db::connect(
        &DatabaseUrl::Sqlite {
            path: data.join("{service}.db"),
        },
        "identity",
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn plaintext_rows_from_before_are_sealed_at_start() {
    let data = tempfile::tempdir().unwrap();
    let db = sqlite(data.path()).await;
    db.migrate("common", COMMON_MIGRATIONS).await.unwrap();
    db.migrate("identity", somagent_identity::MIGRATIONS)
        .await
        .unwrap();
    let secret = TotpSecret::generate().to_base32();
    let key = SigningKey::generate().unwrap();
    let legacy_key = data_encoding::BASE64.encode(key.pkcs8());
    for (sql, binds) in [
        (
            "INSERT INTO tenants (id, slug, display_name, status, created_at) VALUES ($1, $2, $3, $4, 1)",
            vec!["t1", "acme", "Acme", "active"],
        ),
        (
            "INSERT INTO users (id, tenant_id, username, password_hash, status, roles, capabilities, mfa_secret, mfa_enabled, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 1, 1)",
            vec!["u1", "t1", "alice", "x", "active", "viewer", "", &secret],
        ),
        (
            "INSERT INTO signing_keys (kid, pkcs8, created_at) VALUES ($1, $2, 1)",
            vec![key.kid(), &legacy_key],
        ),
    ] {
        let mut query = sqlx::query(sql);
        for value in binds {
            query = query.bind(value.to_owned());
        }
        query.execute(db.pool()).await.unwrap();
    }
    db.close().await;

    crate::bootstrap::start(data.path())
        .await
        .stop()
        .await
        .unwrap();

    let sealer: Arc<Sealer> = Arc::new(master_key::load_or_create(data.path()).unwrap());
    let db = sqlite(data.path()).await;
    let stored_secret: String = sqlx::query("SELECT mfa_secret FROM users WHERE id = 'u1'")
        .fetch_one(db.pool())
        .await
        .unwrap()
        .get(0);
    let stored_key: String = sqlx::query("SELECT pkcs8 FROM signing_keys WHERE kid = $1")
        .bind(key.kid())
        .fetch_one(db.pool())
        .await
        .unwrap()
        .get(0);
    assert!(sealer.is_current(&stored_secret), "{stored_secret}");
    assert!(sealer.is_current(&stored_key));
    let store = IdentityStore::new(db.clone(), sealer);
    assert_eq!(store.mfa_state("u1").await.unwrap().unwrap().secret, secret);
    let keys = store.active_keys().await.unwrap();
    assert_eq!(keys[0].pkcs8, key.pkcs8());
    db.close().await;

    // Nor does the replaced plaintext linger in the file's free pages or its WAL.
    for name in ["identity.db", "identity.db-wal"] {
        let Ok(bytes) = std::fs::read(data.path().join(name)) else {
            continue;
        };
        for needle in [secret.as_bytes(), legacy_key.as_bytes()] {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle),
                "plaintext left in {name}"
            );
        }
    }
}
