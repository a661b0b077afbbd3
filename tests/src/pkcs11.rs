//! Helpers for the PKCS#11 module's tests: a running node with an enclave
//! and a module configuration file, and the path of the built module.

use std::path::{Path, PathBuf};

use kms_client::ApiKey;

use crate::{data_dir, rt, Server, SEED_HSM_KEY};

/// The enclave the module tests use.
pub const ENCLAVE: &str = "p11";

/// Path of `libkms_pkcs11.so`, built next to the `kms` binary.
pub fn module_path() -> PathBuf {
    if let Ok(p) = std::env::var("KMS_PKCS11_MODULE") {
        return PathBuf::from(p);
    }
    let p = crate::kms_bin()
        .parent()
        .expect("target dir")
        .join("libkms_pkcs11.so");
    assert!(
        p.exists(),
        "{} does not exist: build the workspace first",
        p.display()
    );
    p
}

/// SoftHSM2's module, if installed.
pub fn softhsm_module() -> PathBuf {
    for m in [
        "/usr/lib/softhsm/libsofthsm2.so",
        "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
        "/usr/local/lib/softhsm/libsofthsm2.so",
    ] {
        if Path::new(m).exists() {
            return PathBuf::from(m);
        }
    }
    panic!("SoftHSM2 is not installed: scripts/setup.sh --test");
}

/// A raw template attribute pointing at `v` (for calls through the C
/// functions): `v` must outlive the call.
pub fn raw_attr<T>(
    type_: cryptoki_sys::CK_ATTRIBUTE_TYPE,
    v: &mut T,
) -> cryptoki_sys::CK_ATTRIBUTE {
    cryptoki_sys::CK_ATTRIBUTE {
        type_,
        pValue: v as *mut T as *mut std::ffi::c_void,
        ulValueLen: std::mem::size_of::<T>() as cryptoki_sys::CK_ULONG,
    }
}

/// Writes a module configuration file.
pub fn write_config(path: &Path, servers: &[String], key: &ApiKey, extra: &str) {
    let servers: Vec<String> = servers.iter().map(|s| format!("\"{s}\"")).collect();
    let text = format!(
        "servers = [{}]\napi_key = \"{}\"\ninsecure = true\n{extra}",
        servers.join(", "),
        &*key.to_secret_string()
    );
    std::fs::write(path, text).expect("write module config");
}

/// A node with the enclave [`ENCLAVE`] and a module configuration that
/// uses it as root.
pub struct KmsNode {
    pub server: Server,
    pub config: PathBuf,
    pub tmp: tempfile::TempDir,
}

impl KmsNode {
    /// Starts a node; `extra` is appended to the module configuration.
    pub fn start(extra: &str) -> Self {
        let tmp = tempfile::tempdir().expect("tempdir");
        let server = Server::start(&data_dir(&tmp, "kms0"), SEED_HSM_KEY);
        let c = server.root();
        rt().block_on(c.create_enclave(ENCLAVE))
            .expect("create enclave");
        let config = tmp.path().join("kms-pkcs11.toml");
        write_config(&config, &[server.url()], &server.root_key, extra);
        KmsNode {
            server,
            config,
            tmp,
        }
    }
}

/// A free loopback port with nothing listening (bound, then released).
pub fn dead_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// A loaded module and the slot of [`ENCLAVE`].
pub struct Ctx {
    pub p11: cryptoki::context::Pkcs11,
    pub slot: cryptoki::slot::Slot,
}

/// Loads the module with the configuration file `config` and finds the
/// slot of [`ENCLAVE`].
pub fn load(config: &Path) -> Ctx {
    use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
    let p11 = Pkcs11::new(module_path()).expect("load module");
    std::env::set_var("KMS_PKCS11_CONFIG", config);
    p11.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .expect("C_Initialize");
    let slot = p11
        .get_slots_with_token()
        .unwrap()
        .into_iter()
        .find(|s| p11.get_token_info(*s).unwrap().label() == ENCLAVE)
        .expect("a slot for the enclave");
    Ctx { p11, slot }
}

/// A read-write session on the slot, logged in as the user.
pub fn rw(c: &Ctx) -> cryptoki::session::Session {
    use cryptoki::session::UserType;
    use cryptoki::types::AuthPin;
    let s = c.p11.open_rw_session(c.slot).unwrap();
    s.login(UserType::User, Some(&AuthPin::new("1234".into())))
        .unwrap();
    s
}
