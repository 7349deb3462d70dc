//! The cryptography of an encrypted attachment: AES-256-CTR under a fresh key and IV, SHA-256 of
//! the ciphertext, and the `file` object (a JWK key, the IV, the hash, the `mxc://` URL, `v2`)
//! that travels inside the end-to-end encrypted event.
//!
//! Both directions stream: [`Encryptor`] and [`Decryptor`] take one block at a time, and
//! [`CiphertextHash`] checks the hash of a ciphertext that went by in blocks, in constant time.

use core::fmt;

use aes::Aes256;
use base64ct::{Base64UrlUnpadded, Encoding};
use ctr::Ctr128BE;
use ctr::cipher::{KeyIvInit, StreamCipher, StreamCipherSeek};
use heapless::String;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop};

use super::FileError;
use crate::json::{JsonError, JsonObject, JsonWriter};
use crate::platform::Rng;

/// AES-256 key bytes.
pub const KEY_LEN: usize = 32;
/// AES-CTR IV bytes: 8 random bytes, then a 64-bit block counter that starts at zero.
pub const IV_LEN: usize = 16;
/// SHA-256 bytes.
pub const HASH_LEN: usize = 32;
/// The longest `mxc://` URL kept.
pub const MAX_URL: usize = 255;

type Aes256Ctr = Ctr128BE<Aes256>;

/// The key and IV of one attachment. Zeroized on drop; `Debug` prints neither.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct AttachmentKey {
    key: [u8; KEY_LEN],
    iv: [u8; IV_LEN],
}

impl fmt::Debug for AttachmentKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AttachmentKey(<redacted>)")
    }
}

impl AttachmentKey {
    /// A fresh key and IV from the platform's RNG. The IV's low 8 bytes (the block counter)
    /// are zero, as the specification and every client do, so a file of any size never wraps
    /// the counter into the random half.
    pub fn generate(rng: &mut impl Rng) -> Self {
        let mut key = AttachmentKey {
            key: [0; KEY_LEN],
            iv: [0; IV_LEN],
        };
        rng.fill_bytes(&mut key.key);
        if let Some(random) = key.iv.get_mut(..8) {
            rng.fill_bytes(random);
        }
        key
    }

    /// A key from its bytes (tests, and the `file` object of a received event).
    pub fn from_bytes(key: [u8; KEY_LEN], iv: [u8; IV_LEN]) -> Self {
        AttachmentKey { key, iv }
    }

    /// The cipher positioned at byte `offset` of the file.
    fn cipher_at(&self, offset: u64) -> Aes256Ctr {
        let mut cipher = Aes256Ctr::new(&self.key.into(), &self.iv.into());
        cipher.seek(offset);
        cipher
    }
}

/// Encrypts a file block by block and hashes the ciphertext on the way. The AES key schedule
/// lives on the stack for one block only (positioned by seeking the counter), so a transfer in
/// progress holds no more than the hash state.
pub struct Encryptor {
    hash: Sha256,
    /// The hash before the last block, so that a block can be encrypted again (sent again
    /// after its exchange failed) without hashing it twice.
    before_last: Sha256,
    offset: u64,
    last_len: usize,
}

impl Default for Encryptor {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for Encryptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Encryptor")
            .field("offset", &self.offset)
            .finish_non_exhaustive()
    }
}

impl Encryptor {
    /// An encryptor at the start of the file.
    pub fn new() -> Self {
        Encryptor {
            hash: Sha256::new(),
            before_last: Sha256::new(),
            offset: 0,
            last_len: 0,
        }
    }

    /// Encrypts the next block in place under `key` and hashes it.
    pub fn encrypt(&mut self, key: &AttachmentKey, block: &mut [u8]) {
        self.before_last = self.hash.clone();
        key.cipher_at(self.offset).apply_keystream(block);
        self.hash.update(&*block);
        self.offset += block.len() as u64;
        self.last_len = block.len();
    }

    /// Forgets the last block: the next [`Encryptor::encrypt`] takes its plaintext again.
    pub fn rewind_last(&mut self) {
        self.offset -= self.last_len as u64;
        self.last_len = 0;
        self.hash = self.before_last.clone();
    }

