//! The token over the protected link: EDHOC before anything else, OSCORE on every exchange
//! afterwards, the access token never in clear, pinning of the gateway's key, refusal of an
//! unknown token, a gateway that lost its contexts, and power cuts that never make the token
//! reuse a sequence number.

use jeton_core::link::KeyFile;
use jeton_link::{Credential, Identity};

use jeton_core::matrix::Config;
use jeton_core::platform::Instant;

use crate::gateway::{ACCESS_TOKEN, TOKEN_USER};
use crate::link_gateway::LinkGateway;
use crate::support::TestRng;
use crate::{
    PEER, Peer, ROOM, Screen, SharedStore, World, encrypted_room_batch, join_room_with_peer,
    peer_reads,
};

fn gateway_identity() -> Identity {
    Identity::generate([0x61; 32], b"\x01", "test-gateway").unwrap()
}

fn token_identity() -> Identity {
    Identity::generate([0x62; 32], b"\x02", "test-token").unwrap()
}

/// A token paired with a gateway that authorises `authorised`, pinning `pinned`.
fn paired_with(seed: u64, authorised: Vec<Credential>, pinned: Credential) -> World {
    let mut world = World::new(seed);
    world.link = Some(LinkGateway::new(gateway_identity(), authorised));
    world.material = Some(KeyFile {
        identity: token_identity(),
        peer: Some(pinned),
    });
    world.power_cycle();
    world
}

fn paired(seed: u64) -> World {
    paired_with(
        seed,
        vec![*token_identity().credential()],
        *gateway_identity().credential(),
    )
}

fn link(world: &World) -> &LinkGateway {
    world.link.as_ref().unwrap()
}

/// A paired, logged-in token and a peer in an encrypted room.
fn paired_room_with_peer(seed: u64) -> (World, Peer) {
    let mut world = paired(seed);
    world.log_in();
    join_room_with_peer(world)
}

/// The token sends `text` and the peer reads it (within two minutes of simulated time).
fn sends_and_the_peer_reads(world: &mut World, peer: &mut Peer, text: &str) {
    let now = world.instant();
    world.token().send_text(ROOM, text, now).unwrap();
    assert!(
        world.run_until(120_000, |w| w.token.as_ref().unwrap().outbox_len() == 0),
        "{:?}",
        world.screen()
    );
    let read = peer_reads(world, peer);
    assert!(read.iter().any(|(t, _, _)| t == text), "{read:?}");
}

fn handshakes(world: &World) -> usize {
    world
        .screen()
        .iter()
        .filter(|line| line.starts_with("link-established"))
        .count()
}

#[test]
fn the_token_runs_edhoc_first_then_every_exchange_is_protected() {
    let (mut world, mut peer) = paired_room_with_peer(1);
    let now = world.instant();
    world.token().send_text(ROOM, "over oscore", now).unwrap();
    assert!(
        world.run_until(60_000, |w| w.token.as_ref().unwrap().outbox_len() == 0),
        "{:?}",
        world.screen()
    );
    let read = peer_reads(&world, &mut peer);
    assert!(
        read.iter().any(|(text, _, _)| text == "over oscore"),
        "{read:?}"
    );
    assert_eq!(handshakes(&world), 1);
    let link = link(&world);
    assert_eq!(link.handshakes, 1);
    assert_eq!(
        link.unprotected, 0,
        "every request but EDHOC's is protected"
    );
    assert_eq!(link.access_token_in_clear, 0);
    assert_eq!(
        link.access_token_sent, 1,
        "the access token goes once per security context"
    );
    assert!(
        link.seen.len() >= 6,
        "{} protected requests",
        link.seen.len()
    );
    assert_eq!(link.rejected, 0);

    let stats = world.token.as_ref().unwrap().link_stats();
    assert_eq!(stats.handshakes, 1);
    assert_eq!(stats.rejected, 0);
    let overheads: Vec<usize> = link
        .sizes
        .iter()
        .map(|(plain, protected)| protected - plain)
        .collect();
    let mean = overheads.iter().sum::<usize>() as f64 / overheads.len() as f64;
    println!(
        "EDHOC handshake: {} B on the air, CoAP headers included (target 250 B); OSCORE: \
         {mean:.1} B per message on average, {}..={} B (target 16 B), over {} messages",
        stats.handshake_bytes,
        overheads.iter().min().unwrap(),
        overheads.iter().max().unwrap(),
        overheads.len()
    );
    assert!(stats.handshake_bytes > 0);
}

