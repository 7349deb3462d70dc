//! Replays the corpus of `tests/fuzz/gateway/corpus/request_path` through the fuzz target's
//! checks, so the seeds (and any finding copied there) run with every `cargo test`.

use std::path::PathBuf;

include!("../../../tests/fuzz/gateway/checks.rs");

#[test]
fn request_path_corpus_replays() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fuzz/gateway/corpus/request_path");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .collect();
    files.sort();
    assert!(files.len() >= 10, "the seed corpus is missing");
    for file in files {
        let data = std::fs::read(&file).unwrap();
        check_request_path(&data);
    }
}

#[test]
fn arbitrary_bytes_never_panic() {
    // A cheap stand-in for fuzzing on stable: deterministic pseudo-random datagrams.
    let mut state = 0x2545_f491_4f6c_dd1du64;
    for _ in 0..300 {
        let mut data = Vec::new();
        let len = (state % 96) as usize;
        for _ in 0..len {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            // Mostly valid CoAP headers, so the request path is reached.
            data.push(if data.is_empty() {
                0x40 | (state as u8 & 0x1f)
            } else {
                state as u8
            });
        }
        check_request_path(&data);
    }
}
