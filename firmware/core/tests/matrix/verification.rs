//! SAS device verification between the token and a peer whose side is written here from
//! the specification with vodozemac's SAS: both flows (a request from the peer, a start
//! from the token), the person's confirm and cancel, tampered keys and MACs, unknown
//! transactions and the timeouts, on the virtual clock.

use base64::Engine as _;
use serde_json::{Value, json};
use sha2::Digest;
use vodozemac::Curve25519PublicKey;
use vodozemac::sas::{EstablishedSas, Mac, Sas};

use super::gateway::TOKEN_USER;
use super::{
    PEER, PEER_DEVICE, Peer, ROOM, World, canonical, room_with_peer, send_delivered,
    verified_only_room_with_peer,
};

const TXN: &str = "peer-txn-1";

/// The peer's side of one verification.
struct SasPeer {
    sas: Option<Sas>,
    established: Option<EstablishedSas>,
    our_key: String,
    their_key: String,
    txn: String,
    /// Whether the peer sent `m.key.verification.start`.
    started: bool,
}

impl SasPeer {
    fn new(txn: &str, started: bool) -> Self {
        let sas = Sas::new();
        SasPeer {
            our_key: sas.public_key().to_base64(),
            sas: Some(sas),
            established: None,
            their_key: String::new(),
            txn: txn.into(),
            started,
        }
    }

    fn establish(&mut self, their_key: &str) {
        self.their_key = their_key.into();
        let key = Curve25519PublicKey::from_base64(their_key).unwrap();
        self.established = Some(self.sas.take().unwrap().diffie_hellman(key).unwrap());
    }

    /// The decimals the peer shows, from the specification's info string.
    fn decimals(&self, token_device: &str) -> String {
        let peer = format!("{PEER}|{PEER_DEVICE}|{}", self.our_key);
        let token = format!("{TOKEN_USER}|{token_device}|{}", self.their_key);
        let (first, second) = if self.started {
            (peer, token)
        } else {
            (token, peer)
        };
        let info = format!("MATRIX_KEY_VERIFICATION_SAS|{first}|{second}|{}", self.txn);
        let (a, b, c) = self.established.as_ref().unwrap().bytes(&info).decimals();
        format!("{a} {b} {c}")
    }

    /// The peer's `m.key.verification.mac`, with `hkdf-hmac-sha256.v2`, over its device key
    /// and, as Element sends them, more keys (`(key id, key)`: a cross-signing master key).
    fn mac_content(&self, token_device: &str, peer: &Peer, more: &[(&str, &str)]) -> Value {
        let sas = self.established.as_ref().unwrap();
        let info = format!(
            "MATRIX_KEY_VERIFICATION_MAC{PEER}{PEER_DEVICE}{TOKEN_USER}{token_device}{}",
            self.txn
        );
        let device_key_id = format!("ed25519:{PEER_DEVICE}");
        let mut keys = vec![(device_key_id.as_str(), peer.ed())];
        keys.extend(more.iter().map(|(id, key)| (*id, key.to_string())));
        let mut macs = serde_json::Map::new();
        for (id, key) in &keys {
            let mac = sas.calculate_mac(key, &format!("{info}{id}")).to_base64();
            macs.insert(id.to_string(), json!(mac));
        }
        let mut ids: Vec<&str> = keys.iter().map(|(id, _)| *id).collect();
        ids.sort();
        json!({
            "transaction_id": self.txn,
            "mac": macs,
            "keys": sas.calculate_mac(&ids.join(","), &format!("{info}KEY_IDS")).to_base64(),
        })
    }

    /// Checks the token's MAC content as the specification says a receiver does.
    fn check_token_mac(&self, content: &Value, token_device: &str, token_ed: &str) -> bool {
        let sas = self.established.as_ref().unwrap();
        let info = format!(
            "MATRIX_KEY_VERIFICATION_MAC{TOKEN_USER}{token_device}{PEER}{PEER_DEVICE}{}",
            self.txn
        );
        let key_id = format!("ed25519:{token_device}");
        let mac = |text: &Value| Mac::from_base64(text.as_str().unwrap()).unwrap();
        sas.verify_mac(&key_id, &format!("{info}KEY_IDS"), &mac(&content["keys"]))
            .is_ok()
            && sas
                .verify_mac(
                    token_ed,
                    &format!("{info}{key_id}"),
                    &mac(&content["mac"][&key_id]),
                )
                .is_ok()
    }
}

