//! Replays the fuzz corpora of `tests/fuzz/proto/corpus` through the fuzz targets' checks, so they run
//! with plain `cargo test` on stable Rust.

use std::path::{Path, PathBuf};

use jeton_proto::transcode::TranscodeErrorKind;

// Brings `check_decoder`, `check_transcoder`, `check_views` and their imports.
include!("../../../tests/fuzz/proto/checks.rs");

fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fuzz/proto/corpus")
        .join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .map(|path| {
            let bytes = std::fs::read(&path).unwrap();
            (path, bytes)
        })
        .collect();
    files.sort();
    files
}

#[test]
fn transcoder_corpus_replays() {
    let files = corpus("transcoder");
    assert!(files.len() >= 20);
    for (path, bytes) in files {
        serde_json::from_slice::<serde_json::Value>(&bytes)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        check_transcoder(&bytes);
    }
}

#[test]
fn decoder_corpus_replays_and_encoded_documents_decode_to_their_json() {
    let files = corpus("decoder");
    assert!(files.len() >= 40);
    for (path, bytes) in files {
        check_decoder(&bytes);
        check_views(&bytes);
        let name = path.file_name().unwrap().to_str().unwrap();
        let version = if name.ends_with(".v1.cbor") {
            TableVersion::V1
        } else if name.ends_with(".v2.cbor") {
            TableVersion::V2
        } else {
            continue;
        };
        let stem = name.split('.').next().unwrap();
        let json_path = path
            .parent()
            .unwrap()
            .join(format!("../transcoder/{stem}.json"));
        let json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(json_path).unwrap()).unwrap();
        assert_eq!(cbor_to_json(&bytes, version).unwrap(), json, "{name}");
        assert_eq!(
            json_to_cbor(&json, version).unwrap(),
            bytes,
            "{name} is canonical"
        );
    }
}

#[test]
fn malformed_corpus_entries_are_errors() {
    let expected = [
        ("float.cbor", TranscodeErrorKind::Float),
        (
            "huge_array_length.cbor",
            TranscodeErrorKind::LengthBeyondInput,
        ),
        ("indefinite_map.cbor", TranscodeErrorKind::IndefiniteLength),
        ("invalid_utf8.cbor", TranscodeErrorKind::InvalidUtf8),
        ("tag_epoch.cbor", TranscodeErrorKind::Tag),
        ("too_deep.cbor", TranscodeErrorKind::TooDeep),
        ("truncated_text.cbor", TranscodeErrorKind::LengthBeyondInput),
    ];
    let files = corpus("decoder");
    for (name, kind) in expected {
        let (_, bytes) = files.iter().find(|(path, _)| path.ends_with(name)).unwrap();
        for version in [TableVersion::V1, TableVersion::V2] {
            assert_eq!(
                cbor_to_json(bytes, version).unwrap_err().kind(),
                kind,
                "{name}"
            );
        }
    }
}
