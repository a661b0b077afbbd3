//! The KMS wire protocol and client.
//!
//! - [`cmd`]: command ids and names, exactly those of MinIO's kms-go SDK, plus
//!   this project's extensions in a reserved range.
//! - [`proto`]: the protobuf messages (field numbers as in kms-go), written with
//!   `prost` derive so that no `protoc` is needed.
//! - [`frame`]: the `u16 command | u32 length | message` framing and batches.
//! - [`apikey`]: `k1:` API keys, `h1:` identities, client certificates.
//! - [`client`]: an async client with failover across servers; [`admin`]:
//!   its typed methods for the administration commands.
//! - [`raw`]: raw AES mechanisms (GCM, CBC-PAD, key wrap) and HMAC shared by
//!   the server's PKCS#11 commands and the PKCS#11 module.
//!
//! This crate does not link RocksDB, so the PKCS#11 module can use it.
#![forbid(unsafe_code)]

pub mod admin;
pub mod apikey;
pub mod asym;
pub mod client;
pub mod cmd;
pub mod error;
pub mod frame;
pub mod proto;
pub mod raw;
pub mod tls;

pub use admin::{merge_audit, AuditQuery, KeyVersions, Privilege};
pub use apikey::{ApiKey, Identity};
pub use client::{Client, ClientConfig, CONNECT_TIMEOUT};
pub use cmd::Command;
pub use error::Error;

/// Reads a small file (a configuration, an API key, a CA bundle) of at most
/// `max` bytes: a path that names something endless, like `/dev/zero`, is
/// an error instead of an unbounded read.
pub fn read_small_file(path: &std::path::Path, max: u64) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut out = Vec::new();
    std::fs::File::open(path)?
        .take(max + 1)
        .read_to_end(&mut out)?;
    if out.len() as u64 > max {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("larger than {max} bytes"),
        ));
    }
    Ok(out)
}
