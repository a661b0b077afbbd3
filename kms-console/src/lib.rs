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
//! Local mode (the default) binds loopback and signs in with a one-time URL.
//! Shared mode (an address off loopback) requires TLS; its listener and the
//! per-person sign-in are not implemented yet, so it refuses to start.
#![forbid(unsafe_code)]

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use kms_client::Client;
use tokio::net::TcpListener;

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
    /// Shared mode is configured but not implemented yet.
    #[error("shared mode ({0} with TLS and per-person sign-in) is not implemented yet; use a loopback address")]
    SharedNotImplemented(SocketAddr),
    /// The listen address is invalid.
    #[error("invalid address '{0}'")]
    Addr(String),
    /// The listener could not be bound.
    #[error("cannot listen on {0}: {1}")]
    Bind(SocketAddr, std::io::Error),
}

/// The console's settings, validated by [`Settings::validate`].
#[derive(Clone, Debug)]
pub struct Settings {
    /// Where to listen.
    pub addr: String,
    /// TLS certificate and key (PEM), required off loopback.
    pub tls: Option<(PathBuf, PathBuf)>,
}

/// The mode the console runs in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Loopback, one operator, the CLI's API key, a one-time login URL.
    Local(SocketAddr),
}

impl Settings {
    /// Checks the settings: an address off loopback needs TLS (and, for
    /// now, is refused as not implemented).
    pub fn validate(&self) -> Result<Mode, Error> {
        let addr: SocketAddr = self
            .addr
            .parse()
            .map_err(|_| Error::Addr(self.addr.clone()))?;
        if addr.ip().is_loopback() {
            return Ok(Mode::Local(addr));
        }
        match self.tls {
            None => Err(Error::SharedWithoutTls(addr)),
            Some(_) => Err(Error::SharedNotImplemented(addr)),
        }
    }
}

/// A console bound to its listener, ready to serve.
pub struct Console {
    listener: TcpListener,
    app: Arc<web::App>,
    login_token: String,
}

impl Console {
    /// Binds the listener of `mode`; the client is the one every page uses.
    pub async fn bind(mode: Mode, client: Client) -> Result<Self, Error> {
        let Mode::Local(addr) = mode;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|e| Error::Bind(addr, e))?;
        Self::with_listener(listener, client)
    }

    /// A console on an already bound (loopback) listener.
    pub fn with_listener(listener: TcpListener, client: Client) -> Result<Self, Error> {
        let addr = listener
            .local_addr()
            .map_err(|e| Error::Bind(SocketAddr::from(([127, 0, 0, 1], 0)), e))?;
        let sessions = session::Sessions::new(session::Limits::default());
        let login_token = sessions.new_login_token();
        Ok(Self {
            listener,
            app: Arc::new(web::App::new(client, sessions, false, addr)),
            login_token,
        })
    }

    /// The address the console listens on.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The one-time login URL (valid for one sign-in).
    pub fn login_url(&self) -> std::io::Result<String> {
        Ok(format!(
            "http://{}/login?token={}",
            self.local_addr()?,
            self.login_token
        ))
    }

    /// Serves until `shutdown` completes.
    pub async fn serve(self, shutdown: impl Future<Output = ()>) {
        web::serve(self.listener, self.app, shutdown).await
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
        assert!(matches!(s.validate(), Err(Error::SharedNotImplemented(_))));
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
