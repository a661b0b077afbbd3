//! The built-in software HSM: a 256-bit key given as `hsm:aes256:<base64>`.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::{Error, Hsm};

const PREFIX: &str = "hsm:aes256:";
/// Version byte of the sealed format: `0x01 | nonce (12) | AES-256-GCM ciphertext and tag (16)`.
const FORMAT_V1: u8 = 0x01;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;

/// The software HSM. Its key lives in process memory (zeroized on drop); the
/// sealing and derivation keys are separate HMAC-SHA256 derivations of it, so
/// one use can never be confused with the other.
pub struct SoftHsm {
    seal_key: Zeroizing<[u8; 32]>,
    derive_key: Zeroizing<[u8; 32]>,
    fingerprint: String,
}

impl std::fmt::Debug for SoftHsm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SoftHsm")
            .field("name", &self.name())
            .finish_non_exhaustive()
    }
}

fn hmac(key: &[u8], msg: &[u8]) -> Zeroizing<[u8; 32]> {
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    m.update(msg);
    Zeroizing::new(m.finalize().into_bytes().into())
}

impl SoftHsm {
    /// Parses `hsm:aes256:<standard base64 of 32 bytes>`.
    pub fn from_key_str(s: &str) -> Result<Self, Error> {
        let s = s.trim();
        let Some(b64) = s.strip_prefix(PREFIX) else {
            return Err(Error::Config(format!(
                "KMS_HSM_KEY must start with '{PREFIX}' (generate one with `kms new-hsm-key`)"
            )));
        };
        let raw = Zeroizing::new(
            base64::engine::general_purpose::STANDARD
                .decode(b64)
                .map_err(|_| Error::Config("KMS_HSM_KEY: the key is not valid base64".into()))?,
        );
        let key: Zeroizing<[u8; 32]> = Zeroizing::new(raw.as_slice().try_into().map_err(|_| {
            Error::Config(format!(
                "KMS_HSM_KEY: the key must be 32 bytes, not {}",
                raw.len()
            ))
        })?);
        Ok(Self::from_key(&key))
    }

    /// Builds a software HSM from raw key bytes.
    pub fn from_key(key: &[u8; 32]) -> Self {
        let fp = hmac(key, b"kms/v1/soft-hsm/fingerprint");
        Self {
            seal_key: hmac(key, b"kms/v1/soft-hsm/seal"),
            derive_key: hmac(key, b"kms/v1/soft-hsm/derive"),
            fingerprint: format!("soft:{}", hex8(&fp[..8])),
        }
    }

    /// Generates a new random key, formatted as `hsm:aes256:...`.
    pub fn generate_key_str() -> Zeroizing<String> {
        let mut k = Zeroizing::new([0u8; 32]);
        rand::rngs::OsRng.fill_bytes(k.as_mut());
        Zeroizing::new(format!(
            "{PREFIX}{}",
            base64::engine::general_purpose::STANDARD.encode(k.as_ref())
        ))
    }

    fn cipher(&self) -> Aes256Gcm {
        Aes256Gcm::new_from_slice(self.seal_key.as_ref()).expect("32-byte key")
    }
}

fn hex8(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

impl Hsm for SoftHsm {
    fn name(&self) -> String {
        self.fingerprint.clone()
    }

    fn seal(&self, plaintext: &[u8], context: &[u8]) -> Result<Vec<u8>, Error> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let ct = self
            .cipher()
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: context,
                },
            )
            .map_err(|_| Error::Unavailable("AES-GCM encryption failed".into()))?;
        let mut out = Vec::with_capacity(1 + NONCE_LEN + ct.len());
        out.push(FORMAT_V1);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        Ok(out)
    }

    fn unseal(&self, sealed: &[u8], context: &[u8]) -> Result<Zeroizing<Vec<u8>>, Error> {
        if sealed.len() < 1 + NONCE_LEN + TAG_LEN {
            return Err(Error::Malformed("too short"));
        }
        if sealed[0] != FORMAT_V1 {
            return Err(Error::Malformed("unknown format version"));
        }
        let (nonce, ct) = sealed[1..].split_at(NONCE_LEN);
        self.cipher()
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ct,
                    aad: context,
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| Error::Unseal)
    }

    fn derive(&self, label: &str) -> Result<Zeroizing<[u8; 32]>, Error> {
        Ok(hmac(self.derive_key.as_ref(), label.as_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEED_KEY: &str = "hsm:aes256:vZ0DeGvwlb/KHwIfi8+c7/8ZHjweHKVL0WNrRc3+FxQ=";

    #[test]
    fn conformance() {
        let a = SoftHsm::from_key_str(SEED_KEY).unwrap();
        let a2 = SoftHsm::from_key_str(SEED_KEY).unwrap();
        let b = SoftHsm::from_key_str(&SoftHsm::generate_key_str()).unwrap();
        crate::conformance::run(&a, &a2, &b);
    }

    #[test]
    fn bad_keys_name_the_setting() {
        for bad in [
            "",
            "aes256:vZ0DeGvwlb/KHwIfi8+c7/8ZHjweHKVL0WNrRc3+FxQ=",
            "hsm:aes256:not base64!",
            "hsm:aes256:AAAA",
        ] {
            let err = SoftHsm::from_key_str(bad).unwrap_err().to_string();
            assert!(err.contains("KMS_HSM_KEY"), "{bad:?}: {err}");
        }
    }

    #[test]
    fn generated_keys_parse() {
        let k = SoftHsm::generate_key_str();
        assert!(k.starts_with(PREFIX));
        SoftHsm::from_key_str(&k).unwrap();
    }

    /// Fixes the derivation so that a change to it (which would change every
    /// cluster's root identity) cannot go unnoticed. The values were computed
    /// independently (Python hmac/hashlib) from docs/formats.md.
    #[test]
    fn derivation_vector() {
        use base64::Engine;
        let a = SoftHsm::from_key_str(SEED_KEY).unwrap();
        assert_eq!(a.name(), "soft:0ac5dc4d7075d42a");
        let d = a.derive(crate::labels::ROOT_API_KEY).unwrap();
        assert_eq!(
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(d.as_ref()),
            "NOqFfHRIzUH8ni4Z_NydDWpqfxIZWpdHV1ceWscf7XY"
        );
    }
}
