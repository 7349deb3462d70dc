//! One recording's lifecycle: [`VoiceRecorder::start`] sets the encoder up and sends the two
//! header pages, [`VoiceRecorder::push`] takes PCM in blocks of any length and sends a page
//! whenever one fills, [`VoiceRecorder::finish`] encodes the rest, sends the last page and
//! hands back the [`Recording`]. What it holds between calls is bounded: the encoder's
//! state, one frame of PCM, one page, the waveform's buckets and a few counters.

use crate::ogg_writer::PageWriter;
use crate::opus::{self, Encoder};
use crate::waveform::{Waveform, WaveformBuilder};
use crate::{Error, FRAME_SAMPLES, SAMPLE_RATE, Sink};

/// Bytes one Opus packet may take: one lacing value's worth, far above what SILK at the
/// recorder's bitrate produces, so the encoder never has to squeeze a frame.
const MAX_PACKET: usize = 254;
/// Ogg Opus positions count samples at 48 kHz.
const GRANULE_PER_SAMPLE: u64 = 48_000 / SAMPLE_RATE as u64;
/// Longest recording: its milliseconds must fit the event's u32 `duration`.
const MAX_SAMPLES: u64 = u32::MAX as u64 * (SAMPLE_RATE as u64 / 1000);
/// The vendor string of the OpusTags header is cut to this many bytes.
const MAX_VENDOR: usize = 48;

/// What a finished recording is, beside the Ogg stream the sink received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recording {
    /// The duration of the PCM pushed, in milliseconds (rounded).
    pub duration_ms: u32,
    /// The waveform Element draws for it.
    pub waveform: Waveform,
    /// Bytes of the Ogg stream, as the sink received them.
    pub bytes: u64,
}

/// Records one voice message at a time; see the module documentation for the lifecycle.
pub struct VoiceRecorder {
    encoder: Encoder,
    pages: PageWriter,
    waveform: WaveformBuilder,
    frame: [i16; FRAME_SAMPLES],
    filled: usize,
    /// PCM samples pushed in this recording.
    samples: u64,
    /// Samples given to the encoder, the zeros that pad the end included.
    encoded: u64,
    /// The encoder's delay in samples, announced as the stream's pre-skip.
    lookahead: u64,
    bytes: u64,
    recording: bool,
}

impl core::fmt::Debug for VoiceRecorder {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("VoiceRecorder")
            .field("recording", &self.recording)
            .field("samples", &self.samples)
            .finish_non_exhaustive()
    }
}

impl Default for VoiceRecorder {
    fn default() -> Self {
        Self::new()
    }
}

impl VoiceRecorder {
    /// An idle recorder. `const`, so that it can be placed in a static or in memory shared
    /// with other scratch without passing through the stack.
    pub const fn new() -> Self {
        Self {
            encoder: Encoder::new(),
            pages: PageWriter::new(),
            waveform: WaveformBuilder::new(),
            frame: [0; FRAME_SAMPLES],
            filled: 0,
            samples: 0,
            encoded: 0,
            lookahead: 0,
            bytes: 0,
            recording: false,
        }
    }

