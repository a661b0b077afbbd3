//! Asymmetric keys: generation, import and export, signatures, signature
//! verification and RSA-OAEP decryption for EC P-256/P-384, Ed25519,
//! RSA 2048/3072/4096 and ML-DSA-44/65/87 (FIPS 204).
//!
//! This module is pure computation: no I/O, no global state. Key generation
//! and RSA private-key operations block (RSA-4096 generation can take seconds);
//! async callers run them in `spawn_blocking`.
//!
//! # Implementations, and why
//!
//! | keys | crate | why |
//! |---|---|---|
//! | RSA | `openssl` 0.10 over the system OpenSSL 3.0 | constant-time, blinded private operations; keygen, PSS, OAEP with label and MGF1 hash, signing a precomputed digest and padding a caller's DigestInfo as is (PKCS#11 `CKM_RSA_PKCS`). RustCrypto `rsa` is not used: RUSTSEC-2023-0071 (Marvin timing attack) has no fixed version, and a KMS that decrypts OAEP for network callers is that advisory's threat model. `ring` has no RSA keygen, no decryption and no sign-a-digest. |
//! | EC P-256, P-384 | signing: `openssl` (OpenSSL 3.0's constant-time P-256/P-384, with x86-64 assembly); keys, encodings and verification: `p256`/`p384` 0.13 (RustCrypto `ecdsa` 0.16) | OpenSSL signs P-256 about six times as fast as `p256` (52,000 against about 8,000 signatures/s per core here); RustCrypto keeps the encodings in the same `pkcs8` 0.10 / `der` 0.7 generation as the rest of the tree |
//! | Ed25519 | `ed25519-dalek` 2 | already in the tree |
//! | ML-DSA | `fips204` 0.5 | FIPS 204 final: seed keygen, pure ML-DSA with context, hedged or deterministic signing; OpenSSL has ML-DSA only from 3.5, Debian 12 ships 3.0 |
//!
//! # Key types and stored forms
//!
//! Every private key is stored (sealed by the caller) as PKCS#8 `PrivateKeyInfo` DER
//! ([`PrivateKey::to_pkcs8_der`]); the public key is a `SubjectPublicKeyInfo` (SPKI) DER
//! ([`PrivateKey::public_key_der`]).
//!
//! | type | PKCS#8 algorithm, private key | SPKI |
//! |---|---|---|
//! | `RSA-2048/3072/4096` | rsaEncryption 1.2.840.113549.1.1.1 (NULL params), `RSAPrivateKey` (RFC 8017), as OpenSSL writes it; e = 65537 | rsaEncryption, `RSAPublicKey` |
//! | `EC-P256`, `EC-P384` | id-ecPublicKey 1.2.840.10045.2.1 with the curve OID (prime256v1 1.2.840.10045.3.1.7, secp384r1 1.3.132.0.34) as parameters, `ECPrivateKey` (RFC 5915) with the public key | same algorithm, uncompressed point `04 x y` |
//! | `ED25519` | id-Ed25519 1.3.101.112, `CurvePrivateKey` (32-byte seed, RFC 8410) | id-Ed25519, 32-byte key |
//! | `ML-DSA-44/65/87` | id-ml-dsa-44/65/87 2.16.840.1.101.3.4.3.17/.18/.19 (no params), the `seed` choice `[0] IMPLICIT OCTET STRING (32)` (RFC 9881): `30 34 02 01 00 30 0b 06 09 <oid> 04 22 80 20 <seed>`; a key imported without its seed is kept in the `expandedKey` choice (`04 82 ..` 2560/4032/4896 bytes) | the algorithm, BIT STRING of the raw public key (1312/1952/2592 bytes) |
//!
//! [`PrivateKey::import`] takes DER or PEM: `PRIVATE KEY` (PKCS#8), `RSA PRIVATE KEY`
//! (PKCS#1), `EC PRIVATE KEY` (SEC1). For ML-DSA it accepts the three RFC 9881 forms
//! (`seed`, `expandedKey`, and `both`, whose expanded key must match the seed). It
//! rejects RSA moduli other than exactly 2048, 3072 or 4096 bits, public exponents
//! other than 65537, RSA keys that fail OpenSSL's consistency check, curves other
//! than P-256/P-384, encrypted PKCS#8 and trailing bytes.
//!
//! # Signature algorithms and encodings
//!
//! | [`SignAlg`] | keys | input | signature |
//! |---|---|---|---|
//! | `Ecdsa { hash, prehashed }` | EC | message, or its `hash` digest (exactly the digest length) | raw `r \|\| s`, each left-padded to the field size (32/48 bytes): IEEE P1363, the PKCS#11 format. [`ecdsa_raw_to_der`] and [`ecdsa_der_to_raw`] convert to and from the X9.62 DER `SEQUENCE { r INTEGER, s INTEGER }` that OpenSSL and X.509 use. Nonces are OpenSSL's: random, mixed with the key and digest; a signature of the same input differs each time. |
//! | `Ed25519` | Ed25519 | message (pure Ed25519, RFC 8032) | 64 bytes `R \|\| S` |
//! | `RsaPkcs1 { hash: Some(h), prehashed }` | RSA | message, or its digest | RSASSA-PKCS1-v1_5, modulus length |
//! | `RsaPkcs1 { hash: None, .. }` | RSA | a complete DigestInfo (at most k − 11 bytes), padded as is (PKCS#11 `CKM_RSA_PKCS`) | modulus length |
//! | `RsaPss { hash, mgf1, salt_len, prehashed }` | RSA | message, or its digest | RSASSA-PSS, modulus length |
//! | `MlDsa { context, deterministic }` | ML-DSA | message (pure ML-DSA, external interface, context ≤ 255 bytes); hedged unless `deterministic` (rnd = 0³²) | 2420/3309/4627 bytes |
//!
//! RSA decryption is RSAES-OAEP only ([`PrivateKey::decrypt_oaep`]); PKCS#1 v1.5
//! decryption is not offered (OpenSSL 3.0 lacks the implicit-rejection fix for the
//! Marvin attack). All OAEP failures give the same error, [`AsymError::Decrypt`].
//!
//! SHA-1 is accepted for OAEP (hash and MGF1: Java's default) and for verifying old
//! signatures; signing with SHA-1 is refused.
//!
//! Fingerprints ([`fingerprint`]) are `SHA256:` followed by the unpadded base64 of
//! SHA-256 over the SPKI DER, the way OpenSSH prints key fingerprints.

use base64::Engine as _;
use ed25519_dalek::pkcs8::{DecodePrivateKey as _, DecodePublicKey as _, EncodePrivateKey as _};
use ed25519_dalek::pkcs8::{EncodePublicKey as _, ObjectIdentifier, PrivateKeyInfo};
use fips204::traits::{KeyGen as _, SerDes as _, Signer as _, Verifier as _};
use openssl::bn::{BigNum, BigNumContext};
use openssl::ec::{EcGroup, EcKey, EcPoint};
use openssl::ecdsa::EcdsaSig;
use openssl::md::{Md, MdRef};
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::pkey_ctx::PkeyCtx;
use openssl::rsa::{Padding, Rsa};
use openssl::sign::RsaPssSaltlen;
use p256::ecdsa::signature::hazmat::PrehashVerifier as _;
use p256::pkcs8::der::Decode as _;
use rand::RngCore as _;
use subtle::ConstantTimeEq as _;
use zeroize::Zeroizing;

/// Largest ML-DSA context string (FIPS 204).
pub const MAX_CONTEXT: usize = 255;
/// Largest key import accepted, in bytes (a PEM RSA-4096 key is about 3.3 KB,
/// an ML-DSA-87 `both` key about 5 KB).
pub const MAX_IMPORT: usize = 64 * 1024;

const OID_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
const OID_EC: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const OID_P256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
const OID_P384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");
const OID_ED25519: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.112");
const OID_ML_DSA_44: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.3.17");
const OID_ML_DSA_65: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.3.18");
const OID_ML_DSA_87: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.3.19");

/// The type of an asymmetric key: algorithm and size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum AsymType {
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

impl AsymType {
    /// Every type, in declaration order.
    pub const ALL: [AsymType; 9] = [
        AsymType::EcP256,
        AsymType::EcP384,
        AsymType::Ed25519,
        AsymType::Rsa2048,
        AsymType::Rsa3072,
        AsymType::Rsa4096,
        AsymType::MlDsa44,
        AsymType::MlDsa65,
        AsymType::MlDsa87,
    ];

    /// The name used on the wire and in the CLI.
    pub fn name(self) -> &'static str {
        match self {
            AsymType::EcP256 => "EC-P256",
            AsymType::EcP384 => "EC-P384",
            AsymType::Ed25519 => "ED25519",
            AsymType::Rsa2048 => "RSA-2048",
            AsymType::Rsa3072 => "RSA-3072",
            AsymType::Rsa4096 => "RSA-4096",
            AsymType::MlDsa44 => "ML-DSA-44",
            AsymType::MlDsa65 => "ML-DSA-65",
            AsymType::MlDsa87 => "ML-DSA-87",
        }
    }

    /// Parses a name case-insensitively; hyphens and underscores are optional
    /// (`ec-p256`, `EC_P256`, `ecp256`, `ml-dsa-65`, `mldsa65`, `rsa2048`).
    pub fn parse(s: &str) -> Option<Self> {
        let norm: String = s
            .chars()
            .filter(|c| *c != '-' && *c != '_')
            .map(|c| c.to_ascii_lowercase())
            .collect();
        AsymType::ALL.into_iter().find(|t| {
            t.name()
                .chars()
                .filter(|c| *c != '-')
                .map(|c| c.to_ascii_lowercase())
                .eq(norm.chars())
        })
    }

    pub fn is_rsa(self) -> bool {
        matches!(
            self,
            AsymType::Rsa2048 | AsymType::Rsa3072 | AsymType::Rsa4096
        )
    }

    /// ECDSA curves (not Ed25519).
    pub fn is_ec(self) -> bool {
        matches!(self, AsymType::EcP256 | AsymType::EcP384)
    }

    pub fn is_ml_dsa(self) -> bool {
        matches!(
            self,
            AsymType::MlDsa44 | AsymType::MlDsa65 | AsymType::MlDsa87
        )
    }

    /// The RSA modulus size in bits.
    pub fn rsa_bits(self) -> Option<u32> {
        match self {
            AsymType::Rsa2048 => Some(2048),
            AsymType::Rsa3072 => Some(3072),
            AsymType::Rsa4096 => Some(4096),
            _ => None,
        }
    }

    /// The length of every signature this key type makes, in bytes.
    pub fn signature_len(self) -> usize {
        match self {
            AsymType::EcP256 => 64,
            AsymType::EcP384 => 96,
            AsymType::Ed25519 => 64,
            AsymType::Rsa2048 => 256,
            AsymType::Rsa3072 => 384,
            AsymType::Rsa4096 => 512,
            AsymType::MlDsa44 => fips204::ml_dsa_44::SIG_LEN,
            AsymType::MlDsa65 => fips204::ml_dsa_65::SIG_LEN,
            AsymType::MlDsa87 => fips204::ml_dsa_87::SIG_LEN,
        }
    }

    /// Whether signature algorithm `alg` works with this key type.
    pub fn fits(self, alg: &SignAlg) -> bool {
        match alg {
            SignAlg::Ecdsa { .. } => self.is_ec(),
            SignAlg::Ed25519 => self == AsymType::Ed25519,
            SignAlg::RsaPkcs1 { .. } | SignAlg::RsaPss { .. } => self.is_rsa(),
            SignAlg::MlDsa { .. } => self.is_ml_dsa(),
        }
    }

    fn from_rsa_bits(bits: u32) -> Option<Self> {
        match bits {
            2048 => Some(AsymType::Rsa2048),
            3072 => Some(AsymType::Rsa3072),
            4096 => Some(AsymType::Rsa4096),
            _ => None,
        }
    }

    fn ml_dsa_oid(self) -> Option<ObjectIdentifier> {
        match self {
            AsymType::MlDsa44 => Some(OID_ML_DSA_44),
            AsymType::MlDsa65 => Some(OID_ML_DSA_65),
            AsymType::MlDsa87 => Some(OID_ML_DSA_87),
            _ => None,
        }
    }
}

