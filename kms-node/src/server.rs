//! The server loop: accepts TLS connections on a bound listener and serves
//! them until the shutdown signal, then drains open connections.
//!
//! Resources are bounded (`config::Limits`): TLS handshakes in progress (past
//! the bound a new connection is closed at once), client connections served
//! (past it a new client connection is closed after its handshake; node
//! connections do not count, so a flood of clients cannot cut the cluster
//! apart), the time to send a request head and the idle time of a kept-alive
//! connection (`header_timeout`), the time to send a body (`body_timeout`, in
//! the API), and the requests in flight per HTTP/2 connection.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio_rustls::LazyConfigAcceptor;

use crate::config::Limits;
use crate::node::Node;

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// At most one "limit reached" warning per this interval.
const WARN_EVERY: Duration = Duration::from_secs(10);
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `listener` until `shutdown` completes. A connection whose TLS
/// ClientHello offers the inter-node ALPN protocol gets the cluster's TLS
/// configuration (mutual TLS with the HSM-derived key) and the peer
/// protocol; every other one is an API client.
pub async fn run(
    listener: TcpListener,
    tls: Arc<crate::tls::ApiTls>,
    peer_tls: Arc<rustls::ServerConfig>,
    node: Arc<Node>,
    (limits, metrics_public): (Limits, bool),
    shutdown: impl Future<Output = ()>,
) {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.max_streams);
    let builder = Arc::new(builder);
    let handshakes = Arc::new(tokio::sync::Semaphore::new(limits.max_handshakes));
    let clients = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    let warned = Arc::new(parking_lot::Mutex::new(None::<std::time::Instant>));
    let warn = move |what: &str| {
        let mut w = warned.lock();
        if w.is_none_or(|t| t.elapsed() > WARN_EVERY) {
            *w = Some(std::time::Instant::now());
            tracing::warn!("{what}: new connections are closed until some end");
        }
    };
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let Ok(in_handshake) = handshakes.clone().try_acquire_owned() else {
            warn(&format!(
                "{} TLS handshakes in progress (the limit)",
                limits.max_handshakes
            ));
            drop(tcp);
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let (tls, peer_tls) = (tls.clone(), peer_tls.clone());
        let node = node.clone();
        let builder = builder.clone();
        let watcher = graceful.watcher();
        let clients = clients.clone();
        let warn = warn.clone();
        tokio::spawn(async move {
            let handshake = async {
                let start = LazyConfigAcceptor::new(rustls::server::Acceptor::default(), tcp)
                    .await
                    .map_err(|e| (false, e))?;
                let is_peer = start
                    .client_hello()
                    .alpn()
                    .is_some_and(|mut a| a.any(|p| p == crate::replication::net::ALPN));
                // The API configuration current now: a certificate reload
                // affects handshakes that start after it, never open ones.
                let cfg = if is_peer { peer_tls } else { tls.config() };
                start
                    .into_stream(cfg)
                    .await
                    .map(|s| (s, is_peer))
                    .map_err(|e| (is_peer, e))
            };
            let done = tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await;
            drop(in_handshake);
            let (tls, is_peer) = match done {
                Ok(Ok(s)) => s,
                Ok(Err((true, e))) => {
                    tracing::warn!(
                        %peer,
                        error = %e,
                        "refused a node connection: its inter-node key differs from this \
                         cluster's (another HSM key)"
                    );
                    return;
                }
                Ok(Err((false, e))) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            };
            if is_peer {
                // Peer connections live as long as the node: shutdown does not
                // wait for them (the protocol tolerates a cut connection).
                drop(watcher);
                crate::peer::serve_peer(tls, node).await;
                return;
            }
            let Ok(_client) = clients.try_acquire_owned() else {
                warn(&format!(
                    "{} client connections open (the limit, limits.max_connections)",
                    limits.max_connections
                ));
                return;
            };
            // A client certificate is optional at the handshake: without
            // one, only the probes (and, if public, the metrics) answer.
            let identity = match tls.get_ref().1.peer_certificates().and_then(|c| c.first()) {
                Some(cert) => match kms_client::Identity::from_certificate(cert) {
                    Ok(i) => Some(i),
                    Err(e) => {
                        tracing::debug!(%peer, error = %e, "unusable client certificate");
                        return;
                    }
                },
                None => None,
            };
            let access = crate::api::Access {
                identity,
                metrics_public,
            };
            let service = hyper::service::service_fn(move |req| {
                let node = node.clone();
                let access = access.clone();
                async move {
                    Ok::<_, std::convert::Infallible>(crate::api::route(node, access, req).await)
                }
            });
            let conn = builder.serve_connection(TokioIo::new(tls), service);
            if let Err(e) = watcher.watch(conn.into_owned()).await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("some connections did not finish within {DRAIN_TIMEOUT:?}");
    }
}
