//! Configuration files: the server's (`kms server --config`) and the
//! PKCS#11 module's (`KMS_PKCS11_CONFIG`). A clear error or a
//! configuration, never a panic; files they name are read bounded.
#![no_main]

use kms_node::config::{Overrides, ServerConfig};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = ServerConfig::from_toml(text, "fuzz.toml", Overrides::default());
    let _ = kms_pkcs11::config::Config::from_toml(text, "fuzz.toml");
});
