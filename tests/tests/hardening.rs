//! Process hardening (issue 13, item 5): the server dumps no core and is not
//! dumpable, so that another process of its user cannot read its memory or
//! its environment (which holds `KMS_HSM_KEY`).

use std::process::{Command, Stdio};
use std::time::Duration;

use kms_tests::*;

fn limits(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap()
}

#[test]
fn the_server_dumps_no_core() {
    let tmp = tempfile::tempdir().unwrap();
    let srv = Server::start(&data_dir(&tmp, "n"), SEED_HSM_KEY);
    let line = limits(srv.pid())
        .lines()
        .find(|l| l.starts_with("Max core file size"))
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .unwrap();
    assert_eq!(line, "Max core file size 0 0 bytes");
    assert!(srv.log().contains("no core dumps; process not dumpable"));
}

/// A data directory owned by user nobody, or `None` (and a SKIPPED line)
/// when not root.
fn nobody_dir() -> Option<(tempfile::TempDir, std::path::PathBuf)> {
    if !rustix_is_root() {
        println!("SKIPPED: needs root, to run the server as another user");
        return None;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("n");
    std::fs::create_dir(&dir).unwrap();
    Command::new("chown")
        .args(["-R", "65534:65534"])
        .arg(tmp.path())
        .status()
        .unwrap();
    Some((tmp, dir))
}

/// Runs `cat FILE` as user nobody: whether it could read it.
fn nobody_reads(file: &str) -> bool {
    Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "cat",
            file,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap()
        .success()
}

#[test]
fn another_process_of_the_same_user_cannot_read_its_environment() {
    let Some((_tmp, dir)) = nobody_dir() else {
        return;
    };
    // A control: an ordinary process of user nobody is readable by nobody.
    let mut control = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "sleep",
            "30",
        ])
        .spawn()
        .unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut server = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(kms_bin())
        .args(["server", "--addr", &format!("127.0.0.1:{port}")])
        .arg(&dir)
        .env("KMS_HSM_KEY", SEED_HSM_KEY)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // setpriv execs: the child's pid is the server's.
    wait_until(Duration::from_secs(20), "the server listens", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    let control_readable = nobody_reads(&format!("/proc/{}/environ", control.id()));
    let server_readable = nobody_reads(&format!("/proc/{}/environ", server.id()));
    let _ = server.kill();
    let _ = server.wait();
    let _ = control.kill();
    let _ = control.wait();
    assert!(
        control_readable,
        "the control process's environment is readable by its user"
    );
    assert!(
        !server_readable,
        "the server's environment (KMS_HSM_KEY) is readable by another process of its user"
    );
}

fn rustix_is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// `VmLck` of /proc/PID/status, in kB.
fn locked_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmLck:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// The metrics of a node started with --metrics-public, without a certificate.
fn metrics(addr: &str) -> String {
    success(Command::new("curl").args([
        "-k",
        "-s",
        "-f",
        "-m",
        "10",
        &format!("https://{addr}/v1/health/metrics"),
    ]))
}

