//! `kms console`: a web console that is a client of the cluster, like the CLI
//! and the PKCS#11 module. It talks to the nodes only through
//! [`kms_client::Client`]; authorization stays in the cluster.
//!
//! - [`session`]: the one-time login token, sessions (random 256-bit ids,
//!   idle and absolute expiry) and their CSRF tokens.
//! - `web`: the HTTP plumbing: routing, forms, cookies, security headers.
//! - `pages/`: one file per page family (cluster, enclaves, keys,
//!   identities and policies), server-rendered HTML with `maud`, no
//!   JavaScript.
//!
//! - `charts`: the nodes' request metrics sampled into short histories,
//!   drawn as inline SVG.
//!
//! Local mode (no TLS; loopback only) uses the CLI's API key and signs in
//! with a one-time URL. Shared mode (`--tls-cert`/`--tls-key`, any address)
//! serves HTTPS and signs each person in with their own API key, whose
//! client lives in that person's session only.
#![forbid(unsafe_code)]

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use kms_client::tls::Trust;
use kms_client::{Client, ClientConfig};
use tokio::net::TcpListener;

mod charts;
mod pages;
pub mod session;
mod web;

/// The default address of local mode.
pub const DEFAULT_ADDR: &str = "127.0.0.1:7380";

/// An error that stops the console from starting.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An address off loopback without `--tls-cert` and `--tls-key`.
    #[error("{0} is not a loopback address: shared mode requires --tls-cert and --tls-key")]
    SharedWithoutTls(SocketAddr),
    /// The listen address is invalid.
    #[error("invalid address '{0}'")]
    Addr(String),
    /// The listener could not be bound.
    #[error("cannot listen on {0}: {1}")]
    Bind(SocketAddr, std::io::Error),
    /// The TLS certificate or key could not be used.
    #[error("TLS: {0}")]
    Tls(String),
    /// Local mode needs an API key to act with.
    #[error("local mode needs an API key (KMS_API_KEY or --api-key)")]
    NoApiKey,
}

/// The console's settings, validated by [`Settings::validate`].
#[derive(Clone, Debug)]
pub struct Settings {
    /// Where to listen.
    pub addr: String,
    /// TLS certificate and key (PEM): shared mode.
    pub tls: Option<(PathBuf, PathBuf)>,
}

/// The mode the console runs in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Loopback, plain HTTP, one operator, the CLI's API key, a one-time
    /// login URL.
    Local(SocketAddr),
    /// HTTPS on any address; each person signs in with their own API key.
    Shared {
        addr: SocketAddr,
        cert: PathBuf,
        key: PathBuf,
    },
}

impl Settings {
    /// Checks the settings: TLS means shared mode; without it the address
    /// must be loopback.
    pub fn validate(&self) -> Result<Mode, Error> {
        let addr: SocketAddr = self
            .addr
            .parse()
            .map_err(|_| Error::Addr(self.addr.clone()))?;
        match &self.tls {
            Some((cert, key)) => Ok(Mode::Shared {
                addr,
                cert: cert.clone(),
                key: key.clone(),
            }),
            None if addr.ip().is_loopback() => Ok(Mode::Local(addr)),
            None => Err(Error::SharedWithoutTls(addr)),
        }
    }
}

/// How the console reaches the cluster: the servers and how their
/// certificates are checked; in local mode also the API key it acts with.
pub struct Cluster {
    pub endpoints: Vec<String>,
    pub trust: Trust,
    pub timeout: Duration,
    /// Local mode's client (the CLI's API key); shared mode has none.
    pub client: Option<Client>,
}

impl Cluster {
    /// A client of these servers acting with `key` (shared mode's sign-in).
    pub(crate) fn client_for(&self, key: kms_client::ApiKey) -> Result<Client, kms_client::Error> {
        Client::new(ClientConfig {
            endpoints: self.endpoints.clone(),
            api_key: key,
            trust: self.trust.clone(),
            timeout: self.timeout,
        })
    }
}

/// A console bound to its listener, ready to serve.
pub struct Console {
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    app: Arc<web::App>,
    login_token: Option<String>,
}

impl Console {
    /// Binds the listener of `mode`.
    pub async fn bind(mode: Mode, cluster: Cluster) -> Result<Self, Error> {
        let addr = match &mode {
            Mode::Local(a) => *a,
            Mode::Shared { addr, .. } => *addr,
        };
        let tls = match &mode {
            Mode::Local(_) => None,
            Mode::Shared { cert, key, .. } => Some(web::tls_acceptor(cert, key)?),
        };
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|e| Error::Bind(addr, e))?;
        let c = Self::on(listener, tls, cluster)?;
        if let Some(client) = &c.app.cluster.client {
            // Who the console acts as, for its pages; it starts without
            // knowing if the cluster does not answer now.
            if let Ok(w) = web::whoami(client).await {
                let _ = c.app.local_who.set(w);
            }
        }
        Ok(c)
    }

    fn on(
        listener: TcpListener,
        tls: Option<tokio_rustls::TlsAcceptor>,
        cluster: Cluster,
    ) -> Result<Self, Error> {
        let addr = listener
            .local_addr()
            .map_err(|e| Error::Bind(SocketAddr::from(([127, 0, 0, 1], 0)), e))?;
        if tls.is_none() && cluster.client.is_none() {
            return Err(Error::NoApiKey);
        }
        let sessions = session::Sessions::new(session::Limits::default());
        let login_token = tls.is_none().then(|| sessions.new_login_token());
        Ok(Self {
            listener,
            app: Arc::new(web::App::new(cluster, sessions, tls.is_some(), addr)),
            tls,
            login_token,
        })
    }

    /// The address the console listens on.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Local mode: the one-time login URL (valid for one sign-in). Shared
    /// mode: the sign-in page's URL.
    pub fn login_url(&self) -> std::io::Result<String> {
        let addr = self.local_addr()?;
        Ok(match &self.login_token {
            Some(t) => format!("http://{addr}/login?token={t}"),
            None => format!("https://{addr}/signin"),
        })
    }

    /// Serves until `shutdown` completes.
    pub async fn serve(self, shutdown: impl Future<Output = ()>) {
        web::serve(self.listener, self.tls, self.app, shutdown).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_loopback_needs_tls() {
        let s = Settings {
            addr: "0.0.0.0:7380".into(),
            tls: None,
        };
        assert!(matches!(s.validate(), Err(Error::SharedWithoutTls(_))));
        let s = Settings {
            addr: "0.0.0.0:7380".into(),
            tls: Some(("c".into(), "k".into())),
        };
        assert!(matches!(s.validate(), Ok(Mode::Shared { .. })));
        let s = Settings {
            addr: "127.0.0.1:7380".into(),
            tls: None,
        };
        assert!(matches!(s.validate(), Ok(Mode::Local(_))));
        let s = Settings {
            addr: "[::1]:0".into(),
            tls: None,
        };
        assert!(matches!(s.validate(), Ok(Mode::Local(_))));
    }
}
