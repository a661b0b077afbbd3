//! Pointer handling of the C boundary: every read of a caller's pointer and
//! every write to a caller's buffer is here, and checks for NULL first.
//!
//! Every write to caller memory, of any type, goes through [`copy_out`],
//! which checks the length against the capacity the caller gave: an answer
//! that does not fit is never written (`CKR_DEVICE_ERROR` and one log line).

// Input from the network or from a C caller must never panic here: no
// unwrap, expect or unchecked indexing (tests excepted).
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]

use cryptoki_sys::*;
use zeroize::Zeroizing;

use crate::asym::HashAlg;
use crate::error::{Error, Result};
use crate::log::Level;
use crate::mech::{Mech, PssParams, CKM_KMS_CIPHERTEXT};
use crate::object::{Attr, AttrOut};
use crate::ops::Out;
use kms_client::raw::MacHash;

/// Largest attribute value or mechanism parameter read from a caller.
const MAX_VALUE: CK_ULONG = 64 << 20;
/// Most attributes read from one template.
const MAX_TEMPLATE: CK_ULONG = 4096;
/// Size of the local buffer that [`fill`] copies from.
const FILL_CHUNK: usize = 64 << 10;

/// Reads one value from a caller's pointer: `None` if it is NULL. Reads
/// unaligned, since callers may pass any address.
///
/// # Safety
/// `p` must be NULL or point to a readable `T`.
pub unsafe fn read<T: Copy>(p: *const T) -> Option<T> {
    if p.is_null() {
        return None;
    }
    // SAFETY: non-NULL; the caller promises a readable T.
    Some(unsafe { std::ptr::read_unaligned(p) })
}

/// Whether the caller's NUL-terminated string at `p` is exactly `want`
/// (which holds no NUL). Reads at most `want.len() + 1` bytes and stops at
/// the first one that differs, so a string shorter than `want` is never
/// read past its NUL. NULL is no name: false.
///
/// # Safety
/// `p` must be NULL or point to a NUL-terminated string.
pub unsafe fn name_is(p: *const CK_UTF8CHAR, want: &[u8]) -> bool {
    if p.is_null() {
        return false;
    }
    for (i, w) in want.iter().chain(std::iter::once(&0u8)).enumerate() {
        // SAFETY: the bytes before index i matched `want`, which holds no
        // NUL, so the caller's string goes on at least to index i.
        let c = unsafe { std::ptr::read(p.add(i)) };
        if c != *w {
            return false;
        }
    }
    true
}

/// A caller's input buffer. `len` 0 gives an empty slice whatever `p` is.
///
/// # Safety
/// `p` must point to `len` readable bytes if it is not NULL.
pub unsafe fn input<'a>(p: *const CK_BYTE, len: CK_ULONG) -> Result<&'a [u8]> {
    if len == 0 {
        return Ok(&[]);
    }
    if p.is_null() {
        return Err(Error::Ck(CKR_ARGUMENTS_BAD));
    }
    let len = usize::try_from(len).map_err(|_| Error::Ck(CKR_ARGUMENTS_BAD))?;
    // SAFETY: the caller promises `len` readable bytes at `p`.
    Ok(unsafe { std::slice::from_raw_parts(p, len) })
}

/// Reads a template.
///
/// # Safety
/// `p` must point to `n` `CK_ATTRIBUTE`s whose values are readable.
pub unsafe fn template(p: *const CK_ATTRIBUTE, n: CK_ULONG) -> Result<Vec<Attr>> {
    if n == 0 {
        return Ok(Vec::new());
    }
    if p.is_null() || n > MAX_TEMPLATE {
        return Err(Error::Ck(CKR_ARGUMENTS_BAD));
    }
    // SAFETY: the caller promises `n` attributes at `p`.
    let attrs = unsafe { std::slice::from_raw_parts(p, n as usize) };
    let mut out = Vec::with_capacity(attrs.len());
    for a in attrs {
        if a.ulValueLen > MAX_VALUE {
            return Err(Error::Ck(CKR_ATTRIBUTE_VALUE_INVALID));
        }
        // SAFETY: the caller promises readable values.
        let v = unsafe { input(a.pValue as *const u8, a.ulValueLen)? };
        out.push(Attr::new(a.type_, v.to_vec()));
    }
    Ok(out)
}

