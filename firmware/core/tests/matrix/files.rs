//! Encrypted files between the token and the peer through the fake gateway's media
//! endpoints, with a counting file store: a 1 MiB file both ways passes through one block at
//! a time, a tampered ciphertext is refused with nothing stored, and a power cut in the middle
//! of a download leaves no file that looks complete.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

use aes::Aes256;
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
use ctr::cipher::{KeyIvInit, StreamCipher};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use jeton_core::files::{FileError, FileHandle, FileStore};

use super::*;

/// What the file storage holds and how the token used it.
#[derive(Default, Debug)]
pub(crate) struct FilesState {
    /// Files the token may send, by path.
    pub sources: BTreeMap<String, Vec<u8>>,
    /// Received files, by name.
    pub received: BTreeMap<String, Vec<u8>>,
    temps: BTreeMap<u32, Vec<u8>>,
    open: BTreeMap<u32, String>,
    next_handle: u32,
    /// The largest single append and read the token asked for: the most of a file it ever
    /// held at once.
    pub largest_append: usize,
    pub largest_read: usize,
    pub bytes_appended: usize,
    pub quota: u64,
}

/// A [`FileStore`] in memory that counts what passes through it; clones share the storage,
/// so it survives the token (a power cut).
#[derive(Clone, Default)]
pub(crate) struct CountingFiles(pub Rc<RefCell<FilesState>>);

impl CountingFiles {
    pub(crate) fn state(&self) -> std::cell::RefMut<'_, FilesState> {
        self.0.borrow_mut()
    }
}

impl FileStore for CountingFiles {
    fn open(&mut self, name: &str) -> Result<(FileHandle, u64), FileError> {
        let mut s = self.0.borrow_mut();
        let size = s.sources.get(name).ok_or(FileError::NotFound)?.len() as u64;
        s.next_handle += 1;
        let handle = s.next_handle;
        s.open.insert(handle, name.to_owned());
        Ok((FileHandle(handle), size))
    }
    fn create_temp(&mut self) -> Result<FileHandle, FileError> {
        let mut s = self.0.borrow_mut();
        s.next_handle += 1;
        let handle = s.next_handle;
        s.temps.insert(handle, Vec::new());
        Ok(FileHandle(handle))
    }
    fn append(&mut self, file: FileHandle, data: &[u8]) -> Result<(), FileError> {
        let mut s = self.0.borrow_mut();
        s.largest_append = s.largest_append.max(data.len());
        s.bytes_appended += data.len();
        s.temps
            .get_mut(&file.0)
            .ok_or(FileError::NotFound)?
            .extend_from_slice(data);
        Ok(())
    }
    fn read_at(
        &mut self,
        file: FileHandle,
        offset: u64,
        out: &mut [u8],
    ) -> Result<usize, FileError> {
        let mut s = self.0.borrow_mut();
        s.largest_read = s.largest_read.max(out.len());
        let data = match s.open.get(&file.0) {
            Some(name) => s.sources.get(name).cloned().unwrap_or_default(),
            None => s.temps.get(&file.0).cloned().ok_or(FileError::NotFound)?,
        };
        let start = (offset as usize).min(data.len());
        let n = out.len().min(data.len() - start);
        out[..n].copy_from_slice(&data[start..start + n]);
        Ok(n)
    }
    fn commit(&mut self, file: FileHandle, name: &str) -> Result<(), FileError> {
        let mut s = self.0.borrow_mut();
        let data = s.temps.remove(&file.0).ok_or(FileError::NotFound)?;
        s.received.insert(name.to_owned(), data);
        Ok(())
    }
    fn close(&mut self, file: FileHandle) -> Result<(), FileError> {
        let mut s = self.0.borrow_mut();
        s.open.remove(&file.0);
        s.temps.remove(&file.0);
        Ok(())
    }
    fn available(&mut self) -> u64 {
        let s = self.0.borrow();
        if s.quota == 0 { u64::MAX } else { s.quota }
    }
    fn discard_temporaries(&mut self) -> Result<(), FileError> {
        self.0.borrow_mut().temps.clear();
        Ok(())
    }
}

