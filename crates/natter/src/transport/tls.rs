//! TLS over any transport, with rustls and its `ring` crypto provider.
//!
//! On the server, [`TlsListener`] wraps any [`Listener`]: `accept` returns
//! at once, and the handshake runs in the connection's own task, bounded by
//! the [handshake timeout](TlsAcceptor::handshake_timeout) (10 s by
//! default) and by the connection's idle timeout, so a peer that stalls in
//! the handshake or sends plain text is closed without holding up the
//! others. [`ServerBuilder::tls`](crate::ServerBuilder::tls) puts one in
//! front of the TCP listener [`bind`](crate::ServerBuilder::bind) makes.
//!
//! On the client, [`TlsDialer`] wraps any [`Dial`]; the handshake counts
//! against the client's connect timeout.
//! [`ClientBuilder::tls`](crate::ClientBuilder::tls) uses it for every
//! `HOST:PORT` address.
//!
//! ```
//! # fn demo() -> Result<(), natter::Error> {
//! use natter::transport::tls::{TlsAcceptor, TlsConnector};
//!
//! let acceptor = TlsAcceptor::from_pem_files("cert.pem", "key.pem")?;
//! let connector = TlsConnector::from_pem_file("ca.pem")?; // or ::with_native_roots()
//! # Ok(()) }
//! # let _ = demo;
//! ```
//!
//! natter configures rustls with the `ring` provider itself (never the
//! process-wide default), so it works whatever provider other crates in the
//! program install. Trust anchors for a client come from a PEM file or from
//! the platform's store (`rustls-native-certs`: the operating system's
//! roots, updated with it, rather than a list compiled into the program).

use std::fmt;
use std::future::Future as _;
use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Sleep, sleep};

use super::{Addr, Dial, Dialled, Io, Listener};
use crate::Error;

/// How long a server gives a peer to finish the TLS handshake, by default.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A TLS error that names what it concerns (a file, a peer).
#[derive(Debug)]
pub struct TlsError {
    what: String,
    source: Option<rustls::Error>,
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.source {
            Some(source) => write!(f, "{}: {source}", self.what),
            None => f.write_str(&self.what),
        }
    }
}

impl std::error::Error for TlsError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_ref()
            .map(|source| source as &(dyn std::error::Error + 'static))
    }
}

impl TlsError {
    /// The rustls error behind it, if any.
    pub fn rustls(&self) -> Option<&rustls::Error> {
        self.source.as_ref()
    }
}

fn config_error(what: impl Into<String>, source: Option<rustls::Error>) -> Error {
    Error::Tls(Arc::new(TlsError {
        what: what.into(),
        source,
    }))
}

/// A handshake error, as the stream reports it: says plainly when the
/// peer's certificate was not trusted.
fn handshake_error(error: io::Error) -> io::Error {
    let kind = error.kind();
    let Some(rustls_error) = error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .cloned()
    else {
        return error;
    };
    let what = match &rustls_error {
        // webpki's reason, as rustls passes it on: a certificate made as a
        // CA (`openssl req -x509` marks its output so) serves a server.
        rustls::Error::InvalidCertificate(reason)
            if format!("{reason:?}").contains("CaUsedAsEndEntity") =>
        {
            "TLS handshake failed: the server's certificate was not trusted: it is a CA \
             certificate (basicConstraints CA:TRUE, as `openssl req -x509` makes by default), \
             not a server's own; make it with `-addext basicConstraints=critical,CA:FALSE`"
        }
        rustls::Error::InvalidCertificate(_) => {
            "TLS handshake failed: the server's certificate was not trusted"
        }
        _ => "TLS handshake failed",
    };
    io::Error::new(
        kind,
        TlsError {
            what: what.into(),
            source: Some(rustls_error),
        },
    )
}

fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, Error> {
    let named = |reason: String| config_error(format!("{}: {reason}", path.display()), None);
    let certificates: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|error| named(error.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|error| named(error.to_string()))?;
    if certificates.is_empty() {
        return Err(named("no certificate in the file".into()));
    }
    Ok(certificates)
}