/// The commitment of `m.key.verification.accept`: SHA-256 over the accepting side's key
/// (base64) and the canonical JSON of the start content.
fn commitment(key: &str, start: &Value) -> String {
    let hash = sha2::Sha256::new()
        .chain_update(key.as_bytes())
        .chain_update(canonical(start).as_bytes())
        .finalize();
    super::B64.encode(hash)
}

fn to_device(world: &mut World, event_type: &str, content: Value) {
    world.push_sync(json!({"to_device": {"events": [
        {"type": event_type, "sender": PEER, "content": content}
    ]}}));
}

/// The token's unencrypted to-device messages of `event_type` to the peer.
fn sent(world: &World, event_type: &str) -> Vec<Value> {
    world
        .gw
        .hs
        .plain_to_device
        .iter()
        .filter(|(t, user, _, _)| t == event_type && user == PEER)
        .map(|(_, _, _, content)| content.clone())
        .collect()
}

fn wait_for(world: &mut World, event_type: &str, count: usize) -> Value {
    assert!(
        world.run_until(10_000, |w| sent(w, event_type).len() >= count),
        "the token sends {event_type}: {:?}",
        world.screen()
    );
    sent(world, event_type)[count - 1].clone()
}

/// The person types `request` for the peer's device: the request the token sends.
fn token_requests(world: &mut World) -> Value {
    let now = world.instant();
    world
        .token()
        .request_verification(PEER, PEER_DEVICE, 1_700_000_000_000, now)
        .unwrap();
    wait_for(world, "m.key.verification.request", 1)
}

fn sas_line(world: &World) -> Option<String> {
    world
        .screen()
        .into_iter()
        .find(|l| l.starts_with(&format!("sas {PEER} {PEER_DEVICE} ")))
}

/// The peer accepts the token's `start` with the v2 MAC and both strings, committing to
/// `key`.
fn accept_v2(world: &mut World, key: &str, start: &Value) {
    to_device(
        world,
        "m.key.verification.accept",
        json!({"transaction_id": start["transaction_id"],
               "key_agreement_protocol": "curve25519-hkdf-sha256",
               "hash": "sha256", "message_authentication_code": "hkdf-hmac-sha256.v2",
               "short_authentication_string": ["decimal", "emoji"],
               "commitment": commitment(key, start)}),
    );
}

/// After the peer's accept: the token's key, then the peer's; the token shows the strings.
fn exchange_keys(world: &mut World, sas: &mut SasPeer, txn: &str) {
    let key = wait_for(world, "m.key.verification.key", 1);
    sas.establish(key["key"].as_str().unwrap());
    to_device(
        world,
        "m.key.verification.key",
        json!({"transaction_id": txn, "key": sas.our_key}),
    );
    assert!(world.run_until(10_000, |w| sas_line(w).is_some()));
}

fn token_ed(world: &mut World) -> String {
    world.token().identity().ed25519.to_string()
}

/// The peer requests, the token's person accepts, the peer starts, keys are exchanged:
/// both sides show their strings.
fn requested_and_keys_exchanged(seed: u64) -> (World, Peer, SasPeer) {
    keys_exchanged_in(room_with_peer(seed))
}

