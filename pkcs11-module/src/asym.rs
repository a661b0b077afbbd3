//! Asymmetric cluster keys as PKCS#11 key pairs: their types, the public
//! half read from its SubjectPublicKeyInfo, the attributes of the two
//! objects, `CKA_EC_PARAMS`, the hash functions of the signature
//! mechanisms, and key-pair templates.
//!
//! Each asymmetric cluster key (KEY:LISTALL type `EC-P256`, `EC-P384`,
//! `ED25519`, `RSA-2048/3072/4096`, `ML-DSA-44/65/87`) is a
//! `CKO_PRIVATE_KEY` and a `CKO_PUBLIC_KEY` with the same `CKA_ID` and
//! `CKA_LABEL` (the key name), showing the latest version's public key
//! (KEY:PUBLICKEY). The module does no private-key cryptography: it hashes
//! locally for the `CKM_SHA*_…` mechanisms and the cluster signs, verifies
//! and decrypts (docs/pkcs11.md).

// Input from the network or from a C caller must never panic here: no
// unwrap, expect or unchecked indexing (tests excepted).
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]

use cryptoki_sys::*;
use sha2::Digest as _;

use crate::error::{Error, Result};
use crate::object::{Attr, AttrOut, KeyObject};

/// `CKA_EC_PARAMS` of P-256: the DER OID 1.2.840.10045.3.1.7.
pub const P256_PARAMS: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
/// `CKA_EC_PARAMS` of P-384: the DER OID 1.3.132.0.34.
pub const P384_PARAMS: &[u8] = &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22];
/// `CKA_EC_PARAMS` of Ed25519 as SoftHSM2 writes it (and GnuTLS and OpenSC
/// read it): the PrintableString "edwards25519".
pub const ED25519_PARAMS: &[u8] = b"\x13\x0cedwards25519";
/// The DER OID 1.3.101.112 (id-Ed25519), accepted in templates.
const ED25519_OID: &[u8] = &[0x06, 0x03, 0x2b, 0x65, 0x70];
/// The DER OID 1.3.6.1.4.1.11591.15.1 (GnuPG's Ed25519), which older
/// OpenSC releases send; accepted in templates.
const ED25519_GNU_OID: &[u8] = &[
    0x06, 0x09, 0x2b, 0x06, 0x01, 0x04, 0x01, 0xda, 0x47, 0x0f, 0x01,
];

/// The type of an asymmetric cluster key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AsymKind {
    EcP256,
    EcP384,
    Ed25519,
    Rsa2048,
    Rsa3072,
    Rsa4096,
    MlDsa44,
    MlDsa65,
    MlDsa87,
}

impl AsymKind {
    pub const ALL: [AsymKind; 9] = [
        AsymKind::EcP256,
        AsymKind::EcP384,
        AsymKind::Ed25519,
        AsymKind::Rsa2048,
        AsymKind::Rsa3072,
        AsymKind::Rsa4096,
        AsymKind::MlDsa44,
        AsymKind::MlDsa65,
        AsymKind::MlDsa87,
    ];

