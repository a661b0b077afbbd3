//! Restart, crash, wrong HSM key, data at rest, backup and restore.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use kms_client::proto;
use kms_tests::{data_dir, rt, Server, SEED_HSM_KEY};

#[test]
fn sigterm_restart_keeps_every_key() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = data_dir(&tmp, "kms0");
    let mut srv = Server::start(&dir, SEED_HSM_KEY);
    let c = srv.root();
    let cts = rt().block_on(async {
        c.create_enclave("e").await.unwrap();
        let mut cts = Vec::new();
        for i in 0..20 {
            c.create_key(
                "e",
                &format!("k{i}"),
                if i % 2 == 0 { "AES256" } else { "ChaCha20" },
                false,
            )
            .await
            .unwrap();
            cts.push(c.generate("e", &format!("k{i}"), b"ad", 32).await.unwrap());
        }
        cts
    });
    let status = srv.stop();
    assert!(status.success(), "SIGTERM exit status {status}");
    let srv = Server::start(&dir, SEED_HSM_KEY);
    // A restart does not print the root API key again.
    assert!(!srv
        .stdout
        .contains(&*kms_tests::root_key(SEED_HSM_KEY).to_secret_string()));
    let c = srv.root();
    rt().block_on(async {
        for (i, g) in cts.iter().enumerate() {
            let d = c
                .decrypt("e", &format!("k{i}"), &g.ciphertext, b"ad")
                .await
                .unwrap();
            assert_eq!(d.plaintext, g.plaintext);
        }
    });
}

#[test]
fn kill9_during_writes_loses_no_acknowledged_key() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = data_dir(&tmp, "kms0");
    let mut srv = Server::start(&dir, SEED_HSM_KEY);
    let c = srv.root();
    let acked = Arc::new(Mutex::new(
        Vec::<(String, proto::GenerateKeyResponse)>::new(),
    ));
    let stop = Arc::new(AtomicBool::new(false));
    // Set just before the kill: an error before it is a failure, after it
    // the expected end of a writer.
    let killing = Arc::new(AtomicBool::new(false));
    let runtime = rt();
    runtime.block_on(async {
        c.create_enclave("e").await.unwrap();
    });
    // Four concurrent writers, bounded in count; each key is recorded only after
    // its creation and a data key under it were acknowledged.
    let mut tasks = Vec::new();
    for w in 0..4 {
        let (c, acked, stop, killing) = (c.clone(), acked.clone(), stop.clone(), killing.clone());
        tasks.push(runtime.spawn(async move {
            for i in 0..5_000 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let name = format!("w{w}-{i}");
                let r = match c.create_key("e", &name, "", false).await {
                    Ok(()) => c.generate("e", &name, b"", 32).await.map(|g| (name, g)),
                    Err(e) => Err(e),
                };
                match r {
                    Ok(v) => acked.lock().unwrap().push(v),
                    Err(_) if killing.load(Ordering::SeqCst) => break,
                    Err(e) => return Err(format!("writer {w}, key {i}, before the kill: {e}")),
                }
            }
            Ok(())
        }));
    }
    kms_tests::wait_until(
        std::time::Duration::from_secs(60),
        "100 acknowledged writes before the crash",
        || acked.lock().unwrap().len() >= 100,
    );
    killing.store(true, Ordering::SeqCst);
    srv.kill9();
    stop.store(true, Ordering::Relaxed);
    runtime.block_on(async {
        for t in tasks {
            t.await
                .expect("writer task")
                .unwrap_or_else(|e| panic!("{e}"));
        }
    });
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() > 20,
        "too few writes before the crash: {}",
        acked.len()
    );
    let srv = Server::start(&dir, SEED_HSM_KEY);
    let c = srv.root();
    runtime.block_on(async {
        for (name, g) in &acked {
            let d = c
                .decrypt("e", name, &g.ciphertext, b"")
                .await
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(&d.plaintext, &g.plaintext);
        }
    });
}

