//! Refresh tokens: `srt_<52 base32 characters>` (256 random bits), opaque to clients and
//! stored only as a SHA-256 hash.

/// Refresh tokens live this long unless used or revoked first.
pub const TTL_SECS: i64 = 30 * 24 * 3600;

/// A new token and the hash to store.
pub fn generate() -> (String, String) {
    let body = data_encoding::BASE32_NOPAD
        .encode(&super::random_bytes::<32>())
        .to_ascii_lowercase();
    let token = format!("srt_{body}");
    let hash = hash(&token);
    (token, hash)
}

pub fn hash(presented: &str) -> String {
    super::api_key::hash(presented)
}

/// Whether a presented token has the shape of a refresh token at all.
pub fn looks_like(presented: &str) -> bool {
    presented.len() == 56
        && presented.starts_with("srt_")
        && presented[4..].bytes().all(|b| b.is_ascii_alphanumeric())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_and_only_their_hash_is_kept() {
        let (a, hash_a) = generate();
        let (b, _) = generate();
        assert_ne!(a, b);
        assert!(looks_like(&a) && !looks_like("srt_short") && !looks_like("eyJhbGciOi"));
        assert_eq!(hash(&a), hash_a);
        assert!(!hash_a.contains(&a[4..]));
    }
}
