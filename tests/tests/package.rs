//! The Debian package (issue 13, item 3), end to end on this machine:
//! `scripts/package.sh --no-build` makes it from the binaries next to this
//! test (dev profile), `dpkg -i` installs it (twice: the maintainer scripts are
//! idempotent), the installed files are checked with the tools that use
//! them (p11-kit, systemd-analyze, bash, man), a node is started the way
//! the installed unit starts it, and `dpkg --purge` removes it again.
//!
//! It changes the machine (a package, a system user, /etc/kms,
//! /var/lib/kms), so it runs only as root and only when none of these exist
//! yet, or when they are the leftovers of an interrupted run of this test
//! (its marker file says so); otherwise it prints SKIPPED and why. Whatever
//! happens, a guard purges the package and removes what the test created.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use kms_tests::*;

/// Present while the test has the machine changed: a run that was killed
/// leaves it, and the next run then cleans up before it starts.
const MARKER: &str = "/var/tmp/kms-package-test.marker";

/// What the package installs, each with its mode as `dpkg-deb -c` shows it.
const ASSETS: &[(&str, &str)] = &[
    ("./usr/bin/kms", "-rwxr-xr-x"),
    (
        "./usr/lib/x86_64-linux-gnu/pkcs11/libkms_pkcs11.so",
        "-rw-r--r--",
    ),
    ("./usr/share/p11-kit/modules/kms.module", "-rw-r--r--"),
    ("./usr/share/man/man1/kms.1.gz", "-rw-r--r--"),
    ("./usr/share/man/man1/kms-server.1.gz", "-rw-r--r--"),
    ("./usr/share/man/man1/kms-completions.1.gz", "-rw-r--r--"),
    ("./usr/share/man/man1/kms-man.1.gz", "-rw-r--r--"),
    ("./usr/share/bash-completion/completions/kms", "-rw-r--r--"),
    ("./usr/share/zsh/vendor-completions/_kms", "-rw-r--r--"),
    (
        "./usr/share/fish/vendor_completions.d/kms.fish",
        "-rw-r--r--",
    ),
    ("./usr/lib/systemd/system/kms.service", "-rw-r--r--"),
    ("./usr/share/doc/kms/README.md", "-rw-r--r--"),
    ("./usr/share/doc/kms/operations.md", "-rw-r--r--"),
    ("./usr/share/doc/kms/hsm.md", "-rw-r--r--"),
    ("./usr/share/doc/kms/pkcs11.md", "-rw-r--r--"),
    ("./usr/share/doc/kms/copyright", "-rw-r--r--"),
];

const UNIT: &str = "/usr/lib/systemd/system/kms.service";
const ENV_FILE: &str = "/etc/kms/kms.env";

/// Runs `prog args` for at most `secs` seconds (coreutils `timeout`).
fn run_for(secs: u64, prog: &str, args: &[&str]) -> Output {
    Command::new("timeout")
        .arg(secs.to_string())
        .arg(prog)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run {prog}: {e}"))
}

/// Like [`run_for`]; asserts success and returns stdout and stderr.
#[track_caller]
fn must(secs: u64, prog: &str, args: &[&str]) -> String {
    let o = run_for(secs, prog, args);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        o.status.success(),
        "{prog} {args:?} ({}):\n{text}",
        o.status
    );
    text
}

fn is_root() -> bool {
    String::from_utf8_lossy(&run_for(10, "id", &["-u"]).stdout).trim() == "0"
}

/// dpkg's state of the package: `installed`, `half-configured`,
/// `config-files`, ... or `not-installed` (also when dpkg never heard of it).
fn dpkg_state() -> String {
    let o = run_for(30, "dpkg-query", &["-W", "-f=${db:Status-Status}", "kms"]);
    let s = String::from_utf8_lossy(&o.stdout).trim().to_string();
    if s.is_empty() {
        "not-installed".into()
    } else {
        s
    }
}

fn installed() -> bool {
    dpkg_state() == "installed"
}

fn user_exists(name: &str) -> bool {
    run_for(10, "getent", &["passwd", name]).status.success()
}

fn group_exists(name: &str) -> bool {
    run_for(10, "getent", &["group", name]).status.success()
}

/// The numeric id `id -u kms` / `id -g kms` prints.
fn id_of(flag: &str, user: &str) -> u32 {
    must(10, "id", &[flag, user]).trim().parse().unwrap()
}

