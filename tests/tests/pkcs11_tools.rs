//! Unmodified tools signing with cluster keys through `libkms_pkcs11.so`
//! over a live node, beyond what `pkcs11_asym.rs` covers: OpenSSH (`ssh-keygen
//! -D` against `kms pubkey`, and a real `sshd` on loopback accepting `ssh -I`
//! with an EC and an RSA cluster key and refusing an unauthorized one);
//! OpenSSL through the libp11 engine (`s_server` serving TLS 1.3 with the
//! cluster key to `s_client`, CSRs verified by `openssl req -verify`,
//! `pkeyutl` PKCS#1 v1.5 and PSS signatures verified with the exported
//! public key); GnuTLS `p11tool --generate-privkey` and `--test-sign`; ML-DSA
//! signatures (module and API) checked by PyPI `dilithium-py`; and bad input
//! with exact `CKR_*` codes and exact API errors.
//!
//! Every external process runs under `timeout`; every wait loop is bounded.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::dsa::{HedgeType, SignAdditionalContext};
use cryptoki::mechanism::eddsa::{EddsaParams, EddsaSignatureScheme};
use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsPssParams};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, MlDsaParameterSetType, ObjectHandle};
use cryptoki::session::Session;
use kms_client::proto;
use kms_tests::pkcs11::{dead_port, load, module_path, rw, write_config, KmsNode, ENCLAVE};
use kms_tests::{fails, ok, rt};
use sha2::Digest;

/// The tests that load the module in this process (one `C_Initialize` at a
/// time; nextest runs each test in its own process anyway).
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Seconds any one external tool may run.
const TOOL_TIMEOUT: u64 = 120;

/// `prog` under coreutils `timeout` (killed after [`TOOL_TIMEOUT`] s, then
/// SIGKILL 5 s later).
fn timed(prog: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut c = Command::new("timeout");
    c.args(["-k", "5", &TOOL_TIMEOUT.to_string()]).arg(prog);
    c
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run {cmd:?}: {e}"));
    assert!(!text(&out).contains("panicked"), "{cmd:?}: {}", text(&out));
    assert_ne!(out.status.code(), Some(124), "{cmd:?} timed out");
    out
}

/// Runs `cmd`, asserts success, returns stdout and stderr together.
fn success(cmd: &mut Command) -> String {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}",
        out.status,
        text(&out)
    );
    text(&out)
}

