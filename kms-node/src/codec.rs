//! The one place that knows the binary encoding of stored records and log
//! entries (bincode 2, pinned). Swapping the encoding means changing this file
//! and bumping the on-disk format version in `store.rs`.

use serde::de::DeserializeOwned;
use serde::Serialize;

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<{ 64 << 20 }>()
}

pub fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    bincode::serde::encode_to_vec(v, config()).expect("in-memory values always encode")
}

pub fn decode<T: DeserializeOwned>(b: &[u8]) -> Result<T, String> {
    let (v, n) = bincode::serde::decode_from_slice(b, config()).map_err(|e| e.to_string())?;
    if n != b.len() {
        return Err(format!("{} trailing bytes", b.len() - n));
    }
    Ok(v)
}

fn wire_config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<{ 512 << 20 }>()
}

/// Decodes an inter-node frame (snapshots may exceed the record limit).
pub fn decode_wire<T: DeserializeOwned>(b: &[u8]) -> Result<T, String> {
    let (v, n) = bincode::serde::decode_from_slice(b, wire_config()).map_err(|e| e.to_string())?;
    if n != b.len() {
        return Err(format!("{} trailing bytes", b.len() - n));
    }
    Ok(v)
}

/// Encodes an inter-node frame.
pub fn encode_wire<T: Serialize>(v: &T) -> Result<Vec<u8>, String> {
    bincode::serde::encode_to_vec(v, wire_config()).map_err(|e| e.to_string())
}
