//! Hostile input over the network: every case gets its documented status
//! and message (docs/api.md) -- a transport error is never taken for one --
//! and after each the node still serves and has lost nothing. Plus
//! authentication failures.

use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use kms_client::tls::{client_config, Trust};
use kms_client::{proto, ApiKey, Client, Command};
use kms_tests::{data_dir, rt, Server, SEED_HSM_KEY};
use prost::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The API error of `r`: its status and message. A success, or any other
/// error (a transport error above all), fails the test.
#[track_caller]
fn api_err<T: std::fmt::Debug>(what: &str, r: Result<T, kms_client::Error>) -> (u16, String) {
    match r {
        Err(kms_client::Error::Api { status, message }) => (status, message),
        other => panic!("{what}: expected an HTTP error answer, got {other:?}"),
    }
}

/// The status and error message of a raw response; a transport error fails.
#[track_caller]
fn raw_err(
    what: &str,
    r: Result<kms_client::client::RawResponse, kms_client::Error>,
) -> (u16, String) {
    let r = r.unwrap_or_else(|e| panic!("{what}: expected an HTTP answer, got {e:?}"));
    api_err(what, kms_client::client::check(r))
}

/// The node still serves a normal request and has lost nothing: the keys of
/// enclave `e` are exactly `keys`, and `ct` still decrypts to `pt`.
async fn still_serves(c: &Client, after: &str, keys: &[&str], ct: &[u8], pt: &[u8]) {
    let mut names: Vec<String> = c
        .list_keys("e", "")
        .await
        .unwrap_or_else(|e| panic!("after {after}: listing keys: {e}"))
        .into_iter()
        .map(|k| k.name)
        .collect();
    names.sort();
    assert_eq!(names, keys, "after {after}: the keys changed");
    let back = c
        .decrypt("e", "k", ct, b"")
        .await
        .unwrap_or_else(|e| panic!("after {after}: decrypt: {e}"));
    assert_eq!(back.plaintext, pt, "after {after}");
}

/// Sends `request` as is over a TLS connection authenticated as `key` and
/// reads until the server closes the connection (at most 10 s): what came
/// back. A server that keeps the connection open fails the test.
async fn raw_exchange(addr: &str, key: &ApiKey, request: &[u8]) -> Vec<u8> {
    let tls =
        tokio_rustls::TlsConnector::from(Arc::new(client_config(key, &Trust::Insecure).unwrap()));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let mut s = tls.connect(name, tcp).await.expect("TLS handshake");
    s.write_all(request).await.unwrap();
    s.flush().await.unwrap();
    let mut buf = Vec::new();
    match tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf)).await {
        Ok(Ok(_)) => buf,
        Ok(Err(e)) => panic!("reading the answer to a raw request: {e}"),
        Err(_) => panic!("the server kept the connection open 10 s after a raw request"),
    }
}

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
            (
                "empty body",
                Bytes::new(),
                400,
                "empty request body: at least one frame is required",
            ),
            (
                "truncated header",
                Bytes::from_static(&[0, 207, 0]),
                400,
                "truncated frame header at byte 0: 3 bytes left, a header needs 6",
            ),
            (
                "frame longer than body",
                {
                    let mut b = frame(207, &gen);
                    b.truncate(b.len() - 2);
                    b.freeze()
                },
                400,
                "frame at byte 0 declares",
            ),
            (
                "length 2^32-1",
                Bytes::from_static(&[0, 207, 0xff, 0xff, 0xff, 0xff, 1]),
                400,
                "frame at byte 0 declares 4294967295 bytes but only 1 remain",
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
                "malformed KEY:GENERATE request: ",
            ),
            (
                "invalid UTF-8 name",
                frame(207, &[0x0a, 2, 0xc3, 0x28]).freeze(),
                400,
                "malformed KEY:GENERATE request: ",
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
                "a request must not mix commands that change state with commands that do not",
            ),
        ];
        for (what, name, msg) in [
            ("empty name", "", "key name must not be empty"),
            ("name with /", "a/b", "key name contains the character '/'"),
            (
                "overlong name",
                &"x".repeat(300)[..],
                "key name is 300 bytes long, the maximum is 128",
            ),
            ("name with NUL", "a\0b", "key name contains the character '\\0'"),
            ("name with space", "a b", "key name contains the character ' '"),
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
                msg,
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
        let (ct, pt) = (good.ciphertext.clone(), good.plaintext.clone());
        for (what, body, status, msg) in cases {
            let (s, m) = api_err(what, c.send(Some("e"), body).await);
            assert_eq!(s, status, "{what}: {m}");
            assert!(m.starts_with(msg), "{what}: `{m}` does not start with `{msg}`");
            still_serves(&c, what, &["k"], &ct, &pt).await;
        }
        // Wrong key: a ciphertext of key k does not decrypt under another
        // key, and the answer is exactly kms-go's `invalid ciphertext`.
        c.create_key("e", "k2", "", false).await.unwrap();
        assert_eq!(
            api_err("wrong key", c.decrypt("e", "k2", &ct, b"").await),
            (400, "invalid ciphertext".to_string())
        );
        let keys = ["k", "k2"];
        still_serves(&c, "wrong key", &keys, &ct, &pt).await;
        // Bad enclave names in the path (no percent-decoding: `%` is the
        // character at fault).
        for (path, msg) in [
            (
                "/v1/kms/a%2fb",
                "enclave name contains the character '%'; allowed are letters, digits and . _ - : + = @",
            ),
            (
                "/v1/kms/a%20b",
                "enclave name contains the character '%'; allowed are letters, digits and . _ - : + = @",
            ),
            (
                "/v1/kms/a/b",
                "enclave name contains the character '/'; allowed are letters, digits and . _ - : + = @",
            ),
            ("/v1/kms/..", "enclave name '..' is reserved"),
        ] {
            let r = c
                .request(http::Method::POST, path, Some(frame(207, &gen).freeze()))
                .await;
            assert_eq!(raw_err(path, r), (400, msg.to_string()), "{path}");
            still_serves(&c, path, &keys, &ct, &pt).await;
        }
        // A raw space in the request target is not HTTP: hyper answers 400
        // without a body and closes the connection.
        let req = b"POST /v1/kms/a b HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\n\r\n";
        let answer = raw_exchange(&srv.addr, &srv.root_key, req).await;
        let answer = String::from_utf8_lossy(&answer);
        assert!(
            answer.starts_with("HTTP/1.1 400 Bad Request\r\n"),
            "a request target with a space: {answer:?}"
        );
        still_serves(&c, "a request target with a space", &keys, &ct, &pt).await;
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
        assert_eq!(
            api_err("oversized body", c.send(Some("e"), big.freeze()).await),
            (
                413,
                "request body exceeds the limit of 4194304 bytes".to_string()
            )
        );
        still_serves(&c, "an oversized body", &keys, &ct, &pt).await;
        // Unknown endpoints and methods.
        assert_eq!(
            raw_err("/nope", c.request(http::Method::GET, "/nope", None).await),
            (404, "no such endpoint: GET /nope".to_string())
        );
        assert_eq!(
            raw_err(
                "GET /v1/kms",
                c.request(http::Method::GET, "/v1/kms", None).await
            ),
            (405, "method GET not allowed on /v1/kms".to_string())
        );
        // Key commands without an enclave.
        assert_eq!(
            api_err(
                "KEY:GENERATE without an enclave",
                c.send(None, frame(207, &gen).freeze()).await
            ),
            (
                400,
                "this command needs an enclave: POST /v1/kms/{enclave}".to_string()
            )
        );
        still_serves(&c, "requests without an enclave", &keys, &ct, &pt).await;
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
        let text = String::from_utf8_lossy(&r.body);
        let rejected = text
            .lines()
            .find_map(|l| l.strip_prefix("kms_rejected_total "))
            .unwrap_or_else(|| panic!("no kms_rejected_total in {text}"));
        // Rejected before any command ran (docs/api.md, metrics): the 7
        // framing cases (empty, truncated header, 2 over-long frames, 2
        // unknown ids, mixed batch), the 4 bad path enclaves, the 413, the
        // 404 and the 405. Malformed messages, names and ciphertexts are
        // command errors; the raw request with a space never reaches the
        // handler.
        assert_eq!(rejected, "14", "kms_rejected_total");
    });
}

