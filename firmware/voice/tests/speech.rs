//! The recorder on speech made by espeak-ng (Debian), resampled to 16 kHz by sox: the Ogg
//! stream it makes must be valid for real decoders (opus-tools' `opusinfo` and `opusdec`, and
//! this crate's own decoder on libopus), last as long as the input to within 40 ms, and sound
//! like the input. "Sounds like" is measured on the envelope: the loudness of each 20 ms
//! window, compared by Pearson correlation. A speech codec at this bitrate keeps syllables
//! where they were, so the envelopes correlate well above [`ENVELOPE_THRESHOLD`]; a stream
//! that lost or moved sound by a syllable or more (every test below checks that a 150 ms
//! shift already fails), or that decodes to noise, falls well below it.

mod common;

use std::path::Path;
use std::process::Command;

use common::{SENTENCE, element_like, opusinfo, run, scratch, speech};

use jeton_voice::decode::{DecodeError, decode_ogg_opus};
use jeton_voice::{Error, Recording, Sink, VoiceRecorder, WAVEFORM_LEN};

const RATE: usize = 16_000;
const ENVELOPE_THRESHOLD: f64 = 0.9;

/// Records `pcm` pushed in blocks of `block` samples.
fn record(pcm: &[i16], block: usize) -> (Vec<u8>, Recording) {
    let mut recorder = Box::new(VoiceRecorder::new());
    let mut ogg = Vec::new();
    recorder.start(0x6a65_746f, &mut ogg).unwrap();
    for chunk in pcm.chunks(block) {
        recorder.push(chunk, &mut ogg).unwrap();
    }
    let recording = recorder.finish(&mut ogg).unwrap();
    (ogg, recording)
}

fn read_wav(path: &Path) -> (u32, Vec<i16>) {
    let mut reader = hound::WavReader::open(path).unwrap();
    let spec = reader.spec();
    assert_eq!(spec.channels, 1, "{path:?} is not mono");
    (
        spec.sample_rate,
        reader.samples::<i16>().map(Result::unwrap).collect(),
    )
}

/// Root mean square of each 20 ms window.
fn envelope(pcm: &[i16]) -> Vec<f64> {
    pcm.chunks(RATE / 50)
        .map(|w| (w.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() / w.len() as f64).sqrt())
        .collect()
}

fn correlation(a: &[f64], b: &[f64]) -> f64 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mean = |x: &[f64]| x.iter().sum::<f64>() / n as f64;
    let (ma, mb) = (mean(a), mean(b));
    let cov: f64 = a.iter().zip(b).map(|(x, y)| (x - ma) * (y - mb)).sum();
    let var = |x: &[f64], m: f64| x.iter().map(|v| (v - m).powi(2)).sum::<f64>();
    cov / (var(a, ma) * var(b, mb)).sqrt()
}

/// The checks every decoded copy of `input` must pass.
fn assert_sounds_like(input: &[i16], decoded: &[i16], who: &str) {
    let input_ms = (input.len() * 1000 / RATE) as i64;
    let decoded_ms = (decoded.len() * 1000 / RATE) as i64;
    assert!(
        (decoded_ms - input_ms).abs() <= 40,
        "{who}: {decoded_ms} ms decoded for {input_ms} ms recorded"
    );
    let reference = envelope(input);
    let r = correlation(&reference, &envelope(decoded));
    assert!(
        r >= ENVELOPE_THRESHOLD,
        "{who}: envelope correlation {r:.3} is below {ENVELOPE_THRESHOLD}"
    );
    // The same comparison fails for the input moved by 150 ms, so the threshold tells.
    let shifted = correlation(&reference[..], &envelope(&decoded[RATE * 150 / 1000..]));
    assert!(
        shifted < ENVELOPE_THRESHOLD,
        "{who}: a 150 ms shift still correlates {shifted:.3}"
    );
    eprintln!(
        "{who}: {decoded_ms} ms for {input_ms} ms, envelope correlation {r:.3} (shifted by 150 ms: {shifted:.3})"
    );
}

