//! Sealing and opening one value, and the record format that names its master key.

use chacha20poly1305::aead::{Aead, Payload};
use chacha20poly1305::{KeyInit, XChaCha20Poly1305, XNonce};
use zeroize::Zeroizing;

/// The format's version, the first field of every sealed value.
const VERSION: &str = "v1";
const NONCE_LEN: usize = 24;
const KEY_LEN: usize = 32;

/// Why a value did not open. Never carries the value or a key.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SealError {
    #[error("the value is not sealed")]
    NotSealed,
    #[error("the value is sealed under master key `{0}`, which is not configured")]
    UnknownKey(String),
    #[error("the sealed value is malformed")]
    Malformed,
    /// Wrong key, altered bytes, or a value moved from another row.
    #[error("the sealed value does not open: altered, or it belongs to another record")]
    Rejected,
}

/// One master key with its id.
pub struct MasterKey {
    id: String,
    cipher: XChaCha20Poly1305,
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MasterKey({}, ***)", self.id)
    }
}

impl MasterKey {
    /// Parses `[<id>:]<base64 of 32 bytes>`; without an id, the id is the key's
    /// fingerprint, so two different keys never share one by accident.
    pub fn parse(entry: &str) -> Result<Self, String> {
        let (id, encoded) = match entry.split_once(':') {
            Some((id, encoded)) => (Some(id), encoded),
            None => (None, entry),
        };
        let bytes =
            Zeroizing::new(decode_base64(encoded.trim()).ok_or_else(|| {
                "a master key must be base64 (`openssl rand -base64 32`)".to_owned()
            })?);
        if bytes.len() != KEY_LEN {
            return Err(format!(
                "a master key must be {KEY_LEN} bytes, this one is {}",
                bytes.len()
            ));
        }
        let id = match id {
            Some(id) => {
                let id = id.trim();
                let valid = !id.is_empty()
                    && id.len() <= 32
                    && id
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
                if !valid {
                    return Err(format!("master key id `{id}`: 1 to 32 of A-Z a-z 0-9 - _"));
                }
                id.to_owned()
            }
            None => fingerprint(&bytes),
        };
        Ok(Self::from_bytes(id, &bytes))
    }

    /// A fresh random key and its `<id>:<base64>` entry, to be written down.
    pub fn generate() -> (Self, Zeroizing<String>) {
        let mut bytes = Zeroizing::new([0u8; KEY_LEN]);
        aws_lc_rs::rand::fill(bytes.as_mut()).expect("the system random generator works");
        let id = fingerprint(bytes.as_ref());
        let entry = Zeroizing::new(format!(
            "{id}:{}",
            data_encoding::BASE64.encode(bytes.as_ref())
        ));
        (Self::from_bytes(id, bytes.as_ref()), entry)
    }

    fn from_bytes(id: String, bytes: &[u8]) -> Self {
        let cipher = XChaCha20Poly1305::new_from_slice(bytes).expect("a 32-byte key");
        Self { id, cipher }
    }

    pub fn id(&self) -> &str {
        &self.id
    }
}

fn decode_base64(value: &str) -> Option<Vec<u8>> {
    [
        &data_encoding::BASE64,
        &data_encoding::BASE64_NOPAD,
        &data_encoding::BASE64URL,
        &data_encoding::BASE64URL_NOPAD,
    ]
    .iter()
    .find_map(|encoding| encoding.decode(value.as_bytes()).ok())
}

/// Eight hex digits of a domain-separated SHA-256 of the key: names it without
/// revealing anything usable about it.
fn fingerprint(key: &[u8]) -> String {
    let mut context = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    context.update(b"somagent master key id\0");
    context.update(key);
    data_encoding::HEXLOWER.encode(&context.finish().as_ref()[..4])
}

/// Seals under the current master key; opens under any configured one.
#[derive(Debug)]
pub struct Sealer {
    /// The current key first, then older ones that still open what they sealed.
    keys: Vec<MasterKey>,
}

