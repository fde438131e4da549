//! The principal on internal calls: the caller's bearer token travels in the gRPC
//! `authorization` metadata and each service verifies it itself (DESIGN §1.4); no
//! service trusts a bare tenant header.

use http::HeaderMap;

use super::{Principal, Verifier};

/// Copies the caller's `Authorization` header onto an outgoing gRPC request.
pub fn forward_authorization<T>(
    headers: &HeaderMap,
    mut request: tonic::Request<T>,
) -> tonic::Request<T> {
    if let Some(value) = headers.get(http::header::AUTHORIZATION)
        && let Ok(value) = value.to_str()
        && let Ok(value) = value.parse()
    {
        request.metadata_mut().insert("authorization", value);
    }
    request
}

/// The verified principal of an incoming gRPC call, or `UNAUTHENTICATED`.
pub async fn principal_of<T>(
    verifier: &Verifier,
    request: &tonic::Request<T>,
) -> Result<Principal, tonic::Status> {
    let token = request
        .metadata()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| {
            tonic::Status::unauthenticated("this call needs the caller's bearer token")
        })?;
    verifier
        .verify(token)
        .await
        .map_err(|e| tonic::Status::unauthenticated(e.0))
}
