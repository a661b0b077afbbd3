//! MinIO's call sequence (PRODUCT.md section 6) against a real server, with
//! the same frames kms-go sends: batched and unbatched.

use kms_client::{proto, Command};
use kms_tests::{data_dir, rt, Server, SEED_HSM_KEY};

#[test]
fn minio_call_sequence() {
    let tmp = tempfile::tempdir().unwrap();
    let srv = Server::start(&data_dir(&tmp, "kms0"), SEED_HSM_KEY);
    let c = srv.root();
    rt().block_on(async {
        // GET /version on every host.
        let v = c.version().await.unwrap();
        assert_eq!(v.api_version, "v1");
        assert_eq!(v.host, srv.addr);
        c.create_enclave("minio").await.unwrap();
        // KEY:LIST on an empty enclave.
        assert!(c.list_keys("minio", "").await.unwrap().is_empty());
        // KEY:CREATE, and again: kms-go's ErrKeyExists (409, exact message).
        c.create_key("minio", "minio-default-key", "", false)
            .await
            .unwrap();
        let e = c
            .create_key("minio", "minio-default-key", "", false)
            .await
            .unwrap_err();
        assert_eq!(
            (e.status(), e.to_string().as_str()),
            (Some(409), "key already exists (HTTP 409)")
        );
        let keys = c.list_keys("minio", "").await.unwrap();
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0].r#type, "AES256");

        // Unbatched: GENERATE with associated data and length 32, DECRYPT without version.
        let ad = br#"{"bucket":"b","object":"o"}"#;
        let g = c
            .generate("minio", "minio-default-key", ad, 32)
            .await
            .unwrap();
        assert_eq!(g.plaintext.len(), 32);
        assert_eq!(g.version, 1);
        let d = c
            .decrypt("minio", "minio-default-key", &g.ciphertext, ad)
            .await
            .unwrap();
        assert_eq!(d.plaintext, g.plaintext);
        // Wrong associated data fails; a tampered ciphertext fails with 400.
        let e = c
            .decrypt("minio", "minio-default-key", &g.ciphertext, b"other")
            .await
            .unwrap_err();
        assert_eq!(e.to_string(), "invalid ciphertext (HTTP 400)");
        let mut t = g.ciphertext.clone();
        let last = t.len() - 1;
        t[last] ^= 1;
        let e = c
            .decrypt("minio", "minio-default-key", &t, ad)
            .await
            .unwrap_err();
        assert_eq!(e.to_string(), "invalid ciphertext (HTTP 400)");

        // Batched: 1,000 GENERATE frames in one request, then 1,000 DECRYPT frames.
        let reqs: Vec<_> = (0..1000)
            .map(|i| proto::GenerateKeyRequest {
                name: "minio-default-key".into(),
                version: 0,
                associated_data: format!("obj-{i}").into_bytes(),
                length: 32,
            })
            .collect();
        let gens: Vec<proto::GenerateKeyResponse> = c
            .batch(Some("minio"), Command::KeyGenerate, &reqs)
            .await
            .unwrap();
        assert_eq!(gens.len(), 1000);
        let decs: Vec<_> = gens
            .iter()
            .enumerate()
            .map(|(i, g)| proto::DecryptRequest {
                name: "minio-default-key".into(),
                version: 0,
                ciphertext: g.ciphertext.clone(),
                associated_data: format!("obj-{i}").into_bytes(),
            })
            .collect();
        let out: Vec<proto::DecryptResponse> = c
            .batch(Some("minio"), Command::KeyDecrypt, &decs)
            .await
            .unwrap();
        for (g, d) in gens.iter().zip(&out) {
            assert_eq!(g.plaintext, d.plaintext);
        }
        // One bad frame in a batch: the request fails and names the frame.
        let mut bad = decs[..3].to_vec();
        bad[1].associated_data = b"wrong".to_vec();
        let e = c
            .batch::<_, proto::DecryptResponse>(Some("minio"), Command::KeyDecrypt, &bad)
            .await
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid ciphertext (frame 2 of 3) (HTTP 400)"
        );

        // Encrypt/decrypt and MAC through the API.
        let enc = c
            .encrypt("minio", "minio-default-key", b"secret", b"")
            .await
            .unwrap();
        assert_eq!(
            c.decrypt("minio", "minio-default-key", &enc.ciphertext, b"")
                .await
                .unwrap()
                .plaintext,
            b"secret"
        );
        let m: proto::MacResponse = c
            .call(
                Some("minio"),
                Command::KeyMac,
                &proto::MacRequest {
                    name: "minio-default-key".into(),
                    version: 0,
                    message: b"m".to_vec(),
                },
            )
            .await
            .unwrap();
        assert_eq!(m.mac.len(), 32);

        // Data key length limits.
        let e = c
            .generate("minio", "minio-default-key", b"", 1025)
            .await
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "data key length 1025 exceeds the maximum of 1024 (HTTP 400)"
        );
        assert_eq!(
            c.generate("minio", "minio-default-key", b"", 1024)
                .await
                .unwrap()
                .plaintext
                .len(),
            1024
        );
        assert_eq!(
            c.generate("minio", "minio-default-key", b"", 0)
                .await
                .unwrap()
                .plaintext
                .len(),
            32
        );
        assert_eq!(
            c.generate("minio", "minio-default-key", b"", 1)
                .await
                .unwrap()
                .plaintext
                .len(),
            1
        );

        // Health, readiness and metrics.
        for path in [
            "/v1/health/live",
            "/v1/health/ready",
            "/v1/health/ready?write",
        ] {
            let r = c.request(http::Method::GET, path, None).await.unwrap();
            assert_eq!(r.status, 200, "{path}");
        }
        let r = c
            .request(http::Method::GET, "/v1/health/metrics", None)
            .await
            .unwrap();
        let text = String::from_utf8(r.body.to_vec()).unwrap();
        assert!(
            text.contains("kms_requests_total{command=\"KEY:GENERATE\",status=\"200\"}"),
            "{text}"
        );
        assert!(
            text.contains("kms_batch_size_bucket{command=\"KEY:GENERATE\",le=\"1024\"}"),
            "{text}"
        );
        assert!(
            text.contains("kms_request_duration_seconds_count{command=\"KEY:DECRYPT\"}"),
            "{text}"
        );
        assert!(text.contains("kms_keys 1"), "{text}");
    });
}

