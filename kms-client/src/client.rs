//! An async client for the KMS API with failover across servers.
//!
//! The client picks a live server at random, fails over to the next one when
//! that is safe (a connection failure, so nothing was sent; or any transport
//! failure of a GET), and marks a failed server as suspect for a while (as the
//! kms-go SDK does). Errors that the server returns are not retried.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use parking_lot::Mutex;
use rand::Rng;

use crate::cmd::Command;
use crate::frame;
use crate::proto;
use crate::tls::Trust;
use crate::{ApiKey, Error};

/// How long a server that failed is avoided.
const SUSPECT_FOR: Duration = Duration::from_secs(5);
/// Largest response body the client reads.
const MAX_RESPONSE: usize = 1 << 30;
/// Most time to open a connection: TCP connect *and* TLS handshake (capped
/// by the request timeout). A server that accepts connections and never
/// completes the handshake costs this, then the client moves on.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Settings of a [`Client`].
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// Servers as `https://host:port` or `host:port`.
    pub endpoints: Vec<String>,
    /// The API key the client authenticates with.
    pub api_key: ApiKey,
    /// How server certificates are checked.
    pub trust: Trust,
    /// Per-request timeout.
    pub timeout: Duration,
}

impl ClientConfig {
    /// Parses a comma-separated server list into endpoints.
    pub fn parse_endpoints(s: &str) -> Result<Vec<String>, Error> {
        let eps: Vec<String> = s
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .map(normalize_endpoint)
            .collect::<Result<_, _>>()?;
        if eps.is_empty() {
            return Err(Error::Config("no server given".into()));
        }
        Ok(eps)
    }
}

fn normalize_endpoint(e: &str) -> Result<String, Error> {
    let e = e.trim_end_matches('/');
    let e = if let Some(rest) = e.strip_prefix("https://") {
        rest
    } else if e.starts_with("http://") {
        return Err(Error::Config(format!(
            "server '{e}': only https is supported"
        )));
    } else {
        e
    };
    let e = if let Some(rest) = e.strip_prefix(':') {
        format!("127.0.0.1:{rest}")
    } else {
        e.to_string()
    };
    if e.is_empty() || e.contains('/') {
        return Err(Error::Config(format!("invalid server address '{e}'")));
    }
    Ok(format!("https://{e}"))
}

type HttpClient = hyper_util::client::legacy::Client<
    TimeoutConnector<hyper_rustls::HttpsConnector<HttpConnector>>,
    Full<Bytes>,
>;

/// A connector whose whole connection set-up (TCP and TLS) is bounded: a
/// timeout is a connect error, so nothing was sent and the client fails over.
#[derive(Clone)]
struct TimeoutConnector<C> {
    inner: C,
    timeout: Duration,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl<C> tower_service::Service<http::Uri> for TimeoutConnector<C>
where
    C: tower_service::Service<http::Uri> + Send,
    C::Future: Send + 'static,
    C::Error: Into<BoxError>,
{
    type Response = C::Response;
    type Error = BoxError;
    type Future =
        std::pin::Pin<Box<dyn std::future::Future<Output = Result<C::Response, BoxError>> + Send>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let timeout = self.timeout;
        let fut = self.inner.call(uri);
        Box::pin(async move {
            match tokio::time::timeout(timeout, fut).await {
                Ok(r) => r.map_err(Into::into),
                Err(_) => Err(format!(
                    "connection and TLS handshake not complete within {timeout:?}"
                )
                .into()),
            }
        })
    }
}

struct Inner {
    endpoints: Vec<String>,
    /// Shared by the clients made with [`Client::with_own_connections`].
    suspect: Arc<Mutex<Vec<Option<Instant>>>>,
    http: HttpClient,
    tls: rustls::ClientConfig,
    timeout: Duration,
}