/// Reads a mechanism and its parameters into an owned [`Mech`].
///
/// # Safety
/// `p` must point to a `CK_MECHANISM` whose parameter is readable.
pub unsafe fn mechanism(p: *const CK_MECHANISM) -> Result<Mech> {
    if p.is_null() {
        return Err(Error::Ck(CKR_ARGUMENTS_BAD));
    }
    // SAFETY: non-NULL, the caller promises a CK_MECHANISM.
    let m = unsafe { &*p };
    if m.ulParameterLen > MAX_VALUE {
        return Err(Error::Ck(CKR_MECHANISM_PARAM_INVALID));
    }
    let bad = || Error::Ck(CKR_MECHANISM_PARAM_INVALID);
    // SAFETY: as above.
    let param = unsafe { input(m.pParameter as *const u8, m.ulParameterLen) }.map_err(|_| bad())?;
    let none = |mech: Mech| {
        if param.is_empty() {
            Ok(mech)
        } else {
            Err(bad())
        }
    };
    match m.mechanism {
        CKM_AES_KEY_GEN => none(Mech::AesKeyGen),
        CKM_GENERIC_SECRET_KEY_GEN => none(Mech::GenericSecretKeyGen),
        CKM_SHA_1 => none(Mech::Digest(HashAlg::Sha1)),
        CKM_SHA256 => none(Mech::Digest(HashAlg::Sha256)),
        CKM_SHA384 => none(Mech::Digest(HashAlg::Sha384)),
        CKM_SHA512 => none(Mech::Digest(HashAlg::Sha512)),
        CKM_SHA_1_HMAC => none(Mech::Hmac(MacHash::Sha1)),
        CKM_SHA256_HMAC => none(Mech::Hmac(MacHash::Sha256)),
        CKM_SHA384_HMAC => none(Mech::Hmac(MacHash::Sha384)),
        CKM_SHA512_HMAC => none(Mech::Hmac(MacHash::Sha512)),
        CKM_AES_ECB => none(Mech::AesEcb),
        CKM_AES_CBC => Ok(Mech::AesCbc { iv: param.to_vec() }),
        CKM_AES_CTR => {
            // SAFETY: `m` is the caller's CK_MECHANISM, checked above.
            let p: CK_AES_CTR_PARAMS = unsafe { param_struct(m) }?;
            Ok(Mech::AesCtr {
                cb: p.cb,
                bits: p.ulCounterBits,
            })
        }
        CKM_AES_KEY_WRAP => {
            // Only the default IV (A6A6A6A6A6A6A6A6) of RFC 3394.
            if param.is_empty() || param == [0xA6; 8] {
                Ok(Mech::AesKeyWrap)
            } else {
                Err(bad())
            }
        }
        CKM_AES_KEY_WRAP_PAD | CKM_AES_KEY_WRAP_KWP => {
            if param.is_empty() || param == [0xA6, 0x59, 0x59, 0xA6] {
                Ok(Mech::AesKeyWrapPad(m.mechanism))
            } else {
                Err(bad())
            }
        }
        CKM_AES_CBC_PAD => Ok(Mech::AesCbcPad { iv: param.to_vec() }),
        CKM_KMS_CIPHERTEXT => Ok(Mech::KmsCiphertext {
            aad: param.to_vec(),
        }),
        CKM_AES_GCM => {
            if m.ulParameterLen as usize != std::mem::size_of::<CK_GCM_PARAMS>() {
                return Err(bad());
            }
            // SAFETY: the parameter has the size of CK_GCM_PARAMS; read it
            // unaligned, since callers may pass any address.
            let g = unsafe { std::ptr::read_unaligned(m.pParameter as *const CK_GCM_PARAMS) };
            if g.ulIvLen > 256 || g.ulAADLen > MAX_VALUE {
                return Err(bad());
            }
            // SAFETY: the caller promises readable IV and AAD.
            let iv = unsafe { input(g.pIv, g.ulIvLen) }.map_err(|_| bad())?;
            // SAFETY: as above.
            let aad = unsafe { input(g.pAAD, g.ulAADLen) }.map_err(|_| bad())?;
            Ok(Mech::AesGcm {
                iv: iv.to_vec(),
                aad: aad.to_vec(),
                tag_bits: g.ulTagBits,
            })
        }
        CKM_EC_KEY_PAIR_GEN => none(Mech::EcKeyPairGen),
        CKM_EC_EDWARDS_KEY_PAIR_GEN => none(Mech::EcEdwardsKeyPairGen),
        CKM_RSA_PKCS_KEY_PAIR_GEN => none(Mech::RsaKeyPairGen),
        CKM_ML_DSA_KEY_PAIR_GEN => none(Mech::MlDsaKeyPairGen),
        CKM_ECDSA => none(Mech::Ecdsa(None)),
        CKM_ECDSA_SHA256 => none(Mech::Ecdsa(Some(HashAlg::Sha256))),
        CKM_ECDSA_SHA384 => none(Mech::Ecdsa(Some(HashAlg::Sha384))),
        CKM_ECDSA_SHA512 => none(Mech::Ecdsa(Some(HashAlg::Sha512))),
        CKM_RSA_PKCS => none(Mech::RsaPkcs(None)),
        CKM_SHA256_RSA_PKCS => none(Mech::RsaPkcs(Some(HashAlg::Sha256))),
        CKM_SHA384_RSA_PKCS => none(Mech::RsaPkcs(Some(HashAlg::Sha384))),
        CKM_SHA512_RSA_PKCS => none(Mech::RsaPkcs(Some(HashAlg::Sha512))),
        CKM_EDDSA => {
            if param.is_empty() {
                return Ok(Mech::EdDsa);
            }
            // SAFETY: `m` is the caller's CK_MECHANISM, checked above.
            let p: CK_EDDSA_PARAMS = unsafe { param_struct(m) }?;
            // Pure Ed25519 only: no pre-hash, no context (Ed25519ctx).
            if p.phFlag != 0 || p.ulContextDataLen != 0 {
                return Err(bad());
            }
            Ok(Mech::EdDsa)
        }
        CKM_RSA_PKCS_PSS
        | CKM_SHA256_RSA_PKCS_PSS
        | CKM_SHA384_RSA_PKCS_PSS
        | CKM_SHA512_RSA_PKCS_PSS => {
            // SAFETY: as above.
            let p: CK_RSA_PKCS_PSS_PARAMS = unsafe { param_struct(m) }?;
            let hash = HashAlg::from_ckm(p.hashAlg).ok_or_else(bad)?;
            let mgf = HashAlg::from_mgf(p.mgf).ok_or_else(bad)?;
            let salt = usize::try_from(p.sLen)
                .ok()
                .filter(|n| *n <= 1024)
                .ok_or_else(bad)?;
            let mech_hash = match m.mechanism {
                CKM_SHA256_RSA_PKCS_PSS => Some(HashAlg::Sha256),
                CKM_SHA384_RSA_PKCS_PSS => Some(HashAlg::Sha384),
                CKM_SHA512_RSA_PKCS_PSS => Some(HashAlg::Sha512),
                _ => None,
            };
            // The parameters' hash must be the mechanism's own.
            if mech_hash.is_some_and(|h| h != hash) {
                return Err(bad());
            }
            Ok(Mech::RsaPss {
                hash: mech_hash,
                params: PssParams { hash, mgf, salt },
            })
        }
        CKM_ML_DSA => {
            if param.is_empty() {
                return Ok(Mech::MlDsa {
                    deterministic: false,
                    context: Vec::new(),
                });
            }
            // SAFETY: as above.
            let p: CK_SIGN_ADDITIONAL_CONTEXT = unsafe { param_struct(m) }?;
            let deterministic = match p.hedgeVariant {
                CKH_HEDGE_PREFERRED | CKH_HEDGE_REQUIRED => false,
                CKH_DETERMINISTIC_REQUIRED => true,
                _ => return Err(bad()),
            };
            if p.ulContextLen > 255 {
                return Err(bad());
            }
            // SAFETY: the caller promises `ulContextLen` readable bytes.
            let context = unsafe { input(p.pContext, p.ulContextLen) }.map_err(|_| bad())?;
            Ok(Mech::MlDsa {
                deterministic,
                context: context.to_vec(),
            })
        }
        CKM_RSA_PKCS_OAEP => {
            // SAFETY: as above.
            let p: CK_RSA_PKCS_OAEP_PARAMS = unsafe { param_struct(m) }?;
            let hash = HashAlg::from_ckm(p.hashAlg).ok_or_else(bad)?;
            let mgf = HashAlg::from_mgf(p.mgf).ok_or_else(bad)?;
            // CKZ_DATA_SPECIFIED; 0 is accepted for an empty label (some
            // callers leave the source unset).
            let label_ok = p.source == CKZ_DATA_SPECIFIED || p.ulSourceDataLen == 0;
            if !label_ok || p.ulSourceDataLen > 65536 {
                return Err(bad());
            }
            // SAFETY: the caller promises `ulSourceDataLen` readable bytes.
            let label = unsafe { input(p.pSourceData as *const u8, p.ulSourceDataLen) }
                .map_err(|_| bad())?;
            Ok(Mech::RsaOaep {
                hash,
                mgf,
                label: label.to_vec(),
            })
        }
        _ => Err(Error::Ck(CKR_MECHANISM_INVALID)),
    }
}

