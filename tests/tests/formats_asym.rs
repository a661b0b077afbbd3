//! Frozen formats of asymmetric keys (`tests/fixtures/asym-v1/`), made once
//! by the code that introduced them and opened by every later build, like
//! `formats.rs` does for v1:
//!
//! - a data directory holding keys of every family (records `S\0...` and
//!   the log entries that created them) opens; each key has the recorded
//!   public key, verifies the recorded signature, signs anew, and the RSA
//!   key decrypts the recorded OAEP ciphertext;
//! - a backup holding them restores into a fresh node;
//! - a replication message carrying `Change::CreateAsymKey` decodes and
//!   re-encodes to the same bytes.
//!
//! `make_asym_fixtures` (ignored) wrote them:
//! `KMS_WRITE_FIXTURES=1 cargo nextest run -p kms-tests --test formats_asym --run-ignored only`.

use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use kms_client::Client;
use kms_node::change::{Change, SecretBytes};
use kms_node::model::Time;
use kms_node::replication::core::{Entry, Msg};
use kms_node::replication::net::Wire;
use kms_tests::{copy_dir, ok, rt, save_fixture_data_dir, Server};

/// The software HSM key of the fixtures (a test key, not a secret).
const HSM_KEY: &str = "hsm:aes256:cHJvZHVjdC10ZXN0LWZpeHR1cmVzLW5vdC1zZWNyZXQ=";
const ENCLAVE: &str = "golden";
const MESSAGE: &[u8] = b"golden message";
const TYPES: [&str; 5] = ["EC-P256", "ED25519", "RSA-2048", "ML-DSA-44", "EC-P384"];

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/asym-v1")
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Sample {
    key: String,
    key_type: String,
    /// SubjectPublicKeyInfo DER, base64.
    public_key: String,
    /// KEY:SIGN of MESSAGE with the key's defaults, base64.
    signature: String,
    /// RSA only: an OAEP (SHA-256) ciphertext of MESSAGE, base64.
    oaep: Option<String>,
}

fn samples() -> Vec<Sample> {
    serde_json::from_slice(&std::fs::read(dir().join("keys.json")).unwrap()).unwrap()
}

/// The replication message fixture: an append of one CreateAsymKey, whose
/// key is a fixed Ed25519 test key (PKCS#8 v1).
fn message() -> Wire {
    let mut pkcs8 = hex::decode("302e020100300506032b657004220420").unwrap();
    pkcs8.extend_from_slice(&[0x11; 32]);
    Wire::Raft(Msg::Append {
        term: 9,
        prev_index: 100,
        prev_term: 9,
        entries: vec![Entry {
            term: 9,
            payload: Some(Change::CreateAsymKey {
                enclave: ENCLAVE.into(),
                name: "ed".into(),
                key_type: kms_node::asym::AsymType::Ed25519,
                pkcs8: SecretBytes(pkcs8),
                imported: true,
                at: Time {
                    secs: 1_796_500_000,
                    nanos: 7,
                },
                by: "root".into(),
            }),
        }],
        commit: 100,
        hold: None,
        seq: 0,
    })
}

/// Every sample holds on the node behind `c`.
fn check(c: &Client) {
    let samples = samples();
    assert_eq!(samples.len(), TYPES.len());
    rt().block_on(async {
        for s in &samples {
            let pk = c.public_key(ENCLAVE, &s.key, 0).await.unwrap();
            assert_eq!(B64.encode(&pk.public_key), s.public_key, "{}", s.key);
            assert_eq!(pk.r#type, s.key_type);
            let sig = B64.decode(&s.signature).unwrap();
            let v = c
                .verify(ENCLAVE, &s.key, 0, MESSAGE, &sig, Default::default())
                .await
                .unwrap();
            assert!(v.valid, "{}: the recorded signature", s.key);
            let new = c
                .sign(ENCLAVE, &s.key, 0, MESSAGE, Default::default())
                .await
                .unwrap();
            let v = c
                .verify(
                    ENCLAVE,
                    &s.key,
                    1,
                    MESSAGE,
                    &new.signature,
                    Default::default(),
                )
                .await
                .unwrap();
            assert!(v.valid, "{}: a new signature", s.key);
            if let Some(ct) = &s.oaep {
                let r = c
                    .asym_decrypt(ENCLAVE, &s.key, &B64.decode(ct).unwrap(), "SHA-256", b"")
                    .await
                    .unwrap();
                assert_eq!(r.plaintext, MESSAGE);
            }
        }
    });
}

#[test]
fn golden_asymmetric_data_directory_opens_and_its_keys_work() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("node");
    copy_dir(&dir().join("data"), &data);
    let srv = Server::start(&data, HSM_KEY);
    check(&srv.root());
}