fn http_client(tls: rustls::ClientConfig, request_timeout: Duration) -> HttpClient {
    let connect = CONNECT_TIMEOUT.min(request_timeout);
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(connect));
    let connector = TimeoutConnector {
        inner: hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_only()
            .enable_http1()
            .wrap_connector(http),
        timeout: connect,
    };
    hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        // Below the server's idle limit (limits.header_timeout_ms, 60 s by
        // default), so that a pooled connection is not reused just as the
        // server closes it.
        .pool_idle_timeout(Duration::from_secs(30))
        .build(connector)
}

/// The KMS client. Cheap to clone; clones share connections.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

/// A response of a GET endpoint.
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    pub content_type: String,
    pub body: Bytes,
}

impl Client {
    /// Builds a client. Must be called inside a Tokio runtime.
    pub fn new(cfg: ClientConfig) -> Result<Self, Error> {
        if cfg.endpoints.is_empty() {
            return Err(Error::Config("no server given".into()));
        }
        let endpoints = cfg
            .endpoints
            .iter()
            .map(|e| normalize_endpoint(e))
            .collect::<Result<Vec<_>, _>>()?;
        let tls = crate::tls::client_config(&cfg.api_key, &cfg.trust)?;
        let n = endpoints.len();
        Ok(Self {
            inner: Arc::new(Inner {
                endpoints,
                suspect: Arc::new(Mutex::new(vec![None; n])),
                http: http_client(tls.clone(), cfg.timeout),
                tls,
                timeout: cfg.timeout,
            }),
        })
    }

    /// A client with the same settings and its own connection pool, whose
    /// connections are driven by the Tokio runtime it is used on, sharing
    /// this client's record of failed servers. For callers that run one
    /// runtime per thread (the PKCS#11 module). Must be called inside a
    /// Tokio runtime.
    pub fn with_own_connections(&self) -> Self {
        Self {
            inner: Arc::new(Inner {
                endpoints: self.inner.endpoints.clone(),
                suspect: self.inner.suspect.clone(),
                http: http_client(self.inner.tls.clone(), self.inner.timeout),
                tls: self.inner.tls.clone(),
                timeout: self.inner.timeout,
            }),
        }
    }

    /// A client of the one server `idx` of this client's endpoints, sharing
    /// its connections and TLS settings: for commands that act on the node
    /// that receives them (`CLUSTER:ADDHSM`, `CLUSTER:REMOVEHSM`).
    pub fn for_endpoint(&self, idx: usize) -> Option<Self> {
        let e = self.inner.endpoints.get(idx)?;
        Some(Self {
            inner: Arc::new(Inner {
                endpoints: vec![e.clone()],
                suspect: Arc::new(Mutex::new(vec![None])),
                http: self.inner.http.clone(),
                tls: self.inner.tls.clone(),
                timeout: self.inner.timeout,
            }),
        })
    }

    /// The endpoints, normalized.
    pub fn endpoints(&self) -> &[String] {
        &self.inner.endpoints
    }

    /// Order in which to try the servers: a random live one first, suspects last.
    fn order(&self) -> Vec<usize> {
        let n = self.inner.endpoints.len();
        let start = if n > 1 {
            rand::thread_rng().gen_range(0..n)
        } else {
            0
        };
        let now = Instant::now();
        let suspect = self.inner.suspect.lock();
        let mut live = Vec::with_capacity(n);
        let mut sus = Vec::new();
        for i in 0..n {
            let idx = (start + i) % n;
            match suspect[idx] {
                Some(t) if now < t => sus.push(idx),
                _ => live.push(idx),
            }
        }
        live.extend(sus);
        live
    }

    fn mark(&self, idx: usize, ok: bool) {
        let mut s = self.inner.suspect.lock();
        s[idx] = if ok {
            None
        } else {
            Some(Instant::now() + SUSPECT_FOR)
        };
    }

