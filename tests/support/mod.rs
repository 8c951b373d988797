//! What the integration tests share: a server on a free loopback port, a
//! bound on every wait, and a client's view of the bytes it receives.
//!
//! Nothing here sleeps to synchronise: a test waits for an event, a read or
//! a closed connection, always under [`LIMIT`].

// Each test binary uses its own subset of these helpers.
#![allow(dead_code, unreachable_pub)]

use std::convert::Infallible;
use std::future::{Future, Ready, ready};
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use natter::{
    BoxError, Conn, Error, Event, EventKind, Events, Frame, IntoReply, Server, ServerHandle,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::task::JoinHandle;
use tower::util::ServiceFn;
use tower::{Layer, Service, service_fn};

/// One runtime for the property tests' cases, shared by every case of a
/// test binary, with two workers as a real server has: building a runtime
/// per case would cost more than most cases.
pub static RUNTIME: std::sync::LazyLock<tokio::runtime::Runtime> = std::sync::LazyLock::new(|| {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime")
});

/// The longest any test, or any single wait in a test, may take. Generous:
/// it only turns a hang into a failure.
pub const LIMIT: Duration = Duration::from_secs(10);

/// Runs `future`, failing the test if it takes longer than [`LIMIT`].
pub async fn within<F: Future>(what: &str, future: F) -> F::Output {
    match tokio::time::timeout(LIMIT, future).await {
        Ok(output) => output,
        Err(_) => panic!("timed out after {LIMIT:?}: {what}"),
    }
}

/// A server being served on its own task.
pub struct Running {
    pub handle: ServerHandle,
    pub addr: SocketAddr,
    /// What `serve` returned.
    pub served: JoinHandle<Result<(), Error>>,
}

/// Spawns `server.serve(make_service)`.
pub fn start<L, M, S>(server: Server<L>, make_service: M) -> Running
where
    M: FnMut(&Conn) -> S + Send + 'static,
    S: Send + 'static,
    L: Layer<S> + Send + 'static,
    L::Service: Service<Frame> + Send + 'static,
    <L::Service as Service<Frame>>::Response: IntoReply + Send + 'static,
    <L::Service as Service<Frame>>::Error: Into<BoxError>,
    <L::Service as Service<Frame>>::Future: Send + 'static,
{
    let handle = server.handle();
    let addr = server.local_addr().socket_addr().expect("a TCP server");
    let served = tokio::spawn(server.serve(make_service));
    Running {
        handle,
        addr,
        served,
    }
}

impl Running {
    /// Shuts the server down gracefully and checks that `serve` returned
    /// `Ok`.
    pub async fn shutdown(self) {
        within("graceful shutdown", self.handle.shutdown()).await;
        let served = within("serve to return", self.served).await;
        served
            .expect("serve task")
            .expect("serve returned an error");
    }
}

/// The service of an echo server: every frame is its own reply.
pub type Echo = ServiceFn<fn(Frame) -> Ready<Result<Frame, Infallible>>>;

/// A service factory for an echo server.
pub fn echo(_conn: &Conn) -> Echo {
    service_fn(|frame: Frame| ready(Ok(frame)))
}

/// Binds a line-mode echo server on a free port and serves it.
pub async fn echo_server() -> Running {
    let server = Server::builder().bind("127.0.0.1:0").await.expect("bind");
    start(server, echo)
}

pub async fn connect(addr: SocketAddr) -> TcpStream {
    within("connect", TcpStream::connect(addr))
        .await
        .expect("connect")
}

/// Reads exactly `len` bytes (from a TCP, Unix, TLS or in-memory stream).
pub async fn read_exactly<S: AsyncRead + Unpin>(stream: &mut S, len: usize) -> Bytes {
    let mut buf = vec![0; len];
    within("read", stream.read_exact(&mut buf))
        .await
        .unwrap_or_else(|error| panic!("reading {len} bytes: {error}"));
    Bytes::from(buf)
}

/// Writes `request` and checks that exactly `reply` comes back (nothing is
/// read beyond it).
pub async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    request: &str,
    reply: &str,
) {
    stream.write_all(request.as_bytes()).await.expect("write");
    let got = read_exactly(stream, reply.len()).await;
    assert_eq!(got, reply, "reply to {request:?}");
}

/// How the server ended a connection, as the client sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// FIN: a clean end of stream.
    Eof,
    /// RST (or any other read error).
    Reset,
}