    /// Plaintext bytes encrypted so far.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The SHA-256 of the whole ciphertext.
    pub fn finish(self) -> [u8; HASH_LEN] {
        self.hash.finalize().into()
    }
}

/// The SHA-256 of a ciphertext that arrives in blocks.
#[derive(Clone, Default)]
pub struct CiphertextHash(Sha256);

impl fmt::Debug for CiphertextHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CiphertextHash")
    }
}

impl CiphertextHash {
    /// Hashes the next block.
    pub fn update(&mut self, block: &[u8]) {
        self.0.update(block);
    }

    /// Whether the ciphertext is the one `expected` names (constant time).
    pub fn verify(self, expected: &[u8; HASH_LEN]) -> Result<(), FileError> {
        let actual: [u8; HASH_LEN] = self.0.finalize().into();
        if bool::from(actual.ct_eq(expected)) {
            Ok(())
        } else {
            Err(FileError::HashMismatch)
        }
    }
}

/// Decrypts a verified ciphertext block by block.
pub struct Decryptor(Aes256Ctr);

impl fmt::Debug for Decryptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Decryptor")
    }
}

impl Decryptor {
    /// A decryptor at the start of the file.
    pub fn new(key: &AttachmentKey) -> Self {
        Decryptor(key.cipher_at(0))
    }

    /// Decrypts the next block in place.
    pub fn decrypt(&mut self, block: &mut [u8]) {
        self.0.apply_keystream(block);
    }
}

/// The `file` object of a received event: where the ciphertext is and how to check and
/// decrypt it.
#[derive(Debug)]
pub struct EncryptedFile {
    /// The `mxc://` URL of the ciphertext.
    pub url: String<MAX_URL>,
    /// The key and IV.
    pub key: AttachmentKey,
    /// The ciphertext's SHA-256.
    pub sha256: [u8; HASH_LEN],
}

impl EncryptedFile {
    /// Reads a `file` object: `v` `v2`, a JWK `key` with `kty` `oct` and `alg` `A256CTR`, a
    /// 16-byte `iv`, `hashes.sha256` and an `mxc://` `url`.
    pub fn parse(file: &JsonObject<'_>) -> Result<Self, FileError> {
        fn text<'a>(object: &JsonObject<'a>, name: &str) -> Result<&'a str, FileError> {
            object
                .string(name)
                .and_then(|s| s.plain())
                .ok_or(FileError::BadAttachment)
        }
        if text(file, "v")? != "v2" {
            return Err(FileError::BadAttachment);
        }
        let url = text(file, "url")?;
        if !url.starts_with("mxc://") {
            return Err(FileError::BadAttachment);
        }
        let jwk = file.object("key").ok_or(FileError::BadAttachment)?;
        if text(&jwk, "kty")? != "oct" || text(&jwk, "alg")? != "A256CTR" {
            return Err(FileError::BadAttachment);
        }
        let mut key = [0u8; KEY_LEN];
        let k = text(&jwk, "k")?.trim_end_matches('=');
        let decoded =
            Base64UrlUnpadded::decode(k, &mut key).map_err(|_| FileError::BadAttachment)?;
        if decoded.len() != KEY_LEN {
            key.zeroize();
            return Err(FileError::BadAttachment);
        }
        let mut iv = [0u8; IV_LEN];
        let iv_len = jeton_olm::base64::decode(text(file, "iv")?.as_bytes(), &mut iv)
            .map_err(|_| FileError::BadAttachment)?
            .len();
        let mut sha256 = [0u8; HASH_LEN];
        let hashes = file.object("hashes").ok_or(FileError::BadAttachment)?;
        let hash_len = jeton_olm::base64::decode(text(&hashes, "sha256")?.as_bytes(), &mut sha256)
            .map_err(|_| FileError::BadAttachment)?
            .len();
        let parsed = EncryptedFile {
            url: String::try_from(url).map_err(|_| FileError::BadAttachment)?,
            key: AttachmentKey::from_bytes(key, iv),
            sha256,
        };
        key.zeroize();
        if iv_len != IV_LEN || hash_len != HASH_LEN {
            return Err(FileError::BadAttachment);
        }
        Ok(parsed)
    }
}