/// (uid, gid, permission bits) of `path`.
fn owner_mode(path: &str) -> (u32, u32, u32) {
    let m = std::fs::metadata(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    (m.uid(), m.gid(), m.permissions().mode() & 0o7777)
}

/// What the test found on the machine that it must not touch, if anything.
fn foreign_state() -> Option<String> {
    let mut found = Vec::new();
    let state = dpkg_state();
    if state != "not-installed" {
        found.push(format!("dpkg knows the kms package ({state})"));
    }
    if user_exists("kms") || group_exists("kms") {
        found.push("a kms user or group exists".to_string());
    }
    for p in ["/etc/kms", "/var/lib/kms"] {
        if Path::new(p).exists() {
            found.push(format!("{p} exists"));
        }
    }
    (!found.is_empty()).then(|| found.join(", "))
}

/// Puts the machine back as the test found it: purges the package and
/// removes what it leaves on purge (the data directory, the user, the group,
/// /etc/kms), then the marker.
fn clean_machine() {
    if dpkg_state() != "not-installed" {
        let o = run_for(300, "dpkg", &["--purge", "kms"]);
        if !o.status.success() {
            eprintln!(
                "dpkg --purge kms failed: {}",
                String::from_utf8_lossy(&o.stderr)
            );
        }
    }
    let _ = std::fs::remove_dir_all("/var/lib/kms");
    let _ = std::fs::remove_dir_all("/etc/kms");
    if user_exists("kms") {
        let _ = run_for(30, "userdel", &["kms"]);
    }
    if group_exists("kms") {
        let _ = run_for(30, "groupdel", &["kms"]);
    }
    let _ = std::fs::remove_file(MARKER);
}

/// Cleans the machine when the test ends, passed or failed.
struct Guard;

impl Drop for Guard {
    fn drop(&mut self) {
        clean_machine();
    }
}

/// A process killed (and reaped) when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The workspace root (scripts/package.sh is there).
fn workspace() -> PathBuf {
    Path::new(
        &std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").into()),
    )
    .join("..")
}

/// `curl -k` without a client certificate: the HTTP status (0: no answer).
fn curl_status(url: &str) -> u16 {
    let o = run_for(
        10,
        "curl",
        &[
            "-k",
            "-s",
            "-o",
            "/dev/null",
            "-m",
            "5",
            "-w",
            "%{http_code}",
            url,
        ],
    );
    String::from_utf8_lossy(&o.stdout)
        .trim()
        .parse()
        .unwrap_or(0)
}

/// The `[Service]` settings of a unit file: (key, value) in order.
fn service_settings(unit: &str) -> Vec<(String, String)> {
    let mut in_service = false;
    let mut out = Vec::new();
    for line in unit.lines().map(str::trim) {
        if line.starts_with('[') {
            in_service = line == "[Service]";
        } else if in_service && !line.starts_with('#') {
            if let Some((k, v)) = line.split_once('=') {
                out.push((k.to_string(), v.to_string()));
            }
        }
    }
    out
}

/// The single value of `key` in the unit's `[Service]` section.
#[track_caller]
fn setting(settings: &[(String, String)], key: &str) -> String {
    let v: Vec<&String> = settings
        .iter()
        .filter(|(k, _)| k == key)
        .map(|(_, v)| v)
        .collect();
    assert_eq!(v.len(), 1, "{key}= in {UNIT}: {v:?}");
    v[0].clone()
}

/// The variables of a systemd EnvironmentFile (`KEY=VALUE` lines; `#` and
/// `;` comments; the values here need no quoting).
fn env_file(text: &str) -> Vec<(String, String)> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with(';'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

/// A loopback port nobody listens on.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Builds the package with `scripts/package.sh --no-build` (dev profile,
/// the target directory of this test) and returns the .deb's path.
/// `--no-build`: it packages the `kms` and libkms_pkcs11.so this test run was
/// built with; a build here would replace them under the tests running
/// beside this one, and in another feature set than the test build's.
fn build_package() -> PathBuf {
    let profile_dir = kms_bin().parent().unwrap().to_path_buf();
    let target = profile_dir.parent().unwrap();
    assert_eq!(
        profile_dir.file_name().unwrap(),
        "debug",
        "scripts/package.sh without --release packages target/debug"
    );
    let start = Instant::now();
    let o = Command::new("timeout")
        .arg("300")
        .arg(workspace().join("scripts/package.sh"))
        .arg("--no-build")
        .env("CARGO_TARGET_DIR", target)
        .stdin(Stdio::null())
        .output()
        .expect("run scripts/package.sh");
    let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        o.status.success(),
        "scripts/package.sh ({}):\n{stdout}{}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    println!(
        "scripts/package.sh took {:?}:\n{}",
        start.elapsed(),
        String::from_utf8_lossy(&o.stderr)
    );
    let deb = PathBuf::from(stdout.lines().last().expect("the .deb's path").trim());
    let name = format!("kms_{}-1_amd64.deb", env!("CARGO_PKG_VERSION"));
    assert_eq!(deb, target.join("debian/dev").join(name), "{stdout}");
    assert!(deb.is_file(), "{}", deb.display());
    deb
}

/// `dpkg-deb -c`: every asset, with its mode; one man page per command.
fn check_contents(deb: &str) {
    let listing = must(60, "dpkg-deb", &["-c", deb]);
    // "-rwxr-xr-x root/root  123 2024-01-01 00:00 ./usr/bin/kms"
    let entries: Vec<(String, String)> = listing
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 6).then(|| (f[5].to_string(), f[0].to_string()))
        })
        .collect();
    for (path, mode) in ASSETS {
        let found = entries.iter().find(|(p, _)| p == path);
        assert_eq!(
            found.map(|(_, m)| m.as_str()),
            Some(*mode),
            "{path} in the package:\n{listing}"
        );
    }
    // A page for kms and for each command `kms --help` lists.
    let help = must(10, &kms_bin().display().to_string(), &["--help"]);
    let commands: Vec<&str> = help
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .collect();
    assert!(
        commands.contains(&"server") && commands.contains(&"man"),
        "{help}"
    );
    let mut pages: Vec<String> = entries
        .iter()
        .filter_map(|(p, _)| p.strip_prefix("./usr/share/man/man1/"))
        .filter(|p| !p.is_empty())
        .map(str::to_string)
        .collect();
    pages.sort();
    let mut want: Vec<String> = commands.iter().map(|c| format!("kms-{c}.1.gz")).collect();
    want.push("kms.1.gz".into());
    want.sort();
    assert_eq!(pages, want);

    let depends = must(10, "dpkg-deb", &["-f", deb, "Depends"]);
    assert!(depends.contains("adduser"), "Depends: {depends}");
    assert!(depends.contains("libc6"), "Depends ($auto): {depends}");
}

