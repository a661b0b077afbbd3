//! Mechanisms: the list the module offers, their info, and a safe, owned
//! form of a caller's `CK_MECHANISM` (built by the FFI layer).

use cryptoki_sys::*;
use kms_client::raw::{MacHash, Params, RawMechanism};

use crate::asym::HashAlg;
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
    /// `CKM_AES_CBC` without padding (input a multiple of 16 bytes).
    AesCbc {
        iv: Vec<u8>,
    },
    /// `CKM_AES_ECB` (input a multiple of 16 bytes).
    AesEcb,
    /// `CKM_AES_CTR` (`CK_AES_CTR_PARAMS`): the initial counter block and
    /// how many of its low bits are the counter (1..=128).
    AesCtr {
        cb: [u8; 16],
        bits: CK_ULONG,
    },
    /// RFC 3394 (`CKM_AES_KEY_WRAP`), default IV only.
    AesKeyWrap,
    /// RFC 5649, as `CKM_AES_KEY_WRAP_PAD` (0x210A, SoftHSM2's number) or
    /// `CKM_AES_KEY_WRAP_KWP` (0x210B).
    AesKeyWrapPad(CK_MECHANISM_TYPE),
    /// `CKM_SHA_1_HMAC`, `CKM_SHA256_HMAC`, `CKM_SHA384_HMAC`, `CKM_SHA512_HMAC`.
    Hmac(MacHash),
    /// `CKM_SHA_1`, `CKM_SHA256`, `CKM_SHA384`, `CKM_SHA512`.
    Digest(HashAlg),
    KmsCiphertext {
        aad: Vec<u8>,
    },
    EcKeyPairGen,
    EcEdwardsKeyPairGen,
    RsaKeyPairGen,
    MlDsaKeyPairGen,
    /// `CKM_ECDSA` (`None`: the input is a digest) or `CKM_ECDSA_SHA*`.
    Ecdsa(Option<HashAlg>),
    /// `CKM_EDDSA`, pure Ed25519 (no parameters, or phFlag false and no
    /// context).
    EdDsa,
    /// `CKM_RSA_PKCS` (`None`: the input is a DigestInfo, padded as is) or
    /// `CKM_SHA*_RSA_PKCS`.
    RsaPkcs(Option<HashAlg>),
    /// `CKM_RSA_PKCS_PSS` (`hash` `None`: the input is a digest of
    /// `params.hash`) or `CKM_SHA*_RSA_PKCS_PSS`.
    RsaPss {
        hash: Option<HashAlg>,
        params: PssParams,
    },
    /// `CKM_ML_DSA` (pure), with the optional `CK_SIGN_ADDITIONAL_CONTEXT`.
    MlDsa {
        deterministic: bool,
        context: Vec<u8>,
    },
    /// `CKM_RSA_PKCS_OAEP` (encryption with a public key, here; decryption).
    RsaOaep {
        hash: HashAlg,
        mgf: HashAlg,
        label: Vec<u8>,
    },
}

/// `CK_RSA_PKCS_PSS_PARAMS`, read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PssParams {
    pub hash: HashAlg,
    pub mgf: HashAlg,
    pub salt: usize,
}