#[test]
fn authentication() {
    let tmp = tempfile::tempdir().unwrap();
    let srv = Server::start(&data_dir(&tmp, "kms0"), SEED_HSM_KEY);
    rt().block_on(async {
        // The root key derived from the HSM authenticates.
        // 404, not 403: the enclave does not exist, but the root is known.
        assert_eq!(
            api_err(
                "root lists a missing enclave",
                srv.root().list_keys("x", "").await
            ),
            (404, "enclave does not exist".to_string())
        );
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
        let r = srv
            .client(&ApiKey::generate())
            .call::<_, proto::ClusterStatusResponse>(
                None,
                Command::ClusterStatus,
                &proto::ClusterStatusRequest {},
            )
            .await;
        assert_eq!(
            api_err("an unknown key", r),
            (403, "access denied: insufficient permissions".to_string())
        );
        // No client certificate: the handshake completes (client
        // authentication is requested, not required) and only the probes
        // answer (tests/tests/probes.rs); here, /version.
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
        let mut tls = connector
            .connect(name, tcp)
            .await
            .expect("a TLS handshake without a client certificate completes");
        tls.write_all(b"GET /version HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .expect("write the request");
        let mut buf = [0u8; 64];
        match tokio::time::timeout(Duration::from_secs(10), tls.read(&mut buf)).await {
            Ok(Ok(n)) => assert!(
                buf[..n].starts_with(b"HTTP/1.1 200"),
                "GET /version without a certificate: {:?}",
                String::from_utf8_lossy(&buf[..n])
            ),
            Ok(Err(e)) => panic!("GET /version without a certificate: {e}"),
            Err(_) => panic!("GET /version without a certificate got no answer"),
        }
        // Plain HTTP is not served either: the server closes the connection
        // without an HTTP answer.
        let mut tcp = tokio::net::TcpStream::connect(&srv.addr).await.unwrap();
        tcp.write_all(b"GET /version HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buf = Vec::new();
        let r = tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut buf))
            .await
            .expect("the server closes a plain HTTP connection");
        assert!(
            r.is_ok()
                || r.as_ref()
                    .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset),
            "plain HTTP: {r:?}"
        );
        assert!(
            !buf.starts_with(b"HTTP/"),
            "plain HTTP was answered: {:?}",
            String::from_utf8_lossy(&buf)
        );
        // Still serving.
        let v = srv
            .root()
            .version()
            .await
            .expect("version after the failures");
        assert_eq!(v.api_version, "v1");
    });
}
