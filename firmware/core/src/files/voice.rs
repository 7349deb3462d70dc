//! Voice messages (feature `voice`): what an encrypted attachment's event adds when it is a
//! recorded voice message, and what a received one says about itself.
//!
//! The recording is an ordinary encrypted attachment (an Ogg Opus stream, sent and received
//! through [`crate::files::transfer`]); this module owns the voice metadata that travels with
//! it ([`VoiceInfo`]: duration and waveform) and the content fields that make clients draw a
//! voice message rather than an audio file.
//!
//! The shape is the one [MSC3245] (voice messages on [MSC1767] extensible events, waveform as
//! [MSC3246]) gives and Element sends (element-web `src/utils/createVoiceMessageContent.ts`):
//!
//! - `msgtype` `m.audio`, `body` and `org.matrix.msc1767.text` both `Voice message`;
//! - `info`: `mimetype` `audio/ogg`, `size` (bytes) and `duration` (ms);
//! - `org.matrix.msc1767.audio`: `duration` (ms) and `waveform`, integers 0-1024 (MSC3246:
//!   between 30 and 120 of them; Element sends 100);
//! - `org.matrix.msc3245.voice`: `{}`, the rendering hint that says "voice";
//! - `file`: the encrypted file object of every attachment.
//!
//! Element also repeats the file as `org.matrix.msc1767.file`; MSC3245 does not need it
//! (clients read the `file` of `m.audio`), and a second copy of the key and URL would not fit
//! the event a token holds, so it is left out.
//!
//! [MSC3245]: https://github.com/matrix-org/matrix-spec-proposals/pull/3245
//! [MSC1767]: https://github.com/matrix-org/matrix-spec-proposals/pull/1767
//! [MSC3246]: https://github.com/matrix-org/matrix-spec-proposals/pull/3246

use heapless::Vec;

use crate::json::{JsonError, JsonObject, JsonValue, JsonWriter};

/// The most waveform values sent (Element's count).
pub const WAVEFORM_LEN: usize = 100;
/// The fewest waveform values MSC3246 asks for: a waveform is thinned down to no fewer when
/// the event would not fit otherwise.
pub const MIN_WAVEFORM_LEN: usize = 30;
/// The largest waveform value.
pub const WAVEFORM_MAX: u16 = 1024;
/// The `body` and `org.matrix.msc1767.text` of a voice message (Element's words).
pub const VOICE_BODY: &str = "Voice message";
/// The MIME type of a voice message: Ogg Opus.
pub const VOICE_MIME_TYPE: &str = "audio/ogg";

/// What a voice message's event says besides its file: how long it plays and the waveform
/// clients draw.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VoiceInfo {
    /// How long it plays, in milliseconds.
    pub duration_ms: u32,
    /// Loudness over time, each value 0-[`WAVEFORM_MAX`] (larger values are sent as the
    /// maximum).
    pub waveform: Vec<u16, WAVEFORM_LEN>,
}

impl VoiceInfo {
    /// A voice message of `duration_ms` whose waveform is the first [`WAVEFORM_LEN`] values
    /// of `waveform`.
    pub fn new(duration_ms: u32, waveform: &[u16]) -> Self {
        VoiceInfo {
            duration_ms,
            waveform: waveform
                .iter()
                .take(WAVEFORM_LEN)
                .map(|v| (*v).min(WAVEFORM_MAX))
                .collect(),
        }
    }

    /// The waveform at half the resolution (the louder of each pair, so that no peak is
    /// lost), or `None` when that would leave fewer than [`MIN_WAVEFORM_LEN`] values.
    pub fn thinned(&self) -> Option<Self> {
        if self.waveform.len().div_ceil(2) < MIN_WAVEFORM_LEN {
            return None;
        }
        Some(VoiceInfo {
            duration_ms: self.duration_ms,
            waveform: self
                .waveform
                .chunks(2)
                .map(|pair| pair.iter().copied().max().unwrap_or_default())
                .collect(),
        })
    }
}

