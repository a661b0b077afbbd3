//! Health probes without a client certificate (issue 13, item 1): `curl -k`
//! as a Kubernetes `httpGet` probe or a load balancer would send it. The
//! probes and `/version` answer; the metrics only with `--metrics-public`;
//! every other path is 401 with a message, and the certificate-holding
//! clients are served as before.

use std::process::Command;

use kms_tests::*;

/// `curl -k` without a client certificate: (HTTP status, body).
fn curl(addr: &str, method: &str, path: &str) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-k", "-s", "-m", "10", "-X", method, "-w", "\n%{http_code}"])
        .arg(format!("https://{addr}{path}"))
        .output()
        .expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

#[test]
fn probes_answer_without_a_client_certificate() {
    let tmp = tempfile::tempdir().unwrap();
    let srv = Server::start(&data_dir(&tmp, "n"), SEED_HSM_KEY);
    let addr = srv.addr.clone();

    assert_eq!(curl(&addr, "GET", "/v1/health/live"), (200, String::new()));
    assert_eq!(curl(&addr, "GET", "/v1/health/ready").0, 200);
    let (code, body) = curl(&addr, "GET", "/version");
    assert_eq!(code, 200, "{body}");
    // Protobuf VersionResponse: version, api_version "v1", host.
    assert!(body.contains("v1"), "{body}");

    // Everything else needs a certificate: 401 and the reason.
    for (method, path) in [
        ("GET", "/v1/health/metrics"),
        ("GET", "/v1/db"),
        ("PUT", "/v1/db"),
        ("POST", "/v1/kms"),
        ("POST", "/v1/kms/enclave"),
        ("GET", "/nothing"),
    ] {
        let (code, body) = curl(&addr, method, path);
        assert_eq!(code, 401, "{method} {path}: {body}");
        assert!(
            body.contains(&format!("{method} {path} needs a client certificate")),
            "{method} {path}: {body}"
        );
    }

    // A client with a certificate is served as before.
    let o = srv.cli(Some(&srv.root_key), &["ls"]);
    ok(&o);
    let o = srv.cli(Some(&kms_client::ApiKey::generate()), &["ls"]);
    assert!(fails(&o).contains("access denied"), "{}", fails(&o));
}

#[test]
fn metrics_public_serves_the_metrics_without_a_certificate() {
    let tmp = tempfile::tempdir().unwrap();
    let srv = Server::try_start(&data_dir(&tmp, "n"), SEED_HSM_KEY, &["--metrics-public"]).unwrap();
    let (code, body) = curl(&srv.addr, "GET", "/v1/health/metrics");
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("kms_uptime_seconds"), "{body}");
    // The rest still needs a certificate.
    assert_eq!(curl(&srv.addr, "POST", "/v1/kms").0, 401);
}
