//! Mechanisms: the list the module offers, their info, and a safe, owned
//! form of a caller's `CK_MECHANISM` (built by the FFI layer).

use cryptoki_sys::*;
use kms_client::raw::{Params, RawMechanism};

use crate::error::{Error, Result};

/// The vendor mechanism that produces the cluster's own versioned ciphertext
/// (KEY:ENCRYPT / KEY:DECRYPT, docs/formats.md): `CKM_VENDOR_DEFINED | 0x4B4D0001`
/// ("KM"). Its optional parameter is the associated data.
pub const CKM_KMS_CIPHERTEXT: CK_MECHANISM_TYPE = CKM_VENDOR_DEFINED | 0x4B4D_0001;

/// A mechanism with its parameters, owned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mech {
    AesKeyGen,
    GenericSecretKeyGen,
    AesGcm {
        iv: Vec<u8>,
        aad: Vec<u8>,
        tag_bits: CK_ULONG,
    },
    AesCbcPad {
        iv: Vec<u8>,
    },
    /// RFC 3394 (`CKM_AES_KEY_WRAP`), default IV only.
    AesKeyWrap,
    /// RFC 5649, as `CKM_AES_KEY_WRAP_PAD` (0x210A, SoftHSM2's number) or
    /// `CKM_AES_KEY_WRAP_KWP` (0x210B).
    AesKeyWrapPad(CK_MECHANISM_TYPE),
    Sha256Hmac,
    Sha256,
    KmsCiphertext {
        aad: Vec<u8>,
    },
}

impl Mech {
    /// The mechanism type.
    pub fn ty(&self) -> CK_MECHANISM_TYPE {
        match self {
            Mech::AesKeyGen => CKM_AES_KEY_GEN,
            Mech::GenericSecretKeyGen => CKM_GENERIC_SECRET_KEY_GEN,
            Mech::AesGcm { .. } => CKM_AES_GCM,
            Mech::AesCbcPad { .. } => CKM_AES_CBC_PAD,
            Mech::AesKeyWrap => CKM_AES_KEY_WRAP,
            Mech::AesKeyWrapPad(t) => *t,
            Mech::Sha256Hmac => CKM_SHA256_HMAC,
            Mech::Sha256 => CKM_SHA256,
            Mech::KmsCiphertext { .. } => CKM_KMS_CIPHERTEXT,
        }
    }

    /// The raw mechanism and its parameters, for the cipher mechanisms.
    pub fn raw(&self) -> Option<(RawMechanism, Params<'_>)> {
        let none = Params {
            iv: &[],
            aad: &[],
            tag_len: 16,
        };
        Some(match self {
            Mech::AesGcm { iv, aad, tag_bits } => (
                RawMechanism::AesGcm,
                Params {
                    iv,
                    aad,
                    tag_len: (*tag_bits / 8) as usize,
                },
            ),
            Mech::AesCbcPad { iv } => (RawMechanism::AesCbcPad, Params { iv, ..none }),
            Mech::AesKeyWrap => (RawMechanism::AesKeyWrap, none),
            Mech::AesKeyWrapPad(_) => (RawMechanism::AesKeyWrapPad, none),
            _ => return None,
        })
    }

    /// Checks the parameters of a cipher mechanism (at `*Init`).
    pub fn check_params(&self) -> Result<()> {
        let bad = |why: String| {
            Err(Error::invalid(
                CKR_MECHANISM_PARAM_INVALID,
                "mechanism",
                why,
            ))
        };
        match self {
            Mech::AesGcm { iv, tag_bits, .. } => {
                if iv.len() != 12 {
                    return bad(format!("AES-GCM takes a 12-byte IV, not {}", iv.len()));
                }
                if !(32..=128).contains(tag_bits) || !tag_bits.is_multiple_of(8) {
                    return bad(format!(
                        "AES-GCM tag length {tag_bits} bits: use a multiple of 8 from 32 to 128 \
                         (96 or more recommended)"
                    ));
                }
                Ok(())
            }
            Mech::AesCbcPad { iv } if iv.len() != 16 => {
                bad(format!("AES-CBC-PAD takes a 16-byte IV, not {}", iv.len()))
            }
            _ => Ok(()),
        }
    }
}

/// What a mechanism can do (`CK_MECHANISM_INFO`): min and max key size
/// (bytes, bits for generic secret generation), flags.
pub fn info(ty: CK_MECHANISM_TYPE) -> Option<(CK_ULONG, CK_ULONG, CK_FLAGS)> {
    const CIPHER: CK_FLAGS = CKF_ENCRYPT | CKF_DECRYPT | CKF_WRAP | CKF_UNWRAP;
    Some(match ty {
        CKM_AES_KEY_GEN => (16, 32, CKF_GENERATE),
        // In bits for generic secrets (PKCS#11 2.40, 2.2.1); bytes elsewhere.
        CKM_GENERIC_SECRET_KEY_GEN => (8, 4096, CKF_GENERATE),
        CKM_AES_GCM | CKM_AES_CBC_PAD => (16, 32, CIPHER),
        CKM_AES_KEY_WRAP | CKM_AES_KEY_WRAP_PAD | CKM_AES_KEY_WRAP_KWP => {
            (16, 32, CKF_WRAP | CKF_UNWRAP | CKF_ENCRYPT | CKF_DECRYPT)
        }
        CKM_SHA256_HMAC => (1, 512, CKF_SIGN | CKF_VERIFY),
        CKM_SHA256 => (0, 0, CKF_DIGEST),
        CKM_KMS_CIPHERTEXT => (32, 32, CKF_ENCRYPT | CKF_DECRYPT),
        _ => return None,
    })
}

/// Every mechanism the module offers, in `C_GetMechanismList` order.
pub const LIST: &[CK_MECHANISM_TYPE] = &[
    CKM_AES_KEY_GEN,
    CKM_GENERIC_SECRET_KEY_GEN,
    CKM_AES_GCM,
    CKM_AES_CBC_PAD,
    CKM_AES_KEY_WRAP,
    CKM_AES_KEY_WRAP_PAD,
    CKM_AES_KEY_WRAP_KWP,
    CKM_SHA256_HMAC,
    CKM_SHA256,
    CKM_KMS_CIPHERTEXT,
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_listed_mechanism_has_info() {
        for &m in LIST {
            assert!(info(m).is_some(), "{m:#x}");
        }
        assert!(info(CKM_RSA_PKCS).is_none());
        assert_eq!(CKM_KMS_CIPHERTEXT, 0xCB4D_0001);
    }

    #[test]
    fn gcm_params() {
        let g = |iv: usize, bits| Mech::AesGcm {
            iv: vec![0; iv],
            aad: vec![],
            tag_bits: bits,
        };
        assert!(g(12, 128).check_params().is_ok());
        assert!(g(12, 96).check_params().is_ok());
        assert!(g(16, 128).check_params().is_err());
        assert!(g(12, 64).check_params().is_ok());
        assert!(g(12, 24).check_params().is_err());
        assert!(g(12, 136).check_params().is_err());
        assert!(g(12, 100).check_params().is_err());
        assert!(Mech::AesCbcPad { iv: vec![0; 8] }.check_params().is_err());
    }
}