impl Sealer {
    /// `keys[0]` seals; every key opens. Fails on no key or two keys with one id.
    pub fn new(keys: Vec<MasterKey>) -> Result<Self, String> {
        if keys.is_empty() {
            return Err("no master key".into());
        }
        for (i, key) in keys.iter().enumerate() {
            if keys[..i].iter().any(|k| k.id == key.id) {
                return Err(format!("master key id `{}` is given twice", key.id));
            }
        }
        Ok(Self { keys })
    }

    /// Parses a list of keys (comma, space or newline separated), the current first.
    pub fn parse(list: &str) -> Result<Self, String> {
        let keys = list
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|entry| !entry.is_empty())
            .map(MasterKey::parse)
            .collect::<Result<Vec<_>, _>>()?;
        Self::new(keys)
    }

    /// The id of the key that seals.
    pub fn current_key_id(&self) -> &str {
        &self.keys[0].id
    }

    /// The master keys' ids, the current first.
    pub fn key_ids(&self) -> impl Iterator<Item = &str> {
        self.keys.iter().map(|k| k.id.as_str())
    }

    /// True if `value` has the sealed format (whichever key sealed it). A value from
    /// before sealing (base64 or base32 text) never starts with `v1:`.
    pub fn is_sealed(value: &str) -> bool {
        value.starts_with("v1:")
    }

    /// True if `value` is sealed under the current key, so re-sealing has nothing to do.
    pub fn is_current(&self, value: &str) -> bool {
        key_id_of(value) == Some(self.current_key_id())
    }

    /// Seals `plaintext`, bound to `associated_data` (what the value is and whose).
    pub fn seal(&self, plaintext: &[u8], associated_data: &str) -> String {
        let key = &self.keys[0];
        let mut nonce = [0u8; NONCE_LEN];
        aws_lc_rs::rand::fill(&mut nonce).expect("the system random generator works");
        let ciphertext = key
            .cipher
            .encrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: plaintext,
                    aad: associated_data.as_bytes(),
                },
            )
            .expect("XChaCha20-Poly1305 seals any length a row holds");
        let mut body = Vec::with_capacity(NONCE_LEN + ciphertext.len());
        body.extend_from_slice(&nonce);
        body.extend_from_slice(&ciphertext);
        format!(
            "{VERSION}:{}:{}",
            key.id,
            data_encoding::BASE64URL_NOPAD.encode(&body)
        )
    }

    /// Opens a value sealed with the same `associated_data` under any configured key.
    pub fn open(
        &self,
        sealed: &str,
        associated_data: &str,
    ) -> Result<Zeroizing<Vec<u8>>, SealError> {
        let mut parts = sealed.splitn(3, ':');
        let (Some(version), Some(id), Some(body)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(SealError::NotSealed);
        };
        if version != VERSION {
            return Err(SealError::NotSealed);
        }
        let key = self
            .keys
            .iter()
            .find(|k| k.id == id)
            .ok_or_else(|| SealError::UnknownKey(id.to_owned()))?;
        let body = data_encoding::BASE64URL_NOPAD
            .decode(body.as_bytes())
            .map_err(|_| SealError::Malformed)?;
        if body.len() < NONCE_LEN {
            return Err(SealError::Malformed);
        }
        let (nonce, ciphertext) = body.split_at(NONCE_LEN);
        let nonce = XNonce::try_from(nonce).map_err(|_| SealError::Malformed)?;
        key.cipher
            .decrypt(
                &nonce,
                Payload {
                    msg: ciphertext,
                    aad: associated_data.as_bytes(),
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| SealError::Rejected)
    }

    /// Opens a UTF-8 value (a base32 or base64 secret).
    pub fn open_text(
        &self,
        sealed: &str,
        associated_data: &str,
    ) -> Result<Zeroizing<String>, SealError> {
        let bytes = self.open(sealed, associated_data)?;
        String::from_utf8(bytes.to_vec())
            .map(Zeroizing::new)
            .map_err(|_| SealError::Malformed)
    }
}

