//! rustls client configuration for CVP: the system trust store plus an
//! optional CA file, or (explicitly, for labs) no verification at all.

use super::config::TlsConfig;
use anyhow::{anyhow, bail, Context, Result};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use std::sync::Arc;

/// Builds the client config; `alpn` is offered as given (h2 for gRPC).
pub fn client_config(cfg: &TlsConfig, alpn: &[&[u8]]) -> Result<ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .context("TLS setup")?;
    let mut config = if cfg.insecure_skip_verify {
        tracing::warn!("source.cvp.tls.insecure_skip_verify is on: CVP's certificate is NOT verified; use only in a lab");
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAny(provider)))
            .with_no_client_auth()
    } else {
        builder
            .with_root_certificates(roots(cfg)?)
            .with_no_client_auth()
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

fn roots(cfg: &TlsConfig) -> Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for cert in native.certs {
        // A broken system certificate should not stop us; the others still count.
        let _ = roots.add(cert);
    }
    if let Some(path) = &cfg.ca_file {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
            .map_err(|e| anyhow!("source.cvp.tls.ca_file {}: {e}", path.display()))?
            .collect::<Result<_, _>>()
            .map_err(|e| {
                anyhow!(
                    "source.cvp.tls.ca_file {}: not PEM certificates: {e}",
                    path.display()
                )
            })?;
        if certs.is_empty() {
            bail!(
                "source.cvp.tls.ca_file {} holds no certificates",
                path.display()
            );
        }
        for cert in certs {
            roots
                .add(cert)
                .map_err(|e| anyhow!("source.cvp.tls.ca_file {}: {e}", path.display()))?;
        }
    }
    if roots.is_empty() {
        bail!("no trusted CA certificates: the system store is empty; set source.cvp.tls.ca_file");
    }
    Ok(roots)
}

pub fn server_name(cfg: &TlsConfig, host: &str) -> Result<ServerName<'static>> {
    let name = cfg.server_name.as_deref().unwrap_or(host);
    ServerName::try_from(name.to_string()).map_err(|e| anyhow!("bad TLS server name {name:?}: {e}"))
}

/// Accepts any certificate but still checks handshake signatures, so the
/// session is encrypted even if the peer is not authenticated.
#[derive(Debug)]
struct AcceptAny(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
