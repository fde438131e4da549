//! The built-in issuer's signing keys: loaded from the store, made on first start,
//! rotated on a schedule and on demand. A new key is published at once but signs only
//! after [`PUBLISH_AHEAD_SECS`], so every verifier has fetched it before it sees a token
//! it signed; the keys it replaced stay in the JWKS until the tokens they signed have
//! expired, then leave it. Every replica reloads the keys every [`RELOAD_EVERY`], so all
//! of them sign with the same key.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use somagent_common::auth::{LEEWAY_SECS, SigningKey, jwks};
use somagent_common::clock::unix_now;

use crate::store::{IdentityStore, StoredKey};
use crate::tokens::ACCESS_TOKEN_TTL_SECS;

/// How often each replica reloads the keys (and rotates if the newest is too old).
pub const RELOAD_EVERY: Duration = Duration::from_secs(60);
/// How long a new key is published before it signs (longer than verifiers' JWKS
/// refresh cooldown).
pub const PUBLISH_AHEAD_SECS: i64 = 15;
/// A key signs for this long before a new one takes over.
pub const ROTATE_AFTER_SECS: i64 = 24 * 3600;

pub struct Keyring {
    store: IdentityStore,
    /// Newest first, with when each was made.
    keys: RwLock<Vec<(Arc<SigningKey>, i64)>>,
    newest_created_at: RwLock<i64>,
}

impl Keyring {
    pub async fn load_or_create(store: &IdentityStore) -> anyhow::Result<Self> {
        let keyring = Self {
            store: store.clone(),
            keys: RwLock::default(),
            newest_created_at: RwLock::new(0),
        };
        keyring.reload().await?;
        if keyring.keys.read().map(|k| k.is_empty()).unwrap_or(true) {
            keyring.rotate().await?;
            tracing::info!("created the first signing key");
        }
        Ok(keyring)
    }

    /// The key that signs new tokens: the newest one published long enough ago (or the
    /// only one, on a first start).
    pub fn current(&self) -> Arc<SigningKey> {
        let keys = self.keys.read().expect("keyring lock");
        let ready = unix_now() - PUBLISH_AHEAD_SECS;
        keys.iter()
            .find(|(_, created)| *created <= ready)
            .or_else(|| keys.last())
            .map(|(key, _)| key.clone())
            .expect("the keyring always holds a key")
    }

    /// The JWKS document of every key still published.
    pub fn jwks(&self) -> serde_json::Value {
        let keys = self.keys.read().expect("keyring lock");
        jwks(keys.iter().map(|(key, _)| key.as_ref()))
    }

    /// Publishes a new signing key, which takes over after [`PUBLISH_AHEAD_SECS`]; the
    /// others retire once the tokens they signed have expired.
    pub async fn rotate(&self) -> anyhow::Result<String> {
        let key = SigningKey::generate()?;
        // Strictly after the newest key, so "newest" never depends on a tie (two
        // rotations within one second).
        let newest = *self.newest_created_at.read().expect("keyring lock");
        let now = unix_now().max(newest + 1);
        self.store
            .insert_key(&StoredKey {
                kid: key.kid().to_owned(),
                pkcs8: key.pkcs8().to_vec(),
                created_at: now,
                retired_at: None,
            })
            .await?;
        let retire_at = now + PUBLISH_AHEAD_SECS + ACCESS_TOKEN_TTL_SECS + LEEWAY_SECS as i64 + 60;
        self.store.retire_keys_except(key.kid(), retire_at).await?;
        self.reload().await?;
        tracing::info!(kid = key.kid(), "signing key rotated");
        Ok(key.kid().to_owned())
    }

    /// Reads the published keys again (another replica may have rotated).
    pub async fn reload(&self) -> anyhow::Result<()> {
        let stored = self.store.active_keys().await?;
        let newest = stored.first().map_or(0, |k| k.created_at);
        let keys = stored
            .into_iter()
            .map(|k| {
                SigningKey::from_pkcs8(k.kid, k.pkcs8).map(|key| (Arc::new(key), k.created_at))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if !keys.is_empty() {
            *self.keys.write().expect("keyring lock") = keys;
            *self.newest_created_at.write().expect("keyring lock") = newest;
        }
        Ok(())
    }

    /// Keeps the keys fresh until `stopping`: reloads every [`RELOAD_EVERY`] and
    /// rotates on schedule.
    pub async fn maintain(self: Arc<Self>, stopping: somagent_common::CancellationToken) {
        let mut tick = tokio::time::interval(RELOAD_EVERY);
        tick.tick().await;
        loop {
            tokio::select! {
                () = stopping.cancelled() => return,
                _ = tick.tick() => {}
            }
            {
                if let Err(e) = self.reload().await {
                    tracing::warn!(error = %e, "cannot reload signing keys");
                    continue;
                }
                let age = unix_now() - *self.newest_created_at.read().expect("keyring lock");
                if age >= ROTATE_AFTER_SECS
                    && let Err(e) = self.rotate().await
                {
                    tracing::warn!(error = %e, "scheduled key rotation failed");
                }
            }
        }
    }
}