/// Checks what the maintainer scripts made: user, directories, the HSM key.
/// Returns the env file's bytes.
fn check_installed_state() -> Vec<u8> {
    let id = must(10, "id", &["kms"]);
    let uid = id_of("-u", "kms");
    let gid = id_of("-g", "kms");
    assert!(
        id.starts_with(&format!("uid={uid}(kms) gid={gid}(kms)")),
        "{id}"
    );
    assert!(uid < 1000, "kms is a system user: {id}");
    let passwd = must(10, "getent", &["passwd", "kms"]);
    let fields: Vec<&str> = passwd.trim().split(':').collect();
    assert_eq!(fields[5], "/var/lib/kms", "{passwd}");
    assert_eq!(fields[6], "/usr/sbin/nologin", "{passwd}");

    assert_eq!(owner_mode("/var/lib/kms"), (uid, gid, 0o700));
    assert_eq!(owner_mode("/etc/kms"), (0, gid, 0o750));
    assert_eq!(owner_mode(ENV_FILE), (0, 0, 0o600));
    assert!(!Path::new("/etc/kms/kms.env.dpkg-new").exists());

    let text = std::fs::read_to_string(ENV_FILE).unwrap();
    assert!(text.contains("BACK IT UP"), "{text}");
    assert!(text.contains("/usr/share/doc/kms/hsm.md"), "{text}");
    let vars = env_file(&text);
    assert_eq!(vars.len(), 1, "{text}");
    assert_eq!(vars[0].0, "KMS_HSM_KEY");
    let key = &vars[0].1;
    assert!(key.starts_with("hsm:aes256:"), "{key}");
    assert_ne!(key, SEED_HSM_KEY);
    // The installed kms accepts it: the root API key it derives is the one
    // the software HSM derives from the same key.
    let o = Command::new("/usr/bin/kms")
        .args(["--json", "identity", "--hsm"])
        .env_clear()
        .env("KMS_HSM_KEY", key)
        .output()
        .unwrap();
    let out = ok(&o);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        v["api_key"].as_str().unwrap(),
        &*root_key(key).to_secret_string()
    );
    std::fs::read(ENV_FILE).unwrap()
}

