//! File transfers of the Matrix client: the one file being sent or received, driven block by
//! block as an operation of the token ([`crate::files`] does the cryptography and storage).
//!
//! Sending: the file is encrypted block by block from the platform's [`FileStore`](crate::files::FileStore) and
//! uploaded with Block1 (`POST /Mu`, Content-Format 42), each block produced only when the
//! previous one was taken; then its `m.file` (or `m.image`, `m.audio`, `m.video`) content goes
//! into the outbox like a text and is sent Megolm-encrypted. Receiving: an encrypted event
//! carrying a `file` object starts a download (`GET /Md/...`, Block2 delivered block by block)
//! into a temporary file; only when the SHA-256 checked out is it decrypted and stored.
//!
//! One transfer at a time; a second file received meanwhile is refused with
//! [`FileError::Busy`] (the user sees [`UiEvent::FileFailed`]). Transfers live in RAM: a power
//! cut abandons them, and the platform discards their temporary files at boot. This module
//! owns the transfer in progress and the largest upload the homeserver takes
//! (`m.upload.size`, asked once before the first upload).

use heapless::String;

use jeton_proto::TableVersion;
use jeton_proto::path::endpoint;
use jeton_proto::view::Value;

use super::requests::Sent;
use super::*;
use crate::coap::BodyDelivery;
use crate::coap::option::BlockValue;
use crate::files::attachment::{EncryptedFile, FileDescription, write_file_content};
use crate::files::transfer::{Download, Upload};
use crate::files::{FileError, MAX_FILE_NAME, MAX_MIME_TYPE};
use crate::json::{JsonObject, JsonWriter};

/// The Content-Format of an encrypted attachment: `application/octet-stream`.
const OCTET_STREAM: u8 = 42;
/// A transfer of more blocks than this reports its progress.
const PROGRESS_AFTER_BLOCKS: u64 = 4;
/// Progress is reported every this many blocks.
const PROGRESS_EVERY_BLOCKS: u64 = 16;
/// A download whose exchange failed is resumed; after this many failures in a row without a
/// block arriving, it is abandoned.
const DOWNLOAD_ATTEMPTS: u8 = 3;
/// An upload whose blocks the gateway lost (4.08, a restarted gateway) starts over at most
/// this many times.
const UPLOAD_RESTARTS: u8 = 2;
/// The marker that starts an outbox entry holding a whole event content (a file's) rather
/// than a text. A control character, which [`Core::enqueue`] refuses in a text.
pub(super) const CONTENT_MARKER: char = '\u{1}';

/// The one file transfer of the token.
#[derive(Debug)]
// No heap to box the larger variant into, and only one transfer exists: its size is the cost.
#[allow(clippy::large_enum_variant)]
pub(super) enum Transfer {
    Upload {
        upload: Upload,
        room_id: RoomId,
        name: String<MAX_FILE_NAME>,
        mimetype: String<MAX_MIME_TYPE>,
        next_block: u32,
        restarts: u8,
        /// Set for a recorded voice message.
        #[cfg(feature = "voice")]
        voice: Option<crate::files::voice::VoiceInfo>,
    },
    Download {
        download: Download,
        room_id: RoomId,
        sender: UserId,
        total: u64,
        started: bool,
        attempts: u8,
        /// A voice message's duration in milliseconds.
        #[cfg(feature = "voice")]
        voice_ms: Option<u32>,
    },
}

/// The file transfer and what the token learned about media.
pub(super) struct Transfers {
    /// The file being sent or received.
    current: Option<Transfer>,
    /// The largest upload the gateway and homeserver take (`m.upload.size`), once asked.
    media_limit: Option<u64>,
}

impl Transfers {
    /// No transfer; the media limit not asked yet.
    pub(super) const fn new() -> Self {
        Transfers {
            current: None,
            media_limit: None,
        }
    }

    /// Whether a file is being sent or received.
    pub(super) fn is_busy(&self) -> bool {
        self.current.is_some()
    }

    /// The homeserver has no media config (an older one): the token's own limit is the one.
    pub(super) fn no_media_config(&mut self) {
        self.media_limit = Some(crate::files::MAX_FILE_SIZE);
    }
}

impl Transfer {
    fn name(&self) -> &str {
        match self {
            Transfer::Upload { name, .. } => name,
            Transfer::Download { download, .. } => &download.name,
        }
    }
}

