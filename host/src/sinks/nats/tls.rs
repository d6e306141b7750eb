//! TLS for the NATS sink: the rustls client config is built here and handed
//! to async-nats, rather than left to it, for two reasons. A server
//! certificate the sink does not trust is then reported as such (async-nats
//! reports a failed handshake only as "IO error", every reconnect, with no
//! word of the certificate); and `ca_file` is trusted besides the system's
//! CAs, as `sink.nats.tls` says (async-nats drops the system's once a CA
//! file is given), with the ring provider named explicitly rather than the
//! process's default.

use super::config::NatsConfig;
use anyhow::{anyhow, bail, Context, Result};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use std::sync::{Arc, Mutex};

/// The system's CAs and `tls.ca_file`, the client certificate if one is
/// set, and a verifier that logs why it refused a server's certificate.
pub(super) fn client_config(cfg: &NatsConfig) -> Result<ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        // A broken system certificate should not stop us; the others count.
        let _ = roots.add(cert);
    }
    if let Some(path) = &cfg.tls.ca_file {
        let what = || format!("sink.nats.tls.ca_file {}", path.display());
        for cert in CertificateDer::pem_file_iter(path).map_err(|e| anyhow!("{}: {e}", what()))? {
            let cert = cert.map_err(|e| anyhow!("{}: not PEM certificates: {e}", what()))?;
            roots.add(cert).map_err(|e| anyhow!("{}: {e}", what()))?;
        }
    }
    if roots.is_empty() {
        bail!("sink.nats.tls: no trusted CA certificates (the system store is empty); set sink.nats.tls.ca_file");
    }
    let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .context("sink.nats.tls")?;
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("sink.nats.tls")?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Reporting {
            inner: webpki,
            said: Mutex::new(None),
        }));
    match (&cfg.tls.cert_file, &cfg.tls.key_file) {
        (Some(cert), Some(key)) => {
            let chain = CertificateDer::pem_file_iter(cert)
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .map_err(|e| anyhow!("sink.nats.tls.cert_file {}: {e}", cert.display()))?;
            let key = PrivateKeyDer::from_pem_file(key)
                .map_err(|e| anyhow!("sink.nats.tls.key_file {}: {e}", key.display()))?;
            builder
                .with_client_auth_cert(chain, key)
                .context("sink.nats.tls: cert_file and key_file do not go together")
        }
        _ => Ok(builder.with_no_client_auth()),
    }
}

/// The usual checks; a refusal is logged, once until the next success (the
/// client retries every few seconds).
#[derive(Debug)]
struct Reporting {
    inner: Arc<WebPkiServerVerifier>,
    said: Mutex<Option<String>>,
}

impl ServerCertVerifier for Reporting {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let result = self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        );
        let mut said = self.said.lock().unwrap_or_else(|e| e.into_inner());
        match &result {
            Ok(_) => *said = None,
            Err(e) => {
                let text = e.to_string();
                if said.as_deref() != Some(text.as_str()) {
                    tracing::error!(
                        "TLS to NATS failed: the server's certificate was refused ({text}); set sink.nats.tls.ca_file to the CA that signed it, and check that it names the host in sink.nats.url"
                    );
                    *said = Some(text);
                }
            }
        }
        result
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
