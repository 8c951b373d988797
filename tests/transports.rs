//! natter over every transport, talked to by real clients: TLS (a plain
//! rustls client, `openssl s_client`, natter's own client), Unix sockets
//! (a raw std `UnixStream`, socat or Python), in memory (no socket at
//! all), and other codecs on the same pipeline (length-prefixed frames, a
//! multi-byte delimiter).
//!
//! Sockets on loopback and in temporary directories only; certificates are
//! made at test time; every wait is bounded.

mod support;

use std::convert::Infallible;
use std::time::Duration;

use futures::StreamExt;
use futures::stream::FuturesOrdered;
use natter::{ClientService, Conn, Error, Frame, Server, ServerHandle};
use tokio::task::JoinHandle;
use tower::layer::util::Identity;
use tower::{Service, ServiceExt, service_fn};

use support::*;

/// Serves `server` with the echo service on a task of its own.
fn serve_echo<T: natter::transport::Listener>(
    server: Server<Identity, T>,
) -> (ServerHandle, JoinHandle<Result<(), Error>>) {
    let handle = server.handle();
    (handle, tokio::spawn(server.serve(echo)))
}

/// Shuts a server down and checks that `serve` returned `Ok`.
async fn shut_down(handle: ServerHandle, served: JoinHandle<Result<(), Error>>) {
    within("graceful shutdown", handle.shutdown()).await;
    within("serve to return", served)
        .await
        .expect("serve task")
        .expect("serve returned an error");
}

/// Sends `count` requests with up to `in_flight` of them waiting at once,
/// and checks that each answer is its request's, in order.
async fn pipeline(service: &mut ClientService, count: usize, in_flight: usize) {
    within("pipelined requests", async {
        let mut waiting: FuturesOrdered<natter::client::ResponseFuture> = FuturesOrdered::new();
        let mut answered = 0;
        for i in 0..count {
            if waiting.len() == in_flight {
                let answer: Frame = waiting.next().await.expect("an answer").expect("an answer");
                assert_eq!(answer, format!("request {answered}").as_str());
                answered += 1;
            }
            let ready = service.ready().await.expect("ready");
            waiting.push_back(ready.call(Frame::from(format!("request {i}"))));
        }
        while let Some(answer) = waiting.next().await {
            let answer: Frame = answer.expect("an answer");
            assert_eq!(answer, format!("request {answered}").as_str());
            answered += 1;
        }
        assert_eq!(answered, count);
    })
    .await
}

/// A handler that takes 0-2 ms by the frame's length, so that with several
/// frames in flight later ones often finish first.
async fn uneven(frame: Frame) -> Result<Frame, Infallible> {
    tokio::time::sleep(Duration::from_millis(frame.len() as u64 % 3)).await;
    Ok(frame)
}

// ---------------------------------------------------------------------------
// TLS
// ---------------------------------------------------------------------------

#[cfg(feature = "tls")]
mod tls {
    use std::time::Instant;

    use natter::transport::tls::{TlsAcceptor, TlsConnector};
    use natter::{Client, EventKind, ServerBuilder};
    use tokio::io::AsyncWriteExt;

    use super::*;
    use crate::support::tls::{Pki, openssl_s_client};

    /// A TLS echo server with `pki`'s certificate, configured further by
    /// `configure`.
    async fn tls_echo(
        pki: &Pki,
        handshake_timeout: Duration,
        configure: impl FnOnce(ServerBuilder<Identity>) -> ServerBuilder<Identity>,
    ) -> Running {
        let acceptor = TlsAcceptor::from_pem_files(&pki.cert, &pki.key)
            .expect("the generated certificate and key")
            .handshake_timeout(handshake_timeout);
        let server = configure(Server::builder().tls(acceptor))
            .bind("127.0.0.1:0")
            .await
            .expect("bind");
        start(server, echo)
    }

    #[tokio::test]
    async fn a_plain_rustls_client_gets_the_echo_and_a_clean_close() {
        let pki = Pki::new();
        let server = tls_echo(&pki, Duration::from_secs(10), |builder| builder).await;

        let mut client = pki.connect(server.addr, "localhost").await;
        exchange(&mut client, "hello\r\nworld\n", "hello\nworld\n").await;
        let peer = client.get_ref().0.local_addr().unwrap();
        assert_eq!(server.handle.connections(), [peer]);

        // close_notify and FIN: the last frame is answered, then the server
        // closes cleanly too.
        client.write_all(b"last").await.unwrap();
        finish_writing(&mut client).await;
        assert_eq!(read_to_eof(&mut client).await, "last\n");
        server.shutdown().await;
    }

