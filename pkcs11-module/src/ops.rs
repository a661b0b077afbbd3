//! Cryptographic operations of a session: encrypt, decrypt, sign, verify,
//! digest, wrap and unwrap; on session keys locally, on cluster keys through
//! the cluster (KEY:RAWENCRYPT, KEY:RAWDECRYPT, KEY:MAC, KEY:MACVERIFY,
//! KEY:ENCRYPT, KEY:DECRYPT).
//!
//! Multi-part calls collect their input (up to [`MAX_INPUT`]) and compute at
//! `*Final`, so `*Update` returns no output. The result of a computation is
//! kept until the caller's buffer is large enough, so the two-call size
//! convention never repeats a network call, and `CKR_BUFFER_TOO_SMALL` or a
//! size query leaves the operation active, as PKCS#11 requires.
//!
//! The cluster's answers are checked before they become output: a raw
//! encryption (or wrap) has exactly the length its mechanism gives, a
//! decryption is never longer than its input, a MAC has its hash's length. Anything
//! else is `CKR_DEVICE_ERROR` with a log line (`bad_answer`).

use std::sync::Arc;

use cryptoki_sys::*;
use kms_client::raw::{self, RawError};
use kms_client::{proto, Command};
use zeroize::Zeroizing;

use crate::asym::{HashAlg, Hasher, PairInfo};

use crate::error::{Error, Result};
use crate::log::Level;
use crate::mech::Mech;
use crate::module::Module;
use crate::object::{Attr, KeyObject, KeyTemplate};

/// Largest input of one operation (all parts together).
pub const MAX_INPUT: usize = 16 << 20;

/// An operation in progress.
pub struct Op {
    key: Option<Arc<KeyObject>>,
    mech: Mech,
    input: Zeroizing<Vec<u8>>,
    /// Whether `*Update` was called (then the single-part call is refused).
    multi: bool,
    /// The computed output, until delivered.
    output: Option<Zeroizing<Vec<u8>>>,
    /// The running hash of a digest operation or of a hashing signature
    /// mechanism (`CKM_SHA*_RSA_PKCS`, `CKM_ECDSA_SHA*`, ...).
    digest: Option<Hasher>,
}

/// The operations of a session, one of each kind at a time.
#[derive(Default)]
pub struct Ops {
    pub encrypt: Option<Op>,
    pub decrypt: Option<Op>,
    pub sign: Option<Op>,
    pub verify: Option<Op>,
    pub digest: Option<Op>,
}

/// Which operation a call is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Encrypt,
    Decrypt,
    Sign,
    Verify,
    Digest,
}

impl Ops {
    fn slot(&mut self, k: Kind) -> &mut Option<Op> {
        match k {
            Kind::Encrypt => &mut self.encrypt,
            Kind::Decrypt => &mut self.decrypt,
            Kind::Sign => &mut self.sign,
            Kind::Verify => &mut self.verify,
            Kind::Digest => &mut self.digest,
        }
    }
}

/// The result of a call that returns data: the data, or (size query) its size.
#[derive(Debug, PartialEq, Eq)]
pub enum Out {
    Data(Zeroizing<Vec<u8>>),
    Size(usize),
}

/// Checks that `key` may be used with `mech` for `kind`.
fn check_key(key: &KeyObject, mech: &Mech, kind: Kind) -> Result<()> {
    let allowed = match kind {
        Kind::Encrypt => key.encrypt,
        Kind::Decrypt => key.decrypt,
        Kind::Sign => key.sign,
        Kind::Verify => key.verify,
        Kind::Digest => true,
    };
    if !allowed {
        return Err(Error::Ck(CKR_KEY_FUNCTION_NOT_PERMITTED));
    }
    let secret = key.class == CKO_SECRET_KEY;
    let type_ok = match mech {
        Mech::AesGcm { .. }
        | Mech::AesCbcPad { .. }
        | Mech::AesCbc { .. }
        | Mech::AesEcb
        | Mech::AesCtr { .. }
        | Mech::AesKeyWrap
        | Mech::AesKeyWrapPad(_) => secret && key.key_type == CKK_AES,
        Mech::Hmac(_) => secret,
        Mech::KmsCiphertext { .. } => secret && key.is_token(),
        m => match m.asym_key_type() {
            Some(t) => key.pair.is_some() && key.key_type == t,
            None => false,
        },
    };
    if !type_ok {
        return Err(Error::Ck(CKR_KEY_TYPE_INCONSISTENT));
    }
    if let (Some(p), Mech::RsaPss { params, .. }) = (&key.pair, mech) {
        // The cluster signs no SHA-1; EMSA-PSS needs k >= hLen + sLen + 2.
        let k = p.kind.rsa_len().unwrap_or(0);
        if params.hash == HashAlg::Sha1
            || params.mgf == HashAlg::Sha1
            || params.salt + params.hash.output_len() + 2 > k
        {
            return Err(Error::invalid(
                CKR_MECHANISM_PARAM_INVALID,
                "mechanism",
                format!(
                    "PSS with {} (MGF1 {}) and a {}-byte salt is not possible with this key \
                     (SHA-1 is not signed)",
                    params.hash.name(),
                    params.mgf.name(),
                    params.salt
                ),
            ));
        }
    }
    Ok(())
}