    /// Begins a recording (abandoning any other): sets the encoder up and sends the Ogg
    /// stream's two header pages. `serial` is the stream's Ogg serial number, which should
    /// be random.
    pub fn start<S: Sink>(&mut self, serial: u32, sink: &mut S) -> Result<(), Error<S::Error>> {
        self.recording = false;
        let lookahead = self.encoder.init().map_err(Error::Encoder)?;
        self.pages.begin(serial);
        self.waveform = WaveformBuilder::new();
        self.filled = 0;
        self.samples = 0;
        self.encoded = 0;
        self.lookahead = u64::from(lookahead);
        self.bytes = 0;
        // At most MAX_LOOKAHEAD samples, so this fits the header's 16 bits.
        let pre_skip = (self.lookahead * GRANULE_PER_SAMPLE) as u16;
        let mut head = [0u8; 19];
        head[..8].copy_from_slice(b"OpusHead");
        head[8] = 1; // version
        head[9] = 1; // channels
        head[10..12].copy_from_slice(&pre_skip.to_le_bytes());
        head[12..16].copy_from_slice(&SAMPLE_RATE.to_le_bytes());
        // Output gain 0 dB and channel mapping family 0 (mono or stereo) stay zero.
        self.header_page(&head, sink)?;
        let vendor = opus::version();
        let vendor = &vendor[..vendor.len().min(MAX_VENDOR)];
        let mut tags = [0u8; 8 + 4 + MAX_VENDOR + 4];
        tags[..8].copy_from_slice(b"OpusTags");
        tags[8..12].copy_from_slice(&(vendor.len() as u32).to_le_bytes());
        tags[12..12 + vendor.len()].copy_from_slice(vendor);
        // No user comments: the count after the vendor string stays zero.
        self.header_page(&tags[..12 + vendor.len() + 4], sink)?;
        self.recording = true;
        Ok(())
    }

    /// Takes the next block of PCM (16 kHz, mono), of any length; sends a page through the
    /// sink whenever one fills.
    pub fn push<S: Sink>(&mut self, pcm: &[i16], sink: &mut S) -> Result<(), Error<S::Error>> {
        if !self.recording {
            return Err(Error::NotRecording);
        }
        if self.samples + pcm.len() as u64 > MAX_SAMPLES {
            self.recording = false;
            return Err(Error::TooLong);
        }
        self.waveform.push(pcm);
        let mut rest = pcm;
        while !rest.is_empty() {
            let take = rest.len().min(FRAME_SAMPLES - self.filled);
            self.frame[self.filled..self.filled + take].copy_from_slice(&rest[..take]);
            self.filled += take;
            self.samples += take as u64;
            rest = &rest[take..];
            if self.filled == FRAME_SAMPLES {
                self.encode_frame(sink)?;
            }
        }
        Ok(())
    }

    /// Ends the recording: encodes the last partial frame and as much silence as the
    /// encoder's delay needs, sends the last page, whose position trims the padding so that
    /// a decoder plays exactly what was pushed, and returns the summary.
    pub fn finish<S: Sink>(&mut self, sink: &mut S) -> Result<Recording, Error<S::Error>> {
        if !self.recording {
            return Err(Error::NotRecording);
        }
        if self.samples == 0 {
            self.recording = false;
            return Err(Error::Empty);
        }
        loop {
            self.frame[self.filled..].fill(0);
            self.filled = FRAME_SAMPLES;
            self.encode_frame(sink)?;
            if self.encoded >= self.samples + self.lookahead {
                break;
            }
        }
        let end = (self.samples + self.lookahead) * GRANULE_PER_SAMPLE;
        let sent = self.pages.finish(end, sink);
        self.recording = false;
        self.bytes += sent?;
        Ok(Recording {
            duration_ms: ((self.samples * 1000 + u64::from(SAMPLE_RATE) / 2)
                / u64::from(SAMPLE_RATE)) as u32,
            waveform: self.waveform.waveform(),
            bytes: self.bytes,
        })
    }

    fn header_page<S: Sink>(&mut self, packet: &[u8], sink: &mut S) -> Result<(), Error<S::Error>> {
        self.bytes += self.pages.header_page(packet, sink)?;
        Ok(())
    }

    fn encode_frame<S: Sink>(&mut self, sink: &mut S) -> Result<(), Error<S::Error>> {
        let mut packet = [0u8; MAX_PACKET];
        let len = match self.encoder.encode(&self.frame, &mut packet) {
            Ok(len) => len,
            Err(code) => {
                self.recording = false;
                return Err(Error::Encoder(code));
            }
        };
        self.filled = 0;
        self.encoded += FRAME_SAMPLES as u64;
        match self
            .pages
            .packet(&packet[..len], self.encoded * GRANULE_PER_SAMPLE, sink)
        {
            Ok(sent) => {
                self.bytes += sent;
                Ok(())
            }
            Err(e) => {
                self.recording = false;
                Err(e)
            }
        }
    }
}
