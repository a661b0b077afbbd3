//! Backup files: the header (magic, HSM name, sealed backup key), the
//! HSM-sealed key, the encrypted payload and, past the encryption, the
//! payload's records. Mode byte 0 feeds the rest straight to the payload
//! decoder (what a backup with a valid seal but corrupt contents reaches);
//! anything else opens the input as a whole backup file.
#![no_main]

use std::sync::OnceLock;

use hsm_backends::SoftHsm;
use kms_node::backup;
use libfuzzer_sys::fuzz_target;

fn hsm() -> &'static SoftHsm {
    static H: OnceLock<SoftHsm> = OnceLock::new();
    H.get_or_init(|| SoftHsm::from_key(&[7; 32]))
}

fuzz_target!(|data: &[u8]| {
    match data.split_first() {
        Some((0, rest)) => {
            let _ = backup::decode_payload(rest);
        }
        _ => {
            let _ = backup::sealed_by(data);
            let _ = backup::open_with(hsm(), data);
        }
    }
});
