//! `kms console` against a real `kms server`: a real console process on
//! loopback, driven over HTTP/1.1 with a raw TcpStream (no browser yet).
//! Sign-in with the one-time URL, pages listing what the CLI created,
//! POSTs with and without the CSRF token, forged and foreign session
//! cookies, the server's message on a failed action, and the console's API
//! key never leaving the console.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::Duration;

use kms_tests::{cluster, data_dir, kms_bin, ok, rt, wait_until, Server, SEED_HSM_KEY};

/// A running `kms console`; killed on drop.
struct Console {
    child: Child,
    /// Kept open: the console prints more after the URL.
    out: BufReader<ChildStdout>,
    addr: String,
    token: String,
}

impl Drop for Console {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Console {
    fn start(srv: &Server) -> Console {
        Self::start_at(&srv.url(), &srv.root_key.to_secret_string())
    }

    /// A console for the servers `urls` (comma-separated) with `api_key`.
    fn start_at(urls: &str, api_key: &str) -> Console {
        let mut child = Command::new(kms_bin())
            .args(["console", "--addr", "127.0.0.1:0"])
            .env("KMS_SERVER", urls)
            .env("KMS_API_KEY", api_key)
            .env("KMS_INSECURE", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run kms console");
        let mut line = String::new();
        let mut out = BufReader::new(child.stdout.take().expect("stdout"));
        out.read_line(&mut line).expect("read the login URL");
        let url = line
            .split_whitespace()
            .find(|w| w.starts_with("http://"))
            .unwrap_or_else(|| panic!("no login URL in {line:?}"))
            .to_string();
        let rest = url.trim_start_matches("http://");
        let (addr, path) = rest.split_once('/').expect("URL path");
        let token = path
            .strip_prefix("login?token=")
            .expect("token")
            .to_string();
        Console {
            child,
            out,
            addr: addr.to_string(),
            token,
        }
    }

    /// Stops the console; everything it printed after the URL.
    fn finish(mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let mut all = String::new();
        let _ = self.out.read_to_string(&mut all);
        if let Some(mut e) = self.child.stderr.take() {
            let _ = e.read_to_string(&mut all);
        }
        all
    }

    /// Signs in with the one-time token; the session cookie (`name=value`).
    fn sign_in(&self) -> String {
        let r = self.get(&format!("/login?token={}", self.token), None);
        assert_eq!(r.status, 303, "{}", r.raw);
        let c = r.header("set-cookie").expect("a session cookie");
        assert!(c.contains("HttpOnly"), "{c}");
        assert!(c.contains("SameSite=Strict"), "{c}");
        c.split(';').next().unwrap().to_string()
    }

    fn get(&self, path: &str, cookie: Option<&str>) -> Resp {
        http(&self.addr, "GET", path, cookie, None)
    }

    fn post(&self, path: &str, cookie: &str, form: &[(&str, &str)]) -> Resp {
        let body: Vec<String> = form
            .iter()
            .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
            .collect();
        http(
            &self.addr,
            "POST",
            path,
            Some(cookie),
            Some(&body.join("&")),
        )
    }
}

fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

struct Resp {
    status: u16,
    head: String,
    body: String,
    raw: String,
}

impl Resp {
    /// A whole HTTP/1.1 response as read off the wire (or printed by
    /// `curl -i`).
    fn parse(raw: String) -> Resp {
        let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        Resp {
            status,
            head: head.to_string(),
            body: body.to_string(),
            raw: raw.clone(),
        }
    }

    fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
    }

