//! Asymmetric keys: KEY:SIGN, KEY:VERIFY, KEY:PUBLICKEY, KEY:ASYMDECRYPT
//! (RSA-OAEP), KEY:DESCRIBE and KEY:LISTALL. Keys are created, imported,
//! rotated and deleted with the kms-go key commands (`key.rs`); the kms-go
//! reads (KEY:STATUS, KEY:LIST) never show them, because kms-go clients
//! know only secret key types (docs/api.md, "Asymmetric keys").
//!
//! Every command here is a read: it signs or decrypts on the node that
//! takes it, with the state that node publishes.

use std::sync::Arc;

use kms_client::{proto, Command};
use prost::Message;
use zeroize::Zeroizing;

use super::{decode, ApiError, Ctx};
use crate::asym::{self, AsymError, AsymType, Hash, PrivateKey, SignAlg};
use crate::model::{AsymRing, AsymVersion, Enclave, Time};

/// The live asymmetric key `name`; a secret key of that name is a clear 400.
pub(super) fn asym_ring<'a>(
    ctx: &'a Ctx<'_>,
    cmd: Command,
    name: &str,
) -> Result<&'a Arc<AsymRing>, ApiError> {
    let e = ctx.enclave()?;
    if let Some(r) = e.asym.get(name).filter(|r| !r.is_deleted()) {
        return Ok(r);
    }
    match e.keys.get(name).filter(|r| !r.is_deleted()) {
        Some(r) => Err(ApiError::bad(format!(
            "key '{name}' is a secret key ({}): {cmd} needs an asymmetric key",
            r.key_type.name()
        ))),
        None => Err(ApiError::key_not_found()),
    }
}

/// Version `v` of an asymmetric key (0: the latest).
fn version(ring: &AsymRing, v: u32) -> Result<&Arc<AsymVersion>, ApiError> {
    let found = if v == 0 {
        ring.latest()
    } else {
        ring.versions.get(&v)
    };
    found.ok_or_else(|| {
        let what = if v != 0 && v < ring.next_version {
            "has been deleted"
        } else {
            "does not exist"
        };
        ApiError::new(404, format!("key version {v} of '{}' {what}", ring.name))
    })
}

/// The versions to try: `v`, or every version, newest first (0).
fn candidates(ring: &AsymRing, v: u32) -> Result<Vec<&Arc<AsymVersion>>, ApiError> {
    if v != 0 {
        return Ok(vec![version(ring, v)?]);
    }
    Ok(ring.versions.values().rev().collect())
}

fn hash_param(field: &str, s: &str, default: Hash) -> Result<Hash, ApiError> {
    if s.is_empty() {
        return Ok(default);
    }
    Hash::parse(s).ok_or_else(|| {
        ApiError::bad(format!(
            "{field} '{s}' is not SHA-1, SHA-224, SHA-256, SHA-384 or SHA-512"
        ))
    })
}