/// p11-kit finds the module through the installed module file (`module:
/// libkms_pkcs11.so`, a name p11-kit looks up in the multiarch PKCS#11
/// directory) and loads the installed library.
fn check_p11_kit() {
    const LIB: &str = "/usr/lib/x86_64-linux-gnu/pkcs11/libkms_pkcs11.so";
    // With the module's settings (one enclave named: C_Initialize needs no
    // server) p11-kit loads and lists it; P11_KIT_DEBUG=lib logs the file.
    let o = Command::new("timeout")
        .args(["60", "p11-kit", "list-modules"])
        .env("P11_KIT_DEBUG", "lib")
        .env("KMS_PKCS11_CONFIG", "")
        .env("KMS_SERVER", "https://127.0.0.1:1")
        .env("KMS_INSECURE", "1")
        .env(
            "KMS_API_KEY",
            &*kms_client::ApiKey::generate().to_secret_string(),
        )
        .env("KMS_ENCLAVE", "package-test")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    let debug = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "{text}{debug}");
    assert!(
        debug.contains(&format!("opened module: {LIB}\n")),
        "p11-kit did not load {LIB}:\n{debug}"
    );
    let block: Vec<&str> = text
        .lines()
        .skip_while(|l| *l != "kms: libkms_pkcs11.so")
        .take_while(|l| *l == "kms: libkms_pkcs11.so" || l.starts_with(' '))
        .map(str::trim)
        .collect();
    assert!(
        block.contains(&"library-description: KMS cluster PKCS#11 module")
            && block.contains(&"token: package-test"),
        "p11-kit list-modules shows the module and the enclave's token:\n{text}"
    );
    // Without them its C_Initialize fails and p11-kit serves the other
    // modules (critical: no).
    let o = Command::new("timeout")
        .args(["60", "p11-kit", "list-modules"])
        .env_remove("KMS_PKCS11_CONFIG")
        .env_remove("KMS_SERVER")
        .env_remove("KMS_API_KEY")
        .env_remove("KMS_ENCLAVE")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        o.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(text.contains("p11-kit-trust: "), "{text}");
    assert!(!text.contains("token: package-test"), "{text}");
}

/// Completions, man pages, the unit.
fn check_files() {
    let out = must(
        30,
        "bash",
        &[
            "-c",
            ". /usr/share/bash-completion/completions/kms && complete -p kms",
        ],
    );
    // complete -o bashdefault -o default -o nosort -F _kms kms
    assert!(out.starts_with("complete "), "{out}");
    assert!(out.trim_end().ends_with(" -F _kms kms"), "{out}");
    let zsh = std::fs::read_to_string("/usr/share/zsh/vendor-completions/_kms").unwrap();
    assert!(zsh.starts_with("#compdef kms"), "{zsh}");
    let fish = std::fs::read_to_string("/usr/share/fish/vendor_completions.d/kms.fish").unwrap();
    assert!(fish.contains("complete -c kms "), "{fish}");

    // man renders the installed page; its NAME section names the command.
    let o = Command::new("timeout")
        .args(["30", "man", "-l", "/usr/share/man/man1/kms.1.gz"])
        .env("MANPAGER", "cat")
        .env("MANWIDTH", "200")
        .env("MAN_KEEP_FORMATTING", "")
        .output()
        .unwrap();
    let page = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        o.status.success(),
        "{page}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let after_name: Vec<&str> = page
        .lines()
        .skip_while(|l| l.trim() != "NAME")
        .skip(1)
        .take(1)
        .collect();
    assert_eq!(
        after_name.first().map(|l| l.trim()),
        Some("kms - A clustered key management server, wire-compatible with MinIO's KMS"),
        "{page}"
    );
    let server = must(10, "zcat", &["/usr/share/man/man1/kms-server.1.gz"]);
    assert!(
        server.contains(".SH NAME\nkms\\-server \\- Run a KMS server"),
        "{server}"
    );

    // The unit as installed: systemd-analyze verify passes, and it is not
    // enabled (no multi-user.target.wants link): the operator enables it.
    must(60, "systemd-analyze", &["verify", UNIT]);
    let unit = std::fs::read_to_string(UNIT).unwrap();
    let repo_unit = std::fs::read_to_string(workspace().join("ops/systemd/kms.service")).unwrap();
    assert_eq!(
        unit, repo_unit,
        "the packaged unit is ops/systemd/kms.service"
    );
    assert!(!Path::new("/etc/systemd/system/multi-user.target.wants/kms.service").exists());
}

