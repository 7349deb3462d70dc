//! The bodies of the cargo-fuzz targets in `tests/fuzz/olm`, here so that the unit test
//! replaying their corpora runs exactly the same code. Each reads bytes an attacker chooses
//! (from the air, the homeserver or flash) and must return, never panic.

use core::convert::Infallible;

use crate::{
    Pickle, base64,
    megolm::{ExportedSessionKey, GroupSession, InboundGroupSession, MegolmMessage, SessionKey},
    olm::{Account, MessageType, OlmMessage, PreKeyMessage, Session},
    pickle::decode_plaintext,
};

/// A deterministic byte source, so every run of a target sees the same keys.
pub(crate) struct Counter(pub(crate) u8);

impl rand_core::TryRng for Counter {
    type Error = Infallible;
    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        self.0 = self.0.wrapping_add(1);
        Ok(u32::from(self.0))
    }
    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        self.0 = self.0.wrapping_add(1);
        Ok(u64::from(self.0))
    }
    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
        for byte in dst {
            self.0 = self.0.wrapping_add(1);
            *byte = self.0;
        }
        Ok(())
    }
}

impl rand_core::TryCryptoRng for Counter {}

/// Olm messages of both types, and an inbound session attempt with a pre-key message.
pub fn olm_message(data: &[u8]) {
    let mut out = [0u8; 2048];
    let _ = OlmMessage::from_parts(MessageType::Normal, data);
    if let Ok(message) = PreKeyMessage::from_bytes(data) {
        let mut rng = Counter(0);
        let mut account: Account<4> = Account::new(&mut rng);
        account.generate_one_time_keys(&mut rng, 1);
        let _ = account.create_inbound_session(message.identity_key(), &message, &mut out);
    }
    if let Ok(message) = OlmMessage::from_parts(MessageType::Normal, data) {
        let mut rng = Counter(9);
        let account: Account<1> = Account::new(&mut rng);
        let other: Account<1> = Account::new(&mut rng);
        if let Ok(mut session) = account.create_outbound_session(
            &mut rng,
            other.curve25519_key(),
            other.curve25519_key(),
        ) {
            let _ = session.decrypt(&message, &mut out);
        }
    }
}

/// Megolm messages, decrypted by a fixed inbound session.
pub fn megolm_message(data: &[u8]) {
    if let Ok(message) = MegolmMessage::from_bytes(data) {
        let outbound = GroupSession::new(&mut Counter(0));
        let mut inbound = InboundGroupSession::from(&outbound);
        let mut out = [0u8; 2048];
        let _ = inbound.decrypt(&message, &mut out);
    }
}

/// Megolm session keys (version 2), as bytes and as base64 text.
pub fn session_key(data: &[u8]) {
    if let Ok(key) = SessionKey::from_bytes(data) {
        let mut session = InboundGroupSession::new(&key);
        let _ = session.export_at(key.index().saturating_add(300));
    }
    if let Ok(text) = core::str::from_utf8(data) {
        let _ = SessionKey::from_base64(text);
    }
}

/// Exported Megolm keys (version 1), as bytes and as base64 text.
pub fn exported_key(data: &[u8]) {
    if let Ok(key) = ExportedSessionKey::from_bytes(data) {
        let mut session = InboundGroupSession::import(&key);
        let _ = session.export_at(key.index().saturating_add(70_000));
    }
    if let Ok(text) = core::str::from_utf8(data) {
        let _ = ExportedSessionKey::from_base64(text);
        let mut out = [0u8; 512];
        let _ = base64::decode(text.as_bytes(), &mut out);
    }
}

/// Pickles: the envelope of every type, then the plaintext decoders without the MAC.
pub fn pickle(data: &[u8]) {
    let mut buffer = [0u8; 4608];
    let len = data.len().min(buffer.len());
    let key = [0u8; 32];
    macro_rules! envelope {
        ($t:ty) => {
            if let (Some(slot), Some(input)) = (buffer.get_mut(..len), data.get(..len)) {
                slot.copy_from_slice(input);
                let _ = <$t>::from_pickle(slot, &key);
            }
        };
    }
    envelope!(Account);
    envelope!(Session);
    envelope!(GroupSession);
    envelope!(InboundGroupSession);
    let _ = decode_plaintext::<Account>(data);
    let _ = decode_plaintext::<Session>(data);
    let _ = decode_plaintext::<GroupSession>(data);
    let _ = decode_plaintext::<InboundGroupSession>(data);
}

#[cfg(test)]
mod tests {
    //! Replays the checked-in corpora of `tests/fuzz/olm` through the fuzz targets. The seed
    //! files come from `regenerate_seed_corpus` below (run it with `--ignored`); files the
    //! fuzzer found interesting may be added next to them.

    use std::{fs, path::PathBuf};

    use minicbor::{Encoder, encode::write::Cursor};

