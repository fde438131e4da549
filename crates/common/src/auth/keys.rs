//! Ed25519 signing keys for the built-in issuer: made here, published as JWKs, used to
//! sign access tokens. The private half never leaves this type except as PKCS#8 for
//! storage, and its `Debug` hides it.

use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Serialize;

pub struct SigningKey {
    kid: String,
    pkcs8: Vec<u8>,
    public: Vec<u8>,
    encoding: EncodingKey,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
#[error("signing key: {0}")]
pub struct KeyError(String);

impl SigningKey {
    /// A new key pair; its id is random and says nothing about the key.
    pub fn generate() -> Result<Self, KeyError> {
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).map_err(|e| KeyError(e.to_string()))?;
        let kid = uuid::Uuid::new_v4().simple().to_string();
        Self::from_pkcs8(kid, pkcs8.as_ref().to_vec())
    }

    /// A stored key.
    pub fn from_pkcs8(kid: String, pkcs8: Vec<u8>) -> Result<Self, KeyError> {
        let pair = Ed25519KeyPair::from_pkcs8(&pkcs8).map_err(|e| KeyError(e.to_string()))?;
        let public = pair.public_key().as_ref().to_vec();
        let encoding = EncodingKey::from_ed_der(&pkcs8);
        Ok(Self {
            kid,
            pkcs8,
            public,
            encoding,
        })
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The private key as PKCS#8 DER, for storage only.
    pub fn pkcs8(&self) -> &[u8] {
        &self.pkcs8
    }

    /// The public key as a JWK (RFC 8037), for the JWKS document.
    pub fn jwk(&self) -> serde_json::Value {
        serde_json::json!({
            "kty": "OKP",
            "crv": "Ed25519",
            "x": data_encoding::BASE64URL_NOPAD.encode(&self.public),
            "kid": self.kid,
            "use": "sig",
            "alg": "EdDSA",
        })
    }

    /// The raw Ed25519 public key.
    pub fn public_key(&self) -> &[u8] {
        &self.public
    }

    /// An Ed25519 signature of `message`.
    pub fn sign_bytes(&self, message: &[u8]) -> Vec<u8> {
        Ed25519KeyPair::from_pkcs8(&self.pkcs8)
            .map(|pair| pair.sign(message).as_ref().to_vec())
            .unwrap_or_default()
    }

    /// A compact JWS of `claims`, with this key's `kid` in the header.
    pub fn sign<T: Serialize>(&self, claims: &T) -> Result<String, KeyError> {
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding).map_err(|e| KeyError(e.to_string()))
    }
}

/// A JWKS document (`{"keys": [...]}`) of the given keys' public halves.
pub fn jwks<'a>(keys: impl IntoIterator<Item = &'a SigningKey>) -> serde_json::Value {
    serde_json::json!({ "keys": keys.into_iter().map(SigningKey::jwk).collect::<Vec<_>>() })
}

/// True if `signature` is `public`'s Ed25519 signature of `message`.
pub fn verify_ed25519(public: &[u8], message: &[u8], signature: &[u8]) -> bool {
    aws_lc_rs::signature::UnparsedPublicKey::new(&aws_lc_rs::signature::ED25519, public)
        .verify(message, signature)
        .is_ok()
}