/// [`requested_and_keys_exchanged`] in a given room with the peer.
fn keys_exchanged_in((mut world, peer): (World, Peer)) -> (World, Peer, SasPeer) {
    let device = world.token_device();
    to_device(
        &mut world,
        "m.key.verification.request",
        json!({"from_device": PEER_DEVICE, "methods": ["m.sas.v1", "m.qr_code.show.v1"],
               "timestamp": 1_700_000_000_000u64, "transaction_id": TXN}),
    );
    assert!(
        world.run_until(10_000, |w| w
            .saw(&format!("verification-request {PEER} {PEER_DEVICE}"))),
        "{:?}",
        world.screen()
    );
    let now = world.instant();
    world.token().confirm_verification(now).unwrap();
    let ready = wait_for(&mut world, "m.key.verification.ready", 1);
    assert_eq!(ready["from_device"], device);
    assert_eq!(ready["methods"], json!(["m.sas.v1"]));

    let mut sas = SasPeer::new(TXN, true);
    let start = json!({"from_device": PEER_DEVICE, "method": "m.sas.v1", "transaction_id": TXN,
        "key_agreement_protocols": ["curve25519-hkdf-sha256", "curve25519"],
        "hashes": ["sha256"],
        "message_authentication_codes": ["hkdf-hmac-sha256.v2", "org.matrix.msc3783.hkdf-hmac-sha256", "hkdf-hmac-sha256"],
        "short_authentication_string": ["decimal", "emoji"]});
    to_device(&mut world, "m.key.verification.start", start.clone());
    let accept = wait_for(&mut world, "m.key.verification.accept", 1);
    assert_eq!(accept["message_authentication_code"], "hkdf-hmac-sha256.v2");
    assert_eq!(accept["key_agreement_protocol"], "curve25519-hkdf-sha256");
    let commitment = accept["commitment"].as_str().unwrap().to_string();

    to_device(
        &mut world,
        "m.key.verification.key",
        json!({"transaction_id": TXN, "key": sas.our_key}),
    );
    let key = wait_for(&mut world, "m.key.verification.key", 1);
    let token_key = key["key"].as_str().unwrap();
    // The token committed to this key over the canonical JSON of the peer's start.
    assert_eq!(commitment, self::commitment(token_key, &start));
    sas.establish(token_key);
    (world, peer, sas)
}

#[test]
fn a_request_from_the_peer_ends_with_both_sides_verified_and_done() {
    let (mut world, mut peer, sas) = requested_and_keys_exchanged(31);
    let device = world.token_device();
    let line = sas_line(&world).expect("the token shows the strings");
    assert!(
        line.starts_with(&format!(
            "sas {PEER} {PEER_DEVICE} {} emoji ",
            sas.decimals(&device)
        )),
        "{line} vs {}",
        sas.decimals(&device)
    );
    assert!(!world.token().is_verified(PEER, PEER_DEVICE));

    // The person confirms on the token first; its MAC goes out, the peer's follows.
    let now = world.instant();
    world.token().confirm_verification(now).unwrap();
    let mac = wait_for(&mut world, "m.key.verification.mac", 1);
    let ed = token_ed(&mut world);
    assert!(sas.check_token_mac(&mac, &device, &ed), "{mac}");
    assert!(sent(&world, "m.key.verification.done").is_empty());
    to_device(
        &mut world,
        "m.key.verification.mac",
        // A master key id sorts before the device key id ("ed25519:9..." < "ed25519:P...").
        sas.mac_content(
            &device,
            &peer,
            &[(
                "ed25519:9xMasterKeyOfThePeerXXXXXXXXXXXXXXXXXXXXXXX",
                "9xMasterKeyOfThePeerXXXXXXXXXXXXXXXXXXXXXXX",
            )],
        ),
    );
    let done = wait_for(&mut world, "m.key.verification.done", 1);
    assert_eq!(done["transaction_id"], TXN);
    assert!(world.saw(&format!("verified {PEER} {PEER_DEVICE}")));
    assert!(world.token().is_verified(PEER, PEER_DEVICE));
    to_device(
        &mut world,
        "m.key.verification.done",
        json!({"transaction_id": TXN}),
    );
    world.run_for(2_000);
    assert!(sent(&world, "m.key.verification.cancel").is_empty());

    // Remembered on flash: still verified after a power cut, and its messages say so.
    world.power_cycle();
    assert!(world.token().is_verified(PEER, PEER_DEVICE));
    let _ = &mut peer;
}