#[test]
fn the_server_locks_its_memory() {
    if !rustix_is_root() {
        println!("SKIPPED: needs root (or CAP_IPC_LOCK) to lock memory without a limit");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let srv = Server::try_start(&data_dir(&tmp, "n"), SEED_HSM_KEY, &["--metrics-public"]).unwrap();
    assert!(
        srv.log().contains("memory locked (mlockall)"),
        "{}",
        srv.log()
    );
    // Pages are locked as they are touched (MCL_ONFAULT): the resident ones.
    let kb = locked_kb(srv.pid());
    assert!(kb > 1024, "VmLck {kb} kB");
    assert!(metrics(&srv.addr).contains("\nkms_memory_locked 1\n"));

    // KMS_MLOCK=off: nothing locked.
    let tmp2 = tempfile::tempdir().unwrap();
    let off = Server::try_start_env(
        &data_dir(&tmp2, "n"),
        &[
            ("KMS_HSM_KEY".into(), SEED_HSM_KEY.into()),
            ("KMS_MLOCK".into(), "off".into()),
        ],
        &["--metrics-public"],
    )
    .unwrap();
    assert_eq!(locked_kb(off.pid()), 0);
    assert!(metrics(&off.addr).contains("\nkms_memory_locked 0\n"));
    assert!(off.log().contains("memory not locked (KMS_MLOCK=off)"));
}

/// Runs `kms server` as user nobody (under `prefix`, e.g. prlimit) on a
/// free port with `KMS_MLOCK=mode`: (its pid if it started, its stderr).
fn nobody_server(
    dir: &std::path::Path,
    mode: &str,
    prefix: &[&str],
) -> (Option<std::process::Child>, u16) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut cmd = Command::new(prefix.first().copied().unwrap_or("setpriv"));
    if !prefix.is_empty() {
        cmd.args(&prefix[1..]).arg("setpriv");
    }
    let mut child = cmd
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(kms_bin())
        .args([
            "server",
            "--metrics-public",
            "--addr",
            &format!("127.0.0.1:{port}"),
        ])
        .arg(dir)
        .env("KMS_HSM_KEY", SEED_HSM_KEY)
        .env("KMS_MLOCK", mode)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.with_extension(format!("{mode}.log"))).unwrap())
        .spawn()
        .unwrap();
    let started = eventually(Duration::from_secs(20), || {
        if let Ok(Some(_)) = child.try_wait() {
            return Some(false);
        }
        std::net::TcpStream::connect(("127.0.0.1", port))
            .is_ok()
            .then_some(true)
    });
    if started == Some(true) {
        (Some(child), port)
    } else {
        let _ = child.kill();
        let _ = child.wait();
        (None, port)
    }
}

#[test]
fn a_user_without_a_memlock_allowance_gets_a_warning_or_a_refusal() {
    let Some((_tmp, dir)) = nobody_dir() else {
        return;
    };
    let log =
        |mode: &str| std::fs::read_to_string(dir.with_extension(format!("{mode}.log"))).unwrap();
    // A finite limit (8 MiB, as for a login user): try starts unlocked and
    // says so; required refuses to start.
    let limit = ["prlimit", "--memlock=8388608:8388608", "--"];
    let (srv, port) = nobody_server(&dir, "try", &limit);
    let mut srv = srv.unwrap_or_else(|| panic!("did not start: {}", log("try")));
    assert!(
        log("try").contains(
            "memory NOT locked, key material may be swapped: the locked-memory limit is 8192 KiB"
        ),
        "{}",
        log("try")
    );
    assert_eq!(locked_kb(srv.id()), 0);
    assert!(metrics(&format!("127.0.0.1:{port}")).contains("\nkms_memory_locked 0\n"));
    let _ = srv.kill();
    let _ = srv.wait();

    let (srv, _) = nobody_server(&dir, "required", &limit);
    assert!(srv.is_none(), "started without locked memory");
    assert!(
        log("required").contains("cannot lock memory (KMS_MLOCK=required): the locked-memory limit is 8192 KiB; run with LimitMEMLOCK=infinity"),
        "{}",
        log("required")
    );

    // An unlimited limit, as the packaged unit sets (LimitMEMLOCK=infinity):
    // locked, even as an unprivileged user. Raising the hard limit needs
    // CAP_SYS_RESOURCE, which some containers withhold from root.
    let unlimited = ["prlimit", "--memlock=unlimited:unlimited", "--"];
    if !Command::new(unlimited[0])
        .args(&unlimited[1..])
        .arg("true")
        .status()
        .unwrap()
        .success()
    {
        println!("SKIPPED (last part): cannot raise RLIMIT_MEMLOCK here (no CAP_SYS_RESOURCE)");
        return;
    }
    let (srv, _) = nobody_server(
        &dir,
        "required",
        &["prlimit", "--memlock=unlimited:unlimited", "--"],
    );
    let mut srv = srv.unwrap_or_else(|| panic!("did not start: {}", log("required")));
    assert!(locked_kb(srv.id()) > 1024);
    let _ = srv.kill();
    let _ = srv.wait();
}