impl std::fmt::Display for AsymType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A hash function for signatures and OAEP. `Sha1` is accepted only for OAEP and
/// for verifying; [`PrivateKey::sign`] refuses it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Hash {
    Sha1,
    Sha224,
    Sha256,
    Sha384,
    Sha512,
}

impl Hash {
    pub fn name(self) -> &'static str {
        match self {
            Hash::Sha1 => "SHA-1",
            Hash::Sha224 => "SHA-224",
            Hash::Sha256 => "SHA-256",
            Hash::Sha384 => "SHA-384",
            Hash::Sha512 => "SHA-512",
        }
    }

    /// Parses `SHA-256`, `sha256`, `SHA256` etc.
    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().replace(['-', '_'], "").as_str() {
            "sha1" => Some(Hash::Sha1),
            "sha224" => Some(Hash::Sha224),
            "sha256" => Some(Hash::Sha256),
            "sha384" => Some(Hash::Sha384),
            "sha512" => Some(Hash::Sha512),
            _ => None,
        }
    }

    /// Digest length in bytes.
    pub fn output_len(self) -> usize {
        match self {
            Hash::Sha1 => 20,
            Hash::Sha224 => 28,
            Hash::Sha256 => 32,
            Hash::Sha384 => 48,
            Hash::Sha512 => 64,
        }
    }

    /// Hashes `data`.
    pub fn digest(self, data: &[u8]) -> Vec<u8> {
        use sha2::Digest as _;
        match self {
            Hash::Sha1 => openssl::sha::sha1(data).to_vec(),
            Hash::Sha224 => sha2::Sha224::digest(data).to_vec(),
            Hash::Sha256 => sha2::Sha256::digest(data).to_vec(),
            Hash::Sha384 => sha2::Sha384::digest(data).to_vec(),
            Hash::Sha512 => sha2::Sha512::digest(data).to_vec(),
        }
    }

    fn md(self) -> &'static MdRef {
        match self {
            Hash::Sha1 => Md::sha1(),
            Hash::Sha224 => Md::sha224(),
            Hash::Sha256 => Md::sha256(),
            Hash::Sha384 => Md::sha384(),
            Hash::Sha512 => Md::sha512(),
        }
    }
}

/// A signature algorithm with its parameters. With `prehashed`, the input of
/// [`PrivateKey::sign`] and [`verify`] is the digest (exactly `hash.output_len()`
/// bytes) instead of the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignAlg {
    /// ECDSA; signature is raw `r || s`.
    Ecdsa { hash: Hash, prehashed: bool },
    /// Pure Ed25519 over the message.
    Ed25519,
    /// RSASSA-PKCS1-v1_5. `hash: None`: the input is a complete DigestInfo,
    /// padded as is (PKCS#11 `CKM_RSA_PKCS`); `prehashed` is then ignored.
    RsaPkcs1 { hash: Option<Hash>, prehashed: bool },
    /// RSASSA-PSS with MGF1.
    RsaPss {
        hash: Hash,
        mgf1: Hash,
        salt_len: usize,
        prehashed: bool,
    },
    /// Pure ML-DSA (FIPS 204 external interface) with a context of at most 255
    /// bytes; hedged unless `deterministic`.
    MlDsa {
        context: Vec<u8>,
        deterministic: bool,
    },
}

impl SignAlg {
    fn name(&self) -> &'static str {
        match self {
            SignAlg::Ecdsa { .. } => "ECDSA",
            SignAlg::Ed25519 => "Ed25519",
            SignAlg::RsaPkcs1 { .. } => "RSA PKCS#1 v1.5",
            SignAlg::RsaPss { .. } => "RSA-PSS",
            SignAlg::MlDsa { .. } => "ML-DSA",
        }
    }
}

/// Why an asymmetric operation failed. Messages never contain key bytes and
/// are safe to return to clients.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AsymError {
    /// The key is malformed or of a kind this module does not support.
    #[error("unsupported or invalid key: {0}")]
    UnsupportedKey(String),
    /// The algorithm does not fit the key, or is refused (e.g. SHA-1 signing).
    #[error("wrong algorithm: {0}")]
    WrongAlgorithm(String),
    /// The input or a parameter has the wrong length or form.
    #[error("bad input: {0}")]
    BadInput(String),
    /// The signature does not verify (or is malformed).
    #[error("invalid signature")]
    BadSignature,
    /// Decryption failed; the cause (length, padding, label, key) is not told.
    #[error("decryption failed")]
    Decrypt,
    /// A library failed unexpectedly.
    #[error("internal cryptography error: {0}")]
    Internal(String),
}

fn internal(what: &str) -> impl FnOnce(openssl::error::ErrorStack) -> AsymError + '_ {
    // The OpenSSL error text names functions and reasons, never key bytes.
    move |e| AsymError::Internal(format!("{what}: {e}"))
}

// ----- private keys -----

enum Inner {
    Rsa { key: PKey<Private>, t: AsymType },
    P256(Ec<p256::ecdsa::SigningKey>),
    P384(Ec<p384::ecdsa::SigningKey>),
    Ed25519(ed25519_dalek::SigningKey),
    MlDsa44(Box<MlDsaKey<fips204::ml_dsa_44::PrivateKey>>),
    MlDsa65(Box<MlDsaKey<fips204::ml_dsa_65::PrivateKey>>),
    MlDsa87(Box<MlDsaKey<fips204::ml_dsa_87::PrivateKey>>),
}

/// An ECDSA private key twice: RustCrypto's, which encodes it and names its
/// public key, and OpenSSL's copy, which signs (its x86-64 assembly signs
/// P-256 about six times as fast as `p256`; OpenSSL clears the scalar when it
/// frees the key). OpenSSL's nonces are random, mixed with the key and the
/// digest, where `p256` derived them per RFC 6979: both are valid ECDSA, and
/// no caller may rely on either (docs/asymmetric.md).
struct Ec<K> {
    k: K,
    ossl: EcKey<Private>,
}

fn ec_p256(k: p256::ecdsa::SigningKey) -> Result<Inner, AsymError> {
    let scalar = Zeroizing::new(k.to_bytes());
    let point = k.verifying_key().to_encoded_point(false);
    let ossl = ossl_ec_key(Nid::X9_62_PRIME256V1, scalar.as_slice(), point.as_bytes())
        .map_err(internal("P-256 key"))?;
    Ok(Inner::P256(Ec { k, ossl }))
}

fn ec_p384(k: p384::ecdsa::SigningKey) -> Result<Inner, AsymError> {
    let scalar = Zeroizing::new(k.to_bytes());
    let point = k.verifying_key().to_encoded_point(false);
    let ossl = ossl_ec_key(Nid::SECP384R1, scalar.as_slice(), point.as_bytes())
        .map_err(internal("P-384 key"))?;
    Ok(Inner::P384(Ec { k, ossl }))
}

/// OpenSSL's copy of an EC key, from its scalar and public point. Built
/// from the numbers, not decoded from DER: OpenSSL 3.0's decoders took about
/// a millisecond per key, which made creating an EC key five times slower
/// than an Ed25519 one.
fn ossl_ec_key(
    curve: Nid,
    scalar: &[u8],
    point: &[u8],
) -> Result<EcKey<Private>, openssl::error::ErrorStack> {
    let group = EcGroup::from_curve_name(curve)?;
    let mut ctx = BigNumContext::new()?;
    let public = EcPoint::from_bytes(&group, point, &mut ctx)?;
    let mut private = BigNum::from_slice(scalar)?;
    // The point is RustCrypto's, derived from this scalar: no need for
    // OpenSSL to check the pair again on every key a node loads.
    let key = EcKey::from_private_components(&group, &private, &public);
    // OpenSSL keeps its own copy; this one is wiped (BigNum's drop does not).
    private.clear();
    key
}

/// ECDSA over a digest with OpenSSL, as the fixed-size `r || s` (P1363) form.
fn ossl_ecdsa_sign(key: &EcKey<Private>, digest: &[u8], n: i32) -> Result<Vec<u8>, AsymError> {
    let sig = EcdsaSig::sign(digest, key).map_err(internal("ECDSA signing"))?;
    let mut out = sig
        .r()
        .to_vec_padded(n)
        .map_err(internal("ECDSA signing"))?;
    out.extend(
        sig.s()
            .to_vec_padded(n)
            .map_err(internal("ECDSA signing"))?,
    );
    Ok(out)
}

