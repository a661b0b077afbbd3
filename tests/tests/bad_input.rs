//! Hostile input over the network: every case gets a 4xx with a clear
//! message, and the node keeps serving. Plus authentication failures.

use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use kms_client::{proto, ApiKey, Command};
use kms_tests::{data_dir, rt, Server, SEED_HSM_KEY};
use prost::Message;

fn frame(id: u16, payload: &[u8]) -> BytesMut {
    let mut b = BytesMut::new();
    b.put_u16(id);
    b.put_u32(payload.len() as u32);
    b.extend_from_slice(payload);
    b
}

#[test]
fn malformed_requests_get_4xx_and_the_node_keeps_serving() {
    let tmp = tempfile::tempdir().unwrap();
    let srv = Server::start(&data_dir(&tmp, "kms0"), SEED_HSM_KEY);
    let c = srv.root();
    rt().block_on(async {
        c.create_enclave("e").await.unwrap();
        c.create_key("e", "k", "", false).await.unwrap();
        let good = c.generate("e", "k", b"", 32).await.unwrap();
        let gen = proto::GenerateKeyRequest {
            name: "k".into(),
            ..Default::default()
        }
        .encode_to_vec();
        let mut cases: Vec<(&str, Bytes, u16, &str)> = vec![
            ("empty body", Bytes::new(), 400, "empty"),
            (
                "truncated header",
                Bytes::from_static(&[0, 207, 0]),
                400,
                "truncated frame header",
            ),
            (
                "frame longer than body",
                {
                    let mut b = frame(207, &gen);
                    b.truncate(b.len() - 2);
                    b.freeze()
                },
                400,
                "declares",
            ),
            (
                "length 2^32-1",
                Bytes::from_static(&[0, 207, 0xff, 0xff, 0xff, 0xff, 1]),
                400,
                "declares",
            ),
            (
                "unknown command",
                frame(999, &gen).freeze(),
                400,
                "unknown command id 999",
            ),
            (
                "command 0",
                frame(0, &[]).freeze(),
                400,
                "unknown command id 0",
            ),
            (
                "garbage protobuf",
                frame(207, &[0xff, 0xff, 0xff, 0xff, 0xff]).freeze(),
                400,
                "malformed KEY:GENERATE",
            ),
            (
                "invalid UTF-8 name",
                frame(207, &[0x0a, 2, 0xc3, 0x28]).freeze(),
                400,
                "malformed",
            ),
            (
                "mixed reads and writes",
                {
                    let mut b = frame(207, &gen);
                    b.extend_from_slice(&frame(
                        201,
                        &proto::CreateKeyRequest {
                            name: "x".into(),
                            ..Default::default()
                        }
                        .encode_to_vec(),
                    ));
                    b.freeze()
                },
                400,
                "mix",
            ),
        ];
        for (what, name) in [
            ("empty name", ""),
            ("name with /", "a/b"),
            ("overlong name", &"x".repeat(300)[..]),
            ("name with NUL", "a\0b"),
            ("name with space", "a b"),
        ] {
            cases.push((
                what,
                frame(
                    201,
                    &proto::CreateKeyRequest {
                        name: name.into(),
                        ..Default::default()
                    }
                    .encode_to_vec(),
                )
                .freeze(),
                400,
                "key name",
            ));
        }
        for (what, ct) in [
            ("empty ciphertext", vec![]),
            ("1-byte ciphertext", vec![1]),
            ("49-byte ciphertext", vec![1; 49]),
            ("unknown format", {
                let mut v = good.ciphertext.clone();
                v[0] = 9;
                v
            }),
            ("other key type", {
                let mut v = good.ciphertext.clone();
                v[1] = 2;
                v
            }),
            (
                "truncated by one",
                good.ciphertext[..good.ciphertext.len() - 1].to_vec(),
            ),
            ("extended by one", {
                let mut v = good.ciphertext.clone();
                v.push(0);
                v
            }),
            ("unknown version", {
                let mut v = good.ciphertext.clone();
                v[5] = 77;
                v
            }),
        ] {
            let m = proto::DecryptRequest {
                name: "k".into(),
                ciphertext: ct,
                ..Default::default()
            }
            .encode_to_vec();
            cases.push((what, frame(206, &m).freeze(), 400, "invalid ciphertext"));
        }
        for (what, body, status, msg) in cases {
            let e = c.send(Some("e"), body).await.expect_err(what);
            assert_eq!(e.status(), Some(status), "{what}: {e}");
            assert!(e.to_string().contains(msg), "{what}: {e}");
        }
        // Wrong key: a ciphertext of key k does not decrypt under another key.
        c.create_key("e", "k2", "", false).await.unwrap();
        assert_eq!(
            c.decrypt("e", "k2", &good.ciphertext, b"")
                .await
                .unwrap_err()
                .status(),
            Some(400)
        );
        // Bad enclave names in the path.
        for path in ["/v1/kms/a%2fb", "/v1/kms/..", "/v1/kms/a b"] {
            let r = c
                .request(http::Method::POST, path, Some(frame(207, &gen).freeze()))
                .await;
            let status = r.map(|r| r.status).unwrap_or(400);
            assert_eq!(status, 400, "{path}");
        }
        // Oversized body: 413 (the default limit is 4 MiB).
        let big = frame(
            205,
            &proto::EncryptRequest {
                name: "k".into(),
                plaintext: vec![0; 5 << 20],
                ..Default::default()
            }
            .encode_to_vec(),
        );
        let e = c.send(Some("e"), big.freeze()).await.unwrap_err();
        assert_eq!(e.status(), Some(413), "{e}");
        // Unknown endpoints and methods.
        assert_eq!(
            c.request(http::Method::GET, "/nope", None)
                .await
                .unwrap()
                .status,
            404
        );
        assert_eq!(
            c.request(http::Method::GET, "/v1/kms", None)
                .await
                .unwrap()
                .status,
            405
        );
        // JSON errors when asked for.
        // Key commands without an enclave.
        let e = c.send(None, frame(207, &gen).freeze()).await.unwrap_err();
        assert_eq!(e.status(), Some(400), "{e}");
        // The node still serves.
        let g = c.generate("e", "k", b"", 32).await.unwrap();
        assert_eq!(
            c.decrypt("e", "k", &g.ciphertext, b"")
                .await
                .unwrap()
                .plaintext,
            g.plaintext
        );
        let r = c
            .request(http::Method::GET, "/v1/health/metrics", None)
            .await
            .unwrap();
        assert!(String::from_utf8_lossy(&r.body).contains("kms_rejected_total"));
    });
}

