//! API keys (`k1:`) and identities (`h1:`).
//!
//! An API key is an Ed25519 seed. Its identity is SHA-256 over the DER
//! SubjectPublicKeyInfo of the public key. A client authenticates with a
//! self-signed certificate for that key; the server computes the identity
//! from the certificate's public key, and the TLS handshake proves possession
//! of the private key.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ed25519_dalek::pkcs8::EncodePrivateKey;
use ed25519_dalek::SigningKey;
use rand::RngCore;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::Error;

/// DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410); the 32-byte key follows.
const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// An API key: an Ed25519 private key. Zeroized on drop; never printed by `Debug`.
#[derive(Clone)]
pub struct ApiKey {
    seed: Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ApiKey({})", self.identity())
    }
}

impl ApiKey {
    /// Generates a new random API key.
    pub fn generate() -> Self {
        let mut seed = Zeroizing::new([0u8; 32]);
        rand::rngs::OsRng.fill_bytes(seed.as_mut());
        Self { seed }
    }

    /// Builds an API key from a 32-byte seed (for example one derived by the HSM).
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        Self {
            seed: Zeroizing::new(*seed),
        }
    }

    /// Parses `k1:<base64url without padding of 32 bytes>`.
    pub fn parse(s: &str) -> Result<Self, Error> {
        let b64 = s
            .trim()
            .strip_prefix("k1:")
            .ok_or_else(|| Error::Config("API key must start with 'k1:'".into()))?;
        let raw = Zeroizing::new(
            URL_SAFE_NO_PAD
                .decode(b64)
                .map_err(|_| Error::Config("API key is not valid base64url".into()))?,
        );
        let seed: [u8; 32] = raw
            .as_slice()
            .try_into()
            .map_err(|_| Error::Config(format!("API key must hold 32 bytes, not {}", raw.len())))?;
        let k = Self::from_seed(&seed);
        let mut seed = seed;
        zeroize::Zeroize::zeroize(&mut seed);
        Ok(k)
    }

    /// The `k1:...` text form. Handle with care: it is the secret.
    pub fn to_secret_string(&self) -> Zeroizing<String> {
        Zeroizing::new(format!("k1:{}", URL_SAFE_NO_PAD.encode(self.seed.as_ref())))
    }

    fn signing_key(&self) -> SigningKey {
        SigningKey::from_bytes(&self.seed)
    }

    /// The identity of this key.
    pub fn identity(&self) -> Identity {
        Identity::from_ed25519_public(self.signing_key().verifying_key().as_bytes())
    }

    /// A self-signed client certificate and its private key, for mutual TLS.
    pub fn certificate(&self) -> Result<(CertificateDer<'static>, PrivateKeyDer<'static>), Error> {
        let der = self
            .signing_key()
            .to_pkcs8_der()
            .map_err(|e| Error::Config(format!("cannot encode API key: {e}")))?;
        let pkcs8 = PrivatePkcs8KeyDer::from(der.as_bytes().to_vec());
        let kp = rcgen::KeyPair::from_pkcs8_der_and_sign_algo(&pkcs8, &rcgen::PKCS_ED25519)
            .map_err(|e| Error::Config(format!("cannot load API key: {e}")))?;
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new())
            .map_err(|e| Error::Config(format!("cannot build certificate: {e}")))?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, self.identity().to_string());
        let cert = params
            .self_signed(&kp)
            .map_err(|e| Error::Config(format!("cannot build certificate: {e}")))?;
        Ok((cert.der().clone(), PrivateKeyDer::Pkcs8(pkcs8)))
    }
}

/// An identity: `h1:` + base64url (no padding) of SHA-256 over a DER SubjectPublicKeyInfo.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Identity([u8; 32]);

impl Identity {
    /// The identity of a DER SubjectPublicKeyInfo of any key type.
    pub fn from_spki(spki_der: &[u8]) -> Self {
        Self(Sha256::digest(spki_der).into())
    }

