//! A node sealed by a PKCS#11 HSM (SoftHSM2): walkthrough 4, wrong HSMs,
//! bad settings, and migration between the software HSM and SoftHSM2.

use std::path::Path;

use kms_client::{proto, Command};
use kms_tests::{data_dir, ok, rt, soft_env, softhsm_token, Server, SEED_HSM_KEY};

fn with(mut a: Vec<(String, String)>, b: &[(&str, &str)]) -> Vec<(String, String)> {
    a.extend(b.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    a
}

fn exit_code(err: &str) -> Option<i32> {
    err.strip_prefix("exit code Some(")?
        .split(')')
        .next()?
        .parse()
        .ok()
}

#[test]
fn walkthrough_4_softhsm_sealed_node() {
    let tmp = tempfile::tempdir().unwrap();
    let hsm = softhsm_token(&tmp.path().join("hsm"), "node0", None);
    let dir = data_dir(&tmp, "kms0");
    let mut srv = Server::try_start_env(&dir, &hsm, &[]).unwrap();
    assert!(srv.stdout.contains("pkcs11:"), "{}", srv.stdout);
    ok(&srv.cli(None, &["add-enclave", "e"]));
    ok(&srv.cli(None, &["add-key", "-e", "e", "k1"]));
    ok(&srv.cli(None, &["add-key", "-e", "e", "k2", "--type", "chacha20"]));
    let c = srv.root();
    let (g1, g2) = rt().block_on(async {
        (
            c.generate("e", "k1", b"a", 32).await.unwrap(),
            c.generate("e", "k2", b"b", 32).await.unwrap(),
        )
    });
    let hsms = ok(&srv.cli(None, &["ls-hsm"]));
    assert!(
        hsms.contains("pkcs11:") && hsms.contains("configured"),
        "{hsms}"
    );
    assert!(srv.stop().success());
    let srv = Server::try_start_env(&dir, &hsm, &[]).unwrap();
    let c = srv.root();
    rt().block_on(async {
        assert_eq!(
            c.decrypt("e", "k1", &g1.ciphertext, b"a")
                .await
                .unwrap()
                .plaintext,
            g1.plaintext
        );
        assert_eq!(
            c.decrypt("e", "k2", &g2.ciphertext, b"b")
                .await
                .unwrap()
                .plaintext,
            g2.plaintext
        );
    });
}

#[test]
fn a_data_dir_opens_only_with_its_own_hsm() {
    let tmp = tempfile::tempdir().unwrap();
    let hsm = softhsm_token(&tmp.path().join("hsm"), "node0", None);
    // Sealed by SoftHSM2: no software HSM key opens it.
    let dir = data_dir(&tmp, "p11");
    let mut srv = Server::try_start_env(&dir, &hsm, &[]).unwrap();
    ok(&srv.cli(None, &["add-enclave", "e"]));
    srv.stop();
    let before = kms_tests::dir_snapshot(&dir);
    for key in [
        SEED_HSM_KEY.to_string(),
        hsm_backends::SoftHsm::generate_key_str().to_string(),
    ] {
        let e = Server::try_start_env(&dir, &soft_env(&key), &[])
            .err()
            .expect("must not start");
        assert_eq!(exit_code(&e), Some(3), "{e}");
        assert!(e.contains("cannot unseal") && e.contains("pkcs11:"), "{e}");
    }
    assert_eq!(before, kms_tests::dir_snapshot(&dir));
    // Sealed by the software HSM: the SoftHSM2 token does not open it.
    let dir = data_dir(&tmp, "soft");
    let mut srv = Server::start(&dir, SEED_HSM_KEY);
    srv.stop();
    let before = kms_tests::dir_snapshot(&dir);
    let e = Server::try_start_env(&dir, &hsm, &[])
        .err()
        .expect("must not start");
    assert_eq!(exit_code(&e), Some(3), "{e}");
    assert!(e.contains("cannot unseal") && e.contains("soft:"), "{e}");
    assert_eq!(before, kms_tests::dir_snapshot(&dir));
}

#[test]
fn bad_pkcs11_settings_are_clear_and_touch_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let hsm = softhsm_token(&tmp.path().join("hsm"), "node0", None);
    let dir = data_dir(&tmp, "kms0");
    let mut srv = Server::try_start_env(&dir, &hsm, &[]).unwrap();
    ok(&srv.cli(None, &["add-enclave", "e"]));
    srv.stop();
    let before = kms_tests::dir_snapshot(&dir);
    let set = |k: &str, v: &str| -> Vec<(String, String)> {
        hsm.iter()
            .map(|(n, x)| {
                if n == k {
                    (n.clone(), v.to_string())
                } else {
                    (n.clone(), x.clone())
                }
            })
            .collect()
    };
    let libz = [
        "/lib/x86_64-linux-gnu/libz.so.1",
        "/usr/lib/x86_64-linux-gnu/libz.so.1",
    ]
    .into_iter()
    .find(|p| Path::new(p).exists())
    .unwrap();
    for (env, setting) in [
        (set("KMS_HSM_PKCS11_PIN", "0000"), "KMS_HSM_PKCS11_PIN"),
        (
            set("KMS_HSM_PKCS11_KEY", "no-such-key"),
            "KMS_HSM_PKCS11_KEY",
        ),
        (
            set("KMS_HSM_PKCS11_MODULE", "/nonexistent/libpkcs11.so"),
            "KMS_HSM_PKCS11_MODULE",
        ),
        (set("KMS_HSM_PKCS11_MODULE", libz), "KMS_HSM_PKCS11_MODULE"),
        (
            set("KMS_HSM_PKCS11_TOKEN", "no-such-token"),
            "KMS_HSM_PKCS11_TOKEN",
        ),
    ] {
        let e = Server::try_start_env(&dir, &env, &[])
            .err()
            .expect("must not start");
        assert_eq!(exit_code(&e), Some(3), "{setting}: {e}");
        assert!(e.contains(setting), "{setting}: {e}");
        assert!(!e.contains("panicked"), "{e}");
    }
    assert_eq!(
        before,
        kms_tests::dir_snapshot(&dir),
        "a failed start changed the data directory"
    );
    // Two HSMs without a primary: a clear error too.
    let both = with(hsm.clone(), &[("KMS_HSM_KEY", SEED_HSM_KEY)]);
    let e = Server::try_start_env(&dir, &both, &[])
        .err()
        .expect("must not start");
    assert!(e.contains("KMS_HSM_PRIMARY"), "{e}");
    assert_eq!(before, kms_tests::dir_snapshot(&dir));
}