/// An ML-DSA private key: the fips204 key (zeroized on drop), its seed when known,
/// and the encoded public key.
struct MlDsaKey<K> {
    sk: K,
    seed: Option<Zeroizing<[u8; 32]>>,
    pk: Vec<u8>,
}

/// Runs `$body` with `$k` bound to the `MlDsaKey` of any parameter set and
/// `$m` to that set's fips204 module.
macro_rules! with_ml_dsa {
    ($inner:expr, $k:ident, $m:ident, $body:expr, $else:expr) => {
        match $inner {
            Inner::MlDsa44($k) => {
                use fips204::ml_dsa_44 as $m;
                $body
            }
            Inner::MlDsa65($k) => {
                use fips204::ml_dsa_65 as $m;
                $body
            }
            Inner::MlDsa87($k) => {
                use fips204::ml_dsa_87 as $m;
                $body
            }
            _ => $else,
        }
    };
}

/// A parsed private key of any [`AsymType`]. Secrets are zeroized on drop
/// (OpenSSL clears RSA private numbers when it frees them); `Debug` shows only
/// the type and the public key fingerprint.
pub struct PrivateKey {
    inner: Inner,
}

impl std::fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrivateKey")
            .field("type", &self.key_type())
            .field("fingerprint", &fingerprint(&self.public_key_der()))
            .finish_non_exhaustive()
    }
}

impl PrivateKey {
    /// Generates a fresh key from the OS random number generator. Blocks; RSA-4096
    /// can take seconds.
    pub fn generate(t: AsymType) -> Result<Self, AsymError> {
        let mut rng = rand::rngs::OsRng;
        let inner = match t {
            AsymType::Rsa2048 | AsymType::Rsa3072 | AsymType::Rsa4096 => {
                let bits = t.rsa_bits().unwrap_or(2048);
                let rsa = Rsa::generate(bits).map_err(internal("RSA key generation"))?;
                let key = PKey::from_rsa(rsa).map_err(internal("RSA key generation"))?;
                Inner::Rsa { key, t }
            }
            AsymType::EcP256 => ec_p256(p256::ecdsa::SigningKey::random(&mut rng))?,
            AsymType::EcP384 => ec_p384(p384::ecdsa::SigningKey::random(&mut rng))?,
            AsymType::Ed25519 => Inner::Ed25519(ed25519_dalek::SigningKey::generate(&mut rng)),
            AsymType::MlDsa44 | AsymType::MlDsa65 | AsymType::MlDsa87 => {
                let mut seed = Zeroizing::new([0u8; 32]);
                rng.fill_bytes(seed.as_mut());
                ml_dsa_from_seed(t, seed)?
            }
        };
        Ok(Self { inner })
    }

    /// Parses a PKCS#8 `PrivateKeyInfo` DER, as [`PrivateKey::to_pkcs8_der`] writes
    /// it (and as other tools write it; see the module doc for the accepted forms).
    pub fn from_pkcs8_der(der: &[u8]) -> Result<Self, AsymError> {
        if der.len() > MAX_IMPORT {
            return Err(AsymError::UnsupportedKey("key is too large".into()));
        }
        let info = PrivateKeyInfo::from_der(der)
            .map_err(|_| AsymError::UnsupportedKey("not a PKCS#8 private key".into()))?;
        let oid = info.algorithm.oid;
        let inner = if oid == OID_RSA {
            let key = PKey::private_key_from_pkcs8(der)
                .map_err(|_| AsymError::UnsupportedKey("malformed RSA private key".into()))?;
            return Self::from_rsa(key);
        } else if oid == OID_EC {
            let curve = info
                .algorithm
                .parameters_oid()
                .map_err(|_| AsymError::UnsupportedKey("EC key without a named curve".into()))?;
            if curve == OID_P256 {
                let sk = p256::SecretKey::from_pkcs8_der(der)
                    .map_err(|_| AsymError::UnsupportedKey("malformed P-256 private key".into()))?;
                ec_p256(sk.into())?
            } else if curve == OID_P384 {
                let sk = p384::SecretKey::from_pkcs8_der(der)
                    .map_err(|_| AsymError::UnsupportedKey("malformed P-384 private key".into()))?;
                ec_p384(sk.into())?
            } else {
                return Err(AsymError::UnsupportedKey(format!(
                    "EC curve {curve} is not supported (P-256 and P-384 are)"
                )));
            }
        } else if oid == OID_ED25519 {
            let sk = ed25519_dalek::SigningKey::from_pkcs8_der(der)
                .map_err(|_| AsymError::UnsupportedKey("malformed Ed25519 private key".into()))?;
            Inner::Ed25519(sk)
        } else if let Some(t) = ml_dsa_type(&oid) {
            if info.algorithm.parameters.is_some() {
                return Err(AsymError::UnsupportedKey(
                    "ML-DSA algorithm identifier must have no parameters".into(),
                ));
            }
            ml_dsa_from_private_key(t, info.private_key)?
        } else {
            return Err(AsymError::UnsupportedKey(format!(
                "key algorithm {oid} is not supported"
            )));
        };
        Ok(Self { inner })
    }

    /// Imports a key given as DER or PEM: `PRIVATE KEY` (PKCS#8), `RSA PRIVATE
    /// KEY` (PKCS#1) or `EC PRIVATE KEY` (SEC1). See the module doc for what is
    /// rejected.
    pub fn import(bytes: &[u8]) -> Result<Self, AsymError> {
        if bytes.len() > MAX_IMPORT {
            return Err(AsymError::UnsupportedKey("key is too large".into()));
        }
        let trimmed = trim_ascii(bytes);
        if !trimmed.starts_with(b"-----BEGIN ") {
            return Self::from_pkcs8_der(bytes);
        }
        let (label, der) = p256::pkcs8::der::pem::decode_vec(trimmed)
            .map_err(|_| AsymError::UnsupportedKey("malformed PEM".into()))?;
        let der = Zeroizing::new(der);
        match label {
            "PRIVATE KEY" => Self::from_pkcs8_der(&der),
            "RSA PRIVATE KEY" => {
                let rsa = Rsa::private_key_from_der(&der)
                    .map_err(|_| AsymError::UnsupportedKey("malformed RSA private key".into()))?;
                let key = PKey::from_rsa(rsa).map_err(internal("RSA key"))?;
                Self::from_rsa(key)
            }
            "EC PRIVATE KEY" => {
                // SEC1: the curve OID (when present) must match; P-256 is tried
                // first, a 48-byte scalar cannot be a P-256 key.
                let inner = p256::SecretKey::from_sec1_der(&der)
                    .map(|k| ec_p256(k.into()))
                    .or_else(|_| p384::SecretKey::from_sec1_der(&der).map(|k| ec_p384(k.into())))
                    .map_err(|_| {
                        AsymError::UnsupportedKey(
                            "EC private key is malformed or not on P-256/P-384".into(),
                        )
                    })??;
                Ok(Self { inner })
            }
            "ENCRYPTED PRIVATE KEY" => Err(AsymError::UnsupportedKey(
                "encrypted private keys are not supported: decrypt it first".into(),
            )),
            other => Err(AsymError::UnsupportedKey(format!(
                "PEM label {other:?} is not a supported private key"
            ))),
        }
    }

    fn from_rsa(key: PKey<Private>) -> Result<Self, AsymError> {
        let rsa = key
            .rsa()
            .map_err(|_| AsymError::UnsupportedKey("not an RSA key".into()))?;
        let bits = rsa.n().num_bits();
        let t = u32::try_from(bits)
            .ok()
            .and_then(AsymType::from_rsa_bits)
            .ok_or_else(|| {
                AsymError::UnsupportedKey(format!(
                    "RSA modulus of {bits} bits is not supported (2048, 3072 or 4096)"
                ))
            })?;
        if rsa.e().to_vec() != [0x01, 0x00, 0x01] {
            return Err(AsymError::UnsupportedKey(
                "RSA public exponent must be 65537".into(),
            ));
        }
        if !matches!(rsa.check_key(), Ok(true)) {
            return Err(AsymError::UnsupportedKey(
                "RSA private key is inconsistent".into(),
            ));
        }
        Ok(Self {
            inner: Inner::Rsa { key, t },
        })
    }

    /// The PKCS#8 DER the cluster stores (see the module doc for the form per type).
    pub fn to_pkcs8_der(&self) -> Zeroizing<Vec<u8>> {
        let out = match &self.inner {
            Inner::Rsa { key, .. } => key.private_key_to_pkcs8().map(Zeroizing::new).ok(),
            Inner::P256(k) => p256::SecretKey::from(&k.k)
                .to_pkcs8_der()
                .ok()
                .map(|d| d.to_bytes()),
            Inner::P384(k) => p384::SecretKey::from(&k.k)
                .to_pkcs8_der()
                .ok()
                .map(|d| d.to_bytes()),
            // PKCS#8 v1 (RFC 8410, no public key): ed25519-dalek writes v2
            // (OneAsymmetricKey with the public key), which OpenSSL 3.0 cannot read.
            Inner::Ed25519(k) => ed25519_dalek::pkcs8::KeypairBytes {
                secret_key: k.to_bytes(),
                public_key: None,
            }
            .to_pkcs8_der()
            .ok()
            .map(|d| d.to_bytes()),
            other => with_ml_dsa!(
                other,
                k,
                m,
                {
                    let oid = self.key_type().ml_dsa_oid();
                    oid.map(|oid| match &k.seed {
                        Some(seed) => ml_dsa_pkcs8(&oid, &tlv(0x80, seed.as_ref())),
                        None => {
                            let sk = Zeroizing::new(k.sk.clone().into_bytes());
                            let _ = m::SK_LEN;
                            ml_dsa_pkcs8(&oid, &tlv(0x04, sk.as_ref()))
                        }
                    })
                },
                None
            ),
        };
        // Encoding a key this module parsed or generated cannot fail.
        out.unwrap_or_default()
    }

    pub fn key_type(&self) -> AsymType {
        match &self.inner {
            Inner::Rsa { t, .. } => *t,
            Inner::P256(_) => AsymType::EcP256,
            Inner::P384(_) => AsymType::EcP384,
            Inner::Ed25519(_) => AsymType::Ed25519,
            Inner::MlDsa44(_) => AsymType::MlDsa44,
            Inner::MlDsa65(_) => AsymType::MlDsa65,
            Inner::MlDsa87(_) => AsymType::MlDsa87,
        }
    }

