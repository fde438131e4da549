//! The channel every gRPC client of the platform speaks through.
//!
//! Between processes it is tonic's HTTP/2 channel. When the callee is served by the
//! same process on the loopback address the channel names (`somagent up`, where the
//! thirteen services share one process, or a test that starts several), the call goes
//! straight into the callee's router instead: the same request, the same middleware
//! (the request span, metrics, the callee's token check on every call), the same
//! protobuf bodies, without HTTP/2 framing, two TCP sockets and the wakeups between
//! them. A streamed completion crosses such a hop once per token, and the hop cost
//! more CPU than anything the services did with the token.
//!
//! A service is callable in process from the moment it serves until it starts
//! stopping; calls after that go to its socket and fail as a stopped service's would.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{LazyLock, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use futures::future::BoxFuture;
use tower::{Service, ServiceExt};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The routers this process serves, by the port they listen on.
static SERVED: LazyLock<RwLock<HashMap<u16, Router>>> = LazyLock::new(RwLock::default);

/// Makes `router`, listening on `addr`, callable in process until the returned guard
/// is dropped. Only a loopback or wildcard listener qualifies: the channel's own
/// address must reach the same router over the network too.
pub fn serve_in_process(addr: SocketAddr, router: Router) -> InProcess {
    if !(addr.ip().is_loopback() || addr.ip().is_unspecified()) {
        return InProcess(None);
    }
    SERVED
        .write()
        .unwrap_or_else(|e| e.into_inner())
        .insert(addr.port(), router);
    InProcess(Some(addr.port()))
}

/// While held, a service is callable in process.
#[must_use]
pub struct InProcess(Option<u16>);

impl Drop for InProcess {
    fn drop(&mut self) {
        if let Some(port) = self.0 {
            SERVED
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&port);
        }
    }
}

/// A gRPC channel: in process where the callee is served here, HTTP/2 otherwise.
#[derive(Clone)]
pub struct Channel {
    remote: tonic::transport::Channel,
    /// The loopback port the channel's address names, if it names one.
    port: Option<u16>,
    timeout: Option<Duration>,
    /// The callee's router, when the last `poll_ready` found it served here.
    ready_in_process: Option<Router>,
}

impl Channel {
    /// A channel to `url` (`http://host:port`) over `remote`, whose per-call timeout is
    /// `timeout`.
    pub fn new(url: &str, remote: tonic::transport::Channel, timeout: Option<Duration>) -> Self {
        Self {
            remote,
            port: loopback_port(url),
            timeout,
            ready_in_process: None,
        }
    }

    fn served_here(&self) -> Option<Router> {
        served(self.port?)
    }
}

/// The router this process serves on `port`, if it serves one there.
fn served(port: u16) -> Option<Router> {
    SERVED
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .get(&port)
        .cloned()
}

fn loopback_port(url: &str) -> Option<u16> {
    let uri: http::Uri = url.parse().ok()?;
    let host = uri.host()?.trim_start_matches('[').trim_end_matches(']');
    let loopback = host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if !loopback {
        return None;
    }
    Some(uri.port_u16().unwrap_or_else(|| match uri.scheme_str() {
        Some("https") => 443,
        _ => 80,
    }))
}

