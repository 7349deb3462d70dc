//! Voice messages in jeton-sim: `sendvoice` records a WAV file on this host through
//! jeton-voice's recorder (what a token's microphone would feed it) into an Ogg Opus file that
//! the token then uploads as a file, and `play` decodes a received voice message to a WAV.
//! Both are jeton-sim's own commands: the console's commands run on a token, and these read and
//! write files on the host.

use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use jeton_core::files::voice::VoiceInfo;
use jeton_voice::{FRAME_SAMPLES, SAMPLE_RATE, Sink, VoiceRecorder};

/// Where the Ogg Opus of the voice message being sent is written: one at a time, as the token
/// sends one file at a time.
pub(crate) fn outgoing_path(state_dir: &Path) -> PathBuf {
    state_dir.join("voice-message.ogg")
}

/// The Ogg pages, written to the file as the recorder makes them.
struct FileSink(BufWriter<File>);

impl Sink for FileSink {
    type Error = std::io::Error;
    fn write(&mut self, bytes: &[u8]) -> Result<(), Self::Error> {
        self.0.write_all(bytes)
    }
}

/// Records the WAV file `wav` (16 kHz mono 16-bit PCM) into the Ogg Opus file `ogg`, frame by
/// frame; its duration and waveform, or what is wrong in the person's words.
pub(crate) fn record(wav: &Path, ogg: &Path, serial: u32) -> Result<VoiceInfo, String> {
    let shown = wav.display();
    let file = File::open(wav).map_err(|e| format!("cannot read {shown}: {e}"))?;
    let mut reader = hound::WavReader::new(BufReader::new(file))
        .map_err(|e| format!("{shown} is not a WAV file ({e})"))?;
    let spec = reader.spec();
    if spec.channels != 1
        || spec.sample_rate != SAMPLE_RATE
        || spec.bits_per_sample != 16
        || spec.sample_format != hound::SampleFormat::Int
    {
        return Err(format!(
            "{shown} is {} Hz, {} channel(s), {}-bit {}: sendvoice takes 16 kHz mono 16-bit PCM \
             (convert with: sox {shown} -r 16000 -c 1 -b 16 voice.wav)",
            spec.sample_rate,
            spec.channels,
            spec.bits_per_sample,
            match spec.sample_format {
                hound::SampleFormat::Int => "integer",
                hound::SampleFormat::Float => "float",
            }
        ));
    }
    if reader.duration() == 0 {
        return Err(format!("{shown} holds no sound"));
    }
    let out = File::create(ogg).map_err(|e| format!("cannot write {}: {e}", ogg.display()))?;
    let mut sink = FileSink(BufWriter::new(out));
    let mut recorder = Box::new(VoiceRecorder::new());
    let failed = |e: jeton_voice::Error<std::io::Error>| format!("recording {shown} failed: {e}");
    recorder.start(serial, &mut sink).map_err(failed)?;
    let mut frame = Vec::with_capacity(FRAME_SAMPLES);
    for sample in reader.samples::<i16>() {
        frame.push(sample.map_err(|e| format!("{shown} is cut short ({e})"))?);
        if frame.len() == FRAME_SAMPLES {
            recorder.push(&frame, &mut sink).map_err(failed)?;
            frame.clear();
        }
    }
    recorder.push(&frame, &mut sink).map_err(failed)?;
    let recording = recorder.finish(&mut sink).map_err(failed)?;
    sink.0
        .flush()
        .map_err(|e| format!("cannot write {}: {e}", ogg.display()))?;
    Ok(VoiceInfo::new(
        recording.duration_ms,
        recording.waveform.values(),
    ))
}

/// Decodes the received voice message `ogg` to a WAV file beside it (48 kHz, as Opus plays);
/// the WAV's path and its duration in milliseconds.
pub(crate) fn play(ogg: &Path) -> Result<(PathBuf, u64), String> {
    let shown = ogg.display();
    let bytes = std::fs::read(ogg).map_err(|e| format!("cannot read {shown}: {e}"))?;
    let decoded = jeton_voice::decode::decode_ogg_opus(&bytes, 48_000)
        .map_err(|e| format!("{shown} is not a voice message this token plays: {e}"))?;
    let wav = ogg.with_extension("wav");
    let out = File::create(&wav).map_err(|e| format!("cannot write {}: {e}", wav.display()))?;
    decoded
        .write_wav(BufWriter::new(out))
        .map_err(|e| format!("cannot write {}: {e}", wav.display()))?;
    Ok((wav, decoded.duration_ms()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wav(path: &Path, rate: u32, channels: u16, seconds: f32) {
        let spec = hound::WavSpec {
            channels,
            sample_rate: rate,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let mut out = hound::WavWriter::create(path, spec).unwrap();
        for i in 0..(rate as f32 * seconds) as u32 * u32::from(channels) {
            let tone = (i as f32 * 440.0 * std::f32::consts::TAU / rate as f32).sin();
            out.write_sample((tone * 8000.0 * ((i / 3000) % 2) as f32) as i16)
                .unwrap();
        }
        out.finalize().unwrap();
    }

    #[test]
    fn a_recorded_wav_plays_back_with_its_duration() {
        let dir = std::env::temp_dir().join(format!("jeton-sim-voice-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (input, ogg) = (dir.join("in.wav"), outgoing_path(&dir));
        wav(&input, 16_000, 1, 1.5);
        let info = record(&input, &ogg, 7).unwrap();
        assert_eq!(info.duration_ms, 1500);
        assert_eq!(info.waveform.len(), 100);
        assert!(
            info.waveform.iter().any(|v| *v > 100),
            "{:?}",
            info.waveform
        );
        let (played, ms) = play(&ogg).unwrap();
        assert_eq!(played, dir.join("voice-message.wav"));
        assert_eq!(ms, 1500);
        assert_eq!(
            hound::WavReader::open(&played).unwrap().spec().sample_rate,
            48_000
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn other_formats_are_refused_in_words() {
        let dir = std::env::temp_dir().join(format!("jeton-sim-voice-bad-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let input = dir.join("cd.wav");
        wav(&input, 44_100, 2, 0.1);
        let why = record(&input, &dir.join("out.ogg"), 1).unwrap_err();
        assert!(
            why.contains("cd.wav is 44100 Hz, 2 channel(s), 16-bit integer: sendvoice takes 16 kHz mono 16-bit PCM"),
            "{why}"
        );
        std::fs::write(&input, b"not a wav").unwrap();
        assert!(
            record(&input, &dir.join("out.ogg"), 1)
                .unwrap_err()
                .contains("is not a WAV file")
        );
        assert!(
            play(&input)
                .unwrap_err()
                .contains("is not a voice message this token plays")
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