    #[tokio::test]
    async fn openssl_s_client_gets_the_echo() {
        let pki = Pki::new();
        let server = tls_echo(&pki, Duration::from_secs(10), |builder| builder).await;

        // It verifies the chain to our CA and the certificate's IP address.
        if let Some(lines) = openssl_s_client(&pki, server.addr, "one\r\ntwo\n", 2).await {
            assert_eq!(lines, ["one", "two"]);
        }
        server.shutdown().await;
    }

    #[tokio::test]
    async fn plain_text_and_stalled_handshakes_are_closed_while_a_tls_client_carries_on() {
        let pki = Pki::new();
        // No idle timeout: the handshake timeout alone bounds them. A long
        // linger shows whether a closed handshake waits for it.
        let server = tls_echo(&pki, Duration::from_millis(400), |builder| {
            builder.idle_timeout(None).linger(Duration::from_secs(5))
        })
        .await;
        let mut events = server.handle.events();
        let mut good = pki.connect(server.addr, "localhost").await;
        exchange(&mut good, "before\n", "before\n").await;

        // Plain text is no handshake: closed at once, with a TLS alert at
        // most, never an echo.
        let mut plain = connect(server.addr).await;
        plain.write_all(b"hello\n").await.unwrap();
        let (got, _) = tokio::time::timeout(Duration::from_secs(2), read_until_closed(&mut plain))
            .await
            .expect("a plain-text peer is closed at once");
        assert!(!got.windows(5).any(|w| w == b"hello"), "{got:?}");

        // One says nothing; one sends the start of a record and stalls.
        let began = Instant::now();
        let mut silent = connect(server.addr).await;
        let mut partial = connect(server.addr).await;
        partial
            .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
            .await
            .unwrap();
        exchange(&mut good, "during\n", "during\n").await;
        for stalled in [&mut silent, &mut partial] {
            read_until_closed(stalled).await;
        }
        let took = began.elapsed();
        assert!(
            took >= Duration::from_millis(350) && took < Duration::from_millis(2500),
            "closed after {took:?}: by the 400 ms handshake timeout, and not after the 5 s linger"
        );
        let silent_peer = addr_of(&silent);
        let error = next_event(&mut events, "the silent peer's error", |event| {
            event.peer == silent_peer && event.error().is_some()
        })
        .await;
        assert!(
            error.error().unwrap().is_timeout(),
            "{:?}",
            error.error().unwrap()
        );

        exchange(&mut good, "after\n", "after\n").await;
        // Gone before shutdown, or the server's close lingers 5 s for them.
        drop((good, plain, silent, partial));
        server.shutdown().await;
    }

    #[tokio::test]
    async fn the_idle_timeout_bounds_the_handshake_too() {
        let pki = Pki::new();
        let server = tls_echo(&pki, Duration::from_secs(10), |builder| {
            builder
                .idle_timeout(Duration::from_millis(300))
                .linger(Duration::from_secs(5))
        })
        .await;
        let began = Instant::now();
        let mut silent = connect(server.addr).await;
        read_until_closed(&mut silent).await;
        let took = began.elapsed();
        assert!(
            took < Duration::from_millis(2000),
            "closed after {took:?}: by the 300 ms idle timeout, and not after the 5 s linger"
        );
        server.shutdown().await;
    }

    #[tokio::test]
    async fn graceful_shutdown_closes_a_peer_in_the_handshake_at_once() {
        let pki = Pki::new();
        let server = tls_echo(&pki, Duration::from_secs(10), |builder| {
            builder.linger(Duration::from_secs(5))
        })
        .await;
        let mut events = server.handle.events();
        let mut silent = connect(server.addr).await;
        connected_events(&mut events, 1).await;

        let began = Instant::now();
        let handle = server.handle.clone();
        let shutdown = tokio::spawn(async move { handle.shutdown().await });
        read_until_closed(&mut silent).await;
        within("shutdown", shutdown).await.unwrap();
        let took = began.elapsed();
        assert!(took < Duration::from_millis(2000), "took {took:?}");
        server.shutdown().await;
    }