    async fn request_one(
        &self,
        idx: usize,
        method: http::Method,
        path: &str,
        body: Option<Bytes>,
    ) -> Result<RawResponse, Error> {
        let url = format!("{}{}", self.inner.endpoints[idx], path);
        let mut req = http::Request::builder()
            .method(method)
            .uri(&url)
            .header(http::header::ACCEPT, "application/octet-stream");
        if body.is_some() {
            req = req.header(http::header::CONTENT_TYPE, "application/octet-stream");
        }
        let req = req
            .body(Full::new(body.unwrap_or_default()))
            .map_err(|e| Error::Config(format!("invalid request to {url}: {e}")))?;
        let fut = async {
            let resp = self.inner.http.request(req).await.map_err(|e| {
                let msg = format!("{}: {}", self.inner.endpoints[idx], error_chain(&e));
                if e.is_connect() {
                    Error::Transport(msg)
                } else {
                    Error::Interrupted(msg)
                }
            })?;
            let status = resp.status().as_u16();
            let content_type = resp
                .headers()
                .get(http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            let body = http_body_util::Limited::new(resp.into_body(), MAX_RESPONSE)
                .collect()
                .await
                .map_err(|e| {
                    Error::Interrupted(format!(
                        "{}: reading response: {e}",
                        self.inner.endpoints[idx]
                    ))
                })?
                .to_bytes();
            Ok(RawResponse {
                status,
                content_type,
                body,
            })
        };
        tokio::time::timeout(self.inner.timeout, fut)
            .await
            .map_err(|_| {
                Error::Interrupted(format!(
                    "{}: timed out after {:?}",
                    self.inner.endpoints[idx], self.inner.timeout
                ))
            })?
    }

    /// Sends a request to one server (by index), without failover.
    pub async fn request_at(
        &self,
        idx: usize,
        method: http::Method,
        path: &str,
        body: Option<Bytes>,
    ) -> Result<RawResponse, Error> {
        let r = self.request_one(idx, method, path, body).await;
        self.mark(idx, r.is_ok());
        r
    }

    /// Sends a request, failing over across servers when that is safe: on
    /// connection failures (nothing was sent), and on any transport failure of
    /// a GET. A POST interrupted after it was sent is not retried elsewhere,
    /// since it may have been applied (see docs/consistency.md).
    pub async fn request(
        &self,
        method: http::Method,
        path: &str,
        body: Option<Bytes>,
    ) -> Result<RawResponse, Error> {
        let mut errors = Vec::new();
        for idx in self.order() {
            match self
                .request_one(idx, method.clone(), path, body.clone())
                .await
            {
                Ok(r) => {
                    self.mark(idx, true);
                    return Ok(r);
                }
                Err(Error::Transport(e)) => {
                    self.mark(idx, false);
                    errors.push(e);
                }
                Err(Error::Interrupted(e)) if method == http::Method::GET => {
                    self.mark(idx, false);
                    errors.push(e);
                }
                Err(e) => {
                    if matches!(e, Error::Interrupted(_)) {
                        self.mark(idx, false);
                    }
                    return Err(e);
                }
            }
        }
        Err(Error::Transport(errors.join("; ")))
    }

    /// Posts a body of frames to `/v1/kms/{enclave}` (or `/v1/kms` without an
    /// enclave) and returns the response frames' body.
    pub async fn send(&self, enclave: Option<&str>, body: Bytes) -> Result<Bytes, Error> {
        let path = kms_path(enclave)?;
        let r = self.request(http::Method::POST, &path, Some(body)).await?;
        check(r)
    }

    /// Sends one command and decodes its single response.
    pub async fn call<Req: prost::Message, Resp: prost::Message + Default>(
        &self,
        enclave: Option<&str>,
        cmd: Command,
        req: &Req,
    ) -> Result<Resp, Error> {
        let mut buf = BytesMut::new();
        frame::encode(&mut buf, cmd as u16, req);
        let body = self.send(enclave, buf.freeze()).await?;
        let mut out = decode_frames::<Resp>(cmd, &body)?;
        if out.len() != 1 {
            return Err(Error::Protocol(format!(
                "expected 1 response frame, got {}",
                out.len()
            )));
        }
        Ok(out.pop().expect("one element"))
    }

    /// Sends one command to one server (by index into [`Client::endpoints`]),
    /// without failover, and decodes its single response. For what each
    /// node answers for itself, such as CLUSTER:AUDIT.
    pub async fn call_at<Req: prost::Message, Resp: prost::Message + Default>(
        &self,
        idx: usize,
        enclave: Option<&str>,
        cmd: Command,
        req: &Req,
    ) -> Result<Resp, Error> {
        if idx >= self.inner.endpoints.len() {
            return Err(Error::Config(format!(
                "no server {idx}: the client has {} servers",
                self.inner.endpoints.len()
            )));
        }
        let path = kms_path(enclave)?;
        let mut buf = BytesMut::new();
        frame::encode(&mut buf, cmd as u16, req);
        let r = self
            .request_at(idx, http::Method::POST, &path, Some(buf.freeze()))
            .await?;
        let body = check(r)?;
        let mut out = decode_frames::<Resp>(cmd, &body)?;
        match (out.pop(), out.is_empty()) {
            (Some(m), true) => Ok(m),
            _ => Err(Error::Protocol(format!(
                "expected 1 response frame, got {}",
                out.len() + 1
            ))),
        }
    }

    /// Sends one command whose response carries nothing (the state changes).
    pub async fn exec<Req: prost::Message>(
        &self,
        enclave: Option<&str>,
        cmd: Command,
        req: &Req,
    ) -> Result<(), Error> {
        self.call::<_, proto::Empty>(enclave, cmd, req)
            .await
            .map(drop)
    }

    /// Sends a batch of commands of one kind and decodes the responses, in order.
    pub async fn batch<Req: prost::Message, Resp: prost::Message + Default>(
        &self,
        enclave: Option<&str>,
        cmd: Command,
        reqs: &[Req],
    ) -> Result<Vec<Resp>, Error> {
        let body = self
            .send(enclave, frame::encode_batch(cmd, reqs).freeze())
            .await?;
        let out = decode_frames::<Resp>(cmd, &body)?;
        if out.len() != reqs.len() {
            return Err(Error::Protocol(format!(
                "sent {} frames, got {} response frames",
                reqs.len(),
                out.len()
            )));
        }
        Ok(out)
    }

    /// `GET /version` on one server.
    pub async fn version(&self) -> Result<proto::VersionResponse, Error> {
        let r = self.request(http::Method::GET, "/version", None).await?;
        let body = check(r)?;
        prost::Message::decode(body).map_err(|e| Error::Protocol(e.to_string()))
    }

    // ---- typed helpers used by the CLI, the module and the tests (more in
    // admin.rs) ----

    /// ENCLAVE:CREATE.
    pub async fn create_enclave(&self, name: &str) -> Result<(), Error> {
        self.exec(
            None,
            Command::EnclaveCreate,
            &proto::EnclaveRequest { name: name.into() },
        )
        .await
    }

    /// KEY:CREATE.
    pub async fn create_key(
        &self,
        enclave: &str,
        name: &str,
        key_type: &str,
        add_version: bool,
    ) -> Result<(), Error> {
        let req = proto::CreateKeyRequest {
            name: name.into(),
            r#type: key_type.into(),
            add_version,
        };
        self.call::<_, proto::Empty>(Some(enclave), Command::KeyCreate, &req)
            .await
            .map(drop)
    }

    /// KEY:GENERATE.
    pub async fn generate(
        &self,
        enclave: &str,
        name: &str,
        ad: &[u8],
        length: u32,
    ) -> Result<proto::GenerateKeyResponse, Error> {
        let req = proto::GenerateKeyRequest {
            name: name.into(),
            version: 0,
            associated_data: ad.to_vec(),
            length,
        };
        self.call(Some(enclave), Command::KeyGenerate, &req).await
    }

    /// KEY:ENCRYPT.
    pub async fn encrypt(
        &self,
        enclave: &str,
        name: &str,
        plaintext: &[u8],
        ad: &[u8],
    ) -> Result<proto::EncryptResponse, Error> {
        let req = proto::EncryptRequest {
            name: name.into(),
            version: 0,
            plaintext: plaintext.to_vec(),
            associated_data: ad.to_vec(),
        };
        self.call(Some(enclave), Command::KeyEncrypt, &req).await
    }

    /// KEY:DECRYPT (the version is read from the ciphertext).
    pub async fn decrypt(
        &self,
        enclave: &str,
        name: &str,
        ciphertext: &[u8],
        ad: &[u8],
    ) -> Result<proto::DecryptResponse, Error> {
        let req = proto::DecryptRequest {
            name: name.into(),
            version: 0,
            ciphertext: ciphertext.to_vec(),
            associated_data: ad.to_vec(),
        };
        self.call(Some(enclave), Command::KeyDecrypt, &req).await
    }

    /// KEY:STATUS.
    pub async fn key_status(
        &self,
        enclave: &str,
        name: &str,
    ) -> Result<proto::KeyStatusResponse, Error> {
        let req = proto::KeyStatusRequest {
            name: name.into(),
            version: 0,
        };
        self.call(Some(enclave), Command::KeyStatus, &req).await
    }
}

fn kms_path(enclave: Option<&str>) -> Result<String, Error> {
    match enclave {
        None | Some("") => Ok("/v1/kms".to_string()),
        Some(e) => {
            if e.contains('/') || e.contains('?') || e.contains('#') || e.contains('%') {
                return Err(Error::Config(format!("invalid enclave name '{e}'")));
            }
            Ok(format!("/v1/kms/{e}"))
        }
    }
}

/// Returns the body of a successful response, or the server's error.
pub fn check(r: RawResponse) -> Result<Bytes, Error> {
    if r.status == 200 {
        return Ok(r.body);
    }
    let message = if r.content_type == "application/octet-stream" {
        <proto::ErrResponse as prost::Message>::decode(r.body.clone())
            .map(|e| e.message)
            .unwrap_or_else(|_| String::from_utf8_lossy(&r.body).into_owned())
    } else if r.content_type == "application/json" {
        #[derive(serde::Deserialize)]
        struct J {
            message: String,
        }
        serde_json::from_slice::<J>(&r.body)
            .map(|j| j.message)
            .unwrap_or_else(|_| String::from_utf8_lossy(&r.body).into_owned())
    } else {
        String::from_utf8_lossy(&r.body).into_owned()
    };
    Err(Error::Api {
        status: r.status,
        message,
    })
}

/// Decodes response frames that must all carry `cmd`.
pub fn decode_frames<M: prost::Message + Default>(
    cmd: Command,
    body: &[u8],
) -> Result<Vec<M>, Error> {
    let mut out = Vec::new();
    for f in frame::frames(body) {
        let f = f.map_err(|e| Error::Protocol(e.to_string()))?;
        if f.id != cmd as u16 {
            return Err(Error::Protocol(format!(
                "expected {cmd} frame, got id {}",
                f.id
            )));
        }
        out.push(M::decode(f.payload).map_err(|e| Error::Protocol(format!("{cmd}: {e}")))?);
    }
    Ok(out)
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        assert_eq!(
            ClientConfig::parse_endpoints("127.0.0.1:7373, https://a:1/").unwrap(),
            vec!["https://127.0.0.1:7373", "https://a:1"]
        );
        assert_eq!(
            ClientConfig::parse_endpoints(":7374").unwrap(),
            vec!["https://127.0.0.1:7374"]
        );
        assert!(ClientConfig::parse_endpoints("http://a:1").is_err());
        assert!(ClientConfig::parse_endpoints(" , ").is_err());
    }

    #[test]
    fn paths() {
        assert_eq!(kms_path(None).unwrap(), "/v1/kms");
        assert_eq!(kms_path(Some("e1")).unwrap(), "/v1/kms/e1");
        assert!(kms_path(Some("a/b")).is_err());
    }
}