#[test]
fn a_gateway_that_asks_message_1_for_an_echo_value_gets_it_and_the_token_links() {
    let mut world = World::new(9);
    let mut gateway = LinkGateway::new(gateway_identity(), vec![*token_identity().credential()]);
    gateway.echo = Some(b"\x00\x2a proof".to_vec());
    world.link = Some(gateway);
    world.material = Some(KeyFile {
        identity: token_identity(),
        peer: Some(*gateway_identity().credential()),
    });
    world.power_cycle();
    world.log_in();
    assert_eq!(handshakes(&world), 1, "{:?}", world.screen());
    assert_eq!(link(&world).challenges, 1);
    assert_eq!(link(&world).handshakes, 1);
    assert!(
        !world.screen().iter().any(|line| line.starts_with("error")),
        "{:?}",
        world.screen()
    );
}

#[test]
fn a_gateway_whose_echo_challenge_never_ends_gets_message_1_twice_per_retry_pause() {
    let mut world = paired(10);
    let gateway = world.link.as_mut().unwrap();
    gateway.echo = Some(b"again".to_vec());
    gateway.echo_every_time = true;
    world.power_cycle();
    world.run_until(60_000, |_| false);
    let challenges = link(&world).challenges;
    // Once at once with the value, then a pause of HANDSHAKE_RETRY_MS (10 s).
    assert!(
        (6..=14).contains(&challenges),
        "{challenges} challenges in a minute"
    );
    assert_eq!(handshakes(&world), 0);
}

#[test]
fn a_token_whose_credential_the_gateway_does_not_list_is_refused_with_a_clear_error() {
    let mut world = paired_with(2, Vec::new(), *gateway_identity().credential());
    let now = world.instant();
    world.token().login("token", "secret", now).unwrap();
    world.run_for(30_000);
    let refusal = world
        .screen()
        .into_iter()
        .find(|line| line.contains("Refused"))
        .unwrap_or_default();
    assert!(refusal.contains("401"), "{:?}", world.screen());
    assert!(link(&world).refused >= 1);
    assert_eq!(handshakes(&world), 0);
    assert!(
        world.gw.processed.is_empty(),
        "no Matrix request got through"
    );
    assert_eq!(
        link(&world).unprotected,
        0,
        "the login never went out in clear"
    );
}

#[test]
fn a_gateway_with_another_key_than_the_pinned_one_fails_the_handshake() {
    let impostor = Identity::generate([0x63; 32], b"\x01", "test-gateway").unwrap();
    let mut world = World::new(3);
    world.link = Some(LinkGateway::new(
        impostor,
        vec![*token_identity().credential()],
    ));
    world.material = Some(KeyFile {
        identity: token_identity(),
        peer: Some(*gateway_identity().credential()),
    });
    world.power_cycle();
    let now = world.instant();
    world.token().login("token", "secret", now).unwrap();
    world.run_for(30_000);
    let error = world
        .screen()
        .into_iter()
        .find(|line| line.starts_with("error"))
        .unwrap_or_default();
    assert!(
        error.contains("Handshake(AuthenticationFailed)")
            || error.contains("Handshake(UnexpectedCredential)"),
        "{:?}",
        world.screen()
    );
    assert_eq!(link(&world).handshakes, 0);
    assert!(world.gw.processed.is_empty());
    assert_eq!(link(&world).unprotected, 0);
}

#[test]
fn a_gateway_that_lost_its_contexts_gets_a_new_handshake_and_the_token_carries_on() {
    let (mut world, mut peer) = paired_room_with_peer(4);
    world.link.as_mut().unwrap().forget_contexts();
    world.gw.restart();
    sends_and_the_peer_reads(&mut world, &mut peer, "after the restart");
    assert_eq!(link(&world).handshakes, 2);
    assert_eq!(handshakes(&world), 2);
    assert_eq!(link(&world).access_token_in_clear, 0);
    assert_eq!(link(&world).access_token_sent, 2, "once per context");
}

#[test]
fn a_gateway_whose_context_under_the_kid_is_another_tokens_gets_a_new_handshake() {
    let (mut world, mut peer) = paired_room_with_peer(7);
    world.link.as_mut().unwrap().give_kids_to_strangers();
    sends_and_the_peer_reads(&mut world, &mut peer, "after the mix-up");
    assert!(
        link(&world).rejected >= 1,
        "the gateway answered 4.00 first"
    );
    assert_eq!(handshakes(&world), 2);
}

