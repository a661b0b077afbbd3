//! TLS of the client-facing API.
//!
//! Clients authenticate with any certificate: the server does not check who
//! issued it, only that the peer holds its private key (the handshake
//! signature), and then identifies the caller by the hash of its public key.
//! Without an operator-supplied certificate, the node makes a self-signed
//! ECDSA P-256 certificate; its private key is stored sealed under the root
//! key, and only the certificate (public) is written to `DIR/tls/server.crt`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::DistinguishedName;

use crate::store::Store;

#[derive(Debug)]
struct AnyClientCert {
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ClientCertVerifier for AnyClientCert {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    /// Requested, not required: probes and load balancers connect without
    /// one, and every path but the probes refuses them (`api::route`).
    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn verify_client_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    kms_client::handshake_signature_methods!();
}

/// The server's TLS configuration: client certificates requested (any
/// issuer), optional at the handshake.
pub fn server_config(
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<rustls::ServerConfig>, String> {
    let provider = kms_client::tls::provider();
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_client_cert_verifier(Arc::new(AnyClientCert { provider }))
        .with_single_cert(certs, key)
        .map_err(|e| format!("invalid TLS certificate or key: {e}"))?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// Loads an operator-supplied PEM certificate chain and private key.
pub fn load_pem(
    cert: &Path,
    key: &Path,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), String> {
    let c = std::fs::read(cert)
        .map_err(|e| format!("cannot read TLS certificate {}: {e}", cert.display()))?;
    let certs: Vec<_> = rustls_pemfile::certs(&mut c.as_slice())
        .collect::<Result<_, _>>()
        .map_err(|e| format!("TLS certificate {}: {e}", cert.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "TLS certificate {} holds no PEM certificate",
            cert.display()
        ));
    }
    let k = zeroize::Zeroizing::new(
        std::fs::read(key).map_err(|e| format!("cannot read TLS key {}: {e}", key.display()))?,
    );
    let key = rustls_pemfile::private_key(&mut k.as_slice())
        .map_err(|e| format!("TLS key {}: {e}", key.display()))?
        .ok_or_else(|| format!("TLS key {} holds no PEM private key", key.display()))?;
    Ok((certs, key))
}

/// The self-signed certificate of a node without an operator certificate:
/// returns the chain, the key and the path of the certificate file.
pub fn self_signed(
    store: &Store,
    hosts: &[String],
) -> Result<
    (
        Vec<CertificateDer<'static>>,
        PrivateKeyDer<'static>,
        PathBuf,
    ),
    String,
> {
    let key_der = match store.local_secret("tls-key").map_err(|e| e.to_string())? {
        Some(k) => k,
        None => {
            let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
                .map_err(|e| e.to_string())?;
            let der = zeroize::Zeroizing::new(kp.serialize_der());
            store
                .put_local_secret("tls-key", &der)
                .map_err(|e| e.to_string())?;
            der
        }
    };
    let pkcs8 = PrivatePkcs8KeyDer::from(key_der.to_vec());
    let kp = rcgen::KeyPair::from_pkcs8_der_and_sign_algo(&pkcs8, &rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(|e| e.to_string())?;
    let dir = store.dir().join("tls");
    let path = dir.join("server.crt");
    // Reuse the certificate on disk if it is for this key, so that clients
    // that pinned it (KMS_CA) keep working across restarts.
    if let Ok(pem) = std::fs::read(&path) {
        if let Some(Ok(cert)) = rustls_pemfile::certs(&mut pem.as_slice()).next() {
            if let Ok((_, x)) = x509_parser::parse_x509_certificate(&cert) {
                if x.tbs_certificate.subject_pki.raw == kp.public_key_der().as_slice() {
                    return Ok((vec![cert.into_owned()], PrivateKeyDer::Pkcs8(pkcs8), path));
                }
            }
        }
    }
    let mut names: Vec<String> = vec!["localhost".into(), "127.0.0.1".into(), "::1".into()];
    for h in hosts {
        if !h.is_empty() && !names.contains(h) && h != "0.0.0.0" && h != "::" {
            names.push(h.clone());
        }
    }
    let mut params = rcgen::CertificateParams::new(names).map_err(|e| e.to_string())?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "kms");
    params.not_before = rcgen::date_time_ymd(2024, 1, 1);
    params.not_after = rcgen::date_time_ymd(2124, 1, 1);
    let cert = params.self_signed(&kp).map_err(|e| e.to_string())?;
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    std::fs::write(&path, cert.pem())
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok((vec![cert.der().clone()], PrivateKeyDer::Pkcs8(pkcs8), path))
}