    #[tokio::test]
    async fn natter_client_with_an_untrusted_certificate_gets_an_error_saying_so() {
        let pki = Pki::new();
        let server = tls_echo(&pki, Duration::from_secs(10), |builder| builder).await;
        let addr = server.addr.to_string();

        // Trusting another CA.
        let connector = TlsConnector::from_pem_file(&pki.other_ca).unwrap();
        let result = Client::builder()
            .tls(connector)
            .connect_service(server.addr)
            .await;
        let Err(error) = result else {
            panic!("connected to a server signed by a CA it does not trust")
        };
        let text = error.to_string();
        assert!(matches!(error, Error::Connect { .. }), "{error:?}");
        assert!(
            text.contains("not trusted") && text.contains(&addr),
            "{text}"
        );

        // Trusting the right CA, but for another name.
        let connector = TlsConnector::from_pem_file(&pki.ca)
            .unwrap()
            .server_name("elsewhere.example")
            .unwrap();
        let result = Client::builder()
            .tls(connector)
            .connect_service(server.addr)
            .await;
        let Err(error) = result else {
            panic!("a certificate for localhost was accepted for elsewhere.example")
        };
        assert!(error.to_string().contains("not trusted"), "{error}");

        // The server carries on.
        let mut good = pki.connect(server.addr, "127.0.0.1").await;
        exchange(&mut good, "still here\n", "still here\n").await;
        server.shutdown().await;
    }

    #[tokio::test]
    async fn natter_client_service_pipelines_requests_over_tls() {
        let pki = Pki::new();
        let acceptor = TlsAcceptor::from_pem(pki.cert_pem.as_bytes(), pki.key_pem.as_bytes())
            .expect("the generated certificate and key");
        let server = Server::builder()
            .tls(acceptor)
            .max_in_flight(8)
            .bind("127.0.0.1:0")
            .await
            .expect("bind");
        let handle = server.handle();
        let port = server.local_addr().socket_addr().unwrap().port();
        let served = tokio::spawn(server.serve(|conn: &Conn| {
            let transport = conn.transport();
            service_fn(move |frame: Frame| async move {
                if frame == "transport?" {
                    return Ok(Frame::from(transport));
                }
                uneven(frame).await
            })
        }));

        // Verified for the address's IP, then for a DNS name.
        for addr in [format!("127.0.0.1:{port}"), format!("localhost:{port}")] {
            let connector = TlsConnector::from_pem(pki.ca_pem.as_bytes()).unwrap();
            let mut service = Client::builder()
                .tls(connector)
                .connect_service(&addr)
                .await
                .unwrap_or_else(|error| panic!("{addr}: {error}"));
            let transport = service.ready().await.unwrap().call("transport?".into());
            assert_eq!(within("an answer", transport).await.unwrap(), "tls");
            pipeline(&mut service, 300, 32).await;
            let mut events = service.events();
            service.close();
            next_event(&mut events, "the client's Closed event", |event| {
                matches!(event.kind, EventKind::Closed)
            })
            .await;
        }
        shut_down(handle, served).await;
    }

    #[tokio::test]
    async fn tls_files_that_cannot_be_used_are_errors_naming_the_file() {
        let pki = Pki::new();
        let missing = pki.dir.join("missing.pem");
        let cases = [
            (
                TlsAcceptor::from_pem_files(&missing, &pki.key),
                vec![&missing],
            ),
            (
                TlsAcceptor::from_pem_files(&pki.cert, &missing),
                vec![&missing],
            ),
            // A key file where the certificate should be.
            (
                TlsAcceptor::from_pem_files(&pki.key, &pki.key),
                vec![&pki.key],
            ),
            // A certificate file where the key should be.
            (
                TlsAcceptor::from_pem_files(&pki.cert, &pki.cert),
                vec![&pki.cert],
            ),
            // Two good files that do not belong together: both named.
            (
                TlsAcceptor::from_pem_files(&pki.cert, &pki.other_key),
                vec![&pki.cert, &pki.other_key],
            ),
        ];
        for (result, files) in cases {
            let Err(error) = result else {
                panic!("{files:?} were accepted")
            };
            assert!(matches!(error, Error::Tls(_)), "{error:?}");
            let text = error.to_string();
            for file in files {
                assert!(text.contains(&file.display().to_string()), "{text}");
            }
        }
        let error = TlsConnector::from_pem_file(&missing).unwrap_err();
        assert!(error.to_string().contains(&missing.display().to_string()));
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn tls_with_a_unix_address_is_refused_rather_than_ignored() {
        let pki = Pki::new();
        let acceptor = TlsAcceptor::from_pem_files(&pki.cert, &pki.key).unwrap();
        let path = pki.dir.join("tls.sock");
        let result = Server::builder()
            .tls(acceptor)
            .bind(format!("unix:{}", path.display()))
            .await;
        assert!(
            matches!(result, Err(Error::InvalidConfig(_))),
            "{:?}",
            result.map(drop)
        );
        assert!(!path.exists(), "no socket file is left behind");

        let connector = TlsConnector::from_pem_file(&pki.ca).unwrap();
        let result = Client::builder()
            .tls(connector)
            .connect(format!("unix:{}", path.display()))
            .await;
        assert!(matches!(result, Err(Error::InvalidConfig(_))));
    }
}

// ---------------------------------------------------------------------------
// Unix domain sockets
// ---------------------------------------------------------------------------

#[cfg(unix)]
mod unix {
    use std::io::{Read, Write};
    use std::net::Shutdown;
    use std::path::{Path, PathBuf};
    use std::process::Stdio;