/// Reads until the server closes the connection; returns every byte read
/// before that, and how it ended.
pub async fn read_until_closed<S: AsyncRead + Unpin>(stream: &mut S) -> (Bytes, End) {
    within("the server to close the connection", async {
        let mut got = BytesMut::new();
        loop {
            match stream.read_buf(&mut got).await {
                Ok(0) => return (got.freeze(), End::Eof),
                Ok(_) => {}
                Err(_) => return (got.freeze(), End::Reset),
            }
        }
    })
    .await
}

/// Reads until a clean end of stream; returns every byte read.
pub async fn read_to_eof<S: AsyncRead + Unpin>(stream: &mut S) -> Bytes {
    let (got, end) = read_until_closed(stream).await;
    assert_eq!(end, End::Eof, "expected FIN, got a reset after {got:?}");
    got
}

/// Half-closes our side: the server sees end of stream.
pub async fn finish_writing<S: AsyncWrite + Unpin>(stream: &mut S) {
    stream.shutdown().await.expect("shutdown(Write)");
}

/// Waits for the next event `matches` accepts, skipping the others.
pub async fn next_event(
    events: &mut Events,
    what: &str,
    mut matches: impl FnMut(&Event) -> bool,
) -> Event {
    within(what, async {
        loop {
            let event = events.next().await.expect("event stream ended");
            if matches(&event) {
                return event;
            }
        }
    })
    .await
}

/// Waits for the error event of `peer` and returns the error.
pub async fn next_error(events: &mut Events, peer: SocketAddr) -> Error {
    let event = next_event(events, "an error event", |event| {
        event.peer == peer && event.error().is_some()
    })
    .await;
    event.error().cloned().expect("an error")
}

/// Waits until `peer`'s connection is closed on the server's side.
pub async fn closed_event(events: &mut Events, peer: SocketAddr) {
    next_event(events, "a Closed event", |event| {
        event.peer == peer && matches!(event.kind, EventKind::Closed)
    })
    .await;
}

/// Waits until `count` connections have been accepted.
pub async fn connected_events(events: &mut Events, count: usize) {
    let mut seen = 0;
    while seen < count {
        next_event(events, "Connected events", |event| {
            matches!(event.kind, EventKind::Connected)
        })
        .await;
        seen += 1;
    }
}

/// The local address of a client socket: the peer address the server sees.
pub fn addr_of(stream: &TcpStream) -> SocketAddr {
    stream.local_addr().expect("local_addr")
}

/// Whether an I/O error means the connection was refused or reset.
pub fn refused_or_reset(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
    )
}

/// How many file descriptors this process has open (Linux: the entries of
/// `/proc/self/fd`; the directory handle itself is not counted).
pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .count()
        .saturating_sub(1)
}

/// How many of this process's file descriptors are TCP sockets (Linux:
/// the socket inodes of `/proc/self/fd` that `/proc/net/tcp` or `tcp6`
/// list). Unlike [`open_fds`], it does not move when a test's runtime
/// starts or stops (epoll, an eventfd, a Unix socket for signals), so it
/// shows a leak of connections even while other tests come and go.
pub fn open_tcp_sockets() -> usize {
    let tcp: std::collections::HashSet<String> = ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|table| std::fs::read_to_string(table).ok())
        .flat_map(|table| {
            table
                .lines()
                .skip(1)
                .filter_map(|line| line.split_whitespace().nth(9).map(str::to_owned))
                .collect::<Vec<_>>()
        })
        .collect();
    std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .filter_map(|entry| std::fs::read_link(entry.ok()?.path()).ok())
        .filter(|target| {
            let target = target.to_string_lossy();
            target
                .strip_prefix("socket:[")
                .and_then(|rest| rest.strip_suffix(']'))
                .is_some_and(|inode| tcp.contains(inode))
        })
        .count()
}

