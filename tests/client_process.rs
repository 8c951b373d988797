//! The `client` example as its users meet it: a process that reads stdin
//! and talks to the `echo` example (the command line is documented in
//! docs/cli.md), over TCP, a Unix socket and TLS.
//!
//! Both examples run as separate processes, built from this checkout into
//! the same target directory as this test.

mod support;

use std::path::PathBuf;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

use support::{refusing_addr, unresponsive_listener};
use tokio::process::{Child, Command};

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// Runs a test body, failing it if it takes longer than a few seconds.
///
/// The examples are built (or found up to date) first, before the clock
/// starts: on a fresh clone and a busy machine that alone can take longer
/// than the test.
async fn within<F: std::future::Future>(body: F) -> F::Output {
    // A blocking call: nothing else runs on this test's runtime yet.
    example("client");
    example("echo");
    tokio::time::timeout(Duration::from_secs(15), body)
        .await
        .expect("the test did not finish within 15 s")
}

/// The path of an example binary, built once per test run.
fn example(name: &str) -> PathBuf {
    support::example(name)
}

/// An `echo` example process on a free port.
struct Echo {
    process: Child,
    /// Where it listens: `IP:PORT` or `unix:PATH`.
    addr: String,
}

async fn start_echo(flags: &[&str]) -> Echo {
    start_echo_at("127.0.0.1:0", flags).await
}

/// An `echo` example process listening on `listen`.
async fn start_echo_at(listen: &str, flags: &[&str]) -> Echo {
    let mut process = Command::new(example("echo"))
        .args(["--listen", listen])
        .args(flags)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(process.stdout.take().unwrap())
        .read_line(&mut first)
        .await
        .unwrap();
    let addr = first
        .trim_end()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("echo printed {first:?}"))
        .to_owned();
    Echo { process, addr }
}