    use natter::transport::Addr;
    use natter::{Client, EventKind};
    use tokio::io::AsyncWriteExt;
    use tokio::net::UnixStream;

    use super::*;

    fn unix(path: &Path) -> String {
        format!("unix:{}", path.display())
    }

    async fn bind(path: &Path) -> Server<Identity> {
        Server::builder().bind(unix(path)).await.expect("bind")
    }

    async fn connect_unix(path: &Path) -> UnixStream {
        within("connect", UnixStream::connect(path))
            .await
            .expect("connect")
    }

    /// Talks to `path` with a blocking std `UnixStream`: writes `request`,
    /// half-closes, returns everything read until the server closes.
    async fn std_exchange(path: PathBuf, request: &'static [u8]) -> Vec<u8> {
        let blocking = tokio::task::spawn_blocking(move || {
            let mut stream = std::os::unix::net::UnixStream::connect(&path).expect("connect");
            stream.set_read_timeout(Some(LIMIT)).unwrap();
            stream.write_all(request).expect("write");
            stream.shutdown(Shutdown::Write).expect("half-close");
            let mut got = Vec::new();
            stream.read_to_end(&mut got).expect("read");
            got
        });
        within("a std UnixStream exchange", blocking)
            .await
            .expect("the blocking client")
    }

    #[tokio::test]
    async fn a_raw_std_unix_stream_and_natter_clients_get_the_echo() {
        let dir = TempDir::new();
        let path = dir.join("echo.sock");
        let server = bind(&path).await;
        assert_eq!(server.local_addr(), Addr::unix(&path));
        assert_eq!(server.local_addr().to_string(), unix(&path));
        let (handle, served) = serve_echo(server);

        let got = std_exchange(path.clone(), b"one\r\ntwo\n\nlast").await;
        assert_eq!(got, b"one\ntwo\n\nlast\n");

        let mut service = Client::builder()
            .connect_service(unix(&path))
            .await
            .expect("connect_service");
        assert_eq!(service.peer_addr(), Some(Addr::unix(&path)));
        pipeline(&mut service, 200, 16).await;
        drop(service);
        shut_down(handle, served).await;
    }

    #[tokio::test]
    async fn socat_or_python_gets_the_echo() {
        let dir = TempDir::new();
        let path = dir.join("echo.sock");
        let (handle, served) = serve_echo(bind(&path).await);

        if have("socat") {
            let mut socat = tokio::process::Command::new("socat")
                .args(["-t", "5", "-"])
                .arg(format!("UNIX-CONNECT:{}", path.display()))
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .kill_on_drop(true)
                .spawn()
                .expect("socat");
            let mut stdin = socat.stdin.take().unwrap();
            stdin.write_all(b"from socat\r\nsecond\n").await.unwrap();
            drop(stdin);
            let output = within("socat", socat.wait_with_output()).await.unwrap();
            assert_eq!(
                String::from_utf8_lossy(&output.stdout),
                "from socat\nsecond\n"
            );
        }

        if have("python3") {
            let script = r#"
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.settimeout(10)
s.connect(sys.argv[1])
s.sendall(b"from python\r\nsecond\nlast")
s.shutdown(socket.SHUT_WR)
data = b""
while True:
    chunk = s.recv(4096)
    if not chunk:
        break
    data += chunk
sys.stdout.buffer.write(data)
"#;
            let python = tokio::process::Command::new("python3")
                .args(["-c", script])
                .arg(&path)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .kill_on_drop(true)
                .spawn()
                .expect("python3");
            let output = within("python3", python.wait_with_output()).await.unwrap();
            assert!(
                output.status.success(),
                "{}",
                String::from_utf8_lossy(&output.stderr)
            );
            assert_eq!(
                String::from_utf8_lossy(&output.stdout),
                "from python\nsecond\nlast\n"
            );
        }
        shut_down(handle, served).await;
    }