#[test]
fn migration_soft_to_softhsm_and_back_keeps_every_key() {
    let tmp = tempfile::tempdir().unwrap();
    let hsm = softhsm_token(&tmp.path().join("hsm"), "node0", None);
    let soft = soft_env(SEED_HSM_KEY);
    let dir = data_dir(&tmp, "kms0");
    let enc = |srv: &Server, name: &str| {
        rt().block_on(srv.root().generate("e", name, b"ad", 32))
            .unwrap()
    };
    let check = |srv: &Server, name: &str, g: &proto::GenerateKeyResponse| {
        let d = rt()
            .block_on(srv.root().decrypt("e", name, &g.ciphertext, b"ad"))
            .unwrap();
        assert_eq!(d.plaintext, g.plaintext);
    };
    // 1. Software HSM only.
    let mut srv = Server::try_start_env(&dir, &soft, &[]).unwrap();
    ok(&srv.cli(None, &["add-enclave", "e"]));
    ok(&srv.cli(None, &["add-key", "-e", "e", "k"]));
    let g1 = enc(&srv, "k");
    srv.stop();
    // 2. Both configured (the software HSM roots trust); seal with SoftHSM2 too.
    let both_soft = with(
        with(
            soft.clone(),
            &hsm.iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect::<Vec<_>>(),
        ),
        &[("KMS_HSM_PRIMARY", "soft")],
    );
    let mut srv = Server::try_start_env(&dir, &both_soft, &[]).unwrap();
    let e = kms_tests::fails(&srv.cli(None, &["add-hsm", "no-such-hsm"]));
    assert!(e.contains("not configured"), "{e}");
    ok(&srv.cli(None, &["add-hsm", "pkcs11"]));
    let e = kms_tests::fails(&srv.cli(None, &["add-hsm", "pkcs11"]));
    assert!(e.contains("already"), "{e}");
    let listed = ok(&srv.cli(None, &["ls-hsm"]));
    assert!(
        listed.contains("soft:") && listed.contains("pkcs11:"),
        "{listed}"
    );
    srv.stop();
    // 3. SoftHSM2 only: it unseals; the root identity is now the token's.
    let mut srv = Server::try_start_env(&dir, &hsm, &[]).unwrap();
    check(&srv, "k", &g1);
    ok(&srv.cli(None, &["add-key", "-e", "e", "k2"]));
    let g2 = enc(&srv, "k2");
    // The software HSM is not configured here but still seals: it may be removed
    // since the token's entry remains; the token's own entry may not.
    let listed = ok(&srv.cli(None, &["ls-hsm"]));
    let soft_name = listed
        .split_whitespace()
        .find(|w| w.starts_with("soft:"))
        .unwrap()
        .to_string();
    let p11_name = listed
        .split_whitespace()
        .find(|w| w.starts_with("pkcs11:"))
        .unwrap()
        .to_string();
    let e = kms_tests::fails(&srv.cli(None, &["rm-hsm", &p11_name]));
    assert!(e.contains("no configured HSM"), "{e}");
    ok(&srv.cli(None, &["rm-hsm", &soft_name]));
    srv.stop();
    let e = Server::try_start_env(&dir, &soft, &[])
        .err()
        .expect("the software HSM was removed");
    assert!(e.contains("cannot unseal"), "{e}");
    // 4. Both configured (SoftHSM2 roots trust); seal with the software HSM again.
    let both_p11 = with(
        with(
            soft.clone(),
            &hsm.iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect::<Vec<_>>(),
        ),
        &[("KMS_HSM_PRIMARY", "pkcs11")],
    );
    let mut srv = Server::try_start_env(&dir, &both_p11, &[]).unwrap();
    ok(&srv.cli(None, &["add-hsm", "soft"]));
    check(&srv, "k", &g1);
    srv.stop();
    // With both configured, removing either entry still starts.
    for remove in [&p11_name, &soft_name] {
        let mut srv = Server::try_start_env(&dir, &both_p11, &[]).unwrap();
        ok(&srv.cli(None, &["rm-hsm", remove]));
        srv.stop();
        let mut srv = Server::try_start_env(&dir, &both_p11, &[]).unwrap();
        check(&srv, "k2", &g2);
        let other = if remove == &p11_name {
            "pkcs11"
        } else {
            "soft"
        };
        ok(&srv.cli(None, &["add-hsm", other]));
        srv.stop();
    }
    // 5. Back to the software HSM only: every key still works.
    let srv = Server::try_start_env(&dir, &soft, &[]).unwrap();
    check(&srv, "k", &g1);
    check(&srv, "k2", &g2);
    let keys = rt().block_on(srv.root().list_keys("e", "")).unwrap();
    assert_eq!(keys.len(), 2);
    let st: proto::ClusterStatusResponse = rt()
        .block_on(srv.root().call(
            None,
            Command::ClusterStatus,
            &proto::ClusterStatusRequest {},
        ))
        .unwrap();
    let me = st.nodes_up.values().next().unwrap();
    assert_eq!(me.hsms.len(), 2, "{:?}", me.hsms);
}