/// Writes the voice fields that follow `msgtype` in a voice message's content (keys sorted):
/// `org.matrix.msc1767.audio`, `org.matrix.msc1767.text`, `org.matrix.msc3245.voice`.
pub(crate) fn write_voice_fields(
    w: &mut JsonWriter<'_>,
    voice: &VoiceInfo,
) -> Result<(), JsonError> {
    w.raw(br#","org.matrix.msc1767.audio":{"duration":"#)?
        .integer(voice.duration_ms.into())?
        .raw(br#","waveform":["#)?;
    for (i, value) in voice.waveform.iter().enumerate() {
        if i > 0 {
            w.raw(b",")?;
        }
        w.integer((*value).into())?;
    }
    w.raw(br#"]},"org.matrix.msc1767.text":"#)?
        .string(VOICE_BODY)?
        .raw(br#","org.matrix.msc3245.voice":{}"#)?;
    Ok(())
}

/// The duration in milliseconds of a received event's content if it is a voice message
/// (`m.audio` with `org.matrix.msc3245.voice`): `org.matrix.msc1767.audio.duration`, else
/// `info.duration`, else 0 (a voice message that does not say).
pub(crate) fn received_duration(content: &JsonObject<'_>) -> Option<u32> {
    let voice = matches!(
        content.get("org.matrix.msc3245.voice"),
        Some(JsonValue::Object(_))
    );
    let audio = content.string("msgtype").and_then(|m| m.plain()) == Some("m.audio");
    if !(voice && audio) {
        return None;
    }
    let duration_of = |object: Option<JsonObject<'_>>| match object?.get("duration")? {
        JsonValue::Other(n) => core::str::from_utf8(n).ok()?.parse::<u32>().ok(),
        _ => None,
    };
    Some(
        duration_of(content.object("org.matrix.msc1767.audio"))
            .or_else(|| duration_of(content.object("info")))
            .unwrap_or(0),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::files::attachment::{AttachmentKey, FileDescription, write_file_content};

    /// The recording of the Cortex-M tier's speech clip (tests/cortex-m/fixtures/
    /// voice-clip.raw) by jeton-voice: 2,546 ms, 4,255 bytes of Ogg Opus, this waveform.
    const CLIP_MS: u32 = 2546;
    const CLIP_OGG_BYTES: u64 = 4255;
    const CLIP_WAVEFORM: [u16; 100] = [
        116, 116, 116, 538, 538, 521, 521, 521, 304, 304, 228, 228, 228, 48, 48, 74, 74, 74, 527,
        527, 258, 258, 726, 726, 726, 674, 674, 476, 476, 476, 62, 62, 133, 133, 133, 124, 124, 0,
        0, 0, 0, 0, 89, 89, 138, 138, 138, 387, 387, 319, 319, 319, 145, 145, 76, 76, 76, 0, 0, 0,
        0, 448, 448, 448, 469, 469, 128, 128, 128, 259, 259, 375, 375, 375, 248, 248, 392, 392,
        392, 286, 286, 126, 126, 78, 78, 78, 71, 71, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ];

    fn content(
        voice: &VoiceInfo,
        url: &str,
        buf: &mut [u8],
    ) -> Result<serde_json::Value, JsonError> {
        let key =
            AttachmentKey::from_bytes([7; 32], [9, 9, 9, 9, 9, 9, 9, 9, 0, 0, 0, 0, 0, 0, 0, 0]);
        let description = FileDescription {
            name: "voice-message.ogg",
            mimetype: VOICE_MIME_TYPE,
            size: CLIP_OGG_BYTES,
            url,
            voice: Some(voice),
        };
        let mut w = JsonWriter::new(buf);
        write_file_content(&mut w, &description, &key, &[3; 32])?;
        Ok(serde_json::from_slice(w.as_bytes()).unwrap())
    }

    #[test]
    fn a_voice_message_carries_every_field_element_sends() {
        let voice = VoiceInfo::new(CLIP_MS, &CLIP_WAVEFORM);
        let mut buf = [0u8; crate::matrix::MAX_CONTENT_LEN];
        let content = content(&voice, "mxc://localhost/VoIcE", &mut buf).unwrap();
        let waveform: std::vec::Vec<u16> = CLIP_WAVEFORM.to_vec();
        assert_eq!(content["msgtype"], "m.audio");
        assert_eq!(content["body"], "Voice message");
        assert_eq!(content["org.matrix.msc1767.text"], "Voice message");
        assert_eq!(
            content["info"],
            serde_json::json!({"mimetype": "audio/ogg", "size": 4255, "duration": 2546})
        );
        assert_eq!(
            content["org.matrix.msc1767.audio"],
            serde_json::json!({"duration": 2546, "waveform": waveform})
        );
        assert_eq!(content["org.matrix.msc3245.voice"], serde_json::json!({}));
        let file = &content["file"];
        assert_eq!(file["url"], "mxc://localhost/VoIcE");
        assert_eq!(file["v"], "v2");
        assert_eq!(file["key"]["alg"], "A256CTR");
        assert_eq!(
            file["hashes"]["sha256"],
            "AwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwM"
        );
        assert_eq!(content.as_object().unwrap().len(), 7, "{content}");
        // What this token reads back from it.
        let text = serde_json::to_vec(&content).unwrap();
        assert_eq!(
            received_duration(&JsonObject::parse(&text).unwrap()),
            Some(CLIP_MS)
        );
    }

    #[test]
    fn the_loudest_waveform_fits_once_thinned() {
        let loud = VoiceInfo::new(3_600_000, &[WAVEFORM_MAX; WAVEFORM_LEN]);
        let url = "mxc://a-homeserver-with-a-rather-long-name.example.org/AbCdEfGhIjKlMnOpQrStUvWx";
        let mut buf = [0u8; crate::matrix::MAX_CONTENT_LEN];
        assert_eq!(
            content(&loud, url, &mut buf).unwrap_err(),
            JsonError::BufferTooSmall
        );
        let thinned = loud.thinned().unwrap();
        let content = content(&thinned, url, &mut buf).unwrap();
        assert_eq!(
            content["org.matrix.msc1767.audio"]["waveform"]
                .as_array()
                .unwrap()
                .len(),
            50
        );
    }

    #[test]
    fn thinning_keeps_the_peaks_and_stops_at_thirty() {
        let voice = VoiceInfo::new(1000, &[0, 7, 1024, 3, 9, 2000]);
        assert_eq!(voice.waveform, [0, 7, 1024, 3, 9, 1024]);
        assert_eq!(voice.thinned(), None);
        let long = VoiceInfo::new(5000, &[1; 120]);
        assert_eq!(long.waveform.len(), 100);
        let half = long.thinned().unwrap();
        assert_eq!(half.waveform.len(), 50);
        assert_eq!(half.thinned(), None, "25 values would be fewer than 30");
        let peaks: std::vec::Vec<u16> =
            (0..100).map(|i| if i % 2 == 1 { 900 } else { 1 }).collect();
        assert!(
            VoiceInfo::new(1, &peaks)
                .thinned()
                .unwrap()
                .waveform
                .iter()
                .all(|v| *v == 900)
        );
    }

    #[test]
    fn received_voice_messages_are_told_from_audio_files() {
        let duration = |json: &str| received_duration(&JsonObject::parse(json.as_bytes()).unwrap());
        let voice = r#"{"msgtype":"m.audio","org.matrix.msc3245.voice":{},"info":{"duration":999},"org.matrix.msc1767.audio":{"duration":2840,"waveform":[1]}}"#;
        assert_eq!(duration(voice), Some(2840));
        let info_only =
            r#"{"msgtype":"m.audio","org.matrix.msc3245.voice":{},"info":{"duration":1500}}"#;
        assert_eq!(duration(info_only), Some(1500));
        assert_eq!(
            duration(r#"{"msgtype":"m.audio","org.matrix.msc3245.voice":{}}"#),
            Some(0)
        );
        assert_eq!(
            duration(r#"{"msgtype":"m.audio","info":{"duration":1500}}"#),
            None
        );
        assert_eq!(
            duration(r#"{"msgtype":"m.file","org.matrix.msc3245.voice":{}}"#),
            None
        );
    }
}
