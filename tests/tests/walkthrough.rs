//! Walkthrough 1 of PRODUCT.md, single-node part, exactly as the seed runs it
//! (with `kms` for `minkms`), against a real `kms server` process.

use kms_tests::{data_dir, fails, ok, Server, SEED_HSM_KEY};

#[test]
fn seed_walkthrough_single_node() {
    let tmp = tempfile::tempdir().unwrap();
    let srv = Server::start(&data_dir(&tmp, "kms0"), SEED_HSM_KEY);
    // The first start prints the URL, node id, root API key and identity.
    assert!(srv.stdout.contains("node id"), "{}", srv.stdout);
    let root = kms_tests::root_key(SEED_HSM_KEY);
    // Pinned: every node with the seed's HSM key prints this root key.
    assert_eq!(
        &*root.to_secret_string(),
        "k1:NOqFfHRIzUH8ni4Z_NydDWpqfxIZWpdHV1ceWscf7XY"
    );
    assert_eq!(
        root.identity().to_string(),
        "h1:fNnbsc2CY53hYdDHSjW-QTQAlkz5AsNSd1btlT1QYy4"
    );
    assert!(srv.stdout.contains(&*root.to_secret_string()));
    assert!(srv.stdout.contains(&root.identity().to_string()));

    // kms ls
    let ls = ok(&srv.cli(None, &["ls"]));
    assert!(
        ls.contains(&srv.addr) && ls.contains("Leader") && ls.contains("up"),
        "{ls}"
    );
    // kms add-enclave enclave-1
    ok(&srv.cli(None, &["add-enclave", "enclave-1"]));
    // kms add-key --enclave enclave-1 key-1
    ok(&srv.cli(None, &["add-key", "--enclave", "enclave-1", "key-1"]));
    // kms stat-key --enclave enclave-1 key-1
    let stat = ok(&srv.cli(None, &["stat-key", "--enclave", "enclave-1", "key-1"]));
    assert!(stat.contains("key-1") && stat.contains("AES256"), "{stat}");
    assert!(
        stat.contains(&root.identity().to_string()),
        "created-by: {stat}"
    );

    // Errors are one clear line and a non-zero exit.
    let e = fails(&srv.cli(None, &["add-enclave", "enclave-1"]));
    assert!(e.contains("enclave already exists"), "{e}");
    let e = fails(&srv.cli(None, &["stat-key", "--enclave", "enclave-1", "key-2"]));
    assert!(e.contains("key does not exist"), "{e}");
    let e = fails(&srv.cli(None, &["stat-key", "key-1"]));
    assert!(e.contains("--enclave"), "{e}");
}

#[test]
fn cli_key_lifecycle_and_json() {
    let tmp = tempfile::tempdir().unwrap();
    let srv = Server::start(&data_dir(&tmp, "kms0"), SEED_HSM_KEY);
    ok(&srv.cli(None, &["add-enclave", "e"]));
    ok(&srv.cli(None, &["add-key", "-e", "e", "k", "--type", "chacha20"]));
    let out = ok(&srv.cli(
        None,
        &[
            "--json",
            "keygen",
            "-e",
            "e",
            "k",
            "--context",
            "ctx",
            "--length",
            "64",
        ],
    ));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["version"], 1);
    let ct = v["ciphertext"].as_str().unwrap().to_string();
    let dec = ok(&srv.cli(
        None,
        &["--json", "decrypt", "-e", "e", "k", &ct, "--context", "ctx"],
    ));
    let d: serde_json::Value = serde_json::from_str(&dec).unwrap();
    assert_eq!(d["plaintext"], v["plaintext"]);
    let e = fails(&srv.cli(
        None,
        &["decrypt", "-e", "e", "k", &ct, "--context", "other"],
    ));
    assert!(
        e.trim_end().ends_with(": invalid ciphertext (HTTP 400)"),
        "{e}"
    );
    let ls = ok(&srv.cli(None, &["--json", "ls-key", "-e", "e"]));
    let l: serde_json::Value = serde_json::from_str(&ls).unwrap();
    assert_eq!(l[0]["type"], "ChaCha20");
    let mac1 = ok(&srv.cli(None, &["mac", "-e", "e", "k", "hello"]));
    let mac2 = ok(&srv.cli(None, &["mac", "-e", "e", "k", "hello"]));
    assert_eq!(mac1, mac2);
    ok(&srv.cli(None, &["rm-key", "-e", "e", "k", "--all"]));
    let e = fails(&srv.cli(None, &["stat-key", "-e", "e", "k"]));
    assert!(e.contains("key does not exist (HTTP 404)"), "{e}");
    let enclaves = ok(&srv.cli(None, &["ls-enclave"]));
    assert!(enclaves.contains('e'));
    ok(&srv.cli(None, &["rm-enclave", "e"]));
    let e = fails(&srv.cli(None, &["stat-enclave", "e"]));
    assert!(e.contains("enclave does not exist"), "{e}");
}

#[test]
fn identity_and_keys_commands_offline() {
    let bin = kms_tests::kms_bin();
    let o = std::process::Command::new(&bin)
        .args(["identity", "k1:d7cY_5k8HbBGkZpoy2hGmvkxg83QDBXsA_nFXDfTk2E"])
        .output()
        .unwrap();
    assert!(ok(&o).contains("h1:Rvxa7nj8zkL48CeDkN6LhpX-K7KK6uhIhpBOcTHNhWw"));
    let o = std::process::Command::new(&bin)
        .args(["identity", "--hsm"])
        .env("KMS_HSM_KEY", SEED_HSM_KEY)
        .output()
        .unwrap();
    let out = ok(&o);
    assert!(
        out.contains(&*kms_tests::root_key(SEED_HSM_KEY).to_secret_string()),
        "{out}"
    );
    // The MINIO_KMS_* alias works as well.
    let o = std::process::Command::new(&bin)
        .args(["identity", "--hsm"])
        .env_remove("KMS_HSM_KEY")
        .env("MINIO_KMS_HSM_KEY", SEED_HSM_KEY)
        .output()
        .unwrap();
    assert_eq!(ok(&o), out);
    let o = std::process::Command::new(&bin)
        .args(["new-hsm-key"])
        .output()
        .unwrap();
    assert!(ok(&o).starts_with("hsm:aes256:"));
    let o = std::process::Command::new(&bin)
        .args(["--json", "new-api-key"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&ok(&o)).unwrap();
    let k = kms_client::ApiKey::parse(v["api_key"].as_str().unwrap()).unwrap();
    assert_eq!(k.identity().to_string(), v["identity"].as_str().unwrap());
    let o = std::process::Command::new(&bin)
        .args(["identity", "k1:nope"])
        .output()
        .unwrap();
    assert_eq!(fails(&o), "kms: API key must hold 32 bytes, not 3\n");
}