fn read_certificates_pem(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, Error> {
    let certificates: Vec<_> = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .map_err(|error| config_error(format!("certificates: {error}"), None))?;
    if certificates.is_empty() {
        return Err(config_error("certificates: none in the PEM", None));
    }
    Ok(certificates)
}

// ---------------------------------------------------------------------------
// Server
// ---------------------------------------------------------------------------

/// The server's TLS settings: its certificate chain and key, and how long
/// a handshake may take.
#[derive(Clone)]
pub struct TlsAcceptor {
    acceptor: tokio_rustls::TlsAcceptor,
    handshake_timeout: Duration,
}

impl TlsAcceptor {
    /// From a certificate chain and its private key (PKCS#8, RSA or EC) in
    /// PEM files. Fails naming the file that cannot be read, holds no
    /// certificate or key, or does not match the other.
    pub fn from_pem_files(
        cert_chain: impl AsRef<Path>,
        key: impl AsRef<Path>,
    ) -> Result<TlsAcceptor, Error> {
        let (cert_chain, key_path) = (cert_chain.as_ref(), key.as_ref());
        let certificates = read_certificates(cert_chain)?;
        let key = PrivateKeyDer::from_pem_file(key_path)
            .map_err(|error| config_error(format!("{}: {error}", key_path.display()), None))?;
        let mismatch = format!(
            "{} does not go with the key in {}",
            cert_chain.display(),
            key_path.display()
        );
        TlsAcceptor::from_parts(certificates, key, mismatch)
    }

    /// From a certificate chain and its private key in PEM text.
    pub fn from_pem(cert_chain: &[u8], key: &[u8]) -> Result<TlsAcceptor, Error> {
        let certificates = read_certificates_pem(cert_chain)?;
        let key = PrivateKeyDer::from_pem_slice(key)
            .map_err(|error| config_error(format!("private key: {error}"), None))?;
        TlsAcceptor::from_parts(
            certificates,
            key,
            "the certificate does not go with the key".into(),
        )
    }

    fn from_parts(
        certificates: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
        mismatch: String,
    ) -> Result<TlsAcceptor, Error> {
        let config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|error| config_error("TLS versions", Some(error)))?
            .with_no_client_auth()
            .with_single_cert(certificates, key)
            .map_err(|error| config_error(mismatch, Some(error)))?;
        Ok(TlsAcceptor::new(Arc::new(config)))
    }

    /// From a rustls configuration of your own (client certificates, ALPN,
    /// session resumption...).
    pub fn new(config: Arc<rustls::ServerConfig>) -> TlsAcceptor {
        TlsAcceptor {
            acceptor: tokio_rustls::TlsAcceptor::from(config),
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
        }
    }

    /// How long a peer may take to finish the handshake (default 10 s);
    /// then its connection fails with a timeout. The connection's idle
    /// timeout bounds the handshake too.
    pub fn handshake_timeout(mut self, timeout: Duration) -> TlsAcceptor {
        self.handshake_timeout = timeout;
        self
    }
}

impl fmt::Debug for TlsAcceptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsAcceptor")
            .field("handshake_timeout", &self.handshake_timeout)
            .finish_non_exhaustive()
    }
}

/// A [`Listener`] whose connections speak TLS. See the [module](self) docs.
#[derive(Debug)]
pub struct TlsListener<L> {
    inner: L,
    acceptor: TlsAcceptor,
}

impl<L> TlsListener<L> {
    /// TLS over the connections `inner` accepts.
    pub fn new(inner: L, acceptor: TlsAcceptor) -> Self {
        TlsListener { inner, acceptor }
    }
}

impl<L: Listener> Listener for TlsListener<L> {
    type Io = TlsStream<L::Io>;

    async fn accept(&mut self) -> io::Result<(TlsStream<L::Io>, Addr)> {
        let (io, peer) = self.inner.accept().await?;
        let accept = self.acceptor.acceptor.accept(io);
        let deadline = Box::pin(sleep(self.acceptor.handshake_timeout));
        let stream = TlsStream {
            state: State::Accepting {
                accept,
                deadline,
                timeout: self.acceptor.handshake_timeout,
            },
        };
        Ok((stream, peer))
    }

    fn local_addr(&self) -> io::Result<Addr> {
        self.inner.local_addr()
    }
}

// ---------------------------------------------------------------------------
// Client
// ---------------------------------------------------------------------------

/// The client's TLS settings: whom it trusts, and optionally the name to
/// verify instead of the one in the address.
#[derive(Clone)]
pub struct TlsConnector {
    connector: tokio_rustls::TlsConnector,
    server_name: Option<ServerName<'static>>,
}