    /// The cluster's name of the type (KEY:CREATE, KEY:LISTALL).
    pub fn name(self) -> &'static str {
        match self {
            AsymKind::EcP256 => "EC-P256",
            AsymKind::EcP384 => "EC-P384",
            AsymKind::Ed25519 => "ED25519",
            AsymKind::Rsa2048 => "RSA-2048",
            AsymKind::Rsa3072 => "RSA-3072",
            AsymKind::Rsa4096 => "RSA-4096",
            AsymKind::MlDsa44 => "ML-DSA-44",
            AsymKind::MlDsa65 => "ML-DSA-65",
            AsymKind::MlDsa87 => "ML-DSA-87",
        }
    }

    /// The type of a cluster type name; `None` for secret key types.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|k| k.name().eq_ignore_ascii_case(s))
    }

    pub fn key_type(self) -> CK_KEY_TYPE {
        match self {
            AsymKind::EcP256 | AsymKind::EcP384 => CKK_EC,
            AsymKind::Ed25519 => CKK_EC_EDWARDS,
            AsymKind::Rsa2048 | AsymKind::Rsa3072 | AsymKind::Rsa4096 => CKK_RSA,
            AsymKind::MlDsa44 | AsymKind::MlDsa65 | AsymKind::MlDsa87 => CKK_ML_DSA,
        }
    }

    pub fn is_rsa(self) -> bool {
        self.key_type() == CKK_RSA
    }

    /// The RSA modulus length in bytes.
    pub fn rsa_len(self) -> Option<usize> {
        match self {
            AsymKind::Rsa2048 => Some(256),
            AsymKind::Rsa3072 => Some(384),
            AsymKind::Rsa4096 => Some(512),
            _ => None,
        }
    }

    /// The length of every signature of this type, in bytes.
    pub fn sig_len(self) -> usize {
        match self {
            AsymKind::EcP256 | AsymKind::Ed25519 => 64,
            AsymKind::EcP384 => 96,
            AsymKind::Rsa2048 => 256,
            AsymKind::Rsa3072 => 384,
            AsymKind::Rsa4096 => 512,
            AsymKind::MlDsa44 => 2420,
            AsymKind::MlDsa65 => 3309,
            AsymKind::MlDsa87 => 4627,
        }
    }

    /// The ECDSA field (and order) size in bytes.
    pub fn ec_len(self) -> Option<usize> {
        match self {
            AsymKind::EcP256 => Some(32),
            AsymKind::EcP384 => Some(48),
            _ => None,
        }
    }

    pub fn ec_params(self) -> Option<&'static [u8]> {
        match self {
            AsymKind::EcP256 => Some(P256_PARAMS),
            AsymKind::EcP384 => Some(P384_PARAMS),
            AsymKind::Ed25519 => Some(ED25519_PARAMS),
            _ => None,
        }
    }

    /// `CKA_PARAMETER_SET` of ML-DSA keys (`CKP_ML_DSA_*`).
    pub fn parameter_set(self) -> Option<CK_ULONG> {
        match self {
            AsymKind::MlDsa44 => Some(CKP_ML_DSA_44 as CK_ULONG),
            AsymKind::MlDsa65 => Some(CKP_ML_DSA_65 as CK_ULONG),
            AsymKind::MlDsa87 => Some(CKP_ML_DSA_87 as CK_ULONG),
            _ => None,
        }
    }

    /// The length of the raw public key of ML-DSA (FIPS 204 encoding).
    fn ml_dsa_pk_len(self) -> Option<usize> {
        match self {
            AsymKind::MlDsa44 => Some(1312),
            AsymKind::MlDsa65 => Some(1952),
            AsymKind::MlDsa87 => Some(2592),
            _ => None,
        }
    }

    /// The key-pair generation mechanism of the type.
    pub fn gen_mechanism(self) -> CK_MECHANISM_TYPE {
        match self.key_type() {
            CKK_EC => CKM_EC_KEY_PAIR_GEN,
            CKK_EC_EDWARDS => CKM_EC_EDWARDS_KEY_PAIR_GEN,
            CKK_RSA => CKM_RSA_PKCS_KEY_PAIR_GEN,
            _ => CKM_ML_DSA_KEY_PAIR_GEN,
        }
    }

    /// The mechanisms a key pair of this type works with
    /// (`CKA_ALLOWED_MECHANISMS`).
    pub fn mechanisms(self) -> &'static [CK_MECHANISM_TYPE] {
        match self.key_type() {
            CKK_EC => &[
                CKM_ECDSA,
                CKM_ECDSA_SHA256,
                CKM_ECDSA_SHA384,
                CKM_ECDSA_SHA512,
            ],
            CKK_EC_EDWARDS => &[CKM_EDDSA],
            CKK_RSA => &[
                CKM_RSA_PKCS,
                CKM_SHA256_RSA_PKCS,
                CKM_SHA384_RSA_PKCS,
                CKM_SHA512_RSA_PKCS,
                CKM_RSA_PKCS_PSS,
                CKM_SHA256_RSA_PKCS_PSS,
                CKM_SHA384_RSA_PKCS_PSS,
                CKM_SHA512_RSA_PKCS_PSS,
                CKM_RSA_PKCS_OAEP,
            ],
            _ => &[CKM_ML_DSA],
        }
    }
}

/// A hash function of a mechanism or its parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HashAlg {
    Sha1,
    Sha224,
    Sha256,
    Sha384,
    Sha512,
}

impl HashAlg {
    /// The hash of a `CKM_SHA*` digest mechanism (in `hashAlg` parameters).
    pub fn from_ckm(m: CK_MECHANISM_TYPE) -> Option<Self> {
        Some(match m {
            CKM_SHA_1 => HashAlg::Sha1,
            CKM_SHA224 => HashAlg::Sha224,
            CKM_SHA256 => HashAlg::Sha256,
            CKM_SHA384 => HashAlg::Sha384,
            CKM_SHA512 => HashAlg::Sha512,
            _ => return None,
        })
    }

    /// The hash of an MGF1 generator (`CKG_MGF1_*`).
    pub fn from_mgf(g: CK_RSA_PKCS_MGF_TYPE) -> Option<Self> {
        Some(match g {
            CKG_MGF1_SHA1 => HashAlg::Sha1,
            CKG_MGF1_SHA224 => HashAlg::Sha224,
            CKG_MGF1_SHA256 => HashAlg::Sha256,
            CKG_MGF1_SHA384 => HashAlg::Sha384,
            CKG_MGF1_SHA512 => HashAlg::Sha512,
            _ => return None,
        })
    }