/// Runs `cmd`, asserts success, returns stdout only.
fn stdout(cmd: &mut Command) -> String {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}",
        out.status,
        text(&out)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn openssl(args: &[&str]) -> String {
    success(timed("openssl").args(args))
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> String {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p.to_str().unwrap().to_string()
}

fn path(dir: &Path, name: &str) -> String {
    dir.join(name).to_str().unwrap().to_string()
}

/// A background process, killed and reaped when dropped.
struct Bg(Child);

impl Drop for Bg {
    fn drop(&mut self) {
        // Most are `timeout ... CMD`: SIGTERM reaches CMD through `timeout`,
        // where a SIGKILL of `timeout` would leave CMD running (an orphaned
        // ssh-agent once held the build lock of the machine for minutes).
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits (at most 20 s, polling) until `file` contains `what`.
fn wait_for_text(file: &Path, what: &str, bg: &mut Bg) -> String {
    let start = Instant::now();
    loop {
        let t = std::fs::read_to_string(file).unwrap_or_default();
        if t.contains(what) {
            return t;
        }
        if let Ok(Some(st)) = bg.0.try_wait() {
            panic!("the server exited ({st}) before '{what}':\n{t}");
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "no '{what}' after 20 s:\n{t}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A module configuration for `node` that shows only `enclaves`.
fn config_for(node: &KmsNode, name: &str, enclaves: &[&str]) -> PathBuf {
    let p = node.tmp.path().join(name);
    let list: Vec<String> = enclaves.iter().map(|e| format!("\"{e}\"")).collect();
    write_config(
        &p,
        &[node.server.url()],
        &node.server.root_key,
        &format!("enclaves = [{}]\n", list.join(", ")),
    );
    p
}

/// `kms add-key --type TYPE NAME` in `enclave`, and its public key (PEM
/// from `kms pubkey`) written to DIR/NAME.pub.pem, whose path is returned.
fn cli_key(node: &KmsNode, enclave: &str, ty: &str, name: &str) -> String {
    ok(&node
        .server
        .cli(None, &["add-key", "--enclave", enclave, "--type", ty, name]));
    let pem = ok(&node
        .server
        .cli(None, &["pubkey", "--enclave", enclave, name]));
    assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----\n"), "{pem}");
    write(node.tmp.path(), &format!("{name}.pub.pem"), pem.as_bytes())
}

fn is_root() -> bool {
    std::fs::metadata("/proc/self").map(|m| m.uid()).ok() == Some(0)
}

/// `TYPE BLOB` of an OpenSSH public key line `TYPE BLOB [COMMENT]`.
fn ssh_key(line: &str) -> String {
    let f: Vec<&str> = line.split_whitespace().take(2).collect();
    assert_eq!(f.len(), 2, "{line}");
    f.join(" ")
}

// ---------------------------------------------------------------- OpenSSH

/// OpenSSH with cluster keys: `ssh-keygen -D` prints exactly the EC and RSA
/// keys `kms pubkey` gives (converted by `ssh-keygen -i -m PKCS8`); a real
/// `sshd` on loopback (own config and host key, free port) accepts `ssh -I
/// libkms_pkcs11.so` with an EC and (through `PKCS11Provider` in an
/// ssh_config) an RSA cluster key, each alone in its enclave, and refuses a
/// cluster key that is not in authorized_keys.
/// No PIN is asked: with the default `login = "any"` the token needs no
/// login, and ssh signs with the key it finds.
#[test]
fn openssh_ssh_keygen_and_sshd_with_cluster_keys() {
    let sshd = Path::new("/usr/sbin/sshd");
    if !sshd.exists() {
        assert!(
            !is_root(),
            "/usr/sbin/sshd is missing: scripts/setup.sh --test installs openssh-server"
        );
        eprintln!("SKIPPED: /usr/sbin/sshd is missing and this user cannot install it");
        return;
    }
    let node = KmsNode::start("");
    let dir = node.tmp.path();
    let module = std::fs::canonicalize(module_path()).unwrap();
    for e in ["ssh-ec", "ssh-rsa", "ssh-other"] {
        ok(&node.server.cli(None, &["add-enclave", e]));
    }
    let ec_pem = cli_key(&node, "ssh-ec", "ec-p256", "login-ec");
    let rsa_pem = cli_key(&node, "ssh-rsa", "rsa-2048", "login-rsa");
    let other_pem = cli_key(&node, "ssh-other", "ec-p384", "not-authorized");
    // The OpenSSH form of each public key, from the cluster's PEM.
    let to_ssh = |pem: &str| -> String {
        let out = stdout(timed("ssh-keygen").args(["-i", "-m", "PKCS8", "-f", pem]));
        let line = out.trim().to_string();
        assert_eq!(line.lines().count(), 1, "{out}");
        line
    };
    let ec_ssh = to_ssh(&ec_pem);
    let rsa_ssh = to_ssh(&rsa_pem);
    let other_ssh = to_ssh(&other_pem);
    assert!(ec_ssh.starts_with("ecdsa-sha2-nistp256 AAAA"), "{ec_ssh}");
    assert!(rsa_ssh.starts_with("ssh-rsa AAAA"), "{rsa_ssh}");
    assert!(
        other_ssh.starts_with("ecdsa-sha2-nistp384 AAAA"),
        "{other_ssh}"
    );

    // ssh-keygen -D prints exactly these keys, one line each, with the
    // key name (CKA_LABEL) as the comment.
    let both = config_for(&node, "both.toml", &["ssh-ec", "ssh-rsa"]);
    let listed = stdout(
        timed("ssh-keygen")
            .env("KMS_PKCS11_CONFIG", &both)
            .arg("-D")
            .arg(&module),
    );
    let mut got: Vec<&str> = listed.lines().collect();
    got.sort();
    let ec_line = format!("{} login-ec", ssh_key(&ec_ssh));
    let rsa_line = format!("{} login-rsa", ssh_key(&rsa_ssh));
    let mut want = vec![ec_line.as_str(), rsa_line.as_str()];
    want.sort();
    assert_eq!(got, want, "ssh-keygen -D:\n{listed}");
    eprintln!("ssh-keygen -D:\n{listed}");

    // sshd: own host key, config, authorized_keys (EC and RSA keys only).
    let host_key = path(dir, "host_ed25519");
    success(timed("ssh-keygen").args(["-q", "-t", "ed25519", "-N", "", "-f", &host_key]));
    let auth = write(
        dir,
        "authorized_keys",
        format!("{ec_ssh} login-ec\n{rsa_ssh} login-rsa\n").as_bytes(),
    );
    let user = stdout(timed("id").arg("-un")).trim().to_string();
    if is_root() {
        // sshd's privilege separation directory (Debian's init script makes it).
        std::fs::create_dir_all("/run/sshd").unwrap();
    }
    let port = dead_port();
    let cfg = write(
        dir,
        "sshd_config",
        format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {host_key}\nPidFile none\n\
             StrictModes no\nUsePAM no\nAuthorizedKeysFile {auth}\nPubkeyAuthentication yes\n\
             PasswordAuthentication no\nKbdInteractiveAuthentication no\n\
             PermitRootLogin prohibit-password\nLogLevel VERBOSE\n"
        )
        .as_bytes(),
    );
    let log = dir.join("sshd.log");
    let mut server = Bg(Command::new(sshd)
        .args(["-D", "-e", "-f", &cfg])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("start sshd"));
    wait_for_text(
        &log,
        &format!("Server listening on 127.0.0.1 port {port}"),
        &mut server,
    );

    // `ssh -I MODULE`, or (`in_config`) `PKCS11Provider MODULE` in an
    // ssh_config file.
    let ssh_config = write(
        dir,
        "ssh_config",
        format!("Host *\n    PKCS11Provider {}\n", module.display()).as_bytes(),
    );
    let ssh = |config: &Path, verbose: bool, in_config: bool| -> Output {
        let mut c = timed("ssh");
        c.env("KMS_PKCS11_CONFIG", config)
            .env_remove("SSH_AUTH_SOCK");
        if in_config {
            c.args(["-F", &ssh_config]);
        } else {
            c.args(["-F", "/dev/null", "-I"]).arg(&module);
        }
        c.args([
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "IdentityAgent=none",
            "-o",
            "PasswordAuthentication=no",
            "-o",
            "ConnectTimeout=20",
            "-p",
            &port.to_string(),
        ]);
        if verbose {
            c.arg("-v");
        }
        c.arg(format!("{user}@127.0.0.1")).args(["echo", "hello"]);
        run(&mut c)
    };
    // The sshd log names each accepted key by its fingerprint.
    let fingerprint = |line: &str, name: &str| -> String {
        let f = write(
            dir,
            &format!("{name}.ssh.pub"),
            format!("{line}\n").as_bytes(),
        );
        let l = stdout(timed("ssh-keygen").args(["-l", "-f", &f]));
        l.split_whitespace().nth(1).unwrap().to_string()
    };
    for (enclave, line, kind, in_config) in [
        ("ssh-ec", &ec_ssh, "ECDSA", false),
        ("ssh-rsa", &rsa_ssh, "RSA", true),
    ] {
        let c = config_for(&node, &format!("{enclave}.toml"), &[enclave]);
        let out = ssh(&c, false, in_config);
        assert!(out.status.success(), "ssh with {enclave}:\n{}", text(&out));
        assert_eq!(String::from_utf8_lossy(&out.stdout), "hello\n");
        let fp = fingerprint(line, enclave);
        let accepted = format!("Accepted publickey for {user} from 127.0.0.1");
        // (The session may end before sshd's log line is written: wait for it.)
        let line = format!("{accepted} port");
        let key = format!("ssh2: {kind} {fp}");
        let start = Instant::now();
        loop {
            let t = std::fs::read_to_string(&log).unwrap_or_default();
            if t.lines().any(|l| l.contains(&line) && l.ends_with(&key)) {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "no '{line} ... {key}' in the sshd log:\n{t}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    // A cluster key not in authorized_keys: offered, refused.
    let c = config_for(&node, "ssh-other.toml", &["ssh-other"]);
    let out = ssh(&c, true, false);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(255), "{t}");
    assert!(t.contains("Permission denied (publickey)"), "{t}");
    let fp = fingerprint(&other_ssh, "ssh-other");
    assert!(
        t.lines()
            .any(|l| l.contains("Offering public key") && l.contains(&format!("ECDSA {fp}"))),
        "the cluster key was not offered:\n{t}"
    );
    assert!(String::from_utf8_lossy(&out.stdout).is_empty());

    // login = "api-key": the PIN is the API key, and OpenSSH logs in only
    // when it has a PIN, so the module goes to ssh-agent (`ssh-add -s`
    // asks for the PIN through SSH_ASKPASS) and ssh uses the agent.
    // (No api_key in the file: the module has no identity before C_Login.)
    let api = write(
        dir,
        "api-key.toml",
        format!(
            "servers = [\"{}\"]\ninsecure = true\nenclaves = [\"ssh-ec\", \"ssh-rsa\"]\n\
             login = \"api-key\"\n",
            node.server.url()
        )
        .as_bytes(),
    );
    // Nothing is visible before login.
    let listed = run(timed("ssh-keygen")
        .env("KMS_PKCS11_CONFIG", &api)
        .arg("-D")
        .arg(&module));
    assert!(
        String::from_utf8_lossy(&listed.stdout).is_empty(),
        "{}",
        text(&listed)
    );
    let sock = dir.join("agent.sock");
    let mut agent = Bg(Command::new("timeout")
        .args(["-k", "5", "300", "ssh-agent", "-D", "-a"])
        .arg(&sock)
        .arg("-P")
        .arg(format!("{}/*", module.parent().unwrap().display()))
        .env("KMS_PKCS11_CONFIG", &api)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start ssh-agent"));
    let start = Instant::now();
    while !sock.exists() {
        assert!(agent.0.try_wait().unwrap().is_none(), "ssh-agent exited");
        assert!(start.elapsed() < Duration::from_secs(20), "no agent socket");
        std::thread::sleep(Duration::from_millis(50));
    }
    let askpass = |name: &str, pin: &str| -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let p = dir.join(name);
        std::fs::write(&p, format!("#!/bin/sh\necho '{pin}'\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o700)).unwrap();
        p
    };
    let ssh_add = |askpass: &Path| {
        run(timed("ssh-add")
            .env("SSH_AUTH_SOCK", &sock)
            .env("SSH_ASKPASS", askpass)
            .env("SSH_ASKPASS_REQUIRE", "force")
            .env("DISPLAY", ":0")
            .arg("-s")
            .arg(&module))
    };
    // A wrong PIN (an API key the cluster does not know) adds nothing.
    let wrong = kms_client::ApiKey::generate();
    let out = ssh_add(&askpass("askpass-wrong", &wrong.to_secret_string()));
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("Could not add card"), "{}", text(&out));
    let out = ssh_add(&askpass(
        "askpass",
        &node.server.root_key.to_secret_string(),
    ));
    assert!(out.status.success(), "{}", text(&out));
    let keys = stdout(timed("ssh-add").env("SSH_AUTH_SOCK", &sock).arg("-L"));
    let mut got: Vec<String> = keys.lines().map(ssh_key).collect();
    got.sort();
    let mut want = vec![ssh_key(&ec_ssh), ssh_key(&rsa_ssh)];
    want.sort();
    assert_eq!(got, want, "{keys}");
    let out = run(timed("ssh")
        .env("SSH_AUTH_SOCK", &sock)
        .args([
            "-F",
            "/dev/null",
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "PasswordAuthentication=no",
            "-p",
            &port.to_string(),
        ])
        .arg(format!("{user}@127.0.0.1"))
        .args(["echo", "hello", "agent"]));
    assert!(
        out.status.success(),
        "ssh through the agent:\n{}",
        text(&out)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello agent\n");
    drop(agent);
    drop(server);
}

// ---------------------------------------------------------------- OpenSSL

/// The libp11 engine, as Debian's `libengine-pkcs11-openssl` installs it.
fn engine() -> PathBuf {
    let e = Path::new("/usr/lib/x86_64-linux-gnu/engines-3/pkcs11.so");
    assert!(
        e.exists(),
        "{} is missing: scripts/setup.sh --test installs libengine-pkcs11-openssl",
        e.display()
    );
    e.to_path_buf()
}

/// An OpenSSL configuration that loads the libp11 engine on our module.
fn engine_conf(dir: &Path) -> String {
    write(
        dir,
        "openssl-engine.cnf",
        format!(
            "openssl_conf = init\n[init]\nengines = engines\n[engines]\npkcs11 = p11\n\
             [p11]\nengine_id = pkcs11\ndynamic_path = {}\nMODULE_PATH = {}\nPIN = 1234\ninit = 0\n",
            engine().display(),
            module_path().display()
        )
        .as_bytes(),
    )
}

/// `openssl ARGS` with the engine configuration and the module's.
fn openssl_engine(conf: &str, cfg: &Path) -> Command {
    let mut c = timed("openssl");
    c.env("OPENSSL_CONF", conf).env("KMS_PKCS11_CONFIG", cfg);
    c
}

/// OpenSSL with cluster keys through the libp11 engine: per EC and RSA key,
/// a CSR verified by `openssl req -verify` (its public key is the cluster's),
/// a self-signed certificate, and `openssl s_server` holding the key serving
/// TLS 1.3 to `openssl s_client -verify_return_error` (RSA: RSA-PSS, as TLS
/// 1.3 requires); `pkeyutl -sign` with PKCS#1 v1.5 and PSS verified with
/// `kms pubkey`'s key. An Ed25519 CSR comes from GnuTLS `certtool` (libp11
/// 0.4.12 has no Ed25519, and Debian 12 has no `pkcs11-provider`) and
/// `openssl req -verify` checks it.
#[test]
fn openssl_tls13_server_csr_and_pkeyutl_with_cluster_keys() {
    let node = KmsNode::start("");
    let dir = node.tmp.path();
    let cfg = &node.config;
    let conf = engine_conf(dir);
    ok(&node.server.cli(None, &["add-enclave", "edwards"]));
    let keys = [
        (
            "tls-ec",
            cli_key(&node, ENCLAVE, "ec-p256", "tls-ec"),
            "ECDSA",
        ),
        (
            "tls-rsa",
            cli_key(&node, ENCLAVE, "rsa-2048", "tls-rsa"),
            "RSA-PSS",
        ),
    ];
    for (name, pubf, peer_sig) in &keys {
        let uri = format!("pkcs11:token={ENCLAVE};object={name};type=private");
        // A CSR, verified, carrying the cluster's public key.
        let csr = path(dir, &format!("{name}.csr"));
        success(openssl_engine(&conf, cfg).args([
            "req",
            "-new",
            "-engine",
            "pkcs11",
            "-keyform",
            "engine",
            "-key",
            &uri,
            "-subj",
            &format!("/CN={name}"),
            "-sha256",
            "-out",
            &csr,
        ]));
        let v = openssl(&["req", "-verify", "-in", &csr, "-noout"]);
        assert!(v.contains("verify OK"), "{name}: {v}");
        let csr_pub = stdout(timed("openssl").args(["req", "-in", &csr, "-pubkey", "-noout"]));
        assert_eq!(csr_pub, std::fs::read_to_string(pubf).unwrap(), "{name}");

        // A self-signed server certificate for 127.0.0.1.
        let crt = path(dir, &format!("{name}.crt"));
        success(openssl_engine(&conf, cfg).args([
            "req",
            "-new",
            "-x509",
            "-engine",
            "pkcs11",
            "-keyform",
            "engine",
            "-key",
            &uri,
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-days",
            "1",
            "-sha256",
            "-out",
            &crt,
        ]));
        openssl(&["verify", "-CAfile", &crt, &crt]);

        // s_server holds the cluster key; s_client verifies the handshake
        // and reads the server's page.
        let port = dead_port();
        let log = dir.join(format!("{name}-s_server.log"));
        let mut server = Bg(Command::new("timeout")
            .args(["-k", "5", &TOOL_TIMEOUT.to_string(), "openssl"])
            .env("OPENSSL_CONF", &conf)
            .env("KMS_PKCS11_CONFIG", cfg)
            .args([
                "s_server", "-engine", "pkcs11", "-keyform", "engine", "-key", &uri, "-cert", &crt,
                "-accept",
            ])
            .arg(format!("127.0.0.1:{port}"))
            .args(["-tls1_3", "-naccept", "1", "-www"])
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(Stdio::null())
            .spawn()
            .expect("start s_server"));
        wait_for_text(&log, "ACCEPT", &mut server);
        let mut client = timed("openssl")
            .args([
                "s_client",
                "-connect",
                &format!("127.0.0.1:{port}"),
                "-CAfile",
                &crt,
                "-verify_return_error",
                "-verify_ip",
                "127.0.0.1",
                "-tls1_3",
                "-ign_eof",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start s_client");
        {
            use std::io::Write;
            let mut stdin = client.stdin.take().unwrap();
            stdin.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
        }
        let out = client.wait_with_output().unwrap();
        let t = text(&out);
        assert!(out.status.success(), "s_client with {name}:\n{t}");
        for want in [
            "Verify return code: 0 (ok)",
            "New, TLSv1.3, Cipher is TLS_AES_256_GCM_SHA384",
            &format!("Peer signature type: {peer_sig}"),
            "HTTP/1.0 200 ok",
        ] {
            assert!(t.contains(want), "{name}: no '{want}' in:\n{t}");
        }
        // The server sent its first line after the handshake.
        let first = String::from_utf8_lossy(&out.stdout)
            .lines()
            .find(|l| l.starts_with("HTTP/"))
            .map(str::to_string);
        assert_eq!(first.as_deref(), Some("HTTP/1.0 200 ok"), "{t}");
        let _ = server.0.wait();
    }

    // pkeyutl: PKCS#1 v1.5 and PSS through the engine, verified with the
    // public key the cluster exports.
    let rsa_pub = &keys[1].1;
    let uri = format!("pkcs11:token={ENCLAVE};object=tls-rsa;type=private");
    let digest = write(
        dir,
        "digest",
        &sha2::Sha256::digest(b"pkeyutl through the engine"),
    );
    let pkcs1 = ["-pkeyopt", "digest:sha256"];
    let pss = [
        "-pkeyopt",
        "rsa_padding_mode:pss",
        "-pkeyopt",
        "digest:sha256",
        "-pkeyopt",
        "rsa_pss_saltlen:32",
        "-pkeyopt",
        "rsa_mgf1_md:sha256",
    ];
    let verify = |sig: &str, opts: &[&str]| -> bool {
        let mut c = timed("openssl");
        c.args([
            "pkeyutl", "-verify", "-pubin", "-inkey", rsa_pub, "-in", &digest, "-sigfile", sig,
        ])
        .args(opts);
        run(&mut c).status.success()
    };
    let mut sigs = Vec::new();
    for (label, opts) in [("pkcs1", &pkcs1[..]), ("pss", &pss[..])] {
        let sig = path(dir, &format!("{label}.sig"));
        success(
            openssl_engine(&conf, cfg)
                .args([
                    "pkeyutl", "-engine", "pkcs11", "-keyform", "engine", "-sign", "-inkey", &uri,
                    "-in", &digest, "-out", &sig,
                ])
                .args(opts),
        );
        assert_eq!(std::fs::metadata(&sig).unwrap().len(), 256);
        assert!(verify(&sig, opts), "{label} signature does not verify");
        sigs.push(sig);
    }
    // Each padding is what it claims: neither verifies as the other.
    assert!(
        !verify(&sigs[0], &pss),
        "a PKCS#1 signature verified as PSS"
    );
    assert!(
        !verify(&sigs[1], &pkcs1),
        "a PSS signature verified as PKCS#1"
    );
    // Two PSS signatures of one digest differ (random salt), both verify.
    let sig2 = path(dir, "pss2.sig");
    success(
        openssl_engine(&conf, cfg)
            .args([
                "pkeyutl", "-engine", "pkcs11", "-keyform", "engine", "-sign", "-inkey", &uri,
                "-in", &digest, "-out", &sig2,
            ])
            .args(pss),
    );
    assert!(verify(&sig2, &pss));
    assert_ne!(
        std::fs::read(&sig2).unwrap(),
        std::fs::read(&sigs[1]).unwrap()
    );
    // The EC key: pkeyutl signature verified with its exported key.
    let ec_uri = format!("pkcs11:token={ENCLAVE};object=tls-ec;type=private");
    let ec_sig = path(dir, "ec.sig");
    success(openssl_engine(&conf, cfg).args([
        "pkeyutl", "-engine", "pkcs11", "-keyform", "engine", "-sign", "-inkey", &ec_uri, "-in",
        &digest, "-out", &ec_sig,
    ]));
    openssl(&[
        "pkeyutl", "-verify", "-pubin", "-inkey", &keys[0].1, "-in", &digest, "-sigfile", &ec_sig,
    ]);

    // Ed25519: a CSR made by GnuTLS certtool through the module (in its own
    // enclave: libp11 cannot enumerate a token holding an Ed25519 key),
    // verified by OpenSSL, with the cluster's public key.
    let ed_pub = cli_key(&node, "edwards", "ed25519", "csr-ed");
    let tmpl = write(dir, "req.tmpl", b"cn = csr-ed\n");
    let csr = path(dir, "ed.csr");
    success(
        timed("certtool")
            .env("KMS_PKCS11_CONFIG", cfg)
            .env("GNUTLS_PIN", "1234")
            .arg("--provider")
            .arg(module_path())
            .args([
                "--generate-request",
                "--load-privkey",
                "pkcs11:token=edwards;object=csr-ed;type=private",
                "--template",
                &tmpl,
                "--outfile",
                &csr,
            ]),
    );
    let v = openssl(&["req", "-verify", "-in", &csr, "-noout", "-text"]);
    assert!(v.contains("verify OK"), "{v}");
    assert!(v.contains("Public Key Algorithm: ED25519"), "{v}");
    let csr_pub = stdout(timed("openssl").args(["req", "-in", &csr, "-pubkey", "-noout"]));
    assert_eq!(csr_pub, std::fs::read_to_string(&ed_pub).unwrap());
}

// ---------------------------------------------------------------- GnuTLS

/// `p11tool --generate-privkey` makes cluster keys (EC P-256, P-384, RSA),
/// `kms stat-key` shows them with the public key p11tool printed, and
/// `p11tool --test-sign` passes on each. (p11tool 3.7.9 cannot generate an
/// Ed25519 key on any token: it passes CKM_EDDSA, a signature mechanism, to
/// C_GenerateKeyPair, which SoftHSM2 and this module refuse with
/// CKR_MECHANISM_INVALID; its `--test-sign` always hashes, so not for
/// Ed25519 either. `certtool` signs with Ed25519 cluster keys: see the CSR in
/// the OpenSSL test and `pkcs11_asym.rs`.)
#[test]
fn gnutls_p11tool_generates_and_test_signs() {
    let node = KmsNode::start("");
    let cfg = &node.config;
    let p11tool = || {
        let mut c = timed("p11tool");
        c.env("KMS_PKCS11_CONFIG", cfg)
            .env("GNUTLS_PIN", "1234")
            .arg("--provider")
            .arg(module_path());
        c
    };
    let token = format!("pkcs11:token={ENCLAVE}");
    for (label, args, ty) in [
        (
            "gen-p256",
            &["ECDSA", "--curve", "secp256r1"][..],
            "EC-P256",
        ),
        (
            "gen-p384",
            &["ECDSA", "--curve", "secp384r1"][..],
            "EC-P384",
        ),
        ("gen-rsa", &["RSA", "--bits", "2048"][..], "RSA-2048"),
    ] {
        let out = success(
            p11tool()
                .args(["--login", "--generate-privkey"])
                .args(args)
                .args(["--label", label, &token]),
        );
        assert!(out.contains("-----BEGIN PUBLIC KEY-----"), "{label}: {out}");
        let stat = ok(&node
            .server
            .cli(None, &["stat-key", "--enclave", ENCLAVE, label]));
        assert!(stat.contains(ty), "{label}: {stat}");
        // The public key p11tool printed is the cluster's.
        let pem = ok(&node
            .server
            .cli(None, &["pubkey", "--enclave", ENCLAVE, label]));
        assert!(out.contains(pem.trim()), "{label}: {out}\nvs\n{pem}");
        let uri = format!("{token};object={label};type=private");
        let t = success(p11tool().args(["--login", "--test-sign", &uri]));
        assert!(
            t.contains("Verifying against public key in the token... ok"),
            "{label}: {t}"
        );
    }
}

// ---------------------------------------------------------------- ML-DSA

/// Verifies ML-DSA signatures with PyPI `dilithium-py` (pure Python FIPS
/// 204): one case per line, `set pk ctx msg sig` in hex (`-`: empty
/// context). Each signature must verify, and must not verify with a bit
/// flipped or (with a context) without its context.
const PY_DILITHIUM: &str = r#"
import sys
from dilithium_py.ml_dsa import ML_DSA_44, ML_DSA_65, ML_DSA_87
sets = {1: ML_DSA_44, 2: ML_DSA_65, 3: ML_DSA_87}
good = bad = 0
for line in open(sys.argv[1]):
    ps, pk, ctx, msg, sig = line.split()
    ctx = b"" if ctx == "-" else bytes.fromhex(ctx)
    pk, msg, sig = bytes.fromhex(pk), bytes.fromhex(msg), bytearray.fromhex(sig)
    alg = sets[int(ps)]
    if alg.verify(pk, msg, bytes(sig), ctx=ctx):
        good += 1
    sig[7] ^= 1
    if not alg.verify(pk, msg, bytes(sig), ctx=ctx):
        bad += 1
    sig[7] ^= 1
    if ctx and not alg.verify(pk, msg, bytes(sig), ctx=b""):
        bad += 1
print(f"{good} verified, {bad} refused")
"#;

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The raw ML-DSA public key inside a SubjectPublicKeyInfo PEM (the last
/// `len` bytes of the DER: the BIT STRING's content after its zero byte).
fn mldsa_pk_from_pem(pem: &str, len: usize) -> Vec<u8> {
    let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let der = B64.decode(b64).unwrap();
    assert!(der.len() > len + 20, "{}", der.len());
    der[der.len() - len..].to_vec()
}

/// ML-DSA-44/65/87 signatures made through the module (hedged, with a
/// context, deterministic) and through the API (`kms sign`, with and
/// without `--context`) verify with PyPI `dilithium-py`, an implementation
/// independent of the cluster's and of OpenSSL's.
#[test]
fn ml_dsa_verifies_with_dilithium_py() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let node = KmsNode::start("");
    let dir = node.tmp.path();
    let msg = b"ML-DSA checked by dilithium-py".to_vec();
    let mut cases = String::new();
    let sets = [
        (MlDsaParameterSetType::ML_DSA_44, 1, 1312),
        (MlDsaParameterSetType::ML_DSA_65, 2, 1952),
        (MlDsaParameterSetType::ML_DSA_87, 3, 2592),
    ];
    // Through the module.
    {
        let c = load(&node.config);
        let s = rw(&c);
        for (set, n, pk_len) in sets {
            let label = format!("p11-ml{n}");
            let (pu, pr) = s
                .generate_key_pair(
                    &Mechanism::MlDsaKeyPairGen,
                    &[
                        Attribute::Token(true),
                        Attribute::Label(label.clone().into_bytes()),
                        Attribute::ParameterSet(set.into()),
                    ],
                    &[Attribute::Token(true), Attribute::Sign(true)],
                )
                .unwrap();
            let pk = value(&s, pu);
            assert_eq!(pk.len(), pk_len);
            for (hedge, ctx) in [
                (HedgeType::Preferred, None),
                (HedgeType::Required, Some(&b"module context"[..])),
                (HedgeType::DeterministicRequired, Some(&[0xA5u8; 255][..])),
            ] {
                let m = Mechanism::MlDsa(SignAdditionalContext::new(hedge, ctx));
                let sig = s.sign(&m, pr, &msg).unwrap();
                let ctx = ctx.map(hex).unwrap_or_else(|| "-".into());
                cases.push_str(&format!(
                    "{n} {} {ctx} {} {}\n",
                    hex(&pk),
                    hex(&msg),
                    hex(&sig)
                ));
            }
        }
        drop(s);
        c.p11.finalize().unwrap();
    }
    // Through the API, with the CLI; the public key from `kms pubkey`.
    let text_msg = "ML-DSA through kms sign";
    for (_, n, pk_len) in sets {
        let name = format!("api-ml{n}");
        let ty = ["ml-dsa-44", "ml-dsa-65", "ml-dsa-87"][n - 1];
        let pem_path = cli_key(&node, ENCLAVE, ty, &name);
        let pk = mldsa_pk_from_pem(&std::fs::read_to_string(pem_path).unwrap(), pk_len);
        for ctx in [None, Some("api context")] {
            let mut args = vec!["sign", "--enclave", ENCLAVE, &name, text_msg];
            if let Some(c) = ctx {
                args.extend(["--context", c]);
            }
            let sig = B64
                .decode(ok(&node.server.cli(None, &args)).trim())
                .unwrap();
            let ctx = ctx.map(|c| hex(c.as_bytes())).unwrap_or_else(|| "-".into());
            cases.push_str(&format!(
                "{n} {} {ctx} {} {}\n",
                hex(&pk),
                hex(text_msg.as_bytes()),
                hex(&sig)
            ));
        }
    }
    let f = write(dir, "mldsa-cases", cases.as_bytes());
    let out = success(timed("python3").arg("-c").arg(PY_DILITHIUM).arg(&f));
    // 15 signatures; each refused with a flipped bit, and the 9 with a
    // context refused without it.
    assert!(out.contains("15 verified, 24 refused"), "{out}");
}

// ---------------------------------------------------------------- bad input

fn value(s: &Session, h: ObjectHandle) -> Vec<u8> {
    match s.get_attributes(h, &[AttributeType::Value]).unwrap().pop() {
        Some(Attribute::Value(v)) => v,
        other => panic!("CKA_VALUE: {other:?}"),
    }
}

fn rv<T: std::fmt::Debug>(r: Result<T, CkError>) -> RvError {
    match r {
        Err(CkError::Pkcs11(rv, _)) => rv,
        other => panic!("expected a PKCS#11 error, got {other:?}"),
    }
}

/// The handles of the key pair named `label`: (public, private).
fn find_pair(s: &Session, label: &str) -> (ObjectHandle, ObjectHandle) {
    let find = |class| {
        let v = s
            .find_objects(&[
                Attribute::Class(class),
                Attribute::Label(label.as_bytes().to_vec()),
            ])
            .unwrap();
        assert_eq!(v.len(), 1, "{label}");
        v[0]
    };
    (
        find(cryptoki::object::ObjectClass::PUBLIC_KEY),
        find(cryptoki::object::ObjectClass::PRIVATE_KEY),
    )
}

/// Bad input through the module gives the exact `CKR_*` code, and the same
/// input through the API the exact 4xx and message; nothing crashes and the
/// session keeps working. (`pkcs11_asym.rs` covers CKM_ECDSA_SHA256 and
/// CKM_SHA256_RSA_PKCS on the other key type, a short PSS digest, an
/// over-long CKM_RSA_PKCS input, a malformed and an unknown-curve
/// CKA_EC_PARAMS, 1024-bit RSA, and corrupted ECDSA and RSA PKCS#1
/// signatures; this test adds the rest.)
#[test]
fn bad_input_gives_exact_errors() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let node = KmsNode::start("");
    for (ty, name) in [
        ("ec-p256", "bad-ec"),
        ("ed25519", "bad-ed"),
        ("rsa-2048", "bad-rsa"),
        ("ml-dsa-44", "bad-ml"),
    ] {
        ok(&node
            .server
            .cli(None, &["add-key", "--enclave", ENCLAVE, "--type", ty, name]));
    }
    let c = load(&node.config);
    let s = rw(&c);
    let (ec_pub, ec) = find_pair(&s, "bad-ec");
    let (ed_pub, ed) = find_pair(&s, "bad-ed");
    let (rsa_pub, rsa) = find_pair(&s, "bad-rsa");
    let (ml_pub, ml) = find_pair(&s, "bad-ml");
    let msg = b"bad input".to_vec();
    let eddsa = || Mechanism::Eddsa(EddsaParams::new(EddsaSignatureScheme::Pure));
    let mldsa = || Mechanism::MlDsa(SignAdditionalContext::new(HedgeType::Preferred, None));
    let pss = PkcsPssParams {
        hash_alg: MechanismType::SHA256,
        mgf: PkcsMgfType::MGF1_SHA256,
        s_len: 32.into(),
    };

    // ---- a mechanism for another key type: CKR_KEY_TYPE_INCONSISTENT,
    // at C_SignInit and C_VerifyInit ----
    for (m, key, key_pub) in [
        (Mechanism::Ecdsa, rsa, rsa_pub),
        (Mechanism::Ecdsa, ed, ed_pub),
        (Mechanism::Ecdsa, ml, ml_pub),
        (eddsa(), ec, ec_pub),
        (eddsa(), rsa, rsa_pub),
        (Mechanism::RsaPkcs, ec, ec_pub),
        (Mechanism::RsaPkcsPss(pss), ed, ed_pub),
        (Mechanism::Sha256RsaPkcsPss(pss), ml, ml_pub),
        (mldsa(), ec, ec_pub),
        (mldsa(), rsa, rsa_pub),
        (Mechanism::Sha256Hmac, rsa, rsa_pub),
    ] {
        assert_eq!(
            rv(s.sign_init(&m, key)),
            RvError::KeyTypeInconsistent,
            "sign {m:?}"
        );
        assert_eq!(
            rv(s.verify_init(&m, key_pub)),
            RvError::KeyTypeInconsistent,
            "verify {m:?}"
        );
    }
    // AES with a key pair: the private key does not encrypt at all
    // (CKA_ENCRYPT false); the public one encrypts, with RSA-OAEP only.
    assert_eq!(
        rv(s.encrypt(&Mechanism::AesCbcPad([0; 16]), rsa, &msg)),
        RvError::KeyFunctionNotPermitted
    );
    assert_eq!(
        rv(s.encrypt(&Mechanism::AesCbcPad([0; 16]), rsa_pub, &msg)),
        RvError::KeyTypeInconsistent
    );

    // ---- bad CKA_EC_PARAMS in C_GenerateKeyPair ----
    let ec_gen = |m: &Mechanism, params: Vec<u8>| {
        rv(s.generate_key_pair(
            m,
            &[
                Attribute::Token(true),
                Attribute::Label(b"never-made".to_vec()),
                Attribute::EcParams(params),
            ],
            &[Attribute::Token(true)],
        ))
    };
    for (m, params, want) in [
        // Not DER at all, empty, a truncated OID, an OID with trailing bytes.
        (
            Mechanism::EccKeyPairGen,
            vec![0xff, 0x00],
            RvError::AttributeValueInvalid,
        ),
        (
            Mechanism::EccKeyPairGen,
            vec![],
            RvError::AttributeValueInvalid,
        ),
        (
            Mechanism::EccKeyPairGen,
            vec![0x06, 0x08, 0x2a, 0x86],
            RvError::AttributeValueInvalid,
        ),
        (
            Mechanism::EccKeyPairGen,
            [&b"\x06\x08\x2a\x86\x48\xce\x3d\x03\x01\x07"[..], &[0]].concat(),
            RvError::AttributeValueInvalid,
        ),
        // Well-formed, other curves: P-521 (OID), secp256k1 (name), brainpool.
        (
            Mechanism::EccKeyPairGen,
            b"\x06\x05\x2b\x81\x04\x00\x23".to_vec(),
            RvError::CurveNotSupported,
        ),
        (
            Mechanism::EccKeyPairGen,
            b"\x13\x09secp256k1".to_vec(),
            RvError::CurveNotSupported,
        ),
        (
            Mechanism::EccKeyPairGen,
            b"\x06\x09\x2b\x24\x03\x03\x02\x08\x01\x01\x07".to_vec(),
            RvError::CurveNotSupported,
        ),
        // Ed448 and P-256 for the Edwards mechanism.
        (
            Mechanism::EccEdwardsKeyPairGen,
            b"\x06\x03\x2b\x65\x71".to_vec(),
            RvError::CurveNotSupported,
        ),
        (
            Mechanism::EccEdwardsKeyPairGen,
            b"\x06\x08\x2a\x86\x48\xce\x3d\x03\x01\x07".to_vec(),
            RvError::CurveNotSupported,
        ),
    ] {
        assert_eq!(ec_gen(&m, params.clone()), want, "{m:?} {params:02x?}");
    }
    // edwards25519 with the Weierstrass mechanism is a template mismatch.
    assert_eq!(
        ec_gen(&Mechanism::EccKeyPairGen, b"\x13\x0cedwards25519".to_vec()),
        RvError::TemplateInconsistent
    );

    // ---- RSA key sizes ----
    for bits in [512u64, 1024, 2047, 2049, 8192] {
        assert_eq!(
            rv(s.generate_key_pair(
                &Mechanism::RsaPkcsKeyPairGen,
                &[
                    Attribute::Token(true),
                    Attribute::Label(b"never-made".to_vec()),
                    Attribute::ModulusBits(bits.into()),
                ],
                &[Attribute::Token(true)],
            )),
            RvError::KeySizeRange,
            "{bits} bits"
        );
    }
    let listed = ok(&node.server.cli(None, &["ls-key", "-e", ENCLAVE]));
    assert!(!listed.contains("never-made"), "{listed}");

    // ---- digests of the wrong length ----
    assert_eq!(
        rv(s.sign(&Mechanism::Ecdsa, ec, &[])),
        RvError::DataLenRange
    );
    assert_eq!(
        rv(s.verify(&Mechanism::Ecdsa, ec_pub, &[], &[1; 64])),
        RvError::DataLenRange
    );
    let sha384_of_msg = sha2::Sha384::digest(&msg).to_vec();
    assert_eq!(
        rv(s.sign(&Mechanism::RsaPkcsPss(pss), rsa, &sha384_of_msg)),
        RvError::DataLenRange
    );
    assert_eq!(
        rv(s.sign(&Mechanism::RsaPkcs, rsa, &[0x30; 246])),
        RvError::DataLenRange
    );
    // CKM_RSA_PKCS at the limit (k - 11 = 245 bytes) signs.
    assert_eq!(
        s.sign(&Mechanism::RsaPkcs, rsa, &[0x30; 245])
            .unwrap()
            .len(),
        256
    );

    // ---- corrupted signatures: CKR_SIGNATURE_INVALID for each type ----
    let pss_sig = s
        .sign(&Mechanism::Sha256RsaPkcsPss(pss), rsa, &msg)
        .unwrap();
    let ed_sig = s.sign(&eddsa(), ed, &msg).unwrap();
    let ml_sig = s.sign(&mldsa(), ml, &msg).unwrap();
    let ecdsa_d = sha2::Sha256::digest(&msg).to_vec();
    let ec_sig = s.sign(&Mechanism::Ecdsa, ec, &ecdsa_d).unwrap();
    for (m, key, data, sig) in [
        (Mechanism::Sha256RsaPkcsPss(pss), rsa_pub, &msg, &pss_sig),
        (eddsa(), ed_pub, &msg, &ed_sig),
        (mldsa(), ml_pub, &msg, &ml_sig),
        (Mechanism::Ecdsa, ec_pub, &ecdsa_d, &ec_sig),
    ] {
        s.verify(&m, key, data, sig).unwrap();
        for at in [0, sig.len() / 2, sig.len() - 1] {
            let mut bad = sig.clone();
            bad[at] ^= 0x01;
            assert_eq!(
                rv(s.verify(&m, key, data, &bad)),
                RvError::SignatureInvalid,
                "{m:?} byte {at}"
            );
        }
        // The right signature over another message.
        let mut other = data.clone();
        other[0] ^= 1;
        assert_eq!(
            rv(s.verify(&m, key, &other, sig)),
            RvError::SignatureInvalid,
            "{m:?}"
        );
        assert_eq!(
            rv(s.verify(&m, key, data, &sig[..sig.len() - 1])),
            RvError::SignatureLenRange,
            "{m:?}"
        );
    }
    // The session still works.
    s.verify(&eddsa(), ed_pub, &msg, &ed_sig).unwrap();
    drop(s);
    c.p11.finalize().unwrap();

    // ---- the same through the API: exact 4xx and message ----
    let client = node.server.root();
    let e = |r: Result<proto::SignResponse, kms_client::Error>| r.unwrap_err().to_string();
    rt().block_on(async {
        let sign = |name: &'static str, m: &'static [u8], p: proto::SignParams| {
            let client = &client;
            async move { client.sign(ENCLAVE, name, 0, m, p).await }
        };
        // A parameter for another key type.
        assert_eq!(
            e(sign(
                "bad-ec",
                b"m",
                proto::SignParams {
                    padding: "PSS".into(),
                    ..Default::default()
                }
            )
            .await),
            "EC-P256 keys take no padding (HTTP 400)"
        );
        assert_eq!(
            e(sign(
                "bad-ed",
                b"m",
                proto::SignParams {
                    hash: "SHA-256".into(),
                    ..Default::default()
                }
            )
            .await),
            "ED25519 keys take no hash (they sign the message itself) (HTTP 400)"
        );
        assert_eq!(
            e(sign(
                "bad-rsa",
                b"m",
                proto::SignParams {
                    context: b"c".to_vec(),
                    ..Default::default()
                }
            )
            .await),
            "RSA-2048 keys take no context (HTTP 400)"
        );
        assert_eq!(
            e(sign(
                "bad-ml",
                b"m",
                proto::SignParams {
                    prehashed: true,
                    ..Default::default()
                }
            )
            .await),
            "ML-DSA-44 keys take no pre-hashed input (they sign the message itself) (HTTP 400)"
        );
        // Digests of the wrong length.
        let pre = |hash: &str| proto::SignParams {
            prehashed: true,
            hash: hash.into(),
            ..Default::default()
        };
        assert_eq!(
            e(sign("bad-ec", &[1; 31], pre("")).await),
            "bad input: a SHA-256 digest is 32 bytes, got 31 (HTTP 400)"
        );
        assert_eq!(
            e(sign("bad-rsa", &[1; 32], pre("SHA-384")).await),
            "bad input: a SHA-384 digest is 48 bytes, got 32 (HTTP 400)"
        );
        assert_eq!(
            e(sign("bad-ec", &[1; 32], pre("MD5")).await),
            "hash 'MD5' is not SHA-1, SHA-224, SHA-256, SHA-384 or SHA-512 (HTTP 400)"
        );
        // Key types (sizes and curves) the cluster does not make.
        for ty in ["RSA-1024", "EC-P521", "EC-SECP256K1"] {
            let err = client
                .create_key(ENCLAVE, "never-made", ty, false)
                .await
                .unwrap_err();
            assert_eq!(err.status(), Some(400), "{ty}: {err}");
            assert!(
                err.to_string()
                    .starts_with(&format!("unsupported key type '{ty}'")),
                "{ty}: {err}"
            );
        }
        // A corrupted signature is not valid (an answer, not an error), for
        // every type; the unchanged one is.
        for (name, p) in [
            ("bad-ec", proto::SignParams::default()),
            ("bad-ed", proto::SignParams::default()),
            ("bad-ml", proto::SignParams::default()),
            (
                "bad-rsa",
                proto::SignParams {
                    padding: "PSS".into(),
                    ..Default::default()
                },
            ),
        ] {
            let sig = client
                .sign(ENCLAVE, name, 0, &msg, p.clone())
                .await
                .unwrap()
                .signature;
            let v = client
                .verify(ENCLAVE, name, 0, &msg, &sig, p.clone())
                .await
                .unwrap();
            assert!(v.valid && v.version == 1, "{name}");
            let mut bad = sig.clone();
            bad[sig.len() / 2] ^= 1;
            let v = client
                .verify(ENCLAVE, name, 0, &msg, &bad, p.clone())
                .await
                .unwrap();
            assert!(!v.valid, "{name}");
            assert_eq!(v.version, 0, "{name}");
        }
    });
    // And through the CLI: exit status 1 and one clear line.
    let sig = ok(&node
        .server
        .cli(None, &["sign", "--enclave", ENCLAVE, "bad-ed", "m"]));
    let mut raw = B64.decode(sig.trim()).unwrap();
    raw[3] ^= 1;
    let err = fails(&node.server.cli(
        None,
        &[
            "verify",
            "--enclave",
            ENCLAVE,
            "bad-ed",
            &B64.encode(&raw),
            "m",
        ],
    ));
    assert!(err.contains("the signature is not valid"), "{err}");
}