/// The `msgtype` a file of this MIME type is sent as.
pub fn msgtype_for(mimetype: &str) -> &'static str {
    let major = mimetype.split('/').next().unwrap_or_default();
    match major {
        "image" => "m.image",
        "audio" => "m.audio",
        "video" => "m.video",
        _ => "m.file",
    }
}

/// The MIME type a file is sent with, from its name's extension (`application/octet-stream`
/// when the extension says nothing).
pub fn mime_type_of(name: &str) -> &'static str {
    const BY_EXTENSION: [(&str, &str); 13] = [
        ("txt", "text/plain"),
        ("pdf", "application/pdf"),
        ("png", "image/png"),
        ("jpg", "image/jpeg"),
        ("jpeg", "image/jpeg"),
        ("gif", "image/gif"),
        ("webp", "image/webp"),
        ("ogg", "audio/ogg"),
        ("opus", "audio/ogg"),
        ("mp3", "audio/mpeg"),
        ("wav", "audio/wav"),
        ("mp4", "video/mp4"),
        ("json", "application/json"),
    ];
    let extension = name.rsplit_once('.').map(|(_, e)| e).unwrap_or_default();
    BY_EXTENSION
        .iter()
        .find(|(known, _)| known.eq_ignore_ascii_case(extension))
        .map_or("application/octet-stream", |(_, mimetype)| mimetype)
}

/// What the event of a sent file says about it.
#[derive(Debug, Clone, Copy)]
pub struct FileDescription<'a> {
    /// The file name (the event's `body`).
    pub name: &'a str,
    /// Its MIME type.
    pub mimetype: &'a str,
    /// Its size in bytes (plaintext).
    pub size: u64,
    /// The `mxc://` URL of the ciphertext.
    pub url: &'a str,
    /// Set for a recorded voice message: its duration and waveform ([`super::voice`]).
    #[cfg(feature = "voice")]
    pub voice: Option<&'a super::voice::VoiceInfo>,
}