impl CountingFiles {
    pub(crate) fn temporaries(&self) -> usize {
        self.0.borrow().temps.len()
    }
}

fn file_bytes(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| {
            (i as u32)
                .wrapping_mul(2_654_435_761)
                .rotate_left(u32::from(seed)) as u8
        })
        .collect()
}

/// The peer's side of an attachment: encrypt with a fresh key as clients do.
fn encrypt_attachment(plaintext: &[u8]) -> (Vec<u8>, Value) {
    let key: [u8; 32] = std::array::from_fn(|i| (i as u8).wrapping_mul(29).wrapping_add(3));
    let mut iv = [0u8; 16];
    iv[..8].copy_from_slice(&[9, 8, 7, 6, 5, 4, 3, 2]);
    let mut data = plaintext.to_vec();
    ctr::Ctr128BE::<Aes256>::new(&key.into(), &iv.into()).apply_keystream(&mut data);
    let hash = Sha256::digest(&data);
    let file = json!({
        "v": "v2",
        "key": {"kty": "oct", "alg": "A256CTR", "ext": true, "key_ops": ["encrypt", "decrypt"],
                "k": URL_SAFE_NO_PAD.encode(key)},
        "iv": STANDARD_NO_PAD.encode(iv),
        "hashes": {"sha256": STANDARD_NO_PAD.encode(hash)},
    });
    (data, file)
}

/// The peer decrypts an attachment the way matrix-nio does.
fn decrypt_attachment(ciphertext: &[u8], file: &Value) -> Vec<u8> {
    let expected = STANDARD_NO_PAD
        .decode(file["hashes"]["sha256"].as_str().unwrap())
        .unwrap();
    assert_eq!(
        Sha256::digest(ciphertext).to_vec(),
        expected,
        "the hash the event promises"
    );
    let key: [u8; 32] = URL_SAFE_NO_PAD
        .decode(file["key"]["k"].as_str().unwrap())
        .unwrap()
        .try_into()
        .unwrap();
    let iv: [u8; 16] = STANDARD_NO_PAD
        .decode(file["iv"].as_str().unwrap())
        .unwrap()
        .try_into()
        .unwrap();
    let mut data = ciphertext.to_vec();
    ctr::Ctr128BE::<Aes256>::new(&key.into(), &iv.into()).apply_keystream(&mut data);
    data
}

/// A room with the peer, the peer's room key shared with the token.
fn room_with_peer_key(seed: u64) -> (World, Peer) {
    let (mut world, mut peer) = room_with_peer(seed);
    let device = world.token_device();
    let payload = peer.room_key_payload(&world.gw.hs, &device);
    let to_device = peer.olm_event(&mut world.gw.hs, &device, &payload);
    let hello = peer.megolm_event("$hello", "files next");
    world.push_sync(json!({
        "to_device": {"events": [to_device]},
        "rooms": {"join": {ROOM: {"timeline": {"events": [hello]}}}},
    }));
    let line = format!("message {ROOM} {PEER} encrypted files next");
    assert!(
        world.run_until(60_000, |w| w.saw(&line)),
        "{:?}",
        world.screen()
    );
    (world, peer)
}

/// The peer uploads `plaintext` encrypted (or `tamper`ed after hashing) and sends its event.
fn peer_sends_file(world: &mut World, peer: &mut Peer, plaintext: &[u8], name: &str, tamper: bool) {
    let (mut ciphertext, mut file) = encrypt_attachment(plaintext);
    if tamper {
        let middle = ciphertext.len() / 2;
        ciphertext[middle] ^= 0x40;
    }
    let id = format!("peer{}", world.gw.hs.media.len());
    world.gw.hs.media.insert(id.clone(), ciphertext);
    file["url"] = json!(format!("mxc://localhost/{id}"));
    let content = json!({
        "msgtype": "m.file", "body": name, "file": file,
        "info": {"mimetype": "application/pdf", "size": plaintext.len()},
    });
    let event = peer.megolm_content_event(&format!("${id}"), content);
    world.push_sync(json!({"rooms": {"join": {ROOM: {"timeline": {"events": [event]}}}}}));
}

