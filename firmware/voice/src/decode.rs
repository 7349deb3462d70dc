//! Playing received voice messages (host only, feature `std`): an Ogg Opus stream from any
//! sender (mono or stereo, channel mapping family 0, any input rate) decoded by libopus to
//! 16-bit PCM at a chosen rate, with the pre-skip removed and the end trimmed to the last
//! page's position (RFC 7845 section 4), and written out as WAV. A token has no speaker, so
//! the decoder is not built for it.

use std::fmt;
use std::io::{Cursor, Seek, Write};

use opusic_sys as ffi;

/// Samples per channel in the longest Opus packet (120 ms) at 48 kHz.
const MAX_PACKET_SAMPLES: usize = 5760;

/// Decoded PCM, channels interleaved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decoded {
    /// Samples per second per channel: the rate asked for.
    pub sample_rate: u32,
    /// 1 or 2, as the stream's OpusHead says.
    pub channels: u16,
    /// The PCM, channels interleaved, pre-skip and end padding removed.
    pub samples: Vec<i16>,
}

impl Decoded {
    /// The length of the sound in milliseconds.
    pub fn duration_ms(&self) -> u64 {
        let frames = self.samples.len() as u64 / u64::from(self.channels);
        frames * 1000 / u64::from(self.sample_rate)
    }

    /// Writes the PCM as a 16-bit WAV file.
    pub fn write_wav<W: Write + Seek>(&self, out: W) -> Result<(), DecodeError> {
        let spec = hound::WavSpec {
            channels: self.channels,
            sample_rate: self.sample_rate,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let wav_error = |e: hound::Error| DecodeError::Wav(e.to_string());
        let mut writer = hound::WavWriter::new(out, spec).map_err(wav_error)?;
        for &sample in &self.samples {
            writer.write_sample(sample).map_err(wav_error)?;
        }
        writer.finalize().map_err(wav_error)
    }
}

/// Why a voice message could not be decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecodeError {
    /// The bytes are not an Ogg stream, or a damaged one.
    NotOgg,
    /// The Ogg stream does not carry Opus (no valid OpusHead and OpusTags).
    NotOpus,
    /// Opus with a channel layout other than mono or stereo.
    Channels(u8),
    /// A sample rate Opus does not decode to (8, 12, 16, 24 or 48 kHz).
    Rate(u32),
    /// The stream's positions contradict its pre-skip.
    BadPosition,
    /// libopus refused a packet or the decoder's setup (its error code).
    Opus(i32),
    /// The WAV file could not be written.
    Wav(String),
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotOgg => f.write_str("the voice message is not an Ogg file, or it is damaged"),
            Self::NotOpus => {
                f.write_str("the voice message is an Ogg file without Opus sound in it")
            }
            Self::Channels(n) => write!(
                f,
                "the voice message has {n} channels; only mono and stereo play"
            ),
            Self::Rate(rate) => write!(f, "{rate} Hz is not a rate Opus decodes to"),
            Self::BadPosition => f.write_str("the voice message's positions are damaged"),
            Self::Opus(code) => write!(f, "the Opus decoder failed (libopus error {code})"),
            Self::Wav(e) => write!(f, "the WAV file could not be written: {e}"),
        }
    }
}

impl std::error::Error for DecodeError {}

/// The fields of OpusHead that decoding needs.
struct Head {
    channels: u8,
    pre_skip: u64,
    gain: i16,
}

fn parse_head(packet: &[u8]) -> Result<Head, DecodeError> {
    if packet.len() < 19 || &packet[..8] != b"OpusHead" || packet[8] >> 4 != 0 {
        return Err(DecodeError::NotOpus);
    }
    let channels = packet[9];
    if !(1..=2).contains(&channels) || packet[18] != 0 {
        return Err(DecodeError::Channels(channels));
    }
    Ok(Head {
        channels,
        pre_skip: u64::from(u16::from_le_bytes([packet[10], packet[11]])),
        gain: i16::from_le_bytes([packet[16], packet[17]]),
    })
}

/// A libopus decoder, freed when dropped.
struct Decoder(*mut ffi::OpusDecoder);

