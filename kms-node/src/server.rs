//! The server loop: accepts TLS connections on a bound listener and serves
//! them until the shutdown signal, then drains open connections.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio_rustls::LazyConfigAcceptor;

use crate::node::Node;

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `listener` until `shutdown` completes. A connection whose TLS
/// ClientHello offers the inter-node ALPN protocol gets the cluster's TLS
/// configuration (mutual TLS with the HSM-derived key) and the peer
/// protocol; every other one is an API client.
pub async fn run(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    peer_tls: Arc<rustls::ServerConfig>,
    node: Arc<Node>,
    shutdown: impl Future<Output = ()>,
) {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let builder = Arc::new(auto::Builder::new(TokioExecutor::new()));
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
        let _ = tcp.set_nodelay(true);
        let (tls, peer_tls) = (tls.clone(), peer_tls.clone());
        let node = node.clone();
        let builder = builder.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let handshake = async {
                let start = LazyConfigAcceptor::new(rustls::server::Acceptor::default(), tcp)
                    .await
                    .map_err(|e| (false, e))?;
                let is_peer = start
                    .client_hello()
                    .alpn()
                    .is_some_and(|mut a| a.any(|p| p == crate::replication::net::ALPN));
                let cfg = if is_peer { peer_tls } else { tls };
                start
                    .into_stream(cfg)
                    .await
                    .map(|s| (s, is_peer))
                    .map_err(|e| (is_peer, e))
            };
            let (tls, is_peer) = match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await {
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
                crate::node::serve_peer(tls, node).await;
                return;
            }
            let identity = match tls.get_ref().1.peer_certificates().and_then(|c| c.first()) {
                Some(cert) => match kms_client::Identity::from_certificate(cert) {
                    Ok(i) => i,
                    Err(e) => {
                        tracing::debug!(%peer, error = %e, "unusable client certificate");
                        return;
                    }
                },
                None => return,
            };
            let service = hyper::service::service_fn(move |req| {
                let node = node.clone();
                let identity = identity.clone();
                async move {
                    Ok::<_, std::convert::Infallible>(crate::api::route(node, identity, req).await)
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
