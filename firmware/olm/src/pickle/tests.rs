//! Pickles round-trip at full capacity, fit their published maximum, and refuse wrong keys,
//! wrong types and any tampering.

use proptest::prelude::*;

use super::*;
use crate::{
    megolm::{MegolmMessage, megolm_message_len},
    olm::{MessageType, OlmMessage, olm_message_len},
};

const KEY: [u8; 32] = [0x11; 32];

fn pickled<T: Pickle>(state: &T) -> Vec<u8> {
    let mut out = vec![0u8; T::MAX_PICKLE_SIZE];
    let len = state.pickle(&mut rand::rng(), &KEY, &mut out).unwrap();
    assert!(len <= T::MAX_PICKLE_SIZE);
    out.truncate(len);
    out
}

fn full_account() -> Account {
    let mut rng = rand::rng();
    let mut account = Account::new(&mut rng);
    account.generate_one_time_keys(&mut rng, 60);
    account.generate_fallback_key(&mut rng);
    account.mark_keys_as_published();
    account.generate_fallback_key(&mut rng);
    account.generate_one_time_keys(&mut rng, 3);
    account
}

fn olm_send(from: &mut Session, to: &mut Session, text: &[u8], deliver: bool) {
    let mut wire = vec![0u8; olm_message_len(text.len())];
    let sent = from.encrypt(&mut rand::rng(), text, &mut wire).unwrap();
    if deliver {
        let message = OlmMessage::from_parts(sent.message_type, &wire[..sent.len]).unwrap();
        let mut out = vec![0u8; sent.len];
        let n = to.decrypt(&message, &mut out).unwrap();
        assert_eq!(&out[..n], text);
    }
}

/// A session pair where Bob holds five receiving chains and a full skipped-key store.
fn full_sessions() -> (Session, Session) {
    let mut rng = rand::rng();
    let alice = Account::<1>::new(&mut rng);
    let mut bob = Account::<1>::new(&mut rng);
    bob.generate_one_time_keys(&mut rng, 1);
    let (_, otk) = bob.one_time_keys().next().unwrap();
    let mut a = alice
        .create_outbound_session(&mut rng, bob.curve25519_key(), otk)
        .unwrap();
    let mut wire = vec![0u8; olm_message_len(2)];
    let sent = a.encrypt(&mut rng, b"hi", &mut wire).unwrap();
    assert_eq!(sent.message_type, MessageType::PreKey);
    let pre_key = crate::olm::PreKeyMessage::from_bytes(&wire[..sent.len]).unwrap();
    let mut out = [0u8; 16];
    let mut b = bob
        .create_inbound_session(alice.curve25519_key(), &pre_key, &mut out)
        .unwrap()
        .session;
    for _ in 0..6 {
        olm_send(&mut b, &mut a, b"reply", true);
        for _ in 0..14 {
            olm_send(&mut a, &mut b, b"skipped", false);
        }
        olm_send(&mut a, &mut b, b"last", true);
    }
    assert_eq!(b.receiving.len(), crate::olm::MAX_RECEIVING_CHAINS);
    assert_eq!(b.skipped.len(), crate::olm::MAX_SKIPPED_KEYS);
    (a, b)
}

#[test]
fn account_round_trips_at_full_capacity() {
    let account = full_account();
    let mut bytes = pickled(&account);
    println!(
        "Account pickle: {} B (max {MAX_ACCOUNT_PICKLE_SIZE})",
        bytes.len()
    );
    let restored = <Account>::from_pickle(&mut bytes, &KEY).unwrap();
    assert_eq!(restored.identity_keys(), account.identity_keys());
    assert!(restored.one_time_keys().eq(account.one_time_keys()));
    assert_eq!(restored.stored_one_time_key_count(), 50);
    assert_eq!(restored.fallback_key(), account.fallback_key());
    assert_eq!(restored.sign(b"x"), account.sign(b"x"));
    let body = &bytes[HEADER_LEN..bytes.len() - TAG_LEN];
    assert!(body.iter().all(|&b| b == 0), "plaintext was zeroized");
}

#[test]
fn session_round_trips_at_full_capacity_and_keeps_talking() {
    let (mut alice, bob) = full_sessions();
    let mut bytes = pickled(&bob);
    println!(
        "Session pickle: {} B (max {MAX_SESSION_PICKLE_SIZE})",
        bytes.len()
    );
    let mut bob = Session::from_pickle(&mut bytes, &KEY).unwrap();
    assert_eq!(bob.skipped.len(), crate::olm::MAX_SKIPPED_KEYS);
    olm_send(&mut bob, &mut alice, b"after unpickling", true);
    olm_send(&mut alice, &mut bob, b"and back", true);
    let mut bytes = pickled(&alice);
    let mut alice = Session::from_pickle(&mut bytes, &KEY).unwrap();
    olm_send(&mut alice, &mut bob, b"alice too", true);
}

