//! HTTP plumbing: the accept loop, routing, sign-in, CSRF checks, forms,
//! and the security headers every response carries.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use kms_client::{ApiKey, Client};
use parking_lot::Mutex;
use rand::RngCore;
use subtle::ConstantTimeEq;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;

use crate::pages;
use crate::session::{Sessions, Who, COOKIE};
use crate::Cluster;

/// Largest request body read (forms, a policy's JSON).
const MAX_BODY: usize = 64 * 1024;
/// Connections served at once; past it new ones wait.
const MAX_CONNECTIONS: usize = 64;
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Sign-in attempts checked against the cluster at once (shared mode); each
/// opens a TLS connection to a node.
const MAX_SIGNINS: usize = 4;
/// The cookie that carries shared mode's sign-in form token (a
/// double-submit token: the form must carry the same value).
const PRE_COOKIE: &str = "kms_console_signin";

/// The stylesheet and the script, embedded.
const CSS: &str = include_str!("style.css");
const JS: &str = include_str!("console.js");

/// A response.
pub(crate) type Resp = Response<Full<Bytes>>;

/// What every request handler shares.
pub(crate) struct App {
    pub cluster: Cluster,
    pub sessions: Sessions,
    /// Sampled request metrics of the nodes, for the charts.
    pub charts: crate::charts::Charts,
    /// When the console first saw each member down (cleared once up).
    pub down_since: Mutex<HashMap<u32, SystemTime>>,
    /// Shared mode (TLS, per-person sign-in; the cookie gets `Secure`).
    pub shared: bool,
    /// Local mode: who the console's API key is (asked at start).
    pub local_who: std::sync::OnceLock<Who>,
    signins: tokio::sync::Semaphore,
    /// The `Host` values accepted: the bound address and `localhost:PORT`.
    /// Anything else is refused, so a web page cannot reach the console
    /// through DNS rebinding (a name of the attacker's resolving to
    /// 127.0.0.1).
    hosts: Vec<String>,
}

impl App {
    pub fn new(
        cluster: Cluster,
        sessions: Sessions,
        shared: bool,
        addr: std::net::SocketAddr,
    ) -> Self {
        let mut hosts = vec![addr.to_string(), format!("localhost:{}", addr.port())];
        if addr.ip().is_loopback() && addr.is_ipv4() {
            hosts.push(format!("127.0.0.1:{}", addr.port()));
        }
        Self {
            cluster,
            sessions,
            charts: crate::charts::Charts::default(),
            down_since: Mutex::new(HashMap::new()),
            shared,
            local_who: std::sync::OnceLock::new(),
            signins: tokio::sync::Semaphore::new(MAX_SIGNINS),
            hosts,
        }
    }
}

/// A signed-in request's session: its CSRF token, the client it acts
/// with (the console's in local mode, the person's own in shared mode) and
/// who that is, when known.
pub(crate) struct Sess {
    pub csrf: String,
    pub client: Client,
    pub who: Option<Who>,
}

/// Loads shared mode's certificate chain and key.
pub(crate) fn tls_acceptor(
    cert: &Path,
    key: &Path,
) -> Result<tokio_rustls::TlsAcceptor, crate::Error> {
    let read = |p: &Path| {
        kms_client::read_small_file(p, 1 << 20)
            .map_err(|e| crate::Error::Tls(format!("{}: {e}", p.display())))
    };
    let (cert_pem, key_pem) = (read(cert)?, zeroize::Zeroizing::new(read(key)?));
    let certs = rustls_pemfile::certs(&mut cert_pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| crate::Error::Tls(format!("{}: {e}", cert.display())))?;
    if certs.is_empty() {
        return Err(crate::Error::Tls(format!(
            "{}: no certificate",
            cert.display()
        )));
    }
    let k = rustls_pemfile::private_key(&mut key_pem.as_slice())
        .map_err(|e| crate::Error::Tls(format!("{}: {e}", key.display())))?
        .ok_or_else(|| crate::Error::Tls(format!("{}: no private key", key.display())))?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(kms_client::tls::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| crate::Error::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, k)
        .map_err(|e| crate::Error::Tls(format!("{} and {}: {e}", cert.display(), key.display())))?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(cfg)))
}