/// The token sends `data` as the file at `path` and its event is delivered.
fn token_sends_file(world: &mut World, path: &str, mimetype: &str, data: &[u8]) {
    world
        .files
        .state()
        .sources
        .insert(path.into(), data.to_vec());
    let now = world.instant();
    world.token().send_file(ROOM, path, mimetype, now).unwrap();
    wait_for_delivery(world);
}

/// Runs until the token's event is delivered.
fn wait_for_delivery(world: &mut World) {
    let delivered = |w: &World| w.screen().iter().any(|l| l.starts_with("delivered "));
    assert!(
        world.run_until(3_600_000, delivered),
        "{:?}",
        world.screen()
    );
}

/// The peer reads the token's first event and downloads and decrypts its file: the event's
/// content and the file's bytes.
fn peer_reads_file(world: &World, peer: &mut Peer) -> (Value, Vec<u8>) {
    peer.receive_to_device(&world.gw.hs);
    let (plaintext, _) = peer.decrypt(&world.gw.hs.sent[0].3).unwrap();
    let content = plaintext["content"].clone();
    let url = content["file"]["url"].as_str().unwrap();
    let stored = &world.gw.hs.media[url.rsplit('/').next().unwrap()];
    let file = decrypt_attachment(stored, &content["file"]);
    (content, file)
}

type AnyToken = TestToken;

/// The stated bound on the token's RAM apart from the stack during a transfer: its whole
/// state, every buffer included (it never allocates), the same during a transfer of any size
/// as at rest. 40 KiB, against a 1 MiB file each way; the state's own pin is the unit test
/// `state_size_with_default_capacities_is_pinned`.
const TOKEN_STATE_BOUND: usize = 40 * 1024;

#[test]
fn a_one_mebibyte_file_goes_both_ways_one_block_at_a_time() {
    let (mut world, mut peer) = room_with_peer_key(21);
    let sent = file_bytes(1024 * 1024, 3);
    token_sends_file(&mut world, "/data/report.pdf", "application/pdf", &sent);
    let screen = world.screen();
    assert!(
        screen.contains(&"file-uploaded 1 1048576 report.pdf".to_string()),
        "{screen:?}"
    );
    assert!(
        screen
            .iter()
            .any(|l| l.starts_with("file-progress send 16384/1048576 "))
    );
    // The peer reads the event and the file like any client.
    let (content, file) = peer_reads_file(&world, &mut peer);
    assert_eq!(content["msgtype"], "m.file");
    assert_eq!(content["body"], "report.pdf");
    assert_eq!(
        content["info"],
        json!({"mimetype": "application/pdf", "size": 1048576})
    );
    assert_eq!(file, sent);
    assert!(
        !world.gw.hs.media.values().any(|stored| stored == &sent),
        "the gateway saw ciphertext only"
    );

    // And back: the peer sends a 1 MiB file, the token stores it.
    let received = file_bytes(1024 * 1024 + 77, 5);
    peer_sends_file(
        &mut world,
        &mut peer,
        &received,
        "../../etc/peer file.pdf",
        false,
    );
    let line = format!("file-received {ROOM} {PEER} 1048653 application/pdf peer file.pdf");
    assert!(
        world.run_until(3_600_000, |w| w.saw(&line)),
        "{:?}",
        world.screen()
    );
    assert_eq!(world.files.state().received["peer file.pdf"], received);
    assert_eq!(world.files.temporaries(), 0);

    // Streaming: no call ever moved more than the token's work buffer (WORK_BYTES, 1.5 KiB).
    let state = world.files.state();
    let work = jeton_core::matrix::WORK_BYTES;
    assert!(state.largest_append <= work, "{}", state.largest_append);
    assert!(state.largest_read <= work, "{}", state.largest_read);
    let token_state = std::mem::size_of::<AnyToken>();
    println!(
        "peak RAM bound: token state {token_state} B (no heap), largest file chunk held {} B, for 1 MiB each way",
        state.largest_append.max(state.largest_read)
    );
    assert!(token_state < TOKEN_STATE_BOUND, "{token_state}");
}