fn mech_for(kind: Kind, mech: &Mech) -> Result<()> {
    let ok = match kind {
        Kind::Encrypt | Kind::Decrypt => {
            mech.raw().is_some()
                || matches!(mech, Mech::KmsCiphertext { .. })
                || matches!(mech, Mech::RsaOaep { .. })
        }
        Kind::Sign | Kind::Verify => matches!(mech, Mech::Hmac(_)) || mech.is_asym_sign(),
        Kind::Digest => matches!(mech, Mech::Digest(_)),
    };
    if ok {
        Ok(())
    } else {
        Err(Error::Ck(CKR_MECHANISM_INVALID))
    }
}

impl Module {
    /// `C_*Init` of encrypt, decrypt, sign, verify (with a key) or digest.
    pub fn op_init(
        &self,
        sh: CK_SESSION_HANDLE,
        kind: Kind,
        mech: Mech,
        key: Option<CK_OBJECT_HANDLE>,
    ) -> Result<()> {
        let sess = self.session(sh)?;
        let mut s = sess.lock();
        if s.ops.slot(kind).is_some() {
            return Err(Error::Ck(CKR_OPERATION_ACTIVE));
        }
        mech_for(kind, &mech)?;
        mech.check_params()?;
        let key = match (kind, key) {
            (Kind::Digest, _) => None,
            (_, Some(h)) => {
                let k = self.key(&s, h)?;
                check_key(&k, &mech, kind)?;
                Some(k)
            }
            (_, None) => return Err(Error::Ck(CKR_KEY_HANDLE_INVALID)),
        };
        let digest = if let Mech::Digest(h) = mech {
            h.hasher()
        } else {
            mech.sign_hash().and_then(HashAlg::hasher)
        };
        *s.ops.slot(kind) = Some(Op {
            key,
            mech,
            input: Zeroizing::new(Vec::new()),
            multi: false,
            output: None,
            digest,
        });
        Ok(())
    }

    /// Whether an operation of `kind` is active (for size queries of
    /// `*Update`, which never return output).
    pub fn op_active(&self, sh: CK_SESSION_HANDLE, kind: Kind) -> Result<()> {
        let sess = self.session(sh)?;
        let mut s = sess.lock();
        s.ops
            .slot(kind)
            .as_ref()
            .map(drop)
            .ok_or(Error::Ck(CKR_OPERATION_NOT_INITIALIZED))
    }

    /// Ends an operation (after an error that PKCS#11 says ends it).
    pub fn op_cancel(&self, sh: CK_SESSION_HANDLE, kind: Kind) {
        if let Ok(sess) = self.session(sh) {
            *sess.lock().ops.slot(kind) = None;
        }
    }

    /// `C_EncryptUpdate`, `C_DecryptUpdate`, `C_SignUpdate`, `C_VerifyUpdate`,
    /// `C_DigestUpdate`: collects input; returns no output.
    pub fn op_update(&self, sh: CK_SESSION_HANDLE, kind: Kind, data: &[u8]) -> Result<()> {
        let sess = self.session(sh)?;
        let mut s = sess.lock();
        let slot = s.ops.slot(kind);
        let op = slot
            .as_mut()
            .ok_or(Error::Ck(CKR_OPERATION_NOT_INITIALIZED))?;
        if op.output.is_some() {
            *slot = None;
            return Err(Error::Ck(CKR_OPERATION_ACTIVE));
        }
        op.multi = true;
        if let Some(d) = op.digest.as_mut() {
            d.update(data);
            return Ok(());
        }
        if op.input.len() + data.len() > MAX_INPUT {
            *slot = None;
            return Err(Error::Ck(CKR_DATA_LEN_RANGE));
        }
        op.input.extend_from_slice(data);
        Ok(())
    }