/// Serves `listener` (over TLS if `tls`) until `shutdown` completes.
pub(crate) async fn serve(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    app: Arc<App>,
    shutdown: impl Future<Output = ()>,
) {
    let permits = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            _ = &mut shutdown => return,
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return,
            },
        };
        let stream = tokio::select! {
            _ = &mut shutdown => return,
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let app = app.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            match tls {
                None => connection(stream, app).await,
                Some(acceptor) => {
                    if let Ok(Ok(s)) =
                        tokio::time::timeout(HEADER_TIMEOUT, acceptor.accept(stream)).await
                    {
                        connection(s, app).await;
                    }
                }
            }
            drop(permit);
        });
    }
}

async fn connection<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(io: S, app: Arc<App>) {
    let svc = hyper::service::service_fn(move |req| {
        let app = app.clone();
        async move { Ok::<_, Infallible>(handle(&app, req).await) }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .serve_connection(TokioIo::new(io), svc)
        .await;
}

/// Handles one request and adds the security headers.
pub(crate) async fn handle(app: &App, req: Request<Incoming>) -> Resp {
    let started = Instant::now();
    let mut r = route(app, req).await;
    let h = r.headers_mut();
    // The time the console took, for benchmarks and the browser's tools.
    if let Ok(v) = HeaderValue::from_str(&format!(
        "app;dur={:.2}",
        started.elapsed().as_secs_f64() * 1e3
    )) {
        h.insert("server-timing", v);
    }
    if app.shared {
        h.insert(
            "strict-transport-security",
            HeaderValue::from_static("max-age=31536000"),
        );
    }
    for (k, v) in [
        (
            "content-security-policy",
            "default-src 'none'; script-src 'self'; connect-src 'self'; style-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
        ("x-frame-options", "DENY"),
        ("x-content-type-options", "nosniff"),
        ("referrer-policy", "same-origin"),
        ("cache-control", "no-store"),
        ("cross-origin-opener-policy", "same-origin"),
    ] {
        h.insert(k, HeaderValue::from_static(v));
    }
    r
}

async fn route(app: &App, req: Request<Incoming>) -> Resp {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("")
        .to_string();
    // Local mode: only the bound address, so that a web page cannot reach
    // the console through DNS rebinding. Shared mode is HTTPS: a rebound
    // name fails the certificate check, and the console's public name is
    // the operator's.
    if !app.shared && !app.hosts.iter().any(|h| h.eq_ignore_ascii_case(&host)) {
        return plain(
            StatusCode::MISDIRECTED_REQUEST,
            "unexpected Host header: open the console by the address it printed",
        );
    }
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let query = Form::parse(req.uri().query().unwrap_or("").as_bytes());
    if method == Method::GET || method == Method::HEAD {
        match path.as_str() {
            "/style.css" => return asset("text/css; charset=utf-8", CSS),
            "/console.js" => return asset("text/javascript; charset=utf-8", JS),
            "/login" if !app.shared => return login(app, query.get("token")),
            "/signin" if app.shared => {
                let pre = cookie(req.headers(), PRE_COOKIE);
                return signin_page(StatusCode::OK, pre.as_deref(), None);
            }
            "/favicon.ico" => return plain(StatusCode::NOT_FOUND, "not found"),
            _ => {}
        }
    }
    if method == Method::POST {
        // A cross-site form post is refused whatever its cookies (SameSite
        // already keeps the session cookie off it). Browsers send the real
        // Origin on our own posts because the Referrer-Policy is
        // same-origin (with no-referrer they would send "null").
        let scheme = if app.shared { "https" } else { "http" };
        if let Some(o) = req.headers().get(header::ORIGIN) {
            if o.as_bytes() != format!("{scheme}://{host}").as_bytes() {
                return plain(StatusCode::FORBIDDEN, "forbidden: cross-origin request");
            }
        }
    }
    let sid = cookie(req.headers(), COOKIE);
    if app.shared && method == Method::POST && path == "/signin" {
        let pre = cookie(req.headers(), PRE_COOKIE);
        let form = match Limited::new(req.into_body(), MAX_BODY).collect().await {
            Ok(b) => Form::parse(&b.to_bytes()),
            Err(_) => return plain(StatusCode::PAYLOAD_TOO_LARGE, "request too large"),
        };
        return signin(app, pre.as_deref(), form).await;
    }
    let session = match sid.as_deref().and_then(|c| app.sessions.get(c)) {
        Some(s) => s,
        None if app.shared && method == Method::GET && !path.starts_with("/live") => {
            return redirect("/signin")
        }
        None => return pages::signed_out(StatusCode::UNAUTHORIZED, app.shared),
    };
    let Some(client) = session
        .client
        .clone()
        .or_else(|| app.cluster.client.clone())
    else {
        return pages::signed_out(StatusCode::UNAUTHORIZED, app.shared);
    };
    let s = Sess {
        csrf: session.csrf.clone(),
        client,
        who: session.who.clone().or_else(|| app.local_who.get().cloned()),
    };
    match method {
        Method::GET | Method::HEAD => pages::get(app, &s, &path, &query).await,
        Method::POST => {
            let form = match Limited::new(req.into_body(), MAX_BODY).collect().await {
                Ok(b) => Form::parse(&b.to_bytes()),
                Err(_) => return plain(StatusCode::PAYLOAD_TOO_LARGE, "request too large"),
            };
            if !session.csrf_ok(form.get("csrf")) {
                return plain(
                    StatusCode::FORBIDDEN,
                    "forbidden: the form's CSRF token is missing or wrong; reload the page",
                );
            }
            if path == "/logout" {
                if let Some(c) = sid {
                    app.sessions.end(&c);
                }
                return pages::signed_out(StatusCode::OK, app.shared);
            }
            pages::post(app, &s, &path, &form).await
        }
        _ => plain(StatusCode::METHOD_NOT_ALLOWED, "method not allowed"),
    }
}

fn asset(content_type: &'static str, body: &'static str) -> Resp {
    Response::builder()
        .header(header::CONTENT_TYPE, content_type)
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .unwrap_or_default()
}

/// `GET /login?token=...`: spends the one-time token for a session cookie
/// and sends the browser on to the cluster page (so the token leaves the
/// address bar).
fn login(app: &App, token: &str) -> Resp {
    let Some(id) = app.sessions.sign_in(token) else {
        return pages::signed_out(StatusCode::FORBIDDEN, false);
    };
    with_session_cookie(app, redirect("/"), &id)
}

fn with_session_cookie(app: &App, mut r: Resp, id: &str) -> Resp {
    let secure = if app.shared { "; Secure" } else { "" };
    let cookie = format!("{COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict{secure}");
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
    r
}

/// Shared mode's sign-in page, its form token also in a cookie. A browser
/// that already holds a token keeps it: a second load of the page (another
/// tab, a reload) must not void the form shown first.
fn signin_page(status: StatusCode, held: Option<&str>, error: Option<&str>) -> Resp {
    let token = match held {
        Some(t) if t.len() == 64 && t.bytes().all(|b| b.is_ascii_hexdigit()) => t.to_string(),
        _ => {
            let mut t = [0u8; 32];
            rand::rngs::OsRng.fill_bytes(&mut t);
            hex::encode(t)
        }
    };
    let mut r = pages::signin(status, &token, error);
    let cookie = format!("{PRE_COOKIE}={token}; Path=/signin; HttpOnly; SameSite=Strict; Secure");
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

/// `POST /signin` (shared mode): the form carries the person's API key. The
/// console makes a client with it and asks the cluster who that is; a key
/// the cluster does not know cannot sign in. The key then lives only in that
/// session's client; it is never logged, written or sent back.
async fn signin(app: &App, pre: Option<&str>, mut form: Form) -> Resp {
    let key = form.take("api_key");
    let pre_ok = match pre {
        Some(p) => bool::from(p.as_bytes().ct_eq(form.get("pre").as_bytes())) && !p.is_empty(),
        None => false,
    };
    if !pre_ok {
        return signin_page(
            StatusCode::FORBIDDEN,
            None,
            Some("the sign-in form expired or came from elsewhere; try again"),
        );
    }
    let key = match ApiKey::parse(key.trim()) {
        Ok(k) => k,
        Err(_) => {
            return signin_page(
                StatusCode::UNAUTHORIZED,
                pre,
                Some("sign-in failed: that is not an API key (it starts with k1:)"),
            )
        }
    };
    let Ok(_permit) = app.signins.acquire().await else {
        return plain(StatusCode::SERVICE_UNAVAILABLE, "shutting down");
    };
    let client = match app.cluster.client_for(key) {
        Ok(c) => c,
        Err(e) => {
            return signin_page(
                StatusCode::BAD_GATEWAY,
                pre,
                Some(&format!("sign-in failed: {e}")),
            )
        }
    };
    match whoami(&client).await {
        Ok(who) => {
            let id = app.sessions.create_for(client, who);
            with_session_cookie(app, redirect("/"), &id)
        }
        Err(e) if e.status() == Some(403) || e.status() == Some(401) => signin_page(
            StatusCode::UNAUTHORIZED,
            pre,
            Some("sign-in failed: the cluster does not know this API key"),
        ),
        Err(e) => signin_page(
            StatusCode::BAD_GATEWAY,
            pre,
            Some(&format!("sign-in failed: the cluster did not answer: {e}")),
        ),
    }
}

/// Who `client`'s API key is, from `IDENTITY:SELF`.
pub(crate) async fn whoami(client: &Client) -> Result<Who, kms_client::Error> {
    let r = client.whoami().await?;
    Ok(Who {
        identity: r.identity,
        privilege: r.privilege,
        enclave: r.enclave,
        policy: r.policy,
    })
}

/// The value of the cookie `name`, if any.
fn cookie(h: &http::HeaderMap, name: &str) -> Option<String> {
    h.get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|p| p.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

/// An HTML response.
pub(crate) fn html(status: StatusCode, m: maud::Markup) -> Resp {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/html; charset=utf-8")
        .body(Full::new(Bytes::from(m.into_string())))
        .unwrap_or_default()
}

/// A plain-text response.
pub(crate) fn plain(status: StatusCode, msg: &str) -> Resp {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Full::new(Bytes::from(msg.to_string())))
        .unwrap_or_default()
}

/// A 303 to `location` (after a successful POST, and after sign-in).
pub(crate) fn redirect(location: &str) -> Resp {
    Response::builder()
        .status(StatusCode::SEE_OTHER)
        .header(header::LOCATION, location)
        .body(Full::new(Bytes::new()))
        .unwrap_or_default()
}

/// Fields of a form or query string (`application/x-www-form-urlencoded`).
#[derive(Clone, Debug, Default)]
pub(crate) struct Form(Vec<(String, String)>);

impl Form {
    pub fn parse(b: &[u8]) -> Self {
        Form(
            b.split(|c| *c == b'&')
                .filter(|p| !p.is_empty())
                .map(|p| {
                    let (k, v) = match p.iter().position(|c| *c == b'=') {
                        Some(i) => (&p[..i], &p[i + 1..]),
                        None => (p, &[][..]),
                    };
                    (decode(k), decode(v))
                })
                .collect(),
        )
    }

    /// Removes the field and returns its value (all copies), to be wiped
    /// when dropped: for secrets typed into a form.
    pub fn take(&mut self, k: &str) -> zeroize::Zeroizing<String> {
        let mut out = zeroize::Zeroizing::new(String::new());
        self.0.retain_mut(|(n, v)| {
            if n == k {
                if out.is_empty() {
                    out.push_str(v);
                }
                zeroize::Zeroize::zeroize(v);
                false
            } else {
                true
            }
        });
        out
    }

    /// The field's value; empty when absent.
    pub fn get(&self, k: &str) -> &str {
        self.0
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
            .unwrap_or("")
    }
}

fn decode(b: &[u8]) -> String {
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                match std::str::from_utf8(&b[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                {
                    Some(c) => {
                        out.push(c);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Percent-encodes `s` for a query string.
pub(crate) fn enc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            o.push(b as char);
        } else {
            o.push_str(&format!("%{b:02X}"));
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_decode() {
        let f = Form::parse(b"a=1+2&b=%41%2f&c&d=%zz&e=%4");
        assert_eq!(f.get("a"), "1 2");
        assert_eq!(f.get("b"), "A/");
        assert_eq!(f.get("c"), "");
        assert_eq!(f.get("d"), "%zz");
        assert_eq!(f.get("e"), "%4");
        assert_eq!(f.get("x"), "");
        assert_eq!(decode(enc("a b/é&=").as_bytes()), "a b/é&=");
    }
}
