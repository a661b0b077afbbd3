//! Operations: `kms server --dev`, the config file (validated, JSON logs),
//! and `kms bench`.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use kms_tests::{data_dir, kms_bin, ok, Server, SEED_HSM_KEY};

#[test]
fn dev_mode_needs_nothing_and_reuses_its_key() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = data_dir(&tmp, "dev");
    let start = || {
        let mut child = Command::new(kms_bin())
            .args(["server", "--dev", "--addr", "127.0.0.1:0"])
            .arg(&dir)
            .env_remove("KMS_HSM_KEY")
            .env_remove("MINIO_KMS_HSM_KEY")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut banner = String::new();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        for line in lines.by_ref() {
            let line = line.unwrap();
            banner.push_str(&line);
            banner.push('\n');
            if line.contains("kms keygen") {
                break;
            }
        }
        (child, banner)
    };
    let (mut child, banner) = start();
    assert!(
        banner.contains("DEVELOPMENT MODE") && banner.contains("INSECURE"),
        "{banner}"
    );
    assert!(
        banner.contains("export KMS_SERVER=") && banner.contains("kms add-enclave"),
        "{banner}"
    );
    let key = |b: &str| {
        b.lines()
            .find_map(|l| l.split("root API key").nth(1))
            .unwrap()
            .trim()
            .to_string()
    };
    let first = key(&banner);
    child.kill().unwrap();
    child.wait().unwrap();
    let (mut child, banner) = start();
    assert_eq!(
        key(&banner),
        first,
        "a restarted dev server has another root key"
    );
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn config_file_is_validated_and_json_logs_work() {
    let tmp = tempfile::tempdir().unwrap();
    let bad = tmp.path().join("bad.toml");
    std::fs::write(&bad, "[log]\nformat = \"xml\"\n").unwrap();
    let o = Command::new(kms_bin())
        .args(["server", "--config"])
        .arg(&bad)
        .arg(tmp.path().join("d"))
        .env("KMS_HSM_KEY", SEED_HSM_KEY)
        .output()
        .unwrap();
    let e = kms_tests::fails(&o);
    assert!(e.contains("log.format"), "{e}");
    let typo = tmp.path().join("typo.toml");
    std::fs::write(&typo, "adress = \"127.0.0.1:1\"\n").unwrap();
    let o = Command::new(kms_bin())
        .args(["server", "--config"])
        .arg(&typo)
        .arg(tmp.path().join("d"))
        .env("KMS_HSM_KEY", SEED_HSM_KEY)
        .output()
        .unwrap();
    assert!(kms_tests::fails(&o).contains("adress"));

    let good = tmp.path().join("good.toml");
    std::fs::write(
        &good,
        "[log]\nformat = \"json\"\nlevel = \"info\"\n[limits]\nmax_request_bytes = 65536\n",
    )
    .unwrap();
    let dir = data_dir(&tmp, "kms0");
    let srv = Server::try_start(&dir, SEED_HSM_KEY, &["--config", good.to_str().unwrap()]).unwrap();
    ok(&srv.cli(None, &["add-enclave", "e"]));
    // The configured request limit applies.
    let big = tmp.path().join("big");
    std::fs::write(&big, vec![b'x'; 100_000]).unwrap();
    ok(&srv.cli(None, &["add-key", "-e", "e", "k"]));
    let o = Command::new(kms_bin())
        .args(["encrypt", "-e", "e", "k"])
        .env("KMS_SERVER", srv.url())
        .env(
            "KMS_API_KEY",
            &*kms_tests::root_key(SEED_HSM_KEY).to_secret_string(),
        )
        .env("KMS_INSECURE", "1")
        .stdin(std::fs::File::open(&big).unwrap())
        .output()
        .unwrap();
    assert!(kms_tests::fails(&o).contains("413"));
    // The log is written asynchronously: wait for the two audit records.
    kms_tests::wait_until(
        Duration::from_secs(10),
        "two audit records in the server's JSON log",
        || {
            std::fs::read_to_string(dir.with_extension("log"))
                .unwrap_or_default()
                .lines()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .filter(|v| v["target"] == "audit")
                .count()
                >= 2
        },
    );
    let log = std::fs::read_to_string(dir.with_extension("log")).unwrap();
    let mut audit = 0;
    for line in log.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        if v["target"] == "audit" {
            audit += 1;
            assert!(v["fields"]["identity"].as_str().unwrap().starts_with("h1:"));
        }
    }
    assert!(audit >= 2, "expected audit records in {log}");
}

#[test]
fn bench_reports_a_summary() {
    let tmp = tempfile::tempdir().unwrap();
    let srv = Server::start(&data_dir(&tmp, "kms0"), SEED_HSM_KEY);
    for op in ["generate", "decrypt", "encrypt", "mac", "status"] {
        let out = ok(&srv.cli(
            None,
            &[
                "bench",
                "--enclave",
                "bench",
                "--op",
                op,
                "--batch",
                "8",
                "--concurrency",
                "2",
                "--duration",
                "300ms",
            ],
        ));
        assert!(
            out.contains("ops/s")
                && out.contains("p50")
                && out.contains("p99")
                && out.contains("max"),
            "{out}"
        );
    }
    let out = ok(&srv.cli(
        None,
        &[
            "--json",
            "bench",
            "--enclave",
            "bench",
            "--duration",
            "300ms",
        ],
    ));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(v["ops_per_sec"].as_f64().unwrap() > 0.0);
    assert_eq!(v["errors"], 0);
    assert_eq!(
        kms_tests::fails(&srv.cli(None, &["bench", "--batch", "0"])),
        "kms: bench: --batch must be 1..=100000 and --concurrency 1..=4096\n"
    );
    let e = kms_tests::fails(&srv.cli(None, &["bench", "--duration", "forever"]));
    assert!(
        e.starts_with(
            "kms: invalid value 'forever' for '--duration <DURATION>': invalid duration 'forever'"
        ),
        "{e}"
    );
}
