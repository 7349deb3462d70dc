//! The recorder's error type.

use core::fmt;

/// Why a recording could not go on. After any error the recording is abandoned: the stream
/// the sink got so far is not a complete Ogg Opus file, and [`crate::VoiceRecorder::start`]
/// begins a new one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error<E> {
    /// The sink refused bytes of the stream.
    Sink(E),
    /// PCM was pushed, or the recording finished, while no recording was started.
    NotRecording,
    /// The recording ended before any sound was pushed.
    Empty,
    /// The recording is longer than an Ogg Opus stream's positions or a u32 of milliseconds
    /// can count.
    TooLong,
    /// libopus refused to set up or run the encoder (its error code).
    Encoder(i32),
}

impl<E: fmt::Display> fmt::Display for Error<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Sink(e) => write!(f, "the voice message could not be stored: {e}"),
            Self::NotRecording => f.write_str("no voice message is being recorded"),
            Self::Empty => f.write_str("the voice message has no sound in it"),
            Self::TooLong => f.write_str("the voice message is too long"),
            Self::Encoder(code) => write!(f, "the Opus encoder failed (libopus error {code})"),
        }
    }
}

impl<E: fmt::Debug + fmt::Display> core::error::Error for Error<E> {}