    #[tokio::test]
    async fn a_stale_socket_file_is_taken_over() {
        let dir = TempDir::new();
        let path = dir.join("echo.sock");
        // A server that went away without removing its file.
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        assert!(path.exists());

        let (handle, served) = serve_echo(bind(&path).await);
        let mut client = connect_unix(&path).await;
        exchange(&mut client, "taken over\n", "taken over\n").await;
        drop(client);
        shut_down(handle, served).await;
    }

    #[tokio::test]
    async fn a_live_socket_and_a_path_that_is_no_socket_are_refused_naming_the_path() {
        let dir = TempDir::new();
        let path = dir.join("echo.sock");
        let (handle, served) = serve_echo(bind(&path).await);

        let refused = Server::builder().bind(unix(&path)).await;
        let Err(error) = refused else {
            panic!("a second server took over a live socket")
        };
        assert!(matches!(error, Error::Bind { .. }), "{error:?}");
        assert!(error.to_string().contains(&unix(&path)), "{error}");
        // The live server keeps its file and its clients.
        let mut client = connect_unix(&path).await;
        exchange(&mut client, "untouched\n", "untouched\n").await;

        let file = dir.join("notes.txt");
        std::fs::write(&file, "keep me").unwrap();
        let subdir = dir.join("a-directory");
        std::fs::create_dir(&subdir).unwrap();
        for path in [&file, &subdir] {
            let refused = Server::builder().bind(unix(path)).await;
            let Err(error) = refused else {
                panic!("listened on {}, which is no socket", path.display())
            };
            assert!(matches!(error, Error::Bind { .. }), "{error:?}");
            assert!(error.to_string().contains(&unix(path)), "{error}");
        }
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "keep me");
        assert!(subdir.is_dir());

        drop(client);
        shut_down(handle, served).await;
    }

    #[tokio::test]
    async fn the_socket_file_is_removed_when_the_server_stops() {
        let dir = TempDir::new();
        let path = dir.join("echo.sock");
        let (handle, served) = serve_echo(bind(&path).await);
        let mut client = connect_unix(&path).await;
        exchange(&mut client, "x\n", "x\n").await;
        shut_down(handle, served).await;
        assert!(!path.exists(), "the socket file outlived the server");
        assert_eq!(read_to_eof(&mut client).await, "");

        // Cut, and a server dropped without serving, clean up too.
        let (handle, served) = serve_echo(bind(&path).await);
        within("cut", handle.cut()).await;
        within("serve", served).await.unwrap().unwrap();
        assert!(!path.exists());
        drop(bind(&path).await);
        assert!(!path.exists());
    }

    async fn connected(events: &mut natter::Events) -> Addr {
        next_event(events, "a Connected event", |event| {
            matches!(event.kind, EventKind::Connected)
        })
        .await
        .peer
    }

    #[tokio::test]
    async fn connections_and_close_work_for_unnamed_unix_peers() {
        let dir = TempDir::new();
        let path = dir.join("echo.sock");
        let server = bind(&path).await;
        let mut events = server.events();
        let (handle, served) = serve_echo(server);

        let mut a = connect_unix(&path).await;
        let peer_a = connected(&mut events).await;
        let mut b = connect_unix(&path).await;
        let peer_b = connected(&mut events).await;
        for peer in [&peer_a, &peer_b] {
            match peer {
                Addr::Unix(unix) => assert_eq!(unix.path(), None, "{peer}"),
                other => panic!("not a Unix address: {other}"),
            }
        }
        assert_ne!(peer_a, peer_b);
        let mut open = handle.connections();
        open.sort();
        let mut expected = vec![peer_a.clone(), peer_b.clone()];
        expected.sort();
        assert_eq!(open, expected);

        exchange(&mut a, "a\n", "a\n").await;
        exchange(&mut b, "b\n", "b\n").await;
        within("close(a)", handle.close(peer_a.clone()))
            .await
            .expect("close an unnamed peer");
        assert_eq!(read_to_eof(&mut a).await, "");
        exchange(&mut b, "still b\n", "still b\n").await;
        assert_eq!(handle.connections(), [peer_b]);
        assert!(matches!(
            handle.close(peer_a).await,
            Err(Error::UnknownPeer(_))
        ));
        drop(b);
        shut_down(handle, served).await;
    }
}

// ---------------------------------------------------------------------------
// In memory
// ---------------------------------------------------------------------------

mod memory {
    use natter::Client;
    use natter::transport::Addr;
    use natter::transport::memory::{self, Once};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// Frames of 0 to 99 bytes, so that many are longer than the pipe.
    fn frames() -> Vec<Vec<u8>> {
        (0..60)
            .map(|i| {
                (0..(i * 37) % 100)
                    .map(|j| b'a' + ((i + j) % 26) as u8)
                    .collect()
            })
            .collect()
    }