#[test]
fn a_token_cut_off_twenty_times_mid_conversation_never_reuses_a_sequence_number() {
    let (mut world, mut peer) = paired_room_with_peer(5);
    let mut sent = Vec::new();
    for round in 0..20u64 {
        let text = format!("message {round}");
        let now = world.instant();
        world.token().send_text(ROOM, &text, now).unwrap();
        sent.push(text);
        // Cut at one of the next writes (the link's high-water mark among them), or after
        // a while of running.
        if round % 2 == 0 {
            world.flash.borrow_mut().cut_power_after((round % 5) as u32);
            world.run_until(20_000, |w| w.dead());
        } else {
            world.run_for(50 + round * 97);
        }
        world.power_cycle();
    }
    assert!(
        world.run_until(600_000, |w| w.token.as_ref().unwrap().outbox_len() == 0),
        "{:?}",
        world.screen()
    );
    let link = link(&world);
    let mut seen = link.seen.clone();
    let total = seen.len();
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), total, "a (kid, Partial IV) was used twice");
    assert_eq!(link.handshakes, 1, "the context survived every power cut");
    assert_eq!(link.rejected, 0);
    let read = peer_reads(&world, &mut peer);
    for text in &sent {
        assert!(
            read.iter().filter(|(t, _, _)| t == text).count() <= 1,
            "{text}: {read:?}"
        );
    }
    println!(
        "{total} protected requests over 20 power cuts; highest sequence number {}",
        seen.iter().map(|(_, piv)| piv).max().unwrap()
    );
}

#[test]
fn every_flipped_bit_in_a_protected_notification_is_rejected_and_the_original_still_counts() {
    use jeton_core::coap::message::Message;
    use jeton_link::oscore::OSCORE_OPTION;

    let mut world = paired(6);
    world.log_in();
    world.push_sync(encrypted_room_batch(&[TOKEN_USER, PEER]));
    world.flush();
    let notification = world
        .in_flight
        .values()
        .filter(|(to_gateway, _)| !to_gateway)
        .map(|(_, bytes)| bytes.clone())
        .find(|bytes| Message::decode(bytes).is_ok_and(|m| m.option(OSCORE_OPTION).is_some()))
        .expect("a protected notification is on its way");
    let message = Message::decode(&notification).unwrap();
    let offset = |part: &[u8]| part.as_ptr() as usize - notification.as_ptr() as usize;
    let option = message.option(OSCORE_OPTION).unwrap();
    let protected: Vec<usize> = (offset(option)..offset(option) + option.len())
        .chain(offset(message.payload)..notification.len())
        .collect();
    let screen_before = world.screen().len();
    let now = world.instant();
    let token = world.token.as_mut().unwrap();
    let mut rejected = token.link_stats().rejected;
    for &byte in &protected {
        for bit in 0..8 {
            let mut flipped = notification.clone();
            flipped[byte] ^= 1 << bit;
            token.handle_datagram(&flipped, now);
            let stats = token.link_stats();
            assert_eq!(
                stats.rejected,
                rejected + 1,
                "byte {byte} bit {bit} was not rejected"
            );
            rejected = stats.rejected;
        }
    }
    assert_eq!(world.screen().len(), screen_before, "{:?}", world.screen());
    // The original, delivered as the network would, is taken: the token learns of the room.
    assert!(
        world.run_until(60_000, |w| w.gw.processed.iter().any(|p| p == "3h")),
        "{:?}",
        world.screen()
    );
    println!(
        "{} flipped bits of a {} B protected notification rejected",
        protected.len() * 8,
        notification.len()
    );
}

#[test]
fn the_stored_access_token_oscore_context_and_room_do_not_show_in_the_flash_image() {
    let (mut world, mut peer) = paired_room_with_peer(8);
    sends_and_the_peer_reads(&mut world, &mut peer, "at rest");
    let mut secrets = link(&world).context_secrets();
    assert!(!secrets.is_empty());
    secrets.push(ACCESS_TOKEN.as_bytes().to_vec());
    secrets.push(ROOM.as_bytes().to_vec());
    secrets.push(PEER.as_bytes().to_vec());
    let flash = world.flash.borrow();
    assert!(flash.contains(jeton_core::store::record::LINK));
    for (id, bytes) in flash.records() {
        for secret in &secrets {
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret.as_slice()),
                "record {id:#06x} shows {secret:?}"
            );
        }
    }
    drop(flash);

    // The same flash under another storage key opens nothing.
    let stranger = crate::TestToken::with_link(
        Config::new([8u8; 32]),
        world.material.clone(),
        TestRng(9),
        SharedStore(world.flash.clone(), world.files.clone()),
        Screen(world.screen.clone(), world.flash.clone()),
        Instant::from_millis(world.now),
    );
    assert!(stranger.is_err());
}
