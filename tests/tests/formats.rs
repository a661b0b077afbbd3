//! Frozen formats: fixtures made once by the code of the day they were
//! committed (`tests/fixtures/v1/`), opened by every later build. A change
//! of an on-disk, backup, ciphertext or replication format must keep these
//! tests passing (with a migration where needed), never regenerate them.
//!
//! - a node's data directory (RocksDB, sealed records and log) opens, and
//!   its keys decrypt the fixture ciphertexts and reproduce the MACs;
//! - a backup file restores into a fresh node;
//! - ciphertexts of every key type and of two versions decrypt;
//! - a replication message decodes and re-encodes to the same bytes.
//!
//! `make_fixtures` (ignored) wrote them:
//! `KMS_WRITE_FIXTURES=1 cargo nextest run -p kms-tests --test formats --run-ignored only`.

use std::path::{Path, PathBuf};

use base64::Engine;
use kms_client::{proto, Client, Command};
use kms_node::change::Change;
use kms_node::model::Time;
use kms_node::replication::core::{Entry, Msg};
use kms_node::replication::net::Wire;
use kms_tests::{copy_dir, ok, rt, save_fixture_data_dir, Server};

use base64::engine::general_purpose::STANDARD as B64;
/// The software HSM key of the fixtures (a test key, not a secret).
const HSM_KEY: &str = "hsm:aes256:cHJvZHVjdC10ZXN0LWZpeHR1cmVzLW5vdC1zZWNyZXQ=";
const ENCLAVE: &str = "golden";

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/v1")
}

/// One fixture ciphertext: key, version, plaintext, associated data, and
/// what the node produced for them.
#[derive(serde::Serialize, serde::Deserialize)]
struct Sample {
    key: String,
    key_type: String,
    version: u32,
    plaintext: String,
    associated_data: String,
    ciphertext: String,
    /// KEY:MAC of `plaintext` under this version.
    mac: String,
}

/// The replication message fixture: `Wire::Raft(Msg::Append)` of one entry.
fn message() -> Wire {
    Wire::Raft(Msg::Append {
        term: 7,
        prev_index: 41,
        prev_term: 6,
        entries: vec![Entry {
            term: 7,
            payload: Some(Change::CreateEnclave {
                name: "golden".into(),
                at: Time {
                    secs: 1_796_000_000,
                    nanos: 5,
                },
                by: "root".into(),
            }),
        }],
        commit: 41,
        hold: Some(40),
        seq: 3,
    })
}

async fn mac(c: &Client, key: &str, version: u32, msg: &[u8]) -> Vec<u8> {
    let r: proto::MacResponse = c
        .call(
            Some(ENCLAVE),
            Command::KeyMac,
            &proto::MacRequest {
                name: key.into(),
                version,
                message: msg.to_vec(),
            },
        )
        .await
        .unwrap();
    r.mac
}

async fn decrypt(c: &Client, s: &Sample) -> Vec<u8> {
    let r: proto::DecryptResponse = c
        .call(
            Some(ENCLAVE),
            Command::KeyDecrypt,
            &proto::DecryptRequest {
                name: s.key.clone(),
                version: 0,
                ciphertext: B64.decode(&s.ciphertext).unwrap(),
                associated_data: s.associated_data.as_bytes().to_vec(),
            },
        )
        .await
        .unwrap_or_else(|e| panic!("{} v{} does not decrypt: {e}", s.key, s.version));
    r.plaintext
}

fn samples() -> Vec<Sample> {
    serde_json::from_slice(&std::fs::read(dir().join("ciphertexts.json")).unwrap()).unwrap()
}

/// Every sample decrypts and every MAC matches on the node behind `c`.
fn check_samples(c: &Client) {
    let samples = samples();
    assert_eq!(samples.len(), 4, "two key types, two versions each");
    rt().block_on(async {
        for s in &samples {
            assert_eq!(decrypt(c, s).await, s.plaintext.as_bytes());
            assert_eq!(
                B64.encode(mac(c, &s.key, s.version, s.plaintext.as_bytes()).await),
                s.mac,
                "{} v{}: MAC",
                s.key,
                s.version
            );
        }
    });
}

#[test]
fn golden_data_directory_opens_and_its_keys_work() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("node");
    copy_dir(&dir().join("data"), &data);
    let srv = Server::start(&data, HSM_KEY);
    let keys = ok(&srv.cli(None, &["ls-key", "-e", ENCLAVE]));
    assert!(keys.contains("aes") && keys.contains("chacha"), "{keys}");
    check_samples(&srv.root());
}

#[test]
fn golden_backup_restores_into_a_fresh_node() {
    let tmp = tempfile::tempdir().unwrap();
    let srv = Server::start(&tmp.path().join("fresh"), HSM_KEY);
    let file = dir().join("backup.kmsbak");
    ok(&srv.cli(None, &["restore", file.to_str().unwrap()]));
    check_samples(&srv.root());
}

#[test]
fn golden_replication_message_decodes_to_the_same_bytes() {
    let bytes = std::fs::read(dir().join("wire-append.bin")).unwrap();
    let decoded: Wire = kms_node::codec::decode_wire(&bytes).expect("decodes");
    match (&decoded, &message()) {
        (Wire::Raft(a), Wire::Raft(b)) => assert_eq!(
            format!("{a:?}"),
            format!("{b:?}"),
            "the fixture message decodes to what was written"
        ),
        _ => panic!("not a Raft message"),
    }
    assert_eq!(
        kms_node::codec::encode_wire(&decoded).unwrap(),
        bytes,
        "re-encoding gives the same bytes"
    );
}

/// Writes the fixtures (run once, by hand, when a format version is born).
#[test]
#[ignore = "writes tests/fixtures/v1; run by hand with KMS_WRITE_FIXTURES=1"]
fn make_fixtures() {
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
        for (key, ty) in [("aes", "AES256"), ("chacha", "ChaCha20")] {
            for version in [1u32, 2] {
                c.create_key(ENCLAVE, key, ty, version > 1).await.unwrap();
                let plaintext = format!("golden {key} v{version}");
                let associated_data = format!("ad {key}");
                let ct = c
                    .encrypt(
                        ENCLAVE,
                        key,
                        plaintext.as_bytes(),
                        associated_data.as_bytes(),
                    )
                    .await
                    .unwrap();
                assert_eq!(ct.version, version);
                samples.push(Sample {
                    key: key.into(),
                    key_type: ty.into(),
                    version,
                    mac: B64.encode(mac(&c, key, version, plaintext.as_bytes()).await),
                    plaintext,
                    associated_data,
                    ciphertext: B64.encode(&ct.ciphertext),
                });
            }
        }
    });
    std::fs::write(
        out.join("ciphertexts.json"),
        serde_json::to_vec_pretty(&samples).unwrap(),
    )
    .unwrap();
    let backup = out.join("backup.kmsbak");
    ok(&srv.cli(None, &["backup", backup.to_str().unwrap()]));
    srv.stop();
    save_fixture_data_dir(&data, &out.join("data"));
    std::fs::write(
        out.join("wire-append.bin"),
        kms_node::codec::encode_wire(&message()).unwrap(),
    )
    .unwrap();
}
