//! TLS for the benchmarks: certificates made at run time with rcgen (no
//! private key is ever checked in), and rustls configurations with the
//! `ring` provider for `baseline-raw-tls` and `loadgen --tls-ca`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// The name the generated server certificate is valid for (with
/// `127.0.0.1`), and the name `loadgen` checks by default.
pub const SERVER_NAME: &str = "localhost";

/// The files [`generate`] writes.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// The private CA's certificate: what a client trusts.
    pub ca: PathBuf,
    /// The server's certificate, signed by the CA.
    pub cert: PathBuf,
    /// The server's private key (PKCS#8).
    pub key: PathBuf,
}

/// Makes a private CA and a server certificate it signs (valid for
/// `localhost` and `127.0.0.1`, ECDSA P-256), and writes `ca.pem`,
/// `cert.pem` and `key.pem` into `dir`, which must exist.
pub fn generate(dir: &Path) -> Result<TlsFiles, String> {
    let failed = |error: rcgen::Error| format!("cannot make a certificate: {error}");
    let ca_key = KeyPair::generate().map_err(failed)?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(failed)?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "natter-bench CA");
    let ca = ca_params.self_signed(&ca_key).map_err(failed)?;

    let key = KeyPair::generate().map_err(failed)?;
    let mut params = CertificateParams::new(vec![SERVER_NAME.to_owned(), "127.0.0.1".to_owned()])
        .map_err(failed)?;
    params
        .distinguished_name
        .push(DnType::CommonName, "natter-bench server");
    let cert = params.signed_by(&key, &ca, &ca_key).map_err(failed)?;

    let write = |name: &str, pem: &str| {
        let path = dir.join(name);
        std::fs::write(&path, pem)
            .map_err(|error| format!("cannot write {}: {error}", path.display()))?;
        Ok::<_, String>(path)
    };
    Ok(TlsFiles {
        ca: write("ca.pem", &ca.pem())?,
        cert: write("cert.pem", &cert.pem())?,
        key: write("key.pem", &key.serialize_pem())?,
    })
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let named = |error: &dyn std::fmt::Display| format!("{}: {error}", path.display());
    let certificates = CertificateDer::pem_file_iter(path)
        .map_err(|error| named(&error))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| named(&error))?;
    if certificates.is_empty() {
        return Err(named(&"no certificate in the file"));
    }
    Ok(certificates)
}

/// A server configuration from a PEM certificate chain and its key (ring
/// provider, rustls' safe default versions: TLS 1.3 is negotiated).
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, String> {
    let chain = certificates(cert)?;
    let key =
        PrivateKeyDer::from_pem_file(key).map_err(|error| format!("{}: {error}", key.display()))?;
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|error| error.to_string())?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|error| format!("{} and its key: {error}", cert.display()))?;
    Ok(Arc::new(config))
}

/// A client configuration that trusts only the CA certificates in `ca`.
pub fn client_config(ca: &Path) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = rustls::RootCertStore::empty();
    for certificate in certificates(ca)? {
        roots
            .add(certificate)
            .map_err(|error| format!("{}: {error}", ca.display()))?;
    }
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|error| error.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_files_load() {
        let dir = std::env::temp_dir().join(format!("natter-bench-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let files = generate(&dir).unwrap();
        assert!(server_config(&files.cert, &files.key).is_ok());
        assert!(client_config(&files.ca).is_ok());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