    /// A single-part call (`data` given) or a `*Final` call (`None`):
    /// computes once, then delivers the output when `cap` (the caller's
    /// buffer size, `None` for a size query) is large enough.
    pub fn op_finish(
        &self,
        sh: CK_SESSION_HANDLE,
        kind: Kind,
        data: Option<&[u8]>,
        cap: Option<usize>,
    ) -> Result<Out> {
        let sess = self.session(sh)?;
        let mut s = sess.lock();
        let slot_idx = s.slot;
        let slot = s.ops.slot(kind);
        let op = slot
            .as_mut()
            .ok_or(Error::Ck(CKR_OPERATION_NOT_INITIALIZED))?;
        if op.output.is_none() {
            if data.is_some() && op.multi {
                *slot = None;
                return Err(Error::Ck(CKR_OPERATION_ACTIVE));
            }
            // A signature's length follows from the key: a size query or a
            // short buffer needs no network call.
            if kind == Kind::Sign {
                if let Some(p) = op.key.as_ref().and_then(|k| k.pair.as_ref()) {
                    let len = p.kind.sig_len();
                    match cap {
                        None => return Ok(Out::Size(len)),
                        Some(c) if c < len => return Err(Error::BufferTooSmall(len)),
                        Some(_) => {}
                    }
                }
            }
            let r = match data {
                Some(d) if d.len() > MAX_INPUT => Err(Error::Ck(CKR_DATA_LEN_RANGE)),
                Some(d) => compute(self, slot_idx, op, kind, d),
                None => {
                    let input = std::mem::take(&mut op.input);
                    compute(self, slot_idx, op, kind, &input)
                }
            };
            match r {
                Ok(out) => op.output = Some(out),
                Err(e) => {
                    *slot = None;
                    return Err(e);
                }
            }
        }
        let len = op.output.as_ref().map_or(0, |o| o.len());
        match cap {
            None => Ok(Out::Size(len)),
            Some(c) if c < len => Err(Error::BufferTooSmall(len)),
            Some(_) => {
                let out = slot.take().and_then(|o| o.output).unwrap_or_default();
                Ok(Out::Data(out))
            }
        }
    }

    /// `C_Verify` (`data` given) or `C_VerifyFinal` (`None`).
    pub fn verify_finish(
        &self,
        sh: CK_SESSION_HANDLE,
        data: Option<&[u8]>,
        signature: &[u8],
    ) -> Result<()> {
        let sess = self.session(sh)?;
        let mut s = sess.lock();
        let slot_idx = s.slot;
        let op = s
            .ops
            .verify
            .take()
            .ok_or(Error::Ck(CKR_OPERATION_NOT_INITIALIZED))?;
        if data.is_some() && op.multi {
            return Err(Error::Ck(CKR_OPERATION_ACTIVE));
        }
        let msg: &[u8] = data.unwrap_or(op.input.as_slice());
        if msg.len() > MAX_INPUT {
            return Err(Error::Ck(CKR_DATA_LEN_RANGE));
        }
        if let Some(k) = op.key.as_ref() {
            if let Some(p) = k.pair.as_ref() {
                let (input, hashed) = match op.digest.clone() {
                    Some(mut d) => {
                        d.update(msg);
                        (d.finalize(), true)
                    }
                    None => (msg.to_vec(), false),
                };
                // Verification needs only the public key, which the object
                // holds (for a cluster key: that of the version the object
                // shows): done here, with no round trip, for cluster keys
                // and session pairs alike.
                if signature.len() != p.kind.sig_len() {
                    return Err(Error::Ck(CKR_SIGNATURE_LEN_RANGE));
                }
                let (message, params) = sign_request(p, &op.mech, &input, hashed)?;
                return crate::local::verify(
                    p.kind, &p.public, &p.spki, &message, &params, signature,
                );
            }
        }
        let Mech::Hmac(h) = op.mech else {
            return Err(Error::Ck(CKR_MECHANISM_INVALID));
        };
        if signature.len() != h.output_len() {
            return Err(Error::Ck(CKR_SIGNATURE_LEN_RANGE));
        }
        let key = op.key.as_ref().ok_or(Error::Ck(CKR_KEY_HANDLE_INVALID))?;
        let valid = match (key.value(), key.cluster_name()) {
            (Some(v), _) => raw::mac_eq(&raw::hmac(h, v, msg), signature),
            (None, Some(name)) => {
                let r: proto::MacVerifyResponse = self.call(
                    slot_idx,
                    Command::KeyMacVerify,
                    &proto::MacVerifyRequest {
                        name: name.into(),
                        version: 0,
                        message: msg.to_vec(),
                        mac: signature.to_vec(),
                        hash: mac_hash_name(h).into(),
                    },
                )?;
                r.valid
            }
            (None, None) => false,
        };
        if valid {
            Ok(())
        } else {
            Err(Error::Ck(CKR_SIGNATURE_INVALID))
        }
    }