    /// The public key as SubjectPublicKeyInfo DER.
    pub fn public_key_der(&self) -> Vec<u8> {
        let out = match &self.inner {
            Inner::Rsa { key, .. } => key.public_key_to_der().ok(),
            Inner::P256(k) => {
                k.k.verifying_key()
                    .to_public_key_der()
                    .ok()
                    .map(|d| d.into_vec())
            }
            Inner::P384(k) => {
                k.k.verifying_key()
                    .to_public_key_der()
                    .ok()
                    .map(|d| d.into_vec())
            }
            Inner::Ed25519(k) => k
                .verifying_key()
                .to_public_key_der()
                .ok()
                .map(|d| d.into_vec()),
            other => with_ml_dsa!(
                other,
                k,
                m,
                {
                    let _ = m::PK_LEN;
                    self.key_type()
                        .ml_dsa_oid()
                        .map(|oid| ml_dsa_spki(&oid, &k.pk))
                },
                None
            ),
        };
        out.unwrap_or_default()
    }

    /// The public half, parsed.
    pub fn public_key(&self) -> Result<PublicKey, AsymError> {
        PublicKey::from_spki_der(&self.public_key_der())
    }

    /// Signs `input` (a message, or a digest with `prehashed`) with `alg`, which
    /// must fit the key type.
    pub fn sign(&self, alg: &SignAlg, input: &[u8]) -> Result<Vec<u8>, AsymError> {
        let t = self.key_type();
        if !t.fits(alg) {
            return Err(AsymError::WrongAlgorithm(format!(
                "{} cannot be used with a {} key",
                alg.name(),
                t.name()
            )));
        }
        check_sign_hashes(alg)?;
        match (&self.inner, alg) {
            (Inner::P256(k), SignAlg::Ecdsa { hash, prehashed }) => {
                let d = digest_input(*hash, *prehashed, input)?;
                check_ecdsa_digest(t, &d)?;
                ossl_ecdsa_sign(&k.ossl, &d, 32)
            }
            (Inner::P384(k), SignAlg::Ecdsa { hash, prehashed }) => {
                let d = digest_input(*hash, *prehashed, input)?;
                check_ecdsa_digest(t, &d)?;
                ossl_ecdsa_sign(&k.ossl, &d, 48)
            }
            (Inner::Ed25519(k), SignAlg::Ed25519) => {
                use ed25519_dalek::Signer as _;
                Ok(k.sign(input).to_bytes().to_vec())
            }
            (Inner::Rsa { key, .. }, _) => rsa_sign(key, t, alg, input),
            (
                inner,
                SignAlg::MlDsa {
                    context,
                    deterministic,
                },
            ) => {
                if context.len() > MAX_CONTEXT {
                    return Err(AsymError::BadInput(format!(
                        "ML-DSA context is {} bytes, at most {MAX_CONTEXT} allowed",
                        context.len()
                    )));
                }
                let r = with_ml_dsa!(
                    inner,
                    k,
                    m,
                    {
                        let r: Result<[u8; m::SIG_LEN], _> = if *deterministic {
                            k.sk.try_sign_with_seed(&[0u8; 32], input, context)
                        } else {
                            k.sk.try_sign(input, context)
                        };
                        r.map(|s| s.to_vec())
                    },
                    Err("not an ML-DSA key")
                );
                r.map_err(|e| AsymError::Internal(format!("ML-DSA signing: {e}")))
            }
            _ => Err(AsymError::WrongAlgorithm(alg.name().into())),
        }
    }

    /// RSAES-OAEP decryption with the given hash, MGF1 hash and label. Every
    /// failure after the key-type check is [`AsymError::Decrypt`].
    pub fn decrypt_oaep(
        &self,
        hash: Hash,
        mgf1: Hash,
        label: &[u8],
        ct: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, AsymError> {
        let Inner::Rsa { key, t } = &self.inner else {
            return Err(AsymError::WrongAlgorithm(format!(
                "RSA-OAEP decryption needs an RSA key, not {}",
                self.key_type().name()
            )));
        };
        let k = t.signature_len();
        if ct.len() != k {
            return Err(AsymError::Decrypt);
        }
        let run = || -> Result<Zeroizing<Vec<u8>>, openssl::error::ErrorStack> {
            let mut ctx = PkeyCtx::new(key)?;
            ctx.decrypt_init()?;
            ctx.set_rsa_padding(Padding::PKCS1_OAEP)?;
            ctx.set_rsa_oaep_md(hash.md())?;
            ctx.set_rsa_mgf1_md(mgf1.md())?;
            if !label.is_empty() {
                ctx.set_rsa_oaep_label(label)?;
            }
            let mut out = Zeroizing::new(vec![0u8; k]);
            let n = ctx.decrypt(ct, Some(out.as_mut_slice()))?;
            out.truncate(n);
            Ok(out)
        };
        run().map_err(|_| AsymError::Decrypt)
    }
}

fn trim_ascii(b: &[u8]) -> &[u8] {
    let start = b
        .iter()
        .position(|c| !c.is_ascii_whitespace())
        .unwrap_or(b.len());
    let end = b
        .iter()
        .rposition(|c| !c.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    b.get(start..end).unwrap_or_default()
}

/// SHA-1 may verify old signatures but never make new ones.
fn check_sign_hashes(alg: &SignAlg) -> Result<(), AsymError> {
    let sha1 = match alg {
        SignAlg::Ecdsa { hash, .. } => *hash == Hash::Sha1,
        SignAlg::RsaPkcs1 { hash, .. } => *hash == Some(Hash::Sha1),
        SignAlg::RsaPss { hash, mgf1, .. } => *hash == Hash::Sha1 || *mgf1 == Hash::Sha1,
        SignAlg::Ed25519 | SignAlg::MlDsa { .. } => false,
    };
    if sha1 {
        return Err(AsymError::WrongAlgorithm(
            "SHA-1 is not allowed for new signatures".into(),
        ));
    }
    Ok(())
}

/// The digest to sign or verify: the input itself when prehashed (length checked),
/// else its hash.
fn digest_input(hash: Hash, prehashed: bool, input: &[u8]) -> Result<Vec<u8>, AsymError> {
    if prehashed {
        if input.len() != hash.output_len() {
            return Err(AsymError::BadInput(format!(
                "a {} digest is {} bytes, got {}",
                hash.name(),
                hash.output_len(),
                input.len()
            )));
        }
        Ok(input.to_vec())
    } else {
        Ok(hash.digest(input))
    }
}

/// `ecdsa` rejects digests shorter than half the field size.
fn check_ecdsa_digest(t: AsymType, d: &[u8]) -> Result<(), AsymError> {
    let min = t.signature_len() / 4;
    if d.len() < min {
        return Err(AsymError::BadInput(format!(
            "ECDSA on {} needs a digest of at least {min} bytes",
            t.name()
        )));
    }
    Ok(())
}

fn rsa_sign(
    key: &PKey<Private>,
    t: AsymType,
    alg: &SignAlg,
    input: &[u8],
) -> Result<Vec<u8>, AsymError> {
    let k = t.signature_len();
    let mut ctx = PkeyCtx::new(key).map_err(internal("RSA"))?;
    ctx.sign_init().map_err(internal("RSA sign"))?;
    let tbs = match alg {
        SignAlg::RsaPkcs1 { hash, prehashed } => {
            ctx.set_rsa_padding(Padding::PKCS1)
                .map_err(internal("RSA sign"))?;
            match hash {
                Some(h) => {
                    ctx.set_signature_md(h.md()).map_err(internal("RSA sign"))?;
                    digest_input(*h, *prehashed, input)?
                }
                None => {
                    if input.len() > k - 11 {
                        return Err(AsymError::BadInput(format!(
                            "raw PKCS#1 input is {} bytes, at most {} for a {} key",
                            input.len(),
                            k - 11,
                            t.name()
                        )));
                    }
                    input.to_vec()
                }
            }
        }
        SignAlg::RsaPss {
            hash,
            mgf1,
            salt_len,
            prehashed,
        } => {
            // EMSA-PSS: emLen = k (the moduli here are whole bytes) >= hLen + sLen + 2.
            if salt_len.saturating_add(hash.output_len() + 2) > k {
                return Err(AsymError::BadInput(format!(
                    "PSS salt of {salt_len} bytes is too long for {} with {}",
                    t.name(),
                    hash.name()
                )));
            }
            let salt = i32::try_from(*salt_len)
                .map_err(|_| AsymError::BadInput("PSS salt length".into()))?;
            ctx.set_rsa_padding(Padding::PKCS1_PSS)
                .map_err(internal("RSA sign"))?;
            ctx.set_signature_md(hash.md())
                .map_err(internal("RSA sign"))?;
            ctx.set_rsa_pss_saltlen(RsaPssSaltlen::custom(salt))
                .map_err(internal("RSA sign"))?;
            ctx.set_rsa_mgf1_md(mgf1.md())
                .map_err(internal("RSA sign"))?;
            digest_input(*hash, *prehashed, input)?
        }
        _ => return Err(AsymError::WrongAlgorithm(alg.name().into())),
    };
    let mut sig = Vec::with_capacity(k);
    ctx.sign_to_vec(&tbs, &mut sig)
        .map_err(internal("RSA sign"))?;
    Ok(sig)
}

// ----- ML-DSA encodings -----

fn ml_dsa_type(oid: &ObjectIdentifier) -> Option<AsymType> {
    [AsymType::MlDsa44, AsymType::MlDsa65, AsymType::MlDsa87]
        .into_iter()
        .find(|t| t.ml_dsa_oid().as_ref() == Some(oid))
}

fn ml_dsa_from_seed(t: AsymType, seed: Zeroizing<[u8; 32]>) -> Result<Inner, AsymError> {
    Ok(match t {
        AsymType::MlDsa44 => {
            let (pk, sk) = fips204::ml_dsa_44::KG::keygen_from_seed(&seed);
            Inner::MlDsa44(Box::new(MlDsaKey {
                sk,
                seed: Some(seed),
                pk: pk.into_bytes().to_vec(),
            }))
        }
        AsymType::MlDsa65 => {
            let (pk, sk) = fips204::ml_dsa_65::KG::keygen_from_seed(&seed);
            Inner::MlDsa65(Box::new(MlDsaKey {
                sk,
                seed: Some(seed),
                pk: pk.into_bytes().to_vec(),
            }))
        }
        AsymType::MlDsa87 => {
            let (pk, sk) = fips204::ml_dsa_87::KG::keygen_from_seed(&seed);
            Inner::MlDsa87(Box::new(MlDsaKey {
                sk,
                seed: Some(seed),
                pk: pk.into_bytes().to_vec(),
            }))
        }
        _ => return Err(AsymError::UnsupportedKey("not an ML-DSA type".into())),
    })
}

fn ml_dsa_from_expanded(t: AsymType, bytes: &[u8]) -> Result<Inner, AsymError> {
    macro_rules! expand {
        ($m:ident, $v:ident) => {{
            let arr: Zeroizing<[u8; fips204::$m::SK_LEN]> =
                Zeroizing::new(bytes.try_into().map_err(|_| {
                    AsymError::UnsupportedKey(format!(
                        "{} expanded private key must be {} bytes",
                        t.name(),
                        fips204::$m::SK_LEN
                    ))
                })?);
            let sk = fips204::$m::PrivateKey::try_from_bytes(*arr).map_err(|_| {
                AsymError::UnsupportedKey(format!("malformed {} private key", t.name()))
            })?;
            // The encoding must round-trip (rejects out-of-range coefficients).
            let again = Zeroizing::new(sk.clone().into_bytes());
            if !bool::from(again.as_ref().ct_eq(arr.as_ref())) {
                return Err(AsymError::UnsupportedKey(format!(
                    "malformed {} private key",
                    t.name()
                )));
            }
            let pk = sk.get_public_key().into_bytes().to_vec();
            Inner::$v(Box::new(MlDsaKey { sk, seed: None, pk }))
        }};
    }
    Ok(match t {
        AsymType::MlDsa44 => expand!(ml_dsa_44, MlDsa44),
        AsymType::MlDsa65 => expand!(ml_dsa_65, MlDsa65),
        AsymType::MlDsa87 => expand!(ml_dsa_87, MlDsa87),
        _ => return Err(AsymError::UnsupportedKey("not an ML-DSA type".into())),
    })
}

/// The `privateKey` OCTET STRING content of an ML-DSA PKCS#8 (RFC 9881):
/// `seed [0] IMPLICIT OCTET STRING (32)`, `expandedKey OCTET STRING`, or
/// `both SEQUENCE { seed OCTET STRING (32), expandedKey OCTET STRING }`.
fn ml_dsa_from_private_key(t: AsymType, body: &[u8]) -> Result<Inner, AsymError> {
    let bad = || AsymError::UnsupportedKey(format!("malformed {} private key", t.name()));
    let (tag, content, rest) = read_tlv(body).ok_or_else(bad)?;
    if !rest.is_empty() {
        return Err(bad());
    }
    let seed_of = |c: &[u8]| -> Result<Zeroizing<[u8; 32]>, AsymError> {
        let s: [u8; 32] = c.try_into().map_err(|_| {
            AsymError::UnsupportedKey(format!("{} seed must be 32 bytes", t.name()))
        })?;
        Ok(Zeroizing::new(s))
    };
    match tag {
        0x80 => ml_dsa_from_seed(t, seed_of(content)?),
        0x04 => ml_dsa_from_expanded(t, content),
        0x30 => {
            let (t1, seed, rest) = read_tlv(content).ok_or_else(bad)?;
            let (t2, expanded, rest) = read_tlv(rest).ok_or_else(bad)?;
            if t1 != 0x04 || t2 != 0x04 || !rest.is_empty() {
                return Err(bad());
            }
            let from_seed = ml_dsa_from_seed(t, seed_of(seed)?)?;
            let key = PrivateKey { inner: from_seed };
            let derived = with_ml_dsa!(
                &key.inner,
                k,
                m,
                {
                    let _ = m::SK_LEN;
                    Zeroizing::new(k.sk.clone().into_bytes().to_vec())
                },
                Zeroizing::new(Vec::new())
            );
            if !bool::from(derived.as_slice().ct_eq(expanded)) {
                return Err(AsymError::UnsupportedKey(format!(
                    "{} private key: the expanded key does not match the seed",
                    t.name()
                )));
            }
            Ok(key.inner)
        }
        _ => Err(bad()),
    }
}

fn ml_dsa_alg_id(oid: &ObjectIdentifier) -> Vec<u8> {
    tlv(0x30, &tlv(0x06, oid.as_bytes()))
}

fn ml_dsa_pkcs8(oid: &ObjectIdentifier, private_key: &[u8]) -> Zeroizing<Vec<u8>> {
    let mut body = Zeroizing::new(vec![0x02, 0x01, 0x00]);
    body.extend_from_slice(&ml_dsa_alg_id(oid));
    body.extend_from_slice(&tlv(0x04, private_key));
    Zeroizing::new(tlv(0x30, &body))
}

fn ml_dsa_spki(oid: &ObjectIdentifier, pk: &[u8]) -> Vec<u8> {
    let mut bits = Vec::with_capacity(pk.len() + 1);
    bits.push(0);
    bits.extend_from_slice(pk);
    let mut body = ml_dsa_alg_id(oid);
    body.extend_from_slice(&tlv(0x03, &bits));
    tlv(0x30, &body)
}

/// DER tag-length-value with a definite, minimal length.
fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(content.len() + 6);
    out.push(tag);
    let n = content.len();
    if n < 0x80 {
        out.push(n as u8);
    } else {
        let be = n.to_be_bytes();
        let skip = be.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (be.len() - skip) as u8);
        out.extend_from_slice(&be[skip..]);
    }
    out.extend_from_slice(content);
    out
}

