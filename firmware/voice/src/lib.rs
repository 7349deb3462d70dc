//! jeton-voice: push-to-talk voice messages recorded on the token. 16 kHz mono 16-bit PCM goes
//! in; an Ogg Opus stream (RFC 7845) comes out page by page through a [`Sink`], never holding
//! the recording; at the end come the duration and the waveform that Element draws for a
//! voice message (MSC3245 on MSC1767).
//!
//! - [`VoiceRecorder`]: the recording's lifecycle (start, push PCM, finish), its bounded
//!   state (the Opus encoder, one frame of PCM, one Ogg page, the waveform's buckets) and the
//!   [`Recording`] summary. No heap: the whole recorder is one value of fixed size, made by a
//!   `const fn` so it can live in a static or in memory shared with other scratch.
//! - [`Waveform`]: Element's shape, 100 integers 0-1024.
//! - `decode` (feature `std`, host only): Ogg Opus from any sender to PCM and WAV, for
//!   playing received voice messages.
//!
//! # The codec
//!
//! Opus in SILK mode (VoIP application, wideband, variable bitrate around [`BITRATE`]) from
//! libopus 1.6 in its fixed-point configuration, compiled from the source that `opusic-sys`
//! bundles, with the encoder state inside the recorder (`opus_encoder_init`, no allocation).
//! It was chosen over the pure-Rust `opus-rs` by measurement on the Cortex-M4 (the crate's
//! README has the figures): fewer instructions per second of speech, a sixth of the state,
//! half the flash. libopus encodes at complexity [`COMPLEXITY`], which keeps encoding within
//! half of a 64 MHz Cortex-M4F with room to spare.
//!
//! # Usage
//!
//! ```
//! use jeton_voice::{FRAME_SAMPLES, VoiceRecorder};
//!
//! let mut recorder = Box::new(VoiceRecorder::new());
//! let mut ogg = Vec::new(); // a Sink; on the token, the encrypted upload
//! recorder.start(0x1234_5678, &mut ogg).unwrap();
//! let tone: Vec<i16> = (0..16_000).map(|i| ((i % 40) as i16 - 20) * 500).collect();
//! for block in tone.chunks(FRAME_SAMPLES / 2) {
//!     recorder.push(block, &mut ogg).unwrap();
//! }
//! let recording = recorder.finish(&mut ogg).unwrap();
//! assert_eq!(recording.duration_ms, 1000);
//! assert_eq!(recording.waveform.values().len(), 100);
//! assert!(ogg.starts_with(b"OggS"));
//! ```
#![cfg_attr(not(feature = "std"), no_std)]

#[cfg(feature = "std")]
#[allow(unsafe_code)] // the FFI to libopus's decoder
pub mod decode;
mod error;
mod ogg_writer;
#[allow(unsafe_code)] // the FFI to libopus, and only that
mod opus;
mod recorder;
mod waveform;

pub use error::Error;
pub use recorder::{Recording, VoiceRecorder};
pub use waveform::{WAVEFORM_LEN, WAVEFORM_MAX, Waveform};

/// The PCM the recorder takes: samples per second (mono, 16-bit).
pub const SAMPLE_RATE: u32 = 16_000;
/// Samples in one Opus frame (20 ms), the unit the encoder works in.
pub const FRAME_SAMPLES: usize = SAMPLE_RATE as usize / 50;
/// The encoder's target bitrate in bits per second (variable: speech pauses cost less).
pub const BITRATE: i32 = 16_000;
/// libopus's complexity setting (0-10): SILK's cheapest analysis; see the crate doc.
pub const COMPLEXITY: i32 = 0;

/// Where the recorder puts the Ogg stream as it grows: whole Ogg pages, in order, each
/// written as a header and a body.
pub trait Sink {
    /// Why the bytes could not be taken (for example, the upload failed).
    type Error;
    /// Takes the next bytes of the stream.
    fn write(&mut self, bytes: &[u8]) -> Result<(), Self::Error>;
}

#[cfg(feature = "std")]
impl Sink for Vec<u8> {
    type Error = core::convert::Infallible;
    fn write(&mut self, bytes: &[u8]) -> Result<(), Self::Error> {
        self.extend_from_slice(bytes);
        Ok(())
    }
}