    /// `C_WrapKey`: encrypts the value of the session key `key` under
    /// `wrapping`. `cap` as in [`Module::op_finish`]; a size query needs no
    /// network call.
    pub fn wrap_key(
        &self,
        sh: CK_SESSION_HANDLE,
        mech: Mech,
        wrapping: CK_OBJECT_HANDLE,
        key: CK_OBJECT_HANDLE,
        cap: Option<usize>,
    ) -> Result<Out> {
        let sess = self.session(sh)?;
        let s = sess.lock();
        let (m, params) = mech
            .raw()
            .filter(|_| mech.wraps())
            .ok_or(Error::Ck(CKR_MECHANISM_INVALID))?;
        mech.check_params()?;
        let wk = self
            .object(&s, wrapping)
            .map_err(|_| Error::Ck(CKR_WRAPPING_KEY_HANDLE_INVALID))?;
        if !wk.wrap {
            return Err(Error::Ck(CKR_KEY_FUNCTION_NOT_PERMITTED));
        }
        if wk.key_type != CKK_AES {
            return Err(Error::Ck(CKR_WRAPPING_KEY_TYPE_INCONSISTENT));
        }
        let k = self
            .object(&s, key)
            .map_err(|_| Error::Ck(CKR_KEY_HANDLE_INVALID))?;
        let value = match k.value() {
            Some(v) if k.extractable => v,
            _ => return Err(Error::Ck(CKR_KEY_UNEXTRACTABLE)),
        };
        if m == raw::RawMechanism::AesKeyWrap
            && (!value.len().is_multiple_of(8) || value.len() < 16)
        {
            return Err(Error::Ck(CKR_KEY_SIZE_RANGE));
        }
        let len = raw::encrypted_len(m, &params, value.len());
        let Some(cap) = cap else {
            return Ok(Out::Size(len));
        };
        if cap < len {
            return Err(Error::BufferTooSmall(len));
        }
        let out = match (wk.value(), wk.cluster_name()) {
            (Some(w), _) => {
                raw::encrypt(m, w, &params, value).map_err(|e| raw_err(e, Kind::Encrypt))?
            }
            (None, Some(name)) => {
                let out = self.raw_remote(s.slot, name, &mech, true, value)?;
                // Defense in depth (`raw_remote` checks this too): the
                // caller was told `len` bytes and gave room for `cap`.
                if out.len() != len {
                    return Err(bad_answer(
                        Command::KeyRawEncrypt,
                        out.len(),
                        &format!("the wrapped key has {len}"),
                    ));
                }
                out.to_vec()
            }
            (None, None) => return Err(Error::Ck(CKR_WRAPPING_KEY_HANDLE_INVALID)),
        };
        Ok(Out::Data(Zeroizing::new(out)))
    }

    /// `C_UnwrapKey`: decrypts `wrapped` under `unwrapping` into a new key
    /// made from `template` (a session key, or a cluster key if `CKA_TOKEN`).
    pub fn unwrap_key(
        &self,
        sh: CK_SESSION_HANDLE,
        mech: Mech,
        unwrapping: CK_OBJECT_HANDLE,
        wrapped: &[u8],
        template: &[Attr],
    ) -> Result<CK_OBJECT_HANDLE> {
        let t = KeyTemplate::parse(template)?;
        let (m, params) = mech
            .raw()
            .filter(|_| mech.wraps())
            .ok_or(Error::Ck(CKR_MECHANISM_INVALID))?;
        mech.check_params()?;
        let key_type = t.key_type.ok_or_else(|| {
            Error::invalid(
                CKR_TEMPLATE_INCOMPLETE,
                "template",
                "CKA_KEY_TYPE is missing",
            )
        })?;
        if t.class.is_none() {
            return Err(Error::invalid(
                CKR_TEMPLATE_INCOMPLETE,
                "template",
                "CKA_CLASS is missing",
            ));
        }
        if t.value.is_some() {
            return Err(Error::Ck(CKR_ATTRIBUTE_READ_ONLY));
        }
        let value = {
            let sess = self.session(sh)?;
            let s = sess.lock();
            let uk = self
                .object(&s, unwrapping)
                .map_err(|_| Error::Ck(CKR_UNWRAPPING_KEY_HANDLE_INVALID))?;
            if !uk.unwrap {
                return Err(Error::Ck(CKR_KEY_FUNCTION_NOT_PERMITTED));
            }
            if uk.key_type != CKK_AES {
                return Err(Error::Ck(CKR_UNWRAPPING_KEY_TYPE_INCONSISTENT));
            }
            match (uk.value(), uk.cluster_name()) {
                (Some(u), _) => raw::decrypt(m, u, &params, wrapped).map_err(|e| match e {
                    RawError::Auth => Error::Ck(CKR_WRAPPED_KEY_INVALID),
                    RawError::DataLength(_) => Error::Ck(CKR_WRAPPED_KEY_LEN_RANGE),
                    e => raw_err(e, Kind::Decrypt),
                })?,
                (None, Some(name)) => self
                    .raw_remote(s.slot, name, &mech, false, wrapped)
                    .map_err(|e| match e {
                        Error::Invalid {
                            rv: CKR_ENCRYPTED_DATA_INVALID,
                            ..
                        } => Error::Ck(CKR_WRAPPED_KEY_INVALID),
                        Error::Invalid {
                            rv: CKR_ENCRYPTED_DATA_LEN_RANGE,
                            ..
                        } => Error::Ck(CKR_WRAPPED_KEY_LEN_RANGE),
                        e => e,
                    })?,
                (None, None) => return Err(Error::Ck(CKR_UNWRAPPING_KEY_HANDLE_INVALID)),
            }
        };
        if let Some(n) = t.value_len {
            if n != value.len() {
                return Err(Error::Ck(CKR_TEMPLATE_INCONSISTENT));
            }
        }
        let ok = match key_type {
            CKK_AES => matches!(value.len(), 16 | 24 | 32),
            CKK_GENERIC_SECRET | CKK_SHA256_HMAC => (1..=512).contains(&value.len()),
            _ => return Err(Error::Ck(CKR_TEMPLATE_INCONSISTENT)),
        };
        if !ok {
            return Err(Error::Ck(CKR_WRAPPED_KEY_INVALID));
        }
        self.store_key(sh, &t, key_type, value, false)
    }

