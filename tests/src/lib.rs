//! Helpers for the integration tests: start real `kms server` processes on
//! loopback, run the real `kms` CLI, and talk to servers with the real client.

pub mod linearizability;
pub mod netns;
pub mod pkcs11;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use hsm_backends::{Hsm, SoftHsm};
use kms_client::tls::Trust;
use kms_client::{ApiKey, Client, ClientConfig};

/// The HSM key of the seed's walkthrough.
pub const SEED_HSM_KEY: &str = "hsm:aes256:vZ0DeGvwlb/KHwIfi8+c7/8ZHjweHKVL0WNrRc3+FxQ=";

/// The root API key that `kms identity --hsm` prints for the HSM settings `env`.
pub fn hsm_root_key(env: &[(String, String)]) -> ApiKey {
    let out = Command::new(kms_bin())
        .args(["--json", "identity", "--hsm"])
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .output()
        .expect("run kms identity");
    assert!(
        out.status.success(),
        "kms identity --hsm: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    ApiKey::parse(v["api_key"].as_str().expect("api_key")).expect("valid key")
}

/// Path of the `kms` binary built alongside the tests.
pub fn kms_bin() -> PathBuf {
    if let Ok(p) = std::env::var("KMS_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> -> target/<profile>/kms
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let bin = dir.join("kms");
    assert!(
        bin.exists(),
        "{} does not exist: build the workspace first",
        bin.display()
    );
    bin
}

/// The root API key a node with `hsm_key` derives.
pub fn root_key(hsm_key: &str) -> ApiKey {
    let hsm = SoftHsm::from_key_str(hsm_key).expect("valid HSM key");
    ApiKey::from_seed(
        &hsm.derive(hsm_backends::labels::ROOT_API_KEY)
            .expect("derive"),
    )
}

/// A running `kms server` process.
pub struct Server {
    child: Option<Child>,
    pub addr: String,
    pub dir: PathBuf,
    /// The HSM settings the server runs with (environment variables).
    pub env: Vec<(String, String)>,
    /// The root API key of the server's primary HSM.
    pub root_key: ApiKey,
    pub stdout: String,
    /// The network namespace the server runs in (partition tests).
    pub netns: Option<String>,
}

impl Server {
    /// Starts a server on a free loopback port with `dir` as data directory.
    pub fn start(dir: &Path, hsm_key: &str) -> Server {
        Self::try_start(dir, hsm_key, &[]).unwrap_or_else(|e| panic!("server did not start: {e}"))
    }

    /// Starts a server with the software HSM `hsm_key`; returns the error
    /// output if it exits instead.
    pub fn try_start(dir: &Path, hsm_key: &str, extra: &[&str]) -> Result<Server, String> {
        Self::try_start_env(
            dir,
            &[("KMS_HSM_KEY".to_string(), hsm_key.to_string())],
            extra,
        )
    }

    /// Starts a server whose HSM settings are exactly `env`.
    pub fn try_start_env(
        dir: &Path,
        env: &[(String, String)],
        extra: &[&str],
    ) -> Result<Server, String> {
        Self::launch(dir, env, "127.0.0.1:0", extra, None)
    }

    /// Starts a server inside network namespace `netns` on `addr`.
    pub fn start_in_netns(
        netns: &str,
        dir: &Path,
        env: &[(String, String)],
        addr: &str,
    ) -> Result<Server, String> {
        Self::launch(dir, env, addr, &[], Some(netns))
    }

    /// Starts the server again on the same address and data directory.
    pub fn restart(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let mut last = String::new();
        // The old socket may linger for a moment: retry the start (bounded,
        // 50 attempts 100 ms apart).
        for _ in 0..50 {
            match Self::launch(&self.dir, &self.env, &self.addr, &[], self.netns.as_deref()) {
                Ok(s) => {
                    *self = s;
                    return;
                }
                Err(e) => last = e,
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("server did not restart: {last}");
    }

    /// Sends `signal` (e.g. "STOP", "CONT") to the server process.
    /// A signal that cannot be sent fails the test: a pause that never
    /// happened would make a fault test test nothing.
    pub fn signal(&self, signal: &str) {
        let st = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status()
            .expect("run kill");
        assert!(st.success(), "kill -{signal} {}: {st}", self.pid());
    }

    fn launch(
        dir: &Path,
        env: &[(String, String)],
        addr: &str,
        extra: &[&str],
        netns: Option<&str>,
    ) -> Result<Server, String> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.with_extension("log"))
            .expect("log file");
        let mut cmd = match netns {
            // `ip netns exec` execs the program: the child is the server itself.
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(kms_bin());
                c
            }
            None => Command::new(kms_bin()),
        };
        let mut child = cmd
            .arg("server")
            .args(["--addr", addr])
            .args(extra)
            .arg(dir)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("spawn kms server");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut banner = String::new();
            let mut sent = false;
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if !sent {
                    banner.push_str(&line);
                    banner.push('\n');
                    if line.contains("root API key") {
                        let _ = tx.send(banner.clone());
                        sent = true;
                    }
                }
            }
        });
        let banner = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(b) => b,
            Err(_) => {
                let status = child.wait_timeout(Duration::from_secs(5));
                if status.is_none() {
                    let _ = child.kill();
                }
                let log = std::fs::read_to_string(dir.with_extension("log")).unwrap_or_default();
                return Err(format!(
                    "exit code {:?}; log:\n{log}",
                    status.and_then(|s| s.code())
                ));
            }
        };
        let addr = banner
            .lines()
            .find_map(|l| l.split("listening on https://").nth(1))
            .expect("address in banner")
            .trim()
            .to_string();
        let root_key = hsm_root_key(env);
        Ok(Server {
            child: Some(child),
            addr,
            dir: dir.to_path_buf(),
            env: env.to_vec(),
            root_key,
            stdout: banner,
            netns: netns.map(str::to_string),
        })
    }

    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// The server's log so far (every start of this data directory).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.with_extension("log")).unwrap_or_default()
    }

    /// Whether the process is still running.
    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Waits for the process to exit on its own; its exit code.
    pub fn wait_exit(&mut self, d: Duration) -> Option<i32> {
        let mut c = self.child.take()?;
        let r = c.wait_timeout(d).and_then(|s| s.code());
        if r.is_none() {
            let _ = c.kill();
            let _ = c.wait();
        }
        r
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// A client for this server authenticating with `key`.
    pub fn client(&self, key: &ApiKey) -> Client {
        Client::new(ClientConfig {
            endpoints: vec![self.url()],
            api_key: key.clone(),
            trust: Trust::Insecure,
            timeout: Duration::from_secs(60),
        })
        .expect("client")
    }

    /// A client authenticating as the root identity.
    pub fn root(&self) -> Client {
        self.client(&self.root_key)
    }

    /// Runs the `kms` CLI against this server as `key` (root if None).
    pub fn cli(&self, key: Option<&ApiKey>, args: &[&str]) -> Output {
        let key = key.cloned().unwrap_or_else(|| self.root_key.clone());
        let mut cmd = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(kms_bin());
                c
            }
            None => Command::new(kms_bin()),
        };
        cmd.args(args)
            .env("KMS_SERVER", self.url())
            .env("KMS_API_KEY", &*key.to_secret_string())
            .env("KMS_INSECURE", "1")
            .env_remove("KMS_ENCLAVE")
            .output()
            .expect("run kms")
    }

    /// Stops the server with SIGTERM and waits for it to exit.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        let st = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(st.success(), "kill -TERM {}: {st}", child.id());
        child
            .wait_timeout(Duration::from_secs(30))
            .expect("server exits after SIGTERM")
    }

    /// Kills the server with SIGKILL.
    pub fn kill9(&mut self) {
        let mut child = self.child.take().expect("running");
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

trait WaitTimeout {
    fn wait_timeout(&mut self, d: Duration) -> Option<std::process::ExitStatus>;
}

impl WaitTimeout for Child {
    fn wait_timeout(&mut self, d: Duration) -> Option<std::process::ExitStatus> {
        let end = Instant::now() + d;
        while Instant::now() < end {
            if let Ok(Some(s)) = self.try_wait() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

/// Fast replication timing for tests: 50 ms heartbeats, 500 ms election timeout.
pub fn fast_timing(hsm_key: &str) -> Vec<(String, String)> {
    vec![
        ("KMS_HSM_KEY".to_string(), hsm_key.to_string()),
        ("KMS_HEARTBEAT_MS".to_string(), "50".to_string()),
        ("KMS_ELECTION_MS".to_string(), "500".to_string()),
    ]
}

/// `n` servers with the same HSM key, joined into one cluster with `kms add`
/// (run against the first).
pub fn cluster(tmp: &tempfile::TempDir, n: usize, hsm_key: &str) -> Vec<Server> {
    let env = fast_timing(hsm_key);
    let nodes: Vec<Server> = (0..n)
        .map(|i| {
            Server::try_start_env(&tmp.path().join(format!("node{i}")), &env, &[])
                .unwrap_or_else(|e| panic!("node {i} did not start: {e}"))
        })
        .collect();
    for s in &nodes[1..] {
        ok(&nodes[0].cli(None, &["add", &s.url()]));
    }
    nodes
}

/// Retries `f` every 50 ms until it returns Some, for at most `d`.
pub fn eventually<T>(d: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let end = Instant::now() + d;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() > end {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Polls `cond` every 20 ms until it holds, for at most `timeout`; panics
/// naming `what` (and how long it waited) if it never does. Returns how long
/// it took. For waits on observable state instead of sleeps.
#[track_caller]
pub fn wait_until(timeout: Duration, what: &str, mut cond: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    loop {
        if cond() {
            return start.elapsed();
        }
        if start.elapsed() > timeout {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Asserts that a CLI run succeeded and returns its stdout.
pub fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "kms failed ({}):\nstdout: {}\nstderr: {}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Asserts that a CLI run failed and returns its stderr.
pub fn fails(o: &Output) -> String {
    assert!(
        !o.status.success(),
        "kms unexpectedly succeeded: {}",
        String::from_utf8_lossy(&o.stdout)
    );
    let e = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(
        e.starts_with("kms: "),
        "error is not one `kms: ...` line: {e}"
    );
    assert!(!e.contains("panicked"), "panic: {e}");
    e
}

/// A fresh data directory inside a temporary directory.
pub fn data_dir(tmp: &tempfile::TempDir, name: &str) -> PathBuf {
    tmp.path().join(name)
}

/// A tokio runtime for a test.
pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// Every key version's secret held in a backup, opened with the software HSM
/// `hsm_key`: what must never appear on disk in plaintext.
pub fn backup_secrets(blob: &[u8], hsm_key: &str) -> Vec<Vec<u8>> {
    let hsm = SoftHsm::from_key_str(hsm_key).expect("valid HSM key");
    let (st, _) = kms_node::backup::open_with(&hsm, blob).expect("open backup");
    let mut out = Vec::new();
    for e in st.enclaves.values() {
        for ring in e.keys.values() {
            for v in ring.versions.values() {
                out.push(v.secret.to_vec());
            }
        }
    }
    out
}

/// Creates a throw-away SoftHSM2 token labelled `label` in `dir` with
/// softhsm-fixtures/create-token.sh (importing `key_file` if given) and
/// returns the settings it prints, as environment variables.
pub fn softhsm_token(dir: &Path, label: &str, key_file: Option<&Path>) -> Vec<(String, String)> {
    let script = // At run time: the target directory is shared between checkouts (CI
    // clones), and a binary built in another checkout embeds that one's path.
    Path::new(&std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").into()))
        .join("../softhsm-fixtures/create-token.sh");
    let mut cmd = Command::new(script);
    cmd.arg(dir)
        .args(["--label", label, "--key-label", &format!("{label}-key")]);
    if let Some(k) = key_file {
        cmd.arg("--key-file").arg(k);
    }
    let out = cmd.output().expect("run create-token.sh");
    assert!(
        out.status.success(),
        "create-token.sh failed (is SoftHSM2 installed? scripts/setup.sh --test): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("UTF-8")
        .lines()
        .filter_map(|l| l.strip_prefix("export "))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Environment for a software HSM key.
pub fn soft_env(hsm_key: &str) -> Vec<(String, String)> {
    vec![("KMS_HSM_KEY".to_string(), hsm_key.to_string())]
}

/// Every file under `dir` and its bytes: to check that nothing changed, or
/// that some bytes appear nowhere.
/// Copies the directory tree `from` to `to`.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), &dest).unwrap();
        }
    }
}

/// Copies a stopped node's data directory `data` to `to` as a golden
/// fixture: without the self-signed TLS certificate (made again at start)
/// and RocksDB's info logs, which are not part of the format.
pub fn save_fixture_data_dir(data: &Path, to: &Path) {
    copy_dir(data, to);
    std::fs::remove_dir_all(to.join("tls")).unwrap();
    for e in std::fs::read_dir(to.join("db")).unwrap() {
        let p = e.unwrap().path();
        if p.file_name().unwrap().to_string_lossy().starts_with("LOG") {
            std::fs::remove_file(p).unwrap();
        }
    }
}

pub fn dir_snapshot(dir: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    let mut out = std::collections::BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("readable dir") {
            let p = e.expect("dir entry").path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.insert(
                    p.display().to_string(),
                    std::fs::read(&p).expect("readable file"),
                );
            }
        }
    }
    out
}

/// Runs an external tool and returns what it did.
pub fn run(cmd: &mut Command) -> Output {
    cmd.output().unwrap_or_else(|e| panic!("run {cmd:?}: {e}"))
}

/// Runs an external tool, asserts that it succeeded and printed no panic
/// (the module's, caught or not), and returns its stdout and stderr.
pub fn success(cmd: &mut Command) -> String {
    let out = run(cmd);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!text.contains("panicked"), "{cmd:?}: {text}");
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{text}",
        out.status
    );
    text
}

/// The name of the `i`th key made by [`create_keys`]: `key-0000042`.
pub fn key_name(i: usize) -> String {
    format!("key-{i:07}")
}

/// Creates enclave `enclave` and `keys` AES keys in it named by
/// [`key_name`], through the API: 4 clients sending batches of 500
/// KEY:CREATE frames. How long it took.
pub fn create_keys(c: &Client, enclave: &str, keys: usize) -> Duration {
    use kms_client::{proto, Command};
    let t = Instant::now();
    rt().block_on(async {
        c.create_enclave(enclave).await.unwrap();
        let mut tasks = Vec::new();
        for w in 0..4 {
            let (c, enclave) = (c.clone(), enclave.to_string());
            tasks.push(tokio::spawn(async move {
                for chunk in (w * keys / 4..(w + 1) * keys / 4)
                    .collect::<Vec<_>>()
                    .chunks(500)
                {
                    let reqs: Vec<_> = chunk
                        .iter()
                        .map(|i| proto::CreateKeyRequest {
                            name: key_name(*i),
                            ..Default::default()
                        })
                        .collect();
                    let _: Vec<proto::Empty> = c
                        .batch(Some(&enclave), Command::KeyCreate, &reqs)
                        .await
                        .unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    });
    t.elapsed()
}