#[test]
fn a_device_verified_mid_session_gets_the_key_it_was_told_was_withheld() {
    let (world, peer, sas) = keys_exchanged_in(verified_only_room_with_peer(37));
    let (mut world, mut peer) = (world, peer);
    let notices = |world: &World| sent(world, "m.room_key.withheld").len();
    send_delivered(&mut world, "before the verification");
    assert_eq!(notices(&world), 1);
    assert!(peer.receive_to_device(&world.gw.hs).is_empty());

    let device = world.token_device();
    let now = world.instant();
    world.token().confirm_verification(now).unwrap();
    wait_for(&mut world, "m.key.verification.mac", 1);
    to_device(
        &mut world,
        "m.key.verification.mac",
        sas.mac_content(&device, &peer, &[]),
    );
    assert!(
        world.run_until(10_000, |w| w.saw(&format!("verified {PEER} {PEER_DEVICE}"))),
        "{:?}",
        world.screen()
    );

    // The same session, now with its key for the peer: the next message reads.
    send_delivered(&mut world, "after the verification");
    let keys = peer.receive_to_device(&world.gw.hs);
    assert_eq!(keys.len(), 1, "{keys:?}");
    let messages = &world.gw.hs.sent;
    assert_eq!(keys[0]["content"]["room_id"], ROOM);
    assert_eq!(
        keys[0]["content"]["session_id"],
        messages[0].3["session_id"]
    );
    assert_eq!(messages[1].3["session_id"], messages[0].3["session_id"]);
    assert_eq!(notices(&world), 1);
}

#[test]
fn the_token_starts_and_a_legacy_peer_accepts_as_matrix_nio_does() {
    let (mut world, peer) = room_with_peer(32);
    let device = world.token_device();
    let now = world.instant();
    world.token().verify(PEER, PEER_DEVICE, now).unwrap();
    let start = wait_for(&mut world, "m.key.verification.start", 1);
    assert_eq!(start["from_device"], device);
    assert_eq!(start["method"], "m.sas.v1");
    let txn = start["transaction_id"].as_str().unwrap().to_string();

    // The peer accepts with the legacy MAC only and a hex commitment, as matrix-nio 0.26
    // does (https://github.com/matrix-nio/matrix-nio/issues/570).
    let mut sas = SasPeer::new(&txn, false);
    let hex_commitment: String = super::B64
        .decode(commitment(&sas.our_key, &start))
        .unwrap()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    to_device(
        &mut world,
        "m.key.verification.accept",
        json!({"transaction_id": txn, "method": "m.sas.v1",
               "key_agreement_protocol": "curve25519-hkdf-sha256", "hash": "sha256",
               "message_authentication_code": "hkdf-hmac-sha256",
               "short_authentication_string": ["decimal"],
               "commitment": hex_commitment}),
    );
    exchange_keys(&mut world, &mut sas, &txn);
    assert_eq!(
        sas_line(&world).unwrap(),
        format!("sas {PEER} {PEER_DEVICE} {}", sas.decimals(&device))
    );

    // The token's person confirms first: under the legacy name the token waits for the
    // peer's MAC, which comes in standard base64, and answers in kind.
    let now = world.instant();
    world.token().confirm_verification(now).unwrap();
    world.run_for(2_000);
    assert!(sent(&world, "m.key.verification.mac").is_empty());
    assert!(!world.token().is_verified(PEER, PEER_DEVICE));
    to_device(
        &mut world,
        "m.key.verification.mac",
        sas.mac_content(&device, &peer, &[]),
    );
    let mac = wait_for(&mut world, "m.key.verification.mac", 1);
    let ed = token_ed(&mut world);
    assert!(sas.check_token_mac(&mac, &device, &ed), "{mac}");
    wait_for(&mut world, "m.key.verification.done", 1);
    assert!(world.token().is_verified(PEER, PEER_DEVICE));
}

#[test]
fn the_token_requests_and_starts_once_the_peer_is_ready() {
    let (mut world, peer) = room_with_peer(40);
    let device = world.token_device();
    let request = token_requests(&mut world);
    assert_eq!(request["from_device"], device);
    assert_eq!(request["methods"], json!(["m.sas.v1"]));
    assert_eq!(request["timestamp"], 1_700_000_000_000u64);
    let txn = request["transaction_id"].as_str().unwrap().to_string();
    // Waiting for the other person has only the overall limit.
    world.run_for(90_000);
    assert!(sent(&world, "m.key.verification.start").is_empty());
    assert!(sent(&world, "m.key.verification.cancel").is_empty());

    to_device(
        &mut world,
        "m.key.verification.ready",
        json!({"from_device": PEER_DEVICE, "methods": ["m.sas.v1", "m.reciprocate.v1"],
               "transaction_id": txn}),
    );
    let start = wait_for(&mut world, "m.key.verification.start", 1);
    assert_eq!(start["transaction_id"], txn);
    let mut sas = SasPeer::new(&txn, false);
    accept_v2(&mut world, &sas.our_key, &start);
    exchange_keys(&mut world, &mut sas, &txn);
    assert!(sas_line(&world).unwrap().starts_with(&format!(
        "sas {PEER} {PEER_DEVICE} {} emoji ",
        sas.decimals(&device)
    )));
    to_device(
        &mut world,
        "m.key.verification.mac",
        sas.mac_content(&device, &peer, &[]),
    );
    let now = world.instant();
    world.token().confirm_verification(now).unwrap();
    let mac = wait_for(&mut world, "m.key.verification.mac", 1);
    let ed = token_ed(&mut world);
    assert!(sas.check_token_mac(&mac, &device, &ed), "{mac}");
    wait_for(&mut world, "m.key.verification.done", 1);
    assert!(world.token().is_verified(PEER, PEER_DEVICE));
}