    /// A raw cipher operation on a cluster key.
    fn raw_remote(
        &self,
        slot: usize,
        name: &str,
        mech: &Mech,
        encrypt: bool,
        data: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>> {
        let (m, p) = mech.raw().ok_or(Error::Ck(CKR_MECHANISM_INVALID))?;
        // Input no key could accept is refused here, without a round trip
        // (SunPKCS11, for one, ends operations with an empty *Final).
        let len_ok = if encrypt {
            raw::check_encrypt_len(m, data.len())
        } else {
            raw::check_decrypt_len(m, &p, data.len())
        };
        len_ok.map_err(|e| {
            raw_err(
                e,
                if encrypt {
                    Kind::Encrypt
                } else {
                    Kind::Decrypt
                },
            )
        })?;
        let req = proto::RawCryptRequest {
            name: name.into(),
            version: 0,
            mechanism: m as u32,
            iv: p.iv.to_vec(),
            associated_data: p.aad.to_vec(),
            tag_length: p.tag_len as u32,
            data: data.to_vec(),
        };
        let cmd = if encrypt {
            Command::KeyRawEncrypt
        } else {
            Command::KeyRawDecrypt
        };
        let r: Result<proto::RawCryptResponse> = self.call(slot, cmd, &req);
        match r {
            Ok(r) => {
                let out = Zeroizing::new(r.data);
                if encrypt {
                    let want = raw::encrypted_len(m, &p, data.len());
                    if out.len() != want {
                        return Err(bad_answer(
                            cmd,
                            out.len(),
                            &format!("{} bytes of input encrypt to {want}", data.len()),
                        ));
                    }
                } else if out.len() > data.len() {
                    return Err(bad_answer(
                        cmd,
                        out.len(),
                        &format!("{} bytes of input decrypt to fewer", data.len()),
                    ));
                }
                Ok(out)
            }
            Err(Error::Remote(e)) if e.status() == Some(400) => {
                let rv = if encrypt {
                    CKR_DATA_LEN_RANGE
                } else if e.to_string().contains("invalid input length") {
                    CKR_ENCRYPTED_DATA_LEN_RANGE
                } else {
                    CKR_ENCRYPTED_DATA_INVALID
                };
                Err(Error::invalid(rv, "cluster", e.to_string()))
            }
            Err(e) => Err(e),
        }
    }
}

/// A cluster answer whose length cannot be right for the request (a broken
/// or hostile server): one log line at error level, and `CKR_DEVICE_ERROR`.
/// `want` says what was expected.
fn bad_answer(cmd: Command, got: usize, want: &str) -> Error {
    crate::log!(
        Level::Error,
        "{cmd}: the cluster answered {got} bytes, but {want}: CKR_DEVICE_ERROR"
    );
    Error::Ck(CKR_DEVICE_ERROR)
}

/// The cluster's name of an HMAC hash (`MacVerifyRequest.hash`).
fn mac_hash_name(h: raw::MacHash) -> &'static str {
    match h {
        raw::MacHash::Sha1 => "SHA-1",
        raw::MacHash::Sha256 => "SHA-256",
        raw::MacHash::Sha384 => "SHA-384",
        raw::MacHash::Sha512 => "SHA-512",
    }
}

