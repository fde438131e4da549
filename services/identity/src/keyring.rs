//! The built-in issuer's signing keys: loaded from the store, made on first start.
//! The newest key signs; every key not retired stays in the JWKS so tokens it signed
//! keep verifying until they expire.

use somagent_common::auth::{SigningKey, jwks};

use crate::store::{IdentityStore, StoredKey};

pub struct Keyring {
    /// Newest first.
    keys: Vec<SigningKey>,
}

impl Keyring {
    pub async fn load_or_create(store: &IdentityStore) -> anyhow::Result<Self> {
        let mut keys = store
            .active_keys()
            .await?
            .into_iter()
            .map(|k| SigningKey::from_pkcs8(k.kid, k.pkcs8))
            .collect::<Result<Vec<_>, _>>()?;
        if keys.is_empty() {
            let key = SigningKey::generate()?;
            store
                .insert_key(&StoredKey {
                    kid: key.kid().to_owned(),
                    pkcs8: key.pkcs8().to_vec(),
                    created_at: crate::bootstrap::now(),
                    retired_at: None,
                })
                .await?;
            tracing::info!(kid = key.kid(), "created the first signing key");
            keys.push(key);
        }
        Ok(Self { keys })
    }

    /// The key that signs new tokens.
    pub fn current(&self) -> &SigningKey {
        &self.keys[0]
    }

    /// The JWKS document of every key still in use.
    pub fn jwks(&self) -> serde_json::Value {
        jwks(&self.keys)
    }
}
