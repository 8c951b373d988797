//! The `client` example as its users meet it: a process that reads stdin
//! and talks to the `echo` example, checked against CONTRACT.md section 3.
//!
//! Both examples run as separate processes, built from this checkout into
//! the same target directory as this test.

mod support;

use std::net::SocketAddr;
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
async fn within<F: std::future::Future>(body: F) -> F::Output {
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
    addr: SocketAddr,
}

async fn start_echo(flags: &[&str]) -> Echo {
    let mut process = Command::new(example("echo"))
        .args(["--listen", "127.0.0.1:0"])
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
        .parse()
        .unwrap();
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
        let mut echo = start_echo(&["--handler-delay-ms", "100"]).await;
        let input: Vec<String> = (0..20).map(|i| format!("line {i}")).collect();
        let mut process = client(&["--connect", &echo.addr.to_string(), "--pipeline", "4"]);
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
    })
    .await;
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
