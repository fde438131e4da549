use std::path::Path;

use somagent_common::app::{RunningService, spawn_service};
use somagent_common::auth::{Capability, Role};
use somagent_common::config::{CommonConfig, DatabaseUrl};
use somagent_common::infra::db::{COMMON_MIGRATIONS, Db};
use somagent_common::service::IDENTITY;
use somagent_common::tenant::TenantId;
use somagent_identity::bootstrap::{ADMIN_USERNAME, PASSWORD_FILE, TENANT_SLUG, bootstrap};
use somagent_identity::domain::password;
use somagent_identity::store::IdentityStore;

/// Identity on embedded backends in `data`, running on a port of its own.
pub async fn start(data: &Path) -> RunningService {
    let config = CommonConfig {
        data_dir: data.to_path_buf(),
        ..CommonConfig::default()
    };
    spawn_service(&IDENTITY, config, somagent_identity::build)
        .await
        .unwrap()
}

/// The data directory's master key, as the service would load it.
fn sealer(data: &Path) -> std::sync::Arc<somagent_common::secrets::Sealer> {
    std::sync::Arc::new(somagent_common::secrets::master_key::load_or_create(data).unwrap())
}

async fn store_at(data: &Path) -> IdentityStore {
    let db = Db::connect(
        &DatabaseUrl::Sqlite {
            path: data.join("{service}.db"),
        },
        "identity",
    )
    .await
    .unwrap();
    IdentityStore::new(db, sealer(data))
}

/// A migrated identity store on SQLite, and on PostgreSQL (a schema of its own) when
/// `SOMAGENT_TEST_DATABASE_URL` is set; under `CI=true` it must be.
async fn migrated_stores(data: &Path) -> Vec<IdentityStore> {
    let mut dbs = vec![
        Db::connect(
            &DatabaseUrl::Sqlite {
                path: data.join("{service}.db"),
            },
            "identity",
        )
        .await
        .unwrap(),
    ];
    if let Some(url) = somagent_common::testing::required_env("DATABASE_URL") {
        let schema = format!("identity_{}", uuid::Uuid::new_v4().simple());
        dbs.push(Db::postgres(&url, &schema).await.unwrap());
    }
    let mut stores = Vec::new();
    for db in dbs {
        db.migrate("common", COMMON_MIGRATIONS).await.unwrap();
        db.migrate("identity", somagent_identity::MIGRATIONS)
            .await
            .unwrap();
        stores.push(IdentityStore::new(db, sealer(data)));
    }
    stores
}

#[tokio::test]
async fn the_first_start_creates_the_admin_once_and_keeps_its_signing_key() {
    let data = tempfile::tempdir().unwrap();
    let running = start(data.path()).await;
    let file = data.path().join(PASSWORD_FILE);
    let written = std::fs::read_to_string(&file).expect("the generated password is written");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    let store = store_at(data.path()).await;
    let tenant = store
        .tenant_by_slug(TENANT_SLUG)
        .await
        .unwrap()
        .expect("tenant default");
    let admin = store
        .user_by_username(&tenant.id, ADMIN_USERNAME)
        .await
        .unwrap()
        .expect("user admin");
    assert!(password::verify(written.trim(), &admin.password_hash));
    assert!(!admin.password_hash.contains(written.trim()));
    assert_eq!(admin.roles, vec![Role::Admin]);
    assert!(admin.capabilities.contains(&Capability::PlatformAdmin));

    // The JWKS on the service's port publishes the signing key.
    let jwks: serde_json::Value = reqwest::get(format!("{}/.well-known/jwks.json", running.url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let keys = jwks["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0]["kty"], "OKP");
    assert!(keys[0].get("d").is_none(), "never the private half");
    let kid = keys[0]["kid"].as_str().unwrap().to_owned();
    running.stop().await.unwrap();

    // A second start on the same data: no new admin, no new password, the same key.
    std::fs::remove_file(&file).unwrap();
    let again = start(data.path()).await;
    assert!(!file.exists(), "the bootstrap ran again");
    assert_eq!(store.tenant_count().await.unwrap(), 1);
    let jwks: serde_json::Value = reqwest::get(format!("{}/.well-known/jwks.json", again.url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(jwks["keys"][0]["kid"], kid.as_str());
    again.stop().await.unwrap();
}

#[tokio::test]
async fn a_configured_password_is_used_and_not_written_anywhere() {
    let data = tempfile::tempdir().unwrap();
    for store in migrated_stores(data.path()).await {
        let done = bootstrap(&store, data.path(), Some("a configured passphrase".into()))
            .await
            .unwrap();
        assert!(done.expect("bootstrapped").password_file.is_none());
        assert!(!data.path().join(PASSWORD_FILE).exists());
        let tenant = store.tenant_by_slug(TENANT_SLUG).await.unwrap().unwrap();
        let admin = store
            .user_by_username(&tenant.id, ADMIN_USERNAME)
            .await
            .unwrap()
            .unwrap();
        assert!(password::verify(
            "a configured passphrase",
            &admin.password_hash
        ));
        assert!(
            store
                .user_by_username(&TenantId::parse("another-tenant").unwrap(), ADMIN_USERNAME)
                .await
                .unwrap()
                .is_none()
        );
    }
    // A weak configured password stops start-up instead of being accepted.
    let other = tempfile::tempdir().unwrap();
    for store in migrated_stores(other.path()).await {
        let err = bootstrap(&store, other.path(), Some("short".into()))
            .await
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("SOMAGENT_IDENTITY__BOOTSTRAP_ADMIN_PASSWORD"),
            "{err}"
        );
        assert_eq!(
            store.tenant_count().await.unwrap(),
            0,
            "nothing half-written"
        );
    }
}

#[tokio::test]
async fn replicas_starting_together_bootstrap_one_admin() {
    let data = tempfile::tempdir().unwrap();
    for store in migrated_stores(data.path()).await {
        let (a, b) = tokio::join!(
            bootstrap(&store, data.path(), Some("first replica secret".into())),
            bootstrap(&store, data.path(), Some("second replica secret".into())),
        );
        let created = [a.unwrap(), b.unwrap()]
            .into_iter()
            .filter(Option::is_some)
            .count();
        assert_eq!(created, 1);
        assert_eq!(store.tenant_count().await.unwrap(), 1);
    }
}