/// Reads a mechanism's parameter structure `T`: its length must be exactly
/// `size_of::<T>()` (else `CKR_MECHANISM_PARAM_INVALID`). Read unaligned,
/// since callers may pass any address.
///
/// # Safety
/// `m.pParameter` must point to `m.ulParameterLen` readable bytes.
unsafe fn param_struct<T: Copy>(m: &CK_MECHANISM) -> Result<T> {
    if m.pParameter.is_null() || m.ulParameterLen as usize != std::mem::size_of::<T>() {
        return Err(Error::Ck(CKR_MECHANISM_PARAM_INVALID));
    }
    // SAFETY: non-NULL, and the caller promises `size_of::<T>()` readable
    // bytes; `T` is a plain C struct (any bit pattern is valid).
    Ok(unsafe { std::ptr::read_unaligned(m.pParameter as *const T) })
}

/// The capacity of a caller's output buffer: `None` for a size query (NULL
/// buffer).
///
/// # Safety
/// `plen` must be NULL or point to a readable CK_ULONG.
pub unsafe fn capacity(p: *const CK_BYTE, plen: *const CK_ULONG) -> Result<Option<usize>> {
    // SAFETY: the caller promises a readable CK_ULONG if not NULL.
    let n = unsafe { read(plen) }.ok_or(Error::Ck(CKR_ARGUMENTS_BAD))?;
    if p.is_null() {
        return Ok(None);
    }
    Ok(Some(usize::try_from(n).unwrap_or(usize::MAX)))
}

