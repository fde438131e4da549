//! What makes a constitution trustworthy: its canonical JSON is hashed (SHA-256), and
//! "<tenant>\n<version>\n<hash>" is signed with the service's Ed25519 key. Reading one
//! back checks both, so an edited row is refused rather than enforced.

use somagent_common::auth::{SigningKey, verify_ed25519};
use somagent_common::tenant::TenantId;

pub struct Signer {
    key: SigningKey,
}

pub fn hash(document: &str) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, document.as_bytes());
    data_encoding::HEXLOWER.encode(digest.as_ref())
}

fn message(tenant: &TenantId, version: u32, hash: &str) -> String {
    format!("{tenant}\n{version}\n{hash}")
}

impl Signer {
    pub fn new(key: SigningKey) -> Self {
        Self { key }
    }

    pub fn key_id(&self) -> &str {
        self.key.kid()
    }

    pub fn public_key(&self) -> String {
        data_encoding::BASE64URL_NOPAD.encode(self.key.public_key())
    }

    /// The signature of version `version` of `tenant`'s constitution with this hash.
    pub fn sign(&self, tenant: &TenantId, version: u32, hash: &str) -> String {
        data_encoding::BASE64URL_NOPAD.encode(
            &self
                .key
                .sign_bytes(message(tenant, version, hash).as_bytes()),
        )
    }

    /// True if `document` hashes to `hash` and `signature` is this key's over it.
    pub fn verify(
        &self,
        tenant: &TenantId,
        version: u32,
        document: &str,
        hash_hex: &str,
        signature: &str,
    ) -> bool {
        let Ok(signature) = data_encoding::BASE64URL_NOPAD.decode(signature.as_bytes()) else {
            return false;
        };
        hash(document) == hash_hex
            && verify_ed25519(
                self.key.public_key(),
                message(tenant, version, hash_hex).as_bytes(),
                &signature,
            )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_changed_document_or_signature_fails_verification() {
        let signer = Signer::new(SigningKey::generate().unwrap());
        let doc = r#"{"a":1}"#;
        let h = hash(doc);
        let (t1, t2) = (
            TenantId::parse("t1").unwrap(),
            TenantId::parse("t2").unwrap(),
        );
        let sig = signer.sign(&t1, 3, &h);
        assert!(signer.verify(&t1, 3, doc, &h, &sig));
        assert!(!signer.verify(&t1, 3, r#"{"a":2}"#, &h, &sig));
        assert!(!signer.verify(&t2, 3, doc, &h, &sig));
        assert!(!signer.verify(&t1, 4, doc, &h, &sig));
        let other = Signer::new(SigningKey::generate().unwrap());
        assert!(!other.verify(&t1, 3, doc, &h, &sig));
    }
}