/// Reads one DER TLV (single-byte tag, minimal definite length): (tag, content, rest).
fn read_tlv(b: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, b) = b.split_first()?;
    let (&l0, mut b) = b.split_first()?;
    let len = if l0 < 0x80 {
        usize::from(l0)
    } else {
        let n = usize::from(l0 & 0x7f);
        if n == 0 || n > 4 || b.len() < n {
            return None;
        }
        let (lb, rest) = b.split_at(n);
        b = rest;
        if lb[0] == 0 {
            return None;
        }
        let len = lb.iter().fold(0usize, |a, x| (a << 8) | usize::from(*x));
        if len < 0x80 {
            return None;
        }
        len
    };
    if b.len() < len {
        return None;
    }
    let (content, rest) = b.split_at(len);
    Some((tag, content, rest))
}

// ----- public keys and verification -----

enum PubInner {
    Rsa {
        key: PKey<openssl::pkey::Public>,
        t: AsymType,
    },
    P256(p256::ecdsa::VerifyingKey),
    P384(p384::ecdsa::VerifyingKey),
    Ed25519(ed25519_dalek::VerifyingKey),
    /// Raw public key, length checked against the parameter set.
    MlDsa {
        t: AsymType,
        pk: Vec<u8>,
    },
}

/// A parsed SubjectPublicKeyInfo of a supported type.
pub struct PublicKey {
    inner: PubInner,
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PublicKey")
            .field("type", &self.key_type())
            .finish_non_exhaustive()
    }
}

impl PublicKey {
    /// Parses an SPKI DER and detects its type. RSA keys must have 2048, 3072
    /// or 4096 bits (any exponent is accepted for verification).
    pub fn from_spki_der(der: &[u8]) -> Result<Self, AsymError> {
        use p256::pkcs8::spki::SubjectPublicKeyInfoRef;
        if der.len() > MAX_IMPORT {
            return Err(AsymError::UnsupportedKey("public key is too large".into()));
        }
        let spki = SubjectPublicKeyInfoRef::from_der(der)
            .map_err(|_| AsymError::UnsupportedKey("not a SubjectPublicKeyInfo".into()))?;
        let oid = spki.algorithm.oid;
        let inner =
            if oid == OID_RSA {
                let key = PKey::public_key_from_der(der)
                    .map_err(|_| AsymError::UnsupportedKey("malformed RSA public key".into()))?;
                let bits = key.bits();
                let t = AsymType::from_rsa_bits(bits).ok_or_else(|| {
                    AsymError::UnsupportedKey(format!(
                        "RSA modulus of {bits} bits is not supported (2048, 3072 or 4096)"
                    ))
                })?;
                PubInner::Rsa { key, t }
            } else if oid == OID_EC {
                let curve = spki.algorithm.parameters_oid().map_err(|_| {
                    AsymError::UnsupportedKey("EC key without a named curve".into())
                })?;
                if curve == OID_P256 {
                    PubInner::P256(p256::ecdsa::VerifyingKey::from_public_key_der(der).map_err(
                        |_| AsymError::UnsupportedKey("malformed P-256 public key".into()),
                    )?)
                } else if curve == OID_P384 {
                    PubInner::P384(p384::ecdsa::VerifyingKey::from_public_key_der(der).map_err(
                        |_| AsymError::UnsupportedKey("malformed P-384 public key".into()),
                    )?)
                } else {
                    return Err(AsymError::UnsupportedKey(format!(
                        "EC curve {curve} is not supported (P-256 and P-384 are)"
                    )));
                }
            } else if oid == OID_ED25519 {
                PubInner::Ed25519(
                    ed25519_dalek::VerifyingKey::from_public_key_der(der).map_err(|_| {
                        AsymError::UnsupportedKey("malformed Ed25519 public key".into())
                    })?,
                )
            } else if let Some(t) = ml_dsa_type(&oid) {
                let pk = spki.subject_public_key.as_bytes().ok_or_else(|| {
                    AsymError::UnsupportedKey("ML-DSA public key is not whole bytes".into())
                })?;
                let want = match t {
                    AsymType::MlDsa44 => fips204::ml_dsa_44::PK_LEN,
                    AsymType::MlDsa65 => fips204::ml_dsa_65::PK_LEN,
                    _ => fips204::ml_dsa_87::PK_LEN,
                };
                if spki.algorithm.parameters.is_some() || pk.len() != want {
                    return Err(AsymError::UnsupportedKey(format!(
                        "malformed {} public key",
                        t.name()
                    )));
                }
                PubInner::MlDsa { t, pk: pk.to_vec() }
            } else {
                return Err(AsymError::UnsupportedKey(format!(
                    "key algorithm {oid} is not supported"
                )));
            };
        Ok(Self { inner })
    }

    pub fn key_type(&self) -> AsymType {
        match &self.inner {
            PubInner::Rsa { t, .. } | PubInner::MlDsa { t, .. } => *t,
            PubInner::P256(_) => AsymType::EcP256,
            PubInner::P384(_) => AsymType::EcP384,
            PubInner::Ed25519(_) => AsymType::Ed25519,
        }
    }