/// (soft, hard) of the line `label` of a /proc/PID/limits text.
fn soft_hard(limits: &str, label: &str) -> (String, String) {
    let rest = limits
        .lines()
        .find_map(|l| l.strip_prefix(label))
        .unwrap_or_else(|| panic!("no {label} in:\n{limits}"));
    let f: Vec<&str> = rest.split_whitespace().collect();
    (f[0].to_string(), f[1].to_string())
}

/// The value to give `prlimit --NAME=V:V` for a unit's `Limit*=` value
/// `want`: `want` itself where root may set it. Where it may not (root
/// without CAP_SYS_RESOURCE, as in some containers, cannot raise a hard
/// limit; systemd, PID 1, can), this machine's hard limit, and the test says
/// so.
fn attainable_limit(name: &str, label: &str, want: &str) -> String {
    let arg = format!("--{name}={want}:{want}");
    if run_for(10, "prlimit", &[&arg, "true"]).status.success() {
        return want.to_string();
    }
    let own = std::fs::read_to_string("/proc/self/limits").unwrap();
    let (_, hard) = soft_hard(&own, label);
    println!(
        "NOTE: root here cannot set {label} to {want} (no CAP_SYS_RESOURCE); \
         the node runs with this machine's hard limit, {hard}"
    );
    hard
}