/// The one function that writes to caller memory: copies `src` to `dst`,
/// a buffer of `cap` items of `T` (`None`: a size query, NULL buffer).
///
/// - `cap` `None`: copies nothing, whatever `src` is.
/// - `src` longer than `cap`: copies nothing, logs one line at error level
///   and returns `CKR_DEVICE_ERROR` (the safe layer or the cluster gave an
///   answer that cannot be right for the buffer the caller was told to
///   give).
/// - else copies `src` byte by byte (so `dst` need not be aligned).
///
/// # Safety
/// If `cap` is `Some(m)`, `dst` must be NULL or writable for `m` items of `T`.
pub unsafe fn copy_out<T: Copy>(src: &[T], dst: *mut T, cap: Option<usize>) -> Result<()> {
    let Some(cap) = cap else {
        return Ok(());
    };
    if src.len() > cap {
        let size = std::mem::size_of::<T>();
        crate::log!(
            Level::Error,
            "the answer had {} bytes for a buffer of {}: nothing written, CKR_DEVICE_ERROR",
            std::mem::size_of_val(src),
            cap.saturating_mul(size)
        );
        return Err(Error::Ck(CKR_DEVICE_ERROR));
    }
    if src.is_empty() {
        return Ok(());
    }
    if dst.is_null() {
        return Err(Error::Ck(CKR_ARGUMENTS_BAD));
    }
    // SAFETY: `dst` is non-NULL and writable for `cap` >= `src.len()` items
    // (the caller's promise); `T: Copy`, so a bitwise copy is a valid value
    // and nothing is dropped twice; a byte copy needs no alignment; the
    // caller's buffer cannot overlap the module's own `src`.
    unsafe {
        std::ptr::copy_nonoverlapping(
            src.as_ptr() as *const u8,
            dst as *mut u8,
            std::mem::size_of_val(src),
        )
    };
    Ok(())
}