impl Mech {
    /// The mechanism type.
    pub fn ty(&self) -> CK_MECHANISM_TYPE {
        match self {
            Mech::AesKeyGen => CKM_AES_KEY_GEN,
            Mech::GenericSecretKeyGen => CKM_GENERIC_SECRET_KEY_GEN,
            Mech::AesGcm { .. } => CKM_AES_GCM,
            Mech::AesCbcPad { .. } => CKM_AES_CBC_PAD,
            Mech::AesCbc { .. } => CKM_AES_CBC,
            Mech::AesEcb => CKM_AES_ECB,
            Mech::AesCtr { .. } => CKM_AES_CTR,
            Mech::AesKeyWrap => CKM_AES_KEY_WRAP,
            Mech::AesKeyWrapPad(t) => *t,
            Mech::Hmac(h) => match h {
                MacHash::Sha1 => CKM_SHA_1_HMAC,
                MacHash::Sha256 => CKM_SHA256_HMAC,
                MacHash::Sha384 => CKM_SHA384_HMAC,
                MacHash::Sha512 => CKM_SHA512_HMAC,
            },
            Mech::Digest(h) => match h {
                HashAlg::Sha1 => CKM_SHA_1,
                HashAlg::Sha224 => CKM_SHA224,
                HashAlg::Sha256 => CKM_SHA256,
                HashAlg::Sha384 => CKM_SHA384,
                HashAlg::Sha512 => CKM_SHA512,
            },
            Mech::KmsCiphertext { .. } => CKM_KMS_CIPHERTEXT,
            Mech::EcKeyPairGen => CKM_EC_KEY_PAIR_GEN,
            Mech::EcEdwardsKeyPairGen => CKM_EC_EDWARDS_KEY_PAIR_GEN,
            Mech::RsaKeyPairGen => CKM_RSA_PKCS_KEY_PAIR_GEN,
            Mech::MlDsaKeyPairGen => CKM_ML_DSA_KEY_PAIR_GEN,
            Mech::Ecdsa(h) => match h {
                None => CKM_ECDSA,
                Some(HashAlg::Sha384) => CKM_ECDSA_SHA384,
                Some(HashAlg::Sha512) => CKM_ECDSA_SHA512,
                Some(HashAlg::Sha224) => CKM_ECDSA_SHA224,
                Some(_) => CKM_ECDSA_SHA256,
            },
            Mech::EdDsa => CKM_EDDSA,
            Mech::RsaPkcs(h) => match h {
                None => CKM_RSA_PKCS,
                Some(HashAlg::Sha384) => CKM_SHA384_RSA_PKCS,
                Some(HashAlg::Sha512) => CKM_SHA512_RSA_PKCS,
                Some(HashAlg::Sha224) => CKM_SHA224_RSA_PKCS,
                Some(_) => CKM_SHA256_RSA_PKCS,
            },
            Mech::RsaPss { hash, .. } => match hash {
                None => CKM_RSA_PKCS_PSS,
                Some(HashAlg::Sha384) => CKM_SHA384_RSA_PKCS_PSS,
                Some(HashAlg::Sha512) => CKM_SHA512_RSA_PKCS_PSS,
                Some(HashAlg::Sha224) => CKM_SHA224_RSA_PKCS_PSS,
                Some(_) => CKM_SHA256_RSA_PKCS_PSS,
            },
            Mech::MlDsa { .. } => CKM_ML_DSA,
            Mech::RsaOaep { .. } => CKM_RSA_PKCS_OAEP,
        }
    }

    /// The key type of an asymmetric signature or decryption mechanism.
    pub fn asym_key_type(&self) -> Option<CK_KEY_TYPE> {
        Some(match self {
            Mech::Ecdsa(_) => CKK_EC,
            Mech::EdDsa => CKK_EC_EDWARDS,
            Mech::RsaPkcs(_) | Mech::RsaPss { .. } | Mech::RsaOaep { .. } => CKK_RSA,
            Mech::MlDsa { .. } => CKK_ML_DSA,
            _ => return None,
        })
    }

    /// Whether this is an asymmetric signature mechanism.
    pub fn is_asym_sign(&self) -> bool {
        self.asym_key_type().is_some() && !matches!(self, Mech::RsaOaep { .. })
    }

    /// The hash a signature mechanism computes in the module over the
    /// message (`CKM_SHA*_…`, `CKM_ECDSA_SHA*`).
    pub fn sign_hash(&self) -> Option<HashAlg> {
        match self {
            Mech::Ecdsa(h) | Mech::RsaPkcs(h) | Mech::RsaPss { hash: h, .. } => *h,
            _ => None,
        }
    }

