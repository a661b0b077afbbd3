//! The PKCS#11 module driven through its exported C functions with random
//! call sequences (the calls of `pkcs11-module/tests/calls`), against a
//! live server: a `kms` node started in this process on a loopback port,
//! with two enclaves, so that token objects, cluster keys and remote
//! crypto are reached, not only the errors of a dead server. No call may
//! crash, write outside its buffers (the calls check the lengths the
//! module reports) or return `CKR_GENERAL_ERROR` (what a caught panic
//! becomes), but for a `C_Initialize` without a configuration.
#![no_main]
#![allow(unsafe_code)]

#[path = "../../pkcs11-module/tests/calls/mod.rs"]
mod calls;

use std::path::PathBuf;
use std::ptr::null_mut;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use calls::{step, Call, World};
use cryptoki_sys::{CKR_ARGUMENTS_BAD, CKR_GENERAL_ERROR};
use hsm_backends::{Hsm, SoftHsm};
use kms_client::{ApiKey, Client, ClientConfig};
use libfuzzer_sys::fuzz_target;

/// The live server and the module configuration that names it.
struct Live {
    config: PathBuf,
    _dir: tempfile::TempDir,
}

fn live() -> &'static Live {
    static L: OnceLock<Live> = OnceLock::new();
    L.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temp dir");
        let hsm_key = SoftHsm::generate_key_str();
        // Before any thread of the server or the module reads it.
        std::env::set_var("KMS_HSM_KEY", &*hsm_key);
        let hsm = SoftHsm::from_key_str(&hsm_key).expect("HSM key");
        let root = ApiKey::from_seed(
            &hsm.derive(hsm_backends::labels::ROOT_API_KEY)
                .expect("derive"),
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let addr = format!("127.0.0.1:{port}");
        let cfg = kms_node::config::ServerConfig::load(
            None,
            kms_node::config::Overrides {
                address: Some(addr.clone()),
                data_dir: Some(dir.path().join("data")),
                dev: true,
                ..Default::default()
            },
        )
        .expect("server configuration");
        std::thread::spawn(move || {
            let rt = tokio::runtime::Runtime::new().expect("runtime");
            if let Err(e) = rt.block_on(kms_node::serve::run(cfg, true)) {
                panic!("the server did not start: {e}");
            }
        });
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        let client = Client::new(ClientConfig {
            endpoints: vec![format!("https://{addr}")],
            api_key: root.clone(),
            trust: kms_client::tls::Trust::Insecure,
            timeout: Duration::from_secs(5),
        })
        .expect("client");
        let deadline = Instant::now() + Duration::from_secs(60);
        for e in ["a", "b"] {
            loop {
                match rt.block_on(client.create_enclave(e)) {
                    Ok(()) => break,
                    Err(err) if Instant::now() > deadline => {
                        panic!("cannot create enclave {e} on the live server: {err}")
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(100)),
                }
            }
        }
        let config = dir.path().join("pkcs11.toml");
        std::fs::write(
            &config,
            format!(
                "servers = [\"{addr}\"]\napi_key = \"{}\"\ninsecure = true\n\
                 enclaves = [\"a\", \"b\"]\ntimeout_ms = 3000\nlog_level = \"off\"\n",
                &*root.to_secret_string()
            ),
        )
        .expect("write the module configuration");
        std::env::remove_var("KMS_API_KEY");
        Live { config, _dir: dir }
    })
}

fuzz_target!(|calls: Vec<Call>| {
    let live = live();
    let mut w = World {
        config: live.config.clone(),
        slots: vec![],
        sessions: vec![],
        objects: vec![],
    };
    // From an initialized module with sessions and keys of both kinds, so
    // that the random calls start deep.
    let prelude = [
        Call::Initialize,
        Call::OpenSession(0, true),
        Call::OpenSession(1, true),
        Call::GenerateKey(0, false, 2),
        Call::GenerateKey(1, true, 1),
    ];
    for c in prelude.iter().chain(calls.iter().take(64)) {
        let rv = step(&mut w, c);
        assert!(
            rv != CKR_GENERAL_ERROR || matches!(c, Call::InitializeNull),
            "{c:?} returned CKR_GENERAL_ERROR (a panic?)"
        );
        if matches!(c, Call::InitializeReserved(_)) {
            assert_eq!(rv, CKR_ARGUMENTS_BAD, "{c:?}");
        }
    }
    // SAFETY: no pointer arguments.
    unsafe { kms_pkcs11::ffi::C_Finalize(null_mut()) };
});
