//! MFA recovery codes: ten one-time codes given at enrolment, for when the
//! authenticator is lost. Each is 80 random bits (`xxxx-xxxx-xxxx-xxxx` in base32), so
//! a SHA-256 hash is enough to keep them (like API keys; OWASP ASVS 2.6.2 asks for
//! 112 bits of entropy or a slow hash only for codes a person chooses).

/// How many codes one enrolment gives.
pub const COUNT: usize = 10;

/// A new code and the hash to store.
pub fn generate() -> (String, String) {
    let body = data_encoding::BASE32_NOPAD
        .encode(&super::random_bytes::<10>())
        .to_ascii_lowercase();
    let code = body
        .as_bytes()
        .chunks(4)
        .map(|c| std::str::from_utf8(c).expect("base32 is ascii"))
        .collect::<Vec<_>>()
        .join("-");
    let hash = hash(&code);
    (code, hash)
}

/// The stored form of a presented code: case and dashes do not matter to a person
/// typing it, so neither do they here.
pub fn hash(presented: &str) -> String {
    let normalized: String = presented
        .chars()
        .filter(|c| *c != '-' && !c.is_whitespace())
        .map(|c| c.to_ascii_lowercase())
        .collect();
    super::api_key::hash(&normalized)
}

/// Whether `presented` has the shape of a recovery code rather than a 6-digit TOTP code.
pub fn looks_like(presented: &str) -> bool {
    let compact: Vec<char> = presented.chars().filter(|c| *c != '-').collect();
    compact.len() == 16 && compact.iter().all(|c| c.is_ascii_alphanumeric())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_random_readable_and_kept_only_as_hashes() {
        let (a, hash_a) = generate();
        let (b, _) = generate();
        assert_ne!(a, b);
        assert_eq!(a.len(), 19);
        assert!(looks_like(&a) && !looks_like("123456"));
        assert_eq!(hash(&a.to_uppercase().replace('-', "")), hash_a);
        assert!(!hash_a.contains(&a[..4]));
    }
}
