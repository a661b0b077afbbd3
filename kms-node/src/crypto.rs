//! Cryptography of the KMS: key versions, the versioned ciphertext format,
//! data keys, MACs, and sealing records at rest under the root key.
//!
//! # Ciphertext format v1 (see docs/formats.md)
//!
//! ```text
//! offset size  field
//! 0      1     format version, 0x01
//! 1      1     algorithm: 0x01 AES-256-GCM, 0x02 ChaCha20-Poly1305
//! 2      4     key version, u32 big-endian
//! 6      16    KDF salt (random)
//! 22     12    AEAD nonce (random)
//! 34     n+16  AEAD ciphertext and tag
//! ```
//!
//! The AEAD key is derived per message: `K_m = HMAC-SHA256(K_v, "kms/v1/msg" || salt)`,
//! so a key version never encrypts two messages under the same AEAD key unless
//! two random 128-bit salts collide (and then the 96-bit nonces must collide
//! too). This keeps a key version safe far past 2^32 encryptions, where
//! AES-GCM with one key and random nonces is not. The associated data of the
//! AEAD is the 34-byte header followed by the caller's associated data, so the
//! header (version, algorithm) cannot be changed without detection.

use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::Aes256Gcm;
use chacha20poly1305::ChaCha20Poly1305;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;
use zeroize::Zeroizing;

type HmacSha256 = Hmac<Sha256>;

pub const FORMAT_V1: u8 = 0x01;
pub const SALT_LEN: usize = 16;
pub const NONCE_LEN: usize = 12;
pub const TAG_LEN: usize = 16;
pub const HEADER_LEN: usize = 2 + 4 + SALT_LEN + NONCE_LEN;
/// Bytes a ciphertext adds to its plaintext.
pub const OVERHEAD: usize = HEADER_LEN + TAG_LEN;
/// Largest data key GENERATE returns.
pub const MAX_DATA_KEY: u32 = 1024;
/// Data key length when the request gives none.
pub const DEFAULT_DATA_KEY: u32 = 32;

const KDF_MSG: &[u8] = b"kms/v1/msg";
const KDF_MAC: &[u8] = b"kms/v1/mac";
const KDF_RAW: &[u8] = b"kms/v1/pkcs11";

/// The type of a key: its algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum KeyType {
    Aes256,
    ChaCha20,
}

impl KeyType {
    /// The name used on the wire (`AES256`, `ChaCha20`), as kms-go spells it.
    pub fn name(self) -> &'static str {
        match self {
            KeyType::Aes256 => "AES256",
            KeyType::ChaCha20 => "ChaCha20",
        }
    }

    /// Parses a wire or CLI name; the empty string picks AES256.
    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "" | "aes256" | "aes-256" | "aes256-gcm" => Some(KeyType::Aes256),
            "chacha20" | "chacha20-poly1305" => Some(KeyType::ChaCha20),
            _ => None,
        }
    }

    fn alg_id(self) -> u8 {
        match self {
            KeyType::Aes256 => 0x01,
            KeyType::ChaCha20 => 0x02,
        }
    }
}

/// Why a ciphertext cannot be decrypted. Messages are safe to return to clients.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecryptError {
    #[error("invalid ciphertext: {0} bytes is shorter than the minimum of {OVERHEAD}")]
    TooShort(usize),
    #[error("invalid ciphertext: unknown format version {0:#04x}")]
    Format(u8),
    #[error("invalid ciphertext: it was made with another key type")]
    Algorithm,
    /// Exactly kms-go's `ErrDecrypt` message: clients compare it. The cause
    /// (wrong key, wrong associated data, modified ciphertext) cannot be told apart.
    #[error("invalid ciphertext")]
    Auth,
}

/// 32 bytes of fresh randomness, zeroized on drop.
pub fn random_key() -> Zeroizing<[u8; 32]> {
    let mut k = Zeroizing::new([0u8; 32]);
    rand::rngs::OsRng.fill_bytes(k.as_mut());
    k
}

/// Reads the key version of a v1 ciphertext without decrypting it.
pub fn ciphertext_version(ct: &[u8]) -> Result<u32, DecryptError> {
    if ct.len() < OVERHEAD {
        return Err(DecryptError::TooShort(ct.len()));
    }
    if ct[0] != FORMAT_V1 {
        return Err(DecryptError::Format(ct[0]));
    }
    Ok(u32::from_be_bytes([ct[2], ct[3], ct[4], ct[5]]))
}

/// The secret of one key version and its derived MAC key, both zeroized on drop.
pub struct KeyMaterial {
    key_type: KeyType,
    version: u32,
    /// The version's secret: the key of the per-message KDF.
    kdf: Zeroizing<[u8; 32]>,
    /// `HMAC-SHA256(secret, "kms/v1/mac")`: the MAC key.
    mac: Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for KeyMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyMaterial")
            .field("type", &self.key_type)
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

impl KeyMaterial {
    pub fn new(key_type: KeyType, version: u32, secret: &[u8; 32]) -> Self {
        let mac = hmac(secret, &[KDF_MAC]);
        Self {
            key_type,
            version,
            kdf: Zeroizing::new(*secret),
            mac,
        }
    }

