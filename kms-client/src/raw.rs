//! Raw symmetric mechanisms with standard byte formats, shared by the
//! server's PKCS#11 extension commands (on a key version's derived AES key)
//! and the PKCS#11 module (on session keys held in its memory):
//!
//! - AES-GCM with the caller's 12-byte IV, associated data and a tag of
//!   4..=16 bytes (as SoftHSM2 allows; 12 or more recommended) (NIST SP 800-38D; output `ciphertext || tag`);
//! - AES-CBC with PKCS#7 padding and the caller's 16-byte IV, and without
//!   padding (input a multiple of 16 bytes);
//! - AES-ECB (input a multiple of 16 bytes; for PKCS#11 applications that
//!   build their own modes, e.g. key check values);
//! - AES-CTR with the caller's 16-byte initial counter block, incremented
//!   as one 128-bit big-endian number (PKCS#11 `ulCounterBits` 128);
//! - AES key wrap (RFC 3394) and key wrap with padding (RFC 5649);
//! - HMAC-SHA256.
//!
//! Every function takes the key as bytes (16, 24 or 32 for AES) and returns
//! a [`RawError`] for bad input, never panics.

use aes::cipher::{BlockDecryptMut, BlockEncryptMut, KeyIvInit};
use aes_gcm::aead::consts::{U12, U13, U14, U15, U16};
use aes_gcm::aead::generic_array::ArrayLength;
use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::aes::{Aes128, Aes192, Aes256};
use aes_gcm::AesGcm;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use zeroize::Zeroizing;

/// The mechanisms, as numbered on the wire (`RawCryptRequest.mechanism`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum RawMechanism {
    /// AES-GCM, `iv` of 12 bytes, `tag_len` 4..=16.
    AesGcm = 1,
    /// AES-CBC with PKCS#7 padding, `iv` of 16 bytes.
    AesCbcPad = 2,
    /// RFC 3394 AES key wrap (input a multiple of 8 bytes, at least 16).
    AesKeyWrap = 3,
    /// RFC 5649 AES key wrap with padding.
    AesKeyWrapPad = 4,
    /// AES-ECB, input a multiple of 16 bytes, no IV.
    AesEcb = 5,
    /// AES-CBC without padding, `iv` of 16 bytes, input a multiple of 16 bytes.
    AesCbc = 6,
    /// AES-CTR, `iv` = the 16-byte initial counter block (128-bit big-endian counter).
    AesCtr = 7,
}

impl RawMechanism {
    /// The mechanism with wire number `n`.
    pub fn from_u32(n: u32) -> Option<Self> {
        Some(match n {
            1 => Self::AesGcm,
            2 => Self::AesCbcPad,
            3 => Self::AesKeyWrap,
            4 => Self::AesKeyWrapPad,
            5 => Self::AesEcb,
            6 => Self::AesCbc,
            7 => Self::AesCtr,
            _ => return None,
        })
    }
}

/// Why a raw operation failed. Messages are safe to show to callers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RawError {
    #[error("invalid key length {0}: AES takes 16, 24 or 32 bytes")]
    KeyLength(usize),
    #[error("invalid IV: {0}")]
    Iv(String),
    #[error("invalid tag length {0}: use 4 to 16 bytes (12 or more recommended)")]
    TagLength(usize),
    #[error("invalid input length {0} for this mechanism")]
    DataLength(usize),
    /// Authentication (GCM tag, key-wrap integrity check) or padding failed.
    #[error("authentication failed")]
    Auth,
}

/// Largest input of one raw operation (bounded by the server's request size anyway).
pub const MAX_INPUT: usize = 64 << 20;

/// Parameters of an encrypt or decrypt.
#[derive(Debug, Clone, Copy)]
pub struct Params<'a> {
    pub iv: &'a [u8],
    pub aad: &'a [u8],
    pub tag_len: usize,
}

/// Encrypts (or wraps) `data` under `key`.
pub fn encrypt(
    m: RawMechanism,
    key: &[u8],
    p: &Params<'_>,
    data: &[u8],
) -> Result<Vec<u8>, RawError> {
    check_key(key)?;
    if data.len() > MAX_INPUT {
        return Err(RawError::DataLength(data.len()));
    }
    match m {
        RawMechanism::AesGcm => gcm_seal(key, p, data),
        RawMechanism::AesCbcPad => cbc_encrypt(key, p.iv, data),
        RawMechanism::AesKeyWrap => kw_wrap(key, data, false),
        RawMechanism::AesKeyWrapPad => kw_wrap(key, data, true),
        RawMechanism::AesEcb => blocks(key, None, data, true).map(|z| z.to_vec()),
        RawMechanism::AesCbc => blocks(key, Some(p.iv), data, true).map(|z| z.to_vec()),
        RawMechanism::AesCtr => ctr(key, p.iv, data).map(|z| z.to_vec()),
    }
}

