//! TLS: a throwaway PKI for tests and demos, and a TLS listener offering both
//! h2 (gRPC) and http/1.1 (REST login) via ALPN. tonic's own TLS offers only
//! h2, which would make http/1.1-only login clients fail the handshake.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::{self, ServerConfig};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tokio_stream::wrappers::ReceiverStream;
use tracing::{debug, warn};

/// A server certificate chain and private key, PEM-encoded.
#[derive(Clone, Debug)]
pub struct TlsIdentity {
    pub cert_pem: String,
    pub key_pem: String,
}

/// A CA and a server identity signed by it.
#[derive(Clone, Debug)]
pub struct TestPki {
    pub ca_pem: String,
    pub identity: TlsIdentity,
}

/// Creates a CA and a server certificate for `hosts` (DNS names or IP
/// addresses, e.g. `"localhost"`, `"127.0.0.1"`) signed by it.
pub fn test_pki(hosts: &[&str]) -> anyhow::Result<TestPki> {
    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "cvp-simulator test CA");
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = Issuer::from_params(&ca, &ca_key);

    let key = KeyPair::generate()?;
    let names: Vec<String> = hosts.iter().map(|h| h.to_string()).collect();
    let mut params = CertificateParams::new(names).context("invalid host name")?;
    params.distinguished_name.push(
        DnType::CommonName,
        hosts.first().copied().unwrap_or("cvp-simulator"),
    );
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    let cert = params.signed_by(&key, &issuer)?;
    Ok(TestPki {
        ca_pem: ca_cert.pem(),
        identity: TlsIdentity {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        },
    })
}

pub(crate) fn acceptor(id: &TlsIdentity) -> anyhow::Result<TlsAcceptor> {
    let certs = CertificateDer::pem_slice_iter(id.cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow!("bad certificate PEM: {e:?}"))?;
    if certs.is_empty() {
        anyhow::bail!("certificate PEM holds no certificate");
    }
    let key = PrivateKeyDer::from_pem_slice(id.key_pem.as_bytes())
        .map_err(|e| anyhow!("bad private key PEM: {e:?}"))?;
    // An explicit provider: the process-wide default is ambiguous when
    // several crypto back-ends are compiled in.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("certificate and key do not match")?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(cfg)))
}

pub(crate) type TlsIncoming = ReceiverStream<Result<TlsStream<TcpStream>, std::io::Error>>;

/// Accepts connections and handshakes each in its own task, so one slow or
/// broken client cannot hold up the others.
pub(crate) fn incoming(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    mut shutdown: watch::Receiver<bool>,
) -> TlsIncoming {
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                r = listener.accept() => r,
                _ = shutdown.wait_for(|s| *s) => return,
                _ = tx.closed() => return,
            };
            let (tcp, peer) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Usually out of file descriptors: back off briefly
                    // rather than spin.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let acceptor = acceptor.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        let _ = tx.send(Ok(stream)).await;
                    }
                    Ok(Err(e)) => debug!(%peer, error = %e, "TLS handshake failed"),
                    Err(_) => debug!(%peer, "TLS handshake timed out"),
                }
            });
        }
    });
    ReceiverStream::new(rx)
}

/// A certificate as `openssl req -x509` makes it, the way many lab and
/// on-prem CVPs serve one: self-signed, marked a CA (basicConstraints
/// CA:TRUE), with `hosts` as its names. `ca_pem` is the certificate itself.
pub fn self_signed_ca_as_server(hosts: &[&str]) -> anyhow::Result<TestPki> {
    let key = KeyPair::generate()?;
    let names: Vec<String> = hosts.iter().map(|h| h.to_string()).collect();
    let mut params = CertificateParams::new(names).context("invalid host name")?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(
        DnType::CommonName,
        hosts.first().copied().unwrap_or("cvp-simulator"),
    );
    let cert = params.self_signed(&key)?;
    Ok(TestPki {
        ca_pem: cert.pem(),
        identity: TlsIdentity {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        },
    })
}