    /// A stream that, like a TLS session, keeps what it is given until it
    /// is flushed, and whose first flush of each batch waits (waking its
    /// task at once), as rustls's does when the socket is full.
    struct HoldsUntilFlushed {
        inner: tokio::io::DuplexStream,
        held: Vec<u8>,
        flushes: usize,
    }

    impl tokio::io::AsyncRead for HoldsUntilFlushed {
        fn poll_read(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
            buf: &mut tokio::io::ReadBuf<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
        }
    }

    impl tokio::io::AsyncWrite for HoldsUntilFlushed {
        fn poll_write(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &[u8],
        ) -> std::task::Poll<std::io::Result<usize>> {
            self.held.extend_from_slice(buf);
            std::task::Poll::Ready(Ok(buf.len()))
        }

        fn poll_flush(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            use std::task::Poll;
            if self.held.is_empty() {
                return Poll::Ready(Ok(()));
            }
            self.flushes += 1;
            if self.flushes % 2 == 1 {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            let this = &mut *self;
            while !this.held.is_empty() {
                match std::pin::Pin::new(&mut this.inner).poll_write(cx, &this.held) {
                    Poll::Ready(Ok(n)) => {
                        this.held.drain(..n);
                    }
                    Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
                    Poll::Pending => return Poll::Pending,
                }
            }
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::task::ready!(self.as_mut().poll_flush(cx))?;
            std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
        }
    }

    impl natter::transport::Io for HoldsUntilFlushed {}

    /// The driver flushes until the stream says it is done, even once it
    /// has handed over every byte: a TLS session that took the last reply
    /// but could not send it yet must be flushed again, or the reply stays
    /// in it while the peer waits.
    #[tokio::test]
    async fn a_reply_the_stream_holds_until_a_second_flush_is_still_sent() {
        let (server_end, mut client_end) = tokio::io::duplex(1024);
        let io = HoldsUntilFlushed {
            inner: server_end,
            held: Vec::new(),
            flushes: 0,
        };
        let served = tokio::spawn(Server::builder().serve_io(io, |_: &Conn| {
            service_fn(|frame: Frame| async move { Ok::<_, Infallible>(frame) })
        }));
        for line in ["one\n", "two\n"] {
            client_end.write_all(line.as_bytes()).await.unwrap();
            let mut reply = vec![0; line.len()];
            within(
                "the reply the stream held",
                client_end.read_exact(&mut reply),
            )
            .await
            .unwrap();
            assert_eq!(reply, line.as_bytes());
        }
        drop(client_end);
        let _ = within("the connection to end", served).await;
    }

    /// A stream that counts its shutdowns and, like turmoil's simulated
    /// TCP, refuses a second one.
    struct OneShutdown {
        inner: tokio::io::DuplexStream,
        shutdowns: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    }

    impl tokio::io::AsyncRead for OneShutdown {
        fn poll_read(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
            buf: &mut tokio::io::ReadBuf<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
        }
    }

    impl tokio::io::AsyncWrite for OneShutdown {
        fn poll_write(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
            buf: &[u8],
        ) -> std::task::Poll<std::io::Result<usize>> {
            std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
        }

        fn poll_flush(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::pin::Pin::new(&mut self.inner).poll_flush(cx)
        }

        fn poll_shutdown(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            use std::sync::atomic::Ordering;
            if self.shutdowns.fetch_add(1, Ordering::SeqCst) > 0 {
                return std::task::Poll::Ready(Err(std::io::ErrorKind::NotConnected.into()));
            }
            std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
        }
    }

    impl natter::transport::Io for OneShutdown {}

