//! The waveform of a voice message as Element draws it: [`WAVEFORM_LEN`] integers from 0 to
//! [`WAVEFORM_MAX`] (MSC1767's `org.matrix.msc1767.audio.waveform`, as MSC3246 describes it).
//!
//! Element's recorder takes 16 amplitude marks a second, each half the peak-to-peak swing
//! of the signal (0 silent, 1 full scale), and sends them resampled to 100 values times 1024
//! (element-web: `RecorderWorklet.ts`, `Playback.ts` `thumbnailWaveform`,
//! `VoiceRecordComposerTile.tsx`). Here a mark spans its whole sixteenth of a second rather
//! than the one 128-sample block Element's worklet happens to look at, and the marks are
//! kept in a fixed number of buckets: when they are full, neighbours merge (keeping the
//! louder), so a recording of any length takes the same memory. The resampling to 100 keeps
//! the loudest mark of each stretch, so that a short word is not skipped.

use crate::SAMPLE_RATE;

/// Values in a waveform (Element's thumbnail length).
pub const WAVEFORM_LEN: usize = 100;
/// The value of a full-scale swing.
pub const WAVEFORM_MAX: u16 = 1024;

const MARKS_PER_SECOND: u32 = 16;
const MARK_SAMPLES: u32 = SAMPLE_RATE / MARKS_PER_SECOND;
/// Buckets kept while recording: more than [`WAVEFORM_LEN`], so that short recordings
/// resample without merging, and even, so that merging halves them exactly.
const BUCKETS: usize = 128;

/// The waveform of one recording.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Waveform([u16; WAVEFORM_LEN]);

impl Waveform {
    /// The values, each from 0 to [`WAVEFORM_MAX`], in time order.
    pub fn values(&self) -> &[u16; WAVEFORM_LEN] {
        &self.0
    }
}

/// The marks of a recording so far, merged into at most [`BUCKETS`] buckets.
#[derive(Clone)]
pub(crate) struct WaveformBuilder {
    buckets: [u16; BUCKETS],
    len: usize,
    /// How often the buckets merged: each holds 2^merges marks. (A count rather than the
    /// span keeps the idle recorder all zeros, so a static one takes no flash.)
    merges: u32,
    marks_in_bucket: u32,
    bucket_peak: u16,
    mark_samples: u32,
    min: i16,
    max: i16,
}

impl WaveformBuilder {
    pub(crate) const fn new() -> Self {
        Self {
            buckets: [0; BUCKETS],
            len: 0,
            merges: 0,
            marks_in_bucket: 0,
            bucket_peak: 0,
            mark_samples: 0,
            min: 0,
            max: 0,
        }
    }

    pub(crate) fn push(&mut self, pcm: &[i16]) {
        for &sample in pcm {
            self.min = self.min.min(sample);
            self.max = self.max.max(sample);
            self.mark_samples += 1;
            if self.mark_samples == MARK_SAMPLES {
                self.end_mark();
            }
        }
    }

    /// The waveform of everything pushed, a partial last mark included.
    pub(crate) fn waveform(&self) -> Waveform {
        let mut all = self.clone();
        if all.mark_samples > 0 {
            all.end_mark();
        }
        if all.marks_in_bucket > 0 {
            all.end_bucket();
        }
        let marks = &all.buckets[..all.len];
        let mut values = [0; WAVEFORM_LEN];
        if !marks.is_empty() {
            for (i, value) in values.iter_mut().enumerate() {
                let start = i * marks.len() / WAVEFORM_LEN;
                let end = ((i + 1) * marks.len() / WAVEFORM_LEN).max(start + 1);
                *value = marks[start..end].iter().copied().max().unwrap_or(0);
            }
        }
        Waveform(values)
    }

    fn end_mark(&mut self) {
        // Half the swing, as a fraction of full scale, times 1024: (max - min) / 2 / 32768.
        let swing = (i32::from(self.max) - i32::from(self.min)) as u32;
        let amplitude = ((swing + 32) / 64).min(u32::from(WAVEFORM_MAX)) as u16;
        self.bucket_peak = self.bucket_peak.max(amplitude);
        self.marks_in_bucket += 1;
        self.mark_samples = 0;
        self.min = 0;
        self.max = 0;
        if self.marks_in_bucket == 1 << self.merges {
            self.end_bucket();
        }
    }

    fn end_bucket(&mut self) {
        self.buckets[self.len] = self.bucket_peak;
        self.len += 1;
        self.bucket_peak = 0;
        self.marks_in_bucket = 0;
        if self.len == BUCKETS {
            for i in 0..BUCKETS / 2 {
                self.buckets[i] = self.buckets[2 * i].max(self.buckets[2 * i + 1]);
            }
            self.len = BUCKETS / 2;
            self.merges += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn waveform_of(pcm: &[i16]) -> Waveform {
        let mut builder = WaveformBuilder::new();
        for block in pcm.chunks(77) {
            builder.push(block);
        }
        builder.waveform()
    }

    /// A square wave of the given half-swing.
    fn square(amplitude: i16, samples: usize) -> Vec<i16> {
        (0..samples)
            .map(|i| if i % 20 < 10 { amplitude } else { -amplitude })
            .collect()
    }

    #[test]
    fn full_scale_is_1024_and_silence_is_0() {
        let mut pcm = square(i16::MAX, 16_000);
        pcm.extend(std::iter::repeat_n(0, 16_000));
        let values = waveform_of(&pcm).values().to_vec();
        assert!(
            values[..50].iter().all(|&v| v == WAVEFORM_MAX),
            "{values:?}"
        );
        assert!(values[50..].iter().all(|&v| v == 0), "{values:?}");
    }

    #[test]
    fn half_scale_is_about_512() {
        let values = waveform_of(&square(16_384, 8_000)).values().to_vec();
        assert!(values.iter().all(|&v| v == 512), "{values:?}");
    }

    #[test]
    fn a_long_recording_keeps_its_shape_and_its_short_words() {
        // Ten minutes of silence with a 1/16 s word at each minute: merging buckets many
        // times over must neither lose the words nor move them.
        let mut pcm = Vec::new();
        for _ in 0..10 {
            pcm.extend(square(8_192, MARK_SAMPLES as usize));
            pcm.extend(std::iter::repeat_n(
                0,
                60 * SAMPLE_RATE as usize - MARK_SAMPLES as usize,
            ));
        }
        let values = waveform_of(&pcm).values().to_vec();
        // Where each loud stretch starts (a merged bucket may be drawn over two values).
        let loud: Vec<usize> = (0..WAVEFORM_LEN)
            .filter(|&i| values[i] > 0 && (i == 0 || values[i - 1] == 0))
            .collect();
        assert_eq!(loud.len(), 10, "{values:?}");
        for (minute, &i) in loud.iter().enumerate() {
            assert!(
                i.abs_diff(minute * 10) <= 1,
                "word {minute} drawn at {i}: {values:?}"
            );
        }
    }

    #[test]
    fn a_short_recording_spreads_over_the_whole_waveform() {
        // Half a second: 8 marks, each drawn over 12 or 13 values.
        let mut pcm = square(16_384, 4_000);
        pcm.extend(std::iter::repeat_n(0, 4_000));
        let values = waveform_of(&pcm).values().to_vec();
        assert!(values[..50].iter().all(|&v| v == 512), "{values:?}");
        assert!(values[50..].iter().all(|&v| v == 0), "{values:?}");
    }

    #[test]
    fn nothing_recorded_is_flat() {
        assert_eq!(waveform_of(&[]).values(), &[0; WAVEFORM_LEN]);
    }
}