    /// Whether `C_WrapKey` and `C_UnwrapKey` take this mechanism (the raw
    /// block modes do not: they neither pad nor check integrity).
    pub fn wraps(&self) -> bool {
        matches!(
            self,
            Mech::AesGcm { .. }
                | Mech::AesCbcPad { .. }
                | Mech::AesKeyWrap
                | Mech::AesKeyWrapPad(_)
        )
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
            Mech::AesCbc { iv } => (RawMechanism::AesCbc, Params { iv, ..none }),
            Mech::AesEcb => (RawMechanism::AesEcb, none),
            Mech::AesCtr { cb, .. } => (RawMechanism::AesCtr, Params { iv: cb, ..none }),
            Mech::AesKeyWrap => (RawMechanism::AesKeyWrap, none),
            Mech::AesKeyWrapPad(_) => (RawMechanism::AesKeyWrapPad, none),
            _ => return None,
        })
    }

    /// AES-CTR: the number of 16-byte blocks that may still be processed
    /// before the counter (the low `bits` bits of the counter block) would
    /// wrap, `None` for no limit that matters (more than `u64::MAX`).
    pub fn ctr_blocks_left(&self) -> Option<u64> {
        match self {
            Mech::AesCtr { cb, bits } if *bits < 64 => {
                let counter = u128::from_be_bytes(*cb) & ((1u128 << *bits) - 1);
                Some(((1u128 << *bits) - counter) as u64)
            }
            _ => None,
        }
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
            Mech::AesCbcPad { iv } | Mech::AesCbc { iv } if iv.len() != 16 => {
                bad(format!("AES-CBC takes a 16-byte IV, not {}", iv.len()))
            }
            Mech::AesCtr { bits, .. } if !(1..=128).contains(bits) => {
                bad(format!("AES-CTR counter bits {bits}: use 1 to 128"))
            }
            _ => Ok(()),
        }
    }
}

/// What a mechanism can do (`CK_MECHANISM_INFO`): min and max key size
/// (bytes, bits for generic secret generation), flags.
pub fn info(ty: CK_MECHANISM_TYPE) -> Option<(CK_ULONG, CK_ULONG, CK_FLAGS)> {
    const CIPHER: CK_FLAGS = CKF_ENCRYPT | CKF_DECRYPT | CKF_WRAP | CKF_UNWRAP;
    const EC: CK_FLAGS = CKF_EC_F_P | CKF_EC_OID | CKF_EC_UNCOMPRESS;
    Some(match ty {
        CKM_AES_KEY_GEN => (16, 32, CKF_GENERATE),
        // In bits for generic secrets (PKCS#11 2.40, 2.2.1); bytes elsewhere.
        CKM_GENERIC_SECRET_KEY_GEN => (8, 4096, CKF_GENERATE),
        CKM_AES_GCM | CKM_AES_CBC_PAD => (16, 32, CIPHER),
        // Raw block modes: encrypt and decrypt only (wrapping a key needs
        // a padding or an integrity check the module does not add).
        CKM_AES_ECB | CKM_AES_CBC | CKM_AES_CTR => (16, 32, CKF_ENCRYPT | CKF_DECRYPT),
        CKM_AES_KEY_WRAP | CKM_AES_KEY_WRAP_PAD | CKM_AES_KEY_WRAP_KWP => {
            (16, 32, CKF_WRAP | CKF_UNWRAP | CKF_ENCRYPT | CKF_DECRYPT)
        }
        CKM_SHA_1_HMAC | CKM_SHA256_HMAC | CKM_SHA384_HMAC | CKM_SHA512_HMAC => {
            (1, 512, CKF_SIGN | CKF_VERIFY)
        }
        CKM_SHA_1 | CKM_SHA256 | CKM_SHA384 | CKM_SHA512 => (0, 0, CKF_DIGEST),
        CKM_KMS_CIPHERTEXT => (32, 32, CKF_ENCRYPT | CKF_DECRYPT),
        // Key sizes in bits (EC: the field size; ML-DSA: the parameter
        // sets CKP_ML_DSA_44..=CKP_ML_DSA_87).
        CKM_EC_KEY_PAIR_GEN => (256, 384, CKF_GENERATE_KEY_PAIR | EC),
        CKM_ECDSA | CKM_ECDSA_SHA256 | CKM_ECDSA_SHA384 | CKM_ECDSA_SHA512 => {
            (256, 384, CKF_SIGN | CKF_VERIFY | EC)
        }
        CKM_EC_EDWARDS_KEY_PAIR_GEN => (255, 255, CKF_GENERATE_KEY_PAIR | CKF_EC_OID),
        CKM_EDDSA => (255, 255, CKF_SIGN | CKF_VERIFY | CKF_EC_OID),
        CKM_RSA_PKCS_KEY_PAIR_GEN => (2048, 4096, CKF_GENERATE_KEY_PAIR),
        CKM_RSA_PKCS
        | CKM_SHA256_RSA_PKCS
        | CKM_SHA384_RSA_PKCS
        | CKM_SHA512_RSA_PKCS
        | CKM_RSA_PKCS_PSS
        | CKM_SHA256_RSA_PKCS_PSS
        | CKM_SHA384_RSA_PKCS_PSS
        | CKM_SHA512_RSA_PKCS_PSS => (2048, 4096, CKF_SIGN | CKF_VERIFY),
        CKM_RSA_PKCS_OAEP => (2048, 4096, CKF_ENCRYPT | CKF_DECRYPT),
        CKM_ML_DSA_KEY_PAIR_GEN => (1, 3, CKF_GENERATE_KEY_PAIR),
        CKM_ML_DSA => (1, 3, CKF_SIGN | CKF_VERIFY),
        _ => return None,
    })
}