/// Writes the `content` of an `m.file` (or `m.image`, `m.audio`, `m.video`) event: `body` the
/// file name, `file` the encrypted file object, `info` the MIME type and size, keys sorted.
/// A voice message's adds its duration and waveform ([`super::voice`] has the shape).
pub fn write_file_content(
    w: &mut JsonWriter<'_>,
    file: &FileDescription<'_>,
    key: &AttachmentKey,
    sha256: &[u8; HASH_LEN],
) -> Result<(), JsonError> {
    let mut k = [0u8; 43];
    let k_text = Base64UrlUnpadded::encode(&key.key, &mut k).map_err(|_| JsonError::BufferTooSmall);
    #[cfg(feature = "voice")]
    let voice = file.voice;
    #[cfg(feature = "voice")]
    let body = voice.map_or(file.name, |_| super::voice::VOICE_BODY);
    #[cfg(not(feature = "voice"))]
    let body = file.name;
    let result = (|| {
        w.raw(br#"{"body":"#)?
            .string(body)?
            .raw(br#","file":{"hashes":{"sha256":"#)?
            .base64(sha256)?
            .raw(br#"},"iv":"#)?
            .base64(&key.iv)?
            .raw(br#","key":{"alg":"A256CTR","ext":true,"k":""#)?
            .raw(k_text?.as_bytes())?
            .raw(br#"","key_ops":["encrypt","decrypt"],"kty":"oct"},"url":"#)?
            .string(file.url)?
            .raw(br#","v":"v2"},"info":{"#)?;
        #[cfg(feature = "voice")]
        if let Some(voice) = voice {
            w.raw(br#""duration":"#)?
                .integer(voice.duration_ms.into())?
                .raw(b",")?;
        }
        w.raw(br#""mimetype":"#)?
            .string(file.mimetype)?
            .raw(br#","size":"#)?
            .integer(i64::try_from(file.size).map_err(|_| JsonError::Unsupported)?)?
            .raw(br#"},"msgtype":""#)?
            .raw(msgtype_for(file.mimetype).as_bytes())?
            .raw(b"\"")?;
        #[cfg(feature = "voice")]
        if let Some(voice) = voice {
            super::voice::write_voice_fields(w, voice)?;
        }
        w.raw(b"}")?;
        Ok(())
    })();
    k.zeroize();
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Made with Python's `cryptography` (OpenSSL's AES-CTR), an implementation independent of
    /// RustCrypto: key 00..1f, IV 0102030405060708 + 8 zero bytes, plaintext `i % 251` for
    /// i in 0..100.
    const VECTOR_CIPHERTEXT: &str = "656379d223f1536687f0dafb8dd223bbf4b051af45326c17259ccc9946cc11adaa3e0c93a932d34ca4e1fe7658d3e179919fd46b5f344240886187798363f2916b910b12bcaf8016e5e18b9d4f8d8c5306afda28e62df893a47eae3592135e8ad3642fa7";
    const VECTOR_SHA256: &str = "fqCKoRfs8meQr+gCzoD3/Z7EJO23NtTvCxfOuWewKP4";
    const VECTOR_K: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8";
    const VECTOR_IV: &str = "AQIDBAUGBwgAAAAAAAAAAA";

    fn vector_key() -> AttachmentKey {
        let mut key = [0u8; 32];
        for (i, b) in key.iter_mut().enumerate() {
            *b = i as u8;
        }
        AttachmentKey::from_bytes(key, [1, 2, 3, 4, 5, 6, 7, 8, 0, 0, 0, 0, 0, 0, 0, 0])
    }

    fn plaintext() -> Vec<u8> {
        (0..100u32).map(|i| (i % 251) as u8).collect()
    }

    fn hex(bytes: &[u8]) -> String<512> {
        let mut s = String::new();
        for b in bytes {
            let _ = core::fmt::Write::write_fmt(&mut s, format_args!("{b:02x}"));
        }
        s
    }

    #[test]
    fn encryption_in_blocks_matches_openssl_and_its_hash() {
        let key = vector_key();
        let mut data = plaintext();
        let mut encryptor = Encryptor::new();
        // Uneven blocks, and one encrypted twice after a rewind (a block sent again).
        let (a, rest) = data.split_at_mut(17);
        encryptor.encrypt(&key, a);
        let (b, c) = rest.split_at_mut(40);
        let original_b = b.to_vec();
        encryptor.encrypt(&key, b);
        b.copy_from_slice(&original_b);
        encryptor.rewind_last();
        encryptor.encrypt(&key, b);
        encryptor.encrypt(&key, c);
        assert_eq!(encryptor.offset(), 100);
        let hash = encryptor.finish();
        assert_eq!(hex(&data).as_str(), VECTOR_CIPHERTEXT);
        let mut b64 = [0u8; 43];
        assert_eq!(
            jeton_olm::base64::encode(&hash, &mut b64).unwrap(),
            VECTOR_SHA256
        );
        let mut check = CiphertextHash::default();
        check.update(&data[..50]);
        check.update(&data[50..]);
        check.verify(&hash).unwrap();
        let mut decryptor = Decryptor::new(&key);
        for block in data.chunks_mut(33) {
            decryptor.decrypt(block);
        }
        assert_eq!(data, plaintext());
    }

    #[test]
    fn a_changed_byte_fails_the_hash() {
        let mut data = plaintext();
        let key = vector_key();
        let mut encryptor = Encryptor::new();
        encryptor.encrypt(&key, &mut data);
        let hash = encryptor.finish();
        data[99] ^= 1;
        let mut check = CiphertextHash::default();
        check.update(&data);
        assert_eq!(check.verify(&hash), Err(FileError::HashMismatch));
    }

    #[test]
    fn generated_ivs_keep_the_counter_half_zero() {
        struct Ones;
        impl Rng for Ones {
            fn fill_bytes(&mut self, dest: &mut [u8]) {
                dest.fill(0xff);
            }
        }
        let key = AttachmentKey::generate(&mut Ones);
        assert_eq!(key.iv[..8], [0xff; 8]);
        assert_eq!(key.iv[8..], [0; 8]);
        assert_eq!(key.key, [0xff; 32]);
        assert_eq!(format!("{key:?}"), "AttachmentKey(<redacted>)");
    }

    #[test]
    fn the_file_object_round_trips_and_reads_as_clients_write_it() {
        let key = vector_key();
        let mut hash = [0u8; 32];
        jeton_olm::base64::decode(VECTOR_SHA256.as_bytes(), &mut hash).unwrap();
        let mut buf = [0u8; 768];
        let mut w = JsonWriter::new(&mut buf);
        let description = FileDescription {
            name: "photo \"1\".png",
            mimetype: "image/png",
            size: 100,
            url: "mxc://localhost/AbCdEf",
            #[cfg(feature = "voice")]
            voice: None,
        };
        write_file_content(&mut w, &description, &key, &hash).unwrap();
        let content: serde_json::Value = serde_json::from_slice(w.as_bytes()).unwrap();
        assert_eq!(
            content,
            serde_json::json!({
                "body": "photo \"1\".png",
                "msgtype": "m.image",
                "info": {"mimetype": "image/png", "size": 100},
                "file": {
                    "url": "mxc://localhost/AbCdEf",
                    "key": {"kty": "oct", "alg": "A256CTR", "ext": true,
                            "key_ops": ["encrypt", "decrypt"], "k": VECTOR_K},
                    "iv": VECTOR_IV,
                    "hashes": {"sha256": VECTOR_SHA256},
                    "v": "v2",
                },
            })
        );
        let object = JsonObject::parse(w.as_bytes()).unwrap();
        let parsed = EncryptedFile::parse(&object.object("file").unwrap()).unwrap();
        assert_eq!(parsed.url.as_str(), "mxc://localhost/AbCdEf");
        assert_eq!(parsed.sha256, hash);
        assert_eq!((parsed.key.key, parsed.key.iv), (key.key, key.iv));
        // matrix-nio pads nothing but some clients pad base64: accepted too.
        let padded = format!(
            r#"{{"url":"mxc://s/m","v":"v2","iv":"{VECTOR_IV}==","hashes":{{"sha256":"{VECTOR_SHA256}="}},"key":{{"kty":"oct","alg":"A256CTR","k":"{VECTOR_K}","key_ops":["decrypt"],"ext":true}}}}"#
        );
        EncryptedFile::parse(&JsonObject::parse(padded.as_bytes()).unwrap()).unwrap();
    }

    #[test]
    fn unusable_file_objects_are_refused() {
        let good = format!(
            r#""url":"mxc://s/m","iv":"{VECTOR_IV}","hashes":{{"sha256":"{VECTOR_SHA256}"}},"key":{{"kty":"oct","alg":"A256CTR","k":"{VECTOR_K}"}}"#
        );
        for bad in [
            format!(r#"{{{good},"v":"v1"}}"#),
            format!(r#"{{{good}}}"#),
            format!(r#"{{{},"v":"v2"}}"#, good.replace("A256CTR", "A128CTR")),
            format!(r#"{{{},"v":"v2"}}"#, good.replace("mxc://", "https://")),
            format!(r#"{{{},"v":"v2"}}"#, good.replace(VECTOR_IV, "AQID")),
            format!(r#"{{{},"v":"v2"}}"#, good.replace(VECTOR_K, "AAEC")),
        ] {
            let object = JsonObject::parse(bad.as_bytes()).unwrap();
            assert_eq!(
                EncryptedFile::parse(&object).unwrap_err(),
                FileError::BadAttachment,
                "{bad}"
            );
        }
    }

    #[test]
    fn mime_types_follow_the_extension() {
        assert_eq!(mime_type_of("a/B.PNG"), "image/png");
        assert_eq!(mime_type_of("notes.txt"), "text/plain");
        assert_eq!(mime_type_of("noext"), "application/octet-stream");
        assert_eq!(mime_type_of("archive.tar.xz"), "application/octet-stream");
    }

    #[test]
    fn msgtypes_follow_the_mime_type() {
        assert_eq!(msgtype_for("image/jpeg"), "m.image");
        assert_eq!(msgtype_for("audio/ogg"), "m.audio");
        assert_eq!(msgtype_for("video/mp4"), "m.video");
        assert_eq!(msgtype_for("application/pdf"), "m.file");
        assert_eq!(msgtype_for(""), "m.file");
    }
}