/// The id of the master key `value` was sealed under, if it is sealed.
pub fn key_id_of(value: &str) -> Option<&str> {
    let rest = value.strip_prefix("v1:")?;
    rest.split_once(':').map(|(id, _)| id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(id: &str) -> MasterKey {
        let (generated, _) = MasterKey::generate();
        MasterKey {
            id: id.into(),
            ..generated
        }
    }

    #[test]
    fn a_value_sealed_under_an_old_key_opens_after_rotation() {
        let (old, old_entry) = MasterKey::generate();
        let before = Sealer::parse(&old_entry).unwrap();
        let sealed = before.seal(b"totp secret", "identity/totp/t1/u1");
        assert!(sealed.starts_with(&format!("v1:{}:", old.id())));

        let (new, new_entry) = MasterKey::generate();
        let after = Sealer::parse(&format!("{},{}", *new_entry, *old_entry)).unwrap();
        assert_eq!(after.current_key_id(), new.id());
        assert!(!after.is_current(&sealed));
        assert_eq!(
            after
                .open(&sealed, "identity/totp/t1/u1")
                .unwrap()
                .as_slice(),
            b"totp secret"
        );
        let resealed = after.seal(b"totp secret", "identity/totp/t1/u1");
        assert!(after.is_current(&resealed));
        // Once the old key is gone, only what was re-sealed opens.
        let only_new = Sealer::parse(&new_entry).unwrap();
        assert_eq!(
            only_new.open(&sealed, "identity/totp/t1/u1"),
            Err(SealError::UnknownKey(old.id().to_owned()))
        );
        assert!(only_new.open(&resealed, "identity/totp/t1/u1").is_ok());
    }

    #[test]
    fn a_tampered_value_or_other_associated_data_does_not_open() {
        let sealer = Sealer::new(vec![key("k1")]).unwrap();
        let sealed = sealer.seal(b"private key", "identity/signing_key/abc");
        assert_eq!(
            sealer.open(&sealed, "identity/signing_key/xyz"),
            Err(SealError::Rejected)
        );
        // Flip one bit in each position of the body: every change is caught.
        let (head, body) = sealed.rsplit_once(':').unwrap();
        let mut bytes = data_encoding::BASE64URL_NOPAD
            .decode(body.as_bytes())
            .unwrap();
        for i in 0..bytes.len() {
            bytes[i] ^= 1;
            let tampered = format!("{head}:{}", data_encoding::BASE64URL_NOPAD.encode(&bytes));
            assert_eq!(
                sealer.open(&tampered, "identity/signing_key/abc"),
                Err(SealError::Rejected),
                "byte {i}"
            );
            bytes[i] ^= 1;
        }
        // Same bytes under another key with the same id: refused, not misread.
        let impostor = Sealer::new(vec![key("k1")]).unwrap();
        assert_eq!(
            impostor.open(&sealed, "identity/signing_key/abc"),
            Err(SealError::Rejected)
        );
        assert_eq!(
            sealer.open("JBSWY3DPEHPK3PXP", "identity/signing_key/abc"),
            Err(SealError::NotSealed)
        );
        assert_eq!(
            sealer.open(&format!("{head}:AAAA"), "identity/signing_key/abc"),
            Err(SealError::Malformed)
        );
    }

    #[test]
    fn key_lists_parse_with_ids_and_refuse_bad_keys() {
        let raw = data_encoding::BASE64.encode(&[7u8; 32]);
        let sealer = Sealer::parse(&format!(
            "new:{raw}, {}\n",
            data_encoding::BASE64URL_NOPAD.encode(&[9u8; 32])
        ))
        .unwrap();
        let ids: Vec<&str> = sealer.key_ids().collect();
        assert_eq!(ids[0], "new");
        assert_eq!(ids[1].len(), 8);
        assert!(Sealer::parse("").is_err());
        assert!(
            Sealer::parse(&data_encoding::BASE64.encode(&[1u8; 16]))
                .unwrap_err()
                .contains("32 bytes")
        );
        assert!(Sealer::parse("not base64!").is_err());
        assert!(
            Sealer::parse(&format!("a:{raw},a:{raw}"))
                .unwrap_err()
                .contains("twice")
        );
        assert!(Sealer::parse(&format!("a b:{raw}")).is_err());
        assert!(!format!("{sealer:?}").contains(&raw));
    }
}
