//! Whether a stored version is still what its publisher signed: its definition hashes
//! to its attestation, and the key it names belongs to its publisher, is not revoked,
//! and signed this id, version and hash.

use somagent_common::capsule::{attestation, verify_signature};

use crate::store::{KeyRow, PLATFORM, Package};

/// The platform's own key, as versions name it.
pub fn platform_key_id(kid: &str) -> String {
    format!("platform:{kid}")
}

/// Why `package` may not be installed or run, if it may not. `key` is the key the
/// version names (`None` when it is gone); `platform` the platform key's id and raw
/// public key, base64url.
pub fn check(
    package: &Package,
    key: Option<&KeyRow>,
    platform: (&str, &str),
) -> Result<(), String> {
    if attestation(&package.definition) != package.attestation_hash {
        return Err("its definition no longer matches its attestation".into());
    }
    let public_key = if package.publisher == PLATFORM {
        if package.key_id != platform_key_id(platform.0) {
            return Err("it names a platform key that is not this platform's".into());
        }
        platform.1.to_owned()
    } else {
        let Some(key) = key.filter(|k| k.id == package.key_id) else {
            return Err("the key that signed it is gone".into());
        };
        if key.tenant != package.publisher {
            return Err("the key that signed it is not its publisher's".into());
        }
        if key.revoked_at.is_some() {
            return Err("the key that signed it was revoked".into());
        }
        key.public_key.clone()
    };
    if verify_signature(
        &public_key,
        &package.capsule_id,
        &package.version,
        &package.attestation_hash,
        &package.signature,
    ) {
        Ok(())
    } else {
        Err("its signature does not verify".into())
    }
}