#[test]
fn session_unpickles_in_place_over_another_and_a_bad_pickle_empties_the_slot() {
    let (mut alice, bob) = full_sessions();
    let (_, other) = full_sessions();
    let mut slot = Some(other);
    let mut bytes = pickled(&bob);
    let restored = Session::from_pickle_into(&mut bytes, &KEY, &mut slot).unwrap();
    assert_eq!(restored.session_id(), bob.session_id());
    assert_eq!(restored.skipped.len(), crate::olm::MAX_SKIPPED_KEYS);
    olm_send(restored, &mut alice, b"from the slot", true);
    olm_send(&mut alice, slot.as_mut().unwrap(), b"and back", true);
    // A session with fewer chains and skipped keys in place of a full one keeps only its own.
    let mut bytes = pickled(&alice);
    let restored = Session::from_pickle_into(&mut bytes, &KEY, &mut slot).unwrap();
    assert_eq!(restored.session_id(), alice.session_id());
    assert_eq!(restored.receiving.len(), alice.receiving.len());
    assert_eq!(restored.skipped.len(), alice.skipped.len());

    let mut tampered = pickled(&bob);
    tampered[HEADER_LEN] ^= 1;
    assert_eq!(
        Session::from_pickle_into(&mut tampered, &KEY, &mut slot).err(),
        Some(PickleError::InvalidMac)
    );
    assert!(slot.is_none(), "a failed unpickle leaves no session behind");
}

#[test]
fn megolm_sessions_round_trip() {
    let mut rng = rand::rng();
    let mut outbound = GroupSession::new(&mut rng);
    let inbound = InboundGroupSession::from(&outbound);
    let mut wire = [0u8; megolm_message_len(3)];
    outbound.encrypt(b"one", &mut wire).unwrap();

    let mut bytes = pickled(&outbound);
    println!(
        "GroupSession pickle: {} B (max {MAX_GROUP_SESSION_PICKLE_SIZE})",
        bytes.len()
    );
    let mut outbound = GroupSession::from_pickle(&mut bytes, &KEY).unwrap();
    assert_eq!(outbound.message_index(), 1);
    let mut bytes = pickled(&inbound);
    println!("InboundGroupSession pickle: {} B", bytes.len());
    let mut inbound = InboundGroupSession::from_pickle(&mut bytes, &KEY).unwrap();
    assert!(inbound.signing_key_verified());

    let len = outbound.encrypt(b"two", &mut wire).unwrap();
    let message = MegolmMessage::from_bytes(&wire[..len]).unwrap();
    let mut out = [0u8; 16];
    let decrypted = inbound.decrypt(&message, &mut out).unwrap();
    assert_eq!(
        (&out[..decrypted.plaintext_len], decrypted.message_index),
        (&b"two"[..], 1)
    );
}

#[test]
fn wrong_key_wrong_type_and_bad_framing_are_errors() {
    let account = full_account();
    let good = pickled(&account);
    assert_eq!(
        Account::<50>::from_pickle(&mut good.clone(), &[0x12; 32]).err(),
        Some(PickleError::InvalidMac)
    );
    assert_eq!(
        Session::from_pickle(&mut good.clone(), &KEY).err(),
        Some(PickleError::InvalidMac)
    );
    let mut versioned = good.clone();
    versioned[0] = 2;
    assert_eq!(
        Account::<50>::from_pickle(&mut versioned, &KEY).err(),
        Some(PickleError::UnknownVersion)
    );
    assert_eq!(
        Account::<50>::from_pickle(&mut [1u8; 20], &KEY).err(),
        Some(PickleError::InvalidLength)
    );
    // A pickle of 50 keys authenticates but does not fit an account for 10.
    assert_eq!(
        Account::<10>::from_pickle(&mut good.clone(), &KEY).err(),
        Some(PickleError::InvalidContent)
    );
    let mut small = [0u8; 100];
    assert_eq!(
        account.pickle(&mut rand::rng(), &KEY, &mut small),
        Err(PickleError::BufferTooSmall)
    );
    assert!(
        small.iter().all(|&b| b == 0),
        "a failed pickle leaves no plaintext behind"
    );
}