/// The file name of a path (what the event's `body` says).
fn base_name(path: &str) -> &str {
    path.rsplit(['/', '\\']).next().unwrap_or(path)
}

impl<R: Rng, S: Store, U: Ui> Core<R, S, U> {
    fn block_size(&self) -> usize {
        1usize << (self.env.settings.coap.block_szx.min(6) + 4)
    }

    /// Starts sending the file at `path` to `room_id`.
    pub(super) fn start_file_upload(
        &mut self,
        room_id: &str,
        path: &str,
        mimetype: &str,
    ) -> Result<(), CommandError> {
        if self.login.is_none() {
            return Err(CommandError::NotLoggedIn);
        }
        let Some(slot) = self.room_slot(room_id) else {
            return Err(CommandError::UnknownRoom);
        };
        if !self.rooms.is_encrypted(slot) {
            return Err(TokenError::File(FileError::UnencryptedRoom).into());
        }
        if self.transfer.current.is_some() {
            return Err(TokenError::File(FileError::Busy).into());
        }
        let name: String<MAX_FILE_NAME> =
            String::try_from(base_name(path)).map_err(|_| TokenError::File(FileError::BadName))?;
        let mimetype: String<MAX_MIME_TYPE> =
            String::try_from(mimetype).map_err(|_| TokenError::File(FileError::BadName))?;
        let files = self.env.flash.store.files().ok_or(FileError::Unsupported)?;
        let upload = Upload::start(files, path, &mut self.env.rng)?;
        self.transfer.current = Some(Transfer::Upload {
            upload,
            room_id: bounded(room_id)?,
            name,
            mimetype,
            next_block: 0,
            restarts: 0,
            #[cfg(feature = "voice")]
            voice: None,
        });
        Ok(())
    }

    /// Starts sending the recorded voice message (an Ogg Opus) at `path` to `room_id`: a file
    /// upload whose event carries `voice`.
    #[cfg(feature = "voice")]
    pub(super) fn start_voice_upload(
        &mut self,
        room_id: &str,
        path: &str,
        info: crate::files::voice::VoiceInfo,
    ) -> Result<(), CommandError> {
        self.start_file_upload(room_id, path, crate::files::voice::VOICE_MIME_TYPE)?;
        if let Some(Transfer::Upload { voice, .. }) = &mut self.transfer.current {
            *voice = Some(info);
        }
        Ok(())
    }

    /// Starts receiving the file an encrypted event described, if it is one (`content` is the
    /// decrypted event's content). Returns whether it was a file.
    pub(super) fn on_file_event(
        &mut self,
        room_id: &str,
        sender: &str,
        content: &JsonObject<'_>,
    ) -> bool {
        let Some(file) = content.object("file") else {
            return false;
        };
        let msgtype = content.string("msgtype").and_then(|m| m.plain());
        if !matches!(msgtype, Some("m.file" | "m.image" | "m.audio" | "m.video")) {
            return false;
        }
        let mut name_buf = [0u8; MAX_FILE_NAME * 2];
        let name = content
            .string("body")
            .and_then(|b| b.unescape(&mut name_buf).ok())
            .unwrap_or("file");
        let info = content.object("info");
        let mimetype = info
            .and_then(|i| i.string("mimetype"))
            .and_then(|m| m.plain())
            .unwrap_or("application/octet-stream");
        let size = info.and_then(|i| match i.get("size") {
            Some(crate::json::JsonValue::Other(n)) => core::str::from_utf8(n)
                .ok()
                .and_then(|n| n.parse::<u64>().ok()),
            _ => None,
        });
        let started = (|| {
            if self.transfer.current.is_some() {
                return Err(FileError::Busy);
            }
            let file = EncryptedFile::parse(&file)?;
            let files = self.env.flash.store.files().ok_or(FileError::Unsupported)?;
            let download = Download::start(files, file, name, mimetype, size)?;
            Ok(Transfer::Download {
                download,
                room_id: bounded(room_id).map_err(|_| FileError::BadAttachment)?,
                sender: bounded(sender).map_err(|_| FileError::BadAttachment)?,
                total: size.unwrap_or(0),
                started: false,
                attempts: 0,
                #[cfg(feature = "voice")]
                voice_ms: crate::files::voice::received_duration(content),
            })
        })();
        match started {
            Ok(transfer) => self.transfer.current = Some(transfer),
            Err(error) => self.env.ui.event(&UiEvent::FileFailed { error, name }),
        }
        true
    }