    /// The cluster's name (`SignParams.hash`).
    pub fn name(self) -> &'static str {
        match self {
            HashAlg::Sha1 => "SHA-1",
            HashAlg::Sha224 => "SHA-224",
            HashAlg::Sha256 => "SHA-256",
            HashAlg::Sha384 => "SHA-384",
            HashAlg::Sha512 => "SHA-512",
        }
    }

    /// The digest length in bytes.
    pub fn output_len(self) -> usize {
        match self {
            HashAlg::Sha1 => 20,
            HashAlg::Sha224 => 28,
            HashAlg::Sha256 => 32,
            HashAlg::Sha384 => 48,
            HashAlg::Sha512 => 64,
        }
    }

    /// A running hash (digest operations and the hashing signature
    /// mechanisms; no signature mechanism hashes with SHA-1).
    pub fn hasher(self) -> Option<Hasher> {
        Some(match self {
            HashAlg::Sha1 => Hasher::Sha1(sha1::Sha1::new()),
            HashAlg::Sha224 => Hasher::Sha224(sha2::Sha224::new()),
            HashAlg::Sha256 => Hasher::Sha256(sha2::Sha256::new()),
            HashAlg::Sha384 => Hasher::Sha384(sha2::Sha384::new()),
            HashAlg::Sha512 => Hasher::Sha512(sha2::Sha512::new()),
        })
    }
}

/// A running SHA-2 hash (digest operations and the hashing signature
/// mechanisms).
#[derive(Clone)]
pub enum Hasher {
    Sha1(sha1::Sha1),
    Sha224(sha2::Sha224),
    Sha256(sha2::Sha256),
    Sha384(sha2::Sha384),
    Sha512(sha2::Sha512),
}

impl Hasher {
    pub fn update(&mut self, data: &[u8]) {
        match self {
            Hasher::Sha1(h) => h.update(data),
            Hasher::Sha224(h) => h.update(data),
            Hasher::Sha256(h) => h.update(data),
            Hasher::Sha384(h) => h.update(data),
            Hasher::Sha512(h) => h.update(data),
        }
    }

    pub fn finalize(self) -> Vec<u8> {
        match self {
            Hasher::Sha1(h) => h.finalize().to_vec(),
            Hasher::Sha224(h) => h.finalize().to_vec(),
            Hasher::Sha256(h) => h.finalize().to_vec(),
            Hasher::Sha384(h) => h.finalize().to_vec(),
            Hasher::Sha512(h) => h.finalize().to_vec(),
        }
    }
}

/// The public half of one version of an asymmetric cluster key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PairInfo {
    pub kind: AsymKind,
    /// The key version whose public key this is; signatures are made and
    /// verified with this version, so that they match `CKA_PUBLIC_KEY_INFO`.
    pub version: u32,
    /// SubjectPublicKeyInfo, DER.
    pub spki: Vec<u8>,
    /// EC: the uncompressed point; Ed25519: the 32-byte key; ML-DSA: the
    /// encoded public key; RSA: the modulus (big-endian, no leading zero).
    pub public: Vec<u8>,
    /// RSA: the public exponent (big-endian, no leading zero).
    pub exponent: Vec<u8>,
}

/// One DER TLV: (tag, content, rest). Definite lengths of up to 4 bytes.
fn tlv(b: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, b) = b.split_first()?;
    let (&l0, mut b) = b.split_first()?;
    let len = if l0 < 0x80 {
        l0 as usize
    } else {
        let n = (l0 & 0x7f) as usize;
        if n == 0 || n > 4 || b.len() < n {
            return None;
        }
        let (lb, rest) = b.split_at(n);
        b = rest;
        lb.iter().fold(0usize, |a, x| (a << 8) | *x as usize)
    };
    if b.len() < len {
        return None;
    }
    let (content, rest) = b.split_at(len);
    Some((tag, content, rest))
}

/// A DER INTEGER's magnitude without leading zeros (positive integers only).
fn unsigned(int: &[u8]) -> Option<Vec<u8>> {
    if int.first().is_some_and(|b| b & 0x80 != 0) {
        return None;
    }
    let skip = int.iter().take_while(|b| **b == 0).count();
    let v = int.get(skip..)?.to_vec();
    (!v.is_empty()).then_some(v)
}

/// DER OCTET STRING of `v` (`CKA_EC_POINT`).
pub fn der_octet_string(v: &[u8]) -> Vec<u8> {
    let mut out = vec![0x04];
    let n = v.len();
    if n < 0x80 {
        out.push(n as u8);
    } else {
        let be = (n as u32).to_be_bytes();
        let skip = be.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (4 - skip) as u8);
        out.extend_from_slice(be.get(skip..).unwrap_or_default());
    }
    out.extend_from_slice(v);
    out
}

