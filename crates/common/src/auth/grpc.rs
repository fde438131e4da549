//! The principal on internal calls: the caller's bearer token travels in the gRPC
//! `authorization` metadata and each service verifies it itself (DESIGN §1.4); no
//! service trusts a bare tenant header.

use super::{Principal, Verifier};

/// Puts the caller's access token on an outgoing gRPC request.
pub fn with_bearer<T>(token: &str, mut request: tonic::Request<T>) -> tonic::Request<T> {
    if let Ok(value) = format!("Bearer {token}").parse() {
        request.metadata_mut().insert("authorization", value);
    }
    request
}

/// The bearer token an incoming gRPC call carries, if any.
pub fn bearer_of<T>(request: &tonic::Request<T>) -> Option<&str> {
    request
        .metadata()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
}

/// The verified principal of an incoming gRPC call, or `UNAUTHENTICATED`.
pub async fn principal_of<T>(
    verifier: &Verifier,
    request: &tonic::Request<T>,
) -> Result<Principal, tonic::Status> {
    let token = bearer_of(request).ok_or_else(|| {
        tonic::Status::unauthenticated("this call needs the caller's bearer token")
    })?;
    verifier
        .verify(token)
        .await
        .map_err(|e| tonic::Status::unauthenticated(e.0))
}
