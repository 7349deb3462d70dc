//! The host's side of the Cortex-M4 `voice` image: the same canned clip, recorded the same
//! way, must give the stream whose hash `tests/cortex-m/fixtures/voice-clip.fnv` holds, which
//! the image checks its own stream against (see that directory's README). The stream must
//! also be one that opusinfo accepts, with the clip's duration.

mod common;

use std::path::Path;

use common::opusinfo;
use jeton_voice::{FRAME_SAMPLES, VoiceRecorder};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/cortex-m/fixtures");
/// The serial number the image gives its stream.
const SERIAL: u32 = 0x6a65_746f;

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[test]
fn the_canned_clip_encodes_to_the_stream_the_token_must_make() {
    let raw = std::fs::read(Path::new(FIXTURES).join("voice-clip.raw")).unwrap();
    let pcm: Vec<i16> = raw
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .collect();
    let mut recorder = Box::new(VoiceRecorder::new());
    let mut ogg = Vec::new();
    recorder.start(SERIAL, &mut ogg).unwrap();
    for block in pcm.chunks(FRAME_SAMPLES) {
        recorder.push(block, &mut ogg).unwrap();
    }
    let recording = recorder.finish(&mut ogg).unwrap();
    let clip_ms = pcm.len() as u64 * 1000 / 16_000;
    assert!(
        u64::from(recording.duration_ms).abs_diff(clip_ms) <= 1,
        "{recording:?}"
    );

    opusinfo(&ogg, "clip");

    let hash = format!("{:016x}\n", fnv1a(&ogg));
    let pinned = Path::new(FIXTURES).join("voice-clip.fnv");
    if std::env::var_os("JETON_REGENERATE_FIXTURES").is_some() {
        std::fs::write(&pinned, &hash).unwrap();
    }
    let expected = std::fs::read_to_string(&pinned).unwrap_or_default();
    assert_eq!(
        hash, expected,
        "the clip's stream changed; see tests/cortex-m/fixtures/README.md"
    );
}