/// Decrypts (or unwraps) `data` under `key`.
pub fn decrypt(
    m: RawMechanism,
    key: &[u8],
    p: &Params<'_>,
    data: &[u8],
) -> Result<Zeroizing<Vec<u8>>, RawError> {
    check_key(key)?;
    if data.len() > MAX_INPUT + 64 {
        return Err(RawError::DataLength(data.len()));
    }
    match m {
        RawMechanism::AesGcm => gcm_open(key, p, data),
        RawMechanism::AesCbcPad => cbc_decrypt(key, p.iv, data),
        RawMechanism::AesKeyWrap => kw_unwrap(key, data, false),
        RawMechanism::AesKeyWrapPad => kw_unwrap(key, data, true),
        RawMechanism::AesEcb => blocks(key, None, data, false),
        RawMechanism::AesCbc => blocks(key, Some(p.iv), data, false),
        RawMechanism::AesCtr => ctr(key, p.iv, data),
    }
}

/// Whether `m` authenticates its input, so that a decrypt under the wrong
/// key fails rather than returning garbage: GCM and the key wraps (CBC-PAD's
/// padding check passes by chance about once in 256 tries; ECB, CBC and
/// CTR check nothing).
pub fn authenticates(m: RawMechanism) -> bool {
    matches!(
        m,
        RawMechanism::AesGcm | RawMechanism::AesKeyWrap | RawMechanism::AesKeyWrapPad
    )
}

/// The output length of an encrypt of `len` bytes.
pub fn encrypted_len(m: RawMechanism, p: &Params<'_>, len: usize) -> usize {
    match m {
        RawMechanism::AesGcm => len + p.tag_len,
        RawMechanism::AesCbcPad => (len / 16 + 1) * 16,
        RawMechanism::AesKeyWrap => len + 8,
        RawMechanism::AesKeyWrapPad => len.div_ceil(8).max(1) * 8 + 8,
        RawMechanism::AesEcb | RawMechanism::AesCbc | RawMechanism::AesCtr => len,
    }
}

/// Checks the input length of a decrypt (or unwrap) without a key: what
/// [`decrypt`] would refuse as [`RawError::DataLength`] for every key.
pub fn check_decrypt_len(m: RawMechanism, p: &Params<'_>, len: usize) -> Result<(), RawError> {
    let ok = match m {
        RawMechanism::AesGcm => len >= p.tag_len,
        RawMechanism::AesCbcPad => len > 0 && len.is_multiple_of(16),
        RawMechanism::AesKeyWrap | RawMechanism::AesKeyWrapPad => {
            len >= 16 && len.is_multiple_of(8)
        }
        RawMechanism::AesEcb | RawMechanism::AesCbc => len.is_multiple_of(16),
        RawMechanism::AesCtr => true,
    };
    if ok && len <= MAX_INPUT + 64 {
        Ok(())
    } else {
        Err(RawError::DataLength(len))
    }
}

/// Checks the input length of an encrypt (or wrap) without a key.
pub fn check_encrypt_len(m: RawMechanism, len: usize) -> Result<(), RawError> {
    let ok = match m {
        RawMechanism::AesGcm | RawMechanism::AesCbcPad | RawMechanism::AesCtr => true,
        RawMechanism::AesKeyWrap => len >= 16 && len.is_multiple_of(8),
        RawMechanism::AesKeyWrapPad => len > 0,
        RawMechanism::AesEcb | RawMechanism::AesCbc => len.is_multiple_of(16),
    };
    if ok && len <= MAX_INPUT {
        Ok(())
    } else {
        Err(RawError::DataLength(len))
    }
}

/// The hash of an HMAC (PKCS#11 `CKM_SHA_1_HMAC`, `CKM_SHA256_HMAC`, ...),
/// as named on the wire (`""` is SHA-256).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MacHash {
    Sha1,
    Sha256,
    Sha384,
    Sha512,
}