#[test]
fn rotation() {
    let tmp = tempfile::tempdir().unwrap();
    let srv = Server::start(&data_dir(&tmp, "kms0"), SEED_HSM_KEY);
    let c = srv.root();
    rt().block_on(async {
        c.create_enclave("e").await.unwrap();
        c.create_key("e", "k", "AES256", false).await.unwrap();
        let v1 = c.encrypt("e", "k", b"one", b"").await.unwrap();
        assert_eq!(v1.version, 1);
        // kms add-key --version
        kms_tests::ok(&srv.cli(None, &["add-key", "-e", "e", "k", "--version"]));
        let v2 = c.encrypt("e", "k", b"two", b"").await.unwrap();
        assert_eq!(v2.version, 2);
        assert_eq!(c.generate("e", "k", b"", 32).await.unwrap().version, 2);
        assert_eq!(c.key_status("e", "k").await.unwrap().version, 2);
        assert_eq!(
            c.decrypt("e", "k", &v1.ciphertext, b"")
                .await
                .unwrap()
                .plaintext,
            b"one"
        );
        assert_eq!(
            c.decrypt("e", "k", &v2.ciphertext, b"")
                .await
                .unwrap()
                .plaintext,
            b"two"
        );
        // Delete version 1: its ciphertexts fail with a clear error, version 2 still works.
        kms_tests::ok(&srv.cli(None, &["rm-key", "-e", "e", "k", "--version", "1"]));
        let e = c.decrypt("e", "k", &v1.ciphertext, b"").await.unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid ciphertext: it was made with version 1 of key 'k', which has been deleted (HTTP 400)"
        );
        assert_eq!(
            c.decrypt("e", "k", &v2.ciphertext, b"")
                .await
                .unwrap()
                .plaintext,
            b"two"
        );
        // A new version gets number 3: deleted numbers are never reused.
        kms_tests::ok(&srv.cli(None, &["add-key", "-e", "e", "k", "--version"]));
        assert_eq!(c.encrypt("e", "k", b"three", b"").await.unwrap().version, 3);
        let versions: proto::ListKeysResponse = c
            .call(
                Some("e"),
                Command::KeyListVersions,
                &proto::ListRequest {
                    prefix: "k".into(),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(
            versions.keys.iter().map(|k| k.version).collect::<Vec<_>>(),
            vec![2, 3]
        );
        // Deleting the whole key and creating it again continues the numbering.
        kms_tests::ok(&srv.cli(None, &["rm-key", "-e", "e", "k", "--all"]));
        assert_eq!(
            c.key_status("e", "k").await.unwrap_err().to_string(),
            "key does not exist (HTTP 404)"
        );
        assert!(c.list_keys("e", "").await.unwrap().is_empty());
        c.create_key("e", "k", "AES256", false).await.unwrap();
        assert_eq!(c.key_status("e", "k").await.unwrap().version, 4);
        let e = c.decrypt("e", "k", &v2.ciphertext, b"").await.unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid ciphertext: it was made with version 2 of key 'k', which has been deleted (HTTP 400)"
        );
    });
}
