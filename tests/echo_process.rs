//! The echo example as its users meet it: a process with a command line,
//! stdout, stderr, an exit code and a port (the command line is documented
//! in docs/cli.md), over TCP, a Unix socket and TLS.
//!
//! Each test runs the built example binary on a free loopback port (or a
//! Unix socket in a temporary directory), reads the address from its first
//! stdout line and talks to it. Every wait is bounded; the processes are
//! killed when a test ends, however it ends.

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use support::{TempDir, connect, exchange, finish_writing, read_to_eof, read_until_closed, within};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};
use tokio::sync::mpsc;

/// The echo example's binary, built once per test run.
fn echo_binary() -> PathBuf {
    support::example("echo")
}

/// A running echo process.
struct Echo {
    child: Child,
    /// Where it listens, as its first stdout line says (after `listening
    /// on `).
    listening: String,
    /// stdout after the first line.
    stdout: Lines<BufReader<ChildStdout>>,
    /// stderr, line by line, read as the process writes it so that a full
    /// pipe never blocks it.
    stderr: mpsc::UnboundedReceiver<String>,
}

impl Echo {
    /// Starts `echo --listen 127.0.0.1:0 <args>` and reads the address it
    /// announces.
    async fn start(args: &[&str]) -> Echo {
        let echo = Echo::listen("127.0.0.1:0", args).await;
        let addr = echo.addr();
        assert_eq!(addr.ip().to_string(), "127.0.0.1", "{}", echo.listening);
        assert_ne!(addr.port(), 0, "{}: the real port, not 0", echo.listening);
        echo
    }

    /// Starts `echo --listen <listen> <args>` and reads the first line.
    async fn listen(listen: &str, args: &[&str]) -> Echo {
        let mut child = Command::new(echo_binary())
            .args(["--listen", listen])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawning the echo example");
        let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
        let (lines, stderr) = mpsc::unbounded_channel();
        let mut stderr_lines = BufReader::new(child.stderr.take().unwrap()).lines();
        tokio::spawn(async move {
            while let Ok(Some(line)) = stderr_lines.next_line().await {
                if lines.send(line).is_err() {
                    break;
                }
            }
        });

        let first = within("the first stdout line", stdout.next_line())
            .await
            .expect("reading stdout")
            .expect("stdout ended before the first line");
        let listening = first
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("first stdout line {first:?}"))
            .to_owned();
        Echo {
            child,
            listening,
            stdout,
            stderr,
        }
    }

    /// The TCP address it listens on.
    fn addr(&self) -> SocketAddr {
        self.listening
            .parse()
            .unwrap_or_else(|_| panic!("no IP:PORT in `listening on {}`", self.listening))
    }

    /// Sends `signal` (`"TERM"`, `"INT"`) with the system's `kill`.
    async fn signal(&self, signal: &str) {
        let pid = self.child.id().expect("the process is running").to_string();
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &pid])
            .status()
            .await
            .expect("running kill");
        assert!(status.success(), "kill -{signal} {pid}: {status}");
    }

    async fn exit_status(&mut self) -> ExitStatus {
        within("the process to exit", self.child.wait())
            .await
            .expect("wait")
    }

    /// Waits for a stderr line `matches` accepts; returns it.
    async fn stderr_line(&mut self, what: &str, matches: impl Fn(&str) -> bool) -> String {
        within(what, async {
            loop {
                let line = self
                    .stderr
                    .recv()
                    .await
                    .unwrap_or_else(|| panic!("stderr ended before {what}"));
                if matches(&line) {
                    return line;
                }
            }
        })
        .await
    }
}

