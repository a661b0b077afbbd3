//! HTTP plumbing: the accept loop, routing, sign-in, CSRF checks, forms,
//! and the security headers every response carries.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use kms_client::Client;
use tokio::net::TcpListener;

use crate::pages;
use crate::session::{Session, Sessions, COOKIE};

/// Largest request body read (forms, a policy's JSON).
const MAX_BODY: usize = 64 * 1024;
/// Connections served at once; past it new ones wait.
const MAX_CONNECTIONS: usize = 64;
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// The stylesheet, embedded.
const CSS: &str = include_str!("style.css");

/// A response.
pub(crate) type Resp = Response<Full<Bytes>>;

/// What every request handler shares.
pub(crate) struct App {
    pub client: Client,
    pub sessions: Sessions,
    /// Whether the console is served over TLS (the cookie gets `Secure`).
    secure: bool,
    /// The `Host` values accepted: the bound address and `localhost:PORT`.
    /// Anything else is refused, so a web page cannot reach the console
    /// through DNS rebinding (a name of the attacker's resolving to
    /// 127.0.0.1).
    hosts: Vec<String>,
}

impl App {
    pub fn new(
        client: Client,
        sessions: Sessions,
        secure: bool,
        addr: std::net::SocketAddr,
    ) -> Self {
        let mut hosts = vec![addr.to_string(), format!("localhost:{}", addr.port())];
        if addr.ip().is_loopback() && addr.is_ipv4() {
            hosts.push(format!("127.0.0.1:{}", addr.port()));
        }
        Self {
            client,
            sessions,
            secure,
            hosts,
        }
    }
}

/// Serves `listener` until `shutdown` completes.
pub(crate) async fn serve(
    listener: TcpListener,
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
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let app = app.clone();
                async move { Ok::<_, Infallible>(handle(&app, req).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), svc)
                .await;
            drop(permit);
        });
    }
}

/// Handles one request and adds the security headers.
pub(crate) async fn handle(app: &App, req: Request<Incoming>) -> Resp {
    let mut r = route(app, req).await;
    let h = r.headers_mut();
    for (k, v) in [
        (
            "content-security-policy",
            "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'",
        ),
        ("x-frame-options", "DENY"),
        ("x-content-type-options", "nosniff"),
        ("referrer-policy", "no-referrer"),
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
        .unwrap_or("");
    if !app.hosts.iter().any(|h| h.eq_ignore_ascii_case(host)) {
        return plain(
            StatusCode::MISDIRECTED_REQUEST,
            "unexpected Host header: open the console by the address it printed",
        );
    }
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let query = Form::parse(req.uri().query().unwrap_or("").as_bytes());
    if method == Method::GET && path == "/style.css" {
        return Response::builder()
            .header(header::CONTENT_TYPE, "text/css; charset=utf-8")
            .body(Full::new(Bytes::from_static(CSS.as_bytes())))
            .unwrap_or_default();
    }
    if method == Method::GET && path == "/login" {
        return login(app, query.get("token"));
    }
    let cookie = session_cookie(req.headers());
    let session = match cookie.as_deref().and_then(|c| app.sessions.get(c)) {
        Some(s) => s,
        None => return pages::signed_out(StatusCode::UNAUTHORIZED),
    };
    match method {
        Method::GET | Method::HEAD => pages::get(app, &session, &path, &query).await,
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
                if let Some(c) = cookie {
                    app.sessions.end(&c);
                }
                return pages::signed_out(StatusCode::OK);
            }
            pages::post(app, &session, &path, &form).await
        }
        _ => plain(StatusCode::METHOD_NOT_ALLOWED, "method not allowed"),
    }
}

/// `GET /login?token=...`: spends the one-time token for a session cookie
/// and sends the browser on to the cluster page (so the token leaves the
/// address bar).
fn login(app: &App, token: &str) -> Resp {
    let Some(id) = app.sessions.sign_in(token) else {
        return pages::signed_out(StatusCode::FORBIDDEN);
    };
    let secure = if app.secure { "; Secure" } else { "" };
    let cookie = format!("{COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict{secure}");
    let mut r = redirect("/");
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

/// The session cookie's value, if any.
fn session_cookie(h: &http::HeaderMap) -> Option<String> {
    h.get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|p| p.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
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

/// The session a page is rendered for.
pub(crate) type Sess = Session;

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
