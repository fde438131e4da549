//! The capsules the platform ships (`capsules/*.json` in the repository, built into
//! the binary so an installed platform needs no files): at start each is attested,
//! signed with the platform's own key and recorded as an approved public version
//! published by the platform. A version already recorded is left as it is: versions
//! are immutable, so a changed file needs a new version.

use serde_json::Value;
use somagent_common::auth::SigningKey;
use somagent_common::capsule::{
    Definition, attestation, canonical_json, signed_message, version_key,
};
use somagent_common::clock::unix_now_ms;

use crate::domain::attest::platform_key_id;
use crate::store::{CapsuleStore, PLATFORM, Package};

/// The shipped capsules, by file.
pub const SHIPPED: &[(&str, &str)] = &[
    (
        "kamachiq-planner.json",
        include_str!("../../../capsules/kamachiq-planner.json"),
    ),
    (
        "kamachiq-project.json",
        include_str!("../../../capsules/kamachiq-project.json"),
    ),
    (
        "kamachiq-reviewer.json",
        include_str!("../../../capsules/kamachiq-reviewer.json"),
    ),
    (
        "kamachiq-worker.json",
        include_str!("../../../capsules/kamachiq-worker.json"),
    ),
    (
        "research-assistant.json",
        include_str!("../../../capsules/research-assistant.json"),
    ),
];

/// A shipped capsule as a platform-published, approved version.
pub fn package(file: &str, text: &str, key: &SigningKey) -> anyhow::Result<Package> {
    let value: Value = serde_json::from_str(text)
        .map_err(|e| anyhow::anyhow!("capsules/{file} is not JSON: {e}"))?;
    let definition = Definition::parse(&value)
        .map_err(|(field, message)| anyhow::anyhow!("capsules/{file}: {field} {message}"))?;
    let canonical = canonical_json(&value);
    let hash = attestation(&canonical);
    let signature = data_encoding::BASE64URL_NOPAD.encode(
        &key.sign_bytes(signed_message(&definition.id, &definition.version, &hash).as_bytes()),
    );
    let now = unix_now_ms();
    Ok(Package {
        id: uuid::Uuid::now_v7().to_string(),
        capsule_id: definition.id.clone(),
        version_key: version_key(&definition.version).unwrap_or_default(),
        version: definition.version,
        publisher: PLATFORM.into(),
        submitted_by: "platform".into(),
        visibility: "public".into(),
        status: "approved".into(),
        kind: definition.kind.as_str().into(),
        name: definition.name,
        summary: definition.summary,
        category: definition.category,
        tags: definition.tags,
        definition: canonical,
        attestation_hash: hash,
        signature,
        key_id: platform_key_id(key.kid()),
        notes: format!("shipped with the platform (capsules/{file})"),
        reviewer: Some("platform".into()),
        reviewed_at: Some(now),
        review_notes: None,
        created_at: now,
    })
}

/// Records every shipped capsule not recorded yet.
pub async fn load(store: &CapsuleStore, key: &SigningKey) -> anyhow::Result<()> {
    for (file, text) in SHIPPED {
        let package = package(file, text, key)?;
        match store.version(&package.capsule_id, &package.version).await? {
            Some(existing) if existing.attestation_hash != package.attestation_hash => {
                tracing::warn!(
                    capsule = %package.capsule_id,
                    version = %package.version,
                    "capsules/{file} changed but kept its version; the recorded one stays (give the change a new version)"
                );
            }
            Some(_) => {}
            None => match store.submit(&package).await {
                Ok(()) => {
                    tracing::info!(capsule = %package.capsule_id, version = %package.version, "shipped capsule recorded")
                }
                // Another replica recorded it at the same moment.
                Err(e) if e.code == somagent_common::error::ErrorCode::Conflict => {}
                Err(e) => return Err(anyhow::anyhow!("recording capsules/{file}: {}", e.message)),
            },
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_in_capsules_is_shipped() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../capsules");
        let mut files: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|f| f.ends_with(".json"))
            .collect();
        files.sort();
        let shipped: Vec<&str> = SHIPPED.iter().map(|(f, _)| *f).collect();
        assert_eq!(files, shipped);
    }

    #[test]
    fn every_shipped_capsule_reads_and_signs() {
        let key = SigningKey::generate().unwrap();
        let public = data_encoding::BASE64URL_NOPAD.encode(key.public_key());
        for (file, text) in SHIPPED {
            let p = package(file, text, &key).unwrap();
            assert!(
                crate::domain::attest::check(&p, None, (key.kid(), &public)).is_ok(),
                "{file}"
            );
        }
    }
}
