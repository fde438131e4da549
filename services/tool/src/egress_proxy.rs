//! The way out for the browser and for sandboxed runs allowed the network: an HTTP
//! proxy (on loopback for the browser; on a socket in a run's private directory, relayed
//! into its network namespace, for a sandboxed run) that every request goes through
//! (`CONNECT` for TLS and WebSockets, absolute URLs for plain HTTP). The proxy resolves
//! each host itself and connects only to an address it checked — public unless the
//! operator allows private networks — so neither a redirect, a frame, a script nor a DNS
//! answer that changes between a check and the connection reaches the platform's own
//! network.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UnixListener};

use somagent_common::egress;

/// The longest request head read.
const MAX_HEAD: usize = 32 * 1024;
/// How long a connection to a checked address may take.
const CONNECT: Duration = Duration::from_secs(15);

/// What a proxy lets through.
#[derive(Debug, Clone, Default)]
pub struct Rules {
    /// Private, loopback and link-local addresses too.
    pub allow_private: bool,
    /// Only these hosts (`*.` and a name for any below it); none: any.
    pub hosts: Vec<String>,
}

/// Starts the proxy on a free loopback port; its address.
pub async fn start(allow_private: bool) -> std::io::Result<SocketAddr> {
    let rules = std::sync::Arc::new(Rules {
        allow_private,
        hosts: Vec::new(),
    });
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((client, _)) => {
                    let rules = rules.clone();
                    tokio::spawn(async move {
                        let _ = serve(client, &rules).await;
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "the browser's proxy cannot accept");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    });
    Ok(address)
}

/// Serves a sandboxed run's proxy on `listener` (a socket in its private directory)
/// until the returned task is aborted.
pub fn serve_unix(listener: UnixListener, rules: Rules) -> tokio::task::JoinHandle<()> {
    let rules = std::sync::Arc::new(rules);
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let rules = rules.clone();
            tokio::spawn(async move {
                let _ = serve(client, &rules).await;
            });
        }
    })
}

async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
    mut client: S,
    rules: &Rules,
) -> std::io::Result<()> {
    let mut buffer = Vec::with_capacity(4096);
    let end = loop {
        let mut chunk = [0u8; 4096];
        let n = client.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buffer.extend_from_slice(&chunk[..n]);
        if let Some(at) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        if buffer.len() > MAX_HEAD {
            return refuse(&mut client, 431, "the request head is too large").await;
        }
    };
    let head = String::from_utf8_lossy(&buffer[..end]).into_owned();
    let rest = buffer[end..].to_vec();
    let mut lines = head.split("\r\n");
    let first = lines.next().unwrap_or_default();
    let mut parts = first.split(' ');
    let (method, target, version) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or("HTTP/1.1"),
    );
    if method == "CONNECT" {
        let Some((host, port)) = split_authority(target) else {
            return refuse(&mut client, 400, "CONNECT names a host and a port").await;
        };
        let mut upstream = match connect_checked(&host, port, rules).await {
            Ok(upstream) => upstream,
            Err(why) => return refuse(&mut client, 403, &why).await,
        };
        client
            .write_all(b"HTTP/1.1 200 Connection Established\r\n\r\n")
            .await?;
        if !rest.is_empty() {
            upstream.write_all(&rest).await?;
        }
        tokio::io::copy_bidirectional(&mut client, &mut upstream).await?;
        return Ok(());
    }
    let Ok(url) = url::Url::parse(target) else {
        return refuse(&mut client, 400, "a proxy request names an absolute URL").await;
    };
    if url.scheme() != "http" {
        return refuse(&mut client, 400, "only http goes without CONNECT").await;
    }
    let (Some(host), Some(port)) = (url.host_str(), url.port_or_known_default()) else {
        return refuse(&mut client, 400, "the URL names no host").await;
    };
    let host = host.trim_matches(['[', ']']).to_owned();
    let mut upstream = match connect_checked(&host, port, rules).await {
        Ok(upstream) => upstream,
        Err(why) => return refuse(&mut client, 403, &why).await,
    };
    // The request as the origin expects it: its path, without the proxy's headers, and
    // one request per connection (a next one may be for another host).
    let mut path = url.path().to_owned();
    if let Some(query) = url.query() {
        path.push('?');
        path.push_str(query);
    }
    let mut forwarded = format!("{method} {path} {version}\r\n");
    for line in lines.filter(|l| !l.is_empty()) {
        let name = line.split(':').next().unwrap_or_default().trim();
        if [
            "proxy-connection",
            "proxy-authorization",
            "connection",
            "keep-alive",
        ]
        .iter()
        .any(|h| name.eq_ignore_ascii_case(h))
        {
            continue;
        }
        forwarded.push_str(line);
        forwarded.push_str("\r\n");
    }
    forwarded.push_str("Connection: close\r\n\r\n");
    upstream.write_all(forwarded.as_bytes()).await?;
    if !rest.is_empty() {
        upstream.write_all(&rest).await?;
    }
    tokio::io::copy_bidirectional(&mut client, &mut upstream).await?;
    Ok(())
}

