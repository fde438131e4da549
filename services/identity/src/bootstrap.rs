//! First start: an empty store gets tenant `default` and its user `admin` (role admin,
//! plus `platform:admin`, which may create tenants). The password comes from
//! `SOMAGENT_IDENTITY__BOOTSTRAP_ADMIN_PASSWORD` (or its `_FILE`), or is generated, printed once
//! and written to `<data dir>/admin-password` with mode 0600. Never again after that.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use somagent_common::auth::{Capability, Role};
use somagent_common::clock::unix_now;
use somagent_common::tenant::TenantId;

use crate::domain::password::{self, Password};
use crate::store::{IdentityStore, Tenant, User};

pub const TENANT_SLUG: &str = "default";
pub const ADMIN_USERNAME: &str = "admin";
pub const PASSWORD_FILE: &str = "admin-password";

/// What the first start created; `None` from [`bootstrap`] when the store was not empty.
#[derive(Debug)]
pub struct Bootstrapped {
    pub tenant_id: TenantId,
    /// Where a generated password was written (none when it came from the environment).
    pub password_file: Option<PathBuf>,
}

pub async fn bootstrap(
    store: &IdentityStore,
    data_dir: &Path,
    configured: Option<String>,
) -> anyhow::Result<Option<Bootstrapped>> {
    if store.tenant_count().await? > 0 {
        return Ok(None);
    }
    let generated = configured.is_none();
    let plain = configured.unwrap_or_else(|| {
        data_encoding::BASE32_NOPAD
            .encode(&crate::domain::random_bytes::<20>())
            .to_ascii_lowercase()
    });
    let password = Password::parse(plain).map_err(|e| {
        anyhow::anyhow!(
            "identity.bootstrap_admin_password (SOMAGENT_IDENTITY__BOOTSTRAP_ADMIN_PASSWORD) {e}"
        )
    })?;
    let now = unix_now();
    let tenant = Tenant {
        id: crate::tenants::new_tenant_id(),
        slug: TENANT_SLUG.into(),
        display_name: "Default".into(),
        status: "active".into(),
        created_at: now,
    };
    let mut capabilities = Role::Admin.capabilities();
    capabilities.push(Capability::PlatformAdmin);
    let hash = {
        let password = Password::parse(password.expose().to_owned()).map_err(anyhow::Error::msg)?;
        tokio::task::spawn_blocking(move || password::hash(&password)).await?
    };
    let admin = User {
        id: uuid::Uuid::now_v7().to_string(),
        tenant_id: tenant.id.clone(),
        username: ADMIN_USERNAME.into(),
        password_hash: hash,
        status: "active".into(),
        roles: vec![Role::Admin],
        capabilities,
        created_at: now,
        mfa_enabled: false,
    };
    if let Err(e) = store.create_tenant_with_admin(&tenant, &admin).await {
        // Another replica bootstrapped first: that is its admin, not ours.
        if store.tenant_count().await? > 0 {
            return Ok(None);
        }
        return Err(e).context("bootstrap: cannot create the default tenant");
    }
    let password_file = if generated {
        let path = data_dir.join(PASSWORD_FILE);
        write_private(&path, password.expose())?;
        println!(
            "identity: created tenant `{TENANT_SLUG}` and user `{ADMIN_USERNAME}` with password {} \
             (shown once; also in {}, mode 0600)",
            password.expose(),
            path.display()
        );
        Some(path)
    } else {
        println!(
            "identity: created tenant `{TENANT_SLUG}` and user `{ADMIN_USERNAME}` with the configured password"
        );
        None
    };
    Ok(Some(Bootstrapped {
        tenant_id: tenant.id,
        password_file,
    }))
}

/// Writes `content` to a new file readable by its owner only.
fn write_private(path: &Path, content: &str) -> anyhow::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    writeln!(file, "{content}")?;
    Ok(())
}