    use super::*;
    use crate::{megolm::megolm_message_len, olm::olm_message_len, pickle::format::PickleFormat};

    type Target = fn(&[u8]);
    /// A seed file: its name and contents.
    type Seed = (&'static str, Vec<u8>);

    const TARGETS: [(&str, Target); 5] = [
        ("olm_message", olm_message),
        ("megolm_message", megolm_message),
        ("session_key", session_key),
        ("exported_key", exported_key),
        ("pickle", pickle),
    ];

    fn corpus_dir(target: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/fuzz/olm/corpus")
            .join(target)
    }

    #[test]
    fn corpora_replay_without_panics() {
        for (name, target) in TARGETS {
            let files: Vec<_> = fs::read_dir(corpus_dir(name))
                .unwrap_or_else(|e| panic!("corpus of {name}: {e}"))
                .map(|entry| entry.unwrap().path())
                .collect();
            assert!(files.len() >= 2, "the corpus of {name} has seeds");
            for file in files {
                target(&fs::read(&file).unwrap());
            }
        }
    }

    fn plaintext<T: PickleFormat>(state: &T) -> Vec<u8> {
        let mut buf = vec![0u8; 8192];
        let mut e = Encoder::new(Cursor::new(&mut buf[..]));
        state.encode(&mut e).unwrap();
        let len = e.writer().position();
        buf.truncate(len);
        buf
    }

    fn sealed<T: Pickle>(state: &T) -> Vec<u8> {
        let mut buf = vec![0u8; T::MAX_PICKLE_SIZE];
        let len = state.pickle(&mut Counter(3), &[0; 32], &mut buf).unwrap();
        buf.truncate(len);
        buf
    }

    #[test]
    #[ignore = "writes the seed corpora; run by hand when the formats change"]
    fn regenerate_seed_corpus() {
        let mut rng = Counter(0);
        // Megolm: the same session the target decrypts with, at index 0 and later.
        let mut outbound = GroupSession::new(&mut Counter(0));
        let mut megolm = Vec::new();
        for text in [&b"hello"[..], &[0u8; 100]] {
            let mut wire = vec![0u8; megolm_message_len(text.len())];
            let len = outbound.encrypt(text, &mut wire).unwrap();
            wire.truncate(len);
            megolm.push(wire);
        }
        let session_key = outbound.session_key();
        let mut inbound = InboundGroupSession::new(&session_key);
        let exported = inbound.export_at(300).unwrap();

        // Olm: a pre-key and a normal message.
        let alice: Account<2> = Account::new(&mut rng);
        let mut bob: Account<2> = Account::new(&mut rng);
        bob.generate_one_time_keys(&mut rng, 1);
        let (_, otk) = bob.one_time_keys().next().unwrap();
        let mut a = alice
            .create_outbound_session(&mut rng, bob.curve25519_key(), otk)
            .unwrap();
        let mut pre_key = vec![0u8; olm_message_len(5)];
        let sent = a.encrypt(&mut rng, b"hello", &mut pre_key).unwrap();
        pre_key.truncate(sent.len);
        let message = PreKeyMessage::from_bytes(&pre_key).unwrap();
        let mut b = bob
            .create_inbound_session(alice.curve25519_key(), &message, &mut [0u8; 32])
            .unwrap()
            .session;
        let mut normal = vec![0u8; olm_message_len(5)];
        let sent = b.encrypt(&mut rng, b"reply", &mut normal).unwrap();
        normal.truncate(sent.len);

        let account: Account = Account::new(&mut rng);
        let text = |bytes: &[u8]| vodozemac::base64_encode(bytes).into_bytes();
        let seeds: [(&str, Vec<Seed>); 5] = [
            (
                "olm_message",
                vec![("pre_key", pre_key), ("normal", normal)],
            ),
            (
                "megolm_message",
                vec![
                    ("index_0", megolm[0].clone()),
                    ("index_1", megolm[1].clone()),
                ],
            ),
            (
                "session_key",
                vec![
                    ("bytes", session_key.to_bytes().to_vec()),
                    ("base64", text(&session_key.to_bytes())),
                ],
            ),
            (
                "exported_key",
                vec![
                    ("bytes", exported.to_bytes().to_vec()),
                    ("base64", text(&exported.to_bytes())),
                ],
            ),
            (
                "pickle",
                vec![
                    ("account_sealed", sealed(&account)),
                    ("account_plaintext", plaintext(&account)),
                    ("session_sealed", sealed(&a)),
                    ("session_plaintext", plaintext(&b)),
                    ("group_session_plaintext", plaintext(&outbound)),
                    ("inbound_group_session_plaintext", plaintext(&inbound)),
                ],
            ),
        ];
        for (target, files) in seeds {
            let dir = corpus_dir(target);
            fs::create_dir_all(&dir).unwrap();
            for (name, bytes) in files {
                fs::write(dir.join(format!("seed-{name}")), bytes).unwrap();
            }
        }
    }
}