    /// A closing connection sends FIN once and then lingers, reading what
    /// the peer still sends, until the peer closes too: it does not ask for
    /// a second shutdown at every wake-up (a stream that refuses one would
    /// end the linger, and a late request then draw a reset).
    #[tokio::test]
    async fn a_closing_connection_shuts_down_once_and_lingers_through_late_requests() {
        let shutdowns = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (server_end, mut client_end) = tokio::io::duplex(1024);
        let io = OneShutdown {
            inner: server_end,
            shutdowns: shutdowns.clone(),
        };
        let served = tokio::spawn(Server::builder().linger(Duration::from_secs(30)).serve_io(
            io,
            |conn: &Conn| {
                let conn = conn.clone();
                service_fn(move |frame: Frame| {
                    conn.close();
                    async move { Ok::<_, Infallible>(frame) }
                })
            },
        ));
        client_end.write_all(b"bye\n").await.unwrap();
        let mut reply = Vec::new();
        // The reply, then the server's FIN.
        within("the reply and the FIN", client_end.read_to_end(&mut reply))
            .await
            .unwrap();
        assert_eq!(reply, b"bye\n");
        // Late requests: read and dropped while the server lingers.
        for _ in 0..3 {
            client_end.write_all(b"late\n").await.unwrap();
            tokio::task::yield_now().await;
        }
        drop(client_end);
        let _ = within("the connection to end", served).await;
        assert_eq!(shutdowns.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn serve_io_over_a_duplex_answers_in_order_through_partial_writes_and_a_half_close() {
        // A 16-byte pipe: every write of either side is partial.
        let (server_end, client_end) = tokio::io::duplex(16);
        let served = tokio::spawn(Server::builder().max_in_flight(4).serve_io(
            server_end,
            |conn: &Conn| {
                assert_eq!(conn.transport(), "memory");
                service_fn(|frame: Frame| async move {
                    let reversed: Vec<u8> = frame.iter().rev().copied().collect();
                    uneven(frame).await.map(|_| Frame::from(reversed))
                })
            },
        ));
        let (mut reading, mut writing) = tokio::io::split(client_end);
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            reading.read_to_end(&mut got).await.map(|_| got)
        });

        let frames = frames();
        let mut bytes = Vec::new();
        let mut expected = Vec::new();
        for (i, frame) in frames.iter().enumerate() {
            bytes.extend_from_slice(frame);
            expected.extend(frame.iter().rev());
            expected.push(b'\n');
            // The last frame is ended by the half-close, not a newline.
            if i + 1 < frames.len() {
                bytes.push(b'\n');
            }
        }
        within("writing", async {
            for chunk in bytes.chunks(7) {
                writing.write_all(chunk).await.unwrap();
                tokio::task::yield_now().await;
            }
            writing.shutdown().await.unwrap();
        })
        .await;

        let got = within("the replies", reader).await.unwrap().unwrap();
        assert_eq!(
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(&expected)
        );
        within("serve_io to return", served)
            .await
            .unwrap()
            .expect("a clean end");
    }

    #[tokio::test]
    async fn natter_clients_over_a_memory_channel_pipeline_with_no_socket() {
        let (listener, dialer) = memory::channel();
        let server = Server::builder()
            .max_in_flight(4)
            .listener(listener)
            .expect("listener");
        let handle = server.handle();
        let served = tokio::spawn(server.serve(|_: &Conn| service_fn(uneven)));

        let mut first = Client::builder()
            .connect_service(dialer.clone())
            .await
            .unwrap();
        let mut second = Client::builder().connect_service(dialer).await.unwrap();
        let (a, b) = (first.local_addr().unwrap(), second.local_addr().unwrap());
        assert!(matches!(a, Addr::Memory(_)) && a != b, "{a} {b}");
        let mut open = handle.connections();
        open.sort();
        let mut expected = vec![a.clone(), b.clone()];
        expected.sort();
        assert_eq!(open, expected);

        tokio::join!(pipeline(&mut first, 300, 16), pipeline(&mut second, 300, 3));

        within("close", handle.close(a)).await.unwrap();
        let closed = first.ready().await.map(drop);
        assert!(matches!(closed, Err(Error::Closed)), "{closed:?}");
        pipeline(&mut second, 10, 2).await;
        drop(second);
        shut_down(handle, served).await;
    }

    #[tokio::test]
    async fn a_client_over_a_stream_it_was_given_talks_to_serve_io() {
        let (server_end, client_end) = tokio::io::duplex(64);
        let served =
            tokio::spawn(Server::builder().serve_io(server_end, |_: &Conn| service_fn(uneven)));
        let mut service = Client::builder()
            .connect_service(Once::new(client_end))
            .await
            .unwrap();
        pipeline(&mut service, 100, 8).await;
        let mut events = service.events();
        service.close();
        next_event(&mut events, "the client's Closed event", |event| {
            matches!(event.kind, natter::EventKind::Closed)
        })
        .await;
        within("serve_io to return", served)
            .await
            .unwrap()
            .expect("a clean end");
    }
}

// ---------------------------------------------------------------------------
// Other codecs on the same pipeline
// ---------------------------------------------------------------------------

mod codecs {
    use natter::codec::Frames;
    use natter::layer::HandlerTimeoutLayer;
    use natter::{Client, DelimiterCodec};
    use tokio::io::AsyncWriteExt;
    use tokio_util::codec::LengthDelimitedCodec;