/// `host:port` (or `[v6]:port`).
fn split_authority(authority: &str) -> Option<(String, u16)> {
    let (host, port) = authority.rsplit_once(':')?;
    let port = port.parse().ok()?;
    let host = host.trim_matches(['[', ']']);
    (!host.is_empty()).then(|| (host.to_owned(), port))
}

/// A connection to `host` at an address that may be reached: the name resolved here,
/// each address checked, and the connection made to a checked one.
async fn connect_checked(host: &str, port: u16, rules: &Rules) -> Result<TcpStream, String> {
    if !crate::domain::manifest::host_allowed(&rules.hosts, host) {
        return Err(format!("{host} is not among the hosts this tool may reach"));
    }
    let allow_private = rules.allow_private;
    let addresses: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
        .await
        .map_err(|_| format!("{host} does not resolve"))?
        .collect();
    let allowed: Vec<SocketAddr> = addresses
        .into_iter()
        .filter(|a| allow_private || !egress::is_private(a.ip()))
        .collect();
    if allowed.is_empty() {
        return Err(format!("{host} is on a private network"));
    }
    for address in allowed {
        if let Ok(Ok(stream)) = tokio::time::timeout(CONNECT, TcpStream::connect(address)).await {
            return Ok(stream);
        }
    }
    Err(format!("{host} does not answer"))
}

async fn refuse<S: AsyncWrite + Unpin>(
    client: &mut S,
    status: u16,
    why: &str,
) -> std::io::Result<()> {
    let reason = match status {
        400 => "Bad Request",
        403 => "Forbidden",
        _ => "Request Header Fields Too Large",
    };
    let body = format!("refused by the platform: {why}\n");
    let answer = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    client.write_all(answer.as_bytes()).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn private_addresses_are_refused_and_public_names_pass() {
        assert_eq!(split_authority("[::1]:443"), Some(("::1".to_owned(), 443)));
        assert_eq!(split_authority("example.org"), None);
        let refused = connect_checked("127.0.0.1", 9, &Rules::default())
            .await
            .unwrap_err();
        assert!(refused.contains("private network"), "{refused}");
        let only = Rules {
            allow_private: true,
            hosts: vec!["*.example.org".into(), "api.github.com".into()],
        };
        let refused = connect_checked("localhost", 9, &only).await.unwrap_err();
        assert!(refused.contains("not among the hosts"), "{refused}");
        let proxy = start(false).await.unwrap();
        let mut client = TcpStream::connect(proxy).await.unwrap();
        client
            .write_all(b"GET http://127.0.0.1:1/secret HTTP/1.1\r\nHost: 127.0.0.1:1\r\n\r\n")
            .await
            .unwrap();
        let mut answer = String::new();
        client.read_to_string(&mut answer).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
        let mut tunnel = TcpStream::connect(proxy).await.unwrap();
        tunnel
            .write_all(b"CONNECT 169.254.169.254:80 HTTP/1.1\r\n\r\n")
            .await
            .unwrap();
        let mut answer = String::new();
        tunnel.read_to_string(&mut answer).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
    }
}