#[test]
fn an_unanswered_request_gives_way_to_the_next_verification_the_person_starts() {
    let (mut world, _peer) = room_with_peer(41);
    let request = token_requests(&mut world);
    // Four minutes without an answer: the person tries `verify` instead.
    world.run_for(240_000);
    let now = world.instant();
    world.token().verify(PEER, PEER_DEVICE, now).unwrap();
    let cancel = wait_for(&mut world, "m.key.verification.cancel", 1);
    assert_eq!(cancel["transaction_id"], request["transaction_id"]);
    assert_eq!(cancel["code"], "m.user");
    let start = wait_for(&mut world, "m.key.verification.start", 1);
    assert_ne!(start["transaction_id"], request["transaction_id"]);
    assert!(
        world
            .screen()
            .iter()
            .any(|l| l == &format!("verification-cancelled {PEER} {PEER_DEVICE} m.user by-token")),
        "{:?}",
        world.screen()
    );
}

#[test]
fn a_person_who_sees_different_numbers_cancels_with_mismatched_sas() {
    let (mut world, _peer, _sas) = requested_and_keys_exchanged(33);
    let now = world.instant();
    world.token().cancel_verification(now).unwrap();
    let cancel = wait_for(&mut world, "m.key.verification.cancel", 1);
    assert_eq!(cancel["code"], "m.mismatched_sas");
    assert_eq!(cancel["transaction_id"], TXN);
    assert!(world.saw(&format!(
        "verification-cancelled {PEER} {PEER_DEVICE} m.mismatched_sas by-token"
    )));
    assert!(sent(&world, "m.key.verification.mac").is_empty());
    assert!(!world.token().is_verified(PEER, PEER_DEVICE));
    let now = world.instant();
    assert!(world.token().confirm_verification(now).is_err());
}

#[test]
fn a_peer_cancelling_is_shown_with_its_code() {
    let (mut world, _peer, _sas) = requested_and_keys_exchanged(34);
    to_device(
        &mut world,
        "m.key.verification.cancel",
        json!({"transaction_id": TXN, "code": "m.mismatched_sas", "reason": "no match"}),
    );
    assert!(world.run_until(10_000, |w| w.saw(&format!(
        "verification-cancelled {PEER} {PEER_DEVICE} m.mismatched_sas by-peer"
    ))));
    let now = world.instant();
    assert!(world.token().confirm_verification(now).is_err());
    assert!(!world.token().is_verified(PEER, PEER_DEVICE));
}

#[test]
fn a_tampered_mac_is_refused_with_key_mismatch() {
    let (mut world, peer, sas) = requested_and_keys_exchanged(35);
    let device = world.token_device();
    let mut mac = sas.mac_content(&device, &peer, &[]);
    // A MAC over another device key: an attacker's key in place of the peer's.
    let other = Peer::new(PEER, PEER_DEVICE);
    mac["mac"][format!("ed25519:{PEER_DEVICE}")] =
        sas.mac_content(&device, &other, &[])["mac"][format!("ed25519:{PEER_DEVICE}")].clone();
    to_device(&mut world, "m.key.verification.mac", mac);
    let cancel = wait_for(&mut world, "m.key.verification.cancel", 1);
    assert_eq!(cancel["code"], "m.key_mismatch");
    let now = world.instant();
    assert!(world.token().confirm_verification(now).is_err());
    assert!(!world.token().is_verified(PEER, PEER_DEVICE));
}

