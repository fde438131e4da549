//! Forwarding a call to a service behind the gateway. Every handler makes its calls the
//! same way: the caller's credentials go along (`Authenticated::forward`), and the
//! service's refusal comes back as the API's error with its stable code intact (the
//! `From<tonic::Status>` of `ApiError`), so the message is all a handler sees.

use std::future::Future;

use somagent_common::error::ApiError;

/// `.answer()` on a call to a service: the message it answered with (or, for a
/// streaming call, the stream), or its refusal as an [`ApiError`].
pub(super) trait Answer<T> {
    fn answer(self) -> impl Future<Output = Result<T, ApiError>> + Send;
}

impl<T, F> Answer<T> for F
where
    F: Future<Output = Result<tonic::Response<T>, tonic::Status>> + Send,
    T: Send,
{
    async fn answer(self) -> Result<T, ApiError> {
        Ok(self.await?.into_inner())
    }
}

/// A service's JSON answer read back; one that does not read is the service's fault.
pub(super) fn json_answer(text: &str, service: &str) -> Result<serde_json::Value, ApiError> {
    serde_json::from_str(text).map_err(|e| {
        ApiError::internal(anyhow::anyhow!(
            "{service} answered JSON that does not read: {e}"
        ))
    })
}
