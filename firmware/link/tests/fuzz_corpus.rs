//! Replays the corpora of `tests/fuzz/link/corpus/{edhoc,oscore}` through the fuzz targets'
//! checks, so the seeds (and any finding copied there) run with every `cargo test`.
//!
//! The seeds are real messages of the fixed handshake in `checks.rs` (and truncations and
//! bit flips of them), written by `write_seed_corpus` below:
//! `cargo test -p jeton-link --test fuzz_corpus -- --ignored write_seed_corpus`.

use std::path::PathBuf;

include!("../../../tests/fuzz/link/checks.rs");

fn corpus(target: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fuzz/link/corpus")
        .join(target)
}

fn replay(target: &str, check: fn(&[u8])) {
    let dir = corpus(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .collect();
    files.sort();
    assert!(files.len() >= 6, "the seed corpus of {target} is missing");
    for file in files {
        check(&std::fs::read(&file).unwrap());
    }
}

#[test]
fn edhoc_corpus_replays() {
    replay("edhoc", check_edhoc);
}

#[test]
fn oscore_corpus_replays() {
    replay("oscore", check_oscore);
}

#[test]
#[ignore = "writes the seed corpus; run on purpose"]
fn write_seed_corpus() {
    let (m1, m2, m3, mut token_side, _) = {
        let (m1, m2, m3, t, g) = handshake();
        (m1, m2, m3, t.security_context().unwrap(), g)
    };
    let mut edhoc = vec![
        ("message_1", [&[0u8][..], &m1].concat()),
        ("message_2", [&[1u8][..], &m2].concat()),
        ("message_3", [&[2u8][..], &m3].concat()),
        (
            "message_2_truncated",
            [&[1u8][..], &m2[..m2.len() / 2]].concat(),
        ),
        ("message_3_long_header", vec![2, 0x58, 0xFF, 1, 2]),
        ("message_1_empty", vec![0]),
    ];
    let mut flipped = m2.clone();
    flipped[5] ^= 0x10;
    edhoc.push(("message_2_flipped", [&[1u8][..], &flipped].concat()));
    let request = Message {
        code: 0x01,
        options: OptionList::from_sorted(&[(11, b"versions"), (256, b"syt_x")]).unwrap(),
        payload: &[],
    };
    let mut buf = [0u8; 128];
    let (outer, _) = token_side.protect_request(&request, &mut buf).unwrap();
    let option = outer.options.get(OSCORE_OPTION).unwrap().to_vec();
    assert_eq!(
        genuine_request(&handshake().3),
        (option.clone(), outer.payload.to_vec())
    );
    let framed = |which: u8, option: &[u8], payload: &[u8]| {
        [&[which, option.len() as u8][..], option, payload].concat()
    };
    let oscore = vec![
        ("request", framed(0, &option, outer.payload)),
        (
            "request_flipped",
            framed(0, &option, &[outer.payload, &[1]].concat()),
        ),
        ("response_empty_option", framed(1, &[], outer.payload)),
        ("response_with_piv", framed(1, &[0x01, 0x07], outer.payload)),
        ("reserved_flags", framed(0, &[0xE9, 1, 2], outer.payload)),
        ("short_payload", framed(0, &option, &[1, 2, 3])),
    ];
    for (target, seeds) in [("edhoc", edhoc), ("oscore", oscore)] {
        let dir = corpus(target);
        std::fs::create_dir_all(&dir).unwrap();
        for (name, bytes) in seeds {
            std::fs::write(dir.join(name), bytes).unwrap();
        }
    }
}