#[test]
fn speech_plays_in_opus_tools_and_in_the_crate_decoder() {
    let input = speech(SENTENCE, "plays");
    // An odd block length, as a microphone driver's DMA blocks need not match Opus frames.
    let (ogg, recording) = record(&input, 77);
    let input_ms = (input.len() * 1000 / RATE) as i64;
    assert!((i64::from(recording.duration_ms) - input_ms).abs() <= 40);
    assert_eq!(recording.bytes, ogg.len() as u64);
    let seconds = input.len() as f64 / RATE as f64;
    eprintln!(
        "{} bytes for {seconds:.2} s: {:.0} bit/s",
        ogg.len(),
        ogg.len() as f64 * 8.0 / seconds
    );

    let (file, info) = opusinfo(&ogg, "plays");
    let length = info
        .lines()
        .find_map(|l| l.trim().strip_prefix("Playback length: "))
        .expect(&info);
    let (minutes, seconds) = length.trim_end_matches('s').split_once("m:").expect(length);
    let info_ms = (minutes.parse::<f64>().unwrap() * 60_000.0
        + seconds.parse::<f64>().unwrap() * 1000.0) as i64;
    assert!(
        (info_ms - input_ms).abs() <= 40,
        "opusinfo says {length} for {input_ms} ms:\n{info}"
    );

    let wav = scratch("plays-opusdec.wav");
    run(Command::new("opusdec")
        .args(["--quiet", "--rate", "16000"])
        .arg(&file)
        .arg(&wav));
    let (rate, decoded) = read_wav(&wav);
    assert_eq!(rate, 16_000);
    assert_sounds_like(&input, &decoded, "opusdec");

    let decoded = decode_ogg_opus(&ogg, 16_000).unwrap();
    assert_eq!((decoded.sample_rate, decoded.channels), (16_000, 1));
    assert_sounds_like(&input, &decoded.samples, "jeton-voice decoder");
}

#[test]
fn the_waveform_is_flat_in_silence_and_rises_with_speech() {
    let speech = speech("Voice message.", "waveform");
    let mut input = vec![0; RATE];
    input.extend(&speech);
    input.extend(vec![0; RATE]);
    let (_, recording) = record(&input, 160);
    let values = recording.waveform.values();
    let silent = WAVEFORM_LEN * RATE / input.len(); // values wholly inside each second of silence
    assert!(values[..silent].iter().all(|&v| v == 0), "{values:?}");
    assert!(
        values[WAVEFORM_LEN - silent..].iter().all(|&v| v == 0),
        "{values:?}"
    );
    assert!(values.iter().all(|&v| v <= 1024), "{values:?}");
    let loudest = speech.iter().map(|s| i32::from(*s).abs()).max().unwrap();
    let peak = *values.iter().max().unwrap();
    // espeak-ng's peaks swing symmetrically, so the peak value is near |sample| / 32.
    assert!(
        peak.abs_diff((loudest / 32) as u16) < 200,
        "peak {peak} for samples up to {loudest}: {values:?}"
    );
}

#[test]
fn a_moved_recorder_encodes_as_one_left_in_place() {
    let input = speech("Moving the recorder changes nothing.", "moved");
    let (expected, _) = record(&input, 320);
    let half = input.len() / 2;
    let mut recorder = Box::new(VoiceRecorder::new());
    let mut ogg = Vec::new();
    recorder.start(0x6a65_746f, &mut ogg).unwrap();
    recorder.push(&input[..half], &mut ogg).unwrap();
    let mut moved = Box::new(VoiceRecorder::new());
    std::mem::swap(&mut *moved, &mut *recorder);
    drop(recorder);
    moved.push(&input[half..], &mut ogg).unwrap();
    moved.finish(&mut ogg).unwrap();
    assert!(ogg == expected, "the moved recorder's stream differs");
}

#[test]
fn pages_carry_positions_that_trim_the_stream_to_the_input() {
    let input = speech(SENTENCE, "pages");
    let (ogg, _) = record(&input, 320);
    let mut at = 0;
    let mut pages = Vec::new();
    while at < ogg.len() {
        assert_eq!(&ogg[at..at + 4], b"OggS");
        let flags = ogg[at + 5];
        let granule = u64::from_le_bytes(ogg[at + 6..at + 14].try_into().unwrap());
        let segments = usize::from(ogg[at + 26]);
        let body: usize = ogg[at + 27..at + 27 + segments]
            .iter()
            .map(|&l| usize::from(l))
            .sum();
        pages.push((flags, granule, segments));
        at += 27 + segments + body;
    }
    assert_eq!(at, ogg.len());
    assert_eq!(pages[0], (0x02, 0, 1), "OpusHead alone on the first page");
    assert_eq!(pages[1], (0x00, 0, 1), "OpusTags alone on the second page");
    assert_eq!(pages.last().unwrap().0, 0x04, "the last page is marked");
    assert!(
        pages[2..pages.len() - 1]
            .iter()
            .all(|p| p.0 == 0 && p.2 <= 50),
        "{pages:?}"
    );
    assert!(
        pages.windows(2).all(|w| w[0].1 <= w[1].1),
        "positions go backwards: {pages:?}"
    );
    let pre_skip = u64::from(u16::from_le_bytes([ogg[28 + 10], ogg[28 + 11]]));
    assert_eq!(pages.last().unwrap().1, pre_skip + 3 * input.len() as u64);
    // Every CRC checks out for an independent reader.
    let mut reader = ogg::PacketReader::new(std::io::Cursor::new(&ogg));
    let mut packets = 0;
    while reader
        .read_packet()
        .expect("a page does not verify")
        .is_some()
    {
        packets += 1;
    }
    assert!(packets > input.len() / 320);
}