impl PairInfo {
    /// Reads the public half of a key of type `kind` from its SPKI,
    /// checking that it is of that type and size.
    pub fn from_spki(
        kind: AsymKind,
        version: u32,
        spki: &[u8],
    ) -> std::result::Result<Self, String> {
        let bad = |why: &str| format!("{} public key: {why}", kind.name());
        let (tag, seq, rest) = tlv(spki).ok_or_else(|| bad("not DER"))?;
        if tag != 0x30 || !rest.is_empty() {
            return Err(bad("not a SubjectPublicKeyInfo"));
        }
        let (tag, _alg, rest) = tlv(seq).ok_or_else(|| bad("no algorithm"))?;
        if tag != 0x30 {
            return Err(bad("no algorithm"));
        }
        let (tag, bits, rest) = tlv(rest).ok_or_else(|| bad("no key"))?;
        if tag != 0x03 || !rest.is_empty() {
            return Err(bad("no key bit string"));
        }
        let key = match bits.split_first() {
            Some((0, k)) => k,
            _ => return Err(bad("bad bit string")),
        };
        let mut exponent = Vec::new();
        let public = match kind {
            AsymKind::EcP256 | AsymKind::EcP384 => {
                let n = kind.ec_len().unwrap_or(0);
                if key.len() != 2 * n + 1 || key.first() != Some(&0x04) {
                    return Err(bad("not an uncompressed point of the curve"));
                }
                key.to_vec()
            }
            AsymKind::Ed25519 => {
                if key.len() != 32 {
                    return Err(bad("not 32 bytes"));
                }
                key.to_vec()
            }
            AsymKind::MlDsa44 | AsymKind::MlDsa65 | AsymKind::MlDsa87 => {
                if Some(key.len()) != kind.ml_dsa_pk_len() {
                    return Err(bad("wrong length"));
                }
                key.to_vec()
            }
            AsymKind::Rsa2048 | AsymKind::Rsa3072 | AsymKind::Rsa4096 => {
                let (tag, seq, rest) = tlv(key).ok_or_else(|| bad("not DER"))?;
                if tag != 0x30 || !rest.is_empty() {
                    return Err(bad("not an RSAPublicKey"));
                }
                let (t1, n, rest) = tlv(seq).ok_or_else(|| bad("no modulus"))?;
                let (t2, e, rest) = tlv(rest).ok_or_else(|| bad("no exponent"))?;
                if t1 != 0x02 || t2 != 0x02 || !rest.is_empty() {
                    return Err(bad("not an RSAPublicKey"));
                }
                let n = unsigned(n).ok_or_else(|| bad("bad modulus"))?;
                exponent = unsigned(e).ok_or_else(|| bad("bad exponent"))?;
                if Some(n.len()) != kind.rsa_len() || n.first().is_none_or(|b| b & 0x80 == 0) {
                    return Err(bad("the modulus has the wrong size"));
                }
                n
            }
        };
        Ok(PairInfo {
            kind,
            version,
            spki: spki.to_vec(),
            public,
            exponent,
        })
    }

