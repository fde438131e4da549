//! Platform tokens exchanged for external issuers' tokens (RFC 8693), remembered by the
//! external token's SHA-256 until shortly before they expire, so a Keycloak user's
//! requests do not each cost a round trip to identity. In process and bounded: a
//! platform token is a credential, and never leaves this replica's memory.

use somagent_common::clock::unix_now;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use aws_lc_rs::digest;

/// At most this many exchanged tokens are remembered; past it the soonest to expire
/// makes room.
const CAPACITY: usize = 10_000;
/// A token this close to its expiry is exchanged anew rather than handed out: a request
/// that takes a while must not see it expire halfway.
const MARGIN_SECS: i64 = 30;

type Digest = [u8; 32];

struct Exchanged {
    token: String,
    fresh_until: i64,
}

#[derive(Clone, Default)]
pub struct ExchangedTokens {
    // A std mutex: every section is a map operation, never held across an await.
    entries: Arc<Mutex<HashMap<Digest, Exchanged>>>,
}

fn digest_of(external: &str) -> Digest {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest::digest(&digest::SHA256, external.as_bytes()).as_ref());
    out
}

impl ExchangedTokens {
    /// The platform token exchanged for `external`, if it is still fresh.
    pub fn get(&self, external: &str) -> Option<String> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries
            .get(&digest_of(external))
            .filter(|e| e.fresh_until > unix_now())
            .map(|e| e.token.clone())
    }

    /// Remembers `token` (expiring at `expires_at`) for `external`.
    pub fn put(&self, external: &str, token: String, expires_at: i64) {
        let fresh_until = expires_at - MARGIN_SECS;
        let now = unix_now();
        if fresh_until <= now {
            return;
        }
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= CAPACITY {
            entries.retain(|_, e| e.fresh_until > now);
        }
        if entries.len() >= CAPACITY
            && let Some(soonest) = entries
                .iter()
                .min_by_key(|(_, e)| e.fresh_until)
                .map(|(k, _)| *k)
        {
            entries.remove(&soonest);
        }
        entries.insert(digest_of(external), Exchanged { token, fresh_until });
    }

    /// Forgets the token exchanged for `external` (it was refused: revoked, or its
    /// user's roles changed).
    pub fn forget(&self, external: &str) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.remove(&digest_of(external));
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.lock().unwrap().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_handed_out_until_shortly_before_it_expires_and_the_cache_stays_bounded() {
        let cache = ExchangedTokens::default();
        cache.put("external-a", "platform-a".into(), unix_now() + 600);
        assert_eq!(cache.get("external-a").as_deref(), Some("platform-a"));
        assert_eq!(cache.get("external-b"), None);
        // Too close to its expiry to be worth remembering.
        cache.put(
            "external-c",
            "platform-c".into(),
            unix_now() + MARGIN_SECS - 1,
        );
        assert_eq!(cache.get("external-c"), None);
        cache.forget("external-a");
        assert_eq!(cache.get("external-a"), None);

        for i in 0..CAPACITY + 5 {
            cache.put(
                &format!("t{i}"),
                format!("p{i}"),
                unix_now() + 600 + i as i64,
            );
        }
        assert_eq!(cache.len(), CAPACITY);
        // The soonest to expire made room; the newest is kept.
        assert_eq!(cache.get("t0"), None);
        assert_eq!(
            cache.get(&format!("t{}", CAPACITY + 4)).as_deref(),
            Some(format!("p{}", CAPACITY + 4).as_str())
        );
    }
}
