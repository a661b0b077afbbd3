//! `kms console` in a real browser: headless Chromium driven through
//! chromedriver (WebDriver, the `fantoccini` crate, plain HTTP on loopback)
//! against a live 3-node cluster. Sign-in with the one-time URL, the
//! cluster page, an enclave, a key, a rotation and the try-it panel through
//! the forms; a policy and a User identity made in the browser, then a
//! second browser signed in as that identity whose refused action shows the
//! server's message and keeps what was typed; a killed node shown down with
//! the banner and up again after a restart. Accessibility in the browser:
//! labels, Tab order, no horizontal scrolling at phone width. A PNG
//! screenshot after each step (`KMS_SCREENSHOTS=dir` keeps them).
//!
//! Skipped (with a SKIPPED line) when /usr/bin/chromedriver or
//! /usr/bin/chromium is missing, except under CI=true (.ci/run), where that
//! fails: `scripts/setup.sh --test` installs chromium and chromium-driver.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use fantoccini::actions::{InputSource, KeyAction, KeyActions};
use fantoccini::key::Key;
use fantoccini::wd::TimeoutConfiguration;
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use kms_client::ApiKey;
use serde_json::{json, Value};

use kms_tests::{cluster, kms_bin, Server, SEED_HSM_KEY};

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";
/// The longest any single wait in the browser polls.
const WAIT: Duration = Duration::from_secs(10);
/// How often a wait polls.
const POLL: Duration = Duration::from_millis(100);

/// A running chromedriver in a process group of its own (with every
/// Chromium it starts); the group is killed on drop.
struct Driver {
    child: Child,
    url: String,
    killed: bool,
    sessions: usize,
    /// Chromedriver's output, the profiles (`--user-data-dir`), and
    /// Chromium's config and cache dirs (`XDG_CONFIG_HOME`, `XDG_CACHE_HOME`).
    tmp: tempfile::TempDir,
}

impl Driver {
    /// Starts chromedriver on a free loopback port (picked by binding
    /// 127.0.0.1:0 and releasing it; another attempt on a clash) and waits
    /// until its `/status` says ready.
    fn start() -> Driver {
        let tmp = tempfile::tempdir().unwrap();
        let mut last = String::new();
        for attempt in 0..5 {
            let port = TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("a free loopback port")
                .port();
            let log = tmp.path().join(format!("chromedriver-{attempt}.log"));
            let out = File::create(&log).unwrap();
            let mut child = Command::new(CHROMEDRIVER)
                .arg(format!("--port={port}"))
                .env("XDG_CONFIG_HOME", tmp.path().join("config"))
                .env("XDG_CACHE_HOME", tmp.path().join("cache"))
                .stdin(Stdio::null())
                .stdout(out.try_clone().unwrap())
                .stderr(out)
                .process_group(0)
                .spawn()
                .expect("run chromedriver");
            let end = Instant::now() + WAIT;
            loop {
                if let Ok(Some(st)) = child.try_wait() {
                    let out = std::fs::read_to_string(&log).unwrap_or_default();
                    last = format!("chromedriver exited ({st}): {out}");
                    break;
                }
                if status_ready(port) {
                    return Driver {
                        child,
                        url: format!("http://127.0.0.1:{port}"),
                        killed: false,
                        sessions: 0,
                        tmp,
                    };
                }
                if Instant::now() > end {
                    last = format!("chromedriver did not answer on port {port} within {WAIT:?}");
                    break;
                }
                std::thread::sleep(POLL);
            }
            kill_group(&mut child);
        }
        panic!("chromedriver did not start: {last}");
    }