impl TlsConnector {
    /// Trusts the certificate authorities in a PEM file (a private CA, or
    /// a self-signed server's own certificate).
    pub fn from_pem_file(ca: impl AsRef<Path>) -> Result<TlsConnector, Error> {
        let ca = ca.as_ref();
        let mut roots = rustls::RootCertStore::empty();
        for certificate in read_certificates(ca)? {
            roots.add(certificate).map_err(|error| {
                config_error(
                    format!("{}: not a CA certificate", ca.display()),
                    Some(error),
                )
            })?;
        }
        TlsConnector::with_roots(roots)
    }

    /// Trusts the certificate authorities in PEM text.
    pub fn from_pem(ca: &[u8]) -> Result<TlsConnector, Error> {
        let mut roots = rustls::RootCertStore::empty();
        for certificate in read_certificates_pem(ca)? {
            roots
                .add(certificate)
                .map_err(|error| config_error("not a CA certificate", Some(error)))?;
        }
        TlsConnector::with_roots(roots)
    }

    /// Trusts the platform's certificate authorities (the operating
    /// system's store, read by `rustls-native-certs`). Fails if none can be
    /// read.
    pub fn with_native_roots() -> Result<TlsConnector, Error> {
        let found = rustls_native_certs::load_native_certs();
        let mut roots = rustls::RootCertStore::empty();
        let (added, _ignored) = roots.add_parsable_certificates(found.certs);
        if added == 0 {
            let reason = found
                .errors
                .first()
                .map(|error| format!(": {error}"))
                .unwrap_or_default();
            return Err(config_error(
                format!("no trusted certificates found on this system{reason}"),
                None,
            ));
        }
        TlsConnector::with_roots(roots)
    }

    fn with_roots(roots: rustls::RootCertStore) -> Result<TlsConnector, Error> {
        let config = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|error| config_error("TLS versions", Some(error)))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(TlsConnector::new(Arc::new(config)))
    }

    /// From a rustls configuration of your own.
    pub fn new(config: Arc<rustls::ClientConfig>) -> TlsConnector {
        TlsConnector {
            connector: tokio_rustls::TlsConnector::from(config),
            server_name: None,
        }
    }

    /// Verifies the server's certificate for `name` (a DNS name or an IP
    /// address) rather than for the host part of the address dialled.
    pub fn server_name(mut self, name: &str) -> Result<TlsConnector, Error> {
        self.server_name = Some(parse_server_name(name)?);
        Ok(self)
    }
}

impl fmt::Debug for TlsConnector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsConnector")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

fn parse_server_name(name: &str) -> Result<ServerName<'static>, Error> {
    ServerName::try_from(name.to_owned())
        .map_err(|_| config_error(format!("{name:?} is not a DNS name or an IP address"), None))
}

/// The host part of `HOST:PORT` (`[::1]:7000` -> `::1`).
fn host_of(addr: &str) -> &str {
    let host = addr.rsplit_once(':').map_or(addr, |(host, _port)| host);
    host.strip_prefix('[')
        .and_then(|host| host.strip_suffix(']'))
        .unwrap_or(host)
}

/// A [`Dial`] whose connections speak TLS. See the [module](self) docs.
#[derive(Debug, Clone)]
pub struct TlsDialer<D> {
    inner: D,
    connector: TlsConnector,
    server_name: ServerName<'static>,
}

impl<D: Dial> TlsDialer<D> {
    /// TLS over the connections `inner` opens. The server's certificate is
    /// verified for the connector's [`server_name`](TlsConnector::server_name)
    /// if it has one, else for the host part of `addr` (`HOST:PORT`).
    pub fn new(inner: D, connector: TlsConnector, addr: &str) -> Result<Self, Error> {
        let server_name = match &connector.server_name {
            Some(name) => name.clone(),
            None => parse_server_name(host_of(addr))?,
        };
        Ok(TlsDialer {
            inner,
            connector,
            server_name,
        })
    }
}

impl<D: Dial> Dial for TlsDialer<D> {
    type Io = TlsStream<D::Io>;