#[test]
fn a_tampered_ciphertext_is_refused_and_nothing_is_stored() {
    let (mut world, mut peer) = room_with_peer_key(22);
    peer_sends_file(&mut world, &mut peer, &file_bytes(5000, 1), "bad.pdf", true);
    let line = "file-failed bad.pdf (the received file does not match its SHA-256: it was tampered with or damaged, and was not stored)";
    assert!(
        world.run_until(600_000, |w| w.saw(line)),
        "{:?}",
        world.screen()
    );
    assert!(world.files.state().received.is_empty());
    assert_eq!(world.files.temporaries(), 0);
    assert_eq!(
        world.files.state().bytes_appended,
        5000,
        "only ciphertext was stored, then removed"
    );
}

#[test]
fn a_power_cut_during_a_download_leaves_no_file() {
    let (mut world, mut peer) = room_with_peer_key(23);
    peer_sends_file(
        &mut world,
        &mut peer,
        &file_bytes(200_000, 2),
        "big.bin",
        false,
    );
    assert!(
        world.run_until(600_000, |w| w.files.state().bytes_appended > 50_000),
        "{:?}",
        world.screen()
    );
    assert_eq!(world.files.temporaries(), 1);
    world.power_cycle();
    assert_eq!(world.files.temporaries(), 0, "discarded at boot");
    world.run_for(10_000);
    assert!(world.files.state().received.is_empty());
}

#[test]
fn files_go_through_a_lossy_network() {
    let (mut world, mut peer) = room_with_peer_key(24);
    world.impairment = Impairment {
        loss: 20,
        duplication: 10,
        max_delay_ms: 200,
    };
    let sent = file_bytes(64 * 1024, 7);
    token_sends_file(&mut world, "up.bin", "image/png", &sent);
    let (content, file) = peer_reads_file(&world, &mut peer);
    assert_eq!(content["msgtype"], "m.image");
    assert_eq!(file, sent);

    let received = file_bytes(64 * 1024, 8);
    peer_sends_file(&mut world, &mut peer, &received, "down.bin", false);
    assert!(
        world.run_until(3_600_000, |w| w
            .files
            .state()
            .received
            .contains_key("down.bin")),
        "{:?}",
        world.screen()
    );
    assert_eq!(world.files.state().received["down.bin"], received);
}

#[test]
fn send_file_refuses_what_it_cannot_do_with_a_reason() {
    use jeton_core::matrix::{CommandError, TokenError};
    let mut fresh = World::new(25);
    let now = fresh.instant();
    assert_eq!(
        fresh.token().send_file(ROOM, "a.bin", "text/plain", now),
        Err(CommandError::NotLoggedIn)
    );
    let (mut world, _peer) = room_with_peer_key(26);
    let now = world.instant();
    assert_eq!(
        world
            .token()
            .send_file("!elsewhere:localhost", "a.bin", "text/plain", now),
        Err(CommandError::UnknownRoom)
    );
    assert_eq!(
        world
            .token()
            .send_file(ROOM, "missing.bin", "text/plain", now),
        Err(CommandError::Failed(TokenError::File(FileError::NotFound)))
    );
    world
        .files
        .state()
        .sources
        .insert("a.bin".into(), vec![1; 10_000]);
    world
        .token()
        .send_file(ROOM, "a.bin", "text/plain", now)
        .unwrap();
    assert_eq!(
        world.token().send_file(ROOM, "a.bin", "text/plain", now),
        Err(CommandError::Failed(TokenError::File(FileError::Busy)))
    );
    // A text cannot pose as a file event.
    assert_eq!(
        world
            .token()
            .send_text(ROOM, "\u{1}{\"msgtype\":\"m.file\"}", now),
        Err(CommandError::ReservedText)
    );
}

/// The token tries to send a 20,000-byte file that is over a limit: refused with the reason.
fn big_file_is_refused(world: &mut World) {
    world
        .files
        .state()
        .sources
        .insert("big.bin".into(), vec![7; 20_000]);
    let now = world.instant();
    world
        .token()
        .send_file(ROOM, "big.bin", "application/octet-stream", now)
        .unwrap();
    let line = "file-failed big.bin (the file is larger than the limit of the token, the gateway or the homeserver)";
    assert!(
        world.run_until(600_000, |w| w.saw(line)),
        "{:?}",
        world.screen()
    );
    assert!(!world.token().is_transferring());
}