    /// The identity of an Ed25519 public key.
    pub fn from_ed25519_public(pk: &[u8; 32]) -> Self {
        let mut spki = [0u8; 44];
        spki[..12].copy_from_slice(&ED25519_SPKI_PREFIX);
        spki[12..].copy_from_slice(pk);
        Self::from_spki(&spki)
    }

    /// The identity of the public key of a DER certificate.
    pub fn from_certificate(cert_der: &[u8]) -> Result<Self, Error> {
        let (_, cert) = x509_parser::parse_x509_certificate(cert_der)
            .map_err(|e| Error::Protocol(format!("invalid certificate: {e}")))?;
        Ok(Self::from_spki(cert.tbs_certificate.subject_pki.raw))
    }

    /// Parses `h1:...`. An error never repeats an API key given by
    /// mistake (`k1:...`), so that it cannot reach a response or a log.
    pub fn parse(s: &str) -> Result<Self, Error> {
        if s.starts_with("k1:") {
            return Err(Error::Config(
                "that is an API key, not an identity: give its identity (kms identity KEY)".into(),
            ));
        }
        let shown: String = s.chars().take(64).collect();
        let b64 = s
            .strip_prefix("h1:")
            .ok_or_else(|| Error::Config(format!("identity '{shown}' must start with 'h1:'")))?;
        let raw = URL_SAFE_NO_PAD
            .decode(b64)
            .map_err(|_| Error::Config(format!("identity '{shown}' is not valid base64url")))?;
        let b: [u8; 32] = raw
            .try_into()
            .map_err(|_| Error::Config(format!("identity '{shown}' must hold 32 bytes")))?;
        Ok(Self(b))
    }

    /// The raw 32 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl std::fmt::Display for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "h1:{}", URL_SAFE_NO_PAD.encode(self.0))
    }
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

impl TryFrom<String> for Identity {
    type Error = Error;
    fn try_from(s: String) -> Result<Self, Error> {
        Self::parse(&s)
    }
}

impl From<Identity> for String {
    fn from(i: Identity) -> String {
        i.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The test vector of PRODUCT.md section 3.
    #[test]
    fn identity_errors_never_repeat_an_api_key() {
        let k = ApiKey::generate().to_secret_string();
        let e = Identity::parse(&k).unwrap_err().to_string();
        assert!(!e.contains(&k[3..]), "{e}");
        assert!(e.contains("that is an API key"), "{e}");
    }

    #[test]
    fn identity_vector() {
        let k = ApiKey::parse("k1:d7cY_5k8HbBGkZpoy2hGmvkxg83QDBXsA_nFXDfTk2E").unwrap();
        assert_eq!(
            k.identity().to_string(),
            "h1:Rvxa7nj8zkL48CeDkN6LhpX-K7KK6uhIhpBOcTHNhWw"
        );
        assert_eq!(
            &*k.to_secret_string(),
            "k1:d7cY_5k8HbBGkZpoy2hGmvkxg83QDBXsA_nFXDfTk2E"
        );
    }

    #[test]
    fn certificate_carries_identity() {
        let k = ApiKey::generate();
        let (cert, _) = k.certificate().unwrap();
        assert_eq!(Identity::from_certificate(&cert).unwrap(), k.identity());
    }

    #[test]
    fn bad_keys() {
        for s in [
            "",
            "k1:",
            "k2:d7cY_5k8HbBGkZpoy2hGmvkxg83QDBXsA_nFXDfTk2E",
            "k1:!!!",
            "k1:AAAA",
        ] {
            assert!(ApiKey::parse(s).is_err(), "{s}");
        }
        for s in [
            "",
            "h1:",
            "h1:AAAA",
            "x1:Rvxa7nj8zkL48CeDkN6LhpX-K7KK6uhIhpBOcTHNhWw",
        ] {
            assert!(Identity::parse(s).is_err(), "{s}");
        }
        let id = Identity::parse("h1:Rvxa7nj8zkL48CeDkN6LhpX-K7KK6uhIhpBOcTHNhWw").unwrap();
        assert_eq!(
            id.to_string(),
            "h1:Rvxa7nj8zkL48CeDkN6LhpX-K7KK6uhIhpBOcTHNhWw"
        );
    }
}