    pub fn key_type(&self) -> KeyType {
        self.key_type
    }

    fn message_key(&self, salt: &[u8]) -> Zeroizing<[u8; 32]> {
        hmac(self.kdf.as_ref(), &[KDF_MSG, salt])
    }

    /// Encrypts `plaintext` bound to `ad` into a v1 ciphertext.
    pub fn encrypt(&self, plaintext: &[u8], ad: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(OVERHEAD + plaintext.len());
        out.push(FORMAT_V1);
        out.push(self.key_type.alg_id());
        out.extend_from_slice(&self.version.to_be_bytes());
        let mut rnd = [0u8; SALT_LEN + NONCE_LEN];
        // Salt and nonce need uniqueness, not secrecy from the OS: a per-thread
        // CSPRNG (ChaCha12, reseeded from the OS every 64 KiB) saves a
        // getrandom syscall per message, a third of the server's CPU when
        // batching (see BENCHMARKS.md).
        rand::thread_rng().fill_bytes(&mut rnd);
        out.extend_from_slice(&rnd);
        out.extend_from_slice(plaintext);
        let (header, body) = out.split_at_mut(HEADER_LEN);
        let salt = &header[6..6 + SALT_LEN];
        let nonce = &header[6 + SALT_LEN..];
        let key = self.message_key(salt);
        let tag = seal_in_place(self.key_type, &key, nonce, header, ad, body);
        out.extend_from_slice(&tag);
        out
    }

    /// Decrypts a v1 ciphertext made by [`KeyMaterial::encrypt`] with this key version.
    pub fn decrypt(&self, ct: &[u8], ad: &[u8]) -> Result<Zeroizing<Vec<u8>>, DecryptError> {
        let v = ciphertext_version(ct)?;
        if ct[1] != self.key_type.alg_id() || v != self.version {
            return Err(if v != self.version {
                DecryptError::Auth
            } else {
                DecryptError::Algorithm
            });
        }
        let (header, rest) = ct.split_at(HEADER_LEN);
        let (body, tag) = rest.split_at(rest.len() - TAG_LEN);
        let salt = &header[6..6 + SALT_LEN];
        let nonce = &header[6 + SALT_LEN..];
        let key = self.message_key(salt);
        let mut buf = Zeroizing::new(body.to_vec());
        open_in_place(self.key_type, &key, nonce, header, ad, &mut buf, tag)?;
        Ok(buf)
    }

    /// The AES-256 key of the PKCS#11 raw mechanisms (KEY:RAWENCRYPT,
    /// KEY:RAWDECRYPT): `HMAC-SHA256(secret, "kms/v1/pkcs11")`, separate from
    /// the message and MAC keys so that no raw mechanism can be turned
    /// against the versioned ciphertexts.
    pub fn raw_key(&self) -> Zeroizing<[u8; 32]> {
        hmac(self.kdf.as_ref(), &[KDF_RAW])
    }

    /// HMAC-SHA256 of `msg` under this version's MAC key.
    pub fn mac(&self, msg: &[u8]) -> [u8; 32] {
        *hmac(self.mac.as_ref(), &[msg])
    }

    /// HMAC of `msg` with hash `h` under the same MAC key as [`Self::mac`]
    /// (SHA-256 gives the same bytes).
    pub fn mac_with(&self, h: kms_client::raw::MacHash, msg: &[u8]) -> Vec<u8> {
        kms_client::raw::hmac(h, self.mac.as_ref(), msg)
    }
}

/// HMAC-SHA256 of the concatenated `parts`. The HMAC state (key-equivalent)
/// lives on the stack for the call only; every long-lived key is a
/// `Zeroizing` array.
fn hmac(key: &[u8], parts: &[&[u8]]) -> Zeroizing<[u8; 32]> {
    let mut m = <HmacSha256 as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    for p in parts {
        m.update(p);
    }
    Zeroizing::new(m.finalize().into_bytes().into())
}

fn aad_cat(header: &[u8], ad: &[u8]) -> Vec<u8> {
    let mut a = Vec::with_capacity(header.len() + ad.len());
    a.extend_from_slice(header);
    a.extend_from_slice(ad);
    a
}

fn seal_in_place(
    t: KeyType,
    key: &[u8; 32],
    nonce: &[u8],
    header: &[u8],
    ad: &[u8],
    buf: &mut [u8],
) -> [u8; TAG_LEN] {
    let aad = aad_cat(header, ad);
    let tag = match t {
        KeyType::Aes256 => Aes256Gcm::new_from_slice(key)
            .expect("32-byte key")
            .encrypt_in_place_detached(nonce.into(), &aad, buf),
        KeyType::ChaCha20 => ChaCha20Poly1305::new_from_slice(key)
            .expect("32-byte key")
            .encrypt_in_place_detached(nonce.into(), &aad, buf),
    }
    .expect("buffer sizes are far below the AEAD limits");
    tag.into()
}

fn open_in_place(
    t: KeyType,
    key: &[u8; 32],
    nonce: &[u8],
    header: &[u8],
    ad: &[u8],
    buf: &mut [u8],
    tag: &[u8],
) -> Result<(), DecryptError> {
    let aad = aad_cat(header, ad);
    match t {
        KeyType::Aes256 => Aes256Gcm::new_from_slice(key)
            .expect("32-byte key")
            .decrypt_in_place_detached(nonce.into(), &aad, buf, tag.into()),
        KeyType::ChaCha20 => ChaCha20Poly1305::new_from_slice(key)
            .expect("32-byte key")
            .decrypt_in_place_detached(nonce.into(), &aad, buf, tag.into()),
    }
    .map_err(|_| DecryptError::Auth)
}

/// The node's root key: seals every stored record (version 0, AES-256-GCM, with
/// the record's own key as associated data), in the v1 format above.
pub struct RootKey(KeyMaterial);

impl RootKey {
    pub fn new(secret: &[u8; 32]) -> Self {
        Self(KeyMaterial::new(KeyType::Aes256, 0, secret))
    }

