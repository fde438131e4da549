//! API keys: `sak_<prefix>_<secret>`. The prefix finds the key's record; only a SHA-256
//! hash of the whole key is stored, so a leaked database yields no usable key. The key
//! itself is shown once, when created.

use aws_lc_rs::digest;

const SCHEME: &str = "sak";

/// A freshly made key: `secret` goes to the caller once; `prefix` and `hash` are stored.
pub struct NewApiKey {
    pub prefix: String,
    pub secret: String,
    pub hash: String,
}

impl std::fmt::Debug for NewApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewApiKey")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

pub fn generate() -> NewApiKey {
    let alphabet = data_encoding::BASE32_NOPAD;
    let prefix = alphabet
        .encode(&super::random_bytes::<5>())
        .to_ascii_lowercase();
    let body = alphabet
        .encode(&super::random_bytes::<20>())
        .to_ascii_lowercase();
    let secret = format!("{SCHEME}_{prefix}_{body}");
    let hash = hash(&secret);
    NewApiKey {
        prefix,
        secret,
        hash,
    }
}

/// The lookup prefix of a presented key, if it has the key's shape at all.
pub fn prefix_of(presented: &str) -> Option<&str> {
    let mut parts = presented.splitn(3, '_');
    let (scheme, prefix, body) = (parts.next()?, parts.next()?, parts.next()?);
    let shaped = scheme == SCHEME
        && prefix.len() == 8
        && body.len() == 32
        && presented
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_');
    shaped.then_some(prefix)
}

/// Hex SHA-256 of the whole key.
pub fn hash(presented: &str) -> String {
    let digest = digest::digest(&digest::SHA256, presented.as_bytes());
    data_encoding::HEXLOWER.encode(digest.as_ref())
}

/// Whether `presented` is the key whose stored hash is `stored_hash`.
pub fn matches(presented: &str, stored_hash: &str) -> bool {
    super::constant_time_eq(hash(presented).as_bytes(), stored_hash.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_found_by_prefix_and_proven_by_hash() {
        let key = generate();
        assert!(key.secret.starts_with("sak_"));
        assert_eq!(prefix_of(&key.secret), Some(key.prefix.as_str()));
        assert!(matches(&key.secret, &key.hash));
        assert!(!key.hash.contains(&key.secret[12..]));
        let mut tampered = key.secret.clone();
        tampered.pop();
        tampered.push(if key.secret.ends_with('a') { 'b' } else { 'a' });
        assert!(!matches(&tampered, &key.hash));
        assert!(!format!("{key:?}").contains(&key.secret));
    }

    #[test]
    fn malformed_keys_have_no_prefix() {
        for bad in [
            "",
            "sak_",
            "sak_short_x",
            "pk_abcdefgh_abcdefghijklmnopqrstuvwxyz012345",
            "sak_abcdefgh_abc def",
        ] {
            assert_eq!(prefix_of(bad), None, "{bad}");
        }
        assert_ne!(generate().secret, generate().secret);
    }
}
