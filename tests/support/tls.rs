//! TLS for the tests: certificates made at test time with rcgen (no
//! private key is ever checked in), a plain tokio-rustls client, and
//! `openssl s_client` as a standard client from outside.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::rustls::pki_types::pem::PemObject;

use super::{TempDir, within};

/// A private CA, a server certificate it signed (valid for `localhost`
/// and `127.0.0.1`) with its key, and a second CA that signed nothing
/// here: all as PEM text and as files in a directory of their own.
pub struct Pki {
    pub dir: TempDir,
    /// The CA that signed the server's certificate.
    pub ca: PathBuf,
    pub ca_pem: String,
    /// The server's certificate and its key (PKCS#8).
    pub cert: PathBuf,
    pub cert_pem: String,
    pub key: PathBuf,
    pub key_pem: String,
    /// A key that is not the certificate's.
    pub other_key: PathBuf,
    /// A CA nobody here uses: trusting only it, the server is untrusted.
    pub other_ca: PathBuf,
}

impl Pki {
    pub fn new() -> Pki {
        let (ca, ca_key) = make_ca("natter test CA");
        let (other_ca, _) = make_ca("some other CA");
        let key = KeyPair::generate().expect("a key");
        let mut params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
                .expect("certificate parameters");
        params
            .distinguished_name
            .push(DnType::CommonName, "natter test server");
        let cert = params.signed_by(&key, &ca, &ca_key).expect("signing");

        let dir = TempDir::new();
        let write = |name: &str, pem: &str| {
            let path = dir.join(name);
            std::fs::write(&path, pem).expect("writing a PEM file");
            path
        };
        let other_key = KeyPair::generate().expect("a key").serialize_pem();
        Pki {
            ca: write("ca.pem", &ca.pem()),
            ca_pem: ca.pem(),
            cert: write("cert.pem", &cert.pem()),
            cert_pem: cert.pem(),
            key: write("key.pem", &key.serialize_pem()),
            key_pem: key.serialize_pem(),
            other_key: write("other-key.pem", &other_key),
            other_ca: write("other-ca.pem", &other_ca.pem()),
            dir,
        }
    }

    /// A rustls client configuration that trusts our CA (ring provider).
    pub fn client_config(&self) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        let (added, _) = roots.add_parsable_certificates(
            rustls::pki_types::CertificateDer::pem_slice_iter(self.ca_pem.as_bytes())
                .map(|cert| cert.expect("CA PEM")),
        );
        assert_eq!(added, 1);
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
        Arc::new(config)
    }

    /// Connects to `addr` with a plain tokio-rustls client that trusts our
    /// CA and verifies the certificate for `name`.
    pub async fn connect(&self, addr: SocketAddr, name: &str) -> TlsStream<TcpStream> {
        let tcp = super::connect(addr).await;
        let connector = tokio_rustls::TlsConnector::from(self.client_config());
        let name = ServerName::try_from(name.to_owned()).expect("a server name");
        within("the TLS handshake", connector.connect(name, tcp))
            .await
            .expect("the TLS handshake")
    }
}

fn make_ca(name: &str) -> (rcgen::Certificate, KeyPair) {
    let key = KeyPair::generate().expect("a key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.distinguished_name.push(DnType::CommonName, name);
    let cert = params.self_signed(&key).expect("self-signing the CA");
    (cert, key)
}

/// Runs `openssl s_client -connect addr -quiet`, trusting our CA and
/// insisting on a verified certificate, writes `input` and returns the
/// first `lines` lines it prints. `None` (after a note) when openssl is not
/// installed.
pub async fn openssl_s_client(
    pki: &Pki,
    addr: SocketAddr,
    input: &str,
    lines: usize,
) -> Option<Vec<String>> {
    if !super::have("openssl") {
        return None;
    }
    let mut child = tokio::process::Command::new("openssl")
        .args(["s_client", "-connect", &addr.to_string(), "-quiet"])
        .arg("-CAfile")
        .arg(&pki.ca)
        .args(["-verify_return_error", "-verify_ip", &addr.ip().to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("running openssl");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input.as_bytes()).await.unwrap();
    stdin.flush().await.unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut got = Vec::new();
    while got.len() < lines {
        match within("a line from openssl s_client", stdout.next_line()).await {
            Ok(Some(line)) => got.push(line),
            other => panic!("openssl s_client ended after {got:?}: {other:?}"),
        }
    }
    // With -quiet it keeps the connection after its stdin ends: stop it.
    drop(stdin);
    child.start_kill().ok();
    within("openssl to exit", child.wait()).await.ok();
    Some(got)
}