    /// One attribute of the private (`private_class`) or public object.
    pub fn attr(&self, o: &KeyObject, private_class: bool, ty: CK_ATTRIBUTE_TYPE) -> AttrOut {
        let b = |v: bool| AttrOut::Value(vec![v as u8]);
        let u = |v: CK_ULONG| AttrOut::Value(v.to_ne_bytes().to_vec());
        let v = |v: &[u8]| AttrOut::Value(v.to_vec());
        let k = self.kind;
        let kt = k.key_type();
        // Attributes of both objects.
        match ty {
            CKA_CLASS => {
                return u(if private_class {
                    CKO_PRIVATE_KEY
                } else {
                    CKO_PUBLIC_KEY
                })
            }
            CKA_KEY_TYPE => return u(kt),
            CKA_TOKEN => return b(o.is_token()),
            CKA_PRIVATE => return b(o.private),
            CKA_LABEL => return v(&o.label),
            CKA_ID => return v(&o.id),
            CKA_MODIFIABLE | CKA_COPYABLE | CKA_DERIVE => return b(false),
            // Destroying the private key deletes the cluster key (and so
            // both objects); the public key alone cannot be destroyed.
            // Either object of a session key pair can be.
            CKA_DESTROYABLE => return b(private_class || !o.is_token()),
            CKA_LOCAL => return b(true),
            CKA_KEY_GEN_MECHANISM => return u(k.gen_mechanism()),
            CKA_ALLOWED_MECHANISMS => {
                let m = k.mechanisms();
                let m: Vec<CK_MECHANISM_TYPE> = if private_class {
                    m.to_vec()
                } else {
                    // OAEP decrypts: not a use of the public key here.
                    m.iter()
                        .copied()
                        .filter(|x| *x != CKM_RSA_PKCS_OAEP)
                        .collect()
                };
                return AttrOut::Value(m.iter().flat_map(|x| x.to_ne_bytes()).collect());
            }
            CKA_START_DATE | CKA_END_DATE | CKA_SUBJECT => return v(&[]),
            CKA_PUBLIC_KEY_INFO => return v(&self.spki),
            CKA_EC_PARAMS if kt == CKK_EC || kt == CKK_EC_EDWARDS => {
                return v(k.ec_params().unwrap_or_default())
            }
            CKA_EC_POINT if kt == CKK_EC || kt == CKK_EC_EDWARDS => {
                return v(&der_octet_string(&self.public))
            }
            CKA_MODULUS if kt == CKK_RSA => return v(&self.public),
            CKA_PUBLIC_EXPONENT if kt == CKK_RSA => return v(&self.exponent),
            CKA_MODULUS_BITS if kt == CKK_RSA => return u((self.public.len() * 8) as CK_ULONG),
            CKA_PARAMETER_SET if kt == CKK_ML_DSA => {
                return u(k.parameter_set().unwrap_or_default())
            }
            _ => {}
        }
        if private_class {
            match ty {
                CKA_SENSITIVE | CKA_ALWAYS_SENSITIVE | CKA_NEVER_EXTRACTABLE | CKA_SIGN => b(true),
                CKA_DECRYPT => b(kt == CKK_RSA),
                CKA_EXTRACTABLE
                | CKA_SIGN_RECOVER
                | CKA_UNWRAP
                | CKA_WRAP_WITH_TRUSTED
                | CKA_ALWAYS_AUTHENTICATE => b(false),
                CKA_PRIVATE_EXPONENT | CKA_PRIME_1 | CKA_PRIME_2 | CKA_EXPONENT_1
                | CKA_EXPONENT_2 | CKA_COEFFICIENT
                    if kt == CKK_RSA =>
                {
                    AttrOut::Sensitive
                }
                CKA_VALUE if kt != CKK_RSA => AttrOut::Sensitive,
                CKA_SEED if kt == CKK_ML_DSA => AttrOut::Sensitive,
                _ => AttrOut::Invalid,
            }
        } else {
            match ty {
                CKA_VERIFY => b(true),
                CKA_ENCRYPT => b(kt == CKK_RSA),
                CKA_WRAP | CKA_VERIFY_RECOVER | CKA_TRUSTED => b(false),
                CKA_VALUE if kt == CKK_ML_DSA => v(&self.public),
                _ => AttrOut::Invalid,
            }
        }
    }
}

/// The curve `CKA_EC_PARAMS` names: a DER OID, or a PrintableString curve
/// name (`prime256v1`, `secp384r1`, `edwards25519`, ...). A well-formed
/// value naming another curve is `CKR_CURVE_NOT_SUPPORTED`; anything else
/// `CKR_ATTRIBUTE_VALUE_INVALID`.
pub fn parse_ec_params(p: &[u8]) -> Result<AsymKind> {
    match p {
        P256_PARAMS => return Ok(AsymKind::EcP256),
        P384_PARAMS => return Ok(AsymKind::EcP384),
        ED25519_OID | ED25519_GNU_OID => return Ok(AsymKind::Ed25519),
        _ => {}
    }
    match tlv(p) {
        Some((0x13, name, [])) => {
            let name = String::from_utf8_lossy(name).to_ascii_lowercase();
            match name.as_str() {
                "prime256v1" | "secp256r1" | "p-256" | "nistp256" => Ok(AsymKind::EcP256),
                "secp384r1" | "p-384" | "nistp384" => Ok(AsymKind::EcP384),
                "edwards25519" | "ed25519" => Ok(AsymKind::Ed25519),
                _ => Err(Error::invalid(
                    CKR_CURVE_NOT_SUPPORTED,
                    "CKA_EC_PARAMS",
                    format!("curve '{name}' is not supported: use P-256, P-384 or edwards25519"),
                )),
            }
        }
        Some((0x06, oid, [])) if !oid.is_empty() => Err(Error::invalid(
            CKR_CURVE_NOT_SUPPORTED,
            "CKA_EC_PARAMS",
            "this curve is not supported: use P-256, P-384 or edwards25519",
        )),
        _ => Err(Error::invalid(
            CKR_ATTRIBUTE_VALUE_INVALID,
            "CKA_EC_PARAMS",
            "not a DER OID or curve name",
        )),
    }
}

/// What `C_GenerateKeyPair` makes, from its mechanism and two templates.
#[derive(Debug, Default)]
pub struct PairTemplate {
    pub kind: Option<AsymKind>,
    pub label: Option<Vec<u8>>,
    pub id: Option<Vec<u8>>,
    pub private: Option<bool>,
    /// `CKA_TOKEN` of either template (both must agree); absent: true.
    pub token: Option<bool>,
}