    /// Verifies `sig` over `input` (message, or digest with `prehashed`).
    /// `Err(BadSignature)` for a signature that does not verify or is malformed.
    pub fn verify(&self, alg: &SignAlg, input: &[u8], sig: &[u8]) -> Result<(), AsymError> {
        let t = self.key_type();
        if !t.fits(alg) {
            return Err(AsymError::WrongAlgorithm(format!(
                "{} cannot be used with a {} key",
                alg.name(),
                t.name()
            )));
        }
        let ok = match (&self.inner, alg) {
            (PubInner::P256(k), SignAlg::Ecdsa { hash, prehashed }) => {
                let d = digest_input(*hash, *prehashed, input)?;
                check_ecdsa_digest(t, &d)?;
                let sig =
                    p256::ecdsa::Signature::from_slice(sig).map_err(|_| AsymError::BadSignature)?;
                k.verify_prehash(&d, &sig).is_ok()
            }
            (PubInner::P384(k), SignAlg::Ecdsa { hash, prehashed }) => {
                let d = digest_input(*hash, *prehashed, input)?;
                check_ecdsa_digest(t, &d)?;
                let sig =
                    p384::ecdsa::Signature::from_slice(sig).map_err(|_| AsymError::BadSignature)?;
                k.verify_prehash(&d, &sig).is_ok()
            }
            (PubInner::Ed25519(k), SignAlg::Ed25519) => {
                let sig = ed25519_dalek::Signature::from_slice(sig)
                    .map_err(|_| AsymError::BadSignature)?;
                k.verify_strict(input, &sig).is_ok()
            }
            (PubInner::Rsa { key, t }, _) => rsa_verify(key, *t, alg, input, sig)?,
            (
                PubInner::MlDsa { t, pk },
                SignAlg::MlDsa {
                    context,
                    deterministic: _,
                },
            ) => {
                if context.len() > MAX_CONTEXT {
                    return Err(AsymError::BadInput(format!(
                        "ML-DSA context is {} bytes, at most {MAX_CONTEXT} allowed",
                        context.len()
                    )));
                }
                macro_rules! mldsa_verify {
                    ($m:ident) => {{
                        let pk: [u8; fips204::$m::PK_LEN] = pk
                            .as_slice()
                            .try_into()
                            .map_err(|_| AsymError::UnsupportedKey("ML-DSA public key".into()))?;
                        let pk = fips204::$m::PublicKey::try_from_bytes(pk).map_err(|_| {
                            AsymError::UnsupportedKey("malformed ML-DSA public key".into())
                        })?;
                        let sig: &[u8; fips204::$m::SIG_LEN] =
                            sig.try_into().map_err(|_| AsymError::BadSignature)?;
                        pk.verify(input, sig, context)
                    }};
                }
                match t {
                    AsymType::MlDsa44 => mldsa_verify!(ml_dsa_44),
                    AsymType::MlDsa65 => mldsa_verify!(ml_dsa_65),
                    _ => mldsa_verify!(ml_dsa_87),
                }
            }
            _ => return Err(AsymError::WrongAlgorithm(alg.name().into())),
        };
        if ok {
            Ok(())
        } else {
            Err(AsymError::BadSignature)
        }
    }
}

fn rsa_verify(
    key: &PKey<openssl::pkey::Public>,
    t: AsymType,
    alg: &SignAlg,
    input: &[u8],
    sig: &[u8],
) -> Result<bool, AsymError> {
    let k = t.signature_len();
    let mut ctx = PkeyCtx::new(key).map_err(internal("RSA"))?;
    ctx.verify_init().map_err(internal("RSA verify"))?;
    let tbs = match alg {
        SignAlg::RsaPkcs1 { hash, prehashed } => {
            ctx.set_rsa_padding(Padding::PKCS1)
                .map_err(internal("RSA verify"))?;
            match hash {
                Some(h) => {
                    ctx.set_signature_md(h.md())
                        .map_err(internal("RSA verify"))?;
                    digest_input(*h, *prehashed, input)?
                }
                None => {
                    if input.len() > k - 11 {
                        return Err(AsymError::BadInput(format!(
                            "raw PKCS#1 input is {} bytes, at most {}",
                            input.len(),
                            k - 11
                        )));
                    }
                    input.to_vec()
                }
            }
        }
        SignAlg::RsaPss {
            hash,
            mgf1,
            salt_len,
            prehashed,
        } => {
            if salt_len.saturating_add(hash.output_len() + 2) > k {
                return Err(AsymError::BadInput(format!(
                    "PSS salt of {salt_len} bytes is too long"
                )));
            }
            let salt = i32::try_from(*salt_len)
                .map_err(|_| AsymError::BadInput("PSS salt length".into()))?;
            ctx.set_rsa_padding(Padding::PKCS1_PSS)
                .map_err(internal("RSA verify"))?;
            ctx.set_signature_md(hash.md())
                .map_err(internal("RSA verify"))?;
            ctx.set_rsa_pss_saltlen(RsaPssSaltlen::custom(salt))
                .map_err(internal("RSA verify"))?;
            ctx.set_rsa_mgf1_md(mgf1.md())
                .map_err(internal("RSA verify"))?;
            digest_input(*hash, *prehashed, input)?
        }
        _ => return Err(AsymError::WrongAlgorithm(alg.name().into())),
    };
    if sig.len() != k {
        return Ok(false);
    }
    // OpenSSL reports some malformed signatures as errors, others as `false`.
    Ok(ctx.verify(&tbs, sig).unwrap_or(false))
}

/// Verifies `sig` over `input` with the public key `spki_der` (see [`PublicKey::verify`]).
pub fn verify(spki_der: &[u8], alg: &SignAlg, input: &[u8], sig: &[u8]) -> Result<(), AsymError> {
    PublicKey::from_spki_der(spki_der)?.verify(alg, input, sig)
}

