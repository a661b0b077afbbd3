//! The PKCS#11 extension commands (ids 0x8100..=0x81FF, docs/api.md):
//! KEY:RAWENCRYPT, KEY:RAWDECRYPT and KEY:MACVERIFY. They serve the PKCS#11
//! module's mechanisms on cluster keys (AES-GCM with the caller's IV,
//! AES-CBC-PAD, RFC 3394/5649 key wrap, HMAC verify). All are reads.
//!
//! The raw mechanisms use a key derived from the key version,
//! `KeyMaterial::raw_key`, never the version's secret itself, and only on
//! AES256 keys. Version 0 means: the latest version to encrypt; every version,
//! newest first, to decrypt with an authenticating mechanism (so data sealed
//! before a rotation still opens); the latest version to decrypt CBC-PAD,
//! which cannot tell a wrong key from a right one.

use kms_client::raw::{self, Params, RawError, RawMechanism};
use kms_client::{proto, Command};
use prost::Message;

use super::key::{ring, version};
use super::{decode, ApiError, Ctx};
use crate::crypto::KeyType;
use crate::model::{KeyRing, KeyVersion};

pub fn handle(ctx: &Ctx<'_>, cmd: Command, payload: &[u8]) -> Result<Vec<u8>, ApiError> {
    match cmd {
        Command::KeyRawEncrypt | Command::KeyRawDecrypt => {
            let req: proto::RawCryptRequest = decode(cmd, payload)?;
            ctx.authorize(cmd, &req.name)?;
            let ring = ring(ctx, &req.name)?;
            if ring.key_type != KeyType::Aes256 {
                return Err(ApiError::bad(format!(
                    "key '{}' is a {} key: raw AES mechanisms need an AES256 key",
                    ring.name,
                    ring.key_type.name()
                )));
            }
            let mech = RawMechanism::from_u32(req.mechanism)
                .ok_or_else(|| ApiError::bad(format!("unknown raw mechanism {}", req.mechanism)))?;
            let params = Params {
                iv: &req.iv,
                aad: &req.associated_data,
                tag_len: if req.tag_length == 0 {
                    16
                } else {
                    req.tag_length as usize
                },
            };
            let (version, data) = if cmd == Command::KeyRawEncrypt {
                let v = version(ring, req.version)?;
                let out = raw::encrypt(mech, v.material.raw_key().as_ref(), &params, &req.data)
                    .map_err(bad)?;
                (v.version, out)
            } else {
                decrypt(ring, req.version, mech, &params, &req.data)?
            };
            Ok(proto::RawCryptResponse { version, data }.encode_to_vec())
        }
        Command::KeyMacVerify => {
            let req: proto::MacVerifyRequest = decode(cmd, payload)?;
            ctx.authorize(cmd, &req.name)?;
            let ring = ring(ctx, &req.name)?;
            let hash = mac_hash(&req.hash)?;
            let found = candidates(ring, req.version)?
                .into_iter()
                .find(|v| raw::mac_eq(&v.material.mac_with(hash, &req.message), &req.mac));
            Ok(proto::MacVerifyResponse {
                version: found.map_or(0, |v| v.version),
                valid: found.is_some(),
            }
            .encode_to_vec())
        }
        Command::KeyRawMac => {
            let req: proto::RawMacRequest = decode(cmd, payload)?;
            ctx.authorize(cmd, &req.name)?;
            let ring = ring(ctx, &req.name)?;
            let hash = mac_hash(&req.hash)?;
            let v = version(ring, req.version)?;
            Ok(proto::MacResponse {
                version: v.version,
                mac: v.material.mac_with(hash, &req.message),
            }
            .encode_to_vec())
        }
        _ => Err(ApiError::bad(format!("{cmd} is not a PKCS#11 command"))),
    }
}

fn mac_hash(s: &str) -> Result<raw::MacHash, ApiError> {
    raw::MacHash::parse(s).ok_or_else(|| {
        ApiError::bad(format!(
            "HMAC hash '{s}' is not SHA-1, SHA-256, SHA-384 or SHA-512"
        ))
    })
}

/// The versions to try: `v` alone, or every version newest first.
fn candidates(ring: &KeyRing, v: u32) -> Result<Vec<&KeyVersion>, ApiError> {
    if v != 0 {
        return Ok(vec![version(ring, v)?.as_ref()]);
    }
    let all: Vec<&KeyVersion> = ring.versions.values().rev().map(|v| v.as_ref()).collect();
    if all.is_empty() {
        return Err(ApiError::key_not_found());
    }
    Ok(all)
}

fn decrypt(
    ring: &KeyRing,
    v: u32,
    mech: RawMechanism,
    params: &Params<'_>,
    data: &[u8],
) -> Result<(u32, Vec<u8>), ApiError> {
    let versions = if raw::authenticates(mech) {
        candidates(ring, v)?
    } else {
        vec![version(ring, v)?.as_ref()]
    };
    let mut last = RawError::Auth;
    for kv in versions {
        match raw::decrypt(mech, kv.material.raw_key().as_ref(), params, data) {
            Ok(pt) => return Ok((kv.version, pt.to_vec())),
            // Structural errors do not depend on the version: stop at once.
            Err(RawError::Auth) => last = RawError::Auth,
            Err(e) => return Err(bad(e)),
        }
    }
    Err(bad(last))
}

fn bad(e: RawError) -> ApiError {
    match e {
        RawError::Auth => ApiError::bad("invalid ciphertext"),
        e => ApiError::bad(e.to_string()),
    }
}