#[test]
fn wrong_hsm_key_is_a_clear_error_and_changes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = data_dir(&tmp, "kms0");
    let mut srv = Server::start(&dir, SEED_HSM_KEY);
    kms_tests::ok(&srv.cli(None, &["add-enclave", "e"]));
    srv.stop();
    let before = kms_tests::dir_snapshot(&dir);
    let other = hsm_backends::SoftHsm::generate_key_str();
    let err = Server::try_start(&dir, &other, &[])
        .err()
        .expect("must not start");
    assert!(
        err.contains("cannot unseal") && err.contains("KMS_HSM_KEY"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    let bad = Server::try_start(&dir, "hsm:aes256:short", &[])
        .err()
        .expect("must not start");
    assert!(bad.contains("KMS_HSM_KEY"), "{bad}");
    assert_eq!(
        before,
        kms_tests::dir_snapshot(&dir),
        "a failed start changed the data directory"
    );
    // And the right key still opens it.
    let srv = Server::start(&dir, SEED_HSM_KEY);
    assert!(kms_tests::ok(&srv.cli(None, &["ls-enclave"])).contains('e'));
}

#[test]
fn no_key_material_at_rest() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = data_dir(&tmp, "kms0");
    let mut srv = Server::start(&dir, SEED_HSM_KEY);
    let known: Vec<u8> = (0..32u8)
        .map(|i| i.wrapping_mul(37).wrapping_add(11))
        .collect();
    let import = tmp.path().join("key.bin");
    std::fs::write(&import, &known).unwrap();
    kms_tests::ok(&srv.cli(None, &["add-enclave", "e"]));
    kms_tests::ok(&srv.cli(
        None,
        &[
            "add-key",
            "-e",
            "e",
            "imported",
            "--import",
            import.to_str().unwrap(),
        ],
    ));
    for i in 0..10 {
        kms_tests::ok(&srv.cli(None, &["add-key", "-e", "e", &format!("k{i}")]));
    }
    kms_tests::ok(&srv.cli(None, &["add-key", "-e", "e", "k0", "--version"]));
    // The imported key works: a ciphertext made with the known bytes decrypts.
    let c = srv.root();
    let ct = rt()
        .block_on(c.encrypt("e", "imported", b"x", b""))
        .unwrap();
    let km = kms_node_crypto_check(&known, &ct.ciphertext);
    assert!(km, "the imported key is not the known bytes");
    srv.stop();
    // Every key's material, as exported in a backup opened with the HSM, must not be on disk.
    let files = kms_tests::dir_snapshot(&dir);
    for (path, bytes) in &files {
        assert!(
            !bytes.windows(32).any(|w| w == known.as_slice()),
            "imported key bytes found in {path}"
        );
    }
    let secrets = kms_tests_secrets(&dir);
    assert!(secrets.len() >= 12, "{}", secrets.len());
    for s in &secrets {
        for (path, bytes) in &files {
            assert!(
                !bytes.windows(32).any(|w| w == s.as_slice()),
                "key material found in {path}"
            );
        }
    }
    // The HSM key is not on disk either (outside --dev).
    let hsm_raw = base64::Engine::decode(
        &base64::engine::general_purpose::STANDARD,
        SEED_HSM_KEY.trim_start_matches("hsm:aes256:"),
    )
    .unwrap();
    for (path, bytes) in &files {
        assert!(
            !bytes.windows(32).any(|w| w == hsm_raw.as_slice()),
            "HSM key found in {path}"
        );
    }
}