    /// Queues the transfer's next request, if it has one.
    pub(super) fn plan_transfer(&mut self, coap: &mut Coap) -> Result<(), TokenError> {
        let block_size = self.block_size();
        let szx = self.env.settings.coap.block_szx.min(6);
        match &mut self.transfer.current {
            None => Ok(()),
            Some(Transfer::Upload { .. }) if self.transfer.media_limit.is_none() => {
                // Learn the largest upload once, before the first.
                let sent = self.request(coap, Code::GET, &[endpoint::MEDIA_CONFIG], &[], 0)?;
                self.operation.begin(sent, Operation::MediaConfig);
                Ok(())
            }
            Some(Transfer::Upload { upload, .. })
                if self
                    .transfer
                    .media_limit
                    .is_some_and(|limit| upload.size() > limit) =>
            {
                self.abandon_transfer(FileError::TooLarge)
            }
            Some(Transfer::Upload {
                upload, next_block, ..
            }) => {
                let num = *next_block;
                let files = self.env.flash.store.files().ok_or(FileError::Unsupported)?;
                let block = self.env.work.get_mut(..block_size).unwrap_or_default();
                let len = upload.next_block(files, block)?;
                let more = !upload.is_complete();
                let only = num == 0 && !more;
                let block1 = (!only).then_some(BlockValue { num, more, szx });
                let sent = self.media_request(
                    coap,
                    Code::POST,
                    &[endpoint::MEDIA_UPLOAD],
                    len,
                    block1,
                    BodyDelivery::Whole,
                )?;
                self.operation
                    .begin(sent, Operation::FileBlock { last: !more });
                Ok(())
            }
            Some(Transfer::Download {
                download, started, ..
            }) if !*started => {
                *started = true;
                let (server, media_id) = download
                    .url()
                    .trim_start_matches("mxc://")
                    .split_once('/')
                    .ok_or(FileError::BadAttachment)?;
                let server: String<MAX_URL_PART> = bounded(server)?;
                let media_id: String<MAX_URL_PART> = bounded(media_id)?;
                // After a lost link: on from the block where the stored ciphertext ends.
                let num = u32::try_from(download.received() / block_size as u64)
                    .map_err(|_| FileError::TooLarge)?;
                let resume = (num > 0).then_some(BlockValue {
                    num,
                    more: false,
                    szx,
                });
                let sent = self.media_request(
                    coap,
                    Code::GET,
                    &[endpoint::MEDIA_DOWNLOAD, &server, &media_id],
                    0,
                    resume,
                    BodyDelivery::Streamed,
                )?;
                self.operation.begin(sent, Operation::FileDownload);
                Ok(())
            }
            Some(Transfer::Download { .. }) => Ok(()),
        }
    }

    /// A media request: the body (a block of ciphertext in `work`) is raw bytes, and the
    /// answer's Matrix body comes back as CBOR.
    fn media_request(
        &mut self,
        coap: &mut Coap,
        method: Code,
        path: &[&str],
        body_len: usize,
        block: Option<BlockValue>,
        delivery: BodyDelivery,
    ) -> Result<Sent, TokenError> {
        let shape = RequestShape {
            content_format: (method == Code::POST).then_some(OCTET_STREAM),
            block1: block.filter(|_| method == Code::POST),
            block2_start: block.filter(|_| method == Code::GET),
            delivery,
            capacity: false,
        };
        self.request_shaped(coap, method, path, &[], body_len, shape)
    }

    /// The media config: `m.upload.size`, the largest upload that goes through.
    pub(super) fn on_media_config(&mut self, body: &[u8]) -> Result<(), TokenError> {
        let advertised = match Value::parse(body, TableVersion::V2)? {
            Value::Map(map) => match map.get("m.upload.size")? {
                Some(Value::Integer(size)) => u64::try_from(size).ok(),
                _ => None,
            },
            _ => None,
        };
        let limit = advertised.unwrap_or(crate::files::MAX_FILE_SIZE);
        self.transfer.media_limit = Some(limit.min(crate::files::MAX_FILE_SIZE));
        Ok(())
    }