/// Writes an [`Out`] (or the size of a too-small buffer) to the caller.
/// `cap` is what [`capacity`] returned for `p` and `plen`: data longer than
/// that is never written (`CKR_DEVICE_ERROR`, see [`copy_out`]), and a size
/// query (`None`) never copies.
///
/// # Safety
/// `plen` non-NULL and writable; `p` writable for `cap` bytes if `cap` is
/// `Some`.
pub unsafe fn deliver(
    r: Result<Out>,
    cap: Option<usize>,
    p: *mut CK_BYTE,
    plen: *mut CK_ULONG,
) -> Result<CK_RV> {
    match r {
        Ok(Out::Size(n)) => {
            // SAFETY: the caller promises a writable CK_ULONG; NULL is
            // checked by `put`.
            unsafe { put(plen, n as CK_ULONG) }?;
            Ok(CKR_OK)
        }
        Ok(Out::Data(d)) => {
            // SAFETY: `cap` is the caller's buffer size at `p`; checked
            // against the length by `copy_out`.
            unsafe { copy_out(d.as_slice(), p, cap) }?;
            // SAFETY: as above.
            unsafe { put(plen, d.len() as CK_ULONG) }?;
            Ok(CKR_OK)
        }
        Err(Error::BufferTooSmall(n)) => {
            // SAFETY: as above.
            unsafe { put(plen, n as CK_ULONG) }?;
            Ok(CKR_BUFFER_TOO_SMALL)
        }
        Err(e) => Err(e),
    }
}

/// Writes a value to a caller's pointer (through [`copy_out`]).
///
/// # Safety
/// `p` must be NULL or writable.
pub unsafe fn put<T: Copy>(p: *mut T, v: T) -> Result<()> {
    if p.is_null() {
        return Err(Error::Ck(CKR_ARGUMENTS_BAD));
    }
    // SAFETY: non-NULL, the caller promises a writable T.
    unsafe { copy_out(std::slice::from_ref(&v), p, Some(1)) }
}

/// Fills the caller's buffer of `n` bytes at `p` with what `f` writes, a
/// chunk at a time in a local (zeroized) buffer copied out by
/// [`copy_out`].
///
/// # Safety
/// `p` must be NULL or writable for `n` bytes.
pub unsafe fn fill(
    p: *mut CK_BYTE,
    n: CK_ULONG,
    mut f: impl FnMut(&mut [u8]) -> Result<()>,
) -> Result<()> {
    let n = usize::try_from(n).map_err(|_| Error::Ck(CKR_ARGUMENTS_BAD))?;
    if n == 0 {
        return Ok(());
    }
    if p.is_null() {
        return Err(Error::Ck(CKR_ARGUMENTS_BAD));
    }
    let mut chunk = Zeroizing::new(vec![0u8; n.min(FILL_CHUNK)]);
    let mut done = 0;
    while done < n {
        let len = (n - done).min(chunk.len());
        let part = chunk.get_mut(..len).ok_or(Error::Ck(CKR_GENERAL_ERROR))?;
        f(part)?;
        // SAFETY: `done` < `n`, so `p + done` lies in the caller's buffer,
        // which has `n - done` bytes left from there.
        unsafe { copy_out(part, p.add(done), Some(n - done)) }?;
        done += len;
    }
    Ok(())
}