/// Checks that `ct` (a v1 AES256 ciphertext) was made with `key`, decrypting
/// it as docs/formats.md specifies, independently of the server's code.
fn kms_node_crypto_check(key: &[u8], ct: &[u8]) -> bool {
    use aes_gcm::aead::{AeadInPlace, KeyInit};
    use hmac::Mac;
    if ct.len() < 50 || ct[0] != 1 || ct[1] != 1 {
        return false;
    }
    let (header, rest) = ct.split_at(34);
    let mut m = <hmac::Hmac<sha2::Sha256> as Mac>::new_from_slice(key).unwrap();
    m.update(b"kms/v1/msg");
    m.update(&header[6..22]);
    let k = m.finalize().into_bytes();
    let (body, tag) = rest.split_at(rest.len() - 16);
    let mut buf = body.to_vec();
    aes_gcm::Aes256Gcm::new_from_slice(&k)
        .unwrap()
        .decrypt_in_place_detached(header[22..34].into(), header, &mut buf, tag.into())
        .is_ok()
}

/// Every key version's secret, read through a sealed backup opened with the HSM.
fn kms_tests_secrets(dir: &Path) -> Vec<Vec<u8>> {
    let srv = Server::start(dir, SEED_HSM_KEY);
    let c = srv.root();
    let blob = rt().block_on(async {
        let r = c.request(http::Method::GET, "/v1/db", None).await.unwrap();
        kms_client::client::check(r).unwrap()
    });
    drop(srv);
    kms_tests::backup_secrets(&blob, SEED_HSM_KEY)
}

#[test]
fn backup_restores_into_a_fresh_node() {
    let tmp = tempfile::tempdir().unwrap();
    let srv = Server::start(&data_dir(&tmp, "a"), SEED_HSM_KEY);
    let c = srv.root();
    let file = tmp.path().join("backup.kms");
    kms_tests::ok(&srv.cli(None, &["add-enclave", "e"]));
    kms_tests::ok(&srv.cli(None, &["add-key", "-e", "e", "k"]));
    let g = rt().block_on(c.generate("e", "k", b"ad", 32)).unwrap();
    kms_tests::ok(&srv.cli(None, &["backup", file.to_str().unwrap()]));
    let blob = std::fs::read(&file).unwrap();
    assert!(blob.starts_with(b"KMSBAK01"));
    // The backup holds no key material in plaintext.
    for s in kms_tests::backup_secrets(&blob, SEED_HSM_KEY) {
        assert!(!blob.windows(32).any(|w| w == s.as_slice()));
    }
    // Restore into a fresh node with the same HSM key.
    let fresh = Server::start(&data_dir(&tmp, "b"), SEED_HSM_KEY);
    kms_tests::ok(&fresh.cli(None, &["restore", file.to_str().unwrap()]));
    let d = rt()
        .block_on(fresh.root().decrypt("e", "k", &g.ciphertext, b"ad"))
        .unwrap();
    assert_eq!(d.plaintext, g.plaintext);
    // A node with another HSM key refuses it.
    let other_key = hsm_backends::SoftHsm::generate_key_str();
    let other = Server::start(&data_dir(&tmp, "c"), &other_key);
    let e = kms_tests::fails(&other.cli(None, &["restore", file.to_str().unwrap()]));
    assert!(e.contains("HSM"), "{e}");
    // Garbage is refused with 400 and changes nothing.
    let junk = tmp.path().join("junk");
    std::fs::write(&junk, b"KMSBAK01\0\0garbage").unwrap();
    fails_with(
        &fresh.cli(None, &["restore", junk.to_str().unwrap()]),
        "400",
    );
    // Only SysAdmins may back up.
    let user = kms_client::ApiKey::generate();
    fails_with(
        &fresh.cli(
            Some(&user),
            &["backup", tmp.path().join("x").to_str().unwrap()],
        ),
        "403",
    );
    let d = rt()
        .block_on(fresh.root().decrypt("e", "k", &g.ciphertext, b"ad"))
        .unwrap();
    assert_eq!(d.plaintext, g.plaintext);
}

fn fails_with(o: &std::process::Output, what: &str) {
    let e = kms_tests::fails(o);
    assert!(e.contains(what), "{e}");
}
