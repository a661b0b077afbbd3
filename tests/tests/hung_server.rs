//! A server that accepts TCP connections and never completes the TLS
//! handshake (a hung process, a stuck load balancer) must not stall clients:
//! the client bounds connect plus handshake (`kms_client::CONNECT_TIMEOUT`)
//! and moves on to the next server, for reads and writes alike (nothing was
//! sent, so a write is safe to send elsewhere). Checked through the Rust
//! client, the `kms` CLI and the PKCS#11 module's client settings.

use std::net::TcpListener;
use std::time::{Duration, Instant};

use kms_client::tls::Trust;
use kms_client::{Client, ClientConfig, CONNECT_TIMEOUT};
use kms_tests::{data_dir, ok, rt, Server, SEED_HSM_KEY};

/// Accepts connections and holds them open without reading or writing.
/// Returns the address; the listener thread lives as long as the test.
fn hung_server() -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        // Bounded: a test opens a handful of connections.
        for s in l.incoming().take(1000) {
            match s {
                Ok(s) => held.push(s),
                Err(_) => return,
            }
        }
    });
    addr
}

/// What one request may cost at most: the hung server's connect timeout,
/// then a normal request to the live one (generous for a loaded 2-core host).
fn bound() -> Duration {
    CONNECT_TIMEOUT + Duration::from_secs(3)
}

#[test]
fn client_moves_on_from_a_server_that_never_completes_the_handshake() {
    let tmp = tempfile::tempdir().unwrap();
    let srv = Server::start(&data_dir(&tmp, "live"), SEED_HSM_KEY);
    let hung = hung_server();
    let runtime = rt();
    let client = |endpoints: Vec<String>| {
        let _g = runtime.enter();
        Client::new(ClientConfig {
            endpoints,
            api_key: srv.root_key.clone(),
            trust: Trust::Insecure,
            // The old behaviour waited this long and failed.
            timeout: Duration::from_secs(30),
        })
        .unwrap()
    };
    // The client starts at a random server: run enough requests that the
    // hung one comes first several times. Each new client has no memory of
    // the hung server, so every request can meet it.
    let mut slowest = Duration::ZERO;
    for i in 0..10 {
        let c = client(vec![format!("https://{hung}"), srv.url()]);
        let t = Instant::now();
        runtime
            .block_on(c.create_enclave(&format!("e{i}")))
            .unwrap_or_else(|e| panic!("write {i} failed instead of moving on: {e}"));
        runtime
            .block_on(c.key_status(&format!("e{i}"), "absent"))
            .expect_err("no such key");
        slowest = slowest.max(t.elapsed());
        assert!(
            t.elapsed() < bound() * 2,
            "request {i} took {:?}",
            t.elapsed()
        );
    }
    // Only the hung server: a clear connection error within the bound, not
    // "request interrupted, outcome unknown" after the request timeout.
    let c = client(vec![format!("https://{hung}")]);
    let t = Instant::now();
    let e = runtime
        .block_on(c.create_enclave("never"))
        .expect_err("the hung server cannot answer");
    assert!(t.elapsed() < bound(), "took {:?}", t.elapsed());
    assert!(
        matches!(e, kms_client::Error::Transport(_)),
        "a handshake that never completes is a connection failure (nothing sent): {e:?}"
    );
    assert!(e.to_string().contains("TLS handshake not complete"), "{e}");
    eprintln!("slowest request with a hung server first: {slowest:?}");
    // The client starts at a random server: in 10 tries the hung one came
    // first at least once (all but 1 in 1024 runs), and cost the timeout.
    assert!(
        slowest >= CONNECT_TIMEOUT,
        "the hung server was never tried first: {slowest:?}"
    );
}

#[test]
fn cli_moves_on_from_a_hung_server() {
    let tmp = tempfile::tempdir().unwrap();
    let srv = Server::start(&data_dir(&tmp, "live"), SEED_HSM_KEY);
    let hung = hung_server();
    let servers = format!("https://{hung},{}", srv.url());
    let mut slowest = Duration::ZERO;
    for i in 0..10 {
        let t = Instant::now();
        let out = srv.cli(None, &["-s", &servers, "add-enclave", &format!("cli-{i}")]);
        ok(&out);
        slowest = slowest.max(t.elapsed());
        assert!(t.elapsed() < bound() * 2, "took {:?}", t.elapsed());
    }
    // As above: the hung server came first at least once (1023 runs in 1024).
    assert!(
        slowest >= CONNECT_TIMEOUT,
        "the hung server was never tried first: {slowest:?}"
    );
    let out = ok(&srv.cli(None, &["-s", &servers, "ls-enclave"]));
    assert!(out.contains("cli-9"), "{out}");
}

/// The PKCS#11 module uses the same client: with a hung server listed first
/// it still initializes and encrypts, each call within the bound.
#[test]
fn pkcs11_module_moves_on_from_a_hung_server() {
    use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
    use cryptoki::mechanism::Mechanism;
    use cryptoki::object::{Attribute, ObjectClass};
    use kms_tests::pkcs11::{module_path, write_config, KmsNode, ENCLAVE};

    let node = KmsNode::start("");
    let hung = hung_server();
    let config = node.tmp.path().join("hung-first.toml");
    write_config(
        &config,
        &[format!("https://{hung}"), node.server.url()],
        &node.server.root_key,
        &format!("enclaves = [\"{ENCLAVE}\"]\n"),
    );
    std::env::set_var("KMS_PKCS11_CONFIG", &config);
    let p11 = Pkcs11::new(module_path()).unwrap();
    let t = Instant::now();
    p11.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .expect("C_Initialize");
    let slot = p11.get_slots_with_token().unwrap()[0];
    let s = p11.open_rw_session(slot).unwrap();
    let key = s
        .generate_key(
            &Mechanism::AesKeyGen,
            &[
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::ValueLen(32.into()),
                Attribute::Token(true),
                Attribute::Label(b"hung-test".to_vec()),
                Attribute::Encrypt(true),
                Attribute::Decrypt(true),
            ],
        )
        .expect("a cluster key through the live server");
    let mut slowest = t.elapsed();
    for _ in 0..5 {
        let t = Instant::now();
        let iv = [7u8; 16];
        let ct = s
            .encrypt(&Mechanism::AesCbcPad(iv), key, b"moves on")
            .expect("encrypt");
        assert_eq!(
            s.decrypt(&Mechanism::AesCbcPad(iv), key, &ct).unwrap(),
            b"moves on"
        );
        slowest = slowest.max(t.elapsed());
    }
    assert!(slowest < bound() * 3, "a call took {slowest:?}");
    p11.finalize().unwrap();
}