    use super::*;

    /// `payload` with its 4-byte big-endian length in front.
    fn prefixed(payload: &[u8]) -> Vec<u8> {
        let mut frame = (payload.len() as u32).to_be_bytes().to_vec();
        frame.extend_from_slice(payload);
        frame
    }

    #[tokio::test]
    async fn a_length_prefixed_server_gets_natter_layers_hook_limits_and_events() {
        let codec = Frames(
            LengthDelimitedCodec::builder()
                .max_frame_length(64)
                .new_codec(),
        );
        let server = Server::builder()
            .codec(codec)
            .max_in_flight(4)
            .layer(HandlerTimeoutLayer::new(Duration::from_millis(100)))
            .on_error(|error: &Error, _: &Conn| Some(Frame::from(format!("ERR {error}"))))
            .bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = server.local_addr().socket_addr().unwrap();
        let handle = server.handle();
        let mut events = server.events();
        let served = tokio::spawn(server.serve(|_: &Conn| {
            service_fn(|frame: Frame| async move {
                if frame == "slow" {
                    tokio::time::sleep(LIMIT).await;
                }
                let reversed: Vec<u8> = frame.iter().rev().copied().collect();
                Ok::<_, Infallible>(Frame::from(reversed))
            })
        }));

        let mut client = connect(addr).await;
        let requests: Vec<&[u8]> = vec![b"new\nlines\r\nare data", b"", b"slow", &[0, 1, 0xff]];
        let bytes: Vec<u8> = requests.iter().flat_map(|r| prefixed(r)).collect();
        // Cut at awkward places: inside a length prefix, inside a payload.
        for chunk in bytes.chunks(3) {
            client.write_all(chunk).await.unwrap();
        }
        let expected: Vec<u8> = [
            prefixed(b"atad era\n\rsenil\nwen"),
            prefixed(b""),
            // The layer's timeout, answered in its place by the hook.
            prefixed(b"ERR handler did not finish within 100ms"),
            prefixed(&[0xff, 1, 0]),
        ]
        .concat();
        let got = read_exactly(&mut client, expected.len()).await;
        assert_eq!(got, expected);

        // A length over the codec's limit: the codec cannot find the next
        // frame, so the connection closes (with no reply), reported as a
        // decode error that still holds the codec's own error.
        let peer = addr_of(&client);
        client.write_all(&1000u32.to_be_bytes()).await.unwrap();
        let (rest, _) = read_until_closed(&mut client).await;
        assert_eq!(rest, "");
        let error = next_error(&mut events, peer).await;
        let error = if error.is_timeout() {
            next_error(&mut events, peer).await
        } else {
            error
        };
        assert!(matches!(error, Error::Decode(_)), "{error:?}");
        assert!(
            error.downcast_ref::<std::io::Error>().is_some(),
            "{error:?}"
        );

        shut_down(handle, served).await;
    }

    #[tokio::test]
    async fn a_multi_byte_delimiter_server_frames_at_the_whole_sequence() {
        let server = Server::builder()
            .codec(DelimiterCodec::sequence("\r\n\r\n"))
            .bind("127.0.0.1:0")
            .await
            .expect("bind");
        let server = start(server, echo);
        let mut client = connect(server.addr).await;

        // Split inside the delimiter; a lone `\r\n` is data; an empty frame.
        for piece in [
            "GET / HTTP/1.0\r",
            "\nHost: a\r\n\r",
            "\nsecond\r\n\r\n",
            "\r\n\r\n",
            "a\r\n\rb",
        ] {
            client.write_all(piece.as_bytes()).await.unwrap();
            tokio::task::yield_now().await;
        }
        finish_writing(&mut client).await;
        assert_eq!(
            read_to_eof(&mut client).await,
            "GET / HTTP/1.0\r\nHost: a\r\n\r\nsecond\r\n\r\n\r\n\r\na\r\n\rb\r\n\r\n"
        );

        // natter's own client with the same codec, pipelining.
        let mut service = Client::builder()
            .codec(DelimiterCodec::sequence("\r\n\r\n"))
            .connect_service(server.addr)
            .await
            .unwrap();
        pipeline(&mut service, 100, 8).await;
        let answer = service
            .ready()
            .await
            .unwrap()
            .call("line one\r\nline two".into());
        assert_eq!(
            within("an answer", answer).await.unwrap(),
            "line one\r\nline two"
        );
        drop(service);
        server.shutdown().await;
    }
}