    async fn dial(&self) -> Result<Dialled<TlsStream<D::Io>>, Error> {
        let dialled = self.inner.dial().await?;
        let stream = self
            .connector
            .connector
            .connect(self.server_name.clone(), dialled.io)
            .await
            .map_err(|error| Error::connect(self.target(), handshake_error(error)))?;
        Ok(Dialled {
            io: TlsStream {
                state: State::Streaming(tokio_rustls::TlsStream::Client(stream)),
            },
            peer: dialled.peer,
            local: dialled.local,
        })
    }

    fn target(&self) -> String {
        self.inner.target()
    }
}

// ---------------------------------------------------------------------------
// The stream
// ---------------------------------------------------------------------------

/// A TLS session over a stream. On a server it finishes its handshake on
/// first use, within the handshake timeout.
pub struct TlsStream<T> {
    state: State<T>,
}

enum State<T> {
    Accepting {
        accept: tokio_rustls::Accept<T>,
        deadline: Pin<Box<Sleep>>,
        timeout: Duration,
    },
    Streaming(tokio_rustls::TlsStream<T>),
    Failed,
}

impl<T> fmt::Debug for TlsStream<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.state {
            State::Accepting { .. } => "handshaking",
            State::Streaming(_) => "streaming",
            State::Failed => "failed",
        };
        f.debug_struct("TlsStream")
            .field("state", &state)
            .finish_non_exhaustive()
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> TlsStream<T> {
    /// Drives the handshake; `Ready(Ok)` once the session is up.
    fn poll_handshake(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let State::Accepting {
            accept,
            deadline,
            timeout,
        } = &mut self.state
        else {
            return match self.state {
                State::Failed => Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::NotConnected,
                    "the TLS handshake failed",
                ))),
                _ => Poll::Ready(Ok(())),
            };
        };
        match Pin::new(accept).poll(cx) {
            Poll::Ready(Ok(stream)) => {
                self.state = State::Streaming(tokio_rustls::TlsStream::Server(stream));
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(error)) => {
                self.state = State::Failed;
                Poll::Ready(Err(handshake_error(error)))
            }
            Poll::Pending => {
                if deadline.as_mut().poll(cx).is_ready() {
                    let timeout = *timeout;
                    self.state = State::Failed;
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        TlsError {
                            what: format!("TLS handshake did not finish within {timeout:?}"),
                            source: None,
                        },
                    )));
                }
                Poll::Pending
            }
        }
    }

    fn session(&mut self) -> Option<&mut tokio_rustls::TlsStream<T>> {
        match &mut self.state {
            State::Streaming(stream) => Some(stream),
            _ => None,
        }
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncRead for TlsStream<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        std::task::ready!(self.poll_handshake(cx))?;
        let stream = self.session().expect("the handshake is done");
        Pin::new(stream).poll_read(cx, buf)
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncWrite for TlsStream<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        std::task::ready!(self.poll_handshake(cx))?;
        let stream = self.session().expect("the handshake is done");
        Pin::new(stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.session() {
            Some(stream) => Pin::new(stream).poll_flush(cx),
            None => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.state {
            State::Streaming(stream) => Pin::new(stream).poll_shutdown(cx),
            // Mid-handshake: no reply of ours can be lost, so there is
            // nothing to close politely. Close the socket now: left open,
            // the handshake would go on through the connection's linger
            // (reading a peer that may never stop) and the peer would see
            // the close only after it.
            State::Accepting { .. } => {
                self.state = State::Failed;
                Poll::Ready(Ok(()))
            }
            State::Failed => Poll::Ready(Ok(())),
        }
    }
}

impl<T: Io> Io for TlsStream<T> {
    fn transport(&self) -> &'static str {
        "tls"
    }

    fn has_unread_input(&self) -> bool {
        match &self.state {
            State::Streaming(stream) => stream.get_ref().0.has_unread_input(),
            State::Accepting { accept, .. } => accept.get_ref().is_some_and(Io::has_unread_input),
            State::Failed => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_part_of_an_address_is_the_server_name() {
        assert_eq!(host_of("example.com:443"), "example.com");
        assert_eq!(host_of("127.0.0.1:7000"), "127.0.0.1");
        assert_eq!(host_of("[::1]:7000"), "::1");
        assert!(matches!(
            parse_server_name(host_of("127.0.0.1:7000")),
            Ok(ServerName::IpAddress(_))
        ));
    }
}