fn raw_err(e: RawError, kind: Kind) -> Error {
    let rv = match (e.clone(), kind) {
        (RawError::Auth, _) => CKR_ENCRYPTED_DATA_INVALID,
        (RawError::DataLength(_), Kind::Decrypt) => CKR_ENCRYPTED_DATA_LEN_RANGE,
        (RawError::DataLength(_), _) => CKR_DATA_LEN_RANGE,
        (RawError::KeyLength(_), _) => CKR_KEY_SIZE_RANGE,
        _ => CKR_MECHANISM_PARAM_INVALID,
    };
    Error::invalid(rv, "mechanism", e.to_string())
}

/// Computes an operation's output over `data`.
fn compute(
    m: &Module,
    slot: usize,
    op: &mut Op,
    kind: Kind,
    data: &[u8],
) -> Result<Zeroizing<Vec<u8>>> {
    let hashed = match op.digest.take() {
        Some(mut d) => {
            d.update(data);
            let h = d.finalize();
            if kind == Kind::Digest {
                return Ok(Zeroizing::new(h));
            }
            Some(h)
        }
        None => None,
    };
    let key = op.key.as_ref().ok_or(Error::Ck(CKR_KEY_HANDLE_INVALID))?;
    if let (Some(p), Kind::Encrypt, Mech::RsaOaep { hash, mgf, label }) =
        (key.pair.as_ref(), kind, &op.mech)
    {
        // RSA-OAEP encryption needs only the public key, which the object
        // holds: done here for cluster keys and session pairs alike.
        let max = p
            .kind
            .rsa_len()
            .unwrap_or(0)
            .saturating_sub(2 * hash.output_len() + 2);
        if data.len() > max {
            return Err(Error::Ck(CKR_DATA_LEN_RANGE));
        }
        return crate::local::oaep_encrypt(&p.spki, *hash, *mgf, label, data);
    }
    if let (Some(p), Some(der)) = (key.pair.as_ref(), key.value()) {
        // A session key pair: the same input rules, computed here.
        return match (kind, &op.mech) {
            (Kind::Sign, mech) => {
                let input = hashed.as_deref().unwrap_or(data);
                let (message, params) = sign_request(p, mech, input, hashed.is_some())?;
                crate::local::sign(p.kind, der, &message, &params)
            }
            (Kind::Decrypt, Mech::RsaOaep { hash, mgf, label }) => {
                if Some(data.len()) != p.kind.rsa_len() {
                    return Err(Error::Ck(CKR_ENCRYPTED_DATA_LEN_RANGE));
                }
                crate::local::oaep_decrypt(der, *hash, *mgf, label, data)
            }
            _ => Err(Error::Ck(CKR_MECHANISM_INVALID)),
        };
    }
    if let (Some(p), Some(name)) = (key.pair.as_ref(), key.cluster_name()) {
        return match (kind, &op.mech) {
            (Kind::Sign, mech) => {
                let input = hashed.as_deref().unwrap_or(data);
                sign_asym(m, slot, name, p, mech, input, hashed.is_some())
            }
            (Kind::Decrypt, Mech::RsaOaep { hash, mgf, label }) => {
                oaep_decrypt(m, slot, name, p, *hash, *mgf, label, data)
            }
            _ => Err(Error::Ck(CKR_MECHANISM_INVALID)),
        };
    }
    match (kind, &op.mech) {
        (Kind::Sign, Mech::Hmac(h)) => match (key.value(), key.cluster_name()) {
            (Some(v), _) => Ok(Zeroizing::new(raw::hmac(*h, v, data))),
            (None, Some(name)) => {
                // KEY:MAC is HMAC-SHA256 (and what older nodes know);
                // KEY:RAWMAC takes the hash.
                let (cmd, r): (Command, proto::MacResponse) = if *h == raw::MacHash::Sha256 {
                    let req = proto::MacRequest {
                        name: name.into(),
                        version: 0,
                        message: data.to_vec(),
                    };
                    (Command::KeyMac, m.call(slot, Command::KeyMac, &req)?)
                } else {
                    let req = proto::RawMacRequest {
                        name: name.into(),
                        version: 0,
                        message: data.to_vec(),
                        hash: mac_hash_name(*h).into(),
                    };
                    (Command::KeyRawMac, m.call(slot, Command::KeyRawMac, &req)?)
                };
                if r.mac.len() != h.output_len() {
                    return Err(bad_answer(
                        cmd,
                        r.mac.len(),
                        &format!("this HMAC has {}", h.output_len()),
                    ));
                }
                Ok(Zeroizing::new(r.mac))
            }
            (None, None) => Err(Error::Ck(CKR_KEY_HANDLE_INVALID)),
        },
        (Kind::Encrypt | Kind::Decrypt, Mech::KmsCiphertext { aad }) => {
            let name = key
                .cluster_name()
                .ok_or(Error::Ck(CKR_KEY_TYPE_INCONSISTENT))?;
            if kind == Kind::Encrypt {
                let r: proto::EncryptResponse = m.call(
                    slot,
                    Command::KeyEncrypt,
                    &proto::EncryptRequest {
                        name: name.into(),
                        version: 0,
                        plaintext: data.to_vec(),
                        associated_data: aad.clone(),
                    },
                )?;
                Ok(Zeroizing::new(r.ciphertext))
            } else {
                let r: Result<proto::DecryptResponse> = m.call(
                    slot,
                    Command::KeyDecrypt,
                    &proto::DecryptRequest {
                        name: name.into(),
                        version: 0,
                        ciphertext: data.to_vec(),
                        associated_data: aad.clone(),
                    },
                );
                match r {
                    Ok(r) => {
                        let out = Zeroizing::new(r.plaintext);
                        if out.len() > data.len() {
                            return Err(bad_answer(
                                Command::KeyDecrypt,
                                out.len(),
                                &format!("a ciphertext of {} bytes decrypts to fewer", data.len()),
                            ));
                        }
                        Ok(out)
                    }
                    Err(Error::Remote(e)) if e.status() == Some(400) => Err(Error::invalid(
                        CKR_ENCRYPTED_DATA_INVALID,
                        "cluster",
                        e.to_string(),
                    )),
                    Err(e) => Err(e),
                }
            }
        }
        (Kind::Encrypt | Kind::Decrypt, mech) => {
            let (rm, params) = mech.raw().ok_or(Error::Ck(CKR_MECHANISM_INVALID))?;
            let enc = kind == Kind::Encrypt;
            if let Some(left) = mech.ctr_blocks_left() {
                // The cluster and `raw` count with all 128 bits; refusing
                // input that would wrap the caller's counter makes both
                // the same.
                if data.len().div_ceil(16) as u64 > left {
                    let rv = if enc {
                        CKR_DATA_LEN_RANGE
                    } else {
                        CKR_ENCRYPTED_DATA_LEN_RANGE
                    };
                    return Err(Error::invalid(
                        rv,
                        "data",
                        format!(
                            "{} bytes would wrap the AES-CTR counter ({left} blocks left)",
                            data.len()
                        ),
                    ));
                }
            }
            match (key.value(), key.cluster_name()) {
                (Some(v), _) => {
                    if enc {
                        raw::encrypt(rm, v, &params, data)
                            .map(Zeroizing::new)
                            .map_err(|e| raw_err(e, kind))
                    } else {
                        raw::decrypt(rm, v, &params, data).map_err(|e| raw_err(e, kind))
                    }
                }
                (None, Some(name)) => m.raw_remote(slot, name, mech, enc, data),
                (None, None) => Err(Error::Ck(CKR_KEY_HANDLE_INVALID)),
            }
        }
        _ => Err(Error::Ck(CKR_MECHANISM_INVALID)),
    }
}