#[test]
fn authentication() {
    let tmp = tempfile::tempdir().unwrap();
    let srv = Server::start(&data_dir(&tmp, "kms0"), SEED_HSM_KEY);
    rt().block_on(async {
        // The root key derived from the HSM authenticates.
        srv.root().list_keys("x", "").await.unwrap_err(); // 404: enclave does not exist, but authenticated
        let st: proto::ClusterStatusResponse = srv
            .root()
            .call(
                None,
                Command::ClusterStatus,
                &proto::ClusterStatusRequest {},
            )
            .await
            .unwrap();
        assert_eq!(st.nodes_up.len(), 1);
        // A wrong key gets 403.
        let e = srv
            .client(&ApiKey::generate())
            .call::<_, proto::ClusterStatusResponse>(
                None,
                Command::ClusterStatus,
                &proto::ClusterStatusRequest {},
            )
            .await
            .unwrap_err();
        assert_eq!(e.status(), Some(403));
        assert!(e.to_string().contains("access denied"));
        // No client certificate: the TLS handshake fails, the server lives on.
        let cfg = rustls::ClientConfig::builder_with_provider(kms_client::tls::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(kms_client::tls::InsecureVerifier {
                provider: kms_client::tls::provider(),
            }))
            .with_no_client_auth();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));
        let tcp = tokio::net::TcpStream::connect(&srv.addr).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let failed = match connector.connect(name, tcp).await {
            Err(_) => true,
            Ok(mut tls) => {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let _ = tls
                    .write_all(b"GET /version HTTP/1.1\r\nhost: x\r\n\r\n")
                    .await;
                let mut buf = [0u8; 64];
                // TLS 1.3: the server's alert arrives after the client's handshake completes.
                !matches!(tls.read(&mut buf).await, Ok(n) if n > 0)
            }
        };
        assert!(failed, "a client without a certificate was served");
        // Plain HTTP is not served either.
        let mut tcp = tokio::net::TcpStream::connect(&srv.addr).await.unwrap();
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        tcp.write_all(b"GET /version HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buf = Vec::new();
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), tcp.read_to_end(&mut buf))
            .await;
        assert!(!String::from_utf8_lossy(&buf).contains("HTTP/1.1 200"));
        // Still serving.
        assert!(srv.root().version().await.is_ok());
    });
}