/// The `client` example with `flags`, its stdio piped.
fn client(flags: &[&str]) -> Child {
    Command::new(example("client"))
        .args(flags)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

/// Runs the client to its end with `input` on stdin (written while it runs,
/// so a large input cannot deadlock against its stdout).
async fn run_client(flags: &[&str], input: &[u8]) -> Output {
    let mut process = client(flags);
    let mut stdin = process.stdin.take().unwrap();
    let input = input.to_vec();
    let writer = tokio::spawn(async move {
        // The client may exit before reading everything; that is its right.
        let _ = stdin.write_all(&input).await;
    });
    let output = process.wait_with_output().await.unwrap();
    writer.await.unwrap();
    output
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

// ---------------------------------------------------------------------------
// Talking to echo
// ---------------------------------------------------------------------------

async fn lines_come_back_in_order(pipeline: &str, count: usize) {
    let echo = start_echo(&[]).await;
    let input: String = (0..count).map(|i| format!("line {i}\n")).collect();

    let output = run_client(
        &["--connect", &echo.addr.to_string(), "--pipeline", pipeline],
        input.as_bytes(),
    )
    .await;

    assert_eq!(
        output.status.code(),
        Some(0),
        "stderr: {}",
        text(&output.stderr)
    );
    assert_eq!(text(&output.stdout), input);
}

#[tokio::test]
async fn lines_are_echoed_in_order_one_request_at_a_time() {
    within(lines_come_back_in_order("1", 200)).await;
}

#[tokio::test]
async fn lines_are_echoed_in_order_with_eight_requests_in_flight() {
    within(lines_come_back_in_order("8", 2000)).await;
}

#[tokio::test]
async fn crlf_endings_empty_lines_and_a_last_line_without_newline_are_handled() {
    within(async {
        let echo = start_echo(&[]).await;

        let output = run_client(
            &["--connect", &echo.addr.to_string()],
            b"alpha\r\nbeta\r\n\r\n\ngamma \r",
        )
        .await;

        assert_eq!(
            output.status.code(),
            Some(0),
            "stderr: {}",
            text(&output.stderr)
        );
        assert_eq!(text(&output.stdout), "alpha\nbeta\n\n\ngamma \n");
    })
    .await;
}

#[tokio::test]
async fn another_delimiter_frames_the_connection_while_stdin_stays_lines() {
    within(async {
        let echo = start_echo(&["--delim", "59"]).await;

        let output = run_client(
            &["--connect", &echo.addr.to_string(), "--delim", "59"],
            b"a\r\nb c\n",
        )
        .await;

        assert_eq!(
            output.status.code(),
            Some(0),
            "stderr: {}",
            text(&output.stderr)
        );
        assert_eq!(text(&output.stdout), "a\nb c\n");
    })
    .await;
}

#[tokio::test]
async fn empty_stdin_connects_closes_and_exits_0() {
    within(async {
        let echo = start_echo(&[]).await;

        let output = run_client(&["--connect", &echo.addr.to_string()], b"").await;

        assert_eq!(
            output.status.code(),
            Some(0),
            "stderr: {}",
            text(&output.stderr)
        );
        assert_eq!(output.stdout, b"");
    })
    .await;
}

#[tokio::test]
async fn a_server_killed_mid_stream_exits_1_saying_how_many_requests_went_unanswered() {
    within(async {
        let echo = start_echo(&["--handler-delay-ms", "100"]).await;
        let addr = echo.addr.clone();
        killed_mid_stream(echo, &["--connect", &addr]).await;
    })
    .await;
}

/// Kills `echo` (started with a handler delay) while `client` with
/// `connect_flags` has requests in flight, and checks what the client says.
async fn killed_mid_stream(mut echo: Echo, connect_flags: &[&str]) {
    {
        let input: Vec<String> = (0..20).map(|i| format!("line {i}")).collect();
        let mut flags = connect_flags.to_vec();
        flags.extend(["--pipeline", "4"]);
        let mut process = client(&flags);
        let mut stdin = process.stdin.take().unwrap();
        stdin
            .write_all((input.join("\n") + "\n").as_bytes())
            .await
            .unwrap();
        let mut stdout = BufReader::new(process.stdout.take().unwrap());

        // The first answer is printed; then the server dies.
        let mut printed = Vec::new();
        let mut line = String::new();
        stdout.read_line(&mut line).await.unwrap();
        printed.push(line.trim_end().to_owned());
        echo.process.start_kill().unwrap(); // SIGKILL
        echo.process.wait().await.unwrap();

        let mut rest = String::new();
        stdout.read_to_string(&mut rest).await.unwrap();
        printed.extend(rest.lines().map(str::to_owned));
        let mut stderr = String::new();
        process
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut stderr)
            .await
            .unwrap();
        let status = process.wait().await.unwrap();

        assert_eq!(status.code(), Some(1), "stderr: {stderr}");
        assert_eq!(printed, input[..printed.len()], "answers printed in order");
        let message = stderr
            .lines()
            .rfind(|line| line.starts_with("client:"))
            .expect("an error on stderr");
        let unanswered: usize = message
            .split_whitespace()
            .find_map(|word| word.parse().ok())
            .unwrap_or_else(|| panic!("no number in {message:?}"));
        assert!((1..=4).contains(&unanswered), "{message}");
        assert!(printed.len() + unanswered <= input.len(), "{message}");
    }
}

// ---------------------------------------------------------------------------
// Failing to connect, bad arguments
// ---------------------------------------------------------------------------

#[tokio::test]
async fn a_refused_connection_exits_1_naming_the_address() {
    within(async {
        let addr = refusing_addr().to_string();

        let output = run_client(&["--connect", &addr], b"hello\n").await;

        assert_eq!(output.status.code(), Some(1));
        assert!(
            text(&output.stderr).contains(&addr),
            "stderr: {}",
            text(&output.stderr)
        );
        assert_eq!(output.stdout, b"");
    })
    .await;
}

#[tokio::test]
async fn a_connect_timeout_exits_1_within_the_timeout_plus_a_second_naming_the_address() {
    within(async {
        let (_listener, _fillers, addr) = unresponsive_listener().await;
        let addr = addr.to_string();
        example("client"); // built before the clock starts

        let begun = Instant::now();
        let output = run_client(
            &["--connect", &addr, "--connect-timeout-ms", "300"],
            b"hello\n",
        )
        .await;
        let took = begun.elapsed();

        assert_eq!(output.status.code(), Some(1));
        assert!(
            text(&output.stderr).contains(&addr),
            "stderr: {}",
            text(&output.stderr)
        );
        assert!(
            took >= Duration::from_millis(300) && took < Duration::from_millis(1300),
            "exited after {took:?}"
        );
    })
    .await;
}

#[tokio::test]
async fn bad_arguments_exit_2_with_the_error_on_stderr() {
    within(async {
        for flags in [
            &["--connect", "127.0.0.1:1", "--delim", "0"][..],
            &["--connect", "127.0.0.1:1", "--delim", "300"],
            &["--connect", "127.0.0.1:1", "--pipeline", "0"],
            &["--delim", "10"],
            &["--connect", "127.0.0.1:1", "--no-such-flag"],
        ] {
            let output = run_client(flags, b"").await;
            assert_eq!(output.status.code(), Some(2), "{flags:?}");
            assert!(!output.stderr.is_empty(), "{flags:?}");
            assert_eq!(output.stdout, b"", "{flags:?}");
        }
    })
    .await;
}

// ---------------------------------------------------------------------------
// --connect unix:PATH
// ---------------------------------------------------------------------------

#[tokio::test]
async fn lines_are_echoed_in_order_over_a_unix_socket() {
    within(async {
        let dir = support::TempDir::new();
        let listen = format!("unix:{}", dir.join("echo.sock").display());
        let echo = start_echo_at(&listen, &[]).await;
        assert_eq!(echo.addr, listen);
        let input: String = (0..1000).map(|i| format!("line {i}\r\n")).collect();

        let output = run_client(&["--connect", &listen, "--pipeline", "8"], input.as_bytes()).await;

        assert_eq!(
            output.status.code(),
            Some(0),
            "stderr: {}",
            text(&output.stderr)
        );
        assert_eq!(text(&output.stdout), input.replace('\r', ""));
    })
    .await;
}

#[tokio::test]
async fn a_unix_server_killed_mid_stream_exits_1_saying_how_many_requests_went_unanswered() {
    within(async {
        let dir = support::TempDir::new();
        let listen = format!("unix:{}", dir.join("echo.sock").display());
        let echo = start_echo_at(&listen, &["--handler-delay-ms", "100"]).await;
        killed_mid_stream(echo, &["--connect", &listen]).await;
    })
    .await;
}

#[tokio::test]
async fn no_socket_at_the_path_exits_1_naming_it() {
    within(async {
        let dir = support::TempDir::new();
        let addr = format!("unix:{}", dir.join("nobody.sock").display());

        let output = run_client(&["--connect", &addr], b"hello\n").await;

        assert_eq!(output.status.code(), Some(1));
        assert!(
            text(&output.stderr).contains(&addr),
            "stderr: {}",
            text(&output.stderr)
        );
        assert_eq!(output.stdout, b"");
    })
    .await;
}

// ---------------------------------------------------------------------------
// --tls, --tls-ca, --server-name
// ---------------------------------------------------------------------------

#[cfg(feature = "tls")]
mod tls {
    use super::support::tls::Pki;
    use super::*;

    /// A TLS echo with `pki`'s certificate (valid for `localhost` and
    /// `127.0.0.1`).
    async fn start_tls_echo(pki: &Pki, flags: &[&str]) -> Echo {
        let (cert, key) = (
            pki.cert.display().to_string(),
            pki.key.display().to_string(),
        );
        let mut all = vec!["--tls-cert", &cert, "--tls-key", &key];
        all.extend_from_slice(flags);
        start_echo(&all).await
    }

    fn port(addr: &str) -> &str {
        addr.rsplit_once(':').expect("IP:PORT").1
    }

    #[tokio::test]
    async fn tls_with_the_ca_echoes_lines_verified_by_ip_by_name_and_by_server_name() {
        within(async {
            let pki = Pki::new();
            let echo = start_tls_echo(&pki, &[]).await;
            let ca = pki.ca.display().to_string();
            let localhost = format!("localhost:{}", port(&echo.addr));
            let input: String = (0..500).map(|i| format!("line {i}\n")).collect();

            for flags in [
                vec!["--connect", &echo.addr, "--tls", "--tls-ca", &ca],
                vec!["--connect", &localhost, "--tls", "--tls-ca", &ca],
                vec![
                    "--connect",
                    &echo.addr,
                    "--tls",
                    "--tls-ca",
                    &ca,
                    "--server-name",
                    "localhost",
                ],
            ] {
                let mut flags = flags.clone();
                flags.extend(["--pipeline", "4"]);
                let output = run_client(&flags, input.as_bytes()).await;
                assert_eq!(
                    output.status.code(),
                    Some(0),
                    "{flags:?}: stderr: {}",
                    text(&output.stderr)
                );
                assert_eq!(text(&output.stdout), input, "{flags:?}");
            }
        })
        .await;
    }

    #[tokio::test]
    async fn tls_trusts_the_platform_roots_by_default() {
        within(async {
            let pki = Pki::new();
            let echo = start_tls_echo(&pki, &[]).await;
            // rustls-native-certs reads the platform's roots from
            // SSL_CERT_FILE when it is set: here, our CA alone.
            let mut process = client_with_roots(&["--connect", &echo.addr, "--tls"], &pki.ca);
            drop(process.stdin.take());
            let output = process.wait_with_output().await.unwrap();
            assert_eq!(
                output.status.code(),
                Some(0),
                "stderr: {}",
                text(&output.stderr)
            );
        })
        .await;
    }

    #[tokio::test]
    async fn an_untrusted_certificate_exits_1_saying_it_was_not_trusted() {
        within(async {
            let pki = Pki::new();
            let echo = start_tls_echo(&pki, &[]).await;
            let (ca, other_ca) = (
                pki.ca.display().to_string(),
                pki.other_ca.display().to_string(),
            );
            let empty = pki.dir.join("empty.pem");
            std::fs::write(&empty, "").unwrap();

            let cases = [
                // Signed by a CA it does not trust.
                (vec!["--tls-ca", &other_ca], None),
                // Trusted CA, but the certificate is not for that name.
                (
                    vec!["--tls-ca", &ca, "--server-name", "elsewhere.example"],
                    None,
                ),
                // The platform's roots: ours is not among them.
                (vec![], Some(&pki.other_ca)),
                // No platform roots at all.
                (vec![], Some(&empty)),
            ];
            for (flags, roots) in cases {
                let mut all = vec!["--connect", echo.addr.as_str(), "--tls"];
                all.extend_from_slice(&flags);
                let mut process = match roots {
                    Some(roots) => client_with_roots(&all, roots),
                    None => client(&all),
                };
                drop(process.stdin.take());
                let output = process.wait_with_output().await.unwrap();
                let stderr = text(&output.stderr);
                assert_eq!(
                    output.status.code(),
                    Some(1),
                    "{flags:?} {roots:?}: {stderr}"
                );
                assert!(
                    stderr.contains("not trusted"),
                    "{flags:?} {roots:?}: {stderr}"
                );
                assert!(!stderr.contains("panicked"), "{stderr}");
                assert_eq!(output.stdout, b"");
            }
        })
        .await;
    }

    /// The client with `flags`, trusting only the roots in `roots` as the
    /// platform's.
    fn client_with_roots(flags: &[&str], roots: &std::path::Path) -> Child {
        Command::new(example("client"))
            .args(flags)
            .env("SSL_CERT_FILE", roots)
            .env("SSL_CERT_DIR", roots.with_extension("no-such-dir"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap()
    }

    #[tokio::test]
    async fn a_tls_server_killed_mid_stream_exits_1_saying_how_many_requests_went_unanswered() {
        within(async {
            let pki = Pki::new();
            let echo = start_tls_echo(&pki, &["--handler-delay-ms", "100"]).await;
            let (addr, ca) = (echo.addr.clone(), pki.ca.display().to_string());
            killed_mid_stream(echo, &["--connect", &addr, "--tls", "--tls-ca", &ca]).await;
        })
        .await;
    }

    #[tokio::test]
    async fn a_tls_handshake_that_never_ends_exits_1_within_the_connect_timeout_naming_the_address()
    {
        within(async {
            let pki = Pki::new();
            // The kernel completes the TCP handshake; nobody ever answers
            // the ClientHello.
            let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = silent.local_addr().unwrap().to_string();
            let ca = pki.ca.display().to_string();
            example("client"); // built before the clock starts

            let begun = Instant::now();
            let output = run_client(
                &[
                    "--connect",
                    &addr,
                    "--tls",
                    "--tls-ca",
                    &ca,
                    "--connect-timeout-ms",
                    "300",
                ],
                b"hello\n",
            )
            .await;
            let took = begun.elapsed();

            assert_eq!(output.status.code(), Some(1));
            assert!(
                text(&output.stderr).contains(&addr),
                "stderr: {}",
                text(&output.stderr)
            );
            assert!(
                took >= Duration::from_millis(300) && took < Duration::from_millis(1300),
                "exited after {took:?}"
            );
            drop(silent);
        })
        .await;
    }

    #[tokio::test]
    async fn tls_flags_that_cannot_work_exit_1_or_2() {
        within(async {
            let pki = Pki::new();
            let missing = pki.dir.join("missing.pem").display().to_string();
            let output = run_client(
                &["--connect", "127.0.0.1:1", "--tls", "--tls-ca", &missing],
                b"",
            )
            .await;
            assert_eq!(output.status.code(), Some(1));
            assert!(
                text(&output.stderr).contains(&missing),
                "{}",
                text(&output.stderr)
            );

            let unix = format!("unix:{}", pki.dir.join("x.sock").display());
            for flags in [
                &["--connect", "127.0.0.1:1", "--tls-ca", &missing][..],
                &["--connect", "127.0.0.1:1", "--server-name", "x"],
                &["--connect", &unix, "--tls"],
            ] {
                let output = run_client(flags, b"").await;
                assert_eq!(output.status.code(), Some(2), "{flags:?}");
                assert!(!output.stderr.is_empty(), "{flags:?}");
            }
        })
        .await;
    }
}
