//! rustls client configuration for CVP: the system trust store plus an
//! optional CA file, or (explicitly, for labs) no verification at all; and
//! the one line that tells a user what to change when a handshake fails.
//!
//! Many lab and on-prem CVPs serve one self-signed certificate made with
//! `openssl req -x509`, which marks it a CA (basicConstraints CA:TRUE).
//! WebPKI refuses a CA as the server's own certificate; grpc-go (the seed)
//! and grpcio (Arista's Python SDK) accept it when it is the trusted file.
//! So do we: a server certificate that is byte for byte one of those in
//! `ca_file` is trusted as itself, its name and validity still checked.

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
        let (roots, pinned) = roots(cfg)?;
        let webpki = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            provider.clone(),
        )
        .build()
        .context("TLS setup")?;
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(WebPkiOrPinned { webpki, pinned }))
            .with_no_client_auth()
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

/// The trusted roots, and the certificates of `ca_file` (which a server may
/// also present as its own).
fn roots(cfg: &TlsConfig) -> Result<(RootCertStore, Vec<CertificateDer<'static>>)> {
    let mut roots = RootCertStore::empty();
    let mut pinned = Vec::new();
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
                .add(cert.clone())
                .map_err(|e| anyhow!("source.cvp.tls.ca_file {}: {e}", path.display()))?;
            pinned.push(cert);
        }
    }
    if roots.is_empty() {
        bail!("no trusted CA certificates: the system store is empty; set source.cvp.tls.ca_file");
    }
    Ok((roots, pinned))
}

pub fn server_name(cfg: &TlsConfig, host: &str) -> Result<ServerName<'static>> {
    let name = cfg.server_name.as_deref().unwrap_or(host);
    ServerName::try_from(name.to_string()).map_err(|e| anyhow!("bad TLS server name {name:?}: {e}"))
}

/// WebPKI as usual; when it refuses a certificate that is one of
/// `ca_file`'s exactly, that certificate is trusted as itself (the user
/// named it), provided it carries the server's name and is within its
/// validity period.
#[derive(Debug)]
struct WebPkiOrPinned {
    webpki: Arc<rustls::client::WebPkiServerVerifier>,
    pinned: Vec<CertificateDer<'static>>,
}

impl ServerCertVerifier for WebPkiOrPinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let refused =
            match self
                .webpki
                .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
            {
                Ok(ok) => return Ok(ok),
                Err(e) => e,
            };
        if !self
            .pinned
            .iter()
            .any(|c| c.as_ref() == end_entity.as_ref())
        {
            return Err(refused);
        }
        let cert = webpki::EndEntityCert::try_from(end_entity).map_err(|_| {
            rustls::Error::InvalidCertificate(rustls::CertificateError::BadEncoding)
        })?;
        cert.verify_is_valid_for_subject_name(server_name)
            .map_err(|_| {
                rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidForName)
            })?;
        let (_, parsed) =
            x509_parser::parse_x509_certificate(end_entity.as_ref()).map_err(|_| {
                rustls::Error::InvalidCertificate(rustls::CertificateError::BadEncoding)
            })?;
        let validity = parsed.validity();
        let now = now.as_secs() as i64;
        if now < validity.not_before.timestamp() {
            return Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidYet,
            ));
        }
        if now > validity.not_after.timestamp() {
            return Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::Expired,
            ));
        }
        Ok(ServerCertVerified::assertion())
    }

    // Handshake signatures are checked as WebPKI checks them.
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

const CA_AS_SERVER: &str = "CVP presents a CA certificate as its own (a self-signed certificate made with `openssl req -x509`): give that very certificate as source.cvp.tls.ca_file (or `run --ca-file`)";

/// What to do about a failed TLS handshake with CVP, in one line; `None`
/// when `e` is not a TLS failure.
pub fn explain(e: &std::io::Error) -> Option<String> {
    use rustls::{AlertDescription, CertificateError, Error as TlsError};
    let tls = e.get_ref()?.downcast_ref::<TlsError>()?;
    let cert = "CVP's certificate";
    let trust = "set source.cvp.tls.ca_file (or `run --ca-file`) to the PEM file of the CA that signed it, or of the certificate itself if it is self-signed";
    Some(match tls {
        TlsError::InvalidCertificate(c) => match c {
            CertificateError::UnknownIssuer => {
                format!("{cert} is not signed by a CA this machine trusts: {trust}")
            }
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => format!(
                "{cert} does not carry the name in source.cvp.address: connect by a name it carries, or set source.cvp.tls.server_name to one ({c:?})"
            ),
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => format!(
                "{cert} has expired: renew it on CVP (or check this machine's clock)"
            ),
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => format!(
                "{cert} is not valid yet: check this machine's clock, and CVP's"
            ),
            CertificateError::Other(other) if format!("{other:?}").contains("CaUsedAsEndEntity") => {
                CA_AS_SERVER.to_string()
            }
            other => format!("{cert} was refused ({other:?}): {trust}"),
        },
        TlsError::InvalidMessage(_) => {
            "CVP did not answer in TLS: if it serves plaintext (a simulator), set source.cvp.tls.enabled: false".to_string()
        }
        TlsError::AlertReceived(AlertDescription::CertificateRequired | AlertDescription::HandshakeFailure) => format!(
            "CVP ended the TLS handshake ({tls}): check that source.cvp.address is CVP's gRPC port and that it accepts TLS 1.2 or 1.3"
        ),
        other => format!("TLS handshake with CVP failed: {other}"),
    })
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