/// Every mechanism the module offers, in `C_GetMechanismList` order.
pub const LIST: &[CK_MECHANISM_TYPE] = &[
    CKM_AES_KEY_GEN,
    CKM_GENERIC_SECRET_KEY_GEN,
    CKM_AES_GCM,
    CKM_AES_CBC_PAD,
    CKM_AES_CBC,
    CKM_AES_ECB,
    CKM_AES_CTR,
    CKM_AES_KEY_WRAP,
    CKM_AES_KEY_WRAP_PAD,
    CKM_AES_KEY_WRAP_KWP,
    CKM_SHA_1_HMAC,
    CKM_SHA256_HMAC,
    CKM_SHA384_HMAC,
    CKM_SHA512_HMAC,
    CKM_SHA_1,
    CKM_SHA256,
    CKM_SHA384,
    CKM_SHA512,
    CKM_KMS_CIPHERTEXT,
    CKM_EC_KEY_PAIR_GEN,
    CKM_ECDSA,
    CKM_ECDSA_SHA256,
    CKM_ECDSA_SHA384,
    CKM_ECDSA_SHA512,
    CKM_EC_EDWARDS_KEY_PAIR_GEN,
    CKM_EDDSA,
    CKM_RSA_PKCS_KEY_PAIR_GEN,
    CKM_RSA_PKCS,
    CKM_SHA256_RSA_PKCS,
    CKM_SHA384_RSA_PKCS,
    CKM_SHA512_RSA_PKCS,
    CKM_RSA_PKCS_PSS,
    CKM_SHA256_RSA_PKCS_PSS,
    CKM_SHA384_RSA_PKCS_PSS,
    CKM_SHA512_RSA_PKCS_PSS,
    CKM_RSA_PKCS_OAEP,
    CKM_ML_DSA_KEY_PAIR_GEN,
    CKM_ML_DSA,
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_listed_mechanism_has_info() {
        for &m in LIST {
            assert!(info(m).is_some(), "{m:#x}");
        }
        assert!(info(CKM_RSA_X_509).is_none());
        assert!(info(CKM_SHA1_RSA_PKCS).is_none());
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
        assert!(Mech::AesCbc { iv: vec![0; 15] }.check_params().is_err());
        let ctr = |bits| Mech::AesCtr {
            cb: [0xff; 16],
            bits,
        };
        assert!(ctr(0).check_params().is_err());
        assert!(ctr(129).check_params().is_err());
        assert!(ctr(128).check_params().is_ok());
        assert_eq!(ctr(128).ctr_blocks_left(), None);
        assert_eq!(ctr(8).ctr_blocks_left(), Some(1));
        assert_eq!(
            Mech::AesCtr {
                cb: [0; 16],
                bits: 8
            }
            .ctr_blocks_left(),
            Some(256)
        );
    }
}
