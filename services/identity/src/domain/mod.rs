//! Identity rules, free of I/O: passwords, one-time codes and API keys. Roles and
//! capabilities live in `somagent_common::auth`, which every service reads.

pub mod api_key;
pub mod external_user;
pub mod names;
pub mod password;
pub mod recovery_code;
pub mod refresh_token;
pub mod service_grants;
pub mod totp;

/// Fills a buffer from the operating system's CSPRNG.
pub(crate) fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    aws_lc_rs::rand::fill(&mut bytes).expect("the system random generator works");
    bytes
}

/// Compares two byte strings in time that depends only on their length.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
