//! jeton-voice's recorder on a Cortex-M4: a canned speech clip (`fixtures/voice-clip.raw`)
//! pushed in 20 ms blocks, as a microphone driver would hand them over, into an Ogg Opus
//! stream that a sink only counts. Prints the instructions per 20 ms frame and per second of
//! audio, the stream's size and the peak stack; `build` adds flash and RAM. Fails when the
//! stream is not, byte for byte, the one the host makes of the clip (its FNV-1a hash in
//! `fixtures/voice-clip.fnv`, checked on the host by jeton-voice's `cortex_m_clip` test), or
//! when the recording's duration or waveform is not the clip's.
#![no_std]
#![no_main]

use core::convert::Infallible;

use cortex_m_rt::entry;
use cortex_m_semihosting::hprintln;
use jeton_cortex_m::{InstructionCounter, fail, paint_stack, pass, stack_used_since_paint};
use jeton_voice::{FRAME_SAMPLES, SAMPLE_RATE, Sink, VoiceRecorder};

jeton_cortex_m::panic_handler!(report);

/// 16 kHz mono 16-bit little-endian PCM; fixtures/README.md says how it was made.
static CLIP: &[u8] = include_bytes!("../../fixtures/voice-clip.raw");

/// The recorder lives in a static, as it would in the token's scratch memory.
static mut RECORDER: VoiceRecorder = VoiceRecorder::new();

/// The FNV-1a 64 hash of the stream the host makes of the clip, in hex.
static HOST_STREAM: &str = include_str!("../../fixtures/voice-clip.fnv");

/// Counts and hashes the stream's bytes (the token's sink encrypts and uploads them).
struct Counter {
    bytes: u64,
    fnv: u64,
}

impl Sink for Counter {
    type Error = Infallible;
    fn write(&mut self, bytes: &[u8]) -> Result<(), Infallible> {
        self.bytes += bytes.len() as u64;
        for &b in bytes {
            self.fnv = (self.fnv ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        Ok(())
    }
}

#[entry]
fn main() -> ! {
    let Some(p) = cortex_m::Peripherals::take() else {
        fail("peripherals taken twice")
    };
    let mut c = InstructionCounter::new(p.SYST);
    // SAFETY: the only reference to the static, taken once.
    let recorder = unsafe { &mut *core::ptr::addr_of_mut!(RECORDER) };
    let mut sink = Counter {
        bytes: 0,
        fnv: 0xcbf2_9ce4_8422_2325,
    };
    paint_stack();
    let (started, start) = c.measure(|| recorder.start(0x6a65_746f, &mut sink));
    if started.is_err() {
        fail("the recorder did not start");
    }
    let mut block = [0i16; FRAME_SAMPLES];
    let Some(mut total) = start else {
        fail("start overflowed the counter")
    };
    let mut worst = 0;
    for pcm in CLIP.chunks(2 * FRAME_SAMPLES) {
        let samples = pcm.len() / 2;
        for (sample, bytes) in block.iter_mut().zip(pcm.chunks_exact(2)) {
            *sample = i16::from_le_bytes([bytes[0], bytes[1]]);
        }
        let (pushed, instructions) = c.measure(|| recorder.push(&block[..samples], &mut sink));
        let Some(instructions) = instructions.filter(|_| pushed.is_ok()) else {
            fail("a frame did not encode")
        };
        total += instructions;
        worst = worst.max(instructions);
    }
    let (finished, finish) = c.measure(|| recorder.finish(&mut sink));
    let Ok(recording) = finished else {
        fail("the recording did not finish")
    };
    let Some(finish) = finish else {
        fail("finish overflowed the counter")
    };
    total += finish;
    let stack = stack_used_since_paint();

    let clip_ms = (CLIP.len() / 2) as u64 * 1000 / u64::from(SAMPLE_RATE);
    let per_second = total * 1000 / clip_ms;
    row("clip", clip_ms, "ms");
    row("recording duration", u64::from(recording.duration_ms), "ms");
    row("Ogg Opus stream", sink.bytes, "B");
    row("bitrate", sink.bytes * 8 * 1000 / clip_ms, "bit/s");
    row("instructions, whole clip", total, "");
    row(
        "instructions per 20 ms of audio, mean",
        total * 20 / clip_ms,
        "",
    );
    row("instructions per 20 ms frame, worst", worst, "");
    hprintln!("voice-instructions-per-second {}", per_second);
    hprintln!("voice-state-bytes {}", size_of::<VoiceRecorder>());
    hprintln!("voice-peak-stack-bytes {}", stack);
    if u64::from(recording.duration_ms).abs_diff(clip_ms) > 40 || sink.bytes != recording.bytes {
        fail("the recording's duration or size is not the clip's");
    }
    if u64::from_str_radix(HOST_STREAM.trim(), 16) != Ok(sink.fnv) {
        fail("the stream differs from the host's (fixtures/voice-clip.fnv)");
    }
    if recording.waveform.values().iter().all(|&v| v == 0) {
        fail("the waveform of speech is flat");
    }
    pass()
}

fn row(name: &str, value: u64, unit: &str) {
    hprintln!("{:<44} {:>12} {}", name, value, unit);
}