/// Waits until `condition` holds, checking every 10 ms, failing the test
/// after [`LIMIT`]. For state that only a poll can see, such as
/// [`ServerHandle::connection_count`].
pub async fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    within(what, async {
        while !condition() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
}

/// A port on which nothing listens: connecting to it is refused.
pub fn refusing_addr() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

/// A listener that never completes a handshake: its accept queue is full
/// and nobody accepts, so Linux drops every further SYN and a connect
/// hangs. Returned with the connections that fill the queue, which must
/// stay open.
///
/// The backlog is 0 (room for one connection): `std`'s listener asks for
/// the system maximum (`somaxconn`, thousands), too many to fill. This
/// needs neither root nor a firewall rule, stays on loopback, and is
/// checked rather than assumed: a connect must be seen to hang.
pub async fn unresponsive_listener() -> (TcpListener, Vec<TcpStream>, SocketAddr) {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(0).unwrap();
    let addr = listener.local_addr().unwrap();
    let mut fillers = Vec::new();
    for _ in 0..8 {
        match tokio::time::timeout(Duration::from_millis(200), TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => fillers.push(stream),
            Ok(Err(error)) => panic!("filling the backlog of {addr}: {error}"),
            Err(_) => return (listener, fillers, addr),
        }
    }
    panic!("connecting to {addr} never hung: cannot simulate an unresponsive server here");
}

#[cfg(feature = "tls")]
pub mod tls;

/// A directory of its own under the system's temporary directory, removed
/// with everything in it when dropped: for Unix socket files and generated
/// certificates.
pub struct TempDir(std::path::PathBuf);

impl TempDir {
    /// Makes a new, empty directory whose name no other test (or process)
    /// uses.
    pub fn new() -> TempDir {
        use std::sync::atomic::{AtomicU32, Ordering};
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let unique = format!(
            "natter-{}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |since| since.subsec_nanos()),
        );
        let path = std::env::temp_dir().join(unique);
        std::fs::create_dir(&path).unwrap_or_else(|error| panic!("{}: {error}", path.display()));
        TempDir(path)
    }

    /// A path inside it.
    pub fn join(&self, name: &str) -> std::path::PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Whether a program can be run here (`program -V`, or `openssl version`
/// ); a test that needs it prints a note and skips otherwise.
pub fn have(program: &str) -> bool {
    let arg = if program == "openssl" {
        "version"
    } else {
        "-V"
    };
    let found = std::process::Command::new(program)
        .arg(arg)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok();
    if !found {
        eprintln!(
            "note: `{program}` is not installed; skipping the part of this test that uses it"
        );
    }
    found
}

/// The path of an example binary (`echo`, `client`), built once per test
/// run.
///
/// `cargo test --test echo_process` builds the test but not the examples,
/// so a binary found next to it could be missing or stale. This asks cargo
/// to build both examples into the same target directory and profile:
/// cargo has released its lock by the time tests run, and when the
/// examples are up to date this takes a fraction of a second.
///
/// The variables cargo sets for a running test (`CARGO_MANIFEST_DIR`,
/// `CARGO_PKG_NAME`...) are removed first: ring's build script asks to be
/// rerun when they change, so inherited they rebuild ring and everything
/// above it here, and again at the next `cargo test`: tens of seconds.
pub fn example(name: &str) -> std::path::PathBuf {
    use std::path::{Path, PathBuf};
    static EXAMPLES: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    let dir = EXAMPLES.get_or_init(|| {
        // target/<profile>/deps/<test>-<hash>
        let test_binary = std::env::current_exe().expect("current_exe");
        let profile_dir = test_binary
            .parent()
            .and_then(Path::parent)
            .expect("the test binary lives in target/<profile>/deps");
        let target_dir = profile_dir.parent().expect("target/<profile> has a parent");
        let profile = match profile_dir.file_name().and_then(|name| name.to_str()) {
            Some("debug") => "dev",
            Some(other) => other,
            None => panic!("unexpected profile directory {}", profile_dir.display()),
        };
        let mut cargo = std::process::Command::new(env!("CARGO"));
        for (key, _) in std::env::vars_os() {
            let key = key.to_string_lossy();
            let set_for_the_test = key == "OUT_DIR"
                || key.starts_with("CARGO_PKG_")
                || key.starts_with("CARGO_MANIFEST_")
                || key.starts_with("CARGO_BIN_")
                || matches!(
                    &*key,
                    "CARGO_CRATE_NAME" | "CARGO_PRIMARY_PACKAGE" | "CARGO_TARGET_TMPDIR"
                );
            if set_for_the_test {
                cargo.env_remove(&*key);
            }
        }
        let status = cargo
            .args(["build", "--quiet", "-p", "natter"])
            .args(["--example", "echo", "--example", "client"])
            .args(["--profile", profile])
            .arg("--manifest-path")
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"))
            .arg("--target-dir")
            .arg(target_dir)
            .status()
            .expect("running cargo to build the examples");
        assert!(status.success(), "building the examples failed: {status}");
        profile_dir.join("examples")
    });
    let binary = dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        binary.is_file(),
        "the {name} example is not at {}; build it with `cargo build -p natter --example {name}`",
        binary.display()
    );
    binary
}