/// Runs the echo example to its end with `args` (no `--listen` added) and
/// returns its exit status, stdout and stderr.
async fn run_to_exit(args: &[&str]) -> (ExitStatus, String, String) {
    let child = Command::new(echo_binary())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawning the echo example");
    let output = within("the process to exit", child.wait_with_output())
        .await
        .expect("wait");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    (output.status, stdout, stderr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_stdout_line_is_the_real_listening_address() {
    within("the test", async {
        let echo = Echo::start(&[]).await;
        let mut client = connect(echo.addr()).await;
        exchange(&mut client, "hi\r\n", "hi\n").await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_answers_every_line_in_order_then_closes_after_a_half_close() {
    within("the test", async {
        let echo = Echo::start(&[]).await;
        let mut client = connect(echo.addr()).await;
        exchange(&mut client, "one\r\ntwo\r\r\n\n", "one\ntwo\r\n\n").await;
        client.write_all(b"three\nlast").await.unwrap();
        finish_writing(&mut client).await;
        assert_eq!(read_to_eof(&mut client).await, "three\nlast\n");
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delim_0_echoes_the_whole_stream_verbatim_then_closes() {
    within("the test", async {
        let echo = Echo::start(&["--delim", "0"]).await;
        let mut client = connect(echo.addr()).await;
        client.write_all(b"first line\r\n").await.unwrap();
        client.write_all(b"\n;second, no newline").await.unwrap();
        finish_writing(&mut client).await;
        assert_eq!(
            read_to_eof(&mut client).await,
            "first line\r\n\n;second, no newline"
        );
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_delimiter_strips_nothing_but_itself() {
    within("the test", async {
        let echo = Echo::start(&["--delim", "59"]).await;
        let mut client = connect(echo.addr()).await;
        exchange(&mut client, "a\r;b\n;;", "a\r;b\n;;").await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_answers_the_frame_already_sent_closes_idle_connections_and_exits_0() {
    within("the test", async {
        let mut echo = Echo::start(&["--handler-delay-ms", "300"]).await;
        let addr = echo.addr();
        let mut busy = connect(echo.addr()).await;
        let mut idle = connect(echo.addr()).await;
        // Both connections are accepted once each has been answered.
        exchange(&mut busy, "warm up\n", "warm up\n").await;
        exchange(&mut idle, "me too\n", "me too\n").await;

        busy.write_all(b"just before\n").await.unwrap();
        echo.signal("TERM").await;

        assert_eq!(
            read_to_eof(&mut idle).await,
            "",
            "an idle connection closes at once"
        );
        assert_eq!(read_to_eof(&mut busy).await, "just before\n");
        drop((busy, idle));
        let status = echo.exit_status().await;
        assert_eq!(status.code(), Some(0), "{status}");
        // Nothing but the first line on stdout: logs go to stderr.
        let mut rest = String::new();
        echo.stdout
            .into_inner()
            .read_to_string(&mut rest)
            .await
            .unwrap();
        assert_eq!(rest, "");
        // The listener is gone.
        assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_stops_it_too() {
    within("the test", async {
        let mut echo = Echo::start(&[]).await;
        let mut client = connect(echo.addr()).await;
        exchange(&mut client, "x\n", "x\n").await;
        echo.signal("INT").await;
        assert_eq!(read_to_eof(&mut client).await, "");
        drop(client);
        let status = echo.exit_status().await;
        assert_eq!(status.code(), Some(0), "{status}");
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_arguments_exit_2_with_the_error_on_stderr() {
    within("the test", async {
        for args in [
            &["--listen", "127.0.0.1:0", "--delim", "300"][..],
            &["--listen", "127.0.0.1:0", "--no-such-flag"][..],
        ] {
            let (status, stdout, stderr) = run_to_exit(args).await;
            assert_eq!(
                status.code(),
                Some(2),
                "{args:?}: {status}; stderr: {stderr}"
            );
            assert!(!stderr.trim().is_empty(), "{args:?}: no error on stderr");
            assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
            assert_eq!(stdout, "", "{args:?}");
        }
        let (_, _, stderr) = run_to_exit(&["--delim", "300"]).await;
        assert!(
            stderr.contains("300"),
            "the error names the bad value: {stderr}"
        );
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_address_in_use_exits_1_naming_the_address() {
    within("the test", async {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap().to_string();
        let (status, stdout, stderr) = run_to_exit(&["--listen", &addr]).await;
        assert_eq!(status.code(), Some(1), "{status}; stderr: {stderr}");
        assert!(
            stderr.contains(&addr),
            "stderr does not name {addr}: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert_eq!(stdout, "");
        drop(taken);
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_frame_closes_only_its_connection_and_is_logged_with_the_peer() {
    within("the test", async {
        let mut echo = Echo::start(&["--max-frame", "8"]).await;
        let mut bystander = connect(echo.addr()).await;
        exchange(&mut bystander, "before\n", "before\n").await;

        let mut offender = connect(echo.addr()).await;
        let peer = offender.local_addr().unwrap().to_string();
        // Exactly the limit is accepted, a stripped `\r` not counted.
        exchange(&mut offender, "12345678\r\n", "12345678\n").await;
        offender.write_all(b"123456789\n").await.unwrap();
        let (got, _how) =
            tokio::time::timeout(Duration::from_secs(1), read_until_closed(&mut offender))
                .await
                .expect("closed within 1 s of the limit being passed");
        assert_eq!(got, "", "no reply to an oversized frame");

        let warning = echo
            .stderr_line("a WARN line naming the peer", |line| {
                line.contains("WARN") && line.contains(&peer)
            })
            .await;
        assert!(warning.contains("frame"), "{warning}");

        exchange(&mut bystander, "after\n", "after\n").await;
    })
    .await
}

// ---------------------------------------------------------------------------
// --listen unix:PATH
// ---------------------------------------------------------------------------

async fn connect_unix(path: &Path) -> tokio::net::UnixStream {
    within("connect", tokio::net::UnixStream::connect(path))
        .await
        .expect("connect")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unix_listen_announces_the_path_echoes_and_sigterm_drains_and_removes_the_file() {
    within("the test", async {
        let dir = TempDir::new();
        let path = dir.join("echo.sock");
        let listen = format!("unix:{}", path.display());
        let mut echo = Echo::listen(&listen, &["--handler-delay-ms", "300"]).await;
        assert_eq!(echo.listening, listen, "the first line names the socket");

        let mut busy = connect_unix(&path).await;
        let mut idle = connect_unix(&path).await;
        exchange(&mut busy, "one\r\ntwo\r\r\n\n", "one\ntwo\r\n\n").await;
        exchange(&mut idle, "me too\n", "me too\n").await;

        busy.write_all(b"just before\n").await.unwrap();
        echo.signal("TERM").await;
        assert_eq!(read_to_eof(&mut idle).await, "");
        assert_eq!(read_to_eof(&mut busy).await, "just before\n");
        let status = echo.exit_status().await;
        assert_eq!(status.code(), Some(0), "{status}");
        assert!(!path.exists(), "the socket file outlived the server");
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unix_listen_on_a_live_socket_or_a_non_socket_exits_1_naming_the_path_and_takes_over_a_stale_one()
 {
    within("the test", async {
        let dir = TempDir::new();
        let file = dir.join("notes.txt");
        std::fs::write(&file, "keep me").unwrap();
        let path = dir.join("echo.sock");
        let listen = format!("unix:{}", path.display());
        let mut live = Echo::listen(&listen, &[]).await;

        for taken in [&file, &path] {
            let taken = taken.display().to_string();
            let (status, stdout, stderr) =
                run_to_exit(&["--listen", &format!("unix:{taken}")]).await;
            assert_eq!(
                status.code(),
                Some(1),
                "{taken}: {status}; stderr: {stderr}"
            );
            assert!(
                stderr.contains(&taken),
                "stderr does not name {taken}: {stderr}"
            );
            assert!(!stderr.contains("panicked"), "{stderr}");
            assert_eq!(stdout, "");
        }
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "keep me");
        let mut client = connect_unix(&path).await;
        exchange(&mut client, "still here\n", "still here\n").await;

        // Killed outright, the server leaves its socket file behind; the
        // next one takes it over.
        live.child.start_kill().unwrap();
        live.exit_status().await;
        drop(client);
        assert!(path.exists());
        let _next = Echo::listen(&listen, &[]).await;
        let mut client = connect_unix(&path).await;
        exchange(&mut client, "taken over\n", "taken over\n").await;
    })
    .await
}

// ---------------------------------------------------------------------------
// --tls-cert, --tls-key
// ---------------------------------------------------------------------------

#[cfg(feature = "tls")]
mod tls {
    use std::time::Instant;

    use super::support::tls::{Pki, openssl_s_client};
    use super::*;

    fn tls_args(pki: &Pki) -> [String; 4] {
        [
            "--tls-cert".into(),
            pki.cert.display().to_string(),
            "--tls-key".into(),
            pki.key.display().to_string(),
        ]
    }

    async fn start_tls(pki: &Pki, more: &[&str]) -> Echo {
        let args = tls_args(pki);
        let mut all: Vec<&str> = args.iter().map(String::as_str).collect();
        all.extend_from_slice(more);
        Echo::start(&all).await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn tls_keeps_the_first_line_and_echoes_to_rustls_and_openssl() {
        within("the test", async {
            let pki = Pki::new();
            let echo = start_tls(&pki, &[]).await;

            let mut client = pki.connect(echo.addr(), "127.0.0.1").await;
            exchange(&mut client, "hi\r\nthere\n", "hi\nthere\n").await;
            client.write_all(b"last").await.unwrap();
            finish_writing(&mut client).await;
            assert_eq!(read_to_eof(&mut client).await, "last\n");

            if let Some(lines) = openssl_s_client(&pki, echo.addr(), "one\r\ntwo\n", 2).await {
                assert_eq!(lines, ["one", "two"]);
            }
        })
        .await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn tls_peers_that_send_plain_text_or_stall_are_closed_within_the_idle_timeout() {
        within("the test", async {
            let pki = Pki::new();
            let echo = start_tls(&pki, &["--idle-timeout-ms", "600"]).await;
            let mut good = pki.connect(echo.addr(), "localhost").await;
            exchange(&mut good, "before\n", "before\n").await;

            let mut plain = connect(echo.addr()).await;
            plain.write_all(b"hello\n").await.unwrap();
            let began = Instant::now();
            let mut silent = connect(echo.addr()).await;
            let (got, _) = read_until_closed(&mut plain).await;
            assert!(!got.windows(5).any(|w| w == b"hello"), "{got:?}");

            // The TLS client keeps talking (within its own idle timeout)
            // while the silent one waits to be closed.
            let closed = read_until_closed(&mut silent);
            let talking = async {
                loop {
                    exchange(&mut good, "during\n", "during\n").await;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            };
            tokio::select! {
                _ = closed => {}
                () = talking => unreachable!(),
            }
            let took = began.elapsed();
            assert!(
                took < Duration::from_millis(600 + 1000),
                "closed after {took:?}, idle timeout 600 ms"
            );
            exchange(&mut good, "after\n", "after\n").await;
        })
        .await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn unusable_tls_files_exit_1_naming_the_file_before_listening() {
        within("the test", async {
            let pki = Pki::new();
            let missing = pki.dir.join("missing.pem").display().to_string();
            let (cert, key) = (
                pki.cert.display().to_string(),
                pki.key.display().to_string(),
            );
            let other_key = pki.other_key.display().to_string();
            for (args, named) in [
                (["--tls-cert", &missing, "--tls-key", &key], &missing),
                (["--tls-cert", &cert, "--tls-key", &missing], &missing),
                (["--tls-cert", &key, "--tls-key", &key], &key),
                (["--tls-cert", &cert, "--tls-key", &other_key], &other_key),
            ] {
                let mut all = vec!["--listen", "127.0.0.1:0"];
                all.extend_from_slice(&args);
                let (status, stdout, stderr) = run_to_exit(&all).await;
                assert_eq!(
                    status.code(),
                    Some(1),
                    "{args:?}: {status}; stderr: {stderr}"
                );
                assert!(stderr.contains(named.as_str()), "{args:?}: {stderr}");
                assert!(!stderr.contains("panicked"), "{stderr}");
                assert_eq!(stdout, "", "{args:?}: nothing listened");
            }

            // Half of the pair, or TLS on a Unix socket: bad arguments.
            let unix = format!("unix:{}", pki.dir.join("tls.sock").display());
            for args in [
                vec!["--listen", "127.0.0.1:0", "--tls-cert", &cert],
                vec!["--listen", &unix, "--tls-cert", &cert, "--tls-key", &key],
            ] {
                let (status, stdout, stderr) = run_to_exit(&args).await;
                assert_eq!(
                    status.code(),
                    Some(2),
                    "{args:?}: {status}; stderr: {stderr}"
                );
                assert_eq!(stdout, "", "{args:?}");
            }
        })
        .await
    }
}

// ---------------------------------------------------------------------------
// Metrics
// ---------------------------------------------------------------------------

/// The Prometheus text served at `url` (`http://IP:PORT/metrics`), with a
/// plain HTTP/1.0 GET.
async fn scrape(url: &str) -> String {
    let rest = url.strip_prefix("http://").expect("an http URL");
    let (authority, path) = rest.split_at(rest.find('/').expect("a path"));
    let mut stream = connect(authority.parse().expect("IP:PORT")).await;
    let request = format!("GET {path} HTTP/1.0\r\nHost: {authority}\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let response = read_to_eof(&mut stream).await;
    let response = String::from_utf8(response.to_vec()).expect("UTF-8");
    let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
    assert!(
        head.starts_with("HTTP/1.") && head.contains(" 200 "),
        "{head}"
    );
    body.to_owned()
}

/// The value of the sample `name` (labels included, as written), if any.
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            (series == name).then(|| value.parse().expect("a number"))
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_listen_serves_prometheus_text_with_the_frames_and_connections_counted() {
    // A handler that sleeps a little, so that each is timed.
    let mut echo = Echo::start(&[
        "--metrics-listen",
        "127.0.0.1:0",
        "--max-frame",
        "8",
        "--handler-delay-ms",
        "1",
    ])
    .await;
    let second = within("the second stdout line", echo.stdout.next_line())
        .await
        .expect("reading stdout")
        .expect("a second line");
    let url = second
        .strip_prefix("metrics on ")
        .unwrap_or_else(|| panic!("second stdout line {second:?}"))
        .to_owned();
    assert!(
        url.starts_with("http://127.0.0.1:") && url.ends_with("/metrics"),
        "{url}"
    );
    assert!(!url.contains(":0/"), "the real port: {url}");

    // 3 connections, 5 frames in all, then closed; one more left open; one
    // frame over the limit.
    for frames in [&["a", "b"][..], &["c"], &["d", "e"]] {
        let mut stream = connect(echo.addr()).await;
        let request: String = frames.iter().map(|frame| format!("{frame}\n")).collect();
        stream.write_all(request.as_bytes()).await.unwrap();
        finish_writing(&mut stream).await;
        assert_eq!(read_to_eof(&mut stream).await, request.as_str());
    }
    let mut long = connect(echo.addr()).await;
    long.write_all(b"123456789\n").await.unwrap();
    let _ = read_until_closed(&mut long).await;
    let mut open = connect(echo.addr()).await;
    exchange(&mut open, "f\n", "f\n").await;

    // Counters are updated as connections end: wait for the last close.
    let text = within("the counts to settle", async {
        loop {
            let text = scrape(&url).await;
            if sample(&text, "natter_connections_open") == Some(1.0) {
                return text;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let value = |name: &str| sample(&text, name).unwrap_or_else(|| panic!("{name} in\n{text}"));
    assert!(value("natter_frames_read_total") >= 6.0);
    assert!(value("natter_frames_written_total") >= 6.0);
    assert!(value("natter_connections_accepted_total") >= 5.0);
    assert!(value("natter_bytes_read_total") >= 21.0);
    assert!(value("natter_bytes_written_total") >= 12.0);
    assert_eq!(value("natter_connections_refused_total"), 0.0);
    assert_eq!(value("natter_errors_total{kind=\"frame_too_long\"}"), 1.0);
    assert!(value("natter_handler_duration_seconds_count") >= 6.0);
    assert!(sample(&text, "natter_handler_duration_seconds_sum").is_some());
    assert!(
        text.contains("natter_handler_duration_seconds_bucket{le=\"+Inf\"}"),
        "a histogram, not a summary"
    );
    drop(open);
    echo.signal("TERM").await;
    assert!(echo.exit_status().await.success());
}