    /// The answer to an upload block.
    pub(super) fn on_file_block(&mut self, last: bool, body: &[u8]) -> Result<(), TokenError> {
        let block_size = self.block_size() as u64;
        let Some(Transfer::Upload {
            upload,
            next_block,
            name,
            ..
        }) = &mut self.transfer.current
        else {
            return Ok(());
        };
        if !last {
            *next_block += 1;
            let (done, total) = (upload.offset(), upload.size());
            if total > PROGRESS_AFTER_BLOCKS * block_size
                && u64::from(*next_block) % PROGRESS_EVERY_BLOCKS == 0
            {
                self.env.ui.event(&UiEvent::FileProgress {
                    sending: true,
                    done,
                    total,
                    name,
                });
            }
            return Ok(());
        }
        self.finish_upload(body)
    }

    /// The answer to an upload's last block: the file's event content (where the homeserver
    /// keeps it, its key and hash) goes into the outbox, and the person sees it uploaded.
    fn finish_upload(&mut self, body: &[u8]) -> Result<(), TokenError> {
        let Some(Transfer::Upload {
            upload,
            room_id,
            name,
            mimetype,
            #[cfg(feature = "voice")]
            voice,
            ..
        }) = self.transfer.current.take()
        else {
            return Ok(());
        };
        let size = upload.size();
        let files = self.env.flash.store.files().ok_or(FileError::Unsupported)?;
        let (key, sha256) = upload.finish(files);
        let Value::Map(map) = Value::parse(body, TableVersion::V2)? else {
            return Err(FileError::Incomplete.into());
        };
        let Some(Value::Text(url)) = map.get("content_uri")? else {
            return Err(FileError::Incomplete.into());
        };
        let mut content = [0u8; MAX_CONTENT_LEN];
        #[cfg(feature = "voice")]
        let written = {
            let mut voice = voice;
            loop {
                let description = FileDescription {
                    name: &name,
                    mimetype: &mimetype,
                    size,
                    url,
                    voice: voice.as_ref(),
                };
                match content_json(&mut content, &description, &key, &sha256) {
                    // A waveform too long for the event a token holds: drawn coarser.
                    Err(crate::json::JsonError::BufferTooSmall)
                        if voice.as_ref().and_then(|v| v.thinned()).is_some() =>
                    {
                        voice = voice.as_ref().and_then(|v| v.thinned());
                    }
                    written => break written,
                }
            }
        };
        #[cfg(not(feature = "voice"))]
        let written = content_json(
            &mut content,
            &FileDescription {
                name: &name,
                mimetype: &mimetype,
                size,
                url,
            },
            &key,
            &sha256,
        );
        let len = match written {
            Ok(len) => len,
            Err(error) => {
                content.fill(0);
                return Err(error.into());
            }
        };
        let text = core::str::from_utf8(content.get(..len).unwrap_or_default())
            .map_err(|_| FileError::BadName)?;
        let local_id = self.enqueue_content(&room_id, text);
        content.fill(0);
        let local_id = local_id.map_err(|error| match error {
            CommandError::Failed(error) => error,
            _ => TokenError::File(FileError::Incomplete),
        })?;
        self.env.ui.event(&UiEvent::FileUploaded {
            local_id,
            size,
            name: &name,
        });
        Ok(())
    }

    /// One block of a download.
    pub(super) fn on_download_block(
        &mut self,
        size2: Option<u32>,
        offset: usize,
        body: &[u8],
        last: bool,
    ) -> Result<(), TokenError> {
        let block_size = self.block_size() as u64;
        let Some(Transfer::Download {
            download,
            total,
            attempts,
            ..
        }) = &mut self.transfer.current
        else {
            return Ok(());
        };
        // A block arrived: the link works again.
        *attempts = 0;
        let files = self.env.flash.store.files().ok_or(FileError::Unsupported)?;
        let absorbed = (|| {
            if offset == 0
                && let Some(size) = size2
            {
                *total = u64::from(size);
                download.expect_total(files, *total)?;
            }
            download.absorb(files, offset as u64, body)
        })();
        if let Err(error) = absorbed {
            return self.abandon_transfer(error);
        }
        let done = download.received();
        if !last {
            let total = (*total).max(done);
            if total > PROGRESS_AFTER_BLOCKS * block_size
                && (done / block_size).is_multiple_of(PROGRESS_EVERY_BLOCKS)
            {
                let name = &download.name;
                self.env.ui.event(&UiEvent::FileProgress {
                    sending: false,
                    done,
                    total,
                    name,
                });
            }
            return Ok(());
        }
        self.operation.end();
        self.finish_download()
    }