/// Reads the two templates of `C_GenerateKeyPair` for mechanism `mech`
/// (`CKM_*_KEY_PAIR_GEN`). `CKA_TOKEN` true (or absent) makes a cluster
/// key, false a session key pair; the two templates must agree.
/// `CKA_EXTRACTABLE` true is refused for both. Usage attributes are accepted and not enforced:
/// a pair's usages follow from its type.
pub fn parse_pair_templates(
    mech: CK_MECHANISM_TYPE,
    public: &[Attr],
    private: &[Attr],
) -> Result<PairTemplate> {
    let key_type = match mech {
        CKM_EC_KEY_PAIR_GEN => CKK_EC,
        CKM_EC_EDWARDS_KEY_PAIR_GEN => CKK_EC_EDWARDS,
        CKM_RSA_PKCS_KEY_PAIR_GEN => CKK_RSA,
        CKM_ML_DSA_KEY_PAIR_GEN => CKK_ML_DSA,
        _ => return Err(Error::Ck(CKR_MECHANISM_INVALID)),
    };
    let inconsistent =
        |why: String| Err(Error::invalid(CKR_TEMPLATE_INCONSISTENT, "template", why));
    let mut t = PairTemplate::default();
    let mut ec_params: Option<Vec<u8>> = None;
    let mut bits: Option<CK_ULONG> = None;
    let mut exponent: Option<Vec<u8>> = None;
    let mut set: Option<CK_ULONG> = None;
    // Sets `slot` to `v`, or fails if the other template gave another value.
    fn once<T: PartialEq>(slot: &mut Option<T>, v: T, what: &str) -> Result<()> {
        if slot.as_ref().is_some_and(|old| *old != v) {
            return Err(Error::invalid(
                CKR_TEMPLATE_INCONSISTENT,
                "template",
                format!("{what} is given twice with different values"),
            ));
        }
        *slot = Some(v);
        Ok(())
    }
    for (is_private, template) in [(false, public), (true, private)] {
        for (i, a) in template.iter().enumerate() {
            if template
                .get(..i)
                .unwrap_or_default()
                .iter()
                .any(|p| p.ty == a.ty && p.value != a.value)
            {
                return inconsistent(format!(
                    "attribute {:#x} given twice with different values",
                    a.ty
                ));
            }
            match a.ty {
                CKA_CLASS => {
                    let want = if is_private {
                        CKO_PRIVATE_KEY
                    } else {
                        CKO_PUBLIC_KEY
                    };
                    if a.as_ulong()? != want {
                        return inconsistent("CKA_CLASS does not match the template".into());
                    }
                }
                CKA_KEY_TYPE => {
                    if a.as_ulong()? != key_type {
                        return inconsistent("CKA_KEY_TYPE does not match the mechanism".into());
                    }
                }
                CKA_TOKEN => once(&mut t.token, a.as_bool()?, "CKA_TOKEN")?,
                CKA_PRIVATE => {
                    let v = a.as_bool()?;
                    if is_private {
                        t.private = Some(v);
                    }
                }
                CKA_EXTRACTABLE => {
                    if a.as_bool()? {
                        return inconsistent("cluster keys are never extractable".into());
                    }
                }
                CKA_LABEL => once(&mut t.label, a.value.clone(), "CKA_LABEL")?,
                CKA_ID => once(&mut t.id, a.value.clone(), "CKA_ID")?,
                CKA_EC_PARAMS if key_type == CKK_EC || key_type == CKK_EC_EDWARDS => {
                    once(&mut ec_params, a.value.clone(), "CKA_EC_PARAMS")?
                }
                CKA_MODULUS_BITS if key_type == CKK_RSA => {
                    once(&mut bits, a.as_ulong()?, "CKA_MODULUS_BITS")?
                }
                CKA_PUBLIC_EXPONENT if key_type == CKK_RSA => {
                    once(&mut exponent, a.value.clone(), "CKA_PUBLIC_EXPONENT")?
                }
                CKA_PARAMETER_SET if key_type == CKK_ML_DSA => {
                    once(&mut set, a.as_ulong()?, "CKA_PARAMETER_SET")?
                }
                CKA_SIGN
                | CKA_VERIFY
                | CKA_ENCRYPT
                | CKA_DECRYPT
                | CKA_WRAP
                | CKA_UNWRAP
                | CKA_DERIVE
                | CKA_SIGN_RECOVER
                | CKA_VERIFY_RECOVER
                | CKA_SENSITIVE
                | CKA_MODIFIABLE
                | CKA_COPYABLE
                | CKA_DESTROYABLE
                | CKA_TRUSTED
                | CKA_WRAP_WITH_TRUSTED
                | CKA_ALWAYS_AUTHENTICATE => {
                    a.as_bool()?;
                }
                CKA_START_DATE | CKA_END_DATE | CKA_SUBJECT | CKA_ALLOWED_MECHANISMS => {}
                CKA_LOCAL
                | CKA_KEY_GEN_MECHANISM
                | CKA_ALWAYS_SENSITIVE
                | CKA_NEVER_EXTRACTABLE
                | CKA_VALUE
                | CKA_MODULUS
                | CKA_EC_POINT
                | CKA_PUBLIC_KEY_INFO
                | CKA_PRIVATE_EXPONENT
                | CKA_SEED => {
                    return Err(Error::invalid(
                        CKR_ATTRIBUTE_READ_ONLY,
                        "template",
                        format!("attribute {:#x} is computed by the cluster", a.ty),
                    ))
                }
                other => {
                    return Err(Error::invalid(
                        CKR_ATTRIBUTE_TYPE_INVALID,
                        "template",
                        format!("attribute {other:#x} is not supported in this key-pair template"),
                    ))
                }
            }
        }
    }
    let incomplete = |what: &str| {
        Err(Error::invalid(
            CKR_TEMPLATE_INCOMPLETE,
            "template",
            format!("{what} is missing"),
        ))
    };
    t.kind = Some(match key_type {
        CKK_EC => {
            let Some(p) = ec_params else {
                return incomplete("CKA_EC_PARAMS");
            };
            match parse_ec_params(&p)? {
                AsymKind::Ed25519 => {
                    return inconsistent(
                        "edwards25519 keys are made with CKM_EC_EDWARDS_KEY_PAIR_GEN".into(),
                    )
                }
                k => k,
            }
        }
        CKK_EC_EDWARDS => match ec_params {
            None => AsymKind::Ed25519,
            Some(p) => match parse_ec_params(&p)? {
                AsymKind::Ed25519 => AsymKind::Ed25519,
                _ => {
                    return Err(Error::invalid(
                        CKR_CURVE_NOT_SUPPORTED,
                        "CKA_EC_PARAMS",
                        "CKM_EC_EDWARDS_KEY_PAIR_GEN makes edwards25519 keys",
                    ))
                }
            },
        },
        CKK_RSA => {
            if let Some(e) = exponent {
                let skip = e.iter().take_while(|b| **b == 0).count();
                if e.get(skip..) != Some(&[1, 0, 1][..]) {
                    return Err(Error::invalid(
                        CKR_ATTRIBUTE_VALUE_INVALID,
                        "CKA_PUBLIC_EXPONENT",
                        "the public exponent is 65537",
                    ));
                }
            }
            match bits {
                None => return incomplete("CKA_MODULUS_BITS"),
                Some(2048) => AsymKind::Rsa2048,
                Some(3072) => AsymKind::Rsa3072,
                Some(4096) => AsymKind::Rsa4096,
                Some(n) => {
                    return Err(Error::invalid(
                        CKR_KEY_SIZE_RANGE,
                        "CKA_MODULUS_BITS",
                        format!("{n} bits: RSA keys have 2048, 3072 or 4096 bits"),
                    ))
                }
            }
        }
        _ => match set {
            None => return incomplete("CKA_PARAMETER_SET"),
            Some(s) => AsymKind::ALL
                .into_iter()
                .find(|k| k.parameter_set() == Some(s))
                .ok_or_else(|| {
                    Error::invalid(
                        CKR_ATTRIBUTE_VALUE_INVALID,
                        "CKA_PARAMETER_SET",
                        format!("{s}: use CKP_ML_DSA_44, CKP_ML_DSA_65 or CKP_ML_DSA_87"),
                    )
                })?,
        },
    });
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ec_params() {
        assert_eq!(parse_ec_params(P256_PARAMS).unwrap(), AsymKind::EcP256);
        assert_eq!(parse_ec_params(P384_PARAMS).unwrap(), AsymKind::EcP384);
        assert_eq!(parse_ec_params(ED25519_PARAMS).unwrap(), AsymKind::Ed25519);
        assert_eq!(parse_ec_params(ED25519_OID).unwrap(), AsymKind::Ed25519);
        assert_eq!(
            parse_ec_params(b"\x13\x0aprime256v1").unwrap(),
            AsymKind::EcP256
        );
        // secp256k1
        let k1 = [0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x0a];
        assert_eq!(
            parse_ec_params(&k1).unwrap_err().rv(),
            CKR_CURVE_NOT_SUPPORTED
        );
        assert_eq!(
            parse_ec_params(&[0x06, 0x08, 1]).unwrap_err().rv(),
            CKR_ATTRIBUTE_VALUE_INVALID
        );
        assert_eq!(
            parse_ec_params(&[]).unwrap_err().rv(),
            CKR_ATTRIBUTE_VALUE_INVALID
        );
    }

    #[test]
    fn octet_strings() {
        assert_eq!(der_octet_string(&[1, 2]), [4, 2, 1, 2]);
        let long = der_octet_string(&[7; 200]);
        assert_eq!(long.get(..3).unwrap(), [4, 0x81, 200]);
        assert_eq!(long.len(), 203);
    }

    #[test]
    fn spki_parsing() {
        // An Ed25519 SPKI (RFC 8410 example key).
        let mut spki = vec![
            0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
        ];
        spki.extend_from_slice(&[9; 32]);
        let p = PairInfo::from_spki(AsymKind::Ed25519, 3, &spki).unwrap();
        assert_eq!(p.public, [9; 32]);
        assert!(PairInfo::from_spki(AsymKind::EcP256, 3, &spki).is_err());
        assert!(PairInfo::from_spki(AsymKind::Ed25519, 3, &spki[..20]).is_err());
        // RSA with a 2048-bit modulus.
        let mut n = vec![0x00, 0xC0];
        n.extend_from_slice(&[1; 255]);
        let mut rsa_key = vec![0x30, 0x82, 0x01, 0x0a, 0x02, 0x82, 0x01, 0x01];
        rsa_key.extend_from_slice(&n);
        rsa_key.extend_from_slice(&[0x02, 0x03, 1, 0, 1]);
        let mut bits = vec![0x03, 0x82, 0x01, 0x0f, 0x00];
        bits.extend_from_slice(&rsa_key);
        let alg = [
            0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05,
            0x00,
        ];
        let mut body = alg.to_vec();
        body.extend_from_slice(&bits);
        let mut spki = vec![0x30, 0x82, (body.len() >> 8) as u8, body.len() as u8];
        spki.extend_from_slice(&body);
        let p = PairInfo::from_spki(AsymKind::Rsa2048, 1, &spki).unwrap();
        assert_eq!(p.public.len(), 256);
        assert_eq!(p.exponent, [1, 0, 1]);
        assert!(PairInfo::from_spki(AsymKind::Rsa3072, 1, &spki).is_err());
    }

    #[test]
    fn pair_templates() {
        let ec = |a: Vec<Attr>| parse_pair_templates(CKM_EC_KEY_PAIR_GEN, &a, &[]);
        let t = ec(vec![
            Attr::new(CKA_EC_PARAMS, P384_PARAMS.to_vec()),
            Attr::new(CKA_LABEL, b"x".to_vec()),
            Attr::bool(CKA_VERIFY, true),
        ])
        .unwrap();
        assert_eq!(t.kind, Some(AsymKind::EcP384));
        assert_eq!(ec(vec![]).unwrap_err().rv(), CKR_TEMPLATE_INCOMPLETE);
        let t = ec(vec![
            Attr::new(CKA_EC_PARAMS, P256_PARAMS.to_vec()),
            Attr::bool(CKA_TOKEN, false),
        ])
        .unwrap();
        assert_eq!(t.token, Some(false));
        assert_eq!(
            parse_pair_templates(
                CKM_EC_KEY_PAIR_GEN,
                &[
                    Attr::new(CKA_EC_PARAMS, P256_PARAMS.to_vec()),
                    Attr::bool(CKA_TOKEN, false)
                ],
                &[Attr::bool(CKA_TOKEN, true)]
            )
            .unwrap_err()
            .rv(),
            CKR_TEMPLATE_INCONSISTENT
        );
        let rsa = |a: Vec<Attr>| parse_pair_templates(CKM_RSA_PKCS_KEY_PAIR_GEN, &a, &[]);
        assert_eq!(
            rsa(vec![Attr::ulong(CKA_MODULUS_BITS, 1024)])
                .unwrap_err()
                .rv(),
            CKR_KEY_SIZE_RANGE
        );
        assert_eq!(
            rsa(vec![
                Attr::ulong(CKA_MODULUS_BITS, 3072),
                Attr::new(CKA_PUBLIC_EXPONENT, vec![1, 0, 1])
            ])
            .unwrap()
            .kind,
            Some(AsymKind::Rsa3072)
        );
        assert_eq!(
            rsa(vec![
                Attr::ulong(CKA_MODULUS_BITS, 2048),
                Attr::new(CKA_PUBLIC_EXPONENT, vec![3])
            ])
            .unwrap_err()
            .rv(),
            CKR_ATTRIBUTE_VALUE_INVALID
        );
        let ml = parse_pair_templates(
            CKM_ML_DSA_KEY_PAIR_GEN,
            &[Attr::ulong(CKA_PARAMETER_SET, CKP_ML_DSA_87 as CK_ULONG)],
            &[Attr::bool(CKA_SIGN, true)],
        )
        .unwrap();
        assert_eq!(ml.kind, Some(AsymKind::MlDsa87));
        let ed = parse_pair_templates(CKM_EC_EDWARDS_KEY_PAIR_GEN, &[], &[]).unwrap();
        assert_eq!(ed.kind, Some(AsymKind::Ed25519));
    }
}
