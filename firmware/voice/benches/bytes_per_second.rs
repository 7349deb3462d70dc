//! Bytes per second of voice: the token's Ogg Opus (this crate) next to what Element sends for
//! the same speech (Ogg Opus at Element's settings, 24 kbit/s from 48 kHz input; element-web
//! `src/audio/VoiceRecording.ts`, `voiceRecorderOptions`), made by opusenc. Prints figures;
//! the upload's overhead on the air (CoAP and OSCORE against HTTP) is not counted here.
//!
//! Run with `cargo bench -p jeton-voice --features std --bench bytes_per_second`.

#[path = "../tests/common/mod.rs"]
mod common;

use common::{SENTENCE, element_like, speech};
use jeton_voice::{BITRATE, COMPLEXITY, SAMPLE_RATE, VoiceRecorder};

fn main() {
    let pcm = speech(SENTENCE, "bench");
    let seconds = pcm.len() as f64 / f64::from(SAMPLE_RATE);
    let mut recorder = Box::new(VoiceRecorder::new());
    let mut ogg = Vec::new();
    recorder.start(1, &mut ogg).expect("the recorder starts");
    for block in pcm.chunks(320) {
        recorder
            .push(block, &mut ogg)
            .expect("the recorder takes speech");
    }
    recorder.finish(&mut ogg).expect("the recording ends");
    let element = std::fs::read(element_like(&pcm, "bench")).expect("opusenc wrote its file");

    println!("Voice message bytes per second of speech (espeak-ng, {seconds:.2} s)");
    let row = |name: &str, bytes: usize| {
        let per_second = bytes as f64 / seconds;
        println!(
            "{name:<58} {bytes:>7} B {per_second:>7.0} B/s {:>6.1} kbit/s",
            per_second * 8.0 / 1000.0
        );
    };
    row(
        &format!(
            "jeton: Ogg Opus SILK 16 kHz, {} kbit/s VBR, complexity {COMPLEXITY}",
            BITRATE / 1000
        ),
        ogg.len(),
    );
    row(
        "Element's settings: Ogg Opus 48 kHz, 24 kbit/s VBR (opusenc)",
        element.len(),
    );
    println!(
        "jeton sends {:.0} % of Element's bytes",
        ogg.len() as f64 * 100.0 / element.len() as f64
    );
}