    /// A download's last block is in: the file is checked and stored, and the person sees it
    /// received (or why it failed).
    fn finish_download(&mut self) -> Result<(), TokenError> {
        let Some(Transfer::Download {
            download,
            room_id,
            sender,
            #[cfg(feature = "voice")]
            voice_ms,
            ..
        }) = self.transfer.current.take()
        else {
            return Ok(());
        };
        let name = download.name.clone();
        let files = self.env.flash.store.files().ok_or(FileError::Unsupported)?;
        match download.finish(files, &mut self.env.work) {
            Ok(file) => {
                self.env.ui.event(&UiEvent::FileReceived {
                    room_id: &room_id,
                    sender: &sender,
                    size: file.size,
                    mimetype: &file.mimetype,
                    name: &file.name,
                });
                #[cfg(feature = "voice")]
                if let Some(duration_ms) = voice_ms {
                    self.env.ui.event(&UiEvent::VoiceReceived {
                        room_id: &room_id,
                        sender: &sender,
                        duration_ms,
                        name: &file.name,
                    });
                }
            }
            Err(error) => self
                .env
                .ui
                .event(&UiEvent::FileFailed { error, name: &name }),
        }
        Ok(())
    }

    /// The transfer's exchange failed or was refused.
    pub(super) fn on_transfer_failed(&mut self, refused: Option<Code>) {
        let transient = refused.is_none_or(is_busy);
        match &mut self.transfer.current {
            Some(Transfer::Upload { upload, .. }) if transient => {
                // Sent again after the back-off, with the same ciphertext.
                upload.repeat_last_block();
            }
            Some(Transfer::Upload {
                upload,
                next_block,
                restarts,
                ..
            }) if refused.map(code_number) == Some(408) && *restarts < UPLOAD_RESTARTS => {
                upload.restart();
                *next_block = 0;
                *restarts += 1;
            }
            Some(Transfer::Download {
                started, attempts, ..
            }) if transient && *attempts + 1 < DOWNLOAD_ATTEMPTS => {
                // Asked again from the block where the stored ciphertext ends.
                *attempts += 1;
                *started = false;
            }
            Some(_) => {
                let error = match refused.map(code_number) {
                    Some(404) => FileError::NotFound,
                    // The gateway's or the homeserver's media limit.
                    Some(413) => FileError::TooLarge,
                    _ => FileError::Incomplete,
                };
                let _ = self.abandon_transfer(error);
            }
            None => {}
        }
    }

    /// Ends the transfer, deleting what it stored, and tells the user why.
    fn abandon_transfer(&mut self, error: FileError) -> Result<(), TokenError> {
        self.operation.end();
        let Some(transfer) = self.transfer.current.take() else {
            return Ok(());
        };
        let name: String<MAX_FILE_NAME> = String::try_from(transfer.name()).unwrap_or_default();
        if let Some(files) = self.env.flash.store.files() {
            match transfer {
                Transfer::Upload { upload, .. } => upload.abandon(files),
                Transfer::Download { download, .. } => download.abandon(files),
            }
        }
        self.env
            .ui
            .event(&UiEvent::FileFailed { error, name: &name });
        Ok(())
    }
}

/// Whether `code` asks to try again later (5.03, 4.29: the gateway or the homeserver is busy
/// for now): a block so refused is sent again after the back-off, like one whose exchange
/// failed, and the person is not told of it.
pub(super) fn is_busy(code: Code) -> bool {
    matches!(code_number(code), 429 | 503)
}

/// Writes the outbox entry of an uploaded file's event into `out`: the content marker, then
/// the event's content. Its length.
fn content_json(
    out: &mut [u8],
    file: &FileDescription<'_>,
    key: &crate::files::attachment::AttachmentKey,
    sha256: &[u8; crate::files::attachment::HASH_LEN],
) -> Result<usize, crate::json::JsonError> {
    let mut w = JsonWriter::new(out);
    w.raw(&[CONTENT_MARKER as u8])?;
    write_file_content(&mut w, file, key, sha256)?;
    Ok(w.len())
}

/// The longest server name or media id of an `mxc://` URL.
const MAX_URL_PART: usize = 128;
