//! Webhook signatures as the Standard Webhooks specification has them: each request
//! carries `webhook-id` (the message's id, the same on every try), `webhook-timestamp`
//! (Unix seconds of this try) and `webhook-signature: v1,<base64 HMAC-SHA256>` over
//! `<id>.<timestamp>.<body>`, keyed by the endpoint's secret (`whsec_<base64 key>`).
//! A receiver checks the signature in constant time and refuses a timestamp far from
//! its clock (the specification suggests five minutes), which stops replays.

use aws_lc_rs::hmac;
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use zeroize::Zeroizing;

const PREFIX: &str = "whsec_";
/// 32 random bytes: HMAC-SHA256's block-sized key strength and then some.
const KEY_BYTES: usize = 32;

/// A new endpoint secret, `whsec_<base64 of 32 random bytes>`.
pub fn new_secret() -> Zeroizing<String> {
    let mut key = Zeroizing::new([0u8; KEY_BYTES]);
    SystemRandom::new()
        .fill(key.as_mut())
        .expect("the system's random source works");
    Zeroizing::new(format!("{PREFIX}{}", STANDARD.encode(key.as_ref())))
}

/// The `webhook-signature` header's value for one request.
pub fn sign(secret: &str, message_id: &str, timestamp: i64, body: &[u8]) -> Result<String, String> {
    let key = key_of(secret)?;
    let key = hmac::Key::new(hmac::HMAC_SHA256, &key);
    let mut signed = Vec::with_capacity(message_id.len() + body.len() + 24);
    signed.extend_from_slice(message_id.as_bytes());
    signed.push(b'.');
    signed.extend_from_slice(timestamp.to_string().as_bytes());
    signed.push(b'.');
    signed.extend_from_slice(body);
    let tag = hmac::sign(&key, &signed);
    Ok(format!("v1,{}", STANDARD.encode(tag.as_ref())))
}

/// Checks a request as a receiver would: one of the header's `v1` signatures matches
/// (in constant time) and the timestamp is within `tolerance_secs` of `now`.
pub fn verify(
    secret: &str,
    message_id: &str,
    timestamp: i64,
    body: &[u8],
    header: &str,
    now: i64,
    tolerance_secs: i64,
) -> bool {
    if (now - timestamp).abs() > tolerance_secs {
        return false;
    }
    let Ok(key) = key_of(secret) else {
        return false;
    };
    let key = hmac::Key::new(hmac::HMAC_SHA256, &key);
    let signed = format!("{message_id}.{timestamp}.{}", String::from_utf8_lossy(body));
    header.split(' ').any(|one| {
        one.strip_prefix("v1,")
            .and_then(|b64| STANDARD.decode(b64).ok())
            .is_some_and(|tag| hmac::verify(&key, signed.as_bytes(), &tag).is_ok())
    })
}

/// The key bytes of a `whsec_` secret.
fn key_of(secret: &str) -> Result<Zeroizing<Vec<u8>>, String> {
    let encoded = secret.strip_prefix(PREFIX).unwrap_or(secret);
    STANDARD
        .decode(encoded)
        .map(Zeroizing::new)
        .map_err(|_| "a webhook secret is `whsec_` and base64".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The specification's own example.
    #[test]
    fn signs_the_specifications_example() {
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let id = "msg_p5jXN8AQM9LWM0D4loKWxJek";
        let body = br#"{"test": 2432232314}"#;
        let signature = sign(secret, id, 1614265330, body).unwrap();
        assert_eq!(signature, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
        assert!(verify(
            secret, id, 1614265330, body, &signature, 1614265331, 300
        ));
        // Another body, id, secret or an old timestamp does not pass.
        assert!(!verify(
            secret, id, 1614265330, b"{}", &signature, 1614265331, 300
        ));
        assert!(!verify(
            secret,
            "msg_other",
            1614265330,
            body,
            &signature,
            1614265331,
            300
        ));
        assert!(!verify(
            &new_secret(),
            id,
            1614265330,
            body,
            &signature,
            1614265331,
            300
        ));
        assert!(!verify(
            secret,
            id,
            1614265330,
            body,
            &signature,
            1614265330 + 301,
            300
        ));
        // Several signatures (a rotation): one matching is enough.
        assert!(verify(
            secret,
            id,
            1614265330,
            body,
            &format!("v1,AAAA {signature}"),
            1614265330,
            300
        ));
    }

    #[test]
    fn new_secrets_are_distinct_and_well_formed() {
        let (a, b) = (new_secret(), new_secret());
        assert_ne!(*a, *b);
        assert!(a.starts_with("whsec_"));
        assert_eq!(key_of(&a).unwrap().len(), KEY_BYTES);
    }
}
