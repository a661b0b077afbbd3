//! Asymmetric keys through the real server, the CLI and the client: every
//! type is created, signs, verifies and exports its public key; OpenSSL
//! checks the signatures and encrypts for RSA-OAEP; imported keys keep
//! their public key; versions rotate; keys survive a restart and replicate
//! to every node of a cluster, which keeps signing with the others down;
//! and kms-go's listing rules hold on an enclave that mixes key kinds.

use std::path::Path;
use std::process::Command;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use kms_client::proto;
use kms_tests::{cluster, data_dir, fails, ok, rt, Server, SEED_HSM_KEY};

const TYPES: [&str; 9] = [
    "ec-p256",
    "ec-p384",
    "ed25519",
    "rsa-2048",
    "rsa-3072",
    "rsa-4096",
    "ml-dsa-44",
    "ml-dsa-65",
    "ml-dsa-87",
];

fn openssl(args: &[&str]) -> std::process::Output {
    Command::new("openssl")
        .args(args)
        .output()
        .expect("run openssl")
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> String {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p.to_str().unwrap().to_string()
}

/// OpenSSL verifies a signature made through the CLI (ML-DSA: OpenSSL 3.0
/// has none; the server's own verify and the vendored vectors cover it).
fn openssl_verifies(dir: &Path, t: &str, pem: &str, msg: &str, sig: &[u8]) {
    let pubf = write(dir, &format!("{t}.pub.pem"), pem.as_bytes());
    let msgf = write(dir, &format!("{t}.msg"), msg.as_bytes());
    let sigf = write(dir, &format!("{t}.sig"), sig);
    let o = if t == "ed25519" {
        openssl(&[
            "pkeyutl", "-verify", "-pubin", "-inkey", &pubf, "-rawin", "-in", &msgf, "-sigfile",
            &sigf,
        ])
    } else {
        let md = if t == "ec-p384" { "-sha384" } else { "-sha256" };
        openssl(&["dgst", md, "-verify", &pubf, "-signature", &sigf, &msgf])
    };
    assert!(
        o.status.success(),
        "openssl does not verify the {t} signature: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn every_type_signs_verifies_and_exports_through_the_cli() {
    let tmp = tempfile::tempdir().unwrap();
    let mut srv = Server::start(&data_dir(&tmp, "kms0"), SEED_HSM_KEY);
    ok(&srv.cli(None, &["add-enclave", "e"]));
    let msg = "the message to sign";
    let mut pems = Vec::new();
    for t in TYPES {
        let name = format!("k-{t}");
        ok(&srv.cli(None, &["add-key", "--enclave", "e", "--type", t, &name]));
        // stat-key shows the type and the public key's fingerprint.
        let stat = ok(&srv.cli(None, &["stat-key", "--enclave", "e", &name]));
        assert!(stat.contains(&t.to_uppercase()), "{stat}");
        assert!(stat.contains("SHA256:"), "{stat}");
        let pem = ok(&srv.cli(None, &["pubkey", "--enclave", "e", &name]));
        assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----"), "{pem}");
        let mut args = vec!["sign", "--enclave", "e", &name, msg];
        if t.starts_with("ec-") {
            args.push("--der");
        }
        let sig_b64 = ok(&srv.cli(None, &args)).trim().to_string();
        let sig = B64.decode(&sig_b64).unwrap();
        if !t.starts_with("ml-dsa") {
            openssl_verifies(tmp.path(), t, &pem, msg, &sig);
        }
        let mut args = vec!["verify", "--enclave", "e", &name, &sig_b64, msg];
        if t.starts_with("ec-") {
            args.push("--der");
        }
        assert!(ok(&srv.cli(None, &args)).contains("valid (version 1)"));
        // A changed message is not valid: exit status 1, a clear message.
        let mut args = vec![
            "verify",
            "--enclave",
            "e",
            &name,
            &sig_b64,
            "another message",
        ];
        if t.starts_with("ec-") {
            args.push("--der");
        }
        let err = fails(&srv.cli(None, &args));
        assert!(err.contains("the signature is not valid"), "{err}");
        pems.push((name, pem));
    }

    // ML-DSA with a context: the context is bound to the signature.
    let sig = ok(&srv.cli(
        None,
        &[
            "sign",
            "--enclave",
            "e",
            "k-ml-dsa-65",
            msg,
            "--context",
            "ctx-1",
        ],
    ));
    let sig = sig.trim();
    ok(&srv.cli(
        None,
        &[
            "verify",
            "--enclave",
            "e",
            "k-ml-dsa-65",
            sig,
            msg,
            "--context",
            "ctx-1",
        ],
    ));
    fails(&srv.cli(
        None,
        &[
            "verify",
            "--enclave",
            "e",
            "k-ml-dsa-65",
            sig,
            msg,
            "--context",
            "ctx-2",
        ],
    ));

    // Rotation: version 2 signs, a version-1 signature still verifies
    // (every version is tried), and the public key changed.
    let old = ok(&srv.cli(None, &["sign", "--enclave", "e", "k-ec-p256", msg]));
    ok(&srv.cli(
        None,
        &["add-key", "--enclave", "e", "--version", "k-ec-p256"],
    ));
    let new_pem = ok(&srv.cli(None, &["pubkey", "--enclave", "e", "k-ec-p256"]));
    assert_ne!(new_pem, pems[0].1);
    assert!(ok(&srv.cli(
        None,
        &["verify", "--enclave", "e", "k-ec-p256", old.trim(), msg]
    ))
    .contains("valid (version 1)"));
    let v1 = ok(&srv.cli(
        None,
        &[
            "pubkey",
            "--enclave",
            "e",
            "k-ec-p256",
            "--key-version",
            "1",
        ],
    ));
    assert_eq!(v1, pems[0].1);

    // The keys survive a restart: the same public keys, and they sign.
    srv.restart();
    for (name, pem) in &pems[1..] {
        assert_eq!(
            &ok(&srv.cli(None, &["pubkey", "--enclave", "e", name])),
            pem,
            "{name}"
        );
        ok(&srv.cli(None, &["sign", "--enclave", "e", name, msg]));
    }
    // Deleting a key deletes it; its name can be reused by any kind.
    ok(&srv.cli(None, &["rm-key", "--enclave", "e", "--all", "k-ed25519"]));
    let err = fails(&srv.cli(None, &["pubkey", "--enclave", "e", "k-ed25519"]));
    assert!(err.contains("key does not exist (HTTP 404)"), "{err}");
    ok(&srv.cli(None, &["add-key", "--enclave", "e", "k-ed25519"]));
}

#[test]
fn imports_oaep_and_wrong_uses() {
    let tmp = tempfile::tempdir().unwrap();
    let srv = Server::start(&data_dir(&tmp, "kms0"), SEED_HSM_KEY);
    ok(&srv.cli(None, &["add-enclave", "e"]));
    let d = tmp.path();
    let key = d.join("rsa.pem");
    let k = key.to_str().unwrap();
    assert!(openssl(&[
        "genpkey",
        "-algorithm",
        "RSA",
        "-pkeyopt",
        "rsa_keygen_bits:2048",
        "-out",
        k
    ])
    .status
    .success());
    let pubf = d.join("rsa.pub.pem");
    assert!(
        openssl(&["pkey", "-in", k, "-pubout", "-out", pubf.to_str().unwrap()])
            .status
            .success()
    );
    // Imported without --type: the server recognizes the private key.
    ok(&srv.cli(None, &["add-key", "--enclave", "e", "--import", k, "imp"]));
    let pem = ok(&srv.cli(None, &["pubkey", "--enclave", "e", "imp"]));
    assert_eq!(pem, std::fs::read_to_string(&pubf).unwrap());
    let stat = ok(&srv.cli(None, &["stat-key", "--enclave", "e", "imp"]));
    assert!(stat.contains("RSA-2048"), "{stat}");
    // A wrong --type for the imported key is refused, and nothing is made.
    let err = fails(&srv.cli(
        None,
        &[
            "add-key",
            "--enclave",
            "e",
            "--type",
            "ec-p256",
            "--import",
            k,
            "imp2",
        ],
    ));
    assert!(
        err.contains("the imported key is RSA-2048, not EC-P256"),
        "{err}"
    );

    // RSA-OAEP: OpenSSL encrypts with the public key, the cluster decrypts.
    let plain = write(d, "plain", b"a wrapped data key");
    let ct = d.join("ct");
    assert!(openssl(&[
        "pkeyutl",
        "-encrypt",
        "-pubin",
        "-inkey",
        pubf.to_str().unwrap(),
        "-in",
        &plain,
        "-out",
        ct.to_str().unwrap(),
        "-pkeyopt",
        "rsa_padding_mode:oaep",
        "-pkeyopt",
        "rsa_oaep_md:sha256",
        "-pkeyopt",
        "rsa_mgf1_md:sha256",
    ])
    .status
    .success());
    let ct = std::fs::read(&ct).unwrap();
    let c = srv.root();
    rt().block_on(async {
        let r = c
            .asym_decrypt("e", "imp", &ct, "SHA-256", b"")
            .await
            .unwrap();
        assert_eq!(r.plaintext, b"a wrapped data key");
        assert_eq!(r.version, 1);
        // A wrong label or hash, or a changed ciphertext: one answer.
        for (ct, hash, label) in [
            (ct.clone(), "SHA-256", &b"label"[..]),
            (ct.clone(), "SHA-1", &b""[..]),
            (
                {
                    let mut c = ct.clone();
                    c[10] ^= 1;
                    c
                },
                "SHA-256",
                &b""[..],
            ),
        ] {
            let e = c
                .asym_decrypt("e", "imp", &ct, hash, label)
                .await
                .unwrap_err();
            assert_eq!(e.status(), Some(400), "{e}");
            assert!(e.to_string().contains("decryption failed"), "{e}");
        }

        // Wrong uses: a clear 400 each.
        c.create_key("e", "aes", "AES256", false).await.unwrap();
        c.create_key("e", "ed", "ED25519", false).await.unwrap();
        let e = c
            .sign("e", "aes", 0, b"m", Default::default())
            .await
            .unwrap_err();
        assert_eq!(e.status(), Some(400));
        assert!(e.to_string().contains("is a secret key (AES256)"), "{e}");
        let e = c.encrypt("e", "ed", b"m", b"").await.unwrap_err();
        assert_eq!(e.status(), Some(400));
        assert!(
            e.to_string().contains("is an asymmetric key (ED25519)"),
            "{e}"
        );
        let e = c.asym_decrypt("e", "ed", b"x", "", b"").await.unwrap_err();
        assert!(e.to_string().contains("ED25519 keys do not decrypt"), "{e}");
        let e = c
            .sign(
                "e",
                "ed",
                0,
                b"m",
                proto::SignParams {
                    prehashed: true,
                    ..Default::default()
                },
            )
            .await
            .unwrap_err();
        assert!(
            e.to_string()
                .contains("ED25519 keys take no pre-hashed input"),
            "{e}"
        );
        let e = c
            .sign(
                "e",
                "imp",
                0,
                &[0u8; 31],
                proto::SignParams {
                    prehashed: true,
                    ..Default::default()
                },
            )
            .await
            .unwrap_err();
        assert_eq!(e.status(), Some(400), "{e}");
        // A name taken by a secret key cannot become an asymmetric key.
        let e = c
            .create_key("e", "aes", "EC-P256", false)
            .await
            .unwrap_err();
        assert_eq!(e.status(), Some(409), "{e}");
        let e = c.create_key("e", "x", "RSA-1024", false).await.unwrap_err();
        assert!(
            e.to_string().contains("unsupported key type 'RSA-1024'"),
            "{e}"
        );
        let e = c
            .import_key(
                "e",
                "junk",
                "EC-P256",
                b"-----BEGIN PRIVATE KEY-----\nAAAA\n",
            )
            .await
            .unwrap_err();
        assert_eq!(e.status(), Some(400), "{e}");
        // A pre-hashed ECDSA signature verifies against the message's digest.
        let digest = openssl_sha256(b"hello");
        c.create_key("e", "p", "EC-P256", false).await.unwrap();
        let params = proto::SignParams {
            prehashed: true,
            ..Default::default()
        };
        let s = c.sign("e", "p", 0, &digest, params.clone()).await.unwrap();
        assert_eq!(s.signature.len(), 64);
        let v = c
            .verify("e", "p", 0, b"hello", &s.signature, Default::default())
            .await
            .unwrap();
        assert!(v.valid);
        let v = c
            .verify("e", "p", 0, b"hellO", &s.signature, Default::default())
            .await
            .unwrap();
        assert!(!v.valid);
        assert_eq!(v.version, 0);
    });
}

fn openssl_sha256(data: &[u8]) -> Vec<u8> {
    use sha2::Digest;
    sha2::Sha256::digest(data).to_vec()
}

/// kms-go accepts only the types "AES256" and "ChaCha20" in KEY:LIST and
/// KEY:STATUS answers (one unknown type fails the whole listing), and an
/// empty page ends its iteration: so asymmetric keys never appear there,
/// and no page is empty while secret keys remain.
#[test]
fn kms_go_listing_rules_hold_with_asymmetric_keys() {
    let tmp = tempfile::tempdir().unwrap();
    let srv = Server::start(&data_dir(&tmp, "kms0"), SEED_HSM_KEY);
    let c = srv.root();
    rt().block_on(async {
        c.create_enclave("e").await.unwrap();
        // Secret and asymmetric keys interleaved in name order.
        let mut secret = Vec::new();
        for i in 0..12 {
            let name = format!("k{i:02}");
            let t = match i % 4 {
                0 => "AES256",
                1 => "EC-P256",
                2 => "ML-DSA-44",
                _ => "ChaCha20",
            };
            c.create_key("e", &name, t, false).await.unwrap();
            if !t.contains('-') {
                secret.push(name);
            }
        }
        for limit in 1..=3u32 {
            let mut seen = Vec::new();
            let mut at = String::new();
            for _ in 0..50 {
                let p = c.list_keys_page("e", "", &at, limit).await.unwrap();
                assert!(
                    !p.keys.is_empty() || p.continue_at.is_empty(),
                    "an empty page ends kms-go's listing: limit {limit} at '{at}'"
                );
                for k in &p.keys {
                    assert!(
                        k.r#type == "AES256" || k.r#type == "ChaCha20",
                        "kms-go cannot parse type {}",
                        k.r#type
                    );
                    seen.push(k.name.clone());
                }
                if p.continue_at.is_empty() {
                    break;
                }
                at = p.continue_at;
            }
            assert_eq!(seen, secret, "limit {limit}");
        }
        let e = c.key_status("e", "k01").await.unwrap_err();
        assert_eq!(e.status(), Some(400), "{e}");
        // KEY:LISTALL (and `kms ls-key`) show every key with its type.
        let all = c.list_all_keys("e", "").await.unwrap();
        assert_eq!(all.len(), 12);
        assert_eq!(all[1].r#type, "EC-P256");
        let p = c.list_all_keys_page("e", "k0", "", 4).await.unwrap();
        assert_eq!(p.keys.len(), 4);
        assert_eq!(p.continue_at, "k04");
        let d = c.describe_key("e", "k02").await.unwrap();
        assert!(d.asymmetric);
        assert_eq!(d.r#type, "ML-DSA-44");
        assert!(d.versions[0].fingerprint.starts_with("SHA256:"));
    });
    let ls = ok(&srv.cli(None, &["ls-key", "--enclave", "e"]));
    assert!(ls.contains("EC-P256") && ls.contains("AES256"), "{ls}");
}

/// A User whose policy allows KEY:SIGN on some keys signs with those only;
/// a policy allowing KEY:LIST and KEY:STATUS allows KEY:LISTALL and
/// KEY:DESCRIBE.
#[test]
fn policies_name_the_asymmetric_commands() {
    let tmp = tempfile::tempdir().unwrap();
    let srv = Server::start(&data_dir(&tmp, "kms0"), SEED_HSM_KEY);
    ok(&srv.cli(None, &["add-enclave", "e"]));
    for k in ["s-1", "other"] {
        ok(&srv.cli(None, &["add-key", "--enclave", "e", "--type", "ec-p256", k]));
    }
    let policy = write(
        tmp.path(),
        "p.json",
        br#"{"allow": {"KEY:SIGN": ["s-*"], "KEY:PUBLICKEY": ["*"], "KEY:LIST": ["*"], "KEY:STATUS": ["*"]}}"#,
    );
    ok(&srv.cli(None, &["add-policy", "--enclave", "e", "signer", &policy]));
    let user = kms_client::ApiKey::generate();
    let id = user.identity().to_string();
    ok(&srv.cli(
        None,
        &["add-identity", "--enclave", "e", "--policy", "signer", &id],
    ));
    ok(&srv.cli(Some(&user), &["sign", "--enclave", "e", "s-1", "m"]));
    let err = fails(&srv.cli(Some(&user), &["sign", "--enclave", "e", "other", "m"]));
    assert!(err.contains("access denied"), "{err}");
    ok(&srv.cli(Some(&user), &["pubkey", "--enclave", "e", "other"]));
    let ls = ok(&srv.cli(Some(&user), &["ls-key", "--enclave", "e"]));
    assert!(ls.contains("s-1"), "{ls}");
    ok(&srv.cli(Some(&user), &["stat-key", "--enclave", "e", "s-1"]));
    let err = fails(&srv.cli(
        Some(&user),
        &["verify", "--enclave", "e", "s-1", "AAAA", "m"],
    ));
    assert!(err.contains("access denied"), "{err}");
}

/// Keys made on one node sign on every node, also with the other two down.
#[test]
fn asymmetric_keys_replicate_and_sign_with_two_nodes_down() {
    let tmp = tempfile::tempdir().unwrap();
    let mut nodes = cluster(&tmp, 3, SEED_HSM_KEY);
    ok(&nodes[0].cli(None, &["add-enclave", "e"]));
    for t in ["ec-p384", "ml-dsa-44", "rsa-2048"] {
        ok(&nodes[1].cli(None, &["add-key", "--enclave", "e", "--type", t, t]));
    }
    let pems: Vec<String> = ["ec-p384", "ml-dsa-44", "rsa-2048"]
        .iter()
        .map(|t| ok(&nodes[1].cli(None, &["pubkey", "--enclave", "e", t])))
        .collect();
    nodes[0].kill9();
    nodes[1].kill9();
    for (t, pem) in ["ec-p384", "ml-dsa-44", "rsa-2048"].iter().zip(&pems) {
        assert_eq!(
            &ok(&nodes[2].cli(None, &["pubkey", "--enclave", "e", t])),
            pem
        );
        let sig = ok(&nodes[2].cli(None, &["sign", "--enclave", "e", t, "m"]));
        ok(&nodes[2].cli(None, &["verify", "--enclave", "e", t, sig.trim(), "m"]));
    }
    // A write (a new key) is refused while members are down.
    let err = fails(&nodes[2].cli(
        None,
        &["add-key", "--enclave", "e", "--type", "ed25519", "late"],
    ));
    // Refused, or in doubt when the dead leader was the one asked: 503.
    assert!(err.contains("(HTTP 503)"), "{err}");
}

/// Token objects (the PKCS#11 module's certificates and data objects):
/// created, listed with their attributes, replaced, deleted, kept across a
/// restart, bounded in size, and authorized by name like keys.
#[test]
fn token_objects_are_stored_replicated_and_bounded() {
    let tmp = tempfile::tempdir().unwrap();
    let mut srv = Server::start(&data_dir(&tmp, "kms0"), SEED_HSM_KEY);
    let c = srv.root();
    let attr = |t: u64, v: &[u8]| proto::ObjectAttribute {
        r#type: t,
        value: v.to_vec(),
    };
    rt().block_on(async {
        c.create_enclave("e").await.unwrap();
        c.create_object(
            "e",
            "cert-1",
            1,
            vec![attr(3, b"label"), attr(0x11, b"DER")],
        )
        .await
        .unwrap();
        let e = c.create_object("e", "cert-1", 1, vec![]).await.unwrap_err();
        assert_eq!(e.status(), Some(409), "{e}");
        assert!(e.to_string().contains("object already exists"), "{e}");
        let e = c.set_object("e", "nope", 0, vec![]).await.unwrap_err();
        assert_eq!(e.status(), Some(404), "{e}");
        c.set_object("e", "cert-1", 1, vec![attr(3, b"new label")])
            .await
            .unwrap();
        c.create_object("e", "data-1", 0, vec![attr(0x10, b"app")])
            .await
            .unwrap();
        let e = c
            .create_object("e", "big", 0, vec![attr(0x11, &vec![0; 70_000])])
            .await
            .unwrap_err();
        assert!(e.to_string().contains("at most 65536 bytes"), "{e}");
        let e = c
            .create_object("e", "dup", 0, vec![attr(3, b"a"), attr(3, b"b")])
            .await
            .unwrap_err();
        assert!(e.to_string().contains("given twice"), "{e}");
        let e = c.create_object("e", "a/b", 0, vec![]).await.unwrap_err();
        assert_eq!(e.status(), Some(400), "{e}");
    });
    srv.restart();
    let c = srv.root();
    rt().block_on(async {
        let all = c.list_objects("e", "").await.unwrap();
        let names: Vec<_> = all.iter().map(|o| o.name.as_str()).collect();
        assert_eq!(names, ["cert-1", "data-1"]);
        assert_eq!(all[0].class, 1);
        assert_eq!(all[0].attributes, vec![attr(3, b"new label")]);
        c.delete_object("e", "cert-1").await.unwrap();
        let e = c.delete_object("e", "cert-1").await.unwrap_err();
        assert_eq!(e.status(), Some(404), "{e}");
        assert_eq!(c.list_objects("e", "").await.unwrap().len(), 1);
        // A User whose policy names only keys sees no objects and may not
        // create one.
        let user = kms_client::ApiKey::generate();
        let mut rules = std::collections::BTreeMap::new();
        rules.insert("KEY:*".to_string(), vec!["*".to_string()]);
        c.create_policy("e", "keys-only", &rules, &Default::default())
            .await
            .unwrap();
        let id = user.identity().to_string();
        c.create_identity(Some("e"), &id, kms_client::Privilege::User)
            .await
            .unwrap();
        c.assign_policy("e", "keys-only", &id).await.unwrap();
        let u = srv.client(&user);
        let e = u.create_object("e", "mine", 0, vec![]).await.unwrap_err();
        assert_eq!(e.status(), Some(403), "{e}");
    });
}
