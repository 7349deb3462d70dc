//! Megolm against vodozemac, in both directions.

use vodozemac::megolm as vz;

use super::*;
use crate::error::DecodeError;

fn rng() -> rand::rngs::ThreadRng {
    rand::rng()
}

fn b64(bytes: &[u8]) -> String {
    vodozemac::base64_encode(bytes)
}

fn encrypt(session: &mut GroupSession, plaintext: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; megolm_message_len(plaintext.len())];
    let n = session.encrypt(plaintext, &mut out).unwrap();
    out.truncate(n);
    out
}

fn decrypt(
    session: &mut InboundGroupSession,
    wire: &[u8],
) -> Result<(Vec<u8>, u32), DecryptionError> {
    let message = MegolmMessage::from_bytes(wire)?;
    let mut out = vec![0u8; wire.len()];
    let d = session.decrypt(&message, &mut out)?;
    out.truncate(d.plaintext_len);
    Ok((out, d.message_index))
}

#[test]
fn vodozemac_decrypts_ours_from_index_0_and_ids_match() {
    let mut ours = GroupSession::new(&mut rng());
    let key = vz::SessionKey::from_bytes(&ours.session_key().to_bytes()).unwrap();
    let mut theirs = vz::InboundGroupSession::new(&key, vz::SessionConfig::version_1());
    assert_eq!(theirs.session_id(), b64(ours.session_id().as_bytes()));
    for i in 0..300u32 {
        let text = format!("message number {i}");
        let wire = encrypt(&mut ours, text.as_bytes());
        let message = vz::MegolmMessage::from_bytes(&wire).unwrap();
        let decrypted = theirs.decrypt(&message).unwrap();
        assert_eq!(decrypted.plaintext, text.as_bytes());
        assert_eq!(decrypted.message_index, i);
    }
}

#[test]
fn we_decrypt_vodozemacs_and_ids_match() {
    let mut theirs = vz::GroupSession::new(vz::SessionConfig::version_1());
    let key = SessionKey::from_bytes(&theirs.session_key().to_bytes()).unwrap();
    let mut ours = InboundGroupSession::new(&key);
    assert_eq!(b64(ours.session_id().as_bytes()), theirs.session_id());
    assert!(ours.signing_key_verified());
    for i in 0..300u32 {
        let text = format!("message number {i}");
        let wire = theirs.encrypt(text.as_bytes()).to_bytes();
        assert_eq!(decrypt(&mut ours, &wire).unwrap(), (text.into_bytes(), i));
    }
}

#[test]
fn exported_later_index_works_both_ways() {
    // Ours exported at 70000 (past the 2^16 boundary) into vodozemac.
    let mut ours = GroupSession::new(&mut rng());
    let mut our_inbound = InboundGroupSession::new(&ours.session_key());
    let mut wires = Vec::new();
    for i in 0..5 {
        wires.push(encrypt(&mut ours, format!("early {i}").as_bytes()));
    }
    let export = our_inbound.export_at(70_000).unwrap();
    assert_eq!(export.index(), 70_000);
    let vz_export = vz::ExportedSessionKey::from_bytes(&export.to_bytes()).unwrap();
    let mut theirs = vz::InboundGroupSession::import(&vz_export, vz::SessionConfig::version_1());
    assert_eq!(theirs.first_known_index(), 70_000);
    // Advance the sender to 70000 and beyond.
    let mut jump = GroupSession::from_parts(
        {
            let mut r = ours.ratchet().clone();
            r.advance_to(70_000);
            r
        },
        ours.signing_keypair().clone(),
    );
    let wire = encrypt(&mut jump, b"late");
    let decrypted = theirs
        .decrypt(&vz::MegolmMessage::from_bytes(&wire).unwrap())
        .unwrap();
    assert_eq!(
        (decrypted.plaintext.as_slice(), decrypted.message_index),
        (&b"late"[..], 70_000)
    );
    assert!(
        theirs
            .decrypt(&vz::MegolmMessage::from_bytes(&wires[0]).unwrap())
            .is_err()
    );

    // Vodozemac's exported at 70000 into ours.
    let mut their_out = vz::GroupSession::new(vz::SessionConfig::version_1());
    let mut their_in =
        vz::InboundGroupSession::new(&their_out.session_key(), vz::SessionConfig::version_1());
    let early = their_out.encrypt(b"early").to_bytes();
    let export = their_in.export_at(70_000).unwrap();
    let mut ours =
        InboundGroupSession::import(&ExportedSessionKey::from_bytes(&export.to_bytes()).unwrap());
    assert!(!ours.signing_key_verified());
    assert_eq!(ours.first_known_index(), 70_000);
    assert_eq!(
        decrypt(&mut ours, &early),
        Err(DecryptionError::UnknownMessageIndex {
            first_known_index: 70_000,
            message_index: 0
        })
    );
    // And our export at 70001 equals vodozemac's.
    let ours_at = ours.export_at(70_001).unwrap().to_bytes();
    let theirs_at = their_in.export_at(70_001).unwrap().to_bytes();
    assert_eq!(ours_at.as_slice(), theirs_at.as_slice());
}