/// The HSM is needed at start, not for requests: once the token is gone,
/// generate, encrypt and decrypt go on; what needs the HSM fails cleanly.
#[test]
fn losing_the_hsm_after_start_does_not_affect_crypto() {
    let tmp = tempfile::tempdir().unwrap();
    let hsm_dir = tmp.path().join("hsm");
    let hsm = softhsm_token(&hsm_dir, "node0", None);
    let dir = data_dir(&tmp, "kms0");
    // The HSM is checked every second (a seal and an unseal).
    let hsm = with(hsm, &[("KMS_HSM_CHECK_SECS", "1")]);
    let srv = Server::try_start_env(&dir, &hsm, &["--metrics-public"]).unwrap();
    let health = |name: &str| -> Option<u64> {
        let out = std::process::Command::new("curl")
            .args(["-k", "-s", "-m", "10"])
            .arg(format!("https://{}/v1/health/metrics", srv.addr))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .find(|l| l.starts_with(&format!("{name}{{hsm=\"pkcs11:")))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
    };
    ok(&srv.cli(None, &["add-enclave", "e"]));
    ok(&srv.cli(None, &["add-key", "-e", "e", "k"]));
    let c = srv.root();
    let before = rt().block_on(c.generate("e", "k", b"ad", 32)).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert_eq!(health("kms_hsm_up"), Some(1));
    assert_eq!(health("kms_hsm_errors_total"), Some(0));
    // The device goes away: its token directory is deleted.
    std::fs::remove_dir_all(hsm_dir.join("tokens")).unwrap();
    // The next check shows it, in the metrics and the log, while the node
    // keeps serving.
    kms_tests::wait_until(std::time::Duration::from_secs(10), "kms_hsm_up 0", || {
        health("kms_hsm_up") == Some(0)
    });
    assert!(health("kms_hsm_errors_total").unwrap() >= 1);
    assert!(
        srv.log()
            .contains("HSM check failed: the node runs on its unsealed root key"),
        "{}",
        srv.log()
    );
    rt().block_on(async {
        for i in 0..200u32 {
            let g = c.generate("e", "k", &i.to_be_bytes(), 32).await.unwrap();
            assert_eq!(
                c.decrypt("e", "k", &g.ciphertext, &i.to_be_bytes())
                    .await
                    .unwrap()
                    .plaintext,
                g.plaintext
            );
        }
        assert_eq!(
            c.decrypt("e", "k", &before.ciphertext, b"ad")
                .await
                .unwrap()
                .plaintext,
            before.plaintext
        );
        c.create_key("e", "k2", "", false).await.unwrap();
    });
    // An operation that needs the HSM fails with the documented 503 (the
    // token's key object is gone); the node keeps serving.
    let e = kms_tests::fails(&srv.cli(None, &["add-hsm", "pkcs11", "--overwrite"]));
    assert!(
        e.starts_with("kms: add-hsm pkcs11: cannot seal the root key with HSM pkcs11:")
            && e.trim_end().ends_with("(HTTP 503)"),
        "{e}"
    );
    let g = rt().block_on(c.generate("e", "k2", b"", 32)).unwrap();
    assert_eq!(g.version, 1);
}

