//! Files: end-to-end encrypted attachments, streamed block by block between the CoAP link and
//! the platform's file storage, never held whole in RAM.
//!
//! This module owns what a token needs to share a file the way every Matrix client does
//! ([Matrix spec, "Sending encrypted attachments"]): the AES-256-CTR and SHA-256 pipeline of
//! [`attachment`], the `file` object of an `m.file` / `m.image` / `m.audio` / `m.video` event,
//! the platform trait [`FileStore`] the bytes go through, its limits, and the receiving
//! pipeline of [`transfer`] that checks the ciphertext's SHA-256 before a single byte is
//! decrypted, and stores a file only once it is complete. With the `voice` feature, [`voice`]
//! owns what a voice message's event adds to a file's.
//!
//! # Crash safety
//!
//! A received file is written to a temporary file and committed (an atomic rename on a
//! filesystem) only once its hash checked out and all of it was decrypted, so a power cut
//! or a lost link leaves no half-written file that looks complete: [`FileStore`] implementers
//! discard temporary files at boot. A download cut by a lost link resumes at the block where
//! its stored ciphertext ends (CoAP Block2 from that block on); an upload sends its last block
//! again. A power cut abandons the transfer cleanly: nothing half-written remains, and no event
//! of a half-uploaded file is sent.
//!
//! [Matrix spec, "Sending encrypted attachments"]: https://spec.matrix.org/latest/client-server-api/#sending-encrypted-attachments

pub mod attachment;
mod storage;
pub mod transfer;
#[cfg(feature = "voice")]
pub mod voice;

pub use storage::*;