#[test]
fn pickles_of_the_same_state_differ() {
    let session = GroupSession::new(&mut rand::rng());
    assert_ne!(pickled(&session), pickled(&session));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn any_tampering_is_detected(position in 0usize..200, flip in 1u8..=255) {
        let session = GroupSession::new(&mut rand::rng());
        let mut bytes = pickled(&session);
        let position = position % bytes.len();
        bytes[position] ^= flip;
        let result = GroupSession::from_pickle(&mut bytes, &KEY);
        prop_assert!(matches!(result, Err(PickleError::InvalidMac | PickleError::UnknownVersion)));
    }
}

#[test]
fn sealed_bytes_open_only_with_their_key_and_label() {
    let text = b"access token syt_secret";
    let mut buf = vec![0u8; sealed_len(text.len())];
    buf[SEAL_HEADER_LEN..][..text.len()].copy_from_slice(text);
    let len = seal_in_place(&KEY, b"RECORD\x00\x02", &mut buf, text.len()).unwrap();
    assert_eq!(len, sealed_len(text.len()));
    assert!(
        !buf.windows(6).any(|w| w == b"syt_se"),
        "the plaintext shows"
    );

    let mut wrong_label = buf.clone();
    assert_eq!(
        open_in_place(&mut wrong_label, &KEY, b"RECORD\x00\x03"),
        Err(PickleError::InvalidMac)
    );
    let mut wrong_key = buf.clone();
    assert_eq!(
        open_in_place(&mut wrong_key, &[0x22; 32], b"RECORD\x00\x02"),
        Err(PickleError::InvalidMac)
    );
    for i in 0..buf.len() {
        let mut tampered = buf.clone();
        tampered[i] ^= 0x01;
        assert!(
            open_in_place(&mut tampered, &KEY, b"RECORD\x00\x02").is_err(),
            "byte {i}"
        );
    }
    assert_eq!(
        open_in_place(&mut buf, &KEY, b"RECORD\x00\x02").unwrap(),
        text
    );
}

#[test]
fn sealing_refuses_labels_longer_than_the_keys_info_holds() {
    let long = [b'L'; MAX_LABEL_LEN + 1];
    let mut buf = vec![0u8; sealed_len(4)];
    assert_eq!(
        seal_in_place(&KEY, &long, &mut buf, 4),
        Err(PickleError::InvalidLength)
    );
    assert!(seal_in_place(&KEY, &long[1..], &mut buf, 4).is_ok());
    assert_eq!(
        open_in_place(&mut buf, &KEY, &long),
        Err(PickleError::InvalidLength)
    );
}

#[test]
fn a_seal_that_fails_leaves_no_plaintext_behind() {
    let text = b"syt_secret";
    let mut buf = vec![0u8; sealed_len(text.len()) - 1];
    buf[SEAL_HEADER_LEN..][..text.len()].copy_from_slice(text);
    assert_eq!(
        seal_in_place(&KEY, b"RECORD", &mut buf, text.len()),
        Err(PickleError::BufferTooSmall)
    );
    assert!(buf.iter().all(|&b| b == 0));
}

#[test]
fn a_pickle_opens_as_sealed_bytes_under_its_type_name() {
    let mut bytes = pickled(&full_account());
    let plaintext = open_in_place(&mut bytes, &KEY, b"ACCOUNT").unwrap();
    let mut d = Decoder::new(plaintext);
    assert!(d.array().unwrap().is_some());
    assert_eq!(d.u32().unwrap(), SCHEMA_VERSION);
}

fn sealed(label: &[u8], text: &[u8]) -> Vec<u8> {
    let mut buf = vec![0u8; sealed_len(text.len())];
    buf[SEAL_HEADER_LEN..][..text.len()].copy_from_slice(text);
    seal_in_place(&KEY, label, &mut buf, text.len()).unwrap();
    buf
}

#[test]
fn sealing_draws_its_nonce_from_the_label_and_bytes() {
    let first = sealed(b"RECORD", b"cursor s72594_4483_1934");
    assert_eq!(sealed(b"RECORD", b"cursor s72594_4483_1934"), first);
    let nonce = |envelope: &[u8]| envelope[1..SEAL_HEADER_LEN].to_vec();
    assert_ne!(
        nonce(&sealed(b"RECORD", b"cursor s72594_4483_1935")),
        nonce(&first)
    );
    assert_ne!(
        nonce(&sealed(b"RECORE", b"cursor s72594_4483_1934")),
        nonce(&first)
    );
}
