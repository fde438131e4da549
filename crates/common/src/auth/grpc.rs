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

/// The caller of an incoming gRPC call, as [`Authenticate`] verified it, or
/// `UNAUTHENTICATED` when the call came without a token.
pub fn caller<T>(request: &tonic::Request<T>) -> Result<Principal, tonic::Status> {
    request
        .extensions()
        .get::<Principal>()
        .cloned()
        .ok_or_else(|| tonic::Status::unauthenticated("this call needs the caller's bearer token"))
}

/// Verifies the bearer token of every incoming call of a gRPC service once, before its
/// handler runs: a valid token puts its [`Principal`] in the request (read it with
/// [`caller`]); an invalid one is refused `UNAUTHENTICATED` before any handler sees
/// it; a call without a token goes on without a principal, for the few calls whose
/// proof is something else (a password grant, a service's own credential, a refresh
/// token), and every handler that needs a caller refuses it through [`caller`].
#[derive(Clone)]
pub struct Authenticate {
    verifier: std::sync::Arc<Verifier>,
}

impl Authenticate {
    pub fn new(verifier: std::sync::Arc<Verifier>) -> Self {
        Self { verifier }
    }
}

impl<S> tower::Layer<S> for Authenticate {
    type Service = Authenticated<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Authenticated {
            inner,
            verifier: self.verifier.clone(),
        }
    }
}

/// A gRPC service behind [`Authenticate`].
#[derive(Clone)]
pub struct Authenticated<S> {
    inner: S,
    verifier: std::sync::Arc<Verifier>,
}

impl<S: tonic::server::NamedService> tonic::server::NamedService for Authenticated<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, B> tower::Service<http::Request<B>> for Authenticated<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = futures::future::BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        // The clone that was polled ready serves this call (tower's rule for services
        // moved into a future).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let verifier = self.verifier.clone();
        Box::pin(async move {
            let token = request
                .headers()
                .get(http::header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .map(|v| v.strip_prefix("Bearer ").unwrap_or("").to_owned());
            if let Some(token) = token {
                match verifier.verify(&token).await {
                    Ok(principal) => {
                        request.extensions_mut().insert(principal);
                    }
                    Err(e) => return Ok(tonic::Status::unauthenticated(e.0).into_http()),
                }
            }
            inner.call(request).await
        })
    }
}