/// PEM `PUBLIC KEY` of an SPKI DER, 64 base64 characters a line.
pub fn public_key_pem(spki_der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(spki_der);
    let mut out = String::with_capacity(b64.len() + b64.len() / 64 + 60);
    out.push_str("-----BEGIN PUBLIC KEY-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str("-----END PUBLIC KEY-----\n");
    out
}

/// `SHA256:` and the unpadded base64 of SHA-256 over the SPKI DER (OpenSSH style).
pub fn fingerprint(spki_der: &[u8]) -> String {
    use sha2::Digest as _;
    let d = sha2::Sha256::digest(spki_der);
    format!(
        "SHA256:{}",
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(d)
    )
}

// ----- ECDSA signature encodings -----

fn ec_field_len(t: AsymType) -> Result<usize, AsymError> {
    match t {
        AsymType::EcP256 => Ok(32),
        AsymType::EcP384 => Ok(48),
        _ => Err(AsymError::WrongAlgorithm(format!(
            "{} is not an ECDSA key type",
            t.name()
        ))),
    }
}

/// Converts a raw `r || s` ECDSA signature (64 or 96 bytes) to X9.62 DER
/// `SEQUENCE { r INTEGER, s INTEGER }`.
pub fn ecdsa_raw_to_der(raw: &[u8]) -> Result<Vec<u8>, AsymError> {
    if raw.len() != 64 && raw.len() != 96 {
        return Err(AsymError::BadInput(format!(
            "a raw ECDSA signature is 64 or 96 bytes, got {}",
            raw.len()
        )));
    }
    let (r, s) = raw.split_at(raw.len() / 2);
    let int = |x: &[u8]| {
        let x = &x[x.iter().take_while(|b| **b == 0).count()..];
        let mut c = Vec::with_capacity(x.len() + 1);
        if x.first().is_none_or(|b| b & 0x80 != 0) {
            c.push(0);
        }
        c.extend_from_slice(x);
        tlv(0x02, &c)
    };
    let mut body = int(r);
    body.extend_from_slice(&int(s));
    Ok(tlv(0x30, &body))
}

/// Converts a DER ECDSA signature to raw `r || s` for key type `t` (EC-P256 or
/// EC-P384). Strict DER: minimal integers, positive, no trailing bytes.
pub fn ecdsa_der_to_raw(der: &[u8], t: AsymType) -> Result<Vec<u8>, AsymError> {
    let n = ec_field_len(t)?;
    let bad = || AsymError::BadInput("malformed DER ECDSA signature".into());
    let (tag, body, rest) = read_tlv(der).ok_or_else(bad)?;
    if tag != 0x30 || !rest.is_empty() {
        return Err(bad());
    }
    let mut out = vec![0u8; 2 * n];
    let mut cur = body;
    for half in out.chunks_mut(n) {
        let (tag, int, rest) = read_tlv(cur).ok_or_else(bad)?;
        cur = rest;
        if tag != 0x02 || int.is_empty() || int[0] & 0x80 != 0 {
            return Err(bad());
        }
        if int.len() > 1 && int[0] == 0 && int[1] & 0x80 == 0 {
            return Err(bad());
        }
        let v = &int[int.iter().take_while(|b| **b == 0).count()..];
        if v.len() > n {
            return Err(bad());
        }
        half[n - v.len()..].copy_from_slice(v);
    }
    if !cur.is_empty() {
        return Err(bad());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn algs_for(t: AsymType) -> Vec<SignAlg> {
        match t {
            AsymType::EcP256 | AsymType::EcP384 => vec![
                SignAlg::Ecdsa {
                    hash: Hash::Sha256,
                    prehashed: false,
                },
                SignAlg::Ecdsa {
                    hash: Hash::Sha384,
                    prehashed: false,
                },
                SignAlg::Ecdsa {
                    hash: Hash::Sha512,
                    prehashed: true,
                },
                SignAlg::Ecdsa {
                    hash: Hash::Sha224,
                    prehashed: true,
                },
            ],
            AsymType::Ed25519 => vec![SignAlg::Ed25519],
            AsymType::Rsa2048 | AsymType::Rsa3072 | AsymType::Rsa4096 => vec![
                SignAlg::RsaPkcs1 {
                    hash: Some(Hash::Sha256),
                    prehashed: false,
                },
                SignAlg::RsaPkcs1 {
                    hash: Some(Hash::Sha512),
                    prehashed: true,
                },
                SignAlg::RsaPkcs1 {
                    hash: None,
                    prehashed: false,
                },
                SignAlg::RsaPss {
                    hash: Hash::Sha256,
                    mgf1: Hash::Sha256,
                    salt_len: 32,
                    prehashed: false,
                },
                SignAlg::RsaPss {
                    hash: Hash::Sha384,
                    mgf1: Hash::Sha256,
                    salt_len: 0,
                    prehashed: true,
                },
            ],
            _ => vec![
                SignAlg::MlDsa {
                    context: vec![],
                    deterministic: false,
                },
                SignAlg::MlDsa {
                    context: b"ctx".to_vec(),
                    deterministic: true,
                },
            ],
        }
    }

    fn input_for(alg: &SignAlg) -> Vec<u8> {
        match alg {
            SignAlg::Ecdsa {
                hash,
                prehashed: true,
            }
            | SignAlg::RsaPkcs1 {
                hash: Some(hash),
                prehashed: true,
            }
            | SignAlg::RsaPss {
                hash,
                prehashed: true,
                ..
            } => hash.digest(b"message"),
            SignAlg::RsaPkcs1 { hash: None, .. } => {
                // DigestInfo for SHA-256 (RFC 8017 9.2 note 1) + digest.
                let mut di = hex::decode("3031300d060960864801650304020105000420").unwrap();
                di.extend_from_slice(&Hash::Sha256.digest(b"message"));
                di
            }
            _ => b"message".to_vec(),
        }
    }

    #[test]
    fn asym_round_trip_every_type() {
        for t in AsymType::ALL {
            let k = PrivateKey::generate(t).unwrap();
            assert_eq!(k.key_type(), t);
            let der = k.to_pkcs8_der();
            let k2 = PrivateKey::from_pkcs8_der(&der).unwrap();
            assert_eq!(k2.key_type(), t);
            assert_eq!(k2.public_key_der(), k.public_key_der());
            assert_eq!(*k2.to_pkcs8_der(), *der, "{t}: PKCS#8 round trip");
            let spki = k.public_key_der();
            assert_eq!(PublicKey::from_spki_der(&spki).unwrap().key_type(), t);
            assert!(!format!("{k:?}").contains(&hex::encode(&der[der.len() - 16..])));
            for alg in algs_for(t) {
                let input = input_for(&alg);
                let sig = k2
                    .sign(&alg, &input)
                    .unwrap_or_else(|e| panic!("{t} {alg:?}: {e}"));
                assert_eq!(sig.len(), t.signature_len(), "{t} {alg:?}");
                verify(&spki, &alg, &input, &sig).unwrap_or_else(|e| panic!("{t} {alg:?}: {e}"));
                let mut bad = sig.clone();
                bad[sig.len() / 2] ^= 0x01;
                assert_eq!(
                    verify(&spki, &alg, &input, &bad),
                    Err(AsymError::BadSignature),
                    "{t} {alg:?}"
                );
                let mut other = input.clone();
                other[0] ^= 0x80;
                assert_eq!(
                    verify(&spki, &alg, &other, &sig),
                    Err(AsymError::BadSignature),
                    "{t} {alg:?}"
                );
                assert_eq!(
                    verify(&spki, &alg, &input, &sig[..sig.len() - 1]),
                    Err(AsymError::BadSignature)
                );
            }
            // Every algorithm of the other families is refused.
            for other in AsymType::ALL
                .into_iter()
                .filter(|o| o.fits(&algs_for(*o)[0]) && !t.fits(&algs_for(*o)[0]))
            {
                let alg = &algs_for(other)[0];
                assert!(
                    matches!(
                        k.sign(alg, &input_for(alg)),
                        Err(AsymError::WrongAlgorithm(_))
                    ),
                    "{t} {alg:?}"
                );
                assert!(matches!(
                    verify(&spki, alg, &input_for(alg), &[0; 64]),
                    Err(AsymError::WrongAlgorithm(_))
                ));
            }
            if !t.is_rsa() {
                assert!(matches!(
                    k.decrypt_oaep(Hash::Sha256, Hash::Sha256, b"", &[0; 256]),
                    Err(AsymError::WrongAlgorithm(_))
                ));
            }
        }
    }

    #[test]
    fn asym_deterministic_signatures() {
        // ECDSA signs through OpenSSL, whose nonces are random: two
        // signatures of one message differ and both verify.
        for t in [AsymType::EcP256, AsymType::EcP384] {
            let k = PrivateKey::generate(t).unwrap();
            let alg = SignAlg::Ecdsa {
                hash: Hash::Sha256,
                prehashed: false,
            };
            let (a, b) = (k.sign(&alg, b"m").unwrap(), k.sign(&alg, b"m").unwrap());
            assert_ne!(a, b, "{t}");
            for sig in [a, b] {
                verify(&k.public_key_der(), &alg, b"m", &sig).unwrap();
            }
        }
        for t in [AsymType::Ed25519, AsymType::MlDsa44] {
            let k = PrivateKey::generate(t).unwrap();
            let alg = match t {
                AsymType::Ed25519 => SignAlg::Ed25519,
                AsymType::MlDsa44 => SignAlg::MlDsa {
                    context: vec![],
                    deterministic: true,
                },
                _ => SignAlg::Ecdsa {
                    hash: Hash::Sha256,
                    prehashed: false,
                },
            };
            assert_eq!(
                k.sign(&alg, b"m").unwrap(),
                k.sign(&alg, b"m").unwrap(),
                "{t}"
            );
        }
        let k = PrivateKey::generate(AsymType::MlDsa44).unwrap();
        let hedged = SignAlg::MlDsa {
            context: vec![],
            deterministic: false,
        };
        assert_ne!(
            k.sign(&hedged, b"m").unwrap(),
            k.sign(&hedged, b"m").unwrap()
        );
    }

    #[test]
    fn asym_bad_inputs_are_errors() {
        let ec = PrivateKey::generate(AsymType::EcP256).unwrap();
        let prehashed = SignAlg::Ecdsa {
            hash: Hash::Sha256,
            prehashed: true,
        };
        assert!(matches!(
            ec.sign(&prehashed, &[0; 31]),
            Err(AsymError::BadInput(_))
        ));
        assert!(matches!(
            ec.sign(&prehashed, &[]),
            Err(AsymError::BadInput(_))
        ));
        let sha1 = SignAlg::Ecdsa {
            hash: Hash::Sha1,
            prehashed: false,
        };
        assert!(matches!(
            ec.sign(&sha1, b"x"),
            Err(AsymError::WrongAlgorithm(_))
        ));
        let big = vec![7u8; 1 << 20];
        let alg = SignAlg::Ecdsa {
            hash: Hash::Sha384,
            prehashed: false,
        };
        let sig = ec.sign(&alg, &big).unwrap();
        verify(&ec.public_key_der(), &alg, &big, &sig).unwrap();

        let ml = PrivateKey::generate(AsymType::MlDsa65).unwrap();
        let long_ctx = SignAlg::MlDsa {
            context: vec![0; 256],
            deterministic: false,
        };
        assert!(matches!(
            ml.sign(&long_ctx, b"m"),
            Err(AsymError::BadInput(_))
        ));
        let ok_ctx = SignAlg::MlDsa {
            context: vec![0; 255],
            deterministic: false,
        };
        let sig = ml.sign(&ok_ctx, b"m").unwrap();
        verify(&ml.public_key_der(), &ok_ctx, b"m", &sig).unwrap();
        let other_ctx = SignAlg::MlDsa {
            context: vec![1; 255],
            deterministic: false,
        };
        assert_eq!(
            verify(&ml.public_key_der(), &other_ctx, b"m", &sig),
            Err(AsymError::BadSignature)
        );

        let rsa = PrivateKey::generate(AsymType::Rsa2048).unwrap();
        let raw = SignAlg::RsaPkcs1 {
            hash: None,
            prehashed: false,
        };
        assert!(matches!(
            rsa.sign(&raw, &[1; 246]),
            Err(AsymError::BadInput(_))
        ));
        rsa.sign(&raw, &[1; 245]).unwrap();
        let pss = SignAlg::RsaPss {
            hash: Hash::Sha512,
            mgf1: Hash::Sha512,
            salt_len: 256 - 64 - 1,
            prehashed: false,
        };
        assert!(matches!(rsa.sign(&pss, b"m"), Err(AsymError::BadInput(_))));
        let pss = SignAlg::RsaPss {
            hash: Hash::Sha512,
            mgf1: Hash::Sha512,
            salt_len: 256 - 64 - 2,
            prehashed: false,
        };
        let sig = rsa.sign(&pss, b"m").unwrap();
        verify(&rsa.public_key_der(), &pss, b"m", &sig).unwrap();
        let pss = SignAlg::RsaPss {
            hash: Hash::Sha256,
            mgf1: Hash::Sha256,
            salt_len: usize::MAX,
            prehashed: false,
        };
        assert!(matches!(rsa.sign(&pss, b"m"), Err(AsymError::BadInput(_))));
        for ct in [
            &[][..],
            &[0u8; 255][..],
            &[0u8; 256][..],
            &[0xffu8; 256][..],
            &[0u8; 257][..],
        ] {
            assert_eq!(
                rsa.decrypt_oaep(Hash::Sha256, Hash::Sha256, b"", ct),
                Err(AsymError::Decrypt)
            );
        }
    }

    #[test]
    fn asym_oaep_round_trip_with_openssl_encryption() {
        let k = PrivateKey::generate(AsymType::Rsa3072).unwrap();
        let pubkey = PKey::public_key_from_der(&k.public_key_der()).unwrap();
        for (h, m, label) in [
            (Hash::Sha256, Hash::Sha256, &b""[..]),
            (Hash::Sha1, Hash::Sha1, &b""[..]),
            (Hash::Sha384, Hash::Sha1, &b"label"[..]),
        ] {
            let mut ctx = PkeyCtx::new(&pubkey).unwrap();
            ctx.encrypt_init().unwrap();
            ctx.set_rsa_padding(Padding::PKCS1_OAEP).unwrap();
            ctx.set_rsa_oaep_md(h.md()).unwrap();
            ctx.set_rsa_mgf1_md(m.md()).unwrap();
            if !label.is_empty() {
                ctx.set_rsa_oaep_label(label).unwrap();
            }
            let mut ct = vec![];
            ctx.encrypt_to_vec(b"secret", &mut ct).unwrap();
            assert_eq!(&**k.decrypt_oaep(h, m, label, &ct).unwrap(), b"secret");
            assert_eq!(k.decrypt_oaep(h, m, b"other", &ct), Err(AsymError::Decrypt));
            assert_eq!(
                k.decrypt_oaep(Hash::Sha512, m, label, &ct),
                Err(AsymError::Decrypt)
            );
        }
    }

    #[test]
    fn asym_names() {
        for t in AsymType::ALL {
            assert_eq!(AsymType::parse(t.name()), Some(t));
            assert_eq!(AsymType::parse(&t.name().to_lowercase()), Some(t));
        }
        assert_eq!(AsymType::parse("ec-p256"), Some(AsymType::EcP256));
        assert_eq!(AsymType::parse("mldsa65"), Some(AsymType::MlDsa65));
        assert_eq!(AsymType::parse("rsa_4096"), Some(AsymType::Rsa4096));
        assert_eq!(AsymType::parse("rsa-1024"), None);
        assert_eq!(AsymType::parse(""), None);
        assert_eq!(Hash::parse("sha-384"), Some(Hash::Sha384));
    }

    #[test]
    fn asym_ecdsa_der_conversion() {
        let raw: Vec<u8> = (0..64).map(|i| if i < 32 { 0 } else { 0x80 }).collect();
        let der = ecdsa_raw_to_der(&raw).unwrap();
        assert_eq!(hex::encode(&der[..5]), "3026020100");
        assert_eq!(ecdsa_der_to_raw(&der, AsymType::EcP256).unwrap(), raw);
        assert!(ecdsa_der_to_raw(&der, AsymType::Ed25519).is_err());
        assert!(ecdsa_raw_to_der(&raw[..63]).is_err());
        // non-minimal, negative, trailing, truncated
        for bad in [
            "3007020200010201 01",
            "300602010102 01ff",
            "30060201010201010000",
            "300602010102",
            "3006020181020101",
        ] {
            let bad = hex::decode(bad.replace(' ', "")).unwrap();
            assert!(
                ecdsa_der_to_raw(&bad, AsymType::EcP256).is_err(),
                "{}",
                hex::encode(&bad)
            );
        }
        let k = PrivateKey::generate(AsymType::EcP384).unwrap();
        let alg = SignAlg::Ecdsa {
            hash: Hash::Sha384,
            prehashed: false,
        };
        for _ in 0..8 {
            let sig = k.sign(&alg, &rand::random::<[u8; 8]>()).unwrap();
            let der = ecdsa_raw_to_der(&sig).unwrap();
            assert_eq!(ecdsa_der_to_raw(&der, AsymType::EcP384).unwrap(), sig);
        }
    }

    #[test]
    fn asym_ml_dsa_pkcs8_forms() {
        let seed = [0x2au8; 32];
        let mut seed_form =
            hex::decode("3034020100300b0609608648016503040311042280 20".replace(' ', "")).unwrap();
        seed_form.extend_from_slice(&seed);
        let k = PrivateKey::from_pkcs8_der(&seed_form).unwrap();
        assert_eq!(k.key_type(), AsymType::MlDsa44);
        assert_eq!(*k.to_pkcs8_der(), seed_form);
        let spki = k.public_key_der();
        assert_eq!(
            hex::encode(&spki[..22]),
            "30820532300b06096086480165030403110382052100"
        );

        // expandedKey form
        let (_, sk) = fips204::ml_dsa_44::KG::keygen_from_seed(&seed);
        let expanded = sk.into_bytes();
        let oid = OID_ML_DSA_44;
        let exp_form = ml_dsa_pkcs8(&oid, &tlv(0x04, &expanded));
        let k2 = PrivateKey::from_pkcs8_der(&exp_form).unwrap();
        assert_eq!(k2.public_key_der(), spki);
        assert_eq!(*k2.to_pkcs8_der(), *exp_form);
        let alg = SignAlg::MlDsa {
            context: vec![],
            deterministic: true,
        };
        assert_eq!(k.sign(&alg, b"m").unwrap(), k2.sign(&alg, b"m").unwrap());

        // both form, and a mismatching one
        let mut both = tlv(0x04, &seed);
        both.extend_from_slice(&tlv(0x04, &expanded));
        let both_form = ml_dsa_pkcs8(&oid, &tlv(0x30, &both));
        assert_eq!(
            PrivateKey::from_pkcs8_der(&both_form)
                .unwrap()
                .public_key_der(),
            spki
        );
        let mut wrong = tlv(0x04, &[0x2b; 32]);
        wrong.extend_from_slice(&tlv(0x04, &expanded));
        assert!(PrivateKey::from_pkcs8_der(&ml_dsa_pkcs8(&oid, &tlv(0x30, &wrong))).is_err());

        // wrong seed length, wrong OID parameter set length
        assert!(PrivateKey::from_pkcs8_der(&ml_dsa_pkcs8(&oid, &tlv(0x80, &[1; 31]))).is_err());
        assert!(
            PrivateKey::from_pkcs8_der(&ml_dsa_pkcs8(&OID_ML_DSA_65, &tlv(0x04, &expanded)))
                .is_err()
        );
    }

    #[test]
    fn asym_import_rejects() {
        // Truncations and garbage never panic.
        let k = PrivateKey::generate(AsymType::EcP384).unwrap();
        let der = k.to_pkcs8_der();
        for n in 0..der.len() {
            assert!(PrivateKey::from_pkcs8_der(&der[..n]).is_err());
        }
        let mut trailing = der.to_vec();
        trailing.push(0);
        assert!(PrivateKey::from_pkcs8_der(&trailing).is_err());
        let spki = k.public_key_der();
        for n in 0..spki.len() {
            assert!(PublicKey::from_spki_der(&spki[..n]).is_err());
        }
        for t in [AsymType::MlDsa87, AsymType::Ed25519] {
            let k = PrivateKey::generate(t).unwrap();
            let der = k.to_pkcs8_der();
            for n in 0..der.len() {
                assert!(PrivateKey::from_pkcs8_der(&der[..n]).is_err());
            }
            let spki = k.public_key_der();
            for n in (0..spki.len()).step_by(7) {
                assert!(PublicKey::from_spki_der(&spki[..n]).is_err());
            }
        }
        // RSA-1024, e=3, P-521, encrypted PEM
        let small = PKey::from_rsa(Rsa::generate(1024).unwrap()).unwrap();
        assert!(matches!(
            PrivateKey::from_pkcs8_der(&small.private_key_to_pkcs8().unwrap()),
            Err(AsymError::UnsupportedKey(_))
        ));
        let e3 = Rsa::generate_with_e(2048, &openssl::bn::BigNum::from_u32(3).unwrap()).unwrap();
        let e3 = PKey::from_rsa(e3).unwrap();
        assert!(PrivateKey::from_pkcs8_der(&e3.private_key_to_pkcs8().unwrap()).is_err());
        let g = openssl::ec::EcGroup::from_curve_name(openssl::nid::Nid::SECP521R1).unwrap();
        let p521 = PKey::from_ec_key(openssl::ec::EcKey::generate(&g).unwrap()).unwrap();
        let e = PrivateKey::from_pkcs8_der(&p521.private_key_to_pkcs8().unwrap()).unwrap_err();
        assert!(e.to_string().contains("1.3.132.0.35"), "{e}");
        let pem =
            b"-----BEGIN ENCRYPTED PRIVATE KEY-----\nMAA=\n-----END ENCRYPTED PRIVATE KEY-----\n";
        assert!(PrivateKey::import(pem).is_err());
        assert!(PrivateKey::import(b"-----BEGIN PRIVATE KEY-----\n!!\n").is_err());
        assert!(PrivateKey::import(&[]).is_err());
    }

    #[test]
    fn asym_import_pem_forms() {
        let rsa = Rsa::generate(2048).unwrap();
        let k = PrivateKey::import(&rsa.private_key_to_pem().unwrap()).unwrap();
        assert_eq!(k.key_type(), AsymType::Rsa2048);
        let pk = PKey::from_rsa(rsa).unwrap();
        let k2 = PrivateKey::import(&pk.private_key_to_pem_pkcs8().unwrap()).unwrap();
        assert_eq!(k.public_key_der(), k2.public_key_der());
        for (nid, t) in [
            (openssl::nid::Nid::X9_62_PRIME256V1, AsymType::EcP256),
            (openssl::nid::Nid::SECP384R1, AsymType::EcP384),
        ] {
            let g = openssl::ec::EcGroup::from_curve_name(nid).unwrap();
            let ec = openssl::ec::EcKey::generate(&g).unwrap();
            let k = PrivateKey::import(&ec.private_key_to_pem().unwrap()).unwrap();
            assert_eq!(k.key_type(), t);
            let spki = PKey::from_ec_key(ec.clone())
                .unwrap()
                .public_key_to_der()
                .unwrap();
            assert_eq!(k.public_key_der(), spki);
            let k = PrivateKey::import(
                &PKey::from_ec_key(ec)
                    .unwrap()
                    .private_key_to_pem_pkcs8()
                    .unwrap(),
            )
            .unwrap();
            assert_eq!(k.public_key_der(), spki);
        }
        // Ed25519 PKCS#8 v2 (with the public key) imports; a wrong public key is refused.
        let dk = ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng);
        let v2 = dk.to_pkcs8_der().unwrap();
        let k = PrivateKey::import(v2.as_bytes()).unwrap();
        assert_eq!(k.key_type(), AsymType::Ed25519);
        assert_eq!(k.to_pkcs8_der().len(), 48, "stored as v1");
        let mut bad = v2.as_bytes().to_vec();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert!(PrivateKey::import(&bad).is_err());
        let ed = PKey::generate_ed25519().unwrap();
        let k = PrivateKey::import(&ed.private_key_to_pem_pkcs8().unwrap()).unwrap();
        assert_eq!(k.public_key_der(), ed.public_key_to_der().unwrap());
    }

    #[test]
    fn asym_fingerprint_and_pem() {
        let spki = hex::decode("302a300506032b65700321007d4d0e7f6153a69b6242b522abbee685fda4420f8834b108c3bdae369ef549fa").unwrap();
        let pem = public_key_pem(&spki);
        assert_eq!(pem, "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEAfU0Of2FTpptiQrUiq77mhf2kQg+INLEIw72uNp71Sfo=\n-----END PUBLIC KEY-----\n");
        let fp = fingerprint(&spki);
        assert!(
            fp.starts_with("SHA256:") && fp.len() == 7 + 43 && !fp.ends_with('='),
            "{fp}"
        );
    }
}