/// The KEY:SIGN / KEY:VERIFY message and parameters of an asymmetric
/// signature mechanism over `input` (the digest if `hashed`, by the
/// mechanism's own hash). Input no key could sign is refused here.
fn sign_request(
    p: &PairInfo,
    mech: &Mech,
    input: &[u8],
    hashed: bool,
) -> Result<(Vec<u8>, proto::SignParams)> {
    let data_len = |why: String| Err(Error::invalid(CKR_DATA_LEN_RANGE, "data", why));
    let mut params = proto::SignParams::default();
    let message = match mech {
        Mech::Ecdsa(h) => {
            let n = p.kind.ec_len().unwrap_or(32);
            params.prehashed = true;
            match (h, hashed) {
                (Some(h), true) => {
                    params.hash = h.name().into();
                    input.to_vec()
                }
                _ => {
                    // CKM_ECDSA: ECDSA uses the leftmost field-size bytes
                    // of the digest as an integer, so a shorter digest is
                    // left-padded with zeros and a longer one cut: the
                    // same integer, signed as a digest of the curve's hash.
                    if input.is_empty() {
                        return data_len("CKM_ECDSA signs a digest: the input is empty".into());
                    }
                    params.hash = if n == 48 { "SHA-384" } else { "SHA-256" }.into();
                    let mut d = vec![0u8; n.saturating_sub(input.len())];
                    d.extend_from_slice(input.get(..n.min(input.len())).unwrap_or_default());
                    d
                }
            }
        }
        Mech::EdDsa => input.to_vec(),
        Mech::RsaPkcs(h) => match (h, hashed) {
            (Some(h), true) => {
                params.hash = h.name().into();
                params.prehashed = true;
                input.to_vec()
            }
            _ => {
                let k = p.kind.rsa_len().unwrap_or(0);
                if input.len() + 11 > k {
                    return data_len(format!(
                        "CKM_RSA_PKCS input is {} bytes, at most {} for this key",
                        input.len(),
                        k.saturating_sub(11)
                    ));
                }
                params.hash = "NONE".into();
                input.to_vec()
            }
        },
        Mech::RsaPss { params: pss, .. } => {
            if !hashed && input.len() != pss.hash.output_len() {
                return data_len(format!(
                    "CKM_RSA_PKCS_PSS signs a {} digest of {} bytes, not {}",
                    pss.hash.name(),
                    pss.hash.output_len(),
                    input.len()
                ));
            }
            params.hash = pss.hash.name().into();
            params.prehashed = true;
            params.padding = "PSS".into();
            params.salt_length = Some(pss.salt as u32);
            params.mgf1_hash = pss.mgf.name().into();
            input.to_vec()
        }
        Mech::MlDsa {
            deterministic,
            context,
        } => {
            params.context = context.clone();
            params.deterministic = *deterministic;
            input.to_vec()
        }
        _ => return Err(Error::Ck(CKR_MECHANISM_INVALID)),
    };
    Ok((message, params))
}