#[test]
fn golden_asymmetric_backup_restores_into_a_fresh_node() {
    let tmp = tempfile::tempdir().unwrap();
    let srv = Server::start(&tmp.path().join("fresh"), HSM_KEY);
    let file = dir().join("backup.kmsbak");
    ok(&srv.cli(None, &["restore", file.to_str().unwrap()]));
    check(&srv.root());
}

#[test]
fn golden_create_asym_key_message_decodes_to_the_same_bytes() {
    let bytes = std::fs::read(dir().join("wire-create-asym.bin")).unwrap();
    let decoded: Wire = kms_node::codec::decode_wire(&bytes).expect("decodes");
    match (&decoded, &message()) {
        (Wire::Raft(a), Wire::Raft(b)) => assert_eq!(format!("{a:?}"), format!("{b:?}")),
        _ => panic!("not a Raft message"),
    }
    assert_eq!(kms_node::codec::encode_wire(&decoded).unwrap(), bytes);
}

/// Writes the fixtures (run once, by hand, when the format is born).
#[test]
#[ignore = "writes tests/fixtures/asym-v1; run by hand with KMS_WRITE_FIXTURES=1"]
fn make_asym_fixtures() {
    if std::env::var("KMS_WRITE_FIXTURES").as_deref() != Ok("1") {
        return;
    }
    let out = dir();
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("node");
    let mut srv = Server::start(&data, HSM_KEY);
    let c = srv.root();
    let mut samples = Vec::new();
    rt().block_on(async {
        c.create_enclave(ENCLAVE).await.unwrap();
        for t in TYPES {
            let name = t.to_lowercase();
            c.create_key(ENCLAVE, &name, t, false).await.unwrap();
            let pk = c.public_key(ENCLAVE, &name, 0).await.unwrap();
            let sig = c
                .sign(ENCLAVE, &name, 0, MESSAGE, Default::default())
                .await
                .unwrap();
            let oaep = t.starts_with("RSA").then(|| {
                let pem = tmp.path().join("rsa.pub.pem");
                std::fs::write(&pem, kms_node::asym::public_key_pem(&pk.public_key)).unwrap();
                let msg = tmp.path().join("msg");
                std::fs::write(&msg, MESSAGE).unwrap();
                let ct = tmp.path().join("ct");
                let o = std::process::Command::new("openssl")
                    .args(["pkeyutl", "-encrypt", "-pubin", "-inkey"])
                    .arg(&pem)
                    .arg("-in")
                    .arg(&msg)
                    .arg("-out")
                    .arg(&ct)
                    .args([
                        "-pkeyopt",
                        "rsa_padding_mode:oaep",
                        "-pkeyopt",
                        "rsa_oaep_md:sha256",
                    ])
                    .output()
                    .unwrap();
                assert!(o.status.success());
                B64.encode(std::fs::read(&ct).unwrap())
            });
            samples.push(Sample {
                key: name,
                key_type: t.into(),
                public_key: B64.encode(&pk.public_key),
                signature: B64.encode(&sig.signature),
                oaep,
            });
        }
    });
    std::fs::write(
        out.join("keys.json"),
        serde_json::to_vec_pretty(&samples).unwrap(),
    )
    .unwrap();
    let backup = out.join("backup.kmsbak");
    ok(&srv.cli(None, &["backup", backup.to_str().unwrap()]));
    srv.stop();
    save_fixture_data_dir(&data, &out.join("data"));
    std::fs::write(
        out.join("wire-create-asym.bin"),
        kms_node::codec::encode_wire(&message()).unwrap(),
    )
    .unwrap();
}