impl Decoder {
    fn new(rate: u32, head: &Head) -> Result<Self, DecodeError> {
        let mut error = 0;
        // SAFETY: creates a decoder on libopus's heap, or returns null and sets `error`.
        let raw = unsafe {
            ffi::opus_decoder_create(rate as i32, i32::from(head.channels), &raw mut error)
        };
        if raw.is_null() || error != ffi::OPUS_OK {
            return Err(DecodeError::Opus(error));
        }
        let decoder = Self(raw);
        // SAFETY: a live decoder; OPUS_SET_GAIN takes one opus_int32 (Q8 dB), as OpusHead's gain is.
        let set = unsafe {
            ffi::opus_decoder_ctl(decoder.0, ffi::OPUS_SET_GAIN_REQUEST, i32::from(head.gain))
        };
        if set != ffi::OPUS_OK {
            return Err(DecodeError::Opus(set));
        }
        Ok(decoder)
    }

    /// Decodes one packet, appending its PCM to `out`.
    fn decode(
        &mut self,
        packet: &[u8],
        channels: usize,
        out: &mut Vec<i16>,
    ) -> Result<(), DecodeError> {
        let mut pcm = vec![0i16; MAX_PACKET_SAMPLES * channels];
        let len =
            i32::try_from(packet.len()).map_err(|_| DecodeError::Opus(ffi::OPUS_INVALID_PACKET))?;
        // SAFETY: a live decoder; `packet` holds `len` bytes and `pcm` room for the longest
        // packet's samples on every channel.
        let frames = unsafe {
            ffi::opus_decode(
                self.0,
                packet.as_ptr(),
                len,
                pcm.as_mut_ptr(),
                MAX_PACKET_SAMPLES as i32,
                0,
            )
        };
        let frames = usize::try_from(frames).map_err(|_| DecodeError::Opus(frames))?;
        out.extend_from_slice(&pcm[..frames * channels]);
        Ok(())
    }
}

impl Drop for Decoder {
    fn drop(&mut self) {
        // SAFETY: made by opus_decoder_create and freed only here.
        unsafe { ffi::opus_decoder_destroy(self.0) }
    }
}

/// Decodes an Ogg Opus stream to PCM at `sample_rate` (8000, 12000, 16000, 24000 or 48000).
/// Only the first logical stream is played.
pub fn decode_ogg_opus(ogg: &[u8], sample_rate: u32) -> Result<Decoded, DecodeError> {
    if ![8_000, 12_000, 16_000, 24_000, 48_000].contains(&sample_rate) {
        return Err(DecodeError::Rate(sample_rate));
    }
    let mut reader = ogg::PacketReader::new(Cursor::new(ogg));
    let mut next = || reader.read_packet().map_err(|_| DecodeError::NotOgg);
    let first = next()?.ok_or(DecodeError::NotOgg)?;
    let head = parse_head(&first.data)?;
    let serial = first.stream_serial();
    let tags = next()?.ok_or(DecodeError::NotOpus)?;
    if tags.stream_serial() != serial || !tags.data.starts_with(b"OpusTags") {
        return Err(DecodeError::NotOpus);
    }
    let channels = usize::from(head.channels);
    let mut decoder = Decoder::new(sample_rate, &head)?;
    let mut samples = Vec::new();
    let mut end = None;
    while let Some(packet) = next()? {
        if packet.stream_serial() != serial {
            continue;
        }
        decoder.decode(&packet.data, channels, &mut samples)?;
        if packet.last_in_page() && packet.absgp_page() != u64::MAX {
            end = Some(packet.absgp_page());
        }
    }
    // Positions and pre-skip are in 48 kHz samples.
    let to_rate = |at_48k: u64| (at_48k * u64::from(sample_rate) / 48_000) as usize * channels;
    let skip = to_rate(head.pre_skip).min(samples.len());
    if let Some(end) = end {
        let played = end
            .checked_sub(head.pre_skip)
            .ok_or(DecodeError::BadPosition)?;
        samples.truncate(skip + to_rate(played));
    }
    samples.drain(..skip);
    Ok(Decoded {
        sample_rate,
        channels: u16::from(head.channels),
        samples,
    })
}
