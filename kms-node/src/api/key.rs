//! KEY:* commands.

use std::sync::Arc;

use kms_client::{proto, Command};
use prost::Message;
use rand::RngCore;

use super::{decode, validate_name, ApiError, Ctx};
use crate::asym::AsymType;
use crate::change::{ApplyError, Change, Secret, SecretBytes};
use crate::crypto::{self, KeyType};
use crate::model::{KeyRing, KeyVersion, Time};

pub(super) fn ring<'a>(ctx: &'a Ctx<'_>, name: &str) -> Result<&'a Arc<KeyRing>, ApiError> {
    let e = ctx.enclave()?;
    if let Some(r) = e.keys.get(name).filter(|r| !r.is_deleted()) {
        return Ok(r);
    }
    match e.asym.get(name).filter(|r| !r.is_deleted()) {
        Some(r) => Err(ApiError::bad(format!(
            "key '{name}' is an asymmetric key ({}): this command needs a secret key \
             (KEY:DESCRIBE shows any key)",
            r.key_type.name()
        ))),
        None => Err(ApiError::key_not_found()),
    }
}

fn unsupported_type(t: &str) -> ApiError {
    ApiError::bad(format!(
        "unsupported key type '{t}': use AES256 or ChaCha20, or one of EC-P256, EC-P384, \
         ED25519, RSA-2048, RSA-3072, RSA-4096, ML-DSA-44, ML-DSA-65, ML-DSA-87"
    ))
}

/// The version `v` of a ring (0: the latest).
pub(super) fn version(ring: &KeyRing, v: u32) -> Result<&Arc<KeyVersion>, ApiError> {
    let found = if v == 0 {
        ring.latest()
    } else {
        ring.versions.get(&v)
    };
    found.ok_or_else(|| {
        if v != 0 && v < ring.next_version {
            ApiError::new(
                404,
                format!("key version {v} of '{}' has been deleted", ring.name),
            )
        } else {
            ApiError::new(
                404,
                format!("key version {v} of '{}' does not exist", ring.name),
            )
        }
    })
}

fn status(ring: &KeyRing, v: &KeyVersion) -> proto::KeyStatusResponse {
    proto::KeyStatusResponse {
        name: ring.name.clone(),
        version: v.version,
        r#type: ring.key_type.name().into(),
        created_at: Some(v.created_at.to_proto()),
        created_by: v.created_by.clone(),
    }
}