/// `C_GetAttributeValue` on the caller's template of `n` attributes at `t`:
/// reads their types, asks `values` for them, and writes back each value
/// (through [`copy_out`]) and length. With a NULL `pValue` the length only;
/// a short buffer gives `CK_UNAVAILABLE_INFORMATION` and
/// `CKR_BUFFER_TOO_SMALL`. Every attribute is processed and the return code
/// is the last problem met, as PKCS#11 specifies.
///
/// # Safety
/// `t` must point to `n` writable `CK_ATTRIBUTE`s, each with a `pValue`
/// that is NULL or writable for `ulValueLen` bytes.
pub unsafe fn attribute_values(
    t: *mut CK_ATTRIBUTE,
    n: CK_ULONG,
    values: impl FnOnce(&[CK_ATTRIBUTE_TYPE]) -> Result<Vec<AttrOut>>,
) -> Result<CK_RV> {
    if (n > 0 && t.is_null()) || n > MAX_TEMPLATE {
        return Err(Error::Ck(CKR_ARGUMENTS_BAD));
    }
    let n = n as usize;
    let mut attrs = Vec::with_capacity(n);
    for i in 0..n {
        // SAFETY: `t` is non-NULL (n > 0) and the caller promises `n`
        // attributes; i < n.
        let a =
            unsafe { read(t.add(i) as *const CK_ATTRIBUTE) }.ok_or(Error::Ck(CKR_ARGUMENTS_BAD))?;
        attrs.push(a);
    }
    let types: Vec<CK_ATTRIBUTE_TYPE> = attrs.iter().map(|a| a.type_).collect();
    let values = values(&types)?;
    let mut rv = CKR_OK;
    for (i, (a, v)) in attrs.iter().zip(values).enumerate() {
        let len = match v {
            AttrOut::Value(v) => {
                let cap = usize::try_from(a.ulValueLen).unwrap_or(usize::MAX);
                if a.pValue.is_null() {
                    v.len() as CK_ULONG
                } else if cap < v.len() {
                    rv = CKR_BUFFER_TOO_SMALL;
                    CK_UNAVAILABLE_INFORMATION
                } else {
                    // SAFETY: the caller promises `ulValueLen` writable
                    // bytes at the non-NULL `pValue`.
                    unsafe { copy_out(v.as_slice(), a.pValue as *mut u8, Some(cap)) }?;
                    v.len() as CK_ULONG
                }
            }
            AttrOut::Sensitive => {
                rv = CKR_ATTRIBUTE_SENSITIVE;
                CK_UNAVAILABLE_INFORMATION
            }
            AttrOut::Invalid => {
                rv = CKR_ATTRIBUTE_TYPE_INVALID;
                CK_UNAVAILABLE_INFORMATION
            }
        };
        // SAFETY: i < n attributes at `t`; `addr_of_mut!` makes no reference
        // to the caller's memory, and `put` writes unaligned.
        unsafe {
            let p = std::ptr::addr_of_mut!((*t.add(i)).ulValueLen);
            put(p, len)
        }?;
    }
    Ok(rv)
}

/// A fixed-size, blank-padded PKCS#11 string.
pub fn padded<const N: usize>(s: &str) -> [u8; N] {
    let mut out = [b' '; N];
    let mut n = 0;
    // Cut at a character boundary so that the field stays valid UTF-8.
    for (i, c) in s.char_indices() {
        if i + c.len_utf8() > N {
            break;
        }
        n = i + c.len_utf8();
    }
    if let (Some(o), Some(i)) = (out.get_mut(..n), s.as_bytes().get(..n)) {
        o.copy_from_slice(i);
    }
    out
}

