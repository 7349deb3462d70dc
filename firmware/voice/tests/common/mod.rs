//! What the tests and the benchmark share: speech made by espeak-ng and resampled to 16 kHz
//! by sox (Debian packages that tests/setup installs), and the commands around it.
#![allow(dead_code)] // each test or bench target uses its own part

use std::path::{Path, PathBuf};
use std::process::Command;

/// The sentence the tests and the benchmark speak (about five seconds).
pub(crate) const SENTENCE: &str =
    "Hold the button, speak, and release. The room gets an encrypted voice message.";

/// A file name of this test run, under cargo's scratch directory for tests and benches.
pub(crate) fn scratch(name: &str) -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("jeton-voice-{}-{name}", std::process::id()))
}

/// Runs `command`, fails on its failure, and returns what it printed.
pub(crate) fn run(command: &mut Command) -> String {
    let output = command.output().unwrap_or_else(|e| {
        panic!(
            "{command:?} did not start ({e}); tests/setup installs espeak-ng, sox and opus-tools"
        )
    });
    assert!(
        output.status.success(),
        "{command:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr)
}

/// `text` spoken by espeak-ng, as 16 kHz mono PCM.
pub(crate) fn speech(text: &str, name: &str) -> Vec<i16> {
    let wav = scratch(&format!("{name}-espeak.wav"));
    let raw = scratch(&format!("{name}-16k.raw"));
    run(Command::new("espeak-ng")
        .args(["-v", "en-us", "-w"])
        .arg(&wav)
        .arg(text));
    // -D: no dither, whose noise would make every run's input differ.
    run(Command::new("sox")
        .arg(&wav)
        .args([
            "-D", "-r", "16000", "-c", "1", "-b", "16", "-e", "signed", "-t", "raw",
        ])
        .arg(&raw));
    let bytes = std::fs::read(&raw).unwrap();
    bytes
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .collect()
}

/// `pcm` (16 kHz) encoded as Element records a voice message (element-web
/// `src/audio/VoiceRecording.ts`: Ogg Opus from 48 kHz input at 24 kbit/s, VoIP, complexity
/// 3, 20 ms frames), with opus-tools' `opusenc` standing in for Element's opus-recorder.
/// Returns the file's path.
pub(crate) fn element_like(pcm: &[i16], name: &str) -> PathBuf {
    let raw = scratch(&format!("{name}-16k.raw"));
    let wav48 = scratch(&format!("{name}-48k.wav"));
    let file = scratch(&format!("{name}.opus"));
    let bytes: Vec<u8> = pcm.iter().flat_map(|s| s.to_le_bytes()).collect();
    std::fs::write(&raw, bytes).unwrap();
    run(Command::new("sox")
        .args([
            "-D", "-t", "raw", "-r", "16000", "-c", "1", "-b", "16", "-e", "signed",
        ])
        .arg(&raw)
        .args(["-r", "48000"])
        .arg(&wav48));
    run(Command::new("opusenc")
        .args([
            "--quiet",
            "--speech",
            "--bitrate",
            "24",
            "--comp",
            "3",
            "--framesize",
            "20",
        ])
        .arg(&wav48)
        .arg(&file));
    file
}

/// Writes `ogg` to a file and has opus-tools' `opusinfo` check it: it must run without a
/// warning or an error. Returns the file and what opusinfo printed.
pub(crate) fn opusinfo(ogg: &[u8], name: &str) -> (PathBuf, String) {
    let file = scratch(&format!("{name}.opus"));
    std::fs::write(&file, ogg).unwrap();
    let info = run(Command::new("opusinfo").arg(&file));
    assert!(
        !info.contains("WARNING") && !info.contains("ERROR"),
        "opusinfo complains:\n{info}"
    );
    (file, info)
}