/// The signature algorithm `p` names for a key of type `t`.
pub(super) fn sign_alg(t: AsymType, p: &proto::SignParams) -> Result<SignAlg, ApiError> {
    let unused = |what: &str, set: bool| -> Result<(), ApiError> {
        if set {
            return Err(ApiError::bad(format!("{} keys take no {what}", t.name())));
        }
        Ok(())
    };
    if !t.is_ml_dsa() {
        unused("context", !p.context.is_empty())?;
        unused("deterministic flag", p.deterministic)?;
    }
    if !t.is_rsa() {
        unused("padding", !p.padding.is_empty())?;
        unused("salt length", p.salt_length.is_some())?;
        unused("MGF1 hash", !p.mgf1_hash.is_empty())?;
    }
    Ok(match t {
        AsymType::EcP256 | AsymType::EcP384 => {
            let default = if t == AsymType::EcP384 {
                Hash::Sha384
            } else {
                Hash::Sha256
            };
            SignAlg::Ecdsa {
                hash: hash_param("hash", &p.hash, default)?,
                prehashed: p.prehashed,
            }
        }
        AsymType::Ed25519 | AsymType::MlDsa44 | AsymType::MlDsa65 | AsymType::MlDsa87 => {
            unused("hash (they sign the message itself)", !p.hash.is_empty())?;
            unused(
                "pre-hashed input (they sign the message itself)",
                p.prehashed,
            )?;
            if t == AsymType::Ed25519 {
                SignAlg::Ed25519
            } else {
                if p.context.len() > 255 {
                    return Err(ApiError::bad(format!(
                        "the ML-DSA context is {} bytes long, the maximum is 255",
                        p.context.len()
                    )));
                }
                SignAlg::MlDsa {
                    context: p.context.clone(),
                    deterministic: p.deterministic,
                }
            }
        }
        AsymType::Rsa2048 | AsymType::Rsa3072 | AsymType::Rsa4096 => {
            match p
                .padding
                .to_ascii_uppercase()
                .replace(['-', '_', ' '], "")
                .as_str()
            {
                "" | "PKCS1" | "PKCS1V15" => {
                    unused("salt length (PKCS#1 v1.5)", p.salt_length.is_some())?;
                    unused("MGF1 hash (PKCS#1 v1.5)", !p.mgf1_hash.is_empty())?;
                    if p.hash.eq_ignore_ascii_case("none") {
                        SignAlg::RsaPkcs1 {
                            hash: None,
                            prehashed: true,
                        }
                    } else {
                        SignAlg::RsaPkcs1 {
                            hash: Some(hash_param("hash", &p.hash, Hash::Sha256)?),
                            prehashed: p.prehashed,
                        }
                    }
                }
                "PSS" => {
                    let hash = hash_param("hash", &p.hash, Hash::Sha256)?;
                    SignAlg::RsaPss {
                        hash,
                        mgf1: hash_param("MGF1 hash", &p.mgf1_hash, hash)?,
                        salt_len: p
                            .salt_length
                            .map(|n| n as usize)
                            .unwrap_or(hash.output_len()),
                        prehashed: p.prehashed,
                    }
                }
                other => {
                    return Err(ApiError::bad(format!(
                        "RSA padding '{other}' is not PKCS1 or PSS"
                    )))
                }
            }
        }
    })
}

/// What a client may see of a crypto error (never key bytes).
fn crypto_error(e: AsymError) -> ApiError {
    match e {
        AsymError::Internal(m) => {
            tracing::error!("asymmetric operation failed: {m}");
            ApiError::new(500, "internal error in an asymmetric operation")
        }
        e => ApiError::bad(e.to_string()),
    }
}

fn describe_versions(ring: &AsymRing) -> Vec<proto::KeyVersionInfo> {
    ring.versions
        .values()
        .map(|v| proto::KeyVersionInfo {
            version: v.version,
            created_at: Some(v.created_at.to_proto()),
            created_by: v.created_by.clone(),
            imported: v.imported,
            fingerprint: asym::fingerprint(&v.spki),
        })
        .collect()
}

fn entry(name: &str, t: &str, version: u32, at: Time, by: &str) -> proto::KeyStatusResponse {
    proto::KeyStatusResponse {
        name: name.to_string(),
        version,
        r#type: t.to_string(),
        created_at: Some(at.to_proto()),
        created_by: by.to_string(),
    }
}