/// Two nodes whose SoftHSM2 tokens hold the same imported key form a
/// cluster (same inter-node key, same root API key); a node whose token
/// holds another key cannot join, and says so.
#[test]
fn tokens_with_the_same_key_form_a_cluster_another_key_cannot_join() {
    let tmp = tempfile::tempdir().unwrap();
    let key = tmp.path().join("shared.key");
    std::fs::write(&key, [7u8; 32]).unwrap();
    let other = tmp.path().join("other.key");
    std::fs::write(&other, [9u8; 32]).unwrap();
    let fast = |mut env: Vec<(String, String)>| {
        env.push(("KMS_HEARTBEAT_MS".into(), "50".into()));
        env.push(("KMS_ELECTION_MS".into(), "500".into()));
        env
    };
    let h1 = fast(softhsm_token(&tmp.path().join("hsm1"), "node1", Some(&key)));
    let h2 = fast(softhsm_token(&tmp.path().join("hsm2"), "node2", Some(&key)));
    let h3 = fast(softhsm_token(
        &tmp.path().join("hsm3"),
        "node3",
        Some(&other),
    ));
    let s1 = Server::try_start_env(&data_dir(&tmp, "n1"), &h1, &[]).unwrap();
    let s2 = Server::try_start_env(&data_dir(&tmp, "n2"), &h2, &[]).unwrap();
    let s3 = Server::try_start_env(&data_dir(&tmp, "n3"), &h3, &[]).unwrap();
    assert_eq!(s1.root_key.identity(), s2.root_key.identity());
    assert_ne!(s1.root_key.identity(), s3.root_key.identity());
    ok(&s1.cli(None, &["add-enclave", "e"]));
    ok(&s1.cli(None, &["add-key", "-e", "e", "k"]));
    ok(&s1.cli(None, &["add", &s2.url()]));
    ok(&s2.cli(None, &["stat-key", "-e", "e", "k"]));
    ok(&s2.cli(None, &["add-key", "-e", "e", "k2"]));
    ok(&s1.cli(None, &["stat-key", "-e", "e", "k2"]));
    let o = s1.cli(None, &["add", &s3.url()]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("HSM key differs"), "{err}");
    let refused = kms_tests::eventually(std::time::Duration::from_secs(5), || {
        s3.log().contains("another HSM key").then_some(())
    });
    assert!(refused.is_some(), "{}", s3.log());
}
