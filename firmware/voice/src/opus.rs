//! The one place that calls libopus: a mono 16 kHz SILK encoder whose state lives inside
//! [`Encoder`] itself (`opus_encoder_init` on caller-provided memory, no allocation).
//!
//! libopus keeps no pointer into its own state (the SILK and CELT parts are found by offset,
//! the rest points at static tables), so the state may move with the value that holds it;
//! `tests/speech.rs` checks that a moved recorder encodes exactly as one left in place.

use core::ffi::{CStr, c_int};
use opusic_sys as ffi;

use crate::{BITRATE, COMPLEXITY, FRAME_SAMPLES, SAMPLE_RATE};

/// Bytes set aside for libopus's encoder state, which must hold `opus_encoder_get_size(1)`
/// of the fixed-point build without the float API, on the Cortex-M4 and on 64-bit hosts
/// alike (a little under 15 KiB); `init` refuses to run in less.
pub(crate) const ENCODER_STATE_BYTES: usize = 16 * 1024;

/// The longest encoder delay the stream's pre-skip can announce (16 bits of 48 kHz samples),
/// in 16 kHz samples; libopus's is a few milliseconds.
pub(crate) const MAX_LOOKAHEAD: u32 = u16::MAX as u32 / 3;

#[repr(C, align(16))]
struct State([u8; ENCODER_STATE_BYTES]);

/// A libopus encoder for the recorder's format and settings.
pub(crate) struct Encoder {
    state: State,
}

impl Encoder {
    /// Memory for an encoder; [`Encoder::init`] sets it up.
    pub(crate) const fn new() -> Self {
        Self {
            state: State([0; ENCODER_STATE_BYTES]),
        }
    }

    fn raw(&mut self) -> *mut ffi::OpusEncoder {
        self.state.0.as_mut_ptr().cast()
    }

    /// (Re)initialises the encoder for a new stream and returns its lookahead: how many
    /// samples (at 16 kHz) the decoder's output lags the input, which the stream's pre-skip
    /// announces.
    pub(crate) fn init(&mut self) -> Result<u32, i32> {
        // SAFETY: a pure function of its argument.
        let size = unsafe { ffi::opus_encoder_get_size(1) };
        if !usize::try_from(size).is_ok_and(|size| size <= ENCODER_STATE_BYTES) {
            return Err(ffi::OPUS_ALLOC_FAIL);
        }
        let st = self.raw();
        // SAFETY: `st` points at ENCODER_STATE_BYTES writable bytes, 16-aligned, which is at
        // least the size libopus asked for just above.
        check(unsafe {
            ffi::opus_encoder_init(st, SAMPLE_RATE as i32, 1, ffi::OPUS_APPLICATION_VOIP)
        })?;
        let settings = [
            (ffi::OPUS_SET_BITRATE_REQUEST, BITRATE),
            (ffi::OPUS_SET_VBR_REQUEST, 1),
            (ffi::OPUS_SET_COMPLEXITY_REQUEST, COMPLEXITY),
            (ffi::OPUS_SET_SIGNAL_REQUEST, ffi::OPUS_SIGNAL_VOICE),
            (
                ffi::OPUS_SET_MAX_BANDWIDTH_REQUEST,
                ffi::OPUS_BANDWIDTH_WIDEBAND,
            ),
        ];
        for (request, value) in settings {
            // SAFETY: `st` was initialised above; each of these requests takes one opus_int32.
            check(unsafe { ffi::opus_encoder_ctl(st, request, value) })?;
        }
        let mut lookahead: i32 = 0;
        // SAFETY: OPUS_GET_LOOKAHEAD takes a pointer to one opus_int32, which it writes.
        check(unsafe {
            ffi::opus_encoder_ctl(st, ffi::OPUS_GET_LOOKAHEAD_REQUEST, &raw mut lookahead)
        })?;
        u32::try_from(lookahead)
            .ok()
            .filter(|&samples| samples <= MAX_LOOKAHEAD)
            .ok_or(ffi::OPUS_INTERNAL_ERROR)
    }

    /// Encodes one 20 ms frame into `out` and returns the packet's length.
    pub(crate) fn encode(
        &mut self,
        pcm: &[i16; FRAME_SAMPLES],
        out: &mut [u8],
    ) -> Result<usize, i32> {
        let room = i32::try_from(out.len()).unwrap_or(i32::MAX);
        let st = self.raw();
        // SAFETY: `st` was initialised by `init` (the recorder calls `encode` only while
        // recording); `pcm` holds FRAME_SAMPLES samples of one channel and `out` `room` bytes.
        let written = unsafe {
            ffi::opus_encode(
                st,
                pcm.as_ptr(),
                FRAME_SAMPLES as c_int,
                out.as_mut_ptr(),
                room,
            )
        };
        check(written)?;
        usize::try_from(written).map_err(|_| ffi::OPUS_INTERNAL_ERROR)
    }
}

/// libopus's name and version, for the stream's vendor string.
pub(crate) fn version() -> &'static [u8] {
    // SAFETY: libopus returns a pointer to a static NUL-terminated string.
    unsafe { CStr::from_ptr(ffi::opus_get_version_string()) }.to_bytes()
}

fn check(code: c_int) -> Result<(), i32> {
    if code < 0 { Err(code) } else { Ok(()) }
}
