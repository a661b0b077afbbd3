//! TLS of the client-facing API.
//!
//! Clients authenticate with any certificate: the server does not check who
//! issued it, only that the peer holds its private key (the handshake
//! signature), and then identifies the caller by the hash of its public key.
//! Without an operator-supplied certificate, the node makes a self-signed
//! ECDSA P-256 certificate; its private key is stored sealed under the root
//! key, and only the certificate (public) is written to `DIR/tls/server.crt`.
//!
//! An operator's certificate is reloaded without a restart ([`ApiTls`]): on
//! SIGHUP and when its files change. A handshake uses the configuration
//! current when it starts, so established connections keep theirs; a bad new
//! file is refused, logged once, and the current certificate stays.
//! (There is no client CA set to reload: clients are identified by their
//! public key, whoever issued their certificate.)

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

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

/// The bytes of an operator's certificate and key files.
struct Files {
    cert: Vec<u8>,
    key: Zeroizing<Vec<u8>>,
}

impl Files {
    fn read(cert: &Path, key: &Path) -> Result<Self, String> {
        let c = std::fs::read(cert)
            .map_err(|e| format!("cannot read TLS certificate {}: {e}", cert.display()))?;
        let k = Zeroizing::new(
            std::fs::read(key)
                .map_err(|e| format!("cannot read TLS key {}: {e}", key.display()))?,
        );
        Ok(Files { cert: c, key: k })
    }

    /// What identifies this content: a reload of the same bytes does nothing.
    fn digest(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update((self.cert.len() as u64).to_be_bytes());
        h.update(&self.cert);
        h.update(&*self.key);
        h.finalize().into()
    }

    fn parse(
        &self,
        cert: &Path,
        key: &Path,
    ) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), String> {
        let certs: Vec<_> = rustls_pemfile::certs(&mut self.cert.as_slice())
            .collect::<Result<_, _>>()
            .map_err(|e| format!("TLS certificate {}: {e}", cert.display()))?;
        if certs.is_empty() {
            return Err(format!(
                "TLS certificate {} holds no PEM certificate",
                cert.display()
            ));
        }
        let k = rustls_pemfile::private_key(&mut self.key.as_slice())
            .map_err(|e| format!("TLS key {}: {e}", key.display()))?
            .ok_or_else(|| format!("TLS key {} holds no PEM private key", key.display()))?;
        Ok((certs, k))
    }
}

/// Loads an operator-supplied PEM certificate chain and private key.
pub fn load_pem(
    cert: &Path,
    key: &Path,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), String> {
    Files::read(cert, key)?.parse(cert, key)
}

/// The notAfter of a DER certificate, in Unix seconds.
pub fn not_after(cert: &CertificateDer<'_>) -> Result<i64, String> {
    let (_, x) = x509_parser::parse_x509_certificate(cert)
        .map_err(|e| format!("cannot parse the certificate: {e}"))?;
    Ok(x.validity().not_after.timestamp())
}

/// The client-facing TLS configuration, replaced whole by a reload.
pub struct ApiTls {
    current: ArcSwap<rustls::ServerConfig>,
    /// The operator's certificate and key files; `None` with the node's
    /// self-signed certificate (nothing to reload).
    files: Option<(PathBuf, PathBuf)>,
    /// The digest of the files last loaded or refused: a check that finds
    /// them unchanged does nothing, so a bad file is reported once.
    seen: parking_lot::Mutex<[u8; 32]>,
    not_after: AtomicI64,
}

impl ApiTls {
    /// The configuration for an operator's files (`files`), or for the
    /// self-signed certificate (`certs`, `key`) when `files` is `None`.
    pub fn new(
        certs: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
        files: Option<(PathBuf, PathBuf)>,
    ) -> Result<Self, String> {
        let seen = match &files {
            Some((c, k)) => Files::read(c, k)?.digest(),
            None => [0; 32],
        };
        let not_after = certs.first().map(not_after).transpose()?.unwrap_or(0);
        Ok(Self {
            current: ArcSwap::new(server_config(certs, key)?),
            files,
            seen: parking_lot::Mutex::new(seen),
            not_after: AtomicI64::new(not_after),
        })
    }

    /// The configuration a new handshake uses.
    pub fn config(&self) -> Arc<rustls::ServerConfig> {
        self.current.load_full()
    }

    /// The current certificate's notAfter (Unix seconds).
    pub fn not_after(&self) -> i64 {
        self.not_after.load(Ordering::Relaxed)
    }

    /// The certificate file, if the operator gave one.
    pub fn files(&self) -> Option<&(PathBuf, PathBuf)> {
        self.files.as_ref()
    }

    /// Reads the files again. `Ok(None)`: unchanged since the last load or
    /// refusal (or no files); `Ok(Some(not_after))`: the new certificate is
    /// in use; `Err`: the new files are refused and the current certificate
    /// stays.
    pub fn reload(&self) -> Result<Option<i64>, String> {
        let Some((c, k)) = &self.files else {
            return Ok(None);
        };
        let mut seen = self.seen.lock();
        // An unreadable file (say, while it is being replaced) counts as
        // content too: its error is reported once, not at every check.
        let files = Files::read(c, k);
        let digest = match &files {
            Ok(f) => f.digest(),
            Err(e) => Sha256::digest(e.as_bytes()).into(),
        };
        if digest == *seen {
            return Ok(None);
        }
        *seen = digest;
        let files = files?;
        let (certs, key) = files.parse(c, k)?;
        let leaf_not_after = not_after(&certs[0])?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        if leaf_not_after <= now {
            return Err(format!(
                "TLS certificate {} expired at {}",
                c.display(),
                time::OffsetDateTime::from_unix_timestamp(leaf_not_after)
                    .ok()
                    .and_then(|t| t
                        .format(&time::format_description::well_known::Rfc3339)
                        .ok())
                    .unwrap_or_else(|| leaf_not_after.to_string())
            ));
        }
        let cfg = server_config(certs, key)?;
        self.current.store(cfg);
        self.not_after.store(leaf_not_after, Ordering::Relaxed);
        Ok(Some(leaf_not_after))
    }
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
