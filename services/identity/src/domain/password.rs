//! Passwords: checked for length, stored only as argon2id hashes (PHC strings).
//!
//! Hashing is deliberately slow (tens of ms); callers run it on a blocking thread.

use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use argon2::{Algorithm, Argon2, Params, Version};

/// A password a user typed, checked against the policy. Its `Debug` hides it.
pub struct Password(String);

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(***)")
    }
}

impl Password {
    pub const MIN_CHARS: usize = 12;
    pub const MAX_BYTES: usize = 1024;

    pub fn parse(value: String) -> Result<Self, String> {
        if value.chars().count() < Self::MIN_CHARS {
            return Err(format!("must be at least {} characters", Self::MIN_CHARS));
        }
        if value.len() > Self::MAX_BYTES {
            return Err(format!("must be at most {} bytes", Self::MAX_BYTES));
        }
        Ok(Self(value))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// OWASP's argon2id baseline: 19 MiB, 2 passes, 1 lane.
fn hasher() -> Argon2<'static> {
    let params = Params::new(19 * 1024, 2, 1, None).expect("valid argon2 parameters");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// The PHC string (`$argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash>`) for `password`.
pub fn hash(password: &Password) -> String {
    let salt: [u8; 16] = super::random_bytes();
    hasher()
        .hash_password_with_salt(password.expose().as_bytes(), &salt)
        .expect("argon2id hashes any password within the length policy")
        .to_string()
}

/// Whether `candidate` matches the stored PHC string. A malformed hash never matches.
pub fn verify(candidate: &str, stored: &str) -> bool {
    hasher()
        .verify_password(candidate.as_bytes(), stored)
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hash_verifies_its_password_only() {
        let password = Password::parse("correct horse battery".into()).unwrap();
        let stored = hash(&password);
        assert!(
            stored.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{stored}"
        );
        assert!(!stored.contains("correct horse"));
        assert!(verify("correct horse battery", &stored));
        assert!(!verify("correct horse batterY", &stored));
        assert!(!verify("correct horse battery", "not a hash"));
        // Salted: the same password hashes differently each time.
        assert_ne!(stored, hash(&password));
    }

    #[test]
    fn the_policy_refuses_short_and_huge_passwords() {
        assert!(Password::parse("short".into()).is_err());
        assert!(Password::parse("x".repeat(2000)).is_err());
        let debug = format!(
            "{:?}",
            Password::parse("a long enough secret".into()).unwrap()
        );
        assert!(!debug.contains("secret"));
    }
}