impl MacHash {
    /// Parses `SHA-1`, `SHA-256` (or empty), `SHA-384`, `SHA-512` (also without the dash).
    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_uppercase().replace('-', "").as_str() {
            "SHA1" => Some(Self::Sha1),
            "" | "SHA256" => Some(Self::Sha256),
            "SHA384" => Some(Self::Sha384),
            "SHA512" => Some(Self::Sha512),
            _ => None,
        }
    }

    /// The MAC's length in bytes.
    pub fn output_len(self) -> usize {
        match self {
            Self::Sha1 => 20,
            Self::Sha256 => 32,
            Self::Sha384 => 48,
            Self::Sha512 => 64,
        }
    }
}

/// HMAC of `msg` under `key` with hash `h`.
pub fn hmac(h: MacHash, key: &[u8], msg: &[u8]) -> Vec<u8> {
    fn run<M: Mac + hmac::digest::KeyInit>(key: &[u8], msg: &[u8]) -> Vec<u8> {
        let mut m = <M as hmac::digest::KeyInit>::new_from_slice(key)
            .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
        m.update(msg);
        m.finalize().into_bytes().to_vec()
    }
    match h {
        MacHash::Sha1 => run::<Hmac<sha1::Sha1>>(key, msg),
        MacHash::Sha256 => run::<Hmac<Sha256>>(key, msg),
        MacHash::Sha384 => run::<Hmac<sha2::Sha384>>(key, msg),
        MacHash::Sha512 => run::<Hmac<sha2::Sha512>>(key, msg),
    }
}

/// HMAC-SHA256 of `msg` under `key`.
pub fn hmac_sha256(key: &[u8], msg: &[u8]) -> [u8; 32] {
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    m.update(msg);
    m.finalize().into_bytes().into()
}

/// Constant-time comparison of two MACs (lengths are public).
pub fn mac_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn check_key(key: &[u8]) -> Result<(), RawError> {
    match key.len() {
        16 | 24 | 32 => Ok(()),
        n => Err(RawError::KeyLength(n)),
    }
}

// ---- AES-GCM ----

fn gcm_check(p: &Params<'_>) -> Result<(), RawError> {
    if p.iv.len() != 12 {
        return Err(RawError::Iv(format!(
            "AES-GCM takes a 12-byte IV, not {} bytes",
            p.iv.len()
        )));
    }
    if !(4..=16).contains(&p.tag_len) {
        return Err(RawError::TagLength(p.tag_len));
    }
    Ok(())
}

fn gcm_seal(key: &[u8], p: &Params<'_>, data: &[u8]) -> Result<Vec<u8>, RawError> {
    gcm_check(p)?;
    let mut buf = data.to_vec();
    // The tag of GCM truncated to t bytes is the first t bytes of the full tag.
    let tag = match key.len() {
        16 => seal_with::<Aes128>(key, p, &mut buf),
        24 => seal_with::<Aes192>(key, p, &mut buf),
        _ => seal_with::<Aes256>(key, p, &mut buf),
    }?;
    buf.extend_from_slice(&tag[..p.tag_len]);
    Ok(buf)
}