/// One page of every live key, secret and asymmetric, in name order.
fn list_all(
    ctx: &Ctx<'_>,
    e: &Enclave,
    req: &proto::ListRequest,
) -> (Vec<proto::KeyStatusResponse>, String) {
    let limit = super::page_limit(req);
    let start = if req.continue_at.is_empty() {
        req.prefix.clone()
    } else {
        req.continue_at.clone()
    };
    let mut secret = e.keys.range(start.clone()..).peekable();
    let mut pairs = e.asym.range(start..).peekable();
    let mut out = Vec::new();
    loop {
        let take_secret = match (secret.peek(), pairs.peek()) {
            (None, None) => break,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (Some((a, _)), Some((b, _))) => a <= b,
        };
        let (name, item) = if take_secret {
            let Some((name, r)) = secret.next() else {
                break;
            };
            let item = r.latest().map(|v| {
                entry(
                    name,
                    r.key_type.name(),
                    v.version,
                    v.created_at,
                    &v.created_by,
                )
            });
            (name, item)
        } else {
            let Some((name, r)) = pairs.next() else { break };
            let item = r.latest().map(|v| {
                entry(
                    name,
                    r.key_type.name(),
                    v.version,
                    v.created_at,
                    &v.created_by,
                )
            });
            (name, item)
        };
        if !name.starts_with(&req.prefix) {
            break;
        }
        let Some(item) = item.filter(|_| ctx.visible(Command::KeyListAll, name)) else {
            continue;
        };
        if out.len() == limit {
            return (out, name.clone());
        }
        out.push(item);
    }
    (out, String::new())
}

/// Whether signing, verifying or decrypting with a key of type `t` is slow
/// enough (0.2 ms and more) to leave the async scheduler (`crate::work`).
fn slow(t: AsymType) -> bool {
    !matches!(t, AsymType::Ed25519 | AsymType::EcP256)
}

pub async fn handle(ctx: &Ctx<'_>, cmd: Command, payload: &[u8]) -> Result<Vec<u8>, ApiError> {
    match cmd {
        Command::KeySign => {
            let req: proto::SignRequest = decode(cmd, payload)?;
            ctx.authorize(cmd, &req.name)?;
            let ring = asym_ring(ctx, cmd, &req.name)?;
            let alg = sign_alg(ring.key_type, &req.params.unwrap_or_default())?;
            let v = version(ring, req.version)?;
            let signature = ctx
                .node
                .work
                .crypto(slow(ring.key_type), || v.key.sign(&alg, &req.message))
                .await
                .map_err(crypto_error)?;
            Ok(proto::SignResponse {
                signature,
                version: v.version,
            }
            .encode_to_vec())
        }
        Command::KeyVerify => {
            let req: proto::VerifyRequest = decode(cmd, payload)?;
            ctx.authorize(cmd, &req.name)?;
            let ring = asym_ring(ctx, cmd, &req.name)?;
            let alg = sign_alg(ring.key_type, &req.params.unwrap_or_default())?;
            let versions = candidates(ring, req.version)?;
            let valid = ctx
                .node
                .work
                .crypto(slow(ring.key_type), || {
                    for v in versions {
                        match asym::verify(&v.spki, &alg, &req.message, &req.signature) {
                            Ok(()) => return Ok(v.version),
                            Err(AsymError::BadSignature) => {}
                            Err(e) => return Err(crypto_error(e)),
                        }
                    }
                    Ok(0)
                })
                .await?;
            Ok(proto::VerifyResponse {
                valid: valid != 0,
                version: valid,
            }
            .encode_to_vec())
        }
        Command::KeyPublicKey => {
            let req: proto::PublicKeyRequest = decode(cmd, payload)?;
            ctx.authorize(cmd, &req.name)?;
            let ring = asym_ring(ctx, cmd, &req.name)?;
            let v = version(ring, req.version)?;
            Ok(proto::PublicKeyResponse {
                public_key: v.spki.clone(),
                version: v.version,
                r#type: ring.key_type.name().into(),
                fingerprint: asym::fingerprint(&v.spki),
            }
            .encode_to_vec())
        }
        Command::KeyAsymDecrypt => {
            let req: proto::AsymDecryptRequest = decode(cmd, payload)?;
            ctx.authorize(cmd, &req.name)?;
            let ring = asym_ring(ctx, cmd, &req.name)?;
            if !ring.key_type.is_rsa() {
                return Err(ApiError::bad(format!(
                    "{} keys do not decrypt: {cmd} needs an RSA key",
                    ring.key_type.name()
                )));
            }
            let hash = hash_param("hash", &req.hash, Hash::Sha256)?;
            let mgf1 = hash_param("MGF1 hash", &req.mgf1_hash, hash)?;
            let versions = candidates(ring, req.version)?;
            ctx.node
                .work
                .crypto(true, || {
                    for v in versions {
                        match v.key.decrypt_oaep(hash, mgf1, &req.label, &req.ciphertext) {
                            Ok(p) => {
                                let plaintext: Zeroizing<Vec<u8>> = p;
                                return Ok(proto::AsymDecryptResponse {
                                    plaintext: plaintext.to_vec(),
                                    version: v.version,
                                }
                                .encode_to_vec());
                            }
                            Err(AsymError::Decrypt) => {}
                            Err(e) => return Err(crypto_error(e)),
                        }
                    }
                    // One answer for every failure: a padding oracle learns nothing.
                    Err(ApiError::bad("decryption failed"))
                })
                .await
        }
        Command::KeyDescribe => {
            let req: proto::DescribeKeyRequest = decode(cmd, payload)?;
            ctx.authorize(cmd, &req.name)?;
            let e = ctx.enclave()?;
            if let Some(r) = e.asym.get(&req.name).filter(|r| !r.is_deleted()) {
                return Ok(proto::DescribeKeyResponse {
                    name: r.name.clone(),
                    r#type: r.key_type.name().into(),
                    asymmetric: true,
                    versions: describe_versions(r),
                }
                .encode_to_vec());
            }
            let r = super::key::ring(ctx, &req.name)?;
            Ok(proto::DescribeKeyResponse {
                name: r.name.clone(),
                r#type: r.key_type.name().into(),
                asymmetric: false,
                versions: r
                    .versions
                    .values()
                    .map(|v| proto::KeyVersionInfo {
                        version: v.version,
                        created_at: Some(v.created_at.to_proto()),
                        created_by: v.created_by.clone(),
                        imported: v.imported,
                        fingerprint: String::new(),
                    })
                    .collect(),
            }
            .encode_to_vec())
        }
        Command::KeyListAll => {
            let req: proto::ListRequest = decode(cmd, payload)?;
            ctx.authorize(cmd, "")?;
            let e = ctx.enclave()?;
            let (keys, continue_at) = list_all(ctx, e, &req);
            Ok(proto::ListKeysResponse { keys, continue_at }.encode_to_vec())
        }
        _ => Err(ApiError::bad(format!(
            "{cmd} is not an asymmetric-key command"
        ))),
    }
}