#[test]
fn a_key_that_does_not_match_its_commitment_is_refused() {
    let (mut world, _peer) = room_with_peer(36);
    let now = world.instant();
    world.token().verify(PEER, PEER_DEVICE, now).unwrap();
    let start = wait_for(&mut world, "m.key.verification.start", 1);
    let txn = start["transaction_id"].as_str().unwrap().to_string();
    let committed = SasPeer::new(&txn, false);
    let sent_instead = SasPeer::new(&txn, false);
    accept_v2(&mut world, &committed.our_key, &start);
    wait_for(&mut world, "m.key.verification.key", 1);
    to_device(
        &mut world,
        "m.key.verification.key",
        json!({"transaction_id": txn, "key": sent_instead.our_key}),
    );
    let cancel = wait_for(&mut world, "m.key.verification.cancel", 1);
    assert_eq!(cancel["code"], "m.mismatched_commitment");
    assert!(sas_line(&world).is_none(), "no strings are shown");
}

#[test]
fn methods_in_common_and_order_are_enforced() {
    let (mut world, _peer) = room_with_peer(37);
    // A start without a MAC method the token speaks.
    to_device(
        &mut world,
        "m.key.verification.start",
        json!({"from_device": PEER_DEVICE, "method": "m.sas.v1", "transaction_id": "t-a",
               "key_agreement_protocols": ["curve25519-hkdf-sha256"], "hashes": ["sha256"],
               "message_authentication_codes": ["hmac-sha256"],
               "short_authentication_string": ["decimal"]}),
    );
    let cancel = wait_for(&mut world, "m.key.verification.cancel", 1);
    assert_eq!(cancel["code"], "m.unknown_method");
    assert_eq!(cancel["transaction_id"], "t-a");

    // A key for a transaction the token does not run: answered to all the user's devices.
    to_device(
        &mut world,
        "m.key.verification.key",
        json!({"transaction_id": "t-b", "key": SasPeer::new("t-b", true).our_key}),
    );
    let cancel = wait_for(&mut world, "m.key.verification.cancel", 2);
    assert_eq!(cancel["code"], "m.unknown_transaction");
    let (_, _, device, _) = world.gw.hs.plain_to_device.last().unwrap().clone();
    assert_eq!(device, "*");

    // A MAC before the keys: out of order.
    let now = world.instant();
    world.token().verify(PEER, PEER_DEVICE, now).unwrap();
    let start = wait_for(&mut world, "m.key.verification.start", 1);
    let txn = start["transaction_id"].as_str().unwrap().to_string();
    to_device(
        &mut world,
        "m.key.verification.mac",
        json!({"transaction_id": txn, "mac": {}, "keys": "x"}),
    );
    let cancel = wait_for(&mut world, "m.key.verification.cancel", 3);
    assert_eq!(cancel["code"], "m.unexpected_message");
}

#[test]
fn a_silent_peer_times_out_after_a_minute_and_a_waiting_person_after_ten() {
    let (mut world, _peer) = room_with_peer(38);
    let now = world.instant();
    world.token().verify(PEER, PEER_DEVICE, now).unwrap();
    wait_for(&mut world, "m.key.verification.start", 1);
    world.run_for(55_000);
    assert!(sent(&world, "m.key.verification.cancel").is_empty());
    world.run_for(10_000);
    let cancel = wait_for(&mut world, "m.key.verification.cancel", 1);
    assert_eq!(cancel["code"], "m.timeout");
    assert!(world.saw(&format!(
        "verification-cancelled {PEER} {PEER_DEVICE} m.timeout by-token"
    )));

    // A request the person does not answer: only the ten-minute limit applies.
    to_device(
        &mut world,
        "m.key.verification.request",
        json!({"from_device": PEER_DEVICE, "methods": ["m.sas.v1"], "transaction_id": "t-2"}),
    );
    world.run_for(5 * 60_000);
    assert_eq!(sent(&world, "m.key.verification.cancel").len(), 1);
    world.run_for(5 * 60_000 + 1_000);
    let cancel = wait_for(&mut world, "m.key.verification.cancel", 2);
    assert_eq!(cancel["code"], "m.timeout");
    assert_eq!(cancel["transaction_id"], "t-2");
}