#[test]
fn a_file_over_the_advertised_upload_size_is_refused_before_any_upload() {
    let (mut world, _peer) = room_with_peer_key(28);
    world.gw.hs.upload_size = Some(8 * 1024);
    big_file_is_refused(&mut world);
    assert!(
        !world.gw.processed.iter().any(|p| p == "Mu"),
        "nothing uploaded"
    );
    // The limit is asked once: a file within it goes without asking again.
    token_sends_file(&mut world, "small.bin", "text/plain", &[7; 8_000]);
    assert_eq!(world.gw.hs.media_configs, 1);
}

#[test]
fn a_file_over_the_gateways_limit_fails_with_a_reason_and_sends_no_event() {
    let (mut world, _peer) = room_with_peer_key(27);
    // The media config does not tell (a homeserver's limit), the gateway's limit refuses it.
    world.gw.hs.body_limit = Some(8 * 1024);
    big_file_is_refused(&mut world);
    assert!(world.gw.hs.media.is_empty() && world.gw.hs.sent.is_empty());
}

#[test]
fn a_download_cut_by_a_lost_link_resumes_where_it_stopped() {
    let (mut world, mut peer) = room_with_peer_key(29);
    let data = file_bytes(200 * 1024, 4);
    peer_sends_file(&mut world, &mut peer, &data, "resumed.bin", false);
    assert!(
        world.run_until(600_000, |w| w.files.state().bytes_appended > 100 * 1024),
        "{:?}",
        world.screen()
    );
    // The link goes silent long enough for the exchange in flight to fail, then comes back.
    let down_before = world.bytes_down;
    let stored_before = world.files.state().bytes_appended;
    world.impairment.loss = 100;
    world.run_for(120_000);
    world.impairment.loss = 0;
    assert!(
        world.run_until(600_000, |w| w
            .files
            .state()
            .received
            .contains_key("resumed.bin")),
        "{:?}",
        world.screen()
    );
    assert_eq!(world.files.state().received["resumed.bin"], data);
    // Only what was missing came again (plus a block and the datagrams' headers), not the
    // 100 KiB already stored.
    let missing = data.len() - stored_before;
    let downloaded = world.bytes_down - down_before;
    assert!(
        downloaded < missing + 20 * 1024,
        "{downloaded} bytes down for {missing} missing"
    );
}

#[test]
fn an_upload_whose_blocks_a_restarted_gateway_lost_starts_over() {
    let (mut world, mut peer) = room_with_peer_key(30);
    let data = file_bytes(60 * 1024, 6);
    world
        .files
        .state()
        .sources
        .insert("again.bin".into(), data.clone());
    let now = world.instant();
    world
        .token()
        .send_file(ROOM, "again.bin", "application/octet-stream", now)
        .unwrap();
    assert!(world.run_until(600_000, |w| {
        w.screen()
            .iter()
            .any(|l| l.starts_with("file-progress send 32768/"))
    }));
    world.gw.restart();
    wait_for_delivery(&mut world);
    assert!(
        world.saw("error Server(408)"),
        "the gateway lost the blocks"
    );
    assert_eq!(peer_reads_file(&world, &mut peer).1, data);
}

#[test]
fn an_upload_the_gateway_is_too_busy_for_waits_and_goes_on() {
    let (mut world, mut peer) = room_with_peer_key(32);
    let data = file_bytes(20 * 1024, 9);
    world
        .files
        .state()
        .sources
        .insert("busy.bin".into(), data.clone());
    let now = world.instant();
    world
        .token()
        .send_file(ROOM, "busy.bin", "application/octet-stream", now)
        .unwrap();
    assert!(world.run_until(600_000, |w| {
        w.screen()
            .iter()
            .any(|l| l.starts_with("file-progress send 16384/"))
    }));
    world.gw.busy_blocks = 3;
    wait_for_delivery(&mut world);
    assert_eq!(world.gw.busy_blocks, 0, "the gateway refused three blocks");
    let screen = world.screen();
    assert!(
        !screen
            .iter()
            .any(|l| l.starts_with("error") || l.starts_with("file-failed")),
        "a busy gateway is not the person's problem: {screen:?}"
    );
    assert_eq!(peer_reads_file(&world, &mut peer).1, data);
}

