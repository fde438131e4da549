//! Secrets at rest: values the platform must be able to read back (token signing keys,
//! the constitution's signing key, TOTP secrets, tenants' secrets) are sealed with
//! XChaCha20-Poly1305 under a master key (a key-encryption key) before they are stored.
//!
//! A sealed value reads `v1:<key id>:<base64url(nonce ‖ ciphertext ‖ tag)>`: the key id
//! lets the master key rotate (older keys stay configured until `somagent keys rotate`
//! has re-sealed every record), and the associated data each caller passes ("what and
//! whose": purpose, tenant, user or key id) binds a sealed value to its row, so it
//! cannot be moved to another row and still open.
//!
//! Layout: [`sealer`] (seal, open, the record format), [`master_key`] (where the
//! master keys come from: `SOMAGENT_MASTER_KEY[_FILE]`, or on one machine a file in
//! the data directory), [`signing_keys`] (a service's own sealed Ed25519 key).

pub mod master_key;
pub mod sealer;
pub mod signing_keys;

pub use master_key::{MASTER_KEY_FILE, load_sealer};
pub use sealer::{MasterKey, SealError, Sealer};
pub use signing_keys::StoredSigningKey;

use crate::infra::db::{Db, DbError, DbKind};

/// Which stored secrets a service re-seals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResealScope {
    /// Only values still in plaintext (rows from before sealing): safe at every start,
    /// whatever keys other replicas hold.
    Plaintext,
    /// Every value not sealed under the current master key (a master key rotation).
    NotCurrent,
}

impl ResealScope {
    /// True if `value` is one this scope rewrites.
    pub fn wants(self, sealer: &Sealer, value: &str) -> bool {
        match self {
            Self::Plaintext => !Sealer::is_sealed(value),
            Self::NotCurrent => !sealer.is_current(value),
        }
    }
}

/// After secrets were re-sealed in place, the values they replaced may linger in
/// SQLite's free pages and its WAL: rebuild the file and empty the WAL so the old bytes
/// leave the disk. (PostgreSQL keeps old row versions until its own VACUUM runs.)
pub async fn scrub_replaced(db: &Db) -> Result<(), DbError> {
    if db.kind() == DbKind::Sqlite {
        sqlx::query("VACUUM").execute(db.pool()).await?;
        sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
            .execute(db.pool())
            .await?;
    }
    Ok(())
}