/// Writes a list with the two-call convention: with `p` NULL, the count;
/// else the items if they fit, or `CKR_BUFFER_TOO_SMALL`.
///
/// # Safety
/// `pn` non-NULL and writable; `p` writable for `*pn` items if not NULL.
pub unsafe fn list<T: Copy>(items: &[T], p: *mut T, pn: *mut CK_ULONG) -> Result<CK_RV> {
    // SAFETY: the caller promises a readable CK_ULONG if not NULL.
    let cap = unsafe { read(pn) }.ok_or(Error::Ck(CKR_ARGUMENTS_BAD))?;
    // SAFETY: non-NULL (read above) and writable.
    unsafe { put(pn, items.len() as CK_ULONG) }?;
    if p.is_null() {
        return Ok(CKR_OK);
    }
    let cap = usize::try_from(cap).unwrap_or(usize::MAX);
    if cap < items.len() {
        return Ok(CKR_BUFFER_TOO_SMALL);
    }
    // SAFETY: the caller's buffer holds `cap` >= len items; checked again
    // by `copy_out`.
    unsafe { copy_out(items, p, Some(cap)) }?;
    Ok(CKR_OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padding_cuts_at_characters() {
        assert_eq!(&padded::<4>("ab"), b"ab  ");
        assert_eq!(&padded::<4>("abcdef"), b"abcd");
        // "é" is two bytes: it does not fit after "abc".
        assert_eq!(&padded::<4>("abcé"), b"abc ");
    }

    #[test]
    fn null_pointers_are_arguments_bad() {
        // SAFETY: NULL pointers are what is tested; nothing is dereferenced.
        unsafe {
            assert!(input(std::ptr::null(), 0).unwrap().is_empty());
            assert_eq!(
                input(std::ptr::null(), 3).unwrap_err().rv(),
                CKR_ARGUMENTS_BAD
            );
            assert_eq!(
                template(std::ptr::null(), 2).unwrap_err().rv(),
                CKR_ARGUMENTS_BAD
            );
            assert_eq!(
                mechanism(std::ptr::null()).unwrap_err().rv(),
                CKR_ARGUMENTS_BAD
            );
            assert_eq!(
                capacity(std::ptr::null(), std::ptr::null())
                    .unwrap_err()
                    .rv(),
                CKR_ARGUMENTS_BAD
            );
        }
    }

    #[test]
    fn copies_never_exceed_the_capacity() {
        // A 4-byte buffer between canaries.
        let mut buf = [0xAAu8; 12];
        let p = buf[4..].as_mut_ptr();
        // SAFETY: `p` points to 8 writable bytes; capacities given are at
        // most 4.
        unsafe {
            assert_eq!(
                copy_out(&[1u8; 5], p, Some(4)).unwrap_err().rv(),
                CKR_DEVICE_ERROR
            );
            // A size query never copies.
            copy_out(&[1u8; 50], p, None).unwrap();
            assert_eq!(buf, [0xAA; 12]);
            let p = buf[4..].as_mut_ptr();
            copy_out(&[1u8, 2, 3, 4], p, Some(4)).unwrap();
            copy_out::<u8>(&[], std::ptr::null_mut(), Some(0)).unwrap();
            assert_eq!(
                copy_out(&[1u8], std::ptr::null_mut(), Some(1))
                    .unwrap_err()
                    .rv(),
                CKR_ARGUMENTS_BAD
            );
        }
        assert_eq!(
            buf,
            [0xAA, 0xAA, 0xAA, 0xAA, 1, 2, 3, 4, 0xAA, 0xAA, 0xAA, 0xAA]
        );
    }

    #[test]
    fn deliver_checks_the_capacity() {
        let mut buf = [0xAAu8; 8];
        let mut len: CK_ULONG = 4;
        let data = || Ok(Out::Data(zeroize::Zeroizing::new(vec![7u8; 5])));
        // SAFETY: `buf` has 8 bytes, of which 4 are offered; `len` is a local.
        unsafe {
            let p = buf[2..].as_mut_ptr();
            let cap = capacity(p, &len).unwrap();
            assert_eq!(cap, Some(4));
            assert_eq!(
                deliver(data(), cap, p, &mut len).unwrap_err().rv(),
                CKR_DEVICE_ERROR
            );
            assert_eq!(len, 4, "the length is left alone");
            // A size query: the length, nothing copied.
            assert_eq!(
                deliver(data(), None, std::ptr::null_mut(), &mut len).unwrap(),
                CKR_OK
            );
            assert_eq!(len, 5);
            assert_eq!(
                deliver(Ok(Out::Size(9)), None, std::ptr::null_mut(), &mut len).unwrap(),
                CKR_OK
            );
            assert_eq!(len, 9);
            assert_eq!(
                deliver(Err(Error::BufferTooSmall(5)), cap, p, &mut len).unwrap(),
                CKR_BUFFER_TOO_SMALL
            );
            assert_eq!(len, 5);
            let short = || Ok(Out::Data(zeroize::Zeroizing::new(vec![7u8; 3])));
            assert_eq!(deliver(short(), cap, p, &mut len).unwrap(), CKR_OK);
            assert_eq!(len, 3);
        }
        assert_eq!(buf, [0xAA, 0xAA, 7, 7, 7, 0xAA, 0xAA, 0xAA]);
    }

    #[test]
    fn names_are_read_no_further_than_needed() {
        // SAFETY: every pointer is NULL or points to a NUL-terminated local;
        // "PKCS" stops at its NUL, which differs from ' '.
        unsafe {
            assert!(name_is(c"PKCS 11".as_ptr().cast(), b"PKCS 11"));
            assert!(!name_is(c"PKCS 12".as_ptr().cast(), b"PKCS 11"));
            assert!(!name_is(c"PKCS 110".as_ptr().cast(), b"PKCS 11"));
            assert!(!name_is(c"PKCS".as_ptr().cast(), b"PKCS 11"));
            assert!(!name_is(std::ptr::null(), b"PKCS 11"));
        }
    }

    #[test]
    fn fill_writes_exactly_the_buffer() {
        let mut buf = vec![0u8; FILL_CHUNK * 2 + 10];
        let n = buf.len() - 5;
        let mut calls = 0;
        // SAFETY: `buf` has more than `n` bytes.
        unsafe {
            fill(buf.as_mut_ptr(), n as CK_ULONG, |b| {
                calls += 1;
                b.fill(1);
                Ok(())
            })
        }
        .unwrap();
        assert_eq!(calls, 3);
        assert!(buf[..n].iter().all(|b| *b == 1));
        assert!(buf[n..].iter().all(|b| *b == 0));
        // SAFETY: NULL with a length is refused before anything is written.
        let e = unsafe { fill(std::ptr::null_mut(), 3, |_| Ok(())) }.unwrap_err();
        assert_eq!(e.rv(), CKR_ARGUMENTS_BAD);
    }

    #[test]
    fn attribute_values_follow_the_two_call_convention() {
        let mut small = [0xAAu8; 2];
        let mut big = [0xAAu8; 8];
        let mut t = [
            CK_ATTRIBUTE {
                type_: CKA_LABEL,
                pValue: std::ptr::null_mut(),
                ulValueLen: 0,
            },
            CK_ATTRIBUTE {
                type_: CKA_LABEL,
                pValue: small.as_mut_ptr() as *mut _,
                ulValueLen: 2,
            },
            CK_ATTRIBUTE {
                type_: CKA_LABEL,
                pValue: big.as_mut_ptr() as *mut _,
                ulValueLen: 4,
            },
            CK_ATTRIBUTE {
                type_: CKA_VALUE,
                pValue: std::ptr::null_mut(),
                ulValueLen: 0,
            },
        ];
        // SAFETY: every pointer points to a live local of the given size.
        let rv = unsafe {
            attribute_values(t.as_mut_ptr(), 4, |types| {
                assert_eq!(types, [CKA_LABEL, CKA_LABEL, CKA_LABEL, CKA_VALUE]);
                Ok(vec![
                    AttrOut::Value(b"abc".to_vec()),
                    AttrOut::Value(b"abc".to_vec()),
                    AttrOut::Value(b"abc".to_vec()),
                    AttrOut::Sensitive,
                ])
            })
        }
        .unwrap();
        assert_eq!(rv, CKR_ATTRIBUTE_SENSITIVE);
        let lens: Vec<CK_ULONG> = t.iter().map(|a| a.ulValueLen).collect();
        assert_eq!(
            lens,
            [3, CK_UNAVAILABLE_INFORMATION, 3, CK_UNAVAILABLE_INFORMATION]
        );
        assert_eq!(small, [0xAA; 2]);
        assert_eq!(big, [b'a', b'b', b'c', 0xAA, 0xAA, 0xAA, 0xAA, 0xAA]);
    }

    #[test]
    fn gcm_parameters() {
        let mut iv = [1u8; 12];
        let mut aad = *b"aad";
        let mut g = CK_GCM_PARAMS {
            pIv: iv.as_mut_ptr(),
            ulIvLen: 12,
            ulIvBits: 96,
            pAAD: aad.as_mut_ptr(),
            ulAADLen: 3,
            ulTagBits: 128,
        };
        let m = CK_MECHANISM {
            mechanism: CKM_AES_GCM,
            pParameter: &mut g as *mut _ as *mut _,
            ulParameterLen: std::mem::size_of::<CK_GCM_PARAMS>() as CK_ULONG,
        };
        // SAFETY: every pointer points to live locals.
        let mech = unsafe { mechanism(&m) }.unwrap();
        assert_eq!(
            mech,
            Mech::AesGcm {
                iv: iv.to_vec(),
                aad: b"aad".to_vec(),
                tag_bits: 128
            }
        );
        let short = CK_MECHANISM {
            ulParameterLen: 8,
            ..m
        };
        // SAFETY: as above.
        let r = unsafe { mechanism(&short) };
        assert_eq!(r.unwrap_err().rv(), CKR_MECHANISM_PARAM_INVALID);
        let unknown = CK_MECHANISM {
            mechanism: CKM_RSA_X_509,
            pParameter: std::ptr::null_mut(),
            ulParameterLen: 0,
        };
        // SAFETY: no parameter.
        let r = unsafe { mechanism(&unknown) };
        assert_eq!(r.unwrap_err().rv(), CKR_MECHANISM_INVALID);
    }
}
