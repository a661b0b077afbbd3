//! Inter-node mutual TLS rooted in the HSM.
//!
//! Every node derives the same Ed25519 key from its primary HSM
//! (`labels::CLUSTER_TLS`) and presents a self-signed certificate for it, as
//! server and as client. A peer is accepted only if its certificate's public
//! key is that same key and the handshake proves possession of it: only nodes
//! whose HSM holds the same key material can exchange a single message. No
//! CA, no certificate files, nothing to rotate by hand.

use std::sync::Arc;

use hsm_backends::Hsm;
use rustls::client::danger::{ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::DistinguishedName;

/// The TLS configurations of a node's inter-node traffic.
pub struct ClusterTls {
    pub server: Arc<rustls::ServerConfig>,
    pub client: Arc<rustls::ClientConfig>,
    /// The certificate's notAfter (Unix seconds), for the expiry metric.
    pub not_after: i64,
}

/// Accepts exactly one public key (the cluster's), as server or client certificate.
#[derive(Debug)]
struct SameKey {
    spki: Vec<u8>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl SameKey {
    fn check(&self, cert: &CertificateDer<'_>) -> Result<(), rustls::Error> {
        let (_, x) = x509_parser::parse_x509_certificate(cert).map_err(|_| {
            rustls::Error::InvalidCertificate(rustls::CertificateError::BadEncoding)
        })?;
        if x.tbs_certificate.subject_pki.raw != self.spki.as_slice() {
            return Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            ));
        }
        Ok(())
    }
}

impl ServerCertVerifier for SameKey {
    fn verify_server_cert(
        &self,
        c: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.check(c).map(|()| ServerCertVerified::assertion())
    }
    kms_client::handshake_signature_methods!();
}

impl ClientCertVerifier for SameKey {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }
    fn verify_client_cert(
        &self,
        c: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.check(c).map(|()| ClientCertVerified::assertion())
    }
    kms_client::handshake_signature_methods!();
}

impl ClusterTls {
    /// Derives the cluster key from `hsm` and builds both configurations.
    pub fn from_hsm(hsm: &dyn Hsm) -> Result<Self, String> {
        let seed = hsm.derive(hsm_backends::labels::CLUSTER_TLS).map_err(|e| {
            format!(
                "cannot derive the inter-node TLS key from HSM {}: {e}",
                hsm.name()
            )
        })?;
        // The cluster key is an API-key-shaped Ed25519 key: reuse its certificate code.
        let key = kms_client::ApiKey::from_seed(&seed);
        let (cert, pk) = key.certificate().map_err(|e| e.to_string())?;
        let (_, x) = x509_parser::parse_x509_certificate(&cert).map_err(|e| e.to_string())?;
        let not_after = x.validity().not_after.timestamp();
        let provider = kms_client::tls::provider();
        let verifier = Arc::new(SameKey {
            spki: x.tbs_certificate.subject_pki.raw.to_vec(),
            provider: provider.clone(),
        });
        let mut server = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| e.to_string())?
            .with_client_cert_verifier(verifier.clone())
            .with_single_cert(vec![cert.clone()], pk.clone_key())
            .map_err(|e| e.to_string())?;
        let mut client = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| e.to_string())?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_client_auth_cert(vec![cert], pk)
            .map_err(|e| e.to_string())?;
        server.alpn_protocols = vec![super::net::ALPN.to_vec()];
        client.alpn_protocols = vec![super::net::ALPN.to_vec()];
        Ok(Self {
            server: Arc::new(server),
            client: Arc::new(client),
            not_after,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hsm_backends::SoftHsm;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Handshakes a client of `a` with a server of `b` over loopback and
    /// exchanges one message; returns (client result, server result).
    async fn exchange(a: &ClusterTls, b: &ClusterTls) -> (Result<(), String>, Result<(), String>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(b.server.clone());
        let server = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let mut s = acceptor.accept(tcp).await.map_err(|e| e.to_string())?;
            let mut buf = [0u8; 5];
            s.read_exact(&mut buf).await.map_err(|e| e.to_string())?;
            s.write_all(b"world").await.map_err(|e| e.to_string())?;
            Ok::<_, String>(())
        });
        let connector = tokio_rustls::TlsConnector::from(a.client.clone());
        let client = async {
            let tcp = tokio::net::TcpStream::connect(addr)
                .await
                .map_err(|e| e.to_string())?;
            let mut s = connector
                .connect(ServerName::try_from("kms-node").unwrap(), tcp)
                .await
                .map_err(|e| e.to_string())?;
            s.write_all(b"hello").await.map_err(|e| e.to_string())?;
            let mut buf = [0u8; 5];
            s.read_exact(&mut buf).await.map_err(|e| e.to_string())?;
            Ok::<_, String>(())
        }
        .await;
        (client, server.await.unwrap())
    }

    #[tokio::test]
    async fn only_nodes_with_the_same_hsm_key_talk() {
        let k1 = SoftHsm::from_key(&[1; 32]);
        let k1b = SoftHsm::from_key(&[1; 32]);
        let k2 = SoftHsm::from_key(&[2; 32]);
        let (a, b, other) = (
            ClusterTls::from_hsm(&k1).unwrap(),
            ClusterTls::from_hsm(&k1b).unwrap(),
            ClusterTls::from_hsm(&k2).unwrap(),
        );
        let (c, s) = exchange(&a, &b).await;
        assert!(c.is_ok() && s.is_ok(), "same HSM key: {c:?} {s:?}");
        // Another HSM key as client: the server refuses it, nothing is exchanged.
        let (c, s) = exchange(&other, &a).await;
        assert!(c.is_err() && s.is_err(), "foreign client: {c:?} {s:?}");
        // Another HSM key as server: the client refuses it before sending anything.
        let (c, s) = exchange(&a, &other).await;
        assert!(c.is_err() && s.is_err(), "foreign server: {c:?} {s:?}");
    }
}