struct FailingSink {
    room: usize,
}

impl Sink for FailingSink {
    type Error = &'static str;
    fn write(&mut self, bytes: &[u8]) -> Result<(), Self::Error> {
        self.room = self
            .room
            .checked_sub(bytes.len())
            .ok_or("the upload failed")?;
        Ok(())
    }
}

#[test]
fn a_sink_that_fails_ends_the_recording_with_its_error() {
    let input = speech(SENTENCE, "sink");
    let mut recorder = Box::new(VoiceRecorder::new());
    let mut sink = FailingSink { room: 200 };
    recorder.start(1, &mut sink).unwrap();
    let failed = input
        .chunks(320)
        .map(|block| recorder.push(block, &mut sink))
        .find(Result::is_err);
    assert_eq!(failed, Some(Err(Error::Sink("the upload failed"))));
    assert_eq!(
        recorder.push(&input[..320], &mut sink),
        Err(Error::NotRecording)
    );
    assert_eq!(
        Error::Sink("the upload failed").to_string(),
        "the voice message could not be stored: the upload failed"
    );
}

#[test]
fn a_recording_without_sound_or_without_start_is_refused() {
    let mut recorder = Box::new(VoiceRecorder::new());
    let mut ogg = Vec::new();
    assert_eq!(recorder.push(&[0; 320], &mut ogg), Err(Error::NotRecording));
    assert_eq!(recorder.finish(&mut ogg), Err(Error::NotRecording));
    recorder.start(1, &mut ogg).unwrap();
    assert_eq!(recorder.finish(&mut ogg), Err(Error::Empty));
    assert_eq!(
        Error::<&str>::Empty.to_string(),
        "the voice message has no sound in it"
    );
}

#[test]
fn a_voice_message_from_a_48khz_encoder_decodes_to_its_duration() {
    // What Element sends: Ogg Opus from 48 kHz input (opusenc standing in for opus-recorder).
    let input = speech(SENTENCE, "element");
    let file = element_like(&input, "element");
    let ogg = std::fs::read(&file).unwrap();
    let decoded = decode_ogg_opus(&ogg, 48_000).unwrap();
    assert_eq!((decoded.sample_rate, decoded.channels), (48_000, 1));
    let input_ms = (input.len() * 1000 / RATE) as i64;
    assert!(
        (decoded.duration_ms() as i64 - input_ms).abs() <= 40,
        "{} ms for {input_ms}",
        decoded.duration_ms()
    );
    let at16k = decode_ogg_opus(&ogg, 16_000).unwrap();
    assert_sounds_like(
        &input,
        &at16k.samples,
        "opusenc stream, jeton-voice decoder",
    );

    let out = scratch("element-played.wav");
    decoded
        .write_wav(std::fs::File::create(&out).unwrap())
        .unwrap();
    let (rate, played) = read_wav(&out);
    assert_eq!((rate, played.len()), (48_000, decoded.samples.len()));
}

#[test]
fn what_is_not_ogg_opus_is_refused_in_words() {
    assert_eq!(
        decode_ogg_opus(b"RIFF....WAVEfmt ", 16_000),
        Err(DecodeError::NotOgg)
    );
    let (ogg, _) = record(&[100; 3200], 320);
    assert_eq!(
        decode_ogg_opus(&ogg, 44_100),
        Err(DecodeError::Rate(44_100))
    );
    assert_eq!(
        DecodeError::NotOgg.to_string(),
        "the voice message is not an Ogg file, or it is damaged"
    );
}