    /// A new browser session: headless Chromium with a fresh profile.
    async fn session(&mut self) -> Client {
        self.sessions += 1;
        let profile = self.tmp.path().join(format!("profile-{}", self.sessions));
        let Value::Object(caps) = json!({
            "browserName": "chrome",
            "acceptInsecureCerts": true,
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
                    "--window-size=1280,800",
                    format!("--user-data-dir={}", profile.display()),
                ],
            },
        }) else {
            unreachable!("an object")
        };
        let mut b = ClientBuilder::new(HttpConnector::new());
        b.capabilities(caps);
        let c = b.connect(&self.url).await.expect("a WebDriver session");
        c.update_timeouts(TimeoutConfiguration::new(
            Some(WAIT),
            Some(WAIT),
            Some(Duration::ZERO),
        ))
        .await
        .unwrap();
        c
    }

    fn kill(&mut self) {
        if !self.killed {
            self.killed = true;
            kill_group(&mut self.child);
        }
    }

    /// Stops chromedriver and its browsers; asserts that no process of
    /// theirs is left (none in the group, none naming the temp dir, as
    /// every profile and crash handler does).
    fn shutdown(mut self) {
        let pgid = self.child.id();
        self.kill();
        let marker = self.tmp.path().to_string_lossy().into_owned();
        let end = Instant::now() + WAIT;
        loop {
            let left = processes_of(pgid, &marker);
            if left.is_empty() {
                return;
            }
            assert!(Instant::now() < end, "left running: {left:?}");
            std::thread::sleep(POLL);
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Kills the process group that `child` leads: chromedriver and every
/// Chromium process it started (Chromium's crash handlers, in sessions of
/// their own, exit with their browser).
fn kill_group(child: &mut Child) {
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{}", child.id())])
        .status();
    let _ = child.wait();
}

/// Whether chromedriver on `port` answers `/status` with ready.
fn status_ready(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let req =
        format!("GET /status HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
    if s.write_all(req.as_bytes()).is_err() {
        return false;
    }
    // Chromedriver answers "Connection: close" but keeps the connection
    // open: read until the answer says ready (or EOF, or 2 s).
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while let Ok(n @ 1..) = s.read(&mut buf) {
        got.extend_from_slice(&buf[..n]);
        if String::from_utf8_lossy(&got).contains("\"ready\":true") {
            return true;
        }
    }
    false
}

/// Live (not zombie) processes in group `pgid` or whose command line names `marker`.
fn processes_of(pgid: u32, marker: &str) -> Vec<String> {
    let mut left = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ppid pgrp ...
        let Some((head, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let f: Vec<&str> = rest.split_whitespace().collect();
        if f.len() < 3 || f[0] == "Z" {
            continue;
        }
        let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        if f[2] == pgid.to_string() || String::from_utf8_lossy(&cmd).contains(marker) {
            left.push(format!(
                "{name} {}",
                head.split_once('(').map_or("", |x| x.1)
            ));
        }
    }
    left
}

/// A `kms console`; killed on drop.
struct Console {
    child: Child,
    /// The one-time login URL (local mode) or the sign-in page (shared
    /// mode) it printed.
    login: String,
    /// `http(s)://127.0.0.1:PORT`.
    origin: String,
}

impl Drop for Console {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Console {
    /// Starts `kms console --addr 127.0.0.1:0` for `servers` (comma
    /// separated): in local mode with `api_key`, or in shared mode (no key
    /// of its own) with the TLS certificate and key files `tls`; reads the
    /// URL it prints (at most 10 s).
    fn start(servers: &str, api_key: Option<&str>, tls: Option<(&Path, &Path)>) -> Console {
        let mut cmd = Command::new(kms_bin());
        cmd.args(["console", "--addr", "127.0.0.1:0"])
            .env("KMS_SERVER", servers)
            .env_remove("KMS_API_KEY")
            .env("KMS_INSECURE", "1");
        if let Some(k) = api_key {
            cmd.env("KMS_API_KEY", k);
        }
        if let Some((c, k)) = tls {
            cmd.arg("--tls-cert").arg(c).arg("--tls-key").arg(k);
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("run kms console");
        let out = BufReader::new(child.stdout.take().expect("stdout"));
        let (tx, rx) = mpsc::channel();
        // Reads every line (the console prints more after the URL).
        std::thread::spawn(move || {
            for line in out.lines() {
                let Ok(line) = line else { return };
                if let Some(url) = line
                    .split_whitespace()
                    .find(|w| w.starts_with("http://") || w.starts_with("https://"))
                {
                    let _ = tx.send(url.to_string());
                }
            }
        });
        let login = rx
            .recv_timeout(WAIT)
            .expect("kms console prints its login URL");
        let (scheme, rest) = login.split_once("://").unwrap();
        let origin = format!("{scheme}://{}", rest.split('/').next().unwrap());
        let want = if tls.is_some() {
            format!("{origin}/signin")
        } else {
            format!("{origin}/login?token=")
        };
        assert!(login.starts_with(&want), "{login}");
        Console {
            child,
            login,
            origin,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.origin)
    }
}

/// Signs browser `b` in to a local-mode console for `servers` acting with
/// `api_key`, through its one-time login URL.
async fn sign_in(b: &Client, servers: &str, api_key: &str) -> Console {
    let con = Console::start(servers, Some(api_key), None);
    b.goto(&con.login).await.unwrap();
    // The token became a session cookie and left the address bar.
    wait_js(
        b,
        "the cluster page after sign-in",
        "return location.pathname === '/' && !!document.querySelector(\"nav a[href='/enclaves']\")",
    )
    .await;
    con
}

/// Signs browser `b` in to the shared-mode console `con` by typing
/// `api_key` into its sign-in form.
async fn sign_in_shared(b: &Client, con: &Console, api_key: &str) {
    b.goto(&con.login).await.unwrap();
    fill(b, "#api-key", api_key).await;
    click_and_load(b, "form#signin button[type=submit]").await;
    wait_js(
        b,
        "a page after sign-in",
        "return location.pathname === '/' && !!document.querySelector(\"nav a[href='/enclaves']\")",
    )
    .await;
}

/// Runs `script` (which returns a value) in the page.
async fn js(b: &Client, script: &str) -> Value {
    b.execute(script, vec![])
        .await
        .unwrap_or_else(|e| panic!("{script}: {e}"))
}

/// Polls `script` until it returns true (at most 10 s).
async fn wait_js(b: &Client, what: &str, script: &str) -> Duration {
    let start = Instant::now();
    loop {
        if let Ok(Value::Bool(true)) = b.execute(script, vec![]).await {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < WAIT,
            "timed out after {WAIT:?} waiting for {what}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// The text of the element `css` once it exists (at most 10 s).
async fn text(b: &Client, css: &str) -> String {
    let start = Instant::now();
    loop {
        if let Ok(e) = b.find(Locator::Css(css)).await {
            return e.text().await.unwrap();
        }
        assert!(start.elapsed() < WAIT, "no {css} within {WAIT:?}");
        tokio::time::sleep(POLL).await;
    }
}

/// The `value` property of the form control `css`.
async fn value(b: &Client, css: &str) -> String {
    b.find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
        .prop("value")
        .await
        .unwrap()
        .unwrap_or_default()
}

/// Types `text` into the empty field `css`.
async fn fill(b: &Client, css: &str, text: &str) {
    let e = b
        .find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"));
    e.clear().await.unwrap();
    e.send_keys(text).await.unwrap();
}

/// Runs the key page's try-it panel: operation `op` on `text` (kept as it
/// is when `None`).
async fn try_it(b: &Client, op: &str, text: Option<&str>) {
    b.find(Locator::Css(&format!("input[name=op][value={op}]")))
        .await
        .unwrap_or_else(|e| panic!("try-it {op}: {e}"))
        .click()
        .await
        .unwrap();
    if let Some(t) = text {
        fill(b, "#try-text", t).await;
    }
    submit(b, "/key/try").await;
}

/// Clicks `css` and waits until the next page has replaced this one.
async fn click_and_load(b: &Client, css: &str) {
    js(b, "window.__kmsOld = true; return null").await;
    b.find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
        .click()
        .await
        .unwrap();
    wait_js(
        b,
        &format!("the page after clicking {css}"),
        "return !window.__kmsOld && document.readyState === 'complete'",
    )
    .await;
}

/// Submits the form whose action is `action` with its submit button.
async fn submit(b: &Client, action: &str) {
    click_and_load(b, &format!("form[action='{action}'] button[type=submit]")).await;
}

/// Opens `url` and waits for it to load.
async fn open(b: &Client, url: &str) {
    b.goto(url).await.unwrap();
    wait_js(b, url, "return document.readyState === 'complete'").await;
}

/// Where the screenshots go: `$KMS_SCREENSHOTS`, else the test's temp dir.
struct Shots(PathBuf);

impl Shots {
    /// A PNG of the viewport, scrolled to `css` if given.
    async fn take_at(&self, b: &Client, name: &str, css: &str) {
        let at = format!(
            "document.querySelector({css:?}).scrollIntoView({{block: 'center'}}); return null"
        );
        js(b, &at).await;
        self.take(b, name).await;
    }

    async fn take(&self, b: &Client, name: &str) {
        let png = b.screenshot().await.unwrap();
        assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "{name} is not a PNG");
        std::fs::write(self.0.join(name), png).unwrap();
    }
}

/// Every visible input, select and textarea without a label (`label for`,
/// an enclosing label, `aria-label` or `aria-labelledby`).
const UNLABELLED: &str = r#"
const bad = [];
for (const e of document.querySelectorAll('input, select, textarea')) {
  if (e.type === 'hidden') continue;
  const r = e.getBoundingClientRect();
  if (r.width === 0 && r.height === 0) continue;
  const named = [...e.labels].some(l => l.textContent.trim() !== '')
    || (e.getAttribute('aria-label') || '').trim() !== ''
    || !!e.getAttribute('aria-labelledby');
  if (!named) bad.push(e.outerHTML);
}
return bad;
"#;

/// Lists the Tab stops in document order (links with href, buttons and
/// visible form controls; one stop per radio group, its checked radio),
/// keeps them in `window.__kmsTabs`, and returns their descriptions.
const TAB_STOPS: &str = r#"
const d = e => e.tagName.toLowerCase() + (e.id ? '#' + e.id : '')
  + (e.name ? '[name=' + e.name + ']' : '')
  + (e.getAttribute('href') ? '[href=' + e.getAttribute('href') + ']' : '')
  + (e.tagName === 'BUTTON' ? '(' + e.textContent.trim() + ')' : '');
const stops = [], groups = new Set();
for (const e of document.querySelectorAll('a[href], button, input, select, textarea, [tabindex]')) {
  if (e.disabled || e.type === 'hidden' || e.tabIndex < 0) continue;
  const r = e.getBoundingClientRect();
  if (r.width === 0 && r.height === 0) continue;
  if (e.type === 'radio') {
    if (groups.has(e.name)) continue;
    groups.add(e.name);
    const g = [...document.querySelectorAll('input[type=radio]')].filter(x => x.name === e.name && x.form === e.form);
    stops.push(g.find(x => x.checked) || g[0]);
  } else {
    stops.push(e);
  }
}
window.__kmsTabs = stops;
window.__kmsDesc = d;
return stops.map(d);
"#;

/// Accessibility checks on the page now shown; failures are collected.
async fn check_labels(b: &Client, page: &str, problems: &mut Vec<String>) {
    if let Value::Array(bad) = js(b, UNLABELLED).await {
        for e in bad {
            problems.push(format!("{page}: a control without a label: {e}"));
        }
    }
}

/// Tab from the top of a freshly loaded page visits every Tab stop in
/// document order (WebDriver key actions; `document.activeElement`).
async fn check_tab_order(b: &Client, page: &str, problems: &mut Vec<String>) {
    let stops = js(b, TAB_STOPS).await;
    let stops: Vec<String> = serde_json::from_value(stops).unwrap();
    assert!(stops.len() >= 5, "{page}: {stops:?}");
    for (i, want) in stops.iter().enumerate() {
        let tab = KeyActions::new("keyboard".into())
            .then(KeyAction::Down {
                value: Key::Tab.into(),
            })
            .then(KeyAction::Up {
                value: Key::Tab.into(),
            });
        b.perform_actions(tab).await.unwrap();
        let at = js(
            b,
            "const a = document.activeElement; return [window.__kmsTabs.indexOf(a), window.__kmsDesc(a)]",
        )
        .await;
        if at[0] != json!(i) {
            problems.push(format!(
                "{page}: Tab {} focused {} instead of {want} (stops: {stops:?})",
                i + 1,
                at[1]
            ));
            return;
        }
    }
}

/// The cluster page's rows (node ID, state) and whether the down banner shows.
async fn cluster_rows(b: &Client) -> (Vec<(String, String)>, bool) {
    let v = js(
        b,
        "return [[...document.querySelectorAll('tr[data-node]')].map(r => [r.dataset.node, r.querySelector('td.state').textContent]), !!document.getElementById('down-banner')]",
    )
    .await;
    (
        serde_json::from_value(v[0].clone()).unwrap(),
        v[1] == json!(true),
    )
}

/// Waits (at most `limit`, at most 10 s) until the cluster page shows
/// `want` (node ID to state) and the banner or not.
async fn wait_cluster(
    b: &Client,
    limit: Duration,
    want: &BTreeMap<String, &str>,
    banner: bool,
) -> Duration {
    assert!(limit <= WAIT);
    let start = Instant::now();
    loop {
        // No reload: the page's own live refresh (console.js) must show it.
        let (rows, shown) = cluster_rows(b).await;
        let got: BTreeMap<String, &str> =
            rows.iter().map(|(i, s)| (i.clone(), s.as_str())).collect();
        if &got == want && shown == banner {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < limit,
            "after {limit:?} the cluster page shows {rows:?} (banner: {shown}), not {want:?} (banner: {banner})"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// Fails under CI=true (.ci/run); otherwise prints SKIPPED.
fn have_browser() -> bool {
    if Path::new(CHROMEDRIVER).exists() && Path::new(CHROMIUM).exists() {
        return true;
    }
    let why = format!(
        "{CHROMEDRIVER} or {CHROMIUM} is missing (scripts/setup.sh --test installs chromium and chromium-driver)"
    );
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{why}: required under CI=true"
    );
    println!("SKIPPED: {why}");
    false
}

#[test]
fn console_in_a_browser_on_a_live_cluster() {
    if !have_browser() {
        return;
    }
    let started = Instant::now();
    let mut lap = started;
    let tmp = tempfile::tempdir().unwrap();
    let shots = match std::env::var_os("KMS_SCREENSHOTS") {
        Some(d) => PathBuf::from(d),
        None => tmp.path().join("screenshots"),
    };
    std::fs::create_dir_all(&shots).unwrap();
    let shots = Shots(shots);
    let mut nodes = cluster(&tmp, 3, SEED_HSM_KEY);
    let servers: Vec<String> = nodes.iter().map(Server::url).collect();
    let servers = servers.join(",");
    let root_key = nodes[0].root_key.to_secret_string();
    let mut driver = Driver::start();
    let rt = kms_tests::rt();
    let mut problems = Vec::new();
    let mut step = |what: &str| {
        eprintln!("{what}: {:?}", lap.elapsed());
        lap = Instant::now();
    };
    step("cluster and chromedriver");

    let (enclave, key, policy, text_in) = ("browser-enc", "bk", "gen-only", "hello from a browser");
    let scenario = async {
        // 1. Sign in; the cluster page lists the three nodes, all up.
        let a = driver.session().await;
        let con_a = sign_in(&a, &servers, &root_key).await;
        let all_up: BTreeMap<String, &str> = {
            let (rows, _) = cluster_rows(&a).await;
            rows.iter().map(|(id, _)| (id.clone(), "up")).collect()
        };
        assert_eq!(all_up.len(), 3, "{all_up:?}");
        wait_cluster(&a, WAIT, &all_up, false).await;
        assert_eq!(text(&a, "table caption").await, "3 up, 0 down");
        check_labels(&a, "cluster", &mut problems).await;
        shots.take(&a, "01-cluster.png").await;
        step("1. sign-in, cluster page");

        // 2. An enclave through the Enclaves page; a key in it; a rotation.
        click_and_load(&a, "nav a[href='/enclaves']").await;
        fill(&a, "#enc-new", enclave).await;
        submit(&a, "/enclaves/create").await;
        let listed = js(&a, "return [...document.querySelectorAll('tbody tr td:first-child')].map(t => t.textContent)").await;
        assert!(
            listed.as_array().unwrap().contains(&json!(enclave)),
            "{listed}"
        );
        check_labels(&a, "enclaves", &mut problems).await;
        shots.take(&a, "02-enclaves.png").await;
        click_and_load(&a, &format!("a[href='/keys?enclave={enclave}']")).await;
        open(&a, &con_a.url(&format!("/keys?enclave={enclave}"))).await;
        check_tab_order(&a, "keys", &mut problems).await;
        fill(&a, "#key-new", key).await;
        a.find(Locator::Css("#key-type"))
            .await
            .unwrap()
            .select_by_value("aes256")
            .await
            .unwrap();
        submit(&a, "/keys/create").await;
        // Created: the console shows the new key's page.
        assert_eq!(text(&a, "h1").await, format!("Key {key}"));
        click_and_load(&a, &format!("a[href='/keys?enclave={enclave}']")).await;
        check_labels(&a, "keys", &mut problems).await;
        click_and_load(&a, &format!("a[href='/key?enclave={enclave}&name={key}']")).await;
        assert_eq!(text(&a, "dl dd").await, "AES256");
        submit(&a, "/key/rotate").await;
        let versions = js(&a, "return [...document.querySelectorAll('table tbody tr td:first-child')].map(t => t.textContent)").await;
        assert_eq!(versions, json!(["1", "2"]));
        check_labels(&a, "key", &mut problems).await;
        shots.take(&a, "03-key.png").await;
        step("2. enclave, key, rotation");

        // 3. Try it: a data key, decrypted back; a text, encrypted and decrypted.
        try_it(&a, "generate", None).await;
        let dk_plain = text(&a, "#dk-plaintext").await;
        let dk_ct = text(&a, "#dk-ciphertext").await;
        assert_eq!(dk_plain.len(), 44, "32 bytes in base64: {dk_plain}");
        try_it(&a, "decrypt", Some(&dk_ct)).await;
        assert_eq!(text(&a, "#dec-plaintext").await, dk_plain);
        try_it(&a, "encrypt", Some(text_in)).await;
        let ct = text(&a, "#enc-ciphertext").await;
        assert_ne!(ct, text_in);
        try_it(&a, "decrypt", Some(&ct)).await;
        assert_eq!(text(&a, "#dec-text").await, text_in);
        check_labels(&a, "key with a result", &mut problems).await;
        shots.take_at(&a, "04-try-it.png", "#dec-text").await;
        open(
            &a,
            &con_a.url(&format!("/key?enclave={enclave}&name={key}")),
        )
        .await;
        check_tab_order(&a, "key", &mut problems).await;
        step("3. try-it");

        // 4. A policy allowing only KEY:GENERATE on that key; a User with it.
        open(&a, &con_a.url(&format!("/policies?enclave={enclave}"))).await;
        fill(&a, "#pol-name", policy).await;
        let pol_json = format!("{{\"allow\": {{\"KEY:GENERATE\": [\"{key}\"]}}, \"deny\": {{}}}}");
        fill(&a, "#pol-json", &pol_json).await;
        submit(&a, "/policies/save").await;
        // Saved: the editor opens it from the cluster.
        let saved: Value = serde_json::from_str(&value(&a, "#pol-json").await).unwrap();
        assert_eq!(saved, json!({"allow": {"KEY:GENERATE": [key]}, "deny": {}}));
        assert_eq!(
            text(
                &a,
                &format!("a[href='/policies?enclave={enclave}&name={policy}']")
            )
            .await,
            policy
        );
        check_labels(&a, "policies", &mut problems).await;
        open(&a, &con_a.url(&format!("/identities?enclave={enclave}"))).await;
        a.find(Locator::Css("#id-priv"))
            .await
            .unwrap()
            .select_by_value("User")
            .await
            .unwrap();
        fill(&a, "#id-policy", policy).await;
        submit(&a, "/identities/create").await;
        let user_key = value(&a, "input#new-key").await;
        assert!(user_key.starts_with("k1:"), "{user_key}");
        let user = ApiKey::parse(&user_key).expect("the API key shown parses");
        let rows = js(&a, "return [...document.querySelectorAll('tbody tr')].map(r => [...r.children].slice(0, 3).map(t => t.textContent))").await;
        let id = user.identity().to_string();
        assert!(
            rows.as_array()
                .unwrap()
                .contains(&json!([id, "User", policy])),
            "{id} in {rows}"
        );
        check_labels(&a, "identities", &mut problems).await;
        shots
            .take_at(&a, "05-identity-created.png", "#new-key")
            .await;
        // What the policy allows works (a data key from that key), so the
        // refusal below is the policy's, not a broken identity.
        let uc = nodes[0].client(&user);
        uc.generate(enclave, key, b"", 32)
            .await
            .expect("KEY:GENERATE is allowed");
        let denied = uc
            .create_key(enclave, "typed-by-b", "ed25519", false)
            .await
            .unwrap_err();
        assert_eq!(denied.status(), Some(403), "{denied}");
        let denied = denied.to_string();
        assert!(
            denied.contains("access denied: insufficient permissions"),
            "{denied}"
        );
        step("4. policy, identity");

        // 5. A second browser signed in as that identity: creating a key is
        //    refused with the server's message next to the form, and what
        //    was typed is kept.
        let b = driver.session().await;
        let kp = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
            .unwrap()
            .self_signed(&kp)
            .unwrap();
        let (cert_file, key_file) = (
            tmp.path().join("console.pem"),
            tmp.path().join("console.key"),
        );
        std::fs::write(&cert_file, cert.pem()).unwrap();
        std::fs::write(&key_file, kp.serialize_pem()).unwrap();
        let con_b = Console::start(&servers, None, Some((&cert_file, &key_file)));
        // A wrong key is refused on the form itself.
        b.goto(&con_b.login).await.unwrap();
        fill(&b, "#api-key", &ApiKey::generate().to_secret_string()).await;
        click_and_load(&b, "form#signin button[type=submit]").await;
        assert_eq!(
            text(&b, "form#signin [role=alert]").await,
            "sign-in failed: the cluster does not know this API key"
        );
        sign_in_shared(&b, &con_b, &user_key).await;
        assert!(text(&b, "header .who")
            .await
            .starts_with(&format!("User of {enclave}")));
        open(&b, &con_b.url(&format!("/keys?enclave={enclave}"))).await;
        fill(&b, "#key-new", "typed-by-b").await;
        b.find(Locator::Css("#key-type"))
            .await
            .unwrap()
            .select_by_value("ed25519")
            .await
            .unwrap();
        submit(&b, "/keys/create").await;
        assert_eq!(
            text(&b, "form[action='/keys/create'] [role=alert]").await,
            denied
        );
        assert_eq!(value(&b, "#key-new").await, "typed-by-b");
        assert_eq!(value(&b, "#key-type").await, "ed25519");
        check_labels(&b, "keys, refused", &mut problems).await;
        shots.take(&b, "06-refused.png").await;
        b.close().await.unwrap();
        drop(con_b);
        step("5. second browser, refusal");

        // 6. A follower killed: down with the banner within 5 s; restarted:
        //    up again, banner gone, within 10 s.
        open(&a, &con_a.origin).await;
        let roles = js(&a, "return [...document.querySelectorAll('tr[data-node]')].map(r => [r.dataset.node, r.children[1].textContent, r.children[3].textContent])").await;
        let roles: Vec<(String, String, String)> = serde_json::from_value(roles).unwrap();
        let (down_id, host, _) = roles
            .iter()
            .rev()
            .find(|(_, _, role)| role == "Follower")
            .unwrap_or_else(|| panic!("no follower in {roles:?}"))
            .clone();
        let victim = nodes
            .iter()
            .position(|n| host.contains(&n.addr))
            .unwrap_or_else(|| panic!("no node at {host}"));
        nodes[victim].kill9();
        let mut one_down = all_up.clone();
        one_down.insert(down_id.clone(), "down");
        let took = wait_cluster(&a, Duration::from_secs(5), &one_down, true).await;
        eprintln!("node {down_id} shown down after {took:?}");
        let banner = text(&a, "#down-banner").await;
        assert!(banner.contains(&format!(" --rm {down_id}")), "{banner}");
        assert_eq!(text(&a, "table caption").await, "2 up, 1 down");
        shots.take(&a, "07-node-down.png").await;
        nodes[victim].restart();
        let took = wait_cluster(&a, WAIT, &all_up, false).await;
        eprintln!("node {down_id} shown up again after {took:?}");
        shots.take(&a, "08-recovered.png").await;
        step("6. node down and back");

        // The HSM and audit pages: the audit shows b's refused KEY:CREATE.
        open(&a, &con_a.url("/hsms")).await;
        assert!(text(&a, "table").await.contains("seals"));
        check_labels(&a, "hsms", &mut problems).await;
        shots.take(&a, "10-hsms.png").await;
        open(&a, &con_a.url("/audit?command=KEY:CREATE")).await;
        let audit = text(&a, "table.audit").await;
        assert!(audit.contains(&user.identity().to_string()), "{audit}");
        assert!(audit.contains("denied"), "{audit}");
        check_labels(&a, "audit", &mut problems).await;
        shots.take(&a, "11-audit.png").await;
        open(&a, &con_a.url(&format!("/identities?enclave={enclave}"))).await;
        let words = text(&a, "table").await;
        assert!(
            words.contains(&format!("May generate data keys with the key {key}.")),
            "{words}"
        );
        shots.take(&a, "12-identities.png").await;

        // 7. Phone width: no horizontal scrolling on any page.
        a.set_window_rect(0, 0, 390, 844).await.unwrap();
        for path in [
            "/".to_string(),
            "/enclaves".into(),
            format!("/identities?enclave={enclave}"),
            format!("/policies?enclave={enclave}"),
            format!("/key?enclave={enclave}&name={key}"),
            "/hsms".into(),
            "/audit".into(),
            format!("/keys?enclave={enclave}"),
        ] {
            open(&a, &con_a.url(&path)).await;
            let w = js(
                &a,
                "return [document.documentElement.scrollWidth, window.innerWidth]",
            )
            .await;
            let (scroll, inner) = (w[0].as_u64().unwrap(), w[1].as_u64().unwrap());
            assert!(inner <= 400, "the window did not narrow: {w}");
            if scroll > inner {
                problems.push(format!(
                    "{path} at 390x844: scrollWidth {scroll} > innerWidth {inner}"
                ));
            }
        }
        shots.take(&a, "09-phone-keys.png").await;
        a.close().await.unwrap();
        drop(con_a);
        step("7. phone width");
    };
    rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(300), scenario)
            .await
            .expect("the scenario within 300 s")
    });
    driver.shutdown();
    eprintln!(
        "screenshots in {}; total {:?}",
        shots.0.display(),
        started.elapsed()
    );
    // ACCESSIBILITY: the console's markup (kms-console) must pass these.
    assert!(
        problems.is_empty(),
        "accessibility problems:\n{}",
        problems.join("\n")
    );
}
