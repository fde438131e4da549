//! Live streams (SSE, WebSocket) outlast the request that opened them, so the caller's
//! credential is checked again while they run: a stream ends, with a last event that
//! says why, once its token expires, is revoked, or is voided by a cutoff (the user
//! disabled, deleted or given new roles or a new password; the tenant suspended).

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use somagent_common::auth::Verifier;

use crate::api::Authenticated;

/// How often a running stream's credential is checked again (a cache read).
const CHECK_EVERY: Duration = Duration::from_secs(1);

/// Why a stream was ended: a stable code and the verifier's words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ended {
    pub code: &'static str,
    pub message: String,
}

#[derive(Clone)]
pub struct CredentialWatch {
    verifier: Arc<Verifier>,
    token: String,
    expires_at: Option<i64>,
}

impl CredentialWatch {
    pub fn new(verifier: Arc<Verifier>, auth: &Authenticated) -> Self {
        Self {
            verifier,
            token: auth.token.clone(),
            expires_at: auth.principal.expires_at,
        }
    }

    /// Resolves once the credential is no longer good: at its expiry, or at the first
    /// check that finds it revoked.
    pub async fn ended(self) -> Ended {
        loop {
            let now = somagent_common::clock::unix_now();
            let left = self
                .expires_at
                .map(|at| Duration::from_secs(at.saturating_sub(now).max(0) as u64));
            if left == Some(Duration::ZERO) {
                return Ended {
                    code: "token_expired",
                    message: "the access token expired; reconnect with a fresh one".into(),
                };
            }
            tokio::time::sleep(left.map_or(CHECK_EVERY, |l| l.min(CHECK_EVERY))).await;
            if let Err(e) = self.verifier.verify(&self.token).await {
                let expired = e.0.contains("expired");
                return Ended {
                    code: if expired {
                        "token_expired"
                    } else {
                        "token_revoked"
                    },
                    message: format!("the stream ended: {}", e.0),
                };
            }
        }
    }

    /// `inner` until the credential ends; then one last item made by `closing`, and
    /// nothing after.
    pub fn guard<S, T>(
        self,
        inner: S,
        closing: impl FnOnce(Ended) -> T + Send + 'static,
    ) -> impl Stream<Item = T> + Send + 'static
    where
        S: Stream<Item = T> + Send + 'static,
        T: Send + 'static,
    {
        let ended: Pin<Box<dyn Future<Output = Ended> + Send>> = Box::pin(self.ended());
        let state = (inner.boxed(), Some(ended), Some(closing));
        futures::stream::unfold(state, |(mut inner, ended, closing)| async move {
            let mut ended = ended?;
            tokio::select! {
                biased;
                why = &mut ended => {
                    let closing = closing?;
                    Some((closing(why), (inner, None, None)))
                }
                item = inner.next() => item.map(|item| (item, (inner, Some(ended), closing))),
            }
        })
    }
}
