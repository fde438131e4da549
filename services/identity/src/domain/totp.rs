//! Time-based one-time passwords, RFC 6238 (HMAC-SHA1, 30 s steps, 6 digits), as
//! authenticator apps expect them. Codes are checked against the secret's codes for
//! the current step and one step either side; the caller remembers the last step used
//! so a code cannot be replayed.

use aws_lc_rs::hmac;

pub const STEP_SECONDS: u64 = 30;
pub const DIGITS: u32 = 6;
/// Steps accepted either side of now, for clock drift.
pub const DRIFT_STEPS: u64 = 1;

/// A TOTP secret (20 random bytes, as RFC 4226 recommends for SHA-1).
#[derive(Clone, PartialEq, Eq)]
pub struct TotpSecret(Vec<u8>);

impl std::fmt::Debug for TotpSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TotpSecret(***)")
    }
}

impl TotpSecret {
    pub fn generate() -> Self {
        Self(super::random_bytes::<20>().to_vec())
    }

    pub fn from_bytes(bytes: Vec<u8>) -> Self {
        Self(bytes)
    }

    /// The secret in base32 without padding, as authenticator apps take it.
    pub fn to_base32(&self) -> String {
        data_encoding::BASE32_NOPAD.encode(&self.0)
    }

    pub fn from_base32(value: &str) -> Option<Self> {
        data_encoding::BASE32_NOPAD
            .decode(value.trim_end_matches('=').as_bytes())
            .ok()
            .map(Self)
    }

    /// `otpauth://totp/<issuer>:<account>?secret=…&issuer=…&algorithm=SHA1&digits=6&period=30`.
    pub fn otpauth_uri(&self, issuer: &str, account: &str) -> String {
        let label = format!("{}:{}", encode(issuer), encode(account));
        format!(
            "otpauth://totp/{label}?secret={}&issuer={}&algorithm=SHA1&digits={DIGITS}&period={STEP_SECONDS}",
            self.to_base32(),
            encode(issuer)
        )
    }

    /// The code for time step `step` with `digits` digits (RFC 4226 dynamic truncation).
    pub fn code_for_step(&self, step: u64, digits: u32) -> String {
        let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, &self.0);
        let mac = hmac::sign(&key, &step.to_be_bytes());
        let mac = mac.as_ref();
        let offset = usize::from(mac[mac.len() - 1] & 0x0f);
        let binary = (u32::from(mac[offset]) & 0x7f) << 24
            | u32::from(mac[offset + 1]) << 16
            | u32::from(mac[offset + 2]) << 8
            | u32::from(mac[offset + 3]);
        let code = binary % 10u32.pow(digits);
        format!("{code:0width$}", width = digits as usize)
    }

    /// The step `code` belongs to, if it is valid at `unix_seconds` and its step is
    /// later than `last_used_step` (a code is good once).
    pub fn verify(
        &self,
        code: &str,
        unix_seconds: u64,
        last_used_step: Option<u64>,
    ) -> Option<u64> {
        if code.len() != DIGITS as usize || !code.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let now = unix_seconds / STEP_SECONDS;
        let mut found = None;
        // Check every candidate step, not stopping at the first match, so the time taken
        // does not say which step matched.
        for step in now.saturating_sub(DRIFT_STEPS)..=now + DRIFT_STEPS {
            let expected = self.code_for_step(step, DIGITS);
            if super::constant_time_eq(expected.as_bytes(), code.as_bytes()) {
                found = Some(step);
            }
        }
        found.filter(|step| last_used_step.is_none_or(|last| *step > last))
    }
}

fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6238 appendix B, SHA-1, 8 digits, secret "12345678901234567890".
    #[test]
    fn rfc_6238_test_vectors() {
        let secret = TotpSecret::from_bytes(b"12345678901234567890".to_vec());
        for (time, code) in [
            (59u64, "94287082"),
            (1_111_111_109, "07081804"),
            (1_111_111_111, "14050471"),
            (1_234_567_890, "89005924"),
            (2_000_000_000, "69279037"),
            (20_000_000_000, "65353130"),
        ] {
            assert_eq!(
                secret.code_for_step(time / STEP_SECONDS, 8),
                code,
                "T={time}"
            );
        }
    }

    #[test]
    fn a_code_is_good_within_the_drift_window_and_only_once() {
        let secret = TotpSecret::generate();
        let now = 1_700_000_000;
        let code = secret.code_for_step(now / STEP_SECONDS, DIGITS);
        let step = secret.verify(&code, now, None).expect("valid now");
        assert_eq!(
            secret.verify(&code, now + STEP_SECONDS, None),
            Some(step),
            "accepted a step late"
        );
        assert_eq!(
            secret.verify(&code, now + 3 * STEP_SECONDS, None),
            None,
            "too late"
        );
        assert_eq!(
            secret.verify(&code, now, Some(step)),
            None,
            "replayed in the same step"
        );
        assert_eq!(secret.verify("12345", now, None), None);
        assert_eq!(secret.verify("abcdef", now, None), None);
    }

    #[test]
    fn the_secret_travels_as_base32_in_an_otpauth_uri() {
        let secret = TotpSecret::from_bytes(b"12345678901234567890".to_vec());
        assert_eq!(secret.to_base32(), "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ");
        assert_eq!(
            TotpSecret::from_base32("GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"),
            Some(secret.clone())
        );
        let uri = secret.otpauth_uri("SomaAgent", "alice@acme");
        assert_eq!(
            uri,
            "otpauth://totp/SomaAgent:alice%40acme?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ&issuer=SomaAgent&algorithm=SHA1&digits=6&period=30"
        );
        assert!(!format!("{secret:?}").contains("GEZ"));
    }
}
