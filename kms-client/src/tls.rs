//! TLS settings of the client.

use std::sync::Arc;

use rustls::client::danger::{ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};

use crate::{ApiKey, Error};

/// How the client checks server certificates.
#[derive(Clone, Debug, Default)]
pub enum Trust {
    /// The operating system's trust store.
    #[default]
    System,
    /// Only certificates issued by (or equal to) these PEM certificates.
    Ca(Vec<CertificateDer<'static>>),
    /// Skip certificate checks (`KMS_INSECURE=1`, development only). The
    /// handshake signature is still verified.
    Insecure,
}

impl Trust {
    /// Loads the PEM certificates of a CA file.
    pub fn from_ca_file(path: &std::path::Path) -> Result<Self, Error> {
        let pem = crate::read_small_file(path, 16 << 20)
            .map_err(|e| Error::Config(format!("cannot read CA file {}: {e}", path.display())))?;
        let certs: Vec<_> = rustls_pemfile::certs(&mut pem.as_slice())
            .collect::<Result<_, _>>()
            .map_err(|e| Error::Config(format!("CA file {}: {e}", path.display())))?;
        if certs.is_empty() {
            return Err(Error::Config(format!(
                "CA file {} holds no PEM certificate",
                path.display()
            )));
        }
        Ok(Trust::Ca(certs))
    }
}

#[doc(hidden)]
pub use ::rustls as __rustls;

/// Expands to the three handshake-signature methods that every certificate
/// verifier of this project shares (`ServerCertVerifier` or
/// `ClientCertVerifier`): the signatures are checked with the provider's
/// algorithms. The implementing type needs a
/// `provider: Arc<rustls::crypto::CryptoProvider>` field.
#[macro_export]
macro_rules! handshake_signature_methods {
    () => {
        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &$crate::tls::__rustls::pki_types::CertificateDer<'_>,
            dss: &$crate::tls::__rustls::DigitallySignedStruct,
        ) -> Result<
            $crate::tls::__rustls::client::danger::HandshakeSignatureValid,
            $crate::tls::__rustls::Error,
        > {
            $crate::tls::__rustls::crypto::verify_tls12_signature(
                message,
                cert,
                dss,
                &self.provider.signature_verification_algorithms,
            )
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &$crate::tls::__rustls::pki_types::CertificateDer<'_>,
            dss: &$crate::tls::__rustls::DigitallySignedStruct,
        ) -> Result<
            $crate::tls::__rustls::client::danger::HandshakeSignatureValid,
            $crate::tls::__rustls::Error,
        > {
            $crate::tls::__rustls::crypto::verify_tls13_signature(
                message,
                cert,
                dss,
                &self.provider.signature_verification_algorithms,
            )
        }

        fn supported_verify_schemes(&self) -> Vec<$crate::tls::__rustls::SignatureScheme> {
            self.provider
                .signature_verification_algorithms
                .supported_schemes()
        }
    };
}

/// The crypto provider used everywhere: rustls with *ring* (no cmake needed).
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A client TLS configuration that authenticates with `key`.
pub fn client_config(key: &ApiKey, trust: &Trust) -> Result<rustls::ClientConfig, Error> {
    let (cert, pk) = key.certificate()?;
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Config(e.to_string()))?;
    let builder = match trust {
        Trust::Insecure => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(InsecureVerifier {
                provider: provider(),
            })),
        Trust::Ca(certs) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in certs {
                roots
                    .add(c.clone())
                    .map_err(|e| Error::Config(format!("invalid CA certificate: {e}")))?;
            }
            builder.with_root_certificates(roots)
        }
        Trust::System => {
            let mut roots = rustls::RootCertStore::empty();
            let loaded = rustls_native_certs::load_native_certs();
            for c in loaded.certs {
                let _ = roots.add(c);
            }
            builder.with_root_certificates(roots)
        }
    };
    builder
        .with_client_auth_cert(vec![cert], pk)
        .map_err(|e| Error::Config(format!("invalid client certificate: {e}")))
}

/// Accepts any server certificate but still checks that the server holds its
/// private key. For `--insecure` only.
#[derive(Debug)]
pub struct InsecureVerifier {
    pub provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServerCertVerifier for InsecureVerifier {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    crate::handshake_signature_methods!();
}