#[test]
fn ratchet_advances_across_boundaries_like_vodozemacs() {
    let theirs = vz::GroupSession::new(vz::SessionConfig::version_1());
    let mut their_in =
        vz::InboundGroupSession::new(&theirs.session_key(), vz::SessionConfig::version_1());
    let mut ours = InboundGroupSession::new(
        &SessionKey::from_bytes(&theirs.session_key().to_bytes()).unwrap(),
    );
    for index in [
        1u32, 255, 256, 257, 65_535, 65_536, 70_000, 16_777_215, 16_777_216, 16_777_300,
    ] {
        let a = ours.export_at(index).unwrap().to_bytes();
        let b = their_in.export_at(index).unwrap().to_bytes();
        assert_eq!(a.as_slice(), b.as_slice(), "index {index}");
    }
    // Going back to an index after the first known one recomputes from the initial ratchet.
    let a = ours.export_at(3).unwrap().to_bytes();
    let b = their_in.export_at(3).unwrap().to_bytes();
    assert_eq!(a.as_slice(), b.as_slice());
}

#[test]
fn session_keys_are_byte_identical() {
    let theirs = vz::GroupSession::new(vz::SessionConfig::version_1());
    let bytes = theirs.session_key().to_bytes();
    let ours = SessionKey::from_bytes(&bytes).unwrap();
    assert_eq!(ours.to_bytes().as_slice(), bytes.as_slice());
    let mut text = [0u8; SessionKey::BASE64_LENGTH];
    assert_eq!(
        ours.to_base64(&mut text).unwrap(),
        theirs.session_key().to_base64()
    );
    let parsed = SessionKey::from_base64(&theirs.session_key().to_base64()).unwrap();
    assert_eq!(parsed.index(), 0);
}

#[test]
fn tampered_session_keys_and_messages_are_rejected() {
    let mut ours = GroupSession::new(&mut rng());
    let mut key = ours.session_key().to_bytes();
    key[10] ^= 1;
    assert_eq!(
        SessionKey::from_bytes(&key).err(),
        Some(DecodeError::InvalidSignature)
    );
    assert!(vz::SessionKey::from_bytes(&key).is_err());
    assert_eq!(
        SessionKey::from_bytes(&key[..228]).err(),
        Some(DecodeError::TooShort)
    );
    key[10] ^= 1;
    key[0] = 1;
    assert!(matches!(
        SessionKey::from_bytes(&key).err(),
        Some(DecodeError::InvalidVersion { .. })
    ));

    let mut inbound = InboundGroupSession::from(&ours);
    let mut wire = encrypt(&mut ours, b"hello");
    // A flipped ciphertext bit breaks the signature first, as in vodozemac.
    wire[6] ^= 1;
    assert_eq!(
        decrypt(&mut inbound, &wire),
        Err(DecryptionError::InvalidSignature)
    );
    wire[6] ^= 1;
    // A message signed by another session is rejected too.
    let mut other = GroupSession::new(&mut rng());
    let foreign = encrypt(&mut other, b"hello");
    assert_eq!(
        decrypt(&mut inbound, &foreign),
        Err(DecryptionError::InvalidSignature)
    );
    assert_eq!(decrypt(&mut inbound, &wire).unwrap().0, b"hello");
}

#[test]
fn out_of_order_and_replayed_messages_decrypt() {
    let mut ours = GroupSession::new(&mut rng());
    let mut inbound = InboundGroupSession::from(&ours);
    let wires: Vec<_> = (0..600)
        .map(|i| encrypt(&mut ours, format!("m{i}").as_bytes()))
        .collect();
    for i in [599usize, 3, 300, 0, 599, 256, 255] {
        let (plain, index) = decrypt(&mut inbound, &wires[i]).unwrap();
        assert_eq!((plain, index as usize), (format!("m{i}").into_bytes(), i));
    }
}

#[test]
fn small_buffers_are_errors() {
    let mut ours = GroupSession::new(&mut rng());
    let mut tiny = [0u8; 50];
    assert_eq!(
        ours.encrypt(b"hello", &mut tiny),
        Err(EncryptionError::BufferTooSmall)
    );
    assert_eq!(ours.message_index(), 0);
    let mut inbound = InboundGroupSession::from(&ours);
    let wire = encrypt(&mut ours, b"hello");
    let message = MegolmMessage::from_bytes(&wire).unwrap();
    assert_eq!(
        inbound.decrypt(&message, &mut [0u8; 8]),
        Err(DecryptionError::BufferTooSmall)
    );
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(32))]
    /// Random jumps of the ratchet (exports at increasing and decreasing indices, across the
    /// 2^8 and 2^16 boundaries) give the same keys as vodozemac's.
    #[test]
    fn random_ratchet_advances_match_vodozemac(
        start in 0u32..300_000,
        jumps in proptest::collection::vec(0u32..140_000, 1..6),
    ) {
        let mut outbound = GroupSession::new(&mut rng());
        let ratchet = {
            let mut r = outbound.ratchet().clone();
            r.advance_to(start);
            r
        };
        outbound = GroupSession::from_parts(ratchet, outbound.signing_keypair().clone());
        let key = outbound.session_key();
        let mut ours = InboundGroupSession::new(&key);
        let mut theirs = vz::InboundGroupSession::new(
            &vz::SessionKey::from_bytes(&key.to_bytes()).unwrap(),
            vz::SessionConfig::version_1(),
        );
        for jump in jumps {
            let index = start + jump;
            let a = ours.export_at(index).unwrap().to_bytes();
            let b = theirs.export_at(index).unwrap().to_bytes();
            proptest::prop_assert_eq!(a.as_slice(), b.as_slice());
        }
        let wire = encrypt(&mut outbound, b"at start");
        let decrypted = theirs.decrypt(&vz::MegolmMessage::from_bytes(&wire).unwrap()).unwrap();
        proptest::prop_assert_eq!(decrypted.message_index, start);
    }
}