/// KEY:SIGN with the version of the key whose public key the object shows.
fn sign_asym(
    m: &Module,
    slot: usize,
    name: &str,
    p: &PairInfo,
    mech: &Mech,
    input: &[u8],
    hashed: bool,
) -> Result<Zeroizing<Vec<u8>>> {
    let (message, params) = sign_request(p, mech, input, hashed)?;
    let r: Result<proto::SignResponse> = m.call(
        slot,
        Command::KeySign,
        &proto::SignRequest {
            name: name.into(),
            version: p.version,
            message,
            params: Some(params),
        },
    );
    match r {
        Ok(r) => {
            if r.signature.len() != p.kind.sig_len() {
                return Err(bad_answer(
                    Command::KeySign,
                    r.signature.len(),
                    &format!("a {} signature has {}", p.kind.name(), p.kind.sig_len()),
                ));
            }
            Ok(Zeroizing::new(r.signature))
        }
        Err(Error::Remote(e)) if e.status() == Some(400) => Err(Error::invalid(
            CKR_FUNCTION_FAILED,
            "cluster",
            e.to_string(),
        )),
        Err(e) => Err(e),
    }
}

/// KEY:ASYMDECRYPT (RSA-OAEP), with any version of the key.
#[allow(clippy::too_many_arguments)]
fn oaep_decrypt(
    m: &Module,
    slot: usize,
    name: &str,
    p: &PairInfo,
    hash: HashAlg,
    mgf: HashAlg,
    label: &[u8],
    data: &[u8],
) -> Result<Zeroizing<Vec<u8>>> {
    let k = p.kind.rsa_len().unwrap_or(0);
    if data.len() != k {
        return Err(Error::Ck(CKR_ENCRYPTED_DATA_LEN_RANGE));
    }
    let r: Result<proto::AsymDecryptResponse> = m.call(
        slot,
        Command::KeyAsymDecrypt,
        &proto::AsymDecryptRequest {
            name: name.into(),
            version: 0,
            ciphertext: data.to_vec(),
            hash: hash.name().into(),
            mgf1_hash: mgf.name().into(),
            label: label.to_vec(),
        },
    );
    match r {
        Ok(r) => {
            let out = Zeroizing::new(r.plaintext);
            let max = k.saturating_sub(2 * hash.output_len() + 2);
            if out.len() > max {
                return Err(bad_answer(
                    Command::KeyAsymDecrypt,
                    out.len(),
                    &format!("an OAEP plaintext has at most {max}"),
                ));
            }
            Ok(out)
        }
        Err(Error::Remote(e)) if e.status() == Some(400) => Err(Error::invalid(
            CKR_ENCRYPTED_DATA_INVALID,
            "cluster",
            e.to_string(),
        )),
        Err(e) => Err(e),
    }
}