pub async fn handle(ctx: &mut Ctx<'_>, cmd: Command, payload: &[u8]) -> Result<Vec<u8>, ApiError> {
    match cmd {
        Command::KeyGenerate => {
            let req: proto::GenerateKeyRequest = decode(cmd, payload)?;
            ctx.authorize(cmd, &req.name)?;
            let len = if req.length == 0 {
                crypto::DEFAULT_DATA_KEY
            } else {
                req.length
            };
            if len > crypto::MAX_DATA_KEY {
                return Err(ApiError::bad(format!(
                    "data key length {len} exceeds the maximum of {}",
                    crypto::MAX_DATA_KEY
                )));
            }
            let ring = ring(ctx, &req.name)?;
            let v = version(ring, req.version)?;
            let mut plaintext = zeroize::Zeroizing::new(vec![0u8; len as usize]);
            // Data keys come from the per-thread CSPRNG (ChaCha12 reseeded from
            // the OS): see docs/formats.md, "Randomness".
            rand::thread_rng().fill_bytes(&mut plaintext);
            let ciphertext = v.material.encrypt(&plaintext, &req.associated_data);
            Ok(proto::GenerateKeyResponse {
                version: v.version,
                plaintext: plaintext.to_vec(),
                ciphertext,
            }
            .encode_to_vec())
        }
        Command::KeyEncrypt => {
            let req: proto::EncryptRequest = decode(cmd, payload)?;
            ctx.authorize(cmd, &req.name)?;
            let ring = ring(ctx, &req.name)?;
            let v = version(ring, req.version)?;
            let ciphertext = v.material.encrypt(&req.plaintext, &req.associated_data);
            Ok(proto::EncryptResponse {
                version: v.version,
                ciphertext,
            }
            .encode_to_vec())
        }
        Command::KeyDecrypt => {
            let req: proto::DecryptRequest = decode(cmd, payload)?;
            ctx.authorize(cmd, &req.name)?;
            let ring = ring(ctx, &req.name)?;
            // The version in the ciphertext is authoritative (and authenticated);
            // the request's version is ignored, as clients such as MinIO send
            // one that may not match after a rotation.
            let cv = crypto::ciphertext_version(&req.ciphertext)
                .map_err(|e| ApiError::bad(e.to_string()))?;
            let v = match ring.versions.get(&cv) {
                Some(v) => v,
                None if cv != 0 && cv < ring.next_version => {
                    return Err(ApiError::bad(format!(
                        "invalid ciphertext: it was made with version {cv} of key '{}', which has been deleted",
                        ring.name
                    )))
                }
                None => return Err(ApiError::bad("invalid ciphertext")),
            };
            let plaintext = v
                .material
                .decrypt(&req.ciphertext, &req.associated_data)
                .map_err(|e| ApiError::bad(e.to_string()))?;
            Ok(proto::DecryptResponse {
                plaintext: plaintext.to_vec(),
            }
            .encode_to_vec())
        }
        Command::KeyMac => {
            let req: proto::MacRequest = decode(cmd, payload)?;
            ctx.authorize(cmd, &req.name)?;
            let ring = ring(ctx, &req.name)?;
            let v = version(ring, req.version)?;
            Ok(proto::MacResponse {
                version: v.version,
                mac: v.material.mac(&req.message).to_vec(),
            }
            .encode_to_vec())
        }
        Command::KeyStatus => {
            let req: proto::KeyStatusRequest = decode(cmd, payload)?;
            ctx.authorize(cmd, &req.name)?;
            let ring = ring(ctx, &req.name)?;
            let v = version(ring, req.version)?;
            Ok(status(ring, v).encode_to_vec())
        }
        Command::KeyList => {
            let req: proto::ListRequest = decode(cmd, payload)?;
            ctx.authorize(cmd, "")?;
            let e = ctx.enclave()?;
            let (keys, continue_at) = super::page(&e.keys, &req, |name, ring| {
                let v = ring.latest()?;
                ctx.visible(cmd, name).then(|| status(ring, v))
            });
            Ok(proto::ListKeysResponse { keys, continue_at }.encode_to_vec())
        }
        Command::KeyListVersions => {
            let req: proto::ListRequest = decode(cmd, payload)?;
            // The prefix names the key whose versions are listed.
            ctx.authorize(cmd, &req.prefix)?;
            let ring = ring(ctx, &req.prefix)?;
            let from: u32 = req.continue_at.parse().unwrap_or(0);
            let limit = super::page_limit(&req);
            let mut keys = Vec::new();
            let mut continue_at = String::new();
            for (n, v) in ring.versions.from(from) {
                if keys.len() == limit {
                    continue_at = n.to_string();
                    break;
                }
                keys.push(status(ring, v));
            }
            Ok(proto::ListKeysResponse { keys, continue_at }.encode_to_vec())
        }
        Command::KeyCreate => {
            let req: proto::CreateKeyRequest = decode(cmd, payload)?;
            validate_name("key", &req.name)?;
            ctx.authorize(cmd, &req.name)?;
            let e = ctx.enclave()?;
            let enclave = e.name.clone();
            let asym_type = e
                .asym
                .get(&req.name)
                .filter(|r| req.add_version && !r.is_deleted())
                .map(|r| r.key_type)
                .or_else(|| {
                    (!req.add_version)
                        .then(|| AsymType::parse(&req.r#type))
                        .flatten()
                });
            let change = if let Some(t) = asym_type {
                // Generated here, off the replication path; the log carries
                // the sealed result.
                if !req.add_version && e.has_key(&req.name) {
                    return Err(ApplyError::KeyExists.into());
                }
                let pkcs8 = SecretBytes(super::asym::generate(ctx, t).await?.to_vec());
                if req.add_version {
                    Change::AddAsymKeyVersion {
                        enclave,
                        name: req.name,
                        pkcs8,
                        at: Time::now(),
                        by: ctx.caller.identity.to_string(),
                    }
                } else {
                    Change::CreateAsymKey {
                        enclave,
                        name: req.name,
                        key_type: t,
                        pkcs8,
                        imported: false,
                        at: Time::now(),
                        by: ctx.caller.identity.to_string(),
                    }
                }
            } else if req.add_version {
                Change::AddKeyVersion {
                    enclave,
                    name: req.name,
                    secret: Secret::random(),
                    at: Time::now(),
                    by: ctx.caller.identity.to_string(),
                }
            } else {
                let key_type =
                    KeyType::parse(&req.r#type).ok_or_else(|| unsupported_type(&req.r#type))?;
                Change::CreateKey {
                    enclave,
                    name: req.name,
                    key_type,
                    secret: Secret::random(),
                    imported: false,
                    at: Time::now(),
                    by: ctx.caller.identity.to_string(),
                }
            };
            ctx.commit(cmd, change).await?;
            Ok(Vec::new())
        }
        Command::KeyImport => {
            let mut req: proto::ImportKeyRequest = decode(cmd, payload)?;
            let key = zeroize::Zeroizing::new(std::mem::take(&mut req.key));
            validate_name("key", &req.name)?;
            ctx.authorize(cmd, &req.name)?;
            // An asymmetric type, or no type and what looks like a private
            // key (PEM, or a DER SEQUENCE longer than any secret key).
            let asym_type = AsymType::parse(&req.r#type);
            let looks_like_private_key =
                key.starts_with(b"-----BEGIN") || (key.first() == Some(&0x30) && key.len() > 48);
            if asym_type.is_some() || (req.r#type.is_empty() && looks_like_private_key) {
                let (t, pkcs8) = super::asym::import(&key, asym_type)?;
                let change = Change::CreateAsymKey {
                    enclave: ctx.enclave()?.name.clone(),
                    name: req.name,
                    key_type: t,
                    pkcs8: SecretBytes(pkcs8.to_vec()),
                    imported: true,
                    at: Time::now(),
                    by: ctx.caller.identity.to_string(),
                };
                ctx.commit(cmd, change).await?;
                return Ok(Vec::new());
            }
            let key_type =
                KeyType::parse(&req.r#type).ok_or_else(|| unsupported_type(&req.r#type))?;
            let secret: [u8; 32] = key.as_slice().try_into().map_err(|_| {
                ApiError::bad(format!(
                    "an imported {} key must be 32 bytes, not {}",
                    key_type.name(),
                    key.len()
                ))
            })?;
            let enclave = ctx.enclave()?.name.clone();
            let change = Change::CreateKey {
                enclave,
                name: req.name,
                key_type,
                secret: Secret(secret),
                imported: true,
                at: Time::now(),
                by: ctx.caller.identity.to_string(),
            };
            ctx.commit(cmd, change).await?;
            Ok(Vec::new())
        }
        Command::KeyDelete => {
            let req: proto::DeleteKeyRequest = decode(cmd, payload)?;
            validate_name("key", &req.name)?;
            ctx.authorize(cmd, &req.name)?;
            let enclave = ctx.enclave()?.name.clone();
            let change = if req.all_versions {
                Change::DeleteKey {
                    enclave,
                    name: req.name,
                }
            } else {
                Change::DeleteKeyVersion {
                    enclave,
                    name: req.name,
                    version: req.version,
                }
            };
            ctx.commit(cmd, change).await?;
            Ok(Vec::new())
        }
        _ => Err(ApiError::bad(format!("{cmd} is not a key command"))),
    }
}