/// Starts the node the way the installed unit does (its ExecStart, as its
/// User and Group, with its EnvironmentFile, UMask, resource limits and
/// working directory), waits until it is ready, and stops it with SIGTERM.
/// The resource limits are the unit's where this machine lets root raise
/// them ([`attainable_limit`]).
///
/// One substitution: ExecStart's `--addr 0.0.0.0:7373` becomes
/// `--addr 127.0.0.1:PORT` with a free port, so that the node neither
/// collides with a server on 7373 (scripts/dev.sh) nor listens on every
/// interface of the test machine. Not done here: the sandboxing directives
/// (ProtectSystem=..., SystemCallFilter=...), which need systemd as PID 1
/// (`systemd-analyze verify` and `security` check them instead).
fn run_as_the_unit_does(tmp: &Path) {
    let unit = std::fs::read_to_string(UNIT).unwrap();
    let s = service_settings(&unit);
    assert_eq!(setting(&s, "Type"), "notify");
    assert_eq!(setting(&s, "NotifyAccess"), "main");
    assert_eq!(setting(&s, "ExecReload"), "/bin/kill -HUP $MAINPID");
    let user = setting(&s, "User");
    let group = setting(&s, "Group");
    assert_eq!((user.as_str(), group.as_str()), ("kms", "kms"));
    let env_path = setting(&s, "EnvironmentFile");
    assert_eq!(env_path, format!("-{ENV_FILE}"));
    let umask = setting(&s, "UMask");
    let exec = setting(&s, "ExecStart");
    let argv: Vec<String> = exec.split_whitespace().map(str::to_string).collect();
    let pos = argv
        .iter()
        .position(|a| a == "0.0.0.0:7373")
        .expect("ExecStart listens on 0.0.0.0:7373");
    assert_eq!(argv[pos - 1], "--addr", "{exec}");
    let port = free_port();
    let mut argv = argv;
    argv[pos] = format!("127.0.0.1:{port}");
    assert_eq!(argv[0], "/usr/bin/kms", "{exec}");
    assert_eq!(argv.last().unwrap(), "/var/lib/kms", "{exec}");

    // LimitNOFILE=65536 -> prlimit --nofile=65536:65536 (infinity:
    // unlimited), with the value the node must then show in its limits.
    let mut limits = Vec::new();
    let mut expected = Vec::new();
    for (k, v) in &s {
        let (name, label) = match k.as_str() {
            "LimitNOFILE" => ("nofile", "Max open files"),
            "LimitCORE" => ("core", "Max core file size"),
            "LimitMEMLOCK" => ("memlock", "Max locked memory"),
            l if l.starts_with("Limit") => panic!("{l}= is not mapped to prlimit here"),
            _ => continue,
        };
        let v = if v == "infinity" {
            "unlimited"
        } else {
            v.as_str()
        };
        let v = attainable_limit(name, label, v);
        limits.push(format!("--{name}={v}:{v}"));
        expected.push((label, v));
    }
    assert_eq!(limits.len(), 3, "{limits:?}");

    let env_text = std::fs::read_to_string(env_path.trim_start_matches('-')).unwrap();
    let log_path = tmp.join("node.log");
    let log = std::fs::File::create(&log_path).unwrap();
    // prlimit, setpriv and sh each exec the next: the child is the node.
    let mut cmd = Command::new("prlimit");
    cmd.args(&limits)
        .arg("--")
        .args([
            "setpriv",
            &format!("--reuid={user}"),
            &format!("--regid={group}"),
            "--init-groups",
            "--",
            "/bin/sh",
            "-c",
            &format!("umask {umask} && exec \"$@\""),
            "sh",
        ])
        .args(&argv)
        .current_dir("/")
        // systemd's environment for a system service with User=.
        .env_clear()
        .env("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin")
        .env("HOME", "/var/lib/kms")
        .env("USER", "kms")
        .env("LOGNAME", "kms")
        .env("SHELL", "/usr/sbin/nologin")
        .envs(env_file(&env_text))
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log);
    let mut node = Proc(cmd.spawn().expect("start the node"));
    let url = format!("https://127.0.0.1:{port}/v1/health/ready");
    let start = Instant::now();
    loop {
        if curl_status(&url) == 200 {
            break;
        }
        if let Ok(Some(st)) = node.0.try_wait() {
            panic!(
                "the node exited ({st}):\n{}",
                std::fs::read_to_string(&log_path).unwrap_or_default()
            );
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the node was not ready within 60 s:\n{}",
            std::fs::read_to_string(&log_path).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    println!("the node answered ready after {:?}", start.elapsed());

    // It runs as kms with the unit's limits, and wrote its state as kms.
    let pid = node.0.id();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let uid = id_of("-u", "kms");
    let uid_line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    assert_eq!(
        uid_line.split_whitespace().skip(1).collect::<Vec<_>>(),
        vec![uid.to_string(); 4],
        "{uid_line}"
    );
    let lim = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    for (label, v) in &expected {
        assert_eq!(soft_hard(&lim, label), (v.clone(), v.clone()), "{lim}");
    }
    let (crt_uid, _, crt_mode) = owner_mode("/var/lib/kms/tls/server.crt");
    assert_eq!(crt_uid, uid);
    assert_eq!(crt_mode & 0o077, 0, "UMask=0077: {crt_mode:o}");

    // SIGTERM, as systemctl stop sends it; TimeoutStopSec=30s.
    must(10, "kill", &["-TERM", &pid.to_string()]);
    let start = Instant::now();
    let st = loop {
        if let Some(st) = node.0.try_wait().unwrap() {
            break st;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the node did not stop within 30 s of SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        st.success(),
        "the node's exit on SIGTERM ({st}):\n{}",
        std::fs::read_to_string(&log_path).unwrap_or_default()
    );
}

#[test]
fn the_debian_package_installs_runs_and_purges() {
    if !is_root() {
        println!("SKIPPED: needs root, to install the package with dpkg");
        return;
    }
    if Path::new(MARKER).exists() {
        // An earlier run was interrupted: what it left is its own.
        clean_machine();
    }
    if let Some(what) = foreign_state() {
        println!("SKIPPED: not touching an existing kms installation: {what}");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let deb = build_package();
    let deb = deb.to_str().unwrap();
    check_contents(deb);

    std::fs::write(
        MARKER,
        "kms package test: dpkg --purge kms, rm /etc/kms /var/lib/kms, userdel kms\n",
    )
    .unwrap();
    let _guard = Guard;
    must(300, "dpkg", &["-i", deb]);
    assert!(installed());
    let env_before = check_installed_state();

    // Idempotent: a second installation of the same package succeeds and
    // changes nothing (above all not the HSM key).
    must(300, "dpkg", &["-i", deb]);
    let env_after = check_installed_state();
    assert_eq!(env_before, env_after, "a reinstallation kept the HSM key");

    check_p11_kit();
    check_files();
    run_as_the_unit_does(tmp.path());

    // Purge: the package's files and the HSM key go, the data stays.
    must(300, "dpkg", &["--purge", "kms"]);
    assert_eq!(dpkg_state(), "not-installed");
    for gone in [
        "/usr/bin/kms",
        "/usr/lib/x86_64-linux-gnu/pkcs11/libkms_pkcs11.so",
        "/usr/share/p11-kit/modules/kms.module",
        UNIT,
        ENV_FILE,
        "/etc/kms",
    ] {
        assert!(
            !Path::new(gone).exists(),
            "{gone} is still there after purge"
        );
    }
    assert!(
        Path::new("/var/lib/kms/tls/server.crt").exists(),
        "purge keeps the node's data in /var/lib/kms"
    );
    assert!(user_exists("kms"), "purge keeps the kms user");
}
