//! Replays every input saved in `fuzz/corpus/` through the invariants the
//! fuzz targets check (`fuzz/src/lib.rs`, included here, so there is one
//! copy of them). The corpus is small and minimised: this runs in well under
//! a second, in every CI run, without cargo-fuzz or a nightly compiler.
//!
//! To add a case, save its bytes as a file in `fuzz/corpus/<target>/`; the
//! header that selects the framing, the limit and the reads is described at
//! the top of `fuzz/src/lib.rs`.

#[allow(unreachable_pub)]
#[path = "../fuzz/src/lib.rs"]
mod invariants;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;

/// Runs `check` on every file of `fuzz/corpus/<target>` and fails, naming
/// each failing file, if any panics.
fn replay(target: &str, check: fn(&[u8])) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|error| panic!("reading {}: {error}", dir.display()))
        .map(|entry| entry.expect("a corpus entry").path())
        .collect();
    files.sort();
    assert!(
        files.len() >= 20,
        "only {} inputs in {}: the corpus is missing",
        files.len(),
        dir.display()
    );
    let failed: Vec<String> = files
        .iter()
        .filter_map(|file| {
            let data = std::fs::read(file).expect("a readable corpus file");
            catch_unwind(AssertUnwindSafe(|| check(&data)))
                .is_err()
                .then(|| file.display().to_string())
        })
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {} inputs broke an invariant: {failed:#?}",
        failed.len(),
        files.len()
    );
}

#[test]
fn every_saved_delimiter_codec_input_keeps_the_invariants() {
    replay("delimiter_codec", invariants::check_delimiter_codec);
}

#[test]
fn every_saved_json_codec_input_keeps_the_invariants() {
    replay("json_codec", invariants::check_json_codec);
}

/// The checks themselves catch what they are meant to: a model that is
/// wrong about a byte-exact case would let a broken codec through.
#[test]
fn the_model_reads_a_stream_as_the_wire_contract_says() {
    use invariants::Decoded::{Frame, TooLong};
    use natter::Delimiter;
    let items = |delimiter, max, stream: &[u8]| -> Vec<invariants::Decoded> {
        invariants::expected(delimiter, max, stream)
            .into_iter()
            .map(|(item, _)| item)
            .collect()
    };
    let frame = |bytes: &[u8]| Frame(bytes.to_vec());
    assert_eq!(
        items(Delimiter::Line, 4, b"a\r\n\nabcde\r\nabc\r\r\nx\r"),
        [
            frame(b"a"),
            frame(b""),
            TooLong,
            frame(b"abc\r"),
            frame(b"x")
        ]
    );
    assert_eq!(
        items(Delimiter::Byte(b';'), 2, b"ab;abc;\r;"),
        [frame(b"ab"), TooLong, frame(b"\r")]
    );
    assert_eq!(items(Delimiter::Eof, 3, b"a\nb"), [frame(b"a\nb")]);
    assert_eq!(items(Delimiter::Eof, 2, b"a\nb"), [TooLong]);
    assert_eq!(items(Delimiter::Eof, 2, b""), []);
}