    /// Seals `value` stored under `record_key`.
    pub fn seal(&self, record_key: &[u8], value: &[u8]) -> Vec<u8> {
        self.0.encrypt(value, record_key)
    }

    /// Unseals a value stored under `record_key`.
    pub fn unseal(
        &self,
        record_key: &[u8],
        sealed: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, DecryptError> {
        self.0.decrypt(sealed, record_key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn km(t: KeyType) -> KeyMaterial {
        KeyMaterial::new(t, 7, &[0x42; 32])
    }

    #[test]
    fn roundtrip_both_types() {
        for t in [KeyType::Aes256, KeyType::ChaCha20] {
            let k = km(t);
            for len in [0, 1, 32, 1000] {
                let p = vec![0xab; len];
                let c = k.encrypt(&p, b"ad");
                assert_eq!(c.len(), len + OVERHEAD);
                assert_eq!(ciphertext_version(&c).unwrap(), 7);
                assert_eq!(k.decrypt(&c, b"ad").unwrap().as_slice(), p.as_slice());
                assert_eq!(k.decrypt(&c, b"other"), Err(DecryptError::Auth));
            }
        }
    }

    #[test]
    fn every_tampering_fails() {
        let k = km(KeyType::Aes256);
        let c = k.encrypt(b"secret data key", b"ad");
        for i in 0..c.len() {
            let mut t = c.clone();
            t[i] ^= 0x80;
            assert!(k.decrypt(&t, b"ad").is_err(), "byte {i}");
        }
        for n in 0..c.len() {
            assert!(k.decrypt(&c[..n], b"ad").is_err(), "len {n}");
        }
    }

    #[test]
    fn other_key_type_or_version_fails() {
        let a = km(KeyType::Aes256);
        let c = km(KeyType::ChaCha20).encrypt(b"x", b"");
        assert_eq!(a.decrypt(&c, b""), Err(DecryptError::Algorithm));
        let other = KeyMaterial::new(KeyType::Aes256, 8, &[0x42; 32]);
        assert_eq!(
            other.decrypt(&a.encrypt(b"x", b""), b""),
            Err(DecryptError::Auth)
        );
    }

    #[test]
    fn mac_is_deterministic_and_keyed() {
        let a = km(KeyType::Aes256);
        assert_eq!(a.mac(b"m"), a.mac(b"m"));
        assert_ne!(a.mac(b"m"), a.mac(b"n"));
        assert_ne!(
            a.mac(b"m"),
            KeyMaterial::new(KeyType::Aes256, 7, &[1; 32]).mac(b"m")
        );
    }

    /// The test vectors of docs/formats.md: fixed key, salt and nonce.
    #[test]
    fn vectors() {
        assert!(!crate::vectors::CIPHERTEXT_V1.is_empty() && !crate::vectors::MAC_V1.is_empty());
        for v in crate::vectors::CIPHERTEXT_V1 {
            let k = KeyMaterial::new(
                KeyType::parse(v.key_type).unwrap(),
                v.version,
                &hex32(v.key),
            );
            let ct = hex::decode(v.ciphertext).unwrap();
            let pt = k.decrypt(&ct, v.associated_data.as_bytes()).unwrap();
            assert_eq!(hex::encode(pt.as_slice()), v.plaintext);
        }
        for v in crate::vectors::MAC_V1 {
            let k = KeyMaterial::new(KeyType::Aes256, 1, &hex32(v.key));
            assert_eq!(hex::encode(k.mac(v.message.as_bytes())), v.mac);
        }
    }

    fn hex32(s: &str) -> [u8; 32] {
        hex::decode(s).unwrap().try_into().unwrap()
    }

    /// Prints fresh vectors (run with --ignored --nocapture to regenerate docs).
    #[test]
    #[ignore]
    fn print_vectors() {
        for t in [KeyType::Aes256, KeyType::ChaCha20] {
            let k = KeyMaterial::new(t, 1, &[0x01; 32]);
            let c = k.encrypt(b"hello, world", b"context");
            println!("{} {}", t.name(), hex::encode(c));
        }
        println!(
            "mac {}",
            hex::encode(KeyMaterial::new(KeyType::Aes256, 1, &[0x01; 32]).mac(b"message"))
        );
    }
}