/// A voice message's metadata: the duration of the Cortex-M tier's speech clip, and a
/// waveform that covers 0-1024.
fn clip_voice() -> jeton_core::files::voice::VoiceInfo {
    let waveform: Vec<u16> = (0..100u16).map(|i| (i * 37) % 1025).collect();
    jeton_core::files::voice::VoiceInfo::new(2546, &waveform)
}

#[test]
fn a_voice_message_goes_out_as_an_encrypted_attachment_with_its_voice_fields() {
    let (mut world, mut peer) = room_with_peer_key(31);
    let ogg = file_bytes(4255, 7);
    world
        .files
        .state()
        .sources
        .insert("/tmp/voice-message.ogg".into(), ogg.clone());
    let now = world.instant();
    let voice = clip_voice();
    let waveform = voice.waveform.to_vec();
    world
        .token()
        .send_voice(ROOM, "/tmp/voice-message.ogg", voice, now)
        .unwrap();
    wait_for_delivery(&mut world);
    assert!(
        world.saw("file-uploaded 1 4255 voice-message.ogg"),
        "{:?}",
        world.screen()
    );
    let (content, file) = peer_reads_file(&world, &mut peer);
    assert_eq!(file, ogg);
    assert!(
        !world.gw.hs.media.values().any(|stored| stored == &ogg),
        "the gateway saw ciphertext only"
    );
    assert_eq!(content["msgtype"], "m.audio");
    assert_eq!(content["body"], "Voice message");
    assert_eq!(content["org.matrix.msc1767.text"], "Voice message");
    assert_eq!(
        content["info"],
        json!({"mimetype": "audio/ogg", "size": 4255, "duration": 2546})
    );
    assert_eq!(
        content["org.matrix.msc1767.audio"],
        json!({"duration": 2546, "waveform": waveform})
    );
    assert_eq!(content["org.matrix.msc3245.voice"], json!({}));
    assert_eq!(content["file"]["v"], "v2");
}

#[test]
fn a_received_voice_message_is_shown_as_one_after_its_file() {
    let (mut world, mut peer) = room_with_peer_key(32);
    let ogg = file_bytes(3000, 9);
    let (ciphertext, mut file) = encrypt_attachment(&ogg);
    world.gw.hs.media.insert("voice1".into(), ciphertext);
    file["url"] = json!("mxc://localhost/voice1");
    // Element's content (element-web src/utils/createVoiceMessageContent.ts), file repeated
    // as org.matrix.msc1767.file.
    let content = json!({
        "msgtype": "m.audio", "body": "Voice message", "file": file,
        "info": {"mimetype": "audio/ogg", "size": ogg.len(), "duration": 1960},
        "org.matrix.msc1767.text": "Voice message",
        "org.matrix.msc1767.file": {"file": file, "name": "Voice message.ogg",
                                    "mimetype": "audio/ogg", "size": ogg.len()},
        "org.matrix.msc1767.audio": {"duration": 1960, "waveform": [0, 512, 1024]},
        "org.matrix.msc3245.voice": {},
    });
    let event = peer.megolm_content_event("$voice1", content);
    world.push_sync(json!({"rooms": {"join": {ROOM: {"timeline": {"events": [event]}}}}}));
    let line = format!("voice {ROOM} {PEER} 1960 Voice message");
    assert!(
        world.run_until(600_000, |w| w.saw(&line)),
        "{:?}",
        world.screen()
    );
    let screen = world.screen();
    let file_line = format!("file-received {ROOM} {PEER} 3000 audio/ogg Voice message");
    let at = |wanted: &str| screen.iter().position(|l| l == wanted).unwrap();
    assert!(at(&file_line) < at(&line), "{screen:?}");
    assert_eq!(world.files.state().received["Voice message"], ogg);
}