/// Generates a key pair of type `t` and returns its PKCS#8 DER: RSA on the
/// node's idle-priority background thread (RSA-3072 takes about a second;
/// `crate::work`), the others (50 µs to 0.3 ms) like a signature.
pub(super) async fn generate(ctx: &Ctx<'_>, t: AsymType) -> Result<Zeroizing<Vec<u8>>, ApiError> {
    let make = move || PrivateKey::generate(t).map(|k| k.to_pkcs8_der());
    let made = if t.is_rsa() {
        ctx.node
            .work
            .background(make)
            .await
            .ok_or_else(|| ApiError::new(500, "key generation did not finish"))?
    } else {
        ctx.node.work.crypto(slow(t), make).await
    };
    made.map_err(crypto_error)
}

/// Parses an imported private key (PKCS#8 DER or PEM); `want` is the type
/// the request names, if any. Returns the type and the PKCS#8 DER to store.
pub(super) fn import(
    bytes: &[u8],
    want: Option<AsymType>,
) -> Result<(AsymType, Zeroizing<Vec<u8>>), ApiError> {
    let key = PrivateKey::import(bytes).map_err(crypto_error)?;
    if let Some(w) = want {
        if w != key.key_type() {
            return Err(ApiError::bad(format!(
                "the imported key is {}, not {}",
                key.key_type().name(),
                w.name()
            )));
        }
    }
    Ok((key.key_type(), key.to_pkcs8_der()))
}
