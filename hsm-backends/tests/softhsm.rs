//! The `Hsm` conformance suite and the error cases against a real SoftHSM2,
//! through throw-away tokens made by softhsm-fixtures/create-token.sh.
//! SoftHSM2 must be installed (`scripts/setup.sh --test` installs it): these
//! tests fail, never skip, without it.

use std::path::{Path, PathBuf};
use std::process::Command;

use hsm_backends::pkcs11::TokenSel;
use hsm_backends::{Hsm, Pkcs11Config, Pkcs11Hsm};
use zeroize::Zeroizing;

fn script() -> PathBuf {
    // At run time: the target directory is shared between checkouts (CI
    // clones), and a binary built in another checkout embeds that one's path.
    Path::new(
        &std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").into()),
    )
    .join("../softhsm-fixtures/create-token.sh")
}

/// Creates a token labelled `label` in `dir` and returns the exported settings.
fn token(dir: &Path, label: &str, key_file: Option<&Path>) -> Vec<(String, String)> {
    let mut cmd = Command::new(script());
    cmd.arg(dir).args(["--label", label]);
    if let Some(k) = key_file {
        cmd.arg("--key-file").arg(k);
    }
    let out = cmd.output().expect("run create-token.sh");
    assert!(
        out.status.success(),
        "create-token.sh failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter_map(|l| l.strip_prefix("export "))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn config(vars: &[(String, String)]) -> Pkcs11Config {
    for (k, v) in vars {
        if k == "SOFTHSM2_CONF" {
            std::env::set_var(k, v);
        }
    }
    Pkcs11Config::from_lookup(|k| vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()))
        .unwrap()
        .expect("module configured")
}

#[test]
fn conformance_on_softhsm2() {
    let tmp = tempfile::tempdir().unwrap();
    let a = token(tmp.path(), "node-a", None);
    let key = tmp.path().join("key.bin");
    // A second token holding the same imported key (another node that shares trust),
    // and a third holding another key.
    let b = token(tmp.path(), "node-b", Some(&key));
    let other_key = tmp.path().join("other.bin");
    std::fs::write(&other_key, [7u8; 32]).unwrap();
    let c = token(tmp.path(), "node-c", Some(&other_key));
    let ha = Pkcs11Hsm::open(config(&a)).unwrap();
    let hb = Pkcs11Hsm::open(config(&b)).unwrap();
    let hc = Pkcs11Hsm::open(config(&c)).unwrap();
    assert!(ha.name().starts_with("pkcs11:"), "{}", ha.name());
    hsm_backends::conformance::run(&ha, &hb, &hc);
    // Sealed values of the software HSM and of the PKCS#11 HSM are not interchangeable.
    let soft = hsm_backends::SoftHsm::from_key(&[7u8; 32]);
    let s = soft.seal(b"x", b"ctx").unwrap();
    assert!(hc.unseal(&s, b"ctx").is_err());
    assert!(soft
        .unseal(&hc.seal(b"x", b"ctx").unwrap(), b"ctx")
        .is_err());
}

#[test]
fn errors_name_the_setting_to_fix() {
    let tmp = tempfile::tempdir().unwrap();
    let vars = token(tmp.path(), "kms", None);
    let good = config(&vars);
    let err = |c: Pkcs11Config| Pkcs11Hsm::open(c).expect_err("must fail").to_string();

    let mut c = good.clone();
    c.pin = Zeroizing::new("0000".into());
    let e = err(c);
    assert!(e.contains("KMS_HSM_PKCS11_PIN"), "{e}");

    let mut c = good.clone();
    c.key_label = "missing".into();
    let e = err(c);
    assert!(
        e.contains("KMS_HSM_PKCS11_KEY") && e.contains("missing"),
        "{e}"
    );

    let mut c = good.clone();
    c.token = TokenSel::Label("nope".into());
    let e = err(c);
    assert!(
        e.contains("KMS_HSM_PKCS11_TOKEN") && e.contains("'kms'"),
        "{e}"
    );

    let mut c = good.clone();
    c.module = tmp.path().join("no-such-module.so");
    let e = err(c);
    assert!(
        e.contains("KMS_HSM_PKCS11_MODULE") && e.contains("does not exist"),
        "{e}"
    );

    // A shared library that is not a PKCS#11 module, and a file that is no library.
    let libz = [
        "/lib/x86_64-linux-gnu/libz.so.1",
        "/usr/lib/x86_64-linux-gnu/libz.so.1",
    ]
    .into_iter()
    .find(|p| Path::new(p).exists())
    .expect("libz");
    for m in [PathBuf::from(libz), tmp.path().join("softhsm2.conf")] {
        let mut c = good.clone();
        c.module = m.clone();
        let e = err(c);
        assert!(
            e.contains("KMS_HSM_PKCS11_MODULE") && e.contains("not a PKCS#11 module"),
            "{}: {e}",
            m.display()
        );
    }

    // Missing settings.
    let e = Pkcs11Config::from_lookup(|k| (k == "KMS_HSM_PKCS11_MODULE").then(|| "/x".to_string()))
        .unwrap_err()
        .to_string();
    assert!(e.contains("KMS_HSM_PKCS11_TOKEN"), "{e}");

    // The good settings still work: nothing above broke the token.
    Pkcs11Hsm::open(good).unwrap();
}

#[test]
fn key_generation_is_opt_in() {
    let tmp = tempfile::tempdir().unwrap();
    let vars = token(tmp.path(), "kms", None);
    let mut c = config(&vars);
    c.key_label = "generated".into();
    assert!(
        Pkcs11Hsm::open(c.clone()).is_err(),
        "a missing key must not be created by default"
    );
    c.generate_key = true;
    let h = Pkcs11Hsm::open(c.clone()).unwrap();
    let sealed = h.seal(b"root key", b"ctx").unwrap();
    drop(h);
    c.generate_key = false;
    let h = Pkcs11Hsm::open(c).unwrap();
    assert_eq!(h.unseal(&sealed, b"ctx").unwrap().as_slice(), b"root key");
}
