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
    if !rustix_is_root() {
        println!("SKIPPED: needs root, to run the server as another user");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("n");
    std::fs::create_dir(&dir).unwrap();
    Command::new("chown")
        .args(["-R", "65534:65534"])
        .arg(tmp.path())
        .status()
        .unwrap();
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