#[test]
fn a_message_from_another_user_cancels_with_user_mismatch() {
    let (mut world, _peer, sas) = requested_and_keys_exchanged(39);
    world.push_sync(json!({"to_device": {"events": [{
        "type": "m.key.verification.mac", "sender": "@mallory:localhost",
        "content": {"transaction_id": TXN, "mac": {}, "keys": "x"},
    }]}}));
    let cancel = wait_for(&mut world, "m.key.verification.cancel", 1);
    assert_eq!(cancel["code"], "m.user_mismatch");
    let _ = sas;
}

mod arbitrary_messages {
    use proptest::prelude::*;
    use serde_json::{Value, json};

    use super::super::{PEER, PEER_DEVICE, ROOM, room_with_peer};
    use super::{SasPeer, sent, to_device};

    const KINDS: [&str; 9] = [
        "request", "ready", "start", "accept", "key", "mac", "done", "cancel", "unknown",
    ];
    const CODES: [&str; 10] = [
        "m.user",
        "m.timeout",
        "m.unknown_transaction",
        "m.unknown_method",
        "m.unexpected_message",
        "m.key_mismatch",
        "m.user_mismatch",
        "m.invalid_message",
        "m.mismatched_commitment",
        "m.mismatched_sas",
    ];

    /// A verification message with some of the fields of every kind, plausible or not.
    fn message() -> impl Strategy<Value = (usize, Value)> {
        let text = prop_oneof![
            Just(json!("m.sas.v1")),
            Just(json!(["m.sas.v1"])),
            Just(json!(["curve25519-hkdf-sha256"])),
            Just(json!(["hkdf-hmac-sha256.v2", "hkdf-hmac-sha256"])),
            Just(json!(["decimal"])),
            Just(json!(SasPeer::new("t", true).our_key)),
            Just(json!({"ed25519:PEERDEV": "AAAA"})),
            "[ -~]{0,70}".prop_map(Value::from),
            (-(1i64 << 53) + 1..1i64 << 53).prop_map(Value::from),
        ];
        let fields = [
            "transaction_id",
            "from_device",
            "method",
            "methods",
            "key_agreement_protocols",
            "hashes",
            "message_authentication_codes",
            "short_authentication_string",
            "key_agreement_protocol",
            "hash",
            "message_authentication_code",
            "commitment",
            "key",
            "mac",
            "keys",
            "code",
        ];
        (
            0..KINDS.len(),
            prop_oneof![Just("t1"), Just("t2")],
            proptest::collection::vec((0..fields.len(), text), 0..8),
        )
            .prop_map(move |(kind, txn, chosen)| {
                let mut content = json!({"transaction_id": txn, "from_device": PEER_DEVICE});
                for (field, value) in chosen {
                    content[fields[field]] = value;
                }
                (kind, content)
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]

        /// Whatever the peer sends, the token answers only with verification messages and
        /// the specification's cancel codes, verifies nothing, and goes on reading messages.
        #[test]
        fn arbitrary_messages_are_answered_by_the_book(
            seed in 100u64..10_000,
            messages in proptest::collection::vec(message(), 1..8),
        ) {
            let (mut world, _peer) = room_with_peer(seed);
            for (kind, content) in messages {
                to_device(&mut world, &format!("m.key.verification.{}", KINDS[kind]), content);
                world.run_for(300);
            }
            world.run_for(5_000);
            for (kind, user, _, content) in &world.gw.hs.plain_to_device {
                prop_assert!(kind.starts_with("m.key.verification.") && user == PEER);
                if kind == "m.key.verification.cancel" {
                    prop_assert!(CODES.contains(&content["code"].as_str().unwrap_or("")), "{content}");
                }
            }
            prop_assert!(sent(&world, "m.key.verification.mac").is_empty());
            prop_assert!(!world.token().is_verified(PEER, PEER_DEVICE));

            // The token still reads the room.
            world.push_sync(json!({"rooms": {"join": {ROOM: {"timeline": {"events": [
                {"type": "m.room.message", "sender": PEER, "event_id": "$after",
                 "content": {"msgtype": "m.text", "body": "still here"}},
            ]}}}}}));
            world.run_for(5_000);
            let line = format!("message {ROOM} {PEER} unencrypted still here");
            prop_assert!(world.saw(&line), "{:?}", world.screen());
        }
    }
}
