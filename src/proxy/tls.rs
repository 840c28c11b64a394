//! TLS from files (README, Dataplane): inbound termination with ALPN `h2`/`http/1.1`,
//! outbound origination with a CA file and SNI. rustls with the ring provider only.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// ALPN protocol ids.
pub(crate) const ALPN_H2: &[u8] = b"h2";
pub(crate) const ALPN_HTTP11: &[u8] = b"http/1.1";

/// A server config for an inbound: certificate chain and key from PEM files; offers h2 and
/// http/1.1 for HTTP listeners.
pub(crate) fn server_config(
    cert_file: &Path,
    key_file: &Path,
    http: bool,
) -> anyhow::Result<rustls::ServerConfig> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_file)
        .with_context(|| format!("{}: cannot read certificates", cert_file.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("{}: invalid PEM certificate", cert_file.display()))?;
    if certs.is_empty() {
        anyhow::bail!("{}: no certificate found", cert_file.display());
    }
    let key = PrivateKeyDer::from_pem_file(key_file)
        .with_context(|| format!("{}: cannot read a private key", key_file.display()))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .with_context(|| {
            format!(
                "{}: certificate and key do not form a valid pair",
                cert_file.display()
            )
        })?;
    if http {
        config.alpn_protocols = vec![ALPN_H2.to_vec(), ALPN_HTTP11.to_vec()];
    }
    Ok(config)
}

/// A client config for an outbound: trusts the CA certificates in `ca_file`, offers `alpn`.
pub fn client_config(ca_file: &Path, alpn: Option<&[u8]>) -> anyhow::Result<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca_file)
        .with_context(|| format!("{}: cannot read CA certificates", ca_file.display()))?
    {
        let cert =
            cert.with_context(|| format!("{}: invalid PEM certificate", ca_file.display()))?;
        roots
            .add(cert)
            .with_context(|| format!("{}: unusable CA certificate", ca_file.display()))?;
    }
    if roots.is_empty() {
        anyhow::bail!("{}: no CA certificate found", ca_file.display());
    }
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_root_certificates(roots)
        .with_no_client_auth();
    if let Some(alpn) = alpn {
        config.alpn_protocols = vec![alpn.to_vec()];
    }
    Ok(config)
}
