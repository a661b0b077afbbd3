//! Pointer handling of the C boundary: every read of a caller's pointer and
//! every write to a caller's buffer is here, and checks for NULL first.

use cryptoki_sys::*;

use crate::error::{Error, Result};
use crate::mech::{Mech, CKM_KMS_CIPHERTEXT};
use crate::object::Attr;
use crate::ops::Out;

/// Largest attribute value or mechanism parameter read from a caller.
const MAX_VALUE: CK_ULONG = 64 << 20;
/// Most attributes read from one template.
const MAX_TEMPLATE: CK_ULONG = 4096;

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
        CKM_SHA256 => none(Mech::Sha256),
        CKM_SHA256_HMAC => none(Mech::Sha256Hmac),
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
        _ => Err(Error::Ck(CKR_MECHANISM_INVALID)),
    }
}

/// The capacity of a caller's output buffer: `None` for a size query (NULL
/// buffer).
///
/// # Safety
/// `plen` must be NULL or point to a readable CK_ULONG.
pub unsafe fn capacity(p: *const CK_BYTE, plen: *const CK_ULONG) -> Result<Option<usize>> {
    if plen.is_null() {
        return Err(Error::Ck(CKR_ARGUMENTS_BAD));
    }
    if p.is_null() {
        return Ok(None);
    }
    // SAFETY: non-NULL, the caller promises a CK_ULONG.
    let n = unsafe { *plen };
    Ok(Some(usize::try_from(n).unwrap_or(usize::MAX)))
}

/// Writes an [`Out`] (or the size of a too-small buffer) to the caller.
///
/// # Safety
/// `plen` non-NULL and writable; `p` writable for `*plen` bytes if not NULL.
pub unsafe fn deliver(r: Result<Out>, p: *mut CK_BYTE, plen: *mut CK_ULONG) -> Result<CK_RV> {
    match r {
        Ok(Out::Size(n)) => {
            // SAFETY: checked non-NULL by `capacity`.
            unsafe { *plen = n as CK_ULONG };
            Ok(CKR_OK)
        }
        Ok(Out::Data(d)) => {
            if !d.is_empty() {
                // SAFETY: `capacity` read the buffer size from the caller,
                // and the safe layer returns at most that many bytes.
                unsafe { std::ptr::copy_nonoverlapping(d.as_ptr(), p, d.len()) };
            }
            // SAFETY: as above.
            unsafe { *plen = d.len() as CK_ULONG };
            Ok(CKR_OK)
        }
        Err(Error::BufferTooSmall(n)) => {
            // SAFETY: as above.
            unsafe { *plen = n as CK_ULONG };
            Ok(CKR_BUFFER_TOO_SMALL)
        }
        Err(e) => Err(e),
    }
}

/// Writes a value to a caller's pointer.
///
/// # Safety
/// `p` must be NULL or writable.
pub unsafe fn put<T>(p: *mut T, v: T) -> Result<()> {
    if p.is_null() {
        return Err(Error::Ck(CKR_ARGUMENTS_BAD));
    }
    // SAFETY: non-NULL, the caller promises a writable T.
    unsafe { std::ptr::write_unaligned(p, v) };
    Ok(())
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
    out[..n].copy_from_slice(&s.as_bytes()[..n]);
    out
}

/// Writes a list with the two-call convention: with `p` NULL, the count;
/// else the items if they fit, or `CKR_BUFFER_TOO_SMALL`.
///
/// # Safety
/// `pn` non-NULL and writable; `p` writable for `*pn` items if not NULL.
pub unsafe fn list<T: Copy>(items: &[T], p: *mut T, pn: *mut CK_ULONG) -> Result<CK_RV> {
    if pn.is_null() {
        return Err(Error::Ck(CKR_ARGUMENTS_BAD));
    }
    if p.is_null() {
        // SAFETY: non-NULL.
        unsafe { *pn = items.len() as CK_ULONG };
        return Ok(CKR_OK);
    }
    // SAFETY: non-NULL.
    let cap = unsafe { *pn } as usize;
    // SAFETY: non-NULL.
    unsafe { *pn = items.len() as CK_ULONG };
    if cap < items.len() {
        return Ok(CKR_BUFFER_TOO_SMALL);
    }
    // SAFETY: the caller's buffer holds `cap` >= len items.
    unsafe { std::ptr::copy_nonoverlapping(items.as_ptr(), p, items.len()) };
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
        assert_eq!(
            unsafe { mechanism(&short) }.unwrap_err().rv(),
            CKR_MECHANISM_PARAM_INVALID
        );
        let unknown = CK_MECHANISM {
            mechanism: CKM_RSA_PKCS,
            pParameter: std::ptr::null_mut(),
            ulParameterLen: 0,
        };
        // SAFETY: no parameter.
        assert_eq!(
            unsafe { mechanism(&unknown) }.unwrap_err().rv(),
            CKR_MECHANISM_INVALID
        );
    }
}