    /// The CSRF token of the page's forms.
    fn csrf(&self) -> String {
        let at = self
            .body
            .find(r#"name="csrf" value=""#)
            .expect("a CSRF field");
        let rest = &self.body[at + r#"name="csrf" value=""#.len()..];
        rest[..rest.find('"').unwrap()].to_string()
    }
}

fn http(addr: &str, method: &str, path: &str, cookie: Option<&str>, body: Option<&str>) -> Resp {
    let mut s = TcpStream::connect(addr).expect("connect to the console");
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some(c) = cookie {
        req += &format!("Cookie: {c}\r\n");
    }
    let body = body.unwrap_or("");
    if method == "POST" {
        req += &format!(
            "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n",
            body.len()
        );
    }
    req += "\r\n";
    req += body;
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    Resp::parse(String::from_utf8_lossy(&raw).into_owned())
}

/// HTML-escapes like maud does, to find a server message in a page.
fn escaped(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[test]
fn console_signs_in_once_renders_and_guards_every_post() {
    let tmp = tempfile::tempdir().unwrap();
    let srv = Server::start(&data_dir(&tmp, "kms0"), SEED_HSM_KEY);
    ok(&srv.cli(None, &["add-enclave", "cli-enc"]));
    ok(&srv.cli(None, &["-e", "cli-enc", "add-key", "cli-key"]));
    ok(&srv.cli(
        None,
        &["-e", "cli-enc", "add-key", "sig", "--type", "ed25519"],
    ));
    let root = srv.root();
    rt().block_on(async {
        for i in 0..60 {
            root.create_key("cli-enc", &format!("p{i:03}"), "aes256", false)
                .await
                .unwrap();
        }
    });

    let con = Console::start(&srv);
    let mut seen = Vec::new();

    // Another Host (DNS rebinding): refused before anything else.
    let mut s = TcpStream::connect(&con.addr).unwrap();
    s.write_all(b"GET /style.css HTTP/1.1\r\nHost: evil.example:7380\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    assert!(raw.starts_with("HTTP/1.1 421"), "{raw}");

    // Without a session: refused.
    let r = con.get("/", None);
    assert_eq!(r.status, 401);
    // A wrong token does not sign in and does not spend the right one.
    let r = con.get(&format!("/login?token={}", "ab".repeat(32)), None);
    assert_eq!(r.status, 403);
    assert!(r.header("set-cookie").is_none());
    // The one-time URL works once and only once.
    let cookie = con.sign_in();
    let r = con.get(&format!("/login?token={}", con.token), None);
    assert_eq!(r.status, 403, "the login URL works only once");
    assert!(r.header("set-cookie").is_none());

    // Security headers on every response.
    let r = con.get("/", Some(&cookie));
    assert_eq!(r.status, 200, "{}", r.raw);
    assert_eq!(
        r.header("content-security-policy").as_deref(),
        Some("default-src 'none'; script-src 'self'; connect-src 'self'; style-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
    );
    assert_eq!(r.header("x-frame-options").as_deref(), Some("DENY"));
    assert_eq!(
        r.header("x-content-type-options").as_deref(),
        Some("nosniff")
    );
    assert_eq!(r.header("referrer-policy").as_deref(), Some("same-origin"));
    assert_eq!(r.header("cache-control").as_deref(), Some("no-store"));
    assert!(r.body.contains("1 up, 0 down"), "{}", r.body);
    assert!(!r.body.contains("class=\"banner\""));
    seen.push(r.raw);
    let r = con.get("/style.css", None);
    assert_eq!(r.status, 200);
    assert!(r.header("content-type").unwrap().starts_with("text/css"));

    // Pages list what the CLI created.
    let r = con.get("/enclaves", Some(&cookie));
    assert_eq!(r.status, 200);
    assert!(r.body.contains("cli-enc"), "{}", r.body);
    let csrf = r.csrf();
    seen.push(r.raw);
    let r = con.get("/keys?enclave=cli-enc&prefix=cli", Some(&cookie));
    assert!(r.body.contains("cli-key"), "{}", r.body);
    seen.push(r.raw);
    let r = con.get("/key?enclave=cli-enc&name=sig", Some(&cookie));
    assert_eq!(r.status, 200, "{}", r.raw);
    assert!(r.body.contains("Public key fingerprint"), "{}", r.body);
    seen.push(r.raw);

    // Paging on the server's listing: 50 a page, then the next page.
    let r = con.get("/keys?enclave=cli-enc&prefix=p", Some(&cookie));
    assert!(r.body.contains(">p049<") && !r.body.contains(">p050<"));
    let at = r.body.find("&amp;at=").expect("a next-page link");
    let next = r.body[at..]
        .split('"')
        .next()
        .unwrap()
        .replace("&amp;", "&");
    let r = con.get(
        &format!("/keys?enclave=cli-enc&prefix=p{next}"),
        Some(&cookie),
    );
    assert!(r.body.contains(">p050<") && r.body.contains(">p059<"));
    assert!(!r.body.contains(">p049<"));

    // A POST without, or with a wrong, CSRF token is refused and changes nothing.
    let r = con.post("/enclaves/create", &cookie, &[("name", "web-enc")]);
    assert_eq!(r.status, 403, "{}", r.raw);
    let r = con.post(
        "/enclaves/create",
        &cookie,
        &[("csrf", &"00".repeat(32)), ("name", "web-enc")],
    );
    assert_eq!(r.status, 403, "{}", r.raw);
    let ls = ok(&srv.cli(None, &["ls-enclave"]));
    assert!(!ls.contains("web-enc"), "{ls}");

    // With the token: created; then a key in it.
    let r = con.post(
        "/enclaves/create",
        &cookie,
        &[("csrf", &csrf), ("name", "web-enc")],
    );
    assert_eq!(r.status, 303, "{}", r.raw);
    assert!(ok(&srv.cli(None, &["ls-enclave"])).contains("web-enc"));
    let r = con.post(
        "/keys/create",
        &cookie,
        &[
            ("csrf", &csrf),
            ("enclave", "web-enc"),
            ("name", "wk"),
            ("type", "aes256"),
        ],
    );
    assert_eq!(r.status, 303, "{}", r.raw);
    assert!(ok(&srv.cli(None, &["-e", "web-enc", "ls-key"])).contains("wk"));
    let r = con.post(
        "/key/rotate",
        &cookie,
        &[("csrf", &csrf), ("enclave", "web-enc"), ("name", "wk")],
    );
    assert_eq!(r.status, 303, "{}", r.raw);
    let st = rt().block_on(root.key_status("web-enc", "wk")).unwrap();
    assert_eq!(st.version, 2);

    // Try-it: encrypt, then decrypt what came out.
    let r = con.post(
        "/key/try",
        &cookie,
        &[
            ("csrf", &csrf),
            ("enclave", "web-enc"),
            ("name", "wk"),
            ("op", "encrypt"),
            ("text", "hello console"),
        ],
    );
    assert_eq!(r.status, 200, "{}", r.raw);
    let at = r
        .body
        .find("<dd class=\"id\" id=\"enc-ciphertext\">")
        .expect("ciphertext");
    let rest = &r.body[at + "<dd class=\"id\" id=\"enc-ciphertext\">".len()..];
    let ct = rest[..rest.find('<').unwrap()].to_string();
    let r = con.post(
        "/key/try",
        &cookie,
        &[
            ("csrf", &csrf),
            ("enclave", "web-enc"),
            ("name", "wk"),
            ("op", "decrypt"),
            ("text", &ct),
        ],
    );
    assert!(r.body.contains("hello console"), "{}", r.body);
    seen.push(r.raw);

    // A failed action shows the server's message and keeps what was typed.
    let msg = rt()
        .block_on(root.create_enclave("web-enc"))
        .unwrap_err()
        .to_string();
    let r = con.post(
        "/enclaves/create",
        &cookie,
        &[("csrf", &csrf), ("name", "web-enc")],
    );
    assert_eq!(r.status, 422, "{}", r.raw);
    assert!(r.body.contains(&escaped(&msg)), "{msg} in {}", r.body);
    assert!(r.body.contains(r#"value="web-enc""#), "{}", r.body);
    seen.push(r.raw);
    // An invalid policy: the parse error inline, the text kept.
    let r = con.post(
        "/policies/save",
        &cookie,
        &[
            ("csrf", &csrf),
            ("enclave", "web-enc"),
            ("name", "pol"),
            ("json", "{\"allow\": "),
        ],
    );
    assert_eq!(r.status, 422, "{}", r.raw);
    assert!(r.body.contains("invalid policy JSON"), "{}", r.body);
    assert!(
        r.body.contains("{&quot;allow&quot;: </textarea>"),
        "{}",
        r.body
    );

    // A new identity: its key shown once, and it exists in the cluster.
    let r = con.post(
        "/identities/create",
        &cookie,
        &[
            ("csrf", &csrf),
            ("enclave", "web-enc"),
            ("privilege", "User"),
        ],
    );
    assert_eq!(r.status, 200, "{}", r.raw);
    assert!(r.body.contains("value=\"k1:"), "{}", r.body);
    let ids = ok(&srv.cli(None, &["-e", "web-enc", "ls-identity"]));
    assert!(ids.contains("h1:"), "{ids}");
    let at = r.body.find("value=\"k1:").unwrap() + "value=\"".len();
    let user_key = r.body[at..at + r.body[at..].find('"').unwrap()].to_string();

    // A console signed in as that User (no policy): what the cluster
    // forbids is refused, with the server's message next to the form.
    let user = Console::start_at(&srv.url(), &user_key);
    let ucookie = user.sign_in();
    let r = user.get("/keys?enclave=web-enc", Some(&ucookie));
    assert_eq!(r.status, 502, "{}", r.raw);
    let ucsrf = r.csrf();
    let msg = rt()
        .block_on(
            srv.client(&kms_client::ApiKey::parse(&user_key).unwrap())
                .create_key("web-enc", "nope", "aes256", false),
        )
        .unwrap_err();
    assert_eq!(msg.status(), Some(403), "{msg}");
    let r = user.post(
        "/keys/create",
        &ucookie,
        &[
            ("csrf", &ucsrf),
            ("enclave", "web-enc"),
            ("name", "nope"),
            ("type", "aes256"),
        ],
    );
    assert_eq!(r.status, 422, "{}", r.raw);
    assert!(
        r.body.contains(&escaped(&msg.to_string())),
        "{msg} in {}",
        r.body
    );
    assert!(r.body.contains(r#"value="nope""#), "{}", r.body);
    drop(user);

    // Forged and foreign session cookies are refused.
    let forged = format!("kms_console={}", "cd".repeat(32));
    assert_eq!(con.get("/enclaves", Some(&forged)).status, 401);
    let other = Console::start(&srv);
    let foreign = other.sign_in();
    assert_eq!(con.get("/enclaves", Some(&foreign)).status, 401);
    assert_eq!(
        con.post(
            "/enclaves/create",
            &foreign,
            &[("csrf", &csrf), ("name", "x2")]
        )
        .status,
        401
    );
    drop(other);

    // Sign-out ends the session.
    let r = con.post("/logout", &cookie, &[("csrf", &csrf)]);
    assert_eq!(r.status, 200);
    assert_eq!(con.get("/enclaves", Some(&cookie)).status, 401);

    // The console's API key never left it: not in a page, a header, or its output.
    seen.push(con.finish());
    let key = srv.root_key.to_secret_string();
    let secret = key.trim_start_matches("k1:");
    for raw in &seen {
        assert!(!raw.contains(secret), "the API key in a response");
    }
}

#[test]
fn console_refuses_shared_mode_without_tls() {
    let out = Command::new(kms_bin())
        .args(["console", "--addr", "0.0.0.0:0"])
        .env("KMS_SERVER", "https://127.0.0.1:1")
        .env("KMS_API_KEY", "k1:AAAA")
        .output()
        .expect("run kms console");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("requires --tls-cert and --tls-key"), "{err}");
}

#[test]
fn console_marks_a_down_node_with_the_remedy() {
    let tmp = tempfile::tempdir().unwrap();
    let mut nodes = cluster(&tmp, 3, SEED_HSM_KEY);
    let urls: Vec<String> = nodes.iter().map(Server::url).collect();
    let con = Console::start_at(&urls[..2].join(","), &nodes[0].root_key.to_secret_string());
    let cookie = con.sign_in();
    wait_until(Duration::from_secs(10), "3 nodes up", || {
        con.get("/", Some(&cookie)).body.contains("3 up, 0 down")
    });
    nodes[2].kill9();
    let took = wait_until(Duration::from_secs(5), "the down banner", || {
        let b = con.get("/", Some(&cookie)).body;
        b.contains("2 up, 1 down")
            && b.contains("class=\"banner\"")
            && b.contains("kms edit https://")
    });
    eprintln!("banner after {took:?}");
    nodes[2].restart();
    wait_until(Duration::from_secs(10), "the node back up", || {
        let b = con.get("/", Some(&cookie)).body;
        b.contains("3 up, 0 down") && !b.contains("class=\"banner\"")
    });
}

/// `curl` (a real HTTPS client) against a shared-mode console: the
/// response's status, head and body.
fn curl(url: &str, args: &[&str]) -> Resp {
    let out = Command::new("curl")
        .args(["-sk", "-i", "--max-time", "30"])
        .args(args)
        .arg(url)
        .output()
        .expect("run curl");
    assert!(out.status.success(), "curl {url}: {out:?}");
    Resp::parse(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A cookie's `name=value` from a response's Set-Cookie headers.
fn set_cookie(r: &Resp, name: &str) -> Option<(String, String)> {
    r.head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        if !k.eq_ignore_ascii_case("set-cookie") {
            return None;
        }
        let v = v.trim();
        v.starts_with(&format!("{name}="))
            .then(|| (v.split(';').next().unwrap().to_string(), v.to_string()))
    })
}

/// The value of a hidden field `name` in a page.
fn hidden(body: &str, name: &str) -> String {
    let pat = format!(r#"name="{name}" value=""#);
    let at = body.find(&pat).unwrap_or_else(|| panic!("no {name} field"));
    let rest = &body[at + pat.len()..];
    rest[..rest.find('"').unwrap()].to_string()
}

#[test]
fn console_shared_mode_signs_each_person_in_with_their_own_key() {
    let tmp = tempfile::tempdir().unwrap();
    let srv = Server::start(&data_dir(&tmp, "kms0"), SEED_HSM_KEY);
    // A User of enclave `app` whose policy allows only KEY:GENERATE on `k`.
    let user = kms_client::ApiKey::generate();
    let user_key = user.to_secret_string().to_string();
    let root_key = srv.root_key.to_secret_string().to_string();
    rt().block_on(async {
        let root = srv.root();
        root.create_enclave("app").await.unwrap();
        root.create_key("app", "k", "aes256", false).await.unwrap();
        let allow =
            std::collections::BTreeMap::from([("KEY:GENERATE".to_string(), vec!["k".to_string()])]);
        root.create_policy("app", "gen-only", &allow, &Default::default())
            .await
            .unwrap();
        let id = user.identity().to_string();
        root.create_identity(Some("app"), &id, kms_client::Privilege::User)
            .await
            .unwrap();
        root.assign_policy("app", "gen-only", &id).await.unwrap();
    });

    // The console's own certificate.
    let kp = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .self_signed(&kp)
        .unwrap();
    let (cert_file, key_file) = (tmp.path().join("c.pem"), tmp.path().join("k.pem"));
    std::fs::write(&cert_file, cert.pem()).unwrap();
    std::fs::write(&key_file, kp.serialize_pem()).unwrap();

    // Shared mode needs no API key of its own.
    struct Kill(Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut child = Kill(
        Command::new(kms_bin())
            .args(["console", "--addr", "127.0.0.1:0", "--tls-cert"])
            .arg(&cert_file)
            .arg("--tls-key")
            .arg(&key_file)
            .env("KMS_SERVER", srv.url())
            .env("KMS_INSECURE", "1")
            .env_remove("KMS_API_KEY")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut out = BufReader::new(child.0.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    let signin = line
        .split_whitespace()
        .find(|w| w.starts_with("https://"))
        .unwrap_or_else(|| panic!("no sign-in URL in {line:?}"))
        .to_string();
    assert!(signin.ends_with("/signin"), "{signin}");
    let base = signin.trim_end_matches("/signin").to_string();
    let mut seen = Vec::new();

    // Plain HTTP is not served; without a session every page goes to /signin.
    let r = curl(&format!("{base}/"), &[]);
    assert_eq!(r.status, 303, "{}", r.raw);
    assert_eq!(r.header("location").as_deref(), Some("/signin"));
    assert_eq!(
        r.header("strict-transport-security").as_deref(),
        Some("max-age=31536000")
    );
    let r = curl(&format!("{base}/live/cluster"), &[]);
    assert_eq!(r.status, 401);

    // The sign-in form and its token cookie.
    let page = curl(&signin, &[]);
    assert_eq!(page.status, 200, "{}", page.raw);
    let (pre_cookie, attrs) = set_cookie(&page, "kms_console_signin").expect("form cookie");
    assert!(
        attrs.contains("Secure") && attrs.contains("HttpOnly"),
        "{attrs}"
    );
    let pre = hidden(&page.body, "pre");
    seen.push(page);
    let sign_in = |key: &str, cookie: &str, pre: &str| {
        curl(
            &signin,
            &[
                "-H",
                &format!("Cookie: {cookie}"),
                "--data-urlencode",
                &format!("pre={pre}"),
                "--data-urlencode",
                &format!("api_key={key}"),
            ],
        )
    };

    // Refused: no form cookie, garbage, a key the cluster does not know.
    let r = sign_in(&user_key, "x=1", &pre);
    assert_eq!(r.status, 403, "{}", r.raw);
    assert!(set_cookie(&r, "kms_console").is_none());
    let r = sign_in("not a key", &pre_cookie, &pre);
    assert_eq!(r.status, 401);
    assert!(r.body.contains("that is not an API key"), "{}", r.body);
    let stranger = kms_client::ApiKey::generate()
        .to_secret_string()
        .to_string();
    let r = sign_in(&stranger, &pre_cookie, &pre);
    assert_eq!(r.status, 401, "{}", r.raw);
    assert!(
        r.body.contains("the cluster does not know this API key"),
        "{}",
        r.body
    );
    assert!(set_cookie(&r, "kms_console").is_none());
    assert!(!r.raw.contains(&stranger));
    // A cross-origin post is refused before anything else.
    let r = curl(
        &signin,
        &["-H", "Origin: https://evil.example", "-d", "pre=x"],
    );
    assert_eq!(r.status, 403);

    // The User signs in: its own session, with what its policy allows.
    let r = sign_in(&user_key, &pre_cookie, &pre);
    assert_eq!(r.status, 303, "{}", r.raw);
    let (user_cookie, attrs) = set_cookie(&r, "kms_console").expect("session cookie");
    assert!(
        attrs.contains("Secure") && attrs.contains("HttpOnly") && attrs.contains("SameSite=Strict"),
        "{attrs}"
    );
    seen.push(r);
    let get = |path: &str, cookie: &str| {
        curl(
            &format!("{base}{path}"),
            &["-H", &format!("Cookie: {cookie}")],
        )
    };
    let keys = get("/keys?enclave=app", &user_cookie);
    assert!(keys.body.contains("User of app"), "{}", keys.body);
    // It may not list keys, nor create one: the server's refusal is shown.
    assert!(keys.body.contains("listing keys failed"), "{}", keys.body);
    let csrf = keys.csrf();
    let r = curl(
        &format!("{base}/keys/create"),
        &[
            "-H",
            &format!("Cookie: {user_cookie}"),
            "--data-urlencode",
            &format!("csrf={csrf}"),
            "-d",
            "enclave=app&name=mine&type=aes256",
        ],
    );
    assert_eq!(r.status, 422, "{}", r.raw);
    assert!(r.body.contains("role=\"alert\""), "{}", r.body);
    assert!(
        r.body.contains("value=\"mine\""),
        "typed name kept: {}",
        r.body
    );
    seen.push(r);
    // But it may generate a data key with `k`.
    let r = curl(
        &format!("{base}/key/try"),
        &[
            "-H",
            &format!("Cookie: {user_cookie}"),
            "--data-urlencode",
            &format!("csrf={csrf}"),
            "-d",
            "enclave=app&name=k&op=generate&text=&context=",
        ],
    );
    assert!(r.body.contains("id=\"dk-plaintext\""), "{}", r.raw);
    seen.push(r);
    // The cluster page is a SysAdmin's: the server's refusal.
    let r = get("/", &user_cookie);
    assert_eq!(r.status, 502, "{}", r.raw);
    assert!(r.body.contains("cluster status failed"), "{}", r.body);
    seen.push(r);

    // The root key signs in separately and sees the cluster and the audit
    // trail, including the User's refusal.
    let page = curl(&signin, &[]);
    let (pre_cookie, _) = set_cookie(&page, "kms_console_signin").unwrap();
    let r = sign_in(&root_key, &pre_cookie, &hidden(&page.body, "pre"));
    assert_eq!(r.status, 303, "{}", r.raw);
    let (root_cookie, _) = set_cookie(&r, "kms_console").unwrap();
    let r = get("/", &root_cookie);
    assert_eq!(r.status, 200, "{}", r.raw);
    assert!(r.body.contains("SysAdmin"), "{}", r.body);
    seen.push(r);
    let r = get("/audit?command=KEY:CREATE", &root_cookie);
    assert_eq!(r.status, 200, "{}", r.raw);
    assert!(r.body.contains("denied"), "{}", r.body);
    assert!(r.body.contains(&user.identity().to_string()), "{}", r.body);
    seen.push(r);
    // The User's session cannot use the root's CSRF token, and vice versa.
    let r = curl(
        &format!("{base}/enclaves/create"),
        &[
            "-H",
            &format!("Cookie: {root_cookie}"),
            "--data-urlencode",
            &format!("csrf={csrf}"),
            "-d",
            "name=nope",
        ],
    );
    assert_eq!(r.status, 403);

    // Sign-out ends the session (its client and key are dropped).
    let r = curl(
        &format!("{base}/logout"),
        &[
            "-H",
            &format!("Cookie: {user_cookie}"),
            "--data-urlencode",
            &format!("csrf={csrf}"),
        ],
    );
    assert_eq!(r.status, 200);
    assert_eq!(get("/keys?enclave=app", &user_cookie).status, 303);

    // No API key in any page or header, nor in what the console printed.
    let _ = child.0.kill();
    let _ = child.0.wait();
    let mut printed = line;
    let _ = out.read_to_string(&mut printed);
    let _ = child.0.stderr.take().unwrap().read_to_string(&mut printed);
    for key in [&user_key, &root_key] {
        let secret = key.trim_start_matches("k1:");
        for r in &seen {
            assert!(!r.raw.contains(secret), "an API key in a response");
        }
        assert!(
            !printed.contains(secret),
            "an API key in the console's output"
        );
    }
}

/// The console's own time (its `Server-Timing` header, in ms) to render
/// pages: the key list of an enclave of 100,000 keys (first page, a page
/// in the middle, a prefix search), a key, and the cluster page of 3 nodes
/// (with its charts). A benchmark, not a test: `scripts/console-bench.sh`
/// runs it and BENCHMARKS.md records the figures.
#[test]
#[ignore = "a benchmark: scripts/console-bench.sh"]
fn console_render_times() {
    let keys: usize = std::env::var("KMS_BENCH_KEYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let tmp = tempfile::tempdir().unwrap();
    let nodes = cluster(&tmp, 3, SEED_HSM_KEY);
    kms_tests::create_keys(&nodes[0].root(), "big", keys);
    let urls: Vec<String> = nodes.iter().map(Server::url).collect();
    let con = Console::start_at(&urls.join(","), &nodes[0].root_key.to_secret_string());
    let cookie = con.sign_in();
    let mid = kms_tests::key_name(keys / 2);
    let pages = [
        (
            "key list, first page".to_string(),
            "/keys?enclave=big".to_string(),
        ),
        (
            "key list, middle page".into(),
            format!("/keys?enclave=big&at={mid}"),
        ),
        (
            "key list, prefix search".into(),
            format!("/keys?enclave=big&prefix=key-{:05}", keys / 200),
        ),
        ("one key".into(), format!("/key?enclave=big&name={mid}")),
        ("cluster page, 3 nodes".into(), "/".into()),
        ("cluster live part, 3 nodes".into(), "/live/cluster".into()),
    ];
    println!("console render times, {keys} keys, 3 nodes (ms, 60 requests each after 5 warm-up)");
    println!("| page | median | p90 | max | bytes |");
    println!("| --- | ---: | ---: | ---: | ---: |");
    for (what, path) in &pages {
        let mut t = Vec::new();
        let mut bytes = 0;
        for i in 0..65 {
            let r = con.get(path, Some(&cookie));
            assert_eq!(r.status, 200, "{path}: {}", r.raw);
            if i >= 5 {
                let st = r.header("server-timing").expect("Server-Timing");
                let ms: f64 = st.trim_start_matches("app;dur=").parse().unwrap();
                t.push(ms);
                bytes = r.body.len();
            }
            // The cluster page samples metrics at most every 2 s: spread
            // its requests so that some of them scrape.
            if path.contains("cluster") || path == "/" {
                std::thread::sleep(Duration::from_millis(150));
            }
        }
        t.sort_by(f64::total_cmp);
        println!(
            "| {what} | {:.2} | {:.2} | {:.2} | {bytes} |",
            t[t.len() / 2],
            t[t.len() * 9 / 10],
            t[t.len() - 1]
        );
    }
}