fn seal_with<C>(key: &[u8], p: &Params<'_>, buf: &mut [u8]) -> Result<[u8; 16], RawError>
where
    C: aes::cipher::BlockCipher
        + aes::cipher::BlockSizeUser<BlockSize = aes::cipher::consts::U16>
        + aes::cipher::BlockEncrypt
        + KeyInit,
{
    let c = AesGcm::<C, U12, U16>::new_from_slice(key).map_err(|_| RawError::KeyLength(0))?;
    let tag = c
        .encrypt_in_place_detached(p.iv.into(), p.aad, buf)
        .map_err(|_| RawError::DataLength(buf.len()))?;
    Ok(tag.into())
}

fn open_with<C, T>(key: &[u8], p: &Params<'_>, buf: &mut [u8], tag: &[u8]) -> Result<(), RawError>
where
    C: aes::cipher::BlockCipher
        + aes::cipher::BlockSizeUser<BlockSize = aes::cipher::consts::U16>
        + aes::cipher::BlockEncrypt
        + KeyInit,
    T: ArrayLength<u8> + aes_gcm::TagSize,
{
    let c = AesGcm::<C, U12, T>::new_from_slice(key).map_err(|_| RawError::KeyLength(0))?;
    c.decrypt_in_place_detached(p.iv.into(), p.aad, buf, tag.into())
        .map_err(|_| RawError::Auth)
}

fn open_cipher<C>(key: &[u8], p: &Params<'_>, buf: &mut [u8], tag: &[u8]) -> Result<(), RawError>
where
    C: aes::cipher::BlockCipher
        + aes::cipher::BlockSizeUser<BlockSize = aes::cipher::consts::U16>
        + aes::cipher::BlockEncrypt
        + KeyInit,
{
    match tag.len() {
        12 => open_with::<C, U12>(key, p, buf, tag),
        13 => open_with::<C, U13>(key, p, buf, tag),
        14 => open_with::<C, U14>(key, p, buf, tag),
        15 => open_with::<C, U15>(key, p, buf, tag),
        16 => open_with::<C, U16>(key, p, buf, tag),
        4..=11 => open_short::<C>(key, p, buf, tag),
        n => Err(RawError::TagLength(n)),
    }
}

/// Opens with a tag shorter than the AEAD crate verifies (4..=11 bytes).
/// GCM's keystream depends on key and IV only, so sealing the ciphertext
/// yields the plaintext; sealing that plaintext yields the ciphertext again
/// and its full tag, whose first bytes must equal `tag` (compared in
/// constant time). The plaintext is released only after the check.
fn open_short<C>(key: &[u8], p: &Params<'_>, buf: &mut [u8], tag: &[u8]) -> Result<(), RawError>
where
    C: aes::cipher::BlockCipher
        + aes::cipher::BlockSizeUser<BlockSize = aes::cipher::consts::U16>
        + aes::cipher::BlockEncrypt
        + KeyInit,
{
    let ct = buf.to_vec();
    seal_with::<C>(key, p, buf)?;
    let mut again = Zeroizing::new(buf.to_vec());
    let full = seal_with::<C>(key, p, &mut again)?;
    debug_assert_eq!(&again[..], &ct[..]);
    if mac_eq(&full[..tag.len()], tag) {
        Ok(())
    } else {
        buf.copy_from_slice(&ct);
        Err(RawError::Auth)
    }
}

fn gcm_open(key: &[u8], p: &Params<'_>, data: &[u8]) -> Result<Zeroizing<Vec<u8>>, RawError> {
    gcm_check(p)?;
    if data.len() < p.tag_len {
        return Err(RawError::DataLength(data.len()));
    }
    let (body, tag) = data.split_at(data.len() - p.tag_len);
    let mut buf = Zeroizing::new(body.to_vec());
    match key.len() {
        16 => open_cipher::<Aes128>(key, p, &mut buf, tag),
        24 => open_cipher::<Aes192>(key, p, &mut buf, tag),
        _ => open_cipher::<Aes256>(key, p, &mut buf, tag),
    }?;
    Ok(buf)
}

// ---- AES-CBC-PAD ----

fn cbc_iv(iv: &[u8]) -> Result<&[u8; 16], RawError> {
    iv.try_into().map_err(|_| {
        RawError::Iv(format!(
            "AES-CBC takes a 16-byte IV, not {} bytes",
            iv.len()
        ))
    })
}

fn cbc_encrypt(key: &[u8], iv: &[u8], data: &[u8]) -> Result<Vec<u8>, RawError> {
    use cbc::cipher::block_padding::Pkcs7;
    let iv = cbc_iv(iv)?;
    let mut buf = vec![0u8; (data.len() / 16 + 1) * 16];
    let n = match key.len() {
        16 => cbc::Encryptor::<Aes128>::new(key.into(), iv.into())
            .encrypt_padded_b2b_mut::<Pkcs7>(data, &mut buf)
            .map(|c| c.len()),
        24 => cbc::Encryptor::<Aes192>::new(key.into(), iv.into())
            .encrypt_padded_b2b_mut::<Pkcs7>(data, &mut buf)
            .map(|c| c.len()),
        _ => cbc::Encryptor::<Aes256>::new(key.into(), iv.into())
            .encrypt_padded_b2b_mut::<Pkcs7>(data, &mut buf)
            .map(|c| c.len()),
    }
    .map_err(|_| RawError::DataLength(data.len()))?;
    buf.truncate(n);
    Ok(buf)
}

fn cbc_decrypt(key: &[u8], iv: &[u8], data: &[u8]) -> Result<Zeroizing<Vec<u8>>, RawError> {
    use cbc::cipher::block_padding::Pkcs7;
    let iv = cbc_iv(iv)?;
    if data.is_empty() || !data.len().is_multiple_of(16) {
        return Err(RawError::DataLength(data.len()));
    }
    let mut buf = Zeroizing::new(data.to_vec());
    let n = match key.len() {
        16 => cbc::Decryptor::<Aes128>::new(key.into(), iv.into())
            .decrypt_padded_mut::<Pkcs7>(&mut buf)
            .map(|p| p.len()),
        24 => cbc::Decryptor::<Aes192>::new(key.into(), iv.into())
            .decrypt_padded_mut::<Pkcs7>(&mut buf)
            .map(|p| p.len()),
        _ => cbc::Decryptor::<Aes256>::new(key.into(), iv.into())
            .decrypt_padded_mut::<Pkcs7>(&mut buf)
            .map(|p| p.len()),
    }
    .map_err(|_| RawError::Auth)?;
    buf.truncate(n);
    Ok(buf)
}

// ---- ECB, CBC without padding, CTR ----

/// ECB (`iv` None) or CBC without padding over whole blocks.
fn blocks(
    key: &[u8],
    iv: Option<&[u8]>,
    data: &[u8],
    encrypt: bool,
) -> Result<Zeroizing<Vec<u8>>, RawError> {
    use aes::cipher::{BlockDecrypt, BlockEncrypt};
    if !data.len().is_multiple_of(16) {
        return Err(RawError::DataLength(data.len()));
    }
    let mut chain = match iv {
        Some(iv) => Some(*cbc_iv(iv)?),
        None => None,
    };
    let mut buf = Zeroizing::new(data.to_vec());
    fn run<
        C: BlockEncrypt
            + BlockDecrypt
            + aes::cipher::KeyInit
            + aes::cipher::BlockSizeUser<BlockSize = aes::cipher::consts::U16>,
    >(
        key: &[u8],
        buf: &mut [u8],
        chain: &mut Option<[u8; 16]>,
        encrypt: bool,
    ) -> Result<(), RawError> {
        let c = C::new_from_slice(key).map_err(|_| RawError::KeyLength(key.len()))?;
        for block in buf.chunks_exact_mut(16) {
            let b = aes::Block::from_mut_slice(block);
            if encrypt {
                if let Some(prev) = chain.as_ref() {
                    for (x, p) in b.iter_mut().zip(prev) {
                        *x ^= p;
                    }
                }
                c.encrypt_block(b);
                if let Some(prev) = chain.as_mut() {
                    prev.copy_from_slice(b);
                }
            } else {
                let mut ct = [0u8; 16];
                ct.copy_from_slice(b);
                c.decrypt_block(b);
                if let Some(prev) = chain.as_mut() {
                    for (x, p) in b.iter_mut().zip(prev.iter()) {
                        *x ^= p;
                    }
                    *prev = ct;
                }
            }
        }
        Ok(())
    }
    match key.len() {
        16 => run::<Aes128>(key, &mut buf, &mut chain, encrypt)?,
        24 => run::<Aes192>(key, &mut buf, &mut chain, encrypt)?,
        _ => run::<Aes256>(key, &mut buf, &mut chain, encrypt)?,
    }
    Ok(buf)
}

/// CTR with a 128-bit big-endian counter starting at the 16-byte `iv`.
fn ctr(key: &[u8], iv: &[u8], data: &[u8]) -> Result<Zeroizing<Vec<u8>>, RawError> {
    use aes::cipher::BlockEncrypt;
    let iv: [u8; 16] = iv.try_into().map_err(|_| {
        RawError::Iv(format!(
            "AES-CTR takes a 16-byte counter block, not {}",
            iv.len()
        ))
    })?;
    fn run<
        C: BlockEncrypt
            + aes::cipher::KeyInit
            + aes::cipher::BlockSizeUser<BlockSize = aes::cipher::consts::U16>,
    >(
        key: &[u8],
        iv: [u8; 16],
        buf: &mut [u8],
    ) -> Result<(), RawError> {
        let c = C::new_from_slice(key).map_err(|_| RawError::KeyLength(key.len()))?;
        let mut counter = u128::from_be_bytes(iv);
        for chunk in buf.chunks_mut(16) {
            let mut ks = aes::Block::from(counter.to_be_bytes());
            c.encrypt_block(&mut ks);
            for (x, k) in chunk.iter_mut().zip(ks.iter()) {
                *x ^= k;
            }
            counter = counter.wrapping_add(1);
        }
        Ok(())
    }
    let mut buf = Zeroizing::new(data.to_vec());
    match key.len() {
        16 => run::<Aes128>(key, iv, &mut buf)?,
        24 => run::<Aes192>(key, iv, &mut buf)?,
        _ => run::<Aes256>(key, iv, &mut buf)?,
    }
    Ok(buf)
}

// ---- key wrap ----

fn kw_wrap(key: &[u8], data: &[u8], pad: bool) -> Result<Vec<u8>, RawError> {
    if pad {
        if data.is_empty() {
            return Err(RawError::DataLength(0));
        }
    } else if data.len() < 16 || !data.len().is_multiple_of(8) {
        return Err(RawError::DataLength(data.len()));
    }
    let mut out = vec![
        0u8;
        if pad {
            data.len().div_ceil(8) * 8 + 8
        } else {
            data.len() + 8
        }
    ];
    macro_rules! wrap {
        ($kek:ty) => {{
            let kek = <$kek>::try_from(key).map_err(|_| RawError::KeyLength(key.len()))?;
            if pad {
                kek.wrap_with_padding(data, &mut out).map(|()| out.len())
            } else {
                kek.wrap(data, &mut out).map(|()| out.len())
            }
        }};
    }
    let n = match key.len() {
        16 => wrap!(aes_kw::KekAes128),
        24 => wrap!(aes_kw::KekAes192),
        _ => wrap!(aes_kw::KekAes256),
    }
    .map_err(|_| RawError::DataLength(data.len()))?;
    out.truncate(n);
    Ok(out)
}

fn kw_unwrap(key: &[u8], data: &[u8], pad: bool) -> Result<Zeroizing<Vec<u8>>, RawError> {
    if data.len() < 16 || !data.len().is_multiple_of(8) {
        return Err(RawError::DataLength(data.len()));
    }
    let mut out = Zeroizing::new(vec![0u8; data.len() - 8]);
    macro_rules! unwrap {
        ($kek:ty) => {{
            let kek = <$kek>::try_from(key).map_err(|_| RawError::KeyLength(key.len()))?;
            if pad {
                kek.unwrap_with_padding(data, &mut out).map(|o| o.len())
            } else {
                kek.unwrap(data, &mut out).map(|()| out.len())
            }
        }};
    }
    let n = match key.len() {
        16 => unwrap!(aes_kw::KekAes128),
        24 => unwrap!(aes_kw::KekAes192),
        _ => unwrap!(aes_kw::KekAes256),
    }
    .map_err(|_| RawError::Auth)?;
    out.truncate(n);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// HMAC with every hash PKCS#11 applications use.
    #[test]
    fn hmac_known_answers() {
        // RFC 2202 case 2 (SHA-1) and RFC 4231 case 2 (SHA-256/384/512).
        let (key, msg) = (b"Jefe", b"what do ya want for nothing?");
        let h = |s: &str| hex::decode(s).unwrap();
        assert_eq!(
            hmac(MacHash::Sha1, key, msg),
            h("effcdf6ae5eb2fa2d27416d5f184df9c259a7c79")
        );
        assert_eq!(
            hmac(MacHash::Sha256, key, msg),
            h("5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")
        );
        assert_eq!(hmac(MacHash::Sha384, key, msg), h("af45d2e376484031617f78d2b58a6b1b9c7ef464f5a01b47e42ec3736322445e8e2240ca5e69e2c78b3239ecfab21649"));
        assert_eq!(hmac(MacHash::Sha512, key, msg), h("164b7a7bfcf819e2e395fbe73b56e0a387bd64222e831fd610270cd7ea2505549758bf75c05a994a6d034f65f8f0e6fdcaeab1a34d4a6b4b636e070a38bce737"));
        assert_eq!(
            hmac(MacHash::Sha256, key, msg),
            hmac_sha256(key, msg).to_vec()
        );
        assert_eq!(MacHash::parse(""), Some(MacHash::Sha256));
        assert_eq!(MacHash::parse("sha-1"), Some(MacHash::Sha1));
        assert_eq!(MacHash::parse("MD5"), None);
    }

    /// NIST SP 800-38A F.1.1, F.2.1 and F.5.1 (AES-128), two blocks each.
    #[test]
    fn ecb_cbc_ctr_known_answers() {
        let h = |s: &str| hex::decode(s).unwrap();
        let key = h("2b7e151628aed2a6abf7158809cf4f3c");
        let pt = h("6bc1bee22e409f96e93d7e117393172aae2d8a571e03ac9c9eb76fac45af8e51");
        let cases = [
            (
                RawMechanism::AesEcb,
                "",
                "3ad77bb40d7a3660a89ecaf32466ef97f5d3d58503b9699de785895a96fdbaaf",
            ),
            (
                RawMechanism::AesCbc,
                "000102030405060708090a0b0c0d0e0f",
                "7649abac8119b246cee98e9b12e9197d5086cb9b507219ee95db113a917678b2",
            ),
            (
                RawMechanism::AesCtr,
                "f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff",
                "874d6191b620e3261bef6864990db6ce9806f66b7970fdff8617187bb9fffdff",
            ),
        ];
        for (m, iv, ct) in cases {
            let iv = h(iv);
            let p = Params {
                iv: &iv,
                aad: &[],
                tag_len: 0,
            };
            assert_eq!(encrypt(m, &key, &p, &pt).unwrap(), h(ct), "{m:?}");
            assert_eq!(
                decrypt(m, &key, &p, &h(ct)).unwrap().as_slice(),
                pt.as_slice(),
                "{m:?}"
            );
            assert_eq!(encrypted_len(m, &p, pt.len()), pt.len());
        }
        // CTR takes any length; the block modes whole blocks only.
        let iv = [0u8; 16];
        let p = Params {
            iv: &iv,
            aad: &[],
            tag_len: 0,
        };
        assert_eq!(
            encrypt(RawMechanism::AesCtr, &key, &p, &pt[..5])
                .unwrap()
                .len(),
            5
        );
        for m in [RawMechanism::AesEcb, RawMechanism::AesCbc] {
            assert_eq!(encrypt(m, &key, &p, &pt[..5]), Err(RawError::DataLength(5)));
            assert_eq!(check_encrypt_len(m, 15), Err(RawError::DataLength(15)));
        }
        let short = [0u8; 8];
        let bad = Params {
            iv: &short,
            aad: &[],
            tag_len: 0,
        };
        assert!(matches!(
            encrypt(RawMechanism::AesCtr, &key, &bad, &pt),
            Err(RawError::Iv(_))
        ));
        assert!(matches!(
            encrypt(RawMechanism::AesCbc, &key, &bad, &pt),
            Err(RawError::Iv(_))
        ));
        // The counter carries across all 128 bits.
        let top = [0xffu8; 16];
        let p = Params {
            iv: &top,
            aad: &[],
            tag_len: 0,
        };
        let two = encrypt(RawMechanism::AesCtr, &key, &p, &[0u8; 32]).unwrap();
        let zero = [0u8; 16];
        let p0 = Params {
            iv: &zero,
            aad: &[],
            tag_len: 0,
        };
        assert_eq!(
            two[16..],
            encrypt(RawMechanism::AesCtr, &key, &p0, &[0u8; 16]).unwrap()[..]
        );
    }

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    const NO: Params<'static> = Params {
        iv: &[],
        aad: &[],
        tag_len: 16,
    };

    #[test]
    fn rfc3394_vector() {
        // RFC 3394 4.6: 256 bits of key data with a 256-bit KEK.
        let kek = hex("000102030405060708090A0B0C0D0E0F101112131415161718191A1B1C1D1E1F");
        let data = hex("00112233445566778899AABBCCDDEEFF000102030405060708090A0B0C0D0E0F");
        let want =
            hex("28C9F404C4B810F4CBCCB35CFB87F8263F5786E2D80ED326CBC7F0E71A99F43BFB988B9B7A02DD21");
        let w = encrypt(RawMechanism::AesKeyWrap, &kek, &NO, &data).unwrap();
        assert_eq!(w, want);
        assert_eq!(
            *decrypt(RawMechanism::AesKeyWrap, &kek, &NO, &w).unwrap(),
            data
        );
    }

    #[test]
    fn rfc5649_vector() {
        // RFC 5649 6: 7 octets of key data with a 192-bit KEK.
        let kek = hex("5840df6e29b02af1ab493b705bf16ea1ae8338f4dcc176a8");
        let w = encrypt(
            RawMechanism::AesKeyWrapPad,
            &kek,
            &NO,
            &hex("466f7250617369"),
        )
        .unwrap();
        assert_eq!(w, hex("afbeb0f07dfbf5419200f2ccb50bb24f"));
        let mut bad = w.clone();
        bad[3] ^= 1;
        assert_eq!(
            decrypt(RawMechanism::AesKeyWrapPad, &kek, &NO, &bad).unwrap_err(),
            RawError::Auth
        );
    }

    #[test]
    fn gcm_vector_and_truncated_tags() {
        // NIST GCM test case 16 (AES-256, 12-byte IV, 20 bytes of AAD).
        let key = hex("feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308");
        let iv = hex("cafebabefacedbaddecaf888");
        let aad = hex("feedfacedeadbeeffeedfacedeadbeefabaddad2");
        let pt = hex("d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a721c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39");
        let p = Params {
            iv: &iv,
            aad: &aad,
            tag_len: 16,
        };
        let ct = encrypt(RawMechanism::AesGcm, &key, &p, &pt).unwrap();
        assert_eq!(
            &ct[pt.len()..],
            &hex("76fc6ece0f4e1768cddf8853bb2d551b")[..]
        );
        for t in 12..=16 {
            let p = Params { tag_len: t, ..p };
            let ct = encrypt(RawMechanism::AesGcm, &key, &p, &pt).unwrap();
            assert_eq!(ct.len(), pt.len() + t);
            assert_eq!(encrypted_len(RawMechanism::AesGcm, &p, pt.len()), ct.len());
            assert_eq!(*decrypt(RawMechanism::AesGcm, &key, &p, &ct).unwrap(), pt);
            let wrong_iv = [0u8; 12];
            let q = Params { iv: &wrong_iv, ..p };
            assert_eq!(
                decrypt(RawMechanism::AesGcm, &key, &q, &ct).unwrap_err(),
                RawError::Auth
            );
        }
        // Short tags (4..=11 bytes) are verified too.
        for t in [4usize, 8, 11] {
            let p = Params { tag_len: t, ..p };
            let ct = encrypt(RawMechanism::AesGcm, &key, &p, &pt).unwrap();
            assert_eq!(ct.len(), pt.len() + t);
            assert_eq!(*decrypt(RawMechanism::AesGcm, &key, &p, &ct).unwrap(), pt);
            let mut bad = ct.clone();
            bad[0] ^= 1;
            assert_eq!(
                decrypt(RawMechanism::AesGcm, &key, &p, &bad).unwrap_err(),
                RawError::Auth
            );
            let mut bad = ct.clone();
            *bad.last_mut().unwrap() ^= 1;
            assert!(decrypt(RawMechanism::AesGcm, &key, &p, &bad).is_err());
        }
        for t in [3usize, 17] {
            let p = Params { tag_len: t, ..p };
            assert!(encrypt(RawMechanism::AesGcm, &key, &p, &pt).is_err());
        }
    }

    #[test]
    fn cbc_pad_roundtrip_and_errors() {
        let key = [7u8; 32];
        let iv = [9u8; 16];
        let p = Params {
            iv: &iv,
            aad: &[],
            tag_len: 0,
        };
        for n in [0usize, 1, 15, 16, 17, 100] {
            let pt = vec![0x5a; n];
            let ct = encrypt(RawMechanism::AesCbcPad, &key, &p, &pt).unwrap();
            assert_eq!(ct.len(), encrypted_len(RawMechanism::AesCbcPad, &p, n));
            assert_eq!(
                *decrypt(RawMechanism::AesCbcPad, &key, &p, &ct).unwrap(),
                pt
            );
        }
        assert!(decrypt(RawMechanism::AesCbcPad, &key, &p, &[0u8; 15]).is_err());
        assert!(encrypt(RawMechanism::AesCbcPad, &[0u8; 31], &p, b"x").is_err());
        let short = Params { iv: &iv[..8], ..p };
        assert!(encrypt(RawMechanism::AesCbcPad, &key, &short, b"x").is_err());
    }

    #[test]
    fn hmac_rfc4231_case2() {
        assert_eq!(
            hmac_sha256(b"Jefe", b"what do ya want for nothing?").to_vec(),
            hex("5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")
        );
        assert!(mac_eq(b"ab", b"ab") && !mac_eq(b"ab", b"ac") && !mac_eq(b"a", b"ab"));
    }
}