impl Service<http::Request<tonic::body::Body>> for Channel {
    type Response = http::Response<tonic::body::Body>;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<Self::Response, BoxError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.ready_in_process = self.served_here();
        if self.ready_in_process.is_some() {
            return Poll::Ready(Ok(()));
        }
        self.remote.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut request: http::Request<tonic::body::Body>) -> Self::Future {
        // The callee's span continues the caller's trace: one request, one trace,
        // across every service it reaches.
        if !request.headers().contains_key("traceparent") {
            crate::telemetry::inject_current(request.headers_mut());
        }
        let Some(router) = self.ready_in_process.take() else {
            let call = self.remote.call(request);
            return Box::pin(async move { call.await.map_err(Into::into) });
        };
        // What a socket would have told the callee about its caller.
        request
            .extensions_mut()
            .insert(ConnectInfo(SocketAddr::from(([127, 0, 0, 1], 0))));
        let timeout = self.timeout;
        Box::pin(async move {
            let answer = router.oneshot(request);
            let response = match timeout {
                Some(limit) => tokio::time::timeout(limit, answer)
                    .await
                    .map_err(|_| Box::new(tonic::TimeoutExpired(())) as BoxError)?,
                None => answer.await,
            };
            let response = response.unwrap_or_else(|never| match never {});
            Ok(response.map(tonic::body::Body::new))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_addresses_name_a_port_here() {
        assert_eq!(loopback_port("http://127.0.0.1:10022"), Some(10022));
        assert_eq!(loopback_port("http://localhost:10022"), Some(10022));
        assert_eq!(loopback_port("http://[::1]:10022"), Some(10022));
        assert_eq!(loopback_port("http://slm:10022"), None);
        assert_eq!(loopback_port("http://10.0.0.7:10022"), None);
    }

    #[tokio::test]
    async fn a_call_goes_into_the_router_served_here_and_to_the_socket_once_it_stops() {
        let router = Router::new().route(
            "/pkg.Svc/Call",
            axum::routing::post(|| async { "in process" }),
        );
        let port = 1; // never listened on: only the in-process path can answer
        let url = format!("http://127.0.0.1:{port}");
        let remote = tonic::transport::Endpoint::from_shared(url.clone())
            .unwrap()
            .connect_lazy();
        let mut channel = Channel::new(&url, remote, Some(Duration::from_secs(5)));
        let call = |channel: &mut Channel| {
            let mut channel = channel.clone();
            let url = url.clone();
            async move {
                let request = http::Request::post(format!("{url}/pkg.Svc/Call"))
                    .body(tonic::body::Body::empty())
                    .unwrap();
                channel.ready().await?.call(request).await
            }
        };
        let serving = serve_in_process(SocketAddr::from(([127, 0, 0, 1], port)), router);
        assert!(served(port).is_some());
        let response = call(&mut channel).await.expect("served in process");
        let body = axum::body::to_bytes(axum::body::Body::new(response.into_body()), 64)
            .await
            .unwrap();
        assert_eq!(&body[..], b"in process");
        drop(serving);
        assert!(call(&mut channel).await.is_err(), "port 1 has no server");
    }

    #[tokio::test]
    async fn a_call_continues_the_callers_trace() {
        use tracing::Instrument;
        let quiet = crate::config::LogConfig {
            level: "error".into(),
            ..Default::default()
        };
        crate::telemetry::init("grpc-channel-test", &quiet).unwrap();
        let router = Router::new().route(
            "/pkg.Svc/Trace",
            axum::routing::post(|headers: http::HeaderMap| async move {
                let parent = headers.get("traceparent").and_then(|v| v.to_str().ok());
                parent.unwrap_or("none").to_owned()
            }),
        );
        let port = 2;
        let url = format!("http://127.0.0.1:{port}");
        let remote = tonic::transport::Endpoint::from_shared(url.clone())
            .unwrap()
            .connect_lazy();
        let mut channel = Channel::new(&url, remote, None);
        let _serving = serve_in_process(SocketAddr::from(([127, 0, 0, 1], port)), router);
        let trace = "0af7651916cd43dd8448eb211c80319c";
        let span = tracing::info_span!(
            "caller",
            trace_id = tracing::field::Empty,
            span_id = tracing::field::Empty
        );
        crate::telemetry::adopt_traceparent(
            &span,
            Some(&format!("00-{trace}-b7ad6b7169203331-01")),
        );
        let request = http::Request::post(format!("{url}/pkg.Svc/Trace"))
            .body(tonic::body::Body::empty())
            .unwrap();
        let response = async { channel.ready().await?.call(request).await }
            .instrument(span)
            .await
            .expect("served in process");
        let body = axum::body::to_bytes(axum::body::Body::new(response.into_body()), 256)
            .await
            .unwrap();
        let parent = String::from_utf8_lossy(&body);
        assert!(
            parent.starts_with(&format!("00-{trace}-")),
            "the callee saw traceparent {parent}"
        );
    }
}
