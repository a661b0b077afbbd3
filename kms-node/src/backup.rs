//! Backups: the whole state, sealed so that only a node with the same HSM key
//! can restore it.
//!
//! ```text
//! "KMSBAK01" | u16 BE len | HSM name | u32 BE len | HSM-sealed backup key | v1 ciphertext
//! ```
//! The v1 ciphertext (crate::crypto, AES256, version 0) is made with a fresh
//! random backup key and associated data `kms/v1/backup`; its plaintext is the
//! encoded list of (record key, record value) pairs, as stored in `state`.

use zeroize::Zeroizing;

use crate::codec;
use crate::crypto::{KeyMaterial, KeyType};
use crate::model::State;
use crate::store;

const MAGIC: &[u8; 8] = b"KMSBAK01";
const CONTEXT: &[u8] = b"kms/v1/backup";

#[derive(serde::Serialize, serde::Deserialize)]
struct Payload {
    applied: u64,
    records: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Drop for Payload {
    fn drop(&mut self) {
        for (_, v) in &mut self.records {
            zeroize::Zeroize::zeroize(v);
        }
    }
}

/// A backup of `st` sealed by `hsm` (the node's primary HSM).
pub fn create(hsm: &dyn hsm_backends::Hsm, st: &State) -> Result<Vec<u8>, String> {
    let payload = Payload {
        applied: st.applied,
        records: store::export_records(st)
            .into_iter()
            .map(|(k, v)| (k, v.to_vec()))
            .collect(),
    };
    let plain = Zeroizing::new(codec::encode(&payload));
    let key = crate::crypto::random_key();
    let sealed_key = hsm
        .seal(key.as_ref(), CONTEXT)
        .map_err(|e| format!("cannot seal the backup key: {e}"))?;
    let ct = KeyMaterial::new(KeyType::Aes256, 0, &key).encrypt(&plain, CONTEXT);
    let name = hsm.name();
    let mut out = Vec::with_capacity(ct.len() + 128);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(name.len() as u16).to_be_bytes());
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(&(sealed_key.len() as u32).to_be_bytes());
    out.extend_from_slice(&sealed_key);
    out.extend_from_slice(&ct);
    Ok(out)
}

fn take<'a>(b: &mut &'a [u8], n: usize) -> Result<&'a [u8], String> {
    if b.len() < n {
        return Err("backup file is truncated".into());
    }
    let (h, t) = b.split_at(n);
    *b = t;
    Ok(h)
}

/// Opens a backup with whichever of `configured` sealed it: returns the
/// state it holds and its number of records.
pub fn open(
    configured: &[std::sync::Arc<dyn hsm_backends::Hsm>],
    blob: &[u8],
) -> Result<(State, u64), String> {
    let name = sealed_by(blob)?;
    let hsm = configured
        .iter()
        .find(|h| h.name() == name)
        .ok_or_else(|| {
            let names: Vec<String> = configured.iter().map(|h| h.name()).collect();
            format!(
                "the backup was sealed by HSM {name}, but this node's HSMs are {}",
                names.join(", ")
            )
        })?;
    open_with(hsm.as_ref(), blob)
}

/// The name of the HSM that sealed a backup.
pub fn sealed_by(blob: &[u8]) -> Result<String, String> {
    header(blob).map(|(name, _, _)| name)
}

/// Splits a backup into (HSM name, HSM-sealed backup key, ciphertext).
fn header(blob: &[u8]) -> Result<(String, &[u8], &[u8]), String> {
    let mut b = blob;
    if take(&mut b, 8)? != MAGIC {
        return Err("not a KMS backup file".into());
    }
    let n = u16::from_be_bytes(take(&mut b, 2)?.try_into().expect("2 bytes")) as usize;
    let name = String::from_utf8_lossy(take(&mut b, n)?).into_owned();
    let n = u32::from_be_bytes(take(&mut b, 4)?.try_into().expect("4 bytes")) as usize;
    let sealed_key = take(&mut b, n)?;
    Ok((name, sealed_key, b))
}

/// Opens a backup with `hsm`.
pub fn open_with(hsm: &dyn hsm_backends::Hsm, blob: &[u8]) -> Result<(State, u64), String> {
    let (name, sealed_key, b) = header(blob)?;
    if name != hsm.name() {
        return Err(format!(
            "the backup was sealed by HSM {name}, but this node's HSM is {}",
            hsm.name()
        ));
    }
    let key = hsm
        .unseal(sealed_key, CONTEXT)
        .map_err(|e| format!("cannot unseal the backup: {e}"))?;
    let key: Zeroizing<[u8; 32]> = Zeroizing::new(
        key.as_slice()
            .try_into()
            .map_err(|_| "backup key has the wrong length")?,
    );
    let plain = KeyMaterial::new(KeyType::Aes256, 0, &key)
        .decrypt(b, CONTEXT)
        .map_err(|e| format!("cannot decrypt the backup: {e}"))?;
    decode_payload(&plain)
}

/// Reads a backup's decrypted payload into the state it holds and its
/// number of records.
pub fn decode_payload(plain: &[u8]) -> Result<(State, u64), String> {
    let payload: Payload = codec::decode(plain).map_err(|e| format!("corrupt backup: {e}"))?;
    let mut records: Vec<(&[u8], &[u8])> = payload
        .records
        .iter()
        .map(|(k, v)| (k.as_slice(), v.as_slice()))
        .collect();
    records.sort();
    let st =
        store::import_records(records.into_iter()).map_err(|e| format!("corrupt backup: {e}"))?;
    Ok((st, payload.records.len() as u64))
}
